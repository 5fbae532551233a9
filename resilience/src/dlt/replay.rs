//! Send dead records back once their cause is fixed: exactly once, with
//! their provenance, skipping records an earlier replay already sent.
//!
//! How it stays exactly once, across restarts and filters:
//! - each replayed record gets a **marker** in `<dlt>.replayed` (a
//!   compacted topic made on first use; key `<partition>:<offset>` of the
//!   DLT record, value the topic it went to);
//! - the record and its marker are written **in one Kafka transaction**
//!   (`transactional.id` = `dlt-replay-<dlt>`), so either both land or
//!   neither does; a replay that dies midway leaves no half-replayed record;
//! - a replay reads the markers first and skips what they name, so a second
//!   replay (or one with another `--where`) never sends a record twice;
//! - starting a replay fences an older one still running for the same DLT
//!   (the transactional id's epoch), so two replays cannot race.
//!
//! Consumers of the target topic see a replayed record exactly once with
//! `isolation.level=read_committed`; a `read_uncommitted` consumer may also
//! see records of a replay transaction that aborted.
//!
//! Where a record goes: with `to`, there; without, back to the topic its
//! `kafka_dlt-original-topic` names, but only when that is one of the
//! topics this DLT is the DLT of ([`ReplayOptions::sources`]; by default
//! `X` for a DLT named `X.DLT`, the runtime's naming,
//! [`super::dlt_topic`]). Anyone who may write to the DLT (or, before the
//! runtime stopped believing them, to its source topic) can put any topic
//! in that header; a replay that followed it would write, with the
//! operator's rights, into a topic that writer may not: `payments` from
//! `orders.DLT`. Such records are refused and counted
//! ([`ReplayReport::refused`]), and stay for a replay with `to`.
//!
//! A replayed record keeps its key, value, timestamp and headers, including
//! the `kafka_dlt-original-*` provenance (for the reader; the runtime does
//! not believe them on a source topic, so if it fails again its dead letter
//! names where the replayed copy was read), minus the `retry_topic-*` retry
//! state (it gets its retries afresh), plus
//! `kafka_dlt-replayed-from: <dlt>:<partition>:<offset>`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use consumer_core::{Consumer, ConsumerConfig, ConsumerError, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{
    Client, ClientConfigBuilder, IsolationLevel, KafkaCode, NewTopic, OffsetSpec, Producer,
    ProducerConfig, ProducerRecord,
};

use super::{DeadRecord, Filter};

/// The header a replayed record carries: `<dlt>:<partition>:<offset>`.
pub const REPLAYED_FROM: &str = "kafka_dlt-replayed-from";

/// The marker topic of `dlt`: `<dlt>.replayed`.
pub fn marker_topic(dlt: &str) -> String {
    format!("{dlt}.replayed")
}

/// What to replay and where.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// The dead-letter topic to read.
    pub dlt: String,
    /// Where records go; `None`: each to its original topic
    /// (`kafka_dlt-original-topic`), into its original partition when that
    /// partition exists, if that topic is one of [`Self::sources`].
    pub to: Option<String>,
    /// Without `to`: the topics records may go back to, those the DLT
    /// takes dead letters of. Empty: the one the DLT's name says
    /// ([`default_sources`]: `X` for `X.DLT`); give them for a DLT named
    /// otherwise (`ProcessorConfig::dlt_topic`).
    pub sources: Vec<String>,
    /// Which records to take (all when empty).
    pub filter: Filter,
    /// Stop after this many records replayed (records).
    pub limit: Option<u64>,
    /// Count what would be replayed, send nothing.
    pub dry_run: bool,
}

/// What a replay did, in records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Sent back now (or, with `dry_run`, would be).
    pub replayed: u64,
    /// Skipped: an earlier replay sent them (a marker names them).
    pub already_replayed: u64,
    /// Skipped: the filter did not take them.
    pub filtered_out: u64,
    /// Skipped: no `to` was given and they name no original topic.
    pub no_target: u64,
    /// Refused: no `to` was given and their `kafka_dlt-original-topic`
    /// names a topic that is not one of the DLT's sources (forged, or a
    /// DLT shared by several topics: give `sources` or `to`).
    pub refused: u64,
    /// Replayed per target topic.
    pub by_target: BTreeMap<String, u64>,
}

/// A replay's or a read's failure: the protocol client's, or the
/// consumer's (a fetch it does not retry).
pub type Result<T> = std::result::Result<T, ConsumerError>;

/// The topics a DLT named `dlt` takes dead letters of, by the runtime's
/// naming ([`super::dlt_topic`]): `["orders"]` for `orders.DLT`, none for
/// a DLT named otherwise.
pub fn default_sources(dlt: &str) -> Vec<String> {
    dlt.strip_suffix(".DLT")
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default()
}

/// Where a dead record goes, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// To this topic.
    To(String),
    /// No `to`, and no `kafka_dlt-original-topic`.
    None,
    /// No `to`, and its `kafka_dlt-original-topic` is not a source.
    Refused,
}

/// Where `dead` goes: `to` if given, else its original topic when that is
/// one of `sources`.
fn target(to: Option<&str>, sources: &[String], dead: &DeadRecord) -> Target {
    match (to, &dead.origin) {
        (Some(to), _) => Target::To(to.to_string()),
        (None, Some(origin)) if sources.contains(&origin.topic) => Target::To(origin.topic.clone()),
        (None, Some(_)) => Target::Refused,
        (None, None) => Target::None,
    }
}

/// Records per replay transaction (records).
const BATCH: usize = 500;
/// How long a poll waits for the next records (ms).
const POLL: Duration = Duration::from_millis(500);

/// Replay the dead records of `options.dlt` (read from its log start to
/// its last stable offset when the replay starts) that the filter takes
/// and no earlier replay sent. `client` names the cluster (bootstrap,
/// TLS, SASL). Without `to`, a record goes back only to one of the DLT's
/// sources ([`ReplayOptions::sources`]); one naming another topic is
/// refused and counted ([`ReplayReport::refused`]), not sent.
///
/// # Errors
/// [`ConsumerError::Wire`]: the DLT does not exist
/// (UNKNOWN_TOPIC_OR_PARTITION), the marker topic cannot be created,
/// a send or commit failed (the open transaction is aborted: nothing of
/// it is visible, and a new replay takes those records again), or another
/// replay of the same DLT fenced this one. [`ConsumerError::Fatal`]: no
/// `to` and no `sources` for a DLT not named `X.DLT` (every record would
/// be refused: say where its records may go).
pub async fn replay(client: ClientConfigBuilder, options: &ReplayOptions) -> Result<ReplayReport> {
    let dlt = options.dlt.as_str();
    let sources = if options.sources.is_empty() {
        default_sources(dlt)
    } else {
        options.sources.clone()
    };
    if options.to.is_none() && sources.is_empty() {
        return Err(ConsumerError::Fatal(format!(
            "cannot tell which topics {dlt:?} is the DLT of (it is not named <topic>.DLT): \
             give its source topics (`sources`, kafka-lab `--source TOPIC`) or a target (`to`, `--to TOPIC`); \
             a record goes back only to a source, whatever its headers say"
        )));
    }
    let admin = Client::connect(client.clone().build()?).await?;
    let markers = marker_topic(dlt);
    let mut producer = None;
    if !options.dry_run {
        ensure_marker_topic(&admin, &markers).await?;
        let p = Producer::connect(
            ProducerConfig::builder()
                .client(|_| client.clone())
                .transactional_id(format!("dlt-replay-{dlt}"))
                .build()?,
        )
        .await?;
        // Fences an older replay of this DLT before the markers are read:
        // its open transaction is aborted, its commits refused from now.
        p.init_transactions().await?;
        producer = Some(p);
    }
    let done = replayed_markers(client.clone(), &admin, dlt).await?;
    let mut report = ReplayReport::default();
    let mut partitions_of: BTreeMap<String, Option<usize>> = BTreeMap::new();
    let mut pending: Vec<(DeadRecord, String)> = Vec::new();
    let mut reached_limit = false;
    let mut reader = TopicReader::open(client.clone(), &admin, dlt).await?;
    while let Some(batch) = reader.next().await? {
        for (partition, record) in batch {
            if reached_limit {
                break;
            }
            if done.contains_key(&(partition, record.offset)) {
                report.already_replayed += 1;
                continue;
            }
            let dead = DeadRecord::parse(partition, record);
            if !options.filter.matches(&dead) {
                report.filtered_out += 1;
                continue;
            }
            let target = match target(options.to.as_deref(), &sources, &dead) {
                Target::To(t) => t,
                Target::None => {
                    report.no_target += 1;
                    continue;
                }
                Target::Refused => {
                    report.refused += 1;
                    continue;
                }
            };
            report.replayed += 1;
            *report.by_target.entry(target.clone()).or_default() += 1;
            pending.push((dead, target));
            reached_limit = options.limit.is_some_and(|l| report.replayed >= l);
        }
        if let Some(p) = &producer {
            for chunk in pending.chunks(BATCH) {
                send_in_transaction(p, &admin, dlt, &markers, chunk, &mut partitions_of).await?;
            }
        }
        pending.clear();
        if reached_limit {
            break;
        }
    }
    reader.close().await;
    if let Some(p) = producer {
        p.close().await;
    }
    Ok(report)
}

/// Every record of `dlt` that a replay sent: `(partition, offset)` → the
/// topic it went to, from the marker topic (empty when there is none yet).
///
/// # Errors
/// Reading the marker topic failed.
pub async fn replayed_markers(
    client: ClientConfigBuilder,
    admin: &Client,
    dlt: &str,
) -> Result<BTreeMap<(i32, i64), String>> {
    let markers = marker_topic(dlt);
    let mut done = BTreeMap::new();
    let mut reader = match TopicReader::open(client, admin, &markers).await {
        Ok(r) => r,
        Err(ConsumerError::Wire(e)) if e.code() == Some(KafkaCode::UnknownTopicOrPartition) => {
            return Ok(done)
        }
        Err(e) => return Err(e),
    };
    while let Some(batch) = reader.next().await? {
        for (_, r) in batch {
            if let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) {
                if let Some((p, o)) = key.split_once(':') {
                    if let (Ok(p), Ok(o)) = (p.parse(), o.parse()) {
                        let target = r.value.as_deref().map(String::from_utf8_lossy);
                        done.insert((p, o), target.unwrap_or_default().into_owned());
                    }
                }
            }
        }
    }
    reader.close().await;
    Ok(done)
}

async fn ensure_marker_topic(admin: &Client, markers: &str) -> Result<()> {
    match admin
        .create_topic(NewTopic::new(markers, 1).config("cleanup.policy", "compact"))
        .await
    {
        Err(e) if e.code() == Some(KafkaCode::TopicAlreadyExists) => Ok(()),
        other => Ok(other?),
    }
}

/// The record to send for `dead`, and its marker.
fn replayed(
    dlt: &str,
    markers: &str,
    dead: &DeadRecord,
    target: &str,
    partition: Option<i32>,
) -> (ProducerRecord, ProducerRecord) {
    let r = &dead.record;
    let from = format!("{dlt}:{}:{}", dead.partition, r.offset);
    let mut out = ProducerRecord::new(target);
    out.partition = partition;
    out.key = r.key.clone();
    out.value = r.value.clone();
    out.timestamp = Some(r.timestamp);
    out.headers = r
        .headers
        .iter()
        .filter(|h| {
            !h.key.starts_with(b"retry_topic-") && h.key.as_ref() != REPLAYED_FROM.as_bytes()
        })
        .map(|h| (h.key_str().into_owned(), h.value.clone()))
        .collect();
    out.headers
        .push((REPLAYED_FROM.to_string(), Some(Bytes::from(from))));
    let marker = ProducerRecord::new(markers)
        .key(format!("{}:{}", dead.partition, r.offset))
        .value(target.to_string());
    (out, marker)
}

async fn send_in_transaction(
    producer: &Producer,
    admin: &Client,
    dlt: &str,
    markers: &str,
    chunk: &[(DeadRecord, String)],
    partitions_of: &mut BTreeMap<String, Option<usize>>,
) -> Result<()> {
    producer.begin_transaction().await?;
    let sent = async {
        let mut deliveries = Vec::with_capacity(chunk.len() * 2);
        for (dead, target) in chunk {
            // Back into its original partition when it goes back to its
            // original topic and that partition still exists.
            let partition = match &dead.origin {
                Some(o) if o.topic == *target => {
                    let count = match partitions_of.get(target) {
                        Some(n) => *n,
                        None => {
                            let md = admin
                                .refresh_metadata(Some(std::slice::from_ref(target)))
                                .await?;
                            let n = md.partition_count(target);
                            partitions_of.insert(target.clone(), n);
                            n
                        }
                    };
                    count
                        .filter(|n| usize::try_from(o.partition).is_ok_and(|p| p < *n))
                        .map(|_| o.partition)
                }
                _ => None,
            };
            let (record, marker) = replayed(dlt, markers, dead, target, partition);
            deliveries.push(producer.send(record).await?);
            deliveries.push(producer.send(marker).await?);
        }
        for d in deliveries {
            d.await?;
        }
        Ok::<_, ConsumerError>(())
    }
    .await;
    match sent {
        Ok(()) => Ok(producer.commit_transaction().await?),
        Err(e) => {
            let _ = producer.abort_transaction().await;
            Err(e)
        }
    }
}

/// Reads a whole topic without a group, `read_committed`, from each
/// partition's log start to its last stable offset when opened.
#[derive(Debug)]
pub struct TopicReader {
    consumer: Option<Consumer>,
    /// Partition → offset to stop at (exclusive).
    ends: BTreeMap<i32, i64>,
    topic: String,
}

impl TopicReader {
    /// Open `topic`.
    ///
    /// # Errors
    /// UNKNOWN_TOPIC_OR_PARTITION when it does not exist; connection errors.
    pub async fn open(
        client: ClientConfigBuilder,
        admin: &Client,
        topic: &str,
    ) -> Result<TopicReader> {
        let starts = admin
            .list_offsets_with(topic, OffsetSpec::Earliest, IsolationLevel::ReadCommitted)
            .await?;
        let ends = admin
            .list_offsets_with(topic, OffsetSpec::Latest, IsolationLevel::ReadCommitted)
            .await?;
        let start_of: BTreeMap<i32, i64> = starts.into_iter().collect();
        let ends: BTreeMap<i32, i64> = ends
            .into_iter()
            .filter(|(p, end)| start_of.get(p).is_some_and(|s| s < end))
            .collect();
        let consumer = if ends.is_empty() {
            None
        } else {
            let mut c = Consumer::connect(
                ConsumerConfig::builder()
                    .client(|_| client)
                    .set("isolation.level", "read_committed")?
                    .set("auto.offset.reset", "earliest")?
                    .build()?,
            )
            .await?;
            let parts: Vec<TopicPartition> = ends
                .keys()
                .map(|p| TopicPartition::new(topic, *p))
                .collect();
            c.assign(&parts);
            for tp in &parts {
                c.seek(tp, start_of[&tp.partition]);
            }
            Some(c)
        };
        Ok(TopicReader {
            consumer,
            ends,
            topic: topic.to_string(),
        })
    }

    /// The next records below the end, as `(partition, record)`; `None`
    /// once every partition reached its end.
    ///
    /// # Errors
    /// Fetch errors the consumer does not retry.
    pub async fn next(&mut self) -> Result<Option<Vec<(i32, Record)>>> {
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        loop {
            let finished: Vec<i32> = self
                .ends
                .iter()
                .filter(|(p, end)| {
                    consumer
                        .position(&TopicPartition::new(&self.topic, **p))
                        .is_some_and(|pos| pos >= **end)
                })
                .map(|(p, _)| *p)
                .collect();
            for p in finished {
                self.ends.remove(&p);
                consumer.pause(&[TopicPartition::new(&self.topic, p)]);
            }
            if self.ends.is_empty() {
                return Ok(None);
            }
            let polled = consumer.poll(POLL).await?;
            let mut out = Vec::new();
            for batch in polled {
                let Some(end) = self.ends.get(&batch.tp.partition).copied() else {
                    continue;
                };
                out.extend(
                    batch
                        .records
                        .into_iter()
                        .filter(|r| r.offset < end)
                        .map(|r| (batch.tp.partition, r)),
                );
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
    }

    /// Close the consumer.
    pub async fn close(self) {
        if let Some(c) = self.consumer {
            c.close(Duration::from_secs(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlt::{consumed, dead_letter};
    use crate::retry::HandlerError;
    use kafka_wire::records::Header;

    #[test]
    fn a_replayed_record_keeps_its_provenance_and_drops_its_retry_state() {
        let rec = Record {
            offset: 9,
            timestamp: 77,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![Header {
                key: Bytes::from_static(b"trace"),
                value: Some(Bytes::from_static(b"t")),
            }],
        };
        let d = dead_letter(
            "orders.DLT",
            "orders",
            1,
            "g",
            &rec,
            &HandlerError::Retryable("down".into()),
            3,
        );
        let dead = DeadRecord::parse(0, consumed(&d, 41));
        let (out, marker) = replayed(
            "orders.DLT",
            "orders.DLT.replayed",
            &dead,
            "orders",
            Some(1),
        );
        assert_eq!((out.topic.as_str(), out.partition), ("orders", Some(1)));
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.timestamp, Some(77));
        let has = |k: &str| out.headers.iter().any(|(n, _)| n == k);
        assert!(
            has("trace") && has(crate::dlt::ORIGINAL_TOPIC) && has(crate::dlt::ORIGINAL_OFFSET)
        );
        assert!(!has(crate::dlt::ATTEMPTS), "retries start afresh");
        let from = out
            .headers
            .iter()
            .find(|(n, _)| n == REPLAYED_FROM)
            .unwrap();
        assert_eq!(from.1.as_deref(), Some(&b"orders.DLT:0:41"[..]));
        assert_eq!(marker.key.as_deref(), Some(&b"0:41"[..]));
        assert_eq!(marker.value.as_deref(), Some(&b"orders"[..]));
        assert_eq!(marker_topic("orders.DLT"), "orders.DLT.replayed");
    }

    #[test]
    fn a_record_goes_back_only_to_a_source_of_its_dlt_or_to_to() {
        let rec = |headers: Vec<Header>| Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: None,
            headers,
        };
        let h = |k: &str, v: &[u8]| Header {
            key: Bytes::from(k.to_string()),
            value: Some(Bytes::copy_from_slice(v)),
        };
        let naming = |topic: &str| {
            DeadRecord::parse(
                0,
                rec(vec![
                    h(crate::dlt::ORIGINAL_TOPIC, topic.as_bytes()),
                    h(crate::dlt::ORIGINAL_PARTITION, &0i32.to_be_bytes()),
                    h(crate::dlt::ORIGINAL_OFFSET, &0i64.to_be_bytes()),
                ]),
            )
        };
        let sources = default_sources("orders.DLT");
        assert_eq!(sources, ["orders"]);
        assert_eq!(
            target(None, &sources, &naming("orders")),
            Target::To("orders".into())
        );
        // A forged header naming another topic: refused, not followed.
        assert_eq!(target(None, &sources, &naming("payments")), Target::Refused);
        assert_eq!(
            target(None, &sources, &naming("orders.DLT")),
            Target::Refused
        );
        assert_eq!(
            target(None, &sources, &DeadRecord::parse(0, rec(vec![]))),
            Target::None
        );
        // The operator's --to is where everything goes.
        assert_eq!(
            target(Some("fixed"), &sources, &naming("payments")),
            Target::To("fixed".into())
        );
        // A DLT named otherwise has no sources unless given.
        assert!(default_sources("logs-dlq").is_empty() && default_sources(".DLT").is_empty());
        assert_eq!(target(None, &[], &naming("orders")), Target::Refused);
    }
}
