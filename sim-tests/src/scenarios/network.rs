//! The network misbehaves: every connection reset at random (9), commits
//! cut off after they were sent (10), a slow and lossy link (12), record
//! batches corrupted in transit (13), a member fenced by the group (14).

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use resilience::observe::EventLog;
use resilience::CommitPolicy;

use super::*;
use crate::proxy::{FaultProxy, Faults};
use crate::support::{self, taking, Sink};

/// 9. Every connection reset at random every 0.5–1.5 s under load.
pub async fn connection_chaos(b: &testkit::BrokerEnv, seed: u64, duration: Duration) -> Report {
    const N: u32 = 3_000;
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-chaos", 3, N).await;
    let proxy = FaultProxy::new(seed);
    let group = testkit::unique_name("sc-chaos");
    let log = Arc::new(EventLog::default());
    let mut cfg = resilient(b, &group, &topic).observer(log.clone());
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(1)));
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let wait = Duration::from_millis(500) + Duration::from_millis(1000).mul_f64(proxy.draw());
        tokio::time::sleep(wait).await;
        proxy.reset_all();
    }
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(60)).await;
    run.stop().await;
    let resets = proxy.stats.resets.load(AtomicOrdering::Relaxed);
    let (unordered, regressed) = (sink.partitions_out_of_order(), log.commit_regressions());
    let mut r = Report::of("9 connection chaos", "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("connection resets", resets)
        .fact("partitions out of order", unordered)
        .fact("commits regressed", regressed)
        .verdict(format!(
            "{resets} resets of every connection: each request was retried on a new \
             connection; {unordered} partitions out of order, {regressed} commits went backwards"
        ));
    r.rebalances = Some(log.assignments() as u64);
    r
}

/// 10. The connection is reset right after OffsetCommit is sent, often.
pub async fn ambiguous_commit(b: &testkit::BrokerEnv, seed: u64) -> Report {
    const N: u32 = 1_000;
    const OFFSET_COMMIT: i16 = 8;
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-ambiguous", 2, N).await;
    let proxy = FaultProxy::new(seed);
    proxy.set(Faults {
        reset_after_request: Some((OFFSET_COMMIT, 0.5)),
        ..Faults::default()
    });
    let group = testkit::unique_name("sc-ambiguous");
    let log = Arc::new(EventLog::default());
    let mut cfg = resilient(b, &group, &topic)
        .commit_policy(CommitPolicy::Interval(Duration::from_millis(50)))
        .observer(log.clone());
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(2)));
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(60)).await;
    run.stop().await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 2).await;
    let cut = proxy.stats.requests_cut.load(AtomicOrdering::Relaxed);
    let regressed = log.commit_regressions();
    Report::of("10 ambiguous commit", "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("commit requests cut", cut)
        .fact("commits regressed", regressed)
        .fact("partitions not committed to the end", behind.len())
        .verdict(format!(
            "{cut} commits cut off after they were sent (did they land?): the next commit \
             carries the same or a later offset, so none went backwards ({regressed}), and \
             {} partitions ended short of the log end",
            behind.len()
        ))
}

/// 7. Startup race: the cluster refuses connections for the first 3 s (the
///    broker is not up yet). Naive: `connect` fails and the consumer exits.
///    Resilient: `run` retries with backoff, logging each attempt, and
///    consumes everything once the broker answers.
pub async fn startup_race(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 500;
    const NAME: &str = "7 startup race (refused)";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-startup", 2, N).await;
    let refusing = Faults {
        refuse_connections: true,
        ..Faults::default()
    };

    let proxy = FaultProxy::new(7);
    proxy.set(refusing.clone());
    let mut cfg = naive_config(b, &testkit::unique_name("sc-startup-naive"), &[]);
    cfg.client.connector = proxy.connector();
    let naive = naive_start(NAME, N, cfg).await;

    let proxy = FaultProxy::new(7);
    proxy.set(refusing);
    let group = testkit::unique_name("sc-startup");
    let mut cfg = resilient(b, &group, &topic);
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::ZERO));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = proxy.stats.refused.load(AtomicOrdering::Relaxed);
    proxy.set(Faults::default()); // the broker is up
    let up = Instant::now();
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(30)).await;
    let took = up.elapsed();
    run.stop().await;
    let res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("connection attempts refused", refused)
        .millis("all consumed after the broker answered, ms", took)
        .verdict(format!(
            "kept retrying with backoff ({refused} connection attempts refused), then \
             consumed everything {:.2} s after the broker answered",
            took.as_secs_f64()
        ));
    (naive, res)
}

/// 12. A slow, lossy network: 256 KiB/s per connection each way, every
///     Heartbeat held back 1 s, and the 1st Fetch response dropped (the
///     request times out after 3 s and is sent again). 0 lost, 0 duplicates,
///     no member dropped from the group.
pub async fn slow_lossy_network(b: &testkit::BrokerEnv, seed: u64) -> Report {
    const N: u32 = 2_000;
    let heartbeat = support::heartbeat_api();
    const FETCH: i16 = 1;
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-network", 2, N).await;
    let proxy = FaultProxy::new(seed);
    proxy.set(Faults {
        bandwidth: Some(256 * 1024),
        delay_request: Some((heartbeat, Duration::from_secs(1))),
        drop_response: Some((FETCH, 1)),
        ..Faults::default()
    });
    let group = testkit::unique_name("sc-network");
    let log = Arc::new(EventLog::default());
    let mut cfg = resilient(b, &group, &topic).observer(log.clone());
    cfg.consumer = support::group_consumer_with(b, &group, &[("request.timeout.ms", "3000")]);
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(1)));
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(60)).await;
    run.stop().await;
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(AtomicOrdering::Relaxed);
    let (delayed, dropped, lost) = (
        stat(&proxy.stats.requests_delayed),
        stat(&proxy.stats.responses_dropped),
        log.losses(),
    );
    let mut r = Report::of("12 slow, lossy network", "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("heartbeats delayed", delayed)
        .fact("fetch responses dropped", dropped)
        .fact("partitions lost", lost)
        .verdict(format!(
            "at 256 KiB/s with {delayed} heartbeats held back 1 s and {dropped} Fetch response \
             dropped (re-sent after its timeout), the member stayed in the group \
             ({lost} partitions lost)"
        ));
    r.rebalances = Some(log.assignments() as u64);
    r
}

/// 13. Record batches corrupted in transit: until the link heals, every
///     fetched batch arrives with a bad CRC. Nothing is handled meanwhile
///     (a corrupt batch is never delivered, nor skipped), the processor
///     keeps polling instead of exiting, and once the link heals every
///     record is handled exactly once.
pub async fn corrupt_batches(b: &testkit::BrokerEnv, seed: u64) -> Report {
    const N: u32 = 1_000;
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-corrupt", 3, N).await;
    let proxy = FaultProxy::new(seed);
    proxy.set(Faults {
        corrupt_fetch_responses: u64::MAX,
        ..Faults::default()
    });
    let group = testkit::unique_name("sc-corrupt");
    let mut cfg = resilient(b, &group, &topic);
    cfg.consumer.client.connector = proxy.connector();
    let sink = Arc::new(Sink::default());
    let run = start(cfg, &sink, &taking(Duration::from_millis(1)));
    let stat = |c: &std::sync::atomic::AtomicU64| c.load(AtomicOrdering::SeqCst);
    // The group joined and fetched; then let the damage go on for 2 s.
    testkit::eventually(Duration::from_secs(30), || {
        stat(&proxy.stats.responses_corrupted) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let handled_while_corrupt = sink.distinct_and_duplicates().0.len() as u64;
    let exited = u64::from(!run.is_running());
    proxy.set(Faults::default());
    let damaged = stat(&proxy.stats.batches_corrupted);
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(60)).await;
    let poll_errors = run.stats.poll_errors.load(AtomicOrdering::SeqCst);
    run.stop().await;
    Report::of("13 corrupt batches", "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("batches corrupted", damaged)
        .fact("handled while corrupt", handled_while_corrupt)
        .fact("poll errors retried", poll_errors)
        .fact("exited", exited)
        .verdict(format!(
            "{damaged} batches arrived corrupted: {handled_while_corrupt} records of them \
             reached the handler and none was skipped; {poll_errors} poll errors were \
             retried, the processor {} and handled everything once the link healed",
            if exited == 0 {
                "never exited"
            } else {
                "EXITED"
            }
        ))
}

/// 14. A member fenced by the group: its heartbeats are held back 10 s,
///     past the group's 6 s session, while a second member joins. The group
///     removes it and hands its partitions to the other member. When the
///     held heartbeat lands, the fenced member learns it (KIP-848:
///     UNKNOWN_MEMBER_ID or FENCED_MEMBER_EPOCH; classic: UNKNOWN_MEMBER_ID
///     or ILLEGAL_GENERATION), gives its partitions up as lost without
///     committing them, and joins again. Nothing is lost and no commit
///     lands for a partition after its loss; the records the fenced member
///     handled while it did not yet know are handled again by the new
///     owner (at-least-once, counted as duplicates).
pub async fn fenced_member(b: &testkit::BrokerEnv, seed: u64) -> Report {
    const N: u32 = 4_000;
    const HELD: Duration = Duration::from_secs(10);
    let heartbeat = support::heartbeat_api();
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-fenced", 4, N).await;
    let group = testkit::unique_name("sc-fenced");
    let proxy = FaultProxy::new(seed);
    let sink = Arc::new(Sink::default());
    let slow = taking(Duration::from_millis(10));
    let (log_a, log_b) = (Arc::new(EventLog::default()), Arc::new(EventLog::default()));
    let mut cfg = resilient(b, &group, &topic).observer(log_a.clone());
    cfg.consumer.client.connector = proxy.connector();
    let a = start(cfg, &sink, &slow);
    // The member owns every partition and is working.
    testkit::eventually(Duration::from_secs(30), || sink.distinct() >= 200).await;
    proxy.set(Faults {
        delay_request: Some((heartbeat, HELD)),
        ..Faults::default()
    });
    let held_at = Instant::now();
    let other = start(
        resilient(b, &group, &topic).observer(log_b.clone()),
        &sink,
        &slow,
    );
    // The held heartbeat lands; the member learns it was fenced.
    let learned = testkit::eventually(Duration::from_secs(40), || log_a.losses() > 0).await;
    let learned_after = held_at.elapsed();
    proxy.set(Faults::default());
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(90)).await;
    // The fenced member joined again and took part: it holds partitions.
    let rejoined = testkit::eventually(Duration::from_secs(20), || log_a.assignments() >= 2).await;
    a.stop().await;
    other.stop().await;
    let late: usize = [&log_a, &log_b]
        .iter()
        .map(|l| l.commits_after_revoke().len())
        .sum();
    let regressed = log_a.commit_regressions() + log_b.commit_regressions();
    let delayed = proxy.stats.requests_delayed.load(AtomicOrdering::Relaxed);
    let mut r = Report::of("14 fenced member", "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("heartbeats held", delayed)
        .fact("losses seen by the fenced member", log_a.losses())
        .millis("fence learned after, ms", learned_after)
        .fact("rejoined", u64::from(rejoined))
        .fact("commits after revoke", late)
        .fact("commits regressed", regressed);
    r = if learned {
        let dups = r.duplicates;
        r.verdict(format!(
            "with every heartbeat held {} s against a 6 s session, the member found itself \
             fenced {:.1} s after the hold began, gave its partitions up as lost ({late} \
             commits after the loss) and joined again; nothing lost; {dups} duplicates: \
             records it handled before it knew, handled again by their new owner \
             (at-least-once)",
            HELD.as_secs(),
            learned_after.as_secs_f64()
        ))
    } else {
        r.verdict("the fenced member never learned it was fenced")
    };
    r.rebalances = Some((log_a.assignments() + log_b.assignments()) as u64);
    r
}
