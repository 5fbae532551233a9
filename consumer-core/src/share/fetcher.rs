//! The share fetch path as a pure state machine (KIP-932, KIP-1206,
//! KIP-1222): events and `now` in, [`Action`]s out. No I/O, no clock.
//!
//! In: the assignment ([`ShareFetcher::assign`], the seam a membership
//! calls), partition leaders, each broker's ShareFetch version, the
//! answers to the requests it asked for, and the application's calls
//! (`begin_poll`, `take_records`, `acknowledge`, `commit`, `close`).
//! Out: [`ShareFetcher::poll_action`] (refresh leaders, connect, send a
//! ShareFetch or a ShareAcknowledge) and [`ShareFetcher::poll_timeout`].
//!
//! ## A record's life in this member
//!
//! ```text
//!  ShareFetch answer: acquired ranges + batches
//!        │ offsets with a record              offsets without one (control, compacted)
//!        ▼                                          ▼
//!    Buffered ──(lock deadline passes)──▶ dropped   Pending(GAP)
//!        │ take_records (a poll)                    │
//!        ▼                                          │
//!    Delivered ──acknowledge / implicit ACCEPT──▶ Pending(type) ──▶ Sending ──answer──▶ gone
//!        ▲                                                              │
//!        └──────────────────── RENEW answered: new lock deadline ───────┘
//! ```
//!
//! Every acquired record is stamped with the broker and the share session
//! incarnation that acquired it. When that session starts over, the
//! broker has released those records: they are forgotten here, and their
//! unanswered acknowledgements are reported failed.
//!
//! ## When requests go (one at a time per broker share session)
//!
//! - **ShareFetch** when a poll wants records and none of that broker's
//!   partitions has records buffered. Acknowledgements released by then
//!   ride on it (piggy-backed).
//! - **ShareAcknowledge** when released acknowledgements wait and no
//!   ShareFetch is due, and at once for RENEW (its lock is running out).
//!   RENEW never rides on a ShareFetch: a ShareFetch carrying one could
//!   not fetch (Java sends it with every limit at 0).
//! - Acknowledgements are *released* for sending at the next poll, by
//!   `commit`/`close`, and at once for RENEW and for the RELEASE of
//!   buffered records whose partition was unassigned.
//! - On `close`: a last ShareAcknowledge with epoch -1 per open session.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_wire::messages::share_fetch_response::AcquiredRecords;
use kafka_wire::messages::{
    share_acknowledge_request as ack_req, share_fetch_request as fetch_req, ApiKey, GroupId,
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
};
use kafka_wire::records::Record;
use kafka_wire::{Error, KafkaCode, StrBytes};
use uuid::Uuid;

use super::acquired::{self, batches, Found};
use super::config::{AcknowledgementMode, AcquireMode, ShareConsumerConfig};
use super::error::ShareError;
use super::session::{InFlight, ShareSession};
use super::{AckOutcome, AcknowledgeType, ShareRecord, TopicIdPartition};
use crate::tp::TopicPartition;

/// The acquisition lock when the broker does not say
/// (`group.share.record.lock.duration.ms`'s default).
pub(crate) const DEFAULT_LOCK: Duration = Duration::from_secs(30);

/// The longest pause after answers with partition errors (Java's
/// `retry.backoff.max.ms` default).
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The first version with `share_acquire_mode` and RENEW.
const V2: i16 = 2;

/// What the fetcher needs of the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) group_id: String,
    pub(crate) member_id: String,
    pub(crate) ack_mode: AcknowledgementMode,
    pub(crate) acquire_mode: AcquireMode,
    pub(crate) max_poll_records: usize,
    pub(crate) max_wait: Duration,
    pub(crate) min_bytes: i32,
    pub(crate) max_bytes: i32,
    pub(crate) retry_backoff: Duration,
    pub(crate) max_decompressed: usize,
}

impl Settings {
    pub(crate) fn new(cfg: &ShareConsumerConfig, member_id: &str) -> Self {
        Self {
            group_id: cfg.group_id.clone(),
            member_id: member_id.to_string(),
            ack_mode: cfg.acknowledgement_mode,
            acquire_mode: cfg.acquire_mode,
            max_poll_records: cfg.max_poll_records,
            max_wait: cfg.fetch_max_wait,
            min_bytes: cfg.fetch_min_bytes,
            max_bytes: cfg.fetch_max_bytes,
            retry_backoff: cfg.retry_backoff,
            max_decompressed: cfg.max_decompressed_bytes,
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Look up these partitions' leaders (refresh metadata), then
    /// [`ShareFetcher::set_leaders`] (or `leaders_failed`).
    RefreshLeaders { partitions: Vec<TopicIdPartition> },
    /// Connect to `broker` and report its ShareFetch version
    /// ([`ShareFetcher::broker_version`], or `connect_failed`).
    Connect { broker: i32 },
    /// Send; the answer goes to [`ShareFetcher::handle_fetch`].
    Fetch {
        broker: i32,
        id: u64,
        request: ShareFetchRequest,
    },
    /// Send; the answer goes to [`ShareFetcher::handle_acknowledge`].
    Acknowledge {
        broker: i32,
        id: u64,
        request: ShareAcknowledgeRequest,
    },
}

/// An acknowledgement on the wire: a type, or GAP (no record at the offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Gap,
    Type(AcknowledgeType),
}

impl Ack {
    fn wire(self) -> i8 {
        match self {
            Ack::Gap => 0,
            Ack::Type(t) => t.wire(),
        }
    }
}

/// Where one acquired record stands in this member.
#[derive(Debug)]
enum Held {
    /// Acquired, not yet returned by a poll.
    Buffered(Record),
    /// Returned by a poll, not acknowledged yet. `renewed`: a RENEW was
    /// answered, so the application is still working on it.
    Delivered { renewed: bool },
    /// Acknowledged (or a gap), to be sent once `released`.
    Pending { ack: Ack, released: bool },
    /// In the request `request`. `then`: the acknowledgement the
    /// application gave while a RENEW was on its way.
    Sending {
        ack: Ack,
        request: u64,
        then: Option<AcknowledgeType>,
    },
}

/// One acquired record (or gap) and the session that acquired it.
#[derive(Debug)]
struct Acquired {
    broker: i32,
    incarnation: u64,
    delivery_count: u16,
    /// This member's view of the acquisition lock's end: the answer's
    /// arrival plus `acquisition_lock_timeout_ms`, a little later than the
    /// broker's own.
    deadline: Instant,
    state: Held,
}

/// Acknowledgement outcomes being gathered: per partition and type, the
/// offsets, and the error they share.
type OutcomeKey = (TopicPartition, AcknowledgeType);

/// The share fetch path's state. See the module docs.
#[derive(Debug)]
pub(crate) struct ShareFetcher {
    s: Settings,
    assigned: BTreeSet<TopicIdPartition>,
    leaders: HashMap<TopicIdPartition, i32>,
    /// A RefreshLeaders is out.
    leaders_pending: bool,
    leaders_not_before: Option<Instant>,
    /// ShareFetch version per broker; `None` while connecting.
    versions: HashMap<i32, Option<i16>>,
    sessions: BTreeMap<i32, ShareSession>,
    held: BTreeMap<TopicIdPartition, BTreeMap<i64, Acquired>>,
    /// A poll is waiting for records (cleared when one returns some).
    wants_records: bool,
    next_id: u64,
    outcomes: Vec<AckOutcome>,
    fatal: Option<ShareError>,
    closing: bool,
    /// The acquisition lock the broker last announced.
    lock_timeout: Option<Duration>,
    /// Where the next `take_records` starts (fairness across partitions).
    rotation: usize,
    /// The last error each partition's answers carried (logged once).
    partition_errors: HashMap<TopicIdPartition, KafkaCode>,
    /// Answers in a row with partition errors, per broker (the backoff).
    failing: HashMap<i32, u32>,
}

impl ShareFetcher {
    pub(crate) fn new(s: Settings) -> Self {
        Self {
            s,
            assigned: BTreeSet::new(),
            leaders: HashMap::new(),
            leaders_pending: false,
            leaders_not_before: None,
            versions: HashMap::new(),
            sessions: BTreeMap::new(),
            held: BTreeMap::new(),
            wants_records: false,
            next_id: 1,
            outcomes: Vec::new(),
            fatal: None,
            closing: false,
            lock_timeout: None,
            rotation: 0,
            partition_errors: HashMap::new(),
            failing: HashMap::new(),
        }
    }

    // ---- inputs: assignment, leaders, brokers -------------------------

    /// The partitions this member fetches from now on (the whole set).
    /// The seam a membership calls. Records buffered for partitions taken
    /// away are RELEASEd at once, so another member gets them sooner; such
    /// a partition leaves its share session at the next request, and the
    /// records of it the application still holds are acknowledged by
    /// ShareAcknowledge.
    pub(crate) fn assign(&mut self, parts: BTreeSet<TopicIdPartition>) {
        for tip in self.assigned.difference(&parts) {
            for a in self
                .held
                .get_mut(tip)
                .into_iter()
                .flat_map(|m| m.values_mut())
            {
                if matches!(a.state, Held::Buffered(_)) {
                    a.state = Held::Pending {
                        ack: Ack::Type(AcknowledgeType::Release),
                        released: true,
                    };
                }
            }
        }
        self.assigned = parts;
        let held = &self.held;
        let assigned = &self.assigned;
        self.leaders
            .retain(|tip, _| assigned.contains(tip) || held.contains_key(tip));
    }

    /// The group revoked `parts` (the member is still in the group): stop
    /// fetching them (their buffered records are RELEASEd, as in
    /// [`assign`](Self::assign)), and release every acknowledgement held
    /// for them, so they go now. Records the application still holds stay
    /// its own: acknowledged later, they go by ShareAcknowledge.
    pub(crate) fn revoke(&mut self, parts: &BTreeSet<TopicIdPartition>) {
        let kept = self.assigned.difference(parts).cloned().collect();
        self.assign(kept);
        for a in self.held_of(parts) {
            if let Held::Pending { released, .. } = &mut a.state {
                *released = true;
            }
        }
    }

    /// This member is out of the group (it stopped polling for longer
    /// than `max.poll.interval.ms`, or the coordinator fenced it): as
    /// [`revoke`](Self::revoke), and the records the application holds of
    /// `parts` are RELEASEd too, so that another member gets them now
    /// rather than when their locks run out. Acknowledging one later is
    /// refused, naming this.
    pub(crate) fn lose(&mut self, parts: &BTreeSet<TopicIdPartition>) {
        self.revoke(parts);
        for a in self.held_of(parts) {
            if matches!(a.state, Held::Delivered { .. }) {
                a.state = Held::Pending {
                    ack: Ack::Type(AcknowledgeType::Release),
                    released: true,
                };
            }
        }
    }

    /// The coordinator removed this member (it fenced it, or its session
    /// ran out with no heartbeat answered): the broker released every
    /// record this member had acquired of `parts`, and they may be
    /// another member's delivery by now. So stop fetching them and forget
    /// every record held of them, buffered, with the application, or
    /// acknowledged and not yet answered: none is acknowledged on the
    /// stale membership (an ACCEPT would be refused as
    /// INVALID_RECORD_STATE, a RELEASE could end the next delivery of the
    /// same record to this member id). Acknowledgements the application
    /// gave for them are reported failed (`cause`); acknowledging one of
    /// them later is refused. The share sessions go on: the member id
    /// does not change when it joins again.
    pub(crate) fn forget(&mut self, parts: &BTreeSet<TopicIdPartition>, cause: &Error) {
        let mut lost: BTreeMap<OutcomeKey, Vec<i64>> = BTreeMap::new();
        for tip in parts {
            for (off, a) in self.held.remove(tip).into_iter().flatten() {
                if let Held::Pending {
                    ack: Ack::Type(t), ..
                }
                | Held::Sending {
                    ack: Ack::Type(t), ..
                } = a.state
                {
                    lost.entry((tip.tp.clone(), t)).or_default().push(off);
                }
            }
        }
        // Nothing of `parts` is held now, so nothing is RELEASEd.
        let kept = self.assigned.difference(parts).cloned().collect();
        self.assign(kept);
        self.report(lost, Some(cause.clone()));
    }

    /// Has the fetch path sent what it owed `parts` after a
    /// [`revoke`](Self::revoke) or [`lose`](Self::lose), and heard back: no
    /// acknowledgement of theirs released and unanswered? Also true once
    /// closing or failed (nothing more will be answered).
    pub(crate) fn handed_over(&self, parts: &BTreeSet<TopicIdPartition>) -> bool {
        self.closing
            || self.fatal.is_some()
            || parts
                .iter()
                .filter_map(|tip| self.held.get(tip))
                .flat_map(|m| m.values())
                .all(|a| {
                    !matches!(
                        a.state,
                        Held::Pending { released: true, .. } | Held::Sending { .. }
                    )
                })
    }

    fn held_of<'a>(
        &'a mut self,
        parts: &'a BTreeSet<TopicIdPartition>,
    ) -> impl Iterator<Item = &'a mut Acquired> + 'a {
        self.held
            .iter_mut()
            .filter(|(tip, _)| parts.contains(*tip))
            .flat_map(|(_, m)| m.values_mut())
    }

    /// How long a ShareFetch may wait at the broker (`fetch.max.wait.ms`).
    pub(crate) fn max_wait(&self) -> Duration {
        self.s.max_wait
    }

    /// The assigned partitions.
    pub(crate) fn assignment(&self) -> &BTreeSet<TopicIdPartition> {
        &self.assigned
    }

    /// Leaders learned (by RefreshLeaders). Partitions without a leader
    /// are asked for again after `retry.backoff.ms`.
    pub(crate) fn set_leaders(&mut self, leaders: HashMap<TopicIdPartition, i32>, now: Instant) {
        self.leaders_pending = false;
        self.leaders.extend(leaders);
        if self.assigned.iter().any(|t| !self.leaders.contains_key(t)) {
            self.leaders_not_before = Some(now + self.s.retry_backoff);
        }
    }

    /// The leader lookup failed: ask again after `retry.backoff.ms`.
    pub(crate) fn leaders_failed(&mut self, now: Instant) {
        self.leaders_pending = false;
        self.leaders_not_before = Some(now + self.s.retry_backoff);
    }

    /// `broker` speaks ShareFetch (and ShareAcknowledge) at `version`.
    pub(crate) fn broker_version(&mut self, broker: i32, version: i16) {
        self.versions.insert(broker, Some(version));
        if self.s.acquire_mode == AcquireMode::RecordLimit && version < V2 {
            self.fail(ShareError::Wire(Error::Config(format!(
                "share.acquire.mode=record_limit needs ShareFetch v2 (Kafka 4.2 or later), and \
                 broker {broker} speaks v{version}: use share.acquire.mode=batch_optimized, or \
                 upgrade the brokers"
            ))));
        }
    }

    /// The connection to `broker` failed: try again after `retry.backoff.ms`.
    pub(crate) fn connect_failed(&mut self, broker: i32, now: Instant) {
        self.versions.remove(&broker);
        let retry_at = now + self.s.retry_backoff;
        self.session(broker).start_over(retry_at);
    }

    /// A failure no retry cures: every later poll returns it.
    pub(crate) fn fail(&mut self, e: ShareError) {
        if self.fatal.is_none() {
            tracing::error!(error = %e, "share consumer failed");
            self.fatal = Some(e);
        }
    }

    pub(crate) fn fatal(&self) -> Option<&ShareError> {
        self.fatal.as_ref()
    }

    fn session(&mut self, broker: i32) -> &mut ShareSession {
        self.sessions.entry(broker).or_default()
    }

    // ---- the application's calls -----------------------------------------

    /// A poll starts. Implicit mode accepts what the last poll returned;
    /// explicit mode refuses to go on while some of it is unacknowledged.
    /// Every acknowledgement made so far is released for sending.
    ///
    /// # Errors
    /// The failure that stopped the consumer, [`ShareError::Closed`], or
    /// [`ShareError::Unacknowledged`].
    pub(crate) fn begin_poll(&mut self) -> Result<(), ShareError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        if self.closing {
            return Err(ShareError::Closed);
        }
        if self.s.ack_mode == AcknowledgementMode::Explicit {
            let mut unacked = self.held.iter().flat_map(|(tip, m)| {
                m.iter()
                    .filter(|(_, a)| matches!(a.state, Held::Delivered { renewed: false }))
                    .map(move |(off, _)| (tip, *off))
            });
            if let Some((tip, offset)) = unacked.next() {
                return Err(ShareError::Unacknowledged {
                    count: 1 + unacked.count(),
                    tp: tip.tp.clone(),
                    offset,
                });
            }
        }
        self.settle_for_commit();
        self.wants_records = true;
        Ok(())
    }

    /// Implicit mode: ACCEPT what was delivered. Then release every
    /// pending acknowledgement.
    fn settle_for_commit(&mut self) {
        let implicit = self.s.ack_mode == AcknowledgementMode::Implicit;
        for a in self.held.values_mut().flat_map(|m| m.values_mut()) {
            match &mut a.state {
                Held::Delivered { .. } if implicit => {
                    a.state = Held::Pending {
                        ack: Ack::Type(AcknowledgeType::Accept),
                        released: true,
                    }
                }
                Held::Pending { released, .. } => *released = true,
                _ => {}
            }
        }
    }

    /// Up to `max.poll.records` buffered records whose lock has not run
    /// out, oldest first within a partition, starting from a different
    /// partition each call. They are Delivered from now on.
    pub(crate) fn take_records(&mut self, now: Instant) -> Vec<ShareRecord> {
        self.expire(now);
        let max = self.s.max_poll_records;
        let keys: Vec<TopicIdPartition> = self.held.keys().cloned().collect();
        let mut out = Vec::new();
        if keys.is_empty() {
            return out;
        }
        let start = self.rotation % keys.len();
        for tip in keys[start..].iter().chain(&keys[..start]) {
            let Some(records) = self.held.get_mut(tip) else {
                continue;
            };
            for a in records.values_mut() {
                if out.len() == max {
                    break;
                }
                if !matches!(a.state, Held::Buffered(_)) {
                    continue;
                }
                let Held::Buffered(record) =
                    std::mem::replace(&mut a.state, Held::Delivered { renewed: false })
                else {
                    unreachable!("matched Buffered above");
                };
                out.push(ShareRecord {
                    tp: tip.tp.clone(),
                    topic_id: tip.topic_id,
                    record,
                    delivery_count: a.delivery_count,
                });
            }
        }
        if !out.is_empty() {
            self.rotation = self.rotation.wrapping_add(1);
            self.wants_records = false;
        }
        out
    }

    /// Acknowledge one delivered record (explicit mode). RENEW is released
    /// at once; the others go with the next poll's ShareFetch, or by
    /// `commit`.
    ///
    /// # Errors
    /// [`ShareError::InvalidAcknowledge`]: implicit mode, a record this
    /// member does not hold (never delivered here, acknowledged and
    /// answered already, or lost with its share session), or one already
    /// acknowledged.
    pub(crate) fn acknowledge(
        &mut self,
        tp: &TopicPartition,
        topic_id: Uuid,
        offset: i64,
        ty: AcknowledgeType,
    ) -> Result<(), ShareError> {
        let refuse = |reason: String| ShareError::InvalidAcknowledge {
            tp: tp.clone(),
            offset,
            reason,
        };
        if self.s.ack_mode == AcknowledgementMode::Implicit {
            return Err(refuse(
                "share.acknowledgement.mode=implicit accepts every record at the next poll; \
                 set share.acknowledgement.mode=explicit to acknowledge records one by one"
                    .into(),
            ));
        }
        let tip = TopicIdPartition::new(topic_id, tp.clone());
        let Some(a) = self.held.get_mut(&tip).and_then(|m| m.get_mut(&offset)) else {
            return Err(refuse(
                "this consumer does not hold it: it was not delivered here, its acknowledgement \
                 was answered already, its share session ended, or this member gave it back when \
                 it left the group (then it is delivered again)"
                    .into(),
            ));
        };
        let renew = ty == AcknowledgeType::Renew;
        a.state = match (&mut a.state, ty) {
            (Held::Buffered(_), _) => {
                return Err(refuse("no poll has returned it yet".into()));
            }
            (Held::Delivered { .. }, _)
            | (
                Held::Pending {
                    ack: Ack::Type(AcknowledgeType::Renew),
                    ..
                },
                _,
            ) => Held::Pending {
                ack: Ack::Type(ty),
                released: renew,
            },
            (
                Held::Sending {
                    ack: Ack::Type(AcknowledgeType::Renew),
                    then,
                    ..
                },
                t,
            ) => {
                if !renew {
                    *then = Some(t);
                }
                return Ok(());
            }
            (Held::Pending { ack, .. } | Held::Sending { ack, .. }, _)
                if *ack == Ack::Type(AcknowledgeType::Release) && !self.assigned.contains(&tip) =>
            {
                return Err(refuse(
                    "this member gave it back to the group (RELEASE) when it lost the partition: \
                     it left the group because the application did not poll within \
                     max.poll.interval.ms, or the coordinator fenced it; the record is \
                     delivered again"
                        .into(),
                ));
            }
            (Held::Pending { ack, .. } | Held::Sending { ack, .. }, _) => {
                return Err(refuse(format!("it was acknowledged already ({ack:?})")));
            }
        };
        Ok(())
    }

    /// `commit_sync`/`commit_async`: implicit mode accepts what was
    /// delivered; every pending acknowledgement is released.
    pub(crate) fn commit(&mut self) {
        self.settle_for_commit();
    }

    /// Acknowledgements released or on their way, not answered yet.
    pub(crate) fn unanswered_acks(&self) -> usize {
        self.held
            .values()
            .flat_map(|m| m.values())
            .filter(|a| {
                matches!(
                    a.state,
                    Held::Pending { released: true, .. } | Held::Sending { .. }
                )
            })
            .count()
    }

    /// The outcomes of acknowledgements answered since the last call.
    pub(crate) fn take_outcomes(&mut self) -> Vec<AckOutcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// The end of a held record's acquisition lock, as this member sees it.
    pub(crate) fn lock_deadline(&self, tip: &TopicIdPartition, offset: i64) -> Option<Instant> {
        self.held.get(tip)?.get(&offset).map(|a| a.deadline)
    }

    /// The acquisition lock the broker last announced
    /// (`acquisition_lock_timeout_ms`).
    pub(crate) fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout
    }

    /// Start closing: implicit mode accepts what was delivered; pending
    /// acknowledgements go in a last ShareAcknowledge (epoch -1) per open
    /// session, which also releases every other record acquired here.
    /// Buffered records and unsent RENEWs are dropped (the close releases
    /// them).
    pub(crate) fn close(&mut self) {
        if self.closing {
            return;
        }
        self.settle_for_commit();
        self.closing = true;
        self.wants_records = false;
        for m in self.held.values_mut() {
            m.retain(|_, a| {
                !matches!(
                    a.state,
                    Held::Buffered(_)
                        | Held::Pending {
                            ack: Ack::Type(AcknowledgeType::Renew),
                            ..
                        }
                )
            });
        }
    }

    /// Closing, and every share session closed (or never opened), or
    /// failed (nothing more will be sent).
    pub(crate) fn is_closed(&self) -> bool {
        self.closing
            && (self.fatal.is_some()
                || self
                    .sessions
                    .values()
                    .all(|s| s.is_finished() || (!s.is_open() && s.in_flight().is_none())))
    }

    // ---- time ----------------------------------------------------------

    /// When [`ShareFetcher::handle_timeout`] (or `poll_action`) has work:
    /// a buffered record's lock runs out, or a held-back request may go.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let locks = self
            .held
            .values()
            .flat_map(|m| m.values())
            .filter(|a| matches!(a.state, Held::Buffered(_)))
            .map(|a| a.deadline);
        let waits = self.sessions.values().filter_map(|s| s.not_before());
        locks.chain(waits).chain(self.leaders_not_before).min()
    }

    /// Drop buffered records whose lock ran out: the broker has released
    /// them (and may have handed them to another member).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        for (tip, m) in &mut self.held {
            let before = m.len();
            m.retain(|_, a| !(matches!(a.state, Held::Buffered(_)) && a.deadline <= now));
            if m.len() < before {
                tracing::debug!(
                    %tip,
                    dropped = before - m.len(),
                    "acquisition lock ran out before a poll took the records"
                );
            }
        }
        self.held.retain(|_, m| !m.is_empty());
    }

    // ---- requests --------------------------------------------------------

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Option<Action> {
        if self.fatal.is_some() {
            return None;
        }
        if !self.closing
            && !self.leaders_pending
            && self.leaders_not_before.is_none_or(|t| now >= t)
        {
            let missing: Vec<TopicIdPartition> = self
                .assigned
                .iter()
                .filter(|t| !self.leaders.contains_key(t))
                .cloned()
                .collect();
            if !missing.is_empty() {
                self.leaders_pending = true;
                self.leaders_not_before = None;
                return Some(Action::RefreshLeaders {
                    partitions: missing,
                });
            }
        }
        for broker in self.brokers() {
            if !self.session(broker).can_send(now) {
                continue;
            }
            let version = match self.versions.get(&broker) {
                Some(Some(v)) => *v,
                Some(None) => continue, // connecting
                None if self.closing => {
                    self.session(broker).finish();
                    continue;
                }
                None => {
                    self.versions.insert(broker, None);
                    return Some(Action::Connect { broker });
                }
            };
            if let Some(action) = self.request_for(broker, version) {
                return Some(action);
            }
        }
        None
    }

    /// Brokers with something to do: leading an assigned partition,
    /// holding records acquired here, or with a session to close.
    fn brokers(&self) -> Vec<i32> {
        let mut b: BTreeSet<i32> = self
            .assigned
            .iter()
            .filter_map(|t| self.leaders.get(t).copied())
            .collect();
        b.extend(
            self.held
                .values()
                .flat_map(|m| m.values())
                .map(|a| a.broker),
        );
        if self.closing {
            b.extend(self.sessions.keys().copied());
        }
        b.into_iter().collect()
    }

    /// The request for `broker`'s session, if one is due.
    fn request_for(&mut self, broker: i32, version: i16) -> Option<Action> {
        let (open, incarnation) = {
            let s = self.session(broker);
            (s.is_open(), s.incarnation())
        };
        if self.closing {
            if !open {
                self.session(broker).finish();
                return None;
            }
            return self.acknowledge_request(broker, incarnation, true);
        }
        if version < V2 {
            self.refuse_renews(broker, incarnation, version);
        }
        // The session holds exactly the assigned partitions this broker
        // leads: an unassigned one leaves it at the next request (else
        // each ShareFetch would acquire more of it).
        let wanted: BTreeSet<TopicIdPartition> = self
            .assigned
            .iter()
            .filter(|t| self.leaders.get(t) == Some(&broker))
            .cloned()
            .collect();
        let buffered_here = self
            .held
            .values()
            .flat_map(|m| m.values())
            .any(|a| a.broker == broker && matches!(a.state, Held::Buffered(_)));
        let fetch_due = self.wants_records && !wanted.is_empty() && !buffered_here;
        if !open {
            // Epoch 0: every partition, no acknowledgements (the broker
            // refuses them with INVALID_REQUEST).
            return fetch_due.then(|| self.fetch_request(broker, version, wanted));
        }
        // RENEW cannot ride on a ShareFetch, nor can acknowledgements of
        // partitions outside the session (a ShareFetch naming one adds it).
        let alone = self
            .released(broker, incarnation)
            .any(|(tip, _, ack)| ack == Ack::Type(AcknowledgeType::Renew) || !wanted.contains(tip));
        if alone {
            return self.acknowledge_request(broker, incarnation, false);
        }
        if fetch_due {
            return Some(self.fetch_request(broker, version, wanted));
        }
        if self.released(broker, incarnation).next().is_some() {
            return self.acknowledge_request(broker, incarnation, false);
        }
        None
    }

    /// Released acknowledgements of records `broker`'s session
    /// `incarnation` acquired: (partition, offset, ack).
    fn released(
        &self,
        broker: i32,
        incarnation: u64,
    ) -> impl Iterator<Item = (&TopicIdPartition, i64, Ack)> + '_ {
        self.held.iter().flat_map(move |(tip, m)| {
            m.iter().filter_map(move |(off, a)| match a.state {
                Held::Pending {
                    ack,
                    released: true,
                } if a.broker == broker && a.incarnation == incarnation => Some((tip, *off, ack)),
                _ => None,
            })
        })
    }

    /// A broker below v2 knows no RENEW: those acknowledgements fail here,
    /// and the records stay with the application, their locks unchanged.
    fn refuse_renews(&mut self, broker: i32, incarnation: u64, version: i16) {
        let mut refused: BTreeMap<OutcomeKey, Vec<i64>> = BTreeMap::new();
        for (tip, m) in &mut self.held {
            for (off, a) in m.iter_mut() {
                if a.broker == broker
                    && a.incarnation == incarnation
                    && matches!(
                        a.state,
                        Held::Pending {
                            ack: Ack::Type(AcknowledgeType::Renew),
                            released: true
                        }
                    )
                {
                    a.state = Held::Delivered { renewed: false };
                    refused
                        .entry((tip.tp.clone(), AcknowledgeType::Renew))
                        .or_default()
                        .push(*off);
                }
            }
        }
        let e = Error::Config(format!(
            "RENEW needs ShareAcknowledge v2 (Kafka 4.2 or later, KIP-1222), and broker {broker} \
             speaks v{version}: the lock was not renewed"
        ));
        self.report(refused, Some(e));
    }

    /// Mark the released acknowledgements of `broker`'s session (of the
    /// partitions in `only`, if given) as sent in request `id`; returns
    /// them as (partition, offset, wire type).
    fn take_released(
        &mut self,
        broker: i32,
        incarnation: u64,
        id: u64,
        only: Option<&BTreeSet<TopicIdPartition>>,
    ) -> BTreeMap<TopicIdPartition, Vec<(i64, i8)>> {
        let mut acks: BTreeMap<TopicIdPartition, Vec<(i64, i8)>> = BTreeMap::new();
        for (tip, m) in &mut self.held {
            if only.is_some_and(|o| !o.contains(tip)) {
                continue;
            }
            for (off, a) in m.iter_mut() {
                if let Held::Pending {
                    ack,
                    released: true,
                } = a.state
                {
                    if a.broker == broker && a.incarnation == incarnation {
                        a.state = Held::Sending {
                            ack,
                            request: id,
                            then: None,
                        };
                        acks.entry(tip.clone())
                            .or_default()
                            .push((*off, ack.wire()));
                    }
                }
            }
        }
        acks
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn fetch_request(
        &mut self,
        broker: i32,
        version: i16,
        wanted: BTreeSet<TopicIdPartition>,
    ) -> Action {
        let id = self.next_id();
        let (open, incarnation, in_session) = {
            let s = self.session(broker);
            (s.is_open(), s.incarnation(), s.partitions().clone())
        };
        let acks = if open {
            self.take_released(broker, incarnation, id, Some(&wanted))
        } else {
            BTreeMap::new()
        };
        let added: Vec<TopicIdPartition> = wanted.difference(&in_session).cloned().collect();
        let forgotten: Vec<TopicIdPartition> = in_session.difference(&wanted).cloned().collect();
        let mut topics: BTreeMap<Uuid, Vec<fetch_req::FetchPartition>> = BTreeMap::new();
        let mut touched: BTreeSet<&TopicIdPartition> = added.iter().collect();
        touched.extend(acks.keys());
        for tip in touched {
            let batches = acks
                .get(tip)
                .map(|a| {
                    batches(a)
                        .into_iter()
                        .map(|(first, last, types)| {
                            fetch_req::AcknowledgementBatch::default()
                                .with_first_offset(first)
                                .with_last_offset(last)
                                .with_acknowledge_types(types)
                        })
                        .collect()
                })
                .unwrap_or_default();
            topics.entry(tip.topic_id).or_default().push(
                fetch_req::FetchPartition::default()
                    .with_partition_index(tip.tp.partition)
                    .with_acknowledgement_batches(batches),
            );
        }
        let mut forgotten_topics: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
        for tip in &forgotten {
            forgotten_topics
                .entry(tip.topic_id)
                .or_default()
                .push(tip.tp.partition);
        }
        let max_records = i32::try_from(self.s.max_poll_records).unwrap_or(i32::MAX);
        let epoch = self.session(broker).start(id, added, forgotten, false);
        let request = ShareFetchRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(
                self.s.group_id.clone(),
            ))))
            .with_member_id(Some(StrBytes::from_string(self.s.member_id.clone())))
            .with_share_session_epoch(epoch)
            .with_max_wait_ms(i32::try_from(self.s.max_wait.as_millis()).unwrap_or(i32::MAX))
            .with_min_bytes(self.s.min_bytes)
            .with_max_bytes(self.s.max_bytes)
            .with_max_records(max_records)
            .with_batch_size(max_records)
            .with_share_acquire_mode(if version >= V2 {
                self.s.acquire_mode.wire()
            } else {
                0
            })
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, partitions)| {
                        fetch_req::FetchTopic::default()
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_forgotten_topics_data(
                forgotten_topics
                    .into_iter()
                    .map(|(id, partitions)| {
                        fetch_req::ForgottenTopic::default()
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        Action::Fetch {
            broker,
            id,
            request,
        }
    }

    /// A ShareAcknowledge of every released acknowledgement (`close`: the
    /// final one, epoch -1, even when it carries none).
    fn acknowledge_request(
        &mut self,
        broker: i32,
        incarnation: u64,
        close: bool,
    ) -> Option<Action> {
        let id = self.next_id();
        let acks = self.take_released(broker, incarnation, id, None);
        if acks.is_empty() && !close {
            return None;
        }
        let renew = acks
            .values()
            .flatten()
            .any(|(_, t)| *t == AcknowledgeType::Renew.wire());
        let mut topics: BTreeMap<Uuid, Vec<ack_req::AcknowledgePartition>> = BTreeMap::new();
        for (tip, a) in &acks {
            topics.entry(tip.topic_id).or_default().push(
                ack_req::AcknowledgePartition::default()
                    .with_partition_index(tip.tp.partition)
                    .with_acknowledgement_batches(
                        batches(a)
                            .into_iter()
                            .map(|(first, last, types)| {
                                ack_req::AcknowledgementBatch::default()
                                    .with_first_offset(first)
                                    .with_last_offset(last)
                                    .with_acknowledge_types(types)
                            })
                            .collect(),
                    ),
            );
        }
        let epoch = self
            .session(broker)
            .start(id, Vec::new(), Vec::new(), close);
        let request = ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(StrBytes::from_string(
                self.s.group_id.clone(),
            ))))
            .with_member_id(Some(StrBytes::from_string(self.s.member_id.clone())))
            .with_share_session_epoch(epoch)
            .with_is_renew_ack(renew)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(id, partitions)| {
                        ack_req::AcknowledgeTopic::default()
                            .with_topic_id(id)
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        Some(Action::Acknowledge {
            broker,
            id,
            request,
        })
    }

    // ---- answers ---------------------------------------------------------

    /// The answer to ShareFetch `id` sent to `broker` (or why there is none).
    pub(crate) fn handle_fetch(
        &mut self,
        broker: i32,
        id: u64,
        answer: Result<ShareFetchResponse, Error>,
        now: Instant,
    ) {
        let Some((resp, done)) = self.top_level(broker, id, ApiKey::ShareFetch, answer, now) else {
            return;
        };
        let incarnation = self.session(broker).incarnation();
        let lock = lock_of(resp.acquisition_lock_timeout_ms);
        self.lock_timeout = Some(lock);
        let mut partition_errors = false;
        for topic in &resp.responses {
            for p in &topic.partitions {
                let Some(tip) = self.known(broker, &done, topic.topic_id, p.partition_index) else {
                    tracing::warn!(topic_id = %topic.topic_id, partition = p.partition_index,
                        "ShareFetch answered for a partition this member did not ask for");
                    continue;
                };
                let ack_error = code_error(
                    ApiKey::ShareFetch,
                    p.acknowledge_error_code,
                    &tip.tp,
                    p.acknowledge_error_message.as_deref(),
                );
                self.settle(&tip, id, ack_error, lock, now);
                match KafkaCode::try_from_code(p.error_code) {
                    Some(code) => {
                        partition_errors = true;
                        self.partition_error(&tip, code, p.error_message.as_deref());
                    }
                    None => {
                        self.partition_errors.remove(&tip);
                    }
                }
                self.materialize(
                    &tip,
                    p.records.clone(),
                    &p.acquired_records,
                    broker,
                    incarnation,
                    now + lock,
                );
            }
        }
        self.settle_unanswered(id, now);
        if partition_errors {
            // Do not spin on a partition the broker keeps refusing:
            // retry.backoff.ms, doubling per answer in a row, up to 1 s.
            let n = self.failing.entry(broker).or_default();
            *n = n.saturating_add(1);
            let pause = self
                .s
                .retry_backoff
                .saturating_mul(1 << (*n - 1).min(10))
                .min(MAX_BACKOFF.max(self.s.retry_backoff));
            self.session(broker).hold(now + pause);
        } else {
            self.failing.remove(&broker);
        }
    }

    /// The answer to ShareAcknowledge `id` sent to `broker`.
    pub(crate) fn handle_acknowledge(
        &mut self,
        broker: i32,
        id: u64,
        answer: Result<ShareAcknowledgeResponse, Error>,
        now: Instant,
    ) {
        let Some((resp, done)) = self.top_level(broker, id, ApiKey::ShareAcknowledge, answer, now)
        else {
            return;
        };
        let lock = if resp.acquisition_lock_timeout_ms > 0 {
            lock_of(resp.acquisition_lock_timeout_ms)
        } else {
            self.lock_timeout.unwrap_or(DEFAULT_LOCK)
        };
        for topic in &resp.responses {
            for p in &topic.partitions {
                let Some(tip) = self.known(broker, &done, topic.topic_id, p.partition_index) else {
                    continue;
                };
                let error = code_error(
                    ApiKey::ShareAcknowledge,
                    p.error_code,
                    &tip.tp,
                    p.error_message.as_deref(),
                );
                if let Some(code) = KafkaCode::try_from_code(p.error_code) {
                    self.partition_error(&tip, code, p.error_message.as_deref());
                }
                self.settle(&tip, id, error, lock, now);
            }
        }
        self.settle_unanswered(id, now);
        let session = self.session(broker);
        if session.is_finished() {
            // The final request: the broker released everything else.
            let incarnation = session.incarnation();
            self.forfeit(broker, incarnation, &mut BTreeMap::new());
        }
    }

    /// Top-level handling shared by both answers: a lost connection or a
    /// top-level error code ends the share session (the records it
    /// acquired are forgotten, their acknowledgements failed). Returns the
    /// response when the session goes on.
    fn top_level<R: TopLevel>(
        &mut self,
        broker: i32,
        id: u64,
        api: ApiKey,
        answer: Result<R, Error>,
        now: Instant,
    ) -> Option<(R, InFlight)> {
        let retry_at = now + self.s.retry_backoff;
        let error = match answer {
            Ok(resp) => match KafkaCode::try_from_code(resp.error_code()) {
                None => {
                    let answered = self.session(broker).answered(id);
                    return answered.map(|done| (resp, done));
                }
                Some(code) => {
                    let e = Error::broker_with_message(api, code, None, resp.error_message());
                    match code {
                        KafkaCode::GroupAuthorizationFailed
                        | KafkaCode::TopicAuthorizationFailed
                        | KafkaCode::InvalidRequest
                        | KafkaCode::UnsupportedVersion => self.fail(ShareError::Wire(e.clone())),
                        KafkaCode::UnknownTopicId | KafkaCode::UnknownTopicOrPartition => {
                            self.leaders.clear();
                        }
                        _ => {}
                    }
                    e
                }
            },
            Err(e) => {
                if matches!(e, Error::UnsupportedVersion { .. } | Error::Encode { .. }) {
                    self.fail(ShareError::Wire(e.clone()));
                }
                e
            }
        };
        let incarnation = self.session(broker).incarnation();
        if self.session(broker).failed(id, retry_at).is_some() {
            tracing::info!(broker, error = %error, "share session starts over");
            let mut lost = BTreeMap::new();
            self.forfeit(broker, incarnation, &mut lost);
            self.report(lost, Some(error));
        }
        None
    }

    /// The partition of `topic_id` this member knows: assigned, held, in
    /// `broker`'s session, or forgotten by the request `done` answers.
    fn known(
        &self,
        broker: i32,
        done: &InFlight,
        topic_id: Uuid,
        partition: i32,
    ) -> Option<TopicIdPartition> {
        let in_session = self
            .sessions
            .get(&broker)
            .into_iter()
            .flat_map(|s| s.partitions());
        self.assigned
            .iter()
            .chain(self.held.keys())
            .chain(in_session)
            .chain(&done.forgotten)
            .find(|t| t.topic_id == topic_id && t.tp.partition == partition)
            .cloned()
    }

    fn partition_error(&mut self, tip: &TopicIdPartition, code: KafkaCode, message: Option<&str>) {
        if self.partition_errors.insert(tip.clone(), code) != Some(code) {
            tracing::warn!(%tip, ?code, message, "share partition error (retrying)");
        }
        if matches!(
            code,
            KafkaCode::NotLeaderOrFollower
                | KafkaCode::FencedLeaderEpoch
                | KafkaCode::UnknownLeaderEpoch
                | KafkaCode::UnknownTopicId
                | KafkaCode::LeaderNotAvailable
        ) {
            self.leaders.remove(tip);
        }
    }

    /// Settle the acknowledgements request `id` carried for `tip`:
    /// answered with `error` (or not). A RENEW answered keeps the record
    /// with the application under a new lock deadline.
    fn settle(
        &mut self,
        tip: &TopicIdPartition,
        id: u64,
        error: Option<Error>,
        lock: Duration,
        now: Instant,
    ) {
        let mut done: BTreeMap<OutcomeKey, Vec<i64>> = BTreeMap::new();
        if let Some(m) = self.held.get_mut(tip) {
            m.retain(|off, a| {
                let Held::Sending { ack, request, then } = a.state else {
                    return true;
                };
                if request != id {
                    return true;
                }
                if let Ack::Type(t) = ack {
                    done.entry((tip.tp.clone(), t)).or_default().push(*off);
                }
                match (ack, &error, then) {
                    (Ack::Type(AcknowledgeType::Renew), None, then) => {
                        a.deadline = now + lock;
                        a.state = match then {
                            Some(t) => Held::Pending {
                                ack: Ack::Type(t),
                                released: false,
                            },
                            None => Held::Delivered { renewed: true },
                        };
                        true
                    }
                    _ => false,
                }
            });
        }
        self.held.retain(|_, m| !m.is_empty());
        self.report(done, error);
    }

    /// Acknowledgements of request `id` the answer did not mention: failed.
    fn settle_unanswered(&mut self, id: u64, now: Instant) {
        let tips: Vec<TopicIdPartition> = self
            .held
            .iter()
            .filter(|(_, m)| {
                m.values()
                    .any(|a| matches!(a.state, Held::Sending { request, .. } if request == id))
            })
            .map(|(t, _)| t.clone())
            .collect();
        for tip in tips {
            let e = Error::Metadata(format!(
                "the broker's answer did not mention {} (its acknowledgements are unconfirmed)",
                tip.tp
            ));
            self.settle(&tip, id, Some(e), Duration::ZERO, now);
        }
    }

    /// Forget every record `broker`'s session `incarnation` acquired,
    /// gathering its acknowledgements into `lost`.
    fn forfeit(
        &mut self,
        broker: i32,
        incarnation: u64,
        lost: &mut BTreeMap<OutcomeKey, Vec<i64>>,
    ) {
        for (tip, m) in &mut self.held {
            m.retain(|off, a| {
                if a.broker != broker || a.incarnation != incarnation {
                    return true;
                }
                if let Held::Pending {
                    ack: Ack::Type(t), ..
                }
                | Held::Sending {
                    ack: Ack::Type(t), ..
                } = a.state
                {
                    lost.entry((tip.tp.clone(), t)).or_default().push(*off);
                }
                false
            });
        }
        self.held.retain(|_, m| !m.is_empty());
    }

    fn report(&mut self, done: BTreeMap<OutcomeKey, Vec<i64>>, error: Option<Error>) {
        for ((tp, ack), offsets) in done {
            self.outcomes.push(AckOutcome {
                tp,
                ack,
                offsets,
                error: error.clone(),
            });
        }
    }

    /// Turn one partition's answer into held records
    /// ([`acquired::decode`]): a record is Buffered (with its range's
    /// delivery count), unless the partition was unassigned while the
    /// request was out (then RELEASEd); an offset without a record is a
    /// GAP to acknowledge; one a corrupt batch hid is RELEASEd (delivered
    /// again, to someone, its delivery count up).
    fn materialize(
        &mut self,
        tip: &TopicIdPartition,
        records: Option<Bytes>,
        ranges: &[AcquiredRecords],
        broker: i32,
        incarnation: u64,
        deadline: Instant,
    ) {
        let decoded = acquired::decode(tip, records, ranges, self.s.max_decompressed);
        let assigned = self.assigned.contains(tip);
        let release = || Held::Pending {
            ack: Ack::Type(AcknowledgeType::Release),
            released: true,
        };
        let held = self.held.entry(tip.clone()).or_default();
        for (offset, delivery_count, found) in decoded {
            if held.contains_key(&offset) {
                tracing::warn!(%tip, offset, "offset acquired twice; keeping the first");
                continue;
            }
            let state = match found {
                Found::Record(_) if !assigned => release(),
                Found::Record(record) => Held::Buffered(record),
                Found::Undecoded => release(),
                Found::Gap => Held::Pending {
                    ack: Ack::Gap,
                    released: false,
                },
            };
            held.insert(
                offset,
                Acquired {
                    broker,
                    incarnation,
                    delivery_count,
                    deadline,
                    state,
                },
            );
        }
        self.held.retain(|_, m| !m.is_empty());
    }
}

/// The top level of both answers.
trait TopLevel {
    fn error_code(&self) -> i16;
    fn error_message(&self) -> Option<&str>;
}

impl TopLevel for ShareFetchResponse {
    fn error_code(&self) -> i16 {
        self.error_code
    }
    fn error_message(&self) -> Option<&str> {
        self.error_message.as_deref()
    }
}

impl TopLevel for ShareAcknowledgeResponse {
    fn error_code(&self) -> i16 {
        self.error_code
    }
    fn error_message(&self) -> Option<&str> {
        self.error_message.as_deref()
    }
}

fn lock_of(ms: i32) -> Duration {
    if ms > 0 {
        Duration::from_millis(ms as u64)
    } else {
        DEFAULT_LOCK
    }
}

fn code_error(api: ApiKey, code: i16, tp: &TopicPartition, message: Option<&str>) -> Option<Error> {
    KafkaCode::try_from_code(code)
        .map(|c| Error::broker_for(api, c, &tp.topic, tp.partition).with_message(message))
}
