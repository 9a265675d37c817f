//! What a worker does as the home of rooms.

use std::rc::Rc;
use std::sync::Arc;

use super::{HomeMsg, LocalMsg, Worker};
use crate::hub::Room;
use crate::protocol::RoomName;
use crate::protocol::{ErrorCode, reply};
use crate::stats::Stats;

impl Worker {
    pub(super) fn handle_home(self: &Rc<Self>, msg: HomeMsg) {
        // Decide under the borrow, send after it: sending to ourselves re-enters.
        let mut out: Vec<(usize, LocalMsg)> = Vec::new();
        match msg {
            HomeMsg::Join {
                room,
                conn,
                seq,
                client,
                presence,
                since,
                reference,
                notify,
            } => {
                let mut homes = self.homes.borrow_mut();
                let state = homes
                    .entry(room.clone())
                    .or_insert_with(|| self.new_room(room.clone()));
                let was_dirty = state.presence_dirty();
                let joined =
                    state.join(usize::from(conn.worker), &client, presence, since.as_ref());
                let frame = reply::joined(
                    reference,
                    &room,
                    state.epoch(),
                    joined.offset,
                    joined.recovered,
                );
                if !was_dirty && state.presence_dirty() {
                    self.presence_dirty.borrow_mut().push(room.clone());
                }
                out.push((
                    usize::from(conn.worker),
                    LocalMsg::Joined {
                        room,
                        conn,
                        seq,
                        reply: frame,
                        missed: joined.missed,
                        epoch: state.epoch_arc().clone(),
                        offset: joined.offset,
                        notify,
                    },
                ));
            }
            HomeMsg::Leave {
                room,
                worker,
                client,
                presence,
            } => {
                if let Some(state) = self.homes.borrow_mut().get_mut(&room) {
                    let was_dirty = state.presence_dirty();
                    state.leave(usize::from(worker), &client, presence);
                    if !was_dirty && state.presence_dirty() {
                        self.presence_dirty.borrow_mut().push(room);
                    }
                }
            }
            HomeMsg::Publish {
                room,
                conn,
                from,
                data,
                id,
                reference,
                create,
            } => {
                let mut homes = self.homes.borrow_mut();
                let target = usize::from(conn.worker);
                if create && !homes.contains_key(&room) {
                    homes.insert(room.clone(), self.new_room(room.clone()));
                }
                let Some(state) = homes.get_mut(&room) else {
                    let frame = reply::error(
                        reference,
                        ErrorCode::NotJoined,
                        "join the room before publishing to it",
                    );
                    return self.to_local(target, LocalMsg::Reply { conn, frame });
                };
                let published = state.publish(&from, &data, id.as_deref(), crate::now_ms());
                if let Some(frame) = published.frame {
                    Stats::add(&self.shared.stats.published, 1);
                    for (worker, _) in state.subscribers() {
                        out.push((
                            worker,
                            LocalMsg::Deliver {
                                room: room.clone(),
                                frame: frame.clone(),
                                epoch: state.epoch_arc().clone(),
                                offset: published.offset,
                            },
                        ));
                    }
                }
                // After the message is in the history, and after its delivery to the
                // publisher's worker: the publisher sees its message, then the ack.
                let ack = reply::ack(reference, &room, published.offset);
                out.push((target, LocalMsg::Reply { conn, frame: ack }));
            }
            HomeMsg::Presence {
                room,
                conn,
                reference,
            } => {
                let frame = match self.homes.borrow().get(&room) {
                    Some(state) => state.presence_reply(reference),
                    None => not_found(reference, &room),
                };
                out.push((usize::from(conn.worker), LocalMsg::Reply { conn, frame }));
            }
            HomeMsg::History {
                room,
                conn,
                reference,
                since,
                limit,
            } => {
                let frame = match self.homes.borrow().get(&room) {
                    Some(state) => state.history_reply(reference, since.as_ref(), limit),
                    None => not_found(reference, &room),
                };
                out.push((usize::from(conn.worker), LocalMsg::Reply { conn, frame }));
            }
            HomeMsg::Rooms { reply } => {
                let rooms = self
                    .homes
                    .borrow()
                    .values()
                    .map(|r| super::RoomInfo {
                        room: r.name().clone(),
                        epoch: r.epoch_arc().clone(),
                        last_offset: r.last_offset(),
                        members: r.member_count(),
                        visible: r.visible_count(),
                    })
                    .collect();
                let _ = reply.send(rooms);
            }
            HomeMsg::RawSubscribe { room, worker, done } => {
                let workers = self.mesh.len();
                self.raw_homes
                    .borrow_mut()
                    .entry(room)
                    .or_insert_with(|| vec![0; workers])[usize::from(worker)] += 1;
                let _ = done.send(());
            }
            HomeMsg::RawUnsubscribe { room, worker } => {
                if let Some(subs) = self.raw_homes.borrow_mut().get_mut(&room) {
                    let n = &mut subs[usize::from(worker)];
                    *n = n.saturating_sub(1);
                }
            }
            HomeMsg::RawPublish {
                room,
                frame,
                origin,
            } => {
                if let Some(subs) = self.raw_homes.borrow().get(&room) {
                    for (worker, &n) in subs.iter().enumerate() {
                        if n > 0 && worker != usize::from(origin) {
                            out.push((
                                worker,
                                LocalMsg::RawDeliver {
                                    room: room.clone(),
                                    frame: frame.clone(),
                                },
                            ));
                        }
                    }
                }
            }
        }
        for (worker, msg) in out {
            self.to_local(worker, msg);
        }
    }

    fn new_room(&self, name: RoomName) -> Room {
        let epoch: Arc<str> = Arc::from(crate::random_id(8));
        Room::new(name, epoch, self.mesh.len(), self.shared.config.history())
    }

    /// Sends each pending presence diff to the workers with members that asked for it.
    pub(super) fn push_presence_diffs(self: &Rc<Self>) {
        let rooms = std::mem::take(&mut *self.presence_dirty.borrow_mut());
        let mut out = Vec::new();
        {
            let mut homes = self.homes.borrow_mut();
            for name in rooms {
                let Some(room) = homes.get_mut(&name) else {
                    continue;
                };
                let Some(frame) = room.take_presence_diff() else {
                    continue;
                };
                for (worker, subs) in room.subscribers() {
                    if subs.presence > 0 {
                        out.push((
                            worker,
                            LocalMsg::PresenceDiff {
                                room: name.clone(),
                                frame: frame.clone(),
                            },
                        ));
                    }
                }
            }
        }
        for (worker, msg) in out {
            self.to_local(worker, msg);
        }
    }
}

fn not_found(reference: Option<u64>, room: &RoomName) -> bytes::Bytes {
    reply::error(
        reference,
        ErrorCode::NotFound,
        &format!("no room {room} on this node (no members, no history)"),
    )
}
