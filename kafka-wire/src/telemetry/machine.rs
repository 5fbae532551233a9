//! The KIP-714 client state machine, sans I/O: events and `now` in,
//! [`Action`]s out. It never awaits and never reads the clock; the task in
//! `telemetry.rs` runs what it asks for.
//!
//! ```text
//!                 start (broker has the APIs)          broker lacks them
//!                        │                                   │
//!                        ▼                                   ▼
//!   ┌──────────▶ SubscriptionNeeded{at} ──close──────▶ Terminated ◀─┐
//!   │                    │ at reached                        ▲       │
//!   │                    ▼                                   │       │
//!   │            SubscriptionInFlight ─ UNSUPPORTED_VERSION, │       │
//!   │                    │              INVALID_* ───────────┘       │
//!   │ empty requested    │ subscription with metrics                 │
//!   ├◀───────────────────┤ (first push at 0.5–1.5 × interval)        │
//!   │                    ▼                                           │
//!   │              PushNeeded{at} ───close──▶ TerminatingPushNeeded  │
//!   │                    │ at reached                │               │
//!   │                    ▼                           ▼               │
//!   │              PushInFlight            TerminatingPushInFlight ──┘
//!   │                    │ ok: next push at now + interval
//!   └── error code ──────┘ (UNKNOWN_SUBSCRIPTION_ID: at once)
//! ```

use std::time::Duration;

use kafka_protocol::messages::GetTelemetrySubscriptionsResponse;
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use crate::error::KafkaCode;

/// The push interval when the broker gives none (or after an error before
/// any subscription): 5 minutes, Java's `DEFAULT_PUSH_INTERVAL_MS`.
pub(crate) const DEFAULT_PUSH_INTERVAL: Duration = Duration::from_secs(300);

/// What a GetTelemetrySubscriptions answer said (KIP-714).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscription {
    /// The client instance id the broker assigned (or the one we sent).
    pub(crate) client_instance_id: [u8; 16],
    /// The subscription set's id; a push names it.
    pub(crate) subscription_id: i32,
    /// Compression types the broker accepts for pushes (we send NONE,
    /// always accepted).
    pub(crate) accepted_compression_types: Vec<i8>,
    /// How often to push.
    pub(crate) push_interval: Duration,
    /// The largest `metrics` payload a push may carry (bytes).
    pub(crate) max_bytes: usize,
    /// Sums as deltas since the last push (`true`) or cumulative.
    pub(crate) delta_temporality: bool,
    /// Metric name prefixes wanted. Empty: none (push nothing); one empty
    /// string: every metric.
    pub(crate) requested_metrics: Vec<String>,
}

impl Subscription {
    /// From a GetTelemetrySubscriptions v0 answer without an error code;
    /// `ours` is the instance id we sent (the broker answers a nil id then).
    pub(crate) fn from_response(r: &GetTelemetrySubscriptionsResponse, ours: [u8; 16]) -> Self {
        let assigned = *r.client_instance_id.as_bytes();
        let push_interval = match u64::try_from(r.push_interval_ms) {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => DEFAULT_PUSH_INTERVAL,
        };
        Subscription {
            client_instance_id: if assigned == [0; 16] { ours } else { assigned },
            subscription_id: r.subscription_id,
            accepted_compression_types: r.accepted_compression_types.clone(),
            push_interval,
            max_bytes: usize::try_from(r.telemetry_max_bytes).unwrap_or(0),
            delta_temporality: r.delta_temporality,
            requested_metrics: r
                .requested_metrics
                .iter()
                .map(StrBytes::to_string)
                .collect(),
        }
    }

    /// Does the subscription want the metric `name` (a prefix match)?
    pub(crate) fn wants(&self, name: &str) -> bool {
        self.requested_metrics
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
    }
}

/// How a request ended, as the machine needs to know it: `Ok` is an
/// answer with error code 0.
pub(crate) type Reply<T> = Result<T, Failure>;

/// A request that did not end well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Answered with this error code.
    Code(i16),
    /// Not answered: connection lost, timeout. Asked again later.
    Failed,
    /// The broker does not speak the API (not in its ApiVersions): stop.
    Unsupported,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send GetTelemetrySubscriptions with this client instance id (nil the
    /// first time), then report with [`Machine::on_subscription`].
    GetSubscription { client_instance_id: [u8; 16] },
    /// Send a PushTelemetry for `subscription` (metrics filtered by its
    /// prefixes, within its max bytes), then report with [`Machine::on_push`].
    Push {
        subscription: Subscription,
        terminating: bool,
    },
    /// Nothing before this instant (or a close).
    WaitUntil(Instant),
    /// A request is out; wait for its reply.
    AwaitReply,
    /// Telemetry is over for this client: the task may end.
    Done,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    SubscriptionNeeded { at: Instant },
    SubscriptionInFlight,
    PushNeeded { at: Instant, sub: Subscription },
    PushInFlight { sub: Subscription },
    TerminatingPushNeeded { sub: Subscription },
    TerminatingPushInFlight,
    Terminated,
}

/// The KIP-714 client: which request is next, and when.
pub(crate) struct Machine {
    state: State,
    /// Ours once the broker assigned it; nil before.
    client_instance_id: [u8; 16],
    /// The last push interval known (retry delay after errors).
    interval: Duration,
    /// `close` was called: no more regular pushes.
    closing: bool,
    /// Uniform in [0, 1): the first push's jitter (injectable for tests).
    random: Box<dyn FnMut() -> f64 + Send>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("state", &self.state)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// A client that asks for its subscription at `now`; or, when the
    /// broker does not advertise both telemetry APIs (`supported` false),
    /// one that never sends anything.
    pub(crate) fn new(
        now: Instant,
        supported: bool,
        random: Box<dyn FnMut() -> f64 + Send>,
    ) -> Self {
        Machine {
            state: if supported {
                State::SubscriptionNeeded { at: now }
            } else {
                State::Terminated
            },
            client_instance_id: [0; 16],
            interval: DEFAULT_PUSH_INTERVAL,
            closing: false,
            random,
        }
    }

    /// The state's name, for logs and test counters.
    pub(crate) fn state_name(&self) -> &'static str {
        match self.state {
            State::SubscriptionNeeded { .. } => "subscription-needed",
            State::SubscriptionInFlight => "subscription-in-progress",
            State::PushNeeded { .. } => "push-needed",
            State::PushInFlight { .. } => "push-in-progress",
            State::TerminatingPushNeeded { .. } => "terminating-push-needed",
            State::TerminatingPushInFlight => "terminating-push-in-progress",
            State::Terminated => "terminated",
        }
    }

    /// The next thing to do at `now`. A due request moves to in-flight.
    pub(crate) fn poll_action(&mut self, now: Instant) -> Action {
        match &self.state {
            State::SubscriptionNeeded { at } if now < *at => Action::WaitUntil(*at),
            State::SubscriptionNeeded { .. } => {
                self.state = State::SubscriptionInFlight;
                Action::GetSubscription {
                    client_instance_id: self.client_instance_id,
                }
            }
            State::PushNeeded { at, .. } if now < *at => Action::WaitUntil(*at),
            State::PushNeeded { sub, .. } => {
                let sub = sub.clone();
                self.state = State::PushInFlight { sub: sub.clone() };
                Action::Push {
                    subscription: sub,
                    terminating: false,
                }
            }
            State::TerminatingPushNeeded { sub } => {
                let sub = sub.clone();
                self.state = State::TerminatingPushInFlight;
                Action::Push {
                    subscription: sub,
                    terminating: true,
                }
            }
            State::SubscriptionInFlight
            | State::PushInFlight { .. }
            | State::TerminatingPushInFlight => Action::AwaitReply,
            State::Terminated => Action::Done,
        }
    }

    /// The client is closing: one terminating push if a subscription wants
    /// metrics (now, or when the request in flight is answered), then done.
    pub(crate) fn close(&mut self) {
        self.closing = true;
        self.state = match std::mem::replace(&mut self.state, State::Terminated) {
            State::SubscriptionNeeded { .. } => State::Terminated,
            State::PushNeeded { sub, .. } => State::TerminatingPushNeeded { sub },
            other => other,
        };
    }

    /// The GetTelemetrySubscriptions reply.
    pub(crate) fn on_subscription(&mut self, now: Instant, reply: Reply<Subscription>) {
        if self.state != State::SubscriptionInFlight {
            return;
        }
        self.state = match reply {
            Ok(sub) => {
                self.client_instance_id = sub.client_instance_id;
                self.interval = sub.push_interval;
                if sub.requested_metrics.is_empty() {
                    // No metrics wanted: push nothing, ask again each
                    // interval (KIP-714).
                    if self.closing {
                        State::Terminated
                    } else {
                        State::SubscriptionNeeded {
                            at: now + sub.push_interval,
                        }
                    }
                } else if self.closing {
                    State::TerminatingPushNeeded { sub }
                } else {
                    // The first push after a subscription is spread over
                    // 0.5–1.5 × the interval, so clients started together
                    // do not push together (KIP-714).
                    let factor = 0.5 + (self.random)().clamp(0.0, 1.0);
                    let at = now + sub.push_interval.mul_f64(factor);
                    State::PushNeeded { at, sub }
                }
            }
            Err(failure) => self.after_error(now, failure),
        };
    }

    /// The PushTelemetry reply.
    pub(crate) fn on_push(&mut self, now: Instant, reply: Reply<()>) {
        self.state = match std::mem::replace(&mut self.state, State::Terminated) {
            State::TerminatingPushInFlight => State::Terminated,
            State::PushInFlight { sub } => match reply {
                Ok(()) if self.closing => State::TerminatingPushNeeded { sub },
                Ok(()) => State::PushNeeded {
                    at: now + sub.push_interval,
                    sub,
                },
                Err(failure) => self.after_error(now, failure),
            },
            other => other,
        };
    }

    /// Where an error leaves the client, as Java's
    /// `ClientTelemetryUtils.maybeFetchErrorIntervalMs` decides.
    fn after_error(&self, now: Instant, failure: Failure) -> State {
        if self.closing {
            return State::Terminated;
        }
        let code = match failure {
            Failure::Unsupported => return State::Terminated,
            Failure::Failed => {
                return State::SubscriptionNeeded {
                    at: now + self.interval,
                }
            }
            Failure::Code(code) => code,
        };
        match KafkaCode::try_from_code(code) {
            // The subscription changed, or our compression is refused: get
            // the new one at once.
            Some(KafkaCode::UnknownSubscriptionId | KafkaCode::UnsupportedCompressionType) => {
                State::SubscriptionNeeded { at: now }
            }
            // Too large or throttled: again after an interval.
            Some(KafkaCode::TelemetryTooLarge | KafkaCode::ThrottlingQuotaExceeded) | None => {
                State::SubscriptionNeeded {
                    at: now + self.interval,
                }
            }
            // Retrying cannot help (UNSUPPORTED_VERSION, INVALID_REQUEST,
            // INVALID_RECORD, and codes KIP-714 does not name): telemetry
            // stops for this client.
            Some(_) => State::Terminated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn sub(requested: &[&str]) -> Subscription {
        Subscription {
            client_instance_id: [7; 16],
            subscription_id: 42,
            accepted_compression_types: vec![],
            push_interval: Duration::from_secs(10),
            max_bytes: 1 << 20,
            delta_temporality: false,
            requested_metrics: requested.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn machine(now: Instant, jitter: f64) -> Machine {
        Machine::new(now, true, Box::new(move || jitter))
    }

    /// Drive to the first regular push: returns when it is due.
    fn subscribed(m: &mut Machine, now: Instant, s: Subscription) -> Instant {
        assert_eq!(
            m.poll_action(now),
            Action::GetSubscription {
                client_instance_id: [0; 16]
            }
        );
        assert_eq!(m.poll_action(now), Action::AwaitReply);
        m.on_subscription(now, Ok(s));
        match m.poll_action(now) {
            Action::WaitUntil(at) => at,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_broker_without_the_apis_is_never_asked() {
        let now = Instant::now();
        let mut m = Machine::new(now, false, Box::new(|| 0.5));
        assert_eq!(m.poll_action(now), Action::Done);
        m.close();
        assert_eq!(m.poll_action(now + 3600 * SECOND), Action::Done);
    }

    #[test]
    fn first_push_is_jittered_within_half_to_one_and_a_half_intervals() {
        let now = Instant::now();
        for (jitter, expected_ms) in [(0.0, 5_000), (0.5, 10_000), (0.999_999, 14_999)] {
            let mut m = machine(now, jitter);
            let at = subscribed(&mut m, now, sub(&[""]));
            let waited = (at - now).as_millis();
            assert!(
                (5_000..15_000).contains(&waited),
                "jitter {jitter}: {waited} ms"
            );
            assert_eq!(waited, expected_ms, "jitter {jitter}");
        }
        // Out-of-range randomness is clamped into the bounds.
        let mut m = machine(now, 7.0);
        let at = subscribed(&mut m, now, sub(&[""]));
        assert!(at - now <= Duration::from_millis(15_000));
    }

    #[test]
    fn pushes_follow_at_the_interval_and_carry_the_instance_id_after() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        let first = subscribed(&mut m, now, sub(&["org.apache.kafka.consumer."]));
        assert_eq!(m.poll_action(first - SECOND), Action::WaitUntil(first));
        let Action::Push {
            subscription,
            terminating,
        } = m.poll_action(first)
        else {
            panic!("expected a push")
        };
        assert!(!terminating);
        assert_eq!(subscription.subscription_id, 42);
        assert_eq!(m.poll_action(first), Action::AwaitReply);
        m.on_push(first, Ok(()));
        assert_eq!(
            m.poll_action(first),
            Action::WaitUntil(first + Duration::from_secs(10))
        );
        // An error that asks for a new subscription sends our id.
        let second = first + Duration::from_secs(10);
        assert!(matches!(m.poll_action(second), Action::Push { .. }));
        m.on_push(
            second,
            Err(Failure::Code(KafkaCode::TelemetryTooLarge.code())),
        );
        assert_eq!(
            m.poll_action(second),
            Action::WaitUntil(second + Duration::from_secs(10))
        );
        assert_eq!(
            m.poll_action(second + Duration::from_secs(10)),
            Action::GetSubscription {
                client_instance_id: [7; 16]
            }
        );
    }

    #[test]
    fn unknown_subscription_id_gets_the_subscription_again_at_once() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        let at = subscribed(&mut m, now, sub(&[""]));
        assert!(matches!(m.poll_action(at), Action::Push { .. }));
        m.on_push(
            at,
            Err(Failure::Code(KafkaCode::UnknownSubscriptionId.code())),
        );
        assert_eq!(
            m.poll_action(at),
            Action::GetSubscription {
                client_instance_id: [7; 16]
            }
        );
    }

    #[test]
    fn an_empty_subscription_costs_one_request_per_interval_and_no_push() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        let mut t = now;
        for round in 0..5 {
            assert!(
                matches!(m.poll_action(t), Action::GetSubscription { .. }),
                "round {round}"
            );
            m.on_subscription(t, Ok(sub(&[])));
            let next = t + Duration::from_secs(10);
            assert_eq!(m.poll_action(t), Action::WaitUntil(next));
            t = next;
        }
        // Closing without a wanted metric sends nothing.
        m.close();
        assert_eq!(m.poll_action(t), Action::Done);
    }

    #[test]
    fn unsupported_version_and_invalid_request_stop_telemetry() {
        for code in [
            KafkaCode::UnsupportedVersion,
            KafkaCode::InvalidRequest,
            KafkaCode::InvalidRecord,
        ] {
            let now = Instant::now();
            let mut m = machine(now, 0.5);
            let at = subscribed(&mut m, now, sub(&[""]));
            assert!(matches!(m.poll_action(at), Action::Push { .. }));
            m.on_push(at, Err(Failure::Code(code.code())));
            assert_eq!(m.poll_action(at), Action::Done, "{code:?}");
        }
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        assert!(matches!(m.poll_action(now), Action::GetSubscription { .. }));
        m.on_subscription(now, Err(Failure::Unsupported));
        assert_eq!(m.poll_action(now), Action::Done);
    }

    #[test]
    fn a_lost_connection_asks_again_after_the_interval() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        assert!(matches!(m.poll_action(now), Action::GetSubscription { .. }));
        m.on_subscription(now, Err(Failure::Failed));
        assert_eq!(
            m.poll_action(now),
            Action::WaitUntil(now + DEFAULT_PUSH_INTERVAL)
        );
    }

    #[test]
    fn close_sends_one_terminating_push_then_nothing() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        let at = subscribed(&mut m, now, sub(&[""]));
        m.close();
        // Before the interval is up: the terminating push goes at once.
        let Action::Push { terminating, .. } = m.poll_action(now) else {
            panic!("expected the terminating push")
        };
        assert!(terminating);
        assert_eq!(m.poll_action(now), Action::AwaitReply);
        m.on_push(
            now,
            Err(Failure::Code(KafkaCode::UnknownSubscriptionId.code())),
        );
        assert_eq!(m.poll_action(at), Action::Done);
        m.close();
        assert_eq!(m.poll_action(at), Action::Done);
    }

    #[test]
    fn close_during_a_push_terminates_after_its_reply() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        let at = subscribed(&mut m, now, sub(&[""]));
        assert!(matches!(
            m.poll_action(at),
            Action::Push {
                terminating: false,
                ..
            }
        ));
        m.close();
        assert_eq!(m.poll_action(at), Action::AwaitReply);
        m.on_push(at, Ok(()));
        assert!(matches!(
            m.poll_action(at),
            Action::Push {
                terminating: true,
                ..
            }
        ));
        m.on_push(at, Ok(()));
        assert_eq!(m.poll_action(at), Action::Done);
    }

    #[test]
    fn close_while_asking_for_the_subscription() {
        let now = Instant::now();
        let mut m = machine(now, 0.5);
        assert!(matches!(m.poll_action(now), Action::GetSubscription { .. }));
        m.close();
        m.on_subscription(now, Ok(sub(&[""])));
        assert!(matches!(
            m.poll_action(now),
            Action::Push {
                terminating: true,
                ..
            }
        ));
        let mut m = machine(now, 0.5);
        m.close();
        assert_eq!(m.poll_action(now), Action::Done);
    }

    #[test]
    fn prefixes_select_metrics() {
        let s = sub(&["org.apache.kafka.consumer.fetch"]);
        assert!(s.wants("org.apache.kafka.consumer.fetch.manager.records.lag.max"));
        assert!(!s.wants("org.apache.kafka.producer.record.send.total"));
        assert!(sub(&[""]).wants("anything"));
        assert!(!sub(&[]).wants("anything"));
    }
}
