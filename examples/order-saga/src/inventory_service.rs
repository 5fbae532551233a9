//! The inventory service: owns product stock (`saga_stock`, per
//! warehouse) and reserves it for each paid order, answering
//! `StockReserved` or `StockInsufficient` (which makes the payment service
//! refund and the order service cancel).
//!
//! - **Exactly once per order:** the stock update and the reservation's
//!   outcome commit with the inbox row (`inventory:<order id>:PaymentCharged`)
//!   in one transaction. A redelivered `PaymentCharged` takes no stock and
//!   re-publishes the recorded outcome.
//! - **Poison:** the seed's `prod_ignore` makes the handler fail (a logic
//!   error): after 2 retries the record goes to `inventory.DLT` with its
//!   provenance headers, its offset is committed, and the service carries
//!   on with the next record. So does a record that is not an event at all,
//!   at once.
//! - **Slow on purpose:** [`InventoryOptions::delay`] sleeps before each
//!   record, and `concurrency` 1 handles one record at a time per instance:
//!   the seed's consumer-lag lab. More instances in the group share the
//!   partitions and drain the lag.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::records::Record;
use resilience::consumer_core::TopicPartition;
use resilience::dedup::postgres::{Outcome, PgDedup};
use resilience::retry::BackoffPolicy;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};
use tracing::Instrument;

use crate::db;
use crate::event::{self, Event, EventType, POISON_PRODUCT};
use crate::{Publisher, ServiceConfig, Topics};

/// The inventory instances' consumer group (under the run's prefix).
pub const SERVICE: &str = "inventory-service";

/// How an inventory instance runs.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// Whose stock (`saga_stock.warehouse`). Default `main`.
    pub warehouse: String,
    /// Slept before each record (the lag lab). Default 0.
    pub delay: Duration,
    /// Records handled at once. Default 4; the lag lab uses 1.
    pub concurrency: usize,
    /// For the logs.
    pub instance: String,
}

impl Default for InventoryOptions {
    fn default() -> Self {
        InventoryOptions {
            warehouse: "main".into(),
            delay: Duration::ZERO,
            concurrency: 4,
            instance: "inventory-1".into(),
        }
    }
}

/// Reserves stock, once per order.
#[derive(Debug)]
pub struct InventoryHandler {
    inbox: PgDedup,
    db: Arc<db::Pool>,
    publisher: Publisher,
    topics: Topics,
    opts: InventoryOptions,
}

impl InventoryHandler {
    async fn reserve(&self, event: &Event) -> Result<(), HandlerError> {
        if event.order.product_id == POISON_PRODUCT {
            // The seed's "logic error": retried, then dead-lettered.
            return Err(HandlerError::retryable(format!(
                "inventory cannot handle product {POISON_PRODUCT} (order {})",
                event.order.order_id
            )));
        }
        let (order, warehouse) = (event.order.clone(), self.opts.warehouse.clone());
        let key = format!("inventory:{}:{}", order.order_id, event.event_type);
        let outcome = self
            .inbox
            .process_once(&key, move |tx| {
                Box::pin(async move { Ok(db::reserve(tx, &warehouse, &order).await?) })
            })
            .await?;
        let reserved = match outcome {
            Outcome::Applied(reserved) => reserved,
            Outcome::AlreadyProcessed => {
                tracing::info!("already handled (redelivery): re-publishing its outcome");
                db::reservation(&self.db, &event.order.order_id)
                    .await?
                    .ok_or_else(|| HandlerError::retryable("inbox row without a reservation"))?
            }
        };
        let next = if reserved {
            tracing::info!(product = %event.order.product_id, quantity = event.order.quantity, "stock reserved");
            EventType::StockReserved
        } else {
            tracing::warn!(product = %event.order.product_id, quantity = event.order.quantity, "insufficient stock");
            EventType::StockInsufficient
        };
        self.publisher
            .publish(&self.topics.inventory, &event.next(next))
            .await
    }
}

impl Handler for InventoryHandler {
    fn handle<'a>(
        &'a self,
        _tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let span = tracing::warn_span!("inventory", correlation_id = %event::correlation_id(record), instance = %self.opts.instance);
        async move {
            let event = Event::from_record(record).map_err(HandlerError::Deserialization)?;
            if event.event_type != EventType::PaymentCharged {
                return Ok(());
            }
            if !self.opts.delay.is_zero() {
                tokio::time::sleep(self.opts.delay).await;
            }
            self.reserve(&event).await
        }
        .instrument(span)
    }
}

/// The Processor's settings: `payments`, 2 retries 50 ms apart, then
/// `inventory.DLT`.
///
/// # Errors
/// A bad property.
pub fn processor_config(
    cfg: &ServiceConfig,
    opts: &InventoryOptions,
) -> anyhow::Result<ProcessorConfig> {
    Ok(
        ProcessorConfig::new(cfg.consumer(SERVICE)?, &[&cfg.topics.payments])
            .concurrency(opts.concurrency.max(1))
            .backoff(BackoffPolicy::fixed(Duration::from_millis(50), 2))
            .dead_letter(cfg.producer()?)
            .dlt_topic(cfg.topics.inventory_dlt.clone())
            .drain_timeout(Duration::from_secs(2))
            .startup_timeout(cfg.startup_timeout),
    )
}

/// An inventory instance: call `run(shutdown)` on it.
///
/// # Errors
/// PostgreSQL or (after `startup_timeout`) Kafka unreachable.
pub async fn processor(cfg: &ServiceConfig, opts: InventoryOptions) -> anyhow::Result<Processor> {
    let db = Arc::new(db::pool(&cfg.pg_url).await?);
    let inbox = PgDedup::connect(&cfg.pg_url, opts.concurrency.max(1))
        .await
        .map_err(anyhow::Error::msg)?;
    let pcfg = processor_config(cfg, &opts)?;
    let handler = InventoryHandler {
        inbox,
        db,
        publisher: cfg.connect_producer().await?,
        topics: cfg.topics.clone(),
        opts,
    };
    Ok(Processor::new(pcfg, handler))
}
