//! What workers tell each other.
//!
//! Each worker has one unbounded FIFO inbox. Requests about a room go to the room's home
//! worker ([`HomeMsg`]); what the home decides goes back to the workers that hold the
//! connections ([`LocalMsg`]). Because one sender's messages to one receiver stay in
//! order, a member that joins sees the `joined` reply (and its missed messages) before
//! any live message published after its join, and every member sees a room's messages
//! in offset order.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::protocol::SincePos;
use crate::protocol::{ErrorCode, RoomName, reply};

/// Where a reply or a delivery goes, anywhere on the node: a WebSocket connection, an
/// HTTP member (an SSE stream or a long-poll session), or an HTTP request waiting for its
/// answer. The kind is in the slot's top bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub worker: u16,
    pub slot: u32,
    /// Tells a connection from a later one in the same slot.
    pub generation: u32,
}

/// What a [`ConnKey`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    /// A WebSocket connection: a slot of the worker's connections.
    Socket(usize),
    /// An HTTP member: a slot of the worker's HTTP members.
    Http(usize),
    /// An HTTP request waiting for one reply: a slot of the worker's pending requests.
    Pending(usize),
}

const HTTP_BIT: u32 = 1 << 31;
const PENDING_BIT: u32 = 1 << 30;
const SLOT_MASK: u32 = PENDING_BIT - 1;

impl ConnKey {
    pub(crate) fn new(worker: usize, addr: Addr, generation: u32) -> Self {
        let slot = match addr {
            Addr::Socket(i) => i as u32 & SLOT_MASK,
            Addr::Http(i) => HTTP_BIT | (i as u32 & SLOT_MASK),
            Addr::Pending(i) => PENDING_BIT | (i as u32 & SLOT_MASK),
        };
        Self {
            worker: worker as u16,
            slot,
            generation,
        }
    }

    pub(crate) fn addr(&self) -> Addr {
        let i = (self.slot & SLOT_MASK) as usize;
        if self.slot & HTTP_BIT != 0 {
            Addr::Http(i)
        } else if self.slot & PENDING_BIT != 0 {
            Addr::Pending(i)
        } else {
            Addr::Socket(i)
        }
    }
}

/// A room as `GET /api/rooms` lists it.
#[derive(Clone, Debug)]
pub(crate) struct RoomInfo {
    pub room: RoomName,
    pub epoch: Arc<str>,
    pub last_offset: u64,
    pub members: u32,
    pub visible: usize,
}

/// A member joins a room.
#[derive(Debug)]
pub(crate) struct Join {
    pub room: RoomName,
    pub conn: ConnKey,
    /// Which of the member's joins this is (the worker ignores answers to older ones).
    pub seq: u32,
    pub client: Arc<str>,
    /// Visible with this info, and receiving presence diffs.
    pub presence: Option<Bytes>,
    pub since: Option<SincePos>,
    pub reference: Option<u64>,
    /// Also send the `joined` reply here (an HTTP request that asked for the join).
    pub notify: Option<ConnKey>,
}

/// A message for a room.
#[derive(Debug)]
pub(crate) struct Publish {
    pub room: RoomName,
    /// Where the ack goes.
    pub conn: ConnKey,
    pub from: Arc<str>,
    pub data: Bytes,
    /// The idempotency key.
    pub id: Option<Box<str>>,
    pub reference: Option<u64>,
    /// Create the room if it has no state (the HTTP API publishes without joining).
    pub create: bool,
    /// When the request arrived: `roomcast_publish_seconds` runs from here to the ack.
    pub asked: std::time::Instant,
}

/// A request to a room's engine.
#[derive(Debug)]
pub(crate) enum HomeMsg {
    Join(Join),
    Leave {
        room: RoomName,
        worker: u16,
        client: Arc<str>,
        presence: bool,
    },
    Publish(Publish),
    Presence {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
    },
    History {
        room: RoomName,
        conn: ConnKey,
        reference: Option<u64>,
        since: Option<SincePos>,
        limit: usize,
    },
    /// A worker has its first member of a raw room; `done` fires once it counts.
    RawSubscribe {
        room: RoomName,
        worker: u16,
        done: oneshot::Sender<()>,
    },
    /// A worker's last member of a raw room left.
    RawUnsubscribe {
        room: RoomName,
        worker: u16,
    },
    /// A raw message, already delivered on `origin`, for the other workers.
    RawPublish {
        room: RoomName,
        frame: Bytes,
        origin: u16,
    },
    /// The rooms this engine holds: a home worker's (memory), the cluster's (Redis).
    Rooms {
        reply: oneshot::Sender<Vec<RoomInfo>>,
    },
    /// The live nodes of the cluster (Redis only).
    Nodes {
        reply: oneshot::Sender<Vec<NodeInfo>>,
    },
    /// A request for a session another node holds (a `POST /cmd` or a poll that reached
    /// this one), for that node (Redis only), answered within `wait`. `None` when no node
    /// holds it.
    Forward {
        session: Arc<str>,
        call: SessionCall,
        wait: std::time::Duration,
        reply: oneshot::Sender<Option<CommandAnswer>>,
    },
    /// Close a client's connections and HTTP members on every node (Redis only).
    Disconnect {
        client: Arc<str>,
        code: u16,
        reason: Arc<str>,
        reply: oneshot::Sender<Disconnected>,
    },
}

/// What is asked of a session on the node that holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionCall {
    /// The body of a `POST /cmd`.
    Commands(Bytes),
    /// A poll: the events up to `seq` arrived; wait at most `timeout_ms` for more; answer
    /// at most `limit`.
    Poll {
        seq: u64,
        timeout_ms: u64,
        limit: usize,
    },
}

/// What the commands of a `POST /cmd`, or a poll, got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommandAnswer {
    /// The replies (one, or a JSON array of them), exactly as a `/ws` client would get
    /// them; `error` is the code of a single command's error reply. For a poll, its
    /// answer.
    Replies {
        error: Option<ErrorCode>,
        body: Bytes,
    },
    /// The request as a whole was refused (no such session, a body that is no command).
    Refused { code: ErrorCode, message: String },
}

/// What a cluster-wide disconnect did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Disconnected {
    /// Connections and HTTP members closed.
    pub closed: usize,
    /// Nodes that did not answer in time (their connections may stay open).
    pub unanswered: usize,
}

/// A node as `GET /api/nodes` lists it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct NodeInfo {
    pub id: String,
    /// The address it listens on.
    pub address: String,
    pub connections: i64,
    /// Rooms it has members in.
    pub rooms: usize,
    /// When it started (ms since the Unix epoch).
    pub since_ms: u64,
}

impl HomeMsg {
    /// Whether the request is about a raw room (always kept by a home worker).
    pub(crate) fn is_raw(&self) -> bool {
        matches!(
            self,
            HomeMsg::RawSubscribe { .. }
                | HomeMsg::RawUnsubscribe { .. }
                | HomeMsg::RawPublish { .. }
        )
    }
}

/// The answer to one request, for the address that asked: typed, so an HTTP caller reads
/// the offset or the error code without parsing a frame, and a socket gets the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Stored: the `ack`, with the message's offset.
    Ack {
        reference: Option<u64>,
        room: RoomName,
        offset: u64,
        /// When the publish arrived (`None`: not timed).
        asked: Option<std::time::Instant>,
    },
    /// Refused: an `error` reply.
    Error {
        reference: Option<u64>,
        code: ErrorCode,
        message: Arc<str>,
    },
    /// Any other reply (`joined`, `left`, `pong`, `presence`, `history`), as its frame.
    Frame(Bytes),
}

impl Reply {
    pub(crate) fn error(reference: Option<u64>, code: ErrorCode, message: &str) -> Self {
        Reply::Error {
            reference,
            code,
            message: Arc::from(message),
        }
    }

    /// The WebSocket text frame of the reply.
    pub(crate) fn frame(&self) -> Bytes {
        match self {
            Reply::Ack {
                reference,
                room,
                offset,
                ..
            } => reply::ack(*reference, room, *offset),
            Reply::Error {
                reference,
                code,
                message,
            } => reply::error(*reference, *code, message),
            Reply::Frame(f) => f.clone(),
        }
    }

    /// The error code, if it is an error.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        match self {
            Reply::Error { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What a home worker sends back to the workers holding the connections.
#[derive(Debug)]
pub(crate) enum LocalMsg {
    /// The join is done: add the member, send `joined` and the missed messages.
    Joined {
        room: RoomName,
        conn: ConnKey,
        seq: u32,
        reply: Bytes,
        missed: Vec<Bytes>,
        epoch: Arc<str>,
        /// The room's last offset (that of the last missed message, if any).
        offset: u64,
        notify: Option<ConnKey>,
    },
    /// A room's message for every local member, with its position.
    Deliver {
        room: RoomName,
        frame: Bytes,
        epoch: Arc<str>,
        offset: u64,
        /// Read from the broker to catch up (a gap filled, a subscription that was cut):
        /// queued like a recovery backlog, outside the slow-consumer bound until written,
        /// since the node fell behind, not its members.
        catch_up: bool,
    },
    /// The join could not be done (the broker is unreachable): forget the membership
    /// and send `reply` (and to `notify`).
    JoinFailed {
        room: RoomName,
        conn: ConnKey,
        seq: u32,
        reply: Reply,
        notify: Option<ConnKey>,
    },
    /// A room's history broke off (the broker lost messages, or the room's epoch
    /// changed): `frame` is an unsolicited `joined` with `recovered:false` for every
    /// local member, who go on from `(epoch, offset)`.
    Reset {
        room: RoomName,
        frame: Bytes,
        epoch: Arc<str>,
        offset: u64,
    },
    /// A presence diff for local members that asked for presence.
    PresenceDiff { room: RoomName, frame: Bytes },
    /// A reply (ack, error, presence, history) to one connection or waiting request.
    Reply { conn: ConnKey, reply: Reply },
    /// A raw room's message for every local member.
    RawDeliver { room: RoomName, frame: Bytes },
    /// A command (JSON text, as on `/ws`) of an HTTP member, from a `POST /cmd`; its
    /// replies go to `notify`.
    HttpCommand {
        member: ConnKey,
        text: Bytes,
        notify: ConnKey,
    },
    /// A request for a session of this node, sent from another node.
    RemoteCall {
        session: Arc<str>,
        call: SessionCall,
        reply: oneshot::Sender<CommandAnswer>,
    },
    /// Close every connection and HTTP member of a client.
    Disconnect {
        client: Arc<str>,
        code: u16,
        reason: Arc<str>,
        reply: oneshot::Sender<usize>,
    },
}

/// A message on a worker's inbox.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    Home(HomeMsg),
    Local(LocalMsg),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_reply_is_the_frame_a_socket_got_before() {
        let room = RoomName::new("lobby").unwrap_or_else(|e| panic!("{e}"));
        let ack = Reply::Ack {
            reference: Some(3),
            room: room.clone(),
            offset: 41,
            asked: None,
        };
        assert_eq!(ack.frame(), reply::ack(Some(3), &room, 41));
        assert_eq!(ack.code(), None);
        let refused = Reply::error(Some(4), ErrorCode::NotJoined, "not in lobby");
        assert_eq!(
            refused.frame(),
            reply::error(Some(4), ErrorCode::NotJoined, "not in lobby")
        );
        assert_eq!(refused.code(), Some(ErrorCode::NotJoined));
        let pong = Reply::Frame(reply::pong(Some(5)));
        assert_eq!((pong.frame(), pong.code()), (reply::pong(Some(5)), None));
    }
}
