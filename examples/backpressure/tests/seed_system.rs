//! Seed 001's claims, end to end against the real broker: the five
//! situations of `backpressure demo`, shorter (pace 0.6), and the summary's
//! claims asserted row by row. With `CI=true` a missing broker fails.

use backpressure::demo::{self, Pace, Row};
use backpressure::summary;

fn row<'a>(rows: &'a [Row], situation: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.report.scenario == situation)
        .unwrap_or_else(|| panic!("no row {situation}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_system_five_situations_keep_lag_offsets_memory_and_membership_in_check() {
    let b = testkit::require_broker!();
    let rows = demo::run(&b, Pace(0.6)).await.expect("the demo ran");
    let table = summary::table(&rows);
    println!("{table}");
    assert_eq!(rows.len(), 5, "{table}");
    for r in &rows {
        let name = r.report.scenario;
        assert_eq!(
            (r.report.lost, r.report.unhandled),
            (0, 0),
            "{name}: every record handled\n{table}"
        );
        assert_eq!(r.report.handled, r.report.produced, "{name}\n{table}");
        assert_eq!(r.end_lag, 0, "{name}: the lag drains to zero\n{table}");
        assert_eq!(
            r.commit_regressions, 0,
            "{name}: offsets only move forward\n{table}"
        );
        assert_eq!(
            r.commits_after_revoke, 0,
            "{name}: no commit after a revoke\n{table}"
        );
        assert!(
            r.within_bound(),
            "{name}: in flight beyond the bound + one poll\n{table}"
        );
        assert_eq!(
            r.assignments, r.expected_assignments,
            "{name}: one rebalance per membership change, no storm\n{table}"
        );
    }
    // At-least-once: duplicates only where an instance was killed, and
    // only from what it had handled but not yet committed.
    let restart = row(&rows, "restart mid-processing");
    assert_eq!(restart.unexplained_duplicates, Some(0), "{table}");
    for r in rows
        .iter()
        .filter(|r| r.report.scenario != "restart mid-processing")
    {
        assert_eq!(
            r.report.duplicates, 0,
            "{}: no duplicates\n{table}",
            r.report.scenario
        );
    }
    // Slow processing: the lag stays under one second of arrivals (1,500).
    assert!(row(&rows, "slow processing").peak_lag < 1_500, "{table}");
    // A burst and a saturated queue: fetching paused instead of buffering.
    for name in ["burst", "queue saturation"] {
        let r = row(&rows, name);
        assert!(
            r.pauses > 0 && r.peak_paused > 0,
            "{name}: never paused\n{table}"
        );
    }
}
