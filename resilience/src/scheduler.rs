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
//!
//! Items are pushed with a *tag* (the runtime's assignment epoch): one
//! unit of work never holds items of two tags.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use consumer_core::TopicPartition;

/// Maps keyed by partitions and lane numbers, with a fast hasher (the keys
/// are the application's topics and record keys, not an attacker's
/// choice of collisions against a long-lived table).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How records are ordered while they are handled.
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

/// Items that arrived together with one tag (the runtime's assignment
/// epoch): a unit of work takes chunks of one tag only.
#[derive(Debug)]
struct Chunk<T> {
    tag: u64,
    items: Vec<T>,
}

/// A lane's pending items, in chunks of at most `max_batch` (never
/// empty). A poll's records for one partition arrive as one vector, which
/// becomes a chunk as it is, and a unit of work takes a chunk whole: an
/// item is not copied between the fetch and the handler.
#[derive(Debug)]
struct Lane<T> {
    chunks: VecDeque<Chunk<T>>,
    busy: bool,
}

impl<T> Lane<T> {
    fn new() -> Self {
        Lane {
            chunks: VecDeque::new(),
            busy: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Append `item`: to the last chunk while it has room and the tag, else
    /// to a new one.
    fn push(&mut self, tag: u64, item: T, max_batch: usize) {
        match self.chunks.back_mut() {
            Some(last) if last.tag == tag && last.items.len() < max_batch => last.items.push(item),
            _ => self.chunks.push_back(Chunk {
                tag,
                items: vec![item],
            }),
        }
    }

    /// Append `items` as chunks of at most `max_batch`: as they are when
    /// they fit, else split (only the split-off tails are copied).
    fn push_vec(&mut self, tag: u64, mut items: Vec<T>, max_batch: usize) {
        let at = self.chunks.len();
        while items.len() > max_batch {
            let tail = items.split_off((items.len() - 1) / max_batch * max_batch);
            self.chunks.insert(at, Chunk { tag, items: tail });
        }
        if !items.is_empty() {
            self.chunks.insert(at, Chunk { tag, items });
        }
    }

    /// Every pending item with its tag, in order.
    fn drain(&mut self) -> impl Iterator<Item = (u64, Vec<T>)> + '_ {
        self.chunks.drain(..).map(|c| (c.tag, c.items))
    }
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

/// A unit of work the scheduler handed out: up to `max_batch` items of one
/// lane, all pushed with the same tag.
#[derive(Debug)]
pub struct Taken<T> {
    /// The lane, busy until [`Scheduler::done`].
    pub lane: LaneId,
    /// The tag its items were pushed with.
    pub tag: u64,
    /// In arrival order; 1 ..= `max_batch` of them.
    pub items: Vec<T>,
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

    /// The lanes of `tp`, created if it has none (the name is cloned, an
    /// allocation, only for a new partition).
    fn partition(&mut self, tp: &TopicPartition) -> &mut PartitionLanes<T> {
        if !self.partitions.contains_key(tp) {
            let lanes = PartitionLanes {
                tp: Arc::new(tp.clone()),
                lanes: FastMap::default(),
            };
            self.partitions.insert(tp.clone(), lanes);
        }
        self.partitions.get_mut(tp).expect("inserted above")
    }

    /// Queue `item` of partition `tp`, tagged `tag`, with record key `key`.
    pub fn push(&mut self, tp: &TopicPartition, tag: u64, key: Option<&[u8]>, item: T) {
        self.push_each(tp, tag, [item], |ordering, counter, _| {
            lane_of(ordering, counter, key)
        });
    }

    /// Queue `items` of partition `tp` in order, tagged `tag` (`key_of`
    /// gives each one's record key). When they all go to one lane (per
    /// partition; by key when every record has the same key, or none) the
    /// vector becomes that lane's chunk as it is; otherwise items move one
    /// by one into their lanes.
    pub fn push_all(
        &mut self,
        tp: &TopicPartition,
        tag: u64,
        items: Vec<T>,
        key_of: impl Fn(&T) -> Option<&[u8]>,
    ) {
        let Some(first) = items.first() else {
            return;
        };
        let one_lane = match self.ordering {
            Ordering::PerPartition => Some(0),
            Ordering::PerKey => {
                let key = key_of(first);
                let lane = lane_of(Ordering::PerKey, &mut 0, key);
                items[1..].iter().all(|i| key_of(i) == key).then_some(lane)
            }
            Ordering::Unordered => None,
        };
        match one_lane {
            Some(sub) => self.push_chunk(tp, sub, tag, items),
            None => self.push_each(tp, tag, items, |ordering, counter, item| {
                lane_of(ordering, counter, key_of(item))
            }),
        }
    }

    /// Queue `items` as they are in lane `sub` of `tp`.
    fn push_chunk(&mut self, tp: &TopicPartition, sub: u64, tag: u64, items: Vec<T>) {
        let (max_batch, n) = (self.max_batch, items.len());
        let part = self.partition(tp);
        let lane = part.lanes.entry(sub).or_insert_with(Lane::new);
        let was_idle = lane.is_empty() && !lane.busy;
        lane.push_vec(tag, items, max_batch);
        if was_idle {
            let id = (part.tp.clone(), sub);
            self.ready.push_back(id);
        }
        self.pending += n;
    }

    /// Queue `items` of `tp` one by one, each in the lane `sub_lane` names
    /// (given the ordering and the unordered mode's record counter),
    /// looking the partition up once.
    fn push_each(
        &mut self,
        tp: &TopicPartition,
        tag: u64,
        items: impl IntoIterator<Item = T>,
        mut sub_lane: impl FnMut(Ordering, &mut u64, &T) -> u64,
    ) {
        self.partition(tp);
        let Self {
            ordering,
            max_batch,
            partitions,
            ready,
            next_record_lane,
            pending,
        } = self;
        let part = partitions.get_mut(tp).expect("created above");
        for item in items {
            let sub = sub_lane(*ordering, next_record_lane, &item);
            let lane = part.lanes.entry(sub).or_insert_with(Lane::new);
            if lane.is_empty() && !lane.busy {
                ready.push_back((part.tp.clone(), sub));
            }
            lane.push(tag, item, *max_batch);
            *pending += 1;
        }
    }

    /// Put items a unit took but did not start back at the front of its
    /// (still busy) lane, in their order, before [`Scheduler::done`].
    pub fn give_back(&mut self, id: &LaneId, tag: u64, items: Vec<T>) {
        if items.is_empty() {
            return;
        }
        let added = items.len();
        let Some(lane) = self.lane_mut(id) else {
            return;
        };
        lane.chunks.push_front(Chunk { tag, items });
        self.pending += added;
    }

    /// The next unit of work: up to `max_batch` items of one idle lane,
    /// which is busy until [`Scheduler::done`]. Its first chunk, taken
    /// whole (no copy); a short one (given back, or a small poll) is joined
    /// by the whole chunks after it with the same tag while they fit.
    pub fn next_unit(&mut self) -> Option<Taken<T>> {
        let max_batch = self.max_batch;
        while let Some(id) = self.ready.pop_front() {
            let Some(lane) = self.lane_mut(&id) else {
                continue;
            };
            if lane.busy {
                continue;
            }
            let Some(Chunk { tag, mut items }) = lane.chunks.pop_front() else {
                continue;
            };
            // Whole chunks of the same tag join the unit while they fit. A
            // chunk that does not fit is not split: taking its head would
            // shift the rest of it in place, a copy of nearly every record
            // when a lane's backlog is poll-sized chunks (500 against 512).
            while let Some(next) = lane.chunks.front_mut().filter(|c| c.tag == tag) {
                if items.len() + next.items.len() > max_batch {
                    break;
                }
                items.append(&mut next.items);
                lane.chunks.pop_front();
            }
            lane.busy = true;
            self.pending -= items.len();
            return Some(Taken {
                lane: id,
                tag,
                items,
            });
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
        if lane.is_empty() {
            part.lanes.remove(&id.1);
            if part.lanes.is_empty() {
                self.partitions.remove(&*id.0);
            }
        } else {
            self.ready.push_back(id.clone());
        }
    }

    /// Take every pending (not started) item of `tp` with its tag, in no
    /// particular order. Running units stay busy until `done`.
    pub fn remove_partition(&mut self, tp: &TopicPartition) -> Vec<(u64, Vec<T>)> {
        let Some(part) = self.partitions.get_mut(tp) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        part.lanes.retain(|_, lane| {
            out.extend(lane.drain());
            lane.busy
        });
        if part.lanes.is_empty() {
            self.partitions.remove(tp);
        }
        self.pending -= out.iter().map(|(_, v)| v.len()).sum::<usize>();
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

    fn take<T>(s: &mut Scheduler<T>) -> Option<(LaneId, Vec<T>)> {
        s.next_unit().map(|t| (t.lane, t.items))
    }

    #[test]
    fn per_partition_runs_one_unit_per_partition_in_order() {
        let mut s = Scheduler::new(Ordering::PerPartition, 2);
        for i in 0..5 {
            s.push(&tp(0), 0, None, i);
        }
        s.push(&tp(1), 0, None, 100);
        let (a, items) = take(&mut s).unwrap();
        assert_eq!(items, [0, 1]);
        let (b, items) = take(&mut s).unwrap();
        assert_eq!(items, [100]);
        assert!(s.next_unit().is_none(), "partition 0 is busy");
        s.done(&a);
        assert_eq!(take(&mut s).unwrap().1, [2, 3]);
        s.done(&b);
        assert!(s.next_unit().is_none());
    }

    #[test]
    fn a_polls_vector_is_split_into_units_of_max_batch_in_order() {
        let mut s = Scheduler::new(Ordering::PerPartition, 3);
        s.push_all(&tp(0), 0, (0..8).collect(), |_| None);
        assert_eq!(s.pending(), 8);
        let mut got = Vec::new();
        while let Some((lane, items)) = take(&mut s) {
            got.push(items);
            s.done(&lane);
        }
        assert_eq!(got, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7]]);
    }

    #[test]
    fn items_given_back_run_next_and_in_order() {
        let mut s = Scheduler::new(Ordering::PerPartition, 3);
        s.push_all(&tp(0), 0, (0..5).collect(), |_| None);
        let (lane, items) = take(&mut s).unwrap();
        assert_eq!(items, [0, 1, 2]);
        s.push_all(&tp(0), 0, vec![5], |_| None); // arrives while the unit runs
                                                  // The unit handled 0 only (its time budget ran out).
        s.give_back(&lane, 0, vec![1, 2]);
        assert_eq!(s.pending(), 5);
        assert!(s.next_unit().is_none(), "still busy until done");
        s.done(&lane);
        let (lane, items) = take(&mut s).unwrap();
        assert_eq!(items, [1, 2], "the next chunk would not fit whole");
        s.done(&lane);
        assert_eq!(take(&mut s).unwrap().1, [3, 4, 5], "whole chunks join");
    }

    #[test]
    fn a_unit_never_mixes_tags() {
        let mut s = Scheduler::new(Ordering::PerPartition, 10);
        s.push_all(&tp(0), 1, vec![0, 1], |_| None);
        s.push_all(&tp(0), 2, vec![2, 3], |_| None);
        s.push(&tp(0), 2, None, 4);
        let t = s.next_unit().unwrap();
        assert_eq!((t.tag, t.items), (1, vec![0, 1]));
        s.done(&t.lane);
        let t = s.next_unit().unwrap();
        assert_eq!((t.tag, t.items), (2, vec![2, 3, 4]));
    }

    #[test]
    fn per_key_runs_keys_in_parallel_and_each_key_in_order() {
        let mut s = Scheduler::new(Ordering::PerKey, 1);
        s.push(&tp(0), 0, Some(b"a"), 1);
        s.push(&tp(0), 0, Some(b"a"), 2);
        s.push(&tp(0), 0, Some(b"b"), 3);
        let (la, x) = take(&mut s).unwrap();
        let (_, y) = take(&mut s).unwrap();
        assert_eq!((x[0], y[0]), (1, 3));
        assert!(s.next_unit().is_none(), "key a's second record waits");
        s.done(&la);
        assert_eq!(take(&mut s).unwrap().1, [2]);
    }

    #[test]
    fn per_key_a_poll_of_one_key_stays_one_chunk_and_mixed_keys_split() {
        let mut s = Scheduler::new(Ordering::PerKey, 10);
        fn key(i: &i32) -> Option<&[u8]> {
            Some(if *i < 10 { b"a" } else { b"b" })
        }
        s.push_all(&tp(0), 0, vec![0, 1, 2], key); // one key: one chunk
        s.push_all(&tp(0), 0, vec![3, 10, 4, 11], key); // two keys
        let (la, a) = take(&mut s).unwrap();
        assert_eq!(a, [0, 1, 2, 3, 4], "key a, in order, topped up");
        let (_, b) = take(&mut s).unwrap();
        assert_eq!(b, [10, 11], "key b in parallel");
        s.done(&la);
        // Records without a key share one lane, like one key.
        s.push_all(&tp(1), 0, vec![20, 21], |_| None);
        s.push(&tp(1), 0, None, 22);
        assert_eq!(take(&mut s).unwrap().1, [20, 21, 22]);
    }

    #[test]
    fn unordered_starts_everything() {
        let mut s = Scheduler::new(Ordering::Unordered, 8);
        for i in 0..4 {
            s.push(&tp(0), 0, Some(b"same"), i);
        }
        let started: Vec<i32> = std::iter::from_fn(|| take(&mut s))
            .flat_map(|(_, v)| v)
            .collect();
        assert_eq!(started, [0, 1, 2, 3]);
    }

    #[test]
    fn removing_a_partition_returns_its_pending_items_only() {
        let mut s = Scheduler::new(Ordering::PerPartition, 1);
        for i in 0..3 {
            s.push(&tp(0), 7, None, i);
        }
        s.push(&tp(1), 0, None, 9);
        let (running, _) = take(&mut s).unwrap(); // item 0 runs
        let removed = s.remove_partition(&tp(0));
        let mut items: Vec<i32> = removed.iter().flat_map(|(_, v)| v.clone()).collect();
        items.sort();
        assert_eq!(items, [1, 2]);
        assert!(removed.iter().all(|(tag, _)| *tag == 7));
        assert_eq!(s.pending(), 1);
        assert_eq!(take(&mut s).unwrap().1, [9]);
        s.done(&running); // the running unit finishes later: nothing follows it
        assert!(s.next_unit().is_none());
    }

    proptest! {
        /// Any interleaving of pushes (one at a time, or a poll's vector),
        /// starts, give-backs and completions: nothing is lost or started
        /// twice, a unit holds 1..=max_batch items of one tag, a lane never
        /// runs two units at once, and per-lane order is arrival order.
        #[test]
        fn every_item_starts_once_in_lane_order(
            mode in prop_oneof![Just(Ordering::PerPartition), Just(Ordering::PerKey), Just(Ordering::Unordered)],
            ops in prop::collection::vec((0u8..5, 0i32..3, 0u8..4), 1..200),
        ) {
            const KEYS: [[u8; 1]; 4] = [[0], [1], [2], [3]];
            let mut s = Scheduler::new(mode, 3);
            let mut next_item = 0u32;
            let mut tag = 0u64;
            let mut pushed: Vec<(i32, u8, u32)> = Vec::new();
            let mut tags: std::collections::HashMap<u32, u64> = Default::default();
            let mut running: Vec<(LaneId, Vec<u32>)> = Vec::new();
            let mut started: Vec<u32> = Vec::new();
            for (op, p, k) in ops {
                match op {
                    0 => {
                        s.push(&tp(p), tag, Some(&KEYS[usize::from(k)]), next_item);
                        pushed.push((p, k, next_item));
                        tags.insert(next_item, tag);
                        next_item += 1;
                    }
                    3 => {
                        // A poll's worth at once: keys follow the item (item % 4).
                        let items: Vec<u32> = (next_item..next_item + u32::from(k) * 2 + 1).collect();
                        next_item += items.len() as u32;
                        pushed.extend(items.iter().map(|i| (p, (i % 4) as u8, *i)));
                        tags.extend(items.iter().map(|i| (*i, tag)));
                        s.push_all(&tp(p), tag, items, |i| Some(&KEYS[(*i % 4) as usize][..]));
                    }
                    4 => tag += u64::from(k % 2), // a new epoch, sometimes
                    1 => {
                        if let Some(t) = s.next_unit() {
                            prop_assert!(running.iter().all(|(l, _)| *l != t.lane), "lane ran twice at once");
                            prop_assert!(!t.items.is_empty() && t.items.len() <= 3, "a unit of {} items", t.items.len());
                            prop_assert!(t.items.iter().all(|i| tags[i] == t.tag), "a unit mixed tags");
                            // Sometimes the unit starts only its first item and gives the rest back.
                            if k == 0 && t.items.len() > 1 {
                                let rest = t.items[1..].to_vec();
                                started.push(t.items[0]);
                                s.give_back(&t.lane, t.tag, rest);
                                running.push((t.lane, Vec::new()));
                            } else {
                                started.extend(&t.items);
                                running.push((t.lane, t.items));
                            }
                        }
                    }
                    _ => {
                        if !running.is_empty() {
                            let (lane, _) = running.remove(usize::from(k) % running.len());
                            s.done(&lane);
                        }
                    }
                }
            }
            // Drain everything.
            loop {
                while let Some((lane, items)) = take(&mut s) {
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
