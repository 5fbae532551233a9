//! A new user's first hour (issue 35, item 10), against the real broker:
//! a misspelled topic is a warning at start naming the topic and its
//! similar existing names (and the check creates nothing); a handler's `?`
//! on bad JSON dead-letters the record after one attempt; assignments are
//! logged at info with their generation.
//!
//! The logs are captured with a `tracing` subscriber set as this thread's
//! default: `#[tokio::test]` runs on one thread, so the processor's tasks
//! log into it too.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::{dlt, Handler, HandlerError, Processor, ProcessorConfig};

/// What the subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture this thread's `info` and above of the client crates until the
/// guard drops.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("resilience=info,consumer_core=info,kafka_wire=warn")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

struct Never;

impl Handler for Never {
    async fn handle(&self, _: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_misspelled_topic_is_a_warning_at_start_naming_the_similar_topics() {
    let b = testkit::require_broker!();
    let (logs, _guard) = capture_logs();
    let admin = testkit::client(&b).await;
    let real = testkit::create_topic(&admin, "firsthour-orders", 1).await;
    // "firsthour" -> "fisrthour": two letters swapped.
    let typo = real.replacen("firsthour", "fisrthour", 1);
    let group = testkit::unique_name("firsthour-typo");
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&typo]);
    let run = start(Processor::new(cfg, Never));
    let warned = testkit::eventually(Duration::from_secs(30), || {
        logs.text().contains("does not exist")
    })
    .await;
    run.stop().await;
    let text = logs.text();
    assert!(warned, "no warning about {typo}: {text}");
    let line = text
        .lines()
        .find(|l| l.contains("does not exist"))
        .expect("the warning");
    assert!(
        line.contains("WARN") && line.contains(&format!("{typo:?}")) && line.contains(&real),
        "names the topic and the similar existing one: {line}"
    );
    let md = admin
        .refresh_metadata(Some(std::slice::from_ref(&typo)))
        .await
        .expect("metadata");
    assert_eq!(md.partition_count(&typo), None, "the check created {typo}");
}

/// Decodes each record as JSON with `?`, counting the calls per offset.
#[derive(Default)]
struct JsonOrders {
    calls: Mutex<HashMap<i64, u32>>,
}

impl Handler for JsonOrders {
    async fn handle(&self, _: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        *self.calls.lock().unwrap().entry(r.offset).or_default() += 1;
        let _order: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap_or(b""))?;
        Ok(())
    }
}

#[tokio::test]
async fn bad_json_behind_question_mark_is_dead_lettered_after_one_attempt() {
    let b = testkit::require_broker!();
    let (logs, _guard) = capture_logs();
    let admin = testkit::client(&b).await;
    let topic = testkit::create_topic(&admin, "firsthour-json", 1).await;
    let values = [r#"{"id":1}"#, r#"{"id": oops"#, r#"{"id":3}"#];
    testkit::produce(
        &admin,
        &b,
        values.map(|v| ProducerRecord::new(&topic).value(v)),
    )
    .await;
    let group = testkit::unique_name("firsthour-json");
    // The default policy: 3 attempts, 1 s then 2 s apart, for a retryable error.
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .dead_letter(testkit::producer_config(&b));
    let handler = Arc::new(JsonOrders::default());
    let run = start(Processor::new(cfg, handler.clone()));
    let stats = run.stats.clone();
    let dead = read_all(
        &b,
        &dlt::dlt_topic(&topic),
        1,
        1,
        false,
        Duration::from_secs(30),
    )
    .await;
    let tp = TopicPartition::new(&topic, 0);
    let committed = testkit::eventually_async(Duration::from_secs(30), || async {
        committed_offset(&b, &group, &tp).await == Some(3)
    })
    .await;
    run.stop().await;
    assert!(committed, "the group did not commit past the bad record");
    assert_eq!(dead.len(), 1, "one record dead-lettered");
    assert_eq!(dead[0].value.as_deref(), Some(values[1].as_bytes()));
    let calls = handler.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        HashMap::from([(0, 1), (1, 1), (2, 1)]),
        "bad JSON is not retried: one call per record"
    );
    assert_eq!(stats.dead_lettered.load(AtomicOrdering::Relaxed), 1);
    let class = dead[0]
        .headers
        .iter()
        .find(|h| h.key.as_ref() == dlt::EXCEPTION_FQCN.as_bytes())
        .and_then(|h| h.value.clone())
        .unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&class).contains("Deserialization"),
        "{class:?}"
    );
    let text = logs.text();
    let assigned = text
        .lines()
        .find(|l| l.contains("assigned partitions") && l.contains(&format!("{topic}-0")))
        .unwrap_or_else(|| panic!("no info line for the assignment: {text}"));
    assert!(
        assigned.contains("INFO") && assigned.contains("generation="),
        "{assigned}"
    );
}
