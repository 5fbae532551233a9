//! One broker's share session (KIP-932), pure.
//!
//! ```text
//!              ShareFetch epoch 0 (every partition, no acknowledgements)
//!   Closed ───────────────────────────────────────────────▶ Open(1)
//!     ▲                                                      │ each answered ShareFetch or
//!     │ SHARE_SESSION_NOT_FOUND, INVALID_SHARE_SESSION_EPOCH,│ ShareAcknowledge: epoch + 1
//!     │ any top-level error, a lost connection               ▼ (i32::MAX wraps to 1)
//!     └──────────────── start_over (incarnation + 1) ──── Open(n)
//!                                                            │ ShareAcknowledge (or ShareFetch)
//!                                                            ▼ epoch -1: final acknowledgements
//!                                                          Finished
//! ```
//!
//! Epoch 0 opens a session, and the broker drops any older session of
//! this member and releases the records it had acquired. So when a
//! session starts over, every record acquired under the previous
//! incarnation is gone: the fetcher forgets them, and acknowledging one
//! later is refused locally. Requests of a session go one at a time:
//! each carries the epoch the previous answer advanced to.

use std::collections::BTreeSet;
use std::time::Instant;

use super::TopicIdPartition;

/// The epoch that opens a share session.
pub(crate) const OPEN_EPOCH: i32 = 0;
/// The epoch of the request that closes a share session.
pub(crate) const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch` (1 follows `i32::MAX`).
pub(crate) fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        FINAL_EPOCH => FINAL_EPOCH,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// What a request in flight will change once answered.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    /// Matches the answer to the request.
    pub(crate) id: u64,
    /// The epoch it carries.
    pub(crate) epoch: i32,
    /// Partitions it adds to the session.
    pub(crate) added: Vec<TopicIdPartition>,
    /// Partitions it removes from the session.
    pub(crate) forgotten: Vec<TopicIdPartition>,
}

/// One broker's share session.
#[derive(Debug)]
pub(crate) struct ShareSession {
    /// The epoch the next request carries.
    epoch: i32,
    /// Bumped whenever the session starts over: records are stamped with
    /// the incarnation that acquired them.
    incarnation: u64,
    /// The partitions the broker holds in the session (as of the last
    /// answered request).
    partitions: BTreeSet<TopicIdPartition>,
    in_flight: Option<InFlight>,
    /// No request before this (after a failure).
    not_before: Option<Instant>,
    /// The final request (epoch -1) was answered, or there never was a
    /// session to close.
    finished: bool,
}

impl Default for ShareSession {
    fn default() -> Self {
        Self {
            epoch: OPEN_EPOCH,
            incarnation: 0,
            partitions: BTreeSet::new(),
            in_flight: None,
            not_before: None,
            finished: false,
        }
    }
}

impl ShareSession {
    /// Has the broker a session for us (an epoch-0 request was answered)?
    pub(crate) fn is_open(&self) -> bool {
        self.epoch > 0
    }

    #[cfg(test)]
    pub(crate) fn epoch(&self) -> i32 {
        self.epoch
    }

    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub(crate) fn partitions(&self) -> &BTreeSet<TopicIdPartition> {
        &self.partitions
    }

    pub(crate) fn in_flight(&self) -> Option<&InFlight> {
        self.in_flight.as_ref()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// May a request go now?
    pub(crate) fn can_send(&self, now: Instant) -> bool {
        self.in_flight.is_none() && !self.finished && self.not_before.is_none_or(|t| now >= t)
    }

    /// When a request held back by a failure may go.
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.not_before
    }

    /// Request `id` is on its way, adding and forgetting partitions;
    /// `close` makes it the final one. Returns the epoch it carries.
    pub(crate) fn start(
        &mut self,
        id: u64,
        added: Vec<TopicIdPartition>,
        forgotten: Vec<TopicIdPartition>,
        close: bool,
    ) -> i32 {
        debug_assert!(
            self.in_flight.is_none(),
            "one request at a time per session"
        );
        let epoch = if close { FINAL_EPOCH } else { self.epoch };
        self.in_flight = Some(InFlight {
            id,
            epoch,
            added,
            forgotten,
        });
        epoch
    }

    /// The request `id` was answered without a top-level error: the
    /// broker applied it. Returns what it was, or `None` for a stale
    /// answer (of a request from before a start-over).
    pub(crate) fn answered(&mut self, id: u64) -> Option<InFlight> {
        if self.in_flight.as_ref().is_none_or(|f| f.id != id) {
            return None;
        }
        let done = self.in_flight.take()?;
        if done.epoch == FINAL_EPOCH {
            self.finished = true;
            self.partitions.clear();
            return Some(done);
        }
        for p in &done.forgotten {
            self.partitions.remove(p);
        }
        self.partitions.extend(done.added.iter().cloned());
        self.epoch = next_epoch(done.epoch);
        self.not_before = None;
        Some(done)
    }

    /// The request `id` failed (a top-level error code, a lost connection,
    /// a timeout): the broker's session is gone or out of step. The next
    /// request opens a new one (epoch 0) no sooner than `retry_at`.
    /// Returns the failed request (`None` when stale).
    pub(crate) fn failed(&mut self, id: u64, retry_at: Instant) -> Option<InFlight> {
        if self.in_flight.as_ref().is_none_or(|f| f.id != id) {
            return None;
        }
        let failed = self.in_flight.take();
        if failed.as_ref().is_some_and(|f| f.epoch == FINAL_EPOCH) {
            // Closing anyway: the broker drops the session with the member.
            self.finished = true;
        }
        self.start_over(retry_at);
        failed
    }

    /// Forget the session: the next request opens a new one.
    pub(crate) fn start_over(&mut self, retry_at: Instant) {
        self.epoch = OPEN_EPOCH;
        self.incarnation += 1;
        self.partitions.clear();
        self.in_flight = None;
        self.not_before = Some(retry_at);
    }

    /// Hold the next request back until `until` (a partition the broker
    /// keeps refusing must not make the fetch loop spin).
    pub(crate) fn hold(&mut self, until: Instant) {
        self.not_before = Some(until);
    }

    /// There is nothing to close (never opened): done.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}
