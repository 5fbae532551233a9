//! Transactions: `init_transactions`, `begin`, `send`,
//! `send_offsets_to_transaction` (KIP-447) and `commit` / `abort`.
//!
//! ```text
//! Uninitialized ─init_transactions─▶ Ready ─begin─▶ InTransaction ─commit/abort─▶ Ready
//!                                                        │ a record, the partitions or the
//!                                                        │ offsets failed; TRANSACTION_ABORTABLE
//!                                                        ▼
//!                                                  Abortable ─abort─▶ Ready
//! fenced, or the transactional.id not authorised (KIP-1050's application-
//! recoverable and the producer's own fatal errors) ─▶ Fatal
//! ```
//!
//! Two protocols (KIP-890, [`TxnProtocol`]), chosen by `init_transactions`
//! from the coordinator's finalized `transaction.version` and read again
//! after every transaction:
//!
//! - V1: a partition joins the transaction (AddPartitionsToTxn) before its
//!   first record is queued, so the broker never sees a transactional
//!   produce for a partition the coordinator does not know; the offsets
//!   join by AddOffsetsToTxn. One epoch for every transaction.
//! - V2: a partition joins with its first Produce (v12), the offsets with
//!   their TxnOffsetCommit (v5): no request before either. Every EndTxn
//!   (v5) bumps the epoch and answers the new one, which the next
//!   transaction's records carry (sequences start again at 0): a write of
//!   an ended transaction that arrives late is stale and refused
//!   (DESIGN.md, invariant 85).

use std::collections::HashSet;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::time::Instant;

use crate::client::Lane;
use crate::coordinator::CoordinatorKind;
use crate::error::{Error, ErrorAction, KafkaCode, Result};
use crate::throttle::{Throttle, ThrottleTime};
use crate::versions::TxnProtocol;

use super::{Producer, ProducerIdEpoch, QueueKey};

/// The consumer group a transaction commits offsets for (KIP-447: the
/// generation and member id let the coordinator fence zombie members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadata {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) enum TxnStatus {
    Uninitialized,
    Ready,
    InTransaction,
    /// A send failed: only `abort_transaction` is allowed.
    Abortable(Error),
    /// Fenced or unauthorised: the producer must be dropped.
    Fatal(Error),
}

#[derive(Debug)]
pub(crate) struct TxnState {
    pub status: TxnStatus,
    coordinator: Option<i32>,
    partitions: HashSet<QueueKey>,
    /// The coordinator knows of this transaction: a partition or the
    /// offsets were added to it (V1), or the offsets were sent (V2; a
    /// Produce sent counts too: `State::txn_produced`). Until then there
    /// is nothing to end, and EndTxn would be refused (INVALID_TXN_STATE;
    /// under V2 PRODUCER_FENCED, the epoch not being one the coordinator
    /// ended a transaction with), as Java's `transactionStarted`.
    started: bool,
}

impl Default for TxnState {
    fn default() -> Self {
        Self {
            status: TxnStatus::Uninitialized,
            coordinator: None,
            partitions: HashSet::new(),
            started: false,
        }
    }
}

/// Give up on CONCURRENT_TRANSACTIONS and friends after this long.
const TXN_RETRY_WINDOW: Duration = Duration::from_secs(30);

fn txn_id(id: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(id.to_string()))
}

/// What a transactional request that failed for good (after the retries
/// of [`Producer::to_coordinator`], or a record after its own) does to the
/// transaction, by KIP-1050's classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Fenced (a newer instance with this `transactional.id`, or the
    /// coordinator aborted a transaction that outlived its timeout), the
    /// producer id unknown to the coordinator, or the id not authorised:
    /// the producer is unusable.
    Unusable,
    /// Only `abort_transaction` is allowed now.
    Abortable,
    /// Unchanged: the same call may be made again (an abort), or either end
    /// (a commit whose outcome a retriable error left unknown).
    Open,
}

/// Which request failed, for [`fate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A record, AddPartitionsToTxn, AddOffsetsToTxn or TxnOffsetCommit:
    /// the transaction lacks something it was to hold.
    Content,
    /// EndTxn committing.
    Commit,
    /// EndTxn aborting.
    Abort,
}

/// The transaction's [`Fate`] after `step` failed with `err`.
fn fate(err: &Error, step: Step) -> Fate {
    let unusable = matches!(
        err.code(),
        Some(
            KafkaCode::ProducerFenced
                | KafkaCode::InvalidProducerEpoch
                | KafkaCode::InvalidProducerIdMapping
                | KafkaCode::TransactionalIdAuthorizationFailed
        )
    );
    match step {
        _ if unusable => Fate::Unusable,
        Step::Content => Fate::Abortable,
        Step::Commit if err.action() == ErrorAction::AbortTransaction => Fate::Abortable,
        Step::Commit | Step::Abort => Fate::Open,
    }
}

/// The producer id and epoch after an EndTxn answered `answered` (id,
/// epoch): under V2 (EndTxn v5) the ones the coordinator bumped to (a new
/// id at epoch 0 once the epoch ran out); before v5 the answer has none
/// (-1) and `current` stays.
fn after_end_txn(current: ProducerIdEpoch, answered: (i64, i16)) -> ProducerIdEpoch {
    match answered {
        (id, epoch) if id >= 0 && epoch >= 0 => ProducerIdEpoch { id, epoch },
        _ => current,
    }
}

impl Producer {
    fn transactional_id(&self) -> Result<&str> {
        self.cfg.transactional_id.as_deref().ok_or_else(|| {
            Error::Config(
                "this producer has no transactional.id; set it to use transactions".into(),
            )
        })
    }

    /// Send a request to a coordinator at `ceiling` at most (a V1
    /// transaction's EndTxn and TxnOffsetCommit: [`TxnProtocol::ceiling`]),
    /// retrying retriable codes and re-finding the coordinator when it
    /// moved, after the producer's backoff (at least the broker's throttle
    /// time), for up to `TXN_RETRY_WINDOW`.
    async fn to_coordinator<R: Request + 'static>(
        &self,
        kind: CoordinatorKind,
        key: &str,
        req: &R,
        ceiling: Option<i16>,
        code_of: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response>
    where
        R::Response: ThrottleTime,
    {
        let api = crate::connection::api_key::<R>();
        let deadline = Instant::now() + TXN_RETRY_WINDOW;
        let mut coordinator = match kind {
            CoordinatorKind::Transaction => self.txn.lock().await.coordinator,
            CoordinatorKind::Group => None,
        };
        let mut delays = self.cfg.retry_policy().delays();
        loop {
            let node = match coordinator {
                Some(n) => n,
                None => self.client.find_coordinator(kind, key).await?,
            };
            coordinator = Some(node);
            if kind == CoordinatorKind::Transaction {
                self.txn.lock().await.coordinator = Some(node);
            }
            let mut throttle = Throttle::default();
            let sent = match self.client.connection(node, Lane::Control).await {
                Ok(conn) => {
                    conn.send_at_most(req, ceiling, self.client.config().request_timeout)
                        .await
                }
                // Whatever the reason (refused, timed out, or the node left
                // the metadata when the controller fenced it), a coordinator
                // that cannot be reached is looked up again: its partition of
                // `__transaction_state` or `__consumer_offsets` has a new
                // leader by then, or will. Kept, it was dialed again for the
                // whole window, and every later call started from it
                // (DESIGN invariant 87).
                Err(e) => {
                    tracing::debug!(node, error = %e, "the coordinator cannot be reached; finding it again");
                    coordinator = None;
                    if kind == CoordinatorKind::Transaction {
                        self.txn.lock().await.coordinator = None;
                    }
                    Err(e)
                }
            };
            let outcome = sent.and_then(|resp| {
                throttle = resp.throttle();
                match KafkaCode::try_from_code(code_of(&resp)) {
                    None => Ok(resp),
                    Some(code) => Err(Error::broker(api, code)),
                }
            });
            let err = match outcome {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            match err.action() {
                ErrorAction::Fatal
                | ErrorAction::ResetProducerId
                | ErrorAction::Rejoin
                | ErrorAction::AbortTransaction => return Err(err),
                ErrorAction::FindCoordinatorAndRetry | ErrorAction::Reconnect => {
                    coordinator = None;
                    if kind == CoordinatorKind::Transaction {
                        self.txn.lock().await.coordinator = None;
                    }
                }
                ErrorAction::Retry | ErrorAction::RefreshMetadataAndRetry => {}
            }
            if Instant::now() > deadline {
                return Err(err);
            }
            let delay = delays
                .next_after(throttle)
                .unwrap_or(self.cfg.retry_backoff_max);
            tokio::time::sleep(delay).await;
        }
    }

    fn producer_id(&self) -> ProducerIdEpoch {
        self.shared
            .state
            .lock()
            .expect("producer state lock")
            .producer
    }

    fn protocol(&self) -> TxnProtocol {
        self.shared
            .state
            .lock()
            .expect("producer state lock")
            .txn_protocol
    }

    /// The protocol the transaction coordinator's connection says the
    /// cluster speaks, within `max_transaction_version`.
    ///
    /// # Errors
    /// Dial errors (the coordinator was found just before).
    async fn coordinator_protocol(&self) -> Result<TxnProtocol> {
        let known = self.txn.lock().await.coordinator;
        let find = || async {
            let node = self
                .client
                .find_coordinator(CoordinatorKind::Transaction, self.transactional_id()?)
                .await?;
            self.txn.lock().await.coordinator = Some(node);
            Ok::<_, Error>(node)
        };
        let conn = match known {
            Some(node) => match self.client.connection(node, Lane::Control).await {
                Ok(conn) => conn,
                // It moved (DESIGN invariant 87): ask where it is now.
                Err(_) => self.client.connection(find().await?, Lane::Control).await?,
            },
            None => self.client.connection(find().await?, Lane::Control).await?,
        };
        Ok(TxnProtocol::choose(
            &conn.info().versions,
            self.cfg.max_transaction_version,
        ))
    }

    /// Apply what a transactional request's failure (`err`, in `step`)
    /// does to the transaction ([`fate`]); the error to return. An
    /// unusable producer remembers why, and every later call says so
    /// (for an idempotent-only producer the same codes would mean "get a
    /// new producer id", but a transactional one must not).
    async fn failed(&self, err: Error, step: Step) -> Error {
        let mut txn = self.txn.lock().await;
        match fate(&err, step) {
            Fate::Unusable => {
                let fatal = Error::Transaction(format!(
                    "fenced: another producer with transactional.id {:?} took over, the \
                     coordinator aborted a transaction that outlived transaction.timeout.ms, or \
                     this one is not authorised ({err}); drop this producer",
                    self.cfg.transactional_id.as_deref().unwrap_or_default()
                ));
                txn.status = TxnStatus::Fatal(fatal.clone());
                fatal
            }
            Fate::Abortable => {
                if matches!(txn.status, TxnStatus::InTransaction) {
                    txn.status = TxnStatus::Abortable(err.clone());
                }
                err
            }
            Fate::Open => err,
        }
    }

    /// InitProducerId for this transactional id: a new epoch (fencing any
    /// older instance, aborting a transaction it left open), sequences
    /// from 0.
    async fn new_epoch(&self, id: &str) -> Result<()> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(id)))
            .with_transaction_timeout_ms(self.cfg.transaction_timeout.as_millis() as i32);
        let resp = self
            .to_coordinator(CoordinatorKind::Transaction, id, &req, None, |r| {
                r.error_code
            })
            .await?;
        let mut st = self.shared.state.lock().expect("producer state lock");
        st.producer = ProducerIdEpoch {
            id: resp.producer_id.0,
            epoch: resp.producer_epoch,
        };
        st.acc.reset_sequences();
        Ok(())
    }

    /// Register the transactional id, fence older producers with it, and
    /// choose the transaction protocol: V2 where the cluster finalized
    /// `transaction.version` ≥ 2 (and `max_transaction_version` allows),
    /// V1 otherwise ([`Producer::transaction_version`] says which).
    ///
    /// # Errors
    /// Configuration (no `transactional.id`), coordinator and authorization errors.
    ///
    /// # Cancel safety
    /// Not cancel safe: cancelled after InitProducerId was answered, the
    /// producer may hold an epoch it has not chosen a protocol for; call
    /// it again.
    pub async fn init_transactions(&self) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        self.new_epoch(&id).await?;
        let protocol = self.coordinator_protocol().await?;
        self.shared
            .state
            .lock()
            .expect("producer state lock")
            .txn_protocol = protocol;
        tracing::debug!(
            transactional_id = %id,
            transaction_version = protocol.level(),
            "transactions initialised"
        );
        self.txn.lock().await.status = TxnStatus::Ready;
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Start a transaction.
    ///
    /// # Errors
    /// When `init_transactions` has not run, or a transaction is open or failed.
    pub async fn begin_transaction(&self) -> Result<()> {
        let mut txn = self.txn.lock().await;
        match &txn.status {
            TxnStatus::Ready => {
                txn.status = TxnStatus::InTransaction;
                txn.partitions.clear();
                txn.started = false;
                let mut st = self.shared.state.lock().expect("producer state lock");
                st.txn_error = None;
                st.txn_produced = false;
                Ok(())
            }
            other => Err(state_error("begin_transaction", other)),
        }
    }

    /// Called by `send` for transactional producers: add `tp` to the
    /// transaction if it is new to it (under V2 its first Produce does).
    pub(crate) async fn add_to_transaction(&self, tp: &QueueKey) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        {
            let mut txn = self.txn.lock().await;
            match &txn.status {
                TxnStatus::InTransaction if txn.partitions.contains(tp) => return Ok(()),
                TxnStatus::InTransaction => {}
                other => return Err(state_error("send", other)),
            }
            if self.protocol() == TxnProtocol::V2 {
                txn.partitions.insert(tp.clone());
                return Ok(());
            }
        }
        let ProducerIdEpoch { id: pid, epoch } = self.producer_id();
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(&id))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(tp.0.to_string())))
                .with_partitions(vec![tp.1])]);
        let result = self
            .to_coordinator(CoordinatorKind::Transaction, &id, &req, None, |r| {
                r.results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| &t.results_by_partition)
                    .map(|p| p.partition_error_code)
                    .find(|c| *c != 0)
                    .unwrap_or(r.error_code)
            })
            .await;
        match result {
            Ok(_) => {
                let mut txn = self.txn.lock().await;
                txn.partitions.insert(tp.clone());
                txn.started = true;
                Ok(())
            }
            Err(e) => Err(self.failed(e, Step::Content).await),
        }
    }

    /// Commit consumed offsets as part of the transaction (consume-transform-produce).
    /// Under V1 AddOffsetsToTxn goes first; under V2 the TxnOffsetCommit
    /// (v5) adds them itself.
    ///
    /// # Errors
    /// Coordinator errors; ILLEGAL_GENERATION / FENCED_INSTANCE_ID when the
    /// group moved on. Any failure leaves the transaction abortable: its
    /// outputs must not commit without their offsets.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(String, i32, i64)],
        group: &GroupMetadata,
    ) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        {
            let txn = self.txn.lock().await;
            if !matches!(txn.status, TxnStatus::InTransaction) {
                return Err(state_error("send_offsets_to_transaction", &txn.status));
            }
        }
        let ProducerIdEpoch { id: pid, epoch } = self.producer_id();
        let protocol = self.protocol();
        if protocol == TxnProtocol::V1 {
            let add = AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn_id(&id))
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
                .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())));
            if let Err(e) = self
                .to_coordinator(CoordinatorKind::Transaction, &id, &add, None, |r| {
                    r.error_code
                })
                .await
            {
                return Err(self.failed(e, Step::Content).await);
            }
        }
        // Under V2 the group coordinator may have added the offsets to the
        // transaction even if this fails: there is something to end.
        self.txn.lock().await.started = true;
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for (topic, partition, offset) in offsets {
            let entry = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let commit = TxnOffsetCommitRequest::default()
            .with_transactional_id(txn_id(&id))
            .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(group.generation_id)
            .with_member_id(StrBytes::from_string(group.member_id.clone()))
            .with_group_instance_id(
                group
                    .group_instance_id
                    .as_ref()
                    .map(|g| StrBytes::from_string(g.clone())),
            )
            .with_topics(topics);
        let ceiling = protocol.ceiling(ApiKey::TxnOffsetCommit);
        match self
            .to_coordinator(
                CoordinatorKind::Group,
                &group.group_id,
                &commit,
                ceiling,
                |r| {
                    r.topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .map(|p| p.error_code)
                        .find(|c| *c != 0)
                        .unwrap_or(0)
                },
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(e, Step::Content).await),
        }
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        let step = if commit { Step::Commit } else { Step::Abort };
        // Every record of the transaction must be acknowledged first. Its
        // failures are the transaction's: one fails the commit (below,
        // `txn_error`), and an abort discards every record anyway.
        self.wait_until_sent().await;
        let (failed, produced) = {
            let mut st = self.shared.state.lock().expect("producer state lock");
            (st.txn_error.take(), st.txn_produced)
        };
        // A record rejected for a stale epoch means we were fenced: fatal.
        let failed = match failed {
            Some(e) => match fate(&e, Step::Content) {
                Fate::Unusable => Some(self.failed(e, Step::Content).await),
                _ => Some(e),
            },
            None => None,
        };
        let protocol = self.protocol();
        {
            let mut txn = self.txn.lock().await;
            let started = txn.started || (protocol == TxnProtocol::V2 && produced);
            match (&txn.status, commit, failed) {
                (TxnStatus::InTransaction, true, Some(e)) => {
                    txn.status = TxnStatus::Abortable(e.clone());
                    return Err(e);
                }
                // Nothing reached the coordinator (no partition, no
                // offsets; say, the only record was refused before it was
                // sent): end it here.
                (TxnStatus::InTransaction | TxnStatus::Abortable(_), _, _) if !started => {
                    if !commit {
                        let _ = self.shared.log.take();
                    }
                    txn.status = TxnStatus::Ready;
                    txn.partitions.clear();
                    return Ok(());
                }
                (TxnStatus::InTransaction, _, _) => {}
                (TxnStatus::Abortable(_), false, _) => {}
                (other, _, _) => {
                    return Err(state_error(
                        if commit {
                            "commit_transaction"
                        } else {
                            "abort_transaction"
                        },
                        other,
                    ))
                }
            }
        }
        let current = self.producer_id();
        let req = EndTxnRequest::default()
            .with_transactional_id(txn_id(&id))
            .with_producer_id(ProducerId(current.id))
            .with_producer_epoch(current.epoch)
            .with_committed(commit);
        let ceiling = protocol.ceiling(ApiKey::EndTxn);
        let resp = match self
            .to_coordinator(CoordinatorKind::Transaction, &id, &req, ceiling, |r| {
                r.error_code
            })
            .await
        {
            Ok(resp) => resp,
            Err(e) => return Err(self.failed(e, step).await),
        };
        {
            // V2: the next transaction's records carry the bumped epoch,
            // from sequence 0. Nothing of this one is queued any more.
            let mut st = self.shared.state.lock().expect("producer state lock");
            let next = after_end_txn(current, (resp.producer_id.0, resp.producer_epoch));
            if next != current {
                st.producer = next;
                st.acc.reset_sequences();
            }
        }
        if !commit {
            // Aborted: its failed records are discarded with the rest, not
            // reported by the next flush.
            let _ = self.shared.log.take();
        }
        self.follow_protocol(&id, protocol).await;
        let mut txn = self.txn.lock().await;
        txn.status = TxnStatus::Ready;
        txn.partitions.clear();
        Ok(())
    }

    /// Between transactions: read the coordinator's `transaction.version`
    /// again (a new connection brings the cluster's current one) and take
    /// the protocol it allows, bumping the epoch first when moving up to
    /// V2 ([`TxnProtocol::bump_before`]). On failure the producer keeps
    /// the protocol it has, which the cluster still accepts.
    async fn follow_protocol(&self, id: &str, current: TxnProtocol) {
        let next = match self.coordinator_protocol().await {
            Ok(next) if next != current => next,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "transaction.version not read again; keeping the protocol");
                return;
            }
        };
        if current.bump_before(next) {
            if let Err(e) = self.new_epoch(id).await {
                tracing::warn!(error = %e, "the epoch bump before transactions V2 failed; staying on V1");
                return;
            }
        }
        tracing::info!(
            transactional_id = %id,
            from = current.level(),
            to = next.level(),
            "transaction.version changed"
        );
        self.shared
            .state
            .lock()
            .expect("producer state lock")
            .txn_protocol = next;
    }

    /// Flush and commit the transaction.
    ///
    /// # Errors
    /// If any record of the transaction failed, the error of the first one
    /// (whatever its own action, the transaction is then abortable: call
    /// `abort_transaction`); TRANSACTION_ABORTABLE likewise. Fencing errors
    /// are fatal. Other coordinator errors leave the transaction open: its
    /// outcome may be unknown; commit again, or abort.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Flush and abort the transaction: its records stay in the log but
    /// read_committed consumers never see them.
    ///
    /// # Errors
    /// Coordinator and fencing errors. Only fencing is final: after any
    /// other (TRANSACTION_ABORTABLE among them) call it again.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }
}

fn state_error(op: &str, status: &TxnStatus) -> Error {
    let detail = match status {
        TxnStatus::Uninitialized => "call init_transactions first".to_string(),
        TxnStatus::Ready => "call begin_transaction first".to_string(),
        TxnStatus::InTransaction => "a transaction is already open".to_string(),
        TxnStatus::Abortable(e) => format!("the transaction failed ({e}); abort it"),
        TxnStatus::Fatal(e) => format!("the producer is fenced or unauthorised ({e}); drop it"),
    };
    Error::Transaction(format!("{op}: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DESIGN invariant 87: the transaction coordinator left the metadata
    /// (its node was killed and fenced); the producer must find the new
    /// one, not dial the old one for the whole retry window.
    #[tokio::test]
    async fn a_coordinator_gone_from_the_metadata_is_found_again() {
        use crate::fake_broker::{answer, api_versions, FakeBrokers};
        use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
        use kafka_protocol::messages::{
            BrokerId, EndTxnResponse, FindCoordinatorResponse, InitProducerIdResponse,
            MetadataResponse,
        };
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        const PORT: u16 = 9411;
        let found = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (f, e) = (found.clone(), ended.clone());
        // One node (1): the metadata lists no other.
        let brokers = FakeBrokers::new(move |req| match req.api {
            Ok(ApiKey::ApiVersions) => Some(api_versions(
                req,
                &[
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::Metadata, 1, 12),
                    (ApiKey::FindCoordinator, 0, 4),
                    (ApiKey::InitProducerId, 0, 4),
                    (ApiKey::EndTxn, 0, 3),
                    (ApiKey::Produce, 3, 11),
                ],
            )),
            Ok(ApiKey::Metadata) => Some(answer(
                req,
                MetadataResponse::default().with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(PORT))]),
            )),
            Ok(ApiKey::FindCoordinator) => {
                f.fetch_add(1, Ordering::SeqCst);
                let resp = FindCoordinatorResponse::default();
                let resp = if req.version >= 4 {
                    resp.with_coordinators(vec![
                        kafka_protocol::messages::find_coordinator_response::Coordinator::default()
                            .with_node_id(BrokerId(1))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(i32::from(PORT)),
                    ])
                } else {
                    resp.with_node_id(BrokerId(1))
                        .with_host(StrBytes::from_static_str("127.0.0.1"))
                        .with_port(i32::from(PORT))
                };
                Some(answer(req, resp))
            }
            Ok(ApiKey::InitProducerId) => Some(answer(
                req,
                InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(0),
            )),
            Ok(ApiKey::EndTxn) => {
                e.fetch_add(1, Ordering::SeqCst);
                Some(answer(req, EndTxnResponse::default()))
            }
            _ => None,
        });
        let config = crate::config::ClientConfig::builder()
            .bootstrap(&format!("127.0.0.1:{PORT}"))
            .unwrap()
            .connector(Arc::new(brokers))
            .build()
            .unwrap();
        let client = crate::Client::connect(config).await.unwrap();
        let cfg = crate::ProducerConfig::builder()
            .set("bootstrap.servers", &format!("127.0.0.1:{PORT}"))
            .unwrap()
            .set("transactional.id", "t-1")
            .unwrap()
            .build()
            .unwrap();
        let producer = Producer::with_client(client, cfg);
        producer.init_transactions().await.unwrap();
        producer.begin_transaction().await.unwrap();
        let looked_up = found.load(Ordering::SeqCst);
        {
            // Offsets went in (something to end), and the coordinator known
            // is node 3, which has left the metadata since.
            let mut txn = producer.txn.lock().await;
            txn.started = true;
            txn.coordinator = Some(3);
        }
        let aborted =
            tokio::time::timeout(Duration::from_secs(5), producer.abort_transaction()).await;
        assert!(
            matches!(aborted, Ok(Ok(()))),
            "the abort went to the coordinator found again: {aborted:?}"
        );
        assert_eq!(ended.load(Ordering::SeqCst), 1, "one EndTxn, to node 1");
        assert!(
            found.load(Ordering::SeqCst) > looked_up,
            "FindCoordinator asked again"
        );
        assert_eq!(producer.txn.lock().await.coordinator, Some(1));
    }

    fn broker(code: KafkaCode) -> Error {
        Error::broker(ApiKey::EndTxn, code)
    }

    #[test]
    fn fencing_makes_the_producer_unusable_whatever_failed() {
        for code in [
            KafkaCode::ProducerFenced,
            KafkaCode::InvalidProducerEpoch,
            KafkaCode::InvalidProducerIdMapping,
            KafkaCode::TransactionalIdAuthorizationFailed,
        ] {
            for step in [Step::Content, Step::Commit, Step::Abort] {
                assert_eq!(
                    fate(&broker(code), step),
                    Fate::Unusable,
                    "{code:?} {step:?}"
                );
            }
        }
    }

    #[test]
    fn transaction_abortable_is_abortable_never_fatal() {
        let abortable = broker(KafkaCode::TransactionAbortable);
        assert_eq!(fate(&abortable, Step::Content), Fate::Abortable);
        assert_eq!(fate(&abortable, Step::Commit), Fate::Abortable);
        assert_eq!(
            fate(&abortable, Step::Abort),
            Fate::Open,
            "an abort that failed is made again"
        );
    }

    #[test]
    fn a_missing_part_makes_the_transaction_abortable_and_an_unknown_end_leaves_it_open() {
        // The partitions or offsets could not join (after the retry
        // window, or refused): committing would lose them.
        for e in [
            broker(KafkaCode::CoordinatorNotAvailable),
            broker(KafkaCode::GroupAuthorizationFailed),
            broker(KafkaCode::IllegalGeneration),
            Error::DeliveryTimeout {
                topic: "t".into(),
                partition: 0,
                timeout_ms: 1,
                maybe_written: true,
            },
        ] {
            assert_eq!(fate(&e, Step::Content), Fate::Abortable, "{e}");
        }
        // An EndTxn that timed out may have ended the transaction: either
        // end may be asked for again.
        let timed_out = broker(KafkaCode::RequestTimedOut);
        assert_eq!(fate(&timed_out, Step::Commit), Fate::Open);
        assert_eq!(fate(&timed_out, Step::Abort), Fate::Open);
    }

    #[test]
    fn end_txn_v5_hands_over_the_bumped_epoch_and_older_versions_keep_it() {
        let current = ProducerIdEpoch { id: 7, epoch: 3 };
        assert_eq!(
            after_end_txn(current, (7, 4)),
            ProducerIdEpoch { id: 7, epoch: 4 },
            "V2: the epoch bumped at the end"
        );
        assert_eq!(
            after_end_txn(current, (8, 0)),
            ProducerIdEpoch { id: 8, epoch: 0 },
            "V2: the epoch ran out, a new producer id"
        );
        assert_eq!(
            after_end_txn(current, (-1, -1)),
            current,
            "EndTxn v4 and below"
        );
    }
}
