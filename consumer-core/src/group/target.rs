//! What a broker-assigned heartbeat answers (KIP-848's
//! ConsumerGroupHeartbeat, KIP-932's ShareGroupHeartbeat: the same
//! fields), and the assignment it carries: partitions by topic id, named
//! through metadata, and the moves that reach it from what the member
//! owns: revoke first, then assign. Pure; shared by both machines
//! (`consumer_protocol/member.rs`, `share_protocol/member.rs`).
//!
//! ```text
//!  heartbeat answer: [(topic id, [partitions])] ──Target::from_wire──▶ Target
//!  metadata ──TopicIds::learn──▶ names by id
//!  Target::resolve(ids) ──▶ named partitions (+ "some id unknown": refresh metadata, keep them)
//!  moves(owned, named) ──▶ revoke owned − named, assign named − owned
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_wire::messages;
use kafka_wire::KafkaCode;

use crate::tp::TopicPartition;

/// A topic id (KIP-516), as metadata and the group heartbeats carry it.
pub(crate) type TopicId = [u8; 16];

/// An assignment as the broker sends it: partitions per topic id.
pub(crate) type TopicIdPartitions = Vec<(TopicId, Vec<i32>)>;

/// A heartbeat's answer, as the protocols decode it.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeartbeatResult {
    pub error: Option<KafkaCode>,
    pub error_message: Option<String>,
    /// The broker may assign the member id (ConsumerGroupHeartbeat v0).
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// `None`: unchanged.
    pub assignment: Option<TopicIdPartitions>,
}

impl HeartbeatResult {
    /// The answer for a heartbeat the coordinator cannot take (it does
    /// not advertise the API, or not the version needed): why.
    pub(crate) fn unsupported(why: &str) -> Self {
        Self {
            error: Some(KafkaCode::UnsupportedVersion),
            error_message: Some(why.to_string()),
            ..Self::default()
        }
    }
}

/// One line per heartbeat API: its response decodes into a
/// [`HeartbeatResult`].
macro_rules! heartbeat_answers {
    ($($resp:ident;)*) => {$(
        impl From<messages::$resp> for HeartbeatResult {
            fn from(r: messages::$resp) -> Self {
                Self {
                    error: KafkaCode::try_from_code(r.error_code),
                    error_message: r.error_message.map(|m| m.to_string()),
                    member_id: r.member_id.map(|id| id.to_string()),
                    member_epoch: r.member_epoch,
                    heartbeat_interval_ms: r.heartbeat_interval_ms,
                    assignment: r.assignment.map(|a| {
                        a.topic_partitions
                            .into_iter()
                            .map(|t| (*t.topic_id.as_bytes(), t.partitions))
                            .collect()
                    }),
                }
            }
        }
    )*};
}

heartbeat_answers! {
    ConsumerGroupHeartbeatResponse;
    ShareGroupHeartbeatResponse;
}

/// Topic names by id, and ids by name, as metadata told them.
#[derive(Debug, Default)]
pub(crate) struct TopicIds {
    names: HashMap<TopicId, String>,
    ids: HashMap<String, TopicId>,
}

impl TopicIds {
    /// `name` has id `id`. A nil id (metadata from a broker that gives
    /// none) teaches nothing.
    pub(crate) fn learn(&mut self, id: TopicId, name: &str) {
        if id != [0; 16] {
            self.names.insert(id, name.to_string());
            self.ids.insert(name.to_string(), id);
        }
    }

    /// `parts` grouped by topic id, ascending; a topic whose id is not
    /// known yet is left out.
    pub(crate) fn by_id<'a>(
        &self,
        parts: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> TopicIdPartitions {
        let mut by_id: BTreeMap<TopicId, Vec<i32>> = BTreeMap::new();
        for tp in parts {
            if let Some(id) = self.ids.get(&tp.topic) {
                by_id.entry(*id).or_default().push(tp.partition);
            }
        }
        by_id.into_iter().collect()
    }
}

/// The broker's latest assignment for one member, by topic id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Target(BTreeMap<TopicId, BTreeSet<i32>>);

impl Target {
    /// The assignment a heartbeat answer carries (a topic id named twice
    /// counts once, with both lists).
    pub(crate) fn from_wire(assignment: TopicIdPartitions) -> Self {
        let mut target: BTreeMap<TopicId, BTreeSet<i32>> = BTreeMap::new();
        for (id, parts) in assignment {
            target.entry(id).or_default().extend(parts);
        }
        Self(target)
    }

    /// The assigned partitions whose topic `ids` can name, and whether
    /// some topic id is unknown to it (then refresh metadata, and keep
    /// the target: they are assigned once named).
    pub(crate) fn resolve(&self, ids: &TopicIds) -> (BTreeSet<TopicPartition>, bool) {
        let mut named = BTreeSet::new();
        let mut unknown = false;
        for (id, parts) in &self.0 {
            match ids.names.get(id) {
                Some(name) => named.extend(parts.iter().map(|p| TopicPartition::new(name, *p))),
                None => unknown = true,
            }
        }
        (named, unknown)
    }
}

/// What reaching a target from what is owned takes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Moves {
    /// Owned, not in the target: given back first.
    pub revoke: Vec<TopicPartition>,
    /// In the target, not owned: taken once the revoke is done.
    pub assign: Vec<TopicPartition>,
}

impl Moves {
    /// Revoke `owned − target`, assign `target − owned`.
    pub(crate) fn between(
        owned: &BTreeSet<TopicPartition>,
        target: &BTreeSet<TopicPartition>,
    ) -> Self {
        Self {
            revoke: owned.difference(target).cloned().collect(),
            assign: target.difference(owned).cloned().collect(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.assign.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TopicId = [1; 16];
    const B: TopicId = [2; 16];

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn a_target_resolves_the_ids_metadata_named() {
        let mut ids = TopicIds::default();
        ids.learn(A, "a");
        ids.learn([0; 16], "no-id");
        let target = Target::from_wire(vec![(A, vec![1]), (B, vec![0]), (A, vec![0])]);
        let (named, unknown) = target.resolve(&ids);
        assert_eq!(named, BTreeSet::from([tp("a", 0), tp("a", 1)]));
        assert!(unknown, "B is not known yet");
        ids.learn(B, "b");
        assert!(!target.resolve(&ids).1);
        assert_eq!(
            ids.by_id(&[tp("b", 3), tp("a", 2), tp("no-id", 0)]),
            vec![(A, vec![2]), (B, vec![3])]
        );
    }

    #[test]
    fn moves_revoke_what_left_and_assign_what_came() {
        let owned = BTreeSet::from([tp("a", 0), tp("a", 1)]);
        let target = BTreeSet::from([tp("a", 1), tp("a", 2)]);
        let m = Moves::between(&owned, &target);
        assert_eq!(m.revoke, [tp("a", 0)]);
        assert_eq!(m.assign, [tp("a", 2)]);
        assert!(Moves::between(&owned, &owned).is_empty());
    }
}
