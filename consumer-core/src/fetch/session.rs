//! Fetch sessions (KIP-227), per broker, as pure bookkeeping.
//!
//! The first fetch is *full* (session id 0, epoch 0) and lists every
//! partition; the broker answers with a session id. Later fetches are
//! *incremental*: they list only partitions whose fetch offset changed since
//! the broker last heard it, and `forgotten` ones that left the session
//! (revoked or paused). Any session error resets to a full fetch.

use std::collections::BTreeMap;

use crate::tp::TopicPartition;

/// What to put in the next Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// Partitions to include, with their fetch offsets.
    pub partitions: Vec<(TopicPartition, i64)>,
    pub forgotten: Vec<TopicPartition>,
}

/// One broker's fetch session.
#[derive(Debug, Clone, Default)]
pub struct FetchSession {
    id: i32,
    /// Next epoch to send; 0 means "start a full session".
    epoch: i32,
    /// What the broker believes: partition → fetch offset last sent.
    known: BTreeMap<TopicPartition, i64>,
}

impl FetchSession {
    /// Build the request for `wanted` (partition → current position).
    pub fn next_request(&mut self, wanted: &BTreeMap<TopicPartition, i64>) -> SessionRequest {
        if self.epoch == 0 {
            self.known = wanted.clone();
            return SessionRequest {
                session_id: 0,
                epoch: 0,
                partitions: wanted.iter().map(|(tp, o)| (tp.clone(), *o)).collect(),
                forgotten: Vec::new(),
            };
        }
        let partitions: Vec<(TopicPartition, i64)> = wanted
            .iter()
            .filter(|(tp, o)| self.known.get(*tp) != Some(*o))
            .map(|(tp, o)| (tp.clone(), *o))
            .collect();
        let forgotten: Vec<TopicPartition> = self
            .known
            .keys()
            .filter(|tp| !wanted.contains_key(*tp))
            .cloned()
            .collect();
        self.known = wanted.clone();
        SessionRequest {
            session_id: self.id,
            epoch: self.epoch,
            partitions,
            forgotten,
        }
    }

    /// The broker answered. `error` is the top-level error code.
    pub fn handle_response(&mut self, error: i16, session_id: i32) {
        if error != 0 {
            // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH, …: start over.
            self.reset();
            return;
        }
        if session_id == 0 {
            // The broker declined a session (or it is full): stay sessionless.
            self.reset();
            return;
        }
        if self.epoch == 0 {
            self.id = session_id;
        }
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
    }

    /// The request failed or its outcome is unknown: start a full session.
    pub fn reset(&mut self) {
        self.id = 0;
        self.epoch = 0;
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(items: &[(&str, i32, i64)]) -> BTreeMap<TopicPartition, i64> {
        items
            .iter()
            .map(|(t, p, o)| (TopicPartition::new(*t, *p), *o))
            .collect()
    }

    #[test]
    fn full_then_incremental_then_forget() {
        let mut s = FetchSession::default();
        let first = s.next_request(&wanted(&[("t", 0, 0), ("t", 1, 0)]));
        assert_eq!(
            (first.session_id, first.epoch, first.partitions.len()),
            (0, 0, 2)
        );
        s.handle_response(0, 77);
        // Only partition 0 advanced: only it is sent.
        let second = s.next_request(&wanted(&[("t", 0, 5), ("t", 1, 0)]));
        assert_eq!((second.session_id, second.epoch), (77, 1));
        assert_eq!(second.partitions, vec![(TopicPartition::new("t", 0), 5)]);
        s.handle_response(0, 77);
        // Partition 1 paused or revoked: forgotten.
        let third = s.next_request(&wanted(&[("t", 0, 5)]));
        assert!(third.partitions.is_empty());
        assert_eq!(third.forgotten, vec![TopicPartition::new("t", 1)]);
        assert_eq!(third.epoch, 2);
    }

    #[test]
    fn session_errors_start_over_with_a_full_fetch() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 0)]));
        s.handle_response(0, 9);
        s.next_request(&wanted(&[("t", 0, 3)]));
        s.handle_response(71, 0); // INVALID_FETCH_SESSION_EPOCH
        let r = s.next_request(&wanted(&[("t", 0, 3)]));
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 1));
    }

    #[test]
    fn sessionless_broker_keeps_full_fetches() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 0)]));
        s.handle_response(0, 0);
        let r = s.next_request(&wanted(&[("t", 0, 0)]));
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 1));
    }
}
