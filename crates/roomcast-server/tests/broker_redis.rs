//! Many nodes, one set of rooms: nodes sharing a real Redis (Debian's `redis-server`,
//! started here on a free loopback port and stopped by its process id).
//!
//! Each test runs its own Redis and three in-process nodes; the members are real `/ws`
//! clients and SSE streams. Counts are checked exactly: every acked message arrives once,
//! in offset order, on every node.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, Sse, TestServer, within};
use serde_json::{Value, json};

#[macro_use]
#[path = "support/brokers.rs"]
mod brokers;

use brokers::{Broker, Kind};

/// The test's broker: one Redis, or a Redis Cluster (see `support/brokers.rs`).
type Redis = Broker;

on_every_broker!(
    order_and_exactly_once_across_three_nodes,
    a_retry_on_another_node_gets_the_first_offset_and_is_not_delivered_again,
    a_member_recovers_on_another_node_with_exactly_what_it_missed,
    history_and_presence_are_the_clusters,
    the_api_of_any_node_answers_for_the_cluster,
    a_message_whose_live_copy_was_lost_is_read_from_the_stream,
    redis_restarted_with_aof_loses_nothing_acked_and_says_unavailable_meanwhile,
    redis_restarted_without_persistence_gives_a_new_epoch_never_a_silent_hole,
    a_room_whose_history_aged_out_goes_on_from_its_offset_on_any_node,
    history_keeps_its_bounds_in_redis,
    a_poll_session_goes_on_at_any_node_and_takes_commands_from_any_node,
    a_disconnect_through_any_node_closes_the_client_everywhere,
    one_forwarded_poll_per_session_waits_at_a_time,
    tokens_hold_on_every_node_and_for_commands_forwarded_to_another,
    the_broker_restarted_mid_stream_with_aof_loses_nothing_acked,
    the_broker_paused_answers_unavailable_and_acks_nothing_half_done,
);

on_nats_too!(
    order_and_exactly_once_across_three_nodes,
    a_retry_on_another_node_gets_the_first_offset_and_is_not_delivered_again,
    a_member_recovers_on_another_node_with_exactly_what_it_missed,
    history_and_presence_are_the_clusters,
    the_api_of_any_node_answers_for_the_cluster,
    redis_restarted_with_aof_loses_nothing_acked_and_says_unavailable_meanwhile,
    redis_restarted_without_persistence_gives_a_new_epoch_never_a_silent_hole,
    a_room_whose_history_aged_out_goes_on_from_its_offset_on_any_node,
    a_poll_session_goes_on_at_any_node_and_takes_commands_from_any_node,
    a_disconnect_through_any_node_closes_the_client_everywhere,
    one_forwarded_poll_per_session_waits_at_a_time,
    tokens_hold_on_every_node_and_for_commands_forwarded_to_another,
    the_broker_restarted_mid_stream_with_aof_loses_nothing_acked,
    a_message_whose_live_copy_was_lost_is_read_from_the_stream,
    the_broker_paused_answers_unavailable_and_acks_nothing_half_done,
);

/// A command connection of the test's own to the broker, for reading and changing what
/// the engine keeps there: a multiplexed connection, or a cluster connection.
#[derive(Clone)]
enum Direct {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Direct {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Direct::Single(c) => c.req_packed_command(cmd),
            Direct::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Direct::Single(c) => c.req_packed_commands(cmd, offset, count),
            Direct::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        0
    }
}

async fn direct(redis: &Broker) -> Direct {
    match redis.kind {
        Kind::Redis => {
            let client = redis::Client::open(redis.url()).unwrap();
            Direct::Single(client.get_multiplexed_async_connection().await.unwrap())
        }
        Kind::RedisCluster => {
            let client = redis::cluster::ClusterClient::new(redis.seeds()).unwrap();
            Direct::Cluster(client.get_async_connection().await.unwrap())
        }
        Kind::Nats => panic!("a Redis-only test ran on NATS"),
    }
}

/// Cuts the pub/sub connections of every node, the command connections staying: on one
/// Redis `CLIENT KILL TYPE pubsub`. On a cluster, a node's pushes share its RESP3
/// connections with its commands (Redis counts them as `normal`), so those are cut; on
/// NATS too, through the proxy the nodes connect by ([`Broker::proxied`]).
fn cut_pubsub(redis: &Broker) {
    let kind = match redis.kind {
        Kind::Redis => "pubsub",
        Kind::RedisCluster => "normal",
        // One connection carries a node's subscriptions and commands: it is cut.
        Kind::Nats => return redis.cut(),
    };
    redis.cli_all(&["CLIENT", "KILL", "TYPE", kind]);
}

async fn node(redis: &Redis, name: &str) -> TestServer {
    node_with(redis, name, |_| {}).await
}

/// [`node`] with more settings.
async fn node_with(
    redis: &Redis,
    name: &str,
    more: impl FnOnce(&mut roomcast_server::Config),
) -> TestServer {
    let url = redis.url();
    let name = name.to_owned();
    let server = common::start(move |c| {
        c.broker.url = url;
        c.server.node_id = name;
        c.broker.presence_ttl_ms = 1500;
        more(c);
    })
    .await;
    // Connected to Redis before the test goes on.
    within("the node reaching Redis", Duration::from_secs(10), async {
        loop {
            let (_, _, body) =
                common::exchange(common::http().get(format!("http://{}/healthz", server.addr)))
                    .await;
            if body == "ok\n" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server
}

/// Nodes named `names` on `redis`, each connected to it.
async fn nodes<const N: usize>(redis: &Redis, names: [&str; N]) -> [TestServer; N] {
    let mut started = Vec::with_capacity(N);
    for name in names {
        started.push(node(redis, name).await);
    }
    started
        .try_into()
        .unwrap_or_else(|_| unreachable!("one node per name"))
}

/// Reads `message` pushes until `n` arrived; returns `(offset, data)` in arrival order.
async fn messages(c: &mut Client, n: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = c.next_of("message").await;
        got.push((m["offset"].as_u64().unwrap(), m["data"].clone()));
    }
    got
}

/// Every offset from `first` on, once, in order; and each publisher's messages in the
/// order it sent them, each once.
fn check_exact(got: &[(u64, Value)], first: u64, publishers: usize, per: usize, who: &str) {
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    let want: Vec<u64> = (first..first + (publishers * per) as u64).collect();
    assert_eq!(offsets, want, "{who}: offsets");
    let mut next: HashMap<u64, u64> = HashMap::new();
    for (_, d) in got {
        let p = d["p"].as_u64().unwrap();
        let i = d["i"].as_u64().unwrap();
        let n = next.entry(p).or_default();
        assert_eq!(i, *n, "{who}: publisher {p} out of order or repeated");
        *n += 1;
    }
    assert!(next.values().all(|&n| n == per as u64), "{who}: {next:?}");
}

async fn order_and_exactly_once_across_three_nodes(kind: Kind) {
    let redis = Redis::start(kind, false);
    let nodes = [
        node(&redis, "n1").await,
        node(&redis, "n2").await,
        node(&redis, "n3").await,
    ];
    let mut members = Vec::new();
    let mut epochs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut c = Client::hello(n.addr, &format!("m{i}")).await;
        let j = c.join("feed").await;
        epochs.push(j["epoch"].clone());
        members.push(c);
    }
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one epoch on every node before the first message: {epochs:?}"
    );
    let mut sse = Sse::open(nodes[1].addr, "client=s&room=feed", None).await;
    assert_eq!(sse.next_of("joined").await["epoch"], epochs[0]);
    let poll = common::poll_past_joined(nodes[2].addr, "client=q&room=feed", 1).await;

    const PER: usize = 60;
    let mut tasks = Vec::new();
    for (p, n) in nodes.iter().enumerate() {
        let addr: SocketAddr = n.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::hello(addr, &format!("pub{p}")).await;
            c.join("feed").await;
            let mut acked = Vec::new();
            for i in 0..PER {
                let a = c
                    .request(json!({"type":"publish","room":"feed","data":{"p":p,"i":i},"id":format!("{p}-{i}")}))
                    .await;
                assert_eq!(a["type"], "ack", "{a}");
                acked.push(a["offset"].as_u64().unwrap());
            }
            acked
        }));
    }
    let mut all_acked = Vec::new();
    for t in tasks {
        all_acked.extend(
            within("publishers", Duration::from_secs(60), t)
                .await
                .unwrap(),
        );
    }
    all_acked.sort();
    assert_eq!(
        all_acked,
        (1..=(3 * PER) as u64).collect::<Vec<_>>(),
        "acks"
    );
    for (i, c) in members.iter_mut().enumerate() {
        let got = messages(c, 3 * PER).await;
        check_exact(&got, 1, 3, PER, &format!("member on node {i}"));
    }
    let mut got = Vec::new();
    while got.len() < 3 * PER {
        let m = sse.next_of("message").await;
        got.push((m["offset"].as_u64().unwrap(), m["data"].clone()));
    }
    check_exact(&got, 1, 3, PER, "SSE member");
    let (polled, _, _) =
        common::poll_messages(nodes[2].addr, &format!("cursor={poll}"), 3 * PER).await;
    let got: Vec<(u64, Value)> = polled
        .iter()
        .map(|m| (m["offset"].as_u64().unwrap(), m["data"].clone()))
        .collect();
    check_exact(&got, 1, 3, PER, "long-poll member");
}

async fn a_retry_on_another_node_gets_the_first_offset_and_is_not_delivered_again(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut watcher = Client::hello(b.addr, "w").await;
    watcher.join("r").await;
    let mut p1 = Client::hello(a.addr, "p").await;
    p1.join("r").await;
    let first = p1
        .request(json!({"type":"publish","room":"r","data":1,"id":"once"}))
        .await;
    let mut p2 = Client::hello(b.addr, "p").await;
    p2.join("r").await;
    let retry = p2
        .request(json!({"type":"publish","room":"r","data":1,"id":"once"}))
        .await;
    assert_eq!(first["offset"], retry["offset"], "{first} {retry}");
    let next = p2.publish("r", json!(2)).await;
    assert_eq!(
        next["offset"].as_u64(),
        first["offset"].as_u64().map(|o| o + 1)
    );
    let got = messages(&mut watcher, 2).await;
    assert_eq!(
        got,
        vec![(1, json!(1)), (2, json!(2))],
        "delivered once each"
    );
}

async fn a_member_recovers_on_another_node_with_exactly_what_it_missed(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut p = Client::hello(a.addr, "p").await;
    p.join("room").await;
    let mut m = Client::hello(a.addr, "m").await;
    let joined = m.join("room").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    for i in 0..5 {
        p.publish("room", json!(i)).await;
    }
    let seen = messages(&mut m, 5).await;
    drop(m);
    for i in 5..12 {
        p.publish("room", json!(i)).await;
    }
    let mut m = Client::hello(b.addr, "m").await;
    let last = seen.last().unwrap().0;
    let j = m
        .request(json!({"type":"join","room":"room","since":{"epoch":epoch,"offset":last}}))
        .await;
    assert_eq!(j["recovered"], true, "{j}");
    assert_eq!(j["offset"], 12, "{j}");
    let missed = messages(&mut m, 7).await;
    assert_eq!(
        missed,
        (6..=12).map(|o| (o, json!(o - 1))).collect::<Vec<_>>()
    );
    // Live ones follow, once.
    p.publish("room", json!(12)).await;
    assert_eq!(messages(&mut m, 1).await, vec![(13, json!(12))]);
    // A position of another epoch cannot be recovered.
    let mut other = Client::hello(b.addr, "o").await;
    let j = other
        .request(json!({"type":"join","room":"room","since":{"epoch":"nope","offset":3}}))
        .await;
    assert_eq!(j["recovered"], false, "{j}");
}

async fn history_and_presence_are_the_clusters(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut ann = Client::hello(a.addr, "ann").await;
    ann.request(json!({"type":"join","room":"h","presence":{"n":1}}))
        .await;
    let mut bob = Client::hello(b.addr, "bob").await;
    bob.request(json!({"type":"join","room":"h","presence":{"n":2}}))
        .await;
    // The same client on two nodes is one member.
    let mut ann2 = Client::hello(b.addr, "ann").await;
    ann2.request(json!({"type":"join","room":"h","presence":{"n":1}}))
        .await;
    for i in 0..3 {
        ann.publish("h", json!(i)).await;
    }
    let h = bob.request(json!({"type":"history","room":"h"})).await;
    assert_eq!(common::message_offsets(&h), vec![1, 2, 3], "{h}");
    let p = bob.request(json!({"type":"presence","room":"h"})).await;
    let clients: Vec<&str> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, vec!["ann", "bob"], "{p}");
    // ann leaves one node but is still on the other: still listed, and no `left`.
    drop(ann);
    // ann's leave on node a has run once the cluster counts two members.
    common::wait_for_members(b.addr, "h", 2).await;
    // A presence batch later, whatever the leave caused has reached bob.
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.request(json!({"type":"ping"})).await;
    let wrong_left = bob.backlog.iter().any(|m| {
        m["type"] == "presence_diff"
            && m["left"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["client"] == "ann")
    });
    assert!(!wrong_left, "ann is still on node b: {:?}", bob.backlog);
    let p = bob.request(json!({"type":"presence","room":"h"})).await;
    assert_eq!(p["members"].as_array().unwrap().len(), 2, "{p}");
    drop(ann2);
    let diff = within("ann's left diff", Duration::from_secs(5), async {
        loop {
            let d = bob.next_of("presence_diff").await;
            if !d["left"].as_array().unwrap().is_empty() {
                return d;
            }
        }
    })
    .await;
    assert_eq!(diff["left"], json!([{"client": "ann"}]), "{diff}");
}

async fn the_api_of_any_node_answers_for_the_cluster(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    m.request(json!({"type":"join","room":"api","presence":{}}))
        .await;
    let mut n = Client::hello(a.addr, "n").await;
    n.join("api").await;
    // A publish through node a's API reaches the member on node b.
    let offset = common::api_publish(a.addr, "api", json!("from the backend")).await;
    let got = m.next_of("message").await;
    assert_eq!(
        (got["offset"].as_u64(), got["data"].clone()),
        (Some(offset), json!("from the backend"))
    );
    // Each node's stats name what carries the rooms.
    let carrier = match kind {
        Kind::Redis => "redis",
        Kind::RedisCluster => "redis-cluster",
        Kind::Nats => "nats",
    };
    let (status, v) = common::api(a.addr, "GET", "/api/stats", None).await;
    assert_eq!((status, v["broker"].as_str()), (200, Some(carrier)), "{v}");
    // Both nodes list the room with its members on both, and both nodes.
    for node in [a.addr, b.addr] {
        let (status, v) = common::api(node, "GET", "/api/rooms", None).await;
        assert_eq!(status, 200, "{v}");
        let room = v["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == "api")
            .cloned();
        let room = room.unwrap_or_else(|| panic!("no room api in {v}"));
        assert_eq!(
            (
                room["members"].as_u64(),
                room["visible"].as_u64(),
                room["last_offset"].as_u64()
            ),
            (Some(2), Some(1), Some(offset)),
            "{v}"
        );
        let (status, v) = common::api(node, "GET", "/api/nodes", None).await;
        assert_eq!(status, 200, "{v}");
        let ids: Vec<&str> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"], "{v}");
        let addresses: Vec<String> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["address"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(addresses, [a.addr.to_string(), b.addr.to_string()], "{v}");
    }
    // History and presence through the other node's API.
    let (status, v) = common::api(a.addr, "GET", "/api/rooms/api/presence", None).await;
    assert_eq!(
        (status, v["members"][0]["client"].as_str()),
        (200, Some("m")),
        "{v}"
    );
    let (status, v) = common::api(a.addr, "GET", "/api/rooms/api/history", None).await;
    assert_eq!(
        (status, v["messages"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{v}"
    );
}

async fn a_message_whose_live_copy_was_lost_is_read_from_the_stream(kind: Kind) {
    let redis = Redis::start(kind, false).proxied();
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    m.join("lossy").await;
    let mut p = Client::hello(a.addr, "p").await;
    let epoch = p.join("lossy").await["epoch"].as_str().unwrap().to_owned();
    p.publish("lossy", json!(1)).await;
    assert_eq!(messages(&mut m, 1).await, vec![(1, json!(1))]);
    // Message 2 is stored as a publish stores it, but its live copy never comes: what
    // Redis pub/sub or core NATS may do under pressure. The periodic check finds it.
    store_only(&redis, "lossy", &epoch, 2).await;
    assert_eq!(
        within(
            "the lost message, from the stream",
            Duration::from_secs(5),
            messages(&mut m, 1)
        )
        .await,
        vec![(2, json!(2))]
    );
    // A gap seen live is filled before what comes after it: 3 is lost, 4 is published.
    store_only(&redis, "lossy", &epoch, 3).await;
    p.publish("lossy", json!(4)).await;
    assert_eq!(
        messages(&mut m, 2).await,
        vec![(3, json!(3)), (4, json!(4))]
    );
    // The subscriptions cut (and with them, but for one Redis, the commands' connections):
    // node b reconnects and catches up with what was published meanwhile, once each.
    cut_pubsub(&redis);
    for i in 5..8 {
        // Node a was cut too and is reconnecting: the same id again is safe.
        let publish = json!({"type":"publish","room":"lossy","data":i,"id":format!("k{i}")});
        ack_of(&mut p, publish, Duration::from_secs(10)).await;
    }
    assert_eq!(
        messages(&mut m, 3).await,
        (5..8).map(|i| (i, json!(i))).collect::<Vec<_>>()
    );
    nothing_more(&mut m, &mut p, "lossy", "m").await;
}

/// Stores message `offset` of `room` (data: the offset) as a publish would, without
/// its live copy.
async fn store_only(redis: &Broker, room: &str, epoch: &str, offset: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let json = format!(
        r#"{{"type":"message","room":"{room}","epoch":"{epoch}","offset":{offset},"from":"p","data":{offset},"ts":{now}}}"#
    );
    if redis.kind == Kind::Nats {
        let nats = async_nats::connect(redis.url()).await.unwrap();
        let js = async_nats::jetstream::new(nats);
        let hex: String = room.bytes().map(|b| format!("{b:02x}")).collect();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Rc-Epoch", epoch);
        headers.insert("Rc-Offset", offset.to_string().as_str());
        headers.insert("Rc-Ts", now.to_string().as_str());
        js.publish_with_headers(format!("rc.s.{hex}"), headers, json.into())
            .await
            .unwrap()
            .await
            .unwrap();
        return;
    }
    let mut conn = direct(redis).await;
    let meta = format!("rc:{{{room}}}:meta");
    let top: u64 = redis::cmd("HINCRBY")
        .arg(&meta)
        .arg("top")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(top, offset);
    let _: String = redis::cmd("XADD")
        .arg(format!("rc:{{{room}}}:log"))
        .arg(format!("{offset}-0"))
        .arg("t")
        .arg(now)
        .arg("j")
        .arg(&json)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn redis_restarted_with_aof_loses_nothing_acked_and_says_unavailable_meanwhile(kind: Kind) {
    let mut redis = Redis::start(kind, true);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut p = Client::hello(a.addr, "p").await;
    let epoch = p.join("d").await["epoch"].as_str().unwrap().to_owned();
    let mut m = Client::hello(b.addr, "m").await;
    m.join("d").await;
    for i in 0..10 {
        p.publish("d", json!(i)).await;
    }
    assert_eq!(messages(&mut m, 10).await.last().unwrap().0, 10);
    redis.kill();
    // While Redis is down: a publish answers `unavailable`, never an ack (Redis cannot
    // have stored it).
    let r = p
        .request(json!({"type":"publish","room":"d","data":"x","id":"during"}))
        .await;
    assert_eq!(r["type"], "error", "an ack while Redis was down: {r}");
    assert_eq!(r["code"], "unavailable", "{r}");
    for ask in [
        json!({"type":"presence","room":"d"}),
        json!({"type":"history","room":"d"}),
    ] {
        let r = p.request(ask).await;
        assert_eq!(r["code"], "unavailable", "{r}");
    }
    let (_, _, health) =
        common::exchange(common::http().get(format!("http://{}/healthz", a.addr))).await;
    assert_eq!(health, "ok, broker unreachable\n");
    let (status, v) = common::api(a.addr, "GET", "/api/rooms", None).await;
    assert_eq!(status, 503, "{v}");
    let (status, v) = common::api(
        a.addr,
        "POST",
        "/api/publish",
        Some(json!({"room":"d","data":1})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    let j = Client::hello(b.addr, "late")
        .await
        .request(json!({"type":"join","room":"d"}))
        .await;
    assert_eq!(j["code"], "unavailable", "{j}");
    // A disconnect closes this node's own and says the others could not be asked.
    let _banned = Client::hello(a.addr, "banned").await;
    let (status, v) = common::api(
        a.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client":"banned"})),
    )
    .await;
    assert_eq!(
        (status, v),
        (200, json!({"disconnected": 1, "unanswered": 1}))
    );
    redis.spawn();
    // Back within a few seconds; the room's epoch and messages are there.
    let publish = json!({"type":"publish","room":"d","data":10,"id":"after"});
    let (ack, _) = ack_of(&mut p, publish, Duration::from_secs(10)).await;
    assert_eq!(ack["offset"], 11, "{ack}");
    // The member that stayed connected gets it, once, in order.
    assert_eq!(messages(&mut m, 1).await, vec![(11, json!(10))]);
    let mut r = Client::hello(b.addr, "r").await;
    let j = r
        .request(json!({"type":"join","room":"d","since":{"epoch":epoch,"offset":0}}))
        .await;
    assert_eq!(j["recovered"], true, "same epoch after an AOF restart: {j}");
    assert_eq!(messages(&mut r, 11).await.len(), 11);
}

async fn redis_restarted_without_persistence_gives_a_new_epoch_never_a_silent_hole(kind: Kind) {
    let mut redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut p = Client::hello(a.addr, "p").await;
    let epoch = p.join("e").await["epoch"].as_str().unwrap().to_owned();
    let mut m = Client::hello(b.addr, "m").await;
    m.request(json!({"type":"join","room":"e","presence":{"here":true}}))
        .await;
    for i in 0..3 {
        p.publish("e", json!(i)).await;
    }
    messages(&mut m, 3).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.spawn();
    let publish = json!({"type":"publish","room":"e","data":"new","id":"new"});
    ack_of(&mut p, publish, Duration::from_secs(10)).await;
    // The member is told its history broke off before it gets anything of the new epoch.
    let reset = m.next_of("joined").await;
    assert_eq!(reset["recovered"], false, "{reset}");
    assert_ne!(reset["epoch"], epoch, "{reset}");
    let next = m.next_of("message").await;
    assert_eq!(next["epoch"], reset["epoch"], "{next}");
    // A recovery from the old epoch says so.
    let mut r = Client::hello(b.addr, "r").await;
    let j = r
        .request(json!({"type":"join","room":"e","since":{"epoch":epoch,"offset":3}}))
        .await;
    assert_eq!(j["recovered"], false, "{j}");
    // Redis lost the presence too: node b puts its member back.
    within("m listed again", Duration::from_secs(5), async {
        loop {
            let v = r.request(json!({"type":"presence","room":"e"})).await;
            if v["members"] == json!([{"client":"m","info":{"here":true}}]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A room whose messages all aged out while no node had it goes on at its offset, in
/// its epoch, on whichever node publishes next (one that never had the room, here): the
/// broker keeps the room's place, not a node, and a recovery from before the silence is
/// exact.
async fn a_room_whose_history_aged_out_goes_on_from_its_offset_on_any_node(kind: Kind) {
    let redis = Redis::start(kind, false);
    let age = |c: &mut roomcast_server::Config| c.rooms.history_max_age_ms = 300;
    let a = node_with(&redis, "a", age).await;
    let b = node_with(&redis, "b", age).await;
    let mut p = Client::hello(a.addr, "p").await;
    let epoch = p.join("g").await["epoch"].as_str().unwrap().to_owned();
    let mut m = Client::hello(a.addr, "m").await;
    m.join("g").await;
    for i in 1..=3 {
        p.publish("g", json!(i)).await;
    }
    assert_eq!(messages(&mut m, 3).await.last().unwrap().0, 3);
    // Everyone leaves: no node has the room while its history ages out.
    for c in [&mut p, &mut m] {
        let left = c.request(json!({"type":"leave","room":"g"})).await;
        assert_eq!(left["type"], "left", "{left}");
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let h = p.request(json!({"type":"history","room":"g"})).await;
    assert_eq!(common::message_offsets(&h), Vec::<u64>::new(), "{h}");
    // Node b meets the room only now: it learns the room's place from the broker.
    let mut q = Client::hello(b.addr, "q").await;
    let j = q.join("g").await;
    assert_eq!(
        (j["epoch"].as_str(), j["offset"].as_u64()),
        (Some(epoch.as_str()), Some(3)),
        "{j}"
    );
    let ack = q
        .request(json!({"type":"publish","room":"g","data":"after"}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["offset"].as_u64()),
        (Some("ack"), Some(4)),
        "{ack}"
    );
    // Back from before the silence, on either node: exact.
    for c in [&mut m, &mut Client::hello(b.addr, "r").await] {
        let j = c
            .request(json!({"type":"join","room":"g","since":{"epoch":epoch,"offset":3}}))
            .await;
        assert_eq!(
            (j["recovered"].as_bool(), j["offset"].as_u64()),
            (Some(true), Some(4)),
            "{j}"
        );
        let next = c.next_of("message").await;
        assert_eq!(
            (next["offset"].as_u64(), &next["data"]),
            (Some(4), &json!("after")),
            "{next}"
        );
    }
}

async fn history_keeps_its_bounds_in_redis(kind: Kind) {
    let redis = Redis::start(kind, false);
    let url = redis.url();
    let s = common::start(move |c| {
        c.broker.url = url;
        c.rooms.history_max_age_ms = 300;
        c.rooms.history_max_messages = 5;
    })
    .await;
    let mut p = Client::hello(s.addr, "p").await;
    // The node may still be connecting: the first join answers once it is.
    within("the first join", Duration::from_secs(10), async {
        loop {
            let j = p.request(json!({"type":"join","room":"b"})).await;
            if j["type"] == "joined" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for i in 0..8 {
        p.publish("b", json!(i)).await;
    }
    let mut conn = direct(&redis).await;
    let xlen = |conn: &mut Direct| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("XLEN")
                .arg("rc:{b}:log")
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    assert_eq!(xlen(&mut conn).await, 5, "trimmed to history_max_messages");
    let h = p.request(json!({"type":"history","room":"b"})).await;
    assert_eq!(common::message_offsets(&h), vec![4, 5, 6, 7, 8]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past the age: not served, and dropped from the stream by the next publish.
    let h = p.request(json!({"type":"history","room":"b"})).await;
    assert_eq!(common::message_offsets(&h), Vec::<u64>::new(), "{h}");
    p.publish("b", json!(8)).await;
    assert_eq!(
        xlen(&mut conn).await,
        1,
        "the old entries went with the publish"
    );
}

/// `POST /cmd?session=...` on `addr`: status and JSON.
async fn cmd(addr: SocketAddr, session: &str, body: Value) -> (u16, Value) {
    let req = common::http()
        .post(format!("http://{addr}/cmd?session={session}"))
        .body(body.to_string());
    let (status, _, text) = common::exchange(req).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("/cmd: {e}: {text:?}"));
    (status, v)
}

/// One poll of `url`: its events and its cursor.
async fn poll_once(url: &str) -> (Vec<Value>, String) {
    let v = common::get_json(url).await;
    let events = v["events"].as_array().unwrap().clone();
    (events, v["cursor"].as_str().unwrap().to_owned())
}

/// The `(room, offset)` of every `message` among `events`.
fn positions_of(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| {
            (
                e["room"].as_str().unwrap().to_owned(),
                e["offset"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn a_poll_session_goes_on_at_any_node_and_takes_commands_from_any_node(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b, c] = nodes(&redis, ["a", "b", "c"]).await;
    // A session on node a, visible in room p.
    let first = "room=p&client=carol&presence=%7B%22name%22%3A%22C%22%7D";
    let cursor = common::poll_past_joined(a.addr, first, 1).await;
    let v = common::get_json(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=10",
        a.addr
    ))
    .await;
    let session = v["session"].as_str().unwrap().to_owned();

    // Its commands through node b reach it on node a: a join and a publish in one request,
    // in order, and a single command's error reply with its status.
    let (status, v) = cmd(
        b.addr,
        &session,
        json!([
            {"type":"join","room":"q","presence":{"n":1},"ref":1},
            {"type":"publish","room":"q","data":"q1","id":"k-q1","ref":2}
        ]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v[0]["type"].as_str(), v[0]["ref"].as_u64()),
        (Some("joined"), Some(1)),
        "{v}"
    );
    assert_eq!(
        (v[1]["type"].as_str(), v[1]["offset"].as_u64()),
        (Some("ack"), Some(1)),
        "{v}"
    );
    let (status, v) = cmd(
        c.addr,
        &session,
        json!({"type":"publish","room":"nope","data":1,"ref":3}),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str(), v["ref"].as_u64()),
        (409, Some("not_joined"), Some(3)),
        "{v}"
    );
    // A session id no node has (no node of that prefix; node a's prefix, but not one
    // of its sessions): 404.
    for unknown in ["ffffffff0000".to_owned(), format!("{}0000", &session[..8])] {
        let (status, v) = cmd(c.addr, &unknown, json!({"type":"ping"})).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{unknown}: {v}"
        );
    }

    // Five messages; the session on node a reads some of them.
    for i in 0..5 {
        common::api_publish(c.addr, "p", json!(i)).await;
    }
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut url = format!("http://{}/poll?cursor={cursor}&timeout_ms=2000", a.addr);
    let started = std::time::Instant::now();
    while seen.iter().filter(|(r, _)| r == "p").count() < 3 {
        assert!(started.elapsed() < Duration::from_secs(30), "{seen:?}");
        let (events, next) = poll_once(&url).await;
        seen.extend(positions_of(&events));
        url = format!(
            "http://{}/poll?cursor={next}&timeout_ms=2000&limit=2",
            a.addr
        );
    }
    let cursor = url
        .split("cursor=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    for i in 5..10 {
        common::api_publish(c.addr, "p", json!(i)).await;
    }

    // The cursor on node b while node a holds the session: forwarded, the same session
    // goes on (no new welcome), from the cursor.
    let v = common::get_json(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=2000&limit=3",
        b.addr
    ))
    .await;
    assert_eq!(v["session"], json!(session), "{v}");
    let events = v["events"].as_array().unwrap();
    assert!(!events.is_empty(), "{v}");
    assert!(events.iter().all(|e| e["type"] != "welcome"), "{v}");
    seen.extend(positions_of(events));
    let cursor = v["cursor"].as_str().unwrap().to_owned();

    // Node a stopped (its engine took itself off the list of nodes as it went): the same
    // cursor on node c opens a new session there, as carol, in both rooms, visible with
    // the same info, with exactly the messages the cursor had not acknowledged.
    a.stop.shutdown();
    within(
        "node a off the list of nodes",
        Duration::from_secs(20),
        async {
            loop {
                let (_, v) = common::api(b.addr, "GET", "/api/nodes", None).await;
                if !v["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["id"] == "a")
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let (status, v) = cmd(b.addr, &session, json!({"type":"ping"})).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "a session whose node is gone: {v}"
    );
    let mut url = format!("http://{}/poll?cursor={cursor}&timeout_ms=2000", c.addr);
    let mut moved = None;
    let mut joined = Vec::new();
    for _ in 0..30 {
        // Rooms are not ordered with each other (on a cluster they live on different
        // primaries): wait for both rooms' rejoin, and p's messages.
        if seen.iter().filter(|(r, _)| r == "p").count() >= 10 && joined.len() >= 2 {
            break;
        }
        let v = common::get_json(&url).await;
        let events = v["events"].as_array().unwrap();
        for e in events {
            match e["type"].as_str() {
                Some("welcome") => {
                    assert_eq!(
                        (e["client"].as_str(), e["node"].as_str()),
                        (Some("carol"), Some("c")),
                        "{e}"
                    );
                }
                Some("joined") => {
                    assert_eq!(e["recovered"], true, "{e}");
                    joined.push(e["room"].as_str().unwrap().to_owned());
                }
                _ => {}
            }
        }
        seen.extend(positions_of(events));
        moved = Some(v["session"].as_str().unwrap().to_owned());
        url = format!(
            "http://{}/poll?cursor={}&timeout_ms=2000",
            c.addr,
            v["cursor"].as_str().unwrap()
        );
    }
    joined.sort();
    assert_eq!(joined, ["p", "q"], "both rooms rejoined");
    let moved = moved.unwrap();
    assert_ne!(moved, session, "a new session on node c");
    let mut expected: Vec<(String, u64)> = (1..=10).map(|o| ("p".to_owned(), o)).collect();
    expected.push(("q".to_owned(), 1));
    let mut got = seen.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "every message once, none lost, none twice: {seen:?}"
    );
    for (room, info) in [("p", json!({"name":"C"})), ("q", json!({"n":1}))] {
        let (status, v) =
            common::api(b.addr, "GET", &format!("/api/rooms/{room}/presence"), None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            v["members"],
            json!([{"client":"carol","info":info}]),
            "{room}: {v}"
        );
    }

    // The new session's commands from node b, and its messages on node c.
    let (status, v) = cmd(
        b.addr,
        &moved,
        json!({"type":"publish","room":"q","data":"q2","ref":4}),
    )
    .await;
    assert_eq!((status, v["offset"].as_u64()), (200, Some(2)), "{v}");
    let (events, _) = poll_once(&url).await;
    assert_eq!(positions_of(&events), [("q".to_owned(), 2)]);
}

async fn a_disconnect_through_any_node_closes_the_client_everywhere(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b, c] = nodes(&redis, ["a", "b", "c"]).await;
    let mut on_a = Client::hello(a.addr, "victim").await;
    let mut on_b = Client::hello(b.addr, "victim").await;
    let mut sse = Sse::open(b.addr, "room=d&client=victim", None).await;
    sse.next_of("joined").await;
    let mut bystander = Client::hello(c.addr, "bystander").await;
    bystander.join("d").await;
    let (status, v) = common::api(
        c.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "victim", "code": 4010, "reason": "banned"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"disconnected": 3}),
        "two sockets and a stream, on two other nodes"
    );
    for ws in [&mut on_a, &mut on_b] {
        let mut code = None;
        within("the socket closes", Duration::from_secs(5), async {
            while let Some(msg) = ws.ws.recv().await {
                if let Ok(roomcast_ws::Message::Close(f)) = msg {
                    code = f.map(|f| (f.code.0, f.reason.to_string()));
                }
            }
        })
        .await;
        assert_eq!(code, Some((4010, "banned".to_owned())));
    }
    assert!(sse.ended().await, "the stream ends");
    // Others stay.
    let pong = bystander.request(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    let (_, v) = common::api(
        a.addr,
        "POST",
        "/api/disconnect",
        Some(json!({"client": "victim"})),
    )
    .await;
    assert_eq!(v, json!({"disconnected": 0}));
}

async fn one_forwarded_poll_per_session_waits_at_a_time(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b, c] = nodes(&redis, ["a", "b", "c"]).await;
    let cursor = common::poll_past_joined(a.addr, "room=w&client=wes", 1).await;
    // Everything acknowledged: a forwarded poll through node b waits on node a.
    let waiting = tokio::spawn({
        let url = format!("http://{}/poll?cursor={cursor}&timeout_ms=3000", b.addr);
        async move { common::get_json(url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, v) = common::get_json_status(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=3000",
        c.addr
    ))
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    // The waiting one gets the next message, from the same session.
    let offset = common::api_publish(c.addr, "w", json!("now")).await;
    let v = within("the forwarded poll", Duration::from_secs(10), waiting)
        .await
        .unwrap();
    let events = v["events"].as_array().unwrap();
    assert_eq!(positions_of(events), [("w".to_owned(), offset)], "{v}");
    // And once it answered, the next forwarded poll is taken again.
    let (status, _) = common::get_json_status(format!(
        "http://{}/poll?cursor={}&timeout_ms=10",
        c.addr,
        v["cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200);
}

/// Tokens with the broker: checked on every node, and a session's commands forwarded to
/// its node through Redis obey its token's claim there.
async fn tokens_hold_on_every_node_and_for_commands_forwarded_to_another(kind: Kind) {
    use jsonwebtoken::{EncodingKey, Header, encode};
    const SECRET: &str = "broker-test-secret-0123456789abcdef";
    let redis = Redis::start(kind, false);
    let secret = |c: &mut roomcast_server::Config| c.auth.jwt_secret = SECRET.into();
    let a = node_with(&redis, "a", secret).await;
    let b = node_with(&redis, "b", secret).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |sub: &str, rooms: Value| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp, "rooms": rooms}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let talker = token("alice", json!({"join": ["lobby"], "publish": ["lobby"]}));
    let listener = token("bob", json!({"join": ["lobby"]}));
    // A socket on each node; what alice publishes on a reaches bob on b.
    let mut alice = Client::connect(a.addr).await;
    let w = alice.request(json!({"type":"hello","token":talker})).await;
    assert_eq!(w["client"], "alice", "{w}");
    alice.join("lobby").await;
    let mut bob = Client::connect(b.addr).await;
    assert_eq!(
        bob.request(json!({"type":"hello","token":listener})).await["client"],
        "bob"
    );
    bob.join("lobby").await;
    let r = bob
        .request(json!({"type":"publish","room":"lobby","data":1}))
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    assert_eq!(alice.publish("lobby", json!("hi")).await["type"], "ack");
    assert_eq!(bob.next_of("message").await["data"], "hi");
    // A poll session of bob's on node a; its publish sent through node b is forwarded to
    // a, which refuses it by bob's claim.
    let (status, v) = common::get_json_status(format!(
        "http://{}/poll?room=lobby&timeout_ms=0&token={listener}",
        a.addr
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    let session = v["session"].as_str().unwrap().to_owned();
    let (status, v) = cmd(
        b.addr,
        &session,
        json!({"type":"publish","room":"lobby","data":2,"ref":1}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    // No token, on any node: 401.
    let (status, _) = common::get_json_status(format!("http://{}/poll?room=lobby", b.addr)).await;
    assert_eq!(status, 401);
}

/// The room's last offset given, as the broker has it.
async fn top_of(conn: &mut Direct, room: &str) -> u64 {
    redis::cmd("HGET")
        .arg(format!("rc:{{{room}}}:meta"))
        .arg("top")
        .query_async::<Option<u64>>(conn)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Sends `publish` until it is acked, within `bound`, retrying `unavailable` (with an
/// `id`, safe: a publish that did reach the broker gets its first offset again). Any
/// other answer fails the test. Returns the ack and how many answers were `unavailable`.
async fn ack_of(p: &mut Client, publish: Value, bound: Duration) -> (Value, u32) {
    let mut unavailable = 0;
    within("an ack", bound, async {
        loop {
            let r = p.request(publish.clone()).await;
            if r["type"] == "ack" {
                return (r, unavailable);
            }
            assert_eq!(r["code"], "unavailable", "{r}");
            unavailable += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Publishes `{"p":0,"i":i}` with id `k{i}` until acked (see [`ack_of`]). Returns the
/// offset and how many answers were `unavailable`.
async fn publish_until_acked(p: &mut Client, room: &str, i: u64) -> (u64, u32) {
    let publish = json!({"type":"publish","room":room,"data":{"p":0,"i":i},"id":format!("k{i}")});
    let (ack, unavailable) = ack_of(p, publish, Duration::from_secs(30)).await;
    (ack["offset"].as_u64().unwrap(), unavailable)
}

/// Nothing comes twice on `c`, late ones included: `p` publishes a last message to
/// `room`, and it must be the next `message` `c` gets, at the offset it was acked with.
async fn nothing_more(c: &mut Client, p: &mut Client, room: &str, who: &str) {
    let last = json!({"type":"publish","room":room,"data":"last","id":"the-last"});
    let (ack, _) = ack_of(p, last, Duration::from_secs(10)).await;
    let next = c.next_of("message").await;
    assert_eq!(
        (next["offset"].clone(), next["data"].clone()),
        (ack["offset"].clone(), json!("last")),
        "{who}: a message twice, or a late one: {next}"
    );
}

async fn the_broker_restarted_mid_stream_with_aof_loses_nothing_acked(kind: Kind) {
    const N: u64 = 60;
    let mut redis = Redis::start(kind, true);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    m.join("r").await;
    let mut p = Client::hello(a.addr, "p").await;
    p.join("r").await;
    let publisher = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut unavailable = 0;
        for i in 0..N {
            let (offset, u) = publish_until_acked(&mut p, "r", i).await;
            acked.push(offset);
            unavailable += u;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (acked, unavailable, p)
    });
    // Killed while the publisher goes on: once the member has a few of its messages.
    let mut got = messages(&mut m, 10).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.spawn();
    let (acked, unavailable, mut p) = publisher.await.unwrap();
    assert!(unavailable > 0, "no publish met the broker down");
    assert_eq!(
        acked,
        (1..=N).collect::<Vec<_>>(),
        "each acked once, in order"
    );
    got.extend(messages(&mut m, N as usize - 10).await);
    check_exact(&got, 1, 1, N as usize, "m");
    nothing_more(&mut m, &mut p, "r", "m").await;
}

async fn the_broker_paused_answers_unavailable_and_acks_nothing_half_done(kind: Kind) {
    let redis = Redis::start(kind, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    m.join("z").await;
    let mut p = Client::hello(a.addr, "p").await;
    p.join("z").await;
    for i in 0..5 {
        publish_until_acked(&mut p, "z", i).await;
    }
    // The broker hangs (SIGSTOP): its sockets accept, nothing answers. A publish sent now
    // times out as `unavailable`, never an ack; Redis still has it in its input buffer
    // and runs it when it wakes, so the retry with its id must get that first offset.
    redis.pause(true);
    let started = std::time::Instant::now();
    let r = p
        .request(json!({"type":"publish","room":"z","data":{"p":0,"i":5},"id":"k5"}))
        .await;
    assert_eq!(r["code"], "unavailable", "while paused: {r}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2),
        "answered in {waited:?}: not a timeout"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.pause(false);
    if kind == Kind::Nats {
        // JetStream may have the append it had read, or not (the publish timed out on an
        // earlier step): either way its retry gets offset 6, below.
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        // Woken, Redis runs the publish it had read: stored once, before its retry.
        let mut conn = direct(&redis).await;
        within(
            "k5 stored once Redis woke",
            Duration::from_secs(10),
            async {
                while top_of(&mut conn, "z").await != 6 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        )
        .await;
    }
    let mut offsets = Vec::new();
    for i in 5..15 {
        offsets.push(publish_until_acked(&mut p, "z", i).await.0);
    }
    assert_eq!(offsets, (6..=15).collect::<Vec<_>>());
    let got = messages(&mut m, 15).await;
    check_exact(&got, 1, 1, 15, "m");
    nothing_more(&mut m, &mut p, "z", "m").await;
}

/// Redis Cluster replicates asynchronously: a primary may ack writes its replica never
/// got, and die. Here the replica is made to fall behind on purpose (stopped and cut off
/// while the primary acks messages 6 to 10), then the primary is killed and the replica promoted:
/// offsets 6 to 10 are gone from the room, and would be given again to new messages. The
/// nodes that delivered them notice (their position is past the room's top) and start a
/// new epoch, so every member is told `recovered:false`: never a silent hole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_ahead_of_its_replica_fails_over_and_the_lost_tail_is_told() {
    let mut redis = Redis::start(Kind::RedisCluster, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    let epoch = m.join("f").await["epoch"].as_str().unwrap().to_owned();
    let mut p = Client::hello(a.addr, "p").await;
    p.join("f").await;
    for i in 0..5 {
        publish_until_acked(&mut p, "f", i).await;
    }
    let primary = redis.primary_of("rc:{f}:meta");
    let replica = redis.replica_of(primary);
    // The replica has 1 to 5, then is cut off: stopped, and its link closed by the
    // primary (what was sent already would still reach it from its socket).
    redis.wait_replica_synced(primary);
    redis.pause_port(replica, true);
    redis.cli(primary, &["CLIENT", "KILL", "TYPE", "replica"]);
    for i in 5..10 {
        publish_until_acked(&mut p, "f", i).await;
    }
    let got = messages(&mut m, 10).await;
    check_exact(&got, 1, 1, 10, "m before the failover");
    redis.kill_port(primary);
    redis.pause_port(replica, false);
    redis.wait_primary(replica);
    // What the test set up: the promoted replica lacks 6 to 10.
    let top = redis.cli(replica, &["HGET", "rc:{f}:meta", "top"]);
    assert_eq!(top.trim(), "5", "the promoted replica's top");
    // Publishing goes on through the failover (retried with its ids).
    let mut offsets = Vec::new();
    for i in 10..15 {
        offsets.push(publish_until_acked(&mut p, "f", i).await.0);
    }
    // The member is told its history broke off, then gets the new epoch's messages.
    let reset = m.next_of("joined").await;
    assert_eq!(reset["recovered"], false, "{reset}");
    let new_epoch = reset["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new_epoch, epoch, "{reset}");
    let after = messages(&mut m, 5).await;
    let data: Vec<u64> = after
        .iter()
        .map(|(_, d)| d["i"].as_u64().unwrap())
        .collect();
    assert_eq!(data, (10..15).collect::<Vec<_>>(), "{after:?}");
    let after_offsets: Vec<u64> = after.iter().map(|(o, _)| *o).collect();
    assert_eq!(after_offsets, offsets, "delivered at the offsets acked");
    // An id acked in the lost epoch names nothing in this one: its retry is stored again
    // (an ack with its old offset would point at another message).
    let retry = json!({"type":"publish","room":"f","data":{"p":0,"i":2},"id":"k2"});
    let (ack, _) = ack_of(&mut p, retry, Duration::from_secs(10)).await;
    let top = *offsets.last().unwrap();
    assert_eq!(ack["offset"].as_u64(), Some(top + 1), "{ack}");
    assert_eq!(
        messages(&mut m, 1).await,
        vec![(top + 1, json!({"p":0,"i":2}))]
    );
    nothing_more(&mut m, &mut p, "f", "m").await;
    // A client coming back with a position of the lost epoch is told too.
    let mut r = Client::hello(b.addr, "r").await;
    let j = r
        .request(json!({"type":"join","room":"f","since":{"epoch":epoch,"offset":10}}))
        .await;
    assert_eq!(j["recovered"], false, "{j}");
    assert_eq!(j["epoch"], new_epoch.as_str(), "{j}");
}

/// Resharding while a room is busy: its slot moves to another primary key by key, as
/// `redis-cli --cluster reshard` does, while a publisher goes on. Commands meet `ASK` and
/// `MOVED` (followed by the client), the sharded subscriptions of the slot are ended by
/// the old owner (`sunsubscribe`), and the nodes subscribe again where the slot is now
/// and read what they missed: the member gets every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_whose_slot_moves_mid_stream_loses_nothing() {
    const N: u64 = 40;
    let redis = Redis::start(Kind::RedisCluster, false);
    let [a, b] = nodes(&redis, ["a", "b"]).await;
    let mut m = Client::hello(b.addr, "m").await;
    m.join("moving").await;
    let mut p = Client::hello(a.addr, "p").await;
    p.join("moving").await;
    let publisher = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..N {
            acked.push(publish_until_acked(&mut p, "moving", i).await.0);
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        (acked, p)
    });
    let mut got = messages(&mut m, 10).await;
    let slot = redis.slot_of("rc:{moving}:meta");
    let from = redis.primary_of("rc:{moving}:meta");
    let to = redis.primaries().into_iter().find(|&q| q != from).unwrap();
    redis.move_slot(slot, from, to);
    assert!(
        !publisher.is_finished(),
        "the slot moved after the stream ended"
    );
    assert_eq!(redis.primary_of("rc:{moving}:meta"), to, "the slot moved");
    let (acked, mut p) = publisher.await.unwrap();
    assert_eq!(
        acked,
        (1..=N).collect::<Vec<_>>(),
        "each acked once, in order"
    );
    got.extend(messages(&mut m, N as usize - 10).await);
    check_exact(&got, 1, 1, N as usize, "m");
    nothing_more(&mut m, &mut p, "moving", "m").await;
    // The room lives on the new primary: its history is whole there (the last one too).
    let h = m
        .request(json!({"type":"history","room":"moving","limit":1000}))
        .await;
    assert_eq!(
        common::message_offsets(&h),
        (1..=N + 1).collect::<Vec<_>>(),
        "{h}"
    );
}

/// With `broker.wait_replicas = 1` an ack waits for the shard's replica: a publish while
/// the replica is stopped answers `unavailable` (stored on the primary, and its retry
/// gets its offset), and after a failover every acked message is still there, in the
/// same epoch, so no member is told anything broke off. The promoted replica acks
/// nothing until a replica of its own is back (the killed primary, restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_every_ack_survives_a_failover() {
    let mut redis = Redis::start(Kind::RedisCluster, false);
    let wait = |c: &mut roomcast_server::Config| c.broker.wait_replicas = 1;
    let a = node_with(&redis, "a", wait).await;
    let b = node_with(&redis, "b", wait).await;
    let mut m = Client::hello(b.addr, "m").await;
    let epoch = m.join("w").await["epoch"].as_str().unwrap().to_owned();
    let mut p = Client::hello(a.addr, "p").await;
    p.join("w").await;
    for i in 0..5 {
        publish_until_acked(&mut p, "w", i).await;
    }
    let primary = redis.primary_of("rc:{w}:meta");
    let replica = redis.replica_of(primary);
    redis.pause_port(replica, true);
    let started = std::time::Instant::now();
    let r = p
        .request(json!({"type":"publish","room":"w","data":{"p":0,"i":5},"id":"k5"}))
        .await;
    let waited = started.elapsed();
    assert_eq!(r["code"], "unavailable", "acked without its replica: {r}");
    // Refused by WAIT (500 ms), not by a broker timeout (3 s): the primary stored it.
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(2500)).contains(&waited),
        "answered in {waited:?}"
    );
    let top = redis.cli(primary, &["HGET", "rc:{w}:meta", "top"]);
    assert_eq!(top.trim(), "6", "stored on the primary");
    redis.pause_port(replica, false);
    for i in 5..10 {
        publish_until_acked(&mut p, "w", i).await;
    }
    // Every ack so far is on the replica: the failover keeps them all.
    redis.kill_port(primary);
    redis.wait_primary(replica);
    // The promoted replica has no replica of its own: no ack until one is back, though
    // it stores the message (once the nodes have found it).
    let k10 = json!({"type":"publish","room":"w","data":{"p":0,"i":10},"id":"k10"});
    within(
        "k10 stored on the promoted replica",
        Duration::from_secs(20),
        async {
            loop {
                let r = p.request(k10.clone()).await;
                assert_eq!(r["code"], "unavailable", "acked with no replica: {r}");
                if redis.cli(replica, &["HGET", "rc:{w}:meta", "top"]).trim() == "11" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    redis.spawn(); // the old primary comes back, as the new one's replica
    for i in 10..15 {
        publish_until_acked(&mut p, "w", i).await;
    }
    let got = messages(&mut m, 15).await;
    check_exact(&got, 1, 1, 15, "m");
    nothing_more(&mut m, &mut p, "w", "m").await;
    assert!(
        !m.backlog.iter().any(|x| x["type"] == "joined"),
        "no history broke off: {:?}",
        m.backlog
    );
    let mut r = Client::hello(b.addr, "r").await;
    let j = r
        .request(json!({"type":"join","room":"w","since":{"epoch":epoch,"offset":0}}))
        .await;
    assert_eq!(
        j["recovered"], true,
        "the same epoch after the failover: {j}"
    );
}

/// `broker.wait_replicas` on a Redis with no replica: no publish is ever acked, over
/// `/ws` or the API, though each is stored and delivered (a retry with its id gets
/// `unavailable` again, and is not stored twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_replicas_and_no_replica_nothing_is_acked() {
    let redis = Redis::start(Kind::Redis, false);
    let a = node_with(&redis, "a", |c| c.broker.wait_replicas = 1).await;
    let mut m = Client::hello(a.addr, "m").await;
    m.join("n").await;
    let publish = json!({"type":"publish","room":"n","data":1,"id":"once"});
    for _ in 0..2 {
        let r = m.request(publish.clone()).await;
        assert_eq!(r["code"], "unavailable", "acked with no replica: {r}");
    }
    assert_eq!(messages(&mut m, 1).await, vec![(1, json!(1))]);
    let (status, v) = common::api(
        a.addr,
        "POST",
        "/api/publish",
        Some(json!({"room":"n","data":2})),
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    // Each stored once: the room's top is 2.
    let mut conn = direct(&redis).await;
    assert_eq!(top_of(&mut conn, "n").await, 2);
}
