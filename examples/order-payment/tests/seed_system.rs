//! Seed 000 end to end, against the real broker and PostgreSQL: two slow
//! payment instances in one group pay some orders twice when naive, and
//! each order exactly once (or dead-letter it) with the Processor and the
//! inbox. Every count comes from the database and the DLT.
//!
//! With `CI=true` (or `KAFKA_REQUIRE_BROKER=1`) a missing broker or
//! PostgreSQL fails the test; otherwise it skips.

use order_payment::demo::{self, DemoConfig, Mode};
use order_payment::order;

fn config() -> Option<DemoConfig> {
    let broker = testkit::broker()?;
    let pg_url = testkit::postgres()?;
    Some(DemoConfig::new(broker.bootstrap, pg_url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_system_naive_pays_twice_and_the_inbox_pays_once() {
    let Some(cfg) = config() else { return };
    let refused = order::failing_count(cfg.orders);

    let naive = demo::run_mode(&cfg, Mode::Naive).await.expect("naive mode");
    let framework = demo::run_mode(&cfg, Mode::Framework)
        .await
        .expect("framework mode");
    println!("{}", demo::summary(&[naive.clone(), framework.clone()]));

    assert!(
        !naive.duplicated.is_empty(),
        "naive mode: two members slower than max.poll.interval.ms should pay some orders twice \
         (payments HAVING count(*) > 1), found none in {} rows",
        naive.payment_rows
    );

    assert!(framework.settled, "framework mode did not settle in time");
    assert_eq!(
        framework.duplicated,
        Vec::<(String, i64)>::new(),
        "framework mode: event ids paid more than once"
    );
    assert_eq!(
        framework.missing,
        Vec::<String>::new(),
        "framework mode: orders neither paid nor dead-lettered"
    );
    assert_eq!(
        framework.payment_rows as usize,
        framework.orders - refused,
        "one payment per payable order"
    );
    assert_eq!(
        framework.dead_letters.len(),
        refused,
        "every refused order in the DLT, once"
    );
    for dead in &framework.dead_letters {
        assert!(
            dead.has_provenance(),
            "missing provenance headers: {dead:?}"
        );
        let origin = dead.dead.origin.as_ref().expect("origin");
        assert_eq!(origin.topic, framework.topic, "{dead:?}");
        assert_eq!(
            dead.dead.attempts,
            Some(4),
            "1 attempt + 3 retries: {dead:?}"
        );
        assert_eq!(
            dead.dead.error_class.as_deref(),
            Some("Retryable"),
            "{dead:?}"
        );
    }
}
