//! A room connection as its worker holds it: the socket, the protocol state whose outbox
//! is the send queue, the session, and the writes. The worker's fan-out queues frames
//! here and its flusher writes them; the connection's task (`crate::conn`) reads.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use roomcast_ws::{CloseCode, CloseFrame, Connection, State};
use tokio::time::Instant;

use super::compressed::Compressed;
use super::io::Io;

use super::{MAX_INFLIGHT, Worker};
use crate::auth::Identity;
use crate::engine::ConnKey;
use crate::protocol::RoomName;
use crate::stats::Stats;

/// A ping with no payload, queued as is to every connection due one.
const PING: Bytes = Bytes::from_static(&[0x89, 0x00]);
/// Buffers per vectored write.
const MAX_IOV: usize = 64;
/// Outbox slots a connection keeps between writes (see `flush` and `release_idle`).
const BUSY_SLOTS: usize = 64;
/// Queued frames totalling at most this many bytes are copied into one buffer for a
/// plain write rather than handed to `writev` (see `flush`).
const GATHER_MAX: usize = 16 * 1024;

thread_local! {
    /// Bytes this worker's sockets read and wrote since its sweeper last took them
    /// ([`take_io_bytes`]): counted without touching anything shared per syscall.
    static IO_BYTES: Cell<(u64, u64)> = const { Cell::new((0, 0)) };

    /// Each worker thread's buffer for gathering small frames before a write.
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_MAX));
}

/// Adds to this thread's count of bytes read and written.
pub(crate) fn count_io(read: usize, written: usize) {
    IO_BYTES.with(|c| {
        let (r, w) = c.get();
        c.set((r + read as u64, w + written as u64));
    });
}

/// This thread's bytes read and written since the last call.
pub(crate) fn take_io_bytes() -> (u64, u64) {
    IO_BYTES.with(|c| c.replace((0, 0)))
}

/// The total length of `slices` when it is small enough to gather into one buffer.
fn gather_len(slices: &[IoSlice<'_>]) -> Option<usize> {
    let len = slices.iter().map(|s| s.len()).sum();
    (len <= GATHER_MAX).then_some(len)
}

/// Plaintext bytes rustls holds for the outbox at once: more waits as frames, where the
/// slow-consumer bound sees it.
const TLS_CHUNK: usize = 64 * 1024;

/// Processes what rustls has received and moves the plaintext it yields onto `rbuf`,
/// sized exactly (nothing is reserved when there is none). Returns whether the peer has
/// closed the TLS session (close_notify): the end of its input.
fn take_plaintext(tls: &mut rustls::ServerConnection, rbuf: &mut BytesMut) -> io::Result<bool> {
    use std::io::Read;
    let state = tls.process_new_packets().map_err(io::Error::other)?;
    let (n, closed) = (state.plaintext_bytes_to_read(), state.peer_has_closed());
    if n > 0 {
        let start = rbuf.len();
        rbuf.resize(start + n, 0);
        tls.reader().read_exact(&mut rbuf[start..])?;
    }
    Ok(closed)
}

/// The socket as rustls's `write_tls` wants it: writes that never block (`WouldBlock`
/// when the socket is full).
struct SocketWriter<'a>(&'a Io);

impl io::Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which room namespace a membership is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// `/ws` rooms: history, offsets, presence.
    Ws,
    /// `/rooms/{room}` raw rooms: bytes in, bytes out.
    Raw,
}

/// One room a connection is in (or is joining).
#[derive(Debug)]
pub(crate) struct Membership {
    pub room: RoomName,
    pub kind: Kind,
    /// Which join this is (a reply to an older one is ignored).
    pub seq: u32,
    /// The member's slot in the worker's local room; `None` while the join is pending.
    pub slot: Option<usize>,
    /// Visible and receiving presence diffs.
    pub presence: bool,
}

/// What the connection's own task needs beyond the socket.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// The client id, once `hello` was received.
    pub client: Option<Arc<str>>,
    pub rooms: Vec<Membership>,
    pub next_seq: u32,
    /// What its token allows, and until when; `None` for a client without one. Boxed:
    /// most connections have none, and every idle one pays for this field.
    pub auth: Option<Box<Identity>>,
    /// The `token_expiring` push was sent for the current token.
    pub warned: bool,
}

/// A room connection (`/ws` or `/rooms/...`), shared by its task and its worker: the task
/// reads and answers; the worker's fan-out queues frames into the same outbox and its
/// flusher writes them. Everything is single-threaded (`Rc`, `Cell`, `RefCell`), and no
/// borrow is held across an `.await`.
pub(crate) struct Conn {
    pub key: ConnKey,
    pub io: Io,
    /// The protocol state, whose outbox is the connection's send queue.
    pub ws: RefCell<Connection>,
    /// Received bytes not yet decoded (empty, and without capacity, when idle).
    pub rbuf: RefCell<BytesMut>,
    pub session: RefCell<Session>,
    /// Queued in the worker's dirty list, waiting for the flusher.
    pub dirty: Cell<bool>,
    /// Its task is handling input and writes what is queued right after: nothing queued
    /// meanwhile needs the flusher.
    pub busy: Cell<bool>,
    /// The last write would have blocked: the task waits for the socket to drain.
    pub want_write: Cell<bool>,
    /// The socket failed or was closed; nothing more is written.
    pub dead: Cell<bool>,
    /// A `/ws` connection, held to sending its `hello` within the handshake timeout
    /// while tokens are required (raw rooms had theirs checked at the handshake, and the
    /// conformance echo has none).
    pub awaits_hello: Cell<bool>,
    /// Requests sent to home workers and not yet answered.
    inflight: Cell<u32>,
    /// Bytes of a recovery backlog still queued: history the node holds anyway, not
    /// counted against `max_queued_bytes` until written.
    exempt: Cell<usize>,
    /// When the connection was registered.
    pub opened: Instant,
    /// The address it counts against (`None`: exempt).
    pub counted_ip: Cell<Option<std::net::IpAddr>>,
    /// Its message and byte rates (`None`: exempt).
    pub flow: RefCell<Option<Box<crate::limits::Flow>>>,
    /// Over TLS: rustls's state (sans-IO) between the socket and the frames. Reads are
    /// decrypted into `rbuf`, and the outbox is encrypted on its way out (`flush`).
    tls: RefCell<Option<Box<rustls::ServerConnection>>>,
    pub last_rx: Cell<Instant>,
    pub last_message: Cell<Instant>,
    pub ping_sent: Cell<Option<Instant>>,
    /// Since when nothing was queued, as the sweeper saw it: `None` once something is
    /// (an idle connection's compressor state is given back after
    /// `compression_idle_release_ms`).
    quiet_since: Cell<Option<Instant>>,
    /// When a close we started must be over (enforced by the worker's sweeper).
    pub close_deadline: Cell<Option<Instant>>,
    /// The worker changed something the task must act on.
    signalled: Cell<bool>,
    /// The task's waker while it waits (no future or timer is kept per connection).
    waker: Cell<Option<Waker>>,
}

/// Whether queueing `len` more bytes behind `queued` passes `max_queued_bytes`. A frame
/// larger than the bound is let through when nothing waits: the bound is on a backlog,
/// and a message the limits accept must be deliverable.
fn over_bound(queued: usize, len: usize, worker: &Worker) -> bool {
    queued > 0 && queued + len > worker.shared.config.websocket.max_queued_bytes
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("key", &self.key)
            .field("state", &self.ws.borrow().state())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(key: ConnKey, io: Io, ws: Connection, rbuf: BytesMut) -> Self {
        let now = Instant::now();
        Self {
            key,
            io,
            ws: RefCell::new(ws),
            rbuf: RefCell::new(rbuf),
            session: RefCell::new(Session::default()),
            dirty: Cell::new(false),
            busy: Cell::new(false),
            want_write: Cell::new(false),
            dead: Cell::new(false),
            awaits_hello: Cell::new(false),
            inflight: Cell::new(0),
            exempt: Cell::new(0),
            opened: now,
            counted_ip: Cell::new(None),
            flow: RefCell::new(None),
            tls: RefCell::new(None),
            last_rx: Cell::new(now),
            last_message: Cell::new(now),
            ping_sent: Cell::new(None),
            quiet_since: Cell::new(None),
            close_deadline: Cell::new(None),
            signalled: Cell::new(false),
            waker: Cell::new(None),
        }
    }

    /// Holds the connection to the limits: `counted` is the address its slot counts
    /// against (given back when it goes), `limited` whether its rates are watched.
    pub(crate) fn limit(&self, worker: &Worker, counted: Option<std::net::IpAddr>, limited: bool) {
        self.counted_ip.set(counted);
        if limited {
            let flow = crate::limits::Flow::new(
                worker.shared.limits.settings(),
                std::time::Instant::now(),
            );
            *self.flow.borrow_mut() = Some(Box::new(flow));
        }
    }

    /// Runs the connection over TLS from now on. Plaintext rustls already decrypted (sent
    /// with the handshake's last flight or the request head) moves to `rbuf` now: the
    /// socket will not say it is readable for bytes already read from it. A session
    /// already closed or broken marks the connection dead; its task then cleans up.
    pub(crate) fn set_tls(&self, mut tls: Box<rustls::ServerConnection>) {
        // The outbox moves into rustls at most `TLS_CHUNK` at a time (`flush_tls`): that
        // is the bound, and rustls's own 64 KiB limit would cut a frame in two.
        tls.set_buffer_limit(None);
        if !matches!(
            take_plaintext(&mut tls, &mut self.rbuf.borrow_mut()),
            Ok(false)
        ) {
            self.dead.set(true);
        }
        *self.tls.borrow_mut() = Some(tls);
    }

    /// Whether the connection runs over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.borrow().is_some()
    }

    /// Over TLS: decrypts the bytes read into `input` onto `rbuf`. `Ok(true)` when the
    /// peer closed the TLS session (close_notify), which is the end of input. `input` is
    /// emptied whatever happens: it is the worker's scratch, which the next connection
    /// reads into, and a broken record left in it would be fed to that one's session.
    pub(crate) fn decrypt(&self, input: &mut BytesMut) -> io::Result<bool> {
        let result = self.decrypt_records(input);
        input.clear();
        result
    }

    fn decrypt_records(&self, input: &[u8]) -> io::Result<bool> {
        let mut tls = self.tls.borrow_mut();
        let Some(tls) = tls.as_mut() else {
            return Ok(false);
        };
        let mut rbuf = self.rbuf.borrow_mut();
        let mut rest: &[u8] = input;
        let mut closed = false;
        // After a close_notify rustls takes nothing more (`read_tls` gives 0): what
        // follows it is not read.
        while !rest.is_empty() && !closed {
            let taken = tls
                .read_tls(&mut rest)
                .and_then(|n| Ok((n, take_plaintext(tls, &mut rbuf)?)));
            match taken {
                Ok((0, _)) => break,
                Ok((_, c)) => closed = c,
                Err(e) => {
                    // The alert rustls queued for the peer, best effort, before the end.
                    let _ = tls.write_tls(&mut SocketWriter(&self.io));
                    return Err(e);
                }
            }
        }
        Ok(closed)
    }

    /// Over TLS: queues the TLS close (close_notify) to be written by the next flush.
    pub(crate) fn close_tls(&self) {
        if let Some(tls) = self.tls.borrow_mut().as_mut() {
            tls.send_close_notify();
        }
    }

    /// Whether anything waits to be written: frames, or (over TLS) encrypted records.
    pub(crate) fn has_output(&self) -> bool {
        !self.ws.borrow_mut().outbox().is_empty()
            || self.tls.borrow().as_ref().is_some_and(|t| t.wants_write())
    }

    /// Has the connection's task look at its state again.
    pub(crate) fn wake(&self) {
        self.signalled.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// A request went to a home worker; at `MAX_INFLIGHT` the task stops reading.
    pub(crate) fn asked(&self) {
        self.inflight.set(self.inflight.get() + 1);
    }

    /// Whether fewer than `MAX_INFLIGHT` requests wait, so the task may read more.
    pub(crate) fn may_read(&self) -> bool {
        self.inflight.get() < MAX_INFLIGHT
    }

    /// A home worker answered a request. Whatever the answer, a task that stopped
    /// reading at `MAX_INFLIGHT` is woken to read again.
    pub(crate) fn answered(&self) {
        let before = self.inflight.get();
        self.inflight.set(before.saturating_sub(1));
        if before >= MAX_INFLIGHT {
            self.wake();
        }
    }

    /// For the task: whether it was signalled since it last looked (and clears it).
    pub(crate) fn take_signal(&self) -> bool {
        self.signalled.replace(false)
    }

    /// For the task: remembers how to wake it.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        match self.waker.take() {
            Some(w) if w.will_wake(waker) => self.waker.set(Some(w)),
            _ => self.waker.set(Some(waker.clone())),
        }
    }

    /// Whether frames may still be queued.
    pub(crate) fn is_open(&self) -> bool {
        !self.dead.get() && self.ws.borrow().state() == State::Open
    }

    /// Queues a frame for this connection and has it written soon. A connection whose
    /// queue would pass `max_queued_bytes` is closed with 4008 instead: it cannot keep up,
    /// and nobody else waits for it.
    pub(crate) fn push(self: &Rc<Self>, worker: &Worker, frame: Bytes) {
        self.push_shared(worker, frame, &mut Compressed::default());
    }

    /// [`Conn::push`] of a fan-out's frame: `compressed` holds it compressed for the
    /// members that share one compression (see `compressed.rs`).
    pub(super) fn push_shared(
        self: &Rc<Self>,
        worker: &Worker,
        frame: Bytes,
        compressed: &mut Compressed,
    ) {
        {
            let mut ws = self.ws.borrow_mut();
            if ws.state() != State::Open || self.dead.get() {
                return;
            }
            let frame = compressed.for_connection(&mut ws, frame);
            self.quiet_since.set(None);
            let out = ws.outbox();
            if over_bound(
                out.len_bytes().saturating_sub(self.exempt.get()),
                frame.len(),
                worker,
            ) {
                drop(ws);
                return self.slow_consumer(worker);
            }
            out.push(frame);
        }
        worker.mark_dirty(self);
    }

    /// Sends a message of our own (the echo endpoint), within the same bound as `push`.
    pub(crate) fn reply(self: &Rc<Self>, worker: &Worker, msg: roomcast_ws::Message) {
        {
            let mut ws = self.ws.borrow_mut();
            if ws.state() != State::Open || self.dead.get() {
                return;
            }
            let queued = ws.outbox().len_bytes().saturating_sub(self.exempt.get());
            if over_bound(queued, msg.payload().len(), worker) {
                drop(ws);
                return self.slow_consumer(worker);
            }
            self.quiet_since.set(None);
            let _ = ws.send(msg);
        }
        worker.mark_dirty(self);
    }

    /// Queues missed messages for a recovering member: they do not count against the
    /// slow-consumer bound until written (the client is catching up, not falling behind).
    pub(crate) fn push_backlog(
        self: &Rc<Self>,
        worker: &Worker,
        frames: impl IntoIterator<Item = Bytes>,
    ) {
        let mut compressed = Compressed::default();
        for frame in frames {
            self.push_exempt(worker, frame, &mut compressed);
            compressed.next_frame();
        }
        compressed.count(&worker.shared.stats);
    }

    /// Queues one frame outside the slow-consumer bound until written (a recovery
    /// backlog's, or what the node read to catch up), compressed as `compressed` holds
    /// it for the fan-out's other members.
    pub(super) fn push_exempt(
        self: &Rc<Self>,
        worker: &Worker,
        frame: Bytes,
        compressed: &mut Compressed,
    ) {
        {
            let mut ws = self.ws.borrow_mut();
            if ws.state() != State::Open || self.dead.get() {
                return;
            }
            let frame = compressed.for_connection(&mut ws, frame);
            self.quiet_since.set(None);
            self.exempt.set(self.exempt.get() + frame.len());
            ws.outbox().push(frame);
        }
        worker.mark_dirty(self);
    }

    fn slow_consumer(self: &Rc<Self>, worker: &Worker) {
        {
            let mut ws = self.ws.borrow_mut();
            let queued = ws.outbox().len_bytes();
            ws.outbox().clear_unstarted();
            ws.abort(CloseFrame::new(
                CloseCode(4008),
                "slow consumer: the outbound queue overflowed",
            ));
            tracing::warn!(conn = ?self.key, queued, "closing a slow consumer (4008)");
        }
        Stats::add(&worker.shared.stats.slow_consumer_closes, 1);
        self.close_deadline
            .set(Some(Instant::now() + worker.close_timeout()));
        worker.mark_dirty(self);
        self.wake();
    }

    /// Starts the closing handshake from our side (drain, idle, heartbeat).
    pub(crate) fn close(
        self: &Rc<Self>,
        worker: &Worker,
        code: CloseCode,
        reason: &str,
        abort: bool,
    ) {
        {
            let mut ws = self.ws.borrow_mut();
            if ws.state() != State::Open {
                return;
            }
            let frame = CloseFrame::new(code, reason);
            if abort {
                ws.abort(frame);
            } else {
                let _ = ws.close(Some(frame));
            }
        }
        self.close_deadline
            .set(Some(Instant::now() + worker.close_timeout()));
        worker.mark_dirty(self);
        self.wake();
    }

    /// Queues a ping when one is due, or reports that the last one went unanswered.
    pub(crate) fn heartbeat(self: &Rc<Self>, worker: &Worker, now: Instant) -> bool {
        let hb = &worker.shared.config.websocket;
        if hb.heartbeat_interval_ms == 0 || !self.is_open() {
            return true;
        }
        match self.ping_sent.get() {
            Some(sent) if now.duration_since(sent).as_millis() as u64 > hb.heartbeat_timeout_ms => {
                false
            }
            Some(_) => true,
            None => {
                let quiet = now.duration_since(self.last_rx.get()).as_millis() as u64;
                if quiet >= hb.heartbeat_interval_ms {
                    self.ws.borrow_mut().outbox().push(PING);
                    self.ping_sent.set(Some(now));
                    worker.mark_dirty(self);
                }
                true
            }
        }
    }

    /// `flush` over TLS: encrypted records first, then the outbox into rustls at most
    /// [`TLS_CHUNK`] at a time (so the slow-consumer bound still sees what waits), until
    /// the socket is full or nothing is left.
    fn flush_tls(
        &self,
        tls: &mut rustls::ServerConnection,
        out: &mut roomcast_ws::Outbox,
    ) -> io::Result<()> {
        use std::io::Write;
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut SocketWriter(&self.io)) {
                    Ok(0) => return self.failed(io::ErrorKind::WriteZero.into()),
                    Ok(n) => count_io(0, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !self.want_write.replace(true) {
                            self.wake();
                        }
                        return Ok(());
                    }
                    Err(e) => return self.failed(e),
                }
            }
            if out.is_empty() {
                break;
            }
            let mut moved = 0;
            while moved < TLS_CHUNK {
                let Some(front) = out.front() else { break };
                let n = match tls.writer().write(front) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => return self.failed(e),
                };
                out.advance(n);
                self.exempt.set(self.exempt.get().saturating_sub(n));
                moved += n;
            }
        }
        out.shrink_to(BUSY_SLOTS);
        self.want_write.set(false);
        Ok(())
    }

    /// Writes as much of the outbox as the socket takes now. Returns an error only when
    /// the socket failed; a full socket sets `want_write` and wakes the task to wait.
    pub(crate) fn flush(&self) -> io::Result<()> {
        if self.dead.get() {
            return Ok(());
        }
        let mut ws = self.ws.borrow_mut();
        let out = ws.outbox();
        if let Some(tls) = self.tls.borrow_mut().as_mut() {
            return self.flush_tls(tls, out);
        }
        while !out.is_empty() {
            let written = match out.len() {
                // One buffer: a plain write is cheaper than writev.
                1 => out.front().map_or(Ok(0), |b| self.io.try_write(b)),
                _ => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    let n = out.io_slices(&mut slices);
                    match gather_len(&slices[..n]) {
                        // Small frames: one copy into a contiguous buffer and a plain
                        // write cost less than the kernel's walk over as many iovecs.
                        Some(len) => GATHER.with_borrow_mut(|buf| {
                            buf.clear();
                            buf.reserve(len);
                            for slice in &slices[..n] {
                                buf.extend_from_slice(slice);
                            }
                            self.io.try_write(buf)
                        }),
                        None => self.io.try_write_vectored(&slices[..n]),
                    }
                }
            };
            match written {
                Ok(0) => return self.failed(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    count_io(0, n);
                    out.advance(n);
                    self.exempt.set(self.exempt.get().saturating_sub(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.want_write.replace(true) {
                        self.wake();
                    }
                    return Ok(());
                }
                Err(e) => return self.failed(e),
            }
        }
        // A connection that just took a burst will likely take another: keep the slots
        // (growing them again costs allocations per batch); the sweeper frees them once
        // the connection is idle.
        out.shrink_to(BUSY_SLOTS);
        self.want_write.set(false);
        Ok(())
    }

    /// Frees the outbox's slots when nothing is queued (called by the sweeper, so a
    /// connection that went quiet owns no queue memory), and its compressor's state
    /// once nothing was queued for `compressor_after`.
    pub(crate) fn release_idle(&self, now: Instant, compressor_after: Option<Duration>) {
        if !self.dirty.get()
            && let Ok(mut ws) = self.ws.try_borrow_mut()
        {
            ws.outbox().shrink_to(0);
            if let Some(after) = compressor_after {
                match self.quiet_since.get() {
                    None => self.quiet_since.set(Some(now)),
                    Some(since) if now.duration_since(since) >= after => {
                        ws.release_compressor();
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn failed(&self, e: io::Error) -> io::Result<()> {
        self.dead.set(true);
        self.wake();
        Err(e)
    }
}
