//! Framers: cut a source's byte stream into whole frames.
//!
//! A framer is fed the bytes of one source session in whatever chunks `read()`
//! returned and emits each complete frame exactly once, in order. It never
//! emits a partial or truncated frame: bytes that cannot form a valid frame are
//! skipped and counted. [`Framer::reset`] is called at every source (re)open so
//! that a partial frame of the previous session is never glued to the next.
//!
//! Besides frames, a framer may emit a **stream header**
//! ([`FrameSink::header`]): bytes every client must get before the frames that
//! follow, but that are not themselves frames (so a client that joins later
//! still gets them, and a connected client is not sent them twice). The Ogg
//! framer emits a logical stream's header pages that way; the source thread
//! makes them the stream's header from the next frame on
//! (`Stream::set_header`), replacing the session's `-header-bytes` for those
//! frames.
//!
//! | framer | a frame is | skipped and counted |
//! |---|---|---|
//! | [`RawFramer`] | exactly `frame_bytes` bytes | a partial frame at a reset |
//! | [`Mp3Framer`] | one physical MPEG audio frame | garbage, ID3v1/ID3v2/APEv2 tags, Xing/Info/VBRI frames, free-format frames |
//! | [`AacFramer`] | one ADTS frame | garbage |
//! | [`OggFramer`] | one Ogg page (CRC checked) | garbage, pages with a bad CRC; header pages go out as a header |

mod aac;
mod cutter;
mod mp3;
mod ogg;
mod raw;
mod tags;

pub use aac::{adts_frame_len, AacFramer};
pub use mp3::{is_info_frame, mp3_frame_len, Mp3Framer};
pub use ogg::{ogg_crc, OggFramer};
pub use raw::RawFramer;

/// How a stream's bytes are cut into frames (the configuration's
/// `-frame-filter` / `framer`; `config` re-exports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramerKind {
    /// Every frame is exactly `frame_bytes`.
    Raw,
    /// Physical MPEG audio frames, at most `frame_bytes` each.
    Mp3,
    /// AAC ADTS frames, at most `frame_bytes` each.
    Aac,
    /// Ogg pages, at most `frame_bytes` each; header pages become the
    /// stream header.
    Ogg,
}

impl FramerKind {
    /// Every kind, with the name `-frame-filter` and the file's `framer`
    /// know it by.
    pub const NAMES: [(&'static str, FramerKind); 4] = [
        ("raw", FramerKind::Raw),
        ("mp3", FramerKind::Mp3),
        ("aac", FramerKind::Aac),
        ("ogg", FramerKind::Ogg),
    ];

    /// The kind named `name` (ASCII case ignored; the empty name is raw, as
    /// streamserve spells it).
    pub fn from_name(name: &str) -> Option<FramerKind> {
        if name.is_empty() {
            return Some(FramerKind::Raw);
        }
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }
}

/// The largest legal MPEG audio frame: MPEG-2.5 layer II at 160 kbit/s and
/// 8 kHz, padded (144 × 160000 / 8000 + 1).
pub const MP3_MAX_FRAME_BYTES: usize = 2881;

/// The largest ADTS frame: its length field has 13 bits.
pub const AAC_MAX_FRAME_BYTES: usize = 8191;

/// The largest Ogg page: a 27-byte header, 255 lacing values and 255 segments
/// of 255 bytes.
pub const OGG_MAX_PAGE_BYTES: usize = 27 + 255 + 255 * 255;

/// The largest frame a framer of this kind can emit (`None` for raw, whose
/// frames are exactly `frame_bytes`): the default `frame_bytes`, so that no
/// legal frame is dropped as oversized.
pub fn largest_frame(kind: FramerKind) -> Option<usize> {
    match kind {
        FramerKind::Raw => None,
        FramerKind::Mp3 => Some(MP3_MAX_FRAME_BYTES),
        FramerKind::Aac => Some(AAC_MAX_FRAME_BYTES),
        FramerKind::Ogg => Some(OGG_MAX_PAGE_BYTES),
    }
}

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
    /// Bytes of metadata skipped whole, never emitted and not garbage: MP3
    /// tags (ID3v2, ID3v1, APEv2) and Xing/Info/VBRI header frames.
    pub tag_bytes: u64,
    /// Tags skipped (each ID3v2, ID3v1 or APEv2 tag counts once).
    pub tags: u64,
    /// MP3 Xing/Info/VBRI header frames dropped (their bytes are in
    /// `tag_bytes`).
    pub info_frames: u64,
    /// Free-format MPEG audio headers met (bitrate index 0: the frame length
    /// is not in the header, so such a stream cannot be cut; its bytes are
    /// counted as invalid).
    pub free_format_headers: u64,
    /// Stream headers emitted ([`FrameSink::header`]).
    pub headers: u64,
    /// Bytes in emitted stream headers.
    pub header_bytes: u64,
}

/// Where a framer's output goes.
///
/// Any `FnMut(&[u8])` closure is a sink that takes frames and ignores stream
/// headers.
pub trait FrameSink {
    /// One complete frame, in stream order.
    fn frame(&mut self, frame: &[u8]);
    /// A new stream header: every client that starts with a frame emitted
    /// after this call must get `header` before it. Not a frame; emitted
    /// between frames, never in the middle of one.
    fn header(&mut self, header: &[u8]) {
        let _ = header;
    }
}

impl<F: FnMut(&[u8])> FrameSink for F {
    fn frame(&mut self, frame: &[u8]) {
        self(frame)
    }
}

/// Cuts bytes into whole frames.
pub trait Framer: Send {
    /// Feed the next chunk of the stream; `sink` gets each complete frame
    /// (and each stream header) once, in order. A frame may span several
    /// calls.
    fn push(&mut self, input: &[u8], sink: &mut dyn FrameSink);
    /// Forget any buffered partial frame (counted in `partial_bytes_dropped`)
    /// and start hunting afresh: the next bytes begin a new session.
    fn reset(&mut self);
    /// Counters since the framer was made (not cleared by `reset`).
    fn stats(&self) -> FramerStats;
}

/// Build the framer a stream is configured with. `label` names the stream in
/// the framer's own log lines.
pub fn new_framer(kind: FramerKind, frame_bytes: usize, label: &str) -> Box<dyn Framer> {
    match kind {
        FramerKind::Raw => Box::new(RawFramer::new(frame_bytes)),
        FramerKind::Mp3 => Box::new(Mp3Framer::new(frame_bytes).with_label(label)),
        FramerKind::Aac => Box::new(AacFramer::new(frame_bytes)),
        FramerKind::Ogg => Box::new(OggFramer::new(frame_bytes).with_label(label)),
    }
}

#[cfg(test)]
mod test_util {
    //! Helpers shared by the framers' tests.

    use super::{FrameSink, Framer};

    /// What a framer emitted, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Event {
        Frame(Vec<u8>),
        Header(Vec<u8>),
    }

    /// A sink that records every event.
    #[derive(Debug, Default)]
    pub struct Record(pub Vec<Event>);

    impl FrameSink for Record {
        fn frame(&mut self, frame: &[u8]) {
            self.0.push(Event::Frame(frame.to_vec()));
        }
        fn header(&mut self, header: &[u8]) {
            self.0.push(Event::Header(header.to_vec()));
        }
    }

    /// Push `data` cut at `cuts` (taken modulo the length, sorted) and record
    /// every event.
    pub fn run_events(f: &mut dyn Framer, data: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(data.len());
        let mut rec = Record::default();
        let mut start = 0;
        for end in cuts {
            f.push(&data[start..end], &mut rec);
            start = end;
        }
        rec.0
    }

    /// The frames only.
    pub fn frames_of(events: &[Event]) -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f.clone()),
                Event::Header(_) => None,
            })
            .collect()
    }
}
