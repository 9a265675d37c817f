//! A WebSocket split into a reader and a writer for two tasks.
//!
//! The reader owns the read half and the receiving state; the writer half, the sending
//! state and the outbox sit behind an async mutex that the [`WsWriter`] takes to send and
//! the [`WsReader`] takes to answer pings and closes. Only the holder of the lock ever
//! polls the write half, so no write wake-up is lost between the two tasks.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

use super::error::Error;
use super::io::{poll_discard, poll_read_into, poll_write_outbox};
use super::{WebSocket, WebSocketConfig};
use crate::{CloseFrame, Message, OpCode, Outbox, ProtocolError, Receiver, Role, Sender, reply};

/// The receiving half of a split [`WebSocket`].
#[derive(Debug)]
pub struct WsReader<S> {
    io: ReadHalf<S>,
    rx: Receiver,
    rbuf: BytesMut,
    writer: Arc<Mutex<WriteSide<S>>>,
    role: Role,
    config: WebSocketConfig,
    /// A received event whose reply is still being written (kept across cancellation).
    pending: Option<Pending>,
    done: bool,
}

#[derive(Debug)]
struct Pending {
    event: Result<Message, ProtocolError>,
    replied: bool,
}

/// The sending half of a split [`WebSocket`]; clones share the connection.
#[derive(Debug)]
pub struct WsWriter<S> {
    inner: Arc<Mutex<WriteSide<S>>>,
}

impl<S> Clone for WsWriter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct WriteSide<S> {
    io: WriteHalf<S>,
    tx: Sender,
    out: Outbox,
    limit: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WriteSide<S> {
    async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| poll_write_outbox(&mut self.io, &mut self.out, cx)).await?;
        Ok(())
    }
}

pub(super) fn split<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocket<S>,
) -> (WsReader<S>, WsWriter<S>) {
    let role = ws.conn.role();
    let (io, conn, rbuf, config) = ws.into_parts();
    let (rx, tx, out) = conn.into_parts();
    let (read, write) = tokio::io::split(io);
    let writer = Arc::new(Mutex::new(WriteSide {
        io: write,
        tx,
        out,
        limit: config.write_buffer_limit,
    }));
    let reader = WsReader {
        io: read,
        rx,
        rbuf,
        writer: writer.clone(),
        role,
        config,
        pending: None,
        done: false,
    };
    (reader, WsWriter { inner: writer })
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsReader<S> {
    /// Receives the next message, ping, pong or close (see [`WebSocket::recv`]). Pings are
    /// answered and a close is echoed through the writer's lock before they are returned.
    /// Cancel-safe: an event whose reply was interrupted is finished on the next call.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        if self.done {
            return None;
        }
        loop {
            if self.pending.is_none() {
                match self.rx.receive(&mut self.rbuf) {
                    Ok(Some(msg @ (Message::Text(_) | Message::Binary(_) | Message::Pong(_)))) => {
                        return Some(Ok(msg));
                    }
                    Ok(Some(msg)) => {
                        self.pending = Some(Pending {
                            event: Ok(msg),
                            replied: false,
                        })
                    }
                    Err(e) => {
                        self.pending = Some(Pending {
                            event: Err(e),
                            replied: false,
                        })
                    }
                    Ok(None) => {
                        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
                            self.rbuf = BytesMut::new();
                        }
                        let hint = self.rx.read_hint();
                        match poll_fn(|cx| poll_read_into(&mut self.io, &mut self.rbuf, hint, cx))
                            .await
                        {
                            Ok(0) => return self.end(Err(Error::AbnormalClosure)),
                            Ok(_) => continue,
                            Err(e) => return self.end(Err(e.into())),
                        }
                    }
                }
            }
            return self.answer_pending().await;
        }
    }

    async fn answer_pending(&mut self) -> Option<Result<Message, Error>> {
        let pending = self.pending.as_mut()?;
        let terminal = !matches!(pending.event, Ok(Message::Ping(_)));
        let server_side = self.role == Role::Server || pending.event.is_err();
        let flushed = {
            let mut w = self.writer.lock().await;
            if !pending.replied {
                let open = !w.tx.is_close_sent();
                let received = pending.event.clone().map(Some);
                let WriteSide { tx, out, .. } = &mut *w;
                reply(&received, tx, out, open);
                pending.replied = true;
            }
            let flushed = w.flush().await;
            if terminal && server_side {
                let _ = w.io.shutdown().await;
            }
            flushed
        };
        if let Err(e) = flushed {
            self.pending = None;
            return self.end(Err(e));
        }
        if terminal {
            // Wait for the peer to close its side (bounded), then, as a client, ours.
            let _ = tokio::time::timeout(self.config.close_timeout, async {
                while let Ok(n) = poll_fn(|cx| poll_discard(&mut self.io, cx)).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
            if !server_side {
                let _ = self.writer.lock().await.io.shutdown().await;
            }
        }
        let event = self.pending.take()?.event.map_err(Error::from);
        if terminal {
            return self.end(event);
        }
        Some(event)
    }

    fn end(&mut self, outcome: Result<Message, Error>) -> Option<Result<Message, Error>> {
        self.done = true;
        Some(outcome)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsWriter<S> {
    /// Queues a message and writes everything queued.
    pub async fn send(&self, msg: impl Into<Message>) -> Result<(), Error> {
        let mut w = self.inner.lock().await;
        let WriteSide { tx, out, .. } = &mut *w;
        tx.send(msg.into(), out)?;
        w.flush().await
    }

    /// Queues a message; writes once more than the write buffer limit waits.
    pub async fn feed(&self, msg: impl Into<Message>) -> Result<(), Error> {
        let mut w = self.inner.lock().await;
        let WriteSide { tx, out, .. } = &mut *w;
        tx.send(msg.into(), out)?;
        if w.out.len_bytes() > w.limit {
            w.flush().await?;
        }
        Ok(())
    }

    /// Sends one frame of a fragmented message (see [`WebSocket::send_frame`]).
    pub async fn send_frame(
        &self,
        opcode: OpCode,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<(), Error> {
        let mut w = self.inner.lock().await;
        let WriteSide { tx, out, .. } = &mut *w;
        tx.send_frame(opcode, payload.into(), fin, out)?;
        w.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.lock().await.flush().await
    }

    /// Sends a close frame. The reader sees the peer's reply and closes the transport.
    pub async fn close(&self, frame: Option<CloseFrame>) -> Result<(), Error> {
        let mut w = self.inner.lock().await;
        let WriteSide { tx, out, .. } = &mut *w;
        tx.close(frame, out)?;
        w.flush().await
    }
}
