//! Frames: the header, masking, the decoder and the encoder.

mod decode;
mod encode;
mod header;
pub mod mask;
mod opcode;

pub use decode::{Frame, FrameDecoder};
pub use encode::{COPY_THRESHOLD, encode_frame, encode_shared};
pub use header::{FrameHeader, RSV1, RSV2, RSV3};
pub use mask::apply_mask;
pub use opcode::OpCode;
