//! Counters a running server keeps (read with [`crate::Server::stats`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::protocol::ErrorCode;

/// Node-wide counters. Updated with relaxed atomics: they count, they do not order.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open room connections (`/ws` and `/rooms/...`).
    pub connections: AtomicI64,
    /// Of those, raw rooms (`/rooms/...`).
    pub raw_connections: AtomicI64,
    /// WebSocket handshakes answered (a 101, or a 200 on HTTP/2).
    pub handshakes: AtomicU64,
    /// Handshakes and HTTP requests refused for their `Origin` (403).
    pub origin_refusals: AtomicU64,
    /// Handshakes and new sessions refused while draining (503).
    pub draining_refusals: AtomicU64,
    /// Connections from a trusted proxy dropped because they did not begin with a valid
    /// PROXY header (`server.proxy_protocol`).
    pub proxy_refusals: AtomicU64,
    /// Bytes read from WebSocket connections (TLS records included), folded in by each
    /// worker's sweeper about once a second.
    pub bytes_in: AtomicU64,
    /// Bytes written to WebSocket connections, likewise.
    pub bytes_out: AtomicU64,
    /// Bytes waiting in WebSocket connections' outboxes, as of each worker's last sweep.
    pub outbox_bytes: AtomicI64,
    /// Error replies sent, by code (in the order of [`ErrorCode::ALL`]).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Connections closed with 4008 because their outbound queue overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// Connections closed because they did not answer a ping in time.
    pub heartbeat_timeouts: AtomicU64,
    /// Rooms the node holds now (a gauge; see `limits.max_rooms`).
    pub rooms: AtomicI64,
    /// Messages appended to room histories.
    pub published: AtomicU64,
    /// Frames queued to connections by fan-out (one per message per member).
    pub deliveries: AtomicU64,
    /// Room messages compressed for permessage-deflate members (live and recovered):
    /// once per fan-out and window for those without context takeover, once per member
    /// with it.
    pub compressions: AtomicU64,
    /// Room messages queued compressed (one per message per compressing member).
    pub compressed_frames: AtomicU64,
    /// Connections that spoke HTTP/2 (ALPN `h2`, or cleartext with prior knowledge).
    pub http2_connections: AtomicU64,
    /// WebSockets opened on HTTP/2 streams (RFC 8441), counted in `handshakes` too.
    pub http2_websockets: AtomicU64,
    /// Tokens refused (`unauthorized`: missing, invalid, expired) at a hello, a handshake
    /// or a session's start.
    pub auth_refusals: AtomicU64,
    /// Connections and sessions ended because their token expired (4009).
    pub token_expiries: AtomicU64,
    /// Clients refused by a limit: connections, handshakes or sessions per address (429),
    /// messages or publishes over their rate (`rate_limited`), closes with 4029.
    pub limit_refusals: AtomicU64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error reply.
    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            Self::add(&self.errors[i], 1);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
