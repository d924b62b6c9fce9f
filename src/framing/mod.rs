//! Framers: cut a source's byte stream into whole frames.
//!
//! A framer is fed the bytes of one source session in whatever chunks `read()`
//! returned and emits each complete frame exactly once, in order. It never
//! emits a partial or truncated frame: bytes that cannot form a valid frame are
//! skipped and counted. [`Framer::reset`] is called at every source (re)open so
//! that a partial frame of the previous session is never glued to the next.

mod mp3;
mod raw;

pub use mp3::{mp3_frame_len, Mp3Framer};
pub use raw::RawFramer;

use crate::config::FramerKind;

/// The largest legal MPEG audio frame: MPEG-2.5 layer II at 160 kbit/s and
/// 8 kHz, padded (144 × 160000 / 8000 + 1).
pub const MP3_MAX_FRAME_BYTES: usize = 2881;

/// Counters a framer keeps about what it has seen.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramerStats {
    /// Frames emitted.
    pub frames: u64,
    /// Bytes in emitted frames.
    pub frame_bytes: u64,
    /// Bytes skipped because they did not start a valid frame (garbage).
    pub invalid_bytes: u64,
    /// Valid frames dropped whole because they were larger than the maximum
    /// frame size (never sent truncated).
    pub oversized_frames: u64,
    /// Bytes of an incomplete frame thrown away at a reset (end of a session).
    pub partial_bytes_dropped: u64,
}

/// Cuts bytes into whole frames.
pub trait Framer: Send {
    /// Feed the next chunk of the stream; `emit` is called once per complete
    /// frame, in order. A frame may span several calls.
    fn push(&mut self, input: &[u8], emit: &mut dyn FnMut(&[u8]));
    /// Forget any buffered partial frame (counted in `partial_bytes_dropped`).
    fn reset(&mut self);
    /// Counters since the framer was made (not cleared by `reset`).
    fn stats(&self) -> FramerStats;
}

/// Build the framer a stream is configured with.
pub fn new_framer(kind: FramerKind, frame_bytes: usize) -> Box<dyn Framer> {
    match kind {
        FramerKind::Raw => Box::new(RawFramer::new(frame_bytes)),
        FramerKind::Mp3 => Box::new(Mp3Framer::new(frame_bytes)),
    }
}
