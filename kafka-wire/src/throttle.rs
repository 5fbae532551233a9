//! Broker throttling (KIP-219): a response's `throttle_time_ms` is its own
//! case, never a failure and never a retry.
//!
//! A broker whose quota (bytes or request time) a client exceeded answers
//! at once, with `throttle_time_ms` set, and then mutes that connection:
//! it reads no further request from it before the time has passed. A
//! client that sends anyway only queues requests in the broker's socket,
//! where their request timeouts run. So:
//!
//! - every response says how long via [`ThrottleTime`] (implemented for
//!   every response type; zero where the field does not exist);
//! - every connection honours it: [`crate::connection`] holds the next
//!   request back until the throttle time has passed (a request's
//!   timeout starts when the connection task takes it);
//! - a throttle is capped at `MAX_THROTTLE` (60 s): Kafka's own quota managers
//!   never ask for more than their sample window (`quota.window.num` x
//!   `quota.window.size.seconds`, 11 s by default), so a larger
//!   `throttle_time_ms` (up to `i32::MAX`, 24 days) is a broken or hostile
//!   broker, and would otherwise mute the connection for good;
//! - the planners that choose a broker (the producer's sender, the
//!   consumer's fetcher) also keep a per-broker deadline, so they plan
//!   nothing for a throttled broker (records stay in the accumulator,
//!   partitions wait for their next fetch) and others go on;
//! - retry loops wait [`crate::Delays::next_after`]: at least as long as
//!   the broker asked, however short their own backoff.
//!
//! ```text
//!  response(throttle_time_ms = t) ──▶ connection: no write before now + t
//!                                  └─▶ sender / fetcher: broker skipped until now + t
//! ```

use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::messages::*;
use tokio::time::Instant;

/// The longest throttle honoured: 60 s. Kafka's quota managers bound the
/// throttle they ask for by their sample window (`quota.window.num` x
/// `quota.window.size.seconds`: 11 s by default); a longer one is capped
/// here, so no response can mute a connection, a producer's leader or a
/// fetcher's broker for longer than this.
pub(crate) const MAX_THROTTLE: Duration = Duration::from_secs(60);

/// A broker's request to slow down: a response's `throttle_time_ms`
/// (KIP-219: the broker answered at once and will not read our next
/// request before this has passed). Zero when not throttled; never more
/// than 60 s (no Kafka quota window is longer: see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Throttle(Duration);

impl Throttle {
    /// From a response's `throttle_time_ms` (0 or negative: none; capped
    /// at 60 s, logged as a warning).
    pub fn from_ms(throttle_time_ms: i32) -> Self {
        let ms = Duration::from_millis(u64::try_from(throttle_time_ms).unwrap_or(0));
        if ms > MAX_THROTTLE {
            tracing::warn!(
                throttle_time_ms,
                cap_ms = MAX_THROTTLE.as_millis() as u64,
                "a broker asked for a throttle longer than any Kafka quota window: capped"
            );
        }
        Throttle(ms.min(MAX_THROTTLE))
    }

    /// Did the broker ask us to wait?
    pub fn is_throttled(&self) -> bool {
        !self.0.is_zero()
    }

    /// How long.
    pub fn duration(&self) -> Duration {
        self.0
    }

    /// The moment the broker reads requests again, if throttled.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.is_throttled().then(|| now + self.0)
    }

    /// Wait it out before the next request to that broker (at once when
    /// not throttled).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait(self, what: &str) {
        if self.is_throttled() {
            tracing::debug!(throttle = ?self.0, "{what}: throttled by the broker (quota); waiting");
            tokio::time::sleep(self.0).await;
        }
    }
}

/// The throttle a decoded response carries. Implemented for every response
/// type of the protocol, so [`crate::Connection::send`] and friends can
/// honour it whatever they send.
pub trait ThrottleTime {
    /// This response's `throttle_time_ms` (none where the type or the
    /// version has no such field: it decodes as 0).
    fn throttle(&self) -> Throttle;
}

macro_rules! throttle_time {
    (with: $($with:ident),* ; without: $($without:ident),* $(,)?) => {
        $(impl ThrottleTime for $with {
            fn throttle(&self) -> Throttle {
                Throttle::from_ms(self.throttle_time_ms)
            }
        })*
        $(impl ThrottleTime for $without {
            fn throttle(&self) -> Throttle {
                Throttle::default()
            }
        })*
    };
}

throttle_time!(
    with: AddOffsetsToTxnResponse, AddPartitionsToTxnResponse, AddRaftVoterResponse, AllocateProducerIdsResponse, AlterClientQuotasResponse, AlterConfigsResponse, AlterPartitionReassignmentsResponse, AlterPartitionResponse, AlterReplicaLogDirsResponse, AlterShareGroupOffsetsResponse, AlterUserScramCredentialsResponse, ApiVersionsResponse, AssignReplicasToDirsResponse, BrokerHeartbeatResponse, BrokerRegistrationResponse, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse, ControllerRegistrationResponse, CreateAclsResponse, CreateDelegationTokenResponse, CreatePartitionsResponse, CreateTopicsResponse, DeleteAclsResponse, DeleteGroupsResponse, DeleteRecordsResponse, DeleteShareGroupOffsetsResponse, DeleteTopicsResponse, DescribeAclsResponse, DescribeClientQuotasResponse, DescribeClusterResponse, DescribeConfigsResponse, DescribeDelegationTokenResponse, DescribeGroupsResponse, DescribeLogDirsResponse, DescribeProducersResponse, DescribeShareGroupOffsetsResponse, DescribeTopicPartitionsResponse, DescribeTransactionsResponse, DescribeUserScramCredentialsResponse, ElectLeadersResponse, EndTxnResponse, ExpireDelegationTokenResponse, FetchResponse, FetchSnapshotResponse, FindCoordinatorResponse, GetTelemetrySubscriptionsResponse, HeartbeatResponse, IncrementalAlterConfigsResponse, InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, ListConfigResourcesResponse, ListGroupsResponse, ListOffsetsResponse, ListPartitionReassignmentsResponse, ListTransactionsResponse, MetadataResponse, OffsetCommitResponse, OffsetDeleteResponse, OffsetFetchResponse, OffsetForLeaderEpochResponse, ProduceResponse, PushTelemetryResponse, RemoveRaftVoterResponse, RenewDelegationTokenResponse, ShareAcknowledgeResponse, ShareFetchResponse, ShareGroupDescribeResponse, ShareGroupHeartbeatResponse, SyncGroupResponse, TxnOffsetCommitResponse, UnregisterBrokerResponse, UpdateFeaturesResponse, UpdateRaftVoterResponse;
    without: BeginQuorumEpochResponse, DeleteShareGroupStateResponse, DescribeQuorumResponse, EndQuorumEpochResponse, EnvelopeResponse, InitializeShareGroupStateResponse, ReadShareGroupStateResponse, ReadShareGroupStateSummaryResponse, SaslAuthenticateResponse, SaslHandshakeResponse, VoteResponse, WriteShareGroupStateResponse, WriteTxnMarkersResponse,
);

/// One connection's "not before": the latest moment any of its responses
/// asked to be left alone until. Shared by the connection's handles (which
/// decode responses and note their throttle) and its task (which holds
/// writes back until then).
#[derive(Debug, Default)]
pub(crate) struct ThrottleGate {
    until: Mutex<Option<Instant>>,
}

impl ThrottleGate {
    /// A response received at `now` asked for `throttle`: never shortens
    /// an earlier, longer one.
    pub(crate) fn note(&self, throttle: Throttle, now: Instant) {
        let Some(until) = throttle.until(now) else {
            return;
        };
        let mut u = self.until.lock().expect("throttle gate lock");
        *u = Some(u.map_or(until, |t| t.max(until)));
    }

    /// The moment requests may be written again, if that is after `now`.
    pub(crate) fn closed_until(&self, now: Instant) -> Option<Instant> {
        self.until
            .lock()
            .expect("throttle gate lock")
            .filter(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn every_response_type_reports_its_throttle() {
        let produce = ProduceResponse::default().with_throttle_time_ms(250);
        assert_eq!(produce.throttle().duration(), 250 * MS);
        let fetch = FetchResponse::default().with_throttle_time_ms(-5);
        assert!(!fetch.throttle().is_throttled(), "negative: none");
        assert!(!SaslHandshakeResponse::default().throttle().is_throttled());
    }

    #[test]
    fn a_throttle_is_capped_at_the_documented_maximum() {
        assert_eq!(Throttle::from_ms(i32::MAX).duration(), MAX_THROTTLE);
        let huge = FetchResponse::default().with_throttle_time_ms(i32::MAX);
        assert_eq!(huge.throttle().duration(), MAX_THROTTLE);
        assert_eq!(Throttle::from_ms(59_999).duration(), 59_999 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_closes_until_the_longest_throttle_and_opens_after() {
        let gate = ThrottleGate::default();
        let t0 = Instant::now();
        assert_eq!(gate.closed_until(t0), None);
        gate.note(Throttle::from_ms(300), t0);
        gate.note(Throttle::from_ms(100), t0); // shorter: ignored
        gate.note(Throttle::default(), t0);
        assert_eq!(gate.closed_until(t0), Some(t0 + 300 * MS));
        assert_eq!(gate.closed_until(t0 + 299 * MS), Some(t0 + 300 * MS));
        assert_eq!(
            gate.closed_until(t0 + 300 * MS),
            None,
            "open at the deadline"
        );
    }
}
