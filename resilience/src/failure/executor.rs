//! The one executor of [`FailurePolicy`] decisions, shared by the
//! [`Processor`](crate::Processor) (`processor/unit.rs`) and the
//! exactly-once processor (`eos.rs`). It asks the policy after each failed
//! call and carries the decision out through [`Effects`], the few things
//! each processor does its own way:
//!
//! | decision | the Processor | the exactly-once processor |
//! |---|---|---|
//! | `Retry`, `AwaitDependency` | gives its worker's permit back, sleeps (waking on revoke), calls again | sleeps inside the transaction, calls again |
//! | `RetryTopic`, `DeadLetter` | writes each record until acknowledged, completes it; counts toward quarantine | the dead letter becomes the input's output, in the same transaction |
//! | `Release` | (a share group) reports the records released | never decided |

use std::future::Future;
use std::time::Duration;

use consumer_core::TopicPartition;

use super::{Decision, Failure, FailurePolicy};
use crate::retry::HandlerError;

/// Where a failed record is written: the two decisions that forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward<'a> {
    /// The next retry topic, due `delay` after the write.
    RetryTopic { topic: &'a str, delay: Duration },
    /// The DLT (see [`Decision::DeadLetter`]).
    DeadLetter { counts_toward_quarantine: bool },
}

/// What carrying out a decision does in the processor that runs the
/// executor.
pub(crate) trait Effects {
    /// What a successful call gives (the Processor: nothing; the
    /// exactly-once processor: the input's outputs).
    type Output;
    /// What forwarding gives (the exactly-once processor: the dead letter).
    type Forwarded;

    /// May the work go on (its partition not revoked, the runtime not
    /// stopping)? Asked before each decision.
    fn may_go_on(&self) -> bool;

    /// A retry was decided (the Processor counts it).
    fn retrying(&mut self) {}

    /// Wait `delay` before the next attempt; `false` when the work may not
    /// go on meanwhile.
    fn wait(&mut self, delay: Duration) -> impl Future<Output = bool> + Send;

    /// Call the application's code again: attempt number `attempt` (2, 3, …).
    fn call(
        &mut self,
        attempt: u32,
    ) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;

    /// Write the failed records where `to` says, after `attempts` calls
    /// here that ended with `error`.
    fn forward(
        &mut self,
        to: Forward<'_>,
        error: &HandlerError,
        attempts: u32,
    ) -> impl Future<Output = Self::Forwarded> + Send;
}

/// The record (or batch) that failed, for the policy and the logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failed<'a> {
    pub(crate) tp: &'a TopicPartition,
    /// Its first record's offset.
    pub(crate) offset: i64,
    /// The topic it was first written to (a retry topic's source).
    pub(crate) source: &'a str,
    /// Its retry-topic step (`None`: read from `source`).
    pub(crate) step: Option<usize>,
    /// The attempt whose call failed first: 1, or a share group's
    /// delivery count (the broker counts the attempts before it).
    pub(crate) attempt: u32,
}

/// How the executor left a failed record.
#[derive(Debug)]
pub(crate) enum Settled<T, F> {
    /// A retry succeeded.
    Handled(T),
    /// Written to a retry topic or the DLT ([`Effects::forward`]).
    Forwarded(F),
    /// To be given back to the broker ([`Decision::Release`]).
    Released,
    /// The work may not go on (revoked, stopping): not done here.
    Stopped,
}

/// Carry out `policy` for `failed`, whose first call ended with `error`:
/// retry while it says so, then forward or release.
pub(crate) async fn settle<E: Effects>(
    policy: &FailurePolicy,
    failed: Failed<'_>,
    effects: &mut E,
    mut error: HandlerError,
) -> Settled<E::Output, E::Forwarded> {
    let mut attempt = failed.attempt.max(1);
    loop {
        if !effects.may_go_on() {
            return Settled::Stopped;
        }
        let decision = policy.decide(&Failure {
            error: &error,
            attempt,
            source: failed.source,
            step: failed.step,
            random: rand::random::<f64>(),
        });
        let (tp, offset) = (failed.tp, failed.offset);
        let delay = match decision {
            Decision::Retry { delay } => {
                tracing::debug!(%tp, offset, attempt, error = %error, ?delay, "retrying");
                delay
            }
            Decision::AwaitDependency { delay } => {
                tracing::warn!(%tp, offset, attempt, error = %error, ?delay,
                    "a dependency is unavailable; waiting for it (never dead-lettered)");
                delay
            }
            Decision::RetryTopic { topic, delay } => {
                let to = Forward::RetryTopic {
                    topic: &topic,
                    delay,
                };
                return Settled::Forwarded(effects.forward(to, &error, attempt).await);
            }
            Decision::DeadLetter {
                counts_toward_quarantine,
            } => {
                let to = Forward::DeadLetter {
                    counts_toward_quarantine,
                };
                return Settled::Forwarded(effects.forward(to, &error, attempt).await);
            }
            Decision::Release => return Settled::Released,
        };
        effects.retrying();
        if !effects.wait(delay).await {
            return Settled::Stopped;
        }
        attempt += 1;
        match effects.call(attempt).await {
            Ok(out) => return Settled::Handled(out),
            Err(e) => error = e,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::identity;

    use super::*;
    use crate::retry::BackoffPolicy;
    use crate::retry_topics::RetryTopics;

    /// Effects whose calls fail until call number `fail` (the first call,
    /// already made, is 1) with the first error, and that log.
    struct Script {
        fail: u32,
        error: HandlerError,
        calls: u32,
        go_on: bool,
        log: Vec<String>,
    }

    impl Effects for Script {
        type Output = u32;
        type Forwarded = String;

        fn may_go_on(&self) -> bool {
            self.go_on
        }

        fn retrying(&mut self) {
            self.log.push("retrying".into());
        }

        async fn wait(&mut self, delay: Duration) -> bool {
            self.log.push(format!("wait {delay:?}"));
            tokio::time::sleep(delay).await;
            true
        }

        async fn call(&mut self, attempt: u32) -> Result<u32, HandlerError> {
            self.calls += 1;
            assert_eq!(attempt, self.calls, "attempts are numbered from 1");
            if self.calls <= self.fail {
                Err(self.error.clone())
            } else {
                Ok(attempt)
            }
        }

        async fn forward(&mut self, to: Forward<'_>, e: &HandlerError, attempts: u32) -> String {
            format!("{to:?} {} after {attempts}", e.class())
        }
    }

    /// Settle a record whose calls fail `fail` times with `error`, under
    /// `policy` (3 attempts, 100 ms apart, unless changed by `shape`).
    async fn run(
        shape: impl FnOnce(FailurePolicy) -> FailurePolicy,
        fail: u32,
        error: HandlerError,
        go_on: bool,
    ) -> (Settled<u32, String>, Vec<String>) {
        let policy = shape(FailurePolicy::new(BackoffPolicy::fixed(
            Duration::from_millis(100),
            2,
        )));
        let tp = TopicPartition::new("orders", 0);
        let failed = Failed {
            tp: &tp,
            offset: 7,
            source: "orders",
            step: None,
            attempt: 1,
        };
        let mut script = Script {
            fail,
            error: error.clone(),
            calls: 1,
            go_on,
            log: Vec::new(),
        };
        let settled = settle(&policy, failed, &mut script, error).await;
        (settled, script.log)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_a_call_succeeds() {
        let (settled, log) = run(identity, 2, HandlerError::retryable("timeout"), true).await;
        assert!(matches!(settled, Settled::Handled(3)), "{settled:?}");
        assert_eq!(
            log,
            ["retrying", "wait 100ms", "retrying", "wait 100ms"],
            "each retry counted, then waited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forwards_when_the_retries_run_out_with_the_attempts_made() {
        let (settled, _) = run(identity, u32::MAX, HandlerError::retryable("timeout"), true).await;
        let Settled::Forwarded(f) = settled else {
            panic!("{settled:?}")
        };
        assert_eq!(
            f,
            "DeadLetter { counts_toward_quarantine: true } Retryable after 3"
        );

        let (settled, log) = run(identity, u32::MAX, HandlerError::fatal("bad"), true).await;
        let Settled::Forwarded(f) = settled else {
            panic!("{settled:?}")
        };
        assert!(f.ends_with("NonRetryable after 1"), "{f}");
        assert!(log.is_empty(), "poison is never retried");

        let chain =
            |p: FailurePolicy| p.retry_topics(Some(RetryTopics::new(&[Duration::from_secs(1)])));
        let (settled, _) = run(chain, u32::MAX, HandlerError::retryable("timeout"), true).await;
        let Settled::Forwarded(f) = settled else {
            panic!("{settled:?}")
        };
        assert!(
            f.starts_with("RetryTopic { topic: \"orders.retry.1s\""),
            "{f}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_may_not_go_on_stops_before_any_decision() {
        let (settled, log) = run(identity, u32::MAX, HandlerError::fatal("bad"), false).await;
        assert!(matches!(settled, Settled::Stopped), "{settled:?}");
        assert!(log.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_that_redelivers_gets_the_record_back() {
        let redelivers = |p: FailurePolicy| p.redelivery(true);
        let (settled, log) = run(
            redelivers,
            u32::MAX,
            HandlerError::retryable("timeout"),
            true,
        )
        .await;
        assert!(matches!(settled, Settled::Released), "{settled:?}");
        assert!(log.is_empty(), "no wait here: the broker redelivers");
    }
}
