//! The payment service on the `resilience::Processor`: the seed's fixes.
//!
//! | the seed's fix (Spring Kafka) | here |
//! |---|---|
//! | manual ack after success | the Processor commits an offset only after its record was handled or dead-lettered |
//! | `processed_events` check, process, mark | `PgDedup::process_once`: the `processed_events` row and the `payments` row commit in **one** transaction |
//! | `FixedBackOff(…, 3)` | [`fixed_retries`]: 3 retries 500 ms apart |
//! | `orders.created.DLT` | `ProcessorConfig::dead_letter`: `kafka_dlt-*` provenance headers |
//!
//! And one the seed does not have: polling never waits for a handler, so a
//! payment slower than `max.poll.interval.ms` does not get the member
//! dropped from its group.
//!
//! Inside the transaction the `processed_events` insert comes first and
//! takes the row lock: if a rebalance hands the same event to the other
//! instance while this one is still charging, the other one waits on that
//! lock, then sees the row and skips. The gateway is charged once.

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::ProducerConfig;
use resilience::consumer_core::{ConsumerConfig, TopicPartition};
use resilience::dedup::postgres::{self, Outcome, PgDedup};
use resilience::retry::BackoffPolicy;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};

use crate::gateway::Gateway;
use crate::order::OrderCreated;
use crate::payments;
use kafka_wire::records::Record;

/// The payment instances' consumer group.
pub const GROUP: &str = "payment-service";

/// Payments handled at once per instance (records of one partition stay in
/// order). The inbox gets as many connections: each holds one until its
/// transaction commits.
pub const CONCURRENCY: usize = 8;

/// 3 retries 500 ms apart, then the DLT (Spring's `FixedBackOff(500, 3)`):
/// 4 attempts in all.
pub fn fixed_retries() -> BackoffPolicy {
    BackoffPolicy::fixed(Duration::from_millis(500), 3)
}

/// The Processor's settings for the payment service: fixed-backoff
/// retries, the DLT (`<topic>.DLT`, created if missing) through `dlt`, and
/// a revoke that waits at most 2 s for running payments, less than
/// `max.poll.interval.ms` (3 s), so a rebalance never waits for a slow
/// gateway. A payment still running then finishes on its own; its offset
/// is not committed, and the next owner's attempt waits on the inbox's row
/// lock and skips it.
pub fn processor_config(
    consumer: ConsumerConfig,
    topic: &str,
    dlt: ProducerConfig,
) -> ProcessorConfig {
    ProcessorConfig::new(consumer, &[topic])
        .concurrency(CONCURRENCY)
        .backoff(fixed_retries())
        .dead_letter(dlt)
        .drain_timeout(Duration::from_secs(2))
}

/// Pays one order per record, at most once per event id.
#[derive(Debug)]
pub struct PaymentHandler {
    inbox: Arc<PgDedup>,
    gateway: Arc<Gateway>,
    instance: String,
}

impl PaymentHandler {
    /// Connect the inbox (one connection per concurrent payment) and create
    /// `payments` and `processed_events` if missing.
    ///
    /// # Errors
    /// PostgreSQL is unreachable or refuses.
    pub async fn connect(
        pg_url: &str,
        gateway: Arc<Gateway>,
        instance: &str,
    ) -> anyhow::Result<PaymentHandler> {
        payments::connect(pg_url).await?; // creates the table
        let inbox = PgDedup::connect(pg_url, CONCURRENCY)
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(PaymentHandler {
            inbox: Arc::new(inbox),
            gateway,
            instance: instance.to_string(),
        })
    }
}

impl Handler for PaymentHandler {
    async fn handle(&self, _tp: &TopicPartition, record: &Record) -> Result<(), HandlerError> {
        // Not an order: retrying cannot help, dead-letter it now.
        let order = OrderCreated::from_record(record).map_err(HandlerError::Deserialization)?;
        // The closure's future may not borrow from here (it must live
        // as long as any transaction): it gets its own handles.
        let (gateway, instance, charged) =
            (self.gateway.clone(), self.instance.clone(), order.clone());
        let outcome = self
            .inbox
            .process_once(&order.event_id, move |tx| {
                Box::pin(async move {
                    gateway
                        .charge(&charged)
                        .await
                        .map_err(HandlerError::retryable)?;
                    // A lost connection waits (Unavailable); see classify.
                    payments::insert(tx, &charged, &instance)
                        .await
                        .map_err(|e| postgres::classify(&e))?;
                    Ok(())
                })
            })
            .await;
        match &outcome {
            Ok(Outcome::Applied(())) => {
                tracing::info!(event_id = %order.event_id, order = %order.order_id, instance = %self.instance, "PROCESSED")
            }
            Ok(Outcome::AlreadyProcessed) => {
                tracing::info!(event_id = %order.event_id, instance = %self.instance, "already paid: skipped")
            }
            // The Processor retries it, then dead-letters it (logged by
            // the DLT consumer): one attempt failing is no alarm yet.
            Err(e) => {
                tracing::info!(event_id = %order.event_id, instance = %self.instance, error = %e, "payment attempt failed")
            }
        }
        outcome.map(|_| ())
    }
}

/// A payment instance: the Processor with [`PaymentHandler`]. Call
/// `run(shutdown)` on it; `stats()` counts handled and dead-lettered records.
///
/// # Errors
/// PostgreSQL is unreachable or refuses.
pub async fn processor(
    cfg: ProcessorConfig,
    pg_url: &str,
    gateway: Arc<Gateway>,
    instance: &str,
) -> anyhow::Result<Processor> {
    let handler = PaymentHandler::connect(pg_url, gateway, instance).await?;
    Ok(Processor::new(cfg, handler))
}
