//! Workers: one thread each, with its own event loop, connections and rooms.
//!
//! The node runs `workers` threads, each a single-threaded tokio runtime that accepts on
//! its own `SO_REUSEPORT` listener, so a connection lives its whole life on one thread and
//! its state needs no lock. Each worker keeps its own *local* rooms: the members it holds
//! (its sockets, `socket.rs`, and HTTP members). Where a room's state lives is the
//! engine's ([`crate::engine`]): with the memory engine, a room has one *home* worker,
//! chosen by hashing its name, whose [`crate::engine::memory::Homes`] holds it; with the
//! Redis engine, Redis does, through the node's broker thread.
//!
//! A publish goes to the engine, which stores it, frames it once, and sends the same
//! `Bytes` to every worker with members; each queues it to its members and marks them
//! dirty. A flusher task then writes each dirty
//! connection once, with one vectored write for everything queued since its last write,
//! so messages published close together leave together.

mod cmd;
mod compressed;
mod dispatch;
mod io;
mod local;
mod sink;
mod socket;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use roomcast_ws::{CloseCode, Connection, Role};
use slab::Slab;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;

pub(crate) use self::cmd::{Forwarded, no_session};
pub(crate) use self::dispatch::SocketCaller;
pub(crate) use self::io::{Active, Io, StreamIo, Streams};
use self::local::LocalRoom;
pub(crate) use self::socket::{Conn, Kind, Membership, count_io};
use crate::auth::Identity;
use crate::engine::memory::Homes;
use crate::engine::{
    Addr, ConnKey, Engine, HomeMsg, LocalMsg, Mesh, NodeInfo, Reply, RoomInfo, WorkerMsg,
};
use crate::member::{HttpKind, HttpMember};
use crate::protocol::{RoomName, reply};
use crate::shared::Shared;
use crate::stats::Stats;

/// The per-worker read buffer's size: reads go into it, then to the connection.
pub(crate) const SCRATCH_SIZE: usize = 64 * 1024;
/// How long a node-wide query (rooms, nodes) may wait for the engine.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one connection may have waiting at home workers before its reads pause.
pub(crate) const MAX_INFLIGHT: u32 = 1024;

/// What serves a worker's listener: accepts, and runs each connection (the node passes
/// `crate::conn::accept::serve`, so the worker never names the connection drivers).
pub(crate) type Serve =
    fn(Rc<Worker>, TcpListener) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// One worker's state. Lives in an `Rc` on its thread.
pub(crate) struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    mesh: Mesh,
    /// Where room requests go.
    pub engine: Engine,
    conns: RefCell<Slab<Rc<Conn>>>,
    generation: Cell<u32>,
    /// The HTTP members (SSE streams, poll sessions) this worker owns.
    http: RefCell<Slab<Arc<HttpMember>>>,
    /// HTTP requests waiting here for one reply from a home worker.
    /// HTTP requests waiting for a reply, with the generation of their key.
    pending: RefCell<Slab<(u32, oneshot::Sender<Reply>)>>,
    /// The members this worker holds, per room.
    local: RefCell<HashMap<(Kind, RoomName), LocalRoom>>,
    /// The rooms whose home this worker is (memory engine; raw rooms always).
    homes: RefCell<Homes>,
    /// Connections with frames queued since the flusher last ran.
    dirty: RefCell<Vec<Rc<Conn>>>,
    /// Room requests for the broker engine since the flusher last ran: they go to it
    /// together, before the writes (see `to_broker`).
    home_out: RefCell<Vec<HomeMsg>>,
    flush_now: Notify,
    /// Signalled when the last connection is gone (for drain).
    empty: Notify,
    /// Where reads land (see `conn::run::read`): the unused tail of a
    /// `SCRATCH_SIZE` allocation.
    pub scratch: RefCell<BytesMut>,
    /// What this worker last added to `Stats::outbox_bytes`.
    outbox_reported: Cell<i64>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// What the node gives every worker.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub shared: Arc<Shared>,
    pub mesh: Mesh,
    pub engine: Engine,
    pub serve: Serve,
}

/// Starts worker `index` on its own thread.
pub(crate) fn spawn(
    index: usize,
    listener: std::net::TcpListener,
    node: Node,
    inbox: mpsc::UnboundedReceiver<WorkerMsg>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let Node {
        shared,
        mesh,
        engine,
        serve,
    } = node;
    std::thread::Builder::new().name(format!("roomcast-w{index}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(worker = index, error = %e, "cannot start the worker's runtime"),
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!(worker = index, error = %e, "cannot register the listener"),
            };
            let worker = Rc::new(Worker::new(index, shared, mesh, engine));
            worker.run(listener, serve, inbox, stop).await;
        });
    })
}

impl Worker {
    pub(crate) fn new(index: usize, shared: Arc<Shared>, mesh: Mesh, engine: Engine) -> Self {
        let homes = Homes::new(
            mesh.len(),
            shared.config.history(),
            shared.config.limits.max_rooms,
        );
        Worker {
            index,
            shared,
            mesh,
            engine,
            conns: RefCell::new(Slab::new()),
            generation: Cell::new(0),
            http: RefCell::new(Slab::new()),
            pending: RefCell::new(Slab::new()),
            local: RefCell::new(HashMap::new()),
            homes: RefCell::new(homes),
            dirty: RefCell::new(Vec::new()),
            home_out: RefCell::new(Vec::new()),
            flush_now: Notify::new(),
            empty: Notify::new(),
            scratch: RefCell::new(BytesMut::with_capacity(SCRATCH_SIZE)),
            outbox_reported: Cell::new(0),
        }
    }

    async fn run(
        self: &Rc<Self>,
        listener: TcpListener,
        serve: Serve,
        inbox: mpsc::UnboundedReceiver<WorkerMsg>,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::task::spawn_local(self.clone().inbox(inbox));
        tokio::task::spawn_local(self.clone().flusher());
        tokio::task::spawn_local(self.clone().sweeper());
        tokio::task::spawn_local(self.clone().presence_batcher());
        let acceptor = tokio::task::spawn_local(serve(self.clone(), listener));
        let _ = stop.wait_for(|s| *s).await;
        self.drain().await;
        // Newcomers still get their 503 until the whole node has drained (bounded, in case
        // a worker never started and so never counts itself out).
        let drain = Duration::from_millis(self.shared.config.server.drain_timeout_ms);
        let _ = tokio::time::timeout(drain, self.shared.drained()).await;
        acceptor.abort();
        // The flusher may not run again.
        self.send_to_broker();
    }

    async fn inbox(self: Rc<Self>, mut inbox: mpsc::UnboundedReceiver<WorkerMsg>) {
        while let Some(msg) = inbox.recv().await {
            self.handle(msg);
            // Take everything already waiting before the flusher runs: one write per
            // connection for the whole batch.
            while let Ok(msg) = inbox.try_recv() {
                self.handle(msg);
            }
        }
    }

    fn handle(self: &Rc<Self>, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Home(m) => self.handle_home(m),
            WorkerMsg::Local(m) => self.handle_local(m),
        }
    }

    /// Sends a room request to the engine: the room's home worker (handled here if that
    /// is us), or the node's broker engine. Raw rooms always have a home worker: they
    /// keep no state worth sharing.
    pub(crate) fn to_home(self: &Rc<Self>, room: &RoomName, msg: HomeMsg) {
        if let (Engine::Redis(_), false) = (&self.engine, msg.is_raw()) {
            return self.to_broker(msg);
        }
        let home = Engine::home_of(room, self.mesh.len());
        self.send_home(home, msg);
    }

    /// Queues a request for the broker engine (dropped with the memory engine, which has
    /// none). A worker's requests of one turn reach the engine together when the flusher
    /// runs, before the turn's writes, so the engine sends a burst of publishes to Redis
    /// as one pipeline and the nodes get its messages back as one burst, one write per
    /// member (see `docs/performance.md`).
    pub(crate) fn to_broker(&self, msg: HomeMsg) {
        let Engine::Redis(redis) = &self.engine else {
            return;
        };
        let mut out = self.home_out.borrow_mut();
        out.push(msg);
        if self.shared.is_draining() {
            // The flusher may not run again (the worker is stopping).
            return redis.send_all(std::mem::take(&mut *out));
        }
        if out.len() == 1 {
            self.flush_now.notify_one();
        }
    }

    /// Handles a request as the home of its room (memory engine).
    fn handle_home(self: &Rc<Self>, msg: HomeMsg) {
        // Decide under the borrow, send after it: sending to ourselves re-enters.
        let mut out = Vec::new();
        self.homes
            .borrow_mut()
            .handle(msg, &self.shared.stats, &mut out);
        for (worker, msg) in out {
            self.to_local(worker, msg);
        }
    }

    /// Sends each pending presence diff (memory engine).
    fn push_presence_diffs(self: &Rc<Self>) {
        let mut out = Vec::new();
        self.homes.borrow_mut().presence_diffs(&mut out);
        for (worker, msg) in out {
            self.to_local(worker, msg);
        }
    }

    /// Sends a result to the worker holding the connections, or handles it here.
    fn to_local(self: &Rc<Self>, worker: usize, msg: LocalMsg) {
        if worker == self.index {
            self.handle_local(msg);
        } else {
            let _ = self.mesh[worker].send(WorkerMsg::Local(msg));
        }
    }

    /// Sends a message to a worker's local side (for the HTTP endpoints).
    pub(crate) fn send_local(self: &Rc<Self>, worker: usize, msg: LocalMsg) {
        self.to_local(worker, msg);
    }

    /// Sends a request to a given worker's home side (for node-wide queries).
    pub(crate) fn send_home(self: &Rc<Self>, worker: usize, msg: HomeMsg) {
        if worker == self.index {
            self.handle_home(msg);
        } else {
            let _ = self.mesh[worker].send(WorkerMsg::Home(msg));
        }
    }

    /// Every room the engine holds: this node's (memory), the cluster's (Redis). `None`
    /// when the engine does not answer in time (or cannot: Redis unreachable).
    pub(crate) async fn rooms(self: &Rc<Self>) -> Option<Vec<RoomInfo>> {
        let mut all = Vec::new();
        let homes = match &self.engine {
            Engine::Redis(_) => 1,
            Engine::Memory => self.workers(),
        };
        for w in 0..homes {
            let (reply, rx) = oneshot::channel();
            match &self.engine {
                Engine::Redis(_) => self.to_broker(HomeMsg::Rooms { reply }),
                Engine::Memory => self.send_home(w, HomeMsg::Rooms { reply }),
            }
            all.extend(tokio::time::timeout(QUERY_TIMEOUT, rx).await.ok()?.ok()?);
        }
        all.sort_by(|a, b| a.room.cmp(&b.room));
        Some(all)
    }

    /// The live nodes: this one alone (memory), every node heard from lately (Redis).
    pub(crate) async fn nodes(self: &Rc<Self>) -> Option<Vec<NodeInfo>> {
        if let Engine::Redis(_) = &self.engine {
            let (reply, rx) = oneshot::channel();
            self.to_broker(HomeMsg::Nodes { reply });
            return tokio::time::timeout(QUERY_TIMEOUT, rx).await.ok()?.ok();
        }
        let rooms = self.rooms().await?;
        Some(vec![NodeInfo {
            id: self.shared.node_id.clone(),
            address: self.shared.address.clone(),
            connections: self.shared.stats.connections.load(Ordering::Relaxed),
            rooms: rooms.iter().filter(|r| r.members > 0).count(),
            since_ms: self.shared.started_ms,
        }])
    }

    /// The number of workers.
    pub(crate) fn workers(&self) -> usize {
        self.mesh.len()
    }

    /// A new generation for a key, so that a key whose slot was reused names nothing.
    fn next_generation(&self) -> u32 {
        let generation = self.generation.get().wrapping_add(1);
        self.generation.set(generation);
        generation
    }

    /// Takes the waiting end of a pending HTTP request, if `key` still names it (a late
    /// reply or a cancel must not reach a newer request in the same slot).
    pub(crate) fn take_pending(&self, key: ConnKey) -> Option<oneshot::Sender<Reply>> {
        let Addr::Pending(slot) = key.addr() else {
            return None;
        };
        let mut pending = self.pending.borrow_mut();
        if pending.get(slot).is_some_and(|(g, _)| *g == key.generation) {
            return Some(pending.remove(slot).1);
        }
        None
    }

    /// Forgets a pending HTTP request that gave up waiting.
    pub(crate) fn cancel_pending(&self, key: ConnKey) {
        self.take_pending(key);
    }

    /// Registers a new room connection whose handshake is done.
    pub(crate) fn register(&self, io: Io, read: BytesMut) -> Rc<Conn> {
        let mut conns = self.conns.borrow_mut();
        let entry = conns.vacant_entry();
        let key = ConnKey::new(
            self.index,
            Addr::Socket(entry.key()),
            self.next_generation(),
        );
        let ws = Connection::new(Role::Server, self.shared.config.ws_limits());
        let conn = Rc::new(Conn::new(key, io, ws, read));
        entry.insert(conn.clone());
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        conn
    }

    /// Removes a connection: it leaves every room (presence updates right away) and is
    /// forgotten.
    pub(crate) fn unregister(self: &Rc<Self>, conn: &Rc<Conn>) {
        if let Some(ip) = conn.counted_ip.take() {
            self.shared.limits.release(ip, false);
        }
        let memberships = std::mem::take(&mut conn.session.borrow_mut().rooms);
        let client = conn.session.borrow().client.clone();
        for m in memberships {
            self.drop_membership(conn, m, client.as_ref());
        }
        let mut conns = self.conns.borrow_mut();
        if conns
            .get(conn.key.slot as usize)
            .is_some_and(|c| Rc::ptr_eq(c, conn))
        {
            conns.remove(conn.key.slot as usize);
            self.shared
                .stats
                .connections
                .fetch_sub(1, Ordering::Relaxed);
        }
        if conns.is_empty() {
            self.empty.notify_waiters();
        }
    }

    /// Looks a connection up by key.
    fn conn(&self, key: ConnKey) -> Option<Rc<Conn>> {
        let Addr::Socket(slot) = key.addr() else {
            return None;
        };
        self.conns
            .borrow()
            .get(slot)
            .filter(|c| c.key == key)
            .cloned()
    }

    /// Looks an HTTP member up by key.
    fn http_member(&self, key: ConnKey) -> Option<Arc<HttpMember>> {
        let Addr::Http(slot) = key.addr() else {
            return None;
        };
        self.http
            .borrow()
            .get(slot)
            .filter(|m| m.key == key)
            .cloned()
    }

    /// Registers an HTTP member owned by this worker, and its session node-wide.
    pub(crate) fn register_http(&self, kind: HttpKind, client: Arc<str>) -> Arc<HttpMember> {
        let mut http = self.http.borrow_mut();
        let entry = http.vacant_entry();
        let key = ConnKey::new(self.index, Addr::Http(entry.key()), self.next_generation());
        let session: Arc<str> = Arc::from(self.shared.new_session_id());
        let member = Arc::new(HttpMember::new(
            session,
            client,
            kind,
            key,
            self.shared.config.websocket.max_queued_bytes,
        ));
        entry.insert(member.clone());
        self.shared.sessions_insert(&member);
        member
    }

    /// Removes an HTTP member: it leaves its rooms (its presence ends) and its session is
    /// forgotten.
    pub(crate) fn remove_http(self: &Rc<Self>, member: &Arc<HttpMember>) {
        let Addr::Http(slot) = member.key.addr() else {
            return;
        };
        {
            let mut http = self.http.borrow_mut();
            if !http.get(slot).is_some_and(|m| Arc::ptr_eq(m, member)) {
                return;
            }
            http.remove(slot);
        }
        self.shared.sessions_remove(&member.session);
        if let Some(ip) = member.state().counted_ip.take() {
            self.shared.limits.release(ip, true);
        }
        let rooms = std::mem::take(&mut member.state().rooms);
        for r in rooms {
            self.drop_http_membership(member, r);
        }
        let ended = member.state().ended.clone();
        // A drain's 1001 means "elsewhere": its cursor may open a session on another node.
        if let (HttpKind::Poll, Some((code, reason))) = (member.kind, ended)
            && code != 1001
        {
            self.shared.session_ended(&member.session, code, &reason);
        }
        member.close();
    }

    /// An address for one reply to an HTTP request, and where it will arrive.
    pub(crate) fn pending(&self) -> (ConnKey, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let generation = self.next_generation();
        let slot = self.pending.borrow_mut().insert((generation, tx));
        (
            ConnKey::new(self.index, Addr::Pending(slot), generation),
            rx,
        )
    }

    /// Sends `reply` to what `to` names: a pending HTTP request or a connection.
    pub(crate) fn reply_to(self: &Rc<Self>, to: ConnKey, reply: Reply) {
        self.to_local(usize::from(to.worker), LocalMsg::Reply { conn: to, reply });
    }

    /// Hands the engine the requests queued by `to_broker`.
    fn send_to_broker(&self) {
        if let Engine::Redis(redis) = &self.engine {
            redis.send_all(std::mem::take(&mut *self.home_out.borrow_mut()));
        }
    }

    /// Puts a connection on the list the flusher writes.
    pub(crate) fn mark_dirty(&self, conn: &Rc<Conn>) {
        if conn.busy.get() {
            return;
        }
        if !conn.dirty.replace(true) {
            let mut dirty = self.dirty.borrow_mut();
            if dirty.is_empty() {
                self.flush_now.notify_one();
            }
            dirty.push(conn.clone());
        }
    }

    async fn flusher(self: Rc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.flush_now.notified().await;
            self.send_to_broker();
            std::mem::swap(&mut batch, &mut *self.dirty.borrow_mut());
            for conn in batch.drain(..) {
                conn.dirty.set(false);
                let _ = conn.flush();
            }
        }
    }

    /// How long a close we start may take: 2 s, or while the node drains the whole
    /// `server.drain_timeout_ms`, which the drain itself bounds (it drops what is left when
    /// its deadline passes).
    pub(crate) fn close_timeout(&self) -> Duration {
        if self.shared.is_draining() {
            Duration::from_millis(self.shared.config.server.drain_timeout_ms)
        } else {
            Duration::from_secs(2)
        }
    }

    /// Heartbeats, idle connections, history expiry.
    async fn sweeper(self: Rc<Self>) {
        let ws = &self.shared.config.websocket;
        let mut shortest = 1000;
        let release_ms = ws.compressor_release().map_or(0, |d| d.as_millis() as u64);
        for t in [
            ws.heartbeat_interval_ms,
            ws.heartbeat_timeout_ms,
            ws.idle_timeout_ms,
            release_ms,
        ] {
            if t > 0 {
                shortest = shortest.min(t);
            }
        }
        let period = Duration::from_millis((shortest / 4).clamp(10, 1000));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_expiry = Instant::now();
        loop {
            tick.tick().await;
            let now = Instant::now();
            self.sweep_connections(now);
            if now.duration_since(last_expiry) >= Duration::from_secs(1) {
                last_expiry = now;
                self.expire_rooms();
            }
        }
    }

    /// Folds what this worker's sockets read and wrote since the last sweep, and what
    /// waits in their outboxes now, into the node's counters (`/metrics`): one shared
    /// write a sweep instead of one a syscall.
    fn report_io(&self) {
        let stats = &self.shared.stats;
        let (read, written) = socket::take_io_bytes();
        Stats::add(&stats.bytes_in, read);
        Stats::add(&stats.bytes_out, written);
        let queued: usize = self
            .conns
            .borrow()
            .iter()
            .map(|(_, c)| c.ws.borrow_mut().outbox().len_bytes())
            .sum();
        let queued = i64::try_from(queued).unwrap_or(i64::MAX);
        let delta = queued - self.outbox_reported.replace(queued);
        stats.outbox_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    /// Whether a token is due: `Some(false)` when the `token_expiring` warning is to be
    /// sent now (marked sent), `Some(true)` once `exp` (and the leeway) has passed.
    fn token_due(&self, id: Option<&Identity>, warned: &mut bool, now_ms: u64) -> Option<bool> {
        let exp = id?.expires_ms;
        let auth = &self.shared.auth;
        if now_ms >= exp.saturating_add(auth.leeway_ms()) {
            return Some(true);
        }
        if !*warned && now_ms.saturating_add(auth.warning_ms()) >= exp {
            *warned = true;
            return Some(false);
        }
        None
    }

    /// Whether a `/ws` connection has gone without a `hello` for longer than the
    /// handshake timeout while tokens are required: it could otherwise hold a socket
    /// forever without one. (A raw room's connection has its token from the handshake.)
    fn hello_overdue(&self, conn: &Conn, now: Instant) -> bool {
        if !conn.awaits_hello.get()
            || !self.shared.auth.is_required()
            || conn.close_deadline.get().is_some()
        {
            return false;
        }
        let session = conn.session.borrow();
        session.client.is_none()
            && session.auth.is_none()
            && now.duration_since(conn.opened) > self.shared.config.handshake_timeout()
    }

    fn sweep_connections(self: &Rc<Self>, now: Instant) {
        self.report_io();
        let idle_ms = self.shared.config.websocket.idle_timeout_ms;
        let release_compressor = self.shared.config.websocket.compressor_release();
        let ttl = self.shared.config.http.poll_session_ttl_ms;
        let now_ms = crate::now_ms();
        // Only the members to remove are collected (usually none): removing one needs
        // the registry unborrowed.
        let gone: Vec<Arc<HttpMember>> = self
            .http
            .borrow()
            .iter()
            .filter(|(_, m)| {
                let expired = m.kind == HttpKind::Poll
                    && now_ms.saturating_sub(m.last_seen.load(Ordering::Relaxed)) > ttl;
                let due = {
                    let st = &mut *m.state();
                    let due = self.token_due(st.auth.as_ref(), &mut st.warned, now_ms);
                    due.zip(st.auth.as_ref().map(|a| a.expires_ms))
                };
                let token_expired = match due {
                    Some((true, _)) => {
                        Stats::add(&self.shared.stats.token_expiries, 1);
                        m.end(4009, "token expired");
                        true
                    }
                    Some((false, exp)) => {
                        let json = crate::member::frame_json(&reply::token_expiring(exp));
                        m.push(None, crate::member::EventKind::TokenExpiring, json);
                        false
                    }
                    None => false,
                };
                expired || token_expired || m.is_closed()
            })
            .map(|(_, m)| m.clone())
            .collect();
        for m in gone {
            self.remove_http(&m);
        }
        // Nothing below registers or unregisters a connection (closing only queues a
        // frame and wakes the task), so the slab is walked in place.
        for (_, conn) in self.conns.borrow().iter() {
            if conn.close_deadline.get().is_some_and(|d| now >= d) {
                // A close we started went unanswered: drop the connection.
                conn.dead.set(true);
                conn.wake();
                continue;
            }
            conn.release_idle(now, release_compressor);
            if self.hello_overdue(conn, now) {
                Stats::add(&self.shared.stats.auth_refusals, 1);
                conn.close(
                    self,
                    CloseCode(4001),
                    "no hello with a token in time",
                    false,
                );
                continue;
            }
            let due = {
                let session = &mut *conn.session.borrow_mut();
                let due = self.token_due(session.auth.as_deref(), &mut session.warned, now_ms);
                due.zip(session.auth.as_ref().map(|a| a.expires_ms))
            };
            match due {
                Some((true, _)) => {
                    Stats::add(&self.shared.stats.token_expiries, 1);
                    conn.close(self, CloseCode(4009), "token expired", false);
                    continue;
                }
                Some((false, exp)) => conn.push(self, reply::token_expiring(exp)),
                None => {}
            }
            if !conn.heartbeat(self, now) {
                Stats::add(&self.shared.stats.heartbeat_timeouts, 1);
                tracing::debug!(conn = ?conn.key, "no pong within the heartbeat timeout");
                conn.close(self, CloseCode::GOING_AWAY, "heartbeat timeout", true);
            } else if idle_ms > 0
                && now.duration_since(conn.last_message.get()).as_millis() as u64 > idle_ms
            {
                conn.close(self, CloseCode::NORMAL, "idle timeout", false);
            }
        }
    }

    fn expire_rooms(&self) {
        self.homes
            .borrow_mut()
            .expire(crate::now_ms(), &self.shared.stats);
    }

    async fn presence_batcher(self: Rc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            self.shared.config.rooms.presence_batch_ms,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.homes.borrow().presence_pending() {
                self.push_presence_diffs();
            }
        }
    }

    /// Stops the worker's connections: each is closed with 1001 and gets until the drain
    /// timeout to finish its closing handshake.
    async fn drain(self: &Rc<Self>) {
        // Before the closes: they take the drain's timeout, not the usual 2 s.
        self.shared.set_draining();
        // From now on requests go to the engine at once; what waits goes first.
        self.send_to_broker();
        let conns: Vec<Rc<Conn>> = self.conns.borrow().iter().map(|(_, c)| c.clone()).collect();
        tracing::info!(worker = self.index, connections = conns.len(), "draining");
        for conn in &conns {
            conn.close(self, CloseCode::GOING_AWAY, "server draining", false);
        }
        drop(conns);
        let members: Vec<Arc<HttpMember>> =
            self.http.borrow().iter().map(|(_, m)| m.clone()).collect();
        for m in members {
            m.end(1001, "server draining");
            self.remove_http(&m);
        }
        let deadline =
            Instant::now() + Duration::from_millis(self.shared.config.server.drain_timeout_ms);
        while !self.conns.borrow().is_empty() {
            let empty = self.empty.notified();
            if tokio::time::timeout_at(deadline, empty).await.is_err() {
                tracing::warn!(
                    worker = self.index,
                    left = self.conns.borrow().len(),
                    "drain timeout: dropping the rest"
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pending HTTP request's key names it only until it is answered or cancelled.
    #[tokio::test]
    async fn a_stale_pending_key_reaches_nothing() {
        let shared = Arc::new(Shared::for_tests(crate::Config::default()));
        let (tx, _rx) = mpsc::unbounded_channel();
        let worker = Worker::new(0, shared, vec![tx].into(), Engine::Memory);
        let (old, _old_rx) = worker.pending();
        worker.cancel_pending(old);
        let (new, mut new_rx) = worker.pending();
        assert_eq!(old.addr(), new.addr(), "the slot is reused");
        // A late reply or a second cancel for the old request leaves the new one waiting.
        worker.cancel_pending(old);
        assert!(worker.take_pending(old).is_none());
        let waiting = worker.take_pending(new).expect("the new request waits");
        let r = Reply::Frame(bytes::Bytes::from_static(b"r"));
        waiting.send(r.clone()).unwrap();
        assert_eq!(new_rx.try_recv().unwrap(), r);
    }
}
