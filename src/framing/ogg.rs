//! Ogg framing (Vorbis, Opus, FLAC, Speex, ...): one frame is one whole Ogg
//! page, checked by its CRC, and each logical stream's header pages become
//! the stream header instead of frames.
//!
//! A decoder needs a logical stream's header packets (Vorbis: identification,
//! comment and setup; Opus: `OpusHead` and `OpusTags`) before any audio
//! page. They come once, at the start of the stream. So, as Icecast does,
//! the framer collects the pages that carry them and emits them as a stream
//! header ([`FrameSink::header`]); every following page is a frame. A client
//! that joins mid-stream then gets the header pages and then whole pages from
//! a page boundary, which ffmpeg, libvorbis/libopus players and browsers
//! decode (the page sequence numbers and granule positions jump, which they
//! accept). A new beginning-of-stream page — a chained stream, after a source
//! reopen or in the middle of a session — starts a new header, which
//! replaces the old one for clients that join after it.

use super::cutter::{Action, Cutter, Format};
use super::{FrameSink, Framer, FramerStats, OGG_MAX_PAGE_BYTES};

/// Bytes of a page header before its lacing values.
const PAGE_HEADER_LEN: usize = 27;

/// Largest stream header (all header pages of one link) kept: a Vorbis
/// comment holding cover art can run to hundreds of kilobytes. A larger one
/// is given up on: its pages go out as frames and joiners get no header.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Logical streams tracked in one header (a grouped, multiplexed link);
/// streams beyond this are treated as data.
const MAX_STREAMS: usize = 8;

/// The Ogg CRC-32 lookup table: polynomial 0x04C11DB7, most significant bit
/// first, no reflection.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04C1_1DB7
            } else {
                r << 1
            };
            bit += 1;
        }
        table[i] = r;
        i += 1;
    }
    table
};

/// Continue an Ogg CRC over `bytes`.
fn crc_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for b in bytes {
        crc = (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)];
    }
    crc
}

/// The CRC of a whole Ogg page, computed as RFC 3533 says: over the page with
/// its CRC field (bytes 22..26) taken as zero, initial value 0, no final
/// XOR. A page is intact when this equals the CRC stored in it.
///
/// ```
/// use ringcast::framing::ogg_crc;
/// // A page whose CRC field is right compares equal.
/// let mut page = b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\x01\x03abc".to_vec();
/// let crc = ogg_crc(&page);
/// page[22..26].copy_from_slice(&crc.to_le_bytes());
/// assert_eq!(ogg_crc(&page), crc);
/// ```
pub fn ogg_crc(page: &[u8]) -> u32 {
    let head = page.get(..22).unwrap_or(page);
    let crc = crc_update(0, head);
    if page.len() < 26 {
        return crc;
    }
    let crc = crc_update(crc, &[0; 4]);
    crc_update(crc, &page[26..])
}

/// The page at the start of `window`, once checked.
#[derive(Debug, Clone, Copy)]
struct Page<'a> {
    /// The whole page.
    bytes: &'a [u8],
    /// The lacing values.
    lacing: &'a [u8],
    /// Where the body (the packet data) starts in `bytes`.
    body_at: usize,
}

impl Page<'_> {
    fn bos(&self) -> bool {
        self.bytes[5] & 0x02 != 0
    }

    fn granule(&self) -> i64 {
        i64::from_le_bytes(self.bytes[6..14].try_into().unwrap_or([0; 8]))
    }

    fn serial(&self) -> u32 {
        u32::from_le_bytes(self.bytes[14..18].try_into().unwrap_or([0; 4]))
    }

    /// Packets that end on this page (a lacing value below 255 ends one).
    fn packets_ended(&self) -> u32 {
        self.lacing.iter().filter(|l| **l < 255).count() as u32
    }

    /// The start of the first packet's data (for a codec's magic bytes).
    fn body(&self) -> &[u8] {
        &self.bytes[self.body_at..]
    }
}

/// What a page at the start of a window is.
enum Parsed<'a> {
    NeedMore(usize),
    Invalid,
    Page(Page<'a>),
}

/// Parse and check the page at the start of `window`: `OggS`, version 0, no
/// undefined header flag, the lacing values, the whole body, and the CRC.
fn parse(window: &[u8]) -> Parsed<'_> {
    if window.len() < PAGE_HEADER_LEN {
        // Decide garbage early when the capture pattern is already wrong.
        let n = window.len().min(4);
        if window[..n] != b"OggS"[..n] {
            return Parsed::Invalid;
        }
        return Parsed::NeedMore(PAGE_HEADER_LEN);
    }
    if &window[..4] != b"OggS" || window[4] != 0 || window[5] & !0x07 != 0 {
        return Parsed::Invalid;
    }
    let segments = usize::from(window[26]);
    let header_len = PAGE_HEADER_LEN + segments;
    let Some(lacing) = window.get(PAGE_HEADER_LEN..header_len) else {
        return Parsed::NeedMore(header_len);
    };
    let body_len: usize = lacing.iter().map(|l| usize::from(*l)).sum();
    let len = header_len + body_len;
    let Some(bytes) = window.get(..len) else {
        return Parsed::NeedMore(len);
    };
    let stored = u32::from_le_bytes([bytes[22], bytes[23], bytes[24], bytes[25]]);
    if ogg_crc(bytes) != stored {
        return Parsed::Invalid;
    }
    Parsed::Page(Page {
        bytes,
        lacing,
        body_at: header_len,
    })
}

/// Header packets a logical stream starts with, from the first bytes of its
/// first packet; `None` for a codec not known here (its header pages are
/// then the pages with granule position 0, as the Ogg mapping of every
/// codec has them).
fn header_packets(first: &[u8]) -> Option<u32> {
    if first.starts_with(b"\x01vorbis") || first.starts_with(b"\x80theora") {
        Some(3)
    } else if first.starts_with(b"OpusHead") {
        Some(2)
    } else if first.starts_with(b"\x7FFLAC") {
        // Mapping 1.0: a 16-bit count of the header packets after this one
        // (0: unknown).
        let n = u16::from_be_bytes([*first.get(7)?, *first.get(8)?]);
        (n > 0).then(|| 1 + u32::from(n))
    } else if first.starts_with(b"Speex   ") {
        let b = first.get(68..72)?;
        let extra = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        Some(2 + extra.min(16))
    } else {
        None
    }
}

/// One logical stream whose header packets are being collected.
#[derive(Debug, Clone, Copy)]
struct Logical {
    serial: u32,
    /// Header packets it has (`None`: unknown codec, see [`header_packets`]).
    needed: Option<u32>,
    /// Header packets seen complete so far.
    got: u32,
    /// All its header packets are in.
    done: bool,
}

/// Cuts an Ogg byte stream into whole pages of at most `max_frame_bytes`
/// bytes each, and turns each link's header pages into a stream header.
///
/// # Pages
///
/// A page is accepted when it has the capture pattern `OggS`, version 0, no
/// undefined flag, and its CRC matches. The CRC makes a false sync
/// practically impossible, so no confirming page is needed and every page is
/// emitted as soon as its last byte arrives. Anything else — garbage, a page
/// with a bad CRC — is skipped a byte at a time (up to the next `O`) and
/// counted in [`FramerStats::invalid_bytes`]; the framer then hunts for the
/// next `OggS`. A page longer than `max_frame_bytes` (which defaults to the
/// largest legal page) is dropped whole and counted as oversized.
///
/// # Header pages
///
/// A beginning-of-stream (BOS) page starts a new header, unless it follows
/// other BOS pages of the same link (a multiplexed link groups its BOS pages
/// first). The framer counts each logical stream's completed packets: the
/// header is complete when every stream of the link has its header packets
/// (3 for Vorbis and Theora, 2 for Opus, as the FLAC and Speex BOS packets
/// say; for other codecs, the pages with granule position 0). The header
/// pages are then emitted together as one stream header, never as frames.
/// A page that is not a header page while one is being collected ends the
/// collection early (the header is emitted as it is) and is a frame. A
/// header larger than [`MAX_HEADER_BYTES`] is given up on: its pages go out
/// as frames, in order, and an empty stream header is emitted so that no
/// older link's header is sent with the new link's pages.
///
/// # Reset
///
/// At a reset (source reopen) a partial page and a half-collected header are
/// dropped and counted in [`FramerStats::partial_bytes_dropped`].
///
/// # Listeners already connected at a new link
///
/// The header pages of a new link (after a reopen, or a chained stream) are
/// not frames, so a listener that is already connected does not get them
/// from the ring: the client side must send it the new stream header before
/// the first frame it belongs to (Icecast does the same), or its decoder
/// meets pages of a logical stream it has no header for.
#[derive(Debug)]
pub struct OggFramer {
    /// Carries undecided bytes (up to one whole page) across `push` calls.
    cutter: Cutter,
    /// The decisions.
    format: OggFormat,
}

/// The Ogg framer's decisions, header collection and counters.
#[derive(Debug)]
struct OggFormat {
    /// Longest page emitted as a frame; longer pages are dropped.
    max_frame_bytes: usize,
    /// Collecting a link's header pages (otherwise pages are frames: data
    /// pages, or pages of a link whose beginning this session never saw).
    collecting: bool,
    /// Every page collected so far is a BOS page: a further BOS page
    /// belongs to the same (grouped, multiplexed) link.
    only_bos: bool,
    /// The logical streams of the link being collected.
    streams: Vec<Logical>,
    /// The header pages collected so far, whole, in order.
    header: Vec<u8>,
    /// Names the stream in log lines.
    label: String,
    /// Counters since construction.
    stats: FramerStats,
}

impl OggFramer {
    /// A framer that emits Ogg pages of at most `max_frame_bytes` bytes as
    /// frames and header pages as stream headers.
    pub fn new(max_frame_bytes: usize) -> Self {
        OggFramer {
            cutter: Cutter::new(OGG_MAX_PAGE_BYTES),
            format: OggFormat {
                max_frame_bytes,
                collecting: false,
                only_bos: false,
                streams: Vec::with_capacity(MAX_STREAMS),
                header: Vec::new(),
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

    /// Longest page this framer emits as a frame.
    pub fn max_frame_bytes(&self) -> usize {
        self.format.max_frame_bytes
    }
}

impl OggFormat {
    /// Emit a page as a frame (or drop it if oversized).
    fn frame(&mut self, page: &[u8], sink: &mut dyn FrameSink) {
        if page.len() > self.max_frame_bytes {
            self.stats.oversized_frames += 1;
            return;
        }
        sink.frame(page);
        self.stats.frames += 1;
        self.stats.frame_bytes += page.len() as u64;
    }

    /// Emit the collected header and switch to data.
    fn finish_header(&mut self, sink: &mut dyn FrameSink) {
        sink.header(&self.header);
        self.stats.headers += 1;
        self.stats.header_bytes += self.header.len() as u64;
        self.collecting = false;
    }

    /// Start collecting a new link's header.
    fn begin_header(&mut self) {
        if self.collecting {
            // An unfinished header replaced by a new one.
            self.stats.partial_bytes_dropped += self.header.len() as u64;
        }
        self.header.clear();
        self.streams.clear();
        self.collecting = true;
        self.only_bos = true;
    }

    /// Add a header page. If the header would grow past the limit, give it
    /// up instead: its pages and this one go out as frames, in order, after
    /// an empty stream header (so that no older link's header is sent with
    /// this link's pages).
    fn add_header_page(&mut self, page: &[u8], sink: &mut dyn FrameSink) {
        if self.header.len() + page.len() <= MAX_HEADER_BYTES {
            self.header.extend_from_slice(page);
            return;
        }
        log::warn!(
            "source stream={} framer ogg: stream header larger than {} bytes; \
             sending its pages as frames (listeners that join later cannot decode)",
            self.label,
            MAX_HEADER_BYTES
        );
        sink.header(&[]);
        self.stats.headers += 1;
        self.collecting = false;
        let header = std::mem::take(&mut self.header);
        let mut at = 0;
        while let Parsed::Page(p) = parse(&header[at..]) {
            // Only checked pages were kept, so this walks all of them.
            self.frame(p.bytes, sink);
            at += p.bytes.len();
        }
        self.header = header;
        self.header.clear();
        self.frame(page, sink);
    }

    /// Route one checked page.
    fn page(&mut self, page: Page<'_>, sink: &mut dyn FrameSink) {
        if page.bos() {
            if !(self.collecting && self.only_bos) {
                self.begin_header();
            }
            if self.streams.len() < MAX_STREAMS {
                let needed = header_packets(page.body());
                let got = page.packets_ended();
                self.streams.push(Logical {
                    serial: page.serial(),
                    needed,
                    got,
                    done: needed.is_some_and(|n| got >= n),
                });
            }
            // The header is not finished on a BOS page: more BOS pages of
            // the same link may follow.
            self.add_header_page(page.bytes, sink);
            return;
        }
        if self.collecting {
            let serial = page.serial();
            let granule = page.granule();
            let mut is_header = false;
            if let Some(s) = self.streams.iter_mut().find(|s| s.serial == serial) {
                if !s.done {
                    match s.needed {
                        Some(n) => {
                            s.got = s.got.saturating_add(page.packets_ended());
                            s.done = s.got >= n;
                            is_header = true;
                        }
                        None if granule == 0 => is_header = true,
                        None => s.done = true,
                    }
                }
            }
            if is_header {
                self.only_bos = false;
                self.add_header_page(page.bytes, sink);
                if self.collecting && self.streams.iter().all(|s| s.done) {
                    self.finish_header(sink);
                }
                return;
            }
            // Not a header page: the header is as complete as it gets.
            self.finish_header(sink);
        }
        self.frame(page.bytes, sink);
    }
}

impl Format for OggFormat {
    fn decide(&mut self, window: &[u8], sink: &mut dyn FrameSink) -> Action {
        match parse(window) {
            Parsed::NeedMore(n) => Action::NeedMore(n),
            Parsed::Invalid => {
                // Skip to the next possible capture pattern.
                let n = window[1..]
                    .iter()
                    .position(|b| *b == b'O')
                    .map_or(window.len(), |i| i + 1);
                self.stats.invalid_bytes += n as u64;
                Action::Consume(n)
            }
            Parsed::Page(page) => {
                let len = page.bytes.len();
                self.page(page, sink);
                Action::Consume(len)
            }
        }
    }
}

impl Framer for OggFramer {
    fn push(&mut self, input: &[u8], sink: &mut dyn FrameSink) {
        self.cutter.push(&mut self.format, input, sink);
    }

    fn reset(&mut self) {
        let dropped = self.cutter.reset();
        let f = &mut self.format;
        f.stats.partial_bytes_dropped += dropped as u64;
        if f.collecting {
            f.stats.partial_bytes_dropped += f.header.len() as u64;
        }
        f.header.clear();
        f.streams.clear();
        f.collecting = false;
    }

    fn stats(&self) -> FramerStats {
        self.format.stats
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{frames_of, run_events, Event};
    use super::*;
    use proptest::prelude::*;

    /// Page flags.
    const CONT: u8 = 1;
    const BOS: u8 = 2;
    const EOS: u8 = 4;

    /// A page with a correct CRC holding `segments` (each a lacing value's
    /// worth is built from whole packets by [`lace`]).
    fn page(flags: u8, granule: i64, serial: u32, seq: u32, lacing: &[u8], body: &[u8]) -> Vec<u8> {
        assert_eq!(
            lacing.iter().map(|l| *l as usize).sum::<usize>(),
            body.len()
        );
        let mut p = b"OggS\0".to_vec();
        p.push(flags);
        p.extend(granule.to_le_bytes());
        p.extend(serial.to_le_bytes());
        p.extend(seq.to_le_bytes());
        p.extend([0; 4]);
        p.push(lacing.len() as u8);
        p.extend_from_slice(lacing);
        p.extend_from_slice(body);
        let crc = ogg_crc(&p);
        p[22..26].copy_from_slice(&crc.to_le_bytes());
        p
    }

    /// Lacing values for whole packets.
    fn lace(packets: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut lacing = Vec::new();
        for p in packets {
            let mut n = p.len();
            while n >= 255 {
                lacing.push(255);
                n -= 255;
            }
            lacing.push(n as u8);
        }
        (lacing, packets.concat())
    }

    /// A page of whole packets.
    fn packets_page(flags: u8, granule: i64, serial: u32, seq: u32, packets: &[&[u8]]) -> Vec<u8> {
        let (lacing, body) = lace(packets);
        page(flags, granule, serial, seq, &lacing, &body)
    }

    fn vorbis_id() -> Vec<u8> {
        let mut p = b"\x01vorbis".to_vec();
        p.extend([0u8; 23]);
        p
    }

    /// A Vorbis link: BOS (identification), comment + setup, then `n` audio
    /// pages. Returns (header pages, audio pages).
    fn vorbis_link(serial: u32, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let setup = vec![5u8; 700];
        let headers = vec![
            packets_page(BOS, 0, serial, 0, &[&vorbis_id()]),
            packets_page(0, 0, serial, 1, &[b"\x03vorbis comment", &setup]),
        ];
        let audio = (0..n)
            .map(|i| {
                let a = vec![i as u8; 40 + i];
                let b = vec![0xFFu8; 17];
                packets_page(0, 1024 * (i as i64 + 1), serial, 2 + i as u32, &[&a, &b])
            })
            .collect();
        (headers, audio)
    }

    fn opus_link(serial: u32, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut head = b"OpusHead\x01\x02".to_vec();
        head.extend([0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
        let headers = vec![
            packets_page(BOS, 0, serial, 0, &[&head]),
            packets_page(0, 0, serial, 1, &[b"OpusTags\x05\0\0\0ringc\0\0\0\0"]),
        ];
        let audio = (0..n)
            .map(|i| {
                let flags = if i + 1 == n { EOS } else { 0 };
                let a = vec![0xFCu8; 60];
                packets_page(
                    flags,
                    312 + 960 * (i as i64 + 1),
                    serial,
                    2 + i as u32,
                    &[&a, &a],
                )
            })
            .collect();
        (headers, audio)
    }

    fn run(f: &mut OggFramer, data: &[u8], cuts: &[usize]) -> Vec<Event> {
        run_events(f, data, cuts)
    }

    #[test]
    fn crc_of_a_known_page() {
        // The identification page of a real ffmpeg/libvorbis file (58 bytes).
        let p: Vec<u8> = [
            "4f676753000200000000000000005ecdccbe00000000",
            "a4229ad4011e01766f72626973000000000144ac0000",
            "000000008038010000000000b801",
        ]
        .concat()
        .as_bytes()
        .chunks(2)
        .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
        .collect();
        assert_eq!(p.len(), 58);
        assert!(matches!(parse(&p), Parsed::Page(_)));
        let mut bad = p.clone();
        bad[40] ^= 1;
        assert!(matches!(parse(&bad), Parsed::Invalid));
    }

    #[test]
    fn vorbis_header_pages_become_the_header() {
        let (headers, audio) = vorbis_link(7, 5);
        let data = [headers.concat(), audio.concat()].concat();
        for cuts in [
            vec![],
            vec![3, 30, 100, 900, 1000],
            (0..data.len()).step_by(11).collect(),
        ] {
            let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
            let out = run(&mut f, &data, &cuts);
            let mut expected = vec![Event::Header(headers.concat())];
            expected.extend(audio.iter().cloned().map(Event::Frame));
            assert_eq!(out, expected);
            let s = f.stats();
            assert_eq!((s.headers, s.frames, s.invalid_bytes), (1, 5, 0));
            assert_eq!(s.header_bytes, headers.concat().len() as u64);
        }
    }

    #[test]
    fn setup_packet_over_several_pages() {
        let serial = 9;
        let setup = vec![3u8; 255 * 3 + 10];
        let (l, b) = lace(&[b"\x03vorbis c", &setup]);
        // Cut the comment + setup packets across three pages: the first
        // ends after the comment and 255 bytes of the setup.
        let p1 = page(0, 0, serial, 1, &l[..2], &b[..9 + 255]);
        let p2 = page(CONT, -1, serial, 2, &l[2..4], &b[9 + 255..9 + 765]);
        let p3 = page(CONT, 0, serial, 3, &l[4..], &b[9 + 765..]);
        let bos = packets_page(BOS, 0, serial, 0, &[&vorbis_id()]);
        let audio = packets_page(0, 2048, serial, 4, &[&[1, 2, 3]]);
        let data = [&bos[..], &p1, &p2, &p3, &audio].concat();
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let out = run(&mut f, &data, &[100]);
        assert_eq!(
            out,
            vec![
                Event::Header([&bos[..], &p1, &p2, &p3].concat()),
                Event::Frame(audio)
            ]
        );
    }

    #[test]
    fn opus_and_a_chained_link_replace_the_header() {
        let (h1, a1) = opus_link(1, 3);
        let (h2, a2) = vorbis_link(2, 2);
        let (h3, a3) = opus_link(3, 2);
        let data = [
            h1.concat(),
            a1.concat(),
            h2.concat(),
            a2.concat(),
            h3.concat(),
            a3.concat(),
        ]
        .concat();
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let out = run(&mut f, &data, &[50, 51, 700]);
        let mut expected = Vec::new();
        for (h, a) in [(&h1, &a1), (&h2, &a2), (&h3, &a3)] {
            expected.push(Event::Header(h.concat()));
            expected.extend(a.iter().cloned().map(Event::Frame));
        }
        assert_eq!(out, expected);
        assert_eq!(f.stats().headers, 3);
    }

    #[test]
    fn bad_crc_and_garbage_are_skipped_and_counted() {
        let (headers, audio) = vorbis_link(7, 4);
        let mut broken = audio[1].clone();
        broken[40] ^= 0x55;
        let garbage = b"xxOgxOggSyy".to_vec();
        let data = [
            headers.concat(),
            audio[0].clone(),
            garbage.clone(),
            broken.clone(),
            audio[2].clone(),
            audio[3].clone(),
        ]
        .concat();
        for cuts in [vec![], (0..data.len()).step_by(5).collect::<Vec<_>>()] {
            let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
            let out = run(&mut f, &data, &cuts);
            assert_eq!(
                frames_of(&out),
                vec![audio[0].clone(), audio[2].clone(), audio[3].clone()]
            );
            assert_eq!(
                f.stats().invalid_bytes,
                (garbage.len() + broken.len()) as u64
            );
        }
    }

    #[test]
    fn reset_drops_a_partial_page_and_a_half_header() {
        let (headers, audio) = vorbis_link(7, 2);
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let mut rec = super::super::test_util::Record::default();
        f.push(&headers[0], &mut rec);
        f.push(&headers[1][..10], &mut rec);
        assert!(rec.0.is_empty());
        f.reset();
        assert_eq!(
            f.stats().partial_bytes_dropped,
            (headers[0].len() + 10) as u64
        );
        // The next session starts clean.
        let (h2, a2) = opus_link(5, 1);
        let out = run(
            &mut f,
            &[&headers[1][10..], &h2.concat()[..], &a2[0]].concat(),
            &[],
        );
        assert_eq!(
            out,
            vec![Event::Header(h2.concat()), Event::Frame(a2[0].clone())]
        );
        // Pages of a link whose beginning was never seen are frames.
        let mut g = OggFramer::new(OGG_MAX_PAGE_BYTES);
        assert_eq!(
            run(&mut g, &audio.concat(), &[]),
            audio.into_iter().map(Event::Frame).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_codec_headers_are_the_granule_zero_pages() {
        let bos = packets_page(BOS, 0, 4, 0, &[b"mystery codec"]);
        let h2 = packets_page(0, 0, 4, 1, &[b"more header"]);
        let d = packets_page(0, 99, 4, 2, &[b"data"]);
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let out = run(&mut f, &[&bos[..], &h2, &d].concat(), &[]);
        assert_eq!(
            out,
            vec![Event::Header([&bos[..], &h2].concat()), Event::Frame(d)]
        );
    }

    #[test]
    fn grouped_links_share_one_header() {
        let (ha, aa) = vorbis_link(10, 2);
        let (hb, ab) = opus_link(11, 2);
        // BOS pages first, then the secondary headers, then data.
        let data = [
            &ha[0][..],
            &hb[0],
            &ha[1],
            &hb[1],
            &aa[0],
            &ab[0],
            &aa[1],
            &ab[1],
        ]
        .concat();
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let out = run(&mut f, &data, &[]);
        assert_eq!(
            out[0],
            Event::Header([&ha[0][..], &hb[0], &ha[1], &hb[1]].concat())
        );
        assert_eq!(
            frames_of(&out),
            vec![aa[0].clone(), ab[0].clone(), aa[1].clone(), ab[1].clone()]
        );
    }

    #[test]
    fn a_data_page_ends_an_unfinished_header_and_oversized_pages_are_dropped() {
        let (headers, audio) = vorbis_link(7, 3);
        // The setup page is missing and a page of a stream that never began
        // comes: it ends the header.
        let stray = packets_page(0, 5000, 99, 7, &[b"stray"]);
        let data = [&headers[0][..], &stray, &audio[0], &audio[1], &audio[2]].concat();
        let mut f = OggFramer::new(audio[1].len() - 1);
        let out = run(&mut f, &data, &[]);
        assert_eq!(out[0], Event::Header(headers[0].clone()));
        // The later audio pages (87 and 88 bytes) are too large.
        let lens: Vec<usize> = frames_of(&out).iter().map(|f| f.len()).collect();
        assert_eq!(lens, vec![stray.len(), audio[0].len()]);
        assert_eq!(f.stats().oversized_frames, 2);
    }

    #[test]
    fn a_header_too_large_goes_out_as_frames() {
        let serial = 3;
        let bos = packets_page(BOS, 0, serial, 0, &[&vorbis_id()]);
        // Comment pages of 255 × 255 bytes each, more than the limit.
        let n = MAX_HEADER_BYTES / (255 * 255) + 2;
        let comment: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                page(
                    if i == 0 { 0 } else { CONT },
                    -1,
                    serial,
                    1 + i as u32,
                    &[255; 255],
                    &vec![i as u8; 255 * 255],
                )
            })
            .collect();
        let data = [bos.clone(), comment.concat()].concat();
        let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
        let out = run(&mut f, &data, &[]);
        assert_eq!(out[0], Event::Header(Vec::new()));
        let mut expected = vec![bos];
        expected.extend(comment);
        assert_eq!(frames_of(&out), expected);
    }

    proptest! {
        #[test]
        fn any_chunking_same_events_and_every_frame_a_checked_page(
            parts in prop::collection::vec(
                prop_oneof![
                    2 => (0u32..3, 0usize..4).prop_map(|(s, n)| { let (h, a) = vorbis_link(s, n); [h.concat(), a.concat()].concat() }),
                    2 => (0u32..3, 0usize..4).prop_map(|(s, n)| { let (h, a) = opus_link(s, n); [h.concat(), a.concat()].concat() }),
                    1 => (0u32..3, 1usize..4).prop_map(|(s, n)| vorbis_link(s, n).1.concat()),
                    1 => prop::collection::vec(any::<u8>(), 0..300),
                    1 => prop::collection::vec(prop::sample::select(b"OggS\0\x02\x01".to_vec()), 0..40),
                ],
                0..8,
            ),
            flips in prop::collection::vec(any::<usize>(), 0..3),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
        ) {
            let mut data = parts.concat();
            for f in flips {
                if !data.is_empty() {
                    let i = f % data.len();
                    data[i] ^= 0x20;
                }
            }
            let mut whole = OggFramer::new(OGG_MAX_PAGE_BYTES);
            let expected = run(&mut whole, &data, &[]);
            let mut f = OggFramer::new(OGG_MAX_PAGE_BYTES);
            let out = run(&mut f, &data, &cuts);
            prop_assert_eq!(&out, &expected);
            for e in &out {
                let (Event::Frame(p) | Event::Header(p)) = e;
                // A header is whole pages; so is a frame (exactly one).
                let mut at = 0;
                let mut pages = 0;
                while at < p.len() {
                    match parse(&p[at..]) {
                        Parsed::Page(pg) => { at += pg.bytes.len(); pages += 1; }
                        _ => prop_assert!(false, "not a whole page"),
                    }
                }
                if matches!(e, Event::Frame(_)) {
                    prop_assert_eq!(pages, 1);
                }
            }
            prop_assert_eq!(f.cutter.buf.capacity(), OGG_MAX_PAGE_BYTES);
            f.reset();
            whole.reset();
            prop_assert_eq!(f.stats(), whole.stats());
            let s = f.stats();
            prop_assert_eq!(
                s.frame_bytes + s.header_bytes + s.invalid_bytes + s.partial_bytes_dropped,
                data.len() as u64
            );
        }
    }
}
