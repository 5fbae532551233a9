//! The consumer protocol's subscription and assignment bytes (the
//! `protocol_type = "consumer"` metadata inside JoinGroup and SyncGroup).
//!
//! Byte-compatible with the Java client and librdkafka: an `i16` version,
//! then `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` at
//! that version (v0: topics and user data; v1: owned partitions; v2:
//! generation; v3: rack). Bytes from a newer version decode with the
//! highest version we know, as Java does: newer versions only append.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_wire::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_wire::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_wire::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_wire::{Decodable, Encodable, StrBytes};

use crate::tp::TopicPartition;

/// The highest consumer-protocol version we write and understand.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// Kafka's longest topic name (bytes; `Topic.MAX_NAME_LENGTH`). A member's
/// bytes naming a longer topic are malformed (a typed [`ProtocolError`]).
/// Owned partitions keep one copy of their topic's name
/// ([`OwnedPartitions`]): copied once per partition, one 32 KB "topic"
/// with 250 k owned partitions in a ~1 MiB subscription made the leader
/// allocate ~8 GB.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Refuse a topic name longer than [`MAX_TOPIC_NAME_LEN`].
fn check_topic(what: &'static str, name: &str) -> Result<(), ProtocolError> {
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(ProtocolError {
            what,
            reason: format!(
                "a topic name of {} bytes (Kafka allows {MAX_TOPIC_NAME_LEN}): not a real \
                 topic; the member sending it is broken or hostile",
                name.len()
            ),
        });
    }
    Ok(())
}

/// Why subscription or assignment bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consumer protocol {what}: {reason}")]
pub struct ProtocolError {
    pub what: &'static str,
    pub reason: String,
}

/// The partitions a member says it owns, grouped by topic: each topic's
/// name is held once (an `Arc<str>` shared by its partitions), and each
/// partition is 4 bytes, as on the wire. So decoding a member's claims
/// takes memory proportional to the bytes it sent, never "name length x
/// partition count" (DESIGN.md invariant 86).
///
/// Topics in name order, each topic's partitions sorted, without
/// duplicates: two values are equal when they claim the same partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedPartitions {
    by_topic: BTreeMap<Arc<str>, Vec<i32>>,
}

impl OwnedPartitions {
    /// How many partitions are claimed.
    pub fn len(&self) -> usize {
        self.by_topic.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_topic.values().all(Vec::is_empty)
    }

    /// Every claimed `(topic, partition)`, in order; no name is copied.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32)> + '_ {
        self.by_topic
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |&p| (&**t, p)))
    }

    /// Each topic with its claimed partitions (sorted).
    pub fn topics(&self) -> impl Iterator<Item = (&str, &[i32])> + '_ {
        self.by_topic.iter().map(|(t, ps)| (&**t, ps.as_slice()))
    }

    /// Is `tp` claimed?
    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.by_topic
            .get(tp.topic.as_str())
            .is_some_and(|ps| ps.binary_search(&tp.partition).is_ok())
    }

    /// Claim `tp` too.
    pub fn push(&mut self, tp: TopicPartition) {
        self.add(&tp.topic, tp.partition);
    }

    /// Every claim as a [`TopicPartition`] (one name copy each: for a
    /// member's own, trusted claims, not for a peer's).
    pub fn to_vec(&self) -> Vec<TopicPartition> {
        self.iter()
            .map(|(t, p)| TopicPartition::new(t, p))
            .collect()
    }

    fn add(&mut self, topic: &str, partition: i32) {
        let ps = match self.by_topic.get_mut(topic) {
            Some(ps) => ps,
            None => self.by_topic.entry(Arc::from(topic)).or_default(),
        };
        if let Err(at) = ps.binary_search(&partition) {
            ps.insert(at, partition);
        }
    }

    /// Build from wire groups `(topic, partitions)`: a topic named twice
    /// is merged (one name), partitions sorted and deduplicated.
    pub(crate) fn from_groups<'a>(groups: impl IntoIterator<Item = (&'a str, &'a [i32])>) -> Self {
        let mut by_topic: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
        for (topic, ps) in groups {
            match by_topic.get_mut(topic) {
                Some(v) => v.extend_from_slice(ps),
                None => {
                    by_topic.insert(Arc::from(topic), ps.to_vec());
                }
            }
        }
        for ps in by_topic.values_mut() {
            ps.sort_unstable();
            ps.dedup();
        }
        by_topic.retain(|_, ps| !ps.is_empty());
        OwnedPartitions { by_topic }
    }
}

impl FromIterator<TopicPartition> for OwnedPartitions {
    fn from_iter<I: IntoIterator<Item = TopicPartition>>(iter: I) -> Self {
        let mut out = OwnedPartitions::default();
        for tp in iter {
            out.push(tp);
        }
        out
    }
}

impl From<Vec<TopicPartition>> for OwnedPartitions {
    fn from(v: Vec<TopicPartition>) -> Self {
        v.into_iter().collect()
    }
}

impl From<&[TopicPartition]> for OwnedPartitions {
    fn from(v: &[TopicPartition]) -> Self {
        v.iter().cloned().collect()
    }
}

/// What a member sends in JoinGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+; cooperative rebalancing needs it).
    pub owned: OwnedPartitions,
    /// The generation those were owned in (v2+), -1 if none.
    pub generation: i32,
    pub rack: Option<String>,
}

/// What the leader hands each member in SyncGroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    pub partitions: Vec<TopicPartition>,
    pub user_data: Option<Bytes>,
}

fn group_by_topic(parts: &[TopicPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in parts {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    for ps in by_topic.values_mut() {
        ps.sort_unstable();
    }
    by_topic
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn header_version(buf: &mut Bytes, what: &'static str) -> Result<i16, ProtocolError> {
    if buf.remaining() < 2 {
        return Err(ProtocolError {
            what,
            reason: "shorter than its version header".into(),
        });
    }
    let v = buf.get_i16();
    if v < 0 {
        return Err(ProtocolError {
            what,
            reason: format!("negative version {v}"),
        });
    }
    Ok(v.min(CONSUMER_PROTOCOL_VERSION))
}

impl Subscription {
    /// Encode at `version` (use [`CONSUMER_PROTOCOL_VERSION`] unless
    /// talking to very old peers).
    pub fn encode(&self, version: i16) -> Bytes {
        let msg = ConsumerProtocolSubscription::default()
            .with_topics(
                self.topics
                    .iter()
                    .map(|t| StrBytes::from_string(t.clone()))
                    .collect(),
            )
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(if version >= 1 {
                self.owned
                    .topics()
                    .map(|(t, ps)| {
                        OwnedTopic::default()
                            .with_topic(topic_name(t))
                            .with_partitions(ps.to_vec())
                    })
                    .collect()
            } else {
                Vec::new()
            })
            .with_generation_id(if version >= 2 { self.generation } else { -1 })
            .with_rack_id(if version >= 3 {
                self.rack.as_ref().map(|r| StrBytes::from_string(r.clone()))
            } else {
                None
            });
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        msg.encode(&mut buf, version)
            .expect("a subscription built from valid fields always encodes");
        buf.freeze()
    }

    /// Decode member metadata from JoinGroup.
    ///
    /// # Errors
    /// [`ProtocolError`] for truncated or malformed bytes.
    pub fn decode(bytes: &Bytes) -> Result<Self, ProtocolError> {
        let mut buf = bytes.clone();
        let version = header_version(&mut buf, "subscription")?;
        let msg =
            ConsumerProtocolSubscription::decode(&mut buf, version).map_err(|e| ProtocolError {
                what: "subscription",
                reason: e.to_string(),
            })?;
        for t in &msg.topics {
            check_topic("subscription", t)?;
        }
        for t in &msg.owned_partitions {
            check_topic("subscription", &t.topic.0)?;
        }
        Ok(Subscription {
            topics: msg.topics.iter().map(|t| t.to_string()).collect(),
            user_data: msg.user_data,
            // One name per topic, however many partitions it claims.
            owned: OwnedPartitions::from_groups(
                msg.owned_partitions
                    .iter()
                    .map(|t| (t.topic.0.as_str(), t.partitions.as_slice())),
            ),
            generation: if version >= 2 { msg.generation_id } else { -1 },
            rack: msg.rack_id.map(|r| r.to_string()),
        })
    }
}

impl Assignment {
    pub fn encode(&self, version: i16) -> Bytes {
        let msg = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                group_by_topic(&self.partitions)
                    .into_iter()
                    .map(|(t, ps)| {
                        AssignedTopic::default()
                            .with_topic(topic_name(t))
                            .with_partitions(ps)
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        let mut buf = BytesMut::new();
        buf.put_i16(version);
        msg.encode(&mut buf, version)
            .expect("an assignment built from valid fields always encodes");
        buf.freeze()
    }

    /// Decode the assignment from SyncGroup. Empty bytes mean "nothing
    /// assigned" (a leader that failed to assign sends them).
    ///
    /// # Errors
    /// [`ProtocolError`] for truncated or malformed bytes.
    pub fn decode(bytes: &Bytes) -> Result<Self, ProtocolError> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let mut buf = bytes.clone();
        let version = header_version(&mut buf, "assignment")?;
        let msg =
            ConsumerProtocolAssignment::decode(&mut buf, version).map_err(|e| ProtocolError {
                what: "assignment",
                reason: e.to_string(),
            })?;
        for t in &msg.assigned_partitions {
            check_topic("assignment", &t.topic.0)?;
        }
        let mut partitions: Vec<TopicPartition> = msg
            .assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|&p| TopicPartition::new(t.topic.0.to_string(), p))
            })
            .collect();
        partitions.sort();
        Ok(Assignment {
            partitions,
            user_data: msg.user_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One 30 KB "topic" with 10,000 owned partitions (~70 KB of bytes)
    /// would decode into ~300 MB of names: refused, as is such a topic in
    /// the topic list or an assignment. A 249-byte name is fine.
    #[test]
    fn topic_names_longer_than_kafkas_limit_are_refused() {
        let long = "x".repeat(30_000);
        let hostile = Subscription {
            topics: vec!["t".into()],
            owned: (0..10_000)
                .map(|p| TopicPartition::new(long.clone(), p))
                .collect(),
            generation: 1,
            ..Subscription::default()
        };
        let err = Subscription::decode(&hostile.encode(CONSUMER_PROTOCOL_VERSION)).unwrap_err();
        assert!(err.reason.contains("249"), "{err}");
        let listed = Subscription {
            topics: vec![long.clone()],
            ..Subscription::default()
        };
        assert!(Subscription::decode(&listed.encode(0)).is_err());
        let assigned = Assignment {
            partitions: vec![TopicPartition::new(long, 0)],
            user_data: None,
        };
        assert!(Assignment::decode(&assigned.encode(0)).is_err());
        let longest = "y".repeat(MAX_TOPIC_NAME_LEN);
        let fine = Subscription {
            topics: vec![longest.clone()],
            owned: vec![TopicPartition::new(longest, 0)].into(),
            generation: 1,
            ..Subscription::default()
        };
        assert_eq!(
            Subscription::decode(&fine.encode(CONSUMER_PROTOCOL_VERSION)).unwrap(),
            fine
        );
    }

    /// Byte-exact against the published schema (ConsumerProtocolSubscription.json):
    /// v0 = version i16, topics [string], user_data nullable bytes.
    #[test]
    fn subscription_v0_bytes_match_the_schema() {
        let s = Subscription {
            topics: vec!["ab".into()],
            user_data: None,
            ..Subscription::default()
        };
        let expected: &[u8] = &[
            0, 0, // version 0
            0, 0, 0, 1, // 1 topic
            0, 2, b'a', b'b', // "ab"
            0xff, 0xff, 0xff, 0xff, // user_data = null
        ];
        assert_eq!(s.encode(0).as_ref(), expected);
    }

    /// v3 adds owned_partitions [topic, [i32]], generation_id i32, rack_id nullable string.
    #[test]
    fn subscription_v3_bytes_match_the_schema() {
        let s = Subscription {
            topics: vec!["t".into()],
            user_data: Some(Bytes::from_static(&[9])),
            owned: vec![TopicPartition::new("t", 2), TopicPartition::new("t", 0)].into(),
            generation: 7,
            rack: Some("r1".into()),
        };
        let expected: &[u8] = &[
            0, 3, // version
            0, 0, 0, 1, 0, 1, b't', // topics ["t"]
            0, 0, 0, 1, 9, // user_data [9]
            0, 0, 0, 1, // owned: 1 topic
            0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // "t" [0, 2]
            0, 0, 0, 7, // generation 7
            0, 2, b'r', b'1', // rack "r1"
        ];
        assert_eq!(s.encode(3).as_ref(), expected);
        let back = Subscription::decode(&s.encode(3)).unwrap();
        assert_eq!(
            back.owned.to_vec(),
            vec![TopicPartition::new("t", 0), TopicPartition::new("t", 2)]
        );
        assert_eq!(back.generation, 7);
        assert_eq!(back.rack.as_deref(), Some("r1"), "KIP-881: client.rack");
        // Below v3 there is no rack to send.
        assert_eq!(Subscription::decode(&s.encode(2)).unwrap().rack, None);
    }

    #[test]
    fn assignment_v0_bytes_match_the_schema() {
        let a = Assignment {
            partitions: vec![TopicPartition::new("t", 1)],
            user_data: None,
        };
        let expected: &[u8] = &[
            0, 0, // version
            0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 1, // [("t", [1])]
            0xff, 0xff, 0xff, 0xff, // user_data null
        ];
        assert_eq!(a.encode(0).as_ref(), expected);
    }

    #[test]
    fn newer_versions_decode_with_what_we_know() {
        let mut bytes = Subscription {
            topics: vec!["t".into()],
            ..Subscription::default()
        }
        .encode(3)
        .to_vec();
        bytes[1] = 9; // pretend a future v9 that appended fields
        bytes.extend_from_slice(&[1, 2, 3]);
        let s = Subscription::decode(&Bytes::from(bytes)).unwrap();
        assert_eq!(s.topics, vec!["t".to_string()]);
    }

    #[test]
    fn empty_assignment_means_nothing_assigned() {
        assert_eq!(
            Assignment::decode(&Bytes::new()).unwrap(),
            Assignment::default()
        );
    }

    proptest! {
        #[test]
        fn round_trips(topics in prop::collection::btree_set("[a-z]{1,6}", 0..4),
                       parts in prop::collection::btree_set(("[a-z]{1,3}", 0i32..50), 0..10),
                       generation in -1i32..1000) {
            let owned: Vec<TopicPartition> = parts.iter().map(|(t, p)| TopicPartition::new(t.clone(), *p)).collect();
            let s = Subscription { topics: topics.into_iter().collect(), user_data: None, owned: owned.clone().into(), generation, rack: None };
            let back = Subscription::decode(&s.encode(3)).unwrap();
            let mut sorted = owned.clone();
            sorted.sort();
            let got = back.owned.to_vec();
            prop_assert_eq!(got, sorted.clone());
            prop_assert_eq!(back.topics, s.topics);
            let a = Assignment { partitions: sorted.clone(), user_data: None };
            prop_assert_eq!(Assignment::decode(&a.encode(3)).unwrap().partitions, sorted);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Subscription::decode(&Bytes::from(bytes.clone()));
            let _ = Assignment::decode(&Bytes::from(bytes));
        }
    }
}
