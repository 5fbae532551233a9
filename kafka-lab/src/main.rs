//! `kafka-lab`: the lab CLI.
//!
//! Tools: `check`, `topics`, `produce`, `consume`, `process`, `groups`, and
//! `scenario`: the classic failures run naively and with the runtime
//! (`sim_tests::scenarios`), with a table of counts.

mod connect;
mod consume;
mod describe;
mod dlt;
mod exists;
mod groups;
mod json;
mod logging;
mod output;
mod position;
mod process;
mod produce;
mod replicas;
mod share_groups;
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
    /// Connect to the cluster and print the brokers, the API versions and topics.
    Check {
        /// List every API with the version used and the broker's range
        /// (by default one line says how many were negotiated).
        #[arg(long)]
        versions: bool,
    },
    /// Create, list, describe or delete topics, add partitions to one, move
    /// replicas (reassign) and elect leaders.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// Produce records from stdin (one per line) or generated ones.
    Produce(produce::ProduceArgs),
    /// Consume a topic as a group member, a share group member, or from
    /// given partitions.
    Consume(consume::ConsumeArgs),
    /// Run the resilient runtime on a topic with a simulated handler
    /// (poison, transient failures, latency), DLT and optional Prometheus metrics.
    Process(process::ProcessArgs),
    /// Run a failure scenario (naive vs resilient) and print its report.
    #[command(after_help = scenario_help())]
    Scenario {
        /// The scenario to run (listed below), or `all`.
        #[arg(value_parser = scenario_names())]
        name: String,
        /// Where the client's log goes while scenarios run (their injected
        /// faults log warnings on purpose). With RUST_LOG set, logs go to
        /// stderr instead.
        #[arg(long, value_name = "PATH")]
        log_file: Option<std::path::PathBuf>,
        /// The group protocol the scenarios' members speak: `classic`,
        /// `consumer` (KIP-848), or `both` (each scenario under classic,
        /// then under KIP-848; the table gains a column). `both` runs
        /// classic only when the broker has KIP-848 off.
        #[arg(long, value_name = "PROTOCOL", default_value = "both",
              value_parser = ["classic", "consumer", "both"])]
        group_protocol: String,
    },
    /// Dead-letter topics: tail them with provenance, replay their records.
    Dlt {
        #[command(subcommand)]
        command: dlt::DltCommand,
    },
    /// List, describe, reset or delete groups, consumer and share groups
    /// (members, offsets, lag).
    Groups {
        #[command(subcommand)]
        command: groups::GroupsCommand,
    },
}

/// Every scenario name and `all`, for clap.
fn scenario_names() -> clap::builder::PossibleValuesParser {
    let mut names: Vec<&'static str> = sim_tests::scenarios::NAMES.to_vec();
    names.push("all");
    clap::builder::PossibleValuesParser::new(names)
}

/// The scenarios, one line each, under `scenario --help`.
fn scenario_help() -> String {
    let mut s = String::from("Scenarios:\n");
    for (name, about) in sim_tests::scenarios::ABOUT {
        s.push_str(&format!("  {name:<22} {about}\n"));
    }
    s.push_str("  all                    every scenario, then one table");
    s
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
    let cli = Cli::parse();
    let log = logging::init(&cli.command)?;
    match cli.command {
        Command::Check { versions } => check(&cli.connect, versions).await,
        Command::Topics { command } => {
            let client = Client::connect(cli.connect.client_config()?).await?;
            topics::run(&client, command).await
        }
        Command::Consume(args) => consume::run(&cli.connect, args).await,
        Command::Process(args) => process::run(&cli.connect, args).await,
        Command::Scenario {
            name,
            group_protocol,
            ..
        } => scenario(&cli.connect, &name, &group_protocol, log.as_ref()).await,
        Command::Dlt { command } => dlt::run(&cli.connect, command).await,
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

async fn check(args: &connect::ConnectArgs, list_versions: bool) -> anyhow::Result<()> {
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
        let versions = &conn.info().versions;
        if !list_versions {
            let known = versions
                .broker_apis()
                .iter()
                .filter_map(|(key, _, _)| ApiKey::try_from(*key).ok())
                .filter(|api| versions.version(*api).is_some())
                .count();
            println!(
                "\nAPI versions: {known} APIs negotiated with broker {} (`check --versions` lists them)",
                first.id
            );
        }
    }
    if let (Some(first), true) = (brokers.first(), list_versions) {
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

/// Run one scenario (or all) against `--bootstrap` under `protocol`
/// (`classic`, `consumer` or `both`) and print the table.
async fn scenario(
    connect: &connect::ConnectArgs,
    name: &str,
    protocol: &str,
    log: Option<&logging::LogFile>,
) -> anyhow::Result<()> {
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
    let protocols: Vec<&str> = match protocol {
        "both" if testkit::speaks_848(&broker).await => vec!["classic", "consumer"],
        "both" => {
            eprintln!(
                "the broker at {} has KIP-848 off: the scenarios run under the classic protocol only",
                connect.bootstrap
            );
            vec!["classic"]
        }
        "consumer" if !testkit::speaks_848(&broker).await => anyhow::bail!(
            "the broker at {} has KIP-848 off (Kafka 4.0 and later have it on; 3.9 needs \
             group.coordinator.rebalance.protocols=classic,consumer): use \
             --group-protocol classic",
            connect.bootstrap
        ),
        p => vec![p],
    };
    if let Some(log) = log {
        eprintln!(
            "The scenarios inject faults on purpose, so the client logs warnings;\n\
             they are expected, and go to {}.",
            log.path.display()
        );
    }
    let mut runs: Vec<Vec<Report>> = vec![Vec::new(); protocols.len()];
    for n in names {
        for (p, protocol) in protocols.iter().enumerate() {
            testkit::set_group_protocol(protocol);
            let what = if scenarios::RESILIENT_ONLY.contains(&n) {
                "resilient only"
            } else {
                "naive, then resilient"
            };
            let under = match *protocol {
                "consumer" => "group.protocol=consumer (KIP-848)",
                _ => "group.protocol=classic",
            };
            eprintln!("scenario {n}: running ({what}; {under})…");
            let started = Instant::now();
            let logged_before = log.map_or(0, |l| l.lines());
            let reports = scenarios::run_by_name(&broker, n).await.ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown scenario {n}; one of: {}",
                    scenarios::NAMES.join(", ")
                )
            })?;
            let logged = log.map_or(0, |l| l.lines()) - logged_before;
            eprintln!(
                "scenario {n}: done in {:.1} s{}",
                started.elapsed().as_secs_f64(),
                if logged > 0 {
                    format!(
                        " ({logged} log lines, expected from the injected faults, in the log file)"
                    )
                } else {
                    String::new()
                }
            );
            runs[p].extend(reports);
        }
    }
    let first: Vec<&Report> = runs[0].iter().collect();
    let table = match runs.get(1) {
        Some(kip848) if protocols[0] == "classic" => {
            Report::table_with_848(&first, &kip848.iter().collect::<Vec<_>>())
        }
        _ => Report::table(first),
    };
    if protocols == ["consumer"] {
        println!("Every run below used group.protocol=consumer (KIP-848).\n");
    }
    println!("{table}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand says what it does and every option has a help text.
    #[test]
    fn no_empty_help_texts() {
        fn walk(cmd: &clap::Command, path: &str, empty: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    empty.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    empty.push(format!("{p} (about)"));
                }
                walk(sub, &p, empty);
            }
        }
        let mut empty = Vec::new();
        walk(&super::Cli::command(), "kafka-lab", &mut empty);
        assert!(empty.is_empty(), "no help text: {empty:#?}");
    }
}
