//! Compressing a frame that is already encoded: a server encodes a room's message once
//! for every member ([`crate::frame::encode_shared`]); members that agreed to
//! permessage-deflate get it compressed, once for all of them when their compressors
//! reset after every message (then the output depends on nothing but the message and the
//! window).

use bytes::Bytes;

use super::Deflater;
use crate::frame::{FrameHeader, OpCode, RSV1, encode_shared};

/// `frame` (a whole, unmasked, uncompressed text or binary message, as a server sends)
/// compressed by `deflater` into a new frame with RSV1 set; `None` for any other frame,
/// or a message shorter than `min_size`, which go as they are.
///
/// A deflater with context takeover must be the connection's own, and every message it
/// compresses must be sent, in order: the peer's window then holds what it expects.
pub fn compress_frame(frame: &[u8], deflater: &mut Deflater, min_size: usize) -> Option<Bytes> {
    let (header, at) = FrameHeader::parse(frame).ok()??;
    let whole = header.fin
        && header.rsv == 0
        && header.mask.is_none()
        && matches!(header.opcode, OpCode::Text | OpCode::Binary)
        && (frame.len() - at) as u64 == header.payload_len;
    let payload = &frame[at..];
    if !whole || payload.len() < min_size {
        return None;
    }
    let mut wire = Vec::with_capacity(payload.len() / 2 + 16);
    deflater.compress(payload, true, &mut wire);
    // "Set the 'Per-Message Compressed' bit of the first frame to 1."
    Some(encode_shared(
        FrameHeader {
            rsv: RSV1,
            ..FrameHeader::new(header.opcode, 0)
        },
        &wire,
    ))
}

/// `frame` compressed for every peer that agreed to no context takeover from us with a
/// window of at least `window_bits`: the same bytes for each, so a broadcast compresses
/// once and shares them. The compressor is one kept for this thread.
pub fn compress_frame_shared(frame: &[u8], window_bits: u8, min_size: usize) -> Option<Bytes> {
    compress_frame(frame, &mut Deflater::new(window_bits, true), min_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    fn text_frame(text: &str) -> Bytes {
        encode_shared(FrameHeader::new(OpCode::Text, 0), text.as_bytes())
    }

    fn inflate(frame: &[u8], inflater: &mut Inflater) -> Vec<u8> {
        let (header, at) = FrameHeader::parse(frame).unwrap().unwrap();
        assert_eq!(header.rsv, RSV1);
        assert!(header.fin);
        let mut out = Vec::new();
        inflater
            .inflate(&frame[at..], true, 1 << 20, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_shared_frame_is_the_same_for_everyone_and_reads_back_with_or_without_context() {
        let text = r#"{"type":"message","room":"lobby","data":{"text":"hello, hello, hello"}}"#;
        let frame = text_frame(text);
        let a = compress_frame_shared(&frame, 15, 0).unwrap();
        let b = compress_frame_shared(&frame, 15, 0).unwrap();
        assert_eq!(a, b, "compressed twice, the bytes differ");
        assert!(a.len() < frame.len());
        // A peer's inflater keeps its context or not: either reads it, message after
        // message.
        for keep in [false, true] {
            let mut i = Inflater::new(15, !keep);
            for _ in 0..3 {
                assert_eq!(inflate(&a, &mut i), text.as_bytes());
            }
        }
        // A smaller window reads what was compressed for it.
        let small = compress_frame_shared(&frame, 9, 0).unwrap();
        assert_eq!(
            inflate(&small, &mut Inflater::new(9, true)),
            text.as_bytes()
        );
    }

    #[test]
    fn only_whole_data_frames_at_the_threshold_are_compressed() {
        let frame = text_frame("short");
        assert!(compress_frame_shared(&frame, 15, 6).is_none());
        assert!(compress_frame_shared(&frame, 15, 5).is_some());
        let ping = encode_shared(FrameHeader::new(OpCode::Ping, 0), b"ping");
        assert!(compress_frame_shared(&ping, 15, 0).is_none());
        let part = encode_shared(
            FrameHeader {
                fin: false,
                ..FrameHeader::new(OpCode::Text, 0)
            },
            b"part",
        );
        assert!(compress_frame_shared(&part, 15, 0).is_none());
        assert!(compress_frame_shared(&frame[..3], 15, 0).is_none());
        assert!(compress_frame_shared(&[], 15, 0).is_none());
    }

    #[test]
    fn an_own_deflater_with_context_makes_repeats_smaller() {
        let frame = text_frame(&"a room message, repeated ".repeat(4));
        let mut d = Deflater::new(15, false);
        let mut i = Inflater::new(15, false);
        let first = compress_frame(&frame, &mut d, 0).unwrap();
        let second = compress_frame(&frame, &mut d, 0).unwrap();
        assert!(
            second.len() < first.len(),
            "{} {}",
            first.len(),
            second.len()
        );
        inflate(&first, &mut i);
        assert_eq!(inflate(&second, &mut i), &frame[2..]);
    }
}
