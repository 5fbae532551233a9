//! A rolling restart of all three nodes under load, as an operator does
//! one: stop a node cleanly (controlled shutdown: its leaderships move
//! first), start it again, wait until no partition is under-replicated,
//! then the next.
//!
//! Each stop moves partition leaders, the group's coordinator (on one of
//! the three) and the transaction coordinator with it, and the active
//! controller once; the client must follow every move while writing and
//! reading, and the group's members keep their session.

use std::time::{Duration, Instant};

use super::load::{Load, GROUP_SESSION};
use super::nodes::{self, Restore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_rolling_restart_of_every_node_loses_nothing_and_stalls_no_partition_past_the_session() {
    let cluster = testkit::require_cluster!();
    let nodes: Vec<i32> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut load = Load::start("rolling-restart", cluster).await;
    // Every topic the load lives on, internal ones included: a node is
    // stopped only once all of them are fully replicated again.
    let topics = [
        load.topic.clone(),
        load.out_topic().to_string(),
        "__consumer_offsets".to_string(),
        "__transaction_state".to_string(),
    ];
    let began = load.fault_begins();
    for &n in &nodes {
        let coordinator = nodes::coordinator(&load.admin, &load.group).await;
        let leads: Vec<i32> = nodes::leaders(&load.admin, &load.topic)
            .await
            .into_iter()
            .filter(|&(_, l)| l == n)
            .map(|(p, _)| p)
            .collect();
        let mut restore = Restore(vec![n]);
        let t = Instant::now();
        nodes::in_background(format!("stop node {n}"), move || testkit::stop_node(n))
            .await
            .expect("stop task");
        let stopped = t.elapsed();
        nodes::in_background(format!("start node {n}"), move || testkit::start_node(n))
            .await
            .expect("start task");
        restore.0.clear();
        let started = t.elapsed();
        let replicated = testkit::eventually_async(Duration::from_secs(30), || {
            nodes::fully_replicated(&load.admin, &topics)
        })
        .await;
        assert!(
            replicated,
            "partitions still under-replicated 30 s after node {n} came back"
        );
        eprintln!(
            "rolling-restart: node {n} (leader of partitions {leads:?}{}) stopped in {:.2} s, served again at {:.2} s, \
             every partition fully replicated at {:.2} s ({:+.2} s into the restart)",
            if coordinator == n { ", the group's coordinator" } else { "" },
            stopped.as_secs_f64(),
            started.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            load.since_fault(Instant::now())
        );
    }
    eprintln!(
        "rolling-restart: all three restarted in {:.2} s",
        began.elapsed().as_secs_f64()
    );
    load.wait_flowing("after the restarts").await;
    load.finish((
        GROUP_SESSION + Duration::from_secs(2),
        "the group's session + 2 s",
    ))
    .await;
}
