//! `sticky` and `cooperative-sticky`: balanced assignments that move as few
//! partitions as possible between generations.
//!
//! The algorithm (shared by both):
//! 1. Keep each partition with the member that owned it, if that member is
//!    still subscribed to its topic. When two members claim one partition,
//!    the higher generation wins (a zombie's stale claim loses).
//! 2. Give every unowned partition to the eligible member with the fewest.
//! 3. While some member has two more partitions than another member that
//!    could take one of them, move one. Only over-full members lose
//!    partitions, so the movement is the minimum balance requires.
//!
//! Rack-aware (KIP-881, [`super::rack`]): with members' racks and replicas'
//! racks known, the partitions are then placed again with every member's
//! count kept: an owner keeps what it may keep when its rack holds a
//! replica (or racks say nothing); a partition owned in the wrong rack, or
//! not owned, goes to a member in a replica's rack where the counts allow;
//! anything else stays where steps 1-3 put it when it can. As Java's:
//! balance, then racks, then stickiness, except that an owner in the right
//! rack is never moved for racks.
//!
//! `cooperative-sticky` (KIP-429) then withholds every partition that
//! changes owner: its old owner sees it missing and revokes it, and the
//! follow-up rebalance hands it to the new owner. Nobody stops consuming the
//! partitions that stay.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::rack::{member_rack, mismatched, Capacity, Part, Problem, RackIds};
use super::{
    empty_assignment, sorted_members, subscribed_partitions, Assignor, GroupAssignment, Member,
    RebalanceProtocol, ReplicaRacks,
};
use crate::protocol::OwnedPartitions;
use crate::tp::TopicPartition;

#[derive(Debug, Clone, Copy, Default)]
pub struct StickyAssignor;

#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

/// Java's `StickyAssignor` user data (v1): the previous assignment and its
/// generation, so Java leaders and ours can read each other's state.
/// Schema: `[topic: string, partitions: [i32]]`, then `generation: i32`.
pub(super) fn encode_sticky_user_data(owned: &[TopicPartition], generation: i32) -> Bytes {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in owned {
        by_topic.entry(&tp.topic).or_default().push(tp.partition);
    }
    let mut b = BytesMut::new();
    b.put_i32(by_topic.len() as i32);
    for (topic, parts) in by_topic {
        b.put_i16(topic.len() as i16);
        b.put_slice(topic.as_bytes());
        b.put_i32(parts.len() as i32);
        for p in parts {
            b.put_i32(p);
        }
    }
    b.put_i32(generation);
    b.freeze()
}

/// Decode Java's sticky user data; `None` when absent or malformed (then
/// the member simply has no claims). Each topic's name is kept once
/// ([`OwnedPartitions`]), and a topic's partition count is checked
/// against the bytes left before anything is read: the claims take memory
/// proportional to the bytes.
pub(super) fn decode_sticky_user_data(data: &Bytes) -> Option<(OwnedPartitions, i32)> {
    let mut b = data.clone();
    let mut groups: Vec<(String, Vec<i32>)> = Vec::new();
    if b.remaining() < 4 {
        return None;
    }
    let topics = b.get_i32();
    if topics < 0 || topics as usize > b.remaining() {
        return None;
    }
    for _ in 0..topics {
        if b.remaining() < 2 {
            return None;
        }
        let len = b.get_i16();
        // A name past Kafka's limit is no topic: each of its partitions
        // would copy it (see `protocol::MAX_TOPIC_NAME_LEN`).
        if len < 0
            || len as usize > crate::protocol::MAX_TOPIC_NAME_LEN
            || b.remaining() < len as usize + 4
        {
            return None;
        }
        let topic = String::from_utf8(b.split_to(len as usize).to_vec()).ok()?;
        let n = b.get_i32();
        if n < 0 || b.remaining() / 4 < n as usize {
            return None;
        }
        let partitions = (0..n).map(|_| b.get_i32()).collect();
        groups.push((topic, partitions));
    }
    let generation = if b.remaining() >= 4 { b.get_i32() } else { -1 };
    let owned =
        OwnedPartitions::from_groups(groups.iter().map(|(t, ps)| (t.as_str(), ps.as_slice())));
    Some((owned, generation))
}

/// What a member says it owns: subscription v1+ owned partitions, else
/// Java-style sticky user data.
fn claims(m: &Member) -> (Cow<'_, OwnedPartitions>, i32) {
    let s = &m.subscription;
    if !s.owned.is_empty() {
        return (Cow::Borrowed(&s.owned), s.generation);
    }
    s.user_data
        .as_ref()
        .and_then(decode_sticky_user_data)
        .map_or(
            (Cow::Owned(OwnedPartitions::default()), s.generation),
            |(o, g)| (Cow::Owned(o), g),
        )
}

/// Each claimed partition's previous owner: of every member claiming it,
/// the one with the highest generation (a zombie's stale claim, or a claim
/// without a generation, loses to the live owner's; on a tie the first in
/// member order wins, so a duplicate claim never splits a partition). A
/// claim's subscription is not looked at here: an owner that left the
/// topic still has to revoke it before anyone else gets it (cooperative).
///
/// Only claims on partitions of `all` (sorted: the partitions being
/// assigned) count; the others (a topic nobody subscribes to, a partition
/// that does not exist) could change nothing, and are never materialised,
/// so the map holds at most `all.len()` entries whatever members claim.
fn previous_owners<'m>(
    sorted: &[&'m Member],
    all: &[TopicPartition],
) -> BTreeMap<TopicPartition, (i32, &'m Member)> {
    let mut owner: BTreeMap<TopicPartition, (i32, &'m Member)> = BTreeMap::new();
    for m in sorted {
        let (owned, generation) = claims(m);
        for (topic, partition) in owned.iter() {
            let Ok(i) = all
                .binary_search_by(|tp| (tp.topic.as_str(), tp.partition).cmp(&(topic, partition)))
            else {
                continue;
            };
            match owner.get(&all[i]) {
                Some((g, _)) if *g >= generation => {}
                _ => {
                    owner.insert(all[i].clone(), (generation, m));
                }
            }
        }
    }
    owner
}

/// The balanced, sticky assignment (steps 1–3 above, then racks), and the
/// previous owners it started from ([`previous_owners`]).
fn sticky_assign<'m>(
    members: &'m [Member],
    partitions_per_topic: &BTreeMap<String, i32>,
    racks: &ReplicaRacks,
) -> (GroupAssignment, BTreeMap<TopicPartition, (i32, &'m Member)>) {
    let mut out = empty_assignment(members);
    let sorted = sorted_members(members);
    let all = subscribed_partitions(members, partitions_per_topic);
    let eligible = |m: &Member, tp: &TopicPartition| m.subscription.topics.contains(&tp.topic);
    let by_id: HashMap<&str, &Member> = members.iter().map(|m| (m.member_id.as_str(), m)).collect();

    // 1. Keep previous owners that still exist and are still subscribed.
    let previous = previous_owners(&sorted, &all);
    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for (tp, (_, m)) in &previous {
        if all.binary_search(tp).is_ok() && eligible(m, tp) {
            owner.insert(tp, &m.member_id);
        }
    }
    for (tp, id) in &owner {
        out.get_mut(*id).expect("member").push((*tp).clone());
    }

    // 2. Unowned partitions to the eligible member with the fewest.
    for tp in all.iter().filter(|tp| !owner.contains_key(tp)) {
        let target = sorted
            .iter()
            .filter(|m| eligible(m, tp))
            .min_by_key(|m| out[&m.member_id].len());
        if let Some(m) = target {
            out.get_mut(&m.member_id).expect("member").push(tp.clone());
        }
    }

    // 3. Move from the fullest to the emptiest eligible member until balanced.
    loop {
        let mut best: Option<(String, String, TopicPartition)> = None;
        let mut best_gap = 1;
        for from in &sorted {
            for to in &sorted {
                let gap = out[&from.member_id].len() as i64 - out[&to.member_id].len() as i64;
                if gap <= best_gap {
                    continue;
                }
                // Move the highest partition `to` can take (deterministic).
                if let Some(tp) = out[&from.member_id]
                    .iter()
                    .filter(|tp| eligible(by_id[to.member_id.as_str()], tp))
                    .max()
                {
                    best_gap = gap;
                    best = Some((from.member_id.clone(), to.member_id.clone(), tp.clone()));
                }
            }
        }
        let Some((from, to, tp)) = best else { break };
        out.get_mut(&from).expect("member").retain(|x| *x != tp);
        out.get_mut(&to).expect("member").push(tp);
    }
    if !racks.is_empty() {
        place_by_rack(&sorted, &all, &owner, &mut out, racks);
    }
    for parts in out.values_mut() {
        parts.sort();
    }
    (out, previous)
}

/// Place `all` again by rack ([`super::rack`]), each member keeping the
/// count `out` gives it; `kept` is step 1's owner of each partition. `out`
/// stays as it is when racks cannot improve it.
fn place_by_rack(
    sorted: &[&Member],
    all: &[TopicPartition],
    kept: &BTreeMap<&TopicPartition, &str>,
    out: &mut GroupAssignment,
    racks: &ReplicaRacks,
) {
    // One index per member id (the first listed, as `out` has one entry).
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut members: Vec<&Member> = Vec::new();
    for m in sorted {
        if !index.contains_key(m.member_id.as_str()) {
            index.insert(&m.member_id, members.len());
            members.push(m);
        }
    }
    let ids = RackIds::new(members.iter().map(|m| member_rack(m)));
    if ids.is_empty() {
        return;
    }
    let mut lists: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
    let mut list_of_topic: BTreeMap<&str, usize> = BTreeMap::new();
    let mut baseline: BTreeMap<&TopicPartition, usize> = BTreeMap::new();
    for (id, parts) in out.iter() {
        for tp in parts {
            baseline.insert(tp, index[id.as_str()]);
        }
    }
    let mut parts = Vec::with_capacity(all.len());
    for tp in all {
        let eligible = match list_of_topic.get(tp.topic.as_str()) {
            Some(&e) => e,
            None => {
                let list: Vec<usize> = (0..members.len())
                    .filter(|&i| members[i].subscription.topics.contains(&tp.topic))
                    .collect();
                let next = lists.len();
                let e = *lists.entry(list).or_insert(next);
                list_of_topic.insert(&tp.topic, e);
                e
            }
        };
        let home = kept
            .get(tp)
            .map(|id| index[id])
            .filter(|&h| members[h].subscription.topics.contains(&tp.topic));
        let Some(&baseline) = baseline.get(tp) else {
            return; // steps 1-3 assign every partition; keep theirs if not
        };
        parts.push(Part {
            eligible,
            racks: ids.weights(racks.of(tp)),
            home,
            home_first: home.is_some_and(|h| !mismatched(members[h], racks.of(tp))),
            baseline,
        });
    }
    let mut eligible = vec![Vec::new(); lists.len()];
    for (list, e) in lists {
        eligible[e] = list;
    }
    let problem = Problem {
        member_racks: members.iter().map(|m| ids.id(member_rack(m))).collect(),
        eligible,
        parts,
        capacity: Capacity::Exact(
            members
                .iter()
                .map(|m| out[m.member_id.as_str()].len())
                .collect(),
        ),
    };
    if !problem.worth_solving() {
        return;
    }
    let Some(placed) = problem.solve() else {
        return;
    };
    for parts in out.values_mut() {
        parts.clear();
    }
    for (tp, m) in all.iter().zip(placed) {
        out.get_mut(&members[m].member_id)
            .expect("member")
            .push(tp.clone());
    }
}

impl Assignor for StickyAssignor {
    fn name(&self) -> &'static str {
        "sticky"
    }

    fn subscription_user_data(&self, owned: &[TopicPartition], generation: i32) -> Option<Bytes> {
        Some(encode_sticky_user_data(owned, generation))
    }

    fn assign(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        self.assign_with_racks(members, partitions_per_topic, &ReplicaRacks::new())
    }

    fn assign_with_racks(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
        racks: &ReplicaRacks,
    ) -> GroupAssignment {
        sticky_assign(members, partitions_per_topic, racks).0
    }
}

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &'static str {
        "cooperative-sticky"
    }

    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn subscription_user_data(&self, _owned: &[TopicPartition], generation: i32) -> Option<Bytes> {
        // Java's CooperativeStickyAssignor user data: just the generation.
        let mut b = BytesMut::new();
        b.put_i32(generation);
        Some(b.freeze())
    }

    fn assign(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        self.assign_with_racks(members, partitions_per_topic, &ReplicaRacks::new())
    }

    fn assign_with_racks(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
        racks: &ReplicaRacks,
    ) -> GroupAssignment {
        let (mut out, previous) = sticky_assign(members, partitions_per_topic, racks);
        // Withhold partitions that change owner: revoke first, assign next
        // round. The owner is the one step 1 settled on: a stale or
        // duplicate claim must not withhold a partition from its live
        // owner, or nobody would get it (KAFKA-12984, KAFKA-13406).
        for (member, parts) in out.iter_mut() {
            parts.retain(|tp| match previous.get(tp) {
                Some((_, prev)) => prev.member_id == *member,
                None => true,
            });
        }
        out
    }
}
