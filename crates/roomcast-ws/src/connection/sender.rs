//! The sending half: messages to frames.

use bytes::Bytes;

use crate::Role;
use crate::close::CloseFrame;
use crate::deflate::Deflater;
use crate::error::SendError;
use crate::frame::{FrameHeader, OpCode, RSV1, encode_frame};
use crate::message::Message;
use crate::outbox::Outbox;

/// Encodes what the application sends, masking it when the role requires, and refuses
/// what the protocol forbids (data after a close, oversized control frames, fragments out
/// of order).
#[derive(Debug)]
pub struct Sender {
    role: Role,
    close_sent: bool,
    /// A fragmented message is being sent.
    fragmenting: bool,
    /// permessage-deflate, once negotiated, and the size below which a message goes
    /// uncompressed.
    deflater: Option<(Deflater, usize)>,
    /// The fragmented message being sent is compressed.
    compressing: bool,
}

impl Sender {
    /// A sender for `role`.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            close_sent: false,
            fragmenting: false,
            deflater: None,
            compressing: false,
        }
    }

    /// Compresses messages of at least `min_size` bytes from now on (permessage-deflate
    /// was agreed); shorter ones, and control frames, go as they are.
    pub fn set_deflater(&mut self, deflater: Deflater, min_size: usize) {
        self.deflater = Some((deflater, min_size));
    }

    /// An encoded frame (a server's shared one) compressed by this connection's
    /// deflater, to be queued next: `None` without permessage-deflate, during a
    /// fragmented message, or for a frame [`crate::deflate::compress_frame`] leaves as
    /// it is.
    pub fn compress_frame(&mut self, frame: &[u8]) -> Option<Bytes> {
        let (deflater, min_size) = self.deflater.as_mut()?;
        if self.fragmenting || self.close_sent {
            return None;
        }
        crate::deflate::compress_frame(frame, deflater, *min_size)
    }

    /// With a deflater that resets after every message: its window and the size below
    /// which messages go uncompressed. Frames compressed once for many such connections
    /// ([`crate::deflate::compress_frame_shared`]) may be queued to this one as they are.
    pub fn shared_compression(&self) -> Option<(u8, usize)> {
        match &self.deflater {
            Some((d, min)) if d.resets_each_message() => Some((d.window_bits(), *min)),
            _ => None,
        }
    }

    /// Gives the deflater's state back while idle (see [`Deflater::release`]).
    pub fn release_compressor(&mut self) -> bool {
        match &mut self.deflater {
            Some((d, _)) if !self.fragmenting => d.release(),
            _ => false,
        }
    }

    /// Whether a close frame has been queued.
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// Queues a message or control frame into `out`.
    pub fn send(&mut self, msg: Message, out: &mut Outbox) -> Result<(), SendError> {
        match msg {
            Message::Text(t) => self.send_frame(OpCode::Text, t.into_bytes(), true, out),
            Message::Binary(b) => self.send_frame(OpCode::Binary, b, true, out),
            Message::Ping(p) => self.send_frame(OpCode::Ping, p, true, out),
            Message::Pong(p) => self.send_frame(OpCode::Pong, p, true, out),
            Message::Close(frame) => self.close(frame, out),
        }
    }

    /// Queues one frame: a whole message (`fin`), a fragment (`Text`/`Binary` with
    /// `fin = false`, then `Continuation`s, the last with `fin`), or a ping or pong.
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        fin: bool,
        out: &mut Outbox,
    ) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        match opcode {
            OpCode::Ping | OpCode::Pong => {
                if payload.len() > 125 {
                    return Err(SendError::ControlFrameTooLong(payload.len()));
                }
                if !fin {
                    return Err(SendError::FragmentOutOfSequence(
                        "control frames cannot be fragmented",
                    ));
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.fragmenting {
                    return Err(SendError::FragmentOutOfSequence(
                        "a fragmented message is in progress",
                    ));
                }
                self.fragmenting = !fin;
                // A whole message is compressed from its size; a fragmented one always
                // (its size is not known yet).
                self.compressing = self
                    .deflater
                    .as_ref()
                    .is_some_and(|(_, min)| !fin || payload.len() >= *min);
            }
            OpCode::Continuation => {
                if !self.fragmenting {
                    return Err(SendError::FragmentOutOfSequence(
                        "no fragmented message to continue",
                    ));
                }
                self.fragmenting = !fin;
            }
            OpCode::Close => return self.close(CloseFrame::parse(payload).ok().flatten(), out),
        }
        let mut header = FrameHeader {
            fin,
            ..FrameHeader::new(opcode, 0)
        };
        let data_frame = matches!(opcode, OpCode::Text | OpCode::Binary | OpCode::Continuation);
        let payload = match &mut self.deflater {
            Some((deflater, _)) if data_frame && self.compressing => {
                // "Set the 'Per-Message Compressed' bit of the first frame to 1."
                if opcode != OpCode::Continuation {
                    header.rsv = RSV1;
                }
                let mut wire = Vec::with_capacity(payload.len() / 2 + 16);
                deflater.compress(&payload, fin, &mut wire);
                Bytes::from(wire)
            }
            _ => payload,
        };
        self.encode(header, payload, out);
        Ok(())
    }

    /// Queues a close frame; `None` sends one without a body.
    pub fn close(&mut self, frame: Option<CloseFrame>, out: &mut Outbox) -> Result<(), SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let payload = match &frame {
            Some(f) if !f.code.is_valid_on_wire() => {
                return Err(SendError::InvalidCloseCode(f.code.0));
            }
            Some(f) => f.encode(),
            None => Bytes::new(),
        };
        self.close_sent = true;
        self.encode(FrameHeader::new(OpCode::Close, 0), payload, out);
        Ok(())
    }

    fn encode(&self, header: FrameHeader, payload: Bytes, out: &mut Outbox) {
        // "The masking key is a 32-bit value chosen at random by the client ... the
        // masking key MUST be derived from a strong source of entropy": rand's thread
        // RNG is a CSPRNG seeded from the operating system.
        let mask = self.role.masks_outgoing().then(rand::random::<[u8; 4]>);
        encode_frame(out, header, payload, mask);
    }
}
