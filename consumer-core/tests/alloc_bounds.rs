//! Memory bounds for the group bytes a member's peers send (DESIGN.md
//! invariant 86), measured with a counting allocator: the consumer
//! protocol subscription the leader decodes for every member, and the
//! sticky user data its assignor reads.
//!
//! The allocator is `stats_alloc`'s instrumented system allocator, in this
//! dedicated test binary alone (as kafka-wire's `tests/alloc_bounds.rs`).
//! It counts every byte allocated (growth included), so a measure is an
//! upper bound on the peak; each test holds one lock from its start, so
//! that they never measure each other.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use consumer_core::assignor::{Assignor, Member, StickyAssignor};
use consumer_core::protocol::{Subscription, CONSUMER_PROTOCOL_VERSION, MAX_TOPIC_NAME_LEN};
use consumer_core::TopicPartition;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// One test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bytes `f` allocated in total (an upper bound on its peak). Call it
/// under [`serial`].
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    (r, region.change().bytes_allocated)
}

/// About 1 MiB of owned partitions: as many 4-byte partition ids.
const PARTITIONS: i32 = 250_000;

/// A v3 subscription owning `PARTITIONS` partitions of `topic`.
fn subscription_owning(topic: &str) -> Bytes {
    Subscription {
        topics: vec!["t".into()],
        owned: (0..PARTITIONS)
            .map(|p| TopicPartition::new(topic, p))
            .collect(),
        generation: 1,
        ..Subscription::default()
    }
    .encode(CONSUMER_PROTOCOL_VERSION)
}

/// Java's sticky user data (v1): `[topic, [partition]]`, then the
/// generation.
fn sticky_user_data(topic: &str, partitions: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions);
    for p in 0..partitions {
        b.put_i32(p);
    }
    b.put_i32(1);
    b.freeze()
}

/// A member claiming 250 k partitions of a topic with Kafka's longest name
/// (249 bytes): each partition used to copy the name (~280 B per 4 wire
/// bytes, 70x); with one name per topic, the claims take what the bytes
/// take.
///
/// Bound: 4x the bytes.
#[test]
fn owned_partitions_allocate_within_a_small_multiple_of_their_bytes() {
    let _serial = serial();
    let bytes = subscription_owning(&"x".repeat(MAX_TOPIC_NAME_LEN));
    let len = bytes.len();
    let (sub, peak) = allocated_by(|| Subscription::decode(&bytes));
    let sub = sub.expect("a valid subscription");
    assert_eq!(sub.owned.len(), PARTITIONS as usize);
    assert!(peak <= 4 * len, "allocated {peak} B for {len} B");
}

/// The trigger: a 32 KB "topic" with 250 k partitions (~1 MiB)
/// would have been ~8 GB of names. It is no Kafka topic: a typed error,
/// and nothing sized by the claims is allocated.
#[test]
fn a_topic_name_past_kafkas_limit_is_a_typed_error_within_the_bound() {
    let _serial = serial();
    let bytes = subscription_owning(&"x".repeat(32_000));
    let len = bytes.len();
    let (res, peak) = allocated_by(|| Subscription::decode(&bytes));
    let err = res.expect_err("a 32 KB topic name");
    assert!(err.reason.contains("249"), "{err}");
    assert!(peak <= 4 * len, "allocated {peak} B for {len} B");
}

/// The leader's sticky assignor reads a member's claims from its user data
/// when the subscription has none (Java's `StickyAssignor`): 250 k claims
/// on a 249-byte topic name. Read with one name per topic, and only claims
/// on partitions being assigned kept, the assignment of a 4-partition
/// topic allocates a small multiple of those bytes.
///
/// Bound: 4x the user data.
#[test]
fn sticky_user_data_claims_allocate_within_a_small_multiple_of_their_bytes() {
    let _serial = serial();
    let topic = "x".repeat(MAX_TOPIC_NAME_LEN);
    let user_data = sticky_user_data(&topic, PARTITIONS);
    let len = user_data.len();
    let members = vec![
        Member {
            member_id: "hostile".into(),
            group_instance_id: None,
            subscription: Subscription {
                topics: vec![topic.clone()],
                user_data: Some(user_data),
                generation: 1,
                ..Subscription::default()
            },
        },
        Member {
            member_id: "honest".into(),
            group_instance_id: None,
            subscription: Subscription {
                topics: vec![topic.clone()],
                generation: 1,
                ..Subscription::default()
            },
        },
    ];
    let partitions = BTreeMap::from([(topic.clone(), 4)]);
    let (out, peak) = allocated_by(|| StickyAssignor.assign(&members, &partitions));
    assert_eq!(out.values().map(Vec::len).sum::<usize>(), 4);
    assert_eq!(
        out["hostile"].len(),
        2,
        "balanced: claims never beat balance"
    );
    assert!(peak <= 4 * len, "allocated {peak} B for {len} B");
}

/// Arbitrary subscription bytes: no panic, and the allocation is within
/// 64x the input plus 16 KiB (the codec's own structs included).
#[test]
fn subscription_bytes_allocate_within_a_multiple_of_the_input() {
    let _serial = serial();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let cases = (prop::collection::vec(any::<u8>(), 0..1024), 0i16..4);
    runner
        .run(&cases, |(body, v)| {
            let mut b = BytesMut::new();
            b.put_i16(v);
            b.put_slice(&body);
            let input = b.freeze();
            let len = input.len();
            let (_, peak) = allocated_by(|| Subscription::decode(&input));
            prop_assert!(
                peak <= 64 * len + 16 * 1024,
                "allocated {peak} B for {len} B (v{v})"
            );
            Ok(())
        })
        .unwrap();
}
