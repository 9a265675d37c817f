//! Room names.

use std::fmt;
use std::sync::Arc;

/// A valid room name: 1 to 128 bytes, each an ASCII letter, digit, or one of `_ - . : @ = +`.
///
/// The alphabet keeps names safe in a URL path (`/rooms/{room}`), a query string, a
/// Redis key or a NATS subject without escaping, while allowing the usual namespacing
/// (`chat:lobby`, `user@42`, `orders.eu`). Names are case-sensitive.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// Why a string is not a room name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// The empty string.
    #[error("room name is empty")]
    Empty,
    /// More than [`RoomName::MAX_LEN`] bytes.
    #[error("room name is longer than {} bytes", RoomName::MAX_LEN)]
    TooLong,
    /// A character outside the alphabet.
    #[error("room name contains {0:?}: use letters, digits and _ - . : @ = +")]
    BadChar(char),
}

impl RoomName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, RoomNameError> {
        if name.is_empty() {
            return Err(RoomNameError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(RoomNameError::TooLong);
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-.:@=+".contains(*c)))
        {
            return Err(RoomNameError::BadChar(c));
        }
        Ok(Self(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        for ok in [
            "lobby",
            "chat:lobby",
            "user@42",
            "a.b-c_d=e+f",
            "X",
            &"r".repeat(128),
        ] {
            assert!(RoomName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(RoomName::new(""), Err(RoomNameError::Empty));
        assert_eq!(RoomName::new(&"r".repeat(129)), Err(RoomNameError::TooLong));
        for (bad, c) in [
            ("a b", ' '),
            ("a/b", '/'),
            ("é", 'é'),
            ("a#b", '#'),
            ("a?b", '?'),
        ] {
            assert_eq!(RoomName::new(bad), Err(RoomNameError::BadChar(c)));
        }
    }

    #[test]
    fn shown_as_the_name() {
        let name = RoomName::new("chat:eu").unwrap();
        assert_eq!(name.to_string(), "chat:eu");
        assert_eq!(format!("{name:?}"), "\"chat:eu\"");
        assert_eq!(name.as_str(), "chat:eu");
    }
}
