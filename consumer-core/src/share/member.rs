//! A **minimal** share group member (ShareGroupHeartbeat, KIP-932 v1):
//! join, heartbeat at the broker's interval, take the assignment, leave.
//!
//! **To be moved onto the group driver** (`crate::group`, the one
//! `GroupMachine` loop being written): it is here only so that the share
//! fetch path can run end to end. It talks to the fetch path through one
//! call, [`super::driver::Shared::assign`], with the whole assignment;
//! that is the seam the group driver's share role will call.
//!
//! ```text
//!  Joining (epoch 0, subscription) ──answer──▶ Stable (epoch n) ──every heartbeat_interval_ms──┐
//!     ▲                                            │  ▲                                          │
//!     │ UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH:   │  └──────────────────────────────────────────┘
//!     └── assignment lost, rejoin, same member id ─┘
//!  NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE: find the coordinator again
//!  authorization, UNSUPPORTED_VERSION, a group id of another type, …: Failed
//!  leave(): one heartbeat with epoch -1
//! ```
//!
//! What the full member will add: reconciliation with the fetch path
//! (acknowledging revoked partitions before the next heartbeat), rack
//! changes, subscription changes by pattern, backoff on every error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_wire::messages::{
    GroupId, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use kafka_wire::{Client, CoordinatorKind, KafkaCode, Lane, StrBytes};
use tokio::sync::watch;
use uuid::Uuid;

use super::driver::Shared;
use super::TopicIdPartition;
use crate::tp::TopicPartition;

/// The epoch that joins, and the one that leaves.
const JOIN_EPOCH: i32 = 0;
const LEAVE_EPOCH: i32 = -1;

/// What an answer means for the member's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MemberEvent {
    /// The whole new assignment: topic id → partitions.
    Assigned(BTreeMap<Uuid, BTreeSet<i32>>),
    /// Fenced or unknown: the assignment is gone; rejoining.
    Lost,
    /// Look for the coordinator again.
    FindCoordinator,
    /// Given up; the text says why and what to change.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Joining,
    Stable,
    Failed,
}

/// The member's state (pure: answers and `now` in, requests out).
#[derive(Debug)]
pub(crate) struct ShareMember {
    group_id: String,
    member_id: String,
    rack: Option<String>,
    topics: Vec<String>,
    epoch: i32,
    state: State,
    /// Send the subscription (and rack) in the next heartbeat.
    send_full: bool,
    interval: Duration,
    retry_backoff: Duration,
    next_at: Instant,
}

impl ShareMember {
    pub(crate) fn new(
        group_id: &str,
        member_id: &str,
        rack: Option<String>,
        topics: Vec<String>,
        retry_backoff: Duration,
        now: Instant,
    ) -> Self {
        Self {
            group_id: group_id.to_string(),
            member_id: member_id.to_string(),
            rack,
            topics,
            epoch: JOIN_EPOCH,
            state: State::Joining,
            send_full: true,
            interval: Duration::from_secs(5),
            retry_backoff,
            next_at: now,
        }
    }

    /// When the next heartbeat is due.
    pub(crate) fn poll_timeout(&self) -> Instant {
        self.next_at
    }

    pub(crate) fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The heartbeat to send now, if one is due.
    pub(crate) fn heartbeat(&mut self, now: Instant) -> Option<ShareGroupHeartbeatRequest> {
        if self.state == State::Failed || now < self.next_at {
            return None;
        }
        // Not again before the answer (or a failure) reschedules it.
        self.next_at = now + self.interval.max(self.retry_backoff);
        let mut req = ShareGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.epoch);
        if self.send_full {
            req = req
                .with_rack_id(self.rack.clone().map(StrBytes::from_string))
                .with_subscribed_topic_names(Some(
                    self.topics
                        .iter()
                        .map(|t| TopicName(StrBytes::from_string(t.clone())))
                        .collect(),
                ));
        } else {
            req = req.with_subscribed_topic_names(None);
        }
        Some(req)
    }

    /// The heartbeat to leave the group (epoch -1), if joined.
    pub(crate) fn leave(&mut self) -> Option<ShareGroupHeartbeatRequest> {
        let joined = self.epoch > JOIN_EPOCH && self.state != State::Failed;
        self.state = State::Failed;
        joined.then(|| {
            ShareGroupHeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(self.group_id.clone())))
                .with_member_id(StrBytes::from_string(self.member_id.clone()))
                .with_member_epoch(LEAVE_EPOCH)
                .with_subscribed_topic_names(None)
        })
    }

    /// The answer to the last heartbeat.
    pub(crate) fn handle_response(
        &mut self,
        resp: &ShareGroupHeartbeatResponse,
        now: Instant,
    ) -> Option<MemberEvent> {
        let Some(code) = KafkaCode::try_from_code(resp.error_code) else {
            self.epoch = resp.member_epoch;
            self.state = State::Stable;
            self.send_full = false;
            if resp.heartbeat_interval_ms > 0 {
                self.interval = Duration::from_millis(resp.heartbeat_interval_ms as u64);
            }
            self.next_at = now + self.interval;
            return resp.assignment.as_ref().map(|a| {
                MemberEvent::Assigned(
                    a.topic_partitions
                        .iter()
                        .map(|t| (t.topic_id, t.partitions.iter().copied().collect()))
                        .collect(),
                )
            });
        };
        let message = resp
            .error_message
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| format!(" (the broker says: {m})"))
            .unwrap_or_default();
        self.next_at = now + self.retry_backoff;
        match code {
            KafkaCode::NotCoordinator | KafkaCode::CoordinatorNotAvailable => {
                Some(MemberEvent::FindCoordinator)
            }
            KafkaCode::UnknownMemberId | KafkaCode::FencedMemberEpoch => {
                tracing::info!(group = %self.group_id, ?code, "share member rejoins; assignment lost");
                self.epoch = JOIN_EPOCH;
                self.state = State::Joining;
                self.send_full = true;
                self.next_at = now;
                Some(MemberEvent::Lost)
            }
            KafkaCode::UnsupportedVersion => self.failed(format!(
                "the coordinator refused ShareGroupHeartbeat (UNSUPPORTED_VERSION){message}: \
                 share groups are off; on Kafka 4.1+ turn them on with `bin/kafka-features.sh \
                 --bootstrap-server <broker> upgrade --feature share.version=1`"
            )),
            KafkaCode::GroupIdNotFound | KafkaCode::InconsistentGroupProtocol => {
                self.failed(format!(
                    "group.id {:?} cannot be a share group{message}: a consumer, classic or \
                     streams group has it; give the share group an id of its own",
                    self.group_id
                ))
            }
            KafkaCode::GroupAuthorizationFailed | KafkaCode::TopicAuthorizationFailed => self
                .failed(format!(
                    "{code:?}{message}: this principal needs READ on group {:?} and on the topics",
                    self.group_id
                )),
            KafkaCode::GroupMaxSizeReached => self.failed(format!(
                "the share group {:?} is full (group.share.max.size){message}",
                self.group_id
            )),
            c if c.is_retriable() => None,
            c => self.failed(format!("ShareGroupHeartbeat failed: {c:?}{message}")),
        }
    }

    /// The heartbeat got no answer (connection lost, timeout).
    pub(crate) fn handle_error(&mut self, now: Instant) -> MemberEvent {
        self.next_at = now + self.retry_backoff;
        MemberEvent::FindCoordinator
    }

    fn failed(&mut self, why: String) -> Option<MemberEvent> {
        self.state = State::Failed;
        Some(MemberEvent::Failed(why))
    }
}

/// Topic ids → the partitions (with names) metadata knows; `None` when
/// some id is unknown to it yet.
fn resolve(
    client: &Client,
    assignment: &BTreeMap<Uuid, BTreeSet<i32>>,
) -> Option<BTreeSet<TopicIdPartition>> {
    let md = client.metadata();
    let mut out = BTreeSet::new();
    for (id, parts) in assignment {
        let topic = md.topics.values().find(|t| t.id == *id.as_bytes())?;
        out.extend(
            parts
                .iter()
                .map(|p| TopicIdPartition::new(*id, TopicPartition::new(topic.name.clone(), *p))),
        );
    }
    Some(out)
}

/// Run `member` until it fails or `stop` turns true (then it leaves).
/// Assignments go to `shared`; a failure is stored there for `poll`.
pub(crate) async fn run(
    client: Client,
    shared: Arc<Shared>,
    mut member: ShareMember,
    mut stop: watch::Receiver<bool>,
) {
    let group = member.group_id.clone();
    let mut coordinator: Option<i32> = None;
    let mut unresolved: Option<BTreeMap<Uuid, BTreeSet<i32>>> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let wait = tokio::time::Instant::from_std(member.poll_timeout());
        tokio::select! {
            _ = tokio::time::sleep_until(wait) => {}
            _ = stop.changed() => break,
        }
        let coord = match coordinator {
            Some(c) => c,
            None => match client
                .find_coordinator(CoordinatorKind::Group, &group)
                .await
            {
                Ok(c) => *coordinator.insert(c),
                Err(e) if e.is_retriable() => {
                    tracing::debug!(%group, error = %e, "share group coordinator not found yet");
                    member.handle_error(Instant::now());
                    continue;
                }
                Err(e) => {
                    shared.fail_membership(format!("finding the coordinator of {group:?}: {e}"));
                    return;
                }
            },
        };
        let Some(req) = member.heartbeat(Instant::now()) else {
            continue;
        };
        let event = match client
            .send_to(coord, Lane::Group, &req, Duration::ZERO)
            .await
        {
            Ok(resp) => member.handle_response(&resp, Instant::now()),
            Err(e) => {
                tracing::debug!(%group, error = %e, "share group heartbeat failed");
                Some(member.handle_error(Instant::now()))
            }
        };
        match event {
            Some(MemberEvent::Assigned(a)) => unresolved = Some(a),
            Some(MemberEvent::Lost) => {
                unresolved = None;
                shared.assign(BTreeSet::new());
            }
            Some(MemberEvent::FindCoordinator) => coordinator = None,
            Some(MemberEvent::Failed(why)) => {
                shared.fail_membership(why);
                return;
            }
            None => {}
        }
        if let Some(a) = &unresolved {
            let parts = match resolve(&client, a) {
                Some(p) => Some(p),
                None => {
                    let _ = client.refresh_metadata(None).await;
                    resolve(&client, a)
                }
            };
            if let Some(parts) = parts {
                tracing::info!(%group, partitions = parts.len(), epoch = member.epoch(),
                    "share group assignment");
                shared.assign(parts);
                unresolved = None;
            }
        }
    }
    if let (Some(req), Some(coord)) = (member.leave(), coordinator) {
        if let Err(e) = client
            .send_to(coord, Lane::Group, &req, Duration::ZERO)
            .await
        {
            tracing::debug!(%group, error = %e, "leaving the share group failed; the session timeout removes the member");
        }
    }
}

#[cfg(test)]
mod tests {
    use kafka_wire::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};

    use super::*;

    fn member(now: Instant) -> ShareMember {
        ShareMember::new(
            "g",
            "m1",
            None,
            vec!["t".into()],
            Duration::from_millis(100),
            now,
        )
    }

    fn ok(epoch: i32, assignment: Option<Vec<(Uuid, Vec<i32>)>>) -> ShareGroupHeartbeatResponse {
        ShareGroupHeartbeatResponse::default()
            .with_member_epoch(epoch)
            .with_heartbeat_interval_ms(5000)
            .with_assignment(assignment.map(|a| {
                Assignment::default().with_topic_partitions(
                    a.into_iter()
                        .map(|(id, p)| {
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(p)
                        })
                        .collect(),
                )
            }))
    }

    #[test]
    fn joins_with_epoch_0_and_the_subscription_then_heartbeats_at_the_interval() {
        let t0 = Instant::now();
        let mut m = member(t0);
        let join = m.heartbeat(t0).unwrap();
        assert_eq!(join.member_epoch, 0);
        assert_eq!(join.member_id.as_str(), "m1");
        assert_eq!(join.subscribed_topic_names.as_ref().unwrap().len(), 1);
        assert!(m.heartbeat(t0).is_none(), "one heartbeat at a time");
        let id = Uuid::from_u128(9);
        let ev = m.handle_response(&ok(3, Some(vec![(id, vec![0, 1])])), t0);
        assert_eq!(
            ev,
            Some(MemberEvent::Assigned(BTreeMap::from([(
                id,
                BTreeSet::from([0, 1])
            )])))
        );
        assert!(m.heartbeat(t0 + Duration::from_millis(4999)).is_none());
        let hb = m.heartbeat(t0 + Duration::from_secs(5)).unwrap();
        assert_eq!(hb.member_epoch, 3);
        assert!(hb.subscribed_topic_names.is_none(), "unchanged: null");
        assert_eq!(
            m.handle_response(&ok(3, None), t0),
            None,
            "no assignment change"
        );
    }

    #[test]
    fn fenced_loses_the_assignment_and_rejoins_at_once() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.heartbeat(t0).unwrap();
        m.handle_response(&ok(3, None), t0);
        let t1 = t0 + Duration::from_secs(5);
        m.heartbeat(t1).unwrap();
        let fenced = ShareGroupHeartbeatResponse::default()
            .with_error_code(KafkaCode::FencedMemberEpoch.code());
        assert_eq!(m.handle_response(&fenced, t1), Some(MemberEvent::Lost));
        let rejoin = m.heartbeat(t1).unwrap();
        assert_eq!(rejoin.member_epoch, 0);
        assert!(rejoin.subscribed_topic_names.is_some());
    }

    #[test]
    fn leaving_sends_epoch_minus_1_only_when_joined() {
        let t0 = Instant::now();
        let mut m = member(t0);
        assert!(m.leave().is_none(), "never joined");
        let mut m = member(t0);
        m.heartbeat(t0).unwrap();
        m.handle_response(&ok(2, None), t0);
        assert_eq!(m.leave().unwrap().member_epoch, -1);
    }

    #[test]
    fn errors_say_what_to_change() {
        let t0 = Instant::now();
        let mut m = member(t0);
        m.heartbeat(t0).unwrap();
        let resp = ShareGroupHeartbeatResponse::default()
            .with_error_code(KafkaCode::UnsupportedVersion.code());
        let Some(MemberEvent::Failed(why)) = m.handle_response(&resp, t0) else {
            panic!("fatal");
        };
        assert!(why.contains("share.version=1"), "{why}");
        assert!(
            m.heartbeat(t0 + Duration::from_secs(60)).is_none(),
            "failed for good"
        );

        let mut m = member(t0);
        m.heartbeat(t0).unwrap();
        let resp = ShareGroupHeartbeatResponse::default()
            .with_error_code(KafkaCode::NotCoordinator.code());
        assert_eq!(
            m.handle_response(&resp, t0),
            Some(MemberEvent::FindCoordinator)
        );
        let resp = ShareGroupHeartbeatResponse::default()
            .with_error_code(KafkaCode::GroupIdNotFound.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "Group g is not a share group.",
            )));
        let Some(MemberEvent::Failed(why)) = m.handle_response(&resp, t0) else {
            panic!("fatal");
        };
        assert!(
            why.contains("id of its own") && why.contains("not a share group"),
            "{why}"
        );
    }
}
