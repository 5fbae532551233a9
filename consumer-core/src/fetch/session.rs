//! Fetch sessions (KIP-227), per broker, as pure bookkeeping.
//!
//! The first fetch is *full* (session id 0, epoch 0) and lists every
//! partition; the broker answers with a session id. Later fetches are
//! *incremental*: they list only partitions whose fetch offset changed since
//! the broker last heard it, and `forgotten` ones that left the session
//! (revoked or paused). Any session error resets to a full fetch.
//!
//! KIP-516: a session addresses its topics by id (Fetch v13+) when every
//! topic in it has one, else by name (v12, which the connection picks for
//! a request with a topic lacking an id). The broker keys a session on
//! one or the other and refuses a switch (FETCH_SESSION_TOPIC_ID_ERROR),
//! so:
//! - a change of addressing, or of a topic's id (deleted and recreated),
//!   starts a full session instead of an incremental request;
//! - a forgotten topic is named by the id it was fetched under;
//! - a session by name never sends an empty incremental request (it
//!   lists one unchanged partition again): an empty request names no
//!   topic, and would go at the broker's highest version, by id.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::tp::TopicPartition;

/// What to put in the next Fetch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub session_id: i32,
    pub epoch: i32,
    /// Partitions to include, with their fetch offsets.
    pub partitions: Vec<(TopicPartition, i64)>,
    pub forgotten: Vec<TopicPartition>,
    /// The id of every topic in `partitions` and `forgotten` (KIP-516), or
    /// `None`: the request names its topics (some topic has no id).
    pub topic_ids: Option<BTreeMap<String, Uuid>>,
}

/// One broker's fetch session.
#[derive(Debug, Clone, Default)]
pub struct FetchSession {
    id: i32,
    /// Next epoch to send; 0 means "start a full session".
    epoch: i32,
    /// What the broker believes: partition → fetch offset last sent.
    known: BTreeMap<TopicPartition, i64>,
    /// How the session addresses its topics: by these ids (each topic in
    /// `known`, by the id it was sent under), or by name (`None`).
    topic_ids: Option<BTreeMap<String, Uuid>>,
}

impl FetchSession {
    /// Build the request for `wanted` (partition → current position).
    /// `topic_id` gives a topic's id, if the metadata has one.
    pub fn next_request(
        &mut self,
        wanted: &BTreeMap<TopicPartition, i64>,
        topic_id: impl Fn(&str) -> Option<Uuid>,
    ) -> SessionRequest {
        let ids: Option<BTreeMap<String, Uuid>> = wanted
            .keys()
            .map(|tp| Some((tp.topic.clone(), topic_id(&tp.topic)?)))
            .collect();
        if self.epoch != 0 && !self.same_addressing(ids.as_ref()) {
            tracing::debug!(
                by_topic_id = ids.is_some(),
                "fetch session: topic ids changed; starting a full session"
            );
            self.reset();
        }
        if self.epoch == 0 {
            self.known = wanted.clone();
            self.topic_ids = ids.clone();
            return SessionRequest {
                session_id: 0,
                epoch: 0,
                partitions: wanted.iter().map(|(tp, o)| (tp.clone(), *o)).collect(),
                forgotten: Vec::new(),
                topic_ids: ids,
            };
        }
        let mut partitions: Vec<(TopicPartition, i64)> = wanted
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
        if self.topic_ids.is_none() && partitions.is_empty() && forgotten.is_empty() {
            // See the module docs: by name, never empty.
            if let Some((tp, o)) = wanted.iter().next() {
                partitions.push((tp.clone(), *o));
            }
        }
        // Forgotten topics go by the ids the broker knows them under.
        let request_ids = self.topic_ids.as_ref().map(|session| {
            let mut all = ids.clone().unwrap_or_default();
            for tp in &forgotten {
                if let Some(id) = session.get(&tp.topic) {
                    all.entry(tp.topic.clone()).or_insert(*id);
                }
            }
            all
        });
        self.known = wanted.clone();
        self.topic_ids = ids;
        SessionRequest {
            session_id: self.id,
            epoch: self.epoch,
            partitions,
            forgotten,
            topic_ids: request_ids,
        }
    }

    /// Does a request with these topic ids (`None`: by name) continue the
    /// session? By name after by name; by id after by id, where every
    /// topic the session knows keeps its id.
    fn same_addressing(&self, ids: Option<&BTreeMap<String, Uuid>>) -> bool {
        match (&self.topic_ids, ids) {
            (None, None) => true,
            (Some(session), Some(ids)) => ids
                .iter()
                .all(|(topic, id)| session.get(topic).is_none_or(|known| known == id)),
            _ => false,
        }
    }

    /// The broker answered. `error` is the top-level error code.
    pub fn handle_response(&mut self, error: i16, session_id: i32) {
        if error != 0 {
            // FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH,
            // FETCH_SESSION_TOPIC_ID_ERROR, …: start over.
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
        self.topic_ids = None;
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

    fn no_ids(_: &str) -> Option<Uuid> {
        None
    }

    /// Topic `t` has id 1, `u` id 2, any other none.
    fn ids(topic: &str) -> Option<Uuid> {
        match topic {
            "t" => Some(Uuid::from_u128(1)),
            "u" => Some(Uuid::from_u128(2)),
            _ => None,
        }
    }

    #[test]
    fn full_then_incremental_then_forget() {
        let mut s = FetchSession::default();
        let first = s.next_request(&wanted(&[("t", 0, 0), ("t", 1, 0)]), no_ids);
        assert_eq!(
            (first.session_id, first.epoch, first.partitions.len()),
            (0, 0, 2)
        );
        s.handle_response(0, 77);
        // Only partition 0 advanced: only it is sent.
        let second = s.next_request(&wanted(&[("t", 0, 5), ("t", 1, 0)]), no_ids);
        assert_eq!((second.session_id, second.epoch), (77, 1));
        assert_eq!(second.partitions, vec![(TopicPartition::new("t", 0), 5)]);
        s.handle_response(0, 77);
        // Partition 1 paused or revoked: forgotten.
        let third = s.next_request(&wanted(&[("t", 0, 5)]), no_ids);
        assert!(third.partitions.is_empty());
        assert_eq!(third.forgotten, vec![TopicPartition::new("t", 1)]);
        assert_eq!(third.epoch, 2);
    }

    #[test]
    fn session_errors_start_over_with_a_full_fetch() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 0)]), no_ids);
        s.handle_response(0, 9);
        s.next_request(&wanted(&[("t", 0, 3)]), no_ids);
        s.handle_response(71, 0); // INVALID_FETCH_SESSION_EPOCH
        let r = s.next_request(&wanted(&[("t", 0, 3)]), no_ids);
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 1));
    }

    #[test]
    fn sessionless_broker_keeps_full_fetches() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 0)]), no_ids);
        s.handle_response(0, 0);
        let r = s.next_request(&wanted(&[("t", 0, 0)]), no_ids);
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 1));
    }

    #[test]
    fn a_session_by_id_names_every_topic_by_id_and_forgotten_ones_by_their_old_id() {
        let mut s = FetchSession::default();
        let first = s.next_request(&wanted(&[("t", 0, 0), ("u", 0, 0)]), ids);
        let expected: BTreeMap<String, Uuid> = [("t", 1), ("u", 2)]
            .map(|(t, id)| (t.to_string(), Uuid::from_u128(id)))
            .into_iter()
            .collect();
        assert_eq!(first.topic_ids, Some(expected));
        s.handle_response(0, 5);
        // `u` left the metadata (deleted) and the assignment: forgotten by
        // the id the broker knows it under.
        let only_t = |topic: &str| (topic == "t").then(|| Uuid::from_u128(1));
        let second = s.next_request(&wanted(&[("t", 0, 0)]), only_t);
        assert_eq!((second.session_id, second.epoch), (5, 1), "incremental");
        assert!(second.partitions.is_empty(), "nothing changed: empty");
        assert_eq!(second.forgotten, vec![TopicPartition::new("u", 0)]);
        assert_eq!(
            second.topic_ids.unwrap().get("u"),
            Some(&Uuid::from_u128(2))
        );
        s.handle_response(0, 5);
        let third = s.next_request(&wanted(&[("t", 0, 0)]), only_t);
        assert!(third.partitions.is_empty() && third.forgotten.is_empty());
        assert!(third.topic_ids.is_some(), "an empty request goes by id");
    }

    #[test]
    fn a_recreated_topic_or_a_change_of_addressing_starts_a_full_session() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 0)]), ids);
        s.handle_response(0, 5);
        let recreated = |_: &str| Some(Uuid::from_u128(9));
        let r = s.next_request(&wanted(&[("t", 0, 0)]), recreated);
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 1));
        assert_eq!(r.topic_ids.unwrap()["t"], Uuid::from_u128(9));
        s.handle_response(0, 6);
        // A topic without an id joins: the session goes by name, anew.
        let r = s.next_request(&wanted(&[("t", 0, 0), ("x", 0, 0)]), recreated_or_none);
        assert_eq!((r.session_id, r.epoch, r.partitions.len()), (0, 0, 2));
        assert_eq!(r.topic_ids, None);
        s.handle_response(0, 7);
        // It leaves again: by id, anew.
        let r = s.next_request(&wanted(&[("t", 0, 0)]), recreated);
        assert_eq!((r.session_id, r.epoch), (0, 0));
        assert!(r.topic_ids.is_some());
    }

    fn recreated_or_none(topic: &str) -> Option<Uuid> {
        (topic == "t").then(|| Uuid::from_u128(9))
    }

    #[test]
    fn a_session_by_name_never_sends_an_empty_request() {
        let mut s = FetchSession::default();
        s.next_request(&wanted(&[("t", 0, 4), ("t", 1, 7)]), no_ids);
        s.handle_response(0, 5);
        let r = s.next_request(&wanted(&[("t", 0, 4), ("t", 1, 7)]), no_ids);
        assert_eq!((r.session_id, r.epoch), (5, 1), "still incremental");
        assert_eq!(r.partitions, vec![(TopicPartition::new("t", 0), 4)]);
        assert_eq!(r.topic_ids, None);
    }
}
