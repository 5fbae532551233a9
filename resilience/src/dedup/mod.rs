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
//!
//! Ids come from records (a header, the key), so anyone who may produce to
//! the topic chooses them. The in-memory and file stores bound both how
//! many ids they keep (`capacity`) and how long one may be
//! ([`DEFAULT_MAX_ID_BYTES`], 1 KiB, unless set): a longer id is refused
//! with [`HandlerError::NonRetryable`] and never stored (see
//! [`DedupStore`]'s errors for what the runtime then does).

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

/// The longest event id the in-memory and file stores take by default, in
/// bytes (of its UTF-8): 1 KiB. With `capacity` ids this bounds a store's
/// memory at about `capacity × 2 × (max + 48)` bytes (each id is held
/// twice: a set and an eviction queue).
pub const DEFAULT_MAX_ID_BYTES: usize = 1024;

/// `id` if a store bounded to `max` bytes per id may hold it.
///
/// # Errors
/// [`HandlerError::NonRetryable`] naming both lengths: no retry makes the
/// id shorter.
fn check_id_len(id: &str, max: usize) -> Result<(), HandlerError> {
    if id.len() > max {
        return Err(HandlerError::NonRetryable(format!(
            "event id of {} bytes is longer than this idempotency store takes ({max} bytes); not stored",
            id.len()
        )));
    }
    Ok(())
}

/// Bounded in-memory store: remembers the last `capacity` ids, each at
/// most [`DEFAULT_MAX_ID_BYTES`] long (see [`InMemoryDedup::max_id_bytes`]).
/// For tests and single-process consumers; a restart forgets everything.
#[derive(Debug)]
pub struct InMemoryDedup {
    capacity: usize,
    max_id_bytes: usize,
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl InMemoryDedup {
    /// A store remembering the last `capacity` ids (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// The longest id taken, in bytes (default [`DEFAULT_MAX_ID_BYTES`]).
    /// A longer id is a [`HandlerError::NonRetryable`] from `seen` and
    /// `mark`, and is not stored.
    pub fn max_id_bytes(mut self, bytes: usize) -> Self {
        self.max_id_bytes = bytes;
        self
    }
}

impl DedupStore for InMemoryDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        if let Err(e) = check_id_len(id, self.max_id_bytes) {
            return Box::pin(async move { Err(e) });
        }
        let hit = self.inner.lock().expect("dedup lock").0.contains(id);
        Box::pin(async move { Ok(hit) })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        if let Err(e) = check_id_len(id, self.max_id_bytes) {
            return Box::pin(async move { Err(e) });
        }
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

    #[tokio::test]
    async fn an_over_long_id_is_refused_for_good_and_not_stored() {
        let s = InMemoryDedup::new(10);
        let long = "x".repeat(DEFAULT_MAX_ID_BYTES + 1);
        let e = s.mark(&long).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("1025 bytes"), "{e}");
        assert!(!s.seen(&long).await.unwrap_or(false));
        assert!(s.inner.lock().unwrap().0.is_empty(), "not stored");
        // At the bound it is an id like any other; the bound can be set.
        let at = "y".repeat(DEFAULT_MAX_ID_BYTES);
        s.mark(&at).await.unwrap();
        assert!(s.seen(&at).await.unwrap());
        let small = InMemoryDedup::new(10).max_id_bytes(4);
        assert!(small.mark("12345").await.is_err() && small.mark("1234").await.is_ok());
    }
}
