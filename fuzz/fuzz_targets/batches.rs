//! Record batch bytes as a fetch response carries them: every batch either
//! decodes (CRC checked) or errors; every record either decodes or errors.
//!
//! Random bytes almost never pass the CRC, so when the first input byte is
//! odd the target first rewrites each batch's CRC to match its contents:
//! that drives the fuzzer past the checksum into the header, record,
//! varint and decompression parsers.
#![no_main]
use bytes::{Bytes, BytesMut};
use kafka_wire::records::BatchReader;
use libfuzzer_sys::fuzz_target;

fn fix_crcs(data: &mut [u8]) {
    let mut pos = 0;
    while data.len() >= pos + 21 {
        let len = i32::from_be_bytes([data[pos + 8], data[pos + 9], data[pos + 10], data[pos + 11]]);
        if len < 9 {
            return;
        }
        let end = pos + 12 + len as usize;
        if end > data.len() {
            return;
        }
        let crc = crc32c::crc32c(&data[pos + 21..end]);
        data[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else { return };
    let mut data = BytesMut::from(rest);
    if mode & 1 == 1 {
        fix_crcs(&mut data);
    }
    for batch in BatchReader::new(Bytes::from(data)) {
        let Ok(batch) = batch else { break };
        let Ok(records) = batch.records(1 << 20) else { continue };
        for r in records {
            if r.is_err() {
                break;
            }
        }
    }
});
