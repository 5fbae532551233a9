//! Group membership (classic protocol) as a pure state machine.
//!
//! Events and `now` go in ([`Membership::handle_join`], `handle_sync`,
//! `handle_heartbeat`, `handle_request_failed`, `polled`, …); actions come
//! out ([`Membership::poll_action`]) with the next deadline
//! ([`Membership::poll_timeout`]). It never awaits and never reads a clock,
//! so every transition is unit-tested below with a fake clock. The group
//! driver (`group/driver.rs`, through the crate's `GroupMachine` trait)
//! executes the actions; `group/classic.rs` sends the classic requests on
//! the Group lane. Poll liveness and the rebalance listener are the
//! embedded `Liveness` (`group/liveness.rs`), shared with KIP-848.
//!
//! ```text
//!            ┌──────────────────────── NOT_COORDINATOR / coordinator lost ◀───────────┐
//!            ▼                                                                        │
//!   FindCoordinator ──found──▶ Joining ──JoinGroup ok──▶ Syncing ──SyncGroup ok──▶ Stable ──┐
//!            ▲                  │  ▲ MEMBER_ID_REQUIRED (retry with the id, KIP-394)   │   heartbeat every
//!            │                  │  └ REBALANCE_IN_PROGRESS / load in progress (backoff)│   heartbeat.interval
//!            │                  ▼                                                      │
//!            │               Fatal ◀── FENCED_INSTANCE_ID, GROUP_MAX_SIZE_REACHED, …   │
//!            │                                                                         │
//!            └── rejoin ◀── REBALANCE_IN_PROGRESS (heartbeat) · ILLEGAL_GENERATION /
//!                           UNKNOWN_MEMBER_ID (partitions lost) · session timeout ·
//!                           max.poll.interval exceeded (leave on purpose, then wait for poll)
//! ```
//!
//! Metadata (`metadata.max.age.ms`): a stable member asks for a metadata
//! refresh on that period ([`Action::RefreshMetadata`]) and rejoins when
//! what its last assignment was computed from changed: a watched topic's
//! partition count (the leader watches every member's topics, a follower
//! its own), a subscribed topic appearing or disappearing, or a pattern
//! subscription matching other topics (Java's
//! `ConsumerCoordinator.rejoinNeededOrPending`). Metadata is also refreshed
//! before the first join, and before every join of a pattern subscription,
//! so the JoinGroup names the topics the pattern matches now.
//!
//! Invariants:
//! - Partitions are *revoked* (commit allowed) only while this member still
//!   owns them in the current generation; they are *lost* (no commit) when
//!   the generation is gone (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, session
//!   timeout, fencing, poll timeout).
//! - Cooperative (KIP-429): only partitions that move are revoked; a
//!   revocation is followed by an immediate rejoin (the second phase).
//! - Every rejoin carries a reason, logged by the driver.
//! - Partitions that did not exist when the member first saw its
//!   subscription's metadata are reported by
//!   [`Membership::appeared_after_subscribe`] (the consumer starts them at
//!   the earliest offset when uncommitted).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::{Backoff, KafkaCode};

use crate::assignor::{Assignor, Member, RebalanceProtocol, ReplicaRacks};
use crate::group::driver::{GroupMachine, Step};
use crate::group::liveness::Liveness;
pub use crate::group::subscription::TopicSubscription;
use crate::group::{counts, replica_racks, GroupSnapshot};
use crate::protocol::{Assignment, Subscription, CONSUMER_PROTOCOL_VERSION};
use crate::tp::TopicPartition;

/// Membership settings (the `group.*`/`*.timeout.ms` consumer properties).
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub group_id: String,
    /// `group.instance.id`: static membership (KIP-345).
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub max_poll_interval: Duration,
    /// The wait before a join or coordinator lookup is retried, and before
    /// a failed heartbeat is sent again: the n-th consecutive retry waits
    /// [`Backoff::nominal`]`(n)` (no jitter: the machine is deterministic).
    /// A stable generation or a good heartbeat starts over.
    pub retry_backoff: Backoff,
    /// `metadata.max.age.ms`: how often a stable member checks metadata for
    /// partition-count changes, new topics and new pattern matches.
    pub metadata_max_age: Duration,
    /// `client.rack`, sent in the subscription (v3) for rack-aware assignors.
    pub rack: Option<String>,
}

/// Partition count per existing topic (a topic absent from the map does
/// not exist), as the driver reads it from metadata.
pub type PartitionCounts = BTreeMap<String, i32>;

/// The longest a failed metadata check waits before the next try.
const METADATA_RETRY: Duration = Duration::from_secs(1);

/// Where the member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Looking for the coordinator.
    FindingCoordinator,
    /// JoinGroup in flight (or about to be sent).
    Joining,
    /// SyncGroup in flight.
    Syncing { generation: i32, leader: bool },
    /// Assigned and heartbeating.
    Stable { generation: i32 },
    /// Left because the application stopped polling; rejoins on the next poll.
    LeftForPollTimeout,
    /// Left the group on close.
    Left,
    /// Unrecoverable; the message says what to fix.
    Fatal(String),
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    FindCoordinator,
    Join {
        member_id: String,
        group_instance_id: Option<String>,
        session_timeout: Duration,
        rebalance_timeout: Duration,
        /// `(assignor name, subscription bytes)` in preference order.
        protocols: Vec<(String, Bytes)>,
        reason: String,
    },
    Sync {
        generation: i32,
        member_id: String,
        /// Leader only: member id → assignment bytes.
        assignments: Vec<(String, Bytes)>,
    },
    Heartbeat {
        generation: i32,
        member_id: String,
    },
    Leave {
        member_id: String,
        reason: String,
    },
    /// Call the listener's `on_revoked`; commits for these are still valid.
    Revoke(Vec<TopicPartition>),
    /// Call `on_assigned`; start fetching these.
    Assign(Vec<TopicPartition>),
    /// Call `on_lost`; never commit these.
    Lose(Vec<TopicPartition>),
    /// Refresh metadata, then answer with [`Membership::handle_metadata`]
    /// (or [`Membership::handle_metadata_failed`]). `None`: every topic (a
    /// pattern subscription); else these topics.
    RefreshMetadata {
        topics: Option<Vec<String>>,
    },
    /// Give up; the string tells the user what to fix.
    Fatal(String),
}

/// A JoinGroup response, as the driver decodes it.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<KafkaCode>,
    pub generation: i32,
    pub member_id: String,
    pub leader: String,
    /// The assignor the group chose.
    pub protocol_name: Option<String>,
    /// Leader only: every member and its subscription bytes.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// The pure membership state machine.
#[derive(Debug)]
pub struct Membership {
    cfg: MembershipConfig,
    assignors: Vec<Arc<dyn Assignor>>,
    subscription: TopicSubscription,
    /// What we subscribe to now (a pattern's current matches, sorted).
    topics: Vec<String>,
    /// The topics the last JoinGroup named.
    joined_topics: Vec<String>,
    /// Topics the last assignment depended on: every member's if we led
    /// it, else our own.
    watched: BTreeSet<String>,
    /// Partition counts of `watched` when the last assignment was made.
    assignment_metadata: Option<PartitionCounts>,
    /// As leader with a rack-aware assignment (some member sent a rack):
    /// the replicas' racks it was computed from. A change rebalances
    /// (KIP-881), as a partition count change does.
    assignment_racks: Option<ReplicaRacks>,
    /// Partition counts of the subscription when first seen.
    first_seen: Option<PartitionCounts>,
    /// Refresh metadata before the next JoinGroup.
    metadata_before_join: bool,
    /// When a stable member checks metadata next (`None` while one is out).
    next_metadata_refresh: Option<Instant>,
    state: State,
    member_id: String,
    /// The generation of the last successful sync (-1 before).
    generation: i32,
    owned: BTreeSet<TopicPartition>,
    actions: VecDeque<Action>,
    /// Wait until then before the next join/find (backoff).
    retry_at: Option<Instant>,
    /// Consecutive retries since the member was last stable and heard
    /// from: the next backoff is `cfg.retry_backoff.nominal(retries + 1)`.
    retries: u32,
    /// The coordinator answered NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE:
    /// the join or heartbeat after the next FindCoordinator waits for the
    /// backoff (`retry_at`) instead of going at once.
    coordinator_refused: bool,
    pending_join_reason: Option<String>,
    next_heartbeat: Option<Instant>,
    heartbeat_in_flight: bool,
    last_heartbeat_ok: Instant,
    rejoin_after_sync: bool,
    /// When the application last polled, and the rebalance listener that
    /// runs (see [`Membership::listener_started`]).
    liveness: Liveness,
}

fn describe(code: KafkaCode) -> String {
    format!("{code}")
}

impl Membership {
    /// Start looking for the coordinator of `cfg.group_id`, subscribed to
    /// `subscription` (a `Vec<String>` of topic names converts).
    pub fn new(
        cfg: MembershipConfig,
        assignors: Vec<Arc<dyn Assignor>>,
        subscription: impl Into<TopicSubscription>,
        now: Instant,
    ) -> Self {
        let subscription = subscription.into();
        let topics = match &subscription {
            TopicSubscription::Topics(ts) => ts.clone(),
            TopicSubscription::Pattern(_) => Vec::new(),
        };
        let mut m = Self {
            assignors,
            subscription,
            topics,
            joined_topics: Vec::new(),
            watched: BTreeSet::new(),
            assignment_metadata: None,
            assignment_racks: None,
            first_seen: None,
            metadata_before_join: true,
            next_metadata_refresh: None,
            state: State::FindingCoordinator,
            member_id: String::new(),
            generation: -1,
            owned: BTreeSet::new(),
            actions: VecDeque::new(),
            retry_at: None,
            retries: 0,
            coordinator_refused: false,
            pending_join_reason: Some("initial join".into()),
            next_heartbeat: None,
            heartbeat_in_flight: false,
            last_heartbeat_ok: now,
            rejoin_after_sync: false,
            liveness: Liveness::new(cfg.max_poll_interval, cfg.rebalance_timeout, now),
            cfg,
        };
        m.actions.push_back(Action::FindCoordinator);
        m
    }

    pub fn state(&self) -> &State {
        &self.state
    }
    pub fn member_id(&self) -> &str {
        &self.member_id
    }
    pub fn generation(&self) -> i32 {
        self.generation
    }
    /// Partitions this member owns in the current generation.
    pub fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }
    /// The topics this member subscribes to now (for a pattern, the
    /// existing topics it matched at the last metadata check).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Did `tp` not exist yet when this member first saw its
    /// subscription's metadata? True for a partition added to a topic
    /// since, and for every partition of a subscribed topic created (or
    /// first matched by the pattern) since. The consumer starts such a
    /// partition at the earliest offset when the group has no committed
    /// offset for it: with `latest`, records produced to it before the
    /// group assigned it would be skipped forever (KAFKA-12478). False
    /// before any metadata was seen.
    pub fn appeared_after_subscribe(&self, tp: &TopicPartition) -> bool {
        self.first_seen
            .as_ref()
            .is_some_and(|seen| tp.partition >= seen.get(&tp.topic).copied().unwrap_or(0))
    }

    /// May offsets for `tp` be committed now? Only for partitions owned in
    /// the current, stable generation: this is what refuses a late commit
    /// after a rebalance locally, before it reaches the broker.
    pub fn may_commit(&self, tp: &TopicPartition) -> bool {
        matches!(self.state, State::Stable { .. }) && self.owned.contains(tp)
    }

    fn protocol(&self) -> RebalanceProtocol {
        // The group is cooperative only if our first choice is.
        self.assignors
            .first()
            .map(|a| a.rebalance_protocol())
            .unwrap_or(RebalanceProtocol::Eager)
    }

    fn fatal(&mut self, msg: String) {
        let lost: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        if !lost.is_empty() {
            self.actions.push_back(Action::Lose(lost));
        }
        self.actions.push_back(Action::Fatal(msg.clone()));
        self.state = State::Fatal(msg);
        self.next_heartbeat = None;
    }

    /// The generation is gone: partitions are lost, not revoked.
    fn lose_all_and_reset(&mut self, reset_member_id: bool) {
        let lost: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        if !lost.is_empty() {
            self.actions.push_back(Action::Lose(lost));
        }
        self.generation = -1;
        if reset_member_id {
            self.member_id.clear();
        }
    }

    fn rejoin(&mut self, reason: impl Into<String>, now: Instant, backoff: bool) {
        let reason = reason.into();
        if self.protocol() == RebalanceProtocol::Eager && !self.owned.is_empty() {
            // Eager: give everything back (commits still valid) before joining.
            let revoked: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
            self.actions.push_back(Action::Revoke(revoked));
        }
        self.state = State::Joining;
        self.next_heartbeat = None;
        self.heartbeat_in_flight = false;
        self.pending_join_reason = Some(reason);
        self.retry_at = backoff.then(|| now + self.next_backoff());
        // A pattern's matches may have changed since the last join.
        self.metadata_before_join |= self.subscription.is_pattern();
    }

    fn find_coordinator(&mut self, now: Instant) {
        self.state = State::FindingCoordinator;
        self.next_heartbeat = None;
        self.heartbeat_in_flight = false;
        self.retry_at = Some(now + self.next_backoff());
        self.actions.push_back(Action::FindCoordinator);
    }

    /// The wait before the next retry; counts it.
    fn next_backoff(&mut self) -> Duration {
        self.retries = self.retries.saturating_add(1);
        self.cfg.retry_backoff.nominal(self.retries)
    }

    fn refresh_action(&self) -> Action {
        let topics = (!self.subscription.is_pattern()).then(|| {
            let mut ts: BTreeSet<String> = self.watched.clone();
            ts.extend(self.topics.iter().cloned());
            ts.into_iter().collect()
        });
        Action::RefreshMetadata { topics }
    }

    /// The counts of `counts` that belong to our subscription.
    /// When to check metadata next, given what it says now: after
    /// `metadata.max.age.ms`, or after [`METADATA_RETRY`] while a topic
    /// subscribed by name does not exist yet, so that a topic created after
    /// `subscribe` is picked up within a second, not minutes later (Java
    /// refreshes at once for an unknown subscribed topic, too). A pattern
    /// that matches nothing waits the whole age: it may match nothing for
    /// good.
    fn next_check(&self, counts: &PartitionCounts, now: Instant) -> Instant {
        let missing = match &self.subscription {
            TopicSubscription::Topics(ts) => {
                ts.iter().any(|t| counts.get(t).is_none_or(|n| *n <= 0))
            }
            TopicSubscription::Pattern(_) => false,
        };
        let age = if missing {
            self.cfg.metadata_max_age.min(METADATA_RETRY)
        } else {
            self.cfg.metadata_max_age
        };
        now + age
    }

    fn subscribed(&self, counts: &PartitionCounts) -> PartitionCounts {
        counts
            .iter()
            .filter(|(t, n)| **n > 0 && self.subscription.includes(t))
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    fn join_action(&mut self) -> Action {
        self.metadata_before_join = false;
        self.joined_topics = self.topics.clone();
        let owned: Vec<TopicPartition> = self.owned.iter().cloned().collect();
        let protocols = self
            .assignors
            .iter()
            .map(|a| {
                let sub = Subscription {
                    topics: self.topics.clone(),
                    user_data: a.subscription_user_data(&owned, self.generation),
                    owned: owned.as_slice().into(),
                    generation: self.generation,
                    rack: self.cfg.rack.clone(),
                };
                (a.name().to_string(), sub.encode(CONSUMER_PROTOCOL_VERSION))
            })
            .collect();
        Action::Join {
            member_id: self.member_id.clone(),
            group_instance_id: self.cfg.group_instance_id.clone(),
            session_timeout: self.cfg.session_timeout,
            rebalance_timeout: self.cfg.rebalance_timeout,
            protocols,
            reason: self.pending_join_reason.take().unwrap_or_default(),
        }
    }

    /// The coordinator is known (FindCoordinator succeeded).
    pub fn coordinator_found(&mut self, now: Instant) {
        if self.state != State::FindingCoordinator {
            return;
        }
        // After a refusal the node FindCoordinator names may still be the
        // one that refused: a node that leads the group's
        // `__consumer_offsets` partition and has not taken the group over
        // yet (it answers NOT_COORDINATOR until it has). Asked again at
        // once, it refused some 600 times a second for the 3 s it took
        // (sim-tests' `cluster::coordinator_kill` on a busy machine): the
        // backoff stands then, as Java's `retry.backoff.ms` does.
        if !std::mem::take(&mut self.coordinator_refused) {
            self.retry_at = None;
        }
        if self.pending_join_reason.is_none() && self.generation >= 0 {
            // The coordinator moved while we were stable: heartbeat there.
            self.state = State::Stable {
                generation: self.generation,
            };
            self.next_heartbeat = Some(now);
            return;
        }
        self.state = State::Joining;
        self.pending_join_reason
            .get_or_insert_with(|| "coordinator found".into());
    }

    /// A request could not be completed (connection lost, timeout).
    pub fn handle_request_failed(&mut self, now: Instant) {
        match self.state {
            State::Fatal(_) | State::Left | State::LeftForPollTimeout => {}
            State::Joining | State::Syncing { .. } => {
                self.pending_join_reason = Some("a join or sync request failed".into());
                self.find_coordinator(now);
            }
            _ => {
                self.heartbeat_in_flight = false;
                self.find_coordinator(now);
            }
        }
    }

    /// The JoinGroup response. `partitions_per_topic` (from metadata) is used
    /// only if this member is the leader and must assign.
    pub fn handle_join(
        &mut self,
        r: JoinResult,
        partitions_per_topic: &BTreeMap<String, i32>,
        now: Instant,
    ) {
        self.handle_join_with_racks(r, partitions_per_topic, &ReplicaRacks::new(), now);
    }

    /// [`handle_join`](Self::handle_join), with the racks of the replicas
    /// of every partition (from metadata) for a leader's rack-aware
    /// assignor (KIP-881).
    pub fn handle_join_with_racks(
        &mut self,
        r: JoinResult,
        partitions_per_topic: &BTreeMap<String, i32>,
        racks: &ReplicaRacks,
        now: Instant,
    ) {
        if self.state != State::Joining {
            return;
        }
        use KafkaCode as C;
        match r.error {
            None => {}
            Some(C::MemberIdRequired) => {
                // KIP-394: the broker assigned us an id; join again with it.
                self.member_id = r.member_id;
                self.pending_join_reason = Some("rejoining with the member id the broker assigned (KIP-394)".into());
                return;
            }
            Some(C::UnknownMemberId) => {
                self.lose_all_and_reset(true);
                return self.rejoin("the coordinator does not know our member id", now, false);
            }
            Some(C::IllegalGeneration) => {
                self.lose_all_and_reset(false);
                return self.rejoin("our generation is stale", now, false);
            }
            Some(C::RebalanceInProgress | C::CoordinatorLoadInProgress) => {
                return self.rejoin(describe(r.error.unwrap()), now, true);
            }
            Some(C::NotCoordinator | C::CoordinatorNotAvailable) => {
                self.pending_join_reason = Some("the coordinator moved".into());
                self.coordinator_refused = true;
                return self.find_coordinator(now);
            }
            Some(C::FencedInstanceId) => {
                return self.fatal(format!(
                    "FENCED_INSTANCE_ID: another consumer uses group.instance.id {:?} in group {:?}; \
                     give each instance a unique id",
                    self.cfg.group_instance_id.as_deref().unwrap_or(""),
                    self.cfg.group_id
                ))
            }
            Some(C::GroupMaxSizeReached) => {
                return self.fatal(format!(
                    "GROUP_MAX_SIZE_REACHED: group {:?} is full (group.max.size on the broker)",
                    self.cfg.group_id
                ))
            }
            Some(C::InconsistentGroupProtocol) => {
                return self.fatal(format!(
                    "INCONSISTENT_GROUP_PROTOCOL: no assignor in common with the other members of {:?}; \
                     configure partition.assignment.strategy to share one",
                    self.cfg.group_id
                ))
            }
            Some(code) if code.is_retriable() => {
                return self.rejoin(describe(code), now, true);
            }
            Some(code) => {
                return self.fatal(format!(
                    "JoinGroup for {:?} failed with {code}",
                    self.cfg.group_id
                ))
            }
        }
        self.member_id = r.member_id.clone();
        let leader = r.leader == r.member_id;
        self.watched = self.joined_topics.iter().cloned().collect();
        if leader {
            for (_, _, meta) in &r.members {
                if let Ok(sub) = Subscription::decode(meta) {
                    self.watched.extend(sub.topics);
                }
            }
        }
        self.assignment_metadata = Some(
            partitions_per_topic
                .iter()
                .filter(|(t, n)| **n > 0 && self.watched.contains(*t))
                .map(|(t, n)| (t.clone(), *n))
                .collect(),
        );
        self.assignment_racks = (leader && !racks.is_empty()).then(|| racks.clone());
        if self.first_seen.is_none() {
            self.first_seen = Some(self.subscribed(partitions_per_topic));
        }
        // Keep an earlier check (a failed refresh retries soon).
        let next = self.next_check(partitions_per_topic, now);
        self.next_metadata_refresh = Some(self.next_metadata_refresh.map_or(next, |t| t.min(next)));
        let assignments = if leader {
            self.assign_as_leader(&r, partitions_per_topic, racks)
        } else {
            Vec::new()
        };
        self.state = State::Syncing {
            generation: r.generation,
            leader,
        };
        self.actions.push_back(Action::Sync {
            generation: r.generation,
            member_id: self.member_id.clone(),
            assignments,
        });
    }

    fn assign_as_leader(
        &self,
        r: &JoinResult,
        partitions_per_topic: &BTreeMap<String, i32>,
        racks: &ReplicaRacks,
    ) -> Vec<(String, Bytes)> {
        let name = r.protocol_name.as_deref().unwrap_or_default();
        let Some(assignor) = self.assignors.iter().find(|a| a.name() == name) else {
            return Vec::new();
        };
        let members: Vec<Member> = r
            .members
            .iter()
            .map(|(id, instance, meta)| Member {
                member_id: id.clone(),
                group_instance_id: instance.clone(),
                // An undecodable subscription subscribes to nothing.
                subscription: Subscription::decode(meta).unwrap_or_default(),
            })
            .collect();
        assignor
            .assign_with_racks(&members, partitions_per_topic, racks)
            .into_iter()
            .map(|(id, partitions)| {
                let bytes = Assignment {
                    partitions,
                    user_data: None,
                }
                .encode(CONSUMER_PROTOCOL_VERSION);
                (id, bytes)
            })
            .collect()
    }

    /// The SyncGroup response: the assignment bytes, or an error.
    pub fn handle_sync(&mut self, error: Option<KafkaCode>, assignment: &Bytes, now: Instant) {
        let State::Syncing { generation, .. } = self.state else {
            return;
        };
        use KafkaCode as C;
        match error {
            None => {}
            Some(C::RebalanceInProgress) => {
                return self.rejoin("the group rebalanced during sync", now, false)
            }
            Some(C::UnknownMemberId | C::IllegalGeneration) => {
                self.lose_all_and_reset(error == Some(C::UnknownMemberId));
                return self.rejoin(format!("sync failed: {}", describe(error.unwrap())), now, false);
            }
            Some(C::NotCoordinator | C::CoordinatorNotAvailable) => {
                self.pending_join_reason = Some("the coordinator moved during sync".into());
                self.coordinator_refused = true;
                return self.find_coordinator(now);
            }
            Some(C::FencedInstanceId) => {
                return self.fatal(format!(
                    "FENCED_INSTANCE_ID during sync: group.instance.id {:?} is used by another consumer",
                    self.cfg.group_instance_id.as_deref().unwrap_or("")
                ))
            }
            Some(code) if code.is_retriable() => return self.rejoin(describe(code), now, true),
            Some(code) => return self.fatal(format!("SyncGroup failed with {code}")),
        }
        let new: BTreeSet<TopicPartition> = Assignment::decode(assignment)
            .map(|a| a.partitions.into_iter().collect())
            .unwrap_or_default();
        // A static member that rejoins a stable group gets its previous
        // assignment back without a rebalance (KIP-345; as the leader it
        // is told to skip assigning, KIP-814), even when it restarted with
        // another subscription. Partitions of topics it no longer
        // subscribes to are not taken: it rejoins, and a known member
        // whose metadata changed makes the coordinator rebalance (Java's
        // `onJoinComplete` check).
        if let Some(foreign) = new.iter().find(|tp| !self.subscription.includes(&tp.topic)) {
            let reason = format!(
                "the assignment ({foreign} and {} more) does not match the subscription: it \
                 predates a change of subscription (a static member restarted with other \
                 topics); rejoining with the current one",
                new.len() - 1
            );
            return self.rejoin(reason, now, false);
        }
        let revoked: Vec<_> = self.owned.difference(&new).cloned().collect();
        let added: Vec<_> = new.difference(&self.owned).cloned().collect();
        if !revoked.is_empty() {
            // Cooperative: only what moves; it is still ours until now, so
            // the listener may commit it.
            self.actions.push_back(Action::Revoke(revoked.clone()));
        }
        self.owned = new;
        self.generation = generation;
        if !added.is_empty() {
            self.actions.push_back(Action::Assign(added));
        }
        self.state = State::Stable { generation };
        self.retries = 0;
        self.last_heartbeat_ok = now;
        self.next_heartbeat = Some(now + self.cfg.heartbeat_interval);
        if !revoked.is_empty() && self.protocol() == RebalanceProtocol::Cooperative {
            // KIP-429 second phase: rejoin so the revoked partitions can move.
            self.rejoin_after_sync = true;
        }
    }

    /// When a stable member must consider itself expired if no heartbeat
    /// is answered before: the last good heartbeat plus `session.timeout.ms`.
    /// The driver waits for a heartbeat's answer at most until then.
    pub fn session_deadline(&self) -> Option<Instant> {
        matches!(self.state, State::Stable { .. })
            .then(|| self.last_heartbeat_ok + self.cfg.session_timeout)
    }

    /// The driver stopped waiting for a heartbeat's answer at
    /// [`Membership::session_deadline`]: the coordinator has expired this
    /// member, so its partitions are lost and it rejoins (as when no
    /// heartbeat gets through for a session).
    pub fn heartbeat_abandoned(&mut self, now: Instant) {
        self.heartbeat_in_flight = false;
        self.check_timers(now);
    }

    /// The Heartbeat response.
    pub fn handle_heartbeat(&mut self, error: Option<KafkaCode>, now: Instant) {
        self.heartbeat_in_flight = false;
        if !matches!(self.state, State::Stable { .. }) {
            return;
        }
        use KafkaCode as C;
        match error {
            None => {
                self.retries = 0;
                self.last_heartbeat_ok = now;
                self.next_heartbeat = Some(now + self.cfg.heartbeat_interval);
            }
            Some(C::RebalanceInProgress) => self.rejoin("the group is rebalancing", now, false),
            Some(C::IllegalGeneration | C::UnknownMemberId) => {
                let reset = error == Some(C::UnknownMemberId);
                self.lose_all_and_reset(reset);
                self.rejoin(
                    format!(
                        "heartbeat: {}; our partitions were reassigned",
                        describe(error.unwrap())
                    ),
                    now,
                    false,
                );
            }
            Some(C::NotCoordinator | C::CoordinatorNotAvailable) => {
                self.coordinator_refused = true;
                self.find_coordinator(now);
            }
            Some(C::FencedInstanceId) => self.fatal(format!(
                "FENCED_INSTANCE_ID on heartbeat: group.instance.id {:?} was taken over",
                self.cfg.group_instance_id.as_deref().unwrap_or("")
            )),
            Some(code) if code.is_retriable() => {
                self.next_heartbeat = Some(now + self.next_backoff());
            }
            Some(code) => self.fatal(format!("Heartbeat failed with {code}")),
        }
    }

    /// The answer to [`Action::RefreshMetadata`]: partition counts of the
    /// topics it asked for that exist (every non-internal topic when it
    /// asked for all). A stable member rejoins, with the change as the
    /// reason, when its subscription now names other topics (a pattern
    /// matching a new topic) or when a watched topic's partition count
    /// differs from the one its last assignment was computed with (grown,
    /// created, deleted).
    pub fn handle_metadata(&mut self, counts: &PartitionCounts, now: Instant) {
        self.handle_metadata_with_racks(counts, None, now);
    }

    /// The topics whose metadata the last assignment was computed from.
    pub fn watched_topics(&self) -> Vec<String> {
        self.watched.iter().cloned().collect()
    }

    /// Whether [`handle_metadata_with_racks`](Self::handle_metadata_with_racks)
    /// wants the replicas' racks of the watched topics: this member led a
    /// rack-aware assignment (KIP-881).
    pub fn watches_racks(&self) -> bool {
        self.assignment_racks.is_some()
    }

    /// [`handle_metadata`](Self::handle_metadata) with the replicas' racks
    /// of the watched topics (when [`watches_racks`](Self::watches_racks)):
    /// a leader whose rack-aware assignment was computed from other racks
    /// (a partition reassigned to another rack, a broker's rack changed)
    /// rebalances, as Java's leader does (KIP-881).
    pub fn handle_metadata_with_racks(
        &mut self,
        counts: &PartitionCounts,
        racks: Option<&ReplicaRacks>,
        now: Instant,
    ) {
        self.next_metadata_refresh = Some(self.next_check(counts, now));
        if matches!(
            self.state,
            State::Fatal(_) | State::Left | State::LeftForPollTimeout
        ) {
            return;
        }
        if self.subscription.is_pattern() {
            self.topics = self.subscribed(counts).into_keys().collect();
        }
        if self.first_seen.is_none() {
            self.first_seen = Some(self.subscribed(counts));
        }
        if matches!(self.state, State::Stable { .. }) {
            let mut changes = Vec::new();
            if self.topics != self.joined_topics {
                changes.push(format!(
                    "the subscription now matches {:?} (joined with {:?})",
                    self.topics, self.joined_topics
                ));
            }
            if let Some(before) = &self.assignment_metadata {
                let now_count = |t: &str| counts.get(t).copied().filter(|n| *n > 0);
                for t in &self.watched {
                    match (before.get(t).copied(), now_count(t)) {
                        (a, b) if a == b => {}
                        (None, Some(n)) => {
                            changes.push(format!("topic {t} appeared ({n} partitions)"))
                        }
                        (Some(_), None) => changes.push(format!("topic {t} disappeared")),
                        (Some(a), Some(b)) => {
                            changes.push(format!("topic {t} went from {a} to {b} partitions"))
                        }
                        (None, None) => {}
                    }
                }
            }
            if let (Some(before), Some(now_racks)) = (&self.assignment_racks, racks) {
                if before != now_racks {
                    changes.push("the racks of the assigned partitions' replicas changed".into());
                }
            }
            if !changes.is_empty() {
                self.rejoin(
                    format!("metadata changed: {}", changes.join("; ")),
                    now,
                    false,
                );
            }
        }
        // Fresh metadata in hand: a join that follows needs no other.
        self.metadata_before_join = false;
    }

    /// [`Action::RefreshMetadata`] failed: check again soon (at most
    /// `METADATA_RETRY` later); a join that waited for it goes ahead.
    pub fn handle_metadata_failed(&mut self, now: Instant) {
        self.next_metadata_refresh = Some(now + self.cfg.metadata_max_age.min(METADATA_RETRY));
        self.metadata_before_join = false;
    }

    /// When the application last polled (as told by [`Membership::polled`]).
    pub fn last_poll(&self) -> Instant {
        self.liveness.last_poll()
    }

    /// The application called poll: it is alive.
    pub fn polled(&mut self, now: Instant) {
        self.liveness.polled(now);
        if self.state == State::LeftForPollTimeout {
            self.state = State::FindingCoordinator;
            self.pending_join_reason =
                Some("the application polled again after a poll timeout".into());
            self.actions.push_back(Action::FindCoordinator);
        }
    }

    /// Leave the group on close. Static members do not send LeaveGroup, so a
    /// restart within the session timeout causes no rebalance (KIP-345).
    pub fn close(&mut self) {
        let owned: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        if !owned.is_empty() {
            self.actions.push_back(Action::Revoke(owned));
        }
        if self.cfg.group_instance_id.is_none() && !self.member_id.is_empty() {
            self.actions.push_back(Action::Leave {
                member_id: self.member_id.clone(),
                reason: "the consumer is closing".into(),
            });
        }
        self.state = State::Left;
        self.next_heartbeat = None;
    }

    /// The driver hands [`Action::Revoke`] (`revoking` are its partitions)
    /// or [`Action::Lose`] (`revoking` empty) to the application's listener
    /// and waits for it. Until [`Membership::listener_done`], or the
    /// rebalance timeout, [`Membership::poll_action`] gives only the
    /// heartbeats a stable member owes (a slow `on_revoked` must not get
    /// the member expelled), and nothing else is decided: the actions
    /// queued behind the listener (an assignment, a join) wait for it, and
    /// neither the poll nor the session timeout is checked meanwhile.
    pub fn listener_started(&mut self, revoking: &[TopicPartition], now: Instant) {
        self.liveness.listener_started(revoking, now);
    }

    /// The listener [`Membership::listener_started`] waits for has ended
    /// (or will never be heard of).
    pub fn listener_done(&mut self) {
        self.liveness.listener_done();
    }

    /// Is the driver waiting for a rebalance listener?
    pub fn listener_running(&self) -> bool {
        self.liveness.listener_running()
    }

    /// The partitions being revoked: those of a running listener, and
    /// those of an [`Action::Revoke`] not handed out yet (no longer
    /// [`Membership::owned`], still this member's). Commits for them stay
    /// valid until the listener ends.
    pub fn revoking(&self) -> BTreeSet<TopicPartition> {
        self.liveness
            .revoking(self.actions.iter().filter_map(|a| match a {
                Action::Revoke(parts) => Some(parts.as_slice()),
                _ => None,
            }))
    }

    /// The heartbeat a stable member owes at `now`, if any.
    fn heartbeat_due(&mut self, now: Instant) -> Option<Action> {
        let State::Stable { generation } = self.state else {
            return None;
        };
        if self.heartbeat_in_flight || self.next_heartbeat.is_none_or(|t| now < t) {
            return None;
        }
        self.heartbeat_in_flight = true;
        self.next_heartbeat = None;
        Some(Action::Heartbeat {
            generation,
            member_id: self.member_id.clone(),
        })
    }

    /// The next action, taking time into account.
    pub fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.liveness.listener_holds(now, &self.cfg.group_id) {
            return self.heartbeat_due(now);
        }
        self.check_timers(now);
        if let Some(a) = self.actions.pop_front() {
            return Some(a);
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        match self.state {
            State::Joining if self.pending_join_reason.is_some() => {
                self.retry_at = None;
                if self.metadata_before_join {
                    // First join (first sight of the subscription), or a
                    // pattern's join: name the topics it matches now.
                    self.metadata_before_join = false;
                    return Some(self.refresh_action());
                }
                Some(self.join_action())
            }
            State::Stable { .. } => {
                if self.rejoin_after_sync {
                    self.rejoin_after_sync = false;
                    self.rejoin(
                        "cooperative rebalance: second phase after revoking",
                        now,
                        false,
                    );
                    return Some(self.join_action());
                }
                if let Some(heartbeat) = self.heartbeat_due(now) {
                    return Some(heartbeat);
                }
                if self.next_metadata_refresh.is_some_and(|t| now >= t) {
                    self.next_metadata_refresh = None; // until answered
                    return Some(self.refresh_action());
                }
                None
            }
            _ => None,
        }
    }

    fn check_timers(&mut self, now: Instant) {
        if matches!(
            self.state,
            State::Fatal(_) | State::Left | State::LeftForPollTimeout
        ) {
            return;
        }
        if self.liveness.poll_expired(now) {
            // Deliberately leave: a stuck application must not hold partitions.
            tracing::warn!(
                group = %self.cfg.group_id,
                "leaving the group: the application did not poll within max.poll.interval.ms ({:?})",
                self.cfg.max_poll_interval
            );
            let member_id = self.member_id.clone();
            self.lose_all_and_reset(false);
            if !member_id.is_empty() {
                self.actions.push_back(Action::Leave {
                    member_id,
                    reason: "max.poll.interval.ms exceeded".into(),
                });
            }
            self.member_id.clear();
            self.state = State::LeftForPollTimeout;
            self.next_heartbeat = None;
            return;
        }
        if matches!(self.state, State::Stable { .. })
            && now.duration_since(self.last_heartbeat_ok) > self.cfg.session_timeout
        {
            // No heartbeat got through for a whole session: the coordinator
            // has expired us, or died; either way our partitions may belong
            // to someone else now. The member id is kept for the rejoin:
            // a coordinator that expired us answers UNKNOWN_MEMBER_ID and
            // we join anew, one round trip later; but a new coordinator
            // (the old one's node died) loaded the group with us in it,
            // and a JoinGroup under a new id left our old id for it to wait
            // for until that session ended too: the rebalance finished a
            // whole session late (a controller and coordinator killed:
            // 13 s without a record instead of 7).
            self.lose_all_and_reset(false);
            self.rejoin(
                "no successful heartbeat within session.timeout.ms",
                now,
                false,
            );
            self.find_coordinator(now);
        }
    }

    /// When the driver should call [`Membership::poll_action`] again at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stable = matches!(self.state, State::Stable { .. });
        // While a listener runs: the heartbeat a stable member owes.
        let heartbeat = self
            .next_heartbeat
            .filter(|_| stable && !self.heartbeat_in_flight);
        // Metadata checks run only while stable (elsewhere a past instant
        // would have the driver spin).
        let metadata = self.next_metadata_refresh.filter(|_| stable);
        self.liveness.next_wakeup(
            heartbeat,
            [
                self.retry_at,
                self.next_heartbeat,
                metadata,
                Some(self.liveness.poll_deadline()),
            ],
        )
    }
}

/// The group driver's view: the public methods above, and what it reads
/// from metadata and writes to the snapshot.
impl GroupMachine for Membership {
    type Action = Action;

    fn poll_action(&mut self, now: Instant) -> Option<Action> {
        Membership::poll_action(self, now)
    }

    fn step(&self, action: Action) -> Step<Action> {
        match action {
            Action::FindCoordinator => Step::FindCoordinator,
            Action::RefreshMetadata { topics } => Step::RefreshMetadata(topics),
            Action::Revoke(parts) => Step::Revoke(parts),
            Action::Lose(parts) => Step::Lose(parts),
            Action::Assign(parts) => Step::Assign(parts),
            Action::Fatal(msg) => Step::Fatal(msg),
            own @ (Action::Join { .. }
            | Action::Sync { .. }
            | Action::Heartbeat { .. }
            | Action::Leave { .. }) => Step::Protocol(own),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Membership::poll_timeout(self)
    }

    fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    fn liveness_mut(&mut self) -> &mut Liveness {
        &mut self.liveness
    }

    fn polled(&mut self, now: Instant) {
        Membership::polled(self, now);
    }

    fn close(&mut self) {
        Membership::close(self);
    }

    fn left(&self) -> bool {
        self.state == State::Left
    }

    fn listener_done(&mut self) {
        Membership::listener_done(self);
    }

    fn coordinator_found(&mut self, now: Instant) {
        Membership::coordinator_found(self, now);
    }

    fn handle_request_failed(&mut self, now: Instant) {
        Membership::handle_request_failed(self, now);
    }

    fn heartbeat_interval(&self) -> Duration {
        self.cfg.heartbeat_interval
    }

    /// Partition counts of the topics asked for (every non-internal topic
    /// for a pattern), and the replicas' racks when this member led a
    /// rack-aware assignment.
    fn metadata_refreshed(
        &mut self,
        md: &kafka_wire::Metadata,
        asked: Option<&[String]>,
        now: Instant,
    ) {
        let racks = self
            .watches_racks()
            .then(|| replica_racks(md, &self.watched_topics()));
        self.handle_metadata_with_racks(&counts(md, asked), racks.as_ref(), now);
    }

    fn metadata_failed(&mut self, now: Instant) {
        self.handle_metadata_failed(now);
    }

    fn appeared_after_subscribe(&self, tp: &TopicPartition) -> bool {
        Membership::appeared_after_subscribe(self, tp)
    }

    /// The generation is what commits carry; `Classic` once a generation
    /// was joined.
    fn snapshot(&self, snap: &mut GroupSnapshot) {
        snap.generation = self.generation;
        snap.member_id = self.member_id.clone();
        snap.stable = matches!(self.state, State::Stable { .. });
        snap.owned = self.owned.clone();
        snap.revoking = self.revoking();
        if self.generation >= 0 {
            snap.protocol = Some(crate::GroupProtocol::Classic);
        }
    }
}

#[cfg(test)]
mod tests;
