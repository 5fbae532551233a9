//! The consumer: a [`Processor`] whose handler decodes each order with the
//! registry's Avro deserializer, meets the order's simulated [`Fate`], and
//! keeps the running average.
//!
//! | what happens | how the runtime treats it |
//! |---|---|
//! | payload not Avro of a known schema | `DeserializeError` → `HandlerError::Deserialization`: DLQ at once |
//! | transient error (~5 %) | `HandlerError::retryable`: retried after 1, 2, 4 s, then DLQ |
//! | poison record (~5 %) | `HandlerError::fatal`: DLQ at once, never blocks its partition |
//! | processed | running average updated; offset committed |
//!
//! DLQ records carry the `kafka_dlt-*` provenance headers (original topic,
//! partition, offset, exception message).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kafka_wire::records::Record;
use resilience::consumer_core::TopicPartition;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};
use schema_registry::AvroDeserializer;

use crate::order::{Fate, Order};
use crate::settings::Settings;

/// The seed's counters and running average. Money in cents, so sums are
/// exact and the average is the same whatever the processing order.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Distinct records seen (first attempts).
    pub received: u64,
    /// Processed successfully.
    pub processed: u64,
    /// Sum of processed prices, in cents.
    pub revenue_cents: u64,
}

impl Counts {
    /// The running average order value, in dollars (0 before the first).
    pub fn average(&self) -> f64 {
        average_cents(self.revenue_cents, self.processed)
    }
}

/// `sum_cents / count` in dollars (0 for none).
pub fn average_cents(sum_cents: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        sum_cents as f64 / count as f64 / 100.0
    }
}

/// A price in whole cents.
pub fn cents(price: f64) -> u64 {
    (price * 100.0).round() as u64
}

impl Tally {
    pub fn snapshot(&self) -> Counts {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How chatty the handler is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Every record, as the seed's consumer prints it.
    Every,
    /// Only retries and dead letters (the demo).
    Failures,
}

/// The handler.
#[derive(Debug)]
pub struct OrderService {
    de: AvroDeserializer,
    tally: Arc<Tally>,
    settings: Settings,
    verbosity: Verbosity,
    /// Attempts per order id while it is failing (entries leave on success
    /// or when the attempts run out: bounded by the records in flight).
    attempts: Mutex<HashMap<String, u32>>,
}

impl OrderService {
    pub fn new(de: AvroDeserializer, settings: Settings, verbosity: Verbosity) -> Self {
        Self {
            de,
            tally: Arc::new(Tally::default()),
            settings,
            verbosity,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    pub fn tally(&self) -> Arc<Tally> {
        self.tally.clone()
    }

    /// The processor: the orders topic, DLQ writes to [`Settings::dlq`],
    /// the seed's backoff.
    pub fn processor(self, settings: &Settings) -> anyhow::Result<Processor> {
        let cfg = ProcessorConfig::new(settings.consumer()?, &[settings.topic.as_str()])
            .dead_letter(settings.producer()?)
            .dlt_topic(&settings.dlq)
            .backoff(settings.backoff());
        Ok(Processor::new(cfg, self))
    }

    /// Which attempt this is for `id` (1-based).
    fn next_attempt(&self, id: &str) -> u32 {
        let mut map = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(id.to_string()).or_insert(0);
        *n += 1;
        *n
    }

    /// `id` reached an end (processed, or on its way to the DLQ).
    fn forget(&self, id: &str) {
        let mut map = self
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(id);
    }

    fn handle_order(
        &self,
        tp: &TopicPartition,
        record: &Record,
        order: Order,
    ) -> Result<(), HandlerError> {
        let id = order.order_id.as_str();
        let attempt = self.next_attempt(id);
        if attempt == 1 {
            self.tally.lock().received += 1;
        }
        let failing = match Fate::of(id) {
            Fate::Ok => false,
            Fate::TransientOnce => attempt == 1,
            Fate::TransientAlways => true,
            Fate::Poison => {
                self.forget(id);
                println!(
                    "🔥 POISON PILL {id} ({}, ${:.2}): ValueError, not retried → {}",
                    order.product, order.price, self.settings.dlq
                );
                return Err(HandlerError::fatal(format!(
                    "ValueError: SIMULATED ERROR: Invalid data for order {id} - Price validation failed"
                )));
            }
        };
        if failing {
            let max = self.settings.max_retries;
            if attempt <= max {
                let delay = self.settings.retry_backoff * 2u32.saturating_pow(attempt - 1);
                println!(
                    "⚠️  {id}: ConnectionError, attempt {attempt}/{}: retrying in {delay:?}",
                    max + 1
                );
            } else {
                self.forget(id);
                println!(
                    "❌ {id}: ConnectionError, retries ({max}) exhausted → {}",
                    self.settings.dlq
                );
            }
            return Err(HandlerError::retryable(format!(
                "ConnectionError: SIMULATED ERROR: Temporary service unavailable while processing order {id}"
            )));
        }
        self.forget(id);
        let counts = {
            let mut c = self.tally.lock();
            c.processed += 1;
            c.revenue_cents += cents(order.price);
            *c
        };
        if self.verbosity == Verbosity::Every || attempt > 1 {
            let retried = if attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            println!(
                "📦 {id} {} ${:.2} | running average ${:.2} from {} orders | partition {} offset {}{retried}",
                order.product,
                order.price,
                counts.average(),
                counts.processed,
                tp.partition,
                record.offset,
            );
        }
        Ok(())
    }
}

impl Handler for OrderService {
    async fn handle(&self, tp: &TopicPartition, record: &Record) -> Result<(), HandlerError> {
        let payload = record
            .value
            .as_deref()
            .ok_or_else(|| HandlerError::fatal("an order without a value"))?;
        // A payload that is not an Order in Avro: dead-lettered at once.
        let order: Order = self.de.deserialize_into(payload).await?;
        self.handle_order(tp, record, order)
    }
}
