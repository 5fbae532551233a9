//! `cargo xtask example <name>`: the seeds' systems, rebuilt on the
//! framework, each started by one command.
//!
//! Starts what the example needs (our broker, or `KAFKA_BOOTSTRAP`;
//! PostgreSQL from Debian's packages when it has a database), builds the
//! example in release mode, and runs its scenario (`<binary> demo`), which
//! prints a summary table. Extra arguments go to the example's binary.

use anyhow::{bail, Context};

use crate::broker::{self, Engine};
use crate::{postgres, redis, shell};

/// One seed's system.
#[derive(Debug)]
pub struct Example {
    /// The name on the command line (`cargo xtask example <name>`).
    pub name: &'static str,
    /// The cargo package under `examples/`.
    pub package: &'static str,
    /// The seed it rebuilds (`../shared/seeds/<seed>_*.txt`).
    pub seed: &'static str,
    /// One line on what its scenario shows.
    pub about: &'static str,
    /// Whether it needs PostgreSQL (started here, passed as `PG_URL`).
    pub postgres: bool,
    /// Whether it needs Redis (started here, passed as `REDIS_URL`).
    pub redis: bool,
}

/// Every example, in seed order.
pub const EXAMPLES: [Example; 5] = [
    Example {
        name: "order-payment",
        package: "order-payment",
        seed: "000",
        about: "orders → payments in PostgreSQL: two slow instances, naive duplicates vs 0 with the inbox",
        postgres: true,
        redis: false,
    },
    Example {
        name: "backpressure",
        package: "backpressure",
        seed: "001",
        about: "a slow downstream: queue depth, paused partitions, lag and throughput in five situations",
        postgres: false,
        redis: false,
    },
    Example {
        name: "avro-orders",
        package: "avro-orders",
        seed: "002",
        about: "Avro orders through a schema registry: retries, a DLQ, running average, DLQ replay",
        postgres: false,
        redis: false,
    },
    Example {
        name: "order-saga",
        package: "order-saga",
        seed: "003",
        about: "an order saga across three services: payment, stock, refund on shortage, poison, lag and scale-out",
        postgres: true,
        redis: false,
    },
    Example {
        name: "log-pipeline",
        package: "log-pipeline",
        seed: "004",
        about: "HTTP gateway → 12 partitions → 3×10 workers → PostgreSQL batches + Redis counts, Prometheus metrics",
        postgres: true,
        redis: true,
    },
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The example to run (see `cargo xtask example --list`).
    name: Option<String>,
    /// List the examples.
    #[arg(long)]
    list: bool,
    /// Arguments for the example's binary (default: `demo`).
    #[arg(last = true)]
    example_args: Vec<String>,
}

/// The examples, one line each (also printed by `cargo xtask lab`).
pub fn listing() -> String {
    let mut s = String::from("The seeds' systems (cargo xtask example <name>):\n");
    for e in &EXAMPLES {
        s.push_str(&format!("  {:<14} seed {}: {}\n", e.name, e.seed, e.about));
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(name) = args.name.filter(|_| !args.list) else {
        print!("{}", listing());
        return Ok(());
    };
    let Some(example) = EXAMPLES.iter().find(|e| e.name == name) else {
        bail!("no example named {name:?}\n{}", listing());
    };
    let mut env: Vec<(String, String)> = Vec::new();
    let mut broker_started = false;
    if std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
        let running = broker::up(Engine::Kafka, broker::KAFKA_VERSION)?;
        broker_started = running.started_now;
        env = running.env;
    }
    if example.postgres && std::env::var_os("PG_URL").is_none() {
        let pg = postgres::up()?;
        env.push(("PG_URL".into(), pg.url));
    }
    if example.redis && std::env::var_os("REDIS_URL").is_none() {
        let r = redis::up()?;
        env.push(("REDIS_URL".into(), r.url));
    }
    eprintln!(
        "\n==> building {} (release; a few minutes the first time)",
        example.package
    );
    shell::run(shell::cargo().args(["build", "--release", "--package", example.package]))
        .with_context(|| format!("building {} failed", example.package))?;
    let example_args = if args.example_args.is_empty() {
        vec!["demo".to_string()]
    } else {
        args.example_args
    };
    eprintln!("\n==> {} {}", example.package, example_args.join(" "));
    let result = shell::run(
        shell::cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                example.package,
                "--",
            ])
            .args(&example_args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
    .with_context(|| format!("example {} failed", example.name));
    if broker_started {
        eprintln!(
            "\nThe broker and PostgreSQL keep running: `source target/broker/env` to use them; \
             `cargo xtask broker down` and `cargo xtask postgres down` stop them."
        );
    }
    result
}
