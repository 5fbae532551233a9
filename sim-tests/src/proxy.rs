//! The fault proxy: a [`Connector`] that wraps every broker connection a
//! client opens (brokers advertise their own addresses, so proxying only
//! the bootstrap port would miss most traffic). Per connection it can add
//! latency and jitter to writes, limit bandwidth both ways, refuse new
//! connections (the broker is not up), black-hole traffic (the connection
//! hangs), reset it, and close it after N bytes. Because it follows the
//! request frames the client writes and the response frames that come
//! back (responses arrive in request order on a connection), it can also
//! reset a connection right after a given request (say, OffsetCommit) was
//! sent and before its response arrives, delay every request of one kind
//! (say, Heartbeat), and drop the Nth response of one kind (say, Fetch).
//!
//! Random choices come from one seeded generator: a run with the same seed
//! and the same traffic makes the same choices.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kafka_wire::{BoxTransport, BrokerAddress, ConnectFuture, Connector, TcpConnector};
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
    /// New connections fail at once with "connection refused".
    pub refuse_connections: bool,
    /// Bytes per second, per connection and direction.
    pub bandwidth: Option<u64>,
    /// Hold each request with this API key back this long before sending.
    pub delay_request: Option<(i16, Duration)>,
    /// Swallow the Nth (1-based, counted over all connections) response to
    /// a request with this API key: the client never sees it.
    pub drop_response: Option<(i16, u64)>,
    /// Damage every record batch in this many Fetch responses (counted
    /// over all connections; only responses that carry a batch count):
    /// each batch's CRC no longer matches, as after corruption in transit.
    pub corrupt_fetch_responses: u64,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub dials: AtomicU64,
    pub resets: AtomicU64,
    pub requests_cut: AtomicU64,
    pub refused: AtomicU64,
    pub requests_delayed: AtomicU64,
    pub responses_dropped: AtomicU64,
    /// Responses seen to requests with `drop_response`'s API key.
    pub responses_counted: AtomicU64,
    /// Fetch responses damaged (`corrupt_fetch_responses`).
    pub responses_corrupted: AtomicU64,
    /// Record batches damaged in them.
    pub batches_corrupted: AtomicU64,
}

/// What happens to one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Verdict {
    #[default]
    Pass,
    Drop,
    /// Held whole until it ends, then offered to the corrupting function.
    Hold,
}

const FETCH: i16 = 1;

/// Flip the last byte of every valid record batch in `body` (a Fetch
/// response after its length prefix); how many were hit. A batch is
/// recognised by magic 2, a length that fits, and a CRC-32C that matches,
/// so nothing else is touched.
pub fn corrupt_batches(body: &mut [u8]) -> u64 {
    const HEADER: usize = 61; // a v2 batch with no records
    let be32 = |b: &[u8]| u32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
    let mut hit = 0;
    let mut i = 0;
    while i + HEADER <= body.len() {
        let len = be32(&body[i + 8..]) as usize;
        let end = i + 12 + len;
        let batch = body[i + 16] == 2
            && len >= HEADER - 12
            && end <= body.len()
            && crc32c::crc32c(&body[i + 21..end]) == be32(&body[i + 17..]);
        if batch {
            body[end - 1] ^= 0xff;
            hit += 1;
            i = end;
        } else {
            i += 1;
        }
    }
    hit
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
            if self.faults().refuse_connections {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "refused by the fault proxy (the broker is \"down\")",
                ));
            }
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
                responses: ResponseScan::default(),
                delay: None,
                write_debt: Duration::ZERO,
                read_pause: None,
                ready: Vec::new(),
                scratch: vec![0; 64 * 1024],
            });
            Ok(s)
        })
    }
}

/// Follows the request frames in the client's byte stream: a 4-byte
/// length, then the body, whose first two bytes are the API key.
#[derive(Debug, Default, Clone)]
struct FrameScan {
    header: Vec<u8>,
    remaining: u64,
    api_key: Option<i16>,
}

impl FrameScan {
    /// The API keys of the frames whose header (length and API key) ends
    /// within `bytes`, were they written next. The client batches frames,
    /// so one write may carry several, and a frame may start mid-write.
    fn keys_starting_in(&self, bytes: &[u8]) -> Vec<i16> {
        let mut probe = self.clone();
        let mut started = Vec::new();
        probe.scan(bytes, &mut started);
        started
    }

    /// Feed written bytes; returns the API keys of frames completed.
    fn feed(&mut self, bytes: &[u8]) -> Vec<i16> {
        self.scan(bytes, &mut Vec::new())
    }

    /// [`FrameScan::feed`], also noting in `started` the API key of each
    /// frame whose header ends within `bytes`.
    fn scan(&mut self, mut bytes: &[u8], started: &mut Vec<i16>) -> Vec<i16> {
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
                    let key = i16::from_be_bytes([self.header[4], self.header[5]]);
                    started.push(key);
                    self.api_key = Some(key);
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

/// Follows the response frames coming back (a 4-byte length, then the
/// body), pairing each with the API key of the oldest unanswered request,
/// and filters out the bytes of responses chosen to be dropped.
#[derive(Debug, Default)]
struct ResponseScan {
    /// API keys of requests sent and not yet answered, oldest first.
    pending: std::collections::VecDeque<i16>,
    header: Vec<u8>,
    remaining: u64,
    verdict: Verdict,
    /// The body of a held response so far.
    held: Vec<u8>,
}

impl ResponseScan {
    /// The bytes of `input` to pass on. `decide(key)` gives, once per
    /// response, the verdict for a response to a request with `key`; a
    /// held response's body goes through `alter` when complete.
    fn filter(
        &mut self,
        mut input: &[u8],
        mut decide: impl FnMut(i16) -> Verdict,
        mut alter: impl FnMut(&mut Vec<u8>),
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        while !input.is_empty() {
            if self.remaining == 0 {
                let take = (4 - self.header.len()).min(input.len());
                self.header.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.header.len() == 4 {
                    let len = i32::from_be_bytes(self.header[..4].try_into().expect("4 bytes"));
                    self.remaining = u64::try_from(len).unwrap_or(0);
                    let key = self.pending.pop_front();
                    self.verdict = key.map_or(Verdict::Pass, &mut decide);
                    if self.verdict != Verdict::Drop {
                        out.extend_from_slice(&self.header);
                    }
                    self.header.clear();
                }
            } else {
                let take = (self.remaining as usize).min(input.len());
                match self.verdict {
                    Verdict::Pass => out.extend_from_slice(&input[..take]),
                    Verdict::Drop => {}
                    Verdict::Hold => self.held.extend_from_slice(&input[..take]),
                }
                self.remaining -= take as u64;
                input = &input[take..];
                if self.remaining == 0 && self.verdict == Verdict::Hold {
                    alter(&mut self.held);
                    out.append(&mut self.held);
                }
            }
        }
        out
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
    responses: ResponseScan,
    delay: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Time owed to the bandwidth limit by bytes already written.
    write_debt: Duration,
    /// Bandwidth limit on reads: no read before this sleep ends.
    read_pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Filtered response bytes not yet handed to the reader.
    ready: Vec<u8>,
    scratch: Vec<u8>,
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
        if let Some(pause) = self.read_pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.read_pause = None;
        }
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                buf.put_slice(&self.ready[..n]);
                self.ready.drain(..n);
                self.carried += n as u64;
                if let Some(rate) = self.proxy.faults().bandwidth {
                    self.read_pause = Some(Box::pin(tokio::time::sleep(per_rate(n, rate))));
                }
                return Poll::Ready(Ok(()));
            }
            let this = &mut *self;
            let mut tmp = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut tmp) {
                Poll::Ready(Ok(())) if tmp.filled().is_empty() => return Poll::Ready(Ok(())), // EOF
                Poll::Ready(Ok(())) => {
                    let faults = this.proxy.faults();
                    let stats = &this.proxy.stats;
                    let decide = |key: i16| {
                        if let Some((k, nth)) = faults.drop_response {
                            if key == k {
                                let seen =
                                    stats.responses_counted.fetch_add(1, Ordering::SeqCst) + 1;
                                if seen == nth {
                                    stats.responses_dropped.fetch_add(1, Ordering::Relaxed);
                                    return Verdict::Drop;
                                }
                            }
                        }
                        let corrupted = stats.responses_corrupted.load(Ordering::SeqCst);
                        if key == FETCH && corrupted < faults.corrupt_fetch_responses {
                            return Verdict::Hold;
                        }
                        Verdict::Pass
                    };
                    let alter = |body: &mut Vec<u8>| {
                        let corrupted = stats.responses_corrupted.load(Ordering::SeqCst);
                        if corrupted >= faults.corrupt_fetch_responses {
                            return;
                        }
                        let hit = corrupt_batches(body);
                        if hit > 0 {
                            stats.responses_corrupted.fetch_add(1, Ordering::SeqCst);
                            stats.batches_corrupted.fetch_add(hit, Ordering::SeqCst);
                        }
                    };
                    this.ready = this.responses.filter(tmp.filled(), decide, alter);
                }
                other => return other,
            }
        }
    }
}

/// How long `n` bytes take at `rate` bytes per second.
fn per_rate(n: usize, rate: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / rate.max(1) as f64)
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
            let mut d = self.proxy.write_delay() + std::mem::take(&mut self.write_debt);
            if let Some((key, by)) = self.proxy.faults().delay_request {
                // Hold the whole write back if a request of that kind starts
                // in it (the client batches frames: it need not be first).
                if self.scan.keys_starting_in(buf).contains(&key) {
                    d += by;
                    self.proxy
                        .stats
                        .requests_delayed
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
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
            if let Some(rate) = self.proxy.faults().bandwidth {
                self.write_debt = per_rate(n, rate);
            }
            let written = buf[..n].to_vec();
            let completed = self.scan.feed(&written);
            self.responses.pending.extend(completed.iter().copied());
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
    fn a_request_is_found_wherever_it_starts_in_a_batched_write() {
        // Fetch (1) first, then OffsetCommit (8): one write carries both.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&2i32.to_be_bytes());
        bytes.extend_from_slice(&1i16.to_be_bytes());
        bytes.extend_from_slice(&6i32.to_be_bytes());
        bytes.extend_from_slice(&8i16.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let s = FrameScan::default();
        assert_eq!(s.keys_starting_in(&bytes), [1, 8]);
        // Split anywhere: the commit is seen in the write where its header
        // ends, and only there; looking does not advance the scan.
        for split in 0..bytes.len() {
            let mut s = FrameScan::default();
            let first = s.keys_starting_in(&bytes[..split]);
            s.feed(&bytes[..split]);
            let second = s.keys_starting_in(&bytes[split..]);
            let commits = [&first, &second].iter().filter(|k| k.contains(&8)).count();
            assert_eq!(commits, 1, "split at {split}: {first:?} then {second:?}");
        }
    }

    #[test]
    fn response_scan_drops_only_the_chosen_response_across_splits() {
        // Three responses (bodies 1, 2, 3 bytes) to requests 1 (Fetch), 12, 1.
        let frame = |body: &[u8]| {
            let mut f = (body.len() as i32).to_be_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let (a, b, c) = (frame(&[1]), frame(&[2, 2]), frame(&[3, 3, 3]));
        let bytes = [a.clone(), b.clone(), c.clone()].concat();
        for split in 0..bytes.len() {
            let mut s = ResponseScan::default();
            s.pending.extend([1, 12, 1]);
            let mut fetches = 0;
            let mut drop_second_fetch = |key: i16| {
                fetches += i32::from(key == 1);
                if key == 1 && fetches == 2 {
                    Verdict::Drop
                } else {
                    Verdict::Pass
                }
            };
            let mut out = s.filter(&bytes[..split], &mut drop_second_fetch, |_| {});
            out.extend(s.filter(&bytes[split..], &mut drop_second_fetch, |_| {}));
            assert_eq!(out, [a.clone(), b.clone()].concat(), "split at {split}");
        }
    }

    #[test]
    fn corruption_hits_a_real_batch_and_breaks_its_crc() {
        use kafka_wire::records::{encode_batch, BatchOptions, BatchReader, NewRecord};
        let mut buf = bytes::BytesMut::from(&[0u8, 2, 0, 0, 0, 7, 2, 2][..]); // decoy bytes
        let rec = NewRecord {
            value: Some(bytes::Bytes::from_static(b"value")),
            ..NewRecord::default()
        };
        let opts = |base| BatchOptions {
            base_offset: base,
            ..BatchOptions::default()
        };
        encode_batch(&mut buf, &opts(0), std::slice::from_ref(&rec));
        let second = buf.len();
        encode_batch(&mut buf, &opts(1), &[rec]);
        let mut body = buf.to_vec();
        assert_eq!(corrupt_batches(&mut body), 2);
        for start in [8, second] {
            let mut reader = BatchReader::new(bytes::Bytes::from(body[start..].to_vec()));
            assert!(
                reader.next().expect("a batch").is_err(),
                "the CRC must fail"
            );
        }
        assert_eq!(corrupt_batches(&mut [0u8; 200]), 0, "no batch, nothing hit");
    }

    #[test]
    fn the_same_seed_draws_the_same_numbers() {
        let (a, b) = (FaultProxy::new(7), FaultProxy::new(7));
        let xs: Vec<f64> = (0..5).map(|_| a.draw()).collect();
        let ys: Vec<f64> = (0..5).map(|_| b.draw()).collect();
        assert_eq!(xs, ys);
    }
}
