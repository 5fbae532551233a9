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
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
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
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|e| Error::Config(format!("bad PEM key in {}: {e}", path.display())))?
        .ok_or_else(|| Error::Config(format!("no private key found in {}", path.display())))
}

/// Build the rustls connector once per client.
#[cfg(feature = "tls")]
pub(crate) fn build_connector(cfg: &TlsConfig) -> Result<TlsConnector> {
    let provider = Arc::new(rustls_graviola::default_provider());
    let mut roots = RootCertStore::empty();
    match &cfg.ca_pem {
        Some(path) => {
            for cert in read_pem_certs(path)? {
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("CA in {} rejected: {e}", path.display()))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS provider: {e}")))?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert_pem, &cfg.client_key_pem) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_pem_certs(cert)?, read_pem_key(key)?)
            .map_err(|e| Error::Config(format!("client certificate rejected: {e}")))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::Config(
                "ssl.certificate.location and ssl.key.location must be set together".into(),
            ))
        }
    };
    Ok(TlsConnector::from(Arc::new(config)))
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
