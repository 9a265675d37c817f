//! Every limit reached, answered, counted, and the node still serving others:
//! connections, handshakes and sessions per address (429), messages per connection
//! (`rate_limited`, then 4029), publishes per client id, and the client's address taken
//! from `X-Forwarded-For` only behind a trusted proxy. Loopback is exempt by default, so
//! these tests turn `limits.exempt_loopback` off (or name the address a proxy forwards).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, get_json_status, start, upgrade_head};
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
