//! The frame encoder.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::{FrameHeader, apply_mask};
use crate::outbox::Outbox;

/// Unmasked payloads up to this size are copied next to their header so the frame is one
/// buffer (one `iovec`); larger ones are queued as a second, shared buffer.
pub const COPY_THRESHOLD: usize = 1024;

/// Queues a frame: `header` (whose `payload_len` and `mask` are taken from the arguments)
/// and `payload`. With a mask the payload is copied and masked; without one it is shared.
pub fn encode_frame(
    out: &mut Outbox,
    mut header: FrameHeader,
    payload: Bytes,
    mask: Option<[u8; 4]>,
) {
    header.payload_len = payload.len() as u64;
    header.mask = mask;
    let mut head = [0u8; FrameHeader::MAX_SIZE];
    let n = header.write(&mut head);
    match mask {
        Some(key) => {
            let mut buf = BytesMut::with_capacity(n + payload.len());
            buf.put_slice(&head[..n]);
            buf.put_slice(&payload);
            apply_mask(&mut buf[n..], key, 0);
            out.push(buf.freeze());
        }
        None if payload.len() <= COPY_THRESHOLD => {
            let mut buf = BytesMut::with_capacity(n + payload.len());
            buf.put_slice(&head[..n]);
            buf.put_slice(&payload);
            out.push(buf.freeze());
        }
        None => {
            out.push(Bytes::copy_from_slice(&head[..n]));
            out.push(payload);
        }
    }
}

/// One unmasked frame as a single buffer: what a server sends, identical for every
/// recipient, so a broadcast can encode once and queue the same `Bytes` to each
/// (RFC 6455 section 5.1: "A server MUST NOT mask any frames that it sends").
pub fn encode_shared(header: FrameHeader, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        payload_len: payload.len() as u64,
        mask: None,
        ..header
    };
    let mut head = [0u8; FrameHeader::MAX_SIZE];
    let n = header.write(&mut head);
    let mut buf = BytesMut::with_capacity(n + payload.len());
    buf.put_slice(&head[..n]);
    buf.put_slice(payload);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn flat(out: &Outbox) -> Vec<u8> {
        out.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn rfc_vectors() {
        let mut out = Outbox::default();
        encode_frame(
            &mut out,
            FrameHeader::new(OpCode::Text, 0),
            Bytes::from_static(b"Hello"),
            None,
        );
        assert_eq!(flat(&out), [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);

        let mut out = Outbox::default();
        encode_frame(
            &mut out,
            FrameHeader::new(OpCode::Text, 0),
            Bytes::from_static(b"Hello"),
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            flat(&out),
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );

        let mut out = Outbox::default();
        encode_frame(
            &mut out,
            FrameHeader::new(OpCode::Binary, 0),
            Bytes::from(vec![0u8; 65536]),
            None,
        );
        let bytes = flat(&out);
        assert_eq!(&bytes[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(bytes.len(), 10 + 65536);
        assert_eq!(out.len(), 2, "large payloads are shared, not copied");
    }

    #[test]
    fn shared_frame_matches_encoder() {
        let payload = Bytes::from_static(b"broadcast");
        let mut out = Outbox::default();
        encode_frame(
            &mut out,
            FrameHeader::new(OpCode::Binary, 0),
            payload.clone(),
            None,
        );
        assert_eq!(
            flat(&out),
            &encode_shared(FrameHeader::new(OpCode::Binary, 0), &payload)[..]
        );
    }

    #[test]
    fn small_payloads_share_one_buffer_with_their_header() {
        for (len, buffers) in [(0, 1), (5, 1), (COPY_THRESHOLD, 1), (COPY_THRESHOLD + 1, 2)] {
            let mut out = Outbox::default();
            let payload = Bytes::from(vec![9u8; len]);
            encode_frame(&mut out, FrameHeader::new(OpCode::Binary, 0), payload, None);
            assert_eq!(out.len(), buffers, "{len} bytes");
            let wire = flat(&out);
            let head = FrameHeader::new(OpCode::Binary, len as u64).encoded_len();
            assert_eq!(wire.len(), head + len);
            assert!(wire[head..].iter().all(|&b| b == 9));
        }
        // A masked payload is copied (to be masked) whatever its size.
        let mut out = Outbox::default();
        let payload = Bytes::from(vec![0u8; COPY_THRESHOLD + 1]);
        encode_frame(
            &mut out,
            FrameHeader::new(OpCode::Binary, 0),
            payload,
            Some([1, 2, 3, 4]),
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn shared_frames_are_never_masked() {
        let header = FrameHeader {
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::new(OpCode::Text, 99)
        };
        assert_eq!(&encode_shared(header, b"hi")[..], [0x81, 0x02, b'h', b'i']);
    }
}
