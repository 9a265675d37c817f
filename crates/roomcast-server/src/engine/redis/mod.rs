//! The Redis engine: rooms shared by every node that uses the same Redis.
//!
//! One engine per node runs on a thread of its own (`roomcast-broker`). Workers send it
//! the same [`HomeMsg`] requests the memory engine takes, and it answers with the same
//! [`LocalMsg`] events, on the workers' inboxes. It owns two connections to Redis: a
//! multiplexed one for commands, and one for pub/sub. What Redis holds, and the scripts,
//! are in [`scripts`]; what the node keeps per room is [`room::RoomState`].
//!
//! - **Publish** is one script call (one round trip): idempotency key, epoch, next offset,
//!   append, trim, save the key, publish. The ack waits for the script's reply.
//! - **Commands go in order**: every request waiting when the previous batch came back
//!   goes out as one pipeline, so a connection's requests reach Redis in the order it
//!   sent them (a join before the publish that follows it), and one round trip carries
//!   many.
//! - **Live messages** come on the room's channel, which the node subscribes to while it
//!   has members there. The node remembers, per room, the epoch and the last offset it
//!   delivered: an older offset is dropped, a skipped one is read from the stream before
//!   anything later is delivered, a new epoch, or messages the stream no longer holds,
//!   are told to the members (an unsolicited `joined` with `recovered:false`). Each room
//!   is checked against the stream's top every tick, so a message whose pub/sub copy was
//!   lost in a quiet room is found.
//! - **Joins** go out at once; a room new to the node is subscribed beside it and then
//!   read from the join's position (a fill), so nothing published in between is missed.
//!   A join with `since` holds the room's live messages until its read is back, so the
//!   joiner's backlog ends exactly where its live messages start.
//! - **Redis gone**: every request that needs it answers `unavailable`; the engine
//!   reconnects every 250 ms, then resubscribes every room and catches each up from its
//!   stream.
//! - **Presence** is kept in Redis per client and node with an expiry that each node
//!   refreshes (and puts back if Redis lost it); a node that dies stops refreshing, and
//!   the next node to sweep the room removes its members and publishes their leave.

mod cluster;
mod control;
mod jetstream;
mod link;
mod ops;
mod room;
mod scripts;
mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use redis::aio::ConnectionLike;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use self::control::{Answer, Control};
pub(crate) use self::link::Target;
use self::link::{Conn, Heard, Subscriber};
use self::ops::{Op, OpKind, Outcome};
use self::room::{Ack, RoomState, Sub};
use self::scripts::Keys;
use self::wire::{Live, Read, frame_of};
use super::{
    CommandAnswer, ConnKey, Disconnected, HomeMsg, Join, LocalMsg, Mesh, NodeInfo, Publish, Reply,
    WorkerMsg,
};
use crate::hub::{HistoryLimits, Subs};
use crate::protocol::{ErrorCode, RoomName, SincePos, reply};
use crate::stats::Stats;

/// What the engine needs to know of its node.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub url: String,
    pub node: Arc<str>,
    /// The prefix of the node's session ids, which names its control channel.
    pub instance: Arc<str>,
    /// The address the node listens on (for `/api/nodes`).
    pub address: String,
    pub history: HistoryLimits,
    pub presence_ttl_ms: u64,
    pub presence_batch_ms: u64,
    pub node_ttl_ms: u64,
    /// Replicas that must have a publish before its ack (0: none), and how long to wait.
    pub wait_replicas: u32,
    pub wait_timeout_ms: u64,
    /// `limits.max_rooms`: rooms the node's members may be in at once.
    pub max_rooms: usize,
}

/// Where workers send the Redis engine their requests.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Vec<HomeMsg>>,
    up: Arc<AtomicBool>,
}

impl Handle {
    /// Queues a worker's requests of one turn, in order: the engine sends what reaches
    /// it together as one pipeline, so a burst of publishes is one write to Redis.
    pub(crate) fn send_all(&self, msgs: Vec<HomeMsg>) {
        if !msgs.is_empty() {
            let _ = self.tx.send(msgs);
        }
    }

    /// Whether the engine is connected to Redis.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// Starts the engine on its own thread, connecting to `target` (parsed from
/// `settings.url`). It stops once every [`Handle`] is dropped.
pub(crate) fn start(
    settings: Settings,
    target: Target,
    mesh: Mesh,
    stats: Arc<Stats>,
    metrics: crate::metrics::Metrics,
) -> std::io::Result<(Handle, std::thread::JoinHandle<()>)> {
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
                    out: Window::default(),
                    dead: Vec::new(),
                    link: None,
                    generation: 0,
                    connecting: false,
                    incarnations: 0,
                    redis: ops::Redis {
                        scripts: ops::Scripts::new(target.is_cluster()),
                        cluster: target.is_cluster(),
                        node: settings.node.clone(),
                        history: settings.history,
                        presence_ttl_ms: settings.presence_ttl_ms,
                        wait: (settings.wait_replicas > 0)
                            .then_some((settings.wait_replicas, settings.wait_timeout_ms)),
                    },
                    busy_groups: std::collections::HashSet::new(),
                    started_ms: crate::now_ms(),
                    presence_dirty: Vec::new(),
                    acks_waiting: 0,
                    calls: HashMap::new(),
                    next_call: 0,
                    settings,
                    mesh,
                    stats,
                    metrics,
                    up,
                    target,
                    events,
                };
                broker.run(inbox, rx).await;
            });
        })?;
    Ok((handle, thread))
}

/// The connections, while Redis is reachable.
struct Link {
    generation: u64,
    conn: Conn,
    sink: Subscriber,
    /// The tasks reading what the connections hear (`link::open`'s, and the one that
    /// makes events of it): stopped with the link, so a connection given up on does not
    /// go on receiving.
    readers: [tokio::task::AbortHandle; 2],
}

/// What the engine's own tasks tell it.
enum Event {
    Up(Link),
    Down(u64),
    /// A batch's replies: its link's generation, its place in that link's order.
    Done(u64, u64, Option<Vec<u8>>, Vec<Then>, Batch),
    Subscribed(u64, Vec<RoomName>, bool),
    Live(u64, String, Bytes),
    /// A cluster node ended the subscription to a channel (its slot moved).
    Dropped(u64, String),
    /// A connection to one of the cluster's nodes closed and is being reopened.
    Blip(u64),
    /// This node's answer to another node's request `id` (see [`control`]).
    Answer {
        to: String,
        id: u64,
        answer: Answer,
    },
}

/// A request of this node's to others, waiting for their answers.
enum Call {
    /// A session's commands, for the one node that holds it.
    Command {
        reply: oneshot::Sender<Option<CommandAnswer>>,
        /// The node it is for.
        instance: String,
        deadline: Instant,
    },
    /// A disconnect, for every node: answers are summed.
    Disconnect {
        reply: oneshot::Sender<Disconnected>,
        /// How many nodes received it, once `PUBLISH` said.
        expected: Option<usize>,
        answered: usize,
        closed: usize,
        deadline: Instant,
    },
}

/// What to do with a command's reply.
enum Then {
    Publish {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
        asked: std::time::Instant,
    },
    /// A join's read (the join script, or a history read for it); `held` when the room's
    /// live messages wait for it.
    Join {
        join: Join,
        incarnation: u64,
        held: bool,
    },
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
    /// A control request's `PUBLISH`: its reply is how many nodes received it.
    Sent(u64),
    /// Whether the node of a call nobody received still beats.
    Alive(u64),
    Nothing,
}

struct Broker {
    settings: Settings,
    mesh: Mesh,
    stats: Arc<Stats>,
    /// The broker round-trip histogram is recorded here.
    metrics: crate::metrics::Metrics,
    up: Arc<AtomicBool>,
    target: Target,
    /// On a cluster, the groups (see [`Op::group`]) with a pipeline out: a group's
    /// next pipeline waits for it, so a room's commands run in the order they were sent.
    busy_groups: std::collections::HashSet<Vec<u8>>,
    events: mpsc::UnboundedSender<Event>,
    rooms: HashMap<RoomName, RoomState>,
    /// Ops waiting to go out, each with what to do with its outcome.
    queue: Vec<(Op, Then)>,
    /// The batches out on the current link.
    out: Window,
    /// The windows of links given up on whose batches have not all answered (or failed):
    /// their replies are still handled in order.
    dead: Vec<Window>,
    link: Option<Link>,
    generation: u64,
    connecting: bool,
    incarnations: u64,
    /// How ops are done on Redis: the scripts and what their arguments need.
    redis: ops::Redis,
    started_ms: u64,
    /// Rooms with a presence diff gathering, each once.
    presence_dirty: Vec<RoomName>,
    /// Acks waiting over every room (their deadlines are checked while there are any).
    acks_waiting: usize,
    /// This node's requests to other nodes, by id.
    calls: HashMap<u64, Call>,
    next_call: u64,
}

const RECONNECT_EVERY: Duration = Duration::from_millis(250);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an ack waits for its message to arrive here before it is sent anyway (the
/// message is stored; the room is then read from the stream).
const ACK_WAIT: Duration = Duration::from_millis(500);
const MAX_BATCH: usize = 512;
/// Batches out on the link at once, at most. More than one lets a burst that arrives
/// while one is out go at once rather than one round trip later, so Redis sees (and
/// sends the nodes) a publisher's burst whole; their replies are still handled in the
/// order they were sent (see [`Window`]).
const MAX_IN_FLIGHT: usize = 4;
/// Pipelines out at once on a cluster, at most (each to one slot; see `pump_groups`).
const MAX_CLUSTER_IN_FLIGHT: usize = 64;

/// A batch's answers: what to do with each op's outcome, and the outcomes.
type Replies = (Vec<Then>, Batch);

/// What a batch of ops came back with: each op's outcome (`None`: it failed), and
/// whether the link must be given up (the batch failed, or Redis lost the scripts).
#[derive(Debug)]
struct Batch {
    outcomes: Vec<Option<Outcome>>,
    down: bool,
}

/// The batches out on one link, and replies that came before an earlier batch's: the
/// engine handles replies strictly in the order the batches were sent, as Redis ran
/// them, whatever order their tasks wake in. That Redis runs them in that order rests on
/// two things: the tasks that hand the batches to the multiplexed connection are polled
/// in the order they were spawned (a `LocalSet` runs its queue first in, first out), and
/// the connection writes requests in the order it is handed them. With at most
/// [`MAX_IN_FLIGHT`] batches out (and the engine's few queries of its own), its request
/// channel (50 deep) never fills, so no batch waits there long enough to time out while
/// a later one goes.
#[derive(Default)]
struct Window {
    /// The generation of the link these are on.
    generation: u64,
    /// The next batch's number, and the number of the next reply to handle.
    sent: u64,
    handled: u64,
    early: std::collections::BTreeMap<u64, Replies>,
}

impl Window {
    fn len(&self) -> usize {
        (self.sent - self.handled) as usize
    }
}
/// How long a disconnect waits for every node's count.
const DISCONNECT_WAIT: Duration = Duration::from_secs(3);
/// Requests to other nodes waiting at once, at most.
const MAX_CALLS: usize = 4096;

impl Broker {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Vec<HomeMsg>>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        self.connect();
        let every = |ms: u64| {
            let mut t = tokio::time::interval(Duration::from_millis(ms));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut tick = every((self.settings.presence_ttl_ms / 3).clamp(200, 5000));
        // Presence diffs and late acks: both bounded by the presence batch.
        let mut batch = every(self.settings.presence_batch_ms.max(1));
        let mut beat = every((self.settings.node_ttl_ms / 3).max(200));
        loop {
            tokio::select! {
                msg = inbox.recv() => match msg {
                    Some(msgs) => {
                        msgs.into_iter().for_each(|m| self.request(m));
                        while let Ok(msgs) = inbox.try_recv() {
                            msgs.into_iter().for_each(|m| self.request(m));
                        }
                    }
                    None => break,
                },
                Some(event) = events.recv() => {
                    // Everything already waiting (a burst of live messages) before the
                    // workers' next flush.
                    self.event(event);
                    while let Ok(event) = events.try_recv() {
                        self.event(event);
                    }
                }
                _ = tick.tick() => self.tick(),
                _ = batch.tick() => {
                    self.presence_diffs();
                    self.late_acks();
                    self.expire_calls(false);
                }
                _ = beat.tick() => self.beat(),
            }
            self.pump();
        }
        // The node is stopping: what is queued (its members' leaves) still goes out.
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.out.len() > 0 || !self.queue.is_empty()) && self.link.is_some() {
            self.pump();
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => self.event(event),
                _ => break,
            }
        }
        if let Some(Link {
            conn: Conn::Nats(jet),
            ..
        }) = &self.link
        {
            let forget = jet.forget(&self.settings.node, &self.settings.instance);
            let _ = tokio::time::timeout(Duration::from_secs(1), forget).await;
        } else if let Some(link) = &self.link {
            let mut conn = link.conn.clone();
            let node = self.settings.node.to_string();
            // Three keys of the `{nodes}` slot: one pipeline on a cluster too.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                redis::pipe()
                    .hdel(cluster::NODES, &node)
                    .zrem(cluster::SEEN, &node)
                    .del(cluster::instance_key(&self.settings.instance))
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

    fn reply(&self, conn: ConnKey, reply: Reply) {
        self.to_worker(usize::from(conn.worker), LocalMsg::Reply { conn, reply });
    }

    fn unavailable(&self, conn: ConnKey, reference: Option<u64>) {
        self.reply(
            conn,
            Reply::error(
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
        let target = self.target.clone();
        let events = self.events.clone();
        let sources = self.redis.scripts.sources.clone();
        let instance = self.settings.instance.clone();
        let nats = jetstream::JetSettings {
            node: self.settings.node.clone(),
            history: self.settings.history,
            presence_ttl_ms: self.settings.presence_ttl_ms,
            timeout: COMMAND_TIMEOUT,
        };
        tokio::task::spawn_local(async move {
            loop {
                match open(&target, &sources, &instance, &nats, generation, &events).await {
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
                self.out = Window {
                    generation: link.generation,
                    ..Window::default()
                };
                self.link = Some(link);
                let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
                for r in self.rooms.values_mut() {
                    r.sub = Sub::Pending;
                }
                self.subscribe(rooms);
                self.beat();
            }
            Event::Down(generation) => self.down(generation),
            Event::Done(generation, seq, group, thens, result) => {
                if let Some(group) = group
                    && self.out.generation == generation
                {
                    self.busy_groups.remove(&group);
                }
                let Some(window) = self.window(generation) else {
                    return self.done_batch(generation, thens, result);
                };
                window.early.insert(seq, (thens, result));
                // A batch that fails takes the link down, and its window moves to `dead`:
                // the rest are still handled in order from there.
                while let Some(window) = self.window(generation) {
                    let Some((thens, result)) = window.early.remove(&window.handled) else {
                        break;
                    };
                    window.handled += 1;
                    self.done_batch(generation, thens, result);
                }
                self.dead.retain(|w| w.len() > 0);
            }
            Event::Subscribed(generation, rooms, ok) => {
                if !ok {
                    return self.down(generation);
                }
                for name in rooms {
                    self.subscribed(&name);
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
            Event::Dropped(generation, channel) => {
                if self.is_current(generation) {
                    self.dropped(&channel);
                }
            }
            Event::Blip(generation) => {
                if self.is_current(generation) {
                    self.blip();
                }
            }
            Event::Answer { to, id, answer } => {
                let op = control_op(&control::channel(&to), Control::Answer { id, answer });
                self.enqueue(op, Then::Nothing);
            }
        }
    }

    /// The window of the link of `generation`: the current one, or one given up on whose
    /// batches have not all answered.
    fn window(&mut self, generation: u64) -> Option<&mut Window> {
        if self.out.generation == generation {
            return Some(&mut self.out);
        }
        self.dead.iter_mut().find(|w| w.generation == generation)
    }

    /// Handles one batch's replies, in order.
    fn done_batch(&mut self, generation: u64, thens: Vec<Then>, batch: Batch) {
        let mut outcomes = batch.outcomes.into_iter();
        for then in thens {
            self.done(then, outcomes.next().flatten());
        }
        if batch.down {
            self.down(generation);
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
        if let Some(link) = self.link.take() {
            link.readers
                .iter()
                .for_each(tokio::task::AbortHandle::abort);
            if let Subscriber::Nats(subs) = &link.sink {
                subs.close();
            }
        }
        // Batches still out on the dead link answer (or fail) on their own, in order, in
        // its window; the next link does not wait for them.
        let out = std::mem::replace(
            &mut self.out,
            Window {
                generation: u64::MAX,
                ..Window::default()
            },
        );
        if out.len() > 0 {
            self.dead.push(out);
        }
        self.up.store(false, Ordering::Relaxed);
        self.busy_groups.clear();
        for r in self.rooms.values_mut() {
            r.sub = Sub::No;
        }
        for (_, then) in std::mem::take(&mut self.queue) {
            self.done(then, None);
        }
        self.expire_calls(true);
        self.connect();
    }

    fn subscribe(&mut self, rooms: Vec<RoomName>) {
        if rooms.is_empty() {
            return;
        }
        let channels: Vec<String> = rooms
            .iter()
            .map(|r| Keys::new(r.as_str()).channel())
            .collect();
        self.subscribe_channels(channels, rooms);
    }

    /// Subscribes `channels` (those of `rooms`, or control channels), then tells the
    /// engine (`Event::Subscribed`); the link goes down if that fails.
    fn subscribe_channels(&mut self, channels: Vec<String>, rooms: Vec<RoomName>) {
        let Some(link) = &self.link else { return };
        let mut sink = link.sink.clone();
        let generation = link.generation;
        let events = self.events.clone();
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

    fn is_current(&self, generation: u64) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.generation == generation)
    }

    /// A cluster node ended a subscription (the channel's slot moved to another primary,
    /// or its primary failed over): subscribed again where the slot is now, then the room
    /// is read from the node's position, as after any new subscription.
    fn dropped(&mut self, channel: &str) {
        tracing::info!(
            channel,
            "broker: a cluster node ended a subscription; subscribing again"
        );
        if control::is_control(channel) {
            return self.subscribe_channels(vec![channel.to_owned()], Vec::new());
        }
        let Some(name) = scripts::room_of_channel(channel).and_then(|r| RoomName::new(r).ok())
        else {
            return;
        };
        // Also while a subscription is out: its answer may come after this push, and
        // must not be taken for a live channel.
        match self.rooms.get_mut(&name) {
            Some(r) if r.sub != Sub::No => {
                r.sub = Sub::Pending;
                self.subscribe(vec![name]);
            }
            _ => {}
        }
    }

    /// A connection to one of the cluster's nodes closed. The client reopens it and
    /// subscribes its channels again by itself, but what they carried meanwhile is gone:
    /// every room is subscribed again (a no-op where it still is) and read from its
    /// position once that is done, and the control channels are subscribed again.
    fn blip(&mut self) {
        tracing::info!("broker: a cluster connection closed; resubscribing and catching up");
        let mut rooms = Vec::new();
        for (name, r) in self.rooms.iter_mut() {
            if r.sub == Sub::Yes {
                r.sub = Sub::Pending;
                rooms.push(name.clone());
            }
        }
        self.subscribe(rooms);
        let control = vec![
            control::channel(&self.settings.instance),
            control::ALL.to_owned(),
        ];
        self.subscribe_channels(control, Vec::new());
    }

    /// The room's channel is live: read the room from the node's position, so whatever
    /// was published before the subscription took effect is delivered too.
    fn subscribed(&mut self, name: &RoomName) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if r.sub != Sub::Pending {
            return;
        }
        r.sub = Sub::Yes;
        r.want_fill = true;
        self.release(name);
    }

    /// Sends what is queued, as pipelines of at most [`MAX_BATCH`], while fewer than
    /// [`MAX_IN_FLIGHT`] are out (on a cluster: per slot, see [`Self::pump_groups`]).
    fn pump(&mut self) {
        if self.redis.cluster || self.target.is_nats() {
            return self.pump_groups();
        }
        while self.out.len() < MAX_IN_FLIGHT && !self.queue.is_empty() && self.link.is_some() {
            let take = self.queue.len().min(MAX_BATCH);
            let batch: Vec<(Op, Then)> = self.queue.drain(..take).collect();
            self.send_batch(None, batch);
        }
    }

    /// On a cluster a pipeline may not cross slots, and two pipelines to one slot may be
    /// run in either order. So what is queued is split by group ([`Op::group`]), in queue
    /// order, and each group has at most one pipeline out: a room's commands reach its
    /// primary in the order they were sent, and a busy room does not hold back the
    /// sending of others' (their replies are still handled in send order: [`Window`]).
    fn pump_groups(&mut self) {
        if self.link.is_none() || self.queue.is_empty() {
            return;
        }
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut groups: HashMap<Vec<u8>, Vec<(Op, Then)>> = HashMap::new();
        let mut rest = Vec::new();
        for (op, then) in std::mem::take(&mut self.queue) {
            let group = op.group();
            let full = groups.get(&group).is_some_and(|g| g.len() >= MAX_BATCH);
            if self.busy_groups.contains(&group)
                || full
                || (!groups.contains_key(&group)
                    && self.busy_groups.len() + order.len() >= MAX_CLUSTER_IN_FLIGHT)
            {
                rest.push((op, then));
                continue;
            }
            if !groups.contains_key(&group) {
                order.push(group.clone());
            }
            groups.entry(group).or_default().push((op, then));
        }
        self.queue = rest;
        for group in order {
            if let Some(batch) = groups.remove(&group) {
                self.busy_groups.insert(group.clone());
                self.send_batch(Some(group), batch);
            }
        }
    }

    /// Sends `batch` as one pipeline, numbered in the link's window.
    fn send_batch(&mut self, group: Option<Vec<u8>>, batch: Vec<(Op, Then)>) {
        let Some(link) = &self.link else { return };
        if let Conn::Nats(jet) = &link.conn {
            return self.send_nats(jet.clone(), group, batch);
        }
        let mut pipe = redis::pipe();
        let mut thens = Vec::with_capacity(batch.len());
        // Each op's answer kind and how many commands it took (its first one answers).
        let mut shape = Vec::with_capacity(batch.len());
        let mut publishes = false;
        for (op, then) in batch {
            let cmds = self.redis.cmds(&op);
            publishes |= op.kind() == OpKind::Publish;
            shape.push((op.kind(), cmds.len()));
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            thens.push(then);
        }
        let wait = self
            .redis
            .wait()
            .filter(|_| publishes)
            .map(|(cmd, replicas)| {
                pipe.add_command(cmd);
                replicas
            });
        let mut conn = link.conn.clone();
        let generation = link.generation;
        let events = self.events.clone();
        let seq = self.out.sent;
        self.out.sent += 1;
        let metrics = self.metrics.clone();
        tokio::task::spawn_local(async move {
            let n = shape.iter().map(|(_, n)| n).sum::<usize>() + usize::from(wait.is_some());
            let sent = Instant::now();
            let result = conn.req_packed_commands(&pipe, 0, n).await;
            metrics.broker(sent.elapsed());
            let batch = redis_batch(&shape, wait, result);
            let _ = events.send(Event::Done(generation, seq, group, thens, batch));
        });
    }

    /// Does `batch` on NATS, one op after another (a batch is one group's: a room's ops
    /// in the order they were sent), numbered in the link's window like a pipeline;
    /// consecutive publishes go as one run (`Jet::publish_run`), and so do consecutive
    /// joins (`Jet::join_run`). An op that NATS failed
    /// answers `None`, and takes the link down.
    fn send_nats(
        &mut self,
        jet: Arc<jetstream::Jet>,
        group: Option<Vec<u8>>,
        batch: Vec<(Op, Then)>,
    ) {
        let Some(link) = &self.link else { return };
        let generation = link.generation;
        let events = self.events.clone();
        let seq = self.out.sent;
        self.out.sent += 1;
        let metrics = self.metrics.clone();
        let (ops, thens): (Vec<Op>, Vec<Then>) = batch.into_iter().unzip();
        tokio::task::spawn_local(async move {
            let mut outcomes = Vec::with_capacity(ops.len());
            let mut down = false;
            let mut ops = ops.into_iter().peekable();
            while let Some(op) = ops.next() {
                if down {
                    outcomes.push(None);
                    continue;
                }
                let sent = Instant::now();
                let publish = |o: &Op| matches!(o, Op::Publish { .. });
                let join = |o: &Op| matches!(o, Op::Join { .. });
                let results = if publish(&op) || join(&op) {
                    let kind = if publish(&op) { publish } else { join };
                    let mut run = vec![op];
                    while let Some(next) = ops.next_if(kind) {
                        run.push(next);
                    }
                    if publish(&run[0]) {
                        jet.publish_run(run).await
                    } else {
                        jet.join_run(run).await
                    }
                } else {
                    vec![jet.run(op).await]
                };
                for result in results {
                    match result {
                        Ok(outcome) => outcomes.push(Some(outcome)),
                        Err(e) => {
                            tracing::warn!(error = %e, "broker: an op failed");
                            down |= matches!(e, jetstream::JetError::Broker(_));
                            outcomes.push(None);
                        }
                    }
                }
                metrics.broker(sent.elapsed());
            }
            let batch = Batch { outcomes, down };
            let _ = events.send(Event::Done(generation, seq, group, thens, batch));
        });
    }

    /// Queues `op`, and what to do with its outcome.
    fn enqueue(&mut self, op: Op, then: Then) {
        self.queue.push((op, then));
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
                let op = Op::Presence { room: room.clone() };
                let then = Then::Presence {
                    room,
                    conn,
                    reference,
                };
                self.enqueue(op, then);
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
                let op = Op::Read {
                    room: room.clone(),
                    since,
                    limit,
                };
                let then = Then::History {
                    room,
                    conn,
                    reference,
                };
                self.enqueue(op, then);
            }
            HomeMsg::Rooms { reply } => self.query(reply, cluster::rooms),
            HomeMsg::Nodes { reply } => self.query(reply, cluster::nodes),
            HomeMsg::Forward {
                session,
                call,
                wait,
                reply,
            } => {
                if self.link.is_none() {
                    return; // the caller's 503
                }
                let instance = session.get(..INSTANCE_LEN).unwrap_or_default();
                let to = control::channel(instance);
                let Some(id) = self.call(Call::Command {
                    reply,
                    instance: instance.to_owned(),
                    deadline: Instant::now() + wait,
                }) else {
                    return; // too many waiting: the caller's 503
                };
                let msg = Control::Command {
                    from: self.settings.instance.to_string(),
                    id,
                    session: session.to_string(),
                    call,
                    // The node that holds it answers a little sooner than this one gives up.
                    wait_ms: (wait.as_millis() as u64).saturating_sub(500),
                };
                self.enqueue(control_op(&to, msg), Then::Sent(id));
            }
            HomeMsg::Disconnect {
                client,
                code,
                reason,
                reply,
            } => {
                if self.link.is_none() {
                    return;
                }
                let Some(id) = self.call(Call::Disconnect {
                    reply,
                    expected: None,
                    answered: 0,
                    closed: 0,
                    deadline: Instant::now() + DISCONNECT_WAIT,
                }) else {
                    return;
                };
                let msg = Control::Disconnect {
                    from: self.settings.instance.to_string(),
                    id,
                    client: client.to_string(),
                    code,
                    reason: reason.to_string(),
                };
                self.enqueue(control_op(control::ALL, msg), Then::Sent(id));
            }
            // Raw rooms always have a home worker (`Worker::to_home`).
            HomeMsg::RawSubscribe { .. }
            | HomeMsg::RawUnsubscribe { .. }
            | HomeMsg::RawPublish { .. } => {}
        }
    }

    /// A read of the whole cluster, on the side of the ordered pipeline. No answer (the
    /// caller's 503) when Redis is unreachable or the read fails.
    fn query<T: 'static, F>(&self, reply: oneshot::Sender<Vec<T>>, read: fn(Conn, u64) -> F)
    where
        F: std::future::Future<Output = redis::RedisResult<Vec<T>>> + 'static,
    {
        let Some(link) = &self.link else { return };
        let conn = link.conn.clone();
        let ttl = self.settings.node_ttl_ms;
        tokio::task::spawn_local(async move {
            match read(conn, ttl).await {
                Ok(found) => {
                    let _ = reply.send(found);
                }
                Err(e) => tracing::warn!(error = %e, "broker: a cluster read failed"),
            }
        });
    }

    fn publish(&mut self, p: Publish) {
        if self.link.is_none() {
            return self.unavailable(p.conn, p.reference);
        }
        let mut head = Vec::with_capacity(64);
        reply::message_head(&mut head, &p.room);
        let mut tail = Vec::with_capacity(64 + p.data.len());
        reply::message_tail(&mut tail, &p.from, &p.data);
        let (known, last) = self
            .rooms
            .get(&p.room)
            .and_then(|r| Some((r.epoch.clone()?, r.last)))
            .unwrap_or_else(|| (Arc::from(""), 0));
        let op = Op::Publish {
            room: p.room.clone(),
            id: p.id.as_ref().map(|id| id.to_string()),
            head,
            tail,
            known,
            last,
        };
        let then = Then::Publish {
            room: p.room,
            conn: p.conn,
            reference: p.reference,
            asked: p.asked,
        };
        self.enqueue(op, then);
    }

    fn join(&mut self, join: Join) {
        if self.link.is_none() {
            // Not counted yet: nothing to take back.
            return self.refuse_join(join);
        }
        if !self.rooms.contains_key(&join.room) {
            if self.rooms.len() >= self.settings.max_rooms {
                let max = self.settings.max_rooms;
                let reply = Reply::error(
                    join.reference,
                    ErrorCode::Unavailable,
                    &format!("this node holds its maximum of {max} rooms (limits.max_rooms)"),
                );
                return self.to_worker(
                    usize::from(join.conn.worker),
                    LocalMsg::JoinFailed {
                        room: join.room,
                        conn: join.conn,
                        seq: join.seq,
                        reply,
                        notify: join.notify,
                    },
                );
            }
            self.incarnations += 1;
            let state = RoomState::new(self.incarnations, self.mesh.len());
            self.rooms.insert(join.room.clone(), state);
            self.stats
                .rooms
                .store(self.rooms.len() as i64, Ordering::Relaxed);
        }
        let Some(r) = self.rooms.get_mut(&join.room) else {
            return;
        };
        r.count_in(
            usize::from(join.conn.worker),
            &join.client,
            join.presence.as_ref(),
        );
        if r.sub == Sub::No {
            r.sub = Sub::Pending;
            self.subscribe(vec![join.room.clone()]);
        }
        self.send_join(join);
    }

    fn send_join(&mut self, join: Join) {
        let Some(r) = self.rooms.get_mut(&join.room) else {
            return self.refuse_join(join);
        };
        // A join without `since` to a room whose position is known needs no backlog:
        // live delivery goes on, and the joiner starts at the position its answer has.
        let held = join.since.is_some() || r.epoch.is_none();
        if held {
            r.busy += 1;
        }
        let incarnation = r.incarnation;
        let op = Op::Join {
            room: join.room.clone(),
            since: join.since.clone(),
            client: join.client.clone(),
            presence: join.presence.clone(),
        };
        let then = Then::Join {
            join,
            incarnation,
            held,
        };
        self.enqueue(op, then);
    }

    /// A join that cannot be done: the node no longer counts the member, and the worker
    /// forgets the membership and answers `unavailable`.
    fn join_failed(&mut self, join: Join) {
        self.forget_member(
            &join.room,
            usize::from(join.conn.worker),
            &join.client,
            join.presence.is_some(),
        );
        self.refuse_join(join);
    }

    /// Tells the worker a join is refused (the member is not, or no longer, counted). A
    /// worker whose member already left just takes it as the join's answer.
    fn refuse_join(&mut self, join: Join) {
        let frame = Reply::error(
            join.reference,
            ErrorCode::Unavailable,
            "the broker is unreachable: join again",
        );
        self.to_worker(
            usize::from(join.conn.worker),
            LocalMsg::JoinFailed {
                room: join.room,
                conn: join.conn,
                seq: join.seq,
                reply: frame,
                notify: join.notify,
            },
        );
    }

    /// Takes a member off the node's counts; drops the room when it was the last.
    fn forget_member(&mut self, room: &RoomName, worker: usize, client: &Arc<str>, presence: bool) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.count_out(worker, client, presence);
        if r.members() == 0 {
            let acks = std::mem::take(&mut r.acks);
            self.rooms.remove(room);
            self.stats
                .rooms
                .store(self.rooms.len() as i64, Ordering::Relaxed);
            self.acks_waiting -= acks.len();
            for ack in acks {
                self.reply(ack.conn, ack.reply);
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
        let op = Op::Leave {
            room,
            client,
            presence,
        };
        self.enqueue(op, Then::Nothing);
    }

    /// Reads a room from the node's position on, to fill a gap or catch up: once the
    /// reads out for it are back, or at once with `now` (the pipeline keeps the order).
    /// A room whose position is not known yet waits for its first join's answer.
    fn fill(&mut self, name: &RoomName, now: bool) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        let Some(epoch) = r.epoch.as_ref() else {
            r.want_fill = true;
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
        let since = SincePos {
            epoch: epoch.to_string(),
            offset: r.last,
        };
        let op = Op::Read {
            room: name.clone(),
            since: Some(since),
            limit: self.settings.history.max_messages,
        };
        self.enqueue(op, Then::Fill(name.clone(), incarnation));
    }

    /// A command's reply (`None`: it failed, or Redis went away).
    fn done(&mut self, then: Then, answer: Option<Outcome>) {
        match then {
            Then::Nothing => {}
            Then::Sent(id) => {
                let receivers = match answer {
                    Some(Outcome::Count(n)) => Some(n),
                    _ => None,
                };
                self.sent(id, receivers);
            }
            Then::Alive(id) => {
                if let Some(Call::Command { reply, .. }) = self.calls.remove(&id)
                    && matches!(answer, Some(Outcome::Count(0)))
                {
                    // Gone: no node holds the session.
                    let _ = reply.send(None);
                }
                // Alive, or not known: dropped, the caller's 503 (retry).
            }
            Then::Publish {
                room,
                conn,
                reference,
                asked,
            } => {
                let Some(Outcome::Published(offset, epoch, duplicate)) = answer else {
                    return self.unavailable(conn, reference);
                };
                if !duplicate {
                    Stats::add(&self.stats.published, 1);
                }
                let frame = Reply::Ack {
                    reference,
                    room: room.clone(),
                    offset,
                    asked: Some(asked),
                };
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
                    Some(r) => {
                        r.acks.push(Ack {
                            offset,
                            conn,
                            reply: frame,
                            deadline: Instant::now() + ACK_WAIT,
                        });
                        self.acks_waiting += 1;
                    }
                    None => self.reply(conn, frame),
                }
            }
            Then::Join {
                join,
                incarnation,
                held,
            } => {
                let read = match answer {
                    Some(Outcome::Read(read)) => Some(read),
                    _ => None,
                };
                self.joined(join, incarnation, held, read);
            }
            Then::Fill(name, incarnation) => {
                let read = match answer {
                    Some(Outcome::Read(read)) => Some(read),
                    _ => None,
                };
                self.filled(&name, incarnation, read);
            }
            Then::Tick(name, incarnation) => {
                if let Some(r) = self.rooms.get_mut(&name) {
                    r.checking = false;
                }
                let Some(Outcome::Checked(epoch, top)) = answer else {
                    return;
                };
                let behind = self
                    .rooms
                    .get(&name)
                    .filter(|r| r.incarnation == incarnation)
                    .and_then(|r| r.epoch.as_ref().map(|e| **e != *epoch || top > r.last));
                if behind == Some(true) {
                    self.fill(&name, false);
                }
            }
            Then::History {
                room,
                conn,
                reference,
            } => match answer {
                Some(Outcome::Read(read)) if read.epoch.is_empty() => self.reply(
                    conn,
                    Reply::error(
                        reference,
                        ErrorCode::NotFound,
                        &format!("no room {room} (no members, no history)"),
                    ),
                ),
                Some(Outcome::Read(read)) => {
                    let entries = self.fresh(read.entries);
                    let frame = reply::history(
                        reference,
                        &room,
                        &read.epoch,
                        entries.iter().map(|(_, j)| &j[..]),
                    );
                    self.reply(conn, Reply::Frame(frame));
                }
                _ => self.unavailable(conn, reference),
            },
            Then::Presence {
                room,
                conn,
                reference,
            } => match answer {
                Some(Outcome::Members(members)) => {
                    let frame =
                        reply::presence(reference, &room, members.iter().map(|(c, i)| (c, i)));
                    self.reply(conn, Reply::Frame(frame));
                }
                _ => self.unavailable(conn, reference),
            },
        }
    }

    /// Drops entries older than the history's age (Redis trims them at the next publish).
    fn fresh(&self, entries: Vec<(u64, u64, Bytes)>) -> Vec<(u64, Bytes)> {
        let age = self.settings.history.max_age_ms;
        let now = crate::now_ms();
        entries
            .into_iter()
            .filter(|(_, ts, _)| now.saturating_sub(*ts) <= age)
            .map(|(o, _, j)| (o, j))
            .collect()
    }

    /// Takes the epoch a read found. A room whose position was not known starts at the
    /// read's `start`; one whose epoch changed has lost its history: its members are
    /// told, live messages of the old epoch are dropped, and it goes on from `start`.
    fn adopt_epoch(&mut self, name: &RoomName, epoch: &Arc<str>, start: u64) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        match &r.epoch {
            Some(e) if e == epoch => {}
            known => {
                let changed = known.is_some();
                r.epoch = Some(epoch.clone());
                r.last = start;
                r.held.retain(|l| l.epoch == *epoch);
                if changed {
                    self.reset(name, epoch, start);
                }
            }
        }
    }

    fn joined(&mut self, join: Join, incarnation: u64, held: bool, read: Option<Read>) {
        let name = join.room.clone();
        let Some(r) = self
            .rooms
            .get_mut(&name)
            .filter(|r| r.incarnation == incarnation)
        else {
            // The member left before its join was done; its worker still waits for the
            // join's answer (and ignores what it says).
            return self.refuse_join(join);
        };
        if held {
            r.busy = r.busy.saturating_sub(1);
        }
        let Some(read) = read else {
            self.join_failed(join);
            return self.release(&name);
        };
        let epoch: Arc<str> = Arc::from(read.epoch.as_str());
        self.adopt_epoch(&name, &epoch, read.top);
        let entries = self.fresh(read.entries);
        let Some(r) = self.rooms.get_mut(&name) else {
            return;
        };
        let since = join.since.as_ref().filter(|s| *s.epoch == *epoch);
        if let Some(s) = since
            && s.offset > r.last
            && read.top > r.last
        {
            // The client has seen more of the room than this node has: catch the node
            // up first, then read again for the joiner.
            r.busy += 1;
            let op = Op::Read {
                room: name.clone(),
                since: Some(s.clone()),
                limit: self.settings.history.max_messages,
            };
            self.fill(&name, true);
            let then = Then::Join {
                join,
                incarnation,
                held: true,
            };
            self.enqueue(op, then);
            return;
        }
        if held {
            // Stored but not delivered here yet: delivered now from this read when it
            // holds them, so the joiner's backlog ends where live delivery starts.
            let last = r.last;
            let next: Vec<(u64, Bytes)> =
                entries.iter().filter(|(o, _)| *o > last).cloned().collect();
            if next.first().is_some_and(|(o, _)| *o == last + 1) {
                for (o, j) in next {
                    self.deliver(&name, o, &epoch, j, true);
                }
            } else if read.top > last {
                r.want_fill = true;
            }
        }
        let Some(r) = self.rooms.get(&name) else {
            return;
        };
        let last = r.last;
        let (recovered, missed) = match &join.since {
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
        let frame = reply::joined(join.reference, &name, &epoch, last, recovered);
        self.to_worker(
            usize::from(join.conn.worker),
            LocalMsg::Joined {
                room: name.clone(),
                conn: join.conn,
                seq: join.seq,
                reply: frame,
                missed,
                epoch,
                offset: last,
                notify: join.notify,
            },
        );
        self.release(&name);
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
            // Redis went away or the read failed: the next tick (or reconnect) reads again.
            r.want_fill = true;
            return;
        };
        if read.epoch.is_empty() {
            // The room's state is gone from Redis (expired, or Redis lost it): its next
            // message starts a new epoch, which the members are told of then.
            return self.release(name);
        }
        let epoch: Arc<str> = Arc::from(read.epoch.as_str());
        let truncated = read.entries.len() >= self.settings.history.max_messages;
        // How far the stream was read: its last entry, or its top when it had none.
        let covered = read.entries.last().map_or(read.top, |e| e.0);
        let start = read.entries.first().map_or(read.top, |e| e.0 - 1);
        self.adopt_epoch(name, &epoch, start);
        for (o, j) in self.fresh(read.entries) {
            let Some(r) = self.rooms.get_mut(name) else {
                return;
            };
            if o <= r.last {
                continue;
            }
            if o > r.last + 1 {
                // The stream no longer holds what was skipped: the members are told.
                r.last = o - 1;
                self.reset(name, &epoch, o - 1);
            }
            self.deliver(name, o, &epoch, j, true);
        }
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if truncated {
            r.want_fill = true;
        } else if covered > r.last {
            // What is left was too old to deliver (or trimmed): the members are told, and
            // go on from what the stream has.
            r.last = covered;
            self.reset(name, &epoch, covered);
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

    /// Lets held live messages through once no read is out (after a wanted fill), the
    /// room's position is known and its channel is live. Until then they stay held: a
    /// message let through earlier would only be held again (`message`), and this loop
    /// would never end (as it did when a read answered on a link already given up).
    fn release(&mut self, name: &RoomName) {
        loop {
            let Some(r) = self.rooms.get_mut(name) else {
                return;
            };
            if r.busy > 0 || r.epoch.is_none() || r.sub != Sub::Yes {
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
        if control::is_control(channel) {
            if let Some(msg) = Control::decode(payload) {
                self.control(msg);
            }
            return;
        }
        let Some(name) = scripts::room_of_channel(channel).and_then(|r| RoomName::new(r).ok())
        else {
            return;
        };
        match payload.first() {
            Some(b'm') => {
                if let Some(live) = wire::parse_live(payload.slice(1..)) {
                    self.message(&name, live);
                }
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
            // Already delivered (from a read), as a rule. But after Redis lost its tail
            // (a failover) new messages get offsets given before: the room is checked
            // against Redis's top, which starts a new epoch if so (see scripts::TICK).
            if !r.checking {
                self.check(name);
            }
            return;
        }
        if same_epoch && live.offset == r.last + 1 {
            let epoch = live.epoch.clone();
            return self.deliver(name, live.offset, &epoch, live.json, false);
        }
        // A gap, or a new epoch: read the stream before anything later goes out.
        r.held.push_back(live);
        self.fill(name, false);
    }

    /// Delivers one message to the node's members; `catch_up` when it comes from a read
    /// of the stream rather than live.
    fn deliver(
        &mut self,
        name: &RoomName,
        offset: u64,
        epoch: &Arc<str>,
        json: Bytes,
        catch_up: bool,
    ) {
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
            catch_up,
        });
        if r.acks.iter().any(|a| a.offset <= offset) {
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.acks)
                .into_iter()
                .partition(|a| a.offset <= offset);
            r.acks = waiting;
            self.acks_waiting -= ready.len();
            for ack in ready {
                self.reply(ack.conn, ack.reply);
            }
        }
    }

    /// `+CLIENT\nINFO` or `-CLIENT` on a room's channel.
    fn presence_event(&mut self, name: &RoomName, body: &[u8]) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        if !r.presence_dirty() {
            self.presence_dirty.push(name.clone());
        }
        let text = String::from_utf8_lossy(body);
        if let Some(rest) = text.strip_prefix('+') {
            let (client, info) = rest.split_once('\n').unwrap_or((rest, "{}"));
            let info = Bytes::copy_from_slice(info.as_bytes());
            r.presence_changed(Arc::from(client), Some(info));
        } else if let Some(client) = text.strip_prefix('-') {
            r.presence_changed(Arc::from(client), None);
        }
    }

    /// Sends the presence diffs gathered since the last batch.
    fn presence_diffs(&mut self) {
        for name in std::mem::take(&mut self.presence_dirty) {
            let Some(r) = self.rooms.get_mut(&name) else {
                continue;
            };
            let diff = r.take_diff();
            if diff.joined.is_empty() && diff.left.is_empty() {
                continue; // a join and a leave in one batch cancel out
            }
            let frame = reply::presence_diff(&name, &diff.joined, &diff.left);
            to_members(&self.mesh, &r.subs, true, || LocalMsg::PresenceDiff {
                room: name.clone(),
                frame: frame.clone(),
            });
        }
    }

    /// Acks that waited `ACK_WAIT` for their message: sent, and their room read.
    fn late_acks(&mut self) {
        if self.acks_waiting == 0 {
            return;
        }
        let now = Instant::now();
        let mut late = Vec::new();
        for (name, r) in self.rooms.iter_mut() {
            if r.acks.iter().any(|a| a.deadline <= now) {
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.acks)
                    .into_iter()
                    .partition(|a| a.deadline <= now);
                r.acks = waiting;
                late.push((name.clone(), ready));
            }
        }
        for (name, acks) in late {
            self.acks_waiting -= acks.len();
            for ack in acks {
                self.reply(ack.conn, ack.reply);
            }
            self.fill(&name, false);
        }
    }

    /// Every room's periodic check (see [`scripts::TICK`]).
    fn tick(&mut self) {
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
            self.check(&name);
        }
    }

    /// Queues one room's check (see [`scripts::TICK`]).
    fn check(&mut self, name: &RoomName) {
        let Some(r) = self.rooms.get_mut(name) else {
            return;
        };
        r.checking = true;
        let op = Op::Check {
            room: name.clone(),
            members: r.members(),
            clients: r
                .clients
                .iter()
                .map(|(c, (n, info))| (c.clone(), *n, info.clone()))
                .collect(),
            known: r.epoch.clone().unwrap_or_else(|| Arc::from("")),
            last: r.last,
        };
        let then = Then::Tick(name.clone(), r.incarnation);
        self.enqueue(op, then);
    }

    /// Tells the cluster this node is alive.
    fn beat(&mut self) {
        if self.link.is_none() {
            return;
        }
        let me = NodeInfo {
            id: self.settings.node.to_string(),
            address: self.settings.address.clone(),
            connections: self.stats.connections.load(Ordering::Relaxed),
            rooms: self.rooms.len(),
            since_ms: self.started_ms,
        };
        let op = Op::Beat {
            info: me,
            now_ms: crate::now_ms(),
            instance: self.settings.instance.clone(),
            ttl_ms: self.settings.node_ttl_ms,
        };
        self.enqueue(op, Then::Nothing);
    }
}

/// The length of an instance id: the prefix of every session id of its node.
pub(crate) const INSTANCE_LEN: usize = 8;

/// Reads a pipeline's replies as the outcomes of the ops that made it (`shape`: each
/// op's kind and number of commands; its first command's reply is its outcome). With
/// `wait`, the last reply is `WAIT`'s: fewer replicas than that, and no publish of the
/// batch has an outcome (each answers `unavailable`).
fn redis_batch(
    shape: &[(OpKind, usize)],
    wait: Option<u32>,
    result: redis::RedisResult<Vec<Value>>,
) -> Batch {
    let n = shape.iter().map(|(_, n)| n).sum::<usize>() + usize::from(wait.is_some());
    let mut values = match result {
        Ok(values) if values.len() == n => values,
        other => {
            if let Err(e) = &other {
                tracing::warn!(error = %e, "broker: a batch failed");
            }
            return Batch {
                outcomes: Vec::new(),
                down: true,
            };
        }
    };
    let confirmed = match (wait, wait.and_then(|_| values.pop())) {
        (Some(want), Some(counted)) => {
            let counted = wire::int_of(&counted).unwrap_or(0);
            if counted < u64::from(want) {
                tracing::warn!(
                    counted,
                    want,
                    "broker: replicas did not confirm the publishes"
                );
            }
            counted >= u64::from(want)
        }
        _ => true,
    };
    // Scripts flushed from Redis (SCRIPT FLUSH, a failover to a replica that never
    // loaded them): reconnecting loads them again.
    let mut down = false;
    let mut values = values.into_iter();
    let mut outcomes = Vec::with_capacity(shape.len());
    for &(kind, count) in shape {
        let mut answer = None;
        for i in 0..count {
            let Some(value) = values.next() else { break };
            let outcome = match value {
                Value::ServerError(e) => {
                    down |= e.code() == "NOSCRIPT";
                    tracing::warn!(error = ?e, "broker: a command failed");
                    None
                }
                v => ops::Redis::answer(&kind, v),
            };
            if i == 0 && (confirmed || kind != OpKind::Publish) {
                answer = outcome;
            }
        }
        outcomes.push(answer);
    }
    Batch { outcomes, down }
}

/// A control message for the nodes listening on `channel`.
fn control_op(channel: &str, msg: Control) -> Op {
    Op::Control {
        channel: channel.to_owned(),
        payload: msg.encode(),
    }
}

/// Node-to-node requests (see [`control`]).
impl Broker {
    /// Registers a call; `None` (the call dropped, so its caller answers 503) past
    /// [`MAX_CALLS`] waiting.
    fn call(&mut self, call: Call) -> Option<u64> {
        if self.calls.len() >= MAX_CALLS {
            return None;
        }
        self.next_call += 1;
        self.calls.insert(self.next_call, call);
        Some(self.next_call)
    }

    /// A control request went out to `receivers` nodes (`None`: it did not go out).
    fn sent(&mut self, id: u64, receivers: Option<u64>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match (call, receivers) {
            // Nobody listens on the node's channel: gone, unless it still beats (its
            // pub/sub connection is being reopened).
            (Call::Command { instance, .. }, Some(0)) => {
                let op = Op::Alive {
                    instance: instance.clone(),
                };
                self.enqueue(op, Then::Alive(id));
            }
            (Call::Command { .. }, Some(_)) => {}
            (Call::Disconnect { expected, .. }, Some(n)) => {
                *expected = Some(n as usize);
                self.settle(id);
            }
            // Not sent: the caller gets its 503.
            (_, None) => {
                self.calls.remove(&id);
            }
        }
    }

    /// Answers a disconnect once every node that received it has answered.
    fn settle(&mut self, id: u64) {
        let done = matches!(
            self.calls.get(&id),
            Some(Call::Disconnect { expected: Some(n), answered, .. }) if answered >= n
        );
        if done && let Some(Call::Disconnect { reply, closed, .. }) = self.calls.remove(&id) {
            let _ = reply.send(Disconnected {
                closed,
                unanswered: 0,
            });
        }
    }

    /// Ends the calls past their deadline (or all of them, when the link went down): a
    /// forwarded command gets no answer (the caller's 503), a disconnect answers with the
    /// nodes that did not.
    fn expire_calls(&mut self, all: bool) {
        if self.calls.is_empty() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                all || match c {
                    Call::Command { deadline, .. } | Call::Disconnect { deadline, .. } => {
                        *deadline <= now
                    }
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(Call::Disconnect {
                reply,
                expected,
                answered,
                closed,
                ..
            }) = self.calls.remove(&id)
            {
                let unanswered = expected.map_or(1, |n| n.saturating_sub(answered).max(1));
                let _ = reply.send(Disconnected { closed, unanswered });
            }
        }
    }

    /// A control message on this node's channels.
    fn control(&mut self, msg: Control) {
        match msg {
            Control::Command {
                from,
                id,
                session,
                call,
                wait_ms,
            } => {
                let (tx, rx) = oneshot::channel();
                let worker = (id as usize) % self.mesh.len().max(1);
                self.to_worker(
                    worker,
                    LocalMsg::RemoteCall {
                        session: Arc::from(session),
                        call,
                        reply: tx,
                    },
                );
                let events = self.events.clone();
                let wait = Duration::from_millis(wait_ms);
                tokio::task::spawn_local(async move {
                    let answer = match tokio::time::timeout(wait, rx).await {
                        Ok(Ok(answer)) => answer,
                        _ => CommandAnswer::Refused {
                            code: ErrorCode::Unavailable,
                            message: "no reply in time".into(),
                        },
                    };
                    let answer = Answer::Command(answer);
                    let _ = events.send(Event::Answer {
                        to: from,
                        id,
                        answer,
                    });
                });
            }
            Control::Disconnect {
                from,
                id,
                client,
                code,
                reason,
            } => {
                let client: Arc<str> = Arc::from(client);
                let reason: Arc<str> = Arc::from(reason);
                let counts: Vec<_> = (0..self.mesh.len())
                    .map(|w| {
                        let (tx, rx) = oneshot::channel();
                        self.to_worker(
                            w,
                            LocalMsg::Disconnect {
                                client: client.clone(),
                                code,
                                reason: reason.clone(),
                                reply: tx,
                            },
                        );
                        rx
                    })
                    .collect();
                let events = self.events.clone();
                tokio::task::spawn_local(async move {
                    let mut closed = 0;
                    for rx in counts {
                        if let Ok(Ok(n)) = tokio::time::timeout(DISCONNECT_WAIT, rx).await {
                            closed += n;
                        }
                    }
                    let answer = Answer::Closed(closed);
                    let _ = events.send(Event::Answer {
                        to: from,
                        id,
                        answer,
                    });
                });
            }
            Control::Answer { id, answer } => match (self.calls.get_mut(&id), answer) {
                (Some(Call::Command { .. }), Answer::Command(a)) => {
                    if let Some(Call::Command { reply, .. }) = self.calls.remove(&id) {
                        let _ = reply.send(Some(a));
                    }
                }
                (
                    Some(Call::Disconnect {
                        answered, closed, ..
                    }),
                    Answer::Closed(n),
                ) => {
                    *answered += 1;
                    *closed += n;
                    self.settle(id);
                }
                _ => {}
            },
        }
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

/// Opens the connections, loads the scripts and subscribes the node's control channels;
/// what the connections hear is forwarded as events of `generation`.
async fn open(
    target: &Target,
    sources: &[String],
    instance: &str,
    nats: &jetstream::JetSettings,
    generation: u64,
    events: &mpsc::UnboundedSender<Event>,
) -> redis::RedisResult<Link> {
    let control = [control::channel(instance), control::ALL.to_owned()];
    let (mut conn, sink, mut heard, hearing) =
        link::open(target, COMMAND_TIMEOUT, &control, nats).await?;
    // On a cluster `SCRIPT LOAD` goes to every primary (NATS has no scripts).
    let sources = if target.is_nats() { &[][..] } else { sources };
    for source in sources {
        let loaded = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(source)
            .query_async::<Value>(&mut conn)
            .await;
        if let Err(e) = loaded {
            hearing.abort();
            return Err(e);
        }
    }
    let events = events.clone();
    let reader = tokio::task::spawn_local(async move {
        while let Some(h) = heard.recv().await {
            let event = match h {
                Heard::Message(channel, payload) => Event::Live(generation, channel, payload),
                Heard::Dropped(channel) => Event::Dropped(generation, channel),
                Heard::Blip => Event::Blip(generation),
                Heard::Closed => break,
            };
            if events.send(event).is_err() {
                return;
            }
        }
        let _ = events.send(Event::Down(generation));
    })
    .abort_handle();
    Ok(Link {
        generation,
        conn,
        sink,
        readers: [hearing, reader],
    })
}
