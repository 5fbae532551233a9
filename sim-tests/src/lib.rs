//! # sim-tests
//!
//! Scenario, fault-injection and property tests against the real broker from
//! `cargo xtask broker up`. The tests live in `tests/`; this library will hold
//! the shared support (fault proxy, scenario runners, invariant checks).
//!
//! **Status: not built yet** beyond the workspace slot.
