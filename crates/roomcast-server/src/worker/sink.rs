//! Where a member's deliveries go: the one place that knows the kinds of members.
//!
//! A room's local members are sinks: a WebSocket connection's send queue, or an SSE
//! stream's or poll session's event queue. The worker's rooms and fan-out
//! (`local.rs`) only deliver to a sink and tell one from another by its address; a new
//! kind of member (a WebSocket over HTTP/2, say) is a variant here. It is an enum, not a
//! trait object: fan-out is the hot loop, and a closed set is matched without an
//! indirect call or an allocation per membership.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::compressed::Compressed;
use super::{Conn, Worker};
use crate::engine::ConnKey;
use crate::member::{EventKind, HttpMember, frame_json};
use crate::protocol::RoomName;
use crate::stats::Stats;

/// A member's delivery end.
#[derive(Debug)]
pub(super) enum Sink {
    /// A WebSocket connection's send queue (frames as they are).
    Socket(Rc<Conn>),
    /// An SSE stream's or poll session's event queue (the frames' JSON, with positions).
    Http(Arc<HttpMember>),
}

impl From<Rc<Conn>> for Sink {
    fn from(conn: Rc<Conn>) -> Self {
        Sink::Socket(conn)
    }
}

impl From<Arc<HttpMember>> for Sink {
    fn from(member: Arc<HttpMember>) -> Self {
        Sink::Http(member)
    }
}

/// One fan-out's frame and the forms made from it for the members that need them, each
/// made once: its JSON for HTTP members, its compressed bytes for sockets that agreed to
/// permessage-deflate.
#[derive(Debug)]
pub(super) struct Outgoing {
    frame: Bytes,
    json: Option<Bytes>,
    compressed: Compressed,
}

impl Outgoing {
    pub(super) fn new(frame: Bytes) -> Self {
        Outgoing {
            frame,
            json: None,
            compressed: Compressed::default(),
        }
    }

    /// Adds what it was compressed for to the node's counters.
    pub(super) fn count(&self, stats: &Stats) {
        self.compressed.count(stats);
    }
}

impl Sink {
    /// Queues one of `room`'s frames. `event` says what it is (its position, for members
    /// that keep them); a frame without one (a raw room's) reaches sockets only. A
    /// `catch_up` frame is queued to a socket like a recovery backlog (see
    /// `Conn::push_backlog`). Whether it was queued.
    pub(super) fn deliver(
        &self,
        worker: &Worker,
        room: &RoomName,
        out: &mut Outgoing,
        event: Option<&EventKind>,
        catch_up: bool,
    ) -> bool {
        match self {
            Sink::Socket(conn) if catch_up => {
                conn.push_exempt(worker, out.frame.clone(), &mut out.compressed);
                true
            }
            Sink::Socket(conn) => {
                conn.push_shared(worker, out.frame.clone(), &mut out.compressed);
                true
            }
            Sink::Http(member) => {
                let Some(event) = event else { return false };
                let frame = &out.frame;
                let json = out.json.get_or_insert_with(|| frame_json(frame));
                member.push(Some(room), event.clone(), json.clone());
                true
            }
        }
    }

    /// Whether this is the connection or member at `key`.
    pub(super) fn is(&self, key: ConnKey) -> bool {
        match self {
            Sink::Socket(conn) => conn.key == key,
            Sink::Http(member) => member.key == key,
        }
    }
}
