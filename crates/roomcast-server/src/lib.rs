//! # roomcast-server
//!
//! The roomcast server as a library: listeners, workers, rooms, and the endpoints. The
//! `roomcast` binary is a thin CLI over it; tests run it in-process.
//!
//! - [`hub`]: rooms without I/O (names, bounded history, presence, a room's state);
//! - [`protocol`]: the `/ws` JSON protocol, parsing and serialization;
//! - `engine`: where rooms live (in memory, or in Redis shared by many nodes), behind
//!   one seam;
//! - `worker`: one thread per core, each owning its connections, HTTP members and local
//!   rooms, talking to the engine and the other workers through FIFO inboxes;
//! - `conn`: a connection from its first request head to its close;
//! - `http`: what hyper serves: health, Server-Sent Events, long-polling, commands over
//!   POST, and the server HTTP API under `/api`.
//!
//! See `docs/architecture.md` for how they fit.

mod auth;
pub mod config;
mod conn;
mod echo;
mod engine;
mod error;
mod http;
pub mod hub;
mod limits;
mod member;
mod metrics;
mod prefixed;
pub mod protocol;
mod server;
mod shared;
mod stats;
mod tls;
mod worker;

pub use auth::KeyError;
pub use config::{Config, ConfigError};
pub use error::ServerError;
pub use server::{Server, ShutdownHandle, TlsReloader};
pub use stats::Stats;
pub use tls::TlsError;

/// Milliseconds since the Unix epoch (message timestamps, history age).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random lowercase hex string of `bytes` random bytes (epochs, sessions, node names).
pub(crate) fn random_id(bytes: usize) -> String {
    use std::fmt::Write;
    (0..bytes)
        .map(|_| rand::random::<u8>())
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), which reach private
/// parsers through them: not an API.
#[doc(hidden)]
pub mod fuzz {
    use crate::member::{Cursor, Positions};

    /// Decodes a poll cursor; if it is one, encoding it and decoding again must give the
    /// same session, sequence, positions, client and rooms (presence may be cut to its
    /// bound). Panics otherwise.
    pub fn cursor(text: &str) {
        let Some(c) = Cursor::decode(text) else {
            return;
        };
        let again = Cursor::decode(&c.encode())
            .unwrap_or_else(|| panic!("an encoded cursor does not decode: {c:?}"));
        assert_eq!(
            (
                &again.session,
                again.seq,
                &again.positions,
                &again.client,
                &again.rooms
            ),
            (&c.session, c.seq, &c.positions, &c.client, &c.rooms)
        );
    }

    /// Decodes SSE positions (`Last-Event-ID`); once decoded, encoding and decoding
    /// again gives the same positions. Panics otherwise.
    pub fn positions(text: &str) {
        let p = Positions::decode(text);
        assert_eq!(Positions::decode(&p.encode()), p, "from {text:?}");
    }
}
