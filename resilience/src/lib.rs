//! # resilience
//!
//! The processing runtime: polling decoupled from a bounded worker pool,
//! per-partition or per-key ordering, a contiguous-watermark offset tracker,
//! pause/resume backpressure, rebalance-safe draining, retry with backoff, a
//! dead-letter topic, idempotent processing, metrics and tracing.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so
//! the layering and the no-C-toolchain check cover it from the start. See the
//! README's status table.

#![forbid(unsafe_code)]

pub use consumer_core;
