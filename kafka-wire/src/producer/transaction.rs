//! Transactions: `init_transactions`, `begin`, `send`,
//! `send_offsets_to_transaction` (KIP-447) and `commit` / `abort`.
//!
//! ```text
//! Uninitialized ─init_transactions─▶ Ready ─begin─▶ InTransaction ─commit/abort─▶ Ready
//!                                                        │ a send failed
//!                                                        ▼
//!                                                  Abortable ─abort─▶ Ready
//! any fencing error (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) ─▶ Fatal
//! ```
//!
//! Partitions join the transaction (AddPartitionsToTxn) before the first
//! record for them is queued, so the broker never sees a transactional
//! produce for a partition the coordinator does not know.

use std::collections::HashSet;
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, GroupId,
    InitProducerIdRequest, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::time::Instant;

use crate::client::Lane;
use crate::coordinator::CoordinatorKind;
use crate::error::{Error, ErrorAction, KafkaCode, Result};
use crate::throttle::{Throttle, ThrottleTime};

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
    /// offsets were added to it. Until then there is nothing to end, and
    /// EndTxn would be refused (INVALID_TXN_STATE), as Java's
    /// `transactionStarted`.
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

impl Producer {
    fn transactional_id(&self) -> Result<&str> {
        self.cfg.transactional_id.as_deref().ok_or_else(|| {
            Error::Config(
                "this producer has no transactional.id; set it to use transactions".into(),
            )
        })
    }

    /// Send a request to a coordinator, retrying retriable codes and
    /// re-finding the coordinator when it moved, after the producer's
    /// backoff (at least the broker's throttle time), for up to
    /// `TXN_RETRY_WINDOW`.
    async fn to_coordinator<R: Request + 'static>(
        &self,
        kind: CoordinatorKind,
        key: &str,
        req: &R,
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
            let outcome = self
                .client
                .send_to(node, Lane::Control, req, Duration::ZERO)
                .await
                .and_then(|resp| {
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
                ErrorAction::Fatal | ErrorAction::ResetProducerId | ErrorAction::Rejoin => {
                    return Err(err)
                }
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

    /// Fencing errors make the producer unusable: remember, and report them
    /// as fatal (for an idempotent-only producer the same codes would mean
    /// "get a new producer id", but a transactional one must not).
    async fn fatal_if_fenced(&self, err: Error) -> Error {
        if matches!(
            err.code(),
            Some(
                KafkaCode::ProducerFenced
                    | KafkaCode::InvalidProducerEpoch
                    | KafkaCode::TransactionalIdAuthorizationFailed
            )
        ) {
            let fatal = Error::Transaction(format!(
                "fenced: another producer with transactional.id {:?} took over, or this one is \
                 not authorised ({err}); drop this producer",
                self.cfg.transactional_id.as_deref().unwrap_or_default()
            ));
            self.txn.lock().await.status = TxnStatus::Fatal(fatal.clone());
            return fatal;
        }
        err
    }

    /// Register the transactional id and fence older producers with it.
    ///
    /// # Errors
    /// Configuration (no `transactional.id`), coordinator and authorization errors.
    pub async fn init_transactions(&self) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(txn_id(&id)))
            .with_transaction_timeout_ms(self.cfg.transaction_timeout.as_millis() as i32);
        let resp = self
            .to_coordinator(CoordinatorKind::Transaction, &id, &req, |r| r.error_code)
            .await?;
        {
            let mut st = self.shared.state.lock().expect("producer state lock");
            st.producer = ProducerIdEpoch {
                id: resp.producer_id.0,
                epoch: resp.producer_epoch,
            };
            st.acc.reset_sequences();
        }
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
                self.shared
                    .state
                    .lock()
                    .expect("producer state lock")
                    .txn_error = None;
                Ok(())
            }
            other => Err(state_error("begin_transaction", other)),
        }
    }

    /// Called by `send` for transactional producers: add `tp` to the
    /// transaction if it is new to it.
    pub(crate) async fn add_to_transaction(&self, tp: &QueueKey) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        {
            let txn = self.txn.lock().await;
            match &txn.status {
                TxnStatus::InTransaction if txn.partitions.contains(tp) => return Ok(()),
                TxnStatus::InTransaction => {}
                other => return Err(state_error("send", other)),
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
            .to_coordinator(CoordinatorKind::Transaction, &id, &req, |r| {
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
            Err(e) => Err(self.fatal_if_fenced(e).await),
        }
    }

    /// Commit consumed offsets as part of the transaction (consume-transform-produce).
    ///
    /// # Errors
    /// Coordinator errors; ILLEGAL_GENERATION / FENCED_INSTANCE_ID when the
    /// group moved on (the transaction must then be aborted).
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
        let add = AddOffsetsToTxnRequest::default()
            .with_transactional_id(txn_id(&id))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())));
        if let Err(e) = self
            .to_coordinator(CoordinatorKind::Transaction, &id, &add, |r| r.error_code)
            .await
        {
            return Err(self.fatal_if_fenced(e).await);
        }
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
        self.to_coordinator(CoordinatorKind::Group, &group.group_id, &commit, |r| {
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .find(|c| *c != 0)
                .unwrap_or(0)
        })
        .await
        .map(|_| ())
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let id = self.transactional_id()?.to_string();
        // Every record of the transaction must be acknowledged first. Its
        // failures are the transaction's: one fails the commit (below,
        // `txn_error`), and an abort discards every record anyway.
        self.wait_until_sent().await;
        let failed = self
            .shared
            .state
            .lock()
            .expect("producer state lock")
            .txn_error
            .take();
        // A record rejected for a stale epoch means we were fenced: fatal.
        let failed = match failed {
            Some(e) => Some(self.fatal_if_fenced(e).await),
            None => None,
        };
        {
            let mut txn = self.txn.lock().await;
            match (&txn.status, commit, failed) {
                (TxnStatus::InTransaction, true, Some(e)) => {
                    txn.status = TxnStatus::Abortable(e.clone());
                    return Err(e);
                }
                // Nothing reached the coordinator (no partition, no
                // offsets; say, the only record was refused before it was
                // sent): end it here.
                (TxnStatus::InTransaction | TxnStatus::Abortable(_), _, _) if !txn.started => {
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
        let ProducerIdEpoch { id: pid, epoch } = self.producer_id();
        let req = EndTxnRequest::default()
            .with_transactional_id(txn_id(&id))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit);
        match self
            .to_coordinator(CoordinatorKind::Transaction, &id, &req, |r| r.error_code)
            .await
        {
            Ok(_) => {
                if !commit {
                    // Aborted: its failed records are discarded with the
                    // rest, not reported by the next flush.
                    let _ = self.shared.log.take();
                }
                let mut txn = self.txn.lock().await;
                txn.status = TxnStatus::Ready;
                txn.partitions.clear();
                Ok(())
            }
            Err(e) => Err(self.fatal_if_fenced(e).await),
        }
    }

    /// Flush and commit the transaction.
    ///
    /// # Errors
    /// If any record of the transaction failed, the error of the first one;
    /// the transaction must then be aborted. Fencing errors are fatal.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Flush and abort the transaction: its records stay in the log but
    /// read_committed consumers never see them.
    ///
    /// # Errors
    /// Coordinator and fencing errors.
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
