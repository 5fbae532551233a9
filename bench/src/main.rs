//! One benchmark measurement per process, so the parent (`cargo xtask
//! bench`) can read this process's CPU time and peak RSS with `wait4`:
//!
//! ```text
//! bench-peer <peer> <bootstrap> <topic> <count> [size=<bytes>] [rate=<records/s>]
//!            [<kafka.property>=<value> ...] [producer.<kafka.property>=<value> ...]
//! ```
//!
//! Peers: `ours-consume`, `ours-runtime-partition`, `ours-runtime-key`,
//! `ours-produce`, `rdkafka-consume`, `rdkafka-produce`. Consumers join a
//! fresh group, read from the earliest offset and stop after `count`
//! records; producers send `count` records of `size` bytes. The clock runs
//! from the first record received (consumers; the group join is excluded,
//! as Java's `ConsumerPerformance` excludes it) or the first send
//! (producers) to the last record or acknowledgement. The last line printed
//! is `RESULT records=<n> bytes=<n> secs=<f>` (the runtime peers also
//! print their pauses and peak in-flight records to stderr).
//!
//! `ours-share-consume` reads the topic in a fresh share group (KIP-932,
//! [`share`]): implicit acknowledgement, each poll ACCEPTs the last one's
//! records; `share-group-earliest <bootstrap> <group> 0` makes `group` a
//! share group that starts at the earliest offset, for Java's
//! `ShareConsumerPerformance`, which reads with the group's configs.
//!
//! Also `ours-latency` / `rdkafka-latency` (workload 5, [`latency`]),
//! `ours-rebalance` (workload 6, [`rebalance`]) and `create-topic
//! <bootstrap> <topic> <partitions>`. Plain properties go to the consumer
//! (or the producer of a throughput run), `producer.`-prefixed ones to the
//! producer of a latency or rebalance run.

mod latency;
mod rebalance;
mod share;

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, ConsumerConfig, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{Producer, ProducerConfig, ProducerRecord, Topic};
use resilience::{CommitPolicy, Handler, HandlerError, Ordering, Processor, ProcessorConfig};

struct Args {
    peer: String,
    bootstrap: String,
    topic: String,
    count: u64,
    size: usize,
    /// Records per second (`rate=`, latency runs).
    rate: u64,
    /// Settings for the consumer (or the producer of a throughput run).
    props: Vec<(String, String)>,
    /// `producer.<property>=`: the producer of a latency or rebalance run.
    producer_props: Vec<(String, String)>,
}

fn args() -> Args {
    let mut a = std::env::args().skip(1);
    let mut next = |what: &str| a.next().unwrap_or_else(|| usage(what));
    let (peer, bootstrap, topic) = (next("peer"), next("bootstrap"), next("topic"));
    let count = next("count").parse().unwrap_or_else(|_| usage("count"));
    let (mut size, mut rate) = (100, 10_000);
    let (mut props, mut producer_props) = (Vec::new(), Vec::new());
    for kv in a {
        let (k, v) = kv.split_once('=').unwrap_or_else(|| usage("key=value"));
        if k == "size" {
            size = v.parse().unwrap_or_else(|_| usage("size"));
        } else if k == "rate" {
            rate = v.parse().unwrap_or_else(|_| usage("rate"));
        } else if let Some(k) = k.strip_prefix("producer.") {
            producer_props.push((k.to_string(), v.to_string()));
        } else {
            props.push((k.to_string(), v.to_string()));
        }
    }
    Args {
        peer,
        bootstrap,
        topic,
        count,
        size,
        rate,
        props,
        producer_props,
    }
}

fn usage(what: &str) -> ! {
    eprintln!("bench-peer: missing or bad {what}\nusage: bench-peer <peer> <bootstrap> <topic> <count> [size=N] [kafka.property=value ...]");
    std::process::exit(2)
}

fn report(records: u64, bytes: u64, took: Duration) {
    println!(
        "RESULT records={records} bytes={bytes} secs={:.6}",
        took.as_secs_f64()
    );
}

fn group() -> String {
    format!(
        "bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    )
}

#[tokio::main]
async fn main() {
    let a = args();
    match a.peer.as_str() {
        "ours-consume" => ours_consume(&a).await,
        "ours-runtime-partition" => ours_runtime(&a, Ordering::PerPartition).await,
        "ours-runtime-key" => ours_runtime(&a, Ordering::PerKey).await,
        "ours-produce" => ours_produce(&a).await,
        "rdkafka-consume" => rdkafka_consume(&a),
        "rdkafka-produce" => rdkafka_produce(&a),
        "create-topic" => create_topic(&a).await,
        "ours-latency" => latency::ours(&a).await,
        "rdkafka-latency" => latency::rdkafka(&a).await,
        "ours-rebalance" => rebalance::ours(&a).await,
        "ours-share-consume" => share::ours(&a).await,
        "share-group-earliest" => share::earliest(&a.bootstrap, &a.topic).await,
        other => usage(&format!("peer ({other})")),
    }
}

fn ours_consumer_config(a: &Args) -> ConsumerConfig {
    ours_consumer_config_with(a, &[])
}

/// A fresh group reading from the earliest offset, `a.props`, then `extra`.
fn ours_consumer_config_with(a: &Args, extra: &[(&str, &str)]) -> ConsumerConfig {
    let mut b = ConsumerConfig::builder()
        .bootstrap(&a.bootstrap)
        .expect("bootstrap")
        .group_id(group())
        .set("auto.offset.reset", "earliest")
        .expect("property");
    let props = a.props.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    for (k, v) in props.chain(extra.iter().copied()) {
        b = b
            .set(k, v)
            .unwrap_or_else(|e| panic!("consumer property {k}={v}: {e}"));
    }
    b.build().expect("consumer config")
}

async fn ours_consume(a: &Args) {
    let mut c = Consumer::connect(ours_consumer_config(a))
        .await
        .expect("connect");
    c.subscribe(&[&a.topic]).expect("subscribe");
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    while n < a.count {
        for batch in c.poll(Duration::from_millis(500)).await.expect("poll") {
            first.get_or_insert_with(Instant::now);
            for r in &batch.records {
                bytes += r.value.as_ref().map_or(0, |v| v.len()) as u64;
            }
            n += batch.records.len() as u64;
        }
    }
    report(n, bytes, first.map_or(Duration::ZERO, |f| f.elapsed()));
}

/// `create-topic <bootstrap> <topic> <partitions>`.
async fn create_topic(a: &Args) {
    let client = kafka_wire::Client::connect(
        kafka_wire::ClientConfig::builder()
            .bootstrap(&a.bootstrap)
            .expect("bootstrap")
            .build()
            .expect("config"),
    )
    .await
    .expect("connect");
    client
        .create_topic(kafka_wire::NewTopic::new(&a.topic, a.count as i32))
        .await
        .expect("create topic");
}

/// The runtime's no-op handler.
struct Noop;

impl Handler for Noop {
    async fn handle(&self, _: &TopicPartition, _: &Record) -> Result<(), HandlerError> {
        Ok(())
    }
}

async fn ours_runtime(a: &Args, ordering: Ordering) {
    let cfg = ProcessorConfig::new(ours_consumer_config(a), &[&a.topic])
        .ordering(ordering)
        .concurrency(8)
        .commit_policy(CommitPolicy::Interval(Duration::from_secs(1)));
    let cfg = match std::env::var("BENCH_RT_PROPS") {
        Ok(props) => cfg
            .properties(props.split(',').filter_map(|kv| kv.split_once('=')))
            .expect("BENCH_RT_PROPS"),
        Err(_) => cfg,
    };
    let p = Processor::new(cfg, Noop);
    let stats = p.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(p.run(async move {
        let _ = stop_rx.await;
    }));
    let handled = || stats.handled.load(AtomicOrdering::Relaxed);
    while handled() == 0 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let first = Instant::now();
    while handled() < a.count {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let took = first.elapsed();
    let _ = stop_tx.send(());
    let _ = run.await;
    eprintln!(
        "runtime: pauses={} peak_in_flight_records={} commits={}",
        stats.pauses.load(AtomicOrdering::Relaxed),
        stats.peak_in_flight_records.load(AtomicOrdering::Relaxed),
        stats.commits.load(AtomicOrdering::Relaxed)
    );
    report(handled(), 0, took);
}

/// The producer's bulk idiom as the README shows it (and as `kafka-lab
/// produce` runs it): a shared `Topic`, `send(..).await?` per record
/// without keeping its delivery future, one `flush` whose error lists the
/// records that failed. No harness-side help: what an application writes.
async fn ours_produce(a: &Args) {
    let p = ours_producer(&a.bootstrap, &a.props).await;
    let topic = Topic::new(&a.topic);
    let value = bytes::Bytes::from(vec![b'x'; a.size]);
    let started = Instant::now();
    for _ in 0..a.count {
        p.send(ProducerRecord::new(&topic).value(value.clone()))
            .await
            .expect("send");
    }
    if let Err(undelivered) = p.flush().await {
        panic!("records were not acknowledged: {undelivered}");
    }
    let took = started.elapsed();
    p.close().await;
    report(a.count, a.count * a.size as u64, took);
}

/// This project's producer with `props`.
async fn ours_producer(bootstrap: &str, props: &[(String, String)]) -> Producer {
    let mut b = ProducerConfig::builder()
        .bootstrap(bootstrap)
        .expect("bootstrap");
    for (k, v) in props {
        b = b
            .set(k, v)
            .unwrap_or_else(|e| panic!("producer property {k}={v}: {e}"));
    }
    Producer::connect(b.build().expect("config"))
        .await
        .expect("connect")
}

fn rdkafka_config(a: &Args) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &a.bootstrap);
    for (k, v) in &a.props {
        c.set(k, v);
    }
    c
}

fn rdkafka_consume(a: &Args) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::Message as _;
    let mut cfg = rdkafka_config(a);
    cfg.set("group.id", group())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("rdkafka consumer");
    c.subscribe(&[&a.topic]).expect("subscribe");
    let (mut n, mut bytes) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    while n < a.count {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                bytes += m.payload().map_or(0, |p| p.len()) as u64;
                n += 1;
            }
            Some(Err(e)) => eprintln!("rdkafka: {e}"),
            None => {}
        }
    }
    report(n, bytes, first.map_or(Duration::ZERO, |f| f.elapsed()));
}

fn rdkafka_produce(a: &Args) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{
        BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext,
    };
    use rdkafka::ClientContext;
    use std::sync::atomic::AtomicU64;

    struct Counting(Arc<AtomicU64>);
    impl ClientContext for Counting {}
    impl ProducerContext for Counting {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
            if r.is_err() {
                self.0.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
    }
    let failed = Arc::new(AtomicU64::new(0));
    let p: BaseProducer<Counting> = rdkafka_config(a)
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Counting(failed.clone()))
        .expect("rdkafka producer");
    let value = vec![b'x'; a.size];
    let started = Instant::now();
    for _ in 0..a.count {
        let mut rec = BaseRecord::<(), [u8]>::to(&a.topic).payload(&value);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("rdkafka send: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    let took = started.elapsed();
    let failed = failed.load(AtomicOrdering::Relaxed);
    assert_eq!(failed, 0, "{failed} records were not acknowledged");
    report(a.count, a.count * a.size as u64, took);
}
