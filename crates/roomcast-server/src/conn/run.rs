//! The life of a room connection after its handshake: read, answer, close.

use std::io;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;
use roomcast_ws::{CloseCode, Message, State};
use tokio::time::Instant;

use super::{raw, ws};
use crate::limits::Verdict;
use crate::protocol::{ErrorCode, RoomName, reply};
use crate::stats::Stats;
use crate::worker::Conn;
use crate::worker::{SCRATCH_SIZE, Worker};

/// Reads of at least this many bytes that start a frame are handed to the connection
/// without a copy; smaller ones are copied (cheap, and nothing small pins the scratch).
const HAND_OVER_MIN: usize = 8 * 1024;

/// What the connection speaks.
#[derive(Debug)]
pub(crate) enum Endpoint {
    /// The roomcast protocol.
    Ws,
    /// A raw room.
    Raw { room: RoomName, echo: bool },
    /// The echo socket (`--echo`).
    Echo,
}

/// Bytes read from one connection before what was read is handled and the worker's other
/// tasks get their turn: one flooding client holds its worker for one read's worth of
/// handling at a time, and buffers at most that much beyond the frame it is assembling.
const READ_BUDGET: usize = SCRATCH_SIZE;

/// What woke the connection's task.
enum Wake {
    Signal,
    Writable,
    Readable,
}

pub(crate) async fn run(worker: Rc<Worker>, conn: Rc<Conn>, endpoint: Endpoint) {
    // Frames may have arrived with the handshake.
    if !conn.rbuf.borrow().is_empty() {
        conn.busy.set(true);
        process(&worker, &conn, &endpoint);
        conn.busy.set(false);
        let _ = conn.flush();
    }
    loop {
        if conn.dead.get() || matches!(conn.ws.borrow().state(), State::Closed | State::Failed) {
            break;
        }
        // Waiting keeps no future per connection: readiness is polled on the socket and
        // the worker wakes the task through the stored waker.
        let woke = std::future::poll_fn(|cx| {
            conn.set_waker(cx.waker());
            if conn.take_signal() {
                return Poll::Ready(Wake::Signal);
            }
            if conn.want_write.get() && conn.io.poll_write_ready(cx).is_ready() {
                return Poll::Ready(Wake::Writable);
            }
            if conn.may_read() && conn.io.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Wake::Readable);
            }
            Poll::Pending
        })
        .await;
        match woke {
            Wake::Signal => {}
            Wake::Writable => {
                let _ = conn.flush();
            }
            Wake::Readable => {
                if read(&worker, &conn, &endpoint) {
                    // The socket still has input: the others on this worker go first.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    // Boxed: it runs once, and its timers need not sit in every connection's future.
    Box::pin(finish(&worker, &conn)).await;
}

/// Reads what the socket has, up to [`READ_BUDGET`] bytes, handles every complete
/// message, and writes the replies. Returns whether the budget ran out before the socket
/// was drained (it stays readable: the next turn reads on).
fn read(worker: &Rc<Worker>, conn: &Rc<Conn>, endpoint: &Endpoint) -> bool {
    let mut got = false;
    let mut budget = READ_BUDGET;
    let mut more = false;
    // The read buffer holds bytes handed over from the worker's scratch allocation.
    let mut lent = false;
    {
        let mut scratch = worker.scratch.borrow_mut();
        loop {
            if scratch.capacity() < SCRATCH_SIZE / 2 {
                *scratch = BytesMut::with_capacity(SCRATCH_SIZE);
            }
            let room = scratch.capacity();
            match conn.io.try_read_buf(&mut scratch) {
                Ok(0) => {
                    // The peer closed without a close frame (1006).
                    conn.dead.set(true);
                    break;
                }
                Ok(n) => {
                    got = true;
                    crate::worker::count_io(n, 0);
                    if conn.is_tls() {
                        // Decrypted onto the read buffer; the scratch is reused at once.
                        if !matches!(conn.decrypt(&mut scratch), Ok(false)) {
                            conn.dead.set(true);
                            break;
                        }
                    } else {
                        let mut rbuf = conn.rbuf.borrow_mut();
                        if rbuf.is_empty() && n >= HAND_OVER_MIN {
                            // A large read starting a frame: hand the bytes over instead
                            // of copying them; the scratch keeps the rest of its
                            // allocation.
                            *rbuf = scratch.split();
                            lent = true;
                        } else {
                            rbuf.extend_from_slice(&scratch);
                            scratch.clear();
                        }
                    }
                    budget = budget.saturating_sub(n);
                    if n == room && budget == 0 {
                        more = true;
                        break;
                    }
                    if n < room {
                        // A short read drained the socket: marked so without the
                        // read that would return EAGAIN.
                        conn.io.drained();
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    conn.dead.set(true);
                    break;
                }
            }
        }
    }
    if got {
        conn.last_rx.set(Instant::now());
        conn.ping_sent.set(None);
        // Replies queued while handling this input are written just below.
        conn.busy.set(true);
        process(worker, conn, endpoint);
        conn.busy.set(false);
        if lent {
            // An unfinished frame must not keep the shared allocation alive while the
            // connection waits for the rest: it moves to a buffer of its own.
            let mut rbuf = conn.rbuf.borrow_mut();
            if !rbuf.is_empty() {
                *rbuf = BytesMut::from(&rbuf[..]);
            }
        }
        let _ = conn.flush();
    }
    more
}

/// Accounts a message against its connection's rates (exempt connections have none).
fn within_rate(worker: &Worker, conn: &Conn, msg: &Message) -> Verdict {
    match conn.flow.borrow_mut().as_mut() {
        Some(flow) => flow.message(
            msg.payload().len(),
            worker.shared.limits.settings(),
            std::time::Instant::now(),
        ),
        None => Verdict::Pass,
    }
}

/// Decodes and handles every complete message in the read buffer.
fn process(worker: &Rc<Worker>, conn: &Rc<Conn>, endpoint: &Endpoint) {
    let mut messages = false;
    loop {
        let received = {
            let mut ws = conn.ws.borrow_mut();
            let mut rbuf = conn.rbuf.borrow_mut();
            let received = ws.receive(&mut rbuf);
            if rbuf.is_empty() && rbuf.capacity() > 0 {
                // Between frames: no buffer is kept while idle.
                *rbuf = BytesMut::new();
            }
            received
        };
        match received {
            Ok(Some(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                messages = true;
                match within_rate(worker, conn, &msg) {
                    Verdict::Pass => {}
                    Verdict::Refuse => {
                        Stats::add(&worker.shared.stats.limit_refusals, 1);
                        // A raw room has no replies: the message is dropped.
                        if matches!(endpoint, Endpoint::Ws) {
                            let reference = match &msg {
                                Message::Text(t) => crate::protocol::parse(t.as_bytes()).0,
                                _ => None,
                            };
                            let why = "over limits.messages_per_second or bytes_per_second";
                            conn.push(worker, reply::error(reference, ErrorCode::RateLimited, why));
                        }
                        continue;
                    }
                    Verdict::Close => {
                        Stats::add(&worker.shared.stats.limit_refusals, 1);
                        conn.close(worker, CloseCode(4029), "rate limited", false);
                        break;
                    }
                }
                match endpoint {
                    Endpoint::Ws => ws::handle(worker, conn, msg),
                    Endpoint::Raw { room, echo } => raw::handle(worker, conn, room, *echo, msg),
                    Endpoint::Echo => conn.reply(worker, msg),
                }
            }
            // A pong or the close echo was queued by the protocol state; `read` writes it.
            Ok(Some(Message::Ping(_) | Message::Pong(_))) => {}
            Ok(Some(Message::Close(_))) | Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = ?conn.key, error = %e, "protocol error");
                break;
            }
        }
    }
    if messages {
        conn.last_message.set(conn.last_rx.get());
    }
}

/// Leaves every room, then sends what is queued (a close frame), closes our side and
/// waits briefly for the peer's FIN, so unread input cannot turn the close into a reset.
async fn finish(worker: &Rc<Worker>, conn: &Rc<Conn>) {
    tracing::debug!(conn = ?conn.key, dead = conn.dead.get(), state = ?conn.ws.borrow().state(), "connection ends");
    worker.unregister(conn);
    if conn.dead.get() {
        conn.io.release(worker.close_timeout());
        return;
    }
    let deadline = Instant::now() + worker.close_timeout();
    let write_out = || async {
        while conn.flush().is_ok() && conn.has_output() {
            if conn.io.writable().await.is_err() {
                return;
            }
        }
    };
    // The frames (the close frame last), then over TLS the session's close after them:
    // a peer ignores whatever comes after a close_notify.
    let _ = tokio::time::timeout_at(deadline, async {
        write_out().await;
        if conn.is_tls() {
            conn.close_tls();
            write_out().await;
        }
    })
    .await;
    conn.dead.set(true);
    // A stream is ended by hyper once what it holds has gone: nothing more to wait for
    // here (`Io::release`).
    if conn.io.release(worker.close_timeout()) {
        return;
    }
    conn.io.shutdown_write();
    let _ = tokio::time::timeout_at(deadline, async {
        let mut sink = BytesMut::with_capacity(1024);
        loop {
            if conn.io.readable().await.is_err() {
                return;
            }
            match conn.io.try_read_buf(&mut sink) {
                Ok(0) => return,
                Ok(_) => sink.clear(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one idle connection costs in memory, beyond the kernel: its shared state and
    /// its task's future. Printed with `--nocapture`. The promise is the documented ~1.5 KiB
    /// per idle member (docs/performance.md, measured by `roomcast bench connect`); the exact
    /// sizes move with the compiler, so the test holds their sum to a budget under it, not
    /// to today's byte counts.
    #[tokio::test]
    async fn idle_connection_footprint() {
        let shared =
            std::sync::Arc::new(crate::shared::Shared::for_tests(crate::Config::default()));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = std::rc::Rc::new(Worker::new(
            0,
            shared,
            vec![tx].into(),
            crate::engine::Engine::Memory,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let conn = worker.register(server.into(), bytes::BytesMut::new());
        let conn_size = std::mem::size_of::<Conn>();
        let fut = run(worker.clone(), conn.clone(), Endpoint::Ws);
        let fut_size = std::mem::size_of_val(&fut);
        println!(
            "Conn: {conn_size} bytes, run future: {fut_size} bytes, Connection: {} bytes",
            std::mem::size_of::<roomcast_ws::Connection>()
        );
        assert!(
            conn_size + fut_size <= 1024,
            "an idle connection's state grew to {conn_size} + {fut_size} bytes, \
             most of the documented ~1.5 KiB per idle member"
        );
        drop((fut, client));
    }
}
