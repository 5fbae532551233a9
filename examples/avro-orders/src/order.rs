//! The order, its Avro schema (the seed's `order.avsc`), the random
//! generator of the seed's producer, and each order's simulated fate.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The seed's `order.avsc`: registered under `<topic>-value`.
pub const SCHEMA: &str = r#"{
  "type": "record",
  "name": "Order",
  "namespace": "com.example.orders",
  "fields": [
    {"name": "order_id", "type": "string"},
    {"name": "product", "type": "string"},
    {"name": "price", "type": "double"}
  ]
}"#;

/// The seed's product list.
pub const PRODUCTS: [&str; 10] = [
    "Laptop",
    "Mouse",
    "Keyboard",
    "Monitor",
    "Webcam",
    "Headphones",
    "Docking Station",
    "USB Hub",
    "Microphone",
    "Desk Lamp",
];

/// One order, as the schema says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub product: String,
    /// Dollars, 9.99 to 999.99, two decimals.
    pub price: f64,
}

/// Random orders: a uuid, a product from [`PRODUCTS`], a price in
/// 9.99–999.99. Seeded, so a demo run is reproducible.
#[derive(Debug)]
pub struct OrderGenerator {
    rng: rand::rngs::StdRng,
}

impl OrderGenerator {
    pub fn seeded(seed: u64) -> Self {
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_order(&mut self) -> Order {
        let id = uuid::Builder::from_random_bytes(self.rng.random()).into_uuid();
        let cents = self.rng.random_range(999..=99_999u32);
        Order {
            order_id: id.to_string(),
            product: PRODUCTS[self.rng.random_range(0..PRODUCTS.len())].to_string(),
            price: f64::from(cents) / 100.0,
        }
    }
}

/// What the simulated downstream does with an order: decided by a hash
/// of its id, so the same orders always meet the same fate (the seed rolls
/// dice per attempt; this keeps the seed's rates and makes counts
/// reproducible).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// ~90 %: processed on the first attempt.
    Ok,
    /// ~2.5 %: a transient error (the seed's `ConnectionError`) on the
    /// first attempt, then processed on the retry.
    TransientOnce,
    /// ~2.5 %: transient on every attempt: retried 3 times, then DLQ.
    TransientAlways,
    /// ~5 %: a poison record (the seed's `ValueError`): DLQ at once.
    Poison,
}

impl Fate {
    pub fn of(order_id: &str) -> Fate {
        // FNV-1a: stable across runs and platforms.
        let h = order_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        match h % 200 {
            0..=9 => Fate::Poison,
            10..=14 => Fate::TransientOnce,
            15..=19 => Fate::TransientAlways,
            _ => Fate::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_and_fates_follow_the_seed() {
        let mut g = OrderGenerator::seeded(7);
        let orders: Vec<Order> = (0..20_000).map(|_| g.next_order()).collect();
        assert!(orders.iter().all(|o| (9.99..=999.99).contains(&o.price)));
        let share = |f: Fate| {
            orders.iter().filter(|o| Fate::of(&o.order_id) == f).count() as f64 / 20_000.0
        };
        assert!((share(Fate::Poison) - 0.05).abs() < 0.01);
        let transient = share(Fate::TransientOnce) + share(Fate::TransientAlways);
        assert!((transient - 0.05).abs() < 0.01);
    }
}
