//! Errors of the server as a whole (not of one connection).

use std::net::SocketAddr;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker URL cannot be used.
    #[error("broker: {0}")]
    Broker(String),
    /// The TLS certificate or key cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The token keys cannot be used.
    #[error("auth: {0}")]
    Keys(#[from] crate::auth::KeyError),
    /// Another I/O failure of the listener.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}
