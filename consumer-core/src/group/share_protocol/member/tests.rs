//! The share member with a fake clock: every transition, no broker.

use kafka_wire::Metadata;

use super::*;
use crate::group::target::{TopicId, TopicIdPartitions};

const A: TopicId = [1; 16];
const B: TopicId = [2; 16];
const SEC: Duration = Duration::from_secs(1);

fn cfg() -> ShareMemberConfig {
    ShareMemberConfig {
        group_id: "g".into(),
        member_id: "m1".into(),
        rack_id: Some("r1".into()),
        topics: vec!["a".into(), "b".into()],
        max_poll_interval: 300 * SEC,
        handover_timeout: 30 * SEC,
        retry_backoff: Backoff::exponential(Duration::from_millis(100), SEC),
        heartbeat_interval: 5 * SEC,
    }
}

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

fn ok(epoch: i32, assignment: Option<TopicIdPartitions>) -> HeartbeatResult {
    HeartbeatResult {
        member_epoch: epoch,
        heartbeat_interval_ms: 5000,
        assignment,
        ..HeartbeatResult::default()
    }
}

fn refused(code: KafkaCode, message: &str) -> HeartbeatResult {
    HeartbeatResult {
        error: Some(code),
        error_message: Some(message.into()),
        ..HeartbeatResult::default()
    }
}

/// Metadata naming `topics` (id, name, partition count).
fn md(topics: &[(TopicId, &str, i32)]) -> Metadata {
    let named = |(id, name, n): &(TopicId, &str, i32)| {
        let (name, mut info) = crate::group::tests::topic(name, *n, false);
        info.id = *id;
        (name, info)
    };
    Metadata {
        topics: topics.iter().map(named).collect(),
        ..Metadata::default()
    }
}

fn heartbeat(m: &mut ShareMember, now: Instant) -> ShareHeartbeat {
    match m.poll_action(now) {
        Some(Action::Heartbeat(hb)) => hb,
        other => panic!("expected a heartbeat, got {other:?}"),
    }
}

/// A member in the group at epoch 1, owning nothing yet, topic `a` named.
fn joined(t0: Instant) -> ShareMember {
    let mut m = ShareMember::new(cfg(), t0);
    assert_eq!(m.poll_action(t0), Some(Action::FindCoordinator));
    m.coordinator_found(t0);
    let join = heartbeat(&mut m, t0);
    assert_eq!(join.member_epoch, 0);
    assert_eq!(join.member_id, "m1", "the consumer's own id");
    assert_eq!(
        join.subscribed_topic_names,
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(join.rack_id.as_deref(), Some("r1"));
    m.metadata_refreshed(&md(&[(A, "a", 4)]), None, t0);
    m.handle_heartbeat(ok(1, None), t0);
    assert_eq!(m.state(), &State::Stable);
    m
}

/// Give `m` the assignment `parts` of topic `a` and hand out its steps
/// (the listener, if any, acknowledged at once); the ack heartbeat last.
fn reconcile(m: &mut ShareMember, epoch: i32, parts: Vec<i32>, now: Instant) -> Vec<Action> {
    m.handle_heartbeat(ok(epoch, Some(vec![(A, parts)])), now);
    let mut out = Vec::new();
    while let Some(a) = m.poll_action(now) {
        if matches!(a, Action::Revoke(_) | Action::Lose(_)) {
            m.listener_started(&[], now);
            m.listener_done();
        }
        let hb = matches!(a, Action::Heartbeat(_));
        out.push(a);
        if hb {
            break;
        }
    }
    out
}

#[test]
fn joins_then_heartbeats_at_the_brokers_interval_with_nothing_unchanged() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    assert_eq!(m.poll_action(t0 + 4 * SEC), None);
    assert_eq!(m.poll_timeout(), Some(t0 + 5 * SEC));
    let hb = heartbeat(&mut m, t0 + 5 * SEC);
    assert_eq!(hb.member_epoch, 1);
    assert_eq!(hb.subscribed_topic_names, None, "null: unchanged");
    assert_eq!(hb.rack_id, None);
    assert_eq!(
        m.poll_action(t0 + 20 * SEC),
        None,
        "one heartbeat in flight"
    );
}

/// Revoke first (the member waits for the fetch path, heartbeating
/// only), then assign, then a heartbeat at once.
#[test]
fn a_new_assignment_revokes_then_assigns_then_heartbeats_at_once() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    let steps = reconcile(&mut m, 2, vec![0, 1, 2], t0);
    assert_eq!(
        steps[0],
        Action::Assign(vec![tp("a", 0), tp("a", 1), tp("a", 2)])
    );
    assert!(matches!(&steps[1], Action::Heartbeat(hb) if hb.member_epoch == 2));
    m.handle_heartbeat(ok(2, None), t0);

    let t1 = t0 + SEC;
    m.handle_heartbeat(ok(3, Some(vec![(A, vec![2, 3])])), t1);
    m.heartbeat_in_flight = false; // (answered above)
    let Some(Action::Revoke(revoked)) = m.poll_action(t1) else {
        panic!("revoke first");
    };
    assert_eq!(revoked, [tp("a", 0), tp("a", 1)]);
    m.listener_started(&revoked, t1);
    let mut snap = GroupSnapshot::default();
    m.snapshot(&mut snap);
    assert_eq!(snap.owned, BTreeSet::from([tp("a", 2)]));
    assert_eq!(snap.revoking, revoked.iter().cloned().collect());
    // While the fetch path hands them over: heartbeats only.
    assert_eq!(m.poll_action(t1 + SEC), None);
    let hb = heartbeat(&mut m, t1 + 5 * SEC);
    assert_eq!(hb.member_epoch, 3);
    m.handle_heartbeat(ok(3, None), t1 + 5 * SEC);
    m.listener_done();
    let t2 = t1 + 6 * SEC;
    assert_eq!(m.poll_action(t2), Some(Action::Assign(vec![tp("a", 3)])));
    let ack = heartbeat(&mut m, t2);
    assert_eq!(
        ack.member_epoch, 3,
        "the ack goes at once, not at the interval"
    );
    assert_eq!(m.owned(), &BTreeSet::from([tp("a", 2), tp("a", 3)]));
}

/// A fetch path that never answers holds the member up to the hand-over
/// timeout only.
#[test]
fn a_hand_over_that_never_ends_is_given_up_after_its_timeout() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    reconcile(&mut m, 2, vec![0, 1], t0);
    m.handle_heartbeat(ok(3, Some(vec![(A, vec![1])])), t0);
    let Some(Action::Revoke(revoked)) = m.poll_action(t0) else {
        panic!("revoke");
    };
    m.listener_started(&revoked, t0);
    assert_eq!(
        m.poll_action(t0 + 29 * SEC)
            .map(|a| matches!(a, Action::Heartbeat(_))),
        Some(true)
    );
    m.handle_heartbeat(ok(3, None), t0 + 29 * SEC);
    let end = heartbeat(&mut m, t0 + 30 * SEC);
    assert_eq!(end.member_epoch, 3, "the reconciliation ends without it");
    assert!(!m.liveness().listener_running(), "given up");
}

#[test]
fn an_unknown_topic_id_is_named_by_metadata_then_assigned() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    m.handle_heartbeat(ok(2, Some(vec![(A, vec![0]), (B, vec![0])])), t0);
    assert_eq!(m.poll_action(t0), Some(Action::Assign(vec![tp("a", 0)])));
    assert!(matches!(m.poll_action(t0), Some(Action::Heartbeat(_))));
    m.handle_heartbeat(ok(2, None), t0);
    assert_eq!(m.poll_action(t0), Some(Action::RefreshMetadata));
    assert_eq!(
        m.step(Action::RefreshMetadata),
        Step::RefreshMetadata(Some(vec!["a".into(), "b".into()]))
    );
    m.metadata_failed(t0);
    assert_eq!(m.poll_action(t0), None, "backing off");
    assert_eq!(m.poll_action(t0 + SEC), Some(Action::RefreshMetadata));
    m.metadata_refreshed(&md(&[(A, "a", 4), (B, "b", 1)]), None, t0 + SEC);
    assert_eq!(
        m.poll_action(t0 + SEC),
        Some(Action::Assign(vec![tp("b", 0)]))
    );
}

/// Fenced or forgotten: what is owned is lost (the fetch path gives it
/// back), and the member joins again at epoch 0 with its own id.
#[test]
fn fenced_loses_everything_and_rejoins_with_the_same_member_id() {
    for code in [KafkaCode::FencedMemberEpoch, KafkaCode::UnknownMemberId] {
        let t0 = Instant::now();
        let mut m = joined(t0);
        reconcile(&mut m, 2, vec![0, 1], t0);
        m.handle_heartbeat(refused(code, ""), t0);
        assert_eq!(
            m.poll_action(t0),
            Some(Action::Lose(vec![tp("a", 0), tp("a", 1)]))
        );
        let rejoin = heartbeat(&mut m, t0);
        assert_eq!(rejoin.member_epoch, 0);
        assert_eq!(rejoin.member_id, "m1");
        assert!(rejoin.subscribed_topic_names.is_some(), "full");
        assert!(m.owned().is_empty());
    }
}

/// The snapshot says whether the coordinator removed the member (the
/// fetch path then forgets the records it holds, acknowledging none).
fn removed(m: &ShareMember) -> bool {
    let mut snap = GroupSnapshot::default();
    m.snapshot(&mut snap);
    snap.removed
}

/// Heartbeats unanswered for the group's share.session.timeout.ms: the
/// coordinator has removed the member and released its records. Its
/// partitions are lost with `removed` set (nothing acknowledged on the
/// stale session), and it joins again with epoch 0 and its own id; the
/// next assignment clears `removed`.
#[test]
fn a_session_without_answered_heartbeats_expires_loses_its_records_and_rejoins() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    m.session_timeout_learned(Some(45 * SEC));
    reconcile(&mut m, 2, vec![0, 1], t0);
    m.handle_heartbeat(ok(2, None), t0);
    assert_eq!(m.session_deadline(), Some(t0 + 45 * SEC));
    assert!(m.poll_timeout() <= Some(t0 + 45 * SEC));

    // The next heartbeat goes and is never answered; the driver gives up
    // on it at the deadline. Before it, nothing changes.
    let t1 = t0 + 5 * SEC;
    let hb = heartbeat(&mut m, t1);
    assert_eq!(hb.member_epoch, 2);
    m.session_expired(t0 + 44 * SEC);
    assert_eq!(m.state(), &State::Stable);
    assert!(!removed(&m));
    let t2 = t0 + 45 * SEC;
    m.session_expired(t2);
    assert!(removed(&m));
    assert_eq!(
        m.poll_action(t2),
        Some(Action::Lose(vec![tp("a", 0), tp("a", 1)]))
    );
    m.listener_started(&[], t2);
    m.listener_done();
    assert!(removed(&m), "still set when the Lose is handed over");
    let rejoin = heartbeat(&mut m, t2);
    assert_eq!(rejoin.member_epoch, 0, "a new session: epoch 0");
    assert_eq!(rejoin.member_id, "m1", "the same member id");
    assert!(rejoin.subscribed_topic_names.is_some(), "full");
    assert!(m.owned().is_empty());
    assert_eq!(m.session_deadline(), None, "not in the group while joining");

    // Back in the group: the session runs from the answer; the new
    // assignment clears `removed`.
    let t3 = t2 + SEC;
    let steps = reconcile(&mut m, 3, vec![0], t3);
    assert!(
        steps.contains(&Action::Assign(vec![tp("a", 0)])),
        "{steps:?}"
    );
    assert!(!removed(&m));
    assert_eq!(m.session_deadline(), Some(t3 + 45 * SEC));
}

/// The coordinator unreachable for a whole session: the member counts
/// itself removed while looking for it, and joins with epoch 0 once found.
#[test]
fn a_session_that_runs_out_while_the_coordinator_is_lost_joins_with_epoch_0() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    m.session_timeout_learned(Some(45 * SEC));
    reconcile(&mut m, 2, vec![0], t0);
    m.handle_heartbeat(ok(2, None), t0);
    m.handle_request_failed(t0 + SEC);
    assert_eq!(m.session_deadline(), Some(t0 + 45 * SEC));
    let late = t0 + 46 * SEC;
    // The lookup queued when the request failed, then the loss.
    assert_eq!(m.poll_action(late), Some(Action::FindCoordinator));
    assert_eq!(m.poll_action(late), Some(Action::Lose(vec![tp("a", 0)])));
    assert!(removed(&m));
    m.listener_started(&[], late);
    m.listener_done();
    m.coordinator_found(late);
    assert_eq!(heartbeat(&mut m, late).member_epoch, 0);
}

/// Without the group's session timeout (the broker would not say), only
/// the broker's answers remove the member.
#[test]
fn without_a_session_timeout_only_the_broker_removes_the_member() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    reconcile(&mut m, 2, vec![0], t0);
    m.handle_heartbeat(ok(2, None), t0);
    assert_eq!(m.session_deadline(), None);
    m.session_expired(t0 + 3600 * SEC);
    assert_eq!(m.state(), &State::Stable);
    assert!(m.owned().contains(&tp("a", 0)));
}

/// A member that stops polling leaves (its records go back, via the
/// loss), and joins again at the next poll.
#[test]
fn a_member_that_stops_polling_leaves_and_comes_back_at_the_next_poll() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    reconcile(&mut m, 2, vec![0], t0);
    m.handle_heartbeat(ok(2, None), t0);
    assert!(m.poll_timeout() <= Some(t0 + 300 * SEC));
    let late = t0 + 301 * SEC;
    assert_eq!(m.poll_action(late), Some(Action::Lose(vec![tp("a", 0)])));
    assert!(!removed(&m), "still in the group: RELEASE is valid");
    let Some(Action::Leave(leave)) = m.poll_action(late) else {
        panic!("leave");
    };
    assert_eq!(leave.member_epoch, -1);
    assert_eq!(m.state(), &State::LeftForPollTimeout);
    assert_eq!(
        m.poll_action(late + 60 * SEC),
        None,
        "out until the next poll"
    );
    m.polled(late + 60 * SEC);
    assert_eq!(
        m.poll_action(late + 60 * SEC),
        Some(Action::FindCoordinator)
    );
    m.coordinator_found(late + 60 * SEC);
    assert_eq!(heartbeat(&mut m, late + 60 * SEC).member_epoch, 0);
}

#[test]
fn close_hands_over_what_is_owned_then_leaves() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    reconcile(&mut m, 2, vec![0, 1], t0);
    m.close();
    assert_eq!(
        m.poll_action(t0),
        Some(Action::Revoke(vec![tp("a", 0), tp("a", 1)]))
    );
    let Some(Action::Leave(leave)) = m.poll_action(t0) else {
        panic!("leave");
    };
    assert_eq!((leave.member_epoch, leave.member_id.as_str()), (-1, "m1"));
    assert!(m.left());
    assert_eq!(m.poll_action(t0), None);

    let mut never = ShareMember::new(cfg(), t0);
    never.close();
    assert_eq!(
        never.poll_action(t0),
        None,
        "never joined: nothing to leave"
    );
    assert!(never.left());
}

#[test]
fn the_coordinator_moving_is_looked_up_again_with_a_backoff() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    let _ = heartbeat(&mut m, t0 + 5 * SEC);
    m.handle_heartbeat(refused(KafkaCode::NotCoordinator, ""), t0 + 5 * SEC);
    assert_eq!(m.poll_action(t0 + 5 * SEC), None, "backing off");
    let t1 = t0 + 6 * SEC;
    assert_eq!(m.poll_action(t1), Some(Action::FindCoordinator));
    m.coordinator_found(t1);
    let hb = heartbeat(&mut m, t1);
    assert_eq!(hb.member_epoch, 1, "still in the group");
    assert!(hb.subscribed_topic_names.is_some(), "full after an error");
}

#[test]
fn refusals_say_what_to_change() {
    let cases = [
        (KafkaCode::UnsupportedVersion, "", "share.version=1"),
        (
            KafkaCode::GroupIdNotFound,
            "Group g is not a share group.",
            "id of its own",
        ),
        (KafkaCode::GroupAuthorizationFailed, "", "READ on group"),
        (KafkaCode::GroupMaxSizeReached, "", "group.share.max.size"),
    ];
    for (code, said, hint) in cases {
        let t0 = Instant::now();
        let mut m = joined(t0);
        reconcile(&mut m, 2, vec![0], t0);
        m.handle_heartbeat(refused(code, said), t0);
        assert_eq!(m.poll_action(t0), Some(Action::Lose(vec![tp("a", 0)])));
        let Some(Action::Fatal(why)) = m.poll_action(t0) else {
            panic!("{code:?}: fatal");
        };
        assert!(why.contains(hint) && why.contains(said), "{why}");
        assert_eq!(m.poll_action(t0 + 60 * SEC), None, "failed for good");
    }
}

#[test]
fn a_retriable_refusal_backs_off_and_stays_in_the_group() {
    let t0 = Instant::now();
    let mut m = joined(t0);
    let _ = heartbeat(&mut m, t0 + 5 * SEC);
    m.handle_heartbeat(
        refused(KafkaCode::CoordinatorLoadInProgress, ""),
        t0 + 5 * SEC,
    );
    assert_eq!(m.state(), &State::Stable);
    assert_eq!(m.poll_action(t0 + 5 * SEC), None);
    assert!(matches!(
        m.poll_action(t0 + 6 * SEC),
        Some(Action::Heartbeat(_))
    ));
}
