//! `avro-orders`: the seed's producer, consumer and demo.
//!
//! ```text
//! avro-orders producer [--rate 1]        random orders, one per second, each delivery printed
//! avro-orders consumer                   running average, retries, DLQ; final statistics at Ctrl-C
//! avro-orders demo [--count 200]         the whole pipeline for a fixed count, then DLQ replay
//! ```
//!
//! `KAFKA_BOOTSTRAP` names the cluster, `SCHEMA_REGISTRY_URL` the registry
//! (required for producer and consumer; `demo` starts a stand-in without
//! it). `-X key=value` passes any Kafka client property.

use std::time::Duration;

use anyhow::Context;
use avro_orders::order::SCHEMA;
use avro_orders::service::{OrderService, Verbosity};
use avro_orders::settings::Settings;
use avro_orders::summary::Summary;
use avro_orders::{demo, producer};
use clap::{Parser, Subcommand};
use schema_registry::{AvroDeserializer, AvroSerializer, RegistryClient};

#[derive(Debug, Parser)]
#[command(
    name = "avro-orders",
    about = "Seed 002: Avro orders, retries, DLQ, running average"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Orders topic.
    #[arg(long, global = true, default_value = "orders")]
    topic: String,
    /// Dead-letter topic (default `<topic>_dlq`).
    #[arg(long, global = true)]
    dlq: Option<String>,
    /// Consumer group.
    #[arg(long, global = true, default_value = "order-processor-group")]
    group: String,
    /// Schema registry URL.
    #[arg(long, global = true, env = "SCHEMA_REGISTRY_URL")]
    schema_registry_url: Option<String>,
    /// First retry delay in ms (doubles per retry; demo default 10).
    #[arg(long, global = true)]
    retry_backoff_ms: Option<u64>,
    /// Retries before the DLQ.
    #[arg(long, global = true, default_value_t = 3)]
    max_retries: u32,
    /// A Kafka client property, `key=value` (repeatable).
    #[arg(short = 'X', global = true, value_parser = parse_property)]
    property: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce random orders until Ctrl-C.
    Producer {
        /// Orders per second.
        #[arg(long, default_value_t = 1.0)]
        rate: f64,
    },
    /// Consume orders until Ctrl-C, then print the final statistics.
    Consumer,
    /// Run the pipeline for a fixed count against an in-process stand-in
    /// registry (or SCHEMA_REGISTRY_URL), then replay the DLQ.
    Demo {
        #[arg(long, default_value_t = 200)]
        count: u64,
        /// Seed of the order generator (same seed, same counts).
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected key=value")?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Ctrl-C or SIGTERM: the processor drains, commits and leaves the group.
async fn ctrl_c() {
    resilience::shutdown::signal().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let demo_mode = matches!(cli.command, Command::Demo { .. });
    let mut settings = Settings {
        topic: cli.topic.clone(),
        dlq: cli
            .dlq
            .clone()
            .unwrap_or_else(|| format!("{}_dlq", cli.topic)),
        group: cli.group.clone(),
        registry_url: cli.schema_registry_url.clone(),
        max_retries: cli.max_retries,
        properties: cli.property.clone(),
        ..Settings::default()
    };
    let default_backoff = if demo_mode { 10 } else { 1000 };
    settings.retry_backoff = Duration::from_millis(cli.retry_backoff_ms.unwrap_or(default_backoff));
    let registry = || -> anyhow::Result<RegistryClient> {
        let url = settings
            .registry_url
            .as_deref()
            .context("set SCHEMA_REGISTRY_URL (or --schema-registry-url)")?;
        Ok(RegistryClient::from_url(url)?)
    };
    let banner = |s: &Settings| {
        println!(
            "📡 Kafka: {} | 📨 topic: {} | ☠️ DLQ: {}",
            s.bootstrap, s.topic, s.dlq
        );
    };
    match cli.command {
        Command::Producer { rate } => {
            banner(&settings);
            let ser = AvroSerializer::new(registry()?, SCHEMA)?;
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64;
            let sent = producer::run_live(&settings, &ser, rate, seed, ctrl_c()).await?;
            println!("\n⏹️  producer stopped after {sent} orders");
        }
        Command::Consumer => {
            banner(&settings);
            let service = OrderService::new(
                AvroDeserializer::new(registry()?),
                settings.clone(),
                Verbosity::Every,
            );
            let tally = service.tally();
            let processor = service.processor(&settings)?;
            let stats = processor.stats();
            println!(
                "👥 group: {}\n⏳ waiting for messages... (Ctrl-C to stop)",
                settings.group
            );
            processor.run(ctrl_c()).await?;
            println!("\n⏹️  consumer stopped");
            Summary::new(
                tally.snapshot(),
                stats
                    .dead_lettered
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .print();
        }
        Command::Demo { count, seed } => {
            // Fresh topics per run: earlier runs' records never mix in.
            let run = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            if cli.dlq.is_none() {
                settings.topic = format!("{}-{run}", settings.topic);
                settings.dlq = format!("{}_dlq", settings.topic);
                settings.group = format!("{}-{run}", settings.group);
            }
            banner(&settings);
            let report = demo::run(&settings, count, seed, Duration::from_secs(120)).await?;
            report.summary.print();
            report.print();
        }
    }
    Ok(())
}
