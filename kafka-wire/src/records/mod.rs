//! Record batches (magic v2): lazy, zero-copy decoding and encoding.
//!
//! ```text
//! fetch bytes ──BatchReader──▶ RecordBatch (header parsed, CRC32C checked)
//!                                  └─ records(limit) ──▶ RecordIter ──▶ Record{key, value: Bytes slices}
//! ```
//!
//! Decoding never copies keys or values of uncompressed batches: they are
//! `Bytes` slices of the fetch response. A compressed batch is inflated once
//! (bounded by a ceiling) and its records slice that buffer. Every length,
//! count and varint from the wire is checked before use; a batch whose CRC
//! does not match is an error and its records are never produced.

pub mod compression;
pub mod varint;

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub use compression::Compression;
use varint::{get_varint, get_varlong, put_varint, put_varlong, varlong_len};

use crate::error::DecodeError;

/// Bytes before the records in a v2 batch header.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the part of the header outside `batchLength`.
const LOG_OVERHEAD: usize = 12;
/// Where the CRC-covered region starts (the attributes field).
const CRC_START: usize = 21;

const ATTR_TIMESTAMP_LOG_APPEND: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Default ceiling on one batch's decompressed size.
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// A record header. Keys are UTF-8 by Kafka's contract, kept as bytes here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

impl Header {
    /// The key as text (lossy for the rare non-UTF-8 key).
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// Milliseconds since the epoch (create time, or log-append time).
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// What a control record marks (transaction markers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// A control type this client does not know; skip it.
    Other(i16),
}

impl Record {
    /// Parse a control record's key (version i16, type i16).
    pub fn control_type(&self) -> Option<ControlType> {
        let key = self.key.as_ref()?;
        if key.len() < 4 {
            return None;
        }
        Some(match i16::from_be_bytes([key[2], key[3]]) {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Other(other),
        })
    }
}

/// A validated v2 batch whose records have not been decoded yet.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
    /// The records section as sent (compressed or not).
    payload: Bytes,
}

impl RecordBatch {
    pub fn compression(&self) -> Result<Compression, DecodeError> {
        Compression::from_attributes(self.attributes)
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_TIMESTAMP_LOG_APPEND != 0
    }
    /// Offset of the last record (also valid when compaction removed records).
    ///
    /// [`BatchReader`] refuses a batch whose last offset would pass
    /// `i64::MAX - 1`, so for a decoded batch this never saturates.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
    /// The offset a consumer continues from after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// Decode the records lazily. Compressed payloads are inflated first,
    /// up to `max_decompressed` bytes.
    ///
    /// `max_decompressed` also bounds the memory of the decoded structs:
    /// each [`Record`] costs `size_of::<Record>()` bytes and each of its
    /// headers `size_of::<Header>()`, charged against the same ceiling (see
    /// [`RecordIter`]). So one batch never takes more than twice the
    /// ceiling, however its bytes were shaped (a few KB of zstd that
    /// inflate to two-byte headers would otherwise become ~2 GiB of
    /// `Header`s).
    ///
    /// # Errors
    /// Unknown codec, corrupt or oversized compressed payloads.
    pub fn records(&self, max_decompressed: usize) -> Result<RecordIter, DecodeError> {
        let data = match self.compression()? {
            Compression::None => self.payload.clone(),
            codec => Bytes::from(compression::decompress(
                codec,
                &self.payload,
                max_decompressed,
            )?),
        };
        Ok(RecordIter {
            data,
            remaining: self.record_count.max(0) as u32,
            base_offset: self.base_offset,
            base_timestamp: self.base_timestamp,
            log_append_time: self.is_log_append_time().then_some(self.max_timestamp),
            budget: max_decompressed,
            ceiling: max_decompressed,
        })
    }
}

/// Iterates the batches in a fetch response's `records` bytes.
///
/// A trailing partial batch (the broker cuts fetch responses at a byte
/// limit) ends iteration quietly. Any other malformation is an error, after
/// which the reader yields nothing more.
#[derive(Debug, Clone)]
pub struct BatchReader {
    data: Bytes,
    failed: bool,
}

impl BatchReader {
    pub fn new(data: Bytes) -> Self {
        Self {
            data,
            failed: false,
        }
    }

    /// The offset of the batch that failed, for error messages.
    pub fn peek_base_offset(&self) -> Option<i64> {
        (self.data.len() >= 8).then(|| (&self.data[..8]).get_i64())
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>, DecodeError> {
        if self.data.len() < LOG_OVERHEAD {
            return Ok(None); // trailing partial batch (or nothing)
        }
        let batch_len = (&self.data[8..12]).get_i32();
        if batch_len < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(DecodeError::Malformed {
                what: "record batch",
                reason: format!("batch length {batch_len} is shorter than a header"),
            });
        }
        let total = LOG_OVERHEAD + batch_len as usize;
        if self.data.len() < total {
            return Ok(None); // trailing partial batch
        }
        let magic = self.data[16] as i8;
        if magic != 2 {
            return Err(DecodeError::Magic(magic));
        }
        let batch = self.data.split_to(total);
        let expected = (&batch[17..21]).get_u32();
        let actual = crc32c::crc32c(&batch[CRC_START..]);
        if expected != actual {
            return Err(DecodeError::Crc { expected, actual });
        }
        let mut h = &batch[..BATCH_HEADER_LEN];
        let base_offset = h.get_i64();
        let _batch_len = h.get_i32();
        let partition_leader_epoch = h.get_i32();
        let _magic = h.get_i8();
        let _crc = h.get_u32();
        let attributes = h.get_i16();
        let last_offset_delta = h.get_i32();
        let base_timestamp = h.get_i64();
        let max_timestamp = h.get_i64();
        let producer_id = h.get_i64();
        let producer_epoch = h.get_i16();
        let base_sequence = h.get_i32();
        let record_count = h.get_i32();
        // Offsets near i64::MAX: `next_offset` (last offset + 1) must be
        // representable, or the arithmetic downstream would wrap.
        if i64::from(last_offset_delta) < 0
            || base_offset
                .checked_add(i64::from(last_offset_delta))
                .and_then(|last| last.checked_add(1))
                .is_none()
        {
            return Err(DecodeError::Malformed {
                what: "record batch",
                reason: format!(
                    "base offset {base_offset} + last offset delta {last_offset_delta} \
                     is not a valid offset"
                ),
            });
        }
        if record_count < 0 {
            return Err(DecodeError::Malformed {
                what: "record batch",
                reason: format!("negative record count {record_count}"),
            });
        }
        Ok(Some(RecordBatch {
            base_offset,
            partition_leader_epoch,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
            payload: batch.slice(BATCH_HEADER_LEN..),
        }))
    }
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes one batch's records, slicing keys and values out of its buffer.
///
/// The structs it returns are charged against a budget of `ceiling` bytes
/// (the `max_decompressed` given to [`RecordBatch::records`]):
/// `size_of::<Record>()` per record and `size_of::<Header>()` per header,
/// charged before the header vector is reserved. A batch past it is an
/// error ([`DecodeError::Malformed`], "decoded records"), not an
/// allocation: the memory a batch's records take is at most the ceiling
/// on top of its bytes.
#[derive(Debug, Clone)]
pub struct RecordIter {
    data: Bytes,
    remaining: u32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    /// Bytes of decoded structs still allowed.
    budget: usize,
    /// The budget at the start, for the error message.
    ceiling: usize,
}

fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::Truncated {
            what,
            needed: n - buf.len(),
        })
    } else {
        Ok(())
    }
}

/// A length-prefixed byte field: -1 is null; other negatives are errors.
fn get_nullable(buf: &mut Bytes, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
    let len = get_varint(buf, what)?;
    if len == -1 {
        return Ok(None);
    }
    if len < 0 {
        return Err(DecodeError::Malformed {
            what,
            reason: format!("negative length {len}"),
        });
    }
    need(buf, len as usize, what)?;
    Ok(Some(buf.split_to(len as usize)))
}

impl RecordIter {
    /// Charge `bytes` of decoded structs against the budget.
    fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        match self.budget.checked_sub(bytes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(DecodeError::Malformed {
                what: "decoded records",
                reason: format!(
                    "the batch's records and headers would take more than the {}-byte \
                     ceiling in memory (possible amplification attack); raise \
                     max_decompressed_bytes if such batches are expected",
                    self.ceiling
                ),
            }),
        }
    }

    fn decode_one(&mut self) -> Result<Record, DecodeError> {
        self.charge(size_of::<Record>())?;
        let len = get_varint(&mut self.data, "record length")?;
        if len < 0 {
            return Err(DecodeError::Malformed {
                what: "record",
                reason: format!("negative record length {len}"),
            });
        }
        need(&self.data, len as usize, "record")?;
        let mut r = self.data.split_to(len as usize);
        need(&r, 1, "record attributes")?;
        let _attributes = r.get_i8();
        let timestamp_delta = get_varlong(&mut r, "timestamp delta")?;
        let offset_delta = get_varint(&mut r, "offset delta")?;
        let key = get_nullable(&mut r, "record key")?;
        let value = get_nullable(&mut r, "record value")?;
        let header_count = get_varint(&mut r, "header count")?;
        if header_count < 0 || header_count as usize > r.len() / 2 {
            return Err(DecodeError::Malformed {
                what: "record headers",
                reason: format!("header count {header_count} does not fit the record"),
            });
        }
        // Charged before reserving: a record claiming len/2 headers of
        // two bytes each would otherwise reserve ~32x its size.
        self.charge((header_count as usize).saturating_mul(size_of::<Header>()))?;
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let key = get_nullable(&mut r, "header key")?.ok_or(DecodeError::Malformed {
                what: "record header",
                reason: "null header key".into(),
            })?;
            let value = get_nullable(&mut r, "header value")?;
            headers.push(Header { key, value });
        }
        let timestamp = self
            .log_append_time
            .unwrap_or_else(|| self.base_timestamp.wrapping_add(timestamp_delta));
        let offset = self
            .base_offset
            .checked_add(i64::from(offset_delta))
            .ok_or_else(|| DecodeError::Malformed {
                what: "record offset",
                reason: format!(
                    "base offset {} + offset delta {offset_delta} overflows i64",
                    self.base_offset
                ),
            })?;
        Ok(Record {
            offset,
            timestamp,
            key,
            value,
            headers,
        })
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = self.decode_one();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// A record to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// Batch-level fields for encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOptions {
    pub compression: Compression,
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    /// -1 without idempotence.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The first record's sequence; record *i* implicitly has `base_sequence + i`.
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            compression: Compression::None,
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
        }
    }
}

fn put_nullable(buf: &mut impl BufMut, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

fn nullable_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

/// Encode `records` as one v2 batch appended to `out`. All records share one
/// batch, so a producer's sequence numbers advance with the offset delta.
///
/// # Panics
/// If `records` is empty (a batch needs at least one record).
pub fn encode_batch(out: &mut BytesMut, opts: &BatchOptions, records: &[NewRecord]) {
    assert!(
        !records.is_empty(),
        "a record batch needs at least one record"
    );
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    // Bytes of the records' payloads, plus framing: the body's size to
    // reserve once, so encoding never grows a buffer record by record.
    let estimate: usize = records
        .iter()
        .map(|r| {
            24 + r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len())
                + r.headers
                    .iter()
                    .map(|(k, v)| 10 + k.len() + v.as_ref().map_or(0, |v| v.len()))
                    .sum::<usize>()
        })
        .sum();

    let start = out.len();
    // Uncompressed, the records go straight after the header (one copy of
    // each value); compressed, they go to a scratch body first. A codec
    // this build left out (its cargo feature is off) is written
    // uncompressed: a valid batch, never a panic. Producers reject such a
    // codec at `build()`, so only a hand-made `BatchOptions` gets here.
    let codec = match opts.compression {
        Compression::None => Compression::None,
        c if c.is_built() => c,
        _ => Compression::None,
    };
    let codec = if codec == Compression::None {
        out.reserve(BATCH_HEADER_LEN + estimate);
        put_batch_header(out, opts, codec, records.len(), base_ts, max_ts);
        put_records(out, records, base_ts);
        Compression::None
    } else {
        // The uncompressed body goes to a scratch buffer kept per thread
        // (a producer's sender encodes batch after batch), then the codec
        // writes straight after the header.
        SCRATCH.with(|scratch| {
            let mut body = scratch.take();
            body.clear();
            body.reserve(estimate);
            put_records(&mut body, records, base_ts);
            put_batch_header(out, opts, codec, records.len(), base_ts, max_ts);
            let written = compression::compress_into(codec, &body, out);
            debug_assert!(written, "{codec:?} is built: checked above");
            if body.capacity() <= SCRATCH_KEEP {
                scratch.set(body);
            }
            codec
        })
    };
    debug_assert_eq!(
        i16::from_be_bytes([out[start + 21], out[start + 22]]) & 0x07,
        codec.id()
    );
    let batch_len = (out.len() - start - LOG_OVERHEAD) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

thread_local! {
    /// [`encode_batch`]'s buffer for a body before compression.
    static SCRATCH: std::cell::Cell<BytesMut> = std::cell::Cell::new(BytesMut::new());
}

/// The largest scratch body kept between batches (bytes): a rare huge
/// batch does not pin its buffer for the life of the thread.
const SCRATCH_KEEP: usize = 4 * 1024 * 1024;

/// The 61-byte v2 batch header, with its length and CRC left zero for
/// [`encode_batch`] to patch once the payload is written.
fn put_batch_header(
    out: &mut BytesMut,
    opts: &BatchOptions,
    codec: Compression,
    count: usize,
    base_ts: i64,
    max_ts: i64,
) {
    let mut attributes = codec.id();
    if opts.transactional {
        attributes |= ATTR_TRANSACTIONAL;
    }
    if opts.control {
        attributes |= ATTR_CONTROL;
    }
    out.put_i64(opts.base_offset);
    out.put_i32(0); // batch length, patched
    out.put_i32(opts.partition_leader_epoch);
    out.put_i8(2);
    out.put_u32(0); // CRC, patched
    out.put_i16(attributes);
    out.put_i32(count as i32 - 1);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(opts.producer_id);
    out.put_i16(opts.producer_epoch);
    out.put_i32(opts.base_sequence);
    out.put_i32(count as i32);
}

/// Each record in the v2 format: length, attributes, deltas, key, value, headers.
fn put_records(body: &mut BytesMut, records: &[NewRecord], base_ts: i64) {
    for (i, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp - base_ts;
        let mut len = 1 + varlong_len(ts_delta) + varlong_len(i as i64);
        len += nullable_len(r.key.as_deref()) + nullable_len(r.value.as_deref());
        len += varlong_len(r.headers.len() as i64);
        for (k, v) in &r.headers {
            len += nullable_len(Some(k.as_bytes())) + nullable_len(v.as_deref());
        }
        put_varint(body, len as i32);
        body.put_i8(0);
        put_varlong(body, ts_delta);
        put_varint(body, i as i32);
        put_nullable(body, r.key.as_deref());
        put_nullable(body, r.value.as_deref());
        put_varint(body, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_nullable(body, Some(k.as_bytes()));
            put_nullable(body, v.as_deref());
        }
    }
}

#[cfg(test)]
mod tests;
