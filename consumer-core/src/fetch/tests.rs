//! The pure fetch steps, without a broker: what goes into each Fetch, and
//! what a response does to the state.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_wire::records::{encode_batch, BatchOptions, NewRecord};
use kafka_wire::BrokerAddress;
use kafka_wire::{BrokerInfo, Metadata, PartitionInfo, TopicInfo};

use super::*;
use uuid::Uuid;

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

fn cfg(reset: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .unwrap()
        .set("auto.offset.reset", reset)
        .unwrap()
        .set("fetch.max.wait.ms", "500")
        .unwrap()
        .build()
        .unwrap()
}

/// Topic `t`: partition p led by `leaders[p]` at leader epoch 7; brokers 1
/// and 2 are alive (a leader outside them is unknown).
fn metadata(leaders: &[i32]) -> Metadata {
    let broker = |id| {
        (
            id,
            BrokerInfo {
                id,
                address: BrokerAddress {
                    host: "localhost".into(),
                    port: 9092,
                },
                rack: None,
            },
        )
    };
    let info = TopicInfo {
        name: "t".into(),
        id: [1; 16],
        is_internal: false,
        error: None,
        partitions: leaders
            .iter()
            .enumerate()
            .map(|(p, leader)| PartitionInfo {
                partition: p as i32,
                leader: *leader,
                leader_epoch: 7,
                replicas: vec![*leader],
                isr: vec![*leader],
                error: None,
            })
            .collect(),
    };
    Metadata {
        brokers: [broker(1), broker(2)].into_iter().collect(),
        topics: [("t".to_string(), info)].into_iter().collect(),
        ..Metadata::default()
    }
}

/// A fetcher serving `positions` (partition → position; `None`: not
/// initialised yet).
fn fetcher(positions: &[(i32, Option<i64>)]) -> Fetcher {
    let mut f = Fetcher::default();
    f.assign(
        positions
            .iter()
            .map(|(p, pos)| {
                let mut s = PartState::new(0);
                s.position = *pos;
                (tp(*p), s)
            })
            .collect(),
    );
    f
}

/// `n` plain records from `base`.
fn records(base: i64, n: usize) -> Bytes {
    let mut b = BytesMut::new();
    let recs: Vec<NewRecord> = (0..n)
        .map(|i| NewRecord {
            value: Some(Bytes::from(format!("r{i}"))),
            ..NewRecord::default()
        })
        .collect();
    encode_batch(
        &mut b,
        &BatchOptions {
            base_offset: base,
            ..BatchOptions::default()
        },
        &recs,
    );
    b.freeze()
}

fn response(partitions: Vec<PartitionData>) -> FetchResponse {
    FetchResponse::default()
        .with_session_id(42)
        .with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions)])
}

fn data(p: i32, base: i64, n: usize) -> PartitionData {
    PartitionData::default()
        .with_partition_index(p)
        .with_high_watermark(base + n as i64)
        .with_last_stable_offset(base + n as i64)
        .with_records(Some(records(base, n)))
}

fn asked(f: &PlannedFetch) -> Vec<(i32, i64, i32, i32)> {
    f.request
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            (
                p.partition,
                p.fetch_offset,
                p.current_leader_epoch,
                p.last_fetched_epoch,
            )
        })
        .collect()
}

#[test]
fn build_sends_one_fetch_per_leader_with_positions_and_epochs() {
    let md = metadata(&[1, 2, 1, 9, 1]);
    let mut f = fetcher(&[
        (0, Some(5)),
        (1, Some(7)),
        (2, None),
        (3, Some(1)),
        (4, Some(3)),
    ]);
    f.parts.get_mut(&tp(0)).unwrap().last_fetched_epoch = 6;
    f.parts.get_mut(&tp(4)).unwrap().paused = true;
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());

    assert_eq!(
        plan.unknown_leaders,
        vec!["t".to_string()],
        "partition 3's leader 9 is unknown"
    );
    let brokers: Vec<i32> = plan.fetches.iter().map(|f| f.broker).collect();
    assert_eq!(brokers, vec![1, 2]);
    // Uninitialised (2) and paused (4) partitions are not fetched.
    assert_eq!(asked(&plan.fetches[0]), vec![(0, 5, 7, 6)]);
    assert_eq!(asked(&plan.fetches[1]), vec![(1, 7, 7, -1)]);
    assert_eq!(
        plan.fetches[0].requested,
        [(tp(0), 5)].into_iter().collect()
    );
    assert_eq!(plan.fetches[0].wait, Duration::from_millis(500));
    assert_eq!(plan.fetches[0].request.max_wait_ms, 500);
    assert_eq!(
        (
            plan.fetches[0].request.session_id,
            plan.fetches[0].request.session_epoch
        ),
        (0, 0),
        "the first fetch is a full one"
    );

    assert_eq!(
        plan.fetches[0].request.rack_id.as_str(),
        "",
        "no client.rack"
    );

    // One fetch in flight per broker.
    let again = f.build_requests(&md, &[], &cfg, Instant::now());
    assert!(again.fetches.is_empty());
}

#[test]
fn client_rack_goes_into_every_fetch() {
    let md = metadata(&[1, 2]);
    let mut f = fetcher(&[(0, Some(0)), (1, Some(0))]);
    let mut cfg = cfg("earliest");
    cfg.client_rack = Some("eu-west-1a".into());
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches.len(), 2);
    for fetch in &plan.fetches {
        assert_eq!(fetch.request.rack_id.as_str(), "eu-west-1a", "KIP-392");
    }
}

#[test]
fn revoking_partitions_are_neither_fetched_nor_buffered() {
    let md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(0)), (1, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[tp(1)], &cfg, Instant::now());
    assert_eq!(asked(&plan.fetches[0]), vec![(0, 0, 7, -1)]);

    let requested = [(tp(0), 0), (tp(1), 0)].into_iter().collect();
    let actions = f.apply_response(
        1,
        &requested,
        Ok(response(vec![data(0, 0, 2), data(1, 0, 2)])),
        &[tp(1)],
        &cfg,
        Instant::now(),
    );
    assert!(actions.is_empty());
    let (out, err) = f.drain(100);
    assert!(err.is_none());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tp, tp(0));
}

#[test]
fn a_buffered_partition_sits_out_and_shortens_its_leaders_wait() {
    let md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(0)), (1, Some(0))]);
    let cfg = cfg("earliest");
    let now = Instant::now();
    let plan = f.build_requests(&md, &[], &cfg, now);
    let requested = plan.fetches[0].requested.clone();
    f.apply_response(
        1,
        &requested,
        Ok(response(vec![data(0, 0, 3)])),
        &[],
        &cfg,
        Instant::now(),
    );
    // Paused while its response is undrained: it will want data soon.
    f.parts.get_mut(&tp(0)).unwrap().paused = true;
    f.parts.get_mut(&tp(0)).unwrap().paused_since = Some(now);

    let plan = f.build_requests(&md, &[], &cfg, now);
    assert_eq!(
        asked(&plan.fetches[0]),
        vec![],
        "incremental: partition 1 unchanged, 0 sits out"
    );
    assert_eq!(plan.fetches[0].wait, HELD_BACK_FETCH_WAIT);
    assert_eq!(plan.fetches[0].request.forgotten_topics_data.len(), 1);

    // Paused for long (a quarantine): the leader long-polls again.
    let requested = plan.fetches[0].requested.clone();
    f.apply_response(
        1,
        &requested,
        Ok(response(vec![])),
        &[],
        &cfg,
        Instant::now(),
    );
    let plan = f.build_requests(&md, &[], &cfg, now + LONG_PAUSE * 2);
    assert_eq!(plan.fetches[0].wait, Duration::from_millis(500));
}

/// DESIGN invariant 59: a partition paused briefly (the runtime's
/// backpressure) is still fetched, so it resumes without a fetch round
/// trip; paused for longer than [`LONG_PAUSE`], or paused with no pause
/// time known, it is not.
#[test]
fn a_briefly_paused_partition_is_still_fetched_and_a_long_paused_one_is_not() {
    let md = metadata(&[1, 1]);
    let cfg = cfg("earliest");
    let now = Instant::now();
    let asked_partitions = |f: &mut Fetcher, at: Instant| -> Vec<i32> {
        let plan = f.build_requests(&md, &[], &cfg, at);
        let mut ps: Vec<i32> = plan
            .fetches
            .iter()
            .flat_map(|p| p.requested.keys().map(|tp| tp.partition))
            .collect();
        ps.sort_unstable();
        ps
    };
    for (paused_for, fetched) in [
        (Some(Duration::ZERO), true),
        (Some(LONG_PAUSE / 2), true),
        (Some(LONG_PAUSE * 2), false),
        (None, false),
    ] {
        let mut f = fetcher(&[(0, Some(5)), (1, Some(7))]);
        let p = f.parts.get_mut(&tp(1)).unwrap();
        p.paused = true;
        p.paused_since = paused_for.map(|d| now - d);
        let want = if fetched { vec![0, 1] } else { vec![0] };
        assert_eq!(
            asked_partitions(&mut f, now),
            want,
            "paused for {paused_for:?}"
        );
    }
}

#[test]
fn drain_hands_out_records_and_advances_positions() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(10))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![data(0, 10, 5)])),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(actions.is_empty());
    assert_eq!(f.parts[&tp(0)].high_watermark, 15);
    assert_eq!(
        f.parts[&tp(0)].position,
        Some(10),
        "not before it is handed out"
    );

    let (out, _) = f.drain(3);
    assert_eq!(out[0].records.len(), 3);
    assert_eq!(f.parts[&tp(0)].position, Some(13));
    let (out, _) = f.drain(100);
    assert_eq!(out[0].records.len(), 2);
    assert_eq!(f.parts[&tp(0)].position, Some(15));
    assert!(f.drain(100).0.is_empty());
}

#[test]
fn data_for_a_position_that_moved_is_dropped() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(10))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    f.seek(&tp(0), 100);
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![data(0, 10, 5), data(1, 0, 1)])),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(actions.is_empty());
    assert!(
        f.drain(100).0.is_empty(),
        "stale data and unrequested partitions are dropped"
    );
    assert_eq!(f.parts[&tp(0)].position, Some(100));
}

#[test]
fn partition_errors_become_actions_in_order() {
    let md = metadata(&[1, 1, 1, 1]);
    let mut f = fetcher(&[(0, Some(10)), (1, Some(20)), (2, Some(30)), (3, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let mut truncated = data(1, 20, 1);
    truncated.diverging_epoch.epoch = 5;
    truncated.diverging_epoch.end_offset = 12;
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![
            PartitionData::default()
                .with_partition_index(0)
                .with_error_code(1 /* OFFSET_OUT_OF_RANGE */),
            truncated,
            PartitionData::default()
                .with_partition_index(2)
                .with_error_code(6 /* NOT_LEADER_OR_FOLLOWER */),
            data(3, 0, 1),
        ])),
        &[],
        &cfg,
        Instant::now(),
    );
    let shown: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    assert_eq!(actions.len(), 3, "{shown:?}");
    assert!(matches!(&actions[0], FetchAction::OutOfRange { tp: t, offset: 10 } if *t == tp(0)));
    assert!(matches!(&actions[1], FetchAction::Truncated { tp: t, to: 12 } if *t == tp(1)));
    assert!(matches!(&actions[2], FetchAction::RefreshMetadata(ts) if ts == &["t".to_string()]));
    // The healthy partition's data is buffered all the same.
    let (out, _) = f.drain(100);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].tp, tp(3));
    // A partition error started every session over.
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches[0].request.session_epoch, 0);
}

#[test]
fn truncation_without_a_reset_policy_fails_and_stops_there() {
    let md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(20)), (1, Some(0))]);
    let cfg = cfg("none");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let mut truncated = data(0, 20, 1);
    truncated.diverging_epoch.epoch = 5;
    truncated.diverging_epoch.end_offset = 12;
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![truncated, data(1, 0, 1)])),
        &[],
        &cfg,
        Instant::now(),
    );
    assert_eq!(actions.len(), 1);
    assert!(matches!(
        &actions[0],
        FetchAction::Fail(ConsumerError::NoOffset { tp: t, .. }) if *t == tp(0)
    ));
    assert!(
        f.drain(100).0.is_empty(),
        "nothing after the failure was applied"
    );
}

#[test]
fn a_failed_fetch_frees_the_broker_and_starts_a_full_session() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![])),
        &[],
        &cfg,
        Instant::now(),
    );
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(
        (
            plan.fetches[0].request.session_id,
            plan.fetches[0].request.session_epoch
        ),
        (42, 1),
        "incremental after the broker opened a session"
    );
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Err(Error::Metadata("connection lost".into())),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(matches!(&actions[..], [FetchAction::RefreshMetadata(ts)] if ts.is_empty()));
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches.len(), 1, "the broker is free again");
    assert_eq!(
        (
            plan.fetches[0].request.session_id,
            plan.fetches[0].request.session_epoch
        ),
        (0, 0)
    );
}

#[test]
fn restart_drops_the_buffer_and_resets_what_the_old_log_said() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(10))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![data(0, 10, 5)])),
        &[],
        &cfg,
        Instant::now(),
    );
    f.restart(&tp(0), Start::LogStart, None, 3);
    let p = &f.parts[&tp(0)];
    assert_eq!(
        (p.position, p.start, p.incarnation, p.high_watermark),
        (None, Start::LogStart, 3, -1)
    );
    assert!(f.drain(100).0.is_empty());
}

#[test]
fn a_throttled_broker_is_not_fetched_from_before_its_throttle_time() {
    let md = metadata(&[1, 2]);
    let mut f = fetcher(&[(0, Some(0)), (1, Some(0))]);
    let cfg = cfg("earliest");
    let t = Instant::now();
    let plan = f.build_requests(&md, &[], &cfg, t);
    assert_eq!(plan.fetches.len(), 2);
    let throttled = response(vec![]).with_throttle_time_ms(200);
    f.apply_response(1, &plan.fetches[0].requested, Ok(throttled), &[], &cfg, t);
    f.apply_response(
        2,
        &plan.fetches[1].requested,
        Ok(response(vec![])),
        &[],
        &cfg,
        t,
    );
    assert_eq!(f.throttled_until(t), Some(t + Duration::from_millis(200)));

    let plan = f.build_requests(&md, &[], &cfg, t + Duration::from_millis(199));
    let brokers: Vec<i32> = plan.fetches.iter().map(|f| f.broker).collect();
    assert_eq!(brokers, vec![2], "broker 1 asked for 200 ms of quiet");
    let later = t + Duration::from_millis(200);
    assert_eq!(f.throttled_until(later), None);
    let plan = f.build_requests(&md, &[], &cfg, later);
    let brokers: Vec<i32> = plan.fetches.iter().map(|f| f.broker).collect();
    assert_eq!(brokers, vec![1]);
}

/// [`metadata`] with broker 3 alive too (rack r3: the follower the tests'
/// leader names).
fn metadata3(leaders: &[i32]) -> Metadata {
    let mut md = metadata(leaders);
    let mut three = md.brokers[&1].clone();
    three.id = 3;
    three.rack = Some("r3".into());
    md.brokers.insert(3, three);
    md
}

fn racked(rack: &str) -> ConsumerConfig {
    let mut c = cfg("earliest");
    c.client_rack = Some(rack.into());
    c
}

/// A leader's answer naming `follower` as the preferred read replica
/// (KIP-392): no records.
fn named(p: i32, follower: i32) -> PartitionData {
    PartitionData::default()
        .with_partition_index(p)
        .with_high_watermark(100)
        .with_preferred_read_replica(follower.into())
}

/// Where each planned fetch goes: (broker, partitions, rack id sent).
fn routes(plan: &FetchPlan) -> Vec<(i32, Vec<i32>, String)> {
    plan.fetches
        .iter()
        .map(|f| {
            (
                f.broker,
                f.requested.keys().map(|tp| tp.partition).collect(),
                f.request.rack_id.to_string(),
            )
        })
        .collect()
}

/// Partition 0 (of leader 1) moved to follower 3 by the leader's answer;
/// partition 1 stays with the leader.
fn following(now: Instant) -> (Fetcher, Metadata, ConsumerConfig) {
    let md = metadata3(&[1, 1]);
    let cfg = racked("r3");
    let mut f = fetcher(&[(0, Some(10)), (1, Some(20))]);
    let plan = f.build_requests(&md, &[], &cfg, now);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], "r3".to_string())]);
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![named(0, 3), data(1, 20, 2)])),
        &[],
        &cfg,
        now,
    );
    assert!(actions.is_empty(), "{actions:?}");
    (f, md, cfg)
}

/// DESIGN invariant 77 (issue 31's failing input 1): the leader answers a
/// consumer in another rack with no records and a preferred read replica;
/// the partition is fetched from that follower from then on, for
/// `metadata.max.age.ms`, then from the leader again (which may name it
/// again).
#[test]
fn a_named_follower_is_fetched_from_until_metadata_max_age() {
    let t = Instant::now();
    let (mut f, md, cfg) = following(t);
    assert_eq!(f.drain(100).0.len(), 1, "partition 1's records");
    let plan = f.build_requests(&md, &[], &cfg, t);
    assert_eq!(
        routes(&plan),
        vec![
            (1, vec![1], "r3".to_string()),
            (3, vec![0], "r3".to_string())
        ],
        "partition 0 at its follower, with the rack"
    );
    assert_eq!(
        asked(&plan.fetches[1]),
        vec![(0, 10, 7, -1)],
        "the leader epoch is checked there too"
    );
    // The follower's records are buffered and drained like the leader's.
    let follower = plan.fetches.iter().find(|p| p.broker == 3).unwrap();
    let actions = f.apply_response(
        3,
        &follower.requested,
        Ok(response(vec![data(0, 10, 4)])),
        &[],
        &cfg,
        t,
    );
    assert!(actions.is_empty());
    let (out, _) = f.drain(100);
    assert_eq!((out[0].tp.partition, out[0].records.len()), (0, 4));
    let leader = plan.fetches.iter().find(|p| p.broker == 1).unwrap();
    f.apply_response(1, &leader.requested, Ok(response(vec![])), &[], &cfg, t);

    // Just before the lifetime ends: still the follower.
    let age = cfg.client.metadata_max_age;
    let plan = f.build_requests(&md, &[], &cfg, t + age - Duration::from_millis(1));
    assert!(routes(&plan).contains(&(3, vec![0], "r3".to_string())));
    for p in &plan.fetches {
        f.apply_response(p.broker, &p.requested, Ok(response(vec![])), &[], &cfg, t);
    }
    // Then the leader is asked again, with the rack.
    let plan = f.build_requests(&md, &[], &cfg, t + age);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], "r3".to_string())]);
}

#[test]
fn a_failed_follower_sends_its_partitions_to_the_leader_without_the_rack() {
    let t = Instant::now();
    let (mut f, md, cfg) = following(t);
    f.drain(100);
    let plan = f.build_requests(&md, &[], &cfg, t);
    let follower = plan.fetches.iter().find(|p| p.broker == 3).unwrap();
    let leader = plan.fetches.iter().find(|p| p.broker == 1).unwrap();
    f.apply_response(1, &leader.requested, Ok(response(vec![])), &[], &cfg, t);
    // The follower's node was killed: its connection broke.
    let actions = f.apply_response(
        3,
        &follower.requested,
        Err(Error::Metadata("connection reset".into())),
        &[],
        &cfg,
        t,
    );
    assert!(matches!(&actions[..], [FetchAction::RefreshMetadata(ts)] if ts.is_empty()));
    // The metadata still lists node 3 (not fenced yet): the leader is
    // asked without the rack, so it serves the partition itself.
    let plan = f.build_requests(&md, &[], &cfg, t);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], String::new())]);
    f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![data(0, 10, 3)])),
        &[],
        &cfg,
        t,
    );
    assert_eq!(f.drain(100).0[0].records.len(), 3, "read from the leader");
    // After the back-off, the rack again (the leader may name a follower).
    let plan = f.build_requests(&md, &[], &cfg, t + replica::FOLLOWER_BACKOFF);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], "r3".to_string())]);
}

/// DESIGN invariant 77: a follower's OFFSET_OUT_OF_RANGE at or past its
/// high watermark means it lags behind the leader: the partition goes back
/// to the leader, and its position is never reset. The leader's own
/// OFFSET_OUT_OF_RANGE still is one.
#[test]
fn a_followers_out_of_range_goes_back_to_the_leader_and_never_resets() {
    let t = Instant::now();
    let (mut f, md, cfg) = following(t);
    f.drain(100);
    let plan = f.build_requests(&md, &[], &cfg, t);
    let follower = plan.fetches.iter().find(|p| p.broker == 3).unwrap();
    let lagging = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(1 /* OFFSET_OUT_OF_RANGE */)
        .with_high_watermark(8)
        .with_log_start_offset(0);
    let actions = f.apply_response(
        3,
        &follower.requested,
        Ok(response(vec![lagging])),
        &[],
        &cfg,
        t,
    );
    assert!(
        actions.is_empty(),
        "no reset, no metadata refresh: {actions:?}"
    );
    assert_eq!(f.parts[&tp(0)].position, Some(10));
    let leader = plan.fetches.iter().find(|p| p.broker == 1).unwrap();
    f.apply_response(1, &leader.requested, Ok(response(vec![])), &[], &cfg, t);

    let plan = f.build_requests(&md, &[], &cfg, t);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], String::new())]);
    // The leader says out of range too: now it is one.
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![PartitionData::default()
            .with_partition_index(0)
            .with_error_code(1)])),
        &[],
        &cfg,
        t,
    );
    assert!(
        matches!(&actions[..], [FetchAction::OutOfRange { tp: p, offset: 10 }] if *p == tp(0)),
        "{actions:?}"
    );
}

#[test]
fn any_partition_error_of_a_follower_goes_back_to_the_leader_without_a_refresh() {
    let t = Instant::now();
    for code in [
        6,  /* NOT_LEADER_OR_FOLLOWER */
        9,  /* REPLICA_NOT_AVAILABLE */
        74, /* FENCED_LEADER_EPOCH */
    ] {
        let (mut f, md, cfg) = following(t);
        f.drain(100);
        let plan = f.build_requests(&md, &[], &cfg, t);
        let follower = plan.fetches.iter().find(|p| p.broker == 3).unwrap();
        let actions = f.apply_response(
            3,
            &follower.requested,
            Ok(response(vec![PartitionData::default()
                .with_partition_index(0)
                .with_error_code(code)])),
            &[],
            &cfg,
            t,
        );
        assert!(actions.is_empty(), "code {code}: {actions:?}");
        let leader = plan.fetches.iter().find(|p| p.broker == 1).unwrap();
        f.apply_response(1, &leader.requested, Ok(response(vec![])), &[], &cfg, t);
        let plan = f.build_requests(&md, &[], &cfg, t);
        assert_eq!(
            routes(&plan),
            vec![(1, vec![0, 1], String::new())],
            "code {code}"
        );
    }
}

#[test]
fn a_follower_missing_from_the_metadata_is_read_at_the_leader_and_refreshed() {
    let t = Instant::now();
    let (mut f, _, cfg) = following(t);
    f.drain(100);
    // Node 3 left the metadata (fenced, or not learned yet).
    let md = metadata(&[1, 1]);
    let plan = f.build_requests(&md, &[], &cfg, t);
    assert_eq!(routes(&plan), vec![(1, vec![0, 1], String::new())]);
    assert_eq!(plan.unknown_leaders, vec!["t".to_string()]);
}

/// DESIGN invariant 77: a partition in a fetch in flight is not asked of
/// another broker before that fetch's answer is applied (its leader moved
/// meanwhile): both answers would be buffered at the same position, and
/// its records handed out twice.
#[test]
fn a_partition_in_flight_is_not_fetched_from_another_broker_meanwhile() {
    let t = Instant::now();
    let cfg = cfg("earliest");
    let mut f = fetcher(&[(0, Some(10)), (1, Some(20))]);
    let plan = f.build_requests(&metadata(&[1, 1]), &[], &cfg, t);
    assert_eq!(plan.fetches.len(), 1);
    // Partition 0's leadership moves to broker 2 while the fetch is out.
    let moved = metadata(&[2, 1]);
    let plan2 = f.build_requests(&moved, &[], &cfg, t);
    assert!(plan2.fetches.is_empty(), "{:?}", routes(&plan2));
    f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response(vec![data(0, 10, 2)])),
        &[],
        &cfg,
        t,
    );
    let (out, _) = f.drain(100);
    assert_eq!(out[0].records.len(), 2);
    let plan3 = f.build_requests(&moved, &[], &cfg, t);
    let mut r = routes(&plan3);
    r.sort();
    assert_eq!(
        r,
        vec![(1, vec![1], String::new()), (2, vec![0], String::new())]
    );
}

/// Whether an answer is a follower's is decided by how the partition was
/// asked, not by its state when the answer comes: revoked and assigned
/// again meanwhile (a fresh state: the leader), a lagging follower's
/// OFFSET_OUT_OF_RANGE is still no reset.
#[test]
fn a_followers_answer_stays_a_followers_when_the_partition_was_assigned_anew_meanwhile() {
    let t = Instant::now();
    let (mut f, md, cfg) = following(t);
    f.drain(100);
    let plan = f.build_requests(&md, &[], &cfg, t);
    let follower = plan.fetches.iter().find(|p| p.broker == 3).unwrap();
    f.remove(&[tp(0)]);
    let mut again = PartState::new(1);
    again.position = Some(10);
    f.parts.insert(tp(0), again);
    let actions = f.apply_response(
        3,
        &follower.requested,
        Ok(response(vec![PartitionData::default()
            .with_partition_index(0)
            .with_error_code(1 /* OFFSET_OUT_OF_RANGE */)])),
        &[],
        &cfg,
        t,
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(f.parts[&tp(0)].position, Some(10));
}

// --- Topic ids (KIP-516) and leader hints (KIP-951) ---

/// The id of topic `t` in [`metadata`].
fn t_id() -> Uuid {
    Uuid::from_bytes([1; 16])
}

/// A v13+ answer: the topic named by id only.
fn response_by_id(id: Uuid, partitions: Vec<PartitionData>) -> FetchResponse {
    FetchResponse::default()
        .with_session_id(42)
        .with_responses(vec![FetchableTopicResponse::default()
            .with_topic_id(id)
            .with_partitions(partitions)])
}

/// Partition `p` refused with `code`, naming `leader` at `epoch` (KIP-951).
fn moved(p: i32, code: KafkaCode, leader: i32, epoch: i32) -> PartitionData {
    use kafka_wire::messages::fetch_response::LeaderIdAndEpoch;
    use kafka_wire::messages::BrokerId;
    PartitionData::default()
        .with_partition_index(p)
        .with_error_code(code.code())
        .with_current_leader(
            LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch),
        )
}

#[test]
fn a_topic_with_an_id_is_asked_by_id_and_its_answer_read_by_id() {
    let md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(5)), (1, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let topic = &plan.fetches[0].request.topics[0];
    assert_eq!(topic.topic_id, t_id(), "Fetch v13+ reads the id");
    assert_eq!(
        topic.topic.0.as_str(),
        "t",
        "a broker below v13 reads the name"
    );

    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested.clone(),
        Ok(response_by_id(t_id(), vec![data(0, 5, 3)])),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(actions.is_empty(), "{actions:?}");
    let (out, _) = f.drain(100);
    assert_eq!((out[0].tp.clone(), out[0].records.len()), (tp(0), 3));
}

#[test]
fn a_topic_without_an_id_is_asked_by_name() {
    let mut md = metadata(&[1]);
    md.topics.get_mut("t").unwrap().id = [0; 16]; // Metadata < v10
    let mut f = fetcher(&[(0, Some(0))]);
    let plan = f.build_requests(&md, &[], &cfg("earliest"), Instant::now());
    let topic = &plan.fetches[0].request.topics[0];
    assert!(topic.topic_id.is_nil(), "the connection sends it at v12");
    assert_eq!(topic.topic.0.as_str(), "t");
}

#[test]
fn an_unknown_topic_id_refreshes_metadata_and_starts_the_sessions_over() {
    let md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(0)), (1, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response_by_id(
            t_id(),
            vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_error_code(KafkaCode::UnknownTopicId.code()),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_error_code(KafkaCode::InconsistentTopicId.code()),
            ],
        )),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(
        matches!(&actions[..], [FetchAction::RefreshMetadata(ts)] if ts == &["t".to_string()]),
        "{actions:?}"
    );
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches[0].request.session_epoch, 0, "a full fetch");
}

#[test]
fn an_answer_for_a_topic_id_not_asked_for_is_ignored() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response_by_id(Uuid::from_u128(7), vec![data(0, 0, 1)])),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(actions.is_empty(), "{actions:?}");
    assert!(f.drain(100).0.is_empty());
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches.len(), 1, "asked again");
}

#[test]
fn a_session_refused_for_its_topic_id_usage_starts_over_after_a_refresh() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(FetchResponse::default().with_error_code(KafkaCode::FetchSessionTopicIdError.code())),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(
        matches!(&actions[..], [FetchAction::RefreshMetadata(ts)] if ts == &["t".to_string()]),
        "the topics it asked for: {actions:?}"
    );
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(
        (
            plan.fetches[0].request.session_id,
            plan.fetches[0].request.session_epoch
        ),
        (0, 0)
    );
}

/// KIP-951: the old leader names the new one; the next fetch goes there,
/// with the new leader epoch, and no Metadata request is asked for.
#[test]
fn a_leader_hint_sends_the_next_fetch_to_the_new_leader_without_a_metadata_request() {
    let mut md = metadata(&[1, 1]);
    let mut f = fetcher(&[(0, Some(10)), (1, Some(20))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response_by_id(
            t_id(),
            vec![
                moved(0, KafkaCode::NotLeaderOrFollower, 2, 8),
                data(1, 20, 1),
            ],
        )),
        &[],
        &cfg,
        Instant::now(),
    );
    let [FetchAction::NewLeaders(hints)] = &actions[..] else {
        panic!("only the hint, no refresh: {actions:?}");
    };
    assert_eq!(md.apply_leader_hints(hints).moved, vec![tp(0)]);
    f.drain(100);
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let to_2 = plan
        .fetches
        .iter()
        .find(|p| p.broker == 2)
        .expect("a fetch to node 2");
    assert_eq!(asked(to_2), vec![(0, 10, 8, -1)], "at the new leader epoch");
    assert!(plan.unknown_leaders.is_empty());
}

#[test]
fn a_leader_hint_carries_the_new_leaders_endpoint() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let mut resp = response_by_id(t_id(), vec![moved(0, KafkaCode::FencedLeaderEpoch, 3, 9)]);
    resp.node_endpoints = vec![
        kafka_wire::messages::fetch_response::NodeEndpoint::default()
            .with_node_id(kafka_wire::messages::BrokerId(3))
            .with_host(StrBytes::from_static_str("10.0.0.3"))
            .with_port(9094),
    ];
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(resp),
        &[],
        &cfg,
        Instant::now(),
    );
    let [FetchAction::NewLeaders(hints)] = &actions[..] else {
        panic!("{actions:?}");
    };
    let mut md = md;
    assert_eq!(md.apply_leader_hints(hints).moved, vec![tp(0)]);
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    assert_eq!(plan.fetches[0].broker, 3, "node 3, unknown before the hint");
}

#[test]
fn a_refusal_without_a_new_leader_still_refreshes_metadata() {
    let md = metadata(&[1]);
    let mut f = fetcher(&[(0, Some(0))]);
    let cfg = cfg("earliest");
    let plan = f.build_requests(&md, &[], &cfg, Instant::now());
    let actions = f.apply_response(
        1,
        &plan.fetches[0].requested,
        Ok(response_by_id(
            t_id(),
            vec![moved(0, KafkaCode::NotLeaderOrFollower, -1, -1)],
        )),
        &[],
        &cfg,
        Instant::now(),
    );
    assert!(
        matches!(&actions[..], [FetchAction::RefreshMetadata(ts)] if ts == &["t".to_string()]),
        "{actions:?}"
    );
}
