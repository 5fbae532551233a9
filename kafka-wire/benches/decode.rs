//! Decoding is the consumer's hot path: batches of 100-byte and 1 KiB
//! records, uncompressed and lz4, decoded and CRC-checked by our
//! `BatchReader` and by `kafka_protocol::records::RecordBatchDecoder`.
//!
//! `cargo bench -p kafka-wire --bench decode`

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kafka_protocol::records::{Compression as KpCompression, RecordBatchDecoder};
use kafka_wire::records::{
    compression, encode_batch, BatchOptions, BatchReader, Compression, NewRecord,
};

const RECORDS_PER_BATCH: usize = 1000;
const BATCHES: usize = 10;

/// Ten batches of 1,000 records with `value_size`-byte values and small keys,
/// as a fetch response would carry them.
fn fetch_payload(value_size: usize, codec: Compression) -> Bytes {
    let mut out = BytesMut::new();
    for b in 0..BATCHES {
        let records: Vec<NewRecord> = (0..RECORDS_PER_BATCH)
            .map(|i| NewRecord {
                key: Some(Bytes::from(format!("key-{i:06}"))),
                value: Some(Bytes::from(
                    (0..value_size)
                        .map(|j| (i * 31 + j) as u8 % 64 + 32)
                        .collect::<Vec<u8>>(),
                )),
                headers: Vec::new(),
                timestamp: 1_700_000_000_000 + i as i64,
            })
            .collect();
        encode_batch(
            &mut out,
            &BatchOptions {
                compression: codec,
                base_offset: (b * RECORDS_PER_BATCH) as i64,
                ..BatchOptions::default()
            },
            &records,
        );
    }
    out.freeze()
}

fn ours(payload: &Bytes) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    for batch in BatchReader::new(payload.clone()) {
        for r in batch.unwrap().records(64 << 20).unwrap() {
            let r = r.unwrap();
            bytes += r.value.map_or(0, |v| v.len());
            n += 1;
        }
    }
    std::hint::black_box(bytes);
    n
}

fn theirs(payload: &Bytes) -> usize {
    let mut buf = payload.clone();
    let mut n = 0;
    let mut bytes = 0;
    while !buf.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut buf,
            Some(|data: &mut Bytes, c: KpCompression| {
                let codec = match c {
                    KpCompression::Lz4 => Compression::Lz4,
                    KpCompression::Zstd => Compression::Zstd,
                    KpCompression::Gzip => Compression::Gzip,
                    KpCompression::Snappy => Compression::Snappy,
                    KpCompression::None => Compression::None,
                };
                Ok(Bytes::from(compression::decompress(codec, data, 64 << 20)?))
            }),
        )
        .unwrap();
        for r in set.records {
            bytes += r.value.map_or(0, |v| v.len());
            n += 1;
        }
    }
    std::hint::black_box(bytes);
    n
}

fn bench(c: &mut Criterion) {
    for (size, codec) in [
        (100, Compression::None),
        (100, Compression::Lz4),
        (1024, Compression::None),
        (1024, Compression::Lz4),
    ] {
        let payload = fetch_payload(size, codec);
        let total = RECORDS_PER_BATCH * BATCHES;
        assert_eq!(ours(&payload), total);
        assert_eq!(theirs(&payload), total);
        let mut group = c.benchmark_group(format!("decode/{size}B/{}", codec.name()));
        group.throughput(Throughput::Elements(total as u64));
        group.bench_function("kafka-wire BatchReader", |b| b.iter(|| ours(&payload)));
        group.bench_function("kafka-protocol RecordBatchDecoder", |b| {
            b.iter(|| theirs(&payload))
        });
        group.finish();
        let mut group = c.benchmark_group(format!("decode-bytes/{size}B/{}", codec.name()));
        group.throughput(Throughput::Bytes((total * (size + 10)) as u64));
        group.bench_function("kafka-wire BatchReader", |b| b.iter(|| ours(&payload)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
