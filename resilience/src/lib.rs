//! # resilience
//!
//! The processing runtime: polling decoupled from a bounded worker pool,
//! per-partition or per-key ordering, a contiguous-watermark offset tracker,
//! pause/resume backpressure, rebalance-safe draining, retry with backoff, a
//! dead-letter topic, idempotent processing, metrics and tracing.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`offset_tracker`] | per-partition completions in any order → the safe commit point (pure) |
//! | [`commit_metadata`] | completed-beyond-the-commit-point offsets in commit metadata (versioned) |
//! | [`retry`] | [`retry::HandlerError`] classification and [`retry::BackoffPolicy`] (delays with injectable jitter) |
//! | [`dlt`] | dead-letter records with `kafka_dlt-*` provenance headers |
//! | [`dedup`] | the [`dedup::DedupStore`] trait and a bounded in-memory store |
//!
//! **Status:** the pure building blocks are built and tested (offset tracker,
//! metadata codec, retry policy, DLT records, in-memory dedup store). The
//! runtime that puts them together (`Processor`, workers, backpressure,
//! rebalance draining, metrics, the PostgreSQL store) is not built yet.

#![forbid(unsafe_code)]

pub mod commit_metadata;
pub mod dedup;
pub mod dlt;
pub mod offset_tracker;
pub mod retry;

pub use consumer_core;
pub use offset_tracker::OffsetTracker;
