//! Memory bounds for the decoders bytes off the network reach, measured
//! with a counting allocator (DESIGN.md invariants 13 and 65).
//!
//! The allocator is `stats_alloc`'s instrumented system allocator, in this
//! dedicated test binary alone: the other suites keep the plain system
//! allocator. It counts every byte allocated (growth included) across the
//! process, so a measure is an upper bound on the peak, and each test here
//! holds one lock from its start (case generation included), so that they
//! never measure each other.

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use kafka_wire::messages::MetadataResponse;
use kafka_wire::records::{encode_batch, BatchOptions, BatchReader, Compression, NewRecord};
use kafka_wire::Decodable;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// One test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bytes `f` allocated in total (an upper bound on its peak). Call it
/// under [`serial`].
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let region = Region::new(GLOBAL);
    let r = f();
    (r, region.change().bytes_allocated)
}

/// Array decoding in the vendored codec: a count of `i32::MAX` before 1 MiB
/// of bytes. Capping the reservation at `min(count, bytes_left)` *elements*
/// reserved ~100 MiB here (one `MetadataResponseBroker` is ~100 B); capped
/// in bytes, the peak is what the brokers actually decoded take.
///
/// Bound: 32x the frame.
#[test]
fn array_reservations_are_bounded_by_the_bytes_left() {
    let _serial = serial();
    let mut body = vec![0x7f, 0xff, 0xff, 0xff];
    body.resize(4 + (1 << 20), 0);
    let input = Bytes::from(body);
    let len = input.len();
    let (res, peak) = allocated_by(|| MetadataResponse::decode(&mut input.clone(), 1));
    assert!(res.is_err(), "a count of i32::MAX cannot be satisfied");
    assert!(peak <= 32 * len, "allocated {peak} B for a {len} B frame");
}

/// A record whose headers are `00 01` pairs (empty key, null value) is the
/// densest header encoding: 2 bytes each on the wire, a 64-byte `Header` in
/// memory. Compressed, 500,000 of them are a few KB. Each decoded struct
/// is charged against the decompression ceiling, so one batch takes at
/// most the decompressed bytes plus the ceiling: 2x the ceiling.
#[test]
fn a_header_flood_is_bounded_by_twice_the_ceiling() {
    let _serial = serial();
    let record = NewRecord {
        headers: vec![(String::new(), None); 500_000],
        ..NewRecord::default()
    };
    let mut out = BytesMut::new();
    encode_batch(
        &mut out,
        &BatchOptions {
            compression: Compression::Zstd,
            ..BatchOptions::default()
        },
        &[record],
    );
    let wire = out.freeze();
    assert!(wire.len() < 64 * 1024, "{} B", wire.len());
    let ceiling = 4 << 20;
    let (decoded, peak) = allocated_by(|| -> Result<usize, kafka_wire::DecodeError> {
        let mut n = 0;
        for batch in BatchReader::new(wire.clone()) {
            for r in batch?.records(ceiling)? {
                n += r?.headers.len();
            }
        }
        Ok(n)
    });
    assert!(decoded.is_err(), "32 MB of headers past a 4 MiB ceiling");
    assert!(
        peak <= 2 * ceiling,
        "allocated {peak} B, ceiling {ceiling} B"
    );
}

/// The ceiling for the arbitrary-bytes properties below.
const CEILING: usize = 1 << 20;

fn runner() -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Arbitrary record batch bytes (with a valid CRC, so the record decoder
/// runs): no panic, and the allocation is within 40x the input plus the
/// ceiling (uncompressed: every struct is charged against it).
#[test]
fn record_batches_allocate_within_a_multiple_of_the_input() {
    let _serial = serial();
    let cases = (prop::collection::vec(any::<u8>(), 0..2048), 0i32..64);
    runner()
        .run(&cases, |(payload, count)| {
            let data = batch_with_payload(count, &payload);
            let len = data.len();
            let (_, peak) = allocated_by(|| {
                for batch in BatchReader::new(data.clone()).flatten() {
                    if let Ok(records) = batch.records(CEILING) {
                        for r in records {
                            let _ = r;
                        }
                    }
                }
            });
            prop_assert!(peak <= 40 * len + CEILING, "allocated {peak} B for {len} B");
            Ok(())
        })
        .unwrap();
}

/// Arbitrary Metadata bodies in every version: no panic, and the
/// allocation is within 64x the input plus 16 KiB.
#[test]
fn metadata_bodies_allocate_within_a_multiple_of_the_input() {
    let _serial = serial();
    let cases = (prop::collection::vec(any::<u8>(), 0..1024), 1i16..13);
    runner()
        .run(&cases, |(body, v)| {
            let input = Bytes::from(body);
            let len = input.len();
            let (_, peak) = allocated_by(|| MetadataResponse::decode(&mut input.clone(), v));
            prop_assert!(
                peak <= 64 * len + 16 * 1024,
                "allocated {peak} B for {len} B (v{v})"
            );
            Ok(())
        })
        .unwrap();
}

/// A v2 batch whose records section is `payload`, with a valid CRC.
fn batch_with_payload(count: i32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_batch(&mut out, &BatchOptions::default(), &[NewRecord::default()]);
    let mut b = BytesMut::from(&out[..61]);
    b[8..12].copy_from_slice(&((61 - 12 + payload.len()) as i32).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    b.extend_from_slice(payload);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}
