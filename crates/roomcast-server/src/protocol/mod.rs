//! The roomcast protocol spoken on `/ws`: JSON requests in, JSON replies and pushes out
//! (see `docs/protocol.md`). Parsing and serialization only; no state, no I/O.

mod error;
mod json;
mod name;
pub mod reply;
mod request;

pub use error::{ErrorCode, ProtoError};
pub use json::JsonFrame;
pub use name::{RoomName, RoomNameError};
pub use request::{
    DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, Request, SincePos, check_id, client_id,
    history_limit, parse,
};
