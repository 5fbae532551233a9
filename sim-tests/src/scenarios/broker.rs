//! The broker itself goes away: the consumer starts while it is down (7),
//! and it restarts in the middle of a run (8). Both stop the shared test
//! broker through `xtask broker restart`, so they run alone
//! (`sim-tests/tests/it/alone/broker_restart.rs`, run last by `cargo xtask test`).

use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::support::{self, taking, Sink};

/// Restart the broker on a blocking thread: stopped, down for `down_for`,
/// started again. Resolves once it serves.
fn restart_in_background(down_for: Duration) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::task::spawn_blocking(move || testkit::restart_broker(false, down_for))
}

fn answers(bootstrap: &str) -> bool {
    bootstrap
        .parse()
        .ok()
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_ok())
}

/// 7, for real: the consumer starts while the broker is down. Naive:
/// `connect` fails and the consumer exits. Resilient: retries with backoff
/// and consumes everything once the broker is back (the group coordinator
/// also has to load its state first).
pub async fn consumer_before_broker(b: &testkit::BrokerEnv) -> (Report, Report) {
    const N: u32 = 500;
    const NAME: &str = "7 broker down at start";
    let admin = testkit::client(b).await;
    let topic = numbered(b, &admin, "sc-before", 2, N).await;
    drop(admin);

    let restart = restart_in_background(Duration::from_secs(6));
    let went_down = testkit::eventually(Duration::from_secs(40), || !answers(&b.bootstrap)).await;
    assert!(went_down, "the broker did not stop");
    let cfg = naive_config(b, &testkit::unique_name("sc-before-naive"), &[]);
    let naive = naive_start(NAME, N, cfg).await;

    let group = testkit::unique_name("sc-before");
    let sink = Arc::new(Sink::default());
    let run = start(resilient(b, &group, &topic), &sink, &taking(Duration::ZERO));
    restart
        .await
        .expect("restart task")
        .expect("xtask broker restart");
    let up = Instant::now();
    drained(b, (&group, &topic), &sink, N, Duration::from_secs(60)).await;
    let took = up.elapsed();
    run.stop().await;
    let res = Report::of(NAME, "resilient", N, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await
        .millis("all consumed after the broker was back, ms", took)
        .verdict(format!(
            "kept retrying while the broker was down, then consumed everything {:.1} s after \
             it was back",
            took.as_secs_f64()
        ));
    (naive, res)
}

/// 8. The broker restarts (clean shutdown, 2 s down) while a producer
///    writes 1,000 records/s and a member consumes. 0 lost, and consumption
///    resumes within 30 s of the broker serving again.
pub async fn broker_restart(b: &testkit::BrokerEnv) -> (Report, Report) {
    const NAME: &str = "8 broker restart";
    let admin = testkit::client(b).await;
    let naive_topic = testkit::create_topic(&admin, "sc-restart-naive", 2).await;
    let topic = testkit::create_topic(&admin, "sc-restart", 2).await;
    drop(admin);
    let stop = Arc::new(AtomicBool::new(false));
    let producers = [&naive_topic, &topic].map(|t| {
        let cfg = testkit::producer_config(b);
        tokio::spawn(support::produce_steadily(
            cfg,
            t.clone(),
            0,
            1_000,
            stop.clone(),
        ))
    });

    let naive_sink = Arc::new(Sink::default());
    let until = Instant::now() + Duration::from_secs(60);
    let naive_group = testkit::unique_name("sc-restart-naive");
    let naive = tokio::spawn(naive_inline_loop(
        naive_config(b, &naive_group, &[]),
        naive_topic.clone(),
        naive_sink.clone(),
        taking(Duration::ZERO),
        until,
    ));
    let sink = Arc::new(Sink::default());
    let group = testkit::unique_name("sc-restart");
    let run = start(resilient(b, &group, &topic), &sink, &taking(Duration::ZERO));

    tokio::time::sleep(Duration::from_secs(3)).await;
    restart_in_background(Duration::from_secs(2))
        .await
        .expect("restart task")
        .expect("xtask broker restart");
    let up = Instant::now();
    // When did each sink first grow again after the broker came back?
    let before = [naive_sink.applied().len(), sink.applied().len()];
    let mut resumed: [Option<Duration>; 2] = [None, None];
    while resumed.iter().any(Option::is_none) && up.elapsed() < Duration::from_secs(60) {
        for (i, s) in [&naive_sink, &sink].into_iter().enumerate() {
            if resumed[i].is_none() && s.applied().len() > before[i] {
                resumed[i] = Some(up.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [naive_resumed, res_resumed] = resumed;
    tokio::time::sleep(Duration::from_secs(3)).await; // records flow again
    stop.store(true, AtomicOrdering::SeqCst);
    let [naive_produced, produced] = {
        let [a, b] = producers;
        [
            a.await.expect("producer task"),
            b.await.expect("producer task"),
        ]
    };
    drained(
        b,
        (&group, &topic),
        &sink,
        produced,
        Duration::from_secs(30),
    )
    .await;
    run.stop().await;
    testkit::eventually(Duration::from_secs(10), || {
        naive_sink.distinct() >= naive_produced as usize
    })
    .await;
    naive.abort();
    let _ = naive.await;

    // No fact when a run did not resume: the test then says so.
    let resumed = |r: Report, after: Option<Duration>| match after {
        Some(d) => r
            .millis("resumed after the broker was back, ms", d)
            .verdict(format!(
                "survived the restart: resumed {:.1} s after the broker was back",
                d.as_secs_f64()
            )),
        None => r.verdict("did NOT resume within 60 s of the broker being back"),
    };
    let naive = Report::of(NAME, "naive", naive_produced, &naive_sink, None)
        .split_missing(b, &naive_group, &naive_topic, &naive_sink)
        .await;
    let naive = resumed(naive, naive_resumed);
    let res = Report::of(NAME, "resilient", produced, &sink, None)
        .split_missing(b, &group, &topic, &sink)
        .await;
    let res = resumed(res, res_resumed);
    (naive, res)
}
