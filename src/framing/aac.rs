//! AAC framing: cut an ADTS stream (what `ffmpeg -f adts`, most AAC encoders
//! and AAC internet radio produce) into whole ADTS frames.
//!
//! Every ADTS frame starts with a 7-byte header (9 with a CRC) that gives its
//! whole length, so any frame is a clean place to join or skip to: an AAC
//! frame does not borrow bytes from the frames before it.

use super::cutter::{Action, Cutter, Format};
use super::tags::{self, TagState};
use super::{FrameSink, Framer, FramerStats, AAC_MAX_FRAME_BYTES};

/// Bytes of the fixed and variable header fields (without the CRC).
const HEADER_LEN: usize = 7;

/// Length in bytes of the ADTS frame that starts with `header`, or `None` if
/// `header` does not start a valid frame.
///
/// The header (ISO/IEC 13818-7 and 14496-3): a 12-bit sync word `0xFFF`, the
/// MPEG version bit, a 2-bit layer that must be 0, `protection_absent`
/// (0: a 16-bit CRC follows the 7 bytes), the profile, a 4-bit sampling
/// frequency index (0 to 12 name a rate; 13 and 14 are reserved and 15, an
/// explicit rate, is not allowed in ADTS), the channel configuration, and a
/// 13-bit frame length that counts the header. A valid frame is longer than
/// its header, so its length is between 8 and 8191 bytes.
///
/// ```
/// use ringcast::framing::adts_frame_len;
/// // MPEG-4 AAC LC, 44.1 kHz, stereo, 371 bytes, no CRC.
/// assert_eq!(adts_frame_len([0xFF, 0xF1, 0x50, 0x80, 0x2E, 0x7F, 0xFC]), Some(371));
/// assert_eq!(adts_frame_len([0xFF, 0xF7, 0x50, 0x80, 0x2E, 0x7F, 0xFC]), None); // layer 3
/// ```
pub fn adts_frame_len(header: [u8; HEADER_LEN]) -> Option<usize> {
    let [b0, b1, b2, b3, b4, b5, _] = header;
    if b0 != 0xFF || b1 & 0xF0 != 0xF0 {
        return None;
    }
    if (b1 >> 1) & 3 != 0 {
        return None; // layer must be 0
    }
    let protection_absent = b1 & 1 == 1;
    let rate_index = (b2 >> 2) & 0x0F;
    if rate_index > 12 {
        return None;
    }
    let len = (usize::from(b3 & 3) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5);
    let header_len = if protection_absent {
        HEADER_LEN
    } else {
        HEADER_LEN + 2
    };
    (len > header_len).then_some(len)
}

/// Whether `next` is a valid header of the same stream as `header`: same
/// MPEG version, profile, sampling frequency and channel configuration.
fn continues(header: [u8; HEADER_LEN], next: [u8; HEADER_LEN]) -> bool {
    adts_frame_len(next).is_some()
        && header[1] & 0x08 == next[1] & 0x08
        && header[2] & 0xFD == next[2] & 0xFD
        && header[3] & 0xC0 == next[3] & 0xC0
}

/// The first seven bytes of `window`, if it has that many.
fn header_of(window: &[u8]) -> Option<[u8; HEADER_LEN]> {
    match window {
        [a, b, c, d, e, f, g, ..] => Some([*a, *b, *c, *d, *e, *f, *g]),
        _ => None,
    }
}

/// Cuts an ADTS byte stream into whole ADTS frames of at most
/// `max_frame_bytes` bytes each.
///
/// The sync rule is the MP3 framer's (see [`super::Mp3Framer`]): in sync, a
/// valid header is trusted and its frame emitted with its last byte;
/// hunting (at the start, after a reset, after garbage), a candidate is
/// accepted only when the bytes right after its frame are a header of the
/// same stream (or the start of a tag). Bytes that start no accepted frame
/// are skipped one at a time and counted in [`FramerStats::invalid_bytes`].
/// An ID3v2 tag (some AAC files and streams start with one) and ID3v1/APE
/// tags are skipped whole and counted as tags, as in MP3. A valid frame
/// longer than `max_frame_bytes` is dropped whole and counted, never sent
/// truncated. The buffer for frames that straddle `push` calls is allocated
/// once, with room for the longest frame plus a header.
#[derive(Debug)]
pub struct AacFramer {
    /// Carries undecided bytes across `push` calls.
    cutter: Cutter,
    /// The decisions.
    format: AacFormat,
}

/// The AAC framer's decisions and counters.
#[derive(Debug)]
struct AacFormat {
    /// Longest frame that is emitted; longer valid frames are dropped.
    max_frame_bytes: usize,
    /// In sync (the last decision was a frame), as opposed to hunting.
    synced: bool,
    /// Where an ID3v1 tag is believed; garbage run for APE footers.
    tags: TagState,
    /// Counters since construction.
    stats: FramerStats,
}

impl AacFramer {
    /// A framer that emits ADTS frames of at most `max_frame_bytes` bytes.
    pub fn new(max_frame_bytes: usize) -> Self {
        AacFramer {
            cutter: Cutter::new(AAC_MAX_FRAME_BYTES + HEADER_LEN),
            format: AacFormat {
                max_frame_bytes,
                synced: false,
                tags: TagState::new(),
                stats: FramerStats::default(),
            },
        }
    }

    /// Longest frame this framer emits.
    pub fn max_frame_bytes(&self) -> usize {
        self.format.max_frame_bytes
    }
}

impl AacFormat {
    fn invalid(&mut self) -> Action {
        self.stats.invalid_bytes += 1;
        self.synced = false;
        self.tags.bad();
        Action::Consume(1)
    }
}

impl Format for AacFormat {
    fn decide(&mut self, window: &[u8], sink: &mut dyn FrameSink) -> Action {
        let Some(header) = header_of(window) else {
            return Action::NeedMore(HEADER_LEN);
        };
        if header[0] != 0xFF {
            if let Some(action) = tags::decide(window, &mut self.tags, &mut self.stats) {
                if matches!(action, Action::Consume(_)) {
                    self.synced = false;
                }
                return action;
            }
            return self.invalid();
        }
        let Some(len) = adts_frame_len(header) else {
            return self.invalid();
        };
        if !self.synced {
            let Some(next) = window.get(len..len + HEADER_LEN) else {
                return Action::NeedMore(len + HEADER_LEN);
            };
            let confirmed = match header_of(next) {
                Some(next) if continues(header, next) => true,
                _ => tags::starts_like_tag(next),
            };
            if !confirmed {
                return self.invalid();
            }
        }
        self.synced = true;
        if len > self.max_frame_bytes {
            self.stats.oversized_frames += 1;
            self.tags.good();
            return Action::Consume(len);
        }
        let Some(frame) = window.get(..len) else {
            return Action::NeedMore(len);
        };
        self.tags.good();
        sink.frame(frame);
        self.stats.frames += 1;
        self.stats.frame_bytes += len as u64;
        Action::Consume(len)
    }
}

impl Framer for AacFramer {
    fn push(&mut self, input: &[u8], sink: &mut dyn FrameSink) {
        self.cutter.push(&mut self.format, input, sink);
    }

    fn reset(&mut self) {
        let dropped = self.cutter.reset();
        let f = &mut self.format;
        f.stats.partial_bytes_dropped += dropped as u64;
        f.synced = false;
        f.tags = TagState::new();
    }

    fn stats(&self) -> FramerStats {
        self.format.stats
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frames_of, run_events};
    use super::*;
    use proptest::prelude::*;

    /// An ADTS header: MPEG-4 (`id` 0) or MPEG-2 (1), `profile` 0..=3,
    /// sampling index, channel configuration, whole length, CRC or not.
    fn header(id: u8, profile: u8, rate: u8, channels: u8, len: usize, crc: bool) -> Vec<u8> {
        let fullness = 0x7FFu16;
        let mut h = vec![
            0xFF,
            0xF0 | id << 3 | u8::from(!crc),
            profile << 6 | rate << 2 | (channels >> 2),
            (channels & 3) << 6 | ((len >> 11) & 3) as u8,
            ((len >> 3) & 0xFF) as u8,
            ((len & 7) as u8) << 5 | (fullness >> 6) as u8,
            ((fullness & 0x3F) as u8) << 2,
        ];
        if crc {
            h.extend([0x12, 0x34]);
        }
        h
    }

    /// A whole frame of `len` bytes, LC 44.1 kHz stereo, body from `seed`
    /// (with 0xFF bytes, which must not matter in sync).
    fn frame(len: usize, seed: u8) -> Vec<u8> {
        let mut f = header(0, 1, 4, 2, len, false);
        f.extend((f.len()..len).map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed)));
        f
    }

    fn run(f: &mut AacFramer, data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        frames_of(&run_events(f, data, cuts))
    }

    #[test]
    fn header_fields() {
        let h = |v: Vec<u8>| adts_frame_len(v[..7].try_into().unwrap());
        assert_eq!(h(header(0, 1, 4, 2, 371, false)), Some(371));
        assert_eq!(h(header(1, 0, 3, 1, 8191, true)), Some(8191));
        assert_eq!(h(header(0, 1, 4, 2, 8, false)), Some(8));
        assert_eq!(h(header(0, 1, 4, 2, 7, false)), None); // only a header
        assert_eq!(h(header(0, 1, 4, 2, 9, true)), None); // header + CRC
        assert_eq!(h(header(0, 1, 13, 2, 300, false)), None); // reserved rate
        assert_eq!(h(header(0, 1, 15, 2, 300, false)), None); // explicit rate
        let mut layer = header(0, 1, 4, 2, 300, false);
        layer[1] |= 2;
        assert_eq!(h(layer), None);
        let mut sync = header(0, 1, 4, 2, 300, false);
        sync[1] &= 0xEF;
        assert_eq!(h(sync), None);
    }

    #[test]
    fn frames_garbage_and_chunking() {
        let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(200 + i * 37, i as u8)).collect();
        // Garbage with a near-sync: a header of an 8-byte frame that the
        // next bytes do not confirm.
        let garbage = [0x01u8, 0x02, 0xFF, 0xF1, 0x50, 0x80, 0x01, 0x00, 0x00];
        let mut data = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            if i == 4 {
                data.extend_from_slice(&garbage);
            }
            data.extend_from_slice(f);
        }
        for cuts in [
            vec![],
            vec![1, 2, 3, 500, 1200],
            (0..data.len()).step_by(7).collect(),
        ] {
            let mut f = AacFramer::new(8191);
            assert_eq!(run(&mut f, &data, &cuts), frames);
            assert_eq!(f.stats().invalid_bytes, garbage.len() as u64);
            assert_eq!(f.stats().frames, 10);
        }
    }

    #[test]
    fn leading_id3_tag_is_skipped() {
        let mut data = b"ID3\x04\x00\x00\x00\x00\x00\x14".to_vec();
        data.extend([0u8; 20]);
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(300, i)).collect();
        data.extend(frames.concat());
        let mut f = AacFramer::new(8191);
        assert_eq!(run(&mut f, &data, &[5, 17]), frames);
        let s = f.stats();
        assert_eq!((s.tags, s.tag_bytes, s.invalid_bytes), (1, 30, 0));
    }

    #[test]
    fn oversized_and_reset() {
        let frames = [frame(300, 1), frame(2000, 2), frame(300, 3), frame(301, 4)];
        let mut f = AacFramer::new(1000);
        let out = run(&mut f, &frames.concat(), &[100]);
        assert_eq!(
            out,
            vec![frames[0].clone(), frames[2].clone(), frames[3].clone()]
        );
        assert_eq!(f.stats().oversized_frames, 1);
        f.push(&frames[0][..50], &mut |_: &[u8]| {});
        f.reset();
        assert_eq!(f.stats().partial_bytes_dropped, 50);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
            parts in prop::collection::vec(
                prop_oneof![
                    2 => (8usize..1500, any::<u8>()).prop_map(|(l, s)| frame(l, s)),
                    1 => prop::collection::vec(any::<u8>(), 0..200),
                    1 => prop::collection::vec(prop::sample::select(vec![0xFFu8, 0xF1, 0xF9, 0x50, 0x80, 0]), 0..30),
                ],
                0..12,
            ),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
            max in prop_oneof![Just(8191usize), 8usize..2000],
        ) {
            let data = parts.concat();
            let mut whole = AacFramer::new(max);
            let expected = run(&mut whole, &data, &[]);
            let mut f = AacFramer::new(max);
            let out = run(&mut f, &data, &cuts);
            prop_assert_eq!(&out, &expected);
            for fr in &out {
                let h = header_of(fr).ok_or_else(|| TestCaseError::fail("short frame"))?;
                prop_assert_eq!(adts_frame_len(h), Some(fr.len()));
                prop_assert!(fr.len() <= max);
            }
            prop_assert_eq!(f.cutter.buf.capacity(), AAC_MAX_FRAME_BYTES + HEADER_LEN);
            f.reset();
            whole.reset();
            prop_assert_eq!(f.stats(), whole.stats());
            let s = f.stats();
            if s.oversized_frames == 0 && s.tags == 0 {
                prop_assert_eq!(
                    s.frame_bytes + s.invalid_bytes + s.partial_bytes_dropped,
                    data.len() as u64
                );
            }
        }
    }
}
