//! `order-saga`: seed 003's choreography saga.
//!
//! ```text
//! order-saga demo                        # the four scenarios, summary table
//! order-saga order-service --http 127.0.0.1:3000
//! order-saga payment-service
//! order-saga inventory-service --restock prod_123=10 [--delay-ms 20]   # start 1..3
//! order-saga load --api 127.0.0.1:3000 --orders 300
//! ```
//!
//! Each service is its own process (`--prefix` names the topics:
//! `<prefix>.orders`, …; none: `orders`, `payments`, `inventory`). Reads
//! `KAFKA_BOOTSTRAP` (`cargo xtask broker up`, then `source
//! target/broker/env`) and `PG_URL` (`cargo xtask postgres up`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use order_saga::inventory_service::InventoryOptions;
use order_saga::order_service::OrderService;
use order_saga::{db, demo, system, ServiceConfig, Topics};
use tokio::sync::watch;

#[derive(Parser)]
#[command(about = "Seed 003: an order saga across order, payment and inventory services")]
struct Cli {
    /// Topic and group prefix (empty: the seed's names).
    #[arg(long, global = true, default_value = "")]
    prefix: String,
    /// Seconds a service waits for the broker at start before giving up.
    #[arg(long, global = true, default_value_t = 60)]
    startup_timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the four scenarios in-process and print the summary.
    Demo {
        /// Orders of the lag scenario.
        #[arg(long, default_value_t = 300)]
        lag_orders: usize,
    },
    /// The HTTP API and the order status processor, until Ctrl-C.
    OrderService {
        #[arg(long, default_value = "127.0.0.1:3000")]
        http: SocketAddr,
    },
    /// One payment instance, until Ctrl-C.
    PaymentService,
    /// One inventory instance, until Ctrl-C.
    InventoryService {
        #[arg(long, default_value = "main")]
        warehouse: String,
        /// Set stock first, e.g. `--restock prod_123=10` (repeatable).
        #[arg(long)]
        restock: Vec<String>,
        /// Sleep this long per record (the lag lab).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[arg(long, default_value = "inventory-1")]
        instance: String,
    },
    /// The load generator: post orders to the API.
    Load {
        #[arg(long, default_value = "127.0.0.1:3000")]
        api: SocketAddr,
        #[arg(long, default_value_t = 300)]
        orders: usize,
        #[arg(long, default_value_t = 10)]
        parallel: usize,
    },
}

/// A watch that turns true on Ctrl-C.
fn ctrl_c() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        resilience::shutdown::signal().await;
        let _ = tx.send(true);
    });
    rx
}

fn bootstrap() -> anyhow::Result<String> {
    std::env::var("KAFKA_BOOTSTRAP").map_err(|_| {
        anyhow::anyhow!(
            "KAFKA_BOOTSTRAP is not set: run `cargo xtask broker up` and \
             `source target/broker/env`, or export KAFKA_BOOTSTRAP=host:port"
        )
    })
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

    if let Command::Load {
        api,
        orders,
        parallel,
    } = cli.command
    {
        let started = std::time::Instant::now();
        let ids = demo::load_generator(api, orders, parallel).await?;
        println!(
            "posted {} orders in {:.1} s",
            ids.len(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let bootstrap = bootstrap()?;
    let pg_url = order_saga::pg_url()?;
    let mut cfg = ServiceConfig::new(&bootstrap, &pg_url, Topics::new(&cli.prefix));
    cfg.startup_timeout = Duration::from_secs(cli.startup_timeout);
    let stop = ctrl_c();

    match cli.command {
        Command::Demo { lag_orders } => {
            let mut demo_cfg = demo::DemoConfig::new(&bootstrap, &pg_url);
            demo_cfg.lag_orders = lag_orders;
            let reports = demo::run(&demo_cfg).await?;
            println!("\n{}", demo::summary(&reports));
        }
        Command::OrderService { http } => {
            ensure_topics(&cfg).await?;
            let service = OrderService::start(&cfg, http).await?;
            tracing::info!(api = %service.local_addr(), "order service listening");
            service.run(stop).await?;
        }
        Command::PaymentService => {
            ensure_topics(&cfg).await?;
            system::start_payment(&cfg, stop).await?.await??;
        }
        Command::InventoryService {
            warehouse,
            restock,
            delay_ms,
            concurrency,
            instance,
        } => {
            ensure_topics(&cfg).await?;
            let db = db::connect(&pg_url).await?;
            for item in &restock {
                let (product, n) = item
                    .split_once('=')
                    .and_then(|(p, n)| Some((p, n.parse().ok()?)))
                    .ok_or_else(|| anyhow::anyhow!("--restock {item}: expected product=count"))?;
                db::restock(&db, &warehouse, product, n).await?;
                tracing::info!(warehouse, product, available = n, "restocked");
            }
            let opts = InventoryOptions {
                warehouse,
                delay: Duration::from_millis(delay_ms),
                concurrency,
                instance,
            };
            system::start_inventory(&cfg, opts, stop).await?.await??;
        }
        Command::Load { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// Create the saga's topics if missing, waiting for the broker like the
/// services do (up to `--startup-timeout`).
async fn ensure_topics(cfg: &ServiceConfig) -> anyhow::Result<()> {
    cfg.connect_producer().await?; // waits for the broker, or names it in the error
    order_saga::ensure_topics(&cfg.bootstrap, &cfg.topics.all(), order_saga::PARTITIONS).await
}
