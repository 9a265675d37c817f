//! `/rooms/{room}`: every message a member sends reaches the other members unchanged.

use std::rc::Rc;

use roomcast_ws::frame::encode_shared;
use roomcast_ws::{CloseCode, FrameHeader, Message, OpCode};

use crate::auth::Action;

use crate::protocol::RoomName;
use crate::worker::Conn;
use crate::worker::Worker;

pub(super) fn handle(
    worker: &Rc<Worker>,
    conn: &Rc<Conn>,
    room: &RoomName,
    echo: bool,
    msg: Message,
) {
    let (opcode, payload) = match msg {
        Message::Text(t) => (OpCode::Text, t.into_bytes()),
        Message::Binary(b) => (OpCode::Binary, b),
        _ => return,
    };
    let allowed = conn
        .session
        .borrow()
        .auth
        .as_ref()
        .is_none_or(|id| id.grants.allows(Action::Publish, room));
    if !allowed {
        // A raw room has no error replies: a member that may only listen is closed.
        return conn.close(
            worker,
            CloseCode(4003),
            &format!("forbidden: the token does not allow publish in room {room}"),
            false,
        );
    }
    // Framed once; every member gets the same bytes.
    let frame = encode_shared(FrameHeader::new(opcode, 0), &payload);
    worker.raw_publish(conn, room, frame, echo);
}
