//! Transactions against the real broker: committed and aborted
//! transactions with their markers, offsets committed inside a transaction,
//! and fencing of a producer that reuses a transactional id.

use crate::common;

use kafka_wire::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_wire::messages::{GroupId, OffsetFetchRequest, TopicName};
use kafka_wire::records::{BatchReader, ControlType};
use kafka_wire::GroupMetadata;
use kafka_wire::{Client, CoordinatorKind, Lane, NewTopic, Producer, ProducerRecord, StrBytes};

async fn transactional(client: &Client, broker: &testkit::BrokerEnv, id: &str) -> Producer {
    let p = Producer::with_client(
        client.clone(),
        testkit::producer_builder(broker)
            .transactional_id(id)
            .build()
            .unwrap(),
    );
    p.init_transactions().await.expect("init_transactions");
    p
}

async fn send_all(p: &Producer, topic: &str, values: &[&str]) {
    for v in values {
        p.send(ProducerRecord::new(topic).partition(0).value(v.to_string()))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn committed_and_aborted_transactions_with_markers() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn", 1).await;
    let p = transactional(&client, &broker, &testkit::unique_name("txn-id")).await;

    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["c0", "c1", "c2"]).await;
    p.commit_transaction().await.unwrap();
    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["a0", "a1"]).await;
    p.abort_transaction().await.unwrap();
    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["c3"]).await;
    p.commit_transaction().await.unwrap();

    // read_uncommitted sees everything, markers included. The coordinator
    // writes markers after EndTxn returns: wait for the last one (offset 8).
    assert!(
        testkit::eventually_async(std::time::Duration::from_secs(15), || async {
            common::high_watermark(&client, &topic, 0).await >= 9
        })
        .await,
        "markers never landed"
    );
    let raw = common::fetch_raw(&client, &topic, 0).await;
    let mut data = Vec::new();
    let mut markers = Vec::new();
    for batch in BatchReader::new(raw) {
        let batch = batch.unwrap();
        assert!(batch.is_transactional());
        for r in batch.records(1 << 20).unwrap() {
            let r = r.unwrap();
            if batch.is_control() {
                markers.push((r.offset, r.control_type().unwrap()));
            } else {
                data.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
            }
        }
    }
    assert_eq!(data, ["c0", "c1", "c2", "a0", "a1", "c3"]);
    assert_eq!(
        markers.iter().map(|m| m.1).collect::<Vec<_>>(),
        [ControlType::Commit, ControlType::Abort, ControlType::Commit]
    );
    assert_eq!(markers.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 6, 8]);
}

#[tokio::test]
async fn calls_out_of_order_say_what_to_call_next() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn-order", 1).await;
    let p = transactional(&client, &broker, &testkit::unique_name("txn-id")).await;
    let err = p
        .send(ProducerRecord::new(&topic).value("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("begin_transaction"), "{err}");
    let err = p.commit_transaction().await.unwrap_err();
    assert!(err.to_string().contains("begin_transaction"), "{err}");
}

#[tokio::test]
async fn offsets_sent_to_a_committed_transaction_are_committed() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn-offsets", 1).await;
    let group = testkit::unique_name("txn-group");
    let p = transactional(&client, &broker, &testkit::unique_name("txn-id")).await;
    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["out"]).await;
    p.send_offsets_to_transaction(
        &[(topic.clone(), 0, 42)],
        &GroupMetadata {
            group_id: group.clone(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        },
    )
    .await
    .unwrap();
    p.commit_transaction().await.unwrap();

    let coordinator = client
        .find_coordinator(CoordinatorKind::Group, &group)
        .await
        .unwrap();
    let req = OffsetFetchRequest::default()
        .with_require_stable(true)
        .with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
            .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                .with_name(TopicName(StrBytes::from_string(topic.clone())))
                .with_partition_indexes(vec![0])]))]);
    // The commit marker reaches __consumer_offsets asynchronously: until it
    // does, require_stable answers UNSTABLE_OFFSET_COMMIT (never a wrong offset).
    let stable = testkit::eventually_async(std::time::Duration::from_secs(15), || async {
        let resp = client
            .send_to(coordinator, Lane::Control, &req, std::time::Duration::ZERO)
            .await
            .unwrap();
        let p = &resp.groups[0].topics[0].partitions[0];
        if p.error_code == 0 && p.committed_offset == 42 {
            return true;
        }
        assert!(
            p.error_code == kafka_wire::KafkaCode::UnstableOffsetCommit.code()
                || (p.error_code == 0 && p.committed_offset == -1),
            "unexpected answer: code {} offset {}",
            p.error_code,
            p.committed_offset
        );
        false
    })
    .await;
    assert!(stable, "offset never became stable");
}

#[tokio::test]
async fn a_second_producer_with_the_same_id_fences_the_first() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn-fence", 1).await;
    let id = testkit::unique_name("txn-id");
    let old = transactional(&client, &broker, &id).await;
    old.begin_transaction().await.unwrap();
    send_all(&old, &topic, &["zombie"]).await;
    let _new = transactional(&client, &broker, &id).await; // bumps the epoch
    let err = old.commit_transaction().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ProducerFenced")
            || text.contains("InvalidProducerEpoch")
            || text.contains("abort"),
        "{text}"
    );
    assert!(!err.is_retriable(), "{err:?}");
}

#[tokio::test]
async fn try_send_inside_a_transaction_adds_the_partition_too() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn-try-send", 2).await;
    let p = transactional(&client, &broker, &testkit::unique_name("txn-id")).await;
    p.begin_transaction().await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..4 {
        deliveries.push(
            p.try_send(
                ProducerRecord::new(&topic)
                    .partition(i % 2)
                    .value(format!("v{i}")),
            )
            .await
            .unwrap(),
        );
    }
    p.commit_transaction()
        .await
        .expect("both partitions were in the transaction");
    for d in deliveries {
        d.await.unwrap();
    }
}

#[tokio::test]
async fn a_record_too_large_for_the_topic_makes_the_transaction_abortable_not_fatal() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic_with(
        &client,
        NewTopic::new(testkit::unique_name("txn-too-large"), 1)
            .config("max.message.bytes", "65536"),
    )
    .await;
    let p = transactional(&client, &broker, &testkit::unique_name("txn-id")).await;
    p.begin_transaction().await.unwrap();
    let mut deliveries = Vec::new();
    for i in 0..40usize {
        let len = if i == 20 { 100_000 } else { 1000 };
        let rec = ProducerRecord::new(&topic)
            .partition(0)
            .value(vec![b'x'; len]);
        deliveries.push((i, p.send(rec).await.unwrap()));
    }
    let err = p
        .commit_transaction()
        .await
        .expect_err("a record of the transaction failed");
    assert!(
        matches!(err, kafka_wire::Error::RecordTooLargeForBroker { .. }),
        "{err:?}"
    );
    for (i, d) in deliveries {
        match d.await {
            Ok(_) => assert_ne!(i, 20),
            Err(e) => assert_eq!(i, 20, "only the big record fails: {e}"),
        }
    }
    p.abort_transaction()
        .await
        .expect("an abortable transaction aborts");
    // Not fatal: the next transaction commits.
    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["after"]).await;
    p.commit_transaction()
        .await
        .expect("the producer is still usable");
}

/// A transaction the coordinator never heard of (its only record refused
/// before it was sent: too large for `max.request.size`) ends here: abort
/// and commit both succeed without an EndTxn, which the coordinator
/// refuses with INVALID_TXN_STATE (the exactly-once processor took that
/// for fencing and stopped; found by the live property test). The next
/// transaction works.
#[tokio::test]
async fn a_transaction_with_nothing_sent_ends_without_the_coordinator() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let topic = testkit::create_topic(&client, "txn-empty", 1).await;
    let p = transactional(&client, &broker, &testkit::unique_name("txn-empty-id")).await;

    p.begin_transaction().await.unwrap();
    let too_large = ProducerRecord::new(&topic)
        .partition(0)
        .value(vec![b'x'; 2 * 1024 * 1024]);
    let refused = p.send(too_large).await;
    assert!(refused.is_err(), "a 2 MiB record passed max.request.size");
    p.abort_transaction()
        .await
        .expect("aborting a transaction nothing reached");

    p.begin_transaction().await.unwrap();
    p.commit_transaction()
        .await
        .expect("committing an empty transaction");

    p.begin_transaction().await.unwrap();
    send_all(&p, &topic, &["after"]).await;
    p.commit_transaction().await.expect("the next transaction");
}
