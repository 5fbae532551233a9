//! The share group protocol (KIP-932, ShareGroupHeartbeat v1): what
//! [`ShareMember`], its pure state machine ([`member`](mod@member)), sends
//! to the coordinator, and how the answers go back. The loop, the poll
//! liveness and the hand-over of revoked partitions are the group
//! driver's (`group/driver.rs`), shared with classic and KIP-848; this
//! file is only the share [`Protocol`] and the entry the share consumer
//! calls, [`run`].
//!
//! The share consumer sees the same [`GroupEvent`](super::GroupEvent)s as
//! a consumer: Assigned (fetch these too), Revoked (stop fetching these
//! and send what is owed them, then ack), Lost (give back what is held of
//! these, then ack), Fatal. Its `poll()` stamps `polled`, its `close()`
//! sets `close`.

use std::time::Duration;

use kafka_wire::messages::{ApiKey, GroupId, ShareGroupHeartbeatRequest, TopicName};

pub(crate) mod member;

use super::consumer_protocol::group_session_timeout;
use super::driver::{until, Coordinator, Driver, Ended, GroupMachine, Protocol, Seam};
use super::io::GroupIo;
use super::s;
use super::target::HeartbeatResult;
use member::{Action, ShareHeartbeat, ShareMember, ShareMemberConfig};

/// Run a share member of `cfg.group_id` on `io` until it leaves (close,
/// or the consumer dropped its side of `seam`) or fails (a
/// [`GroupEvent::Fatal`](super::GroupEvent::Fatal) was sent).
///
/// # Cancel safety
/// Not cancel safe: dropped, the member simply stops (the coordinator
/// expires it after `group.share.session.timeout.ms`).
pub(crate) async fn run<I: GroupIo>(io: I, cfg: ShareMemberConfig, seam: Seam) -> Ended {
    let mut driver = Driver::new(io, cfg.group_id.clone(), false, seam);
    let mut member = ShareMember::new(cfg, super::driver::now());
    driver.run(&mut ShareProtocol::default(), &mut member).await
}

/// ShareGroupHeartbeat for [`ShareMember`]; DescribeConfigs for the
/// group's `share.session.timeout.ms`.
#[derive(Debug, Default)]
pub(crate) struct ShareProtocol {
    /// The group's session timeout was asked (once in the group).
    asked_session_timeout: bool,
}

impl Protocol for ShareProtocol {
    type Machine = ShareMember;

    /// Once in the group: ask how long the coordinator waits for a
    /// heartbeat before it removes a member (the same question as
    /// KIP-848's, about `share.session.timeout.ms`).
    async fn before_round<I: GroupIo>(&mut self, c: &Coordinator<'_, I>, m: &mut ShareMember) {
        if self.asked_session_timeout || !m.in_group() {
            return;
        }
        self.asked_session_timeout = true;
        m.session_timeout_learned(group_session_timeout(c, "share.session.timeout.ms").await);
    }

    async fn execute<I: GroupIo>(
        &mut self,
        c: &Coordinator<'_, I>,
        m: &mut ShareMember,
        action: Action,
    ) {
        let now = super::driver::now;
        match action {
            // Awaited at most until the session deadline: past it the
            // coordinator has removed the member, answer or not.
            Action::Heartbeat(hb) => match until(m.session_deadline(), heartbeat(c, hb)).await {
                None => m.session_expired(now()),
                Some(Ok(r)) => m.handle_heartbeat(r, now()),
                Some(Err(e)) => {
                    tracing::warn!(group = %c.group_id(), error = %e, "ShareGroupHeartbeat failed; finding the coordinator again");
                    m.handle_request_failed(now());
                }
            },
            Action::Leave(hb) => {
                tracing::info!(group = %c.group_id(), member = %hb.member_id, "leaving the share group");
                if let Err(e) = heartbeat(c, hb).await {
                    tracing::debug!(group = %c.group_id(), error = %e, "leave heartbeat failed (the session timeout expires the member)");
                }
            }
            shared => unreachable!("{shared:?} is the driver's (GroupMachine::step)"),
        }
    }
}

/// Send one ShareGroupHeartbeat. A coordinator that does not advertise
/// it answers UNSUPPORTED_VERSION here (the member's error names the fix).
async fn heartbeat(
    c: &Coordinator<'_, impl GroupIo>,
    hb: ShareHeartbeat,
) -> kafka_wire::Result<HeartbeatResult> {
    if c.version(ApiKey::ShareGroupHeartbeat).await?.is_none() {
        return Ok(HeartbeatResult::unsupported(
            "the coordinator does not advertise ShareGroupHeartbeat v1 (Kafka 4.1+)",
        ));
    }
    let req = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(s(c.group_id())))
        .with_member_id(s(&hb.member_id))
        .with_member_epoch(hb.member_epoch)
        .with_rack_id(hb.rack_id.as_deref().map(s))
        .with_subscribed_topic_names(
            hb.subscribed_topic_names
                .map(|ts| ts.iter().map(|t| TopicName(s(t))).collect()),
        );
    Ok(c.send(&req, Duration::ZERO).await?.into())
}
