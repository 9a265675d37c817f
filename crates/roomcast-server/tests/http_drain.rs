//! Draining, seen from HTTP: SSE streams end, waiting polls answer `"closed":true`, and new
//! SSE streams, poll sessions and WebSocket handshakes get 503 with `retry-after`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{EVENT_TIMEOUT, RawClient, Sse, exchange, get_json_status, http, raw_exchange, start};
use serde_json::Value;

const UPGRADE: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Checks a 503 refusal's `retry-after`.
fn assert_retry_after(resp: &str) {
    let head = resp.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{resp}");
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_ends_http_sessions_and_refuses_new_ones() {
    // One worker, and a WebSocket client that never answers the close: the node stays up,
    // draining, until that client's close times out (2 s), long enough to ask it things.
    let s = start(|c| {
        c.server.workers = 1;
        c.server.drain_timeout_ms = 30_000;
    })
    .await;
    let mut sse = Sse::open(s.addr, "room=drain&client=streamer", None).await;
    sse.next_of("joined").await;
    // A poll session past its own events, then a poll waiting with nothing to say.
    let mut url = format!(
        "http://{}/poll?room=drain&client=poller&timeout_ms=1000",
        s.addr
    );
    let cursor = loop {
        let (status, v) = get_json_status(&url).await;
        assert_eq!(status, 200, "{v}");
        let cursor = v["cursor"].as_str().unwrap().to_owned();
        if v["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "joined")
        {
            break cursor;
        }
        url = format!("http://{}/poll?cursor={cursor}&timeout_ms=1000", s.addr);
    };
    let waiting_url = format!("http://{}/poll?cursor={cursor}&timeout_ms=20000", s.addr);
    let mut waiting = tokio::spawn(async move { get_json_status(waiting_url).await });
    let early = tokio::time::timeout(Duration::from_secs(1), &mut waiting).await;
    assert!(
        early.is_err(),
        "the poll answered with nothing to say: {early:?}"
    );
    let _mute = RawClient::connect(s.addr, "/ws").await;

    s.stop.shutdown();
    let started = Instant::now();
    loop {
        let resp = raw_exchange(
            s.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if resp.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(
            started.elapsed() < EVENT_TIMEOUT,
            "/healthz still 200 10 s after the stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // New sessions are refused: an SSE stream, a poll session, a cursor whose session
    // the drain ended (it would open a new one).
    for path in [
        "/sse?room=drain&client=late".to_owned(),
        "/poll?room=drain&client=late".to_owned(),
        format!("/poll?cursor={cursor}"),
    ] {
        let (status, headers, body) =
            exchange(http().get(format!("http://{}{path}", s.addr))).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(headers["retry-after"], "1", "{path}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable", "{path}: {v}");
    }
    // And WebSocket handshakes, to a raw room and to /ws.
    for path in ["/rooms/drain", "/ws"] {
        let resp = raw_exchange(
            s.addr,
            format!("GET {path} HTTP/1.1\r\n{UPGRADE}").as_bytes(),
        )
        .await;
        assert_retry_after(&resp);
    }
    // The open stream ended; the waiting poll answered, saying its session is closed.
    assert!(sse.ended().await, "the SSE stream did not end");
    let (status, answer) = tokio::time::timeout(EVENT_TIMEOUT, waiting)
        .await
        .expect("the waiting poll did not answer")
        .unwrap();
    assert_eq!(
        (status, answer["closed"].clone()),
        (200, Value::Bool(true)),
        "{answer}"
    );
}
