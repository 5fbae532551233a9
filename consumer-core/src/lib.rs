//! # consumer-core
//!
//! The hand-written group coordinator client and fetcher: group membership
//! (classic protocol, as a pure state machine with a thin async driver),
//! assignors (range, roundrobin, sticky, cooperative-sticky), fetch sessions,
//! pause/resume/seek, and generation-fenced offset commits.
//!
//! **Status: not built yet.** This crate is a placeholder in the workspace so
//! the layering (`kafka-wire` ← `consumer-core` ← `resilience`) and the
//! no-C-toolchain check cover it from the start. See the README's status table.

#![forbid(unsafe_code)]

pub use kafka_wire;
