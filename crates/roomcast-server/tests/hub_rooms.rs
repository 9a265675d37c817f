//! Rooms over `/ws`: who gets what, in which order, and what bad input gets back.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{Client, start};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rooms_with_overlapping_members() {
    let s = start(|_| {}).await;
    let rooms: [(&str, &[&str]); 4] = [
        ("a", &["r1", "r2"]),
        ("b", &["r2", "r3"]),
        ("c", &["r1", "r3"]),
        ("d", &["r1", "r2", "r3"]),
    ];
    let mut clients = HashMap::new();
    for (name, joins) in rooms {
        let mut c = Client::hello(s.addr, name).await;
        for r in joins {
            c.join(r).await;
        }
        clients.insert(name, c);
    }
    // Everyone publishes 5 messages to each of its rooms.
    for (name, joins) in rooms {
        let c = clients.get_mut(name).unwrap();
        for r in joins {
            for i in 0..5 {
                c.publish(r, json!({"from": name, "room": r, "i": i})).await;
            }
        }
    }
    for (name, joins) in rooms {
        // The messages of my rooms, and nothing else: count them per room.
        let expected: usize = joins
            .iter()
            .map(|r| 5 * rooms.iter().filter(|(_, js)| js.contains(r)).count())
            .sum();
        let c = clients.get_mut(name).unwrap();
        let mut got: HashMap<String, usize> = HashMap::new();
        for _ in 0..expected {
            let m = c.next_of("message").await;
            assert_eq!(m["room"], m["data"]["room"], "{m}");
            let room = m["room"].as_str().unwrap().to_owned();
            assert!(
                joins.contains(&room.as_str()),
                "{name} got a message of {room}"
            );
            *got.entry(room).or_default() += 1;
        }
        for r in joins {
            assert_eq!(
                got[*r],
                5 * rooms.iter().filter(|(_, js)| js.contains(r)).count(),
                "{name} in {r}"
            );
        }
        // Nothing more is coming: a ping round trip comes back with no message before it.
        let pong = c.request(json!({"type": "ping"})).await;
        assert_eq!(pong["type"], "pong");
        assert!(
            c.backlog.iter().all(|m| m["type"] != "message"),
            "{name} got extra: {:?}",
            c.backlog
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_under_concurrent_publishers() {
    let s = start(|_| {}).await;
    let mut watchers = Vec::new();
    for i in 0..3 {
        let mut w = Client::hello(s.addr, &format!("watcher{i}")).await;
        w.join("busy").await;
        watchers.push(w);
    }
    let per = 200;
    let mut tasks = Vec::new();
    for p in 0..4 {
        let addr = s.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::hello(addr, &format!("pub{p}")).await;
            c.join("busy").await;
            // Pipelined: all sent before any ack is read.
            for i in 0..per {
                c.send(
                    json!({"type": "publish", "room": "busy", "data": {"p": p, "i": i}, "ref": i}),
                )
                .await;
            }
            let mut acks = 0;
            while acks < per {
                if c.recv().await["type"] == "ack" {
                    acks += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut sequences = Vec::new();
    for w in &mut watchers {
        let mut seq = Vec::new();
        let mut last_i = [-1i64; 4];
        for expected_offset in 1..=(4 * per) as u64 {
            let m = w.next_of("message").await;
            assert_eq!(m["offset"], expected_offset, "offsets grow by exactly one");
            let (p, i) = (
                m["data"]["p"].as_u64().unwrap() as usize,
                m["data"]["i"].as_i64().unwrap(),
            );
            assert!(i > last_i[p], "publisher {p}'s order kept");
            last_i[p] = i;
            seq.push((p, i));
        }
        sequences.push(seq);
    }
    assert!(
        sequences.windows(2).all(|w| w[0] == w[1]),
        "every member sees the same order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_publish_is_delivered_once() {
    let s = start(|_| {}).await;
    let mut watcher = Client::hello(s.addr, "w").await;
    watcher.join("idem").await;
    let mut p = Client::hello(s.addr, "p").await;
    p.join("idem").await;
    let first = p
        .request(json!({"type": "publish", "room": "idem", "data": 1, "id": "k-1"}))
        .await;
    let retry = p
        .request(json!({"type": "publish", "room": "idem", "data": 1, "id": "k-1"}))
        .await;
    assert_eq!(first["type"], "ack");
    assert_eq!(
        retry["offset"], first["offset"],
        "the retry is acked with the first offset"
    );
    assert_ne!(retry["ref"], first["ref"], "with its own ref");
    let other = p
        .request(json!({"type": "publish", "room": "idem", "data": 2, "id": "k-2"}))
        .await;
    assert_eq!(other["offset"], first["offset"].as_u64().unwrap() + 1);
    assert_eq!(watcher.next_of("message").await["data"], 1);
    assert_eq!(
        watcher.next_of("message").await["data"],
        2,
        "k-1 was delivered once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_and_the_connection_stays_open() {
    let s = start(|c| c.rooms.max_data_size = 100).await;
    let mut c = Client::connect(s.addr).await;
    let before_hello = c.request(json!({"type": "join", "room": "x"})).await;
    assert_eq!(before_hello["code"], "unauthorized");
    c.request(json!({"type": "hello", "client": "bad"})).await;
    c.join("x").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"type": "dance"}), "unknown_type"),
        (json!({"room": "x"}), "bad_request"),
        (json!({"type": "join"}), "bad_request"),
        (json!({"type": "join", "room": "no spaces"}), "bad_request"),
        (
            json!({"type": "join", "room": "x".repeat(129)}),
            "bad_request",
        ),
        (json!({"type": "join", "room": "x"}), "bad_request"),
        (json!({"type": "publish", "room": "x"}), "bad_request"),
        (
            json!({"type": "publish", "room": "elsewhere", "data": 1}),
            "not_joined",
        ),
        (
            json!({"type": "publish", "room": "x", "data": "y".repeat(200)}),
            "too_large",
        ),
        (json!({"type": "leave", "room": "elsewhere"}), "not_joined"),
        (json!({"type": "hello", "client": "again"}), "bad_request"),
        (
            json!({"type": "history", "room": "never-used"}),
            "not_found",
        ),
        (
            json!({"type": "presence", "room": "never-used"}),
            "not_found",
        ),
    ];
    for (req, code) in cases {
        let r = c.request(req.clone()).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{req} -> {r}"
        );
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Not JSON at all: the error has no ref to carry.
    c.send_text(r#"{not json, "ref": 9"#).await;
    let e = c.recv().await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(e.get("ref").is_none(), "{e}");
    c.ws.send(roomcast_ws::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    let e = c.recv().await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(e.get("ref").is_none(), "{e}");
    // Still usable.
    assert_eq!(c.publish("x", json!("still here")).await["offset"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_stops_delivery() {
    let s = start(|_| {}).await;
    let mut a = Client::hello(s.addr, "a").await;
    let mut b = Client::hello(s.addr, "b").await;
    a.join("l").await;
    b.join("l").await;
    let left = b.request(json!({"type": "leave", "room": "l"})).await;
    assert_eq!(
        (left["type"].as_str(), left["room"].as_str()),
        (Some("left"), Some("l"))
    );
    a.publish("l", json!(1)).await;
    assert_eq!(b.request(json!({"type": "ping"})).await["type"], "pong");
    assert!(b.backlog.iter().all(|m| m["type"] != "message"));
    let again = b
        .request(json!({"type": "publish", "room": "l", "data": 1}))
        .await;
    assert_eq!(again["code"], "not_joined");
}

/// An idempotency key is per room: the same `id` in two rooms is two messages, each
/// delivered; a retry in either room is still deduplicated there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_per_room() {
    let s = start(|_| {}).await;
    let mut watcher = Client::hello(s.addr, "w").await;
    let mut p = Client::hello(s.addr, "p").await;
    for room in ["one", "two"] {
        watcher.join(room).await;
        p.join(room).await;
    }
    let publish = |room: &str, data: Value| json!({"type": "publish", "room": room, "data": data, "id": "same-key"});
    let a = p.request(publish("one", json!("in one"))).await;
    let b = p.request(publish("two", json!("in two"))).await;
    assert_eq!(
        (a["type"].as_str(), a["offset"].as_u64()),
        (Some("ack"), Some(1)),
        "{a}"
    );
    assert_eq!(
        (b["type"].as_str(), b["offset"].as_u64()),
        (Some("ack"), Some(1)),
        "{b}"
    );
    // Retries in each room: acked with the first offsets, delivered nowhere.
    let a2 = p.request(publish("one", json!("in one"))).await;
    let b2 = p.request(publish("two", json!("in two"))).await;
    assert_eq!(
        (a2["offset"].as_u64(), b2["offset"].as_u64()),
        (Some(1), Some(1))
    );
    // A later message per room: the watcher sees exactly the first copy, then it.
    for room in ["one", "two"] {
        assert_eq!(p.publish(room, json!("after")).await["offset"], 2);
    }
    let mut got: HashMap<String, Vec<(u64, Value)>> = HashMap::new();
    for _ in 0..4 {
        let m = watcher.next_of("message").await;
        got.entry(m["room"].as_str().unwrap().to_owned())
            .or_default()
            .push((m["offset"].as_u64().unwrap(), m["data"].clone()));
    }
    assert_eq!(got["one"], vec![(1, json!("in one")), (2, json!("after"))]);
    assert_eq!(got["two"], vec![(1, json!("in two")), (2, json!("after"))]);
    let h = watcher
        .request(json!({"type": "history", "room": "two"}))
        .await;
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(2), "{h}");
}
