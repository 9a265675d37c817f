//! Errors of the driver.

use std::io;

use crate::error::{ProtocolError, SendError};
use crate::handshake::{RequestError, ResponseError};

/// What can go wrong running a WebSocket over a tokio stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol; the connection was failed with a close frame.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A message could not be sent.
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// We refused the client's handshake (the HTTP error was sent to it).
    #[error("handshake refused: {0}")]
    Request(#[from] RequestError),
    /// The application refused the handshake with this HTTP status.
    #[error("handshake rejected with status {0}")]
    Rejected(http::StatusCode),
    /// The server refused or botched our handshake.
    #[error("handshake failed: {0}")]
    Response(#[from] ResponseError),
    /// The server's permessage-deflate answer breaks RFC 7692 or our offer.
    #[error("handshake failed: {0}")]
    Deflate(crate::deflate::NegotiationError),
    /// The URL given to `connect` is not a usable `ws://` URL.
    #[error("invalid WebSocket URL: {0}")]
    Url(&'static str),
    /// A handshake or close took longer than its timeout.
    #[error("timed out during the {0}")]
    Timeout(&'static str),
    /// The transport ended before the closing handshake (close code 1006).
    #[error("the connection ended without a close frame (1006)")]
    AbnormalClosure,
}
