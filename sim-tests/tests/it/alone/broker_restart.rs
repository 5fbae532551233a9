//! Scenarios that stop the shared test broker (through `xtask broker
//! restart`). Ignored in a plain `cargo test`, where other tests run at the
//! same time; `cargo xtask test` runs them alone, after everything else:
//! `cargo test -p sim-tests --test broker_restart -- --ignored --test-threads=1`.

use sim_tests::scenarios::{self, Report};

fn show(reports: &[&Report]) {
    println!("{}", Report::table(reports.iter().copied()));
}

#[tokio::test]
#[ignore = "stops the shared broker: cargo xtask test runs it alone"]
async fn a_consumer_started_before_the_broker_consumes_once_it_is_up() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::consumer_before_broker(&b).await;
    show(&[&naive, &res]);
    assert_eq!(naive.get("exited at start"), 1);
    assert_eq!((res.lost, res.duplicates), (0, 0));
}

#[tokio::test]
#[ignore = "restarts the shared broker: cargo xtask test runs it alone"]
async fn a_broker_restart_loses_nothing_and_resumes_within_30_s() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::broker_restart(&b).await;
    show(&[&naive, &res]);
    assert_eq!(res.lost, 0, "nothing lost across the restart");
    let resumed_ms = res.get("resumed after the broker was back, ms");
    assert!(resumed_ms < 30_000, "resumed after {resumed_ms} ms");
}
