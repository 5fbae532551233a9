//! SASL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER.
//!
//! The mechanisms are pure message transformers (`ScramClient` is a small
//! state machine with the nonce injected, so RFC 7677's test vector runs as a
//! unit test). `authenticate` (crate-private) drives one through SaslHandshake and
//! SaslAuthenticate on the normal request path. A failure is
//! [`Error::Auth`]: fatal, never retried, naming the mechanism and broker.
//!
//! Re-authentication (KIP-368): a broker with `connections.max.reauth.ms`
//! answers SaslAuthenticate (v1+) with the session's lifetime and cuts the
//! connection at the first request after it ends. `authenticate` then
//! schedules the same exchange again on the connection task at a random
//! point between 85 % and 95 % of the lifetime (Java's choice), and so on
//! after each one; the task holds every other request back meanwhile (see
//! [`crate::connection`]). OAUTHBEARER asks its [`TokenProvider`] for a
//! token at every exchange.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use tokio::time::Instant;

use crate::connection::{RawConnection, Reauthenticate};
use crate::error::{Error, Result};
use crate::versions::ApiVersionTable;

#[cfg(feature = "scram")]
mod scram;
#[cfg(feature = "scram")]
pub(crate) use scram::{ScramClient, ScramHash};

/// A boxed future returned by a [`TokenProvider`].
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send + 'a>>;

/// Supplies OAUTHBEARER tokens (fetch or refresh them however you like).
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A bearer token (a JWT for most brokers), or why none is available.
    fn token(&self) -> TokenFuture<'_>;
}

/// A [`TokenProvider`] that mints *unsecured* JWTs (`alg: none`), which
/// Kafka's default OAUTHBEARER validator accepts. For tests and development
/// only: never configure a production broker to accept these.
#[derive(Debug, Clone)]
pub struct UnsecuredJwt {
    pub principal: String,
    pub lifetime: Duration,
}

impl TokenProvider for UnsecuredJwt {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
            let claims = format!(
                r#"{{"sub":"{}","iat":{now},"exp":{}}}"#,
                self.principal.replace('"', ""),
                now + self.lifetime.as_secs()
            );
            Ok(format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims)))
        })
    }
}

/// Which SASL mechanism, with its credentials.
#[derive(Clone)]
pub enum SaslConfig {
    Plain { username: String, password: String },
    ScramSha256 { username: String, password: String },
    ScramSha512 { username: String, password: String },
    OAuthBearer { provider: Arc<dyn TokenProvider> },
}

impl fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print passwords.
        write!(f, "SaslConfig({})", self.mechanism_name())
    }
}

impl SaslConfig {
    /// The mechanism's name as brokers spell it.
    pub fn mechanism_name(&self) -> &'static str {
        match self {
            SaslConfig::Plain { .. } => "PLAIN",
            SaslConfig::ScramSha256 { .. } => "SCRAM-SHA-256",
            SaslConfig::ScramSha512 { .. } => "SCRAM-SHA-512",
            SaslConfig::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }

    /// From `sasl.mechanism`, `sasl.username`, `sasl.password`.
    pub fn from_properties(
        mechanism: &str,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Result<Self> {
        let creds = || -> Result<(String, String)> {
            match (username, password) {
                (Some(u), Some(p)) => Ok((u.to_string(), p.to_string())),
                _ => Err(Error::Config(format!(
                    "sasl.mechanism={mechanism} needs sasl.username and sasl.password"
                ))),
            }
        };
        Ok(match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let (username, password) = creds()?;
                SaslConfig::Plain { username, password }
            }
            "SCRAM-SHA-256" | "SCRAM-SHA-512" if !cfg!(feature = "scram") => {
                return Err(Error::Config(format!(
                    "sasl.mechanism={mechanism}: this build of kafka-wire left out the `scram` \
                     feature; enable it in Cargo.toml (it is on by default)"
                )))
            }
            "SCRAM-SHA-256" => {
                let (username, password) = creds()?;
                SaslConfig::ScramSha256 { username, password }
            }
            "SCRAM-SHA-512" => {
                let (username, password) = creds()?;
                SaslConfig::ScramSha512 { username, password }
            }
            "OAUTHBEARER" => {
                return Err(Error::Config(
                    "sasl.mechanism=OAUTHBEARER needs a token provider: use SaslConfig::OAuthBearer in code".into(),
                ))
            }
            other => {
                return Err(Error::Config(format!(
                    "sasl.mechanism={other:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                )))
            }
        })
    }
}

/// Authenticate `conn` with `cfg`: SaslHandshake, then SaslAuthenticate
/// rounds. When the broker bounds the session (KIP-368), the connection
/// re-authenticates before its end, again and again, until it closes.
pub(crate) async fn authenticate(
    conn: &RawConnection,
    versions: &ApiVersionTable,
    cfg: &SaslConfig,
    broker: &str,
    timeout: Duration,
) -> Result<()> {
    let lifetime = exchange(conn, versions, cfg, broker, timeout).await?;
    if let Some(due) = next_reauthentication(lifetime, Instant::now(), rand::random()) {
        let (versions, cfg, broker) = (versions.clone(), cfg.clone(), broker.to_string());
        let run: Reauthenticate = Arc::new(move |handle: RawConnection| {
            let (versions, cfg, broker) = (versions.clone(), cfg.clone(), broker.clone());
            Box::pin(async move {
                let lifetime = exchange(&handle, &versions, &cfg, &broker, timeout).await?;
                Ok(next_reauthentication(
                    lifetime,
                    Instant::now(),
                    rand::random(),
                ))
            })
        });
        tracing::debug!(
            broker = conn.label(),
            session_lifetime_ms = lifetime.as_millis() as u64,
            "the broker bounds the SASL session (KIP-368): re-authenticating before it ends"
        );
        conn.reauthenticate_at(due, run);
    }
    Ok(())
}

/// When to re-authenticate a session of `lifetime` that began at `now`
/// (`None` for a zero lifetime: the broker does not bound it): at
/// 85 % + `r` × 10 % of it (`r` in [0, 1), random), as Java does, so the
/// connections of many clients do not all re-authenticate at once and a
/// request in flight (a fetch's long poll) has time to finish first.
pub(crate) fn next_reauthentication(lifetime: Duration, now: Instant, r: f64) -> Option<Instant> {
    if lifetime.is_zero() {
        return None;
    }
    Some(now + lifetime.mul_f64(0.85 + 0.10 * r.clamp(0.0, 1.0)))
}

/// One SASL exchange on `conn`; the session lifetime the broker answered
/// (`session_lifetime_ms`, SaslAuthenticate v1+; zero: unbounded).
async fn exchange(
    conn: &RawConnection,
    versions: &ApiVersionTable,
    cfg: &SaslConfig,
    broker: &str,
    timeout: Duration,
) -> Result<Duration> {
    use kafka_protocol::messages::ApiKey;
    let mechanism = cfg.mechanism_name();
    let fail = |reason: String| Error::Auth {
        mechanism: mechanism.to_string(),
        broker: broker.to_string(),
        reason,
    };
    let hs_version = versions
        .version(ApiKey::SaslHandshake)
        .ok_or_else(|| fail("the broker does not offer SaslHandshake".into()))?;
    if hs_version < 1 {
        return Err(fail(
            "the broker only supports SaslHandshake v0 (no SaslAuthenticate)".into(),
        ));
    }
    let auth_version = versions
        .version(ApiKey::SaslAuthenticate)
        .ok_or_else(|| fail("the broker does not offer SaslAuthenticate".into()))?;
    let hs = conn
        .call(
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
            hs_version,
            timeout,
        )
        .await?;
    if hs.error_code != 0 {
        let enabled: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
        return Err(fail(format!(
            "the broker does not enable this mechanism; it enables [{}]",
            enabled.join(", ")
        )));
    }

    let round = |bytes: Vec<u8>| async move {
        let resp = conn
            .call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
                auth_version,
                timeout,
            )
            .await?;
        if resp.error_code != 0 {
            let msg = resp
                .error_message
                .map(|m| m.to_string())
                .unwrap_or_else(|| format!("error code {}", resp.error_code));
            return Err(fail(msg));
        }
        let lifetime = Duration::from_millis(u64::try_from(resp.session_lifetime_ms).unwrap_or(0));
        Ok::<(Bytes, Duration), Error>((resp.auth_bytes, lifetime))
    };

    // The last round's answer carries the session's lifetime.
    let lifetime = match cfg {
        SaslConfig::Plain { username, password } => {
            round(format!("\0{username}\0{password}").into_bytes())
                .await?
                .1
        }
        #[cfg(feature = "scram")]
        SaslConfig::ScramSha256 { username, password }
        | SaslConfig::ScramSha512 { username, password } => {
            let hash = if matches!(cfg, SaslConfig::ScramSha256 { .. }) {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let mut scram = ScramClient::new(hash, username, password, ScramClient::random_nonce());
            let (server_first, _) = round(scram.client_first()).await?;
            let first = scram.parse_server_first(&server_first).map_err(fail)?;
            // PBKDF2 (up to 16,384 HMAC rounds) on the blocking pool: never
            // on the worker that drives this and other connections.
            let (hash, password) = scram.key_inputs();
            let salted = scram::salted_password_blocking(
                hash,
                password,
                first.salt.clone(),
                first.iterations,
            )
            .await
            .map_err(fail)?;
            let client_final = scram.client_final(&first, &salted);
            let (server_final, lifetime) = round(client_final).await?;
            scram.handle_server_final(&server_final).map_err(fail)?;
            lifetime
        }
        SaslConfig::OAuthBearer { provider } => {
            // Asked again at every (re-)authentication: a fresh token.
            let token = provider
                .token()
                .await
                .map_err(|e| fail(format!("the token provider failed: {e}")))?;
            round(format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes())
                .await?
                .1
        }
        #[cfg(not(feature = "scram"))]
        SaslConfig::ScramSha256 { .. } | SaslConfig::ScramSha512 { .. } => {
            return Err(fail(
                "this build of kafka-wire left out the `scram` feature; enable it in Cargo.toml"
                    .into(),
            ));
        }
    };
    Ok(lifetime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reauthentication_falls_between_85_and_95_percent_of_the_lifetime() {
        let now = Instant::now();
        let life = Duration::from_secs(10);
        assert_eq!(
            next_reauthentication(Duration::ZERO, now, 0.5),
            None,
            "unbounded"
        );
        assert_eq!(
            next_reauthentication(life, now, 0.0),
            Some(now + Duration::from_millis(8_500))
        );
        assert_eq!(
            next_reauthentication(life, now, 0.5),
            Some(now + Duration::from_millis(9_000))
        );
        let late = next_reauthentication(life, now, 0.999_999).unwrap();
        assert!(late < now + Duration::from_millis(9_500) + Duration::from_micros(10));
        assert!(late > now + Duration::from_millis(9_499));
    }
}
