//! Waiting for a condition instead of sleeping and hoping: a test states
//! what it waits for (a committed offset reached, a member joined), and
//! goes on the moment it holds, or fails after a generous deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(50);

/// Wait until `cond` holds (or `timeout` passed); returns whether it did.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`eventually`] for an async condition (one that asks the broker).
pub async fn eventually_async<F: Future<Output = bool>>(
    timeout: Duration,
    mut cond: impl FnMut() -> F,
) -> bool {
    let end = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// [`eventually`] for a test without a runtime (one that drives a child
/// process): blocks the thread between looks.
pub fn eventually_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}
