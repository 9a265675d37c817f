//! What the engine asks of its broker, in the engine's words, and what it hears back:
//! [`Op`] in, [`Outcome`] out. The engine's logic (positions, gaps, held messages, acks,
//! presence diffs, node-to-node calls) speaks only these; how each is done on Redis (one
//! script or command per op, pipelined) is [`Redis::cmds`] and [`Redis::answer`] here.
//! Another broker implements the same ops with its own means.

use std::sync::Arc;

use bytes::Bytes;
use redis::{Cmd, Value};

use super::cluster;
use super::scripts::{self, Keys};
use super::wire::{self, Read};
use crate::engine::NodeInfo;
use crate::hub::HistoryLimits;
use crate::protocol::{RoomName, SincePos};

/// One request to the broker.
#[derive(Debug)]
pub(super) enum Op {
    /// Store a message and publish it live (see [`scripts::PUBLISH`]): `head` and `tail`
    /// are the message's JSON around its epoch, offset and time. `known` and `last`: how
    /// far this node delivered the room (`""`, 0 when it has no members there).
    Publish {
        room: RoomName,
        id: Option<String>,
        head: Vec<u8>,
        tail: Vec<u8>,
        known: Arc<str>,
        last: u64,
    },
    /// A member joins: counted on this node, visible with `presence`, and the room's
    /// position (with the entries after `since`) read.
    Join {
        room: RoomName,
        since: Option<SincePos>,
        client: Arc<str>,
        presence: Option<Bytes>,
    },
    /// A member leaves.
    Leave {
        room: RoomName,
        client: Arc<str>,
        presence: bool,
    },
    /// The room's periodic check by a node with `members` there: its visible clients'
    /// presence refreshed (client, memberships, info), the room kept alive, its top read.
    Check {
        room: RoomName,
        members: u32,
        clients: Vec<(Arc<str>, u32, Bytes)>,
        known: Arc<str>,
        last: u64,
    },
    /// Read the room's history after `since` (from the oldest without it).
    Read {
        room: RoomName,
        since: Option<SincePos>,
        limit: usize,
    },
    /// The room's visible clients.
    Presence { room: RoomName },
    /// A message for other nodes on a control channel; the answer counts its receivers.
    Control { channel: String, payload: Bytes },
    /// Whether the process of `instance` still says it is alive (1 or 0).
    Alive { instance: String },
    /// This node is alive: its info, when, and its process's key for `ttl_ms`.
    Beat {
        info: NodeInfo,
        now_ms: u64,
        instance: Arc<str>,
        ttl_ms: u64,
    },
}

/// What an op answers.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A publish's offset and epoch; `true` when its id had been stored before.
    Published(u64, Arc<str>, bool),
    /// A read (a join's, a fill's, a history request's).
    Read(Read),
    /// A check: the room's epoch (`""` for none) and top.
    Checked(String, u64),
    /// The visible clients, sorted.
    Members(Vec<(Arc<str>, Bytes)>),
    /// A count (receivers of a control message; 1 or 0 for `Alive`).
    Count(u64),
}

/// The Redis side of the ops: the scripts (by hash) and the settings their arguments
/// come from.
#[derive(Debug)]
pub(super) struct Redis {
    pub scripts: Scripts,
    pub cluster: bool,
    pub node: Arc<str>,
    pub history: HistoryLimits,
    pub presence_ttl_ms: u64,
    /// `broker.wait_replicas` and `broker.wait_timeout_ms`, when replicas must confirm.
    pub wait: Option<(u32, u64)>,
}

/// The scripts, by their hashes, and their sources (loaded on every new connection).
#[derive(Debug)]
pub(super) struct Scripts {
    publish: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    tick: redis::Script,
    history: redis::Script,
    presence: redis::Script,
    pub sources: std::rc::Rc<[String]>,
}

impl Scripts {
    /// The scripts, with `SPUBLISH` for `PUBLISH` on a cluster (sharded pub/sub).
    pub(super) fn new(cluster: bool) -> Self {
        let bodies = [
            scripts::PUBLISH,
            scripts::JOIN,
            scripts::LEAVE,
            scripts::TICK,
            scripts::HISTORY,
            scripts::PRESENCE,
        ];
        let sources = bodies.map(|b| scripts::full(b, cluster));
        let [publish, join, leave, tick, history, presence] =
            sources.each_ref().map(|s| redis::Script::new(s));
        Self {
            publish,
            join,
            leave,
            tick,
            history,
            presence,
            sources: sources.into(),
        }
    }
}

/// `EVALSHA` of a loaded script.
fn eval(script: &redis::Script, keys: &[String], args: &[&[u8]]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys);
    for a in args {
        cmd.arg(*a);
    }
    cmd
}

impl Redis {
    /// How long a room's state outlives its last publish or check: its history's age
    /// and a minute.
    pub(super) fn keep_ms(&self) -> u64 {
        self.history.max_age_ms + 60_000
    }

    /// The `WAIT` that ends a pipeline with publishes in it, and how many replicas it must
    /// count, when `broker.wait_replicas` asks. One per pipeline: it waits for every write
    /// the connection made before it, on the primary the pipeline went to.
    pub(super) fn wait(&self) -> Option<(Cmd, u32)> {
        let (replicas, timeout_ms) = self.wait?;
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout_ms);
        Some((wait, replicas))
    }

    /// The commands that do `op`: one, but for a beat (three keys of the `{nodes}` slot).
    pub(super) fn cmds(&self, op: &Op) -> Vec<Cmd> {
        let fresh = || crate::random_id(8);
        let one = match op {
            Op::Publish {
                room,
                id,
                head,
                tail,
                known,
                last,
            } => {
                let k = Keys::new(room.as_str());
                let idem = match id {
                    Some(id) => k.key(&format!("id:{id}")),
                    None => k.key("meta"),
                };
                let keys = [k.key("meta"), k.key("log"), idem];
                // The fresh epoch is used only by the publish that creates the room's state.
                let fresh = fresh();
                let max = self.history.max_messages.to_string();
                let age = self.history.max_age_ms.to_string();
                let keep = self.keep_ms().to_string();
                let channel = k.channel();
                let last = last.to_string();
                eval(
                    &self.scripts.publish,
                    &keys,
                    &[
                        fresh.as_bytes(),
                        head,
                        tail,
                        max.as_bytes(),
                        age.as_bytes(),
                        // An idempotency key lives as long as the message it names.
                        age.as_bytes(),
                        channel.as_bytes(),
                        if id.is_some() { b"1" } else { b"0" },
                        keep.as_bytes(),
                        known.as_bytes(),
                        last.as_bytes(),
                    ],
                )
            }
            Op::Join {
                room,
                since,
                client,
                presence,
            } => {
                let k = Keys::new(room.as_str());
                let fresh = fresh();
                let (since_epoch, since_offset) = since
                    .as_ref()
                    .map_or(("", 0), |s| (s.epoch.as_str(), s.offset));
                let since_offset = since_offset.to_string();
                let max = self.history.max_messages.to_string();
                let ttl = self.presence_ttl_ms.to_string();
                let keep = self.keep_ms().to_string();
                let channel = k.channel();
                let info: &[u8] = presence.as_deref().unwrap_or(b"");
                eval(
                    &self.scripts.join,
                    &k.all(),
                    &[
                        fresh.as_bytes(),
                        since_epoch.as_bytes(),
                        since_offset.as_bytes(),
                        max.as_bytes(),
                        if presence.is_some() { b"1" } else { b"0" },
                        client.as_bytes(),
                        self.node.as_bytes(),
                        info,
                        ttl.as_bytes(),
                        channel.as_bytes(),
                        keep.as_bytes(),
                    ],
                )
            }
            Op::Leave {
                room,
                client,
                presence,
            } => {
                let k = Keys::new(room.as_str());
                let channel = k.channel();
                eval(
                    &self.scripts.leave,
                    &k.all(),
                    &[
                        client.as_bytes(),
                        self.node.as_bytes(),
                        if *presence { b"1" } else { b"0" },
                        channel.as_bytes(),
                    ],
                )
            }
            Op::Check {
                room,
                members,
                clients,
                known,
                last,
            } => {
                let ttl = self.presence_ttl_ms.to_string();
                let keep = self.keep_ms().to_string();
                let k = Keys::new(room.as_str());
                let members = members.to_string();
                let channel = k.channel();
                let last = last.to_string();
                let fresh = fresh();
                let counts: Vec<String> = clients.iter().map(|(_, n, _)| n.to_string()).collect();
                let mut args: Vec<&[u8]> = vec![
                    self.node.as_bytes(),
                    ttl.as_bytes(),
                    channel.as_bytes(),
                    keep.as_bytes(),
                    members.as_bytes(),
                    known.as_bytes(),
                    last.as_bytes(),
                    fresh.as_bytes(),
                ];
                for ((client, _, info), n) in clients.iter().zip(&counts) {
                    args.extend([client.as_bytes(), n.as_bytes(), &info[..]]);
                }
                eval(&self.scripts.tick, &k.all(), &args)
            }
            Op::Read { room, since, limit } => {
                let keys = Keys::new(room.as_str()).all();
                let (epoch, offset) = since
                    .as_ref()
                    .map_or(("", 0), |s| (s.epoch.as_str(), s.offset));
                let offset = offset.to_string();
                let limit = limit.to_string();
                eval(
                    &self.scripts.history,
                    &keys,
                    &[epoch.as_bytes(), offset.as_bytes(), limit.as_bytes()],
                )
            }
            Op::Presence { room } => {
                let k = Keys::new(room.as_str());
                let channel = k.channel();
                eval(&self.scripts.presence, &k.all(), &[channel.as_bytes()])
            }
            Op::Control { channel, payload } => {
                let mut cmd = redis::cmd(super::link::publish_verb(self.cluster));
                cmd.arg(channel).arg(&payload[..]);
                cmd
            }
            Op::Alive { instance } => {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(cluster::instance_key(instance));
                cmd
            }
            Op::Beat {
                info,
                now_ms,
                instance,
                ttl_ms,
            } => return cluster::beat(info, *now_ms, instance, *ttl_ms).into(),
        };
        vec![one]
    }

    /// What `op`'s reply says (`None`: it does not parse, as if it failed, or there is
    /// nothing to read in it).
    pub(super) fn answer(op: &OpKind, value: Value) -> Option<Outcome> {
        match op {
            OpKind::Publish => {
                wire::parse_published(value).map(|(o, e, d)| Outcome::Published(o, e, d))
            }
            OpKind::Read => wire::parse_read(value).map(Outcome::Read),
            OpKind::Check => wire::parse_tick(value).map(|(e, t)| Outcome::Checked(e, t)),
            OpKind::Presence => wire::parse_presence(value).map(Outcome::Members),
            OpKind::Count => wire::int_of(&value).map(Outcome::Count),
            OpKind::Done => None,
        }
    }
}

/// Which kind of answer an op gives (what its reply is parsed as).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpKind {
    Publish,
    Read,
    Check,
    Presence,
    Count,
    Done,
}

impl Op {
    /// What the op's keys are grouped by on a cluster: the room's name (its keys and
    /// channel carry the hash tag `{ROOM}`), `nodes` for the node list, the channel's
    /// name for a control message. Ops of one group touch one slot, so they may share
    /// a pipeline, and they are sent in order.
    pub(super) fn group(&self) -> Vec<u8> {
        match self {
            Op::Publish { room, .. }
            | Op::Join { room, .. }
            | Op::Leave { room, .. }
            | Op::Check { room, .. }
            | Op::Read { room, .. }
            | Op::Presence { room } => room.as_str().as_bytes().to_vec(),
            Op::Control { channel, .. } => channel.as_bytes().to_vec(),
            Op::Alive { .. } | Op::Beat { .. } => b"nodes".to_vec(),
        }
    }

    pub(super) fn kind(&self) -> OpKind {
        match self {
            Op::Publish { .. } => OpKind::Publish,
            Op::Join { .. } | Op::Read { .. } => OpKind::Read,
            Op::Check { .. } => OpKind::Check,
            Op::Presence { .. } => OpKind::Presence,
            Op::Control { .. } | Op::Alive { .. } => OpKind::Count,
            Op::Leave { .. } | Op::Beat { .. } => OpKind::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> Redis {
        Redis {
            scripts: Scripts::new(true),
            cluster: true,
            node: Arc::from("n1"),
            history: HistoryLimits {
                max_messages: 10,
                max_age_ms: 1000,
            },
            presence_ttl_ms: 1000,
            wait: None,
        }
    }

    /// The hash tag of a command's first key (all of its keys share it).
    fn tag(cmd: &Cmd) -> Vec<u8> {
        let args: Vec<Vec<u8>> = cmd
            .args_iter()
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(b.to_vec()),
                redis::Arg::Cursor => None,
            })
            .collect();
        let key = if args[0] == b"EVALSHA" {
            &args[3]
        } else {
            &args[1]
        };
        let open = key.iter().position(|&b| b == b'{').expect("a hash tag");
        let close = key.iter().position(|&b| b == b'}').expect("a hash tag");
        key[open + 1..close].to_vec()
    }

    #[test]
    fn every_command_of_an_op_is_in_its_groups_slot() {
        let r = redis();
        let room = RoomName::new("team:42").unwrap();
        let info = NodeInfo {
            id: "n1".into(),
            address: "127.0.0.1:1".into(),
            connections: 0,
            rooms: 0,
            since_ms: 0,
        };
        let ops = [
            Op::Publish {
                room: room.clone(),
                id: Some("k1".into()),
                head: Vec::new(),
                tail: Vec::new(),
                known: Arc::from(""),
                last: 0,
            },
            Op::Leave {
                room: room.clone(),
                client: Arc::from("a"),
                presence: true,
            },
            Op::Read {
                room: room.clone(),
                since: None,
                limit: 5,
            },
            Op::Presence { room: room.clone() },
            Op::Alive {
                instance: "0a1b2c3d".into(),
            },
            Op::Beat {
                info,
                now_ms: 1,
                instance: Arc::from("0a1b2c3d"),
                ttl_ms: 5000,
            },
        ];
        for op in &ops {
            for cmd in r.cmds(op) {
                assert_eq!(tag(&cmd), op.group(), "{op:?}");
            }
        }
    }
}
