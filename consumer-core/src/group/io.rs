//! What the group driver asks of the network: the coordinator's node, a
//! request to it, an API version it speaks, and metadata. [`GroupIo`] is
//! that seam; the real one is kafka-wire's [`Client`] (the Group lane, the
//! member's own connection), and the unit tests' is a scripted coordinator
//! (`io/fake.rs`) that answers from memory, so that members can be driven
//! through a rebalance without a broker.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_wire::messages::{self, ApiKey};
use kafka_wire::{Client, CoordinatorKind, Lane, Metadata};

#[cfg(test)]
pub(crate) mod fake;

/// The driver's I/O. Every method is cancel safe (the driver drops a
/// heartbeat's future at the session deadline).
pub(crate) trait GroupIo: Send + Sync {
    /// FindCoordinator for group `group_id`: the coordinator's node id.
    ///
    /// # Errors
    /// The lookup's error once its own retries are spent.
    async fn find_coordinator(&self, group_id: &str) -> kafka_wire::Result<i32>;

    /// Send `req` to `node` and wait for its answer, up to the request
    /// timeout plus `extra_timeout` (a JoinGroup waits for the rebalance).
    ///
    /// # Errors
    /// Dial, framing and timeout errors (the answer's own error code is in
    /// the response).
    async fn send<R: CoordinatorRequest>(
        &self,
        node: i32,
        req: &R,
        extra_timeout: Duration,
    ) -> kafka_wire::Result<R::Response>;

    /// The version of `api` this client and `node` share; `None` when the
    /// node does not advertise one we speak.
    ///
    /// # Errors
    /// Dial errors.
    async fn version(&self, node: i32, api: ApiKey) -> kafka_wire::Result<Option<i16>>;

    /// Refresh metadata: of `topics`, or of every topic (`None`).
    ///
    /// # Errors
    /// As [`Client::refresh_metadata`].
    async fn refresh_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> kafka_wire::Result<Arc<Metadata>>;

    /// The metadata known now (no request).
    fn metadata(&self) -> Arc<Metadata>;
}

/// A request the group driver sends to its coordinator (`'static`, so a
/// scripted coordinator can tell which one it got).
pub(crate) trait CoordinatorRequest: Send + Sync + 'static {
    type Response: Send + 'static;

    /// Send on the client's Group lane (what [`GroupIo::send`] does for
    /// [`Client`]).
    fn send_on<'a>(
        &'a self,
        client: &'a Client,
        node: i32,
        extra_timeout: Duration,
    ) -> impl Future<Output = kafka_wire::Result<Self::Response>> + Send + 'a;
}

/// One line per request a group protocol sends.
macro_rules! coordinator_requests {
    ($($req:ident => $resp:ident;)*) => {$(
        impl CoordinatorRequest for messages::$req {
            type Response = messages::$resp;

            fn send_on<'a>(
                &'a self,
                client: &'a Client,
                node: i32,
                extra_timeout: Duration,
            ) -> impl Future<Output = kafka_wire::Result<Self::Response>> + Send + 'a {
                client.send_to(node, Lane::Group, self, extra_timeout)
            }
        }
    )*};
}

coordinator_requests! {
    JoinGroupRequest => JoinGroupResponse;
    SyncGroupRequest => SyncGroupResponse;
    HeartbeatRequest => HeartbeatResponse;
    LeaveGroupRequest => LeaveGroupResponse;
    ConsumerGroupHeartbeatRequest => ConsumerGroupHeartbeatResponse;
    DescribeConfigsRequest => DescribeConfigsResponse;
    ShareGroupHeartbeatRequest => ShareGroupHeartbeatResponse;
}

impl GroupIo for Client {
    async fn find_coordinator(&self, group_id: &str) -> kafka_wire::Result<i32> {
        Client::find_coordinator(self, CoordinatorKind::Group, group_id).await
    }

    async fn send<R: CoordinatorRequest>(
        &self,
        node: i32,
        req: &R,
        extra_timeout: Duration,
    ) -> kafka_wire::Result<R::Response> {
        req.send_on(self, node, extra_timeout).await
    }

    async fn version(&self, node: i32, api: ApiKey) -> kafka_wire::Result<Option<i16>> {
        Ok(self.connection(node, Lane::Group).await?.version(api).ok())
    }

    async fn refresh_metadata(
        &self,
        topics: Option<&[String]>,
    ) -> kafka_wire::Result<Arc<Metadata>> {
        Client::refresh_metadata(self, topics).await
    }

    fn metadata(&self) -> Arc<Metadata> {
        Client::metadata(self)
    }
}
