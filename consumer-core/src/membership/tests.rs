//! Every transition of the membership state machine, with a fake clock.

use super::*;
use crate::assignor::{CooperativeStickyAssignor, RangeAssignor};

const SEC: Duration = Duration::from_secs(1);

fn cfg(instance: Option<&str>) -> MembershipConfig {
    MembershipConfig {
        group_id: "g".into(),
        group_instance_id: instance.map(String::from),
        session_timeout: 10 * SEC,
        rebalance_timeout: 30 * SEC,
        heartbeat_interval: 3 * SEC,
        max_poll_interval: 60 * SEC,
        retry_backoff: Duration::from_millis(100),
    }
}

fn machine(assignor: Arc<dyn Assignor>, instance: Option<&str>, t0: Instant) -> Membership {
    Membership::new(cfg(instance), vec![assignor], vec!["t".into()], t0)
}

/// A fresh member that found its coordinator and sent JoinGroup.
fn joining(instance: Option<&str>, t0: Instant) -> Membership {
    let mut m = machine(Arc::new(RangeAssignor), instance, t0);
    m.poll_action(t0);
    m.coordinator_found(t0);
    assert!(matches!(m.poll_action(t0), Some(Action::Join { .. })));
    m
}

/// A JoinGroup answered with `code`.
fn join_error(code: KafkaCode) -> JoinResult {
    JoinResult {
        error: Some(code),
        ..JoinResult::default()
    }
}

fn parts() -> BTreeMap<String, i32> {
    [("t".to_string(), 4)].into_iter().collect()
}

fn drain(m: &mut Membership, now: Instant) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action(now)).collect()
}

/// Drive a fresh member to Stable as the group's only member (leader).
fn stable(m: &mut Membership, now: Instant) -> Vec<TopicPartition> {
    assert_eq!(m.poll_action(now), Some(Action::FindCoordinator));
    m.coordinator_found(now);
    let Some(Action::Join { protocols, .. }) = m.poll_action(now) else {
        panic!("expected join")
    };
    let (name, meta) = protocols[0].clone();
    m.handle_join(
        JoinResult {
            generation: m.generation().max(0) + 1,
            member_id: "m1".into(),
            leader: "m1".into(),
            protocol_name: Some(name),
            members: vec![("m1".into(), None, meta)],
            ..JoinResult::default()
        },
        &parts(),
        now,
    );
    let Some(Action::Sync { assignments, .. }) = m.poll_action(now) else {
        panic!("expected sync")
    };
    m.handle_sync(None, &assignments[0].1, now);
    let actions = drain(m, now);
    match actions.as_slice() {
        [Action::Assign(p)] => p.clone(),
        other => panic!("expected assign, got {other:?}"),
    }
}

#[test]
fn join_sync_assigns_and_heartbeats_on_schedule() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    assert_eq!(assigned.len(), 4);
    assert!(matches!(m.state(), State::Stable { generation: 1 }));
    assert!(m.may_commit(&TopicPartition::new("t", 0)));
    assert_eq!(m.poll_action(t0 + 2 * SEC), None);
    assert!(matches!(
        m.poll_action(t0 + 3 * SEC),
        Some(Action::Heartbeat { generation: 1, .. })
    ));
    // No second heartbeat while one is in flight.
    assert_eq!(m.poll_action(t0 + 5 * SEC), None);
    m.handle_heartbeat(None, t0 + 5 * SEC);
    assert_eq!(m.poll_timeout(), Some(t0 + 8 * SEC));
}

#[test]
fn member_id_required_rejoins_with_the_assigned_id() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    m.poll_action(t0);
    m.coordinator_found(t0);
    let Some(Action::Join { member_id, .. }) = m.poll_action(t0) else {
        panic!()
    };
    assert_eq!(member_id, "");
    m.handle_join(
        JoinResult {
            error: Some(KafkaCode::MemberIdRequired),
            member_id: "assigned-1".into(),
            ..JoinResult::default()
        },
        &parts(),
        t0,
    );
    let Some(Action::Join {
        member_id, reason, ..
    }) = m.poll_action(t0)
    else {
        panic!()
    };
    assert_eq!(member_id, "assigned-1");
    assert!(reason.contains("KIP-394"));
}

#[test]
fn rebalance_in_progress_on_join_retries_after_backoff() {
    let t0 = Instant::now();
    let mut m = joining(None, t0);
    for code in [
        KafkaCode::RebalanceInProgress,
        KafkaCode::CoordinatorLoadInProgress,
    ] {
        m.handle_join(join_error(code), &parts(), t0);
        assert_eq!(m.poll_action(t0), None, "{code:?}: waits for the backoff");
        assert!(
            matches!(m.poll_action(t0 + SEC), Some(Action::Join { .. })),
            "{code:?}"
        );
    }
}

#[test]
fn not_coordinator_finds_the_coordinator_again() {
    let t0 = Instant::now();
    for code in [
        KafkaCode::NotCoordinator,
        KafkaCode::CoordinatorNotAvailable,
    ] {
        let mut m = joining(None, t0);
        m.handle_join(join_error(code), &parts(), t0);
        assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));
        m.coordinator_found(t0 + SEC);
        assert!(matches!(m.poll_action(t0 + SEC), Some(Action::Join { .. })));
    }
}

#[test]
fn fatal_join_codes_stop_with_a_message_that_says_what_to_fix() {
    let t0 = Instant::now();
    for (code, needle) in [
        (KafkaCode::FencedInstanceId, "group.instance.id"),
        (KafkaCode::GroupMaxSizeReached, "group.max.size"),
        (
            KafkaCode::InconsistentGroupProtocol,
            "partition.assignment.strategy",
        ),
        (
            KafkaCode::GroupAuthorizationFailed,
            "GroupAuthorizationFailed",
        ),
    ] {
        let mut m = joining(Some("i-1"), t0);
        m.handle_join(join_error(code), &parts(), t0);
        let Some(Action::Fatal(msg)) = m.poll_action(t0) else {
            panic!("{code:?}")
        };
        assert!(msg.contains(needle), "{code:?}: {msg}");
        assert!(matches!(m.state(), State::Fatal(_)));
    }
}

#[test]
fn heartbeat_rebalance_in_progress_revokes_eagerly_then_rejoins() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    m.poll_action(t0 + 3 * SEC);
    m.handle_heartbeat(Some(KafkaCode::RebalanceInProgress), t0 + 3 * SEC);
    let actions = drain(&mut m, t0 + 3 * SEC);
    assert_eq!(
        actions[0],
        Action::Revoke(assigned),
        "eager: revoke (commit allowed) first"
    );
    assert!(matches!(actions[1], Action::Join { .. }));
    assert!(!m.may_commit(&TopicPartition::new("t", 0)));
}

#[test]
fn illegal_generation_and_unknown_member_lose_partitions_without_commit() {
    let t0 = Instant::now();
    for code in [KafkaCode::IllegalGeneration, KafkaCode::UnknownMemberId] {
        let mut m = machine(Arc::new(RangeAssignor), None, t0);
        let assigned = stable(&mut m, t0);
        m.poll_action(t0 + 3 * SEC);
        m.handle_heartbeat(Some(code), t0 + 3 * SEC);
        let actions = drain(&mut m, t0 + 3 * SEC);
        assert_eq!(actions[0], Action::Lose(assigned), "{code:?}");
        let Action::Join { member_id, .. } = &actions[1] else {
            panic!()
        };
        assert_eq!(member_id.is_empty(), code == KafkaCode::UnknownMemberId);
        assert_eq!(m.generation(), -1);
    }
}

#[test]
fn sync_errors() {
    let t0 = Instant::now();
    let to_sync = |m: &mut Membership| {
        m.poll_action(t0);
        m.coordinator_found(t0);
        let Some(Action::Join { protocols, .. }) = m.poll_action(t0) else {
            panic!()
        };
        m.handle_join(
            JoinResult {
                generation: 1,
                member_id: "m1".into(),
                leader: "other".into(),
                protocol_name: Some(protocols[0].0.clone()),
                ..JoinResult::default()
            },
            &parts(),
            t0,
        );
        let Some(Action::Sync { assignments, .. }) = m.poll_action(t0) else {
            panic!()
        };
        assert!(assignments.is_empty(), "followers send no assignments");
    };
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    to_sync(&mut m);
    m.handle_sync(Some(KafkaCode::RebalanceInProgress), &Bytes::new(), t0);
    assert!(matches!(m.poll_action(t0), Some(Action::Join { .. })));

    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    to_sync(&mut m);
    m.handle_sync(Some(KafkaCode::NotCoordinator), &Bytes::new(), t0);
    assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));

    let mut m = machine(Arc::new(RangeAssignor), Some("i"), t0);
    to_sync(&mut m);
    m.handle_sync(Some(KafkaCode::FencedInstanceId), &Bytes::new(), t0);
    assert!(matches!(m.poll_action(t0), Some(Action::Fatal(_))));
}

#[test]
fn cooperative_revokes_only_what_moves_then_rejoins() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(CooperativeStickyAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    assert_eq!(assigned.len(), 4);
    // A second member joined: heartbeat says rebalance; cooperative keeps partitions.
    m.poll_action(t0 + 3 * SEC);
    m.handle_heartbeat(Some(KafkaCode::RebalanceInProgress), t0 + 3 * SEC);
    let Some(Action::Join { protocols, .. }) = m.poll_action(t0 + 3 * SEC) else {
        panic!()
    };
    assert!(
        m.owned().len() == 4,
        "cooperative: nothing revoked before the join"
    );
    let sub = Subscription::decode(&protocols[0].1).unwrap();
    assert_eq!(
        sub.owned.len(),
        4,
        "owned partitions travel in the subscription"
    );
    m.handle_join(
        JoinResult {
            generation: 2,
            member_id: "m1".into(),
            leader: "m2".into(),
            protocol_name: Some("cooperative-sticky".into()),
            ..JoinResult::default()
        },
        &parts(),
        t0 + 3 * SEC,
    );
    m.poll_action(t0 + 3 * SEC);
    let keep = Assignment {
        partitions: vec![TopicPartition::new("t", 0), TopicPartition::new("t", 1)],
        user_data: None,
    };
    m.handle_sync(None, &keep.encode(3), t0 + 3 * SEC);
    let actions = drain(&mut m, t0 + 3 * SEC);
    assert_eq!(
        actions[0],
        Action::Revoke(vec![
            TopicPartition::new("t", 2),
            TopicPartition::new("t", 3)
        ])
    );
    assert!(
        matches!(&actions[1], Action::Join { reason, .. } if reason.contains("second phase")),
        "{actions:?}"
    );
}

#[test]
fn max_poll_interval_exceeded_leaves_on_purpose_and_rejoins_on_next_poll() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    // Heartbeats keep succeeding (they are independent of processing)…
    for i in 1..20 {
        let t = t0 + 3 * i * SEC;
        if let Some(Action::Heartbeat { .. }) = m.poll_action(t) {
            m.handle_heartbeat(None, t);
        }
    }
    // …but the application never polled: at 61 s the member leaves.
    let actions = drain(&mut m, t0 + 61 * SEC);
    assert_eq!(actions[0], Action::Lose(assigned));
    assert!(
        matches!(&actions[1], Action::Leave { reason, .. } if reason.contains("max.poll.interval"))
    );
    assert_eq!(m.state(), &State::LeftForPollTimeout);
    assert!(
        !m.may_commit(&TopicPartition::new("t", 0)),
        "late commits are refused locally"
    );
    m.polled(t0 + 62 * SEC);
    assert_eq!(m.poll_action(t0 + 62 * SEC), Some(Action::FindCoordinator));
}

#[test]
fn session_timeout_without_heartbeats_loses_partitions() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    m.polled(t0 + 11 * SEC);
    let actions = drain(&mut m, t0 + 11 * SEC);
    assert_eq!(actions[0], Action::Lose(assigned));
    assert!(actions.contains(&Action::FindCoordinator));
}

#[test]
fn coordinator_moving_while_stable_resumes_heartbeats_without_rejoining() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut m, t0);
    m.poll_action(t0 + 3 * SEC);
    m.handle_heartbeat(Some(KafkaCode::NotCoordinator), t0 + 3 * SEC);
    assert_eq!(m.poll_action(t0 + 3 * SEC), Some(Action::FindCoordinator));
    m.coordinator_found(t0 + 4 * SEC);
    assert!(matches!(
        m.poll_action(t0 + 4 * SEC),
        Some(Action::Heartbeat { .. })
    ));
    assert_eq!(m.owned().len(), 4);
}

#[test]
fn static_members_do_not_leave_on_close() {
    let t0 = Instant::now();
    let mut dynamic = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut dynamic, t0);
    dynamic.close();
    let actions = drain(&mut dynamic, t0);
    assert!(matches!(actions[0], Action::Revoke(_)));
    assert!(matches!(actions[1], Action::Leave { .. }));

    let mut fixed = machine(Arc::new(RangeAssignor), Some("instance-1"), t0);
    stable(&mut fixed, t0);
    fixed.close();
    let actions = drain(&mut fixed, t0);
    assert_eq!(
        actions.len(),
        1,
        "static member: revoke only, no LeaveGroup"
    );
}

#[test]
fn connection_failure_during_join_finds_the_coordinator_and_rejoins() {
    let t0 = Instant::now();
    let mut m = joining(None, t0);
    m.handle_request_failed(t0);
    assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));
    m.coordinator_found(t0 + SEC);
    assert!(matches!(m.poll_action(t0 + SEC), Some(Action::Join { .. })));
}
