//! The cluster client: connections per broker and lane, metadata, routing.
//!
//! ```text
//!   Client (cheap clone) ──▶ Inner
//!                             ├─ config (+ TLS connector, built once)
//!                             ├─ slots: (broker id, Lane) ──▶ Connection (one task each)
//!                             ├─ metadata: Arc<Metadata>, refreshed with coalescing
//!                             └─ recovery: whom a refresh asks (KIP-899/1102, `recovery`)
//! ```
//!
//! Lanes keep traffic classes apart: a fetch that long-polls for
//! `fetch.max.wait.ms` never delays a heartbeat or a metadata request,
//! because each lane to a broker is its own TCP connection.
//!
//! A refresh asks the brokers the metadata lists, then the bootstrap
//! addresses (`metadata.recovery.strategy=rebootstrap`, the default), or
//! the known brokers alone (`none`). A broker that leaves the metadata, or
//! comes back on another address, loses its connections at once.

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
use crate::config::{ClientConfig, MetadataRecoveryStrategy};
use crate::connection::{Connection, ConnectionInfo, RawConnection};
use crate::connector::BrokerAddress;
use crate::error::{Error, ErrorAction, KafkaCode, Result};
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
    /// Whom a refresh asks: known brokers, bootstrap addresses, or a
    /// rebootstrap (changed only under `refresh_lock`).
    recovery: Mutex<recovery::Recovery>,
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

/// How one round of metadata requests ended.
enum Asked {
    /// A broker answered; its metadata is merged.
    Merged(Arc<Metadata>),
    /// A broker answered REBOOTSTRAP_REQUIRED (KIP-1102).
    RebootstrapRequired(Error),
    /// Nobody answered with metadata; the last error.
    Failed(Error),
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
                recovery: Mutex::new(recovery::Recovery::default()),
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
    /// Whom it asks is `recovery::Recovery::plan`'s answer: the known
    /// brokers, then the bootstrap addresses; or, in a rebootstrap (a
    /// broker answered REBOOTSTRAP_REQUIRED, or no refresh got metadata for
    /// `metadata.recovery.rebootstrap.trigger.ms`), the bootstrap addresses
    /// alone, dialed anew. Under `metadata.recovery.strategy=none` the
    /// bootstrap addresses serve the first metadata only.
    ///
    /// # Errors
    /// The last connection error when no broker answers (under `none`,
    /// [`Error::Metadata`] saying the bootstrap addresses were not asked);
    /// [`Error::Broker`] for a top-level error in the response (Metadata
    /// v13), REBOOTSTRAP_REQUIRED included when a rebootstrap did not cure
    /// it or the strategy is `none`.
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
        let c = &self.inner.config;
        // At most two rounds: the second is the rebootstrap a broker asked
        // for in the first.
        let mut rebootstrapped = false;
        loop {
            let now = Instant::now();
            let plan = {
                let mut r = self.recovery();
                r.attempt(now);
                let plan = self.plan_with(&r, now);
                if plan.rebootstrap.is_some() {
                    r.rebootstrapping(now);
                }
                plan
            };
            if let Some(why) = plan.rebootstrap {
                tracing::info!(
                    reason = %why,
                    bootstrap = ?c.bootstrap_servers,
                    "metadata recovery: rebootstrapping (asking the bootstrap addresses, dialed anew)"
                );
                self.forget_bootstrap_connections();
                rebootstrapped = true;
            }
            match self.ask_metadata(&plan.ask, &req, topics.is_none()).await {
                Asked::Merged(md) => {
                    self.recovery().succeeded();
                    return Ok(md);
                }
                Asked::RebootstrapRequired(e)
                    if c.metadata_recovery_strategy == MetadataRecoveryStrategy::Rebootstrap
                        && !rebootstrapped =>
                {
                    tracing::info!(error = %e, "a broker asked this client to rebootstrap (KIP-1102)");
                    self.recovery().rebootstrap_required();
                }
                Asked::RebootstrapRequired(e) => return Err(e),
                Asked::Failed(e) => {
                    let known_only = c.metadata_recovery_strategy == MetadataRecoveryStrategy::None
                        && plan.ask.iter().all(|&id| id >= 0);
                    return Err(match e {
                        Error::Connection { .. } | Error::Timeout { .. } if known_only => {
                            Error::Metadata(format!(
                                "none of the {} known brokers answered (last: {e}); with \
                                 metadata.recovery.strategy=none the bootstrap addresses are not \
                                 asked again: if the brokers moved, restart the client or set \
                                 metadata.recovery.strategy=rebootstrap",
                                plan.ask.len()
                            ))
                        }
                        e => e,
                    });
                }
            }
        }
    }

    /// Ask `candidates` in order for metadata; merge the first answer.
    async fn ask_metadata(&self, candidates: &[i32], req: &MetadataRequest, full: bool) -> Asked {
        let mut last_err = None;
        for broker_id in self.ready_first(candidates, Lane::Control) {
            let conn = match self.connection(broker_id, Lane::Control).await {
                Ok(c) => c,
                Err(e)
                    if matches!(e, Error::Auth { .. } | Error::Tls { .. } | Error::Config(_)) =>
                {
                    return Asked::Failed(e)
                }
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            let resp = match conn
                .send(req, self.inner.config.request_timeout, Duration::ZERO)
                .await
            {
                Ok(resp) => resp,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            // Metadata v13 (KIP-1102): a top-level error means no metadata.
            if let Some(code) = KafkaCode::try_from_code(resp.error_code) {
                let e = Error::broker(ApiKey::Metadata, code);
                tracing::debug!(broker = broker_id, error = %e, "metadata refused");
                match code {
                    KafkaCode::RebootstrapRequired => return Asked::RebootstrapRequired(e),
                    _ if e.action() == ErrorAction::Fatal => return Asked::Failed(e),
                    _ => {
                        last_err = Some(e);
                        continue;
                    }
                }
            }
            // Merged under the lock: a leader hint applied meanwhile
            // (`apply_leader_hints`) is not overwritten.
            let (old, next) = {
                let mut cached = self.inner.metadata.write().expect("metadata lock poisoned");
                let mut next = (**cached).clone();
                next.merge(&resp, full);
                let next = Arc::new(next);
                (std::mem::replace(&mut *cached, next.clone()), next)
            };
            self.inner.metadata_version.fetch_add(1, Ordering::AcqRel);
            if full {
                self.inner.refresh_generation.fetch_add(1, Ordering::AcqRel);
            }
            self.forget_departed(&old, &next);
            return Asked::Merged(next);
        }
        Asked::Failed(last_err.unwrap_or_else(|| Error::Metadata("no broker to ask".into())))
    }

    /// Apply leader hints from a Fetch or Produce response (KIP-951) to the
    /// cached metadata at once, with no Metadata request: see
    /// [`Metadata::apply_leader_hints`] for which hints move a partition
    /// (a newer leader epoch only). The next request for a moved partition
    /// goes to its new leader. Refresh the metadata of
    /// [`HintsApplied::topics_to_refresh`](crate::HintsApplied::topics_to_refresh).
    pub fn apply_leader_hints(&self, hints: &crate::LeaderHints) -> crate::HintsApplied {
        if hints.is_empty() {
            return crate::HintsApplied::default();
        }
        let (applied, old, next) = {
            let mut cached = self.inner.metadata.write().expect("metadata lock poisoned");
            let mut next = (**cached).clone();
            let applied = next.apply_leader_hints(hints);
            if applied.moved.is_empty() {
                return applied;
            }
            let next = Arc::new(next);
            (applied, std::mem::replace(&mut *cached, next.clone()), next)
        };
        self.inner.metadata_version.fetch_add(1, Ordering::AcqRel);
        tracing::debug!(partitions = ?applied.moved, "leader hints applied (KIP-951)");
        self.forget_departed(&old, &next);
        applied
    }

    fn recovery(&self) -> std::sync::MutexGuard<'_, recovery::Recovery> {
        self.inner.recovery.lock().expect("recovery lock poisoned")
    }

    /// The plan for `now`, from the recovery state `r` and the known brokers.
    fn plan_with(&self, r: &recovery::Recovery, now: Instant) -> recovery::Plan {
        let c = &self.inner.config;
        let known: Vec<i32> = self.metadata().brokers.keys().copied().collect();
        r.plan(
            c.metadata_recovery_strategy,
            c.metadata_recovery_rebootstrap_trigger,
            &known,
            c.bootstrap_servers.len(),
            now,
        )
    }

    /// Brokers to ask for metadata (or any cluster-wide request), as the
    /// next refresh would: known brokers first, then bootstrap addresses
    /// unless the strategy is `none`.
    fn metadata_candidates(&self) -> Vec<i32> {
        let r = self.recovery();
        self.plan_with(&r, Instant::now()).ask
    }

    /// `candidates` in order, those whose redial on `lane` waits out a
    /// reconnect backoff now moved last (the soonest first): any broker
    /// answers a cluster-wide request, so one that just refused a dial is
    /// asked only when no other can be.
    ///
    /// [`Client::connection`] sleeps a failed broker's backoff off before
    /// dialing it again. A refresh that asked the known brokers in id order
    /// slept it each time the lowest id was down: with node 1 killed, every
    /// metadata refresh and every `any_connection` (FindCoordinator) of a
    /// group member waited up to `reconnect.backoff.max.ms` (1 s) before it
    /// asked node 2, until node 1 left the metadata (sim-tests'
    /// `cluster::coordinator_kill`: the metadata a member reads with each
    /// JoinGroup answer took 0.8–1.2 s a time, the group's rejoin after the
    /// failover seconds).
    fn ready_first(&self, candidates: &[i32], lane: Lane) -> Vec<i32> {
        let now = Instant::now();
        let slots = self.inner.slots.lock().expect("slots lock poisoned");
        let waits: Vec<Option<Instant>> = candidates
            .iter()
            .map(|&id| {
                // A slot in use (dialing, say) is no known wait.
                let slot = slots.get(&(id, lane))?.try_lock().ok()?;
                slot.retry_at.filter(|&t| t > now)
            })
            .collect();
        order_by_wait(candidates, &waits)
    }

    /// Drop the connections of brokers that left the metadata or moved to
    /// another address: nothing dials a departed broker again, and a moved
    /// one is dialed at its new address with no backoff left from the old.
    fn forget_departed(&self, old: &Metadata, new: &Metadata) {
        let gone: Vec<i32> = old
            .brokers
            .iter()
            .filter(|(id, b)| new.brokers.get(id).map(|n| &n.address) != Some(&b.address))
            .map(|(id, _)| *id)
            .collect();
        if gone.is_empty() {
            return;
        }
        tracing::info!(brokers = ?gone, "brokers left the metadata or moved: their connections are dropped");
        self.inner
            .slots
            .lock()
            .expect("slots lock poisoned")
            .retain(|(id, _), _| !gone.contains(id));
    }

    /// Drop the bootstrap connections, so a rebootstrap dials (and
    /// resolves) each bootstrap address anew, with no backoff left over.
    fn forget_bootstrap_connections(&self) {
        self.inner
            .slots
            .lock()
            .expect("slots lock poisoned")
            .retain(|(id, _), _| *id >= 0);
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
        for id in self.ready_first(&self.metadata_candidates(), lane) {
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
    )
    // Cluster features (v3+): `transaction.version` picks the transaction
    // protocol (KIP-890).
    .with_finalized_features(
        resp.finalized_features
            .iter()
            .map(|f| (f.name.to_string(), f.max_version_level)),
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

/// `ids` with those that wait (`waits[i]` is when `ids[i]` may be dialed
/// again, `None`: now) after those that do not, the soonest first; order
/// kept otherwise.
fn order_by_wait(ids: &[i32], waits: &[Option<Instant>]) -> Vec<i32> {
    let mut order: Vec<(Option<Instant>, usize, i32)> = ids
        .iter()
        .zip(waits)
        .enumerate()
        .map(|(i, (&id, &wait))| (wait, i, id))
        .collect();
    // None sorts before Some: the ones dialable now first.
    order.sort_by_key(|&(wait, i, _)| (wait, i));
    order.into_iter().map(|(_, _, id)| id).collect()
}

/// Which brokers a metadata refresh asks (KIP-899/1102): pure, in its
/// own file.
pub(crate) mod recovery;

/// The client against scripted brokers (no network): which addresses a
/// refresh asks, and what it makes of a Metadata v13 top-level error.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{ApiKey, BrokerId, MetadataResponse};
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::config::MetadataRecoveryStrategy;
    use crate::fake_broker::{answer, api_versions, FakeBrokers};

    /// What the broker at one port does.
    #[derive(Debug, Clone)]
    enum Script {
        /// Refuses connections.
        Down,
        /// Answers every Metadata request with this.
        Answer(MetadataResponse),
    }

    /// Brokers by port on 127.0.0.1, each answering ApiVersions (Metadata
    /// up to v13) and Metadata as scripted at the time of the request.
    #[derive(Debug, Clone, Default)]
    struct FakeCluster {
        scripts: Arc<Mutex<HashMap<u16, Script>>>,
        /// Ports in the order their Metadata requests arrived.
        asked: Arc<Mutex<Vec<u16>>>,
        /// Ports in the order they were dialed.
        dialed: Arc<Mutex<Vec<u16>>>,
    }

    impl FakeCluster {
        fn set(&self, port: u16, script: Script) {
            self.scripts.lock().unwrap().insert(port, script);
        }

        /// Take the ports asked so far.
        fn asked(&self) -> Vec<u16> {
            std::mem::take(&mut *self.asked.lock().unwrap())
        }

        fn dialed(&self) -> Vec<u16> {
            std::mem::take(&mut *self.dialed.lock().unwrap())
        }
    }

    /// Metadata listing `brokers` as (id, port).
    fn metadata(brokers: &[(i32, u16)]) -> Script {
        Script::Answer(
            MetadataResponse::default().with_brokers(
                brokers
                    .iter()
                    .map(|&(id, port)| {
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(id))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(port))
                    })
                    .collect(),
            ),
        )
    }

    /// A Metadata v13 answer with a top-level error and nothing else.
    fn refusal(code: KafkaCode) -> Script {
        Script::Answer(MetadataResponse::default().with_error_code(code.code()))
    }

    impl FakeCluster {
        /// The scripted brokers as a connector (`crate::fake_broker`):
        /// ApiVersions (Metadata up to v13), then Metadata as scripted at
        /// the time of the request; a port scripted `Down` refuses.
        fn brokers(&self) -> FakeBrokers {
            let cluster = self.clone();
            let mut brokers = FakeBrokers::new(move |req| match req.api {
                Ok(ApiKey::ApiVersions) => Some(api_versions(
                    req,
                    &[(ApiKey::ApiVersions, 0, 3), (ApiKey::Metadata, 0, 13)],
                )),
                Ok(ApiKey::Metadata) => {
                    assert_eq!(req.version, 13, "Metadata v13 negotiated");
                    cluster.asked.lock().unwrap().push(req.port);
                    match cluster.scripts.lock().unwrap().get(&req.port).cloned() {
                        Some(Script::Answer(resp)) => Some(answer(req, resp)),
                        _ => None,
                    }
                }
                _ => None,
            });
            let cluster = self.clone();
            brokers.refused = Arc::new(move |port| {
                cluster.dialed.lock().unwrap().push(port);
                !matches!(
                    cluster.scripts.lock().unwrap().get(&port),
                    Some(Script::Answer(_))
                )
            });
            brokers
        }
    }

    /// The bootstrap address of these tests.
    const BOOTSTRAP: u16 = 9000;

    async fn connect(cluster: &FakeCluster, strategy: MetadataRecoveryStrategy) -> Client {
        let config = ClientConfig::builder()
            .bootstrap(&format!("127.0.0.1:{BOOTSTRAP}"))
            .unwrap()
            .connector(Arc::new(cluster.brokers()))
            .metadata_recovery_strategy(strategy)
            .metadata_max_age(Duration::from_secs(3600))
            .set("reconnect.backoff.ms", "1")
            .unwrap()
            .set("reconnect.backoff.max.ms", "1")
            .unwrap()
            .build()
            .unwrap();
        Client::connect(config).await.unwrap()
    }

    fn ports(client: &Client) -> Vec<(i32, u16)> {
        let mut b: Vec<(i32, u16)> = client
            .metadata()
            .brokers
            .values()
            .map(|b| (b.id, b.address.port))
            .collect();
        b.sort_unstable();
        b
    }

    fn slot_ids(client: &Client) -> Vec<i32> {
        let mut ids: Vec<i32> = client
            .inner
            .slots
            .lock()
            .unwrap()
            .keys()
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Two brokers on 9101, 9102 behind the bootstrap address; the client
    /// connected and knowing both.
    async fn two_brokers(strategy: MetadataRecoveryStrategy) -> (FakeCluster, Client) {
        let cluster = FakeCluster::default();
        let old = metadata(&[(1, 9101), (2, 9102)]);
        for port in [BOOTSTRAP, 9101, 9102] {
            cluster.set(port, old.clone());
        }
        let client = connect(&cluster, strategy).await;
        assert_eq!(ports(&client), vec![(1, 9101), (2, 9102)]);
        assert_eq!(cluster.asked(), vec![BOOTSTRAP]);
        cluster.dialed();
        (cluster, client)
    }

    /// The nodes were replaced on 9201, 9202; the bootstrap address (and
    /// the old brokers, when `old_answers`) answer with the new ones.
    fn move_brokers(cluster: &FakeCluster, old: Script) {
        let new = metadata(&[(1, 9201), (2, 9202)]);
        for port in [BOOTSTRAP, 9201, 9202] {
            cluster.set(port, new.clone());
        }
        cluster.set(9101, old.clone());
        cluster.set(9102, old);
    }

    #[test]
    fn brokers_waiting_out_a_backoff_are_asked_last_the_soonest_first() {
        let now = Instant::now();
        let later = |ms| Some(now + Duration::from_millis(ms));
        assert_eq!(
            order_by_wait(&[1, 2, 3, -1], &[later(900), None, later(100), None]),
            vec![2, -1, 3, 1]
        );
        assert_eq!(order_by_wait(&[3, 1, 2], &[None; 3]), vec![3, 1, 2]);
    }

    #[tokio::test]
    async fn a_refresh_asks_a_live_broker_before_waiting_out_a_dead_ones_backoff() {
        let cluster = FakeCluster::default();
        let md = metadata(&[(1, 9101), (2, 9102)]);
        for port in [BOOTSTRAP, 9101, 9102] {
            cluster.set(port, md.clone());
        }
        let config = ClientConfig::builder()
            .bootstrap(&format!("127.0.0.1:{BOOTSTRAP}"))
            .unwrap()
            .connector(Arc::new(cluster.brokers()))
            .metadata_max_age(Duration::from_secs(3600))
            .set("reconnect.backoff.ms", "2000")
            .unwrap()
            .set("reconnect.backoff.max.ms", "2000")
            .unwrap()
            .build()
            .unwrap();
        let client = Client::connect(config).await.unwrap();
        cluster.asked();
        // Broker 1 dies: the first refresh finds out (a refused dial).
        cluster.set(9101, Script::Down);
        client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(cluster.asked(), vec![9102]);
        // The next ones ask broker 2 at once, not after broker 1's 2 s.
        let t = std::time::Instant::now();
        client.refresh_metadata(Some(&[])).await.unwrap();
        client.any_connection(Lane::Control).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "waited {:?} for the dead broker's backoff",
            t.elapsed()
        );
        assert_eq!(cluster.asked(), vec![9102]);
    }

    #[tokio::test]
    async fn rebootstrap_required_sends_the_refresh_to_the_bootstrap_address_at_once() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::Rebootstrap).await;
        move_brokers(&cluster, refusal(KafkaCode::RebootstrapRequired));
        let md = client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(
            cluster.asked(),
            vec![9101, BOOTSTRAP],
            "broker 1 said 129: broker 2 is not asked, the bootstrap address is"
        );
        assert!(
            cluster.dialed().contains(&BOOTSTRAP),
            "the bootstrap address dialed anew"
        );
        assert_eq!(md.brokers.len(), 2);
        assert_eq!(ports(&client), vec![(1, 9201), (2, 9202)]);
        // Both brokers moved: their connections to the old ports are gone.
        client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(
            cluster.asked(),
            vec![9201],
            "the moved broker 1 is asked next"
        );
        assert!(
            cluster.dialed().contains(&9201),
            "at its new address, dialed afresh"
        );
    }

    #[tokio::test]
    async fn rebootstrap_required_under_none_is_a_typed_error_and_the_bootstrap_is_not_asked() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::None).await;
        move_brokers(&cluster, refusal(KafkaCode::RebootstrapRequired));
        let err = client.refresh_metadata(Some(&[])).await.unwrap_err();
        assert_eq!(err.code(), Some(KafkaCode::RebootstrapRequired), "{err}");
        assert_eq!(err.action(), ErrorAction::RefreshMetadataAndRetry);
        assert!(
            err.to_string().contains("metadata.recovery.strategy"),
            "{err}"
        );
        assert_eq!(cluster.asked(), vec![9101]);
        assert_eq!(ports(&client), vec![(1, 9101), (2, 9102)], "nothing merged");
    }

    #[tokio::test]
    async fn other_top_level_errors_are_typed_and_the_next_broker_is_asked() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::Rebootstrap).await;
        cluster.set(9101, refusal(KafkaCode::RequestTimedOut));
        client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(
            cluster.asked(),
            vec![9101, 9102],
            "retriable: the next broker"
        );

        // A fatal one ends the refresh with it, nothing merged.
        cluster.set(9101, refusal(KafkaCode::ClusterAuthorizationFailed));
        let err = client.refresh_metadata(Some(&[])).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(KafkaCode::ClusterAuthorizationFailed),
            "{err}"
        );
        assert_eq!(cluster.asked(), vec![9101]);
    }

    #[tokio::test]
    async fn every_known_broker_gone_the_bootstrap_address_finds_the_new_ones() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::Rebootstrap).await;
        move_brokers(&cluster, Script::Down);
        client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(cluster.asked(), vec![BOOTSTRAP]);
        assert_eq!(ports(&client), vec![(1, 9201), (2, 9202)]);
    }

    #[tokio::test]
    async fn under_none_every_known_broker_gone_is_an_error_naming_the_strategy() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::None).await;
        move_brokers(&cluster, Script::Down);
        let err = client.refresh_metadata(Some(&[])).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("metadata.recovery.strategy=none") && text.contains("2 known brokers"),
            "{text}"
        );
        assert!(
            !cluster.dialed().contains(&BOOTSTRAP),
            "the bootstrap address is not dialed after the first metadata"
        );
        assert!(client.any_connection(Lane::Control).await.is_err());
        assert!(!cluster.dialed().contains(&BOOTSTRAP));
    }

    #[tokio::test]
    async fn a_broker_that_left_the_metadata_loses_its_connections() {
        let (cluster, client) = two_brokers(MetadataRecoveryStrategy::Rebootstrap).await;
        client.connection(1, Lane::Control).await.unwrap();
        client.connection(2, Lane::Fetch).await.unwrap();
        assert_eq!(slot_ids(&client), vec![-1, 1, 2]);
        cluster.set(9101, metadata(&[(1, 9101)]));
        client.refresh_metadata(Some(&[])).await.unwrap();
        assert_eq!(ports(&client), vec![(1, 9101)]);
        assert_eq!(slot_ids(&client), vec![-1, 1], "broker 2's slots dropped");
        assert!(client.connection(2, Lane::Fetch).await.is_err());
    }
}
