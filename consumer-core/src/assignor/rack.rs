//! KIP-881: rack-aware placement, shared by `range` and the sticky assignors.
//!
//! A member's rack is `client.rack`, carried in its subscription (v3). A
//! partition's racks are those of its replicas' brokers, from metadata
//! ([`ReplicaRacks`]; every replica counts, in sync or not, as in Java: a
//! consumer does not rebalance when the ISR changes). A member and a
//! partition *match* when the member's rack holds one of its replicas; the
//! member can then fetch from that replica (KIP-392) instead of across
//! racks.
//!
//! Each assignor first computes its rack-oblivious assignment, exactly as
//! before, and keeps it unless racks can tell partitions apart
//! ([`Problem::worth_solving`], Java's `useRackAwareAssignment`): with no
//! member rack, no replica rack, or every partition on the same racks, the
//! result is the rack-oblivious one, byte for byte. Otherwise the
//! placement is solved again as a transportation problem whose member
//! counts are fixed by that assignment (the balance never changes):
//!
//! ```text
//!            ┌──▶ home member (value: home-first, rack, home)
//!  source ─▶ class ─┤                                         ┌─▶ member ─▶ sink   (sticky: its count)
//!  (partitions      └──▶ hub (eligible members, rack) ───────┘         └─▶ extra ─▶ sink (range: base,
//!   alike)               (value: rack)                                   base + 1 for `extra` of them)
//! ```
//!
//! A min-cost max-flow picks the placement of highest value, compared in
//! this order:
//! 1. *home-first*: a sticky partition stays with its previous owner when
//!    that owner's rack holds a replica (or the owner has no rack, or the
//!    partition's racks are unknown): stickiness as before;
//! 2. *rack*: the number of matching pairs (range: per co-partitioned
//!    topic, so a partition index counts once for each topic it matches);
//! 3. *home*: any other partition stays with its home (sticky: the
//!    previous owner, even in the wrong rack; range: its rack-oblivious
//!    member);
//! 4. *extra* (range): a member keeps the extra partition the
//!    rack-oblivious layout gave it.
//!
//! So a rack-matched owner never loses a partition to racks, a partition in
//! the wrong rack moves only to a member in a right one, and when racks
//! cannot improve anything the rack-oblivious assignment stands. The
//! rack-oblivious assignment is itself a feasible placement, so the result
//! never has fewer matches at the same priority. Partitions that are
//! interchangeable (same eligible members, racks, home) are one node, and
//! members that are interchangeable for them (same rack, same eligibility)
//! are reached through one hub, so the graph stays small: classes × racks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::{Add, Neg};

use super::Member;
use crate::tp::TopicPartition;

/// Where each partition's replicas are, by rack: what the rack-aware
/// assignors read (KIP-881). The group leader fills it from metadata
/// (replica broker ids → `broker.rack`); a partition absent, or with no
/// racks, is one whose racks are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaRacks {
    by_topic: BTreeMap<String, BTreeMap<i32, BTreeSet<String>>>,
}

impl ReplicaRacks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record the racks of `topic`-`partition`'s replicas (empty names are
    /// skipped; no rack at all records nothing).
    pub fn insert<R: Into<String>>(
        &mut self,
        topic: impl Into<String>,
        partition: i32,
        racks: impl IntoIterator<Item = R>,
    ) {
        let racks: BTreeSet<String> = racks
            .into_iter()
            .map(Into::into)
            .filter(|r: &String| !r.is_empty())
            .collect();
        if !racks.is_empty() {
            self.by_topic
                .entry(topic.into())
                .or_default()
                .insert(partition, racks);
        }
    }

    /// The racks holding a replica of `topic`-`partition`, if known.
    pub fn get(&self, topic: &str, partition: i32) -> Option<&BTreeSet<String>> {
        self.by_topic.get(topic)?.get(&partition)
    }

    /// The racks of `tp`, if known.
    pub fn of(&self, tp: &TopicPartition) -> Option<&BTreeSet<String>> {
        self.get(&tp.topic, tp.partition)
    }

    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }
}

/// A member's rack (`client.rack`): `None` when unset or empty.
pub(super) fn member_rack(m: &Member) -> Option<&str> {
    m.subscription.rack.as_deref().filter(|r| !r.is_empty())
}

/// A partition is in the wrong rack for `member` when the member has a
/// rack and the partition's replicas are known to be elsewhere.
pub(super) fn mismatched(member: &Member, racks: Option<&BTreeSet<String>>) -> bool {
    match (member_rack(member), racks) {
        (Some(r), Some(rs)) => !rs.is_empty() && !rs.contains(r),
        _ => false,
    }
}

/// The racks of some members, numbered (only these racks can match).
#[derive(Debug, Default)]
pub(super) struct RackIds<'a> {
    ids: BTreeMap<&'a str, usize>,
}

impl<'a> RackIds<'a> {
    pub(super) fn new(racks: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut ids = BTreeMap::new();
        for r in racks.into_iter().flatten() {
            let next = ids.len();
            ids.entry(r).or_insert(next);
        }
        Self { ids }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub(super) fn id(&self, rack: Option<&str>) -> Option<usize> {
        rack.and_then(|r| self.ids.get(r).copied())
    }

    /// How many of `sets` hold each members' rack (racks no member has
    /// are left out: they can match nobody), by rack id.
    pub(super) fn weights<'s>(
        &self,
        sets: impl IntoIterator<Item = &'s BTreeSet<String>>,
    ) -> Vec<(usize, i64)> {
        let mut w: BTreeMap<usize, i64> = BTreeMap::new();
        for set in sets {
            for r in set {
                if let Some(&id) = self.ids.get(r.as_str()) {
                    *w.entry(id).or_default() += 1;
                }
            }
        }
        w.into_iter().collect()
    }
}

/// One partition (range: one index of co-partitioned topics) to place.
#[derive(Debug, Clone)]
pub(super) struct Part {
    /// Index into [`Problem::eligible`]: the members that may take it.
    pub(super) eligible: usize,
    /// Rack id → weight of a member in that rack taking it (sorted).
    pub(super) racks: Vec<(usize, i64)>,
    /// The member it stays with, other things equal.
    pub(super) home: Option<usize>,
    /// Staying home outranks racks (sticky: the owner is not in the wrong rack).
    pub(super) home_first: bool,
    /// Its member in the rack-oblivious assignment: ties between
    /// interchangeable members go its way, so little moves for nothing.
    pub(super) baseline: usize,
}

/// How many partitions each member takes: the rack-oblivious balance.
#[derive(Debug, Clone)]
pub(super) enum Capacity {
    /// Exactly this many each (the sticky assignors).
    Exact(Vec<usize>),
    /// `base` each, and one more for `extra` of them (range, per topic);
    /// `had_extra`: the rack-oblivious layout gave this member one.
    Range {
        base: usize,
        extra: usize,
        had_extra: Vec<bool>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Problem {
    /// Each member's rack id ([`RackIds::id`]).
    pub(super) member_racks: Vec<Option<usize>>,
    /// Lists of member indices, ascending.
    pub(super) eligible: Vec<Vec<usize>>,
    pub(super) parts: Vec<Part>,
    pub(super) capacity: Capacity,
}

/// A placement's value, compared lexicographically: home-first, rack,
/// home, extra (see the module doc). Costs are its negation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Cost([i64; 4]);

impl Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost(std::array::from_fn(|i| self.0[i] + o.0[i]))
    }
}

impl Neg for Cost {
    type Output = Cost;
    fn neg(self) -> Cost {
        Cost(self.0.map(|v| -v))
    }
}

#[derive(Debug)]
struct Edge {
    to: usize,
    cap: i64,
    cost: Cost,
}

/// A residual graph for min-cost max-flow by successive shortest paths
/// (Bellman-Ford with a queue: costs are negative values, and the graph as
/// built is acyclic, so no negative cycle ever appears).
#[derive(Debug, Default)]
struct Flow {
    edges: Vec<Edge>,
    adj: Vec<Vec<usize>>,
}

impl Flow {
    fn node(&mut self) -> usize {
        self.adj.push(Vec::new());
        self.adj.len() - 1
    }

    fn edge(&mut self, from: usize, to: usize, cap: i64, cost: Cost) -> usize {
        let e = self.edges.len();
        self.edges.push(Edge { to, cap, cost });
        self.edges.push(Edge {
            to: from,
            cap: 0,
            cost: -cost,
        });
        self.adj[from].push(e);
        self.adj[to].push(e + 1);
        e
    }

    /// What went through edge `e`.
    fn flow(&self, e: usize) -> i64 {
        self.edges[e ^ 1].cap
    }

    fn run(&mut self, s: usize, t: usize) -> i64 {
        let n = self.adj.len();
        let mut total = 0;
        loop {
            let mut dist: Vec<Option<Cost>> = vec![None; n];
            let mut via = vec![usize::MAX; n];
            let mut queued = vec![false; n];
            let mut queue = VecDeque::from([s]);
            dist[s] = Some(Cost::default());
            while let Some(u) = queue.pop_front() {
                queued[u] = false;
                let du = dist[u].expect("queued nodes have a distance");
                for &e in &self.adj[u] {
                    let Edge { to, cap, cost } = self.edges[e];
                    if cap > 0 && dist[to].is_none_or(|d| du + cost < d) {
                        dist[to] = Some(du + cost);
                        via[to] = e;
                        if !queued[to] {
                            queued[to] = true;
                            queue.push_back(to);
                        }
                    }
                }
            }
            if dist[t].is_none() {
                return total;
            }
            let mut push = i64::MAX;
            let mut v = t;
            while v != s {
                push = push.min(self.edges[via[v]].cap);
                v = self.edges[via[v] ^ 1].to;
            }
            let mut v = t;
            while v != s {
                let e = via[v];
                self.edges[e].cap -= push;
                self.edges[e ^ 1].cap += push;
                v = self.edges[e ^ 1].to;
            }
            total += push;
        }
    }
}

/// A hub: one eligible list (index) and one rack (or none).
type HubKey = (usize, Option<usize>);

/// The members of one eligible list in one rack, reached through one node.
#[derive(Debug)]
struct Hub {
    node: usize,
    /// (member, edge) for each of them.
    members: Vec<(usize, usize)>,
}

/// What makes partitions alike: eligible list, racks, home, home-first.
type ClassKey<'p> = (usize, &'p [(usize, i64)], Option<usize>, bool);

/// Partitions alike for the solver, and the edges they leave by.
#[derive(Debug)]
struct Class {
    parts: Vec<usize>,
    /// (member, edge) straight to the shared home.
    home: Option<(usize, usize)>,
    /// (hub, edge) for each hub of the class's eligible members.
    hubs: Vec<(HubKey, usize)>,
}

impl Problem {
    /// Whether racks can change anything: some partition is on a member's
    /// rack, and not every partition is on the same racks.
    pub(super) fn worth_solving(&self) -> bool {
        self.parts.iter().any(|p| !p.racks.is_empty())
            && self.parts.windows(2).any(|w| w[0].racks != w[1].racks)
    }

    /// The member index of each part, or `None` if the capacities cannot
    /// be met (they always can when they come from a feasible assignment;
    /// the caller then keeps that one).
    pub(super) fn solve(&self) -> Option<Vec<usize>> {
        let n = self.parts.len();
        let all = n as i64; // what a hub may pass on: no limit
        let mut g = Flow::default();
        let (s, t) = (g.node(), g.node());
        let members: Vec<usize> = self.member_racks.iter().map(|_| g.node()).collect();
        match &self.capacity {
            Capacity::Exact(caps) => {
                for (&node, &cap) in members.iter().zip(caps) {
                    g.edge(node, t, cap as i64, Cost::default());
                }
            }
            Capacity::Range {
                base,
                extra,
                had_extra,
            } => {
                let x = g.node();
                g.edge(x, t, *extra as i64, Cost::default());
                for (&node, &had) in members.iter().zip(had_extra) {
                    g.edge(node, t, *base as i64, Cost::default());
                    g.edge(node, x, 1, -Cost([0, 0, 0, i64::from(had)]));
                }
            }
        }
        // Hubs: the members of one eligible list in one rack (or none).
        let mut hubs: BTreeMap<HubKey, Hub> = BTreeMap::new();
        for (e, list) in self.eligible.iter().enumerate() {
            for &m in list {
                let hub = hubs
                    .entry((e, self.member_racks[m]))
                    .or_insert_with(|| Hub {
                        node: g.node(),
                        members: Vec::new(),
                    });
                let edge = g.edge(hub.node, members[m], all, Cost::default());
                hub.members.push((m, edge));
            }
        }
        let mut alike: BTreeMap<ClassKey<'_>, Vec<usize>> = BTreeMap::new();
        for (i, p) in self.parts.iter().enumerate() {
            alike
                .entry((p.eligible, &p.racks, p.home, p.home_first))
                .or_default()
                .push(i);
        }
        let mut classes = Vec::with_capacity(alike.len());
        for ((e, racks, home, home_first), parts) in alike {
            let weight = |rack: Option<usize>| {
                rack.and_then(|r| racks.iter().find(|(id, _)| *id == r))
                    .map_or(0, |(_, w)| *w)
            };
            let node = g.node();
            let size = parts.len() as i64;
            g.edge(s, node, size, Cost::default());
            let home = home.map(|h| {
                let value = Cost([i64::from(home_first), weight(self.member_racks[h]), 1, 0]);
                (h, g.edge(node, members[h], size, -value))
            });
            let hubs = hubs
                .range((e, None)..=(e, Some(usize::MAX)))
                .map(|(&key, hub)| {
                    let value = Cost([0, weight(key.1), 0, 0]);
                    (key, g.edge(node, hub.node, size, -value))
                })
                .collect();
            classes.push(Class { parts, home, hubs });
        }
        if g.run(s, t) != all {
            return None;
        }

        // Read the flow back as partitions, staying as close to the
        // baseline as the counts allow.
        let mut owner = vec![usize::MAX; n];
        let mut through: BTreeMap<HubKey, Vec<usize>> = BTreeMap::new();
        for class in &classes {
            let mut parts = class.parts.clone();
            if let Some((h, edge)) = class.home {
                let stay = g.flow(edge) as usize;
                parts.sort_by_key(|&i| (self.parts[i].baseline != h, i));
                for i in parts.drain(..stay.min(parts.len())) {
                    owner[i] = h;
                }
            }
            let mut left: Vec<(HubKey, i64)> = class
                .hubs
                .iter()
                .map(|&(key, e)| (key, g.flow(e)))
                .collect();
            let mut rest = Vec::new();
            for i in parts {
                let p = &self.parts[i];
                let want = (p.eligible, self.member_racks[p.baseline]);
                match left.iter_mut().find(|(key, f)| *key == want && *f > 0) {
                    Some(slot) => {
                        slot.1 -= 1;
                        through.entry(want).or_default().push(i);
                    }
                    None => rest.push(i),
                }
            }
            for i in rest {
                let slot = left.iter_mut().find(|(_, f)| *f > 0)?;
                slot.1 -= 1;
                through.entry(slot.0).or_default().push(i);
            }
        }
        for (key, parts) in through {
            let mut left: Vec<(usize, i64)> = hubs[&key]
                .members
                .iter()
                .map(|&(m, e)| (m, g.flow(e)))
                .collect();
            let mut rest = Vec::new();
            for i in parts {
                let baseline = self.parts[i].baseline;
                match left.iter_mut().find(|(m, f)| *m == baseline && *f > 0) {
                    Some(slot) => {
                        slot.1 -= 1;
                        owner[i] = baseline;
                    }
                    None => rest.push(i),
                }
            }
            for i in rest {
                let slot = left.iter_mut().find(|(_, f)| *f > 0)?;
                slot.1 -= 1;
                owner[i] = slot.0;
            }
        }
        owner.iter().all(|&m| m != usize::MAX).then_some(owner)
    }
}
