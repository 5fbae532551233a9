//! PostgreSQL: one row per event, keyed by event id, written a batch at a
//! time with one statement (`INSERT … SELECT FROM unnest(…) ON CONFLICT
//! (event_id) DO NOTHING`), so a redelivered batch inserts nothing twice.
//!
//! The connections are a pool (`resilience::dedup::postgres::pool`, i.e.
//! deadpool-postgres): a connection found closed is replaced on its next
//! use, so during a PostgreSQL outage every insert fails fast (refused,
//! `HandlerError::Unavailable`: the `Processor` waits) and the first insert
//! after it connects anew.

use std::collections::BTreeMap;
use std::time::Duration;

use resilience::dedup::postgres::deadpool_postgres::Client;
use resilience::dedup::postgres::tokio_postgres::{self, Config};
use resilience::dedup::postgres::{pool_from, Pool, PoolError};

use crate::aggregates::Bucket;
use crate::event::Enriched;

/// How long one connection attempt may take before the insert fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The events table and its connections.
pub struct Store {
    table: String,
    pool: Pool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// A pool of `size` connections to `url`, each attempt bounded by the
/// connect timeout.
fn pool(url: &str, size: usize) -> Result<Pool, PoolError> {
    let mut cfg: Config = url.parse()?;
    cfg.connect_timeout(CONNECT_TIMEOUT);
    Ok(pool_from(cfg, size))
}

/// One connection (admin statements, checks): from a pool of its own,
/// closed when dropped.
///
/// # Errors
/// PostgreSQL unreachable, refusing, or slower than the connect timeout.
pub async fn connect(url: &str) -> Result<Client, PoolError> {
    pool(url, 1)?.get().await
}

impl Store {
    /// A store for `table` (a plain identifier) with at most `connections`
    /// connections, creating the table if it is missing.
    ///
    /// # Errors
    /// PostgreSQL unreachable, or the table cannot be created.
    pub async fn open(url: &str, table: &str, connections: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "table name {table:?}: letters, digits and _ only"
        );
        let pool = pool(url, connections)?;
        pool.get()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                    event_id     text PRIMARY KEY,
                    service      text NOT NULL,
                    level        text NOT NULL,
                    severity     smallint NOT NULL,
                    message      text NOT NULL,
                    message_len  int NOT NULL,
                    event_ms     bigint NOT NULL,
                    minute_ms    bigint NOT NULL,
                    accepted_us  bigint NOT NULL,
                    inserted_us  bigint NOT NULL
                        DEFAULT (extract(epoch from clock_timestamp()) * 1000000)::bigint,
                    kafka_partition int NOT NULL,
                    kafka_offset bigint NOT NULL,
                    processed_by text NOT NULL
                )"
            ))
            .await?;
        Ok(Self {
            table: table.to_string(),
            pool,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Insert `rows` in one statement; the ids of the rows that were new.
    ///
    /// # Errors
    /// PostgreSQL unreachable or failing (`?` in a handler classifies it:
    /// a lost or refused connection is `HandlerError::Unavailable`); a
    /// broken connection is replaced on its next use.
    pub async fn insert(&self, rows: &[Enriched]) -> Result<Vec<String>, PoolError> {
        let client = self.pool.get().await?;
        Ok(self.insert_on(&client, rows).await?)
    }

    async fn insert_on(
        &self,
        client: &tokio_postgres::Client,
        rows: &[Enriched],
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let col = |f: &dyn Fn(&Enriched) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let ids = col(&|r| r.event.id.clone());
        let services = col(&|r| r.event.service.clone());
        let levels = col(&|r| r.event.level.clone());
        let messages = col(&|r| r.event.message.clone());
        let processed_by = col(&|r| r.processed_by.clone());
        let severity: Vec<i16> = rows.iter().map(|r| r.severity).collect();
        let message_len: Vec<i32> = rows.iter().map(|r| r.message_len).collect();
        let event_ms: Vec<i64> = rows.iter().map(|r| r.event.timestamp_ms).collect();
        let minute_ms: Vec<i64> = rows.iter().map(|r| r.minute_ms).collect();
        let accepted_us: Vec<i64> = rows.iter().map(|r| r.event.accepted_us).collect();
        let partition: Vec<i32> = rows.iter().map(|r| r.partition).collect();
        let offset: Vec<i64> = rows.iter().map(|r| r.offset).collect();
        let sql = format!(
            "INSERT INTO {} (event_id, service, level, severity, message, message_len, event_ms,
                             minute_ms, accepted_us, kafka_partition, kafka_offset, processed_by)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::text[],
                                  $6::int[], $7::bigint[], $8::bigint[], $9::bigint[], $10::int[],
                                  $11::bigint[], $12::text[])
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
            self.table
        );
        let inserted = client
            .query(
                &sql,
                &[
                    &ids,
                    &services,
                    &levels,
                    &severity,
                    &messages,
                    &message_len,
                    &event_ms,
                    &minute_ms,
                    &accepted_us,
                    &partition,
                    &offset,
                    &processed_by,
                ],
            )
            .await?;
        Ok(inserted.iter().map(|r| r.get(0)).collect())
    }

    /// Rows per event id that occurs more than once (the primary key
    /// makes this empty; the test checks it anyway), and the stored ids.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn stored_ids(&self) -> anyhow::Result<Vec<String>> {
        let db = self.pool.get().await?;
        let rows = db
            .query(&format!("SELECT event_id FROM {}", self.table), &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// `SELECT minute_ms, service, level, count(*) … GROUP BY 1, 2, 3`:
    /// what the Redis counts must equal.
    ///
    /// # Errors
    /// PostgreSQL unreachable.
    pub async fn group_by(&self) -> anyhow::Result<BTreeMap<Bucket, u64>> {
        let db = self.pool.get().await?;
        let sql = format!(
            "SELECT minute_ms, service, level, count(*) FROM {} GROUP BY 1, 2, 3",
            self.table
        );
        let rows = db.query(&sql, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get::<_, i64>(3) as u64))
            .collect())
    }
}
