//! The producer against the real broker: round trips for every codec,
//! murmur2 placement, compact batching, and exactly-once-in-order delivery
//! while connections are killed mid-flight.

use crate::common;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::partition_for_key;
use kafka_wire::records::{BatchReader, Compression};
use kafka_wire::{BoxTransport, ConnectFuture};
use kafka_wire::{
    BrokerAddress, Client, Connector, NewTopic, Producer, ProducerConfig, ProducerRecord,
    TcpConnector,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[tokio::test]
async fn keyed_records_round_trip_with_every_codec_and_land_where_java_puts_them() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    for codec in Compression::ALL {
        let t = testkit::create_topic(&client, &format!("produce-{}", codec.name()), 6).await;
        let producer = Producer::with_client(
            client.clone(),
            testkit::producer_builder(&broker)
                .compression(codec)
                .build()
                .unwrap(),
        );
        let mut deliveries = Vec::new();
        for i in 0..2_000u32 {
            let rec = ProducerRecord::new(&t)
                .key(format!("k{}", i % 97))
                .value(format!("v{i}"))
                .header("n", Bytes::from(i.to_be_bytes().to_vec()))
                .timestamp(1_700_000_000_000 + i as i64);
            deliveries.push(producer.send(rec).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut per_partition = [0i64; 6];
        for (i, d) in deliveries.into_iter().enumerate() {
            let md = d.await.unwrap_or_else(|e| panic!("{codec:?} #{i}: {e}"));
            let key = format!("k{}", i % 97);
            assert_eq!(md.partition, partition_for_key(key.as_bytes(), 6));
            // Per-partition offsets are dense and in send order.
            assert_eq!(
                md.offset, per_partition[md.partition as usize],
                "{codec:?} record #{i} p{}",
                md.partition
            );
            per_partition[md.partition as usize] += 1;
        }
        for p in 0..6 {
            let got = common::fetch_all(&client, &t, p, per_partition[p as usize]).await;
            for r in &got {
                let n = u32::from_be_bytes(
                    r.headers[0].value.as_ref().unwrap()[..4]
                        .try_into()
                        .unwrap(),
                );
                assert_eq!(r.value.as_deref(), Some(format!("v{n}").as_bytes()));
                assert_eq!(r.key.as_deref(), Some(format!("k{}", n % 97).as_bytes()));
                assert_eq!(r.timestamp, 1_700_000_000_000 + n as i64);
            }
        }
        producer.close().await;
    }
}

#[tokio::test]
async fn small_records_are_batched_not_sent_one_per_batch() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = testkit::create_topic(&client, "batching", 1).await;
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .linger(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    let mut deliveries = Vec::new();
    for i in 0..1_000 {
        deliveries.push(
            producer
                .send(ProducerRecord::new(&t).value(format!("{i:010}")))
                .await
                .unwrap(),
        );
    }
    for d in deliveries {
        d.await.unwrap();
    }
    // Count the batches and bytes the broker stored.
    let records = common::fetch_all(&client, &t, 0, 1_000).await;
    assert_eq!(records.len(), 1_000);
    let raw = common::fetch_raw(&client, &t, 0).await;
    let batches = BatchReader::new(raw.clone()).count();
    assert!(
        batches <= 4,
        "1,000 records of 10 bytes took {batches} batches"
    );
    assert!(
        raw.len() < 20_000,
        "1,000 records of 10 bytes took {} bytes on the wire",
        raw.len()
    );
}

/// Kills every connection it made whenever the generation is bumped, and
/// refuses new ones while `refuse` is set.
#[derive(Debug, Default)]
struct KillSwitch {
    generation: Arc<AtomicU64>,
    dials: AtomicU64,
    /// Refuse new connections (the broker is unreachable).
    refuse: std::sync::atomic::AtomicBool,
}

struct Killable {
    inner: BoxTransport,
    born: u64,
    generation: Arc<AtomicU64>,
}

impl Killable {
    fn dead(&self) -> bool {
        self.generation.load(Ordering::Relaxed) != self.born
    }
}

fn killed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "killed by the test")
}

impl AsyncRead for Killable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.dead() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.dead() {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connector for KillSwitch {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.dials.fetch_add(1, Ordering::Relaxed);
            if self.refuse.load(Ordering::Relaxed) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused by the test",
                ));
            }
            let inner = TcpConnector.connect(addr, timeout).await?;
            let s: BoxTransport = Box::new(Killable {
                inner,
                born: self.generation.load(Ordering::Relaxed),
                generation: self.generation.clone(),
            });
            Ok(s)
        })
    }
}

impl KillSwitch {
    /// A producer config whose connections go through this switch.
    fn producer(
        self: &Arc<Self>,
        broker: &testkit::BrokerEnv,
        request_timeout: Duration,
    ) -> kafka_wire::ProducerConfigBuilder {
        ProducerConfig::builder().client(|c| {
            c.bootstrap(&broker.bootstrap)
                .unwrap()
                .connector(self.clone())
                .request_timeout(request_timeout)
        })
    }
}

#[tokio::test]
async fn idempotent_producer_writes_each_record_once_in_order_despite_killed_connections() {
    let broker = testkit::require_broker!();
    let admin = testkit::client(&broker).await;
    let t = testkit::create_topic(&admin, "idempotence", 2).await;
    let switch = Arc::new(KillSwitch::default());
    let generation = switch.generation.clone();
    let cfg = switch
        .producer(&broker, Duration::from_secs(5))
        .linger(Duration::from_millis(2))
        .batch_size(2048)
        .build()
        .unwrap();
    let producer = Producer::connect(cfg).await.unwrap();

    // Kill every connection every 40 ms while records flow.
    let killer = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            generation.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Keep records flowing for as long as the killer runs.
    let mut deliveries = Vec::new();
    let mut n: u32 = 0;
    while !killer.is_finished() {
        let rec = ProducerRecord::new(&t)
            .partition((n % 2) as i32)
            .value(n.to_be_bytes().to_vec());
        deliveries.push(producer.send(rec).await.unwrap());
        n += 1;
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    killer.await.unwrap();
    for d in deliveries {
        d.await.expect("every record is eventually acknowledged");
    }
    let dials = switch.dials.load(Ordering::Relaxed);
    assert!(
        dials >= 10,
        "the kill switch must really have cut connections ({dials} dials)"
    );
    // Each partition holds its records exactly once, in send order.
    for p in 0..2 {
        let want: Vec<u32> = (0..n).filter(|i| i % 2 == p as u32).collect();
        let got: Vec<u32> = common::fetch_all(&admin, &t, p, want.len() as i64)
            .await
            .iter()
            .map(|r| u32::from_be_bytes(r.value.as_ref().unwrap()[..4].try_into().unwrap()))
            .collect();
        let end = admin_end_offset(&admin, &t, p).await;
        assert_eq!(end, want.len() as i64, "no duplicates in partition {p}");
        assert_eq!(got, want, "partition {p}: every record once, in order");
    }
}

async fn admin_end_offset(client: &Client, topic: &str, partition: i32) -> i64 {
    common::high_watermark(client, topic, partition).await
}

#[tokio::test]
async fn unknown_topic_is_an_error_naming_it() {
    let broker = testkit::require_broker!();
    let producer = Producer::connect(testkit::producer_config(&broker))
        .await
        .unwrap();
    let err = producer
        .send(ProducerRecord::new("no-such-topic-xyz").value("v"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-topic-xyz"), "{err}");
}

#[test]
fn producer_config_accepts_kafka_property_names() {
    let cfg = ProducerConfig::builder()
        .set("bootstrap.servers", "127.0.0.1:9092")
        .unwrap()
        .set("acks", "all")
        .unwrap()
        .set("linger.ms", "20")
        .unwrap()
        .set("compression.type", "zstd")
        .unwrap()
        .set("client.id", "x")
        .unwrap()
        .build()
        .unwrap();
    assert!(cfg.idempotent);
    assert_eq!(cfg.compression, Compression::Zstd);
    assert!(ProducerConfig::builder().set("lingr.ms", "1").is_err());
    let err = ProducerConfig::builder()
        .set("bootstrap.servers", "h:1")
        .unwrap()
        .set("acks", "1")
        .unwrap()
        .set("enable.idempotence", "true")
        .unwrap()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("acks=all"), "{err}");
}

#[tokio::test]
async fn pipelined_batches_keep_send_order_under_load() {
    // Small batches and many partitions put several requests in flight per
    // broker at once; offsets must still follow send order in every partition.
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = testkit::create_topic(&client, "pipelined", 12).await;
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .batch_size(1024)
            .linger(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let mut deliveries = Vec::new();
    for i in 0..60_000u32 {
        let rec = ProducerRecord::new(&t)
            .key(format!("key-{}", i % 1000))
            .value(vec![b'x'; 50]);
        deliveries.push(producer.send(rec).await.unwrap());
    }
    let mut next = [0i64; 12];
    for d in deliveries {
        let md = d.await.unwrap();
        assert_eq!(
            md.offset, next[md.partition as usize],
            "partition {} out of send order",
            md.partition
        );
        next[md.partition as usize] += 1;
    }
    assert_eq!(next.iter().sum::<i64>(), 60_000);
}

#[tokio::test]
async fn try_send_hands_the_record_back_when_buffer_memory_is_full() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = testkit::create_topic(&client, "buffer-full", 1).await;
    // One 2 KiB buffer, one open batch that never fills or lingers out.
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .buffer_memory(2048)
            .batch_size(2048)
            .linger(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    let record = |i: u8| ProducerRecord::new(&t).partition(0).value(vec![i; 500]);
    let mut accepted = Vec::new();
    for i in 0..3 {
        accepted.push(producer.try_send(record(i)).await.unwrap());
    }
    match producer.try_send(record(9)).await {
        Err(kafka_wire::TrySendError::BufferFull(back)) => assert_eq!(back, record(9)),
        other => panic!("expected BufferFull, got {other:?}"),
    }
    producer.flush().await.unwrap();
    for d in accepted {
        d.await.unwrap();
    }
    // Memory came back with the acknowledgements.
    let last = producer.try_send(record(9)).await.unwrap();
    producer.flush().await.unwrap();
    last.await.unwrap();
}

// ---- A broker-side size limit (the topic's max.message.bytes) ----

/// A one-partition topic whose broker accepts batches of at most 64 KiB.
async fn small_max_topic(client: &Client, prefix: &str) -> String {
    let topic = NewTopic::new(testkit::unique_name(prefix), 1).config("max.message.bytes", "65536");
    testkit::create_topic_with(client, topic).await
}

/// A value of `len` bytes that starts with `n` (big-endian), so read-back
/// can tell records apart.
fn numbered(n: u32, len: usize) -> Vec<u8> {
    let mut v = vec![b'x'; len.max(4)];
    v[..4].copy_from_slice(&n.to_be_bytes());
    v
}

fn number_of(r: &kafka_wire::records::Record) -> u32 {
    u32::from_be_bytes(r.value.as_ref().unwrap()[..4].try_into().unwrap())
}

#[tokio::test]
async fn a_batch_larger_than_the_topic_accepts_is_split_until_every_record_fits() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = small_max_topic(&client, "split").await;
    // One linger window gathers all 200 records (≈ 200 KB) into one batch.
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .batch_size(1 << 20)
            .linger(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let mut deliveries = Vec::new();
    for i in 0..200u32 {
        let rec = ProducerRecord::new(&t)
            .partition(0)
            .value(numbered(i, 1000));
        deliveries.push(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();
    for (i, d) in deliveries.into_iter().enumerate() {
        let md = d.await.unwrap_or_else(|e| panic!("record #{i}: {e}"));
        assert_eq!(md.offset, i as i64, "send order");
    }
    let got: Vec<u32> = common::fetch_all(&client, &t, 0, 200)
        .await
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(got, (0..200).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(admin_end_offset(&client, &t, 0).await, 200, "no duplicates");
    let batches: Vec<usize> = BatchReader::new(common::fetch_raw(&client, &t, 0).await)
        .map(|b| b.unwrap().records(1 << 20).unwrap().count())
        .collect();
    assert!(
        batches.len() > 1 && batches.len() <= 8,
        "split in halves, not one batch per record: {batches:?}"
    );
    producer.close().await;
}

/// Send records `range` (1000 bytes each) to partition 0 of `t`, and a
/// 100 KB record numbered `u32::MAX` just before record `big_before`.
async fn send_with_one_big(
    producer: &Producer,
    t: &str,
    range: std::ops::Range<u32>,
    big_before: u32,
) -> Vec<(u32, kafka_wire::DeliveryFuture)> {
    let mut out = Vec::new();
    for i in range {
        if i == big_before {
            let rec = ProducerRecord::new(t)
                .partition(0)
                .value(numbered(u32::MAX, 100_000));
            out.push((u32::MAX, producer.send(rec).await.unwrap()));
        }
        let rec = ProducerRecord::new(t).partition(0).value(numbered(i, 1000));
        out.push((i, producer.send(rec).await.unwrap()));
    }
    producer.flush().await.unwrap();
    out
}

#[tokio::test]
async fn only_a_record_larger_than_the_topic_accepts_fails_and_the_others_are_delivered() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = small_max_topic(&client, "too-large").await;
    // Round 1: the big record shares one linger batch with 100 small ones,
    // so it is split down to a batch of its own.
    let one_batch = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .batch_size(1 << 20)
            .linger(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let mut deliveries = send_with_one_big(&one_batch, &t, 0..100, 50).await;
    // Round 2 (another producer id): batches of 16 small records pipelined
    // around the big record's own batch, so later batches are in flight
    // when it fails and must be renumbered over its sequence.
    let pipelined = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .batch_size(16_384)
            .linger(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    deliveries.extend(send_with_one_big(&pipelined, &t, 100..300, 150).await);

    let mut delivered = Vec::new();
    let mut failures = 0;
    for (n, d) in deliveries {
        match d.await {
            Ok(md) => delivered.push((n, md.offset)),
            Err(e) => {
                assert_eq!(n, u32::MAX, "only the big record fails, not #{n}: {e}");
                failures += 1;
                assert!(
                    matches!(
                        &e,
                        kafka_wire::Error::RecordTooLargeForBroker { topic, partition: 0, size, .. }
                            if *topic == t && *size > 100_000
                    ),
                    "{e:?}"
                );
                let msg = e.to_string();
                assert!(msg.contains(&format!("{t}-0")), "{msg}");
                assert!(msg.contains("max.message.bytes"), "{msg}");
                assert!(!e.is_retriable());
            }
        }
    }
    assert_eq!(failures, 2, "the big record of each round");
    let numbers: Vec<u32> = delivered.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..300).collect::<Vec<_>>());
    let offsets: Vec<i64> = delivered.iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, (0..300).collect::<Vec<i64>>(), "send order");

    // Both producers still work: no fatal error, no sequence gap.
    for p in [&one_batch, &pipelined] {
        let d = p
            .send(
                ProducerRecord::new(&t)
                    .partition(0)
                    .value(numbered(1000, 10)),
            )
            .await
            .unwrap();
        p.flush().await.unwrap();
        d.await.expect("a send after the failure succeeds");
    }
    let got: Vec<u32> = common::fetch_all(&client, &t, 0, 302)
        .await
        .iter()
        .map(number_of)
        .collect();
    let mut want: Vec<u32> = (0..300).collect();
    want.extend([1000, 1000]);
    assert_eq!(got, want, "each small record once, in order");
    assert_eq!(admin_end_offset(&client, &t, 0).await, 302, "no duplicates");
    one_batch.close().await;
    pipelined.close().await;
}

/// The bulk idiom: `send(..).await?` per record without keeping its
/// delivery future, then one `flush`. A record too large for the topic
/// comes back from `flush` (the record itself, with its error) while every
/// other record is delivered, in order; a failure whose future is kept and
/// read is reported there and not again by `flush`; and each failure is
/// reported once.
#[tokio::test]
async fn flush_hands_back_the_record_too_large_for_the_topic_and_the_rest_are_delivered() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let t = kafka_wire::Topic::new(small_max_topic(&client, "flush-reports").await);
    let producer = Producer::with_client(
        client.clone(),
        testkit::producer_builder(&broker)
            .batch_size(16_384)
            .linger(Duration::from_millis(1))
            .build()
            .unwrap(),
    );
    let big = |n: u32| {
        ProducerRecord::new(&t)
            .partition(0)
            .value(numbered(n, 100_000))
    };
    let mut kept = None;
    for i in 0..200u32 {
        if i == 50 {
            producer.send(big(u32::MAX)).await.unwrap(); // future dropped
        }
        if i == 150 {
            kept = Some(producer.send(big(u32::MAX - 1)).await.unwrap());
        }
        let rec = ProducerRecord::new(&t)
            .partition(0)
            .value(numbered(i, 1000));
        producer.send(rec).await.unwrap();
    }
    let undelivered = producer
        .flush()
        .await
        .expect_err("the big record whose future was dropped");
    assert_eq!(undelivered.len(), 1, "{undelivered}");
    assert!(undelivered.not_kept.is_none());
    let failed = &undelivered.records[0];
    assert_eq!(failed.number, 50, "the 51st record this producer queued");
    assert_eq!(failed.record.topic, t);
    assert_eq!(failed.record.partition, Some(0));
    assert_eq!(
        failed.record.value.as_deref(),
        Some(&numbered(u32::MAX, 100_000)[..]),
        "the record itself comes back"
    );
    assert!(
        matches!(
            &failed.error,
            kafka_wire::Error::RecordTooLargeForBroker { topic, partition: 0, .. } if *topic == *t
        ),
        "{:?}",
        failed.error
    );
    assert!(undelivered
        .to_string()
        .starts_with("1 record(s) not delivered; the first: "));
    // The kept future reports its own failure, and flush did not.
    assert!(matches!(
        kept.unwrap().await,
        Err(kafka_wire::Error::RecordTooLargeForBroker { .. })
    ));
    producer
        .flush()
        .await
        .expect("each failure is reported once");

    let got: Vec<u32> = common::fetch_all(&client, &t, 0, 200)
        .await
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "the rest, each once, in order"
    );
    assert_eq!(admin_end_offset(&client, &t, 0).await, 200, "no duplicates");

    // The record handed back can be sent again as it is (here to a topic
    // that takes it).
    let roomy = testkit::create_topic(&client, "flush-resend", 1).await;
    let mut again = failed.record.clone();
    again.topic = kafka_wire::Topic::new(&roomy);
    let md = producer.send(again).await.unwrap().await.unwrap();
    assert_eq!((md.partition, md.offset), (0, 0));
    producer.close().await;
}

/// A record that cannot reach its broker (every connection is cut, and
/// every new one refused) fails with `DeliveryTimeout` once
/// `delivery.timeout.ms` has passed since `send`, not sooner and not
/// never, and gives its `buffer.memory` back: once the broker is
/// reachable again, a record as large as the whole buffer is accepted.
#[tokio::test]
async fn an_undeliverable_record_fails_with_delivery_timeout_and_frees_its_memory() {
    let broker = testkit::require_broker!();
    let admin = testkit::client(&broker).await;
    let t = testkit::create_topic(&admin, "delivery-timeout", 1).await;
    let switch = Arc::new(KillSwitch::default());
    let cfg = switch
        .producer(&broker, Duration::from_millis(500))
        .buffer_memory(4096)
        .batch_size(4096)
        .delivery_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let producer = Producer::connect(cfg).await.unwrap();
    let record = |len: usize| ProducerRecord::new(&t).partition(0).value(vec![1u8; len]);
    producer.send(record(10)).await.unwrap().await.unwrap();

    switch.refuse.store(true, Ordering::Relaxed);
    switch.generation.fetch_add(1, Ordering::Relaxed);
    let sent_at = std::time::Instant::now();
    let undeliverable = producer.send(record(2000)).await.unwrap();
    match undeliverable.await {
        Err(kafka_wire::Error::DeliveryTimeout {
            topic,
            partition,
            timeout_ms,
            ..
        }) => assert_eq!(
            (topic.as_str(), partition, timeout_ms),
            (t.as_str(), 0, 1500)
        ),
        other => panic!("expected DeliveryTimeout, got {other:?}"),
    }
    let waited = sent_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "failed after {waited:?}"
    );

    switch.refuse.store(false, Ordering::Relaxed);
    // The whole buffer is free again: a record of almost 4 KiB fits.
    let big = producer
        .try_send(record(4000))
        .await
        .expect("buffer.memory came back");
    big.await.expect("delivered once the broker is reachable");
}

/// `send` is called once per record and its future is built and moved on
/// every call: the path that waits (metadata, AddPartitionsToTxn, buffer
/// memory) is boxed, so the common path stays a few hundred bytes (it was
/// 3,320 bytes, copied per record, when that state was inline).
#[tokio::test]
async fn the_send_futures_stay_small() {
    let broker = testkit::require_broker!();
    let client = testkit::client(&broker).await;
    let producer =
        Producer::with_client(client, testkit::producer_builder(&broker).build().unwrap());
    let send = producer.send(ProducerRecord::new("any").value("v"));
    assert!(
        std::mem::size_of_val(&send) <= 512,
        "send's future is {} bytes",
        std::mem::size_of_val(&send)
    );
    let try_send = producer.try_send(ProducerRecord::new("any").value("v"));
    assert!(
        std::mem::size_of_val(&try_send) <= 512,
        "try_send's future is {} bytes",
        std::mem::size_of_val(&try_send)
    );
}

/// Issue 29, case 7a: a long-lived producer that cached a topic's
/// partition count sends to a partition added since (explicit partition).
/// It refreshes metadata and waits for it (up to `max.block.ms`, as
/// Java's producer), then delivers there at offset 0; a partition that
/// never appears fails after `max.block.ms`, saying so.
#[tokio::test]
async fn a_record_for_a_partition_added_since_the_count_was_cached_waits_for_it_and_lands() {
    let broker = testkit::require_broker!();
    let admin = testkit::client(&broker).await;
    let t = testkit::create_topic(&admin, "grown", 2).await;
    // Its own client: its metadata knows 2 partitions until it asks again.
    let producer = Producer::connect(
        testkit::producer_builder(&broker)
            .set("max.block.ms", "3000")
            .unwrap()
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let first = producer
        .send(ProducerRecord::new(&t).partition(0).value("a"))
        .await;
    first.unwrap().await.unwrap();
    admin.create_partitions(&t, 3).await.unwrap();
    let md = producer
        .send(ProducerRecord::new(&t).partition(2).value("b"))
        .await
        .expect("waits for partition 2 to appear")
        .await
        .unwrap();
    assert_eq!((md.partition, md.offset), (2, 0));

    let started = std::time::Instant::now();
    let err = producer
        .send(ProducerRecord::new(&t).partition(7).value("c"))
        .await
        .expect_err("partition 7 never appears");
    let text = err.to_string();
    assert!(
        text.contains("max.block.ms") && text.contains(&format!("{t}-7")),
        "{text}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "waited max.block.ms"
    );
    producer.close().await;
}
