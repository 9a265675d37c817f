//! Reading into the codec and writing out the outbox.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Outbox;

/// The per-thread read buffer.
const SCRATCH_SIZE: usize = 64 * 1024;
/// A frame still missing at least this many bytes is read straight into its own buffer.
const DIRECT_READ_MIN: usize = 16 * 1024;
/// At most this many buffers per vectored write (Linux's `UIO_MAXIOV` is 1024).
const MAX_IOV: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Reads some bytes and appends them to `buf`; `Ok(0)` is the end of the stream.
///
/// `hint` is how many bytes the frame being received still needs. Small reads go through
/// the thread's scratch buffer so that an idle connection owns no read buffer; a large
/// frame is read directly into `buf`, grown once to fit it.
pub(crate) fn poll_read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    hint: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if hint >= DIRECT_READ_MIN {
        buf.reserve(hint);
        return tokio_util::io::poll_read_buf(Pin::new(io), cx, buf);
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let mut rb = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(io).poll_read(cx, &mut rb))?;
            buf.extend_from_slice(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        }
        // Re-entered from inside another read on this thread: use the connection's own.
        Err(_) => {
            buf.reserve(4096);
            tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
        }
    })
}

/// Reads and discards; `Ok(0)` is the end of the stream.
pub(crate) fn poll_discard<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut sink = [0u8; 1024];
    let mut rb = ReadBuf::new(&mut sink);
    ready!(Pin::new(io).poll_read(cx, &mut rb))?;
    Poll::Ready(Ok(rb.filled().len()))
}

/// Writes everything queued, as few syscalls as the stream allows, then flushes it.
pub(crate) fn poll_write_outbox<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Outbox,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !out.is_empty() {
        let n = if io.is_write_vectored() && out.len() > 1 {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let k = out.io_slices(&mut slices);
            ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..k]))?
        } else {
            let Some(front) = out.front() else { break };
            ready!(Pin::new(&mut *io).poll_write(cx, front))?
        };
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        out.advance(n);
    }
    out.shrink();
    Pin::new(io).poll_flush(cx)
}
