//! TLS with rustls and the pure-Rust `graviola` crypto provider.
//!
//! Verification is on by default: the broker's certificate must chain to a
//! trusted CA (the configured PEM, or the Mozilla roots) and name the host we
//! dialed, as a DNS name or an IP SAN. Client certificates enable mTLS.
//!
//! All of it is kafka-wire's `tls` feature (on by default). Without it,
//! [`TlsConfig`] still parses, and a client whose `security.protocol` uses
//! TLS fails at connect with an [`Error::Config`] that names the feature.

#[cfg(feature = "tls")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;

#[cfg(feature = "tls")]
use rustls::pki_types::pem::{self, PemObject};
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
#[cfg(feature = "tls")]
use rustls::RootCertStore;

use crate::connector::{BoxTransport, BrokerAddress};
use crate::error::{Error, Result};

/// The connector a client builds once and shares between its connections.
#[cfg(feature = "tls")]
pub(crate) type TlsConnector = tokio_rustls::TlsConnector;

/// Without the `tls` feature no connector can exist.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum TlsConnector {}

/// TLS settings (`ssl.*` properties).
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// `ssl.ca.location`: PEM file of CAs to trust. Without it, the Mozilla
    /// root set (webpki-roots) is trusted.
    pub ca_pem: Option<PathBuf>,
    /// `ssl.certificate.location`: client certificate chain (PEM), for mTLS.
    pub client_cert_pem: Option<PathBuf>,
    /// `ssl.key.location`: the client certificate's private key (PEM).
    pub client_key_pem: Option<PathBuf>,
}

#[cfg(feature = "tls")]
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read certificate file {}: {e}",
            path.display()
        ))
    })?;
    // rustls-pki-types' PEM parser (rustls-pemfile is unmaintained,
    // RUSTSEC-2025-0134); sections other than certificates are skipped.
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "no certificate found in {}",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(feature = "tls")]
fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read key file {}: {e}", path.display())))?;
    // The first PKCS#8, PKCS#1 (RSA) or SEC1 (EC) key in the file.
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            Error::Config(format!("no private key found in {}", path.display()))
        }
        e => Error::Config(format!("bad PEM key in {}: {e}", path.display())),
    })
}

#[cfg(feature = "tls")]
impl TlsConfig {
    /// The trust anchors: the certificates of [`ca_pem`](Self::ca_pem), or
    /// the Mozilla root set (webpki-roots) when it is not set. For crates
    /// that verify a server with other rules than kafka-wire's (a
    /// PostgreSQL `sslmode=verify-ca`, say) on the same trust anchors.
    ///
    /// # Errors
    /// [`Error::Config`]: the file cannot be read, holds no certificate or
    /// bad PEM, or a certificate is not a usable trust anchor.
    pub fn root_certificates(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.ca_pem {
            Some(path) => {
                for cert in read_pem_certs(path)? {
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!("CA in {} rejected: {e}", path.display()))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }

    /// The rustls client configuration kafka-wire's own connections use:
    /// the pure-Rust graviola crypto provider, rustls' safe default
    /// protocol versions (TLS 1.2 and 1.3), the server's certificate
    /// verified against [`root_certificates`](Self::root_certificates) and
    /// the name dialed, and the client certificate when both
    /// [`client_cert_pem`](Self::client_cert_pem) and
    /// [`client_key_pem`](Self::client_key_pem) are set (mTLS). Public so
    /// that other clients of this workspace (the schema registry's HTTPS,
    /// PostgreSQL) speak TLS exactly as the Kafka connections do.
    ///
    /// # Errors
    /// [`Error::Config`]: an unreadable or bad PEM file, a rejected CA or
    /// client certificate, or only one of the client certificate and key.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls_graviola::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS provider: {e}")))?
            .with_root_certificates(self.root_certificates()?);
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_pem_certs(cert)?, read_pem_key(key)?)
                .map_err(|e| Error::Config(format!("client certificate rejected: {e}"))),
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(Error::Config(
                "ssl.certificate.location and ssl.key.location must be set together".into(),
            )),
        }
    }
}

/// Build the rustls connector once per client.
#[cfg(feature = "tls")]
pub(crate) fn build_connector(cfg: &TlsConfig) -> Result<TlsConnector> {
    Ok(TlsConnector::from(Arc::new(cfg.rustls_client_config()?)))
}

/// Without the `tls` feature: the error that says how to get it.
#[cfg(not(feature = "tls"))]
pub(crate) fn build_connector(_: &TlsConfig) -> Result<TlsConnector> {
    Err(Error::Config(
        "security.protocol uses TLS (SSL or SASL_SSL), but this build of kafka-wire left out \
         the `tls` feature: enable it in Cargo.toml (it is on by default)"
            .into(),
    ))
}

#[cfg(not(feature = "tls"))]
pub(crate) async fn handshake(
    connector: &TlsConnector,
    _: BoxTransport,
    _: &BrokerAddress,
) -> Result<BoxTransport> {
    match *connector {}
}

/// Run the TLS handshake over `stream`, verifying `addr.host`.
#[cfg(feature = "tls")]
pub(crate) async fn handshake(
    connector: &TlsConnector,
    stream: BoxTransport,
    addr: &BrokerAddress,
) -> Result<BoxTransport> {
    let name = ServerName::try_from(addr.host.clone()).map_err(|e| Error::Tls {
        broker: addr.to_string(),
        reason: format!("invalid server name {:?}: {e}", addr.host),
    })?;
    let tls = connector
        .connect(name, stream)
        .await
        .map_err(|e| Error::Tls {
            broker: addr.to_string(),
            reason: e.to_string(),
        })?;
    Ok(Box::new(tls))
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nAwQF\n-----END PRIVATE KEY-----\n";

    /// `contents` in a file of its own under the temp dir.
    fn file(name: &str, contents: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("kafka-wire-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// PEM is read with rustls-pki-types (rustls-pemfile is unmaintained,
    /// RUSTSEC-2025-0134): certificates in order, other sections skipped;
    /// the first private key; each failure an `Error::Config` naming the file.
    #[test]
    fn pem_files_are_read_and_each_failure_names_the_file() {
        let both = file("both.pem", &format!("{CERT}{KEY}{CERT}"));
        let certs = read_pem_certs(&both).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &[0, 1, 2]);
        let key = read_pem_key(&both).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        assert_eq!(key.secret_der(), &[3, 4, 5]);

        let cert_only = file("cert-only.pem", CERT);
        let err = read_pem_key(&cert_only).unwrap_err().to_string();
        assert!(err.contains("no private key found"), "{err}");
        let empty = file("empty.pem", "");
        let err = read_pem_certs(&empty).unwrap_err().to_string();
        assert!(err.contains("no certificate found"), "{err}");
        let bad = file(
            "bad.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        let err = read_pem_certs(&bad).unwrap_err().to_string();
        assert!(err.contains("bad PEM") && err.contains("bad.pem"), "{err}");
        for f in [both, cert_only, empty, bad] {
            let _ = std::fs::remove_file(f);
        }
    }
}
