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
    connect(&format!("ws://{addr}{path}")).await.unwrap().0
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
        assert_eq!(next(&mut new).await, Message::text(format!("m{i}")));
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
