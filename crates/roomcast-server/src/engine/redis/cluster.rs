//! What any node can tell of the whole cluster, read from Redis: the live nodes and the
//! rooms. These are reads on the side: they take a clone of the command connection and
//! do not go through the ordered pipeline.
//!
//! | key | type | what |
//! |---|---|---|
//! | `rc:{nodes}` | hash | node id to its [`NodeInfo`] (JSON), rewritten by each beat |
//! | `rc:{nodes}:seen` | sorted set | node id scored by its last beat (ms) |
//! | `rc:{nodes}:inst:INSTANCE` | string | the node id of a live process, expiring after `broker.node_ttl_ms` |

use std::collections::HashSet;
use std::sync::Arc;

use redis::AsyncCommands;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::link::Conn;
use super::scripts::Keys;
use crate::engine::{NodeInfo, RoomInfo};
use crate::protocol::RoomName;

// One hash tag for both, so they share a slot on a cluster.
pub(super) const NODES: &str = "rc:{nodes}";

/// The key that says a node's process (its instance, the prefix of its session ids) is
/// alive: set by each beat, expiring after `broker.node_ttl_ms`.
pub(super) fn instance_key(instance: &str) -> String {
    format!("rc:{{nodes}}:inst:{instance}")
}
pub(super) const SEEN: &str = "rc:{nodes}:seen";

/// Records that `node` is alive now, and that its process `instance` is for `ttl_ms`.
pub(super) fn beat(node: &NodeInfo, now_ms: u64, instance: &str, ttl_ms: u64) -> [redis::Cmd; 3] {
    let json = serde_json::to_string(node).unwrap_or_default();
    let mut info = redis::cmd("HSET");
    info.arg(NODES).arg(&node.id).arg(json);
    let mut seen = redis::cmd("ZADD");
    seen.arg(SEEN).arg(now_ms).arg(&node.id);
    let mut alive = redis::cmd("SET");
    alive
        .arg(instance_key(instance))
        .arg(&node.id)
        .arg("PX")
        .arg(ttl_ms);
    [info, seen, alive]
}

/// The nodes heard from within `ttl_ms`, by id. Clocks of the nodes are assumed to agree
/// within a fraction of the ttl (as NTP keeps them).
pub(super) async fn nodes(mut conn: Conn, ttl_ms: u64) -> redis::RedisResult<Vec<NodeInfo>> {
    if let Conn::Nats(jet) = &conn {
        return jet.nodes(ttl_ms).await.map_err(super::link::nats_error);
    }
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
pub(super) async fn rooms(mut conn: Conn, ttl_ms: u64) -> redis::RedisResult<Vec<RoomInfo>> {
    if let Conn::Nats(jet) = &conn {
        return jet.room_list(ttl_ms).await.map_err(super::link::nats_error);
    }
    let live: HashSet<String> = nodes(conn.clone(), ttl_ms)
        .await?
        .into_iter()
        .map(|n| n.id)
        .collect();
    let mut names = room_names(&mut conn).await?;
    names.sort();
    names.dedup();
    // Four reads per room, of one slot: one pipeline for all rooms on one Redis, one per
    // room (all at once) on a cluster.
    let reads = |name: &RoomName, pipe: &mut redis::Pipeline| {
        let k = Keys::new(name.as_str());
        pipe.cmd("HMGET").arg(k.key("meta")).arg("epoch").arg("top");
        pipe.cmd("HGETALL").arg(k.key("mc"));
        pipe.cmd("HLEN").arg(k.key("pi"));
        pipe.cmd("XLEN").arg(k.key("log"));
    };
    let flat: Vec<redis::Value> = match &conn {
        _ if names.is_empty() => Vec::new(),
        Conn::Single(_) => {
            let mut pipe = redis::pipe();
            for name in &names {
                reads(name, &mut pipe);
            }
            pipe.query_async(&mut conn).await?
        }
        Conn::Nats(_) => Vec::new(),
        Conn::Cluster(_) => {
            let each = names.iter().map(|name| {
                let mut conn = conn.clone();
                let mut pipe = redis::pipe();
                reads(name, &mut pipe);
                async move { pipe.query_async::<Vec<redis::Value>>(&mut conn).await }
            });
            let mut flat = Vec::with_capacity(names.len() * 4);
            for room in futures_util::future::join_all(each).await {
                flat.extend(room?);
            }
            flat
        }
    };
    type Row = (
        (Option<String>, Option<u64>),
        std::collections::HashMap<String, i64>,
        usize,
        usize,
    );
    // Four replies per room, read back as one tuple per room.
    let rows: Vec<Row> = flat
        .chunks(4)
        .map(|c| redis::from_redis_value(&redis::Value::Array(c.to_vec())))
        .collect::<redis::RedisResult<_>>()?;
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

/// The names of the rooms Redis holds (those with a `meta` key), by `SCAN`: on a
/// cluster, of every primary.
async fn room_names(conn: &mut Conn) -> redis::RedisResult<Vec<RoomName>> {
    let mut names = Vec::new();
    match conn {
        Conn::Single(_) => scan(conn, None, &mut names).await?,
        Conn::Nats(_) => {}
        Conn::Cluster(cluster) => {
            let text: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut cluster.clone())
                .await?;
            for (host, port) in primaries(&text) {
                let route =
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                scan(conn, Some(route), &mut names).await?;
            }
        }
    }
    Ok(names)
}

/// Every `rc:{*}:meta` key of one Redis (`route`: which node of a cluster).
async fn scan(
    conn: &mut Conn,
    route: Option<RoutingInfo>,
    names: &mut Vec<RoomName>,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg("rc:{*}:meta")
            .arg("COUNT")
            .arg(1000);
        let value = match (&mut *conn, &route) {
            (Conn::Cluster(c), Some(route)) => c.route_command(&cmd, route.clone()).await?,
            (c, _) => cmd.query_async::<redis::Value>(c).await?,
        };
        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(&value)?;
        names.extend(keys.iter().filter_map(|k| {
            let name = k.strip_prefix("rc:{")?.strip_suffix("}:meta")?;
            RoomName::new(name).ok()
        }));
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The addresses of the primaries that are up, from `CLUSTER NODES`: each line is
/// `ID HOST:PORT@BUS[,NAME] FLAGS ...`, with `master` among the flags of a primary.
fn primaries(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003,h3 master,fail - 0 1 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            super::primaries(text),
            [
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }
}
