//! The order service: the saga's entry point and its record of truth.
//!
//! - **HTTP API (axum):** `POST /orders` stores the order `PENDING` in
//!   `saga_orders`, publishes `OrderCreated` and answers `201` once the
//!   broker acknowledged it; `GET /orders/{id}` answers the order and its
//!   status. The correlation id comes from the `X-Correlation-Id` request
//!   header, or is made here, and travels on every event of the order.
//! - **Processor:** follows `payments` and `inventory` and moves the
//!   order's status: `PaymentCharged` → `PAID`, `StockReserved` →
//!   `CONFIRMED`, `PaymentRefunded` → `CANCELLED`. A status never goes back
//!   (an update names the statuses it moves from), so redelivered or
//!   reordered events change nothing.
//!
//! Request body (the seed's): `{"customerId": "cust_1", "productId":
//! "prod_123", "quantity": 2, "amount": 250.50}`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kafka_wire::records::Record;
use resilience::consumer_core::TopicPartition;
use resilience::retry::BackoffPolicy;
use resilience::{Handler, HandlerError, Processor, ProcessorConfig};
use serde::Deserialize;
use tracing::Instrument;

use crate::db::{self, status};
use crate::event::{self, Event, EventType, Order};
use crate::{Publisher, ServiceConfig, Topics};

/// The order service's consumer group (under the run's prefix).
pub const SERVICE: &str = "order-service";

/// The request header a caller may set to choose the correlation id.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// `POST /orders`'s body.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    pub customer_id: String,
    pub product_id: String,
    pub quantity: i32,
    /// In currency units (250.50).
    pub amount: f64,
}

/// The API's shared state.
#[derive(Debug, Clone)]
pub struct Api {
    db: Arc<db::Pool>,
    publisher: Publisher,
    topics: Topics,
}

fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        code,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

async fn create(State(api): State<Api>, headers: HeaderMap, Json(new): Json<NewOrder>) -> Response {
    if new.quantity <= 0 || !new.amount.is_finite() || new.amount <= 0.0 {
        return error(
            StatusCode::BAD_REQUEST,
            "quantity and amount must be positive",
        );
    }
    let correlation_id = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let order = Order {
        order_id: uuid::Uuid::new_v4().to_string(),
        customer_id: new.customer_id,
        product_id: new.product_id,
        quantity: new.quantity,
        amount_cents: (new.amount * 100.0).round() as i64,
    };
    let span = tracing::warn_span!("order-api", correlation_id = %correlation_id);
    async move {
        if let Err(e) = db::insert_order(&api.db, &order, &correlation_id).await {
            tracing::error!(error = %e, "storing the order failed");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("storing the order: {e}"),
            );
        }
        let created = Event::new(EventType::OrderCreated, &correlation_id, &order);
        if let Err(e) = api.publisher.publish(&api.topics.orders, &created).await {
            // Not in Kafka: the saga never starts; say so, and cancel it.
            let _ = db::set_status(
                &api.db,
                &order.order_id,
                &[status::PENDING],
                status::CANCELLED,
            )
            .await;
            tracing::error!(error = %e, "publishing OrderCreated failed: order cancelled");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("publishing the order: {e}"),
            );
        }
        tracing::info!(order_id = %order.order_id, product = %order.product_id, "order created");
        let row = db::OrderRow {
            order,
            correlation_id,
            status: status::PENDING.into(),
        };
        (StatusCode::CREATED, Json(row)).into_response()
    }
    .instrument(span)
    .await
}

async fn show(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match db::order(&api.db, &id).await {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The API's routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/orders", post(create))
        .route("/orders/{id}", get(show))
        .with_state(api)
}

/// Moves an order's status as the saga's events arrive.
#[derive(Debug)]
pub struct StatusHandler {
    db: Arc<db::Pool>,
}

impl Handler for StatusHandler {
    fn handle<'a>(
        &'a self,
        _tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'a {
        let span = tracing::warn_span!("order", correlation_id = %event::correlation_id(record));
        async move {
            let event = Event::from_record(record).map_err(HandlerError::Deserialization)?;
            let (from, to): (&[&str], &str) = match event.event_type {
                EventType::PaymentCharged => (&[status::PENDING], status::PAID),
                EventType::StockReserved => (&[status::PENDING, status::PAID], status::CONFIRMED),
                EventType::PaymentRefunded => (&[status::PENDING, status::PAID], status::CANCELLED),
                _ => return Ok(()),
            };
            if db::set_status(&self.db, &event.order.order_id, from, to).await? {
                tracing::info!(order_id = %event.order.order_id, status = to, "order {}", to.to_lowercase());
            }
            Ok(())
        }
        .instrument(span)
    }
}

/// The order service, bound but not yet serving.
#[derive(Debug)]
pub struct OrderService {
    pub processor: Processor,
    pub listener: tokio::net::TcpListener,
    pub router: Router,
}

impl OrderService {
    /// Connect PostgreSQL and the producer, bind `http` (port 0: any).
    ///
    /// # Errors
    /// PostgreSQL, the address, or (after `startup_timeout`) Kafka.
    pub async fn start(cfg: &ServiceConfig, http: SocketAddr) -> anyhow::Result<OrderService> {
        let db = Arc::new(db::pool(&cfg.pg_url).await?);
        let api = Api {
            db: db.clone(),
            publisher: cfg.connect_producer().await?,
            topics: cfg.topics.clone(),
        };
        let pcfg = ProcessorConfig::new(
            cfg.consumer(SERVICE)?,
            &[&cfg.topics.payments, &cfg.topics.inventory],
        )
        .concurrency(8)
        .backoff(BackoffPolicy::exponential(Duration::from_millis(100), 3))
        .startup_timeout(cfg.startup_timeout);
        let listener = tokio::net::TcpListener::bind(http)
            .await
            .with_context(|| format!("binding the order API to {http}"))?;
        Ok(OrderService {
            processor: Processor::new(pcfg, StatusHandler { db }),
            listener,
            router: router(api),
        })
    }

    /// Where the API listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Serve the API and run the Processor until `shutdown` turns true.
    ///
    /// # Errors
    /// The Processor's fatal errors, or the server's.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut stop_http = shutdown.clone();
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(async move {
            let _ = stop_http.wait_for(|s| *s).await;
        });
        let processor = self.processor.run(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
        let (served, processed) = tokio::join!(async move { server.await }, processor);
        served.context("the order API")?;
        processed.context("the order service's processor")?;
        Ok(())
    }
}
