//! A dropped `Producer` closes itself: when its last clone goes, the
//! sender task flushes what is queued (bounded: 30 s, or
//! `delivery.timeout.ms` if shorter), then stops, and the connections of
//! the client it made close. Before, the sender task held the producer's
//! state and its client forever, waiting for records that could never
//! come.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kafka_wire::{
    BoxTransport, BrokerAddress, ConnectFuture, Connector, Producer, ProducerRecord, TcpConnector,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP transport that counts itself live until it is dropped.
struct Counted {
    inner: BoxTransport,
    live: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Plain TCP, counting the connections open.
#[derive(Debug)]
struct Counting(Arc<AtomicUsize>);

impl Connector for Counting {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            let inner = TcpConnector.connect(addr, timeout).await?;
            self.0.fetch_add(1, Ordering::SeqCst);
            let s: BoxTransport = Box::new(Counted {
                inner,
                live: self.0.clone(),
            });
            Ok(s)
        })
    }
}

#[tokio::test]
async fn dropping_the_last_producer_clone_flushes_then_closes_its_connections() {
    let broker = testkit::require_broker!();
    let admin = testkit::client(&broker).await;
    let topic = testkit::create_topic(&admin, "producer-drop", 1).await;
    let live = Arc::new(AtomicUsize::new(0));
    let cfg = testkit::producer_builder(&broker)
        .client(|c| c.connector(Arc::new(Counting(live.clone()))))
        .set("linger.ms", "200")
        .unwrap()
        .build()
        .unwrap();
    let producer = Producer::connect(cfg).await.unwrap();
    let clone = producer.clone();

    // Dropping one clone closes nothing: the other still delivers.
    drop(producer);
    let first = clone
        .send(ProducerRecord::new(topic.as_str()).value("first"))
        .await
        .unwrap();
    first.await.expect("delivered through the remaining clone");
    assert!(live.load(Ordering::SeqCst) > 0);

    // Records queued (lingering) when the last clone goes are still sent.
    let mut queued = Vec::new();
    for i in 0..20 {
        let rec = ProducerRecord::new(topic.as_str()).value(format!("v{i}"));
        queued.push(clone.send(rec).await.unwrap());
    }
    drop(clone);

    // The close is bounded by 30 s; nothing is queued for long here.
    let bound = Duration::from_secs(30);
    let dropped = Instant::now();
    while live.load(Ordering::SeqCst) > 0 {
        assert!(
            dropped.elapsed() < bound,
            "{} connections still open {:?} after the last producer was dropped",
            live.load(Ordering::SeqCst),
            dropped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, d) in queued.into_iter().enumerate() {
        d.await
            .unwrap_or_else(|e| panic!("record {i} queued at the drop: {e}"));
    }
    let end = crate::common::high_watermark(&admin, &topic, 0).await;
    assert_eq!(end, 21, "the first record and the 20 flushed at the drop");
}
