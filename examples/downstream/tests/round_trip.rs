//! Produce → resilience `Processor` → commit, against the test broker, as
//! an application would run it: every produced record is handled exactly
//! once, and after a graceful shutdown the group's committed offset is the
//! log end of every partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use downstream::{Tally, TallyHandler};
use kafka_wire::{
    Client, ClientConfig, NewTopic, OffsetSpec, Producer, ProducerConfig, ProducerRecord,
};
use resilience::{CommitPolicy, Processor, ProcessorConfig};

const PARTITIONS: i32 = 3;
const RECORDS: u32 = 300;

fn unique(prefix: &str) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{millis}-{}", std::process::id())
}

fn consumer_config(bootstrap: &str, group: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .set("bootstrap.servers", bootstrap)
        .and_then(|b| b.set("group.id", group))
        .and_then(|b| b.set("auto.offset.reset", "earliest"))
        .and_then(|b| b.set("session.timeout.ms", "6000"))
        .and_then(|b| b.set("heartbeat.interval.ms", "300"))
        .and_then(|b| b.build())
        .expect("a valid consumer config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_produced_record_is_handled_once_and_committed_to_the_log_end() {
    let Some(bootstrap) = downstream::broker() else {
        return;
    };
    let admin = Client::connect(
        ClientConfig::builder()
            .bootstrap(&bootstrap)
            .and_then(|b| b.build())
            .expect("client config"),
    )
    .await
    .expect("connect to the broker");
    let topic = unique("downstream");
    admin
        .create_topic(NewTopic::new(&topic, PARTITIONS))
        .await
        .expect("create topic");

    // Produce, waiting for every acknowledgement.
    let producer = Producer::connect(
        ProducerConfig::builder()
            .set("bootstrap.servers", &bootstrap)
            .and_then(|b| b.build())
            .expect("producer config"),
    )
    .await
    .expect("producer");
    for i in 0..RECORDS {
        let record = ProducerRecord::new(&topic)
            .key(format!("k{i}"))
            .value(i.to_string());
        producer.send(record).await.expect("queued");
    }
    producer.flush().await.expect("every record acknowledged");
    producer.close().await;

    // Process with the runtime until every record was handled, then stop.
    let group = unique("downstream-group");
    let tally = Arc::new(Tally::default());
    let cfg = ProcessorConfig::new(consumer_config(&bootstrap, &group), &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(200)));
    let processor = Processor::new(cfg, TallyHandler(tally.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while tally.distinct() < RECORDS as usize && Instant::now() < deadline && !run.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    run.await
        .expect("the processor task")
        .expect("Processor::run ends without error on shutdown");

    // Each record handled exactly once, every offset of every partition.
    assert_eq!(tally.repeated(), vec![], "records handled more than once");
    assert_eq!(tally.distinct(), RECORDS as usize, "records not handled");
    let ends: BTreeMap<i32, i64> = admin
        .list_offsets(&topic, OffsetSpec::Latest)
        .await
        .expect("list offsets")
        .into_iter()
        .collect();
    assert_eq!(ends.values().sum::<i64>(), i64::from(RECORDS));
    for (&p, &end) in &ends {
        assert_eq!(
            tally.offsets(p),
            (0..end).collect::<Vec<_>>(),
            "partition {p}"
        );
    }

    // The group committed exactly the log end of each partition.
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    let checker = Consumer::connect(consumer_config(&bootstrap, &group))
        .await
        .expect("connect");
    let committed = checker.committed(&tps).await.expect("committed offsets");
    for tp in &tps {
        assert_eq!(
            committed.get(tp).copied(),
            Some(ends[&tp.partition]),
            "committed offset of {tp:?} is not the log end"
        );
    }
    let _ = admin.delete_topic(&topic).await;
}
