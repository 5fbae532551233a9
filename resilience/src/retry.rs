//! Retry as a small value type: a backoff policy is an iterator of delays
//! with an injectable random source, and a handler error says whether a
//! retry can help. What a failure leads to is decided in one place,
//! [`FailurePolicy::decide`](crate::failure::FailurePolicy::decide), from
//! both: blocking retries (only the record's partition or key waits),
//! retry topics, the DLT.

use std::time::Duration;

use kafka_wire::Backoff;

/// How a handler failed: decides retry, dead-letter, or both after attempts.
///
/// - [`Retryable`](HandlerError::Retryable): retried with the
///   [`BackoffPolicy`] (default: 3 attempts in all, 1 s then 2 s apart; or
///   through the retry topics if configured), then dead-lettered.
/// - [`Unavailable`](HandlerError::Unavailable): a dependency is down (the
///   database, a downstream service); the record is fine. Retried for as
///   long as it takes (the policy's delays, growing on to `max_delay`), never
///   dead-lettered and never sent down retry topics: its partition (or
///   key) waits, and backpressure pauses fetching as the queues fill.
/// - [`NonRetryable`](HandlerError::NonRetryable) and
///   [`Deserialization`](HandlerError::Deserialization): dead-lettered at once.
///
/// Dead-lettering needs a DLT producer (`ProcessorConfig::dead_letter`).
/// Without one, a record that cannot be handled **stalls its partition**
/// (logged at error level) rather than be committed past: nothing is lost,
/// and nothing behind it on that partition (or key) is handled.
///
/// `?` works in a handler: `From` turns [`std::io::Error`] and
/// [`kafka_wire::Error`] into `Retryable` (a Kafka error that
/// retrying cannot fix into `NonRetryable`); decode errors into
/// `Deserialization`, dead-lettered on the first attempt: JSON
/// ([`serde_json::Error`], but an I/O error while reading is `Retryable`),
/// UTF-8 ([`std::str::Utf8Error`], [`std::string::FromUtf8Error`]) and
/// numbers ([`std::num::ParseIntError`], [`std::num::ParseFloatError`]);
/// and boxed errors into `Retryable` (the runtime cannot tell what they
/// are, so a decode error boxed by `.map_err(Box::from)` *is* retried:
/// use `?` on it directly, or [`HandlerError::fatal`]). For anything
/// else, [`HandlerError::retryable`] and [`HandlerError::fatal`] take any
/// `Display`:
///
/// ```
/// use resilience::HandlerError;
/// fn parse(v: &[u8]) -> Result<u64, HandlerError> {
///     let text = std::str::from_utf8(v)?;              // Deserialization
///     let n: u64 = text.trim().parse()?;                // Deserialization
///     if n == 0 {
///         return Err(HandlerError::fatal("order id 0")); // NonRetryable
///     }
///     Ok(n)
/// }
/// assert!(matches!(parse(b"0"), Err(HandlerError::NonRetryable(_))));
/// assert!(matches!(parse(b"x"), Err(HandlerError::Deserialization(_))));
///
/// fn order_id(v: &[u8]) -> Result<u64, HandlerError> {
///     let order: serde_json::Value = serde_json::from_slice(v)?; // Deserialization
///     order["id"].as_u64().ok_or(HandlerError::fatal("no id"))
/// }
/// assert_eq!(order_id(br#"{"id": 7}"#), Ok(7));
/// assert!(matches!(order_id(b"{not json"), Err(HandlerError::Deserialization(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Worth retrying (timeouts, unavailable dependencies). The default.
    Retryable(String),
    /// Retrying cannot help (validation failure, poison record): dead-letter now.
    NonRetryable(String),
    /// The bytes could not be decoded: dead-letter now.
    Deserialization(String),
    /// A dependency is down; the record is fine: retry until it is back,
    /// never dead-letter. A PostgreSQL connection failure converts to it.
    Unavailable(String),
}

impl HandlerError {
    /// Any other error is retryable unless the handler says otherwise.
    pub fn from_display(e: impl std::fmt::Display) -> Self {
        HandlerError::Retryable(e.to_string())
    }

    /// Worth retrying (a timeout, a dependency down): retried, then
    /// dead-lettered.
    pub fn retryable(e: impl std::fmt::Display) -> Self {
        HandlerError::Retryable(e.to_string())
    }

    /// A dependency is down (a lost connection, a refused one): retried
    /// until it is back, never dead-lettered.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        HandlerError::Unavailable(e.to_string())
    }

    /// Retrying cannot help (invalid data, a poison record): dead-lettered
    /// at once.
    pub fn fatal(e: impl std::fmt::Display) -> Self {
        HandlerError::NonRetryable(e.to_string())
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HandlerError::Retryable(_) | HandlerError::Unavailable(_)
        )
    }

    /// A short class name for the DLT's exception header.
    pub fn class(&self) -> &'static str {
        match self {
            HandlerError::Retryable(_) => "Retryable",
            HandlerError::NonRetryable(_) => "NonRetryable",
            HandlerError::Deserialization(_) => "Deserialization",
            HandlerError::Unavailable(_) => "Unavailable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retryable(m)
            | HandlerError::NonRetryable(m)
            | HandlerError::Deserialization(m)
            | HandlerError::Unavailable(m) => m,
        }
    }
}

impl std::error::Error for HandlerError {}

impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        HandlerError::Retryable(e.to_string())
    }
}

impl From<kafka_wire::Error> for HandlerError {
    /// `NonRetryable` when the error's action is fatal, else `Retryable`.
    fn from(e: kafka_wire::Error) -> Self {
        match e.action() {
            kafka_wire::ErrorAction::Fatal => HandlerError::NonRetryable(e.to_string()),
            _ => HandlerError::Retryable(e.to_string()),
        }
    }
}

/// A database error, classified once for the whole crate by
/// [`crate::dedup::postgres::classify`]: `Unavailable` when the server
/// cannot be reached or refuses work for now (an outage waits, never
/// dead-letters), `NonRetryable` for what the value itself can never
/// satisfy (classes 22 and 54), `Retryable` otherwise.
#[cfg(feature = "postgres")]
impl From<tokio_postgres::Error> for HandlerError {
    fn from(e: tokio_postgres::Error) -> Self {
        crate::dedup::postgres::classify(&e)
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for HandlerError {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        HandlerError::Retryable(e.to_string())
    }
}

macro_rules! deserialization_from {
    ($($t:ty),*) => {$(
        impl From<$t> for HandlerError {
            fn from(e: $t) -> Self {
                HandlerError::Deserialization(e.to_string())
            }
        }
    )*};
}
deserialization_from!(
    std::str::Utf8Error,
    std::string::FromUtf8Error,
    std::num::ParseIntError,
    std::num::ParseFloatError
);

/// A JSON decode error: `Deserialization` (dead-lettered at once, as
/// retrying the same bytes cannot help), except an I/O error of the reader
/// (`serde_json::from_reader`), which is `Retryable`.
impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Io => HandlerError::Retryable(e.to_string()),
            _ => HandlerError::Deserialization(format!("JSON: {e}")),
        }
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class(), self.message())
    }
}

/// A handler's retry policy: how often and how long apart a failing record
/// is tried again before it goes to the dead-letter topic. Defaults match
/// the seeds: 1 s initial, ×2, 3 attempts in all (so 2 retries: 1 s then
/// 2 s), 30 s cap, ±20 % jitter. The delays are kafka-wire's
/// [`Backoff`] ([`BackoffPolicy::as_backoff`]), the
/// one backoff of the stack, with the cap also holding after jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub multiplier: f64,
    pub max_delay: Duration,
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// Fraction of each delay to randomise, in [0, 1].
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            max_attempts: 3,
            jitter: 0.2,
        }
    }
}

impl BackoffPolicy {
    /// The delays before attempt 2, 3, …; `random` yields values in [0, 1).
    pub fn delays<R: FnMut() -> f64>(&self, random: R) -> Delays<R> {
        Delays {
            inner: self.as_backoff().delays_with(random),
            max_delay: self.max_delay,
        }
    }

    /// The same schedule as a kafka-wire [`Backoff`]: `max_attempts - 1`
    /// retries.
    pub fn as_backoff(&self) -> Backoff {
        Backoff::exponential(self.initial, self.max_delay)
            .with_factor(self.multiplier)
            .with_jitter(self.jitter)
            .with_max_retries(self.max_attempts.saturating_sub(1))
    }

    /// `retries` retries `delay` apart, no jitter (Spring's `FixedBackOff`):
    /// `fixed(Duration::from_millis(500), 3)` tries a record 4 times in all,
    /// then dead-letters it.
    pub fn fixed(delay: Duration, retries: u32) -> Self {
        Self {
            initial: delay,
            multiplier: 1.0,
            max_delay: delay,
            max_attempts: retries.saturating_add(1),
            jitter: 0.0,
        }
    }

    /// `retries` retries after `initial`, `initial × 2`, `initial × 4`, …,
    /// no jitter (Spring's `ExponentialBackOff`, the seeds' "1, 2 and 4 s"):
    /// `exponential(Duration::from_secs(1), 3)` waits 1 s, 2 s, 4 s, then
    /// dead-letters. Delays are capped at 30 s.
    pub fn exponential(initial: Duration, retries: u32) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max_delay: Duration::from_secs(30).max(initial),
            max_attempts: retries.saturating_add(1),
            jitter: 0.0,
        }
    }

    /// Retry for ever: `initial`, doubling up to `max_delay`, no jitter.
    pub fn forever(initial: Duration, max_delay: Duration) -> Self {
        Self {
            initial,
            multiplier: 2.0,
            max_delay,
            max_attempts: u32::MAX,
            jitter: 0.0,
        }
    }
}

/// The runtime's own retries (polling again, a failed transaction, the
/// idempotency store, the DLT): 50 ms doubling to 5 s, for ever, exact
/// (jitter is for handler retries).
pub(crate) const RUNTIME_BACKOFF: Backoff =
    Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5));

/// The delays of one of the runtime's own retry loops ([`RUNTIME_BACKOFF`]).
pub(crate) fn runtime_delays() -> kafka_wire::Delays<fn() -> f64> {
    RUNTIME_BACKOFF.delays()
}

/// Iterator of retry delays (see [`BackoffPolicy::delays`]): kafka-wire's,
/// capped at `max_delay` after jitter too.
#[derive(Debug, Clone)]
pub struct Delays<R> {
    inner: kafka_wire::Delays<R>,
    max_delay: Duration,
}

impl<R: FnMut() -> f64> Iterator for Delays<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.inner.next().map(|d| d.min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A handler that decodes JSON with `?` (what a new user writes first):
    /// bad JSON is poison, so the policy dead-letters it after the first
    /// attempt instead of retrying the same bytes (issue 35, item 10).
    #[tokio::test]
    async fn question_mark_on_bad_json_dead_letters_after_one_attempt() {
        use crate::failure::{Decision, Failure, FailurePolicy};
        use crate::Handler;
        use consumer_core::TopicPartition;
        use kafka_wire::records::Record;

        let handler = crate::handler_fn(|_tp, record: Record| async move {
            let body = record.value.unwrap_or_default();
            let _order: serde_json::Value = serde_json::from_slice(&body)?;
            Ok(())
        });
        let record = |value: &'static [u8]| Record {
            offset: 0,
            timestamp: 0,
            key: None,
            value: Some(bytes::Bytes::from_static(value)),
            headers: Vec::new(),
        };
        let tp = TopicPartition::new("orders", 0);
        assert_eq!(handler.handle(&tp, &record(br#"{"id":1}"#)).await, Ok(()));
        let err = handler
            .handle(&tp, &record(b"{\"id\": oops"))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HandlerError::Deserialization(m) if m.contains("JSON")),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        let policy = FailurePolicy::new(BackoffPolicy::default()); // 3 attempts
        let decision = policy.decide(&Failure {
            error: &err,
            attempt: 1,
            source: "orders",
            step: None,
            random: 0.5,
        });
        assert_eq!(
            decision,
            Decision::DeadLetter {
                counts_toward_quarantine: false
            },
            "bad JSON goes to the DLT on its first failure"
        );
    }

    #[test]
    fn decode_errors_are_not_retryable_and_a_reader_failure_is() {
        let bytes = std::hint::black_box(vec![0xff]);
        let utf8 = std::str::from_utf8(&bytes).unwrap_err();
        let from_utf8 = String::from_utf8(bytes).unwrap_err();
        let int = "x".parse::<i32>().unwrap_err();
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        for e in [
            HandlerError::from(utf8),
            HandlerError::from(from_utf8),
            HandlerError::from(int),
            HandlerError::from(json),
        ] {
            assert!(matches!(e, HandlerError::Deserialization(_)), "{e:?}");
        }
        struct Broken;
        impl std::io::Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let io = serde_json::from_reader::<_, serde_json::Value>(Broken).unwrap_err();
        assert!(HandlerError::from(io).is_retryable());
    }

    #[test]
    fn seeds_defaults_give_one_then_two_seconds() {
        let d: Vec<Duration> = BackoffPolicy::default().delays(|| 0.5).collect();
        assert_eq!(d, [Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[test]
    fn fixed_and_exponential_count_retries_not_attempts() {
        let fixed = BackoffPolicy::fixed(Duration::from_millis(500), 3);
        let d: Vec<Duration> = fixed.delays(|| 0.9).collect();
        assert_eq!(d, [Duration::from_millis(500); 3], "3 retries, no jitter");
        assert_eq!(fixed.max_attempts, 4);
        let seed = BackoffPolicy::exponential(Duration::from_secs(1), 3);
        let d: Vec<Duration> = seed.delays(|| 0.9).collect();
        assert_eq!(
            d,
            [1, 2, 4].map(Duration::from_secs),
            "the seeds' 1, 2, 4 s"
        );
    }

    #[test]
    fn forever_doubles_to_the_cap_and_keeps_going() {
        let d: Vec<Duration> =
            BackoffPolicy::forever(Duration::from_millis(50), Duration::from_secs(5))
                .delays(|| 0.0)
                .take(200)
                .collect();
        assert_eq!(d[..3], [50, 100, 200].map(Duration::from_millis));
        assert_eq!(d.len(), 200, "never runs out");
        assert_eq!(d[199], Duration::from_secs(5), "capped, no overflow");
    }

    #[test]
    fn unknown_errors_are_retryable_and_unavailable_is_its_own_class() {
        assert!(
            HandlerError::from_display("anything").is_retryable(),
            "unknown errors are retryable"
        );
        let down = HandlerError::unavailable("connection refused");
        assert_eq!(down.class(), "Unavailable");
        assert!(down.is_retryable());
    }

    proptest! {
        #[test]
        fn delays_are_bounded_and_counted(
            initial_ms in 1u64..5_000, mult in 1.0f64..4.0, max_ms in 1u64..60_000,
            attempts in 1u32..10, jitter in 0.0f64..1.0, seed in any::<u64>()
        ) {
            let p = BackoffPolicy { initial: Duration::from_millis(initial_ms), multiplier: mult,
                max_delay: Duration::from_millis(max_ms), max_attempts: attempts, jitter };
            let mut x = seed;
            let rng = move || { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); (x >> 11) as f64 / (1u64 << 53) as f64 };
            let d: Vec<Duration> = p.delays(rng).collect();
            prop_assert_eq!(d.len() as u32, attempts - 1);
            for delay in d { prop_assert!(delay <= p.max_delay); }
        }
    }
}
