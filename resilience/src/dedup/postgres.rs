//! PostgreSQL idempotency (feature `postgres`, pure Rust: tokio-postgres
//! connections in a deadpool-postgres pool).
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
//!             .map_err(|e| resilience::dedup::postgres::classify(&e))?;
//!         Ok(())
//!     }))
//!     .await?;
//! assert!(matches!(outcome, Outcome::Applied(()) | Outcome::AlreadyProcessed));
//! # Ok(()) }
//! ```
//!
//! # Connections
//!
//! [`pool`] builds the [`Pool`] that [`PgDedup`] (and any other code that
//! wants the same behaviour) uses: connections are made when first needed,
//! at most `size` of them, and a connection found closed when it is taken
//! (the server restarted or cut it) is dropped and replaced by a new one
//! (deadpool's "fast" recycling). A connection whose statement failed
//! because the connection itself failed is never handed out again. So
//! after a PostgreSQL restart the next calls connect anew: nothing has to
//! be rebuilt, and the calls made while the server was down fail as
//! [`HandlerError::Unavailable`].
//!
//! # Errors
//!
//! [`classify`] is the one decision of what a PostgreSQL failure means for
//! the record being handled:
//!
//! | failure | becomes | the runtime |
//! |---|---|---|
//! | no connection: closed, refused, I/O, a pool timeout; SQLSTATE `08…` (connection exception), `28…` (authorization), `3D000` (no such database), `53…` (insufficient resources, e.g. too many connections), `55000` (e.g. a database not accepting connections), `57P01`–`57P03` (shutdown, crash, cannot connect now) | [`HandlerError::Unavailable`] | waits for the database, never dead-letters |
//! | the value itself: `22…` (data exception, e.g. a NUL byte), `54…` (program limit, e.g. an event id too long for the btree index) | [`HandlerError::NonRetryable`] | dead-letters that record at once |
//! | anything else (a deadlock, a serialization failure, a constraint) | [`HandlerError::Retryable`] | retries it, then dead-letters it |

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, RecyclingMethod, Runtime};
use tokio_postgres::{NoTls, Transaction};

/// The pool crate this module is built on: its [`Pool`] and [`PoolError`]
/// are re-exported below, the rest is here for custom set-ups.
pub use deadpool_postgres;
/// A pool of PostgreSQL connections (build one with [`pool`]); `get()`
/// hands out a connection that derefs to a [`tokio_postgres::Client`].
pub use deadpool_postgres::{Pool, PoolError};
/// The tokio-postgres this module is built on. [`PgDedup::process_once`]
/// hands your closure its [`Transaction`]: use these types (and
/// `tokio_postgres::GenericClient` for code shared with a plain `Client`)
/// instead of a separate `tokio-postgres` dependency whose version would
/// have to match.
pub use tokio_postgres;

use super::{DedupStore, StoreFuture};
use crate::retry::HandlerError;

/// How long making a connection, or checking a pooled one before reuse,
/// may take before the call fails as [`HandlerError::Unavailable`]: a
/// server that drops packets must not hang a handler.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A pool of at most `size` connections (at least 1) for a libpq-style
/// string (`host=127.0.0.1 port=5432 user=app dbname=app`) or a
/// `postgresql://` URL, without TLS. See the [module docs](self) for how it
/// replaces broken connections.
///
/// # Errors
/// The string does not parse.
pub fn pool(config: &str, size: usize) -> Result<Pool, String> {
    let parsed: tokio_postgres::Config = config
        .parse()
        .map_err(|e| format!("PostgreSQL connection string '{config}': {e}"))?;
    Ok(pool_from(parsed, size))
}

/// [`pool`] from a parsed config (to set `connect_timeout`, say).
pub fn pool_from(config: tokio_postgres::Config, size: usize) -> Pool {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // `is_closed()` when taken: no round trip per call. A half-open
            // connection fails its statement instead, and is dropped then.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        // No wait timeout: with every connection busy a call waits its turn.
        .build()
        .expect("timeouts with a runtime set always build")
}

/// What a failure means for the record being handled; see the table in
/// the [module docs](self). The decision itself, apart from the error
/// types, so that it can be tested without a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Unavailable,
    NonRetryable,
    Retryable,
}

/// `code` is the server's SQLSTATE when it answered with an error;
/// `connection_lost` says the connection failed (closed, refused, I/O).
fn class(code: Option<&str>, connection_lost: bool) -> Class {
    let Some(code) = code else {
        return if connection_lost {
            Class::Unavailable
        } else {
            // A parameter that does not serialize, a row that does not
            // fit the Rust type: the caller's bug, not the database's.
            Class::Retryable
        };
    };
    match code.get(..2).unwrap_or("") {
        "08" | "28" | "53" => Class::Unavailable,
        "22" | "54" => Class::NonRetryable,
        _ if matches!(code, "3D000" | "55000" | "57P01" | "57P02" | "57P03") => Class::Unavailable,
        _ => Class::Retryable,
    }
}

/// The error and its causes on one line: tokio-postgres prints only
/// "db error" itself, the server's message is its source.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(code) = e.code() {
        text.push_str(&format!(" (SQLSTATE {})", code.code()));
    }
    text
}

/// What a tokio-postgres error means for the record being handled: the
/// one classification of this module (see the table in the [module
/// docs](self)). Use it in an inbox closure, or anywhere a handler talks
/// to PostgreSQL.
pub fn classify(e: &tokio_postgres::Error) -> HandlerError {
    let lost = e.is_closed()
        || e.source()
            .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    let text = format!("PostgreSQL: {}", describe(e));
    match class(e.code().map(|c| c.code()), lost) {
        Class::Unavailable => HandlerError::Unavailable(text),
        Class::NonRetryable => HandlerError::NonRetryable(text),
        Class::Retryable => HandlerError::Retryable(text),
    }
}

/// [`classify`] for a pool's error: no connection could be had (a
/// timeout, a closed pool) is [`HandlerError::Unavailable`]; a backend
/// error is classified as itself (a refused connection is unavailable).
pub fn classify_pool(e: &PoolError) -> HandlerError {
    match e {
        PoolError::Backend(e) => classify(e),
        other => HandlerError::Unavailable(format!("PostgreSQL pool: {other}")),
    }
}

/// `?` on a [`Pool::get`] (or a function returning [`PoolError`]) in a
/// handler: [`classify_pool`].
impl From<PoolError> for HandlerError {
    fn from(e: PoolError) -> Self {
        classify_pool(&e)
    }
}

/// Connections to one database, in a [`Pool`]. Each call holds one
/// connection until it finishes (an inbox closure: until its transaction
/// commits), so give it as many connections as handlers run at once
/// (`ProcessorConfig::concurrency`); a call waits when all are busy.
/// Connections are made when first needed and replaced when broken (see
/// the [module docs](self)).
pub struct PgDedup {
    pool: Pool,
}

impl std::fmt::Debug for PgDedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgDedup")
            .field("connections", &status.size)
            .field("max_connections", &status.max_size)
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

const MARK: &str = "INSERT INTO processed_events (event_id) VALUES ($1) ON CONFLICT DO NOTHING";

/// Why an inbox call failed: a statement of ours, or your closure.
enum Failed {
    Db(tokio_postgres::Error),
    Handler(HandlerError),
}

impl PgDedup {
    /// A pool of at most `pool_size` connections with a libpq-style string,
    /// e.g. `host=127.0.0.1 port=5432 user=app dbname=app`; connects one
    /// now and creates the table.
    ///
    /// # Errors
    /// Connection or DDL failures, as text naming the server.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing is kept; the table is created in one
    /// transaction or not at all.
    pub async fn connect(config: &str, pool_size: usize) -> Result<PgDedup, String> {
        let pool = pool(config, pool_size)?;
        let client = pool.get().await.map_err(|e| {
            let why = match &e {
                PoolError::Backend(e) => describe(e),
                other => other.to_string(),
            };
            format!("PostgreSQL at '{config}': {why}")
        })?;
        client
            .batch_execute(CREATE)
            .await
            .map_err(|e| format!("creating processed_events: {}", describe(&e)))?;
        drop(client);
        Ok(PgDedup { pool })
    }

    /// A connection from the pool.
    async fn client(&self) -> Result<Object, HandlerError> {
        self.pool.get().await.map_err(|e| classify_pool(&e))
    }

    /// `e` classified. A connection whose failure was the connection's
    /// (not the statement's) leaves the pool now: it is dropped, and the
    /// next call connects anew.
    fn failed(client: Object, e: &tokio_postgres::Error) -> HandlerError {
        let err = classify(e);
        if matches!(err, HandlerError::Unavailable(_)) {
            drop(Object::take(client));
        }
        err
    }

    /// The inbox pattern: in one transaction, mark `event_id` processed and
    /// run `f` with the transaction for your own writes. If the id was
    /// already marked, nothing runs. If `f` fails, nothing commits.
    ///
    /// # Errors
    /// `f`'s error, or a database error as [`classify`] says: no connection
    /// (during a restart, say) is [`HandlerError::Unavailable`]; an
    /// `event_id` the table cannot hold (too long for its index: about
    /// 2.7 KB) is [`HandlerError::NonRetryable`].
    ///
    /// # Cancel safety
    /// Cancel safe: a transaction that was not committed rolls back.
    pub async fn process_once<T, F>(&self, event_id: &str, f: F) -> Result<Outcome<T>, HandlerError>
    where
        F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
    {
        let mut client = self.client().await?;
        match inbox(&mut client, event_id, f).await {
            Ok(outcome) => Ok(outcome),
            Err(Failed::Handler(e)) => Err(e),
            Err(Failed::Db(e)) => Err(Self::failed(client, &e)),
        }
    }

    /// Run a query on one of the pool's connections (tests, set-up).
    ///
    /// # Errors
    /// The database's.
    ///
    /// # Cancel safety
    /// As the statements: a batch cancelled half-way may have run in part.
    pub async fn batch_execute(&self, sql: &str) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        match client.batch_execute(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(Self::failed(client, &e).to_string()),
        }
    }

    /// One `i64` from a query returning one row and column (tests, checks).
    ///
    /// # Errors
    /// The database's.
    ///
    /// # Cancel safety
    /// Cancel safe for a query that writes nothing.
    pub async fn query_i64(&self, sql: &str) -> Result<i64, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        match client.query_one(sql, &[]).await {
            Ok(row) => row.try_get::<_, i64>(0).map_err(|e| describe(&e)),
            Err(e) => Err(Self::failed(client, &e).to_string()),
        }
    }
}

/// [`PgDedup::process_once`] on one connection.
async fn inbox<T, F>(
    client: &mut tokio_postgres::Client,
    event_id: &str,
    f: F,
) -> Result<Outcome<T>, Failed>
where
    F: for<'t> FnOnce(&'t Transaction<'t>) -> TxFuture<'t, T>,
{
    let tx = client.transaction().await.map_err(Failed::Db)?;
    // The insert takes the row lock: a concurrent duplicate waits here,
    // then sees the row and does nothing.
    let inserted = tx.execute(MARK, &[&event_id]).await.map_err(Failed::Db)?;
    if inserted == 0 {
        tx.rollback().await.map_err(Failed::Db)?;
        return Ok(Outcome::AlreadyProcessed);
    }
    let value = f(&tx).await.map_err(Failed::Handler)?; // dropping tx on error rolls back
    tx.commit().await.map_err(Failed::Db)?;
    Ok(Outcome::Applied(value))
}

/// The errors are [`classify`]'s (see [`DedupStore`] for what the runtime
/// does with each class): an outage is waited out; an event id the table
/// cannot hold (over about 2.7 KB, SQLSTATE 54000) is `NonRetryable`, so
/// that record is committed unmarked instead of stalling its partition.
/// Keep ids short (a hash of a long one), or use
/// [`PgDedup::process_once`], which dead-letters that record.
impl DedupStore for PgDedup {
    fn seen<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let client = self.client().await?;
            match client
                .query_opt("SELECT 1 FROM processed_events WHERE event_id = $1", &[&id])
                .await
            {
                Ok(row) => Ok(row.is_some()),
                Err(e) => Err(Self::failed(client, &e)),
            }
        })
    }

    fn mark<'a>(&'a self, id: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client().await?;
            match client.execute(MARK, &[&id]).await {
                Ok(_) => Ok(()),
                Err(e) => Err(Self::failed(client, &e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_without_an_answer_is_unavailable() {
        assert_eq!(class(None, true), Class::Unavailable);
    }

    #[test]
    fn connection_and_shutdown_sqlstates_are_unavailable() {
        for code in [
            "08000", "08003", "08006", "08001", "08004", "08P01", // connection exception
            "57P01", // admin_shutdown (a fast or smart stop)
            "57P02", // crash_shutdown
            "57P03", // cannot_connect_now (starting up, shutting down)
            "53300", // too_many_connections
            "28P01", // invalid_password: the record is fine, the set-up is not
            "3D000", // the database does not exist
            "55000", // database not accepting connections
        ] {
            assert_eq!(class(Some(code), false), Class::Unavailable, "{code}");
        }
    }

    #[test]
    fn a_value_the_table_cannot_hold_is_non_retryable() {
        for code in [
            "54000", // program_limit_exceeded: index row size exceeds btree maximum
            "54001", // statement_too_complex
            "22021", // character_not_in_repertoire (a NUL byte in text)
            "22001", // string_data_right_truncation
        ] {
            assert_eq!(class(Some(code), false), Class::NonRetryable, "{code}");
        }
    }

    #[test]
    fn other_database_errors_stay_retryable() {
        for code in [
            "40001", // serialization_failure
            "40P01", // deadlock_detected
            "23505", // unique_violation
            "42P01", // undefined_table
            "57014", // query_canceled (a statement timeout): not an outage
            "57P04", // database_dropped: it will not come back
        ] {
            assert_eq!(class(Some(code), false), Class::Retryable, "{code}");
        }
        // No answer and no lost connection: a parameter that did not serialize.
        assert_eq!(class(None, false), Class::Retryable);
    }

    #[test]
    fn a_pool_timeout_or_a_closed_pool_is_unavailable() {
        let timeout = PoolError::Timeout(deadpool_postgres::TimeoutType::Wait);
        assert!(matches!(
            classify_pool(&timeout),
            HandlerError::Unavailable(_)
        ));
        assert!(matches!(
            HandlerError::from(PoolError::Closed),
            HandlerError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable_and_promptly() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = pool(&format!("host=127.0.0.1 port={port} user=postgres"), 1).unwrap();
        let started = std::time::Instant::now();
        let err = pool.get().await.map(|_| ()).unwrap_err();
        let err = classify_pool(&err);
        assert!(matches!(err, HandlerError::Unavailable(_)), "{err}");
        assert!(err.message().contains("PostgreSQL"), "{err}");
        assert!(started.elapsed() < CONNECT_TIMEOUT, "refused at once");
        // PgDedup::connect says which server.
        let msg = PgDedup::connect(&format!("host=127.0.0.1 port={port}"), 1)
            .await
            .unwrap_err();
        assert!(msg.contains(&format!("port={port}")), "{msg}");
    }
}
