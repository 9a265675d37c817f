//! Limits of a connection.

/// Settings of one connection, shared by both roles.
///
/// The defaults bound the memory one peer can make us hold: a frame or message larger
/// than 16 MiB is refused with close code 1009. A server that expects small messages (a
/// chat, a pub/sub hub) should lower both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The largest frame payload accepted, in bytes (default 16 MiB).
    pub max_frame_size: usize,
    /// The largest message accepted, all fragments together, in bytes (default 16 MiB).
    pub max_message_size: usize,
}

impl Config {
    /// The default largest frame: 16 MiB.
    pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
    /// The default largest message: 16 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 << 20;

    /// Sets the largest frame payload accepted.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Sets the largest message accepted.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_frame_size: Self::DEFAULT_MAX_FRAME_SIZE,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}
