//! An application embedding kafka-rs the way a user's would: it depends on
//! `kafka-wire`, `consumer-core` and `resilience` by path from outside their
//! workspace, so it gets exactly the dependency graph they publish (no
//! `[patch]` of the workspace applies here).
//!
//! The library is a small service: [`Tally`] is a [`resilience::Handler`]
//! that counts every record it handles by partition and offset, and
//! [`broker`] finds the Kafka broker the tests run against. The tests are the
//! point: `tests/hostile.rs` (hostile wire input returns errors, never
//! aborts) and `tests/round_trip.rs` (produce → `Processor` → commit).

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use resilience::{Handler, HandlerError};

/// Counts how often each record (partition, offset) was handled.
#[derive(Debug, Default)]
pub struct Tally {
    seen: Mutex<HashMap<(i32, i64), u32>>,
}

impl Tally {
    /// How many distinct records were handled.
    pub fn distinct(&self) -> usize {
        self.seen.lock().expect("tally lock").len()
    }

    /// The records handled more than once, with their counts.
    pub fn repeated(&self) -> Vec<((i32, i64), u32)> {
        let seen = self.seen.lock().expect("tally lock");
        let mut out: Vec<_> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (*k, *n))
            .collect();
        out.sort();
        out
    }

    /// Every handled offset of `partition`, in order.
    pub fn offsets(&self, partition: i32) -> Vec<i64> {
        let seen = self.seen.lock().expect("tally lock");
        let mut out: Vec<i64> = seen
            .keys()
            .filter(|(p, _)| *p == partition)
            .map(|(_, o)| *o)
            .collect();
        out.sort_unstable();
        out
    }
}

/// A handler that records each record in a shared [`Tally`].
#[derive(Debug, Clone)]
pub struct TallyHandler(pub std::sync::Arc<Tally>);

impl Handler for TallyHandler {
    async fn handle(&self, tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        *self
            .0
            .seen
            .lock()
            .expect("tally lock")
            .entry((tp.partition, r.offset))
            .or_default() += 1;
        Ok(())
    }
}

/// The test broker's PLAINTEXT address: `KAFKA_BOOTSTRAP`, else the
/// `KAFKA_BOOTSTRAP=` line of `target/broker/env` at the kafka-rs workspace
/// root (written by `cargo xtask broker up`). `None` when neither names a
/// broker that accepts a connection.
///
/// # Panics
/// When no broker is reachable and `CI=true` or `KAFKA_REQUIRE_BROKER=1`:
/// under CI a missing broker is a failure, never a skip.
pub fn broker() -> Option<String> {
    let from_file = || {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/broker/env");
        std::fs::read_to_string(file)
            .ok()?
            .lines()
            .find_map(|l| {
                let l = l.strip_prefix("export ").unwrap_or(l);
                l.strip_prefix("KAFKA_BOOTSTRAP=").map(str::to_string)
            })
    };
    let problem = match std::env::var("KAFKA_BOOTSTRAP").ok().or_else(from_file) {
        None => "KAFKA_BOOTSTRAP is not set and target/broker/env does not exist".to_string(),
        Some(b) if reachable(&b) => return Some(b),
        Some(b) => format!("no broker answers at {b}"),
    };
    let truthy = |k: &str| {
        std::env::var(k).is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
    };
    if truthy("CI") || truthy("KAFKA_REQUIRE_BROKER") {
        panic!("this test needs a Kafka broker and none is reachable: {problem}");
    }
    eprintln!("SKIPPED (no broker): {problem}. Start one with `cargo xtask broker up`.");
    None
}

fn reachable(addr: &str) -> bool {
    addr.to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
    })
}
