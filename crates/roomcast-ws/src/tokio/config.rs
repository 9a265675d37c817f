//! Driver settings.

use std::time::Duration;

use crate::Config;

/// Settings of the tokio driver: the protocol limits plus timeouts and buffer bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Frame and message size limits.
    pub protocol: Config,
    /// How long the opening handshake may take before the connection is dropped
    /// (a slowloris defence on the server). Default 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame, or for the TCP close after the
    /// closing handshake, before dropping the connection. Default 5 s.
    pub close_timeout: Duration,
    /// [`WebSocket::feed`](super::WebSocket::feed) flushes once this many bytes are
    /// queued. Default 64 KiB.
    pub write_buffer_limit: usize,
    /// The largest handshake head, in bytes. Default 16 KiB.
    pub max_head: usize,
    /// permessage-deflate: offered by [`connect_with`](super::connect_with), taken by
    /// [`accept_with`](super::accept_with) when the client offers it. Default `None`.
    pub deflate: Option<crate::deflate::DeflateConfig>,
}

impl WebSocketConfig {
    /// Sets the protocol limits.
    pub fn protocol(mut self, protocol: Config) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets the handshake timeout.
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.handshake_timeout = t;
        self
    }

    /// Sets the close timeout.
    pub fn close_timeout(mut self, t: Duration) -> Self {
        self.close_timeout = t;
        self
    }

    /// Offers or takes permessage-deflate with `deflate`.
    pub fn deflate(mut self, deflate: crate::deflate::DeflateConfig) -> Self {
        self.deflate = Some(deflate);
        self
    }

    /// Sets the write buffer limit.
    pub fn write_buffer_limit(mut self, bytes: usize) -> Self {
        self.write_buffer_limit = bytes;
        self
    }
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            protocol: Config::default(),
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            write_buffer_limit: 64 * 1024,
            max_head: crate::handshake::DEFAULT_MAX_HEAD,
            deflate: None,
        }
    }
}
