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
