//! A member that cannot keep up is closed with 4008; the others never wait for it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, RawClient, start};
use roomcast_server::Stats;
use roomcast_ws::{Message, OpCode};
use serde_json::json;
use tokio::sync::watch;

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
        writer.send(Message::text(req.to_string())).await.unwrap();
        if n % 50 == 0 {
            progress.wait_for(|&read| read + 100 >= n).await.unwrap();
            drained.wait_for(|&read| read + 100 >= n).await.unwrap();
        }
    }
    assert_eq!(
        fast_reader.await.unwrap(),
        total,
        "the fast member got every message"
    );
    assert_eq!(
        Stats::get(&s.stats.slow_consumer_closes),
        1,
        "only the slow member was closed"
    );
    // The slow member finds, after what it had been sent, a close frame with 4008.
    let mut close = None;
    while let Some((op, payload)) = slow.next_frame().await {
        if op == OpCode::Close {
            close = Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    assert_eq!(close, Some(4008));
}
