//! The Confluent wire format: the framing every Confluent serializer puts
//! around a record's key or value (sans-IO, no schema knowledge).
//!
//! ```text
//! byte 0      magic byte, always 0
//! bytes 1..5  schema id, 32-bit big-endian (the registry's global id)
//! bytes 5..   the body: for Avro, one datum in Avro's binary encoding
//!             (no container-file header, no codec)
//! ```
//!
//! An `Order {id: "a", price: 9.99}` under schema id 1 is
//! `00 00000001 02 61 7b14ae47e1fa2340`: magic, id, then the Avro body
//! (string length 1 as zig-zag varint `02`, `a`, the double little-endian).

use crate::SchemaId;

/// The first byte of every Confluent-framed payload.
pub const MAGIC_BYTE: u8 = 0;

/// Magic byte plus schema id: the shortest a framed payload can be (an
/// Avro body may be empty, e.g. a record with no fields).
pub const HEADER_LEN: usize = 5;

/// Why bytes are not a Confluent-framed payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("{len} bytes is shorter than the 5-byte Confluent header (magic byte + schema id)")]
    TooShort {
        /// The payload's length.
        len: usize,
    },
    /// The first byte is not [`MAGIC_BYTE`]: not written by a Confluent
    /// serializer (plain JSON, another framing, or garbage).
    #[error("unknown magic byte {found:#04x} (expected 0x00): not Confluent-framed")]
    BadMagic {
        /// The byte found.
        found: u8,
    },
}

/// Append the 5-byte header for `id` to `out`.
pub fn write_header(id: SchemaId, out: &mut Vec<u8>) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&id.0.to_be_bytes());
}

/// A framed payload: header for `id`, then `body`.
pub fn frame(id: SchemaId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    write_header(id, &mut out);
    out.extend_from_slice(body);
    out
}

/// Split a framed payload into its schema id and body. Reads only the
/// header; the body is returned as is.
///
/// # Errors
/// [`WireError::TooShort`] under 5 bytes, [`WireError::BadMagic`] when
/// byte 0 is not 0.
pub fn split(payload: &[u8]) -> Result<(SchemaId, &[u8]), WireError> {
    let Some((header, body)) = payload.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::TooShort { len: payload.len() });
    };
    if header[0] != MAGIC_BYTE {
        return Err(WireError::BadMagic { found: header[0] });
    }
    let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    Ok((SchemaId(id), body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_then_split_round_trips() {
        let bytes = frame(SchemaId(0x0102_0304), b"body");
        assert_eq!(&bytes[..5], &[0, 1, 2, 3, 4]);
        assert_eq!(split(&bytes), Ok((SchemaId(0x0102_0304), &b"body"[..])));
    }

    #[test]
    fn an_empty_body_is_allowed() {
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((SchemaId(7), &[][..])));
    }

    #[test]
    fn short_and_foreign_payloads_are_typed_errors() {
        for len in 0..HEADER_LEN {
            assert_eq!(split(&vec![0; len]), Err(WireError::TooShort { len }));
        }
        assert_eq!(
            split(b"{\"id\":1}"),
            Err(WireError::BadMagic { found: b'{' })
        );
    }
}
