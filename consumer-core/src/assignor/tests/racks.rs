//! KIP-881: the rack-aware assignors, on Java's documented examples
//! (`RangeAssignorTest`, `AbstractStickyAssignorTest`: where only one
//! assignment puts every partition in its member's rack, ours is Java's;
//! elsewhere ours has at most Java's count of partitions in another rack)
//! and as properties.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::*;
use super::{check_exactly_once, member, topics};

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

/// Java's `racks(n)`: a, b, c, …
fn racks(n: usize) -> Vec<Option<&'static str>> {
    (0..n).map(|i| Some(NAMES[i % NAMES.len()])).collect()
}

fn racked(id: &str, topics: &[&str], owned: &[TopicPartition], rack: Option<&str>) -> Member {
    let mut m = member(id, topics, &[], -1);
    m.subscription.owned = owned.into();
    m.subscription.rack = rack.map(String::from);
    m
}

fn parse(list: &str) -> Vec<TopicPartition> {
    list.split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (t, p) = s.rsplit_once('-').expect("topic-partition");
            TopicPartition::new(t, p.parse().expect("partition"))
        })
        .collect()
}

/// One of Java's rack tests: topics in order, each partition `i` of a
/// topic on brokers `(i + j + offset) % brokers` for `j < rf` (`offset`:
/// the partitions of the topics before it), consumers `consumer0`, … with
/// these subscriptions, racks and owned partitions.
struct JavaCase<'a> {
    topics: &'a [(&'a str, i32)],
    subscriptions: &'a [&'a [&'a str]],
    rf: usize,
    brokers: Vec<Option<&'a str>>,
    consumers: Vec<Option<&'a str>>,
    owned: &'a [&'a str],
}

impl JavaCase<'_> {
    fn replica_racks(&self) -> ReplicaRacks {
        let mut racks = ReplicaRacks::new();
        let mut offset = 0;
        for &(t, n) in self.topics {
            for i in 0..n as usize {
                let on = (0..self.rf)
                    .filter_map(|j| self.brokers[(i + j + offset) % self.brokers.len()]);
                racks.insert(t, i as i32, on);
            }
            offset += n as usize;
        }
        racks
    }

    fn members(&self) -> Vec<Member> {
        (0..self.consumers.len())
            .map(|i| {
                let owned = self.owned.get(i).map_or(Vec::new(), |o| parse(o));
                racked(
                    &format!("consumer{i}"),
                    self.subscriptions[i],
                    &owned,
                    self.consumers[i],
                )
            })
            .collect()
    }

    /// Each consumer's partitions as Java's tests write them, and how many
    /// partitions are not in their consumer's rack.
    fn run(&self, assignor: &dyn Assignor) -> (Vec<String>, usize) {
        let members = self.members();
        let racks = self.replica_racks();
        let a = assignor.assign_with_racks(&members, &topics(self.topics), &racks);
        let listing = members
            .iter()
            .map(|m| {
                a[&m.member_id]
                    .iter()
                    .map(|tp| tp.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        (listing, remote(&a, &members, &racks))
    }
}

/// Partitions assigned to a member with a rack that holds no replica.
fn remote(a: &GroupAssignment, members: &[Member], racks: &ReplicaRacks) -> usize {
    members
        .iter()
        .filter_map(|m| Some((m.subscription.rack.as_deref()?, &a[&m.member_id])))
        .map(|(r, parts)| {
            parts
                .iter()
                .filter(|tp| racks.of(tp).is_none_or(|rs| !rs.contains(r)))
                .count()
        })
        .sum()
}

/// Partitions assigned to a member in a rack that holds a replica.
fn local(a: &GroupAssignment, members: &[Member], racks: &ReplicaRacks) -> usize {
    let rack: BTreeMap<&str, &str> = members
        .iter()
        .filter_map(|m| Some((m.member_id.as_str(), m.subscription.rack.as_deref()?)))
        .collect();
    a.iter()
        .filter_map(|(id, parts)| Some((rack.get(id.as_str())?, parts)))
        .map(|(r, parts)| {
            parts
                .iter()
                .filter(|tp| racks.of(tp).is_some_and(|rs| rs.contains(*r)))
                .count()
        })
        .sum()
}

const ALL3: &[&str] = &["t1", "t2", "t3"];

#[test]
fn range_by_rack_with_uniform_subscriptions_as_java() {
    let case = |rf, brokers, consumers| JavaCase {
        topics: &[("t1", 6), ("t2", 7), ("t3", 2)],
        subscriptions: &[ALL3, ALL3, ALL3],
        rf,
        brokers,
        consumers,
        owned: &[],
    };
    let plain = [
        "t1-0, t1-1, t2-0, t2-1, t2-2, t3-0",
        "t1-2, t1-3, t2-3, t2-4, t3-1",
        "t1-4, t1-5, t2-5, t2-6",
    ];
    // No consumer rack, or no broker rack: the ranges.
    assert_eq!(
        case(3, racks(3), vec![None; 3]).run(&RangeAssignor).0,
        plain
    );
    assert_eq!(
        case(3, vec![None; 3], racks(3)).run(&RangeAssignor).0,
        plain
    );
    // One replica each: a single assignment is all local, Java's.
    let (a, remote) = case(1, racks(3), racks(3)).run(&RangeAssignor);
    assert_eq!(
        a,
        [
            "t1-0, t1-3, t2-0, t2-3, t2-6",
            "t1-1, t1-4, t2-1, t2-4, t3-0",
            "t1-2, t1-5, t2-2, t2-5, t3-1"
        ]
    );
    assert_eq!(remote, 0);
    // Two replicas: Java leaves one partition remote.
    assert!(case(2, racks(3), racks(3)).run(&RangeAssignor).1 <= 1);
    // Every partition on both racks of two: racks change nothing, and
    // the third consumer's rack holds none of its four.
    assert_eq!(
        case(3, racks(2), racks(3)).run(&RangeAssignor),
        (plain.map(String::from).to_vec(), 4)
    );
}

#[test]
fn range_by_rack_with_unequal_subscriptions_as_java() {
    let case = |rf, brokers| JavaCase {
        topics: &[("t1", 6), ("t2", 7), ("t3", 2)],
        subscriptions: &[ALL3, ALL3, &["t1", "t3"]],
        rf,
        brokers,
        consumers: racks(3),
        owned: &[],
    };
    assert!(case(1, racks(3)).run(&RangeAssignor).1 <= 2);
    assert_eq!(case(2, racks(3)).run(&RangeAssignor).1, 0);
    assert_eq!(
        case(3, racks(2)).run(&RangeAssignor),
        (
            [
                "t1-0, t1-1, t2-0, t2-1, t2-2, t2-3, t3-0",
                "t1-2, t1-3, t2-4, t2-5, t2-6, t3-1",
                "t1-4, t1-5"
            ]
            .map(String::from)
            .to_vec(),
            2
        )
    );
}

/// Co-partitioning comes before racks: topics with the same subscribers
/// and partition count give partition `i` of each to one consumer.
#[test]
fn range_by_rack_keeps_co_partitioning_as_java() {
    let plain = [
        "t1-0, t1-1, t2-0, t2-1, t3-0, t3-1",
        "t1-2, t1-3, t2-2, t2-3, t3-2, t3-3",
        "t1-4, t2-4, t3-4",
    ];
    for (rf, brokers, remote) in [(1, racks(3), 10), (2, racks(3), 5), (3, racks(2), 3)] {
        let case = JavaCase {
            topics: &[("t1", 5), ("t2", 5), ("t3", 5)],
            subscriptions: &[ALL3, ALL3, ALL3],
            rf,
            brokers,
            consumers: racks(3),
            owned: &[],
        };
        // Partition i of the three topics is never on one rack: nothing
        // better than the ranges keeps them together.
        assert_eq!(
            case.run(&RangeAssignor),
            (plain.map(String::from).to_vec(), remote),
            "rf {rf}"
        );
    }

    let t12: &[&str] = &["t1", "t2"];
    let t34: &[&str] = &["t3", "t4"];
    let all: &[&str] = &["t1", "t2", "t3", "t4"];
    let case = |subscriptions, rf, brokers| JavaCase {
        topics: &[("t1", 6), ("t2", 6), ("t3", 2), ("t4", 2)],
        subscriptions,
        rf,
        brokers,
        consumers: vec![Some("a"), Some("b"), Some("b"), Some("a")],
        owned: &[],
    };
    let (split, whole) = ([t12, t12, t34, t34], [all, all, all, all]);
    let (a, remote) = case(&split, 1, racks(2)).run(&RangeAssignor);
    assert_eq!(
        a,
        [
            "t1-0, t1-2, t1-4, t2-0, t2-2, t2-4",
            "t1-1, t1-3, t1-5, t2-1, t2-3, t2-5",
            "t3-1, t4-1",
            "t3-0, t4-0"
        ]
    );
    assert_eq!(remote, 0);
    let (a, remote) = case(&whole, 1, racks(2)).run(&RangeAssignor);
    assert_eq!(
        a,
        [
            "t1-0, t1-2, t2-0, t2-2, t3-0, t4-0",
            "t1-1, t1-3, t2-1, t2-3, t3-1, t4-1",
            "t1-5, t2-5",
            "t1-4, t2-4"
        ]
    );
    assert_eq!(remote, 0);
    assert!(case(&whole, 1, racks(3)).run(&RangeAssignor).1 <= 6);
}

/// Static members keep their rack-aware ranges when their member ids change.
#[test]
fn range_by_rack_follows_static_members_as_java() {
    let mut racks = ReplicaRacks::new();
    for t in ["topic1", "topic2"] {
        for p in 0..5 {
            // Two replicas on brokers a, b, c, a, b, c.
            racks.insert(t, p, [NAMES[p as usize % 3], NAMES[(p as usize + 1) % 3]]);
        }
    }
    let parts = topics(&[("topic1", 5), ("topic2", 5)]);
    let group = |ids: [&str; 3]| -> Vec<Member> {
        (0..3)
            .map(|i| {
                let mut m = racked(ids[i], &["topic1", "topic2"], &[], Some(NAMES[i]));
                m.group_instance_id = Some(format!("instance{}", i + 1));
                m
            })
            .collect()
    };
    let by_instance = |members: &[Member]| -> BTreeMap<String, Vec<String>> {
        let a = RangeAssignor.assign_with_racks(members, &parts, &racks);
        members
            .iter()
            .map(|m| {
                let parts = a[&m.member_id].iter().map(|tp| tp.to_string()).collect();
                (m.group_instance_id.clone().unwrap(), parts)
            })
            .collect()
    };
    let first = by_instance(&group(["consumer1", "consumer2", "consumer3"]));
    let expected = |s: &str| parse(s).iter().map(|tp| tp.to_string()).collect::<Vec<_>>();
    assert_eq!(
        first["instance1"],
        expected("topic1-0, topic1-2, topic2-0, topic2-2")
    );
    assert_eq!(
        first["instance2"],
        expected("topic1-1, topic1-3, topic2-1, topic2-3")
    );
    assert_eq!(first["instance3"], expected("topic1-4, topic2-4"));
    assert_eq!(
        by_instance(&group(["consumer1", "consumer5", "consumer4"])),
        first
    );
}

#[test]
fn sticky_by_rack_with_uniform_subscriptions_as_java() {
    let plain = [
        "t1-0, t1-3, t2-0, t2-3, t2-6",
        "t1-1, t1-4, t2-1, t2-4, t3-0",
        "t1-2, t1-5, t2-2, t2-5, t3-1",
    ];
    let misplaced = [
        "t1-0, t1-1, t1-2, t1-3, t1-4",
        "t1-5, t2-0, t2-1, t2-2, t2-3",
        "t2-4, t2-5, t2-6, t3-0, t3-1",
    ];
    let case = |rf, brokers, consumers, owned| JavaCase {
        topics: &[("t1", 6), ("t2", 7), ("t3", 2)],
        subscriptions: &[ALL3, ALL3, ALL3],
        rf,
        brokers,
        consumers,
        owned,
    };
    let sticky: [&dyn Assignor; 2] = [&StickyAssignor, &CooperativeStickyAssignor];
    for assignor in sticky {
        let name = assignor.name();
        for owned in [&[][..], &plain[..]] {
            // Racks that cannot matter, fresh or owning: as without racks.
            for (brokers, consumers) in [
                (vec![None; 3], racks(3)),
                (racks(3), vec![None; 3]),
                (racks(3), vec![Some("d"), Some("e"), Some("f")]),
                (racks(3), vec![None, Some("e"), Some("f")]),
            ] {
                let (a, _) = case(3, brokers, consumers, owned).run(assignor);
                assert_eq!(a, plain, "{name}");
            }
            // One replica each: the only all-local assignment.
            assert_eq!(
                case(1, racks(3), racks(3), owned).run(assignor),
                (plain.map(String::from).to_vec(), 0),
                "{name}"
            );
            assert_eq!(
                case(2, racks(3), racks(3), owned).run(assignor).1,
                0,
                "{name}"
            );
            // The third consumer's rack holds nothing: balance first.
            assert_eq!(
                case(3, racks(2), racks(3), owned).run(assignor),
                (plain.map(String::from).to_vec(), 5),
                "{name}"
            );
        }
    }
    // Owned in the wrong racks: moved to the right ones. Cooperative-sticky
    // first keeps only what stays, then hands out the rest.
    let (a, remote) = case(1, racks(3), racks(3), &misplaced).run(&StickyAssignor);
    assert_eq!((a, remote), (plain.map(String::from).to_vec(), 0));
    let (a, _) = case(1, racks(3), racks(3), &misplaced).run(&CooperativeStickyAssignor);
    assert_eq!(a, ["t1-0, t1-3", "t2-1", "t2-5, t3-1"]);
    let intermediate: Vec<&str> = a.iter().map(String::as_str).collect();
    let (a, remote) = case(1, racks(3), racks(3), &intermediate).run(&CooperativeStickyAssignor);
    assert_eq!((a, remote), (plain.map(String::from).to_vec(), 0));
}

#[test]
fn sticky_by_rack_with_unequal_subscriptions_as_java() {
    for assignor in [&StickyAssignor as &dyn Assignor, &CooperativeStickyAssignor] {
        let case = |rf| JavaCase {
            topics: &[("t1", 6), ("t2", 7), ("t3", 2)],
            subscriptions: &[ALL3, ALL3, &["t1", "t3"]],
            rf,
            brokers: racks(3),
            consumers: racks(3),
            owned: &[],
        };
        let plain = case(1).members();
        let counts = |a: &GroupAssignment| a.values().map(Vec::len).collect::<Vec<_>>();
        let without = assignor.assign(&plain, &topics(case(1).topics));
        for (rf, java_remote) in [(1, 4), (2, 0)] {
            let (a, remote) = case(rf).run(assignor);
            assert!(remote <= java_remote, "{}: rf {rf}: {a:?}", assignor.name());
            assert_eq!(
                a.iter().map(|s| parse(s).len()).collect::<Vec<_>>(),
                counts(&without)
            );
        }
    }
}

// ---- properties ----

/// A group with racks: members (rack index or none), topics, and each
/// partition's replica racks (none: unknown).
#[derive(Debug, Clone)]
struct Racked {
    members: Vec<Member>,
    parts: BTreeMap<String, i32>,
    racks: ReplicaRacks,
}

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];

/// `subscribe_all`: every member to every topic; else a random non-empty
/// subset each.
fn arb_racked(subscribe_all: bool) -> impl Strategy<Value = Racked> {
    (1usize..=3)
        .prop_flat_map(move |r| {
            let member = (prop::option::weighted(0.85, 0..r), 1u8..8);
            let partition = (0..r, 1..=r, prop::bool::weighted(0.9));
            (
                prop::collection::vec(member, 1..7),
                prop::collection::vec(prop::collection::vec(partition, 1..10), 1..=3),
                Just(r),
            )
        })
        .prop_map(move |(members, topic_parts, r)| {
            let mut parts = BTreeMap::new();
            let mut racks = ReplicaRacks::new();
            for (t, ps) in topic_parts.iter().enumerate() {
                parts.insert(TOPICS[t].to_string(), ps.len() as i32);
                for (p, &(first, rf, known)) in ps.iter().enumerate() {
                    if known {
                        let on = (0..rf).map(|j| NAMES[(first + j) % r]);
                        racks.insert(TOPICS[t], p as i32, on);
                    }
                }
            }
            let members = members
                .iter()
                .enumerate()
                .map(|(i, &(rack, mask))| {
                    let subs: Vec<&str> = TOPICS[..topic_parts.len()]
                        .iter()
                        .enumerate()
                        .filter(|(t, _)| subscribe_all || mask & (1 << t) != 0)
                        .map(|(_, t)| *t)
                        .collect();
                    let subs = if subs.is_empty() {
                        vec![TOPICS[0]]
                    } else {
                        subs
                    };
                    racked(&format!("m{i}"), &subs, &[], rack.map(|r| NAMES[r]))
                })
                .collect();
            Racked {
                members,
                parts,
                racks,
            }
        })
}

fn total(parts: &BTreeMap<String, i32>, members: &[Member]) -> usize {
    parts
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.subscription.topics.contains(t)))
        .map(|(_, n)| *n as usize)
        .sum()
}

fn counts(a: &GroupAssignment) -> Vec<usize> {
    a.values().map(Vec::len).collect()
}

/// Range's guarantees, racks or not: per topic, each subscriber gets
/// `n / k` or one more; topics with the same subscribers and count give
/// partition `i` of each to one member.
fn check_range(a: &GroupAssignment, members: &[Member], parts: &BTreeMap<String, i32>) {
    let owner: BTreeMap<&TopicPartition, &str> = a
        .iter()
        .flat_map(|(id, ps)| ps.iter().map(move |tp| (tp, id.as_str())))
        .collect();
    let mut groups: BTreeMap<(Vec<&str>, i32), Vec<&str>> = BTreeMap::new();
    for (t, &n) in parts {
        let subs: Vec<&str> = members
            .iter()
            .filter(|m| m.subscription.topics.contains(t))
            .map(|m| m.member_id.as_str())
            .collect();
        if subs.is_empty() {
            continue;
        }
        let k = subs.len();
        for id in &subs {
            let got = a[*id].iter().filter(|tp| tp.topic == *t).count();
            let per = n as usize / k;
            assert!(got == per || got == per + 1, "{t}: {id} has {got}: {a:?}");
        }
        groups.entry((subs, n)).or_default().push(t);
    }
    for ((_, n), ts) in groups {
        for p in 0..n {
            let at = |t: &str| owner[&TopicPartition::new(t, p)];
            assert!(ts.iter().all(|t| at(t) == at(ts[0])), "{ts:?}-{p}: {a:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With racks, every guarantee holds as without, and never fewer
    /// partitions are local: each assigned once; sticky: every member's
    /// count unchanged; range: per topic within one, co-partitioned.
    #[test]
    fn racks_keep_every_guarantee_and_never_lose_locality(
        g in prop_oneof![arb_racked(true), arb_racked(false)],
    ) {
        let total = total(&g.parts, &g.members);
        let rack_aware: [&dyn Assignor; 3] =
            [&RangeAssignor, &StickyAssignor, &CooperativeStickyAssignor];
        for assignor in rack_aware {
            let plain = assignor.assign(&g.members, &g.parts);
            let a = assignor.assign_with_racks(&g.members, &g.parts, &g.racks);
            check_exactly_once(&a, total);
            if assignor.name() == "range" {
                check_range(&a, &g.members, &g.parts);
            } else {
                prop_assert_eq!(counts(&a), counts(&plain), "{}", assignor.name());
            }
            let (got, was) = (local(&a, &g.members, &g.racks), local(&plain, &g.members, &g.racks));
            prop_assert!(got >= was, "{}: {got} local, {was} without racks: {a:?}", assignor.name());
        }
        // Roundrobin ignores racks, as Java's.
        prop_assert_eq!(
            RoundRobinAssignor.assign_with_racks(&g.members, &g.parts, &g.racks),
            RoundRobinAssignor.assign(&g.members, &g.parts)
        );
    }

    /// With no member rack, or no replica rack, or no member in a replica's
    /// rack, the assignment is exactly the rack-oblivious one, owners and
    /// all.
    #[test]
    fn unknown_racks_change_nothing(g in arb_racked(false), owning in any::<bool>()) {
        let mut members = g.members.clone();
        if owning {
            // Own what the assignor gives without racks, and a little more.
            let before = StickyAssignor.assign(&members, &g.parts);
            for (i, m) in members.iter_mut().enumerate() {
                m.subscription.owned = before[&m.member_id].as_slice().into();
                m.subscription.owned.push(TopicPartition::new(TOPICS[i % 3], i as i32));
                m.subscription.generation = 1;
            }
        }
        let rackless: Vec<Member> = members
            .iter()
            .cloned()
            .map(|mut m| { m.subscription.rack = None; m })
            .collect();
        let elsewhere: Vec<Member> = members
            .iter()
            .cloned()
            .map(|mut m| { m.subscription.rack = Some("z".into()); m })
            .collect();
        let rack_aware: [&dyn Assignor; 3] =
            [&RangeAssignor, &StickyAssignor, &CooperativeStickyAssignor];
        for assignor in rack_aware {
            for (ms, racks) in [
                (&members, &ReplicaRacks::new()),
                (&rackless, &g.racks),
                (&elsewhere, &g.racks),
            ] {
                prop_assert_eq!(
                    assignor.assign_with_racks(ms, &g.parts, racks),
                    assignor.assign(ms, &g.parts),
                    "{}", assignor.name()
                );
            }
        }
    }

    /// When every member's share can be in its own rack, every partition
    /// is: `per` partitions for each member with a replica in its rack
    /// (maybe another replica elsewhere), in any order.
    #[test]
    fn every_partition_is_local_when_it_can_be(
        rack_sizes in prop::collection::vec(1usize..3, 1..=3),
        per in 1usize..4,
        second in prop::collection::vec(0usize..3, 27),
        order in any::<u64>(),
    ) {
        let r = rack_sizes.len();
        let mut members = Vec::new();
        let mut homes = Vec::new(); // one rack per partition to place
        for (rack, &size) in rack_sizes.iter().enumerate() {
            for _ in 0..size {
                let id = format!("m{}", members.len());
                members.push(racked(&id, &["t0", "t1"], &[], Some(NAMES[rack])));
                homes.extend(std::iter::repeat_n(rack, per));
            }
        }
        // Shuffle which partition lives where.
        let n = homes.len();
        let mut seed = order;
        for i in (1..n).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            homes.swap(i, (seed >> 33) as usize % (i + 1));
        }
        // Range: one topic; sticky: the same partitions over two topics.
        let place = |racks: &mut ReplicaRacks, t: &str, p: usize, i: usize| {
            let extra = NAMES[(homes[i] + second[i % second.len()]) % r];
            racks.insert(t, p as i32, [NAMES[homes[i]], extra]);
        };
        let mut one = ReplicaRacks::new();
        let mut two = ReplicaRacks::new();
        for i in 0..n {
            place(&mut one, "t0", i, i);
            let (t, p) = if i % 2 == 0 { ("t0", i / 2) } else { ("t1", i / 2) };
            place(&mut two, t, p, i);
        }
        let a = RangeAssignor.assign_with_racks(&members, &topics(&[("t0", n as i32)]), &one);
        prop_assert_eq!(remote(&a, &members, &one), 0, "range: {:?}", a);
        let parts = topics(&[("t0", n.div_ceil(2) as i32), ("t1", (n / 2) as i32)]);
        for assignor in [&StickyAssignor as &dyn Assignor, &CooperativeStickyAssignor] {
            let a = assignor.assign_with_racks(&members, &parts, &two);
            check_exactly_once(&a, n);
            prop_assert_eq!(remote(&a, &members, &two), 0, "{}: {:?}", assignor.name(), a);
        }
    }

    /// Sticky with racks, the next generation: a member keeps what it owns
    /// in a right rack (or where racks say nothing) up to its fair share;
    /// an unchanged group keeps everything; and never fewer partitions are
    /// local than without racks from the same owners, at the same counts.
    #[test]
    fn sticky_by_rack_moves_only_what_balance_and_racks_require(
        g in arb_racked(true),
        joiners in prop::collection::vec(prop::option::of(0usize..3), 0..3),
        first_with_racks in any::<bool>(),
    ) {
        let total = total(&g.parts, &g.members);
        let first = if first_with_racks {
            StickyAssignor.assign_with_racks(&g.members, &g.parts, &g.racks)
        } else {
            StickyAssignor.assign(&g.members, &g.parts)
        };
        let owning: Vec<Member> = g
            .members
            .iter()
            .map(|m| {
                let mut m = m.clone();
                m.subscription.owned = first[&m.member_id].as_slice().into();
                m.subscription.generation = 1;
                m
            })
            .collect();
        if first_with_racks {
            let again = StickyAssignor.assign_with_racks(&owning, &g.parts, &g.racks);
            prop_assert_eq!(&again, &first, "an unchanged group moves nothing");
        }
        let mut after = owning.clone();
        for (j, rack) in joiners.iter().enumerate() {
            after.push(racked(&format!("z{j}"), &TOPICS[..g.parts.len()], &[], rack.map(|r| NAMES[r])));
        }
        let second = StickyAssignor.assign_with_racks(&after, &g.parts, &g.racks);
        check_exactly_once(&second, total);
        let plain = StickyAssignor.assign(&after, &g.parts);
        prop_assert_eq!(counts(&second), counts(&plain));
        prop_assert!(local(&second, &after, &g.racks) >= local(&plain, &after, &g.racks));
        let floor = total / after.len();
        for m in &owning {
            let keepable = first[&m.member_id]
                .iter()
                .filter(|tp| !rack::mismatched(m, g.racks.of(tp)))
                .count();
            let kept = second[&m.member_id].iter().filter(|tp| first[&m.member_id].contains(tp)).count();
            prop_assert!(kept >= keepable.min(floor), "{} kept {kept} of {keepable}: {second:?}", m.member_id);
        }
    }

    /// Cooperative-sticky with racks, from owners placed without them:
    /// the first round withholds only partitions that move away from their
    /// owner, the follow-up assigns everything once, and the next one
    /// changes nothing.
    #[test]
    fn cooperative_sticky_by_rack_settles_in_two_rounds(g in arb_racked(true)) {
        let total = total(&g.parts, &g.members);
        let owners = StickyAssignor.assign(&g.members, &g.parts);
        let round = |a: &GroupAssignment, generation: i32| -> Vec<Member> {
            g.members
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    m.subscription.owned = a[&m.member_id].as_slice().into();
                    m.subscription.generation = generation;
                    m
                })
                .collect()
        };
        let members = round(&owners, 1);
        let first = CooperativeStickyAssignor.assign_with_racks(&members, &g.parts, &g.racks);
        let mut seen = BTreeSet::new();
        for (id, tps) in &first {
            for tp in tps {
                prop_assert!(seen.insert(tp.clone()), "{tp} twice");
                prop_assert!(owners[id].contains(tp) || !owners.values().flatten().any(|o| o == tp));
            }
        }
        let second = CooperativeStickyAssignor.assign_with_racks(&round(&first, 2), &g.parts, &g.racks);
        check_exactly_once(&second, total);
        let third = CooperativeStickyAssignor.assign_with_racks(&round(&second, 3), &g.parts, &g.racks);
        prop_assert_eq!(third, second);
    }
}
