//! Per-partition offset tracking: what may be committed, given completions
//! in any order (pure, no I/O, no clock).
//!
//! Records are dispatched in offset order; workers complete them in any
//! order. The commit point is the lowest offset still in flight, or, when
//! nothing is in flight, the end of what was dispatched (which may be past
//! offsets that never existed: compaction gaps and transaction markers, via
//! [`OffsetTracker::advance_to`]). Offsets completed *beyond* the commit
//! point are kept, and can travel in the commit's metadata
//! ([`crate::commit_metadata`]) so a restart does not redo them.
//!
//! Every tracker belongs to one assignment epoch: completions stamped with
//! another epoch (work that finished after a revoke) are ignored, so they
//! can never produce a commit.

use std::collections::VecDeque;

/// The offset bookkeeping of one partition in one assignment epoch.
///
/// Offsets are dispatched in increasing order, so the dispatched ones not
/// yet behind the commit point form a sorted queue: a dispatch appends, a
/// completion is a binary search, and the commit point is the front. No
/// per-offset allocation, and gaps (compaction, markers) cost nothing.
#[derive(Debug, Clone)]
pub struct OffsetTracker {
    epoch: u64,
    /// Dispatched offsets from the lowest one still in flight on, with
    /// whether each is done. The front is always in flight.
    window: VecDeque<(i64, bool)>,
    /// One past the last dispatched offset (or a later position).
    end: i64,
    /// The last commit point returned by `take_commit`.
    committed: i64,
}

/// Why a completion was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// From an earlier assignment of this partition (after a revoke).
    StaleEpoch,
    /// Not in flight (duplicate completion, or never dispatched).
    NotInFlight,
}

impl OffsetTracker {
    /// A tracker starting at `start` (the committed or reset position).
    pub fn new(epoch: u64, start: i64) -> Self {
        Self {
            epoch,
            window: VecDeque::new(),
            end: start,
            committed: start,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// One past the last dispatched offset (or a later position).
    pub fn end(&self) -> i64 {
        self.end
    }

    /// A record at `offset` goes to a worker. Offsets increase (a lower
    /// one, which the runtime never sends, is still tracked correctly, at a
    /// linear cost).
    pub fn dispatch(&mut self, offset: i64) {
        if offset >= self.end {
            self.window.push_back((offset, false));
        } else {
            match self.window.binary_search_by_key(&offset, |(o, _)| *o) {
                Ok(i) if !self.window[i].1 => return, // already in flight
                Ok(i) => self.window[i].1 = false,
                Err(i) => self.window.insert(i, (offset, false)),
            }
        }
        self.end = self.end.max(offset + 1);
    }

    /// The fetch position moved to `next` without records in between
    /// (control batches, aborted data, compaction gaps).
    pub fn advance_to(&mut self, next: i64) {
        self.end = self.end.max(next);
    }

    /// A worker finished `offset` (handled, or dead-lettered and acknowledged).
    ///
    /// # Errors
    /// [`Ignored`] when the completion is stale or unknown; it changes nothing.
    pub fn complete(&mut self, epoch: u64, offset: i64) -> Result<(), Ignored> {
        if epoch != self.epoch {
            return Err(Ignored::StaleEpoch);
        }
        // Completions mostly come in order: the front is the usual case.
        let i = if self.window.front().is_some_and(|(o, _)| *o == offset) {
            0
        } else {
            self.window
                .binary_search_by_key(&offset, |(o, _)| *o)
                .map_err(|_| Ignored::NotInFlight)?
        };
        let done = &mut self.window[i].1;
        if *done {
            return Err(Ignored::NotInFlight);
        }
        *done = true;
        // Completed offsets below the first in-flight one need no memory.
        while self.window.front().is_some_and(|(_, done)| *done) {
            self.window.pop_front();
        }
        Ok(())
    }

    /// The offset a commit would store: every offset below it is done.
    pub fn commit_point(&self) -> i64 {
        self.window.front().map_or(self.end, |(o, _)| *o)
    }

    /// Completed offsets beyond the commit point (for commit metadata).
    pub fn done_beyond_commit_point(&self) -> impl Iterator<Item = i64> + '_ {
        self.window
            .iter()
            .filter(|(_, done)| *done)
            .map(|(o, _)| *o)
    }

    /// Number of records in flight.
    pub fn in_flight(&self) -> usize {
        self.window.iter().filter(|(_, done)| !done).count()
    }

    /// The commit point if it moved since the last call. Never goes backwards.
    pub fn take_commit(&mut self) -> Option<i64> {
        let point = self.commit_point();
        (point > self.committed).then(|| {
            self.committed = point;
            point
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_contiguous_prefix_is_committable() {
        let mut t = OffsetTracker::new(1, 10);
        for o in 10..15 {
            t.dispatch(o);
        }
        assert_eq!(t.commit_point(), 10);
        t.complete(1, 12).unwrap();
        t.complete(1, 13).unwrap();
        assert_eq!(t.commit_point(), 10, "10 and 11 are still running");
        assert_eq!(t.done_beyond_commit_point().collect::<Vec<_>>(), [12, 13]);
        t.complete(1, 10).unwrap();
        assert_eq!(t.commit_point(), 11);
        t.complete(1, 11).unwrap();
        assert_eq!(t.commit_point(), 14);
        t.complete(1, 14).unwrap();
        assert_eq!(t.commit_point(), 15);
        assert_eq!(t.take_commit(), Some(15));
        assert_eq!(t.take_commit(), None);
    }

    #[test]
    fn gaps_from_markers_and_compaction_are_skipped() {
        let mut t = OffsetTracker::new(1, 0);
        t.dispatch(0);
        t.dispatch(5); // 1..5 compacted away
        t.advance_to(9); // 6..8 were a transaction marker / aborted data
        t.complete(1, 5).unwrap();
        assert_eq!(t.commit_point(), 0);
        t.complete(1, 0).unwrap();
        assert_eq!(t.commit_point(), 9);
    }

    #[test]
    fn a_lower_offset_dispatched_late_still_holds_the_commit_point() {
        let mut t = OffsetTracker::new(1, 0);
        t.dispatch(5);
        t.dispatch(3);
        assert_eq!(t.commit_point(), 3);
        t.complete(1, 5).unwrap();
        assert_eq!(t.commit_point(), 3, "3 is still running");
        t.complete(1, 3).unwrap();
        assert_eq!(t.commit_point(), 6);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn stale_and_duplicate_completions_change_nothing() {
        let mut t = OffsetTracker::new(2, 0);
        t.dispatch(0);
        assert_eq!(t.complete(1, 0), Err(Ignored::StaleEpoch));
        assert_eq!(t.commit_point(), 0);
        t.complete(2, 0).unwrap();
        assert_eq!(t.complete(2, 0), Err(Ignored::NotInFlight));
        assert_eq!(t.complete(2, 7), Err(Ignored::NotInFlight));
    }

    proptest! {
        /// Whatever the completion order: the commit point never passes an
        /// incomplete offset, never goes backwards, and ends at the end.
        #[test]
        fn commit_point_is_safe_and_monotonic(
            gaps in prop::collection::vec(1i64..4, 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 1..60),
        ) {
            let mut t = OffsetTracker::new(1, 100);
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in &gaps {
                t.dispatch(o);
                offsets.push(o);
                o += g;
            }
            let mut pending = offsets.clone();
            let mut last = t.commit_point();
            for idx in order {
                if pending.is_empty() { break; }
                let off = pending.remove(idx.index(pending.len()));
                t.complete(1, off).unwrap();
                let point = t.commit_point();
                prop_assert!(point >= last, "went backwards");
                prop_assert!(pending.iter().all(|p| *p >= point), "passed an incomplete offset");
                last = point;
            }
            for off in pending.clone() { t.complete(1, off).unwrap(); }
            prop_assert_eq!(t.commit_point(), offsets.last().unwrap() + 1);
        }
    }
}
