//! The classic group protocol (JoinGroup/SyncGroup/Heartbeat/LeaveGroup):
//! the thin async driver of [`Membership`], its pure state machine
//! ([`membership`]). One task per consumer executes the machine's actions
//! against the coordinator and reports assignment changes to the consumer
//! as [`GroupEvent`]s.
//!
//! It runs independently of `poll()`: heartbeats continue however long the
//! application takes to process, on the Group lane (its own connection, so a
//! fetch long poll never delays them). Liveness is still enforced by
//! `max.poll.interval.ms` through the `polled` watch channel.
//!
//! Every clock is the machine's: the driver sleeps until
//! [`Membership::poll_timeout`], a poll, a close, or a listener's ack,
//! whichever comes first, and sends whatever [`Membership::poll_action`]
//! says. While a rebalance listener runs, that is heartbeats only
//! ([`Membership::listener_started`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use kafka_wire::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_wire::messages::leave_group_request::MemberIdentity;
use kafka_wire::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_wire::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
};
use kafka_wire::{KafkaCode, Lane, StrBytes};
use tokio::sync::oneshot;

pub mod membership;

use super::{counts, replica_racks, GroupEvent, GroupTask};
use crate::assignor::ReplicaRacks;
use membership::{Action, JoinResult, Membership, MembershipConfig, State};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

impl GroupTask {
    /// The classic protocol's loop: until closed (left) or fatal.
    pub(super) async fn run_classic(mut self) {
        let now = std::time::Instant::now();
        let mut m = Membership::new(
            MembershipConfig {
                group_id: self.group_id.clone(),
                group_instance_id: self.cfg.group_instance_id.clone(),
                session_timeout: self.cfg.session_timeout,
                rebalance_timeout: self.cfg.max_poll_interval,
                heartbeat_interval: self.cfg.heartbeat_interval,
                max_poll_interval: self.cfg.max_poll_interval,
                retry_backoff: super::RETRY_BACKOFF,
                metadata_max_age: self.cfg.client.metadata_max_age,
                rack: self.cfg.client_rack.clone(),
            },
            self.cfg.assignors.clone(),
            self.subscription.clone(),
            now,
        );
        let mut protocol_name: Option<String> = None;
        let mut closing = false;
        // The ack of the rebalance listener the machine waits for.
        let mut listener: Option<oneshot::Receiver<()>> = None;
        loop {
            // A close waits for a running listener, as every other decision.
            if *self.close.borrow() && !closing && !m.listener_running() {
                closing = true;
                m.close();
            }
            loop {
                // The latest poll time, before every decision: an action
                // (a JoinGroup can block for the whole rebalance) may have
                // taken long while the application kept polling.
                self.feed_poll_time(&mut m);
                // Published after each action, and when none is left (a
                // listener's deadline may have passed): never between an
                // action handed out and its execution, where a revoke's
                // partitions would be neither owned nor revoking.
                let Some(action) = m.poll_action(std::time::Instant::now()) else {
                    self.publish(&m);
                    break;
                };
                if let Action::Fatal(msg) = &action {
                    tracing::error!(group = %self.group_id, "{msg}");
                    let _ = self.events.send(GroupEvent::Fatal(msg.clone())).await;
                    return;
                }
                self.execute(&mut m, action, &mut protocol_name, &mut listener)
                    .await;
                self.publish(&m);
            }
            if !m.listener_running() {
                listener = None; // past the rebalance timeout: go on without it
            }
            if closing && matches!(m.state(), State::Left) && !m.listener_running() {
                return;
            }
            let wait = m
                .poll_timeout()
                .map(|t| t.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.polled.changed() => {}
                _ = self.close.changed() => {}
                _ = async {
                    match listener.as_mut() {
                        Some(ack) => { let _ = ack.await; }
                        None => std::future::pending().await,
                    }
                } => {
                    // Acknowledged, or the consumer is gone.
                    listener = None;
                    m.listener_done();
                    self.publish(&m);
                }
            }
        }
    }

    /// Hand the application's last poll time to the state machine. Read
    /// with `borrow`, not `has_changed`: `changed()` in the wait below marks
    /// the value seen, and a poll seen that way must still reach `m`.
    fn feed_poll_time(&mut self, m: &mut Membership) {
        let at = *self.polled.borrow_and_update();
        if at > m.last_poll() {
            m.polled(at);
        }
    }

    fn publish(&self, m: &Membership) {
        let mut snap = self.snapshot.lock().expect("group snapshot lock");
        snap.generation = m.generation();
        snap.member_id = m.member_id().to_string();
        snap.stable = matches!(m.state(), State::Stable { .. });
        snap.owned = m.owned().clone();
        snap.revoking = m.revoking();
        if m.generation() >= 0 {
            snap.protocol = Some(crate::GroupProtocol::Classic);
        }
    }

    fn coordinator(&self) -> Option<i32> {
        self.snapshot
            .lock()
            .expect("group snapshot lock")
            .coordinator
    }

    /// Execute one action; a listener the machine must wait for leaves its
    /// ack in `listener`.
    async fn execute(
        &mut self,
        m: &mut Membership,
        action: Action,
        protocol: &mut Option<String>,
        listener: &mut Option<oneshot::Receiver<()>>,
    ) {
        let now = std::time::Instant::now;
        match action {
            Action::FindCoordinator => {
                if self.find_group_coordinator().await {
                    m.coordinator_found(now());
                } else {
                    m.handle_request_failed(now());
                }
            }
            Action::Join {
                member_id,
                group_instance_id,
                session_timeout,
                rebalance_timeout,
                protocols,
                reason,
            } => {
                tracing::info!(group = %self.group_id, %reason, "joining the group");
                let req = JoinGroupRequest::default()
                    .with_group_id(GroupId(s(&self.group_id)))
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
                let Some(node) = self.coordinator() else {
                    return m.handle_request_failed(now());
                };
                match self
                    .client
                    .send_to(node, Lane::Group, &req, rebalance_timeout)
                    .await
                {
                    Ok(r) => {
                        *protocol = r.protocol_name.as_ref().map(|p| p.to_string());
                        let (parts, racks) =
                            self.partitions_per_topic(m.topics(), &r.members).await;
                        m.handle_join_with_racks(
                            JoinResult {
                                error: KafkaCode::try_from_code(r.error_code),
                                generation: r.generation_id,
                                member_id: r.member_id.to_string(),
                                leader: r.leader.to_string(),
                                protocol_name: protocol.clone(),
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
                        tracing::warn!(group = %self.group_id, error = %e, "JoinGroup failed");
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
                    .with_group_id(GroupId(s(&self.group_id)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(self.cfg.group_instance_id.as_deref().map(s))
                    .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                    .with_protocol_name(protocol.as_deref().map(s))
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
                let Some(node) = self.coordinator() else {
                    return m.handle_request_failed(now());
                };
                match self
                    .client
                    .send_to(node, Lane::Group, &req, self.cfg.max_poll_interval)
                    .await
                {
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
                    .with_group_id(GroupId(s(&self.group_id)))
                    .with_generation_id(generation)
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(self.cfg.group_instance_id.as_deref().map(s));
                let Some(node) = self.coordinator() else {
                    return m.handle_request_failed(now());
                };
                // Wait for the answer at most until the session ends: past
                // it the coordinator has expired this member, answer or not.
                let send = self.client.send_to(node, Lane::Group, &req, Duration::ZERO);
                let answer = match m.session_deadline() {
                    Some(deadline) => tokio::select! {
                        r = send => Some(r),
                        _ = tokio::time::sleep_until(deadline.into()) => None,
                    },
                    None => Some(send.await),
                };
                match answer {
                    None => m.heartbeat_abandoned(now()),
                    Some(Ok(r)) => {
                        m.handle_heartbeat(KafkaCode::try_from_code(r.error_code), now())
                    }
                    Some(Err(_)) => m.handle_request_failed(now()),
                }
            }
            Action::Leave { member_id, reason } => {
                tracing::info!(group = %self.group_id, %reason, "leaving the group");
                if let Some(node) = self.coordinator() {
                    let mut req =
                        LeaveGroupRequest::default().with_group_id(GroupId(s(&self.group_id)));
                    let v = self
                        .client
                        .connection(node, Lane::Group)
                        .await
                        .and_then(|c| c.version(ApiKey::LeaveGroup))
                        .unwrap_or(3);
                    req = if v >= 3 {
                        req.with_members(vec![MemberIdentity::default()
                            .with_member_id(s(&member_id))
                            .with_group_instance_id(self.cfg.group_instance_id.as_deref().map(s))
                            .with_reason(Some(s(&reason)))])
                    } else {
                        req.with_member_id(s(&member_id))
                    };
                    let _ = self
                        .client
                        .send_to(node, Lane::Group, &req, Duration::ZERO)
                        .await;
                }
            }
            Action::Revoke(parts) => {
                // on_revoked runs beside poll(), up to the rebalance timeout;
                // a cooperative member is still Stable and keeps heartbeating
                // (the machine's output while it waits). Commits of `parts`
                // stay valid meanwhile: published before the consumer hears.
                m.listener_started(&parts, now());
                self.publish(m);
                *listener = self
                    .listener_event(|done| GroupEvent::Revoked(parts, done))
                    .await;
                if listener.is_none() {
                    m.listener_done();
                }
            }
            Action::Lose(parts) => {
                m.listener_started(&[], now());
                self.publish(m);
                *listener = self
                    .listener_event(|done| GroupEvent::Lost(parts, done))
                    .await;
                if listener.is_none() {
                    m.listener_done();
                }
            }
            Action::Assign(parts) => {
                self.assigned(parts, |tp| m.appeared_after_subscribe(tp))
                    .await;
            }
            Action::RefreshMetadata { topics } => {
                // At most a heartbeat interval: the Control lane it uses
                // may be slow (behind held commits), and heartbeats wait
                // while this task waits.
                let bound = self.cfg.heartbeat_interval;
                match tokio::time::timeout(bound, self.client.refresh_metadata(topics.as_deref()))
                    .await
                {
                    Ok(Ok(md)) => {
                        let racks = m
                            .watches_racks()
                            .then(|| replica_racks(&md, &m.watched_topics()));
                        m.handle_metadata_with_racks(
                            &counts(&md, topics.as_deref()),
                            racks.as_ref(),
                            now(),
                        )
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(group = %self.group_id, error = %e, "metadata refresh failed; retrying");
                        m.handle_metadata_failed(now());
                    }
                    Err(_) => {
                        tracing::warn!(group = %self.group_id, "metadata refresh took longer than heartbeat.interval.ms ({bound:?}); heartbeating first, then retrying");
                        m.handle_metadata_failed(now());
                    }
                }
            }
            Action::Fatal(_) => unreachable!("handled by run()"),
        }
    }

    /// Partition counts for our topics and every topic the members
    /// subscribe to (the leader assigns them), freshly read; and, when a
    /// member sent its rack (only the leader is told the members), the
    /// racks of those partitions' replicas for a rack-aware assignor
    /// (KIP-881).
    async fn partitions_per_topic(
        &self,
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
        let md = match self.client.refresh_metadata(Some(&topics)).await {
            Ok(md) => md,
            Err(_) => self.client.metadata(),
        };
        let racks = if racked {
            replica_racks(&md, &topics)
        } else {
            ReplicaRacks::new()
        };
        (counts(&md, Some(&topics)), racks)
    }
}
