//! Rack-aware assignment (KIP-881) on the three-node cluster: a topic of
//! six partitions, replication factor 1, partition p on the node of rack
//! `r((p % 3) + 1)`; three members of one group, one per rack. With
//! `client.rack` every member gets the two partitions whose only replica
//! is in its rack, under `range` and under `cooperative-sticky`; without
//! it, `range` gives the first member partitions 0 and 1, one of them
//! remote (the control run: the placement is the racks' doing).

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use consumer_core::Consumer;

const PARTITIONS: i32 = 6;

/// Three members of a fresh group (in racks r1..r3 when `racked`) with
/// `strategy`, polled until the group has handed out all six partitions,
/// two each; each member's partitions, by its rack.
async fn assignment(
    env: &testkit::BrokerEnv,
    topic: &str,
    strategy: &str,
    racked: bool,
) -> BTreeMap<String, Vec<i32>> {
    let group = testkit::unique_name(&format!("rack-{strategy}"));
    let mut members: Vec<(String, Consumer)> = Vec::new();
    for rack in ["r1", "r2", "r3"] {
        let mut props = vec![("partition.assignment.strategy", strategy)];
        if racked {
            props.push(("client.rack", rack));
        }
        let mut c = Consumer::connect(common::with(env, Some(&group), &props).build().unwrap())
            .await
            .unwrap();
        c.subscribe(&[topic]).unwrap();
        members.push((rack.to_string(), c));
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        for (_, c) in &mut members {
            c.poll(Duration::from_millis(100)).await.unwrap();
        }
        let counts: Vec<usize> = members.iter().map(|(_, c)| c.assignment().len()).collect();
        if counts == [2, 2, 2] || Instant::now() > end {
            break;
        }
    }
    let mut out = BTreeMap::new();
    for (rack, c) in members {
        let mut parts: Vec<i32> = c.assignment().iter().map(|tp| tp.partition).collect();
        parts.sort_unstable();
        out.insert(rack, parts);
        c.close(Duration::from_secs(5)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn each_member_gets_the_partitions_whose_replica_is_in_its_rack() {
    let cluster = testkit::require_cluster!();
    let env = cluster.broker_env();
    let admin = testkit::client(&env).await;
    let topic = testkit::unique_name("rack-assign");
    // Partition p's only replica: the node in rack r((p % 3) + 1).
    let node_of = |rack: &str| cluster.node_in_rack(rack).id;
    let racks = ["r1", "r2", "r3"];
    let placement: Vec<Vec<i32>> = (0..PARTITIONS)
        .map(|p| vec![node_of(racks[p as usize % 3])])
        .collect();
    super::follower_fetch::create_topic_placed(&admin, &topic, &placement).await;
    let local = |rack: &str| -> Vec<i32> {
        (0..PARTITIONS)
            .filter(|p| racks[*p as usize % 3] == rack)
            .collect()
    };

    for strategy in ["range", "cooperative-sticky"] {
        let got = assignment(&env, &topic, strategy, true).await;
        println!("{strategy} with client.rack: {got:?}");
        for rack in racks {
            assert_eq!(
                got.get(rack),
                Some(&local(rack)),
                "{strategy}: the member in {rack} holds the partitions whose replica is in {rack} \
                 ({got:?})"
            );
        }
    }

    // Control: without client.rack, range hands out 0-1, 2-3, 4-5 (by
    // member id order), so some member holds a remote partition.
    let got = assignment(&env, &topic, "range", false).await;
    println!("range without client.rack: {got:?}");
    assert_eq!(
        got.values().map(Vec::len).sum::<usize>(),
        PARTITIONS as usize
    );
    let all_local = racks.iter().all(|r| got.get(*r) == Some(&local(r)));
    assert!(
        !all_local,
        "without racks range placed every partition locally: {got:?}"
    );
}
