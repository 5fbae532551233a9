//! Group membership: the seam the consumer sees, one driver, and one
//! directory per group protocol behind it.
//!
//! ```text
//!  Consumer ──subscribe──▶ GroupTask::run ───────┐
//!  ShareConsumer ──subscribe──▶ share_protocol::run ┴▶ Driver::run (driver.rs, one task, the shared arms)
//!     ▲   poll() stamps `polled`;                  │ GroupMachine (pure; Liveness embedded: liveness.rs)
//!     │   close() sets `close`                     │   classic/membership.rs · consumer_protocol/member.rs
//!     │                                            │   · share_protocol/member.rs
//!     │                                            │ Protocol (its own requests, feed back the answers)
//!     │                                            │   classic.rs · consumer_protocol.rs · share_protocol.rs
//!     │                                            ▼ GroupIo (io.rs): kafka-wire's Client, Group lane
//!     └── GroupEvent (Assigned / Revoked / Lost / Fatal; Revoked and Lost wait for the consumer's ack)
//!         GroupSnapshot (generation, member, owned, revoking): what commits are fenced by
//! ```
//!
//! The consumer never learns which protocol runs: it reads only
//! [`GroupEvent`]s and the [`GroupSnapshot`]. Each protocol has a pure
//! machine (a [`driver::GroupMachine`]) and a file with its requests (a
//! [`driver::Protocol`]): [`classic`] (`classic/membership.rs`) and
//! [`consumer_protocol`] (KIP-848, `consumer_protocol/member.rs`), chosen
//! in [`GroupTask::run`] by `group.protocol`; and [`share_protocol`]
//! (KIP-932, `share_protocol/member.rs`), which the share consumer runs
//! through [`share_protocol::run`]. What they share lives here
//! ([`subscription`], partition counts from metadata), in [`driver`] (the
//! loop: coordinator lookup, metadata, the listener hand-off, the assigned
//! event), in [`liveness`] (poll timeout, the running listener), and in
//! [`target`] (a broker-computed assignment, KIP-848 and KIP-932).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use kafka_wire::{Backoff, Client, StrBytes};
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) mod classic;
pub(crate) mod consumer_protocol;
pub(crate) mod driver;
pub(crate) mod io;
pub(crate) mod liveness;
pub(crate) mod share_protocol;
pub(crate) mod subscription;
pub(crate) mod target;

use crate::assignor::ReplicaRacks;
use crate::config::{ConsumerConfig, GroupProtocol};
use crate::tp::TopicPartition;
use classic::membership::PartitionCounts;
use driver::{Driver, Ended, Seam};
use subscription::TopicSubscription;

/// Both protocols' coordinator, join and heartbeat retries: 100 ms
/// doubling to 1 s (Java's `retry.backoff.ms` and `retry.backoff.max.ms`
/// defaults), starting over once the member is heard from.
pub(crate) const RETRY_BACKOFF: Backoff = Backoff::exponential(
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(1),
);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// The name Kafka's docs and logs use for `code`: `GROUP_MAX_SIZE_REACHED`.
pub(crate) fn code_name(code: kafka_wire::KafkaCode) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// What the group task tells the consumer.
#[derive(Debug)]
pub(crate) enum GroupEvent {
    /// Newly assigned partitions, and those of them that appeared after
    /// subscribe (they start at the earliest offset when uncommitted;
    /// empty when `new.partitions.from.earliest` is off).
    Assigned(Vec<TopicPartition>, BTreeSet<TopicPartition>),
    /// Commits for these are still valid until `done` is sent.
    Revoked(Vec<TopicPartition>, oneshot::Sender<()>),
    /// Never commit these.
    Lost(Vec<TopicPartition>, oneshot::Sender<()>),
    Fatal(String),
}

/// What commits are checked against; updated by the group task.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupSnapshot {
    pub generation: i32,
    pub member_id: String,
    pub stable: bool,
    pub owned: BTreeSet<TopicPartition>,
    /// Being revoked right now: commits still allowed (eager `on_revoked`).
    pub revoking: BTreeSet<TopicPartition>,
    pub coordinator: Option<i32>,
    /// The protocol that answered: `Classic` or `Consumer` (never `Auto`).
    pub protocol: Option<GroupProtocol>,
    /// Share groups: the coordinator removed this member (fenced, or its
    /// session ran out) and the Lost it caused is being handed over, so
    /// the records held of those partitions are forgotten, not
    /// acknowledged on the stale session (`share_protocol/member.rs`).
    pub removed: bool,
}

impl GroupSnapshot {
    pub(crate) fn may_commit(&self, tp: &TopicPartition) -> bool {
        (self.stable && self.owned.contains(tp)) || self.revoking.contains(tp)
    }
}

/// Everything a group member's task needs; [`GroupTask::run`] is spawned
/// once per subscribing consumer.
pub(crate) struct GroupTask {
    pub client: Client,
    pub cfg: Arc<ConsumerConfig>,
    pub group_id: String,
    pub subscription: TopicSubscription,
    pub snapshot: Arc<Mutex<GroupSnapshot>>,
    pub events: mpsc::Sender<GroupEvent>,
    pub polled: watch::Receiver<std::time::Instant>,
    pub close: watch::Receiver<bool>,
}

impl GroupTask {
    /// Run the group protocol `group.protocol` names until the member
    /// leaves (close) or fails (a [`GroupEvent::Fatal`] is sent). Under
    /// `auto`, the consumer protocol first, and classic when the broker
    /// does not speak it (one info line says why).
    pub(crate) async fn run(self) {
        let GroupTask {
            client,
            cfg,
            group_id,
            subscription,
            snapshot,
            events,
            polled,
            close,
        } = self;
        let seam = Seam {
            snapshot,
            events,
            polled,
            close,
        };
        let mut driver = Driver::new(
            client,
            group_id.clone(),
            cfg.new_partitions_from_earliest,
            seam,
        );
        let classic = || {
            let m = classic::member(&cfg, &group_id, subscription.clone(), driver::now());
            (classic::Classic::new(&cfg), m)
        };
        let consumer = |may_fall_back| {
            let now = driver::now();
            let m = consumer_protocol::member(
                &cfg,
                &group_id,
                subscription.clone(),
                may_fall_back,
                now,
            );
            (
                consumer_protocol::ConsumerProtocol::new(&cfg, may_fall_back),
                m,
            )
        };
        match cfg.group_protocol {
            GroupProtocol::Classic => {
                let (mut p, mut m) = classic();
                driver.run(&mut p, &mut m).await;
            }
            GroupProtocol::Consumer => {
                let (mut p, mut m) = consumer(false);
                driver.run(&mut p, &mut m).await;
            }
            GroupProtocol::Auto => {
                let (mut p, mut m) = consumer(true);
                if let Ended::FallBack(why) = driver.run(&mut p, &mut m).await {
                    tracing::info!(group = %group_id, "group.protocol=auto: using the classic protocol, because {why}");
                    let (mut p, mut m) = classic();
                    driver.run(&mut p, &mut m).await;
                }
            }
        }
    }
}

/// Partition counts per existing topic from `md`: of `topics`, or of every
/// non-internal topic (`None`). A topic with no partitions yet (being
/// created) counts as absent.
fn counts(md: &kafka_wire::Metadata, topics: Option<&[String]>) -> PartitionCounts {
    let count = |t: &kafka_wire::TopicInfo| {
        (!t.partitions.is_empty()).then(|| (t.name.clone(), t.partitions.len() as i32))
    };
    match topics {
        Some(ts) => ts
            .iter()
            .filter_map(|t| md.topics.get(t).and_then(count))
            .collect(),
        None => md
            .topics
            .values()
            .filter(|t| !t.is_internal)
            .filter_map(count)
            .collect(),
    }
}

/// The racks of the replicas of every partition of `topics` in `md`
/// (KIP-881): each replica's broker's `broker.rack`. A replica whose
/// broker is not in the metadata (offline) or has no rack adds none, as in
/// Java; a partition with none is left out (its racks are unknown).
fn replica_racks(md: &kafka_wire::Metadata, topics: &[String]) -> ReplicaRacks {
    let mut racks = ReplicaRacks::new();
    for t in topics.iter().filter_map(|t| md.topics.get(t)) {
        for p in &t.partitions {
            racks.insert(
                t.name.as_str(),
                p.partition,
                p.replicas
                    .iter()
                    .filter_map(|id| md.brokers.get(id)?.rack.as_deref()),
            );
        }
    }
    racks
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_wire::{Metadata, PartitionInfo, TopicInfo};

    /// Topic `name` with `partitions` partitions, all led by broker 1;
    /// no topic id (the machines' tests set theirs).
    pub(super) fn topic(name: &str, partitions: i32, is_internal: bool) -> (String, TopicInfo) {
        let info = TopicInfo {
            name: name.into(),
            id: [0; 16],
            is_internal,
            error: None,
            partitions: (0..partitions)
                .map(|p| PartitionInfo {
                    partition: p,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    error: None,
                })
                .collect(),
        };
        (name.into(), info)
    }

    #[test]
    fn counts_skip_internal_topics_and_topics_without_partitions() {
        let md = Metadata {
            topics: [
                topic("orders", 3, false),
                topic("__consumer_offsets", 50, true),
                topic("__transaction_state", 50, true),
                topic("being-created", 0, false),
            ]
            .into_iter()
            .collect(),
            ..Metadata::default()
        };
        let all = counts(&md, None);
        assert_eq!(all, [("orders".to_string(), 3)].into_iter().collect());
        let some = counts(
            &md,
            Some(&["orders".into(), "missing".into(), "being-created".into()]),
        );
        assert_eq!(some, all, "absent and partitionless topics do not exist");
    }

    /// KIP-881: a replica's rack is its broker's; an offline replica (its
    /// broker not in the metadata) or a broker without a rack adds none.
    #[test]
    fn replica_racks_come_from_the_replicas_brokers() {
        let broker = |id: i32, rack: Option<&str>| {
            let address = kafka_wire::BrokerAddress {
                host: "localhost".into(),
                port: 9092,
            };
            let rack = rack.map(String::from);
            (id, kafka_wire::BrokerInfo { id, address, rack })
        };
        let (name, mut t) = topic("t", 3, false);
        t.partitions[0].replicas = vec![1, 2];
        t.partitions[1].replicas = vec![3, 9]; // 3 has no rack, 9 is offline
        t.partitions[2].replicas = vec![2, 3];
        let md = Metadata {
            brokers: [
                broker(1, Some("r1")),
                broker(2, Some("r2")),
                broker(3, None),
            ]
            .into_iter()
            .collect(),
            topics: [(name, t)].into_iter().collect(),
            ..Metadata::default()
        };
        let racks = replica_racks(&md, &["t".into(), "missing".into()]);
        let set = |rs: &[&str]| rs.iter().map(|r| r.to_string()).collect();
        assert_eq!(racks.get("t", 0), Some(&set(&["r1", "r2"])));
        assert_eq!(racks.get("t", 1), None, "no rack known");
        assert_eq!(racks.get("t", 2), Some(&set(&["r2"])));
    }
}
