//! What a worker does for the connections it holds: local rooms, fan-out, and the room
//! operations its connections ask for.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;
use tokio::sync::{Notify, oneshot};

use super::{HomeMsg, LocalMsg, Worker};
use crate::conn::{Conn, Kind, Membership};
use crate::hub::RoomName;
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
    conn: Rc<Conn>,
    /// Receives presence diffs (`/ws`), or its own messages (`/rooms/...?echo=1`).
    flag: bool,
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
            } => {
                let Some(conn) = self.conn(key) else { return };
                conn.inflight.set(conn.inflight.get().saturating_sub(1));
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
                    let slot = self
                        .local
                        .borrow_mut()
                        .entry((Kind::Ws, room))
                        .or_default()
                        .members
                        .insert(Member {
                            conn: conn.clone(),
                            flag: m.presence,
                        });
                    m.slot = Some(slot);
                }
                conn.push(self, reply);
                conn.push_backlog(self, missed);
                conn.wake();
            }
            LocalMsg::Deliver { room, frame } => self.fan_out(Kind::Ws, &room, &frame, None, false),
            LocalMsg::PresenceDiff { room, frame } => {
                self.fan_out(Kind::Ws, &room, &frame, None, true)
            }
            LocalMsg::RawDeliver { room, frame } => {
                self.fan_out(Kind::Raw, &room, &frame, None, false)
            }
            LocalMsg::Reply { conn: key, frame } => {
                let Some(conn) = self.conn(key) else { return };
                let before = conn.inflight.get();
                conn.inflight.set(before.saturating_sub(1));
                conn.push(self, frame);
                if before >= super::MAX_INFLIGHT {
                    conn.wake();
                }
            }
        }
    }

    /// Queues `frame` to every local member of a room: all of them, or only those whose
    /// flag is set (`only_flagged`), never `skip`.
    fn fan_out(
        &self,
        kind: Kind,
        room: &RoomName,
        frame: &Bytes,
        skip: Option<&Rc<Conn>>,
        only_flagged: bool,
    ) {
        let local = self.local.borrow();
        let Some(r) = local.get(&(kind, room.clone())) else {
            return;
        };
        let mut n = 0;
        for (_, m) in r.members.iter() {
            if (only_flagged && !m.flag) || skip.is_some_and(|s| Rc::ptr_eq(s, &m.conn)) {
                continue;
            }
            m.conn.push(self, frame.clone());
            n += 1;
        }
        Stats::add(&self.shared.stats.deliveries, n);
    }

    /// `join` on `/ws`: recorded as pending here, decided by the home.
    pub(crate) fn ws_join(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        room: RoomName,
        client: Arc<str>,
        presence: Option<Bytes>,
        since: Option<crate::protocol::SincePos>,
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
        conn.inflight.set(conn.inflight.get() + 1);
        self.to_home(
            &room.clone(),
            HomeMsg::Join {
                room,
                conn: conn.key,
                seq,
                client,
                presence,
                since,
                reference,
            },
        );
    }

    /// `leave` on `/ws` (or the end of the connection): local membership ends now, and
    /// the home hears of it after anything this connection sent it before.
    pub(crate) fn drop_membership(
        self: &Rc<Self>,
        conn: &Rc<Conn>,
        m: Membership,
        client: Option<&Arc<str>>,
    ) {
        let key = (m.kind, m.room.clone());
        let now_empty = {
            let mut local = self.local.borrow_mut();
            match (m.slot, local.get_mut(&key)) {
                (Some(slot), Some(r)) => {
                    if r.members
                        .get(slot)
                        .is_some_and(|x| Rc::ptr_eq(&x.conn, conn))
                    {
                        r.members.remove(slot);
                    }
                    if r.members.is_empty() {
                        local.remove(&key);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        };
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

    /// A request answered by the room's home (publish, presence, history).
    pub(crate) fn ask_home(self: &Rc<Self>, conn: &Rc<Conn>, room: &RoomName, msg: HomeMsg) {
        conn.inflight.set(conn.inflight.get() + 1);
        self.to_home(room, msg);
    }

    /// Adds a raw-room member. Returns once the home counts this worker, so that anything
    /// published after the caller's 101 reaches the member.
    pub(crate) async fn raw_join(self: &Rc<Self>, conn: &Rc<Conn>, room: RoomName, echo: bool) {
        let key = (Kind::Raw, room.clone());
        let (slot, first, ready) = {
            let mut local = self.local.borrow_mut();
            let r = local.entry(key.clone()).or_default();
            let first = r.members.is_empty();
            let slot = r.members.insert(Member {
                conn: conn.clone(),
                flag: echo,
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
        self.fan_out(Kind::Raw, room, &frame, (!echo).then_some(conn), false);
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
}
