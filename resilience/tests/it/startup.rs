//! Starting before the cluster is reachable: `run` keeps retrying (it
//! must not exit, like a service started before its broker), gives up only
//! after `startup_timeout`, and a shutdown while it waits returns cleanly.
//! No broker needed: the bootstrap address is a closed port.

use std::time::{Duration, Instant};

use consumer_core::{ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};

struct Never;

impl Handler for Never {
    async fn handle(&self, _: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
        panic!("no record can arrive from a closed port")
    }
}

/// An address that refuses connections.
fn closed_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port(); // the listener is dropped: the port is closed
    format!("127.0.0.1:{port}")
}

fn unreachable_consumer() -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&closed_port())
        .expect("bootstrap")
        .group_id("startup")
        .build()
        .expect("config")
}

/// A config whose bootstrap port refuses connections.
fn unreachable() -> ProcessorConfig {
    ProcessorConfig::new(unreachable_consumer(), &["t"])
}

#[tokio::test]
async fn run_gives_up_only_after_the_startup_timeout() {
    let started = Instant::now();
    let cfg = unreachable().startup_timeout(Duration::from_secs(1));
    let result = Processor::new(cfg, Never).run(std::future::pending()).await;
    let took = started.elapsed();
    let err = result.expect_err("nothing to connect to");
    assert!(err.is_retriable(), "a connection failure, not fatal: {err}");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:") && text.contains("Check bootstrap.servers"),
        "names the address and what to check: {text}"
    );
    assert!(
        took >= Duration::from_millis(500),
        "retried before giving up (took {took:?})"
    );
}

#[tokio::test]
async fn without_a_timeout_run_keeps_retrying_until_shutdown() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(Processor::new(unreachable(), Never).run(async move {
        let _ = stopped.await;
    }));
    assert!(
        testkit::stays_for(Duration::from_secs(2), || !run.is_finished()).await,
        "run gave up although no timeout was set"
    );
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("shutdown ends the retrying at once")
        .expect("task");
    assert!(
        result.is_ok(),
        "a shutdown before start is not an error: {result:?}"
    );
}

struct Identity;

impl resilience::eos::Transformer for Identity {
    async fn transform(
        &self,
        _: &TopicPartition,
        _: &Record,
    ) -> Result<Vec<ProducerRecord>, HandlerError> {
        panic!("no record can arrive from a closed port")
    }
}

#[tokio::test]
async fn the_exactly_once_processor_also_waits_for_the_cluster() {
    let producer = kafka_wire::ProducerConfig::builder()
        .bootstrap(&closed_port())
        .expect("bootstrap")
        .set("transactional.id", "startup")
        .expect("transactional.id")
        .build()
        .expect("config");
    let eos =
        resilience::eos::TransactionalProcessor::new(unreachable_consumer(), producer, &["t"]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(eos.run(Identity, async move {
        let _ = stopped.await;
    }));
    assert!(
        testkit::stays_for(Duration::from_secs(2), || !run.is_finished()).await,
        "run exited although the cluster may still come up"
    );
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("shutdown ends the retrying at once")
        .expect("task");
    assert!(result.is_ok(), "{result:?}");
}

/// `enable.auto.commit=true` pasted from a Java config: both processors
/// refuse it before connecting, naming the setting and what to use instead
/// (issue 29, case 2: under the Processor it committed 2,000 records while
/// 281 were handled).
#[tokio::test]
async fn auto_commit_is_refused_by_both_processors_naming_the_setting() {
    let consumer = || {
        ConsumerConfig::builder()
            .bootstrap(&closed_port())
            .and_then(|b| b.group_id("g").set("enable.auto.commit", "true"))
            .and_then(|b| b.set("auto.commit.interval.ms", "500"))
            .and_then(|b| b.build())
            .expect("config")
    };
    let started = Instant::now();
    let cfg = ProcessorConfig::new(consumer(), &["t"]);
    let err = Processor::new(cfg, Never)
        .run(std::future::pending())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("enable.auto.commit=true")
            && text.contains("processor.commit.interval.ms")
            && !err.is_retriable(),
        "{text}"
    );
    let producer = kafka_wire::ProducerConfig::builder()
        .set("bootstrap.servers", &closed_port())
        .and_then(|b| b.set("transactional.id", "t-0"))
        .and_then(|b| b.build())
        .expect("producer config");
    struct Upper;
    impl resilience::eos::Transformer for Upper {
        async fn transform(
            &self,
            _: &TopicPartition,
            _: &Record,
        ) -> Result<Vec<ProducerRecord>, HandlerError> {
            Ok(Vec::new())
        }
    }
    let err = resilience::eos::TransactionalProcessor::new(consumer(), producer, &["t"])
        .run(Upper, std::future::pending())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("enable.auto.commit=true"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused before any connection attempt"
    );
}
