//! The frame header (RFC 6455 section 5.2): parsing and writing.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use crate::error::ProtocolError;
use crate::frame::OpCode;

/// RSV1, the bit permessage-deflate (RFC 7692) uses.
pub const RSV1: u8 = 0b100;
/// RSV2.
pub const RSV2: u8 = 0b010;
/// RSV3.
pub const RSV3: u8 = 0b001;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// "Indicates that this is the final fragment in a message."
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits (`RSV1` = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// "The length of the "Payload data", in bytes."
    pub payload_len: u64,
}

impl FrameHeader {
    /// The largest header: 2 + 8 (64-bit length) + 4 (mask).
    pub const MAX_SIZE: usize = 14;

    /// A final, unmasked header with no reserved bits.
    pub const fn new(opcode: OpCode, payload_len: u64) -> Self {
        Self {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// Parses a header from the front of `buf`: `Ok(None)` if `buf` holds only part of
    /// it, else the header and its length in bytes.
    ///
    /// Rules that hold for every frame whatever the connection's role and settings are
    /// checked here, each as soon as the byte it depends on is available; the decoder
    /// checks the rest (masking direction, negotiated reserved bits, size limits).
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode =
            OpCode::from_bits(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        if opcode.is_control() && !fin {
            // "Control frames themselves MUST NOT be fragmented."
            return Err(ProtocolError::FragmentedControlFrame);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(b) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([b[0], b[1]]) as u64;
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength(len));
                }
                (len, 4)
            }
            127 => {
                let Some(b) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut eight = [0u8; 8];
                eight.copy_from_slice(b);
                let len = u64::from_be_bytes(eight);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthMsbSet);
                }
                if len <= u16::MAX as u64 {
                    return Err(ProtocolError::NonMinimalLength(len));
                }
                (len, 10)
            }
            len => (len as u64, 2),
        };
        if opcode.is_control() && payload_len > 125 {
            // "All control frames MUST have a payload length of 125 bytes or less."
            return Err(ProtocolError::ControlFrameTooLong(payload_len));
        }
        let mask = if masked {
            let Some(b) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        Ok(Some((
            Self {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            at,
        )))
    }

    /// The encoded size of this header.
    pub const fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        if self.mask.is_some() { len + 4 } else { len }
    }

    /// Writes the header, using the minimal length encoding, into `out`; returns the
    /// number of bytes written.
    pub fn write(&self, out: &mut [u8; Self::MAX_SIZE]) -> usize {
        out[0] = (self.fin as u8) << 7 | (self.rsv & 0x7) << 4 | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = match self.payload_len {
            len @ 0..=125 => {
                out[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                out[1] = mask_bit | 126;
                out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                out[1] = mask_bit | 127;
                out[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        FrameHeader::parse(bytes)
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 section 5.7.
        // A single-frame unmasked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x05]).unwrap().unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        // A single-frame masked text message "Hello".
        let (h, n) = parse_all(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        // A fragmented unmasked text message: "Hel" then "lo".
        let (h, _) = parse_all(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let (h, _) = parse_all(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // Unmasked ping with "Hello", masked pong with "Hello".
        assert_eq!(
            parse_all(&[0x89, 0x05]).unwrap().unwrap().0.opcode,
            OpCode::Ping
        );
        assert_eq!(
            parse_all(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d])
                .unwrap()
                .unwrap()
                .0
                .opcode,
            OpCode::Pong
        );
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = parse_all(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        // 64KiB binary message in a single unmasked frame.
        let (h, n) = parse_all(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn partial_headers_need_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for n in 0..full.len() {
            assert_eq!(parse_all(&full[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(parse_all(&full).unwrap().unwrap().1, 14);
    }

    #[test]
    fn rejects_rfc_violations() {
        assert_eq!(parse_all(&[0x83]), Err(ProtocolError::ReservedOpcode(3)));
        assert_eq!(parse_all(&[0x8b]), Err(ProtocolError::ReservedOpcode(0xb)));
        assert_eq!(
            parse_all(&[0x09]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            parse_all(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong(126))
        );
        assert_eq!(
            parse_all(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength(125))
        );
        assert_eq!(
            parse_all(&[0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(ProtocolError::NonMinimalLength(65535))
        );
        assert_eq!(
            parse_all(&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(ProtocolError::LengthMsbSet)
        );
    }

    #[test]
    fn write_round_trips() {
        for len in [0u64, 1, 125, 126, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = FrameHeader {
                    fin: len % 2 == 0,
                    rsv: RSV1,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut out = [0u8; FrameHeader::MAX_SIZE];
                let n = h.write(&mut out);
                assert_eq!(n, h.encoded_len());
                assert_eq!(parse_all(&out[..n]), Ok(Some((h, n))));
            }
        }
    }

    #[test]
    fn lengths_at_each_boundary_parse() {
        // The largest control frame, the smallest 16-bit and 64-bit lengths.
        let (h, n) = parse_all(&[0x89, 125]).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Ping, 125, 2));
        let (h, n) = parse_all(&[0x82, 126, 0, 126]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (126, 4));
        let (h, n) = parse_all(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((h.payload_len, n), (65536, 10));
        let (h, _) = parse_all(&[0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, u64::MAX >> 1, "the largest length allowed");
    }
}
