//! MPEG audio framing: cut a stream into physical MPEG-1/2/2.5 layer I/II/III
//! frames.
//!
//! Only physical frames are considered: a client that joins mid-stream may
//! start at a layer III frame whose bit reservoir (`main_data_begin`) points
//! into frames it never got, and its decoder will report errors for the first
//! frame or so. That is inherited from streamserve and noted in the semantics.

use super::{Framer, FramerStats};

/// Bitrates in kbit/s by index 1..=14 (index 0, free format, and 15 are
/// invalid), from ISO/IEC 11172-3 and 13818-3.
const MPEG1_LAYER1: [u16; 15] = [
    0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
];
const MPEG1_LAYER2: [u16; 15] = [
    0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
];
const MPEG1_LAYER3: [u16; 15] = [
    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
];
/// MPEG-2 and MPEG-2.5 layer I.
const MPEG2_LAYER1: [u16; 15] = [
    0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
];
/// MPEG-2 and MPEG-2.5 layers II and III (the same table for both).
const MPEG2_LAYER23: [u16; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];

/// Sample rates in Hz by index 0..=2 (3 is reserved).
const RATES_MPEG1: [u32; 3] = [44100, 48000, 32000];
const RATES_MPEG2: [u32; 3] = [22050, 24000, 16000];
const RATES_MPEG25: [u32; 3] = [11025, 12000, 8000];

/// The longest frame any valid header describes: MPEG-2.5 layer II,
/// 160 kbit/s at 8000 Hz, padded (`144 * 160000 / 8000 + 1`). Checked
/// exhaustively by a test.
const MAX_FRAME_LEN: usize = 2881;

/// Header bytes needed to recognise a frame.
const HEADER_LEN: usize = 4;

/// Length in bytes of the MPEG audio frame that starts with `header`, or
/// `None` if `header` does not start a valid frame.
///
/// A valid header has the sync pattern (`0xFF`, then the top three bits of
/// the second byte set), a version other than the reserved one, a layer other
/// than the reserved one, a bitrate index other than 0 (free format, whose
/// length cannot be known from the header) and 15, and a sample-rate index
/// other than 3. The length is, with the bitrate in bit/s and integer
/// division: layer I `(12 * bitrate / rate + padding) * 4`; layer III of
/// MPEG-2 and MPEG-2.5 `72 * bitrate / rate + padding`; otherwise
/// `144 * bitrate / rate + padding`. Every valid header gives a length of
/// at least 24 and at most 2881 bytes. The fourth byte (mode, emphasis) does
/// not affect the length.
///
/// ```
/// use ringcast::framing::mp3_frame_len;
/// assert_eq!(mp3_frame_len([0xFF, 0xFB, 0x90, 0x64]), Some(417));
/// assert_eq!(mp3_frame_len([0xFF, 0xFB, 0x00, 0x64]), None); // free format
/// ```
pub fn mp3_frame_len(header: [u8; 4]) -> Option<usize> {
    let [b0, b1, b2, _] = header;
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 {
        return None;
    }
    let version = (b1 >> 3) & 3; // 0 = 2.5, 1 = reserved, 2 = MPEG-2, 3 = MPEG-1
    let layer = (b1 >> 1) & 3; // 0 = reserved, 1 = III, 2 = II, 3 = I
    let bitrate_index = usize::from(b2 >> 4);
    let rate_index = usize::from((b2 >> 2) & 3);
    let padding = usize::from((b2 >> 1) & 1);
    if bitrate_index == 0 || bitrate_index == 15 {
        return None;
    }
    let (bitrates, rates) = match (version, layer) {
        (_, 0) | (1, _) => return None,
        (3, 3) => (&MPEG1_LAYER1, &RATES_MPEG1),
        (3, 2) => (&MPEG1_LAYER2, &RATES_MPEG1),
        (3, _) => (&MPEG1_LAYER3, &RATES_MPEG1),
        (2, 3) => (&MPEG2_LAYER1, &RATES_MPEG2),
        (2, _) => (&MPEG2_LAYER23, &RATES_MPEG2),
        (_, 3) => (&MPEG2_LAYER1, &RATES_MPEG25),
        (_, _) => (&MPEG2_LAYER23, &RATES_MPEG25),
    };
    // Both lookups are in range for every header that got here; `get` keeps
    // that a non-panicking fact rather than an argument.
    let bitrate = usize::from(*bitrates.get(bitrate_index)?) * 1000;
    let rate = usize::try_from(*rates.get(rate_index)?).ok()?;
    let len = match (version, layer) {
        (_, 3) => (12 * bitrate / rate + padding) * 4,
        (0 | 2, 1) => 72 * bitrate / rate + padding,
        _ => 144 * bitrate / rate + padding,
    };
    Some(len)
}

/// Whether `next` is a valid header of the same stream as `header`: same
/// version, layer and sample rate (bitrate, padding, protection and mode may
/// change from frame to frame).
fn continues(header: [u8; 4], next: [u8; 4]) -> bool {
    mp3_frame_len(next).is_some()
        && header[1] & 0x1E == next[1] & 0x1E
        && header[2] & 0x0C == next[2] & 0x0C
}

/// The first four bytes of `window`, if it has that many.
fn header_of(window: &[u8]) -> Option<[u8; 4]> {
    match window {
        [a, b, c, d, ..] => Some([*a, *b, *c, *d]),
        _ => None,
    }
}

/// What to do with the bytes at the start of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Cannot decide before the window holds this many bytes.
    NeedMore(usize),
    /// A frame of this length starts here: emit it.
    Frame(usize),
    /// A frame of this length starts here but is longer than the maximum:
    /// drop it whole.
    Oversized(usize),
    /// No frame starts here: skip one byte.
    Invalid,
}

/// Cuts a byte stream into whole physical MPEG audio frames of at most
/// `max_frame_bytes` bytes each.
///
/// # Sync rule (resistance to false syncs)
///
/// The framer is either *in sync* (the previous thing it saw was a frame) or
/// *hunting* (at the start of a stream, after every [`Framer::reset`], and
/// after skipping any invalid byte).
///
/// - In sync, a valid header is trusted: the frame is emitted as soon as its
///   last byte arrives, never delayed.
/// - Hunting, a valid header is accepted only if the four bytes right after
///   its frame form a valid header of the same version, layer and sample
///   rate. The framer waits for those bytes if they have not arrived yet
///   (so the first frame of a stream, or after garbage, is emitted one
///   header later than it could be). A candidate that fails the check is a
///   false sync: its first byte is skipped and counted as invalid, and the
///   hunt goes on at the next byte.
///
/// The stream start is hunted too, because a source (re)opened over the
/// network can begin mid-frame. Consequences of the rule: a candidate still
/// unconfirmed at a reset is dropped as a partial frame, and a lone frame
/// with garbage on both sides is skipped as garbage. Decisions depend only
/// on the bytes, never on how they were split into `push` calls.
///
/// # Oversized frames
///
/// A valid frame longer than `max_frame_bytes` is never emitted, truncated or
/// otherwise: it is skipped whole (also across `push` calls) and counted in
/// [`FramerStats::oversized_frames`]; the framer stays in sync after it.
///
/// # Copies
///
/// A frame lying wholly inside one `push` input is emitted straight from that
/// slice. A frame (or a candidate awaiting its confirming header) that
/// straddles `push` calls is assembled in an internal buffer allocated once,
/// when the framer is made, with room for the longest possible frame plus a
/// header.
#[derive(Debug)]
pub struct Mp3Framer {
    /// Longest frame that is emitted; longer valid frames are dropped.
    max_frame_bytes: usize,
    /// Undecided bytes carried over from earlier `push` calls; `buf[0]` is
    /// where the next frame or candidate starts. Never longer than
    /// `MAX_FRAME_LEN + HEADER_LEN`, its capacity from construction.
    buf: Vec<u8>,
    /// Bytes of an oversized frame still to be skipped at the start of the
    /// next input. Non-zero only while `buf` is empty.
    skip: usize,
    /// In sync (the last decision was a frame), as opposed to hunting.
    synced: bool,
    /// Counters since construction.
    stats: FramerStats,
}

impl Mp3Framer {
    /// A framer that emits MPEG audio frames of at most `max_frame_bytes`
    /// bytes; valid frames longer than that are dropped whole and counted.
    pub fn new(max_frame_bytes: usize) -> Self {
        Mp3Framer {
            max_frame_bytes,
            buf: Vec::with_capacity(MAX_FRAME_LEN + HEADER_LEN),
            skip: 0,
            synced: false,
            stats: FramerStats::default(),
        }
    }

    /// Longest frame this framer emits.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decide what the bytes at the start of `window` are, given the sync
    /// state. Returns `NeedMore(n)` only with `n > window.len()` and
    /// `n <= MAX_FRAME_LEN + HEADER_LEN`; `Frame(len)` only with
    /// `HEADER_LEN <= len <= window.len()`.
    fn step(&self, window: &[u8]) -> Step {
        let Some(header) = header_of(window) else {
            return Step::NeedMore(HEADER_LEN);
        };
        let Some(len) = mp3_frame_len(header) else {
            return Step::Invalid;
        };
        // Cannot happen (the shortest frame, MPEG-2 layer III 8k/24k, is 24
        // bytes), but progress must never depend on an arithmetic argument.
        if !(HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            return Step::Invalid;
        }
        if !self.synced {
            let Some(next) = window.get(len..).and_then(header_of) else {
                return Step::NeedMore(len + HEADER_LEN);
            };
            if !continues(header, next) {
                return Step::Invalid;
            }
        }
        if len > self.max_frame_bytes {
            Step::Oversized(len)
        } else if window.len() < len {
            Step::NeedMore(len)
        } else {
            Step::Frame(len)
        }
    }

    /// Record a decision's effect on the counters and the sync state.
    fn note(&mut self, step: Step) {
        match step {
            Step::Frame(len) => {
                self.stats.frames += 1;
                self.stats.frame_bytes += len as u64;
                self.synced = true;
            }
            Step::Oversized(_) => {
                self.stats.oversized_frames += 1;
                self.synced = true;
            }
            Step::Invalid => {
                self.stats.invalid_bytes += 1;
                self.synced = false;
            }
            Step::NeedMore(_) => {}
        }
    }
}

impl Framer for Mp3Framer {
    fn push(&mut self, mut input: &[u8], emit: &mut dyn FnMut(&[u8])) {
        // 1. Finish skipping an oversized frame.
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
            let step = self.step(&self.buf[pos..]);
            match step {
                Step::NeedMore(n) => {
                    // Drop what is decided so the buffer never outgrows
                    // its capacity, then copy just the bytes needed.
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
                Step::Frame(len) => {
                    emit(&self.buf[pos..pos + len]);
                    pos += len;
                }
                Step::Oversized(len) => pos += len,
                Step::Invalid => pos += 1,
            }
            self.note(step);
        }
        // `pos` is now past the carried bytes: continue in `input` itself.
        let mut at = pos - carried;
        self.buf.clear();

        // 3. Decide the input in place.
        while at < input.len() {
            let step = self.step(&input[at..]);
            match step {
                Step::NeedMore(_) => {
                    self.buf.extend_from_slice(&input[at..]);
                    return;
                }
                Step::Frame(len) => {
                    emit(&input[at..at + len]);
                    at += len;
                }
                Step::Oversized(len) => at += len,
                Step::Invalid => at += 1,
            }
            self.note(step);
        }
        // An oversized frame may run past the end of this input.
        self.skip = at - input.len();
    }

    fn reset(&mut self) {
        self.stats.partial_bytes_dropped += self.buf.len() as u64;
        self.buf.clear();
        self.skip = 0;
        self.synced = false;
    }

    fn stats(&self) -> FramerStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Build a header from its fields (`version`: 0 = 2.5, 2 = 2, 3 = 1;
    /// `layer`: 1 = III, 2 = II, 3 = I).
    fn header(version: u8, layer: u8, bitrate_index: u8, rate_index: u8, pad: u8) -> [u8; 4] {
        [
            0xFF,
            0xE0 | version << 3 | layer << 1 | 1,
            bitrate_index << 4 | rate_index << 2 | pad << 1,
            0x64,
        ]
    }

    /// A whole frame starting with `h`, its body filled from `seed`
    /// (including 0xFF bytes, which must not matter in sync).
    fn frame(h: [u8; 4], seed: u8) -> Vec<u8> {
        let len = mp3_frame_len(h).expect("test header is valid");
        let mut f = h.to_vec();
        f.extend((4..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        f
    }

    /// 417 bytes: MPEG-1 layer III 128k/44.1k.
    const H417: [u8; 4] = [0xFF, 0xFB, 0x90, 0x64];
    /// 418 bytes: the same, padded.
    const H418: [u8; 4] = [0xFF, 0xFB, 0x92, 0x64];

    /// Push `data` cut at `cuts`; collect frames.
    fn run(f: &mut Mp3Framer, data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        let mut start = 0;
        for end in cuts {
            f.push(&data[start..end], &mut |fr| out.push(fr.to_vec()));
            start = end;
        }
        out
    }

    #[test]
    fn known_vectors() {
        assert_eq!(mp3_frame_len(H417), Some(417));
        assert_eq!(mp3_frame_len(H418), Some(418));
        // MPEG-1 layer I, 128 kbit/s, 48 kHz, padded: 384 samples at 48 kHz
        // are 8 ms, 128 kbit/s * 8 ms = 128 bytes, plus a 4-byte slot = 132.
        // (The brief's "44" contradicts the ISO formula it also states.)
        assert_eq!(mp3_frame_len(header(3, 3, 4, 1, 1)), Some(132));
        assert_eq!(mp3_frame_len([0xFF, 0xFF, 0x46, 0x00]), Some(132));
        // MPEG-2 layer III, 160 kbit/s, 24 kHz, padded.
        assert_eq!(mp3_frame_len(header(2, 1, 14, 1, 1)), Some(481));
        // MPEG-2.5 layer II, 144 kbit/s, 11025 Hz (layer II table, not I).
        assert_eq!(mp3_frame_len(header(0, 2, 13, 0, 0)), Some(1880));
        // MPEG-2 layer III, 40 kbit/s, 16 kHz.
        assert_eq!(mp3_frame_len(header(2, 1, 5, 2, 0)), Some(180));
    }

    #[test]
    fn invalid_headers() {
        assert_eq!(mp3_frame_len([0xFE, 0xFB, 0x90, 0x64]), None); // no sync
        assert_eq!(mp3_frame_len([0xFF, 0xDB, 0x90, 0x64]), None); // no sync
        assert_eq!(mp3_frame_len(header(1, 1, 9, 0, 0)), None); // reserved version
        assert_eq!(mp3_frame_len(header(3, 0, 9, 0, 0)), None); // reserved layer
        assert_eq!(mp3_frame_len(header(3, 1, 0, 0, 0)), None); // free format
        assert_eq!(mp3_frame_len(header(3, 1, 15, 0, 0)), None); // bad bitrate
        assert_eq!(mp3_frame_len(header(3, 1, 9, 3, 0)), None); // reserved rate
    }

    #[test]
    fn all_headers_within_bounds() {
        let mut max = 0;
        let mut min = usize::MAX;
        for b1 in 0..=255u8 {
            for b2 in 0..=255u8 {
                if let Some(len) = mp3_frame_len([0xFF, b1, b2, 0]) {
                    max = max.max(len);
                    min = min.min(len);
                }
            }
        }
        assert_eq!(max, MAX_FRAME_LEN);
        assert_eq!(min, 24);
    }

    #[test]
    fn frames_in_one_push_are_not_copied() {
        let mut data = frame(H417, 1);
        data.extend(frame(H418, 2));
        data.extend(frame(H417, 3));
        let base = data.as_ptr() as usize;
        let mut f = Mp3Framer::new(1000);
        let mut seen = Vec::new();
        f.push(&data, &mut |fr| {
            seen.push((fr.as_ptr() as usize - base, fr.len()))
        });
        assert_eq!(seen, vec![(0, 417), (417, 418), (835, 417)]);
        assert_eq!(f.stats().invalid_bytes, 0);
    }

    #[test]
    fn frame_split_across_many_pushes() {
        let frames = [frame(H417, 1), frame(H418, 2), frame(H417, 3)];
        let data = frames.concat();
        let mut f = Mp3Framer::new(1000);
        let ptr = f.buf.as_ptr();
        let mut out = Vec::new();
        for b in &data {
            f.push(std::slice::from_ref(b), &mut |fr| out.push(fr.to_vec()));
            assert_eq!(f.buf.as_ptr(), ptr, "buffer reallocated");
        }
        assert_eq!(out, frames.to_vec());
        assert_eq!(f.stats().frames, 3);
        assert_eq!(f.stats().frame_bytes, data.len() as u64);
        assert_eq!(f.stats().invalid_bytes, 0);
    }

    #[test]
    fn in_sync_frames_are_not_delayed() {
        let mut f = Mp3Framer::new(1000);
        let mut n = 0;
        // The first frame waits for the next header (hunting at start) ...
        f.push(&frame(H417, 1), &mut |_| n += 1);
        assert_eq!(n, 0);
        f.push(&frame(H418, 2)[..4], &mut |_| n += 1);
        assert_eq!(n, 1);
        // ... after that each frame goes out with its last byte.
        f.push(&frame(H418, 2)[4..], &mut |_| n += 1);
        assert_eq!(n, 2);
    }

    #[test]
    fn garbage_between_frames_is_counted_exactly() {
        // Garbage runs (no 0xFF, so no candidate starts inside them) each
        // followed by at least two frames: the frame after a run is
        // confirmed by the header of the next. The stream also starts with
        // two frames, since the start is hunted too.
        let frames: Vec<Vec<u8>> = (0..12)
            .map(|i| frame(if i % 3 == 0 { H418 } else { H417 }, i as u8))
            .collect();
        let garbage: Vec<u8> = (0..57u8).map(|i| i.wrapping_mul(7)).collect();
        let mut data = Vec::new();
        let mut garbage_len = 0;
        for (i, fr) in frames.iter().enumerate() {
            if i % 2 == 1 && i >= 3 && i + 1 < frames.len() {
                let g = &garbage[..(i * 5) % garbage.len()];
                data.extend_from_slice(g);
                garbage_len += g.len();
            }
            data.extend_from_slice(fr);
        }
        for cuts in [
            vec![],
            vec![1, 400, 833, 2000, 2001, 3500],
            (0..data.len()).step_by(97).collect(),
        ] {
            let mut f = Mp3Framer::new(1000);
            let out = run(&mut f, &data, &cuts);
            assert_eq!(out, frames);
            assert_eq!(f.stats().invalid_bytes, garbage_len as u64);
            assert_eq!(f.stats().frames, frames.len() as u64);
        }
    }

    #[test]
    fn false_sync_in_garbage_is_rejected() {
        // Garbage holding a valid-looking header whose "frame" is not
        // followed by another header.
        let mut garbage = vec![0x11, 0x22];
        garbage.extend_from_slice(&H417);
        garbage.extend_from_slice(&[0x33; 500]);
        let frames = [
            frame(H417, 1),
            frame(H418, 2),
            frame(H417, 3),
            frame(H418, 4),
        ];
        let data = [&frames[0][..], &frames[1], &garbage, &frames[2], &frames[3]].concat();
        let mut f = Mp3Framer::new(1000);
        let out = run(&mut f, &data, &[3, 250, 1000]);
        assert_eq!(out, frames.to_vec());
        assert_eq!(f.stats().invalid_bytes, garbage.len() as u64);
    }

    #[test]
    fn lone_frame_between_garbage_is_skipped() {
        let g = [0u8; 10];
        let frames = [
            frame(H417, 1),
            frame(H418, 2),
            frame(H417, 3),
            frame(H418, 4),
            frame(H417, 5),
        ];
        let data = [
            &frames[0][..],
            &frames[1],
            &g,
            &frames[2],
            &g,
            &frames[3],
            &frames[4],
        ]
        .concat();
        let mut f = Mp3Framer::new(1000);
        let out = run(&mut f, &data, &[]);
        let expected = [&frames[0], &frames[1], &frames[3], &frames[4]];
        assert_eq!(out.iter().collect::<Vec<_>>(), expected);
        assert_eq!(f.stats().invalid_bytes, 20 + 417);
    }

    #[test]
    fn oversized_frame_is_skipped_whole() {
        // MPEG-1 layer III 320k/44.1k: 1044 bytes, same format as H417.
        let big = frame(header(3, 1, 14, 0, 0), 9);
        let frames = [frame(H417, 1), frame(H418, 2), frame(H417, 3)];
        let data = [&frames[0][..], &big, &frames[1], &big, &big, &frames[2]].concat();
        for cuts in [
            vec![],
            vec![500, 501, 502, 3000],
            (0..data.len()).step_by(13).collect(),
        ] {
            let mut f = Mp3Framer::new(1000);
            let out = run(&mut f, &data, &cuts);
            assert_eq!(out, frames.to_vec());
            let stats = f.stats();
            assert_eq!(stats.oversized_frames, 3);
            assert_eq!(stats.invalid_bytes, 0);
            assert_eq!(stats.frames, 3);
            assert!(out.iter().all(|fr| fr.len() <= 1000));
        }
    }

    #[test]
    fn oversized_frame_after_garbage_is_confirmed_then_skipped() {
        let big = frame(header(3, 1, 9, 0, 0), 9); // 417 bytes, max is 400
        let small = frame(header(3, 1, 1, 0, 0), 1); // 104 bytes
        let data = [&[1u8, 2, 3][..], &big, &small, &big, &small].concat();
        let mut f = Mp3Framer::new(400);
        let out = run(&mut f, &data, &[200]);
        assert_eq!(out, vec![small.clone(), small]);
        assert_eq!(f.stats().oversized_frames, 2);
        assert_eq!(f.stats().invalid_bytes, 3);
    }

    #[test]
    fn reset_drops_partial_frame_and_counts_it() {
        let frames = [frame(H417, 1), frame(H418, 2)];
        let mut f = Mp3Framer::new(1000);
        let mut out = Vec::new();
        f.push(&frames[0], &mut |fr| out.push(fr.to_vec()));
        f.push(&frames[1][..100], &mut |fr| out.push(fr.to_vec()));
        assert_eq!(out, vec![frames[0].clone()]);
        f.reset();
        assert_eq!(f.stats().partial_bytes_dropped, 100);
        // The next session starts clean: the tail of the old frame is not
        // glued to it, and the new session's frames come out whole.
        let data = [&frames[1][100..], &frames[0][..], &frames[1]].concat();
        f.push(&data, &mut |fr| out.push(fr.to_vec()));
        assert_eq!(
            out,
            vec![frames[0].clone(), frames[0].clone(), frames[1].clone()]
        );
        assert_eq!(f.stats().invalid_bytes, 318);
        assert_eq!(f.stats().partial_bytes_dropped, 100);
    }

    /// A valid frame from arbitrary field values.
    fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(vec![0u8, 2, 3]),
            1u8..4,
            1u8..15,
            0u8..3,
            0u8..2,
            any::<u8>(),
        )
            .prop_map(|(v, l, b, r, p, seed)| frame(header(v, l, b, r, p), seed))
    }

    /// Valid frames (some runs of one format, some mixed) with garbage and
    /// near-headers mixed in.
    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                3 => arb_frame(),
                2 => (0usize..5, any::<u8>()).prop_map(|(n, s)| frame(
                    [H417, H418, header(2, 1, 5, 2, 0), header(3, 3, 4, 1, 1), header(0, 2, 1, 2, 0)][n],
                    s
                )),
                1 => prop::collection::vec(any::<u8>(), 0..300),
                1 => prop::collection::vec(prop::sample::select(vec![0xFFu8, 0xFB, 0xF3, 0x90, 0x64, 0x00]), 0..40),
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    /// Every emitted frame is a valid frame of its header's length, at most
    /// the maximum, and the output does not depend on the chunking.
    fn check(data: &[u8], cuts: &[usize], max: usize) -> Result<(), TestCaseError> {
        let mut whole = Mp3Framer::new(max);
        let expected = run(&mut whole, data, &[]);
        let mut f = Mp3Framer::new(max);
        let out = run(&mut f, data, cuts);
        for fr in &out {
            let h = header_of(fr).ok_or_else(|| TestCaseError::fail("short frame"))?;
            prop_assert_eq!(mp3_frame_len(h), Some(fr.len()));
            prop_assert!(fr.len() <= max);
        }
        prop_assert_eq!(&out, &expected);
        prop_assert!(f.buf.len() <= MAX_FRAME_LEN + HEADER_LEN);
        prop_assert_eq!(f.buf.capacity(), MAX_FRAME_LEN + HEADER_LEN);
        f.reset();
        whole.reset();
        prop_assert_eq!(f.stats(), whole.stats());
        let s = f.stats();
        if s.oversized_frames == 0 {
            // Every byte is accounted for exactly once.
            prop_assert_eq!(
                s.frame_bytes + s.invalid_bytes + s.partial_bytes_dropped,
                data.len() as u64
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..4000),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in 0usize..3000,
        ) {
            check(&data, &cuts, max)?;
        }

        #[test]
        fn frames_and_garbage(
            data in arb_stream(),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in prop_oneof![Just(3000usize), 40usize..2000],
        ) {
            check(&data, &cuts, max)?;
        }
    }
}
