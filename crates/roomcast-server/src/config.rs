//! Server settings.

use std::net::SocketAddr;
use std::time::Duration;

use roomcast_ws::Config as WsConfig;
use roomcast_ws::tokio::WebSocketConfig;

/// Settings of `roomcast serve`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Serve the echo socket at `/echo` (for conformance testing). Default off.
    pub echo: bool,
    /// How long a client may take to send its request head (and finish the WebSocket
    /// handshake) before it is dropped. Default 10 s.
    pub handshake_timeout: Duration,
    /// The largest WebSocket frame payload accepted. Default 16 MiB.
    pub max_frame_size: usize,
    /// The largest WebSocket message accepted. Default 16 MiB.
    pub max_message_size: usize,
    /// The largest request head accepted. Default 16 KiB.
    pub max_head: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            echo: false,
            handshake_timeout: Duration::from_secs(10),
            max_frame_size: WsConfig::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: WsConfig::DEFAULT_MAX_MESSAGE_SIZE,
            max_head: roomcast_ws::handshake::DEFAULT_MAX_HEAD,
        }
    }
}

impl ServerConfig {
    /// The WebSocket driver settings these imply.
    pub fn websocket(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .protocol(
                WsConfig::default()
                    .max_frame_size(self.max_frame_size)
                    .max_message_size(self.max_message_size),
            )
            .handshake_timeout(self.handshake_timeout)
    }
}
