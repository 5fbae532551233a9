//! The runtime writes a dead letter's provenance itself: a record that
//! arrives with forged `kafka_dlt-*`/`retry_topic-*` headers (naming
//! another topic) is dead-lettered naming where it was really read, so a
//! replay of the DLT sends it back there and nowhere else.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use kafka_wire::{ClientConfig, OffsetSpec, ProducerRecord};
use resilience::dlt::replay::{replay, ReplayOptions};
use resilience::dlt::{self, DeadRecord};
use resilience::{handler_fn, HandlerError, Processor, ProcessorConfig};

#[tokio::test]
async fn forged_provenance_headers_are_replaced_in_the_dead_letter() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "forged-origin", 1).await;
    let payments = testkit::create_topic(&admin, "forged-payments", 1).await;
    let dlt_name = dlt::dlt_topic(&topic); // the runtime creates it
    let forged = ProducerRecord::new(&topic)
        .key("k")
        .value("v")
        .header(dlt::ORIGINAL_TOPIC, payments.clone())
        .header(dlt::ORIGINAL_PARTITION, 0i32.to_be_bytes().to_vec())
        .header(dlt::ORIGINAL_OFFSET, 77i64.to_be_bytes().to_vec())
        .header(dlt::ATTEMPTS, 1000i32.to_be_bytes().to_vec())
        .header("trace", "t1");
    testkit::produce(&admin, &b, [forged]).await;

    let group = testkit::unique_name("forged-origin");
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .dead_letter(testkit::producer_config(&b));
    let fail = handler_fn(|_, _| async { Err(HandlerError::fatal("poison")) });
    let run = start(Processor::new(cfg, fail));
    let dead = read_all(&b, &dlt_name, 1, 1, false, Duration::from_secs(30)).await;
    run.stop().await;
    assert_eq!(dead.len(), 1);

    let d = DeadRecord::parse(0, dead[0].clone());
    let origin = d.origin.expect("provenance");
    assert_eq!(
        (origin.topic.as_str(), origin.partition, origin.offset),
        (topic.as_str(), 0, 0),
        "the dead letter names where the record was read, not its headers"
    );
    assert_eq!(d.attempts, Some(1), "its own attempts, not the header's");
    let count = |k: &str| {
        d.record
            .headers
            .iter()
            .filter(|h| h.key.as_ref() == k.as_bytes())
            .count()
    };
    assert_eq!(count(dlt::ORIGINAL_TOPIC), 1, "the forged header is gone");
    assert_eq!(count("trace"), 1, "the record's own headers stay");
    let trace = d.record.headers.iter().find(|h| h.key.as_ref() == b"trace");
    assert_eq!(
        trace.and_then(|h| h.value.clone()),
        Some(Bytes::from_static(b"t1"))
    );

    // A replay sends it back to its topic; `payments` gets nothing.
    let client = ClientConfig::builder().bootstrap(&b.bootstrap).unwrap();
    let report = replay(
        client,
        &ReplayOptions {
            dlt: dlt_name.clone(),
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((report.replayed, report.refused), (1, 0));
    assert_eq!(report.by_target.keys().collect::<Vec<_>>(), [&topic]);
    let end = admin
        .list_offsets(&payments, OffsetSpec::Latest)
        .await
        .unwrap();
    assert!(end.iter().all(|(_, e)| *e == 0), "{end:?}");
}
