//! Hostile wire input through the public API of the crates, from outside
//! their workspace: every case is an `Err`, never a panic or an abort.
//!
//! The first case is issue 14: a 4-byte `MetadataResponse` whose broker
//! count is `i32::MAX` made an embedding application abort with "memory
//! allocation of 206158430112 bytes failed", because the workspace's
//! `[patch]` with the fix did not reach it. If this file aborts, the
//! dependency graph has the unpatched `kafka-protocol` again.

use bytes::{Bytes, BytesMut};
use kafka_wire::{Client, ClientConfig, DecodeError};
use kafka_wire::messages::{
    ApiVersionsResponse, FetchResponse, JoinGroupResponse, MetadataResponse, ProduceResponse,
};
use kafka_wire::records::{encode_batch, BatchOptions, BatchReader, NewRecord, BATCH_HEADER_LEN};
use kafka_wire::Decodable;

/// Decode `body` as `R` at `version`; the error's text, or a panic if it decoded.
fn decode_err<R: Decodable + std::fmt::Debug>(body: &[u8], version: i16) -> String {
    match R::decode(&mut Bytes::copy_from_slice(body), version) {
        Ok(r) => panic!("a hostile body decoded: {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_4_byte_metadata_response_claiming_i32_max_brokers_is_an_error() {
    let e = decode_err::<MetadataResponse>(&[0x7f, 0xff, 0xff, 0xff], 1);
    eprintln!("MetadataResponse v1 7fffffff: {e}");
}

#[test]
fn huge_array_counts_are_errors_not_aborts() {
    // flexible version: throttle (4 bytes) then a compact count near u32::MAX
    decode_err::<MetadataResponse>(&[0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f], 12);
    decode_err::<ProduceResponse>(&[0x7f, 0xff, 0xff, 0xff], 3);
    decode_err::<ApiVersionsResponse>(&[0, 0, 0x7f, 0xff, 0xff, 0xff], 0);
    // Fetch v4: throttle, then the responses count
    decode_err::<FetchResponse>(&[0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff], 4);
}

#[test]
fn arbitrary_bodies_never_panic() {
    // A fixed-seed xorshift instead of proptest: an application's test
    // should not need our dev-dependencies.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..2_000 {
        let len = (next() % 256) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Bias toward the dangerous shape: a huge count early on.
        if len >= 8 && next() % 2 == 0 {
            let at = (next() % 5) as usize;
            body[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
        }
        let v = (next() % 13) as i16;
        let b = || Bytes::copy_from_slice(&body);
        let _ = MetadataResponse::decode(&mut b(), v.max(1));
        let _ = FetchResponse::decode(&mut b(), v.clamp(4, 12));
        let _ = ProduceResponse::decode(&mut b(), v.clamp(3, 11));
        let _ = JoinGroupResponse::decode(&mut b(), v.min(9));
        let _ = ApiVersionsResponse::decode(&mut b(), v.min(3));
    }
}

/// A server that answers every request with `reply` and closes; its address.
async fn hostile_server(reply: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut request = BytesMut::with_capacity(1024);
            let _ = s.read_buf(&mut request).await;
            let _ = s.write_all(reply).await;
        }
    });
    addr
}

/// Connect through the public `Client`; the error's text.
async fn connect_err(addr: &str) -> String {
    let config = ClientConfig::builder()
        .set("bootstrap.servers", addr)
        .unwrap()
        .set("socket.connection.setup.timeout.ms", "5000")
        .unwrap()
        .build()
        .unwrap();
    match Client::connect(config).await {
        Ok(_) => panic!("a hostile server was taken for a broker"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_server_announcing_a_2_gib_frame_is_a_typed_error_not_an_allocation() {
    let addr = hostile_server(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]).await;
    let e = connect_err(&addr).await;
    assert!(e.contains("exceeds the limit"), "{e}");
    assert!(e.contains(&addr), "names the server: {e}");
}

#[tokio::test]
async fn a_server_announcing_a_negative_frame_is_a_typed_error() {
    let addr = hostile_server(&[0xff, 0xff, 0xff, 0xfe]).await;
    let e = connect_err(&addr).await;
    assert!(e.contains("negative"), "{e}");
}

#[test]
fn a_record_batch_claiming_i32_max_records_allocates_nothing_and_errors() {
    // One real record, then the header's record count set to i32::MAX and
    // the payload dropped, with a valid CRC so the record-level checks (not
    // the CRC) must catch it.
    let mut out = BytesMut::new();
    let one = NewRecord {
        key: Some(Bytes::from_static(b"a")),
        value: Some(Bytes::from_static(b"b")),
        headers: Vec::new(),
        timestamp: 1,
    };
    encode_batch(&mut out, &BatchOptions::default(), &[one]);
    let mut batch = out[..BATCH_HEADER_LEN].to_vec();
    batch[8..12].copy_from_slice(&((BATCH_HEADER_LEN - 12) as i32).to_be_bytes());
    batch[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());

    let batch = BatchReader::new(Bytes::from(batch))
        .next()
        .expect("one batch")
        .expect("its header is well formed");
    let mut records = batch.records(1 << 20).expect("uncompressed");
    assert!(matches!(
        records.next(),
        Some(Err(DecodeError::Truncated { .. }))
    ));
    assert!(records.next().is_none());
}

#[test]
fn a_record_batch_claiming_a_huge_length_ends_quietly() {
    // base offset 0, batch length i32::MAX, then 49 bytes: a fetch response
    // cut at its byte limit looks like this, and ends iteration.
    let mut body = vec![0u8; 8];
    body.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    body.extend_from_slice(&[0u8; 49]);
    assert!(BatchReader::new(Bytes::from(body)).next().is_none());
}
