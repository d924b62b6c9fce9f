//! Fixed-size framing: every frame is exactly `frame_bytes` long.

use super::{FrameSink, Framer, FramerStats};

/// Cuts a byte stream into frames of exactly `frame_bytes` bytes.
///
/// A frame that lies wholly inside one `push` input is emitted straight from
/// that slice (no copy). Only a frame that straddles two or more `push` calls
/// is assembled in an internal buffer, allocated once (capacity
/// `frame_bytes`) when the framer is made. A partial frame left at
/// [`Framer::reset`] is dropped and counted in
/// [`FramerStats::partial_bytes_dropped`]; it is never glued to the next
/// session.
#[derive(Debug)]
pub struct RawFramer {
    /// Exact size of every emitted frame; at least 1.
    frame_bytes: usize,
    /// The start of a frame that straddles `push` calls; always shorter than
    /// `frame_bytes` between calls, and empty when the stream is on a frame
    /// boundary.
    partial: Vec<u8>,
    /// Counters since construction.
    stats: FramerStats,
}

impl RawFramer {
    /// A framer that emits frames of exactly `frame_bytes` bytes.
    ///
    /// The configuration guarantees `frame_bytes >= 1`; a 0 is treated as 1
    /// so that the framer can never loop emitting empty frames.
    pub fn new(frame_bytes: usize) -> Self {
        let frame_bytes = frame_bytes.max(1);
        RawFramer {
            frame_bytes,
            partial: Vec::with_capacity(frame_bytes),
            stats: FramerStats::default(),
        }
    }

    /// Size of every frame this framer emits.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    fn count(&mut self, len: usize) {
        self.stats.frames += 1;
        self.stats.frame_bytes += len as u64;
    }
}

impl Framer for RawFramer {
    fn push(&mut self, mut input: &[u8], sink: &mut dyn FrameSink) {
        // Finish the frame left over from earlier calls first.
        if !self.partial.is_empty() {
            let need = self.frame_bytes - self.partial.len();
            let take = need.min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() < self.frame_bytes {
                return;
            }
            sink.frame(&self.partial);
            self.partial.clear();
            self.count(self.frame_bytes);
        }
        // Whole frames straight from the input slice.
        let mut frames = input.chunks_exact(self.frame_bytes);
        for frame in &mut frames {
            sink.frame(frame);
            self.stats.frames += 1;
            self.stats.frame_bytes += frame.len() as u64;
        }
        // Keep the tail (shorter than a frame) for the next call; the buffer
        // never grows past its initial capacity.
        self.partial.extend_from_slice(frames.remainder());
    }

    fn reset(&mut self) {
        self.stats.partial_bytes_dropped += self.partial.len() as u64;
        self.partial.clear();
    }

    fn stats(&self) -> FramerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Push `chunks` of `data` (cut at `cuts`) and collect the frames.
    fn run(framer: &mut RawFramer, data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        for end in cuts {
            framer.push(&data[start..end], &mut |f: &[u8]| out.push(f.to_vec()));
            start = end;
        }
        out
    }

    #[test]
    fn exact_frames_and_partial_tail_dropped_at_reset() {
        let mut f = RawFramer::new(4);
        let data: Vec<u8> = (0..10).collect();
        let out = run(&mut f, &data, &[1, 2, 7]);
        assert_eq!(out, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(f.stats().frames, 2);
        assert_eq!(f.stats().frame_bytes, 8);
        f.reset();
        assert_eq!(f.stats().partial_bytes_dropped, 2);
        // The dropped tail is not glued to the next session.
        let out = run(&mut f, &[20, 21, 22, 23], &[]);
        assert_eq!(out, vec![vec![20, 21, 22, 23]]);
        assert_eq!(f.stats().partial_bytes_dropped, 2);
    }

    #[test]
    fn whole_frames_are_not_copied() {
        let mut f = RawFramer::new(3);
        let data = [1u8, 2, 3, 4, 5, 6, 7];
        let base = data.as_ptr() as usize;
        let mut offsets = Vec::new();
        f.push(&data, &mut |fr: &[u8]| {
            offsets.push(fr.as_ptr() as usize - base)
        });
        assert_eq!(offsets, vec![0, 3]);
        assert_eq!(f.partial.capacity(), 3);
    }

    #[test]
    fn buffer_is_allocated_once() {
        let mut f = RawFramer::new(5);
        let ptr = f.partial.as_ptr();
        for chunk in [
            &[1u8, 2, 3][..],
            &[4, 5, 6, 7],
            &[8],
            &[9, 10, 11, 12, 13, 14],
        ] {
            f.push(chunk, &mut |_: &[u8]| {});
            assert_eq!(f.partial.as_ptr(), ptr);
            assert_eq!(f.partial.capacity(), 5);
        }
        assert_eq!(f.stats().frames, 2);
    }

    #[test]
    fn zero_frame_bytes_is_treated_as_one() {
        let mut f = RawFramer::new(0);
        let mut n = 0;
        f.push(&[1, 2, 3], &mut |fr: &[u8]| {
            assert_eq!(fr.len(), 1);
            n += 1;
        });
        assert_eq!(n, 3);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_whole_frames(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
            frame_bytes in 1usize..300,
        ) {
            let mut f = RawFramer::new(frame_bytes);
            let out = run(&mut f, &data, &cuts);
            let expected: Vec<Vec<u8>> =
                data.chunks_exact(frame_bytes).map(|c| c.to_vec()).collect();
            prop_assert_eq!(&out, &expected);
            let tail = data.len() % frame_bytes;
            let stats = f.stats();
            prop_assert_eq!(stats.frames, expected.len() as u64);
            prop_assert_eq!(stats.frame_bytes, (data.len() - tail) as u64);
            f.reset();
            prop_assert_eq!(f.stats().partial_bytes_dropped, tail as u64);
            prop_assert_eq!(f.partial.capacity(), frame_bytes);
        }
    }
}
