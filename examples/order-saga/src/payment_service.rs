//! The payment service: charges an order when it is created, and refunds
//! it when the inventory says the stock is short (the saga's compensation).
//! Stateless as a service: what it did lives in the payment provider's
//! ledger (`saga_payment_ledger`, standing in for a card gateway) and in
//! the inbox.
//!
//! ## Exactly once where it matters: the PostgreSQL inbox
//!
//! Kafka redelivers: after a crash before the offset commit, a rebalance
//! that moves a partition mid-record, or a producer that wrote an event
//! twice. A charge is a side effect *outside* Kafka, so Kafka transactions
//! (the transactional processor: consume, produce and commit offsets
//! atomically) cannot cover it: they make the *events* exactly once, but a
//! charge made before an aborted transaction stays made. So each charge
//! and refund goes through `PgDedup::process_once`: the inbox row
//! (`processed_events`, keyed `payment:<order id>:<event type>`) and the
//! ledger row commit in **one** PostgreSQL transaction. A redelivered
//! `OrderCreated` finds the row and charges nothing, across redeliveries
//! and restarts alike. (Against a real gateway, pass the same key as its
//! idempotency key.)
//!
//! The follow-up event is published *after* the transaction commits, also
//! when the inbox says "already processed": a crash between the commit and
//! the publish must not stall the saga. Events are therefore at least
//! once, and every consumer of them is idempotent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::records::Record;
use resilience::consumer_core::TopicPartition;
use resilience::dedup::postgres::{Outcome, PgDedup};
use resilience::retry::BackoffPolicy;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};
use tracing::Instrument;

use crate::db::{self, Entry};
use crate::event::{self, Event, EventType};
use crate::{Publisher, ServiceConfig, Topics};

/// The payment instances' consumer group (under the run's prefix).
pub const SERVICE: &str = "payment-service";

/// Records handled at once (one connection of the inbox each).
pub const CONCURRENCY: usize = 8;

/// Pays and refunds, each at most once per order.
#[derive(Debug)]
pub struct PaymentHandler {
    inbox: Arc<PgDedup>,
    publisher: Publisher,
    topics: Topics,
}

/// The inbox key of one step for one order.
pub fn inbox_key(order_id: &str, event_type: EventType) -> String {
    format!("payment:{order_id}:{event_type}")
}

impl PaymentHandler {
    async fn step(&self, event: &Event, entry: Entry) -> Result<(), HandlerError> {
        let order = event.order.clone();
        let outcome = self
            .inbox
            .process_once(&inbox_key(&order.order_id, event.event_type), move |tx| {
                Box::pin(async move {
                    db::book(tx, &order, entry).await?;
                    Ok(())
                })
            })
            .await?;
        let (next, what) = match entry {
            Entry::Charge => (EventType::PaymentCharged, "charged"),
            Entry::Refund => (EventType::PaymentRefunded, "refunded"),
        };
        match outcome {
            Outcome::Applied(()) => {
                tracing::info!(amount_cents = event.order.amount_cents, "{what}")
            }
            Outcome::AlreadyProcessed => {
                tracing::info!("already {what} (redelivery): not again, event re-published")
            }
        }
        self.publisher
            .publish(&self.topics.payments, &event.next(next))
            .await
    }
}

impl Handler for PaymentHandler {
    fn handle<'a>(
        &'a self,
        _tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let span = tracing::warn_span!("payment", correlation_id = %event::correlation_id(record));
        async move {
            let event = Event::from_record(record).map_err(HandlerError::Deserialization)?;
            tracing::debug!(order_id = %event.order.order_id, event_type = %event.event_type, "received");
            match event.event_type {
                EventType::OrderCreated => self.step(&event, Entry::Charge).await,
                // The compensation: stock is short, give the money back.
                EventType::StockInsufficient => self.step(&event, Entry::Refund).await,
                _ => Ok(()),
            }
        }
        .instrument(span)
    }
}

/// The Processor's settings: `orders` and `inventory`, 3 retries
/// (100 ms, 200 ms, 400 ms) for a database or broker hiccup.
///
/// # Errors
/// A bad property.
pub fn processor_config(cfg: &ServiceConfig) -> anyhow::Result<ProcessorConfig> {
    Ok(ProcessorConfig::new(
        cfg.consumer(SERVICE)?,
        &[&cfg.topics.orders, &cfg.topics.inventory],
    )
    .concurrency(CONCURRENCY)
    .backoff(BackoffPolicy::exponential(Duration::from_millis(100), 3))
    .startup_timeout(cfg.startup_timeout))
}

/// A payment instance: call `run(shutdown)` on it.
///
/// # Errors
/// PostgreSQL or (after `startup_timeout`) Kafka unreachable.
pub async fn processor(cfg: &ServiceConfig) -> anyhow::Result<Processor> {
    db::pool(&cfg.pg_url).await?; // creates the tables
    let inbox = PgDedup::connect(&cfg.pg_url, CONCURRENCY)
        .await
        .map_err(anyhow::Error::msg)?;
    let handler = PaymentHandler {
        inbox: Arc::new(inbox),
        publisher: cfg.connect_producer().await?,
        topics: cfg.topics.clone(),
    };
    Ok(Processor::new(processor_config(cfg)?, handler))
}
