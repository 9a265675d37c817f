//! The sending half: messages to frames.

use bytes::Bytes;

use crate::Role;
use crate::close::CloseFrame;
use crate::error::SendError;
use crate::frame::{FrameHeader, OpCode, encode_frame};
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
}

impl Sender {
    /// A sender for `role`.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            close_sent: false,
            fragmenting: false,
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
        self.encode(
            FrameHeader {
                fin,
                ..FrameHeader::new(opcode, 0)
            },
            payload,
            out,
        );
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
