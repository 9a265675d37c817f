//! The `/ws` protocol spoken by a client nobody here wrote: Python `websockets`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_runs_the_protocol() {
    let s = common::start(|_| {}).await;
    let python = std::env::var("ROOMCAST_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/peers/python/hub_client.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("ws://{}/ws", s.addr))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the python client did not finish within 60 s")
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (scripts/test installs the peers)"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("all scenarios passed"),
        "{stdout}\n{stderr}"
    );
}
