//! Rooms without I/O: the bounded history, presence, and a room's authoritative
//! state. The workers (`crate::worker`) drive these; everything here is unit-tested on
//! its own. Room names and the frames a room sends are the protocol's (`crate::protocol`):
//! the hub depends on the protocol, never the other way.

mod log;
mod presence;
mod room;

pub use log::{Entry, RoomLog, Since};
pub use presence::{Diff, Presence};
pub use room::{HistoryLimits, Joined, Published, Room, Subs};
