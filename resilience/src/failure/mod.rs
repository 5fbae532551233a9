//! What happens to a record whose handler failed: one pure decision
//! ([`FailurePolicy::decide`]) and one executor of it (`executor.rs`),
//! shared by the [`Processor`](crate::Processor) and the exactly-once
//! processor ([`eos`](crate::eos)).
//!
//! ```text
//!  handler call ──Err(HandlerError)──▶ Failure { error, attempt, source, step, random }
//!                                          │ FailurePolicy::decide (pure: no clock, no I/O)
//!                                          ▼
//!   Retry { delay }            call again after delay (the lane waits, without a worker)
//!   AwaitDependency { delay }  the same, past the policy's attempts: a dependency is down
//!   RetryTopic { topic, delay } write a copy to the next retry topic, then complete
//!   DeadLetter { .. }          write it to the DLT, then complete (maybe toward quarantine)
//!   Release                    give it back to the broker (share groups only: RELEASE)
//! ```
//!
//! | error | retry topics | attempt | decision |
//! |---|---|---|---|
//! | `Unavailable` | any | < `max_attempts` | `Retry` (the policy's jittered delay) |
//! | `Unavailable` | any | ≥ `max_attempts` | `AwaitDependency` (growing to `max_delay`, never dead-lettered) |
//! | `Retryable` | a next step | any | `RetryTopic` (the next step's topic and delay) |
//! | `Retryable` | chain ended | any | `DeadLetter`, counted toward quarantine |
//! | `Retryable` | none | < `max_attempts` | `Retry`, or `Release` where the group redelivers |
//! | `Retryable` | none | ≥ `max_attempts` | `DeadLetter`, counted toward quarantine |
//! | `NonRetryable`, `Deserialization` | any | any | `DeadLetter` (poison: never toward quarantine) |
//!
//! A panic in the handler is `NonRetryable` and a missed deadline
//! (`handler_timeout`) is `Retryable` before the policy sees them
//! (`panics.rs`, `processor/unit.rs`). The runtime's own retries (the DLT
//! write, the idempotency store, a failed transaction) are not record
//! failures: they retry until they work (`retry::RUNTIME_BACKOFF`).

pub(crate) mod executor;

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ProcessorConfig, Quarantine};
use crate::retry::{BackoffPolicy, HandlerError};
use crate::retry_topics::{topic_name, RetryTopics};

/// One failed call, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// What the call returned (a panic or a missed deadline already turned
    /// into a [`HandlerError`]).
    pub error: &'a HandlerError,
    /// The attempt that failed: 1 for the first call. In a share group,
    /// the record's delivery count.
    pub attempt: u32,
    /// The topic the record was first written to (a retry topic's source).
    pub source: &'a str,
    /// The step of the retry-topic chain the record was read from (0 for
    /// the first retry topic); `None` when read from `source` itself.
    pub step: Option<usize>,
    /// A number in `[0, 1)` that jitters the delay: the executor draws it,
    /// tests fix it.
    pub random: f64,
}

/// What to do with a failed record (see the module's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Call the handler again after `delay`. Only the record's lane waits,
    /// holding no worker meanwhile.
    Retry { delay: Duration },
    /// A dependency is down ([`HandlerError::Unavailable`]) and the policy's
    /// attempts are used up: wait `delay` and call again, for as long as it
    /// takes. The record is fine: never dead-lettered, never counted
    /// toward quarantine.
    AwaitDependency { delay: Duration },
    /// Write a copy to retry topic `topic`, due `delay` from now; the
    /// record completes once the copy is acknowledged, and its partition
    /// goes on.
    RetryTopic { topic: String, delay: Duration },
    /// Write it to the dead-letter topic; it completes once the write is
    /// acknowledged. `counts_toward_quarantine`: a retryable error whose
    /// retries ran out (an outage, maybe), so a run of these pauses the
    /// partition ([`Quarantine`]); poison never counts.
    DeadLetter { counts_toward_quarantine: bool },
    /// Give it back to the broker, which delivers it again with its
    /// delivery count one higher (a share group's RELEASE). Only decided
    /// where the group redelivers: never for a consumer group.
    Release,
}

/// The one place that decides what a failure leads to. Pure: the same
/// [`Failure`] always gives the same [`Decision`].
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    backoff: BackoffPolicy,
    retry_topics: Option<RetryTopics>,
    quarantine: Quarantine,
    /// The broker takes records back for redelivery (share groups).
    redelivery: bool,
}

impl FailurePolicy {
    /// Blocking retries as `backoff` says, then the DLT; no retry topics,
    /// no quarantine, no redelivery (the exactly-once processor's policy).
    pub fn new(backoff: BackoffPolicy) -> Self {
        Self {
            backoff,
            retry_topics: None,
            quarantine: Quarantine {
                after_failures: 0,
                pause: Duration::ZERO,
            },
            redelivery: false,
        }
    }

    /// The [`Processor`](crate::Processor)'s policy: its backoff, retry
    /// topics and quarantine.
    pub fn of(cfg: &ProcessorConfig) -> Self {
        Self::new(cfg.backoff)
            .retry_topics(cfg.retry_topics.clone())
            .quarantine(cfg.quarantine)
    }

    /// Send retryable failures down `chain` instead of retrying them in
    /// place (`None`: blocking retries).
    pub fn retry_topics(mut self, chain: Option<RetryTopics>) -> Self {
        self.retry_topics = chain;
        self
    }

    /// Pause a partition after a run of dead letters counted toward
    /// quarantine.
    pub fn quarantine(mut self, quarantine: Quarantine) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// Whether the group takes records back for redelivery (a share
    /// group): then a retryable failure within the attempts is
    /// [`Decision::Release`]d instead of retried in place.
    pub(crate) fn redelivery(mut self, redelivers: bool) -> Self {
        self.redelivery = redelivers;
        self
    }

    /// What to do after `f` (see the module's table).
    pub fn decide(&self, f: &Failure<'_>) -> Decision {
        let b = &self.backoff;
        let within_attempts = f.attempt < b.max_attempts;
        match f.error {
            HandlerError::Unavailable(_) => {
                let cap = b.max_delay.max(b.initial);
                if within_attempts {
                    Decision::Retry {
                        delay: self.delay(f).min(cap),
                    }
                } else {
                    // Past the policy's retries the delays keep growing by
                    // the multiplier, up to `max_delay`, without jitter.
                    let exp = f.attempt.saturating_sub(1).min(63) as i32;
                    let secs = b.initial.as_secs_f64() * b.multiplier.max(1.0).powi(exp);
                    let grown = Duration::try_from_secs_f64(secs).unwrap_or(cap);
                    Decision::AwaitDependency {
                        delay: grown.min(cap),
                    }
                }
            }
            HandlerError::Retryable(_) => match &self.retry_topics {
                Some(chain) => {
                    let next = f.step.map_or(0, |s| s + 1);
                    match chain.delays.get(next) {
                        Some(&delay) => Decision::RetryTopic {
                            topic: topic_name(f.source, delay),
                            delay,
                        },
                        None => Decision::DeadLetter {
                            counts_toward_quarantine: true,
                        },
                    }
                }
                None if within_attempts && self.redelivery => Decision::Release,
                None if within_attempts => Decision::Retry {
                    delay: self.delay(f),
                },
                None => Decision::DeadLetter {
                    counts_toward_quarantine: true,
                },
            },
            HandlerError::NonRetryable(_) | HandlerError::Deserialization(_) => {
                Decision::DeadLetter {
                    counts_toward_quarantine: false,
                }
            }
        }
    }

    /// The policy's delay before attempt `f.attempt + 1`: the same as the
    /// `f.attempt`-th of [`BackoffPolicy::delays`], jittered by `f.random`.
    fn delay(&self, f: &Failure<'_>) -> Duration {
        self.backoff
            .as_backoff()
            .delay_with(f.attempt, f.random)
            .min(self.backoff.max_delay)
    }

    /// A record whose decision counted toward quarantine was dead-lettered:
    /// one more in its partition's run. `true` when the run reaches
    /// `after_failures`: the partition is quarantined from `now` for
    /// `pause`, and the run starts over. Never with `after_failures` 0.
    pub(crate) fn dead_lettered(&self, run: &mut FailureRun, now: Instant) -> bool {
        let q = self.quarantine;
        if q.after_failures == 0 {
            return false;
        }
        run.in_row += 1;
        if run.in_row < q.after_failures {
            return false;
        }
        run.in_row = 0;
        run.until = Some(now + q.pause);
        true
    }
}

/// One partition's records that failed for good in a row, and its
/// quarantine (see [`FailurePolicy::dead_lettered`]). Pure: `now` comes in.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FailureRun {
    in_row: u32,
    until: Option<Instant>,
}

impl FailureRun {
    /// A record of the partition was handled: the run ends.
    pub(crate) fn handled(&mut self) {
        self.in_row = 0;
    }

    /// Until when the partition is quarantined, if it is at `now`.
    pub(crate) fn quarantined_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    fn retryable() -> HandlerError {
        HandlerError::retryable("timeout")
    }
    fn unavailable() -> HandlerError {
        HandlerError::unavailable("connection refused")
    }
    fn non_retryable() -> HandlerError {
        HandlerError::fatal("bad order")
    }
    fn undecodable() -> HandlerError {
        HandlerError::Deserialization("not utf-8".into())
    }

    fn failure(error: &HandlerError, attempt: u32) -> Failure<'_> {
        Failure {
            error,
            attempt,
            source: "orders",
            step: None,
            random: 0.5,
        }
    }

    /// The seeds' default: 3 attempts, 1 s then 2 s, no jitter at 0.5.
    fn blocking() -> FailurePolicy {
        FailurePolicy::new(BackoffPolicy::default())
    }

    fn chain() -> FailurePolicy {
        blocking().retry_topics(Some(RetryTopics::new(&[S, 10 * S])))
    }

    fn dead_letter(counts_toward_quarantine: bool) -> Decision {
        Decision::DeadLetter {
            counts_toward_quarantine,
        }
    }

    /// The module's table, row by row.
    #[test]
    fn the_decision_table() {
        let (r, u, n, d) = (retryable(), unavailable(), non_retryable(), undecodable());
        let p = blocking();
        let rows: [(&FailurePolicy, &HandlerError, u32, Option<usize>, Decision); 16] = [
            (&p, &u, 1, None, Decision::Retry { delay: S }),
            (&p, &u, 2, None, Decision::Retry { delay: 2 * S }),
            (&p, &u, 3, None, Decision::AwaitDependency { delay: 4 * S }),
            (&p, &u, 9, None, Decision::AwaitDependency { delay: 30 * S }),
            (&p, &r, 1, None, Decision::Retry { delay: S }),
            (&p, &r, 2, None, Decision::Retry { delay: 2 * S }),
            (&p, &r, 3, None, dead_letter(true)),
            (&p, &n, 1, None, dead_letter(false)),
            (&p, &d, 1, None, dead_letter(false)),
            (
                &chain(),
                &r,
                1,
                None,
                Decision::RetryTopic {
                    topic: "orders.retry.1s".into(),
                    delay: S,
                },
            ),
            (
                &chain(),
                &r,
                1,
                Some(0),
                Decision::RetryTopic {
                    topic: "orders.retry.10s".into(),
                    delay: 10 * S,
                },
            ),
            (&chain(), &r, 1, Some(1), dead_letter(true)),
            (&chain(), &n, 1, None, dead_letter(false)),
            (&chain(), &d, 1, Some(0), dead_letter(false)),
            (&chain(), &u, 1, Some(0), Decision::Retry { delay: S }),
            (
                &chain(),
                &u,
                5,
                None,
                Decision::AwaitDependency { delay: 16 * S },
            ),
        ];
        for (i, (policy, error, attempt, step, want)) in rows.into_iter().enumerate() {
            let f = Failure {
                step,
                ..failure(error, attempt)
            };
            assert_eq!(policy.decide(&f), want, "row {i}: {f:?}");
        }
    }

    #[test]
    fn a_group_that_redelivers_releases_what_it_would_retry_in_place() {
        let p = blocking().redelivery(true);
        let r = retryable();
        assert_eq!(p.decide(&failure(&r, 1)), Decision::Release);
        assert_eq!(p.decide(&failure(&r, 2)), Decision::Release);
        assert_eq!(
            p.decide(&failure(&r, 3)),
            dead_letter(true),
            "delivery count 3: exhausted"
        );
        let u = unavailable();
        assert_eq!(
            p.decide(&failure(&u, 1)),
            Decision::Retry { delay: S },
            "a dependency down is waited for here: a redelivery would only fail again"
        );
        assert_eq!(
            chain().redelivery(true).decide(&failure(&r, 1)),
            Decision::RetryTopic {
                topic: "orders.retry.1s".into(),
                delay: S
            },
            "retry topics come first"
        );
    }

    #[test]
    fn fixed_and_exponential_policies_count_retries_not_attempts() {
        let r = retryable();
        let seed = FailurePolicy::new(BackoffPolicy::exponential(S, 3));
        let delays: Vec<Decision> = (1..=4).map(|a| seed.decide(&failure(&r, a))).collect();
        assert_eq!(
            delays,
            [
                Decision::Retry { delay: S },
                Decision::Retry { delay: 2 * S },
                Decision::Retry { delay: 4 * S },
                dead_letter(true)
            ],
            "the seeds' 1, 2, 4 s, then the DLT"
        );
        let none = FailurePolicy::new(BackoffPolicy::fixed(S, 0));
        assert_eq!(none.decide(&failure(&r, 1)), dead_letter(true));
    }

    #[test]
    fn a_quarantine_pauses_after_a_run_and_a_handled_record_ends_the_run() {
        let q = Quarantine {
            after_failures: 3,
            pause: 30 * S,
        };
        let p = blocking().quarantine(q);
        let now = Instant::now();
        let mut run = FailureRun::default();
        assert!(!p.dead_lettered(&mut run, now));
        run.handled();
        assert!(!p.dead_lettered(&mut run, now));
        assert!(!p.dead_lettered(&mut run, now));
        assert_eq!(run.quarantined_until(now), None);
        assert!(p.dead_lettered(&mut run, now), "the third in a row");
        assert_eq!(run.quarantined_until(now), Some(now + 30 * S));
        assert_eq!(run.quarantined_until(now + 30 * S), None, "over");
        assert!(!p.dead_lettered(&mut run, now), "the run started over");
        let mut off = FailureRun::default();
        for _ in 0..100 {
            assert!(!blocking().dead_lettered(&mut off, now), "0 disables");
        }
    }

    fn any_error() -> impl Strategy<Value = HandlerError> {
        prop_oneof![
            Just(retryable()),
            Just(unavailable()),
            Just(non_retryable()),
            Just(undecodable())
        ]
    }

    fn any_policy() -> impl Strategy<Value = FailurePolicy> {
        (
            1u64..5_000,
            1.0f64..4.0,
            1u64..60_000,
            0u32..10,
            0.0f64..1.0,
            proptest::option::of(proptest::collection::vec(1u64..100_000, 0..4)),
            any::<bool>(),
        )
            .prop_map(
                |(initial, mult, max, attempts, jitter, chain, redelivery)| {
                    let backoff = BackoffPolicy {
                        initial: Duration::from_millis(initial),
                        multiplier: mult,
                        max_delay: Duration::from_millis(max),
                        max_attempts: attempts,
                        jitter,
                    };
                    let chain = chain.map(|ms| {
                        RetryTopics::new(
                            &ms.into_iter()
                                .map(Duration::from_millis)
                                .collect::<Vec<_>>(),
                        )
                    });
                    FailurePolicy::new(backoff)
                        .retry_topics(chain)
                        .redelivery(redelivery)
                },
            )
    }

    proptest! {
        /// Whatever the policy and the failure: poison is dead-lettered and
        /// never counts; a dependency down is never dead-lettered nor sent
        /// down retry topics; waits stay within the cap; only a group that
        /// redelivers releases; the same failure decides the same.
        #[test]
        fn every_decision_keeps_the_promises(
            policy in any_policy(),
            error in any_error(),
            attempt in 1u32..20,
            step in proptest::option::of(0usize..5),
            random in 0.0f64..1.0,
        ) {
            let f = Failure { error: &error, attempt, source: "orders", step, random };
            let decision = policy.decide(&f);
            prop_assert_eq!(&decision, &policy.decide(&f), "pure");
            let cap = policy.backoff.max_delay.max(policy.backoff.initial);
            match &decision {
                Decision::Retry { delay } | Decision::AwaitDependency { delay } => {
                    prop_assert!(*delay <= cap);
                    prop_assert!(error.is_retryable());
                }
                Decision::RetryTopic { topic, delay } => {
                    prop_assert!(matches!(error, HandlerError::Retryable(_)));
                    let chain = policy.retry_topics.as_ref().expect("a chain");
                    let next = step.map_or(0, |s| s + 1);
                    prop_assert_eq!(Some(delay), chain.delays.get(next));
                    prop_assert_eq!(topic, &topic_name("orders", *delay));
                }
                Decision::DeadLetter { counts_toward_quarantine } => {
                    prop_assert!(!matches!(error, HandlerError::Unavailable(_)));
                    prop_assert_eq!(*counts_toward_quarantine, error.is_retryable());
                }
                Decision::Release => {
                    prop_assert!(policy.redelivery);
                    prop_assert!(matches!(error, HandlerError::Retryable(_)));
                    prop_assert!(policy.retry_topics.is_none());
                }
            }
            if matches!(error, HandlerError::Unavailable(_)) {
                prop_assert_eq!(
                    matches!(decision, Decision::AwaitDependency { .. }),
                    attempt >= policy.backoff.max_attempts
                );
            }
        }

        /// The delays decided are the policy's own schedule: attempt `n`
        /// waits the `n`-th of `BackoffPolicy::delays` (the same random
        /// draws), and the retries stop where that iterator ends.
        #[test]
        fn blocking_retries_follow_the_backoff_schedule(
            policy in any_policy(),
            seed in any::<u64>(),
        ) {
            let policy = policy.retry_topics(None).redelivery(false);
            let draws: Vec<f64> = {
                let mut x = seed;
                (0..12)
                    .map(|_| {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (x >> 11) as f64 / (1u64 << 53) as f64
                    })
                    .collect()
            };
            let mut replay = draws.iter().copied();
            let schedule: Vec<Duration> = policy
                .backoff
                .delays(move || replay.next().unwrap_or(0.0))
                .take(11)
                .collect();
            let r = retryable();
            for (i, random) in draws.iter().take(11).enumerate() {
                let attempt = i as u32 + 1;
                let decided = policy.decide(&Failure { random: *random, ..failure(&r, attempt) });
                match schedule.get(i) {
                    Some(delay) => prop_assert_eq!(decided, Decision::Retry { delay: *delay }),
                    None => prop_assert_eq!(decided, dead_letter(true)),
                }
            }
        }
    }
}
