//! A share group's consume throughput (KIP-932): this project's
//! `ShareConsumer`, and the group set-up Java's `ShareConsumerPerformance`
//! needs.
//!
//! A share group starts where its group config `share.auto.offset.reset`
//! says (default `latest`); both peers read a pre-produced topic, so the
//! group is made to start at the earliest offset first (not timed).

use std::time::{Duration, Instant};

use consumer_core::share::{ShareConsumer, ShareConsumerConfig};
use kafka_wire::ConfigResource;

use crate::{group, report, Args};

/// The consumer knobs a share consumer has no use for (a share fetch has
/// no per-partition byte limit).
const NOT_FOR_SHARE: &[&str] = &["max.partition.fetch.bytes"];

/// Make `group` a share group reading from the earliest offset.
pub async fn earliest(bootstrap: &str, group: &str) {
    let client = kafka_wire::Client::connect(
        kafka_wire::ClientConfig::builder()
            .bootstrap(bootstrap)
            .expect("bootstrap")
            .build()
            .expect("config"),
    )
    .await
    .expect("connect");
    client
        .alter_configs(
            &ConfigResource::Group(group.to_string()),
            &[("share.auto.offset.reset", Some("earliest"))],
        )
        .await
        .expect("set share.auto.offset.reset=earliest on the share group");
}

/// Read `a.count` records in a fresh share group; the clock runs from the
/// first record to the last.
pub async fn ours(a: &Args) {
    let group = group();
    earliest(&a.bootstrap, &group).await;
    let mut b = ShareConsumerConfig::builder()
        .set("bootstrap.servers", &a.bootstrap)
        .expect("bootstrap")
        .set("group.id", &group)
        .expect("group.id");
    for (k, v) in &a.props {
        if NOT_FOR_SHARE.contains(&k.as_str()) {
            continue;
        }
        b = b
            .set(k, v)
            .unwrap_or_else(|e| panic!("share consumer property {k}={v}: {e}"));
    }
    let mut c = ShareConsumer::connect(b.build().expect("share consumer config"))
        .await
        .expect("connect");
    c.subscribe(&[&a.topic]).await.expect("subscribe");
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    while n < a.count {
        let records = c.poll(Duration::from_millis(500)).await.expect("poll");
        if !records.is_empty() {
            first.get_or_insert_with(Instant::now);
        }
        for r in &records {
            bytes += r.record.value.as_ref().map_or(0, |v| v.len()) as u64;
        }
        n += records.len() as u64;
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    // The last poll's records are ACCEPTed on close (not timed, as the
    // consumer-group peers' last commit is not).
    let _ = c.close().await;
    report(n, bytes, took);
}
