//! Shared by the binary's tests: the bounded async wait, and the line `roomcast serve`
//! prints once it listens.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_roomcast");

/// Awaits `fut` at most `bound`; panics naming `what` did not happen.
pub async fn within<T>(what: &str, bound: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(bound, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {bound:?}"))
}

/// What the first line of `roomcast serve`'s stdout is for: `listening on ADDR`.
pub const LISTENING: &str = "`listening on ADDR` from roomcast serve";

/// The address in `roomcast serve`'s `listening on ADDR` line.
pub fn listening_addr(line: &str) -> SocketAddr {
    line.strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not `listening on ADDR`: {line:?}"))
}
