//! Interop with the Python `websockets` library, in both roles.

#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_python_client() {
    let url = common::scripted_server().await;
    common::run_peer_client(
        &common::python(),
        common::peers_dir().join("python/peer.py"),
        &url,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_with_python_server() {
    let (_server, url) = common::start_peer_server(
        &common::python(),
        common::peers_dir().join("python/peer.py"),
    )
    .await;
    common::client_scenarios(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_python_client_compressing() {
    let url = common::scripted_server_with(Some(Default::default())).await;
    common::run_peer_client_with(
        &common::python(),
        common::peers_dir().join("python/peer.py"),
        &url,
        &["deflate"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_with_python_server_compressing() {
    let (_server, url) = common::start_peer_server_with(
        &common::python(),
        common::peers_dir().join("python/peer.py"),
        &["deflate"],
    )
    .await;
    common::client_scenarios_with(&url, Some(Default::default())).await;
}
