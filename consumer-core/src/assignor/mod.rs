//! Partition assignors: pure, deterministic, behind one small trait.
//!
//! The group leader runs the assignor chosen by the group over every
//! member's [`Subscription`]. Users can plug in their own by implementing
//! [`Assignor`]. Built in, with the Java client's protocol names so mixed
//! groups agree on them:
//!
//! | name | protocol | behaviour |
//! |---|---|---|
//! | `range` | eager | per topic, contiguous ranges in member order |
//! | `roundrobin` | eager | all partitions dealt round the members |
//! | `sticky` | eager | balanced, moving as little as possible |
//! | `cooperative-sticky` | cooperative (KIP-429) | as sticky, but a moving partition is first only revoked |
//!
//! Rack-aware (KIP-881): when members send `client.rack` (subscription v3)
//! and the leader knows its replicas' racks ([`ReplicaRacks`], from
//! metadata), `range`, `sticky` and `cooperative-sticky` place partitions
//! on members in a rack that holds a replica, as Java's do, without
//! changing the balance or taking a partition from an owner in a right
//! rack (`rack.rs`). With no racks on either side the assignment is the
//! rack-oblivious one. `roundrobin` ignores racks, as Java's does.

mod rack;
mod range;
mod roundrobin;
mod sticky;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

pub use rack::ReplicaRacks;
pub use range::RangeAssignor;
pub use roundrobin::RoundRobinAssignor;
pub use sticky::{CooperativeStickyAssignor, StickyAssignor};

use crate::protocol::Subscription;
use crate::tp::TopicPartition;

/// Eager: every member revokes everything at each rebalance. Cooperative:
/// members keep what they still own and revoke only what moves (KIP-429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    Eager,
    Cooperative,
}

/// One member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub subscription: Subscription,
}

impl Member {
    /// The order Java's assignors use: `group.instance.id` when the member
    /// is static, else its member id (so static members keep their place).
    fn sort_key(&self) -> (&str, &str) {
        (
            self.group_instance_id.as_deref().unwrap_or(&self.member_id),
            &self.member_id,
        )
    }
}

/// member id → its partitions (sorted).
pub type GroupAssignment = BTreeMap<String, Vec<TopicPartition>>;

/// Decides which member consumes which partition.
pub trait Assignor: Send + Sync + fmt::Debug {
    /// The protocol name sent in JoinGroup (must match other clients').
    fn name(&self) -> &'static str;

    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// User data this member adds to its subscription (e.g. sticky state).
    fn subscription_user_data(&self, _owned: &[TopicPartition], _generation: i32) -> Option<Bytes> {
        None
    }

    /// Assign every partition of `partitions_per_topic` that some member
    /// subscribes to, to exactly one subscribed member. Every member gets an
    /// entry, possibly empty.
    fn assign(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
    ) -> GroupAssignment;

    /// [`assign`](Self::assign), knowing which racks hold each partition's
    /// replicas (KIP-881); each member's rack is in its subscription. The
    /// group leader calls this one. By default the racks are ignored.
    fn assign_with_racks(
        &self,
        members: &[Member],
        partitions_per_topic: &BTreeMap<String, i32>,
        racks: &ReplicaRacks,
    ) -> GroupAssignment {
        let _ = racks;
        self.assign(members, partitions_per_topic)
    }
}

/// Members sorted by [`Member::sort_key`].
fn sorted_members(members: &[Member]) -> Vec<&Member> {
    let mut v: Vec<&Member> = members.iter().collect();
    v.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    v
}

fn empty_assignment(members: &[Member]) -> GroupAssignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// Every partition some member subscribes to, sorted.
fn subscribed_partitions(
    members: &[Member],
    partitions_per_topic: &BTreeMap<String, i32>,
) -> Vec<TopicPartition> {
    let mut topics: Vec<&String> = members
        .iter()
        .flat_map(|m| &m.subscription.topics)
        .collect();
    topics.sort();
    topics.dedup();
    topics
        .into_iter()
        .filter_map(|t| partitions_per_topic.get(t).map(|&n| (t, n)))
        .flat_map(|(t, n)| (0..n).map(move |p| TopicPartition::new(t.clone(), p)))
        .collect()
}

/// The built-in assignor for a name (`partition.assignment.strategy`
/// values, Java class names accepted too).
pub fn by_name(name: &str) -> Option<Box<dyn Assignor>> {
    let short = name.rsplit('.').next().unwrap_or(name);
    Some(match short {
        "range" | "RangeAssignor" => Box::new(RangeAssignor),
        "roundrobin" | "RoundRobinAssignor" => Box::new(RoundRobinAssignor),
        "sticky" | "StickyAssignor" => Box::new(StickyAssignor),
        "cooperative-sticky" | "CooperativeStickyAssignor" => Box::new(CooperativeStickyAssignor),
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
