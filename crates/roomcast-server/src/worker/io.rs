//! What a room connection's frames travel on: a TCP socket of its own (an HTTP/1.1
//! upgrade, plain or under the connection's TLS), or one stream of an HTTP/2 connection
//! (RFC 8441), which hyper's connection task multiplexes with others.
//!
//! Both are used the same way by the connection's task and the worker's flusher:
//! readiness is polled with the task's context, then reads and writes are tried without
//! blocking (`WouldBlock` when they would). A stream has no readiness of its own, so
//! [`StreamIo`] reads one byte ahead to learn that input is there, and tries its reads
//! and writes with the waker of the task that last polled it: whatever blocks wakes that
//! task, which polls again.
//!
//! hyper gives a stream no reset: one whose peer stopped taking data (its window shut)
//! keeps what was handed to hyper until the peer ends it or the connection goes. So a
//! stream's writes are at most [`STREAM_WRITE_MAX`] (hyper holds at most three), and a
//! stream that ended is watched until hyper has sent its END_STREAM ([`Io::release`]):
//! one still held after the close timeout counts as stuck against its connection
//! ([`Streams::stuck`]), which `conn::h2` closes past a few.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The most one write hands to hyper's stream. hyper holds up to three writes of a
/// stream that cannot send (one waiting for window, two in its channel).
const STREAM_WRITE_MAX: usize = 64 * 1024;

/// What the streams of one HTTP/2 connection share with the task serving it.
#[derive(Debug)]
pub(crate) struct Streams {
    /// Requests (streams) the connection has opened.
    pub requests: Cell<u64>,
    /// Streams open now: requests being answered (a streamed body until it ends) and
    /// WebSockets until hyper has ended them.
    active: Cell<u32>,
    /// When `active` last changed.
    pub since: Cell<tokio::time::Instant>,
    /// Ended WebSockets whose data hyper still held past the close timeout.
    stuck: Cell<u32>,
    /// Told when `stuck` grows.
    pub more_stuck: tokio::sync::Notify,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            requests: Cell::new(0),
            active: Cell::new(0),
            since: Cell::new(tokio::time::Instant::now()),
            stuck: Cell::new(0),
            more_stuck: tokio::sync::Notify::new(),
        }
    }
}

impl Streams {
    /// Stuck streams now (see the module's note).
    pub(crate) fn stuck(&self) -> u32 {
        self.stuck.get()
    }

    /// Streams open now.
    pub(crate) fn active(&self) -> u32 {
        self.active.get()
    }

    /// One more stream open, until the guard goes.
    pub(crate) fn open(self: &Rc<Self>) -> Active {
        self.active.set(self.active.get() + 1);
        self.since.set(tokio::time::Instant::now());
        Active(self.clone())
    }
}

/// A stream counted open (see [`Streams::open`]).
#[derive(Debug)]
pub(crate) struct Active(Rc<Streams>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0.since.set(tokio::time::Instant::now());
    }
}

/// A room connection's transport.
#[derive(Debug)]
pub(crate) enum Io {
    /// A socket of its own.
    Tcp(TcpStream),
    /// A stream of an HTTP/2 connection (boxed: most connections are on TCP).
    Stream(Box<StreamIo>),
}

impl From<TcpStream> for Io {
    fn from(s: TcpStream) -> Self {
        Self::Tcp(s)
    }
}

impl Io {
    pub(crate) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_read_ready(cx),
            Self::Stream(s) => s.poll_read_ready(cx),
        }
    }

    pub(crate) fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_write_ready(cx),
            Self::Stream(s) => s.poll_write_ready(cx),
        }
    }

    /// Reads what is there onto `buf`, up to its spare capacity.
    pub(crate) fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_read_buf(buf),
            Self::Stream(s) => s.try_read_buf(buf),
        }
    }

    /// After a short read: marks the socket drained without the read that would return
    /// `WouldBlock`. Tokio clears the readiness only if no newer event arrived meanwhile,
    /// so data that comes later still wakes the task. A stream learns it on its next poll.
    pub(crate) fn drained(&self) {
        if let Self::Tcp(s) = self {
            let _ = s.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }

    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write(buf),
            Self::Stream(s) => s.try_write(buf),
        }
    }

    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.try_write_vectored(bufs),
            Self::Stream(s) => s.try_write_gathered(bufs),
        }
    }

    /// For a stream: hands it to a task that ends it (END_STREAM once hyper has sent
    /// what it holds) and returns true. Past `after`, the stream counts as stuck against
    /// its connection until hyper lets go of it. A socket is left as it is (false).
    pub(crate) fn release(&self, after: std::time::Duration) -> bool {
        let Self::Stream(s) = self else {
            return false;
        };
        let taken = std::mem::replace(&mut *s.io.borrow_mut(), Upgrade::Failed);
        let Upgrade::Ready(mut io) = taken else {
            // Never upgraded (the stream was reset before its 200): nothing is held.
            return true;
        };
        let streams = s.streams.clone();
        let active = s.active.borrow_mut().take();
        tokio::task::spawn_local(async move {
            let _active = active;
            {
                let mut ended = std::pin::pin!(std::future::poll_fn(|cx| {
                    Pin::new(&mut io).poll_shutdown(cx)
                }));
                if tokio::time::timeout(after, &mut ended).await.is_err() {
                    streams.stuck.set(streams.stuck.get() + 1);
                    streams.more_stuck.notify_one();
                    let _ = ended.await;
                    streams.stuck.set(streams.stuck.get().saturating_sub(1));
                    return;
                }
            }
            // Then the peer's END_STREAM, as a socket waits for the peer's FIN: dropping
            // the stream before would reset it (RST_STREAM), an abnormal close.
            let _ = tokio::time::timeout(after, async {
                let mut sink = [0u8; 1024];
                loop {
                    let mut buf = tokio::io::ReadBuf::new(&mut sink);
                    let read = std::future::poll_fn(|cx| Pin::new(&mut io).poll_read(cx, &mut buf));
                    match read.await {
                        Ok(()) if !buf.filled().is_empty() => {}
                        _ => return,
                    }
                }
            })
            .await;
        });
        true
    }

    /// Ends our side of a socket: a TCP FIN (a stream ends with [`Io::release`]).
    pub(crate) fn shutdown_write(&self) {
        if let Self::Tcp(s) = self {
            let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
        }
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_ready(cx)).await
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }
}

/// The stream once its 200 went out, or the upgrade that gives it.
enum Upgrade {
    Pending(OnUpgrade),
    Ready(TokioIo<Upgraded>),
    Failed,
}

/// A WebSocket on an HTTP/2 stream. Registered before its 200 is answered (a raw room's
/// membership begins before that, as before an HTTP/1.1 101), so the stream itself comes
/// later: until it does, reads and writes would block, and what is queued waits.
pub(crate) struct StreamIo {
    io: RefCell<Upgrade>,
    /// The byte read ahead to learn that input is there.
    ahead: Cell<Option<u8>>,
    /// The peer ended the stream (or reset it), seen while reading ahead.
    ended: Cell<bool>,
    /// The waker of the task that last polled for readiness.
    waker: RefCell<Option<Waker>>,
    /// Shared with the connection's other streams.
    streams: Rc<Streams>,
    /// Counts the stream open until it has ended.
    active: RefCell<Option<Active>>,
}

impl std::fmt::Debug for StreamIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamIo").finish_non_exhaustive()
    }
}

impl StreamIo {
    pub(crate) fn new(upgrade: OnUpgrade, streams: Rc<Streams>) -> Self {
        Self {
            io: RefCell::new(Upgrade::Pending(upgrade)),
            ahead: Cell::new(None),
            ended: Cell::new(false),
            waker: RefCell::new(None),
            active: RefCell::new(Some(streams.open())),
            streams,
        }
    }

    fn remember(&self, cx: &Context<'_>) {
        let mut w = self.waker.borrow_mut();
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
    }

    /// Runs `f` on the stream, with `cx` or else the remembered task's context, once the
    /// upgrade is done. `Pending` while it is not (the task is woken when it is).
    fn with<T>(
        &self,
        cx: Option<&mut Context<'_>>,
        f: impl FnOnce(Pin<&mut TokioIo<Upgraded>>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Some(cx) = cx {
            return self.on_stream(cx, f);
        }
        let stored = self.waker.borrow().clone();
        let waker = stored.unwrap_or_else(|| Waker::noop().clone());
        self.on_stream(&mut Context::from_waker(&waker), f)
    }

    fn on_stream<T>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut TokioIo<Upgraded>>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let mut io = self.io.borrow_mut();
        if let Upgrade::Pending(up) = &mut *io {
            match Pin::new(up).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(upgraded)) => *io = Upgrade::Ready(TokioIo::new(upgraded)),
                Poll::Ready(Err(e)) => {
                    *io = Upgrade::Failed;
                    return Poll::Ready(Err(io::Error::other(e)));
                }
            }
        }
        match &mut *io {
            Upgrade::Ready(s) => f(Pin::new(s), cx),
            _ => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.remember(cx);
        if self.ahead.get().is_some() || self.ended.get() {
            return Poll::Ready(Ok(()));
        }
        let mut one = [0u8; 1];
        let read = self.with(Some(cx), |s, cx| {
            let mut buf = ReadBuf::new(&mut one);
            s.poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
        });
        match read {
            Poll::Ready(Ok(1)) => self.ahead.set(Some(one[0])),
            Poll::Ready(Ok(_)) => self.ended.set(true),
            Poll::Ready(Err(e)) => {
                self.ended.set(true);
                return Poll::Ready(Err(e));
            }
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.remember(cx);
        // hyper's stream takes a write when its channel to the connection has room.
        self.with(Some(cx), |s, cx| s.poll_flush(cx))
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut n = 0;
        if let Some(b) = self.ahead.take() {
            buf.extend_from_slice(&[b]);
            n = 1;
        }
        while !self.ended.get() && buf.capacity() > buf.len() {
            let read = self.with(None, |s, cx| tokio_util::io::poll_read_buf(s, cx, buf));
            match read {
                Poll::Ready(Ok(0)) => self.ended.set(true),
                Poll::Ready(Ok(got)) => n += got,
                Poll::Ready(Err(e)) if n == 0 => return Err(e),
                Poll::Ready(Err(_)) => self.ended.set(true),
                Poll::Pending if n == 0 => return Err(io::ErrorKind::WouldBlock.into()),
                Poll::Pending => break,
            }
        }
        Ok(n)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let buf = &buf[..buf.len().min(STREAM_WRITE_MAX)];
        match self.with(None, |s, cx| s.poll_write(cx, buf)) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// The buffers in one write, up to [`STREAM_WRITE_MAX`]: each write is one message to
    /// hyper's task for the stream, so a batch of frames goes as one.
    fn try_write_gathered(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs
            .iter()
            .map(|b| b.len())
            .sum::<usize>()
            .min(STREAM_WRITE_MAX);
        let mut joined = Vec::with_capacity(len);
        for b in bufs {
            let room = len - joined.len();
            if room == 0 {
                break;
            }
            joined.extend_from_slice(&b[..b.len().min(room)]);
        }
        self.try_write(&joined)
    }
}
