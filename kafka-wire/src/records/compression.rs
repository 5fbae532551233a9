//! The four codecs, in pure Rust, with a decompression ceiling.
//!
//! Every decoder reads through a `take(limit + 1)`: output past the ceiling
//! is an error ([`DecodeError::DecompressLimit`]) before it is buffered, so a
//! compression bomb costs at most `limit` bytes. Snappy checks each block's
//! declared length against the remaining budget before allocating.
//!
//! Each codec is a cargo feature of `kafka-wire` (`gzip`, `snappy`, `lz4`,
//! `zstd`; all on by default). Without its feature, reading a batch in that
//! codec is [`DecodeError::CodecNotBuilt`], and a producer configured with
//! it fails at `build()`.

#[allow(unused_imports)] // with every codec feature off, neither is used
use std::io::{Read, Write};

use crate::error::DecodeError;

/// `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, `None` first.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// From the low three bits of a batch's attributes.
    pub fn from_attributes(attributes: i16) -> Result<Self, DecodeError> {
        Ok(match attributes & 0x07 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(DecodeError::UnknownCodec(other as u8)),
        })
    }

    /// The codec id for a batch's attributes.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// `compression.type` values: none, gzip, snappy, lz4, zstd.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// Whether this build can read and write the codec: `None` always, the
    /// others when their cargo feature is on.
    pub fn is_built(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// The name `compression.type` uses for this codec (also its cargo feature).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The xerial snappy-java stream header the Java client writes.
#[cfg(feature = "snappy")]
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Decompress {
        codec,
        reason: e.to_string(),
    }
}

/// Read all of `reader`, failing once more than `limit` bytes come out.
#[allow(dead_code)] // unused when every streaming codec's feature is off
fn read_bounded(
    reader: impl Read,
    codec: &'static str,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(DecodeError::DecompressLimit { codec, limit });
    }
    Ok(out)
}

/// Decompress a batch's records section, producing at most `limit` bytes.
///
/// # Errors
/// [`DecodeError::Decompress`] for a corrupt payload,
/// [`DecodeError::DecompressLimit`] past `limit` bytes, and
/// [`DecodeError::CodecNotBuilt`] when this build left the codec's feature out.
#[cfg_attr(
    not(any(
        feature = "gzip",
        feature = "snappy",
        feature = "lz4",
        feature = "zstd"
    )),
    allow(unused_variables)
)]
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match codec {
        Compression::None => Ok(input.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input), "gzip", limit),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => match lz4_frame_direct(input, limit) {
            Some(out) => Ok(out),
            // Another frame layout, or a block that does not decode within
            // `limit`: the frame decoder, which names the exact error.
            None => read_bounded(lz4_flex::frame::FrameDecoder::new(input), "lz4", limit),
        },
        #[cfg(feature = "zstd")]
        Compression::Zstd => decompress_zstd(input, limit),
        #[cfg(feature = "snappy")]
        Compression::Snappy => decompress_snappy(input, limit),
        #[allow(unreachable_patterns)]
        other => Err(DecodeError::CodecNotBuilt(other.name())),
    }
}

/// One LZ4 frame as Kafka clients write it (LZ4 frame format 1.6:
/// independent blocks, no dictionary, one frame), each block decompressed
/// straight into the output: no copy through the frame decoder's buffer,
/// and the output reserved once, from the block list. Checksums are not verified here:
/// the record batch's CRC32C covers these bytes. `None` for anything else
/// (linked blocks, a dictionary, several frames, a block over the frame's
/// block size, output past `limit`, a corrupt block), which the caller
/// hands to the full frame decoder. Never holds more than `limit` bytes.
#[cfg(feature = "lz4")]
fn lz4_frame_direct(input: &[u8], limit: usize) -> Option<Vec<u8>> {
    const MAGIC: u32 = 0x184D_2204;
    let (magic, rest) = input.split_first_chunk::<4>()?;
    let ([flg, bd], _) = rest.split_first_chunk::<2>()?;
    let (flg, bd) = (*flg, *bd);
    let version_01 = flg >> 6 == 0b01;
    let independent = flg & 0x20 != 0;
    let reserved_or_dictionary = flg & 0x03 != 0;
    if u32::from_le_bytes(*magic) != MAGIC || !version_01 || !independent || reserved_or_dictionary
    {
        return None;
    }
    let block_checksum = if flg & 0x10 != 0 { 4 } else { 0 };
    let content_size = if flg & 0x08 != 0 { 8 } else { 0 };
    let content_checksum = if flg & 0x04 != 0 { 4 } else { 0 };
    let block_max: usize = match (bd >> 4) & 0x07 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return None,
    };
    // FLG, BD, the optional content size, the header checksum.
    let blocks = rest.get(2 + content_size + 1..)?;
    // The layout first: a frame that ends in its end mark (then only the
    // content checksum), every block within the frame's block size. Its
    // blocks bound the output, reserved once so it never moves.
    // The most a block can hold: a stored block its own bytes; a
    // compressed one its frame's block size, and at most 255 bytes out
    // per byte in (an LZ4 match length byte of 255), so a small hostile
    // block cannot claim a big room.
    let most = |stored: bool, len: usize| {
        if stored {
            len
        } else {
            block_max.min(len.saturating_mul(255).saturating_add(64))
        }
    };
    let mut rest = blocks;
    let mut bound = 0usize;
    // (stored uncompressed, bytes) of each block.
    let mut parts: Vec<(bool, &[u8])> = Vec::new();
    loop {
        let (size, tail) = rest.split_first_chunk::<4>()?;
        let size = u32::from_le_bytes(*size);
        if size == 0 {
            if tail.len() != content_checksum {
                return None;
            }
            break;
        }
        let len = (size & 0x7FFF_FFFF) as usize;
        if len > block_max {
            return None;
        }
        let stored = size & 0x8000_0000 != 0;
        parts.push((stored, tail.get(..len)?));
        rest = tail.get(len + block_checksum..)?;
        bound = bound.saturating_add(most(stored, len));
    }
    let mut out = Vec::with_capacity(bound.min(limit));
    for (stored, block) in parts {
        let start = out.len();
        if stored {
            if start + block.len() > limit {
                return None;
            }
            out.extend_from_slice(block);
        } else {
            let room = most(false, block.len()).min(limit.saturating_sub(start));
            out.resize(start + room, 0);
            let n = lz4_flex::block::decompress_into(block, &mut out[start..]).ok()?;
            out.truncate(start + n);
        }
    }
    // Blocks that compressed well ended short of `block_max`: give back
    // room the records will not use (they share this buffer until dropped).
    if out.capacity() > out.len() + out.len() / 2 {
        out.shrink_to_fit();
    }
    Some(out)
}

/// A zstd frame's window (RFC 8878, 3.1.1.1.2) in bytes: what the
/// decoder reserves before it decodes. `None`: not a zstd frame header.
#[cfg(feature = "zstd")]
fn zstd_window(input: &[u8]) -> Option<u64> {
    let (magic, rest) = input.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*magic) != 0xFD2F_B528 {
        return None;
    }
    let (&descriptor, rest) = rest.split_first()?;
    if descriptor & 0x20 == 0 {
        // A window descriptor: 2^(10 + exponent) plus eighths of it.
        let wd = *rest.first()?;
        let base = 1u64 << (10 + u64::from(wd >> 3));
        return Some(base + base / 8 * u64::from(wd & 7));
    }
    // A single segment: the window is the content size.
    let dictionary_id = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let width = [1, 2, 4, 8][usize::from(descriptor >> 6)];
    let field = rest.get(dictionary_id..dictionary_id + width)?;
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(field);
    let size = u64::from_le_bytes(bytes);
    Some(if width == 2 { size + 256 } else { size })
}

/// Windows up to this size decode with the thread's kept decoder.
#[cfg(feature = "zstd")]
const ZSTD_KEPT_WINDOW: u64 = 8 << 20;

#[cfg(feature = "zstd")]
thread_local! {
    /// One zstd decoder per thread, reused batch after batch: its window
    /// buffer and tables are allocated once instead of grown again for
    /// every batch (13 % of a zstd consumer's samples went to that).
    static ZSTD: std::cell::RefCell<ruzstd::decoding::FrameDecoder> =
        std::cell::RefCell::new(ruzstd::decoding::FrameDecoder::new());
}

/// A zstd frame, with the thread's kept decoder when its window is at
/// most [`ZSTD_KEPT_WINDOW`] (so a frame asking for a large window is
/// never kept), else with a decoder of its own.
#[cfg(feature = "zstd")]
fn decompress_zstd(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    use ruzstd::decoding::StreamingDecoder;
    let fresh = || {
        let decoder = StreamingDecoder::new(input).map_err(|e| corrupt("zstd", e))?;
        read_bounded(decoder, "zstd", limit)
    };
    let window = zstd_window(input);
    // ruzstd reserves the window before decoding (up to its own 100 MiB
    // cap), so a few hostile bytes asking for a huge window would cost
    // that much: a window past what this consumer ever decompresses (or
    // the 8 MiB a kept decoder holds, whichever is more) is refused first.
    if window.is_some_and(|w| w > (limit as u64).max(ZSTD_KEPT_WINDOW)) {
        return Err(DecodeError::DecompressLimit {
            codec: "zstd",
            limit,
        });
    }
    if window.is_none_or(|w| w > ZSTD_KEPT_WINDOW) {
        return fresh();
    }
    ZSTD.with(|kept| match kept.try_borrow_mut() {
        Ok(mut kept) => {
            let decoder = StreamingDecoder::new_with_decoder(input, &mut *kept)
                .map_err(|e| corrupt("zstd", e))?;
            read_bounded(decoder, "zstd", limit)
        }
        Err(_) => fresh(),
    })
}

#[cfg(feature = "snappy")]
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
    // The block's header claims `len` and the output is zero-filled to it
    // before decoding: a claim no block of this size can hold is refused
    // first (snappy's densest element, a 3-byte copy of 64 bytes, is
    // about 21 bytes out per byte in).
    if len > block.len().saturating_mul(32).saturating_add(64) {
        return Err(corrupt(
            "snappy",
            format!("a {}-byte block claims {len} bytes", block.len()),
        ));
    }
    if out.len() + len > limit {
        return Err(DecodeError::DecompressLimit {
            codec: "snappy",
            limit,
        });
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| corrupt("snappy", e))?;
    Ok(())
}

/// Snappy as Kafka clients write it: xerial framing (Java) or one raw block.
#[cfg(feature = "snappy")]
fn decompress_snappy(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    if input.len() >= 16 && input[..8] == XERIAL_MAGIC {
        let mut rest = &input[16..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(corrupt("snappy", "truncated xerial block length"));
            }
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                return Err(corrupt("snappy", "xerial block longer than the payload"));
            }
            snappy_block(&rest[..len], &mut out, limit)?;
            rest = &rest[len..];
        }
    } else {
        snappy_block(input, &mut out, limit)?;
    }
    Ok(out)
}

/// Compress a records section. Snappy uses xerial framing, so that the Java
/// client (which expects it) can read what we write.
///
/// Returns `None` when this build left the codec's feature out (callers
/// then write the batch uncompressed; a producer rejects such a codec at
/// `build()` already).
pub fn compress(codec: Compression, input: &[u8]) -> Option<Vec<u8>> {
    Some(match codec {
        Compression::None => input.to_vec(),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(input).expect("writing to a Vec cannot fail");
            enc.finish().expect("writing to a Vec cannot fail")
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            let mut out = bytes::BytesMut::new();
            lz4_frame_into(input, &mut out);
            out.into()
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            ruzstd::encoding::compress_to_vec(input, ruzstd::encoding::CompressionLevel::Fastest)
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            let mut out = Vec::with_capacity(16 + input.len());
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // min compatible version
            let mut enc = snap::raw::Encoder::new();
            // snappy-java's default block size
            for chunk in input.chunks(32 * 1024) {
                let block = enc
                    .compress_vec(chunk)
                    .expect("snappy compresses any input");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// Compress a records section straight into `out` (after whatever it
/// holds), as [`compress`] would write it. LZ4 frames are written from
/// independent 64 KiB blocks with no intermediate buffer (lz4_flex's frame
/// encoder allocated and zeroed about 200 KiB per batch, which showed as
/// page faults in the producer's profile); the other codecs go through
/// [`compress`].
///
/// Returns `false` (writing nothing) when this build left the codec out.
pub fn compress_into(codec: Compression, input: &[u8], out: &mut bytes::BytesMut) -> bool {
    match codec {
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            lz4_frame_into(input, out);
            true
        }
        _ => match compress(codec, input) {
            Some(packed) => {
                out.extend_from_slice(&packed);
                true
            }
            None => false,
        },
    }
}

/// The LZ4 frame format (lz4_Frame_format.md) as `lz4_flex`'s frame
/// encoder writes it by default, which the Java client reads: version 1,
/// independent blocks of at most 64 KiB, no checksums, no content size.
/// A block that does not shrink is stored raw (high bit of its size).
#[cfg(feature = "lz4")]
fn lz4_frame_into(input: &[u8], out: &mut bytes::BytesMut) {
    use bytes::BufMut;
    const MAGIC: u32 = 0x184D_2204;
    const FLG: u8 = 0x60; // version 01, independent blocks
    const BD: u8 = 0x40; // block max size 64 KiB
    const HC: u8 = 0x82; // (xxh32([FLG, BD], 0) >> 8) as u8: see the test
    const BLOCK: usize = 64 * 1024;
    out.reserve(7 + 4 + input.len() / 2);
    out.put_u32_le(MAGIC);
    out.put_slice(&[FLG, BD, HC]);
    for chunk in input.chunks(BLOCK) {
        let room = lz4_flex::block::get_maximum_output_size(chunk.len());
        out.reserve(4 + room);
        let at = out.len();
        out.put_u32_le(0); // size, patched
        let start = out.len();
        out.resize(start + room, 0);
        let n = lz4_flex::block::compress_into(chunk, &mut out[start..])
            .expect("the output has the maximum compressed size");
        if n < chunk.len() {
            out.truncate(start + n);
            out[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
        } else {
            out.truncate(start);
            out.put_slice(chunk);
            out[at..at + 4].copy_from_slice(&(chunk.len() as u32 | 0x8000_0000).to_le_bytes());
        }
    }
    out.put_u32_le(0); // end mark
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Our LZ4 frames are byte for byte what lz4_flex's frame encoder
    /// writes for a small input (header checksum included), and decode.
    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_frames_match_the_frame_encoder_and_round_trip() {
        let mut random = 0x2545_f491_4f6c_dd1du64;
        let mut noise = || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random as u8
        };
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            vec![b'x'; 60_000],
            vec![b'x'; 100_000],
            (0..200_000).map(|_| noise()).collect(), // incompressible: raw blocks
            (0..150_000u32).map(|i| (i % 251) as u8).collect(),
        ];
        for input in inputs {
            let mut ours = bytes::BytesMut::new();
            assert!(compress_into(Compression::Lz4, &input, &mut ours));
            if input.len() <= 64 * 1024 {
                // lz4_flex picks 64 KiB blocks for inputs this small, as we
                // (and Java's KafkaLZ4BlockOutputStream) always do.
                let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
                enc.write_all(&input).unwrap();
                let theirs = enc.finish().unwrap();
                assert_eq!(&ours[..], &theirs[..], "{} bytes in", input.len());
            }
            assert_eq!(
                &ours[4..7],
                &[0x60, 0x40, 0x82],
                "64 KiB independent blocks"
            );
            let back = decompress(Compression::Lz4, &ours, 1 << 24).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn compression_bomb_is_stopped_at_the_ceiling_for_each_codec() {
        // 16 MiB of zeros compresses to almost nothing.
        let bomb_source = vec![0u8; 16 * 1024 * 1024];
        for codec in Compression::ALL
            .into_iter()
            .filter(|c| *c != Compression::None && c.is_built())
        {
            let bomb = compress(codec, &bomb_source).expect("built");
            assert!(bomb.len() < 1024 * 1024, "{codec:?} compresses zeros well");
            let err = decompress(codec, &bomb, 64 * 1024).unwrap_err();
            assert!(
                matches!(err, DecodeError::DecompressLimit { limit: 65536, .. }),
                "{codec:?}: {err:?}"
            );
        }
    }

    #[test]
    fn garbage_is_a_typed_error_for_each_codec() {
        let garbage = b"definitely not a compressed payload \x00\x01\x02";
        for codec in Compression::ALL
            .into_iter()
            .filter(|c| *c != Compression::None && c.is_built())
        {
            let err = decompress(codec, garbage, 1 << 20).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::Decompress { .. } | DecodeError::DecompressLimit { .. }
                ),
                "{codec:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_codec_left_out_of_the_build_is_a_typed_error_naming_its_feature() {
        for codec in Compression::ALL.into_iter().filter(|c| !c.is_built()) {
            assert_eq!(compress(codec, b"x"), None);
            let err = decompress(codec, b"x", 1024).unwrap_err();
            assert_eq!(err, DecodeError::CodecNotBuilt(codec.name()));
            assert!(err
                .to_string()
                .contains(&format!("`{}` feature", codec.name())));
        }
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn raw_snappy_blocks_are_read_too() {
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello hello")
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1024).unwrap(),
            b"hello hello hello"
        );
    }

    /// Frames of our writer, of lz4_flex's encoder (with and without
    /// checksums and content size) are read block by block; frames with
    /// linked blocks take the frame decoder; both give the same bytes.
    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_frames_are_read_block_by_block_when_their_layout_allows() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        use std::io::Write;
        let inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"x".to_vec(),
            vec![b'x'; 300_000],
            (0..200_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            (0..150_000u32).map(|i| (i % 251) as u8).collect(),
        ];
        let encode = |info: FrameInfo, input: &[u8]| {
            let mut e = FrameEncoder::with_frame_info(info, Vec::new());
            e.write_all(input).unwrap();
            e.finish().unwrap()
        };
        for input in &inputs {
            let mut ours = bytes::BytesMut::new();
            assert!(compress_into(Compression::Lz4, input, &mut ours));
            let checked = FrameInfo::new()
                .block_size(BlockSize::Max256KB)
                .block_checksums(true)
                .content_checksum(true)
                .content_size(Some(input.len() as u64));
            for frame in [
                ours.to_vec(),
                encode(FrameInfo::new(), input),
                encode(checked, input),
            ] {
                assert_eq!(lz4_frame_direct(&frame, 1 << 30).as_ref(), Some(input));
                assert_eq!(
                    &decompress(Compression::Lz4, &frame, 1 << 30).unwrap(),
                    input
                );
            }
            let linked = encode(FrameInfo::new().block_mode(BlockMode::Linked), input);
            assert_eq!(lz4_frame_direct(&linked, 1 << 30), None, "linked blocks");
            assert_eq!(
                &decompress(Compression::Lz4, &linked, 1 << 30).unwrap(),
                input
            );
            // Two frames back to back: the frame decoder's case.
            let two = [ours.to_vec(), ours.to_vec()].concat();
            assert_eq!(lz4_frame_direct(&two, 1 << 30), None, "two frames");
        }
        // Past the limit: the frame decoder's typed error, whichever path.
        let mut big = bytes::BytesMut::new();
        assert!(compress_into(
            Compression::Lz4,
            &vec![b'x'; 300_000],
            &mut big
        ));
        assert_eq!(lz4_frame_direct(&big, 100_000), None);
        assert!(matches!(
            decompress(Compression::Lz4, &big, 100_000),
            Err(DecodeError::DecompressLimit { codec: "lz4", .. })
        ));
    }

    /// A raw snappy block whose header claims far more than its bytes can
    /// hold is refused before the output is filled to that size; real
    /// blocks at snappy's densest (long runs) still decode.
    #[cfg(feature = "snappy")]
    #[test]
    fn a_snappy_block_claiming_more_than_it_can_hold_is_refused_first() {
        // Varint 60,000,000, then two bytes of nothing.
        let mut claim = Vec::new();
        let mut n = 60_000_000u32;
        while n >= 0x80 {
            claim.push((n as u8) | 0x80);
            n >>= 7;
        }
        claim.extend_from_slice(&[n as u8, 0, 0]);
        match decompress(Compression::Snappy, &claim, 64 << 20) {
            Err(DecodeError::Decompress {
                codec: "snappy",
                reason,
            }) => {
                assert!(reason.contains("claims"), "{reason}")
            }
            other => panic!("expected a typed refusal, got {other:?}"),
        }
        let run = vec![0u8; 1 << 20];
        let packed = snap::raw::Encoder::new().compress_vec(&run).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &packed, 2 << 20).unwrap(),
            run
        );
    }

    /// The window is read from both header forms, as the decoder reads it.
    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_windows_are_read_from_the_frame_header() {
        let magic = 0xFD2F_B528u32.to_le_bytes();
        let frame = |rest: &[u8]| [&magic[..], rest].concat();
        // Window descriptor: exponent 11, mantissa 0 → 2 MiB; mantissa 3.
        assert_eq!(zstd_window(&frame(&[0x00, 11 << 3])), Some(2 << 20));
        assert_eq!(
            zstd_window(&frame(&[0x00, 11 << 3 | 3])),
            Some((2 << 20) + (3 << 18))
        );
        // Single segment, 1-byte content size 200; 2-byte size adds 256.
        assert_eq!(zstd_window(&frame(&[0x20, 200])), Some(200));
        assert_eq!(zstd_window(&frame(&[0x60, 0x00, 0x01])), Some(256 + 256));
        assert_eq!(zstd_window(&frame(&[0x20])), None, "truncated");
        assert_eq!(zstd_window(b"not zstd"), None);
        // A header asking for a 1 GiB window is refused before ruzstd
        // reserves it, whatever follows.
        let huge = frame(&[0x00, 20 << 3, 0, 0, 0]);
        assert_eq!(zstd_window(&huge), Some(1 << 30));
        assert!(matches!(
            decompress(Compression::Zstd, &huge, 64 << 20),
            Err(DecodeError::DecompressLimit { codec: "zstd", .. })
        ));
        // Frames this build writes decode with the kept decoder, twice.
        let input: Vec<u8> = (0..100_000u32).map(|i| (i % 97) as u8).collect();
        let z = compress(Compression::Zstd, &input).unwrap();
        assert!(zstd_window(&z).is_some_and(|w| w <= ZSTD_KEPT_WINDOW));
        for _ in 0..2 {
            assert_eq!(decompress(Compression::Zstd, &z, 1 << 20).unwrap(), input);
        }
    }

    proptest! {
        /// A valid frame header followed by anything: a result or a typed
        /// error, never a panic, never more than the limit.
        #[cfg(feature = "lz4")]
        #[test]
        fn lz4_blocks_after_a_valid_header_never_panic(
            blocks in prop::collection::vec(any::<u8>(), 0..2048),
            limit in 0usize..100_000,
        ) {
            let mut frame = 0x184D_2204u32.to_le_bytes().to_vec();
            frame.extend_from_slice(&[0x60, 0x40, 0x82]);
            frame.extend_from_slice(&blocks);
            if let Some(out) = lz4_frame_direct(&frame, limit) {
                prop_assert!(out.len() <= limit);
            }
            if let Ok(out) = decompress(Compression::Lz4, &frame, limit) {
                prop_assert!(out.len() <= limit);
            }
        }

        #[test]
        fn every_codec_round_trips(data in prop::collection::vec(any::<u8>(), 0..5000), pick in 0usize..5) {
            let built: Vec<Compression> = Compression::ALL.into_iter().filter(|c| c.is_built()).collect();
            let codec = built[pick % built.len()];
            let packed = compress(codec, &data).expect("built");
            prop_assert_eq!(decompress(codec, &packed, 1 << 20).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512), pick in 1usize..5) {
            let _ = decompress(Compression::ALL[pick], &data, 1 << 16);
        }
    }
}
