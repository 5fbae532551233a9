//! Exactly-once consume-transform-produce: each polled batch's output
//! records, dead letters and input offsets are committed in one Kafka
//! transaction (`send_offsets_to_transaction`, fenced by the group
//! generation, KIP-447). Downstream `read_committed` consumers see every
//! input's outputs exactly once, or not at all.
//!
//! ```no_run
//! use resilience::eos::{TransactionalProcessor, Transformer};
//! use resilience::consumer_core::{ConsumerConfig, TopicPartition};
//! use resilience::HandlerError;
//! use kafka_wire::{ProducerConfig, ProducerRecord, records::Record};
//!
//! struct Upper;
//! impl Transformer for Upper {
//!     async fn transform(
//!         &self,
//!         _tp: &TopicPartition,
//!         r: &Record,
//!     ) -> Result<Vec<ProducerRecord>, HandlerError> {
//!         let v = r.value.as_deref().unwrap_or_default().to_ascii_uppercase();
//!         Ok(vec![ProducerRecord::new("orders-upper").value(v)])
//!     }
//! }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let consumer = ConsumerConfig::builder()
//!     .set("bootstrap.servers", "localhost:9092")?
//!     .set("group.id", "upper")?
//!     .build()?;
//! let producer = ProducerConfig::builder()
//!     .set("bootstrap.servers", "localhost:9092")?
//!     .set("transactional.id", "upper-0")?
//!     .build()?;
//! TransactionalProcessor::new(consumer, producer, &["orders"])
//!     .run(Upper, std::future::pending())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Records are handled one partition batch at a time inside the poll
//! loop's transaction (heartbeats run on their own task meanwhile). A
//! failed transaction is aborted and its inputs are read again from where
//! the last committed transaction left them.
//!
//! An output that can never be written (too large for `max.request.size`
//! or for the target topic's `max.message.bytes`) makes its input a
//! poison record: the transaction is aborted, and in the next one that
//! input's dead letter replaces its outputs (a dead letter itself too
//! large is written without its value, `kafka_dlt-value-dropped`). It
//! was an endless abort-and-retry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use consumer_core::{
    Consumer, ConsumerConfig, ConsumerError, IsolationLevel, PartitionPosition, PartitionRecords,
    TopicPartition,
};
use kafka_wire::records::Record;
use kafka_wire::{Producer, ProducerConfig, ProducerRecord};

use crate::dlt;
use crate::failure::executor::{settle, Effects, Failed, Forward, Settled};
use crate::failure::FailurePolicy;
use crate::processor::{until_connected, PollBackoff};
use crate::retry::{BackoffPolicy, HandlerError};

/// Turns one input record into output records (none is fine), written
/// as an `async fn` whose future is `Send` (like [`Handler`](crate::Handler)).
///
/// `Ok` outputs are written in the input's transaction. An `Err` is
/// retried as [`TransactionalProcessor::backoff`] says and then (or at
/// once, when not retryable) replaced by the input's dead letter, written
/// in the same transaction; a panic dead-letters the input at once. The
/// processor is generic over the transformer: its futures are not boxed.
pub trait Transformer: Send + Sync + 'static {
    /// The outputs of `record`, read from `tp`.
    fn transform<'a>(
        &'a self,
        tp: &'a TopicPartition,
        record: &'a Record,
    ) -> impl Future<Output = Result<Vec<ProducerRecord>, HandlerError>> + Send + 'a;
}

/// Counters of a run.
#[derive(Debug, Default)]
pub struct EosStats {
    pub transactions: AtomicU64,
    pub aborted: AtomicU64,
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// Consume-transform-produce in transactions. See the module docs.
#[derive(Debug)]
pub struct TransactionalProcessor {
    consumer: ConsumerConfig,
    producer: ProducerConfig,
    topics: Vec<String>,
    /// Retries of one record inside a transaction (short: the transaction
    /// stays open meanwhile). Default 3 attempts from 100 ms.
    pub backoff: BackoffPolicy,
    stats: Arc<EosStats>,
}

impl TransactionalProcessor {
    /// `producer` must have a `transactional.id`; the consumer is switched
    /// to `read_committed` (`run` refuses `enable.auto.commit=true`: the
    /// offsets commit inside each transaction).
    pub fn new(mut consumer: ConsumerConfig, producer: ProducerConfig, topics: &[&str]) -> Self {
        consumer.isolation_level = IsolationLevel::ReadCommitted;
        Self {
            consumer,
            producer,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            backoff: BackoffPolicy {
                initial: Duration::from_millis(100),
                ..BackoffPolicy::default()
            },
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<EosStats> {
        self.stats.clone()
    }

    /// Run until `shutdown` completes.
    ///
    /// # Errors
    /// `enable.auto.commit=true`; no `transactional.id`; a fenced producer (another instance took the
    /// id over); fatal consumer errors.
    pub async fn run(
        self,
        transformer: impl Transformer,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ConsumerError> {
        crate::processor::refuse_settings_that_defeat_the_runtime(
            &self.consumer,
            "the exactly-once processor",
        )?;
        if self.producer.transactional_id.is_none() {
            return Err(ConsumerError::Fatal(
                "exactly-once mode needs a producer with transactional.id".into(),
            ));
        }
        tokio::pin!(shutdown);
        // Like `Processor::run`: a service started before its broker waits.
        let connect = || Producer::connect(self.producer.clone());
        let Some(producer) = until_connected("producer", connect, &mut shutdown, None).await?
        else {
            return Ok(());
        };
        producer.init_transactions().await?;
        let connect = || Consumer::connect(self.consumer.clone());
        let Some(mut consumer) = until_connected("consumer", connect, &mut shutdown, None).await?
        else {
            return Ok(());
        };
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let group = self.consumer.group_id.clone().unwrap_or_default();
        // Blocking retries inside the transaction, then the DLT.
        let policy = FailurePolicy::new(self.backoff);
        // Per partition, the offset known committed (or where reading began).
        // (A reset of the position, e.g. a recreated topic, starts over.)
        let mut settled: HashMap<TopicPartition, i64> = HashMap::new();
        let mut incarnations: HashMap<TopicPartition, u64> = HashMap::new();
        crate::observe::describe();
        let mut poll_backoff = PollBackoff::new(crate::observe::poll_errors(&group));
        // Failed transactions in a row: each waits longer before reading again.
        let mut txn_delays = crate::retry::runtime_delays();
        // Inputs whose outputs can never be written: dead-lettered instead,
        // until committed.
        let mut poison = Poison::default();
        let result = loop {
            let batches = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                r = consumer.poll(Duration::from_millis(100)) => match r {
                    Ok(b) => {
                        poll_backoff.reset();
                        b
                    }
                    Err(e) if e.is_retriable() => {
                        tokio::select! {
                            _ = &mut shutdown => break Ok(()),
                            _ = tokio::time::sleep(poll_backoff.failed(&e)) => {}
                        }
                        continue;
                    }
                    Err(e) => break Err(e),
                },
            };
            let positions = consumer.positions();
            settled.retain(|tp, _| {
                positions
                    .iter()
                    .any(|p| p.tp == *tp && incarnations.get(tp) == Some(&p.incarnation))
            });
            for p in &positions {
                incarnations.insert(p.tp.clone(), p.incarnation);
            }
            let unknown: Vec<TopicPartition> = positions
                .iter()
                .filter(|p| !settled.contains_key(&p.tp))
                .map(|p| p.tp.clone())
                .collect();
            if !unknown.is_empty() {
                // What the group has committed for newly served partitions
                // (-1: nothing), to see positions move past markers.
                match consumer.committed(&unknown).await {
                    Ok(c) => {
                        for tp in unknown {
                            let at = c.get(&tp).copied().unwrap_or(-1);
                            settled.insert(tp, at);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reading committed offsets failed; retried next poll")
                    }
                }
            }
            if batches.is_empty() {
                // Positions that moved past offsets that are not records
                // (transaction markers, aborted data) with nothing to
                // handle: commit them, or lag never drains to zero.
                let moved: Vec<(TopicPartition, i64)> = positions
                    .iter()
                    .filter(|p| settled.get(&p.tp).is_some_and(|s| *s < p.position))
                    .map(|p| (p.tp.clone(), p.position))
                    .collect();
                if !moved.is_empty() && consumer.group_metadata().is_some() {
                    match consumer.commit(&moved).await {
                        Ok(()) => settled.extend(moved),
                        Err(e) => {
                            tracing::debug!(error = %e, "commit past markers failed; retried next poll")
                        }
                    }
                }
                continue;
            }
            let Some(gm) = consumer.group_metadata() else {
                // Not a stable member right now: read these again later.
                rewind(&mut consumer, &batches);
                continue;
            };
            let began = std::time::Instant::now();
            match self
                .transaction(
                    &producer,
                    &transformer,
                    &batches,
                    &positions,
                    &gm,
                    &group,
                    &policy,
                    &poison,
                )
                .await
            {
                Ok((offsets, not_started)) => {
                    txn_delays = crate::retry::runtime_delays();
                    self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                    for (topic, partition, next) in offsets {
                        settled.insert(TopicPartition::new(topic, partition), next);
                    }
                    poison.committed(&settled);
                    // Committed early (the next record would not have fit in
                    // transaction.timeout.ms): read the rest again.
                    for (tp, offset) in not_started {
                        consumer.seek(&tp, offset);
                    }
                }
                Err(failure) => {
                    self.stats.aborted.fetch_add(1, Ordering::Relaxed);
                    let (e, learned) = match failure {
                        TxnFailure::Wire(e) => (e, false),
                        TxnFailure::Unwritable {
                            input,
                            dead_letter,
                            error,
                        } => {
                            tracing::warn!(tp = %input.0, offset = input.1, dead_letter, error = %error, "an output of this input can never be written; aborting, and its dead letter replaces its outputs");
                            poison.learn(input, dead_letter, &error);
                            (error, true)
                        }
                    };
                    tracing::warn!(error = %e, "transaction failed; aborting and reading its inputs again");
                    // A coordinator that moved or is not reachable yet (a
                    // broker or controller failing over) fails the abort
                    // with a retriable error: the transaction is still
                    // open, ask again after a backoff. Only fencing, or a
                    // fatal error, reaches the arm below.
                    let mut abort_delays = crate::retry::runtime_delays();
                    let aborted = loop {
                        match producer.abort_transaction().await {
                            Err(e) if e.is_retriable() => {
                                let wait = abort_delays.next().unwrap_or(Duration::from_secs(5));
                                tracing::warn!(error = %e, ?wait, "aborting the transaction failed; trying again");
                                tokio::select! {
                                    _ = &mut shutdown => break None,
                                    _ = tokio::time::sleep(wait) => {}
                                }
                            }
                            r => break Some(r),
                        }
                    };
                    // Stopped meanwhile: the coordinator aborts the open
                    // transaction when transaction.timeout.ms runs out.
                    let Some(aborted) = aborted else { break Ok(()) };
                    if let Err(abort) = aborted {
                        // The coordinator aborts a transaction that outlived
                        // transaction.timeout.ms and bumps the producer's
                        // epoch: this producer reads as fenced. It was our
                        // own transaction's age, not another instance taking
                        // the transactional.id over: take a new epoch and go
                        // on from the committed offsets. Fenced sooner than
                        // that, it is another instance: stop.
                        let timeout = self.producer.transaction_timeout;
                        if began.elapsed() < timeout {
                            break Err(ConsumerError::Wire(abort));
                        }
                        tracing::warn!(error = %abort, ?timeout, "the transaction outlived transaction.timeout.ms and the coordinator aborted it; initializing the producer again");
                        if let Err(init) = producer.init_transactions().await {
                            break Err(ConsumerError::Wire(init));
                        }
                    }
                    rewind(&mut consumer, &batches);
                    // A poison input learned: the next attempt differs, no
                    // need to wait for it.
                    if !learned {
                        let wait = txn_delays.next().unwrap_or(Duration::from_secs(5));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        };
        producer.close().await;
        consumer.close(Duration::from_secs(10)).await;
        result
    }

    /// One transaction over `batches`: each record's outputs, then the
    /// input offsets, committed. Records that would not fit before
    /// `transaction.timeout.ms` are left out (a transaction that outlives it
    /// is aborted by the coordinator): the second value lists, per
    /// partition, the first offset not started, to read again.
    ///
    /// Every output's delivery is awaited before the offsets go in, so a
    /// write refused for good ([`dlt::too_large`]) names its input
    /// ([`TxnFailure::Unwritable`]).
    #[allow(clippy::too_many_arguments)]
    async fn transaction(
        &self,
        producer: &Producer,
        transformer: &impl Transformer,
        batches: &[PartitionRecords],
        positions: &[PartitionPosition],
        gm: &kafka_wire::GroupMetadata,
        group: &str,
        policy: &FailurePolicy,
        poison: &Poison,
    ) -> Result<(Vec<(String, i32, i64)>, Vec<(TopicPartition, i64)>), TxnFailure> {
        producer.begin_transaction().await?;
        let mut deliveries = Vec::new();
        let mut budget = TxnBudget::new(self.producer.transaction_timeout);
        let mut offsets: Vec<(String, i32, i64)> = Vec::with_capacity(batches.len());
        let mut not_started: Vec<(TopicPartition, i64)> = Vec::new();
        let mut records_in = 0u64;
        for batch in batches {
            let mut done = 0;
            for r in &batch.records {
                if records_in > 0 && !budget.fits_another() {
                    // The first record not started of its partition (a
                    // poll may hold two batches of one partition).
                    if !not_started.iter().any(|(tp, _)| *tp == batch.tp) {
                        not_started.push((batch.tp.clone(), r.offset));
                    }
                    break;
                }
                let input = Transform {
                    transformer,
                    tp: &batch.tp,
                    record: r,
                    group,
                    stats: &self.stats,
                };
                let (outs, dead_letter) = match poison.get(&batch.tp, r.offset) {
                    Some(known) => (vec![input.poison_letter(policy, known).await], true),
                    None => input.outputs(policy).await,
                };
                for out in outs {
                    let input = (batch.tp.clone(), r.offset);
                    match producer.send(out).await {
                        Ok(delivery) => deliveries.push((input, dead_letter, delivery)),
                        Err(error) if dlt::too_large(&error) => {
                            return Err(TxnFailure::Unwritable {
                                input,
                                dead_letter,
                                error,
                            })
                        }
                        Err(e) => return Err(e.into()),
                    }
                    self.stats.records_out.fetch_add(1, Ordering::Relaxed);
                }
                budget.record_done();
                records_in += 1;
                done += 1;
            }
            let Some(next) = batch.records[..done].last().map(|r| r.offset + 1) else {
                continue;
            };
            let tp = &batch.tp;
            match offsets
                .iter_mut()
                .find(|(t, p, _)| *t == tp.topic && *p == tp.partition)
            {
                Some(o) => o.2 = o.2.max(next), // two batches of one partition in a poll
                None => offsets.push((tp.topic.clone(), tp.partition, next)),
            }
        }
        // A partition whose every record was handled: its position may be
        // past markers right after its last record.
        for (topic, partition, next) in &mut offsets {
            let finished = !not_started
                .iter()
                .any(|(tp, _)| tp.topic == *topic && tp.partition == *partition);
            if let Some(p) = positions
                .iter()
                .find(|p| finished && p.tp.topic == *topic && p.tp.partition == *partition)
            {
                *next = p.position.max(*next);
            }
        }
        for (input, dead_letter, delivery) in deliveries {
            match delivery.await {
                Ok(_) => {}
                Err(error) if dlt::too_large(&error) => {
                    return Err(TxnFailure::Unwritable {
                        input,
                        dead_letter,
                        error,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        producer.send_offsets_to_transaction(&offsets, gm).await?;
        producer.commit_transaction().await?;
        self.stats
            .records_in
            .fetch_add(records_in, Ordering::Relaxed);
        Ok((offsets, not_started))
    }
}

/// One input of a transaction: the transformer's call, and how the
/// exactly-once processor carries out its failure policy's decisions (see
/// `crate::failure::executor`): a retry sleeps inside the open transaction
/// (the policy's short backoff), and forwarding makes the input's dead
/// letter its one output, written in the same transaction. No retry
/// topics, no quarantine, no release: the policy decides none.
struct Transform<'a, T> {
    transformer: &'a T,
    tp: &'a TopicPartition,
    record: &'a Record,
    group: &'a str,
    stats: &'a EosStats,
}

impl<'a, T: Transformer> Transform<'a, T> {
    /// The outputs of the input: the transformer's, or (after retries)
    /// its dead letter (`true`).
    async fn outputs(mut self, policy: &FailurePolicy) -> (Vec<ProducerRecord>, bool) {
        // A panic is a poison record here too (panics.rs).
        let error = match self.call(1).await {
            Ok(outs) => return (outs, false),
            Err(e) => e,
        };
        match settle(policy, self.failed(), &mut self, error.clone()).await {
            Settled::Handled(outs) => (outs, false),
            Settled::Forwarded(letter) => (vec![letter], true),
            // Never decided here (the policy does not release, and the
            // work always may go on); were it, the input is kept in the DLT
            // rather than committed past without outputs.
            Settled::Released | Settled::Stopped => (vec![self.dead_letter(&error, 1)], true),
        }
    }

    /// The dead letter of an input whose outputs can never be written
    /// (`known`), without its value if that was too large too: a
    /// non-retryable failure, which the policy dead-letters.
    async fn poison_letter(mut self, policy: &FailurePolicy, known: &Unwritable) -> ProducerRecord {
        let error = HandlerError::NonRetryable(format!(
            "an output of this record can never be written: {}",
            known.error
        ));
        let mut letter = match settle(policy, self.failed(), &mut self, error.clone()).await {
            Settled::Forwarded(letter) => letter,
            // The policy dead-letters every non-retryable failure at once.
            _ => self.dead_letter(&error, 1),
        };
        if known.without_value {
            dlt::drop_value(&mut letter);
        }
        letter
    }

    fn failed(&self) -> Failed<'a> {
        Failed {
            tp: self.tp,
            offset: self.record.offset,
            source: &self.tp.topic,
            step: None,
            attempt: 1,
        }
    }

    /// The input's dead letter, after `attempts` attempts.
    fn dead_letter(&self, error: &HandlerError, attempts: u32) -> ProducerRecord {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let tp = self.tp;
        tracing::info!(%tp, offset = self.record.offset, attempts, reason = %error, "dead-lettered in the transaction (written when it commits)");
        dlt::dead_letter(
            &dlt::dlt_topic(&tp.topic),
            &tp.topic,
            tp.partition,
            self.group,
            self.record,
            error,
            attempts,
        )
    }
}

impl<T: Transformer> Effects for Transform<'_, T> {
    type Output = Vec<ProducerRecord>;
    type Forwarded = ProducerRecord;

    fn may_go_on(&self) -> bool {
        true
    }

    async fn wait(&mut self, delay: Duration) -> bool {
        tokio::time::sleep(delay).await;
        true
    }

    async fn call(&mut self, _attempt: u32) -> Result<Vec<ProducerRecord>, HandlerError> {
        let (transformer, tp, record) = (self.transformer, self.tp, self.record);
        crate::panics::call("the transformer", || transformer.transform(tp, record)).await
    }

    async fn forward(
        &mut self,
        _to: Forward<'_>,
        error: &HandlerError,
        attempts: u32,
    ) -> ProducerRecord {
        self.dead_letter(error, attempts)
    }
}

/// Why a transaction failed.
enum TxnFailure {
    /// The client's or broker's error: abort, read the inputs again.
    Wire(kafka_wire::Error),
    /// An output of `input` (its dead letter if `dead_letter`) can never
    /// be written: abort, and dead-letter that input next time.
    Unwritable {
        input: (TopicPartition, i64),
        dead_letter: bool,
        error: kafka_wire::Error,
    },
}

impl From<kafka_wire::Error> for TxnFailure {
    fn from(e: kafka_wire::Error) -> Self {
        TxnFailure::Wire(e)
    }
}

/// What is known of an input whose outputs can never be written.
struct Unwritable {
    /// The refusal, for the dead letter's error header.
    error: String,
    /// Its dead letter was refused too: write it without the value.
    without_value: bool,
}

/// The inputs (partition, offset) dead-lettered because their outputs can
/// never be written, kept until their partition commits past them.
#[derive(Default)]
struct Poison(HashMap<(TopicPartition, i64), Unwritable>);

impl Poison {
    fn get(&self, tp: &TopicPartition, offset: i64) -> Option<&Unwritable> {
        self.0.get(&(tp.clone(), offset))
    }

    fn learn(
        &mut self,
        input: (TopicPartition, i64),
        dead_letter: bool,
        error: &kafka_wire::Error,
    ) {
        let known = self.0.entry(input).or_insert(Unwritable {
            error: error.to_string(),
            without_value: false,
        });
        // Its dead letter was refused as well: once without the value.
        known.without_value |= dead_letter;
    }

    /// Forget the inputs at or past which `settled` committed (and the
    /// partitions no longer served).
    fn committed(&mut self, settled: &HashMap<TopicPartition, i64>) {
        self.0
            .retain(|(tp, offset), _| settled.get(tp).is_some_and(|next| offset >= next));
    }
}

/// How much of `transaction.timeout.ms` a transaction may spend on
/// records: half of it, the rest left for flushing, the offsets and
/// EndTxn (as Kafka Streams keeps `commit.interval.ms` well under the
/// transaction timeout). Another record fits if the slowest one so far
/// would still end within that.
struct TxnBudget {
    began: std::time::Instant,
    last: std::time::Instant,
    spend: Duration,
    slowest: Duration,
}

impl TxnBudget {
    fn new(timeout: Duration) -> Self {
        let now = std::time::Instant::now();
        TxnBudget {
            began: now,
            last: now,
            spend: timeout / 2,
            slowest: Duration::ZERO,
        }
    }

    fn record_done(&mut self) {
        let now = std::time::Instant::now();
        self.slowest = self.slowest.max(now - self.last);
        self.last = now;
    }

    fn fits_another(&self) -> bool {
        self.last - self.began + self.slowest <= self.spend
    }
}

/// Read `batches` again: seek each partition back to its first record.
fn rewind(consumer: &mut Consumer, batches: &[PartitionRecords]) {
    for b in batches {
        if let Some(first) = b.records.first() {
            consumer.seek(&b.tp, first.offset);
        }
    }
}
