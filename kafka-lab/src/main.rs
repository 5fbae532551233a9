//! `kafka-lab`: the lab CLI.
//!
//! Tools: `check`, `topics`, `produce`, `consume`, `process`, `groups`, and
//! `scenario`: the classic failures run naively and with the runtime
//! (`sim_tests::scenarios`), with a table of counts.

mod connect;
mod consume;
mod groups;
mod json;
mod process;
mod produce;
mod prometheus;
mod topics;

use std::time::Instant;

use clap::{Parser, Subcommand};
use kafka_wire::messages::ApiKey;
use kafka_wire::{Client, Lane};

#[derive(Debug, Parser)]
#[command(
    name = "kafka-lab",
    version,
    about = "The Kafka failure lab and client tools (pure Rust, no librdkafka)"
)]
struct Cli {
    #[command(flatten)]
    connect: connect::ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the cluster and print the brokers, API versions and topics.
    Check,
    /// Create, list, delete topics, or add partitions to one.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Produce records from stdin (one per line) or generated ones.
    Produce(produce::ProduceArgs),
    /// Consume a topic as a group member or from given partitions.
    Consume(consume::ConsumeArgs),
    /// Run the resilient runtime on a topic with a simulated handler
    /// (poison, transient failures, latency), DLT and optional Prometheus metrics.
    Process(process::ProcessArgs),
    /// Run a failure scenario (naive vs resilient) and print its report.
    Scenario {
        /// rebalance, crash, poison, chaos, ambiguous-commit, dlt-unavailable, or all.
        name: String,
    },
    /// List or describe consumer groups (members, offsets, lag).
    Groups {
        #[command(subcommand)]
        command: groups::GroupsCommand,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes, not a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check => check(&cli.connect).await,
        Command::Topics { command } => {
            let client = Client::connect(cli.connect.client_config()?).await?;
            topics::run(&client, command).await
        }
        Command::Consume(args) => consume::run(&cli.connect, args).await,
        Command::Process(args) => process::run(&cli.connect, args).await,
        Command::Scenario { name } => scenario(&cli.connect, &name).await,
        Command::Groups { command } => {
            let client = Client::connect(cli.connect.client_config()?).await?;
            groups::run(&cli.connect, &client, command).await
        }
        Command::Produce(args) => {
            let client = Client::connect(cli.connect.client_config()?).await?;
            produce::run(&cli.connect, &client, args).await
        }
    }
}

async fn check(args: &connect::ConnectArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = Client::connect(args.client_config()?).await?;
    let md = client.refresh_metadata(None).await?;
    println!(
        "connected to {} in {} ms — cluster {} (controller {})",
        args.bootstrap,
        started.elapsed().as_millis(),
        md.cluster_id.as_deref().unwrap_or("?"),
        md.controller_id
    );

    let mut brokers: Vec<_> = md.brokers.values().collect();
    brokers.sort_by_key(|b| b.id);
    println!("\nbrokers ({}):", brokers.len());
    for b in &brokers {
        println!("  {:>4}  {}", b.id, b.address);
    }

    if let Some(first) = brokers.first() {
        let conn = client.connection(first.id, Lane::Control).await?;
        println!(
            "\nAPI versions with broker {} (used / broker's range):",
            first.id
        );
        let versions = &conn.info().versions;
        let mut apis: Vec<_> = versions.broker_apis().to_vec();
        apis.sort_by_key(|a| a.0);
        for (key, lo, hi) in apis {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            let used = versions
                .version(api)
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "-".into());
            println!("  {:<28} {:>4}   v{lo}-v{hi}", format!("{api:?}"), used);
        }
    }

    let mut topics: Vec<_> = md.topics.values().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    println!("\ntopics ({}):", topics.len());
    if topics.is_empty() {
        println!("  (none yet)");
    }
    for t in topics {
        println!(
            "  {:<40} {:>4} partitions{}",
            t.name,
            t.partitions.len(),
            if t.is_internal { "  (internal)" } else { "" }
        );
    }
    Ok(())
}

/// Run one scenario (or all) against `--bootstrap` and print the table.
async fn scenario(connect: &connect::ConnectArgs, name: &str) -> anyhow::Result<()> {
    use sim_tests::scenarios::{self, Report};
    let broker = testkit::BrokerEnv::plaintext(connect.bootstrap.clone());
    // Scenarios that restart the broker need the harness's own broker.
    let ours = testkit::broker().is_some_and(|b| b.bootstrap == connect.bootstrap);
    let names: Vec<&str> = if name == "all" {
        scenarios::NAMES
            .into_iter()
            .filter(|n| {
                let keep = ours || !scenarios::STOPS_THE_BROKER.contains(n);
                if !keep {
                    eprintln!(
                        "scenario {n}: not run: it restarts the broker, and {} is not the one `cargo xtask broker up` started",
                        connect.bootstrap
                    );
                }
                keep
            })
            .collect()
    } else {
        vec![name]
    };
    let mut all = Vec::new();
    for n in names {
        eprintln!("scenario {n}: running (naive, then resilient)…");
        let started = Instant::now();
        let reports = scenarios::run_by_name(&broker, n).await.ok_or_else(|| {
            anyhow::anyhow!(
                "unknown scenario {n}; one of: {}",
                scenarios::NAMES.join(", ")
            )
        })?;
        eprintln!(
            "scenario {n}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        all.extend(reports);
    }
    println!("{}", Report::table(&all));
    Ok(())
}
