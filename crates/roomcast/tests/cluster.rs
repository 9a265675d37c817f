//! Three `roomcast serve` processes sharing a real Redis behind a real HAProxy (Debian's
//! packages, with the shipped `deploy/haproxy.cfg`), and one node killed with SIGKILL
//! mid-stream: what its clients had acked is not lost, nothing arrives twice, its members
//! recover through HAProxy with `since`, and its presence goes within the TTL with a
//! `left` diff on the other nodes.

#![allow(clippy::unwrap_used)]

#[macro_use]
#[path = "../../roomcast-server/tests/support/brokers.rs"]
mod brokers;
mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brokers::{Broker as Redis, Kind};
use common::{BIN, LISTENING, Lines, listening_addr, within};
use roomcast_ws::Message;
use roomcast_ws::tokio::{WebSocket, connect};
use serde_json::{Value, json};

const ANSWER: Duration = Duration::from_secs(10);
const PRESENCE_TTL_MS: u64 = 1500;

on_every_broker!(
    a_node_killed_mid_stream_loses_nothing_acked_and_its_presence_goes,
    a_node_drained_through_haproxy_hands_its_clients_to_the_others,
    a_poll_session_needs_no_sticky_cookie_and_outlives_its_node,
    a_subscriber_node_too_slow_for_the_broker_is_cut_and_catches_up,
);

on_nats_too!(
    a_node_killed_mid_stream_loses_nothing_acked_and_its_presence_goes,
    a_node_drained_through_haproxy_hands_its_clients_to_the_others,
    a_poll_session_needs_no_sticky_cookie_and_outlives_its_node,
    a_subscriber_node_too_slow_for_the_broker_is_cut_and_catches_up,
);

/// A node: `roomcast serve --broker` on a port the kernel picks; killed on drop.
struct Node {
    child: Child,
    addr: SocketAddr,
    _stdout: Lines,
}

impl Node {
    fn start(redis: &Redis, name: &str) -> Self {
        Self::start_with(redis, name, &[])
    }

    /// [`Node::start`] with more `--set` settings.
    fn start_with(redis: &Redis, name: &str, settings: &[&str]) -> Self {
        let ttl = format!("broker.presence_ttl_ms={PRESENCE_TTL_MS}");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log", "warn"])
            .args(["--broker", &redis.url(), "--node-id", name, "--set", &ttl])
            .args(settings.iter().flat_map(|s| ["--set", s]))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let addr = listening_addr(&stdout.next_within(ANSWER, LISTENING));
        // The node listens before it reaches Redis; until then room requests answer
        // `unavailable` and /healthz says so.
        let deadline = Instant::now() + ANSWER;
        while healthz(addr) != "ok\n" {
            assert!(Instant::now() < deadline, "{name} did not reach Redis");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            addr,
            _stdout: stdout,
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a node that stops reading for a while.
    fn pause(&self, stop: bool) {
        brokers::signal(self.child.id(), stop);
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Three nodes n1, n2, n3 on `redis`, their addresses, and HAProxy in front of them.
fn cluster(redis: &Redis) -> ([Node; 3], Vec<SocketAddr>, Haproxy) {
    let nodes = [
        Node::start(redis, "n1"),
        Node::start(redis, "n2"),
        Node::start(redis, "n3"),
    ];
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let haproxy = Haproxy::start(&addrs);
    (nodes, addrs, haproxy)
}

/// HAProxy with `deploy/haproxy.cfg` in front of `nodes`, on free loopback ports;
/// killed on drop.
struct Haproxy {
    child: Child,
    front: SocketAddr,
    stats: SocketAddr,
    dir: std::path::PathBuf,
}

impl Haproxy {
    fn start(nodes: &[SocketAddr]) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (front, stats) = (free(), free());
        let dir = std::env::temp_dir().join(format!("roomcast-haproxy-{front}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
        let child = Command::new("haproxy")
            .args(["-db", "-f", cfg])
            .env("FRONT_PORT", front.to_string())
            .env("STATS_PORT", stats.to_string())
            .env("STATS_SOCKET", dir.join("haproxy.sock"))
            .env("NODE1", nodes[0].to_string())
            .env("NODE2", nodes[1].to_string())
            .env("NODE3", nodes[2].to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("haproxy (scripts/test installs it): {e}"));
        // Up once its checks passed for every node (`rise 2` at `inter 500ms`).
        let deadline = Instant::now() + ANSWER;
        let stats: SocketAddr = ([127, 0, 0, 1], stats).into();
        loop {
            let csv = http_get(stats, "/;csv").unwrap_or_default();
            let up = csv
                .lines()
                .filter(|l| l.starts_with("roomcast_nodes,n") && l.contains(",UP,"))
                .count();
            if up == nodes.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not see the nodes up: {csv}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            front: ([127, 0, 0, 1], front).into(),
            stats,
            dir,
        }
    }

    /// Where its statistics page is (`/;csv`).
    fn stats_addr(&self) -> SocketAddr {
        self.stats
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The body of a `GET`, or `None` when nothing answers.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(ANSWER)).ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// The body of `GET /healthz`.
fn healthz(addr: SocketAddr) -> String {
    http_get(addr, "/healthz").unwrap_or_default()
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/ws` protocol client: requests by `ref`, pushes kept in order.
struct Client {
    /// The node it reached (`welcome.node`).
    node: String,
    /// The code of the close frame the server sent, once it did.
    closed_with: Option<u16>,
    ws: WebSocket<tokio::net::TcpStream>,
    pushes: VecDeque<Value>,
    next_ref: u64,
}

impl Client {
    /// Connects and says hello; `None` when the node does not answer (it is dead).
    async fn hello(addr: SocketAddr, client: &str) -> Option<Self> {
        let (ws, _) = tokio::time::timeout(ANSWER, connect(&format!("ws://{addr}/ws")))
            .await
            .ok()?
            .ok()?;
        let mut c = Self {
            node: String::new(),
            closed_with: None,
            ws,
            pushes: VecDeque::new(),
            next_ref: 0,
        };
        let w = c.request(json!({"type":"hello","client":client})).await?;
        assert_eq!(w["type"], "welcome", "{w}");
        c.node = w["node"].as_str().unwrap_or_default().to_owned();
        Some(c)
    }

    /// The next JSON text; `None` once the connection is gone.
    async fn next(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(ANSWER, self.ws.recv()).await {
                Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.closed_with = frame.map(|f| f.code.0);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return None,
                Err(_) => panic!("nothing from the server within {ANSWER:?}"),
            }
        }
    }

    /// Sends a request and waits for its reply; pushes meanwhile are kept. `None` when
    /// the connection is gone before the reply.
    async fn request(&mut self, mut v: Value) -> Option<Value> {
        self.next_ref += 1;
        v["ref"] = self.next_ref.into();
        self.ws.send(Message::text(v.to_string())).await.ok()?;
        loop {
            let m = self.next().await?;
            if m["ref"] == self.next_ref {
                return Some(m);
            }
            self.pushes.push_back(m);
        }
    }

    /// The next push of a type (others stay queued); `None` once the connection is gone.
    async fn next_of(&mut self, kind: &str) -> Option<Value> {
        if let Some(i) = self.pushes.iter().position(|m| m["type"] == kind) {
            return self.pushes.remove(i);
        }
        loop {
            let m = self.next().await?;
            if m["type"] == kind {
                return Some(m);
            }
            self.pushes.push_back(m);
        }
    }
}

/// Publishes `per` messages `{"p":p,"i":i}` with ids, retrying each on the next node
/// (the one after, round the list) with the same id when its connection goes. Returns
/// the acked offsets by `i`.
async fn publisher(nodes: Vec<SocketAddr>, p: usize, per: usize) -> Vec<u64> {
    let mut at = p % nodes.len();
    let mut acked = Vec::with_capacity(per);
    let mut conn: Option<Client> = None;
    let mut i = 0;
    let started = Instant::now();
    while i < per {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "publisher {p} stuck at {i}"
        );
        if conn.is_none() {
            conn = match Client::hello(nodes[at], &format!("pub{p}")).await {
                Some(mut c) => match c.request(json!({"type":"join","room":"k"})).await {
                    Some(j) if j["type"] == "joined" => Some(c),
                    _ => None,
                },
                None => None,
            };
            if conn.is_none() {
                at = (at + 1) % nodes.len();
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let publish =
            json!({"type":"publish","room":"k","data":{"p":p,"i":i},"id":format!("{p}-{i}")});
        match c.request(publish).await {
            Some(a) if a["type"] == "ack" => {
                acked.push(a["offset"].as_u64().unwrap());
                i += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Some(e) => {
                assert_eq!(e["code"], "unavailable", "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => {
                // The node went away: the same id on the next one.
                conn = None;
                at = (at + 1) % nodes.len();
            }
        }
    }
    acked
}

/// Reads `message` pushes until every offset up to `top` came, rejoining on `fallback`
/// with `since` if the connection goes. Returns `(offset, data)` in arrival order, when
/// it recovered (if it had to), and the close code it got before (if any).
async fn read_all(
    mut c: Client,
    client: &'static str,
    top: u64,
    epoch: String,
    fallback: SocketAddr,
) -> (Vec<(u64, Value)>, Option<Instant>, Option<u16>) {
    let mut got: Vec<(u64, Value)> = Vec::new();
    let mut recovered_at = None;
    let mut closed_with = None;
    loop {
        if got.last().is_some_and(|(o, _)| *o >= top) {
            return (got, recovered_at, closed_with);
        }
        match c.next_of("message").await {
            Some(m) => got.push((m["offset"].as_u64().unwrap(), m["data"].clone())),
            None => {
                closed_with = closed_with.or(c.closed_with);
                let last = got.last().map_or(0, |(o, _)| *o);
                // Reconnect as a client would, with a short backoff.
                let mut again = loop {
                    if let Some(c) = Client::hello(fallback, client).await {
                        break c;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let j = again
                    .request(
                        json!({"type":"join","room":"k","since":{"epoch":epoch,"offset":last}}),
                    )
                    .await
                    .unwrap();
                assert_eq!(j["recovered"], true, "a rejoin after the kill: {j}");
                recovered_at = Some(Instant::now());
                c = again;
            }
        }
    }
}

async fn a_node_killed_mid_stream_loses_nothing_acked_and_its_presence_goes(kind: Kind) {
    let redis = Redis::start(kind, false);
    let (mut nodes, addrs, haproxy) = cluster(&redis);
    let front = haproxy.front;
    // The member whose node dies came through HAProxy; its node is the one killed.
    let mut on_dead = Client::hello(front, "m1").await.unwrap();
    let j = on_dead
        .request(json!({"type":"join","room":"k"}))
        .await
        .unwrap();
    let epoch = j["epoch"].as_str().unwrap().to_owned();
    let victim = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == on_dead.node)
        .unwrap_or_else(|| panic!("welcome.node {:?}", on_dead.node));
    let live = (victim + 1) % 3;
    let mut watcher = Client::hello(addrs[live], "watcher").await.unwrap();
    watcher
        .request(json!({"type":"join","room":"k","presence":{}}))
        .await
        .unwrap();
    // On the node that dies: a visible client that never comes back.
    let mut ghost = Client::hello(addrs[victim], "ghost").await.unwrap();
    ghost
        .request(json!({"type":"join","room":"k","presence":{}}))
        .await
        .unwrap();
    let mut on_live = Client::hello(addrs[live], "m2").await.unwrap();
    on_live
        .request(json!({"type":"join","room":"k"}))
        .await
        .unwrap();
    within("the ghost's joined diff", ANSWER, async {
        loop {
            let d = watcher.next_of("presence_diff").await.unwrap();
            if d["joined"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["client"] == "ghost")
            {
                return;
            }
        }
    })
    .await;

    const PER: usize = 60;
    let top = (3 * PER) as u64;
    let readers = [
        tokio::spawn(read_all(on_dead, "m1", top, epoch.clone(), front)),
        tokio::spawn(read_all(on_live, "m2", top, epoch.clone(), front)),
    ];
    // Three publishers through HAProxy; leastconn spreads them over the nodes.
    let publishers: Vec<_> = (0..3)
        .map(|p| tokio::spawn(publisher(vec![front], p, PER)))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    nodes[victim].kill_9();
    let killed = Instant::now();
    drop(ghost);

    let mut acked: Vec<u64> = Vec::new();
    for p in publishers {
        acked.extend(
            within("the publishers", Duration::from_secs(90), p)
                .await
                .unwrap(),
        );
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        (1..=top).collect::<Vec<_>>(),
        "every publish acked once, at an offset of its own: a retry with the same id is \
         not stored twice"
    );
    let [dead_reader, live_reader] = readers;
    let (dead_got, recovered_at, _) = within(
        "the killed node's member",
        Duration::from_secs(60),
        dead_reader,
    )
    .await
    .unwrap();
    let recovered_at = recovered_at.expect("the killed node's member had to rejoin");
    let (live_got, _, _) = within("a live node's member", Duration::from_secs(60), live_reader)
        .await
        .unwrap();
    check_exact(&dead_got, top, "the killed node's member");
    check_exact(&live_got, top, "a live node's member");
    println!(
        "kill -9 to its member recovered through HAProxy: {} ms",
        recovered_at.duration_since(killed).as_millis()
    );

    // The killed node's visible client is gone within the TTL (and a sweep), and the
    // watcher on another node is told.
    let left = within("the ghost's left diff", Duration::from_secs(10), async {
        loop {
            let d = watcher.next_of("presence_diff").await.unwrap();
            if d["left"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["client"] == "ghost")
            {
                return Instant::now();
            }
        }
    })
    .await;
    let gone_ms = left.duration_since(killed).as_millis() as u64;
    println!("kill -9 to the left diff on another node: {gone_ms} ms");
    // The sweep runs on the live nodes every third of the TTL.
    assert!(
        gone_ms <= PRESENCE_TTL_MS + PRESENCE_TTL_MS / 3 + 2000,
        "presence of a dead node went after {gone_ms} ms, the TTL is {PRESENCE_TTL_MS} ms"
    );
    let p = watcher
        .request(json!({"type":"presence","room":"k"}))
        .await
        .unwrap();
    assert_eq!(p["members"], json!([{"client":"watcher","info":{}}]), "{p}");
}

/// Every offset from 1 to `top` once, in order, and each publisher's messages once.
fn check_exact(got: &[(u64, Value)], top: u64, who: &str) {
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        offsets,
        (1..=top).collect::<Vec<_>>(),
        "{who}: every offset once, in order"
    );
    let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
    for (_, d) in got {
        *seen
            .entry((d["p"].as_u64().unwrap(), d["i"].as_u64().unwrap()))
            .or_default() += 1;
    }
    assert_eq!(seen.len() as u64, top, "{who}: every acked message");
    assert!(seen.values().all(|&n| n == 1), "{who}: nothing twice");
}

async fn a_node_drained_through_haproxy_hands_its_clients_to_the_others(kind: Kind) {
    let redis = Redis::start(kind, false);
    let (nodes, addrs, haproxy) = cluster(&redis);
    let mut m = Client::hello(haproxy.front, "m").await.unwrap();
    let j = m.request(json!({"type":"join","room":"k"})).await.unwrap();
    let epoch = j["epoch"].as_str().unwrap().to_owned();
    let drained = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == m.node)
        .unwrap();
    const PER: usize = 40;
    let reader = tokio::spawn(read_all(m, "m", PER as u64, epoch, haproxy.front));
    // One publisher on another node, throughout the drain.
    let other = addrs[(drained + 1) % 3];
    let publisher = tokio::spawn(publisher(vec![other], 0, PER));
    tokio::time::sleep(Duration::from_millis(60)).await;
    let status = Command::new("kill")
        .args(["-TERM", &nodes[drained].child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let acked = within("the publisher", Duration::from_secs(60), publisher)
        .await
        .unwrap();
    assert_eq!(acked, (1..=PER as u64).collect::<Vec<_>>());
    let (got, recovered, closed_with) =
        within("the drained node's member", Duration::from_secs(60), reader)
            .await
            .unwrap();
    assert_eq!(
        closed_with,
        Some(1001),
        "a drain closes with 1001 (going away)"
    );
    assert!(recovered.is_some(), "the member came back through HAProxy");
    check_exact(&got, PER as u64, "the drained node's member");
}

/// One HTTP request through `addr` with reqwest: status and JSON body, `None` when the
/// request failed on the way (a node killed under it).
async fn http_json(req: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let resp = tokio::time::timeout(ANSWER, req.send()).await.ok()?.ok()?;
    let status = resp.status().as_u16();
    let text = tokio::time::timeout(ANSWER, resp.text()).await.ok()?.ok()?;
    Some((status, serde_json::from_str(&text).ok()?))
}

async fn a_poll_session_needs_no_sticky_cookie_and_outlives_its_node(kind: Kind) {
    let redis = Redis::start(kind, false);
    let (mut nodes, _, haproxy) = cluster(&redis);
    let front = haproxy.front;
    // The CLI's reqwest has TLS without a built-in provider: the process installs ring,
    // as `roomcast` does at start.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // A session, through HAProxy.
    let (status, v) = http_json(http.get(format!(
        "http://{front}/poll?room=h&client=pat&timeout_ms=10"
    )))
    .await
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let session = v["session"].as_str().unwrap().to_owned();
    let home = v["events"][0]["node"].as_str().unwrap().to_owned();
    let mut cursor = v["cursor"].as_str().unwrap().to_owned();
    // Its commands, spread by leastconn over the nodes (a long poll holds a connection
    // on the session's node meanwhile), each reaching the session wherever it landed.
    let held = tokio::spawn({
        let (http, cursor) = (http.clone(), cursor.clone());
        async move {
            http_json(http.get(format!(
                "http://{front}/poll?cursor={cursor}&timeout_ms=3000"
            )))
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=5 {
        let publish = json!({"type":"publish","room":"h","data":i,"id":format!("h-{i}")});
        let (status, v) = http_json(
            http.post(format!("http://{front}/cmd?session={session}"))
                .body(publish.to_string()),
        )
        .await
        .unwrap();
        assert_eq!((status, v["offset"].as_u64()), (200, Some(i)), "{v}");
    }
    let _ = held.await;
    let csv = http_get(haproxy.stats_addr(), "/;csv").unwrap_or_default();
    let served = csv
        .lines()
        .filter(|l| l.starts_with("roomcast_nodes,n"))
        .filter(|l| l.split(',').nth(7).is_some_and(|total| total != "0"))
        .count();
    assert!(
        served >= 2,
        "the requests went to more than one node: {csv}"
    );

    // The session's node killed: the cursor goes on at another node, as the same client,
    // with every message once.
    let mut got: Vec<u64> = Vec::new();
    let mut url = format!("http://{front}/poll?cursor={cursor}&timeout_ms=2000");
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 2 {
        assert!(Instant::now() < deadline, "only {got:?}");
        let (_, v) = http_json(http.get(&url)).await.unwrap();
        got.extend(
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "message")
                .map(|e| e["offset"].as_u64().unwrap()),
        );
        cursor = v["cursor"].as_str().unwrap().to_owned();
        url = format!("http://{front}/poll?cursor={cursor}&timeout_ms=2000&limit=1");
    }
    let at = ["n1", "n2", "n3"].iter().position(|n| *n == home).unwrap();
    nodes[at].kill_9();
    for i in 6..=8 {
        let body = json!({"room":"h","data":i,"id":format!("h-{i}")});
        let deadline = Instant::now() + ANSWER;
        loop {
            let answer =
                http_json(http.post(format!("http://{front}/api/publish")).json(&body)).await;
            if matches!(answer, Some((200, _))) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no publish through HAProxy: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut welcomed = None;
    while got.len() < 8 {
        assert!(Instant::now() < deadline, "only {got:?}");
        let Some((200, v)) = http_json(http.get(&url)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        for e in v["events"].as_array().unwrap() {
            match e["type"].as_str() {
                Some("welcome") => welcomed = Some((e["client"].clone(), e["node"].clone())),
                Some("joined") => assert_eq!(e["recovered"], true, "{e}"),
                Some("message") => got.push(e["offset"].as_u64().unwrap()),
                _ => {}
            }
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
        url = format!("http://{front}/poll?cursor={cursor}&timeout_ms=2000");
    }
    let (client, node) = welcomed.expect("a new session on another node");
    assert_eq!(client, "pat");
    assert_ne!(node, json!(home));
    assert_eq!(
        got,
        (1..=8).collect::<Vec<u64>>(),
        "every message once, in order"
    );
}

/// A node that cannot keep up with its pub/sub connection (here: stopped for a moment
/// while a burst goes to its room) fills the broker's output buffer for it, and the
/// broker cuts it (`client-output-buffer-limit`, as redis#1880 describes; on NATS, a
/// slow consumer whose writes block past `write_deadline`). The node notices,
/// reconnects, and reads what it missed from the stream: its member gets every message
/// once, in order.
async fn a_subscriber_node_too_slow_for_the_broker_is_cut_and_catches_up(kind: Kind) {
    // Published until the broker cut the stopped node, at most this many.
    const MAX: usize = 4000;
    let redis = Redis::start_with(kind, false, "write_deadline: \"1s\"\n");
    let keep = "rooms.history_max_messages=5000";
    let n1 = Node::start_with(&redis, "n1", &[keep]);
    // What it catches up passes its members' bound (4 MiB) on a cluster: counted against
    // it, they would be closed with 4008 (as they were before catch-ups were exempt).
    let n2 = Node::start_with(&redis, "n2", &[keep]);
    let mut m = Client::hello(n2.addr, "m").await.unwrap();
    let j = m.request(json!({"type":"join","room":"k"})).await.unwrap();
    assert_eq!(j["type"], "joined", "{j}");
    let mut p = Client::hello(n1.addr, "p").await.unwrap();
    p.request(json!({"type":"join","room":"k"})).await.unwrap();
    // A subscriber more than 256 KiB behind is cut at once. On one Redis pub/sub
    // connections have a class of their own; on a cluster, RESP3 connections carry
    // pushes and replies together and count as `normal`.
    let (limit, cut) = match kind {
        Kind::Redis => (Some("pubsub 262144 0 0"), "output buffer limits"),
        Kind::RedisCluster => (
            Some("normal 262144 0 0 pubsub 262144 0 0"),
            "output buffer limits",
        ),
        Kind::Nats => (None, "Slow Consumer Detected"),
    };
    if let Some(limit) = limit {
        redis.cli_all(&["CONFIG", "SET", "client-output-buffer-limit", limit]);
    }
    n2.pause(true);
    // 16 KiB messages until the broker says it cut the node (what the kernel buffers
    // between them hold first depends on the machine), and 400 at least (6.4 MiB, more
    // than the members' bound to catch up).
    let blob = "x".repeat(16 << 10);
    let mut n = 0;
    while n < 400 || !redis.log_contains(cut) {
        assert!(
            n < MAX,
            "the broker did not cut the stopped node's subscription"
        );
        let publish = json!({"type":"publish","room":"k","data":{"p":0,"i":n,"pad":blob},"id":format!("b{n}")});
        let a = p.request(publish).await.unwrap();
        assert_eq!(a["type"], "ack", "{a}");
        n += 1;
    }
    if limit.is_some() {
        redis.cli_all(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "normal 0 0 0 pubsub 0 0 0",
        ]);
    }
    n2.pause(false);
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let Some(msg) = m.next_of("message").await else {
            panic!(
                "m's connection closed ({:?}) after {}",
                m.closed_with,
                got.len()
            );
        };
        got.push((
            msg["offset"].as_u64().unwrap(),
            msg["data"]["i"].as_u64().unwrap(),
        ));
    }
    let want: Vec<(u64, u64)> = (0..n as u64).map(|i| (i + 1, i)).collect();
    assert_eq!(got, want, "every message once, in order");
    // Nothing late: the next message is the next one published.
    let a = p
        .request(json!({"type":"publish","room":"k","data":{"p":0,"i":n},"id":"last"}))
        .await
        .unwrap();
    let next = m.next_of("message").await.unwrap();
    assert_eq!(next["offset"], a["offset"], "a message twice: {next}");
}
