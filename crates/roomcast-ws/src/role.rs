//! Which end of the connection we are.

/// The role of an endpoint. It decides which way masking goes (RFC 6455 section 5.1):
/// a client masks every frame it sends and the server masks none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The endpoint that accepted the connection.
    Server,
    /// The endpoint that opened the connection.
    Client,
}

impl Role {
    /// Whether frames *sent* by this role carry a masking key.
    pub const fn masks_outgoing(self) -> bool {
        matches!(self, Role::Client)
    }

    /// Whether frames *received* by this role must carry a masking key.
    pub const fn expects_masked(self) -> bool {
        matches!(self, Role::Server)
    }
}
