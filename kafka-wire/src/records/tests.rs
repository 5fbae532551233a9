//! Round trips and hostile inputs for record batches (no broker needed).

use super::*;
use proptest::prelude::*;

fn rec(key: &str, value: &str, ts: i64) -> NewRecord {
    NewRecord {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![("h".into(), Some(Bytes::from_static(b"v")))],
        timestamp: ts,
    }
}

fn one_batch(records: &[NewRecord], compression: Compression) -> Bytes {
    let mut out = BytesMut::new();
    encode_batch(
        &mut out,
        &BatchOptions {
            compression,
            base_offset: 100,
            ..BatchOptions::default()
        },
        records,
    );
    out.freeze()
}

fn decode_all(bytes: Bytes) -> Result<Vec<Record>, DecodeError> {
    let mut out = Vec::new();
    for batch in BatchReader::new(bytes) {
        for r in batch?.records(1 << 20)? {
            out.push(r?);
        }
    }
    Ok(out)
}

#[test]
fn round_trip_keeps_keys_values_headers_timestamps_offsets() {
    let input = vec![rec("k1", "v1", 1000), rec("k2", "v2", 1005)];
    let got = decode_all(one_batch(&input, Compression::None)).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].offset, 100);
    assert_eq!(got[1].offset, 101);
    assert_eq!(got[1].timestamp, 1005);
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(got[1].value.as_deref(), Some(&b"v2"[..]));
    assert_eq!(got[0].headers[0].key_str(), "h");
}

#[test]
fn one_thousand_small_records_make_one_compact_batch() {
    // The trap in kafka-protocol's encoder: one batch per record when
    // sequences do not follow offsets. Ours always writes a single batch.
    let records: Vec<NewRecord> = (0..1000)
        .map(|i| NewRecord {
            value: Some(Bytes::from(format!("{i:010}"))),
            timestamp: 1_700_000_000_000,
            ..NewRecord::default()
        })
        .collect();
    let mut out = BytesMut::new();
    encode_batch(
        &mut out,
        &BatchOptions {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
            ..BatchOptions::default()
        },
        &records,
    );
    let batches: Vec<_> = BatchReader::new(out.clone().freeze()).collect();
    assert_eq!(batches.len(), 1);
    // 61-byte header + 1000 × (1 len + 1 attr + 1 ts + ≤2 offset + 1 key + 1+10 value + 1 headers)
    assert!(out.len() < 19_000, "{} bytes on the wire", out.len());
}

#[test]
fn trailing_partial_batch_is_ignored() {
    let full = one_batch(&[rec("a", "b", 1)], Compression::None);
    let mut data = BytesMut::from(&full[..]);
    data.extend_from_slice(&full[..full.len() - 7]); // truncated second batch
    let got = decode_all(data.freeze()).unwrap();
    assert_eq!(got.len(), 1);
}

#[test]
fn bad_crc_is_an_error_and_no_record_is_produced() {
    let mut data = BytesMut::from(&one_batch(&[rec("a", "b", 1)], Compression::None)[..]);
    let last = data.len() - 1;
    data[last] ^= 0xff;
    let mut reader = BatchReader::new(data.freeze());
    assert!(matches!(reader.next(), Some(Err(DecodeError::Crc { .. }))));
    assert!(
        reader.next().is_none(),
        "a failed reader yields nothing more"
    );
}

#[test]
fn negative_batch_length_and_bad_magic_are_errors() {
    let good = one_batch(&[rec("a", "b", 1)], Compression::None);
    let mut neg = BytesMut::from(&good[..]);
    neg[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(
        BatchReader::new(neg.freeze()).next(),
        Some(Err(DecodeError::Malformed { .. }))
    ));
    let mut magic = BytesMut::from(&good[..]);
    magic[16] = 1;
    assert!(matches!(
        BatchReader::new(magic.freeze()).next(),
        Some(Err(DecodeError::Magic(1)))
    ));
}

/// Build a batch whose records section is `payload`, with a valid CRC, so
/// the record-level checks (not the CRC) must catch the damage.
fn batch_with_payload(count: i32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_batch(&mut out, &BatchOptions::default(), &[rec("a", "b", 1)]);
    let mut header = out[..BATCH_HEADER_LEN].to_vec();
    header[8..12].copy_from_slice(&((BATCH_HEADER_LEN - 12 + payload.len()) as i32).to_be_bytes());
    header[57..61].copy_from_slice(&count.to_be_bytes());
    let mut b = BytesMut::from(&header[..]);
    b.extend_from_slice(payload);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[test]
fn huge_record_count_allocates_nothing_and_errors() {
    let data = batch_with_payload(i32::MAX, &[]);
    let batch = BatchReader::new(data).next().unwrap().unwrap();
    let mut it = batch.records(1 << 20).unwrap();
    assert!(matches!(
        it.next(),
        Some(Err(DecodeError::Truncated { .. }))
    ));
    assert!(it.next().is_none());
}

#[test]
fn malformed_record_varint_is_an_error() {
    let data = batch_with_payload(1, &[0xff; 12]);
    let batch = BatchReader::new(data).next().unwrap().unwrap();
    let first = batch.records(1 << 20).unwrap().next().unwrap();
    assert!(matches!(first, Err(DecodeError::Varint(_))), "{first:?}");
}

#[test]
fn key_length_past_the_record_is_an_error() {
    // record: len=6, attr=0, ts=0, offset=0, key len=100 (zig-zag 200)
    let payload = [12u8, 0, 0, 0, 0xc8, 0x01];
    let data = batch_with_payload(1, &payload);
    let batch = BatchReader::new(data).next().unwrap().unwrap();
    let first = batch.records(1 << 20).unwrap().next().unwrap();
    assert!(first.is_err(), "{first:?}");
}

#[test]
fn control_records_are_recognised() {
    let marker = NewRecord {
        key: Some(Bytes::from_static(&[0, 0, 0, 1])), // version 0, type 1 = commit
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        ..NewRecord::default()
    };
    let mut out = BytesMut::new();
    encode_batch(
        &mut out,
        &BatchOptions {
            control: true,
            transactional: true,
            ..BatchOptions::default()
        },
        &[marker],
    );
    let batch = BatchReader::new(out.freeze()).next().unwrap().unwrap();
    assert!(batch.is_control() && batch.is_transactional());
    let r = batch.records(1024).unwrap().next().unwrap().unwrap();
    assert_eq!(r.control_type(), Some(ControlType::Commit));
}

fn arb_record() -> impl Strategy<Value = NewRecord> {
    (
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        prop::collection::vec(
            (
                "[a-z]{0,8}",
                prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            ),
            0..3,
        ),
        0i64..10_000_000,
    )
        .prop_map(|(k, v, h, ts)| NewRecord {
            key: k.map(Bytes::from),
            value: v.map(Bytes::from),
            headers: h
                .into_iter()
                .map(|(k, v)| (k, v.map(Bytes::from)))
                .collect(),
            timestamp: 1_700_000_000_000 + ts,
        })
}

proptest! {
    #[test]
    fn batches_round_trip_with_every_codec(
        batches in prop::collection::vec(prop::collection::vec(arb_record(), 1..20), 1..4),
        codec in 0usize..5,
    ) {
        let codec = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd][codec];
        let mut out = BytesMut::new();
        let mut offset = 0;
        for b in &batches {
            encode_batch(&mut out, &BatchOptions { compression: codec, base_offset: offset, ..BatchOptions::default() }, b);
            offset += b.len() as i64;
        }
        let got = decode_all(out.freeze()).unwrap();
        let want: Vec<&NewRecord> = batches.iter().flatten().collect();
        prop_assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            prop_assert_eq!(g.offset, i as i64);
            prop_assert_eq!(&g.key, &w.key);
            prop_assert_eq!(&g.value, &w.value);
            prop_assert_eq!(g.timestamp, w.timestamp);
            let hs: Vec<(String, Option<Bytes>)> = g.headers.iter().map(|h| (h.key_str().into_owned(), h.value.clone())).collect();
            prop_assert_eq!(&hs, &w.headers);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_all(Bytes::from(data));
    }

    #[test]
    fn bit_flips_are_caught_by_the_crc(flip in 21usize..80, bit in 0u8..8) {
        let good = one_batch(&[rec("key", "value-value", 5)], Compression::None);
        prop_assume!(flip < good.len());
        let mut bad = BytesMut::from(&good[..]);
        bad[flip] ^= 1 << bit;
        let first = BatchReader::new(bad.freeze()).next();
        prop_assert!(matches!(first, Some(Err(DecodeError::Crc { .. }))), "{:?}", first);
    }
}

/// One record whose headers are `n` two-byte pairs (`00 01`: an empty key,
/// a null value): the densest header encoding there is.
fn header_flood_record(n: usize) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i8(0); // attributes
    put_varlong(&mut body, 0); // timestamp delta
    put_varint(&mut body, 0); // offset delta
    put_varint(&mut body, -1); // key
    put_varint(&mut body, -1); // value
    put_varint(&mut body, n as i32);
    for _ in 0..n {
        body.put_slice(&[0x00, 0x01]);
    }
    let mut rec = BytesMut::new();
    put_varint(&mut rec, body.len() as i32);
    rec.extend_from_slice(&body);
    rec.to_vec()
}

#[test]
fn header_structs_are_charged_against_the_ceiling() {
    // 20,000 headers in ~40 KB of bytes would be ~1.3 MB of `Header`s.
    let n = 20_000;
    let data = batch_with_payload(1, &header_flood_record(n));
    let batch = BatchReader::new(data).next().unwrap().unwrap();
    let need = size_of::<Record>() + n * size_of::<Header>();
    // Under the ceiling: decoded.
    let ok = batch.records(need).unwrap().next().unwrap().unwrap();
    assert_eq!(ok.headers.len(), n);
    // One byte short: a typed error, and nothing reserved for the headers.
    let err = batch
        .records(need - 1)
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Malformed {
                what: "decoded records",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_decompressed_bytes"), "{err}");
}

#[test]
fn many_small_records_are_charged_against_the_ceiling() {
    let records: Vec<NewRecord> = (0..1000)
        .map(|i| NewRecord {
            timestamp: i,
            ..NewRecord::default()
        })
        .collect();
    let data = one_batch(&records, Compression::None);
    let batch = BatchReader::new(data).next().unwrap().unwrap();
    let per = size_of::<Record>();
    assert_eq!(batch.records(1000 * per).unwrap().count(), 1000);
    let decoded: Vec<_> = batch.records(1000 * per - 1).unwrap().collect();
    assert_eq!(decoded.len(), 1000);
    assert!(decoded[..999].iter().all(Result::is_ok));
    assert!(decoded[999].is_err(), "{:?}", decoded[999]);
}

/// A batch at `base_offset` whose header claims `last_offset_delta`.
fn batch_at(base_offset: i64, last_offset_delta: i32, offset_delta: i32) -> Bytes {
    let mut body = BytesMut::new();
    body.put_i8(0);
    put_varlong(&mut body, 0);
    put_varint(&mut body, offset_delta);
    put_varint(&mut body, -1);
    put_varint(&mut body, -1);
    put_varint(&mut body, 0);
    let mut payload = BytesMut::new();
    put_varint(&mut payload, body.len() as i32);
    payload.extend_from_slice(&body);
    let data = batch_with_payload(1, &payload);
    let mut b = BytesMut::from(&data[..]);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[test]
fn offsets_near_i64_max_are_typed_errors_not_wraps() {
    // The batch's last offset + 1 does not fit an i64.
    for (base, delta) in [(i64::MAX, 0), (i64::MAX - 3, 3), (0, -1)] {
        let got = BatchReader::new(batch_at(base, delta, 0)).next().unwrap();
        assert!(
            matches!(
                got,
                Err(DecodeError::Malformed {
                    what: "record batch",
                    ..
                })
            ),
            "base {base} delta {delta}: {got:?}"
        );
    }
    // The last representable batch is fine.
    let ok = BatchReader::new(batch_at(i64::MAX - 1, 0, 0))
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(ok.next_offset(), i64::MAX);
    // A record whose own delta overflows is an error for that record.
    let batch = BatchReader::new(batch_at(i64::MAX - 10, 0, 100))
        .next()
        .unwrap()
        .unwrap();
    let r = batch.records(1 << 20).unwrap().next().unwrap();
    assert!(
        matches!(
            r,
            Err(DecodeError::Malformed {
                what: "record offset",
                ..
            })
        ),
        "{r:?}"
    );
}
