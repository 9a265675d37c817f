//! # roomcast-server
//!
//! The roomcast server as a library: a TCP listener, the HTTP routing in front of the
//! endpoints, and the endpoints themselves. The `roomcast` binary is a thin CLI over it;
//! tests run it in-process.
//!
//! Every connection starts in `conn`: the first request head is read and parsed with
//! the WebSocket crate's own handshake parser. A WebSocket endpoint is answered right
//! there (no HTTP library in the way of the handshake); anything else is handed, bytes
//! already read included, to hyper (`routes`).

pub mod config;
mod conn;
mod echo;
mod error;
mod prefixed;
mod routes;
mod server;

pub use config::ServerConfig;
pub use error::ServerError;
pub use server::{Server, ShutdownHandle};
