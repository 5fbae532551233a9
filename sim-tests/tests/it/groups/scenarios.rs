//! The classic failures: the naive consumer shows each one, the runtime
//! fixes it. Every number here is one the README promises.

use std::time::Duration;

use sim_tests::scenarios::{self, Report};

fn show(reports: &[&Report]) {
    println!("{}", Report::table(reports.iter().copied()));
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
    assert_eq!(res.get("commits after revoke"), 0);
    assert_eq!(res.get("partitions lost"), 0);
}

#[tokio::test]
async fn crash_with_auto_commit_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::crash_with_auto_commit(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.lost > 0,
        "naive: auto-commit of unprocessed records loses them in a crash: {naive}"
    );
    assert_eq!(
        naive.unhandled, 0,
        "naive: the restarted consumer read to the end, so what is missing was committed past: {naive}"
    );
    assert_eq!((res.lost, res.unhandled), (0, 0), "resilient: nothing lost");
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
    assert!(
        naive.unhandled > 0,
        "naive: the records behind a stuck poison record are not committed, so they are \
         unhandled (a restart would reach them), not lost: {naive}"
    );
    assert_eq!(
        naive.lost + naive.unhandled,
        naive.produced - naive.handled,
        "every missing record is either lost or unhandled: {naive}"
    );
    assert_eq!(naive.dead_lettered, None, "the naive run has no DLT");
    assert_eq!((res.lost, res.unhandled), (0, 0));
    assert_eq!(res.duplicates, 0);
    assert_eq!(
        res.dead_lettered,
        Some(50),
        "exactly the 5 % poison records"
    );
    assert_eq!(
        res.handled + 50,
        res.produced,
        "each record in exactly one place"
    );
    assert_eq!(
        res.get("sink average ×1000"),
        res.get("expected average ×1000"),
        "running average matches produced minus dead-lettered"
    );
}

#[tokio::test]
async fn connection_chaos_loses_nothing_and_keeps_order() {
    let b = testkit::require_broker!();
    let r = scenarios::connection_chaos(&b, 42, Duration::from_secs(8)).await;
    show(&[&r]);
    assert_eq!((r.lost, r.duplicates), (0, 0));
    assert_eq!(r.get("partitions out of order"), 0);
    assert_eq!(r.get("commits regressed"), 0);
    assert!(r.get("connection resets") > 0, "the fault never fired");
}

#[tokio::test]
async fn ambiguous_commits_never_regress_and_lose_nothing() {
    let b = testkit::require_broker!();
    let r = scenarios::ambiguous_commit(&b, 42).await;
    show(&[&r]);
    assert_eq!(r.lost, 0);
    assert_eq!(r.get("commits regressed"), 0);
    assert_eq!(r.get("partitions not committed to the end"), 0);
    assert!(r.get("commit requests cut") > 0, "the fault never fired");
}

#[tokio::test]
async fn dlt_unavailable_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::dlt_unavailable(&b).await;
    show(&[&naive, &res]);
    assert_eq!(
        (naive.lost, naive.unhandled),
        (1, 0),
        "naive: the failed record is silently skipped, and committed past: {naive}"
    );
    assert_eq!(
        naive.get("partitions not committed to the end"),
        0,
        "naive: committed past it"
    );
    assert_eq!(
        (res.lost, res.unhandled, res.dead_lettered),
        (0, 0, Some(1))
    );
    assert_eq!(
        res.get("committed while the DLT was missing"),
        5,
        "stalled exactly at the record"
    );
    assert_eq!(res.get("partitions not committed to the end"), 0);
}

#[tokio::test]
async fn burst_stays_within_the_memory_bound_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::burst_with_slow_downstream(&b).await;
    show(&[&naive, &res]);
    let bound = res.get("bound bytes");
    let (naive_peak, peak) = (
        naive.peak_in_flight_bytes.expect("measured"),
        res.peak_in_flight_bytes.expect("measured"),
    );
    assert!(
        naive_peak > 5 * bound,
        "naive: the unbounded queue should hold most of the burst"
    );
    assert_eq!((res.lost, res.duplicates), (0, 0));
    assert!(
        peak <= bound + bound / 5,
        "in-flight bytes {peak} beyond the bound + 20 %"
    );
    assert_eq!(res.rebalances, Some(1), "one assignment, no rebalance");
    assert!(res.get("pauses") > 0 && res.get("resumes") > 0, "{res}");
    assert_eq!(res.get("partitions with lag after the run"), 0);
}

#[tokio::test]
async fn restart_and_rebalance_under_load_naive_vs_resilient() {
    let b = testkit::require_broker!();
    let [naive, res, deduped] = scenarios::restart_under_load(&b).await;
    show(&[&naive, &res, &deduped]);
    assert!(
        naive.lost > 0,
        "naive: the stopped and killed members' queues are lost (committed, never processed): {naive}"
    );
    for r in [&res, &deduped] {
        assert_eq!((r.lost, r.unhandled), (0, 0), "{}: nothing lost", r.mode);
        assert_eq!(r.get("commits after revoke"), 0);
        assert_eq!(
            r.get("redeliveries outside the killed member's uncommitted window"),
            0
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
    res.get("drained after two joined, ms"); // it drained
    assert_eq!(res.get("commits after revoke"), 0);
    assert_eq!(res.get("partitions with lag after the run"), 0);
}

#[tokio::test]
async fn startup_race_naive_exits_resilient_retries() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::startup_race(&b).await;
    show(&[&naive, &res]);
    assert_eq!(naive.get("exited at start"), 1);
    assert_eq!(
        (naive.lost, naive.unhandled),
        (0, naive.produced),
        "naive: it never started, so nothing is lost; everything waits: {naive}"
    );
    assert_eq!((res.lost, res.duplicates), (0, 0));
    assert!(
        res.get("connection attempts refused") > 0,
        "the fault never fired"
    );
}

#[tokio::test]
async fn slow_lossy_network_loses_nothing() {
    let b = testkit::require_broker!();
    let r = scenarios::slow_lossy_network(&b, 42).await;
    show(&[&r]);
    assert_eq!((r.lost, r.duplicates), (0, 0));
    assert_eq!(r.get("partitions lost"), 0);
    assert_eq!(r.get("fetch responses dropped"), 1);
    assert!(r.get("heartbeats delayed") > 0, "the fault never fired");
}

#[tokio::test]
async fn corrupt_batches_are_never_handled_and_the_processor_waits_them_out() {
    let b = testkit::require_broker!();
    let r = scenarios::corrupt_batches(&b, 42).await;
    show(&[&r]);
    assert!(r.get("batches corrupted") > 0, "the fault never fired");
    assert_eq!(
        r.get("handled while corrupt"),
        0,
        "a corrupt batch reached the handler"
    );
    assert_eq!(
        r.get("exited"),
        0,
        "the processor gave up instead of polling again"
    );
    assert!(r.get("poll errors retried") > 0);
    assert_eq!((r.lost, r.duplicates), (0, 0));
}

#[tokio::test]
async fn a_fenced_member_gives_its_partitions_up_uncommitted_and_rejoins() {
    let b = testkit::require_broker!();
    let r = scenarios::fenced_member(&b, 42).await;
    show(&[&r]);
    assert!(r.get("heartbeats held") > 0, "the fault never fired");
    assert!(
        r.get("losses seen by the fenced member") > 0,
        "the member never learned it was fenced: {r}"
    );
    assert_eq!(
        r.get("commits after revoke"),
        0,
        "a commit landed for a partition after it was lost"
    );
    assert_eq!(r.get("commits regressed"), 0);
    assert_eq!(r.get("rejoined"), 1, "the fenced member did not join again");
    // It gives its partitions up when the session ends (6 s after its last
    // answered heartbeat), not when the held answer finally arrives (10 s):
    // under KIP-848 too, where the broker owns the session timeout and the
    // member asks for it.
    let learned = r.get("fence learned after, ms");
    assert!(
        learned <= 7_500,
        "the member held its partitions {learned} ms into a 6 s session: {r}"
    );
    assert_eq!((r.lost, r.unhandled), (0, 0), "{r}");
}
