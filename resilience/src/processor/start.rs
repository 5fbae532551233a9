//! What both poll loops (a consumer group's in `mod.rs`, a share group's
//! in `share_poll.rs`) and the exactly-once processor start with:
//! connecting with backoff, refusing settings that defeat the runtime,
//! creating the failure topics; and the poll backoff and the abort guard
//! they run with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use consumer_core::{ConsumerConfig, ConsumerError};
use kafka_wire::{Client, NewTopic};
use tokio::time::Instant;

use super::completion::Completion;
use super::runtime::Runtime;
use crate::config::ProcessorConfig;
use crate::retry::runtime_delays;

/// The pause after a retriable poll error (a corrupt batch, a lost
/// connection): 50 ms, doubling to 5 s; a good poll starts over. The
/// consumer fetches again from the same position, so a corrupt batch is
/// never delivered nor skipped: its partition waits (and says so) while
/// the others go on.
pub(crate) struct PollBackoff {
    delays: kafka_wire::Delays<fn() -> f64>,
    /// `resilience_poll_errors_total` of this run.
    errors: metrics::Counter,
}

impl PollBackoff {
    pub(crate) fn new(errors: metrics::Counter) -> Self {
        PollBackoff {
            delays: runtime_delays(),
            errors,
        }
    }

    /// A good poll: the next failure waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.delays = runtime_delays();
    }

    /// Log and count `e`; how long to wait before polling again.
    pub(crate) fn failed(&mut self, e: &ConsumerError) -> Duration {
        let wait = self.delays.next().unwrap_or(Duration::from_secs(5));
        self.errors.increment(1);
        tracing::warn!(error = %e, retry_in = ?wait, "poll failed; polling again");
        wait
    }
}

/// Aborts the runtime's tasks when `run` returns or is dropped mid-way.
pub(super) struct AbortTasksOnDrop<C: Completion>(pub(super) Arc<Runtime<C>>);

impl<C: Completion> Drop for AbortTasksOnDrop<C> {
    fn drop(&mut self) {
        self.0.abort_tasks();
    }
}

/// Create the DLT and retry topics that are missing, with the source's
/// partition count. Failures are logged: a missing DLT stalls only the
/// partitions that need it, and says so.
pub(super) async fn create_failure_topics(client: &Client, cfg: &ProcessorConfig) {
    for source in &cfg.topics {
        let partitions = match client
            .refresh_metadata(Some(std::slice::from_ref(source)))
            .await
        {
            Ok(md) => md.partition_count(source).unwrap_or(1) as i32,
            Err(_) => 1,
        };
        let mut wanted = vec![cfg.dlt_topic_of(source)];
        if let Some(chain) = &cfg.retry_topics {
            wanted.extend(chain.topics_for(source));
        }
        for name in wanted {
            let exists = client
                .refresh_metadata(Some(std::slice::from_ref(&name)))
                .await
                .ok()
                .and_then(|md| md.partition_count(&name))
                .is_some_and(|n| n > 0);
            if exists {
                continue;
            }
            match client.create_topic(NewTopic::new(&name, partitions)).await {
                Ok(()) => tracing::info!(topic = %name, partitions, "created"),
                // Another member created it first.
                Err(kafka_wire::Error::Broker {
                    code: kafka_wire::KafkaCode::TopicAlreadyExists,
                    ..
                }) => {}
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "could not create; records that need it will wait")
                }
            }
        }
    }
}

/// Warn about each subscribed topic the cluster does not have (a
/// misspelling is otherwise silent: the group is joined, nothing is
/// assigned of that topic, nothing is read), naming it and the existing
/// topics with similar names. One Metadata request for all topics, on a
/// client of its own (dropped after), with `allow_auto_topic_creation`
/// false: the check never creates the topic. Nothing for a topic pattern;
/// a failed or slow (over 10 s) request is logged at debug and skipped.
/// The processor goes on either way: the topic may be created later, and
/// its partitions are then assigned.
pub(super) async fn warn_about_missing_topics(
    client: &kafka_wire::ClientConfig,
    topics: &[String],
) {
    if topics.is_empty() {
        return;
    }
    let md = match Client::connect(client.clone()).await {
        Ok(c) => tokio::time::timeout(Duration::from_secs(10), c.refresh_metadata(None)).await,
        Err(e) => Ok(Err(e)),
    };
    let md = match md {
        Ok(Ok(md)) => md,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "could not list the topics to check the subscription");
            return;
        }
        Err(_) => {
            tracing::debug!("listing the topics to check the subscription took over 10 s");
            return;
        }
    };
    for (topic, similar) in missing_topics(topics, md.topics.keys().map(String::as_str)) {
        if similar.is_empty() {
            tracing::warn!(%topic, "subscribed topic {topic:?} does not exist: nothing is read from it until it is created");
        } else {
            tracing::warn!(%topic, "subscribed topic {topic:?} does not exist (misspelled? similar existing topics: {}): nothing is read from it until it is created", similar.join(", "));
        }
    }
}

/// Each of `subscribed` not in `existing`, with the existing names similar
/// to it (nearest first, at most 5): the same name in another case, or a
/// few letters swapped, missing, extra or changed (see
/// [`kafka_wire::suggest`]). Pure.
pub(super) fn missing_topics<'a>(
    subscribed: &[String],
    existing: impl Iterator<Item = &'a str> + Clone,
) -> Vec<(String, Vec<String>)> {
    subscribed
        .iter()
        .filter(|t| !existing.clone().any(|e| e == t.as_str()))
        .map(|t| {
            let lower = t.to_lowercase();
            let mut near: Vec<(usize, &str)> = existing
                .clone()
                .filter(|e| !e.starts_with("__")) // internal topics
                .map(|e| {
                    let d = kafka_wire::suggest::edit_distance(&lower, &e.to_lowercase());
                    (d, e)
                })
                .filter(|(d, e)| *d <= (e.len().max(t.len()) / 4).max(2))
                .collect();
            near.sort();
            let similar = near
                .into_iter()
                .take(5)
                .map(|(_, e)| e.to_string())
                .collect();
            (t.clone(), similar)
        })
        .collect()
}

/// The start-up retries of [`until_connected`]: 200 ms doubling to 10 s.
const START_BACKOFF: kafka_wire::Backoff =
    kafka_wire::Backoff::exponential(Duration::from_millis(200), Duration::from_secs(10));

/// Consumer settings that would quietly break what the runtime promises
/// are refused before anything connects, naming the setting and why.
///
/// - `enable.auto.commit=true`: the consumer would commit what `poll`
///   returned every `auto.commit.interval.ms`, while workers are still
///   handling it; a crash then skips records nobody handled. The runtime
///   commits each offset only after its record was handled or
///   dead-lettered (its commit policy, `processor.commit.interval.ms`).
///
/// Checked and left alone (they do not defeat a guarantee): `max.poll.records`,
/// `max.poll.interval.ms` (poll never waits for handlers), `auto.offset.reset`
/// (where a group with no commit starts), `isolation.level` (the exactly-once
/// processor sets `read_committed` itself).
///
/// # Errors
/// [`ConsumerError::Wire`] with a configuration error naming the setting.
pub(crate) fn refuse_settings_that_defeat_the_runtime(
    consumer: &ConsumerConfig,
    who: &str,
) -> Result<(), ConsumerError> {
    if consumer.enable_auto_commit {
        return Err(kafka_wire::Error::Config(format!(
            "enable.auto.commit=true cannot be used with {who}: it commits each offset only \
             after its record was handled or dead-lettered, and Kafka's auto-commit would commit \
             records polled but never handled (a crash would skip them). Remove the setting; \
             processor.commit.interval.ms sets how often the runtime commits"
        ))
        .into());
    }
    Ok(())
}

/// Connect, retrying retriable failures (broker not up yet, coordinator
/// loading, connection refused) with capped exponential backoff until it
/// works, `shutdown` fires (`Ok(None)`), or `deadline` passes. A fatal
/// error (bad credentials, TLS, config) is returned at once: retrying
/// cannot fix it.
pub(crate) async fn until_connected<T, E, F, Fut>(
    what: &str,
    mut connect: F,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
    deadline: Option<Instant>,
) -> Result<Option<T>, ConsumerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<ConsumerError>,
{
    let mut delays = START_BACKOFF.delays();
    let mut attempt = 0u32;
    let started = Instant::now();
    loop {
        attempt += 1;
        let wait = delays.next().unwrap_or(Duration::from_secs(10));
        let err: ConsumerError = match connect().await {
            Ok(t) => return Ok(Some(t)),
            Err(e) => e.into(),
        };
        if !err.is_retriable() {
            return Err(err);
        }
        if deadline.is_some_and(|d| Instant::now() + wait > d) {
            return Err(ConsumerError::Unreachable {
                what: what.to_string(),
                attempts: attempt,
                waited_ms: started.elapsed().as_millis() as u64,
                source: Box::new(err),
            });
        }
        tracing::warn!(
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            error = %err,
            "{what} cannot reach the Kafka cluster yet; retrying. Check bootstrap.servers and that the brokers are up"
        );
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(None),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_is_named_with_the_similar_existing_ones() {
        let existing = [
            "orders",
            "Orders-v2",
            "payments",
            "__consumer_offsets",
            "ordres.DLT",
        ];
        let subscribed = [
            "ordres".to_string(),
            "payments".to_string(),
            "audit".to_string(),
        ];
        let missing = missing_topics(&subscribed, existing.iter().copied());
        assert_eq!(
            missing,
            [
                ("ordres".to_string(), vec!["orders".to_string()]),
                ("audit".to_string(), vec![]),
            ]
        );
        let upper = missing_topics(&["ORDERS".to_string()], existing.iter().copied());
        assert_eq!(upper[0].1[0], "orders", "another case is the nearest");
    }
}
