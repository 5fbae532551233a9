//! The payment gateway both services call (a stand-in for an HTTP API).
//!
//! Two behaviours make the seed's failures happen on purpose:
//!
//! - **A slow moment**: a charge that *starts* within `slow_window` of the
//!   gateway's first charge takes `slow_latency` (the demo: 4 s, longer
//!   than `max.poll.interval.ms` = 3 s); later charges take `latency`.
//!   Slowness that passes is what production sees (a cold cache, a
//!   downstream hiccup), and it lets the naive mode finish: a gateway slow
//!   for ever would keep dropping naive members and nothing would commit.
//! - **A refusal**: orders above [`FRAUD_REVIEW_ABOVE_CENTS`] fail every
//!   time (the fraud review is down), so retries run out and the DLT gets
//!   them.
//!
//! [`FRAUD_REVIEW_ABOVE_CENTS`]: crate::order::FRAUD_REVIEW_ABOVE_CENTS

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::order::OrderCreated;

/// Latencies of the gateway.
#[derive(Debug, Clone, Copy)]
pub struct GatewayConfig {
    /// A normal charge. Default 20 ms.
    pub latency: Duration,
    /// A charge started during the slow moment. Default 4 s.
    pub slow_latency: Duration,
    /// How long the slow moment lasts from the first charge. Default 1 s;
    /// zero: never slow.
    pub slow_window: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            slow_latency: Duration::from_secs(4),
            slow_window: Duration::from_secs(1),
        }
    }
}

/// The gateway. Share one (`Arc`) between the instances of one process.
#[derive(Debug)]
pub struct Gateway {
    cfg: GatewayConfig,
    first_charge: OnceLock<Instant>,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Gateway {
        Gateway {
            cfg,
            first_charge: OnceLock::new(),
        }
    }

    /// Charge the customer for `order`.
    ///
    /// # Errors
    /// The fraud review an order above 1,000.00 needs is unavailable.
    pub async fn charge(&self, order: &OrderCreated) -> Result<(), String> {
        let now = Instant::now();
        let first = *self.first_charge.get_or_init(|| now);
        let slow = now.duration_since(first) < self.cfg.slow_window;
        let took = if slow {
            self.cfg.slow_latency
        } else {
            self.cfg.latency
        };
        tokio::time::sleep(took).await;
        if order.needs_fraud_review() {
            return Err(format!(
                "fraud review unavailable (503) for {} ({} cents)",
                order.order_id, order.amount_cents
            ));
        }
        Ok(())
    }
}
