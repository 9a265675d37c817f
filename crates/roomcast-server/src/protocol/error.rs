//! Error replies.

use std::fmt;

/// The `code` of an `error` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Invalid JSON, a missing or ill-typed field, a binary frame, an invalid room name.
    BadRequest,
    /// A `type` the server does not know.
    UnknownType,
    /// A request before `hello`, or a bad token.
    Unauthorized,
    /// Not allowed for this client.
    Forbidden,
    /// Publishing to, or leaving, a room the connection has not joined.
    NotJoined,
    /// A room that does not exist (no members, no history).
    NotFound,
    /// Data over the size limit.
    TooLarge,
    /// Too many requests.
    RateLimited,
    /// The node cannot serve the request now (draining, overloaded).
    Unavailable,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 9] = [
        Self::BadRequest,
        Self::UnknownType,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotJoined,
        Self::NotFound,
        Self::TooLarge,
        Self::RateLimited,
        Self::Unavailable,
    ];

    /// The code with this wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The HTTP status an error reply with this code gets over HTTP.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest | Self::UnknownType => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::NotJoined => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownType => "unknown_type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the server refuses, with what to tell the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    /// The code.
    pub code: ErrorCode,
    /// A human-readable reason.
    pub message: String,
}

impl ProtoError {
    /// An error with a code and a reason.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_statuses_are_the_documented_ones() {
        // docs/protocol.md, `POST /cmd`: the HTTP status of each code.
        let documented = [
            ("bad_request", 400),
            ("unknown_type", 400),
            ("unauthorized", 401),
            ("forbidden", 403),
            ("not_joined", 409),
            ("not_found", 404),
            ("too_large", 413),
            ("rate_limited", 429),
            ("unavailable", 503),
        ];
        assert_eq!(ErrorCode::ALL.len(), documented.len());
        for (code, (name, status)) in ErrorCode::ALL.into_iter().zip(documented) {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.to_string(), name);
            assert_eq!(ErrorCode::parse(name), Some(code));
            assert_eq!(code.http_status(), status, "{name}");
        }
        assert_eq!(ErrorCode::parse("Bad_Request"), None);
        assert_eq!(ErrorCode::parse(""), None);
        let e = ProtoError::new(ErrorCode::NotJoined, "join first");
        assert_eq!(e.to_string(), "not_joined: join first");
    }
}
