//! Response bodies as the connection task hands them to decoders.
#![no_main]
use bytes::Bytes;
use kafka_wire::messages::*;
use kafka_wire::Decodable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let version = i16::from(selector >> 4);
    let b = || Bytes::copy_from_slice(body);
    let _ = match selector & 0x0f {
        0 => MetadataResponse::decode(&mut b(), version.clamp(1, 12)).map(|_| ()),
        1 => FetchResponse::decode(&mut b(), version.clamp(4, 12)).map(|_| ()),
        2 => ProduceResponse::decode(&mut b(), version.clamp(3, 11)).map(|_| ()),
        3 => JoinGroupResponse::decode(&mut b(), version.min(9)).map(|_| ()),
        4 => SyncGroupResponse::decode(&mut b(), version.min(5)).map(|_| ()),
        5 => OffsetFetchResponse::decode(&mut b(), version.clamp(1, 8)).map(|_| ()),
        6 => OffsetCommitResponse::decode(&mut b(), version.clamp(2, 9)).map(|_| ()),
        7 => ApiVersionsResponse::decode(&mut b(), version.min(3)).map(|_| ()),
        8 => FindCoordinatorResponse::decode(&mut b(), version.min(4)).map(|_| ()),
        9 => ListOffsetsResponse::decode(&mut b(), version.clamp(1, 8)).map(|_| ()),
        10 => DescribeGroupsResponse::decode(&mut b(), version.min(5)).map(|_| ()),
        11 => SaslAuthenticateResponse::decode(&mut b(), version.min(2)).map(|_| ()),
        12 => InitProducerIdResponse::decode(&mut b(), version.min(5)).map(|_| ()),
        13 => HeartbeatResponse::decode(&mut b(), version.min(4)).map(|_| ()),
        14 => CreateTopicsResponse::decode(&mut b(), version.clamp(2, 7)).map(|_| ()),
        _ => ResponseHeader::decode(&mut b(), version.min(1)).map(|_| ()),
    };
});
