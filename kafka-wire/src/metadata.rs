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
//!
//! Besides Metadata responses, the cache takes [`LeaderHints`] (KIP-951):
//! a Fetch (v16+) or Produce (v10+) answer refusing a partition with
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names the partition's
//! current leader and epoch, and the endpoints of those leaders. Applied
//! at once ([`Metadata::apply_leader_hints`]), the next request goes to the
//! new leader with no Metadata round trip, under the same invariant: a
//! hint moves a partition only to a newer leader epoch.

use std::collections::{HashMap, HashSet};

use kafka_protocol::messages::MetadataResponse;

use crate::connector::BrokerAddress;
use crate::error::KafkaCode;
use crate::topic_partition::TopicPartition;

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

/// One partition's new leader, as a broker named it in a response
/// (KIP-951: `current_leader` in Fetch v16+ and Produce v10+ answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    pub tp: TopicPartition,
    /// The new leader's node id.
    pub leader: i32,
    pub leader_epoch: i32,
}

/// The leader hints of one response, with the endpoints it sent for the
/// nodes they name (`node_endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderHints {
    pub partitions: Vec<LeaderHint>,
    pub nodes: Vec<BrokerInfo>,
}

impl LeaderHints {
    /// No partition hint (endpoints alone change nothing).
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Note `tp`'s `current_leader`. An incomplete one (leader or epoch
    /// -1: the broker does not know, or predates KIP-951) is no hint and
    /// is left out; returns whether it was kept.
    pub fn push(&mut self, tp: TopicPartition, leader: i32, leader_epoch: i32) -> bool {
        let complete = leader >= 0 && leader_epoch >= 0;
        if complete {
            self.partitions.push(LeaderHint {
                tp,
                leader,
                leader_epoch,
            });
        }
        complete
    }

    /// Note one of `node_endpoints` (left out if `port` is no port).
    pub fn push_node(&mut self, id: i32, host: &str, port: i32, rack: Option<&str>) {
        let Ok(port) = u16::try_from(port) else {
            return;
        };
        self.nodes.push(BrokerInfo {
            id,
            address: BrokerAddress {
                host: host.to_string(),
                port,
            },
            rack: rack.map(str::to_string),
        });
    }
}

/// What [`Metadata::apply_leader_hints`] did with each hint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintsApplied {
    /// Partitions now led by the hinted leader at the hinted epoch.
    pub moved: Vec<TopicPartition>,
    /// Hints that could not be used: the partition is not in the cache, or
    /// the hinted leader is a node with no known endpoint. Their metadata
    /// must be refreshed. (A hint whose epoch is not newer than the cached
    /// one is in neither list: the cache knows better already.)
    pub unusable: Vec<TopicPartition>,
}

impl HintsApplied {
    /// The topics of the unusable hints, sorted, without duplicates.
    pub fn topics_to_refresh(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.unusable.iter().map(|tp| tp.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    }
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
        // Linear in the response: a set of the names seen (a full refresh
        // of a 50k-topic cluster was 1.25·10⁹ string compares with a Vec),
        // and each partition's previous state found by binary search in
        // the cached topic's sorted partitions.
        let mut seen = HashSet::with_capacity(if full { resp.topics.len() } else { 0 });
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if full {
                seen.insert(name.clone());
            }
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
                    let prev = old
                        .partitions
                        .binary_search_by_key(&p.partition, |o| o.partition)
                        .ok()
                        .map(|i| &old.partitions[i]);
                    if let Some(prev) = prev {
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
            self.topics.retain(|name, _| seen.contains(name.as_str()));
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

    /// Apply leader hints from a Fetch or Produce response (KIP-951) without
    /// a Metadata round trip, as Java's `Metadata.updatePartitionLeadership`:
    /// a hinted partition moves to the hinted leader only when the hint's
    /// leader epoch is newer than the cached one (so a stale hint, or one a
    /// refresh already brought, changes nothing), the partition is cached,
    /// and the leader's endpoint is known (cached, or among the hint's
    /// `nodes`). When something moved, the hint's `nodes` are added to the
    /// brokers, replacing a cached endpoint of the same id. Replicas and
    /// ISR stay as cached until the next refresh.
    pub fn apply_leader_hints(&mut self, hints: &LeaderHints) -> HintsApplied {
        let mut applied = HintsApplied::default();
        let known =
            |id: i32| self.brokers.contains_key(&id) || hints.nodes.iter().any(|n| n.id == id);
        let mut moves = Vec::new();
        for h in &hints.partitions {
            let Some(cached) = self.partition(&h.tp.topic, h.tp.partition) else {
                applied.unusable.push(h.tp.clone());
                continue;
            };
            if h.leader_epoch <= cached.leader_epoch {
                continue; // not newer: the cache knows as much or more
            }
            if !known(h.leader) {
                applied.unusable.push(h.tp.clone());
                continue;
            }
            moves.push(h);
        }
        if moves.is_empty() {
            return applied;
        }
        for n in &hints.nodes {
            self.brokers.insert(n.id, n.clone());
        }
        for h in moves {
            let p = self.topics.get_mut(&h.tp.topic).and_then(|t| {
                t.partitions
                    .iter_mut()
                    .find(|p| p.partition == h.tp.partition)
            });
            if let Some(p) = p {
                p.leader = h.leader;
                p.leader_epoch = h.leader_epoch;
                applied.moved.push(h.tp.clone());
            }
        }
        applied
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

    /// A full refresh of 50,000 topics, and a topic of 100,000 partitions,
    /// each merged over a cache that already holds them: with a `Vec` of
    /// seen names and a linear search per partition this was ~6·10⁹
    /// comparisons (minutes in a debug build); linear, it is a blink.
    #[test]
    fn merging_a_large_cluster_is_linear() {
        let topics: Vec<MetadataResponseTopic> = (0..50_000)
            .map(|i| {
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(format!("t{i}")))))
                    .with_partitions(vec![MetadataResponsePartition::default()])
            })
            .chain(std::iter::once(
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("wide"))))
                    .with_partitions(
                        (0..100_000)
                            .rev()
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_epoch(3)
                            })
                            .collect(),
                    ),
            ))
            .collect();
        let resp = MetadataResponse::default().with_topics(topics);
        let mut m = Metadata::default();
        m.merge(&resp, true);
        m.merge(&resp, true);
        assert_eq!(m.topics.len(), 50_001);
        assert_eq!(m.partition_count("wide"), Some(100_000));
        assert_eq!(m.partition("wide", 99_999).unwrap().leader_epoch, 3);
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

    fn broker(id: i32, port: u16) -> BrokerInfo {
        BrokerInfo {
            id,
            address: BrokerAddress {
                host: "127.0.0.1".into(),
                port,
            },
            rack: None,
        }
    }

    fn hint(leader: i32, epoch: i32) -> LeaderHints {
        let mut h = LeaderHints::default();
        assert!(h.push(TopicPartition::new("t", 0), leader, epoch));
        h
    }

    #[test]
    fn a_hint_with_a_newer_epoch_moves_the_partition() {
        let mut m = Metadata::default();
        m.merge(&response(1, 5), true);
        m.brokers.insert(2, broker(2, 9093));
        let applied = m.apply_leader_hints(&hint(2, 6));
        assert_eq!(applied.moved, vec![TopicPartition::new("t", 0)]);
        assert!(applied.unusable.is_empty());
        let p = m.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (2, 6));
        assert_eq!(m.leader("t", 0).unwrap().id, 2);
    }

    #[test]
    fn a_hint_with_an_older_or_equal_epoch_is_ignored() {
        let mut m = Metadata::default();
        m.merge(&response(1, 5), true);
        m.brokers.insert(2, broker(2, 9093));
        for epoch in [4, 5] {
            let applied = m.apply_leader_hints(&hint(2, epoch));
            assert_eq!(applied, HintsApplied::default(), "epoch {epoch}");
            let p = m.partition("t", 0).unwrap();
            assert_eq!((p.leader, p.leader_epoch), (1, 5));
        }
        // And a refresh from a lagging broker cannot undo an applied hint.
        m.apply_leader_hints(&hint(2, 6));
        m.merge(&response(1, 5), false);
        assert_eq!(m.partition("t", 0).unwrap().leader, 2);
    }

    #[test]
    fn an_unknown_leaders_endpoint_comes_with_the_hint() {
        let mut m = Metadata::default();
        m.merge(&response(1, 5), true);
        let mut h = hint(3, 6);
        h.push_node(3, "10.0.0.3", 9094, Some("r3"));
        let applied = m.apply_leader_hints(&h);
        assert_eq!(applied.moved, vec![TopicPartition::new("t", 0)]);
        let b = m.leader("t", 0).expect("node 3 added to the brokers");
        assert_eq!(
            (b.id, b.address.port, b.rack.as_deref()),
            (3, 9094, Some("r3"))
        );
    }

    #[test]
    fn a_hint_naming_a_node_without_an_endpoint_or_an_uncached_partition_asks_for_a_refresh() {
        let mut m = Metadata::default();
        m.merge(&response(1, 5), true);
        let mut h = hint(3, 6); // node 3: no endpoint anywhere
        h.push(TopicPartition::new("other", 0), 1, 9);
        let applied = m.apply_leader_hints(&h);
        assert!(applied.moved.is_empty());
        assert_eq!(
            applied.topics_to_refresh(),
            vec!["other".to_string(), "t".to_string()]
        );
        assert_eq!(m.partition("t", 0).unwrap().leader, 1);
        assert!(!m.brokers.contains_key(&3));
    }

    #[test]
    fn an_incomplete_current_leader_is_no_hint() {
        let mut h = LeaderHints::default();
        assert!(!h.push(TopicPartition::new("t", 0), -1, 6));
        assert!(!h.push(TopicPartition::new("t", 0), 2, -1));
        assert!(h.is_empty());
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
