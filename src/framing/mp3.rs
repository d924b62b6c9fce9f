//! MPEG audio framing: cut a stream into physical MPEG-1/2/2.5 layer I/II/III
//! frames.
//!
//! Each emitted frame is one physical frame: a layer III frame may borrow
//! bytes from the frames before it (the bit reservoir, `main_data_begin`), so
//! a client that joins or skips needs a lead-in of earlier frames to decode
//! cleanly; that is the client side's job (`reservoir.rs`), which relies on
//! the ring holding nothing but consecutive audio frames: tags and
//! Xing/Info frames are never emitted.

use super::cutter::{Action, Cutter, Format};
use super::tags::{self, TagState};
use super::{FrameSink, Framer, FramerStats};

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

/// Whether `header` is a free-format MPEG audio header: sync, a valid
/// version, layer and sample rate, and bitrate index 0 (the frame length is
/// not in the header).
fn is_free_format(header: [u8; 4]) -> bool {
    let [b0, b1, b2, _] = header;
    b0 == 0xFF
        && b1 & 0xE0 == 0xE0
        && (b1 >> 3) & 3 != 1
        && (b1 >> 1) & 3 != 0
        && b2 >> 4 == 0
        && (b2 >> 2) & 3 != 3
}

/// Whether `frame` (whole, with a valid header) is a Xing/Info or VBRI header
/// frame: the metadata frame LAME and other encoders put first in a file
/// (frame count, seek table, encoder delay). It holds no audio.
///
/// "Xing"/"Info" sits right after the side information (whose length depends
/// on the version and the channel mode, and which follows the CRC if there
/// is one); "VBRI" sits 32 bytes after the header.
pub fn is_info_frame(frame: &[u8]) -> bool {
    let Some(header) = header_of(frame) else {
        return false;
    };
    if (header[1] >> 1) & 3 != 1 {
        return false; // only layer III carries them
    }
    let mpeg1 = (header[1] >> 3) & 3 == 3;
    let mono = header[3] >> 6 == 3;
    let crc = if header[1] & 1 == 0 { 2 } else { 0 };
    let side = match (mpeg1, mono) {
        (true, true) => 17,
        (true, false) => 32,
        (false, true) => 9,
        (false, false) => 17,
    };
    let at = |offset: usize, tag: &[u8; 4]| frame.get(offset..offset + 4) == Some(&tag[..]);
    let xing = HEADER_LEN + crc + side;
    at(xing, b"Xing") || at(xing, b"Info") || at(HEADER_LEN + 32, b"VBRI")
}

/// Free-format headers met in a session before the framer says so in the
/// log (one could be a chance pattern in garbage; a free-format stream has
/// dozens a second).
const FREE_FORMAT_LOG_AFTER: u64 = 4;

/// Cuts a byte stream into whole physical MPEG audio frames of at most
/// `max_frame_bytes` bytes each, skipping tags and Xing/Info frames.
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
///   rate, or the start of a tag (`ID3`, `TAG`, `APET`). The framer waits for
///   those bytes if they have not arrived yet (so the first frame of a
///   stream, or after garbage, is emitted one header later than it could
///   be). A candidate that fails the check is a false sync: its first byte
///   is skipped and counted as invalid, and the hunt goes on at the next
///   byte.
///
/// The stream start is hunted too, because a source (re)opened over the
/// network can begin mid-frame. Consequences of the rule: a candidate still
/// unconfirmed at a reset is dropped as a partial frame, and a lone frame
/// with garbage on both sides is skipped as garbage. Decisions depend only
/// on the bytes, never on how they were split into `push` calls.
///
/// # Tags and header frames
///
/// Real files carry metadata that is not audio, and a looped file (the
/// framer is reset at each open) or a concatenation of files meets it again
/// mid-stream. Wherever it is met, it is skipped whole, counted in
/// [`FramerStats::tag_bytes`] (never as garbage) and never emitted, so a
/// client never gets it mid-stream:
///
/// - an ID3v2 tag (`ID3`, its length from the synchsafe size in its header;
///   it may be megabytes of cover art: it is skipped, not buffered);
/// - an APEv2 tag, header first (skipped whole) or footer first (the items
///   before a footer were skipped as garbage; they are counted back as tag
///   bytes);
/// - an ID3v1 tag (`TAG` + 125 bytes, or `TAG+` extended, 227 bytes),
///   believed only right after a frame, a tag or the start of a session,
///   since nothing in it can be checked;
/// - a Xing/Info/VBRI header frame (a valid frame that holds the file's
///   frame count and seek table instead of audio): dropped and counted in
///   [`FramerStats::info_frames`]. Sent to a client that joins mid-stream
///   it would be wrong, and it is wrong for a live stream anyway.
///
/// # Free format
///
/// A free-format stream (bitrate index 0) does not give its frame length in
/// its headers, so it cannot be cut into frames: its bytes are skipped as
/// invalid, its headers are counted in [`FramerStats::free_format_headers`],
/// and the framer says so once per session in the log.
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
    /// Carries undecided bytes across `push` calls.
    cutter: Cutter,
    /// The decisions.
    format: Mp3Format,
}

/// The MP3 framer's decisions and counters.
#[derive(Debug)]
struct Mp3Format {
    /// Longest frame that is emitted; longer valid frames are dropped.
    max_frame_bytes: usize,
    /// In sync (the last decision was a frame), as opposed to hunting.
    synced: bool,
    /// Where an ID3v1 tag is believed; garbage run for APE footers.
    tags: TagState,
    /// Free-format headers met this session.
    free_format_session: u64,
    /// Names the stream in log lines.
    label: String,
    /// Counters since construction.
    stats: FramerStats,
}

impl Mp3Framer {
    /// A framer that emits MPEG audio frames of at most `max_frame_bytes`
    /// bytes; valid frames longer than that are dropped whole and counted.
    pub fn new(max_frame_bytes: usize) -> Self {
        Mp3Framer {
            cutter: Cutter::new(MAX_FRAME_LEN + HEADER_LEN),
            format: Mp3Format {
                max_frame_bytes,
                synced: false,
                tags: TagState::new(),
                free_format_session: 0,
                label: String::new(),
                stats: FramerStats::default(),
            },
        }
    }

    /// Name the stream in the framer's log lines.
    pub fn with_label(mut self, label: &str) -> Self {
        self.format.label = label.to_owned();
        self
    }

    /// Longest frame this framer emits.
    pub fn max_frame_bytes(&self) -> usize {
        self.format.max_frame_bytes
    }
}

impl Mp3Format {
    /// One byte of garbage.
    fn invalid(&mut self) -> Action {
        self.stats.invalid_bytes += 1;
        self.synced = false;
        self.tags.bad();
        Action::Consume(1)
    }

    /// A free-format header: garbage to this framer, but said once.
    fn free_format(&mut self) -> Action {
        self.stats.free_format_headers += 1;
        self.free_format_session += 1;
        if self.free_format_session == FREE_FORMAT_LOG_AFTER {
            log::warn!(
                "source stream={} framer mp3: free-format MPEG audio (bitrate index 0) \
                 cannot be cut into frames; its bytes are skipped (encode at a standard bitrate)",
                self.label
            );
        }
        self.invalid()
    }
}

impl Format for Mp3Format {
    fn decide(&mut self, window: &[u8], sink: &mut dyn FrameSink) -> Action {
        let Some(header) = header_of(window) else {
            return Action::NeedMore(HEADER_LEN);
        };
        if header[0] != 0xFF {
            if let Some(action) = tags::decide(window, &mut self.tags, &mut self.stats) {
                if matches!(action, Action::Consume(_)) {
                    // Whatever follows a tag is hunted: a tag may sit
                    // between two files of different formats.
                    self.synced = false;
                }
                return action;
            }
            return self.invalid();
        }
        let Some(len) = mp3_frame_len(header) else {
            if is_free_format(header) {
                return self.free_format();
            }
            return self.invalid();
        };
        // Cannot happen (the shortest frame, MPEG-2 layer III 8k/24k, is 24
        // bytes), but progress must never depend on an arithmetic argument.
        if !(HEADER_LEN..=MAX_FRAME_LEN).contains(&len) {
            return self.invalid();
        }
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
        if len > self.max_frame_bytes {
            self.stats.oversized_frames += 1;
            self.synced = true;
            self.tags.good();
            return Action::Consume(len);
        }
        let Some(frame) = window.get(..len) else {
            return Action::NeedMore(len);
        };
        self.synced = true;
        self.tags.good();
        if is_info_frame(frame) {
            self.stats.info_frames += 1;
            self.stats.tag_bytes += len as u64;
        } else {
            sink.frame(frame);
            self.stats.frames += 1;
            self.stats.frame_bytes += len as u64;
        }
        Action::Consume(len)
    }
}

impl Framer for Mp3Framer {
    fn push(&mut self, input: &[u8], sink: &mut dyn FrameSink) {
        self.cutter.push(&mut self.format, input, sink);
    }

    fn reset(&mut self) {
        let dropped = self.cutter.reset();
        let f = &mut self.format;
        f.stats.partial_bytes_dropped += dropped as u64;
        f.synced = false;
        f.tags = TagState::new();
        f.free_format_session = 0;
    }

    fn stats(&self) -> FramerStats {
        self.format.stats
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
            f.push(&data[start..end], &mut |fr: &[u8]| out.push(fr.to_vec()));
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
        f.push(&data, &mut |fr: &[u8]| {
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
        let ptr = f.cutter.buf.as_ptr();
        let mut out = Vec::new();
        for b in &data {
            f.push(std::slice::from_ref(b), &mut |fr: &[u8]| {
                out.push(fr.to_vec())
            });
            assert_eq!(f.cutter.buf.as_ptr(), ptr, "buffer reallocated");
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
        f.push(&frame(H417, 1), &mut |_: &[u8]| n += 1);
        assert_eq!(n, 0);
        f.push(&frame(H418, 2)[..4], &mut |_: &[u8]| n += 1);
        assert_eq!(n, 1);
        // ... after that each frame goes out with its last byte.
        f.push(&frame(H418, 2)[4..], &mut |_: &[u8]| n += 1);
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
        f.push(&frames[0], &mut |fr: &[u8]| out.push(fr.to_vec()));
        f.push(&frames[1][..100], &mut |fr: &[u8]| out.push(fr.to_vec()));
        assert_eq!(out, vec![frames[0].clone()]);
        f.reset();
        assert_eq!(f.stats().partial_bytes_dropped, 100);
        // The next session starts clean: the tail of the old frame is not
        // glued to it, and the new session's frames come out whole.
        let data = [&frames[1][100..], &frames[0][..], &frames[1]].concat();
        f.push(&data, &mut |fr: &[u8]| out.push(fr.to_vec()));
        assert_eq!(
            out,
            vec![frames[0].clone(), frames[0].clone(), frames[1].clone()]
        );
        assert_eq!(f.stats().invalid_bytes, 318);
        assert_eq!(f.stats().partial_bytes_dropped, 100);
    }

    /// An ID3v2.3 tag with `size` bytes after its header.
    fn id3v2(size: usize) -> Vec<u8> {
        let mut t = b"ID3\x03\x00\x00".to_vec();
        t.extend([
            (size >> 21) as u8 & 0x7F,
            (size >> 14) as u8 & 0x7F,
            (size >> 7) as u8 & 0x7F,
            size as u8 & 0x7F,
        ]);
        // Frame-like bytes inside the tag, even valid MP3 headers: none of
        // it may come out.
        t.extend((0..size).map(|i| if i % 50 < 4 { H417[i % 50] } else { i as u8 }));
        t
    }

    /// An ID3v1 tag.
    fn id3v1() -> Vec<u8> {
        let mut t = b"TAG".to_vec();
        t.extend((0..125).map(|i| b'a' + (i % 26) as u8));
        t
    }

    /// An APEv2 tag with `items` bytes of items, with or without a header.
    fn ape(items: usize, header: bool) -> Vec<u8> {
        let part = |is_header: bool| {
            let mut v = b"APETAGEX".to_vec();
            v.extend(2000u32.to_le_bytes());
            v.extend(((items + 32) as u32).to_le_bytes());
            v.extend(1u32.to_le_bytes());
            let flags = 0x8000_0000u32 | if is_header { 1 << 29 } else { 0 };
            v.extend(flags.to_le_bytes());
            v.extend([0; 8]);
            v
        };
        let mut t = if header { part(true) } else { Vec::new() };
        t.extend((0..items).map(|i| b'k' + (i % 7) as u8));
        t.extend(part(false));
        t
    }

    /// A frame of `h` carrying `tag` where a Xing/Info (`at` = after the
    /// side information) or VBRI tag goes.
    fn info_frame(h: [u8; 4], at: usize, tag: &[u8; 4]) -> Vec<u8> {
        let mut f = frame(h, 0);
        f[4..].iter_mut().for_each(|b| *b = 0);
        f[at..at + 4].copy_from_slice(tag);
        f
    }

    #[test]
    fn tags_at_both_ends_are_skipped_not_garbage() {
        let frames: Vec<Vec<u8>> = (0..6).map(|i| frame(H417, i)).collect();
        let tag2 = id3v2(3000);
        let apet = ape(40, true);
        let tag1 = id3v1();
        let data = [&tag2[..], &frames.concat(), &apet, &tag1].concat();
        for cuts in [
            vec![],
            vec![1, 5, 9, 10, 11, 3001, 3015, 5000],
            (0..data.len()).step_by(3).collect(),
        ] {
            let mut f = Mp3Framer::new(MAX_FRAME_LEN);
            assert_eq!(run(&mut f, &data, &cuts), frames);
            let s = f.stats();
            assert_eq!(s.invalid_bytes, 0, "{s:?}");
            assert_eq!(s.tags, 3);
            assert_eq!(s.tag_bytes, (tag2.len() + apet.len() + tag1.len()) as u64);
        }
    }

    #[test]
    fn a_looped_file_meets_its_tags_at_every_open() {
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(H418, i)).collect();
        let file = [id3v2(500), frames.concat(), id3v1()].concat();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        let mut out = Vec::new();
        for _ in 0..3 {
            f.push(&file, &mut |fr: &[u8]| out.push(fr.to_vec()));
            f.reset();
        }
        assert_eq!(out, [frames.clone(), frames.clone(), frames].concat());
        let s = f.stats();
        assert_eq!(
            (s.tags, s.invalid_bytes, s.partial_bytes_dropped),
            (6, 0, 0)
        );
    }

    #[test]
    fn tags_between_concatenated_files() {
        // Garbage (say, the tail of a frame whose start was lost), then the
        // next file's ID3v2: the tag is found while hunting.
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(H417, i)).collect();
        let data = [
            frames[0].clone(),
            frames[1].clone(),
            vec![0x11; 100],
            id3v2(64),
            frames[2].clone(),
            frames[3].clone(),
        ]
        .concat();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert_eq!(run(&mut f, &data, &[]), frames);
        let s = f.stats();
        assert_eq!((s.tags, s.tag_bytes, s.invalid_bytes), (1, 74, 100));
    }

    #[test]
    fn id3v1_is_believed_only_at_a_clean_place() {
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(H417, i)).collect();
        // "TAG" after garbage is garbage (3 + 125 bytes of letters).
        let data = [
            frames[0].clone(),
            frames[1].clone(),
            vec![1, 2],
            id3v1(),
            frames[2].clone(),
            frames[3].clone(),
        ]
        .concat();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert_eq!(run(&mut f, &data, &[]), frames);
        assert_eq!((f.stats().tags, f.stats().invalid_bytes), (0, 130));
    }

    #[test]
    fn ape_tag_met_footer_first_counts_its_items_back() {
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(H417, i)).collect();
        let tag = ape(90, false);
        let data = [frames.concat(), tag.clone()].concat();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert_eq!(run(&mut f, &data, &[1000]), frames);
        let s = f.stats();
        assert_eq!(
            (s.tags, s.tag_bytes, s.invalid_bytes),
            (1, tag.len() as u64, 0)
        );
    }

    #[test]
    fn xing_info_and_vbri_frames_are_dropped() {
        // MPEG-1 stereo, no CRC: Xing at 4 + 32.
        let xing = info_frame(H417, 36, b"Xing");
        // MPEG-1 mono with CRC: Info at 4 + 2 + 17.
        let mono_crc = [0xFF, 0xFA, 0x90, 0xC4];
        let info = info_frame(mono_crc, 23, b"Info");
        // MPEG-2 stereo: Xing at 4 + 17.
        let lsf = header(2, 1, 8, 0, 0);
        let lsf_xing = info_frame(lsf, 21, b"Xing");
        // VBRI at 4 + 32.
        let vbri = info_frame(H418, 36, b"VBRI");
        // "Xing" in the wrong place is audio.
        let not_xing = info_frame(H417, 30, b"Xing");
        for (first, rest) in [
            (&xing, H417),
            (&info, mono_crc),
            (&lsf_xing, lsf),
            (&vbri, H418),
        ] {
            let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(rest, i)).collect();
            let data = [first.clone(), frames.concat()].concat();
            let mut f = Mp3Framer::new(MAX_FRAME_LEN);
            assert_eq!(run(&mut f, &data, &[]), frames);
            let s = f.stats();
            assert_eq!((s.info_frames, s.tag_bytes), (1, first.len() as u64));
            assert_eq!(s.invalid_bytes, 0);
            // Mid-stream (a concatenated file) too.
            let data = [frames[0].clone(), first.clone(), frames[1].clone()].concat();
            let mut f = Mp3Framer::new(MAX_FRAME_LEN);
            assert_eq!(
                run(&mut f, &data, &[]),
                vec![frames[0].clone(), frames[1].clone()]
            );
        }
        let data = [not_xing.clone(), frame(H417, 1)].concat();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert_eq!(run(&mut f, &data, &[]), vec![not_xing, frame(H417, 1)]);
    }

    #[test]
    fn free_format_is_refused_and_counted() {
        // MPEG-1 layer III free format, 44.1 kHz: headers 417 bytes apart.
        let h = [0xFF, 0xFB, 0x00, 0x64];
        let body: Vec<u8> = (0..413).map(|i| (i % 200) as u8).collect();
        let one = [&h[..], &body].concat();
        let data = one.repeat(10);
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert!(run(&mut f, &data, &[]).is_empty());
        let s = f.stats();
        assert_eq!(s.free_format_headers, 10);
        f.reset();
        let s = f.stats();
        assert_eq!(s.invalid_bytes + s.partial_bytes_dropped, data.len() as u64);
    }

    #[test]
    fn mpeg25_streams_are_cut() {
        // MPEG-2.5 layer III, 8 kbit/s at 8 kHz: 72 * 8000 / 8000 = 72.
        let h = header(0, 1, 1, 2, 0);
        assert_eq!(mp3_frame_len(h), Some(72));
        let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(h, i)).collect();
        let mut f = Mp3Framer::new(MAX_FRAME_LEN);
        assert_eq!(run(&mut f, &frames.concat(), &[7, 80]), frames);
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
                1 => (0usize..4, 0usize..600).prop_map(|(kind, n)| match kind {
                    0 => id3v2(n),
                    1 => id3v1(),
                    2 => ape(n, true),
                    _ => ape(n, false),
                }),
                1 => prop::collection::vec(prop::sample::select(b"ID3TAGAPETAGEX\x03\x00\x7F".to_vec()), 0..20),
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
        prop_assert!(f.cutter.buf.len() <= MAX_FRAME_LEN + HEADER_LEN);
        prop_assert_eq!(f.cutter.buf.capacity(), MAX_FRAME_LEN + HEADER_LEN);
        f.reset();
        whole.reset();
        prop_assert_eq!(f.stats(), whole.stats());
        let s = f.stats();
        if s.oversized_frames == 0 {
            // Every byte is accounted for exactly once (a tag is counted
            // whole when met, even if the data ends inside it).
            let accounted = s.frame_bytes + s.invalid_bytes + s.partial_bytes_dropped + s.tag_bytes;
            if s.tags == 0 {
                prop_assert_eq!(accounted, data.len() as u64);
            } else {
                prop_assert!(accounted >= data.len() as u64);
            }
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
