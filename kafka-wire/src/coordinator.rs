//! Finding group and transaction coordinators (FindCoordinator).

use std::time::Duration;

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::{Client, Lane};
use crate::error::{Error, KafkaCode, Result};
use crate::throttle::Throttle;

/// Which coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinatorKind {
    /// A consumer group's coordinator (`key` = group id).
    Group,
    /// A transactional producer's coordinator (`key` = transactional id).
    Transaction,
}

/// How long to keep asking while the coordinator is unavailable or loading.
const COORDINATOR_WAIT: Duration = Duration::from_secs(30);

/// The delays between those tries.
const COORDINATOR_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(50), Duration::from_secs(1));

impl Client {
    /// The broker id of the coordinator for `key`. Retries (with backoff)
    /// while the broker answers COORDINATOR_NOT_AVAILABLE or
    /// COORDINATOR_LOAD_IN_PROGRESS, for up to 30 s.
    ///
    /// # Errors
    /// Fatal codes (e.g. authorization) at once; the last retriable error
    /// after the wait.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn find_coordinator(&self, kind: CoordinatorKind, key: &str) -> Result<i32> {
        let deadline = Instant::now() + COORDINATOR_WAIT;
        let mut delays = COORDINATOR_BACKOFF.delays();
        loop {
            let mut throttle = Throttle::default();
            let err = match self.find_coordinator_once(kind, key, &mut throttle).await {
                Ok(id) => return Ok(id),
                Err(e) if !e.is_retriable() => return Err(e),
                Err(e) => e,
            };
            let Some(delay) = delays.next_after(throttle) else {
                return Err(err);
            };
            if Instant::now() + delay > deadline {
                return Err(err);
            }
            tracing::debug!(%key, error = %err, "coordinator not ready; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One FindCoordinator; `throttle` receives the response's.
    async fn find_coordinator_once(
        &self,
        kind: CoordinatorKind,
        key: &str,
        throttle: &mut Throttle,
    ) -> Result<i32> {
        let conn = self.any_connection(Lane::Control).await?;
        let version = conn.version(ApiKey::FindCoordinator)?;
        let key_type = match kind {
            CoordinatorKind::Group => 0,
            CoordinatorKind::Transaction => 1,
        };
        let key_bytes = StrBytes::from_string(key.to_string());
        let req = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_coordinator_keys(vec![key_bytes])
        } else {
            FindCoordinatorRequest::default()
                .with_key_type(key_type)
                .with_key(key_bytes)
        };
        let resp = conn
            .send(&req, self.config().request_timeout, Duration::ZERO)
            .await?;
        *throttle = Throttle::from_ms(resp.throttle_time_ms);
        let (code, node, message) = if version >= 4 {
            let c = resp.coordinators.first().ok_or_else(|| {
                Error::Metadata(format!(
                    "FindCoordinator for {key:?} returned no coordinator"
                ))
            })?;
            (c.error_code, c.node_id.0, c.error_message.clone())
        } else {
            (resp.error_code, resp.node_id.0, resp.error_message.clone())
        };
        if let Some(code) = KafkaCode::try_from_code(code) {
            // Unavailable or loading coordinators are retriable: the caller loop waits.
            return Err(
                Error::broker(ApiKey::FindCoordinator, code).with_message(message.as_deref())
            );
        }
        if !self.metadata().brokers.contains_key(&node) {
            self.refresh_metadata(Some(&[])).await?;
        }
        Ok(node)
    }
}
