//! Raw fetches for kafka-wire's integration tests (clients, topics and
//! producers come from `testkit`).

use std::time::Duration;

use kafka_wire::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_wire::messages::{FetchRequest, TopicName};
use kafka_wire::records::{BatchReader, Record};
use kafka_wire::{Client, Lane, StrBytes};

/// Fetch `topic`-`partition` from offset 0 until `until`, decoding every batch.
pub async fn fetch_all(client: &Client, topic: &str, partition: i32, until: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < until {
        let (records, _) = fetch_once(client, topic, partition, offset).await;
        for batch in BatchReader::new(records) {
            let batch = batch.unwrap();
            for r in batch.records(64 << 20).unwrap() {
                let r = r.unwrap();
                if r.offset >= offset {
                    out.push(r);
                }
            }
            offset = batch.next_offset();
        }
    }
    out
}

/// The raw records bytes of one fetch from offset 0 (up to 1 MiB).
pub async fn fetch_raw(client: &Client, topic: &str, partition: i32) -> bytes::Bytes {
    let (records, _) = fetch_once(client, topic, partition, 0).await;
    records
}

/// The partition's high watermark (its end offset for a read_uncommitted reader).
pub async fn high_watermark(client: &Client, topic: &str, partition: i32) -> i64 {
    let (_, hw) = fetch_once(client, topic, partition, 0).await;
    hw
}

/// One fetch from `offset` (up to 1 MiB): the records bytes and the high watermark.
async fn fetch_once(
    client: &Client,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (bytes::Bytes, i64) {
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let leader = client.leader_for(topic, partition).await.unwrap();
    let resp = client
        .send_to(leader, Lane::Fetch, &req, Duration::from_millis(100))
        .await
        .unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.records.clone().unwrap_or_default(), p.high_watermark)
}
