//! Client telemetry (KIP-714): the client pushes its own metrics to the
//! broker, as Java, librdkafka and franz-go do, so that an operator sees
//! every client from the cluster's side.
//!
//! ```text
//!   Telemetry (owned by the consumer or producer)
//!     ├─ metrics: Arc<TelemetryMetrics>  ◀── the client records fetches, lag, sends
//!     └─ task ── Machine (pure, machine.rs) ── GetTelemetrySubscriptions / PushTelemetry
//!                                              on one broker's control connection
//! ```
//!
//! The task asks the broker for the client's subscription (client instance
//! id, subscription id, push interval, requested metric name prefixes,
//! delta or cumulative sums, max bytes), then pushes the requested metrics
//! as OTLP `MetricsData` protobuf (uncompressed, which every broker
//! accepts): first after 0.5–1.5 × the interval, then every interval. On
//! UNKNOWN_SUBSCRIPTION_ID it asks for the subscription again; on
//! UNSUPPORTED_VERSION, INVALID_REQUEST or INVALID_RECORD it stops. A
//! subscription with no requested metric costs one GetTelemetrySubscriptions
//! per interval and no push. A broker that does not advertise the two APIs
//! (Kafka without a `ClientTelemetry` metrics reporter, Kafka before 3.7,
//! Redpanda) is sent nothing at all. [`Telemetry::close`] sends the
//! terminating push (`terminating=true`).
//!
//! `enable.metrics.push=false` ([`crate::ClientConfig::enable_metrics_push`])
//! turns all of it off.

mod machine;
mod metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, GetTelemetrySubscriptionsRequest, PushTelemetryRequest};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::client::{Client, Lane};
use crate::connection::Connection;
use crate::error::Error;
use machine::{Action, Failure, Machine, Reply, Subscription};
pub use metrics::{
    TelemetryMetrics, TelemetryRole, BYTES_CONSUMED_TOTAL, FETCH_LATENCY_AVG, FETCH_LATENCY_MAX,
    FETCH_TOTAL, RECORDS_CONSUMED_TOTAL, RECORDS_LAG_MAX, RECORD_SEND_TOTAL,
};

/// What the telemetry task has done so far (for tests and diagnostics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// GetTelemetrySubscriptions requests sent.
    pub subscription_requests: u64,
    /// PushTelemetry requests sent, the terminating one included.
    pub pushes: u64,
    /// Terminating pushes sent (0 or 1).
    pub terminating_pushes: u64,
    /// The machine's state: `disabled` (`enable.metrics.push=false` or no
    /// tokio runtime), `subscription-needed`, `push-needed`, …,
    /// `terminated` (stopped, or the broker has no telemetry).
    pub state: String,
}

#[derive(Debug, Default)]
struct Shared {
    subscription_requests: AtomicU64,
    pushes: AtomicU64,
    terminating_pushes: AtomicU64,
    state: Mutex<&'static str>,
}

impl Shared {
    fn set_state(&self, state: &'static str) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

/// One client's telemetry: its metrics and the task that pushes them.
///
/// Dropping it stops the task without a terminating push; [`Self::close`]
/// sends that push first.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Arc<TelemetryMetrics>,
    shared: Arc<Shared>,
    close: Option<watch::Sender<bool>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Telemetry {
    /// Start pushing `role`'s metrics through `client` (one small task),
    /// unless `enable.metrics.push` is false or there is no tokio runtime
    /// (then the metrics are still recorded, and never sent).
    pub fn start(client: &Client, role: TelemetryRole) -> Telemetry {
        let config = client.config();
        let metrics = Arc::new(TelemetryMetrics::new(role, &config.client_id, unix_nanos()));
        let shared = Arc::new(Shared::default());
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(runtime), true) = (runtime, config.enable_metrics_push) else {
            shared.set_state("disabled");
            metrics.stop_recording();
            return Telemetry {
                metrics,
                shared,
                close: None,
                task: Mutex::new(None),
            };
        };
        let (close_tx, close_rx) = watch::channel(false);
        let task = runtime.spawn(run(
            client.clone(),
            metrics.clone(),
            shared.clone(),
            close_rx,
        ));
        Telemetry {
            metrics,
            shared,
            close: Some(close_tx),
            task: Mutex::new(Some(task)),
        }
    }

    /// Where the client records what telemetry pushes.
    pub fn metrics(&self) -> &Arc<TelemetryMetrics> {
        &self.metrics
    }

    /// What has been sent so far.
    pub fn stats(&self) -> TelemetryStats {
        TelemetryStats {
            subscription_requests: self.shared.subscription_requests.load(Ordering::Relaxed),
            pushes: self.shared.pushes.load(Ordering::Relaxed),
            terminating_pushes: self.shared.terminating_pushes.load(Ordering::Relaxed),
            state: self
                .shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_string(),
        }
    }

    /// Send the terminating push (when a subscription wants metrics) and
    /// stop, within `timeout`; after it, the task is aborted.
    ///
    /// # Cancel safety
    /// Cancel safe: the task then goes on to its terminating push alone.
    pub async fn close(&self, timeout: Duration) {
        if let Some(close) = &self.close {
            let _ = close.send(true);
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(timeout, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The task: run the machine's actions until it is done, or every handle
/// is gone.
async fn run(
    client: Client,
    metrics: Arc<TelemetryMetrics>,
    shared: Arc<Shared>,
    mut close: watch::Receiver<bool>,
) {
    let timeout = client.config().request_timeout;
    // The broker the telemetry requests go to: kept while it answers
    // (KIP-714: one broker per client instance while the connection lasts).
    let mut conn: Option<Connection> = None;
    let mut machine: Option<Machine> = None;
    loop {
        if *close.borrow_and_update() {
            if let Some(m) = machine.as_mut() {
                m.close();
            }
        }
        let m = match machine.as_mut() {
            Some(m) => m,
            None => {
                // The first connection decides whether the broker has
                // telemetry at all.
                let c = match telemetry_connection(&client, &mut conn).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(error = %e, "telemetry: no broker reachable yet");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            changed = close.changed() => if changed.is_err() || *close.borrow() { break },
                        }
                        continue;
                    }
                };
                let supported = c.version(ApiKey::GetTelemetrySubscriptions).is_ok()
                    && c.version(ApiKey::PushTelemetry).is_ok();
                if !supported {
                    tracing::debug!(
                        "telemetry: the broker does not advertise KIP-714's APIs; nothing is sent"
                    );
                }
                let random = Box::new(rand::random::<f64>);
                machine.insert(Machine::new(Instant::now(), supported, random))
            }
        };
        shared.set_state(m.state_name());
        match m.poll_action(Instant::now()) {
            Action::Done => break,
            Action::AwaitReply => {
                // Replies are awaited inline below; nothing is ever left out.
                tracing::warn!("telemetry: a request is out with nobody waiting; stopping");
                break;
            }
            Action::WaitUntil(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    changed = close.changed() => if changed.is_err() { return },
                }
            }
            Action::GetSubscription { client_instance_id } => {
                shared.subscription_requests.fetch_add(1, Ordering::Relaxed);
                let reply = get_subscription(&client, &mut conn, client_instance_id, timeout).await;
                if let Err(f) = &reply {
                    tracing::debug!(failure = ?f, "telemetry: GetTelemetrySubscriptions failed");
                }
                m.on_subscription(Instant::now(), reply);
            }
            Action::Push {
                subscription,
                terminating,
            } => {
                shared.pushes.fetch_add(1, Ordering::Relaxed);
                if terminating {
                    shared.terminating_pushes.fetch_add(1, Ordering::Relaxed);
                }
                let payload = metrics.encode_push(&subscription, unix_nanos());
                let reply = push(
                    &client,
                    &mut conn,
                    &subscription,
                    terminating,
                    payload,
                    timeout,
                )
                .await;
                if let Err(f) = &reply {
                    tracing::debug!(failure = ?f, terminating, "telemetry: PushTelemetry failed");
                }
                m.on_push(Instant::now(), reply);
            }
        }
    }
    if let Some(m) = &machine {
        shared.set_state(m.state_name());
    } else {
        shared.set_state("terminated");
    }
    // Done: nothing recorded from now on could be pushed.
    metrics.stop_recording();
}

/// The connection telemetry uses: the one kept, or any broker's control
/// connection.
async fn telemetry_connection(
    client: &Client,
    conn: &mut Option<Connection>,
) -> crate::Result<Connection> {
    if let Some(c) = conn.as_ref().filter(|c| !c.is_closed()) {
        return Ok(c.clone());
    }
    let c = client.any_connection(Lane::Control).await?;
    *conn = Some(c.clone());
    Ok(c)
}

/// A request's error as the machine sees it; a lost connection is
/// forgotten so that the next request dials another broker.
fn failure(e: &Error, conn: &mut Option<Connection>) -> Failure {
    match e {
        Error::UnsupportedVersion { .. } => Failure::Unsupported,
        _ => {
            *conn = None;
            Failure::Failed
        }
    }
}

async fn get_subscription(
    client: &Client,
    conn: &mut Option<Connection>,
    client_instance_id: [u8; 16],
    timeout: Duration,
) -> Reply<Subscription> {
    let c = telemetry_connection(client, conn)
        .await
        .map_err(|e| failure(&e, conn))?;
    let req = GetTelemetrySubscriptionsRequest::default()
        .with_client_instance_id(Uuid::from_bytes(client_instance_id));
    let resp = c
        .send(&req, timeout, Duration::ZERO)
        .await
        .map_err(|e| failure(&e, conn))?;
    if resp.error_code != 0 {
        return Err(Failure::Code(resp.error_code));
    }
    Ok(Subscription::from_response(&resp, client_instance_id))
}

async fn push(
    client: &Client,
    conn: &mut Option<Connection>,
    sub: &Subscription,
    terminating: bool,
    payload: Vec<u8>,
    timeout: Duration,
) -> Reply<()> {
    let c = telemetry_connection(client, conn)
        .await
        .map_err(|e| failure(&e, conn))?;
    let req = PushTelemetryRequest::default()
        .with_client_instance_id(Uuid::from_bytes(sub.client_instance_id))
        .with_subscription_id(sub.subscription_id)
        .with_terminating(terminating)
        .with_compression_type(0) // NONE: accepted by every broker
        .with_metrics(Bytes::from(payload));
    let resp = c
        .send(&req, timeout, Duration::ZERO)
        .await
        .map_err(|e| failure(&e, conn))?;
    match resp.error_code {
        0 => Ok(()),
        code => Err(Failure::Code(code)),
    }
}

#[cfg(test)]
mod tests {
    use crate::ClientConfig;

    #[test]
    fn enable_metrics_push_defaults_on_and_takes_the_kafka_property() {
        let base = || ClientConfig::builder().bootstrap("127.0.0.1:9092").unwrap();
        assert!(base().build().unwrap().enable_metrics_push);
        let off = base().set("enable.metrics.push", "false").unwrap().build();
        assert!(!off.unwrap().enable_metrics_push);
        let err = base().set("enable.metrics.push", "no").unwrap_err();
        assert!(err.to_string().contains("enable.metrics.push"), "{err}");
    }
}
