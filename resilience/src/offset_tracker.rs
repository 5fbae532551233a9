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
/// yet behind the commit point form a sorted queue of runs of consecutive
/// offsets: a poll's records extend the last run, an in-order completion
/// moves the first run's start, and the commit point is that start. A
/// completion out of order splits a run (a binary search and a short
/// insert). No per-offset memory, and gaps (compaction, markers) cost
/// nothing.
#[derive(Debug, Clone)]
pub struct OffsetTracker {
    epoch: u64,
    /// Dispatched offsets from the lowest one still in flight on: sorted,
    /// not overlapping. The front is always in flight.
    window: VecDeque<Run>,
    /// One past the last dispatched offset (or a later position).
    end: i64,
    /// The last commit point returned by `take_commit`.
    committed: i64,
}

/// Offsets `start..end`, every one dispatched, all done or all in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: i64,
    end: i64,
    done: bool,
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
    #[inline]
    pub fn dispatch(&mut self, offset: i64) {
        // The usual case, inline: the next offset extends the last run.
        if offset == self.end {
            if let Some(last) = self.window.back_mut() {
                if !last.done && last.end == offset {
                    last.end += 1;
                    self.end += 1;
                    return;
                }
            }
        }
        self.dispatch_other(offset);
    }

    /// [`Self::dispatch`] of anything but the next offset of an in-flight
    /// last run: a new run at or past the end, or an offset below it.
    fn dispatch_other(&mut self, offset: i64) {
        if offset >= self.end {
            self.window.push_back(Run {
                start: offset,
                end: offset + 1,
                done: false,
            });
            self.end = offset + 1;
            return;
        }
        let i = self.window.partition_point(|r| r.end <= offset);
        match self.window.get(i) {
            Some(r) if r.start <= offset && !r.done => {} // already in flight
            Some(r) if r.start <= offset => self.mark(i, offset, false),
            _ => self.window.insert(
                i,
                Run {
                    start: offset,
                    end: offset + 1,
                    done: false,
                },
            ),
        }
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
    #[inline]
    pub fn complete(&mut self, epoch: u64, offset: i64) -> Result<(), Ignored> {
        if epoch != self.epoch {
            return Err(Ignored::StaleEpoch);
        }
        // Completions mostly come in order: the front's first offset (in
        // flight, as the front always is) is the usual case, inline.
        if let Some(first) = self.window.front_mut() {
            if first.start == offset && first.start + 1 < first.end {
                first.start += 1;
                return Ok(());
            }
        }
        self.complete_other(offset)
    }

    /// [`Self::complete`] of a front run's last offset, or out of order.
    fn complete_other(&mut self, offset: i64) -> Result<(), Ignored> {
        if let Some(first) = self.window.front_mut() {
            if first.start == offset {
                // The last offset of the front run (the inline case took
                // the others): the run is done.
                self.window.pop_front();
                self.drop_done_front();
                return Ok(());
            }
        }
        let i = self.window.partition_point(|r| r.end <= offset);
        match self.window.get(i) {
            Some(r) if r.start <= offset && !r.done => {
                self.mark(i, offset, true);
                Ok(())
            }
            _ => Err(Ignored::NotInFlight),
        }
    }

    /// Set `offset`, inside run `i` (whose state is not `done`), to `done`
    /// (completed, or dispatched again): the run splits around it, and it
    /// joins a neighbour run of its kind.
    fn mark(&mut self, i: usize, offset: i64, done: bool) {
        let run = self.window[i];
        debug_assert!(run.start <= offset && offset < run.end && run.done != done);
        let mut at = i;
        if run.start < offset {
            self.window[at].end = offset; // the part before stays as it was
            at += 1;
            self.window.insert(at, run);
        }
        self.window[at] = Run {
            start: offset,
            end: offset + 1,
            done,
        };
        if offset + 1 < run.end {
            let after = Run {
                start: offset + 1,
                ..run
            };
            self.window.insert(at + 1, after);
        }
        // Join the neighbours of the same kind that touch it.
        if let Some(next) = self.window.get(at + 1).copied() {
            if next.done == done && next.start == offset + 1 {
                self.window[at].end = next.end;
                self.window.remove(at + 1);
            }
        }
        if at > 0 {
            let prev = self.window[at - 1];
            if prev.done == done && prev.end == offset {
                self.window[at - 1].end = self.window[at].end;
                self.window.remove(at);
            }
        }
        self.drop_done_front();
    }

    /// Completed offsets below the first in-flight one need no memory.
    fn drop_done_front(&mut self) {
        while self.window.front().is_some_and(|r| r.done) {
            self.window.pop_front();
        }
    }

    /// The offset a commit would store: every offset below it is done.
    pub fn commit_point(&self) -> i64 {
        self.window.front().map_or(self.end, |r| r.start)
    }

    /// Completed offsets beyond the commit point (for commit metadata), in
    /// increasing order.
    pub fn done_beyond_commit_point(&self) -> impl Iterator<Item = i64> + '_ {
        self.window
            .iter()
            .filter(|r| r.done)
            .flat_map(|r| r.start..r.end)
    }

    /// Number of records in flight.
    pub fn in_flight(&self) -> usize {
        self.window
            .iter()
            .filter(|r| !r.done)
            .map(|r| (r.end - r.start) as usize)
            .sum()
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

    /// The tracker's meaning, one map entry per offset (as the tracker
    /// kept them before it kept runs): dispatched offsets from the lowest
    /// in flight on, with whether each is done.
    #[derive(Default)]
    struct Model {
        offsets: std::collections::BTreeMap<i64, bool>,
        end: i64,
    }

    impl Model {
        fn dispatch(&mut self, o: i64) {
            let e = self.offsets.entry(o).or_insert(false);
            *e = false;
            self.end = self.end.max(o + 1);
        }

        fn complete(&mut self, o: i64) -> Result<(), Ignored> {
            match self.offsets.get_mut(&o) {
                Some(done) if !*done => *done = true,
                _ => return Err(Ignored::NotInFlight),
            }
            while let Some(entry) = self.offsets.first_entry() {
                if !*entry.get() {
                    break;
                }
                entry.remove();
            }
            Ok(())
        }

        fn commit_point(&self) -> i64 {
            self.offsets.keys().next().copied().unwrap_or(self.end)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Dispatch the next offset after a gap of this many.
        Next(i64),
        /// Dispatch an offset below the end again (or into a gap).
        Again(i64),
        /// Complete an offset (maybe not in flight).
        Complete(i64),
        /// Complete the lowest offset in flight (the usual, in-order case).
        CompleteFirst,
        /// The fetch position moved past a gap.
        Advance(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..3).prop_map(Op::Next),
            1 => (0i64..40).prop_map(Op::Again),
            4 => (0i64..40).prop_map(Op::Complete),
            3 => Just(Op::CompleteFirst),
            1 => (0i64..4).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Any sequence of dispatches (in order, with gaps, or again below
        /// the end), completions (in order, out of order, unknown,
        /// duplicate) and advances: the runs mean what the per-offset
        /// model means, at every step.
        #[test]
        fn runs_agree_with_the_per_offset_model(ops in prop::collection::vec(op(), 1..200)) {
            let mut t = OffsetTracker::new(1, 0);
            let mut m = Model::default();
            for op in ops {
                match op {
                    Op::Next(gap) => {
                        let o = m.end + gap;
                        t.dispatch(o);
                        m.dispatch(o);
                    }
                    Op::Again(o) => {
                        if o < m.end {
                            t.dispatch(o);
                            m.dispatch(o);
                        }
                    }
                    Op::Complete(o) => prop_assert_eq!(t.complete(1, o), m.complete(o)),
                    Op::CompleteFirst => {
                        if let Some((&o, _)) = m.offsets.iter().find(|(_, done)| !**done) {
                            prop_assert_eq!(t.complete(1, o), Ok(()));
                            m.complete(o).unwrap();
                        }
                    }
                    Op::Advance(by) => {
                        t.advance_to(m.end + by);
                        m.end += by;
                    }
                }
                prop_assert_eq!(t.commit_point(), m.commit_point());
                prop_assert_eq!(t.end(), m.end);
                let done: Vec<i64> = m.offsets.iter().filter(|(_, d)| **d).map(|(o, _)| *o).collect();
                prop_assert_eq!(t.done_beyond_commit_point().collect::<Vec<_>>(), done);
                prop_assert_eq!(t.in_flight(), m.offsets.values().filter(|d| !**d).count());
                // Runs are sorted, not empty, and never touch a run of their kind.
                for pair in t.window.iter().collect::<Vec<_>>().windows(2) {
                    prop_assert!(pair[0].end <= pair[1].start);
                    prop_assert!(!(pair[0].done && pair[1].done && pair[0].end == pair[1].start));
                }
                prop_assert!(t.window.iter().all(|r| r.start < r.end));
                prop_assert!(t.window.front().is_none_or(|r| !r.done));
            }
        }

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
