//! # resilience
//!
//! The processing runtime on top of `consumer-core`: polling decoupled from
//! a bounded worker pool, ordering per partition, per key or none, a
//! contiguous-watermark offset tracker with completed offsets carried in
//! the commit metadata, pause/resume backpressure, rebalance-safe draining,
//! blocking retries or retry topics, a dead-letter topic, idempotent
//! processing, exactly-once consume-transform-produce, metrics and tracing.
//!
//! **Promises** (each has a test named in the README's guarantee table):
//! no record is lost; no side effect happens twice when an idempotency key
//! and a [`dedup::DedupStore`] are given; a poison record goes to the DLT
//! and never blocks its partition; an offset is committed only after its
//! record was handled or its DLT write acknowledged; in-flight memory stays
//! within the configured bound (to within one poll); a rebalance never
//! causes a commit for a partition this member no longer owns.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`processor`] | [`Processor`]: poll task, units of work, backpressure, drain on revoke |
//! | [`config`] | [`ProcessorConfig`]: ordering, concurrency, bounds, commit policy, retry, DLT, idempotency (all defaults) |
//! | [`scheduler`] | lanes by [`Ordering`] → which records may start (pure) |
//! | [`offset_tracker`] | completions in any order → the safe commit point (pure) |
//! | [`commit_metadata`] | completed-beyond-the-commit-point offsets in commit metadata (versioned) |
//! | [`retry`] | [`retry::HandlerError`] classification and [`retry::BackoffPolicy`] |
//! | [`failure`] | [`failure::FailurePolicy`]: a failure → retry, wait for a dependency, retry topic, DLT, quarantine (pure); its executor, shared by both processors |
//! | [`retry_topics`] | non-blocking retry chain (`orders.retry.1s` → … → DLT) |
//! | [`dlt`] | dead-letter records with `kafka_dlt-*` provenance headers |
//! | [`dedup`] | [`dedup::DedupStore`]: in-memory, embedded file log, PostgreSQL (feature `postgres`) |
//! | [`eos`] | [`eos::TransactionalProcessor`]: consume-transform-produce in Kafka transactions |
//! | [`shutdown`] | [`shutdown::signal`]: SIGINT or SIGTERM, for `Processor::run` |
//! | [`observe`] | metrics (names, help, the two lags: consumer and commit), the [`observe::Observer`] hook, the live [`observe::Snapshot`] (`Processor::snapshots`); Prometheus `/metrics` (feature `prometheus`) |
//!
//! ## Before the first run
//!
//! - **A new group starts at the end of each partition** unless you say
//!   otherwise: `auto.offset.reset` defaults to `latest`, so records already
//!   in the topic are *skipped*. Set `auto.offset.reset=earliest` to
//!   process them (the examples do).
//! - **Logs need a `tracing` subscriber.** Without one, connection retries
//!   and errors are silent. Two lines (crate `tracing-subscriber`, feature
//!   `env-filter`):
//!   ```no_run
//!   tracing_subscriber::fmt()
//!       .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
//!       .init();
//!   ```
//! - **A tokio runtime** with its I/O and time drivers: `#[tokio::main]` (or
//!   `Builder::new_multi_thread().enable_all()`), with
//!   `tokio = { version = "1", features = ["macros", "rt-multi-thread"] }`.
//!   The runtime spawns its own tasks (one per broker connection, the poll
//!   loop, the handlers); a current-thread runtime works too, with every
//!   handler on that one thread.
//!
//! ## Per-partition ordering, DLT after 3 attempts (the default)
//!
//! A handler returns `Ok(())` when the record's work is done; an `Err` is
//! retried (a [`HandlerError::Retryable`], 1 s then 2 s later) and then
//! dead-lettered, or dead-lettered at once ([`HandlerError::fatal`]).
//! Without a DLT, a record that cannot be handled stalls its partition
//! instead of being skipped. `?` works on I/O and Kafka errors (retried),
//! and on JSON, UTF-8 and number decode errors (dead-lettered at once: see
//! [`HandlerError`]).
//!
//! The crates it builds on are re-exported ([`kafka_wire`] for the
//! producer and records, [`consumer_core`] for the consumer), so
//! `resilience` is the only Kafka dependency an application needs.
//!
//! ```no_run
//! use resilience::{handler_fn, HandlerError, Processor, ProcessorConfig};
//! use resilience::consumer_core::ConsumerConfig;
//! use resilience::kafka_wire::ProducerConfig;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     tracing_subscriber::fmt().init(); // or you see no logs at all
//!     let consumer = ConsumerConfig::builder()
//!         .set("bootstrap.servers", "localhost:9092")?
//!         .set("group.id", "orders-service")?
//!         .set("auto.offset.reset", "earliest")? // the default, latest, skips existing records
//!         .build()?;
//!     let dlt = ProducerConfig::builder().set("bootstrap.servers", "localhost:9092")?.build()?;
//!     let cfg = ProcessorConfig::new(consumer, &["orders"]).dead_letter(dlt);
//!     let save_order = handler_fn(|_tp, record| async move {
//!         let body = record.value.ok_or(HandlerError::fatal("empty order"))?;
//!         let _order = std::str::from_utf8(&body)?; // write it to your database here
//!         Ok(())
//!     });
//!     let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//!     Processor::new(cfg, save_order).run(shutdown).await?;
//!     Ok(())
//! }
//! ```
//!
//! The same handler as a type, for one that holds state (a pool, a client).
//! It borrows the record (no copy per call); its future must be `Send`:
//!
//! ```no_run
//! use resilience::{Handler, HandlerError};
//! use resilience::consumer_core::TopicPartition;
//! use resilience::kafka_wire::records::Record;
//!
//! struct SaveOrder;
//! impl Handler for SaveOrder {
//!     async fn handle(&self, _tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
//!         let body = r.value.as_deref().ok_or(HandlerError::fatal("empty order"))?;
//!         let _order = std::str::from_utf8(body)?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! ## Per-key ordering, batches, retry topics, idempotency
//!
//! ```no_run
//! # use resilience::{Processor, ProcessorConfig, BatchHandler, HandlerError, Ordering};
//! # use resilience::config::KeySource;
//! # use resilience::dedup::FileDedup;
//! # use resilience::consumer_core::{ConsumerConfig, TopicPartition};
//! # use resilience::kafka_wire::{ProducerConfig, records::Record};
//! # use std::{sync::Arc, time::Duration};
//! struct Index;
//! impl BatchHandler for Index {
//!     async fn handle_batch(&self, _tp: &TopicPartition, rs: &[Record]) -> Result<(), HandlerError> {
//!         let _ = rs.len(); // one bulk write
//!         Ok(())
//!     }
//! }
//! # async fn run(consumer: ConsumerConfig, dlt: ProducerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ProcessorConfig::new(consumer, &["orders"])
//!     .ordering(Ordering::PerKey)       // same key in order, keys in parallel
//!     .concurrency(32)
//!     .handler_timeout(Duration::from_secs(10))
//!     .retry_topics(&[Duration::from_secs(1), Duration::from_secs(10)])
//!     .dead_letter(dlt)
//!     .idempotency(KeySource::Header("event-id".into()), Arc::new(FileDedup::open("dedup.log", 1_000_000)?));
//! Processor::batched(cfg, Index, 100).run(std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Unordered: `.ordering(Ordering::Unordered)`. Exactly-once
//! consume-transform-produce: see [`eos`].
//!
//! ## Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `tls`, `scram`, `gzip`, `snappy`, `lz4`, `zstd` | on by default; forwarded to kafka-wire and consumer-core |
//! | `postgres` | `dedup::postgres`: the PostgreSQL `DedupStore` (tokio-postgres) |
//! | `prometheus` | `observe::prometheus`: installs the global `metrics` recorder and serves `GET /metrics` (metrics-exporter-prometheus) |
//!
//! `postgres` and `prometheus` are off by default; all are pure Rust.
//! Without `prometheus` the metrics go to whatever `metrics` recorder the
//! application installs (with none installed, recording does nothing).

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    unused_qualifications,
    clippy::dbg_macro,
    clippy::todo
)]

pub mod commit_metadata;
pub mod config;
pub mod dedup;
pub mod dlt;
pub mod eos;
pub mod failure;
mod handler_fn;
pub mod observe;
pub mod offset_tracker;
mod panics;
pub mod processor;
pub mod retry;
pub mod retry_topics;
pub mod scheduler;
pub mod shutdown;

pub use config::{CommitPolicy, KeySource, ProcessorConfig};
pub use consumer_core;
pub use handler_fn::{handler_fn, HandlerFn};
pub use kafka_wire;
pub use offset_tracker::OffsetTracker;
pub use processor::{BatchHandler, Handler, Processor, Stats};
pub use retry::HandlerError;
pub use scheduler::Ordering;

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The workspace README's examples ("Using the library": the runtime and
/// the producer), compiled as doctests with this crate's dependencies, so
/// an example that needs more than its Cargo snippet lists fails here.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadmeDoctests;
