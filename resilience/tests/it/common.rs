//! The runtime's real-broker tests build on `sim_tests::support` (shared
//! with the scenarios); this adds the one shape they all start from.

pub use sim_tests::support::*;

use kafka_wire::Client;

/// A new topic of `partitions` partitions holding values "0".."n-1", keyed
/// "k<i>", and the admin client that made it.
pub async fn topic_with_records(
    b: &testkit::BrokerEnv,
    prefix: &str,
    partitions: i32,
    n: u32,
) -> (Client, String) {
    let admin = testkit::client(b).await;
    let topic =
        testkit::numbered_topic(b, &admin, prefix, partitions, n, |i| format!("k{i}")).await;
    (admin, topic)
}

/// Fail (or succeed) by record number and attempt; every call takes no time.
pub fn failing(
    f: impl Fn(u32, u32) -> Option<resilience::HandlerError> + Send + Sync + 'static,
) -> Behaviour {
    std::sync::Arc::new(move |n, attempt| match f(n, attempt) {
        Some(e) => Err(e),
        None => Ok(std::time::Duration::ZERO),
    })
}

/// Blocking retries from 10 ms (the default 1 s makes tests slow).
pub fn fast_backoff() -> resilience::retry::BackoffPolicy {
    resilience::retry::BackoffPolicy {
        initial: std::time::Duration::from_millis(10),
        ..resilience::retry::BackoffPolicy::default()
    }
}
