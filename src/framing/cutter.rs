//! The buffering engine shared by the framers that find frames by their
//! headers (MP3, AAC, Ogg): it feeds a [`Format`] a window of the stream that
//! starts where the next decision is due, carries undecided bytes across
//! `push` calls in a buffer allocated once, and skips runs of bytes (tags,
//! oversized frames) that may reach past the end of the input.
//!
//! The format decides; the cutter only moves. Decisions depend on the bytes
//! alone, never on how they were split into `push` calls, as long as the
//! format keeps the [`Format::decide`] contract.

use super::FrameSink;

/// What the bytes at the start of a window are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Cannot decide before the window holds this many bytes. Always more
    /// than the window holds and at most the cutter's capacity.
    NeedMore(usize),
    /// The first this-many bytes (at least 1) are decided: emitted, or
    /// skipped and counted by the format. May reach past the end of the
    /// window (a tag or an oversized frame being skipped); the cutter then
    /// skips the rest as it arrives.
    Consume(usize),
}

/// A stream format the cutter can drive.
pub(super) trait Format {
    /// Decide the bytes at the start of `window`.
    ///
    /// Contract: `NeedMore(n)` has no side effect and `n > window.len()`,
    /// `n <= capacity`. `Consume(n)` is final: the format has already sent
    /// what it emits to `sink` (only ever bytes from inside `window`) and
    /// counted what it skips; `n >= 1`.
    fn decide(&mut self, window: &[u8], sink: &mut dyn FrameSink) -> Action;
}

/// Carries undecided bytes between `push` calls.
#[derive(Debug)]
pub(super) struct Cutter {
    /// Undecided bytes carried over from earlier `push` calls; `buf[0]` is
    /// where the next decision starts. Never longer than its capacity, fixed
    /// when the cutter is made.
    pub(super) buf: Vec<u8>,
    /// Bytes still to be skipped at the start of the next input (the rest
    /// of a `Consume` that reached past the input). Non-zero only while
    /// `buf` is empty.
    skip: usize,
}

impl Cutter {
    /// A cutter whose formats never ask for more than `capacity` bytes.
    pub(super) fn new(capacity: usize) -> Cutter {
        Cutter {
            buf: Vec::with_capacity(capacity),
            skip: 0,
        }
    }

    /// Feed `input`; `format` decides, `sink` gets what it emits.
    pub(super) fn push(
        &mut self,
        format: &mut dyn Format,
        mut input: &[u8],
        sink: &mut dyn FrameSink,
    ) {
        // 1. Finish a skip left over from an earlier call.
        if self.skip > 0 {
            let n = self.skip.min(input.len());
            input = &input[n..];
            self.skip -= n;
            if self.skip > 0 {
                return;
            }
        }

        // 2. Decide the bytes carried over from earlier calls. The stream
        // from here on is `buf[..carried] ++ input`; `buf` always holds a
        // prefix of it (the carried bytes plus `used` bytes copied from
        // `input`), and `pos` is a position in that stream.
        let mut carried = self.buf.len();
        let mut used = 0;
        let mut pos = 0;
        while pos < carried {
            match decide(format, &self.buf[pos..], sink) {
                Action::NeedMore(n) => {
                    // Drop what is decided so the buffer never outgrows its
                    // capacity, then copy just the bytes needed.
                    self.buf.drain(..pos);
                    carried -= pos;
                    pos = 0;
                    let take = n.saturating_sub(self.buf.len()).min(input.len() - used);
                    if take == 0 {
                        return; // input used up; the rest stays buffered
                    }
                    self.buf.extend_from_slice(&input[used..used + take]);
                    used += take;
                }
                Action::Consume(n) => pos += n,
            }
        }
        // `pos` is now past the carried bytes: continue in `input` itself.
        let mut at = pos - carried;
        self.buf.clear();

        // 3. Decide the input in place.
        while at < input.len() {
            match decide(format, &input[at..], sink) {
                Action::NeedMore(_) => {
                    self.buf.extend_from_slice(&input[at..]);
                    return;
                }
                Action::Consume(n) => at += n,
            }
        }
        // A skip may run past the end of this input.
        self.skip = at - input.len();
    }

    /// Forget the buffered bytes and any pending skip; returns how many
    /// buffered bytes were dropped.
    pub(super) fn reset(&mut self) -> usize {
        let dropped = self.buf.len();
        self.buf.clear();
        self.skip = 0;
        dropped
    }
}

/// [`Format::decide`], with its contract enforced so that a format bug can
/// never stall the stream or grow the buffer: a `NeedMore` the window already
/// satisfies, or a `Consume(0)`, becomes `Consume(1)`.
fn decide(format: &mut dyn Format, window: &[u8], sink: &mut dyn FrameSink) -> Action {
    match format.decide(window, sink) {
        Action::NeedMore(n) if n <= window.len() => {
            debug_assert!(false, "NeedMore({n}) with {} bytes", window.len());
            Action::Consume(1)
        }
        Action::Consume(0) => {
            debug_assert!(false, "Consume(0)");
            Action::Consume(1)
        }
        a => a,
    }
}
