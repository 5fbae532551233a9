//! Shared set-up for the runtime's real-broker tests: topics filled with
//! numbered records, group consumers, a recording handler with injectable
//! failures and delays, and a handle on a running processor.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, ConsumerError, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{
    Client, ClientConfig, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use resilience::processor::{BatchHandler, HandlerFuture};
use resilience::{Handler, HandlerError, Processor, Stats};

/// Decides a record's fate: (record number, attempt) → failure to return.
pub type FailFn = Arc<dyn Fn(u32, u32) -> Option<HandlerError> + Send + Sync>;

/// Records what the handler applied, with injectable failures and delays.
pub struct Sink {
    /// (partition, record number) in the order they were applied.
    pub applied: Mutex<Vec<(i32, u32)>>,
    pub attempts: Mutex<HashMap<u32, u32>>,
    pub fail: FailFn,
    pub delay: Duration,
    /// This record never finishes (a hung call).
    pub hang: Option<u32>,
    /// (record number, attempt) → how long the call takes before applying.
    pub stall: Arc<dyn Fn(u32, u32) -> Duration + Send + Sync>,
    pub running: AtomicUsize,
    pub peak_running: AtomicUsize,
    pub batch_sizes: Mutex<Vec<usize>>,
}

impl Default for Sink {
    fn default() -> Self {
        Self {
            applied: Mutex::default(),
            attempts: Mutex::default(),
            fail: Arc::new(|_, _| None),
            delay: Duration::ZERO,
            hang: None,
            stall: Arc::new(|_, _| Duration::ZERO),
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
            batch_sizes: Mutex::default(),
        }
    }
}

pub fn number(r: &Record) -> u32 {
    std::str::from_utf8(r.value.as_ref().expect("value"))
        .expect("utf8")
        .parse()
        .expect("a number")
}

impl Sink {
    pub fn with_failures(
        fail: impl Fn(u32, u32) -> Option<HandlerError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            fail: Arc::new(fail),
            ..Self::default()
        }
    }

    async fn apply(&self, tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        let n = number(r);
        let attempt = {
            let mut a = self.attempts.lock().unwrap();
            let e = a.entry(n).or_insert(0);
            *e += 1;
            *e
        };
        if let Some(e) = (self.fail)(n, attempt) {
            return Err(e);
        }
        if self.hang == Some(n) {
            std::future::pending::<()>().await;
        }
        let stall = (self.stall)(n, attempt);
        if !stall.is_zero() {
            tokio::time::sleep(stall).await;
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_running.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.applied.lock().unwrap().push((tp.partition, n));
        Ok(())
    }

    pub fn applied_numbers(&self) -> Vec<u32> {
        self.applied
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| *n)
            .collect()
    }

    /// (distinct records applied, side effects applied more than once).
    pub fn distinct_and_duplicates(&self) -> (BTreeSet<u32>, usize) {
        let all = self.applied_numbers();
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        let dups = all.len() - distinct.len();
        (distinct, dups)
    }
}

pub struct SinkHandler(pub Arc<Sink>);

impl Handler for SinkHandler {
    fn handle<'a>(&'a self, tp: &'a TopicPartition, r: &'a Record) -> HandlerFuture<'a> {
        Box::pin(self.0.apply(tp, r))
    }
}

impl BatchHandler for SinkHandler {
    fn handle_batch<'a>(&'a self, tp: &'a TopicPartition, rs: &'a [Record]) -> HandlerFuture<'a> {
        Box::pin(async move {
            self.0.batch_sizes.lock().unwrap().push(rs.len());
            for r in rs {
                self.0.apply(tp, r).await?;
            }
            Ok(())
        })
    }
}

pub async fn admin(b: &testkit::BrokerEnv) -> Client {
    Client::connect(
        ClientConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap()
}

pub fn producer_config(b: &testkit::BrokerEnv) -> ProducerConfig {
    ProducerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .build()
        .unwrap()
}

/// A new topic of `partitions` partitions holding values "0".."n-1", keyed
/// `key(i)` (default "k<i>").
pub async fn topic_with_records(
    b: &testkit::BrokerEnv,
    prefix: &str,
    partitions: i32,
    n: u32,
) -> (Client, String) {
    topic_with_keyed_records(b, prefix, partitions, n, |i| format!("k{i}")).await
}

pub async fn topic_with_keyed_records(
    b: &testkit::BrokerEnv,
    prefix: &str,
    partitions: i32,
    n: u32,
    key: impl Fn(u32) -> String,
) -> (Client, String) {
    let admin = admin(b).await;
    let topic = testkit::unique_name(prefix);
    admin
        .create_topic(NewTopic::new(&topic, partitions))
        .await
        .unwrap();
    produce_numbers(&admin, b, &topic, 0..n, key).await;
    (admin, topic)
}

pub async fn produce_numbers(
    admin: &Client,
    b: &testkit::BrokerEnv,
    topic: &str,
    range: std::ops::Range<u32>,
    key: impl Fn(u32) -> String,
) {
    let p = Producer::with_client(admin.clone(), producer_config(b));
    for i in range {
        p.send(ProducerRecord::new(topic).key(key(i)).value(i.to_string()))
            .await
            .unwrap();
    }
    p.flush().await;
}

/// A group member reading from the earliest offset, with a short session.
pub fn group_consumer(b: &testkit::BrokerEnv, group: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .group_id(group)
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .unwrap()
        .set("heartbeat.interval.ms", "300")
        .unwrap()
        .build()
        .unwrap()
}

/// A processor running on its own task.
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), ConsumerError>>,
    pub stats: Arc<Stats>,
}

pub fn start(processor: Processor) -> Running {
    let stats = processor.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, join, stats }
}

impl Running {
    /// Graceful shutdown: drain, commit, leave.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.join.await.unwrap().unwrap();
    }

    /// A crash: the task stops dead, nothing more is committed.
    pub async fn crash(self) {
        self.join.abort();
        let _ = self.join.await;
    }

    /// Wait until `n` records reached an end (or `timeout`).
    pub async fn wait_finished(&self, n: u64, timeout: Duration) -> u64 {
        let end = Instant::now() + timeout;
        loop {
            let done = self.stats.finished();
            if done >= n || Instant::now() > end {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Wait until `cond` holds (or `timeout`); returns whether it did.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Every record of `topic` (read_uncommitted unless `committed_only`), up to
/// `want` records or `timeout`.
pub async fn read_all(
    b: &testkit::BrokerEnv,
    topic: &str,
    partitions: i32,
    want: usize,
    committed_only: bool,
    timeout: Duration,
) -> Vec<Record> {
    let mut cfg = ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .set("auto.offset.reset", "earliest")
        .unwrap();
    if committed_only {
        cfg = cfg.set("isolation.level", "read_committed").unwrap();
    }
    let mut c = Consumer::connect(cfg.build().unwrap()).await.unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(&tps);
    let mut out = Vec::new();
    let end = Instant::now() + timeout;
    while out.len() < want && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            out.extend(batch.records);
        }
    }
    // A little longer: anything beyond `want` is a duplicate to report.
    for batch in c.poll(Duration::from_millis(300)).await.unwrap() {
        out.extend(batch.records);
    }
    out
}

/// Committed offsets of `group` for `topic` against the log ends: the
/// partitions whose committed offset is not the end.
pub async fn uncommitted_partitions(
    admin: &Client,
    consumer: ConsumerConfig,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, (Option<i64>, i64)> {
    let ends = admin.list_offsets(topic, OffsetSpec::Latest).await.unwrap();
    let checker = Consumer::connect(consumer).await.unwrap();
    let parts: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let committed = checker.committed(&parts).await.unwrap();
    ends.into_iter()
        .filter_map(|(p, end)| {
            let c = committed.get(&TopicPartition::new(topic, p)).copied();
            (c != Some(end)).then_some((p, (c, end)))
        })
        .collect()
}
