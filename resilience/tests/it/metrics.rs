//! The runtime's metrics against the real broker, read back from a
//! recorder: the two lags mean what their names say (commit lag
//! counts polled records until they are committed, consumer lag only what
//! is not fetched yet), every metric is described, and every metric
//! carries the group.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;
use consumer_core::TopicPartition;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};
use resilience::observe::{COMMIT_LAG, CONSUMER_LAG};
use resilience::{handler_fn, CommitPolicy, Processor, ProcessorConfig};
use testkit::eventually;
use tokio::sync::watch;

/// Keeps every metric's latest value and every description. (metrics-util's
/// `DebuggingRecorder` zeroes a gauge when it reads it: a lag set once a
/// second would read 0 in between.)
struct Recorded {
    registry: Registry<Key, AtomicStorage>,
    /// Described metric names, with their units.
    described: Mutex<HashMap<String, Option<Unit>>>,
}

impl Recorded {
    fn describe(&self, name: KeyName, unit: Option<Unit>) {
        let mut d = self.described.lock().unwrap();
        d.insert(name.as_str().to_string(), unit);
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(name, unit);
    }
    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(name, unit);
    }
    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, _: SharedString) {
        self.describe(name, unit);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// The one recorder of this test binary (tests tell their metrics apart
/// by group).
fn recorder() -> &'static Recorded {
    static RECORDED: OnceLock<&'static Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let r: &'static Recorded = Box::leak(Box::new(Recorded {
            registry: Registry::atomic(),
            described: Mutex::default(),
        }));
        metrics::set_global_recorder(r).expect("the only recorder of this binary");
        r
    })
}

/// Labels of a key, as (key, value) pairs.
fn labels(key: &Key) -> Vec<(String, String)> {
    key.labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect()
}

/// Every key recorded so far (counters, gauges, histograms).
fn keys() -> Vec<Key> {
    let r = &recorder().registry;
    let mut keys: Vec<Key> = r.get_counter_handles().into_keys().collect();
    keys.extend(r.get_gauge_handles().into_keys());
    keys.extend(r.get_histogram_handles().into_keys());
    keys
}

/// The value of gauge `name` for partition 0 of `topic` in `group`.
fn lag(name: &str, topic: &str, group: &str) -> Option<f64> {
    let want = [
        ("topic".to_string(), topic.to_string()),
        ("partition".to_string(), "0".to_string()),
        ("group".to_string(), group.to_string()),
    ];
    recorder()
        .registry
        .get_gauge_handles()
        .into_iter()
        .find(|(k, _)| k.name() == name && labels(k) == want)
        .map(|(_, v)| f64::from_bits(v.load(AtomicOrdering::Relaxed)))
}

/// A handler that waits until `gate` opens.
fn gated(gate: watch::Receiver<bool>) -> impl resilience::Handler {
    handler_fn(move |_tp, _record| {
        let mut gate = gate.clone();
        async move {
            let _ = gate.wait_for(|open| *open).await;
            Ok(())
        }
    })
}

#[tokio::test]
async fn commit_lag_counts_polled_records_until_they_are_committed() {
    const N: u32 = 50;
    let b = testkit::require_broker!();
    recorder();
    let (_admin, topic) = topic_with_records(&b, "commit-lag", 1, N).await;
    let group = testkit::unique_name("commit-lag");
    let (open, gate) = watch::channel(false);
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    let run = start(Processor::new(cfg, gated(gate)));
    let lags = || {
        (
            lag(CONSUMER_LAG, &topic, &group),
            lag(COMMIT_LAG, &topic, &group),
        )
    };

    // Every record polled, none handled: nothing left to fetch (the old
    // partition lag said 0 here), everything left to commit (offset 0 is
    // committed, the log ends at N).
    let in_flight = (Some(0.0), Some(f64::from(N)));
    assert!(
        eventually(Duration::from_secs(30), || lags() == in_flight).await,
        "(consumer lag, commit lag) = {:?}, want {in_flight:?}",
        lags()
    );

    open.send(true).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || lags() == (Some(0.0), Some(0.0))).await,
        "after the commit: {:?}",
        lags()
    );
    assert_eq!(
        committed_offset(&b, &group, &TopicPartition::new(&topic, 0)).await,
        Some(i64::from(N))
    );
    run.stop().await;
}

#[tokio::test]
async fn consumer_lag_counts_only_records_not_fetched_yet() {
    const N: u32 = 50;
    let b = testkit::require_broker!();
    recorder();
    let (_admin, topic) = topic_with_records(&b, "consumer-lag", 1, N).await;
    let group = testkit::unique_name("consumer-lag");
    let (open, gate) = watch::channel(false);
    // At most 5 records in flight: fetching pauses with 45 left in the log.
    let consumer = group_consumer_with(&b, &group, &[("max.poll.records", "5")]);
    let cfg = ProcessorConfig::new(consumer, &[&topic])
        .max_in_flight(5, 64 * 1024 * 1024)
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    let run = start(Processor::new(cfg, gated(gate)));
    let lags = || {
        (
            lag(CONSUMER_LAG, &topic, &group),
            lag(COMMIT_LAG, &topic, &group),
        )
    };
    let fetch_paused = || match lags() {
        (Some(consumer), Some(commit)) => {
            commit == f64::from(N) && consumer > 0.0 && consumer < commit
        }
        _ => false,
    };
    assert!(
        eventually(Duration::from_secs(30), fetch_paused).await,
        "(consumer lag, commit lag) = {:?}: want 0 < consumer lag < commit lag = {N}",
        lags()
    );

    open.send(true).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || lags() == (Some(0.0), Some(0.0))).await,
        "after the commit: {:?}",
        lags()
    );
    run.stop().await;
}

/// Every `resilience_*` metric recorded in this binary has a description
/// and a unit (Prometheus' `# HELP`) and a `group` label.
#[tokio::test]
async fn every_metric_is_described_and_labelled_with_its_group() {
    let b = testkit::require_broker!();
    recorder();
    let (_admin, topic) = topic_with_records(&b, "described", 1, 10).await;
    let group = testkit::unique_name("described");
    let cfg = ProcessorConfig::new(group_consumer(&b, &group), &[&topic])
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(100)));
    let run = start(Processor::new(cfg, handler_fn(|_, _| async { Ok(()) })));
    let ours = |name: &str| {
        keys()
            .iter()
            .any(|k| k.name() == name && labels(k).contains(&("group".to_string(), group.clone())))
    };
    let wanted = [
        resilience::observe::HANDLED,
        resilience::observe::HANDLER_SECONDS,
        resilience::observe::COMMITS,
        resilience::observe::COMMIT_SECONDS,
        resilience::observe::IN_FLIGHT_RECORDS,
        resilience::observe::PAUSED_PARTITIONS,
        resilience::observe::REBALANCES,
        CONSUMER_LAG,
        COMMIT_LAG,
    ];
    assert!(
        eventually(Duration::from_secs(30), || wanted.iter().all(|n| ours(n))).await,
        "missing: {:?}",
        wanted.iter().filter(|n| !ours(n)).collect::<Vec<_>>()
    );
    run.stop().await;
    let described = recorder().described.lock().unwrap().clone();
    for k in keys() {
        if !k.name().starts_with("resilience_") {
            continue;
        }
        assert!(
            matches!(described.get(k.name()), Some(Some(_))),
            "{} has no description with a unit",
            k.name()
        );
        assert!(
            labels(&k).iter().any(|(l, _)| l == "group"),
            "{} has no group label: {:?}",
            k.name(),
            labels(&k)
        );
    }
}
