//! `roomcast bench`: load that any WebSocket server can be pointed at.
//!
//! Every scenario is bounded in count and time, refuses targets outside loopback unless
//! `--allow-remote` is given, and, given the server's PID, reads its CPU time and memory
//! from `/proc`: server CPU per message or per delivery is the figure that stays honest
//! when the load generator, not the server, is the bottleneck.

mod connect;
mod fanout;
mod open;
pub mod proc;

use std::net::IpAddr;

use clap::Subcommand;

pub use connect::ConnectArgs;
pub use fanout::FanoutArgs;

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Open N connections and hold them: handshake rate, server memory per connection.
    Connect(ConnectArgs),
    /// N subscribers in one room and a publisher: deliveries per second, losses, latency.
    Fanout(FanoutArgs),
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Not a usable `ws://` URL.
    #[error("invalid target URL {0:?}: expected ws://HOST:PORT/PATH")]
    Url(String),
    /// A target outside loopback without `--allow-remote`.
    #[error(
        "refusing to load {0}: it is not a loopback address (pass --allow-remote if you mean it)"
    )]
    NotLoopback(String),
    /// Nothing could connect.
    #[error("{0}")]
    Failed(String),
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> Result<(), BenchError> {
    match scenario {
        Scenario::Connect(args) => connect::run(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
    }
}

/// Checks that `url` points at loopback, unless allowed otherwise.
pub fn check_target(url: &str, allow_remote: bool) -> Result<(), BenchError> {
    let uri: http::Uri = url.parse().map_err(|_| BenchError::Url(url.to_owned()))?;
    if uri.scheme_str() != Some("ws") {
        return Err(BenchError::Url(url.to_owned()));
    }
    let host = uri.host().ok_or_else(|| BenchError::Url(url.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback || allow_remote {
        Ok(())
    } else {
        Err(BenchError::NotLoopback(host.to_owned()))
    }
}

/// A byte count for people.
pub fn human_bytes(n: f64) -> String {
    if n.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else if n.abs() >= 1024.0 {
        format!("{:.2} KiB", n / 1024.0)
    } else {
        format!("{n:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(check_target("ws://127.0.0.1:8080/ws", false).is_ok());
        assert!(check_target("ws://127.0.0.2:8080/ws", false).is_ok());
        assert!(check_target("ws://localhost:1/", false).is_ok());
        assert!(check_target("ws://[::1]:1/", false).is_ok());
        assert!(matches!(
            check_target("ws://10.0.0.1:80/ws", false),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(matches!(
            check_target("ws://example.com/ws", false),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(check_target("ws://example.com/ws", true).is_ok());
        assert!(matches!(
            check_target("http://127.0.0.1/", false),
            Err(BenchError::Url(_))
        ));
    }
}
