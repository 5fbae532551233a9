//! The seeds' slow handler on one partition (15), run three ways: the
//! naive consumer (three members of a consumer group handling inline), the
//! runtime in a consumer group, and the runtime in a share group (KIP-932).
//!
//! A consumer group gives one partition to one member, so however many
//! members run, a slow handler drains it alone; the seeds add members, or
//! a worker pool that loses order and commits blindly. A share group hands
//! the records of one partition to every member (each record acquired by
//! one member at a time, under a lock), so three members drain it about
//! three times faster, and nothing is committed: each record is
//! acknowledged.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::share::{ShareConsumer, ShareConsumerConfig, ShareError};
use kafka_wire::ConfigResource;
use resilience::Stats;

use super::*;
use crate::support::{taking, Sink};

const N: u32 = 300;
const NAME: &str = "15 slow handler, 1 partition";
/// What one record takes to handle.
const WORK: Duration = Duration::from_millis(20);
const MEMBERS: usize = 3;
/// Records one poll returns (and one ShareFetch acquires, with
/// `share.acquire.mode=record_limit`): small, so no member takes the
/// whole partition in one go.
const POLL_RECORDS: &str = "10";
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// 15. Three members, one partition, a handler taking 20 ms per record,
///     one record at a time per member. Naive and the runtime in a consumer
///     group: one member works, the others idle; the time to drain is the
///     sum of the handler times. The runtime in a share group: all three
///     work, each record is acknowledged once (ACCEPT), and it drains about
///     three times faster.
pub async fn slow_handler(b: &testkit::BrokerEnv) -> Vec<Report> {
    let admin = testkit::client(b).await;
    let work = taking(WORK);
    let serial = WORK * N;

    // Naive: three plain consumers of one group, handling inline.
    let topic = numbered(b, &admin, "sc-slow-naive", 1, N).await;
    let group = testkit::unique_name("sc-slow-naive");
    let sink = Arc::new(Sink::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let members: Vec<_> = (0..MEMBERS)
        .map(|_| {
            let cfg = naive_config(b, &group, &[("max.poll.records", POLL_RECORDS)]);
            tokio::spawn(inline_until_stopped(
                cfg,
                topic.clone(),
                sink.clone(),
                work.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let (drain, handling) = watch_drain(&sink, started).await;
    stop.store(true, AtomicOrdering::SeqCst);
    let mut busy = 0u64;
    for m in members {
        busy += u64::from(m.await.unwrap_or(0) > 0);
    }
    let naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let naive = timed(naive, drain, handling, busy, &sink).verdict(format!(
        "one partition goes to one member of a consumer group: {busy} of {MEMBERS} members \
         handled records and the others idled, so the handling took {} (the handler's time \
         summed: {N} × {} ms = {:.1} s); drained {} after start",
        secs(handling),
        WORK.as_millis(),
        serial.as_secs_f64(),
        secs(drain),
    ));

    // The runtime in a consumer group: one lane per partition.
    let topic = numbered(b, &admin, "sc-slow", 1, N).await;
    let group = testkit::unique_name("sc-slow");
    let sink = Arc::new(Sink::default());
    let started = Instant::now();
    let runs: Vec<Running> = (0..MEMBERS)
        .map(|_| {
            let mut cfg = resilient(b, &group, &topic).concurrency(1);
            cfg.consumer =
                support::group_consumer_with(b, &group, &[("max.poll.records", POLL_RECORDS)]);
            start(cfg, &sink, &work)
        })
        .collect();
    let (drain, handling) = watch_drain(&sink, started).await;
    support::committed_to_end(b, &group, &topic, Duration::from_secs(10)).await;
    let busy = busy_members(runs.iter().map(|r| r.stats.clone()));
    for r in runs {
        r.stop().await;
    }
    let res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let res = timed(res, drain, handling, busy, &sink).verdict(format!(
        "every record handled and committed, but the partition is still one member's (one \
         lane per partition): {busy} of {MEMBERS} members handled records; the handling took {}; \
         drained {} after start",
        secs(handling),
        secs(drain)
    ));
    let one_member = handling;

    // The runtime in a share group.
    let topic = numbered(b, &admin, "sc-slow-share", 1, N).await;
    let group = testkit::unique_name("sc-slow-share");
    let share = match share_group(b, &admin, &group).await {
        Ok(()) => share_run(b, &group, &topic, &work, one_member).await,
        Err(why) => {
            let mut r = Report::of(NAME, "resilient, share", N, &Sink::default(), None);
            r.unhandled = r.lost;
            r.lost = 0;
            r.verdict(format!("not run: {why}"))
        }
    };
    vec![naive, res, share]
}

/// The share-group run: three processors of `group`, one record at a
/// time each.
async fn share_run(
    b: &testkit::BrokerEnv,
    group: &str,
    topic: &str,
    work: &support::Behaviour,
    one_member: Option<Duration>,
) -> Report {
    let sink = Arc::new(Sink::default());
    let started = Instant::now();
    let runs: Vec<Running> = (0..MEMBERS)
        .map(|_| {
            let cfg = resilience::ProcessorConfig::share_group(share_config(b, group), &[topic])
                .concurrency(1);
            start(cfg, &sink, work)
        })
        .collect();
    let (drain, handling) = watch_drain(&sink, started).await;
    // Every handled record's ACCEPT answered (or the limit passed).
    let stats: Vec<Arc<Stats>> = runs.iter().map(|r| r.stats.clone()).collect();
    let sum = |f: fn(&Stats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
    let accepted = |s: &Stats| s.accepted.load(AtomicOrdering::Relaxed);
    let handled = sink.distinct() as u64;
    testkit::eventually(Duration::from_secs(10), || sum(accepted) >= handled).await;
    let busy = busy_members(stats.iter().cloned());
    for r in runs {
        r.stop().await;
    }
    let rejected = sum(|s| s.rejected.load(AtomicOrdering::Relaxed));
    let ack_failures = sum(|s| s.ack_failures.load(AtomicOrdering::Relaxed));
    let mut report = Report::of(NAME, "resilient, share", N, &sink, None);
    // No commits in a share group: a record not acknowledged is delivered
    // again (unhandled); only one REJECTed unhandled is gone (lost).
    let missing = report.lost;
    report.lost = rejected.min(missing);
    report.unhandled = missing - report.lost;
    let report = timed(report, drain, handling, busy, &sink)
        .fact("accepted", sum(accepted))
        .fact("acknowledgements failed", ack_failures);
    let faster = match (one_member, handling) {
        (Some(one), Some(h)) if !h.is_zero() => {
            format!(
                ", {:.1}x the consumer group's pace",
                one.as_secs_f64() / h.as_secs_f64()
            )
        }
        _ => String::new(),
    };
    let verdict = format!(
        "the broker hands one partition's records to every member: {busy} of {MEMBERS} \
         members handled records, each record ACCEPTed once ({} ACCEPTs, {ack_failures} \
         failed); the handling took {}{faster}; drained {} after start",
        sum(accepted),
        secs(handling),
        secs(drain)
    );
    report.verdict(verdict)
}

/// A share consumer config of `group`: one record at a time per poll
/// batch of ten, each ShareFetch acquiring at most ten (KIP-1206).
fn share_config(b: &testkit::BrokerEnv, group: &str) -> ShareConsumerConfig {
    ShareConsumerConfig::builder()
        .set("bootstrap.servers", &b.bootstrap)
        .and_then(|c| c.set("group.id", group))
        .and_then(|c| c.set("fetch.max.wait.ms", "200"))
        .and_then(|c| c.set("max.poll.records", POLL_RECORDS))
        .and_then(|c| c.set("share.acquire.mode", "record_limit"))
        .and_then(|c| c.build())
        .expect("share consumer config")
}

/// Make `group` a share group reading from the earliest offset (the group
/// config `share.auto.offset.reset`), or say why the broker cannot.
async fn share_group(
    b: &testkit::BrokerEnv,
    admin: &kafka_wire::Client,
    group: &str,
) -> Result<(), String> {
    let mut probe = ShareConsumer::connect(share_config(b, group))
        .await
        .map_err(|e| e.to_string())?;
    let subscribed = probe.subscribe(&["sc-slow-probe-no-such-topic"]).await;
    let _ = probe.close().await;
    match subscribed {
        Ok(()) => {}
        Err(e @ ShareError::Unsupported { .. }) => return Err(e.to_string()),
        Err(e) => return Err(format!("subscribe: {e}")),
    }
    admin
        .alter_configs(
            &ConfigResource::Group(group.to_string()),
            &[("share.auto.offset.reset", Some("earliest"))],
        )
        .await
        .map_err(|e| format!("setting share.auto.offset.reset: {e}"))
}

/// How long until `sink` held all `N` records since `started`, and since
/// its first record (the handling alone, joining left out); `None` past
/// [`DRAIN_LIMIT`].
async fn watch_drain(sink: &Sink, started: Instant) -> (Option<Duration>, Option<Duration>) {
    let mut first = None;
    while started.elapsed() < DRAIN_LIMIT {
        let n = sink.distinct();
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= N as usize {
            let now = Instant::now();
            return (Some(now - started), first.map(|f| now - f));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (None, None)
}

/// "2.3 s", or "more than the limit".
fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("more than {} s (not drained)", DRAIN_LIMIT.as_secs()),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

/// How many of the runs handled at least one record.
fn busy_members(stats: impl Iterator<Item = Arc<Stats>>) -> u64 {
    stats
        .filter(|s| s.handled.load(AtomicOrdering::Relaxed) > 0)
        .count() as u64
}

/// The timing facts: "time to drain ms" (from the members' start; the
/// limit when it did not drain), "handling ms" (first record to last),
/// "members busy", "peak handlers at once".
fn timed(
    report: Report,
    drain: Option<Duration>,
    handling: Option<Duration>,
    busy: u64,
    sink: &Sink,
) -> Report {
    let report = report
        .millis("time to drain ms", drain.unwrap_or(DRAIN_LIMIT))
        .fact("drained", u64::from(drain.is_some()))
        .fact("members busy", busy)
        .fact("peak handlers at once", sink.peak_running());
    match handling {
        Some(h) => report.millis("handling ms", h),
        None => report,
    }
}

/// The seeds' loop until `stop`: poll, handle each record inline (a
/// failure retried until it passes), close (auto-commit commits what was
/// polled). Returns how many records it handled.
async fn inline_until_stopped(
    cfg: ConsumerConfig,
    topic: String,
    sink: Arc<Sink>,
    behaviour: support::Behaviour,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut c = Consumer::connect(cfg).await.expect("connect");
    c.subscribe(&[&topic]).expect("subscribe");
    let mut handled = 0;
    while !stop.load(AtomicOrdering::SeqCst) {
        let Ok(batches) = c.poll(Duration::from_millis(100)).await else {
            continue;
        };
        for batch in batches {
            for r in &batch.records {
                while sink
                    .handle(&behaviour, batch.tp.partition, number(r))
                    .await
                    .is_err()
                    && !stop.load(AtomicOrdering::SeqCst)
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                handled += 1;
            }
        }
    }
    c.close(Duration::from_secs(5)).await;
    handled
}
