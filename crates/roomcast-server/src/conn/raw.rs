//! `/rooms/{room}`: every message a member sends reaches the other members unchanged.

use std::rc::Rc;

use roomcast_ws::frame::encode_shared;
use roomcast_ws::{FrameHeader, Message, OpCode};

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
    // Framed once; every member gets the same bytes.
    let frame = encode_shared(FrameHeader::new(opcode, 0), &payload);
    worker.raw_publish(conn, room, frame, echo);
}
