//! HTTP members: subscribers on Server-Sent Events or long-polling.
//!
//! An HTTP member is a session with a bounded queue of events (the same JSON objects a
//! `/ws` client receives). It sits in its owner worker's local rooms beside WebSocket
//! members; the stream or poll that reads it may run on any worker, so its state is behind
//! a mutex (uncontended: one writer, one reader).
//!
//! Positions: the member knows, per room, the epoch and offset of the last message it
//! *delivered*. An SSE event's `id:` and a poll's cursor encode them, so a client that
//! comes back (a new stream with `Last-Event-ID`, or a poll whose session is gone) rejoins
//! each room with `since` and misses nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

use crate::engine::ConnKey;
use crate::protocol::RoomName;
use crate::protocol::SincePos;

/// How the member is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HttpKind {
    /// `GET /sse`: one long response.
    Sse,
    /// `GET /poll`: a session read by successive requests.
    Poll,
}

/// What an event is, for the SSE `event:` field and for positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A `message`, at this offset of the room's epoch.
    Message { epoch: Arc<str>, offset: u64 },
    /// A `joined` (and the position it starts at).
    Joined { epoch: Arc<str>, offset: u64 },
    /// A `presence_diff`.
    Presence,
    /// The `welcome`.
    Welcome,
    /// `token_expiring`: the session ends at its token's `exp` unless refreshed.
    TokenExpiring,
}

/// One queued event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// The session's sequence number (the poll cursor acknowledges up to one).
    pub seq: u64,
    pub room: Option<RoomName>,
    pub kind: EventKind,
    /// The JSON object.
    pub json: Bytes,
    /// Whether its bytes count against the slow-consumer bound: a recovery backlog does
    /// not (it is history the node holds anyway, and the reader is catching up).
    pub counted: bool,
}

impl Event {
    /// The SSE `event:` name (the JSON `type`).
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            EventKind::Message { .. } => "message",
            EventKind::Joined { .. } => "joined",
            EventKind::Presence => "presence_diff",
            EventKind::Welcome => "welcome",
            EventKind::TokenExpiring => "token_expiring",
        }
    }
}

/// A room the member is in, or joining.
#[derive(Clone, Debug)]
pub(crate) struct HttpRoom {
    pub room: RoomName,
    /// Which join (a reply to an older one is ignored).
    pub seq: u32,
    /// Slot in the owner's local room; `None` while the join is pending.
    pub slot: Option<usize>,
    /// Visible with this info (and receiving presence diffs), when it joined with one.
    pub presence: Option<Bytes>,
}

/// The mutable part.
#[derive(Debug, Default)]
pub(crate) struct MemberState {
    pub events: VecDeque<Event>,
    /// Bytes of JSON queued (bounded by `max_queued_bytes`).
    pub bytes: usize,
    pub next_seq: u64,
    /// Per room: epoch and offset of the last message delivered.
    pub positions: Positions,
    pub rooms: Vec<HttpRoom>,
    pub next_join: u32,
    /// The reader's waker.
    pub waker: Option<Waker>,
    /// The member is gone (stream closed, session expired, dropped as too slow, drain).
    pub closed: bool,
    /// Why the server ended the session, as the close code a WebSocket would get (4008,
    /// 4009, 1001, an API disconnect's): told to the client in the stream's last event or
    /// the last poll answer, so that it can follow the same reconnect advice.
    pub ended: Option<(u16, Arc<str>)>,
    /// What the session's token allows, and until when; `None` without one.
    pub auth: Option<crate::auth::Identity>,
    /// The `token_expiring` event was sent for the current token.
    pub warned: bool,
    /// The address its session counts against (`None`: exempt).
    pub counted_ip: Option<std::net::IpAddr>,
    /// Held to the per-client publish rate.
    pub limited: bool,
}

impl MemberState {
    /// Takes the oldest queued event, keeping the byte count of the bound true.
    pub(crate) fn pop_front(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if event.counted {
            self.bytes -= event.json.len();
        }
        Some(event)
    }
}

/// Epoch and offset per room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Positions(pub Vec<(RoomName, Arc<str>, u64)>);

impl Positions {
    /// Moves `room` to `offset` of `epoch`.
    pub(crate) fn set(&mut self, room: &RoomName, epoch: &Arc<str>, offset: u64) {
        match self.0.iter_mut().find(|(r, _, _)| r == room) {
            Some(p) => {
                p.1 = epoch.clone();
                p.2 = offset;
            }
            None => self.0.push((room.clone(), epoch.clone(), offset)),
        }
    }

    /// Where to resume `room`.
    pub(crate) fn since(&self, room: &RoomName) -> Option<SincePos> {
        self.0
            .iter()
            .find(|(r, _, _)| r == room)
            .map(|(_, e, o)| SincePos {
                epoch: e.to_string(),
                offset: *o,
            })
    }

    /// Applies an event delivered to the client.
    pub(crate) fn apply(&mut self, event: &Event) {
        if let (
            Some(room),
            EventKind::Message { epoch, offset } | EventKind::Joined { epoch, offset },
        ) = (&event.room, &event.kind)
        {
            self.set(room, epoch, *offset);
        }
    }

    /// The text form: `room!epoch!offset,room!epoch!offset` (`!` and `,` cannot occur in a
    /// room name or an epoch). It is an SSE event id as is.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        for (i, (room, epoch, offset)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(room.as_str());
            out.push('!');
            out.push_str(epoch);
            out.push('!');
            out.push_str(&offset.to_string());
        }
        out
    }

    /// Parses the text form; parts that do not parse are skipped (that room then starts
    /// without recovery).
    pub(crate) fn decode(text: &str) -> Self {
        let mut out = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let mut f = part.splitn(3, '!');
            if let (Some(room), Some(epoch), Some(offset)) = (f.next(), f.next(), f.next())
                && let (Ok(room), Ok(offset)) = (RoomName::new(room), offset.parse())
                && !epoch.is_empty()
                && epoch.len() <= 64
            {
                out.push((room, Arc::from(epoch), offset));
            }
        }
        Self(out)
    }
}

/// A poll cursor: the session, the last event sequence the client has, its positions,
/// and what a new session on any node needs to go on for it: the client id, the rooms
/// it is joining that have no position yet, and the presence info of the rooms it
/// joined with one. Opaque to clients (base64url of a JSON
/// object; cursors of the first format, `session|seq|positions`, are still read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub session: String,
    pub seq: u64,
    pub positions: Positions,
    pub client: Option<String>,
    /// Rooms of the session with no position (their join is not done yet).
    pub rooms: Vec<RoomName>,
    pub presence: Vec<(RoomName, Bytes)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CursorJson {
    s: String,
    q: u64,
    p: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Rooms without a position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    j: Vec<String>,
    /// Room to presence info (a JSON object).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    r: serde_json::Map<String, serde_json::Value>,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let r = self
            .presence
            .iter()
            .filter_map(|(room, info)| {
                let info = serde_json::from_slice(info).ok()?;
                Some((room.as_str().to_owned(), info))
            })
            .collect();
        let json = CursorJson {
            s: self.session.clone(),
            q: self.seq,
            p: self.positions.encode(),
            c: self.client.clone(),
            j: self.rooms.iter().map(|r| r.as_str().to_owned()).collect(),
            r,
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap_or_default())
    }

    pub(crate) fn decode(text: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        if raw.first() == Some(&b'{') {
            let j: CursorJson = serde_json::from_slice(&raw).ok()?;
            let presence =
                j.r.into_iter()
                    .filter(|(_, info)| info.is_object())
                    .filter_map(|(room, info)| {
                        Some((RoomName::new(&room).ok()?, Bytes::from(info.to_string())))
                    })
                    .collect();
            return Some(Self {
                session: j.s,
                seq: j.q,
                positions: Positions::decode(&j.p),
                client: j.c,
                rooms: j.j.iter().filter_map(|r| RoomName::new(r).ok()).collect(),
                presence,
            });
        }
        let raw = String::from_utf8(raw).ok()?;
        let mut f = raw.splitn(3, '|');
        let session = f.next()?.to_owned();
        let seq = f.next()?.parse().ok()?;
        let positions = Positions::decode(f.next().unwrap_or_default());
        Some(Self {
            session,
            seq,
            positions,
            client: None,
            rooms: Vec::new(),
            presence: Vec::new(),
        })
    }

    /// The presence info `room` was joined with, if any.
    pub(crate) fn presence_of(&self, room: &RoomName) -> Option<Bytes> {
        self.presence
            .iter()
            .find(|(r, _)| r == room)
            .map(|(_, info)| info.clone())
    }
}

/// How many bytes of presence info a poll cursor carries at most (before base64).
pub(crate) const CURSOR_PRESENCE_BYTES: usize = 2048;

/// A subscriber on SSE or long-polling.
#[derive(Debug)]
pub(crate) struct HttpMember {
    /// The session id: unguessable, it authorizes `POST /cmd` for this client.
    pub session: Arc<str>,
    pub client: Arc<str>,
    pub kind: HttpKind,
    /// Where the member is: its owner worker and slot.
    pub key: ConnKey,
    /// The most bytes of events queued before the member is dropped as too slow.
    max_bytes: usize,
    state: Mutex<MemberState>,
    /// Last time a poll read it (ms since the epoch).
    pub last_seen: AtomicU64,
    /// A poll forwarded from another node is waiting on it (one at a time).
    pub forwarded_poll: std::sync::atomic::AtomicBool,
}

impl HttpMember {
    pub(crate) fn new(
        session: Arc<str>,
        client: Arc<str>,
        kind: HttpKind,
        key: ConnKey,
        max_bytes: usize,
    ) -> Self {
        Self {
            session,
            client,
            kind,
            key,
            max_bytes,
            state: Mutex::new(MemberState::default()),
            last_seen: AtomicU64::new(crate::now_ms()),
            forwarded_poll: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The state, locked. (A poisoned lock only means a panic elsewhere; the data is
    /// still consistent enough to go on with.)
    pub(crate) fn state(&self) -> MutexGuard<'_, MemberState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event and wakes the reader. Returns false (and closes the member) when the
    /// queue would pass its bound: the client rejoins later from its last position.
    pub(crate) fn push(&self, room: Option<&RoomName>, kind: EventKind, json: Bytes) -> bool {
        self.push_event(room, kind, json, true)
    }

    /// Queues one message of a recovery backlog (what a join with `since` missed): like
    /// [`push`](Self::push), but exempt from the slow-consumer bound until read, as on
    /// `/ws`. Without the exemption a session cut as too slow could never resume: what it
    /// missed is by then more than the bound.
    pub(crate) fn push_recovered(&self, room: &RoomName, kind: EventKind, json: Bytes) -> bool {
        self.push_event(Some(room), kind, json, false)
    }

    fn push_event(
        &self,
        room: Option<&RoomName>,
        kind: EventKind,
        json: Bytes,
        counted: bool,
    ) -> bool {
        let mut st = self.state();
        if st.closed {
            return false;
        }
        if counted && st.bytes > 0 && st.bytes + json.len() > self.max_bytes {
            st.closed = true;
            st.ended
                .get_or_insert((4008, Arc::from("slow consumer: the queue overflowed")));
            st.events.clear();
            st.bytes = 0;
            Self::wake(&mut st);
            return false;
        }
        st.next_seq += 1;
        let seq = st.next_seq;
        if counted {
            st.bytes += json.len();
        }
        st.events.push_back(Event {
            seq,
            room: room.cloned(),
            kind,
            json,
            counted,
        });
        Self::wake(&mut st);
        true
    }

    /// Closes the member and wakes its reader.
    pub(crate) fn close(&self) {
        let mut st = self.state();
        st.closed = true;
        Self::wake(&mut st);
    }

    /// Records why the server ends the session (the first reason stays).
    pub(crate) fn end(&self, code: u16, reason: &str) {
        self.state().ended.get_or_insert((code, Arc::from(reason)));
    }

    /// The `closed` event of a session the server ended: `{"type":"closed","code","reason"}`.
    pub(crate) fn closed_json(code: u16, reason: &str) -> String {
        serde_json::json!({ "type": "closed", "code": code, "reason": reason }).to_string()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }

    fn wake(st: &mut MemberState) {
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// A poll's answer: up to `limit` queued events (kept until the next cursor
    /// acknowledges them) and the cursor after the last one.
    /// Events stop at `max_bytes` of JSON (the first is always there), so an answer that
    /// travels between nodes stays small; the cursor goes on from the last one.
    pub(crate) fn poll_answer(&self, limit: usize, max_bytes: usize) -> Bytes {
        let member = self;
        let st = member.state();
        let mut positions = st.positions.clone();
        let mut seq = st
            .events
            .front()
            .map_or(st.next_seq, |e| e.seq.saturating_sub(1));
        let mut out = String::with_capacity(256);
        out.push_str("{\"session\":");
        push_json_str(&mut out, &member.session);
        out.push_str(",\"events\":[");
        let start = out.len();
        for (i, e) in st.events.iter().take(limit).enumerate() {
            if i > 0 && out.len() - start + e.json.len() > max_bytes {
                break;
            }
            if i > 0 {
                out.push(',');
            }
            out.push_str(std::str::from_utf8(&e.json).unwrap_or("null"));
            positions.apply(e);
            seq = e.seq;
        }
        // Rooms the client has no position in yet: a new session elsewhere starts them where
        // this one's `joined` (still queued) did, or joins them afresh if it has none yet.
        let mut fresh = Vec::new();
        for r in &st.rooms {
            if positions.since(&r.room).is_some() {
                continue;
            }
            let joined = st.events.iter().find_map(|e| match (&e.room, &e.kind) {
                (Some(room), EventKind::Joined { epoch, offset }) if *room == r.room => {
                    Some((epoch.clone(), *offset))
                }
                _ => None,
            });
            match joined {
                Some((epoch, offset)) => positions.set(&r.room, &epoch, offset),
                None => fresh.push(r.room.clone()),
            }
        }
        // Rooms it left are not resumed.
        positions
            .0
            .retain(|(room, _, _)| st.rooms.iter().any(|r| r.room == *room));
        // Presence info rides along up to a budget, so the cursor stays fit for a URL;
        // past it, a room resumes visible with `{}`.
        let mut budget = CURSOR_PRESENCE_BYTES;
        let presence = st
            .rooms
            .iter()
            .filter_map(|r| {
                let info = r.presence.clone()?;
                if info.len() <= budget {
                    budget -= info.len();
                    Some((r.room.clone(), info))
                } else {
                    Some((r.room.clone(), Bytes::from_static(b"{}")))
                }
            })
            .collect();
        let cursor = Cursor {
            session: member.session.to_string(),
            seq,
            positions,
            client: Some(member.client.to_string()),
            rooms: fresh,
            presence,
        };
        out.push_str("],\"cursor\":");
        push_json_str(&mut out, &cursor.encode());
        if st.closed {
            out.push_str(",\"closed\":true");
            if let Some((code, reason)) = &st.ended {
                out.push_str(",\"code\":");
                out.push_str(itoa::Buffer::new().format(*code));
                out.push_str(",\"reason\":");
                push_json_str(&mut out, reason);
            }
        }
        out.push('}');
        drop(st);
        debug_assert!(
            serde_json::from_str::<&serde_json::value::RawValue>(&out).is_ok(),
            "{out}"
        );
        Bytes::from(out)
    }

    /// The events up to `seq` arrived: drop them.
    pub(crate) fn ack(&self, seq: u64) {
        let mut st = self.state();
        while st.events.front().is_some_and(|e| e.seq <= seq) {
            if let Some(e) = st.pop_front() {
                st.positions.apply(&e);
            }
        }
    }

    /// Marks it read now (poll sessions expire when nobody reads them).
    pub(crate) fn touch(&self) {
        self.last_seen.store(crate::now_ms(), Ordering::Relaxed);
    }
}

/// The JSON text of a server text frame (the frame minus its header).
pub(crate) fn frame_json(frame: &Bytes) -> Bytes {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return Bytes::new(),
    };
    frame.slice(header.min(frame.len())..)
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::new(s).unwrap()
    }

    #[test]
    fn positions_and_cursors_round_trip() {
        let mut p = Positions::default();
        p.set(&room("chat:eu"), &Arc::from("ab12"), 46);
        p.set(&room("x+y@z=1"), &Arc::from("cd34"), 0);
        p.set(&room("chat:eu"), &Arc::from("ab12"), 47);
        assert_eq!(p.encode(), "chat:eu!ab12!47,x+y@z=1!cd34!0");
        assert_eq!(Positions::decode(&p.encode()), p);
        assert_eq!(
            p.since(&room("chat:eu")),
            Some(SincePos {
                epoch: "ab12".into(),
                offset: 47
            })
        );
        let c = Cursor {
            session: "s1".into(),
            seq: 9,
            positions: p.clone(),
            client: Some("al|ice \u{e9}".into()),
            rooms: vec![room("later")],
            presence: vec![(room("chat:eu"), Bytes::from_static(br#"{"name":"A"}"#))],
        };
        let text = c.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {text}"
        );
        assert_eq!(Cursor::decode(&text), Some(c));
        assert_eq!(Cursor::decode("!!!"), None);
        // A cursor of the first format still reads.
        let old = URL_SAFE_NO_PAD.encode(format!("s1|9|{}", p.encode()));
        let read = Cursor::decode(&old).unwrap();
        assert_eq!((read.session.as_str(), read.seq), ("s1", 9));
        assert_eq!((read.positions, read.client), (p, None));
        assert_eq!(
            Positions::decode("bad room!e!1,ok!e!x,fine!e!3").0.len(),
            1,
            "junk is skipped"
        );
    }

    #[test]
    fn the_queue_is_bounded() {
        let key = ConnKey::new(0, crate::engine::Addr::Http(0), 0);
        let m = HttpMember::new(Arc::from("s"), Arc::from("c"), HttpKind::Sse, key, 100);
        assert!(
            m.push(None, EventKind::Presence, Bytes::from(vec![b' '; 150])),
            "one event may exceed the bound"
        );
        assert!(
            !m.push(None, EventKind::Presence, Bytes::from_static(b"{}")),
            "a backlog may not"
        );
        assert!(m.is_closed());
    }

    #[test]
    fn json_of_frames() {
        let (frame, _) = crate::protocol::reply::message(&room("r"), "e", 1, "a", b"1", 2);
        assert_eq!(frame_json(&frame)[0], b'{');
        let big = crate::protocol::reply::error(
            None,
            crate::protocol::ErrorCode::BadRequest,
            &"x".repeat(300),
        );
        assert_eq!(frame_json(&big)[0], b'{');
    }
}
