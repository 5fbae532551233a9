//! What every real-broker test of the runtime shares (the scenarios here,
//! `resilience`'s own integration tests, the PostgreSQL tests): group
//! consumers (`testkit`'s settings on consumer-core's builder), a running
//! processor, and a [`Sink`] that records side effects with injectable
//! failures and delays. Clients, topics, producing and `eventually` are
//! `testkit`'s, shared with the lower crates' tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::config::ConsumerConfigBuilder;
use consumer_core::{Consumer, ConsumerConfig, ConsumerError, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{Client, OffsetSpec, Producer, ProducerConfig, ProducerRecord};
use resilience::observe::Snapshot;
use resilience::{BatchHandler, Handler, HandlerError, Processor, Stats};

/// The API key of the group heartbeat under the protocol the suite runs:
/// Heartbeat (12), or ConsumerGroupHeartbeat (68) under KIP-848
/// ([`testkit::kip848`]).
pub fn heartbeat_api() -> i16 {
    if testkit::kip848() {
        68
    } else {
        12
    }
}

/// A group member with [`testkit::consumer_props`] (earliest, a short
/// session under classic), plus `props` (Kafka property names;
/// classic-only ones dropped under KIP-848).
pub fn group_consumer_with(
    b: &testkit::BrokerEnv,
    group: &str,
    props: &[(&str, &str)],
) -> ConsumerConfig {
    consumer_builder(b, Some(group), props)
        .build()
        .expect("config")
}

/// A consumer builder with [`testkit::consumer_props`] and `extra`.
pub fn consumer_builder(
    b: &testkit::BrokerEnv,
    group: Option<&str>,
    extra: &[(&str, &str)],
) -> ConsumerConfigBuilder {
    testkit::consumer_props(b, group, extra)
        .into_iter()
        .fold(ConsumerConfig::builder(), |c, (k, v)| {
            c.set(k, &v).expect("a valid consumer property")
        })
}

pub fn group_consumer(b: &testkit::BrokerEnv, group: &str) -> ConsumerConfig {
    group_consumer_with(b, group, &[])
}

/// A processor running on its own task.
#[derive(Debug)]
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), ConsumerError>>,
    pub stats: Arc<Stats>,
    /// Its live state ([`Processor::snapshots`]).
    pub snapshots: tokio::sync::watch::Receiver<Snapshot>,
}

pub fn start(processor: Processor) -> Running {
    let stats = processor.stats();
    let snapshots = processor.snapshots();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    Running {
        stop,
        join,
        stats,
        snapshots,
    }
}

impl Running {
    /// Graceful shutdown: drain, commit, leave.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.join
            .await
            .expect("processor task")
            .expect("processor run");
    }

    /// Whether `run` is still going (it did not return, with or without error).
    pub fn is_running(&self) -> bool {
        !self.join.is_finished()
    }

    /// A crash: the task stops dead, nothing more is committed.
    pub async fn crash(self) {
        self.join.abort();
        let _ = self.join.await;
    }

    /// Wait until `n` records reached an end (or `timeout`); returns how many did.
    pub async fn wait_finished(&self, n: u64, timeout: Duration) -> u64 {
        testkit::eventually(timeout, || self.stats.finished() >= n).await;
        self.stats.finished()
    }
}

/// Every record of `topic` (read_committed if `committed_only`), until
/// `want` arrived or `timeout`, and a little longer to catch extras.
pub async fn read_all(
    b: &testkit::BrokerEnv,
    topic: &str,
    partitions: i32,
    want: usize,
    committed_only: bool,
    timeout: Duration,
) -> Vec<Record> {
    let isolation = if committed_only {
        "read_committed"
    } else {
        "read_uncommitted"
    };
    let cfg = consumer_builder(b, None, &[("isolation.level", isolation)]);
    let mut c = Consumer::connect(cfg.build().expect("config"))
        .await
        .expect("connect");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(&tps);
    let mut out = Vec::new();
    let end = Instant::now() + timeout;
    while out.len() < want && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.expect("poll") {
            out.extend(batch.records);
        }
    }
    for batch in c.poll(Duration::from_millis(300)).await.expect("poll") {
        out.extend(batch.records);
    }
    out
}

/// Where `group` stands on `topic`, read from outside the group (one
/// client and one group-less consumer, kept): each partition's committed
/// offset and log end. For a lag line every second, and for "committed
/// to the end" at the end of a run.
#[derive(Debug)]
pub struct GroupLag {
    admin: Client,
    checker: Consumer,
    group: String,
    topic: String,
}

/// One partition in a [`GroupLag::read`]: offsets, and the lag in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset, `None` before its first commit.
    pub committed: Option<i64>,
    /// The high watermark.
    pub end: i64,
}

impl PartitionLag {
    /// `end - committed` in records (the whole log before a first commit).
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(0)).max(0)
    }
}

impl GroupLag {
    /// # Panics
    /// When the broker does not answer.
    pub async fn connect(b: &testkit::BrokerEnv, group: &str, topic: &str) -> GroupLag {
        GroupLag {
            admin: testkit::client(b).await,
            checker: Consumer::connect(group_consumer(b, group))
                .await
                .expect("connect"),
            group: group.to_string(),
            topic: topic.to_string(),
        }
    }

    /// Every partition of the topic, by partition.
    ///
    /// # Errors
    /// When the broker does not answer ListOffsets or OffsetFetch.
    pub async fn read(&self) -> Result<Vec<PartitionLag>, ConsumerError> {
        let ends = self
            .admin
            .list_offsets(&self.topic, OffsetSpec::Latest)
            .await?;
        let tps: Vec<TopicPartition> = ends
            .iter()
            .map(|(p, _)| TopicPartition::new(&self.topic, *p))
            .collect();
        let committed = self.checker.committed(&tps).await?;
        let mut out: Vec<PartitionLag> = ends
            .into_iter()
            .map(|(partition, end)| PartitionLag {
                partition,
                committed: committed
                    .get(&TopicPartition::new(&self.topic, partition))
                    .copied(),
                end,
            })
            .collect();
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    /// The group's lag summed over the partitions, in records.
    ///
    /// # Errors
    /// As [`GroupLag::read`].
    pub async fn total(&self) -> Result<i64, ConsumerError> {
        Ok(self.read().await?.iter().map(PartitionLag::lag).sum())
    }

    /// Wait (up to `timeout`) until the group has committed the log end
    /// of every partition; returns whether it did.
    pub async fn wait_committed_to_end(&self, timeout: Duration) -> bool {
        testkit::eventually_async(timeout, || async {
            self.read()
                .await
                .is_ok_and(|ps| ps.iter().all(|p| p.committed == Some(p.end)))
        })
        .await
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// Wait (up to `timeout`) until `group` has committed the log end of every
/// partition of `topic`; returns whether it did. What a test waited "one
/// more commit interval" for.
pub async fn committed_to_end(
    b: &testkit::BrokerEnv,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> bool {
    GroupLag::connect(b, group, topic)
        .await
        .wait_committed_to_end(timeout)
        .await
}

/// The partitions of `topic` whose committed offset (for `group`) is not
/// the log end: partition → (committed, end).
pub async fn uncommitted_partitions(
    b: &testkit::BrokerEnv,
    admin: &Client,
    group: &str,
    topic: &str,
    partitions: i32,
) -> BTreeMap<i32, (Option<i64>, i64)> {
    let ends = admin
        .list_offsets(topic, OffsetSpec::Latest)
        .await
        .expect("list offsets");
    let checker = Consumer::connect(group_consumer(b, group))
        .await
        .expect("connect");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let committed = checker.committed(&tps).await.expect("committed");
    ends.into_iter()
        .filter_map(|(p, end)| {
            let c = committed.get(&TopicPartition::new(topic, p)).copied();
            (c != Some(end)).then_some((p, (c, end)))
        })
        .collect()
}

/// The offset `group` committed for `tp`, if any.
pub async fn committed_offset(
    b: &testkit::BrokerEnv,
    group: &str,
    tp: &TopicPartition,
) -> Option<i64> {
    Consumer::connect(group_consumer(b, group))
        .await
        .expect("connect")
        .committed(std::slice::from_ref(tp))
        .await
        .expect("committed")
        .get(tp)
        .copied()
}

/// The number a record's value starts with (`u32::MAX` if none); padding
/// after a space is ignored.
pub fn number(r: &Record) -> u32 {
    std::str::from_utf8(r.value.as_deref().unwrap_or_default())
        .ok()
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Produce records numbered from `first`, keyed "k<n>", at `per_second`
/// (paced from the start: a tick whose acknowledgements were slow is made
/// up by the next), until `stop` is set; every record is retried until
/// acknowledged (through broker restarts). Returns how many were acked:
/// numbers `first..first + count`.
pub async fn produce_steadily(
    cfg: ProducerConfig,
    topic: String,
    first: u32,
    per_second: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    let p = Producer::connect(cfg).await.expect("connect producer");
    let record = |n: u32| {
        ProducerRecord::new(&topic)
            .key(format!("k{n}"))
            .value(n.to_string())
    };
    let tick = Duration::from_millis(20);
    // Sent and acknowledged, or the error.
    let deliver = |n: u32| {
        let send = p.send(record(n));
        async move { send.await?.await.map(|_| ()) }
    };
    let started = Instant::now();
    let mut n = first;
    while !stop.load(Ordering::SeqCst) {
        // Every record due by now (at least one a tick), all sent before
        // the first ack is awaited.
        let due = (started.elapsed().as_secs_f64() * f64::from(per_second)) as u32;
        let upto = (first + due).max(n + 1);
        let mut pending = Vec::new();
        for i in n..upto {
            pending.push((i, p.send(record(i)).await));
        }
        for (i, sent) in pending {
            let mut outcome = match sent {
                Ok(ack) => ack.await.map(|_| ()),
                Err(e) => Err(e),
            };
            while outcome.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                outcome = deliver(i).await;
            }
        }
        n = upto;
        tokio::time::sleep(tick).await;
    }
    p.close().await;
    n - first
}

/// What handling record `n` does on attempt `attempt`: take this long and
/// apply, or fail. A very long duration is a hung call.
pub type Behaviour = Arc<dyn Fn(u32, u32) -> Result<Duration, HandlerError> + Send + Sync>;

/// Every record applies at once.
pub fn instant() -> Behaviour {
    Arc::new(|_, _| Ok(Duration::ZERO))
}

/// Every record takes `d`.
pub fn taking(d: Duration) -> Behaviour {
    Arc::new(move |_, _| Ok(d))
}

/// A downstream that accepts `per_second` records in all, however many
/// calls run at once: each call takes the next free slot (sleeping only
/// when more than a millisecond ahead, so timer granularity does not cap
/// the rate).
pub fn rate_limited(per_second: u32) -> Behaviour {
    let interval = Duration::from_secs(1) / per_second.max(1);
    let next = Mutex::new(Instant::now());
    Arc::new(move |_, _| {
        let now = Instant::now();
        let mut next = next.lock().expect("rate lock");
        let slot = (*next).max(now);
        *next = slot + interval;
        let ahead = slot - now;
        Ok(if ahead > Duration::from_millis(1) {
            ahead
        } else {
            Duration::ZERO
        })
    })
}

/// Side effects as they were applied, shared by every member of a run.
#[derive(Debug, Default)]
pub struct Sink {
    /// (partition, record number) in application order.
    applied: Mutex<Vec<(i32, u32)>>,
    attempts: Mutex<HashMap<u32, u32>>,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    batch_sizes: Mutex<Vec<usize>>,
    /// Record number → (partition, offset), as handlers saw them.
    positions: Mutex<HashMap<u32, (i32, i64)>>,
}

impl Sink {
    /// Count an attempt at `n`; returns its number (1 for the first).
    pub fn attempt(&self, n: u32) -> u32 {
        let mut a = self.attempts.lock().expect("lock");
        let e = a.entry(n).or_default();
        *e += 1;
        *e
    }

    pub fn apply(&self, partition: i32, n: u32) {
        self.applied.lock().expect("lock").push((partition, n));
    }

    /// Run `behaviour` for record `n` of `partition`: apply it, or fail.
    pub async fn handle(
        &self,
        behaviour: &Behaviour,
        partition: i32,
        n: u32,
    ) -> Result<(), HandlerError> {
        let took = behaviour(n, self.attempt(n))?;
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_running.fetch_max(now, Ordering::SeqCst);
        if !took.is_zero() {
            tokio::time::sleep(took).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.apply(partition, n);
        Ok(())
    }

    /// (partition, number) in application order.
    pub fn applied(&self) -> Vec<(i32, u32)> {
        self.applied.lock().expect("lock").clone()
    }

    /// Record numbers in application order.
    pub fn applied_numbers(&self) -> Vec<u32> {
        self.applied().into_iter().map(|(_, n)| n).collect()
    }

    /// (distinct records applied, side effects beyond the first per record).
    pub fn distinct_and_duplicates(&self) -> (BTreeSet<u32>, usize) {
        let all = self.applied_numbers();
        let distinct: BTreeSet<u32> = all.iter().copied().collect();
        let dups = all.len() - distinct.len();
        (distinct, dups)
    }

    pub fn distinct(&self) -> usize {
        self.distinct_and_duplicates().0.len()
    }

    /// Note where record `n` sits.
    pub fn saw(&self, n: u32, partition: i32, offset: i64) {
        self.positions
            .lock()
            .expect("lock")
            .insert(n, (partition, offset));
    }

    /// (partition, offset) of record `n`, if a handler saw it.
    pub fn position_of(&self, n: u32) -> Option<(i32, i64)> {
        self.positions.lock().expect("lock").get(&n).copied()
    }

    /// Every record a handler saw: (partition, offset) → number.
    pub fn positions(&self) -> HashMap<(i32, i64), u32> {
        self.positions
            .lock()
            .expect("lock")
            .iter()
            .map(|(n, pos)| (*pos, *n))
            .collect()
    }

    /// Records applied more than once: (partition, number).
    pub fn duplicated(&self) -> Vec<(i32, u32)> {
        let mut seen = BTreeSet::new();
        let mut dups = Vec::new();
        for (p, n) in self.applied() {
            if !seen.insert(n) {
                dups.push((p, n));
            }
        }
        dups
    }

    /// Most calls that ran at once.
    pub fn peak_running(&self) -> usize {
        self.peak_running.load(Ordering::SeqCst)
    }

    /// Sizes of the batches a batch handler got.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.lock().expect("lock").clone()
    }

    /// Partitions whose application order does not follow record (=
    /// offset) order at some point.
    pub fn partitions_out_of_order(&self) -> usize {
        let mut last: HashMap<i32, u32> = HashMap::new();
        let mut bad = BTreeSet::new();
        for (p, n) in self.applied.lock().expect("lock").iter() {
            if last.insert(*p, *n).is_some_and(|prev| prev >= *n) {
                bad.insert(*p);
            }
        }
        bad.len()
    }
}

/// A [`Handler`] and [`BatchHandler`] applying numbered records to a [`Sink`].
pub struct SinkHandler {
    pub sink: Arc<Sink>,
    pub behaviour: Behaviour,
}

impl std::fmt::Debug for SinkHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandler").finish_non_exhaustive()
    }
}

impl SinkHandler {
    pub fn new(sink: &Arc<Sink>, behaviour: Behaviour) -> Self {
        Self {
            sink: sink.clone(),
            behaviour,
        }
    }
}

impl Handler for SinkHandler {
    async fn handle(&self, tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        self.sink.saw(number(r), tp.partition, r.offset);
        self.sink
            .handle(&self.behaviour, tp.partition, number(r))
            .await
    }
}

impl BatchHandler for SinkHandler {
    async fn handle_batch(&self, tp: &TopicPartition, rs: &[Record]) -> Result<(), HandlerError> {
        self.sink.batch_sizes.lock().expect("lock").push(rs.len());
        for r in rs {
            self.sink.saw(number(r), tp.partition, r.offset);
            self.sink
                .handle(&self.behaviour, tp.partition, number(r))
                .await?;
        }
        Ok(())
    }
}

/// One transaction of `values` to `topic` partition 0 by a new
/// transactional producer, committed or aborted; waits until the
/// transaction's marker is in the log (markers land after EndTxn returns).
pub async fn transaction(
    b: &testkit::BrokerEnv,
    admin: &Client,
    topic: &str,
    values: &[String],
    commit: bool,
) {
    let before = log_end(admin, topic).await;
    let p = open_transaction(b, topic, values).await;
    if commit {
        p.commit_transaction().await.expect("commit");
    } else {
        p.abort_transaction().await.expect("abort");
    }
    p.close().await;
    let want = before + values.len() as i64 + 1;
    assert!(
        testkit::eventually_async(Duration::from_secs(10), || async {
            log_end(admin, topic).await >= want
        })
        .await,
        "the transaction marker of {topic} never landed"
    );
}

/// A transactional producer with `values` sent to `topic` partition 0 in
/// a transaction left open (commit or abort it).
pub async fn open_transaction(b: &testkit::BrokerEnv, topic: &str, values: &[String]) -> Producer {
    let cfg = testkit::producer_builder(b)
        .transactional_id(testkit::unique_name("txn"))
        .build()
        .expect("config");
    let p = Producer::connect(cfg).await.expect("connect");
    p.init_transactions().await.expect("init transactions");
    p.begin_transaction().await.expect("begin");
    for v in values {
        let ack = p
            .send(ProducerRecord::new(topic).partition(0).value(v.clone()))
            .await
            .expect("send");
        ack.await.expect("ack");
    }
    p
}

/// The high watermark of `topic` partition 0.
pub async fn log_end(admin: &Client, topic: &str) -> i64 {
    admin
        .list_offsets(topic, OffsetSpec::Latest)
        .await
        .expect("list offsets")
        .first()
        .map_or(0, |(_, o)| *o)
}
