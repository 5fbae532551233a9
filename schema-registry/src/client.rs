//! The registry client: four calls of the Confluent schema registry REST
//! API, and the caches that make them rare.
//!
//! | call | REST | cached |
//! |---|---|---|
//! | [`RegistryClient::register`] | `POST /subjects/{subject}/versions` | by (subject, schema text) → id |
//! | [`RegistryClient::schema_by_id`] | `GET /schemas/ids/{id}` | by id → schema text |
//! | [`RegistryClient::subject_version`] | `GET /subjects/{subject}/versions/{version}` | no (`latest` moves) |
//! | [`RegistryClient::is_compatible`] | `POST /compatibility/subjects/{subject}/versions/{version}` | no |
//!
//! Requests and answers are `application/vnd.schemaregistry.v1+json`. An
//! error answer's `{"error_code", "message"}` becomes
//! [`RegistryError::Api`] verbatim. Ids never change meaning in a registry,
//! so the by-id cache never expires; both caches hold at most
//! [`MAX_CACHED`] entries each (then they start over).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::connector::Connector;
use crate::error::RegistryError;
use crate::SchemaId;

/// The registry's content type, sent as `Content-Type` and `Accept`.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";

/// Entries per cache before it is cleared.
pub const MAX_CACHED: usize = 10_000;

/// The largest answer body read (a schema with its references); a larger
/// one is a [`RegistryError::Transport`] error.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Which version of a subject: a number (from 1) or the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// A version number, from 1.
    Number(u32),
    /// The newest version (`latest` in the URL).
    Latest,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Version::Number(n) => write!(f, "{n}"),
            Version::Latest => f.write_str("latest"),
        }
    }
}

/// One version of a subject, as `GET /subjects/{subject}/versions/{version}`
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub id: SchemaId,
    pub version: u32,
    /// The schema text as registered.
    pub schema: String,
    /// `AVRO` when absent (the registry omits it for Avro).
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
}

fn avro() -> String {
    "AVRO".into()
}

/// The client's settings, by the property names Confluent's clients use.
///
/// | property | default | meaning |
/// |---|---|---|
/// | `schema.registry.url` (alias `url`) | required | `https://host:port[/prefix]` or `http://…`; a comma-separated list is tried in order on transport errors |
/// | `basic.auth.user.info` | none | `user:password`, sent as HTTP Basic auth; only over `https://` unless [`insecure_allow_basic_auth_over_http`](Self::insecure_allow_basic_auth_over_http) |
/// | `schema.registry.request.timeout.ms` (alias `timeout.ms`) | `10000` | per request, connect to last body byte |
/// | `ssl.ca.location` | the Mozilla roots | PEM file of the CAs that sign the registry's certificate |
/// | `ssl.certificate.location`, `ssl.key.location` | none | client certificate and key (PEM), for a registry that asks for mTLS |
///
/// HTTPS is rustls with kafka-wire's configuration (the graviola provider,
/// pure Rust; [`kafka_wire::TlsConfig::rustls_client_config`]): the
/// registry's certificate must chain to a trusted CA and name the URL's
/// host (a DNS name or an IP SAN).
///
/// Credentials never travel in clear by accident: Basic auth with an
/// `http://` URL is refused when the client is made, and a URL with
/// credentials in it (`https://user:pass@host`) is refused (use
/// `basic.auth.user.info`). `Debug` never shows the credentials.
#[derive(Clone)]
pub struct RegistryConfig {
    urls: Vec<Uri>,
    basic_auth: Option<String>,
    timeout: Duration,
    tls: kafka_wire::TlsConfig,
    basic_auth_over_http: bool,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Basic credentials are base64 of `user:password`: never shown.
        f.debug_struct("RegistryConfig")
            .field("urls", &self.urls)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .field("basic_auth_over_http", &self.basic_auth_over_http)
            .finish()
    }
}

impl RegistryConfig {
    /// A config for one `https://` or `http://` URL, every other setting
    /// default.
    ///
    /// # Errors
    /// [`RegistryError::Config`] for a URL that is not `http(s)://host:port…`.
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        Self::from_properties([("schema.registry.url", url)])
    }

    /// From `(property, value)` pairs (see the table above).
    ///
    /// # Errors
    /// [`RegistryError::Config`] for an unknown property, a bad value or
    /// no URL.
    pub fn from_properties<'a>(
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, RegistryError> {
        let mut urls = Vec::new();
        let mut basic_auth = None;
        let mut timeout = Duration::from_secs(10);
        let mut tls = kafka_wire::TlsConfig::default();
        for (key, value) in props {
            match key {
                "schema.registry.url" | "url" => {
                    urls = value
                        .split(',')
                        .map(|u| parse_url(u.trim()))
                        .collect::<Result<_, _>>()?;
                }
                "basic.auth.user.info" => {
                    use base64::Engine as _;
                    if !value.contains(':') {
                        return Err(RegistryError::Config(
                            "basic.auth.user.info must be user:password".into(),
                        ));
                    }
                    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
                    basic_auth = Some(format!("Basic {b64}"));
                }
                "schema.registry.request.timeout.ms" | "timeout.ms" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        RegistryError::Config(format!("{key}={value:?} is not a number"))
                    })?;
                    timeout = Duration::from_millis(ms.max(1));
                }
                "ssl.ca.location" => tls.ca_pem = Some(value.into()),
                "ssl.certificate.location" => tls.client_cert_pem = Some(value.into()),
                "ssl.key.location" => tls.client_key_pem = Some(value.into()),
                _ => {
                    return Err(RegistryError::Config(format!("unknown property {key:?}")));
                }
            }
        }
        if urls.is_empty() {
            return Err(RegistryError::Config(
                "schema.registry.url is required".into(),
            ));
        }
        Ok(Self {
            urls,
            basic_auth,
            timeout,
            tls,
            basic_auth_over_http: false,
        })
    }

    /// **Insecure.** Send `basic.auth.user.info` over `http://` URLs too,
    /// where anyone on the path reads the password (Basic auth is only
    /// base64). Off by default: [`RegistryClient::new`] refuses Basic auth
    /// with an `http://` URL. For a network you trust end to end (a test,
    /// a registry on loopback or behind a sidecar that adds TLS); else use
    /// an `https://` URL.
    pub fn insecure_allow_basic_auth_over_http(mut self, allow: bool) -> Self {
        self.basic_auth_over_http = allow;
        self
    }

    /// Refuse what would send the credentials in clear; the error says
    /// what to do instead.
    fn check_credentials(&self) -> Result<(), RegistryError> {
        if self.basic_auth.is_none() || self.basic_auth_over_http {
            return Ok(());
        }
        match self.urls.iter().find(|u| u.scheme_str() == Some("http")) {
            Some(url) => Err(RegistryError::Config(format!(
                "basic.auth.user.info is set but schema.registry.url {url} is plain http://, \
                 which would send the password in clear: use an https:// URL (with \
                 ssl.ca.location for a private CA), or, on a network you trust end to end, \
                 call RegistryConfig::insecure_allow_basic_auth_over_http(true)"
            ))),
            None => Ok(()),
        }
    }

    /// The rustls configuration, when a URL is `https://`.
    fn rustls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, RegistryError> {
        if !self.urls.iter().any(|u| u.scheme_str() == Some("https")) {
            return Ok(None);
        }
        let config = self
            .tls
            .rustls_client_config()
            .map_err(|e| RegistryError::Config(format!("HTTPS: {e}")))?;
        Ok(Some(Arc::new(config)))
    }
}

fn parse_url(url: &str) -> Result<Uri, RegistryError> {
    // Credentials in the URL are never repeated in an error.
    let shown = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    };
    let bad = |why: &str| RegistryError::Config(format!("schema.registry.url {shown:?}: {why}"));
    if shown != url {
        return Err(bad(
            "credentials in the URL are not supported: put them in basic.auth.user.info",
        ));
    }
    let uri: Uri = url
        .trim_end_matches('/')
        .parse()
        .map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with https:// or http://")),
    }
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

/// A Confluent schema registry client: a cheap, cloneable handle; clones
/// share one connection pool and one cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: RegistryConfig,
    http: Client<Connector, Full<Bytes>>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    ids: HashMap<(String, String), SchemaId>,
    schemas: HashMap<SchemaId, Arc<str>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("urls", &self.inner.config.urls)
            .field("timeout", &self.inner.config.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct IdAnswer {
    id: SchemaId,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
}

#[derive(Deserialize)]
struct CompatibilityAnswer {
    is_compatible: bool,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: i32,
    message: String,
}

impl RegistryClient {
    /// A client for `config`. Connects lazily, on the first call (TCP, then
    /// TLS for an `https://` URL).
    ///
    /// # Errors
    /// [`RegistryError::Config`]: Basic auth with an `http://` URL (see
    /// [`RegistryConfig::insecure_allow_basic_auth_over_http`]); an
    /// `ssl.*` file that cannot be read or is rejected.
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        config.check_credentials()?;
        let connector = Connector::new(config.rustls_config()?);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http,
                cache: Mutex::new(Cache::default()),
            }),
        })
    }

    /// A client for one `https://` or `http://` URL with default settings
    /// (no credentials; the Mozilla roots for HTTPS).
    ///
    /// # Errors
    /// [`RegistryError::Config`] for a bad URL.
    pub fn from_url(url: &str) -> Result<Self, RegistryError> {
        Self::new(RegistryConfig::new(url)?)
    }

    /// Register `schema` (Avro schema JSON) under `subject`, or find the id
    /// it already has there: `POST /subjects/{subject}/versions` with
    /// `{"schema": …}`, answer `{"id": …}`. The registry returns the
    /// existing id for a schema the subject already has. Cached by
    /// (subject, exact schema text).
    ///
    /// # Errors
    /// [`RegistryError::Api`] with `409` (incompatible with the subject's
    /// compatibility level) or `42201` (invalid schema); transport errors.
    ///
    /// # Cancel safety
    /// Cancel safe: a registration cut off may or may not have happened,
    /// and repeating it returns the same id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<SchemaId, RegistryError> {
        let key = (subject.to_string(), schema.to_string());
        if let Some(id) = self.lock().ids.get(&key) {
            return Ok(*id);
        }
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let answer: IdAnswer = self
            .call("register", Method::POST, &path, Some(body))
            .await?;
        let mut cache = self.lock();
        cache.insert_id(key, answer.id);
        cache.insert_schema(answer.id, schema.into());
        Ok(answer.id)
    }

    /// The schema text with this id: `GET /schemas/ids/{id}`, answer
    /// `{"schema": …}`. Cached for good (an id never changes meaning).
    ///
    /// # Errors
    /// [`RegistryError::Api`] with `40403` for an unknown id; transport errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn schema_by_id(&self, id: SchemaId) -> Result<Arc<str>, RegistryError> {
        if let Some(s) = self.lock().schemas.get(&id) {
            return Ok(s.clone());
        }
        let path = format!("/schemas/ids/{}", id.0);
        let answer: SchemaAnswer = self.call("schema by id", Method::GET, &path, None).await?;
        let schema: Arc<str> = answer.schema.into();
        self.lock().insert_schema(id, schema.clone());
        Ok(schema)
    }

    /// One version of a subject: `GET /subjects/{subject}/versions/{version}`.
    /// Not cached (`latest` moves).
    ///
    /// # Errors
    /// [`RegistryError::Api`] with `40401` (no such subject), `40402` (no
    /// such version), `42202` (invalid version); transport errors.
    ///
    /// # Cancel safety
    /// Cancel safe (a read).
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Version,
    ) -> Result<SubjectVersion, RegistryError> {
        let path = format!("/subjects/{}/versions/{version}", encode_segment(subject));
        let answer: SubjectVersion = self
            .call("subject version", Method::GET, &path, None)
            .await?;
        self.lock()
            .insert_schema(answer.id, answer.schema.as_str().into());
        Ok(answer)
    }

    /// Whether `schema` could be registered under `subject` as far as
    /// `version` is concerned, by the subject's compatibility level:
    /// `POST /compatibility/subjects/{subject}/versions/{version}`, answer
    /// `{"is_compatible": …}`.
    ///
    /// # Errors
    /// [`RegistryError::Api`] with `40401`/`40402` (no such subject or
    /// version), `42201` (invalid schema); transport errors.
    ///
    /// # Cancel safety
    /// Cancel safe (changes nothing).
    pub async fn is_compatible(
        &self,
        subject: &str,
        version: Version,
        schema: &str,
    ) -> Result<bool, RegistryError> {
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!(
            "/compatibility/subjects/{}/versions/{version}",
            encode_segment(subject)
        );
        let answer: CompatibilityAnswer = self
            .call("compatibility", Method::POST, &path, Some(body))
            .await?;
        Ok(answer.is_compatible)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a cache that is still
        // consistent (single inserts): keep using it.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One REST call; each URL in turn while the failure is a transport one.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, RegistryError> {
        let mut last = None;
        for base in &self.inner.config.urls {
            match self
                .call_one(operation, base, &method, path, body.clone())
                .await
            {
                Err(e @ RegistryError::Transport { .. }) => {
                    tracing::debug!(%base, error = %e, "schema registry unreachable, next URL");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.expect("a config has at least one URL"))
    }

    async fn call_one<T: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        base: &Uri,
        method: &Method,
        path: &str,
        body: Option<String>,
    ) -> Result<T, RegistryError> {
        let transport = |reason: String| RegistryError::Transport { operation, reason };
        let uri = format!("{}{path}", base.to_string().trim_end_matches('/'));
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header(ACCEPT, HeaderValue::from_static(CONTENT_TYPE_V1));
        if body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_V1));
        }
        if let Some(auth) = &self.inner.config.basic_auth {
            req = req.header(AUTHORIZATION, auth.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| RegistryError::Config(format!("request {uri}: {e}")))?;
        let exchange = async {
            let resp = self
                .inner
                .http
                .request(req)
                .await
                .map_err(|e| transport(format!("{method} {uri}: {}", chain(&e))))?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| transport(format!("{method} {uri}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, RegistryError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(self.inner.config.timeout, exchange)
            .await
            .map_err(|_| {
                transport(format!(
                    "{method} {uri}: no answer within {:?}",
                    self.inner.config.timeout
                ))
            })??;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorAnswer>(&bytes) {
                Ok(e) => RegistryError::Api {
                    operation,
                    status: status.as_u16(),
                    error_code: e.error_code,
                    message: e.message,
                },
                Err(_) => RegistryError::Http {
                    operation,
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::InvalidResponse {
            operation,
            reason: e.to_string(),
        })
    }
}

impl Cache {
    fn insert_id(&mut self, key: (String, String), id: SchemaId) {
        if self.ids.len() >= MAX_CACHED {
            self.ids.clear();
        }
        self.ids.insert(key, id);
    }

    fn insert_schema(&mut self, id: SchemaId, schema: Arc<str>) {
        if self.schemas.len() >= MAX_CACHED {
            self.schemas.clear();
        }
        self.schemas.insert(id, schema);
    }
}

/// An error and its causes on one line: hyper-util's says only "client
/// error (Connect)", the reason (refused, a TLS certificate rejected) is
/// in its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Percent-encode one path segment (RFC 3986 unreserved characters stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_basic_credentials() {
        let c = RegistryConfig::from_properties([
            ("schema.registry.url", "http://a:1"),
            ("basic.auth.user.info", "user:hunter2-s3cr3t"),
        ])
        .unwrap();
        let encoded = c.basic_auth.clone().unwrap();
        for shown in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!shown.contains("hunter2-s3cr3t"), "{shown}");
            assert!(!shown.contains(&encoded[6..]), "base64 shown: {shown}");
            assert!(shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(encode_segment("orders-value"), "orders-value");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn config_accepts_confluent_names_and_https() {
        let c = RegistryConfig::from_properties([
            ("schema.registry.url", "https://a:1,http://b:2/"),
            ("basic.auth.user.info", "u:p"),
            ("schema.registry.request.timeout.ms", "250"),
            ("ssl.ca.location", "/etc/ca.pem"),
        ])
        .unwrap();
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.basic_auth.as_deref(), Some("Basic dTpw"));
        assert_eq!(c.tls.ca_pem.as_deref(), Some("/etc/ca.pem".as_ref()));
        assert!(RegistryConfig::new("https://a:1").is_ok());
        assert!(RegistryConfig::new("ftp://a:1").is_err());
        assert!(RegistryConfig::from_properties([("bogus", "1")]).is_err());
        assert!(RegistryConfig::from_properties([]).is_err());
    }

    /// The message a user sees when Basic auth meets an http:// URL.
    fn refused(c: RegistryConfig) -> String {
        match RegistryClient::new(c) {
            Err(RegistryError::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn basic_auth_over_plain_http_is_refused_saying_what_to_do() {
        for urls in ["http://registry:8081", "https://a:1,http://b:2"] {
            let c = RegistryConfig::from_properties([
                ("schema.registry.url", urls),
                ("basic.auth.user.info", "user:hunter2-s3cr3t"),
            ])
            .unwrap();
            let msg = refused(c);
            assert!(msg.contains("https://"), "{msg}");
            assert!(msg.contains("insecure_allow_basic_auth_over_http"), "{msg}");
            assert!(!msg.contains("hunter2-s3cr3t"), "{msg}");
        }
        // Without credentials, plain http stays fine.
        assert!(RegistryClient::from_url("http://registry:8081").is_ok());
    }

    #[test]
    fn basic_auth_over_http_works_with_the_insecure_flag() {
        let c = RegistryConfig::from_properties([
            ("schema.registry.url", "http://127.0.0.1:8081"),
            ("basic.auth.user.info", "u:p"),
        ])
        .unwrap()
        .insecure_allow_basic_auth_over_http(true);
        assert!(format!("{c:?}").contains("basic_auth_over_http: true"));
        assert!(RegistryClient::new(c).is_ok());
    }

    #[test]
    fn basic_auth_over_https_needs_no_flag() {
        let c = RegistryConfig::from_properties([
            ("schema.registry.url", "https://registry:8081"),
            ("basic.auth.user.info", "u:p"),
        ])
        .unwrap();
        assert!(RegistryClient::new(c).is_ok());
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_echoed() {
        for url in [
            "https://user:hunter2-s3cr3t@registry:8081",
            "http://user:hunter2-s3cr3t@registry:8081/prefix",
        ] {
            let err = RegistryConfig::new(url).unwrap_err();
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("hunter2-s3cr3t"), "{shown}");
                assert!(shown.contains("basic.auth.user.info"), "{shown}");
            }
        }
    }

    #[test]
    fn an_unreadable_ca_file_is_a_config_error_naming_it() {
        let c = RegistryConfig::from_properties([
            ("schema.registry.url", "https://registry:8081"),
            ("ssl.ca.location", "/nonexistent/ca.pem"),
        ])
        .unwrap();
        let msg = refused(c);
        assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
    }
}
