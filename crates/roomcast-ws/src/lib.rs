//! # roomcast-ws
//!
//! The WebSocket protocol (RFC 6455) for both roles, written as a sans-IO state machine:
//! this crate turns bytes into messages and messages into bytes, and never touches a
//! socket, a task or a clock. The optional `tokio` feature (on by default) adds a thin
//! driver that runs it over any `AsyncRead + AsyncWrite`.
//!
//! The layers, bottom up:
//! - [`frame`]: the header, masking, the [`FrameDecoder`] and the encoder;
//! - [`utf8`]: incremental validation of text, failing on the first invalid byte;
//! - [`Receiver`] and [`Sender`]: messages, fragmentation, limits;
//! - [`Connection`]: the two halves tied by the rules that join them (pong replies, the
//!   closing handshake, failing the connection with the right [`CloseCode`]);
//! - [`handshake`]: the opening handshake, request and response, both roles;
//! - [`deflate`]: permessage-deflate (RFC 7692), its negotiation and its codec.
//!
//! Every rule of the RFC that the peer can break maps to a [`ProtocolError`] variant and
//! from there to a close code; the handshake's to a [`handshake::RequestError`] with an
//! HTTP status.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod close;
mod config;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
mod message;
mod outbox;
mod role;
pub mod utf8;

#[cfg(feature = "tokio")]
pub mod tokio;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Connection, Receiver, Sender, State, reply};
pub use error::{ProtocolError, SendError};
pub use frame::{Frame, FrameDecoder, FrameHeader, OpCode};
pub use message::{Message, Utf8Bytes};
pub use outbox::Outbox;
pub use role::Role;
