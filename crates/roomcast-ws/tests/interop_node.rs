//! Interop with Node's `ws` library, in both roles.

#![allow(clippy::unwrap_used)]

mod common;

fn node() -> String {
    std::env::var("ROOMCAST_TEST_NODE").unwrap_or_else(|_| "node".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_node_client() {
    let url = common::scripted_server().await;
    common::run_peer_client(&node(), common::peers_dir().join("node/peer.js"), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_with_node_server() {
    let (_server, url) =
        common::start_peer_server(&node(), common::peers_dir().join("node/peer.js")).await;
    common::client_scenarios(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_with_node_client_compressing() {
    let url = common::scripted_server_with(Some(Default::default())).await;
    common::run_peer_client_with(
        &node(),
        common::peers_dir().join("node/peer.js"),
        &url,
        &["deflate"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_with_node_server_compressing() {
    let (_server, url) = common::start_peer_server_with(
        &node(),
        common::peers_dir().join("node/peer.js"),
        &["deflate"],
    )
    .await;
    common::client_scenarios_with(&url, Some(Default::default())).await;
}
