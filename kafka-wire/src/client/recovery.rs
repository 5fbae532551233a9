//! KIP-899 and KIP-1102: whom a metadata refresh asks, and when it
//! rebootstraps. Sans-IO: events and `now` go in, a [`Plan`] comes out;
//! [`Client::refresh_metadata`] carries it out.
//!
//! ```text
//!   metadata.recovery.strategy=rebootstrap (the default)
//!
//!   Healthy ──refresh starts──▶ Attempting { since }       (Java's metadataAttemptStartMs)
//!      ▲                          │ ask: known brokers, then bootstrap addresses
//!      │ metadata merged          │ (every known broker failing is a rebootstrap of
//!      ├──────────────────────────┤  its own: KIP-899)
//!      │                          │ now - since > rebootstrap.trigger.ms,
//!      │                          │ or a broker answered REBOOTSTRAP_REQUIRED (129)
//!      │                          ▼
//!      └────────────────── Rebootstrap: ask the bootstrap addresses alone, their
//!                          connections dropped first (names resolved anew);
//!                          since = now, so a failed one waits a trigger again
//!
//!   metadata.recovery.strategy=none: bootstrap addresses until the first metadata,
//!   the known brokers alone after it; 129 is an error.
//! ```
//!
//! The brokers that left the metadata are dropped when the answer is
//! merged (`Metadata::merge` replaces the broker list; the client drops
//! their connections).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::MetadataRecoveryStrategy;

/// Why a refresh rebootstraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// A broker answered REBOOTSTRAP_REQUIRED (KIP-1102).
    Requested,
    /// Refreshes have been failing this long, more than
    /// `metadata.recovery.rebootstrap.trigger.ms` (KIP-1102).
    NoMetadataFor(Duration),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Requested => f.write_str("a broker answered REBOOTSTRAP_REQUIRED"),
            Why::NoMetadataFor(d) => write!(
                f,
                "no metadata for {} ms (metadata.recovery.rebootstrap.trigger.ms)",
                d.as_millis()
            ),
        }
    }
}

/// What one refresh does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Whom to ask, in order: broker ids (ascending), and the bootstrap
    /// addresses as pseudo ids -1, -2, … in their configured order.
    pub(crate) ask: Vec<i32>,
    /// Set when this refresh is a rebootstrap.
    pub(crate) rebootstrap: Option<Why>,
}

/// The recovery state between refreshes.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    /// When the current run of refreshes without metadata began; `None`
    /// after a success.
    attempting_since: Option<Instant>,
    /// A broker answered REBOOTSTRAP_REQUIRED; the next plan rebootstraps.
    requested: bool,
}

impl Recovery {
    /// Whom the refresh at `now` asks, knowing brokers `known` (from
    /// metadata; empty before the first) and `bootstrap` addresses.
    pub(crate) fn plan(
        &self,
        strategy: MetadataRecoveryStrategy,
        trigger: Duration,
        known: &[i32],
        bootstrap: usize,
        now: Instant,
    ) -> Plan {
        let bootstrap_ids = (0..bootstrap).map(super::bootstrap_id);
        let mut known = known.to_vec();
        known.sort_unstable();
        if known.is_empty() {
            // The first metadata (or none was ever merged): every strategy.
            return Plan {
                ask: bootstrap_ids.collect(),
                rebootstrap: None,
            };
        }
        match strategy {
            MetadataRecoveryStrategy::None => Plan {
                ask: known,
                rebootstrap: None,
            },
            MetadataRecoveryStrategy::Rebootstrap => {
                let why = if self.requested {
                    Some(Why::Requested)
                } else {
                    self.attempting_since
                        .map(|since| now.saturating_duration_since(since))
                        .filter(|&failing| failing > trigger)
                        .map(Why::NoMetadataFor)
                };
                match why {
                    Some(why) => Plan {
                        ask: bootstrap_ids.collect(),
                        rebootstrap: Some(why),
                    },
                    None => Plan {
                        ask: known.into_iter().chain(bootstrap_ids).collect(),
                        rebootstrap: None,
                    },
                }
            }
        }
    }

    /// A refresh starts at `now` (the run of attempts starts here
    /// unless one is already running).
    pub(crate) fn attempt(&mut self, now: Instant) {
        self.attempting_since.get_or_insert(now);
    }

    /// The refresh at `now` carries out a rebootstrap its plan named:
    /// the request is used up, and the run starts again at `now`.
    pub(crate) fn rebootstrapping(&mut self, now: Instant) {
        self.requested = false;
        self.attempting_since = Some(now);
    }

    /// A broker answered REBOOTSTRAP_REQUIRED.
    pub(crate) fn rebootstrap_required(&mut self) {
        self.requested = true;
    }

    /// Metadata was merged.
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGER: Duration = Duration::from_secs(300);
    const REBOOTSTRAP: MetadataRecoveryStrategy = MetadataRecoveryStrategy::Rebootstrap;
    const NONE: MetadataRecoveryStrategy = MetadataRecoveryStrategy::None;

    fn plan(r: &Recovery, s: MetadataRecoveryStrategy, known: &[i32], now: Instant) -> Plan {
        r.plan(s, TRIGGER, known, 2, now)
    }

    fn asks(ask: &[i32]) -> Plan {
        Plan {
            ask: ask.to_vec(),
            rebootstrap: None,
        }
    }

    #[test]
    fn the_first_metadata_comes_from_the_bootstrap_addresses_under_either_strategy() {
        let r = Recovery::default();
        let t0 = Instant::now();
        assert_eq!(plan(&r, REBOOTSTRAP, &[], t0), asks(&[-1, -2]));
        assert_eq!(plan(&r, NONE, &[], t0), asks(&[-1, -2]));
    }

    #[test]
    fn known_brokers_come_first_then_the_bootstrap_addresses_unless_none() {
        let r = Recovery::default();
        let t0 = Instant::now();
        assert_eq!(
            plan(&r, REBOOTSTRAP, &[3, 1, 2], t0),
            asks(&[1, 2, 3, -1, -2]),
            "KIP-899: every known broker failing falls through to bootstrap"
        );
        assert_eq!(
            plan(&r, NONE, &[3, 1, 2], t0),
            asks(&[1, 2, 3]),
            "none: never the bootstrap addresses after the first metadata"
        );
    }

    #[test]
    fn refreshes_failing_past_the_trigger_rebootstrap_once_then_wait_a_trigger_again() {
        let mut r = Recovery::default();
        let t0 = Instant::now();
        r.attempt(t0);
        // Still failing at t0 + trigger (not past it): the usual order.
        r.attempt(t0 + TRIGGER);
        assert_eq!(
            plan(&r, REBOOTSTRAP, &[1, 2], t0 + TRIGGER),
            asks(&[1, 2, -1, -2])
        );
        // Past it: the bootstrap addresses alone.
        let t1 = t0 + TRIGGER + Duration::from_millis(1);
        r.attempt(t1);
        let p = plan(&r, REBOOTSTRAP, &[1, 2], t1);
        assert_eq!(p.ask, vec![-1, -2]);
        assert_eq!(
            p.rebootstrap,
            Some(Why::NoMetadataFor(TRIGGER + Duration::from_millis(1)))
        );
        // The rebootstrap failed too: the next refreshes ask in the usual
        // order until another trigger has passed.
        r.rebootstrapping(t1);
        let t2 = t1 + Duration::from_secs(1);
        r.attempt(t2);
        assert_eq!(plan(&r, REBOOTSTRAP, &[1, 2], t2), asks(&[1, 2, -1, -2]));
        let t3 = t1 + TRIGGER + Duration::from_secs(1);
        r.attempt(t3);
        assert!(plan(&r, REBOOTSTRAP, &[1, 2], t3).rebootstrap.is_some());
        // Under none the trigger never fires.
        assert_eq!(plan(&r, NONE, &[1, 2], t3), asks(&[1, 2]));
    }

    #[test]
    fn a_success_ends_the_run_so_an_idle_client_is_not_rebootstrapped_on_its_next_refresh() {
        let mut r = Recovery::default();
        let t0 = Instant::now();
        r.attempt(t0);
        r.succeeded();
        // Idle for an hour (metadata.max.age.ms): the next refresh starts a
        // new run, and asks the known brokers first.
        let later = t0 + Duration::from_secs(3600);
        r.attempt(later);
        assert_eq!(plan(&r, REBOOTSTRAP, &[1], later), asks(&[1, -1, -2]));
    }

    #[test]
    fn rebootstrap_required_asks_the_bootstrap_addresses_alone_at_once_and_only_once() {
        let mut r = Recovery::default();
        let t0 = Instant::now();
        r.attempt(t0);
        r.rebootstrap_required();
        let p = plan(&r, REBOOTSTRAP, &[1, 2, 3], t0);
        assert_eq!(p.ask, vec![-1, -2]);
        assert_eq!(p.rebootstrap, Some(Why::Requested));
        r.rebootstrapping(t0);
        assert_eq!(
            plan(&r, REBOOTSTRAP, &[1, 2, 3], t0),
            asks(&[1, 2, 3, -1, -2]),
            "used up by the rebootstrap that served it"
        );
        // Under none a request changes nothing (the client reports the error).
        r.rebootstrap_required();
        assert_eq!(plan(&r, NONE, &[1, 2, 3], t0), asks(&[1, 2, 3]));
        r.succeeded();
        assert_eq!(plan(&r, REBOOTSTRAP, &[1], t0), asks(&[1, -1, -2]));
    }
}
