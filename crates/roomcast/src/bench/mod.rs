//! `roomcast bench`: load that any WebSocket server can be pointed at.
//!
//! Scenarios: `connect` (hold N connections), `echo` (C connections echoing S-byte
//! messages), `fanout` (N subscribers of one room, or of a peer's raw broadcast endpoint,
//! and a publisher), `recover` (a node of a cluster killed under its clients). Every
//! loop is bounded in count and in time; targets outside loopback are refused unless
//! `--allow-remote` is given. Given the server's PID, the
//! server's CPU time and memory are read from `/proc`: server CPU per message or per
//! delivery is the figure that stays honest when the load generator, not the server, is
//! the bottleneck on a small machine.

mod connect;
mod echo;
mod fanout;
mod open;
pub mod proc;
mod recover;
mod report;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Subcommand;

pub use connect::ConnectArgs;
pub use echo::EchoArgs;
pub use fanout::FanoutArgs;
pub use recover::RecoverArgs;

/// The scenarios.
#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// Open N connections and hold them: handshakes per second, server memory per
    /// connection and CPU per handshake.
    Connect(ConnectArgs),
    /// C connections send S-byte messages and wait for them back: throughput, latency,
    /// server CPU per message.
    Echo(EchoArgs),
    /// N subscribers in one room (or on a raw broadcast endpoint) and a publisher:
    /// deliveries per second, losses, latency, server CPU per delivery.
    Fanout(FanoutArgs),
    /// N subscribers of one room over several nodes, a publisher at a fixed rate, and
    /// one node killed (`kill -9`): the time until each of its clients is whole again on
    /// another node, and every delivery checked.
    Recover(RecoverArgs),
}

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The server's PID: read its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Give up after this many seconds, whatever is left to do.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Allow a target outside loopback.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print one JSON object (for scripts) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

impl Common {
    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout.max(0.1))
    }
}

/// Why a benchmark could not run, or failed its checks.
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
    /// The run could not be done, or lost messages.
    #[error("{0}")]
    Failed(String),
}

/// Runs a scenario.
pub async fn run(scenario: Scenario) -> Result<(), BenchError> {
    match scenario {
        Scenario::Connect(args) => connect::run(args).await,
        Scenario::Echo(args) => echo::run(args).await,
        Scenario::Fanout(args) => fanout::run(args).await,
        Scenario::Recover(args) => recover::run(args).await,
    }
}

/// A parsed `ws://` target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// `wss://`: TLS, the server's certificate not checked (a benchmark measures its
    /// own loopback server, often with `--tls-self-signed`).
    pub tls: Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Target {
    /// Parses `url`, refusing anything outside loopback unless `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, BenchError> {
        let bad = || BenchError::Url(url.to_owned());
        let t = roomcast_ws::tokio::Target::parse(url).map_err(|_| bad())?;
        let ip: IpAddr = match t.host.as_str() {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => match h.parse() {
                Ok(ip) => ip,
                Err(_) if allow_remote => {
                    let resolved = std::net::ToSocketAddrs::to_socket_addrs(&(h, t.port))
                        .map_err(|_| bad())?
                        .next()
                        .ok_or_else(bad)?;
                    resolved.ip()
                }
                Err(_) => return Err(BenchError::NotLoopback(h.to_owned())),
            },
        };
        if !ip.is_loopback() && !allow_remote {
            return Err(BenchError::NotLoopback(t.host));
        }
        let tls = if t.secure {
            let insecure = crate::net::TlsArgs {
                cacert: None,
                insecure: true,
            };
            let config = insecure.client_config().map_err(|_| bad())?;
            let name =
                rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|_| bad())?;
            Some((config, name))
        } else {
            None
        };
        Ok(Self {
            addr: SocketAddr::new(ip, t.port),
            authority: t.authority,
            path: t.path,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(Target::parse("ws://127.0.0.1:8080/ws", false).is_ok());
        assert!(Target::parse("ws://127.0.0.2:8080/ws", false).is_ok());
        let t = Target::parse("ws://localhost:1/rooms/a?echo=1", false).unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (1, "/rooms/a?echo=1"));
        assert!(Target::parse("ws://[::1]:1/", false).is_ok());
        assert!(matches!(
            Target::parse("ws://10.0.0.1:80/ws", false),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("ws://example.com/ws", false),
            Err(BenchError::NotLoopback(_))
        ));
        assert!(Target::parse("ws://10.0.0.1/ws", true).is_ok());
        assert!(matches!(
            Target::parse("http://127.0.0.1/", false),
            Err(BenchError::Url(_))
        ));
    }
}
