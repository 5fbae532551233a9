//! A scripted group coordinator for unit tests: [`GroupIo`] answered from
//! memory, as one broker answers a few members of one group subscribed to
//! one topic ([`TOPIC`]). Enough of both protocols to rebalance:
//!
//! - classic: MEMBER_ID_REQUIRED on a first join (KIP-394); a join starts a
//!   rebalance, and every JoinGroup waits until all members joined; the
//!   leader is told the members and assigns in SyncGroup, which the others
//!   wait for; heartbeats answer REBALANCE_IN_PROGRESS meanwhile; a leave
//!   rebalances the rest.
//! - KIP-848: the broker assigns (contiguous ranges over the members in
//!   member id order), and hands a member a partition only once no other
//!   member reports owning it; epoch -1/-2 leaves.
//! - KIP-932 (share groups): the same ranges, handed out at once (a share
//!   group's partitions are not exclusive: nothing waits for a release);
//!   epoch -1 leaves.
//!
//! Every request, and what the test notes (its consumers' events), goes
//! into one [`FakeCoordinator::log`], in order.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_wire::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_wire::messages::join_group_response::JoinGroupResponseMember;
use kafka_wire::messages::{
    share_group_heartbeat_response, ApiKey, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_wire::{BrokerInfo, KafkaCode, Metadata, PartitionInfo, StrBytes, TopicInfo};
use tokio::sync::watch;
use uuid::Uuid;

use super::{CoordinatorRequest, GroupIo};

/// The one topic the group consumes.
pub(crate) const TOPIC: &str = "t";
/// Its topic id (KIP-516).
pub(crate) const TOPIC_ID: [u8; 16] = [7; 16];
/// The coordinator's node id (also the topic's only broker).
const NODE: i32 = 1;
/// What the coordinator asks KIP-848 members for.
const HEARTBEAT_INTERVAL_MS: i32 = 3_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn code(c: KafkaCode) -> i16 {
    c.code()
}

/// A coordinator shared by every member of a test (clone it per member).
#[derive(Debug, Clone)]
pub(crate) struct FakeCoordinator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a waiting JoinGroup or SyncGroup may care about.
    changed: watch::Sender<u64>,
    partitions: i32,
}

#[derive(Debug, Default)]
struct State {
    classic: Classic,
    consumer: Consumer,
    share: Share,
    log: Vec<String>,
}

/// The classic group.
#[derive(Debug, Default)]
struct Classic {
    /// The last completed rebalance's generation (0 before).
    generation: i32,
    /// Member id → the protocols it joined with.
    members: BTreeMap<String, Vec<(String, Bytes)>>,
    /// A rebalance is on: the members that joined it so far.
    rejoined: Option<BTreeSet<String>>,
    /// Each completed rebalance, by generation.
    rounds: BTreeMap<i32, Round>,
    /// The leader's assignments, by generation, once it synced.
    synced: BTreeMap<i32, BTreeMap<String, Bytes>>,
    next_id: u32,
}

#[derive(Debug, Clone)]
struct Round {
    leader: String,
    protocol: String,
    /// Every member and its subscription bytes (the leader is told them).
    members: Vec<(String, Bytes)>,
}

/// The KIP-848 group.
#[derive(Debug, Default)]
struct Consumer {
    group_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
}

/// The share group: member id → the assignment last sent to it.
#[derive(Debug, Default)]
struct Share {
    group_epoch: i32,
    members: BTreeMap<String, Option<BTreeSet<i32>>>,
}

#[derive(Debug, Default)]
struct ConsumerMember {
    /// The partitions it last said it owns.
    owned: BTreeSet<i32>,
    /// The assignment last sent to it.
    sent: Option<BTreeSet<i32>>,
}

impl FakeCoordinator {
    /// A coordinator for one group on [`TOPIC`] with `partitions` partitions.
    pub(crate) fn new(partitions: i32) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changed: watch::Sender::new(0),
                partitions,
            }),
        }
    }

    /// Add what the test saw (a consumer's event) to the log.
    pub(crate) fn note(&self, line: impl Into<String>) {
        self.state().log.push(line.into());
    }

    /// Every request and note so far, in order.
    pub(crate) fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("fake coordinator lock")
    }

    fn bump(&self) {
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Wait until `answer` has one (it is asked again on every change).
    async fn wait_for<T>(&self, mut answer: impl FnMut(&mut State) -> Option<T>) -> T {
        let mut changed = self.shared.changed.subscribe();
        loop {
            if let Some(a) = answer(&mut self.state()) {
                return a;
            }
            changed
                .changed()
                .await
                .expect("the coordinator outlives its requests");
        }
    }

    async fn join(&self, r: &JoinGroupRequest) -> JoinGroupResponse {
        let id = r.member_id.to_string();
        let joined_after = {
            let mut st = self.state();
            if id.is_empty() {
                st.classic.next_id += 1;
                let id = format!("member-{}", st.classic.next_id);
                st.log.push(format!("JoinGroup: MEMBER_ID_REQUIRED, {id}"));
                return JoinGroupResponse::default()
                    .with_error_code(code(KafkaCode::MemberIdRequired))
                    .with_member_id(s(&id));
            }
            st.log.push(format!("JoinGroup {id}"));
            let protocols = r
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            let c = &mut st.classic;
            c.members.insert(id.clone(), protocols);
            c.rejoined
                .get_or_insert_with(BTreeSet::new)
                .insert(id.clone());
            c.generation
        };
        self.bump();
        self.wait_for(|st| {
            let c = &mut st.classic;
            if !c.members.contains_key(&id) {
                return Some(
                    JoinGroupResponse::default().with_error_code(code(KafkaCode::UnknownMemberId)),
                );
            }
            c.complete_rebalance();
            let generation = joined_after + 1;
            let round = c.rounds.get(&generation)?;
            let members = if round.leader == id {
                round
                    .members
                    .iter()
                    .map(|(m, meta)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(m))
                            .with_metadata(meta.clone())
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Some(
                JoinGroupResponse::default()
                    .with_generation_id(generation)
                    .with_protocol_type(Some(s("consumer")))
                    .with_protocol_name(Some(s(&round.protocol)))
                    .with_leader(s(&round.leader))
                    .with_member_id(s(&id))
                    .with_members(members),
            )
        })
        .await
    }

    async fn sync(&self, r: &SyncGroupRequest) -> SyncGroupResponse {
        let id = r.member_id.to_string();
        let generation = r.generation_id;
        {
            let mut st = self.state();
            st.log
                .push(format!("SyncGroup {id} generation {generation}"));
            let c = &mut st.classic;
            let leader = c.rounds.get(&generation).map(|round| round.leader.as_str());
            if leader == Some(id.as_str()) {
                let assignments = r
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect();
                c.synced.insert(generation, assignments);
            }
        }
        self.bump();
        self.wait_for(|st| {
            let c = &st.classic;
            let error = if !c.members.contains_key(&id) {
                KafkaCode::UnknownMemberId
            } else if generation != c.generation {
                KafkaCode::IllegalGeneration
            } else if let Some(assigned) = c.synced.get(&generation) {
                let assignment = assigned.get(&id).cloned().unwrap_or_default();
                return Some(SyncGroupResponse::default().with_assignment(assignment));
            } else if c.rejoined.is_some() {
                KafkaCode::RebalanceInProgress
            } else {
                return None; // the leader has not synced yet
            };
            Some(SyncGroupResponse::default().with_error_code(code(error)))
        })
        .await
    }

    fn heartbeat(&self, r: &HeartbeatRequest) -> HeartbeatResponse {
        let mut st = self.state();
        let c = &st.classic;
        let id = r.member_id.to_string();
        let error = if !c.members.contains_key(&id) {
            Some(KafkaCode::UnknownMemberId)
        } else if c.rejoined.is_some() {
            Some(KafkaCode::RebalanceInProgress)
        } else if r.generation_id != c.generation {
            Some(KafkaCode::IllegalGeneration)
        } else {
            None
        };
        let line = format!(
            "Heartbeat {id}: {}",
            error.map_or("ok".into(), |e| format!("{e:?}"))
        );
        st.log.push(line);
        HeartbeatResponse::default().with_error_code(error.map_or(0, code))
    }

    fn leave(&self, r: &LeaveGroupRequest) -> LeaveGroupResponse {
        {
            let mut st = self.state();
            let ids: Vec<String> = r.members.iter().map(|m| m.member_id.to_string()).collect();
            st.log.push(format!("LeaveGroup {}", ids.join(",")));
            let c = &mut st.classic;
            for id in &ids {
                c.members.remove(id);
                if let Some(rejoined) = &mut c.rejoined {
                    rejoined.remove(id);
                }
            }
            if !c.members.is_empty() {
                c.rejoined.get_or_insert_with(BTreeSet::new);
            }
        }
        self.bump();
        LeaveGroupResponse::default()
    }

    fn consumer_heartbeat(
        &self,
        r: &ConsumerGroupHeartbeatRequest,
    ) -> ConsumerGroupHeartbeatResponse {
        let partitions = self.shared.partitions;
        let mut st = self.state();
        let id = r.member_id.to_string();
        let epoch = r.member_epoch;
        st.log
            .push(format!("ConsumerGroupHeartbeat {id} epoch {epoch}"));
        let g = &mut st.consumer;
        if epoch < 0 {
            g.members.remove(&id);
            g.group_epoch += 1;
            return ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(s(&id)))
                .with_member_epoch(epoch);
        }
        if epoch == 0 {
            g.members.insert(id.clone(), ConsumerMember::default());
            g.group_epoch += 1;
        }
        if !g.members.contains_key(&id) {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code(KafkaCode::UnknownMemberId));
        }
        if let Some(owned) = &r.topic_partitions {
            let owned = owned
                .iter()
                .filter(|t| *t.topic_id.as_bytes() == TOPIC_ID)
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            g.members.get_mut(&id).expect("checked").owned = owned;
        }
        // Contiguous ranges in member id order; a partition another member
        // still owns waits until it reports it released.
        let k = g.members.len() as i32;
        let i = g.members.keys().position(|m| *m == id).expect("checked") as i32;
        let taken: BTreeSet<i32> = g
            .members
            .iter()
            .filter(|(m, _)| **m != id)
            .flat_map(|(_, o)| o.owned.iter().copied())
            .collect();
        let target: BTreeSet<i32> = (i * partitions / k..(i + 1) * partitions / k)
            .filter(|p| !taken.contains(p))
            .collect();
        let me = g.members.get_mut(&id).expect("checked");
        let assignment = (me.sent.as_ref() != Some(&target)).then(|| {
            me.sent = Some(target.clone());
            Assignment::default().with_topic_partitions(vec![TopicPartitions::default()
                .with_topic_id(Uuid::from_bytes(TOPIC_ID))
                .with_partitions(target.into_iter().collect())])
        });
        ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(s(&id)))
            .with_member_epoch(g.group_epoch)
            .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS)
            .with_assignment(assignment)
    }

    fn share_heartbeat(&self, r: &ShareGroupHeartbeatRequest) -> ShareGroupHeartbeatResponse {
        let partitions = self.shared.partitions;
        let mut st = self.state();
        let id = r.member_id.to_string();
        let epoch = r.member_epoch;
        st.log
            .push(format!("ShareGroupHeartbeat {id} epoch {epoch}"));
        let g = &mut st.share;
        if epoch < 0 {
            g.members.remove(&id);
            g.group_epoch += 1;
            return ShareGroupHeartbeatResponse::default()
                .with_member_id(Some(s(&id)))
                .with_member_epoch(epoch);
        }
        if epoch == 0 {
            g.members.insert(id.clone(), None);
            g.group_epoch += 1;
        }
        let Some(i) = g.members.keys().position(|m| *m == id) else {
            return ShareGroupHeartbeatResponse::default()
                .with_error_code(code(KafkaCode::UnknownMemberId));
        };
        let (i, k) = (i as i32, g.members.len() as i32);
        let target: BTreeSet<i32> = (i * partitions / k..(i + 1) * partitions / k).collect();
        let sent = g.members.get_mut(&id).expect("found above");
        let assignment = (sent.as_ref() != Some(&target)).then(|| {
            *sent = Some(target.clone());
            share_group_heartbeat_response::Assignment::default().with_topic_partitions(vec![
                share_group_heartbeat_response::TopicPartitions::default()
                    .with_topic_id(Uuid::from_bytes(TOPIC_ID))
                    .with_partitions(target.into_iter().collect()),
            ])
        });
        ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(s(&id)))
            .with_member_epoch(g.group_epoch)
            .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS)
            .with_assignment(assignment)
    }

    /// The group's session timeout asked for (`consumer.session.timeout.ms`
    /// or `share.session.timeout.ms`): Kafka's default, 45 s.
    fn describe_configs(&self, req: &DescribeConfigsRequest) -> DescribeConfigsResponse {
        let key = req
            .resources
            .first()
            .and_then(|r| r.configuration_keys.as_ref()?.first().cloned())
            .unwrap_or_else(|| s("consumer.session.timeout.ms"));
        DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
            .with_configs(vec![DescribeConfigsResourceResult::default()
                .with_name(key)
                .with_value(Some(s("45000")))])])
    }
}

impl Classic {
    /// Finish the rebalance on if every member has joined it: the next
    /// generation, led by the old leader if it stayed, else the first
    /// member; the protocol the leader named first.
    fn complete_rebalance(&mut self) {
        let Some(rejoined) = &self.rejoined else {
            return;
        };
        if self.members.is_empty() || self.members.keys().any(|m| !rejoined.contains(m)) {
            return;
        }
        let previous = self.rounds.get(&self.generation).map(|r| r.leader.clone());
        let leader = previous
            .filter(|l| self.members.contains_key(l))
            .unwrap_or_else(|| self.members.keys().next().expect("not empty").clone());
        let protocol = self.members[&leader][0].0.clone();
        let members = self
            .members
            .iter()
            .map(|(m, protocols)| {
                let meta = protocols.iter().find(|(name, _)| *name == protocol);
                (m.clone(), meta.map(|(_, b)| b.clone()).unwrap_or_default())
            })
            .collect();
        self.generation += 1;
        self.rounds.insert(
            self.generation,
            Round {
                leader,
                protocol,
                members,
            },
        );
        self.rejoined = None;
    }
}

impl GroupIo for FakeCoordinator {
    async fn find_coordinator(&self, _group_id: &str) -> kafka_wire::Result<i32> {
        Ok(NODE)
    }

    async fn send<R: CoordinatorRequest>(
        &self,
        node: i32,
        req: &R,
        _extra_timeout: Duration,
    ) -> kafka_wire::Result<R::Response> {
        assert_eq!(node, NODE, "sent to the coordinator");
        let req: &dyn Any = req;
        let resp: Box<dyn Any + Send> = if let Some(r) = req.downcast_ref::<JoinGroupRequest>() {
            Box::new(self.join(r).await)
        } else if let Some(r) = req.downcast_ref::<SyncGroupRequest>() {
            Box::new(self.sync(r).await)
        } else if let Some(r) = req.downcast_ref::<HeartbeatRequest>() {
            Box::new(self.heartbeat(r))
        } else if let Some(r) = req.downcast_ref::<LeaveGroupRequest>() {
            Box::new(self.leave(r))
        } else if let Some(r) = req.downcast_ref::<ConsumerGroupHeartbeatRequest>() {
            Box::new(self.consumer_heartbeat(r))
        } else if let Some(r) = req.downcast_ref::<DescribeConfigsRequest>() {
            Box::new(self.describe_configs(r))
        } else if let Some(r) = req.downcast_ref::<ShareGroupHeartbeatRequest>() {
            Box::new(self.share_heartbeat(r))
        } else {
            panic!(
                "the fake coordinator does not answer {}",
                std::any::type_name::<R>()
            )
        };
        Ok(*resp
            .downcast::<R::Response>()
            .expect("each request has its response type"))
    }

    async fn version(&self, _node: i32, api: ApiKey) -> kafka_wire::Result<Option<i16>> {
        Ok(match api {
            ApiKey::LeaveGroup => Some(5),
            ApiKey::ConsumerGroupHeartbeat => Some(1),
            ApiKey::ShareGroupHeartbeat => Some(1),
            _ => None,
        })
    }

    async fn refresh_metadata(
        &self,
        _topics: Option<&[String]>,
    ) -> kafka_wire::Result<Arc<Metadata>> {
        Ok(self.metadata())
    }

    /// One broker, leader of every partition of [`TOPIC`].
    fn metadata(&self) -> Arc<Metadata> {
        let broker = BrokerInfo {
            id: NODE,
            address: kafka_wire::BrokerAddress {
                host: "localhost".into(),
                port: 9092,
            },
            rack: None,
        };
        let topic = TopicInfo {
            name: TOPIC.into(),
            id: TOPIC_ID,
            is_internal: false,
            error: None,
            partitions: (0..self.shared.partitions)
                .map(|p| PartitionInfo {
                    partition: p,
                    leader: NODE,
                    leader_epoch: 0,
                    replicas: vec![NODE],
                    isr: vec![NODE],
                    error: None,
                })
                .collect(),
        };
        Arc::new(Metadata {
            brokers: [(NODE, broker)].into_iter().collect(),
            topics: [(TOPIC.to_string(), topic)].into_iter().collect(),
            ..Metadata::default()
        })
    }
}
