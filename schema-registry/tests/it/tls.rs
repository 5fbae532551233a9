//! HTTPS to the registry: a one-endpoint registry behind a tokio-rustls
//! server (graviola provider) on loopback, with the test CA and server
//! certificate in `tests/it/tls/` (`ca.pem`; `server.pem` for `localhost`
//! and `127.0.0.1`, valid until 2126, with its PKCS#8 key
//! `server-key.pem`; made once with openssl, test-only).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use schema_registry::error::RegistryError;
use schema_registry::{RegistryClient, RegistryConfig, SchemaId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/tls")
        .join(name)
}

/// A registry that answers `GET /schemas/ids/1` over TLS and records the
/// head of each request it decrypted. Returns its port.
async fn https_registry(seen: Arc<Mutex<Vec<String>>>) -> u16 {
    let certs = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server-key.pem")).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls_graviola::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // A client that rejects the certificate ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::with_capacity(1024);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match tls.read_buf(&mut head).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let (status, body) = if head.starts_with("GET /schemas/ids/1 ") {
                    ("200 OK", r#"{"schema":"\"string\""}"#)
                } else {
                    (
                        "404 Not Found",
                        r#"{"error_code":40403,"message":"Schema not found"}"#,
                    )
                };
                seen.lock().unwrap().push(head);
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn an_https_registry_is_reached_over_tls_with_basic_auth() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = https_registry(seen.clone()).await;
    let ca = fixture("ca.pem");
    // By DNS name and by IP SAN: the certificate names both.
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{port}");
        let config = RegistryConfig::from_properties([
            ("schema.registry.url", url.as_str()),
            ("basic.auth.user.info", "user:hunter2-s3cr3t"),
            ("ssl.ca.location", ca.to_str().unwrap()),
        ])
        .unwrap();
        // Basic auth over https:// needs no insecure flag.
        let client = RegistryClient::new(config).unwrap();
        let schema = client.schema_by_id(SchemaId(1)).await.unwrap();
        assert_eq!(&*schema, "\"string\"");
        // Not found comes back as the registry said, over TLS too.
        let err = client.schema_by_id(SchemaId(2)).await.unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for head in seen.iter() {
        // base64("user:hunter2-s3cr3t"), sent inside TLS.
        assert!(
            head.contains("authorization: Basic dXNlcjpodW50ZXIyLXMzY3IzdA=="),
            "{head}"
        );
    }
}

#[tokio::test]
async fn an_https_registry_whose_certificate_is_not_trusted_is_refused() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = https_registry(seen.clone()).await;
    // No ssl.ca.location: the Mozilla roots, which never signed the test CA.
    let client = RegistryClient::from_url(&format!("https://localhost:{port}")).unwrap();
    let err = client.schema_by_id(SchemaId(1)).await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");
    let text = format!("{err:?}");
    assert!(text.contains("certificate"), "{text}");
    assert!(seen.lock().unwrap().is_empty(), "no request may be sent");
}
