//! A WebSocket over one tokio stream, driven by one task.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::WebSocketConfig;
use super::error::Error;
use super::io::{poll_discard, poll_read_into, poll_write_outbox};
use crate::{CloseFrame, Connection, Message, OpCode, Role, State};

/// A WebSocket connection over `S`, after the opening handshake.
///
/// Receiving answers pings and echoes the peer's close on its own; keep calling
/// [`WebSocket::recv`] until it returns `None` so that the closing handshake completes and
/// the transport is closed properly.
#[derive(Debug)]
pub struct WebSocket<S> {
    pub(super) io: S,
    pub(super) conn: Connection,
    pub(super) rbuf: BytesMut,
    pub(super) config: WebSocketConfig,
    pub(super) protocol: Option<String>,
    phase: Phase,
    /// What to report once the closing phase is over: the peer's close or the error.
    outcome: Option<Result<Message, Error>>,
}

#[derive(Debug)]
enum Phase {
    Open,
    /// Flush what is queued, close our side, wait a little for the peer to close theirs.
    Closing {
        shutdown: bool,
        deadline: Option<Pin<Box<Sleep>>>,
    },
    Done,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Runs the protocol over `io`, whose opening handshake is done. `read` holds bytes
    /// already read past the handshake (they are the first frames).
    pub fn from_raw(io: S, role: Role, config: WebSocketConfig, read: BytesMut) -> Self {
        Self {
            io,
            conn: Connection::new(role, config.protocol),
            rbuf: read,
            config,
            protocol: None,
            phase: Phase::Open,
            outcome: None,
        }
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The connection's closing-handshake state.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Receives the next message, ping, pong or close. `None` once the connection is over;
    /// an error is reported once, then `None`.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, msg: impl Into<Message>) -> Result<(), Error> {
        self.conn.send(msg.into())?;
        self.flush().await
    }

    /// Queues a message; writes only once more than
    /// [`WebSocketConfig::write_buffer_limit`] bytes wait. [`WebSocket::recv`] writes what
    /// is queued before it waits for input, so `feed` then `recv` batches replies.
    pub async fn feed(&mut self, msg: impl Into<Message>) -> Result<(), Error> {
        self.conn.send(msg.into())?;
        if self.conn.outbox().len_bytes() > self.config.write_buffer_limit {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends one frame of a fragmented message: `Text` or `Binary` with `fin = false`
    /// first, then `Continuation` frames, the last with `fin = true`.
    pub async fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<(), Error> {
        self.conn.send_frame(opcode, payload.into(), fin)?;
        self.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| poll_write_outbox(&mut self.io, self.conn.outbox(), cx)).await?;
        Ok(())
    }

    /// Closes the connection: sends a close frame, waits (up to
    /// [`WebSocketConfig::close_timeout`]) for the peer's, discarding messages that
    /// arrive meanwhile, and closes the transport.
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.conn.state() == State::Open {
            self.conn.close(frame)?;
        }
        let timeout = self.config.close_timeout;
        let drain = async {
            while let Some(msg) = self.recv().await {
                msg?;
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout("closing handshake")),
        }
    }

    /// Splits into a reader and a writer that can be used from two tasks.
    pub fn split(self) -> (super::WsReader<S>, super::WsWriter<S>) {
        super::split::split(self)
    }

    pub(super) fn into_parts(self) -> (S, Connection, BytesMut, WebSocketConfig) {
        (self.io, self.conn, self.rbuf, self.config)
    }

    /// Polls for the next message (see [`WebSocket::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, Error>>> {
        loop {
            match self.phase {
                Phase::Done => return Poll::Ready(self.outcome.take()),
                Phase::Closing { .. } => {
                    ready!(self.poll_closing(cx));
                    self.phase = Phase::Done;
                    continue;
                }
                Phase::Open => {}
            }
            // Write what is queued (pongs, replies fed earlier) before waiting for input.
            if !self.conn.outbox().is_empty()
                && let Poll::Ready(Err(e)) = poll_write_outbox(&mut self.io, self.conn.outbox(), cx)
            {
                self.finish(Err(e.into()));
                continue;
            }
            match self.conn.receive(&mut self.rbuf) {
                Ok(Some(msg @ Message::Close(_))) => {
                    self.start_closing(Ok(msg));
                    continue;
                }
                Ok(Some(msg)) => return Poll::Ready(Some(Ok(msg))),
                Ok(None) => {}
                Err(e) => {
                    self.start_closing(Err(e.into()));
                    continue;
                }
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                // Between frames: give the buffer back rather than hold it while idle.
                self.rbuf = BytesMut::new();
            }
            match ready!(poll_read_into(
                &mut self.io,
                &mut self.rbuf,
                self.conn.read_hint(),
                cx
            )) {
                Ok(0) => self.finish(Err(Error::AbnormalClosure)),
                Ok(_) => {}
                Err(e) => self.finish(Err(e.into())),
            }
        }
    }

    fn start_closing(&mut self, outcome: Result<Message, Error>) {
        self.outcome = Some(outcome);
        self.phase = Phase::Closing {
            shutdown: false,
            deadline: None,
        };
    }

    fn finish(&mut self, outcome: Result<Message, Error>) {
        self.outcome = Some(outcome);
        self.phase = Phase::Done;
    }

    /// Flushes the close frame (ours or the echo), then closes the transport: the server
    /// (or a failing side) shuts down its half at once and waits for the peer's FIN, so
    /// unread input cannot turn the close into a reset; a client after a clean close
    /// waits for the server to close first (RFC 6455 section 7.1.1). Either wait ends
    /// after [`WebSocketConfig::close_timeout`].
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Phase::Closing { shutdown, deadline } = &mut self.phase else {
            return Poll::Ready(());
        };
        if !self.conn.outbox().is_empty()
            && ready!(poll_write_outbox(&mut self.io, self.conn.outbox(), cx)).is_err()
        {
            return Poll::Ready(());
        }
        let client_waits = !self.conn.should_close_transport();
        if !*shutdown && !client_waits {
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            *shutdown = true;
        }
        let deadline =
            deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(self.config.close_timeout)));
        loop {
            if deadline.as_mut().poll(cx).is_ready() {
                break;
            }
            match ready!(poll_discard(&mut self.io, cx)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !*shutdown {
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            *shutdown = true;
        }
        Poll::Ready(())
    }
}
