//! The producer: batching per partition, idempotent by default.
//!
//! ```text
//!  send / try_send ──▶ Topic's entry ──▶ partition (murmur2 | sticky) ──▶ buffer.memory bytes
//!        │                                                             │
//!        └── DeliveryFuture ◀── batch outcome ── Accumulator (one lock) ◀┘
//!              │ dropped unread: a failure goes to   │ ready batches
//!              ▼                                     ▼
//!         failure log ──▶ flush() → Err(Undelivered)   sender task ──▶ Produce to the leader (≤ 5 in flight)
//! ```
//!
//! Two ways to send, one mechanism: await a record's [`DeliveryFuture`]
//! when its offset matters, or drop the futures and call
//! [`Producer::flush`], which reports every failure no future reported
//! (the bulk path: nothing per record beyond the record itself). A record
//! names its topic with a [`Topic`] made once, so no record copies the name.
//!
//! Defaults are Kafka 4.x's: `acks=all`, `enable.idempotence=true`,
//! `linger.ms=5`, `batch.size=16384`, `buffer.memory=32 MiB`,
//! `delivery.timeout.ms=120000`. With idempotence the broker drops
//! duplicates of retried batches, so a retry after a lost connection does
//! not write a record twice.
//!
//! A batch larger than the topic accepts (`max.message.bytes`, answered
//! MESSAGE_TOO_LARGE or RECORD_LIST_TOO_LARGE) is split in halves and sent
//! again, as Java's producer does; only a record too large alone fails,
//! with [`Error::RecordTooLargeForBroker`], and the records around it are
//! delivered in order (DESIGN.md, invariant 38).

mod accumulator;
mod brokers;
mod delivery;
pub(crate) mod partitioner;
mod sender;
mod topic;
mod transaction;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::config::{ClientConfig, ClientConfigBuilder};
use crate::error::{Error, KafkaCode, Result};
use crate::records::{Compression, NewRecord};
use crate::versions::TxnProtocol;

pub(crate) use accumulator::QueueKey;
use accumulator::{Accumulator, AccumulatorConfig, FastMap};
use delivery::FailureLog;
pub use delivery::{DeliveryFuture, FailedRecord, Undelivered};
use partitioner::StickyPartition;
pub use topic::Topic;
pub use transaction::GroupMetadata;
use transaction::TxnState;

/// `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=0`: fire and forget; offsets are unknown (-1).
    None,
    /// `acks=1`: the leader wrote it.
    Leader,
    /// `acks=all` (-1): every in-sync replica wrote it. Required for idempotence.
    #[default]
    All,
}

impl Acks {
    fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// Producer settings; see [`ProducerConfig::builder`] for defaults.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub client: ClientConfig,
    /// `acks`. Default all.
    pub acks: Acks,
    /// `linger.ms`: wait this long for a batch to fill. Default 5 ms.
    pub linger: Duration,
    /// `batch.size`: bytes per partition batch. Default 16384. After the
    /// broker refused a batch as too large, that partition's batches close
    /// at half the refused size instead.
    pub batch_size: usize,
    /// `max.request.size`: cap on one request and one record. Default 1 MiB.
    pub max_request_size: usize,
    /// `compression.type`. Default none.
    pub compression: Compression,
    /// `enable.idempotence`. Default true (needs acks=all).
    pub idempotent: bool,
    /// `buffer.memory`: bytes of unsent records; `send` waits, `try_send` refuses. Default 32 MiB.
    pub buffer_memory: usize,
    /// `delivery.timeout.ms`: from `send` to acknowledgement. Default 120 s.
    pub delivery_timeout: Duration,
    /// `retry.backoff.ms`: the delay before a batch's first retry (and
    /// between InitProducerId and transaction-coordinator attempts).
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: each further retry of the same batch waits
    /// twice as long, up to this, ±20 % jitter (Java's KIP-580); below
    /// `retry.backoff.ms` it caps every delay, as in Java. A broker's
    /// throttle time is waited out separately and never shortened. Default
    /// 1 s.
    pub retry_backoff_max: Duration,
    /// `transactional.id`. Default none.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms`. Default 60 s.
    pub transaction_timeout: Duration,
    /// The highest transaction protocol (KIP-890's `transaction.version`)
    /// a transactional producer speaks: 2 (the default) speaks
    /// transactions V2 where the cluster finalized `transaction.version`
    /// ≥ 2 (Kafka 4.x by default) and V1 elsewhere; 1 keeps V1 everywhere,
    /// without V2's epoch bump per transaction (a late write of an ended
    /// transaction can then join the next one: DESIGN.md, "Transactions
    /// V2"). For comparing the two, or while a cluster's V2 is in doubt.
    pub max_transaction_version: i16,
    /// `max.block.ms`: how long `send` waits for a partition it names to
    /// appear in metadata (a topic grown by CreatePartitions after this
    /// producer cached its partition count), refreshing metadata meanwhile,
    /// as Java's `waitOnMetadata`. Past it, `send` fails with
    /// UNKNOWN_TOPIC_OR_PARTITION saying so. A topic the cluster does not
    /// have fails at once. Default 60 s.
    pub max_block: Duration,
}

impl ProducerConfig {
    /// The retry delays of one batch (or one coordinator request):
    /// `retry.backoff.ms` doubling to `retry.backoff.max.ms`, ±20 % jitter.
    pub fn retry_policy(&self) -> Backoff {
        Backoff::exponential(self.retry_backoff, self.retry_backoff_max).with_jitter(0.2)
    }

    pub fn builder() -> ProducerConfigBuilder {
        ProducerConfigBuilder {
            client: ClientConfig::builder(),
            acks: Acks::All,
            acks_set: false,
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            max_request_size: 1024 * 1024,
            compression: Compression::None,
            idempotent: None,
            buffer_memory: 32 * 1024 * 1024,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
            max_transaction_version: 2,
            max_block: Duration::from_secs(60),
        }
    }
}

/// Builds a [`ProducerConfig`]; accepts Kafka's producer and client property names.
#[derive(Debug, Clone)]
pub struct ProducerConfigBuilder {
    client: ClientConfigBuilder,
    acks: Acks,
    acks_set: bool,
    linger: Duration,
    batch_size: usize,
    max_request_size: usize,
    compression: Compression,
    idempotent: Option<bool>,
    buffer_memory: usize,
    delivery_timeout: Duration,
    retry_backoff: Duration,
    retry_backoff_max: Duration,
    transactional_id: Option<String>,
    transaction_timeout: Duration,
    max_transaction_version: i16,
    max_block: Duration,
}

use crate::config::parse::{boolean, ms, number as size};

impl ProducerConfigBuilder {
    /// Set many Kafka properties (`key=value` pairs from a Java or
    /// librdkafka config, or a service's own settings), in order.
    ///
    /// # Errors
    /// As [`Self::set`]: the first unknown key or bad value, named.
    pub fn properties<'a>(
        mut self,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self> {
        for (k, v) in props {
            self = self.set(k, v)?;
        }
        Ok(self)
    }

    /// Set one Kafka property (producer or client). Unknown keys are an error.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "acks" | "request.required.acks" => {
                self.acks = match value.trim().to_ascii_lowercase().as_str() {
                    "all" | "-1" => Acks::All,
                    "1" => Acks::Leader,
                    "0" => Acks::None,
                    _ => {
                        return Err(Error::Config(format!(
                            "acks={value:?}: expected all, 1 or 0"
                        )))
                    }
                };
                self.acks_set = true;
            }
            "linger.ms" | "queue.buffering.max.ms" => self.linger = ms(key, value)?,
            "batch.size" => self.batch_size = size(key, value)?,
            "max.request.size" | "message.max.bytes" => self.max_request_size = size(key, value)?,
            "compression.type" | "compression.codec" => {
                self.compression = Compression::parse(value).ok_or_else(|| {
                    Error::Config(format!(
                        "{key}={value:?}: expected none, gzip, snappy, lz4 or zstd"
                    ))
                })?
            }
            "enable.idempotence" => self.idempotent = Some(boolean(key, value)?),
            "buffer.memory" => self.buffer_memory = size(key, value)?,
            "delivery.timeout.ms" | "message.timeout.ms" => self.delivery_timeout = ms(key, value)?,
            "retry.backoff.ms" => self.retry_backoff = ms(key, value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = ms(key, value)?,
            "transactional.id" => self.transactional_id = Some(value.to_string()),
            "transaction.timeout.ms" => self.transaction_timeout = ms(key, value)?,
            "max.block.ms" => self.max_block = ms(key, value)?,
            // Accepted for compatibility; retries are bounded by delivery.timeout.ms.
            "retries" => {}
            _ => {
                if !self.client.try_set(key, value)? {
                    return Err(Error::Config(format!("unknown producer property {key:?}")));
                }
            }
        }
        Ok(self)
    }

    pub fn bootstrap(self, servers: &str) -> Result<Self> {
        self.set("bootstrap.servers", servers)
    }

    pub fn client(mut self, f: impl FnOnce(ClientConfigBuilder) -> ClientConfigBuilder) -> Self {
        self.client = f(self.client);
        self
    }

    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self.acks_set = true;
        self
    }
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }
    pub fn batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = Some(on);
        self
    }
    pub fn buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }
    pub fn delivery_timeout(mut self, d: Duration) -> Self {
        self.delivery_timeout = d;
        self
    }
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }
    /// [`ProducerConfig::max_transaction_version`]: 1 (transactions V1
    /// everywhere) or 2 (V2 where the cluster finalized it; the default).
    pub fn max_transaction_version(mut self, version: i16) -> Self {
        self.max_transaction_version = version;
        self
    }

    /// Validate and build.
    ///
    /// # Errors
    /// [`Error::Config`] naming the conflicting settings.
    pub fn build(self) -> Result<ProducerConfig> {
        let client = self.client.build()?;
        // Idempotence is on by default unless acks says otherwise (as in Java).
        let idempotent = match self.idempotent {
            Some(v) => v,
            None => !self.acks_set || self.acks == Acks::All,
        };
        if idempotent && self.acks != Acks::All {
            return Err(Error::Config(
                "enable.idempotence=true requires acks=all".into(),
            ));
        }
        if self.transactional_id.is_some() && !idempotent {
            return Err(Error::Config(
                "transactional.id requires enable.idempotence=true".into(),
            ));
        }
        if !(1..=2).contains(&self.max_transaction_version) {
            return Err(Error::Config(format!(
                "max_transaction_version={}: expected 1 (transactions V1) or 2 (V2 where the \
                 cluster finalized transaction.version=2)",
                self.max_transaction_version
            )));
        }
        if !self.compression.is_built() {
            let codec = self.compression.name();
            return Err(Error::Config(format!(
                "compression.type={codec}: this build of kafka-wire left out the `{codec}` \
                 feature; enable it in Cargo.toml (it is on by default), or choose another codec"
            )));
        }
        if self.batch_size == 0 || self.buffer_memory < self.batch_size {
            return Err(Error::Config(
                "batch.size must be > 0 and buffer.memory at least batch.size".into(),
            ));
        }
        Ok(ProducerConfig {
            client,
            acks: self.acks,
            linger: self.linger,
            batch_size: self.batch_size,
            max_request_size: self.max_request_size,
            compression: self.compression,
            idempotent,
            buffer_memory: self.buffer_memory,
            delivery_timeout: self.delivery_timeout,
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            transactional_id: self.transactional_id,
            transaction_timeout: self.transaction_timeout,
            max_transaction_version: self.max_transaction_version,
            max_block: self.max_block,
        })
    }
}

/// A record to send.
///
/// The topic is a [`Topic`]: make it once (`Topic::new("orders")`) and
/// pass `&topic` to [`ProducerRecord::new`] for each record, so no record
/// copies the name. A `&str` or `String` works too, at the cost of one
/// allocation per record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: Topic,
    /// Explicit partition; otherwise murmur2(key) or sticky.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch; default now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record for `topic`: a [`Topic`] or `&Topic` (shared, no copy), or
    /// a `&str` / `String` (copied into a new `Topic`).
    pub fn new(topic: impl Into<Topic>) -> Self {
        // Not `..Self::default()`: that would build (allocate) and drop a
        // default `Topic` per record.
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }
    pub fn partition(mut self, p: i32) -> Self {
        self.partition = Some(p);
        self
    }
    pub fn timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    fn size_estimate(&self) -> usize {
        estimated_size(self.key.as_ref(), self.value.as_ref(), &self.headers)
    }
}

/// A record's estimated encoded size in bytes: what it counts against
/// `batch.size` and `buffer.memory`. One formula for `send` and for a
/// batch split later, so a split divides the memory permit exactly.
pub(crate) fn estimated_size(
    key: Option<&Bytes>,
    value: Option<&Bytes>,
    headers: &[(String, Option<Bytes>)],
) -> usize {
    // record framing (varints, attributes) ≈ 16 bytes
    16 + key.map_or(0, |k| k.len())
        + value.map_or(0, |v| v.len())
        + headers
            .iter()
            .map(|(k, v)| 4 + k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic, shared with the producer's other reports (no copy per record).
    pub topic: Arc<str>,
    pub partition: i32,
    /// -1 with acks=0 (unknown).
    pub offset: i64,
    pub timestamp: i64,
}

/// Why `try_send` handed the record back.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// `buffer.memory` is exhausted; the record is returned untouched.
    #[error("the producer buffer is full (buffer.memory); try again after deliveries complete")]
    BufferFull(ProducerRecord),
    /// Any other failure before the record was queued.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// A producer id and its epoch (KIP-98): what InitProducerId returns, and
/// what every idempotent or transactional batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdEpoch {
    pub(crate) id: i64,
    pub(crate) epoch: i16,
}

impl ProducerIdEpoch {
    /// Before the first InitProducerId answers.
    pub(crate) const NONE: Self = Self { id: -1, epoch: -1 };

    pub(crate) fn is_none(self) -> bool {
        self.id < 0
    }
}

pub(crate) struct State {
    acc: Accumulator,
    producer: ProducerIdEpoch,
    reset_producer_id: bool,
    flushing: usize,
    closing: bool,
    /// Set when the last [`Producer`] handle was dropped: the sender
    /// flushes until then at most, fails what is still queued, and stops.
    close_by: Option<Instant>,
    /// The first delivery failure inside the open transaction.
    txn_error: Option<Error>,
    /// The transaction protocol (KIP-890), chosen by `init_transactions`
    /// and again after each transaction; V1 for a producer without a
    /// `transactional.id`. The sender reads it for a Produce's version.
    txn_protocol: TxnProtocol,
    /// A Produce of the open transaction was sent (under V2 that write is
    /// what tells the coordinator of the transaction).
    txn_produced: bool,
}

/// What `send` keeps per topic, so the path of a record takes no lock but
/// one read lock: the shared name, the sticky partition and the partition
/// count of the metadata it was last read from.
pub(crate) struct TopicEntry {
    /// The topic's one shared name: batches key on it, so a send allocates no string.
    name: Arc<str>,
    sticky: StickyPartition,
    /// `(metadata version << 32) | partition count`; 0 until first read.
    partitions: std::sync::atomic::AtomicU64,
}

impl TopicEntry {
    /// The partition count, if metadata has not changed since it was cached.
    fn partition_count(&self, metadata_version: u64) -> Option<usize> {
        let v = self.partitions.load(std::sync::atomic::Ordering::Acquire);
        (v != 0 && v >> 32 == metadata_version & 0xffff_ffff).then_some((v & 0xffff_ffff) as usize)
    }

    fn cache_partition_count(&self, metadata_version: u64, count: usize) {
        self.partitions.store(
            (metadata_version & 0xffff_ffff) << 32 | (count as u64 & 0xffff_ffff),
            std::sync::atomic::Ordering::Release,
        );
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    topics: std::sync::RwLock<FastMap<String, Arc<TopicEntry>>>,
    wake: Notify,
    memory: Arc<Semaphore>,
    pending: watch::Sender<usize>,
    /// Failed records no delivery future reported, for `flush`.
    log: Arc<FailureLog>,
}

impl Shared {
    /// Batches of these partitions were taken for sending: their topics'
    /// keyless records move to another partition (KIP-480).
    fn move_sticky(&self, taken: &[QueueKey], md: &crate::metadata::Metadata) {
        if taken.is_empty() {
            return;
        }
        let topics = self.topics.read().expect("topics lock");
        for (topic, partition) in taken {
            if let Some(t) = topics.get(&**topic) {
                t.sticky
                    .batch_sealed(*partition, md.partition_count(topic).unwrap_or(1));
            }
        }
    }

    /// A fatal error before any batch could be sent: fail everything queued.
    fn fail_all(&self, err: &Error) {
        let mut st = self.state.lock().expect("producer state lock");
        for b in st.acc.expire(
            Instant::now() + Duration::from_secs(1 << 30),
            Duration::ZERO,
        ) {
            let n = b.records.len();
            b.fail(err);
            st.acc.completed(n);
        }
        self.pending.send_replace(st.acc.pending_records);
    }
}

/// How long a dropped producer goes on flushing at most (or
/// `delivery.timeout.ms`, if shorter): see [`Producer`]'s drop.
const DROP_CLOSE_BOUND: Duration = Duration::from_secs(30);

/// A Kafka producer. Cheap to clone; clones share one sender.
///
/// Dropping the last clone starts a bounded close: the sender task sends
/// what is queued (ignoring `linger.ms`) for at most 30 s, or
/// `delivery.timeout.ms` if that is shorter, then stops and drops its
/// connections (those of a client the producer made itself close; a
/// client passed to [`Producer::with_client`] stays the caller's).
/// Records still queued or unanswered then fail with [`Error::Closed`],
/// and those whose delivery future was dropped are logged at error level,
/// as [`Producer::close`] says. Call [`Producer::flush`] (and `close`)
/// before dropping it to see every outcome.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    client: Client,
    cfg: Arc<ProducerConfig>,
    txn: Arc<tokio::sync::Mutex<TxnState>>,
    /// Shared by the clones: dropped with the last, it closes the sender.
    _last: Arc<CloseOnDrop>,
}

/// Starts the bounded close when the last [`Producer`] clone goes (the
/// sender task itself holds [`Shared`], so it would otherwise wait for
/// records forever, with its connections open).
struct CloseOnDrop {
    shared: Arc<Shared>,
    bound: Duration,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        // A poisoned lock: the sender panicked and is gone already.
        if let Ok(mut st) = self.shared.state.lock() {
            st.closing = true;
            st.close_by = Some(Instant::now() + self.bound);
        }
        self.shared.wake.notify_one();
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("acks", &self.cfg.acks)
            .field("idempotent", &self.cfg.idempotent)
            .finish_non_exhaustive()
    }
}

/// The partition for `rec` in a topic of `count` partitions: the one it
/// names (checked against `count`), its key's hash (murmur2, as Java), or
/// the topic's sticky partition (KIP-480) for a record without a key.
///
/// # Errors
/// `UNKNOWN_TOPIC_OR_PARTITION` for a named partition outside `0..count`.
fn choose_partition(rec: &ProducerRecord, topic: &TopicEntry, count: usize) -> Result<i32> {
    if let Some(p) = rec.partition {
        if p < 0 || p as usize >= count {
            return Err(Error::broker_for(
                crate::messages::ApiKey::Produce,
                KafkaCode::UnknownTopicOrPartition,
                &rec.topic,
                p,
            ));
        }
        return Ok(p);
    }
    Ok(match &rec.key {
        Some(k) => partitioner::partition_for_key(k, count),
        None => topic.sticky.partition(count),
    })
}

/// Does `rec` name no partition, or one below `count` (or a negative one,
/// which no growth can make valid: `choose_partition` refuses it)?
fn names_a_known_partition(rec: &ProducerRecord, count: usize) -> bool {
    rec.partition.is_none_or(|p| p < 0 || (p as usize) < count)
}

/// What the batch keeps of `rec` (the topic and partition are its queue's).
fn new_record(rec: ProducerRecord) -> NewRecord {
    NewRecord {
        key: rec.key,
        value: rec.value,
        headers: rec.headers,
        timestamp: rec.timestamp.unwrap_or_else(now_ms),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Producer {
    /// Connect and start the sender task.
    ///
    /// # Errors
    /// Connection errors from [`Client::connect`].
    pub async fn connect(cfg: ProducerConfig) -> Result<Producer> {
        let client = Client::connect(cfg.client.clone()).await?;
        Ok(Self::with_client(client, cfg))
    }

    /// Start a producer on an existing client (sharing its connections).
    pub fn with_client(client: Client, cfg: ProducerConfig) -> Producer {
        let cfg = Arc::new(cfg);
        let memory = Arc::new(Semaphore::new(cfg.buffer_memory));
        let log = Arc::new(FailureLog::new(cfg.buffer_memory));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                acc: Accumulator::new(
                    AccumulatorConfig {
                        batch_size: cfg.batch_size,
                        linger: cfg.linger,
                        max_in_flight: client.config().max_in_flight,
                        idempotent: cfg.idempotent,
                    },
                    memory.clone(),
                    log.clone(),
                ),
                producer: ProducerIdEpoch::NONE,
                reset_producer_id: false,
                flushing: 0,
                closing: false,
                close_by: None,
                txn_error: None,
                txn_protocol: TxnProtocol::V1,
                txn_produced: false,
            }),
            topics: std::sync::RwLock::new(FastMap::default()),
            wake: Notify::new(),
            memory,
            pending: watch::channel(0).0,
            log,
        });
        tokio::spawn(sender::run(shared.clone(), client.clone(), cfg.clone()));
        let _last = Arc::new(CloseOnDrop {
            shared: shared.clone(),
            bound: DROP_CLOSE_BOUND.min(cfg.delivery_timeout),
        });
        Producer {
            shared,
            client,
            cfg,
            txn: Arc::new(tokio::sync::Mutex::new(TxnState::default())),
            _last,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The transaction protocol this producer speaks (KIP-890's
    /// `transaction.version`): `Some(2)` for transactions V2, `Some(1)`
    /// for V1, `None` for a producer without a `transactional.id` or
    /// before [`Producer::init_transactions`]. Chosen from the transaction
    /// coordinator's finalized features and read again after each
    /// transaction ([`ProducerConfig::max_transaction_version`] caps it).
    pub fn transaction_version(&self) -> Option<i16> {
        let st = self.shared.state.lock().expect("producer state lock");
        (self.cfg.transactional_id.is_some() && !st.producer.is_none())
            .then(|| st.txn_protocol.level())
    }

    /// The partition count of `rec`'s topic from what this producer (or
    /// its client's metadata) already knows; `None`: ask the cluster.
    fn known_partition_count(&self, rec: &ProducerRecord, topic: &TopicEntry) -> Option<usize> {
        let version = self.client.metadata_version();
        topic.partition_count(version).or_else(|| {
            let count = self.client.metadata().partition_count(&rec.topic)?;
            // Cached under the version read before: a refresh since then
            // makes the next send read the metadata again.
            topic.cache_partition_count(version, count);
            Some(count)
        })
    }

    /// The partition for `rec`. A partition count not known yet is asked
    /// for; a named partition past the known count (the topic grew since
    /// it was cached) is waited for, refreshing metadata with backoff, up to
    /// `max.block.ms`.
    async fn partition_for(&self, rec: &ProducerRecord, topic: &TopicEntry) -> Result<i32> {
        if let Some(n) = self.known_partition_count(rec, topic) {
            if names_a_known_partition(rec, n) {
                return choose_partition(rec, topic, n);
            }
        }
        let deadline = Instant::now() + self.cfg.max_block;
        let mut delays = self.cfg.retry_policy().delays();
        loop {
            let version = self.client.metadata_version();
            let count = self
                .client
                .refresh_metadata(Some(&[rec.topic.to_string()]))
                .await?
                .partition_count(&rec.topic)
                .ok_or_else(|| {
                    Error::broker_for(
                        crate::messages::ApiKey::Metadata,
                        KafkaCode::UnknownTopicOrPartition,
                        &rec.topic,
                        rec.partition.unwrap_or(-1),
                    )
                })?;
            topic.cache_partition_count(version, count);
            let now = Instant::now();
            if names_a_known_partition(rec, count) || now >= deadline {
                return choose_partition(rec, topic, count).map_err(|e| match e {
                    Error::Broker {
                        api,
                        code,
                        topic,
                        partition,
                        ..
                    } => Error::Broker {
                        api,
                        code,
                        topic,
                        partition,
                        message: Some(format!(
                            "the topic has {count} partitions after waiting {} ms \
                             (max.block.ms) for it to grow",
                            self.cfg.max_block.as_millis()
                        )),
                    },
                    other => other,
                });
            }
            let delay = delays.next().unwrap_or(self.cfg.retry_backoff_max);
            tokio::time::sleep(delay.min(deadline - now)).await;
        }
    }

    fn check_size(&self, size: usize) -> Result<()> {
        let limit = self.cfg.max_request_size.min(self.cfg.buffer_memory);
        if size > limit {
            return Err(Error::RecordTooLarge {
                size,
                limit_name: if limit == self.cfg.max_request_size {
                    "max.request.size"
                } else {
                    "buffer.memory"
                },
                limit,
            });
        }
        Ok(())
    }

    /// Queue `record` for `topic` (the producer's interned name)-`partition`;
    /// its `size` bytes of `buffer.memory` were taken (and the permit
    /// forgotten): its batch gives them back.
    fn enqueue(
        &self,
        topic: &Arc<str>,
        partition: i32,
        record: NewRecord,
        size: usize,
    ) -> DeliveryFuture {
        let (appended, delivery) = {
            let mut st = self.shared.state.lock().expect("producer state lock");
            st.acc.append(topic, partition, record, size, Instant::now)
        };
        if appended.batch_full || appended.new_batch {
            self.shared.wake.notify_one();
        }
        delivery
    }

    /// What the producer keeps for `topic`, from the producer's map (a
    /// read lock, a hash and a compare), remembered in the `Topic` handle
    /// so its next sends take the entry from there (`Topic::cached_entry`).
    fn topic_entry(&self, topic: &Topic) -> Arc<TopicEntry> {
        let found = self
            .shared
            .topics
            .read()
            .expect("topics lock")
            .get(topic.as_str())
            .cloned();
        let entry = found.unwrap_or_else(|| {
            let mut topics = self.shared.topics.write().expect("topics lock");
            topics
                .entry(topic.to_string())
                .or_insert_with(|| {
                    Arc::new(TopicEntry {
                        name: Arc::from(topic.as_str()),
                        sticky: StickyPartition::default(),
                        partitions: Default::default(),
                    })
                })
                .clone()
        });
        topic.remember(&self.shared, &entry);
        entry
    }

    /// `send`'s path with no wait, taken by nearly every record: the
    /// partition count is known, the producer is not transactional (that
    /// may need AddPartitionsToTxn) and `buffer.memory` has room. `Ok(Err)`
    /// hands the record back: one of them needs a wait (the caller takes
    /// the waiting path). Without an `.await` here `send`'s future stays
    /// small: before, the waiting path's state made every call's future
    /// 3.3 KB, copied on each call. The record's parts move straight into
    /// the batch and the topic's name is borrowed from its entry: no copy
    /// of the whole record, no clone of the name.
    fn send_now(&self, rec: ProducerRecord) -> Result<Result<DeliveryFuture, ProducerRecord>> {
        if self.cfg.transactional_id.is_some() {
            return Ok(Err(rec));
        }
        let size = rec.size_estimate();
        self.check_size(size)?;
        let looked_up;
        let topic = match rec.topic.cached_entry(&self.shared) {
            Some(entry) => entry,
            None => {
                looked_up = self.topic_entry(&rec.topic);
                &*looked_up
            }
        };
        let Some(count) = self
            .known_partition_count(&rec, topic)
            .filter(|n| names_a_known_partition(&rec, *n))
        else {
            return Ok(Err(rec)); // ask the cluster, or wait for the topic to grow
        };
        let partition = choose_partition(&rec, topic, count)?;
        // `check_size` bounds `size` by `buffer.memory`, so it fits a u32.
        match self.shared.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(_) => return Ok(Err(rec)),
        }
        let record = NewRecord {
            key: rec.key,
            value: rec.value,
            headers: rec.headers,
            timestamp: rec.timestamp.unwrap_or_else(now_ms),
        };
        Ok(Ok(self.enqueue(&topic.name, partition, record, size)))
    }

    /// What `send` and `try_send` share: size check, partition choice,
    /// the interned topic key, and (in a transaction) AddPartitionsToTxn.
    async fn prepare(&self, rec: &ProducerRecord) -> Result<(QueueKey, usize)> {
        let size = rec.size_estimate();
        self.check_size(size)?;
        let topic = self.topic_entry(&rec.topic);
        let partition = self.partition_for(rec, &topic).await?;
        let tp = (topic.name.clone(), partition);
        if self.cfg.transactional_id.is_some() {
            self.add_to_transaction(&tp).await?;
        }
        Ok((tp, size))
    }

    /// Queue a record, waiting for buffer memory if it is full. The returned
    /// future resolves when the broker acknowledges the record.
    ///
    /// Await it when you need the record's offset. In bulk, drop it
    /// (`producer.send(rec).await?;`) and call [`Producer::flush`] after
    /// the batch of sends: a record whose future was dropped reports its
    /// failure there, so none is lost and no future is awaited per record.
    ///
    /// # Errors
    /// Unknown topic or partition, a record too large, or a closed producer.
    /// Delivery errors arrive through the [`DeliveryFuture`], or through
    /// [`Producer::flush`] when the future was dropped unread.
    ///
    /// # Cancel safety
    /// Cancel safe until it returns: a cancelled `send` queued nothing.
    pub async fn send(&self, rec: ProducerRecord) -> Result<DeliveryFuture> {
        match self.send_now(rec)? {
            Ok(delivery) => Ok(delivery),
            Err(rec) => Box::pin(self.send_waiting(rec)).await,
        }
    }

    /// [`Producer::send`] when it may wait: for metadata, for
    /// AddPartitionsToTxn, or for `buffer.memory`.
    async fn send_waiting(&self, rec: ProducerRecord) -> Result<DeliveryFuture> {
        let (tp, size) = self.prepare(&rec).await?;
        // `check_size` bounds `size` by `buffer.memory`, so it fits a u32.
        match self.shared.memory.try_acquire_many(size as u32) {
            Ok(permit) => permit.forget(),
            Err(_) => self
                .shared
                .memory
                .acquire_many(size as u32)
                .await
                .map_err(|_| Error::Closed)?
                .forget(),
        }
        Ok(self.enqueue(&tp.0, tp.1, new_record(rec), size))
    }

    /// Queue a record if buffer memory allows, without waiting. A full
    /// buffer hands the record back in [`TrySendError::BufferFull`].
    ///
    /// # Errors
    /// [`TrySendError::BufferFull`], or the errors of [`Producer::send`].
    ///
    /// # Cancel safety
    /// Cancel safe (it waits only for metadata of an unknown topic).
    pub async fn try_send(&self, rec: ProducerRecord) -> Result<DeliveryFuture, TrySendError> {
        match self.send_now(rec)? {
            Ok(delivery) => Ok(delivery),
            Err(rec) => Box::pin(self.try_send_waiting(rec)).await,
        }
    }

    /// [`Producer::try_send`] when it may wait (metadata, a transaction).
    async fn try_send_waiting(&self, rec: ProducerRecord) -> Result<DeliveryFuture, TrySendError> {
        let (tp, size) = self.prepare(&rec).await?;
        match self.shared.memory.try_acquire_many(size as u32) {
            Ok(permit) => {
                permit.forget();
                Ok(self.enqueue(&tp.0, tp.1, new_record(rec), size))
            }
            Err(_) => Err(TrySendError::BufferFull(rec)),
        }
    }

    /// Send everything queued now (ignoring linger), wait until every
    /// queued record is acknowledged or has failed, and report the records
    /// that failed and that no [`DeliveryFuture`] reported.
    ///
    /// This is the bulk idiom's check: send without awaiting each delivery
    /// (drop the futures), then flush once.
    ///
    /// ```no_run
    /// # async fn demo(producer: kafka_wire::Producer) -> anyhow::Result<()> {
    /// use kafka_wire::{ProducerRecord, Topic};
    ///
    /// let orders = Topic::new("orders"); // once: records share the name
    /// for i in 0..10_000 {
    ///     producer.send(ProducerRecord::new(&orders).value(format!("order {i}"))).await?;
    /// }
    /// producer.flush().await?; // Err(Undelivered): the records that failed, to retry or log
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Undelivered`]: every record that failed since the previous
    /// `flush` returned (or since the producer started) whose delivery
    /// future was dropped without being read, with its error, in the order
    /// they failed. Each failure is reported once: by its future if that is
    /// read, else by one `flush`. The records are handed back (up to
    /// `buffer.memory` bytes of them; failures past that are counted in
    /// [`Undelivered::not_kept`]).
    ///
    /// # Cancel safety
    /// Cancel safe: records are still delivered, and failures stay for the
    /// next `flush`.
    pub async fn flush(&self) -> Result<(), Undelivered> {
        self.wait_until_sent().await;
        match self.shared.log.take() {
            Some(undelivered) => Err(undelivered),
            None => Ok(()),
        }
    }

    /// Send everything queued now (ignoring linger) and wait until nothing
    /// is pending. Failures stay in the log.
    async fn wait_until_sent(&self) {
        /// Gives back the flush's hold on linger, also when cancelled.
        struct Flushing<'a>(&'a Shared);
        impl Drop for Flushing<'_> {
            fn drop(&mut self) {
                self.0.state.lock().expect("producer state lock").flushing -= 1;
            }
        }
        let (mut pending, _flushing) = {
            let mut st = self.shared.state.lock().expect("producer state lock");
            st.flushing += 1;
            self.shared.pending.send_replace(st.acc.pending_records);
            (self.shared.pending.subscribe(), Flushing(&self.shared))
        };
        self.shared.wake.notify_one();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Wait as [`Self::flush`] does, then stop the sender task.
    ///
    /// Failed records stay for `flush`: to see them, call
    /// `producer.flush().await?` before `close`. Failures no `flush` ever
    /// reports are logged (`tracing`, level error) when the producer is
    /// dropped, so they are never lost silently. Without `close`, dropping
    /// the last clone closes the producer too, waiting a bounded time (see
    /// [`Producer`]).
    ///
    /// # Cancel safety
    /// Cancel safe before it returns: the producer keeps running.
    pub async fn close(&self) {
        self.wait_until_sent().await;
        self.shared
            .state
            .lock()
            .expect("producer state lock")
            .closing = true;
        self.shared.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transaction_version_cap_is_1_or_2_and_2_by_default() {
        let builder = || {
            ProducerConfig::builder()
                .bootstrap("127.0.0.1:9092")
                .unwrap()
        };
        assert_eq!(builder().build().unwrap().max_transaction_version, 2);
        for ok in [1, 2] {
            let cfg = builder().max_transaction_version(ok).build().unwrap();
            assert_eq!(cfg.max_transaction_version, ok);
        }
        for bad in [0, 3] {
            let err = builder().max_transaction_version(bad).build().unwrap_err();
            assert!(err.to_string().contains("max_transaction_version"), "{err}");
        }
    }

    #[test]
    fn a_codec_is_accepted_exactly_when_this_build_has_its_feature() {
        for codec in Compression::ALL {
            let built = ProducerConfig::builder()
                .set("bootstrap.servers", "127.0.0.1:9092")
                .and_then(|b| b.set("compression.type", codec.name()))
                .and_then(|b| b.build());
            match built {
                Ok(cfg) => {
                    assert!(codec.is_built(), "{codec:?}");
                    assert_eq!(cfg.compression, codec);
                }
                Err(e) => {
                    assert!(!codec.is_built(), "{codec:?}: {e}");
                    assert!(e
                        .to_string()
                        .contains(&format!("`{}` feature", codec.name())));
                }
            }
        }
    }
}
