//! The consumer side: a batch handler that enriches, stores and counts,
//! and the `Processor` settings every instance shares.
//!
//! One batch is up to [`MAX_BATCH`] consecutive records of one partition.
//! The handler
//! 1. decodes and enriches each record ([`Enriched`]),
//! 2. inserts the batch into PostgreSQL in one statement (`ON CONFLICT
//!    DO NOTHING`: what a redelivery brings again is skipped),
//! 3. adds every event of the batch to its Redis bucket (a set of ids:
//!    idempotent too, see [`crate::aggregates`]),
//!
//! and only then returns `Ok`, after which the runtime may commit the
//! batch's offsets. PostgreSQL being down (a lost or refused connection)
//! is `HandlerError::Unavailable` (the `?` converts it): the batch waits
//! for the database, retried after 1, 2, 4, 8, 16 s and then every 30 s, and is
//! never dead-lettered, while the partition's queue fills and backpressure
//! pauses fetching. Any other failure at 2 or 3 is retried after 1, 2 and
//! 4 s (the partition waits, the others go on), then written to `logs-dlq`
//! with provenance headers; dead-letters in a row quarantine the partition
//! for [`QUARANTINE`].

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::records::Record;
use kafka_wire::ProducerConfig;
use resilience::config::Quarantine;
use resilience::consumer_core::{ConsumerConfig, TopicPartition};
use resilience::processor::BatchHandler;
use resilience::retry::BackoffPolicy;
use resilience::{HandlerError, Processor, ProcessorConfig};

use crate::aggregates::Aggregates;
use crate::event::{Enriched, LogEvent};
use crate::metrics::{BATCH_FAILURES, END_TO_END_SECONDS, EVENTS_STORED};
use crate::store::Store;

/// Workers per instance (the seed's thread pool of 10).
pub const WORKERS: usize = 10;
/// Records per batch (the seed's batch size).
pub const MAX_BATCH: usize = 500;
/// A partition whose batches keep being dead-lettered after all their
/// retries (Redis down longer than the 7 s of retries, say) waits this
/// long before its next batch, instead of dead-lettering everything behind.
pub const QUARANTINE: Quarantine = Quarantine {
    after_failures: 1,
    pause: Duration::from_secs(10),
};

/// Enrich, store, count.
#[derive(Debug)]
pub struct LogHandler {
    pub store: Arc<Store>,
    pub aggregates: Arc<Aggregates>,
    /// Written to every row's `processed_by`.
    pub instance: String,
}

impl LogHandler {
    fn enrich(
        &self,
        tp: &TopicPartition,
        records: &[Record],
    ) -> Result<Vec<Enriched>, HandlerError> {
        records
            .iter()
            .map(|r| {
                let body = r
                    .value
                    .as_deref()
                    .ok_or(HandlerError::Deserialization(format!(
                        "offset {}: no value",
                        r.offset
                    )))?;
                let event: LogEvent = serde_json::from_slice(body).map_err(|e| {
                    HandlerError::Deserialization(format!("offset {}: {e}", r.offset))
                })?;
                Ok(Enriched::new(event, tp.partition, r.offset, &self.instance))
            })
            .collect()
    }

    async fn handle(&self, tp: &TopicPartition, records: &[Record]) -> Result<(), HandlerError> {
        let fail = |stage: &'static str| metrics::counter!(BATCH_FAILURES, "stage" => stage);
        let rows = self
            .enrich(tp, records)
            .inspect_err(|_| fail("decode").increment(1))?;
        let inserted = self
            .store
            .insert(&rows)
            .await
            .inspect_err(|e| {
                fail("postgres").increment(1);
                tracing::warn!(%tp, rows = rows.len(), error = %e, "batch insert failed; the runtime retries it");
            })?;
        let now = crate::now_micros();
        let e2e = metrics::histogram!(END_TO_END_SECONDS);
        for r in rows.iter().filter(|r| inserted.contains(&r.event.id)) {
            e2e.record((now - r.event.accepted_us) as f64 / 1e6);
        }
        metrics::counter!(EVENTS_STORED).increment(inserted.len() as u64);
        self.aggregates.add(&rows).await.map_err(|e| {
            fail("redis").increment(1);
            HandlerError::retryable(format!("redis: {e}"))
        })?;
        Ok(())
    }
}

impl BatchHandler for LogHandler {
    async fn handle_batch(
        &self,
        tp: &TopicPartition,
        records: &[Record],
    ) -> Result<(), HandlerError> {
        self.handle(tp, records).await
    }
}

/// The runtime's settings as properties (`resilience::config::PROPERTIES`),
/// beside the Kafka ones: [`WORKERS`] batches at once, one partition's
/// records in order.
pub const PROCESSOR: &[(&str, &str)] = &[
    ("processor.concurrency", "10"),
    ("processor.ordering", "partition"),
    ("processor.drain.timeout.ms", "10000"),
];

/// The settings of one instance: [`PROCESSOR`]; retries after exactly 1,
/// 2 and 4 s (`BackoffPolicy::exponential`, no jitter: the properties
/// `processor.retry.backoff.ms=1000` and `processor.retry.attempts=4` would
/// keep the default ±20 % jitter, and no property sets it), then dead
/// letters to `dlq` through `dlt_producer`; [`QUARANTINE`] (no property
/// for it either).
///
/// Per-partition ordering: a batch is consecutive records of one
/// partition, so with 12 partitions over 3 instances at most 4 of an
/// instance's 10 workers are busy at once (all 10 with 1 instance).
///
/// # Errors
/// A bad property, naming it.
pub fn processor_config(
    consumer: ConsumerConfig,
    topic: &str,
    dlq: &str,
    dlt_producer: ProducerConfig,
) -> anyhow::Result<ProcessorConfig> {
    let mut cfg = ProcessorConfig::new(consumer, &[topic])
        .properties(PROCESSOR.iter().copied())
        .map_err(anyhow::Error::msg)?
        .backoff(BackoffPolicy::exponential(Duration::from_secs(1), 3))
        .dead_letter(dlt_producer)
        .dlt_topic(dlq);
    cfg.quarantine = QUARANTINE;
    Ok(cfg)
}

/// One consumer instance.
pub fn processor(cfg: ProcessorConfig, handler: LogHandler) -> Processor {
    Processor::batched(cfg, handler, MAX_BATCH)
}
