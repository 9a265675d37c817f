//! The engine: where a room's state lives, behind one seam.
//!
//! Workers hold connections; an engine holds rooms. A worker sends an engine
//! [`HomeMsg`] requests (join, leave, publish, presence, history) and gets back
//! [`LocalMsg`] events on its FIFO inbox (joined with the backlog, deliveries, presence
//! diffs, replies). The worker never knows which engine it talks to:
//!
//! - [`memory`]: the default. Each room has a *home* worker, chosen by hashing its name,
//!   that holds its state ([`crate::hub::Room`]) in memory; nothing to set up.
//! - [`redis`]: rooms live in Redis, shared by every node that uses the same Redis.
//!
//! Everything an engine says goes through the same inbox as everything else a worker
//! hears, so a member sees `joined` and its backlog before any later live message, and a
//! room's messages in offset order, whatever the engine.

pub(crate) mod memory;
mod msg;
pub(crate) mod redis;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;

use tokio::sync::mpsc;

pub(crate) use msg::{
    Addr, CommandAnswer, ConnKey, Disconnected, HomeMsg, Join, LocalMsg, NodeInfo, Publish, Reply,
    RoomInfo, SessionCall, WorkerMsg,
};

use crate::protocol::RoomName;

/// Every worker's inbox.
pub(crate) type Mesh = Arc<[mpsc::UnboundedSender<WorkerMsg>]>;

/// Where a worker sends its room requests.
#[derive(Clone, Debug)]
pub(crate) enum Engine {
    /// Each room's home worker (`HomeMsg` on its inbox).
    Memory,
    /// The node's Redis engine.
    Redis(redis::Handle),
}

impl Engine {
    /// Whether the engine can serve room requests (the memory engine always can).
    pub(crate) fn is_up(&self) -> bool {
        match self {
            Engine::Memory => true,
            Engine::Redis(redis) => redis.is_up(),
        }
    }

    /// The worker whose home `room` is, of `workers` (memory engine).
    pub(crate) fn home_of(room: &RoomName, workers: usize) -> usize {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room.as_str());
        (hash % workers as u64) as usize
    }
}
