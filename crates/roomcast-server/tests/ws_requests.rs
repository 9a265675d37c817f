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

/// The exact set of field names of a JSON object.
fn fields(v: &Value) -> Vec<&str> {
    let mut f: Vec<&str> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect();
    f.sort_unstable();
    f
}

/// The next text message on the wire, as written by the server.
async fn next_text(c: &mut Client) -> String {
    loop {
        let msg = common::within("a text message", common::EVENT_TIMEOUT, c.ws.recv())
            .await
            .expect("the connection closed")
            .unwrap();
        if let roomcast_ws::Message::Text(t) = msg {
            return t.as_str().to_owned();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_ack_and_message_carry_exactly_the_documented_fields() {
    let s = start(|_| {}).await;
    let mut alice = Client::hello(s.addr, "alice").await;
    let mut bob = Client::hello(s.addr, "bob").await;
    // A room with nothing yet: offset 0, and no `recovered` without `since`.
    let joined = alice.join("fields").await;
    assert_eq!(
        fields(&joined),
        ["epoch", "offset", "ref", "room", "type"],
        "{joined}"
    );
    assert_eq!(
        (joined["room"].as_str(), joined["offset"].as_u64()),
        (Some("fields"), Some(0))
    );
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());
    let joined = bob.join("fields").await;
    assert_eq!(joined["offset"], 0);
    assert_eq!(joined["epoch"], epoch.as_str(), "one room, one epoch");

    // `data` is passed on as written: key order and spacing kept, byte for byte.
    let data = r#"{"z": 1,  "a":[1.50, "x"]}"#;
    let before = now_ms();
    alice
        .send_text(&format!(
            r#"{{"type":"publish","room":"fields","data":{data},"ref":1}}"#
        ))
        .await;
    let wire = next_text(&mut bob).await;
    let after = now_ms();
    assert!(wire.contains(data), "data not as written: {wire}");
    let m: Value = serde_json::from_str(&wire).unwrap();
    assert_eq!(
        fields(&m),
        ["data", "epoch", "from", "offset", "room", "ts", "type"],
        "{m}"
    );
    assert_eq!(
        (
            m["type"].as_str(),
            m["room"].as_str(),
            m["epoch"].as_str(),
            m["offset"].as_u64(),
            m["from"].as_str()
        ),
        (
            Some("message"),
            Some("fields"),
            Some(epoch.as_str()),
            Some(1),
            Some("alice")
        ),
        "{m}"
    );
    // The server's clock in ms: within a generous minute of the test's own clock.
    let ts = m["ts"]
        .as_u64()
        .unwrap_or_else(|| panic!("ts is not a u64: {m}"));
    assert!(
        ts + 60_000 >= before && ts <= after + 60_000,
        "ts {ts} is not the clock in ms ({before}..{after})"
    );
    // The publisher gets the same push, then its ack.
    let own: Value = serde_json::from_str(&next_text(&mut alice).await).unwrap();
    assert_eq!(own, m);
    let ack: Value = serde_json::from_str(&next_text(&mut alice).await).unwrap();
    assert_eq!(fields(&ack), ["offset", "ref", "room", "type"], "{ack}");
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["ref"].as_u64(),
            ack["room"].as_str(),
            ack["offset"].as_u64()
        ),
        (Some("ack"), Some(1), Some("fields"), Some(1))
    );
    // A later member's joined carries the room's last offset.
    alice.publish("fields", json!(2)).await;
    let mut carol = Client::hello(s.addr, "carol").await;
    let joined = carol.join("fields").await;
    assert_eq!(
        (joined["offset"].as_u64(), joined["epoch"].as_str()),
        (Some(2), Some(epoch.as_str()))
    );
    let left = carol
        .request(json!({"type": "leave", "room": "fields"}))
        .await;
    assert_eq!(fields(&left), ["ref", "room", "type"], "{left}");
    let pong = carol.request(json!({"type": "ping"})).await;
    assert_eq!(fields(&pong), ["ref", "type"], "{pong}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_ignored() {
    let s = start(|_| {}).await;
    let mut a = Client::connect(s.addr).await;
    // `token` is ignored while auth is off, like any field the server does not know.
    let w = a
        .request(json!({"type": "hello", "client": "a", "token": "t", "color": "red"}))
        .await;
    assert_eq!(
        (w["type"].as_str(), w["client"].as_str()),
        (Some("welcome"), Some("a")),
        "{w}"
    );
    let j = a
        .request(json!({"type": "join", "room": "extra", "future": {"x": 1}}))
        .await;
    assert_eq!(j["type"], "joined", "{j}");
    let ack = a
        .request(json!({"type": "publish", "room": "extra", "data": "d", "priority": 9}))
        .await;
    assert_eq!(
        (ack["type"].as_str(), ack["offset"].as_u64()),
        (Some("ack"), Some(1)),
        "{ack}"
    );
    let m = a.next_of("message").await;
    assert_eq!(m["data"], "d");
    assert!(m.get("priority").is_none(), "{m}");
    for req in [
        json!({"type": "ping", "also": [1, 2]}),
        json!({"type": "presence", "room": "extra", "x": null}),
        json!({"type": "history", "room": "extra", "x": true}),
        json!({"type": "leave", "room": "extra", "x": "y"}),
    ] {
        let r = a.request(req.clone()).await;
        assert_ne!(r["type"], "error", "{req} -> {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_of_exactly_max_data_size_is_accepted() {
    let s = start(|c| c.rooms.max_data_size = 100).await;
    let mut c = Client::hello(s.addr, "sizes").await;
    c.join("size").await;
    // A JSON string of 98 characters is 100 bytes of JSON.
    let exactly = json!("x".repeat(98));
    assert_eq!(exactly.to_string().len(), 100);
    let ack = c.publish("size", exactly.clone()).await;
    assert_eq!(ack["offset"], 1);
    assert_eq!(c.next_of("message").await["data"], exactly);
    let over = json!("x".repeat(99));
    let r = c
        .request(json!({"type": "publish", "room": "size", "data": over}))
        .await;
    assert_error(&r, "too_large");
    // Counted in bytes of JSON as written, not characters: 50 two-byte characters
    // and the quotes are 102 bytes.
    let r = c
        .request(json!({"type": "publish", "room": "size", "data": "é".repeat(50)}))
        .await;
    assert_error(&r, "too_large");
    // Nothing refused reached the room.
    assert_eq!(c.publish("size", json!(2)).await["offset"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_1_to_256_bytes() {
    let s = start(|_| {}).await;
    let mut c = Client::hello(s.addr, "keys").await;
    c.join("keys").await;
    for id in [String::new(), "k".repeat(257)] {
        let r = c
            .request(json!({"type": "publish", "room": "keys", "data": 1, "id": id}))
            .await;
        assert_error(&r, "bad_request");
    }
    for (n, id) in ["k".to_owned(), "k".repeat(256)].into_iter().enumerate() {
        let r = c
            .request(json!({"type": "publish", "room": "keys", "data": n, "id": id}))
            .await;
        assert_eq!(
            (r["type"].as_str(), r["offset"].as_u64()),
            (Some("ack"), Some(n as u64 + 1)),
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_a_room_with_history_and_no_member_is_empty_not_not_found() {
    let s = start(|_| {}).await;
    let mut p = Client::hello(s.addr, "p").await;
    p.request(json!({"type": "join", "room": "kept", "presence": {"n": 1}}))
        .await;
    p.publish("kept", json!("kept")).await;
    let left = p.request(json!({"type": "leave", "room": "kept"})).await;
    assert_eq!(left["type"], "left", "{left}");
    let mut q = Client::hello(s.addr, "q").await;
    let r = q.request(json!({"type": "presence", "room": "kept"})).await;
    assert_eq!(
        (r["type"].as_str(), r["room"].as_str(), r["members"].clone()),
        (Some("presence"), Some("kept"), json!([])),
        "{r}"
    );
    let h = q.request(json!({"type": "history", "room": "kept"})).await;
    assert_eq!(h["messages"][0]["data"], "kept", "{h}");
    // A room nobody ever used is neither.
    assert_error(
        &q.request(json!({"type": "presence", "room": "unused"}))
            .await,
        "not_found",
    );
    assert_error(
        &q.request(json!({"type": "history", "room": "unused"}))
            .await,
        "not_found",
    );
}
