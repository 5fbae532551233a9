//! The fetch path: per-partition positions and cursors, per-broker fetch
//! sessions, and the two pure steps between them.
//!
//! ```text
//!  Consumer::poll ─▶ Fetcher::build_requests (pure) ─▶ one Fetch per broker, spawned by the caller
//!        ▲            (each partition routed to its          │ (Fetch lane, KIP-227 session)
//!        │             leader or its rack's follower)        ▼
//!  Fetcher::drain ◀─ buffered cursors ◀─ Fetcher::apply_response (pure) ─▶ FetchAction, awaited by
//!   (max.poll.records,                     (stale data dropped,              the caller: out of range,
//!    positions advance)                     session advanced, a named        truncation, new leaders,
//!                                           follower followed, a failed      refresh metadata (never for
//!                                           follower left)                   a follower's error)
//! ```
//!
//! Topics go by id (Fetch v13+, KIP-516) when every topic of a request has
//! one in the metadata, else by name; both are filled in, and the
//! connection sends a request with a topic lacking an id at v12 (see
//! [`session`]). A v16+ answer refusing a partition with
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names its new leader
//! (KIP-951): that hint goes into the client's metadata
//! (`FetchAction::NewLeaders`) and the next fetch of the partition goes
//! to the new leader, with no Metadata round trip.
//!
//! - [`cursor`]: one partition's fetched data, decoded as it is taken
//!   (franz-go's `cursor`).
//! - [`session`]: one broker's KIP-227 fetch session (pure bookkeeping).
//! - `replica`: which replica each partition is read from (KIP-392
//!   follower fetching: the leader's `preferred_read_replica`, its
//!   lifetime, falling back to the leader).
//! - `Fetcher`: every assigned partition's state (`PartState`), each
//!   broker's session and whether a fetch to it is in flight, and the
//!   responses not drained yet. It never awaits and never reads the clock:
//!   the consumer passes `now` and metadata in, sends the requests it
//!   builds, and executes the `FetchAction`s a response produces.
//!
//! Rules kept here:
//! - at most one fetch in flight per broker, and none while the broker
//!   throttles us (a response's `throttle_time_ms`, KIP-219: the broker
//!   would not read it before then anyway);
//! - a partition is in at most one fetch at a time: one in flight at a
//!   broker is not asked of another (its leader moved, or it moved between
//!   leader and follower) before that fetch's answer is applied, or both
//!   answers would be buffered and their records handed out twice;
//! - at most one undrained response buffered per partition;
//! - a response whose partition moved meanwhile (seek, reset, revoke) is
//!   dropped: its data belongs to another position.

pub mod cursor;
mod replica;
pub mod session;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use kafka_wire::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_wire::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_wire::records::Record;
use kafka_wire::{Error, KafkaCode, StrBytes, Throttle};
use kafka_wire::{LeaderHints, Metadata};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{ConsumerConfig, OffsetReset};
use crate::error::ConsumerError;
use crate::tp::TopicPartition;
use cursor::{truncation_point, PartitionCursor};
use replica::ReadReplica;
use session::FetchSession;

/// Records of one partition returned by [`Consumer::poll`](crate::Consumer::poll).
#[derive(Debug, Clone)]
pub struct PartitionRecords {
    pub tp: TopicPartition,
    pub records: Vec<Record>,
    /// The partition's high watermark at fetch time (offset), -1 if unknown.
    pub high_watermark: i64,
    /// The partition's last stable offset at fetch time (offset; the
    /// readable end for `read_committed`), -1 if unknown.
    pub last_stable_offset: i64,
}

/// One assigned partition, as the fetch path sees it.
#[derive(Debug, Clone)]
pub(crate) struct PartState {
    /// `None` until initialised from the committed offset or the reset policy.
    pub position: Option<i64>,
    /// Where an unset position starts.
    pub start: Start,
    /// See [`PartitionPosition::incarnation`](crate::PartitionPosition::incarnation).
    pub incarnation: u64,
    pub paused: bool,
    /// When the application paused it (see [`HELD_BACK_FETCH_WAIT`]).
    pub paused_since: Option<Instant>,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    /// Epoch of the last batch handed out (KIP-320), -1 if unknown.
    pub last_fetched_epoch: i32,
    /// The replica it is read from (KIP-392): the leader, or the follower
    /// in our rack the leader named.
    pub(crate) replica: ReadReplica,
}

/// Where a partition without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// The group's committed offset, else `auto.offset.reset`.
    Committed,
    /// The log start offset, whatever is committed: the topic was deleted
    /// and recreated, so a committed offset (if the coordinator has not
    /// dropped it yet) belongs to the old log, and every record of the new
    /// one is new.
    LogStart,
}

impl PartState {
    pub(crate) fn new(incarnation: u64) -> Self {
        PartState {
            position: None,
            start: Start::Committed,
            incarnation,
            paused: false,
            paused_since: None,
            high_watermark: -1,
            last_stable_offset: -1,
            last_fetched_epoch: -1,
            replica: ReadReplica::Leader,
        }
    }
}

/// The longest a fetch may wait on the broker while some partition of
/// the same leader sits out because its last response is not drained yet.
///
/// One fetch per leader is in flight at a time, and it leaves out
/// partitions with an undrained response. If it long-polls the caught-up
/// rest for `fetch.max.wait.ms`, a partition that drains meanwhile cannot
/// be fetched until the long poll ends: measured in the processor bench,
/// the tail of a backlog crawled at one partition per 500 ms. A short wait
/// bounds that stall. Partitions paused for longer than
/// [`LONG_PAUSE`] (a quarantine) no longer count, so they do not turn
/// the consumer into a busy poller.
const HELD_BACK_FETCH_WAIT: Duration = Duration::from_millis(5);

/// See [`HELD_BACK_FETCH_WAIT`].
const LONG_PAUSE: Duration = Duration::from_secs(1);

/// One Fetch to send, from [`Fetcher::build_requests`].
#[derive(Debug)]
pub(crate) struct PlannedFetch {
    pub broker: i32,
    pub request: FetchRequest,
    /// The request's `max_wait_ms`: the caller's timeout adds it.
    pub wait: Duration,
    /// Every partition the session asks for, with the position asked at
    /// (an incremental request lists only the changed ones): hand it back
    /// to [`Fetcher::apply_response`].
    pub requested: BTreeMap<TopicPartition, i64>,
}

/// What [`Fetcher::build_requests`] decided.
#[derive(Debug, Default)]
pub(crate) struct FetchPlan {
    /// Send these, one per broker; each broker is marked in flight until
    /// its response (or failure) goes to [`Fetcher::apply_response`].
    pub fetches: Vec<PlannedFetch>,
    /// Topics with a fetchable partition whose leader is unknown: refresh
    /// their metadata (sorted, no duplicates).
    pub unknown_leaders: Vec<String>,
}

/// What the caller must do after a response, in order (each may await).
#[derive(Debug)]
pub(crate) enum FetchAction {
    /// The fetch of `tp` at `offset` answered OFFSET_OUT_OF_RANGE.
    OutOfRange { tp: TopicPartition, offset: i64 },
    /// KIP-320: the leader's log diverged below our position; restart the
    /// partition at `to` in a new incarnation.
    Truncated { tp: TopicPartition, to: i64 },
    /// KIP-951: partitions refused because their leader moved, with the
    /// new leader and epoch the broker named: apply them to the client's
    /// metadata (`Client::apply_leader_hints`), and refresh the metadata
    /// of the topics whose hints could not be used. Comes first.
    NewLeaders(LeaderHints),
    /// Refresh metadata of these topics (empty: the topics already known).
    /// Every fetch session was reset already.
    RefreshMetadata(Vec<String>),
    /// Give up: return this from `poll` (nothing after it was applied).
    Fail(ConsumerError),
}

/// One broker's fetch state.
#[derive(Debug, Default)]
struct BrokerFetch {
    session: FetchSession,
    /// The fetch in flight to this broker, if one is.
    in_flight: Option<InFlight>,
    /// The broker asked for no request before then (`throttle_time_ms`).
    throttled_until: Option<Instant>,
}

/// The partitions of a fetch in flight.
#[derive(Debug)]
struct InFlight {
    /// Every partition the session asks for.
    partitions: BTreeSet<TopicPartition>,
    /// Those asked of the broker as their follower (KIP-392): its errors
    /// for them are never theirs (see `replica`).
    from_follower: BTreeSet<TopicPartition>,
    /// The name of each topic asked by id (KIP-516): a v13+ answer names
    /// topics by id only.
    topic_names: HashMap<Uuid, String>,
}

/// The fetch state of one consumer. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Fetcher {
    /// Every assigned partition.
    pub parts: BTreeMap<TopicPartition, PartState>,
    brokers: HashMap<i32, BrokerFetch>,
    /// Responses not drained yet, in arrival order; at most one per partition.
    buffered: VecDeque<(TopicPartition, PartitionCursor)>,
}

impl Fetcher {
    /// Serve exactly `parts` from now on (manual assignment).
    pub(crate) fn assign(&mut self, parts: BTreeMap<TopicPartition, PartState>) {
        self.parts = parts;
        self.buffered.clear();
        self.reset_sessions();
    }

    /// Forget `parts` (revoked or lost) and their buffered data.
    pub(crate) fn remove(&mut self, parts: &[TopicPartition]) {
        for tp in parts {
            self.parts.remove(tp);
        }
        self.discard_buffered(parts);
    }

    /// Drop the buffered data of `parts` (their positions stay).
    pub(crate) fn discard_buffered(&mut self, parts: &[TopicPartition]) {
        self.buffered.retain(|(tp, _)| !parts.contains(tp));
    }

    /// The next fetch of `tp` starts at `offset`.
    pub(crate) fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = Some(offset);
        }
        self.buffered.retain(|(t, _)| t != tp);
    }

    /// The position of `tp` jumps (reset, truncation, recreated topic):
    /// `position` (`None`: from `start`) in `incarnation`, nothing
    /// buffered, every fetch session started over.
    pub(crate) fn restart(
        &mut self,
        tp: &TopicPartition,
        start: Start,
        position: Option<i64>,
        incarnation: u64,
    ) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = position;
            p.start = start;
            p.incarnation = incarnation;
            p.last_fetched_epoch = -1;
            p.high_watermark = -1;
            p.last_stable_offset = -1;
        }
        self.buffered.retain(|(t, _)| t != tp);
        self.reset_sessions();
    }

    /// The next fetch to every broker is a full one.
    pub(crate) fn reset_sessions(&mut self) {
        for b in self.brokers.values_mut() {
            b.session.reset();
        }
    }

    /// One Fetch for every broker that a fetchable partition is read from
    /// (its leader, or the follower the leader named: KIP-392) and that has
    /// none in flight (pure: `now` and `md` come in, the requests go out).
    ///
    /// A partition is fetchable when it has a position, is not paused (or
    /// paused for less than [`LONG_PAUSE`]: one response is prefetched), is
    /// not being `revoking`, is in no fetch in flight, and has no undrained
    /// response buffered. The broker of a partition that sits out because
    /// of its buffered response gets a short wait ([`HELD_BACK_FETCH_WAIT`])
    /// unless it has been paused for long. A request carries `client.rack`
    /// unless one of its partitions is read from the leader because its
    /// follower failed (see `replica`).
    pub(crate) fn build_requests(
        &mut self,
        md: &Metadata,
        revoking: &[TopicPartition],
        cfg: &ConsumerConfig,
        now: Instant,
    ) -> FetchPlan {
        let buffered: BTreeSet<&TopicPartition> = self.buffered.iter().map(|(tp, _)| tp).collect();
        let in_flight: BTreeSet<&TopicPartition> = self
            .brokers
            .values()
            .filter_map(|b| b.in_flight.as_ref())
            .flat_map(|f| &f.partitions)
            .collect();
        let mut by_broker: BTreeMap<i32, BTreeMap<TopicPartition, i64>> = BTreeMap::new();
        let mut epochs: BTreeMap<TopicPartition, (i32, i32)> = BTreeMap::new();
        let mut unknown = Vec::new();
        // Brokers with a partition sitting out that will want data soon.
        let mut held_back: BTreeSet<i32> = BTreeSet::new();
        // Brokers asked without client.rack (a partition's follower failed).
        let mut rackless: BTreeSet<i32> = BTreeSet::new();
        // Partitions routed to a follower.
        let mut to_follower: BTreeSet<TopicPartition> = BTreeSet::new();
        for (tp, p) in self.parts.iter_mut() {
            if revoking.contains(tp) || in_flight.contains(tp) {
                continue;
            }
            if buffered.contains(tp) {
                // At most one undrained response per partition.
                let soon = p
                    .paused_since
                    .is_none_or(|t| now.saturating_duration_since(t) < LONG_PAUSE);
                if let (true, Some(b)) = (soon, md.leader(&tp.topic, tp.partition)) {
                    held_back.insert(p.replica.peek(b.id, now));
                }
                continue;
            }
            // A partition paused only briefly (the processing runtime's
            // backpressure) still gets its next response fetched, so that
            // it resumes without waiting a fetch round trip; memory stays
            // bounded by the one undrained response per partition above.
            // Paused for long (a quarantine, or an application's pause),
            // it is not fetched.
            let briefly_paused = p
                .paused_since
                .is_some_and(|t| now.saturating_duration_since(t) < LONG_PAUSE);
            let (Some(pos), true) = (p.position, !p.paused || briefly_paused) else {
                continue;
            };
            match md.leader(&tp.topic, tp.partition) {
                Some(b) => {
                    let route = p
                        .replica
                        .route(b.id, |id| md.brokers.contains_key(&id), now);
                    if route.refresh {
                        unknown.push(tp.topic.clone());
                    }
                    if !route.rack {
                        rackless.insert(route.broker);
                    }
                    if route.broker != b.id {
                        to_follower.insert(tp.clone());
                    }
                    by_broker
                        .entry(route.broker)
                        .or_default()
                        .insert(tp.clone(), pos);
                    // KIP-320: fence stale leaders and detect log divergence.
                    let current = md
                        .partition(&tp.topic, tp.partition)
                        .map_or(-1, |p| p.leader_epoch);
                    epochs.insert(tp.clone(), (current, p.last_fetched_epoch));
                }
                None => unknown.push(tp.topic.clone()),
            }
        }
        unknown.sort();
        unknown.dedup();
        let mut fetches = Vec::new();
        for (id, wanted) in by_broker {
            let broker = self.brokers.entry(id).or_default();
            if broker.in_flight.is_some() || broker.throttled_until.is_some_and(|t| now < t) {
                continue;
            }
            let s = broker
                .session
                .next_request(&wanted, |topic| topic_id(md, topic));
            // The id each topic goes by; nil when the request goes by name.
            let id_of = |topic: &str| {
                s.topic_ids
                    .as_ref()
                    .and_then(|ids| ids.get(topic).copied())
                    .unwrap_or_default()
            };
            let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
            for (tp, offset) in &s.partitions {
                topics.entry(&tp.topic).or_default().push(
                    FetchPartition::default()
                        .with_partition(tp.partition)
                        .with_fetch_offset(*offset)
                        .with_current_leader_epoch(epochs.get(tp).map_or(-1, |e| e.0))
                        .with_last_fetched_epoch(epochs.get(tp).map_or(-1, |e| e.1))
                        .with_partition_max_bytes(cfg.max_partition_fetch_bytes),
                );
            }
            let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &s.forgotten {
                forgotten.entry(&tp.topic).or_default().push(tp.partition);
            }
            let wait = if held_back.contains(&id) {
                cfg.fetch_max_wait.min(HELD_BACK_FETCH_WAIT)
            } else {
                cfg.fetch_max_wait
            };
            let request = FetchRequest::default()
                .with_max_wait_ms(wait.as_millis() as i32)
                .with_min_bytes(cfg.fetch_min_bytes)
                .with_max_bytes(cfg.fetch_max_bytes)
                .with_isolation_level(cfg.isolation_level.wire())
                // KIP-392 (Fetch v11+): "" when no rack is set, or when a
                // partition's follower failed and its leader must serve it.
                .with_rack_id(StrBytes::from_string(
                    cfg.client_rack
                        .clone()
                        .filter(|_| !rackless.contains(&id))
                        .unwrap_or_default(),
                ))
                .with_session_id(s.session_id)
                .with_session_epoch(s.epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                                .with_topic_id(id_of(t))
                                .with_partitions(ps)
                        })
                        .collect(),
                )
                .with_forgotten_topics_data(
                    forgotten
                        .into_iter()
                        .map(|(t, ps)| {
                            ForgottenTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                                .with_topic_id(id_of(t))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            broker.in_flight = Some(InFlight {
                partitions: wanted.keys().cloned().collect(),
                from_follower: wanted
                    .keys()
                    .filter(|tp| to_follower.contains(*tp))
                    .cloned()
                    .collect(),
                topic_names: s
                    .topic_ids
                    .iter()
                    .flatten()
                    .map(|(topic, id)| (*id, topic.clone()))
                    .collect(),
            });
            fetches.push(PlannedFetch {
                broker: id,
                request,
                wait,
                requested: wanted,
            });
        }
        FetchPlan {
            fetches,
            unknown_leaders: unknown,
        }
    }

    /// The earliest moment a throttled broker may be fetched from again,
    /// if one is throttled past `now`: the caller wakes up then.
    pub(crate) fn throttled_until(&self, now: Instant) -> Option<Instant> {
        self.brokers
            .values()
            .filter_map(|b| b.throttled_until)
            .filter(|t| *t > now)
            .min()
    }

    /// Fold the outcome of the fetch [`Fetcher::build_requests`] planned
    /// for `broker`, answered at `now`, into the state (pure): the broker is
    /// free again (after its throttle time, if it asked for one), its
    /// session advances (or starts over), and each partition's data is
    /// buffered as a cursor, unless the partition moved since the request
    /// (seek, reset, revoked), is `revoking`, or answered an error. What
    /// needs I/O comes back as [`FetchAction`]s, in order.
    ///
    /// KIP-392: a leader's `preferred_read_replica` moves its partition to
    /// that follower for `metadata.max.age.ms`. Any error from a follower
    /// (the request failed, a partition error, OFFSET_OUT_OF_RANGE
    /// included: the follower lags) sends its partitions back to the
    /// leader, never to an offset reset (see `replica`).
    pub(crate) fn apply_response(
        &mut self,
        broker: i32,
        requested: &BTreeMap<TopicPartition, i64>,
        result: Result<FetchResponse, Error>,
        revoking: &[TopicPartition],
        cfg: &ConsumerConfig,
        now: Instant,
    ) -> Vec<FetchAction> {
        let (from_follower, topic_names) = self
            .brokers
            .get_mut(&broker)
            .and_then(|b| b.in_flight.take())
            .map(|f| (f.from_follower, f.topic_names))
            .unwrap_or_default();
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker, error = %e, "fetch failed; retrying");
                if let Some(b) = self.brokers.get_mut(&broker) {
                    b.session.reset();
                }
                let mut left = 0;
                for tp in &from_follower {
                    if let Some(p) = self.parts.get_mut(tp) {
                        if p.replica.is_follower(broker) {
                            p.replica.follower_failed(now);
                            left += 1;
                        }
                    }
                }
                if left > 0 {
                    tracing::info!(
                        follower = broker, partitions = left, error = %e,
                        "fetch from a follower failed: reading those partitions from their leaders"
                    );
                }
                return vec![FetchAction::RefreshMetadata(Vec::new())];
            }
        };
        if let Some(b) = self.brokers.get_mut(&broker) {
            b.session.handle_response(resp.error_code, resp.session_id);
            let throttle = Throttle::from_ms(resp.throttle_time_ms);
            b.throttled_until = throttle.is_throttled().then(|| {
                tracing::debug!(broker, ?throttle, "fetch throttled by the broker (quota)");
                now + throttle.duration()
            });
        }
        let mut actions = Vec::new();
        let mut refresh = Vec::new();
        let mut hints = LeaderHints::default();
        if resp.error_code == KafkaCode::FetchSessionTopicIdError.code() {
            // KIP-516: the broker saw this session mix topic ids and names
            // (its session was reset above).
            tracing::warn!(
                broker,
                "fetch session refused for inconsistent topic id usage: refreshing metadata \
                 and starting a new session"
            );
            refresh.extend(requested.keys().map(|tp| tp.topic.clone()));
        }
        for t in &resp.responses {
            // v13+ names topics by id only.
            let topic = if t.topic_id.is_nil() {
                t.topic.0.to_string()
            } else if let Some(name) = topic_names.get(&t.topic_id) {
                name.clone()
            } else {
                tracing::warn!(
                    broker, topic_id = %t.topic_id,
                    "fetch answer for a topic id this fetch did not ask for: ignored"
                );
                continue;
            };
            for p in &t.partitions {
                let tp = TopicPartition::new(topic.clone(), p.partition_index);
                let Some(requested_pos) = requested.get(&tp).copied() else {
                    continue;
                };
                if revoking.contains(&tp) {
                    continue; // being revoked: its listener runs
                }
                let Some(state) = self.parts.get_mut(&tp) else {
                    continue;
                }; // revoked meanwhile
                if state.position != Some(requested_pos) {
                    continue; // a seek happened: this data is stale
                }
                if from_follower.contains(&tp) {
                    if let Some(code) = KafkaCode::try_from_code(p.error_code) {
                        // Its leader decides: never a reset, never an error.
                        tracing::debug!(
                            %tp, follower = broker, offset = requested_pos, ?code,
                            high_watermark = p.high_watermark,
                            "the follower could not serve the partition: reading it from its leader"
                        );
                        if state.replica.is_follower(broker) {
                            state.replica.follower_failed(now);
                        }
                        continue;
                    }
                } else if state.replica.leader_named(
                    broker,
                    p.preferred_read_replica.0,
                    cfg.client.metadata_max_age,
                    now,
                ) {
                    tracing::debug!(
                        %tp, leader = broker, follower = p.preferred_read_replica.0,
                        "the leader named a preferred read replica (KIP-392): reading from it"
                    );
                    continue; // the leader sends no records with it
                }
                match KafkaCode::try_from_code(p.error_code) {
                    None => {}
                    Some(KafkaCode::OffsetOutOfRange) => {
                        actions.push(FetchAction::OutOfRange {
                            tp,
                            offset: requested_pos,
                        });
                        continue;
                    }
                    Some(KafkaCode::NotLeaderOrFollower | KafkaCode::FencedLeaderEpoch)
                        if hints.push(
                            tp.clone(),
                            p.current_leader.leader_id.0,
                            p.current_leader.leader_epoch,
                        ) =>
                    {
                        continue; // KIP-951: its new leader is named, no refresh
                    }
                    Some(code @ (KafkaCode::UnknownTopicId | KafkaCode::InconsistentTopicId)) => {
                        let e = Error::broker_for(ApiKey::Fetch, code, &tp.topic, tp.partition);
                        tracing::warn!(broker, topic_id = %t.topic_id, error = %e, "refreshing metadata");
                        refresh.push(tp.topic.clone());
                        continue;
                    }
                    Some(_) => {
                        refresh.push(tp.topic.clone());
                        continue;
                    }
                }
                if let Some(to) = truncation_point(
                    requested_pos,
                    p.diverging_epoch.epoch,
                    p.diverging_epoch.end_offset,
                ) {
                    tracing::warn!(%tp, from = requested_pos, to, "log truncation detected (KIP-320): rewinding");
                    if cfg.auto_offset_reset == OffsetReset::None {
                        actions.push(FetchAction::Fail(ConsumerError::NoOffset {
                            tp,
                            reason: format!(
                                "log truncated below our position {requested_pos} (to {to})"
                            ),
                        }));
                        return actions;
                    }
                    actions.push(FetchAction::Truncated { tp, to });
                    continue;
                }
                state.high_watermark = p.high_watermark;
                state.last_stable_offset = p.last_stable_offset;
                let cursor = PartitionCursor::new(
                    p,
                    requested_pos,
                    cfg.isolation_level,
                    cfg.max_decompressed_bytes,
                );
                if !cursor.is_empty_response() {
                    // Decoded as drained (markers and aborted data too).
                    self.buffered.push_back((tp, cursor));
                }
            }
        }
        if !hints.is_empty() {
            for n in &resp.node_endpoints {
                hints.push_node(n.node_id.0, &n.host, n.port, n.rack.as_deref());
            }
            actions.insert(0, FetchAction::NewLeaders(hints));
        }
        if !refresh.is_empty() {
            refresh.sort();
            refresh.dedup();
            self.reset_sessions();
            actions.push(FetchAction::RefreshMetadata(refresh));
        }
        actions
    }

    /// Take up to `max` buffered records (unpaused partitions), decoding
    /// them as they are taken. Records are moved out, never cloned. A
    /// corrupt batch ends its partition's buffer (the position stays at
    /// it, so the next fetch meets it again) and comes back beside the
    /// records taken (the first one, if several), for the caller to
    /// return after them.
    pub(crate) fn drain(&mut self, max: usize) -> (Vec<PartitionRecords>, Option<Error>) {
        let mut out = Vec::new();
        let mut error = None;
        let mut budget = max;
        let mut keep = VecDeque::new();
        while let Some((tp, mut cursor)) = self.buffered.pop_front() {
            let Some(state) = self.parts.get_mut(&tp) else {
                continue;
            };
            if state.paused || budget == 0 {
                keep.push_back((tp, cursor));
                continue;
            }
            let taken = cursor.take(&tp, budget);
            state.position = Some(cursor.position());
            if cursor.last_epoch >= 0 {
                state.last_fetched_epoch = cursor.last_epoch;
            }
            let records = match taken {
                Ok(records) => records,
                Err(e) => {
                    error.get_or_insert(e);
                    continue; // dropped: never read past a corrupt batch
                }
            };
            if !cursor.is_finished() {
                keep.push_back((tp.clone(), cursor));
            }
            if records.is_empty() {
                continue; // only markers or aborted data: the position moved past them
            }
            budget -= records.len();
            out.push(PartitionRecords {
                tp,
                records,
                high_watermark: state.high_watermark,
                last_stable_offset: state.last_stable_offset,
            });
        }
        self.buffered = keep;
        (out, error)
    }
}

/// `topic`'s id in `md`, if it has one (Metadata v10+).
fn topic_id(md: &Metadata, topic: &str) -> Option<Uuid> {
    let id = md.topics.get(topic)?.id;
    (id != [0; 16]).then(|| Uuid::from_bytes(id))
}

#[cfg(test)]
mod tests;
