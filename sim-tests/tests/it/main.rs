//! sim-tests' integration tests (scenarios, properties and faults against the real broker):
//! one binary (`cargo test -p sim-tests --test it`), each former test file a module.
//!
//! A module's path says where `cargo xtask test` runs it again (a libtest
//! name filter, so a new test joins its pass by where it is written):
//! - `compat::` on every older broker the compatibility pass starts
//!   (Kafka 3.9.1): its behaviour depends on the broker version;
//! - `groups::` under `group.protocol=consumer` (KIP-848) as well as
//!   classic: it exercises group membership;
//! - `kip848::` on Kafka 3.9.1 with KIP-848 turned on (v0 heartbeats);
//! - `alone::` (ignored in the shared run) by itself, last: it stops or
//!   restarts the broker;
//! - `cluster::` (ignored in the shared run) on the three-node cluster
//!   (`cargo xtask cluster up`), one at a time, in the step after every
//!   broker pass: the fault suite under load (nodes killed, stopped,
//!   cut off).
//!
//! Everything else runs once, on the main broker, classic groups.

mod postgres_inbox;
mod protocol_migration;
mod slow_control_lane;
mod transactions_v2;

mod groups {
    mod kafka_semantics;
    mod live_props;
    mod scenarios;
}

mod kip848 {
    mod member_epoch;
}

mod alone {
    mod broker_restart;
}

mod cluster {
    mod load;
    mod nodes;

    mod controller_failover;
    mod coordinator_kill;
    mod leader_kill;
    mod node_cut_off;
    mod reassignment;
    mod rolling_restart;
}
