//! The protocol state machine of one connection, without I/O.

mod receiver;
mod sender;

use bytes::{Bytes, BytesMut};

pub use receiver::Receiver;
pub use sender::Sender;

use crate::close::CloseFrame;
use crate::error::{ProtocolError, SendError};
use crate::frame::OpCode;
use crate::message::{Message, Utf8Bytes};
use crate::outbox::Outbox;
use crate::{Config, Role};

/// Where a connection stands in its closing handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// Both close frames have been exchanged. "After both sending and receiving a Close
    /// message, an endpoint considers the WebSocket connection closed and MUST close the
    /// underlying TCP connection": the server at once, the client after waiting a little
    /// for the server to do it first (section 7.1.1).
    Closed,
    /// The connection failed on a protocol error; a close frame with the reason is queued
    /// when one could still be sent. Flush it, then close the TCP connection.
    Failed,
}

/// One WebSocket connection: a [`Receiver`] and a [`Sender`] joined by the rules that tie
/// them together. Pings are answered, a close is echoed, and a protocol error queues the
/// close frame that fails the connection. A driver feeds it bytes with
/// [`Connection::receive`] and writes out what [`Connection::outbox`] holds.
///
/// ```
/// use bytes::BytesMut;
/// use roomcast_ws::{Config, Connection, Message, Role};
///
/// let mut server = Connection::new(Role::Server, Config::default());
/// // A masked "Hello" from a client (RFC 6455 section 5.7).
/// let mut input = BytesMut::from(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58][..]);
/// let msg = server.receive(&mut input).unwrap().unwrap();
/// assert_eq!(msg, Message::text("Hello"));
/// server.send(msg).unwrap();
/// let wire: Vec<u8> = server.outbox().iter().flat_map(|b| b.to_vec()).collect();
/// assert_eq!(wire, [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
/// ```
#[derive(Debug)]
pub struct Connection {
    role: Role,
    rx: Receiver,
    tx: Sender,
    out: Outbox,
    state: State,
}

impl Connection {
    /// A connection whose opening handshake is done.
    pub fn new(role: Role, config: Config) -> Self {
        Self {
            role,
            rx: Receiver::new(role, &config),
            tx: Sender::new(role),
            out: Outbox::new(),
            state: State::Open,
        }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The closing-handshake state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the TCP connection should now be closed by us, once the outbox is flushed:
    /// the server after the closing handshake, either side after a failure.
    pub fn should_close_transport(&self) -> bool {
        match self.state {
            State::Failed => true,
            State::Closed => self.role == Role::Server,
            State::Open | State::CloseSent => false,
        }
    }

    /// Bytes waiting to be written.
    pub fn outbox(&mut self) -> &mut Outbox {
        &mut self.out
    }

    /// How many more bytes the frame being received needs (0 between frames).
    pub fn read_hint(&self) -> usize {
        self.rx.read_hint()
    }

    /// Runs permessage-deflate from now on, as agreed in the opening handshake
    /// ([`crate::deflate::negotiate`] or [`crate::deflate::accepted`]): messages of at
    /// least `ours.min_size` bytes are sent compressed, compressed ones are taken.
    pub fn set_deflate(
        &mut self,
        agreed: &crate::deflate::Params,
        ours: &crate::deflate::DeflateConfig,
    ) {
        let (inflater, deflater) = crate::deflate::codecs(self.role, agreed);
        self.rx.set_inflater(inflater);
        self.tx.set_deflater(deflater, ours.min_size);
    }

    /// An encoded frame compressed by this connection's deflater, to be queued next
    /// (see [`Sender::compress_frame`]).
    pub fn compress_frame(&mut self, frame: &[u8]) -> Option<Bytes> {
        self.tx.compress_frame(frame)
    }

    /// The window and threshold of a deflater that resets after every message (see
    /// [`Sender::shared_compression`]).
    pub fn shared_compression(&self) -> Option<(u8, usize)> {
        self.tx.shared_compression()
    }

    /// Gives the compression state of an idle connection back: the deflater's always
    /// (see [`crate::deflate::Deflater::release`]); the inflater holds none between
    /// messages unless the peer keeps its context, which it must then keep too.
    pub fn release_compressor(&mut self) -> bool {
        self.tx.release_compressor()
    }

    /// The receiving half, e.g. to allow reserved bits for an extension.
    pub fn receiver_mut(&mut self) -> &mut Receiver {
        &mut self.rx
    }

    /// Decodes the next message from `buf`; `Ok(None)` means more bytes are needed.
    ///
    /// A ping is answered with a pong carrying the same payload ("Upon receipt of a Ping
    /// frame, an endpoint MUST send a Pong frame in response ... unless it already
    /// received a Close frame"), a close frame is echoed with its status code, and both
    /// are reported too. After a close or an error nothing more is decoded.
    pub fn receive(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        if matches!(self.state, State::Closed | State::Failed) {
            buf.clear();
            return Ok(None);
        }
        let received = self.rx.receive(buf);
        reply(
            &received,
            &mut self.tx,
            &mut self.out,
            self.state == State::Open,
        );
        match &received {
            Err(_) => self.state = State::Failed,
            Ok(Some(Message::Close(_))) => self.state = State::Closed,
            _ => {}
        }
        received
    }

    /// Takes the connection apart, for drivers that read and write from different tasks.
    /// The rules that tie the halves together are then the driver's to apply, with
    /// [`reply`].
    pub fn into_parts(self) -> (Receiver, Sender, Outbox) {
        (self.rx, self.tx, self.out)
    }

    /// Queues a message, ping, pong or close frame.
    pub fn send(&mut self, msg: Message) -> Result<(), SendError> {
        match msg {
            Message::Close(frame) => self.close(frame),
            msg => {
                self.check_open()?;
                self.tx.send(msg, &mut self.out)
            }
        }
    }

    /// Queues one frame of a fragmented message (see [`Sender::send_frame`]).
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: Bytes,
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_open()?;
        self.tx.send_frame(opcode, payload, fin, &mut self.out)
    }

    /// Starts the closing handshake: queues a close frame and waits for the peer's.
    pub fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), SendError> {
        self.check_open()?;
        self.tx.close(frame, &mut self.out)?;
        self.state = State::CloseSent;
        Ok(())
    }

    /// Fails the connection from our side (e.g. a timeout): queues a close frame with
    /// `frame` if none was sent, and moves to [`State::Failed`].
    pub fn abort(&mut self, frame: CloseFrame) {
        if !self.tx.is_close_sent() {
            let _ = self.tx.close(Some(frame), &mut self.out);
        }
        self.state = State::Failed;
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.state {
            State::Open => Ok(()),
            _ => Err(SendError::Closed),
        }
    }
}

/// Queues what a received event requires of the sending half: "upon receipt of a Ping
/// frame, an endpoint MUST send a Pong frame in response ... unless it already received a
/// Close frame" (sent only while `open`, i.e. before our own close); "if an endpoint
/// receives a Close frame and did not previously send a Close frame, the endpoint MUST
/// send a Close frame in response ... it typically echos the status code it received";
/// and a protocol error fails the connection with a close frame giving its code and
/// reason.
pub fn reply(
    received: &Result<Option<Message>, ProtocolError>,
    tx: &mut Sender,
    out: &mut Outbox,
    open: bool,
) {
    match received {
        Ok(Some(Message::Ping(payload))) if open => {
            // Cannot fail: the payload came in a valid control frame. At most one pong
            // waits unbegun (`Outbox::push_pong`): a peer's ping flood cannot grow it.
            let mut pong = Outbox::new();
            let _ = tx.send_frame(OpCode::Pong, payload.clone(), true, &mut pong);
            for frame in pong.queue {
                out.push_pong(frame);
            }
        }
        Ok(Some(Message::Close(frame))) if !tx.is_close_sent() => {
            let echo = frame.as_ref().map(|f| CloseFrame {
                code: f.code,
                reason: Utf8Bytes::default(),
            });
            let _ = tx.close(echo, out);
        }
        Err(e) if !tx.is_close_sent() => {
            let _ = tx.close(Some(CloseFrame::new(e.close_code(), e.to_string())), out);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
