//! The seed's load test, measured from PostgreSQL: every row holds the
//! gateway's accept time (`accepted_us`) and its insert time
//! (`inserted_us`, PostgreSQL's `clock_timestamp()`), so end-to-end latency
//! is a `percentile_cont` over the rows; both clocks are this machine's.
//!
//! One phase per consumer-instance count, each on its own topic, group
//! and table:
//! 1. **backlog** (capacity): once the group has settled (every instance
//!    holds partitions), `backlog` events are produced straight to the
//!    topic as fast as the producer goes; rows over the time from the
//!    first to the last insert is the drain throughput. The producer's
//!    own rate is printed beside it: when it is lower, it was the limit;
//! 2. **burst**: the seed's 1,000 events, one `POST /logs` each, 32 at once;
//! 3. **sustained**: `rate` events/s for `secs` seconds (`POST
//!    /logs/batch` of 20, on a ticker).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;

use crate::event::LogEventIn;
use crate::pipeline::{self, Settings};

/// An HTTP client for the gateway.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// 24 services: keyed by service, they spread over the 12 partitions
/// (8 left some partitions empty and one instance with most of the work).
const SERVICES: &[&str] = &[
    "checkout",
    "payments",
    "search",
    "catalog",
    "auth",
    "shipping",
    "cart",
    "reviews",
    "inventory",
    "pricing",
    "orders",
    "users",
    "sessions",
    "email",
    "sms",
    "push",
    "billing",
    "invoices",
    "refunds",
    "fraud",
    "ads",
    "recommendations",
    "media",
    "gateway",
];
const LEVELS: &[&str] = &[
    "INFO", "INFO", "INFO", "DEBUG", "WARN", "INFO", "ERROR", "INFO",
];
/// Events per `POST /logs/batch` in the sustained phase.
const PER_REQUEST: usize = 20;

pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The `n`-th generated event.
pub fn event(n: u64) -> LogEventIn {
    LogEventIn {
        service: SERVICES[(n % SERVICES.len() as u64) as usize].into(),
        level: LEVELS[(n / 3 % LEVELS.len() as u64) as usize].into(),
        message: format!("request {n} handled"),
        timestamp_ms: None,
        id: None,
    }
}

/// POST `body` to `path`; the ids the gateway stored.
///
/// # Errors
/// Not a 2xx, or the connection failed.
pub async fn post(
    http: &Http,
    gateway: SocketAddr,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<Vec<String>> {
    let req = hyper::Request::post(format!("http://{gateway}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = http.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status.is_success(),
        "{path}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(String::from))
        .collect())
}

/// `n` events from `first`, one `POST /logs` each, `parallel` at once.
pub async fn singles(
    http: &Http,
    gw: SocketAddr,
    first: u64,
    n: u64,
    parallel: usize,
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(n as usize);
    let mut set = JoinSet::new();
    for i in first..first + n {
        if set.len() >= parallel {
            ids.extend(set.join_next().await.expect("not empty")??);
        }
        let (http, body) = (http.clone(), serde_json::to_vec(&event(i))?);
        set.spawn(async move { post(&http, gw, "/logs", body).await });
    }
    while let Some(r) = set.join_next().await {
        ids.extend(r??);
    }
    Ok(ids)
}

/// `rate` events/s from `first` for `secs`, in batch requests on a ticker.
pub async fn sustained(
    http: &Http,
    gw: SocketAddr,
    first: u64,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Vec<String>> {
    let requests = rate * secs / PER_REQUEST as u64;
    let period = Duration::from_secs_f64(PER_REQUEST as f64 / rate.max(1) as f64);
    let mut tick = tokio::time::interval(period);
    let mut set = JoinSet::new();
    let mut ids = Vec::new();
    for r in 0..requests {
        tick.tick().await;
        let start = first + r * PER_REQUEST as u64;
        let batch: Vec<_> = (start..start + PER_REQUEST as u64).map(event).collect();
        let (http, body) = (http.clone(), serde_json::to_vec(&batch)?);
        set.spawn(async move { post(&http, gw, "/logs/batch", body).await });
        while let Some(r) = set.try_join_next() {
            ids.extend(r??);
        }
    }
    while let Some(r) = set.join_next().await {
        ids.extend(r??);
    }
    Ok(ids)
}

/// `n` events straight to the topic (not through the gateway), every
/// acknowledgement awaited; their ids.
///
/// # Errors
/// Kafka unreachable or refusing.
pub async fn produce_backlog(s: &Settings, n: u64) -> anyhow::Result<Vec<String>> {
    let producer =
        kafka_wire::Producer::connect(crate::producer_config(&s.bootstrap, crate::PRODUCER)?)
            .await?;
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        let e = crate::event::LogEvent::accept(event(3_000_000 + i), crate::now_micros())
            .map_err(|e| anyhow::anyhow!(e))?;
        producer.send(crate::gateway::record(&s.topic, &e)).await?;
        ids.push(e.id);
    }
    producer.flush().await?; // every record acknowledged, or the ones that failed
    producer.close().await;
    Ok(ids)
}

/// Latency and throughput of the rows accepted in `[from_us, to_us)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub rows: i64,
    /// End-to-end (accept → insert) p50, p95, p99, in ms.
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// Rows over first-to-last insert, per second.
    pub stored_per_sec: f64,
}

/// Measure the rows of `table` accepted in `[from_us, to_us)`.
///
/// # Errors
/// PostgreSQL unreachable.
pub async fn window(pg_url: &str, table: &str, from_us: i64, to_us: i64) -> anyhow::Result<Window> {
    let db = crate::store::connect(pg_url).await?;
    let sql = format!(
        "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]::float8[]) WITHIN GROUP (ORDER BY (inserted_us - accepted_us)::float8),
                coalesce(max(inserted_us) - min(inserted_us), 0)
         FROM {table} WHERE accepted_us >= $1 AND accepted_us < $2"
    );
    let row = db.query_one(&sql, &[&from_us, &to_us]).await?;
    let rows: i64 = row.get(0);
    let p: Option<Vec<f64>> = row.get(1);
    let p = p.unwrap_or_else(|| vec![0.0; 3]);
    let span_us: i64 = row.get(2);
    Ok(Window {
        rows,
        p50: p[0] / 1e3,
        p95: p[1] / 1e3,
        p99: p[2] / 1e3,
        stored_per_sec: if span_us > 0 {
            rows as f64 * 1e6 / span_us as f64
        } else {
            0.0
        },
    })
}

/// Rows in `table`.
pub async fn count(pg_url: &str, table: &str) -> anyhow::Result<i64> {
    let db = crate::store::connect(pg_url).await?;
    Ok(db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

/// Wait until `table` holds `n` rows (or `deadline` passed); the count.
pub async fn wait_rows(
    pg_url: &str,
    table: &str,
    n: i64,
    deadline: Duration,
) -> anyhow::Result<i64> {
    let until = Instant::now() + deadline;
    loop {
        let have = count(pg_url, table).await.unwrap_or(0);
        if have >= n || Instant::now() > until {
            return Ok(have);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub instances: usize,
    pub backlog: Window,
    /// Backlog events over the time to produce them (acknowledged).
    pub produced_per_sec: f64,
    pub burst: Window,
    pub burst_accept_per_sec: f64,
    pub sustained: Window,
    pub offered_per_sec: f64,
    pub accepted: usize,
    pub stored: i64,
    pub dead_lettered: u64,
}

/// The load test's knobs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub backlog: u64,
    pub burst: u64,
    pub rate: u64,
    pub secs: u64,
}

/// One phase with `instances` consumers (see the module doc).
///
/// # Errors
/// Kafka, PostgreSQL, Redis or the gateway failing.
pub async fn phase(s: &Settings, instances: usize, cfg: &LoadConfig) -> anyhow::Result<Report> {
    s.prepare().await?;
    let gw = pipeline::start_gateway(s, "127.0.0.1:0".parse()?).await?;
    let http = http();
    let consumers = pipeline::start_consumers(s, instances).await?;
    anyhow::ensure!(
        consumers
            .wait_assigned(crate::PARTITIONS as usize, Duration::from_secs(60))
            .await,
        "{instances} instance(s) did not share the partitions within 60 s"
    );
    // Capacity: a backlog produced straight to Kafka as fast as the
    // producer goes, while the settled group consumes it.
    let t0 = crate::now_micros();
    let mut accepted = produce_backlog(s, cfg.backlog).await?;
    let t1 = crate::now_micros();
    let backlog_n = accepted.len() as i64;
    wait_rows(&s.pg_url, &s.table, backlog_n, Duration::from_secs(120)).await?;
    let started = Instant::now();
    accepted.extend(singles(&http, gw.addr, 1_000_000, cfg.burst, 32).await?);
    let burst_accept_per_sec = cfg.burst as f64 / started.elapsed().as_secs_f64();
    let t2 = crate::now_micros();
    let started = Instant::now();
    accepted.extend(sustained(&http, gw.addr, 2_000_000, cfg.rate, cfg.secs).await?);
    let offered = (accepted.len() as i64 - backlog_n - cfg.burst as i64) as f64
        / started.elapsed().as_secs_f64();
    let t3 = crate::now_micros();
    let stored = wait_rows(
        &s.pg_url,
        &s.table,
        accepted.len() as i64,
        Duration::from_secs(120),
    )
    .await?;
    let report = Report {
        instances,
        backlog: window(&s.pg_url, &s.table, t0, t1).await?,
        produced_per_sec: backlog_n as f64 * 1e6 / (t1 - t0).max(1) as f64,
        burst: window(&s.pg_url, &s.table, t1, t2).await?,
        burst_accept_per_sec,
        sustained: window(&s.pg_url, &s.table, t2, t3).await?,
        offered_per_sec: offered,
        accepted: accepted.len(),
        stored,
        dead_lettered: consumers.dead_lettered(),
    };
    consumers.stop().await?;
    gw.stop().await?;
    Ok(report)
}

/// The table: ours beside the seed's targets.
pub fn table(reports: &[Report], build: &str) -> String {
    let mut s = format!(
        "log-pipeline load test ({build} build, this machine; end-to-end = gateway accept -> row in PostgreSQL)\n\
         {:<22} {:>12} {:>11} {:>22} {:>10} {:>10} {:>22} {:>15} {:>4}\n",
        "", "produced/s", "drained/s", "burst e2e p50/95/99 ms", "offered/s", "stored/s", "sust. e2e p50/95/99 ms", "stored", "dlq"
    );
    for r in reports {
        s.push_str(&format!(
            "{:<22} {:>12.0} {:>11.0} {:>22} {:>10.0} {:>10.0} {:>22} {:>15} {:>4}\n",
            format!("ours, {} instance(s)", r.instances),
            r.produced_per_sec,
            r.backlog.stored_per_sec,
            format!("{:.0}/{:.0}/{:.0}", r.burst.p50, r.burst.p95, r.burst.p99),
            r.offered_per_sec,
            r.sustained.stored_per_sec,
            format!(
                "{:.0}/{:.0}/{:.0}",
                r.sustained.p50, r.sustained.p95, r.sustained.p99
            ),
            format!("{}/{}", r.stored, r.accepted),
            r.dead_lettered,
        ));
    }
    s.push_str(&format!(
        "{:<22} {:>12} {:>11} {:>22} {:>10} {:>10} {:>22}\n",
        "seed, 1 instance", "", "~560", "<50/<150/<500", "", "", "<50/<150/<500"
    ));
    s.push_str(&format!(
        "{:<22} {:>12} {:>11} {:>22} {:>10} {:>10} {:>22}\n",
        "seed, 3 instances", "", "~1,680", "<50/<150/<500", "", "~1,680", "<50/<150/<500"
    ));
    s
}
