//! `cargo xtask lab`: start the broker (or use `KAFKA_BOOTSTRAP`) and run the lab.
//!
//! By default: `kafka-lab check` (connect, negotiate versions, list topics),
//! then `kafka-lab scenario all`: each classic failure run by a naive
//! consumer and by the runtime, under the classic group protocol and then
//! under KIP-848, with a table of counts.

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
    // Build first, with cargo's own progress: the first build takes minutes.
    eprintln!(
        "\n==> building kafka-lab (release; a few minutes the first time, seconds after that)"
    );
    let mut result =
        shell::run(shell::cargo().args(["build", "--release", "--package", "kafka-lab"]))
            .context("building kafka-lab failed");
    for lab_args in runs {
        if result.is_err() {
            break;
        }
        eprintln!("\n==> kafka-lab {}", lab_args.join(" "));
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
    }
    if result.is_ok() {
        eprintln!("\n{}", crate::example::listing());
    }
    if args.down && started {
        broker::down(broker::KAFKA_VERSION)?;
    } else if started {
        eprintln!(
            "\nThe broker keeps running. To use it from this shell: `source target/broker/env` \
             (it exports KAFKA_BOOTSTRAP and the rest), then e.g. \
             `cargo run -p kafka-lab -- topics list`. Stop it with `cargo xtask broker down`."
        );
    }
    result
}
