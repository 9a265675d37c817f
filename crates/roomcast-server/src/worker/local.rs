//! What a worker does for the members it holds: local rooms, fan-out, and the room
//! operations its connections and HTTP members ask for.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use roomcast_ws::CloseCode;
use slab::Slab;
use tokio::sync::{Notify, oneshot};

use super::Worker;
use super::dispatch::SessionCaller;
use super::sink::{Outgoing, Sink};
use super::{Conn, Kind, Membership};
use crate::engine::{Addr, ConnKey, HomeMsg, Join, LocalMsg, Reply};
use crate::member::{EventKind, HttpMember, HttpRoom, frame_json};
use crate::protocol::RoomName;
use crate::protocol::{ErrorCode, SincePos, parse};
use crate::stats::Stats;

/// The members of one room held by one worker.
#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    members: Slab<Member>,
    /// Raw rooms: the home counts this worker (membership has begun node-wide).
    subscribed: bool,
    /// Raw rooms: joiners waiting for `subscribed`.
    ready: Rc<Notify>,
}

#[derive(Debug)]
struct Member {
    sink: Sink,
    /// Receives presence diffs (`/ws`, HTTP members that joined with `presence`).
    presence: bool,
}

impl Worker {
    pub(super) fn handle_local(self: &Rc<Self>, msg: LocalMsg) {
        match msg {
            LocalMsg::Joined {
                room,
                conn: key,
                seq,
                reply,
                missed,
                epoch,
                offset,
                notify,
            } => {
                if let Some(to) = notify {
                    self.reply_to(to, Reply::Frame(reply.clone()));
                }
                match key.addr() {
                    Addr::Http(_) => {
                        self.http_joined(key, room, seq, &reply, missed, epoch, offset)
                    }
                    _ => self.socket_joined(key, room, seq, reply, missed),
                }
            }
            LocalMsg::Deliver {
                room,
                frame,
                epoch,
                offset,
                catch_up,
            } => {
                let kind = EventKind::Message { epoch, offset };
                let how = if catch_up { Push::CatchUp } else { Push::Live };
                self.fan_out(Kind::Ws, &room, &frame, None, how, Some(kind))
            }
            LocalMsg::Reset {
                room,
                frame,
                epoch,
                offset,
            } => {
                let kind = EventKind::Joined { epoch, offset };
                self.fan_out(Kind::Ws, &room, &frame, None, Push::Live, Some(kind))
            }
            LocalMsg::JoinFailed {
                room,
                conn: key,
                seq,
                reply,
                notify,
            } => self.join_failed(key, &room, seq, reply, notify),
            LocalMsg::PresenceDiff { room, frame } => self.fan_out(
                Kind::Ws,
                &room,
                &frame,
                None,
                Push::PresenceOnly,
                Some(EventKind::Presence),
            ),
            LocalMsg::RawDeliver { room, frame } => {
                self.fan_out(Kind::Raw, &room, &frame, None, Push::Live, None)
            }
            LocalMsg::Reply { conn: key, reply } => {
                // Every error reply passes here or through a socket caller's `reply`.
                if let Some(code) = reply.code() {
                    self.shared.stats.error(code);
                }
                if let Reply::Ack {
                    asked: Some(asked), ..
                } = &reply
                {
                    self.shared.metrics.publish(asked.elapsed());
                }
                match key.addr() {
                    Addr::Pending(_) => {
                        if let Some(waiting) = self.take_pending(key) {
                            let _ = waiting.send(reply);
                        }
                    }
                    Addr::Http(_) => {}
                    Addr::Socket(_) => {
                        let Some(conn) = self.conn(key) else { return };
                        conn.answered();
                        conn.push(self, reply.frame());
                    }
                }
            }
            LocalMsg::HttpCommand {
                member,
                text,
                notify,
            } => match self.http_member(member) {
                Some(m) => self.http_command(&m, &text, notify),
                None => self.reply_to(
                    notify,
                    Reply::error(None, ErrorCode::NotFound, "no such session on this node"),
                ),
            },
            LocalMsg::RemoteCall {
                session,
                call,
                reply,
            } => self.remote_call(&session, call, reply),
            LocalMsg::Disconnect {
                client,
                code,
                reason,
                reply,
            } => {
                let _ = reply.send(self.disconnect(&client, code, &reason));
            }
        }
    }

    /// A join the engine could not do: the membership it had recorded goes, and the
    /// member gets the error.
    fn join_failed(
        self: &Rc<Self>,
        key: ConnKey,
        room: &RoomName,
        seq: u32,
        reply: Reply,
        notify: Option<ConnKey>,
    ) {
        if let Some(to) = notify {
            self.reply_to(to, reply.clone());
        }
        match key.addr() {
            Addr::Socket(_) => {
                let Some(conn) = self.conn(key) else { return };
                conn.answered();
                let pending = {
                    let mut session = conn.session.borrow_mut();
                    let at = session
                        .rooms
                        .iter()
                        .position(|m| m.kind == Kind::Ws && m.room == *room && m.seq == seq);
                    at.map(|i| session.rooms.swap_remove(i))
                };
                // A member that left meanwhile asked nothing more of this join.
                if pending.is_some() {
                    conn.push(self, reply.frame());
                }
            }
            Addr::Http(_) => {
                let Some(member) = self.http_member(key) else {
                    return;
                };
                let mut st = member.state();
                if let Some(i) = st
                    .rooms
                    .iter()
                    .position(|r| r.room == *room && r.seq == seq)
                {
                    st.rooms.swap_remove(i);
                }
            }
            Addr::Pending(_) => {}
        }
    }

    fn socket_joined(
        self: &Rc<Self>,
        key: ConnKey,
        room: RoomName,
        seq: u32,
        reply: Bytes,
        missed: Vec<Bytes>,
    ) {
        let Some(conn) = self.conn(key) else { return };
        conn.answered();
        {
            let mut session = conn.session.borrow_mut();
            // Left (or left and joined again) since: this reply is stale.
            let Some(m) = session
                .rooms
                .iter_mut()
                .find(|m| m.kind == Kind::Ws && m.room == room && m.seq == seq)
            else {
                return;
            };
            let member = Member {
                sink: Sink::from(conn.clone()),
                presence: m.presence,
            };
            m.slot = Some(
                self.local
                    .borrow_mut()
                    .entry((Kind::Ws, room))
                    .or_default()
                    .members
                    .insert(member),
            );
        }
        conn.push(self, reply);
        conn.push_backlog(self, missed);
        conn.wake();
    }

    #[allow(clippy::too_many_arguments)]
    fn http_joined(
        self: &Rc<Self>,
        key: ConnKey,
        room: RoomName,
        seq: u32,
        reply: &Bytes,
        missed: Vec<Bytes>,
        epoch: Arc<str>,
        offset: u64,
    ) {
        let Some(member) = self.http_member(key) else {
            return;
        };
        {
            let mut st = member.state();
            let Some(r) = st.rooms.iter_mut().find(|r| r.room == room && r.seq == seq) else {
                return;
            };
            let entry = Member {
                sink: Sink::from(member.clone()),
                presence: r.presence.is_some(),
            };
            r.slot = Some(
                self.local
                    .borrow_mut()
                    .entry((Kind::Ws, room.clone()))
                    .or_default()
                    .members
                    .insert(entry),
            );
        }
        // The position the missed messages start from (the last offset without them).
        let first = offset + 1 - missed.len() as u64;
        member.push(
            Some(&room),
            EventKind::Joined {
                epoch: epoch.clone(),
                offset: first - 1,
            },
            frame_json(reply),
        );
        for (i, frame) in missed.iter().enumerate() {
            member.push_recovered(
                &room,
                EventKind::Message {
                    epoch: epoch.clone(),
                    offset: first + i as u64,
                },
                frame_json(frame),
            );
        }
    }

    /// Queues `frame` to every local member of a room: all of them, or only those that
    /// asked for presence ([`Push::PresenceOnly`]), never `skip`. HTTP members get it as
    /// an event of `event` kind.
    fn fan_out(
        &self,
        kind: Kind,
        room: &RoomName,
        frame: &Bytes,
        skip: Option<ConnKey>,
        how: Push,
        event: Option<EventKind>,
    ) {
        let local = self.local.borrow();
        let Some(r) = local.get(&(kind, room.clone())) else {
            return;
        };
        let mut n = 0;
        let mut out = Outgoing::new(frame.clone());
        let (presence_only, catch_up) = (how == Push::PresenceOnly, how == Push::CatchUp);
        for (_, m) in r.members.iter() {
            if presence_only && !m.presence {
                continue;
            }
            if skip.is_some_and(|k| m.sink.is(k)) {
                continue;
            }
            if m.sink
                .deliver(self, room, &mut out, event.as_ref(), catch_up)
            {
                n += 1;
            }
        }
        Stats::add(&self.shared.stats.deliveries, n);
        out.count(&self.shared.stats);
        if n > 0 && kind == Kind::Ws && !presence_only {
            self.shared.metrics.fan_out(n);
        }
    }

    /// `join` on `/ws`: recorded as pending here, decided by the home.
    pub(crate) fn ws_join(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        room: RoomName,
        client: Arc<str>,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
    ) {
        let seq = {
            let mut s = conn.session.borrow_mut();
            s.next_seq = s.next_seq.wrapping_add(1);
            let seq = s.next_seq;
            s.rooms.push(Membership {
                room: room.clone(),
                kind: Kind::Ws,
                seq,
                slot: None,
                presence: presence.is_some(),
            });
            seq
        };
        conn.asked();
        let msg = HomeMsg::Join(Join {
            room: room.clone(),
            conn: conn.key,
            seq,
            client,
            presence,
            since,
            reference,
            notify: None,
        });
        self.to_home(&room, msg);
    }

    /// Removes `slot` of a local room if it holds the member at `key`; returns whether the room is
    /// now empty (and was removed).
    fn remove_local(
        &self,
        kind: Kind,
        room: &RoomName,
        slot: Option<usize>,
        member: ConnKey,
    ) -> bool {
        let key = (kind, room.clone());
        let mut local = self.local.borrow_mut();
        let (Some(slot), Some(r)) = (slot, local.get_mut(&key)) else {
            return false;
        };
        if r.members.get(slot).is_some_and(|m| m.sink.is(member)) {
            r.members.remove(slot);
        }
        if r.members.is_empty() {
            local.remove(&key);
            return true;
        }
        false
    }

    /// `leave` on `/ws` (or the end of the connection): local membership ends now, and
    /// the home hears of it after anything this connection sent it before.
    pub(crate) fn drop_membership(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        m: Membership,
        client: Option<&Arc<str>>,
    ) {
        let now_empty = self.remove_local(m.kind, &m.room, m.slot, conn.key);
        match m.kind {
            Kind::Ws => {
                let client = client.cloned().unwrap_or_else(|| Arc::from(""));
                let msg = HomeMsg::Leave {
                    room: m.room.clone(),
                    worker: self.index as u16,
                    client,
                    presence: m.presence,
                };
                self.to_home(&m.room, msg);
            }
            Kind::Raw if now_empty => {
                self.to_home(
                    &m.room.clone(),
                    HomeMsg::RawUnsubscribe {
                        room: m.room,
                        worker: self.index as u16,
                    },
                );
            }
            Kind::Raw => {}
        }
    }

    /// Adds a raw-room member. Returns once the home counts this worker, so that anything
    /// published after the caller's 101 reaches the member.
    pub(crate) async fn raw_join(self: &Rc<Self>, conn: &Rc<Conn>, room: RoomName) {
        let key = (Kind::Raw, room.clone());
        let (slot, first, ready) = {
            let mut local = self.local.borrow_mut();
            let r = local.entry(key.clone()).or_default();
            let first = r.members.is_empty();
            let slot = r.members.insert(Member {
                sink: Sink::from(conn.clone()),
                presence: false,
            });
            (slot, first, r.ready.clone())
        };
        conn.session.borrow_mut().rooms.push(Membership {
            room: room.clone(),
            kind: Kind::Raw,
            seq: 0,
            slot: Some(slot),
            presence: false,
        });
        if first {
            let (done, counted) = oneshot::channel();
            self.to_home(
                &room.clone(),
                HomeMsg::RawSubscribe {
                    room,
                    worker: self.index as u16,
                    done,
                },
            );
            let _ = counted.await;
            if let Some(r) = self.local.borrow_mut().get_mut(&key) {
                r.subscribed = true;
            }
            ready.notify_waiters();
        } else {
            loop {
                let notified = ready.notified();
                if self.local.borrow().get(&key).is_none_or(|r| r.subscribed) {
                    break;
                }
                notified.await;
            }
        }
    }

    /// A raw message from `conn`: to the local members now (the sender itself only with
    /// `echo`), and through the home to the other workers.
    pub(crate) fn raw_publish(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        room: &RoomName,
        frame: Bytes,
        echo: bool,
    ) {
        self.fan_out(
            Kind::Raw,
            room,
            &frame,
            (!echo).then_some(conn.key),
            Push::Live,
            None,
        );
        if self.mesh.len() > 1 {
            self.to_home(
                room,
                HomeMsg::RawPublish {
                    room: room.clone(),
                    frame,
                    origin: self.index as u16,
                },
            );
        }
    }

    /// An HTTP member joins a room. Called on the member's owner worker, so its joins,
    /// leaves and publishes reach each home in the order they were asked.
    pub(crate) fn http_join(
        self: &Rc<Self>,
        member: &Arc<HttpMember>,
        room: RoomName,
        presence: Option<Bytes>,
        since: Option<SincePos>,
        reference: Option<u64>,
        notify: Option<ConnKey>,
    ) {
        let seq = {
            let mut st = member.state();
            st.next_join = st.next_join.wrapping_add(1);
            let seq = st.next_join;
            st.rooms.push(HttpRoom {
                room: room.clone(),
                seq,
                slot: None,
                presence: presence.clone(),
            });
            seq
        };
        let client = member.client.clone();
        let msg = HomeMsg::Join(Join {
            room: room.clone(),
            conn: member.key,
            seq,
            client,
            presence,
            since,
            reference,
            notify,
        });
        self.to_home(&room, msg);
    }

    /// An HTTP member leaves a room (or goes away).
    pub(crate) fn drop_http_membership(self: &Rc<Self>, member: &Arc<HttpMember>, r: HttpRoom) {
        self.remove_local(Kind::Ws, &r.room, r.slot, member.key);
        let msg = HomeMsg::Leave {
            room: r.room.clone(),
            worker: self.index as u16,
            client: member.client.clone(),
            presence: r.presence.is_some(),
        };
        self.to_home(&r.room, msg);
    }

    /// A command of an HTTP member (from `POST /cmd`), handled like the same request on
    /// `/ws`; every reply goes to `notify`.
    fn http_command(self: &Rc<Self>, member: &Arc<HttpMember>, text: &[u8], notify: ConnKey) {
        let (reference, request) = parse(text);
        match request {
            Ok(request) => self.dispatch(&SessionCaller { member, notify }, reference, request),
            Err(e) => self.reply_to(notify, Reply::error(reference, e.code, &e.message)),
        }
    }

    /// Closes every connection and HTTP member of `client` held here; returns how many.
    fn disconnect(self: &Rc<Self>, client: &str, code: u16, reason: &str) -> usize {
        let conns: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .filter(|(_, c)| c.session.borrow().client.as_deref() == Some(client))
            .map(|(_, c)| c.clone())
            .collect();
        let members: Vec<Arc<HttpMember>> = self
            .http
            .borrow()
            .iter()
            .filter(|(_, m)| &*m.client == client)
            .map(|(_, m)| m.clone())
            .collect();
        for c in &conns {
            c.close(self, CloseCode(code), reason, false);
        }
        for m in &members {
            m.end(code, reason);
            self.remove_http(m);
        }
        conns.len() + members.len()
    }
}

/// To whom a fan-out goes, and how it is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Push {
    /// Every member, within the slow-consumer bound.
    Live,
    /// The members that asked for presence.
    PresenceOnly,
    /// Every member, outside the bound until written: what the node read to catch up.
    CatchUp,
}
