//! Where records that fail go: the producer of the DLT and retry-topic
//! copies, the retry-topic index (which topic is which step of whose
//! chain), and one write of a copy. Which copy is the failure policy's
//! decision (`crate::failure`); retrying a write until it is acknowledged
//! is the worker's (unit.rs), fenced by the partition's epoch.

use std::collections::HashMap;
use std::sync::Mutex;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::{Producer, ProducerRecord};

use crate::config::ProcessorConfig;
use crate::dlt::ReadFrom;
use crate::failure::executor::Forward;
use crate::retry::HandlerError;

/// The DLT and retry-topic writer of a run.
pub(super) struct Forwarding {
    /// Writes to the DLT and the retry topics.
    producer: Option<Producer>,
    /// The consumer group, named in the headers of forwarded records.
    group: String,
    /// Retry topic → (source topic, step).
    retry_index: HashMap<String, (String, usize)>,
}

impl Forwarding {
    pub(super) fn new(cfg: &ProcessorConfig, producer: Option<Producer>, group: String) -> Self {
        let retry_index = cfg
            .retry_topics
            .as_ref()
            .map(|r| r.index(&cfg.topics))
            .unwrap_or_default();
        Self {
            producer,
            group,
            retry_index,
        }
    }

    /// The producer that writes to the DLT and the retry topics, if one is
    /// configured (the poll loop closes it at shutdown).
    pub(super) fn producer(&self) -> Option<&Producer> {
        self.producer.as_ref()
    }

    /// Whether `topic` is one of the run's retry topics.
    pub(super) fn is_retry_topic(&self, topic: &str) -> bool {
        self.retry_index.contains_key(topic)
    }

    /// The source topic of `topic` (itself, unless it is a retry topic),
    /// and its step in the retry chain.
    pub(super) fn source_of<'a>(&'a self, topic: &'a str) -> (&'a str, Option<usize>) {
        match self.retry_index.get(topic) {
            Some((src, step)) => (src.as_str(), Some(*step)),
            None => (topic, None),
        }
    }

    /// The copy of `record` (read from `tp`) to write where `to` says, and
    /// its topic: a retry-topic copy due `delay` after `now_ms`, or a dead
    /// letter to `dlt` counting `attempts` made here on top of those the
    /// record's headers carry (when they are the runtime's own: see
    /// [`ReadFrom`]). A record whose `retry_topic-attempts` leaves no room
    /// for more (a forged header) goes to the DLT, the
    /// [`crate::retry_topics::RetryHeaderError`] its error, and the
    /// `Forward` returned says so.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy<'a>(
        &self,
        to: Forward<'a>,
        dlt: &'a str,
        tp: &TopicPartition,
        record: &Record,
        err: &HandlerError,
        attempts: u32,
        now_ms: i64,
    ) -> (ProducerRecord, &'a str, Forward<'a>) {
        let from = match self.source_of(&tp.topic) {
            (source, Some(_)) => ReadFrom::retry_topic(&tp.topic, tp.partition, source),
            (_, None) => ReadFrom::source(&tp.topic, tp.partition),
        };
        let copy = match to {
            Forward::RetryTopic { topic, delay } => crate::retry_topics::to_retry_topic(
                topic,
                delay,
                now_ms,
                from,
                &self.group,
                record,
                err,
            )
            .map(|out| (out, topic, to)),
            Forward::DeadLetter { .. } => {
                crate::dlt::dead_letter_from(dlt, from, &self.group, record, err, attempts)
                    .map(|out| (out, dlt, to))
            }
        };
        copy.unwrap_or_else(|e| {
            tracing::warn!(%tp, offset = record.offset, error = %e, "a retry header the runtime cannot count on; dead-lettering the record");
            let e = HandlerError::NonRetryable(format!("{e}; it failed with: {}", err.message()));
            let out = crate::dlt::forward(dlt, &from.origin(record), &self.group, record, &e, u32::MAX);
            (
                out,
                dlt,
                Forward::DeadLetter {
                    counts_toward_quarantine: false,
                },
            )
        })
    }

    /// Write `out` once and wait for its acknowledgement. A copy too large
    /// for its target (it carries the provenance headers on top of the
    /// original, so a record near `max.message.bytes` grows past it) loses
    /// its value here, a header saying so (`kafka_dlt-value-dropped`: the
    /// value's size), so that the next write can succeed; the provenance
    /// headers point at the original record.
    ///
    /// # Errors
    /// The write's error as text; or no producer configured.
    ///
    /// # Cancel safety
    /// Cancel safe as far as the record goes: a cancelled write may still
    /// land, and a write after it repeats it (as any retried write does).
    pub(super) async fn write_once(
        &self,
        out: &Mutex<ProducerRecord>,
        tp: &TopicPartition,
        offset: i64,
        target: &str,
    ) -> Result<(), String> {
        let Some(p) = &self.producer else {
            return Err(
                "no dead-letter producer configured (ProcessorConfig::dead_letter)".to_string(),
            );
        };
        let record = out.lock().expect("record lock").clone();
        let sent = match p.send(record).await {
            Ok(delivery) => delivery.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match sent {
            Err(e) if crate::dlt::too_large(&e) => {
                let mut out = out.lock().expect("record lock");
                if crate::dlt::drop_value(&mut out) {
                    tracing::warn!(%tp, offset, target, error = %e, "the forwarded record is too large for its target; writing it again without its value (kafka_dlt-value-dropped)");
                }
                Err(e.to_string())
            }
            other => other.map_err(|e| e.to_string()),
        }
    }
}
