//! Which replica a partition is read from: follower fetching (KIP-392), as
//! pure per-partition state.
//!
//! A consumer with `client.rack` sends its rack in every Fetch. A leader
//! whose broker runs a `replica.selector.class` (the rack-aware one, say)
//! may answer a partition with no records and a `preferred_read_replica`:
//! an in-sync follower in the consumer's rack. The consumer then fetches
//! that partition from the follower, for a while:
//!
//! ```text
//!              the leader names follower F
//!   Leader ──────────────────────────────────▶ Follower { F, until: now + metadata.max.age.ms }
//!     ▲  ▲                                          │        │
//!     │  └─ lifetime over (ask the leader again) ───┘        │ any error from F: the request failed
//!     │                                                      │ (F died), a partition error (an
//!     │                                                      │ OFFSET_OUT_OF_RANGE: F lags), F no
//!     │   FOLLOWER_BACKOFF over                              │ longer in the metadata
//!     └──────────────────── Rackless { until } ◀─────────────┘
//! ```
//!
//! - `Leader`: fetched from the leader with `client.rack`; the leader may
//!   name a follower. A leader that names itself (or -1) is read from.
//! - `Follower`: fetched from F until the lifetime ends (Java re-checks
//!   after `metadata.max.age.ms` too; franz-go after its recheck
//!   interval), then from the leader again, which may name F again or
//!   another replica.
//! - `Rackless`: a follower failed. Fetched from the leader *without*
//!   `client.rack` for [`FOLLOWER_BACKOFF`]: the leader does not know yet
//!   that a killed follower is gone (not before the controller fences it,
//!   `broker.session.timeout.ms`, 9 s by default), and asked with the rack
//!   it would name the dead follower again and send nothing, round after
//!   round. Without the rack it serves the partition itself.
//!
//! A follower's error is never the partition's error: its
//! OFFSET_OUT_OF_RANGE at or past its high watermark means the follower
//! has not caught up with the offset the leader let us read, and below its
//! log start it may just be behind on retention; only the leader's
//! answer decides a reset. Nothing about a follower becomes a
//! [`FetchAction`](super::FetchAction).

use std::time::Duration;

use tokio::time::Instant;

/// How long a partition is read from its leader without `client.rack`
/// after its follower failed: longer than the default
/// `broker.session.timeout.ms` (9 s), after which the controller has
/// fenced a dead node and the leader no longer names it.
pub(crate) const FOLLOWER_BACKOFF: Duration = Duration::from_secs(10);

/// Which replica a partition is fetched from. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ReadReplica {
    /// From the leader, with `client.rack`: it may name a follower.
    #[default]
    Leader,
    /// From broker `broker`, which the leader named, until `until`.
    Follower { broker: i32, until: Instant },
    /// From the leader, without `client.rack`, until `until`: a follower
    /// failed.
    Rackless { until: Instant },
}

/// Where the next fetch of a partition goes, from [`ReadReplica::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// The broker to fetch from.
    pub broker: i32,
    /// Send `client.rack` (`false`: the request to that broker goes
    /// without it, so the leader serves the partition itself).
    pub rack: bool,
    /// The preferred follower is missing from the metadata: refresh it.
    pub refresh: bool,
}

impl ReadReplica {
    /// Where to fetch from now, given the partition's current `leader` and
    /// whether a broker is in the metadata (`known`). Ends an expired
    /// lifetime or backoff, leaves a follower that became the leader, and
    /// falls back to the leader when the follower is no longer known.
    pub(crate) fn route(
        &mut self,
        leader: i32,
        known: impl Fn(i32) -> bool,
        now: Instant,
    ) -> Route {
        match *self {
            ReadReplica::Follower { until, .. } | ReadReplica::Rackless { until }
                if now >= until =>
            {
                *self = ReadReplica::Leader;
            }
            ReadReplica::Follower { broker, .. } if broker == leader => {
                *self = ReadReplica::Leader;
            }
            _ => {}
        }
        match *self {
            ReadReplica::Leader => Route {
                broker: leader,
                rack: true,
                refresh: false,
            },
            ReadReplica::Rackless { .. } => Route {
                broker: leader,
                rack: false,
                refresh: false,
            },
            ReadReplica::Follower { broker, .. } if known(broker) => Route {
                broker,
                rack: true,
                refresh: false,
            },
            ReadReplica::Follower { broker, .. } => {
                tracing::debug!(
                    follower = broker,
                    leader,
                    "preferred read replica not in the metadata: reading from the leader"
                );
                self.follower_failed(now);
                Route {
                    broker: leader,
                    rack: false,
                    refresh: true,
                }
            }
        }
    }

    /// The broker a fetch would go to now, without changing anything (for
    /// the held-back wait of a partition sitting out).
    pub(crate) fn peek(&self, leader: i32, now: Instant) -> i32 {
        match *self {
            ReadReplica::Follower { broker, until } if now < until => broker,
            _ => leader,
        }
    }

    /// Was a response of `broker` for this partition a follower's (the
    /// partition is read from `broker` as a follower)?
    pub(crate) fn is_follower(&self, broker: i32) -> bool {
        matches!(*self, ReadReplica::Follower { broker: b, .. } if b == broker)
    }

    /// The leader `broker` answered with `preferred_read_replica`
    /// (`-1`: none): follow another replica for `lifetime`. `true` when
    /// the partition moved (the answer holds no records to read).
    pub(crate) fn leader_named(
        &mut self,
        broker: i32,
        preferred: i32,
        lifetime: Duration,
        now: Instant,
    ) -> bool {
        if preferred < 0 || preferred == broker {
            return false;
        }
        *self = ReadReplica::Follower {
            broker: preferred,
            until: now + lifetime,
        };
        true
    }

    /// The follower failed (any error): the leader, without the rack, for
    /// [`FOLLOWER_BACKOFF`].
    pub(crate) fn follower_failed(&mut self, now: Instant) {
        *self = ReadReplica::Rackless {
            until: now + FOLLOWER_BACKOFF,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(300);

    fn all_known(_: i32) -> bool {
        true
    }

    #[test]
    fn a_named_follower_is_read_from_until_its_lifetime_ends() {
        let t = Instant::now();
        let mut r = ReadReplica::Leader;
        assert_eq!(
            r.route(1, all_known, t),
            Route {
                broker: 1,
                rack: true,
                refresh: false
            }
        );
        assert!(r.leader_named(1, 3, LIFETIME, t));
        assert!(r.is_follower(3));
        assert!(!r.is_follower(1));
        let before = t + LIFETIME - Duration::from_millis(1);
        assert_eq!(r.route(1, all_known, before).broker, 3);
        assert_eq!(r.peek(1, before), 3);
        // Lifetime over: the leader is asked again (with the rack).
        assert_eq!(r.peek(1, t + LIFETIME), 1);
        assert_eq!(
            r.route(1, all_known, t + LIFETIME),
            Route {
                broker: 1,
                rack: true,
                refresh: false
            }
        );
        assert_eq!(r, ReadReplica::Leader);
    }

    #[test]
    fn a_leader_naming_itself_or_no_one_is_read_from() {
        let t = Instant::now();
        let mut r = ReadReplica::Leader;
        assert!(!r.leader_named(1, -1, LIFETIME, t));
        assert!(!r.leader_named(1, 1, LIFETIME, t));
        assert_eq!(r, ReadReplica::Leader);
    }

    #[test]
    fn a_failed_follower_sends_the_partition_to_the_leader_without_the_rack() {
        let t = Instant::now();
        let mut r = ReadReplica::Leader;
        r.leader_named(1, 3, LIFETIME, t);
        r.follower_failed(t);
        assert!(!r.is_follower(3));
        assert_eq!(
            r.route(1, all_known, t),
            Route {
                broker: 1,
                rack: false,
                refresh: false
            }
        );
        // After the backoff, the leader with the rack again.
        assert_eq!(
            r.route(1, all_known, t + FOLLOWER_BACKOFF),
            Route {
                broker: 1,
                rack: true,
                refresh: false
            }
        );
    }

    #[test]
    fn a_follower_missing_from_the_metadata_is_not_dialled() {
        let t = Instant::now();
        let mut r = ReadReplica::Leader;
        r.leader_named(1, 3, LIFETIME, t);
        let route = r.route(1, |b| b != 3, t);
        assert_eq!(
            route,
            Route {
                broker: 1,
                rack: false,
                refresh: true
            }
        );
        assert!(matches!(r, ReadReplica::Rackless { .. }));
    }

    #[test]
    fn a_follower_that_became_the_leader_is_read_as_the_leader() {
        let t = Instant::now();
        let mut r = ReadReplica::Leader;
        r.leader_named(1, 3, LIFETIME, t);
        assert_eq!(r.route(3, all_known, t).broker, 3);
        assert_eq!(r, ReadReplica::Leader, "its errors are a leader's now");
    }
}
