//! [`ShareConsumer`]: a member of a share group (KIP-932).
//!
//! ```text
//!  ShareConsumer ── poll / acknowledge / commit ──▶ ShareFetcher (pure, one lock)
//!     │ poll stamps, close                           ▲        │ actions
//!     ▼                                              │        ▼
//!  member task: the group driver (ShareGroupHeartbeat)   fetch task: ShareFetch, ShareAcknowledge
//!     └── Assigned / Revoked / Lost ── add, take back ┘
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::{Backoff, Client};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::config::ShareConsumerConfig;
use super::driver::{self, Shared};
use super::error::{Result, ShareError};
use super::fetcher::{Settings, ShareFetcher};
use super::member::MemberTask;
use super::{AckOutcome, AcknowledgeType, ShareRecord, TopicIdPartition};
use crate::group::share_protocol::member::ShareMemberConfig;
use crate::tp::TopicPartition;

/// A random member id: KIP-932 v1 members name themselves.
fn new_member_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    Uuid::from_bytes(bytes).simple().to_string()
}

/// How long `close` waits for the last acknowledgements by default.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The heartbeat interval until the broker gives its own
/// (`group.share.heartbeat.interval.ms`'s default).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The longest retry backoff of the member (Java's `retry.backoff.max.ms`).
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// A member of a share group: records come from partitions other members
/// read too; each is delivered to one member at a time, under an
/// acquisition lock, and acknowledged.
///
/// ```no_run
/// # async fn demo() -> Result<(), consumer_core::share::ShareError> {
/// use std::time::Duration;
/// use consumer_core::share::{AcknowledgeType, ShareConsumer, ShareConsumerConfig};
///
/// let mut consumer = ShareConsumer::connect(
///     ShareConsumerConfig::builder()
///         .set("bootstrap.servers", "127.0.0.1:9092")?
///         .set("group.id", "payments")?
///         .set("share.acknowledgement.mode", "explicit")?
///         .build()?,
/// )
/// .await?;
/// consumer.subscribe(&["orders"]).await?;
/// loop {
///     for record in consumer.poll(Duration::from_secs(1)).await? {
///         // handle(&record) ...
///         let ack = if record.delivery_count < 3 { AcknowledgeType::Accept } else { AcknowledgeType::Reject };
///         consumer.acknowledge(&record, ack)?;
///     }
///     consumer.commit_async();
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ShareConsumer {
    client: Client,
    cfg: Arc<ShareConsumerConfig>,
    member_id: String,
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
    member: Option<MemberTask>,
    closed: bool,
}

impl ShareConsumer {
    /// Connect (no subscription yet).
    ///
    /// # Errors
    /// Connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn connect(cfg: ShareConsumerConfig) -> Result<ShareConsumer> {
        let client = Client::connect(cfg.client.clone()).await?;
        Ok(Self::with_client(client, cfg))
    }

    /// Build on an existing client (sharing its connections). Must be
    /// called inside a tokio runtime (it starts the fetch task).
    pub fn with_client(client: Client, cfg: ShareConsumerConfig) -> ShareConsumer {
        let member_id = new_member_id();
        let fetcher = ShareFetcher::new(Settings::new(&cfg, &member_id));
        let shared = Arc::new(Shared::new(fetcher));
        let driver = tokio::spawn(driver::run(client.clone(), shared.clone()));
        ShareConsumer {
            client,
            cfg: Arc::new(cfg),
            member_id,
            shared,
            driver: Some(driver),
            member: None,
            closed: false,
        }
    }

    /// This member's id (generated here, as KIP-932 v1 wants).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Join the share group subscribed to `topics`; the broker assigns
    /// partitions (shared with the group's other members). Replaces an
    /// earlier subscription (the member rejoins).
    ///
    /// # Errors
    /// [`ShareError::Unsupported`] when the cluster has no share groups
    /// (naming the broker version, and the feature `share.version` or the
    /// upgrade that brings them); connection errors.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing starts before the check is done.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        self.open()?;
        super::probe::share_groups_available(&self.client).await?;
        self.stop_member().await;
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let cfg = &self.cfg;
        let member = ShareMemberConfig {
            group_id: cfg.group_id.clone(),
            member_id: self.member_id.clone(),
            rack_id: cfg.client_rack.clone(),
            topics,
            max_poll_interval: cfg.max_poll_interval,
            // Acknowledgements owed to revoked partitions: one request.
            handover_timeout: cfg.client.request_timeout,
            retry_backoff: Backoff::exponential(
                cfg.retry_backoff,
                MAX_RETRY_BACKOFF.max(cfg.retry_backoff),
            ),
            heartbeat_interval: HEARTBEAT_INTERVAL,
        };
        self.member = Some(MemberTask::start(
            self.client.clone(),
            member,
            self.shared.clone(),
        ));
        Ok(())
    }

    /// Fetch from exactly `partitions`, replacing the assignment (a
    /// subscription's member changes it again at its next assignment).
    /// Without `subscribe`, ShareFetch still needs the group to know the
    /// partitions: the broker initializes a share-partition's
    /// state only when the group coordinator assigns it to some member.
    ///
    /// # Errors
    /// A topic metadata does not know.
    ///
    /// # Cancel safety
    /// Cancel safe: the assignment changes only after the lookup.
    pub async fn assign(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        self.open()?;
        let topics: Vec<String> = partitions
            .iter()
            .map(|tp| tp.topic.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let md = self.client.refresh_metadata(Some(&topics)).await?;
        let mut parts = BTreeSet::new();
        for tp in partitions {
            let topic = md.topics.get(&tp.topic).ok_or_else(|| {
                kafka_wire::Error::Metadata(format!("topic {} is unknown", tp.topic))
            })?;
            parts.insert(TopicIdPartition::new(
                Uuid::from_bytes(topic.id),
                tp.clone(),
            ));
        }
        self.shared.assign(parts);
        Ok(())
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared
            .fetcher()
            .assignment()
            .iter()
            .map(|t| t.tp.clone())
            .collect()
    }

    /// Up to `max.poll.records` acquired records, each with its delivery
    /// count; empty after `timeout` without any. In implicit mode the
    /// previous poll's records are accepted first; in explicit mode they
    /// must all be acknowledged. Acknowledgements made so far go with the
    /// next ShareFetch of their partition's leader (or a ShareAcknowledge).
    ///
    /// # Errors
    /// [`ShareError::Unacknowledged`] (explicit mode; nothing fetched), a
    /// membership failure, [`ShareError::Unsupported`], an authorization
    /// error, [`ShareError::Closed`].
    ///
    /// # Cancel safety
    /// Cancel safe: records leave the buffer only in the step that
    /// returns them.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ShareRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(m) = &self.member {
            m.polled();
        }
        self.shared.fetcher().begin_poll()?;
        self.shared.wake_driver.notify_one();
        loop {
            {
                let mut f = self.shared.fetcher();
                if let Some(e) = f.fatal() {
                    return Err(e.clone());
                }
                let records = f.take_records(Instant::now());
                if !records.is_empty() {
                    drop(f);
                    self.shared.wake_driver.notify_one();
                    return Ok(records);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = self.shared.wake_app.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Acknowledge `record` (`share.acknowledgement.mode=explicit`).
    /// ACCEPT, RELEASE and REJECT go with the next poll or commit; RENEW
    /// goes at once and restarts the record's acquisition lock, the record
    /// staying with the application (acknowledge it again when done).
    ///
    /// # Errors
    /// [`ShareError::InvalidAcknowledge`]: implicit mode, a record this
    /// member does not hold (acknowledged and answered already, or lost
    /// with its share session: then it is delivered again), or one
    /// acknowledged already.
    pub fn acknowledge(&mut self, record: &ShareRecord, ty: AcknowledgeType) -> Result<()> {
        self.open()?;
        self.shared
            .fetcher()
            .acknowledge(&record.tp, record.topic_id, record.offset(), ty)?;
        if ty == AcknowledgeType::Renew {
            self.shared.wake_driver.notify_one();
        }
        Ok(())
    }

    /// Send every acknowledgement now and wait for the answers (implicit
    /// mode: the last poll's records are accepted first). Returns the
    /// outcome of every acknowledgement answered since the last call
    /// (those that went with ShareFetch too).
    ///
    /// # Errors
    /// [`ShareError::CommitTimeout`] after `timeout` (the rest are still
    /// sent); [`ShareError::Closed`].
    ///
    /// # Cancel safety
    /// Cancel safe: the acknowledgements go anyway; their outcomes come
    /// with the next call.
    pub async fn commit_sync(&mut self, timeout: Duration) -> Result<Vec<AckOutcome>> {
        self.open()?;
        let deadline = tokio::time::Instant::now() + timeout;
        self.shared.fetcher().commit();
        self.shared.wake_driver.notify_one();
        loop {
            {
                let mut f = self.shared.fetcher();
                if let Some(e) = f.fatal() {
                    return Err(e.clone());
                }
                let pending = f.unanswered_acks();
                if pending == 0 {
                    return Ok(f.take_outcomes());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ShareError::CommitTimeout {
                        pending,
                        timeout_ms: timeout.as_millis() as u64,
                    });
                }
            }
            tokio::select! {
                _ = self.shared.wake_app.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Send every acknowledgement now without waiting; outcomes come from
    /// [`ShareConsumer::take_ack_outcomes`] or the next `commit_sync`.
    pub fn commit_async(&mut self) {
        if self.closed {
            return;
        }
        self.shared.fetcher().commit();
        self.shared.wake_driver.notify_one();
    }

    /// The outcomes of acknowledgements answered since the last call
    /// (Java's acknowledgement commit callback, pulled).
    pub fn take_ack_outcomes(&mut self) -> Vec<AckOutcome> {
        self.shared.fetcher().take_outcomes()
    }

    /// When `record`'s acquisition lock ends, as this member sees it (the
    /// answer's arrival plus the broker's `acquisition_lock_timeout_ms`;
    /// the broker's own ends a little earlier). `None` when not held.
    pub fn lock_deadline(&self, record: &ShareRecord) -> Option<Instant> {
        let tip = TopicIdPartition::new(record.topic_id, record.tp.clone());
        self.shared.fetcher().lock_deadline(&tip, record.offset())
    }

    /// The acquisition lock the broker announced
    /// (`group.share.record.lock.duration.ms`, or the group's
    /// `share.record.lock.duration.ms`); `None` before the first fetch.
    pub fn acquisition_lock_timeout(&self) -> Option<Duration> {
        self.shared.fetcher().lock_timeout()
    }

    /// Send the last acknowledgements (implicit mode: accepting the last
    /// poll's records), close every share session (the broker releases
    /// the records still acquired), then leave the group. Waits up to 30 s.
    /// Returns the outcomes not taken yet.
    ///
    /// # Errors
    /// None so far; closing twice is fine.
    ///
    /// # Cancel safety
    /// Not cancel safe: a cancelled close leaves the member to the
    /// broker's session timeout.
    pub async fn close(mut self) -> Result<Vec<AckOutcome>> {
        self.close_within(CLOSE_TIMEOUT).await
    }

    /// [`ShareConsumer::close`] waiting at most `timeout`; later calls
    /// return at once.
    ///
    /// # Errors
    /// As `close`.
    ///
    /// # Cancel safety
    /// As `close`: not cancel safe.
    pub async fn close_within(&mut self, timeout: Duration) -> Result<Vec<AckOutcome>> {
        if self.closed {
            return Ok(Vec::new());
        }
        self.closed = true;
        self.shared.fetcher().close();
        self.shared.wake_driver.notify_one();
        if let Some(driver) = self.driver.take() {
            if tokio::time::timeout(timeout, driver).await.is_err() {
                tracing::warn!("share sessions not closed within {timeout:?}");
            }
        }
        self.stop_member().await;
        Ok(self.shared.fetcher().take_outcomes())
    }

    fn open(&self) -> Result<()> {
        if self.closed {
            Err(ShareError::Closed)
        } else {
            Ok(())
        }
    }

    /// Stop the member task; it hands over what it owns and leaves the
    /// group (epoch -1) first.
    async fn stop_member(&mut self) {
        if let Some(member) = self.member.take() {
            let wait = 2 * self.cfg.client.request_timeout + Duration::from_secs(1);
            member.stop(wait).await;
        }
    }
}

impl Drop for ShareConsumer {
    fn drop(&mut self) {
        // Without close: the broker's session timeout removes the member
        // and its acquisition locks release the records.
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        if let Some(member) = self.member.take() {
            member.abort();
        }
    }
}
