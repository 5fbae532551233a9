//! Helpers shared by consumer-core's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use consumer_core::config::ConsumerConfigBuilder;
use consumer_core::{Consumer, ConsumerConfig};
use kafka_wire::{Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};

pub async fn client(b: &testkit::BrokerEnv) -> Client {
    Client::connect(
        ClientConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap()
}

/// Test-friendly consumer settings: earliest, short session, fast fetches.
/// Under `KAFKA_GROUP_PROTOCOL=consumer` (KIP-848) the broker owns the
/// session timeout and heartbeat interval, and assigns partitions.
pub fn config(b: &testkit::BrokerEnv, group: Option<&str>) -> ConsumerConfigBuilder {
    let mut c = ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .unwrap()
        .set("auto.offset.reset", "earliest")
        .unwrap()
        .set("fetch.max.wait.ms", "50")
        .unwrap();
    match kip848_protocol() {
        Some(p) => c = c.set("group.protocol", &p).unwrap(),
        None => {
            c = c
                .set("session.timeout.ms", "6000")
                .unwrap()
                .set("heartbeat.interval.ms", "300")
                .unwrap()
        }
    }
    if let Some(g) = group {
        c = c.group_id(g);
    }
    c
}

/// Produce `n` records built by `record(i)` and wait until all are acknowledged.
pub async fn produce(
    client: &Client,
    b: &testkit::BrokerEnv,
    n: u32,
    record: impl Fn(u32) -> ProducerRecord,
) {
    let p = Producer::with_client(
        client.clone(),
        ProducerConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .build()
            .unwrap(),
    );
    for i in 0..n {
        p.send(record(i)).await.unwrap();
    }
    p.flush().await;
}

/// A new uniquely named topic.
pub async fn topic(admin: &Client, prefix: &str, partitions: i32) -> String {
    let topic = testkit::unique_name(prefix);
    admin
        .create_topic(NewTopic::new(&topic, partitions))
        .await
        .unwrap();
    topic
}

/// A consumer with [`config`]'s settings plus `props` (Kafka property names).
pub async fn connect(
    b: &testkit::BrokerEnv,
    group: Option<&str>,
    props: &[(&str, &str)],
) -> Consumer {
    let mut c = config(b, group);
    for (k, v) in props {
        if kip848_protocol().is_some() && CLASSIC_ONLY.contains(k) {
            continue;
        }
        c = c.set(k, v).unwrap();
    }
    Consumer::connect(c.build().unwrap()).await.unwrap()
}

/// `KAFKA_GROUP_PROTOCOL` when it asks for another protocol than classic.
pub fn kip848_protocol() -> Option<String> {
    std::env::var("KAFKA_GROUP_PROTOCOL")
        .ok()
        .filter(|p| !p.is_empty() && p != "classic")
}

/// Settings the consumer protocol refuses (the broker owns them).
pub const CLASSIC_ONLY: [&str; 3] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
];

/// Set a classic-only property, except under KIP-848 (where the broker
/// assigns and every rebalance is incremental).
pub fn classic(c: ConsumerConfigBuilder, key: &str, value: &str) -> ConsumerConfigBuilder {
    if kip848_protocol().is_some() {
        c
    } else {
        c.set(key, value).unwrap()
    }
}
