//! `cargo xtask lab`: start the broker (or use `KAFKA_BOOTSTRAP`) and run the lab.
//!
//! Today the lab is `kafka-lab check`: connect, negotiate versions, list
//! topics. The failure scenarios land here as they are built.

use anyhow::Context;

use crate::broker::{self, Engine};
use crate::shell;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop the broker afterwards (by default it keeps running for you to explore).
    #[arg(long)]
    down: bool,
    /// Arguments passed to `kafka-lab` (default: `check`).
    #[arg(last = true)]
    lab_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut started = false;
    if std::env::var_os("KAFKA_BOOTSTRAP").is_none() {
        let running = broker::up(Engine::Kafka, broker::KAFKA_VERSION)?;
        started = running.started_now;
        env = running.env;
    }
    let lab_args = if args.lab_args.is_empty() {
        vec!["check".to_string()]
    } else {
        args.lab_args
    };
    let result = shell::run(
        shell::cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "kafka-lab",
                "--",
            ])
            .args(&lab_args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
    )
    .context("kafka-lab failed");
    if args.down && started {
        broker::down(broker::KAFKA_VERSION)?;
    } else if started {
        eprintln!(
            "\nThe broker keeps running (`source target/broker/env` to use it); \
             stop it with `cargo xtask broker down`."
        );
    }
    result
}
