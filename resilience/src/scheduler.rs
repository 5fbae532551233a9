//! Which records may start next, by ordering mode (pure: no I/O, no clock).
//!
//! Records wait in *lanes*. A lane runs one unit of work at a time, in
//! arrival order; different lanes run in parallel. The ordering mode decides
//! what a lane is:
//!
//! | mode | lane | guarantee |
//! |---|---|---|
//! | [`Ordering::PerPartition`] | the partition | records of a partition are handled in offset order |
//! | [`Ordering::PerKey`] | (partition, key) | records with the same key are handled in order; keys run in parallel |
//! | [`Ordering::Unordered`] | each record | none; as parallel as the concurrency allows |
//!
//! Records without a key share one lane per partition in key mode. Two keys
//! whose hashes collide share a lane: still ordered, only less parallel.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use consumer_core::TopicPartition;

/// How records are ordered while they are handled.
/// Maps keyed by partitions and lane numbers, with a fast hasher (the keys
/// are the application's topics and record keys, not an attacker's
/// choice of collisions against a long-lived table).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    /// Offset order within each partition (the default).
    #[default]
    PerPartition,
    /// Order within each key; different keys of a partition run in parallel.
    PerKey,
    /// No order: every record may run at once.
    Unordered,
}

/// A lane: the partition and a sub-lane (key hash, record number, or 0).
/// The partition is shared, so naming a lane never allocates.
pub type LaneId = (Arc<TopicPartition>, u64);

const NO_KEY_LANE: u64 = u64::MAX;

/// The sub-lane of a record with `key` (`next_record_lane` numbers the
/// records in unordered mode).
fn lane_of(ordering: Ordering, next_record_lane: &mut u64, key: Option<&[u8]>) -> u64 {
    match ordering {
        Ordering::PerPartition => 0,
        // A fixed seed: the same key maps to the same lane for the life of
        // the process (any seed would do; keys are the application's).
        Ordering::PerKey => key.map_or(NO_KEY_LANE, |k| {
            foldhash::fast::FixedState::with_seed(0x006b_6166_6b61).hash_one(k) & !(1 << 63)
            // never NO_KEY_LANE
        }),
        Ordering::Unordered => {
            *next_record_lane = next_record_lane.wrapping_add(1);
            *next_record_lane
        }
    }
}

#[derive(Debug)]
struct Lane<T> {
    pending: VecDeque<T>,
    busy: bool,
}

/// The lanes of one partition.
#[derive(Debug)]
struct PartitionLanes<T> {
    tp: Arc<TopicPartition>,
    lanes: FastMap<u64, Lane<T>>,
}

/// Lanes of pending work and which of them may start.
#[derive(Debug)]
pub struct Scheduler<T> {
    ordering: Ordering,
    max_batch: usize,
    partitions: FastMap<TopicPartition, PartitionLanes<T>>,
    /// Lanes that were idle with pending work when last touched (may hold
    /// lanes emptied since by `remove_partition`; `next_unit` skips them).
    ready: VecDeque<LaneId>,
    next_record_lane: u64,
    pending: usize,
}

impl<T> Scheduler<T> {
    /// `max_batch`: most items one unit of work takes from a lane (≥ 1).
    pub fn new(ordering: Ordering, max_batch: usize) -> Self {
        Self {
            ordering,
            max_batch: max_batch.max(1),
            partitions: FastMap::default(),
            ready: VecDeque::new(),
            next_record_lane: 0,
            pending: 0,
        }
    }

    fn lane_mut(&mut self, id: &LaneId) -> Option<&mut Lane<T>> {
        self.partitions.get_mut(&*id.0)?.lanes.get_mut(&id.1)
    }

    /// Queue `item` of partition `tp` with record key `key`.
    pub fn push(&mut self, tp: &TopicPartition, key: Option<&[u8]>, item: T) {
        self.push_with(tp, [item], |ordering, counter, _| {
            lane_of(ordering, counter, key)
        });
    }

    /// Queue `items` of partition `tp` in order (`key_of` gives each one's
    /// record key), looking the partition up once. Per partition (one
    /// lane) they move in one copy, not one by one.
    pub fn push_all(
        &mut self,
        tp: &TopicPartition,
        items: impl IntoIterator<Item = T>,
        key_of: impl Fn(&T) -> Option<&[u8]>,
    ) {
        let mut items = items.into_iter().peekable();
        if self.ordering == Ordering::PerPartition && items.peek().is_some() {
            // Looked up first: cloning the name (an allocation) only for a new partition.
            if !self.partitions.contains_key(tp) {
                let lanes = PartitionLanes {
                    tp: Arc::new(tp.clone()),
                    lanes: FastMap::default(),
                };
                self.partitions.insert(tp.clone(), lanes);
            }
            let part = self.partitions.get_mut(tp).expect("inserted above");
            let lane = part.lanes.entry(0).or_insert_with(|| Lane {
                pending: VecDeque::new(),
                busy: false,
            });
            if lane.pending.is_empty() && !lane.busy {
                self.ready.push_back((part.tp.clone(), 0));
            }
            let before = lane.pending.len();
            lane.pending.extend(items);
            self.pending += lane.pending.len() - before;
            return;
        }
        self.push_with(tp, items, |ordering, counter, item| {
            lane_of(ordering, counter, key_of(item))
        });
    }

    fn push_with(
        &mut self,
        tp: &TopicPartition,
        items: impl IntoIterator<Item = T>,
        mut sub_lane: impl FnMut(Ordering, &mut u64, &T) -> u64,
    ) {
        if !self.partitions.contains_key(tp) {
            let lanes = PartitionLanes {
                tp: Arc::new(tp.clone()),
                lanes: FastMap::default(),
            };
            self.partitions.insert(tp.clone(), lanes);
        }
        let Self {
            ordering,
            partitions,
            ready,
            next_record_lane,
            pending,
            ..
        } = self;
        let part = partitions.get_mut(tp).expect("inserted above");
        let PartitionLanes { tp: part_tp, lanes } = part;
        // A run of items for one lane (all of them, per partition) looks
        // the lane up once.
        let mut items = items
            .into_iter()
            .map(|item| (sub_lane(*ordering, next_record_lane, &item), item))
            .peekable();
        while let Some((sub, item)) = items.next() {
            let lane = lanes.entry(sub).or_insert_with(|| Lane {
                pending: VecDeque::new(),
                busy: false,
            });
            if lane.pending.is_empty() && !lane.busy {
                ready.push_back((part_tp.clone(), sub));
            }
            lane.pending.push_back(item);
            *pending += 1;
            while let Some((_, item)) = items.next_if(|(s, _)| *s == sub) {
                lane.pending.push_back(item);
                *pending += 1;
            }
        }
        if lanes.is_empty() {
            partitions.remove(tp); // nothing was pushed
        }
    }

    /// Put items a unit took but did not start back at the front of its
    /// (still busy) lane, in their order, before [`Scheduler::done`].
    pub fn give_back(&mut self, id: &LaneId, items: Vec<T>) {
        if items.is_empty() {
            return;
        }
        let added = items.len();
        let Some(lane) = self.lane_mut(id) else {
            return;
        };
        for item in items.into_iter().rev() {
            lane.pending.push_front(item);
        }
        self.pending += added;
    }

    /// The next unit of work: up to `max_batch` items of one idle lane,
    /// which is busy until [`Scheduler::done`].
    pub fn next_unit(&mut self) -> Option<(LaneId, Vec<T>)> {
        let max_batch = self.max_batch;
        while let Some(id) = self.ready.pop_front() {
            let Some(lane) = self.lane_mut(&id) else {
                continue;
            };
            if lane.busy || lane.pending.is_empty() {
                continue;
            }
            let take = lane.pending.len().min(max_batch);
            let items: Vec<T> = lane.pending.drain(..take).collect();
            lane.busy = true;
            self.pending -= items.len();
            return Some((id, items));
        }
        None
    }

    /// The unit of work of `lane` finished: its next items may start.
    pub fn done(&mut self, id: &LaneId) {
        let Some(part) = self.partitions.get_mut(&*id.0) else {
            return;
        };
        let Some(lane) = part.lanes.get_mut(&id.1) else {
            return;
        };
        lane.busy = false;
        if lane.pending.is_empty() {
            part.lanes.remove(&id.1);
            if part.lanes.is_empty() {
                self.partitions.remove(&*id.0);
            }
        } else {
            self.ready.push_back(id.clone());
        }
    }

    /// Take every pending (not started) item of `tp`, in no particular
    /// order. Running units stay busy until `done`.
    pub fn remove_partition(&mut self, tp: &TopicPartition) -> Vec<T> {
        let Some(part) = self.partitions.get_mut(tp) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        part.lanes.retain(|_, lane| {
            out.extend(lane.pending.drain(..));
            lane.busy
        });
        if part.lanes.is_empty() {
            self.partitions.remove(tp);
        }
        self.pending -= out.len();
        out
    }

    /// Items queued and not started.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn per_partition_runs_one_unit_per_partition_in_order() {
        let mut s = Scheduler::new(Ordering::PerPartition, 2);
        for i in 0..5 {
            s.push(&tp(0), None, i);
        }
        s.push(&tp(1), None, 100);
        let (a, items) = s.next_unit().unwrap();
        assert_eq!(items, [0, 1]);
        let (b, items) = s.next_unit().unwrap();
        assert_eq!(items, [100]);
        assert!(s.next_unit().is_none(), "partition 0 is busy");
        s.done(&a);
        assert_eq!(s.next_unit().unwrap().1, [2, 3]);
        s.done(&b);
        assert!(s.next_unit().is_none());
    }

    #[test]
    fn items_given_back_run_next_and_in_order() {
        let mut s = Scheduler::new(Ordering::PerPartition, 3);
        s.push_all(&tp(0), 0..5, |_| None);
        let (lane, items) = s.next_unit().unwrap();
        assert_eq!(items, [0, 1, 2]);
        s.push_all(&tp(0), vec![5], |_| None); // arrives while the unit runs
                                               // The unit handled 0 only (its time budget ran out).
        s.give_back(&lane, vec![1, 2]);
        assert_eq!(s.pending(), 5);
        assert!(s.next_unit().is_none(), "still busy until done");
        s.done(&lane);
        assert_eq!(s.next_unit().unwrap().1, [1, 2, 3]);
    }

    #[test]
    fn per_key_runs_keys_in_parallel_and_each_key_in_order() {
        let mut s = Scheduler::new(Ordering::PerKey, 1);
        s.push(&tp(0), Some(b"a"), 1);
        s.push(&tp(0), Some(b"a"), 2);
        s.push(&tp(0), Some(b"b"), 3);
        let (la, x) = s.next_unit().unwrap();
        let (_, y) = s.next_unit().unwrap();
        assert_eq!((x[0], y[0]), (1, 3));
        assert!(s.next_unit().is_none(), "key a's second record waits");
        s.done(&la);
        assert_eq!(s.next_unit().unwrap().1, [2]);
    }

    #[test]
    fn unordered_starts_everything() {
        let mut s = Scheduler::new(Ordering::Unordered, 8);
        for i in 0..4 {
            s.push(&tp(0), Some(b"same"), i);
        }
        let started: Vec<i32> = std::iter::from_fn(|| s.next_unit())
            .flat_map(|(_, v)| v)
            .collect();
        assert_eq!(started, [0, 1, 2, 3]);
    }

    #[test]
    fn removing_a_partition_returns_its_pending_items_only() {
        let mut s = Scheduler::new(Ordering::PerPartition, 1);
        for i in 0..3 {
            s.push(&tp(0), None, i);
        }
        s.push(&tp(1), None, 9);
        let (running, _) = s.next_unit().unwrap(); // item 0 runs
        let mut removed = s.remove_partition(&tp(0));
        removed.sort();
        assert_eq!(removed, [1, 2]);
        assert_eq!(s.pending(), 1);
        assert_eq!(s.next_unit().unwrap().1, [9]);
        s.done(&running); // the running unit finishes later: nothing follows it
        assert!(s.next_unit().is_none());
    }

    proptest! {
        /// Any interleaving of pushes, starts and completions: nothing is
        /// lost or started twice, a lane never runs two units at once, and
        /// per-lane order is arrival order.
        #[test]
        fn every_item_starts_once_in_lane_order(
            mode in prop_oneof![Just(Ordering::PerPartition), Just(Ordering::PerKey), Just(Ordering::Unordered)],
            ops in prop::collection::vec((0u8..3, 0i32..3, 0u8..4), 1..200),
        ) {
            let mut s = Scheduler::new(mode, 3);
            let mut next_item = 0u32;
            let mut pushed: Vec<(i32, u8, u32)> = Vec::new();
            let mut running: Vec<(LaneId, Vec<u32>)> = Vec::new();
            let mut started: Vec<u32> = Vec::new();
            let mut step = |s: &mut Scheduler<u32>, running: &mut Vec<(LaneId, Vec<u32>)>, started: &mut Vec<u32>, op: u8, p: i32, k: u8| {
                match op {
                    0 => {
                        s.push(&tp(p), Some(&[k]), next_item);
                        pushed.push((p, k, next_item));
                        next_item += 1;
                    }
                    1 => {
                        if let Some((lane, items)) = s.next_unit() {
                            assert!(running.iter().all(|(l, _)| *l != lane), "lane ran twice at once");
                            started.extend(&items);
                            running.push((lane, items));
                        }
                    }
                    _ => {
                        if !running.is_empty() {
                            let (lane, _) = running.remove(usize::from(k) % running.len());
                            s.done(&lane);
                        }
                    }
                }
            };
            for (op, p, k) in ops {
                step(&mut s, &mut running, &mut started, op, p, k);
            }
            // Drain everything.
            loop {
                while let Some((lane, items)) = s.next_unit() {
                    started.extend(&items);
                    running.push((lane, items));
                }
                let Some((lane, _)) = running.pop() else { break };
                s.done(&lane);
            }
            let unique: HashSet<u32> = started.iter().copied().collect();
            prop_assert_eq!(unique.len(), started.len(), "an item started twice");
            prop_assert_eq!(started.len(), pushed.len(), "an item was lost");
            prop_assert_eq!(s.pending(), 0);
            // Order: within a partition (partition mode) or a (partition, key)
            // (key mode), items start in push order.
            if mode != Ordering::Unordered {
                let pos: std::collections::HashMap<u32, usize> = started.iter().enumerate().map(|(i, x)| (*x, i)).collect();
                for a in &pushed {
                    for b in &pushed {
                        let same = a.0 == b.0 && (mode == Ordering::PerPartition || a.1 == b.1);
                        if same && a.2 < b.2 {
                            prop_assert!(pos[&a.2] < pos[&b.2], "{:?} started after {:?}", a, b);
                        }
                    }
                }
            }
        }
    }
}
