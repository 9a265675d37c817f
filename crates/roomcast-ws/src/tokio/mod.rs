//! A tokio driver for the sans-IO [`Connection`](crate::Connection).
//!
//! [`WebSocket`] runs a connection over any `AsyncRead + AsyncWrite`: it reads into the
//! codec, hands out messages, and writes what the codec queued with vectored writes.
//! [`accept`] and [`connect`] do the opening handshake first; [`WebSocket::split`] gives
//! a reader and a writer for two tasks.
//!
//! Memory: an idle connection holds no read buffer. Reads land in one 64 KiB buffer per
//! thread and only the unfinished tail of a frame is copied into the connection; a large
//! frame is read straight into a buffer of its own size.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roomcast_ws::tokio::Error> {
//! use roomcast_ws::Message;
//! use roomcast_ws::tokio::connect;
//!
//! let (mut ws, _answer) = connect("ws://127.0.0.1:8080/echo").await?;
//! ws.send(Message::text("hello")).await?;
//! while let Some(msg) = ws.recv().await {
//!     println!("{:?}", msg?);
//! }
//! # Ok(()) }
//! ```

mod accept;
mod config;
mod connect;
mod error;
mod io;
mod split;
mod stream;

pub use accept::{accept, accept_with, read_request};
pub use config::WebSocketConfig;
pub use connect::{Target, client_handshake, connect, connect_with, offer_options, open_client};
pub use error::Error;
pub use split::{WsReader, WsWriter};
pub use stream::WebSocket;
