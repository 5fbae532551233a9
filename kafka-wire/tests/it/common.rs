//! Raw fetches for kafka-wire's integration tests (clients, topics and
//! producers come from `testkit`).

use std::time::Duration;

use kafka_wire::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_wire::messages::{FetchRequest, TopicName};
use kafka_wire::records::{BatchReader, Record};
use kafka_wire::{Client, Lane, StrBytes};

/// Fetch `topic`-`partition` from offset 0 until `until`, decoding every batch.
pub async fn fetch_all(client: &Client, topic: &str, partition: i32, until: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < until {
        let (records, _) = fetch_once(client, topic, partition, offset).await;
        for batch in BatchReader::new(records) {
            let batch = batch.unwrap();
            for r in batch.records(64 << 20).unwrap() {
                let r = r.unwrap();
                if r.offset >= offset {
                    out.push(r);
                }
            }
            offset = batch.next_offset();
        }
    }
    out
}

/// The raw records bytes of one fetch from offset 0 (up to 1 MiB).
pub async fn fetch_raw(client: &Client, topic: &str, partition: i32) -> bytes::Bytes {
    let (records, _) = fetch_once(client, topic, partition, 0).await;
    records
}

/// The partition's high watermark (its end offset for a read_uncommitted reader).
pub async fn high_watermark(client: &Client, topic: &str, partition: i32) -> i64 {
    let (_, hw) = fetch_once(client, topic, partition, 0).await;
    hw
}

/// One fetch from `offset` (up to 1 MiB): the records bytes and the high watermark.
async fn fetch_once(
    client: &Client,
    topic: &str,
    partition: i32,
    offset: i64,
) -> (bytes::Bytes, i64) {
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let leader = client.leader_for(topic, partition).await.unwrap();
    let resp = client
        .send_to(leader, Lane::Fetch, &req, Duration::from_millis(100))
        .await
        .unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    (p.records.clone().unwrap_or_default(), p.high_watermark)
}

/// A [`Connector`](kafka_wire::Connector) that dials as
/// [`TcpConnector`](kafka_wire::TcpConnector) and notes the API key and
/// version of every request the client writes, in order: which requests
/// a protocol sends, and at which versions.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(std::sync::Arc<std::sync::Mutex<Vec<(i16, i16)>>>);

impl RequestLog {
    /// The versions `api` was sent at, in order.
    pub fn versions(&self, api: kafka_wire::messages::ApiKey) -> Vec<i16> {
        let log = self.0.lock().unwrap();
        log.iter()
            .filter(|(k, _)| *k == api as i16)
            .map(|(_, v)| *v)
            .collect()
    }

    /// A client of `broker` whose every connection is logged here.
    pub async fn client(&self, broker: &testkit::BrokerEnv) -> Client {
        let config = kafka_wire::ClientConfig::builder()
            .bootstrap(&broker.bootstrap)
            .unwrap()
            .connector(std::sync::Arc::new(self.clone()))
            .build()
            .unwrap();
        Client::connect(config).await.unwrap()
    }
}

impl kafka_wire::Connector for RequestLog {
    fn connect<'a>(
        &'a self,
        addr: &'a kafka_wire::BrokerAddress,
        timeout: Duration,
    ) -> kafka_wire::ConnectFuture<'a> {
        Box::pin(async move {
            let inner = kafka_wire::TcpConnector.connect(addr, timeout).await?;
            let logged: kafka_wire::BoxTransport = Box::new(Logged {
                inner,
                log: self.clone(),
                header: Vec::new(),
                remaining: 0,
            });
            Ok(logged)
        })
    }
}

/// A connection whose written request frames are scanned for their
/// header: a 4-byte length, then the API key and version (2 bytes each).
struct Logged {
    inner: kafka_wire::BoxTransport,
    log: RequestLog,
    header: Vec<u8>,
    /// Bytes of the current frame still to pass.
    remaining: usize,
}

impl Logged {
    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (8 - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() == 8 {
                    let h = &self.header;
                    let len = i32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                    let api = i16::from_be_bytes([h[4], h[5]]);
                    let version = i16::from_be_bytes([h[6], h[7]]);
                    self.log.0.lock().unwrap().push((api, version));
                    self.remaining = usize::try_from(len).unwrap_or(0).saturating_sub(4);
                    self.header.clear();
                }
            } else {
                let take = self.remaining.min(bytes.len());
                self.remaining -= take;
                bytes = &bytes[take..];
            }
        }
    }
}

impl tokio::io::AsyncRead for Logged {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Logged {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = r {
            self.scan(&buf[..n]);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
