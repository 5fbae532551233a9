//! `cargo xtask`: the project's automation.
//!
//! Layout:
//! - [`broker`]: a real Apache Kafka broker (KRaft, from Maven Central jars) on demand.
//! - [`cluster`]: three KRaft nodes in racks r1..r3 from the same jars (follower fetching, node faults).
//! - [`certs`]: the test CA and the broker certificate for the SSL listeners.
//! - [`postgres`]: a throwaway PostgreSQL server for the idempotency-store tests.
//! - [`redis`]: a throwaway Redis server for the examples that aggregate in Redis.
//! - [`pure`]: `check-pure`, the proof that the library crates need no C toolchain.
//! - [`python`]: the venv with confluent-kafka's Avro serdes (schema-registry's compatibility test).
//! - [`publish`]: `cargo doc` and `cargo package` of the library crates, as publishing needs.
//! - [`test`]: `cargo xtask test`, the README's test command and what CI runs.
//! - [`lab`]: `cargo xtask lab`, the README's "main job".
//! - [`example`]: `cargo xtask example <name>`, the seeds' systems under `examples/`.

mod bench;
mod broker;
mod certs;
mod cluster;
mod example;
mod lab;
mod postgres;
mod publish;
mod pure;
mod python;
mod redis;
mod shell;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Project automation: broker harness, tests, lab, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start, stop or inspect the local broker.
    Broker {
        /// Which broker: `broker` (yours, in target/broker) or `broker-test`
        /// (the one `cargo xtask test` starts, in target/broker-test).
        #[arg(long, default_value = broker::USER_INSTANCE)]
        instance: String,
        #[command(subcommand)]
        action: broker::Action,
    },
    /// Start, stop, kill or inspect the three-node cluster (target/cluster).
    Cluster {
        #[command(subcommand)]
        action: cluster::Action,
    },
    /// Start, stop or inspect the local PostgreSQL (idempotency-store tests).
    Postgres {
        #[command(subcommand)]
        action: postgres::Action,
    },
    /// Start, stop or inspect the local Redis (the examples that aggregate in Redis).
    Redis {
        #[command(subcommand)]
        action: redis::Action,
    },
    /// Prove the library crates build without a C toolchain.
    CheckPure,
    /// fmt + clippy + check-pure + every test against a real broker (what CI runs).
    Test(test::Args),
    /// Start the broker and run the lab.
    Lab(lab::Args),
    /// Run one of the seeds' systems (examples/), or list them.
    Example(example::Args),
    /// Benchmarks side by side with librdkafka and the Java client.
    Bench(bench::Args),
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Broker { instance, action } => {
            broker::use_instance(&instance);
            broker::run(action)
        }
        Command::Cluster { action } => cluster::run(action),
        Command::Postgres { action } => postgres::run(action),
        Command::Redis { action } => redis::run(action),
        Command::CheckPure => pure::check_pure(),
        Command::Test(args) => test::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Example(args) => example::run(args),
        Command::Bench(args) => bench::run(args),
    }
}
