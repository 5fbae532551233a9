//! Zig-zag varints as record batches use them. Every read is bounded: a
//! varint longer than its type allows is an error, never a loop or a panic.

use bytes::{Buf, BufMut};

use crate::error::DecodeError;

/// Read a zig-zag varint that must fit in an `i32`.
pub fn get_varint(buf: &mut impl Buf, what: &'static str) -> Result<i32, DecodeError> {
    let v = get_varlong_bounded(buf, what, 5)?;
    i32::try_from(v).map_err(|_| DecodeError::Varint(what))
}

/// Read a zig-zag varlong.
pub fn get_varlong(buf: &mut impl Buf, what: &'static str) -> Result<i64, DecodeError> {
    get_varlong_bounded(buf, what, 10)
}

fn get_varlong_bounded(
    buf: &mut impl Buf,
    what: &'static str,
    max_bytes: usize,
) -> Result<i64, DecodeError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        if !buf.has_remaining() {
            return Err(DecodeError::Truncated { what, needed: 1 });
        }
        let byte = buf.get_u8();
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(DecodeError::Varint(what))
}

/// Write a zig-zag varint.
pub fn put_varint(buf: &mut impl BufMut, v: i32) {
    put_varlong(buf, i64::from(v));
}

/// Write a zig-zag varlong.
pub fn put_varlong(buf: &mut impl BufMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Write an unsigned varint (no zig-zag: the protocol's compact lengths).
pub fn put_uvarint(buf: &mut impl BufMut, mut raw: u64) {
    while raw >= 0x80 {
        buf.put_u8((raw as u8) | 0x80);
        raw >>= 7;
    }
    buf.put_u8(raw as u8);
}

/// Encoded size of a zig-zag varlong.
pub fn varlong_len(v: i64) -> usize {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while raw >= 0x80 {
        raw >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn malformed_varint_is_an_error_not_a_loop() {
        let mut bytes: &[u8] = &[0xff; 16];
        assert_eq!(get_varint(&mut bytes, "x"), Err(DecodeError::Varint("x")));
        let mut bytes: &[u8] = &[0xff; 16];
        assert_eq!(get_varlong(&mut bytes, "x"), Err(DecodeError::Varint("x")));
        let mut short: &[u8] = &[0x80];
        assert!(matches!(
            get_varint(&mut short, "x"),
            Err(DecodeError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            prop_assert_eq!(get_varlong(&mut buf.as_slice(), "v").unwrap(), v);
        }

        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(get_varint(&mut buf.as_slice(), "v").unwrap(), v);
        }
    }
}
