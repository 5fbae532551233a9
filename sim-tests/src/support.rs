//! Shared set-up: topics, producing, group consumers, a running processor,
//! and a handler that counts side effects by record value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consumer_core::{ConsumerConfig, ConsumerError, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{Client, ClientConfig, NewTopic, Producer, ProducerConfig, ProducerRecord};
use resilience::processor::HandlerFuture;
use resilience::{Handler, Processor, Stats};

pub async fn admin(b: &testkit::BrokerEnv) -> Client {
    Client::connect(
        ClientConfig::builder()
            .bootstrap(&b.bootstrap)
            .expect("bootstrap")
            .build()
            .expect("config"),
    )
    .await
    .expect("connect to the test broker")
}

pub fn producer_config(b: &testkit::BrokerEnv) -> ProducerConfig {
    ProducerConfig::builder()
        .bootstrap(&b.bootstrap)
        .expect("bootstrap")
        .build()
        .expect("config")
}

/// A new uniquely named topic.
pub async fn create_topic(admin: &Client, prefix: &str, partitions: i32) -> String {
    let topic = testkit::unique_name(prefix);
    admin
        .create_topic(NewTopic::new(&topic, partitions))
        .await
        .expect("create topic");
    topic
}

/// Produce and wait for every acknowledgement.
pub async fn produce(
    admin: &Client,
    b: &testkit::BrokerEnv,
    records: impl IntoIterator<Item = ProducerRecord>,
) {
    let p = Producer::with_client(admin.clone(), producer_config(b));
    for r in records {
        p.send(r).await.expect("send");
    }
    p.flush().await;
}

/// A group member reading from the earliest offset, with a short session.
pub fn group_consumer(b: &testkit::BrokerEnv, group: &str) -> ConsumerConfig {
    ConsumerConfig::builder()
        .bootstrap(&b.bootstrap)
        .expect("bootstrap")
        .group_id(group)
        .set("auto.offset.reset", "earliest")
        .expect("reset")
        .set("session.timeout.ms", "6000")
        .expect("session")
        .set("heartbeat.interval.ms", "300")
        .expect("heartbeat")
        .build()
        .expect("config")
}

/// A processor running on its own task.
#[derive(Debug)]
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    join: tokio::task::JoinHandle<Result<(), ConsumerError>>,
    pub stats: Arc<Stats>,
}

pub fn start(processor: Processor) -> Running {
    let stats = processor.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(processor.run(async move {
        let _ = stopped.await;
    }));
    Running { stop, join, stats }
}

impl Running {
    /// Graceful shutdown: drain, commit, leave.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.join
            .await
            .expect("processor task")
            .expect("processor run");
    }

    /// A crash: the task stops dead, nothing more is committed.
    pub async fn crash(self) {
        self.join.abort();
        let _ = self.join.await;
    }

    /// Wait until `n` records reached an end (or `timeout`); returns how many did.
    pub async fn wait_finished(&self, n: u64, timeout: Duration) -> u64 {
        let end = Instant::now() + timeout;
        loop {
            let done = self.stats.finished();
            if done >= n || Instant::now() > end {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Counts side effects per record value.
#[derive(Debug, Default)]
pub struct CountingHandler {
    pub seen: Mutex<HashMap<String, u32>>,
}

impl CountingHandler {
    /// (distinct values, side effects beyond the first per value).
    pub fn distinct_and_duplicates(&self) -> (usize, usize) {
        let seen = self.seen.lock().expect("lock");
        let dups = seen.values().map(|n| (*n as usize).saturating_sub(1)).sum();
        (seen.len(), dups)
    }
}

/// A [`CountingHandler`] shared between runs.
#[derive(Debug)]
pub struct SharedCounting(pub Arc<CountingHandler>);

impl Handler for SharedCounting {
    fn handle<'a>(&'a self, _tp: &'a TopicPartition, r: &'a Record) -> HandlerFuture<'a> {
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        *self.0.seen.lock().expect("lock").entry(value).or_insert(0) += 1;
        Box::pin(async { Ok(()) })
    }
}
