//! A throwaway CA and broker certificate for the harness's SSL listeners.
//!
//! Kafka's PEM keystore wants a PKCS#8 key followed by the certificate chain in
//! one file, and the certificate's SAN must contain `IP:127.0.0.1` because the
//! clients verify the address they dial. The client certificate lets tests try
//! mTLS against the `SSL` listener, which requests (but does not require) one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The CA certificate clients should trust.
    pub ca_pem: PathBuf,
    /// Broker key (PKCS#8) followed by its certificate: Kafka's PEM keystore.
    pub broker_keystore: PathBuf,
    /// A client certificate signed by the CA (for mTLS tests).
    pub client_cert: PathBuf,
    /// The client certificate's PKCS#8 key.
    pub client_key: PathBuf,
}

impl CertPaths {
    fn in_dir(dir: &Path) -> Self {
        Self {
            ca_pem: dir.join("ca.pem"),
            broker_keystore: dir.join("broker-keystore.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }
}

/// Create the certificates in `dir` unless they already exist.
pub fn ensure(dir: &Path) -> anyhow::Result<CertPaths> {
    let paths = CertPaths::in_dir(dir);
    if paths.ca_pem.exists()
        && paths.broker_keystore.exists()
        && paths.client_cert.exists()
        && paths.client_key.exists()
    {
        return Ok(paths);
    }
    fs::create_dir_all(dir)?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kafka-rs test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let broker_key = KeyPair::generate()?;
    let mut broker_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    broker_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    broker_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let broker_cert = broker_params.signed_by(&broker_key, &ca)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "kafka-rs-test-client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &ca)?;

    fs::write(&paths.ca_pem, ca.pem()).context("writing ca.pem")?;
    fs::write(
        &paths.broker_keystore,
        format!("{}{}", broker_key.serialize_pem(), broker_cert.pem()),
    )?;
    fs::write(&paths.client_cert, client_cert.pem())?;
    fs::write(&paths.client_key, client_key.serialize_pem())?;
    Ok(paths)
}
