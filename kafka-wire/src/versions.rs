//! Which version of each API we speak: one table, one place.
//!
//! The ranges are what this client implements correctly. The floors are what
//! Kafka 4.x still accepts (KIP-896 removed older versions), and every floor
//! is also served by Kafka 3.x brokers. The ceilings stop before versions that
//! change semantics we have not implemented yet (OffsetCommit v10+ and
//! Produce v13 address topics by id).
//!
//! Three ceilings depend on the transaction protocol a transactional
//! producer speaks (KIP-890, [`TxnProtocol`]): Produce v12, EndTxn v5 and
//! TxnOffsetCommit v5 *mean* transactions V2 (the partition joins the
//! transaction with the write, the epoch is bumped at every end). A
//! producer on TV1 sends them at v11, v4 and v4 at most
//! ([`TxnProtocol::ceiling`]), whatever the connection negotiated.
//!
//! Fetch goes up to v17: v13+ addresses topics by id (KIP-516), v16+
//! answers a refused partition with its new leader (KIP-951), v14, v15 and
//! v17 change only what followers send. One request's version can depend
//! on its content: a Fetch naming a topic without an id (a broker that
//! gave no id in Metadata) goes at v12 at most, by name
//! ([`request_version`]). The fetcher fills in both names and ids, so the
//! broker's own range decides otherwise: a broker below v13 reads names.
//!
//! **Test only: a broker's shape.** [`TEST_ONLY_VERSION_CAP_ENV`] names a
//! table of another broker's advertised versions ([`BrokerShape`], today
//! `redpanda-26.1`); every connection of the process then negotiates as if
//! the broker advertised no more than that table, and finalized no feature
//! the table does not. CI runs suites against Apache Kafka under it to send
//! the versions Redpanda would be sent (Produce v7, OffsetFetch v7, EndTxn
//! v3, no KIP-848, no TV2). Never set it in production: a connection then
//! speaks older versions than its broker offers (the client logs a warning
//! once when it is set).

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use kafka_protocol::messages::{ApiKey, FetchRequest};

/// Our supported range for `api`, or `None` if we never send it.
pub(crate) fn client_range(api: ApiKey) -> Option<(i16, i16)> {
    use ApiKey as K;
    let range = match api {
        // v12: a transactional Produce adds its partition to the
        // transaction (TV2); the same as v11 otherwise.
        K::Produce => (3, 12),
        K::Fetch => (4, 17),
        K::ListOffsets => (1, 8),
        // v13 (KIP-1102): a top-level error_code, REBOOTSTRAP_REQUIRED
        // among them (client.rs reads it before merging anything).
        K::Metadata => (1, 13),
        K::OffsetCommit => (2, 9),
        K::OffsetFetch => (1, 9),
        K::FindCoordinator => (0, 4),
        K::JoinGroup => (0, 9),
        K::Heartbeat => (0, 4),
        K::ConsumerGroupHeartbeat => (0, 1),
        K::ConsumerGroupDescribe => (0, 1),
        K::LeaveGroup => (0, 5),
        K::SyncGroup => (0, 5),
        K::DescribeGroups => (0, 5),
        // v5 (KIP-848): the group type in the answer, and a type filter
        // (share groups are listed with `types_filter: ["share"]`).
        K::ListGroups => (0, 5),
        K::SaslHandshake => (0, 1),
        K::ApiVersions => (0, 3),
        K::CreateTopics => (2, 7),
        K::DeleteTopics => (1, 6),
        K::DeleteRecords => (0, 2),
        K::InitProducerId => (0, 5),
        K::OffsetForLeaderEpoch => (2, 4),
        // v4+ are the brokers' own (verification), never a client's.
        K::AddPartitionsToTxn => (0, 3),
        // v4 (KIP-890): TRANSACTION_ABORTABLE may be answered.
        K::AddOffsetsToTxn => (0, 4),
        // v4: TRANSACTION_ABORTABLE; v5 (TV2): the epoch is bumped at each
        // end and the answer names the new producer id and epoch.
        K::EndTxn => (0, 5),
        // v4: TRANSACTION_ABORTABLE; v5 (TV2): the group coordinator adds
        // the offsets to the transaction itself (no AddOffsetsToTxn).
        K::TxnOffsetCommit => (0, 5),
        K::DescribeConfigs => (1, 4),
        K::AlterConfigs => (0, 2),
        K::SaslAuthenticate => (0, 2),
        K::CreatePartitions => (0, 3),
        K::DeleteGroups => (0, 2),
        K::IncrementalAlterConfigs => (0, 1),
        K::DescribeCluster => (0, 1),
        // KIP-455; v1 (KIP-860) carries allow_replication_factor_change.
        K::AlterPartitionReassignments => (0, 1),
        K::ListPartitionReassignments => (0, 0),
        // KIP-460: v1 brings the election type (unclean) and a top-level code.
        K::ElectLeaders => (1, 2),
        // Share groups (KIP-932; GA in Kafka 4.2). v0 was 4.0's early
        // access and is gone; ShareFetch/ShareAcknowledge v2 (4.2) carry
        // `share_acquire_mode` (KIP-1206) and RENEW (KIP-1222).
        K::ShareGroupHeartbeat => (1, 1),
        K::ShareFetch => (1, 2),
        K::ShareAcknowledge => (1, 2),
        // Share group admin (KIP-932, Kafka 4.1+). DescribeShareGroupOffsets
        // v1 (the broker's lag, KIP-1226) is not in the codec yet: v0 gives
        // the start offsets, and the lag is measured from the log end.
        K::ShareGroupDescribe => (1, 1),
        K::DescribeShareGroupOffsets => (0, 0),
        K::AlterShareGroupOffsets => (0, 0),
        K::DeleteShareGroupOffsets => (0, 0),
        K::GetTelemetrySubscriptions | K::PushTelemetry => (0, 0), // KIP-714
        _ => return None,
    };
    // Never claim a version the codec library cannot encode.
    let lib = api.valid_versions();
    let (lo, hi) = (range.0.max(lib.min), range.1.min(lib.max));
    (lo <= hi).then_some((lo, hi))
}

/// The first Fetch version that addresses topics by id, not name (KIP-516).
pub(crate) const FETCH_TOPIC_IDS_VERSION: i16 = 13;

/// The version to send a Fetch at, where `negotiated` is the one agreed
/// with the broker: with `by_topic_id` false (some topic in it has no id)
/// at most v12, the last that carries topic names.
pub(crate) fn fetch_version(negotiated: i16, by_topic_id: bool) -> i16 {
    if by_topic_id {
        negotiated
    } else {
        negotiated.min(FETCH_TOPIC_IDS_VERSION - 1)
    }
}

/// Does every topic of `req`, fetched or forgotten, carry an id?
pub(crate) fn fetch_has_topic_ids(req: &FetchRequest) -> bool {
    req.topics.iter().all(|t| !t.topic_id.is_nil())
        && req
            .forgotten_topics_data
            .iter()
            .all(|t| !t.topic_id.is_nil())
}

/// The version to send `req` (of `api`) at on a connection that agreed on
/// `negotiated`: that one, but for a Fetch without every topic id, at most
/// v12 ([`fetch_version`]). A Fetch at v13+ with a nil id would be
/// answered UNKNOWN_TOPIC_ID.
pub(crate) fn request_version(api: ApiKey, negotiated: i16, req: &dyn Any) -> i16 {
    match (api, req.downcast_ref::<FetchRequest>()) {
        (ApiKey::Fetch, Some(fetch)) => fetch_version(negotiated, fetch_has_topic_ids(fetch)),
        _ => negotiated,
    }
}

/// The versions agreed with one broker: per API, the highest version both
/// sides support; and the cluster features the broker said are finalized.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    negotiated: HashMap<i16, i16>,
    /// The broker's own ranges, kept for error messages and `kafka-lab check`
    /// (under a test-only cap, as capped: what the capped broker would say).
    broker: Vec<(i16, i16, i16)>,
    /// Finalized features (ApiVersions v3+): name and finalized level.
    finalized: Vec<(String, i16)>,
    /// The test-only shape this table was capped at, if any.
    cap: Option<&'static BrokerShape>,
}

impl ApiVersionTable {
    /// Intersect the broker's advertised `(api_key, min, max)` ranges with ours.
    ///
    /// Under the test-only `KAFKA_WIRE_TEST_ONLY_VERSION_CAP` the broker's ranges
    /// are first cut to that broker shape's.
    pub fn negotiate(broker: impl IntoIterator<Item = (i16, i16, i16)>) -> Self {
        Self::negotiate_under(broker, test_only_cap())
    }

    /// [`Self::negotiate`] with the broker's ranges cut to `cap`'s first
    /// (`None`: as advertised).
    pub(crate) fn negotiate_under(
        broker: impl IntoIterator<Item = (i16, i16, i16)>,
        cap: Option<&'static BrokerShape>,
    ) -> Self {
        let advertised: Vec<(i16, i16, i16)> = broker.into_iter().collect();
        let broker = match cap {
            Some(shape) => shape.cut(&advertised),
            None => advertised,
        };
        let negotiated = broker
            .iter()
            .filter_map(|&(key, bmin, bmax)| {
                let api = ApiKey::try_from(key).ok()?;
                let (cmin, cmax) = client_range(api)?;
                let v = cmax.min(bmax);
                (v >= cmin.max(bmin)).then_some((key, v))
            })
            .collect();
        Self {
            negotiated,
            broker,
            finalized: Vec::new(),
            cap,
        }
    }

    /// This table with the cluster features the broker finalized, as
    /// `(name, max_version_level)` from its ApiVersions v3+ answer (an
    /// older answer has none).
    pub fn with_finalized_features(
        mut self,
        features: impl IntoIterator<Item = (String, i16)>,
    ) -> Self {
        let cap = self.cap;
        self.finalized = features
            .into_iter()
            .filter_map(|(name, level)| match cap {
                // Capped: only what the shape finalizes, at its level at most.
                Some(shape) => shape
                    .finalized
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, max)| (name, level.min(max))),
                None => Some((name, level)),
            })
            .collect();
        self
    }

    /// The level the cluster finalized for feature `name` (say
    /// `"transaction.version"`), as this broker reported it when the
    /// connection opened; `None` when it finalized none (Kafka 3.x for
    /// most features, Redpanda, a feature at level 0).
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.finalized
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, level)| level)
    }

    /// The version to use for `api`, if the broker and we share one.
    pub fn version(&self, api: ApiKey) -> Option<i16> {
        self.negotiated.get(&(api as i16)).copied()
    }

    /// The broker's advertised range for `api`.
    pub fn broker_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.broker
            .iter()
            .find(|(k, _, _)| *k == api as i16)
            .map(|&(_, lo, hi)| (lo, hi))
    }

    /// Every API the broker advertised, as `(api_key, min, max)`.
    pub fn broker_apis(&self) -> &[(i16, i16, i16)] {
        &self.broker
    }
}

/// **Test only.** The environment variable that caps every connection of
/// the process at a named broker shape ([`BrokerShape::named`]; today
/// `redpanda-26.1`): the broker's advertised ranges are cut to the shape's,
/// and features it does not finalize are dropped, before negotiation.
/// `cargo xtask test`'s `redpanda-shape` step sets it; nothing else should.
/// An unknown name caps at nothing (every request then fails with
/// [`crate::Error::UnsupportedVersion`], and an error is logged), so a typo
/// fails the run instead of testing the uncapped client.
pub(crate) const TEST_ONLY_VERSION_CAP_ENV: &str = "KAFKA_WIRE_TEST_ONLY_VERSION_CAP";

/// Another broker's ApiVersions answer, by name: what it advertises and
/// which features it finalizes. Test only ([`TEST_ONLY_VERSION_CAP_ENV`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BrokerShape {
    pub(crate) name: &'static str,
    /// `(api, min, max)`: every API the broker advertises.
    pub(crate) apis: &'static [(ApiKey, i16, i16)],
    /// `(feature, level)`: every feature it finalizes.
    pub(crate) finalized: &'static [(&'static str, i16)],
}

impl BrokerShape {
    /// The shape called `name`, if there is one.
    pub(crate) fn named(name: &str) -> Option<&'static BrokerShape> {
        [&REDPANDA_26_1].into_iter().find(|s| s.name == name)
    }

    /// `advertised` ranges cut to this shape's: an API it lacks is dropped,
    /// one it has is narrowed to both ranges (dropped when they do not meet).
    fn cut(&self, advertised: &[(i16, i16, i16)]) -> Vec<(i16, i16, i16)> {
        advertised
            .iter()
            .filter_map(|&(key, lo, hi)| {
                let &(_, slo, shi) = self.apis.iter().find(|(api, _, _)| *api as i16 == key)?;
                let (lo, hi) = (lo.max(slo), hi.min(shi));
                (lo <= hi).then_some((key, lo, hi))
            })
            .collect()
    }

    /// Its table as an ApiVersions answer's `(api_key, min, max)`.
    #[cfg(test)]
    fn advertised(&self) -> Vec<(i16, i16, i16)> {
        self.apis
            .iter()
            .map(|&(api, lo, hi)| (api as i16, lo, hi))
            .collect()
    }
}

/// Redpanda v26.1's ApiVersions answer.
///
/// Read from redpanda-data/redpanda `src/v/kafka/server/handlers/*.h` (each
/// handler's `handler<api, min, max>`; `handlers.h` lists what is served):
/// - the snapshot of 2024-12-20 (1c6cff34, the v24.3 line) for every range
///   not named below;
/// - Produce 0-7 (`produce.h`, unchanged through 2026);
/// - Fetch 4-13, Metadata and CreateTopics with topic ids: PR #26968
///   ("Implement Topic IDs for Metadata, Fetch, CreateTopics", merged
///   2025-09, v25.3). Fetch 13 and CreateTopics 7 are where the ids
///   start; Metadata's ceiling is not in the sources we could read (topic
///   ids need v10+; `metadata.h` held it below v11 until DescribeCluster
///   v0 existed, which it does in 2025's `describe_cluster.h`): 12 here;
/// - DescribeCluster 0-0 (`describe_cluster.h`, 2025).
///
/// Not advertised: ConsumerGroupHeartbeat (served only behind a cluster
/// setting, hidden from ApiVersions otherwise), ConsumerGroupDescribe, the
/// share-group APIs (KIP-932), telemetry (KIP-714), ElectLeaders,
/// DescribeTopicPartitions. No feature is finalized (so no
/// `transaction.version`: transactions V1).
pub(crate) const REDPANDA_26_1: BrokerShape = BrokerShape {
    name: "redpanda-26.1",
    apis: &[
        (ApiKey::Produce, 0, 7),
        (ApiKey::Fetch, 4, 13),
        (ApiKey::ListOffsets, 0, 4),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::OffsetCommit, 1, 8),
        (ApiKey::OffsetFetch, 1, 7),
        (ApiKey::FindCoordinator, 0, 3),
        (ApiKey::JoinGroup, 0, 6),
        (ApiKey::Heartbeat, 0, 4),
        (ApiKey::LeaveGroup, 0, 4),
        (ApiKey::SyncGroup, 0, 4),
        (ApiKey::DescribeGroups, 0, 5),
        (ApiKey::ListGroups, 0, 4),
        (ApiKey::SaslHandshake, 0, 1),
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::CreateTopics, 0, 7),
        (ApiKey::DeleteTopics, 0, 5),
        (ApiKey::DeleteRecords, 0, 2),
        (ApiKey::InitProducerId, 0, 3),
        (ApiKey::OffsetForLeaderEpoch, 0, 4),
        (ApiKey::AddPartitionsToTxn, 0, 3),
        (ApiKey::AddOffsetsToTxn, 0, 1),
        (ApiKey::EndTxn, 0, 3),
        (ApiKey::TxnOffsetCommit, 0, 3),
        (ApiKey::DescribeAcls, 0, 2),
        (ApiKey::CreateAcls, 0, 2),
        (ApiKey::DeleteAcls, 0, 2),
        (ApiKey::DescribeConfigs, 0, 4),
        (ApiKey::AlterConfigs, 0, 2),
        (ApiKey::DescribeLogDirs, 0, 2),
        (ApiKey::SaslAuthenticate, 0, 2),
        (ApiKey::CreatePartitions, 0, 3),
        (ApiKey::DeleteGroups, 0, 2),
        (ApiKey::IncrementalAlterConfigs, 0, 1),
        (ApiKey::AlterPartitionReassignments, 0, 0),
        (ApiKey::ListPartitionReassignments, 0, 0),
        (ApiKey::OffsetDelete, 0, 0),
        (ApiKey::DescribeClientQuotas, 0, 1),
        (ApiKey::AlterClientQuotas, 0, 1),
        (ApiKey::DescribeUserScramCredentials, 0, 0),
        (ApiKey::AlterUserScramCredentials, 0, 0),
        (ApiKey::DescribeProducers, 0, 0),
        (ApiKey::DescribeTransactions, 0, 0),
        (ApiKey::ListTransactions, 0, 0),
        (ApiKey::DescribeCluster, 0, 0),
    ],
    finalized: &[],
};

/// What an unknown [`TEST_ONLY_VERSION_CAP_ENV`] name caps at: nothing.
static NO_API: BrokerShape = BrokerShape {
    name: "(unknown name: no API)",
    apis: &[],
    finalized: &[],
};

/// The shape [`TEST_ONLY_VERSION_CAP_ENV`] names, read once per process.
fn test_only_cap() -> Option<&'static BrokerShape> {
    static CAP: OnceLock<Option<&'static BrokerShape>> = OnceLock::new();
    *CAP.get_or_init(|| {
        let name = std::env::var(TEST_ONLY_VERSION_CAP_ENV).ok()?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        match BrokerShape::named(name) {
            Some(shape) => {
                tracing::warn!(
                    shape = shape.name,
                    "{TEST_ONLY_VERSION_CAP_ENV} is set: every connection negotiates as if \
                     the broker were {} (a test setting; unset it outside tests)",
                    shape.name
                );
                Some(shape)
            }
            None => {
                tracing::error!(
                    "{TEST_ONLY_VERSION_CAP_ENV}={name} names no broker shape (known: \
                     redpanda-26.1): every request will fail as unsupported"
                );
                Some(&NO_API)
            }
        }
    })
}

/// The cluster feature that turns transactions V2 on (KIP-890).
pub(crate) const TRANSACTION_VERSION: &str = "transaction.version";

/// The transaction protocol a transactional producer speaks (KIP-890).
///
/// - `V1`: each partition joins the transaction by AddPartitionsToTxn
///   before its first record, the offsets by AddOffsetsToTxn; the producer
///   keeps one epoch across its transactions (Produce ≤ v11, EndTxn and
///   TxnOffsetCommit ≤ v4). Kafka 3.x, Redpanda, and a 4.x cluster whose
///   `transaction.version` is below 2.
/// - `V2`: a Produce v12 adds its partition and a TxnOffsetCommit v5 its
///   offsets; every EndTxn v5 bumps the producer epoch and answers the new
///   one (a new producer id when the epoch ran out), so a write of an
///   ended transaction, arriving late, is refused as stale instead of
///   joining the next one (DESIGN.md, "Transactions V2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TxnProtocol {
    #[default]
    V1,
    V2,
}

impl TxnProtocol {
    /// The protocol to speak with the cluster `coordinator` (the
    /// transaction coordinator's table) describes, for a producer allowed
    /// up to `max` (its `transaction.version` cap: 1 or 2): V2 when the
    /// cluster finalized `transaction.version` ≥ 2 (as Java's
    /// `maybeUpdateTransactionV2Enabled`) and the broker speaks EndTxn v5,
    /// TxnOffsetCommit v5 and Produce v12; V1 otherwise.
    pub(crate) fn choose(coordinator: &ApiVersionTable, max: i16) -> TxnProtocol {
        let finalized = coordinator
            .finalized_feature(TRANSACTION_VERSION)
            .unwrap_or(0);
        let speaks = |api: ApiKey, v: i16| coordinator.version(api).is_some_and(|n| n >= v);
        let v2 = max >= 2
            && finalized >= 2
            && speaks(ApiKey::EndTxn, 5)
            && speaks(ApiKey::TxnOffsetCommit, 5)
            && speaks(ApiKey::Produce, 12);
        if v2 {
            TxnProtocol::V2
        } else {
            TxnProtocol::V1
        }
    }

    /// The highest version of `api` a request of this protocol may go at
    /// (`None`: the negotiated one): V1 stays below the versions that mean
    /// V2.
    pub(crate) fn ceiling(self, api: ApiKey) -> Option<i16> {
        match (self, api) {
            (TxnProtocol::V1, ApiKey::Produce) => Some(11),
            (TxnProtocol::V1, ApiKey::EndTxn | ApiKey::TxnOffsetCommit) => Some(4),
            _ => None,
        }
    }

    /// The `transaction.version` level this protocol is (1 or 2).
    pub(crate) fn level(self) -> i16 {
        match self {
            TxnProtocol::V1 => 1,
            TxnProtocol::V2 => 2,
        }
    }

    /// Moving from `self` to `next` between two transactions: must the
    /// producer bump its epoch first (InitProducerId) before the next
    /// one? Only on the way up, as Java: a V1 epoch that carries on into
    /// V2 could let a partition of the V1 transaction count as already
    /// added to the first V2 one.
    pub(crate) fn bump_before(self, next: TxnProtocol) -> bool {
        self == TxnProtocol::V1 && next == TxnProtocol::V2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_highest_common_version() {
        let t = ApiVersionTable::negotiate([
            (ApiKey::Fetch as i16, 4, 17),
            (ApiKey::Produce as i16, 3, 8),
            (ApiKey::JoinGroup as i16, 0, 9),
            (ApiKey::Metadata as i16, 0, 13),
        ]);
        assert_eq!(t.version(ApiKey::Fetch), Some(17), "KIP-516 and KIP-951");
        assert_eq!(
            t.version(ApiKey::Metadata),
            Some(13),
            "KIP-1102's error_code"
        );
        assert_eq!(t.version(ApiKey::Produce), Some(8));
        assert_eq!(t.version(ApiKey::JoinGroup), Some(9));
        assert_eq!(t.version(ApiKey::Heartbeat), None, "not advertised");
    }

    /// A Fetch of two topics, `with_ids` of them carrying an id, and one
    /// forgotten topic carrying an id when `forgotten_id`.
    fn fetch(with_ids: usize, forgotten_id: bool) -> FetchRequest {
        use kafka_protocol::messages::fetch_request::{FetchTopic, ForgottenTopic};
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let topics = (0..2)
            .map(|i| {
                let mut t = FetchTopic::default();
                if i < with_ids {
                    t.topic_id = id.parse().unwrap();
                }
                t
            })
            .collect();
        let mut forgotten = ForgottenTopic::default();
        if forgotten_id {
            forgotten.topic_id = id.parse().unwrap();
        }
        FetchRequest::default()
            .with_topics(topics)
            .with_forgotten_topics_data(vec![forgotten])
    }

    #[test]
    fn a_fetch_goes_by_topic_id_only_when_every_topic_has_one() {
        let v = |req: &FetchRequest, negotiated| request_version(ApiKey::Fetch, negotiated, req);
        // A Kafka 3.1+ broker (Fetch v13+).
        assert_eq!(v(&fetch(2, true), 17), 17, "every id known: by id");
        assert_eq!(v(&fetch(1, true), 17), 12, "a topic without an id: by name");
        assert_eq!(
            v(&fetch(2, false), 17),
            12,
            "a forgotten topic without an id"
        );
        assert_eq!(
            v(&FetchRequest::default(), 17),
            17,
            "an empty incremental fetch"
        );
        // An older broker (Fetch v12 at most) reads names whatever we know.
        assert_eq!(v(&fetch(2, true), 12), 12);
        assert_eq!(v(&fetch(0, false), 11), 11);
        // Other requests keep the negotiated version.
        assert_eq!(request_version(ApiKey::Produce, 11, &fetch(0, false)), 11);
    }

    #[test]
    fn share_group_apis_speak_v1_to_v2() {
        // Kafka 4.4 advertises ShareFetch/ShareAcknowledge v1-v2; 4.1 only v1;
        // 4.0's early access only v0, which this client does not speak.
        let t = ApiVersionTable::negotiate([
            (ApiKey::ShareFetch as i16, 1, 2),
            (ApiKey::ShareAcknowledge as i16, 1, 1),
            (ApiKey::ShareGroupHeartbeat as i16, 0, 0),
        ]);
        assert_eq!(t.version(ApiKey::ShareFetch), Some(2), "KIP-1206/KIP-1222");
        assert_eq!(t.version(ApiKey::ShareAcknowledge), Some(1));
        assert_eq!(t.version(ApiKey::ShareGroupHeartbeat), None, "4.0's v0");
    }

    /// A Kafka 4.x broker's ApiVersions answer: its transaction API ranges
    /// and, when `tv` is set, `transaction.version` finalized at that level.
    fn kafka4(tv: Option<i16>) -> ApiVersionTable {
        let t = ApiVersionTable::negotiate([
            (ApiKey::Produce as i16, 3, 13),
            (ApiKey::EndTxn as i16, 0, 5),
            (ApiKey::TxnOffsetCommit as i16, 0, 5),
            (ApiKey::AddOffsetsToTxn as i16, 0, 4),
            (ApiKey::AddPartitionsToTxn as i16, 0, 5),
        ]);
        let mut features = vec![("metadata.version".to_string(), 27)];
        features.extend(tv.map(|level| (TRANSACTION_VERSION.to_string(), level)));
        t.with_finalized_features(features)
    }

    #[test]
    fn transactions_v2_needs_the_finalized_feature_the_versions_and_no_cap() {
        let v2 = kafka4(Some(2));
        assert_eq!(v2.finalized_feature(TRANSACTION_VERSION), Some(2));
        assert_eq!(v2.finalized_feature("group.version"), None);
        assert_eq!(TxnProtocol::choose(&v2, 2), TxnProtocol::V2);
        assert_eq!(
            TxnProtocol::choose(&v2, 1),
            TxnProtocol::V1,
            "capped to TV1"
        );
        // A 4.x cluster that finalized less (upgraded from 3.x and not
        // finalized yet), or none at all (Kafka 3.9, Redpanda).
        assert_eq!(TxnProtocol::choose(&kafka4(Some(1)), 2), TxnProtocol::V1);
        assert_eq!(TxnProtocol::choose(&kafka4(None), 2), TxnProtocol::V1);
        // Kafka 3.9: Produce v11, EndTxn v4 at most, nothing finalized.
        let kafka39 = ApiVersionTable::negotiate([
            (ApiKey::Produce as i16, 3, 11),
            (ApiKey::EndTxn as i16, 0, 4),
            (ApiKey::TxnOffsetCommit as i16, 0, 4),
        ]);
        assert_eq!(TxnProtocol::choose(&kafka39, 2), TxnProtocol::V1);
        // The feature finalized, but a version missing: V1, never a V2
        // request the broker cannot read.
        let no_end_txn_v5 = ApiVersionTable::negotiate([
            (ApiKey::Produce as i16, 3, 12),
            (ApiKey::EndTxn as i16, 0, 4),
            (ApiKey::TxnOffsetCommit as i16, 0, 5),
        ])
        .with_finalized_features([(TRANSACTION_VERSION.to_string(), 2)]);
        assert_eq!(TxnProtocol::choose(&no_end_txn_v5, 2), TxnProtocol::V1);
    }

    #[test]
    fn each_protocol_sends_the_transaction_apis_at_its_own_versions() {
        let t = kafka4(Some(2));
        let at = |p: TxnProtocol, api: ApiKey| {
            let n = t.version(api).unwrap();
            p.ceiling(api).map_or(n, |c| n.min(c))
        };
        use TxnProtocol::{V1, V2};
        assert_eq!(at(V2, ApiKey::Produce), 12, "v13 names topics by id");
        assert_eq!(at(V2, ApiKey::EndTxn), 5);
        assert_eq!(at(V2, ApiKey::TxnOffsetCommit), 5);
        assert_eq!(at(V1, ApiKey::Produce), 11);
        assert_eq!(at(V1, ApiKey::EndTxn), 4, "v4: TRANSACTION_ABORTABLE");
        assert_eq!(at(V1, ApiKey::TxnOffsetCommit), 4);
        for p in [V1, V2] {
            assert_eq!(at(p, ApiKey::AddOffsetsToTxn), 4);
            assert_eq!(at(p, ApiKey::AddPartitionsToTxn), 3, "v4+ are brokers'");
        }
        assert_eq!((V1.level(), V2.level()), (1, 2));
    }

    #[test]
    fn only_moving_up_to_v2_bumps_the_epoch_first() {
        use TxnProtocol::{V1, V2};
        assert!(V1.bump_before(V2));
        assert!(!V2.bump_before(V1));
        assert!(!V1.bump_before(V1));
        assert!(!V2.bump_before(V2));
    }

    #[test]
    fn disjoint_ranges_yield_none() {
        let t = ApiVersionTable::negotiate([(ApiKey::Produce as i16, 0, 2)]);
        assert_eq!(t.version(ApiKey::Produce), None);
    }

    /// Every API this client sends (those [`client_range`] names).
    fn client_apis() -> impl Iterator<Item = ApiKey> {
        (0..100i16)
            .filter_map(|k| ApiKey::try_from(k).ok())
            .filter(|&api| client_range(api).is_some())
    }

    /// A Kafka 4.4-like broker: every version the codec knows, and
    /// `transaction.version`, `group.version` and `share.version` finalized.
    fn everything_finalized(cap: Option<&'static BrokerShape>) -> ApiVersionTable {
        let apis = (0..100i16).filter_map(|k| {
            let api = ApiKey::try_from(k).ok()?;
            let r = api.valid_versions();
            Some((k, r.min, r.max))
        });
        ApiVersionTable::negotiate_under(apis, cap).with_finalized_features([
            ("metadata.version".to_string(), 27),
            (TRANSACTION_VERSION.to_string(), 2),
            ("group.version".to_string(), 1),
            ("share.version".to_string(), 1),
        ])
    }

    #[test]
    fn against_redpanda_26_1_every_api_lands_within_its_table() {
        let rp = ApiVersionTable::negotiate_under(REDPANDA_26_1.advertised(), None);
        for api in client_apis() {
            let (cmin, cmax) = client_range(api).unwrap();
            let theirs = REDPANDA_26_1.apis.iter().find(|(a, _, _)| *a == api);
            match (theirs, rp.version(api)) {
                (Some(&(_, lo, hi)), Some(v)) => {
                    assert!(
                        lo <= v && v <= hi,
                        "{api:?} v{v} outside Redpanda's {lo}-{hi}"
                    );
                    assert!(cmin <= v && v <= cmax, "{api:?} v{v} outside ours");
                    assert_eq!(v, hi.min(cmax), "{api:?}: the highest both speak");
                }
                (Some(&(_, lo, hi)), None) => {
                    assert!(hi < cmin || lo > cmax, "{api:?}: {lo}-{hi} meets ours")
                }
                (None, v) => assert_eq!(v, None, "{api:?} is not advertised"),
            }
        }
        // The versions this pass exists for: never sent to Kafka 4.x.
        let at = |api| rp.version(api);
        assert_eq!(at(ApiKey::Produce), Some(7), "not flexible (v9+)");
        assert_eq!(at(ApiKey::Fetch), Some(13), "topic ids");
        assert_eq!(at(ApiKey::OffsetFetch), Some(7), "one group a request");
        assert_eq!(at(ApiKey::FindCoordinator), Some(3), "one key a request");
        assert_eq!(at(ApiKey::OffsetCommit), Some(8));
        assert_eq!(at(ApiKey::JoinGroup), Some(6));
        assert_eq!(at(ApiKey::SyncGroup), Some(4));
        assert_eq!(at(ApiKey::ListOffsets), Some(4));
        assert_eq!(at(ApiKey::InitProducerId), Some(3));
        assert_eq!(at(ApiKey::AddOffsetsToTxn), Some(1));
        assert_eq!(at(ApiKey::EndTxn), Some(3));
        assert_eq!(at(ApiKey::TxnOffsetCommit), Some(3));
        assert_eq!(at(ApiKey::ListGroups), Some(4), "no type filter");
        assert_eq!(at(ApiKey::DescribeCluster), Some(0));
        for api in [
            ApiKey::ConsumerGroupHeartbeat,
            ApiKey::ConsumerGroupDescribe,
            ApiKey::ShareGroupHeartbeat,
            ApiKey::ShareFetch,
            ApiKey::ShareAcknowledge,
            ApiKey::ElectLeaders,
        ] {
            assert_eq!(at(api), None, "{api:?}");
        }
        assert_eq!(rp.finalized_feature(TRANSACTION_VERSION), None);
        assert_eq!(TxnProtocol::choose(&rp, 2), TxnProtocol::V1);
    }

    #[test]
    fn the_cap_makes_a_kafka_4_4_broker_negotiate_as_redpanda_26_1() {
        let uncapped = everything_finalized(None);
        assert_eq!(uncapped.version(ApiKey::Produce), Some(12));
        assert_eq!(TxnProtocol::choose(&uncapped, 2), TxnProtocol::V2);

        let capped = everything_finalized(Some(&REDPANDA_26_1));
        let rp = ApiVersionTable::negotiate_under(REDPANDA_26_1.advertised(), None);
        for key in 0..100i16 {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            assert_eq!(capped.version(api), rp.version(api), "{api:?}");
            // The ceilings are Redpanda's (the floors the higher of both).
            assert_eq!(
                capped.broker_range(api).map(|r| r.1),
                rp.broker_range(api).map(|r| r.1),
                "{api:?}"
            );
        }
        // Redpanda finalizes nothing: no TV2, no KIP-848 or share groups.
        for f in [
            TRANSACTION_VERSION,
            "group.version",
            "share.version",
            "metadata.version",
        ] {
            assert_eq!(capped.finalized_feature(f), None, "{f}");
        }
        assert_eq!(TxnProtocol::choose(&capped, 2), TxnProtocol::V1);
    }

    #[test]
    fn the_test_only_cap_knows_one_name_and_an_unknown_one_allows_nothing() {
        assert_eq!(BrokerShape::named("redpanda-26.1"), Some(&REDPANDA_26_1));
        assert_eq!(BrokerShape::named("redpanda"), None);
        assert_eq!(BrokerShape::named(""), None);
        let nothing = everything_finalized(Some(&NO_API));
        for api in client_apis() {
            assert_eq!(nothing.version(api), None, "{api:?}");
        }
    }

    #[test]
    fn produce_v7_goes_unflexible_and_reads_back() {
        use crate::records::{encode_batch, BatchOptions, BatchReader, NewRecord};
        use bytes::{Buf, Bytes, BytesMut};
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::{
            ProduceRequest, ProduceResponse, RequestHeader, TopicName, TransactionalId,
        };
        use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

        let v = ApiVersionTable::negotiate_under(REDPANDA_26_1.advertised(), None)
            .version(ApiKey::Produce)
            .unwrap();
        assert_eq!(v, 7);
        // As the producer builds it: one transactional batch, large enough
        // to go as a segment of its own.
        let records: Vec<NewRecord> = (0..3)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![b'v'; 700])),
                headers: vec![("h".into(), Some(Bytes::from_static(b"x")))],
                timestamp: 1_700_000_000_000 + i,
            })
            .collect();
        let mut batch = BytesMut::new();
        let opts = BatchOptions {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 0,
            transactional: true,
            ..BatchOptions::default()
        };
        encode_batch(&mut batch, &opts, &records);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("txn-1"))))
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(2)
                    .with_records(Some(batch.freeze()))])]);
        let frame = crate::segments::produce_frame(&req, v, &StrBytes::from_static_str("c"))
            .unwrap()
            .expect("v7 is written by the producer's own encoder");
        assert!(!frame.tail.is_empty(), "the batch is a segment of its own");

        // What the broker reads: a v1 header (v2 is flexible, v9+), then the body.
        assert_eq!(ProduceRequest::header_version(v), 1);
        let mut bytes = Bytes::from(frame.to_vec());
        assert_eq!(bytes.get_i32() as usize, bytes.len());
        let header = RequestHeader::decode(&mut bytes, 1).unwrap();
        assert_eq!(header.request_api_key, ApiKey::Produce as i16);
        assert_eq!(header.request_api_version, 7);
        let read = ProduceRequest::decode(&mut bytes, v).unwrap();
        assert!(!bytes.has_remaining(), "nothing after the body");
        assert_eq!(read, req);
        let sent = read.topic_data[0].partition_data[0]
            .records
            .clone()
            .unwrap();
        let batches: Vec<_> = BatchReader::new(sent).collect::<Result<_, _>>().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].producer_id, batches[0].producer_epoch), (42, 3));
        assert!(batches[0].is_transactional());
        let got: Vec<_> = batches[0]
            .records(1 << 20)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].key.as_deref(), Some(&b"k2"[..]));

        // Its answer at v7: no record errors (v8), no leader hints (v10).
        let resp = ProduceResponse::default()
            .with_throttle_time_ms(5)
            .with_responses(vec![TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_responses(vec![PartitionProduceResponse::default()
                    .with_index(2)
                    .with_base_offset(100)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(0)])]);
        let mut wire = BytesMut::new();
        resp.encode(&mut wire, v).unwrap();
        let back = ProduceResponse::decode(&mut wire.freeze(), v).unwrap();
        assert_eq!(back, resp);
        assert_eq!(back.responses[0].partition_responses[0].base_offset, 100);
    }

    #[test]
    fn every_range_is_encodable_by_the_codec_library() {
        for key in 0..100i16 {
            let Ok(api) = ApiKey::try_from(key) else {
                continue;
            };
            if let Some((lo, hi)) = client_range(api) {
                let lib = api.valid_versions();
                assert!(lo >= lib.min && hi <= lib.max && lo <= hi, "{api:?}");
            }
        }
    }
}
