//! A member that cannot keep up is closed with 4008; the others never wait for it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Client, RawClient, start};
use roomcast_server::Stats;
use roomcast_ws::{Message, OpCode};
use serde_json::json;
use tokio::sync::watch;

/// How long one wait may take before the test fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

/// Awaits `fut` for at most [`WAIT`]; past that the test fails, saying what it waited for.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    common::within(what, WAIT, fut).await
}

/// Every 50 messages sent, waits until the reader counting into `read` is at most 100
/// behind message `n`: the fast members keep up, so only the slow one falls behind.
async fn keep_pace(reader: &str, read: &mut watch::Receiver<u64>, n: u64) {
    if n.is_multiple_of(50) {
        within(reader, read.wait_for(|&r| r + 100 >= n))
            .await
            .unwrap_or_else(|_| panic!("{reader}: the reader ended"));
    }
}

/// Reads a raw client until the server closes the connection; returns the close code.
async fn close_code_at_end(c: &mut RawClient) -> Option<u16> {
    let mut close = None;
    // Each frame is bounded by `next_frame`; the loop ends at EOF.
    while let Some((op, payload)) = c.next_frame().await {
        if op == OpCode::Close {
            assert!(payload.len() >= 2, "a close without a code");
            close = Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    close
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4008_while_a_fast_member_gets_everything() {
    let s = start(|c| c.websocket.max_queued_bytes = 512 * 1024).await;
    let mut fast = Client::hello(s.addr, "fast").await;
    fast.join("firehose").await;
    // A member with a tiny receive buffer that never reads.
    let mut slow = RawClient::connect_with_receive_buffer(s.addr, "/ws", Some(4096)).await;
    slow.send_frame(0x81, br#"{"type":"hello","client":"slow","ref":1}"#)
        .await;
    slow.send_frame(0x81, br#"{"type":"join","room":"firehose","ref":2}"#)
        .await;

    // The publisher is a member too (only members publish), so it drains its own copy in
    // a task. It stays at most 100 messages ahead of the fast member: a member that
    // keeps up must lose nothing, while the one that never reads is cut off.
    let mut publisher = Client::hello(s.addr, "publisher").await;
    publisher.join("firehose").await;
    while Stats::get(&s.stats.deliveries) < 3 {
        publisher.publish("firehose", json!("warm-up")).await; // the slow member is in
    }
    let first = fast.next_of("message").await["offset"].as_u64().unwrap();
    let (reader, writer) = publisher.ws.split();
    let (drained_tx, mut drained) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut reader = reader;
        let mut n = 0;
        while let Some(Ok(m)) = reader.recv().await {
            if matches!(&m, Message::Text(t) if t.as_str().starts_with("{\"type\":\"message\"")) {
                n += 1;
                drained_tx.send_replace(n);
            }
        }
    });
    let (progress_tx, mut progress) = watch::channel(0u64);
    let total = 3000u64;
    let body = "x".repeat(2000);
    let fast_reader = tokio::spawn(async move {
        let mut expected = first + 1;
        let mut last = 0;
        while last < total {
            let m = fast.next_of("message").await;
            assert_eq!(m["offset"], expected, "no gap for the fast member");
            expected += 1;
            last = m["data"]["n"].as_u64().unwrap_or(0);
            progress_tx.send_replace(last);
        }
        last
    });
    for n in 1..=total {
        let req = json!({"type": "publish", "room": "firehose", "data": {"n": n, "body": body}, "ref": n});
        within("publishing", writer.send(Message::text(req.to_string())))
            .await
            .unwrap();
        keep_pace("the fast member", &mut progress, n).await;
        keep_pace("the publisher's own copies", &mut drained, n).await;
    }
    assert_eq!(
        within("the fast member's last message", fast_reader)
            .await
            .unwrap(),
        total,
        "the fast member got every message"
    );
    assert_eq!(
        Stats::get(&s.stats.slow_consumer_closes),
        1,
        "only the slow member was closed"
    );
    // The slow member finds, after what it had been sent, a close frame with 4008.
    assert_eq!(close_code_at_end(&mut slow).await, Some(4008));
}

/// The same bound on a raw room (`/rooms/...`): a member that never reads is closed with
/// 4008, while a member that keeps up gets every message, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_room_member_that_never_reads_is_closed_with_4008() {
    // The fast member is at most 150 messages (300 KB) behind: under the bound, even when
    // all of them are queued in one batch.
    let s = start(|c| c.websocket.max_queued_bytes = 512 * 1024).await;
    let url = format!("ws://{}/rooms/flood", s.addr);
    // Bounded by the driver's handshake timeout; members are in before their 101.
    let (mut fast, _) = roomcast_ws::tokio::connect(&url).await.unwrap();
    let mut slow = RawClient::connect_with_receive_buffer(s.addr, "/rooms/flood", Some(4096)).await;
    let (mut sender, _) = roomcast_ws::tokio::connect(&url).await.unwrap();
    let total = 4000u64;
    let body = "x".repeat(2000);
    let (progress_tx, mut progress) = watch::channel(0u64);
    let fast_reader = tokio::spawn(async move {
        for expected in 1..=total {
            let m = loop {
                match within("a message for the fast member", fast.recv()).await {
                    Some(Ok(m)) if m.is_data() => break m,
                    Some(Ok(Message::Close(frame))) => {
                        panic!("the fast member was closed at {expected}: {frame:?}")
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the fast member's connection ended: {other:?}"),
                }
            };
            let Message::Text(t) = m else {
                panic!("text expected")
            };
            let (n, _) = t.as_str().split_once(':').unwrap();
            assert_eq!(
                n.parse::<u64>().unwrap(),
                expected,
                "in order, nothing lost"
            );
            progress_tx.send_replace(expected);
        }
        total
    });
    for n in 1..=total {
        within("sending", sender.send(Message::text(format!("{n}:{body}"))))
            .await
            .unwrap();
        keep_pace("the fast member", &mut progress, n).await;
    }
    assert_eq!(
        within("the fast member's last message", fast_reader)
            .await
            .unwrap(),
        total
    );
    assert_eq!(
        Stats::get(&s.stats.slow_consumer_closes),
        1,
        "only the slow member was closed"
    );
    assert_eq!(close_code_at_end(&mut slow).await, Some(4008));
    // The sender was never slowed down or closed: it can still talk to the room.
    let (mut late, _) = roomcast_ws::tokio::connect(&url).await.unwrap();
    within("sending", sender.send(Message::text("after")))
        .await
        .unwrap();
    let m = within("the late member's message", late.recv()).await;
    assert_eq!(m.unwrap().unwrap(), Message::text("after"));
}
