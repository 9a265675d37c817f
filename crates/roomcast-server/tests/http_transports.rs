//! SSE, long-polling and commands over POST: the same rooms, order, offsets and recovery
//! as `/ws`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Client, EVENT_TIMEOUT, Sse, api, api_publish, exchange, get_json, get_json_status, http,
    poll_messages, poll_past_joined, start, wait_for_members,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sse_long_poll_and_api_see_the_same_stream() {
    let s = start(|_| {}).await;
    let mut ws_sub = Client::hello(s.addr, "ws-sub").await;
    ws_sub.join("all").await;
    let mut sse = Sse::open(s.addr, "room=all&client=sse-sub", None).await;
    assert_eq!(sse.next_of("joined").await["room"], "all");
    // The long-poll subscriber is in the room (its `joined` came) before anything is
    // published: a publish racing the join from another worker could come first.
    let cursor = poll_past_joined(s.addr, "room=all&client=poll-sub", 1).await;
    let mut publisher = Client::hello(s.addr, "ws-pub").await;
    publisher.join("all").await;
    for i in 0..30 {
        if i % 2 == 0 {
            publisher.publish("all", json!({"i": i, "via": "ws"})).await;
        } else {
            api_publish(s.addr, "all", json!({"i": i, "via": "api"})).await;
        }
    }
    let mut via_ws = Vec::new();
    for _ in 0..30 {
        via_ws.push(ws_sub.next_of("message").await);
    }
    let mut via_sse = Vec::new();
    for _ in 0..30 {
        via_sse.push(sse.next_of("message").await);
    }
    let (via_poll, _, _) = poll_messages(s.addr, &format!("cursor={cursor}"), 30).await;
    let key = |m: &Value| {
        (
            m["offset"].as_u64().unwrap(),
            m["data"]["i"].as_u64().unwrap(),
            m["epoch"].as_str().unwrap().to_owned(),
        )
    };
    let expected: Vec<_> = via_ws.iter().map(key).collect();
    assert_eq!(
        expected.iter().map(|k| k.0).collect::<Vec<_>>(),
        (1..=30).collect::<Vec<u64>>()
    );
    assert_eq!(
        expected.iter().map(|k| k.1).collect::<Vec<_>>(),
        (0..30).collect::<Vec<u64>>(),
        "publish order kept"
    );
    assert_eq!(
        via_sse.iter().map(key).collect::<Vec<_>>(),
        expected,
        "SSE sees the same"
    );
    assert_eq!(
        via_poll.iter().map(key).collect::<Vec<_>>(),
        expected,
        "long-poll sees the same"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_with_last_event_id_after_a_cut_mid_burst() {
    let s = start(|_| {}).await;
    let mut sse = Sse::open(s.addr, "room=burst&client=reader", None).await;
    sse.next_of("joined").await;
    let addr = s.addr;
    let burst = tokio::spawn(async move {
        for i in 1..=200 {
            api_publish(addr, "burst", json!(i)).await;
        }
    });
    let mut got = Vec::new();
    while got.len() < 60 {
        got.push(sse.next_of("message").await["offset"].as_u64().unwrap());
    }
    let last_id = sse.last_id.clone();
    assert!(last_id.starts_with("burst!"), "{last_id}");
    drop(sse); // cut mid-burst
    burst.await.unwrap();
    let mut again = Sse::open(s.addr, "room=burst&client=reader", Some(&last_id)).await;
    let joined = again.next_of("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    while got.len() < 200 {
        got.push(again.next_of("message").await["offset"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (1..=200).collect::<Vec<u64>>(),
        "every message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_signals_when_it_cannot_recover() {
    let s = start(|c| c.rooms.history_max_messages = 10).await;
    let mut sse = Sse::open(s.addr, "room=short", None).await;
    sse.next_of("joined").await;
    api_publish(s.addr, "short", json!(1)).await;
    sse.next_of("message").await;
    let last_id = sse.last_id.clone();
    drop(sse);
    for i in 0..30 {
        api_publish(s.addr, "short", json!(i)).await;
    }
    let mut again = Sse::open(s.addr, "room=short", Some(&last_id)).await;
    let joined = again.next_of("joined").await;
    assert_eq!(joined["recovered"], false, "{joined}");
    assert_eq!(joined["offset"], 31, "{joined}");
    // Nothing is replayed: the first message after the `joined` is a live one.
    let live = api_publish(s.addr, "short", json!("live")).await;
    let next = again.next_of("message").await;
    assert_eq!(
        (next["offset"].as_u64(), &next["data"]),
        (Some(live), &json!("live")),
        "{next}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_across_a_burst_larger_than_one_response() {
    let s = start(|c| c.http.poll_max_events = 50).await;
    let cursor = poll_past_joined(s.addr, "room=lp", 1).await;
    for i in 1..=500 {
        api_publish(s.addr, "lp", json!(i)).await;
    }
    let (messages, _, polls) = poll_messages(s.addr, &format!("cursor={cursor}"), 500).await;
    let offsets: Vec<u64> = messages
        .iter()
        .map(|m| m["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        offsets,
        (1..=500).collect::<Vec<u64>>(),
        "never lost, never repeated"
    );
    assert!(
        polls >= 10,
        "500 messages at 50 per answer took {polls} polls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_poll_answer_is_sent_again() {
    let s = start(|_| {}).await;
    let c0 = poll_past_joined(s.addr, "room=again", 1).await;
    for i in 1..=3 {
        api_publish(s.addr, "again", json!(i)).await;
    }
    let url = |c: &str| format!("http://{}/poll?cursor={c}&timeout_ms=500", s.addr);
    let a = get_json(url(&c0)).await;
    // The answer was "lost": poll again with the same cursor, get the same events.
    let b = get_json(url(&c0)).await;
    assert_eq!(a["events"], b["events"]);
    assert!(
        a["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "message")
    );
    // Acknowledged by the next cursor: nothing repeats.
    api_publish(s.addr, "again", json!(4)).await;
    let c = get_json(url(b["cursor"].as_str().unwrap())).await;
    let offsets: Vec<u64> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_poll_session_recovers_from_its_cursor() {
    let s = start(|c| c.http.poll_session_ttl_ms = 200).await;
    let first = get_json(format!("http://{}/poll?room=exp&timeout_ms=300", s.addr)).await;
    // In the room before the publish (the join and the publish come from different workers).
    wait_for_members(s.addr, "exp", 1).await;
    let (messages, cursor, _) = {
        api_publish(s.addr, "exp", json!(1)).await;
        poll_messages(
            s.addr,
            &format!("cursor={}", first["cursor"].as_str().unwrap()),
            1,
        )
        .await
    };
    assert_eq!(messages.len(), 1);
    // Nobody polls: the session expires, and leaves the room (a command would count as
    // a sign of life, so the room's member count is watched instead).
    wait_for_members(s.addr, "exp", 0).await;
    let session = first["session"].as_str().unwrap();
    let (status, _, body) = exchange(
        http()
            .post(format!("http://{}/cmd?session={session}", s.addr))
            .body(r#"{"type":"ping"}"#),
    )
    .await;
    assert_eq!(status, 404, "the session expired: {body}");
    for i in 2..=5 {
        api_publish(s.addr, "exp", json!(i)).await;
    }
    let (rest, _, _) = poll_messages(s.addr, &format!("cursor={cursor}"), 4).await;
    let offsets: Vec<u64> = rest.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(
        offsets,
        vec![2, 3, 4, 5],
        "a new session rejoined from the cursor's position"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_over_post() {
    let s = start(|_| {}).await;
    let mut sse = Sse::open(s.addr, "client=poster", None).await;
    let session = sse.next_of("welcome").await["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |body: Value| {
        let url = format!("http://{}/cmd?session={session}", s.addr);
        async move {
            let (status, _, text) = exchange(http().post(url).json(&body)).await;
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            (status, v)
        }
    };
    let (status, r) = post(json!({"type": "publish", "room": "cmd", "data": 1, "ref": 1})).await;
    assert_eq!((status, r["code"].as_str()), (409, Some("not_joined")));
    let (status, r) =
        post(json!({"type": "join", "room": "cmd", "presence": {"via": "sse"}, "ref": 2})).await;
    assert_eq!(
        (status, r["type"].as_str(), r["ref"].as_u64()),
        (200, Some("joined"), Some(2))
    );
    let (status, replies) = post(json!([
        {"type": "publish", "room": "cmd", "data": "a", "id": "x", "ref": 3},
        {"type": "publish", "room": "cmd", "data": "a", "id": "x", "ref": 4},
        {"type": "presence", "room": "cmd", "ref": 5},
        {"type": "nonsense", "ref": 6}
    ]))
    .await;
    assert_eq!(status, 200);
    let replies = replies.as_array().unwrap();
    assert_eq!(
        (replies[0]["type"].as_str(), replies[0]["offset"].as_u64()),
        (Some("ack"), Some(1))
    );
    assert_eq!(replies[1]["offset"], 1, "the same id is published once");
    assert_eq!(replies[2]["members"][0]["client"], "poster");
    assert_eq!(replies[3]["code"], "unknown_type");
    // A retry in a request of its own is acked with the first offset too.
    let (status, r) =
        post(json!({"type": "publish", "room": "cmd", "data": "a", "id": "x", "ref": 7})).await;
    assert_eq!(
        (status, r["type"].as_str(), r["offset"].as_u64()),
        (200, Some("ack"), Some(1))
    );
    // The sentinel comes right after the one copy: no retry was delivered again.
    let (status, r) = post(json!({"type": "publish", "room": "cmd", "data": "b", "ref": 8})).await;
    assert_eq!((status, r["offset"].as_u64()), (200, Some(2)), "{r}");
    let first = sse.next_of("message").await;
    assert_eq!(
        (first["data"].clone(), first["offset"].clone()),
        (json!("a"), json!(1))
    );
    let next = sse.next_of("message").await;
    assert_eq!(
        (next["data"].clone(), next["offset"].clone()),
        (json!("b"), json!(2)),
        "exactly one copy of the message with id x"
    );
    let (status, r) = post(json!({"type": "leave", "room": "cmd"})).await;
    assert_eq!((status, r["type"].as_str()), (200, Some("left")));
    let (status, _, _) = exchange(
        http()
            .post(format!("http://{}/cmd?session=nope", s.addr))
            .body("{}"),
    )
    .await;
    assert_eq!(status, 404);
    let (status, r) = post(json!("not an object")).await;
    assert_eq!((status, r["code"].as_str()), (400, Some("bad_request")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_sse_and_poll_members_appears_and_expires() {
    let s = start(|c| c.http.poll_session_ttl_ms = 300).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher
        .request(json!({"type": "join", "room": "seen", "presence": {}}))
        .await;
    let names = |d: &Value, k: &str| {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|m| m["client"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut sse = Sse::open(
        s.addr,
        "room=seen&client=sse-member&presence=%7B%22on%22%3A%22sse%22%7D",
        None,
    )
    .await;
    sse.next_of("joined").await;
    while !names(&watcher.next_of("presence_diff").await, "joined")
        .contains(&"sse-member".to_owned())
    {}
    let (_, list) = api(s.addr, "GET", "/api/rooms/seen/presence", None).await;
    let info = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["client"] == "sse-member")
        .unwrap()["info"]
        .clone();
    assert_eq!(info, json!({"on": "sse"}));
    drop(sse); // the stream closes: presence ends
    while !names(&watcher.next_of("presence_diff").await, "left").contains(&"sse-member".to_owned())
    {
    }

    let _ = get_json(format!(
        "http://{}/poll?room=seen&client=poll-member&presence=%7B%7D&timeout_ms=100",
        s.addr
    ))
    .await;
    while !names(&watcher.next_of("presence_diff").await, "joined")
        .contains(&"poll-member".to_owned())
    {}
    // It stops polling: its presence expires after the session's time to live.
    let started = std::time::Instant::now();
    while !names(&watcher.next_of("presence_diff").await, "left")
        .contains(&"poll-member".to_owned())
    {}
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a 300 ms time to live took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sse_and_poll_requests_say_why() {
    let s = start(|_| {}).await;
    let get = |path: String| async move { get_json_status(path).await };
    for path in [
        "/sse?room=bad%20name",
        "/poll?room=bad%20name",
        "/poll?cursor=%21%21",
        "/sse?presence=%5B1%5D",
        "/poll?room=a&client=",
        "/poll?room=a&timeout_ms=soon",
        "/poll?room=a&timeout_ms=-1",
        "/poll?room=a&limit=10.5",
        "/poll?room=a&limit=0",
    ] {
        let (status, v) = get(format!("http://{}{path}", s.addr)).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    // Presence info past `limits.max_presence_size` (4 KiB) is refused on every transport.
    let big = format!("{{\"bio\":\"{}\"}}", "x".repeat(5000));
    let q: String = form_urlencoded::byte_serialize(big.as_bytes()).collect();
    for path in [
        format!("/sse?room=a&presence={q}"),
        format!("/poll?room=a&presence={q}"),
    ] {
        let (status, v) = get(format!("http://{}{path}", s.addr)).await;
        assert_eq!(status, 413, "{v}");
        assert_eq!(v["error"]["code"], "too_large");
    }
    let mut ws = common::Client::hello(s.addr, "big").await;
    let bio: serde_json::Value = serde_json::from_str(&big).unwrap();
    let r = ws
        .request(json!({"type":"join","room":"a","presence":bio,"ref":7}))
        .await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("too_large")),
        "{r}"
    );
    let fits = json!({"bio": "x".repeat(4000)});
    let r = ws
        .request(json!({"type":"join","room":"a","presence":fits,"ref":8}))
        .await;
    assert_eq!(r["type"], "joined", "{r}");
    for (method, path, allow) in [
        (reqwest::Method::POST, "/sse", "GET"),
        (reqwest::Method::PUT, "/poll", "GET"),
        (reqwest::Method::GET, "/cmd?session=x", "POST"),
        (reqwest::Method::POST, "/healthz", "GET, HEAD"),
    ] {
        let (status, headers, body) =
            exchange(http().request(method.clone(), format!("http://{}{path}", s.addr))).await;
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(headers["allow"], allow, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_held_until_a_message_or_its_timeout() {
    let s = start(|_| {}).await;
    let cursor = poll_past_joined(s.addr, "room=held", 1).await;
    let url = |cursor: &str, timeout_ms: u64| {
        format!(
            "http://{}/poll?cursor={cursor}&timeout_ms={timeout_ms}",
            s.addr
        )
    };
    // Nothing is published: the answer comes empty, and not before its timeout.
    let started = Instant::now();
    let empty = get_json(url(&cursor, 400)).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}, before timeout_ms=400"
    );
    assert_eq!(empty["events"], json!([]));
    assert_eq!(empty.get("closed"), None, "{empty}");
    let cursor = empty["cursor"].as_str().unwrap().to_owned();
    // A poll with a long timeout is held: still unanswered after a second...
    let mut poll = tokio::spawn(get_json(url(&cursor, 20_000)));
    let early = tokio::time::timeout(Duration::from_secs(1), &mut poll).await;
    assert!(early.is_err(), "answered with nothing to say: {early:?}");
    // ...until a message comes: that answers it, long before its timeout.
    let published = Instant::now();
    api_publish(s.addr, "held", json!("now")).await;
    let answer = tokio::time::timeout(EVENT_TIMEOUT, poll)
        .await
        .expect("the held poll was not answered when the message came")
        .unwrap();
    assert!(published.elapsed() < EVENT_TIMEOUT);
    let events = answer["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{answer}");
    assert_eq!(
        (events[0]["type"].clone(), events[0]["data"].clone()),
        (json!("message"), json!("now"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sse_stream_gets_comment_heartbeats() {
    use futures_util::StreamExt;
    let s = start(|c| c.http.sse_heartbeat_ms = 100).await;
    let resp = tokio::time::timeout(
        common::HTTP_TIMEOUT,
        common::http_streaming()
            .get(format!("http://{}/sse?room=quiet", s.addr))
            .send(),
    )
    .await
    .expect("no SSE answer")
    .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            seen.extend_from_slice(&chunk.unwrap());
            let text = String::from_utf8_lossy(&seen);
            // Two comment heartbeats: the stream is kept alive while nothing happens.
            if text.matches(": keepalive").count() >= 2 {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{:?}", String::from_utf8_lossy(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_every_room_of_a_stream() {
    let s = start(|_| {}).await;
    let mut sse = Sse::open(s.addr, "room=ra&room=rb&client=multi", None).await;
    for _ in 0..2 {
        sse.next_of("joined").await;
    }
    for i in 1..=3 {
        api_publish(s.addr, "ra", json!(i)).await;
        api_publish(s.addr, "rb", json!(i)).await;
    }
    for _ in 0..6 {
        sse.next_of("message").await;
    }
    let last_id = sse.last_id.clone();
    drop(sse);
    for i in 4..=5 {
        api_publish(s.addr, "ra", json!(i)).await;
        api_publish(s.addr, "rb", json!(i)).await;
    }
    let mut sse = Sse::open(s.addr, "room=ra&room=rb&client=multi", Some(&last_id)).await;
    let mut missed = Vec::new();
    while missed.len() < 4 {
        let (name, v) = sse.next().await;
        match name.as_str() {
            "joined" => assert_eq!(v["recovered"], true, "{v}"),
            "message" => missed.push((
                v["room"].as_str().unwrap().to_owned(),
                v["offset"].as_u64().unwrap(),
            )),
            _ => {}
        }
    }
    missed.sort();
    let expected: Vec<(String, u64)> = [("ra", 4), ("ra", 5), ("rb", 4), ("rb", 5)]
        .iter()
        .map(|(r, o)| (r.to_string(), *o))
        .collect();
    assert_eq!(missed, expected, "each room's missed messages, once");
    // Nothing else was owed: the next message is a new one.
    api_publish(s.addr, "ra", json!("after")).await;
    let next = sse.next_of("message").await;
    assert_eq!(
        (next["data"].clone(), next["offset"].clone()),
        (json!("after"), json!(6))
    );
}

/// An SSE response body read as raw blocks (the text between blank lines), each read
/// bounded: for what a parser hides (which lines an event has).
struct RawSse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: String,
}

impl RawSse {
    async fn open(addr: std::net::SocketAddr, query: &str) -> Self {
        let resp = tokio::time::timeout(
            common::HTTP_TIMEOUT,
            common::http_streaming()
                .get(format!("http://{addr}/sse?{query}"))
                .send(),
        )
        .await
        .expect("no SSE answer")
        .unwrap();
        assert_eq!(resp.status(), 200);
        Self {
            body: Box::pin(resp.bytes_stream()),
            text: String::new(),
        }
    }

    /// The next block, without its blank line.
    async fn block(&mut self) -> String {
        use futures_util::StreamExt;
        loop {
            if let Some(i) = self.text.find("\n\n") {
                let block = self.text[..i].to_owned();
                self.text.drain(..i + 2);
                return block;
            }
            let chunk = tokio::time::timeout(EVENT_TIMEOUT, self.body.next())
                .await
                .expect("no SSE bytes within 10 s")
                .expect("the stream ended")
                .unwrap();
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next block whose `event:` is `name`.
    async fn block_of(&mut self, name: &str) -> String {
        loop {
            let b = self.block().await;
            if b.lines().any(|l| l == format!("event: {name}")) {
                return b;
            }
        }
    }
}

/// The `id:` line of a raw SSE block.
fn id_line(block: &str) -> Option<&str> {
    block.lines().find_map(|l| l.strip_prefix("id: "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_starts_with_retry_and_presence_events_carry_no_id() {
    let s = start(|_| {}).await;
    let mut raw = RawSse::open(s.addr, "room=pid&client=watcher&presence=%7B%7D").await;
    assert_eq!(raw.block().await, "retry: 1000", "the stream's first lines");
    let joined = raw.block_of("joined").await;
    assert!(id_line(&joined).is_some(), "{joined}");
    api_publish(s.addr, "pid", json!(1)).await;
    let first = raw.block_of("message").await;
    let first_id = id_line(&first).unwrap().to_owned();
    // Someone joins visibly: a presence_diff, with no id line, so the last id stays.
    let mut bob = Client::hello(s.addr, "bob").await;
    bob.request(json!({"type": "join", "room": "pid", "presence": {"n": 1}}))
        .await;
    // (The watcher's own join may come first, in a diff of its own.)
    loop {
        let b = raw.block().await;
        assert!(
            !b.contains("event: message"),
            "a message came before the diff: {b}"
        );
        if b.contains("event: presence_diff") {
            assert_eq!(id_line(&b), None, "a presence event carries no id: {b}");
            if b.contains(r#""client":"bob""#) {
                break;
            }
        }
    }
    // The next message's id moves on from the last message's.
    api_publish(s.addr, "pid", json!(2)).await;
    let second = raw.block_of("message").await;
    let (room, rest) = first_id.split_once('!').unwrap();
    let (epoch, offset) = rest.split_once('!').unwrap();
    assert_eq!((room, offset), ("pid", "1"), "{first_id}");
    assert_eq!(id_line(&second), Some(format!("pid!{epoch}!2").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_from_a_last_event_id_parameter_like_the_header() {
    let s = start(|_| {}).await;
    let mut sse = Sse::open(s.addr, "room=lp1&client=param", None).await;
    sse.next_of("joined").await;
    for i in 1..=3 {
        api_publish(s.addr, "lp1", json!(i)).await;
    }
    for _ in 0..3 {
        sse.next_of("message").await;
    }
    let last_id = sse.last_id.clone();
    drop(sse);
    for i in 4..=6 {
        api_publish(s.addr, "lp1", json!(i)).await;
    }
    // No header: the id comes as a query parameter.
    let encoded: String = form_urlencoded::byte_serialize(last_id.as_bytes()).collect();
    let mut again = Sse::open(
        s.addr,
        &format!("room=lp1&client=param&last_event_id={encoded}"),
        None,
    )
    .await;
    let joined = again.next_of("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(again.next_of("message").await["offset"].as_u64().unwrap());
    }
    assert_eq!(
        missed,
        vec![4, 5, 6],
        "exactly the missed messages, in order"
    );
    api_publish(s.addr, "lp1", json!(7)).await;
    assert_eq!(
        again.next_of("message").await["offset"],
        7,
        "then live ones"
    );
    // Without it, a stream does not recover: no `recovered`, nothing replayed.
    let mut fresh = Sse::open(s.addr, "room=lp1&client=param", None).await;
    let joined = fresh.next_of("joined").await;
    assert_eq!(joined.get("recovered"), None, "{joined}");
    api_publish(s.addr, "lp1", json!(8)).await;
    assert_eq!(fresh.next_of("message").await["offset"], 8);
}

const FLOOD: u64 = 400;

/// A server whose sessions may queue 64 KiB, and an SSE reader of room `flood` with a tiny
/// receive buffer that reads its `joined`, then nothing while 400 messages of 32 KiB
/// (12.5 MiB, more than every buffer on the way) are published, then reads what it was
/// sent. Returns the offsets it got and its last event id.
async fn flood_a_slow_sse_reader() -> (common::TestServer, Vec<u64>, String) {
    let s = start(|c| c.websocket.max_queued_bytes = 64 * 1024).await;
    let mut slow =
        Sse::open_with_receive_buffer(s.addr, "room=flood&client=slow", None, 4096).await;
    slow.next_of("joined").await;
    let filler = "x".repeat(32 * 1024);
    for i in 1..=FLOOD {
        api_publish(s.addr, "flood", json!({"i": i, "pad": filler})).await;
    }
    let mut got = Vec::new();
    while let Some((name, v)) = slow.next_or_end().await {
        if name == "message" {
            got.push(v["offset"].as_u64().unwrap());
        }
    }
    (s, got, slow.last_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_session_that_falls_behind_is_closed() {
    let (s, got, last_id) = flood_a_slow_sse_reader().await;
    // The stream ended (next_or_end saw its end) before the last message: it was cut.
    assert!(
        (got.len() as u64) < FLOOD,
        "the stream was not cut: all {FLOOD} messages came"
    );
    assert_eq!(
        got,
        (1..=got.len() as u64).collect::<Vec<_>>(),
        "no gap before the cut"
    );
    assert!(last_id.ends_with(&format!("!{}", got.len())), "{last_id}");
    // The session is gone: it left the room.
    wait_for_members(s.addr, "flood", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_session_cut_as_too_slow_resumes_from_its_last_id_without_loss() {
    let (s, mut got, last_id) = flood_a_slow_sse_reader().await;
    assert!((got.len() as u64) < FLOOD, "the stream was not cut");
    let mut again = Sse::open(s.addr, "room=flood&client=slow", Some(&last_id)).await;
    let joined = again.next_of("joined").await;
    assert_eq!(joined["recovered"], true, "{joined}");
    while got.len() < FLOOD as usize {
        got.push(again.next_of("message").await["offset"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (1..=FLOOD).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
}

/// Polls from `cursor` (moved along) until `n` offsets came, in at most `max_polls`
/// polls, each answer holding at most `at_most` events; `query(poll)` is what each poll
/// adds to its cursor. Returns the offsets in order and the polls it took.
async fn poll_offsets(
    addr: std::net::SocketAddr,
    cursor: &mut String,
    n: usize,
    max_polls: usize,
    at_most: usize,
    query: impl Fn(usize) -> &'static str,
) -> (Vec<u64>, usize) {
    let mut offsets = Vec::new();
    let mut polls = 0;
    while offsets.len() < n {
        let q = query(polls);
        polls += 1;
        assert!(
            polls <= max_polls,
            "{n} messages not through in {max_polls} polls: {offsets:?}"
        );
        let v = get_json(format!("http://{addr}/poll?cursor={cursor}{q}")).await;
        let events = v["events"].as_array().unwrap();
        assert!(
            events.len() <= at_most,
            "{q:?}: {} events with a maximum of {at_most}",
            events.len()
        );
        offsets.extend(events.iter().filter_map(|e| e["offset"].as_u64()));
        *cursor = v["cursor"].as_str().unwrap().to_owned();
    }
    (offsets, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_limit_bounds_each_answer_and_the_rest_follows() {
    let s = start(|_| {}).await;
    let mut cursor = poll_past_joined(s.addr, "room=lim", 1).await;
    for i in 1..=25 {
        api_publish(s.addr, "lim", json!(i)).await;
    }
    let (offsets, polls) = poll_offsets(
        s.addr,
        &mut cursor,
        25,
        50,
        10,
        |_| "&limit=10&timeout_ms=2000",
    )
    .await;
    assert!(
        polls >= 3,
        "25 messages at most 10 per answer took {polls} polls"
    );
    assert_eq!(
        offsets,
        (1..=25).collect::<Vec<u64>>(),
        "none lost, none twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_limit_and_timeout_are_capped_by_their_settings() {
    let s = start(|c| {
        c.http.poll_max_events = 5;
        c.http.poll_timeout_ms = 300;
    })
    .await;
    let mut cursor = poll_past_joined(s.addr, "room=capped", 1).await;
    for i in 1..=12 {
        api_publish(s.addr, "capped", json!(i)).await;
    }
    // A limit above the maximum, or none, gets at most http.poll_max_events per answer.
    let (offsets, polls) = poll_offsets(s.addr, &mut cursor, 12, 12, 5, |poll| {
        if poll % 2 == 0 {
            "&limit=1000&timeout_ms=300"
        } else {
            "&timeout_ms=300"
        }
    })
    .await;
    assert!(
        polls >= 3,
        "12 messages at most 5 per answer took {polls} polls"
    );
    assert_eq!(
        offsets,
        (1..=12).collect::<Vec<u64>>(),
        "none lost, none twice"
    );
    // A timeout above the maximum waits http.poll_timeout_ms (300 ms), not 60 s.
    let started = std::time::Instant::now();
    let v = get_json(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=60000",
        s.addr
    ))
    .await;
    let waited = started.elapsed();
    assert_eq!(v["events"], json!([]), "{v}");
    assert!(
        waited >= Duration::from_millis(300),
        "answered before its timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "timeout_ms=60000 was not capped at 300 ms: {waited:?}"
    );
}

/// A session the server ends says why, with the close code a WebSocket would get: SSE in
/// a last `closed` event, a poll in its last answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_ends_says_why() {
    let s = common::start(|_| {}).await;
    let mut sse = common::Sse::open(s.addr, "room=a&client=eve", None).await;
    sse.next_of("joined").await;
    let first = common::get_json(format!(
        "http://{}/poll?room=a&client=mallory&timeout_ms=0",
        s.addr
    ))
    .await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    for client in ["eve", "mallory"] {
        let (st, v) = common::api(
            s.addr,
            "POST",
            "/api/disconnect",
            Some(serde_json::json!({"client": client, "code": 4003, "reason": "banned"})),
        )
        .await;
        assert_eq!(
            (st, &v["disconnected"]),
            (200, &serde_json::json!(1)),
            "{v}"
        );
    }
    let closed = sse.next_of("closed").await;
    assert_eq!(
        closed,
        serde_json::json!({"type":"closed","code":4003,"reason":"banned"})
    );
    assert!(sse.ended().await, "the stream ends after its closed event");
    let last = common::get_json(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=0",
        s.addr
    ))
    .await;
    assert_eq!(last["closed"], true, "{last}");
    assert_eq!(last["code"], 4003, "{last}");
    assert_eq!(last["reason"], "banned", "{last}");
}
