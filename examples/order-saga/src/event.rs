//! The saga's events: one JSON body, keyed by order id, with two headers on
//! every record, `event-type` (what happened) and `correlation-id` (which
//! order's journey it belongs to; the order service takes it from the
//! `X-Correlation-Id` request header or makes one).
//!
//! ```text
//!  topic       event-type          written by   read by
//!  orders      OrderCreated        order        payment
//!  payments    PaymentCharged      payment      inventory, order
//!  payments    PaymentRefunded     payment      order
//!  inventory   StockReserved       inventory    order
//!  inventory   StockInsufficient   inventory    payment (refunds)
//! ```
//!
//! Every event carries the whole order, so each service can act on it
//! without asking another one.

use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use serde::{Deserialize, Serialize};

/// The header naming the event.
pub const EVENT_TYPE_HEADER: &str = "event-type";
/// The header carrying the order's correlation id.
pub const CORRELATION_ID_HEADER: &str = "correlation-id";

/// The product whose stock the inventory service cannot handle (the seed's
/// poison pill): its `PaymentCharged` goes to the inventory DLT.
pub const POISON_PRODUCT: &str = "prod_ignore";

/// An order, as every event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub order_id: String,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: i32,
    /// The price, in cents.
    pub amount_cents: i64,
}

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    OrderCreated,
    PaymentCharged,
    PaymentRefunded,
    StockReserved,
    StockInsufficient,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::OrderCreated,
        EventType::PaymentCharged,
        EventType::PaymentRefunded,
        EventType::StockReserved,
        EventType::StockInsufficient,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventType::OrderCreated => "OrderCreated",
            EventType::PaymentCharged => "PaymentCharged",
            EventType::PaymentRefunded => "PaymentRefunded",
            EventType::StockReserved => "StockReserved",
            EventType::StockInsufficient => "StockInsufficient",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One event of the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_type: EventType,
    pub correlation_id: String,
    pub order: Order,
}

fn header<'r>(record: &'r Record, name: &str) -> Option<&'r [u8]> {
    record
        .headers
        .iter()
        .rev()
        .find(|h| h.key.as_ref() == name.as_bytes())
        .and_then(|h| h.value.as_deref())
}

/// The correlation id of a record, or `-` (for log spans before parsing).
pub fn correlation_id(record: &Record) -> String {
    header(record, CORRELATION_ID_HEADER)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(|| "-".into())
}

impl Event {
    pub fn new(event_type: EventType, correlation_id: &str, order: &Order) -> Event {
        Event {
            event_type,
            correlation_id: correlation_id.to_string(),
            order: order.clone(),
        }
    }

    /// The same order and correlation id, one step further.
    pub fn next(&self, event_type: EventType) -> Event {
        Event::new(event_type, &self.correlation_id, &self.order)
    }

    /// The record for `topic`, keyed by order id: one order's events stay
    /// in order on one partition of each topic.
    pub fn record(&self, topic: &str) -> ProducerRecord {
        ProducerRecord::new(topic)
            .key(self.order.order_id.clone())
            .value(serde_json::to_vec(&self.order).expect("an Order always serializes"))
            .header(EVENT_TYPE_HEADER, self.event_type.name())
            .header(CORRELATION_ID_HEADER, self.correlation_id.clone())
    }

    /// Read an event back.
    ///
    /// # Errors
    /// A missing or unknown `event-type`, a missing `correlation-id`, or a
    /// body that is not an order: the text says which.
    pub fn from_record(record: &Record) -> Result<Event, String> {
        let text = |name| {
            header(record, name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or_else(|| format!("no {name} header"))
        };
        let kind = text(EVENT_TYPE_HEADER)?;
        let event_type =
            EventType::parse(&kind).ok_or_else(|| format!("unknown event-type {kind:?}"))?;
        let correlation_id = text(CORRELATION_ID_HEADER)?;
        let body = record.value.as_deref().ok_or("no body")?;
        let order = serde_json::from_slice(body).map_err(|e| format!("not an order: {e}"))?;
        Ok(Event {
            event_type,
            correlation_id,
            order,
        })
    }
}
