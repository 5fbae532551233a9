//! Assignor invariants, as unit and property tests.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::protocol::Subscription;

mod racks;

fn member(id: &str, topics: &[&str], owned: &[(&str, i32)], generation: i32) -> Member {
    Member {
        member_id: id.to_string(),
        group_instance_id: None,
        subscription: Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned
                .iter()
                .map(|(t, p)| TopicPartition::new(*t, *p))
                .collect(),
            generation,
            ..Subscription::default()
        },
    }
}

fn topics(spec: &[(&str, i32)]) -> BTreeMap<String, i32> {
    spec.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn all_assignors() -> Vec<Box<dyn Assignor>> {
    vec![
        Box::new(RangeAssignor),
        Box::new(RoundRobinAssignor),
        Box::new(StickyAssignor),
        Box::new(CooperativeStickyAssignor),
    ]
}

fn check_exactly_once(a: &GroupAssignment, expected: usize) {
    let mut seen = BTreeSet::new();
    for parts in a.values() {
        for tp in parts {
            assert!(seen.insert(tp.clone()), "{tp} assigned twice: {a:?}");
        }
    }
    assert_eq!(seen.len(), expected, "{a:?}");
}

#[test]
fn range_matches_java_for_the_classic_example() {
    // Java RangeAssignor doc: 2 consumers, t0 and t1 with 3 partitions each.
    let members = [
        member("C0", &["t0", "t1"], &[], -1),
        member("C1", &["t0", "t1"], &[], -1),
    ];
    let a = RangeAssignor.assign(&members, &topics(&[("t0", 3), ("t1", 3)]));
    let names = |m: &str| a[m].iter().map(|tp| tp.to_string()).collect::<Vec<_>>();
    assert_eq!(names("C0"), ["t0-0", "t0-1", "t1-0", "t1-1"]);
    assert_eq!(names("C1"), ["t0-2", "t1-2"]);
}

#[test]
fn roundrobin_matches_java_for_the_classic_example() {
    let members = [
        member("C0", &["t0", "t1"], &[], -1),
        member("C1", &["t0", "t1"], &[], -1),
    ];
    let a = RoundRobinAssignor.assign(&members, &topics(&[("t0", 3), ("t1", 3)]));
    let names = |m: &str| a[m].iter().map(|tp| tp.to_string()).collect::<Vec<_>>();
    assert_eq!(names("C0"), ["t0-0", "t0-2", "t1-1"]);
    assert_eq!(names("C1"), ["t0-1", "t1-0", "t1-2"]);
}

#[test]
fn sticky_keeps_partitions_when_a_member_joins() {
    let owned_a: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
    let owned_b: Vec<(&str, i32)> = (6..12).map(|p| ("t", p)).collect();
    let members = [
        member("a", &["t"], &owned_a, 1),
        member("b", &["t"], &owned_b, 1),
        member("c", &["t"], &[], -1),
    ];
    let a = StickyAssignor.assign(&members, &topics(&[("t", 12)]));
    check_exactly_once(&a, 12);
    assert!(a.values().all(|p| p.len() == 4));
    // a and b only give up what c needs.
    assert!(a["a"].iter().all(|tp| tp.partition < 6));
    assert!(a["b"].iter().all(|tp| tp.partition >= 6));
}

#[test]
fn cooperative_sticky_withholds_moving_partitions() {
    let owned_a: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
    let owned_b: Vec<(&str, i32)> = (6..12).map(|p| ("t", p)).collect();
    let members = [
        member("a", &["t"], &owned_a, 1),
        member("b", &["t"], &owned_b, 1),
        member("c", &["t"], &[], -1),
    ];
    let first = CooperativeStickyAssignor.assign(&members, &topics(&[("t", 12)]));
    // First round: a and b keep 4 each, c gets nothing yet (4 withheld).
    assert_eq!(first["a"].len(), 4);
    assert_eq!(first["b"].len(), 4);
    assert!(first["c"].is_empty());
    // Second round, after a and b revoked: c receives the withheld four.
    let own = |m: &str| {
        first[m]
            .iter()
            .map(|tp| (tp.topic.as_str(), tp.partition))
            .collect::<Vec<_>>()
    };
    let members = [
        member("a", &["t"], &own("a"), 2),
        member("b", &["t"], &own("b"), 2),
        member("c", &["t"], &[], 2),
    ];
    let second = CooperativeStickyAssignor.assign(&members, &topics(&[("t", 12)]));
    check_exactly_once(&second, 12);
    assert_eq!(second["a"], first["a"]);
    assert_eq!(second["b"], first["b"]);
    assert_eq!(second["c"].len(), 4);
}

#[test]
fn stale_claim_from_an_older_generation_loses() {
    let members = [
        member("zombie", &["t"], &[("t", 0)], 3),
        member("live", &["t"], &[("t", 0)], 5),
    ];
    let a = StickyAssignor.assign(&members, &topics(&[("t", 2)]));
    assert_eq!(a["live"], vec![TopicPartition::new("t", 0)]);
}

#[test]
fn java_sticky_user_data_round_trips() {
    let owned = vec![TopicPartition::new("a", 1), TopicPartition::new("b", 0)];
    let bytes = sticky::encode_sticky_user_data(&owned, 9);
    assert_eq!(
        sticky::decode_sticky_user_data(&bytes),
        Some((owned.into(), 9))
    );
    assert_eq!(
        sticky::decode_sticky_user_data(&Bytes::from_static(&[0xff; 3])),
        None
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Any sticky user data: no panic; what decodes names real topics
    /// (at most 249 bytes) and at most one partition per 4 bytes.
    #[test]
    fn any_sticky_user_data_decodes_within_bounds(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let len = bytes.len();
        if let Some((owned, _)) = sticky::decode_sticky_user_data(&Bytes::from(bytes)) {
            prop_assert!(owned.len() <= len / 4);
            prop_assert!(owned.iter().all(|(topic, _)| topic.len() <= 249));
        }
    }
}

/// Sticky user data naming a 30 KB "topic" with 10,000 partitions is no
/// claim at all (it would copy the name 10,000 times); Kafka's longest
/// name (249 bytes) still is.
#[test]
fn sticky_user_data_with_an_impossible_topic_name_claims_nothing() {
    let long = "x".repeat(30_000);
    let owned: Vec<_> = (0..10_000)
        .map(|p| TopicPartition::new(long.clone(), p))
        .collect();
    let bytes = sticky::encode_sticky_user_data(&owned, 9);
    assert_eq!(sticky::decode_sticky_user_data(&bytes), None);
    let longest = vec![TopicPartition::new("y".repeat(249), 0)];
    let bytes = sticky::encode_sticky_user_data(&longest, 9);
    assert_eq!(
        sticky::decode_sticky_user_data(&bytes),
        Some((longest.into(), 9))
    );
}

#[test]
fn by_name_accepts_protocol_and_java_class_names() {
    assert_eq!(by_name("range").unwrap().name(), "range");
    assert_eq!(
        by_name("org.apache.kafka.clients.consumer.CooperativeStickyAssignor")
            .unwrap()
            .name(),
        "cooperative-sticky"
    );
    assert!(by_name("nope").is_none());
}

fn arb_group() -> impl Strategy<Value = (usize, BTreeMap<String, i32>)> {
    (
        1usize..8,
        prop::collection::btree_map("[a-d]", 1i32..20, 1..4),
    )
}

proptest! {
    #[test]
    fn every_partition_exactly_once_and_balanced_within_one((n, parts) in arb_group()) {
        let topic_names: Vec<&str> = parts.keys().map(|s| s.as_str()).collect();
        let members: Vec<Member> = (0..n).map(|i| member(&format!("m{i}"), &topic_names, &[], -1)).collect();
        let total: i32 = parts.values().sum();
        for assignor in all_assignors() {
            let a = assignor.assign(&members, &parts);
            check_exactly_once(&a, total as usize);
            prop_assert_eq!(a.len(), n);
            if assignor.name() != "range" {
                // range balances per topic, not overall (by design, as in Java)
                let counts: Vec<usize> = a.values().map(|p| p.len()).collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                prop_assert!(max - min <= 1, "{}: {:?}", assignor.name(), counts);
            }
        }
    }

    #[test]
    fn sticky_moves_only_what_balance_requires((n, parts) in arb_group(), joiners in 1usize..3) {
        let topic_names: Vec<&str> = parts.keys().map(|s| s.as_str()).collect();
        let total: usize = parts.values().map(|&n| n as usize).sum();
        let before: Vec<Member> = (0..n).map(|i| member(&format!("m{i}"), &topic_names, &[], -1)).collect();
        let first = StickyAssignor.assign(&before, &parts);
        let mut after: Vec<Member> = before.iter().map(|m| {
            let owned: Vec<(&str, i32)> = first[&m.member_id].iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect();
            member(&m.member_id, &topic_names, &owned, 1)
        }).collect();
        for j in 0..joiners {
            after.push(member(&format!("z{j}"), &topic_names, &[], -1));
        }
        let second = StickyAssignor.assign(&after, &parts);
        check_exactly_once(&second, total);
        let floor = total / after.len();
        for m in &before {
            let kept = second[&m.member_id].iter().filter(|tp| first[&m.member_id].contains(tp)).count();
            // Each existing member keeps as much as its new fair share allows.
            prop_assert!(kept >= first[&m.member_id].len().min(floor), "{} kept {kept}", m.member_id);
        }
    }
}

/// Issue 29, case 6: the live owner of t-0 (generation 5) and a member
/// whose claim on it is stale (generation 3) or has no generation (-1,
/// KIP-792): the live owner keeps t-0 in every listing order and member-id
/// order (listed after it, the stale claim made cooperative-sticky withhold
/// t-0 from everyone).
#[test]
fn the_live_owner_keeps_its_partition_whatever_the_order_of_stale_claims() {
    for stale_generation in [3, -1] {
        for (live, stale) in [("a", "b"), ("b", "a")] {
            let live_m = member(live, &["t"], &[("t", 0)], 5);
            let stale_m = member(stale, &["t"], &[("t", 0)], stale_generation);
            for members in [
                [live_m.clone(), stale_m.clone()],
                [stale_m.clone(), live_m.clone()],
            ] {
                for assignor in [
                    Box::new(StickyAssignor) as Box<dyn Assignor>,
                    Box::new(CooperativeStickyAssignor),
                ] {
                    let a = assignor.assign(&members, &topics(&[("t", 1)]));
                    assert_eq!(
                        a[live],
                        vec![TopicPartition::new("t", 0)],
                        "{}: stale claim at {stale_generation}: {a:?}",
                        assignor.name()
                    );
                }
            }
        }
    }
}

/// A member's claims for the property below: partitions (some of them
/// beyond the topic, or of a topic nobody has) and a generation that may be
/// stale or missing.
fn arb_claims() -> impl Strategy<Value = (Vec<(usize, i32)>, i32)> {
    (
        prop::collection::vec((0usize..3, 0i32..8), 0..6),
        prop_oneof![Just(-1), 0i32..6],
    )
}

proptest! {
    /// Stale, duplicate and generation-less claims never lose a partition
    /// or give it to two members: eager assignors assign each exactly once;
    /// cooperative-sticky assigns each at most once, withholds only what a
    /// member it settled on as owner must revoke first, and after that
    /// follow-up round (each member claiming what it was given) assigns
    /// each exactly once.
    #[test]
    fn claims_of_any_generation_never_lose_or_split_a_partition(
        claims in prop::collection::vec(arb_claims(), 1..6),
        per_topic in prop::collection::vec(1i32..6, 3),
    ) {
        let names = ["t0", "t1", "t2"];
        let parts: BTreeMap<String, i32> =
            names.iter().zip(&per_topic).map(|(t, n)| (t.to_string(), *n)).collect();
        let total: usize = per_topic.iter().map(|n| *n as usize).sum();
        let members: Vec<Member> = claims
            .iter()
            .enumerate()
            .map(|(i, (owned, generation))| {
                let owned: Vec<(&str, i32)> = owned.iter().map(|(t, p)| (names[*t], *p)).collect();
                member(&format!("m{i}"), &names, &owned, *generation)
            })
            .collect();
        for assignor in all_assignors() {
            let a = assignor.assign(&members, &parts);
            if assignor.rebalance_protocol() == RebalanceProtocol::Eager {
                check_exactly_once(&a, total);
                continue;
            }
            let mut seen = BTreeSet::new();
            for p in a.values().flatten() {
                prop_assert!(seen.insert(p.clone()), "{p} twice: {a:?}");
            }
            // Withheld only to move: sticky gives it to someone other than
            // its owner, the claimant with the highest generation.
            let sticky = StickyAssignor.assign(&members, &parts);
            for (target, tps) in &sticky {
                for tp in tps.iter().filter(|tp| !seen.contains(*tp)) {
                    let owner = members
                        .iter()
                        .filter(|m| m.subscription.owned.contains(tp))
                        .fold(None::<&Member>, |best, m| match best {
                            Some(b) if b.subscription.generation >= m.subscription.generation => Some(b),
                            _ => Some(m),
                        });
                    prop_assert!(
                        owner.is_some_and(|o| o.member_id != *target),
                        "{tp} withheld from {target}, its owner: {a:?}"
                    );
                }
            }
            // The follow-up round: everyone owns what it was given.
            let next: Vec<Member> = members
                .iter()
                .map(|m| {
                    let owned: Vec<(&str, i32)> =
                        a[&m.member_id].iter().map(|tp| (tp.topic.as_str(), tp.partition)).collect();
                    member(&m.member_id, &names, &owned, 7)
                })
                .collect();
            let b = assignor.assign(&next, &parts);
            check_exactly_once(&b, total);
        }
    }
}
