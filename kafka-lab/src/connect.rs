//! Connection options shared by every subcommand. Names mirror Kafka's
//! property names; `-X key=value` passes any other client property through.

use anyhow::Context;
use clap::Args;
use kafka_wire::{ClientConfig, ClientConfigBuilder};

#[derive(Debug, Args)]
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
            b = b.set(k, v)?;
        }
        Ok(b)
    }
}

/// Split a `key=value` flag argument (both sides trimmed); the error names the flag.
pub fn key_value<'a>(flag: &str, kv: &'a str) -> anyhow::Result<(&'a str, &'a str)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{flag} {kv:?}: expected key=value"))?;
    Ok((k.trim(), v.trim()))
}
