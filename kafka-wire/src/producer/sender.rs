//! The sender task: drains ready batches, groups them by leader, sends
//! Produce requests (up to `max.in.flight` per broker, none to a broker
//! still throttled: [`Brokers`]) and settles each batch: delivered,
//! requeued for retry after the producer's [`Backoff`](crate::Backoff)
//! (`retry.backoff.ms` doubling to `retry.backoff.max.ms` per attempt of
//! that batch), or failed.

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
        let (ready, deadline, closing_done, need_pid, flush) = {
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
            let ready = if need_pid || (cfg.idempotent && st.producer.is_none()) {
                Vec::new()
            } else {
                st.acc.ready(now, flush)
            };
            let done = st.closing && st.acc.is_idle() && in_flight.is_empty();
            shared.pending.send_replace(st.acc.pending_records);
            (ready, st.acc.next_deadline(), done, need_pid, flush)
        };
        if closing_done {
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
            .leaders_now(&client, &ready, now, cfg.retry_backoff)
            .await;
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
            let batches = {
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
                    if let Some(b) = st.acc.take(&tp, producer) {
                        bytes += b.bytes;
                        sealed.push(tp);
                        out.push(b);
                    }
                }
                out
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
            match start_request(&client, &cfg, leader, &mut batches).await {
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
                let refresh = settle(&shared, &cfg, batches, result);
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
/// by one backoff. At most once per `retry.backoff.ms`, however many
/// batches wait.
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

    /// The metadata to send `ready` by: asked for again first when one of
    /// their leaders is unreachable, and not asked for within `every`.
    async fn leaders_now(
        &mut self,
        client: &Client,
        ready: &[QueueKey],
        now: Instant,
        every: Duration,
    ) -> Arc<crate::metadata::Metadata> {
        let md = client.metadata();
        if self.leaders.is_empty() || self.asked_at.is_some_and(|t| now < t + every) {
            return md;
        }
        let mut topics: Vec<String> = ready
            .iter()
            .filter(|tp| {
                md.leader(&tp.0, tp.1)
                    .is_some_and(|b| self.leaders.contains(&b.id))
            })
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

/// Encode (once) and queue one Produce request on the leader's connection.
/// `None`: acks=0, nothing to wait for.
async fn start_request(
    client: &Client,
    cfg: &ProducerConfig,
    leader: i32,
    batches: &mut [Batch],
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
    conn.start(&req, client.config().request_timeout)
        .await
        .map(Some)
}

/// Decide each batch's fate from the response (or the request's error).
/// Returns the topics whose metadata should be refreshed.
fn settle(
    shared: &Shared,
    cfg: &ProducerConfig,
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
                    ErrorAction::Fatal | ErrorAction::ResetProducerId => {
                        if cfg.transactional_id.is_some() && st.txn_error.is_none() {
                            st.txn_error = Some(err.clone());
                        }
                        b.fail(&err);
                        st.acc.completed(n);
                    }
                    ErrorAction::RefreshMetadataAndRetry => {
                        refresh.push(b.tp.0.to_string());
                        let retry_at = now + retry_delay(cfg, &b);
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
