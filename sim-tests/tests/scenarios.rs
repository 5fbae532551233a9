//! The classic failures: the naive consumer shows each one, the runtime
//! fixes it. Every number here is one the README promises.

use std::time::Duration;

use sim_tests::scenarios::{self, Report};

fn show(reports: &[&Report]) {
    println!("{}", Report::header());
    for r in reports {
        println!("{r}");
    }
}

#[tokio::test]
async fn rebalance_duplicates_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::rebalance_duplicates(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.duplicates > 0,
        "naive: slow inline processing should cause redelivery"
    );
    assert_eq!(
        (res.duplicates, res.lost),
        (0, 0),
        "resilient: no duplicate, nothing lost"
    );
    assert!(
        res.notes.iter().any(|n| n == "commits after revoke: 0"),
        "{:?}",
        res.notes
    );
}

#[tokio::test]
async fn crash_with_auto_commit_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::crash_with_auto_commit(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.lost > 0,
        "naive: auto-commit of unprocessed records loses them in a crash"
    );
    assert_eq!(res.lost, 0, "resilient: nothing lost");
}

#[tokio::test]
async fn poison_and_transient_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::poison_and_transient(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.handled < naive.produced - 50,
        "naive: a poison record blocks its partition"
    );
    assert_eq!(res.lost, 0);
    assert_eq!(res.duplicates, 0);
    assert_eq!(res.dead_lettered, 50, "exactly the 5 % poison records");
    assert_eq!(
        res.handled + res.dead_lettered,
        res.produced,
        "each record in exactly one place"
    );
    let avg = res
        .notes
        .iter()
        .find(|n| n.starts_with("sink average"))
        .unwrap();
    let (a, b) = avg
        .trim_start_matches("sink average ")
        .split_once(" = expected ")
        .unwrap();
    assert_eq!(a, b, "running average matches produced minus dead-lettered");
}

#[tokio::test]
async fn connection_chaos_loses_nothing_and_keeps_order() {
    let b = testkit::require_broker!();
    let r = scenarios::connection_chaos(&b, 42, Duration::from_secs(8)).await;
    show(&[&r]);
    assert_eq!((r.lost, r.duplicates), (0, 0));
    assert!(
        r.notes
            .iter()
            .any(|n| n == "order kept per partition: true"),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n == "commits regressed: 0"),
        "{:?}",
        r.notes
    );
    assert!(
        !r.notes.iter().any(|n| n == "connections reset 0 times"),
        "{:?}",
        r.notes
    );
}

#[tokio::test]
async fn ambiguous_commits_never_regress_and_lose_nothing() {
    let b = testkit::require_broker!();
    let r = scenarios::ambiguous_commit(&b, 42).await;
    show(&[&r]);
    assert_eq!(r.lost, 0);
    assert!(
        r.notes.iter().any(|n| n == "commits regressed: 0"),
        "{:?}",
        r.notes
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n == "partitions not committed to the end: 0"),
        "{:?}",
        r.notes
    );
    assert!(
        !r.notes.iter().any(|n| n == "commit requests cut: 0"),
        "the fault never fired: {:?}",
        r.notes
    );
}

#[tokio::test]
async fn dlt_unavailable_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::dlt_unavailable(&b).await;
    show(&[&naive, &res]);
    assert_eq!(
        naive.lost, 1,
        "naive: the failed record is silently skipped"
    );
    assert_eq!((res.lost, res.dead_lettered), (0, 1));
    assert!(
        res.notes
            .iter()
            .any(|n| n.starts_with("while the DLT was missing: committed Some(5)")),
        "stalled exactly at the record: {:?}",
        res.notes
    );
    assert!(
        res.notes
            .iter()
            .any(|n| n.ends_with("after the DLT appeared: 0")),
        "{:?}",
        res.notes
    );
}

fn noted(r: &Report, note: &str) -> bool {
    r.notes.iter().any(|n| n == note)
}

#[tokio::test]
async fn burst_stays_within_the_memory_bound_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::burst_with_slow_downstream(&b).await;
    show(&[&naive, &res]);
    const BOUND: u64 = 1024 * 1024;
    assert!(
        naive.peak_in_flight_bytes > 5 * BOUND,
        "naive: the unbounded queue should hold most of the burst"
    );
    assert_eq!((res.lost, res.duplicates), (0, 0));
    assert!(
        res.peak_in_flight_bytes <= BOUND + BOUND / 5,
        "in-flight bytes {} beyond the bound + 20 %",
        res.peak_in_flight_bytes
    );
    assert_eq!(res.rebalances, 1, "one assignment, no rebalance");
    assert!(
        !res.notes.iter().any(|n| n.starts_with("paused 0 times")),
        "{:?}",
        res.notes
    );
    assert!(
        noted(&res, "partitions with lag after the run: 0"),
        "{:?}",
        res.notes
    );
}

#[tokio::test]
async fn restart_and_rebalance_under_load_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let [naive, res, deduped] = scenarios::restart_under_load(&b).await;
    show(&[&naive, &res, &deduped]);
    assert!(
        naive.lost > 0,
        "naive: the stopped and killed members' queues are lost"
    );
    for r in [&res, &deduped] {
        assert_eq!(r.lost, 0, "{}: nothing lost", r.mode);
        assert!(noted(r, "commits after revoke: 0"), "{:?}", r.notes);
        assert!(
            noted(
                r,
                "redeliveries outside the killed member's uncommitted window: 0"
            ),
            "{:?}",
            r.notes
        );
    }
    assert_eq!(
        deduped.duplicates, 0,
        "a DedupStore makes redelivery harmless"
    );
}

#[tokio::test]
async fn scaling_out_drains_the_lag() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::scale_out_under_lag(&b).await;
    show(&[&naive, &res]);
    assert_eq!((res.lost, res.duplicates), (0, 0));
    assert!(
        res.notes.iter().any(|n| n.contains("drained in")),
        "{:?}",
        res.notes
    );
    assert!(noted(&res, "commits after revoke: 0"), "{:?}", res.notes);
    assert!(
        noted(&res, "partitions with lag after the run: 0"),
        "{:?}",
        res.notes
    );
}

#[tokio::test]
async fn startup_race_naive_exits_resilient_retries() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::startup_race(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.notes.iter().any(|n| n.starts_with("exited at start")),
        "{:?}",
        naive.notes
    );
    assert_eq!((res.lost, res.duplicates), (0, 0));
    assert!(
        !noted(&res, "connection attempts refused: 0"),
        "the fault never fired: {:?}",
        res.notes
    );
}

#[tokio::test]
async fn slow_lossy_network_loses_nothing() {
    let b = testkit::require_broker!();
    let r = scenarios::slow_lossy_network(&b, 42).await;
    show(&[&r]);
    assert_eq!((r.lost, r.duplicates), (0, 0));
    assert!(noted(&r, "partitions lost: 0"), "{:?}", r.notes);
    assert!(noted(&r, "fetch responses dropped: 1"), "{:?}", r.notes);
    assert!(!noted(&r, "heartbeats delayed: 0"), "{:?}", r.notes);
}
