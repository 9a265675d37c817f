//! Errors of the frame and message layer, one variant per rule of RFC 6455.

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer, or of a limit we set. Each one fails the
/// connection; [`ProtocolError::close_code`] is the status code to send in the close frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket
    /// Connection_."
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// RSV1-3 "MUST be 0 unless an extension is negotiated that defines meanings for
    /// non-zero values".
    #[error("reserved bits set without a negotiated extension (rsv={0:#05b})")]
    NonZeroReservedBits(u8),
    /// "The server MUST close the connection upon receiving a frame that is not masked."
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// "A client MUST close a connection if it detects a masked frame."
    #[error("server frame is masked")]
    MaskedFrame,
    /// "All control frames MUST have a payload length of 125 bytes or less."
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// "Control frames themselves MUST NOT be fragmented."
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// "The minimal number of bytes MUST be used to encode the length."
    #[error("payload length {0} is not minimally encoded")]
    NonMinimalLength(u64),
    /// "The most significant bit MUST be 0" in a 64-bit length.
    #[error("64-bit payload length has its most significant bit set")]
    LengthMsbSet,
    /// permessage-deflate: "the 'Per-Message Compressed' bit ... MUST NOT be set" on
    /// control frames or on the frames of a message after its first (RFC 7692 section 6).
    #[error("RSV1 set on a control frame or a continuation")]
    MisplacedCompressedBit,
    /// permessage-deflate: the compressed data of a message is not valid DEFLATE.
    #[error("invalid compressed message: {0}")]
    Inflate(String),
    /// A continuation frame with no fragmented message to continue.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// "The fragments of one message MUST NOT be interleaved between the fragments of
    /// another message unless an extension has been negotiated."
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A close body of one byte: the status code needs two.
    #[error("close frame body of one byte")]
    CloseBodyTooShort,
    /// A close status code that may not be sent (section 7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// "When an endpoint is to interpret a byte stream as UTF-8 but finds that the byte
    /// stream is not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket
    /// Connection_" (section 8.1), with 1007.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A frame larger than the configured `max_frame_size`.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The frame's payload length.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
    /// A message larger than the configured `max_message_size`.
    #[error("message of at least {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// How large the message had grown, at least.
        size: u64,
        /// The configured limit.
        limit: usize,
    },
}

impl ProtocolError {
    /// The status code for the close frame that fails the connection.
    pub fn close_code(&self) -> CloseCode {
        CloseCode::from(self)
    }
}

impl From<&ProtocolError> for CloseCode {
    fn from(e: &ProtocolError) -> Self {
        match e {
            ProtocolError::InvalidUtf8 | ProtocolError::Inflate(_) => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why a message could not be queued for sending. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent: "the endpoint MUST NOT send any more data frames".
    #[error("the connection is closing: a close frame was already sent")]
    Closed,
    /// Ping and pong payloads, like all control frames, are at most 125 bytes.
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(usize),
    /// Only codes that [`CloseCode::is_valid_on_wire`] accepts can be sent.
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A continuation frame with no fragmented message open, or a new message while one is.
    #[error("fragment out of sequence: {0}")]
    FragmentOutOfSequence(&'static str),
}
