//! The Redis engine: rooms shared by every node that uses the same Redis.
//!
//! One engine per node runs on a thread of its own (`roomcast-broker`). Workers send it
//! the same [`HomeMsg`] requests the memory engine takes, and it answers with the same
//! [`LocalMsg`] events, on the workers' inboxes. It owns two connections to Redis: a
//! multiplexed one for commands, and one for pub/sub. What Redis holds, and the scripts,
//! are in [`scripts`].
//!
//! - **Publish** is one script call (one round trip): idempotency key, epoch, next offset,
//!   append, trim, save the key, publish. The ack waits for the script's reply.
//! - **Commands go in order**: every request waiting when the previous batch came back
//!   goes out as one pipeline, so a connection's requests reach Redis in the order it
//!   sent them, and one round trip carries many.
//! - **Live messages** come on the room's channel, which the node subscribes to while it
//!   has members there. The node remembers, per room, the epoch and the last offset it
//!   delivered: an older offset is dropped, a skipped one is read from the stream before
//!   anything later is delivered, a new epoch is told to the members (an unsolicited
//!   `joined` with `recovered:false`). Each room is checked against the stream's top
//!   every tick, so a message whose pub/sub copy was lost in a quiet room is found.
//! - **Joins** subscribe first, then read the epoch, the top and (with `since`) the
//!   missed entries; live messages wait while a read is out. The joiner gets `joined`
//!   at the node's position, its backlog up to there, then live messages.
//! - **Redis gone**: every request that needs it answers `unavailable`; the engine
//!   reconnects every 250 ms, then resubscribes every room and catches each up from its
//!   stream.
//! - **Presence** is kept in Redis per client and node with an expiry that each node
//!   refreshes; a node that dies stops refreshing, and the next node to sweep the room
//!   removes its members and publishes their leave.

mod scripts;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink};
use redis::{Cmd, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use self::scripts::Keys;
use super::{ConnKey, HomeMsg, Join, LocalMsg, Mesh, Publish, WorkerMsg};
use crate::hub::{HistoryLimits, Subs};
use crate::protocol::{ErrorCode, JsonFrame, RoomName, SincePos, reply};
use crate::stats::Stats;

/// What the engine needs to know of its node.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub url: String,
    pub node: Arc<str>,
    pub history: HistoryLimits,
    pub presence_ttl_ms: u64,
    pub presence_batch_ms: u64,
    pub node_ttl_ms: u64,
}

/// Where workers send the Redis engine their requests.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<HomeMsg>,
    up: Arc<AtomicBool>,
}

impl Handle {
    /// Queues a request for the engine.
    pub(crate) fn send(&self, msg: HomeMsg) {
        let _ = self.tx.send(msg);
    }

    /// Whether the engine is connected to Redis.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Starts the engine on its own thread. It stops once every [`Handle`] is dropped.
pub(crate) fn start(
    settings: Settings,
    mesh: Mesh,
    stats: Arc<Stats>,
) -> Result<(Handle, std::thread::JoinHandle<()>), redis::RedisError> {
    let client = redis::Client::open(settings.url.as_str())?;
    let (tx, inbox) = mpsc::unbounded_channel();
    let up = Arc::new(AtomicBool::new(false));
    let handle = Handle { tx, up: up.clone() };
    let thread = std::thread::Builder::new()
        .name("roomcast-broker".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "cannot start the broker's runtime"),
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let (events, rx) = mpsc::unbounded_channel();
                let broker = Broker {
                    rooms: HashMap::new(),
                    queue: Vec::new(),
                    in_flight: None,
                    link: None,
                    generation: 0,
                    connecting: false,
                    incarnations: 0,
                    scripts: Scripts::new(),
                    started_ms: crate::now_ms(),
                    presence_dirty: Vec::new(),
                    settings,
                    mesh,
                    stats,
                    up,
                    client,
                    events,
                };
                broker.run(inbox, rx).await;
            });
        })
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
    Ok((handle, thread))
}

/// The scripts, by their hashes, and their sources (loaded on every new connection).
struct Scripts {
    publish: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    tick: redis::Script,
    history: redis::Script,
    presence: redis::Script,
    sources: std::rc::Rc<[String]>,
}

impl Scripts {
    fn new() -> Self {
        let bodies = [
            scripts::PUBLISH,
            scripts::JOIN,
            scripts::LEAVE,
            scripts::TICK,
            scripts::HISTORY,
            scripts::PRESENCE,
        ];
        let sources = bodies.map(scripts::full);
        let [publish, join, leave, tick, history, presence] =
            sources.each_ref().map(|s| redis::Script::new(s));
        Self {
            publish,
            join,
            leave,
            tick,
            history,
            presence,
            sources: sources.into(),
        }
    }
}

/// `EVALSHA` of a loaded script.
fn eval(script: &redis::Script, keys: &[String], args: &[&[u8]]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    for a in args {
        cmd.arg(*a);
    }
    cmd
}

/// The two connections, while Redis is reachable.
struct Link {
    generation: u64,
    conn: MultiplexedConnection,
    sink: PubSubSink,
}

/// What the engine's own tasks tell it.
enum Event {
    Up(Link),
    Down(u64),
    Done(u64, Vec<Then>, redis::RedisResult<Vec<Value>>),
    Subscribed(u64, Vec<RoomName>, bool),
    Live(u64, String, Bytes),
}

/// What to do with a command's reply.
enum Then {
    Publish {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
    },
    Join(Join, u64),
    /// A read for a join whose node was behind it (no side effects).
    JoinRead(Join, u64),
    Fill(RoomName, u64),
    Tick(RoomName, u64),
    History {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
    },
    Presence {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
    },
    Nothing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    No,
    Pending,
    Yes,
}

/// A live message on a room's channel.
#[derive(Debug)]
struct Live {
    offset: u64,
    epoch: Arc<str>,
    json: Bytes,
}

/// What the node knows of a room it has members in.
#[derive(Debug)]
struct RoomState {
    incarnation: u64,
    subs: Vec<Subs>,
    /// This node's visible clients, and their memberships here.
    clients: HashMap<Arc<str>, u32>,
    sub: Sub,
    /// The epoch and the last offset delivered to this node's members.
    epoch: Option<Arc<str>>,
    last: u64,
    /// Reads out for this room: live messages wait while there are any.
    busy: u32,
    held: VecDeque<Live>,
    /// Joins waiting for the subscription.
    joins: Vec<Join>,
    /// Acks waiting for their message to be delivered here: (offset, worker, conn,
    /// frame, deadline).
    acks: Vec<(u64, ConnKey, Bytes, Instant)>,
    diff_joined: Vec<(Arc<str>, Bytes)>,
    diff_left: Vec<Arc<str>>,
    /// A fill is wanted once the reads out come back.
    want_fill: bool,
}

impl RoomState {
    fn new(incarnation: u64, workers: usize) -> Self {
        Self {
            incarnation,
            subs: vec![Subs::default(); workers],
            clients: HashMap::new(),
            sub: Sub::No,
            epoch: None,
            last: 0,
            busy: 0,
            held: VecDeque::new(),
            joins: Vec::new(),
            acks: Vec::new(),
            diff_joined: Vec::new(),
            diff_left: Vec::new(),
            want_fill: false,
        }
    }

    fn members(&self) -> u32 {
        self.subs.iter().map(|s| s.members).sum()
    }
}

struct Broker {
    settings: Settings,
    mesh: Mesh,
    stats: Arc<Stats>,
    up: Arc<AtomicBool>,
    client: redis::Client,
    events: mpsc::UnboundedSender<Event>,
    rooms: HashMap<RoomName, RoomState>,
    queue: Vec<(Cmd, Then)>,
    /// The generation of the link whose batch is out, if one is.
    in_flight: Option<u64>,
    link: Option<Link>,
    generation: u64,
    connecting: bool,
    incarnations: u64,
    scripts: Scripts,
    started_ms: u64,
    /// Rooms with a presence diff gathering, each once.
    presence_dirty: Vec<RoomName>,
}

const RECONNECT_EVERY: Duration = Duration::from_millis(250);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an ack waits for its message to arrive here before it is sent anyway (the
/// message is stored; the room is then read from the stream).
const ACK_WAIT: Duration = Duration::from_millis(500);
const MAX_BATCH: usize = 512;

impl Broker {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<HomeMsg>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        self.connect();
        let tick_ms = (self.settings.presence_ttl_ms / 3).clamp(200, 5000);
        let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = tokio::time::interval(Duration::from_millis(
            self.settings.presence_batch_ms.max(1),
        ));
        batch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beat_ms = (self.settings.node_ttl_ms / 3).max(200);
        let mut beat = tokio::time::interval(Duration::from_millis(beat_ms));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(msg) => {
                        self.request(msg);
                        while let Ok(msg) = inbox.try_recv() {
                            self.request(msg);
                        }
                    }
                    None => break,
                },
                Some(event) = events.recv() => self.event(event),
                _ = tick.tick() => self.tick(),
                _ = batch.tick() => self.presence_diffs(),
                _ = beat.tick() => self.beat(),
            }
            self.pump();
        }
        // The node is stopping: what is queued (its members' leaves) still goes out.
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.in_flight.is_some() || !self.queue.is_empty()) && self.link.is_some() {
            self.pump();
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => self.event(event),
                _ => break,
            }
        }
        if let Some(link) = &self.link {
            let mut conn = link.conn.clone();
            let node = self.settings.node.to_string();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                redis::pipe()
                    .hdel("rc:nodes", &node)
                    .zrem("rc:nodes:seen", &node)
                    .query_async::<()>(&mut conn),
            )
            .await;
        }
    }

    fn to_worker(&self, worker: usize, msg: LocalMsg) {
        if let Some(tx) = self.mesh.get(worker) {
            let _ = tx.send(WorkerMsg::Local(msg));
        }
    }

    fn reply(&self, conn: ConnKey, frame: Bytes) {
        self.to_worker(usize::from(conn.worker), LocalMsg::Reply { conn, frame });
    }

    fn unavailable(&self, conn: ConnKey, reference: Option<u64>) {
        self.reply(
            conn,
            reply::error(
                reference,
                ErrorCode::Unavailable,
                "the broker is unreachable: retry (a publish with its id is safe to retry)",
            ),
        );
    }

    fn connect(&mut self) {
        if self.connecting || self.link.is_some() {
            return;
        }
        self.connecting = true;
        self.generation += 1;
        let generation = self.generation;
        let client = self.client.clone();
        let events = self.events.clone();
        let sources = self.scripts.sources.clone();
        tokio::task::spawn_local(async move {
            loop {
                match open(&client, &sources, generation, &events).await {
                    Ok(link) => {
                        let _ = events.send(Event::Up(link));
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "broker: cannot connect yet");
                        tokio::time::sleep(RECONNECT_EVERY).await;
                    }
                }
            }
        });
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Up(link) => {
                self.connecting = false;
                tracing::info!(url = %self.settings.url, "broker connected");
                self.up.store(true, Ordering::Relaxed);
                self.link = Some(link);
                let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
                for name in &rooms {
                    if let Some(r) = self.rooms.get_mut(name) {
                        r.sub = Sub::Pending;
                    }
                }
                self.subscribe(rooms);
                self.beat();
            }
            Event::Down(generation) => self.down(generation),
            Event::Done(generation, thens, result) => {
                if self.in_flight == Some(generation) {
                    self.in_flight = None;
                }
                match result {
                    Ok(values) if values.len() == thens.len() => {
                        for (then, value) in thens.into_iter().zip(values) {
                            self.done(then, Ok(value));
                        }
                    }
                    Ok(_) | Err(_) => {
                        if let Err(e) = &result {
                            tracing::warn!(error = %e, "broker: a batch failed");
                        }
                        for then in thens {
                            self.done(then, Err(()));
                        }
                        self.down(generation);
                    }
                }
            }
            Event::Subscribed(generation, rooms, ok) => {
                if !ok {
                    return self.down(generation);
                }
                for name in rooms {
                    self.subscribed(name);
                }
            }
            Event::Live(generation, channel, payload) => {
                if self
                    .link
                    .as_ref()
                    .is_some_and(|l| l.generation == generation)
                {
                    self.live(&channel, payload);
                }
            }
        }
    }

    fn down(&mut self, generation: u64) {
        if self
            .link
            .as_ref()
            .is_none_or(|l| l.generation != generation)
        {
            return;
        }
        tracing::warn!(url = %self.settings.url, "broker connection lost; reconnecting");
        self.link = None;
        // A batch still out on the dead link answers (or fails) on its own; the next
        // link does not wait for it.
        self.in_flight = None;
        self.up.store(false, Ordering::Relaxed);
        let mut failed = Vec::new();
        for r in self.rooms.values_mut() {
            r.sub = Sub::No;
            failed.append(&mut r.joins);
        }
        for j in failed {
            self.join_failed(j);
        }
        for (_, then) in std::mem::take(&mut self.queue) {
            self.done(then, Err(()));
        }
        self.connect();
    }

    fn subscribe(&mut self, rooms: Vec<RoomName>) {
        let Some(link) = &self.link else { return };
        if rooms.is_empty() {
            return;
        }
        let mut sink = link.sink.clone();
        let generation = link.generation;
        let events = self.events.clone();
        let channels: Vec<String> = rooms
            .iter()
            .map(|r| Keys::new(r.as_str()).channel())
            .collect();
        tokio::task::spawn_local(async move {
            let ok = tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels))
                .await
                .is_ok_and(|r| r.is_ok());
            let _ = events.send(Event::Subscribed(generation, rooms, ok));
        });
    }

    fn unsubscribe(&mut self, room: &RoomName) {
        let Some(link) = &self.link else { return };
        let mut sink = link.sink.clone();
        let channel = Keys::new(room.as_str()).channel();
        tokio::task::spawn_local(async move {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(channel)).await;
        });
    }

    fn subscribed(&mut self, name: RoomName) {
        let Some(r) = self.rooms.get_mut(&name) else {
            return;
        };
        if r.sub != Sub::Pending {
            return;
        }
        r.sub = Sub::Yes;
        let joins = std::mem::take(&mut r.joins);
        let catch_up = r.epoch.is_some();
        if catch_up {
            self.fill(&name, false);
        }
        for j in joins {
            self.send_join(j);
        }
    }

    /// Sends what is queued, as one pipeline, if nothing is out.
    fn pump(&mut self) {
        if self.in_flight.is_some() || self.queue.is_empty() {
            return;
        }
        let Some(link) = &self.link else { return };
        let take = self.queue.len().min(MAX_BATCH);
        let ops: Vec<(Cmd, Then)> = self.queue.drain(..take).collect();
        let mut pipe = redis::pipe();
        let mut thens = Vec::with_capacity(ops.len());
        for (cmd, then) in ops {
            pipe.add_command(cmd);
            thens.push(then);
        }
        let mut conn = link.conn.clone();
        let generation = link.generation;
        let events = self.events.clone();
        self.in_flight = Some(generation);
        tokio::task::spawn_local(async move {
            let n = thens.len();
            let result = conn.req_packed_commands(&pipe, 0, n).await;
            let _ = events.send(Event::Done(generation, thens, result));
        });
    }

    fn enqueue(&mut self, cmd: Cmd, then: Then) {
        self.queue.push((cmd, then));
    }

    fn request(&mut self, msg: HomeMsg) {
        match msg {
            HomeMsg::Join(join) => self.join(join),
            HomeMsg::Leave {
                room,
                worker,
                client,
                presence,
            } => self.leave(room, usize::from(worker), client, presence),
            HomeMsg::Publish(publish) => self.publish(publish),
            HomeMsg::Presence {
                room,
                conn,
                reference,
            } => {
                if self.link.is_none() {
                    return self.unavailable(conn, reference);
                }
                let k = Keys::new(room.as_str());
                let channel = k.channel();
                let cmd = eval(&self.scripts.presence, &k.all(), &[channel.as_bytes()]);
                self.enqueue(
                    cmd,
                    Then::Presence {
                        room,
                        conn,
                        reference,
                    },
                );
            }
            HomeMsg::History {
                room,
                conn,
                reference,
                since,
                limit,
            } => {
                if self.link.is_none() {
                    return self.unavailable(conn, reference);
                }
                let cmd = self.history_cmd(&room, since.as_ref(), limit);
                self.enqueue(
                    cmd,
                    Then::History {
                        room,
                        conn,
                        reference,
                    },
                );
            }
            HomeMsg::Rooms { reply } => {
                // The node's rooms, as this node sees them.
                let rooms = self
                    .rooms
                    .iter()
                    .map(|(name, r)| super::RoomInfo {
                        room: name.clone(),
                        epoch: r.epoch.clone().unwrap_or_else(|| Arc::from("")),
                        last_offset: r.last,
                        members: r.members(),
                        visible: r.clients.len(),
                    })
                    .collect();
                let _ = reply.send(rooms);
            }
            HomeMsg::RawSubscribe { .. }
            | HomeMsg::RawUnsubscribe { .. }
            | HomeMsg::RawPublish { .. } => {}
        }
    }

    fn history_cmd(&self, room: &RoomName, since: Option<&SincePos>, limit: usize) -> Cmd {
        let keys = Keys::new(room.as_str()).all();
        let (epoch, offset) = since.map_or(("", 0), |s| (s.epoch.as_str(), s.offset));
        let offset = offset.to_string();
        let limit = limit.to_string();
        eval(
            &self.scripts.history,
            &keys,
            &[epoch.as_bytes(), offset.as_bytes(), limit.as_bytes()],
        )
    }

    fn publish(&mut self, p: Publish) {
        if self.link.is_none() {
            return self.unavailable(p.conn, p.reference);
        }
        let k = Keys::new(p.room.as_str());
        let idem = match &p.id {
            Some(id) => k.key(&format!("id:{id}")),
            None => k.key("meta"),
        };
        let keys = [k.key("meta"), k.key("log"), idem];
        let mut head = Vec::with_capacity(64);
        reply::message_head(&mut head, &p.room);
        let mut tail = Vec::with_capacity(64 + p.data.len());
        reply::message_tail(&mut tail, &p.from, &p.data);
        let limits = self.settings.history;
        // Used only by the publish that creates the room's state.
        let fresh = crate::random_id(8);
        let max = limits.max_messages.to_string();
        let age = limits.max_age_ms.to_string();
        let id_ttl = limits.max_age_ms.max(1000).to_string();
        let keep = self.keep_ms().to_string();
        let channel = k.channel();
        let cmd = eval(
            &self.scripts.publish,
            &keys,
            &[
                fresh.as_bytes(),
                &head,
                &tail,
                max.as_bytes(),
                age.as_bytes(),
                id_ttl.as_bytes(),
                channel.as_bytes(),
                if p.id.is_some() { b"1" } else { b"0" },
                keep.as_bytes(),
            ],
        );
        let then = Then::Publish {
            room: p.room,
            conn: p.conn,
            reference: p.reference,
        };
        self.enqueue(cmd, then);
    }

    /// How long a room's state outlives its last publish or check: its history's age
    /// and a minute.
    fn keep_ms(&self) -> u64 {
        match self.settings.history.max_age_ms {
            0 => 0,
            age => age + 60_000,
        }
    }

    fn join(&mut self, req: Join) {
        if self.link.is_none() {
            // Not counted yet: nothing to take back.
            return self.refuse_join(req);
        }
        if !self.rooms.contains_key(&req.room) {
            self.incarnations += 1;
            let state = RoomState::new(self.incarnations, self.mesh.len());
            self.rooms.insert(req.room.clone(), state);
        }
        let Some(r) = self.rooms.get_mut(&req.room) else {
            return;
        };
        let w = usize::from(req.conn.worker).min(r.subs.len() - 1);
        r.subs[w].members += 1;
        if req.presence.is_some() {
            r.subs[w].presence += 1;
            *r.clients.entry(req.client.clone()).or_default() += 1;
        }
        match r.sub {
            Sub::Yes => self.send_join(req),
            Sub::Pending => r.joins.push(req),
            Sub::No => {
                r.sub = Sub::Pending;
                let room = req.room.clone();
                r.joins.push(req);
                self.subscribe(vec![room]);
            }
        }
    }

    fn send_join(&mut self, req: Join) {
        let Some(r) = self.rooms.get_mut(&req.room) else {
            return self.refuse_join(req);
        };
        r.busy += 1;
        let incarnation = r.incarnation;
        let k = Keys::new(req.room.as_str());
        let keys = k.all();
        let fresh = crate::random_id(8);
        let (since_epoch, since_offset) = req
            .since
            .as_ref()
            .map_or(("", 0), |s| (s.epoch.as_str(), s.offset));
        let since_offset = since_offset.to_string();
        let max = self.settings.history.max_messages.to_string();
        let ttl = self.settings.presence_ttl_ms.to_string();
        let channel = k.channel();
        let info: &[u8] = req.presence.as_deref().unwrap_or(b"");
        let cmd = eval(
            &self.scripts.join,
            &keys,
            &[
                fresh.as_bytes(),
                since_epoch.as_bytes(),
                since_offset.as_bytes(),
                max.as_bytes(),
                if req.presence.is_some() { b"1" } else { b"0" },
                req.client.as_bytes(),
                self.settings.node.as_bytes(),
                info,
                ttl.as_bytes(),
                channel.as_bytes(),
            ],
        );
        self.enqueue(cmd, Then::Join(req, incarnation));
    }

    /// A join that cannot be done: the worker forgets the membership and the member
    /// gets `unavailable`.
    fn join_failed(&mut self, req: Join) {
        self.forget_member(
            &req.room,
            usize::from(req.conn.worker),
            &req.client,
            req.presence.is_some(),
        );
        self.refuse_join(req);
    }

    /// Tells the worker a join is refused (the member is not, or no longer, counted).
    fn refuse_join(&mut self, req: Join) {
        let frame = reply::error(
            req.reference,
            ErrorCode::Unavailable,
            "the broker is unreachable: join again",
        );
        self.to_worker(
            usize::from(req.conn.worker),
            LocalMsg::JoinFailed {
                room: req.room,
                conn: req.conn,
                seq: req.seq,
                reply: frame,
                notify: req.notify,
            },
        );
    }

    /// Takes a member off the node's counts; drops the room when it was the last.
    fn forget_member(&mut self, room: &RoomName, worker: usize, client: &Arc<str>, presence: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let w = worker.min(r.subs.len().saturating_sub(1));
        r.subs[w].members = r.subs[w].members.saturating_sub(1);
        if presence {
            r.subs[w].presence = r.subs[w].presence.saturating_sub(1);
            if let Some(n) = r.clients.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    r.clients.remove(client);
                }
            }
        }
        if r.members() == 0 {
            let acks = std::mem::take(&mut r.acks);
            self.rooms.remove(room);
            for (_, conn, frame, _) in acks {
                self.reply(conn, frame);
            }
            self.unsubscribe(room);
        }
    }

    fn leave(&mut self, room: RoomName, worker: usize, client: Arc<str>, presence: bool) {
        self.forget_member(&room, worker, &client, presence);
        if self.link.is_none() {
            // The entries expire: this node no longer refreshes them.
            return;
        }
        let k = Keys::new(room.as_str());
        let keys = k.all();
        let channel = k.channel();
        let cmd = eval(
            &self.scripts.leave,
            &keys,
            &[
                client.as_bytes(),
                self.settings.node.as_bytes(),
                if presence { b"1" } else { b"0" },
                channel.as_bytes(),
            ],
        );
        self.enqueue(cmd, Then::Nothing);
    }

    /// Reads a room from the node's position on, to fill a gap or catch up: once the
    /// reads out for it are back, or at once with `now` (the pipeline keeps the order).
    fn fill(&mut self, name: &RoomName, now: bool) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.sub != Sub::Yes {
            return;
        }
        if r.busy > 0 && !now {
            r.want_fill = true;
            return;
        }
        r.busy += 1;
        let incarnation = r.incarnation;
        let since = r.epoch.as_ref().map(|e| SincePos {
            epoch: e.to_string(),
            offset: r.last,
        });
        let cmd = self.history_cmd(name, since.as_ref(), self.settings.history.max_messages);
        self.enqueue(cmd, Then::Fill(name.clone(), incarnation));
    }

    fn done(&mut self, then: Then, value: Result<Value, ()>) {
        let value = match value {
            Ok(Value::ServerError(e)) => {
                tracing::warn!(error = ?e, "broker: a script failed");
                Err(())
            }
            v => v,
        };
        match then {
            Then::Nothing => {}
            Then::Publish {
                room,
                conn,
                reference,
            } => {
                let Some((offset, epoch, duplicate)) = value.ok().and_then(parse_published) else {
                    return self.unavailable(conn, reference);
                };
                if !duplicate {
                    Stats::add(&self.stats.published, 1);
                }
                let ack = reply::ack(reference, &room, offset);
                // The publisher sees its message before the ack, as on one node: the ack
                // waits until the message was delivered here (bounded).
                let wait = self.rooms.get_mut(&room).filter(|r| {
                    !duplicate
                        && r.last < offset
                        && r.epoch.as_deref() == Some(&*epoch)
                        && r.subs
                            .get(usize::from(conn.worker))
                            .is_some_and(|s| s.members > 0)
                });
                match wait {
                    Some(r) => r.acks.push((offset, conn, ack, Instant::now() + ACK_WAIT)),
                    None => self.reply(conn, ack),
                }
            }
            Then::Join(req, incarnation) | Then::JoinRead(req, incarnation) => {
                let read = value.ok().and_then(parse_read);
                self.joined(req, incarnation, read);
            }
            Then::Fill(name, incarnation) => {
                let read = value.ok().and_then(parse_read);
                self.filled(&name, incarnation, read);
            }
            Then::Tick(name, incarnation) => {
                let Some((epoch, top)) = value.ok().and_then(parse_tick) else {
                    return;
                };
                let Some(r) = self
                    .rooms
                    .get(&name)
                    .filter(|r| r.incarnation == incarnation)
                else {
                    return;
                };
                let behind = match &r.epoch {
                    Some(e) => **e != *epoch || top > r.last,
                    None => false,
                };
                if behind {
                    self.fill(&name, false);
                }
            }
            Then::History {
                room,
                conn,
                reference,
            } => match value.ok().and_then(parse_read) {
                None => self.unavailable(conn, reference),
                Some(read) if read.epoch.is_empty() => self.reply(
                    conn,
                    reply::error(
                        reference,
                        ErrorCode::NotFound,
                        &format!("no room {room} (no members, no history)"),
                    ),
                ),
                Some(read) => {
                    let entries = self.fresh_entries(read.entries);
                    let frame = reply::history(
                        reference,
                        &room,
                        &read.epoch,
                        entries.iter().map(|(_, j)| &j[..]),
                    );
                    self.reply(conn, frame);
                }
            },
            Then::Presence {
                room,
                conn,
                reference,
            } => match value {
                Ok(Value::Array(items)) => {
                    let mut members: Vec<(Arc<str>, Bytes)> = Vec::new();
                    let mut it = items.into_iter();
                    while let (Some(c), Some(i)) = (it.next(), it.next()) {
                        if let (Some(c), Some(i)) = (bytes_of(c), bytes_of(i)) {
                            let c = String::from_utf8_lossy(&c).into_owned();
                            members.push((Arc::from(c), Bytes::from(i)));
                        }
                    }
                    members.sort_by(|a, b| a.0.cmp(&b.0));
                    let frame =
                        reply::presence(reference, &room, members.iter().map(|(c, i)| (c, i)));
                    self.reply(conn, frame);
                }
                _ => self.unavailable(conn, reference),
            },
        }
    }

    /// Drops entries older than the history's age (Redis trims them at the next publish).
    fn fresh_entries(&self, entries: Vec<(u64, u64, Bytes)>) -> Vec<(u64, Bytes)> {
        let age = self.settings.history.max_age_ms;
        let now = crate::now_ms();
        entries
            .into_iter()
            .filter(|(_, ts, _)| age == 0 || now.saturating_sub(*ts) <= age)
            .map(|(o, _, j)| (o, j))
            .collect()
    }

    fn joined(&mut self, req: Join, incarnation: u64, read: Option<Read>) {
        let Some(r) = self
            .rooms
            .get_mut(&req.room)
            .filter(|r| r.incarnation == incarnation)
        else {
            // The member left before its join was done: nothing to answer.
            return;
        };
        r.busy = r.busy.saturating_sub(1);
        let name = req.room.clone();
        let Some(read) = read else {
            self.join_failed(req);
            return self.release(&name);
        };
        let epoch: Arc<str> = Arc::from(read.epoch.as_str());
        match &r.epoch {
            None => {
                r.epoch = Some(epoch.clone());
                r.last = read.top;
            }
            Some(e) if **e != *epoch => {
                let top = read.top;
                r.epoch = Some(epoch.clone());
                r.last = top;
                self.reset(&name, &epoch, top);
            }
            Some(_) => {}
        }
        let entries = self.fresh_entries(read.entries);
        let Some(r) = self.rooms.get_mut(&name) else {
            return;
        };
        let since = req.since.as_ref().filter(|s| *s.epoch == *epoch);
        if let Some(s) = since
            && s.offset > r.last
            && read.top > r.last
        {
            // The client has seen more of the room than this node has: catch the node
            // up first, then read again for the joiner.
            r.busy += 1;
            let cmd = self.history_cmd(
                &name,
                req.since.as_ref(),
                self.settings.history.max_messages,
            );
            self.fill(&name, true);
            self.enqueue(cmd, Then::JoinRead(req, incarnation));
            return;
        }
        // Messages stored but not yet delivered here: deliver them now, from this read
        // when it holds them, so the joiner's backlog ends where live delivery starts.
        let last = r.last;
        let catch_up: Vec<(u64, Bytes)> =
            entries.iter().filter(|(o, _)| *o > last).cloned().collect();
        if catch_up.first().is_some_and(|(o, _)| *o == last + 1) {
            for (o, j) in catch_up {
                self.deliver(&name, o, &epoch, j);
            }
        } else if read.top > last {
            self.want_fill(&name);
        }
        let Some(r) = self.rooms.get(&name) else {
            return;
        };
        let last = r.last;
        let (recovered, missed) = match &req.since {
            None => (None, Vec::new()),
            Some(s) if *s.epoch != *epoch || s.offset > last => (Some(false), Vec::new()),
            Some(s) => {
                let want: Vec<&(u64, Bytes)> = entries
                    .iter()
                    .filter(|(o, _)| *o > s.offset && *o <= last)
                    .collect();
                let complete = want.len() as u64 == last - s.offset
                    && want.first().is_none_or(|(o, _)| *o == s.offset + 1);
                if complete {
                    (Some(true), want.iter().map(|(_, j)| frame_of(j)).collect())
                } else {
                    (Some(false), Vec::new())
                }
            }
        };
        let frame = reply::joined(req.reference, &name, &epoch, last, recovered);
        self.to_worker(
            usize::from(req.conn.worker),
            LocalMsg::Joined {
                room: name.clone(),
                conn: req.conn,
                seq: req.seq,
                reply: frame,
                missed,
                epoch,
                offset: last,
                notify: req.notify,
            },
        );
        self.release(&name);
    }

    fn want_fill(&mut self, name: &RoomName) {
        if let Some(r) = self.rooms.get_mut(name) {
            r.want_fill = true;
        }
    }

    fn filled(&mut self, name: &RoomName, incarnation: u64, read: Option<Read>) {
        let Some(r) = self
            .rooms
            .get_mut(name)
            .filter(|r| r.incarnation == incarnation)
        else {
            return;
        };
        r.busy = r.busy.saturating_sub(1);
        let Some(read) = read else {
            r.want_fill = true;
            return;
        };
        let epoch: Arc<str> = Arc::from(read.epoch.as_str());
        if read.epoch.is_empty() {
            // The room's state is gone from Redis (expired, or Redis lost it).
            return self.release(name);
        }
        let entries = self.fresh_entries(read.entries);
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.epoch.as_deref() != Some(&*epoch) {
            // A new epoch: what this node's members had is gone. They are told, and go on
            // from the new epoch's oldest retained message.
            let start = entries.first().map_or(read.top, |(o, _)| o - 1);
            r.epoch = Some(epoch.clone());
            r.last = start;
            r.held.retain(|l| *l.epoch == *epoch);
            self.reset(name, &epoch, start);
        }
        for (o, j) in entries {
            let Some(r) = self.rooms.get(name) else {
                return;
            };
            if o <= r.last {
                continue;
            }
            if o > r.last + 1 {
                // The stream no longer holds what was skipped: the members are told.
                self.reset(name, &epoch, o - 1);
                if let Some(r) = self.rooms.get_mut(name) {
                    r.last = o - 1;
                }
            }
            self.deliver(name, o, &epoch, j);
        }
        if self.rooms.get(name).is_some_and(|r| read.top > r.last) {
            self.want_fill(name);
        }
        self.release(name);
    }

    /// Tells a room's members that its history broke off: an unsolicited `joined`
    /// with `recovered:false` at the position they go on from.
    fn reset(&mut self, name: &RoomName, epoch: &Arc<str>, offset: u64) {
        let Some(r) = self.rooms.get(name) else {
            return;
        };
        tracing::warn!(room = %name, epoch = %epoch, offset, "room history broke off; members told");
        let frame = reply::joined(None, name, epoch, offset, Some(false));
        to_members(&self.mesh, &r.subs, false, || LocalMsg::Reset {
            room: name.clone(),
            frame: frame.clone(),
            epoch: epoch.clone(),
            offset,
        });
    }

    /// Lets held live messages through once no read is out.
    fn release(&mut self, name: &RoomName) {
        loop {
            let Some(r) = self.rooms.get_mut(name) else {
                return;
            };
            if r.busy > 0 {
                return;
            }
            if r.want_fill {
                r.want_fill = false;
                self.fill(name, false);
                return;
            }
            let Some(live) = r.held.pop_front() else {
                return;
            };
            self.message(name, live);
        }
    }

    fn live(&mut self, channel: &str, payload: Bytes) {
        let Some(name) = scripts::room_of_channel(channel).and_then(|r| RoomName::new(r).ok())
        else {
            return;
        };
        match payload.first() {
            Some(b'm') => {
                let Some(live) = parse_live(payload.slice(1..)) else {
                    return;
                };
                self.message(&name, live);
            }
            Some(b'p') => self.presence_event(&name, &payload[1..]),
            _ => {}
        }
    }

    /// A live message, in the order the room's channel gave it.
    fn message(&mut self, name: &RoomName, live: Live) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.busy > 0 || r.epoch.is_none() || r.sub != Sub::Yes {
            r.held.push_back(live);
            return;
        }
        let same_epoch = r.epoch.as_deref() == Some(&*live.epoch);
        if same_epoch && live.offset <= r.last {
            return; // already delivered (from a read)
        }
        if same_epoch && live.offset == r.last + 1 {
            let epoch = live.epoch.clone();
            return self.deliver(name, live.offset, &epoch, live.json);
        }
        // A gap, or a new epoch: read the stream before anything later goes out.
        r.held.push_back(live);
        self.fill(name, false);
    }

    fn deliver(&mut self, name: &RoomName, offset: u64, epoch: &Arc<str>, json: Bytes) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        r.last = offset;
        let frame = frame_of(&json);
        to_members(&self.mesh, &r.subs, false, || LocalMsg::Deliver {
            room: name.clone(),
            frame: frame.clone(),
            epoch: epoch.clone(),
            offset,
        });
        if r.acks.iter().any(|a| a.0 <= offset) {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.acks)
                .into_iter()
                .partition(|a| a.0 <= offset);
            r.acks = waiting;
            for (_, conn, frame, _) in ready {
                self.reply(conn, frame);
            }
        }
    }

    fn presence_event(&mut self, name: &RoomName, body: &[u8]) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.diff_joined.is_empty() && r.diff_left.is_empty() {
            self.presence_dirty.push(name.clone());
        }
        let text = String::from_utf8_lossy(body);
        if let Some(rest) = text.strip_prefix('+') {
            let (client, info) = rest.split_once('\n').unwrap_or((rest, "{}"));
            let client: Arc<str> = Arc::from(client);
            r.diff_left.retain(|c| *c != client);
            r.diff_joined.retain(|(c, _)| *c != client);
            r.diff_joined
                .push((client, Bytes::copy_from_slice(info.as_bytes())));
        } else if let Some(client) = text.strip_prefix('-') {
            let client: Arc<str> = Arc::from(client);
            let before = r.diff_joined.len();
            r.diff_joined.retain(|(c, _)| *c != client);
            if r.diff_joined.len() == before && !r.diff_left.contains(&client) {
                r.diff_left.push(client);
            }
        }
    }

    /// Sends the presence diffs gathered since the last batch.
    fn presence_diffs(&mut self) {
        for name in std::mem::take(&mut self.presence_dirty) {
            let Some(r) = self.rooms.get_mut(&name) else {
                continue;
            };
            let joined = std::mem::take(&mut r.diff_joined);
            let left = std::mem::take(&mut r.diff_left);
            if joined.is_empty() && left.is_empty() {
                continue; // a join and a leave in one batch cancel out
            }
            let frame = reply::presence_diff(&name, &joined, &left);
            to_members(&self.mesh, &r.subs, true, || LocalMsg::PresenceDiff {
                room: name.clone(),
                frame: frame.clone(),
            });
        }
    }

    /// Every room's periodic check, and acks that waited too long.
    fn tick(&mut self) {
        let now = Instant::now();
        let mut late = Vec::new();
        for (name, r) in self.rooms.iter_mut() {
            if r.acks.iter().any(|a| a.3 <= now) {
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.acks)
                    .into_iter()
                    .partition(|a| a.3 <= now);
                r.acks = waiting;
                late.push((name.clone(), ready));
            }
        }
        for (name, acks) in late {
            for (_, conn, frame, _) in acks {
                self.reply(conn, frame);
            }
            self.fill(&name, false);
        }
        if self.link.is_none() {
            return;
        }
        let names: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|(_, r)| r.sub == Sub::Yes)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(r) = self.rooms.get(&name) else {
                continue;
            };
            let k = Keys::new(name.as_str());
            let keys = k.all();
            let ttl = self.settings.presence_ttl_ms.to_string();
            let keep = self.keep_ms().to_string();
            let members = r.members().to_string();
            let channel = k.channel();
            let mut args: Vec<&[u8]> = vec![
                self.settings.node.as_bytes(),
                ttl.as_bytes(),
                channel.as_bytes(),
                keep.as_bytes(),
                members.as_bytes(),
            ];
            args.extend(r.clients.keys().map(|c| c.as_bytes()));
            let cmd = eval(&self.scripts.tick, &keys, &args);
            let incarnation = r.incarnation;
            self.enqueue(cmd, Then::Tick(name, incarnation));
        }
    }

    /// Tells the cluster this node is alive.
    fn beat(&mut self) {
        if self.link.is_none() {
            return;
        }
        let now = crate::now_ms();
        let info = serde_json::json!({
            "id": &*self.settings.node,
            "connections": self.stats.connections.load(Ordering::Relaxed),
            "rooms": self.rooms.len(),
            "since_ms": self.started_ms,
            "seen_ms": now,
        })
        .to_string();
        let mut cmd = redis::cmd("HSET");
        cmd.arg("rc:nodes").arg(&*self.settings.node).arg(info);
        self.enqueue(cmd, Then::Nothing);
        let mut cmd = redis::cmd("ZADD");
        cmd.arg("rc:nodes:seen").arg(now).arg(&*self.settings.node);
        self.enqueue(cmd, Then::Nothing);
    }
}

/// Sends what `make` builds to every worker with members in the room (with presence
/// ones, when `presence_only`).
fn to_members(mesh: &Mesh, subs: &[Subs], presence_only: bool, make: impl Fn() -> LocalMsg) {
    for (w, s) in subs.iter().enumerate() {
        let wanted = if presence_only { s.presence } else { s.members };
        if wanted > 0
            && let Some(tx) = mesh.get(w)
        {
            let _ = tx.send(WorkerMsg::Local(make()));
        }
    }
}

/// Opens both connections and loads the scripts.
async fn open(
    client: &redis::Client,
    sources: &[String],
    generation: u64,
    events: &mpsc::UnboundedSender<Event>,
) -> redis::RedisResult<Link> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(COMMAND_TIMEOUT)
        .set_response_timeout(COMMAND_TIMEOUT);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    for source in sources {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(source)
            .query_async::<String>(&mut conn)
            .await?;
    }
    let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::other("pub/sub connect timed out"))
        })??;
    let (sink, mut stream) = pubsub.split();
    let events = events.clone();
    tokio::task::spawn_local(async move {
        while let Some(msg) = stream.next().await {
            let channel = msg.get_channel_name().to_owned();
            let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
            if events
                .send(Event::Live(generation, channel, payload))
                .is_err()
            {
                return;
            }
        }
        let _ = events.send(Event::Down(generation));
    });
    Ok(Link {
        generation,
        conn,
        sink,
    })
}

/// A WebSocket text frame of a JSON text.
fn frame_of(json: &[u8]) -> Bytes {
    let mut f = JsonFrame::with_capacity(json.len());
    f.raw(json);
    f.frame()
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn string_of(v: Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b).ok())
}

fn parse_published(v: Value) -> Option<(u64, Arc<str>, bool)> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let offset = int_of(&it.next()?)?;
    let epoch = string_of(it.next()?)?;
    let duplicate = int_of(&it.next()?)? == 1;
    Some((offset, Arc::from(epoch), duplicate))
}

fn parse_tick(v: Value) -> Option<(String, u64)> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let epoch = string_of(it.next()?)?;
    let top = int_of(&it.next()?)?;
    Some((epoch, top))
}

/// A read of a room: its epoch ('' when it has no state), top, and entries
/// `(offset, ts, json)`.
struct Read {
    epoch: String,
    top: u64,
    entries: Vec<(u64, u64, Bytes)>,
}

fn parse_read(v: Value) -> Option<Read> {
    let Value::Array(items) = v else { return None };
    let mut it = items.into_iter();
    let epoch = string_of(it.next()?)?;
    let top = int_of(&it.next()?)?;
    let entries = match it.next() {
        Some(Value::Array(entries)) => entries.into_iter().filter_map(parse_entry).collect(),
        _ => Vec::new(),
    };
    Some(Read {
        epoch,
        top,
        entries,
    })
}

/// `[id, [field, value, ...]]` of a stream entry.
fn parse_entry(v: Value) -> Option<(u64, u64, Bytes)> {
    let Value::Array(parts) = v else { return None };
    let mut parts = parts.into_iter();
    let id = string_of(parts.next()?)?;
    let offset = id.split('-').next()?.parse().ok()?;
    let Some(Value::Array(fields)) = parts.next() else {
        return None;
    };
    let (mut ts, mut json) = (0, None);
    let mut f = fields.into_iter();
    while let (Some(k), Some(v)) = (f.next(), f.next()) {
        match bytes_of(k).as_deref() {
            Some(b"t") => ts = int_of(&v).unwrap_or(0),
            Some(b"j") => json = bytes_of(v),
            _ => {}
        }
    }
    Some((offset, ts, Bytes::from(json?)))
}

/// `OFFSET EPOCH JSON` of a live message.
fn parse_live(body: Bytes) -> Option<Live> {
    let space = body.iter().position(|&b| b == b' ')?;
    let offset = std::str::from_utf8(&body[..space]).ok()?.parse().ok()?;
    let rest = body.slice(space + 1..);
    let space = rest.iter().position(|&b| b == b' ')?;
    let epoch = std::str::from_utf8(&rest[..space]).ok()?;
    Some(Live {
        offset,
        epoch: Arc::from(epoch),
        json: rest.slice(space + 1..),
    })
}
