//! # consumer-core
//!
//! The hand-written group coordinator client and fetcher. Built: the three
//! group protocols Kafka has, on one group driver:
//!
//! - **classic** (`group.protocol=classic`, the default): JoinGroup,
//!   SyncGroup, Heartbeat; eager or cooperative rebalancing (KIP-429),
//!   static members (KIP-345), client-side assignors;
//! - **KIP-848** (`group.protocol=consumer`, or `auto`): the broker
//!   assigns (`group.remote.assignor`), members reconcile by
//!   ConsumerGroupHeartbeat; Kafka 4.0+ (3.9 with it turned on);
//! - **share groups** (KIP-932, Kafka 4.2+): [`share::ShareConsumer`],
//!   records handed to one member at a time under an acquisition lock and
//!   acknowledged one by one (ACCEPT, RELEASE, REJECT).
//!
//! ## Layout
//!
//! | module | what lives there |
//! |---|---|
//! | [`tp`] | [`TopicPartition`] |
//! | [`protocol`] | consumer-protocol subscription/assignment bytes (Java/librdkafka compatible) |
//! | [`assignor`] | the [`Assignor`] trait; range, roundrobin, sticky, cooperative-sticky |
//! | [`config`] | [`ConsumerConfig`]: defaults in one place, Kafka property names |
//! | [`fetch`] | the fetch path: positions, pure build-request/apply-response steps, [`fetch::cursor`] (one partition's response → records: CRC, read_committed), [`fetch::session`] (KIP-227, pure) |
//! | [`consumer`] | [`Consumer`]: subscribe (names or a pattern)/assign, poll, pause/resume/seek; the fetch path's I/O |
//! | `committer` | [`Committer`]: generation- and incarnation-fenced commits, committed offsets |
//! | [`stream`] | [`stream::RecordStream`]: the consumer as a `Stream` |
//! | [`share`] | share groups (KIP-932): [`share::ShareConsumer`], its session, fetch path and member |
//! | `group` | the seam the consumer sees (events in, snapshots out); `group/driver.rs`: the one driver of every protocol's pure machine |
//! | [`membership`] | the classic protocol as a pure state machine (events + `now` in, [`Action`]s out); lives in `group/classic/` |
//! | [`error`] | [`ConsumerError`] |
//!
//! ## Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), consumer_core::ConsumerError> {
//! use std::time::Duration;
//! use consumer_core::{Consumer, ConsumerConfig};
//!
//! let mut consumer = Consumer::connect(
//!     ConsumerConfig::builder()
//!         .set("bootstrap.servers", "127.0.0.1:9092")?
//!         .set("group.id", "billing")?
//!         .set("auto.offset.reset", "earliest")?
//!         .set("partition.assignment.strategy", "cooperative-sticky")?
//!         .build()?, // enable.auto.commit is false: commit after processing
//! )
//! .await?;
//! consumer.subscribe(&["orders"])?;
//! loop {
//!     for batch in consumer.poll(Duration::from_secs(1)).await? {
//!         for record in &batch.records {
//!             // handle(record) ...
//!         }
//!         if let Some(last) = batch.records.last() {
//!             // Refused locally if a rebalance took the partition away.
//!             consumer.commit(&[(batch.tp.clone(), last.offset + 1)]).await?;
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! ## Membership states
//!
//! ```text
//! FindCoordinator ─▶ Joining ─▶ Syncing ─▶ Stable ─(heartbeat REBALANCE_IN_PROGRESS)─▶ Joining
//!        ▲              │                     │ ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID / session timeout:
//!        └─ NOT_COORDINATOR ◀─────────────────┘ partitions lost, then rejoin
//!                 FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, … ─▶ Fatal
//! ```
//! (Full diagram and every transition: [`membership`].)
//!
//! KIP-848 (`group.protocol=consumer`) runs on the same driver
//! (`group/driver.rs`): its member is in `group/consumer_protocol/member.rs`.

#![forbid(unsafe_code)]
#![warn(
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    unused_qualifications,
    clippy::dbg_macro,
    clippy::todo
)]

pub mod assignor;
mod committer;
pub mod config;
pub mod consumer;
pub mod error;
pub mod fetch;
mod group;
pub mod protocol;
pub mod share;
pub mod stream;
pub mod tp;

pub use assignor::{Assignor, RebalanceProtocol};
pub use config::{ConsumerConfig, GroupProtocol, IsolationLevel, OffsetReset};
pub use consumer::{
    CommittedOffset, Committer, Consumer, OffsetToCommit, PartitionPosition, PartitionRecords,
    RebalanceListener,
};
pub use error::ConsumerError;
pub use membership::{Action, Membership, MembershipConfig, State, TopicSubscription};
pub use protocol::{Assignment, Subscription};
pub use tp::TopicPartition;

/// The classic group protocol's state machine (`group/classic/membership.rs`).
pub use group::classic::membership;

/// The former path of [`fetch::cursor`].
pub use fetch::cursor as fetcher;
/// The former path of [`fetch::session`].
pub use fetch::session as fetch_session;

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
