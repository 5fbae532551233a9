//! Retry delays and broker throttling: the one backoff type of the stack
//! below `resilience` (which keeps its own record-retry policy).
//!
//! - [`Backoff`] is a small value: the first delay, the growth factor
//!   (2 unless set), the cap, the jitter and how many retries at most.
//!   [`Backoff::delays`] turns it into an iterator of delays, growing from
//!   the first up to the cap; it ends when the retries are used up. The random source is injectable
//!   ([`Backoff::delays_with`]), so schedules are unit-tested exactly.
//! - [`Throttle`] (in [`crate::throttle`]) is its own case, not a failure:
//!   a response's `throttle_time_ms` (a quota exceeded, KIP-219) says how
//!   long the broker wants no further request from us. It never counts as
//!   a retry; [`Delays::next_after`] waits at least as long before the next
//!   one, and every connection holds its next request back that long.
//!
//! ```text
//!  retry n:   delay = min(initial × factor^(n-1), max) × (1 ± jitter)
//!  throttled: delay = max(delay, throttle_time_ms)
//! ```
//!
//! (rskafka's `backoff.rs` and `throttle.rs` are the model.)

use std::time::Duration;

use crate::throttle::Throttle;

/// Capped exponential backoff with jitter. `Copy`: a policy, not a state;
/// the state of one retry loop is its [`Delays`] iterator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// Each retry waits this many times longer than the one before (2 by
    /// default; below 1 counts as 1).
    pub factor: f64,
    /// No delay grows past this (before jitter).
    pub max: Duration,
    /// Each delay is scaled by a random factor in `[1 - jitter, 1 + jitter)`;
    /// 0 for none. Clamped to `0..=1`.
    pub jitter: f64,
    /// How many retries the iterator yields; `None`: it never ends.
    pub max_retries: Option<u32>,
}

impl Backoff {
    /// Delays doubling from `initial` up to `max`, no jitter, endless.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            factor: 2.0,
            max,
            jitter: 0.0,
            max_retries: None,
        }
    }

    /// The same delay every time.
    pub const fn constant(delay: Duration) -> Self {
        Self::exponential(delay, delay)
    }

    /// Scale each delay by a random factor in `[1 - fraction, 1 + fraction)`,
    /// so that many clients failing together do not retry together.
    pub const fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Grow each delay by `factor` instead of doubling it.
    pub const fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Yield at most `retries` delays.
    pub const fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// The delay before retry `retry` (1 for the first) without jitter.
    pub fn nominal(&self, retry: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let growths = retry.saturating_sub(1).min(1023) as i32;
        let factor = if self.factor.is_nan() {
            1.0
        } else {
            self.factor.max(1.0)
        };
        // Far out the product is infinite: `try_from_secs_f64` fails, the cap holds.
        Duration::try_from_secs_f64(self.initial.as_secs_f64() * factor.powi(growths))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The delay before retry `retry` (1 for the first), jittered by
    /// `random`, a number in `[0, 1)`.
    pub fn delay_with(&self, retry: u32, random: f64) -> Duration {
        let jitter = self.jitter.clamp(0.0, 1.0);
        let scale = 1.0 - jitter + 2.0 * jitter * random.clamp(0.0, 1.0);
        self.nominal(retry).mul_f64(scale)
    }

    /// [`Backoff::delay_with`] with the thread's random source: for a loop
    /// that keeps its own failure count (a connection slot).
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, thread_random())
    }

    /// The delays of one retry loop, jittered by the thread's random source.
    pub fn delays(&self) -> Delays<fn() -> f64> {
        self.delays_with(thread_random)
    }

    /// The delays of one retry loop, jittered by `random` (each call a
    /// number in `[0, 1)`): tests pass a fixed sequence.
    pub fn delays_with<R: FnMut() -> f64>(&self, random: R) -> Delays<R> {
        Delays {
            backoff: *self,
            retries: 0,
            random,
        }
    }
}

fn thread_random() -> f64 {
    rand::random_range(0.0..1.0)
}

/// The delays of one retry loop (see [`Backoff::delays`]).
#[derive(Debug, Clone)]
pub struct Delays<R> {
    backoff: Backoff,
    retries: u32,
    random: R,
}

impl<R> Delays<R> {
    /// How many delays were handed out so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }
}

impl<R: FnMut() -> f64> Delays<R> {
    /// The delay before the next retry when the last response asked for
    /// `throttle`: the longer of the two. `None` once the retries are used up.
    pub fn next_after(&mut self, throttle: Throttle) -> Option<Duration> {
        self.next().map(|d| d.max(throttle.duration()))
    }
}

impl<R: FnMut() -> f64> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self
            .backoff
            .max_retries
            .is_some_and(|max| self.retries >= max)
        {
            return None;
        }
        self.retries += 1;
        let random = (self.random)();
        Some(self.backoff.delay_with(self.retries, random))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::exponential(50 * MS, 1000 * MS);
        let d: Vec<Duration> = b.delays().take(7).collect();
        assert_eq!(
            d,
            [50, 100, 200, 400, 800, 1000, 1000]
                .map(|ms| ms * MS)
                .to_vec()
        );
        assert_eq!(b.nominal(10_000), 1000 * MS, "no overflow far out");
        assert_eq!(b.nominal(0), 50 * MS);
    }

    #[test]
    fn another_factor_grows_by_it() {
        let b = Backoff::exponential(100 * MS, 10_000 * MS).with_factor(3.0);
        let d: Vec<Duration> = b.delays().take(4).collect();
        assert_eq!(d, [100, 300, 900, 2700].map(|ms| ms * MS).to_vec());
        assert_eq!(b.nominal(u32::MAX), 10_000 * MS, "no overflow far out");
        let flat = Backoff::exponential(100 * MS, 10_000 * MS).with_factor(0.5);
        assert_eq!(flat.nominal(5), 100 * MS, "a factor below 1 never shrinks");
    }

    #[test]
    fn retries_are_bounded_when_asked() {
        let b = Backoff::constant(100 * MS).with_max_retries(3);
        let mut d = b.delays();
        assert_eq!(d.by_ref().count(), 3);
        assert_eq!(d.retries(), 3);
        assert_eq!(d.next(), None);
        assert_eq!(b.with_max_retries(0).delays().next(), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff::exponential(100 * MS, 100 * MS).with_jitter(0.2);
        assert_eq!(b.delay_with(1, 0.0), 80 * MS);
        assert_eq!(b.delay_with(1, 0.5), 100 * MS);
        assert!(b.delay_with(1, 0.999_999) < 120 * MS);
        let mut seq = [0.0, 0.5].into_iter().cycle();
        let d: Vec<Duration> = b.delays_with(|| seq.next().unwrap()).take(2).collect();
        assert_eq!(d, vec![80 * MS, 100 * MS]);
        for _ in 0..100 {
            let d = b.delay(1);
            assert!((80 * MS..120 * MS).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn throttling_is_its_own_case_and_never_shortens_a_delay() {
        assert!(!Throttle::from_ms(0).is_throttled());
        assert!(!Throttle::from_ms(-1).is_throttled());
        assert_eq!(Throttle::from_ms(250).duration(), 250 * MS);
        let mut d = Backoff::exponential(50 * MS, 1000 * MS).delays();
        assert_eq!(d.next_after(Throttle::from_ms(250)), Some(250 * MS));
        assert_eq!(d.next_after(Throttle::default()), Some(100 * MS));
        assert_eq!(d.next_after(Throttle::from_ms(10)), Some(200 * MS));
    }
}
