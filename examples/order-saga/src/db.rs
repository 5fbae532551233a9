//! The saga's tables in PostgreSQL, each owned by one service.
//!
//! ```sql
//! -- the order service's
//! CREATE TABLE saga_orders (
//!     order_id text PRIMARY KEY, correlation_id text NOT NULL,
//!     customer_id text NOT NULL, product_id text NOT NULL,
//!     quantity int NOT NULL, amount_cents bigint NOT NULL,
//!     status text NOT NULL,              -- PENDING, PAID, CONFIRMED, CANCELLED
//!     created_at timestamptz NOT NULL DEFAULT now(),
//!     updated_at timestamptz NOT NULL DEFAULT now());
//! -- the inventory service's: stock per warehouse, and what each order got
//! CREATE TABLE saga_stock (warehouse text, product_id text, available int,
//!     PRIMARY KEY (warehouse, product_id));
//! CREATE TABLE saga_reservations (order_id text PRIMARY KEY, reserved bool NOT NULL);
//! -- the payment provider's ledger (the side effect the inbox guards)
//! CREATE TABLE saga_payment_ledger (id bigserial PRIMARY KEY, order_id text NOT NULL,
//!     kind text NOT NULL,                -- charge, refund
//!     amount_cents bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
//! ```
//!
//! The inbox's `processed_events` table (created by `PgDedup`) sits beside
//! them.

use std::collections::BTreeMap;

use anyhow::Context;
use resilience::dedup::postgres::tokio_postgres::{self, GenericClient};

pub use resilience::dedup::postgres::tokio_postgres::Client;
/// The services' connections: resilience's pool (deadpool-postgres), which
/// replaces a connection found closed (a PostgreSQL restart) on its next
/// use; `?` on its error in a handler classifies it (a lost or refused
/// connection is `HandlerError::Unavailable`: the runtime waits).
pub use resilience::dedup::postgres::{Pool, PoolError};

use crate::event::Order;

/// Under an advisory lock: concurrent `CREATE TABLE IF NOT EXISTS` race.
const CREATE: &str = "BEGIN;
SELECT pg_advisory_xact_lock(7262536);
CREATE TABLE IF NOT EXISTS saga_orders (
    order_id text PRIMARY KEY,
    correlation_id text NOT NULL,
    customer_id text NOT NULL,
    product_id text NOT NULL,
    quantity int NOT NULL,
    amount_cents bigint NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS saga_stock (
    warehouse text NOT NULL,
    product_id text NOT NULL,
    available int NOT NULL,
    PRIMARY KEY (warehouse, product_id));
CREATE TABLE IF NOT EXISTS saga_reservations (
    order_id text PRIMARY KEY,
    reserved bool NOT NULL);
CREATE TABLE IF NOT EXISTS saga_payment_ledger (
    id bigserial PRIMARY KEY,
    order_id text NOT NULL,
    kind text NOT NULL,
    amount_cents bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS saga_payment_ledger_order ON saga_payment_ledger (order_id);
COMMIT;";

/// Order statuses.
pub mod status {
    pub const PENDING: &str = "PENDING";
    pub const PAID: &str = "PAID";
    pub const CONFIRMED: &str = "CONFIRMED";
    pub const CANCELLED: &str = "CANCELLED";
}

/// Connections in a service's [`pool`]: as many as its handlers run at
/// once (the order service's API shares them).
pub const POOL_SIZE: usize = 8;

/// A service's pool of connections to `pg_url` (libpq style); connects one
/// now and creates the tables if missing.
///
/// # Errors
/// The server is unreachable or refuses, naming `pg_url` with its
/// password redacted.
pub async fn pool(pg_url: &str) -> anyhow::Result<Pool> {
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
        .context("creating the saga tables")?;
    Ok(pool)
}

/// One connection (the demo's and the CLI's checks, tests), taken from a
/// [`pool`] of its own: it derefs to a [`Client`], and closes when dropped.
///
/// # Errors
/// The server is unreachable or refuses, naming `pg_url` with its
/// password redacted.
pub async fn connect(
    pg_url: &str,
) -> anyhow::Result<resilience::dedup::postgres::deadpool_postgres::Client> {
    Ok(pool(pg_url).await?.get().await?)
}

/// An order row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRow {
    #[serde(flatten)]
    pub order: Order,
    pub correlation_id: String,
    pub status: String,
}

/// A new order, `PENDING`.
///
/// # Errors
/// The database's.
pub async fn insert_order(db: &Pool, order: &Order, correlation_id: &str) -> Result<(), PoolError> {
    db.get().await?.execute(
        "INSERT INTO saga_orders (order_id, correlation_id, customer_id, product_id, quantity, amount_cents, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'PENDING')",
        &[&order.order_id, &correlation_id, &order.customer_id, &order.product_id, &order.quantity, &order.amount_cents],
    )
    .await?;
    Ok(())
}

/// Move an order to `to` if it is in one of `from` (a status never goes
/// back, whatever order events arrive in). Returns whether it moved.
///
/// # Errors
/// The database's.
pub async fn set_status(
    db: &Pool,
    order_id: &str,
    from: &[&str],
    to: &str,
) -> Result<bool, PoolError> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let n = db
        .get()
        .await?
        .execute(
            "UPDATE saga_orders SET status = $2, updated_at = now() WHERE order_id = $1 AND status = ANY($3)",
            &[&order_id, &to, &from],
        )
        .await?;
    Ok(n > 0)
}

fn order_row(r: &tokio_postgres::Row) -> OrderRow {
    OrderRow {
        order: Order {
            order_id: r.get(0),
            customer_id: r.get(2),
            product_id: r.get(3),
            quantity: r.get(4),
            amount_cents: r.get(5),
        },
        correlation_id: r.get(1),
        status: r.get(6),
    }
}

const ORDER_COLUMNS: &str =
    "order_id, correlation_id, customer_id, product_id, quantity, amount_cents, status";

/// One order.
///
/// # Errors
/// The database's.
pub async fn order(db: &Pool, order_id: &str) -> Result<Option<OrderRow>, PoolError> {
    let row = db
        .get()
        .await?
        .query_opt(
            &format!("SELECT {ORDER_COLUMNS} FROM saga_orders WHERE order_id = $1"),
            &[&order_id],
        )
        .await?;
    Ok(row.as_ref().map(order_row))
}

/// The orders of `ids`, by id.
///
/// # Errors
/// The database's.
pub async fn orders(db: &Client, ids: &[String]) -> anyhow::Result<BTreeMap<String, OrderRow>> {
    let rows = db
        .query(
            &format!("SELECT {ORDER_COLUMNS} FROM saga_orders WHERE order_id = ANY($1)"),
            &[&ids],
        )
        .await
        .context("reading orders")?;
    Ok(rows
        .iter()
        .map(order_row)
        .map(|o| (o.order.order_id.clone(), o))
        .collect())
}

/// Set the stock of `product` in `warehouse`.
///
/// # Errors
/// The database's.
pub async fn restock(
    db: &Client,
    warehouse: &str,
    product: &str,
    available: i32,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO saga_stock (warehouse, product_id, available) VALUES ($1, $2, $3) \
         ON CONFLICT (warehouse, product_id) DO UPDATE SET available = EXCLUDED.available",
        &[&warehouse, &product, &available],
    )
    .await?;
    Ok(())
}

/// Take `quantity` of `product` if that many are available, and record the
/// outcome for the order. Returns whether it was reserved.
///
/// # Errors
/// The database's.
pub async fn reserve(
    db: &impl GenericClient,
    warehouse: &str,
    order: &Order,
) -> Result<bool, tokio_postgres::Error> {
    let reserved = db
        .execute(
            "UPDATE saga_stock SET available = available - $3 \
             WHERE warehouse = $1 AND product_id = $2 AND available >= $3",
            &[&warehouse, &order.product_id, &order.quantity],
        )
        .await?
        > 0;
    db.execute(
        "INSERT INTO saga_reservations (order_id, reserved) VALUES ($1, $2) \
         ON CONFLICT (order_id) DO NOTHING",
        &[&order.order_id, &reserved],
    )
    .await?;
    Ok(reserved)
}

/// The recorded outcome of an order's reservation.
///
/// # Errors
/// The database's.
pub async fn reservation(db: &Pool, order_id: &str) -> Result<Option<bool>, PoolError> {
    Ok(db
        .get()
        .await?
        .query_opt(
            "SELECT reserved FROM saga_reservations WHERE order_id = $1",
            &[&order_id],
        )
        .await?
        .map(|r| r.get(0)))
}

/// The ledger's kinds of entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Charge,
    Refund,
}

/// Book a charge or a refund.
///
/// # Errors
/// The database's.
pub async fn book(
    db: &impl GenericClient,
    order: &Order,
    entry: Entry,
) -> Result<(), tokio_postgres::Error> {
    let kind = match entry {
        Entry::Charge => "charge",
        Entry::Refund => "refund",
    };
    db.execute(
        "INSERT INTO saga_payment_ledger (order_id, kind, amount_cents) VALUES ($1, $2, $3)",
        &[&order.order_id, &kind, &order.amount_cents],
    )
    .await?;
    Ok(())
}

/// What the ledger holds for a set of orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    pub charges: i64,
    pub charged_cents: i64,
    pub refunds: i64,
    pub refunded_cents: i64,
    /// Orders with more than one charge (must stay 0).
    pub charged_twice: i64,
}

/// Sum the ledger over `ids`.
///
/// # Errors
/// The database's.
pub async fn ledger(db: &Client, ids: &[String]) -> anyhow::Result<Ledger> {
    let row = db
        .query_one(
            "SELECT \
               count(*) FILTER (WHERE kind = 'charge'), \
               coalesce(sum(amount_cents) FILTER (WHERE kind = 'charge'), 0)::bigint, \
               count(*) FILTER (WHERE kind = 'refund'), \
               coalesce(sum(amount_cents) FILTER (WHERE kind = 'refund'), 0)::bigint \
             FROM saga_payment_ledger WHERE order_id = ANY($1)",
            &[&ids],
        )
        .await
        .context("summing the ledger")?;
    let twice = db
        .query_one(
            "SELECT count(*) FROM (SELECT order_id FROM saga_payment_ledger \
             WHERE order_id = ANY($1) AND kind = 'charge' GROUP BY order_id HAVING count(*) > 1) t",
            &[&ids],
        )
        .await
        .context("counting double charges")?;
    Ok(Ledger {
        charges: row.get(0),
        charged_cents: row.get(1),
        refunds: row.get(2),
        refunded_cents: row.get(3),
        charged_twice: twice.get(0),
    })
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
            let err = super::pool(&url).await.unwrap_err();
            for shown in [format!("{err}"), format!("{err:#}"), format!("{err:?}")] {
                assert!(!shown.contains("hunter2-s3cr3t"), "{shown}");
                assert!(shown.contains(&port.to_string()), "{shown}");
            }
        }
    }
}
