//! The `/ws` requests' rules of docs/protocol.md: hello and client ids, refs on replies,
//! the rooms-per-connection limit, the ack after the publisher's own push, and the
//! history `limit`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, start};
use serde_json::{Value, json};

/// Whether a reply or push has a `ref` field at all (`null` would be one).
fn has_ref(v: &Value) -> bool {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .contains_key("ref")
}

/// Asserts `v` is an error with `code`.
#[track_caller]
fn assert_error(v: &Value, code: &str) {
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some(code)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_before_hello_is_unauthorized() {
    let s = start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    for req in [
        json!({"type": "join", "room": "r"}),
        json!({"type": "leave", "room": "r"}),
        json!({"type": "publish", "room": "r", "data": 1}),
        json!({"type": "presence", "room": "r"}),
        json!({"type": "history", "room": "r"}),
        json!({"type": "ping"}),
    ] {
        let r = c.request(req.clone()).await;
        assert_error(&r, "unauthorized");
    }
    // A refused hello does not open the session either.
    assert_error(
        &c.request(json!({"type": "hello", "client": ""})).await,
        "bad_request",
    );
    assert_error(&c.request(json!({"type": "ping"})).await, "unauthorized");
    // Nothing was joined meanwhile: the room does not exist.
    let w = c.request(json!({"type": "hello", "client": "late"})).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_error(
        &c.request(json!({"type": "presence", "room": "r"})).await,
        "not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ids_are_1_to_128_bytes_without_control_characters() {
    let s = start(|_| {}).await;
    let refused = [
        String::new(),
        "x".repeat(129),
        format!("{}x", "é".repeat(64)), // 65 characters, 129 bytes
        "nul\u{0}".to_owned(),
        "tab\there".to_owned(),
        "line\nbreak".to_owned(),
        "del\u{7f}".to_owned(),
        "c1\u{85}".to_owned(),
    ];
    let mut c = Client::connect(s.addr).await;
    for id in &refused {
        let r = c.request(json!({"type": "hello", "client": id})).await;
        assert_error(&r, "bad_request");
    }
    // Not a string (the reply's ref: see `a_mistyped_field_does_not_lose_the_ref`).
    c.send(json!({"type": "hello", "client": 42})).await;
    assert_error(&c.recv().await, "bad_request");
    // 128 bytes (64 two-byte characters) is accepted, exactly as given.
    let longest = "é".repeat(64);
    let w = c.request(json!({"type": "hello", "client": longest})).await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["client"], longest.as_str());
    assert!(w["session"].as_str().is_some_and(|s| !s.is_empty()), "{w}");
    assert!(w["node"].as_str().is_some_and(|s| !s.is_empty()), "{w}");
    // A second hello is refused and changes nothing: messages still come from the first id.
    assert_error(
        &c.request(json!({"type": "hello", "client": "someone-else"}))
            .await,
        "bad_request",
    );
    c.join("ids").await;
    c.publish("ids", json!("who am i")).await;
    assert_eq!(c.next_of("message").await["from"], longest.as_str());

    // Without `client`, the server picks `anon-<hex>`, a new one per connection.
    let mut anon = Vec::new();
    for _ in 0..2 {
        let mut a = Client::connect(s.addr).await;
        let w = a.request(json!({"type": "hello"})).await;
        let id = w["client"]
            .as_str()
            .unwrap_or_else(|| panic!("{w}"))
            .to_owned();
        let hex = id.strip_prefix("anon-").unwrap_or_else(|| panic!("{id}"));
        assert!(
            !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        a.join("ids").await;
        a.publish("ids", json!("anon")).await;
        assert_eq!(a.next_of("message").await["from"], id.as_str());
        anon.push(id);
    }
    assert_ne!(anon[0], anon[1], "each anonymous connection has its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_carries_the_request_ref_and_none_without_one() {
    let s = start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    c.send(json!({"type": "hello", "client": "refs"})).await;
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert!(!has_ref(&w), "no ref asked, none given: {w}");
    // Success replies without a ref.
    c.send(json!({"type": "ping"})).await;
    let pong = c.recv().await;
    assert_eq!(pong["type"], "pong", "{pong}");
    assert!(!has_ref(&pong), "{pong}");
    c.send(json!({"type": "join", "room": "refs"})).await;
    let joined = c.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert!(!has_ref(&joined), "{joined}");
    c.send(json!({"type": "publish", "room": "refs", "data": 1}))
        .await;
    // The publisher's own push comes first (pushes never carry a ref), then the ack.
    let push = c.recv().await;
    assert_eq!(push["type"], "message", "{push}");
    assert!(!has_ref(&push), "{push}");
    let ack = c.recv().await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(!has_ref(&ack), "{ack}");
    // An error reply without a ref, from the worker and from the room's home.
    c.send(json!({"type": "publish", "room": "elsewhere", "data": 1}))
        .await;
    let err = c.recv().await;
    assert_error(&err, "not_joined");
    assert!(!has_ref(&err), "{err}");
    c.send(json!({"type": "history", "room": "never-used"}))
        .await;
    let err = c.recv().await;
    assert_error(&err, "not_found");
    assert!(!has_ref(&err), "{err}");

    // With a ref, the same ref comes back, over the whole u64 range.
    for r in [0, 1, u64::MAX] {
        c.send(json!({"type": "ping", "ref": r})).await;
        let pong = c.recv().await;
        assert_eq!(
            (pong["type"].as_str(), pong["ref"].as_u64()),
            (Some("pong"), Some(r))
        );
        c.send(json!({"type": "leave", "room": "elsewhere", "ref": r}))
            .await;
        let err = c.recv().await;
        assert_error(&err, "not_joined");
        assert_eq!(err["ref"].as_u64(), Some(r), "{err}");
        c.send(json!({"type": "presence", "room": "never-used", "ref": r}))
            .await;
        let err = c.recv().await;
        assert_error(&err, "not_found");
        assert_eq!(err["ref"].as_u64(), Some(r), "{err}");
    }
    assert!(c.backlog.is_empty(), "{:?}", c.backlog);
}

/// A request that is valid JSON with a readable `ref` but a field of the wrong type is
/// refused with `bad_request`; its reply must still carry the `ref` (docs/protocol.md: only
/// an unparseable request cannot have its ref read), or a client waiting on that ref hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_field_does_not_lose_the_ref() {
    let s = start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    c.send(json!({"type": "hello", "client": 42, "ref": 7}))
        .await;
    let r = c.recv().await;
    assert_error(&r, "bad_request");
    assert_eq!(r["ref"], 7, "{r}");
    c.request(json!({"type": "hello", "client": "typed"})).await;
    for (n, req) in [
        json!({"type": "history", "room": "x", "limit": -1, "ref": 8}),
        json!({"type": "history", "room": "x", "limit": "10", "ref": 9}),
        json!({"type": "join", "room": 5, "ref": 10}),
        json!({"type": "publish", "room": "x", "data": 1, "id": 3, "ref": 11}),
    ]
    .into_iter()
    .enumerate()
    {
        c.send(req.clone()).await;
        let r = c.recv().await;
        assert_error(&r, "bad_request");
        assert_eq!(r["ref"], 8 + n as u64, "{req} -> {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_rooms_per_connection_a_join_is_forbidden() {
    let s = start(|c| c.rooms.max_rooms_per_connection = 3).await;
    let mut c = Client::hello(s.addr, "many").await;
    for r in ["r0", "r1", "r2"] {
        c.join(r).await;
    }
    let r = c.request(json!({"type": "join", "room": "r3"})).await;
    assert_error(&r, "forbidden");
    assert!(r["ref"].is_u64(), "{r}");
    // The refused join made no membership; the connection stays usable.
    assert_error(
        &c.request(json!({"type": "publish", "room": "r3", "data": 1}))
            .await,
        "not_joined",
    );
    assert_eq!(c.publish("r2", json!("still in")).await["offset"], 1);
    // A leave makes room for another.
    let left = c.request(json!({"type": "leave", "room": "r0"})).await;
    assert_eq!(left["type"], "left", "{left}");
    c.join("r3").await;
    assert_error(
        &c.request(json!({"type": "join", "room": "r0"})).await,
        "forbidden",
    );
    // The limit is per connection: another one (same client id) has its own.
    let mut other = Client::hello(s.addr, "many").await;
    for r in ["r0", "r1", "r2"] {
        other.join(r).await;
    }
    assert_error(
        &other.request(json!({"type": "join", "room": "r3"})).await,
        "forbidden",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_comes_after_the_publishers_own_message() {
    let s = start(|_| {}).await;
    // Members on both workers, so the room's home is elsewhere for some of them.
    let mut publishers = Vec::new();
    for i in 0..4 {
        let mut p = Client::hello(s.addr, &format!("p{i}")).await;
        p.join("own").await;
        publishers.push(p);
    }
    for (i, p) in publishers.iter_mut().enumerate() {
        // Pipelined: every publish is sent before any reply is read.
        for n in 0..30u64 {
            p.send(json!({"type": "publish", "room": "own", "data": {"p": i, "n": n}, "ref": n}))
                .await;
        }
        let mut own_seen = std::collections::HashSet::new();
        let mut acks = 0;
        while acks < 30 {
            let m = p.recv().await;
            match m["type"].as_str() {
                Some("message") if m["from"] == format!("p{i}").as_str() => {
                    own_seen.insert(m["offset"].as_u64().unwrap());
                }
                Some("message") => {}
                Some("ack") => {
                    let offset = m["offset"].as_u64().unwrap();
                    assert!(
                        own_seen.contains(&offset),
                        "p{i}: ack {m} before its own message"
                    );
                    acks += 1;
                }
                _ => panic!("unexpected {m}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limit_is_1_to_1000_and_defaults_to_100() {
    let s = start(|_| {}).await;
    let mut p = Client::hello(s.addr, "p").await;
    let epoch = p.join("lim").await["epoch"].as_str().unwrap().to_owned();
    // 1000 messages (all retained by default), pipelined.
    for n in 1..=1000u64 {
        p.send(json!({"type": "publish", "room": "lim", "data": n, "ref": n}))
            .await;
    }
    let mut acks = 0;
    while acks < 1000 {
        if p.recv().await["type"] == "ack" {
            acks += 1;
        }
    }
    let mut q = Client::hello(s.addr, "q").await;
    let offsets = |h: &Value| -> Vec<u64> {
        h["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("{h}"))
            .iter()
            .map(|m| m["offset"].as_u64().unwrap())
            .collect()
    };
    let h = q.request(json!({"type": "history", "room": "lim"})).await;
    assert_eq!(h["epoch"], epoch.as_str());
    assert_eq!(offsets(&h), (1..=100).collect::<Vec<_>>(), "default 100");
    let since = json!({"epoch": epoch, "offset": 950});
    let h = q
        .request(json!({"type": "history", "room": "lim", "since": since}))
        .await;
    assert_eq!(offsets(&h), (951..=1000).collect::<Vec<_>>());
    let h = q
        .request(json!({"type": "history", "room": "lim", "limit": 1}))
        .await;
    assert_eq!(offsets(&h), vec![1]);
    let h = q
        .request(json!({"type": "history", "room": "lim", "limit": 1000}))
        .await;
    assert_eq!(offsets(&h), (1..=1000).collect::<Vec<_>>());
    // Outside 1..=1000: refused with the request's ref, never clamped.
    for limit in [0, 1001, 5000] {
        let r = q
            .request(json!({"type": "history", "room": "lim", "limit": limit}))
            .await;
        assert_error(&r, "bad_request");
        assert!(r["ref"].is_u64(), "{r}");
    }
    // Not a u64 (the reply's ref: see `a_mistyped_field_does_not_lose_the_ref`).
    q.send(json!({"type": "history", "room": "lim", "limit": -1}))
        .await;
    assert_error(&q.recv().await, "bad_request");
    // Still usable.
    let h = q
        .request(json!({"type": "history", "room": "lim", "limit": 2}))
        .await;
    assert_eq!(offsets(&h), vec![1, 2]);
}
