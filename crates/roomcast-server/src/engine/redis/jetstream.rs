//! The engine's ops ([`Op`] in, [`Outcome`] out) done on NATS with JetStream
//! (`broker.url = "nats://HOST:PORT"`), with the same guarantees as on Redis.
//!
//! | what | where | how |
//! |---|---|---|
//! | a room's history | stream `RC`, subject `rc.s.HEX(ROOM)` | one message per room message: headers `Rc-Offset`, `Rc-Epoch`, `Rc-Ts`, the `message` JSON as payload; limits per subject from `rooms.history_*` |
//! | a room's position | the subject's last message | its offset and epoch; an empty subject gets a *marker* (`Rc-Mark`, no payload) that names the epoch |
//! | a room's record | bucket `rc_pos`, key `HEX(ROOM)` | `EPOCH OFFSET SEQ` of the subject's newest message by stream sequence, raised after every append; what an aged-out subject goes on from |
//! | idempotency ids | bucket `rc_ids`, key `HEX(ROOM).HEX(ID)` | `OFFSET EPOCH`, kept as long as the history; `Nats-Msg-Id` covers the moment between the append and the key |
//! | presence, members per node | bucket `rc_rooms`, key `HEX(ROOM)` | JSON, changed with compare-and-set |
//! | nodes | bucket `rc_nodes`, keys `n.HEX(NODE)`, `i.INSTANCE` | a node's info and last beat; a process's deadline |
//! | live copies, control | core subjects `rc.c.HEX(CHANNEL)` | the payloads of the Redis channels, unchanged |
//!
//! Names are hex-encoded: room names may hold `.` and `:`, which subjects and keys
//! give other meanings or refuse.
//!
//! **Appends are conditional.** A publish reads the subject's last message (its offset,
//! epoch and stream sequence), then appends offset + 1 with
//! `Nats-Expected-Last-Subject-Sequence`: when another node appended first, JetStream
//! refuses it (`WrongLastSequence`) and the publish reads again. Offsets stay contiguous
//! per room across nodes, and a room's order is JetStream's. The ack goes out only once
//! JetStream acknowledged the append; the live copy follows it on the core subject.
//!
//! **Lost tails start a new epoch**, as on Redis (`break_if_behind`): a node that
//! delivered the room further than the subject's top appends a marker of a fresh epoch,
//! so members get `recovered:false` rather than a silent hole.
//!
//! **A room's record outlives its messages.** When every message of a subject aged out,
//! the room goes on from its record (`rc_pos`), never from what a node remembers: a
//! node may have missed the last messages, and going on from its view would give their
//! offsets again. No record (the broker lost its store, or the room was idle past the
//! record's age too) means a fresh epoch. A subject whose newest message is older than
//! its record's lost messages it had acknowledged, and starts a fresh epoch as well.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::control;
use super::link::Heard;
use super::ops::Op;
use super::ops::Outcome;
use super::wire::Read;
use crate::engine::{NodeInfo, RoomInfo};
use crate::hub::HistoryLimits;
use crate::protocol::{RoomName, SincePos};

/// Why an op failed on NATS (cloned when it fails a whole run of ops).
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum JetError {
    /// NATS did not answer, or answered with an error: the link is given up.
    #[error("nats: {0}")]
    Broker(String),
    /// What NATS holds does not parse, or a race was lost too often: this op fails alone.
    #[error("nats: {0}")]
    Bad(String),
}

fn broker(e: impl std::fmt::Display) -> JetError {
    JetError::Broker(e.to_string())
}

/// A refused append fails its op alone (a message over `max_payload`, or JetStream's
/// own refusal): the link is given up only when NATS did not answer.
fn publish_error(e: jetstream::context::PublishError) -> JetError {
    use jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::TimedOut | K::BrokenPipe | K::StreamNotFound => broker(e),
        _ => JetError::Bad(e.to_string()),
    }
}

const STREAM: &str = "RC";
const ROOMS: &str = "rc_rooms";
const IDS: &str = "rc_ids";
const NODES: &str = "rc_nodes";
const POS: &str = "rc_pos";
/// Appends refused because another node appended first, at most, before a publish fails.
const MAX_RACES: usize = 64;

/// Lowercase hex of `s`: a subject token or key that any name fits in.
pub(super) fn hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The core subject of a channel (a room's live channel, or a control channel).
pub(super) fn subject_of(channel: &str) -> String {
    format!("rc.c.{}", hex(channel))
}

fn room_subject(room: &RoomName) -> String {
    format!("rc.s.{}", hex(room.as_str()))
}

/// The settings the ops need.
#[derive(Debug, Clone)]
pub(super) struct JetSettings {
    pub node: Arc<str>,
    pub history: HistoryLimits,
    pub presence_ttl_ms: u64,
    pub timeout: Duration,
}

/// A link to NATS: the client, the stream and the buckets.
#[derive(Debug)]
pub(super) struct Jet {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    rooms: Store,
    ids: Store,
    nodes: Store,
    pos: Store,
    settings: JetSettings,
}

/// Where a room stands: its last message's stream sequence, epoch and offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Top {
    seq: u64,
    epoch: String,
    offset: u64,
}

/// The presence and members of a room (`rc_rooms`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct RoomDoc {
    /// Visible clients: their info and, per node, memberships and deadline (ms).
    #[serde(default)]
    p: BTreeMap<String, Client>,
    /// Members per node, and when the node said so (ms).
    #[serde(default)]
    m: BTreeMap<String, (u32, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Client {
    i: String,
    n: BTreeMap<String, (u32, u64)>,
}

impl Top {
    /// A record's text: `EPOCH OFFSET SEQ`.
    fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let mut parts = text.split(' ');
        let (epoch, offset, seq) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            seq: seq.parse().ok()?,
            epoch: epoch.to_owned(),
            offset: offset.parse().ok()?,
        })
    }

    fn text(&self) -> Bytes {
        format!("{} {} {}", self.epoch, self.offset, self.seq).into()
    }
}

impl RoomDoc {
    /// Removes what expired by `now`; the clients that left.
    fn sweep(&mut self, now: u64) -> Vec<String> {
        let mut gone = Vec::new();
        self.p.retain(|client, c| {
            c.n.retain(|_, (_, deadline)| *deadline > now);
            if c.n.is_empty() {
                gone.push(client.clone());
            }
            !c.n.is_empty()
        });
        gone
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct NodeDoc {
    info: NodeInfo,
    seen: u64,
}

/// The JSON of a stored message: `head`, epoch, offset, `tail`, time.
fn message_json(head: &[u8], epoch: &str, offset: u64, tail: &[u8], now: u64) -> Vec<u8> {
    let mut json = Vec::with_capacity(head.len() + tail.len() + 48);
    json.extend_from_slice(head);
    json.extend_from_slice(epoch.as_bytes());
    json.extend_from_slice(b"\",\"offset\":");
    json.extend_from_slice(offset.to_string().as_bytes());
    json.extend_from_slice(tail);
    json.extend_from_slice(now.to_string().as_bytes());
    json.push(b'}');
    json
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

/// Opens a link: connects, makes the stream and buckets if they are missing, and
/// reports a lost connection as [`Heard::Closed`] on `heard`.
pub(super) async fn connect(
    url: &str,
    settings: JetSettings,
    heard: mpsc::UnboundedSender<Heard>,
) -> Result<Jet, JetError> {
    let closed = heard.clone();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(settings.timeout)
        .request_timeout(Some(settings.timeout))
        .event_callback(move |event| {
            let closed = closed.clone();
            async move {
                if matches!(
                    event,
                    async_nats::Event::Disconnected | async_nats::Event::Closed
                ) {
                    let _ = closed.send(Heard::Closed);
                }
            }
        })
        .connect(url)
        .await
        .map_err(broker)?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(settings.timeout);
    let age = Duration::from_millis(settings.history.max_age_ms.max(1));
    let stream = js
        .get_or_create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["rc.s.>".into()],
            // One more than the history: a subject's marker may take a place.
            max_messages_per_subject: settings.history.max_messages as i64 + 1,
            max_age: age,
            duplicate_window: age.min(Duration::from_secs(120)),
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let keep = age + Duration::from_secs(60);
    let state = js
        .get_or_create_stream(stream::Config {
            name: STATE.into(),
            subjects: vec!["rc.k.>".into()],
            max_messages_per_subject: 1,
            // Refreshed by every write; a room's document outlives its history by a
            // minute, as on Redis.
            max_age: keep,
            storage: stream::StorageType::File,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(broker)?;
    let store = |name: &str| Store {
        js: js.clone(),
        stream: state.clone(),
        prefix: format!("rc.k.{name}."),
    };
    let (rooms, ids, nodes, pos) = (store(ROOMS), store(IDS), store(NODES), store(POS));
    Ok(Jet {
        client,
        js,
        stream,
        rooms,
        ids,
        nodes,
        pos,
        settings,
    })
}

/// A key-value store over the stream `RC_STATE`: key `K` of store `S` is subject
/// `rc.k.S.K`, holding its last message only. (Not JetStream's KV buckets: making one
/// asks `$JS.API.INFO`, whose answer from a 2.9 server async-nats 0.51 does not parse.)
#[derive(Debug, Clone)]
struct Store {
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

const STATE: &str = "RC_STATE";

impl Store {
    fn subject(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The key's value (`None`: none, or deleted) and the sequence of its last write
    /// (0: none).
    async fn entry(&self, key: &str) -> Result<(Option<Bytes>, u64), JetError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(key))
            .await
        {
            Ok(msg) => Ok((
                (!msg.payload.is_empty()).then_some(msg.payload),
                msg.sequence,
            )),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((None, 0)),
            Err(e) => Err(broker(e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, JetError> {
        Ok(self.entry(key).await?.0)
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), JetError> {
        self.js
            .publish(self.subject(key), value)
            .await
            .map_err(broker)?
            .await
            .map_err(publish_error)?;
        Ok(())
    }

    /// Writes `value` if the key's last write is still `seq` (0: none); `false` when
    /// another write came first.
    async fn swap(&self, key: &str, value: Bytes, seq: u64) -> Result<bool, JetError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            seq.to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(self.subject(key), headers, value)
            .await
            .map_err(broker)?
            .await;
        match ack {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(false)
            }
            Err(e) => Err(publish_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), JetError> {
        self.put(key, Bytes::new()).await
    }

    /// Every key with a message (deleted ones included: their value reads as none).
    async fn keys(&self) -> Result<Vec<String>, JetError> {
        let info = self
            .stream
            .info_with_subjects(format!("{}>", self.prefix))
            .await
            .map_err(broker)?;
        futures_util::pin_mut!(info);
        let mut keys = Vec::new();
        while let Some(s) = info.next().await {
            let (subject, _) = s.map_err(broker)?;
            if let Some(key) = subject.strip_prefix(&self.prefix) {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }
}

impl Jet {
    /// The core client (for subscriptions).
    pub(super) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Does `op`.
    pub(super) async fn run(&self, op: Op) -> Result<Outcome, JetError> {
        match op {
            op @ Op::Publish { .. } => self
                .publish_run(vec![op])
                .await
                .pop()
                .unwrap_or_else(|| Err(JetError::Bad("a run of one answered none".into()))),
            op @ Op::Join { .. } => self
                .join_run(vec![op])
                .await
                .pop()
                .unwrap_or_else(|| Err(JetError::Bad("a run of one answered none".into()))),
            Op::Leave {
                room,
                client,
                presence,
            } => {
                self.leave(&room, &client, presence).await?;
                Ok(Outcome::Count(1))
            }
            Op::Check {
                room,
                members,
                clients,
                known,
                last,
            } => self.check(&room, members, clients, &known, last).await,
            Op::Read { room, since, limit } => {
                let subject = room_subject(&room);
                let Some(top) = self.top(&subject).await? else {
                    // Aged out: the record tells where the room stands.
                    let record = self.record(&room).await?.0;
                    return Ok(Outcome::Read(Read {
                        epoch: record.as_ref().map(|r| r.epoch.clone()).unwrap_or_default(),
                        top: record.map_or(0, |r| r.offset),
                        entries: Vec::new(),
                    }));
                };
                let after = since
                    .filter(|s| s.epoch.as_str() == top.epoch)
                    .map(|s| s.offset);
                Ok(Outcome::Read(self.read(&subject, top, after, limit).await?))
            }
            Op::Presence { room } => {
                let (doc, _) = self.room_doc(&room).await?;
                let now = crate::now_ms();
                let mut members: Vec<(Arc<str>, Bytes)> = doc
                    .p
                    .into_iter()
                    .filter(|(_, c)| c.n.values().any(|(_, d)| *d > now))
                    .map(|(client, c)| (Arc::from(client), Bytes::from(c.i)))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Outcome::Members(members))
            }
            Op::Control { channel, payload } => {
                self.client
                    .publish(subject_of(&channel), payload)
                    .await
                    .map_err(broker)?;
                // Core NATS does not count receivers: those that beat are counted.
                let count = if channel == control::ALL {
                    self.instances().await?
                } else {
                    let instance = channel.strip_prefix(control::PREFIX).unwrap_or_default();
                    u64::from(self.alive(instance).await?)
                };
                Ok(Outcome::Count(count))
            }
            Op::Alive { instance } => Ok(Outcome::Count(u64::from(self.alive(&instance).await?))),
            Op::Beat {
                info,
                now_ms,
                instance,
                ttl_ms,
            } => {
                let key = format!("n.{}", hex(&info.id));
                let doc = serde_json::to_vec(&NodeDoc { info, seen: now_ms })
                    .map_err(|e| JetError::Bad(e.to_string()))?;
                self.nodes.put(&key, doc.into()).await?;
                let deadline = (now_ms + ttl_ms).to_string();
                self.nodes
                    .put(&format!("i.{instance}"), deadline.into())
                    .await?;
                Ok(Outcome::Count(1))
            }
        }
    }

    /// The subject's last message, if it has one.
    async fn top(&self, subject: &str) -> Result<Option<Top>, JetError> {
        let msg = match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(msg) => msg,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Err(e) => return Err(broker(e)),
        };
        let epoch = header(&msg.headers, "Rc-Epoch").unwrap_or_default();
        let offset = header(&msg.headers, "Rc-Offset").and_then(|o| o.parse().ok());
        match offset {
            Some(offset) if !epoch.is_empty() => Ok(Some(Top {
                seq: msg.sequence,
                epoch: epoch.to_owned(),
                offset,
            })),
            _ => Err(JetError::Bad(format!(
                "message {} of {subject} has no position",
                msg.sequence
            ))),
        }
    }

    /// The room's record (see [`Jet::raise`]) and its revision.
    async fn record(&self, room: &RoomName) -> Result<(Option<Top>, u64), JetError> {
        let (value, seq) = self.pos.entry(&hex(room.as_str())).await?;
        Ok((value.as_deref().and_then(Top::parse), seq))
    }

    /// Raises the room's record to `top` unless it names a newer message already
    /// (compare-and-set: two nodes' appends may end in either order), or sets it with
    /// `force` (a marker: the subject's newest message by construction, even when the
    /// stream's sequences started again lower). `seen` is the record as read before,
    /// when the caller has it.
    async fn raise(
        &self,
        room: &RoomName,
        top: &Top,
        mut seen: Option<(Option<Top>, u64)>,
        force: bool,
    ) -> Result<(), JetError> {
        let key = hex(room.as_str());
        for _ in 0..MAX_RACES {
            let (record, rev) = match seen.take() {
                Some(seen) => seen,
                None => self.record(room).await?,
            };
            if !force && record.is_some_and(|r| r.seq >= top.seq) {
                return Ok(());
            }
            if self.pos.swap(&key, top.text(), rev).await? {
                return Ok(());
            }
        }
        Err(JetError::Bad(format!("record of {room:?}: too many races")))
    }

    /// The room's position, made when it has none, and its record as read (for
    /// [`Jet::raise`]). An empty subject gets a marker naming the room's record (its
    /// messages aged out) or, without one, a fresh epoch. A subject lost its tail, and
    /// starts a fresh epoch, when its top is older than its record, or below `last` in
    /// `known` (where this node's members are).
    async fn position(&self, room: &RoomName, known: &str, last: u64) -> Result<Placed, JetError> {
        let subject = &room_subject(room);
        for _ in 0..MAX_RACES {
            let (mut found, seen) = tokio::try_join!(self.top(subject), self.record(room))?;
            let record = seen.0.clone();
            // Read side by side, the record may name an append made after the top was
            // read: a second look tells that from a loss.
            if let (Some(r), Some(t)) = (&record, &found)
                && r.seq > t.seq
            {
                found = self.top(subject).await?;
            }
            let after = found.as_ref().map_or(0, |t| t.seq);
            // Lost its tail: older than the room's record, or behind this node's members.
            let lost = |top: &Top| {
                record.as_ref().is_some_and(|r| r.seq > top.seq)
                    || (top.epoch == known && top.offset < last)
            };
            let (epoch, offset) = match found {
                Some(top) if !lost(&top) => return Ok((top, Some(seen))),
                Some(top) => {
                    tracing::warn!(
                        subject,
                        top = top.offset,
                        record = record.map(|r| r.offset),
                        last,
                        "broker: the stream lost messages it had acknowledged; a new epoch starts"
                    );
                    (crate::random_id(8), 0)
                }
                None => match record {
                    // A node that delivered past the record saw messages whose record
                    // was not written: the room cannot go on from it.
                    Some(r) if !(r.epoch == known && r.offset < last) => (r.epoch, r.offset),
                    _ => (crate::random_id(8), 0),
                },
            };
            if let Some(top) = self.mark(room, after, epoch, offset).await? {
                return Ok((top, None));
            }
        }
        Err(JetError::Bad(format!("{subject}: too many races")))
    }

    /// Appends a marker naming `epoch` at `offset` if the subject's last message is
    /// still `after` (0: none), and sets the room's record to it; `None` when another
    /// append came first.
    async fn mark(
        &self,
        room: &RoomName,
        after: u64,
        epoch: String,
        offset: u64,
    ) -> Result<Option<Top>, JetError> {
        let subject = room_subject(room);
        let mut headers = HeaderMap::new();
        headers.insert("Rc-Mark", "1");
        headers.insert("Rc-Epoch", epoch.as_str());
        headers.insert("Rc-Offset", offset.to_string().as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            after.to_string().as_str(),
        );
        // Two nodes making the same room's marker at once: one is kept.
        headers.insert("Nats-Msg-Id", format!("mark.{subject}.{after}").as_str());
        match self.append(&subject, headers, Bytes::new()).await? {
            Appended::Stored(seq) => {
                let top = Top { seq, epoch, offset };
                self.raise(room, &top, None, true).await?;
                Ok(Some(top))
            }
            Appended::Duplicate(_) | Appended::Raced => Ok(None),
        }
    }

    async fn append(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<Appended, JetError> {
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(broker)?
            .await;
        match ack {
            Ok(ack) if ack.duplicate => Ok(Appended::Duplicate(ack.sequence)),
            Ok(ack) => Ok(Appended::Stored(ack.sequence)),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Ok(Appended::Raced)
            }
            Err(e) => Err(publish_error(e)),
        }
    }

    /// Does a run of one room's publishes, in order, as one: the room's position is
    /// read once and each append expects the one before it, the record is raised once
    /// for the run and the ids' keys written together before any is acked, and the live
    /// copies go out back to back, so the nodes get them in one read and deliver them in
    /// one write per member (as a Redis pipeline's do). A publish that fails fails
    /// alone, unless the broker did: then the rest of the run fails too, and the link
    /// goes down. Nothing is acked before its record and id are written.
    pub(super) async fn publish_run(&self, ops: Vec<Op>) -> Vec<Result<Outcome, JetError>> {
        let mut results: Vec<Result<Outcome, JetError>> = Vec::with_capacity(ops.len());
        let mut run = Run::default();
        let mut room_of = None;
        for op in ops {
            let Op::Publish {
                room,
                id,
                head,
                tail,
                known,
                last,
            } = op
            else {
                results.push(Err(JetError::Bad("not a publish in a run".into())));
                continue;
            };
            if run.down {
                results.push(Err(JetError::Broker(
                    "an earlier publish of its run".into(),
                )));
                continue;
            }
            let r = self
                .publish_one(&room, id, &head, &tail, &known, last, &mut run)
                .await;
            if let Err(JetError::Broker(_)) = &r {
                run.down = true;
            }
            results.push(r);
            room_of = Some(room);
        }
        let Some(room) = room_of else {
            return results;
        };
        // Before any ack: the room's record covers the run's newest message, and every
        // id names its offset.
        let ids = futures_util::future::try_join_all(
            run.ids
                .iter()
                .map(|(key, value)| self.ids.put(key, value.clone())),
        );
        let record = async {
            match &run.newest {
                Some(top) => self.raise(&room, top, run.seen.take(), false).await,
                None => Ok(()),
            }
        };
        if let Err(e) = tokio::try_join!(record, ids) {
            return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
        }
        for live in run.lives {
            if let Err(e) = self.live(&room, live).await {
                // Stored and recorded: the other nodes' checks find what they missed.
                tracing::warn!(error = %e, "broker: a live copy was not sent");
                break;
            }
        }
        results
    }

    /// One publish of a run (see [`Jet::publish_run`]): stored, with its live copy and
    /// its id's key left for the run to send and write.
    #[allow(clippy::too_many_arguments)]
    async fn publish_one(
        &self,
        room: &RoomName,
        id: Option<String>,
        head: &[u8],
        tail: &[u8],
        known: &str,
        last: u64,
        run: &mut Run,
    ) -> Result<Outcome, JetError> {
        let subject = room_subject(room);
        let id_key = id
            .as_ref()
            .map(|id| format!("{}.{}", hex(room.as_str()), hex(id)));
        for _ in 0..MAX_RACES {
            // The run's own last append is the room's top unless another node raced it.
            let top = match run.top.take() {
                Some(top) => top,
                None => {
                    let (top, seen) = self.position(room, known, last).await?;
                    run.seen = seen;
                    top
                }
            };
            // An id names `OFFSET EPOCH`: seen in another epoch, the message is not in
            // this one, and is stored again.
            if let Some(key) = &id_key
                && let Some(seen) = self.ids.get(key).await?
                && let Some((offset, epoch)) = std::str::from_utf8(&seen)
                    .ok()
                    .and_then(|s| s.split_once(' '))
                && epoch == top.epoch
                && let Ok(offset) = offset.parse()
            {
                run.top = Some(top);
                return Ok(Outcome::Published(offset, Arc::from(epoch), true));
            }
            let offset = top.offset + 1;
            let now = crate::now_ms();
            let json = message_json(head, &top.epoch, offset, tail, now);
            let mut headers = HeaderMap::new();
            headers.insert("Rc-Epoch", top.epoch.as_str());
            headers.insert("Rc-Offset", offset.to_string().as_str());
            headers.insert("Rc-Ts", now.to_string().as_str());
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                top.seq.to_string().as_str(),
            );
            if let Some(key) = &id_key {
                headers.insert("Nats-Msg-Id", format!("{key}.{}", top.epoch).as_str());
            }
            let json = Bytes::from(json);
            let (seq, offset, duplicate) =
                match self.append(&subject, headers, json.clone()).await? {
                    Appended::Raced => continue,
                    Appended::Stored(seq) => (seq, offset, false),
                    // Stored by an earlier try of this id, within the duplicate window.
                    Appended::Duplicate(seq) => {
                        // Gone already (trimmed by newer messages): the op fails alone.
                        let msg = self
                            .stream
                            .get_raw_message(seq)
                            .await
                            .map_err(|e| JetError::Bad(format!("message {seq}: {e}")))?;
                        let offset = header(&msg.headers, "Rc-Offset")
                            .and_then(|o| o.parse().ok())
                            .ok_or_else(|| JetError::Bad(format!("message {seq} has no offset")))?;
                        (seq, offset, true)
                    }
                };
            let epoch = top.epoch.clone();
            if let Some(key) = id_key {
                run.ids.push((key, format!("{offset} {epoch}").into()));
            }
            let stored = Top {
                seq,
                epoch: epoch.clone(),
                offset,
            };
            if duplicate {
                // An older message: the room's top is still `top`.
                run.top = Some(top);
            } else {
                let mut live = Vec::with_capacity(json.len() + 32);
                live.push(b'm');
                live.extend_from_slice(format!("{offset} {epoch} ").as_bytes());
                live.extend_from_slice(&json);
                run.lives.push(live.into());
                run.top = Some(stored.clone());
            }
            if run.newest.as_ref().is_none_or(|n| n.seq < stored.seq) {
                run.newest = Some(stored);
            }
            return Ok(Outcome::Published(offset, Arc::from(epoch), duplicate));
        }
        Err(JetError::Bad(format!("{subject}: too many races")))
    }

    /// Sends `payload` to the nodes with members in `room`.
    async fn live(&self, room: &RoomName, payload: Bytes) -> Result<(), JetError> {
        let channel = super::scripts::Keys::new(room.as_str()).channel();
        self.client
            .publish(subject_of(&channel), payload)
            .await
            .map_err(broker)
    }

    /// Does a run of one room's joins as one: the position read once, one read of the
    /// room from the earliest `since` among them (each join gets its part), and one
    /// change of the room's document for all. A node's clients coming back together
    /// after another node died (hundreds of joins of one room at once) then cost a few
    /// round trips, not a few each. A failure fails the whole run.
    pub(super) async fn join_run(&self, ops: Vec<Op>) -> Vec<Result<Outcome, JetError>> {
        let n = ops.len();
        let mut joins = Vec::with_capacity(n);
        let mut room_of = None;
        for op in ops {
            if let Op::Join {
                room,
                since,
                client,
                presence,
            } = op
            {
                joins.push((since, client, presence));
                room_of = Some(room);
            }
        }
        let Some(room) = room_of.filter(|_| joins.len() == n) else {
            return (0..n)
                .map(|_| Err(JetError::Bad("not a join in a run".into())))
                .collect();
        };
        match self.joins(&room, joins).await {
            Ok(reads) => reads.into_iter().map(|r| Ok(Outcome::Read(r))).collect(),
            Err(e) => (0..n).map(|_| Err(e.clone())).collect(),
        }
    }

    async fn joins(
        &self,
        room: &RoomName,
        joins: Vec<(Option<SincePos>, Arc<str>, Option<Bytes>)>,
    ) -> Result<Vec<Read>, JetError> {
        let subject = room_subject(room);
        let (top, _) = self.position(room, "", 0).await?;
        let afters: Vec<Option<u64>> = joins
            .iter()
            .map(|(since, _, _)| {
                since
                    .as_ref()
                    .filter(|s| s.epoch.as_str() == top.epoch && s.offset < top.offset)
                    .map(|s| s.offset)
            })
            .collect();
        let limit = self.settings.history.max_messages;
        let read = match afters.iter().flatten().min() {
            Some(&first) => {
                self.read(&subject, top.clone(), Some(first), limit)
                    .await?
                    .entries
            }
            None => Vec::new(),
        };
        let node = self.settings.node.to_string();
        let now = crate::now_ms();
        let deadline = now + self.settings.presence_ttl_ms;
        let infos: Vec<Option<String>> = joins
            .iter()
            .map(|(_, _, p)| p.as_ref().map(|i| String::from_utf8_lossy(i).into_owned()))
            .collect();
        let came = self
            .change_room(room, |doc| {
                let mut came = Vec::new();
                for ((_, client, _), info) in joins.iter().zip(&infos) {
                    let m = doc.m.entry(node.clone()).or_insert((0, now));
                    *m = (m.0 + 1, now);
                    let Some(info) = info else { continue };
                    let c = doc.p.entry(client.to_string()).or_insert_with(|| Client {
                        i: info.clone(),
                        n: BTreeMap::new(),
                    });
                    let new = c.n.is_empty();
                    let entry = c.n.entry(node.clone()).or_insert((0, deadline));
                    entry.0 += 1;
                    entry.1 = deadline;
                    if new {
                        came.push((client.clone(), c.i.clone()));
                    }
                }
                came
            })
            .await?;
        for (client, info) in came {
            self.live(room, format!("p+{client}\n{info}").into())
                .await?;
        }
        Ok(afters
            .into_iter()
            .map(|after| Read {
                epoch: top.epoch.clone(),
                top: top.offset,
                entries: match after {
                    Some(after) => read
                        .iter()
                        .filter(|(offset, _, _)| *offset > after)
                        .take(limit)
                        .cloned()
                        .collect(),
                    None => Vec::new(),
                },
            })
            .collect())
    }

    async fn leave(&self, room: &RoomName, client: &str, presence: bool) -> Result<(), JetError> {
        let node = self.settings.node.to_string();
        let gone = self
            .change_room(room, |doc| {
                if let Some(m) = doc.m.get_mut(&node) {
                    m.0 = m.0.saturating_sub(1);
                }
                if !presence {
                    return false;
                }
                let Some(c) = doc.p.get_mut(client) else {
                    return false;
                };
                if let Some(entry) = c.n.get_mut(&node) {
                    entry.0 = entry.0.saturating_sub(1);
                    if entry.0 == 0 {
                        c.n.remove(&node);
                    }
                }
                let gone = c.n.is_empty();
                if gone {
                    doc.p.remove(client);
                }
                gone
            })
            .await?;
        if gone {
            self.live(room, format!("p-{client}").into()).await?;
        }
        Ok(())
    }

    async fn check(
        &self,
        room: &RoomName,
        members: u32,
        clients: Vec<(Arc<str>, u32, Bytes)>,
        known: &str,
        last: u64,
    ) -> Result<Outcome, JetError> {
        let node = self.settings.node.to_string();
        let now = crate::now_ms();
        let deadline = now + self.settings.presence_ttl_ms;
        let (came, gone) = self
            .change_room(room, |doc| {
                let mut came = Vec::new();
                for (client, n, info) in &clients {
                    let c = doc.p.entry(client.to_string()).or_insert_with(|| Client {
                        i: String::from_utf8_lossy(info).into_owned(),
                        n: BTreeMap::new(),
                    });
                    if c.n.is_empty() {
                        came.push(format!("p+{client}\n{}", c.i));
                    }
                    c.n.insert(node.clone(), (*n, deadline));
                }
                let gone = doc.sweep(now);
                doc.m.insert(node.clone(), (members, now));
                doc.m
                    .retain(|_, (_, at)| *at + 3 * self.settings.presence_ttl_ms > now);
                (came, gone)
            })
            .await?;
        for p in came {
            self.live(room, p.into()).await?;
        }
        for client in gone {
            self.live(room, format!("p-{client}").into()).await?;
        }
        let subject = room_subject(room);
        if known.is_empty() && self.top(&subject).await?.is_none() {
            return Ok(Outcome::Checked(String::new(), 0));
        }
        let (top, seen) = self.position(room, known, last).await?;
        // Behind (a node stopped between its append and the record): mended.
        if let Some(seen) = seen
            && seen.0.as_ref() != Some(&top)
        {
            self.raise(room, &top, Some(seen), false).await?;
        }
        Ok(Outcome::Checked(top.epoch, top.offset))
    }

    /// The room's presence document and its revision (0: none yet).
    async fn room_doc(&self, room: &RoomName) -> Result<(RoomDoc, u64), JetError> {
        let (value, seq) = self.rooms.entry(&hex(room.as_str())).await?;
        let doc = match value {
            Some(v) => serde_json::from_slice(&v)
                .map_err(|err| JetError::Bad(format!("room document: {err}")))?,
            None => RoomDoc::default(),
        };
        Ok((doc, seq))
    }

    /// Changes the room's presence document with `change`, compare-and-set: run again
    /// on what another node wrote meanwhile.
    async fn change_room<T>(
        &self,
        room: &RoomName,
        mut change: impl FnMut(&mut RoomDoc) -> T,
    ) -> Result<T, JetError> {
        let key = hex(room.as_str());
        for _ in 0..MAX_RACES {
            let (mut doc, seq) = self.room_doc(room).await?;
            let out = change(&mut doc);
            let body =
                Bytes::from(serde_json::to_vec(&doc).map_err(|e| JetError::Bad(e.to_string()))?);
            if self.rooms.swap(&key, body, seq).await? {
                return Ok(out);
            }
        }
        Err(JetError::Bad(format!("room {room:?}: too many races")))
    }

    /// The subject's messages after offset `after` (from the oldest without it), at most
    /// `limit`, up to `top`.
    async fn read(
        &self,
        subject: &str,
        top: Top,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Read, JetError> {
        let mut entries = Vec::new();
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(broker)?;
        let mut messages = consumer.messages().await.map_err(broker)?;
        while entries.len() < limit {
            let next = tokio::time::timeout(self.settings.timeout, messages.next()).await;
            let msg = match next {
                Ok(Some(Ok(msg))) => msg,
                Ok(Some(Err(e))) => return Err(broker(e)),
                Ok(None) => return Err(JetError::Broker(format!("{subject}: read cut"))),
                // Nothing came: the subject's messages aged out since its top was read.
                // The read fails alone (the room is read again at its next check).
                Err(_) => return Err(JetError::Bad(format!("{subject}: nothing to read"))),
            };
            let info = msg.info().map_err(broker)?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let headers = msg.headers.clone().unwrap_or_default();
            let offset: Option<u64> = header(&headers, "Rc-Offset").and_then(|o| o.parse().ok());
            let mark = header(&headers, "Rc-Mark").is_some();
            let epoch = header(&headers, "Rc-Epoch").unwrap_or_default();
            if let Some(offset) = offset
                && !mark
                && epoch == top.epoch
                && after.is_none_or(|a| offset > a)
                && offset <= top.offset
            {
                let ts = header(&headers, "Rc-Ts")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                entries.push((offset, ts, msg.payload.clone()));
            }
            if pending == 0 || seq >= top.seq {
                break;
            }
        }
        Ok(Read {
            epoch: top.epoch,
            top: top.offset,
            entries,
        })
    }

    /// Whether the process `instance` beats (its deadline has not passed).
    async fn alive(&self, instance: &str) -> Result<bool, JetError> {
        let deadline = self
            .nodes
            .get(&format!("i.{instance}"))
            .await
            .map_err(broker)?;
        Ok(deadline
            .and_then(|d| std::str::from_utf8(&d).ok()?.parse::<u64>().ok())
            .is_some_and(|d| d > crate::now_ms()))
    }

    /// How many processes beat.
    async fn instances(&self) -> Result<u64, JetError> {
        let mut n = 0;
        for key in self.nodes.keys().await? {
            if let Some(instance) = key.strip_prefix("i.")
                && self.alive(instance).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The nodes heard from within `ttl_ms`, by id.
    pub(super) async fn nodes(&self, ttl_ms: u64) -> Result<Vec<NodeInfo>, JetError> {
        let since = crate::now_ms().saturating_sub(ttl_ms);
        let mut nodes = Vec::new();
        for key in self.nodes.keys().await? {
            if !key.starts_with("n.") {
                continue;
            }
            let Some(doc) = self.nodes.get(key.as_str()).await.map_err(broker)? else {
                continue;
            };
            if let Ok(doc) = serde_json::from_slice::<NodeDoc>(&doc)
                && doc.seen >= since
            {
                nodes.push(doc.info);
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Every room with members on a live node or with retained history.
    pub(super) async fn room_list(&self, ttl_ms: u64) -> Result<Vec<RoomInfo>, JetError> {
        let live: std::collections::HashSet<String> = self
            .nodes(ttl_ms)
            .await?
            .into_iter()
            .map(|n| n.id)
            .collect();
        let mut names: Vec<String> = self
            .rooms
            .keys()
            .await?
            .iter()
            .filter_map(|k| unhex(k))
            .collect();
        let info = self
            .stream
            .info_with_subjects("rc.s.>")
            .await
            .map_err(broker)?;
        let mut subjects = Vec::new();
        futures_util::pin_mut!(info);
        while let Some(s) = info.next().await {
            let (subject, _) = s.map_err(broker)?;
            subjects.push(subject);
        }
        names.extend(
            subjects
                .iter()
                .filter_map(|s| s.strip_prefix("rc.s.").and_then(unhex)),
        );
        names.sort();
        names.dedup();
        let mut rooms = Vec::new();
        let now = crate::now_ms();
        for name in names {
            let Ok(room) = RoomName::new(&name) else {
                continue;
            };
            let (doc, _) = self.room_doc(&room).await?;
            let top = self.top(&room_subject(&room)).await?;
            let members = doc
                .m
                .iter()
                .filter(|(node, _)| live.contains(node.as_str()))
                .map(|(_, (n, _))| n)
                .sum();
            let visible = doc
                .p
                .values()
                .filter(|c| c.n.values().any(|(_, d)| *d > now))
                .count();
            if members == 0 && top.is_none() {
                continue;
            }
            let (epoch, last_offset) = top.map_or((String::new(), 0), |t| (t.epoch, t.offset));
            rooms.push(RoomInfo {
                room,
                epoch: Arc::from(epoch),
                last_offset,
                members,
                visible,
            });
        }
        Ok(rooms)
    }

    /// The node leaves the registry (it is stopping).
    pub(super) async fn forget(&self, node: &str, instance: &str) {
        let _ = self.nodes.delete(&format!("n.{}", hex(node))).await;
        let _ = self.nodes.delete(&format!("i.{instance}")).await;
    }
}

/// A room's position, and its record as read on the way (`None`: set since).
type Placed = (Top, Option<(Option<Top>, u64)>);

/// What a run of publishes carries from one to the next (see [`Jet::publish_run`]).
#[derive(Default)]
struct Run {
    /// The room's top as the run left it.
    top: Option<Top>,
    /// The room's record as the run's last position read saw it.
    seen: Option<(Option<Top>, u64)>,
    /// The newest message the run stored, for the record.
    newest: Option<Top>,
    /// Ids' keys to write, and live copies to send, in order.
    ids: Vec<(String, Bytes)>,
    lives: Vec<Bytes>,
    /// The broker failed: the rest of the run is not tried.
    down: bool,
}

enum Appended {
    Stored(u64),
    Duplicate(u64),
    Raced,
}

/// Core subscriptions, by channel: each forwards what it hears as [`Heard::Message`].
#[derive(Clone, Debug)]
pub(super) struct Subs {
    client: async_nats::Client,
    heard: mpsc::UnboundedSender<Heard>,
    tasks: Arc<Mutex<std::collections::HashMap<String, tokio::task::AbortHandle>>>,
}

impl Subs {
    pub(super) fn new(client: async_nats::Client, heard: mpsc::UnboundedSender<Heard>) -> Self {
        Self {
            client,
            heard,
            tasks: Arc::default(),
        }
    }

    /// Subscribes `channels` (those already subscribed stay as they are). Returns once
    /// the server has them (a flush after the subscriptions).
    pub(super) async fn subscribe(&self, channels: &[String]) -> Result<(), JetError> {
        for channel in channels {
            if self.lock().contains_key(channel) {
                continue;
            }
            let mut sub = self
                .client
                .subscribe(subject_of(channel))
                .await
                .map_err(broker)?;
            let heard = self.heard.clone();
            let name = channel.clone();
            let task = tokio::task::spawn_local(async move {
                while let Some(msg) = sub.next().await {
                    if heard
                        .send(Heard::Message(name.clone(), msg.payload))
                        .is_err()
                    {
                        return;
                    }
                }
            });
            if let Some(old) = self.lock().insert(channel.clone(), task.abort_handle()) {
                old.abort();
            }
        }
        self.client.flush().await.map_err(broker)
    }

    pub(super) fn unsubscribe(&self, channel: &str) {
        if let Some(task) = self.lock().remove(channel) {
            task.abort();
        }
    }

    /// Every subscription ends (the link is given up).
    pub(super) fn close(&self) {
        for (_, task) in self.lock().drain() {
            task.abort();
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::task::AbortHandle>>
    {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_survive_hex() {
        for name in ["orders.eu", "chat:lobby", "a+b=c@d", "rc:{x}"] {
            assert_eq!(unhex(&hex(name)).as_deref(), Some(name));
            assert!(hex(name).bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn a_record_reads_back_what_it_wrote_and_nothing_else() {
        let top = Top {
            seq: 41,
            epoch: "e1".into(),
            offset: 9,
        };
        assert_eq!(Top::parse(&top.text()), Some(top));
        for bad in ["", "e1", "e1 9", "e1 x 41", "e1 9 -1", "e1 9 41 extra"] {
            assert_eq!(Top::parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(Top::parse(b"e1 9 \xff"), None);
    }

    #[test]
    fn a_message_is_stored_as_the_redis_scripts_store_it() {
        let json = message_json(
            b"{\"type\":\"message\",\"epoch\":\"",
            "e1",
            7,
            b",\"ts\":",
            99,
        );
        assert_eq!(
            json,
            b"{\"type\":\"message\",\"epoch\":\"e1\",\"offset\":7,\"ts\":99}"
        );
    }

    #[test]
    fn a_sweep_removes_only_expired_nodes() {
        let mut doc = RoomDoc::default();
        doc.p.insert(
            "a".into(),
            Client {
                i: "{}".into(),
                n: [("n1".into(), (1, 10)), ("n2".into(), (1, 30))].into(),
            },
        );
        doc.p.insert(
            "b".into(),
            Client {
                i: "{}".into(),
                n: [("n1".into(), (2, 10))].into(),
            },
        );
        assert_eq!(doc.sweep(20), vec!["b".to_owned()]);
        assert_eq!(doc.p["a"].n.len(), 1);
    }
}
