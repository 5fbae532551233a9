//! The metadata cache: brokers, topics, partition leaders and leader epochs.
//!
//! Pure data. [`crate::client::Client`] decides when to refresh (on
//! NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, connection loss,
//! stale epochs, and every `metadata.max.age.ms`) and coalesces concurrent
//! refreshes; this module only merges responses.
//!
//! Invariant: a partition's leader epoch never goes backwards in the cache.
//! A response from a broker that lags behind (KIP-320) cannot undo newer
//! leadership we already know about.

use std::collections::HashMap;

use kafka_protocol::messages::MetadataResponse;

use crate::connector::BrokerAddress;
use crate::error::KafkaCode;

/// One broker as metadata advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub address: BrokerAddress,
    pub rack: Option<String>,
}

/// One partition's leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// -1 when there is no leader right now.
    pub leader: i32,
    /// -1 when the broker does not report epochs.
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error: Option<KafkaCode>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: [u8; 16],
    pub is_internal: bool,
    pub error: Option<KafkaCode>,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionInfo>,
}

/// A snapshot of cluster metadata.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: HashMap<i32, BrokerInfo>,
    pub topics: HashMap<String, TopicInfo>,
}

impl Metadata {
    /// Merge a response. With `full`, topics absent from it are forgotten
    /// (they were deleted); otherwise only the topics it names change.
    pub fn merge(&mut self, resp: &MetadataResponse, full: bool) {
        self.cluster_id = resp.cluster_id.as_ref().map(|s| s.to_string());
        self.controller_id = resp.controller_id.0;
        if !resp.brokers.is_empty() {
            self.brokers = resp
                .brokers
                .iter()
                .filter_map(|b| {
                    Some((
                        b.node_id.0,
                        BrokerInfo {
                            id: b.node_id.0,
                            address: BrokerAddress {
                                host: b.host.to_string(),
                                port: u16::try_from(b.port).ok()?,
                            },
                            rack: b.rack.as_ref().map(|r| r.to_string()),
                        },
                    ))
                })
                .collect();
        }
        let mut seen = Vec::new();
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            seen.push(name.clone());
            let error = KafkaCode::try_from_code(t.error_code);
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    error: KafkaCode::try_from_code(p.error_code),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            if let Some(old) = self.topics.get(&name) {
                // Never let a lagging broker move a leader epoch backwards.
                for p in &mut partitions {
                    if let Some(prev) = old.partitions.iter().find(|o| o.partition == p.partition) {
                        if p.leader_epoch >= 0 && prev.leader_epoch > p.leader_epoch {
                            *p = prev.clone();
                        }
                    }
                }
            }
            if error == Some(KafkaCode::UnknownTopicOrPartition) {
                self.topics.remove(&name);
                continue;
            }
            self.topics.insert(
                name.clone(),
                TopicInfo {
                    name,
                    id: *t.topic_id.as_bytes(),
                    is_internal: t.is_internal,
                    error,
                    partitions,
                },
            );
        }
        if full {
            self.topics.retain(|name, _| seen.contains(name));
        }
    }

    /// The leader of `topic`-`partition`, if known and alive in the broker list.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<&BrokerInfo> {
        let p = self.partition(topic, partition)?;
        self.brokers.get(&p.leader)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        self.topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }

    /// Number of partitions of `topic`, if known.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).map(|t| t.partitions.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn response(leader: i32, epoch: i32) -> MetadataResponse {
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(BrokerId(leader))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092)])
            .with_topics(vec![MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                .with_partitions(vec![MetadataResponsePartition::default()
                    .with_partition_index(0)
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch)])])
    }

    #[test]
    fn leader_epoch_never_goes_backwards() {
        let mut m = Metadata::default();
        m.merge(&response(1, 5), true);
        assert_eq!(m.partition("t", 0).unwrap().leader_epoch, 5);
        m.merge(&response(2, 4), false); // stale answer from a lagging broker
        let p = m.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (1, 5));
        m.merge(&response(2, 6), false);
        assert_eq!(m.partition("t", 0).unwrap().leader, 2);
    }

    #[test]
    fn full_refresh_forgets_deleted_topics() {
        let mut m = Metadata::default();
        m.merge(&response(1, 0), true);
        assert!(m.topics.contains_key("t"));
        m.merge(&MetadataResponse::default(), true);
        assert!(m.topics.is_empty());
    }
}
