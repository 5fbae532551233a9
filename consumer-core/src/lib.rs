//! # consumer-core
//!
//! The hand-written group coordinator client and fetcher.
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`tp`] | [`TopicPartition`] |
//! | [`protocol`] | consumer-protocol subscription/assignment bytes (Java/librdkafka compatible) |
//! | [`assignor`] | the [`Assignor`] trait; range, roundrobin, sticky, cooperative-sticky |
//!
//! **Status:** the assignors and the consumer protocol are built and
//! property-tested. Group membership, the fetcher and commits are not built
//! yet; see the README's status table.

#![forbid(unsafe_code)]

pub mod assignor;
pub mod protocol;
pub mod tp;

pub use assignor::{Assignor, RebalanceProtocol};
pub use protocol::{Assignment, Subscription};
pub use tp::TopicPartition;
