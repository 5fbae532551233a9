//! Client configuration: every default in one place, validated once.
//!
//! Build it in code with [`ClientConfig::builder`], or paste the properties
//! you already have (`bootstrap.servers`, `security.protocol`, …) into
//! [`ClientConfigBuilder::set`]. Unknown keys are an error that names the key.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::connector::{BrokerAddress, Connector, TcpConnector};
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::sasl::SaslConfig;
use crate::tls::TlsConfig;

/// `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

/// `metadata.recovery.strategy` (KIP-899): what the client does when the
/// brokers it knows from metadata no longer answer (every one replaced, on
/// new addresses, behind the same bootstrap address), or a broker answers
/// REBOOTSTRAP_REQUIRED (KIP-1102).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetadataRecoveryStrategy {
    /// Ask `bootstrap.servers` again (each name resolved anew) and forget
    /// the brokers that left the cluster. The default, as in Java 4.x.
    #[default]
    Rebootstrap,
    /// Never ask `bootstrap.servers` after the first metadata: a client
    /// whose every known broker went away fails until it is restarted.
    None,
}

impl SecurityProtocol {
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// Settings shared by every role (producer, consumer, admin).
#[derive(Clone)]
pub struct ClientConfig {
    /// `bootstrap.servers`. Required.
    pub bootstrap_servers: Vec<BrokerAddress>,
    /// `client.id`. Default `kafka-rs`.
    pub client_id: String,
    /// `security.protocol`. Default PLAINTEXT.
    pub security_protocol: SecurityProtocol,
    /// `ssl.*`.
    pub tls: TlsConfig,
    /// `sasl.*`. Required when the protocol uses SASL.
    pub sasl: Option<SaslConfig>,
    /// `request.timeout.ms`: how long one request may take, write included. Default 30 s.
    pub request_timeout: Duration,
    /// `socket.connection.setup.timeout.ms`: dial + TLS + auth. Default 10 s.
    pub connect_timeout: Duration,
    /// `reconnect.backoff.ms`: first delay before redialing a broker. Default 50 ms.
    pub reconnect_backoff: Duration,
    /// `reconnect.backoff.max.ms`: the delay cap. Default 1 s.
    pub reconnect_backoff_max: Duration,
    /// `metadata.max.age.ms`: refresh metadata at least this often. Default 5 min.
    pub metadata_max_age: Duration,
    /// `metadata.recovery.strategy`: `rebootstrap` (default) or `none`.
    /// With `rebootstrap`, a refresh that no known broker answers asks
    /// `bootstrap.servers` next, and a rebootstrap (bootstrap addresses
    /// only, known brokers forgotten) happens after
    /// [`Self::metadata_recovery_rebootstrap_trigger`] without metadata or
    /// at once on REBOOTSTRAP_REQUIRED. With `none`, the bootstrap
    /// addresses serve the first metadata only: cheaper to reason about,
    /// but a client whose brokers all moved must be restarted.
    pub metadata_recovery_strategy: MetadataRecoveryStrategy,
    /// `metadata.recovery.rebootstrap.trigger.ms` (KIP-1102): how long
    /// refreshes may fail (or hang: each known broker takes up to
    /// `request.timeout.ms`) before the next one goes to the bootstrap
    /// addresses first. Shorter recovers sooner from brokers that answer
    /// nothing; too short abandons a cluster that is merely slow. Default
    /// 5 min.
    pub metadata_recovery_rebootstrap_trigger: Duration,
    /// `max.in.flight.requests.per.connection`: Produce requests out to one
    /// broker at once (at most 5 for an idempotent producer, the broker's
    /// per-producer window). Default 5. Requests beyond the first carry
    /// only batches that can no longer grow (full, or with a newer batch
    /// behind them): a batch still open waits for the request in flight and
    /// fills meanwhile (DESIGN.md, invariant 61).
    pub max_in_flight: usize,
    /// `receive.message.max.bytes`: cap on one response frame. Default 100 MiB.
    pub max_frame_bytes: usize,
    /// `enable.metrics.push` (KIP-714): push this client's metrics to the
    /// broker when the cluster subscribes to them ([`crate::Telemetry`]).
    /// Default true, as in Java. A broker without telemetry is sent
    /// nothing; one without a subscription for this client, one
    /// GetTelemetrySubscriptions per push interval (5 min by default).
    pub enable_metrics_push: bool,
    /// How connections are dialed (tests route them through a fault proxy).
    pub connector: Arc<dyn Connector>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl", &self.sasl.as_ref().map(|s| s.mechanism_name()))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A builder with every default set.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            cfg: ClientConfig {
                bootstrap_servers: Vec::new(),
                client_id: "kafka-rs".into(),
                security_protocol: SecurityProtocol::Plaintext,
                tls: TlsConfig::default(),
                sasl: None,
                request_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(10),
                reconnect_backoff: Duration::from_millis(50),
                reconnect_backoff_max: Duration::from_secs(1),
                metadata_max_age: Duration::from_secs(300),
                metadata_recovery_strategy: MetadataRecoveryStrategy::Rebootstrap,
                metadata_recovery_rebootstrap_trigger: Duration::from_secs(300),
                max_in_flight: 5,
                max_frame_bytes: DEFAULT_MAX_FRAME,
                enable_metrics_push: true,
                connector: Arc::new(TcpConnector),
            },
            sasl_props: SaslProps::default(),
        }
    }
}

#[derive(Default, Clone)]
struct SaslProps {
    mechanism: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl fmt::Debug for SaslProps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password: builders end up in logs and panics.
        f.debug_struct("SaslProps")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Builds a [`ClientConfig`]; see the field docs for defaults.
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    cfg: ClientConfig,
    sasl_props: SaslProps,
}

/// Parsers for Kafka property values, shared by every role's builder so
/// each error names the key the same way.
pub mod parse {
    use std::time::Duration;

    use crate::error::{Error, Result};

    /// `*.ms` properties.
    pub fn ms(key: &str, value: &str) -> Result<Duration> {
        value
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| Error::Config(format!("{key}={value:?} is not a number of milliseconds")))
    }

    /// Counts and byte sizes.
    pub fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
        value
            .trim()
            .parse::<T>()
            .map_err(|_| Error::Config(format!("{key}={value:?} is not a valid number")))
    }

    /// `true` / `false`.
    pub fn boolean(key: &str, value: &str) -> Result<bool> {
        match value.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::Config(format!(
                "{key}={value:?}: expected true or false"
            ))),
        }
    }
}

use parse::{ms as parse_ms, number};

impl ClientConfigBuilder {
    /// `bootstrap.servers` as `host:port[,host:port…]`.
    pub fn bootstrap(mut self, servers: &str) -> Result<Self> {
        self.set_mut("bootstrap.servers", servers)?;
        Ok(self)
    }

    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.cfg.client_id = id.into();
        self
    }

    pub fn security_protocol(mut self, p: SecurityProtocol) -> Self {
        self.cfg.security_protocol = p;
        self
    }

    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.cfg.tls = tls;
        self
    }

    pub fn sasl(mut self, sasl: SaslConfig) -> Self {
        self.cfg.sasl = Some(sasl);
        self
    }

    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.cfg.request_timeout = d;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.cfg.connect_timeout = d;
        self
    }

    pub fn metadata_max_age(mut self, d: Duration) -> Self {
        self.cfg.metadata_max_age = d;
        self
    }

    /// `metadata.recovery.strategy`; see [`ClientConfig::metadata_recovery_strategy`].
    pub fn metadata_recovery_strategy(mut self, s: MetadataRecoveryStrategy) -> Self {
        self.cfg.metadata_recovery_strategy = s;
        self
    }

    /// `metadata.recovery.rebootstrap.trigger.ms`; see
    /// [`ClientConfig::metadata_recovery_rebootstrap_trigger`].
    pub fn metadata_recovery_rebootstrap_trigger(mut self, d: Duration) -> Self {
        self.cfg.metadata_recovery_rebootstrap_trigger = d;
        self
    }

    /// Route every connection through `connector` (fault injection, proxies).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.cfg.connector = connector;
        self
    }

    /// Set one Kafka property. Unknown keys are an error naming the key.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        self.set_mut(key, value)?;
        Ok(self)
    }

    /// Set many Kafka properties (`key=value` pairs from a Java or librdkafka config).
    pub fn properties<'a>(
        mut self,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        for (k, v) in props {
            self.set_mut(k, v)?;
        }
        Ok(self)
    }

    /// Apply a property if it is a client-level one. Returns `Ok(false)` for
    /// keys that belong to no client setting, so role builders (producer,
    /// consumer) can try their own keys first and report the unknown ones.
    pub fn try_set(&mut self, key: &str, value: &str) -> Result<bool> {
        let c = &mut self.cfg;
        match key {
            "bootstrap.servers" | "metadata.broker.list" => {
                c.bootstrap_servers = value
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        BrokerAddress::parse(s).ok_or_else(|| {
                            Error::Config(format!(
                                "bootstrap.servers entry {s:?} is not host:port"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            "client.id" => c.client_id = value.to_string(),
            "security.protocol" => {
                c.security_protocol = match value.to_ascii_uppercase().as_str() {
                    "PLAINTEXT" => SecurityProtocol::Plaintext,
                    "SSL" => SecurityProtocol::Ssl,
                    "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
                    "SASL_SSL" => SecurityProtocol::SaslSsl,
                    _ => {
                        return Err(Error::Config(format!(
                            "security.protocol={value:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                        )))
                    }
                }
            }
            "ssl.ca.location" | "ssl.truststore.location" => {
                c.tls.ca_pem = Some(PathBuf::from(value))
            }
            "ssl.certificate.location" => c.tls.client_cert_pem = Some(PathBuf::from(value)),
            "ssl.key.location" => c.tls.client_key_pem = Some(PathBuf::from(value)),
            "sasl.mechanism" | "sasl.mechanisms" => {
                self.sasl_props.mechanism = Some(value.to_string())
            }
            "sasl.username" => self.sasl_props.username = Some(value.to_string()),
            "sasl.password" => self.sasl_props.password = Some(value.to_string()),
            "request.timeout.ms" => c.request_timeout = parse_ms(key, value)?,
            "socket.connection.setup.timeout.ms" | "socket.timeout.ms" => {
                c.connect_timeout = parse_ms(key, value)?
            }
            "reconnect.backoff.ms" => c.reconnect_backoff = parse_ms(key, value)?,
            "reconnect.backoff.max.ms" => c.reconnect_backoff_max = parse_ms(key, value)?,
            "metadata.max.age.ms" | "topic.metadata.refresh.interval.ms" => {
                c.metadata_max_age = parse_ms(key, value)?
            }
            "metadata.recovery.strategy" => {
                c.metadata_recovery_strategy = match value.trim().to_ascii_lowercase().as_str() {
                    "rebootstrap" => MetadataRecoveryStrategy::Rebootstrap,
                    "none" => MetadataRecoveryStrategy::None,
                    _ => {
                        return Err(Error::Config(format!(
                            "metadata.recovery.strategy={value:?}: expected rebootstrap or none"
                        )))
                    }
                }
            }
            "metadata.recovery.rebootstrap.trigger.ms" => {
                c.metadata_recovery_rebootstrap_trigger = parse_ms(key, value)?
            }
            "max.in.flight.requests.per.connection" | "max.in.flight" => {
                c.max_in_flight = number(key, value)?
            }
            "receive.message.max.bytes" => c.max_frame_bytes = number(key, value)?,
            "enable.metrics.push" => c.enable_metrics_push = parse::boolean(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_mut(&mut self, key: &str, value: &str) -> Result<()> {
        if self.try_set(key, value)? {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "unknown client property {key:?} (producer and consumer properties go to their own builders)"
            )))
        }
    }

    /// Validate and build.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending setting.
    pub fn build(mut self) -> Result<ClientConfig> {
        let s = std::mem::take(&mut self.sasl_props);
        if let Some(mech) = s.mechanism {
            self.cfg.sasl = Some(SaslConfig::from_properties(
                &mech,
                s.username.as_deref(),
                s.password.as_deref(),
            )?);
        }
        let c = self.cfg;
        if c.bootstrap_servers.is_empty() {
            return Err(Error::Config(
                "bootstrap.servers is required (e.g. 127.0.0.1:9092)".into(),
            ));
        }
        if c.security_protocol.uses_sasl() && c.sasl.is_none() {
            return Err(Error::Config(format!(
                "security.protocol={:?} needs sasl.mechanism (and sasl.username/sasl.password)",
                c.security_protocol
            )));
        }
        if let (Some(sasl), false) = (&c.sasl, c.security_protocol.uses_sasl()) {
            // Over PLAINTEXT, SASL/PLAIN would send the password in clear.
            return Err(Error::Config(format!(
                "sasl.mechanism={} is set but security.protocol={} does not use SASL: \
                 set security.protocol=SASL_SSL (or SASL_PLAINTEXT, which sends the \
                 credentials unencrypted), or remove the sasl.* settings",
                sasl.mechanism_name(),
                match c.security_protocol {
                    SecurityProtocol::Ssl => "SSL",
                    _ => "PLAINTEXT",
                }
            )));
        }
        if c.max_in_flight == 0 {
            return Err(Error::Config(
                "max.in.flight.requests.per.connection must be at least 1".into(),
            ));
        }
        if c.max_frame_bytes < 1024 {
            return Err(Error::Config(
                "receive.message.max.bytes must be at least 1024".into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCRAM when this build has it, PLAIN otherwise.
    const MECHANISM: &str = if cfg!(feature = "scram") {
        "SCRAM-SHA-512"
    } else {
        "PLAIN"
    };

    #[test]
    fn kafka_property_names_are_accepted() {
        let cfg = ClientConfig::builder()
            .properties([
                ("bootstrap.servers", "a:9092,b:9093"),
                ("client.id", "svc"),
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", MECHANISM),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
                ("ssl.ca.location", "/tmp/ca.pem"),
                ("request.timeout.ms", "5000"),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(cfg.bootstrap_servers.len(), 2);
        assert_eq!(cfg.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(cfg.request_timeout, Duration::from_secs(5));
        assert_eq!(cfg.sasl.unwrap().mechanism_name(), MECHANISM);
    }

    /// SASL/PLAIN over PLAINTEXT sends the password in clear: refused,
    /// whether the mechanism comes from properties or from the setter.
    #[test]
    fn sasl_without_a_sasl_security_protocol_is_refused() {
        let err = ClientConfig::builder()
            .properties([
                ("bootstrap.servers", "a:9092"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ])
            .and_then(|b| b.build())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        for needle in ["security.protocol=PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] {
            assert!(msg.contains(needle), "{needle} missing: {msg}");
        }
        let err = ClientConfig::builder()
            .bootstrap("a:9092")
            .unwrap()
            .security_protocol(SecurityProtocol::Ssl)
            .sasl(SaslConfig::Plain {
                username: "u".into(),
                password: "p".into(),
            })
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("security.protocol=SSL"), "{err}");
    }

    /// Every client-level config type, formatted with `{:?}` and `{:#?}`,
    /// never shows the SASL password.
    #[test]
    fn debug_output_never_contains_the_sasl_password() {
        const SECRET: &str = "hunter2-s3cr3t";
        let props = [
            ("bootstrap.servers", "a:9092"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", SECRET),
        ];
        let builder = ClientConfig::builder().properties(props).unwrap();
        let config = builder.clone().build().unwrap();
        let producer = crate::producer::ProducerConfig::builder()
            .properties(props)
            .unwrap();
        let shown = [
            format!("{builder:?}"),
            format!("{builder:#?}"),
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{:?}", config.sasl),
            format!("{producer:?}"),
            format!("{:?}", producer.clone().build().unwrap()),
        ];
        for s in &shown {
            assert!(!s.contains(SECRET), "secret printed: {s}");
        }
        assert!(shown[0].contains("<redacted>"), "{}", shown[0]);
    }

    #[cfg(not(feature = "scram"))]
    #[test]
    fn scram_without_its_feature_is_a_config_error_naming_it() {
        let err = ClientConfig::builder()
            .properties([
                ("security.protocol", "sasl_plaintext"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ])
            .and_then(|b| b.build())
            .unwrap_err();
        assert!(err.to_string().contains("`scram` feature"), "{err}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_its_feature_is_a_config_error_naming_it() {
        let err = crate::tls::build_connector(&TlsConfig::default()).unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[test]
    fn metadata_recovery_defaults_as_java_4_and_accepts_kafka_names() {
        let cfg = ClientConfig::builder()
            .bootstrap("a:9092")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            cfg.metadata_recovery_strategy,
            MetadataRecoveryStrategy::Rebootstrap
        );
        assert_eq!(
            cfg.metadata_recovery_rebootstrap_trigger,
            Duration::from_secs(300)
        );
        let cfg = ClientConfig::builder()
            .properties([
                ("bootstrap.servers", "a:9092"),
                ("metadata.recovery.strategy", "NONE"),
                ("metadata.recovery.rebootstrap.trigger.ms", "1500"),
            ])
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            cfg.metadata_recovery_strategy,
            MetadataRecoveryStrategy::None
        );
        assert_eq!(
            cfg.metadata_recovery_rebootstrap_trigger,
            Duration::from_millis(1500)
        );
        let err = ClientConfig::builder()
            .set("metadata.recovery.strategy", "reboot")
            .unwrap_err();
        assert!(err.to_string().contains("rebootstrap or none"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ClientConfig::builder()
            .set("bootstrap.servrs", "x:1")
            .unwrap_err();
        assert!(err.to_string().contains("bootstrap.servrs"), "{err}");
    }

    #[test]
    fn missing_bootstrap_says_what_to_set() {
        let err = ClientConfig::builder().build().unwrap_err();
        assert!(err.to_string().contains("bootstrap.servers"), "{err}");
    }
}
