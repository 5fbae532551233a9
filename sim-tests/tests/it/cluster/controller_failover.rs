//! The active controller's node killed with `kill -9` under load
//! (controller failover), and started again at once.
//!
//! The two other voters elect a new controller once they stop hearing
//! from the old one (`controller.quorum.fetch.timeout.ms`, then an
//! election, `controller.quorum.election.timeout.ms`). The new controller
//! starts every broker's session afresh, so the dead node, a broker too,
//! is fenced (its leaderships moved, out of every ISR) a broker session
//! after the election. Clients never talk to controllers: they see a
//! broker die late.
//!
//! The group is named so that its coordinator is on the controller's node
//! too: the coordinator then moves after the election and the broker
//! session, later than the members' own session ends, so each member
//! gives its partitions up (DESIGN.md invariant 55) and rejoins the new
//! coordinator. It rejoined under a new member id, and the new
//! coordinator, which had loaded the group with the old ids, waited for
//! those to expire too: 13 s without a record instead of 7 (fixed in
//! `consumer-core/src/group/classic/membership.rs`: the member id is kept).

use std::time::{Duration, Instant};

use super::load::{Load, Setup};
use super::nodes::{self, Restore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster: cargo xtask test runs it in its cluster step"]
async fn the_controller_killed_loses_nothing_and_stalls_no_longer_than_election_and_session() {
    let cluster = testkit::require_cluster!();
    let controller = nodes::active_controller(&cluster)
        .await
        .expect("the active controller (DescribeQuorum)");
    // The group's coordinator on the controller's node too (see above).
    let group =
        nodes::group_coordinated(&cluster, "fault-controller-failover", |c| c == controller).await;
    let setup = Setup {
        group: Some(group),
        ..Setup::default()
    };
    let mut load = Load::start_with("controller-failover", cluster, setup).await;
    let config = |name| nodes::broker_config_ms(&load.admin, controller, name);
    let session = config("broker.session.timeout.ms").await;
    let election = config("controller.quorum.fetch.timeout.ms").await
        + config("controller.quorum.election.timeout.ms").await;
    let leads: Vec<i32> = nodes::leaders(&load.admin, &load.topic)
        .await
        .into_iter()
        .filter(|&(_, l)| l == controller)
        .map(|(p, _)| p)
        .collect();
    eprintln!(
        "controller-failover: killing node {controller}, the active controller and the group's coordinator \
         (leads partitions {leads:?}); quorum fetch + election timeouts {election:?}, broker session {session:?}"
    );

    let mut restore = Restore(vec![controller]);
    let killed_at = load.fault_begins();
    testkit::kill_node(controller).expect("kill the controller");
    let restart = nodes::in_background(format!("start node {controller}"), move || {
        testkit::start_node(controller)
    });
    let elected = std::sync::Mutex::new(None);
    let failed_over = testkit::eventually_async(Duration::from_secs(30), || async {
        let c = nodes::active_controller(&load.cluster)
            .await
            .filter(|&c| c != controller);
        if let Some(c) = c {
            *elected.lock().expect("lock") = Some((c, killed_at.elapsed()));
        }
        c.is_some()
    })
    .await;
    assert!(failed_over, "no new controller within 30 s");
    let (new_controller, election_took) = elected.into_inner().expect("lock").expect("elected");
    let moved = testkit::eventually_async(Duration::from_secs(30), || async {
        nodes::leaders(&load.admin, &load.topic)
            .await
            .into_iter()
            .all(|(_, l)| l >= 0 && l != controller)
    })
    .await;
    let moved_after = killed_at.elapsed();
    assert!(
        moved,
        "node {controller}'s partitions got no new leader within 30 s"
    );
    let took = restart.await.expect("restart task");
    restore.0.clear();
    eprintln!(
        "controller-failover: node {new_controller} controls {:.2} s after the kill; leaders moved by {:.2} s; \
         node {controller} serves again {:+.2} s after it (its start took {:.2} s)",
        election_took.as_secs_f64(),
        moved_after.as_secs_f64(),
        load.since_fault(Instant::now()),
        took.as_secs_f64()
    );
    load.wait_flowing("after the failover").await;
    load.finish((
        election + session + Duration::from_secs(2),
        "the quorum's fetch and election timeouts, then the new controller's broker session, + 2 s",
    ))
    .await;
}
