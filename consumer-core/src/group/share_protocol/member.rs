//! A KIP-932 share group member as a pure state machine.
//!
//! The broker assigns; the member heartbeats (ShareGroupHeartbeat) and
//! hands each new assignment to the share fetch path: revoked partitions
//! first (the fetch path sends what it owes them: acknowledgements held,
//! RELEASE of records not yet polled), then the new ones, then an
//! immediate heartbeat. A share group's partitions are not exclusive (the
//! broker may assign one to several members, and each record goes to one
//! of them), so the heartbeat carries no owned partitions and the broker
//! never waits for a revocation: the member reconciles for the fetch
//! path's sake. Events and `now` go in, [`Action`]s come out, through the
//! crate's [`GroupMachine`] trait; the group driver (`group/driver.rs`)
//! runs it, `group/share_protocol.rs` sends its heartbeats. Poll liveness
//! and the running hand-over are the embedded [`Liveness`].
//!
//! ```text
//!                ┌──── NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE / request failed ◀──┐
//!                ▼                                                                     │
//!   FindCoordinator ──found──▶ Joining (epoch 0, subscription, rack) ──ok──▶ Stable (epoch n)
//!        ▲                                                                 │ heartbeat every interval the broker
//!        │                                                                 │ gives (subscription: null = unchanged);
//!        │                                                                 │ a new assignment: Revoke(owned − target)
//!        │                                                                 │ ─ fetch path answered ─▶ Assign(target −
//!        │                                                                 │ owned) ─▶ heartbeat at once
//!        ├── rejoin, epoch 0, same member id ◀── FENCED_MEMBER_EPOCH, ─────┤ Lose(owned), removed: the
//!        │                                      UNKNOWN_MEMBER_ID, no      │ fetch path forgets what it
//!        │                                      heartbeat answered within  │ holds of them (the broker
//!        │                                      share.session.timeout.ms   │ released it; nothing is
//!        │                                                                 │ acknowledged on the stale session)
//!        └── next poll ◀── LeftForPollTimeout ◀── max.poll.interval.ms ────┘ Lose(owned): the fetch path
//!                                                                            RELEASEs what it holds; epoch -1 sent
//!   Fatal ◀── UNSUPPORTED_VERSION (share groups off), GROUP_ID_NOT_FOUND (a group of another type),
//!             authorization, GROUP_MAX_SIZE_REACHED, INVALID_REQUEST, any other non-retriable code
//!   close: Revoke(owned) (the fetch path's last acknowledgements), then a heartbeat with epoch -1
//! ```
//!
//! Invariants:
//! - The member id is the consumer's own and never changes (ShareFetch
//!   carries it too); a fenced member rejoins with it at epoch 0.
//! - A heartbeat carries the subscription and rack when joining and after
//!   any error; otherwise null (unchanged).
//! - At most one heartbeat is in flight; while the fetch path hands over
//!   revoked or lost partitions, only heartbeats go out.
//! - A partition leaves `owned` when its Revoke or Lose is handed out,
//!   and joins it when its Assign is.
//! - `removed` (published in the snapshot) is true from a removal by the
//!   coordinator (fenced, unknown member, or the session run out with no
//!   heartbeat answered: the embedded [`Session`], as the KIP-848 member
//!   keeps it) until the next Assign or poll-timeout Lose; the driver
//!   hands out no Assign before the removal's Lose is acknowledged, so
//!   the fetch path reads it for that Lose.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_wire::{Backoff, KafkaCode};

use crate::group::driver::{GroupMachine, Step};
use crate::group::liveness::{Liveness, Session};
use crate::group::target::{HeartbeatResult, Moves, Target, TopicIds};
use crate::group::{code_name, GroupSnapshot};
use crate::tp::TopicPartition;

/// The epoch a member joins with, and the one it leaves with.
const JOIN_EPOCH: i32 = 0;
const LEAVE_EPOCH: i32 = -1;

/// What the member needs of the share consumer's settings.
#[derive(Debug, Clone)]
pub(crate) struct ShareMemberConfig {
    pub group_id: String,
    /// The consumer's own id (KIP-932 v1: members name themselves).
    pub member_id: String,
    /// `client.rack`.
    pub rack_id: Option<String>,
    /// The subscribed topic names.
    pub topics: Vec<String>,
    /// `max.poll.interval.ms`: past it without a poll, the member leaves.
    pub max_poll_interval: Duration,
    /// How long the member waits for the fetch path to hand over revoked
    /// or lost partitions (their acknowledgements answered) before it
    /// goes on without it.
    pub handover_timeout: Duration,
    /// The n-th retry in a row (coordinator lookup, heartbeat, metadata)
    /// waits [`Backoff::nominal`]`(n)`; an answered heartbeat starts over.
    pub retry_backoff: Backoff,
    /// Until the broker's first answer gives its own
    /// (`group.share.heartbeat.interval.ms`).
    pub heartbeat_interval: Duration,
}

/// Where the member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    FindingCoordinator,
    /// A heartbeat with epoch 0 is due or in flight.
    Joining,
    /// In the group, at the member epoch.
    Stable,
    /// Left because the application stopped polling; joins again at the
    /// next poll.
    LeftForPollTimeout,
    /// Left on close.
    Left,
    /// Unrecoverable; the message says what to fix.
    Fatal(String),
}

/// One ShareGroupHeartbeat to send. `None` fields mean "unchanged".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ShareHeartbeat {
    pub member_id: String,
    /// 0 to join, the current epoch, -1 to leave.
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed_topic_names: Option<Vec<String>>,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    FindCoordinator,
    Heartbeat(ShareHeartbeat),
    /// Name the target's topic ids: the subscription's metadata.
    RefreshMetadata,
    /// The fetch path stops fetching these and sends what it owes them;
    /// the member waits for it (heartbeats only) up to the hand-over
    /// timeout.
    Revoke(Vec<TopicPartition>),
    /// The fetch path fetches these too.
    Assign(Vec<TopicPartition>),
    /// This member is out of the group: the fetch path gives back what it
    /// holds of these.
    Lose(Vec<TopicPartition>),
    /// The heartbeat with epoch -1; its answer is not awaited.
    Leave(ShareHeartbeat),
    Fatal(String),
}

/// A reconciliation being handed out: its revoke first, then its assign,
/// then the heartbeat that ends it.
#[derive(Debug, Default)]
struct Reconciliation {
    moves: Moves,
}

/// The pure share group member.
#[derive(Debug)]
pub(crate) struct ShareMember {
    cfg: ShareMemberConfig,
    state: State,
    epoch: i32,
    owned: BTreeSet<TopicPartition>,
    /// The broker's latest assignment, and whether it changed (or its
    /// topics got names) since it was last reconciled.
    target: Option<Target>,
    target_changed: bool,
    ids: TopicIds,
    reconciling: Option<Reconciliation>,
    /// Actions that go before any reconciliation: a coordinator lookup,
    /// a loss, the leave, a fatal error.
    outbox: VecDeque<Action>,
    /// Send the subscription and rack in the next heartbeat.
    full: bool,
    heartbeat_interval: Duration,
    next_heartbeat: Option<Instant>,
    heartbeat_in_flight: bool,
    /// The coordinator is looked up again, or metadata refreshed, not
    /// before these.
    lookup_at: Option<Instant>,
    metadata_at: Option<Instant>,
    metadata_wanted: bool,
    metadata_in_flight: bool,
    /// Retries in a row since the last answered heartbeat.
    retries: u32,
    liveness: Liveness,
    /// The member's session at the coordinator: the group's
    /// `share.session.timeout.ms` once the driver learned it, and the
    /// last answered heartbeat.
    session: Session,
    /// The coordinator removed this member and no Assign has followed:
    /// what the fetch path holds of the lost partitions is the group's
    /// again (see the invariants).
    removed: bool,
}

impl ShareMember {
    /// A member of `cfg.group_id` looking for its coordinator, its
    /// application counted as having polled at `now`.
    pub(crate) fn new(cfg: ShareMemberConfig, now: Instant) -> Self {
        let liveness = Liveness::new(cfg.max_poll_interval, cfg.handover_timeout, now);
        let heartbeat_interval = cfg.heartbeat_interval;
        Self {
            cfg,
            state: State::FindingCoordinator,
            epoch: JOIN_EPOCH,
            owned: BTreeSet::new(),
            target: None,
            target_changed: false,
            ids: TopicIds::default(),
            reconciling: None,
            outbox: VecDeque::from([Action::FindCoordinator]),
            full: true,
            heartbeat_interval,
            next_heartbeat: None,
            heartbeat_in_flight: false,
            lookup_at: None,
            metadata_at: None,
            metadata_wanted: false,
            metadata_in_flight: false,
            retries: 0,
            liveness,
            session: Session::new(now),
            removed: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    #[cfg(test)]
    pub(crate) fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.owned
    }

    /// The wait before the next retry; counts it.
    fn backoff(&mut self) -> Duration {
        self.retries = self.retries.saturating_add(1);
        self.cfg.retry_backoff.nominal(self.retries)
    }

    fn find_coordinator(&mut self, now: Instant) {
        self.state = State::FindingCoordinator;
        self.full = true;
        self.next_heartbeat = None;
        self.lookup_at = Some(now + self.backoff());
        if !self.outbox.contains(&Action::FindCoordinator) {
            self.outbox.push_back(Action::FindCoordinator);
        }
    }

    /// Out of the group: what is owned is lost, the target and any
    /// reconciliation under way are void.
    fn lose_all(&mut self) {
        self.reconciling = None;
        self.target = None;
        self.target_changed = false;
        if !self.owned.is_empty() {
            let lost = std::mem::take(&mut self.owned).into_iter().collect();
            self.outbox.push_back(Action::Lose(lost));
        }
    }

    fn rejoin(&mut self, now: Instant) {
        self.epoch = JOIN_EPOCH;
        self.session.answered(now);
        self.state = State::Joining;
        self.full = true;
        self.next_heartbeat = Some(now);
    }

    fn fatal(&mut self, why: String) {
        self.lose_all();
        self.outbox.push_back(Action::Fatal(why.clone()));
        self.state = State::Fatal(why);
        self.next_heartbeat = None;
    }

    fn leave_heartbeat(&self) -> Option<Action> {
        (self.epoch > JOIN_EPOCH).then(|| {
            Action::Leave(ShareHeartbeat {
                member_id: self.cfg.member_id.clone(),
                member_epoch: LEAVE_EPOCH,
                ..ShareHeartbeat::default()
            })
        })
    }

    /// The heartbeat's answer.
    /// The heartbeat's answer (its member id, always this member's own
    /// under KIP-932 v1, is not read).
    pub(crate) fn handle_heartbeat(&mut self, r: HeartbeatResult, now: Instant) {
        self.heartbeat_in_flight = false;
        if !matches!(self.state, State::Joining | State::Stable) {
            return; // left or failed meanwhile
        }
        match r.error {
            None => {
                self.epoch = r.member_epoch;
                self.state = State::Stable;
                self.retries = 0;
                self.session.answered(now);
                if r.heartbeat_interval_ms > 0 {
                    self.heartbeat_interval = Duration::from_millis(r.heartbeat_interval_ms as u64);
                }
                self.next_heartbeat = Some(now + self.heartbeat_interval);
                if let Some(assignment) = r.assignment {
                    self.target = Some(Target::from_wire(assignment));
                    self.target_changed = true;
                }
            }
            Some(code) => {
                let said = r
                    .error_message
                    .filter(|m| !m.is_empty())
                    .map(|m| format!(" (the broker says: {m})"))
                    .unwrap_or_default();
                self.full = true;
                self.heartbeat_refused(code, &said, now);
            }
        }
    }

    fn heartbeat_refused(&mut self, code: KafkaCode, said: &str, now: Instant) {
        use KafkaCode as K;
        let group = &self.cfg.group_id;
        let why = match code {
            K::NotCoordinator | K::CoordinatorNotAvailable => {
                self.find_coordinator(now);
                return;
            }
            K::FencedMemberEpoch | K::UnknownMemberId => {
                tracing::info!(group = %group, epoch = self.epoch, code = %code_name(code), "the coordinator removed this share member: its partitions are lost; joining again with the same member id");
                self.removed = true;
                self.lose_all();
                self.rejoin(now);
                return;
            }
            K::UnsupportedVersion => format!(
                "the coordinator refused ShareGroupHeartbeat (UNSUPPORTED_VERSION){said}: share \
                 groups are off on this cluster; on Kafka 4.1+ turn them on with \
                 `kafka-features.sh --bootstrap-server <broker> upgrade --feature share.version=1`"
            ),
            K::GroupIdNotFound | K::InconsistentGroupProtocol => format!(
                "group.id {group:?} cannot be a share group{said}: a consumer, classic or streams \
                 group has it; give the share group an id of its own"
            ),
            K::GroupAuthorizationFailed | K::TopicAuthorizationFailed => format!(
                "{}{said}: this principal needs READ on group {group:?} and on the subscribed topics",
                code_name(code)
            ),
            K::GroupMaxSizeReached => format!(
                "the share group {group:?} is full{said}: it has group.share.max.size members \
                 (broker setting); stop one, or raise it"
            ),
            c if c.is_retriable() => {
                tracing::warn!(group = %group, code = %code_name(c), "ShareGroupHeartbeat failed{said}; retrying");
                self.next_heartbeat = Some(now + self.backoff());
                return;
            }
            c => format!("ShareGroupHeartbeat failed with {}{said}", code_name(c)),
        };
        self.fatal(format!("share group {group}: {why}"));
    }

    /// The next reconciliation step, in the group and with nothing else
    /// queued: revoke, then assign, then the heartbeat that ends it.
    fn reconcile(&mut self, now: Instant) -> Option<Action> {
        if self.state != State::Stable {
            return None;
        }
        if self.reconciling.is_none() {
            self.reconciling = self.plan();
        }
        let r = self.reconciling.as_mut()?;
        if !r.moves.revoke.is_empty() {
            let revoke = std::mem::take(&mut r.moves.revoke);
            for tp in &revoke {
                self.owned.remove(tp);
            }
            return Some(Action::Revoke(revoke));
        }
        if !r.moves.assign.is_empty() {
            let assign = std::mem::take(&mut r.moves.assign);
            self.removed = false;
            self.owned.extend(assign.iter().cloned());
            return Some(Action::Assign(assign));
        }
        if self.heartbeat_in_flight {
            return None; // the answer comes first
        }
        self.reconciling = None;
        self.next_heartbeat = Some(now);
        self.heartbeat_due(now)
    }

    /// The moves a changed target takes (`None`: nothing to do). Topic
    /// ids metadata has not named yet stay in the target, and metadata is
    /// refreshed.
    fn plan(&mut self) -> Option<Reconciliation> {
        if !std::mem::take(&mut self.target_changed) {
            return None;
        }
        let (named, unknown) = self.target.as_ref()?.resolve(&self.ids);
        self.metadata_wanted |= unknown;
        let moves = Moves::between(&self.owned, &named);
        (!moves.is_empty()).then_some(Reconciliation { moves })
    }

    fn heartbeat_due(&mut self, now: Instant) -> Option<Action> {
        let due = matches!(self.state, State::Joining | State::Stable)
            && !self.heartbeat_in_flight
            && self.next_heartbeat.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        self.heartbeat_in_flight = true;
        self.next_heartbeat = None;
        let full = std::mem::take(&mut self.full) || self.epoch == JOIN_EPOCH;
        Some(Action::Heartbeat(ShareHeartbeat {
            member_id: self.cfg.member_id.clone(),
            member_epoch: self.epoch,
            rack_id: self.cfg.rack_id.clone().filter(|_| full),
            subscribed_topic_names: full.then(|| self.cfg.topics.clone()),
        }))
    }

    /// The first queued action, unless it is a coordinator lookup still
    /// backing off.
    fn next_queued(&mut self, now: Instant) -> Option<Action> {
        if self.outbox.front() == Some(&Action::FindCoordinator)
            && self.lookup_at.is_some_and(|t| now < t)
        {
            return None;
        }
        self.outbox.pop_front()
    }

    fn metadata_due(&mut self, now: Instant) -> Option<Action> {
        if !self.metadata_wanted
            || self.metadata_in_flight
            || self.metadata_at.is_some_and(|t| now < t)
        {
            return None;
        }
        self.metadata_in_flight = true;
        Some(Action::RefreshMetadata)
    }

    /// The group's session timeout, as the driver learned it (DescribeConfigs
    /// on the group, `share.session.timeout.ms`); `None` when the broker
    /// would not say (then only the broker's answers remove this member).
    pub(crate) fn session_timeout_learned(&mut self, timeout: Option<Duration>) {
        self.session.learned(timeout);
    }

    /// In the group (epoch 1 or more, not leaving or failed)?
    pub(crate) fn in_group(&self) -> bool {
        self.epoch > JOIN_EPOCH && matches!(self.state, State::Stable | State::FindingCoordinator)
    }

    /// When this member must count itself removed from the group if no
    /// heartbeat is answered before: the last answered heartbeat plus the
    /// group's session timeout. `None` outside the group or while the
    /// session timeout is unknown.
    pub(crate) fn session_deadline(&self) -> Option<Instant> {
        self.session.deadline(self.in_group())
    }

    /// No heartbeat was answered for a whole session (the one in flight
    /// was given up at the deadline, or the coordinator cannot be found):
    /// the coordinator has removed this member and released the records
    /// it had acquired. As after FENCED_MEMBER_EPOCH: its partitions are
    /// lost (`removed`: the fetch path forgets what it holds of them, and
    /// acknowledges none of it on the stale session) and it joins again
    /// with epoch 0 and the same member id. A no-op before
    /// [`ShareMember::session_deadline`].
    pub(crate) fn session_expired(&mut self, now: Instant) {
        if !self.session.expired(self.in_group(), now) {
            return;
        }
        tracing::warn!(
            group = %self.cfg.group_id,
            epoch = self.epoch,
            "no ShareGroupHeartbeat answered within the group's share.session.timeout.ms ({:?}): \
             the coordinator has removed this member and released its records; rejoining",
            self.session.timeout().unwrap_or_default()
        );
        self.heartbeat_in_flight = false;
        self.full = true;
        self.removed = true;
        self.lose_all();
        if self.state == State::Stable {
            self.rejoin(now);
        } else {
            // Joins once the coordinator is found (epoch 0).
            self.epoch = JOIN_EPOCH;
            self.session.answered(now);
        }
    }

    fn check_poll_timer(&mut self, now: Instant) {
        if !matches!(self.state, State::Joining | State::Stable) || !self.liveness.poll_expired(now)
        {
            return;
        }
        tracing::warn!(
            group = %self.cfg.group_id,
            "leaving the share group: the application did not poll within max.poll.interval.ms \
             ({:?}); the records this member holds go back to the group",
            self.cfg.max_poll_interval
        );
        // Still in the group until the leave heartbeat: RELEASE is valid.
        self.removed = false;
        self.lose_all();
        self.outbox.extend(self.leave_heartbeat());
        self.epoch = JOIN_EPOCH;
        self.full = true;
        self.state = State::LeftForPollTimeout;
        self.next_heartbeat = None;
    }
}

/// The group driver's view of the member: the events and actions of the
/// diagram above.
impl GroupMachine for ShareMember {
    type Action = Action;

    fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.liveness.listener_holds(now, &self.cfg.group_id) {
            return self.heartbeat_due(now);
        }
        self.check_poll_timer(now);
        self.session_expired(now);
        if let Some(a) = self.next_queued(now) {
            return Some(a);
        }
        if self.outbox.is_empty() {
            if let Some(a) = self.reconcile(now) {
                return Some(a);
            }
        }
        // A due heartbeat goes before a metadata refresh, which the driver
        // bounds by the heartbeat interval.
        self.heartbeat_due(now).or_else(|| self.metadata_due(now))
    }

    fn step(&self, action: Action) -> Step<Action> {
        match action {
            Action::FindCoordinator => Step::FindCoordinator,
            Action::RefreshMetadata => Step::RefreshMetadata(Some(self.cfg.topics.clone())),
            Action::Revoke(parts) => Step::Revoke(parts),
            Action::Assign(parts) => Step::Assign(parts),
            Action::Lose(parts) => Step::Lose(parts),
            Action::Fatal(why) => Step::Fatal(why),
            own @ (Action::Heartbeat(_) | Action::Leave(_)) => Step::Protocol(own),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.next_heartbeat.filter(|_| !self.heartbeat_in_flight);
        let in_group = matches!(self.state, State::Joining | State::Stable);
        let metadata = self.metadata_at.filter(|_| self.metadata_wanted);
        self.liveness.next_wakeup(
            heartbeat,
            [
                heartbeat,
                self.lookup_at,
                metadata,
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

    fn polled(&mut self, now: Instant) {
        self.liveness.polled(now);
        if self.state == State::LeftForPollTimeout {
            tracing::info!(group = %self.cfg.group_id, "the application polled again after a poll timeout: joining the share group again");
            self.state = State::FindingCoordinator;
            self.lookup_at = None;
            self.outbox.push_back(Action::FindCoordinator);
        }
    }

    /// Hand the fetch path's last acknowledgements over (Revoke), then
    /// leave with epoch -1.
    fn close(&mut self) {
        if matches!(self.state, State::Left | State::Fatal(_)) {
            return;
        }
        self.reconciling = None;
        self.target = None;
        self.outbox.retain(|a| matches!(a, Action::Lose(_)));
        if !self.owned.is_empty() {
            let owned = std::mem::take(&mut self.owned).into_iter().collect();
            self.outbox.push_back(Action::Revoke(owned));
        }
        self.outbox.extend(self.leave_heartbeat());
        self.epoch = LEAVE_EPOCH;
        self.state = State::Left;
        self.next_heartbeat = None;
    }

    fn left(&self) -> bool {
        self.state == State::Left
    }

    fn listener_done(&mut self) {
        self.liveness.listener_done();
    }

    fn coordinator_found(&mut self, now: Instant) {
        if self.state != State::FindingCoordinator {
            return;
        }
        self.lookup_at = None;
        if self.epoch > JOIN_EPOCH {
            self.state = State::Stable;
            self.next_heartbeat = Some(now);
        } else {
            self.rejoin(now);
        }
    }

    fn handle_request_failed(&mut self, now: Instant) {
        self.heartbeat_in_flight = false;
        if matches!(
            self.state,
            State::FindingCoordinator | State::Joining | State::Stable
        ) {
            self.find_coordinator(now);
        }
    }

    fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn metadata_refreshed(
        &mut self,
        md: &kafka_wire::Metadata,
        _asked: Option<&[String]>,
        _now: Instant,
    ) {
        self.metadata_in_flight = false;
        self.metadata_wanted = false;
        self.metadata_at = None;
        for t in md.topics.values() {
            self.ids.learn(t.id, &t.name);
        }
        self.target_changed |= self.target.is_some();
    }

    fn metadata_failed(&mut self, now: Instant) {
        self.metadata_in_flight = false;
        self.metadata_at = Some(now + self.backoff());
    }

    /// A share group starts where its group config
    /// `share.auto.offset.reset` says, whenever the partition appeared.
    fn appeared_after_subscribe(&self, _tp: &TopicPartition) -> bool {
        false
    }

    /// The member epoch in `generation`; no protocol (commits do not
    /// exist in a share group).
    fn snapshot(&self, snap: &mut GroupSnapshot) {
        snap.generation = self.epoch;
        snap.member_id = self.cfg.member_id.clone();
        snap.stable = self.state == State::Stable;
        snap.owned = self.owned.clone();
        snap.revoking = self.liveness.revoking([]);
        snap.removed = self.removed;
    }
}

#[cfg(test)]
mod tests;
