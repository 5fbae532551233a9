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
//!
//! The fetch path's state and its pure steps live in [`crate::fetch`]; this
//! file does its I/O (sending the fetches, resetting positions) and runs
//! the group's events. Commits: [`Committer`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::messages::FetchResponse;
use kafka_wire::{Client, Error, Lane, OffsetSpec};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use crate::committer::{CommittedOffset, Committer, OffsetToCommit};
use crate::config::{ConsumerConfig, IsolationLevel, OffsetReset};
use crate::error::{ConsumerError, Result};
pub use crate::fetch::PartitionRecords;
use crate::fetch::{FetchAction, Fetcher, PartState, Start};
use crate::group::{GroupEvent, GroupSnapshot, GroupTask};
use crate::membership::TopicSubscription;
use crate::tp::TopicPartition;

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

/// Run a listener callback, abandoning it after `deadline`.
async fn bounded(deadline: Duration, what: &str, mut f: ListenerFuture<'_>) {
    // A panic in the application's callback ends that callback, never the
    // rebalance: the event is still applied and acknowledged to the group
    // task (which waits for it), so the member goes on (DESIGN invariant 65).
    let caught = std::future::poll_fn(|cx| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(cx)))
            .map_or_else(|p| std::task::Poll::Ready(Err(p)), |poll| poll.map(Ok))
    });
    match tokio::time::timeout(deadline, caught).await {
        Ok(Ok(())) => {}
        Ok(Err(payload)) => {
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a panic without a text message)");
            tracing::error!(
                panic = msg,
                "rebalance listener {what} panicked; the rebalance goes on"
            );
        }
        Err(_) => {
            tracing::warn!("rebalance listener {what} exceeded max.poll.interval.ms; abandoned")
        }
    }
}

/// The partitions being revoked (their `on_revoked` running): nothing of
/// them is fetched or returned.
fn revoking(pending: &Option<(tokio::task::JoinHandle<()>, GroupEvent)>) -> &[TopicPartition] {
    match pending {
        Some((_, GroupEvent::Revoked(parts, _))) => parts,
        _ => &[],
    }
}

/// A planned fetch's broker, the positions it asked at, and its outcome.
type FetchOutcome = (
    i32,
    BTreeMap<TopicPartition, i64>,
    std::result::Result<FetchResponse, Error>,
);

/// A Kafka consumer. See the module docs for the data flow.
pub struct Consumer {
    client: Client,
    cfg: Arc<ConsumerConfig>,
    /// Positions, fetch sessions and undrained responses (pure state).
    fetch: Fetcher,
    /// The fetches [`Fetcher::build_requests`] planned, being sent.
    in_flight: JoinSet<FetchOutcome>,
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
    checked_metadata: Option<Arc<kafka_wire::Metadata>>,
    /// The last incarnation handed out (see [`PartitionPosition`]).
    last_incarnation: u64,
    /// Assigned partitions that appeared after subscribe and have no
    /// position yet: uncommitted, they start at the earliest offset.
    appeared_after_subscribe: BTreeSet<TopicPartition>,
    /// Client telemetry (KIP-714, `enable.metrics.push`): fetch and lag
    /// numbers pushed to the broker.
    telemetry: kafka_wire::Telemetry,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.cfg.group_id)
            .field("partitions", &self.fetch.parts.len())
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
        let committer = Committer::new(
            client.clone(),
            cfg.group_id.clone(),
            cfg.group_instance_id.clone(),
        );
        let telemetry = kafka_wire::Telemetry::start(&client, kafka_wire::TelemetryRole::Consumer);
        Consumer {
            client,
            cfg: Arc::new(cfg),
            fetch: Fetcher::default(),
            in_flight: JoinSet::new(),
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
            telemetry,
        }
    }

    /// This consumer's client telemetry (KIP-714): what it pushed so far.
    pub fn telemetry(&self) -> &kafka_wire::Telemetry {
        &self.telemetry
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
    /// yet is picked up within about a second of its creation (metadata is
    /// checked every second while one is missing), and a topic's added
    /// partitions once they appear (checked every `metadata.max.age.ms`);
    /// the group rebalances on a change, as Java's consumer does. Under
    /// KIP-848 the broker notices both and assigns.
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
            Error::Config(format!(
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
        self.committer.join(snapshot.clone());
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
        let parts = parts
            .iter()
            .map(|tp| (tp.clone(), PartState::new(self.committer.incarnation(tp))))
            .collect();
        self.fetch.assign(parts);
    }

    /// The group generation this member is in, if it is a stable member
    /// (under the consumer protocol, KIP-848, its member epoch).
    pub fn generation(&self) -> Option<i32> {
        let snap = self.committer.snapshot()?;
        let s = snap.lock().expect("snapshot lock");
        (s.stable && s.generation >= 0).then_some(s.generation)
    }

    /// The group protocol this member speaks now: `group.protocol`, or
    /// under `auto` the one the broker accepted (classic after a fallback).
    /// `None` before the member's first answer, and without a group.
    pub fn group_protocol(&self) -> Option<crate::GroupProtocol> {
        let snap = self.committer.snapshot()?;
        let s = snap.lock().expect("snapshot lock");
        s.protocol
    }

    /// Partitions currently assigned.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.fetch.parts.keys().cloned().collect()
    }

    /// Stop returning records of `tps` from [`Consumer::poll`] until
    /// [`Consumer::resume`]. Records already buffered are kept for resume.
    /// In its first second paused a partition may still get one response
    /// fetched (at most one undrained response per partition, as always),
    /// so a short pause for backpressure resumes without a fetch round
    /// trip; after that it is not fetched at all.
    pub fn pause(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.fetch.parts.get_mut(tp) {
                if !p.paused {
                    p.paused_since = Some(Instant::now());
                }
                p.paused = true;
            }
        }
    }

    pub fn resume(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.fetch.parts.get_mut(tp) {
                p.paused = false;
                p.paused_since = None;
            }
        }
    }

    /// Next `poll` returns records of `tp` from `offset`.
    pub fn seek(&mut self, tp: &TopicPartition, offset: i64) {
        self.fetch.seek(tp, offset);
    }

    /// The next offset `poll` returns for `tp`.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.fetch.parts.get(tp).and_then(|p| p.position)
    }

    /// The position of every partition this consumer serves: assigned,
    /// initialised, and not being revoked. See [`PartitionPosition`]; the
    /// processing runtime commits from these, so transaction markers and
    /// aborted ranges never leave lag behind.
    pub fn positions(&self) -> Vec<PartitionPosition> {
        self.fetch
            .parts
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

    /// Records this consumer may still read from `tp`: its
    /// [`log_end`](Consumer::log_end) minus the position, as of the last
    /// fetch. `None` before the first fetch answered. Records already
    /// returned by `poll` but not yet committed are not in it: that is the
    /// group's lag (log end minus the committed offset).
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        let end = self.log_end(tp)?;
        let position = self.fetch.parts.get(tp)?.position.unwrap_or(0);
        Some((end - position).max(0))
    }

    /// The readable end of `tp` (an offset): the high watermark, or the
    /// last stable offset under `read_committed`, as of the last fetch
    /// answer that carried `tp` (a paused partition is not fetched, so its
    /// end is as of before the pause). `None` before the first fetch
    /// answered, and for a partition this consumer does not serve.
    pub fn log_end(&self, tp: &TopicPartition) -> Option<i64> {
        let p = self.fetch.parts.get(tp)?;
        let end = match self.cfg.isolation_level {
            IsolationLevel::ReadCommitted => p.last_stable_offset,
            IsolationLevel::ReadUncommitted => p.high_watermark,
        };
        (end >= 0).then_some(end)
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
            .fetch
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
    pub fn group_metadata(&self) -> Option<kafka_wire::GroupMetadata> {
        let snap = self.committer.snapshot()?;
        let s = snap.lock().expect("snapshot lock");
        (s.stable && s.generation >= 0).then(|| kafka_wire::GroupMetadata {
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
                    self.fetch
                        .parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(incarnation));
                }
            }
            GroupEvent::Revoked(parts, _) | GroupEvent::Lost(parts, _) => {
                for tp in parts {
                    self.appeared_after_subscribe.remove(tp);
                }
                self.fetch.remove(parts);
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
                self.fetch.discard_buffered(parts);
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
        revoking(&self.pending_revoke).contains(tp)
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
            .fetch
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
            if let Some(p) = self.fetch.parts.get_mut(&tp) {
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
        for tp in self.fetch.parts.keys() {
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
                .fetch
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
        self.fetch.restart(tp, start, position, incarnation);
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
        if self
            .fetch
            .parts
            .get(tp)
            .is_none_or(|p| p.position != Some(pos))
        {
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

    /// Send a fetch to every broker that has fetchable partitions and none
    /// in flight (planned by [`Fetcher::build_requests`]).
    async fn send_fetches(&mut self) {
        let md = self.client.metadata();
        let plan = self.fetch.build_requests(
            &md,
            revoking(&self.pending_revoke),
            &self.cfg,
            Instant::now(),
        );
        // Spawned before any await: a cancelled poll must not leave a
        // broker marked in flight with no fetch behind it.
        for f in plan.fetches {
            let client = self.client.clone();
            let metrics = self.telemetry.metrics().clone();
            self.in_flight.spawn(async move {
                let started = metrics.is_recording().then(Instant::now);
                let r = client
                    .send_to(f.broker, Lane::Fetch, &f.request, f.wait)
                    .await;
                if let Some(started) = started {
                    metrics.fetch_completed(started.elapsed());
                }
                (f.broker, f.requested, r)
            });
        }
        if !plan.unknown_leaders.is_empty() {
            let _ = self
                .client
                .refresh_metadata(Some(&plan.unknown_leaders))
                .await;
        }
    }

    /// Fold one fetch response into the buffer ([`Fetcher::apply_response`]),
    /// then do what it asks for.
    async fn complete_fetch(&mut self, outcome: FetchOutcome) -> Result<()> {
        let (broker, requested, result) = outcome;
        let actions = self.fetch.apply_response(
            broker,
            &requested,
            result,
            revoking(&self.pending_revoke),
            &self.cfg,
            Instant::now(),
        );
        for action in actions {
            match action {
                FetchAction::OutOfRange { tp, offset } => {
                    match self.out_of_range(&tp, offset).await {
                        Ok(()) => {}
                        Err(e) if e.action() != kafka_wire::ErrorAction::Fatal => {
                            tracing::debug!(%tp, error = %e, "offset reset failed; retrying");
                        }
                        Err(e) => return Err(e),
                    }
                }
                FetchAction::Truncated { tp, to } => {
                    self.restart_partition(&tp, Start::Committed, Some(to));
                }
                FetchAction::NewLeaders(hints) => {
                    let unusable = self.client.apply_leader_hints(&hints).topics_to_refresh();
                    if !unusable.is_empty() {
                        let _ = self.client.refresh_metadata(Some(&unusable)).await;
                    }
                }
                FetchAction::RefreshMetadata(topics) => {
                    let _ = self.client.refresh_metadata(Some(&topics)).await;
                }
                FetchAction::Fail(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Take up to `max.poll.records` buffered records ([`Fetcher::drain`]).
    /// A corrupt batch is returned by the next poll, after the records
    /// taken before it.
    fn drain(&mut self) -> Vec<PartitionRecords> {
        let (out, error) = self.fetch.drain(self.cfg.max_poll_records);
        let metrics = self.telemetry.metrics();
        // Per poll, so only while telemetry may push what it gathers.
        if metrics.is_recording() {
            let records = out.iter().flat_map(|p| &p.records);
            let size = |r: &kafka_wire::Record| {
                r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())
            };
            metrics.records_consumed(
                records.clone().count() as u64,
                records.map(size).sum::<usize>() as u64,
            );
            metrics
                .set_records_lag_max(self.fetch.parts.keys().filter_map(|tp| self.lag(tp)).max());
        }
        if let Some(e) = error {
            self.deferred_error.get_or_insert(e.into());
        }
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
            let unthrottled = self.fetch.throttled_until(Instant::now());
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
                _ = async {
                    match unthrottled { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await }
                } => {} // a throttled broker may be fetched from again
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
        // The terminating push (KIP-714), with what is left of the timeout.
        self.telemetry
            .close(end.saturating_duration_since(Instant::now()))
            .await;
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
