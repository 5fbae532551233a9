//! Round trips of the vendored codec's ShareFetch/ShareAcknowledge v2
//! (`vendor/kafka-protocol`, whose own tests are off: PATCHED.md, item 5).
//! Byte layouts are checked against Kafka 4.4.0's schemas: v2 adds
//! `ShareAcquireMode` (int8) and `IsRenewAck` (bool) after `BatchSize` in
//! ShareFetchRequest, `IsRenewAck` after `ShareSessionEpoch` in
//! ShareAcknowledgeRequest, and `AcquisitionLockTimeoutMs` (int32) after
//! `ErrorMessage` in ShareAcknowledgeResponse; ShareFetchResponse v2 is v1.

use bytes::{Bytes, BytesMut};
use kafka_wire::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_wire::messages::share_acknowledge_response::{
    PartitionData as AckPartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_wire::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic, ForgottenTopic,
};
use kafka_wire::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_wire::messages::{
    ApiKey, GroupId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse,
};
use kafka_wire::{Decodable, Encodable, StrBytes};
use uuid::Uuid;

fn round_trip<T: Encodable + Decodable + PartialEq + std::fmt::Debug>(
    msg: &T,
    version: i16,
) -> Bytes {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version).unwrap();
    assert_eq!(
        buf.len(),
        msg.compute_size(version).unwrap(),
        "compute_size at v{version}"
    );
    let bytes = buf.freeze();
    let back = T::decode(&mut bytes.clone(), version).unwrap();
    assert_eq!(&back, msg, "v{version}");
    bytes
}

fn fetch_request() -> ShareFetchRequest {
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(StrBytes::from_static_str("g"))))
        .with_member_id(Some(StrBytes::from_static_str("m")))
        .with_share_session_epoch(3)
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_records(10)
        .with_batch_size(10)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(Uuid::from_u128(7))
            .with_partitions(vec![FetchPartition::default()
                .with_partition_index(0)
                .with_acknowledgement_batches(vec![
                    AcknowledgementBatch::default()
                        .with_first_offset(5)
                        .with_last_offset(9)
                        .with_acknowledge_types(vec![4]),
                ])])])
        .with_forgotten_topics_data(vec![ForgottenTopic::default()
            .with_topic_id(Uuid::from_u128(8))
            .with_partitions(vec![1, 2])])
}

#[test]
fn share_fetch_request_v2_carries_acquire_mode_and_renew_after_batch_size() {
    let v1 = round_trip(&fetch_request(), 1);
    let v2_msg = fetch_request()
        .with_share_acquire_mode(1)
        .with_is_renew_ack(true);
    let v2 = round_trip(&v2_msg, 2);
    assert_eq!(v2.len(), v1.len() + 2, "one int8 and one bool more");
    // group "g" (2 bytes), member "m" (2), five int32 and batch_size: 28 bytes
    // in, then the two new fields.
    let at = 2 + 2 + 4 * 6;
    assert_eq!(&v2[..at], &v1[..at]);
    assert_eq!(&v2[at..at + 2], &[1, 1], "share_acquire_mode, is_renew_ack");
    assert_eq!(&v2[at + 2..], &v1[at..]);
}

#[test]
fn v2_only_fields_are_refused_at_v1_and_defaults_pass() {
    let mut buf = BytesMut::new();
    let e = fetch_request()
        .with_share_acquire_mode(1)
        .encode(&mut buf, 1)
        .unwrap_err();
    assert!(e.to_string().contains("not available"), "{e}");
    let e = ShareAcknowledgeRequest::default()
        .with_is_renew_ack(true)
        .encode(&mut BytesMut::new(), 1)
        .unwrap_err();
    assert!(e.to_string().contains("not available"), "{e}");
    round_trip(&fetch_request(), 2);
    assert!(
        fetch_request().encode(&mut BytesMut::new(), 3).is_err(),
        "v3 unknown"
    );
    assert!(
        fetch_request().encode(&mut BytesMut::new(), 0).is_err(),
        "v0 gone"
    );
}

#[test]
fn share_acknowledge_v2_round_trips_with_renew_and_the_lock_timeout() {
    let req = ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(StrBytes::from_static_str("g"))))
        .with_member_id(Some(StrBytes::from_static_str("m")))
        .with_share_session_epoch(-1)
        .with_topics(vec![AcknowledgeTopic::default()
            .with_topic_id(Uuid::from_u128(7))
            .with_partitions(vec![AcknowledgePartition::default()
                .with_partition_index(2)
                .with_acknowledgement_batches(vec![AckBatch::default()
                    .with_first_offset(0)
                    .with_last_offset(2)
                    .with_acknowledge_types(vec![1, 0, 2])])])]);
    let v1 = round_trip(&req, 1);
    let v2 = round_trip(&req.clone().with_is_renew_ack(true), 2);
    assert_eq!(v2.len(), v1.len() + 1);
    assert_eq!(v2[2 + 2 + 4], 1, "is_renew_ack follows share_session_epoch");

    let resp = ShareAcknowledgeResponse::default()
        .with_throttle_time_ms(0)
        .with_responses(vec![ShareAcknowledgeTopicResponse::default()
            .with_topic_id(Uuid::from_u128(7))
            .with_partitions(vec![AckPartitionData::default()
                .with_partition_index(2)
                .with_error_code(121)])]);
    let r1 = round_trip(&resp, 1);
    let r2 = round_trip(&resp.clone().with_acquisition_lock_timeout_ms(30_000), 2);
    assert_eq!(r2.len(), r1.len() + 4);
    // throttle (4), error code (2), null message (1), then the timeout.
    assert_eq!(&r2[7..11], &30_000i32.to_be_bytes());
}

#[test]
fn share_fetch_response_v2_is_v1() {
    let resp = ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(15_000)
        .with_responses(vec![ShareFetchableTopicResponse::default()
            .with_topic_id(Uuid::from_u128(7))
            .with_partitions(vec![PartitionData::default()
                .with_partition_index(0)
                .with_records(Some(Bytes::from_static(b"")))
                .with_acquired_records(vec![AcquiredRecords::default()
                    .with_first_offset(0)
                    .with_last_offset(9)
                    .with_delivery_count(2)])])]);
    assert_eq!(round_trip(&resp, 1), round_trip(&resp, 2));
}

#[test]
fn the_library_offers_v1_to_v2() {
    for api in [ApiKey::ShareFetch, ApiKey::ShareAcknowledge] {
        let v = api.valid_versions();
        assert_eq!((v.min, v.max), (1, 2), "{api:?}");
    }
}

#[test]
fn a_hostile_array_count_is_a_decode_error_not_an_allocation() {
    // ShareFetchResponse v2: throttle, error, null message, lock timeout,
    // then a responses count of 2^31-ish in 5 bytes, and nothing more.
    let mut bytes = BytesMut::new();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    assert!(ShareFetchResponse::decode(&mut bytes.freeze(), 2).is_err());
}
