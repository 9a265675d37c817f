//! Close codes and close frames (RFC 6455 sections 5.5.1 and 7.4).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::message::Utf8Bytes;

/// A close status code (RFC 6455 section 7.4).
///
/// Any `u16` can be held, so that a received code can be reported as it was; whether a
/// code may appear on the wire is [`CloseCode::is_valid_on_wire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose for which the connection was established has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: an endpoint is going away, such as a server going down.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: an endpoint is terminating the connection due to a protocol error.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: an endpoint received a type of data it cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1005: no status code was present. Never sent on the wire.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection was closed without a close frame. Never sent on the wire.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: data within a message was not consistent with its type (e.g. invalid UTF-8).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message is too big to process.
    pub const TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (IANA registry).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: bad gateway (IANA registry).
    pub const BAD_GATEWAY: Self = Self(1014);

    /// Whether an endpoint may send this code, and so whether a received one is valid.
    ///
    /// 1000-1003 and 1007-1011 are defined by RFC 6455, 1012-1014 were registered with
    /// IANA since; 1004 is reserved, and 1005, 1006 and 1015 "MUST NOT be set as a status
    /// code in a Close control frame by an endpoint". 0-999 are "not used", 1016-2999 are
    /// reserved for future revisions, 3000-3999 are registered for libraries and
    /// frameworks and 4000-4999 are for private use.
    pub const fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

/// The body of a close frame: a status code and a UTF-8 reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most [`CloseFrame::MAX_REASON`] bytes of UTF-8.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// "All control frames MUST have a payload length of 125 bytes or less", two of which
    /// hold the code.
    pub const MAX_REASON: usize = 123;

    /// A close frame with a code and a reason. A reason longer than
    /// [`CloseFrame::MAX_REASON`] bytes is cut at the last character boundary that fits.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        let reason: Utf8Bytes = reason.into();
        let reason = if reason.len() > Self::MAX_REASON {
            let s = reason.as_str();
            let mut end = Self::MAX_REASON;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Utf8Bytes::from(&s[..end])
        } else {
            reason
        };
        Self { code, reason }
    }

    /// Parses a received close payload. `Ok(None)` means the frame had no body.
    ///
    /// "If there is a body, the first two bytes of the body MUST be a 2-byte unsigned
    /// integer (in network byte order) representing a status code", and the rest "is not
    /// guaranteed to be human readable" but is UTF-8 (section 5.5.1).
    pub fn parse(payload: Bytes) -> Result<Option<Self>, ProtocolError> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(ProtocolError::CloseBodyTooShort),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_valid_on_wire() {
                    return Err(ProtocolError::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Some(Self { code, reason }))
            }
        }
    }

    /// The wire form of this body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + self.reason.len());
        out.put_u16(self.code.0);
        out.extend_from_slice(self.reason.as_bytes());
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn parse_bodies() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[3])),
            Err(ProtocolError::CloseBodyTooShort)
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, b'o', b'k'])),
            Ok(Some(CloseFrame::new(CloseCode::NORMAL, "ok")))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xed])),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            CloseFrame::parse(Bytes::from_static(&[0x03, 0xe8, 0xff])),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn long_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let frame = CloseFrame::new(CloseCode::NORMAL, reason.as_str());
        assert_eq!(frame.reason.len(), 122);
        assert_eq!(frame.encode().len(), 124);
    }
}
