//! Frame opcodes (RFC 6455 section 5.2, "Opcode: 4 bits").

use std::fmt;

/// A frame opcode. Reserved values (3-7 and 0xB-0xF) are not representable: the decoder
/// rejects them while parsing, since "if an unknown opcode is received, the receiving
/// endpoint MUST _Fail the WebSocket Connection_".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// `%x0` denotes a continuation frame.
    Continuation = 0x0,
    /// `%x1` denotes a text frame.
    Text = 0x1,
    /// `%x2` denotes a binary frame.
    Binary = 0x2,
    /// `%x8` denotes a connection close.
    Close = 0x8,
    /// `%x9` denotes a ping.
    Ping = 0x9,
    /// `%xA` denotes a pong.
    Pong = 0xA,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte; `None` for reserved opcodes.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// "Control frames are identified by opcodes where the most significant bit of the
    /// opcode is 1."
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// Text, binary or continuation.
    pub const fn is_data(self) -> bool {
        !self.is_control()
    }
}

impl fmt::Display for OpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_kinds_and_names() {
        let all = [
            (OpCode::Continuation, 0x0, false, "continuation"),
            (OpCode::Text, 0x1, false, "text"),
            (OpCode::Binary, 0x2, false, "binary"),
            (OpCode::Close, 0x8, true, "close"),
            (OpCode::Ping, 0x9, true, "ping"),
            (OpCode::Pong, 0xA, true, "pong"),
        ];
        for (op, bits, control, name) in all {
            assert_eq!(OpCode::from_bits(bits), Some(op));
            assert_eq!(op as u8, bits);
            assert_eq!((op.is_control(), op.is_data()), (control, !control), "{op}");
            assert_eq!(op.to_string(), name);
        }
        for reserved in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(OpCode::from_bits(reserved), None, "{reserved:#x}");
        }
    }
}
