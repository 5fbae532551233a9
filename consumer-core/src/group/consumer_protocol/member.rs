//! A KIP-848 group member (the `consumer` group protocol) as a pure state
//! machine.
//!
//! The broker computes the assignment; the member heartbeats
//! (ConsumerGroupHeartbeat), reconciles what the broker assigns (revoke
//! first, then assign), and acknowledges by sending the partitions it owns.
//! Events and `now` go in ([`Member::handle_heartbeat`],
//! [`Member::handle_request_failed`], [`Member::handle_metadata`],
//! [`Member::polled`], [`Member::listener_done`], …); actions come out
//! ([`Member::poll_action`]) with the next deadline
//! ([`Member::poll_timeout`]), through the crate's [`GroupMachine`] trait.
//! It never awaits and never reads a clock; the group driver
//! (`group/driver.rs`) executes the actions, and
//! `group/consumer_protocol.rs` sends the heartbeats. Poll liveness and the
//! rebalance listener are the embedded [`Liveness`], shared with classic.
//!
//! ```text
//!                ┌──── NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE / request failed ◀──┐
//!                ▼                                                                     │
//!   FindCoordinator ──found──▶ Joining (epoch 0, full heartbeat) ──ok──▶ Stable (epoch > 0)
//!        ▲                          │                                    │  heartbeat every interval the
//!        │                          │ UNSUPPORTED_VERSION (auto)          │  broker returns; reconcile each
//!        │                          ▼                                    │  new assignment: Revoke, Assign,
//!        │                    FellBack (classic runs instead)            │  then an immediate heartbeat with
//!        │                                                               │  the owned partitions (the ack)
//!        ├── rejoin, epoch 0 ◀── FENCED_MEMBER_EPOCH (same member id) ───┤  partitions lost
//!        ├── rejoin, epoch 0 ◀── no heartbeat answered in the group's ───┤  partitions lost
//!        │                       session timeout (same member id)        │
//!        │                   ◀── UNKNOWN_MEMBER_ID (a fresh member id) ──┤  partitions lost
//!        └── next poll ◀── LeftForPollTimeout ◀── max.poll.interval.ms ──┘  partitions lost, epoch -1 sent
//!   Joining ◀── UNRELEASED_INSTANCE_ID (backoff), for the group's session timeout + 5 s:
//!               a crashed predecessor holds the group.instance.id until its session ends
//!   Fatal ◀── GROUP_AUTHORIZATION_FAILED, UNRELEASED_INSTANCE_ID past that, UNSUPPORTED_ASSIGNOR,
//!             GROUP_MAX_SIZE_REACHED, FENCED_INSTANCE_ID, INVALID_REQUEST, INVALID_REGULAR_EXPRESSION, …
//!   close: Revoke(owned), then a heartbeat with epoch -1 (-2 for a static member: KIP-345's
//!          temporary leave, so a restart within the session timeout keeps the assignment)
//! ```
//!
//! Invariants:
//! - A heartbeat is **full** (every field) when joining and after any
//!   error or failed request; otherwise it carries only what changed
//!   (KIP-848: null means unchanged).
//! - At most one heartbeat is in flight.
//! - Partitions are revoked (commits still valid) only while the member
//!   epoch is current; on fencing they are lost (never committed).
//! - Assigned partitions whose topic id metadata does not resolve yet are
//!   kept in the target, and metadata is refreshed; they are assigned
//!   once resolved.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::{Backoff, KafkaCode};

use crate::group::driver::{GroupMachine, Step};
use crate::group::liveness::{Liveness, Session};
use crate::group::subscription::TopicSubscription;
pub(crate) use crate::group::target::{HeartbeatResult, TopicId, TopicIdPartitions};
use crate::group::target::{Moves, Target, TopicIds};
use crate::group::{code_name, GroupSnapshot};
use crate::tp::TopicPartition;

/// Member settings (the `group.*` consumer properties that 848 uses).
#[derive(Clone)]
pub(crate) struct MemberConfig {
    pub group_id: String,
    /// `group.instance.id`: static membership.
    pub group_instance_id: Option<String>,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// `group.remote.assignor`: a server-side assignor (`uniform`,
    /// `range`), or the broker's default.
    pub server_assignor: Option<String>,
    /// Sent as the rebalance timeout (`max.poll.interval.ms`, as Java).
    pub max_poll_interval: Duration,
    /// The wait before the coordinator is looked up again and before a
    /// failed heartbeat is retried: the n-th consecutive retry waits
    /// [`Backoff::nominal`]`(n)` (no jitter: the machine is deterministic).
    /// A successful heartbeat starts over.
    pub retry_backoff: Backoff,
    /// Until the broker's first answer says otherwise.
    pub heartbeat_interval: Duration,
    /// `group.protocol=auto`: an UNSUPPORTED_VERSION answer before the
    /// first successful heartbeat means "use classic", not an error.
    pub may_fall_back: bool,
    /// A fresh member id (a random UUID in production): at start, and
    /// after UNKNOWN_MEMBER_ID.
    pub new_member_id: Arc<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for MemberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberConfig")
            .field("group_id", &self.group_id)
            .field("group_instance_id", &self.group_instance_id)
            .field("server_assignor", &self.server_assignor)
            .field("max_poll_interval", &self.max_poll_interval)
            .field("may_fall_back", &self.may_fall_back)
            .finish_non_exhaustive()
    }
}

/// Where the member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    FindingCoordinator,
    /// A heartbeat with epoch 0 is due or in flight.
    Joining,
    /// In the group with a member epoch > 0.
    Stable,
    /// Left because the application stopped polling; rejoins on the next poll.
    LeftForPollTimeout,
    /// Left on close.
    Left,
    /// The broker does not speak the protocol; the classic one runs instead.
    FellBack(String),
    /// Unrecoverable; the message says what to fix.
    Fatal(String),
}

/// One ConsumerGroupHeartbeat to send. `None` fields are "unchanged".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Heartbeat {
    pub member_id: String,
    /// 0 to join, the current epoch, -1 to leave, -2 for a static member's
    /// temporary leave.
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: Option<i32>,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// A server-side regex (v1; RE2/J, whole-name match).
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions this member owns (the reconciliation's ack).
    pub owned: Option<TopicIdPartitions>,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    FindCoordinator,
    Heartbeat(Heartbeat),
    /// Resolve topic ids: answer with [`Member::handle_metadata`].
    RefreshMetadata,
    /// Call `on_revoked`; commits for these stay valid until it returns.
    Revoke(Vec<TopicPartition>),
    /// Call `on_assigned`; start fetching these.
    Assign(Vec<TopicPartition>),
    /// Call `on_lost`; never commit these.
    Lose(Vec<TopicPartition>),
    /// Leave the group: a heartbeat with this epoch (-1, or -2 for a
    /// static member); the answer is not awaited by the machine.
    Leave(Heartbeat),
    /// The broker does not support the consumer protocol: run classic.
    FallBack(String),
    Fatal(String),
}

/// Queued work: an action, or the ack heartbeat that ends a reconciliation.
#[derive(Debug)]
enum Queued {
    Out(Action),
    Ack,
}

/// The pure KIP-848 member.
#[derive(Debug)]
pub(crate) struct Member {
    cfg: MemberConfig,
    subscription: TopicSubscription,
    state: State,
    member_id: String,
    member_epoch: i32,
    owned: BTreeSet<TopicPartition>,
    /// The broker's latest assignment (by topic id).
    target: Option<Target>,
    /// Topic names by id, and ids by name, from metadata.
    ids: TopicIds,
    /// Partition counts when the subscription's metadata was first seen.
    first_seen: Option<HashMap<String, i32>>,
    metadata_wanted: bool,
    metadata_in_flight: bool,
    steps: VecDeque<Queued>,
    /// Send every field in the next heartbeat.
    full: bool,
    /// What the broker last heard as our owned partitions.
    acked: Option<BTreeSet<TopicPartition>>,
    /// The next heartbeat acknowledges a reconciliation (carries `owned`).
    ack_due: bool,
    heartbeat_interval: Duration,
    next_heartbeat: Option<Instant>,
    heartbeat_in_flight: bool,
    retry_at: Option<Instant>,
    /// Consecutive retries since the last successful heartbeat.
    retries: u32,
    /// A successful heartbeat was answered since start (no fallback after).
    ever_joined: bool,
    /// When the application last polled, and the rebalance listener that
    /// runs (its deadline: `max.poll.interval.ms`, the rebalance timeout
    /// this member sends).
    liveness: Liveness,
    /// The member's session at the coordinator: the group's session
    /// timeout (`consumer.session.timeout.ms`, the broker's to set under
    /// KIP-848) once the driver learned it, and the last answered
    /// heartbeat.
    session: Session,
    /// Since when joins have been refused with UNRELEASED_INSTANCE_ID (see
    /// [`UNRELEASED_GRACE`]); `None` once one is answered.
    unreleased_since: Option<Instant>,
}

/// How long a static member keeps retrying a join refused with
/// UNRELEASED_INSTANCE_ID past the group's session timeout (45 s, Kafka's
/// default, while it is unknown). A member that crashed never left: its
/// `group.instance.id` stays held until its session ends, so a restart
/// within the session (a pod killed and started again) is refused until
/// then. Only after a whole session plus this is it another live member
/// using the id: fatal.
const UNRELEASED_GRACE: Duration = Duration::from_secs(5);

impl Member {
    /// A member of `cfg.group_id` subscribed to `subscription`, looking for
    /// its coordinator.
    pub(crate) fn new(cfg: MemberConfig, subscription: TopicSubscription, now: Instant) -> Self {
        let member_id = (cfg.new_member_id)();
        let heartbeat_interval = cfg.heartbeat_interval;
        let liveness = Liveness::new(cfg.max_poll_interval, cfg.max_poll_interval, now);
        Self {
            cfg,
            subscription,
            state: State::FindingCoordinator,
            member_id,
            member_epoch: 0,
            owned: BTreeSet::new(),
            target: None,
            ids: TopicIds::default(),
            first_seen: None,
            // Before the first join: what exists now, so partitions that
            // appear later start at the earliest offset (invariant 45).
            metadata_wanted: true,
            metadata_in_flight: false,
            steps: VecDeque::from([Queued::Out(Action::FindCoordinator)]),
            full: true,
            acked: None,
            ack_due: false,
            heartbeat_interval,
            next_heartbeat: None,
            heartbeat_in_flight: false,
            retry_at: None,
            retries: 0,
            ever_joined: false,
            liveness,
            session: Session::new(now),
            unreleased_since: None,
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }
    pub(crate) fn member_id(&self) -> &str {
        &self.member_id
    }
    /// The member epoch: what commits are fenced by (OffsetCommit v9).
    pub(crate) fn member_epoch(&self) -> i32 {
        self.member_epoch
    }
    pub(crate) fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// Partitions being revoked: commits stay valid until the listener ends.
    pub(crate) fn revoking(&self) -> BTreeSet<TopicPartition> {
        self.liveness
            .revoking(self.steps.iter().filter_map(|s| match s {
                Queued::Out(Action::Revoke(parts)) => Some(parts.as_slice()),
                _ => None,
            }))
    }

    fn push(&mut self, a: Action) {
        self.steps.push_back(Queued::Out(a));
    }

    fn lose_all(&mut self) {
        let lost: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        // Queued reconciliation steps are void: the epoch is gone.
        self.steps.retain(|s| {
            !matches!(
                s,
                Queued::Ack | Queued::Out(Action::Revoke(_) | Action::Assign(_))
            )
        });
        if !lost.is_empty() {
            self.push(Action::Lose(lost));
        }
        self.target = None;
        self.acked = None;
    }

    fn fatal(&mut self, msg: String) {
        self.lose_all();
        self.push(Action::Fatal(msg.clone()));
        self.state = State::Fatal(msg);
        self.next_heartbeat = None;
    }

    /// Rejoin with epoch 0 and a full heartbeat.
    fn rejoin(&mut self, now: Instant, backoff: bool) {
        self.member_epoch = 0;
        self.session.answered(now);
        self.state = State::Joining;
        self.full = true;
        self.next_heartbeat = Some(if backoff {
            now + self.next_backoff()
        } else {
            now
        });
    }

    /// Refused with UNRELEASED_INSTANCE_ID, waiting for the holder's
    /// session to end (the driver then asks the group's session timeout).
    pub(crate) fn waiting_for_release(&self) -> bool {
        self.unreleased_since.is_some()
    }

    /// May a join refused with UNRELEASED_INSTANCE_ID be retried: within
    /// the group's session timeout (45 s while unknown) plus
    /// [`UNRELEASED_GRACE`] of the first refusal?
    fn may_wait_for_release(&mut self, now: Instant) -> bool {
        let since = *self.unreleased_since.get_or_insert(now);
        let session = self.session.timeout().unwrap_or(Duration::from_secs(45));
        now.saturating_duration_since(since) < session + UNRELEASED_GRACE
    }

    fn find_coordinator(&mut self, now: Instant) {
        self.state = State::FindingCoordinator;
        self.full = true;
        self.next_heartbeat = None;
        self.retry_at = Some(now + self.next_backoff());
        self.push(Action::FindCoordinator);
    }

    /// The wait before the next retry; counts it.
    fn next_backoff(&mut self) -> Duration {
        self.retries = self.retries.saturating_add(1);
        self.cfg.retry_backoff.nominal(self.retries)
    }

    /// What the broker hears this member owns: what the application has,
    /// including partitions whose revocation is still running.
    fn reported(&self) -> BTreeSet<TopicPartition> {
        let mut out = self.owned.clone();
        out.extend(self.liveness.revoking([]));
        out
    }

    fn heartbeat(&mut self, epoch: i32) -> Heartbeat {
        let full = self.full || epoch == 0;
        let ack = std::mem::take(&mut self.ack_due);
        let mut hb = Heartbeat {
            member_id: self.member_id.clone(),
            member_epoch: epoch,
            ..Heartbeat::default()
        };
        if full {
            hb.instance_id = self.cfg.group_instance_id.clone();
            hb.rack_id = self.cfg.rack_id.clone();
            hb.rebalance_timeout_ms = Some(self.cfg.max_poll_interval.as_millis() as i32);
            hb.server_assignor = self.cfg.server_assignor.clone();
            match &self.subscription {
                TopicSubscription::Topics(ts) => hb.subscribed_topic_names = Some(ts.clone()),
                TopicSubscription::Pattern(re) => {
                    hb.subscribed_topic_regex = Some(re.as_str().to_string())
                }
            }
        }
        if full || ack {
            let reported = self.reported();
            hb.owned = Some(self.ids.by_id(&reported));
            self.acked = Some(reported);
        }
        self.full = false;
        hb
    }

    /// Handle the heartbeat's answer.
    pub(crate) fn handle_heartbeat(&mut self, r: HeartbeatResult, now: Instant) {
        self.heartbeat_in_flight = false;
        if !matches!(self.state, State::Joining | State::Stable) {
            return; // left or failed meanwhile
        }
        let Some(code) = r.error else {
            self.unreleased_since = None;
            if let Some(id) = r.member_id.filter(|id| !id.is_empty()) {
                self.member_id = id;
            }
            self.member_epoch = r.member_epoch;
            if r.heartbeat_interval_ms > 0 {
                self.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms as u64);
            }
            self.ever_joined = true;
            self.retries = 0;
            self.session.answered(now);
            self.state = State::Stable;
            self.next_heartbeat = Some(now + self.heartbeat_interval);
            if let Some(assignment) = r.assignment {
                self.target = Some(Target::from_wire(assignment));
                self.reconcile();
            }
            return;
        };
        let detail = r
            .error_message
            .filter(|m| !m.is_empty())
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        // Any error: the next heartbeat carries every field.
        self.full = true;
        use KafkaCode as K;
        if code != K::UnreleasedInstanceId {
            self.unreleased_since = None;
        }
        match code {
            K::UnreleasedInstanceId if self.may_wait_for_release(now) => {
                tracing::warn!(
                    group = %self.cfg.group_id,
                    instance = self.cfg.group_instance_id.as_deref().unwrap_or_default(),
                    "UNRELEASED_INSTANCE_ID{detail}: a member that did not leave (one that crashed) \
                     still holds this group.instance.id until its session ends; retrying"
                );
                self.rejoin(now, true);
            }
            K::NotCoordinator | K::CoordinatorNotAvailable => self.find_coordinator(now),
            K::CoordinatorLoadInProgress => {
                self.next_heartbeat = Some(now + self.next_backoff());
            }
            K::FencedMemberEpoch => {
                tracing::info!(group = %self.cfg.group_id, member_epoch = self.member_epoch, "fenced (FENCED_MEMBER_EPOCH): partitions lost; rejoining with the same member id");
                self.lose_all();
                self.rejoin(now, false);
            }
            K::UnknownMemberId => {
                tracing::info!(group = %self.cfg.group_id, "the coordinator does not know this member (UNKNOWN_MEMBER_ID): partitions lost; rejoining with a fresh member id");
                self.lose_all();
                self.member_id = (self.cfg.new_member_id)();
                self.rejoin(now, false);
            }
            K::UnsupportedVersion if self.cfg.may_fall_back && !self.ever_joined => {
                let why = format!(
                    "the broker answered UNSUPPORTED_VERSION to ConsumerGroupHeartbeat{detail}"
                );
                self.state = State::FellBack(why.clone());
                self.next_heartbeat = None;
                self.push(Action::FallBack(why));
            }
            K::UnsupportedVersion => self.fatal(format!(
                "group {}: the broker does not support the consumer group protocol (KIP-848){detail}; \
                 set group.protocol=classic, or enable it on the broker \
                 (group.coordinator.rebalance.protocols=classic,consumer)",
                self.cfg.group_id
            )),
            K::GroupAuthorizationFailed
            | K::TopicAuthorizationFailed
            | K::InvalidRequest
            | K::UnreleasedInstanceId
            | K::UnsupportedAssignor
            | K::GroupMaxSizeReached
            | K::FencedInstanceId
            | K::InvalidRegularExpression
            | K::GroupIdNotFound
            | K::InconsistentGroupProtocol => {
                let hint = match code {
                    K::UnreleasedInstanceId | K::FencedInstanceId => {
                        "; another live member uses this group.instance.id"
                    }
                    K::UnsupportedAssignor => {
                        "; check group.remote.assignor (the broker offers uniform and range by default)"
                    }
                    K::InconsistentGroupProtocol => {
                        "; the group's members use a protocol this one cannot join"
                    }
                    _ => "",
                };
                self.fatal(format!(
                    "group {}: ConsumerGroupHeartbeat failed with {}{detail}{hint}",
                    self.cfg.group_id,
                    code_name(code)
                ))
            }
            other => {
                tracing::warn!(group = %self.cfg.group_id, error = %other, "ConsumerGroupHeartbeat failed{detail}; retrying");
                self.next_heartbeat = Some(now + self.next_backoff());
            }
        }
    }

    /// Topic names for ids, and partition counts, from a metadata refresh.
    pub(crate) fn handle_metadata(
        &mut self,
        topics: impl IntoIterator<Item = (TopicId, String, i32)>,
        _now: Instant,
    ) {
        self.metadata_in_flight = false;
        let mut counts = HashMap::new();
        for (id, name, partitions) in topics {
            self.ids.learn(id, &name);
            if partitions > 0 && self.subscription.includes(&name) {
                counts.insert(name, partitions);
            }
        }
        if self.first_seen.is_none() {
            self.first_seen = Some(counts);
        }
        self.metadata_wanted = false;
        self.reconcile();
    }

    /// The metadata refresh failed: try again later.
    pub(crate) fn handle_metadata_failed(&mut self) {
        self.metadata_in_flight = false;
    }

    /// Compare the target with what is owned, and queue the steps: revoke
    /// first, then assign, then the ack heartbeat. Waits while a previous
    /// reconciliation's steps are queued or its listener runs.
    fn reconcile(&mut self) {
        if self.state != State::Stable || self.liveness.listener_running() || !self.steps.is_empty()
        {
            return;
        }
        let Some(target) = &self.target else {
            return;
        };
        let (resolved, unresolved) = target.resolve(&self.ids);
        if unresolved {
            // Keep them in the target; assign them once metadata knows them.
            self.metadata_wanted = true;
        }
        let Moves { revoke, assign } = Moves::between(&self.owned, &resolved);
        if revoke.is_empty() && assign.is_empty() {
            if self.acked.as_ref() != Some(&self.owned) {
                self.steps.push_back(Queued::Ack);
            }
            return;
        }
        if !revoke.is_empty() {
            for tp in &revoke {
                self.owned.remove(tp);
            }
            self.push(Action::Revoke(revoke));
        }
        if !assign.is_empty() {
            // Owned once handed to the application (in `poll_action`).
            self.push(Action::Assign(assign));
        }
        self.steps.push_back(Queued::Ack);
    }

    /// The epoch a leaving member sends: -2 keeps a static member's
    /// assignment for the session timeout (KIP-345 under 848).
    fn leave_epoch(&self) -> i32 {
        if self.cfg.group_instance_id.is_some() {
            -2
        } else {
            -1
        }
    }

    /// Queue the leave heartbeat, if the member is in the group.
    fn push_leave(&mut self) {
        if self.member_epoch > 0 {
            let hb = Heartbeat {
                member_id: self.member_id.clone(),
                member_epoch: self.leave_epoch(),
                instance_id: self.cfg.group_instance_id.clone(),
                ..Heartbeat::default()
            };
            self.push(Action::Leave(hb));
        }
    }

    /// The group's session timeout, as the driver learned it from the
    /// broker (DescribeConfigs on the group, `consumer.session.timeout.ms`);
    /// `None` when the broker would not say (then only the broker's answer
    /// tells this member it was fenced).
    pub(crate) fn session_timeout_learned(&mut self, timeout: Option<Duration>) {
        self.session.learned(timeout);
    }

    /// When this member must consider itself removed from the group if no
    /// heartbeat is answered before: the last answered heartbeat plus the
    /// group's session timeout. `None` outside the group or while the
    /// session timeout is unknown.
    pub(crate) fn session_deadline(&self) -> Option<Instant> {
        self.session.deadline(
            self.member_epoch > 0
                && matches!(self.state, State::Stable | State::FindingCoordinator),
        )
    }

    /// No heartbeat was answered for a whole session (the driver gave up
    /// waiting for the one in flight, or the coordinator cannot be found):
    /// the broker has removed this member, so its partitions belong to
    /// someone else. They are lost (never committed) and the member joins
    /// again with epoch 0 and the same member id, as after
    /// FENCED_MEMBER_EPOCH. A no-op before [`Member::session_deadline`].
    pub(crate) fn session_expired(&mut self, now: Instant) {
        if self.session_deadline().is_none_or(|d| now < d) {
            return;
        }
        tracing::warn!(
            group = %self.cfg.group_id,
            member_epoch = self.member_epoch,
            "no heartbeat answered within the group's session timeout ({:?}): the coordinator has \
             removed this member; partitions lost, rejoining",
            self.session.timeout().unwrap_or_default()
        );
        self.heartbeat_in_flight = false;
        self.full = true;
        self.lose_all();
        if self.state == State::Stable {
            self.rejoin(now, false);
        } else {
            // Joins once the coordinator is found (epoch 0).
            self.member_epoch = 0;
            self.session.answered(now);
        }
    }

    fn heartbeat_due(&mut self, now: Instant) -> Option<Action> {
        if !matches!(self.state, State::Joining | State::Stable)
            || self.heartbeat_in_flight
            || self.next_heartbeat.is_none_or(|t| now < t)
        {
            return None;
        }
        self.heartbeat_in_flight = true;
        self.next_heartbeat = None;
        let epoch = self.member_epoch;
        Some(Action::Heartbeat(self.heartbeat(epoch)))
    }

    fn check_poll_timer(&mut self, now: Instant) {
        if !matches!(self.state, State::Joining | State::Stable) {
            return;
        }
        if !self.liveness.poll_expired(now) {
            return;
        }
        tracing::warn!(
            group = %self.cfg.group_id,
            "leaving the group: the application did not poll within max.poll.interval.ms ({:?})",
            self.cfg.max_poll_interval
        );
        self.lose_all();
        self.push_leave();
        self.member_epoch = 0;
        self.full = true;
        self.state = State::LeftForPollTimeout;
        self.next_heartbeat = None;
    }
}

/// The group driver's view of the member: the events and actions of its
/// diagram above.
impl GroupMachine for Member {
    type Action = Action;

    /// The next action, taking time into account.
    fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.liveness.listener_holds(now, &self.cfg.group_id) {
            return self.heartbeat_due(now);
        }
        self.check_poll_timer(now);
        self.session_expired(now);
        // An assignment that arrived while a reconciliation ran.
        self.reconcile();
        match self.steps.front() {
            Some(Queued::Out(Action::FindCoordinator))
                if self.retry_at.is_some_and(|t| now < t) =>
            {
                return None
            }
            Some(Queued::Out(_)) => {
                let Some(Queued::Out(a)) = self.steps.pop_front() else {
                    unreachable!("front is an action")
                };
                match &a {
                    Action::FindCoordinator => self.retry_at = None,
                    Action::Assign(parts) => self.owned.extend(parts.iter().cloned()),
                    _ => {}
                }
                return Some(a);
            }
            Some(Queued::Ack) => {
                if self.state != State::Stable {
                    self.steps.pop_front();
                } else if !self.heartbeat_in_flight {
                    // The ack goes out now, whatever the interval says.
                    self.steps.pop_front();
                    self.ack_due = true;
                    self.next_heartbeat = Some(now);
                    return self.heartbeat_due(now);
                }
            }
            None => {}
        }
        // In the group, a heartbeat that is due goes before a metadata
        // refresh: the driver bounds a refresh by the heartbeat interval,
        // and one that keeps failing must not starve the heartbeats.
        if self.state == State::Stable {
            if let Some(hb) = self.heartbeat_due(now) {
                return Some(hb);
            }
        }
        if self.metadata_wanted && !self.metadata_in_flight {
            self.metadata_in_flight = true;
            return Some(Action::RefreshMetadata);
        }
        self.heartbeat_due(now)
    }

    fn step(&self, action: Action) -> Step<Action> {
        match action {
            Action::FindCoordinator => Step::FindCoordinator,
            // The subscription's topics (every topic for a pattern): their
            // ids resolve the broker's assignment.
            Action::RefreshMetadata => Step::RefreshMetadata(match &self.subscription {
                TopicSubscription::Topics(ts) => Some(ts.clone()),
                TopicSubscription::Pattern(_) => None,
            }),
            Action::Revoke(parts) => Step::Revoke(parts),
            Action::Lose(parts) => Step::Lose(parts),
            Action::Assign(parts) => Step::Assign(parts),
            Action::FallBack(why) => Step::FallBack(why),
            Action::Fatal(msg) => Step::Fatal(msg),
            own @ (Action::Heartbeat(_) | Action::Leave(_)) => Step::Protocol(own),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.next_heartbeat.filter(|_| !self.heartbeat_in_flight);
        let in_group = matches!(self.state, State::Joining | State::Stable);
        self.liveness.next_wakeup(
            heartbeat,
            [
                self.retry_at,
                heartbeat,
                in_group.then(|| self.liveness.poll_deadline()),
                self.session_deadline(),
            ],
        )
    }

    fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    fn liveness_mut(&mut self) -> &mut Liveness {
        &mut self.liveness
    }

    /// The application polled: it is alive.
    fn polled(&mut self, now: Instant) {
        self.liveness.polled(now);
        if self.state == State::LeftForPollTimeout {
            tracing::info!(group = %self.cfg.group_id, "the application polled again after a poll timeout: rejoining");
            self.state = State::FindingCoordinator;
            self.push(Action::FindCoordinator);
        }
    }

    /// Leave on close: revoke what is owned (commits still valid), then
    /// send the leave heartbeat.
    fn close(&mut self) {
        if matches!(
            self.state,
            State::Left | State::Fatal(_) | State::FellBack(_)
        ) {
            return;
        }
        self.steps
            .retain(|s| !matches!(s, Queued::Ack | Queued::Out(Action::Assign(_))));
        let owned: Vec<_> = std::mem::take(&mut self.owned).into_iter().collect();
        if !owned.is_empty() {
            self.push(Action::Revoke(owned));
        }
        self.push_leave();
        self.member_epoch = -1;
        self.state = State::Left;
        self.next_heartbeat = None;
    }

    fn left(&self) -> bool {
        self.state == State::Left
    }

    fn listener_done(&mut self) {
        self.liveness.listener_done();
        // A newer assignment may have arrived meanwhile.
        self.reconcile();
    }

    /// The coordinator is known: join (or resume heartbeating).
    fn coordinator_found(&mut self, now: Instant) {
        if self.state != State::FindingCoordinator {
            return;
        }
        self.retry_at = None;
        if self.member_epoch > 0 {
            self.state = State::Stable;
            self.next_heartbeat = Some(now);
        } else {
            self.rejoin(now, false);
        }
    }

    /// A request (heartbeat, find-coordinator) failed on the network or
    /// timed out: find the coordinator again; the next heartbeat is full.
    fn handle_request_failed(&mut self, now: Instant) {
        self.heartbeat_in_flight = false;
        if matches!(
            self.state,
            State::Joining | State::Stable | State::FindingCoordinator
        ) {
            self.find_coordinator(now);
        }
    }

    /// The interval the broker asked for (`group.consumer.heartbeat.interval.ms`).
    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// Resolve topic ids with every topic metadata knows (`asked` is the
    /// subscription's, or every topic for a pattern).
    fn metadata_refreshed(
        &mut self,
        md: &kafka_wire::Metadata,
        _asked: Option<&[String]>,
        now: Instant,
    ) {
        self.handle_metadata(
            md.topics
                .values()
                .map(|t| (t.id, t.name.clone(), t.partitions.len() as i32)),
            now,
        );
    }

    fn metadata_failed(&mut self, _now: Instant) {
        self.handle_metadata_failed();
    }

    /// See the classic `Membership::appeared_after_subscribe`.
    fn appeared_after_subscribe(&self, tp: &TopicPartition) -> bool {
        self.first_seen
            .as_ref()
            .is_some_and(|seen| tp.partition >= seen.get(&tp.topic).copied().unwrap_or(0))
    }

    /// The member epoch is what commits carry (OffsetCommit v9), in the
    /// snapshot's `generation`; `Consumer` once in the group.
    fn snapshot(&self, snap: &mut GroupSnapshot) {
        snap.generation = self.member_epoch();
        snap.member_id = self.member_id().to_string();
        snap.stable = *self.state() == State::Stable;
        snap.owned = self.owned().clone();
        snap.revoking = self.revoking();
        if self.member_epoch > 0 {
            snap.protocol = Some(crate::GroupProtocol::Consumer);
        }
    }
}

#[cfg(test)]
mod tests;
