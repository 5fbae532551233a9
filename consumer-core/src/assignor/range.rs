//! `range`: for each topic, the members subscribed to it (in order) get
//! contiguous ranges; the first `n % members` get one extra.
//!
//! Rack-aware (KIP-881, [`super::rack`]): topics with the same subscribers
//! and the same partition count are co-partitioned (partition `i` of each
//! goes to one member), and stay so. Each such group is placed as one
//! topic whose partition `i` matches a rack once for every topic whose
//! partition `i` has a replica there. Per topic every member still gets
//! `n / members` or one more, but the extra ones may go to other members
//! than the first, and partitions to other members than their range's,
//! where that puts more of them in their member's rack. Where racks change
//! nothing, the ranges are as above.

use std::collections::BTreeMap;

use super::rack::{member_rack, Capacity, Part, Problem, RackIds};
use super::{empty_assignment, sorted_members, Assignor, GroupAssignment, Member, ReplicaRacks};
use crate::tp::TopicPartition;

#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

/// One topic's layout: its member (an index into the sorted members) per
/// partition.
struct Layout<'t> {
    topic: &'t str,
    owners: Vec<usize>,
}

impl Assignor for RangeAssignor {
    fn name(&self) -> &'static str {
        "range"
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
        let sorted = sorted_members(members);
        let mut layouts: Vec<Layout<'_>> = Vec::new();
        // (subscribers, partition count) → the layouts of those topics.
        let mut copartitioned: BTreeMap<(Vec<usize>, usize), Vec<usize>> = BTreeMap::new();
        for (topic, &n) in partitions_per_topic {
            let subscribed: Vec<usize> = (0..sorted.len())
                .filter(|&i| sorted[i].subscription.topics.contains(topic))
                .collect();
            if subscribed.is_empty() || n <= 0 {
                continue;
            }
            let n = n as usize;
            let per = n / subscribed.len();
            let extra = n % subscribed.len();
            let mut owners = Vec::with_capacity(n);
            for (i, &m) in subscribed.iter().enumerate() {
                let len = per + usize::from(i < extra);
                owners.extend(std::iter::repeat_n(m, len));
            }
            layouts.push(Layout { topic, owners });
            copartitioned
                .entry((subscribed, n))
                .or_default()
                .push(layouts.len() - 1);
        }
        if !racks.is_empty() {
            for ((subscribed, n), group) in &copartitioned {
                place_by_rack(&sorted, subscribed, *n, group, &mut layouts, racks);
            }
        }
        let mut out = empty_assignment(members);
        for layout in &layouts {
            for (p, &m) in layout.owners.iter().enumerate() {
                out.get_mut(&sorted[m].member_id)
                    .expect("every member has an entry")
                    .push(TopicPartition::new(layout.topic, p as i32));
            }
        }
        out
    }
}

/// Re-place one co-partitioned group (`group` indexes `layouts`, all with
/// `n` partitions and the members `subscribed`) by rack, if racks can
/// improve it.
fn place_by_rack(
    sorted: &[&Member],
    subscribed: &[usize],
    n: usize,
    group: &[usize],
    layouts: &mut [Layout<'_>],
    racks: &ReplicaRacks,
) {
    let ids = RackIds::new(subscribed.iter().map(|&m| member_rack(sorted[m])));
    if ids.is_empty() {
        return;
    }
    let local: BTreeMap<usize, usize> = subscribed
        .iter()
        .enumerate()
        .map(|(i, &m)| (m, i))
        .collect();
    let k = subscribed.len();
    let parts = (0..n)
        .map(|p| {
            let home = local[&layouts[group[0]].owners[p]];
            Part {
                eligible: 0,
                racks: ids.weights(
                    group
                        .iter()
                        .filter_map(|&l| racks.get(layouts[l].topic, p as i32)),
                ),
                home: Some(home),
                home_first: false,
                baseline: home,
            }
        })
        .collect();
    let problem = Problem {
        member_racks: subscribed
            .iter()
            .map(|&m| ids.id(member_rack(sorted[m])))
            .collect(),
        eligible: vec![(0..k).collect()],
        parts,
        capacity: Capacity::Range {
            base: n / k,
            extra: n % k,
            had_extra: (0..k).map(|i| i < n % k).collect(),
        },
    };
    if !problem.worth_solving() {
        return;
    }
    if let Some(placed) = problem.solve() {
        for &l in group {
            for (owner, &i) in layouts[l].owners.iter_mut().zip(&placed) {
                *owner = subscribed[i];
            }
        }
    }
}
