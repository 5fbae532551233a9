//! `cargo xtask lab`: start the broker (or use `KAFKA_BOOTSTRAP`) and run the lab.
//!
//! By default: `kafka-lab check` (connect, negotiate versions, list topics),
//! then `kafka-lab scenario all`: each classic failure run by a naive
//! consumer and by the runtime, with a table of counts.

use anyhow::Context;

use crate::broker::{self, Engine};
use crate::shell;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop the broker afterwards (by default it keeps running for you to explore).
    #[arg(long)]
    down: bool,
    /// Arguments passed to `kafka-lab` (default: `check`, then `scenario all`).
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
    let runs: Vec<Vec<String>> = if args.lab_args.is_empty() {
        vec![
            vec!["check".to_string()],
            vec!["scenario".to_string(), "all".to_string()],
        ]
    } else {
        vec![args.lab_args]
    };
    let mut result = Ok(());
    for lab_args in runs {
        result = shell::run(
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
        .with_context(|| format!("kafka-lab {} failed", lab_args.join(" ")));
        if result.is_err() {
            break;
        }
    }
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
