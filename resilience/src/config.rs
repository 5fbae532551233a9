//! Runtime settings, with every default in one place ([`ProcessorConfig::new`]).

use std::sync::Arc;
use std::time::Duration;

use consumer_core::{ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::ProducerConfig;

use crate::commit_metadata::DEFAULT_METADATA_LIMIT;
use crate::dedup::DedupStore;
use crate::observe::Observer;
use crate::retry::BackoffPolicy;
use crate::retry_topics::RetryTopics;
use crate::scheduler::Ordering;

/// When completed offsets are committed. Every commit is generation-fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitPolicy {
    /// As soon as the commit point moves (most commits, least redo).
    AfterEachCompletion,
    /// On this interval, and on revoke and shutdown (the default, 1 s).
    Interval(Duration),
    /// Only on revoke and shutdown (a crash redoes everything since).
    OnRevokeAndShutdown,
}

/// A function deriving an idempotency key from a record.
pub type KeyFn = Arc<dyn Fn(&TopicPartition, &Record) -> Option<String> + Send + Sync>;

/// Where an idempotency key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A header's value (UTF-8), e.g. `event-id`.
    Header(String),
    /// The record key (UTF-8 or hex).
    RecordKey,
    /// `topic/partition/offset`: the record's own position. Redelivery of
    /// the same record is detected; a producer retry that wrote it twice is not.
    Position,
    /// Your function.
    Custom(KeyFn),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Header(h) => write!(f, "Header({h})"),
            KeySource::RecordKey => f.write_str("RecordKey"),
            KeySource::Position => f.write_str("Position"),
            KeySource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl KeySource {
    /// The idempotency key of `record`, if it has one.
    pub fn key_of(&self, tp: &TopicPartition, record: &Record) -> Option<String> {
        let text = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => b.iter().map(|x| format!("{x:02x}")).collect(),
        };
        match self {
            KeySource::Header(name) => record
                .headers
                .iter()
                .rev()
                .find(|h| h.key.as_ref() == name.as_bytes())
                .and_then(|h| h.value.as_deref())
                .map(text),
            KeySource::RecordKey => record.key.as_deref().map(text),
            KeySource::Position => Some(format!("{}/{}/{}", tp.topic, tp.partition, record.offset)),
            KeySource::Custom(f) => f(tp, record),
        }
    }
}

/// Skip side effects already applied: check, process, mark, then commit.
#[derive(Clone)]
pub struct Idempotency {
    pub key: KeySource,
    pub store: Arc<dyn DedupStore>,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A partition whose records keep exhausting their retries (a downstream
/// outage, not poison data) waits on its own; the others go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantine {
    /// Records in a row that were dead-lettered after exhausting their
    /// retries with a *retryable* error, before the partition is
    /// quarantined. Poison (non-retryable) records never count. 0 disables.
    pub after_failures: u32,
    /// How long a quarantined partition waits before its next record.
    pub pause: Duration,
}

/// Runtime settings; [`ProcessorConfig::new`] holds every default.
#[derive(Clone)]
pub struct ProcessorConfig {
    pub consumer: ConsumerConfig,
    pub topics: Vec<String>,
    /// Consume every topic whose whole name matches this regex instead of
    /// `topics` (Java's `subscribe(Pattern)`; see
    /// `Consumer::subscribe_pattern`): topics created later that match are
    /// picked up within `metadata.max.age.ms`. Default none. DLT topics are
    /// not created at start for the matched topics, and retry topics
    /// cannot be combined with a pattern; keep the DLT's name (default
    /// `<topic>.DLT`) out of the pattern, or the processor consumes its
    /// own dead letters.
    pub topic_pattern: Option<String>,
    /// Default [`Ordering::PerPartition`].
    pub ordering: Ordering,
    /// Units of work (records, or batches) handled at once. Default 8.
    pub concurrency: usize,
    /// Records per handler call for a batch handler. Default 1 (set by
    /// `Processor::batched`).
    pub max_batch: usize,
    /// Pause fetching at this many in-flight bytes, resume below half.
    /// The bound holds to within one poll (`max.poll.records`). Default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// Pause fetching at this many in-flight records, resume below half. Default 10,000.
    pub max_in_flight_records: usize,
    /// Pause one partition at this many queued records, resume below half,
    /// so one slow partition cannot fill the global bound. Default 2,000.
    pub max_queued_per_partition: usize,
    /// Default `Interval(1 s)`.
    pub commit_policy: CommitPolicy,
    /// Blocking retries: defaults 1 s, ×2, 3 attempts, ±20 % jitter.
    pub backoff: BackoffPolicy,
    /// A handler call taking longer fails with a retryable error. Default none.
    pub handler_timeout: Option<Duration>,
    /// Producer for dead-letter and retry-topic writes (idempotent, acks=all).
    /// `None`: a record that exhausts its retries stalls its partition.
    pub dlt_producer: Option<ProducerConfig>,
    /// Dead-letter topic for a source topic. Default `<topic>.DLT`.
    pub dlt_topic: Arc<dyn Fn(&str) -> String + Send + Sync>,
    /// Create missing DLT and retry topics at start (same partition count
    /// as the source). Default true.
    pub create_topics: bool,
    /// Non-blocking retry topics instead of blocking retries. Default none.
    pub retry_topics: Option<RetryTopics>,
    pub idempotency: Option<Idempotency>,
    /// Default: after 5 failures in a row, wait 30 s.
    pub quarantine: Quarantine,
    /// How long a revoke or shutdown waits for running work. Default 30 s.
    pub drain_timeout: Duration,
    /// How long `run` keeps retrying (with backoff, logging each attempt)
    /// when the cluster cannot be reached at start. Default `None`: until
    /// shutdown, like a service that starts before its broker.
    pub startup_timeout: Option<Duration>,
    /// Broker's `offset.metadata.max.bytes`. Default 4096.
    pub metadata_limit: usize,
    pub observer: Option<Arc<dyn Observer>>,
}

impl std::fmt::Debug for ProcessorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("topics", &self.topics)
            .field("topic_pattern", &self.topic_pattern)
            .field("ordering", &self.ordering)
            .field("concurrency", &self.concurrency)
            .field("max_batch", &self.max_batch)
            .field("commit_policy", &self.commit_policy)
            .field("retry_topics", &self.retry_topics)
            .field("idempotency", &self.idempotency)
            .finish_non_exhaustive()
    }
}

impl ProcessorConfig {
    pub fn new(consumer: ConsumerConfig, topics: &[&str]) -> Self {
        Self {
            consumer,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            topic_pattern: None,
            ordering: Ordering::PerPartition,
            concurrency: 8,
            max_batch: 1,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_in_flight_records: 10_000,
            max_queued_per_partition: 2_000,
            commit_policy: CommitPolicy::Interval(Duration::from_secs(1)),
            backoff: BackoffPolicy::default(),
            handler_timeout: None,
            dlt_producer: None,
            dlt_topic: Arc::new(crate::dlt::dlt_topic),
            create_topics: true,
            retry_topics: None,
            idempotency: None,
            quarantine: Quarantine {
                after_failures: 5,
                pause: Duration::from_secs(30),
            },
            drain_timeout: Duration::from_secs(30),
            startup_timeout: None,
            metadata_limit: DEFAULT_METADATA_LIMIT,
            observer: None,
        }
    }

    /// Subscribe by regex instead of topic names; see
    /// [`ProcessorConfig::topic_pattern`](ProcessorConfig#structfield.topic_pattern).
    pub fn topic_pattern(mut self, regex: impl Into<String>) -> Self {
        self.topic_pattern = Some(regex.into());
        self
    }

    pub fn ordering(mut self, o: Ordering) -> Self {
        self.ordering = o;
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Bound in-flight work by records and bytes.
    pub fn max_in_flight(mut self, records: usize, bytes: usize) -> Self {
        self.max_in_flight_records = records.max(1);
        self.max_in_flight_bytes = bytes.max(1);
        self
    }

    pub fn commit_policy(mut self, p: CommitPolicy) -> Self {
        self.commit_policy = p;
        self
    }

    pub fn backoff(mut self, b: BackoffPolicy) -> Self {
        self.backoff = b;
        self
    }

    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.handler_timeout = Some(d);
        self
    }

    /// Dead-letter (and retry-topic) writes through this producer.
    pub fn dead_letter(mut self, producer: ProducerConfig) -> Self {
        self.dlt_producer = Some(producer);
        self
    }

    /// Dead-letter every source topic's records into `topic` (one DLT for
    /// all, like the seeds' `orders_dlq`), instead of `<topic>.DLT`.
    pub fn dlt_topic(mut self, topic: impl Into<String>) -> Self {
        let topic: String = topic.into();
        self.dlt_topic = Arc::new(move |_| topic.clone());
        self
    }

    /// Name the DLT of each source topic with `name` (default `<topic>.DLT`).
    pub fn dlt_topic_with(mut self, name: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.dlt_topic = Arc::new(name);
        self
    }

    pub fn retry_topics(mut self, delays: &[Duration]) -> Self {
        self.retry_topics = Some(RetryTopics::new(delays));
        self
    }

    pub fn idempotency(mut self, key: KeySource, store: Arc<dyn DedupStore>) -> Self {
        self.idempotency = Some(Idempotency { key, store });
        self
    }

    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Give up starting after `d` of failed connection attempts.
    pub fn startup_timeout(mut self, d: Duration) -> Self {
        self.startup_timeout = Some(d);
        self
    }

    pub fn observer(mut self, o: Arc<dyn Observer>) -> Self {
        self.observer = Some(o);
        self
    }
}
