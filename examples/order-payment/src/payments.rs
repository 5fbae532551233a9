//! The `payments` table: one row per payment made.
//!
//! ```sql
//! CREATE TABLE payments (
//!     id           bigserial   PRIMARY KEY,
//!     event_id     text        NOT NULL,  -- the OrderCreated's event id
//!     order_id     text        NOT NULL,
//!     amount_cents bigint      NOT NULL,
//!     paid_by      text        NOT NULL,  -- which instance paid
//!     paid_at      timestamptz NOT NULL DEFAULT now())
//! ```
//!
//! There is deliberately no `UNIQUE (event_id)`: the seed's table has none,
//! and the naive mode's duplicates must be visible. The framework mode
//! needs none: its `processed_events` row (primary key `event_id`) commits
//! in the same transaction as the payment. (In production, add the
//! constraint too: a second line of defence costs one index.)

use anyhow::Context;
use resilience::dedup::postgres::tokio_postgres::{self, GenericClient};

/// The connections: resilience's pool (deadpool-postgres), which replaces a
/// connection found closed (a PostgreSQL restart) on its next use.
pub use resilience::dedup::postgres::Pool;

use crate::order::OrderCreated;

/// Under an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` race.
const CREATE: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7262535);
CREATE TABLE IF NOT EXISTS payments (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,
    order_id text NOT NULL,
    amount_cents bigint NOT NULL,
    paid_by text NOT NULL,
    paid_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS payments_event_id ON payments (event_id);
COMMIT;";

/// Connections in [`connect`]'s pool: the naive instances of a demo share
/// it, one payment at a time each, beside the counting queries.
pub const POOL_SIZE: usize = 4;

/// A pool of connections to `pg_url` (libpq style); connects one now and
/// creates `payments` if missing.
///
/// # Errors
/// The server is unreachable or refuses, naming `pg_url` with its
/// password redacted.
pub async fn connect(pg_url: &str) -> anyhow::Result<Pool> {
    let pool = resilience::dedup::postgres::pool(pg_url, POOL_SIZE).map_err(anyhow::Error::msg)?;
    pool.get()
        .await
        .with_context(|| {
            format!(
                "connecting to PostgreSQL at '{}' (is `cargo xtask postgres up` running?)",
                resilience::dedup::postgres::redact_password(pg_url)
            )
        })?
        .batch_execute(CREATE)
        .await
        .context("creating the payments table")?;
    Ok(pool)
}

/// Record a payment, on a plain connection (naive) or inside the inbox's
/// transaction (framework).
///
/// # Errors
/// The database's.
pub async fn insert(
    db: &impl GenericClient,
    order: &OrderCreated,
    paid_by: &str,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO payments (event_id, order_id, amount_cents, paid_by) VALUES ($1, $2, $3, $4)",
        &[
            &order.event_id,
            &order.order_id,
            &order.amount_cents,
            &paid_by,
        ],
    )
    .await?;
    Ok(())
}

/// What the table holds for a set of event ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Payment rows.
    pub rows: i64,
    /// Event ids with at least one row.
    pub paid: Vec<String>,
    /// Event ids with more than one row (paid twice), with their row count.
    pub duplicated: Vec<(String, i64)>,
}

/// Count the payments of `event_ids`.
///
/// # Errors
/// The database's.
pub async fn count(db: &Pool, event_ids: &[String]) -> anyhow::Result<Counts> {
    let rows = db
        .get()
        .await?
        .query(
            "SELECT event_id, count(*) FROM payments WHERE event_id = ANY($1) GROUP BY event_id",
            &[&event_ids],
        )
        .await
        .context("counting payments")?;
    Ok(Counts {
        rows: rows.iter().map(|r| r.get::<_, i64>(1)).sum(),
        paid: rows.iter().map(|r| r.get(0)).collect(),
        duplicated: duplicated(db, event_ids).await?,
    })
}

/// The seed's evidence query: event ids paid more than once, with how often.
///
/// # Errors
/// The database's.
pub async fn duplicated(db: &Pool, event_ids: &[String]) -> anyhow::Result<Vec<(String, i64)>> {
    let rows = db
        .get()
        .await?
        .query(
            "SELECT event_id, count(*) FROM payments WHERE event_id = ANY($1) \
             GROUP BY event_id HAVING count(*) > 1 ORDER BY event_id",
            &[&event_ids],
        )
        .await
        .context("finding duplicated payments")?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    /// The error of a connection that fails (nothing listens on the port)
    /// names the server but never the password, in either form of the string.
    #[tokio::test]
    async fn a_failed_connection_never_shows_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        for url in [
            format!("host=127.0.0.1 port={port} user=app password=hunter2-s3cr3t"),
            format!("postgres://app:hunter2-s3cr3t@127.0.0.1:{port}/app"),
        ] {
            let err = super::connect(&url).await.unwrap_err();
            for shown in [format!("{err}"), format!("{err:#}"), format!("{err:?}")] {
                assert!(!shown.contains("hunter2-s3cr3t"), "{shown}");
                assert!(shown.contains(&port.to_string()), "{shown}");
            }
        }
    }
}
