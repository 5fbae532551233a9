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
        retry_backoff: Backoff::exponential(Duration::from_millis(100), SEC),
        metadata_max_age: 300 * SEC,
        rack: None,
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
    assert!(matches!(
        after_metadata(&mut m, t0),
        Some(Action::Join { .. })
    ));
    m
}

/// The next action; a metadata refresh first asked for is answered with
/// [`parts`] (a fresh member reads metadata before its first join).
fn after_metadata(m: &mut Membership, now: Instant) -> Option<Action> {
    match m.poll_action(now) {
        Some(Action::RefreshMetadata { .. }) => {
            m.handle_metadata(&parts(), now);
            m.poll_action(now)
        }
        other => other,
    }
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
    let Some(Action::Join { protocols, .. }) = after_metadata(m, now) else {
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
    let Some(Action::Join { member_id, .. }) = after_metadata(&mut m, t0) else {
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
fn consecutive_retries_back_off_exponentially_and_start_over_once_heard_from() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    // Joins refused again and again: 100 ms doubling, capped at 1 s.
    let mut m = joining(None, t0);
    let mut now = t0;
    for wait in [100, 200, 400, 800, 1000, 1000] {
        let refused = join_error(KafkaCode::CoordinatorLoadInProgress);
        m.handle_join(refused, &parts(), now);
        assert_eq!(m.poll_action(now + ms(wait - 1)), None, "waits {wait} ms");
        now += ms(wait);
        assert!(
            matches!(m.poll_action(now), Some(Action::Join { .. })),
            "joins again after {wait} ms"
        );
    }
    // A stable member's failed heartbeats: 100, 200 ms, then one gets
    // through (the interval again), and the next failure starts over.
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut m, t0);
    let mut now = t0 + 3 * SEC;
    for (error, wait) in [
        (Some(KafkaCode::CoordinatorLoadInProgress), 100),
        (Some(KafkaCode::CoordinatorLoadInProgress), 200),
        (None, 3000),
        (Some(KafkaCode::CoordinatorLoadInProgress), 100),
    ] {
        assert!(matches!(m.poll_action(now), Some(Action::Heartbeat { .. })));
        m.handle_heartbeat(error, now);
        assert_eq!(m.poll_timeout(), Some(now + ms(wait)), "{error:?}");
        now += ms(wait);
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
fn a_coordinator_that_refuses_is_asked_again_after_a_growing_backoff_not_at_once() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    // Joining: the node FindCoordinator names keeps answering
    // NOT_COORDINATOR (it leads the offsets partition, has not loaded it).
    let mut m = joining(None, t0);
    let mut now = t0;
    for wait in [100, 200, 400] {
        m.handle_join(join_error(KafkaCode::NotCoordinator), &parts(), now);
        assert_eq!(m.poll_action(now), Some(Action::FindCoordinator));
        m.coordinator_found(now);
        assert_eq!(m.poll_action(now), None, "not at once");
        assert_eq!(m.poll_timeout(), Some(now + ms(wait)));
        now += ms(wait);
        assert!(matches!(m.poll_action(now), Some(Action::Join { .. })));
    }
    // Stable: a heartbeat refused the same way.
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut m, t0);
    let at = t0 + 3 * SEC;
    assert!(matches!(m.poll_action(at), Some(Action::Heartbeat { .. })));
    m.handle_heartbeat(Some(KafkaCode::NotCoordinator), at);
    assert_eq!(m.poll_action(at), Some(Action::FindCoordinator));
    m.coordinator_found(at);
    assert_eq!(m.poll_action(at), None, "not at once");
    assert!(matches!(
        m.poll_action(at + ms(100)),
        Some(Action::Heartbeat { .. })
    ));
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
        let Some(Action::Join { protocols, .. }) = after_metadata(m, t0) else {
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
    // The rejoin keeps the member id: a new coordinator that loaded the
    // group knows it (a new id would leave the old one for it to wait
    // for); one that expired us answers UNKNOWN_MEMBER_ID.
    m.coordinator_found(t0 + 11 * SEC);
    let join = after_metadata(&mut m, t0 + 11 * SEC);
    assert!(
        matches!(&join, Some(Action::Join { member_id, .. }) if member_id == "m1"),
        "{join:?}"
    );
    m.handle_join(
        join_error(KafkaCode::UnknownMemberId),
        &parts(),
        t0 + 11 * SEC,
    );
    let rejoin = after_metadata(&mut m, t0 + 11 * SEC);
    assert!(
        matches!(&rejoin, Some(Action::Join { member_id, .. }) if member_id.is_empty()),
        "{rejoin:?}"
    );
}

#[test]
fn a_heartbeat_unanswered_until_the_session_ends_is_abandoned_and_the_partitions_lost() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    let assigned = stable(&mut m, t0);
    let deadline = m.session_deadline().expect("stable");
    // A heartbeat goes out and hangs; the driver waits until the deadline.
    let hb = m.poll_action(t0 + 3 * SEC);
    assert!(matches!(hb, Some(Action::Heartbeat { .. })), "{hb:?}");
    m.polled(deadline);
    m.heartbeat_abandoned(deadline - Duration::from_millis(1));
    assert_eq!(
        m.owned().len(),
        assigned.len(),
        "not before the session ends"
    );
    m.heartbeat_abandoned(deadline + Duration::from_millis(1));
    let actions = drain(&mut m, deadline + Duration::from_millis(1));
    assert_eq!(actions[0], Action::Lose(assigned));
    assert!(actions.contains(&Action::FindCoordinator));
    assert_eq!(m.session_deadline(), None, "rejoining: no session");
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

// ---- metadata: partition counts, topics created later, patterns ----

/// `metadata.max.age.ms` of the members below.
const AGE: Duration = Duration::from_secs(5);

fn counts(entries: &[(&str, i32)]) -> PartitionCounts {
    entries.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

fn subscription_bytes(topics: &[&str]) -> Bytes {
    Subscription {
        topics: topics.iter().map(|t| t.to_string()).collect(),
        ..Subscription::default()
    }
    .encode(CONSUMER_PROTOCOL_VERSION)
}

/// Answer a Join as the leader ("m1") of itself and `others` (id, topics),
/// with `md` as the metadata the assignment is computed from; the actions
/// that follow the sync.
fn lead(
    m: &mut Membership,
    join: Action,
    others: &[(&str, &[&str])],
    md: &PartitionCounts,
    now: Instant,
) -> Vec<Action> {
    let Action::Join { protocols, .. } = join else {
        panic!("expected join, got {join:?}")
    };
    let (name, meta) = protocols[0].clone();
    let mut members = vec![("m1".to_string(), None, meta)];
    for (id, topics) in others {
        members.push((id.to_string(), None, subscription_bytes(topics)));
    }
    m.handle_join(
        JoinResult {
            generation: m.generation().max(0) + 1,
            member_id: "m1".into(),
            leader: "m1".into(),
            protocol_name: Some(name),
            members,
            ..JoinResult::default()
        },
        md,
        now,
    );
    let Some(Action::Sync { assignments, .. }) = m.poll_action(now) else {
        panic!("expected sync")
    };
    let ours = assignments.iter().find(|(id, _)| id == "m1").unwrap();
    m.handle_sync(None, &ours.1.clone(), now);
    drain(m, now)
}

/// A member (`metadata.max.age.ms` = 5 s) subscribed to `sub`, made stable
/// as the leader of itself and `others`, the metadata being `md` all along.
/// Returns it with what it was assigned.
fn led(
    sub: TopicSubscription,
    others: &[(&str, &[&str])],
    md: &PartitionCounts,
    t0: Instant,
) -> (Membership, Vec<TopicPartition>) {
    let cfg = MembershipConfig {
        metadata_max_age: AGE,
        ..cfg(None)
    };
    let mut m = Membership::new(cfg, vec![Arc::new(RangeAssignor)], sub, t0);
    assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));
    m.coordinator_found(t0);
    let Some(Action::RefreshMetadata { .. }) = m.poll_action(t0) else {
        panic!("metadata is read before the first join")
    };
    m.handle_metadata(md, t0);
    let join = m.poll_action(t0).unwrap();
    let assigned = match lead(&mut m, join, others, md, t0).as_slice() {
        [Action::Assign(p)] => p.clone(),
        [] => Vec::new(),
        other => panic!("expected assign, got {other:?}"),
    };
    (m, assigned)
}

/// Run the member at `at` (answering heartbeats) until it checks
/// metadata; answer with `md`. Returns the topics it asked for and the
/// actions that follow.
fn metadata_check(
    m: &mut Membership,
    at: Instant,
    md: &PartitionCounts,
) -> (Option<Vec<String>>, Vec<Action>) {
    loop {
        match m.poll_action(at) {
            Some(Action::Heartbeat { .. }) => m.handle_heartbeat(None, at),
            Some(Action::RefreshMetadata { topics }) => {
                m.handle_metadata(md, at);
                return (topics, drain(m, at));
            }
            other => panic!("expected a metadata check at {at:?}, got {other:?}"),
        }
    }
}

fn join_reason(actions: &[Action]) -> &str {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Join { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no join in {actions:?}"))
}

#[test]
fn leader_rejoins_when_a_subscribed_topic_grows_and_new_partitions_are_flagged() {
    let t0 = Instant::now();
    let md = counts(&[("t", 1)]);
    let (mut m, assigned) = led(vec!["t".to_string()].into(), &[], &md, t0);
    assert_eq!(assigned, vec![tp("t", 0)]);
    assert!(!m.appeared_after_subscribe(&tp("t", 0)));

    // Nothing changed: no rejoin, and no other check before one more age.
    let (asked, actions) = metadata_check(&mut m, t0 + AGE, &md);
    assert_eq!(asked, Some(vec!["t".to_string()]));
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(m.poll_action(t0 + AGE + SEC), None);

    // Grown to 3: eager revoke, then a join that says why.
    let grown = counts(&[("t", 3)]);
    let (_, actions) = metadata_check(&mut m, t0 + 2 * AGE, &grown);
    assert_eq!(actions[0], Action::Revoke(vec![tp("t", 0)]));
    assert!(
        join_reason(&actions).contains("topic t went from 1 to 3 partitions"),
        "{actions:?}"
    );
    let join = actions.last().unwrap().clone();
    let actions = lead(&mut m, join, &[], &grown, t0 + 2 * AGE);
    assert_eq!(
        actions,
        vec![Action::Assign(vec![tp("t", 0), tp("t", 1), tp("t", 2)])]
    );
    assert!(!m.appeared_after_subscribe(&tp("t", 0)));
    assert!(m.appeared_after_subscribe(&tp("t", 1)));
    assert!(m.appeared_after_subscribe(&tp("t", 2)));
    // The new assignment is the new baseline: no second rebalance.
    let (_, actions) = metadata_check(&mut m, t0 + 3 * AGE, &grown);
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn the_leader_watches_every_members_topics() {
    let t0 = Instant::now();
    let md = counts(&[("t", 1), ("u", 2)]);
    let (mut m, _) = led(vec!["t".to_string()].into(), &[("m2", &["u"])], &md, t0);
    let (asked, actions) = metadata_check(&mut m, t0 + AGE, &counts(&[("t", 1), ("u", 4)]));
    assert_eq!(asked, Some(vec!["t".to_string(), "u".to_string()]));
    assert!(
        join_reason(&actions).contains("topic u went from 2 to 4 partitions"),
        "{actions:?}"
    );
}

#[test]
fn a_follower_rejoins_when_its_own_topic_grows_and_ignores_others() {
    let t0 = Instant::now();
    let cfg = MembershipConfig {
        metadata_max_age: AGE,
        ..cfg(None)
    };
    let mut m = Membership::new(
        cfg,
        vec![Arc::new(RangeAssignor)],
        vec!["t".to_string()],
        t0,
    );
    m.poll_action(t0);
    m.coordinator_found(t0);
    let md = counts(&[("t", 2)]);
    let Some(Action::Join { protocols, .. }) = after_metadata(&mut m, t0) else {
        panic!()
    };
    m.handle_join(
        JoinResult {
            generation: 1,
            member_id: "m1".into(),
            leader: "m2".into(),
            protocol_name: Some(protocols[0].0.clone()),
            ..JoinResult::default()
        },
        &md,
        t0,
    );
    m.poll_action(t0);
    let mine = Assignment {
        partitions: vec![tp("t", 0)],
        user_data: None,
    };
    m.handle_sync(None, &mine.encode(3), t0);
    assert_eq!(drain(&mut m, t0), vec![Action::Assign(vec![tp("t", 0)])]);

    // Another member's topic changing is the leader's business.
    let (asked, actions) = metadata_check(&mut m, t0 + AGE, &counts(&[("t", 2), ("u", 9)]));
    assert_eq!(asked, Some(vec!["t".to_string()]));
    assert!(actions.is_empty(), "{actions:?}");
    let (_, actions) = metadata_check(&mut m, t0 + 2 * AGE, &counts(&[("t", 3)]));
    assert!(
        join_reason(&actions).contains("topic t went from 2 to 3"),
        "{actions:?}"
    );
}

#[test]
fn a_missing_subscribed_topic_is_looked_for_every_second_then_every_age() {
    let t0 = Instant::now();
    let sub: TopicSubscription = vec!["t".to_string(), "later".to_string()].into();
    let (mut m, _) = led(sub, &[], &counts(&[("t", 1)]), t0);
    // `later` is missing: the next check is a second away, not an age.
    let (asked, _) = metadata_check(&mut m, t0 + METADATA_RETRY, &counts(&[("t", 1)]));
    assert!(asked.is_some());
    let at = t0 + 2 * METADATA_RETRY;
    let (_, actions) = metadata_check(&mut m, at, &counts(&[("t", 1), ("later", 2)]));
    assert!(
        join_reason(&actions).contains("topic later appeared"),
        "{actions:?}"
    );
    // A pattern matching nothing waits the whole age.
    let (mut p, _) = led(
        TopicSubscription::pattern("^nothing-yet").unwrap(),
        &[],
        &counts(&[("t", 1)]),
        t0,
    );
    let next_check = |m: &mut Membership| {
        (1..=10).map(|s| t0 + s * SEC).find(|at| loop {
            match m.poll_action(*at) {
                Some(Action::Heartbeat { .. }) => m.handle_heartbeat(None, *at),
                Some(Action::RefreshMetadata { .. }) => break true,
                _ => break false,
            }
        })
    };
    assert_eq!(next_check(&mut p), Some(t0 + AGE));
}

#[test]
fn a_subscribed_topic_created_later_is_picked_up_and_starts_as_new() {
    let t0 = Instant::now();
    let sub: TopicSubscription = vec!["t".to_string(), "later".to_string()].into();
    let md = counts(&[("t", 1)]); // `later` does not exist yet
    let (mut m, assigned) = led(sub, &[], &md, t0);
    assert_eq!(assigned, vec![tp("t", 0)]);

    let created = counts(&[("t", 1), ("later", 2)]);
    let (asked, actions) = metadata_check(&mut m, t0 + AGE, &created);
    assert_eq!(asked, Some(vec!["later".to_string(), "t".to_string()]));
    assert!(
        join_reason(&actions).contains("topic later appeared (2 partitions)"),
        "{actions:?}"
    );
    let join = actions.last().unwrap().clone();
    let actions = lead(&mut m, join, &[], &created, t0 + AGE);
    let [Action::Assign(now_assigned)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(now_assigned.len(), 3);
    assert!(m.appeared_after_subscribe(&tp("later", 0)));
    assert!(m.appeared_after_subscribe(&tp("later", 1)));
    assert!(!m.appeared_after_subscribe(&tp("t", 0)));

    // Deleted again: the group rebalances it away.
    let (_, actions) = metadata_check(&mut m, t0 + 2 * AGE, &md);
    assert!(
        join_reason(&actions).contains("topic later disappeared"),
        "{actions:?}"
    );
}

#[test]
fn a_pattern_reads_every_topic_before_joining_and_rejoins_on_a_new_match() {
    let t0 = Instant::now();
    let sub = TopicSubscription::pattern("pre-.*").unwrap();
    let md = counts(&[("pre-a", 1), ("xpre-b", 1), ("other", 1)]);
    let cfg = MembershipConfig {
        metadata_max_age: AGE,
        ..cfg(None)
    };
    let mut m = Membership::new(cfg, vec![Arc::new(RangeAssignor)], sub, t0);
    m.poll_action(t0);
    m.coordinator_found(t0);
    assert_eq!(
        m.poll_action(t0),
        Some(Action::RefreshMetadata { topics: None }),
        "a pattern needs the full topic list"
    );
    m.handle_metadata(&md, t0);
    assert_eq!(m.topics(), ["pre-a"], "the whole name must match");
    let join = m.poll_action(t0).unwrap();
    let Action::Join { protocols, .. } = &join else {
        panic!("{join:?}")
    };
    assert_eq!(
        Subscription::decode(&protocols[0].1).unwrap().topics,
        ["pre-a"]
    );
    assert_eq!(
        lead(&mut m, join, &[], &md, t0),
        vec![Action::Assign(vec![tp("pre-a", 0)])]
    );

    let more = counts(&[("pre-a", 1), ("pre-c", 2), ("xpre-b", 1), ("other", 1)]);
    let (asked, actions) = metadata_check(&mut m, t0 + AGE, &more);
    assert_eq!(asked, None);
    assert_eq!(actions[0], Action::Revoke(vec![tp("pre-a", 0)]));
    assert!(join_reason(&actions).contains("pre-c"), "{actions:?}");
    let join = actions.last().unwrap().clone();
    let Action::Join { protocols, .. } = &join else {
        panic!("{join:?}")
    };
    assert_eq!(
        Subscription::decode(&protocols[0].1).unwrap().topics,
        ["pre-a", "pre-c"],
        "joined with the fresh matches, without a second metadata round"
    );
    lead(&mut m, join, &[], &more, t0 + AGE);
    assert!(m.appeared_after_subscribe(&tp("pre-c", 0)));
    assert!(m.appeared_after_subscribe(&tp("pre-c", 1)));
    assert!(!m.appeared_after_subscribe(&tp("pre-a", 0)));

    // The next join of a pattern reads metadata first again.
    m.poll_action(t0 + AGE + 3 * SEC);
    m.handle_heartbeat(Some(KafkaCode::RebalanceInProgress), t0 + AGE + 3 * SEC);
    let actions = drain(&mut m, t0 + AGE + 3 * SEC);
    assert!(matches!(actions[0], Action::Revoke(_)));
    assert_eq!(actions[1], Action::RefreshMetadata { topics: None });
}

#[test]
fn topic_patterns_match_whole_names_and_bad_ones_are_errors() {
    let p = TopicSubscription::pattern("orders-.*").unwrap();
    assert!(p.includes("orders-eu"));
    assert!(!p.includes("old-orders-eu"));
    assert!(!TopicSubscription::pattern("orders")
        .unwrap()
        .includes("orders-eu"));
    assert!(TopicSubscription::pattern("a|b").unwrap().includes("b"));
    assert!(TopicSubscription::pattern("orders-(").is_err());
}

#[test]
fn a_failed_metadata_refresh_neither_blocks_the_join_nor_waits_a_whole_age() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    m.poll_action(t0);
    m.coordinator_found(t0);
    assert!(matches!(
        m.poll_action(t0),
        Some(Action::RefreshMetadata { .. })
    ));
    m.handle_metadata_failed(t0);
    assert!(matches!(m.poll_action(t0), Some(Action::Join { .. })));
    // Joining: no metadata timer, so the driver does not spin.
    assert_eq!(m.poll_timeout(), Some(t0 + 60 * SEC));
    assert!(
        !m.appeared_after_subscribe(&tp("t", 0)),
        "no baseline before any metadata"
    );

    // Stable: a failed check is retried within a second, not a whole age.
    let (mut m, _) = led(vec!["t".to_string()].into(), &[], &parts(), t0);
    m.poll_action(t0 + 3 * SEC); // heartbeat
    m.handle_heartbeat(None, t0 + 3 * SEC);
    assert!(matches!(
        m.poll_action(t0 + AGE),
        Some(Action::RefreshMetadata { .. })
    ));
    m.handle_metadata_failed(t0 + AGE);
    assert_eq!(m.poll_action(t0 + AGE), None);
    let (asked, _) = metadata_check(&mut m, t0 + AGE + SEC, &parts());
    assert_eq!(asked, Some(vec!["t".to_string()]));
}

#[test]
fn only_heartbeats_go_out_while_a_revoke_listener_runs() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(CooperativeStickyAssignor), None, t0);
    stable(&mut m, t0);
    let t = t0 + 3 * SEC;
    m.poll_action(t);
    m.handle_heartbeat(Some(KafkaCode::RebalanceInProgress), t);
    let Some(Action::Join { .. }) = m.poll_action(t) else {
        panic!("expected join")
    };
    m.handle_join(
        JoinResult {
            generation: 2,
            member_id: "m1".into(),
            leader: "m2".into(),
            protocol_name: Some("cooperative-sticky".into()),
            ..JoinResult::default()
        },
        &parts(),
        t,
    );
    m.poll_action(t);
    let keep = Assignment {
        partitions: vec![tp("t", 0), tp("t", 1)],
        user_data: None,
    };
    m.handle_sync(None, &keep.encode(3), t);
    assert_eq!(
        m.revoking(),
        [tp("t", 2), tp("t", 3)].into_iter().collect(),
        "commits stay valid from the moment they stop being owned"
    );
    let Some(Action::Revoke(revoked)) = m.poll_action(t) else {
        panic!("expected revoke")
    };
    m.listener_started(&revoked, t);
    assert_eq!(m.revoking(), [tp("t", 2), tp("t", 3)].into_iter().collect());
    assert_eq!(
        m.poll_action(t),
        None,
        "the second phase waits for the listener"
    );
    assert_eq!(m.poll_timeout(), Some(t + 3 * SEC), "the next heartbeat");
    // A slow on_revoked: the member keeps heartbeating, past the session timeout.
    for beat in 1..=4u32 {
        let at = t + 3 * beat * SEC;
        assert!(
            matches!(
                m.poll_action(at),
                Some(Action::Heartbeat { generation: 2, .. })
            ),
            "heartbeat {beat}"
        );
        m.handle_heartbeat(None, at);
        assert_eq!(m.poll_action(at), None);
    }
    m.listener_done();
    assert!(m.revoking().is_empty());
    assert!(
        matches!(m.poll_action(t + 12 * SEC), Some(Action::Join { reason, .. }) if reason.contains("second phase"))
    );
}

#[test]
fn a_listener_past_the_rebalance_timeout_is_left_behind() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut m, t0);
    let t = t0 + 3 * SEC;
    m.poll_action(t);
    m.handle_heartbeat(Some(KafkaCode::RebalanceInProgress), t);
    let Some(Action::Revoke(revoked)) = m.poll_action(t) else {
        panic!("eager: revoke first")
    };
    m.listener_started(&revoked, t);
    assert!(
        m.revoking().contains(&tp("t", 0)),
        "commits of revoked partitions stay valid"
    );
    assert_eq!(
        m.poll_action(t + 29 * SEC),
        None,
        "joining: no heartbeats either"
    );
    assert_eq!(
        m.poll_timeout(),
        Some(t + 30 * SEC),
        "the rebalance timeout"
    );
    assert!(matches!(
        m.poll_action(t + 30 * SEC),
        Some(Action::Join { .. })
    ));
    assert!(!m.listener_running());
    assert!(m.revoking().is_empty());
}

#[test]
fn lost_partitions_wait_for_their_listener_too() {
    let t0 = Instant::now();
    let mut m = machine(Arc::new(RangeAssignor), None, t0);
    stable(&mut m, t0);
    let t = t0 + 3 * SEC;
    m.poll_action(t);
    m.handle_heartbeat(Some(KafkaCode::IllegalGeneration), t);
    let Some(Action::Lose(_)) = m.poll_action(t) else {
        panic!("expected lose")
    };
    m.listener_started(&[], t);
    assert!(
        m.revoking().is_empty(),
        "lost partitions are never committed"
    );
    assert_eq!(m.poll_action(t), None);
    m.listener_done();
    assert!(matches!(m.poll_action(t), Some(Action::Join { .. })));
}

/// A static member restarted subscribed to `t` gets, without a rebalance,
/// its old assignment of `old` (KIP-345/814): it takes none of it and
/// rejoins, saying why (issue 29, case 7b).
#[test]
fn an_assignment_of_topics_no_longer_subscribed_is_not_taken_and_the_member_rejoins() {
    let t0 = Instant::now();
    let mut m = joining(Some("a"), t0);
    m.handle_join(
        JoinResult {
            generation: 5,
            member_id: "m1".into(),
            leader: "other".into(),
            ..JoinResult::default()
        },
        &parts(),
        t0,
    );
    assert!(matches!(m.poll_action(t0), Some(Action::Sync { .. })));
    let old = Assignment {
        partitions: vec![tp("old", 0), tp("old", 1)],
        user_data: None,
    }
    .encode(CONSUMER_PROTOCOL_VERSION);
    m.handle_sync(None, &old, t0);
    let actions = drain(&mut m, t0);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Assign(_))),
        "{actions:?}"
    );
    assert!(
        join_reason(&actions).contains("does not match the subscription"),
        "{actions:?}"
    );
    assert!(!m.may_commit(&tp("old", 0)));
}

// ---- KIP-881: the rack in the subscription, replica racks to the assignor ----

/// `client.rack` goes into every protocol's subscription (v3), and the
/// leader hands the replicas' racks to its assignor: range then gives each
/// member the partitions in its own rack rather than the first half.
#[test]
fn the_rack_is_subscribed_and_the_leader_assigns_by_replica_racks() {
    let t0 = Instant::now();
    let cfg = MembershipConfig {
        rack: Some("r1".into()),
        metadata_max_age: AGE,
        ..cfg(None)
    };
    let mut m = Membership::new(cfg, vec![Arc::new(RangeAssignor)], vec!["t".into()], t0);
    assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));
    m.coordinator_found(t0);
    let Some(Action::Join { protocols, .. }) = after_metadata(&mut m, t0) else {
        panic!("expected join")
    };
    let (name, meta) = protocols[0].clone();
    assert_eq!(&meta[..2], &[0, 3], "subscription v3");
    assert_eq!(
        Subscription::decode(&meta).unwrap().rack.as_deref(),
        Some("r1")
    );

    let other = Subscription {
        topics: vec!["t".into()],
        rack: Some("r2".into()),
        ..Subscription::default()
    }
    .encode(CONSUMER_PROTOCOL_VERSION);
    // Partitions 0 and 1 live in r2, 2 and 3 in r1.
    let mut racks = ReplicaRacks::new();
    for (p, rack) in [(0, "r2"), (1, "r2"), (2, "r1"), (3, "r1")] {
        racks.insert("t", p, [rack]);
    }
    m.handle_join_with_racks(
        JoinResult {
            generation: 1,
            member_id: "m1".into(),
            leader: "m1".into(),
            protocol_name: Some(name),
            members: vec![("m1".into(), None, meta), ("m2".into(), None, other)],
            ..JoinResult::default()
        },
        &parts(),
        &racks,
        t0,
    );
    let Some(Action::Sync { assignments, .. }) = m.poll_action(t0) else {
        panic!("expected sync")
    };
    let of = |id: &str| {
        let (_, bytes) = assignments.iter().find(|(m, _)| m == id).unwrap();
        Assignment::decode(bytes).unwrap().partitions
    };
    assert_eq!(of("m1"), [tp("t", 2), tp("t", 3)]);
    assert_eq!(of("m2"), [tp("t", 0), tp("t", 1)]);

    // The leader watches the racks it assigned by (KIP-881): the same
    // racks change nothing; a partition moved to another rack rebalances.
    let mine = assignments
        .iter()
        .find(|(id, _)| id == "m1")
        .unwrap()
        .1
        .clone();
    m.handle_sync(None, &mine, t0);
    drain(&mut m, t0);
    assert!(m.watches_racks());
    assert_eq!(m.watched_topics(), ["t"]);
    let check = |m: &mut Membership, at: Instant, racks: &ReplicaRacks| loop {
        match m.poll_action(at) {
            Some(Action::Heartbeat { .. }) => m.handle_heartbeat(None, at),
            Some(Action::RefreshMetadata { .. }) => {
                m.handle_metadata_with_racks(&parts(), Some(racks), at);
                return drain(m, at);
            }
            other => panic!("expected a metadata check, got {other:?}"),
        }
    };
    assert_eq!(check(&mut m, t0 + AGE, &racks), Vec::new());
    let mut moved = racks.clone();
    moved.insert("t", 3, ["r2"]);
    let actions = check(&mut m, t0 + 2 * AGE, &moved);
    assert!(
        join_reason(&actions).contains("racks"),
        "a rack change rebalances: {actions:?}"
    );
}
