//! Outgoing frames as segments, so a Produce request's record batches go
//! to the socket from the buffers they were encoded into, never copied
//! into the request.
//!
//! - [`OutFrame`]: one request frame: a head (length prefix, request
//!   header, and the body up to the first large batch) and the segments
//!   after it, in order.
//! - [`produce_frame`]: a Produce request (v3–v12) written field by field,
//!   each record batch of at least [`SPLICE_MIN`] bytes kept as its own
//!   segment. Byte for byte what the generic encoder writes (a property
//!   test checks it); any request this file does not know how to write
//!   (a later version, unknown tagged fields) takes the generic path.
//! - [`WriteQueue`]: the connection task's queued segments, written with
//!   vectored writes.
//!
//! Before, every batch was copied into the frame (`CompactBytes::encode`):
//! about 5 % of the producer's samples went to that copy and the page faults of
//! the fresh frame buffer.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};

use crate::error::{Error, Result};
use crate::records::varint::put_uvarint;

/// Batches smaller than this are copied into the frame: a segment costs an
/// `IoSlice` and a reference count, a copy of a few hundred bytes less.
pub(crate) const SPLICE_MIN: usize = 1024;

/// The highest Produce version [`produce_frame`] writes itself (v12 adds
/// nothing to the body; v13 names topics by id, which this client does not
/// send).
const PRODUCE_MAX: i16 = 12;

/// Most slices handed to one vectored write.
const MAX_IOV: usize = 64;

/// One request frame: `head` then `tail`, in order. Bytes 8..12 of `head`
/// are the correlation id, patched in by the connection task.
#[derive(Debug, Default)]
pub(crate) struct OutFrame {
    pub(crate) head: BytesMut,
    pub(crate) tail: Vec<Bytes>,
}

impl OutFrame {
    /// The frame's whole length, bytes (length prefix included).
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.iter().map(Bytes::len).sum::<usize>()
    }

    /// Set the correlation id (bytes 8..12: after the length prefix, the
    /// API key and the version).
    pub(crate) fn set_correlation_id(&mut self, id: i32) {
        self.head[8..12].copy_from_slice(&id.to_be_bytes());
    }

    /// The frame as one buffer (tests).
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.to_vec();
        for s in &self.tail {
            v.extend_from_slice(s);
        }
        v
    }
}

/// Builds a frame: small fields go to the open buffer, large batches
/// become segments of their own.
struct Builder {
    frame: OutFrame,
    /// Where small fields go: what becomes `frame.head` until the first
    /// segment (the head is empty until then), then a buffer closed into
    /// the tail before each segment and at the end.
    open: BytesMut,
}

impl Builder {
    fn new() -> Self {
        let mut open = BytesMut::with_capacity(256);
        open.put_i32(0); // the length, known at the end
        Builder {
            frame: OutFrame::default(),
            open,
        }
    }

    fn splice(&mut self, bytes: &Bytes) {
        let open = std::mem::take(&mut self.open);
        if self.frame.head.is_empty() {
            self.frame.head = open;
        } else {
            self.frame.tail.push(open.freeze());
        }
        self.frame.tail.push(bytes.clone());
    }

    fn finish(mut self) -> Result<OutFrame> {
        if self.frame.head.is_empty() {
            self.frame.head = self.open;
        } else if !self.open.is_empty() {
            self.frame.tail.push(self.open.freeze());
        }
        let size = self.frame.len() - 4;
        let size = i32::try_from(size).map_err(|_| Error::Encode {
            api: ApiKey::Produce,
            reason: format!("a request of {size} bytes is over the protocol's 2 GiB limit"),
        })?;
        self.frame.head[0..4].copy_from_slice(&size.to_be_bytes());
        Ok(self.frame)
    }
}

/// `req` at `version` as a frame whose record batches are segments, or
/// `None` when this version or these fields are not ones written here (the
/// caller encodes it the generic way).
///
/// # Errors
/// [`Error::Encode`] when a field cannot be encoded (a string or batch
/// over the protocol's length limits).
pub(crate) fn produce_frame(
    req: &ProduceRequest,
    version: i16,
    client_id: &StrBytes,
) -> Result<Option<OutFrame>> {
    let plain = req.unknown_tagged_fields.is_empty()
        && req.topic_data.iter().all(|t| {
            t.unknown_tagged_fields.is_empty()
                && t.partition_data
                    .iter()
                    .all(|p| p.unknown_tagged_fields.is_empty())
        });
    if !(3..=PRODUCE_MAX).contains(&version) || !plain {
        return Ok(None);
    }
    let flexible = version >= 9;
    let mut b = Builder::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(client_id.clone()))
        .encode(&mut b.open, ProduceRequest::header_version(version))
        .map_err(|e| Error::Encode {
            api: ApiKey::Produce,
            reason: e.to_string(),
        })?;
    let txn = req.transactional_id.as_ref().map(|t| t.0.as_bytes());
    put_bytes(&mut b.open, txn, flexible, true)?;
    b.open.put_i16(req.acks);
    b.open.put_i32(req.timeout_ms);
    put_len(&mut b.open, req.topic_data.len(), flexible)?;
    for t in &req.topic_data {
        put_bytes(&mut b.open, Some(t.name.0.as_bytes()), flexible, true)?;
        put_len(&mut b.open, t.partition_data.len(), flexible)?;
        for p in &t.partition_data {
            b.open.put_i32(p.index);
            match &p.records {
                Some(records) if records.len() >= SPLICE_MIN => {
                    put_len_prefix(&mut b.open, records.len(), flexible, false)?;
                    b.splice(records);
                }
                records => put_bytes(&mut b.open, records.as_deref(), flexible, false)?,
            }
            if flexible {
                b.open.put_u8(0); // no tagged fields
            }
        }
        if flexible {
            b.open.put_u8(0);
        }
    }
    if flexible {
        b.open.put_u8(0);
    }
    b.finish().map(Some)
}

fn too_long(what: &str, len: usize) -> Error {
    Error::Encode {
        api: ApiKey::Produce,
        reason: format!("{what} of {len} elements or bytes is too long to encode"),
    }
}

/// An array's length: compact (length + 1, unsigned varint) in flexible
/// versions, else an INT32.
fn put_len(buf: &mut BytesMut, len: usize, flexible: bool) -> Result<()> {
    let n = i32::try_from(len).map_err(|_| too_long("an array", len))?;
    if flexible {
        put_uvarint(buf, n as u64 + 1);
    } else {
        buf.put_i32(n);
    }
    Ok(())
}

/// A string's (`string`: an INT16 length) or byte string's (INT32) length
/// prefix; compact (length + 1, unsigned varint) in flexible versions.
fn put_len_prefix(buf: &mut BytesMut, len: usize, flexible: bool, string: bool) -> Result<()> {
    let max = if string {
        i16::MAX as usize
    } else {
        i32::MAX as usize - 1
    };
    if len > max {
        return Err(too_long(
            if string { "a string" } else { "a record batch" },
            len,
        ));
    }
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else if string {
        buf.put_i16(len as i16);
    } else {
        buf.put_i32(len as i32);
    }
    Ok(())
}

/// A nullable string or byte string: its length prefix (null: -1, or 0
/// when compact), then its bytes.
fn put_bytes(buf: &mut BytesMut, v: Option<&[u8]>, flexible: bool, string: bool) -> Result<()> {
    match v {
        Some(v) => {
            put_len_prefix(buf, v.len(), flexible, string)?;
            buf.put_slice(v);
        }
        None if flexible => put_uvarint(buf, 0),
        None if string => buf.put_i16(-1),
        None => buf.put_i32(-1),
    }
    Ok(())
}

/// Bytes queued for the socket, as segments (one frame's head, its
/// batches, other frames).
#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    segments: VecDeque<Bytes>,
    len: usize,
}

impl WriteQueue {
    pub(crate) fn push(&mut self, frame: OutFrame) {
        self.push_segment(frame.head.freeze());
        for s in frame.tail {
            self.push_segment(s);
        }
    }

    fn push_segment(&mut self, s: Bytes) {
        if !s.is_empty() {
            self.len += s.len();
            self.segments.push_back(s);
        }
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The front segments (at most [`MAX_IOV`]) as slices for one
    /// vectored write.
    pub(crate) fn slices(&self) -> Vec<IoSlice<'_>> {
        self.segments
            .iter()
            .take(MAX_IOV)
            .map(|s| IoSlice::new(s))
            .collect()
    }

    /// `n` bytes were written from the front.
    pub(crate) fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.segments.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{TopicName, TransactionalId};
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = ProduceRequest> {
        let batch = prop_oneof![
            Just(None),
            (0usize..3000).prop_map(|n| Some(Bytes::from(vec![7u8; n]))),
        ];
        let partition = (any::<i32>(), batch).prop_map(|(i, r)| {
            PartitionProduceData::default()
                .with_index(i)
                .with_records(r)
        });
        let topic = ("[a-z]{0,20}", prop::collection::vec(partition, 0..5)).prop_map(|(n, p)| {
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(n)))
                .with_partition_data(p)
        });
        (
            prop::option::of("[a-z]{1,10}"),
            any::<i16>(),
            any::<i32>(),
            prop::collection::vec(topic, 0..4),
        )
            .prop_map(|(txn, acks, timeout, topics)| {
                ProduceRequest::default()
                    .with_transactional_id(txn.map(|t| TransactionalId(StrBytes::from_string(t))))
                    .with_acks(acks)
                    .with_timeout_ms(timeout)
                    .with_topic_data(topics)
            })
    }

    proptest! {
        #[test]
        fn a_produce_frame_is_what_the_generic_encoder_writes(req in request(), version in 3i16..=PRODUCE_MAX) {
            let client = StrBytes::from_static_str("client-1");
            let frame = produce_frame(&req, version, &client).unwrap().unwrap();
            let generic = crate::connection::encode_generic(&req, ApiKey::Produce, version, &client).unwrap();
            prop_assert_eq!(frame.to_vec(), generic.to_vec());
            // Every large batch is a segment of its own, not a copy.
            let large = req.topic_data.iter()
                .flat_map(|t| &t.partition_data)
                .filter_map(|p| p.records.as_ref())
                .filter(|r| r.len() >= SPLICE_MIN);
            for r in large {
                prop_assert!(frame.tail.iter().any(|s| s.as_ptr() == r.as_ptr() && s.len() == r.len()));
            }
        }

        #[test]
        fn the_write_queue_writes_every_byte_in_order(
            frames in prop::collection::vec(prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 1..4), 1..5),
            chunks in prop::collection::vec(1usize..40, 1..200),
        ) {
            let mut q = WriteQueue::default();
            let mut want = Vec::new();
            for f in &frames {
                let mut head = BytesMut::new();
                head.extend_from_slice(&f[0]);
                let tail: Vec<Bytes> = f[1..].iter().map(|s| Bytes::from(s.clone())).collect();
                for s in f {
                    want.extend_from_slice(s);
                }
                q.push(OutFrame { head, tail });
            }
            prop_assert_eq!(q.len(), want.len());
            let mut got = Vec::new();
            for c in chunks.into_iter().cycle() {
                if q.is_empty() {
                    break;
                }
                // A short write: only part of the slices offered.
                let mut n = 0;
                for s in q.slices() {
                    let take = (c - n).min(s.len());
                    got.extend_from_slice(&s[..take]);
                    n += take;
                    if n == c {
                        break;
                    }
                }
                q.advance(n);
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(q.len(), 0);
        }
    }

    #[test]
    fn later_versions_and_unknown_tagged_fields_take_the_generic_path() {
        let client = StrBytes::from_static_str("c");
        let req = ProduceRequest::default();
        assert!(produce_frame(&req, 13, &client).unwrap().is_none());
        let mut tagged = ProduceRequest::default();
        tagged
            .unknown_tagged_fields
            .insert(5, Bytes::from_static(b"x"));
        assert!(produce_frame(&tagged, 9, &client).unwrap().is_none());
    }
}
