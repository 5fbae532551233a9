//! PostgreSQL idempotency (feature `postgres`, pure Rust: tokio-postgres
//! connections in a deadpool-postgres pool).
//!
//! Table `processed_events (event_id text primary key, processed_at timestamptz)`,
//! created if missing. Two ways to use it:
//!
//! - as a [`DedupStore`] (check, process, mark): any side effect, any store;
//! - as an **inbox** with [`PgDedup::process_once`]: your database write and
//!   the "processed" mark commit in one transaction, so even a crash between
//!   them cannot apply the side effect twice.
//!
//! ```no_run
//! # use resilience::dedup::postgres::{PgDedup, Outcome};
//! # async fn f(pg: &PgDedup) -> Result<(), resilience::HandlerError> {
//! let outcome = pg
//!     .process_once("order-42", |tx| Box::pin(async move {
//!         tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1", &[])
//!             .await
//!             .map_err(|e| resilience::dedup::postgres::classify(&e))?;
//!         Ok(())
//!     }))
//!     .await?;
//! assert!(matches!(outcome, Outcome::Applied(()) | Outcome::AlreadyProcessed));
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! [`pool`] builds the [`Pool`] that [`PgDedup`] (and any other code that
//! wants the same behaviour) uses: connections are made when first needed,
//! at most `size` of them, and a connection found closed when it is taken
//! (the server restarted or cut it) is dropped and replaced by a new one
//! (deadpool's "fast" recycling). A connection whose statement failed
//! because the connection itself failed is never handed out again. So
//! after a PostgreSQL restart the next calls connect anew: nothing has to
//! be rebuilt, and the calls made while the server was down fail as
//! [`HandlerError::Unavailable`].
//!
//! # TLS
//!
//! The connection string's `sslmode` is honoured as libpq does, with
//! rustls on kafka-wire's graviola provider (pure Rust, see
//! [`kafka_wire::TlsConfig::rustls_client_config`]):
//!
//! | `sslmode` | encrypted | the server's certificate |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (the default) | when the server offers TLS | not checked |
//! | `require` | yes, or the connection fails | not checked; with `sslrootcert`, as `verify-ca` |
//! | `verify-ca` | yes | chains to `sslrootcert` (or the Mozilla roots) |
//! | `verify-full` | yes | chains, and names the host dialed (DNS or IP SAN) |
//!
//! `sslrootcert` (a PEM file of CAs; without it, or with `system`, the
//! Mozilla root set, where libpq would read `~/.postgresql/root.crt`),
//! `sslcert` and `sslkey` (a client certificate, PEM) work in both forms of
//! the string (`postgresql://…?sslmode=verify-full&sslrootcert=/ca.pem`).
//! `sslmode=allow` is refused (use `prefer`). A managed PostgreSQL that
//! requires TLS wants `sslmode=verify-full` and its CA in `sslrootcert`.
//!
//! # Secrets
//!
//! No error or log line of this module shows the connection string's
//! password: they show [`redact_password`]'s copy. Use it too wherever
//! your own code names the string.
//!
//! # Errors
//!
//! [`classify`] is the one decision of what a PostgreSQL failure means for
//! the record being handled:
//!
//! | failure | becomes | the runtime |
//! |---|---|---|
//! | no connection: closed, refused, I/O, a pool timeout; SQLSTATE `08…` (connection exception), `28…` (authorization), `3D000` (no such database), `53…` (insufficient resources, e.g. too many connections), `55000` (e.g. a database not accepting connections), `57P01`–`57P03` (shutdown, crash, cannot connect now) | [`HandlerError::Unavailable`] | waits for the database, never dead-letters |
//! | the value itself: `22…` (data exception, e.g. a NUL byte), `54…` (program limit, e.g. an event id too long for the btree index) | [`HandlerError::NonRetryable`] | dead-letters that record at once |
//! | anything else (a deadlock, a serialization failure, a constraint) | [`HandlerError::Retryable`] | retries it, then dead-letters it |

use std::error::Error as _;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Transaction;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The pool crate this module is built on: its [`Pool`] and [`PoolError`]
/// are re-exported below, the rest is here for custom set-ups.
pub use deadpool_postgres;
/// A pool of PostgreSQL connections (build one with [`pool`]); `get()`
/// hands out a connection that derefs to a [`tokio_postgres::Client`].
pub use deadpool_postgres::{Pool, PoolError};
/// The tokio-postgres this module is built on. [`PgDedup::process_once`]
/// hands your closure its [`Transaction`]: use these types (and
/// `tokio_postgres::GenericClient` for code shared with a plain `Client`)
/// instead of a separate `tokio-postgres` dependency whose version would
/// have to match.
pub use tokio_postgres;

use super::{DedupStore, StoreFuture};
use crate::retry::HandlerError;

/// How long making a connection, or checking a pooled one before reuse,
/// may take before the call fails as [`HandlerError::Unavailable`]: a
/// server that drops packets must not hang a handler.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`PgDedup::process_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Your closure ran and its transaction committed with the mark.
    Applied(T),
    /// The event id was already marked: nothing ran.
    AlreadyProcessed,
}

/// The inbox closure's future, borrowing the transaction.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send + 't>>;

/// A pool of at most `size` connections (at least 1) for a libpq-style
/// string (`host=127.0.0.1 port=5432 user=app dbname=app`) or a
/// `postgresql://` URL, with TLS as its `sslmode` says (see [TLS](self#tls)).
/// See the [module docs](self) for how it replaces broken connections.
///
/// # Errors
/// The string does not parse, an `ssl*` setting is unknown, or a
/// certificate file cannot be read: text that names the string with its
/// password redacted ([`redact_password`]).
pub fn pool(config: &str, size: usize) -> Result<Pool, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!(
            "PostgreSQL connection string '{}': {why}",
            redact_password(config)
        )
    };
    let (rest, tls) = split_tls(config).map_err(|e| bad(&e))?;
    let mut parsed: tokio_postgres::Config = rest.parse().map_err(|e| bad(&e))?;
    parsed.ssl_mode(tls.mode.negotiation());
    pool_with_tls(parsed, &tls, size).map_err(|e| bad(&e))
}

/// [`pool`] from a parsed config (to set `connect_timeout`, say). Its
/// `ssl_mode` decides TLS as `disable`, `prefer` or `require` do in
/// [`pool`], without checking the server's certificate; use
/// [`pool_with_tls`] to verify it.
pub fn pool_from(config: tokio_postgres::Config, size: usize) -> Pool {
    let mode = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => SslMode::Disable,
        tokio_postgres::config::SslMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    let tls = PgTls {
        mode,
        ..PgTls::default()
    };
    pool_with_tls(config, &tls, size)
        .expect("without certificate files to read, the TLS set-up cannot fail")
}

/// [`pool_from`] with the TLS settings `tls` (see [TLS](self#tls)); the
/// protocol's `ssl_mode` is set from `tls.mode`.
///
/// # Errors
/// A certificate or key file cannot be read or is rejected, or only one
/// of `client_cert` and `client_key` is set.
pub fn pool_with_tls(
    mut config: tokio_postgres::Config,
    tls: &PgTls,
    size: usize,
) -> Result<Pool, String> {
    config.ssl_mode(tls.mode.negotiation());
    let manager = Manager::from_config(
        config,
        MakeRustlsConnect::new(tls.rustls_config()?),
        ManagerConfig {
            // `is_closed()` when taken: no round trip per call. A half-open
            // connection fails its statement instead, and is dropped then.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        // No wait timeout: with every connection busy a call waits its turn.
        .build()
        .expect("timeouts with a runtime set always build"))
}

/// libpq's `sslmode`: whether a connection is encrypted, and what of the
/// server's certificate is checked (the table in [TLS](self#tls)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; the certificate is not
    /// checked (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not checked unless a root
    /// certificate is given (then as [`SslMode::VerifyCa`]).
    Require,
    /// TLS, the certificate chains to a trusted CA; its name is not checked.
    VerifyCa,
    /// TLS, the certificate chains to a trusted CA and names the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq value (`verify-full`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres negotiates: the verify modes require TLS.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    /// libpq's names; `allow` is refused (tokio-postgres cannot try plain
    /// first), with the advice to use `prefer`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => return Err("sslmode=allow is not supported: use sslmode=prefer".into()),
            other => {
                return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }
}

/// TLS for PostgreSQL connections: libpq's `sslmode`, `sslrootcert`,
/// `sslcert` and `sslkey` (see [TLS](self#tls)). [`pool`] reads them from
/// the connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgTls {
    /// `sslmode`; default [`SslMode::Prefer`].
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of the CAs to trust. `None`: the Mozilla
    /// root set (webpki-roots).
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client certificate chain (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM).
    pub client_key: Option<PathBuf>,
}

impl PgTls {
    /// The rustls configuration: kafka-wire's (graviola provider, trust
    /// anchors, client certificate), with the certificate check `mode`
    /// asks for.
    fn rustls_config(&self) -> Result<rustls::ClientConfig, String> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err("sslcert and sslkey must be set together".into());
        }
        let files = kafka_wire::TlsConfig {
            ca_pem: self.root_cert.clone(),
            client_cert_pem: self.client_cert.clone(),
            client_key_pem: self.client_key.clone(),
        };
        let tls_error = |e: kafka_wire::Error| format!("PostgreSQL TLS: {e}");
        let mut config = files.rustls_client_config().map_err(tls_error)?;
        let provider = config.crypto_provider().clone();
        let chain_only = match self.mode {
            // kafka-wire's verifier: the chain and the name.
            SslMode::VerifyFull => return Ok(config),
            SslMode::VerifyCa => true,
            SslMode::Require => self.root_cert.is_some(),
            SslMode::Disable | SslMode::Prefer => false,
        };
        let roots = if chain_only {
            Some(Arc::new(files.root_certificates().map_err(tls_error)?))
        } else {
            None
        };
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(LibpqVerifier { roots, provider }));
        Ok(config)
    }
}

/// The server-certificate check of the modes below `verify-full`: with
/// `roots`, the chain only (`verify-ca`: the name is not checked); without,
/// none (`prefer`, `require`: encrypted against a passive listener, not
/// authenticated). The handshake's signatures are always checked.
#[derive(Debug)]
struct LibpqVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The keys [`split_tls`] takes out of a connection string.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// The keys whose values [`redact_password`] hides.
const SECRET_KEYS: [&str; 2] = ["password", "sslpassword"];

/// One `key=value` of a connection string: the key and value as
/// tokio-postgres reads them (quotes, escapes, percent-encoding undone),
/// and the byte ranges of the whole pair and of the value as written.
#[derive(Debug)]
struct Param {
    key: String,
    value: String,
    pair: Range<usize>,
    value_at: Range<usize>,
}

/// A connection string's parameters, in either form.
#[derive(Debug)]
enum Params {
    /// `postgresql://…?query`: `creds` is the user-and-password part
    /// (before the last `@`), `query` where the `?`'s parameters start.
    Url {
        creds: Option<Range<usize>>,
        query: Option<usize>,
        params: Vec<Param>,
    },
    /// `key=value …`; `stopped_at`: where a part that does not parse
    /// begins (a missing `=`, an unterminated quote).
    KeyValue {
        params: Vec<Param>,
        stopped_at: Option<usize>,
    },
}

/// Split as tokio-postgres's parsers do (its `Config::from_str`).
fn params(s: &str) -> Params {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|p| s.starts_with(p));
    match scheme {
        Some(p) => url_params(s, p.len()),
        None => kv_params(s),
    }
}

fn url_params(s: &str, start: usize) -> Params {
    // tokio-postgres ends the credentials at the first `@`; a password
    // with an unencoded `@` runs to a later one: the last `@` covers both.
    let first_at = s[start..].find('@').map(|i| start + i);
    let creds = s[start..].rfind('@').map(|i| start..start + i);
    let after_creds = first_at.map_or(start, |i| i + 1);
    let query = s[after_creds..].find('?').map(|i| after_creds + i + 1);
    let mut params = Vec::new();
    if let Some(q) = query {
        let mut at = q;
        for piece in s[q..].split('&') {
            let end = at + piece.len();
            if let Some(eq) = piece.find('=') {
                params.push(Param {
                    key: percent_decode(&piece[..eq]),
                    value: percent_decode(&piece[eq + 1..]),
                    pair: at..end,
                    value_at: at + eq + 1..end,
                });
            }
            at = end + 1;
        }
    }
    Params::Url {
        creds,
        query,
        params,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn kv_params(s: &str) -> Params {
    let peek = |i: usize| s[i..].chars().next();
    let skip_ws = |mut i: usize| {
        while let Some(c) = peek(i).filter(|c| c.is_whitespace()) {
            i += c.len_utf8();
        }
        i
    };
    let mut params = Vec::new();
    let mut i = 0;
    let stopped_at = loop {
        i = skip_ws(i);
        let start = i;
        if i == s.len() {
            break None;
        }
        while let Some(c) = peek(i).filter(|&c| !c.is_whitespace() && c != '=') {
            i += c.len_utf8();
        }
        let key = &s[start..i];
        i = skip_ws(i);
        if key.is_empty() || peek(i) != Some('=') {
            break Some(start);
        }
        i = skip_ws(i + 1);
        let value_start = i;
        let mut value = String::new();
        let quoted = peek(i) == Some('\'');
        if quoted {
            i += 1;
        }
        let mut closed = false;
        while let Some(c) = peek(i) {
            if quoted && c == '\'' {
                i += 1;
                closed = true;
                break;
            }
            if !quoted && c.is_whitespace() {
                break;
            }
            i += c.len_utf8();
            if c == '\\' {
                if let Some(escaped) = peek(i) {
                    value.push(escaped);
                    i += escaped.len_utf8();
                }
            } else {
                value.push(c);
            }
        }
        if (quoted && !closed) || (!quoted && value.is_empty()) {
            break Some(start);
        }
        params.push(Param {
            key: key.to_string(),
            value,
            pair: start..i,
            value_at: value_start..i,
        });
    };
    Params::KeyValue { params, stopped_at }
}

/// `connection` with its password hidden, for error text and logs: in a
/// URL (`postgresql://user:secret@host/db` → `postgresql://user:***@host/db`),
/// and as a `password=`/`sslpassword=` parameter in either form (quoted or
/// not). What follows a part of a key=value string that does not parse
/// is hidden too, since a password could hide in it. Everything else
/// stays, so that the message still names the server.
///
/// ```
/// # use resilience::dedup::postgres::redact_password;
/// assert_eq!(
///     redact_password("host=db port=5432 user=app password='s3 cr3t'"),
///     "host=db port=5432 user=app password=***",
/// );
/// assert_eq!(
///     redact_password("postgres://app:s3cr3t@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require",
/// );
/// ```
pub fn redact_password(connection: &str) -> String {
    const HIDDEN: &str = "***";
    let secret = |p: &&Param| SECRET_KEYS.contains(&p.key.as_str());
    let mut hide: Vec<Range<usize>> = Vec::new();
    let mut tail = None;
    match params(connection) {
        Params::Url { creds, params, .. } => {
            if let Some(creds) = creds {
                if let Some(colon) = connection[creds.clone()].find(':') {
                    hide.push(creds.start + colon + 1..creds.end);
                }
            }
            hide.extend(params.iter().filter(secret).map(|p| p.value_at.clone()));
        }
        Params::KeyValue { params, stopped_at } => {
            hide.extend(params.iter().filter(secret).map(|p| p.value_at.clone()));
            tail = stopped_at;
        }
    }
    hide.sort_by_key(|r| r.start);
    let end = tail.unwrap_or(connection.len());
    let mut out = String::with_capacity(connection.len());
    let mut at = 0;
    for r in hide {
        if r.start < at || r.start >= end {
            continue; // inside a range already hidden (a password with `@…?password=`)
        }
        out.push_str(&connection[at..r.start]);
        out.push_str(HIDDEN);
        at = r.end.min(end);
    }
    out.push_str(&connection[at..end]);
    if tail.is_some() {
        out.push_str("<the rest does not parse: not shown>");
    }
    out
}

/// What to do about a TLS failure, for [`PgDedup::connect`]'s error.
fn tls_hint(why: &str) -> &'static str {
    if why.contains("server does not support TLS") {
        " (sslmode requires TLS and this server does not offer it: turn `ssl` on in the \
         server's postgresql.conf, or, on a network you trust, use sslmode=prefer or disable)"
    } else if why.contains("TLS handshake") && why.contains("certificate") {
        " (the server's certificate was rejected: set sslrootcert to the CA that signed it; \
         with sslmode=verify-full it must also name the host dialed)"
    } else {
        ""
    }
}

/// `connection` without its TLS keys ([`TLS_KEYS`], which tokio-postgres
/// does not all know), and the TLS settings they gave. A string that does
/// not parse comes back whole, for tokio-postgres to say why.
fn split_tls(connection: &str) -> Result<(String, PgTls), String> {
    let (all, kept) = match params(connection) {
        Params::Url { query, params, .. } => {
            let Some(query) = query else {
                return Ok((connection.to_string(), PgTls::default()));
            };
            let kept: Vec<&str> = params
                .iter()
                .filter(|p| !TLS_KEYS.contains(&p.key.as_str()))
                .map(|p| &connection[p.pair.clone()])
                .collect();
            let base = &connection[..query - 1];
            let rest = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            (params, rest)
        }
        Params::KeyValue {
            stopped_at: Some(_),
            ..
        } => return Ok((connection.to_string(), PgTls::default())),
        Params::KeyValue { params, .. } => {
            let kept: Vec<&str> = params
                .iter()
                .filter(|p| !TLS_KEYS.contains(&p.key.as_str()))
                .map(|p| &connection[p.pair.clone()])
                .collect();
            (params, kept.join(" "))
        }
    };
    let mut tls = PgTls::default();
    for p in all {
        let path = || Some(PathBuf::from(&p.value));
        match p.key.as_str() {
            "sslmode" => tls.mode = p.value.parse()?,
            // libpq's "the system's trust store": here, the Mozilla roots.
            "sslrootcert" if p.value == "system" => tls.root_cert = None,
            "sslrootcert" => tls.root_cert = path(),
            "sslcert" => tls.client_cert = path(),
            "sslkey" => tls.client_key = path(),
            _ => {}
        }
    }
    Ok((kept, tls))
}

/// What a failure means for the record being handled; see the table in
/// the [module docs](self). The decision itself, apart from the error
/// types, so that it can be tested without a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unavailable,
    NonRetryable,
    Retryable,
}

/// `code` is the server's SQLSTATE when it answered with an error;
/// `connection_lost` says the connection failed (closed, refused, I/O).
fn class(code: Option<&str>, connection_lost: bool) -> Class {
    let Some(code) = code else {
        return if connection_lost {
            Class::Unavailable
        } else {
            // A parameter that does not serialize, a row that does not
            // fit the Rust type: the caller's bug, not the database's.
            Class::Retryable
        };
    };
    match code.get(..2).unwrap_or("") {
        "08" | "28" | "53" => Class::Unavailable,
        "22" | "54" => Class::NonRetryable,
        _ if matches!(code, "3D000" | "55000" | "57P01" | "57P02" | "57P03") => Class::Unavailable,
        _ => Class::Retryable,
    }
}

/// The error and its causes on one line: tokio-postgres prints only
/// "db error" itself, the server's message is its source.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(code) = e.code() {
        text.push_str(&format!(" (SQLSTATE {})", code.code()));
    }
    text
}

/// What a tokio-postgres error means for the record being handled: the
/// one classification of this module (see the table in the [module
/// docs](self)). Use it in an inbox closure, or anywhere a handler talks
/// to PostgreSQL.
pub fn classify(e: &tokio_postgres::Error) -> HandlerError {
    let lost = e.is_closed()
        || e.source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    let text = format!("PostgreSQL: {}", describe(e));
    match class(e.code().map(|c| c.code()), lost) {
        Class::Unavailable => HandlerError::Unavailable(text),
        Class::NonRetryable => HandlerError::NonRetryable(text),
        Class::Retryable => HandlerError::Retryable(text),
    }
}

/// [`classify`] for a pool's error: no connection could be had (a
/// timeout, a closed pool) is [`HandlerError::Unavailable`]; a backend
/// error is classified as itself (a refused connection is unavailable).
pub fn classify_pool(e: &PoolError) -> HandlerError {
    match e {
        // Making (or checking) a connection failed without the server's
        // SQLSTATE: refused, a TLS handshake (a server without TLS under
        // `sslmode=require`, a certificate rejected). The set-up, not the
        // record: waited out, never dead-lettered.
        PoolError::Backend(e) if e.code().is_none() => {
            HandlerError::Unavailable(format!("PostgreSQL: {}", describe(e)))
        }
        PoolError::Backend(e) => classify(e),
        other => HandlerError::Unavailable(format!("PostgreSQL pool: {other}")),
    }
}

/// `?` on a [`Pool::get`] (or a function returning [`PoolError`]) in a
/// handler: [`classify_pool`].
impl From<PoolError> for HandlerError {
    fn from(e: PoolError) -> Self {
        classify_pool(&e)
    }
}

/// Connections to one database, in a [`Pool`]. Each call holds one
/// connection until it finishes (an inbox closure: until its transaction
/// commits), so give it as many connections as handlers run at once
/// (`ProcessorConfig::concurrency`); a call waits when all are busy.
/// Connections are made when first needed and replaced when broken (see
/// the [module docs](self)).
pub struct PgDedup {
    pool: Pool,
}

impl std::fmt::Debug for PgDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgDedup")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
            .finish()
    }
}

/// Under an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` can race.
const CREATE: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7262534);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now());
COMMIT;";

const MARK: &str = "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING";

/// Why an inbox call failed: a statement of ours, or your closure.
enum Failed {
    Db(tokio_postgres::Error),
    Handler(HandlerError),
}

impl PgDedup {
    /// A pool of at most `pool_size` connections with a libpq-style string,
    /// e.g. `host=127.0.0.1 port=5432 user=app dbname=app`, or a
    /// `postgresql://` URL, TLS as its `sslmode` says (see [TLS](self#tls));
    /// connects one now and creates the table.
    ///
    /// # Errors
    /// Connection (TLS included) or DDL failures, as text naming the
    /// server; the string's password is never in it ([`redact_password`]).
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is kept; the table is created in one
    /// transaction or not at all.
    pub async fn connect(config: &str, pool_size: usize) -> Result<PgDedup, String> {
        let pool = pool(config, pool_size)?;
        let client = pool.get().await.map_err(|e| {
            let why = match &e {
                PoolError::Backend(e) => describe(e),
                other => other.to_string(),
            };
            format!(
                "PostgreSQL at '{}': {why}{}",
                redact_password(config),
                tls_hint(&why)
            )
        })?;
        client
            .batch_execute(CREATE)
            .await
            .map_err(|e| format!("creating processed_events: {}", describe(&e)))?;
        drop(client);
        Ok(PgDedup { pool })
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, HandlerError> {
        self.pool.get().await.map_err(|e| classify_pool(&e))
    }

    /// `e` classified. A connection whose failure was the connection's
    /// (not the statement's) leaves the pool now: it is dropped, and the
    /// next call connects anew.
    fn failed(client: Object, e: &tokio_postgres::Error) -> HandlerError {
        let err = classify(e);
        if matches!(err, HandlerError::Unavailable(_)) {
            drop(Object::take(client));
        }
        err
    }

    /// The inbox pattern: in one transaction, mark `event_id` processed and
    /// run `f` with the transaction for your own writes. If the id was
    /// already marked, nothing runs. If `f` fails, nothing commits.
    ///
    /// # Errors
    /// `f`'s error, or a database error as [`classify`] says: no connection
    /// (during a restart, say) is [`HandlerError::Unavailable`]; an
    /// `event_id` the table cannot hold (too long for its index: about
    /// 2.7 KB) is [`HandlerError::NonRetryable`].
    ///
    /// # Cancel safety
    /// Cancel safe: a transaction that was not committed rolls back.
    pub async fn process_once<T, F>(&self, event_id: &str, f: F) -> Result<Outcome<T>, HandlerError>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
    {
        let mut client = self.client().await?;
        match inbox(&mut client, event_id, f).await {
            Ok(outcome) => Ok(outcome),
            Err(Failed::Handler(e)) => Err(e),
            Err(Failed::Db(e)) => Err(Self::failed(client, &e)),
        }
    }

    /// Run a query on one of the pool's connections (tests, set-up).
    ///
    /// # Errors
    /// The database's.
    ///
    /// # Cancel safety
    /// As the statements: a batch cancelled half-way may have run in part.
    pub async fn batch_execute(&self, sql: &str) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        match client.batch_execute(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(Self::failed(client, &e).to_string()),
        }
    }

    /// One `i64` from a query returning one row and column (tests, checks).
    ///
    /// # Errors
    /// The database's.
    ///
    /// # Cancel safety
    /// Cancel safe for a query that writes nothing.
    pub async fn query_i64(&self, sql: &str) -> Result<i64, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        match client.query_one(sql, &[]).await {
            Ok(row) => row.try_get::<_, i64>(0).map_err(|e| describe(&e)),
            Err(e) => Err(Self::failed(client, &e).to_string()),
        }
    }
}

/// [`PgDedup::process_once`] on one connection.
async fn inbox<T, F>(
    client: &mut tokio_postgres::Client,
    event_id: &str,
    f: F,
) -> Result<Outcome<T>, Failed>
where
    F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
{
    let tx = client.transaction().await.map_err(Failed::Db)?;
    // The insert takes the row lock: a concurrent duplicate waits here,
    // then sees the row and does nothing.
    let inserted = tx.execute(MARK, &[&event_id]).await.map_err(Failed::Db)?;
    if inserted == 0 {
        tx.rollback().await.map_err(Failed::Db)?;
        return Ok(Outcome::AlreadyProcessed);
    }
    let value = f(&tx).await.map_err(Failed::Handler)?; // dropping tx on error rolls back
    tx.commit().await.map_err(Failed::Db)?;
    Ok(Outcome::Applied(value))
}

/// The errors are [`classify`]'s (see [`DedupStore`] for what the runtime
/// does with each class): an outage is waited out; an event id the table
/// cannot hold (over about 2.7 KB, SQLSTATE 54000) is `NonRetryable`, so
/// that record is committed unmarked instead of stalling its partition.
/// Keep ids short (a hash of a long one), or use
/// [`PgDedup::process_once`], which dead-letters that record.
impl DedupStore for PgDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let client = self.client().await?;
            match client
                .query_opt("SELECT 1 FROM processed_events WHERE event_id = $1", &[&id])
                .await
            {
                Ok(row) => Ok(row.is_some()),
                Err(e) => Err(Self::failed(client, &e)),
            }
        })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            match client.execute(MARK, &[&id]).await {
                Ok(_) => Ok(()),
                Err(e) => Err(Self::failed(client, &e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_without_an_answer_is_unavailable() {
        assert_eq!(class(None, true), Class::Unavailable);
    }

    #[test]
    fn connection_and_shutdown_sqlstates_are_unavailable() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "08P01", // connection exception
            "57P01", // admin_shutdown (a fast or smart stop)
            "57P02", // crash_shutdown
            "57P03", // cannot_connect_now (starting up, shutting down)
            "53300", // too_many_connections
            "28P01", // invalid_password: the record is fine, the set-up is not
            "3D000", // the database does not exist
            "55000", // database not accepting connections
        ] {
            assert_eq!(class(Some(code), false), Class::Unavailable, "{code}");
        }
    }

    #[test]
    fn a_value_the_table_cannot_hold_is_non_retryable() {
        for code in [
            "54000", // program_limit_exceeded: index row size exceeds btree maximum
            "54001", // statement_too_complex
            "22021", // character_not_in_repertoire (a NUL byte in text)
            "22001", // string_data_right_truncation
        ] {
            assert_eq!(class(Some(code), false), Class::NonRetryable, "{code}");
        }
    }

    #[test]
    fn other_database_errors_stay_retryable() {
        for code in [
            "40001", // serialization_failure
            "40P01", // deadlock_detected
            "23505", // unique_violation
            "42P01", // undefined_table
            "57014", // query_canceled (a statement timeout): not an outage
            "57P04", // database_dropped: it will not come back
        ] {
            assert_eq!(class(Some(code), false), Class::Retryable, "{code}");
        }
        // No answer and no lost connection: a parameter that did not serialize.
        assert_eq!(class(None, false), Class::Retryable);
    }

    #[test]
    fn a_pool_timeout_or_a_closed_pool_is_unavailable() {
        let timeout = PoolError::Timeout(deadpool_postgres::TimeoutType::Wait);
        assert!(matches!(
            classify_pool(&timeout),
            HandlerError::Unavailable(_)
        ));
        assert!(matches!(
            HandlerError::from(PoolError::Closed),
            HandlerError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_promptly() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = pool(&format!("host=127.0.0.1 port={port} user=postgres"), 1).unwrap();
        let started = std::time::Instant::now();
        let err = pool.get().await.map(|_| ()).unwrap_err();
        let err = classify_pool(&err);
        assert!(matches!(err, HandlerError::Unavailable(_)), "{err}");
        assert!(err.message().contains("PostgreSQL"), "{err}");
        assert!(started.elapsed() < CONNECT_TIMEOUT, "refused at once");
        // PgDedup::connect says which server, never the password.
        let msg = PgDedup::connect(
            &format!("host=127.0.0.1 port={port} password=hunter2-s3cr3t"),
            1,
        )
        .await
        .unwrap_err();
        assert!(msg.contains(&format!("port={port}")), "{msg}");
        assert!(!msg.contains("hunter2-s3cr3t"), "{msg}");
        assert!(!format!("{msg:?}").contains("hunter2-s3cr3t"), "{msg:?}");
        let msg = PgDedup::connect(
            &format!("postgresql://app:hunter2-s3cr3t@127.0.0.1:{port}/app"),
            1,
        )
        .await
        .unwrap_err();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains("hunter2-s3cr3t"), "{msg}");
    }

    const SECRET: &str = "hunter2-s3cr3t";

    #[test]
    fn redaction_hides_the_password_in_both_forms() {
        for (conn, shown) in [
            (
                "host=db port=5432 user=app password=hunter2-s3cr3t dbname=app",
                "host=db port=5432 user=app password=*** dbname=app",
            ),
            (
                "host=db password = 'hunter2-s3cr3t with spaces \\' and a quote' user=app",
                "host=db password = *** user=app",
            ),
            (
                "host=db password=hunter2-s3cr3t\\ escaped user=app",
                "host=db password=*** user=app",
            ),
            ("password=hunter2-s3cr3t", "password=***"),
            (
                "postgres://app:hunter2-s3cr3t@db:5432/app?sslmode=require",
                "postgres://app:***@db:5432/app?sslmode=require",
            ),
            (
                "postgresql://app:hunter2-s3cr3t@db/app?password=hunter2-s3cr3t&application_name=x",
                "postgresql://app:***@db/app?password=***&application_name=x",
            ),
            (
                // Unencoded `@` and `?` in the password: hidden up to the last `@`.
                "postgresql://app:hun@ter2?-s3cr3t@db/app",
                "postgresql://app:***@db/app",
            ),
            (
                "postgresql://db/app?user=app&password=hunter2-s3cr3t",
                "postgresql://db/app?user=app&password=***",
            ),
            // Nothing secret: unchanged.
            (
                "host=127.0.0.1 port=5432 user=postgres",
                "host=127.0.0.1 port=5432 user=postgres",
            ),
            ("postgres://app@db:5432/app", "postgres://app@db:5432/app"),
        ] {
            let redacted = redact_password(conn);
            assert_eq!(redacted, shown, "{conn}");
            assert!(!redacted.contains("s3cr3t"), "{redacted}");
        }
    }

    #[test]
    fn redaction_hides_what_follows_a_part_that_does_not_parse() {
        for conn in [
            "host=db password='hunter2-s3cr3t", // unterminated quote
            "host=db password hunter2-s3cr3t",  // no `=`
            "host=db =hunter2-s3cr3t",
        ] {
            let redacted = redact_password(conn);
            assert!(!redacted.contains(SECRET), "{redacted}");
            assert!(redacted.starts_with("host=db "), "{redacted}");
        }
    }

    #[test]
    fn a_string_that_does_not_parse_is_an_error_without_the_password() {
        for conn in [
            "host=db password=hunter2-s3cr3t bogus_key=1",
            "host=db password=hunter2-s3cr3t sslmode=bogus",
            "host=db password=hunter2-s3cr3t sslmode=allow",
            "postgres://app:hunter2-s3cr3t@db/app?sslmode=bogus",
            "host=db password=hunter2-s3cr3t sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
            "host=db password=hunter2-s3cr3t sslcert=/nonexistent/client.pem",
        ] {
            let err = pool(conn, 1).unwrap_err();
            assert!(!err.contains(SECRET), "{err}");
            assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
            assert!(err.contains("host=db") || err.contains("@db/app"), "{err}");
        }
        let err = pool("host=db sslmode=allow", 1).unwrap_err();
        assert!(err.contains("use sslmode=prefer"), "{err}");
        let err = pool(
            "host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
            1,
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = pool("host=db sslcert=/nonexistent/client.pem", 1).unwrap_err();
        assert!(err.contains("sslcert and sslkey"), "{err}");
    }

    #[test]
    fn the_tls_keys_are_taken_out_of_both_forms() {
        let (rest, tls) = split_tls(
            "host=db sslmode=verify-full user=app sslrootcert='/etc/my ca.pem' \
             sslcert=/c.pem sslkey=/k.pem dbname=app",
        )
        .unwrap();
        assert_eq!(rest, "host=db user=app dbname=app");
        assert_eq!(
            tls,
            PgTls {
                mode: SslMode::VerifyFull,
                root_cert: Some("/etc/my ca.pem".into()),
                client_cert: Some("/c.pem".into()),
                client_key: Some("/k.pem".into()),
            }
        );
        let (rest, tls) = split_tls(
            "postgresql://app@db:5432/app?sslmode=verify-ca&connect_timeout=5&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://app@db:5432/app?connect_timeout=5");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some("/ca.pem".into()));
        let (rest, tls) = split_tls("postgresql://db/app?sslmode=disable").unwrap();
        assert_eq!(rest, "postgresql://db/app");
        assert_eq!(tls.mode, SslMode::Disable);
        // No sslmode: libpq's default, prefer.
        let (rest, tls) = split_tls("host=db user=app").unwrap();
        assert_eq!(rest, "host=db user=app");
        assert_eq!(tls, PgTls::default());
        assert_eq!(tls.mode, SslMode::Prefer);
        // `system`: the Mozilla roots.
        let (_, tls) = split_tls("host=db sslmode=verify-full sslrootcert=system").unwrap();
        assert_eq!(tls.root_cert, None);
    }

    #[test]
    fn every_sslmode_builds_a_pool() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let conn = format!("host=db user=app sslmode={mode}");
            assert!(pool(&conn, 1).is_ok(), "{mode}");
            assert_eq!(mode.parse::<SslMode>().unwrap().as_str(), mode);
        }
    }
}
