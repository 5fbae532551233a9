//! `order-payment`: seed 000's order → payment system.
//!
//! ```text
//! order-payment demo                       # naive vs framework, summary table
//! order-payment order-service --orders 48  # publish orders to orders.created
//! order-payment payment-service [--naive]  # one payment instance (start two)
//! order-payment dlt-consumer               # log orders.created.DLT
//! ```
//!
//! Reads `KAFKA_BOOTSTRAP` (`cargo xtask broker up`, then
//! `source target/broker/env`) and `PG_URL` (`cargo xtask postgres up`).

use std::sync::Arc;

use clap::{Parser, Subcommand};
use order_payment::gateway::{Gateway, GatewayConfig};
use order_payment::order::OrderCreated;
use order_payment::{
    demo, dlt_consumer, naive, order_service, payment_service, payments, ORDERS_TOPIC, PARTITIONS,
    PAYMENT_CONSUMER,
};
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "Seed 000: orders → payments, naive duplicates vs the Processor with an inbox")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run naive then framework mode (2 payment instances each) and print the summary.
    Demo {
        /// Orders per mode (every 8th one, from the 6th, cannot be paid).
        #[arg(long, default_value_t = 48)]
        orders: u32,
    },
    /// Publish OrderCreated events.
    OrderService {
        #[arg(long, default_value_t = 48)]
        orders: u32,
        #[arg(long, default_value = ORDERS_TOPIC)]
        topic: String,
    },
    /// Run one payment instance until Ctrl-C.
    PaymentService {
        /// The seed's naive listener: auto-commit, inline, no inbox, no DLT.
        #[arg(long)]
        naive: bool,
        #[arg(long, default_value = ORDERS_TOPIC)]
        topic: String,
        #[arg(long, default_value = payment_service::GROUP)]
        group: String,
        /// Written to payments.paid_by.
        #[arg(long, default_value = "payment")]
        instance: String,
        /// Charges starting in the first second take this long (0: never slow).
        #[arg(long, default_value_t = 4000)]
        slow_ms: u64,
    },
    /// Log every dead letter of <topic>.DLT until Ctrl-C.
    DltConsumer {
        #[arg(long, default_value = ORDERS_TOPIC)]
        topic: String,
        #[arg(long, default_value = dlt_consumer::GROUP)]
        group: String,
    },
}

/// A watch that turns true on Ctrl-C or SIGTERM.
fn ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        resilience::shutdown::signal().await;
        let _ = tx.send(true);
    });
    rx
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").map_err(|_| {
        anyhow::anyhow!(
            "KAFKA_BOOTSTRAP is not set: run `cargo xtask broker up` and \
             `source target/broker/env`, or export KAFKA_BOOTSTRAP=host:port"
        )
    })?;

    match cli.command {
        Command::Demo { orders } => {
            let mut cfg = demo::DemoConfig::new(&bootstrap, order_payment::pg_url()?);
            cfg.orders = orders;
            let reports = demo::run(&cfg).await?;
            println!("\n{}", demo::summary(&reports));
        }
        Command::OrderService { orders, topic } => {
            order_payment::ensure_topics(&bootstrap, &[&topic], PARTITIONS).await?;
            let run = format!("run-{}", std::process::id());
            let batch: Vec<_> = (0..orders)
                .map(|n| OrderCreated::numbered(&run, n))
                .collect();
            let producer = order_payment::producer_config(&bootstrap, order_service::PRODUCER)?;
            order_service::publish(producer, &topic, &batch).await?;
        }
        Command::PaymentService {
            naive: is_naive,
            topic,
            group,
            instance,
            slow_ms,
        } => {
            let pg_url = order_payment::pg_url()?;
            let dlt_topic = resilience::dlt::dlt_topic(&topic);
            order_payment::ensure_topics(&bootstrap, &[&topic, &dlt_topic], PARTITIONS).await?;
            let gateway = Arc::new(Gateway::new(GatewayConfig {
                slow_latency: std::time::Duration::from_millis(slow_ms),
                ..GatewayConfig::default()
            }));
            if is_naive {
                let consumer = naive::consumer_config(&bootstrap, &group)?;
                let db = Arc::new(payments::connect(&pg_url).await?);
                let paid = naive::run(consumer, &topic, db, gateway, &instance, ctrl_c()).await?;
                tracing::info!(paid, "naive payment service stopped");
            } else {
                let consumer =
                    order_payment::consumer_config(&bootstrap, &group, PAYMENT_CONSUMER)?;
                let dlt = order_payment::producer_config(&bootstrap, order_service::PRODUCER)?;
                let cfg = payment_service::processor_config(consumer, &topic, dlt);
                let processor =
                    payment_service::processor(cfg, &pg_url, gateway, &instance).await?;
                let mut stop = ctrl_c();
                processor
                    .run(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await?;
            }
        }
        Command::DltConsumer { topic, group } => {
            let dlt_topic = resilience::dlt::dlt_topic(&topic);
            order_payment::ensure_topics(&bootstrap, &[&dlt_topic], PARTITIONS).await?;
            let consumer = dlt_consumer::consumer_config(&bootstrap, &group)?;
            dlt_consumer::run(consumer, &dlt_topic, |_| {}, ctrl_c()).await?;
        }
    }
    Ok(())
}
