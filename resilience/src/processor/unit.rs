//! One unit of work (a record, or a batch of one lane's records) from
//! start to finish: skip what may not start or is already done, wait out a
//! quarantine or a retry topic's delay, call the handler with its deadline,
//! retry with backoff, and forward failures to a retry topic or the DLT,
//! completing the offsets only once the write is acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use consumer_core::TopicPartition;
use kafka_wire::records::Record;
use kafka_wire::ProducerRecord;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::runtime::{Runtime, Work};
use super::AnyHandler;
use crate::observe::{self, Event};
use crate::retry::{Decision, HandlerError};
use crate::retry_topics::{self, NextHop};
use crate::scheduler::LaneId;

fn rand_unit() -> f64 {
    rand::random::<f64>()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Runtime {
    pub(crate) async fn run_unit(
        self: Arc<Self>,
        lane: &LaneId,
        items: Vec<Work>,
        mut permit: OwnedSemaphorePermit,
    ) {
        let tp = &lane.0;
        let epoch = items.first().map_or(0, |w| w.epoch);
        if !self.may_continue(tp, epoch) {
            for w in &items {
                self.finish(tp, w, false);
            }
            return;
        }
        let Some((items, keys)) = self.skip_duplicates(tp, items).await else {
            return;
        };
        if items.is_empty() {
            return;
        }
        // Wait without holding a permit: the other lanes go on meanwhile.
        if let Some(until) = self.wait_until(tp, &items) {
            drop(permit);
            if !self.sleep_unless_stopped(tp, epoch, until).await {
                for w in &items {
                    self.finish(tp, w, false);
                }
                return;
            }
            permit = self
                .permits
                .clone()
                .acquire_owned()
                .await
                .expect("permits open");
        }

        let records: Vec<&Record> = items.iter().map(|w| &w.record).collect();
        let mut delays = self.cfg.backoff.delays(rand_unit);
        let mut attempt = 1u32;
        let err = loop {
            let span = tracing::info_span!(
                "handle",
                topic = %tp.topic,
                partition = tp.partition,
                offset = records[0].offset,
                records = records.len(),
                attempt,
            );
            let started = std::time::Instant::now();
            let result = self.call_handler(tp, &records).instrument(span).await;
            metrics::histogram!(observe::HANDLER_SECONDS).record(started.elapsed().as_secs_f64());
            let err = match result {
                Ok(()) => {
                    self.mark_done(&keys).await;
                    self.stats
                        .handled
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    metrics::counter!(observe::HANDLED).increment(items.len() as u64);
                    if let Some(p) = self.lock().parts.get_mut(tp) {
                        p.failures_in_row = 0;
                    }
                    for w in &items {
                        self.finish(tp, w, true);
                    }
                    return;
                }
                Err(e) => e,
            };
            if !self.may_continue(tp, epoch) {
                // Revoked meanwhile: the next owner handles these records.
                for w in &items {
                    self.finish(tp, w, false);
                }
                return;
            }
            if self.cfg.retry_topics.is_some() {
                break err; // no blocking retry: the retry topic is the retry
            }
            match self.cfg.backoff.decide(attempt, &err, delays.next()) {
                Decision::RetryAfter(d) => {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(observe::RETRIED).increment(1);
                    tracing::debug!(%tp, offset = records[0].offset, attempt, error = %err, delay = ?d, "retrying");
                    drop(permit); // only this lane waits
                    if !self
                        .sleep_unless_stopped(tp, epoch, Instant::now() + d)
                        .await
                    {
                        for w in &items {
                            self.finish(tp, w, false);
                        }
                        return;
                    }
                    permit = self
                        .permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("permits open");
                    attempt += 1;
                }
                Decision::DeadLetter => break err,
            }
        };
        drop(records);
        self.forward_failed(tp, epoch, &items, &err, attempt).await;
        drop(permit);
    }

    /// Sleep until `until`, waking early when the partition is revoked or
    /// the runtime stops; `false` if work of `epoch` may not go on.
    async fn sleep_unless_stopped(&self, tp: &TopicPartition, epoch: u64, until: Instant) -> bool {
        loop {
            // Created before the check, so a stop in between is not missed.
            let stopped = self.stopped.notified();
            if !self.may_continue(tp, epoch) {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = stopped => {}
            }
        }
    }

    async fn call_handler(
        &self,
        tp: &TopicPartition,
        records: &[&Record],
    ) -> Result<(), HandlerError> {
        let call = async {
            match &self.handler {
                AnyHandler::One(h) => h.handle(tp, records[0]).await,
                AnyHandler::Batch(h) => {
                    let owned: Vec<Record> = records.iter().map(|r| (*r).clone()).collect();
                    h.handle_batch(tp, &owned).await
                }
            }
        };
        match self.cfg.handler_timeout {
            Some(d) => tokio::time::timeout(d, call).await.unwrap_or_else(|_| {
                Err(HandlerError::Retryable(format!(
                    "handler exceeded its {d:?} deadline"
                )))
            }),
            None => call.await,
        }
    }

    /// When this unit may start: after a quarantine, and (for a retry
    /// topic's records) when the last of them is due.
    fn wait_until(&self, tp: &TopicPartition, items: &[Work]) -> Option<Instant> {
        let quarantine = self
            .lock()
            .parts
            .get(tp)
            .and_then(|p| p.quarantined_until)
            .filter(|u| *u > Instant::now());
        let due = if self.retry_index.contains_key(&tp.topic) {
            items
                .iter()
                .filter_map(|w| retry_topics::due_ms(&w.record))
                .max()
                .map(|due| due - now_ms())
                .filter(|ms| *ms > 0)
                .map(|ms| Instant::now() + Duration::from_millis(ms as u64))
        } else {
            None
        };
        quarantine.max(due)
    }

    /// Drop records whose side effects were already applied (idempotency
    /// store), completing them. `None` if the partition went away.
    async fn skip_duplicates(
        &self,
        tp: &TopicPartition,
        items: Vec<Work>,
    ) -> Option<(Vec<Work>, Vec<String>)> {
        let Some(idem) = self.idempotency() else {
            return Some((items, Vec::new()));
        };
        let mut keep = Vec::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        let mut items = items.into_iter();
        while let Some(w) = items.next() {
            let Some(key) = idem.key.key_of(tp, &w.record) else {
                keep.push(w);
                continue;
            };
            let mut delay = Duration::from_millis(50);
            let seen = loop {
                match idem.store.seen(&key).await {
                    Ok(seen) => break seen,
                    Err(e) => {
                        tracing::error!(%tp, offset = w.record.offset, error = %e, "idempotency store unavailable; partition waits");
                        if !self.may_continue(tp, w.epoch) {
                            self.finish(tp, &w, false);
                            for rest in keep.iter().chain(items.as_slice()) {
                                self.finish(tp, rest, false);
                            }
                            return None;
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            };
            if seen {
                self.stats.deduplicated.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(observe::DEDUPLICATED).increment(1);
                self.finish(tp, &w, true);
            } else {
                keep.push(w);
                keys.push(key);
            }
        }
        Some((keep, keys))
    }

    /// Record the side effects as applied, before the offsets may commit.
    /// Retries until the store answers: giving up would redo side effects.
    async fn mark_done(&self, keys: &[String]) {
        let Some(idem) = self.idempotency() else {
            return;
        };
        for key in keys {
            let mut delay = Duration::from_millis(50);
            while let Err(e) = idem.store.mark(key).await {
                tracing::error!(key, error = %e, "could not mark an event processed; retrying before its offset may commit");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// The records failed for good here: each goes to its next retry topic
    /// or the DLT, and completes once the write is acknowledged.
    async fn forward_failed(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        items: &[Work],
        err: &HandlerError,
        attempts: u32,
    ) {
        let (source, step) = self.source_of(&tp.topic);
        let hop = match &self.cfg.retry_topics {
            Some(chain) => retry_topics::next_hop(chain, source, step, err),
            None => NextHop::DeadLetter,
        };
        let dlt = (self.cfg.dlt_topic)(source);
        for w in items {
            let (out, target) = match &hop {
                NextHop::Retry { topic, delay } => (
                    retry_topics::to_retry_topic(
                        topic,
                        *delay,
                        now_ms(),
                        &tp.topic,
                        tp.partition,
                        &self.group,
                        &w.record,
                        err,
                    ),
                    topic.as_str(),
                ),
                NextHop::DeadLetter => (
                    crate::dlt::dead_letter(
                        &dlt,
                        &tp.topic,
                        tp.partition,
                        &self.group,
                        &w.record,
                        err,
                        crate::dlt::attempts_so_far(&w.record) + attempts,
                    ),
                    dlt.as_str(),
                ),
            };
            if !self
                .write_until_acked(tp, epoch, w.record.offset, target, out)
                .await
            {
                self.finish(tp, w, false);
                continue;
            }
            match &hop {
                NextHop::Retry { topic, .. } => {
                    self.stats.sent_to_retry.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(observe::SENT_TO_RETRY_TOPIC).increment(1);
                    self.observe(Event::SentToRetryTopic {
                        tp: tp.clone(),
                        offset: w.record.offset,
                        topic: topic.clone(),
                    });
                }
                NextHop::DeadLetter => {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(observe::DEAD_LETTERED).increment(1);
                    self.observe(Event::DeadLettered {
                        tp: tp.clone(),
                        offset: w.record.offset,
                    });
                }
            }
            self.finish(tp, w, true);
        }
        // Poison (non-retryable) records are the DLT's job and never
        // quarantine; retryable ones that ran out of retries suggest an
        // outage, and a run of them pauses the partition.
        if err.is_retryable() && matches!(hop, NextHop::DeadLetter) {
            self.count_failure(tp);
        }
    }

    /// Write `out` and wait for the acknowledgement, retrying: the
    /// partition stalls (and says so) rather than commit past an unwritten
    /// record. `false` if the partition went away meanwhile.
    async fn write_until_acked(
        &self,
        tp: &TopicPartition,
        epoch: u64,
        offset: i64,
        target: &str,
        out: ProducerRecord,
    ) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match &self.producer {
                Some(p) => match p.send(out.clone()).await {
                    Ok(d) => d.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                None => {
                    Err("no dead-letter producer configured (ProcessorConfig::dead_letter)".into())
                }
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    metrics::counter!(observe::DLT_WRITE_FAILURES).increment(1);
                    self.stats
                        .dlt_write_failures
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%tp, offset, error = %e, target, "could not write the failed record; its partition waits and nothing past it commits");
                    if !self
                        .sleep_unless_stopped(tp, epoch, Instant::now() + delay)
                        .await
                    {
                        return false;
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One more failure in a row; quarantine the partition at the threshold.
    fn count_failure(&self, tp: &TopicPartition) {
        let q = self.cfg.quarantine;
        if q.after_failures == 0 {
            return;
        }
        let quarantined = {
            let mut st = self.lock();
            let Some(p) = st.parts.get_mut(tp) else {
                return;
            };
            p.failures_in_row += 1;
            if p.failures_in_row >= q.after_failures {
                p.failures_in_row = 0;
                p.quarantined_until = Some(Instant::now() + q.pause);
                true
            } else {
                false
            }
        };
        if quarantined {
            self.stats.quarantines.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(observe::QUARANTINED).increment(1);
            tracing::warn!(%tp, pause = ?q.pause, failures = q.after_failures, "partition quarantined after failures in a row; the others go on");
            self.observe(Event::Quarantined(tp.clone()));
        }
    }
}
