//! The opening handshake (RFC 6455 section 4), both roles, without I/O.
//!
//! A server parses the request head with [`parse_request`] (or takes it from an HTTP
//! library), routes it, checks it with [`validate_request`], and answers with
//! [`ClientOffer::accept`] or [`RequestError::to_http1`]. A client sends what
//! [`ClientHandshake::new`] returns and checks the answer with
//! [`ClientHandshake::parse_response`]. Subprotocols and extensions are offered and
//! chosen through [`ClientOptions`], [`ClientOffer`] and [`Accept`]; the extension
//! parameters are parsed into [`ExtensionOffer`]s for an extension to negotiate. Over
//! HTTP/2 (RFC 8441) the server checks an extended CONNECT with [`validate_connect`] and
//! answers with [`ClientOffer::accept_connect`]; the client uses
//! [`ClientHandshake::connect`] and [`ClientHandshake::check_connect_response`].

mod client;
mod connect;
pub mod headers;
mod key;
mod server;

pub use client::{ClientHandshake, ClientOptions, ResponseError, ServerAnswer};
pub use connect::{PROTOCOL, validate_connect};
pub use headers::ExtensionOffer;
pub use key::{GUID, accept_key, generate_key, is_valid_key};
pub use server::{
    Accept, ClientOffer, DEFAULT_MAX_HEAD, MAX_HEADERS, RequestError, encode_response,
    parse_request, validate_request,
};
