//! Our record batches through the real broker and back, byte-exact, for
//! every codec: proves the Java broker accepts our CRC, xerial snappy, LZ4
//! frames and ruzstd output, and that we decode what it serves.

use crate::common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_wire::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_wire::messages::{ProduceRequest, TopicName};
use kafka_wire::records::{encode_batch, BatchOptions, Compression, NewRecord};
use kafka_wire::{Client, KafkaCode, Lane, StrBytes};

const PARTITIONS: i32 = 6;
const RECORDS: usize = 10_000;

fn record(i: usize) -> NewRecord {
    NewRecord {
        key: (i % 7 != 0).then(|| Bytes::from(format!("key-{i}"))),
        value: (i % 11 != 0).then(|| Bytes::from(format!("value-{i}-{}", "x".repeat(i % 50)))),
        headers: if i % 3 == 0 {
            vec![
                ("trace".to_string(), Some(Bytes::from(format!("t{i}")))),
                ("empty".to_string(), None),
            ]
        } else {
            Vec::new()
        },
        timestamp: 1_700_000_000_000 + i as i64,
    }
}

async fn produce(client: &Client, topic: &str, partition: i32, batch: Bytes) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    // A fresh topic's leader can briefly answer NOT_LEADER_OR_FOLLOWER:
    // retry retriable codes with a metadata refresh, as a producer does.
    for _ in 0..50 {
        let leader = client.leader_for(topic, partition).await.unwrap();
        let resp = client
            .send_to(leader, Lane::Produce, &req, Duration::ZERO)
            .await
            .unwrap();
        let p = &resp.responses[0].partition_responses[0];
        match KafkaCode::try_from_code(p.error_code) {
            None => return p.base_offset,
            Some(code) if code.is_retriable() => {
                client
                    .refresh_metadata(Some(&[topic.to_string()]))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(code) => panic!("produce failed: {code} {:?}", p.error_message),
        }
    }
    panic!("produce to {topic}-{partition} kept failing with retriable errors");
}

#[tokio::test]
async fn produce_fetch_round_trip_every_codec() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    for codec in Compression::ALL {
        let prefix = format!("roundtrip-{}", codec.name());
        let topic = testkit::create_topic(&client, &prefix, PARTITIONS).await;
        // Records i go to partition i % PARTITIONS, in batches of up to 500.
        let mut expected: Vec<Vec<NewRecord>> = vec![Vec::new(); PARTITIONS as usize];
        for i in 0..RECORDS {
            expected[i % PARTITIONS as usize].push(record(i));
        }
        for (p, records) in expected.iter().enumerate() {
            let mut next_offset = 0;
            for chunk in records.chunks(500) {
                let mut buf = BytesMut::new();
                encode_batch(
                    &mut buf,
                    &BatchOptions {
                        compression: codec,
                        ..BatchOptions::default()
                    },
                    chunk,
                );
                let base = produce(&client, &topic, p as i32, buf.freeze()).await;
                assert_eq!(base, next_offset, "{codec:?} partition {p}");
                next_offset += chunk.len() as i64;
            }
        }
        for (p, want) in expected.iter().enumerate() {
            let got = common::fetch_all(&client, &topic, p as i32, want.len() as i64).await;
            assert_eq!(got.len(), want.len(), "{codec:?} partition {p}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert_eq!(g.offset, i as i64);
                assert_eq!(g.key, w.key, "{codec:?} p{p} #{i}");
                assert_eq!(g.value, w.value, "{codec:?} p{p} #{i}");
                assert_eq!(g.timestamp, w.timestamp, "{codec:?} p{p} #{i}");
                let headers: Vec<(String, Option<Bytes>)> = g
                    .headers
                    .iter()
                    .map(|h| (h.key_str().into_owned(), h.value.clone()))
                    .collect();
                assert_eq!(headers, w.headers, "{codec:?} p{p} #{i}");
            }
        }
        client.delete_topic(&topic).await.unwrap();
    }
}
