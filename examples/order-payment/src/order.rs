//! The event both services agree on: `OrderCreated`, as JSON, with an
//! event id in the body and in the `event-id` header.

use kafka_wire::records::Record;
use serde::{Deserialize, Serialize};

/// The header carrying the event id, so the DLT consumer and tools can
/// read it without parsing the value.
pub const EVENT_ID_HEADER: &str = "event-id";

/// Orders above this amount (in cents: 1,000.00) need the gateway's fraud
/// review, which is down in this lab: their payments fail every time.
pub const FRAUD_REVIEW_ABOVE_CENTS: i64 = 100_000;

/// An order was placed. `event_id` is unique per event (a UUID): the
/// idempotency key of the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub event_id: String,
    pub order_id: String,
    pub customer_id: String,
    /// In cents.
    pub amount_cents: i64,
}

impl OrderCreated {
    /// The `n`th order of a run: a fresh event id, 12 customers, and every
    /// 8th order (n = 5, 13, 21, …) above [`FRAUD_REVIEW_ABOVE_CENTS`], so
    /// its payment fails deterministically.
    pub fn numbered(run: &str, n: u32) -> OrderCreated {
        let amount_cents = if n % 8 == 5 {
            150_000
        } else {
            1_000 + i64::from(n * 3_700 % 90_000)
        };
        OrderCreated {
            event_id: uuid::Uuid::new_v4().to_string(),
            order_id: format!("{run}-order-{n}"),
            customer_id: format!("customer-{}", n % 12),
            amount_cents,
        }
    }

    /// Will the payment gateway refuse it?
    pub fn needs_fraud_review(&self) -> bool {
        self.amount_cents > FRAUD_REVIEW_ABOVE_CENTS
    }

    /// The order in a record's value.
    ///
    /// # Errors
    /// No value, or not an `OrderCreated` in JSON.
    pub fn from_record(record: &Record) -> Result<OrderCreated, String> {
        let value = record.value.as_deref().ok_or("the record has no value")?;
        serde_json::from_slice(value).map_err(|e| format!("not an OrderCreated: {e}"))
    }
}

/// How many of the orders `0..n` the gateway refuses.
pub fn failing_count(n: u32) -> usize {
    (0..n).filter(|i| i % 8 == 5).count()
}
