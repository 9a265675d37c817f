//! `/ws`: the roomcast protocol's requests.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use roomcast_ws::Message;

use crate::engine::{HomeMsg, Publish};
use crate::protocol::{ErrorCode, Request, parse, reply};
use crate::worker::Worker;
use crate::worker::{Conn, Kind};

pub(super) fn handle(worker: &Rc<Worker>, conn: &Rc<Conn>, msg: Message) {
    let text = match msg {
        Message::Text(t) => t,
        _ => {
            let reason = "binary frames are not part of the protocol: send JSON text";
            return conn.push(worker, reply::error(None, ErrorCode::BadRequest, reason));
        }
    };
    let (reference, request) = parse(text.as_bytes());
    let error =
        |code: ErrorCode, message: &str| conn.push(worker, reply::error(reference, code, message));
    let request = match request {
        Ok(r) => r,
        Err(e) => return error(e.code, &e.message),
    };
    let client = conn.session.borrow().client.clone();
    let Some(client) = client else {
        return match request {
            Request::Hello { client, token: _ } => hello(worker, conn, client, reference),
            _ => error(ErrorCode::Unauthorized, "send hello first"),
        };
    };
    match request {
        Request::Hello { .. } => error(ErrorCode::BadRequest, "hello was already received"),
        Request::Ping => conn.push(worker, reply::pong(reference)),
        Request::Join {
            room,
            presence,
            since,
        } => {
            {
                let session = conn.session.borrow();
                let mut joined = session.rooms.iter().filter(|m| m.kind == Kind::Ws);
                if joined.clone().any(|m| m.room == room) {
                    drop(session);
                    return error(ErrorCode::BadRequest, &format!("already in room {room}"));
                }
                let max = worker.shared.config.rooms.max_rooms_per_connection;
                if joined.nth(max.saturating_sub(1)).is_some() {
                    drop(session);
                    return error(
                        ErrorCode::Forbidden,
                        &format!("a connection may be in at most {max} rooms"),
                    );
                }
            }
            let presence = presence.map(|p| Bytes::copy_from_slice(p.get().as_bytes()));
            worker.ws_join(conn, room, client, presence, since, reference);
        }
        Request::Leave { room } => {
            let membership = {
                let mut session = conn.session.borrow_mut();
                let at = session
                    .rooms
                    .iter()
                    .position(|m| m.kind == Kind::Ws && m.room == room);
                at.map(|i| session.rooms.swap_remove(i))
            };
            match membership {
                Some(m) => {
                    worker.drop_membership(conn, m, Some(&client));
                    conn.push(worker, reply::left(reference, &room));
                }
                None => error(ErrorCode::NotJoined, &format!("not in room {room}")),
            }
        }
        Request::Publish { room, data, id } => {
            let member = conn
                .session
                .borrow()
                .rooms
                .iter()
                .any(|m| m.kind == Kind::Ws && m.room == room);
            if !member {
                return error(
                    ErrorCode::NotJoined,
                    &format!("join room {room} before publishing to it"),
                );
            }
            let max = worker.shared.config.rooms.max_data_size;
            if data.get().len() > max {
                return error(
                    ErrorCode::TooLarge,
                    &format!("data is {} bytes, the limit is {max}", data.get().len()),
                );
            }
            let msg = HomeMsg::Publish(Publish {
                room: room.clone(),
                conn: conn.key,
                from: client,
                data: Bytes::copy_from_slice(data.get().as_bytes()),
                id: id.map(|i| i.as_ref().into()),
                reference,
                create: false,
            });
            worker.ask_home(conn, &room, msg);
        }
        Request::Presence { room } => {
            worker.ask_home(
                conn,
                &room.clone(),
                HomeMsg::Presence {
                    room,
                    conn: conn.key,
                    reference,
                },
            );
        }
        Request::History { room, since, limit } => {
            worker.ask_home(
                conn,
                &room.clone(),
                HomeMsg::History {
                    room,
                    conn: conn.key,
                    reference,
                    since,
                    limit,
                },
            );
        }
    }
}

fn hello(worker: &Rc<Worker>, conn: &Rc<Conn>, client: Option<String>, reference: Option<u64>) {
    let client = match crate::protocol::client_id(client.as_deref()) {
        Ok(c) => c,
        Err(e) => return conn.push(worker, reply::error(reference, e.code, &e.message)),
    };
    let session = crate::random_id(8);
    let heartbeat = worker.shared.config.websocket.heartbeat_interval_ms;
    let frame = reply::welcome(
        reference,
        &client,
        &session,
        &worker.shared.node_id,
        heartbeat,
    );
    conn.session.borrow_mut().client = Some(Arc::from(client));
    conn.push(worker, frame);
}
