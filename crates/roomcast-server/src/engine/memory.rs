//! The in-memory engine: the rooms whose home a worker is, without I/O.
//!
//! Each worker owns one [`Homes`]. It takes the [`HomeMsg`] requests for its rooms and
//! answers with [`LocalMsg`] events addressed to workers; the worker sends them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{HomeMsg, Join, LocalMsg, Publish, Reply, RoomInfo};
use crate::hub::{HistoryLimits, Room};
use crate::protocol::RoomName;
use crate::protocol::{ErrorCode, reply};
use crate::stats::Stats;

/// Events for workers: `(worker index, event)`.
pub(crate) type Out = Vec<(usize, LocalMsg)>;

/// The rooms whose home one worker is.
#[derive(Debug)]
pub(crate) struct Homes {
    workers: usize,
    limits: HistoryLimits,
    /// `limits.max_rooms`, counted over the node in `Stats::rooms`.
    max_rooms: usize,
    rooms: HashMap<RoomName, Room>,
    /// Raw rooms: members per worker.
    raw: HashMap<RoomName, Vec<u32>>,
    /// Rooms with a presence diff waiting, each once (a room is listed when its diff goes
    /// from empty to not, and taken off when the batcher sends it).
    presence_dirty: Vec<RoomName>,
}

impl Homes {
    /// The homes of a node of `workers` workers.
    pub(crate) fn new(workers: usize, limits: HistoryLimits, max_rooms: usize) -> Self {
        Self {
            workers,
            limits,
            max_rooms,
            rooms: HashMap::new(),
            raw: HashMap::new(),
            presence_dirty: Vec::new(),
        }
    }

    /// Handles one request; what it decides for workers goes to `out`.
    pub(crate) fn handle(&mut self, msg: HomeMsg, stats: &Stats, out: &mut Out) {
        match msg {
            HomeMsg::Join(Join {
                room,
                conn,
                seq,
                client,
                presence,
                since,
                reference,
                notify,
            }) => {
                if !self.rooms.contains_key(&room) && !self.may_create(stats) {
                    let reply = full(reference, self.max_rooms);
                    let target = usize::from(conn.worker);
                    return out.push((
                        target,
                        LocalMsg::JoinFailed {
                            room,
                            conn,
                            seq,
                            reply,
                            notify,
                        },
                    ));
                }
                let (workers, limits) = (self.workers, self.limits);
                let state = self
                    .rooms
                    .entry(room.clone())
                    .or_insert_with(|| new_room(room.clone(), workers, limits));
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
                    self.presence_dirty.push(room.clone());
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
                if let Some(state) = self.rooms.get_mut(&room) {
                    let was_dirty = state.presence_dirty();
                    state.leave(usize::from(worker), &client, presence);
                    if !was_dirty && state.presence_dirty() {
                        self.presence_dirty.push(room);
                    }
                }
            }
            HomeMsg::Publish(Publish {
                room,
                conn,
                from,
                data,
                id,
                reference,
                create,
                asked,
            }) => {
                let target = usize::from(conn.worker);
                if create && !self.rooms.contains_key(&room) {
                    if !self.may_create(stats) {
                        let reply = full(reference, self.max_rooms);
                        return out.push((target, LocalMsg::Reply { conn, reply }));
                    }
                    let state = new_room(room.clone(), self.workers, self.limits);
                    self.rooms.insert(room.clone(), state);
                }
                let Some(state) = self.rooms.get_mut(&room) else {
                    let reply = Reply::error(
                        reference,
                        ErrorCode::NotJoined,
                        "join the room before publishing to it",
                    );
                    return out.push((target, LocalMsg::Reply { conn, reply }));
                };
                let published = state.publish(&from, &data, id.as_deref(), crate::now_ms());
                if let Some(frame) = published.frame {
                    Stats::add(&stats.published, 1);
                    for (worker, _) in state.subscribers() {
                        out.push((
                            worker,
                            LocalMsg::Deliver {
                                room: room.clone(),
                                frame: frame.clone(),
                                epoch: state.epoch_arc().clone(),
                                offset: published.offset,
                                catch_up: false,
                            },
                        ));
                    }
                }
                // After the message is in the history, and after its delivery to the
                // publisher's worker: the publisher sees its message, then the ack.
                let reply = Reply::Ack {
                    reference,
                    room,
                    offset: published.offset,
                    asked: Some(asked),
                };
                out.push((target, LocalMsg::Reply { conn, reply }));
            }
            HomeMsg::Presence {
                room,
                conn,
                reference,
            } => {
                let reply = match self.rooms.get(&room) {
                    Some(state) => Reply::Frame(state.presence_reply(reference)),
                    None => not_found(reference, &room),
                };
                out.push((usize::from(conn.worker), LocalMsg::Reply { conn, reply }));
            }
            HomeMsg::History {
                room,
                conn,
                reference,
                since,
                limit,
            } => {
                let reply = match self.rooms.get(&room) {
                    Some(state) => {
                        Reply::Frame(state.history_reply(reference, since.as_ref(), limit))
                    }
                    None => not_found(reference, &room),
                };
                out.push((usize::from(conn.worker), LocalMsg::Reply { conn, reply }));
            }
            HomeMsg::Rooms { reply } => {
                let rooms = self
                    .rooms
                    .values()
                    .map(|r| RoomInfo {
                        room: r.name().clone(),
                        epoch: r.epoch_arc().clone(),
                        last_offset: r.last_offset(),
                        members: r.member_count(),
                        visible: r.visible_count(),
                    })
                    .collect();
                let _ = reply.send(rooms);
            }
            // Nodes are a cluster's: the worker answers for its own node, and a node
            // alone has no other node to forward to or disconnect on.
            HomeMsg::Nodes { .. } | HomeMsg::Forward { .. } | HomeMsg::Disconnect { .. } => {}
            HomeMsg::RawSubscribe { room, worker, done } => {
                let workers = self.workers;
                self.raw.entry(room).or_insert_with(|| vec![0; workers])[usize::from(worker)] += 1;
                let _ = done.send(());
            }
            HomeMsg::RawUnsubscribe { room, worker } => {
                if let Some(subs) = self.raw.get_mut(&room) {
                    let n = &mut subs[usize::from(worker)];
                    *n = n.saturating_sub(1);
                }
            }
            HomeMsg::RawPublish {
                room,
                frame,
                origin,
            } => {
                if let Some(subs) = self.raw.get(&room) {
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
    }

    /// Whether a presence diff waits to be sent.
    pub(crate) fn presence_pending(&self) -> bool {
        !self.presence_dirty.is_empty()
    }

    /// Each pending presence diff, for the workers with members that asked for it.
    pub(crate) fn presence_diffs(&mut self, out: &mut Out) {
        let rooms = std::mem::take(&mut self.presence_dirty);
        {
            for name in rooms {
                let Some(room) = self.rooms.get_mut(&name) else {
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
    }

    /// Whether one more room may be created, counting it if so (`limits.max_rooms`,
    /// over every home worker of the node).
    fn may_create(&self, stats: &Stats) -> bool {
        let held = stats.rooms.fetch_add(1, Ordering::Relaxed);
        if held >= self.max_rooms as i64 {
            stats.rooms.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Drops messages past their age, and rooms that hold nothing.
    pub(crate) fn expire(&mut self, now_ms: u64, stats: &Stats) {
        let before = self.rooms.len();
        self.rooms.retain(|_, room| {
            room.expire(now_ms);
            !room.is_idle()
        });
        stats
            .rooms
            .fetch_sub((before - self.rooms.len()) as i64, Ordering::Relaxed);
        self.raw.retain(|_, subs| subs.iter().any(|&n| n > 0));
    }
}

/// The refusal of a room past `limits.max_rooms`.
fn full(reference: Option<u64>, max: usize) -> Reply {
    Reply::error(
        reference,
        ErrorCode::Unavailable,
        &format!("this node holds its maximum of {max} rooms (limits.max_rooms)"),
    )
}

fn new_room(name: RoomName, workers: usize, limits: HistoryLimits) -> Room {
    let epoch: Arc<str> = Arc::from(crate::random_id(8));
    Room::new(name, epoch, workers, limits)
}

fn not_found(reference: Option<u64>, room: &RoomName) -> Reply {
    Reply::error(
        reference,
        ErrorCode::NotFound,
        &format!("no room {room} on this node (no members, no history)"),
    )
}
