//! Presence: who is there, diffs pushed in batches, and dead connections leaving.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Client, start};
use serde_json::json;

fn clients(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_per_client_and_diffs_to_those_who_asked() {
    let s = start(|_| {}).await;
    let mut alice = Client::hello(s.addr, "alice").await;
    alice
        .request(json!({"type": "join", "room": "p", "presence": {"name": "Alice"}}))
        .await;
    let mut watcher = Client::hello(s.addr, "anon-watcher").await;
    watcher.join("p").await; // no presence: invisible, no diffs
    let mut bob = Client::hello(s.addr, "bob").await;
    bob.request(json!({"type": "join", "room": "p", "presence": {}}))
        .await;
    let mut bob2 = Client::hello(s.addr, "bob").await;
    bob2.request(json!({"type": "join", "room": "p", "presence": {}}))
        .await;

    let list = alice
        .request(json!({"type": "presence", "room": "p"}))
        .await;
    assert_eq!(
        clients(&list["members"]),
        vec!["alice", "bob"],
        "listed once per client, watchers hidden"
    );
    assert_eq!(
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["client"] == "alice")
            .unwrap()["info"],
        json!({"name": "Alice"})
    );

    // alice sees bob join (maybe in the same diff as herself).
    let mut seen = Vec::new();
    while !seen.contains(&"bob".to_owned()) {
        let d = alice.next_of("presence_diff").await;
        seen.extend(clients(&d["joined"]));
    }
    // One of bob's connections leaving changes nothing; the last one does.
    bob.ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let list = alice
        .request(json!({"type": "presence", "room": "p"}))
        .await;
    assert_eq!(clients(&list["members"]), vec!["alice", "bob"]);
    bob2.request(json!({"type": "leave", "room": "p"})).await;
    let d = alice.next_of("presence_diff").await;
    assert_eq!(clients(&d["left"]), vec!["bob"]);
    // The anonymous watcher got no diff at all.
    assert_eq!(
        watcher.request(json!({"type": "ping"})).await["type"],
        "pong"
    );
    assert!(
        watcher.backlog.iter().all(|m| m["type"] != "presence_diff"),
        "{:?}",
        watcher.backlog
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_is_batched() {
    let s = start(|c| c.rooms.presence_batch_ms = 100).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher
        .request(json!({"type": "join", "room": "burst", "presence": {}}))
        .await;
    let mut others = Vec::new();
    for i in 0..200 {
        let mut c = Client::hello(s.addr, &format!("u{i:03}")).await;
        c.send(json!({"type": "join", "room": "burst", "presence": {"i": i}}))
            .await;
        others.push(c);
    }
    let mut joined = Vec::new();
    let mut diffs = 0;
    while joined.len() < 201 {
        let d = watcher.next_of("presence_diff").await;
        diffs += 1;
        joined.extend(clients(&d["joined"]));
    }
    joined.sort();
    joined.dedup();
    assert_eq!(joined.len(), 201);
    assert!(
        diffs <= 20,
        "200 joins arrived as {diffs} diffs: not batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abrupt_reset_leaves_presence_within_the_heartbeat_timeout() {
    let s = start(|c| {
        c.websocket.heartbeat_interval_ms = 200;
        c.websocket.heartbeat_timeout_ms = 300;
    })
    .await;
    let mut alice = Client::hello(s.addr, "alice").await;
    alice
        .request(json!({"type": "join", "room": "hb", "presence": {}}))
        .await;
    // A peer that vanishes: its socket is reset, no close frame.
    let mut ghost = Client::hello(s.addr, "ghost").await;
    ghost
        .request(json!({"type": "join", "room": "hb", "presence": {}}))
        .await;
    // (A join and a leave within one batch cancel out: wait until the join is seen.)
    while !clients(&alice.next_of("presence_diff").await["joined"]).contains(&"ghost".to_owned()) {}
    let sock = socket2::SockRef::from(ghost.ws.get_ref());
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    let started = Instant::now();
    drop(ghost);
    loop {
        let d = alice.next_of("presence_diff").await;
        if clients(&d["left"]).contains(&"ghost".to_owned()) {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "left after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_by_the_heartbeat() {
    let s = start(|c| {
        c.websocket.heartbeat_interval_ms = 200;
        c.websocket.heartbeat_timeout_ms = 300;
    })
    .await;
    let mut alice = Client::hello(s.addr, "alice").await;
    alice
        .request(json!({"type": "join", "room": "silent", "presence": {}}))
        .await;
    // A raw client that joins, then never reads again: its pings go unanswered.
    let mut mute = common::RawClient::connect(s.addr, "/ws").await;
    mute.send_frame(0x81, br#"{"type":"hello","client":"mute"}"#)
        .await;
    mute.send_frame(0x81, br#"{"type":"join","room":"silent","presence":{}}"#)
        .await;
    let started = Instant::now();
    let mut saw_join = false;
    loop {
        let d = alice.next_of("presence_diff").await;
        saw_join |= clients(&d["joined"]).contains(&"mute".to_owned());
        if clients(&d["left"]).contains(&"mute".to_owned()) {
            break;
        }
    }
    assert!(saw_join);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(2000),
        "closed after {waited:?}"
    );
    assert_eq!(roomcast_server::Stats::get(&s.stats.heartbeat_timeouts), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_connection_that_sends_nothing() {
    let s = start(|c| c.websocket.idle_timeout_ms = 300).await;
    let mut talker = Client::hello(s.addr, "talker").await;
    let mut quiet = Client::hello(s.addr, "quiet").await;
    let started = Instant::now();
    // The talker keeps sending; the quiet one only answers pings, which do not count.
    let mut code = None;
    while started.elapsed() < Duration::from_secs(3) && code.is_none() {
        talker.request(json!({"type": "ping"})).await;
        if let Ok(Some(Ok(roomcast_ws::Message::Close(frame)))) =
            tokio::time::timeout(Duration::from_millis(50), quiet.ws.recv()).await
        {
            code = frame.map(|f| f.code.0);
        }
    }
    assert_eq!(code, Some(1000), "closed for idleness");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        talker.request(json!({"type": "ping"})).await["type"],
        "pong",
        "the talker stays"
    );
}
