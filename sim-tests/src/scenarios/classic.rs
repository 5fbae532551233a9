//! The failures every seed starts from: rebalance duplicates (1), a crash
//! with auto-commit (2), poison pills (3), and an unwritable DLT (11).

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use consumer_core::{Consumer, TopicPartition};
use kafka_wire::NewTopic;
use resilience::observe::EventLog;
use resilience::retry::BackoffPolicy;
use resilience::HandlerError;

use super::*;
use crate::support::{self, instant, number, taking, Behaviour, Running, Sink};

/// 1. Processing slower than `max.poll.interval.ms`: the naive member is
///    dropped, its partitions move, and records are processed again.
pub async fn rebalance_duplicates(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 200;
    const NAME: &str = "1 rebalance duplicates";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-rebalance", 2, N).await;
    let slow = taking(Duration::from_millis(40));
    // 100 records × 40 ms per poll > 3 s.
    let props = [
        ("max.poll.interval.ms", "3000"),
        ("max.poll.records", "100"),
    ];

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-rebalance-naive");
    let until = Instant::now() + Duration::from_secs(25);
    let members: Vec<_> = (0..2)
        .map(|_| {
            let cfg = naive_config(b, &group, &props);
            tokio::spawn(naive_inline_loop(
                cfg,
                topic.clone(),
                sink.clone(),
                slow.clone(),
                until,
            ))
        })
        .collect();
    let mut rebalances = 0;
    for m in members {
        rebalances += m.await.unwrap_or(0);
    }
    let mut naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    naive.rebalances = Some(rebalances);
    let dups = naive.duplicates;
    naive = if dups > 0 {
        naive.verdict(format!(
            "handling a poll took longer than max.poll.interval.ms, so members were dropped \
             and their partitions moved before auto-commit covered the work: {dups} records \
             handled again"
        ))
    } else {
        naive.verdict("no redelivery this run")
    };

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-rebalance");
    let logs = [Arc::new(EventLog::default()), Arc::new(EventLog::default())];
    let runs: Vec<Running> = logs
        .iter()
        .map(|log| {
            let mut cfg = resilient(b, &group, &topic).observer(log.clone());
            cfg.consumer = support::group_consumer_with(b, &group, &props);
            start(cfg, &sink, &slow)
        })
        .collect();
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(30)).await;
    for r in runs {
        r.stop().await;
    }
    let mut res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    res.rebalances = Some(logs.iter().map(|l| l.assignments() as u64).sum());
    let lost: usize = logs.iter().map(|l| l.losses()).sum();
    let late: usize = logs.iter().map(|l| l.commits_after_revoke().len()).sum();
    let res = res
        .fact("partitions lost", lost)
        .fact("commits after revoke", late)
        .verdict(format!(
            "polling never waits for handlers, so no member was dropped \
             ({lost} partitions lost) and every record was handled once; \
             {late} commits after a revoke"
        ));
    (naive, res)
}

/// 2. Auto-commit with records handed to a worker: the crash loses what was
///    committed but never processed. The runtime commits only handled work.
pub async fn crash_with_auto_commit(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 300;
    const NAME: &str = "2 crash with auto-commit";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-crash", 1, N).await;
    let slow = taking(Duration::from_millis(10));

    // Naive: poll hands records to a worker; auto-commit commits positions.
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-crash-naive");
    let naive = NaiveHandoff::start(naive_config(b, &group, &[]), &topic, &sink, &slow);
    testkit::eventually(Duration::from_secs(30), || sink.distinct() >= 100).await;
    committed_at_least(b, &group, &topic, 100).await; // auto-commits landed
    naive.crash().await;
    // Restart in the same group and read to the end.
    let until = Instant::now() + Duration::from_secs(12);
    naive_inline_loop(
        naive_config(b, &group, &[]),
        topic.clone(),
        sink.clone(),
        instant(),
        until,
    )
    .await;
    let naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let naive = if naive.lost > 0 {
        let lost = naive.lost;
        naive.verdict(format!(
            "auto-commit committed {lost} records the worker had not processed yet; the crash \
             dropped them and the restarted consumer began after them: committed, never processed"
        ))
    } else {
        naive.verdict("nothing committed ahead of the worker this run")
    };

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-crash");
    let run = start(resilient(b, &group, &topic), &sink, &slow);
    testkit::eventually(Duration::from_secs(30), || sink.distinct() >= 100).await;
    committed_at_least(b, &group, &topic, 100).await;
    run.crash().await;
    let run = start(resilient(b, &group, &topic), &sink, &instant());
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(40)).await;
    run.stop().await;
    let res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let dups = res.duplicates;
    let res = res.verdict(format!(
        "only handled records are committed, so the crash lost nothing; the {dups} duplicates \
         are records handled after the last commit and redone after the restart (at-least-once)"
    ));
    (naive, res)
}

/// 3. Poison pills (5 %) and transient failures (5 %) against a running
///    average. Naive: the first poison record blocks its partition.
pub async fn poison_and_transient(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 1_000;
    const NAME: &str = "3 poison + transient";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-poison", 2, N).await;
    let behaviour: Behaviour = Arc::new(|n, attempt| match n % 20 {
        0 => Err(HandlerError::NonRetryable(format!("poison {n}"))),
        1 if attempt == 1 => Err(HandlerError::Retryable("transient".into())),
        _ => Ok(Duration::ZERO),
    });

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-poison-naive");
    let until = Instant::now() + Duration::from_secs(6);
    naive_inline_loop(
        naive_config(b, &group, &[]),
        topic.clone(),
        sink.clone(),
        behaviour.clone(),
        until,
    )
    .await;
    let naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let (lost, unhandled) = (naive.lost, naive.unhandled);
    let mut verdict = format!(
        "stuck retrying the first poison record of each partition: {unhandled} records still \
         waiting when the run ended (not committed: a restart would get stuck again)"
    );
    if lost > 0 {
        verdict.push_str(&format!(
            "; {lost} committed past by auto-commit when the consumer closed (the rest of \
             what it had polled), never processed"
        ));
    }
    let naive = naive.verdict(verdict);

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-poison");
    let cfg = resilient(b, &group, &topic)
        .dead_letter(testkit::producer_config(b))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(20),
            ..BackoffPolicy::default()
        });
    let run = start(cfg, &sink, &behaviour);
    let stats = run.stats.clone();
    run.wait_finished(u64::from(N), Duration::from_secs(60))
        .await;
    run.stop().await;
    // The running average of the sink equals produced minus dead-lettered.
    let applied: Vec<u32> = sink.distinct_and_duplicates().0.into_iter().collect();
    let expected: Vec<u32> = (0..N).filter(|n| n % 20 != 0).collect();
    let avg = |v: &[u32]| v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len().max(1) as f64;
    let dead = stats.dead_lettered.load(AtomicOrdering::Relaxed);
    let (got, want) = (avg(&applied), avg(&expected));
    let res = Report::of(NAME, "resilient", N, &sink, Some(dead))
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("sink average ×1000", (got * 1000.0).round() as u64)
        .fact("expected average ×1000", (want * 1000.0).round() as u64)
        .verdict(format!(
            "each record in exactly one place: poison records went to the DLT, transient \
             failures were retried and handled; the sink's running average ({got:.3}) {} the \
             average of the records that are not poison ({want:.3})",
            if (got - want).abs() < 0.0005 {
                "equals"
            } else {
                "DIFFERS FROM"
            }
        ));
    (naive, res)
}

/// 11. The DLT cannot be written (missing, auto-create off). Naive: logs
///     and moves on, losing the record. Resilient: stalls without
///     committing past it, and resumes once the DLT exists.
pub async fn dlt_unavailable(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 100;
    const NAME: &str = "11 DLT unavailable";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-dlt", 1, N).await;
    let poison: Behaviour = Arc::new(|n, _| {
        if n == 5 {
            Err(HandlerError::NonRetryable("poison".into()))
        } else {
            Ok(Duration::ZERO)
        }
    });

    // Naive: a failed record is logged and skipped (its offset commits).
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-dlt-naive");
    let mut c = Consumer::connect(naive_config(b, &group, &[]))
        .await
        .expect("connect");
    c.subscribe(&[&topic]).expect("subscribe");
    let end = Instant::now() + Duration::from_secs(10);
    while sink.distinct() + 1 < N as usize && Instant::now() < end {
        for batch in c.poll(Duration::from_millis(100)).await.unwrap_or_default() {
            for r in &batch.records {
                let _ = sink.handle(&poison, 0, number(r)).await; // errors ignored
            }
        }
    }
    c.close(Duration::from_secs(5)).await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 1).await;
    let naive = Report::of(NAME, "naive", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("partitions not committed to the end", behind.len());
    let lost = naive.lost;
    let naive = naive.verdict(format!(
        "the failed record was logged and skipped, and its offset committed: {lost} record \
         committed, never processed, and in no DLT"
    ));

    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-dlt");
    let mut cfg = resilient(b, &group, &topic).dead_letter(testkit::producer_config(b));
    cfg.create_topics = false;
    let run = start(cfg, &sink, &poison);
    let stats = run.stats.clone();
    testkit::eventually(Duration::from_secs(30), || {
        stats.dlt_write_failures.load(AtomicOrdering::Relaxed) >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_at = support::committed_offset(b, &group, &TopicPartition::new(&topic, 0)).await;
    let handled_while_stalled = sink.distinct();
    admin
        .create_topic(NewTopic::new(resilience::dlt::dlt_topic(&topic), 1))
        .await
        .expect("create DLT");
    run.wait_finished(u64::from(N), Duration::from_secs(30))
        .await;
    support::committed_to_end(b, &group, &topic, Duration::from_secs(10)).await;
    run.stop().await;
    let behind = support::uncommitted_partitions(b, &admin, &group, &topic, 1).await;
    let dead = stats.dead_lettered.load(AtomicOrdering::Relaxed);
    let mut res = Report::of(NAME, "resilient", N, &sink, Some(dead))
        .split_missing(b, &group, &topic, &sink)
        .await
        .fact("handled while the DLT was missing", handled_while_stalled)
        .fact("partitions not committed to the end", behind.len());
    if let Some(offset) = stalled_at {
        res = res.fact("committed while the DLT was missing", offset);
    }
    let stalled = match stalled_at {
        Some(o) => format!("the committed offset stayed at {o} (the failed record's)"),
        None => "nothing was committed".to_string(),
    };
    let finished = if behind.is_empty() {
        "it dead-lettered the record, finished and committed to the end"
    } else {
        "it did NOT commit to the end"
    };
    res = res.verdict(format!(
        "while the DLT was missing the partition stalled: {stalled} and no later offset was \
         committed; once the DLT existed, {finished}"
    ));
    (naive, res)
}

/// Wait (up to 10 s) until `group` committed at least `offset` on `topic`
/// partition 0: the crash comes after commits, not after a guessed time.
async fn committed_at_least(b: &testkit::BrokerEnv, group: &str, topic: &str, offset: i64) {
    let tp = TopicPartition::new(topic, 0);
    testkit::eventually_async(Duration::from_secs(10), || async {
        support::committed_offset(b, group, &tp)
            .await
            .is_some_and(|c| c >= offset)
    })
    .await;
}
