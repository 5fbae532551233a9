//! The consumer group protocol (KIP-848, ConsumerGroupHeartbeat): what
//! [`Member`], its pure state machine ([`member`](mod@member)), sends to the
//! coordinator, and how the answers go back. The loop, the poll liveness
//! and the rebalance listener are the group driver's (`group/driver.rs`),
//! shared with classic; this file is only the KIP-848 [`Protocol`]: the
//! heartbeat (which is also the join and, with epoch -1 or -2, the leave),
//! and the group's session timeout, asked once in the group.
//!
//! The consumer sees the same [`GroupEvent`](super::GroupEvent)s and
//! [`GroupSnapshot`](super::GroupSnapshot) (its `generation` is the member
//! epoch, which commits carry), so the runtime does not notice which
//! protocol runs.
//!
//! Under `group.protocol=auto` the driver returns the reason to fall back
//! when the coordinator does not advertise ConsumerGroupHeartbeat or
//! refuses the first one with UNSUPPORTED_VERSION; `GroupTask::run` then
//! runs the classic protocol.

use std::sync::Arc;
use std::time::Duration;

use kafka_wire::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_wire::messages::{ApiKey, ConsumerGroupHeartbeatRequest, GroupId, TopicName};
use uuid::Uuid;

pub(crate) mod member;

use super::driver::{until, Coordinator, GroupMachine, Protocol};
use super::io::GroupIo;
use super::s;
use crate::config::ConsumerConfig;
use crate::group::subscription::TopicSubscription;
use member::{Action, Heartbeat, HeartbeatResult, Member, MemberConfig};

/// A random member id, as Java's (22 characters of URL-safe base64 of a
/// random UUID's bytes).
fn new_member_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    Uuid::from_bytes(bytes).simple().to_string()
}

/// A KIP-848 member of `group_id` subscribed to `subscription`, from the
/// consumer's settings, looking for its coordinator at `now`.
/// `may_fall_back`: `group.protocol=auto`.
pub(super) fn member(
    cfg: &ConsumerConfig,
    group_id: &str,
    subscription: TopicSubscription,
    may_fall_back: bool,
    now: std::time::Instant,
) -> Member {
    Member::new(
        MemberConfig {
            group_id: group_id.to_string(),
            group_instance_id: cfg.group_instance_id.clone(),
            rack_id: cfg.client_rack.clone(),
            server_assignor: cfg.group_remote_assignor.clone(),
            max_poll_interval: cfg.max_poll_interval,
            retry_backoff: super::RETRY_BACKOFF,
            heartbeat_interval: cfg.heartbeat_interval,
            may_fall_back,
            new_member_id: Arc::new(new_member_id),
        },
        subscription,
        now,
    )
}

/// KIP-848's requests (ConsumerGroupHeartbeat; DescribeConfigs for the
/// group's session timeout) for [`Member`].
#[derive(Debug)]
pub(super) struct ConsumerProtocol {
    /// `group.protocol=auto` chose this protocol: say which classic
    /// settings it does not use.
    may_fall_back: bool,
    /// The classic-only settings the user changed (warned about once).
    unused_settings: Vec<&'static str>,
    /// The group's session timeout was asked (once in the group).
    asked_session_timeout: bool,
}

impl ConsumerProtocol {
    pub(super) fn new(cfg: &ConsumerConfig, may_fall_back: bool) -> Self {
        Self {
            may_fall_back,
            unused_settings: cfg.classic_settings_changed(),
            asked_session_timeout: false,
        }
    }
}

impl Protocol for ConsumerProtocol {
    type Machine = Member;

    /// Once in the group (or refused while a crashed predecessor's session
    /// runs out): ask how long the broker waits for a heartbeat before it
    /// removes a member.
    async fn before_round<I: GroupIo>(&mut self, c: &Coordinator<'_, I>, m: &mut Member) {
        if self.asked_session_timeout || !(m.member_epoch() > 0 || m.waiting_for_release()) {
            return;
        }
        self.asked_session_timeout = true;
        m.session_timeout_learned(group_session_timeout(c, "consumer.session.timeout.ms").await);
        if self.may_fall_back && !self.unused_settings.is_empty() {
            tracing::warn!(
                group = %c.group_id(),
                "group.protocol=auto chose the consumer protocol (KIP-848), which does not \
                 use {}: the broker assigns partitions and sets the session timeout and \
                 heartbeat interval (its group.consumer.* configs). Remove them, or set \
                 group.protocol=classic to keep them",
                self.unused_settings.join(", ")
            );
        }
    }

    async fn execute<I: GroupIo>(
        &mut self,
        c: &Coordinator<'_, I>,
        m: &mut Member,
        action: Action,
    ) {
        let now = super::driver::now;
        match action {
            Action::Heartbeat(hb) => match until(m.session_deadline(), heartbeat(c, hb)).await {
                None => m.session_expired(now()),
                Some(Ok(r)) => m.handle_heartbeat(r, now()),
                Some(Err(e)) => {
                    tracing::warn!(group = %c.group_id(), error = %e, "ConsumerGroupHeartbeat failed; finding the coordinator again");
                    m.handle_request_failed(now());
                }
            },
            Action::Leave(hb) => {
                tracing::info!(group = %c.group_id(), member_epoch = hb.member_epoch, "leaving the group");
                if let Err(e) = heartbeat(c, hb).await {
                    tracing::debug!(group = %c.group_id(), error = %e, "leave heartbeat failed (the session timeout expires the member)");
                }
            }
            Action::FindCoordinator
            | Action::RefreshMetadata
            | Action::Revoke(_)
            | Action::Lose(_)
            | Action::Assign(_)
            | Action::FallBack(_)
            | Action::Fatal(_) => unreachable!("the driver's arms (GroupMachine::step)"),
        }
    }
}

/// The group's session timeout: the group config `key`
/// (`consumer.session.timeout.ms` for KIP-848, `share.session.timeout.ms`
/// for a share group), by DescribeConfigs on the group (Kafka 4.0+; the
/// broker's `group.consumer.session.timeout.ms` or
/// `group.share.session.timeout.ms` unless the group overrides it).
/// Asked of the coordinator on the Group lane, this task's own
/// connection: on the shared Control lane it could wait behind slow
/// commits while no heartbeat goes out. `None` when the
/// broker does not say (Kafka 3.9, an authorization error): then only
/// the broker's answer fences.
pub(super) async fn group_session_timeout(
    c: &Coordinator<'_, impl GroupIo>,
    key: &str,
) -> Option<Duration> {
    use kafka_wire::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_wire::messages::DescribeConfigsRequest;
    const GROUP_RESOURCE: i8 = 32;
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(GROUP_RESOURCE)
            .with_resource_name(s(c.group_id()))
            .with_configuration_keys(Some(vec![s(key)]))]);
    let resp = match c.send(&req, Duration::ZERO).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(group = %c.group_id(), error = %e, "the group's session timeout is unknown; only the broker's answers fence this member");
            return None;
        }
    };
    let result = resp.results.first().filter(|r| r.error_code == 0)?;
    let ms = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .and_then(|c| c.value.as_ref())
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .filter(|ms| *ms > 0)?;
    tracing::debug!(group = %c.group_id(), session_timeout_ms = ms, "the group's session timeout");
    Some(Duration::from_millis(ms))
}

/// Send one ConsumerGroupHeartbeat to the coordinator. A coordinator
/// that does not advertise the API, or only v0 for a regex
/// subscription, answers UNSUPPORTED_VERSION (so `auto` falls back).
async fn heartbeat(
    c: &Coordinator<'_, impl GroupIo>,
    hb: Heartbeat,
) -> kafka_wire::Result<HeartbeatResult> {
    let Some(version) = c.version(ApiKey::ConsumerGroupHeartbeat).await? else {
        return Ok(HeartbeatResult::unsupported(
            "the coordinator does not advertise ConsumerGroupHeartbeat (KIP-848 is off on this broker)",
        ));
    };
    if hb.subscribed_topic_regex.is_some() && version < 1 {
        return Ok(HeartbeatResult::unsupported(
            "a pattern subscription needs ConsumerGroupHeartbeat v1 (Kafka 4.0+)",
        ));
    }
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(c.group_id())))
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
    Ok(c.send(&req, Duration::ZERO).await?.into())
}
