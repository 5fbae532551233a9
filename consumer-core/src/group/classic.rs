//! The classic group protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup):
//! what [`Membership`], its pure state machine ([`membership`]), sends to
//! the coordinator, and how the answers go back. The loop, the poll
//! liveness and the rebalance listener are the group driver's
//! (`group/driver.rs`), shared with KIP-848; this file is only the
//! classic [`Protocol`]: one arm per request.
//!
//! Every request goes on the Group lane (the member's own connection, so a
//! fetch long poll never delays a heartbeat). A JoinGroup and a SyncGroup
//! may wait for the whole rebalance; a heartbeat's answer is awaited at
//! most until the session deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_wire::messages::leave_group_request::MemberIdentity;
use kafka_wire::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_wire::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_wire::{KafkaCode, StrBytes};

pub mod membership;

use super::driver::{until, Coordinator, Protocol};
use super::io::GroupIo;
use super::{counts, replica_racks, s};
use crate::assignor::ReplicaRacks;
use crate::config::ConsumerConfig;
use crate::group::subscription::TopicSubscription;
use membership::{Action, JoinResult, Membership, MembershipConfig};

/// A classic member of `group_id` subscribed to `subscription`, from the
/// consumer's settings, looking for its coordinator at `now`.
pub(super) fn member(
    cfg: &ConsumerConfig,
    group_id: &str,
    subscription: TopicSubscription,
    now: std::time::Instant,
) -> Membership {
    Membership::new(
        MembershipConfig {
            group_id: group_id.to_string(),
            group_instance_id: cfg.group_instance_id.clone(),
            session_timeout: cfg.session_timeout,
            rebalance_timeout: cfg.max_poll_interval,
            heartbeat_interval: cfg.heartbeat_interval,
            max_poll_interval: cfg.max_poll_interval,
            retry_backoff: super::RETRY_BACKOFF,
            metadata_max_age: cfg.client.metadata_max_age,
            rack: cfg.client_rack.clone(),
        },
        cfg.assignors.clone(),
        subscription,
        now,
    )
}

/// The classic protocol's requests (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup) for [`Membership`].
#[derive(Debug)]
pub(super) struct Classic {
    /// `group.instance.id` (KIP-345), sent in SyncGroup and LeaveGroup.
    group_instance_id: Option<String>,
    /// `max.poll.interval.ms`: how long a SyncGroup may wait beyond the
    /// request timeout.
    max_poll_interval: Duration,
    /// The assignor the group chose in the last JoinGroup (named again in
    /// SyncGroup).
    protocol_name: Option<String>,
}

impl Classic {
    pub(super) fn new(cfg: &ConsumerConfig) -> Self {
        Self {
            group_instance_id: cfg.group_instance_id.clone(),
            max_poll_interval: cfg.max_poll_interval,
            protocol_name: None,
        }
    }
}

impl Protocol for Classic {
    type Machine = Membership;

    async fn execute<I: GroupIo>(
        &mut self,
        c: &Coordinator<'_, I>,
        m: &mut Membership,
        action: Action,
    ) {
        let now = super::driver::now;
        let group_id = c.group_id();
        match action {
            Action::Join {
                member_id,
                group_instance_id,
                session_timeout,
                rebalance_timeout,
                protocols,
                reason,
            } => {
                tracing::info!(group = %group_id, %reason, "joining the group");
                let req = JoinGroupRequest::default()
                    .with_group_id(GroupId(s(group_id)))
                    .with_session_timeout_ms(session_timeout.as_millis() as i32)
                    .with_rebalance_timeout_ms(rebalance_timeout.as_millis() as i32)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(group_instance_id.as_deref().map(s))
                    .with_protocol_type(StrBytes::from_static_str("consumer"))
                    .with_protocols(
                        protocols
                            .into_iter()
                            .map(|(name, meta)| {
                                JoinGroupRequestProtocol::default()
                                    .with_name(s(&name))
                                    .with_metadata(meta)
                            })
                            .collect(),
                    )
                    .with_reason(Some(s(&reason)));
                match c.send(&req, rebalance_timeout).await {
                    Ok(r) => {
                        self.protocol_name = r.protocol_name.as_ref().map(|p| p.to_string());
                        let (parts, racks) =
                            partitions_per_topic(c.io(), m.topics(), &r.members).await;
                        m.handle_join_with_racks(
                            JoinResult {
                                error: KafkaCode::try_from_code(r.error_code),
                                generation: r.generation_id,
                                member_id: r.member_id.to_string(),
                                leader: r.leader.to_string(),
                                protocol_name: self.protocol_name.clone(),
                                members: r
                                    .members
                                    .into_iter()
                                    .map(|mm| {
                                        (
                                            mm.member_id.to_string(),
                                            mm.group_instance_id.map(|g| g.to_string()),
                                            mm.metadata,
                                        )
                                    })
                                    .collect(),
                            },
                            &parts,
                            &racks,
                            now(),
                        );
                    }
                    Err(e) => {
                        tracing::warn!(group = %group_id, error = %e, "JoinGroup failed");
                        m.handle_request_failed(now());
                    }
                }
            }
            Action::Sync {
                generation,
                member_id,
                assignments,
            } => {
                let req = SyncGroupRequest::default()
                    .with_group_id(GroupId(s(group_id)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(self.group_instance_id.as_deref().map(s))
                    .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                    .with_protocol_name(self.protocol_name.as_deref().map(s))
                    .with_assignments(
                        assignments
                            .into_iter()
                            .map(|(id, bytes)| {
                                SyncGroupRequestAssignment::default()
                                    .with_member_id(s(&id))
                                    .with_assignment(bytes)
                            })
                            .collect(),
                    );
                match c.send(&req, self.max_poll_interval).await {
                    Ok(r) => {
                        m.handle_sync(KafkaCode::try_from_code(r.error_code), &r.assignment, now())
                    }
                    Err(_) => m.handle_request_failed(now()),
                }
            }
            Action::Heartbeat {
                generation,
                member_id,
            } => {
                let req = HeartbeatRequest::default()
                    .with_group_id(GroupId(s(group_id)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(self.group_instance_id.as_deref().map(s));
                match until(m.session_deadline(), c.send(&req, Duration::ZERO)).await {
                    None => m.heartbeat_abandoned(now()),
                    Some(Ok(r)) => {
                        m.handle_heartbeat(KafkaCode::try_from_code(r.error_code), now())
                    }
                    Some(Err(_)) => m.handle_request_failed(now()),
                }
            }
            Action::Leave { member_id, reason } => {
                tracing::info!(group = %group_id, %reason, "leaving the group");
                let mut req = LeaveGroupRequest::default().with_group_id(GroupId(s(group_id)));
                // v3+ names the member (and its reason); before, one member id.
                let v = c
                    .version(ApiKey::LeaveGroup)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(3);
                req = if v >= 3 {
                    req.with_members(vec![MemberIdentity::default()
                        .with_member_id(s(&member_id))
                        .with_group_instance_id(self.group_instance_id.as_deref().map(s))
                        .with_reason(Some(s(&reason)))])
                } else {
                    req.with_member_id(s(&member_id))
                };
                let _ = c.send(&req, Duration::ZERO).await;
            }
            Action::FindCoordinator
            | Action::RefreshMetadata { .. }
            | Action::Revoke(_)
            | Action::Lose(_)
            | Action::Assign(_)
            | Action::Fatal(_) => unreachable!("the driver's arms (GroupMachine::step)"),
        }
    }
}

/// Partition counts for our topics and every topic the members subscribe
/// to (the leader assigns them), freshly read; and, when a member sent its
/// rack (only the leader is told the members), the racks of those
/// partitions' replicas for a rack-aware assignor (KIP-881).
async fn partitions_per_topic(
    io: &impl GroupIo,
    ours: &[String],
    members: &[kafka_wire::messages::join_group_response::JoinGroupResponseMember],
) -> (BTreeMap<String, i32>, ReplicaRacks) {
    let mut topics: BTreeSet<String> = ours.iter().cloned().collect();
    let mut racked = false;
    for mm in members {
        if let Ok(sub) = crate::protocol::Subscription::decode(&Bytes::clone(&mm.metadata)) {
            topics.extend(sub.topics);
            racked |= sub.rack.is_some_and(|r| !r.is_empty());
        }
    }
    let topics: Vec<String> = topics.into_iter().collect();
    let md = match io.refresh_metadata(Some(&topics)).await {
        Ok(md) => md,
        Err(_) => io.metadata(),
    };
    let racks = if racked {
        replica_racks(&md, &topics)
    } else {
        ReplicaRacks::new()
    };
    (counts(&md, Some(&topics)), racks)
}
