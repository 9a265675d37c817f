//! Counters a running server keeps (read with [`crate::Server::stats`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Node-wide counters. Updated with relaxed atomics: they count, they do not order.
#[derive(Debug, Default)]
pub struct Stats {
    /// Open room connections (`/ws` and `/rooms/...`).
    pub connections: AtomicI64,
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

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
