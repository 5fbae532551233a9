//! Runtime settings, with every default in one place ([`ProcessorConfig::new`]).

use std::sync::Arc;
use std::time::Duration;

use consumer_core::share::ShareConsumerConfig;
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
            // A panic in the application's function fails no worker: the
            // record is handled without the duplicate check, as for an id
            // the store refuses for good, and the panic is logged.
            KeySource::Custom(f) => {
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tp, record))) {
                    Ok(key) => key,
                    Err(payload) => {
                        tracing::error!(%tp, offset = record.offset, panic = crate::panics::message(payload.as_ref()), "the idempotency key function panicked; handling the record without the duplicate check");
                        None
                    }
                }
            }
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
    /// Pause one partition at this many queued records, or at its fair
    /// share of `max_in_flight_records` (the bound divided by the assigned
    /// partitions) when that is lower; resume below half. So one busy
    /// partition cannot fill the global bound and leave the workers of the
    /// others idle. Default 2,000.
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
    /// Run as a member of this share group (KIP-932) instead of a consumer
    /// group: see [`ProcessorConfig::share_group`]. Default none.
    pub share: Option<ShareConsumerConfig>,
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

/// The runtime's own property names for [`ProcessorConfig::set`], with
/// what each sets: names in Kafka's style, so a service can keep all its
/// settings in one `key=value` file.
pub const PROPERTIES: &[(&str, &str)] = &[
    ("processor.concurrency", "units of work at once (records)"),
    ("processor.ordering", "partition, key or none"),
    ("processor.max.in.flight.records", "global bound (records)"),
    ("processor.max.in.flight.bytes", "global bound (bytes)"),
    (
        "processor.max.queued.per.partition",
        "per-partition bound (records)",
    ),
    (
        "processor.commit.interval.ms",
        "commit interval (ms); 0 = after each completion",
    ),
    (
        "processor.handler.timeout.ms",
        "handler deadline (ms); 0 = none",
    ),
    (
        "processor.drain.timeout.ms",
        "how long a revoke waits for running work (ms)",
    ),
    ("processor.retry.backoff.ms", "first retry delay (ms)"),
    ("processor.retry.backoff.max.ms", "largest retry delay (ms)"),
    (
        "processor.retry.attempts",
        "attempts in all, the first included",
    ),
    (
        "processor.retry.jitter",
        "fraction of each retry delay randomised, 0 to 1",
    ),
    (
        "processor.quarantine.after.failures",
        "exhausted records in a row that pause a partition; 0 = never",
    ),
    (
        "processor.quarantine.pause.ms",
        "how long a quarantined partition waits (ms)",
    ),
    ("processor.max.batch", "records per batch-handler call"),
    (
        "processor.dlt.topic",
        "one dead-letter topic for every source topic",
    ),
];

impl ProcessorConfig {
    /// Set one runtime property by name (see [`PROPERTIES`]).
    ///
    /// # Errors
    /// [`kafka_wire::Error::Config`] (the error of the consumer's and
    /// producer's `set`, so `?` works beside them, in an `anyhow` function
    /// too), its message naming the key: unknown (with the nearest known
    /// name when it looks misspelled, and all the known names), or a value
    /// that does not parse (with what it expects).
    pub fn set(mut self, key: &str, value: &str) -> kafka_wire::Result<Self> {
        let v = value.trim();
        let bad = |expected: &str| {
            kafka_wire::Error::Config(format!("{key}={value:?}: expected {expected}"))
        };
        let number = || v.parse::<u64>().map_err(|_| bad("a whole number"));
        let ms = || number().map(Duration::from_millis);
        match key {
            "processor.concurrency" => self.concurrency = (number()? as usize).max(1),
            "processor.ordering" => {
                self.ordering = match v {
                    "partition" => Ordering::PerPartition,
                    "key" => Ordering::PerKey,
                    "none" => Ordering::Unordered,
                    _ => return Err(bad("partition, key or none")),
                }
            }
            "processor.max.in.flight.records" => {
                self.max_in_flight_records = (number()? as usize).max(1)
            }
            "processor.max.in.flight.bytes" => {
                self.max_in_flight_bytes = (number()? as usize).max(1)
            }
            "processor.max.queued.per.partition" => {
                self.max_queued_per_partition = (number()? as usize).max(1)
            }
            "processor.commit.interval.ms" => {
                self.commit_policy = match ms()? {
                    d if d.is_zero() => CommitPolicy::AfterEachCompletion,
                    d => CommitPolicy::Interval(d),
                }
            }
            "processor.handler.timeout.ms" => {
                self.handler_timeout = Some(ms()?).filter(|d| !d.is_zero())
            }
            "processor.drain.timeout.ms" => self.drain_timeout = ms()?,
            "processor.retry.backoff.ms" => {
                self.backoff.initial = ms()?;
                self.backoff.max_delay = self.backoff.max_delay.max(self.backoff.initial);
            }
            "processor.retry.backoff.max.ms" => self.backoff.max_delay = ms()?,
            "processor.retry.attempts" => {
                self.backoff.max_attempts = u32::try_from(number()?.max(1)).unwrap_or(u32::MAX)
            }
            "processor.retry.jitter" => {
                let j: f64 = v
                    .parse()
                    .ok()
                    .filter(|j: &f64| (0.0..=1.0).contains(j))
                    .ok_or_else(|| bad("a fraction from 0 to 1"))?;
                self.backoff.jitter = j;
            }
            "processor.quarantine.after.failures" => {
                self.quarantine.after_failures = u32::try_from(number()?).unwrap_or(u32::MAX)
            }
            "processor.quarantine.pause.ms" => self.quarantine.pause = ms()?,
            "processor.max.batch" => self.max_batch = (number()? as usize).max(1),
            "processor.dlt.topic" => return Ok(self.dlt_topic(v)),
            _ => {
                let known: Vec<&str> = PROPERTIES.iter().map(|(k, _)| *k).collect();
                let hint = kafka_wire::suggest::nearest(key, known.iter().copied())
                    .map(|near| format!("; did you mean {near:?}?"))
                    .unwrap_or_default();
                return Err(kafka_wire::Error::Config(format!(
                    "unknown runtime property {key:?}{hint} (known: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(self)
    }

    /// [`ProcessorConfig::set`] for each pair, in order.
    ///
    /// # Errors
    /// As [`ProcessorConfig::set`], for the first bad pair.
    pub fn properties<'a>(
        mut self,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> kafka_wire::Result<Self> {
        for (k, v) in props {
            self = self.set(k, v)?;
        }
        Ok(self)
    }

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
            share: None,
        }
    }

    /// A processor in the share group `share` names (KIP-932, Kafka 4.2+):
    /// the handler API is the same; each record's outcome becomes its
    /// acknowledgement. Handled (or written to the runtime's DLT) is
    /// ACCEPT; a retryable failure within `backoff.max_attempts` is
    /// RELEASE, and the broker delivers the record again (to any member)
    /// with its delivery count one higher, which is the attempt the
    /// handler's `handle` span shows and the failure policy counts; a
    /// non-retryable failure, or the last attempt's, is dead-lettered.
    /// Where it goes is decided at start: when the group has its own
    /// dead-letter queue (KIP-1191, Kafka 4.4: the group config
    /// `errors.deadletterqueue.topic.name`), it is REJECTed and the broker
    /// writes it there (its `__dlq.errors.*` headers); otherwise, with a
    /// dead-letter producer ([`ProcessorConfig::dead_letter`]), the
    /// runtime writes it to its DLT (the same topic, headers and replay as
    /// a consumer group) and then ACCEPTs it; with neither, it is
    /// REJECTed and the broker archives it. Keep `backoff.max_attempts`
    /// below the group's `share.delivery.count.limit` (default 5): past
    /// that the broker archives the record itself.
    ///
    /// **Share groups do not keep order**: records of one partition go to
    /// several members at once and a released one comes back later. The
    /// ordering is [`Ordering::Unordered`], and `run` refuses
    /// `PerPartition` and `PerKey` with an error that says so; retry
    /// topics and `topic_pattern` are refused too (the broker redelivers;
    /// a share consumer subscribes by name). `share`'s
    /// `share.acknowledgement.mode` is set to explicit. In-flight records
    /// are bounded by `max.poll.records`: the next poll waits until every
    /// record of the last one is acknowledged, or renewed (RENEW) because
    /// it is still being handled as its acquisition lock nears its end.
    pub fn share_group(share: ShareConsumerConfig, topics: &[&str]) -> Self {
        let mut consumer = ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .and_then(|b| b.build())
            .expect("a constant configuration");
        // Read only for the group's name (metrics) and connections.
        consumer.client = share.client.clone();
        consumer.group_id = Some(share.group_id.clone());
        let mut cfg = Self::new(consumer, topics);
        cfg.ordering = Ordering::Unordered;
        cfg.share = Some(share);
        cfg
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
    /// A panic in `name` (or an empty name) falls back to `<topic>.DLT`,
    /// logged: a dead letter is never lost to the naming function.
    pub fn dlt_topic_with(mut self, name: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.dlt_topic = Arc::new(name);
        self
    }

    /// The DLT of `source`: [`ProcessorConfig::dlt_topic`]'s answer, or
    /// `<source>.DLT` when that function panics or answers an empty name.
    pub(crate) fn dlt_topic_of(&self, source: &str) -> String {
        let name =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.dlt_topic)(source)));
        match name {
            Ok(name) if !name.is_empty() => name,
            Ok(_) => {
                tracing::error!(
                    source,
                    "the DLT naming function answered an empty name; using <topic>.DLT"
                );
                crate::dlt::dlt_topic(source)
            }
            Err(payload) => {
                tracing::error!(
                    source,
                    panic = crate::panics::message(payload.as_ref()),
                    "the DLT naming function panicked; using <topic>.DLT"
                );
                crate::dlt::dlt_topic(source)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ProcessorConfig {
        let consumer = ConsumerConfig::builder()
            .bootstrap("127.0.0.1:9092")
            .unwrap()
            .build()
            .unwrap();
        ProcessorConfig::new(consumer, &["orders"])
    }

    #[test]
    fn runtime_properties_by_name() {
        let c = base()
            .properties([
                ("processor.concurrency", "10"),
                ("processor.ordering", "key"),
                ("processor.max.in.flight.records", "1000"),
                ("processor.max.in.flight.bytes", "65536"),
                ("processor.max.queued.per.partition", "150"),
                ("processor.commit.interval.ms", "0"),
                ("processor.handler.timeout.ms", "2500"),
                ("processor.drain.timeout.ms", "2000"),
                ("processor.retry.backoff.ms", "1000"),
                ("processor.retry.attempts", "4"),
                ("processor.dlt.topic", "logs-dlq"),
            ])
            .unwrap();
        assert_eq!(c.concurrency, 10);
        assert_eq!(c.ordering, Ordering::PerKey);
        assert_eq!(
            (c.max_in_flight_records, c.max_in_flight_bytes),
            (1000, 65536)
        );
        assert_eq!(c.max_queued_per_partition, 150);
        assert!(matches!(c.commit_policy, CommitPolicy::AfterEachCompletion));
        assert_eq!(c.handler_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.backoff.initial, Duration::from_secs(1));
        assert_eq!(c.backoff.max_attempts, 4);
        assert_eq!((c.dlt_topic)("orders"), "logs-dlq");
        assert_eq!(PROPERTIES.len(), 16, "every name documented");
        for (key, _) in PROPERTIES {
            let value = match *key {
                "processor.ordering" => "none",
                "processor.dlt.topic" => "x",
                "processor.retry.jitter" => "0.5",
                _ => "5",
            };
            assert!(base().set(key, value).is_ok(), "{key}");
        }
    }

    #[test]
    fn a_bad_runtime_property_is_named() {
        let e = base()
            .set("processor.concurency", "4")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(r#"unknown runtime property "processor.concurency"; did you mean "processor.concurrency"?"#),
            "{e}"
        );
        let e = base().set("processor.nothing.like.it", "4").unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
        let e = base().set("processor.concurrency", "many").unwrap_err();
        assert!(
            matches!(&e, kafka_wire::Error::Config(m) if m.contains("whole number")),
            "{e}"
        );
        let e = base().set("processor.ordering", "offset").unwrap_err();
        assert!(e.to_string().contains("partition, key or none"), "{e}");
    }

    /// Issue 35: `?` on `set` works in an `anyhow` function (the error is
    /// a `std::error::Error`, the consumer's and producer's type).
    #[test]
    fn set_works_with_question_mark_in_an_anyhow_function() {
        fn build() -> anyhow::Result<ProcessorConfig> {
            Ok(base()
                .set("processor.concurrency", "4")?
                .set("processor.ordering", "key")?)
        }
        assert_eq!(build().unwrap().concurrency, 4);
    }

    /// Issue 29's kind: the application's naming and key functions may
    /// panic; neither fails a worker, and no record is lost to them.
    #[test]
    fn a_panicking_dlt_name_or_key_function_falls_back_and_fails_nothing() {
        let c = base().dlt_topic_with(|t| {
            assert!(t != "bad", "no DLT name for {t}");
            if t == "empty" {
                String::new()
            } else {
                format!("{t}-dead")
            }
        });
        assert_eq!(c.dlt_topic_of("orders"), "orders-dead");
        assert_eq!(c.dlt_topic_of("bad"), "bad.DLT");
        assert_eq!(c.dlt_topic_of("empty"), "empty.DLT");

        let key = KeySource::Custom(Arc::new(|_, r: &Record| {
            assert!(r.offset != 3, "no key at offset 3");
            Some(r.offset.to_string())
        }));
        let tp = TopicPartition::new("t", 0);
        let record = |offset| Record {
            offset,
            timestamp: 0,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        assert_eq!(key.key_of(&tp, &record(2)).as_deref(), Some("2"));
        assert_eq!(
            key.key_of(&tp, &record(3)),
            None,
            "handled without the check"
        );
    }
}
