//! The share fetch path without a broker: events and time in, requests
//! out (share session epochs, acknowledgement batches, delivery counts,
//! acquisition locks and RENEW, errors).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_wire::messages::share_acknowledge_response::{
    PartitionData as AckPartition, ShareAcknowledgeTopicResponse,
};
use kafka_wire::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_wire::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
};
use kafka_wire::records::{encode_batch, BatchOptions, NewRecord};
use kafka_wire::{Error, KafkaCode};
use uuid::Uuid;

use super::acquired::batches;
use super::config::{AcknowledgementMode, AcquireMode};
use super::fetcher::{Action, Settings, ShareFetcher};
use super::session::{next_epoch, ShareSession};
use super::{AcknowledgeType as A, ShareError, ShareRecord, TopicIdPartition};
use crate::tp::TopicPartition;

const BROKER: i32 = 1;
const LOCK_MS: i32 = 30_000;

fn tip(p: i32) -> TopicIdPartition {
    TopicIdPartition::new(Uuid::from_u128(7), TopicPartition::new("t", p))
}

fn settings(mode: AcknowledgementMode) -> Settings {
    Settings {
        group_id: "g".into(),
        member_id: "m".into(),
        ack_mode: mode,
        acquire_mode: AcquireMode::BatchOptimized,
        max_poll_records: 500,
        max_wait: Duration::from_millis(500),
        min_bytes: 1,
        max_bytes: 1 << 20,
        retry_backoff: Duration::from_millis(100),
        max_decompressed: 1 << 20,
    }
}

/// A fetcher assigned `parts`, all led by [`BROKER`] at ShareFetch
/// `version`: the leader lookup and the connection are done.
fn ready(s: Settings, parts: &[i32], version: i16, now: Instant) -> ShareFetcher {
    let mut f = ShareFetcher::new(s);
    f.assign(parts.iter().map(|p| tip(*p)).collect());
    match f.poll_action(now) {
        Some(Action::RefreshLeaders { partitions }) => {
            assert_eq!(partitions.len(), parts.len());
            f.set_leaders(partitions.into_iter().map(|t| (t, BROKER)).collect(), now);
        }
        other => panic!("expected a leader lookup, got {other:?}"),
    }
    match f.poll_action(now) {
        Some(Action::Connect { broker }) => f.broker_version(broker, version),
        other => panic!("expected a connection, got {other:?}"),
    }
    assert!(
        f.poll_action(now).is_none(),
        "nothing to fetch before a poll"
    );
    f
}

fn fetch(f: &mut ShareFetcher, now: Instant) -> (u64, ShareFetchRequest) {
    match f.poll_action(now) {
        Some(Action::Fetch { id, request, .. }) => (id, request),
        other => panic!("expected a ShareFetch, got {other:?}"),
    }
}

fn acknowledge(f: &mut ShareFetcher, now: Instant) -> (u64, ShareAcknowledgeRequest) {
    match f.poll_action(now) {
        Some(Action::Acknowledge { id, request, .. }) => (id, request),
        other => panic!("expected a ShareAcknowledge, got {other:?}"),
    }
}

/// One batch of records at `first..first+n`.
fn batch(first: i64, n: usize) -> Bytes {
    let mut out = BytesMut::new();
    let records: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            value: Some(Bytes::from(format!("v{}", first + i as i64))),
            ..NewRecord::default()
        })
        .collect();
    encode_batch(
        &mut out,
        &BatchOptions {
            base_offset: first,
            ..BatchOptions::default()
        },
        &records,
    );
    out.freeze()
}

fn control_batch(offset: i64) -> Bytes {
    let mut out = BytesMut::new();
    encode_batch(
        &mut out,
        &BatchOptions {
            base_offset: offset,
            control: true,
            transactional: true,
            ..BatchOptions::default()
        },
        &[NewRecord {
            key: Some(Bytes::from_static(&[0, 0, 0, 1])),
            ..NewRecord::default()
        }],
    );
    out.freeze()
}

/// A ShareFetch answer for partition `p`: `records` and the acquired
/// ranges `(first, last, delivery count)`.
fn answer(p: i32, records: Option<Bytes>, acquired: &[(i64, i64, i16)]) -> ShareFetchResponse {
    answer_with(p, records, acquired, 0)
}

fn answer_with(
    p: i32,
    records: Option<Bytes>,
    acquired: &[(i64, i64, i16)],
    ack_error: i16,
) -> ShareFetchResponse {
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(LOCK_MS)
        .with_responses(vec![ShareFetchableTopicResponse::default()
            .with_topic_id(tip(p).topic_id)
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(p)
                .with_acknowledge_error_code(ack_error)
                .with_records(records)
                .with_acquired_records(
                    acquired
                        .iter()
                        .map(|(a, b, c)| {
                            AcquiredRecords::default()
                                .with_first_offset(*a)
                                .with_last_offset(*b)
                                .with_delivery_count(*c)
                        })
                        .collect(),
                )])])
}

fn empty_answer() -> ShareFetchResponse {
    ShareFetchResponse::default().with_acquisition_lock_timeout_ms(LOCK_MS)
}

fn ack_answer(p: i32, error: i16, lock_ms: i32) -> ShareAcknowledgeResponse {
    ShareAcknowledgeResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(vec![ShareAcknowledgeTopicResponse::default()
            .with_topic_id(tip(p).topic_id)
            .with_partitions(vec![AckPartition::default()
                .with_partition_index(p)
                .with_error_code(error)])])
}

fn top_level_error(code: KafkaCode) -> ShareFetchResponse {
    ShareFetchResponse::default().with_error_code(code.code())
}

/// The acknowledgement batches a ShareFetch carries for partition `p`.
fn fetch_acks(req: &ShareFetchRequest, p: i32) -> Vec<(i64, i64, Vec<i8>)> {
    req.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|x| x.partition_index == p)
        .flat_map(|x| &x.acknowledgement_batches)
        .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
        .collect()
}

fn ack_acks(req: &ShareAcknowledgeRequest, p: i32) -> Vec<(i64, i64, Vec<i8>)> {
    req.topics
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|x| x.partition_index == p)
        .flat_map(|x| &x.acknowledgement_batches)
        .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
        .collect()
}

/// Poll once: begin, fetch, answer with `resp`, take the records.
fn poll_with(f: &mut ShareFetcher, resp: ShareFetchResponse, now: Instant) -> Vec<ShareRecord> {
    f.begin_poll().unwrap();
    let (id, _) = fetch(f, now);
    f.handle_fetch(BROKER, id, Ok(resp), now);
    f.take_records(now)
}

fn offsets(records: &[ShareRecord]) -> Vec<i64> {
    records.iter().map(|r| r.offset()).collect()
}

// ---- share session epochs ---------------------------------------------------

#[test]
fn epoch_0_opens_with_every_partition_then_increments_and_close_sends_minus_1() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0, 1], 2, t0);
    f.begin_poll().unwrap();
    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_session_epoch, 0);
    assert_eq!(req.group_id.as_ref().unwrap().as_str(), "g");
    assert_eq!(req.member_id.as_deref(), Some("m"));
    let parts: BTreeSet<i32> = req.topics[0]
        .partitions
        .iter()
        .map(|p| p.partition_index)
        .collect();
    assert_eq!(parts, BTreeSet::from([0, 1]), "the full session");
    assert!(f.poll_action(t0).is_none(), "one request at a time");
    f.handle_fetch(BROKER, id, Ok(empty_answer()), t0);

    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_session_epoch, 1);
    assert!(req.topics.is_empty(), "incremental: nothing changed");
    f.handle_fetch(BROKER, id, Ok(empty_answer()), t0);
    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_session_epoch, 2);

    f.close();
    assert!(!f.is_closed(), "the fetch in flight is answered first");
    f.handle_fetch(BROKER, id, Ok(empty_answer()), t0);
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(req.share_session_epoch, -1);
    f.handle_acknowledge(BROKER, id, Ok(ShareAcknowledgeResponse::default()), t0);
    assert!(f.is_closed());
    assert!(f.poll_action(t0).is_none());
}

#[test]
fn the_epoch_after_i32_max_is_1_and_minus_1_stays() {
    assert_eq!(next_epoch(0), 1);
    assert_eq!(next_epoch(41), 42);
    assert_eq!(next_epoch(i32::MAX), 1);
    assert_eq!(next_epoch(-1), -1);
    let s = ShareSession::default();
    assert_eq!(s.epoch(), 0);
    assert!(!s.is_open());
}

#[test]
fn session_errors_start_over_with_epoch_0_and_forget_what_the_session_acquired() {
    for code in [
        KafkaCode::ShareSessionNotFound,
        KafkaCode::InvalidShareSessionEpoch,
    ] {
        let t0 = Instant::now();
        let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
        let got = poll_with(&mut f, answer(0, Some(batch(0, 3)), &[(0, 2, 1)]), t0);
        assert_eq!(offsets(&got), [0, 1, 2]);
        for r in &got {
            f.acknowledge(&r.tp, r.topic_id, r.offset(), A::Accept)
                .unwrap();
        }
        f.begin_poll().unwrap();
        let (id, req) = fetch(&mut f, t0);
        assert_eq!(req.share_session_epoch, 1);
        assert_eq!(fetch_acks(&req, 0), [(0, 2, vec![1])]);
        f.handle_fetch(BROKER, id, Ok(top_level_error(code)), t0);

        let outcomes = f.take_outcomes();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].offsets, [0, 1, 2]);
        assert_eq!(outcomes[0].error.as_ref().and_then(Error::code), Some(code));
        assert_eq!(f.unanswered_acks(), 0);
        assert!(f.poll_action(t0).is_none(), "retry.backoff.ms first");
        let t1 = t0 + Duration::from_millis(100);
        let (_, req) = fetch(&mut f, t1);
        assert_eq!(req.share_session_epoch, 0, "{code:?}: a new session");
        assert!(
            fetch_acks(&req, 0).is_empty(),
            "epoch 0 carries no acknowledgements"
        );
        let e = f
            .acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
            .unwrap_err();
        assert!(e.to_string().contains("share session ended"), "{e}");
    }
}

#[test]
fn a_lost_connection_starts_over_and_a_stale_answer_is_ignored() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    poll_with(&mut f, empty_answer(), t0);
    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_session_epoch, 1);
    let gone = Error::Connection {
        broker: "b".into(),
        reason: "reset".into(),
        maybe_written: true,
    };
    f.handle_fetch(BROKER, id, Err(gone), t0);
    let t1 = t0 + Duration::from_millis(100);
    let (id2, req) = fetch(&mut f, t1);
    assert_eq!(req.share_session_epoch, 0);
    // The old request's answer arriving late changes nothing.
    f.handle_fetch(
        BROKER,
        id,
        Ok(answer(0, Some(batch(0, 1)), &[(0, 0, 1)])),
        t1,
    );
    assert!(f.take_records(t1).is_empty());
    f.handle_fetch(BROKER, id2, Ok(empty_answer()), t1);
    assert_eq!(fetch(&mut f, t1).1.share_session_epoch, 1);
}

#[test]
fn authorization_errors_stop_the_consumer_with_the_brokers_words() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    f.begin_poll().unwrap();
    let (id, _) = fetch(&mut f, t0);
    f.handle_fetch(
        BROKER,
        id,
        Ok(top_level_error(KafkaCode::GroupAuthorizationFailed)),
        t0,
    );
    let e = f.begin_poll().unwrap_err();
    assert!(e.to_string().contains("GroupAuthorizationFailed"), "{e}");
    assert!(f.poll_action(t0 + Duration::from_secs(1)).is_none());
}

// ---- acquired records, delivery counts, max.poll.records --------------------

#[test]
fn only_acquired_offsets_are_delivered_with_their_ranges_delivery_count() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    let got = poll_with(
        &mut f,
        answer(0, Some(batch(0, 10)), &[(3, 4, 1), (6, 7, 3)]),
        t0,
    );
    assert_eq!(
        offsets(&got),
        [3, 4, 6, 7],
        "the batch's other records are not ours"
    );
    let counts: Vec<u16> = got.iter().map(|r| r.delivery_count).collect();
    assert_eq!(counts, [1, 1, 3, 3]);
    assert_eq!(got[0].record.value.as_deref(), Some(&b"v3"[..]));
    assert_eq!(got[0].tp, TopicPartition::new("t", 0));
}

#[test]
fn offsets_without_a_record_are_acknowledged_as_gaps() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    // 0..=2 records, 3 a transaction marker, 4..=5 acquired but absent
    // (compacted away).
    let mut bytes = BytesMut::from(&batch(0, 3)[..]);
    bytes.extend_from_slice(&control_batch(3));
    let got = poll_with(&mut f, answer(0, Some(bytes.freeze()), &[(0, 5, 1)]), t0);
    assert_eq!(offsets(&got), [0, 1, 2]);
    f.begin_poll().unwrap();
    let (_, req) = fetch(&mut f, t0);
    assert_eq!(
        fetch_acks(&req, 0),
        [(0, 5, vec![1, 1, 1, 0, 0, 0])],
        "ACCEPT the records, GAP the rest, in one batch of per-offset types"
    );
}

#[test]
fn max_poll_records_caps_each_poll_and_record_limit_goes_on_the_wire() {
    let t0 = Instant::now();
    let mut s = settings(AcknowledgementMode::Implicit);
    s.max_poll_records = 4;
    s.acquire_mode = AcquireMode::RecordLimit;
    let mut f = ready(s.clone(), &[0], 2, t0);
    f.begin_poll().unwrap();
    let (id, req) = fetch(&mut f, t0);
    assert_eq!((req.max_records, req.batch_size), (4, 4));
    assert_eq!(req.share_acquire_mode, 1, "KIP-1206 record_limit");
    // A broker in batch_optimized mode may acquire more; they wait.
    f.handle_fetch(
        BROKER,
        id,
        Ok(answer(0, Some(batch(0, 10)), &[(0, 9, 1)])),
        t0,
    );
    assert_eq!(offsets(&f.take_records(t0)), [0, 1, 2, 3]);
    f.begin_poll().unwrap();
    assert!(
        matches!(f.poll_action(t0), Some(Action::Acknowledge { .. })),
        "records are buffered: no ShareFetch, the ACCEPTs go alone"
    );
    assert_eq!(offsets(&f.take_records(t0)), [4, 5, 6, 7]);
    assert_eq!(offsets(&f.take_records(t0)), [8, 9]);

    // A v1 broker cannot do record_limit: a clear error, nothing sent.
    let mut f = ShareFetcher::new(s);
    f.assign(BTreeSet::from([tip(0)]));
    let Some(Action::RefreshLeaders { partitions }) = f.poll_action(t0) else {
        panic!()
    };
    f.set_leaders(partitions.into_iter().map(|t| (t, BROKER)).collect(), t0);
    assert!(matches!(f.poll_action(t0), Some(Action::Connect { .. })));
    f.broker_version(BROKER, 1);
    let e = f.begin_poll().unwrap_err();
    assert!(
        e.to_string()
            .contains("share.acquire.mode=record_limit needs ShareFetch v2"),
        "{e}"
    );
}

#[test]
fn a_buffered_record_whose_lock_ran_out_is_never_delivered() {
    let t0 = Instant::now();
    let mut s = settings(AcknowledgementMode::Implicit);
    s.max_poll_records = 1;
    let mut f = ready(s, &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 2)), &[(0, 1, 1)]), t0);
    assert_eq!(offsets(&got), [0]);
    let lock_end = t0 + Duration::from_millis(LOCK_MS as u64);
    assert_eq!(
        f.poll_timeout(),
        Some(lock_end),
        "the driver wakes at the lock's end"
    );
    f.handle_timeout(lock_end);
    assert!(
        f.take_records(lock_end).is_empty(),
        "released by the broker by now"
    );
}

// ---- acknowledgement batching and the way they go ---------------------------

#[test]
fn batches_are_runs_of_consecutive_offsets_with_one_type_when_uniform() {
    assert_eq!(
        batches(&[(0, 1), (1, 1), (2, 1), (5, 2), (6, 1), (9, 3)]),
        [(0, 2, vec![1]), (5, 6, vec![2, 1]), (9, 9, vec![3])]
    );
    assert!(batches(&[]).is_empty());
}

#[test]
fn explicit_acknowledgements_ride_on_the_next_polls_share_fetch() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(
        &mut f,
        answer(0, Some(batch(0, 15)), &[(0, 4, 1), (10, 14, 1)]),
        t0,
    );
    assert_eq!(got.len(), 10);
    for r in &got {
        let ty = if r.offset() == 10 {
            A::Release
        } else if r.offset() == 14 {
            A::Reject
        } else {
            A::Accept
        };
        f.acknowledge(&r.tp, r.topic_id, r.offset(), ty).unwrap();
    }
    assert!(
        f.poll_action(t0).is_none(),
        "held until the next poll or commit"
    );
    assert_eq!(f.unanswered_acks(), 0);
    f.begin_poll().unwrap();
    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_session_epoch, 1);
    assert_eq!(
        fetch_acks(&req, 0),
        [(0, 4, vec![1]), (10, 14, vec![2, 1, 1, 1, 3])]
    );
    assert_eq!(f.unanswered_acks(), 10);
    f.handle_fetch(BROKER, id, Ok(answer(0, None, &[])), t0);
    assert_eq!(f.unanswered_acks(), 0);
    let outcomes = f.take_outcomes();
    let accepted: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.ack == A::Accept)
        .flat_map(|o| o.offsets.clone())
        .collect();
    assert_eq!(accepted, [0, 1, 2, 3, 4, 11, 12, 13]);
    assert!(outcomes.iter().all(|o| o.error.is_none()));
    let e = f
        .acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap_err();
    assert!(
        e.to_string().contains("does not hold"),
        "acknowledged once: {e}"
    );
}

#[test]
fn commit_sends_a_share_acknowledge_when_no_fetch_is_due() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 2)), &[(0, 1, 1)]), t0);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap();
    f.acknowledge(&got[1].tp, got[1].topic_id, 1, A::Release)
        .unwrap();
    f.commit();
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(req.share_session_epoch, 1);
    assert!(!req.is_renew_ack);
    assert_eq!(ack_acks(&req, 0), [(0, 1, vec![1, 2])]);
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, 0, 0)), t0);
    assert_eq!(f.unanswered_acks(), 0);
    assert_eq!(f.take_outcomes().len(), 2, "one per type");
    f.begin_poll().unwrap();
    assert_eq!(
        fetch(&mut f, t0).1.share_session_epoch,
        2,
        "ShareAcknowledge took epoch 1"
    );
}

#[test]
fn implicit_mode_accepts_the_last_polls_records_at_the_next_poll() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    poll_with(&mut f, answer(0, Some(batch(0, 3)), &[(0, 2, 1)]), t0);
    let (_, req) = {
        f.begin_poll().unwrap();
        fetch(&mut f, t0)
    };
    assert_eq!(fetch_acks(&req, 0), [(0, 2, vec![1])]);
    let mut f2 = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    let got = poll_with(&mut f2, answer(0, Some(batch(0, 1)), &[(0, 0, 1)]), t0);
    let e = f2
        .acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("share.acknowledgement.mode=explicit"),
        "{e}"
    );
}

#[test]
fn explicit_mode_refuses_to_poll_past_unacknowledged_records() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 3)), &[(0, 2, 1)]), t0);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap();
    let e = f.begin_poll().unwrap_err();
    let ShareError::Unacknowledged { count, offset, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!((*count, *offset), (2, 1));
    assert!(f.poll_action(t0).is_none(), "nothing fetched");
    let e = f
        .acknowledge(&got[0].tp, got[0].topic_id, 0, A::Reject)
        .unwrap_err();
    assert!(e.to_string().contains("acknowledged already"), "{e}");
}

#[test]
fn acknowledgement_errors_are_reported_with_the_partition_and_code() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    poll_with(&mut f, answer(0, Some(batch(0, 2)), &[(0, 1, 1)]), t0);
    f.begin_poll().unwrap();
    let (id, _) = fetch(&mut f, t0);
    let code = KafkaCode::InvalidRecordState;
    f.handle_fetch(BROKER, id, Ok(answer_with(0, None, &[], code.code())), t0);
    let o = f.take_outcomes();
    assert_eq!(o.len(), 1);
    let e = o[0].error.as_ref().unwrap();
    assert_eq!(e.code(), Some(code));
    assert!(e.to_string().contains("t-0"), "{e}");
}

// ---- RENEW (KIP-1222) ------------------------------------------------------

#[test]
fn renew_goes_at_once_and_restarts_the_lock_keeping_the_record_with_the_app() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 1)), &[(0, 0, 1)]), t0);
    let r = &got[0];
    assert_eq!(
        f.lock_deadline(&tip(0), 0),
        Some(t0 + Duration::from_secs(30))
    );
    let t1 = t0 + Duration::from_secs(20);
    f.acknowledge(&r.tp, r.topic_id, 0, A::Renew).unwrap();
    let (id, req) = acknowledge(&mut f, t1);
    assert!(req.is_renew_ack, "KIP-1222: the flag says RENEW is inside");
    assert_eq!(ack_acks(&req, 0), [(0, 0, vec![4])]);
    // The application decides while the RENEW is on its way: it follows.
    f.acknowledge(&r.tp, r.topic_id, 0, A::Accept).unwrap();
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, 0, 15_000)), t1);
    assert_eq!(
        f.lock_deadline(&tip(0), 0),
        Some(t1 + Duration::from_secs(15)),
        "the answer's acquisition_lock_timeout_ms from the answer's arrival"
    );
    assert_eq!(f.take_outcomes()[0].ack, A::Renew);
    f.begin_poll().unwrap();
    let (_, req) = fetch(&mut f, t1);
    assert_eq!(fetch_acks(&req, 0), [(0, 0, vec![1])]);
}

#[test]
fn a_renewed_record_does_not_block_the_next_poll_in_explicit_mode() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 1)), &[(0, 0, 1)]), t0);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Renew)
        .unwrap();
    let (id, _) = acknowledge(&mut f, t0);
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, 0, LOCK_MS)), t0);
    f.begin_poll()
        .expect("still being processed, not forgotten");
    assert!(f.take_records(t0).is_empty(), "and not delivered again");
    assert!(f.lock_deadline(&tip(0), 0).is_some());
}

#[test]
fn a_renew_the_broker_refuses_loses_the_record() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 1)), &[(0, 0, 1)]), t0);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Renew)
        .unwrap();
    let (id, _) = acknowledge(&mut f, t0);
    let code = KafkaCode::InvalidRecordState.code();
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, code, 0)), t0);
    assert!(f.lock_deadline(&tip(0), 0).is_none());
    assert!(f.take_outcomes()[0].error.is_some());
    f.begin_poll().expect("nothing left to acknowledge");
}

#[test]
fn renew_on_a_v1_broker_fails_here_naming_the_version() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 1, t0);
    f.begin_poll().unwrap();
    let (id, req) = fetch(&mut f, t0);
    assert_eq!(req.share_acquire_mode, 0, "v1 has none");
    f.handle_fetch(
        BROKER,
        id,
        Ok(answer(0, Some(batch(0, 1)), &[(0, 0, 1)])),
        t0,
    );
    let got = f.take_records(t0);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Renew)
        .unwrap();
    assert!(f.poll_action(t0).is_none(), "nothing sent");
    let o = f.take_outcomes();
    let text = o[0].error.as_ref().unwrap().to_string();
    assert!(text.contains("Kafka 4.2") && text.contains("v1"), "{text}");
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .expect("the record is still the application's");
}

// ---- assignment changes, leaders, close ------------------------------------

#[test]
fn an_unassigned_partition_releases_its_buffered_records_and_leaves_the_session_at_once() {
    let t0 = Instant::now();
    let mut s = settings(AcknowledgementMode::Implicit);
    s.max_poll_records = 1;
    let mut f = ready(s, &[0, 1], 2, t0);
    f.begin_poll().unwrap();
    let (id, _) = fetch(&mut f, t0);
    f.handle_fetch(
        BROKER,
        id,
        Ok(answer(1, Some(batch(0, 3)), &[(0, 2, 1)])),
        t0,
    );
    assert_eq!(offsets(&f.take_records(t0)), [0]);
    f.assign(BTreeSet::from([tip(0)]));
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(ack_acks(&req, 1), [(1, 2, vec![2])], "RELEASE at once");
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(1, 0, 0)), t0);
    // The next poll ACCEPTs offset 0 of p1: by ShareAcknowledge, since a
    // ShareFetch naming p1 would put it back in the session.
    f.begin_poll().unwrap();
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(ack_acks(&req, 1), [(0, 0, vec![1])]);
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(1, 0, 0)), t0);
    let (_, req) = fetch(&mut f, t0);
    assert_eq!(req.forgotten_topics_data.len(), 1);
    assert_eq!(req.forgotten_topics_data[0].partitions, [1]);
    assert!(fetch_acks(&req, 1).is_empty());
}

#[test]
fn records_of_a_partition_unassigned_while_the_fetch_was_out_are_released() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0, 1], 2, t0);
    f.begin_poll().unwrap();
    let (id, _) = fetch(&mut f, t0);
    f.assign(BTreeSet::from([tip(0)]));
    f.handle_fetch(
        BROKER,
        id,
        Ok(answer(1, Some(batch(0, 2)), &[(0, 1, 1)])),
        t0,
    );
    assert!(f.take_records(t0).is_empty(), "someone else's now");
    let (_, req) = acknowledge(&mut f, t0);
    assert_eq!(ack_acks(&req, 1), [(0, 1, vec![2])]);
}

#[test]
fn not_leader_looks_the_leader_up_again() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    f.begin_poll().unwrap();
    let (id, _) = fetch(&mut f, t0);
    let mut resp = answer(0, None, &[]);
    resp.responses[0].partitions[0].error_code = KafkaCode::NotLeaderOrFollower.code();
    f.handle_fetch(BROKER, id, Ok(resp), t0);
    assert!(matches!(
        f.poll_action(t0),
        Some(Action::RefreshLeaders { .. })
    ));
    f.set_leaders(HashMap::from([(tip(0), 2)]), t0);
    assert!(matches!(
        f.poll_action(t0),
        Some(Action::Connect { broker: 2 })
    ));
}

#[test]
fn close_accepts_in_implicit_mode_and_ends_each_session_with_epoch_minus_1() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    poll_with(&mut f, answer(0, Some(batch(0, 2)), &[(0, 1, 1)]), t0);
    f.close();
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(req.share_session_epoch, -1);
    assert_eq!(ack_acks(&req, 0), [(0, 1, vec![1])]);
    assert!(!f.is_closed());
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, 0, 0)), t0);
    assert!(f.is_closed());
    assert!(matches!(f.begin_poll(), Err(ShareError::Closed)));
}

#[test]
fn a_hostile_acquired_range_is_ignored() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    let got = poll_with(
        &mut f,
        answer(0, Some(batch(0, 1)), &[(0, i64::MAX, 1)]),
        t0,
    );
    assert!(got.is_empty());
    assert_eq!(f.unanswered_acks(), 0, "no 2^63 gaps either");
}

#[test]
fn a_partition_the_broker_keeps_refusing_is_asked_again_ever_more_slowly() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    f.begin_poll().unwrap();
    let refused = || {
        let mut resp = answer(0, None, &[]);
        // What Kafka 4.4 answers before the share-partition is initialized.
        resp.responses[0].partitions[0].error_code = KafkaCode::UnknownServerError.code();
        resp
    };
    let mut now = t0;
    for pause in [100, 200, 400, 800, 1000, 1000] {
        let (id, _) = fetch(&mut f, now);
        f.handle_fetch(BROKER, id, Ok(refused()), now);
        let wait = Duration::from_millis(pause);
        assert!(
            f.poll_action(now + wait - Duration::from_millis(1))
                .is_none(),
            "{pause} ms"
        );
        now += wait;
    }
    let (id, _) = fetch(&mut f, now);
    f.handle_fetch(BROKER, id, Ok(answer(0, None, &[])), now);
    assert!(
        f.poll_action(now).is_some(),
        "a clean answer resets the pause"
    );
}

#[test]
fn offsets_behind_a_corrupt_batch_are_released_not_gapped() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Implicit), &[0], 2, t0);
    let mut bytes = BytesMut::from(&batch(0, 2)[..]);
    let mut bad = BytesMut::from(&batch(2, 2)[..]);
    let last = bad.len() - 1;
    bad[last] ^= 0xff; // the CRC no longer matches
    bytes.extend_from_slice(&bad);
    let got = poll_with(&mut f, answer(0, Some(bytes.freeze()), &[(0, 3, 1)]), t0);
    assert_eq!(
        offsets(&got),
        [0, 1],
        "the good batch before it is delivered"
    );
    let (_, req) = acknowledge(&mut f, t0);
    assert_eq!(
        ack_acks(&req, 0),
        [(2, 3, vec![2])],
        "RELEASE goes at once: delivered again, never archived as a gap"
    );
}

// ---- the group's hand-over: revoked and lost partitions ---------------------

/// A revoked partition's held acknowledgements go at once, with the
/// RELEASE of its records no poll took; the hand-over is done once the
/// broker answered them. What the application still holds stays its own.
#[test]
fn a_revoke_sends_what_is_owed_and_is_handed_over_once_answered() {
    let t0 = Instant::now();
    let mut s = settings(AcknowledgementMode::Explicit);
    s.max_poll_records = 2;
    let mut f = ready(s, &[0, 1], 2, t0);
    let got = poll_with(&mut f, answer(1, Some(batch(0, 4)), &[(0, 3, 1)]), t0);
    assert_eq!(offsets(&got), [0, 1]);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap();
    assert!(f.poll_action(t0).is_none(), "held until the next poll");
    let revoked = BTreeSet::from([tip(1)]);
    assert!(f.handed_over(&revoked), "nothing owed yet");
    f.revoke(&revoked);
    assert_eq!(f.assignment(), &BTreeSet::from([tip(0)]));
    assert!(!f.handed_over(&revoked));
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(
        ack_acks(&req, 1),
        [(0, 0, vec![1]), (2, 3, vec![2])],
        "the accept, and the RELEASE of what no poll took"
    );
    assert!(!f.handed_over(&revoked), "sent, not answered");
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(1, 0, 0)), t0);
    assert!(f.handed_over(&revoked));
    // Offset 1 is still the application's: its acknowledgement goes later.
    f.acknowledge(&got[1].tp, got[1].topic_id, 1, A::Accept)
        .unwrap();
}

/// A member out of the group gives back even what the application holds
/// (RELEASE), and says so when the application acknowledges it later.
#[test]
fn a_loss_gives_back_what_the_application_holds() {
    let t0 = Instant::now();
    let mut f = ready(settings(AcknowledgementMode::Explicit), &[0], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 2)), &[(0, 1, 1)]), t0);
    assert_eq!(offsets(&got), [0, 1]);
    let lost = BTreeSet::from([tip(0)]);
    f.lose(&lost);
    let e = f
        .acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap_err();
    assert!(e.to_string().contains("gave it back"), "{e}");
    let (id, req) = acknowledge(&mut f, t0);
    assert_eq!(ack_acks(&req, 0), [(0, 1, vec![2])], "RELEASE both");
    assert!(!f.handed_over(&lost));
    f.handle_acknowledge(BROKER, id, Ok(ack_answer(0, 0, 0)), t0);
    assert!(f.handed_over(&lost));
    let e = f
        .acknowledge(&got[1].tp, got[1].topic_id, 1, A::Accept)
        .unwrap_err();
    assert!(e.to_string().contains("left the group"), "{e}");
    f.begin_poll().unwrap();
    assert!(f.poll_action(t0).is_none(), "nothing assigned: no fetch");
}

/// The coordinator removed the member: what it held of the lost
/// partitions is forgotten, not acknowledged (no RELEASE, no ACCEPT on the
/// stale membership); acknowledgements the application gave fail with
/// the cause, and a later acknowledge is refused.
#[test]
fn a_removed_member_forgets_its_records_and_acknowledges_none() {
    let t0 = Instant::now();
    let mut s = settings(AcknowledgementMode::Explicit);
    s.max_poll_records = 2;
    let mut f = ready(s, &[0, 1], 2, t0);
    let got = poll_with(&mut f, answer(0, Some(batch(0, 4)), &[(0, 3, 1)]), t0);
    assert_eq!(offsets(&got), [0, 1]);
    f.acknowledge(&got[0].tp, got[0].topic_id, 0, A::Accept)
        .unwrap();
    // Offset 1 is with the application; 2 and 3 are buffered.
    let cause = Error::Metadata("removed".into());
    f.forget(&BTreeSet::from([tip(0)]), &cause);

    let outcomes = f.take_outcomes();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(outcomes[0].ack, A::Accept);
    assert_eq!(outcomes[0].offsets, [0]);
    assert!(outcomes[0].error.is_some());
    assert_eq!(f.unanswered_acks(), 0);
    assert!(f.handed_over(&BTreeSet::from([tip(0)])));
    assert_eq!(f.assignment(), &BTreeSet::from([tip(1)]));
    let e = f
        .acknowledge(&got[1].tp, got[1].topic_id, 1, A::Release)
        .unwrap_err();
    assert!(e.to_string().contains("does not hold it"), "{e}");
    // Nothing owed: the next request carries no acknowledgement of p0.
    f.begin_poll().unwrap();
    let (_, req) = fetch(&mut f, t0);
    assert!(fetch_acks(&req, 0).is_empty(), "nothing acknowledged");
    assert!(f.take_records(t0).is_empty(), "the buffered ones are gone");
}
