//! SSE, long-polling and commands over POST: the same rooms, order, offsets and recovery
//! as `/ws`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, Sse, api, api_publish, start};
use serde_json::{Value, json};

/// `GET url`, answered 200 with JSON.
async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Long-polls `path` until `n` messages arrived; returns them and the last cursor.
async fn poll_messages(
    addr: std::net::SocketAddr,
    first_query: &str,
    n: usize,
) -> (Vec<Value>, String, u32) {
    let client = reqwest::Client::new();
    let mut messages = Vec::new();
    let mut url = format!("http://{addr}/poll?{first_query}&timeout_ms=2000");
    let mut cursor = String::new();
    let mut polls = 0;
    while messages.len() < n {
        polls += 1;
        assert!(polls < 200, "too many polls");
        let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        for e in v["events"].as_array().unwrap() {
            if e["type"] == "message" {
                messages.push(e.clone());
            }
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
        url = format!("http://{addr}/poll?cursor={cursor}&timeout_ms=2000");
    }
    (messages, cursor, polls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sse_long_poll_and_api_see_the_same_stream() {
    let s = start(|_| {}).await;
    let mut ws_sub = Client::hello(s.addr, "ws-sub").await;
    ws_sub.join("all").await;
    let mut sse = Sse::open(s.addr, "room=all&client=sse-sub", None).await;
    assert_eq!(sse.next_of("joined").await["room"], "all");
    // The long-poll subscriber opens its session before anything is published.
    let first = get_json(format!(
        "http://{}/poll?room=all&client=poll-sub&timeout_ms=300",
        s.addr
    ))
    .await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
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
    assert_eq!(again.next_of("joined").await["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_across_a_burst_larger_than_one_response() {
    let s = start(|c| c.http.poll_max_events = 50).await;
    let first = get_json(format!("http://{}/poll?room=lp&timeout_ms=300", s.addr)).await;
    let cursor = first["cursor"].as_str().unwrap().to_owned();
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
    let first = get_json(format!("http://{}/poll?room=again&timeout_ms=300", s.addr)).await;
    let c0 = first["cursor"].as_str().unwrap().to_owned();
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
    tokio::time::sleep(Duration::from_millis(1500)).await; // the session expires
    let session = first["session"].as_str().unwrap();
    let gone = reqwest::Client::new()
        .post(format!("http://{}/cmd?session={session}", s.addr))
        .body(r#"{"type":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "the session expired");
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
            let resp = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
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
    assert_eq!(sse.next_of("message").await["data"], "a");
    let (status, r) = post(json!({"type": "leave", "room": "cmd"})).await;
    assert_eq!((status, r["type"].as_str()), (200, Some("left")));
    let unknown = reqwest::Client::new()
        .post(format!("http://{}/cmd?session=nope", s.addr))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
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
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sse_and_poll_requests_say_why() {
    let s = start(|_| {}).await;
    let get = |path: String| async move {
        let r = reqwest::get(path).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    for path in [
        "/sse?room=bad%20name",
        "/poll?room=bad%20name",
        "/poll?cursor=%21%21",
        "/sse?presence=%5B1%5D",
        "/poll?room=a&client=",
    ] {
        let (status, v) = get(format!("http://{}{path}", s.addr)).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["error"]["code"], "bad_request");
    }
    let r = reqwest::Client::new()
        .post(format!("http://{}/sse", s.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_held_until_a_message_or_its_timeout() {
    let s = start(|_| {}).await;
    // Poll until the session's own events (welcome, joined) are through.
    let mut url = format!("http://{}/poll?room=held&timeout_ms=1000", s.addr);
    let mut cursor = String::new();
    for _ in 0..5 {
        let v = get_json(&url).await;
        cursor = v["cursor"].as_str().unwrap().to_owned();
        url = format!("http://{}/poll?cursor={cursor}&timeout_ms=1000", s.addr);
        if v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "joined")
        {
            break;
        }
    }
    // Nothing arrives: the answer comes empty once the timeout passed.
    let started = std::time::Instant::now();
    let empty = get_json(format!(
        "http://{}/poll?cursor={cursor}&timeout_ms=400",
        s.addr
    ))
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "held for its timeout"
    );
    assert_eq!(empty["events"], json!([]));
    let cursor = empty["cursor"].as_str().unwrap().to_owned();
    // A message published while the poll waits answers it at once.
    let addr = s.addr;
    let started = std::time::Instant::now();
    let poll = tokio::spawn(async move {
        reqwest::get(format!(
            "http://{addr}/poll?cursor={cursor}&timeout_ms=10000"
        ))
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    api_publish(s.addr, "held", json!("now")).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the held poll answered when the message came")
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "held: {waited:?}");
    let data: Vec<&Value> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message")
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, vec![&json!("now")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sse_stream_gets_comment_heartbeats() {
    use futures_util::StreamExt;
    let s = start(|c| c.http.sse_heartbeat_ms = 100).await;
    let resp = reqwest::get(format!("http://{}/sse?room=quiet", s.addr))
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(3), async {
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
