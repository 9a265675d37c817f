//! History and recovery: a client that comes back gets exactly what it missed.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Client, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_with_since_gets_exactly_the_500_missed_messages_first() {
    let s = start(|_| {}).await;
    let mut publisher = Client::hello(s.addr, "publisher").await;
    publisher.join("feed").await;
    for i in 0..10 {
        publisher.publish("feed", json!({"i": i})).await;
    }
    let mut reader = Client::hello(s.addr, "reader").await;
    let joined = reader.join("feed").await;
    let (epoch, offset) = (
        joined["epoch"].as_str().unwrap().to_owned(),
        joined["offset"].as_u64().unwrap(),
    );
    assert_eq!(offset, 10);
    reader.ws.close(None).await.unwrap();

    for i in 10..510 {
        publisher.publish("feed", json!({"i": i})).await;
    }
    let mut back = Client::hello(s.addr, "reader").await;
    back.send(json!({"type": "join", "room": "feed", "since": {"epoch": epoch, "offset": offset}, "ref": 1})).await;
    // Publish live messages while the join is answered: they must come after the 500.
    publisher.publish("feed", json!({"i": "live-1"})).await;
    let joined = back.recv().await;
    assert_eq!(
        (joined["type"].as_str(), joined["recovered"].as_bool()),
        (Some("joined"), Some(true)),
        "{joined}"
    );
    let last = joined["offset"].as_u64().unwrap();
    let mut expected = offset + 1;
    loop {
        let m = back.recv().await;
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["offset"], expected, "in order, no gap, no duplicate");
        assert_eq!(m["epoch"], epoch);
        if expected <= 510 {
            assert_eq!(m["data"]["i"], expected - 1);
        }
        if expected == 511 {
            assert_eq!(m["data"]["i"], "live-1");
            break;
        }
        expected += 1;
    }
    assert!(
        last == 510 || last == 511,
        "joined carries the last offset at the join: {last}"
    );
    publisher.publish("feed", json!({"i": "live-2"})).await;
    assert_eq!(back.next_of("message").await["offset"], 512);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovered_false_when_history_is_shorter_than_the_gap() {
    let s = start(|c| c.rooms.history_max_messages = 100).await;
    let mut p = Client::hello(s.addr, "p").await;
    let joined = p.join("short").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    for i in 0..300 {
        p.publish("short", json!(i)).await;
    }
    let mut c = Client::hello(s.addr, "c").await;
    let r = c
        .request(json!({"type": "join", "room": "short", "since": {"epoch": epoch, "offset": 150}}))
        .await;
    assert_eq!(
        (r["recovered"].as_bool(), r["offset"].as_u64()),
        (Some(false), Some(300)),
        "{r}"
    );
    // Nothing was replayed: the next message is a live one.
    p.publish("short", json!("live")).await;
    assert_eq!(c.next_of("message").await["offset"], 301);
    // Inside the retained range recovery works.
    let mut d = Client::hello(s.addr, "d").await;
    let r = d
        .request(json!({"type": "join", "room": "short", "since": {"epoch": epoch, "offset": 290}}))
        .await;
    assert_eq!(r["recovered"], true);
    for o in 291..=301 {
        assert_eq!(d.next_of("message").await["offset"], o);
    }
    // Another epoch, or an offset from the future, cannot be recovered.
    let mut e = Client::hello(s.addr, "e").await;
    let r = e
        .request(
            json!({"type": "join", "room": "short", "since": {"epoch": "not-it", "offset": 290}}),
        )
        .await;
    assert_eq!(r["recovered"], false);
    let mut f = Client::hello(s.addr, "f").await;
    let r = f
        .request(
            json!({"type": "join", "room": "short", "since": {"epoch": epoch, "offset": 9999}}),
        )
        .await;
    assert_eq!(r["recovered"], false);
    // Nothing was replayed to either: the first message each gets is a live one.
    let live = p.publish("short", json!("live-2")).await["offset"].clone();
    for (name, c) in [("e", &mut e), ("f", &mut f)] {
        let m = c.next_of("message").await;
        assert_eq!(
            (&m["offset"], &m["data"]),
            (&live, &json!("live-2")),
            "{name}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_queries() {
    let s = start(|_| {}).await;
    let mut p = Client::hello(s.addr, "p").await;
    let epoch = p.join("h").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=30 {
        p.publish("h", json!(i)).await;
    }
    let mut q = Client::hello(s.addr, "q").await;
    let h = q
        .request(json!({"type": "history", "room": "h", "limit": 5}))
        .await;
    assert_eq!(h["epoch"], epoch);
    assert_eq!(common::message_offsets(&h), vec![1, 2, 3, 4, 5]);
    let h = q
        .request(json!({"type": "history", "room": "h", "since": {"epoch": epoch, "offset": 27}}))
        .await;
    let data: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_u64().unwrap())
        .collect();
    assert_eq!(data, vec![28, 29, 30]);
    let h = q.request(json!({"type": "history", "room": "h", "since": {"epoch": "old", "offset": 27}, "limit": 2})).await;
    assert_eq!(
        h["messages"][0]["offset"], 1,
        "another epoch starts at the oldest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_only_after_the_message_is_in_history() {
    let s = start(|_| {}).await;
    let mut p = Client::hello(s.addr, "p").await;
    p.join("acked").await;
    let mut q = Client::hello(s.addr, "q").await;
    for i in 0..50 {
        let ack = p.publish("acked", json!(i)).await;
        // Right after the ack, a history query from another connection sees it.
        let h = q.request(json!({"type": "history", "room": "acked", "since": {"epoch": "x", "offset": 0}, "limit": 1000})).await;
        let last = h["messages"].as_array().unwrap().last().unwrap()["offset"].clone();
        assert_eq!(last, ack["offset"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_backlog_larger_than_the_queue_bound_is_not_a_slow_consumer() {
    // 400 messages of ~2 KiB to recover, with an outbound bound of 64 KiB.
    let s = start(|c| c.websocket.max_queued_bytes = 64 * 1024).await;
    let mut p = Client::hello(s.addr, "p").await;
    let epoch = p.join("big").await["epoch"].as_str().unwrap().to_owned();
    let body = "y".repeat(2000);
    for i in 0..400 {
        p.publish("big", json!({"i": i, "body": body})).await;
    }
    let mut c = Client::hello(s.addr, "c").await;
    let r = c
        .request(json!({"type": "join", "room": "big", "since": {"epoch": epoch, "offset": 0}}))
        .await;
    assert_eq!(r["recovered"], true);
    for o in 1..=400 {
        assert_eq!(c.next_of("message").await["offset"], o);
    }
    assert_eq!(
        roomcast_server::Stats::get(&s.stats.slow_consumer_closes),
        0
    );
}

/// An idle room whose history expired is dropped; the room that comes back has a new
/// epoch, so a client still holding the old position learns it cannot be recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_idle_room_comes_back_with_a_new_epoch() {
    let s = start(|c| c.rooms.history_max_age_ms = 200).await;
    let mut a = Client::hello(s.addr, "a").await;
    let joined = a.join("brief").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let offset = a.publish("brief", json!("gone soon")).await["offset"]
        .as_u64()
        .unwrap();
    assert_eq!(offset, 1);
    let left = a.request(json!({"type": "leave", "room": "brief"})).await;
    assert_eq!(left["type"], "left");
    // Its own push of "gone soon" came before the ack: forget it.
    a.backlog.retain(|m| m["type"] != "message");
    // History expires after 200 ms; the sweep that drops idle rooms runs every second.
    // Wait (bounded) until the room is gone: its history is then `not_found`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let h = a.request(json!({"type": "history", "room": "brief"})).await;
        if h["code"] == "not_found" {
            break;
        }
        assert_eq!(h["type"], "history", "{h}");
        assert!(
            std::time::Instant::now() < deadline,
            "the idle room was not dropped within 10 s: {h}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = a
        .request(json!({"type": "join", "room": "brief", "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert_eq!(r["type"], "joined");
    assert_ne!(r["epoch"].as_str(), Some(epoch.as_str()), "a new epoch");
    assert_eq!(
        (r["recovered"].as_bool(), r["offset"].as_u64()),
        (Some(false), Some(0)),
        "{r}"
    );
    // Offsets start again at 1, and that live message is the first one delivered.
    let mut b = Client::hello(s.addr, "b").await;
    b.join("brief").await;
    assert_eq!(b.publish("brief", json!("new")).await["offset"], 1);
    let m = a.next_of("message").await;
    assert_eq!((&m["offset"], &m["epoch"]), (&json!(1), &r["epoch"]), "{m}");
}

/// A node that restarts (here: one server stopped, a new one started in the process)
/// gives its rooms new epochs, with offsets from 1. A client coming back with its old
/// position learns that it cannot be recovered, and nothing of the new epoch is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_starts_a_new_epoch() {
    let first = start(|_| {}).await;
    let mut c = Client::hello(first.addr, "c").await;
    let old = c.join("keep").await["epoch"].as_str().unwrap().to_owned();
    for i in 1..=3 {
        assert_eq!(c.publish("keep", json!(i)).await["offset"], i);
    }
    first.stop.shutdown();
    // The draining node closes its clients with 1001.
    let code = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(m) = c.ws.recv().await {
            if let roomcast_ws::Message::Close(frame) = m.unwrap() {
                return frame.map(|f| f.code.0);
            }
        }
        None
    })
    .await
    .expect("no close within 10 s of the drain");
    assert_eq!(code, Some(1001));

    let second = start(|_| {}).await;
    let mut p = Client::hello(second.addr, "p").await;
    let joined = p.join("keep").await;
    let new = joined["epoch"].as_str().unwrap().to_owned();
    assert_ne!(new, old, "a new epoch");
    assert_eq!(joined["offset"], 0);
    for i in 1..=2 {
        assert_eq!(
            p.publish("keep", json!(format!("new-{i}"))).await["offset"],
            i
        );
    }
    let mut back = Client::hello(second.addr, "c").await;
    let r = back
        .request(json!({"type": "join", "room": "keep", "since": {"epoch": old, "offset": 3}}))
        .await;
    assert_eq!(
        (
            r["type"].as_str(),
            r["recovered"].as_bool(),
            r["offset"].as_u64()
        ),
        (Some("joined"), Some(false), Some(2)),
        "{r}"
    );
    assert_eq!(r["epoch"], new.as_str());
    // Nothing replayed: the first message is the live one published after the join.
    p.publish("keep", json!("live")).await;
    let m = back.next_of("message").await;
    assert_eq!(
        (&m["offset"], &m["data"], &m["epoch"]),
        (&json!(3), &json!("live"), &json!(new)),
        "{m}"
    );
}
