#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub, dead_code))]
//! Length-prefixed frames: `[i32 length][length bytes]`.
//!
//! Pure and allocation-bounded: the length is checked (negative, over the
//! configured maximum) *before* any buffer grows for it, so a hostile peer
//! cannot make us allocate more than `max_frame` bytes per connection.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::DecodeError;

/// Default cap on one incoming frame (Kafka's own `socket.request.max.bytes` is 100 MiB).
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// How much buffer to reserve ahead of bytes that have not arrived yet.
pub const RESERVE_STEP: usize = 1024 * 1024;

/// Splits a byte stream into frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// Take one whole frame (without its length prefix) off the front of
    /// `buf`, or `Ok(None)` if more bytes are needed. When `None` is returned
    /// for a frame whose length is known, `buf` reserves room for the next
    /// piece of it, at most [`RESERVE_STEP`] at a time: a peer that announces
    /// a large frame and then sends nothing costs us little.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len < 0 || len as usize > self.max_frame {
            // No Kafka frame this long: is it another protocol talking?
            if let Some(e) = other_protocol(buf) {
                return Err(e);
            }
        }
        if len < 0 {
            return Err(DecodeError::NegativeLength(len.into()));
        }
        let len = len as usize;
        if len > self.max_frame {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        if buf.len() < 4 + len {
            buf.reserve((4 + len - buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// A TLS record (content type 20-23, version 3.x) or an HTTP status line
/// at the front of `buf`, which begins with an impossible frame length.
fn other_protocol(buf: &[u8]) -> Option<DecodeError> {
    if (0x14..=0x17).contains(&buf[0]) && buf[1] == 0x03 {
        return Some(DecodeError::Tls);
    }
    if buf.starts_with(b"HTTP") {
        let line = buf
            .split(|b| *b == b'\r' || *b == b'\n')
            .next()
            .unwrap_or_default();
        let line = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        return Some(DecodeError::Http(line));
    }
    None
}

/// Prefix `body` with its length. Used by the connection writer.
pub fn encode_frame(body: &[u8], out: &mut BytesMut) {
    out.reserve(4 + body.len());
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tls_alert_or_handshake_is_named_not_read_as_a_length() {
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        for first in [[0x15, 0x03, 0x03, 0x00], [0x16, 0x03, 0x01, 0x02]] {
            let mut buf = BytesMut::from(&first[..]);
            buf.extend_from_slice(&[0x02, 0x02, 0x50]);
            assert_eq!(d.decode(&mut buf), Err(DecodeError::Tls));
        }
    }

    #[test]
    fn an_http_answer_is_named_not_read_as_a_length() {
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut buf = BytesMut::from(&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..]);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::Http("HTTP/1.1 400 Bad Request".into()));
        assert!(err.to_string().contains("not a Kafka broker"), "{err}");
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0, 0, 0, 10, 1, 2, 3][..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap().as_ref(),
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn negative_length_is_an_error() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert_eq!(d.decode(&mut buf), Err(DecodeError::NegativeLength(-5)));
    }

    #[test]
    fn oversized_length_is_rejected_before_allocating() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        let cap_before = buf.capacity();
        assert!(matches!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap_before, "no allocation for a bad length");
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8), chunk in 1usize..64) {
            let mut wire = BytesMut::new();
            for b in &bodies { encode_frame(b, &mut wire); }
            let d = FrameDecoder::new(1024);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = d.decode(&mut buf).unwrap() { out.push(f.to_vec()); }
            }
            prop_assert_eq!(out, bodies);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let d = FrameDecoder::new(16);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = d.decode(&mut buf) {}
        }
    }
}
