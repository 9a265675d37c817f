//! One dispatcher for the protocol's requests, whoever sent them: a `/ws` connection or an
//! SSE/poll session's `POST /cmd` (here, or forwarded from another node).
//!
//! Every check a request gets (already in the room, the room limit, joined before
//! publishing, the data's size) is made here once; what differs between callers (where
//! their memberships are kept, where an answer goes) is behind [`Caller`]. The HTTP API's
//! publish, which needs no membership, shares the data check ([`Worker::check_data`]).
//! `hello` is the transport's: a `/ws` connection says it once, a session has its
//! client from the start.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{Conn, Kind, Worker};
use crate::auth::{Action, Identity};
use crate::engine::{ConnKey, HomeMsg, Publish, Reply};
use crate::member::HttpMember;
use crate::protocol::{ErrorCode, ProtoError, Request, RoomName, SincePos, reply};

/// Who sent a request: where its memberships are kept and where its answers go.
pub(crate) trait Caller {
    /// The client id it speaks for.
    fn client(&self) -> &Arc<str>;
    /// Whether it is in `room` (or joining it).
    fn in_room(&self, room: &RoomName) -> bool;
    /// How many rooms it is in (or joining).
    fn room_count(&self) -> usize;
    /// Where the engine's answer to its request goes.
    fn answer_to(&self) -> ConnKey;
    /// Sends it a reply now.
    fn reply(&self, worker: &Rc<Worker>, reply: Reply);
    /// A request of its went to the engine.
    fn asked(&self) {}
    /// Joins `room`; the engine answers with `joined` (or an error).
    fn join(
        &self,
        worker: &Rc<Worker>,
        room: RoomName,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
    );
    /// Leaves `room`; whether it was in it.
    fn leave(&self, worker: &Rc<Worker>, room: &RoomName) -> bool;
    /// Whether its token allows `action` in `room` (without a token: everything).
    fn may(&self, action: Action, room: &RoomName) -> bool;
    /// Takes a newer token (same client) in place of the one it had.
    fn refreshed(&self, identity: Identity);
    /// When its token expires (ms), if it has one.
    fn expires_ms(&self) -> Option<u64>;
    /// Whether it is held to the per-client publish rate (not exempt).
    fn limited(&self) -> bool;
    /// The rooms it is in (or joining), and whether it is visible in each.
    fn rooms(&self) -> Vec<(RoomName, bool)>;
}

impl Worker {
    /// Handles one request of `caller` (after `hello`).
    pub(crate) fn dispatch(
        self: &Rc<Self>,
        caller: &impl Caller,
        reference: Option<u64>,
        request: Request<'_>,
    ) {
        let error = |code: ErrorCode, message: &str| {
            caller.reply(self, Reply::error(reference, code, message));
        };
        if let Some((action, room)) = needs(&request)
            && !caller.may(action, room)
        {
            return error(
                ErrorCode::Forbidden,
                &format!(
                    "the token does not allow {} in room {room}",
                    action.as_str()
                ),
            );
        }
        match request {
            Request::Hello { .. } => error(ErrorCode::BadRequest, "hello was already received"),
            Request::Ping => caller.reply(self, Reply::Frame(reply::pong(reference))),
            Request::Refresh { token } => {
                if !self.shared.auth.is_on() {
                    return error(
                        ErrorCode::BadRequest,
                        "auth is off: there is no token to refresh",
                    );
                }
                match self.shared.auth.verify(&token) {
                    Err(e) => error(ErrorCode::Unauthorized, &e.to_string()),
                    Ok(id) if *id.client != **caller.client() => error(
                        ErrorCode::Unauthorized,
                        "the new token is for another client",
                    ),
                    Ok(id) if caller.expires_ms().is_some_and(|exp| id.expires_ms < exp) => error(
                        ErrorCode::Unauthorized,
                        "the new token expires before the one it would replace",
                    ),
                    Ok(id) => {
                        let expires = id.expires_ms;
                        // The new token's `rooms` apply from now on: rooms it does not
                        // allow (or where it does not allow being visible) are left.
                        let gone: Vec<RoomName> = caller
                            .rooms()
                            .into_iter()
                            .filter(|(room, visible)| {
                                !id.grants.allows(Action::Join, room)
                                    || (*visible && !id.grants.allows(Action::Presence, room))
                            })
                            .map(|(room, _)| room)
                            .collect();
                        caller.refreshed(id);
                        for room in gone {
                            if caller.leave(self, &room) {
                                caller.reply(self, Reply::Frame(reply::left(None, &room)));
                            }
                        }
                        caller.reply(self, Reply::Frame(reply::refreshed(reference, expires)));
                    }
                }
            }
            Request::Join {
                room,
                presence,
                since,
            } => {
                if caller.in_room(&room) {
                    return error(ErrorCode::BadRequest, &format!("already in room {room}"));
                }
                let max = self.shared.config.rooms.max_rooms_per_connection;
                if caller.room_count() >= max {
                    return error(
                        ErrorCode::Forbidden,
                        &format!("a connection or session may be in at most {max} rooms"),
                    );
                }
                if let Some(Err(e)) = presence.map(|p| self.check_presence(p.get().as_bytes())) {
                    return error(e.code, &e.message);
                }
                if presence.is_some() && !caller.may(Action::Presence, &room) {
                    return error(
                        ErrorCode::Forbidden,
                        &format!(
                            "the token does not allow presence in room {room}: join without it"
                        ),
                    );
                }
                let presence = presence.map(|p| Bytes::copy_from_slice(p.get().as_bytes()));
                caller.join(self, room, presence, since, reference);
            }
            Request::Leave { room } => {
                if caller.leave(self, &room) {
                    caller.reply(self, Reply::Frame(reply::left(reference, &room)));
                } else {
                    error(ErrorCode::NotJoined, &format!("not in room {room}"));
                }
            }
            Request::Publish { room, data, id } => {
                if !caller.in_room(&room) {
                    return error(
                        ErrorCode::NotJoined,
                        &format!("join room {room} before publishing to it"),
                    );
                }
                if let Err(e) = self.check_data(data) {
                    return error(e.code, &e.message);
                }
                if caller.limited()
                    && let Err(r) = self
                        .shared
                        .limits
                        .publish(caller.client(), std::time::Instant::now())
                {
                    crate::stats::Stats::add(&self.shared.stats.limit_refusals, 1);
                    return error(ErrorCode::RateLimited, &r.to_string());
                }
                let msg = HomeMsg::Publish(Publish {
                    room: room.clone(),
                    conn: caller.answer_to(),
                    from: caller.client().clone(),
                    data: Bytes::copy_from_slice(data.get().as_bytes()),
                    id: id.map(|i| i.as_ref().into()),
                    reference,
                    create: false,
                    asked: std::time::Instant::now(),
                });
                caller.asked();
                self.to_home(&room, msg);
            }
            Request::Presence { room } => {
                caller.asked();
                let conn = caller.answer_to();
                self.to_home(
                    &room.clone(),
                    HomeMsg::Presence {
                        room,
                        conn,
                        reference,
                    },
                );
            }
            Request::History { room, since, limit } => {
                caller.asked();
                let conn = caller.answer_to();
                self.to_home(
                    &room.clone(),
                    HomeMsg::History {
                        room,
                        conn,
                        reference,
                        since,
                        limit,
                    },
                );
            }
        }
    }

    /// Whether a member's presence info is within `limits.max_presence_size`.
    pub(crate) fn check_presence(&self, info: &[u8]) -> Result<(), ProtoError> {
        let max = self.shared.config.limits.max_presence_size;
        if info.len() > max {
            return Err(ProtoError::new(
                ErrorCode::TooLarge,
                format!("presence info is {} bytes, the limit is {max}", info.len()),
            ));
        }
        Ok(())
    }

    /// Whether a message's `data` is within `rooms.max_data_size`.
    pub(crate) fn check_data(&self, data: &RawValue) -> Result<(), ProtoError> {
        let max = self.shared.config.rooms.max_data_size;
        let len = data.get().len();
        if len > max {
            return Err(ProtoError::new(
                ErrorCode::TooLarge,
                format!("data is {len} bytes, the limit is {max}"),
            ));
        }
        Ok(())
    }
}

/// What a token must allow for `request`, and in which room (`None`: nothing). A join
/// with presence info needs `presence` as well, checked with the join.
fn needs<'r>(request: &'r Request<'_>) -> Option<(Action, &'r RoomName)> {
    match request {
        Request::Join { room, .. } => Some((Action::Join, room)),
        Request::Publish { room, .. } => Some((Action::Publish, room)),
        Request::Presence { room } => Some((Action::Presence, room)),
        Request::History { room, .. } => Some((Action::History, room)),
        Request::Hello { .. } | Request::Leave { .. } | Request::Ping | Request::Refresh { .. } => {
            None
        }
    }
}

/// A `/ws` connection that said hello as `client`.
pub(crate) struct SocketCaller<'a> {
    pub conn: &'a Rc<Conn>,
    pub client: Arc<str>,
}

impl Caller for SocketCaller<'_> {
    fn client(&self) -> &Arc<str> {
        &self.client
    }

    fn in_room(&self, room: &RoomName) -> bool {
        let session = self.conn.session.borrow();
        session
            .rooms
            .iter()
            .any(|m| m.kind == Kind::Ws && m.room == *room)
    }

    fn room_count(&self) -> usize {
        let session = self.conn.session.borrow();
        session.rooms.iter().filter(|m| m.kind == Kind::Ws).count()
    }

    fn answer_to(&self) -> ConnKey {
        self.conn.key
    }

    fn reply(&self, worker: &Rc<Worker>, reply: Reply) {
        if let Some(code) = reply.code() {
            worker.shared.stats.error(code);
        }
        self.conn.push(worker, reply.frame());
    }

    fn asked(&self) {
        self.conn.asked();
    }

    fn join(
        &self,
        worker: &Rc<Worker>,
        room: RoomName,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
    ) {
        let client = self.client.clone();
        worker.ws_join(self.conn, room, client, presence, since, reference);
    }

    fn may(&self, action: Action, room: &RoomName) -> bool {
        let session = self.conn.session.borrow();
        session
            .auth
            .as_ref()
            .is_none_or(|id| id.grants.allows(action, room))
    }

    fn refreshed(&self, identity: Identity) {
        let mut session = self.conn.session.borrow_mut();
        session.auth = Some(Box::new(identity));
        session.warned = false;
    }

    fn expires_ms(&self) -> Option<u64> {
        let session = self.conn.session.borrow();
        session.auth.as_ref().map(|id| id.expires_ms)
    }

    fn limited(&self) -> bool {
        self.conn.flow.borrow().is_some()
    }

    fn rooms(&self) -> Vec<(RoomName, bool)> {
        let session = self.conn.session.borrow();
        session
            .rooms
            .iter()
            .filter(|m| m.kind == Kind::Ws)
            .map(|m| (m.room.clone(), m.presence))
            .collect()
    }

    fn leave(&self, worker: &Rc<Worker>, room: &RoomName) -> bool {
        let membership = {
            let mut session = self.conn.session.borrow_mut();
            let at = session
                .rooms
                .iter()
                .position(|m| m.kind == Kind::Ws && m.room == *room);
            at.map(|i| session.rooms.swap_remove(i))
        };
        match membership {
            Some(m) => {
                worker.drop_membership(self.conn, m, Some(&self.client));
                true
            }
            None => false,
        }
    }
}

/// An SSE or poll session, whose `POST /cmd` waits for its answers at `notify`.
pub(crate) struct SessionCaller<'a> {
    pub member: &'a Arc<HttpMember>,
    pub notify: ConnKey,
}

impl Caller for SessionCaller<'_> {
    fn client(&self) -> &Arc<str> {
        &self.member.client
    }

    fn in_room(&self, room: &RoomName) -> bool {
        self.member.state().rooms.iter().any(|r| r.room == *room)
    }

    fn room_count(&self) -> usize {
        self.member.state().rooms.len()
    }

    fn answer_to(&self) -> ConnKey {
        self.notify
    }

    fn reply(&self, worker: &Rc<Worker>, reply: Reply) {
        worker.reply_to(self.notify, reply);
    }

    fn join(
        &self,
        worker: &Rc<Worker>,
        room: RoomName,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
    ) {
        worker.http_join(
            self.member,
            room,
            presence,
            since,
            reference,
            Some(self.notify),
        );
    }

    fn may(&self, action: Action, room: &RoomName) -> bool {
        self.member
            .state()
            .auth
            .as_ref()
            .is_none_or(|id| id.grants.allows(action, room))
    }

    fn refreshed(&self, identity: Identity) {
        let mut st = self.member.state();
        st.auth = Some(identity);
        st.warned = false;
    }

    fn expires_ms(&self) -> Option<u64> {
        self.member.state().auth.as_ref().map(|id| id.expires_ms)
    }

    fn limited(&self) -> bool {
        self.member.state().limited
    }

    fn rooms(&self) -> Vec<(RoomName, bool)> {
        let st = self.member.state();
        st.rooms
            .iter()
            .map(|r| (r.room.clone(), r.presence.is_some()))
            .collect()
    }

    fn leave(&self, worker: &Rc<Worker>, room: &RoomName) -> bool {
        let taken = {
            let mut st = self.member.state();
            st.rooms
                .iter()
                .position(|r| r.room == *room)
                .map(|i| st.rooms.swap_remove(i))
        };
        match taken {
            Some(r) => {
                worker.drop_http_membership(self.member, r);
                true
            }
            None => false,
        }
    }
}
