//! A consumer group's completion: the partition's [`OffsetTracker`] (the
//! commit point follows the lowest record not finished), the
//! completed-beyond-the-commit-point map carried in the commit metadata,
//! and the last commit the broker accepted. The commit task
//! (`processor/commit.rs`) sends what [`Offsets::commit_point`] gives.

use kafka_wire::records::Record;

use super::{Completion, Outcome};
use crate::commit_metadata::{self, encode_ranges, merge_ranges, ranges_of};
use crate::offset_tracker::OffsetTracker;

/// What the group had committed for a partition when it was assigned.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) committed: i64,
    pub(crate) metadata: String,
    /// The offsets beyond `committed` the metadata says are done.
    pub(crate) done: Vec<(i64, i64)>,
}

/// One partition's offsets in one assignment epoch.
#[derive(Debug)]
pub(crate) struct Offsets {
    tracker: OffsetTracker,
    /// The last (offset, metadata) the broker accepted (or found on
    /// assignment), to skip commits that would change nothing.
    last_commit: Option<(i64, String)>,
    /// Done offsets from the committed metadata (not redone).
    loaded_done: Vec<(i64, i64)>,
    /// The completed-offset map no longer fits the metadata limit:
    /// fetching pauses until the commit point catches up.
    metadata_full: bool,
}

impl Completion for Offsets {
    type Loaded = Loaded;

    const REDELIVERS: bool = false;

    fn new(epoch: u64, start: i64, loaded: Option<Loaded>) -> Self {
        Offsets {
            tracker: OffsetTracker::new(epoch, start),
            last_commit: loaded.as_ref().map(|l| (l.committed, l.metadata.clone())),
            loaded_done: loaded.map(|l| l.done).unwrap_or_default(),
            metadata_full: false,
        }
    }

    fn dispatched(&mut self, records: &mut Vec<Record>) -> u64 {
        for r in records.iter() {
            self.tracker.dispatch(r.offset);
        }
        if self.loaded_done.is_empty() {
            return 0;
        }
        // Done before a restart (the committed metadata says so): complete
        // here instead.
        let epoch = self.tracker.epoch();
        let mut already_done = 0;
        records.retain(|r| {
            if commit_metadata::is_done(&self.loaded_done, r.offset) {
                let _ = self.tracker.complete(epoch, r.offset);
                already_done += 1;
                false
            } else {
                true
            }
        });
        already_done
    }

    #[inline]
    fn finished(&mut self, offset: i64, outcome: Outcome) {
        match outcome {
            Outcome::Handled | Outcome::Forwarded | Outcome::Rejected => {
                let _ = self.tracker.complete(self.tracker.epoch(), offset);
            }
            // Never completed, so never committed past: the next owner
            // reads it again from the committed offset.
            Outcome::Released => {}
        }
    }

    fn passed(&mut self, next: i64) {
        self.tracker.advance_to(next);
    }

    fn holds_fetching(&self) -> bool {
        self.metadata_full
    }
}

impl Offsets {
    /// The commit point and its metadata (the offsets done beyond it:
    /// this epoch's completions, plus loaded ones not dispatched yet,
    /// within `limit` bytes), if that differs from the last accepted
    /// commit. An encoding over the limit keeps the lowest ranges that fit
    /// and holds fetching until the point catches up.
    pub(crate) fn commit_point(&mut self, limit: usize) -> Option<(i64, String)> {
        let point = self.tracker.commit_point();
        let end = self.tracker.end();
        let mut ranges = ranges_of(self.tracker.done_beyond_commit_point());
        ranges.extend(
            self.loaded_done
                .iter()
                .filter(|(_, e)| *e > end)
                .map(|(s, e)| ((*s).max(end), *e)),
        );
        let ranges = merge_ranges(ranges);
        let (meta, fitted) = encode_ranges(point, &ranges, limit);
        self.metadata_full = fitted < ranges.len();
        let next = (point, meta);
        (self.last_commit.as_ref() != Some(&next)).then_some(next)
    }

    /// The broker accepted a commit of `offset` with `metadata`.
    pub(crate) fn committed(&mut self, offset: i64, metadata: String) {
        self.last_commit = Some((offset, metadata));
    }

    /// The offset of the last accepted commit (or the one found on
    /// assignment).
    pub(crate) fn last_committed(&self) -> Option<i64> {
        self.last_commit.as_ref().map(|(offset, _)| *offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(offsets: impl IntoIterator<Item = i64>) -> Vec<Record> {
        offsets
            .into_iter()
            .map(|offset| Record {
                offset,
                timestamp: 0,
                key: None,
                value: None,
                headers: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn only_handled_and_forwarded_records_move_the_commit_point() {
        let mut o = Offsets::new(1, 10, None);
        let mut polled = records(10..14);
        assert_eq!(o.dispatched(&mut polled), 0);
        assert_eq!(polled.len(), 4);
        o.finished(10, Outcome::Handled);
        o.finished(11, Outcome::Released);
        o.finished(12, Outcome::Forwarded);
        assert_eq!(o.commit_point(4096).map(|c| c.0), Some(11));
        o.committed(11, String::new());
        o.finished(13, Outcome::Handled);
        let (point, meta) = o
            .commit_point(4096)
            .expect("changed: 12 and 13 done beyond");
        assert_eq!(point, 11, "the released record holds the point");
        assert_eq!(commit_metadata::decode(point, &meta), [(12, 14)]);
        o.committed(point, meta);
        assert_eq!(o.commit_point(4096), None, "nothing new to commit");
        assert_eq!(o.last_committed(), Some(11));
    }

    #[test]
    fn records_the_committed_metadata_says_are_done_complete_at_dispatch() {
        let loaded = Loaded {
            committed: 5,
            metadata: String::new(),
            done: vec![(6, 8)],
        };
        let mut o = Offsets::new(1, 5, Some(loaded));
        assert_eq!(o.last_committed(), Some(5));
        let mut polled = records(5..9);
        assert_eq!(o.dispatched(&mut polled), 2);
        assert_eq!(polled.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 8]);
        o.finished(5, Outcome::Handled);
        o.finished(8, Outcome::Handled);
        o.passed(12);
        assert_eq!(o.commit_point(4096).map(|c| c.0), Some(12), "past markers");
    }
}
