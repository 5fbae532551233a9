//! The seed's four scenarios against the running services, each on fresh
//! topics (`saga-<stamp>-<scenario>.orders`, …) and its own warehouse, and
//! the summary table. Orders go in through the HTTP API and their final
//! states come back through it; money comes from the payment ledger; dead
//! letters from `<run>.inventory.DLT`. Never from the services' counters.
//!
//! **Balance:** charged − refunded must equal the confirmed orders' total
//! plus what dead-lettered orders hold (charged, stock never reserved:
//! money an operator has to settle by replaying or refunding them).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kafka_wire::{Client, ClientConfig};
use resilience::dlt::replay::TopicReader;
use resilience::dlt::DeadRecord;

use crate::db::{self, status, Ledger, OrderRow};
use crate::event::POISON_PRODUCT;
use crate::http;
use crate::inventory_service::InventoryOptions;
use crate::lag::LagMonitor;
use crate::order_service::NewOrder;
use crate::system::System;
use crate::{inventory_service, ServiceConfig, Topics};

/// The seed's product.
pub const PRODUCT: &str = "prod_123";

/// The four scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    HappyPath,
    InsufficientStock,
    Poison,
    Lag,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::HappyPath,
        Scenario::InsufficientStock,
        Scenario::Poison,
        Scenario::Lag,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::HappyPath => "happy-path",
            Scenario::InsufficientStock => "insufficient-stock",
            Scenario::Poison => "poison",
            Scenario::Lag => "lag",
        }
    }
}

/// What to run against, and how big.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub bootstrap: String,
    pub pg_url: String,
    /// The longest a scenario may take to settle. Default 30 s.
    pub settle_timeout: Duration,
    /// Orders of the lag scenario. Default 300.
    pub lag_orders: usize,
    /// The slow inventory's time per record. Default 20 ms.
    pub lag_delay: Duration,
    /// Inventory instances after scaling out. Default 3.
    pub scale_to: usize,
}

impl DemoConfig {
    pub fn new(bootstrap: impl Into<String>, pg_url: impl Into<String>) -> DemoConfig {
        DemoConfig {
            bootstrap: bootstrap.into(),
            pg_url: pg_url.into(),
            settle_timeout: Duration::from_secs(30),
            lag_orders: 300,
            lag_delay: Duration::from_millis(20),
            scale_to: 3,
        }
    }
}

/// One lag sample.
#[derive(Debug, Clone, Copy)]
pub struct LagSample {
    pub at: Duration,
    pub lag: i64,
    pub instances: usize,
}

/// What the lag scenario measured.
#[derive(Debug, Clone, Default)]
pub struct LagReport {
    pub samples: Vec<LagSample>,
    pub peak: i64,
    /// When the inventory service went from 1 to `scale_to` instances.
    pub scaled_at: Option<Duration>,
    /// From scaling out to a lag of 0.
    pub drain_time: Option<Duration>,
}

/// What one scenario ended with.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub run: String,
    pub topics: Topics,
    /// Every order's final state, read through `GET /orders/{id}`.
    pub orders: Vec<OrderRow>,
    pub dead_letters: Vec<DeadRecord>,
    pub ledger: Ledger,
    pub confirmed_cents: i64,
    /// What dead-lettered orders were charged.
    pub held_cents: i64,
    /// Every order reached its end before the timeout.
    pub settled: bool,
    pub lag: Option<LagReport>,
    pub elapsed: Duration,
}

impl ScenarioReport {
    pub fn count(&self, status: &str) -> usize {
        self.orders.iter().filter(|o| o.status == status).count()
    }

    /// charged − refunded = confirmed total + held by dead letters.
    pub fn balance_ok(&self) -> bool {
        self.ledger.charged_cents - self.ledger.refunded_cents
            == self.confirmed_cents + self.held_cents
    }

    /// Order ids in the DLT (its records are keyed by order id).
    pub fn dead_order_ids(&self) -> Vec<String> {
        self.dead_letters
            .iter()
            .filter_map(DeadRecord::key_text)
            .collect()
    }
}

fn stamp() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms}-{}", std::process::id())
}

fn new_order(customer: &str, product: &str, quantity: i32, amount: f64) -> NewOrder {
    NewOrder {
        customer_id: customer.into(),
        product_id: product.into(),
        quantity,
        amount,
    }
}

/// The orders and stock of a scenario (the lag scenario's orders come from
/// its load generator).
fn plan(scenario: Scenario) -> (Vec<NewOrder>, i32) {
    match scenario {
        Scenario::HappyPath => (
            (0..8)
                .map(|i| new_order("cust_happy_path", PRODUCT, 2, 250.50 + f64::from(i)))
                .collect(),
            100,
        ),
        // 5 in stock: the seed's 10-piece order can never be served, and
        // only two of the four 2-piece orders can.
        Scenario::InsufficientStock => {
            let mut orders = vec![new_order("cust_large_quantity", PRODUCT, 10, 250.00)];
            orders
                .extend((0..4).map(|i| new_order("cust_small", PRODUCT, 2, 100.00 + f64::from(i))));
            (orders, 5)
        }
        Scenario::Poison => {
            let mut orders: Vec<NewOrder> = (0..3)
                .map(|i| new_order("cust_before", PRODUCT, 1, 50.00 + f64::from(i)))
                .collect();
            orders.push(new_order("cust_dlq_test", POISON_PRODUCT, 1, 99.00));
            orders
                .extend((0..3).map(|i| new_order("cust_after", PRODUCT, 1, 60.00 + f64::from(i))));
            (orders, 100)
        }
        Scenario::Lag => (Vec::new(), 100_000),
    }
}

/// Every scenario, in order.
///
/// # Errors
/// Kafka or PostgreSQL unreachable, or the API failing.
pub async fn run(cfg: &DemoConfig) -> anyhow::Result<Vec<ScenarioReport>> {
    let mut reports = Vec::new();
    for scenario in Scenario::ALL {
        reports.push(run_scenario(cfg, scenario).await?);
    }
    Ok(reports)
}

/// Is this order at its end? Confirmed or cancelled, or paid and dead-lettered.
fn at_end(order: &OrderRow, dead: &[String]) -> bool {
    order.status == status::CONFIRMED
        || order.status == status::CANCELLED
        || (order.status == status::PAID && dead.contains(&order.order.order_id))
}

/// One scenario, from fresh topics to the report.
///
/// # Errors
/// Kafka or PostgreSQL unreachable, or the API failing.
pub async fn run_scenario(cfg: &DemoConfig, scenario: Scenario) -> anyhow::Result<ScenarioReport> {
    let started = Instant::now();
    let run = format!("saga-{}-{}", stamp(), scenario.name());
    let topics = Topics::new(&run);
    let service = ServiceConfig::new(&cfg.bootstrap, &cfg.pg_url, topics.clone());
    let db = db::connect(&cfg.pg_url).await?;
    let (orders, stock) = plan(scenario);
    db::restock(&db, &run, PRODUCT, stock).await?;
    let lag_scenario = scenario == Scenario::Lag;
    let inventory = InventoryOptions {
        warehouse: run.clone(),
        delay: if lag_scenario {
            cfg.lag_delay
        } else {
            Duration::ZERO
        },
        concurrency: if lag_scenario { 1 } else { 4 },
        ..InventoryOptions::default()
    };
    let mut system = System::start(&service, inventory, 1).await?;

    let mut lag = None;
    let ids = if lag_scenario {
        let (ids, report) = lag_lab(cfg, &mut system).await?;
        lag = Some(report);
        ids
    } else {
        let mut ids = Vec::new();
        for (n, order) in orders.iter().enumerate() {
            let correlation = format!("{run}-{n}");
            ids.push(
                http::place_order(system.api, order, Some(&correlation))
                    .await?
                    .order
                    .order_id,
            );
        }
        ids
    };

    // Until every order is at its end, or the time is up.
    let deadline = Instant::now() + cfg.settle_timeout;
    let admin = admin(&cfg.bootstrap).await?;
    let poison = if lag_scenario {
        0
    } else {
        orders
            .iter()
            .filter(|o| o.product_id == POISON_PRODUCT)
            .count()
    };
    let (mut settled, mut dead_letters) = (false, Vec::new());
    while !settled && Instant::now() < deadline {
        let rows = db::orders(&db, &ids).await?;
        let ended = rows
            .values()
            .filter(|o| o.status == status::CONFIRMED || o.status == status::CANCELLED)
            .count();
        if ended + poison >= ids.len() {
            dead_letters = read_dlt(&admin, &cfg.bootstrap, &topics.inventory_dlt).await?;
            let dead: Vec<String> = dead_letters
                .iter()
                .filter_map(DeadRecord::key_text)
                .collect();
            settled = rows.len() == ids.len() && rows.values().all(|o| at_end(o, &dead));
        }
        if !settled {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut final_orders = Vec::new();
    for id in &ids {
        final_orders.push(
            http::get_order(system.api, id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("order {id} vanished"))?,
        );
    }
    system.stop().await;

    let dead: Vec<String> = dead_letters
        .iter()
        .filter_map(DeadRecord::key_text)
        .collect();
    let sum = |keep: &dyn Fn(&OrderRow) -> bool| {
        final_orders
            .iter()
            .filter(|o| keep(o))
            .map(|o| o.order.amount_cents)
            .sum()
    };
    Ok(ScenarioReport {
        scenario,
        ledger: db::ledger(&db, &ids).await?,
        confirmed_cents: sum(&|o| o.status == status::CONFIRMED),
        held_cents: sum(&|o| o.status == status::PAID && dead.contains(&o.order.order_id)),
        orders: final_orders,
        dead_letters,
        settled,
        lag,
        run,
        topics,
        elapsed: started.elapsed(),
    })
}

async fn admin(bootstrap: &str) -> anyhow::Result<Client> {
    Ok(Client::connect(
        ClientConfig::builder()
            .set("bootstrap.servers", bootstrap)?
            .build()?,
    )
    .await?)
}

/// Every record of a DLT so far.
///
/// # Errors
/// Kafka's.
pub async fn read_dlt(
    admin: &Client,
    bootstrap: &str,
    topic: &str,
) -> anyhow::Result<Vec<DeadRecord>> {
    let client = ClientConfig::builder().set("bootstrap.servers", bootstrap)?;
    let mut reader = TopicReader::open(client, admin, topic).await?;
    let mut out = Vec::new();
    while let Some(records) = reader.next().await? {
        out.extend(records.into_iter().map(|(p, r)| DeadRecord::parse(p, r)));
    }
    Ok(out)
}

/// The seed's consumer-lag lab: a load generator posts `lag_orders` orders
/// (10 at a time) while one slow inventory instance works; once the lag has
/// grown, `scale_to - 1` more instances join, and the lag is sampled every
/// 500 ms until it is 0.
async fn lag_lab(
    cfg: &DemoConfig,
    system: &mut System,
) -> anyhow::Result<(Vec<String>, LagReport)> {
    let started = Instant::now();
    let group = system.cfg.topics.group(inventory_service::SERVICE);
    let monitor = LagMonitor::connect(&cfg.bootstrap, &group, &system.cfg.topics.payments).await?;
    let load = tokio::spawn(load_generator(system.api, cfg.lag_orders, 10));
    let mut report = LagReport::default();
    let deadline = started + cfg.settle_timeout + Duration::from_secs(15);
    let mut ids = None;
    let mut load = Some(load);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let lag = monitor.lag().await?;
        let at = started.elapsed();
        report.samples.push(LagSample {
            at,
            lag,
            instances: system.inventory_instances(),
        });
        report.peak = report.peak.max(lag);
        tracing::info!(
            at_ms = at.as_millis() as u64,
            lag,
            instances = system.inventory_instances(),
            "inventory lag"
        );
        if let Some(l) = load.take_if(|l| l.is_finished()) {
            ids = Some(l.await??);
        }
        if report.scaled_at.is_none() && ids.is_some() && at >= Duration::from_secs(3) {
            for _ in 1..cfg.scale_to {
                system.add_inventory().await?;
            }
            report.scaled_at = Some(started.elapsed());
        }
        if let Some(scaled) = report.scaled_at {
            if lag == 0 && ids.is_some() {
                report.drain_time = Some(started.elapsed() - scaled);
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let ids = match ids {
        Some(ids) => ids,
        None => load.expect("the load generator").await??,
    };
    Ok((ids, report))
}

/// Post `orders` orders through the API, `parallel` at a time; their ids.
///
/// # Errors
/// The API refusing one.
pub async fn load_generator(
    api: std::net::SocketAddr,
    orders: usize,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..parallel.max(1) {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= orders {
                    return anyhow::Ok(ids);
                }
                let order = new_order(
                    &format!("cust_load_{}", n % 50),
                    PRODUCT,
                    1,
                    10.00 + (n % 7) as f64,
                );
                ids.push(http::place_order(api, &order, None).await?.order.order_id);
            }
        }));
    }
    let mut ids = Vec::new();
    for w in workers {
        ids.extend(w.await??);
    }
    Ok(ids)
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The summary table, then the lag samples.
pub fn summary(reports: &[ScenarioReport]) -> String {
    let mut s = String::from(
        "scenario           | orders | confirmed | cancelled | DLT | charged  | refunded | balance ok | time\n\
         -------------------+--------+-----------+-----------+-----+----------+----------+------------+------\n",
    );
    for r in reports {
        s.push_str(&format!(
            "{:<18} | {:>6} | {:>9} | {:>9} | {:>3} | {:>8} | {:>8} | {:>10} | {:>4.1}s\n",
            r.scenario.name(),
            r.orders.len(),
            r.count(status::CONFIRMED),
            r.count(status::CANCELLED),
            r.dead_letters.len(),
            money(r.ledger.charged_cents),
            money(r.ledger.refunded_cents),
            if r.balance_ok() { "yes" } else { "NO" },
            r.elapsed.as_secs_f64(),
        ));
    }
    s.push_str("\nbalance: charged - refunded = confirmed orders' total + what dead-lettered orders hold\n");
    for r in reports {
        if !r.settled {
            s.push_str(&format!(
                "{}: did not settle before the timeout; counts are as of then\n",
                r.scenario.name()
            ));
        }
        if r.ledger.charged_twice > 0 {
            s.push_str(&format!(
                "{}: {} orders charged twice\n",
                r.scenario.name(),
                r.ledger.charged_twice
            ));
        }
        if let Some(lag) = &r.lag {
            s.push_str(&format!(
                "\nlag of the inventory group on {} (sampled every 500 ms):\n",
                r.topics.payments
            ));
            s.push_str("  t (s) | instances | lag\n");
            for x in &lag.samples {
                s.push_str(&format!(
                    "  {:>5.1} | {:>9} | {:>4}\n",
                    x.at.as_secs_f64(),
                    x.instances,
                    x.lag
                ));
            }
            s.push_str(&format!(
                "  peak {}; scaled 1 -> {} at {}; drained {} after scaling\n",
                lag.peak,
                lag.samples.last().map_or(0, |x| x.instances),
                lag.scaled_at
                    .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                lag.drain_time
                    .map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
            ));
        }
    }
    s
}
