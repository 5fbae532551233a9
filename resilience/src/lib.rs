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
//!
//! **Status:** only the offset tracker and its metadata codec are built (pure,
//! unit- and property-tested). The runtime itself (`Processor`, workers,
//! backpressure, retry, DLT, idempotency, metrics) is not built yet; see the
//! README's status table.

#![forbid(unsafe_code)]

pub mod commit_metadata;
pub mod offset_tracker;

pub use consumer_core;
pub use offset_tracker::OffsetTracker;
