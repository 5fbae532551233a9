//! `backpressure demo`: the seed's five situations and the summary table.
//! `backpressure run --topic orders --group orders-service`: the service
//! alone against a topic, printing its numbers every second until Ctrl-C.
//!
//! The broker comes from `KAFKA_BOOTSTRAP` (what `cargo xtask broker up`
//! writes to `target/broker/env`), or `-X bootstrap.servers=...`.

use std::time::Instant;

use anyhow::{bail, Context};
use backpressure::demo::{self, Pace};
use backpressure::service::{self, ServiceConfig, SERVICE_PROPERTIES};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Seed 001: a backpressure-aware, rebalance-safe consumer with a slow downstream")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the five situations (~75 s) and print the summary table.
    Demo {
        /// Scale every duration and the burst by this factor.
        #[arg(long, default_value_t = 1.0)]
        pace: f64,
    },
    /// Run the service against a topic until Ctrl-C.
    Run {
        #[arg(long)]
        topic: String,
        /// `group.id`.
        #[arg(long)]
        group: String,
        /// Any property, `-X key=value`, repeatable: Kafka's consumer
        /// properties, or the service's own (see `backpressure properties`).
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        props: Vec<String>,
    },
    /// List the service's own properties and their defaults.
    Properties,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Demo { pace } => {
            let broker = testkit::BrokerEnv::plaintext(bootstrap()?);
            let started = Instant::now();
            let rows = demo::run(&broker, Pace(pace)).await?;
            println!("\n{}", backpressure::summary::table(&rows));
            println!(
                "\n{} situations in {:.0} s",
                rows.len(),
                started.elapsed().as_secs_f64()
            );
            let failed: Vec<&str> = rows
                .iter()
                .filter(|r| {
                    r.report.lost > 0
                        || r.end_lag > 0
                        || r.commit_regressions > 0
                        || !r.within_bound()
                })
                .map(|r| r.report.scenario)
                .collect();
            if !failed.is_empty() {
                bail!("the seed's claims did not hold in: {}", failed.join(", "));
            }
            Ok(())
        }
        Command::Run {
            topic,
            group,
            props,
        } => {
            let mut pairs: Vec<(String, String)> = vec![("group.id".into(), group)];
            if let Ok(b) = bootstrap() {
                pairs.insert(0, ("bootstrap.servers".into(), b));
            }
            for p in &props {
                let (k, v) = p
                    .split_once('=')
                    .with_context(|| format!("-X {p}: expected key=value"))?;
                pairs.push((k.trim().into(), v.trim().into()));
            }
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let cfg = ServiceConfig::from_properties(&topic, &refs)?;
            println!(
                "{topic} as group {}: bound {} records / {} bytes, {} workers, downstream {} records/s",
                refs[1].1,
                cfg.max_in_flight_records,
                cfg.max_in_flight_bytes,
                cfg.concurrency,
                cfg.downstream_per_second
            );
            service::run(&cfg, resilience::shutdown::signal()).await
        }
        Command::Properties => {
            for (name, default, about) in SERVICE_PROPERTIES {
                println!("{name:<34} {default:>6}  {about}");
            }
            Ok(())
        }
    }
}

/// `KAFKA_BOOTSTRAP`, as `cargo xtask broker up` exports it.
fn bootstrap() -> anyhow::Result<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .context("KAFKA_BOOTSTRAP is not set: `cargo xtask broker up && source target/broker/env`")
}
