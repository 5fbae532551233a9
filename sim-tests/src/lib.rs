//! # sim-tests
//!
//! Scenario, fault-injection and property tests against the real broker from
//! `cargo xtask broker up` (and PostgreSQL from `cargo xtask postgres up`).
//! The tests live in `tests/`; [`support`] holds what they share.

pub mod proxy;
pub mod scenarios;
pub mod support;
