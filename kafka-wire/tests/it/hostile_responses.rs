//! Hostile response bodies: decoding fails with an error, never a panic, an
//! abort, or an allocation sized by a count read off the wire.

use bytes::Bytes;
use kafka_wire::messages::{
    ApiVersionsResponse, FetchResponse, JoinGroupResponse, MetadataResponse, ProduceResponse,
};
use kafka_wire::Decodable;
use proptest::prelude::*;

fn decode<R: Decodable>(body: &[u8], version: i16) -> bool {
    R::decode(&mut Bytes::copy_from_slice(body), version).is_ok()
}

/// A 4-byte body claiming `i32::MAX` brokers used to abort the process
/// ("memory allocation of 206158430112 bytes failed") inside kafka-protocol
/// 0.18.0; vendor/kafka-protocol carries the fix.
#[test]
fn huge_array_counts_are_errors_not_aborts() {
    assert!(!decode::<MetadataResponse>(&[0x7f, 0xff, 0xff, 0xff], 1));
    // flexible version: throttle (4 bytes) then a compact count near u32::MAX
    assert!(!decode::<MetadataResponse>(
        &[0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f],
        12
    ));
    assert!(!decode::<ProduceResponse>(&[0x7f, 0xff, 0xff, 0xff], 3));
    assert!(!decode::<ApiVersionsResponse>(
        &[0, 0, 0x7f, 0xff, 0xff, 0xff],
        0
    ));
    // Fetch v4: throttle, then responses count
    assert!(!decode::<FetchResponse>(
        &[0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],
        4
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), v in 0i16..13) {
        let _ = decode::<MetadataResponse>(&body, v.max(1));
        let _ = decode::<FetchResponse>(&body, v.clamp(4, 12));
        let _ = decode::<ProduceResponse>(&body, v.clamp(3, 11));
        let _ = decode::<JoinGroupResponse>(&body, v.min(9));
        let _ = decode::<ApiVersionsResponse>(&body, v.min(3));
    }
}
