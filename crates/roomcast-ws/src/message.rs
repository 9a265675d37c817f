//! Messages: what the application sends and receives.

use std::fmt;

use bytes::Bytes;

use crate::close::CloseFrame;

/// Bytes that are known to be valid UTF-8: the payload of a text message.
///
/// Received text is validated once, as it arrives ([`crate::utf8`]); the type keeps that
/// fact so the application need not check again. [`Utf8Bytes::as_str`] runs a SIMD
/// re-check instead of an `unsafe` unchecked conversion, since the crate forbids `unsafe`
/// outside of what a benchmark proves necessary (it costs well under a nanosecond per
/// hundred bytes).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// A constant string.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Every constructor validates, so this cannot fail; an empty string is the
        // harmless answer should that invariant ever be broken.
        simdutf8::basic::from_utf8(&self.0).unwrap_or_default()
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying bytes (cheap: reference counted).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Wraps bytes already validated by this crate.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Self(bytes)
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = simdutf8::basic::Utf8Error;
    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        simdutf8::basic::from_utf8(&bytes)?;
        Ok(Self(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(s: Utf8Bytes) -> Self {
        s.0
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

/// A WebSocket message, or a control frame, as received or to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (opcode 0x1 and its continuations), always valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message (opcode 0x2 and its continuations).
    Binary(Bytes),
    /// A ping, at most 125 bytes of application data. Received pings are answered by the
    /// connection itself; they are reported so the application can see them.
    Ping(Bytes),
    /// A pong, at most 125 bytes.
    Pong(Bytes),
    /// A close frame; `None` when it had no body (status 1005 on the receiving side).
    Close(Option<CloseFrame>),
}

impl Message {
    /// A text message.
    pub fn text(s: impl Into<Utf8Bytes>) -> Self {
        Self::Text(s.into())
    }

    /// A binary message.
    pub fn binary(b: impl Into<Bytes>) -> Self {
        Self::Binary(b.into())
    }

    /// Whether this is a text or binary message (not a control frame).
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Text(_) | Self::Binary(_))
    }

    /// The payload of a data message, ping or pong; empty for close.
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::Text(t) => t.as_bytes(),
            Self::Binary(b) | Self::Ping(b) | Self::Pong(b) => b,
            Self::Close(_) => &[],
        }
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Self::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Self::Text(s.into())
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(b.into())
    }
}
