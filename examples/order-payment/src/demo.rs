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
            partitions: crate::PARTITIONS,
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

/// One run's names: fresh per mode, so runs never see each other's records.
struct Names {
    run: String,
    topic: String,
    dlt_topic: String,
    group: String,
}

impl Names {
    fn new(mode: Mode) -> Names {
        let run = format!("demo-{}-{}", stamp(), mode.name());
        let topic = format!("{run}.{}", crate::ORDERS_TOPIC);
        Names {
            dlt_topic: resilience::dlt::dlt_topic(&topic),
            group: format!("{run}.{}", payment_service::GROUP),
            topic,
            run,
        }
    }
}

/// A service running on its own task.
type Service = JoinHandle<anyhow::Result<()>>;

/// One mode, from fresh topics to the counts.
///
/// # Errors
/// Kafka or PostgreSQL unreachable, or a topic that cannot be created.
pub async fn run_mode(cfg: &DemoConfig, mode: Mode) -> anyhow::Result<ModeReport> {
    let started = Instant::now();
    let names = Names::new(mode);
    crate::ensure_topics(
        &cfg.bootstrap,
        &[&names.topic, &names.dlt_topic],
        cfg.partitions,
    )
    .await?;
    let orders: Vec<OrderCreated> = (0..cfg.orders)
        .map(|n| OrderCreated::numbered(&names.run, n))
        .collect();
    let producer = crate::producer_config(&cfg.bootstrap, order_service::PRODUCER)?;
    order_service::publish(producer, &names.topic, &orders).await?;
    let ids: Vec<String> = orders.iter().map(|o| o.event_id.clone()).collect();
    let refused = order::failing_count(cfg.orders);

    // Two payment instances in one group, one gateway (slow for a moment).
    let db = Arc::new(payments::connect(&cfg.pg_url).await?);
    let gateway = Arc::new(Gateway::new(cfg.gateway));
    let (stop, stopped) = watch::channel(false);
    let mut services = Vec::new();
    for instance in ["payment-a", "payment-b"] {
        let (gateway, stopped) = (gateway.clone(), stopped.clone());
        services.push(match mode {
            Mode::Naive => start_naive(cfg, &names, &db, gateway, instance, stopped)?,
            Mode::Framework => start_processor(cfg, &names, gateway, instance, stopped).await?,
        });
    }
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let expect_dlt = match mode {
        Mode::Naive => 0,
        Mode::Framework => {
            services.push(start_dlt_consumer(cfg, &names, &dead_letters, stopped)?);
            refused
        }
    };

    // Until every order has an outcome, or the time is up.
    let deadline = Instant::now() + cfg.mode_timeout;
    let mut settled = false;
    while !settled && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        // PostgreSQL may be down for a while (a restart): count again
        // on the next turn, as the services wait too.
        let paid = match payments::count(&db, &ids).await {
            Ok(counts) => counts.paid.len(),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "counting payments failed; retrying");
                continue;
            }
        };
        let dead = dead_letters.lock().expect("dead letters").len();
        settled = paid + refused >= orders.len() && dead >= expect_dlt;
    }
    stop_all(stop, services).await;

    let counts = payments::count(&db, &ids).await?;
    let dead_letters = dead_letters.lock().expect("dead letters").clone();
    let accounted: HashSet<&str> = counts
        .paid
        .iter()
        .map(String::as_str)
        .chain(dead_letters.iter().filter_map(|d| d.event_id.as_deref()))
        .collect();
    Ok(ModeReport {
        mode,
        topic: names.topic,
        orders: orders.len(),
        refused,
        payment_rows: counts.rows,
        duplicated: counts.duplicated,
        missing: ids
            .iter()
            .filter(|id| !accounted.contains(id.as_str()))
            .cloned()
            .collect(),
        dead_letters,
        settled,
        elapsed: started.elapsed(),
    })
}

fn start_naive(
    cfg: &DemoConfig,
    names: &Names,
    db: &Arc<payments::Pool>,
    gateway: Arc<Gateway>,
    instance: &'static str,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Service> {
    let consumer = naive::consumer_config(&cfg.bootstrap, &names.group)?;
    let (topic, db) = (names.topic.clone(), db.clone());
    Ok(tokio::spawn(async move {
        naive::run(consumer, &topic, db, gateway, instance, stopped).await?;
        Ok(())
    }))
}

async fn start_processor(
    cfg: &DemoConfig,
    names: &Names,
    gateway: Arc<Gateway>,
    instance: &str,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<Service> {
    let consumer = crate::consumer_config(&cfg.bootstrap, &names.group, PAYMENT_CONSUMER)?;
    let dlt = crate::producer_config(&cfg.bootstrap, order_service::PRODUCER)?;
    let pcfg = payment_service::processor_config(consumer, &names.topic, dlt);
    let processor = payment_service::processor(pcfg, &cfg.pg_url, gateway, instance).await?;
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        processor.run(shutdown).await?;
        Ok(())
    }))
}

fn start_dlt_consumer(
    cfg: &DemoConfig,
    names: &Names,
    sink: &Arc<Mutex<Vec<DeadLetter>>>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Service> {
    let consumer = dlt_consumer::consumer_config(&cfg.bootstrap, &format!("{}.dlt", names.run))?;
    let (sink, dlt_topic) = (sink.clone(), names.dlt_topic.clone());
    Ok(tokio::spawn(async move {
        let keep = move |d| sink.lock().expect("dead letters").push(d);
        dlt_consumer::run(consumer, &dlt_topic, keep, stopped).await
    }))
}

/// Tell every service to stop, and wait for each (10 s at most).
async fn stop_all(stop: watch::Sender<bool>, services: Vec<Service>) {
    let _ = stop.send(true);
    for service in services {
        match tokio::time::timeout(Duration::from_secs(10), service).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "a service failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "a service panicked"),
            Err(_) => tracing::error!("a service did not stop within 10 s"),
        }
    }
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
