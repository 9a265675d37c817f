//! The `/ws` protocol spoken by a client nobody here wrote: Python `websockets`.

#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_runs_the_protocol() {
    let s = common::start(|_| {}).await;
    let url = format!("ws://{}/ws", s.addr);
    common::run_peer(&common::python(), "python/hub_client.py", &[&url]).await;
}
