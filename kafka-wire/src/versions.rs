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

use std::any::Any;
use std::collections::HashMap;

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
    /// The broker's own ranges, kept for error messages and `kafka-lab check`.
    broker: Vec<(i16, i16, i16)>,
    /// Finalized features (ApiVersions v3+): name and finalized level.
    finalized: Vec<(String, i16)>,
}

impl ApiVersionTable {
    /// Intersect the broker's advertised `(api_key, min, max)` ranges with ours.
    pub fn negotiate(broker: impl IntoIterator<Item = (i16, i16, i16)>) -> Self {
        let broker: Vec<(i16, i16, i16)> = broker.into_iter().collect();
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
        }
    }

    /// This table with the cluster features the broker finalized, as
    /// `(name, max_version_level)` from its ApiVersions v3+ answer (an
    /// older answer has none).
    pub fn with_finalized_features(
        mut self,
        features: impl IntoIterator<Item = (String, i16)>,
    ) -> Self {
        self.finalized = features.into_iter().collect();
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
