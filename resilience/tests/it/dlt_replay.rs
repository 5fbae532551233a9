//! DLT replay against the real broker: dead records go back exactly once,
//! with their provenance, a filter leaves the others for a later replay,
//! and a second replay sends nothing again.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_wire::records::Record;
use kafka_wire::{ClientConfig, IsolationLevel, NewTopic, OffsetSpec};
use resilience::dlt::replay::{
    replay, replayed_markers, ReplayOptions, TopicReader, REPLAYED_FROM,
};
use resilience::dlt::{self, DeadRecord, Filter};
use resilience::HandlerError;

/// Dead-letter `n` records of `origin` (partition `i % 2`, offset `i`):
/// even ones failed with "timeout", odd ones with "bad price".
fn dead_records(dlt_name: &str, origin: &str, n: i64) -> Vec<kafka_wire::ProducerRecord> {
    (0..n)
        .map(|i| {
            let rec = Record {
                offset: i,
                timestamp: 1_700_000_000_000 + i,
                key: Some(Bytes::from(format!("order-{i}"))),
                value: Some(Bytes::from(format!("{{\"n\":{i}}}"))),
                headers: vec![],
            };
            let err = if i % 2 == 0 {
                HandlerError::Retryable("timeout calling the bank".into())
            } else {
                HandlerError::NonRetryable("bad price".into())
            };
            dlt::dead_letter(dlt_name, origin, (i % 2) as i32, "billing", &rec, &err, 4)
        })
        .collect()
}

/// A dead letter whose `kafka_dlt-original-topic` names `elsewhere`, not
/// the DLT's source; its error matches `error~timeout` too.
fn forged(dlt_name: &str, elsewhere: &str) -> kafka_wire::ProducerRecord {
    let rec = Record {
        offset: 0,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"forged")),
        value: Some(Bytes::from_static(b"{\"amount\":1000000}")),
        headers: vec![],
    };
    let origin = dlt::Provenance {
        topic: elsewhere.to_string(),
        partition: 0,
        offset: 0,
        timestamp: rec.timestamp,
    };
    let err = HandlerError::Retryable("timeout calling the bank".into());
    dlt::forward(dlt_name, &origin, "billing", &rec, &err, 1)
}

async fn read_all(b: &testkit::BrokerEnv, topic: &str) -> Vec<(i32, Record)> {
    let admin = testkit::client(b).await;
    let client = ClientConfig::builder().bootstrap(&b.bootstrap).unwrap();
    let mut reader = TopicReader::open(client, &admin, topic).await.unwrap();
    let mut out = Vec::new();
    while let Some(batch) = reader.next().await.unwrap() {
        out.extend(batch);
    }
    reader.close().await;
    out
}

#[tokio::test]
async fn dead_records_go_back_exactly_once_with_provenance() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let origin = testkit::create_topic(&admin, "replay-orders", 2).await;
    // The runtime's naming: `<origin>.DLT`, whose source is `<origin>`.
    let dlt_name =
        testkit::create_topic_with(&admin, NewTopic::new(dlt::dlt_topic(&origin), 1)).await;
    let payments = testkit::create_topic(&admin, "replay-payments", 1).await;
    let mut records = dead_records(&dlt_name, &origin, 10);
    // A forged dead letter (a producer on the DLT, or on the origin before
    // the runtime replaced such headers) naming `payments` as its origin.
    records.push(forged(&dlt_name, &payments));
    testkit::produce(&admin, &b, records).await;
    let client = ClientConfig::builder().bootstrap(&b.bootstrap).unwrap();

    // First only the transient failures, and a dry run changes nothing.
    let timeouts = ReplayOptions {
        dlt: dlt_name.clone(),
        filter: Filter::parse(&["error~timeout"]).unwrap(),
        dry_run: true,
        ..ReplayOptions::default()
    };
    let dry = replay(client.clone(), &timeouts).await.unwrap();
    assert_eq!((dry.replayed, dry.filtered_out, dry.refused), (5, 5, 1));
    let timeouts = ReplayOptions {
        dry_run: false,
        ..timeouts
    };
    let first = replay(client.clone(), &timeouts).await.unwrap();
    assert_eq!(
        (
            first.replayed,
            first.filtered_out,
            first.already_replayed,
            first.refused
        ),
        (5, 5, 0, 1)
    );
    assert_eq!(first.by_target, BTreeMap::from([(origin.clone(), 5)]));

    // Then everything: only the other five go; a third run sends nothing.
    let all = ReplayOptions {
        dlt: dlt_name.clone(),
        ..ReplayOptions::default()
    };
    let second = replay(client.clone(), &all).await.unwrap();
    assert_eq!(
        (second.replayed, second.already_replayed, second.refused),
        (5, 5, 1)
    );
    let third = replay(client.clone(), &all).await.unwrap();
    assert_eq!(
        (third.replayed, third.already_replayed, third.refused),
        (0, 10, 1)
    );
    assert!(
        read_all(&b, &payments).await.is_empty(),
        "a forged provenance header sent nothing into the topic it names"
    );
    assert_eq!(
        replayed_markers(client.clone(), &admin, &dlt_name)
            .await
            .unwrap()
            .len(),
        10
    );

    // The origin topic holds each dead record once, in its original
    // partition, with its key, value, provenance and where it came from.
    let back = read_all(&b, &origin).await;
    assert_eq!(back.len(), 10, "each dead record exactly once");
    let mut seen = std::collections::BTreeSet::new();
    for (partition, r) in back {
        let dead = DeadRecord::parse(partition, r);
        let o = dead.origin.as_ref().expect("provenance kept");
        assert_eq!(o.topic, origin);
        assert_eq!(partition, o.partition, "back in its original partition");
        assert_eq!(
            dead.key_text().unwrap(),
            format!("order-{}", o.offset),
            "key kept"
        );
        assert_eq!(dead.attempts, None, "retries start afresh");
        let from = dead
            .record
            .headers
            .iter()
            .find(|h| h.key.as_ref() == REPLAYED_FROM.as_bytes())
            .and_then(|h| h.value.clone())
            .expect("replayed-from header");
        assert!(from.starts_with(dlt_name.as_bytes()));
        assert!(seen.insert(o.offset), "offset {} twice", o.offset);
    }
    // Replays are transactional: nothing is left open.
    let lso = admin
        .list_offsets_with(&origin, OffsetSpec::Latest, IsolationLevel::ReadCommitted)
        .await
        .unwrap();
    let hw = admin
        .list_offsets(&origin, OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(lso, hw, "no open replay transaction");
}

#[tokio::test]
async fn replay_to_another_topic_and_a_limit() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let origin = testkit::create_topic(&admin, "replay-src", 2).await;
    let dlt_name = testkit::create_topic(&admin, "replay-src-DLT", 1).await;
    let fixed = testkit::create_topic(&admin, "replay-fixed", 1).await;
    testkit::produce(&admin, &b, dead_records(&dlt_name, &origin, 6)).await;
    let client = ClientConfig::builder().bootstrap(&b.bootstrap).unwrap();
    let opts = ReplayOptions {
        dlt: dlt_name.clone(),
        to: Some(fixed.clone()),
        limit: Some(4),
        ..ReplayOptions::default()
    };
    let first = replay(client.clone(), &opts).await.unwrap();
    assert_eq!(first.replayed, 4);
    let rest = replay(
        client.clone(),
        &ReplayOptions {
            limit: None,
            ..opts
        },
    )
    .await
    .unwrap();
    assert_eq!((rest.replayed, rest.already_replayed), (2, 4));
    assert_eq!(read_all(&b, &fixed).await.len(), 6);
    assert!(
        read_all(&b, &origin).await.is_empty(),
        "nothing went to the origin"
    );
}

#[tokio::test]
async fn a_missing_dlt_is_an_error_naming_it() {
    let b = testkit::require_broker!();
    let client = ClientConfig::builder().bootstrap(&b.bootstrap).unwrap();
    let opts = ReplayOptions {
        dlt: testkit::unique_name("no-such-dlt"),
        dry_run: true,
        ..ReplayOptions::default()
    };
    let err = replay(client, &opts).await.unwrap_err().to_string();
    assert!(
        err.contains(&opts.dlt) || err.contains("UNKNOWN_TOPIC"),
        "{err}"
    );
}
