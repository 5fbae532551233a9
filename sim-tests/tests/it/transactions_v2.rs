//! Transactions V2 (KIP-890) and the transactional error model (KIP-1050)
//! against the real broker:
//!
//! - a zombie's write: a Produce of a transaction that already committed,
//!   held back by the fault proxy until after the commit, is refused
//!   under V2 (the epoch moved on at the commit) and never joins the next
//!   transaction. Under V1 the broker takes it for the next transaction's
//!   own (same epoch): the hole V2 closes, and the proof the race is real.
//! - TRANSACTION_ABORTABLE, injected into real answers, makes the
//!   exactly-once processor abort and read the batch again, under both
//!   protocols, even when the abort itself is answered with it: it never
//!   stops.
//!
//! On a broker without `transaction.version=2` (Kafka 3.9) the zombie test
//! says so and passes; the other runs under V1 only.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use consumer_core::TopicPartition;
use kafka_wire::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_wire::messages::{
    ApiKey, ProduceRequest, ProduceResponse, ResponseHeader, TopicName, TransactionalId,
};
use kafka_wire::records::{encode_batch, BatchOptions, BatchReader, NewRecord, Record};
use kafka_wire::{
    BoxTransport, BrokerAddress, Client, ClientConfig, ConnectFuture, Connector, Decodable,
    Encodable, KafkaCode, Lane, Producer, ProducerRecord, StrBytes, TcpConnector,
};
use resilience::eos::{TransactionalProcessor, Transformer};
use resilience::HandlerError;
use sim_tests::proxy::{FaultProxy, Faults};
use sim_tests::support::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PRODUCE: i16 = ApiKey::Produce as i16;
const END_TXN: i16 = ApiKey::EndTxn as i16;

/// How long the proxy holds the zombie's Produce back: time enough to
/// commit its transaction and write the next one's first record.
const HOLD: Duration = Duration::from_secs(4);

/// A transactional producer with `id` on `client` (capped at `max_tv`),
/// initialised.
async fn transactional(client: &Client, b: &testkit::BrokerEnv, id: &str, max_tv: i16) -> Producer {
    let cfg = testkit::producer_builder(b)
        .transactional_id(id)
        .max_transaction_version(max_tv)
        .build()
        .expect("config");
    let p = Producer::with_client(client.clone(), cfg);
    p.init_transactions().await.expect("init_transactions");
    p
}

/// The one data batch of `topic`-0 holding `value`, read uncommitted.
async fn batch_of(client: &Client, topic: &str, value: &str) -> kafka_wire::records::RecordBatch {
    for batch in BatchReader::new(fetch(client, topic).await) {
        let batch = batch.expect("a valid batch");
        let records = batch.records(1 << 20).expect("records");
        for r in records {
            if r.expect("a record").value.as_deref() == Some(value.as_bytes()) {
                return batch;
            }
        }
    }
    panic!("no batch holds {value:?}");
}

/// `topic`-0 from offset 0, read uncommitted (markers and aborted data too).
async fn fetch(client: &Client, topic: &str) -> Bytes {
    use kafka_wire::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = kafka_wire::messages::FetchRequest::default()
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let leader = client.leader_for(topic, 0).await.expect("a leader");
    let resp = client
        .send_to(leader, Lane::Fetch, &req, Duration::from_millis(100))
        .await
        .expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.records.clone().unwrap_or_default()
}

/// The zombie: the write a producer of transaction `like` would have sent
/// next (its producer id and epoch, the next sequence), carrying `value`.
fn zombie_produce(
    txn_id: &str,
    topic: &str,
    like: &kafka_wire::records::RecordBatch,
    value: &str,
) -> ProduceRequest {
    let mut records = BytesMut::new();
    encode_batch(
        &mut records,
        &BatchOptions {
            producer_id: like.producer_id,
            producer_epoch: like.producer_epoch,
            base_sequence: like.base_sequence + like.record_count,
            transactional: true,
            ..BatchOptions::default()
        },
        &[NewRecord {
            value: Some(Bytes::from(value.to_string())),
            timestamp: 0,
            ..NewRecord::default()
        }],
    );
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
            txn_id.to_string(),
        ))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.freeze()))])])
}

/// What became of a zombie write under one protocol.
#[derive(Debug)]
struct Zombie {
    /// The broker's answer to it (`None`: accepted).
    answer: Option<KafkaCode>,
    /// What read_committed sees of the partition.
    committed: Vec<String>,
    /// Every data record in the log, aborted or not.
    logged: Vec<String>,
}

/// DESIGN.md invariant 85. A write of transaction 1, held by the proxy
/// past its commit, arrives while transaction 2 (same producer, same
/// partition) is open. Under V2 transaction 2's records carry the epoch
/// the commit bumped to, and the stale write is refused: read_committed
/// sees transaction 1's record and transaction 2's, never the zombie's,
/// and the log does not hold it at all. Under V1 (the contrast that shows
/// the race is real) the broker accepts it: same epoch, and here even the
/// same sequence as transaction 2's own write, so it passes for a retry
/// of it; arriving before that write, it would have been written into
/// transaction 2 instead.
#[tokio::test]
async fn a_zombie_write_held_past_the_commit_is_refused_and_never_joins_the_next_transaction() {
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    let Some(v2) = zombie(&b, &admin, 2).await else {
        eprintln!("the broker does not finalize transaction.version=2: no V2 to test");
        return;
    };
    eprintln!("under V2 the zombie was answered {:?}", v2.answer);
    assert!(
        matches!(
            v2.answer,
            Some(
                KafkaCode::InvalidProducerEpoch
                    | KafkaCode::ProducerFenced
                    | KafkaCode::InvalidTxnState
            )
        ),
        "the zombie was not refused as stale: {v2:?}"
    );
    assert_eq!(v2.committed, ["r1", "r2"], "read_committed");
    assert_eq!(v2.logged, ["r1", "r2"], "the log holds no zombie write");

    let v1 = zombie(&b, &admin, 1).await.expect("V1 is always spoken");
    assert_eq!(v1.answer, None, "under V1 the zombie passes: {v1:?}");
}

/// The zombie race with a producer capped at `max_tv`; `None` when it
/// speaks a lower protocol than that.
async fn zombie(b: &testkit::BrokerEnv, admin: &Client, max_tv: i16) -> Option<Zombie> {
    let txn_id = testkit::unique_name("zombie-txn");
    let p = transactional(admin, b, &txn_id, max_tv).await;
    if p.transaction_version() != Some(max_tv) {
        return None;
    }
    let topic = testkit::create_topic(admin, "zombie", 1).await;

    // Transaction 1 writes r1.
    p.begin_transaction().await.unwrap();
    let r1 = ProducerRecord::new(&topic).partition(0).value("r1");
    p.send(r1).await.unwrap().await.expect("r1 acknowledged");
    let like = batch_of(admin, &topic, "r1").await;

    // Its next write leaves, and the proxy holds it back.
    let proxy = FaultProxy::new(85);
    proxy.set(Faults {
        delay_request: Some((PRODUCE, HOLD)),
        ..Faults::default()
    });
    let zombie_client = Client::connect(
        ClientConfig::builder()
            .bootstrap(&b.bootstrap)
            .unwrap()
            .connector(proxy.connector())
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let leader = zombie_client.leader_for(&topic, 0).await.unwrap();
    let zombie = tokio::spawn({
        let req = zombie_produce(&txn_id, &topic, &like, "zombie");
        async move {
            zombie_client
                .send_to(leader, Lane::Produce, &req, Duration::ZERO)
                .await
        }
    });
    assert!(
        testkit::eventually(Duration::from_secs(10), || proxy
            .stats
            .requests_delayed
            .load(Ordering::Relaxed)
            > 0)
        .await,
        "the zombie's Produce never left"
    );

    // Transaction 1 commits, transaction 2 writes r2: the zombie is
    // still held.
    p.commit_transaction().await.expect("transaction 1 commits");
    p.begin_transaction().await.unwrap();
    let r2 = ProducerRecord::new(&topic).partition(0).value("r2");
    p.send(r2).await.unwrap().await.expect("r2 acknowledged");
    assert!(
        !zombie.is_finished(),
        "the zombie landed before the commit: nothing raced (raise HOLD)"
    );

    // It arrives while transaction 2 is open.
    let resp = zombie
        .await
        .unwrap()
        .expect("the broker answered the zombie");
    let answer = KafkaCode::try_from_code(resp.responses[0].partition_responses[0].error_code);
    p.commit_transaction().await.expect("transaction 2 commits");

    let committed = read_all(b, &topic, 1, 2, true, Duration::from_secs(10))
        .await
        .iter()
        .map(value)
        .collect();
    let mut logged = Vec::new();
    for batch in BatchReader::new(fetch(admin, &topic).await) {
        let batch = batch.unwrap();
        if !batch.is_control() {
            for r in batch.records(1 << 20).unwrap() {
                logged.push(value(&r.unwrap()));
            }
        }
    }
    Some(Zombie {
        answer,
        committed,
        logged,
    })
}

fn value(r: &Record) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

/// What [`Abortable`] has injected so far.
#[derive(Debug, Default)]
struct Injected {
    /// Transactional Produce answers still to turn into
    /// TRANSACTION_ABORTABLE.
    produce_left: u32,
    /// EndTxn answers still to turn: each Produce turned arms one, which
    /// is the abort that follows (the commit is refused before any EndTxn).
    end_txn_left: u32,
    produce: u32,
    end_txn: u32,
}

/// A [`Connector`] that dials as [`TcpConnector`] and answers
/// TRANSACTION_ABORTABLE (120) in place of the broker's answer: to the
/// first `produce` Produce requests, then to the EndTxn after each. The
/// broker did the work (wrote the records, aborted): the client is told
/// otherwise, which a real TRANSACTION_ABORTABLE would also have left it
/// to abort (the records then aborted with the rest), and an abort that
/// is made again finds the transaction aborted already.
#[derive(Debug, Clone)]
struct Abortable(Arc<Mutex<Injected>>);

impl Abortable {
    fn new(produce: u32) -> Self {
        Abortable(Arc::new(Mutex::new(Injected {
            produce_left: produce,
            ..Injected::default()
        })))
    }

    /// (Produce answers, EndTxn answers) turned so far.
    fn injected(&self) -> (u32, u32) {
        let i = self.0.lock().unwrap();
        (i.produce, i.end_txn)
    }

    /// The answer `frame` (length prefix and all) to a request `api` at
    /// `version`, turned if its turn has come.
    fn answer(&self, api: i16, version: i16, frame: Vec<u8>) -> Vec<u8> {
        let mut i = self.0.lock().unwrap();
        match api {
            PRODUCE if i.produce_left > 0 => {
                i.produce_left -= 1;
                i.produce += 1;
                i.end_txn_left += 1;
                rewrite_produce(version, &frame)
            }
            END_TXN if i.end_txn_left > 0 => {
                i.end_txn_left -= 1;
                i.end_txn += 1;
                rewrite_end_txn(version, frame)
            }
            _ => frame,
        }
    }
}

/// Response header v1 (flexible) from these versions on.
fn flexible(api: i16, version: i16) -> bool {
    match api {
        PRODUCE => version >= 9,
        END_TXN => version >= 3,
        _ => unreachable!("only Produce and EndTxn answers are turned"),
    }
}

/// A Produce answer with every partition refused TRANSACTION_ABORTABLE.
fn rewrite_produce(version: i16, frame: &[u8]) -> Vec<u8> {
    let header_version = i16::from(flexible(PRODUCE, version));
    let mut body = Bytes::copy_from_slice(&frame[4..]);
    let header = ResponseHeader::decode(&mut body, header_version).expect("a response header");
    let mut resp = ProduceResponse::decode(&mut body, version).expect("a Produce answer");
    for t in &mut resp.responses {
        for p in &mut t.partition_responses {
            p.error_code = KafkaCode::TransactionAbortable.code();
            p.base_offset = -1;
        }
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    header.encode(&mut out, header_version).unwrap();
    resp.encode(&mut out, version).unwrap();
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out.to_vec()
}

/// An EndTxn answer with error code TRANSACTION_ABORTABLE: the code
/// follows the header and `throttle_time_ms`.
fn rewrite_end_txn(version: i16, mut frame: Vec<u8>) -> Vec<u8> {
    let at = 4 + 4 + usize::from(flexible(END_TXN, version)) + 4;
    frame[at..at + 2].copy_from_slice(&KafkaCode::TransactionAbortable.code().to_be_bytes());
    frame
}

impl Connector for Abortable {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            let inner = TcpConnector.connect(addr, timeout).await?;
            let s: BoxTransport = Box::new(Turned {
                inner,
                plan: self.clone(),
                requests: VecDeque::new(),
                head: Vec::new(),
                remaining: 0,
                incoming: Vec::new(),
                ready: VecDeque::new(),
            });
            Ok(s)
        })
    }
}

/// A connection whose answers go through [`Abortable::answer`], whole.
struct Turned {
    inner: BoxTransport,
    plan: Abortable,
    /// (API key, version) of the requests written and not yet answered.
    requests: VecDeque<(i16, i16)>,
    /// The request header being read: length, API key, version.
    head: Vec<u8>,
    /// Bytes of the current request frame still to pass.
    remaining: usize,
    /// Answer bytes read and not yet a whole frame.
    incoming: Vec<u8>,
    /// Answer bytes for the reader.
    ready: VecDeque<u8>,
}

impl Turned {
    fn written(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (8 - self.head.len()).min(bytes.len());
                self.head.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.head.len() == 8 {
                    let mut h = &self.head[..];
                    let len = h.get_i32();
                    self.requests.push_back((h.get_i16(), h.get_i16()));
                    self.remaining = usize::try_from(len).unwrap_or(0).saturating_sub(4);
                    self.head.clear();
                }
            } else {
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
            }
        }
    }

    /// Move every whole answer from `incoming` to `ready`, turned.
    fn frames(&mut self) {
        while self.incoming.len() >= 4 {
            let len = i32::from_be_bytes(self.incoming[..4].try_into().unwrap());
            let end = 4 + usize::try_from(len).unwrap_or(0);
            if self.incoming.len() < end {
                return;
            }
            let frame: Vec<u8> = self.incoming.drain(..end).collect();
            let frame = match self.requests.pop_front() {
                Some((api, version)) => self.plan.answer(api, version, frame),
                None => frame,
            };
            self.ready.extend(frame);
        }
    }
}

impl AsyncRead for Turned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                let chunk: Vec<u8> = self.ready.drain(..n).collect();
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            let mut scratch = [0u8; 16 * 1024];
            let mut tmp = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut tmp) {
                Poll::Ready(Ok(())) if tmp.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    let got = tmp.filled().to_vec();
                    self.incoming.extend_from_slice(&got);
                    self.frames();
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for Turned {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written(&buf[..n]);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies each input's value to `.0`.
struct Copy(String);

impl Transformer for Copy {
    async fn transform(
        &self,
        _tp: &TopicPartition,
        r: &Record,
    ) -> Result<Vec<ProducerRecord>, HandlerError> {
        Ok(vec![
            ProducerRecord::new(&self.0).value(r.value.clone().unwrap_or_default())
        ])
    }
}

/// KIP-1050: TRANSACTION_ABORTABLE is abortable, not fatal. The first
/// transaction's write is answered with it, and so is the abort that
/// follows (which the broker did carry out): the processor aborts again,
/// reads the batch again, and every input's output is read_committed
/// exactly once. Before, the refused abort read as fencing and the
/// service stopped. Under V2 the abort made again is the one whose epoch
/// the broker already bumped (it answers with the new epoch); under V1
/// the epoch never moves.
#[tokio::test]
async fn transaction_abortable_makes_the_exactly_once_processor_abort_and_retry_never_stop() {
    const N: u32 = 60;
    let b = testkit::require_broker!();
    let admin = testkit::client(&b).await;
    for max_tv in [2, 1] {
        let input =
            testkit::numbered_topic(&b, &admin, "abortable-in", 1, N, |i| format!("k{i}")).await;
        let out = testkit::create_topic(&admin, "abortable-out", 1).await;
        let group = testkit::unique_name("abortable");
        let injector = Abortable::new(1);
        let mut producer = testkit::producer_builder(&b)
            .transactional_id(testkit::unique_name("abortable-txn"))
            .max_transaction_version(max_tv)
            .build()
            .unwrap();
        producer.client.connector = Arc::new(injector.clone());
        let mut consumer = group_consumer(&b, &group);
        consumer.max_poll_records = 20; // several transactions
        let p = TransactionalProcessor::new(consumer, producer, &[&input]);
        let stats = p.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(p.run(Copy(out.clone()), async move {
            let _ = stopped.await;
        }));

        let outputs = read_all(&b, &out, 1, N as usize, true, Duration::from_secs(60)).await;
        assert!(
            !run.is_finished(),
            "cap {max_tv}: the processor stopped: {:?}",
            run.await
        );
        let _ = stop.send(());
        let end = Instant::now() + Duration::from_secs(30);
        let result = tokio::time::timeout_at(end.into(), run).await;
        result.expect("stops").unwrap().expect("ends cleanly");

        assert_eq!(
            injector.injected(),
            (1, 1),
            "cap {max_tv}: one write and one abort turned"
        );
        assert!(stats.aborted.load(Ordering::Relaxed) >= 1, "cap {max_tv}");
        let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
        for r in &outputs {
            *counts.entry(number(r)).or_default() += 1;
        }
        assert_eq!(
            counts.len(),
            N as usize,
            "cap {max_tv}: every input's output"
        );
        assert!(
            counts.values().all(|c| *c == 1),
            "cap {max_tv}: outputs read_committed twice: {counts:?}"
        );
    }
}
