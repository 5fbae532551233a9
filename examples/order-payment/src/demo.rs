//! The whole scenario, naive then framework, and the summary table.
//!
//! Each mode gets its own topic (`demo-<stamp>-<mode>.orders.created`, 4
//! partitions) and its own group, publishes the same number of orders with
//! fresh event ids, and runs two payment instances in one group against
//! one gateway that is slower than `max.poll.interval.ms` for a moment.
//! The mode ends when every order that can be paid is paid (and, in the
//! framework mode, every one that cannot is in the DLT), or after
//! [`DemoConfig::mode_timeout`]. Everything is counted from PostgreSQL
//! and the DLT, never from the services' own counters.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use kafka_wire::{Client, ClientConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dlt_consumer::{self, DeadLetter};
use crate::gateway::{Gateway, GatewayConfig};
use crate::order::{self, OrderCreated};
use crate::{naive, order_service, payment_service, payments, PAYMENT_CONSUMER};

/// What to run against.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// `bootstrap.servers`.
    pub bootstrap: String,
    /// PostgreSQL, libpq style.
    pub pg_url: String,
    /// Orders per mode. Default 48 (6 of them cannot be paid).
    pub orders: u32,
    /// Partitions of each mode's topic. Default 4.
    pub partitions: i32,
    /// The gateway's latencies (default: 4 s during the first second).
    pub gateway: GatewayConfig,
    /// The longest a mode may take. Default 25 s.
    pub mode_timeout: Duration,
}

impl DemoConfig {
    pub fn new(bootstrap: impl Into<String>, pg_url: impl Into<String>) -> DemoConfig {
        DemoConfig {
            bootstrap: bootstrap.into(),
            pg_url: pg_url.into(),
            orders: 48,
            partitions: 4,
            gateway: GatewayConfig::default(),
            mode_timeout: Duration::from_secs(25),
        }
    }
}

/// Which payment service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Auto-commit, inline, no inbox ([`naive`]).
    Naive,
    /// The Processor with the inbox, retries and the DLT ([`payment_service`]).
    Framework,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Naive => "naive",
            Mode::Framework => "framework",
        }
    }
}

/// What one mode did, counted from the database and the DLT.
#[derive(Debug, Clone)]
pub struct ModeReport {
    pub mode: Mode,
    pub topic: String,
    pub orders: usize,
    /// Orders the gateway refuses (above 1,000.00).
    pub refused: usize,
    /// Rows in `payments` for this mode's event ids.
    pub payment_rows: i64,
    /// Event ids with more than one payment, with their row count.
    pub duplicated: Vec<(String, i64)>,
    /// Event ids with no payment and no dead letter.
    pub missing: Vec<String>,
    /// What the DLT consumer read.
    pub dead_letters: Vec<DeadLetter>,
    /// Every payable order paid (and every refused one dead-lettered)
    /// before the timeout.
    pub settled: bool,
    pub elapsed: Duration,
}

/// Both modes, naive first.
///
/// # Errors
/// Kafka or PostgreSQL unreachable, or a topic that cannot be created.
pub async fn run(cfg: &DemoConfig) -> anyhow::Result<Vec<ModeReport>> {
    Ok(vec![
        run_mode(cfg, Mode::Naive).await?,
        run_mode(cfg, Mode::Framework).await?,
    ])
}

fn stamp() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms}-{}", std::process::id())
}

/// One mode, from fresh topics to the counts.
///
/// # Errors
/// Kafka or PostgreSQL unreachable, or a topic that cannot be created.
pub async fn run_mode(cfg: &DemoConfig, mode: Mode) -> anyhow::Result<ModeReport> {
    let started = Instant::now();
    let run = format!("demo-{}-{}", stamp(), mode.name());
    let topic = format!("{run}.{}", crate::ORDERS_TOPIC);
    let dlt_topic = resilience::dlt::dlt_topic(&topic);
    let group = format!("{run}.{}", payment_service::GROUP);

    let admin = Client::connect(
        ClientConfig::builder()
            .set("bootstrap.servers", &cfg.bootstrap)?
            .build()?,
    )
    .await
    .with_context(|| format!("connecting to Kafka at {}", cfg.bootstrap))?;
    order_service::ensure_topic(&admin, &topic, cfg.partitions).await?;
    order_service::ensure_topic(&admin, &dlt_topic, cfg.partitions).await?;

    let orders: Vec<OrderCreated> = (0..cfg.orders)
        .map(|n| OrderCreated::numbered(&run, n))
        .collect();
    let producer = crate::producer_config(&cfg.bootstrap, order_service::PRODUCER)?;
    order_service::publish(producer, &topic, &orders).await?;
    let ids: Vec<String> = orders.iter().map(|o| o.event_id.clone()).collect();
    let refused = order::failing_count(cfg.orders);
    let payable = orders.len() - refused;

    let db = Arc::new(payments::connect(&cfg.pg_url).await?);
    let gateway = Arc::new(Gateway::new(cfg.gateway));
    let (stop, stopped) = watch::channel(false);
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let mut tasks: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
    for instance in ["payment-a", "payment-b"] {
        let (topic, gateway, stopped) = (topic.clone(), gateway.clone(), stopped.clone());
        tasks.push(match mode {
            Mode::Naive => {
                let consumer = naive::consumer_config(&cfg.bootstrap, &group)?;
                let db = db.clone();
                tokio::spawn(async move {
                    naive::run(consumer, &topic, db, gateway, instance, stopped).await?;
                    Ok(())
                })
            }
            Mode::Framework => {
                let consumer = crate::consumer_config(&cfg.bootstrap, &group, PAYMENT_CONSUMER)?;
                let dlt = crate::producer_config(&cfg.bootstrap, order_service::PRODUCER)?;
                let pcfg = payment_service::processor_config(consumer, &topic, dlt);
                let processor =
                    payment_service::processor(pcfg, &cfg.pg_url, gateway, instance).await?;
                tokio::spawn(async move {
                    let mut stopped = stopped;
                    let shutdown = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    processor.run(shutdown).await?;
                    Ok(())
                })
            }
        });
    }
    if mode == Mode::Framework {
        let consumer = dlt_consumer::consumer_config(&cfg.bootstrap, &format!("{run}.dlt"))?;
        let (sink, stopped, dlt_topic) = (dead_letters.clone(), stopped.clone(), dlt_topic.clone());
        tasks.push(tokio::spawn(async move {
            let keep = move |d| sink.lock().expect("dead letters").push(d);
            dlt_consumer::run(consumer, &dlt_topic, keep, stopped).await
        }));
    }

    // Until every order has an outcome, or the time is up.
    let deadline = Instant::now() + cfg.mode_timeout;
    let expect_dlt = if mode == Mode::Framework { refused } else { 0 };
    let mut settled = false;
    while Instant::now() < deadline {
        let paid = payments::count(&db, &ids).await?.paid.len();
        let dead = dead_letters.lock().expect("dead letters").len();
        if paid >= payable && dead >= expect_dlt {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "a service failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "a service panicked"),
            Err(_) => tracing::error!("a service did not stop within 10 s"),
        }
    }

    let counts = payments::count(&db, &ids).await?;
    let dead_letters = dead_letters.lock().expect("dead letters").clone();
    let accounted: HashSet<&str> = counts
        .paid
        .iter()
        .map(String::as_str)
        .chain(dead_letters.iter().filter_map(|d| d.event_id.as_deref()))
        .collect();
    let missing = ids
        .iter()
        .filter(|id| !accounted.contains(id.as_str()))
        .cloned()
        .collect();
    Ok(ModeReport {
        mode,
        topic,
        orders: orders.len(),
        refused,
        payment_rows: counts.rows,
        duplicated: counts.duplicated,
        missing,
        dead_letters,
        settled,
        elapsed: started.elapsed(),
    })
}

/// The summary table, and a line on each mode.
pub fn summary(reports: &[ModeReport]) -> String {
    let mut s = String::from(
        "mode      | orders | payments rows | duplicated event ids | missing | DLT | time\n\
         ----------+--------+---------------+----------------------+---------+-----+------\n",
    );
    for r in reports {
        s.push_str(&format!(
            "{:<9} | {:>6} | {:>13} | {:>20} | {:>7} | {:>3} | {:>4.1}s\n",
            r.mode.name(),
            r.orders,
            r.payment_rows,
            r.duplicated.len(),
            r.missing.len(),
            r.dead_letters.len(),
            r.elapsed.as_secs_f64(),
        ));
    }
    for r in reports {
        s.push_str(&format!("\n{} ({}):\n", r.mode.name(), r.topic));
        if let Some((id, n)) = r.duplicated.first() {
            s.push_str(&format!(
                "  {} event ids paid more than once, e.g. {id} ({n} payments)\n",
                r.duplicated.len()
            ));
        }
        match r.mode {
            Mode::Naive => s.push_str(&format!(
                "  {} refused payments were logged and skipped: no DLT, counted missing\n",
                r.refused
            )),
            Mode::Framework => s.push_str(&format!(
                "  {} refused payments went to the DLT after 4 attempts; {} of {} dead letters carry provenance headers\n",
                r.refused,
                r.dead_letters.iter().filter(|d| d.has_provenance()).count(),
                r.dead_letters.len()
            )),
        }
        if !r.settled {
            s.push_str("  did not settle before the timeout: counts are as of then\n");
        }
    }
    s
}
