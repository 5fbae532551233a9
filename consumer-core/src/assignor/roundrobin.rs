//! `roundrobin`: all subscribed partitions, sorted, dealt round the sorted
//! members; a member not subscribed to a partition's topic is skipped.

use std::collections::BTreeMap;

use super::{
    empty_assignment, sorted_members, subscribed_partitions, Assignor, GroupAssignment, Member,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &'static str {
        "roundrobin"
    }

    fn assign(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let sorted = sorted_members(members);
        if sorted.is_empty() {
            return out;
        }
        let mut next = 0usize;
        for tp in subscribed_partitions(members, partitions_per_topic) {
            // Find the next member (circularly) subscribed to this topic.
            for step in 0..sorted.len() {
                let m = sorted[(next + step) % sorted.len()];
                if m.subscription.topics.contains(&tp.topic) {
                    out.get_mut(&m.member_id).expect("entry").push(tp);
                    next = (next + step + 1) % sorted.len();
                    break;
                }
            }
        }
        out
    }
}
