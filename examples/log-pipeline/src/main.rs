//! `log-pipeline`: seed 004's log-processing pipeline.
//!
//! ```text
//! log-pipeline demo                      # 1 and 3 instances, short load test, the table
//! log-pipeline load --secs 60            # the seed's load test (1,000 events, then 1,680/s for 60 s)
//! log-pipeline gateway --listen 0.0.0.0:8080
//! log-pipeline consumer --instances 1    # run one per process, three processes
//! ```
//!
//! Reads `KAFKA_BOOTSTRAP` (`cargo xtask broker up`, then `source
//! target/broker/env`), `PG_URL` (`cargo xtask postgres up`) and
//! `REDIS_URL` (`cargo xtask redis up`). Every command serves Prometheus
//! metrics on `--metrics` (`GET /metrics`).

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use log_pipeline::load::{self, LoadConfig};
use log_pipeline::pipeline::{self, Settings};

#[derive(Parser)]
#[command(about = "Seed 004: HTTP gateway -> Kafka -> 3x10 workers -> PostgreSQL + Redis")]
struct Cli {
    /// Where `GET /metrics` is served (Prometheus text format).
    #[arg(long, default_value = "127.0.0.1:9464", global = true)]
    metrics: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The load test, short: 1 then 3 consumer instances, and the table.
    Demo {
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 500)]
        rate: u64,
    },
    /// The seed's load test: 1,000 events, then `rate`/s for `secs` s, with 1 and 3 instances.
    Load {
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// The seed's 3-instance target.
        #[arg(long, default_value_t = 1680)]
        rate: u64,
        /// Events produced straight to Kafka once the group settled (capacity).
        #[arg(long, default_value_t = 20_000)]
        backlog: u64,
        /// Consumer instance counts, one phase each.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        instances: Vec<usize>,
    },
    /// The HTTP gateway until Ctrl-C.
    Gateway {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = log_pipeline::TOPIC)]
        topic: String,
    },
    /// Consumer instances (in this process) until Ctrl-C.
    Consumer {
        #[arg(long, default_value_t = 1)]
        instances: usize,
        #[arg(long, default_value = log_pipeline::TOPIC)]
        topic: String,
        #[arg(long, default_value = log_pipeline::GROUP)]
        group: String,
        #[arg(long, default_value = "log_events")]
        table: String,
    },
}

/// The seed's names, unprefixed (the gateway and consumer commands).
fn settings(topic: &str) -> anyhow::Result<Settings> {
    let env = log_pipeline::env;
    let mut s = Settings::for_run(
        &env("KAFKA_BOOTSTRAP")?,
        &env("PG_URL")?,
        &env("REDIS_URL")?,
        "x",
    );
    s.topic = topic.into();
    s.dlq = log_pipeline::DLQ.into();
    s.group = log_pipeline::GROUP.into();
    s.table = "log_events".into();
    s.redis_prefix = "logs".into();
    Ok(s)
}

async fn load_test(cfg: LoadConfig, instances: &[usize]) -> anyhow::Result<()> {
    let env = log_pipeline::env;
    let (bootstrap, pg, redis) = (env("KAFKA_BOOTSTRAP")?, env("PG_URL")?, env("REDIS_URL")?);
    let mut reports = Vec::new();
    for &n in instances {
        let run = format!("load-{}-{n}x", log_pipeline::now_micros() / 1000);
        let s = Settings::for_run(&bootstrap, &pg, &redis, &run);
        eprintln!("phase: {n} instance(s) on {} (table {})", s.topic, s.table);
        reports.push(load::phase(&s, n, &cfg).await?);
    }
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("\n{}", load::table(&reports, build));
    Ok(())
}

/// Ctrl-C or SIGTERM: the processors drain, commit and leave the group.
async fn ctrl_c() {
    resilience::shutdown::signal().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo { .. } | Command::Load { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();
    resilience::observe::prometheus::install(cli.metrics)?;
    log_pipeline::metrics::describe();
    eprintln!("metrics: http://{}/metrics", cli.metrics);

    match cli.command {
        Command::Demo { secs, rate } => {
            let cfg = LoadConfig {
                backlog: 5_000,
                burst: 1_000,
                rate,
                secs,
            };
            load_test(cfg, &[1, 3]).await?;
        }
        Command::Load {
            secs,
            rate,
            backlog,
            instances,
        } => {
            load_test(
                LoadConfig {
                    backlog,
                    burst: 1_000,
                    rate,
                    secs,
                },
                &instances,
            )
            .await?;
        }
        Command::Gateway { listen, topic } => {
            let s = settings(&topic)?;
            s.prepare().await?;
            let gw = pipeline::start_gateway(&s, listen).await?;
            ctrl_c().await;
            gw.stop().await?;
        }
        Command::Consumer {
            instances,
            topic,
            group,
            table,
        } => {
            let mut s = settings(&topic)?;
            s.group = group;
            s.table = table;
            s.prepare().await?;
            let consumers = pipeline::start_consumers(&s, instances).await?;
            ctrl_c().await;
            consumers.stop().await?;
        }
    }
    Ok(())
}
