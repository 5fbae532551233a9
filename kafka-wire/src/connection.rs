//! One broker connection: an owning task plus a cheap, cloneable handle.
//!
//! ```text
//!  caller ──Envelope{frame, reply}──▶ mpsc ──▶ ┌──────────── connection task ───────────┐
//!  caller ◀──────── oneshot reply ──────────── │ assigns correlation ids                │
//!                                              │ writes whole frames (write_buf)        │◀─▶ socket
//!                                              │ reads frames, matches the in-flight    │
//!                                              │ queue in order, checks correlation ids │
//!                                              └────────────────────────────────────────┘
//! ```
//!
//! Why a task owns the socket:
//! - A caller that is cancelled only drops its oneshot receiver. The frame it
//!   queued is written whole or not at all, so a half-written frame cannot
//!   happen.
//! - Reads and writes proceed concurrently inside one `select!`. A broker
//!   mutes a connection while it answers, so a client that blocks in a large
//!   write without reading can deadlock against a large response.
//! - Any framing error, correlation mismatch or timeout *poisons* the
//!   connection: every request in flight fails with a retriable
//!   [`Error::Connection`] that says whether it may have been written, and
//!   the task exits. The owner ([`crate::client`]) dials a fresh one.
//! - A response's `throttle_time_ms` (KIP-219) closes the connection's
//!   [`ThrottleGate`]: the broker has muted it, so the task accepts no
//!   further request until then, and a request's timeout starts only once
//!   the task takes it. Handles note the throttle as they decode (a
//!   cancelled caller's response is never decoded: its throttle goes
//!   unseen, and the broker's own mute is the fallback).
//! - SASL re-authentication (KIP-368): a broker with
//!   `connections.max.reauth.ms` cuts a connection whose session ran out
//!   at its next request. When the re-authentication the SASL layer
//!   scheduled is due, the task takes no new request, lets those in flight
//!   finish, runs the SASL exchange on a handle of its own (the only
//!   requests it takes meanwhile), then resumes with the queued ones: no
//!   request fails because of it.
//!
//! ```text
//!  Open ──due──▶ Draining (no new request) ──in flight empty──▶ Reauthenticating (SASL
//!   ▲                                                            requests only)
//!   └──────────── exchange done: next due = 85-95 % of the new lifetime ──┘
//!                 exchange failed: poisoned (the queued requests fail, retriable)
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::connector::{BoxTransport, BrokerAddress};
use crate::error::{DecodeError, Error, Result};
use crate::frame::FrameDecoder;
use crate::segments::{self, OutFrame, WriteQueue};
use crate::throttle::{ThrottleGate, ThrottleTime};
use crate::versions::ApiVersionTable;

/// Stop accepting new requests while this many bytes wait to be written.
const WRITE_BUFFER_HIGH: usize = 4 * 1024 * 1024;

/// Runs one SASL re-authentication (KIP-368) over the handle it is given,
/// whose requests the task takes while it holds every other back; returns
/// when to re-authenticate next (`None`: never again).
pub(crate) type Reauthenticate = Arc<
    dyn Fn(RawConnection) -> Pin<Box<dyn Future<Output = Result<Option<Instant>>> + Send>>
        + Send
        + Sync,
>;

/// What a handle asks of the task besides requests.
enum Control {
    /// Re-authenticate at `due` with `run`.
    Reauth { due: Instant, run: Reauthenticate },
}

/// A request on its way to the connection task.
struct Envelope {
    /// Length-prefixed frame; bytes 8..12 are the correlation id placeholder.
    frame: OutFrame,
    api: ApiKey,
    response_header_version: i16,
    /// `false` for acks=0 produce: the broker sends nothing back.
    expects_response: bool,
    timeout: Duration,
    reply: oneshot::Sender<Result<Bytes>>,
}

/// A request written (or being written) and awaiting its response.
struct InFlight {
    correlation_id: i32,
    api: ApiKey,
    response_header_version: i16,
    deadline: Instant,
    timeout: Duration,
    /// Stream position of the frame's first byte: if the writer got past it,
    /// the broker may have the request.
    start: u64,
    reply: oneshot::Sender<Result<Bytes>>,
}

/// Static facts about one connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// Broker id, or a negative id for a bootstrap address.
    pub broker_id: i32,
    pub address: BrokerAddress,
    /// The versions negotiated through ApiVersions.
    pub versions: ApiVersionTable,
    pub client_id: String,
}

/// A handle to one broker connection. Cheap to clone; dropping every handle
/// closes the connection once its in-flight requests are answered.
#[derive(Clone)]
pub struct Connection {
    raw: RawConnection,
    info: Arc<ConnectionInfo>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("broker_id", &self.info.broker_id)
            .field("address", &self.info.address)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(raw: RawConnection, info: ConnectionInfo) -> Self {
        Self {
            raw,
            info: Arc::new(info),
        }
    }

    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Has the connection task exited (poisoned or closed)?
    pub fn is_closed(&self) -> bool {
        self.raw.tx.is_closed()
    }

    /// The negotiated version for `api` on this broker.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] when the broker and this client share none.
    pub fn version(&self, api: ApiKey) -> Result<i16> {
        self.info.versions.version(api).ok_or_else(|| {
            let ours = crate::versions::client_range(api)
                .map(|(a, b)| format!("v{a}-v{b}"))
                .unwrap_or_else(|| "none".into());
            let theirs = self
                .info
                .versions
                .broker_range(api)
                .map(|(a, b)| format!("v{a}-v{b}"))
                .unwrap_or_else(|| "none".into());
            Error::UnsupportedVersion {
                api,
                broker: self.info.address.to_string(),
                ours,
                theirs,
            }
        })
    }

    /// The version to send `req` at: the negotiated one, except where a
    /// request's content rules out versions (a Fetch naming a topic with
    /// no id goes at v12 at most: [`crate::versions::request_version`]).
    fn version_for<R: Request + 'static>(&self, api: ApiKey, req: &R) -> Result<i16> {
        let negotiated = self.version(api)?;
        Ok(crate::versions::request_version(api, negotiated, req))
    }

    /// [`Connection::send`] at `ceiling` at most (`None`: as `send`): for a
    /// request whose protocol, not its content, rules out the newest
    /// versions (a TV1 transaction's EndTxn stays at v4, KIP-890:
    /// [`crate::versions::TxnProtocol::ceiling`]).
    pub(crate) async fn send_at_most<R: Request + 'static>(
        &self,
        req: &R,
        ceiling: Option<i16>,
        request_timeout: Duration,
    ) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let api = api_key::<R>();
        let version = at_most(self.version_for(api, req)?, ceiling);
        self.raw.call(req, version, request_timeout).await
    }

    /// [`Connection::start`] at `ceiling` at most (`None`: as `start`): a
    /// TV1 transaction's Produce stays at v11.
    ///
    /// # Cancel safety
    /// As [`Connection::start`].
    pub(crate) async fn start_at_most<R: Request + 'static>(
        &self,
        req: &R,
        ceiling: Option<i16>,
        timeout: Duration,
    ) -> Result<PendingResponse<R>> {
        let api = api_key::<R>();
        let version = at_most(self.version_for(api, req)?, ceiling);
        let rx = self.raw.enqueue(req, version, timeout, true).await?;
        Ok(PendingResponse {
            rx,
            version,
            raw: self.raw.clone(),
            _marker: std::marker::PhantomData,
        })
    }

    /// Send `req` at the negotiated version and wait for its response.
    ///
    /// `extra_timeout` extends the request timeout for long polls (a fetch's
    /// `max.wait.ms`, a join's rebalance timeout).
    ///
    /// # Errors
    /// Connection, timeout, decode or version errors. Error codes inside the
    /// response body are the caller's to check.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future abandons the response only; the
    /// request is written whole or not at all. Whether a cancelled request
    /// reached the broker is unknown.
    pub async fn send<R: Request + 'static>(
        &self,
        req: &R,
        request_timeout: Duration,
        extra_timeout: Duration,
    ) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        self.send_at_most(req, None, request_timeout + extra_timeout)
            .await
    }

    /// Queue `req` on the connection and return once it is queued: requests
    /// queued by successive `start` calls reach the broker in that order.
    /// The returned [`PendingResponse`] resolves to the response. Use it
    /// where order matters across requests (a producer's sequence numbers).
    ///
    /// # Cancel safety
    /// Cancel safe: if cancelled, the request was either queued whole (and
    /// its response is dropped) or not at all.
    pub async fn start<R: Request + 'static>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<PendingResponse<R>> {
        self.start_at_most(req, None, timeout).await
    }

    /// Send `req` without waiting for a response (acks=0 produce).
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Connection::send`].
    pub async fn send_no_response<R: Request + 'static>(
        &self,
        req: &R,
        timeout: Duration,
    ) -> Result<()> {
        let api = api_key::<R>();
        let version = self.version_for(api, req)?;
        self.raw
            .enqueue(req, version, timeout, false)
            .await?
            .await
            .map_err(|_| self.raw.closed_error(true))?
            .map(|_| ())
    }
}

/// A request already queued on a connection; await [`PendingResponse::response`].
pub struct PendingResponse<R: Request> {
    rx: oneshot::Receiver<Result<Bytes>>,
    version: i16,
    raw: RawConnection,
    _marker: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> fmt::Debug for PendingResponse<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingResponse")
            .field("api", &api_key::<R>())
            .field("version", &self.version)
            .finish()
    }
}

impl<R: Request> PendingResponse<R>
where
    R::Response: ThrottleTime,
{
    /// Wait for and decode the response (noting its throttle).
    ///
    /// # Errors
    /// Connection, timeout and decode errors.
    pub async fn response(self) -> Result<R::Response> {
        let body = self.rx.await.map_err(|_| self.raw.closed_error(true))??;
        self.raw.decode::<R>(body, self.version)
    }
}

/// `version`, lowered to `ceiling` if there is one.
fn at_most(version: i16, ceiling: Option<i16>) -> i16 {
    ceiling.map_or(version, |c| version.min(c))
}

pub(crate) fn api_key<R: Request>() -> ApiKey {
    ApiKey::try_from(R::KEY).expect("kafka-protocol request types have known keys")
}

/// The connection before ApiVersions: requests at explicit versions.
#[derive(Clone)]
pub(crate) struct RawConnection {
    tx: mpsc::Sender<Envelope>,
    ctl: mpsc::UnboundedSender<Control>,
    label: Arc<str>,
    client_id: StrBytes,
    throttle: Arc<ThrottleGate>,
}

impl RawConnection {
    /// Start the task that owns `stream`.
    pub(crate) fn spawn(
        stream: BoxTransport,
        label: String,
        client_id: &str,
        max_frame: usize,
        max_in_flight: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(max_in_flight.max(1));
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let label: Arc<str> = label.into();
        let throttle = Arc::new(ThrottleGate::default());
        let raw = Self {
            tx,
            ctl,
            label,
            client_id: StrBytes::from_string(client_id.to_string()),
            throttle,
        };
        tokio::spawn(run_task(
            stream,
            rx,
            ctl_rx,
            raw.reauth_handle_parts(),
            FrameDecoder::new(max_frame),
            max_in_flight.max(1),
        ));
        raw
    }

    /// What the task needs to build its re-authentication handles (never
    /// the request sender: the task must see every handle go).
    fn reauth_handle_parts(&self) -> HandleParts {
        HandleParts {
            ctl: self.ctl.clone(),
            label: self.label.clone(),
            client_id: self.client_id.clone(),
            throttle: self.throttle.clone(),
        }
    }

    /// Re-authenticate at `due` with `run` (KIP-368), replacing any
    /// schedule: see the module docs.
    pub(crate) fn reauthenticate_at(&self, due: Instant, run: Reauthenticate) {
        // The task is gone: nothing to re-authenticate.
        let _ = self.ctl.send(Control::Reauth { due, run });
    }

    /// The broker this connection talks to, as errors name it.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn closed_error(&self, maybe_written: bool) -> Error {
        Error::Connection {
            broker: self.label.to_string(),
            reason: "connection closed".into(),
            maybe_written,
        }
    }

    async fn enqueue<R: Request + 'static>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
        expects_response: bool,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let api = api_key::<R>();
        let frame = encode_request(req, api, version, &self.client_id)?;
        let (reply, rx) = oneshot::channel();
        let env = Envelope {
            frame,
            api,
            response_header_version: R::Response::header_version(version),
            expects_response,
            timeout,
            reply,
        };
        self.tx
            .send(env)
            .await
            .map_err(|_| self.closed_error(false))?;
        Ok(rx)
    }

    /// Send at an explicit `version` and decode the response.
    pub(crate) async fn call<R: Request + 'static>(
        &self,
        req: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let rx = self.enqueue(req, version, timeout, true).await?;
        let body = rx.await.map_err(|_| self.closed_error(true))??;
        self.decode::<R>(body, version)
    }

    /// Decode a response and note its throttle on the connection's gate.
    fn decode<R: Request>(&self, mut body: Bytes, version: i16) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let resp = R::Response::decode(&mut body, version).map_err(|e| Error::Decode {
            context: format!(
                "{:?} v{version} response from {}",
                api_key::<R>(),
                self.label
            ),
            source: DecodeError::Malformed {
                what: "response body",
                reason: e.to_string(),
            },
        })?;
        let throttle = resp.throttle();
        if throttle.is_throttled() {
            tracing::debug!(
                broker = %self.label, api = ?api_key::<R>(), ?throttle,
                "throttled by the broker (quota): holding this connection's next request back"
            );
            self.throttle.note(throttle, Instant::now());
        }
        Ok(resp)
    }
}

/// Encode header and body into one length-prefixed frame with a zero
/// correlation id; the task patches in the real one. A Produce request's
/// record batches stay segments of their own (see [`segments`]).
fn encode_request<R: Request + 'static>(
    req: &R,
    api: ApiKey,
    version: i16,
    client_id: &StrBytes,
) -> Result<OutFrame> {
    let any: &dyn std::any::Any = req;
    if let Some(produce) = any.downcast_ref::<kafka_protocol::messages::ProduceRequest>() {
        if let Some(frame) = segments::produce_frame(produce, version, client_id)? {
            return Ok(frame);
        }
    }
    Ok(OutFrame {
        head: encode_generic(req, api, version, client_id)?,
        tail: Vec::new(),
    })
}

/// Any request as one buffer: kafka-protocol's encoder.
pub(crate) fn encode_generic<R: Request>(
    req: &R,
    api: ApiKey,
    version: i16,
    client_id: &StrBytes,
) -> Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(client_id.clone()));
    let header_version = R::header_version(version);
    let encode_err = |e: anyhow::Error| Error::Encode {
        api,
        reason: e.to_string(),
    };
    let size = header.compute_size(header_version).map_err(encode_err)?
        + req.compute_size(version).map_err(encode_err)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header
        .encode(&mut buf, header_version)
        .map_err(encode_err)?;
    req.encode(&mut buf, version).map_err(encode_err)?;
    Ok(buf)
}

/// A [`RawConnection`] without its request sender.
struct HandleParts {
    ctl: mpsc::UnboundedSender<Control>,
    label: Arc<str>,
    client_id: StrBytes,
    throttle: Arc<ThrottleGate>,
}

impl HandleParts {
    /// A handle whose requests go to `tx`.
    fn handle(&self, tx: mpsc::Sender<Envelope>) -> RawConnection {
        RawConnection {
            tx,
            ctl: self.ctl.clone(),
            label: self.label.clone(),
            client_id: self.client_id.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

/// A re-authentication in progress: its outcome, and how to run the next.
struct Reauthenticating {
    done: oneshot::Receiver<Result<Option<Instant>>>,
    run: Reauthenticate,
}

/// Why the task stopped; turned into the error every waiter receives.
enum Poison {
    Io(std::io::Error),
    Closed,
    Frame(DecodeError),
    Correlation { expected: i32, got: i32 },
    Unexpected(i32),
    Timeout { api: ApiKey, timeout: Duration },
    Reauth(Error),
}

async fn run_task(
    stream: BoxTransport,
    mut rx: mpsc::Receiver<Envelope>,
    mut ctl_rx: mpsc::UnboundedReceiver<Control>,
    parts: HandleParts,
    decoder: FrameDecoder,
    max_in_flight: usize,
) {
    let label = parts.label.clone();
    let throttle = parts.throttle.clone();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    let mut write_buf = WriteQueue::default();
    let mut needs_flush = false;
    let mut written: u64 = 0;
    let mut queued: u64 = 0;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_correlation: i32 = 1;
    let mut handles_gone = false;
    // A request received just as a throttled response was decoded: taken
    // once the gate opens (nothing else is taken meanwhile).
    let mut held: Option<Envelope> = None;
    // KIP-368: the next re-authentication, and the one running. Its SASL
    // requests come through `sasl_rx`, the only ones taken meanwhile.
    let mut reauth: Option<(Instant, Reauthenticate)> = None;
    let mut reauthenticating: Option<Reauthenticating> = None;
    let (sasl_tx, mut sasl_rx) = mpsc::channel::<Envelope>(max_in_flight);

    let poison: Poison = loop {
        if handles_gone
            && held.is_none()
            && in_flight.is_empty()
            && write_buf.is_empty()
            && !needs_flush
        {
            return; // every handle dropped and nothing owed: close quietly
        }
        let throttled_until = throttle.closed_until(Instant::now());
        if throttled_until.is_none() {
            if let Some(env) = held.take() {
                let correlation_id = next_correlation;
                next_correlation = next_correlation.wrapping_add(1).max(1);
                accept(
                    env,
                    correlation_id,
                    &mut queued,
                    &mut write_buf,
                    &mut in_flight,
                );
            }
        }
        let reauth_due = reauth.as_ref().map(|(due, _)| *due);
        let draining =
            reauthenticating.is_some() || reauth_due.is_some_and(|d| Instant::now() >= d);
        if draining && reauthenticating.is_none() && held.is_none() && in_flight.is_empty() {
            // Nothing in flight any more: the SASL exchange, alone.
            let (_, run) = reauth.take().expect("draining without a schedule");
            let handle = parts.handle(sasl_tx.clone());
            let (done_tx, done) = oneshot::channel();
            let exchange = run(handle);
            tokio::spawn(async move {
                let _ = done_tx.send(exchange.await);
            });
            tracing::debug!(broker = %label, "re-authenticating (KIP-368)");
            reauthenticating = Some(Reauthenticating { done, run });
        }
        let front_deadline = in_flight.front().map(|f| f.deadline);
        let room = held.is_none()
            && throttled_until.is_none()
            && in_flight.len() < max_in_flight
            && write_buf.len() < WRITE_BUFFER_HIGH;
        let can_accept = !handles_gone && !draining && room;
        let can_accept_sasl = reauthenticating.is_some() && room;
        tokio::select! {
            read = reader.read_buf(&mut read_buf) => {
                match read {
                    Ok(0) => break Poison::Closed,
                    Ok(_) => {}
                    Err(e) => break Poison::Io(e),
                }
                let mut failure = None;
                loop {
                    let frame = match decoder.decode(&mut read_buf) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => { failure = Some(Poison::Frame(e)); break; }
                    };
                    if let Err(p) = complete(&mut in_flight, frame) {
                        failure = Some(p);
                        break;
                    }
                }
                if let Some(p) = failure { break p; }
            }
            res = async {
                if write_buf.is_empty() {
                    writer.flush().await.map(|_| None)
                } else {
                    // Vectored: a Produce request's batches are segments.
                    let n = writer.write_vectored(&write_buf.slices()).await;
                    if let Ok(n) = n {
                        write_buf.advance(n);
                    }
                    n.map(Some)
                }
            }, if !write_buf.is_empty() || needs_flush => {
                match res {
                    Ok(Some(0)) => break Poison::Io(std::io::ErrorKind::WriteZero.into()),
                    Ok(Some(n)) => { written += n as u64; needs_flush = true; }
                    Ok(None) => needs_flush = false,
                    Err(e) => break Poison::Io(e),
                }
            }
            env = rx.recv(), if can_accept => {
                let Some(env) = env else { handles_gone = true; continue };
                if throttle.closed_until(Instant::now()).is_some() {
                    held = Some(env); // throttled since this turn began
                    continue;
                }
                let correlation_id = next_correlation;
                next_correlation = next_correlation.wrapping_add(1).max(1);
                accept(env, correlation_id, &mut queued, &mut write_buf, &mut in_flight);
            }
            Some(env) = sasl_rx.recv(), if can_accept_sasl => {
                let correlation_id = next_correlation;
                next_correlation = next_correlation.wrapping_add(1).max(1);
                accept(env, correlation_id, &mut queued, &mut write_buf, &mut in_flight);
            }
            Some(Control::Reauth { due, run }) = ctl_rx.recv() => {
                if reauthenticating.is_none() {
                    reauth = Some((due, run));
                }
            }
            done = async {
                match reauthenticating.as_mut() {
                    Some(r) => (&mut r.done).await,
                    None => std::future::pending().await,
                }
            } => {
                let run = reauthenticating.take().expect("a re-authentication ran").run;
                match done {
                    Ok(Ok(next)) => {
                        tracing::debug!(broker = %label, "re-authenticated (KIP-368)");
                        reauth = next.map(|due| (due, run));
                    }
                    Ok(Err(e)) => break Poison::Reauth(e),
                    Err(_) => break Poison::Reauth(Error::Connection {
                        broker: label.to_string(),
                        reason: "the re-authentication was abandoned".into(),
                        maybe_written: false,
                    }),
                }
            }
            // Time to stop taking requests and re-authenticate.
            _ = sleep_until_opt(reauth_due.filter(|_| !draining)) => {}
            // The broker reads requests again.
            _ = sleep_until_opt(throttled_until) => {}
            _ = sleep_until_opt(front_deadline) => {
                let f = in_flight.front().expect("deadline implies a request");
                break Poison::Timeout { api: f.api, timeout: f.timeout };
            }
        }
    };

    // Poisoned: fail everything in flight and everything still queued.
    let reason = match &poison {
        Poison::Io(e) => format!("I/O error: {e}"),
        Poison::Closed => "closed by the broker".to_string(),
        // Another protocol answered: its name is the whole story.
        Poison::Frame(e @ (DecodeError::Tls | DecodeError::Http(_))) => e.to_string(),
        Poison::Frame(e) => format!("bad frame: {e}"),
        Poison::Correlation { expected, got } => {
            format!("correlation id mismatch: expected {expected}, got {got}")
        }
        Poison::Unexpected(id) => format!("response {id} with no request in flight"),
        Poison::Timeout { api, timeout } => {
            format!("{api:?} got no response within {} ms", timeout.as_millis())
        }
        Poison::Reauth(e) => format!("SASL re-authentication failed: {e}"),
    };
    tracing::debug!(broker = %label, %reason, in_flight = in_flight.len(), "connection poisoned");
    for f in in_flight.drain(..) {
        let err = match &poison {
            Poison::Timeout { api, timeout } if f.api == *api => Error::Timeout {
                api: *api,
                broker: label.to_string(),
                timeout_ms: timeout.as_millis() as u64,
            },
            _ => Error::Connection {
                broker: label.to_string(),
                reason: reason.clone(),
                maybe_written: written > f.start,
            },
        };
        let _ = f.reply.send(Err(err));
    }
    rx.close();
    while let Some(env) = held.take().or_else(|| rx.try_recv().ok()) {
        let _ = env.reply.send(Err(Error::Connection {
            broker: label.to_string(),
            reason: reason.clone(),
            maybe_written: false,
        }));
    }
}

/// Take one request: stamp its correlation id, queue its frame for writing
/// and (unless it expects no response) start its timeout.
fn accept(
    mut env: Envelope,
    correlation_id: i32,
    queued: &mut u64,
    write_buf: &mut WriteQueue,
    in_flight: &mut VecDeque<InFlight>,
) {
    env.frame.set_correlation_id(correlation_id);
    let start = *queued;
    *queued += env.frame.len() as u64;
    write_buf.push(env.frame);
    if env.expects_response {
        in_flight.push_back(InFlight {
            correlation_id,
            api: env.api,
            response_header_version: env.response_header_version,
            deadline: Instant::now() + env.timeout,
            timeout: env.timeout,
            start,
            reply: env.reply,
        });
    } else {
        // acks=0: queued in order behind everything before it.
        let _ = env.reply.send(Ok(Bytes::new()));
    }
}

/// Match one response frame to the oldest request in flight.
fn complete(in_flight: &mut VecDeque<InFlight>, mut frame: Bytes) -> Result<(), Poison> {
    if frame.len() < 4 {
        return Err(Poison::Frame(DecodeError::Truncated {
            what: "response header",
            needed: 4 - frame.len(),
        }));
    }
    let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let Some(front) = in_flight.pop_front() else {
        return Err(Poison::Unexpected(got));
    };
    if got != front.correlation_id {
        let expected = front.correlation_id;
        in_flight.push_front(front);
        return Err(Poison::Correlation { expected, got });
    }
    let result = if front.response_header_version >= 1 {
        ResponseHeader::decode(&mut frame, front.response_header_version)
            .map(|_| frame)
            .map_err(|e| Error::Decode {
                context: format!("{:?} response header", front.api),
                source: DecodeError::Malformed {
                    what: "response header",
                    reason: e.to_string(),
                },
            })
    } else {
        frame.advance(4);
        Ok(frame)
    };
    // The caller may have been cancelled; that only drops its receiver.
    let _ = front.reply.send(result);
    Ok(())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
    use tokio::io::duplex;

    /// A scripted peer: reads one request frame, answers with `reply(corr)`.
    async fn peer_once(
        mut io: tokio::io::DuplexStream,
        reply: impl Fn(i32) -> Vec<u8>,
    ) -> tokio::io::DuplexStream {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        io.read_exact(&mut body).await.unwrap();
        let corr = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        io.write_all(&reply(corr)).await.unwrap();
        io
    }

    fn api_versions_response(corr: i32) -> Vec<u8> {
        let resp = ApiVersionsResponse::default();
        let mut body = BytesMut::new();
        body.put_i32(corr);
        resp.encode(&mut body, 0).unwrap();
        let mut out = BytesMut::new();
        crate::frame::encode_frame(&body, &mut out);
        out.to_vec()
    }

    #[tokio::test]
    async fn request_response_round_trip() {
        let (client, server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        let peer = tokio::spawn(peer_once(server, api_versions_response));
        let resp = raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(resp.error_code, 0);
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn correlation_mismatch_poisons_and_fails_in_flight() {
        let (client, server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        let _peer = tokio::spawn(peer_once(server, |corr| api_versions_response(corr + 7)));
        let err = raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(5))
            .await
            .unwrap_err();
        match err {
            Error::Connection {
                reason,
                maybe_written,
                ..
            } => {
                assert!(reason.contains("correlation"), "{reason}");
                assert!(maybe_written);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Poisoned for good: later calls fail fast.
        assert!(raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(5))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn oversized_response_frame_poisons() {
        let (client, server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1024, 4);
        let _peer = tokio::spawn(peer_once(server, |_| {
            let mut v = (1_000_000i32).to_be_bytes().to_vec();
            v.extend_from_slice(&[0; 16]);
            v
        }));
        let err = raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_broker_times_out() {
        let (client, _server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1024, 4);
        let err = raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(err.maybe_written());
    }

    /// An ApiVersions v1 response asking for `throttle_ms` of quiet.
    fn throttled_response(corr: i32, throttle_ms: i32) -> Vec<u8> {
        let resp = ApiVersionsResponse::default().with_throttle_time_ms(throttle_ms);
        let mut body = BytesMut::new();
        body.put_i32(corr);
        resp.encode(&mut body, 1).unwrap();
        let mut out = BytesMut::new();
        crate::frame::encode_frame(&body, &mut out);
        out.to_vec()
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_connection_writes_nothing_until_the_throttle_time_passed() {
        let (client, server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        // The peer answers the first request with a 500 ms throttle, then
        // notes when the second request reaches it.
        let peer = tokio::spawn(async move {
            let s = peer_once(server, |corr| throttled_response(corr, 500)).await;
            let answered = Instant::now();
            let s = peer_once(s, |corr| throttled_response(corr, 0)).await;
            (answered, Instant::now(), s)
        });
        let req = ApiVersionsRequest::default();
        let first = raw.call(&req, 1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.throttle_time_ms, 500);
        // A timeout shorter than the throttle: it runs from the write, so
        // the held request does not time out.
        let second = raw.call(&req, 1, Duration::from_millis(100)).await;
        assert!(second.is_ok(), "{second:?}");
        let (answered, second_arrived, _s) = peer.await.unwrap();
        assert!(
            second_arrived >= answered + Duration::from_millis(500),
            "the second request was written {:?} after the throttled response",
            second_arrived - answered
        );
    }

    /// Read one request frame: its api key and correlation id.
    async fn read_request(io: &mut tokio::io::DuplexStream) -> (i16, i32) {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        io.read_exact(&mut body).await.unwrap();
        (
            i16::from_be_bytes([body[0], body[1]]),
            i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
        )
    }

    fn sasl_handshake_response(corr: i32) -> Vec<u8> {
        let resp = kafka_protocol::messages::SaslHandshakeResponse::default();
        let mut body = BytesMut::new();
        body.put_i32(corr);
        resp.encode(&mut body, 1).unwrap();
        let mut out = BytesMut::new();
        crate::frame::encode_frame(&body, &mut out);
        out.to_vec()
    }

    /// A stand-in SASL exchange (one SaslHandshake), counted; `fail`: it
    /// fails after its request.
    fn stand_in_exchange(runs: Arc<std::sync::atomic::AtomicUsize>, fail: bool) -> Reauthenticate {
        Arc::new(move |h: RawConnection| {
            let runs = runs.clone();
            Box::pin(async move {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let req = kafka_protocol::messages::SaslHandshakeRequest::default();
                h.call(&req, 1, Duration::from_secs(5)).await?;
                if fail {
                    return Err(Error::Auth {
                        mechanism: "PLAIN".into(),
                        broker: "test".into(),
                        reason: "refused".into(),
                    });
                }
                Ok(None)
            })
        })
    }

    const API_VERSIONS: i16 = 18;
    const SASL_HANDSHAKE: i16 = 17;

    /// KIP-368: a re-authentication that falls due while a request is in
    /// flight waits for its answer; a request queued meanwhile is written
    /// only after the SASL exchange; both requests succeed.
    #[tokio::test(start_paused = true)]
    async fn a_due_reauthentication_lets_the_request_in_flight_finish_and_holds_new_ones_back() {
        let (client, mut server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let req = ApiVersionsRequest::default();
        let first = tokio::spawn({
            let raw = raw.clone();
            let req = req.clone();
            async move { raw.call(&req, 0, Duration::from_secs(30)).await }
        });
        let (api, corr1) = read_request(&mut server).await;
        assert_eq!(api, API_VERSIONS);
        // Due now, with the first request unanswered; then a second request.
        raw.reauthenticate_at(Instant::now(), stand_in_exchange(runs.clone(), false));
        let second = tokio::spawn({
            let raw = raw.clone();
            async move { raw.call(&req, 0, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "not while one is in flight"
        );
        server
            .write_all(&api_versions_response(corr1))
            .await
            .unwrap();
        let (api, corr2) = read_request(&mut server).await;
        assert_eq!(
            api, SASL_HANDSHAKE,
            "the exchange comes before the queued request"
        );
        server
            .write_all(&sasl_handshake_response(corr2))
            .await
            .unwrap();
        let (api, corr3) = read_request(&mut server).await;
        assert_eq!(api, API_VERSIONS);
        server
            .write_all(&api_versions_response(corr3))
            .await
            .unwrap();
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A re-authentication that fails poisons the connection: the queued
    /// request fails as unwritten (retriable on a new connection, whose
    /// own authentication then says what is wrong).
    #[tokio::test(start_paused = true)]
    async fn a_failed_reauthentication_fails_the_queued_requests_as_unwritten() {
        let (client, mut server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        raw.reauthenticate_at(
            Instant::now() + Duration::from_secs(1),
            stand_in_exchange(runs.clone(), true),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let queued = tokio::spawn({
            let raw = raw.clone();
            async move {
                raw.call(&ApiVersionsRequest::default(), 0, Duration::from_secs(30))
                    .await
            }
        });
        let (api, corr) = read_request(&mut server).await;
        assert_eq!(api, SASL_HANDSHAKE);
        server
            .write_all(&sasl_handshake_response(corr))
            .await
            .unwrap();
        let err = queued.await.unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Connection { maybe_written: false, reason, .. } if reason.contains("re-authentication")),
            "{err:?}"
        );
        assert!(err.is_retriable(), "{err:?}");
    }

    #[tokio::test]
    async fn cancelled_caller_does_not_break_the_stream() {
        let (client, server) = duplex(1 << 16);
        let raw = RawConnection::spawn(Box::new(client), "test".into(), "t", 1 << 20, 4);
        // First call is cancelled before its response arrives.
        let req = ApiVersionsRequest::default();
        let first = raw.call(&req, 0, Duration::from_secs(5));
        let _ = tokio::time::timeout(Duration::from_millis(20), first).await;
        // The peer answers both in order; the second caller gets its own.
        let peer = tokio::spawn(async move {
            let s = peer_once(server, api_versions_response).await;
            peer_once(s, api_versions_response).await
        });
        let resp = raw
            .call(&ApiVersionsRequest::default(), 0, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(resp.error_code, 0);
        peer.await.unwrap();
    }
}
