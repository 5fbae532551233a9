//! Which version of each API we speak: one table, one place.
//!
//! The ranges are what this client implements correctly. The floors are what
//! Kafka 4.x still accepts (KIP-896 removed older versions), and every floor
//! is also served by Kafka 3.x brokers. The ceilings stop before versions that
//! change semantics we have not implemented yet (for example Fetch v13+ and
//! OffsetCommit v10+ address topics by id, not name).

use std::collections::HashMap;

use kafka_protocol::messages::ApiKey;

/// Our supported range for `api`, or `None` if we never send it.
pub(crate) fn client_range(api: ApiKey) -> Option<(i16, i16)> {
    use ApiKey as K;
    let range = match api {
        K::Produce => (3, 11),
        K::Fetch => (4, 12),
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
        K::ListGroups => (0, 4),
        K::SaslHandshake => (0, 1),
        K::ApiVersions => (0, 3),
        K::CreateTopics => (2, 7),
        K::DeleteTopics => (1, 6),
        K::DeleteRecords => (0, 2),
        K::InitProducerId => (0, 5),
        K::OffsetForLeaderEpoch => (2, 4),
        K::AddPartitionsToTxn => (0, 3),
        K::AddOffsetsToTxn => (0, 3),
        K::EndTxn => (0, 3),
        K::TxnOffsetCommit => (0, 3),
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
        _ => return None,
    };
    // Never claim a version the codec library cannot encode.
    let lib = api.valid_versions();
    let (lo, hi) = (range.0.max(lib.min), range.1.min(lib.max));
    (lo <= hi).then_some((lo, hi))
}

/// The versions agreed with one broker: per API, the highest version both
/// sides support.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    negotiated: HashMap<i16, i16>,
    /// The broker's own ranges, kept for error messages and `kafka-lab check`.
    broker: Vec<(i16, i16, i16)>,
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
        Self { negotiated, broker }
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
        assert_eq!(t.version(ApiKey::Fetch), Some(12));
        assert_eq!(
            t.version(ApiKey::Metadata),
            Some(13),
            "KIP-1102's error_code"
        );
        assert_eq!(t.version(ApiKey::Produce), Some(8));
        assert_eq!(t.version(ApiKey::JoinGroup), Some(9));
        assert_eq!(t.version(ApiKey::Heartbeat), None, "not advertised");
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
