//! Does the cluster offer share groups? If not, say which broker version
//! it looks like and what turns them on.
//!
//! - Kafka 3.9 and older: no share groups at all (no `share.version`
//!   feature, no ShareGroupHeartbeat).
//! - Kafka 4.0: an early-access preview (ShareGroupHeartbeat v0) this
//!   client does not speak; 4.1 brought v1, 4.2 made them GA.
//! - Kafka 4.1+: the cluster feature `share.version` turns them on. It
//!   is on in clusters formatted with 4.2+ metadata; an upgraded cluster
//!   needs `kafka-features.sh upgrade --feature share.version=1`.
//!
//! A v3 ApiVersions answer says all of it: the APIs, the features the
//! broker supports, and the levels the cluster finalized.

use std::time::Duration;

use kafka_wire::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_wire::{Client, KafkaCode, Lane, StrBytes};

use super::error::ShareError;

/// The feature that turns share groups on (Kafka 4.1+).
const SHARE_VERSION: &str = "share.version";

/// Ask one broker and judge ([`diagnose`]).
///
/// # Errors
/// [`ShareError::Unsupported`], or the connection error.
pub(crate) async fn share_groups_available(client: &Client) -> Result<(), ShareError> {
    let conn = client.any_connection(Lane::Control).await?;
    // v3 needs a valid software name and version (else INVALID_REQUEST).
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("kafka-rs"))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
    let resp = conn
        .send(&req, client.config().request_timeout, Duration::ZERO)
        .await?;
    if let Some(code) = KafkaCode::try_from_code(resp.error_code) {
        return Err(kafka_wire::Error::broker(ApiKey::ApiVersions, code).into());
    }
    diagnose(&resp, &conn.info().address.to_string())
}

/// Judge an ApiVersions answer from the broker at `broker`.
pub(crate) fn diagnose(resp: &ApiVersionsResponse, broker: &str) -> Result<(), ShareError> {
    let api = |key: ApiKey| {
        resp.api_keys
            .iter()
            .find(|a| a.api_key == key as i16)
            .map(|a| (a.min_version, a.max_version))
    };
    let supported = resp
        .supported_features
        .iter()
        .find(|f| f.name.as_str() == SHARE_VERSION)
        .map(|f| f.max_version);
    let finalized = resp
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == SHARE_VERSION)
        .map_or(0, |f| f.max_version_level);
    let heartbeat = api(ApiKey::ShareGroupHeartbeat);
    let fetch = api(ApiKey::ShareFetch);
    let unsupported = |detail: String| {
        Err(ShareError::Unsupported {
            broker: broker.to_string(),
            detail,
        })
    };
    if let Some(max) = supported {
        if max >= 1 && finalized < 1 {
            return unsupported(format!(
                "it is Kafka 4.1 or later with share groups off (the cluster feature \
                 {SHARE_VERSION} is at level {finalized}); turn them on with \
                 `bin/kafka-features.sh --bootstrap-server {broker} upgrade --feature \
                 {SHARE_VERSION}=1`"
            ));
        }
    }
    // KIP-896: Kafka 4 dropped Produce v0-v2, so its floor tells 4.x from 3.x.
    let kafka4 = api(ApiKey::Produce).is_some_and(|(lo, _)| lo >= 3);
    match (heartbeat, fetch) {
        (Some((_, hb)), Some((_, f))) if hb >= 1 && f >= 1 => Ok(()),
        (Some(_), _) | (_, Some(_)) => unsupported(
            "it is Kafka 4.0, whose share groups were an early-access preview \
             (ShareGroupHeartbeat and ShareFetch v0) this client does not speak; upgrade the \
             brokers to Kafka 4.1 or later (share groups are GA from 4.2)"
                .into(),
        ),
        (None, None) if supported.is_some() => unsupported(format!(
            "it advertises no share group APIs although it knows {SHARE_VERSION}; check that \
             {SHARE_VERSION} is finalized at 1 or more (`bin/kafka-features.sh \
             --bootstrap-server {broker} describe`)"
        )),
        (None, None) if kafka4 => unsupported(
            "it is Kafka 4.0, whose share groups were an early-access preview (off unless \
             group.share.enable=true, and v0, which this client does not speak); upgrade the \
             brokers to Kafka 4.1 or later (share groups are GA from 4.2)"
                .into(),
        ),
        (None, None) => unsupported(
            "it is Kafka 3.9 or older, which has no share groups (KIP-932 needs Kafka 4.1 or \
             later, GA from 4.2); upgrade the brokers, then make sure the cluster feature \
             share.version is 1 or more"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use kafka_wire::messages::api_versions_response::{
        ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
    };

    use super::*;

    fn answer(
        apis: &[(ApiKey, i16, i16)],
        supported: Option<i16>,
        finalized: Option<i16>,
    ) -> ApiVersionsResponse {
        let mut r = ApiVersionsResponse::default().with_api_keys(
            apis.iter()
                .map(|(k, lo, hi)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*lo)
                        .with_max_version(*hi)
                })
                .collect(),
        );
        if let Some(max) = supported {
            r.supported_features = vec![SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(SHARE_VERSION))
                .with_max_version(max)];
        }
        if let Some(level) = finalized {
            r.finalized_features = vec![FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(SHARE_VERSION))
                .with_max_version_level(level)];
        }
        r
    }

    const SHARE_APIS: &[(ApiKey, i16, i16)] = &[
        (ApiKey::ShareGroupHeartbeat, 1, 1),
        (ApiKey::ShareFetch, 1, 2),
        (ApiKey::ShareAcknowledge, 1, 2),
    ];

    #[test]
    fn kafka_4_4_with_share_groups_on_passes() {
        assert!(diagnose(&answer(SHARE_APIS, Some(2), Some(2)), "b:9092").is_ok());
    }

    #[test]
    fn kafka_4_with_the_feature_off_names_the_feature_command() {
        let e = diagnose(&answer(&[], Some(2), Some(0)), "b:9092").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("Kafka 4.1 or later"), "{text}");
        assert!(
            text.contains(
                "kafka-features.sh --bootstrap-server b:9092 upgrade --feature share.version=1"
            ),
            "{text}"
        );
        assert!(matches!(e, ShareError::Unsupported { .. }));
    }

    #[test]
    fn kafka_3_9_says_upgrade() {
        let e = diagnose(&answer(&[(ApiKey::Fetch, 4, 17)], None, None), "b:9092").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("Kafka 3.9 or older"), "{text}");
        assert!(text.contains("share.version"), "{text}");
    }

    #[test]
    fn kafka_4_0_without_share_apis_is_told_from_3_9_by_the_produce_floor() {
        let e = diagnose(&answer(&[(ApiKey::Produce, 3, 12)], None, None), "b:9092").unwrap_err();
        assert!(e.to_string().contains("Kafka 4.0"), "{e}");
        let e = diagnose(&answer(&[(ApiKey::Produce, 0, 11)], None, None), "b:9092").unwrap_err();
        assert!(e.to_string().contains("Kafka 3.9 or older"), "{e}");
    }

    #[test]
    fn kafka_4_0_early_access_says_upgrade() {
        let e = diagnose(
            &answer(
                &[
                    (ApiKey::ShareGroupHeartbeat, 0, 0),
                    (ApiKey::ShareFetch, 0, 0),
                ],
                None,
                None,
            ),
            "b:9092",
        )
        .unwrap_err();
        assert!(e.to_string().contains("Kafka 4.0"), "{e}");
    }
}
