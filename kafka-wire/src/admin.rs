//! Admin calls the other crates, the lab and the tests use.
//!
//! Topics: create, delete, add partitions. Each waits until metadata agrees,
//! so a caller can produce to a topic (or a new partition) as soon as the
//! call returns. Replicas and leaders (reassignment, elections): `replicas`.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::{Client, Lane};
use crate::error::{Error, KafkaCode, Result};
use crate::throttle::Throttle;
use crate::topic_partition::{IsolationLevel, TopicPartition};

mod replicas;
mod share;
pub use replicas::{ElectionType, LeaderElection, OngoingReassignment, PartitionReassignment};
pub use share::{ShareGroupDescription, ShareGroupMember, ShareGroupOffset};

/// For [`Client::delete_records`]: delete up to the high watermark.
pub const DELETE_TO_END: i64 = -1;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    /// -1: the broker's `default.replication.factor`.
    pub replication_factor: i16,
    /// Topic configs, e.g. `("cleanup.policy", "compact")`.
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: -1,
            configs: Vec::new(),
        }
    }

    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A topic-scoped error code as an [`Error::Broker`] naming the topic,
/// with the broker's own message when the response carries one.
fn check_topic_code(api: ApiKey, code: i16, topic: &str, message: Option<&StrBytes>) -> Result<()> {
    match KafkaCode::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::broker_with_message(
            api,
            code,
            Some(topic),
            message.map(|m| m.as_str()),
        )),
    }
}

/// How long create/delete wait for metadata to agree.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Metadata is asked again after 20 ms, doubling to 200 ms, until it agrees
/// (`PROPAGATION_TIMEOUT`).
const PROPAGATION_POLL: Backoff =
    Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200));

/// ListOffsets retries while leaders move: 50 ms doubling to 200 ms, 20 at
/// most (about 3.7 s).
const OFFSETS_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(50), Duration::from_millis(200))
        .with_max_retries(20);

impl Client {
    /// Create a topic and wait until every partition has a leader.
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's code (TOPIC_ALREADY_EXISTS,
    /// INVALID_REPLICATION_FACTOR, …), or a timeout waiting for leaders.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the topic may be created even if the
    /// future is dropped.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<()> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(
                    topic
                        .configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )]);
        let conn = self.any_connection(Lane::Control).await?;
        let resp = conn
            .send(&req, self.config().request_timeout, PROPAGATION_TIMEOUT)
            .await?;
        for t in &resp.topics {
            check_topic_code(
                ApiKey::CreateTopics,
                t.error_code,
                &topic.name,
                t.error_message.as_ref(),
            )?;
        }
        self.wait_for_topic(&topic.name, topic.partitions as usize)
            .await
    }

    async fn wait_for_topic(&self, name: &str, partitions: usize) -> Result<()> {
        let ready = self
            .wait_for_metadata(name, |md| {
                md.topics.get(name).is_some_and(|t| {
                    t.partitions.len() == partitions
                        && t.partitions
                            .iter()
                            .all(|p| p.leader >= 0 && p.error.is_none())
                })
            })
            .await?;
        if !ready {
            return Err(Error::Metadata(format!(
                "topic {name} has no leader for every partition after {PROPAGATION_TIMEOUT:?}"
            )));
        }
        Ok(())
    }

    /// Refresh `topic`'s metadata until it `agrees` (true), or
    /// `PROPAGATION_TIMEOUT` passed (false).
    async fn wait_for_metadata(
        &self,
        topic: &str,
        agrees: impl Fn(&crate::metadata::Metadata) -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + PROPAGATION_TIMEOUT;
        let mut delays = PROPAGATION_POLL.delays();
        loop {
            let md = self.refresh_metadata(Some(&[topic.to_string()])).await?;
            if agrees(&md) {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            let delay = delays.next().unwrap_or(PROPAGATION_POLL.max);
            tokio::time::sleep(delay).await;
        }
    }

    /// Delete a topic. Deleting a topic that does not exist is an error
    /// (UNKNOWN_TOPIC_OR_PARTITION).
    ///
    /// # Errors
    /// [`Error::Broker`] with the broker's code.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let conn = self.any_connection(Lane::Control).await?;
        let topic = TopicName(StrBytes::from_string(name.to_string()));
        let req =
            DeleteTopicsRequest::default().with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32);
        // v6 names topics in `topics` (name or id); older versions in `topic_names`.
        let req = if conn.version(ApiKey::DeleteTopics)? >= 6 {
            req.with_topics(vec![DeleteTopicState::default().with_name(Some(topic))])
        } else {
            req.with_topic_names(vec![topic])
        };
        let resp = conn
            .send(&req, self.config().request_timeout, PROPAGATION_TIMEOUT)
            .await?;
        for r in &resp.responses {
            check_topic_code(
                ApiKey::DeleteTopics,
                r.error_code,
                name,
                r.error_message.as_ref(),
            )?;
        }
        // Deletion is asynchronous: wait until metadata forgets the topic.
        let gone = self
            .wait_for_metadata(name, |md| !md.topics.contains_key(name))
            .await?;
        if !gone {
            return Err(Error::Metadata(format!(
                "topic {name} still in metadata {PROPAGATION_TIMEOUT:?} after deletion"
            )));
        }
        Ok(())
    }

    /// Grow `topic` to `new_total` partitions (CreatePartitions), then wait
    /// until metadata shows `new_total` partitions, each with a leader, so
    /// a caller can produce to the new ones as soon as this returns.
    /// Partitions can only be added, never removed; keyed records of the
    /// existing partitions do not move, so a key's later records may land
    /// on another partition than its earlier ones (as with Kafka's
    /// `kafka-topics --alter --partitions`). Consumer groups subscribed to
    /// the topic notice within their `metadata.max.age.ms` and rebalance.
    ///
    /// # Errors
    /// [`Error::Refused`] with the broker's code and message:
    /// INVALID_PARTITIONS when `new_total` is not above the current count,
    /// UNKNOWN_TOPIC_OR_PARTITION, TOPIC_AUTHORIZATION_FAILED, …; or
    /// [`Error::Metadata`] when the new partitions have no leader after 30 s.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: the partitions may be added even if the
    /// future is dropped.
    pub async fn create_partitions(&self, topic: &str, new_total: i32) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_count(new_total)
                .with_assignments(None)]);
        let conn = self.any_connection(Lane::Control).await?;
        let resp = conn
            .send(&req, self.config().request_timeout, PROPAGATION_TIMEOUT)
            .await?;
        for r in &resp.results {
            if let Some(code) = KafkaCode::try_from_code(r.error_code) {
                return Err(Error::Refused {
                    api: ApiKey::CreatePartitions,
                    code,
                    resource: topic.to_string(),
                    message: r.error_message.as_ref().map(|m| m.to_string()),
                });
            }
        }
        self.wait_for_topic(topic, usize::try_from(new_total).unwrap_or(0))
            .await
    }
}

/// Which offset `list_offsets` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset: the high watermark, or, for a `read_committed`
    /// reader ([`Client::list_offsets_with`]), the last stable offset.
    Latest,
    /// The first offset whose timestamp is at or after this (ms since epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// A consumer group as `list_groups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    /// `classic`, `consumer`, `share` or `streams` (ListGroups v5, Kafka
    /// 4.0+); `None` from an older broker.
    pub group_type: Option<String>,
}

/// One member of a described group. Metadata and assignment are the raw
/// consumer-protocol bytes (consumer-core decodes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Classic members: the consumer-protocol subscription bytes (empty
    /// for a KIP-848 group).
    pub metadata: bytes::Bytes,
    /// Classic members: the consumer-protocol assignment bytes (empty for
    /// a KIP-848 group: see `assigned`).
    pub assignment: bytes::Bytes,
    /// KIP-848 groups: the member epoch (`None` for a classic group).
    pub member_epoch: Option<i32>,
    /// KIP-848 groups: `"consumer"` or `"classic"` (a classic-protocol
    /// member in a consumer group, KIP-1099), `None` for a classic group.
    pub member_type: Option<&'static str>,
    /// KIP-848 groups: the partitions the member owns now (resolved names).
    pub assigned: Vec<TopicPartition>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    /// `consumer` for consumer groups of either protocol.
    pub protocol_type: String,
    /// The assignor the group chose (e.g. `range`; for a KIP-848 group the
    /// server-side assignor, e.g. `uniform`).
    pub protocol: String,
    pub members: Vec<GroupMember>,
    /// KIP-848 groups: the group epoch (`None` for a classic group).
    pub group_epoch: Option<i32>,
}

/// A config resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigResource {
    Topic(String),
    Broker(i32),
    /// A consumer group's configs (KIP-848, Kafka 4.0+), e.g.
    /// `consumer.session.timeout.ms`; every broker answers for them.
    Group(String),
}

impl ConfigResource {
    fn wire(&self) -> (i8, String) {
        match self {
            ConfigResource::Topic(t) => (2, t.clone()),
            ConfigResource::Broker(b) => (4, b.to_string()),
            ConfigResource::Group(g) => (32, g.clone()),
        }
    }
}

/// One config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    /// `None` for sensitive values and unset ones.
    pub value: Option<String>,
    pub read_only: bool,
    /// Set explicitly on the resource (not a default).
    pub is_override: bool,
}

/// One partition of a per-partition admin answer: `tp` back, or the error
/// its code names (topic and partition in it).
fn partition_answer(api: ApiKey, tp: TopicPartition, code: i16) -> Result<TopicPartition> {
    match KafkaCode::try_from_code(code) {
        Some(code) => Err(Error::broker_for(api, code, &tp.topic, tp.partition)),
        None => Ok(tp),
    }
}

fn s(v: &StrBytes) -> String {
    v.as_str().to_string()
}

impl Client {
    /// Offsets of every partition of `topic` for `spec`, as a
    /// `read_uncommitted` reader sees them (`latest` = the high watermark),
    /// sorted by partition.
    ///
    /// # Errors
    /// [`Error::Broker`] naming the partition (UNKNOWN_TOPIC_OR_PARTITION
    /// for a topic that does not exist).
    pub async fn list_offsets(&self, topic: &str, spec: OffsetSpec) -> Result<Vec<(i32, i64)>> {
        self.list_offsets_with(topic, spec, IsolationLevel::ReadUncommitted)
            .await
    }

    /// [`Client::list_offsets`] for a reader at `isolation`: with
    /// `read_committed`, [`OffsetSpec::Latest`] answers the last stable
    /// offset, so a consumer that starts there never skips an open
    /// transaction's records (they commit below it).
    ///
    /// # Errors
    /// As [`Client::list_offsets`].
    pub async fn list_offsets_with(
        &self,
        topic: &str,
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<Vec<(i32, i64)>> {
        let md = self.refresh_metadata(Some(&[topic.to_string()])).await?;
        let info = md.topics.get(topic).ok_or_else(|| {
            Error::broker_for(
                ApiKey::ListOffsets,
                KafkaCode::UnknownTopicOrPartition,
                topic,
                -1,
            )
        })?;
        let tps: Vec<TopicPartition> = info
            .partitions
            .iter()
            .map(|p| TopicPartition::new(topic, p.partition))
            .collect();
        Ok(self
            .partition_offsets(&tps, spec, isolation)
            .await?
            .into_iter()
            .map(|(tp, o)| (tp.partition, o))
            .collect())
    }

    /// Offsets of the given partitions for `spec`, asking each leader once
    /// (ListOffsets v1+). Leaders that are moving (NOT_LEADER_OR_FOLLOWER,
    /// a fresh topic) are retried briefly after a metadata refresh.
    ///
    /// # Errors
    /// [`Error::Broker`] naming the first partition that failed.
    ///
    /// # Cancel safety
    /// Cancel safe (read only).
    pub async fn partition_offsets(
        &self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
        isolation: IsolationLevel,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        let mut delays = OFFSETS_BACKOFF.delays();
        loop {
            let mut throttle = Throttle::default();
            match self
                .partition_offsets_once(tps, spec, isolation, &mut throttle)
                .await
            {
                Err(e) if e.is_retriable() => match delays.next_after(throttle) {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    /// One ListOffsets per leader; `throttle` receives the longest any
    /// leader asked for.
    async fn partition_offsets_once(
        &self,
        tps: &[TopicPartition],
        spec: OffsetSpec,
        isolation: IsolationLevel,
        throttle: &mut Throttle,
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        use kafka_protocol::messages::ListOffsetsRequest;
        let by_leader = self.by_leader(ApiKey::ListOffsets, tps).await?;
        let mut out = BTreeMap::new();
        for (leader, topics) in by_leader {
            let req = ListOffsetsRequest::default()
                .with_replica_id(kafka_protocol::messages::BrokerId(-1))
                .with_isolation_level(isolation.wire())
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|p| {
                                            ListOffsetsPartition::default()
                                                .with_partition_index(p)
                                                .with_timestamp(spec.wire())
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                );
            let resp = self
                .send_to(leader, Lane::Control, &req, Duration::ZERO)
                .await?;
            *throttle = (*throttle).max(Throttle::from_ms(resp.throttle_time_ms));
            for t in &resp.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                    out.insert(
                        partition_answer(ApiKey::ListOffsets, tp, p.error_code)?,
                        p.offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Group `tps` by their leader, from freshly refreshed metadata.
    ///
    /// # Errors
    /// UNKNOWN_TOPIC_OR_PARTITION for a partition metadata does not know,
    /// LEADER_NOT_AVAILABLE (retriable) for one without a leader.
    async fn by_leader(
        &self,
        api: ApiKey,
        tps: &[TopicPartition],
    ) -> Result<BTreeMap<i32, BTreeMap<String, Vec<i32>>>> {
        let mut topics: Vec<String> = tps.iter().map(|tp| tp.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let md = self.refresh_metadata(Some(&topics)).await?;
        let mut by_leader: BTreeMap<i32, BTreeMap<String, Vec<i32>>> = BTreeMap::new();
        for tp in tps {
            let p = md.partition(&tp.topic, tp.partition).ok_or_else(|| {
                Error::broker_for(
                    api,
                    KafkaCode::UnknownTopicOrPartition,
                    &tp.topic,
                    tp.partition,
                )
            })?;
            if p.leader < 0 {
                return Err(Error::broker_for(
                    api,
                    KafkaCode::LeaderNotAvailable,
                    &tp.topic,
                    tp.partition,
                ));
            }
            by_leader
                .entry(p.leader)
                .or_default()
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition);
        }
        Ok(by_leader)
    }

    /// Delete the records of each partition below the given offset
    /// (DeleteRecords; what retention does to a consumer that fell behind).
    /// The offset [`DELETE_TO_END`] (-1) means up to the high watermark.
    /// Returns each partition's new log start offset (low watermark).
    ///
    /// # Errors
    /// [`Error::Broker`] naming the partition: OFFSET_OUT_OF_RANGE for an
    /// offset past the high watermark, POLICY_VIOLATION on a compacted topic.
    ///
    /// # Cancel safety
    /// Not cancel safe in effect: records may be deleted even if the
    /// future is dropped.
    pub async fn delete_records(
        &self,
        before: &[(TopicPartition, i64)],
    ) -> Result<BTreeMap<TopicPartition, i64>> {
        use kafka_protocol::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        use kafka_protocol::messages::DeleteRecordsRequest;
        let tps: Vec<TopicPartition> = before.iter().map(|(tp, _)| tp.clone()).collect();
        let offset_of = |topic: &str, p: i32| {
            before
                .iter()
                .find(|(tp, _)| tp.topic == topic && tp.partition == p)
                .map_or(DELETE_TO_END, |(_, o)| *o)
        };
        let mut out = BTreeMap::new();
        for (leader, topics) in self.by_leader(ApiKey::DeleteRecords, &tps).await? {
            let req = DeleteRecordsRequest::default()
                .with_timeout_ms(PROPAGATION_TIMEOUT.as_millis() as i32)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(topic, partitions)| {
                            let parts = partitions
                                .into_iter()
                                .map(|p| {
                                    DeleteRecordsPartition::default()
                                        .with_partition_index(p)
                                        .with_offset(offset_of(&topic, p))
                                })
                                .collect();
                            DeleteRecordsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(topic)))
                                .with_partitions(parts)
                        })
                        .collect(),
                );
            let resp = self
                .send_to(leader, Lane::Control, &req, PROPAGATION_TIMEOUT)
                .await?;
            for t in &resp.topics {
                for p in &t.partitions {
                    let tp = TopicPartition::new(t.name.0.as_str(), p.partition_index);
                    out.insert(
                        partition_answer(ApiKey::DeleteRecords, tp, p.error_code)?,
                        p.low_watermark,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Cluster id, controller and brokers (DescribeCluster).
    ///
    /// # Errors
    /// Connection or broker errors.
    pub async fn describe_cluster(&self) -> Result<crate::metadata::Metadata> {
        use kafka_protocol::messages::DescribeClusterRequest;
        let conn = self.any_connection(Lane::Control).await?;
        let resp = conn
            .send(
                &DescribeClusterRequest::default(),
                self.config().request_timeout,
                Duration::ZERO,
            )
            .await?;
        crate::error::check_code(ApiKey::DescribeCluster, resp.error_code)
            .map_err(|e| e.with_message(resp.error_message.as_deref()))?;
        let mut md = crate::metadata::Metadata {
            cluster_id: Some(s(&resp.cluster_id)),
            controller_id: resp.controller_id.0,
            ..Default::default()
        };
        for b in &resp.brokers {
            md.brokers.insert(
                b.broker_id.0,
                crate::metadata::BrokerInfo {
                    id: b.broker_id.0,
                    address: crate::connector::BrokerAddress {
                        host: s(&b.host),
                        port: b.port as u16,
                    },
                    rack: b.rack.as_ref().map(s),
                },
            );
        }
        Ok(md)
    }

    /// Every group on every broker, of every type (share groups too:
    /// [`GroupListing::group_type`]).
    ///
    /// # Errors
    /// Connection or broker errors.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        use kafka_protocol::messages::ListGroupsRequest;
        let md = self.refresh_metadata(Some(&[])).await?;
        let mut out = Vec::new();
        for &broker in md.brokers.keys() {
            let resp = self
                .send_to(
                    broker,
                    Lane::Control,
                    &ListGroupsRequest::default(),
                    Duration::ZERO,
                )
                .await?;
            crate::error::check_code(ApiKey::ListGroups, resp.error_code)?;
            out.extend(resp.groups.iter().map(|g| GroupListing {
                group_id: g.group_id.0.to_string(),
                protocol_type: s(&g.protocol_type),
                state: s(&g.group_state),
                group_type: Some(s(&g.group_type)).filter(|t| !t.is_empty()),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// Members and assignments of a group (DescribeGroups, classic protocol).
    ///
    /// # Errors
    /// Coordinator and broker errors.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        use kafka_protocol::messages::{DescribeGroupsRequest, GroupId};
        let coordinator = self
            .find_coordinator(crate::coordinator::CoordinatorKind::Group, group)
            .await?;
        let req = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        let g = resp.groups.into_iter().next().ok_or_else(|| {
            Error::Metadata(format!("DescribeGroups returned nothing for {group}"))
        })?;
        // DescribeGroups does not see a KIP-848 group: Kafka 4.x answers
        // Dead with no members (or GROUP_ID_NOT_FOUND, "not a classic group").
        let unseen = g.error_code == KafkaCode::GroupIdNotFound.code()
            || (g.error_code == 0 && g.members.is_empty() && g.group_state.as_str() == "Dead");
        if unseen {
            if let Some(d) = self.describe_consumer_group(coordinator, group).await? {
                return Ok(d);
            }
        }
        crate::error::check_code(ApiKey::DescribeGroups, g.error_code)
            .map_err(|e| e.with_message(g.error_message.as_deref()))?;
        Ok(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: s(&g.group_state),
            protocol_type: s(&g.protocol_type),
            protocol: s(&g.protocol_data),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: s(&m.member_id),
                    group_instance_id: m.group_instance_id.as_ref().map(s),
                    client_id: s(&m.client_id),
                    client_host: s(&m.client_host),
                    metadata: m.member_metadata,
                    assignment: m.member_assignment,
                    member_epoch: None,
                    member_type: None,
                    assigned: Vec::new(),
                })
                .collect(),
            group_epoch: None,
        })
    }

    /// ConsumerGroupDescribe (KIP-848): `None` when the coordinator does
    /// not speak it or `group` is not a consumer-protocol group.
    async fn describe_consumer_group(
        &self,
        coordinator: i32,
        group: &str,
    ) -> Result<Option<GroupDescription>> {
        use kafka_protocol::messages::{ConsumerGroupDescribeRequest, GroupId};
        let conn = self.connection(coordinator, Lane::Control).await?;
        if conn.version(ApiKey::ConsumerGroupDescribe).is_err() {
            return Ok(None);
        }
        let req = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        let Some(g) = resp.groups.into_iter().next() else {
            return Ok(None);
        };
        // Kafka 3.9 advertises the API but answers UNSUPPORTED_VERSION while
        // KIP-848 is off: then there are no consumer-protocol groups.
        if g.error_code == KafkaCode::GroupIdNotFound.code()
            || g.error_code == KafkaCode::UnsupportedVersion.code()
        {
            return Ok(None);
        }
        crate::error::check_code(ApiKey::ConsumerGroupDescribe, g.error_code)
            .map_err(|e| e.with_message(g.error_message.as_deref()))?;
        let s = |v: &StrBytes| v.to_string();
        Ok(Some(GroupDescription {
            group_id: g.group_id.0.to_string(),
            state: s(&g.group_state),
            protocol_type: "consumer".into(),
            protocol: s(&g.assignor_name),
            group_epoch: Some(g.group_epoch),
            members: g
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: s(&m.member_id),
                    group_instance_id: m.instance_id.as_ref().map(s),
                    client_id: s(&m.client_id),
                    client_host: s(&m.client_host),
                    metadata: bytes::Bytes::new(),
                    assignment: bytes::Bytes::new(),
                    member_epoch: Some(m.member_epoch),
                    // KIP-1099: 0 classic, 1 consumer (-1: an older broker).
                    member_type: Some(match m.member_type {
                        0 => "classic",
                        _ => "consumer",
                    }),
                    assigned: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .flat_map(|t| {
                            t.partitions
                                .iter()
                                .map(|p| TopicPartition::new(t.topic_name.0.to_string(), *p))
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    /// Delete an empty consumer group (and its committed offsets).
    ///
    /// # Errors
    /// NON_EMPTY_GROUP while members remain; GROUP_ID_NOT_FOUND.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        use kafka_protocol::messages::{DeleteGroupsRequest, GroupId};
        let coordinator = self
            .find_coordinator(crate::coordinator::CoordinatorKind::Group, group)
            .await?;
        let req = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let resp = self
            .send_to(coordinator, Lane::Control, &req, Duration::ZERO)
            .await?;
        for r in &resp.results {
            crate::error::check_code(ApiKey::DeleteGroups, r.error_code)?;
        }
        Ok(())
    }

    /// The configs of a topic, broker or group.
    ///
    /// # Errors
    /// Broker errors naming the resource.
    pub async fn describe_configs(&self, resource: &ConfigResource) -> Result<Vec<ConfigEntry>> {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_protocol::messages::DescribeConfigsRequest;
        let (kind, name) = resource.wire();
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(name.clone())),
        ]);
        let broker = match resource {
            ConfigResource::Broker(id) => *id,
            ConfigResource::Topic(_) | ConfigResource::Group(_) => {
                self.any_connection(Lane::Control).await?.info().broker_id
            }
        };
        let resp = self
            .send_to(broker, Lane::Control, &req, Duration::ZERO)
            .await?;
        let r = resp.results.into_iter().next().ok_or_else(|| {
            Error::Metadata(format!("DescribeConfigs returned nothing for {name}"))
        })?;
        check_topic_code(
            ApiKey::DescribeConfigs,
            r.error_code,
            &name,
            r.error_message.as_ref(),
        )?;
        Ok(r.configs
            .iter()
            .map(|c| ConfigEntry {
                name: s(&c.name),
                value: c.value.as_ref().map(s),
                read_only: c.read_only,
                // config_source 1 = dynamic topic config, 2/3/4 = dynamic broker configs
                is_override: matches!(c.config_source, 1..=4),
            })
            .collect())
    }

    /// Set (`Some`) or delete (`None`) configs on a resource
    /// (IncrementalAlterConfigs). A broker's configs go to that broker
    /// (it refuses another's id: INVALID_REQUEST "Unexpected broker id");
    /// a topic's or group's to any broker.
    ///
    /// # Errors
    /// INVALID_CONFIG and friends, naming the resource.
    pub async fn alter_configs(
        &self,
        resource: &ConfigResource,
        changes: &[(&str, Option<&str>)],
    ) -> Result<()> {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        let (kind, name) = resource.wire();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(name.clone()))
                .with_configs(
                    changes
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_config_operation(if v.is_some() { 0 } else { 1 })
                                .with_value(v.map(|v| StrBytes::from_string(v.to_string())))
                        })
                        .collect(),
                ),
        ]);
        let conn = match resource {
            ConfigResource::Broker(id) => self.connection(*id, Lane::Control).await?,
            ConfigResource::Topic(_) | ConfigResource::Group(_) => {
                self.any_connection(Lane::Control).await?
            }
        };
        let resp = conn
            .send(&req, self.config().request_timeout, Duration::ZERO)
            .await?;
        for r in &resp.responses {
            check_topic_code(
                ApiKey::IncrementalAlterConfigs,
                r.error_code,
                &name,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }
}

/// A request-wide (or group-wide) error code as an [`Error::Broker`]
/// without a topic, with the broker's message (it often names the cause:
/// "Group g is not a share group."); `Ok` for no error. Shared by the
/// admin submodules.
fn request_wide(api: ApiKey, code: i16, message: Option<&StrBytes>) -> Result<()> {
    match KafkaCode::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::broker_with_message(
            api,
            code,
            None,
            message.map(|m| m.as_str()),
        )),
    }
}
