//! Any byte stream, in any chunking, through the frame decoder: frames or
//! typed errors, never a panic or an allocation beyond the cap.
#![no_main]
use bytes::BytesMut;
use kafka_wire::frame::FrameDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else { return };
    let decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.len() <= 64 * 1024),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.capacity() <= 4 * 64 * 1024 + 2 * 1024 * 1024);
    }
});
