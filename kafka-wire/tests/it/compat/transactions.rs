//! Transactions against the real broker: committed and aborted
//! transactions with their markers, offsets committed inside a transaction,
//! and fencing of a producer that reuses a transactional id.
//!
//! Each runs under both transaction protocols (KIP-890) the broker
//! allows: V2 where it finalized `transaction.version=2` (Kafka 4.x) and V1
//! (the producer capped to it with `max_transaction_version(1)`; the only
//! one on Kafka 3.9, which runs this module again).

use crate::common;

use kafka_wire::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopics,
};
use kafka_wire::messages::{ApiKey, GroupId, OffsetFetchRequest, TopicName};
use kafka_wire::records::{BatchReader, ControlType};
use kafka_wire::GroupMetadata;
use kafka_wire::{Client, CoordinatorKind, Lane, NewTopic, Producer, ProducerRecord, StrBytes};

/// The `max_transaction_version` caps every test runs under: V2 where the
/// broker finalized it (else V1 again), and V1.
const CAPS: [i16; 2] = [2, 1];

/// A transactional producer on `client` capped at `max_tv`, initialised.
async fn transactional_at(
    client: &Client,
    broker: &testkit::BrokerEnv,
    id: &str,
    max_tv: i16,
) -> Producer {
    let p = Producer::with_client(
        client.clone(),
        testkit::producer_builder(broker)
            .transactional_id(id)
            .max_transaction_version(max_tv)
            .build()
            .unwrap(),
    );
    p.init_transactions().await.expect("init_transactions");
    let tv = p.transaction_version().expect("initialised");
    assert!(
        tv <= max_tv,
        "transaction.version {tv} past the cap {max_tv}"
    );
    p
}

async fn transactional(client: &Client, broker: &testkit::BrokerEnv, id: &str) -> Producer {
    transactional_at(client, broker, id, 2).await
}

async fn send_all(p: &Producer, topic: &str, values: &[&str]) {
    for v in values {
        p.send(ProducerRecord::new(topic).partition(0).value(v.to_string()))
            .await
            .unwrap();
    }
}

/// The level of `transaction.version` the broker finalized, if any.
async fn finalized_transaction_version(client: &Client) -> Option<i16> {
    client
        .any_connection(Lane::Control)
        .await
        .unwrap()
        .info()
        .versions
        .finalized_feature("transaction.version")
}

/// KIP-890: V2 exactly where the cluster finalized `transaction.version`
/// ≥ 2 and the producer is not capped below; V2 sends no
/// AddPartitionsToTxn or AddOffsetsToTxn, and Produce v12, TxnOffsetCommit
/// v5 and EndTxn v5; V1 stays at v11, v4 and v4 and adds both explicitly.
#[tokio::test]
async fn each_protocol_sends_its_own_requests_at_its_own_versions() {
    let broker = testkit::require_broker!();
    let admin = testkit::client(&broker).await;
    let finalized = finalized_transaction_version(&admin).await;
    eprintln!("the broker finalized transaction.version={finalized:?}");
    let topic = testkit::create_topic(&admin, "txn-versions", 2).await;
    for max_tv in CAPS {
        let log = common::RequestLog::default();
        let client = log.client(&broker).await;
        let id = testkit::unique_name("txn-versions-id");
        let p = transactional_at(&client, &broker, &id, max_tv).await;
        let v2 = p.transaction_version() == Some(2);
        assert_eq!(
            v2,
            max_tv == 2 && finalized >= Some(2),
            "cap {max_tv}, finalized {finalized:?}"
        );
        p.begin_transaction().await.unwrap();
        for partition in [0, 1, 0] {
            p.send(ProducerRecord::new(&topic).partition(partition).value("v"))
                .await
                .unwrap();
        }
        let group = GroupMetadata {
            group_id: testkit::unique_name("txn-versions-group"),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        };
        p.send_offsets_to_transaction(&[(topic.clone(), 0, 1)], &group)
            .await
            .unwrap();
        p.commit_transaction().await.unwrap();

        // A request the coordinator answers with a retriable code
        // (CONCURRENT_TRANSACTIONS, COORDINATOR_LOAD_IN_PROGRESS: a fresh
        // broker's offsets partition loading) is sent again: counts are
        // "at least", versions are exact.
        let produce = log.versions(ApiKey::Produce);
        assert!(!produce.is_empty());
        let all = |api: ApiKey, ok: &dyn Fn(i16) -> bool| {
            let v = log.versions(api);
            assert!(!v.is_empty() && v.iter().all(|v| ok(*v)), "{api:?}: {v:?}");
        };
        if v2 {
            assert!(log.versions(ApiKey::AddPartitionsToTxn).is_empty());
            assert!(log.versions(ApiKey::AddOffsetsToTxn).is_empty());
            assert!(produce.iter().all(|v| *v == 12), "{produce:?}");
            all(ApiKey::TxnOffsetCommit, &|v| v == 5);
            all(ApiKey::EndTxn, &|v| v == 5);
        } else {
            assert!(
                log.versions(ApiKey::AddPartitionsToTxn).len() >= 2,
                "one per partition"
            );
            all(ApiKey::AddOffsetsToTxn, &|_| true);
            assert!(produce.iter().all(|v| *v <= 11), "{produce:?}");
            all(ApiKey::TxnOffsetCommit, &|v| v <= 4);
            all(ApiKey::EndTxn, &|v| v <= 4);
        }
    }
}

/// Under V2 each transaction's records carry the epoch its predecessor's
/// EndTxn bumped to (taken from the EndTxn v5 answer: with a stale one the
/// next transaction's writes would be refused); under V1 every
/// transaction keeps the epoch.
#[tokio::test]
async fn committed_and_aborted_transactions_with_markers() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    for max_tv in CAPS {
        let topic = testkit::create_topic(&client, "txn", 1).await;
        let id = testkit::unique_name("txn-id");
        let p = transactional_at(&client, &broker, &id, max_tv).await;
        let v2 = p.transaction_version() == Some(2);

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
        let mut epochs = Vec::new();
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
                    epochs.push(batch.producer_epoch);
                }
            }
        }
        assert_eq!(data, ["c0", "c1", "c2", "a0", "a1", "c3"], "cap {max_tv}");
        assert_eq!(
            markers.iter().map(|m| m.1).collect::<Vec<_>>(),
            [ControlType::Commit, ControlType::Abort, ControlType::Commit]
        );
        assert_eq!(markers.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 6, 8]);
        let e = epochs[0];
        let expected = if v2 {
            [e, e, e, e + 1, e + 1, e + 2]
        } else {
            [e; 6]
        };
        assert_eq!(
            epochs,
            expected,
            "epochs under transaction.version {}",
            if v2 { 2 } else { 1 }
        );
    }
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
    for max_tv in CAPS {
        offsets_committed(&client, &broker, max_tv).await;
    }
}

/// Under V2 the TxnOffsetCommit (v5) adds the offsets itself; under V1
/// AddOffsetsToTxn goes first.
async fn offsets_committed(client: &Client, broker: &testkit::BrokerEnv, max_tv: i16) {
    let topic = testkit::create_topic(client, "txn-offsets", 1).await;
    let group = testkit::unique_name("txn-group");
    let p = transactional_at(client, broker, &testkit::unique_name("txn-id"), max_tv).await;
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
    for max_tv in CAPS {
        let topic = testkit::create_topic(&client, "txn-fence", 1).await;
        let id = testkit::unique_name("txn-id");
        let old = transactional_at(&client, &broker, &id, max_tv).await;
        old.begin_transaction().await.unwrap();
        send_all(&old, &topic, &["zombie"]).await;
        let _new = transactional_at(&client, &broker, &id, max_tv).await; // bumps the epoch
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
}

#[tokio::test]
async fn try_send_inside_a_transaction_adds_the_partition_too() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    for max_tv in CAPS {
        let topic = testkit::create_topic(&client, "txn-try-send", 2).await;
        let p = transactional_at(&client, &broker, &testkit::unique_name("txn-id"), max_tv).await;
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
}

#[tokio::test]
async fn a_record_too_large_for_the_topic_makes_the_transaction_abortable_not_fatal() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    for max_tv in CAPS {
        let topic = testkit::create_topic_with(
            &client,
            NewTopic::new(testkit::unique_name("txn-too-large"), 1)
                .config("max.message.bytes", "65536"),
        )
        .await;
        let p = transactional_at(&client, &broker, &testkit::unique_name("txn-id"), max_tv).await;
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
    for max_tv in CAPS {
        let topic = testkit::create_topic(&client, "txn-empty", 1).await;
        let p = transactional_at(
            &client,
            &broker,
            &testkit::unique_name("txn-empty-id"),
            max_tv,
        )
        .await;

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
}
