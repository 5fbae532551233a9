//! Scenarios that stop the shared test broker (through `xtask broker
//! restart`). Ignored in a plain `cargo test`, where other tests run at the
//! same time; `cargo xtask test` runs them alone, after everything else:
//! `cargo test -p sim-tests --test broker_restart -- --ignored --test-threads=1`.

use sim_tests::scenarios::{self, Report};

fn show(reports: &[&Report]) {
    println!("{}", Report::header());
    for r in reports {
        println!("{r}");
    }
}

#[tokio::test]
#[ignore = "stops the shared broker: cargo xtask test runs it alone"]
async fn a_consumer_started_before_the_broker_consumes_once_it_is_up() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::consumer_before_broker(&b).await;
    show(&[&naive, &res]);
    assert!(
        naive.notes.iter().any(|n| n.starts_with("exited at start")),
        "{:?}",
        naive.notes
    );
    assert_eq!((res.lost, res.duplicates), (0, 0));
}

#[tokio::test]
#[ignore = "restarts the shared broker: cargo xtask test runs it alone"]
async fn a_broker_restart_loses_nothing_and_resumes_within_30_s() {
    let b = testkit::require_broker!();
    let (naive, res) = scenarios::broker_restart(&b).await;
    show(&[&naive, &res]);
    assert_eq!(res.lost, 0, "nothing lost across the restart");
    let resumed = res
        .notes
        .iter()
        .find_map(|n| {
            n.strip_prefix("resumed ")?
                .split_once(" s after")?
                .0
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("did not resume: {:?}", res.notes));
    assert!(resumed < 30.0, "resumed after {resumed} s");
}
