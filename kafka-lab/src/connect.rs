//! Connection options shared by every subcommand. Names mirror Kafka's
//! property names; `-X key=value` passes any other client property through.

use anyhow::Context;
use clap::Args;
use kafka_wire::{ClientConfig, ClientConfigBuilder};

#[derive(Args)]
#[command(next_help_heading = "Connection options (any subcommand)")]
pub struct ConnectArgs {
    /// bootstrap.servers (host:port,…).
    #[arg(
        short = 'b',
        long,
        visible_alias = "bootstrap-server",
        env = "KAFKA_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub bootstrap: String,
    /// security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(long, global = true)]
    pub security_protocol: Option<String>,
    /// ssl.ca.location: PEM file of CAs to trust.
    #[arg(long, global = true)]
    pub ssl_ca_location: Option<String>,
    /// sasl.mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, global = true)]
    pub sasl_mechanism: Option<String>,
    /// sasl.username.
    #[arg(long, global = true)]
    pub sasl_username: Option<String>,
    /// sasl.password.
    #[arg(
        long,
        global = true,
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// Any client property, as key=value (repeatable), e.g. -X client.id=lab.
    #[arg(short = 'X', value_name = "KEY=VALUE", global = true)]
    pub properties: Vec<String>,
}

/// `-X` keys whose values are secrets (matched as substrings).
const SECRET_KEYS: [&str; 5] = ["password", "secret", "jaas", "token", "user.info"];

impl std::fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, nor a secret passed with -X.
        let properties: Vec<String> = self
            .properties
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if SECRET_KEYS
                        .iter()
                        .any(|s| k.to_ascii_lowercase().contains(s)) =>
                {
                    format!("{k}=<redacted>")
                }
                _ => kv.clone(),
            })
            .collect();
        f.debug_struct("ConnectArgs")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol)
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("properties", &properties)
            .finish()
    }
}

impl ConnectArgs {
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        Ok(self.client_builder()?.build()?)
    }

    /// The client settings, for role builders (producer, consumer) to extend.
    pub fn client_builder(&self) -> anyhow::Result<ClientConfigBuilder> {
        let mut b = ClientConfig::builder()
            .set("bootstrap.servers", &self.bootstrap)?
            .set("client.id", "kafka-lab")?;
        let named = [
            ("security.protocol", &self.security_protocol),
            ("ssl.ca.location", &self.ssl_ca_location),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
        ];
        for (key, value) in named {
            if let Some(v) = value {
                b = b.set(key, v)?;
            }
        }
        for kv in &self.properties {
            let (k, v) = key_value("-X", kv)?;
            b = b.set(k, v).map_err(|e| explain_x(k, v, e))?;
        }
        Ok(b)
    }
}

/// Client, consumer and producer property names (the ones the builders take).
const KNOWN: &[&str] = &[
    "bootstrap.servers",
    "client.id",
    "security.protocol",
    "ssl.ca.location",
    "ssl.truststore.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
    "request.timeout.ms",
    "socket.connection.setup.timeout.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "metadata.max.age.ms",
    "max.in.flight.requests.per.connection",
    "receive.message.max.bytes",
    "group.id",
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.wait.ms",
    "isolation.level",
    "max.poll.records",
    "partition.assignment.strategy",
    "group.protocol",
    "group.remote.assignor",
    "new.partitions.from.earliest",
    "acks",
    "linger.ms",
    "batch.size",
    "max.request.size",
    "compression.type",
    "enable.idempotence",
    "buffer.memory",
    "delivery.timeout.ms",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    "transactional.id",
    "transaction.timeout.ms",
    "retries",
    "max.block.ms",
];

/// Why `-X key=value` failed, and what to pass instead: `-C`/`-P` for a
/// consumer or producer property, the nearest known name for a typo.
fn explain_x(key: &str, value: &str, e: kafka_wire::Error) -> anyhow::Error {
    let client_known = kafka_wire::ClientConfig::builder()
        .try_set(key, value)
        .unwrap_or(true);
    if !client_known {
        let consumer = consumer_core::ConsumerConfig::builder()
            .set(key, value)
            .is_ok();
        let producer = kafka_wire::ProducerConfig::builder()
            .set(key, value)
            .is_ok();
        match (consumer, producer) {
            (true, _) => {
                return anyhow::anyhow!(
                    "-X {key}: a consumer property; pass it with -C {key}={value} \
                     (after `consume` or `process`)"
                )
            }
            (_, true) => {
                return anyhow::anyhow!(
                    "-X {key}: a producer property; pass it with -P {key}={value} (after `produce`)"
                )
            }
            _ => {}
        }
        if let Some(near) = nearest(key) {
            return anyhow::anyhow!("-X {key}: unknown property; did you mean `{near}`?");
        }
    }
    anyhow::Error::new(e).context(format!("-X {key}={value}"))
}

/// The known property name closest to `key`, if it is a near miss (a few
/// letters swapped, missing or extra): kafka-wire's one copy of the rule.
fn nearest(key: &str) -> Option<&'static str> {
    kafka_wire::suggest::nearest(key, KNOWN.iter().copied())
}

/// Split a `key=value` flag argument (both sides trimmed); the error names the flag.
pub fn key_value<'a>(flag: &str, kv: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{flag} {kv:?}: expected key=value"))?;
    Ok((k.trim(), v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_password() {
        let args = ConnectArgs {
            bootstrap: "a:9092".into(),
            security_protocol: Some("SASL_SSL".into()),
            ssl_ca_location: None,
            sasl_mechanism: Some("PLAIN".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("hunter2-s3cr3t".into()),
            properties: vec!["client.id=lab".into(), "sasl.password=other-s3cr3t".into()],
        };
        for shown in [format!("{args:?}"), format!("{args:#?}")] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("client.id=lab"), "{shown}");
        }
        let builder = args.client_builder().unwrap();
        assert!(!format!("{builder:?}").contains("s3cr3t"));
    }

    #[test]
    fn near_misses_suggest_the_property() {
        assert_eq!(nearest("bootstrap.srevers"), Some("bootstrap.servers"));
        assert_eq!(nearest("bootstrap.server"), Some("bootstrap.servers"));
        assert_eq!(nearest("client.di"), Some("client.id"));
        assert_eq!(nearest("completely.different"), None);
    }
}
