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

use crate::hub::RoomName;
use crate::protocol::SincePos;

/// A connection, anywhere on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub worker: u16,
    pub slot: u32,
    /// Tells a connection from a later one in the same slot.
    pub generation: u32,
}

/// A request to a room's home worker.
#[derive(Debug)]
pub(crate) enum HomeMsg {
    Join {
        room: RoomName,
        conn: ConnKey,
        seq: u32,
        client: Arc<str>,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
    },
    Leave {
        room: RoomName,
        worker: u16,
        client: Arc<str>,
        presence: bool,
    },
    Publish {
        room: RoomName,
        conn: ConnKey,
        from: Arc<str>,
        data: Bytes,
        id: Option<Box<str>>,
        reference: Option<u64>,
    },
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
    RawUnsubscribe { room: RoomName, worker: u16 },
    /// A raw message, already delivered on `origin`, for the other workers.
    RawPublish {
        room: RoomName,
        frame: Bytes,
        origin: u16,
    },
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
    },
    /// A room's message for every local member.
    Deliver { room: RoomName, frame: Bytes },
    /// A presence diff for local members that asked for presence.
    PresenceDiff { room: RoomName, frame: Bytes },
    /// A reply (ack, error, presence, history) to one connection.
    Reply { conn: ConnKey, frame: Bytes },
    /// A raw room's message for every local member.
    RawDeliver { room: RoomName, frame: Bytes },
}

/// A message on a worker's inbox.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    Home(HomeMsg),
    Local(LocalMsg),
}
