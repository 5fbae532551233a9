//! A partition's leader killed with `kill -9` under load, and started
//! again at once (a crashed broker that its supervisor restarts).
//!
//! The controller notices only when the node's session ends
//! (`broker.session.timeout.ms`): then it moves the node's leaderships and
//! takes it out of every ISR. Until then the node's partitions have no
//! reachable leader, and every partition waits for it to acknowledge
//! acks=all writes (it is in every ISR): the feed stops for the session,
//! whatever the client does. The client's part is what comes after: find
//! the new leaders at once, lose nothing, write nothing twice.
//!
//! It did not find them at once: a batch whose request to the dead node
//! failed retried after its backoff by the metadata refreshed right after
//! the failure, from before the failover, went to the dead node again,
//! and only the retry after that, a whole backoff later, found the new
//! leader. The feed resumed 1.1–2.0 s after the leaders moved (gaps of
//! 4.7–6.0 s for a 4 s broker session, past the bound in one run of
//! five). The producer now asks for the metadata again before it sends to
//! a leader whose last request failed whole
//! (`kafka-wire/src/producer/sender.rs`): 0.4–1.5 s, gaps of 4.3–5.6 s in
//! 14 runs. What is left is the retry's own backoff: Java (KIP-951) also
//! skips it when the partition's leader changed.

use std::time::{Duration, Instant};

use super::load::Load;
use super::nodes::{self, Restore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn a_killed_leader_loses_nothing_and_stalls_no_longer_than_its_session() {
    let cluster = testkit::require_cluster!();
    let mut load = Load::start("leader-kill", cluster).await;
    let coordinator = nodes::coordinator(&load.admin, &load.group).await;
    let controller = nodes::active_controller(&load.cluster).await;
    let leaders = nodes::leaders(&load.admin, &load.topic).await;
    // A leader of the input that is neither the group's coordinator nor
    // the controller: the fault is the leader's death alone.
    let victim = leaders
        .values()
        .copied()
        .find(|&n| n != coordinator && Some(n) != controller)
        .or_else(|| leaders.values().copied().find(|&n| n != coordinator))
        .expect("three leaders, one coordinator");
    let session = nodes::broker_session(&load.admin, victim).await;
    let led: Vec<i32> = leaders
        .iter()
        .filter(|(_, &l)| l == victim)
        .map(|(&p, _)| p)
        .collect();
    eprintln!(
        "leader-kill: killing node {victim} (leads partitions {led:?}; coordinator {coordinator}, controller {controller:?}), \
         broker session {session:?}, {} records handled so far",
        load.handled.count()
    );

    let mut restore = Restore(vec![victim]);
    let killed_at = load.fault_begins();
    testkit::kill_node(victim).expect("kill the leader");
    // Started again at once: its old session still has to end before the
    // controller registers it, which is when the failover happens anyway.
    let restart = nodes::in_background(format!("start node {victim}"), move || {
        testkit::start_node(victim)
    });
    let moved = testkit::eventually_async(Duration::from_secs(30), || async {
        nodes::leaders(&load.admin, &load.topic)
            .await
            .into_iter()
            .all(|(_, l)| l >= 0 && l != victim)
    })
    .await;
    let failover = killed_at.elapsed();
    assert!(
        moved,
        "node {victim}'s partitions got no new leader within 30 s"
    );
    let took = restart.await.expect("restart task");
    restore.0.clear();
    let back = Instant::now();
    eprintln!(
        "leader-kill: new leaders {:.2} s after the kill; node {victim} serves again {:+.2} s after it (its start took {:.2} s)",
        failover.as_secs_f64(),
        load.since_fault(back),
        took.as_secs_f64()
    );
    load.wait_flowing("after the restart").await;
    load.finish((
        session + Duration::from_secs(2),
        "the broker session, after which the controller moves the leaderships, + 2 s",
    ))
    .await;
}
