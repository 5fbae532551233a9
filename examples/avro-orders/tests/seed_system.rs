//! Seed 002 end to end against the real broker: the demo's pipeline for a
//! fixed count (stand-in schema registry in process), then its claims.
//! `cargo xtask test` runs it once, in its examples step.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use avro_orders::demo::{self, UNDECODABLE};
use avro_orders::order::Fate;
use avro_orders::settings::Settings;
use resilience::dlt::replay::REPLAYED_FROM;
use resilience::dlt::DeadRecord;

const ORDERS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_system_orders_are_processed_or_dead_lettered_with_provenance_and_replayed_exactly_once(
) {
    let Some(broker) = testkit::broker() else {
        return;
    };
    let started = Instant::now();
    let name = testkit::unique_name("avro-orders");
    let settings = Settings {
        bootstrap: broker.bootstrap.clone(),
        registry_url: None,
        topic: name.clone(),
        dlq: format!("{name}_dlq"),
        group: format!("{name}-group"),
        retry_backoff: Duration::from_millis(10),
        max_retries: 3,
        properties: Vec::new(),
    };
    let report = demo::run(&settings, ORDERS, 2, Duration::from_secs(45))
        .await
        .expect("the demo runs");
    report.print();
    let s = report.summary;

    // processed + DLQ = produced (the orders and the payload that is not Avro).
    assert_eq!(report.produced.len() as u64, ORDERS);
    assert_eq!(s.processed + s.dead_lettered, ORDERS + UNDECODABLE);
    assert_eq!(s.processed, report.expected_processed);
    assert_eq!(s.dead_lettered, report.expected_dead);
    assert_eq!(
        s.received, ORDERS,
        "every order decoded once on its first attempt"
    );
    assert!(
        s.dead_lettered > UNDECODABLE,
        "the seed's rates put some orders in the DLQ"
    );

    // The running average is the mean of the processed prices.
    assert_eq!(s.average, report.expected_average);

    // Every DLQ record names where it came from and why.
    assert_eq!(report.dlq.len() as u64, s.dead_lettered);
    let mut origins = BTreeSet::new();
    let mut not_avro = 0;
    for (partition, record) in &report.dlq {
        let dead = DeadRecord::parse(*partition, record.clone());
        let origin = dead.origin.as_ref().expect("kafka_dlt-original-* headers");
        assert_eq!(origin.topic, name);
        let message = dead
            .error_message
            .clone()
            .expect("kafka_dlt-exception-message");
        let produced = report
            .produced
            .iter()
            .find(|d| d.partition == origin.partition && d.offset == origin.offset);
        match produced {
            Some(d) => {
                let fate = Fate::of(&d.order.order_id);
                assert!(
                    matches!(fate, Fate::Poison | Fate::TransientAlways),
                    "{fate:?}"
                );
                assert!(message.contains(&d.order.order_id), "{message}");
                assert!(message.contains("SIMULATED ERROR"), "{message}");
            }
            None => {
                // Not one of the orders: the payload that is not Avro.
                assert_eq!(dead.error_class.as_deref(), Some("Deserialization"));
                assert!(message.contains("magic byte"), "{message}");
                not_avro += 1;
            }
        }
        assert!(
            origins.insert((origin.partition, origin.offset)),
            "dead-lettered twice"
        );
    }
    assert_eq!(not_avro, UNDECODABLE);

    // Replay moves them back exactly once: all the first time, none the second.
    let [first, second] = &report.replays;
    assert_eq!(first.replayed, s.dead_lettered);
    assert_eq!(
        (second.replayed, second.already_replayed),
        (0, s.dead_lettered)
    );
    assert_eq!(report.replayed_back.len() as u64, s.dead_lettered);
    let from: BTreeSet<Vec<u8>> = report
        .replayed_back
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|h| h.key.as_ref() == REPLAYED_FROM.as_bytes())
                .and_then(|h| h.value.as_ref().map(|v| v.to_vec()))
        })
        .collect();
    assert_eq!(
        from.len() as u64,
        s.dead_lettered,
        "each DLQ record back once"
    );
    println!(
        "seed_system avro-orders: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
