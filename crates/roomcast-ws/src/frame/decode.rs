//! The frame decoder: bytes in, unmasked frames out.

use bytes::{Buf, Bytes, BytesMut};

use crate::Role;
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, apply_mask};

/// A complete frame with its payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header as received (its `mask` is the key that was removed).
    pub header: FrameHeader,
    /// The unmasked payload.
    pub payload: Bytes,
}

/// Decodes frames for one side of a connection.
///
/// The decoder is stateful: once a header is complete it is consumed from the buffer and
/// kept here, and the payload is unmasked in place as it arrives, so a large frame is
/// never copied and a partial payload can be inspected ([`FrameDecoder::partial`]) before
/// the frame ends.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    role: Role,
    max_frame_size: usize,
    allowed_rsv: u8,
    partial: Option<Partial>,
}

#[derive(Debug, Clone, Copy)]
struct Partial {
    header: FrameHeader,
    len: usize,
    unmasked: usize,
}

impl FrameDecoder {
    /// A decoder for frames received by `role`, refusing frames over `max_frame_size`.
    pub fn new(role: Role, max_frame_size: usize) -> Self {
        Self {
            role,
            max_frame_size,
            allowed_rsv: 0,
            partial: None,
        }
    }

    /// Allows reserved bits that a negotiated extension defines (e.g. RSV1 for deflate).
    pub fn set_allowed_rsv(&mut self, rsv: u8) {
        self.allowed_rsv = rsv & 0x7;
    }

    /// Decodes the next frame from `buf`. `Ok(None)` means more bytes are needed; what
    /// the decoder could use of `buf` it has taken or unmasked in place.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let p = match &mut self.partial {
            Some(p) => p,
            None => {
                let Some((header, n)) = FrameHeader::parse(buf)? else {
                    return Ok(None);
                };
                let len = self.check(&header)?;
                buf.advance(n);
                self.partial.insert(Partial {
                    header,
                    len,
                    unmasked: 0,
                })
            }
        };
        let avail = buf.len().min(p.len);
        if let Some(key) = p.header.mask {
            apply_mask(&mut buf[p.unmasked..avail], key, p.unmasked);
        }
        p.unmasked = avail;
        if avail < p.len {
            return Ok(None);
        }
        let payload = buf.split_to(p.len).freeze();
        let header = p.header;
        self.partial = None;
        Ok(Some(Frame { header, payload }))
    }

    /// The header of a frame whose payload is still arriving, and how many of its payload
    /// bytes (unmasked, at the front of the buffer given to [`FrameDecoder::decode`]) are
    /// already there.
    pub fn partial(&self) -> Option<(&FrameHeader, usize)> {
        self.partial.as_ref().map(|p| (&p.header, p.unmasked))
    }

    /// How many more bytes the frame in progress needs; 0 between frames. A driver can
    /// size its next read with it.
    pub fn remaining(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.len - p.unmasked)
    }

    /// The role-dependent rules; returns the payload length as a `usize`.
    fn check(&self, h: &FrameHeader) -> Result<usize, ProtocolError> {
        match (self.role.expects_masked(), h.mask.is_some()) {
            // "The server MUST close the connection upon receiving a frame that is not
            // masked."
            (true, false) => return Err(ProtocolError::UnmaskedFrame),
            // "A client MUST close a connection if it detects a masked frame."
            (false, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let bad_rsv = h.rsv & !self.allowed_rsv;
        if bad_rsv != 0 {
            return Err(ProtocolError::NonZeroReservedBits(h.rsv));
        }
        match usize::try_from(h.payload_len) {
            Ok(len) if len <= self.max_frame_size => Ok(len),
            _ => Err(ProtocolError::FrameTooLarge {
                size: h.payload_len,
                limit: self.max_frame_size,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn decode_all(role: Role, bytes: &[u8]) -> Result<Vec<Frame>, ProtocolError> {
        let mut d = FrameDecoder::new(role, 1 << 20);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.decode(&mut buf)? {
            out.push(f);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    #[test]
    fn rfc_masked_hello() {
        let f = decode_all(
            Role::Server,
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(&f[0].payload[..], b"Hello");
        assert_eq!(f[0].header.opcode, OpCode::Text);
    }

    #[test]
    fn rfc_unmasked_fragments() {
        let f = decode_all(
            Role::Client,
            &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f],
        )
        .unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!((&f[0].payload[..], f[0].header.fin), (&b"Hel"[..], false));
        assert_eq!((&f[1].payload[..], f[1].header.fin), (&b"lo"[..], true));
    }

    #[test]
    fn masking_direction_is_enforced() {
        assert_eq!(
            decode_all(Role::Server, &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']),
            Err(ProtocolError::UnmaskedFrame)
        );
        assert_eq!(
            decode_all(Role::Client, &[0x81, 0x80, 1, 2, 3, 4]),
            Err(ProtocolError::MaskedFrame)
        );
    }

    #[test]
    fn reserved_bits_need_an_extension() {
        assert_eq!(
            decode_all(Role::Client, &[0xc1, 0x00]),
            Err(ProtocolError::NonZeroReservedBits(0b100))
        );
        let mut d = FrameDecoder::new(Role::Client, 100);
        d.set_allowed_rsv(0b100);
        assert!(
            d.decode(&mut BytesMut::from(&[0xc1u8, 0x00][..]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn frame_size_limit_is_checked_on_the_header() {
        let mut d = FrameDecoder::new(Role::Client, 1000);
        let mut buf = BytesMut::from(&[0x82u8, 0x7e, 0x03, 0xe9][..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge {
                size: 1001,
                limit: 1000
            })
        );
    }

    #[test]
    fn byte_by_byte_arrival() {
        let wire = [0x82u8, 0xfe, 0x01, 0x00, 9, 8, 7, 6];
        let payload: Vec<u8> = (0..256u32).map(|i| i as u8).collect();
        let mut masked = payload.clone();
        apply_mask(&mut masked, [9, 8, 7, 6], 0);
        let mut all = wire.to_vec();
        all.extend_from_slice(&masked);
        let mut d = FrameDecoder::new(Role::Server, 1 << 20);
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in all.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            match d.decode(&mut buf).unwrap() {
                Some(f) => {
                    assert_eq!(i, all.len() - 1);
                    got = Some(f);
                }
                None => {
                    if i >= wire.len() {
                        let (_, unmasked) = d.partial().unwrap();
                        assert_eq!(&buf[..unmasked], &payload[..unmasked]);
                        assert_eq!(d.remaining(), 256 - unmasked);
                    }
                }
            }
        }
        assert_eq!(&got.unwrap().payload[..], &payload[..]);
    }

    #[test]
    fn only_the_allowed_reserved_bits_pass() {
        let mut d = FrameDecoder::new(Role::Client, 100);
        d.set_allowed_rsv(0b100);
        // RSV2 and RSV3 are still refused when only RSV1 is negotiated.
        for (b0, rsv) in [(0xa1u8, 0b010), (0x91, 0b001), (0xf1, 0b111)] {
            assert_eq!(
                d.decode(&mut BytesMut::from(&[b0, 0x00][..])),
                Err(ProtocolError::NonZeroReservedBits(rsv)),
                "{b0:#x}"
            );
        }
        // Bits above the three reserved ones are ignored.
        d.set_allowed_rsv(0xf8);
        assert_eq!(
            d.decode(&mut BytesMut::from(&[0xc1u8, 0x00][..])),
            Err(ProtocolError::NonZeroReservedBits(0b100))
        );
    }

    #[test]
    fn a_frame_of_exactly_the_size_limit_passes() {
        let mut d = FrameDecoder::new(Role::Client, 1000);
        let mut buf = BytesMut::from(&[0x82u8, 0x7e, 0x03, 0xe8][..]);
        buf.extend_from_slice(&[3; 1000]);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.payload[..], &[3; 1000][..]);
    }
}
