//! Presence: who is there, diffs pushed in batches, and dead connections leaving.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Client, start};
use serde_json::json;

/// The client ids of a `members`, `joined` or `left` list, sorted (duplicates kept).
fn clients(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|m| m["client"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// How many times each client appears in the `field` lists of `diffs`.
fn counts(diffs: &[serde_json::Value], field: &str) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for d in diffs {
        for c in clients(&d[field]) {
            *n.entry(c).or_default() += 1;
        }
    }
    n
}

/// Waits (bounded) until the node holds `n` room connections.
async fn until_connections(s: &common::TestServer, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.stats.connections.load(Ordering::Relaxed) != n {
        assert!(
            Instant::now() < deadline,
            "still {} connections, expected {n}",
            s.stats.connections.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

    // One of bob's connections ends: that changes nothing. Once the server has dropped it
    // (it leaves its rooms before it is uncounted), carol joins: her join reaches the
    // room after bob's leave, so any wrong diff about bob comes before (or with) hers.
    let open = s.stats.connections.load(Ordering::Relaxed);
    bob.ws.close(None).await.unwrap();
    until_connections(&s, open - 1).await;
    let mut carol = Client::hello(s.addr, "carol").await;
    carol
        .request(json!({"type": "join", "room": "p", "presence": {}}))
        .await;
    let mut diffs = Vec::new();
    while !diffs
        .iter()
        .any(|d: &serde_json::Value| clients(&d["joined"]).contains(&"carol".to_owned()))
    {
        diffs.push(alice.next_of("presence_diff").await);
    }
    let joined = counts(&diffs, "joined");
    assert_eq!(joined.get("bob"), Some(&1), "bob joined once: {diffs:?}");
    assert!(joined.values().all(|&n| n == 1), "{diffs:?}");
    assert!(counts(&diffs, "left").is_empty(), "nobody left: {diffs:?}");
    let list = alice
        .request(json!({"type": "presence", "room": "p"}))
        .await;
    assert_eq!(clients(&list["members"]), vec!["alice", "bob", "carol"]);
    // bob's last connection leaving does.
    bob2.request(json!({"type": "leave", "room": "p"})).await;
    let d = alice.next_of("presence_diff").await;
    assert_eq!(clients(&d["left"]), vec!["bob"], "{d}");
    assert_eq!(clients(&d["joined"]), Vec::<String>::new(), "{d}");
    // The anonymous watcher got no diff at all: a presence reply comes from the room's
    // home after every diff the home pushed before it.
    let list = watcher
        .request(json!({"type": "presence", "room": "p"}))
        .await;
    assert_eq!(clients(&list["members"]), vec!["alice", "carol"]);
    assert!(
        watcher.backlog.iter().all(|m| m["type"] != "presence_diff"),
        "{:?}",
        watcher.backlog
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_is_batched() {
    let batch_ms = 100;
    let s = start(|c| c.rooms.presence_batch_ms = batch_ms).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher
        .request(json!({"type": "join", "room": "burst", "presence": {}}))
        .await;
    // Everyone connects first; then the 200 joins go out back to back.
    let mut others = Vec::new();
    for i in 0..200 {
        others.push(Client::hello(s.addr, &format!("u{i:03}")).await);
    }
    let started = Instant::now();
    for (i, c) in others.iter_mut().enumerate() {
        c.send(json!({"type": "join", "room": "burst", "presence": {"i": i}}))
            .await;
    }
    let mut expected: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    expected.push("watcher".to_owned());
    let mut diffs = Vec::new();
    while !expected
        .iter()
        .all(|c| counts(&diffs, "joined").contains_key(c))
    {
        diffs.push(watcher.next_of("presence_diff").await);
    }
    let elapsed = started.elapsed();
    // A later join: any duplicate of the burst would come before it.
    let mut last = Client::hello(s.addr, "zz-last").await;
    last.request(json!({"type": "join", "room": "burst", "presence": {}}))
        .await;
    let burst = diffs.len();
    while !counts(&diffs, "joined").contains_key("zz-last") {
        diffs.push(watcher.next_of("presence_diff").await);
    }
    expected.push("zz-last".to_owned());
    let mut joined: Vec<(String, usize)> = counts(&diffs, "joined").into_iter().collect();
    joined.sort();
    expected.sort();
    assert_eq!(
        joined,
        expected.into_iter().map(|c| (c, 1)).collect::<Vec<_>>(),
        "each client listed exactly once"
    );
    assert!(counts(&diffs, "left").is_empty());
    // Diffs go out at most once per batch: as many as batches passed, not one per join.
    let batches = elapsed.as_millis() as usize / batch_ms as usize + 2;
    assert!(
        burst <= batches && burst < 100,
        "200 joins arrived as {burst} diffs in {elapsed:?}: not batched"
    );
}

/// A client that joins and leaves within one batch produces no diff. Markers that join
/// just before and just after it show whether it fit in one batch: when both come in the
/// same diff, so did its join and leave, and nobody may hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_leave_within_one_batch_cancel_out() {
    let s = start(|c| c.rooms.presence_batch_ms = 1000).await;
    let mut watcher = Client::hello(s.addr, "watcher").await;
    watcher
        .request(json!({"type": "join", "room": "blink", "presence": {}}))
        .await;
    let visible = json!({"type": "join", "room": "blink", "presence": {}});
    let mut kept = Vec::new();
    for attempt in 0..5 {
        let (before, ghost, after) = (
            format!("before-{attempt}"),
            format!("ghost-{attempt}"),
            format!("after-{attempt}"),
        );
        // Each step waits for its answer from the room's home worker, so they reach the
        // room in this order.
        let mut b = Client::hello(s.addr, &before).await;
        assert_eq!(b.request(visible.clone()).await["type"], "joined");
        let mut g = Client::hello(s.addr, &ghost).await;
        assert_eq!(g.request(visible.clone()).await["type"], "joined");
        let left = g.request(json!({"type": "leave", "room": "blink"})).await;
        assert_eq!(left["type"], "left");
        let list = g
            .request(json!({"type": "presence", "room": "blink"}))
            .await;
        assert!(!clients(&list["members"]).contains(&ghost), "{list}");
        let mut a = Client::hello(s.addr, &after).await;
        assert_eq!(a.request(visible.clone()).await["type"], "joined");
        kept.extend([b, g, a]);

        let mut diffs = Vec::new();
        while !(counts(&diffs, "joined").contains_key(&before)
            && counts(&diffs, "joined").contains_key(&after))
        {
            diffs.push(watcher.next_of("presence_diff").await);
        }
        let in_one = diffs.iter().any(|d| {
            let j = clients(&d["joined"]);
            j.contains(&before) && j.contains(&after)
        });
        if in_one {
            assert!(
                !counts(&diffs, "joined").contains_key(&ghost)
                    && !counts(&diffs, "left").contains_key(&ghost),
                "a join and a leave within one batch were pushed: {diffs:?}"
            );
            return;
        }
        // Split across batches (a busy machine): the ghost may show, but consistently.
        let mut rest = diffs.clone();
        if counts(&diffs, "joined").contains_key(&ghost) {
            while !counts(&rest, "left").contains_key(&ghost) {
                rest.push(watcher.next_of("presence_diff").await);
            }
        }
        assert!(
            counts(&rest, "joined").get(&ghost).copied().unwrap_or(0) <= 1,
            "{rest:?}"
        );
    }
    panic!("five attempts never fit four round trips in one 1 s batch");
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
    // An RST is seen at once, and the heartbeat would catch it within 500 ms; the bound
    // is generous for a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
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
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(8),
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
    while started.elapsed() < Duration::from_secs(10) && code.is_none() {
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
