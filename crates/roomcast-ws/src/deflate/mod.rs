//! permessage-deflate (RFC 7692): the negotiation in the opening handshake
//! ([`negotiate`] for a server, [`offer`] and [`accepted`] for a client) and the codec a
//! [`crate::Connection`] runs once it is agreed ([`crate::Connection::set_deflate`]).
//!
//! The compression itself is `flate2` over zlib-rs, a pure-Rust zlib: of the deflate
//! crates the ecosystem trusts, the one whose raw streams take the window sizes the
//! extension negotiates (miniz_oxide, flate2's default, has only 32 KiB).

mod codec;
mod frame;
mod params;

pub use codec::{Deflater, InflateError, Inflater};
pub use frame::{compress_frame, compress_frame_shared};
pub use params::{DeflateConfig, NAME, NegotiationError, Params, accepted, negotiate, offer};

use crate::Role;

/// The codecs `role` runs for what was agreed: an inflater for the peer's messages and a
/// deflater for ours, each with its side's window and context rule.
pub fn codecs(role: Role, agreed: &Params) -> (Inflater, Deflater) {
    let server = (
        agreed.server_max_window_bits,
        agreed.server_no_context_takeover,
    );
    let client = (
        agreed.client_max_window_bits,
        agreed.client_no_context_takeover,
    );
    let (ours, theirs) = match role {
        Role::Server => (server, client),
        Role::Client => (client, server),
    };
    (
        Inflater::new(theirs.0, theirs.1),
        Deflater::new(ours.0, ours.1),
    )
}
