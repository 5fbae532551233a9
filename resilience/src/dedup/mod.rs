//! Idempotent processing: a `DedupStore` remembers which event ids already
//! had their side effects applied, so a redelivered record skips them.
//!
//! | store | survives a restart | shared by instances | notes |
//! |---|---|---|---|
//! | [`InMemoryDedup`] | no | no | bounded; tests and single processes |
//! | [`FileDedup`] | yes | no | embedded append-only log, fsync per mark, no server |
//! | `PgDedup` (feature `postgres`) | yes | yes | `processed_events` table; `postgres::PgDedup::process_once` runs your write and the mark in one transaction (the inbox pattern); a pool that replaces broken connections (a server restart is waited out, never rebuilt) |
//!
//! The generic path is check, process, mark, then commit: a crash between
//! the side effect and the mark can still repeat that one side effect. The
//! PostgreSQL inbox closes that window by putting both in one transaction.

mod file;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use file::FileDedup;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::retry::HandlerError;

/// A boxed future for store calls.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send + 'a>>;

/// Where processed event ids live. `mark` must be durable before the
/// offset is committed (check, process, mark, then ack).
///
/// # Errors
/// What the runtime does with a store's error depends on its class:
/// `Unavailable` and `Retryable` are retried with backoff, the partition
/// waiting (and saying so); `NonRetryable` (an id this store can never
/// hold, e.g. too long for PostgreSQL's index) is not retried: `seen`
/// failing so handles the record without the check, `mark` failing so
/// commits it unmarked, both logged (a redelivery of that one record would
/// apply it again; it never stalls the partition).
pub trait DedupStore: Send + Sync {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;
    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()>;
}

/// Bounded in-memory store: remembers the last `capacity` ids. For tests
/// and single-process consumers; a restart forgets everything.
#[derive(Debug)]
pub struct InMemoryDedup {
    capacity: usize,
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl InMemoryDedup {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }
}

impl DedupStore for InMemoryDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        let hit = self.inner.lock().expect("dedup lock").0.contains(id);
        Box::pin(async move { Ok(hit) })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        let mut g = self.inner.lock().expect("dedup lock");
        if g.0.insert(id.to_string()) {
            g.1.push_back(id.to_string());
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_marked_ids_within_capacity() {
        let s = InMemoryDedup::new(2);
        assert!(!s.seen("a").await.unwrap());
        s.mark("a").await.unwrap();
        s.mark("a").await.unwrap();
        assert!(s.seen("a").await.unwrap());
        s.mark("b").await.unwrap();
        s.mark("c").await.unwrap(); // evicts "a"
        assert!(!s.seen("a").await.unwrap());
        assert!(s.seen("b").await.unwrap() && s.seen("c").await.unwrap());
    }
}
