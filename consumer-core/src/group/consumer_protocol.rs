//! The consumer group protocol (KIP-848, ConsumerGroupHeartbeat): the thin
//! async driver of [`Member`], its pure state machine ([`member`]).
//!
//! Same shape as `classic.rs`: one task, the Group lane, every clock the
//! machine's. The consumer sees the same [`GroupEvent`]s and
//! [`GroupSnapshot`](super::GroupSnapshot) (its `generation` is the member
//! epoch, which commits carry), so the runtime does not notice which
//! protocol runs.
//!
//! Under `group.protocol=auto`, [`GroupTask::run_consumer_protocol`]
//! returns the reason to fall back when the coordinator does not advertise
//! ConsumerGroupHeartbeat or refuses the first one with UNSUPPORTED_VERSION;
//! `GroupTask::run` then runs the classic protocol.

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_wire::messages::{ApiKey, ConsumerGroupHeartbeatRequest, GroupId, TopicName};
use kafka_wire::{KafkaCode, Lane, StrBytes};
use tokio::sync::oneshot;
use uuid::Uuid;

pub(crate) mod member;

use super::{GroupEvent, GroupTask};
use crate::group::subscription::TopicSubscription;
use member::{Action, Heartbeat, HeartbeatResult, Member, MemberConfig, State};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A random member id, as Java's (22 characters of URL-safe base64 of a
/// random UUID's bytes).
fn new_member_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    Uuid::from_bytes(bytes).simple().to_string()
}

impl GroupTask {
    /// Run the consumer protocol until the member leaves or fails. Returns
    /// `Some(reason)` when it must fall back to classic (`may_fall_back`,
    /// before the first successful heartbeat only).
    pub(super) async fn run_consumer_protocol(&mut self, may_fall_back: bool) -> Option<String> {
        let now = std::time::Instant::now();
        let mut m = Member::new(
            MemberConfig {
                group_id: self.group_id.clone(),
                group_instance_id: self.cfg.group_instance_id.clone(),
                rack_id: self.cfg.client_rack.clone(),
                server_assignor: self.cfg.group_remote_assignor.clone(),
                max_poll_interval: self.cfg.max_poll_interval,
                retry_backoff: super::RETRY_BACKOFF,
                heartbeat_interval: self.cfg.heartbeat_interval,
                may_fall_back,
                new_member_id: Arc::new(new_member_id),
            },
            self.subscription.clone(),
            now,
        );
        let mut closing = false;
        let mut listener: Option<oneshot::Receiver<()>> = None;
        let mut asked_session_timeout = false;
        loop {
            if !asked_session_timeout && (m.member_epoch() > 0 || m.waiting_for_release()) {
                // Once in the group (or refused while a crashed
                // predecessor's session runs out): how long the broker
                // waits for a heartbeat before it removes a member.
                asked_session_timeout = true;
                m.session_timeout_learned(self.group_session_timeout().await);
                let unused = self.cfg.classic_settings_changed();
                if may_fall_back && !unused.is_empty() {
                    tracing::warn!(
                        group = %self.group_id,
                        "group.protocol=auto chose the consumer protocol (KIP-848), which does not \
                         use {}: the broker assigns partitions and sets the session timeout and \
                         heartbeat interval (its group.consumer.* configs). Remove them, or set \
                         group.protocol=classic to keep them",
                        unused.join(", ")
                    );
                }
            }
            if *self.close.borrow() && !closing && !m.listener_running() {
                closing = true;
                m.close();
            }
            loop {
                let at = *self.polled.borrow_and_update();
                if at > m.last_poll() {
                    m.polled(at);
                }
                let Some(action) = m.poll_action(std::time::Instant::now()) else {
                    self.publish_member(&m);
                    break;
                };
                match action {
                    Action::Fatal(msg) => {
                        tracing::error!(group = %self.group_id, "{msg}");
                        let _ = self.events.send(GroupEvent::Fatal(msg)).await;
                        return None;
                    }
                    Action::FallBack(why) => return Some(why),
                    action => self.execute_member(&mut m, action, &mut listener).await,
                }
                self.publish_member(&m);
            }
            if !m.listener_running() {
                listener = None;
            }
            if closing && matches!(m.state(), State::Left) && !m.listener_running() {
                return None;
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
                    listener = None;
                    m.listener_done();
                    self.publish_member(&m);
                }
            }
        }
    }

    fn publish_member(&self, m: &Member) {
        let mut snap = self.snapshot.lock().expect("group snapshot lock");
        snap.generation = m.member_epoch();
        snap.member_id = m.member_id().to_string();
        snap.stable = matches!(m.state(), State::Stable);
        snap.owned = m.owned().clone();
        snap.revoking = m.revoking();
        if m.member_epoch() > 0 {
            snap.protocol = Some(crate::GroupProtocol::Consumer);
        }
    }

    async fn execute_member(
        &mut self,
        m: &mut Member,
        action: Action,
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
            Action::Heartbeat(hb) => {
                // Wait for the answer at most until the session ends: past
                // it the broker has removed this member, answer or not.
                let answer = match m.session_deadline() {
                    Some(deadline) => tokio::select! {
                        r = self.heartbeat(hb) => Some(r),
                        _ = tokio::time::sleep_until(deadline.into()) => None,
                    },
                    None => Some(self.heartbeat(hb).await),
                };
                match answer {
                    None => m.session_expired(now()),
                    Some(Ok(r)) => m.handle_heartbeat(r, now()),
                    Some(Err(e)) => {
                        tracing::warn!(group = %self.group_id, error = %e, "ConsumerGroupHeartbeat failed; finding the coordinator again");
                        m.handle_request_failed(now());
                    }
                }
            }
            Action::Leave(hb) => {
                tracing::info!(group = %self.group_id, member_epoch = hb.member_epoch, "leaving the group");
                if let Err(e) = self.heartbeat(hb).await {
                    tracing::debug!(group = %self.group_id, error = %e, "leave heartbeat failed (the session timeout expires the member)");
                }
            }
            Action::RefreshMetadata => {
                let topics = match &self.subscription {
                    TopicSubscription::Topics(ts) => Some(ts.clone()),
                    TopicSubscription::Pattern(_) => None,
                };
                // At most a heartbeat interval: the Control lane it uses
                // may be slow (behind held commits), and heartbeats wait
                // while this task waits.
                let bound = m.heartbeat_interval();
                match tokio::time::timeout(bound, self.client.refresh_metadata(topics.as_deref()))
                    .await
                {
                    Ok(Ok(md)) => m.handle_metadata(
                        md.topics
                            .values()
                            .map(|t| (t.id, t.name.clone(), t.partitions.len() as i32)),
                        now(),
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(group = %self.group_id, error = %e, "metadata refresh failed; retrying");
                        m.handle_metadata_failed();
                    }
                    Err(_) => {
                        tracing::warn!(group = %self.group_id, "metadata refresh took longer than the heartbeat interval ({bound:?}); heartbeating first, then retrying");
                        m.handle_metadata_failed();
                    }
                }
            }
            Action::Revoke(parts) => {
                m.listener_started(&parts, now());
                self.publish_member(m);
                *listener = self
                    .listener_event(|done| GroupEvent::Revoked(parts, done))
                    .await;
                if listener.is_none() {
                    m.listener_done();
                }
            }
            Action::Lose(parts) => {
                m.listener_started(&[], now());
                self.publish_member(m);
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
            Action::Fatal(_) | Action::FallBack(_) => unreachable!("handled by the loop"),
        }
    }

    /// The group's session timeout: `consumer.session.timeout.ms` of the
    /// group's configs (DescribeConfigs on the group, Kafka 4.0+; the
    /// broker's `group.consumer.session.timeout.ms` unless the group
    /// overrides it). Asked of the coordinator on the Group lane, this
    /// task's own connection: on the shared Control lane it could wait
    /// behind slow commits while no heartbeat goes out. `None` when the
    /// broker does not say (Kafka 3.9, an authorization error): then only
    /// the broker's answer fences.
    async fn group_session_timeout(&self) -> Option<Duration> {
        use kafka_wire::messages::describe_configs_request::DescribeConfigsResource;
        use kafka_wire::messages::DescribeConfigsRequest;
        const GROUP_RESOURCE: i8 = 32;
        let node = self
            .snapshot
            .lock()
            .expect("group snapshot lock")
            .coordinator?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(GROUP_RESOURCE)
                .with_resource_name(s(&self.group_id))
                .with_configuration_keys(Some(vec![s("consumer.session.timeout.ms")])),
        ]);
        let resp = match self
            .client
            .send_to(node, Lane::Group, &req, Duration::ZERO)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(group = %self.group_id, error = %e, "the group's session timeout is unknown; only the broker's answers fence this member");
                return None;
            }
        };
        let result = resp.results.first().filter(|r| r.error_code == 0)?;
        let ms = result
            .configs
            .iter()
            .find(|c| c.name.as_str() == "consumer.session.timeout.ms")
            .and_then(|c| c.value.as_ref())
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .filter(|ms| *ms > 0)?;
        tracing::debug!(group = %self.group_id, session_timeout_ms = ms, "the group's session timeout");
        Some(Duration::from_millis(ms))
    }

    /// Send one ConsumerGroupHeartbeat to the coordinator. A coordinator
    /// that does not advertise the API, or only v0 for a regex
    /// subscription, answers UNSUPPORTED_VERSION (so `auto` falls back).
    async fn heartbeat(&self, hb: Heartbeat) -> kafka_wire::Result<HeartbeatResult> {
        let unsupported = |why: &str| HeartbeatResult {
            error: Some(KafkaCode::UnsupportedVersion),
            error_message: Some(why.to_string()),
            ..HeartbeatResult::default()
        };
        let node = self
            .snapshot
            .lock()
            .expect("group snapshot lock")
            .coordinator
            .ok_or_else(|| kafka_wire::Error::Config("no coordinator".into()))?;
        let conn = self.client.connection(node, Lane::Group).await?;
        let Ok(version) = conn.version(ApiKey::ConsumerGroupHeartbeat) else {
            return Ok(unsupported(
                "the coordinator does not advertise ConsumerGroupHeartbeat (KIP-848 is off on this broker)",
            ));
        };
        if hb.subscribed_topic_regex.is_some() && version < 1 {
            return Ok(unsupported(
                "a pattern subscription needs ConsumerGroupHeartbeat v1 (Kafka 4.0+)",
            ));
        }
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(&self.group_id)))
            .with_member_id(s(&hb.member_id))
            .with_member_epoch(hb.member_epoch)
            .with_instance_id(hb.instance_id.as_deref().map(s))
            .with_rack_id(hb.rack_id.as_deref().map(s))
            .with_rebalance_timeout_ms(hb.rebalance_timeout_ms.unwrap_or(-1))
            .with_subscribed_topic_names(
                hb.subscribed_topic_names
                    .map(|ts| ts.iter().map(|t| TopicName(s(t))).collect()),
            )
            .with_subscribed_topic_regex(hb.subscribed_topic_regex.as_deref().map(s))
            .with_server_assignor(hb.server_assignor.as_deref().map(s))
            .with_topic_partitions(hb.owned.map(|owned| {
                owned
                    .into_iter()
                    .map(|(id, parts)| {
                        TopicPartitions::default()
                            .with_topic_id(Uuid::from_bytes(id))
                            .with_partitions(parts)
                    })
                    .collect()
            }));
        let r = self
            .client
            .send_to(node, Lane::Group, &req, Duration::ZERO)
            .await?;
        Ok(HeartbeatResult {
            error: KafkaCode::try_from_code(r.error_code),
            error_message: r.error_message.map(|m| m.to_string()),
            member_id: r.member_id.map(|id| id.to_string()),
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            assignment: r.assignment.map(|a| {
                a.topic_partitions
                    .into_iter()
                    .map(|t| (*t.topic_id.as_bytes(), t.partitions))
                    .collect()
            }),
        })
    }
}
