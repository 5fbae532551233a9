//! Generation-fenced commits: [`Committer`] (cheap to clone, usable from
//! any task and from rebalance listeners), the offsets it sends
//! ([`OffsetToCommit`]) and reads back ([`CommittedOffset`]).
//!
//! Three fences, checked locally before anything is sent:
//! - ownership: a partition this member does not own in the current,
//!   stable generation (or is not revoking right now) is refused
//!   ([`GroupSnapshot::may_commit`]);
//! - never backwards: a commit lower than one this consumer already made
//!   for the partition is skipped;
//! - incarnations: an offset computed before the consumer's position of
//!   the partition was reset (out of range, truncation, recreated topic)
//!   is dropped (DESIGN.md, invariant 40).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafka_wire::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_wire::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_wire::messages::{
    ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, TopicName,
};
use kafka_wire::CoordinatorKind;
use kafka_wire::{Backoff, Client, DecodeError, Error, KafkaCode, Lane, StrBytes, Throttle};

use crate::error::{ConsumerError, Result};
use crate::group::GroupSnapshot;
use crate::tp::TopicPartition;

/// Commit retries while the coordinator moves or loads: 50 ms doubling to
/// 300 ms, 29 at most (about 8 s), each re-finding the coordinator.
const COMMIT_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(50), Duration::from_millis(300))
        .with_max_retries(29);

/// OffsetFetch retries while a transaction's offsets are not stable yet
/// (KIP-447): 20 ms doubling to 500 ms, 49 at most (about 23 s).
const UNSTABLE_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(20), Duration::from_millis(500))
        .with_max_retries(49);

/// One partition's commit for [`Committer::commit_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    pub tp: TopicPartition,
    /// The next offset to consume.
    pub offset: i64,
    /// Stored next to the offset (up to `offset.metadata.max.bytes`).
    pub metadata: Option<String>,
    /// The [`PartitionPosition::incarnation`](crate::PartitionPosition::incarnation) the offset was computed in;
    /// the commit of this partition is dropped if the consumer's position
    /// has been reset since. `None`: no check.
    pub incarnation: Option<u64>,
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
    /// A committer for `group_id` (none: manual assignment without a
    /// group, where every commit is refused), outside any group until
    /// [`Committer::join`].
    pub(crate) fn new(
        client: Client,
        group_id: Option<String>,
        instance_id: Option<String>,
    ) -> Self {
        Committer {
            client,
            group_id,
            instance_id,
            snapshot: None,
            committed: Arc::default(),
        }
    }

    /// Fence commits by this group membership's snapshot from now on.
    pub(crate) fn join(&mut self, snapshot: Arc<Mutex<GroupSnapshot>>) {
        self.snapshot = Some(snapshot);
    }

    /// The membership snapshot commits are fenced by (`None` outside a group).
    pub(crate) fn snapshot(&self) -> Option<&Arc<Mutex<GroupSnapshot>>> {
        self.snapshot.as_ref()
    }

    /// Commit `offsets` (the *next* offset to consume, per partition).
    ///
    /// A commit lower than one this consumer already made for a partition is
    /// skipped: a late commit (from a slow task, or a retry that lost a race)
    /// never moves an offset backwards. To rewind on purpose, commit from a
    /// new consumer or reset the group's offsets with admin tools.
    ///
    /// # Errors
    /// [`ConsumerError::NotOwned`] (refused locally) for a partition this
    /// member does not own in the current generation, and for one that
    /// moved to another member while the commit was in flight (KIP-848:
    /// the broker answered STALE_MEMBER_EPOCH and the partition is no
    /// longer ours; the call's other partitions are still committed, those
    /// the member kept retried under its current epoch); broker codes such
    /// as ILLEGAL_GENERATION and REBALANCE_IN_PROGRESS as
    /// [`ConsumerError::Wire`].
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

    /// The group coordinator's `offset.metadata.max.bytes` (characters of
    /// commit metadata it keeps per partition; Kafka's default is 4096),
    /// read with DescribeConfigs of the coordinator broker. `None` when the
    /// cluster does not tell (no DESCRIBE_CONFIGS permission, an older or
    /// different broker): the caller then has to guess below what failed.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn metadata_limit(&self) -> Option<usize> {
        let group = self.group_id.as_deref()?;
        let node = self
            .client
            .find_coordinator(CoordinatorKind::Group, group)
            .await
            .ok()?;
        let entries = self
            .client
            .describe_configs(&kafka_wire::ConfigResource::Broker(node))
            .await
            .ok()?;
        entries
            .iter()
            .find(|e| e.name == "offset.metadata.max.bytes")
            .and_then(|e| e.value.as_deref()?.parse().ok())
    }

    /// The current position incarnation of `tp` (0 until its first reset).
    pub fn incarnation(&self, tp: &TopicPartition) -> u64 {
        let done = self.committed.lock().expect("committed lock");
        done.get(tp).map_or(0, |g| g.incarnation)
    }

    /// The consumer reset its position of `tp` (see
    /// [`PartitionPosition::incarnation`](crate::PartitionPosition::incarnation)): commits of older incarnations
    /// are dropped from now on, and the new log may commit lower offsets.
    pub(crate) fn new_incarnation(&self, tp: &TopicPartition, incarnation: u64) {
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
        let mut req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member_id))
            .with_group_instance_id(
                self.instance_id
                    .as_ref()
                    .filter(|_| generation >= 0)
                    .map(|i| StrBytes::from_string(i.clone())),
            );
        // What is still to be committed: partitions leave it as the broker
        // accepts them (each partition has its own answer: under KIP-1251 a
        // commit racing an epoch bump is accepted for the partitions the
        // member kept and refused for the ones that moved).
        let mut pending = offsets;
        // A partition that moved to another member while its commit was in
        // flight: never retried, reported once the rest is done.
        let mut moved: Option<ConsumerError> = None;
        // NOT_COORDINATOR / loading: re-find and retry, with backoff, for a while.
        let mut delays = COMMIT_BACKOFF.delays();
        loop {
            req.topics = commit_topics(&pending);
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
                Err(e) => match delays.next() {
                    Some(delay) => {
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    None => return Err(e.into()),
                },
            };
            let CommitAnswer {
                accepted,
                mut again,
                stale,
                last_err,
                failed,
            } = sort_commit_answer(pending, &resp, self.snapshot.is_some(), node);
            self.record_committed(accepted);
            if let Some(e) = failed {
                return Err(e.into());
            }
            if stale {
                let snap = self.snapshot.as_ref().expect("checked above");
                let s = snap.lock().expect("snapshot lock");
                again.retain(|(tp, ..)| {
                    let ours = s.may_commit(tp);
                    if !ours && moved.is_none() {
                        moved = Some(ConsumerError::NotOwned {
                            tp: tp.clone(),
                            generation: s.generation,
                        });
                    }
                    ours
                });
                req.generation_id_or_member_epoch = s.generation;
                req.member_id = StrBytes::from_string(s.member_id.clone());
            }
            if again.is_empty() {
                return moved.map_or(Ok(()), Err);
            }
            pending = again;
            match delays.next_after(Throttle::from_ms(resp.throttle_time_ms)) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    return Err(last_err
                        .map(ConsumerError::from)
                        .unwrap_or(ConsumerError::Closed))
                }
            }
        }
    }

    /// Remember what the broker accepted: the highest offset committed per
    /// partition, unless its position was reset while the commit was in
    /// flight (then the reset's new guard stays).
    fn record_committed(&self, accepted: Vec<(TopicPartition, i64, Option<String>, u64)>) {
        let mut done = self.committed.lock().expect("committed lock");
        for (tp, o, _, incarnation) in accepted {
            let guard = done.entry(tp).or_default();
            if guard.incarnation == incarnation {
                guard.highest = guard.highest.max(o);
            }
        }
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
        let mut req = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(Some(
                    by_topic
                        .iter()
                        .map(|(t, ps)| {
                            OffsetFetchRequestTopics::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partition_indexes(ps.clone())
                        })
                        .collect(),
                ))]);
        // Before v8 (Redpanda's ceiling is v7) one group a request, at the
        // top level; `require_stable` from v7 (KIP-447).
        let single_group = |version: i16| {
            OffsetFetchRequest::default()
                .with_require_stable(version >= 7)
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(Some(
                    by_topic
                        .iter()
                        .map(|(t, ps)| {
                            OffsetFetchRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partition_indexes(ps.clone())
                        })
                        .collect(),
                ))
        };
        let mut delays = UNSTABLE_BACKOFF.delays();
        loop {
            let node = self
                .client
                .find_coordinator(CoordinatorKind::Group, &group)
                .await?;
            // KIP-848: a member reads under its member epoch (v9), so the
            // coordinator can tell it its epoch is stale.
            let version = self
                .client
                .connection(node, Lane::Control)
                .await?
                .version(ApiKey::OffsetFetch)?;
            if let (Some(snap), true) = (&self.snapshot, version >= 9) {
                let s = snap.lock().expect("snapshot lock");
                let member = s.protocol == Some(crate::GroupProtocol::Consumer) && s.generation > 0;
                req.groups[0].member_id =
                    member.then(|| StrBytes::from_string(s.member_id.clone()));
                req.groups[0].member_epoch = if member { s.generation } else { -1 };
            }
            let v1_to_v7;
            let to_send = if version >= 8 {
                &req
            } else {
                v1_to_v7 = single_group(version);
                &v1_to_v7
            };
            let resp = self
                .client
                .send_to(node, Lane::Control, to_send, Duration::ZERO)
                .await?;
            // (topic, partition, offset, metadata, error code) and the
            // group's error code, from either layout.
            let (partitions, group_code): (Vec<_>, i16) = if version >= 8 {
                let Some(g) = resp.groups.first() else {
                    return Ok(BTreeMap::new());
                };
                let ps = g
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            let m = p.metadata.as_ref();
                            let o = p.committed_offset;
                            (&t.name.0, p.partition_index, o, m, p.error_code)
                        })
                    })
                    .collect();
                (ps, g.error_code)
            } else {
                let ps = resp
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partitions.iter().map(move |p| {
                            let m = p.metadata.as_ref();
                            let o = p.committed_offset;
                            (&t.name.0, p.partition_index, o, m, p.error_code)
                        })
                    })
                    .collect();
                (ps, resp.error_code)
            };
            let mut out = BTreeMap::new();
            let mut unstable = false;
            for (topic, partition, offset, metadata, code) in partitions {
                match KafkaCode::try_from_code(code) {
                    None => {
                        if offset >= 0 {
                            out.insert(
                                TopicPartition::new(topic.to_string(), partition),
                                CommittedOffset {
                                    offset,
                                    metadata: metadata.map(|m| m.to_string()).unwrap_or_default(),
                                },
                            );
                        }
                    }
                    // Retried, never read as "no committed offset":
                    // a consumer elsewhere lost data exactly that way.
                    Some(KafkaCode::UnstableOffsetCommit | KafkaCode::StaleMemberEpoch) => {
                        unstable = true
                    }
                    Some(code) => {
                        return Err(
                            Error::broker_for(ApiKey::OffsetFetch, code, topic, partition).into(),
                        )
                    }
                }
            }
            let group_error = KafkaCode::try_from_code(group_code);
            if !unstable && group_error.is_none() {
                return Ok(out);
            }
            if let Some(code) = group_error.filter(|c| *c != KafkaCode::StaleMemberEpoch) {
                if !code.is_retriable() {
                    return Err(Error::broker_for(ApiKey::OffsetFetch, code, &group, -1).into());
                }
            }
            // A transaction is still committing offsets: wait for it (KIP-447).
            match delays.next_after(Throttle::from_ms(resp.throttle_time_ms)) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => break,
            }
        }
        Err(ConsumerError::Wire(Error::Metadata(format!(
            "offsets of group {group} stayed unstable"
        ))))
    }
}

/// The request's topics for `offsets`, grouped by topic.
fn commit_topics(
    offsets: &[(TopicPartition, i64, Option<String>, u64)],
) -> Vec<OffsetCommitRequestTopic> {
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, o, meta, _) in offsets {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(meta.clone().map(StrBytes::from_string)),
        );
    }
    topics
        .into_iter()
        .map(|(t, ps)| {
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(ps)
        })
        .collect()
}

/// One partition's offset on its way: partition, offset, metadata, and the
/// incarnation it was computed in.
type PendingCommit = (TopicPartition, i64, Option<String>, u64);

/// One OffsetCommit answer, sorted partition by partition.
#[derive(Debug, Default)]
struct CommitAnswer {
    /// Committed.
    accepted: Vec<PendingCommit>,
    /// To send again (coordinator moving or loading, a stale member epoch,
    /// or no answer at all for the partition).
    again: Vec<PendingCommit>,
    /// Some partition was answered STALE_MEMBER_EPOCH (KIP-848).
    stale: bool,
    /// Why the last of `again` is there: the commit's error if the retries
    /// run out.
    last_err: Option<Error>,
    /// The first error no retry fixes: the commit fails with it.
    failed: Option<Error>,
}

/// Sort `pending` by the coordinator's (`node`) answer to their
/// OffsetCommit. `epochs` says whether STALE_MEMBER_EPOCH is retried (a
/// group member, whose current epoch the retry takes).
///
/// A partition the answer does not mention is not committed: Kafka answers
/// every partition of the request, so a missing one is a broken answer,
/// and taking it as a success would lose the commit silently. It is sent
/// again, and if the retries run out the commit fails with a retriable
/// error naming it.
fn sort_commit_answer(
    pending: Vec<PendingCommit>,
    resp: &OffsetCommitResponse,
    epochs: bool,
    node: i32,
) -> CommitAnswer {
    let mut out = CommitAnswer::default();
    let mut answers: HashMap<(&str, i32), i16> = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            answers.insert((t.name.0.as_str(), p.partition_index), p.error_code);
        }
    }
    for entry in pending {
        let Some(&code) = answers.get(&(entry.0.topic.as_str(), entry.0.partition)) else {
            out.last_err = Some(Error::Decode {
                context: format!("OffsetCommit response from coordinator {node}"),
                source: DecodeError::Malformed {
                    what: "OffsetCommit response",
                    reason: format!(
                        "no answer for {}: its offset {} is not committed",
                        entry.0, entry.1
                    ),
                },
            });
            out.again.push(entry);
            continue;
        };
        let Some(code) = KafkaCode::try_from_code(code) else {
            out.accepted.push(entry);
            continue;
        };
        let e = Error::broker_for(
            ApiKey::OffsetCommit,
            code,
            &entry.0.topic,
            entry.0.partition,
        );
        if matches!(
            code,
            KafkaCode::NotCoordinator
                | KafkaCode::CoordinatorNotAvailable
                | KafkaCode::CoordinatorLoadInProgress
        ) {
            out.last_err = Some(e);
            out.again.push(entry);
        } else if code == KafkaCode::StaleMemberEpoch && epochs {
            // KIP-848: the member epoch moved on since the commit was
            // built. Retried with the current one if the partition is
            // still ours.
            out.stale = true;
            out.last_err = Some(e);
            out.again.push(entry);
        } else if out.failed.is_none() {
            out.failed = Some(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_wire::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };

    fn entry(topic: &str, partition: i32, offset: i64) -> PendingCommit {
        (TopicPartition::new(topic, partition), offset, None, 0)
    }

    fn answer(topic: &str, partitions: &[(i32, i16)]) -> OffsetCommitResponse {
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(p, code)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p)
                            .with_error_code(code)
                    })
                    .collect(),
            )])
    }

    /// A partition the answer leaves out was not committed: it is sent
    /// again, and the error kept for it is retriable and names it.
    #[test]
    fn a_partition_missing_from_the_answer_is_not_a_success() {
        let pending = vec![entry("orders", 0, 10), entry("orders", 1, 20)];
        let out = sort_commit_answer(pending, &answer("orders", &[(0, 0)]), false, 3);
        assert_eq!(out.accepted, vec![entry("orders", 0, 10)]);
        assert_eq!(out.again, vec![entry("orders", 1, 20)]);
        assert!(out.failed.is_none());
        let err = out.last_err.expect("an error for the missing partition");
        assert!(err.is_retriable(), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("orders-1"), "{text}");
        assert!(text.contains("not committed"), "{text}");
    }

    #[test]
    fn an_empty_answer_commits_nothing() {
        let pending = vec![entry("a", 0, 1), entry("b", 2, 3)];
        let out = sort_commit_answer(pending.clone(), &OffsetCommitResponse::default(), true, 1);
        assert!(out.accepted.is_empty());
        assert_eq!(out.again, pending);
    }

    #[test]
    fn coordinator_codes_retry_and_other_codes_fail() {
        let pending = vec![entry("t", 0, 1), entry("t", 1, 1), entry("t", 2, 1)];
        let resp = answer(
            "t",
            &[
                (0, 0),
                (1, KafkaCode::NotCoordinator.code()),
                (2, KafkaCode::OffsetMetadataTooLarge.code()),
            ],
        );
        let out = sort_commit_answer(pending, &resp, false, 1);
        assert_eq!(out.accepted, vec![entry("t", 0, 1)]);
        assert_eq!(out.again, vec![entry("t", 1, 1)]);
        assert_eq!(
            out.failed.and_then(|e| e.code()),
            Some(KafkaCode::OffsetMetadataTooLarge)
        );
    }
}
