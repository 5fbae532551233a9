//! A share group's completion (KIP-932): one acknowledgement per record,
//! waiting here until the poll task, which owns the `ShareConsumer`, takes
//! them ([`Acks::take`]) and hands them to it. There is no commit point and
//! nothing to load: the broker keeps each record's state.
//!
//! ```text
//!  Outcome     acknowledgement
//!  Handled     ACCEPT
//!  Forwarded   ACCEPT   (the runtime's DLT write was acknowledged first)
//!  Rejected    REJECT   (the group's own DLQ, KIP-1191, gets it from the broker)
//!  Released    RELEASE  (delivered again, its delivery count one higher)
//! ```
//!
//! The delivery count of each record dispatched is kept until it
//! finishes: it is the attempt the handler's span shows and the failure
//! policy counts (a record released twice starts at attempt 3).

use std::collections::HashMap;

use consumer_core::share::AcknowledgeType;
use kafka_wire::records::Record;

use super::{Completion, Outcome};

/// One partition's acknowledgements not yet given to the consumer, and the
/// delivery counts of its records in flight.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    /// Dispatched, not finished: offset → delivery count.
    delivering: HashMap<i64, u16>,
    /// Finished, not yet taken by the poll task.
    pending: Vec<(i64, AcknowledgeType)>,
}

/// The acknowledgement an outcome leads to (the module's table).
pub(crate) fn ack_of(outcome: Outcome) -> AcknowledgeType {
    match outcome {
        Outcome::Handled | Outcome::Forwarded => AcknowledgeType::Accept,
        Outcome::Rejected => AcknowledgeType::Reject,
        Outcome::Released => AcknowledgeType::Release,
    }
}

impl Completion for Acks {
    type Loaded = ();

    const REDELIVERS: bool = true;

    fn new(_epoch: u64, _start: i64, _loaded: Option<()>) -> Self {
        Acks::default()
    }

    fn dispatched(&mut self, records: &mut Vec<Record>) -> u64 {
        for r in records.iter() {
            self.delivering.entry(r.offset).or_insert(1);
        }
        0
    }

    fn finished(&mut self, offset: i64, outcome: Outcome) {
        // Only a record still delivered here is acknowledged, once.
        if self.delivering.remove(&offset).is_some() {
            self.pending.push((offset, ack_of(outcome)));
        }
    }

    fn passed(&mut self, _next: i64) {}

    fn holds_fetching(&self) -> bool {
        false
    }

    fn attempt(&self, offset: i64) -> u32 {
        self.delivering.get(&offset).map_or(1, |c| u32::from(*c))
    }
}

impl Acks {
    /// The poll task is about to dispatch the record at `offset`, which the
    /// broker delivered for the `delivery_count`-th time.
    pub(crate) fn delivered(&mut self, offset: i64, delivery_count: u16) {
        self.delivering.insert(offset, delivery_count.max(1));
    }

    /// The acknowledgements not taken yet, oldest first.
    pub(crate) fn take(&mut self) -> Vec<(i64, AcknowledgeType)> {
        std::mem::take(&mut self.pending)
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
    fn each_outcome_is_one_acknowledgement_and_a_record_is_acknowledged_once() {
        let mut a = Acks::new(1, 0, None);
        a.delivered(12, 3);
        let mut polled = records(10..14);
        assert_eq!(a.dispatched(&mut polled), 0, "nothing is done before");
        assert_eq!(polled.len(), 4);
        assert_eq!(a.attempt(10), 1);
        assert_eq!(a.attempt(12), 3, "the delivery count is the attempt");
        a.finished(10, Outcome::Handled);
        a.finished(11, Outcome::Forwarded);
        a.finished(12, Outcome::Released);
        a.finished(13, Outcome::Rejected);
        a.finished(13, Outcome::Handled); // a second report: ignored
        use AcknowledgeType::*;
        assert_eq!(
            a.take(),
            [(10, Accept), (11, Accept), (12, Release), (13, Reject)]
        );
        assert!(a.take().is_empty(), "taken once");
        a.finished(99, Outcome::Handled);
        assert!(a.take().is_empty(), "never delivered here");
    }
}
