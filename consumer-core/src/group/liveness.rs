//! The application's liveness, as every group protocol's machine sees it:
//! when it last polled (`max.poll.interval.ms`), and the rebalance listener
//! the driver waits for. Pure: `now` goes in, deadlines come out.
//!
//! ```text
//!  poll() ──polled(now)──▶ last_poll ──+ max.poll.interval.ms──▶ poll_deadline (the machine leaves past it)
//!  Revoke/Lose handed out ──listener_started(revoking, now)──▶ running listener
//!       │ until listener_done, or its deadline (now + the rebalance timeout):
//!       │   the machine hands out heartbeats only (listener_holds), and
//!       │   `revoking` stays committable
//!       ▼
//!  listener_done ──▶ the machine decides again
//! ```
//!
//! Each machine (`classic/membership.rs`, `consumer_protocol/member.rs`,
//! `share_protocol/member.rs`) embeds one and keeps only what differs:
//! what to do when the poll deadline passes, and which heartbeats it owes
//! meanwhile. The KIP-848 and share members also embed a [`Session`]: how
//! long the coordinator keeps a member whose heartbeats go unanswered.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::tp::TopicPartition;

/// Poll liveness and the running rebalance listener of one member.
#[derive(Debug)]
pub(crate) struct Liveness {
    /// `max.poll.interval.ms`: the longest the application may go without
    /// polling before the member leaves on purpose.
    max_poll_interval: Duration,
    /// How long the driver waits for a listener's ack: the rebalance
    /// timeout (classic: the one sent in JoinGroup; KIP-848: the
    /// `rebalance_timeout_ms` sent in the heartbeat, `max.poll.interval.ms`).
    listener_timeout: Duration,
    last_poll: Instant,
    listener: Option<RunningListener>,
}

/// A rebalance listener the driver waits for.
#[derive(Debug)]
struct RunningListener {
    /// The member goes on without it then.
    deadline: Instant,
    /// The partitions it revokes (commits still valid); empty for lost ones.
    revoking: BTreeSet<TopicPartition>,
}

impl Liveness {
    /// A member whose application counts as having polled at `now`.
    pub(crate) fn new(
        max_poll_interval: Duration,
        listener_timeout: Duration,
        now: Instant,
    ) -> Self {
        Self {
            max_poll_interval,
            listener_timeout,
            last_poll: now,
            listener: None,
        }
    }

    /// The application polled at `now`.
    pub(crate) fn polled(&mut self, now: Instant) {
        self.last_poll = now;
    }

    /// When the application last polled.
    pub(crate) fn last_poll(&self) -> Instant {
        self.last_poll
    }

    /// When the application must have polled again: the last poll plus
    /// `max.poll.interval.ms`.
    pub(crate) fn poll_deadline(&self) -> Instant {
        self.last_poll + self.max_poll_interval
    }

    /// Has the application gone longer than `max.poll.interval.ms`
    /// without polling, at `now`?
    pub(crate) fn poll_expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_poll) > self.max_poll_interval
    }

    /// The driver handed a Revoke (`revoking` are its partitions) or a Lose
    /// (`revoking` empty) to the application's listener at `now` and waits
    /// for it, at most the rebalance timeout.
    pub(crate) fn listener_started(&mut self, revoking: &[TopicPartition], now: Instant) {
        self.listener = Some(RunningListener {
            deadline: now + self.listener_timeout,
            revoking: revoking.iter().cloned().collect(),
        });
    }

    /// The listener has ended (or will never be heard of).
    pub(crate) fn listener_done(&mut self) {
        self.listener = None;
    }

    /// Is the driver waiting for a rebalance listener?
    pub(crate) fn listener_running(&self) -> bool {
        self.listener.is_some()
    }

    /// Does a running listener hold the machine's decisions back at `now`?
    /// True before its deadline: the machine then hands out only the
    /// heartbeats it owes (a slow `on_revoked` must not get the member
    /// expelled). Past the deadline the listener is given up (logged for
    /// `group`) and the machine goes on without it.
    pub(crate) fn listener_holds(&mut self, now: Instant, group: &str) -> bool {
        let Some(l) = &self.listener else {
            return false;
        };
        if now < l.deadline {
            return true;
        }
        tracing::warn!(
            group,
            "rebalance listener exceeded the rebalance timeout ({:?}); continuing without it",
            self.listener_timeout
        );
        self.listener = None;
        false
    }

    /// The partitions being revoked: the running listener's, and those of
    /// the revokes `queued` (handed out next; no longer owned, still this
    /// member's). Commits for them stay valid until the listener ends.
    pub(crate) fn revoking<'a>(
        &self,
        queued: impl IntoIterator<Item = &'a [TopicPartition]>,
    ) -> BTreeSet<TopicPartition> {
        let mut out = self
            .listener
            .as_ref()
            .map(|l| l.revoking.clone())
            .unwrap_or_default();
        for parts in queued {
            out.extend(parts.iter().cloned());
        }
        out
    }

    /// When the machine must decide again at the latest. While a listener
    /// runs, only its deadline and `heartbeat` (the next one the member
    /// owes meanwhile) count; otherwise the earliest of `timers` (the
    /// machine's own, [`Liveness::poll_deadline`] among them where it
    /// applies).
    pub(crate) fn next_wakeup(
        &self,
        heartbeat: Option<Instant>,
        timers: impl IntoIterator<Item = Option<Instant>>,
    ) -> Option<Instant> {
        match &self.listener {
            Some(l) => [Some(l.deadline), heartbeat].into_iter().flatten().min(),
            None => timers.into_iter().flatten().min(),
        }
    }
}

/// The member's session as the coordinator keeps it: a member whose
/// heartbeats go unanswered for the group's session timeout is removed by
/// the coordinator, answer or not (KIP-848's `consumer.session.timeout.ms`,
/// KIP-932's `share.session.timeout.ms`: group configs, the broker's to
/// set). Pure: the machine says when a heartbeat was answered and whether
/// it is in the group; the deadline comes out.
///
/// ```text
///  heartbeat answered / (re)joining ──answered(now)──▶ last_answered
///  in the group ──▶ deadline = last_answered + session timeout (None while unknown)
///  now ≥ deadline ──▶ expired: the member's partitions are someone else's; rejoin with epoch 0
/// ```
///
/// Embedded by the KIP-848 member (`consumer_protocol/member.rs`) and the
/// share member (`share_protocol/member.rs`); the classic member keeps
/// `session.timeout.ms`, its own setting.
#[derive(Debug)]
pub(crate) struct Session {
    /// The group's session timeout once the driver learned it (`None`
    /// before, or when the broker would not say: then only the broker's
    /// answers remove the member).
    timeout: Option<Duration>,
    /// When a heartbeat was last answered without error (or the member
    /// last started joining).
    last_answered: Instant,
}

impl Session {
    /// A session whose clock starts at `now`, its timeout unknown.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            timeout: None,
            last_answered: now,
        }
    }

    /// The group's session timeout, as the driver learned it (`None`: the
    /// broker would not say).
    pub(crate) fn learned(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// A heartbeat was answered without error at `now`, or the member
    /// starts joining: the session runs from here.
    pub(crate) fn answered(&mut self, now: Instant) {
        self.last_answered = now;
    }

    /// When the member must count itself removed unless a heartbeat is
    /// answered before: the last answer plus the session timeout. `None`
    /// outside the group (`in_group` false) or while the timeout is
    /// unknown.
    pub(crate) fn deadline(&self, in_group: bool) -> Option<Instant> {
        let timeout = self.timeout?;
        in_group.then(|| self.last_answered + timeout)
    }

    /// Has the session of a member `in_group` run out at `now`?
    pub(crate) fn expired(&self, in_group: bool, now: Instant) -> bool {
        self.deadline(in_group).is_some_and(|d| now >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn the_poll_deadline_moves_with_each_poll() {
        let t0 = Instant::now();
        let mut l = Liveness::new(10 * SEC, 30 * SEC, t0);
        assert_eq!(l.poll_deadline(), t0 + 10 * SEC);
        assert!(
            !l.poll_expired(t0 + 10 * SEC),
            "at the deadline: still alive"
        );
        assert!(l.poll_expired(t0 + 11 * SEC));
        l.polled(t0 + 5 * SEC);
        assert!(!l.poll_expired(t0 + 11 * SEC));
        assert_eq!(l.poll_deadline(), t0 + 15 * SEC);
    }

    /// A listener holds decisions until its ack or its deadline; its
    /// partitions, and queued revokes', stay committable meanwhile.
    #[test]
    fn a_listener_holds_until_done_or_the_rebalance_timeout() {
        let t0 = Instant::now();
        let tp = |p| TopicPartition::new("t", p);
        let mut l = Liveness::new(10 * SEC, 30 * SEC, t0);
        assert!(!l.listener_holds(t0, "g"));
        l.listener_started(&[tp(0)], t0);
        assert!(l.listener_holds(t0 + 29 * SEC, "g"));
        let queued = [tp(1)];
        assert_eq!(
            l.revoking([&queued[..]]),
            [tp(0), tp(1)].into_iter().collect()
        );
        // Only the listener's deadline and the heartbeat count meanwhile.
        let wakeup = l.next_wakeup(Some(t0 + 3 * SEC), [Some(t0 + SEC)]);
        assert_eq!(wakeup, Some(t0 + 3 * SEC));
        assert!(!l.listener_holds(t0 + 30 * SEC, "g"), "given up");
        assert!(!l.listener_running());
        assert!(l.revoking([]).is_empty());
        assert_eq!(l.next_wakeup(None, [Some(t0 + SEC)]), Some(t0 + SEC));
        l.listener_started(&[], t0);
        l.listener_done();
        assert!(!l.listener_holds(t0, "g"));
    }

    #[test]
    fn a_session_runs_from_the_last_answer_and_only_in_the_group() {
        let t0 = Instant::now();
        let mut s = Session::new(t0);
        assert_eq!(s.deadline(true), None, "the timeout is unknown");
        assert!(!s.expired(true, t0 + 100 * SEC));
        s.learned(Some(6 * SEC));
        assert_eq!(s.deadline(true), Some(t0 + 6 * SEC));
        assert!(!s.expired(true, t0 + 5 * SEC));
        assert!(s.expired(true, t0 + 6 * SEC));
        assert!(!s.expired(false, t0 + 60 * SEC), "outside the group");
        s.answered(t0 + 4 * SEC);
        assert_eq!(s.deadline(true), Some(t0 + 10 * SEC));
    }
}
