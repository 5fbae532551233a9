//! Exactly-once consume-transform-produce against the real broker: a
//! member that dies in the middle of a transaction leaves no visible
//! output; its successor (same transactional.id) fences it, and a
//! read_committed reader sees every input's output exactly once, with
//! poison records in the DLT, also exactly once.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::{NewTopic, ProducerRecord};
use resilience::eos::{TransactionalProcessor, Transformer};
use resilience::HandlerError;

struct Doubler {
    out: String,
    /// Hang (a dying member) when this record comes.
    hang_at: Option<u32>,
    /// Set once it hangs: the member is stuck mid-transaction.
    hung: Arc<AtomicBool>,
}

impl Transformer for Doubler {
    async fn transform(
        &self,
        _tp: &TopicPartition,
        r: &Record,
    ) -> Result<Vec<ProducerRecord>, HandlerError> {
        let n = number(r);
        if self.hang_at == Some(n) {
            self.hung.store(true, AtomicOrdering::SeqCst);
            std::future::pending::<()>().await;
        }
        if n % 50 == 7 {
            return Err(HandlerError::NonRetryable(format!("poison {n}")));
        }
        Ok(vec![
            ProducerRecord::new(&self.out).value((n * 2).to_string())
        ])
    }
}

#[tokio::test]
async fn outputs_and_offsets_commit_together_exactly_once_across_a_crash() {
    const N: u32 = 400;
    let b = testkit::require_broker!();
    let (admin, input) = topic_with_records(&b, "eos-in", 2, N).await;
    let out = testkit::create_topic(&admin, "eos-out", 1).await;
    admin
        .create_topic(NewTopic::new(format!("{input}.DLT"), 1))
        .await
        .unwrap();
    let group = testkit::unique_name("eos");
    let txn_id = testkit::unique_name("eos-txn");
    let producer = testkit::producer_builder(&b)
        .transactional_id(&txn_id)
        .build()
        .unwrap();
    let hung = Arc::new(AtomicBool::new(false));
    let start_eos = |hang_at: Option<u32>| {
        let mut consumer = group_consumer(&b, &group);
        consumer.max_poll_records = 20; // many transactions, not one
        let p = TransactionalProcessor::new(consumer, producer.clone(), &[&input]);
        let stats = p.stats();
        let t = Doubler {
            out: out.clone(),
            hang_at,
            hung: hung.clone(),
        };
        (tokio::spawn(p.run(t, std::future::pending())), stats)
    };

    // The first member dies mid-transaction at record 250.
    let (first, stats1) = start_eos(Some(250));
    assert!(
        testkit::eventually(Duration::from_secs(30), || stats1
            .transactions
            .load(AtomicOrdering::Relaxed)
            > 0)
        .await
    );
    assert!(
        testkit::eventually(Duration::from_secs(30), || hung
            .load(AtomicOrdering::SeqCst))
        .await,
        "the first member never reached record 250"
    );
    first.abort();
    let _ = first.await;

    let (second, stats2) = start_eos(None);
    let poison = (0..N).filter(|n| n % 50 == 7).count();
    let want_out = N as usize - poison;
    let outputs = read_all(&b, &out, 1, want_out, true, Duration::from_secs(90)).await;
    let dead = read_all(
        &b,
        &format!("{input}.DLT"),
        1,
        poison,
        true,
        Duration::from_secs(10),
    )
    .await;
    second.abort();
    let _ = second.await;

    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for r in &outputs {
        *counts.entry(number(r) / 2).or_default() += 1;
    }
    let dup: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dup.is_empty(),
        "outputs seen twice by read_committed: {dup:?}"
    );
    assert_eq!(counts.len(), want_out, "outputs missing");
    assert_eq!(dead.len(), poison, "each poison record dead-lettered once");
    assert!(
        stats2.transactions.load(AtomicOrdering::Relaxed) > 0,
        "the successor committed transactions"
    );
    println!(
        "first member: {} transactions before dying; successor: {}",
        stats1.transactions.load(AtomicOrdering::Relaxed),
        stats2.transactions.load(AtomicOrdering::Relaxed)
    );
}

/// Issue 29, case 5 (and case 1's exactly-once sibling): a 3 s
/// `transaction.timeout.ms` and 300 inputs at 50 ms each (15 s of work in
/// one poll). Transactions commit early, before the next record would not
/// fit. Records 200 and 203 hang 6 s, once each: the first record of a
/// transaction starts it at the broker only when its output is sent, so a
/// hang is a timeout only in the middle of a transaction, and at least one
/// of the two is (the one after a hang starts a transaction of its own,
/// three records before the second). That transaction outlives the timeout
/// and the coordinator aborts it: the processor initializes again and
/// resumes from the committed offsets. A transformer panic on one record
/// dead-letters it. `run` ends Ok; every output exactly once; committed 300.
#[tokio::test]
async fn a_transaction_never_outlives_its_timeout_and_one_that_did_is_recovered() {
    const N: u32 = 300;
    let b = testkit::require_broker!();
    let (admin, input) = topic_with_records(&b, "eos-timeout-in", 1, N).await;
    let out = testkit::create_topic(&admin, "eos-timeout-out", 1).await;
    let dlt = format!("{input}.DLT");
    admin.create_topic(NewTopic::new(&dlt, 1)).await.unwrap();
    let group = testkit::unique_name("eos-timeout");
    let producer = testkit::producer_builder(&b)
        .transactional_id(testkit::unique_name("eos-timeout-txn"))
        .set("transaction.timeout.ms", "3000")
        .unwrap()
        .build()
        .unwrap();
    struct Slow {
        out: String,
        /// Records 200 and 203 hang, once each.
        hung: std::sync::Mutex<std::collections::BTreeSet<u32>>,
    }
    impl Transformer for Slow {
        async fn transform(
            &self,
            _: &TopicPartition,
            r: &Record,
        ) -> Result<Vec<ProducerRecord>, HandlerError> {
            let n = number(r);
            if n == 150 {
                panic!("transformer bug at record {n}");
            }
            let hang = (n == 200 || n == 203) && self.hung.lock().unwrap().insert(n);
            let wait = if hang { 6_000 } else { 50 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(vec![ProducerRecord::new(&self.out).value(n.to_string())])
        }
    }
    let p = TransactionalProcessor::new(group_consumer(&b, &group), producer, &[&input]);
    let stats = p.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = Slow {
        out: out.clone(),
        hung: Default::default(),
    };
    let run = tokio::spawn(p.run(t, async {
        let _ = stopped.await;
    }));
    let outputs = read_all(&b, &out, 1, N as usize - 1, true, Duration::from_secs(120)).await;
    let dead = read_all(&b, &dlt, 1, 1, true, Duration::from_secs(10)).await;
    let tp = TopicPartition::new(&input, 0);
    let committed = testkit::eventually_async(Duration::from_secs(10), || async {
        committed_offset(&b, &group, &tp).await == Some(i64::from(N))
    })
    .await;
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(30), run).await;
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for r in &outputs {
        *counts.entry(number(r)).or_default() += 1;
    }
    assert!(
        counts.values().all(|c| *c == 1),
        "an output twice: {counts:?}"
    );
    assert_eq!(counts.len(), N as usize - 1, "outputs missing");
    assert_eq!(dead.len(), 1);
    let error = dead[0]
        .headers
        .iter()
        .find(|h| h.key.as_ref() == b"kafka_dlt-exception-message")
        .and_then(|h| h.value.clone())
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&error).contains("transformer bug at record 150"),
        "{error:?}"
    );
    assert!(committed, "the group's offset did not reach {N}");
    assert!(
        stats.aborted.load(AtomicOrdering::Relaxed) >= 1,
        "the hung record's transaction was aborted"
    );
    match ended {
        Ok(Ok(Ok(()))) => {}
        other => panic!("run did not end Ok within 30 s of shutdown: {other:?}"),
    }
}

/// Issue 29's kind ("a write that can never succeed") in the exactly-once
/// processor: outputs of records 10 and 33 are too large for the output
/// topic's `max.message.bytes` (2 KiB). The broker refuses them, the
/// transaction aborts; the next one writes those inputs' dead letters
/// instead (their error naming the refusal) with every other input's
/// output, each exactly once, and commits to the end. It was an endless
/// abort-and-retry.
#[tokio::test]
async fn an_output_too_large_for_its_topic_dead_letters_its_input_and_the_rest_commit() {
    const N: u32 = 60;
    let big = |n: u32| n == 10 || n == 33;
    let b = testkit::require_broker!();
    let (admin, input) = topic_with_records(&b, "eos-large-in", 1, N).await;
    let out = testkit::unique_name("eos-large-out");
    admin
        .create_topic(NewTopic::new(&out, 1).config("max.message.bytes", "2048"))
        .await
        .unwrap();
    let dlt = format!("{input}.DLT");
    admin.create_topic(NewTopic::new(&dlt, 1)).await.unwrap();
    let group = testkit::unique_name("eos-large");
    let producer = testkit::producer_builder(&b)
        .transactional_id(testkit::unique_name("eos-large-txn"))
        .build()
        .unwrap();
    struct Sized {
        out: String,
    }
    impl Transformer for Sized {
        async fn transform(
            &self,
            _: &TopicPartition,
            r: &Record,
        ) -> Result<Vec<ProducerRecord>, HandlerError> {
            let n = number(r);
            let value = if n == 10 || n == 33 {
                "x".repeat(8_000)
            } else {
                n.to_string()
            };
            Ok(vec![ProducerRecord::new(&self.out)
                .key(n.to_string())
                .value(value)])
        }
    }
    let mut consumer = group_consumer(&b, &group);
    consumer.max_poll_records = 20;
    let p = TransactionalProcessor::new(consumer, producer, &[&input]);
    let stats = p.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(p.run(Sized { out: out.clone() }, async {
        let _ = stopped.await;
    }));
    let want = (0..N).filter(|n| !big(*n)).count();
    let outputs = read_all(&b, &out, 1, want, true, Duration::from_secs(60)).await;
    let dead = read_all(&b, &dlt, 1, 2, true, Duration::from_secs(20)).await;
    let tp = TopicPartition::new(&input, 0);
    let committed = testkit::eventually_async(Duration::from_secs(20), || async {
        committed_offset(&b, &group, &tp).await == Some(i64::from(N))
    })
    .await;
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(30), run).await;

    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for r in &outputs {
        *counts.entry(number(r)).or_default() += 1;
    }
    assert!(
        counts.values().all(|c| *c == 1),
        "an output twice: {counts:?}"
    );
    assert_eq!(counts.len(), want, "outputs missing");
    assert!(
        !counts.keys().any(|n| big(*n)),
        "a too-large output was written: {counts:?}"
    );
    let mut dead_inputs: Vec<u32> = dead.iter().map(number).collect();
    dead_inputs.sort_unstable();
    assert_eq!(
        dead_inputs,
        vec![10, 33],
        "the inputs of the refused outputs, once each"
    );
    for d in &dead {
        let error = d
            .headers
            .iter()
            .find(|h| h.key.as_ref() == b"kafka_dlt-exception-message")
            .and_then(|h| h.value.clone())
            .unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&error).contains("can never be written"),
            "{error:?}"
        );
    }
    assert!(committed, "the group's offset did not reach {N}");
    assert!(
        stats.aborted.load(AtomicOrdering::Relaxed) >= 2,
        "each refusal aborted once"
    );
    match ended {
        Ok(Ok(Ok(()))) => {}
        other => panic!("run did not end Ok within 30 s of shutdown: {other:?}"),
    }
}
