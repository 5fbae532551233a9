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
    /// The partition's high watermark at fetch time (for lag).
    pub high_watermark: i64,
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
    /// Highest offset committed per partition: commits never go backwards.
    committed: Arc<Mutex<HashMap<TopicPartition, i64>>>,
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
        let group = self
            .group_id
            .clone()
            .ok_or(ConsumerError::NoGroup("commit"))?;
        let (generation, member_id) = match &self.snapshot {
            Some(snap) => {
                let s = snap.lock().expect("snapshot lock");
                for (tp, _, _) in offsets {
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
        // Never move an offset backwards.
        let offsets: Vec<(TopicPartition, i64, Option<String>)> = {
            let done = self.committed.lock().expect("committed lock");
            offsets
                .iter()
                .filter(|(tp, o, _)| done.get(tp).is_none_or(|c| o >= c))
                .cloned()
                .collect()
        };
        if offsets.is_empty() {
            return Ok(());
        }
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (tp, o, meta) in &offsets {
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
                        let e = Error::Broker {
                            api: ApiKey::OffsetCommit,
                            code,
                            topic: Some(t.name.0.to_string()),
                            partition: Some(p.partition_index),
                        };
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
                for (tp, o, _) in offsets {
                    done.insert(tp, o);
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
    paused: bool,
    /// When the application paused it (see [`HELD_BACK_FETCH_WAIT`]).
    paused_since: Option<Instant>,
    high_watermark: i64,
    /// Epoch of the last batch handed out (KIP-320), -1 if unknown.
    last_fetched_epoch: i32,
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
            .map(|tp| {
                (
                    tp.clone(),
                    PartState {
                        position: None,
                        paused: false,
                        paused_since: None,
                        high_watermark: -1,
                        last_fetched_epoch: -1,
                    },
                )
            })
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

    /// High watermark minus position, as of the last fetch.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.parts.get(tp)?;
        (p.high_watermark >= 0).then(|| p.high_watermark - p.position.unwrap_or(0))
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
                    self.parts.entry(tp.clone()).or_insert(PartState {
                        position: None,
                        paused: false,
                        paused_since: None,
                        high_watermark: -1,
                        last_fetched_epoch: -1,
                    });
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

    /// Positions for partitions that have none: committed offsets, else reset.
    async fn init_positions(&mut self) -> Result<()> {
        let missing: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| p.position.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // Retriable failures (coordinator loading, leader moving) leave the
        // position unset; the next poll iteration tries again.
        let retriable = |e: &ConsumerError| e.action() != kafka_wire::ErrorAction::Fatal;
        let committed = if self.cfg.group_id.is_some() {
            match self.committed(&missing).await {
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
        for tp in &missing {
            let pos = match committed.get(tp) {
                Some(o) => *o,
                // Appeared after subscribe: from its start, or the records
                // produced before the group assigned it are skipped forever.
                None if self.appeared_after_subscribe.contains(tp) => {
                    match self
                        .client
                        .list_offsets(&tp.topic, OffsetSpec::Earliest)
                        .await
                    {
                        Ok(offsets) => offsets
                            .iter()
                            .find(|(p, _)| *p == tp.partition)
                            .map_or(0, |(_, o)| *o),
                        Err(e) if e.is_retriable() => {
                            tracing::debug!(%tp, error = %e, "earliest offset not available yet; retrying");
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => match self.reset_offset(tp, "no committed offset").await {
                    Ok(o) => o,
                    Err(e) if retriable(&e) => {
                        tracing::debug!(%tp, error = %e, "offset reset failed; retrying");
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            if let Some(p) = self.parts.get_mut(tp) {
                p.position = Some(pos);
            }
            self.appeared_after_subscribe.remove(tp);
        }
        Ok(())
    }

    async fn reset_offset(&self, tp: &TopicPartition, why: &str) -> Result<i64> {
        let spec = match self.cfg.auto_offset_reset {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
            OffsetReset::None => {
                return Err(ConsumerError::NoOffset {
                    tp: tp.clone(),
                    reason: why.to_string(),
                })
            }
        };
        let offsets = self.client.list_offsets(&tp.topic, spec).await?;
        Ok(offsets
            .iter()
            .find(|(p, _)| *p == tp.partition)
            .map(|(_, o)| *o)
            .unwrap_or(0))
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
                .with_isolation_level(match self.cfg.isolation_level {
                    IsolationLevel::ReadUncommitted => 0,
                    IsolationLevel::ReadCommitted => 1,
                })
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
                        state.position = None;
                        let pos = self.reset_offset(&tp, "offset out of range").await?;
                        if let Some(s) = self.parts.get_mut(&tp) {
                            s.position = Some(pos);
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
                    state.position = Some(to);
                    continue;
                }
                state.high_watermark = p.high_watermark;
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
