//! The consumer: `subscribe` or `assign`, then `poll`.
//!
//! ```text
//!  poll() ──▶ group events (assigned / revoked / lost) ──▶ listener callbacks
//!    │    ──▶ initialise positions (committed offset, else auto.offset.reset)
//!    │    ──▶ one fetch in flight per broker (Fetch lane, KIP-227 session)
//!    │    ──▶ at most one undrained response buffered per partition
//!    └──▶ records, up to max.poll.records, grouped by partition
//!
//!  group task (independent of poll): FindCoordinator, Join, Sync, Heartbeat
//! ```
//!
//! Positions advance only when records are handed out. Commits are checked
//! against the current generation's ownership before they are sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::coordinator::CoordinatorKind;
use kafka_wire::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_wire::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_wire::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_wire::messages::{
    ApiKey, FetchRequest, FetchResponse, GroupId, OffsetCommitRequest, OffsetFetchRequest,
    TopicName,
};
use kafka_wire::records::Record;
use kafka_wire::{Client, Error, KafkaCode, Lane, OffsetSpec, StrBytes};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{ConsumerConfig, IsolationLevel, OffsetReset};
use crate::error::{ConsumerError, Result};
use crate::fetch_session::FetchSession;
use crate::fetcher::{truncation_point, PartitionCursor};
use crate::group::{GroupEvent, GroupSnapshot, GroupTask};
use crate::membership::TopicSubscription;
use crate::tp::TopicPartition;

/// Records of one partition returned by [`Consumer::poll`].
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

/// Where the consumer stands on one partition it serves, from
/// [`Consumer::positions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPosition {
    pub tp: TopicPartition,
    /// The next offset `poll` returns. It moves past records handed out
    /// *and* past offsets that are not records (transaction markers,
    /// aborted data under `read_committed`, compaction gaps), so it is the
    /// offset to commit once everything handed out is handled.
    pub position: i64,
    /// Bumped whenever the position jumps instead of advancing: an
    /// out-of-range reset, a log truncation (KIP-320), the topic deleted
    /// and recreated. Offsets tracked under an older incarnation belong to
    /// another log: drop them, never commit them (see
    /// [`OffsetToCommit::incarnation`]).
    pub incarnation: u64,
}

/// One partition's commit for [`Committer::commit_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub tp: TopicPartition,
    /// The next offset to consume.
    pub offset: i64,
    /// Stored next to the offset (up to `offset.metadata.max.bytes`).
    pub metadata: Option<String>,
    /// The [`PartitionPosition::incarnation`] the offset was computed in;
    /// the commit of this partition is dropped if the consumer's position
    /// has been reset since. `None`: no check.
    pub incarnation: Option<u64>,
}

/// A boxed future for listener callbacks.
pub type ListenerFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Rebalance callbacks, with the rebalance timeout as deadline; heartbeats
/// continue meanwhile. `on_assigned` and `on_lost` run inside `poll()`.
/// `on_revoked` runs on its own task while `poll()` goes on serving the
/// partitions that stay (a slow drain of the revoked ones must not stop
/// the others): from the moment it starts, `poll()` returns no record of
/// the revoked partitions, and the rebalance goes on only once it ends.
/// `on_revoked` may commit through the [`Committer`]; `on_lost` must not
/// (the partitions are gone).
pub trait RebalanceListener: Send + Sync {
    fn on_assigned<'a>(
        &'a self,
        _c: &'a Committer,
        _parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async {})
    }
    fn on_revoked<'a>(
        &'a self,
        _c: &'a Committer,
        _parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async {})
    }
    fn on_lost<'a>(
        &'a self,
        _c: &'a Committer,
        _parts: &'a [TopicPartition],
    ) -> ListenerFuture<'a> {
        Box::pin(async {})
    }
}

/// An offset committed for the group, with the metadata string stored next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub metadata: String,
}

/// Commits offsets for the group, fenced by generation. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    client: Client,
    group_id: Option<String>,
    instance_id: Option<String>,
    /// `None` in manual-assignment mode (commits as a simple consumer).
    snapshot: Option<Arc<Mutex<GroupSnapshot>>>,
    /// Per partition: the position incarnation and the highest offset
    /// committed in it. Commits never go backwards within an incarnation.
    committed: Arc<Mutex<HashMap<TopicPartition, CommitGuard>>>,
}

/// See [`Committer::committed`] (the field).
#[derive(Debug, Clone, Copy, Default)]
struct CommitGuard {
    incarnation: u64,
    /// -1 before the first commit of this incarnation.
    highest: i64,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("group_id", &self.group_id)
            .finish()
    }
}

impl Committer {
    /// Commit `offsets` (the *next* offset to consume, per partition).
    ///
    /// A commit lower than one this consumer already made for a partition is
    /// skipped: a late commit (from a slow task, or a retry that lost a race)
    /// never moves an offset backwards. To rewind on purpose, commit from a
    /// new consumer or reset the group's offsets with admin tools.
    ///
    /// # Errors
    /// [`ConsumerError::NotOwned`] (refused locally) for a partition this
    /// member does not own in the current generation; broker codes such as
    /// ILLEGAL_GENERATION and REBALANCE_IN_PROGRESS as [`ConsumerError::Wire`].
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the commit may land even if the future is dropped.
    pub async fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        let with: Vec<(TopicPartition, i64, Option<String>)> = offsets
            .iter()
            .map(|(tp, o)| (tp.clone(), *o, None))
            .collect();
        self.commit_with_metadata(&with).await
    }

    /// [`Committer::commit`] with a metadata string per partition (kept by
    /// the broker next to the offset, up to `offset.metadata.max.bytes`).
    ///
    /// # Errors
    /// As [`Committer::commit`].
    ///
    /// # Cancel safety
    /// As [`Committer::commit`].
    pub async fn commit_with_metadata(
        &self,
        offsets: &[(TopicPartition, i64, Option<String>)],
    ) -> Result<()> {
        let offsets: Vec<OffsetToCommit> = offsets
            .iter()
            .map(|(tp, offset, metadata)| OffsetToCommit {
                tp: tp.clone(),
                offset: *offset,
                metadata: metadata.clone(),
                incarnation: None,
            })
            .collect();
        self.commit_offsets(&offsets).await
    }

    /// The current position incarnation of `tp` (0 until its first reset).
    pub fn incarnation(&self, tp: &TopicPartition) -> u64 {
        let done = self.committed.lock().expect("committed lock");
        done.get(tp).map_or(0, |g| g.incarnation)
    }

    /// The consumer reset its position of `tp` (see
    /// [`PartitionPosition::incarnation`]): commits of older incarnations
    /// are dropped from now on, and the new log may commit lower offsets.
    fn new_incarnation(&self, tp: &TopicPartition, incarnation: u64) {
        let mut done = self.committed.lock().expect("committed lock");
        done.insert(
            tp.clone(),
            CommitGuard {
                incarnation,
                highest: -1,
            },
        );
    }

    /// [`Committer::commit_with_metadata`], each partition fenced by its
    /// position incarnation: a partition whose offset was computed before
    /// a reset (out of range, truncation, topic recreated) is dropped
    /// silently, so an offset of an old log never lands on a new one.
    ///
    /// # Errors
    /// As [`Committer::commit`].
    ///
    /// # Cancel safety
    /// As [`Committer::commit`].
    pub async fn commit_offsets(&self, offsets: &[OffsetToCommit]) -> Result<()> {
        let group = self
            .group_id
            .clone()
            .ok_or(ConsumerError::NoGroup("commit"))?;
        let (generation, member_id) = match &self.snapshot {
            Some(snap) => {
                let s = snap.lock().expect("snapshot lock");
                for OffsetToCommit { tp, .. } in offsets {
                    if !s.may_commit(tp) {
                        return Err(ConsumerError::NotOwned {
                            tp: tp.clone(),
                            generation: s.generation,
                        });
                    }
                }
                (s.generation, s.member_id.clone())
            }
            None => (-1, String::new()),
        };
        // Never move an offset backwards, nor commit one of an old log.
        let offsets: Vec<(TopicPartition, i64, Option<String>, u64)> = {
            let done = self.committed.lock().expect("committed lock");
            offsets
                .iter()
                .filter_map(|o| {
                    let guard = done.get(&o.tp).copied().unwrap_or_default();
                    let current = o.incarnation.is_none_or(|i| i == guard.incarnation);
                    (current && o.offset >= guard.highest).then(|| {
                        (
                            o.tp.clone(),
                            o.offset,
                            o.metadata.clone(),
                            guard.incarnation,
                        )
                    })
                })
                .collect()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, o, meta, _) in &offsets {
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(*o)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(meta.clone().map(StrBytes::from_string)),
            );
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(
                self.instance_id
                    .as_ref()
                    .filter(|_| generation >= 0)
                    .map(|i| StrBytes::from_string(i.clone())),
            )
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        // NOT_COORDINATOR / loading: re-find and retry, with backoff, for a while.
        let mut last_err = None;
        for attempt in 0..30u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(6)))).await;
            }
            let node = self
                .client
                .find_coordinator(CoordinatorKind::Group, &group)
                .await?;
            let resp = match self
                .client
                .send_to(node, Lane::Control, &req, Duration::ZERO)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let mut retry = false;
            for t in &resp.topics {
                for p in &t.partitions {
                    if let Some(code) = KafkaCode::try_from_code(p.error_code) {
                        let e = Error::broker_for(
                            ApiKey::OffsetCommit,
                            code,
                            &t.name.0,
                            p.partition_index,
                        );
                        if matches!(
                            code,
                            KafkaCode::NotCoordinator
                                | KafkaCode::CoordinatorNotAvailable
                                | KafkaCode::CoordinatorLoadInProgress
                        ) {
                            retry = true;
                            last_err = Some(e);
                        } else {
                            return Err(e.into());
                        }
                    }
                }
            }
            if !retry {
                let mut done = self.committed.lock().expect("committed lock");
                for (tp, o, _, incarnation) in offsets {
                    let guard = done.entry(tp).or_default();
                    // A reset while the commit was in flight keeps its new guard.
                    if guard.incarnation == incarnation {
                        guard.highest = guard.highest.max(o);
                    }
                }
                return Ok(());
            }
        }
        Err(last_err
            .map(ConsumerError::from)
            .unwrap_or(ConsumerError::Closed))
    }

    /// Committed offsets (with their metadata) of `tps` for this group.
    ///
    /// # Errors
    /// Coordinator errors.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, CommittedOffset>> {
        let group = self
            .group_id
            .clone()
            .ok_or(ConsumerError::NoGroup("committed"))?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            by_topic.entry(&tp.topic).or_default().push(tp.partition);
        }
        let req = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(Some(
                    by_topic
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partition_indexes(ps)
                        })
                        .collect(),
                ))]);
        for attempt in 0..50 {
            let node = self
                .client
                .find_coordinator(CoordinatorKind::Group, &group)
                .await?;
            let resp = self
                .client
                .send_to(node, Lane::Control, &req, Duration::ZERO)
                .await?;
            let Some(g) = resp.groups.first() else {
                return Ok(BTreeMap::new());
            };
            let mut out = BTreeMap::new();
            let mut unstable = false;
            for t in &g.topics {
                for p in &t.partitions {
                    match KafkaCode::try_from_code(p.error_code) {
                        None => {
                            if p.committed_offset >= 0 {
                                out.insert(
                                    TopicPartition::new(t.name.0.to_string(), p.partition_index),
                                    CommittedOffset {
                                        offset: p.committed_offset,
                                        metadata: p
                                            .metadata
                                            .as_ref()
                                            .map(|m| m.to_string())
                                            .unwrap_or_default(),
                                    },
                                );
                            }
                        }
                        Some(KafkaCode::UnstableOffsetCommit) => unstable = true,
                        Some(code) => {
                            return Err(Error::broker_for(
                                ApiKey::OffsetFetch,
                                code,
                                &t.name.0,
                                p.partition_index,
                            )
                            .into())
                        }
                    }
                }
            }
            let group_error = KafkaCode::try_from_code(g.error_code);
            if !unstable && group_error.is_none() {
                return Ok(out);
            }
            if let Some(code) = group_error {
                if !code.is_retriable() {
                    return Err(Error::broker_for(ApiKey::OffsetFetch, code, &group, -1).into());
                }
            }
            // A transaction is still committing offsets: wait for it (KIP-447).
            tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
        }
        Err(ConsumerError::Wire(Error::Metadata(format!(
            "offsets of group {group} stayed unstable"
        ))))
    }
}

#[derive(Debug, Clone)]
struct PartState {
    /// `None` until initialised from the committed offset or the reset policy.
    position: Option<i64>,
    /// Where an unset position starts.
    start: Start,
    /// See [`PartitionPosition::incarnation`].
    incarnation: u64,
    paused: bool,
    /// When the application paused it (see [`HELD_BACK_FETCH_WAIT`]).
    paused_since: Option<Instant>,
    high_watermark: i64,
    last_stable_offset: i64,
    /// Epoch of the last batch handed out (KIP-320), -1 if unknown.
    last_fetched_epoch: i32,
}

/// Where a partition without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The group's committed offset, else `auto.offset.reset`.
    Committed,
    /// The log start offset, whatever is committed: the topic was deleted
    /// and recreated, so a committed offset (if the coordinator has not
    /// dropped it yet) belongs to the old log, and every record of the new
    /// one is new.
    LogStart,
}

impl PartState {
    fn new(incarnation: u64) -> Self {
        PartState {
            position: None,
            start: Start::Committed,
            incarnation,
            paused: false,
            paused_since: None,
            high_watermark: -1,
            last_stable_offset: -1,
            last_fetched_epoch: -1,
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

/// Run a listener callback, abandoning it after `deadline`.
async fn bounded(deadline: Duration, what: &str, f: ListenerFuture<'_>) {
    if tokio::time::timeout(deadline, f).await.is_err() {
        tracing::warn!("rebalance listener {what} exceeded max.poll.interval.ms; abandoned");
    }
}

type FetchOutcome = (
    i32,
    BTreeMap<TopicPartition, i64>,
    std::result::Result<FetchResponse, Error>,
);

/// A Kafka consumer. See the module docs for the data flow.
pub struct Consumer {
    client: Client,
    cfg: Arc<ConsumerConfig>,
    parts: BTreeMap<TopicPartition, PartState>,
    sessions: HashMap<i32, FetchSession>,
    in_flight: JoinSet<FetchOutcome>,
    busy: BTreeSet<i32>,
    buffered: VecDeque<(TopicPartition, PartitionCursor)>,
    /// A corrupt batch found while draining after other records were
    /// taken: those are returned first, this with the next poll.
    deferred_error: Option<ConsumerError>,
    committer: Committer,
    listener: Option<Arc<dyn RebalanceListener>>,
    events: Option<mpsc::Receiver<GroupEvent>>,
    polled: Option<watch::Sender<std::time::Instant>>,
    close: Option<watch::Sender<bool>>,
    group_task: Option<tokio::task::JoinHandle<()>>,
    /// A revoke whose `on_revoked` runs on its own task, and its event
    /// (applied, and acknowledged to the group task, when it ends).
    pending_revoke: Option<(tokio::task::JoinHandle<()>, GroupEvent)>,
    last_auto_commit: Instant,
    fatal: Option<String>,
    /// The id of every topic this consumer has read from, as metadata
    /// (v10+) reported it when first seen: a different id later means the
    /// topic was deleted and recreated.
    topic_ids: HashMap<String, [u8; 16]>,
    /// The metadata snapshot `topic_ids` was last checked against.
    checked_metadata: Option<Arc<kafka_wire::metadata::Metadata>>,
    /// The last incarnation handed out (see [`PartitionPosition`]).
    last_incarnation: u64,
    /// Assigned partitions that appeared after subscribe and have no
    /// position yet: uncommitted, they start at the earliest offset.
    appeared_after_subscribe: BTreeSet<TopicPartition>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.cfg.group_id)
            .field("partitions", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connect (no subscription yet).
    ///
    /// # Errors
    /// Connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn connect(cfg: ConsumerConfig) -> Result<Consumer> {
        let client = Client::connect(cfg.client.clone()).await?;
        Ok(Self::with_client(client, cfg))
    }

    /// Build on an existing client (sharing its connections).
    pub fn with_client(client: Client, cfg: ConsumerConfig) -> Consumer {
        let committer = Committer {
            client: client.clone(),
            group_id: cfg.group_id.clone(),
            instance_id: cfg.group_instance_id.clone(),
            snapshot: None,
            committed: Arc::default(),
        };
        Consumer {
            client,
            cfg: Arc::new(cfg),
            parts: BTreeMap::new(),
            sessions: HashMap::new(),
            in_flight: JoinSet::new(),
            busy: BTreeSet::new(),
            buffered: VecDeque::new(),
            deferred_error: None,
            committer,
            listener: None,
            events: None,
            polled: None,
            close: None,
            group_task: None,
            pending_revoke: None,
            last_auto_commit: Instant::now(),
            fatal: None,
            topic_ids: HashMap::new(),
            checked_metadata: None,
            last_incarnation: 0,
            appeared_after_subscribe: BTreeSet::new(),
        }
    }

    /// Set the rebalance listener (before `subscribe`).
    pub fn set_listener(&mut self, listener: Arc<dyn RebalanceListener>) {
        self.listener = Some(listener);
    }

    /// The committer (for use from other tasks or the listener).
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Join the group and consume `topics`. A topic that does not exist
    /// yet is picked up once created, and a topic's added partitions once
    /// they appear: the group checks metadata every `metadata.max.age.ms`
    /// and rebalances on a change (as Java's consumer).
    ///
    /// # Errors
    /// [`ConsumerError::NoGroup`] without `group.id`.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        let topics = topics.iter().map(|t| t.to_string()).collect();
        self.subscribe_to(TopicSubscription::Topics(topics))
    }

    /// Join the group and consume every topic whose whole name matches
    /// the regular expression `pattern` (Java's `subscribe(Pattern)`;
    /// `regex` crate syntax), internal topics excluded. Matches are read
    /// from the full topic list before joining and every
    /// `metadata.max.age.ms` after: a topic created later that matches is
    /// picked up with one rebalance.
    ///
    /// # Errors
    /// [`ConsumerError::NoGroup`] without `group.id`; an invalid regex as
    /// [`kafka_wire::Error::Config`] naming it.
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let sub = TopicSubscription::pattern(pattern).map_err(|e| {
            kafka_wire::Error::Config(format!(
                "topic pattern {pattern:?} is not a valid regex: {e}"
            ))
        })?;
        self.subscribe_to(sub)
    }

    fn subscribe_to(&mut self, subscription: TopicSubscription) -> Result<()> {
        let group_id = self
            .cfg
            .group_id
            .clone()
            .ok_or(ConsumerError::NoGroup("subscribe"))?;
        let snapshot = Arc::new(Mutex::new(GroupSnapshot::default()));
        self.committer.snapshot = Some(snapshot.clone());
        let (events_tx, events_rx) = mpsc::channel(16);
        let (polled_tx, polled_rx) = watch::channel(std::time::Instant::now());
        let (close_tx, close_rx) = watch::channel(false);
        let task = GroupTask {
            client: self.client.clone(),
            cfg: self.cfg.clone(),
            group_id,
            subscription,
            snapshot,
            events: events_tx,
            polled: polled_rx,
            close: close_rx,
        };
        self.group_task = Some(tokio::spawn(task.run()));
        self.events = Some(events_rx);
        self.polled = Some(polled_tx);
        self.close = Some(close_tx);
        Ok(())
    }

    /// Consume exactly these partitions (no group membership).
    pub fn assign(&mut self, parts: &[TopicPartition]) {
        self.parts = parts
            .iter()
            .map(|tp| (tp.clone(), PartState::new(self.committer.incarnation(tp))))
            .collect();
        self.buffered.clear();
        for s in self.sessions.values_mut() {
            s.reset();
        }
    }

    /// The group generation this member is in, if it is a stable member.
    pub fn generation(&self) -> Option<i32> {
        let snap = self.committer.snapshot.as_ref()?;
        let s = snap.lock().expect("snapshot lock");
        (s.stable && s.generation >= 0).then_some(s.generation)
    }

    /// Partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// Stop fetching `tp`; records already buffered are kept for resume.
    pub fn pause(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.parts.get_mut(tp) {
                if !p.paused {
                    p.paused_since = Some(Instant::now());
                }
                p.paused = true;
            }
        }
    }

    pub fn resume(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.parts.get_mut(tp) {
                p.paused = false;
                p.paused_since = None;
            }
        }
    }

    /// Next `poll` returns records of `tp` from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = Some(offset);
        }
        self.buffered.retain(|(t, _)| t != tp);
    }

    /// The next offset `poll` returns for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.parts.get(tp).and_then(|p| p.position)
    }

    /// The position of every partition this consumer serves: assigned,
    /// initialised, and not being revoked. See [`PartitionPosition`]; the
    /// processing runtime commits from these, so transaction markers and
    /// aborted ranges never leave lag behind.
    pub fn positions(&self) -> Vec<PartitionPosition> {
        self.parts
            .iter()
            .filter(|(tp, _)| !self.revoking(tp))
            .filter_map(|(tp, p)| {
                Some(PartitionPosition {
                    tp: tp.clone(),
                    position: p.position?,
                    incarnation: p.incarnation,
                })
            })
            .collect()
    }

    /// Records this consumer may still read from `tp`: the readable end
    /// (the high watermark, or the last stable offset under
    /// `read_committed`) minus the position, as of the last fetch. `None`
    /// before the first fetch answered.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.parts.get(tp)?;
        let end = match self.cfg.isolation_level {
            IsolationLevel::ReadCommitted => p.last_stable_offset,
            IsolationLevel::ReadUncommitted => p.high_watermark,
        };
        (end >= 0).then(|| (end - p.position.unwrap_or(0)).max(0))
    }

    /// Move `tps` to their log start offset. The next `poll` returns
    /// records from there.
    ///
    /// # Errors
    /// ListOffsets errors (a partition that does not exist).
    ///
    /// # Cancel safety
    /// Cancel safe: positions change only once the offsets are known.
    pub async fn seek_to_beginning(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to(tps, OffsetSpec::Earliest).await
    }

    /// Move `tps` to their end: the high watermark, or the last stable
    /// offset under `read_committed` (an open transaction's records,
    /// committed later, are then still read).
    ///
    /// # Errors
    /// As [`Consumer::seek_to_beginning`].
    ///
    /// # Cancel safety
    /// As [`Consumer::seek_to_beginning`].
    pub async fn seek_to_end(&mut self, tps: &[TopicPartition]) -> Result<()> {
        self.seek_to(tps, OffsetSpec::Latest).await
    }

    async fn seek_to(&mut self, tps: &[TopicPartition], spec: OffsetSpec) -> Result<()> {
        let offsets = self
            .client
            .partition_offsets(tps, spec, self.cfg.isolation_level)
            .await?;
        for (tp, o) in offsets {
            self.seek(&tp, o);
        }
        Ok(())
    }

    /// Commit `offsets` (next offsets to consume). See [`Committer::commit`].
    ///
    /// # Errors
    /// As [`Committer::commit`].
    ///
    /// # Cancel safety
    /// As [`Committer::commit`]: the commit may land even if cancelled.
    pub async fn commit(&self, offsets: &[(TopicPartition, i64)]) -> Result<()> {
        self.committer.commit(offsets).await
    }

    /// Commit the current position of every assigned partition.
    ///
    /// # Errors
    /// As [`Committer::commit`].
    ///
    /// # Cancel safety
    /// As [`Committer::commit`].
    pub async fn commit_positions(&self) -> Result<()> {
        let offsets: Vec<_> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.position.map(|o| (tp.clone(), o)))
            .collect();
        self.committer.commit(&offsets).await
    }

    /// Committed offsets of `tps` for this group.
    ///
    /// # Errors
    /// Coordinator errors.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn committed(&self, tps: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, i64>> {
        Ok(self
            .committer
            .committed(tps)
            .await?
            .into_iter()
            .map(|(tp, c)| (tp, c.offset))
            .collect())
    }

    /// The group identity a transactional producer needs to commit this
    /// consumer's offsets (KIP-447); `None` outside a stable group.
    pub fn group_metadata(&self) -> Option<kafka_wire::producer::GroupMetadata> {
        let snap = self.committer.snapshot.as_ref()?;
        let s = snap.lock().expect("snapshot lock");
        (s.stable && s.generation >= 0).then(|| kafka_wire::producer::GroupMetadata {
            group_id: self.cfg.group_id.clone().unwrap_or_default(),
            generation_id: s.generation,
            member_id: s.member_id.clone(),
            group_instance_id: self.cfg.group_instance_id.clone(),
        })
    }

    fn apply_event(&mut self, e: &GroupEvent) {
        match e {
            GroupEvent::Assigned(parts, fresh) => {
                self.appeared_after_subscribe.extend(fresh.iter().cloned());
                for tp in parts {
                    let incarnation = self.committer.incarnation(tp);
                    self.parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(incarnation));
                }
            }
            GroupEvent::Revoked(parts, _) | GroupEvent::Lost(parts, _) => {
                for tp in parts {
                    self.parts.remove(tp);
                    self.appeared_after_subscribe.remove(tp);
                }
                self.buffered.retain(|(tp, _)| !parts.contains(tp));
            }
            GroupEvent::Fatal(msg) => self.fatal = Some(msg.clone()),
        }
    }

    /// Handle group events; run listener callbacks, each bounded by the
    /// rebalance timeout (`max.poll.interval.ms`).
    async fn handle_event(&mut self, e: GroupEvent) -> Result<()> {
        let listener = self.listener.clone();
        let deadline = self.cfg.max_poll_interval;
        match &e {
            GroupEvent::Assigned(parts, _) => {
                self.apply_event(&e);
                if let Some(l) = &listener {
                    bounded(
                        deadline,
                        "on_assigned",
                        l.on_assigned(&self.committer, parts),
                    )
                    .await;
                }
            }
            GroupEvent::Revoked(parts, _) if listener.is_some() => {
                // Nothing of these is fetched or returned from now on (see
                // `revoking`); the listener runs on its own task while poll
                // serves the rest.
                self.buffered.retain(|(tp, _)| !parts.contains(tp));
                let (l, c, ps) = (listener.clone(), self.committer.clone(), parts.clone());
                let work = tokio::spawn(async move {
                    if let Some(l) = l {
                        bounded(deadline, "on_revoked", l.on_revoked(&c, &ps)).await;
                    }
                });
                self.pending_revoke = Some((work, e));
                return Ok(());
            }
            GroupEvent::Revoked(parts, _) => {
                if self.cfg.enable_auto_commit {
                    let offsets: Vec<_> = parts
                        .iter()
                        .filter_map(|tp| self.position(tp).map(|o| (tp.clone(), o)))
                        .collect();
                    let _ = self.committer.commit(&offsets).await;
                }
                self.apply_event(&e);
            }
            GroupEvent::Lost(parts, _) => {
                if let Some(l) = &listener {
                    bounded(deadline, "on_lost", l.on_lost(&self.committer, parts)).await;
                }
                self.apply_event(&e);
            }
            GroupEvent::Fatal(_) => self.apply_event(&e),
        }
        match e {
            GroupEvent::Revoked(_, done) | GroupEvent::Lost(_, done) => {
                let _ = done.send(());
            }
            _ => {}
        }
        match &self.fatal {
            Some(msg) => Err(ConsumerError::Fatal(msg.clone())),
            None => Ok(()),
        }
    }

    /// Is `tp` being revoked (its `on_revoked` running)? Then nothing of it
    /// is fetched or returned.
    fn revoking(&self, tp: &TopicPartition) -> bool {
        matches!(&self.pending_revoke, Some((_, GroupEvent::Revoked(parts, _))) if parts.contains(tp))
    }

    /// The revoke's listener ended (or panicked): apply the event and let
    /// the group task go on.
    fn finish_revoke(&mut self) {
        if let Some((_, e)) = self.pending_revoke.take() {
            self.apply_event(&e);
            if let GroupEvent::Revoked(_, done) = e {
                let _ = done.send(());
            }
        }
    }

    /// Wait for a running revoke's listener to end (close, shutdown).
    async fn finish_pending_revoke(&mut self) {
        if let Some((work, _)) = self.pending_revoke.as_mut() {
            let _ = work.await;
            self.finish_revoke();
        }
    }

    /// Positions for partitions that have none: committed offsets, else
    /// reset (a recreated topic's partitions: the log start).
    async fn init_positions(&mut self) -> Result<()> {
        self.check_topic_ids();
        let missing: Vec<(TopicPartition, Start)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, p)| (tp.clone(), p.start))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Retriable failures (coordinator loading, leader moving) leave the
        // position unset; the next poll iteration tries again.
        let retriable = |e: &ConsumerError| e.action() != kafka_wire::ErrorAction::Fatal;
        let (from_log_start, from_committed): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|(_, s)| *s == Start::LogStart);
        let from_log_start: Vec<TopicPartition> =
            from_log_start.into_iter().map(|(tp, _)| tp).collect();
        let from_committed: Vec<TopicPartition> =
            from_committed.into_iter().map(|(tp, _)| tp).collect();
        let committed = if self.cfg.group_id.is_some() && !from_committed.is_empty() {
            match self.committed(&from_committed).await {
                Ok(c) => c,
                Err(e) if retriable(&e) => {
                    tracing::debug!(error = %e, "committed offsets not available yet; retrying");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        } else {
            BTreeMap::new()
        };
        let mut positions = committed;
        // Uncommitted partitions that appeared after subscribe start at
        // their earliest offset, or the records produced before the group
        // assigned them are skipped forever; the others follow the policy.
        let (appeared, no_commit): (Vec<TopicPartition>, Vec<TopicPartition>) = from_committed
            .into_iter()
            .filter(|tp| !positions.contains_key(tp))
            .partition(|tp| self.appeared_after_subscribe.contains(tp));
        let mut from_log_start = from_log_start;
        from_log_start.extend(appeared);
        for (tps, spec) in [
            (from_log_start, Some(OffsetSpec::Earliest)),
            (no_commit, self.reset_spec()),
        ] {
            if tps.is_empty() {
                continue;
            }
            let Some(spec) = spec else {
                return Err(ConsumerError::NoOffset {
                    tp: tps[0].clone(),
                    reason: "no committed offset".into(),
                });
            };
            match self
                .client
                .partition_offsets(&tps, spec, self.cfg.isolation_level)
                .await
            {
                Ok(o) => positions.extend(o),
                Err(e) if e.action() != kafka_wire::ErrorAction::Fatal => {
                    tracing::debug!(error = %e, "offset reset failed; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (tp, pos) in positions {
            if let Some(p) = self.parts.get_mut(&tp) {
                if p.position.is_none() {
                    p.position = Some(pos);
                    p.start = Start::Committed;
                }
            }
            self.appeared_after_subscribe.remove(&tp);
        }
        Ok(())
    }

    /// `auto.offset.reset` as a ListOffsets spec; `None` for `none`.
    fn reset_spec(&self) -> Option<OffsetSpec> {
        match self.cfg.auto_offset_reset {
            OffsetReset::Earliest => Some(OffsetSpec::Earliest),
            OffsetReset::Latest => Some(OffsetSpec::Latest),
            OffsetReset::None => None,
        }
    }

    /// Compare the ids of the topics we read with the metadata cache (once
    /// per new snapshot): a topic whose id changed was deleted and
    /// recreated, and its partitions start over at the new log's start,
    /// in a new incarnation (nothing of the old log is ever committed to
    /// the new one).
    fn check_topic_ids(&mut self) {
        let md = self.client.metadata();
        if self
            .checked_metadata
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, &md))
        {
            return;
        }
        let mut recreated: Vec<String> = Vec::new();
        for tp in self.parts.keys() {
            let Some(info) = md.topics.get(&tp.topic) else {
                continue;
            };
            if info.id == [0; 16] {
                continue; // a broker without topic ids (Metadata < v10)
            }
            match self.topic_ids.get(&tp.topic) {
                None => {
                    self.topic_ids.insert(tp.topic.clone(), info.id);
                }
                Some(old) if *old != info.id && !recreated.contains(&tp.topic) => {
                    recreated.push(tp.topic.clone());
                }
                Some(_) => {}
            }
        }
        for topic in recreated {
            if let Some(info) = md.topics.get(&topic) {
                self.topic_ids.insert(topic.clone(), info.id);
            }
            let tps: Vec<TopicPartition> = self
                .parts
                .keys()
                .filter(|tp| tp.topic == topic)
                .cloned()
                .collect();
            tracing::warn!(
                topic,
                partitions = tps.len(),
                "topic was deleted and recreated (its id changed): reading the new log from its start; \
                 nothing of the old log is committed to it"
            );
            for tp in &tps {
                self.restart_partition(tp, Start::LogStart, None);
            }
        }
        self.checked_metadata = Some(md);
    }

    /// The position of `tp` jumps (reset, truncation, recreated topic):
    /// a new incarnation, nothing buffered, a new commit guard.
    fn restart_partition(&mut self, tp: &TopicPartition, start: Start, position: Option<i64>) {
        self.last_incarnation += 1;
        let incarnation = self
            .last_incarnation
            .max(self.committer.incarnation(tp) + 1);
        self.last_incarnation = incarnation;
        if let Some(p) = self.parts.get_mut(tp) {
            p.position = position;
            p.start = start;
            p.incarnation = incarnation;
            p.last_fetched_epoch = -1;
            p.high_watermark = -1;
            p.last_stable_offset = -1;
        }
        self.buffered.retain(|(t, _)| t != tp);
        for s in self.sessions.values_mut() {
            s.reset();
        }
        self.committer.new_incarnation(tp, incarnation);
    }

    /// A fetch at `pos` answered OFFSET_OUT_OF_RANGE. Below the log start
    /// (retention or DeleteRecords removed what we had not read yet):
    /// resume at the log start, whatever `auto.offset.reset` says, so the
    /// retained backlog is not skipped (franz-go's rule; Java applies the
    /// reset policy, and `latest` skips it). Past the end (the log was
    /// truncated or recreated): the reset policy. With `none`: an error
    /// naming the partition, the offset and the log's range.
    async fn out_of_range(&mut self, tp: &TopicPartition, pos: i64) -> Result<()> {
        // Recreated under us? Then the new log is read from its start.
        let _ = self
            .client
            .refresh_metadata(Some(std::slice::from_ref(&tp.topic)))
            .await;
        self.check_topic_ids();
        if self.parts.get(tp).is_none_or(|p| p.position != Some(pos)) {
            return Ok(());
        }
        let tps = [tp.clone()];
        let iso = self.cfg.isolation_level;
        let log_start = self
            .client
            .partition_offsets(&tps, OffsetSpec::Earliest, iso)
            .await?;
        let end = self
            .client
            .partition_offsets(&tps, OffsetSpec::Latest, iso)
            .await?;
        let (Some(&log_start), Some(&end)) = (log_start.get(tp), end.get(tp)) else {
            return Ok(()); // not answered: the next fetch tries again
        };
        let next = match self.cfg.auto_offset_reset {
            OffsetReset::None => {
                return Err(ConsumerError::NoOffset {
                    tp: tp.clone(),
                    reason: format!(
                        "offset {pos} is out of range: the log holds {log_start}..{end} \
                         (log start offset {log_start})"
                    ),
                })
            }
            _ if pos < log_start => {
                tracing::warn!(
                    %tp, offset = pos, log_start,
                    "position below the log start offset (retention or DeleteRecords removed \
                     records this group had not read): resuming at the log start"
                );
                log_start
            }
            OffsetReset::Earliest => log_start,
            OffsetReset::Latest => end,
        };
        if next < pos {
            tracing::warn!(%tp, offset = pos, next, end, "position past the log end: auto.offset.reset applies");
            self.restart_partition(tp, Start::Committed, Some(next));
        } else {
            self.seek(tp, next);
        }
        Ok(())
    }

    /// Send a fetch to every broker that has fetchable partitions and none in flight.
    async fn send_fetches(&mut self) {
        let md = self.client.metadata();
        let buffered: BTreeSet<&TopicPartition> = self.buffered.iter().map(|(tp, _)| tp).collect();
        let mut by_leader: BTreeMap<i32, BTreeMap<TopicPartition, i64>> = BTreeMap::new();
        let mut epochs: BTreeMap<TopicPartition, (i32, i32)> = BTreeMap::new();
        let mut unknown = Vec::new();
        // Leaders with a partition sitting out that will want data soon.
        let mut held_back: BTreeSet<i32> = BTreeSet::new();
        for (tp, p) in &self.parts {
            if self.revoking(tp) {
                continue;
            }
            if buffered.contains(tp) {
                // At most one undrained response per partition.
                let soon = p.paused_since.is_none_or(|t| t.elapsed() < LONG_PAUSE);
                if let (true, Some(b)) = (soon, md.leader(&tp.topic, tp.partition)) {
                    held_back.insert(b.id);
                }
                continue;
            }
            let (Some(pos), false) = (p.position, p.paused) else {
                continue;
            };
            match md.leader(&tp.topic, tp.partition) {
                Some(b) => {
                    by_leader.entry(b.id).or_default().insert(tp.clone(), pos);
                    // KIP-320: fence stale leaders and detect log divergence.
                    let current = md
                        .partition(&tp.topic, tp.partition)
                        .map_or(-1, |p| p.leader_epoch);
                    epochs.insert(tp.clone(), (current, p.last_fetched_epoch));
                }
                None => unknown.push(tp.topic.clone()),
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            unknown.dedup();
            let _ = self.client.refresh_metadata(Some(&unknown)).await;
        }
        for (leader, wanted) in by_leader {
            if self.busy.contains(&leader) {
                continue;
            }
            let session = self.sessions.entry(leader).or_default();
            let s = session.next_request(&wanted);
            let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
            for (tp, offset) in &s.partitions {
                topics.entry(&tp.topic).or_default().push(
                    FetchPartition::default()
                        .with_partition(tp.partition)
                        .with_fetch_offset(*offset)
                        .with_current_leader_epoch(epochs.get(tp).map_or(-1, |e| e.0))
                        .with_last_fetched_epoch(epochs.get(tp).map_or(-1, |e| e.1))
                        .with_partition_max_bytes(self.cfg.max_partition_fetch_bytes),
                );
            }
            let mut forgotten: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for tp in &s.forgotten {
                forgotten.entry(&tp.topic).or_default().push(tp.partition);
            }
            let wait = if held_back.contains(&leader) {
                self.cfg.fetch_max_wait.min(HELD_BACK_FETCH_WAIT)
            } else {
                self.cfg.fetch_max_wait
            };
            let req = FetchRequest::default()
                .with_max_wait_ms(wait.as_millis() as i32)
                .with_min_bytes(self.cfg.fetch_min_bytes)
                .with_max_bytes(self.cfg.fetch_max_bytes)
                .with_isolation_level(self.cfg.isolation_level.wire())
                .with_session_id(s.session_id)
                .with_session_epoch(s.epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            FetchTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(t.to_string())))
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
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            let client = self.client.clone();
            self.busy.insert(leader);
            self.in_flight.spawn(async move {
                let r = client.send_to(leader, Lane::Fetch, &req, wait).await;
                (leader, wanted, r)
            });
        }
    }

    /// Fold one fetch response into the buffer.
    async fn complete_fetch(&mut self, outcome: FetchOutcome) -> Result<()> {
        let (leader, requested, result) = outcome;
        self.busy.remove(&leader);
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker = leader, error = %e, "fetch failed; retrying");
                if let Some(s) = self.sessions.get_mut(&leader) {
                    s.reset();
                }
                let _ = self.client.refresh_metadata(Some(&[])).await;
                return Ok(());
            }
        };
        if let Some(s) = self.sessions.get_mut(&leader) {
            s.handle_response(resp.error_code, resp.session_id);
        }
        let mut refresh = Vec::new();
        for t in &resp.responses {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.topic.0.to_string(), p.partition_index);
                let Some(requested_pos) = requested.get(&tp).copied() else {
                    continue;
                };
                if self.revoking(&tp) {
                    continue; // being revoked: its listener runs
                }
                let Some(state) = self.parts.get_mut(&tp) else {
                    continue;
                }; // revoked meanwhile
                if state.position != Some(requested_pos) {
                    continue; // a seek happened: this data is stale
                }
                match KafkaCode::try_from_code(p.error_code) {
                    None => {}
                    Some(KafkaCode::OffsetOutOfRange) => {
                        match self.out_of_range(&tp, requested_pos).await {
                            Ok(()) => {}
                            Err(e) if e.action() != kafka_wire::ErrorAction::Fatal => {
                                tracing::debug!(%tp, error = %e, "offset reset failed; retrying");
                            }
                            Err(e) => return Err(e),
                        }
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
                    if self.cfg.auto_offset_reset == OffsetReset::None {
                        return Err(ConsumerError::NoOffset {
                            tp,
                            reason: format!(
                                "log truncated below our position {requested_pos} (to {to})"
                            ),
                        });
                    }
                    self.restart_partition(&tp, Start::Committed, Some(to));
                    continue;
                }
                state.high_watermark = p.high_watermark;
                state.last_stable_offset = p.last_stable_offset;
                let cursor = PartitionCursor::new(
                    p,
                    requested_pos,
                    self.cfg.isolation_level,
                    self.cfg.max_decompressed_bytes,
                );
                if !cursor.is_empty_response() {
                    // Decoded as drained (markers and aborted data too).
                    self.buffered.push_back((tp, cursor));
                }
            }
        }
        if !refresh.is_empty() {
            refresh.sort();
            refresh.dedup();
            for s in self.sessions.values_mut() {
                s.reset();
            }
            let _ = self.client.refresh_metadata(Some(&refresh)).await;
        }
        Ok(())
    }

    /// Take up to `max.poll.records` buffered records (unpaused partitions),
    /// decoding them as they are taken. Records are moved out, never cloned.
    /// A corrupt batch ends its partition's buffer (the position stays at
    /// it, so the next fetch meets it again) and is returned by the next
    /// poll, after the records taken before it.
    fn drain(&mut self) -> Vec<PartitionRecords> {
        let mut out = Vec::new();
        let mut budget = self.cfg.max_poll_records;
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
                    self.deferred_error.get_or_insert(e.into());
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
        out
    }

    /// Wait up to `timeout` for records. Returns an empty vector on timeout.
    ///
    /// # Errors
    /// Corrupt batches (naming the partition; nothing of them is returned),
    /// `auto.offset.reset=none` without an offset, fatal group errors.
    ///
    /// # Cancel safety
    /// Cancel safe: positions advance only when records are returned.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<PartitionRecords>> {
        let deadline = Instant::now() + timeout;
        if let Some(p) = &self.polled {
            let _ = p.send(std::time::Instant::now());
        }
        loop {
            if let Some(msg) = &self.fatal {
                return Err(ConsumerError::Fatal(msg.clone()));
            }
            if self
                .pending_revoke
                .as_ref()
                .is_some_and(|(work, _)| work.is_finished())
            {
                self.finish_revoke();
            }
            // Events wait while a revoke runs: the group sends none before
            // it is acknowledged, and their order matters.
            while self.pending_revoke.is_none() {
                let Some(e) = self.events.as_mut().and_then(|rx| rx.try_recv().ok()) else {
                    break;
                };
                self.handle_event(e).await?;
            }
            self.init_positions().await?;
            self.maybe_auto_commit().await;
            let out = self.drain();
            if !out.is_empty() {
                return Ok(out);
            }
            if let Some(e) = self.deferred_error.take() {
                return Err(e);
            }
            self.send_fetches().await;
            let revoking = self.pending_revoke.is_some();
            let events = self.events.as_mut().filter(|_| !revoking);
            let revoke = self.pending_revoke.as_mut().map(|(work, _)| work);
            tokio::select! {
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    if let Ok(outcome) = done {
                        self.complete_fetch(outcome).await?;
                    }
                }
                Some(e) = async {
                    match events { Some(rx) => rx.recv().await, None => std::future::pending().await }
                } => {
                    self.handle_event(e).await?;
                }
                _ = async {
                    match revoke { Some(work) => { let _ = work.await; } None => std::future::pending().await }
                } => {
                    self.finish_revoke();
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
            if Instant::now() >= deadline {
                return Ok(self.drain());
            }
        }
    }

    async fn maybe_auto_commit(&mut self) {
        if !self.cfg.enable_auto_commit || self.cfg.group_id.is_none() {
            return;
        }
        if self.last_auto_commit.elapsed() < self.cfg.auto_commit_interval {
            return;
        }
        self.last_auto_commit = Instant::now();
        // Java-compatible and dangerous by design: commits what was *returned*
        // by poll, whether or not the application has processed it.
        if let Err(e) = self.commit_positions().await {
            tracing::debug!(error = %e, "auto-commit failed");
        }
    }

    /// Leave the group (committing positions first if auto-commit is on),
    /// within `timeout`. Revoked partitions go through the listener first.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping it mid-way may skip the LeaveGroup (the
    /// group then waits for the session timeout).
    pub async fn close(mut self, timeout: Duration) {
        self.finish_pending_revoke().await;
        if self.cfg.enable_auto_commit {
            let _ = self.commit_positions().await;
        }
        if let Some(c) = &self.close {
            let _ = c.send(true);
        }
        let end = Instant::now() + timeout;
        while let Some(rx) = self.events.as_mut() {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => {
                        let _ = self.handle_event(e).await;
                        // A revoke's listener runs on its own task; the group
                        // goes on (to leave) once it is acknowledged.
                        let left = end.saturating_duration_since(Instant::now());
                        let _ = tokio::time::timeout(left, self.finish_pending_revoke()).await;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(end) => break,
            }
        }
        if let Some(t) = self.group_task.take() {
            let _ = tokio::time::timeout(end.saturating_duration_since(Instant::now()), t).await;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(t) = &self.group_task {
            t.abort();
        }
        if let Some((work, _)) = &self.pending_revoke {
            work.abort();
        }
    }
}
