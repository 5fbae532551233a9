//! consumer-core's integration tests: one binary (`cargo test -p consumer-core --test it`),
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
//!   restarts the broker;
//! - `cluster::` (ignored in the shared run) on the three-node cluster
//!   (`cargo xtask cluster up`, racks r1..r3), one at a time, in the
//!   step after every broker pass: it needs followers and racks, and
//!   kills nodes.
//!
//! Everything else runs once, on the main broker, classic groups.

mod common;
mod share;
mod telemetry;

mod cluster {
    mod follower_fetch;
    mod rack_assign;
    mod rebootstrap;
    mod sasl_reauth;
}

mod compat {
    mod consumer;
    mod groups {
        mod group;
        mod java_interop;
        mod kip848 {
            mod group_protocol;
        }
    }
}
