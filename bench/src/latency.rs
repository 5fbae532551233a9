//! Workload 5: end-to-end latency, from a record's *scheduled* send time
//! to its handler call, at a fixed rate (`rate=`, default 10,000/s).
//!
//! Producer and consumer share one process (and clock). Each value starts
//! with the record's sequence number and scheduled send time in µs, so a
//! producer that falls behind shows up as latency (no coordinated
//! omission). Phases: wait until the consumer sees records at all (it
//! starts at `latest`), one second of warm-up at the full rate, then
//! `count` measured records. Prints `LATENCY records= p50_us= p99_us=
//! max_us=` and the usual `RESULT` line.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use resilience::{CommitPolicy, Handler, HandlerError, Processor, ProcessorConfig};

use crate::{group, ours_consumer_config_with, ours_producer, rdkafka_config, report, Args};

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A value carrying `seq` and its scheduled send time, padded to `size`.
fn stamped(seq: u64, sched_us: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(16));
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&sched_us.to_le_bytes());
    v.resize(size.max(16), b'x');
    v
}

fn read_stamp(v: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
    let sched = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
    Some((seq, sched))
}

/// What the consuming side records, shared with the producing side.
#[derive(Default)]
struct Samples {
    /// Records seen at all (any phase).
    seen: AtomicU64,
    /// Records from this sequence number on are measured.
    measure_from: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    /// Scheduled send → acknowledgement, for measured records (ours only).
    acks_us: Mutex<Vec<u64>>,
}

impl Samples {
    fn new() -> Arc<Self> {
        let s = Samples::default();
        s.measure_from.store(u64::MAX, AtomicOrdering::Relaxed);
        Arc::new(s)
    }

    fn record(&self, value: Option<&[u8]>) {
        let now = now_us();
        self.seen.fetch_add(1, AtomicOrdering::Relaxed);
        if let Some((seq, sched)) = value.and_then(read_stamp) {
            if seq >= self.measure_from.load(AtomicOrdering::Relaxed) {
                let mut l = self.latencies_us.lock().expect("samples");
                l.push(now.saturating_sub(sched));
            }
        }
    }

    fn measured(&self) -> usize {
        self.latencies_us.lock().expect("samples").len()
    }

    /// Print the percentiles and the RESULT line.
    fn report(&self, expected: u64, took: Duration) {
        let mut l = self.latencies_us.lock().expect("samples").clone();
        assert_eq!(
            l.len() as u64,
            expected,
            "only {} of {expected} measured records arrived",
            l.len()
        );
        let mut acks = self.acks_us.lock().expect("samples").clone();
        let ack_figures = if acks.is_empty() {
            String::new()
        } else {
            format!(
                " ack_p50_us={} ack_p99_us={}",
                percentile(&mut acks, 0.50),
                percentile(&mut acks, 0.99)
            )
        };
        println!(
            "LATENCY records={} p50_us={} p99_us={} max_us={}{ack_figures}",
            l.len(),
            percentile(&mut l, 0.50),
            percentile(&mut l, 0.99),
            percentile(&mut l, 1.0),
        );
        report(expected, 0, took);
    }
}

/// The `p` quantile (0..=1) of `v` (sorts it).
fn percentile(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// Drives the phases; `send(seq, sched_us)` sends one record.
struct Pacer {
    samples: Arc<Samples>,
    rate: u64,
    next_seq: u64,
}

impl Pacer {
    /// One record every 50 ms until the consumer sees one (it has joined
    /// and fetches), up to 60 s.
    async fn until_consuming(&mut self, mut send: impl FnMut(u64, u64)) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.samples.seen.load(AtomicOrdering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the consumer never saw a record");
            send(self.next_seq, now_us());
            self.next_seq += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `n` records at the fixed rate; returns how long it took.
    async fn paced(&mut self, n: u64, mut send: impl FnMut(u64, u64)) -> Duration {
        let start = Instant::now();
        let start_us = now_us();
        for i in 0..n {
            let offset = Duration::from_nanos(i * 1_000_000_000 / self.rate.max(1));
            let due = start + offset;
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
            send(self.next_seq, start_us + offset.as_micros() as u64);
            self.next_seq += 1;
        }
        start.elapsed()
    }

    /// The whole run: handshake, one second of warm-up, `count` measured.
    async fn run(&mut self, count: u64, mut send: impl FnMut(u64, u64)) -> Duration {
        self.until_consuming(&mut send).await;
        self.paced(self.rate, &mut send).await;
        self.samples
            .measure_from
            .store(self.next_seq, AtomicOrdering::Relaxed);
        let took = self.paced(count, &mut send).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while (self.samples.measured() as u64) < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        took
    }
}

struct Stamp(Arc<Samples>);

impl Handler for Stamp {
    async fn handle(&self, _: &TopicPartition, r: &Record) -> Result<(), HandlerError> {
        self.0.record(r.value.as_deref());
        Ok(())
    }
}

/// This project's producer and processor (per-partition ordering).
pub async fn ours(a: &Args) {
    let samples = Samples::new();
    let consumer = ours_consumer_config_with(a, &[("auto.offset.reset", "latest")]);
    let cfg = ProcessorConfig::new(consumer, &[&a.topic])
        .concurrency(8)
        .commit_policy(CommitPolicy::Interval(Duration::from_secs(1)));
    let processor = Processor::new(cfg, Stamp(samples.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(processor.run(async move {
        let _ = stop_rx.await;
    }));
    let producer = Arc::new(ours_producer(&a.bootstrap, &a.producer_props).await);
    let failed = Arc::new(AtomicU64::new(0));
    let mut pacer = Pacer {
        samples: samples.clone(),
        rate: a.rate,
        next_seq: 0,
    };
    let (topic, size) = (kafka_wire::Topic::new(&a.topic), a.size);
    let took = pacer
        .run(a.count, |seq, sched| {
            let (p, failed, topic) = (producer.clone(), failed.clone(), topic.clone());
            let samples = samples.clone();
            // Sending never waits for an acknowledgement.
            tokio::spawn(async move {
                let rec = ProducerRecord::new(&topic).value(stamped(seq, sched, size));
                let acked = match p.send(rec).await {
                    Ok(delivery) => delivery.await.is_ok(),
                    Err(_) => false,
                };
                if !acked {
                    failed.fetch_add(1, AtomicOrdering::Relaxed);
                } else if seq >= samples.measure_from.load(AtomicOrdering::Relaxed) {
                    let took = now_us().saturating_sub(sched);
                    samples.acks_us.lock().expect("samples").push(took);
                }
            });
        })
        .await;
    let _ = stop_tx.send(());
    let _ = run.await;
    producer.close().await;
    let failed = failed.load(AtomicOrdering::Relaxed);
    assert_eq!(failed, 0, "{failed} records were not acknowledged");
    samples.report(a.count, took);
}

/// librdkafka: a `BaseProducer` polled between sends (it never blocks),
/// a `BaseConsumer` on its own thread.
pub async fn rdkafka(a: &Args) {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use rdkafka::Message as _;

    let samples = Samples::new();
    let mut ccfg = rdkafka_config(a);
    ccfg.set("group.id", group())
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = ccfg.create().expect("rdkafka consumer");
    consumer.subscribe(&[&a.topic]).expect("subscribe");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (samples, stop) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(AtomicOrdering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => samples.record(m.payload()),
                    Some(Err(e)) => eprintln!("rdkafka: {e}"),
                    None => {}
                }
            }
        })
    };
    let mut pcfg = rdkafka::ClientConfig::new();
    pcfg.set("bootstrap.servers", &a.bootstrap);
    for (k, v) in &a.producer_props {
        pcfg.set(k, v);
    }
    let producer: BaseProducer = pcfg.create().expect("rdkafka producer");
    let mut pacer = Pacer {
        samples: samples.clone(),
        rate: a.rate,
        next_seq: 0,
    };
    let took = pacer
        .run(a.count, |seq, sched| {
            let value = stamped(seq, sched, a.size);
            producer
                .send(BaseRecord::<(), [u8]>::to(&a.topic).payload(&value))
                .unwrap_or_else(|(e, _)| panic!("rdkafka send: {e}"));
            producer.poll(Duration::ZERO);
        })
        .await;
    producer.flush(Duration::from_secs(30)).expect("flush");
    stop.store(true, AtomicOrdering::Relaxed);
    let _ = reader.join();
    samples.report(a.count, took);
}
