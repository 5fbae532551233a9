//! `PgDedup` and `sslmode` against the real PostgreSQL of `cargo xtask
//! postgres up` (or `PG_URL`), which offers no TLS: the modes that allow
//! plain connections keep working, the ones that require TLS fail at
//! connect with an error that says so and what to do, and never show the
//! password.
//!
//! The harness's server has no TLS, so the certificate checks of each
//! `sslmode` run against a stand-in that speaks only the start of the
//! protocol: it answers `SSLRequest` with `S`, does the TLS handshake
//! (tokio-rustls), reads the startup message and answers with an
//! `ErrorResponse` (SQLSTATE 28000) saying the handshake passed. Its
//! certificates are in `tests/it/tls/` (a test CA, `server-localhost.pem`
//! for `localhost` and `127.0.0.1`, `server-other.pem` for `other.example`
//! only; valid until 2126, made once with openssl, test-only keys).

use std::path::PathBuf;
use std::sync::Arc;

use resilience::dedup::postgres::{Outcome, PgDedup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const SECRET: &str = "hunter2-s3cr3t";

/// The harness's string as a `postgresql://` URL, with a password (the
/// server trusts loopback and ignores it).
fn as_url(pg_url: &str, query: &str) -> String {
    let field = |k: &str| {
        pg_url
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).map(str::to_string))
    };
    let host = field("host=").unwrap_or_else(|| "127.0.0.1".into());
    let port = field("port=").unwrap_or_else(|| "5432".into());
    let user = field("user=").unwrap_or_else(|| "postgres".into());
    let db = field("dbname=").unwrap_or_else(|| "postgres".into());
    format!("postgresql://{user}:{SECRET}@{host}:{port}/{db}?{query}")
}

#[tokio::test]
async fn sslmode_disable_and_prefer_keep_working_without_tls() {
    let pg_url = testkit::require_postgres!();
    for conn in [
        format!("{pg_url} sslmode=disable"),
        format!("{pg_url} sslmode=prefer"),
        pg_url.clone(), // prefer, libpq's default
        as_url(&pg_url, "sslmode=disable"),
    ] {
        let pg = PgDedup::connect(&conn, 1).await.unwrap();
        let id = testkit::unique_name("tls-evt");
        let first = pg
            .process_once(&id, |_tx| Box::pin(async { Ok(7) }))
            .await
            .unwrap();
        assert_eq!(first, Outcome::Applied(7), "{conn}");
        let again = pg
            .process_once(&id, |_tx| Box::pin(async { Ok(8) }))
            .await
            .unwrap();
        assert_eq!(again, Outcome::AlreadyProcessed, "{conn}");
    }
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_clearly() {
    let pg_url = testkit::require_postgres!();
    for mode in ["require", "verify-ca", "verify-full"] {
        for conn in [
            format!("{pg_url} sslmode={mode} password={SECRET}"),
            as_url(&pg_url, &format!("sslmode={mode}")),
        ] {
            let err = PgDedup::connect(&conn, 1).await.unwrap_err();
            assert!(err.contains("server does not support TLS"), "{err}");
            assert!(err.contains("turn `ssl` on"), "{err}");
            assert!(err.contains(&format!("sslmode={mode}")), "{err}");
            assert!(!err.contains(SECRET), "{err}");
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/tls")
        .join(name)
}

/// What the stand-in answers once the handshake passed.
const PASSED: &str = "stand-in: TLS handshake passed";

/// The TLS stand-in (see the module docs) with certificate `cert`; its port.
async fn tls_stand_in(cert: &str) -> u16 {
    let certs = CertificateDer::pem_file_iter(fixture(&format!("{cert}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture(&format!("{cert}-key.pem"))).unwrap();
    // kafka-wire's provider (graviola), as the client's.
    let provider = kafka_wire::TlsConfig::default()
        .rustls_client_config()
        .unwrap()
        .crypto_provider()
        .clone();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // SSLRequest: length 8, code 80877103.
                let mut request = [0u8; 8];
                tcp.read_exact(&mut request).await?;
                assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "an SSLRequest");
                tcp.write_all(b"S").await?;
                let mut tls = acceptor.accept(tcp).await?;
                // The startup message: its length, then the rest.
                let mut len = [0u8; 4];
                tls.read_exact(&mut len).await?;
                let len = u32::from_be_bytes(len).clamp(4, 10_000) as usize;
                let mut startup = vec![0u8; len - 4];
                tls.read_exact(&mut startup).await?;
                let mut fields = Vec::new();
                for (code, value) in [(b'S', "FATAL"), (b'C', "28000"), (b'M', PASSED)] {
                    fields.push(code);
                    fields.extend_from_slice(value.as_bytes());
                    fields.push(0);
                }
                fields.push(0);
                let mut answer = vec![b'E'];
                answer.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                answer.extend_from_slice(&fields);
                tls.write_all(&answer).await?;
                tls.shutdown().await
            });
        }
    });
    port
}

/// `PgDedup::connect`'s error against the stand-in: either the stand-in's
/// message (the handshake passed) or the client's TLS refusal.
async fn connect_error(host: &str, port: u16, tls: &str) -> String {
    let conn = format!("host={host} port={port} user=app password={SECRET} {tls}");
    let err = PgDedup::connect(&conn, 1).await.unwrap_err();
    assert!(!err.contains(SECRET), "{err}");
    err
}

#[tokio::test]
async fn each_sslmode_checks_the_servers_certificate_as_libpq_does() {
    let ca = fixture("ca.pem");
    let ca = ca.to_str().unwrap();
    let named = tls_stand_in("server-localhost").await;
    let misnamed = tls_stand_in("server-other").await;
    let full = format!("sslmode=verify-full sslrootcert={ca}");
    let chain = format!("sslmode=verify-ca sslrootcert={ca}");
    let require_ca = format!("sslmode=require sslrootcert={ca}");
    // (port, host dialed, settings, passes)
    let cases: [(u16, &str, &str, bool); 10] = [
        // verify-full: chain and name (a DNS name, an IP SAN).
        (named, "localhost", &full, true),
        (named, "127.0.0.1", &full, true),
        (misnamed, "127.0.0.1", &full, false),
        // Without sslrootcert, the Mozilla roots: the test CA is not one.
        (named, "localhost", "sslmode=verify-full", false),
        // verify-ca: the chain only.
        (misnamed, "127.0.0.1", &chain, true),
        (misnamed, "127.0.0.1", "sslmode=verify-ca", false),
        // require with sslrootcert: as verify-ca.
        (misnamed, "127.0.0.1", &require_ca, true),
        (named, "localhost", &require_ca, true),
        // require and prefer: encrypted, not checked.
        (misnamed, "127.0.0.1", "sslmode=require", true),
        (misnamed, "127.0.0.1", "sslmode=prefer", true),
    ];
    for (port, host, tls, passes) in cases {
        let err = connect_error(host, port, tls).await;
        if passes {
            assert!(err.contains(PASSED), "{host} {tls}: {err}");
        } else {
            assert!(!err.contains(PASSED), "{host} {tls}: {err}");
            assert!(err.contains("certificate"), "{host} {tls}: {err}");
            assert!(err.contains("set sslrootcert"), "{host} {tls}: {err}");
        }
    }
}

#[tokio::test]
async fn a_tls_failure_on_a_handlers_call_is_unavailable_not_a_record_error() {
    let pg_url = testkit::require_postgres!();
    let pool = resilience::dedup::postgres::pool(&format!("{pg_url} sslmode=require"), 1).unwrap();
    let err = pool.get().await.map(|_| ()).unwrap_err();
    // Waited out by the runtime, never retried into the dead-letter topic.
    let err = resilience::dedup::postgres::classify_pool(&err);
    assert!(
        matches!(err, resilience::HandlerError::Unavailable(_)),
        "{err}"
    );
    assert!(
        err.message().contains("server does not support TLS"),
        "{err}"
    );
}
