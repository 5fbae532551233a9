//! Partition reassignment (KIP-455) and preferred-leader elections
//! (KIP-460) under load, as an operator rebalancing a cluster runs them,
//! through the admin client:
//!
//! 1. every partition of the input and of the exactly-once output gets
//!    its replicas rotated (`[a, b, c]` → `[b, c, a]`: no data moves, the
//!    leader stays), then its preferred leader elected: every leader
//!    moves at once; three rounds, so each node leads each partition;
//! 2. the group's `__consumer_offsets` partition, rotated and elected the
//!    same way: the group's coordinator moves to another node;
//! 3. each input partition's leader taken out of its replica set (the
//!    controller elects another at once; three replicas → two), then put
//!    back last: its log is copied again from the new leader while the
//!    records keep coming (two → three).
//!
//! No node fails, so nothing has a session to wait out: the clients
//! follow each leader (NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH) and
//! the coordinator (NOT_COORDINATOR) to their new nodes. The bound is the
//! one every fault of the suite keeps: the group's session + 2 s.
//!
//! Beside it, without load: a reassignment held under way by a
//! replication throttle is listed, then cancelled; and the controller's
//! refusals (NO_REASSIGNMENT_IN_PROGRESS, INVALID_REPLICA_ASSIGNMENT,
//! ELECTION_NOT_NEEDED) reach the caller per partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kafka_wire::{
    ConfigResource, ElectionType, Error, KafkaCode, LeaderElection, NewTopic,
    PartitionReassignment, ProducerRecord, TopicPartition,
};

use super::load::{Load, GROUP_SESSION};
use super::nodes;

/// `v` rotated left by one: the second replica becomes the preferred leader.
fn rotated(v: &[i32]) -> Vec<i32> {
    let mut r = v.to_vec();
    r.rotate_left(1);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn reassigned_replicas_and_elected_leaders_lose_nothing_and_stall_no_partition_past_the_session(
) {
    let cluster = testkit::require_cluster!();
    let mut load = Load::start("reassignment", cluster).await;
    let admin = load.admin.clone();
    let began = load.fault_begins();

    // 1. Rotate every partition of the input and the output, then elect;
    //    three times: each node leads each partition once, and the
    //    replicas end where they began.
    for round in 1..=3 {
        let mut moves = Vec::new();
        let mut leaders_before = BTreeMap::new();
        for topic in [load.topic.clone(), load.out_topic().to_string()] {
            for (p, info) in nodes::placement(&admin, &topic).await {
                let tp = TopicPartition::new(&topic, p);
                leaders_before.insert(tp.clone(), info.leader);
                moves.push((tp, rotated(&info.replicas)));
            }
        }
        let took = nodes::reassign(&admin, &moves).await;
        let tps: Vec<TopicPartition> = moves.iter().map(|(tp, _)| tp.clone()).collect();
        let t = Instant::now();
        let elected = nodes::elect_preferred(&admin, &tps).await;
        let moved = moves
            .iter()
            .filter(|(tp, to)| leaders_before[tp] != to[0])
            .count();
        eprintln!(
            "reassignment: round {round}: {} partitions rotated in {:.2} s, {elected} preferred leaders \
             elected ({moved} had another leader) and shown in the metadata in {:.2} s ({:+.2} s into \
             the fault)",
            moves.len(),
            took.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            load.since_fault(Instant::now())
        );
        assert!(
            elected >= moved,
            "{moved} partitions were led by another replica than their new first, \
             only {elected} elections happened"
        );
        load.wait_flowing("after the leaders moved").await;
    }

    // 2. The group's coordinator: its __consumer_offsets partition, rotated and elected.
    let offsets = "__consumer_offsets".to_string();
    let offsets_placement = nodes::placement(&admin, &offsets).await;
    let p = nodes::offsets_partition(&load.group, offsets_placement.len() as i32);
    let coordinator = nodes::coordinator(&admin, &load.group).await;
    let info = &offsets_placement[&p];
    assert_eq!(
        info.leader, coordinator,
        "the group's coordinator leads __consumer_offsets-{p}, by the name's hash"
    );
    let tp = TopicPartition::new(&offsets, p);
    let to = rotated(&info.replicas);
    let t = Instant::now();
    nodes::reassign(&admin, &[(tp.clone(), to.clone())]).await;
    nodes::elect_preferred(&admin, std::slice::from_ref(&tp)).await;
    let followed = testkit::eventually_async(Duration::from_secs(30), || async {
        admin
            .find_coordinator(kafka_wire::CoordinatorKind::Group, &load.group)
            .await
            .is_ok_and(|c| c == to[0])
    })
    .await;
    assert!(
        followed,
        "FindCoordinator does not name node {} 30 s after it took __consumer_offsets-{p}",
        to[0]
    );
    eprintln!(
        "reassignment: the group's coordinator moved from node {coordinator} to node {} \
         (__consumer_offsets-{p} {:?} -> {to:?}) in {:.2} s ({:+.2} s into the fault)",
        to[0],
        info.replicas,
        t.elapsed().as_secs_f64(),
        load.since_fault(Instant::now())
    );
    load.wait_flowing("after the coordinator moved").await;

    // 3. Each input partition's leader out of its replicas, then back in last.
    let mut shrink = Vec::new();
    let mut grow = Vec::new();
    for (p, info) in nodes::placement(&admin, &load.topic).await {
        let without: Vec<i32> = info
            .replicas
            .iter()
            .copied()
            .filter(|&r| r != info.leader)
            .collect();
        let mut back = without.clone();
        back.push(info.leader);
        let tp = TopicPartition::new(&load.topic, p);
        shrink.push((tp.clone(), without));
        grow.push((tp, back));
    }
    let shrunk = nodes::reassign(&admin, &shrink).await;
    let leaders_between = nodes::leaders(&admin, &load.topic).await;
    load.wait_flowing("with two replicas").await;
    let grown = nodes::reassign(&admin, &grow).await;
    eprintln!(
        "reassignment: each input leader out of its replicas in {:.2} s (leaders now {leaders_between:?}), \
         back in, its log copied, in {:.2} s ({:+.2} s into the fault)",
        shrunk.as_secs_f64(),
        grown.as_secs_f64(),
        load.since_fault(Instant::now())
    );
    for (tp, back) in &grow {
        let out = back.last().copied();
        assert_ne!(
            Some(leaders_between[&tp.partition]),
            out,
            "{tp}: node {out:?}, taken out of its replicas, still leads"
        );
    }
    eprintln!(
        "reassignment: every move done in {:.2} s",
        began.elapsed().as_secs_f64()
    );
    load.wait_flowing("after the reassignments").await;
    load.finish((
        GROUP_SESSION + Duration::from_secs(2),
        "the group's session + 2 s (no node fails: nothing should wait for one)",
    ))
    .await;
}

/// A reassignment that adds a replica to a partition with 4 MiB of log,
/// its copy held back by a 1 KiB/s follower replication throttle: listed
/// (adding the new replica), cancelled (the replicas as before), and
/// every refusal answered per partition with the controller's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_reassignment_under_way_is_listed_and_cancelled_and_refusals_name_the_partition() {
    let cluster = testkit::require_cluster!();
    let env = cluster.broker_env();
    let admin = testkit::client(&env).await;
    let mut topic = NewTopic::new(testkit::unique_name("reassign-cancel"), 1);
    topic.replication_factor = 2;
    let topic = testkit::create_topic_with(&admin, topic).await;
    let tp = TopicPartition::new(&topic, 0);
    let before = nodes::placement(&admin, &topic).await[&0].clone();
    let third = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| !before.replicas.contains(id))
        .expect("a node without a replica");
    let value = "x".repeat(1024);
    testkit::produce(
        &admin,
        &env,
        (0..4096).map(|i| {
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(value.clone())
        }),
    )
    .await;
    let rate = "follower.replication.throttled.rate";
    admin
        .alter_configs(&ConfigResource::Broker(third), &[(rate, Some("1024"))])
        .await
        .expect("throttle the new replica's fetches");
    // On a task of its own, so that the throttle is lifted even when an
    // assertion fails.
    let (a, t, tp_, before_) = (admin.clone(), topic.clone(), tp.clone(), before.clone());
    let outcome = tokio::spawn(async move {
        let (admin, topic, tp, before) = (a, t, tp_, before_);
        admin
            .alter_configs(
                &ConfigResource::Topic(topic.clone()),
                &[("follower.replication.throttled.replicas", Some("*"))],
            )
            .await
            .expect("throttle the topic's followers");
        let mut to = before.replicas.clone();
        to.push(third);
        let answers = admin
            .alter_partition_reassignments(&[PartitionReassignment::to(tp.clone(), to.clone())])
            .await
            .expect("AlterPartitionReassignments");
        answers[&tp].as_ref().expect("the move accepted");

        let listed = admin
            .list_partition_reassignments(Some(std::slice::from_ref(&tp)))
            .await
            .expect("ListPartitionReassignments");
        let ongoing = listed.get(&tp).unwrap_or_else(|| {
            panic!("{tp} not under way right after the move, behind a 1 KiB/s throttle: {listed:?}")
        });
        assert_eq!(ongoing.adding, [third], "{ongoing:?}");
        assert!(ongoing.removing.is_empty(), "{ongoing:?}");
        let mut all = ongoing.replicas.clone();
        all.sort_unstable();
        let mut want = to.clone();
        want.sort_unstable();
        assert_eq!(all, want, "replicas while adding: the old and the new");
        let everywhere = admin
            .list_partition_reassignments(None)
            .await
            .expect("ListPartitionReassignments, all");
        assert!(everywhere.contains_key(&tp), "{everywhere:?}");

        let cancelled = admin
            .alter_partition_reassignments(&[PartitionReassignment::cancel(tp.clone())])
            .await
            .expect("cancel");
        cancelled[&tp].as_ref().expect("the cancel accepted");
        let back = testkit::eventually_async(Duration::from_secs(30), || async {
            let gone = admin
                .list_partition_reassignments(Some(std::slice::from_ref(&tp)))
                .await
                .is_ok_and(|l| l.is_empty());
            gone && nodes::placement(&admin, &topic).await[&0].replicas == before.replicas
        })
        .await;
        assert!(
            back,
            "{tp} not back on {:?} 30 s after the cancel",
            before.replicas
        );

        // Refusals, each for its partition.
        let again = admin
            .alter_partition_reassignments(&[
                PartitionReassignment::cancel(tp.clone()),
                PartitionReassignment::to(TopicPartition::new(&topic, 7), [1, 2]),
            ])
            .await
            .expect("AlterPartitionReassignments");
        assert_code(&again[&tp], KafkaCode::NoReassignmentInProgress);
        assert_code(
            &again[&TopicPartition::new(&topic, 7)],
            KafkaCode::UnknownTopicOrPartition,
        );
        let invalid = admin
            .alter_partition_reassignments(&[PartitionReassignment::to(
                tp.clone(),
                [before.replicas[0], 99],
            )])
            .await
            .expect("AlterPartitionReassignments");
        assert_code(&invalid[&tp], KafkaCode::InvalidReplicaAssignment);
        let e = invalid[&tp].as_ref().unwrap_err().to_string();
        eprintln!("reassign-cancel: a move to broker 99: {e}");

        for election in [ElectionType::Preferred, ElectionType::Unclean] {
            let r = admin
                .elect_leaders(election, Some(std::slice::from_ref(&tp)))
                .await
                .expect("ElectLeaders");
            assert!(
                matches!(r[&tp], LeaderElection::NotNeeded),
                "{election:?} election for {tp}, led by its preferred replica: {:?}",
                r[&tp]
            );
        }
    })
    .await;
    // Whatever happened: no throttle left behind.
    let _ = admin
        .alter_configs(&ConfigResource::Broker(third), &[(rate, None)])
        .await;
    let _ = admin.delete_topic(&topic).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn assert_code(answer: &Result<(), Error>, want: KafkaCode) {
    match answer {
        Err(Error::Broker { code, .. }) if *code == want => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}
