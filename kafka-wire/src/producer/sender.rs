//! The sender task: drains ready batches, groups them by leader, sends
//! Produce requests (up to `max.in.flight` per broker, none to a broker
//! still throttled: [`Brokers`]) and settles each batch: delivered,
//! requeued for retry after the producer's [`Backoff`](crate::Backoff)
//! (`retry.backoff.ms` doubling to `retry.backoff.max.ms` per attempt of
//! that batch), or failed.
//!
//! KIP-951: a Produce v10+ answer refusing a partition with
//! NOT_LEADER_OR_FOLLOWER names its current leader and epoch (and that
//! leader's endpoint). The hints go into the client's metadata at once
//! ([`Client::apply_leader_hints`]), and a batch whose partition now has
//! another leader than the one that refused it retries at once, without
//! its backoff or a Metadata round trip. Likewise a retry already waiting
//! out its backoff goes as soon as the metadata names another leader
//! (Java's accumulator does the same); while its old leader is
//! unreachable, that metadata is asked for every `retry.backoff.ms`
//! ([`LeadersUnreachable`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, ProduceRequest, ProduceResponse, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Client, Lane};
use crate::connection::PendingResponse;
use crate::error::{Error, ErrorAction, KafkaCode, Result};
use crate::metadata::{LeaderHints, Metadata};
use crate::records::{encode_batch, BatchOptions};
use crate::throttle::{Throttle, ThrottleTime};

use super::accumulator::{Batch, QueueKey};
use super::brokers::Brokers;
use super::{Acks, ProducerConfig, ProducerIdEpoch, Shared};

type Outcome = (i32, Vec<Batch>, Result<Option<ProduceResponse>>);

pub(crate) async fn run(shared: Arc<Shared>, client: Client, cfg: Arc<ProducerConfig>) {
    let mut in_flight: JoinSet<Outcome> = JoinSet::new();
    let mut brokers = Brokers::new(client.config().max_in_flight);
    // InitProducerId attempts since the last success.
    let mut pid_delays = None;
    // Leaders whose last request failed whole (refused, reset, timed out):
    // their partitions' metadata is asked for again before a batch goes
    // to them (see `leaders_now`).
    let mut unreachable = LeadersUnreachable::default();
    loop {
        let now = Instant::now();
        let md_now = client.metadata();
        let (ready, waiting, deadline, closing_done, need_pid, flush, close_by) = {
            let mut st = shared.state.lock().expect("producer state lock");
            for b in st.acc.expire(now, cfg.delivery_timeout) {
                let err = Error::DeliveryTimeout {
                    topic: b.tp.0.to_string(),
                    partition: b.tp.1,
                    timeout_ms: cfg.delivery_timeout.as_millis() as u64,
                    maybe_written: b.ever_sent,
                };
                if b.ever_sent && cfg.idempotent {
                    // Its sequence may or may not be on the broker: start over.
                    st.reset_producer_id = true;
                }
                if cfg.transactional_id.is_some() && st.txn_error.is_none() {
                    st.txn_error = Some(err.clone());
                }
                let n = b.records.len();
                b.fail(&err);
                st.acc.completed(n);
            }
            let flush = st.flushing > 0 || st.closing;
            // Transactional producers get their id from init_transactions.
            let need_pid = cfg.idempotent
                && cfg.transactional_id.is_none()
                && (st.producer.is_none() || st.reset_producer_id)
                && st.acc.in_flight_total() == 0;
            let mut waiting = st.acc.retries_waiting(now);
            let moved = led_elsewhere(&md_now, &waiting);
            if !moved.is_empty() {
                tracing::debug!(partitions = ?moved, "new leaders known: retrying there without the backoff");
                st.acc.end_backoff(&moved, now);
                waiting.retain(|(tp, _)| !moved.contains(tp));
            }
            let ready = if need_pid || (cfg.idempotent && st.producer.is_none()) {
                Vec::new()
            } else {
                st.acc.ready(now, flush)
            };
            // Dropped (the last handle went) and its time to flush is up:
            // stop whatever is left.
            let out_of_time = st.closing && st.close_by.is_some_and(|by| now >= by);
            if out_of_time {
                let queued = st.acc.pending_records;
                if queued > 0 || !in_flight.is_empty() {
                    tracing::error!(
                        records = queued,
                        requests_in_flight = in_flight.len(),
                        "producer dropped: records still unsent or unanswered when its bounded close ran out fail with Error::Closed"
                    );
                }
            }
            let done = st.closing && (out_of_time || (st.acc.is_idle() && in_flight.is_empty()));
            shared.pending.send_replace(st.acc.pending_records);
            (
                ready,
                waiting,
                st.acc.next_deadline(),
                done,
                need_pid,
                flush,
                st.close_by,
            )
        };
        if closing_done {
            // Queued batches fail here; those in flight fail as their
            // tasks are aborted (a dropped batch completes with
            // `Error::Closed`). Returning drops this task's client handle,
            // so a client the producer made closes its connections.
            shared.fail_all(&Error::Closed);
            in_flight.abort_all();
            return;
        }
        if need_pid {
            match init_producer_id(&client, &cfg).await {
                Ok(pid) => {
                    pid_delays = None;
                    let mut st = shared.state.lock().expect("producer state lock");
                    st.producer = pid;
                    st.reset_producer_id = false;
                    st.acc.reset_sequences();
                    tracing::debug!(
                        producer_id = pid.id,
                        epoch = pid.epoch,
                        "producer id assigned"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "InitProducerId failed; retrying");
                    if !e.is_retriable() {
                        shared.fail_all(&e);
                    }
                    let delay = pid_delays
                        .get_or_insert_with(|| cfg.retry_policy().delays())
                        .next()
                        .unwrap_or(cfg.retry_backoff_max);
                    tokio::time::sleep(delay).await;
                }
            }
            continue;
        }

        // Group ready partitions by leader; at most one batch per partition per request.
        let md = unreachable
            .leaders_now(&client, &ready, &waiting, now, cfg.retry_backoff)
            .await;
        if !Arc::ptr_eq(&md, &md_now) && !led_elsewhere(&md, &waiting).is_empty() {
            continue; // a waiting retry's partition has a new leader: it goes now
        }
        let mut by_leader: HashMap<i32, Vec<QueueKey>> = HashMap::new();
        let mut unknown_leader = Vec::new();
        for tp in ready {
            match md.leader(&tp.0, tp.1) {
                Some(b) => by_leader.entry(b.id).or_default().push(tp),
                None => unknown_leader.push(tp.0.to_string()),
            }
        }
        if !unknown_leader.is_empty() {
            unknown_leader.sort();
            unknown_leader.dedup();
            let _ = client.refresh_metadata(Some(&unknown_leader)).await;
        }
        for (leader, tps) in by_leader {
            if !brokers.may_send(leader, now) {
                continue; // busy, or throttled: its batches wait in the accumulator
            }
            let mut sealed = Vec::new();
            let (batches, ceiling) = {
                let mut st = shared.state.lock().expect("producer state lock");
                let producer = st.producer;
                let mut out = Vec::new();
                let mut bytes = 0usize;
                for tp in tps {
                    if bytes >= cfg.max_request_size {
                        break;
                    }
                    if !brokers.carries(leader, st.acc.front_open(&tp), flush) {
                        continue; // still filling while a request is out
                    }
                    if let Some(mut b) = st.acc.take(&tp, producer) {
                        b.sent_to = Some(leader);
                        bytes += b.bytes;
                        sealed.push(tp);
                        out.push(b);
                    }
                }
                // A transaction's Produce: at the version of its protocol
                // (V1: v11 at most), and under V2 the write that tells the
                // coordinator of the transaction.
                let ceiling = if cfg.transactional_id.is_some() {
                    st.txn_produced |= !out.is_empty();
                    st.txn_protocol.ceiling(ApiKey::Produce)
                } else {
                    None
                };
                (out, ceiling)
            };
            shared.move_sticky(&sealed, &md);
            if batches.is_empty() {
                continue;
            }
            brokers.sent(leader);
            // Queue the request here, in drain order, so a partition's
            // sequences reach the broker in order; only the wait for the
            // response runs concurrently.
            let mut batches = batches;
            match start_request(&client, &cfg, leader, &mut batches, ceiling).await {
                Ok(pending) => {
                    in_flight.spawn(async move {
                        let result = match pending {
                            Some(p) => p.response().await.map(Some),
                            None => Ok(None),
                        };
                        (leader, batches, result)
                    });
                }
                Err(e) => {
                    in_flight.spawn(async move { (leader, batches, Err(e)) });
                }
            }
        }

        // Wait for news: new records, a deadline, or a response. A deadline
        // already past belongs to a partition blocked on capacity: the
        // response that frees it wakes us, so never spin on it.
        let mut wake_at = deadline
            .filter(|d| *d > now)
            .unwrap_or_else(|| now + Duration::from_secs(3600));
        if !unknown_leader.is_empty() {
            wake_at = wake_at.min(now + cfg.retry_backoff);
        }
        if let Some(open) = brokers.next_open(now) {
            wake_at = wake_at.min(open); // a throttled leader takes requests again
        }
        if let Some(ask) = unreachable.next_ask(&md, &waiting, cfg.retry_backoff) {
            wake_at = wake_at.min(ask); // has a waiting retry's partition a new leader?
        }
        if let Some(by) = close_by {
            wake_at = wake_at.min(by); // a dropped producer's close runs out
        }
        let sleep_until = wake_at;
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep_until(sleep_until) => {}
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((leader, batches, result)) = done else { continue };
                unreachable.answered(leader, result.is_ok());
                let throttle = match &result {
                    Ok(Some(resp)) => resp.throttle(),
                    _ => Throttle::default(),
                };
                brokers.returned(leader, throttle, Instant::now());
                let mut refresh = Vec::new();
                if let Ok(Some(resp)) = &result {
                    let applied = client.apply_leader_hints(&leader_hints(resp));
                    refresh.extend(applied.topics_to_refresh());
                }
                let md = client.metadata();
                refresh.extend(settle(&shared, &cfg, leader, &md, batches, result));
                refresh_topics(&client, refresh).await;
                shared.wake.notify_one();
            }
        }
    }
}

/// The leaders whose last Produce request failed whole, and when their
/// partitions' metadata was last asked for.
///
/// A batch whose request failed that way retries after its backoff (up to
/// `retry.backoff.max.ms`), and the metadata refreshed right after the
/// failure may predate the failover: a leader killed with `kill -9` keeps
/// its partitions until the controller fences it. Sent by that metadata,
/// the retry went to the dead leader once more, and only the retry after
/// it, a whole backoff later, found the new one: up to two backoffs (2 s)
/// past the failover with no record written (sim-tests'
/// `cluster::leader_kill`: 6.0 s without a record for a 4 s broker
/// session). Asking again just before sending to such a leader bounds it
/// by one backoff. And while a retry waits out its backoff for such a
/// leader, the metadata is asked for every `retry.backoff.ms`: once it
/// names the new leader the retry goes at once
/// ([`led_elsewhere`], KIP-951), instead of up to `retry.backoff.max.ms` after the failover.
/// At most once per `retry.backoff.ms`, however many batches wait.
#[derive(Debug, Default)]
struct LeadersUnreachable {
    leaders: std::collections::HashSet<i32>,
    asked_at: Option<Instant>,
}

impl LeadersUnreachable {
    /// A request to `leader` came back: answered (`ok`), or failed whole.
    fn answered(&mut self, leader: i32, ok: bool) {
        if ok {
            self.leaders.remove(&leader);
        } else {
            self.leaders.insert(leader);
        }
    }

    /// Are `tp`'s records for an unreachable leader, by `md`?
    fn for_unreachable(&self, md: &Metadata, tp: &QueueKey) -> bool {
        md.leader(&tp.0, tp.1)
            .is_some_and(|b| self.leaders.contains(&b.id))
    }

    /// When to ask for the metadata again for the retries `waiting` out
    /// their backoff: `every` after the last ask, if one of them is for an
    /// unreachable leader.
    fn next_ask(
        &self,
        md: &Metadata,
        waiting: &[(QueueKey, i32)],
        every: Duration,
    ) -> Option<Instant> {
        let asked = self.asked_at?;
        waiting
            .iter()
            .any(|(tp, _)| self.for_unreachable(md, tp))
            .then_some(asked + every)
    }

    /// The metadata to send `ready` by: asked for again first when one of
    /// their leaders, or of the retries `waiting` out their backoff, is
    /// unreachable, and not asked for within `every`.
    async fn leaders_now(
        &mut self,
        client: &Client,
        ready: &[QueueKey],
        waiting: &[(QueueKey, i32)],
        now: Instant,
        every: Duration,
    ) -> Arc<Metadata> {
        let md = client.metadata();
        if self.leaders.is_empty() || self.asked_at.is_some_and(|t| now < t + every) {
            return md;
        }
        let mut topics: Vec<String> = ready
            .iter()
            .chain(waiting.iter().map(|(tp, _)| tp))
            .filter(|tp| self.for_unreachable(&md, tp))
            .map(|tp| tp.0.to_string())
            .collect();
        if topics.is_empty() {
            return md;
        }
        topics.sort();
        topics.dedup();
        self.asked_at = Some(now);
        match client.refresh_metadata(Some(&topics)).await {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::debug!(error = %e, "metadata refresh before a retry failed");
                md
            }
        }
    }
}

/// Encode (once) and queue one Produce request on the leader's connection,
/// at `ceiling` at most (a TV1 transaction's: v11). `None`: acks=0,
/// nothing to wait for.
async fn start_request(
    client: &Client,
    cfg: &ProducerConfig,
    leader: i32,
    batches: &mut [Batch],
    ceiling: Option<i16>,
) -> Result<Option<PendingResponse<ProduceRequest>>> {
    let mut topics: HashMap<Arc<str>, Vec<PartitionProduceData>> = HashMap::new();
    for b in batches.iter_mut() {
        let encoded = b
            .encoded
            .get_or_insert_with(|| {
                // `encode_batch` sizes its output itself (a guess here
                // that fell short copied every batch once).
                let mut buf = BytesMut::new();
                encode_batch(
                    &mut buf,
                    &BatchOptions {
                        compression: cfg.compression,
                        producer_id: b.producer_id,
                        producer_epoch: b.producer_epoch,
                        base_sequence: b.base_sequence,
                        transactional: cfg.transactional_id.is_some(),
                        ..BatchOptions::default()
                    },
                    &b.records,
                );
                buf.freeze()
            })
            .clone();
        topics.entry(b.tp.0.clone()).or_default().push(
            PartitionProduceData::default()
                .with_index(b.tp.1)
                .with_records(Some(encoded)),
        );
    }
    let req = ProduceRequest::default()
        .with_acks(cfg.acks.code())
        .with_timeout_ms(client.config().request_timeout.as_millis() as i32)
        .with_transactional_id(
            cfg.transactional_id
                .as_ref()
                .map(|t| TransactionalId(StrBytes::from_string(t.clone()))),
        )
        .with_topic_data(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partition_data(partitions)
                })
                .collect(),
        );
    for b in batches.iter_mut() {
        b.ever_sent = true;
    }
    let conn = client.connection(leader, Lane::Produce).await?;
    if cfg.acks == Acks::None {
        conn.send_no_response(&req, client.config().request_timeout)
            .await?;
        return Ok(None);
    }
    conn.start_at_most(&req, ceiling, client.config().request_timeout)
        .await
        .map(Some)
}

/// The leader hints of a Produce v10+ answer (KIP-951): the
/// `current_leader` of each partition refused with NOT_LEADER_OR_FOLLOWER
/// or FENCED_LEADER_EPOCH, and `node_endpoints`. Empty for older versions.
fn leader_hints(resp: &ProduceResponse) -> LeaderHints {
    let mut hints = LeaderHints::default();
    for t in &resp.responses {
        for p in &t.partition_responses {
            if matches!(
                KafkaCode::try_from_code(p.error_code),
                Some(KafkaCode::NotLeaderOrFollower | KafkaCode::FencedLeaderEpoch)
            ) {
                hints.push(
                    crate::TopicPartition::new(t.name.0.to_string(), p.index),
                    p.current_leader.leader_id.0,
                    p.current_leader.leader_epoch,
                );
            }
        }
    }
    for n in &resp.node_endpoints {
        hints.push_node(n.node_id.0, &n.host, n.port, n.rack.as_deref());
    }
    hints
}

/// The retries `waiting` out their backoff (partition, leader their last
/// request went to) whose partition `md` says another node leads now:
/// their backoff was for the old leader, and they go at once (KIP-951,
/// as Java's accumulator).
fn led_elsewhere(md: &Metadata, waiting: &[(QueueKey, i32)]) -> Vec<QueueKey> {
    waiting
        .iter()
        .filter(|(tp, old)| md.leader(&tp.0, tp.1).is_some_and(|b| b.id != *old))
        .map(|(tp, _)| tp.clone())
        .collect()
}

/// When a batch refused by `sent_to` with an error whose action is to
/// refresh metadata retries, and whether that refresh is needed: at `now`
/// and without one if `md` already names another leader for its
/// partition (a leader hint, KIP-951, or a refresh since it was sent),
/// else after `backoff`, once the metadata is refreshed.
fn leader_retry(
    md: &Metadata,
    tp: &QueueKey,
    sent_to: i32,
    now: Instant,
    backoff: Duration,
) -> (Instant, bool) {
    match md.leader(&tp.0, tp.1) {
        Some(b) if b.id != sent_to => (now, false),
        _ => (now + backoff, true),
    }
}

/// Decide each batch's fate from the response (or the request's error)
/// of the request sent to `leader`; `md` is the metadata with the
/// response's leader hints applied. Returns the topics whose metadata
/// should be refreshed.
fn settle(
    shared: &Shared,
    cfg: &ProducerConfig,
    leader: i32,
    md: &Metadata,
    batches: Vec<Batch>,
    result: Result<Option<ProduceResponse>>,
) -> Vec<String> {
    let now = Instant::now();
    let mut refresh = Vec::new();
    let mut st = shared.state.lock().expect("producer state lock");
    for b in &batches {
        st.acc.returned(b);
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            // Whole request failed: every batch may or may not be written.
            for b in batches {
                if e.is_retriable() {
                    refresh.push(b.tp.0.to_string());
                    let retry_at = now + retry_delay(cfg, &b);
                    st.acc.requeue(b, retry_at);
                } else {
                    // As every other record failure: the transaction
                    // cannot commit without this batch.
                    if cfg.transactional_id.is_some() && st.txn_error.is_none() {
                        st.txn_error = Some(e.clone());
                    }
                    let n = b.records.len();
                    b.fail(&e);
                    st.acc.completed(n);
                }
            }
            shared.pending.send_replace(st.acc.pending_records);
            return refresh;
        }
    };
    for b in batches {
        let code_and_info = resp.as_ref().and_then(|r| {
            r.responses
                .iter()
                .filter(|t| t.name.0.as_str() == &*b.tp.0)
                .flat_map(|t| &t.partition_responses)
                .find(|p| p.index == b.tp.1)
                .map(|p| {
                    let msg = p.error_message.as_ref().map(|m| m.to_string());
                    (p.error_code, p.base_offset, p.log_append_time_ms, msg)
                })
        });
        let (code, base_offset, append_time, message) = match (&resp, code_and_info) {
            (None, _) => (0, -1, -1, None), // acks=0
            (Some(_), Some(x)) => x,
            (Some(_), None) => (KafkaCode::UnknownServerError.code(), -1, -1, None),
        };
        let n = b.records.len();
        match KafkaCode::try_from_code(code) {
            None | Some(KafkaCode::DuplicateSequenceNumber) => {
                st.acc.confirm(&b);
                b.succeed(base_offset, append_time);
                st.acc.completed(n);
            }
            Some(code @ (KafkaCode::MessageTooLarge | KafkaCode::RecordListTooLarge)) => {
                // Refused before it was written: split it, or fail its one record alone.
                let (topic, partition, bytes) = (b.tp.0.clone(), b.tp.1, b.bytes);
                match st.acc.split(b, now) {
                    None => {
                        tracing::debug!(
                            %topic, partition, %code, records = n, bytes,
                            "batch too large for the broker; split in two"
                        );
                    }
                    Some(b) => {
                        let err = Error::RecordTooLargeForBroker {
                            topic: topic.to_string(),
                            partition,
                            size: b.encoded.as_ref().map_or(b.bytes, |e| e.len()),
                            code,
                        };
                        tracing::debug!(error = %err, "record failed alone");
                        st.acc.skip_sequences(&b);
                        if cfg.transactional_id.is_some() && st.txn_error.is_none() {
                            st.txn_error = Some(err.clone());
                        }
                        b.fail(&err);
                        st.acc.completed(n);
                    }
                }
            }
            Some(code) => {
                let err = Error::broker_for(ApiKey::Produce, code, &b.tp.0, b.tp.1)
                    .with_message(message.as_deref());
                let expected_gap = code == KafkaCode::OutOfOrderSequenceNumber
                    && st.acc.gap_expected(&b.tp, b.base_sequence);
                match err.action() {
                    // An earlier batch explains the gap; it goes first anyway.
                    _ if expected_gap => st.acc.requeue(b, now),
                    ErrorAction::ResetProducerId
                        if cfg.idempotent && cfg.transactional_id.is_none() =>
                    {
                        tracing::warn!(topic = %b.tp.0, partition = b.tp.1, %code, "resetting the producer id");
                        st.reset_producer_id = true;
                        let retry_at = now + retry_delay(cfg, &b);
                        st.acc.requeue(b, retry_at);
                    }
                    // TRANSACTION_ABORTABLE (KIP-890): the record fails,
                    // and with it the transaction, which must be aborted.
                    ErrorAction::Fatal
                    | ErrorAction::ResetProducerId
                    | ErrorAction::AbortTransaction => {
                        if cfg.transactional_id.is_some() && st.txn_error.is_none() {
                            st.txn_error = Some(err.clone());
                        }
                        b.fail(&err);
                        st.acc.completed(n);
                    }
                    ErrorAction::RefreshMetadataAndRetry => {
                        let (retry_at, refresh_first) =
                            leader_retry(md, &b.tp, leader, now, retry_delay(cfg, &b));
                        if refresh_first {
                            refresh.push(b.tp.0.to_string());
                        } else {
                            tracing::debug!(
                                topic = %b.tp.0, partition = b.tp.1, %code, refused_by = leader,
                                "the partition has a new leader: retrying there at once"
                            );
                        }
                        st.acc.requeue(b, retry_at);
                    }
                    _ => {
                        let retry_at = now + retry_delay(cfg, &b);
                        st.acc.requeue(b, retry_at);
                    }
                }
            }
        }
    }
    shared.pending.send_replace(st.acc.pending_records);
    refresh
}

/// The wait before `b`'s next attempt: the producer's backoff for its
/// retry number (`attempts` counts the retries so far).
fn retry_delay(cfg: &ProducerConfig, b: &Batch) -> Duration {
    cfg.retry_policy().delay(b.attempts + 1)
}

async fn refresh_topics(client: &Client, mut topics: Vec<String>) {
    if topics.is_empty() {
        return;
    }
    topics.sort();
    topics.dedup();
    if let Err(e) = client.refresh_metadata(Some(&topics)).await {
        tracing::debug!(error = %e, "metadata refresh after a produce error failed");
    }
}

/// InitProducerId for an idempotent (non-transactional) producer.
pub(crate) async fn init_producer_id(
    client: &Client,
    cfg: &ProducerConfig,
) -> Result<ProducerIdEpoch> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(
            cfg.transactional_id
                .as_ref()
                .map(|t| TransactionalId(StrBytes::from_string(t.clone()))),
        )
        .with_transaction_timeout_ms(cfg.transaction_timeout.as_millis() as i32);
    let conn = client.any_connection(Lane::Control).await?;
    let resp = conn
        .send(&req, client.config().request_timeout, Duration::ZERO)
        .await?;
    crate::error::check_code(ApiKey::InitProducerId, resp.error_code)?;
    Ok(ProducerIdEpoch {
        id: resp.producer_id.0,
        epoch: resp.producer_epoch,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, MetadataResponse, ProduceResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::config::ClientConfig;
    use crate::fake_broker::{answer, api_versions, FakeBrokers, Request};
    use crate::producer::{Producer, ProducerConfig, ProducerRecord};

    /// The old leader of `t`-0 (node 1) and the new one (node 2).
    const OLD: u16 = 9301;
    const NEW: u16 = 9302;

    /// How node 1 answers a Produce.
    #[derive(Debug, Clone, Copy)]
    enum OldLeader {
        /// NOT_LEADER_OR_FOLLOWER naming node 2 at epoch 6 and its
        /// endpoint (KIP-951). Metadata never names node 2 (stale: a
        /// refresh would not find the new leader).
        Hints,
        /// It closes the connection (a dead node, as after `kill -9`).
        /// Metadata names node 2 at epoch 6 once `failover` is set.
        Dies,
    }

    /// Two fake brokers for `t`-0; node 2 writes at offset 42.
    #[derive(Debug, Clone)]
    struct Failover {
        old: OldLeader,
        failover: Arc<AtomicBool>,
        /// (port, api key) of every request, in arrival order.
        requests: Arc<Mutex<Vec<(u16, i16)>>>,
    }

    impl Failover {
        fn new(old: OldLeader) -> Failover {
            Failover {
                old,
                failover: Arc::default(),
                requests: Arc::default(),
            }
        }

        fn count(&self, port: u16, api: ApiKey) -> usize {
            let r = self.requests.lock().unwrap();
            r.iter()
                .filter(|(p, a)| *p == port && *a == api as i16)
                .count()
        }

        fn metadata_requests(&self) -> usize {
            let r = self.requests.lock().unwrap();
            r.iter()
                .filter(|(_, a)| *a == ApiKey::Metadata as i16)
                .count()
        }

        fn metadata(&self) -> MetadataResponse {
            let moved = self.failover.load(Ordering::SeqCst);
            let broker = |id: i32, port: u16| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(port))
            };
            let (leader, epoch) = if moved { (2, 6) } else { (1, 5) };
            let mut brokers = vec![broker(1, OLD)];
            if matches!(self.old, OldLeader::Dies) {
                brokers.push(broker(2, NEW));
            }
            MetadataResponse::default()
                .with_brokers(brokers)
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                    .with_partitions(vec![MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(leader))
                        .with_leader_epoch(epoch)
                        .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                        .with_isr_nodes(vec![BrokerId(1), BrokerId(2)])])])
        }

        /// One request's answer (`crate::fake_broker`): `None` closes the
        /// connection.
        fn answer(&self, req: &Request) -> Option<Vec<u8>> {
            if let Ok(api) = req.api {
                self.requests.lock().unwrap().push((req.port, api as i16));
            }
            match req.api {
                Ok(ApiKey::ApiVersions) => Some(api_versions(
                    req,
                    &[(ApiKey::Metadata, 1, 13), (ApiKey::Produce, 3, 11)],
                )),
                Ok(ApiKey::Metadata) => Some(answer(req, self.metadata())),
                Ok(ApiKey::Produce) if req.port == OLD && matches!(self.old, OldLeader::Dies) => {
                    None
                }
                Ok(ApiKey::Produce) => {
                    assert_eq!(req.version, 11, "Produce v10+ carries the hints");
                    Some(answer(req, produce_answer(req.port)))
                }
                _ => None,
            }
        }

        /// The two nodes as a connector.
        fn brokers(&self) -> FakeBrokers {
            let cluster = self.clone();
            FakeBrokers::new(move |req| cluster.answer(req))
        }
    }

    /// Node 1 refuses with the KIP-951 hint; node 2 writes at offset 42.
    fn produce_answer(port: u16) -> ProduceResponse {
        let partition = PartitionProduceResponse::default().with_index(0);
        let partition = if port == OLD {
            partition
                .with_error_code(KafkaCode::NotLeaderOrFollower.code())
                .with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(2))
                        .with_leader_epoch(6),
                )
        } else {
            partition.with_base_offset(42)
        };
        let resp = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_responses(vec![partition])]);
        if port == OLD {
            resp.with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(i32::from(NEW))])
        } else {
            resp
        }
    }

    /// A non-idempotent producer (no InitProducerId to fake) on `cluster`,
    /// with retry backoffs from `backoff_ms` doubling to `backoff_max_ms`.
    async fn producer(cluster: &Failover, backoff_ms: u64, backoff_max_ms: u64) -> Producer {
        let config = ClientConfig::builder()
            .bootstrap(&format!("127.0.0.1:{OLD}"))
            .unwrap()
            .connector(Arc::new(cluster.brokers()))
            .metadata_max_age(Duration::from_secs(3600))
            .set("reconnect.backoff.ms", "1")
            .unwrap()
            .set("reconnect.backoff.max.ms", "1")
            .unwrap()
            .build()
            .unwrap();
        let client = Client::connect(config).await.unwrap();
        let cfg = ProducerConfig::builder()
            .set("bootstrap.servers", &format!("127.0.0.1:{OLD}"))
            .unwrap()
            .set("enable.idempotence", "false")
            .unwrap()
            .set("retry.backoff.ms", &backoff_ms.to_string())
            .unwrap()
            .set("retry.backoff.max.ms", &backoff_max_ms.to_string())
            .unwrap()
            .set("linger.ms", "0")
            .unwrap()
            .build()
            .unwrap();
        Producer::with_client(client, cfg)
    }

    #[tokio::test]
    async fn a_produce_refused_with_a_leader_hint_retries_at_the_hinted_leader_at_once() {
        let cluster = Failover::new(OldLeader::Hints);
        // A backoff far longer than the test: only a retry that skips it
        // (the leader moved) delivers in time.
        let producer = producer(&cluster, 60_000, 60_000).await;
        let delivery = producer
            .send(ProducerRecord::new("t").partition(0).value("v"))
            .await
            .unwrap();
        let metadata_before = cluster.metadata_requests();

        let written = tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .expect("retried at once, not after retry.backoff.ms")
            .unwrap();

        assert_eq!(written.offset, 42, "written by the hinted leader");
        assert_eq!(cluster.count(OLD, ApiKey::Produce), 1);
        assert_eq!(cluster.count(NEW, ApiKey::Produce), 1);
        assert_eq!(
            cluster.metadata_requests(),
            metadata_before,
            "no Metadata round trip"
        );
        let md = producer.client().metadata();
        let p = md.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch), (2, 6));
        assert_eq!(
            md.brokers[&2].address.port, NEW,
            "node 2's endpoint from the hint"
        );
    }

    /// The leader dies (no answer, no hint); the metadata names the new
    /// one only later, while the batch waits out a long backoff. It goes
    /// as soon as a refresh names the new leader, not when its backoff
    /// ends (KIP-951; `cluster::leader_kill` measures it on the cluster).
    #[tokio::test]
    async fn a_retry_waiting_for_a_dead_leader_goes_once_the_metadata_names_a_new_one() {
        let cluster = Failover::new(OldLeader::Dies);
        // 100, 200, 400, 800 ms after the first four failures; 1600 ms
        // (±20 %) after the fifth.
        let producer = producer(&cluster, 100, 60_000).await;
        let delivery = producer
            .send(ProducerRecord::new("t").partition(0).value("v"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster.count(OLD, ApiKey::Produce) < 5 {
            assert!(Instant::now() < deadline, "five attempts at node 1");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The fifth attempt failed: its retry waits at least 1280 ms. The
        // controller moves the partition a little later.
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.failover.store(true, Ordering::SeqCst);
        let moved_at = Instant::now();

        let written = tokio::time::timeout(Duration::from_secs(10), delivery)
            .await
            .unwrap()
            .unwrap();

        let after = moved_at.elapsed();
        assert_eq!(written.offset, 42);
        assert_eq!(
            cluster.count(OLD, ApiKey::Produce),
            5,
            "not sent to node 1 again"
        );
        assert!(
            after < Duration::from_millis(700),
            "written {after:?} after the failover: the rest of the backoff was waited out"
        );
    }

    #[test]
    fn only_refusals_with_a_complete_current_leader_are_hints() {
        let mut resp = produce_answer(OLD);
        resp.responses[0].partition_responses.push(
            PartitionProduceResponse::default()
                .with_index(1)
                .with_error_code(KafkaCode::NotLeaderOrFollower.code()),
        );
        resp.responses[0].partition_responses.push(
            PartitionProduceResponse::default()
                .with_index(2)
                .with_current_leader(
                    LeaderIdAndEpoch::default()
                        .with_leader_id(BrokerId(3))
                        .with_leader_epoch(1),
                ),
        );
        let hints = leader_hints(&resp);
        let tps: Vec<_> = hints
            .partitions
            .iter()
            .map(|h| (h.tp.partition, h.leader, h.leader_epoch))
            .collect();
        assert_eq!(tps, vec![(0, 2, 6)], "no leader given (1), no error (2)");
        assert_eq!(hints.nodes.len(), 1);
        assert_eq!(hints.nodes[0].address.port, NEW);
    }

    #[test]
    fn a_refused_batch_waits_its_backoff_unless_its_partition_has_a_new_leader() {
        let mut md = Metadata::default();
        md.merge(&Failover::new(OldLeader::Hints).metadata(), true);
        let tp: QueueKey = (Arc::from("t"), 0);
        let now = Instant::now();
        let backoff = Duration::from_millis(100);
        assert_eq!(
            leader_retry(&md, &tp, 1, now, backoff),
            (now + backoff, true),
            "the cache still names the leader that refused it: refresh and back off"
        );
        let _ = md.apply_leader_hints(&leader_hints(&produce_answer(OLD)));
        assert_eq!(leader_retry(&md, &tp, 1, now, backoff), (now, false));
    }
}
