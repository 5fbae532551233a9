//! Where a partition's replicas live and which of them leads: partition
//! reassignment (KIP-455: AlterPartitionReassignments,
//! ListPartitionReassignments) and leader elections (KIP-460:
//! ElectLeaders, preferred and unclean).
//!
//! ```text
//!  alter_partition_reassignments(tp → [2,3,1])        elect_leaders(Preferred, tp)
//!        │ (the controller accepts the target)               │
//!        ▼                                                   ▼
//!  replicas = old ∪ target, adding/removing listed     leader = first replica,
//!        │ (new replicas copy the log, join the ISR)   if it is in the ISR
//!        ▼
//!  replicas = target; the leader moves only if the old one left the set
//! ```
//!
//! A reassignment that only reorders the replicas changes no data and ends
//! at once, but the leader stays where it is: the first replica is the
//! *preferred* leader, and a preferred election (or the broker's
//! `auto.leader.rebalance.enable`, every `leader.imbalance.check.interval.seconds`)
//! hands it leadership.
//!
//! Each request goes to the broker the metadata names as the controller:
//! under KRaft any broker, which forwards it to the active controller;
//! under ZooKeeper the controller itself, whose move is answered with
//! NOT_CONTROLLER and retried after a metadata refresh. Each function
//! builds its request and reads its response in pure functions
//! (`build_*`, `read_*`), tested below without a broker.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};

use super::PROPAGATION_TIMEOUT;
use crate::client::{Client, Lane};
use crate::error::{Error, KafkaCode, Result};
use crate::throttle::ThrottleTime;
use crate::topic_partition::TopicPartition;

/// A partition's new replica set, for [`Client::alter_partition_reassignments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReassignment {
    pub tp: TopicPartition,
    /// The broker ids to hold the partition, the first one its preferred
    /// leader; `None` cancels the reassignment under way (the replicas go
    /// back to those before it).
    pub replicas: Option<Vec<i32>>,
}

impl PartitionReassignment {
    /// Move `tp` to `replicas` (broker ids; the first is the preferred leader).
    pub fn to(tp: TopicPartition, replicas: impl Into<Vec<i32>>) -> Self {
        Self {
            tp,
            replicas: Some(replicas.into()),
        }
    }

    /// Cancel `tp`'s reassignment under way.
    pub fn cancel(tp: TopicPartition) -> Self {
        Self { tp, replicas: None }
    }
}

/// A reassignment under way, as [`Client::list_partition_reassignments`]
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OngoingReassignment {
    /// The replica set now: the target and the replicas being removed
    /// together, while the added ones copy the log.
    pub replicas: Vec<i32>,
    /// Replicas joining (copying the log, not yet in the ISR).
    pub adding: Vec<i32>,
    /// Replicas that leave once every added one is in the ISR.
    pub removing: Vec<i32>,
}

/// Which leader [`Client::elect_leaders`] elects (KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// The preferred replica (the first of the partition's replicas), if
    /// it is alive and in the ISR.
    Preferred,
    /// For a partition without a leader and no live replica in the ISR:
    /// any live replica, even one missing records (those records are then
    /// lost). Needs ElectLeaders v1 (Kafka 2.4+).
    Unclean,
}

impl ElectionType {
    fn wire(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }
}

/// One partition's outcome of [`Client::elect_leaders`].
#[derive(Debug, Clone)]
pub enum LeaderElection {
    /// A new leader was elected.
    Elected,
    /// Nothing to do (ELECTION_NOT_NEEDED): the preferred replica already
    /// leads (preferred), or the partition has a leader (unclean).
    NotNeeded,
    /// The controller refused it for this partition, with the code and
    /// its message: PREFERRED_LEADER_NOT_AVAILABLE (the preferred replica
    /// is down or out of the ISR: wait until it caught up),
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (no live replica to elect),
    /// UNKNOWN_TOPIC_OR_PARTITION, …
    Failed(Error),
}

impl LeaderElection {
    /// Elected, or nothing was to be done.
    pub fn is_ok(&self) -> bool {
        !matches!(self, LeaderElection::Failed(_))
    }
}

/// How often a request is sent when the controller moved (NOT_CONTROLLER)
/// or no connection could be made before it was written.
const CONTROLLER_ATTEMPTS: usize = 3;

impl Client {
    /// Move partitions to new replica sets, or cancel their reassignment
    /// under way (AlterPartitionReassignments, KIP-455; the replica set
    /// may grow or shrink).
    ///
    /// Returns once the controller accepted each target, not once the
    /// data moved: new replicas copy the log, join the ISR, then the old
    /// ones are dropped. Poll [`Client::list_partition_reassignments`]
    /// until the partition is gone from it. The leader changes only if it
    /// left the replica set; the first replica leads after a preferred
    /// [`Client::elect_leaders`]. Setting the same target again is
    /// harmless; cancelling twice is not (the second answers
    /// NO_REASSIGNMENT_IN_PROGRESS).
    ///
    /// Each partition's answer: `Ok(())`, or an [`Error::Broker`] naming
    /// it with the controller's code and message: INVALID_REPLICA_ASSIGNMENT
    /// (an unknown broker id, a duplicate, an empty set),
    /// NO_REASSIGNMENT_IN_PROGRESS (a cancel with none under way),
    /// UNKNOWN_TOPIC_OR_PARTITION, REQUEST_TIMED_OUT.
    ///
    /// # Errors
    /// For the whole request: [`Error::Encode`] when a partition appears
    /// twice; an [`Error::Broker`] without a partition for a request-wide
    /// code (CLUSTER_AUTHORIZATION_FAILED: the principal needs ALTER on the
    /// cluster; NOT_CONTROLLER after three tries); connection errors.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the controller may accept the targets
    /// even if the future is dropped.
    pub async fn alter_partition_reassignments(
        &self,
        moves: &[PartitionReassignment],
    ) -> Result<BTreeMap<TopicPartition, Result<()>>> {
        if moves.is_empty() {
            return Ok(BTreeMap::new());
        }
        let req = build_alter_reassignments(moves, PROPAGATION_TIMEOUT.as_millis() as i32)?;
        let resp = self.send_to_controller(&req, |r| r.error_code).await?;
        let asked: Vec<TopicPartition> = moves.iter().map(|m| m.tp.clone()).collect();
        read_alter_reassignments(&resp, &asked)
    }

    /// The reassignments under way (ListPartitionReassignments, KIP-455):
    /// of `tps`, or of the whole cluster with `None`. A partition not
    /// being reassigned is absent from the answer.
    ///
    /// # Errors
    /// A request-wide [`Error::Broker`] (CLUSTER_AUTHORIZATION_FAILED: the
    /// principal needs DESCRIBE on the cluster); connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn list_partition_reassignments(
        &self,
        tps: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, OngoingReassignment>> {
        let req = build_list_reassignments(tps, PROPAGATION_TIMEOUT.as_millis() as i32);
        let resp = self.send_to_controller(&req, |r| r.error_code).await?;
        read_list_reassignments(&resp)
    }

    /// Elect leaders (ElectLeaders, KIP-460): the preferred replica, or,
    /// for a partition with no leader, any live replica (unclean: records
    /// only the old ISR had are lost). `tps`: these partitions, or `None`
    /// for every partition of the cluster (then the answer lists only the
    /// partitions an election was tried for).
    ///
    /// Returns once the controller decided; brokers' metadata shows the
    /// new leader a moment later.
    ///
    /// # Errors
    /// A request-wide [`Error::Broker`] (CLUSTER_AUTHORIZATION_FAILED: the
    /// principal needs ALTER on the cluster); [`Error::UnsupportedVersion`]
    /// from a broker older than Kafka 2.4; connection errors. A partition's
    /// refusal is its [`LeaderElection::Failed`].
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the leaders may change even if the
    /// future is dropped.
    pub async fn elect_leaders(
        &self,
        election: ElectionType,
        tps: Option<&[TopicPartition]>,
    ) -> Result<BTreeMap<TopicPartition, LeaderElection>> {
        let req = build_elect_leaders(election, tps, PROPAGATION_TIMEOUT.as_millis() as i32);
        let resp = self.send_to_controller(&req, |r| r.error_code).await?;
        read_elect_leaders(&resp, tps.unwrap_or_default())
    }

    /// Send `req` to the controller the metadata names (see the module
    /// docs), refreshing the metadata and sending again when the answer's
    /// request-wide code (`code`) is NOT_CONTROLLER or no connection was
    /// made before the request was written, [`CONTROLLER_ATTEMPTS`] times
    /// at most. Any other request-wide code is the error.
    async fn send_to_controller<R>(
        &self,
        req: &R,
        code: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response>
    where
        R: Request + 'static,
        R::Response: ThrottleTime,
    {
        let api = crate::connection::api_key::<R>();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= CONTROLLER_ATTEMPTS;
            let md = self.refresh_metadata(Some(&[])).await?;
            let conn = if md.brokers.contains_key(&md.controller_id) {
                self.connection(md.controller_id, Lane::Control).await
            } else {
                self.any_connection(Lane::Control).await
            };
            let sent = match conn {
                Ok(conn) => {
                    conn.send(req, self.config().request_timeout, PROPAGATION_TIMEOUT)
                        .await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(resp) => match KafkaCode::try_from_code(code(&resp)) {
                    None => return Ok(resp),
                    Some(KafkaCode::NotController) if !last => continue,
                    Some(c) => return Err(Error::broker(api, c)),
                },
                Err(e @ Error::Connection { .. }) if !e.maybe_written() && !last => {
                    tracing::debug!(?api, error = %e, "admin: the controller's broker is unreachable; asking again");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The AlterPartitionReassignments request for `moves`, topics in the
/// order first named.
///
/// # Errors
/// [`Error::Encode`] when a partition appears twice.
fn build_alter_reassignments(
    moves: &[PartitionReassignment],
    timeout_ms: i32,
) -> Result<AlterPartitionReassignmentsRequest> {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (i, m) in moves.iter().enumerate() {
        if moves[..i].iter().any(|earlier| earlier.tp == m.tp) {
            return Err(Error::Encode {
                api: ApiKey::AlterPartitionReassignments,
                reason: format!("{} is named twice: give each partition one target", m.tp),
            });
        }
        let partition = ReassignablePartition::default()
            .with_partition_index(m.tp.partition)
            .with_replicas(
                m.replicas
                    .as_ref()
                    .map(|r| r.iter().copied().map(BrokerId).collect()),
            );
        match topics.iter_mut().find(|t| t.name.0.as_str() == m.tp.topic) {
            Some(t) => t.partitions.push(partition),
            None => topics.push(
                ReassignableTopic::default()
                    .with_name(topic_name(&m.tp.topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    Ok(AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        // v1 (KIP-860): the default, a replica set may grow or shrink.
        .with_allow_replication_factor_change(true)
        .with_topics(topics))
}

/// Each partition of `asked` with the controller's answer for it (one it
/// left out is an error of its own). The request-wide code was checked by
/// the sender; it is checked again here so the function stands alone.
fn read_alter_reassignments(
    resp: &AlterPartitionReassignmentsResponse,
    asked: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, Result<()>>> {
    const API: ApiKey = ApiKey::AlterPartitionReassignments;
    super::request_wide(API, resp.error_code, resp.error_message.as_ref())?;
    let mut out: BTreeMap<TopicPartition, Result<()>> = BTreeMap::new();
    for t in &resp.responses {
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
            let answer = match KafkaCode::try_from_code(p.error_code) {
                None => Ok(()),
                Some(code) => Err(partition_error(API, code, &tp, p.error_message.as_ref())),
            };
            out.insert(tp, answer);
        }
    }
    for tp in asked {
        out.entry(tp.clone())
            .or_insert_with(|| Err(unanswered(API, tp)));
    }
    Ok(out)
}

/// ListPartitionReassignments for `tps` (`None`: all).
fn build_list_reassignments(
    tps: Option<&[TopicPartition]>,
    timeout_ms: i32,
) -> ListPartitionReassignmentsRequest {
    let topics = tps.map(|tps| {
        by_topic(tps)
            .into_iter()
            .map(|(topic, partitions)| {
                ListPartitionReassignmentsTopics::default()
                    .with_name(topic_name(&topic))
                    .with_partition_indexes(partitions)
            })
            .collect()
    });
    ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(timeout_ms)
        .with_topics(topics)
}

fn read_list_reassignments(
    resp: &ListPartitionReassignmentsResponse,
) -> Result<BTreeMap<TopicPartition, OngoingReassignment>> {
    super::request_wide(
        ApiKey::ListPartitionReassignments,
        resp.error_code,
        resp.error_message.as_ref(),
    )?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    Ok(resp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    TopicPartition::new(t.name.0.as_str(), p.partition_index),
                    OngoingReassignment {
                        replicas: ids(&p.replicas),
                        adding: ids(&p.adding_replicas),
                        removing: ids(&p.removing_replicas),
                    },
                )
            })
        })
        .collect())
}

/// ElectLeaders for `tps` (`None`: every partition).
fn build_elect_leaders(
    election: ElectionType,
    tps: Option<&[TopicPartition]>,
    timeout_ms: i32,
) -> ElectLeadersRequest {
    let topics = tps.map(|tps| {
        by_topic(tps)
            .into_iter()
            .map(|(topic, partitions)| {
                TopicPartitions::default()
                    .with_topic(topic_name(&topic))
                    .with_partitions(partitions)
            })
            .collect()
    });
    ElectLeadersRequest::default()
        .with_election_type(election.wire())
        .with_topic_partitions(topics)
        .with_timeout_ms(timeout_ms)
}

/// Each partition's outcome; every partition of `asked` has one (one the
/// controller left out is [`LeaderElection::Failed`]).
fn read_elect_leaders(
    resp: &ElectLeadersResponse,
    asked: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, LeaderElection>> {
    const API: ApiKey = ApiKey::ElectLeaders;
    super::request_wide(API, resp.error_code, None)?;
    let mut out = BTreeMap::new();
    for t in &resp.replica_election_results {
        for p in &t.partition_result {
            let tp = TopicPartition::new(t.topic.0.as_str(), p.partition_id);
            let outcome = match KafkaCode::try_from_code(p.error_code) {
                None => LeaderElection::Elected,
                Some(KafkaCode::ElectionNotNeeded) => LeaderElection::NotNeeded,
                Some(code) => LeaderElection::Failed(partition_error(
                    API,
                    code,
                    &tp,
                    p.error_message.as_ref(),
                )),
            };
            out.insert(tp, outcome);
        }
    }
    for tp in asked {
        out.entry(tp.clone())
            .or_insert_with(|| LeaderElection::Failed(unanswered(API, tp)));
    }
    Ok(out)
}

fn partition_error(
    api: ApiKey,
    code: KafkaCode,
    tp: &TopicPartition,
    message: Option<&StrBytes>,
) -> Error {
    Error::broker_for(api, code, &tp.topic, tp.partition).with_message(message.map(|m| m.as_str()))
}

/// A partition asked about that the answer left out.
fn unanswered(api: ApiKey, tp: &TopicPartition) -> Error {
    Error::Metadata(format!(
        "{api:?}: the controller's answer has no result for {tp}; ask again"
    ))
}

/// Partitions grouped by topic, each topic's in the order given, topics in
/// name order.
fn by_topic(tps: &[TopicPartition]) -> BTreeMap<String, Vec<i32>> {
    let mut out: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for tp in tps {
        let ps = out.entry(tp.topic.clone()).or_default();
        if !ps.contains(&tp.partition) {
            ps.push(tp.partition);
        }
    }
    out
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorAction;
    use kafka_protocol::messages::alter_partition_reassignments_response::{
        ReassignablePartitionResponse, ReassignableTopicResponse,
    };
    use kafka_protocol::messages::elect_leaders_response::{
        PartitionResult, ReplicaElectionResult,
    };
    use kafka_protocol::messages::list_partition_reassignments_response::{
        OngoingPartitionReassignment, OngoingTopicReassignment,
    };
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    fn msg(s: &'static str) -> Option<StrBytes> {
        Some(StrBytes::from_static_str(s))
    }

    #[test]
    fn a_reassignment_request_groups_partitions_by_topic_and_a_cancel_sends_null_replicas() {
        let req = build_alter_reassignments(
            &[
                PartitionReassignment::to(tp("a", 0), [2, 3, 1]),
                PartitionReassignment::to(tp("b", 4), vec![1]),
                PartitionReassignment::cancel(tp("a", 1)),
            ],
            30_000,
        )
        .unwrap();
        assert_eq!(req.timeout_ms, 30_000);
        assert!(req.allow_replication_factor_change);
        let names: Vec<&str> = req.topics.iter().map(|t| t.name.0.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let a = &req.topics[0].partitions;
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].partition_index, a[1].partition_index), (0, 1));
        assert_eq!(
            a[0].replicas.as_deref(),
            Some(&[BrokerId(2), BrokerId(3), BrokerId(1)][..])
        );
        assert_eq!(a[1].replicas, None, "a cancel is a null replica list");
        // A null replica list survives the wire, in every version.
        for version in 0..=1 {
            let mut buf = bytes::BytesMut::new();
            req.encode(&mut buf, version).unwrap();
            let back =
                AlterPartitionReassignmentsRequest::decode(&mut buf.freeze(), version).unwrap();
            assert_eq!(back.topics[0].partitions[1].replicas, None);
            assert_eq!(
                back.topics[0].partitions[0]
                    .replicas
                    .as_ref()
                    .unwrap()
                    .len(),
                3
            );
        }
    }

    #[test]
    fn a_partition_named_twice_is_refused_before_sending() {
        let e = build_alter_reassignments(
            &[
                PartitionReassignment::to(tp("a", 0), [1, 2]),
                PartitionReassignment::cancel(tp("a", 0)),
            ],
            1,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Encode { api: ApiKey::AlterPartitionReassignments, reason } if reason.contains("a-0")),
            "{e}"
        );
    }

    #[test]
    fn reassignment_answers_map_each_partition_and_name_the_unanswered() {
        let resp = AlterPartitionReassignmentsResponse::default().with_responses(vec![
            ReassignableTopicResponse::default()
                .with_name(topic_name("a"))
                .with_partitions(vec![
                    ReassignablePartitionResponse::default().with_partition_index(0),
                    ReassignablePartitionResponse::default()
                        .with_partition_index(1)
                        .with_error_code(KafkaCode::NoReassignmentInProgress.code())
                        .with_error_message(msg("no reassignment of a-1")),
                    ReassignablePartitionResponse::default()
                        .with_partition_index(2)
                        .with_error_code(KafkaCode::InvalidReplicaAssignment.code())
                        .with_error_message(msg("broker 9 is not registered")),
                ]),
        ]);
        let asked = [tp("a", 0), tp("a", 1), tp("a", 2), tp("b", 0)];
        let out = read_alter_reassignments(&resp, &asked).unwrap();
        assert_eq!(out.len(), 4);
        assert!(out[&tp("a", 0)].is_ok());
        match &out[&tp("a", 1)] {
            Err(Error::Broker {
                code: KafkaCode::NoReassignmentInProgress,
                topic: Some(t),
                partition: Some(1),
                message: Some(m),
                ..
            }) => assert_eq!((t.as_str(), m.as_str()), ("a", "no reassignment of a-1")),
            other => panic!("{other:?}"),
        }
        let invalid = out[&tp("a", 2)].as_ref().unwrap_err();
        assert_eq!(invalid.action(), ErrorAction::Fatal, "fix the replica list");
        assert!(
            invalid.to_string().contains("broker 9 is not registered"),
            "{invalid}"
        );
        assert!(
            matches!(&out[&tp("b", 0)], Err(Error::Metadata(m)) if m.contains("b-0")),
            "{:?}",
            out[&tp("b", 0)]
        );
    }

    #[test]
    fn a_request_wide_code_fails_the_whole_call_with_the_controllers_message() {
        let resp = AlterPartitionReassignmentsResponse::default()
            .with_error_code(KafkaCode::ClusterAuthorizationFailed.code())
            .with_error_message(msg("needs ALTER on the cluster"));
        let e = read_alter_reassignments(&resp, &[tp("a", 0)]).unwrap_err();
        assert!(matches!(
            &e,
            Error::Broker { code: KafkaCode::ClusterAuthorizationFailed, topic: None, message: Some(m), .. }
                if m == "needs ALTER on the cluster"
        ));
        let list = ListPartitionReassignmentsResponse::default()
            .with_error_code(KafkaCode::NotController.code());
        let e = read_list_reassignments(&list).unwrap_err();
        assert_eq!(e.action(), ErrorAction::RefreshMetadataAndRetry);
        let elect = ElectLeadersResponse::default()
            .with_error_code(KafkaCode::ClusterAuthorizationFailed.code());
        assert!(read_elect_leaders(&elect, &[]).is_err());
    }

    #[test]
    fn listing_all_sends_null_topics_and_reads_adding_and_removing() {
        assert_eq!(build_list_reassignments(None, 5).topics, None);
        let some = build_list_reassignments(Some(&[tp("b", 2), tp("a", 1), tp("b", 0)]), 5);
        let topics = some.topics.unwrap();
        assert_eq!(topics.len(), 2);
        assert_eq!(topics[0].name.0.as_str(), "a");
        assert_eq!(topics[1].partition_indexes, [2, 0]);

        let resp = ListPartitionReassignmentsResponse::default().with_topics(vec![
            OngoingTopicReassignment::default()
                .with_name(topic_name("a"))
                .with_partitions(vec![OngoingPartitionReassignment::default()
                    .with_partition_index(1)
                    .with_replicas(vec![BrokerId(2), BrokerId(3), BrokerId(1)])
                    .with_adding_replicas(vec![BrokerId(3)])
                    .with_removing_replicas(vec![BrokerId(1)])]),
        ]);
        let out = read_list_reassignments(&resp).unwrap();
        assert_eq!(
            out[&tp("a", 1)],
            OngoingReassignment {
                replicas: vec![2, 3, 1],
                adding: vec![3],
                removing: vec![1],
            }
        );
    }

    #[test]
    fn election_requests_carry_the_type_and_null_means_every_partition() {
        let all = build_elect_leaders(ElectionType::Preferred, None, 7);
        assert_eq!((all.election_type, all.timeout_ms), (0, 7));
        assert_eq!(all.topic_partitions, None);
        let some = build_elect_leaders(ElectionType::Unclean, Some(&[tp("a", 0), tp("a", 0)]), 7);
        assert_eq!(some.election_type, 1);
        let tps = some.topic_partitions.unwrap();
        assert_eq!(
            tps[0].partitions,
            [0],
            "a partition named twice is asked once"
        );
    }

    #[test]
    fn election_results_tell_elected_from_not_needed_from_refused() {
        let resp = ElectLeadersResponse::default().with_replica_election_results(vec![
            ReplicaElectionResult::default()
                .with_topic(topic_name("a"))
                .with_partition_result(vec![
                    PartitionResult::default().with_partition_id(0),
                    PartitionResult::default()
                        .with_partition_id(1)
                        .with_error_code(KafkaCode::ElectionNotNeeded.code()),
                    PartitionResult::default()
                        .with_partition_id(2)
                        .with_error_code(KafkaCode::PreferredLeaderNotAvailable.code())
                        .with_error_message(msg("replica 3 is not in the ISR")),
                ]),
        ]);
        let out = read_elect_leaders(&resp, &[tp("a", 0), tp("a", 3)]).unwrap();
        assert!(matches!(out[&tp("a", 0)], LeaderElection::Elected));
        assert!(matches!(out[&tp("a", 1)], LeaderElection::NotNeeded));
        assert!(out[&tp("a", 1)].is_ok());
        match &out[&tp("a", 2)] {
            LeaderElection::Failed(
                e @ Error::Broker {
                    code, partition, ..
                },
            ) => {
                assert_eq!(
                    (*code, *partition),
                    (KafkaCode::PreferredLeaderNotAvailable, Some(2))
                );
                assert!(e.to_string().contains("replica 3 is not in the ISR"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(
                &out[&tp("a", 3)],
                LeaderElection::Failed(Error::Metadata(_))
            ),
            "asked, unanswered"
        );
        assert!(!out[&tp("a", 3)].is_ok());
    }
}
