//! What any node can tell of the whole cluster, read from Redis: the live nodes and the
//! rooms. These are reads on the side: they take a clone of the command connection and
//! do not go through the ordered pipeline.
//!
//! | key | type | what |
//! |---|---|---|
//! | `rc:nodes` | hash | node id to its [`NodeInfo`] (JSON), rewritten by each beat |
//! | `rc:nodes:seen` | sorted set | node id scored by its last beat (ms) |
//! | `rc:inst:INSTANCE` | string | the node id of a live process, expiring after `broker.node_ttl_ms` |

use std::collections::HashSet;
use std::sync::Arc;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::scripts::Keys;
use crate::engine::{NodeInfo, RoomInfo};
use crate::protocol::RoomName;

pub(super) const NODES: &str = "rc:nodes";

/// The key that says a node's process (its instance, the prefix of its session ids) is
/// alive: set by each beat, expiring after `broker.node_ttl_ms`.
pub(super) fn instance_key(instance: &str) -> String {
    format!("rc:inst:{instance}")
}
pub(super) const SEEN: &str = "rc:nodes:seen";

/// Records that `node` is alive now.
pub(super) fn beat(node: &NodeInfo, now_ms: u64) -> [redis::Cmd; 2] {
    let json = serde_json::to_string(node).unwrap_or_default();
    let mut info = redis::cmd("HSET");
    info.arg(NODES).arg(&node.id).arg(json);
    let mut seen = redis::cmd("ZADD");
    seen.arg(SEEN).arg(now_ms).arg(&node.id);
    [info, seen]
}

/// The nodes heard from within `ttl_ms`, by id. Clocks of the nodes are assumed to agree
/// within a fraction of the ttl (as NTP keeps them).
pub(super) async fn nodes(
    mut conn: MultiplexedConnection,
    ttl_ms: u64,
) -> redis::RedisResult<Vec<NodeInfo>> {
    let conn = &mut conn;
    let since = crate::now_ms().saturating_sub(ttl_ms);
    let ids: Vec<String> = conn.zrangebyscore(SEEN, since, "+inf").await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let infos: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(NODES)
        .arg(&ids)
        .query_async(conn)
        .await?;
    let mut nodes: Vec<NodeInfo> = infos
        .into_iter()
        .flatten()
        .filter_map(|j| serde_json::from_str(&j).ok())
        .collect();
    nodes.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(nodes)
}

/// Every room with members on a live node or with retained history.
pub(super) async fn rooms(
    mut conn: MultiplexedConnection,
    ttl_ms: u64,
) -> redis::RedisResult<Vec<RoomInfo>> {
    let live: HashSet<String> = nodes(conn.clone(), ttl_ms)
        .await?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let conn = &mut conn;
    let mut names = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("rc:{*}:meta")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        names.extend(keys.iter().filter_map(|k| {
            let name = k.strip_prefix("rc:{")?.strip_suffix("}:meta")?;
            RoomName::new(name).ok()
        }));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    names.sort();
    names.dedup();
    let mut pipe = redis::pipe();
    for name in &names {
        let k = Keys::new(name.as_str());
        pipe.cmd("HMGET").arg(k.key("meta")).arg("epoch").arg("top");
        pipe.cmd("HGETALL").arg(k.key("mc"));
        pipe.cmd("HLEN").arg(k.key("pi"));
        pipe.cmd("XLEN").arg(k.key("log"));
    }
    type Row = (
        (Option<String>, Option<u64>),
        std::collections::HashMap<String, i64>,
        usize,
        usize,
    );
    let rows: Vec<Row> = if names.is_empty() {
        Vec::new()
    } else {
        // Four replies per room, read back as one tuple per room.
        let flat: Vec<redis::Value> = pipe.query_async(conn).await?;
        flat.chunks(4)
            .map(|c| redis::from_redis_value(&redis::Value::Array(c.to_vec())))
            .collect::<redis::RedisResult<_>>()?
    };
    let mut out = Vec::new();
    for (name, ((epoch, top), per_node, visible, retained)) in names.into_iter().zip(rows) {
        let members: i64 = per_node
            .iter()
            .filter(|(node, _)| live.contains(*node))
            .map(|(_, n)| (*n).max(0))
            .sum();
        let Some(epoch) = epoch else { continue };
        if members == 0 && retained == 0 {
            continue;
        }
        out.push(RoomInfo {
            room: name,
            epoch: Arc::from(epoch),
            last_offset: top.unwrap_or(0),
            members: u32::try_from(members).unwrap_or(u32::MAX),
            visible,
        });
    }
    Ok(out)
}
