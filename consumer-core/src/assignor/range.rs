//! `range`: for each topic, the members subscribed to it (in order) get
//! contiguous ranges; the first `n % members` get one extra.

use std::collections::BTreeMap;

use super::{empty_assignment, sorted_members, Assignor, GroupAssignment, Member};
use crate::tp::TopicPartition;

#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
    }

    fn assign(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> GroupAssignment {
        let mut out = empty_assignment(members);
        let sorted = sorted_members(members);
        for (topic, &n) in partitions_per_topic {
            let subscribed: Vec<&&Member> = sorted
                .iter()
                .filter(|m| m.subscription.topics.contains(topic))
                .collect();
            if subscribed.is_empty() {
                continue;
            }
            let per = n as usize / subscribed.len();
            let extra = n as usize % subscribed.len();
            for (i, m) in subscribed.iter().enumerate() {
                let start = i * per + i.min(extra);
                let len = per + usize::from(i < extra);
                let parts = out
                    .get_mut(&m.member_id)
                    .expect("every member has an entry");
                parts.extend(
                    (start..start + len).map(|p| TopicPartition::new(topic.clone(), p as i32)),
                );
            }
        }
        out
    }
}
