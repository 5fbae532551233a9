//! The poll task on a share group (KIP-932): a `ShareConsumer` in explicit
//! acknowledgement mode instead of a `Consumer`. The lanes, workers and
//! failure policy are the consumer group's; what the group is told is the
//! [`Acks`] completion's acknowledgements, which this task (the consumer's
//! one owner) takes and hands to the consumer.
//!
//! ```text
//!  loop: take acks ─▶ acknowledge(ACCEPT | RELEASE | REJECT) ─▶ commit_async
//!        RENEW every record held past half its acquisition lock (queued or running)
//!        every record of the last polls acknowledged or renewed, and fewer than
//!          max_in_flight_records held? ─yes─▶ poll ─▶ dispatch (delivery counts to the completion)
//!        else wait: work finished, the next RENEW due, or shutdown
//!  shutdown: stop (queued ─▶ RELEASE), drain ≤ drain_timeout (acking, renewing), commit_sync, close
//! ```
//!
//! Share groups keep no order, so the lanes are unordered; a record
//! released by one member may be handled by another meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use consumer_core::share::{
    AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareError, ShareRecord,
};
use consumer_core::{ConsumerError, PartitionRecords, TopicPartition};
use kafka_wire::records::Record;
use kafka_wire::{ErrorAction, Producer};
use tokio::time::Instant;

use super::completion::share::Acks;
use super::runtime::{Runtime, StartWorker};
use super::start::{create_failure_topics, until_connected, AbortTasksOnDrop, PollBackoff};
use super::stats::Stats;
use crate::config::ProcessorConfig;
use crate::observe;
use crate::scheduler::Ordering as Lanes;

/// How long one poll waits for records.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// The acquisition lock assumed before the broker announces one.
const DEFAULT_LOCK: Duration = Duration::from_secs(30);

/// A [`ShareError`] as the Processor's error.
pub(super) fn share_error(e: ShareError) -> ConsumerError {
    // Keeps the share error's own action (a retriable one is retried by
    // the poll backoff, not taken as fatal).
    ConsumerError::from(e)
}

/// Settings a share group cannot honour, refused before anything
/// connects, each saying why.
///
/// # Errors
/// [`ConsumerError::Wire`] with a configuration error.
pub(super) fn refuse_what_share_groups_cannot_do(
    cfg: &ProcessorConfig,
) -> Result<(), ConsumerError> {
    let refuse = |why: String| Err(kafka_wire::Error::Config(why).into());
    match cfg.ordering {
        Lanes::Unordered => {}
        o => {
            return refuse(format!(
                "ordering {o:?} cannot be used with a share group: share groups do not keep order \
                 (the broker hands one partition's records to several members at once, and a \
                 released record comes back after later ones). Use Ordering::Unordered (the \
                 default of ProcessorConfig::share_group), or a consumer group where order matters"
            ))
        }
    }
    if cfg.retry_topics.is_some() {
        return refuse(
            "retry topics cannot be used with a share group: the broker redelivers a released \
             record itself (its delivery count is the attempt)"
                .into(),
        );
    }
    if cfg.topic_pattern.is_some() {
        return refuse(
            "a share group subscribes by topic name: topic_pattern cannot be used".into(),
        );
    }
    Ok(())
}

/// The share group's config naming its dead-letter topic (KIP-1191).
pub(super) const GROUP_DLQ_CONFIG: &str = "errors.deadletterqueue.topic.name";

/// The group's own dead-letter topic, if it has one (Kafka 4.4+). A broker
/// without the config, or one that cannot say, counts as none: the
/// runtime's DLT then takes the records (logged).
async fn group_dlq(client: &kafka_wire::Client, group: &str) -> Option<String> {
    let resource = kafka_wire::ConfigResource::Group(group.to_string());
    match client.describe_configs(&resource).await {
        Ok(entries) => entries
            .into_iter()
            .find(|e| e.name == GROUP_DLQ_CONFIG)
            .and_then(|e| e.value)
            .filter(|v| !v.trim().is_empty()),
        Err(e) => {
            tracing::info!(group, error = %e, "could not read the share group's configs; records failed for good go to the runtime's DLT");
            None
        }
    }
}

/// A record this member holds for the runtime: enough to acknowledge it.
struct Held {
    /// The record without its payload.
    record: ShareRecord,
    /// When to RENEW its acquisition lock next.
    renew_at: std::time::Instant,
    /// A RENEW went for it: the consumer lets the next poll go on.
    renewed: bool,
}

type HeldMap = HashMap<(TopicPartition, i64), Held>;

/// Run the processor on the share group `cfg.share` names, until
/// `shutdown` completes.
pub(super) async fn run(
    cfg: ProcessorConfig,
    handler: Arc<dyn StartWorker<Acks>>,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConsumerError> {
    refuse_what_share_groups_cannot_do(&cfg)?;
    let Some(mut share) = cfg.share.clone() else {
        return Err(ConsumerError::Fatal("no share group configured".into()));
    };
    share.acknowledgement_mode = AcknowledgementMode::Explicit;
    tokio::pin!(shutdown);
    observe::describe();
    let deadline = cfg.startup_timeout.map(|t| Instant::now() + t);
    let producer = match &cfg.dlt_producer {
        Some(p) => {
            let connect = || Producer::connect(p.clone());
            match until_connected("dead-letter producer", connect, &mut shutdown, deadline).await? {
                Some(p) => Some(p),
                None => return Ok(()),
            }
        }
        None => None,
    };
    let connect = || {
        let share = share.clone();
        async move { ShareConsumer::connect(share).await.map_err(share_error) }
    };
    let Some(mut consumer) =
        until_connected("share consumer", connect, &mut shutdown, deadline).await?
    else {
        return Ok(());
    };
    super::start::warn_about_missing_topics(&share.client, &cfg.topics).await;
    if cfg.create_topics {
        if let Some(p) = &producer {
            create_failure_topics(p.client(), &cfg).await;
        }
    }
    let group_dlq = match &producer {
        Some(p) => group_dlq(p.client(), &share.group_id).await,
        None => None,
    };
    if let Some(dlq) = &group_dlq {
        tracing::info!(group = %share.group_id, dlq = %dlq, "the share group has its own dead-letter queue: records failed for good are rejected, and the broker writes them there");
    }
    let topics = cfg.topics.clone();
    let rt = Runtime::new(cfg, handler, stats.clone(), producer).group_dlq(group_dlq.is_some());
    let rt = Arc::new(rt);
    let _abort_on_drop = AbortTasksOnDrop(rt.clone());
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs).await.map_err(share_error)?;

    let mut held = HeldMap::new();
    let mut poll_backoff = PollBackoff::new(rt.metrics().poll_errors.clone());
    let max_held = rt.cfg().max_in_flight_records;
    let result = loop {
        let finished = rt.work_finished();
        acknowledge(&rt, &mut consumer, &mut held, &stats);
        let next_renew = renew(&mut consumer, &mut held);
        count_outcomes(&consumer.take_ack_outcomes(), &stats);
        let may_poll = held.len() < max_held && held.values().all(|h| h.renewed);
        let wake = next_renew.map_or(Instant::now() + Duration::from_secs(1), Instant::from_std);
        let polled = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            r = consumer.poll(POLL_WAIT), if may_poll => match r {
                Ok(records) => {
                    poll_backoff.reset();
                    records
                }
                Err(e) if e.action() != ErrorAction::Fatal => {
                    stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                    let wait = poll_backoff.failed(&share_error(e));
                    tokio::select! {
                        _ = &mut shutdown => break Ok(()),
                        _ = tokio::time::sleep(wait) => {}
                    }
                    Vec::new()
                }
                Err(e) => break Err(share_error(e)),
            },
            _ = finished => Vec::new(),
            _ = tokio::time::sleep_until(wake) => Vec::new(),
        };
        dispatch(&rt, &consumer, &mut held, polled);
    };

    // Shutdown: queued records are released; running ones may finish
    // (acknowledged and renewed meanwhile) within drain_timeout.
    let all = rt.partitions();
    rt.stop_partitions(&all);
    let drain_until = Instant::now() + rt.cfg().drain_timeout;
    loop {
        let finished = rt.work_finished();
        acknowledge(&rt, &mut consumer, &mut held, &stats);
        renew(&mut consumer, &mut held);
        if rt.busy() == 0 {
            break;
        }
        if Instant::now() >= drain_until {
            tracing::warn!(
                unfinished = rt.busy(),
                "drain deadline passed with records unfinished; closing releases them to the group"
            );
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), finished).await;
    }
    acknowledge(&rt, &mut consumer, &mut held, &stats);
    match consumer.commit_sync(rt.cfg().drain_timeout).await {
        Ok(outcomes) => count_outcomes(&outcomes, &stats),
        Err(e) => tracing::warn!(error = %e, "the last acknowledgements were not all answered"),
    }
    if let Some(p) = rt.producer() {
        p.close().await;
    }
    match consumer.close_within(rt.cfg().drain_timeout).await {
        Ok(outcomes) => count_outcomes(&outcomes, &stats),
        Err(e) => tracing::warn!(error = %e, "closing the share consumer"),
    }
    result
}

/// Hand a poll's records to the lanes, partition by partition, their
/// delivery counts to the completion, and keep what acknowledging them
/// takes.
fn dispatch(
    rt: &Arc<Runtime<Acks>>,
    consumer: &ShareConsumer,
    held: &mut HeldMap,
    polled: Vec<ShareRecord>,
) {
    if polled.is_empty() {
        return;
    }
    let half_lock = consumer.acquisition_lock_timeout().unwrap_or(DEFAULT_LOCK) / 2;
    let now = std::time::Instant::now();
    /// One partition's records of the poll, with their delivery counts.
    struct Part {
        tp: TopicPartition,
        records: Vec<Record>,
        counts: Vec<(i64, u16)>,
    }
    let mut by_tp: Vec<Part> = Vec::new();
    for sr in polled {
        let deadline = consumer.lock_deadline(&sr).unwrap_or(now + 2 * half_lock);
        let renew_at = deadline.checked_sub(half_lock).unwrap_or(now);
        let stub = ShareRecord {
            tp: sr.tp.clone(),
            topic_id: sr.topic_id,
            record: Record {
                offset: sr.record.offset,
                timestamp: sr.record.timestamp,
                key: None,
                value: None,
                headers: Vec::new(),
            },
            delivery_count: sr.delivery_count,
        };
        held.insert(
            (sr.tp.clone(), sr.record.offset),
            Held {
                record: stub,
                renew_at,
                renewed: false,
            },
        );
        let i = match by_tp.iter().position(|p| p.tp == sr.tp) {
            Some(i) => i,
            None => {
                by_tp.push(Part {
                    tp: sr.tp.clone(),
                    records: Vec::new(),
                    counts: Vec::new(),
                });
                by_tp.len() - 1
            }
        };
        by_tp[i].counts.push((sr.record.offset, sr.delivery_count));
        by_tp[i].records.push(sr.record);
    }
    for Part {
        tp,
        records,
        counts,
    } in by_tp
    {
        let batch = PartitionRecords {
            tp,
            records,
            high_watermark: -1,
            last_stable_offset: -1,
        };
        rt.dispatch_with(batch, |acks| {
            for (offset, count) in counts {
                acks.delivered(offset, count);
            }
        });
    }
}

/// Hand every finished record's acknowledgement to the consumer, and send
/// them.
fn acknowledge(
    rt: &Runtime<Acks>,
    consumer: &mut ShareConsumer,
    held: &mut HeldMap,
    stats: &Stats,
) {
    let acks = rt.take_acks();
    if acks.is_empty() {
        return;
    }
    for (tp, offset, ack) in acks {
        let Some(h) = held.remove(&(tp, offset)) else {
            continue;
        };
        if let Err(e) = consumer.acknowledge(&h.record, ack) {
            stats.ack_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tp = %h.record.tp, offset, ?ack, error = %e, "acknowledgement refused; the broker delivers the record again");
        }
    }
    consumer.commit_async();
}

/// RENEW the acquisition lock of every held record past its renewal time
/// (queued or running: both are still the runtime's). Returns when the
/// next one is due.
fn renew(consumer: &mut ShareConsumer, held: &mut HeldMap) -> Option<std::time::Instant> {
    let now = std::time::Instant::now();
    let half_lock = consumer.acquisition_lock_timeout().unwrap_or(DEFAULT_LOCK) / 2;
    let mut gone = Vec::new();
    for (key, h) in held.iter_mut() {
        if h.renew_at > now {
            continue;
        }
        h.renew_at = now + half_lock;
        match consumer.acknowledge(&h.record, AcknowledgeType::Renew) {
            Ok(()) => h.renewed = true,
            Err(e) => {
                tracing::warn!(tp = %key.0, offset = key.1, error = %e, "could not renew the acquisition lock; the broker delivers the record again when it runs out");
                gone.push(key.clone());
            }
        }
    }
    for key in gone {
        held.remove(&key);
    }
    held.values().map(|h| h.renew_at).min()
}

/// Count what the broker answered to acknowledgements.
fn count_outcomes(outcomes: &[consumer_core::share::AckOutcome], stats: &Stats) {
    for o in outcomes {
        let n = o.offsets.len() as u64;
        if let Some(e) = &o.error {
            stats.ack_failures.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(tp = %o.tp, ack = ?o.ack, offsets = n, error = %e, "acknowledgements not applied; the broker delivers those records again");
            continue;
        }
        let counter = match o.ack {
            AcknowledgeType::Accept => &stats.accepted,
            AcknowledgeType::Release => &stats.released,
            AcknowledgeType::Reject => &stats.rejected,
            AcknowledgeType::Renew => &stats.renewed,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumer_core::share::ShareConsumerConfig;

    fn cfg() -> ProcessorConfig {
        let share = ShareConsumerConfig::builder()
            .set("bootstrap.servers", "127.0.0.1:9092")
            .and_then(|b| b.set("group.id", "payments"))
            .and_then(|b| b.build())
            .unwrap();
        ProcessorConfig::share_group(share, &["orders"])
    }

    #[test]
    fn ordering_retry_topics_and_patterns_are_refused_saying_why() {
        assert!(refuse_what_share_groups_cannot_do(&cfg()).is_ok());
        assert_eq!(cfg().ordering, Lanes::Unordered, "the default");
        assert_eq!(cfg().consumer.group_id.as_deref(), Some("payments"));
        for o in [Lanes::PerKey, Lanes::PerPartition] {
            let e = refuse_what_share_groups_cannot_do(&cfg().ordering(o)).unwrap_err();
            assert!(
                e.to_string().contains("share groups do not keep order"),
                "{e}"
            );
        }
        let e = refuse_what_share_groups_cannot_do(&cfg().retry_topics(&[Duration::from_secs(1)]))
            .unwrap_err();
        assert!(e.to_string().contains("redelivers"), "{e}");
        let e = refuse_what_share_groups_cannot_do(&cfg().topic_pattern("o.*")).unwrap_err();
        assert!(e.to_string().contains("topic_pattern"), "{e}");
    }
}
