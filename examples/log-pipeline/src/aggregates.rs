//! Redis: how many events per service, level and minute.
//!
//! Each bucket is a **set of event ids** (`SADD`), and its count is the
//! set's size (`SCARD`). Adding an id twice changes nothing, so a
//! redelivered batch can be aggregated again without counting twice, no
//! matter where the first attempt stopped.
//!
//! Why not `HINCRBY` for the rows PostgreSQL's `RETURNING` says were new?
//! That counts each row once only if Redis is updated every time the insert
//! commits. When the handler fails after the commit (Redis unreachable,
//! the process killed, a rebalance), the batch is redelivered, the insert
//! returns no rows, and those events are never counted: the counts drift
//! below the table for good. The set costs memory (an id per event, kept
//! for [`TTL_SECS`]), and buys counts that always converge to a `GROUP BY`
//! over the table.
//!
//! Keys, under a prefix (one per run in the demo and the test):
//!
//! ```text
//! <prefix>:buckets                              SET of "<minute_ms>|<service>|<level>"
//! <prefix>:ids:<minute_ms>|<service>|<level>    SET of event ids
//! ```

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::Mutex;

use crate::event::Enriched;

/// How long a bucket is kept after its last event (one day).
pub const TTL_SECS: i64 = 24 * 3600;

/// A bucket: (minute in ms since the epoch, service, level).
pub type Bucket = (i64, String, String);

/// The counts under one prefix.
pub struct Aggregates {
    client: redis::Client,
    prefix: String,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for Aggregates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregates")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Aggregates {
    /// Connect to `url` (`redis://host:port`) and check it answers.
    ///
    /// # Errors
    /// A bad URL, or Redis unreachable.
    pub async fn open(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let agg = Self {
            client: redis::Client::open(url)?,
            prefix: prefix.to_string(),
            conn: Mutex::new(None),
        };
        agg.connection().await?;
        Ok(agg)
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = self.client.get_multiplexed_async_connection().await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    fn member(b: &Bucket) -> String {
        format!("{}|{}|{}", b.0, b.1, b.2)
    }

    /// Add `rows` to their buckets, in one atomic pipeline.
    ///
    /// # Errors
    /// Redis unreachable or failing (the next call reconnects).
    pub async fn add(&self, rows: &[Enriched]) -> redis::RedisResult<()> {
        let mut by_bucket: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in rows {
            let b = (r.minute_ms, r.event.service.clone(), r.event.level.clone());
            by_bucket
                .entry(Self::member(&b))
                .or_default()
                .push(&r.event.id);
        }
        let index = format!("{}:buckets", self.prefix);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (bucket, ids) in &by_bucket {
            let key = format!("{}:ids:{bucket}", self.prefix);
            pipe.sadd(&key, ids).ignore();
            pipe.expire(&key, TTL_SECS).ignore();
            pipe.sadd(&index, bucket).ignore();
        }
        pipe.expire(&index, TTL_SECS).ignore();
        let mut conn = self.connection().await?;
        let result = pipe.query_async::<()>(&mut conn).await;
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    /// Every bucket's count.
    ///
    /// # Errors
    /// Redis unreachable or failing.
    pub async fn counts(&self) -> redis::RedisResult<BTreeMap<Bucket, u64>> {
        let mut conn = self.connection().await?;
        let buckets: Vec<String> = conn.smembers(format!("{}:buckets", self.prefix)).await?;
        let mut pipe = redis::pipe();
        for b in &buckets {
            pipe.scard(format!("{}:ids:{b}", self.prefix));
        }
        let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
        let mut out = BTreeMap::new();
        for (b, n) in buckets.iter().zip(sizes) {
            // "<minute>|<service>|<level>": a service may hold '|', a level never.
            let (minute, rest) = b.split_once('|').unwrap_or(("0", b));
            let (service, level) = rest.rsplit_once('|').unwrap_or((rest, ""));
            let (minute, service, level) =
                (minute.parse().unwrap_or(0), service.into(), level.into());
            out.insert((minute, service, level), n);
        }
        Ok(out)
    }
}
