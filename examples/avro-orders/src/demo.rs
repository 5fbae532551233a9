//! `avro-orders demo`: the seed's pipeline for a fixed count, fast and
//! reproducible, then the DLQ replayed (twice: the second moves nothing).
//!
//! Differences from the live run, on purpose: no 1/s pacing; the orders
//! come from a seeded generator and their fates from a hash of their ids,
//! so the counts are the same on every run; retry delays are
//! `retry_backoff` (the demo's default 10 ms, ×2 per retry: 10, 20, 40 ms)
//! instead of 1, 2, 4 s; topics are fresh per run (`orders-<run>`,
//! `orders-<run>_dlq`) so earlier runs' records never mix in. The registry
//! is `SCHEMA_REGISTRY_URL`, or a `testkit::StandInSchemaRegistry` in
//! process (no Confluent registry can be installed here).

use std::time::{Duration, Instant};

use kafka_wire::records::Record;
use kafka_wire::{Client, NewTopic, Producer, ProducerRecord};
use resilience::dlt::replay::{self, ReplayOptions, ReplayReport, TopicReader};
use schema_registry::{AvroDeserializer, AvroSerializer, RegistryClient};
use testkit::StandInSchemaRegistry;

use crate::order::{Fate, SCHEMA};
use crate::producer::{self, Delivered};
use crate::service::{self, OrderService, Verbosity};
use crate::settings::Settings;
use crate::summary::{money, Summary};

/// Records produced besides the orders whose value is not Avro (plain
/// JSON): each must be dead-lettered as a deserialization failure.
pub const UNDECODABLE: u64 = 1;

/// What a demo run did.
#[derive(Debug)]
pub struct Report {
    pub produced: Vec<Delivered>,
    pub summary: Summary,
    /// Orders whose fate says processed / DLQ (from the produced orders).
    pub expected_processed: u64,
    pub expected_dead: u64,
    /// The average of the prices of the orders whose fate says processed.
    pub expected_average: f64,
    /// The DLQ as read back after the run.
    pub dlq: Vec<(i32, Record)>,
    /// First and second replay of the DLQ.
    pub replays: [ReplayReport; 2],
    /// Records in the orders topic that came back from the DLQ
    /// (`kafka_dlt-replayed-from`).
    pub replayed_back: Vec<Record>,
    pub took: Duration,
}

/// Run the demo with `count` orders from generator seed `seed`.
///
/// # Errors
/// Kafka, registry or replay failures, or the processor not finishing
/// within `deadline`.
pub async fn run(
    settings: &Settings,
    count: u64,
    seed: u64,
    deadline: Duration,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let stand_in;
    let registry_url = match &settings.registry_url {
        Some(url) => url.clone(),
        None => {
            stand_in = StandInSchemaRegistry::start().await;
            stand_in.url().to_string()
        }
    };
    let registry = RegistryClient::from_url(&registry_url)?;
    println!(
        "avro-orders demo: {count} orders to {} (DLQ {}), registry {registry_url}{}, retries after {:?} ×2, {} retries",
        settings.topic,
        settings.dlq,
        if settings.registry_url.is_none() { " (StandInSchemaRegistry)" } else { "" },
        settings.retry_backoff,
        settings.max_retries
    );

    let admin = Client::connect(settings.client()?.build()?).await?;
    for topic in [&settings.topic, &settings.dlq] {
        if let Err(e) = admin.create_topic(NewTopic::new(topic.as_str(), 3)).await {
            if e.code() != Some(kafka_wire::KafkaCode::TopicAlreadyExists) {
                return Err(e.into());
            }
        }
    }

    let ser = AvroSerializer::new(registry.clone(), SCHEMA)?;
    let produced = producer::produce(settings, &ser, count, seed).await?;
    // One payload that is not Avro at all: a deserialization failure, to
    // the DLQ at once, never blocking its partition.
    let raw = Producer::connect(settings.producer()?).await?;
    raw.send(
        ProducerRecord::new(settings.topic.as_str())
            .key("not-avro")
            .value(&br#"{"order_id":"plain JSON, no schema id"}"#[..]),
    )
    .await?
    .await?;
    raw.close().await;
    let total = count + UNDECODABLE;

    let service = OrderService::new(
        AvroDeserializer::new(registry),
        settings.clone(),
        Verbosity::Failures,
    );
    let tally = service.tally();
    let processor = service.processor(settings)?;
    let stats = processor.stats();
    let done = {
        let (tally, stats) = (tally.clone(), stats.clone());
        move || {
            tally.snapshot().processed
                + stats
                    .dead_lettered
                    .load(std::sync::atomic::Ordering::Relaxed)
                >= total
        }
    };
    let until = Instant::now() + deadline;
    processor
        .run(async {
            while !done() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
    anyhow::ensure!(
        done(),
        "the processor did not finish {total} records within {deadline:?}"
    );
    let summary = Summary::new(
        tally.snapshot(),
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
    );

    let dlq = read_topic(settings, &admin, &settings.dlq).await?;
    let options = ReplayOptions {
        dlt: settings.dlq.clone(),
        // Its DLQ is not named `orders.DLT`: say what it is the DLQ of
        // (replay sends a record back only there, whatever its headers say).
        sources: vec![settings.topic.clone()],
        ..Default::default()
    };
    let first = replay::replay(settings.client()?, &options).await?;
    let second = replay::replay(settings.client()?, &options).await?;
    let replayed_back = read_topic(settings, &admin, &settings.topic)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| {
            r.headers
                .iter()
                .any(|h| h.key.as_ref() == replay::REPLAYED_FROM.as_bytes())
        })
        .collect();

    let fate = |d: &&Delivered| Fate::of(&d.order.order_id);
    let ok: Vec<&Delivered> = produced
        .iter()
        .filter(|d| matches!(fate(d), Fate::Ok | Fate::TransientOnce))
        .collect();
    let expected_average = service::average_cents(
        ok.iter().map(|d| service::cents(d.order.price)).sum(),
        ok.len() as u64,
    );
    Ok(Report {
        expected_processed: ok.len() as u64,
        expected_dead: produced.len() as u64 - ok.len() as u64 + UNDECODABLE,
        expected_average,
        produced,
        summary,
        dlq,
        replays: [first, second],
        replayed_back,
        took: started.elapsed(),
    })
}

/// Every committed record of `topic`, from its start to its end now.
///
/// # Errors
/// Kafka failures.
pub async fn read_topic(
    settings: &Settings,
    admin: &Client,
    topic: &str,
) -> anyhow::Result<Vec<(i32, Record)>> {
    let mut reader = TopicReader::open(settings.client()?, admin, topic).await?;
    let mut all = Vec::new();
    while let Some(batch) = reader.next().await? {
        all.extend(batch);
    }
    reader.close().await;
    Ok(all)
}

impl Report {
    /// Records produced: the orders and the undecodable payloads.
    pub fn produced_records(&self) -> u64 {
        self.produced.len() as u64 + UNDECODABLE
    }

    /// The demo's table: what happened, and what it should have been.
    pub fn print(&self) {
        let s = &self.summary;
        let fates = |f: Fate| {
            let n = self
                .produced
                .iter()
                .filter(|d| Fate::of(&d.order.order_id) == f);
            n.count().to_string()
        };
        let check = |ok: bool| if ok { "✓" } else { "✗" };
        let expect = |ok: bool, what: String| format!("{} {what}", check(ok));
        let [first, second] = &self.replays;
        let sum = s.processed + s.dead_lettered;
        let rows: Vec<[String; 3]> = vec![
            [
                "orders produced".into(),
                self.produced.len().to_string(),
                String::new(),
            ],
            [
                "+ payloads that are not Avro".into(),
                UNDECODABLE.to_string(),
                String::new(),
            ],
            [
                "orders received".into(),
                s.received.to_string(),
                String::new(),
            ],
            [
                "processed".into(),
                s.processed.to_string(),
                expect(
                    s.processed == self.expected_processed,
                    format!("expected {}", self.expected_processed),
                ),
            ],
            [
                "  after one retry".into(),
                fates(Fate::TransientOnce),
                String::new(),
            ],
            [
                "sent to DLQ".into(),
                s.dead_lettered.to_string(),
                expect(
                    s.dead_lettered == self.expected_dead,
                    format!("expected {}", self.expected_dead),
                ),
            ],
            [
                "  poison (fatal, no retry)".into(),
                fates(Fate::Poison),
                String::new(),
            ],
            [
                "  3 retries exhausted".into(),
                fates(Fate::TransientAlways),
                String::new(),
            ],
            [
                "  not Avro (deserialization)".into(),
                UNDECODABLE.to_string(),
                String::new(),
            ],
            [
                "processed + DLQ".into(),
                sum.to_string(),
                expect(
                    sum == self.produced_records(),
                    format!("= produced {}", self.produced_records()),
                ),
            ],
            [
                "total revenue".into(),
                format!("${}", money(s.revenue)),
                String::new(),
            ],
            [
                "average order value".into(),
                format!("${:.4}", s.average),
                expect(
                    s.average == self.expected_average,
                    format!("= mean of processed prices ${:.4}", self.expected_average),
                ),
            ],
            [
                "DLQ records read back".into(),
                self.dlq.len().to_string(),
                "kafka_dlt-original-topic/-partition/-offset, -exception-message".into(),
            ],
            [
                "replay 1: moved back".into(),
                first.replayed.to_string(),
                expect(first.replayed == s.dead_lettered, "= sent to DLQ".into()),
            ],
            [
                "replay 2: moved back".into(),
                second.replayed.to_string(),
                expect(
                    second.replayed == 0,
                    format!("{} already replayed", second.already_replayed),
                ),
            ],
            [
                "replayed records in orders".into(),
                self.replayed_back.len().to_string(),
                expect(
                    self.replayed_back.len() as u64 == s.dead_lettered,
                    "exactly once".into(),
                ),
            ],
        ];
        let w = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
        println!("\n| {:<w$} | {:>12} | check", "avro-orders demo", "value");
        println!("|{}|{}|------", "-".repeat(w + 2), "-".repeat(14));
        for [what, value, note] in rows {
            println!("| {what:<w$} | {value:>12} | {note}");
        }
        println!("took {:.1} s", self.took.as_secs_f64());
    }
}
