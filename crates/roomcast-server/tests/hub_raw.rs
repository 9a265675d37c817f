//! Raw room sockets `/rooms/{room}`: any WebSocket client can chat, no envelope.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::start;
use roomcast_ws::Message;
use roomcast_ws::tokio::{WebSocket, connect};
use tokio::net::TcpStream;

async fn join(addr: std::net::SocketAddr, path: &str) -> WebSocket<TcpStream> {
    common::within(
        &format!("the handshake to {path}"),
        common::EVENT_TIMEOUT,
        connect(&format!("ws://{addr}{path}")),
    )
    .await
    .unwrap()
    .0
}

/// Sends one message, bounded.
async fn send(ws: &mut WebSocket<TcpStream>, m: Message) {
    common::within("a send", common::EVENT_TIMEOUT, ws.send(m))
        .await
        .unwrap();
}

async fn next(ws: &mut WebSocket<TcpStream>) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("nothing within 10 s")
            .unwrap()
            .unwrap();
        if m.is_data() {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_get_it_unchanged_and_the_sender_only_with_echo() {
    let s = start(|_| {}).await;
    let mut a = join(s.addr, "/rooms/chat").await;
    let mut b = join(s.addr, "/rooms/chat").await;
    let mut c = join(s.addr, "/rooms/chat?echo=1").await;
    let mut elsewhere = join(s.addr, "/rooms/other").await;
    let mut other_member = join(s.addr, "/rooms/other").await;
    a.send(Message::text("hello from a")).await.unwrap();
    assert_eq!(next(&mut b).await, Message::text("hello from a"));
    assert_eq!(next(&mut c).await, Message::text("hello from a"));
    c.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(
        next(&mut c).await,
        Message::binary(vec![0u8, 159, 146, 150]),
        "echo=1 includes the sender"
    );
    assert_eq!(
        next(&mut a).await,
        Message::binary(vec![0u8, 159, 146, 150])
    );
    assert_eq!(
        next(&mut b).await,
        Message::binary(vec![0u8, 159, 146, 150])
    );
    // a did not get its own message: the next thing it sees is c's.
    b.send(Message::text("from b")).await.unwrap();
    assert_eq!(next(&mut a).await, Message::text("from b"));
    // A message of another room, once delivered there, then a later one in this room: a's
    // next message is the later one, so nothing crossed rooms.
    elsewhere.send(Message::text("ping?")).await.unwrap();
    assert_eq!(next(&mut other_member).await, Message::text("ping?"));
    b.send(Message::text("after")).await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Message::text("after"),
        "a message crossed rooms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_senders_order_is_kept() {
    let s = start(|_| {}).await;
    let mut r = join(s.addr, "/rooms/order").await;
    let mut senders = Vec::new();
    for _ in 0..3 {
        senders.push(join(s.addr, "/rooms/order").await);
    }
    for i in 0..300 {
        for (k, w) in senders.iter_mut().enumerate() {
            w.feed(Message::text(format!("{k}:{i}"))).await.unwrap();
        }
    }
    for w in &mut senders {
        w.flush().await.unwrap();
    }
    let mut last = [-1i64; 3];
    for _ in 0..900 {
        let Message::Text(t) = next(&mut r).await else {
            panic!("text expected")
        };
        let (k, i) = t.as_str().split_once(':').unwrap();
        let (k, i): (usize, i64) = (k.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, last[k] + 1, "sender {k}");
        last[k] = i;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_begins_before_the_101() {
    let s = start(|_| {}).await;
    let mut old = join(s.addr, "/rooms/race").await;
    for i in 0..40 {
        // The new member's handshake is done when `connect` returns; a message sent right
        // then must reach it, whichever worker either socket landed on.
        let mut new = join(s.addr, "/rooms/race").await;
        old.send(Message::text(format!("m{i}"))).await.unwrap();
        // An earlier message still crossing to the new member's worker may come first:
        // the promise is about what is sent after the 101, not before it.
        loop {
            let got = next(&mut new).await;
            if got == Message::text(format!("m{i}")) {
                break;
            }
            let earlier = match &got {
                Message::Text(t) => t
                    .as_str()
                    .strip_prefix('m')
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|j| j < i),
                _ => false,
            };
            assert!(earlier, "m{i} expected, or an earlier one; got {got:?}");
        }
        new.close(None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_and_state_is_freed() {
    let s = start(|_| {}).await;
    let resp = common::raw_exchange(
        s.addr,
        b"GET /rooms/bad%20name HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("invalid room name"), "{resp}");
    let before = s.stats.connections.load(Ordering::Relaxed);
    let mut members = Vec::new();
    for _ in 0..20 {
        members.push(join(s.addr, "/rooms/freed").await);
    }
    assert_eq!(s.stats.connections.load(Ordering::Relaxed), before + 20);
    for mut m in members {
        m.close(None).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if s.stats.connections.load(Ordering::Relaxed) == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "connections were not freed: {}",
        s.stats.connections.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rooms_and_raw_rooms_are_separate_namespaces() {
    use serde_json::json;
    let s = start(|_| {}).await;
    let mut r1 = join(s.addr, "/rooms/shared").await;
    let mut r2 = join(s.addr, "/rooms/shared").await;
    let mut w = common::Client::hello(s.addr, "w").await;
    w.join("shared").await;
    // A /ws publish, acked, then a raw message: the raw member's next message is the raw
    // one, so the publish did not reach the raw room.
    w.publish("shared", json!("from-ws")).await;
    send(&mut r1, Message::text("from-raw")).await;
    assert_eq!(
        next(&mut r2).await,
        Message::text("from-raw"),
        "a /ws publish reached the raw room of the same name"
    );
    // The raw message, delivered there, did not reach the /ws room: the /ws member's
    // messages are its own two publishes, and the room's history holds only them.
    w.publish("shared", json!("marker")).await;
    assert_eq!(w.next_of("message").await["data"], "from-ws");
    assert_eq!(
        w.next_of("message").await["data"],
        "marker",
        "a raw message reached the /ws room of the same name"
    );
    let h = w
        .request(json!({"type": "history", "room": "shared"}))
        .await;
    let data: Vec<&serde_json::Value> = h["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(data, [&json!("from-ws"), &json!("marker")], "{h}");
    // A raw room alone makes no /ws room.
    let _lonely = join(s.addr, "/rooms/raw-only").await;
    let r = w
        .request(json!({"type": "presence", "room": "raw-only"}))
        .await;
    assert_eq!(r["code"], "not_found", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_limits_of_ws_apply_to_raw_rooms() {
    let s = start(|c| {
        c.websocket.max_message_size = 1024;
        c.websocket.max_frame_size = 1024;
    })
    .await;
    let mut listener = join(s.addr, "/rooms/sized").await;
    let mut big = common::RawClient::connect(s.addr, "/rooms/sized").await;
    // Exactly the limit goes through.
    big.send_frame(0x82, &[7; 1024]).await;
    assert_eq!(next(&mut listener).await, Message::binary(vec![7u8; 1024]));
    // One byte more closes with 1009, and reaches nobody.
    big.send_frame(0x82, &[8; 1025]).await;
    big.expect_close(1009).await;
    let mut other = join(s.addr, "/rooms/sized").await;
    send(&mut other, Message::text("after")).await;
    assert_eq!(next(&mut listener).await, Message::text("after"));
}
