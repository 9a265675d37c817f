//! Liveness on `/ws`: the server pings a quiet connection, closes one that never answers,
//! counts any frame as an answer, and tells clients its interval in `welcome`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, RawClient, start};
use roomcast_server::Stats;
use roomcast_ws::OpCode;
use serde_json::{Value, json};

/// Says hello on a raw client (which never answers pings by itself) and reads the welcome.
async fn raw_hello(c: &mut RawClient, client: &str) -> Value {
    let hello = json!({"type": "hello", "client": client, "ref": 1}).to_string();
    c.send_frame(0x81, hello.as_bytes()).await;
    let (op, payload) = c.next_frame().await.expect("a welcome");
    assert_eq!(op, OpCode::Text);
    let w: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(w["type"], "welcome", "{w}");
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_heartbeat_ms_is_the_configured_interval() {
    let s = start(|_| {}).await;
    let mut c = Client::connect(s.addr).await;
    let w = c.request(json!({"type": "hello", "client": "a"})).await;
    assert_eq!(w["heartbeat_ms"], 25000, "the default: {w}");
    let s = start(|c| c.websocket.heartbeat_interval_ms = 12_345).await;
    let mut c = Client::connect(s.addr).await;
    let w = c.request(json!({"type": "hello", "client": "a"})).await;
    assert_eq!(w["heartbeat_ms"], 12_345, "{w}");
}

/// A peer that never answers a ping gets a close frame (code 1001, "going away") once
/// the timeout has passed, and then the TCP connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_is_closed_after_the_timeout() {
    let (interval, timeout) = (200, 400);
    let s = start(|c| {
        c.websocket.heartbeat_interval_ms = interval;
        c.websocket.heartbeat_timeout_ms = timeout;
    })
    .await;
    let mut mute = RawClient::connect(s.addr, "/ws").await;
    // The server last heard from us no earlier than this.
    let before_hello = Instant::now();
    let welcome = raw_hello(&mut mute, "mute").await;
    assert_eq!(welcome["heartbeat_ms"], interval);
    let (op, _) = mute.next_frame().await.expect("a ping");
    assert_eq!(op, OpCode::Ping);
    assert!(
        before_hello.elapsed() >= Duration::from_millis(interval),
        "pinged after {:?} of quiet",
        before_hello.elapsed()
    );
    // No answer: the next frame is the close, then TCP closes; not before the timeout.
    mute.expect_close(1001).await;
    assert!(
        before_hello.elapsed() >= Duration::from_millis(interval + timeout),
        "closed {:?} after the last frame",
        before_hello.elapsed()
    );
    assert_eq!(Stats::get(&s.stats.heartbeat_timeouts), 1);
}

/// A peer that never sends a pong, but answers every ping with some other frame (a text
/// request or a ping of its own), stays open well past interval + timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_frame_counts_as_an_answer() {
    let (interval, timeout) = (200, 1000);
    let s = start(|c| {
        c.websocket.heartbeat_interval_ms = interval;
        c.websocket.heartbeat_timeout_ms = timeout;
    })
    .await;
    let mut c = RawClient::connect(s.addr, "/ws").await;
    let started = Instant::now();
    raw_hello(&mut c, "no-pongs").await;
    let mut pings = 0;
    let mut replies = 0;
    while pings < 8 {
        let (op, payload) = c.next_frame().await.expect("the connection stays open");
        match op {
            OpCode::Ping => {
                pings += 1;
                if pings % 2 == 0 {
                    let req = json!({"type": "ping", "ref": 100 + pings}).to_string();
                    c.send_frame(0x81, req.as_bytes()).await;
                } else {
                    c.send_frame(0x89, b"mine").await;
                }
            }
            OpCode::Text => {
                let v: Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(v["type"], "pong", "{v}");
                replies += 1;
            }
            OpCode::Pong => assert_eq!(payload, b"mine"),
            other => panic!("unexpected {other:?}: {payload:?}"),
        }
    }
    // Pings come at most once per interval of quiet: 8 of them span more than
    // interval + timeout, which a peer sending nothing would not have survived.
    assert!(
        started.elapsed() > Duration::from_millis(interval + timeout),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(Stats::get(&s.stats.heartbeat_timeouts), 0);
    // Still open: a request gets its reply.
    c.send_frame(0x81, br#"{"type":"ping","ref":999}"#).await;
    loop {
        let (op, payload) = c.next_frame().await.expect("still open");
        if op == OpCode::Text {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            if v["ref"] == 999 {
                assert_eq!(v["type"], "pong");
                break;
            }
        }
    }
    assert!(replies >= 3, "{replies}");
}
