//! The HTTP gateway: `POST /logs` (one event) and `POST /logs/batch` (a
//! JSON array). It answers after the broker acknowledged every record of
//! the request (`acks=all`): **202 means stored**; 400 names what is
//! invalid (nothing of the request was produced); 503 means some records
//! may not be stored, and a retry with the same ids is safe (rows are
//! keyed by id).
//!
//! ```text
//! curl -XPOST localhost:8080/logs -H 'content-type: application/json' \
//!      -d '{"service":"checkout","level":"ERROR","message":"card declined"}'
//! {"ids":["5c0f…"],"stored":1}
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use kafka_wire::{Producer, ProducerRecord};
use serde_json::{json, Value};

use crate::event::{LogEvent, LogEventIn, EVENT_ID_HEADER};
use crate::metrics::{GATEWAY_EVENTS, GATEWAY_SECONDS};

/// The most events one batch request may carry.
pub const MAX_BATCH: usize = 1_000;

/// What the routes share.
#[derive(Debug, Clone)]
pub struct Gateway {
    producer: Producer,
    topic: Arc<str>,
}

impl Gateway {
    pub fn new(producer: Producer, topic: &str) -> Self {
        Self {
            producer,
            topic: topic.into(),
        }
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/logs", post(one))
            .route("/logs/batch", post(batch))
            .route("/health", get(|| async { "OK" }))
            .with_state(self)
    }

    /// Serve on `addr` until `shutdown` completes; the bound address is
    /// sent on `bound` (port 0 picks one).
    ///
    /// # Errors
    /// `addr` cannot be bound.
    pub async fn serve(
        self,
        addr: SocketAddr,
        bound: tokio::sync::oneshot::Sender<SocketAddr>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let _ = bound.send(listener.local_addr()?);
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    /// Produce `events` and wait for every acknowledgement. Their own
    /// delivery futures, not `flush`: the producer is shared by concurrent
    /// requests, and `flush` would wait for (and report) theirs too.
    async fn store(&self, events: &[LogEvent]) -> Result<(), String> {
        let mut acks = Vec::with_capacity(events.len());
        for e in events {
            let rec = record(&self.topic, e);
            acks.push(self.producer.send(rec).await.map_err(|e| e.to_string())?);
        }
        for ack in acks {
            ack.await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn accept(&self, inputs: Vec<LogEventIn>) -> (StatusCode, Json<Value>) {
        let started = Instant::now();
        let now = crate::now_micros();
        let n = inputs.len() as u64;
        let events: Result<Vec<LogEvent>, String> = inputs
            .into_iter()
            .enumerate()
            .map(|(i, e)| LogEvent::accept(e, now).map_err(|why| format!("event {i}: {why}")))
            .collect();
        let events = match events {
            Ok(events) => events,
            Err(why) => {
                metrics::counter!(GATEWAY_EVENTS, "outcome" => "rejected").increment(n);
                return (StatusCode::BAD_REQUEST, Json(json!({ "error": why })));
            }
        };
        let answer = match self.store(&events).await {
            Ok(()) => {
                metrics::counter!(GATEWAY_EVENTS, "outcome" => "stored").increment(n);
                let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                (
                    StatusCode::ACCEPTED,
                    Json(json!({ "stored": ids.len(), "ids": ids })),
                )
            }
            Err(why) => {
                tracing::warn!(error = %why, events = n, "produce failed; answering 503");
                metrics::counter!(GATEWAY_EVENTS, "outcome" => "failed").increment(n);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": format!("not stored: {why}; retry with the same ids") })),
                )
            }
        };
        metrics::histogram!(GATEWAY_SECONDS).record(started.elapsed().as_secs_f64());
        answer
    }
}

/// The record for `e` on `topic`: keyed by service (one service's events
/// stay in order on one partition), the id also in a header.
pub fn record(topic: &str, e: &LogEvent) -> ProducerRecord {
    ProducerRecord::new(topic)
        .key(e.service.clone())
        .value(serde_json::to_vec(e).expect("a LogEvent always serializes"))
        .header(EVENT_ID_HEADER, e.id.clone())
}

async fn one(State(gw): State<Gateway>, Json(e): Json<LogEventIn>) -> (StatusCode, Json<Value>) {
    gw.accept(vec![e]).await
}

async fn batch(
    State(gw): State<Gateway>,
    Json(events): Json<Vec<LogEventIn>>,
) -> (StatusCode, Json<Value>) {
    if events.len() > MAX_BATCH {
        let why = format!("{} events; at most {MAX_BATCH} per request", events.len());
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({ "error": why })));
    }
    gw.accept(events).await
}
