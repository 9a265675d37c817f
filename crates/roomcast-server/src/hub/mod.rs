//! Rooms without I/O: names, the bounded history, presence, and a room's authoritative
//! state. The workers (`crate::worker`) drive these; everything here is unit-tested on
//! its own.

mod log;
mod name;
mod presence;
mod room;

pub use log::{Entry, RoomLog, Since};
pub use name::{RoomName, RoomNameError};
pub use presence::{Diff, Presence};
pub use room::{HistoryLimits, Joined, Published, Room, Subs};
