//! # backpressure
//!
//! Seed 001 rebuilt on the runtime: a service whose downstream is
//! deliberately slow, run through the five situations the seed names
//! (slow processing, a burst, queue saturation, a restart mid-processing,
//! a rebalance under load), printing the seed's numbers once a second and
//! a summary table that checks its claims.
//!
//! The runtime already has the seed's shape: one poll task owns the
//! consumer, a bounded set of workers handles records, fetching pauses at
//! the in-flight bound and resumes below half, a revoke drains and
//! commits, and offsets are committed only after a record was handled.
//! This crate adds no machinery of its own: the numbers come from
//! `Processor::snapshots` and `Stats`, and the load, the counting and the
//! group's lag from the lab (`sim-tests`).
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`service`] | [`service::ServiceConfig`] from property names; the slow downstream; `run` alone with live lines |
//! | [`live`] | [`live::Line`]: in-flight records and bytes, paused partitions, lag, throughput |
//! | [`demo`] | the five situations, each one [`demo::Row`] |
//! | [`summary`] | the table of rows |

pub mod demo;
pub mod live;
pub mod service;
pub mod summary;
