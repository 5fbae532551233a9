//! Kafka's own semantics must not break the guarantees (issue 13): offsets
//! that are not records (transaction markers, aborted ranges), the last
//! stable offset, out-of-range positions below the log start, and a topic
//! deleted and recreated under a running consumer. Each test asserts the
//! right value against the real broker, through every path that commits:
//! the raw consumer, the `Processor` and the exactly-once processor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerError, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{NewTopic, ProducerRecord};
use resilience::eos::{TransactionalProcessor, Transformer};
use resilience::{CommitPolicy, HandlerError, Processor, ProcessorConfig};
use sim_tests::support::*;

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The issue's `txlag` log: 10 committed, 5 aborted, 10 committed records,
/// each transaction followed by its marker: 28 offsets, 20 records.
async fn txlag(b: &testkit::BrokerEnv, admin: &kafka_wire::Client) -> String {
    let topic = testkit::create_topic(admin, "txlag", 1).await;
    transaction(b, admin, &topic, &values("a", 10), true).await;
    transaction(b, admin, &topic, &values("b", 5), false).await;
    transaction(b, admin, &topic, &values("c", 10), true).await;
    assert_eq!(log_end(admin, &topic).await, 28);
    topic
}

/// A consumer without a group, starting at `latest`, with one more property.
async fn direct_reader(b: &testkit::BrokerEnv, (k, v): (&str, &str)) -> Consumer {
    let cfg = consumer_builder(b, None, &[("auto.offset.reset", "latest"), (k, v)]);
    Consumer::connect(cfg.build().unwrap()).await.unwrap()
}

fn read_committed_group(b: &testkit::BrokerEnv, group: &str) -> consumer_core::ConsumerConfig {
    group_consumer_with(b, group, &[("isolation.level", "read_committed")])
}

fn processor(b: &testkit::BrokerEnv, group: &str, topic: &str, sink: &Arc<Values>) -> Running {
    let cfg = ProcessorConfig::new(read_committed_group(b, group), &[topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(200)));
    start(Processor::new(cfg, ValueSink(sink.clone())))
}

/// Every value handled, in order.
#[derive(Default)]
struct Values {
    values: std::sync::Mutex<Vec<String>>,
}

/// Records every value it handles (the sink's numbers do not fit "a0").
struct ValueSink(Arc<Values>);

impl resilience::Handler for ValueSink {
    async fn handle(&self, _tp: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        self.0.values.lock().unwrap().push(v);
        Ok(())
    }
}

async fn wait_committed(
    b: &testkit::BrokerEnv,
    group: &str,
    tp: &TopicPartition,
    want: i64,
) -> Option<i64> {
    testkit::eventually_async(Duration::from_secs(30), || async {
        committed_offset(b, group, tp).await == Some(want)
    })
    .await;
    committed_offset(b, group, tp).await
}

#[tokio::test]
async fn the_processor_commits_past_transaction_markers_and_aborted_ranges() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = txlag(&b, &admin).await;
    let group = testkit::unique_name("g-proc");
    let sink = Arc::new(Values::default());
    let run = processor(&b, &group, &topic, &sink);
    let tp = TopicPartition::new(&topic, 0);
    let committed = wait_committed(&b, &group, &tp, 28).await;
    run.stop().await;
    assert_eq!(
        committed,
        Some(28),
        "lag must drain to zero past the last commit marker"
    );
    let mut want = values("a", 10);
    want.extend(values("c", 10));
    assert_eq!(
        *sink.values.lock().unwrap(),
        want,
        "committed records once, aborted ones never"
    );
}

#[tokio::test]
async fn the_processor_commits_a_partition_that_holds_only_aborted_data() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "txabort", 1).await;
    transaction(&b, &admin, &topic, &values("x", 100), false).await;
    let group = testkit::unique_name("g-ab");
    let sink = Arc::new(Values::default());
    let run = processor(&b, &group, &topic, &sink);
    let committed = wait_committed(&b, &group, &TopicPartition::new(&topic, 0), 101).await;
    run.stop().await;
    assert_eq!(committed, Some(101));
    assert!(sink.values.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_raw_consumer_commits_its_position_past_the_last_marker() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = txlag(&b, &admin).await;
    let group = testkit::unique_name("g-cli");
    let mut c = Consumer::connect(read_committed_group(&b, &group))
        .await
        .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let tp = TopicPartition::new(&topic, 0);
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while (got < 20 || c.position(&tp) != Some(28)) && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            got += batch.records.len();
        }
    }
    assert_eq!(got, 20);
    assert_eq!(
        c.position(&tp),
        Some(28),
        "the position steps over the final marker"
    );
    assert_eq!(c.lag(&tp), Some(0));
    c.commit_positions().await.unwrap();
    c.close(Duration::from_secs(5)).await;
    assert_eq!(committed_offset(&b, &group, &tp).await, Some(28));
}

struct Copy(String);

impl Transformer for Copy {
    async fn transform(
        &self,
        _tp: &TopicPartition,
        r: &Record,
    ) -> Result<Vec<ProducerRecord>, HandlerError> {
        Ok(vec![
            ProducerRecord::new(&self.0).value(r.value.clone().unwrap_or_default())
        ])
    }
}

#[tokio::test]
async fn the_exactly_once_processor_commits_past_markers_and_aborted_ranges() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let lag_topic = txlag(&b, &admin).await;
    let aborted = testkit::create_topic(&admin, "txabort-eos", 1).await;
    transaction(&b, &admin, &aborted, &values("x", 100), false).await;
    let out = testkit::create_topic(&admin, "eos-copy", 1).await;
    for (topic, want) in [(&lag_topic, 28), (&aborted, 101)] {
        let group = testkit::unique_name("g-eos");
        let producer = testkit::producer_builder(&b)
            .transactional_id(testkit::unique_name("eos-semantics"))
            .build()
            .unwrap();
        let p = TransactionalProcessor::new(group_consumer(&b, &group), producer, &[topic]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(p.run(Copy(out.clone()), async move {
            let _ = stopped.await;
        }));
        let committed = wait_committed(&b, &group, &TopicPartition::new(topic, 0), want).await;
        let _ = stop.send(());
        run.await.unwrap().unwrap();
        assert_eq!(committed, Some(want), "{topic}");
    }
    let copied = read_all(&b, &out, 1, 20, true, Duration::from_secs(10)).await;
    assert_eq!(copied.len(), 20, "the 20 committed records, copied once");
}

#[tokio::test]
async fn latest_under_read_committed_is_the_last_stable_offset() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "lso", 1).await;
    let tp = TopicPartition::new(&topic, 0);
    let open = open_transaction(&b, &topic, &values("t", 5)).await;
    let mut c = direct_reader(&b, ("isolation.level", "read_committed")).await;
    c.assign(std::slice::from_ref(&tp));
    let end = Instant::now() + Duration::from_secs(10);
    while c.position(&tp).is_none() && Instant::now() < end {
        assert!(c.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    }
    assert_eq!(
        c.position(&tp),
        Some(0),
        "latest = the LSO: the open transaction's start"
    );
    // seek_to_end agrees, and lag is measured to the LSO.
    c.seek_to_end(std::slice::from_ref(&tp)).await.unwrap();
    assert_eq!(c.position(&tp), Some(0));
    open.commit_transaction().await.unwrap();
    testkit::produce(
        &admin,
        &b,
        values("n", 3)
            .into_iter()
            .map(|v| ProducerRecord::new(&topic).partition(0).value(v)),
    )
    .await;
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while got.len() < 8 && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            for r in batch.records {
                got.push(String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned());
            }
        }
    }
    let mut want = values("t", 5);
    want.extend(values("n", 3));
    assert_eq!(
        got, want,
        "the transaction that was open at the start is read, then the rest"
    );
}

/// 100 records, the group committed at 10, DeleteRecords before 50, then
/// 20 more: what retention does to a group that fell behind.
async fn behind_the_log_start(b: &testkit::BrokerEnv) -> (kafka_wire::Client, String, String) {
    let admin = testkit::client(b).await;
    let topic = testkit::numbered_topic(b, &admin, "oor", 1, 100, |i| format!("k{i}")).await;
    let group = testkit::unique_name("g-oor");
    let tp = TopicPartition::new(&topic, 0);
    let c = Consumer::connect(group_consumer(b, &group)).await.unwrap();
    c.commit(&[(tp.clone(), 10)]).await.unwrap();
    let low = admin.delete_records(&[(tp.clone(), 50)]).await.unwrap();
    assert_eq!(low.get(&tp), Some(&50));
    testkit::produce(
        &admin,
        b,
        (100..120).map(|i| {
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(i.to_string())
        }),
    )
    .await;
    (admin, topic, group)
}

#[tokio::test]
async fn out_of_range_below_the_log_start_resumes_there_even_with_latest() {
    let b = testkit::require_broker!();
    let (_admin, topic, group) = behind_the_log_start(&b).await;
    let tp = TopicPartition::new(&topic, 0);
    let cfg = group_consumer_with(&b, &group, &[("auto.offset.reset", "latest")]);
    let sink = Arc::new(Sink::default());
    let cfg = ProcessorConfig::new(cfg, &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(200)));
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));
    let committed = wait_committed(&b, &group, &tp, 120).await;
    run.stop().await;
    assert_eq!(committed, Some(120));
    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!(dups, 0);
    assert_eq!(
        distinct,
        (50..120).collect(),
        "the retained backlog 50..119, not skipped"
    );
}

#[tokio::test]
async fn out_of_range_with_reset_none_names_the_offset_and_the_log_start() {
    let b = testkit::require_broker!();
    let (_admin, topic, group) = behind_the_log_start(&b).await;
    let mut c = Consumer::connect(group_consumer_with(
        &b,
        &group,
        &[("auto.offset.reset", "none")],
    ))
    .await
    .unwrap();
    c.subscribe(&[&topic]).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let err = loop {
        match c.poll(Duration::from_millis(200)).await {
            Err(e) => break e,
            Ok(b) => assert!(b.is_empty(), "nothing below the log start can be read"),
        }
        assert!(Instant::now() < end, "no error with auto.offset.reset=none");
    };
    assert!(matches!(err, ConsumerError::NoOffset { .. }), "{err}");
    let text = err.to_string();
    for part in [
        format!("{topic}-0"),
        "offset 10".into(),
        "log start offset 50".into(),
    ] {
        assert!(text.contains(&part), "{part:?} missing from: {text}");
    }
}

/// Delete `topic` and create it again with one partition (a deletion takes
/// a moment to settle: TOPIC_ALREADY_EXISTS is retried).
async fn recreate(admin: &kafka_wire::Client, topic: &str) {
    admin.delete_topic(topic).await.unwrap();
    let refused = std::cell::RefCell::new(String::new());
    let created = testkit::eventually_async(Duration::from_secs(30), || async {
        match admin.create_topic(NewTopic::new(topic, 1)).await {
            Ok(()) => true,
            Err(e) => {
                // Still being deleted: retried.
                *refused.borrow_mut() = e.to_string();
                false
            }
        }
    })
    .await;
    assert!(created, "recreate {topic}: {}", refused.borrow());
}

#[tokio::test]
async fn a_recreated_topic_is_handled_once_and_committed_in_its_own_right() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "rec", 1, 1_000, |i| format!("k{i}")).await;
    let tp = TopicPartition::new(&topic, 0);
    let group = testkit::unique_name("g-rec");
    let sink = Arc::new(Sink::default());
    let cfg = ProcessorConfig::new(
        group_consumer_with(&b, &group, &[("metadata.max.age.ms", "1000")]),
        &[&topic],
    )
    .commit_policy(CommitPolicy::Interval(Duration::from_millis(200)));
    let run = start(Processor::new(cfg, SinkHandler::new(&sink, instant())));
    assert_eq!(wait_committed(&b, &group, &tp, 1_000).await, Some(1_000));
    recreate(&admin, &topic).await;
    testkit::produce(
        &admin,
        &b,
        (1_000..1_010).map(|i| {
            ProducerRecord::new(&topic)
                .key(format!("k{i}"))
                .value(i.to_string())
        }),
    )
    .await;
    let committed = wait_committed(&b, &group, &tp, 10).await;
    // For a few more commit intervals, nothing of the old log lands.
    let later = std::cell::Cell::new(None);
    let unchanged = testkit::stays_for_async(Duration::from_millis(600), || async {
        later.set(committed_offset(&b, &group, &tp).await);
        later.get() == Some(10)
    })
    .await;
    run.stop().await;
    assert_eq!(committed, Some(10), "the new log's 10 records committed");
    assert!(unchanged, "a later commit moved it to {:?}", later.get());
    let (distinct, dups) = sink.distinct_and_duplicates();
    assert_eq!(dups, 0, "each record handled once");
    assert_eq!(distinct, (0..1_010).collect());
}

#[tokio::test]
async fn the_raw_consumer_follows_a_recreated_topic_to_its_new_log() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let topic = testkit::numbered_topic(&b, &admin, "rec-raw", 1, 100, |i| format!("k{i}")).await;
    let tp = TopicPartition::new(&topic, 0);
    let mut c = direct_reader(&b, ("metadata.max.age.ms", "1000")).await;
    c.assign(std::slice::from_ref(&tp));
    c.seek_to_beginning(std::slice::from_ref(&tp))
        .await
        .unwrap();
    let mut offsets = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while offsets.len() < 100 && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(200)).await.unwrap() {
            offsets.extend(batch.records.iter().map(|r| r.offset));
        }
    }
    assert_eq!(offsets.len(), 100);
    let before = c.positions()[0].incarnation;
    recreate(&admin, &topic).await;
    testkit::produce(
        &admin,
        &b,
        (0..10).map(|i| ProducerRecord::new(&topic).value(i.to_string())),
    )
    .await;
    let mut after = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while after.len() < 10 && Instant::now() < end {
        match c.poll(Duration::from_millis(200)).await {
            Ok(batches) => after.extend(
                batches
                    .iter()
                    .flat_map(|b| b.records.iter().map(|r| r.offset)),
            ),
            Err(e) => assert!(e.is_retriable(), "{e}"),
        }
    }
    assert_eq!(
        after,
        (0..10).collect::<Vec<i64>>(),
        "the new log from its start, even with latest"
    );
    assert!(c.positions()[0].incarnation > before, "a new incarnation");
}
