//! Every limit reached, answered, counted, and the node still serving others:
//! connections, handshakes and sessions per address (429), messages per connection
//! (`rate_limited`, then 4029), publishes per client id, and the client's address taken
//! from `X-Forwarded-For` only behind a trusted proxy. Loopback is exempt by default, so
//! these tests turn `limits.exempt_loopback` off (or name the address a proxy forwards).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, get_json_status, start, upgrade_head, upgrade_head_on};
use serde_json::json;

#[tokio::test]
async fn connections_and_handshakes_per_address() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.max_connections_per_ip = 3;
        c.limits.handshakes_per_second_per_ip = 1000;
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let (status, head, stream) = upgrade_head(s.addr, "/ws", "").await;
        assert_eq!(status, 101, "{head}");
        open.push(stream);
    }
    let (status, head, _) = upgrade_head(s.addr, "/rooms/a", "").await;
    assert_eq!(status, 429, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(head.contains("max_connections_per_ip"), "{head}");
    // One goes: its slot is given back.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..50 {
        let (status, _, stream) = upgrade_head(s.addr, "/ws", "").await;
        if status == 101 {
            open.push(stream);
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "a closed connection's slot was not given back");
    let handshakes = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.handshakes_per_second_per_ip = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(upgrade_head(handshakes.addr, "/ws", "").await.0);
    }
    // A burst of twice the rate, then 429.
    assert_eq!(&statuses[..4], [101; 4], "{statuses:?}");
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    assert!(roomcast_server::Stats::get(&handshakes.stats.limit_refusals) >= 1);
}

#[tokio::test]
async fn sessions_per_address() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.max_sessions_per_ip = 2;
    })
    .await;
    for _ in 0..2 {
        let (status, v) =
            get_json_status(format!("http://{}/poll?room=a&timeout_ms=0", s.addr)).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = get_json_status(format!("http://{}/poll?room=a&timeout_ms=0", s.addr)).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
}

#[tokio::test]
async fn a_connection_over_its_message_rate_is_refused_then_closed_and_others_go_on() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.messages_per_second = 5;
    })
    .await;
    let mut bystander = Client::hello(s.addr, "bystander").await;
    let mut flood = Client::hello(s.addr, "flood").await;
    // A burst of twice the rate passes (the hello took one), then `rate_limited` with refs.
    let mut answers = Vec::new();
    for i in 0..20u64 {
        flood.send(json!({"type":"ping","ref":i})).await;
    }
    for _ in 0..20 {
        answers.push(flood.recv().await);
    }
    let pongs = answers.iter().filter(|a| a["type"] == "pong").count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|a| a["code"] == "rate_limited")
        .collect();
    assert!((8..=11).contains(&pongs), "{pongs} pongs: {answers:?}");
    assert_eq!(pongs + limited.len(), 20);
    assert!(
        limited.iter().all(|a| a["ref"].is_u64()),
        "every refusal carries its ref"
    );
    // Going on regardless: closed with 4029.
    for i in 0..200u64 {
        flood.send(json!({"type":"ping","ref":100 + i})).await;
    }
    let code = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), flood.ws.recv()).await {
            Ok(Some(Ok(roomcast_ws::Message::Close(f)))) => break f.map(|f| f.code.0),
            Ok(Some(Ok(_))) => {}
            other => panic!("no close: {other:?}"),
        }
    };
    assert_eq!(code, Some(4029));
    assert_eq!(
        bystander.request(json!({"type":"ping"})).await["type"],
        "pong"
    );
}

#[tokio::test]
async fn publishes_per_client_id_over_all_its_connections() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.publishes_per_second_per_client = 1;
        c.limits.publish_burst = 3;
    })
    .await;
    let mut a = Client::hello(s.addr, "chatty").await;
    let mut b = Client::hello(s.addr, "chatty").await;
    // (`a` and `b` take turns below.)
    a.join("r").await;
    b.join("r").await;
    let mut codes = Vec::new();
    let mut clients = [a, b];
    for i in 0..4 {
        let r = clients[i % 2]
            .request(json!({"type":"publish","room":"r","data":1}))
            .await;
        codes.push(r["type"].as_str().unwrap().to_owned() + "/" + r["code"].as_str().unwrap_or(""));
    }
    assert_eq!(
        codes,
        ["ack/", "ack/", "ack/", "error/rate_limited"],
        "{codes:?}"
    );
    let mut other = Client::hello(s.addr, "quiet").await;
    other.join("r").await;
    let r = other
        .request(json!({"type":"publish","room":"r","data":1}))
        .await;
    assert_eq!(r["type"], "ack", "another client is not held back: {r}");
}

#[tokio::test]
async fn the_forwarded_address_counts_only_behind_a_trusted_proxy() {
    let s = start(|c| {
        c.limits.max_connections_per_ip = 1;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let xff = |ip: &str| format!("X-Forwarded-For: 10.9.9.9, {ip}\r\n");
    let (st, _, _keep) = upgrade_head(s.addr, "/ws", &xff("203.0.113.5")).await;
    assert_eq!(st, 101);
    let (st, head, _) = upgrade_head(s.addr, "/ws", &xff("203.0.113.5")).await;
    assert_eq!(st, 429, "the second from the same client: {head}");
    let (st, _, _other) = upgrade_head(s.addr, "/ws", &xff("203.0.113.6")).await;
    assert_eq!(st, 101, "another client behind the same proxy");
    // Not a trusted proxy: the header is not believed (and loopback is exempt).
    let plain = start(|c| c.limits.max_connections_per_ip = 1).await;
    let (a, _, _k1) = upgrade_head(plain.addr, "/ws", &xff("203.0.113.5")).await;
    let (b, _, _k2) = upgrade_head(plain.addr, "/ws", &xff("203.0.113.5")).await;
    assert_eq!((a, b), (101, 101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holds_at_most_max_rooms() {
    let s = start(|c| c.limits.max_rooms = 2).await;
    let mut c = Client::hello(s.addr, "roomy").await;
    c.join("one").await;
    let mut other = Client::hello(s.addr, "other").await;
    other.join("two").await;
    let r = c.request(json!({"type":"join","room":"three"})).await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{r}"
    );
    assert!(r["message"].as_str().unwrap().contains("max_rooms"), "{r}");
    // The API cannot create one either; the rooms held still work.
    let (status, v) = common::api(
        s.addr,
        "POST",
        "/api/publish",
        Some(json!({"room": "four", "data": 1})),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(c.join("two").await["type"], "joined");
    assert_eq!(c.publish("one", json!(1)).await["type"], "ack");
    assert_eq!(s.stats.rooms.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// HAProxy in `mode tcp` (as in front of nodes that terminate TLS themselves), with one
/// front that sends PROXY v1 (`send-proxy`) and one that sends v2 (`send-proxy-v2`), on
/// free loopback ports; killed by its process id on drop.
struct TcpProxy {
    child: std::process::Child,
    v1: std::net::SocketAddr,
    v2: std::net::SocketAddr,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TcpProxy {
    async fn start(node: std::net::SocketAddr) -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (v1, v2) = (free(), free());
        let dir = std::env::temp_dir().join(format!("roomcast-proxy-protocol-{}", v1.port()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  \
                 timeout server 30s\n\
                 frontend v1\n  bind {v1}\n  default_backend v1\n\
                 backend v1\n  server node {node} send-proxy\n\
                 frontend v2\n  bind {v2}\n  default_backend v2\n\
                 backend v2\n  server node {node} send-proxy-v2\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("haproxy (scripts/test installs it): {e}"));
        for front in [v1, v2] {
            common::within(
                "HAProxy listening",
                std::time::Duration::from_secs(10),
                async {
                    while tokio::net::TcpStream::connect(front).await.is_err() {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                },
            )
            .await;
        }
        Self {
            child,
            v1,
            v2,
            _dir: TempDir(dir),
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection to `to` from the loopback address `from` (all of 127/8 is this machine).
async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Through real HAProxy in `mode tcp`: the node takes each client's address from the PROXY
/// header (v1 and v2), so two clients behind the one proxy address are counted apart; a
/// connection from the trusted proxy without a header is dropped, and a header from
/// anyone else is not believed (it is not HTTP: 400).
#[tokio::test]
async fn the_client_address_comes_from_the_proxy_header_of_a_trusted_proxy() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.max_connections_per_ip = 2;
        c.limits.handshakes_per_second_per_ip = 1000;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
        c.server.proxy_protocol = true;
    })
    .await;
    let proxy = TcpProxy::start(s.addr).await;
    let mut open = Vec::new();
    for (client, front) in [([127, 0, 0, 2], proxy.v1), ([127, 0, 0, 3], proxy.v2)] {
        for _ in 0..2 {
            let conn = connect_from(client, front).await;
            let (status, head, stream) = upgrade_head_on(conn, front, "/ws", "", "").await;
            assert_eq!(status, 101, "{client:?} through {front}: {head}");
            open.push(stream);
        }
        // The third from the same client is its own third, not the proxy's fifth.
        let conn = connect_from(client, front).await;
        let (status, head, _) = upgrade_head_on(conn, front, "/ws", "", "").await;
        assert_eq!(status, 429, "{client:?} through {front}: {head}");
    }
    assert_eq!(roomcast_server::Stats::get(&s.stats.limit_refusals), 2);
    // The trusted proxy's address, without a header: dropped unanswered.
    let conn = connect_from([127, 0, 0, 1], s.addr).await;
    let (status, head, _) = upgrade_head_on(conn, s.addr, "/ws", "", "").await;
    assert_eq!(status, 0, "{head}");
    assert_eq!(roomcast_server::Stats::get(&s.stats.proxy_refusals), 1);
    // Another address sends a header naming a fresh client: not believed, not HTTP.
    let forged = "PROXY TCP4 127.0.0.9 127.0.0.1 5000 80\r\n";
    let conn = connect_from([127, 0, 0, 2], s.addr).await;
    let (status, head, _) = upgrade_head_on(conn, s.addr, "/ws", forged, "").await;
    assert_eq!(status, 400, "{head}");
}

/// `bytes_per_second` on its own: messages of 4,000 bytes under a rate of 10,000 bytes a
/// second (a burst of 20,000) pass five at a time, the rest get `rate_limited` with
/// their refs, and the count of messages alone would have let them all through.
#[tokio::test]
async fn a_connection_over_its_byte_rate_is_refused_by_size() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.messages_per_second = 1000;
        c.limits.bytes_per_second = 10_000;
    })
    .await;
    let mut c = Client::hello(s.addr, "big").await;
    let pad = "x".repeat(4000);
    for i in 0..12u64 {
        c.send(json!({"type":"ping","ref":i,"pad":pad})).await;
    }
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(c.recv().await);
    }
    let pongs = answers.iter().filter(|a| a["type"] == "pong").count();
    let limited = answers
        .iter()
        .filter(|a| a["code"] == "rate_limited" && a["ref"].is_u64())
        .count();
    // Five fit the burst (the hello took a few bytes); a little refills meanwhile.
    assert!((4..=6).contains(&pongs), "{pongs} pongs: {answers:?}");
    assert_eq!(pongs + limited, 12, "{answers:?}");
    // Small messages still pass once the bucket has refilled a little.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
}

/// A raw room has no replies: messages over the rate are dropped (counted), the ones
/// that passed reach the other members in order, and a sender that goes on is closed
/// with 4029 like a `/ws` one.
#[tokio::test]
async fn a_raw_room_sender_over_its_rate_is_dropped_then_closed() {
    let s = start(|c| {
        c.limits.exempt_loopback = false;
        c.limits.messages_per_second = 5;
    })
    .await;
    let mut ears = common::RawClient::connect(s.addr, "/rooms/loud").await;
    let mut mouth = common::RawClient::connect(s.addr, "/rooms/loud").await;
    for i in 0..30 {
        mouth.send_frame(0x81, format!("m{i}").as_bytes()).await;
    }
    mouth.send_frame(0x81, b"end?").await;
    let mut got = Vec::new();
    while let Ok(Some((_, payload))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), ears.next_frame()).await
    {
        got.push(String::from_utf8(payload).unwrap());
    }
    // A burst of twice the rate passed, in order, from the first; the rest were dropped.
    assert!((9..=12).contains(&got.len()), "{got:?}");
    let expected: Vec<String> = (0..got.len()).map(|i| format!("m{i}")).collect();
    assert_eq!(got, expected);
    let refused = roomcast_server::Stats::get(&s.stats.limit_refusals);
    assert_eq!(refused as usize, 31 - got.len());
    for _ in 0..200 {
        mouth.send_frame(0x81, b"more").await;
    }
    mouth.expect_close(4029).await;
}
