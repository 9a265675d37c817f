//! The receiving half: frames to messages.

use bytes::{Bytes, BytesMut};

use crate::close::CloseFrame;
use crate::deflate::{InflateError, Inflater};
use crate::error::ProtocolError;
use crate::frame::{Frame, FrameDecoder, FrameHeader, OpCode, RSV1};
use crate::message::{Message, Utf8Bytes};
use crate::utf8::{InvalidUtf8, Utf8Validator};
use crate::{Config, Role};

impl From<InvalidUtf8> for ProtocolError {
    fn from(_: InvalidUtf8) -> Self {
        ProtocolError::InvalidUtf8
    }
}

/// Turns received bytes into messages: reassembles fragments, validates text as it
/// arrives and enforces the message size limit. It answers nothing itself; see
/// [`crate::Connection`] for the half that replies to pings and closes.
#[derive(Debug)]
pub struct Receiver {
    decoder: FrameDecoder,
    max_message_size: usize,
    /// A fragmented message in progress.
    message: Option<Assembly>,
    utf8: Utf8Validator,
    /// Whether the current frame's header has been checked already.
    frame_started: bool,
    /// Whether the current frame carries text.
    frame_is_text: bool,
    /// Payload bytes of the current frame already fed to `utf8`.
    utf8_checked: usize,
    close_received: bool,
    /// permessage-deflate, once negotiated.
    inflater: Option<Inflater>,
    /// The message in progress is compressed (its first frame had RSV1).
    compressed: bool,
    /// What a compressed message has inflated to so far.
    inflated: Vec<u8>,
}

#[derive(Debug)]
struct Assembly {
    text: bool,
    buf: BytesMut,
}

impl Receiver {
    /// A receiver for frames arriving at `role`.
    pub fn new(role: Role, config: &Config) -> Self {
        Self {
            decoder: FrameDecoder::new(role, config.max_frame_size),
            max_message_size: config.max_message_size,
            message: None,
            utf8: Utf8Validator::new(),
            frame_started: false,
            frame_is_text: false,
            utf8_checked: 0,
            close_received: false,
            inflater: None,
            compressed: false,
            inflated: Vec::new(),
        }
    }

    /// Takes compressed messages from now on (permessage-deflate was agreed): RSV1 is
    /// allowed on the first frame of a message, which is then inflated with `inflater`.
    pub fn set_inflater(&mut self, inflater: Inflater) {
        self.decoder.set_allowed_rsv(RSV1);
        self.inflater = Some(inflater);
    }

    /// The frame decoder, e.g. to allow reserved bits for a negotiated extension.
    pub fn decoder_mut(&mut self) -> &mut FrameDecoder {
        &mut self.decoder
    }

    /// Whether a close frame was received. Nothing is decoded after it: "the endpoint
    /// MUST NOT send any more data frames" after its Close.
    pub fn is_close_received(&self) -> bool {
        self.close_received
    }

    /// How many more bytes the frame in progress needs (0 between frames).
    pub fn read_hint(&self) -> usize {
        self.decoder.remaining()
    }

    /// Decodes the next message or control frame from `buf`; `Ok(None)` means more bytes
    /// are needed. An error means the connection must be failed with
    /// [`ProtocolError::close_code`].
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        if self.close_received {
            buf.clear();
            return Ok(None);
        }
        loop {
            match self.decoder.decode(buf)? {
                Some(frame) => {
                    self.start_frame(&frame.header)?;
                    if let Some(msg) = self.finish_frame(frame)? {
                        return Ok(Some(msg));
                    }
                }
                None => {
                    // Check what has arrived of the frame so far: fail fast.
                    if let Some((header, unmasked)) = self.decoder.partial() {
                        let header = *header;
                        self.start_frame(&header)?;
                        if self.frame_is_text && unmasked > self.utf8_checked {
                            self.utf8.feed(&buf[self.utf8_checked..unmasked])?;
                            self.utf8_checked = unmasked;
                        }
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Sequence and size rules, checked once per frame as soon as its header is known.
    fn start_frame(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
        if self.frame_started {
            return Ok(());
        }
        let rsv1 = h.rsv & RSV1 != 0;
        if rsv1 && !matches!(h.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ProtocolError::MisplacedCompressedBit);
        }
        match h.opcode {
            OpCode::Continuation => {
                let Some(m) = &self.message else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                // A compressed message is held to the limit by what it inflates to, as it
                // inflates; a frame's compressed length says nothing of that.
                let so_far = if self.compressed {
                    self.inflated.len() as u64
                } else {
                    m.buf.len() as u64 + h.payload_len
                };
                self.check_size(so_far)?;
                // A compressed message's text is checked once inflated.
                self.frame_is_text = m.text && !self.compressed;
            }
            OpCode::Text | OpCode::Binary => {
                // "The fragments of one message MUST NOT be interleaved between the
                // fragments of another message unless an extension has been negotiated
                // that can interpret the interleaving."
                if self.message.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                self.check_size(h.payload_len)?;
                self.compressed = rsv1;
                if h.opcode == OpCode::Text {
                    self.utf8.reset();
                }
                self.frame_is_text = h.opcode == OpCode::Text && !rsv1;
            }
            // "Control frames MAY be injected in the middle of a fragmented message."
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.frame_is_text = false,
        }
        self.frame_started = true;
        self.utf8_checked = 0;
        Ok(())
    }

    fn check_size(&self, size: u64) -> Result<(), ProtocolError> {
        if size > self.max_message_size as u64 {
            return Err(ProtocolError::MessageTooLarge {
                size,
                limit: self.max_message_size,
            });
        }
        Ok(())
    }

    fn finish_frame(&mut self, frame: Frame) -> Result<Option<Message>, ProtocolError> {
        let Frame { header, payload } = frame;
        self.frame_started = false;
        if self.frame_is_text {
            self.utf8.feed(&payload[self.utf8_checked..])?;
        }
        if self.compressed
            && matches!(
                header.opcode,
                OpCode::Text | OpCode::Binary | OpCode::Continuation
            )
        {
            return self.finish_compressed(header, &payload);
        }
        match header.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload))),
            OpCode::Pong => Ok(Some(Message::Pong(payload))),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                self.close_received = true;
                self.message = None;
                Ok(Some(Message::Close(frame)))
            }
            OpCode::Text | OpCode::Binary if header.fin => self
                .complete(header.opcode == OpCode::Text, payload)
                .map(Some),
            OpCode::Text | OpCode::Binary => {
                let mut buf = BytesMut::with_capacity(payload.len());
                buf.extend_from_slice(&payload);
                self.message = Some(Assembly {
                    text: header.opcode == OpCode::Text,
                    buf,
                });
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(m) = &mut self.message else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                m.buf.extend_from_slice(&payload);
                if !header.fin {
                    return Ok(None);
                }
                let Some(Assembly { text, buf }) = self.message.take() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                self.complete(text, buf.freeze()).map(Some)
            }
        }
    }

    /// A frame of a compressed message: inflated as it comes (the limit counts what it
    /// inflates to), its text checked as it inflates, the message complete at `fin`.
    fn finish_compressed(
        &mut self,
        header: FrameHeader,
        payload: &[u8],
    ) -> Result<Option<Message>, ProtocolError> {
        let text = match header.opcode {
            OpCode::Continuation => self.message.as_ref().is_some_and(|m| m.text),
            opcode => opcode == OpCode::Text,
        };
        let Some(inflater) = self.inflater.as_mut() else {
            return Err(ProtocolError::NonZeroReservedBits(header.rsv));
        };
        let before = self.inflated.len();
        let limit = self.max_message_size;
        inflater
            .inflate(payload, header.fin, limit, &mut self.inflated)
            .map_err(|e| match e {
                InflateError::TooLarge { limit } => ProtocolError::MessageTooLarge {
                    size: limit as u64 + 1,
                    limit,
                },
                InflateError::Corrupt(why) => ProtocolError::Inflate(why),
            })?;
        if text {
            self.utf8.feed(&self.inflated[before..])?;
        }
        if !header.fin {
            if header.opcode != OpCode::Continuation {
                // The fragments' sequence is tracked as for any message; the bytes are
                // in `inflated`.
                self.message = Some(Assembly {
                    text,
                    buf: BytesMut::new(),
                });
            }
            return Ok(None);
        }
        self.message = None;
        self.compressed = false;
        let whole = Bytes::from(std::mem::take(&mut self.inflated));
        self.complete(text, whole).map(Some)
    }

    fn complete(&mut self, text: bool, payload: Bytes) -> Result<Message, ProtocolError> {
        if text {
            self.utf8.finish()?;
            Ok(Message::Text(Utf8Bytes::from_validated(payload)))
        } else {
            Ok(Message::Binary(payload))
        }
    }
}
