//! The `/ws` protocol spoken by clients nobody here wrote: Python `websockets`, Node `ws`.

#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_runs_the_protocol() {
    let s = common::start(|_| {}).await;
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(&common::python(), "python/hub_client.py", &[&url]).await;
}

/// The same with permessage-deflate: Python `websockets` offers it, the node takes it and
/// sends the long messages (live and recovered) compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_runs_the_protocol_compressed() {
    let s = common::start(|c| c.websocket.compression = true).await;
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(
        &common::python(),
        "python/hub_client.py",
        &[&url, "deflate"],
    )
    .await;
    let frames = roomcast_server::Stats::get(&s.stats.compressed_frames);
    assert!(frames >= 100, "{frames} messages went compressed");
}

/// Node `ws` members with permessage-deflate and one without, in one room: everyone
/// reads every message as published, and the compressing members got them compressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ws_members_read_a_compressed_room() {
    let s = common::start(|c| c.websocket.compression = true).await;
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(&common::node(), "node/room_client.js", &[&url]).await;
    let frames = roomcast_server::Stats::get(&s.stats.compressed_frames);
    let runs = roomcast_server::Stats::get(&s.stats.compressions);
    // 200 messages to 3 compressing members, 50 to the 2 left, and those 50 recovered
    // by the third.
    assert_eq!(frames, 3 * 200 + 2 * 50 + 50, "compressed frames");
    assert!(
        runs <= 2 * 250 + 50,
        "{runs} compressions: at most one per live message and worker"
    );
}
