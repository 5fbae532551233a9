//! Which leaders the sender may send a Produce request to now (pure: `now`
//! passed in): requests in flight per broker (`max.in.flight`), and the
//! moment a broker that answered with `throttle_time_ms` (KIP-219) reads
//! requests again.
//!
//! ```text
//!  sent ──▶ in_flight + 1
//!  returned(throttle t) ──▶ in_flight - 1, closed until now + t
//!  may_send: in_flight < max and not closed
//!  carries(batch): in_flight == 0, or the batch can no longer grow, or a flush
//! ```
//!
//! Coalescing: while a request to a broker is out, a batch that can still
//! grow (not full, no newer batch behind it) waits for it to come back and
//! keeps filling meanwhile, instead of leaving alone in a request of its
//! own. At `linger.ms=0` a steady trickle then goes as one fuller request
//! per round trip rather than one tiny request per record, up to
//! `max.in.flight` of them (less broker work per record, so lower latency
//! on a busy broker; BENCHMARKS.md, session 11). Full batches still
//! pipeline up to `max.in.flight`, so bulk throughput keeps its overlap.
//!
//! A throttled leader gets nothing new: its partitions' batches stay in the
//! accumulator (growing, lingering, expiring by `delivery.timeout.ms` as
//! usual) instead of waiting in the muted connection, and other leaders go
//! on. The connection holds requests back too ([`crate::throttle`]); this
//! keeps the records where the sender can still decide about them.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::throttle::Throttle;

#[derive(Debug, Default)]
struct Broker {
    in_flight: usize,
    throttled_until: Option<Instant>,
}

/// Per-broker admission state of one sender.
#[derive(Debug)]
pub(crate) struct Brokers {
    max_in_flight: usize,
    brokers: HashMap<i32, Broker>,
}

impl Brokers {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            max_in_flight: max_in_flight.max(1),
            brokers: HashMap::new(),
        }
    }

    /// May a request go to `broker` at `now`? Not with `max.in.flight`
    /// requests out, nor before its throttle time has passed.
    pub(crate) fn may_send(&self, broker: i32, now: Instant) -> bool {
        self.brokers.get(&broker).is_none_or(|b| {
            b.in_flight < self.max_in_flight && b.throttled_until.is_none_or(|t| now >= t)
        })
    }

    /// May a request to `broker` (which [`Self::may_send`] admits) carry a
    /// batch that can still grow (`open`)? Only when nothing is in flight
    /// to it, or when flushing (`flush`, `close`): see the module's
    /// coalescing rule. A batch that cannot grow always may.
    pub(crate) fn carries(&self, broker: i32, open: bool, flush: bool) -> bool {
        !open || flush || self.brokers.get(&broker).is_none_or(|b| b.in_flight == 0)
    }

    /// A request to `broker` went out.
    pub(crate) fn sent(&mut self, broker: i32) {
        self.brokers.entry(broker).or_default().in_flight += 1;
    }

    /// A request to `broker` came back at `now` (answered, or failed: then
    /// `throttle` is none), asking for `throttle` of quiet.
    pub(crate) fn returned(&mut self, broker: i32, throttle: Throttle, now: Instant) {
        let b = self.brokers.entry(broker).or_default();
        b.in_flight = b.in_flight.saturating_sub(1);
        if let Some(until) = throttle.until(now) {
            tracing::debug!(broker, ?throttle, "produce throttled by the broker (quota)");
            b.throttled_until = Some(b.throttled_until.map_or(until, |t| t.max(until)));
        }
    }

    /// The earliest moment after `now` a throttled broker opens again: the
    /// sender wakes up then for what waits on it.
    pub(crate) fn next_open(&self, now: Instant) -> Option<Instant> {
        self.brokers
            .values()
            .filter_map(|b| b.throttled_until)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn in_flight_requests_are_capped_per_broker() {
        let now = Instant::now();
        let mut b = Brokers::new(2);
        b.sent(1);
        assert!(b.may_send(1, now));
        b.sent(1);
        assert!(!b.may_send(1, now), "two in flight to broker 1");
        assert!(b.may_send(2, now), "broker 2 is free");
        b.returned(1, Throttle::default(), now);
        assert!(b.may_send(1, now));
        assert_eq!(b.next_open(now), None, "nothing throttled");
    }

    #[test]
    fn an_open_batch_waits_for_the_request_in_flight_and_a_full_one_does_not() {
        let now = Instant::now();
        let mut b = Brokers::new(5);
        assert!(b.carries(1, true, false), "nothing in flight: it goes now");
        b.sent(1);
        assert!(b.may_send(1, now), "room for four more requests");
        assert!(!b.carries(1, true, false), "still open: it keeps filling");
        assert!(b.carries(1, false, false), "full: it pipelines");
        assert!(b.carries(1, true, true), "a flush sends everything");
        assert!(b.carries(2, true, false), "another broker is idle");
        b.returned(1, Throttle::default(), now);
        assert!(b.carries(1, true, false), "back: the open batch goes");
    }

    #[test]
    fn a_throttled_broker_gets_no_request_before_its_throttle_time() {
        let t0 = Instant::now();
        let mut b = Brokers::new(5);
        b.sent(1);
        b.sent(2);
        b.returned(1, Throttle::from_ms(200), t0);
        b.returned(2, Throttle::default(), t0);
        assert!(!b.may_send(1, t0));
        assert!(!b.may_send(1, t0 + 199 * MS), "still throttled");
        assert!(b.may_send(2, t0), "another broker goes on");
        assert_eq!(b.next_open(t0), Some(t0 + 200 * MS), "wake up then");
        assert!(b.may_send(1, t0 + 200 * MS), "free at its deadline");
        assert_eq!(b.next_open(t0 + 200 * MS), None);
    }

    #[test]
    fn a_shorter_throttle_never_shortens_a_longer_one() {
        let t0 = Instant::now();
        let mut b = Brokers::new(5);
        for _ in 0..3 {
            b.sent(1);
        }
        b.returned(1, Throttle::from_ms(500), t0);
        b.returned(1, Throttle::from_ms(100), t0 + 10 * MS);
        b.returned(1, Throttle::default(), t0 + 20 * MS);
        assert!(!b.may_send(1, t0 + 499 * MS));
        assert_eq!(b.next_open(t0 + 20 * MS), Some(t0 + 500 * MS));
        assert!(b.may_send(1, t0 + 500 * MS));
    }
}
