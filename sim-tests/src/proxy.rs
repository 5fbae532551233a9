//! The fault proxy: a [`Connector`] that wraps every broker connection a
//! client opens (brokers advertise their own addresses, so proxying only
//! the bootstrap port would miss most traffic). Per connection it can add
//! latency and jitter to writes, black-hole traffic (the connection hangs),
//! reset it, close it after N bytes, and, because it follows the request
//! frames the client writes, reset a connection right after a given request
//! (say, OffsetCommit) was sent and before its response arrives.
//!
//! Random choices come from one seeded generator: a run with the same seed
//! and the same traffic makes the same choices.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kafka_wire::connector::{BoxTransport, BrokerAddress, ConnectFuture, Connector, TcpConnector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the proxy does to connections now. Change it any time with
/// [`FaultProxy::set`]; live connections follow the new rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Delay each write by this much, plus up to `jitter`.
    pub latency: Duration,
    pub jitter: Duration,
    /// Connections hang: reads never complete, writes vanish.
    pub black_hole: bool,
    /// Close a connection after it carried this many bytes (both ways).
    pub close_after_bytes: Option<u64>,
    /// Reset a connection right after a complete request with this API key
    /// was written (before its response is read), with this probability.
    pub reset_after_request: Option<(i16, f64)>,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub dials: AtomicU64,
    pub resets: AtomicU64,
    pub requests_cut: AtomicU64,
}

/// See the module docs. A cheap handle: clone it freely; give
/// [`FaultProxy::connector`] to `ClientConfigBuilder::connector`.
#[derive(Debug, Clone)]
pub struct FaultProxy(Arc<ProxyState>);

impl std::ops::Deref for FaultProxy {
    type Target = ProxyState;
    fn deref(&self) -> &ProxyState {
        &self.0
    }
}

/// The proxy's shared state.
#[derive(Debug)]
pub struct ProxyState {
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    /// Bumped by [`FaultProxy::reset_all`]: older connections die.
    generation: AtomicU64,
    pub stats: ProxyStats,
}

impl FaultProxy {
    pub fn new(seed: u64) -> FaultProxy {
        FaultProxy(Arc::new(ProxyState {
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            generation: AtomicU64::new(0),
            stats: ProxyStats::default(),
        }))
    }

    /// The connector to configure clients with.
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(self.clone())
    }
}

impl ProxyState {
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().expect("faults lock").clone()
    }

    /// Reset every connection open now (new ones are fine).
    pub fn reset_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
    }

    /// A uniform draw in [0, 1) from the seeded generator.
    pub fn draw(&self) -> f64 {
        self.rng.lock().expect("rng lock").random::<f64>()
    }

    fn write_delay(&self) -> Duration {
        let f = self.faults();
        if f.jitter.is_zero() {
            f.latency
        } else {
            f.latency + f.jitter.mul_f64(self.draw())
        }
    }
}

impl Connector for FaultProxy {
    fn connect<'a>(&'a self, addr: &'a BrokerAddress, timeout: Duration) -> ConnectFuture<'a> {
        Box::pin(async move {
            self.stats.dials.fetch_add(1, Ordering::Relaxed);
            if self.faults().black_hole {
                tokio::time::sleep(timeout).await;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "black-holed by the fault proxy",
                ));
            }
            let inner = TcpConnector.connect(addr, timeout).await?;
            let s: BoxTransport = Box::new(FaultStream {
                inner,
                proxy: self.clone(),
                born: self.generation.load(Ordering::SeqCst),
                carried: 0,
                cut: false,
                scan: FrameScan::default(),
                delay: None,
            });
            Ok(s)
        })
    }
}

/// Follows the request frames in the client's byte stream: a 4-byte
/// length, then the body, whose first two bytes are the API key.
#[derive(Debug, Default)]
struct FrameScan {
    header: Vec<u8>,
    remaining: u64,
    api_key: Option<i16>,
}

impl FrameScan {
    /// Feed written bytes; returns the API keys of frames completed.
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<i16> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            if self.remaining == 0 {
                // Reading the length prefix and the API key (6 bytes).
                let need = 6 - self.header.len();
                let take = need.min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() == 6 {
                    let len = i32::from_be_bytes(self.header[..4].try_into().expect("4 bytes"));
                    self.api_key = Some(i16::from_be_bytes([self.header[4], self.header[5]]));
                    self.remaining = u64::try_from(len).unwrap_or(0).saturating_sub(2);
                    self.header.clear();
                    if self.remaining == 0 {
                        done.extend(self.api_key.take());
                    }
                }
            } else {
                let take = (self.remaining as usize).min(bytes.len());
                self.remaining -= take as u64;
                bytes = &bytes[take..];
                if self.remaining == 0 {
                    done.extend(self.api_key.take());
                }
            }
        }
        done
    }
}

struct FaultStream {
    inner: BoxTransport,
    proxy: FaultProxy,
    born: u64,
    carried: u64,
    /// Reset after a request: reads fail from now on.
    cut: bool,
    scan: FrameScan,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
}

fn reset(why: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        format!("fault proxy: {why}"),
    )
}

impl FaultStream {
    fn check(&self) -> std::io::Result<()> {
        if self.cut {
            return Err(reset("reset after the request was sent"));
        }
        if self.proxy.generation.load(Ordering::SeqCst) != self.born {
            return Err(reset("connection reset"));
        }
        if let Some(limit) = self.proxy.faults().close_after_bytes {
            if self.carried >= limit {
                return Err(reset("closed after its byte budget"));
            }
        }
        Ok(())
    }
}

impl AsyncRead for FaultStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check()?;
        if self.proxy.faults().black_hole {
            return Poll::Pending; // hangs until the client's own timeout
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.carried += n as u64;
        r
    }
}

impl AsyncWrite for FaultStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.check()?;
        if self.proxy.faults().black_hole {
            return Poll::Ready(Ok(buf.len())); // swallowed
        }
        if self.delay.is_none() {
            let d = self.proxy.write_delay();
            if !d.is_zero() {
                self.delay = Some(Box::pin(tokio::time::sleep(d)));
            }
        }
        if let Some(sleep) = self.delay.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            let n = *n;
            self.delay = None;
            self.carried += n as u64;
            let written = buf[..n].to_vec();
            let completed = self.scan.feed(&written);
            if let Some((key, p)) = self.proxy.faults().reset_after_request {
                for k in completed {
                    if k == key && self.proxy.draw() < p {
                        self.cut = true;
                        self.proxy
                            .stats
                            .requests_cut
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_scan_finds_request_boundaries_across_splits() {
        // Two frames: OffsetCommit (8) with 4 body bytes after the key, Fetch (1) with 0.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&6i32.to_be_bytes());
        bytes.extend_from_slice(&8i16.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&2i32.to_be_bytes());
        bytes.extend_from_slice(&1i16.to_be_bytes());
        for split in 0..bytes.len() {
            let mut s = FrameScan::default();
            let mut keys = s.feed(&bytes[..split]);
            keys.extend(s.feed(&bytes[split..]));
            assert_eq!(keys, [8, 1], "split at {split}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let (a, b) = (FaultProxy::new(7), FaultProxy::new(7));
        let xs: Vec<f64> = (0..5).map(|_| a.draw()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.draw()).collect();
        assert_eq!(xs, ys);
    }
}
