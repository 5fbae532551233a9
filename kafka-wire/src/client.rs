//! The cluster client: connections per broker and lane, metadata, routing.
//!
//! ```text
//!   Client (cheap clone) ──▶ Inner
//!                             ├─ config (+ TLS connector, built once)
//!                             ├─ slots: (broker id, Lane) ──▶ Connection (one task each)
//!                             └─ metadata: Arc<Metadata>, refreshed with coalescing
//! ```
//!
//! Lanes keep traffic classes apart: a fetch that long-polls for
//! `fetch.max.wait.ms` never delays a heartbeat or a metadata request,
//! because each lane to a broker is its own TCP connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use crate::tls::TlsConnector;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::ClientConfig;
use crate::connection::{Connection, ConnectionInfo, RawConnection};
use crate::connector::BrokerAddress;
use crate::error::{Error, KafkaCode, Result};
use crate::metadata::Metadata;
use crate::versions::ApiVersionTable;

/// Which connection to a broker a request travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Metadata, admin, offsets, coordinator lookups.
    Control,
    /// Fetch long polls.
    Fetch,
    /// Produce requests.
    Produce,
    /// Group membership: join, sync, heartbeat, commit.
    Group,
}

/// Per (broker, lane): the live connection, or the backoff after failures.
#[derive(Default)]
struct Slot {
    conn: Option<Connection>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// One async lock per (broker, lane), so concurrent callers share one dial.
type Slots = HashMap<(i32, Lane), Arc<tokio::sync::Mutex<Slot>>>;

struct Inner {
    config: ClientConfig,
    tls: Option<TlsConnector>,
    slots: Mutex<Slots>,
    metadata: RwLock<Arc<Metadata>>,
    /// Serialises refreshes; the count of full refreshes lets a full one
    /// that waited skip a redundant request.
    refresh_lock: tokio::sync::Mutex<()>,
    refresh_generation: AtomicU64,
    /// Bumped on every metadata replacement (see [`Client::metadata_version`]).
    metadata_version: AtomicU64,
}

/// A connection to a Kafka cluster. Clone it freely; clones share everything.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bootstrap", &self.inner.config.bootstrap_servers)
            .finish_non_exhaustive()
    }
}

/// Bootstrap addresses get negative pseudo broker ids: -1, -2, …
fn bootstrap_id(index: usize) -> i32 {
    -(index as i32) - 1
}

impl Client {
    /// Connect to the cluster: dial a bootstrap broker and load metadata.
    ///
    /// # Errors
    /// [`Error::Config`] for bad TLS files; connection, TLS or auth errors
    /// when no bootstrap broker can be reached.
    ///
    /// # Cancel safety
    /// Cancel safe; nothing is left behind but connections that close.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let tls = if config.security_protocol.uses_tls() {
            Some(crate::tls::build_connector(&config.tls)?)
        } else {
            None
        };
        let client = Client {
            inner: Arc::new(Inner {
                config,
                tls,
                slots: Mutex::new(HashMap::new()),
                metadata: RwLock::new(Arc::new(Metadata::default())),
                refresh_lock: tokio::sync::Mutex::new(()),
                refresh_generation: AtomicU64::new(0),
                metadata_version: AtomicU64::new(1),
            }),
        };
        client.refresh_metadata(Some(&[])).await?;
        spawn_periodic_refresh(Arc::downgrade(&client.inner));
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The latest metadata snapshot (no I/O).
    /// A counter that changes whenever [`Self::metadata`] is replaced
    /// (starts at 1): a cache of something read from the metadata is
    /// still good while this has not moved.
    pub fn metadata_version(&self) -> u64 {
        self.inner.metadata_version.load(Ordering::Acquire)
    }

    pub fn metadata(&self) -> Arc<Metadata> {
        self.inner
            .metadata
            .read()
            .expect("metadata lock poisoned")
            .clone()
    }

    /// Refresh metadata for `topics` (`None`: all topics; `Some(&[])`:
    /// brokers only). Concurrent callers share one request when they can.
    ///
    /// # Errors
    /// The last connection error when no broker answers.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn refresh_metadata(&self, topics: Option<&[String]>) -> Result<Arc<Metadata>> {
        let generation_before = self.inner.refresh_generation.load(Ordering::Acquire);
        let _guard = self.inner.refresh_lock.lock().await;
        // A full refresh finished while we waited: it covers us. (Only a
        // full one: a targeted refresh finishing meanwhile once answered a
        // full request, so a topic created later never showed up.)
        if self.inner.refresh_generation.load(Ordering::Acquire) != generation_before
            && topics.is_none()
        {
            return Ok(self.metadata());
        }
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(false);
        let mut last_err = None;
        for broker_id in self.metadata_candidates() {
            let conn = match self.connection(broker_id, Lane::Control).await {
                Ok(c) => c,
                Err(e)
                    if matches!(e, Error::Auth { .. } | Error::Tls { .. } | Error::Config(_)) =>
                {
                    return Err(e)
                }
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            match conn
                .send(&req, self.inner.config.request_timeout, Duration::ZERO)
                .await
            {
                Ok(resp) => {
                    let mut next = (*self.metadata()).clone();
                    next.merge(&resp, topics.is_none());
                    let next = Arc::new(next);
                    *self.inner.metadata.write().expect("metadata lock poisoned") = next.clone();
                    self.inner.metadata_version.fetch_add(1, Ordering::AcqRel);
                    if topics.is_none() {
                        self.inner.refresh_generation.fetch_add(1, Ordering::AcqRel);
                    }
                    return Ok(next);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Metadata("no broker to ask".into())))
    }

    /// Brokers to ask for metadata: known brokers first, then bootstrap.
    fn metadata_candidates(&self) -> Vec<i32> {
        let md = self.metadata();
        let mut ids: Vec<i32> = md.brokers.keys().copied().collect();
        ids.sort_unstable();
        ids.extend((0..self.inner.config.bootstrap_servers.len()).map(bootstrap_id));
        ids
    }

    fn address_of(&self, broker_id: i32) -> Result<BrokerAddress> {
        if broker_id < 0 {
            let index = (-broker_id - 1) as usize;
            return self
                .inner
                .config
                .bootstrap_servers
                .get(index)
                .cloned()
                .ok_or_else(|| Error::Metadata(format!("no bootstrap server #{index}")));
        }
        self.metadata()
            .brokers
            .get(&broker_id)
            .map(|b| b.address.clone())
            .ok_or_else(|| Error::Metadata(format!("broker {broker_id} is not in metadata")))
    }

    /// The connection to `broker_id` on `lane`, dialing it if needed. After a
    /// failure, redials wait an exponential, jittered backoff.
    ///
    /// # Errors
    /// Connection, TLS, auth and metadata errors.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled dial leaves the slot empty for the next caller.
    pub async fn connection(&self, broker_id: i32, lane: Lane) -> Result<Connection> {
        let slot = {
            let mut slots = self.inner.slots.lock().expect("slots lock poisoned");
            slots.entry((broker_id, lane)).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(conn) = &slot.conn {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            slot.conn = None;
        }
        if let Some(at) = slot.retry_at {
            tokio::time::sleep_until(at).await;
        }
        let address = self.address_of(broker_id)?;
        match self.dial(broker_id, &address).await {
            Ok(conn) => {
                slot.conn = Some(conn.clone());
                slot.failures = 0;
                slot.retry_at = None;
                Ok(conn)
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                slot.retry_at = Some(Instant::now() + self.backoff(slot.failures));
                Err(e)
            }
        }
    }

    /// `reconnect.backoff.ms × 2^(n-1)`, capped, with ±20 % jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let c = &self.inner.config;
        Backoff::exponential(c.reconnect_backoff, c.reconnect_backoff_max)
            .with_jitter(0.2)
            .delay(failures)
    }

    /// Dial, TLS, ApiVersions, SASL; all within `socket.connection.setup.timeout.ms`.
    async fn dial(&self, broker_id: i32, address: &BrokerAddress) -> Result<Connection> {
        let c = &self.inner.config;
        let label = if broker_id >= 0 {
            format!("broker {broker_id} ({address})")
        } else {
            format!("bootstrap {address}")
        };
        let setup = async {
            let stream = c
                .connector
                .connect(address, c.connect_timeout)
                .await
                .map_err(|e| Error::Connection {
                    broker: label.clone(),
                    reason: e.to_string(),
                    maybe_written: false,
                })?;
            let stream = match &self.inner.tls {
                Some(tls) => crate::tls::handshake(tls, stream, address).await?,
                None => stream,
            };
            let raw = RawConnection::spawn(
                stream,
                label.clone(),
                &c.client_id,
                c.max_frame_bytes,
                c.max_in_flight,
            );
            let versions = negotiate_versions(&raw, c.request_timeout).await?;
            if let Some(sasl) = &c.sasl {
                crate::sasl::authenticate(&raw, &versions, sasl, &label, c.request_timeout).await?;
            }
            Ok::<_, Error>(Connection::new(
                raw,
                ConnectionInfo {
                    broker_id,
                    address: address.clone(),
                    versions,
                    client_id: c.client_id.clone(),
                },
            ))
        };
        match tokio::time::timeout(c.connect_timeout, setup).await {
            Ok(result) => result,
            Err(_) => Err(Error::Connection {
                broker: label,
                reason: format!(
                    "connection set-up (dial, TLS, ApiVersions, SASL) took longer than {} ms",
                    c.connect_timeout.as_millis()
                ),
                maybe_written: false,
            }),
        }
    }

    /// Send `req` to `broker_id` on `lane` at the negotiated version.
    ///
    /// # Errors
    /// As [`Connection::send`], plus dial errors.
    ///
    /// # Cancel safety
    /// Cancel safe, as [`Connection::send`].
    pub async fn send_to<R: Request + 'static>(
        &self,
        broker_id: i32,
        lane: Lane,
        req: &R,
        extra_timeout: Duration,
    ) -> Result<R::Response>
    where
        R::Response: crate::ThrottleTime,
    {
        let conn = self.connection(broker_id, lane).await?;
        conn.send(req, self.inner.config.request_timeout, extra_timeout)
            .await
    }

    /// A connection to any reachable broker (for cluster-wide requests).
    ///
    /// # Errors
    /// The last dial error when no broker is reachable.
    pub async fn any_connection(&self, lane: Lane) -> Result<Connection> {
        let mut last_err = None;
        for id in self.metadata_candidates() {
            match self.connection(id, lane).await {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Metadata("no broker known".into())))
    }

    /// The current leader of `topic`-`partition`, refreshing metadata once if
    /// it is unknown.
    ///
    /// # Errors
    /// [`Error::Broker`] with UNKNOWN_TOPIC_OR_PARTITION or LEADER_NOT_AVAILABLE.
    pub async fn leader_for(&self, topic: &str, partition: i32) -> Result<i32> {
        for attempt in 0..2 {
            let md = if attempt == 0 {
                self.metadata()
            } else {
                self.refresh_metadata(Some(&[topic.to_string()])).await?
            };
            if let Some(p) = md.partition(topic, partition) {
                if p.leader >= 0 && md.brokers.contains_key(&p.leader) {
                    return Ok(p.leader);
                }
            }
        }
        let md = self.metadata();
        let code = if md.topics.contains_key(topic) {
            KafkaCode::LeaderNotAvailable
        } else {
            KafkaCode::UnknownTopicOrPartition
        };
        Err(Error::broker_for(ApiKey::Metadata, code, topic, partition))
    }
}

/// ApiVersions: try v3 (flexible, names this client); a broker that does
/// not know v3 answers UNSUPPORTED_VERSION in v0 format with its ranges.
async fn negotiate_versions(raw: &RawConnection, timeout: Duration) -> Result<ApiVersionTable> {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kafka-rs"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let mut resp = raw.call(&req, 3, timeout).await?;
    if resp.error_code == KafkaCode::UnsupportedVersion.code() {
        resp = raw.call(&ApiVersionsRequest::default(), 0, timeout).await?;
    }
    crate::error::check_code(ApiKey::ApiVersions, resp.error_code)?;
    Ok(ApiVersionTable::negotiate(
        resp.api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version)),
    ))
}

fn spawn_periodic_refresh(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let Some(period) = inner.upgrade().map(|i| i.config.metadata_max_age) else {
                return;
            };
            tokio::time::sleep(period).await;
            let Some(inner) = inner.upgrade() else { return };
            let client = Client { inner };
            // Refresh what we use, not every topic in the cluster.
            let known: Vec<String> = client.metadata().topics.keys().cloned().collect();
            if let Err(e) = client.refresh_metadata(Some(&known)).await {
                tracing::warn!(error = %e, "periodic metadata refresh failed");
            }
        }
    });
}
