//! kafka-wire's integration tests: one binary (`cargo test -p kafka-wire --test it`),
//! each former test file a module.
//!
//! A module's path says where `cargo xtask test` runs it again (a libtest
//! name filter, so a new test joins its pass by where it is written):
//! - `compat::` on every older broker the compatibility pass starts
//!   (Kafka 3.9.1): its behaviour depends on the broker version;
//! - `groups::` under `group.protocol=consumer` (KIP-848) as well as
//!   classic: it exercises group membership;
//! - `kip848::` on Kafka 3.9.1 with KIP-848 turned on (v0 heartbeats);
//! - `alone::` (ignored in the shared run) by itself, last: it stops or
//!   restarts the broker.
//!
//! Everything else runs once, on the main broker, classic groups.

mod common;
mod hostile_responses;
mod producer_drop;
mod records_roundtrip;

mod compat {
    mod admin;
    mod broker_connect;
    mod producer;
    mod transactions;
}
