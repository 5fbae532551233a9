//! PostgreSQL idempotency (feature `postgres`, pure Rust via tokio-postgres).
//!
//! Table `processed_events (event_id text primary key, processed_at timestamptz)`,
//! created if missing. Two ways to use it:
//!
//! - as a [`DedupStore`] (check, process, mark): any side effect, any store;
//! - as an **inbox** with [`PgDedup::process_once`]: your database write and
//!   the "processed" mark commit in one transaction, so even a crash between
//!   them cannot apply the side effect twice.
//!
//! ```no_run
//! # use resilience::dedup::postgres::{PgDedup, Outcome};
//! # async fn f(pg: &PgDedup) -> Result<(), resilience::HandlerError> {
//! let outcome = pg
//!     .process_once("order-42", |tx| Box::pin(async move {
//!         tx.execute("UPDATE accounts SET balance = balance - 10 WHERE id = 1", &[])
//!             .await
//!             .map_err(resilience::HandlerError::from_display)?;
//!         Ok(())
//!     }))
//!     .await?;
//! assert!(matches!(outcome, Outcome::Applied(()) | Outcome::AlreadyProcessed));
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Transaction};

/// The tokio-postgres this module is built on. [`PgDedup::process_once`]
/// hands your closure its [`Transaction`]: use these types (and
/// `tokio_postgres::GenericClient` for code shared with a plain `Client`)
/// instead of a separate `tokio-postgres` dependency whose version would
/// have to match.
pub use tokio_postgres;

use super::{DedupStore, StoreFuture};
use crate::retry::HandlerError;

/// What [`PgDedup::process_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Your closure ran and its transaction committed with the mark.
    Applied(T),
    /// The event id was already marked: nothing ran.
    AlreadyProcessed,
}

/// The inbox closure's future, borrowing the transaction.
pub type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, HandlerError>> + Send + 't>>;

/// A small pool of connections to one database. Each call holds one
/// connection until it finishes (an inbox closure: until its transaction
/// commits), so give it as many connections as handlers run at once
/// (`ProcessorConfig::concurrency`); a call waits when all are busy.
pub struct PgDedup {
    clients: Vec<Mutex<Client>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for PgDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDedup")
            .field("connections", &self.clients.len())
            .finish()
    }
}

/// Under an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` can race.
const CREATE: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7262534);
CREATE TABLE IF NOT EXISTS processed_events (
    event_id text PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now());
COMMIT;";

impl PgDedup {
    /// Connect `pool_size` connections with a libpq-style string, e.g.
    /// `host=127.0.0.1 port=5432 user=app dbname=app`, and create the table.
    ///
    /// # Errors
    /// Connection or DDL failures, as text naming the server.
    pub async fn connect(config: &str, pool_size: usize) -> Result<PgDedup, String> {
        let mut clients = Vec::new();
        for _ in 0..pool_size.max(1) {
            let (client, conn) = tokio_postgres::connect(config, NoTls)
                .await
                .map_err(|e| format!("PostgreSQL at '{config}': {e}"))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "PostgreSQL connection ended");
                }
            });
            clients.push(Mutex::new(client));
        }
        clients[0]
            .lock()
            .await
            .batch_execute(CREATE)
            .await
            .map_err(|e| format!("creating processed_events: {e}"))?;
        Ok(PgDedup {
            clients,
            next: AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one (starting from a rotating index),
    /// else wait for the next in turn. Without the free-first scan, a call
    /// waited behind a slow transaction on "its" connection while others
    /// sat idle.
    async fn pick(&self) -> MutexGuard<'_, Client> {
        let n = self.clients.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if let Ok(free) = self.clients[(start + k) % n].try_lock() {
                return free;
            }
        }
        self.clients[start % n].lock().await
    }

    /// The inbox pattern: in one transaction, mark `event_id` processed and
    /// run `f` with the transaction for your own writes. If the id was
    /// already marked, nothing runs. If `f` fails, nothing commits.
    ///
    /// # Errors
    /// `f`'s error, or a database error as retryable.
    pub async fn process_once<T, F>(&self, event_id: &str, f: F) -> Result<Outcome<T>, HandlerError>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
    {
        let db = |e: tokio_postgres::Error| HandlerError::Retryable(format!("PostgreSQL: {e}"));
        let mut client = self.pick().await;
        let tx = client.transaction().await.map_err(db)?;
        // The insert takes the row lock: a concurrent duplicate waits here,
        // then sees the row and does nothing.
        let inserted = tx
            .execute(
                "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&event_id],
            )
            .await
            .map_err(db)?;
        if inserted == 0 {
            tx.rollback().await.map_err(db)?;
            return Ok(Outcome::AlreadyProcessed);
        }
        let value = f(&tx).await?; // dropping tx on error rolls back
        tx.commit().await.map_err(db)?;
        Ok(Outcome::Applied(value))
    }

    /// Run a query on one of the pool's connections (tests, set-up).
    ///
    /// # Errors
    /// The database's.
    pub async fn batch_execute(&self, sql: &str) -> Result<(), String> {
        self.pick()
            .await
            .batch_execute(sql)
            .await
            .map_err(|e| e.to_string())
    }

    /// One `i64` from a query returning one row and column (tests, checks).
    ///
    /// # Errors
    /// The database's.
    pub async fn query_i64(&self, sql: &str) -> Result<i64, String> {
        let row = self
            .pick()
            .await
            .query_one(sql, &[])
            .await
            .map_err(|e| e.to_string())?;
        row.try_get::<_, i64>(0).map_err(|e| e.to_string())
    }
}

impl DedupStore for PgDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let client = self.pick().await;
            let rows = client
                .query("SELECT 1 FROM processed_events WHERE event_id = $1", &[&id])
                .await
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            Ok(!rows.is_empty())
        })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.pick().await;
            client
                .execute(
                    "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&id],
                )
                .await
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            Ok(())
        })
    }
}
