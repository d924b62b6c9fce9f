//! The loadgen test-stream frame format: encode, decode, verify, and a streaming checker.
//!
//! # Format
//!
//! A test stream is a sequence of fixed-size frames. Every frame starts with a 40-byte
//! header; all integers are little-endian:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 8    | magic `89 4C 4F 41 44 47 45 4E` (`"\x89LOADGEN"`)               |
//! | 8      | 4    | stream id (u32)                                                |
//! | 12     | 4    | frame length in bytes, header included (u32, 40 ..= 16 MiB)    |
//! | 16     | 8    | sequence number (u64; 0, 1, 2, ... per source run)              |
//! | 24     | 8    | send time, ns since the Unix epoch (CLOCK_REALTIME), u64        |
//! | 32     | 8    | checksum (u64) of bytes `0..32` and `40..len`, see [`Hasher`]  |
//! | 40     | rest | filler derived from stream id, sequence number and offset      |
//!
//! The magic's first byte (0x89) occurs nowhere else in the magic, so a byte-at-a-time
//! matcher that only remembers how many magic bytes it has matched finds it in a stream
//! cut at arbitrary places.
//!
//! The checksum is a word-wise multiply-rotate hash rather than byte-wise FNV-1a: a
//! loadgen checking 10,000 clients at 16,000 B/s hashes 160 MB/s, and byte-wise FNV-1a
//! (a 64-bit multiply per byte) would cost a large part of a core. Each 8-byte word goes
//! through a bijection of the running state, so a frame that differs from the original in
//! any single 8-byte word (including a torn frame whose tail belongs to another frame,
//! whose filler differs) is always detected; wider damage is missed with probability
//! about 2^-64.

use std::fmt;

/// The 8 bytes every frame starts with.
pub const MAGIC: [u8; 8] = *b"\x89LOADGEN";
/// Size of the frame header, and so the smallest frame.
pub const HEADER_LEN: usize = 40;
/// Largest frame length the checker accepts in a header.
pub const MAX_FRAME_LEN: usize = 16 << 20;

const OFF_STREAM: usize = 8;
const OFF_LEN: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_TIME: usize = 24;
const OFF_SUM: usize = 32;

/// The decoded header of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Which stream the frame belongs to (`loadgen source --stream-id`).
    pub stream_id: u32,
    /// Whole frame length, header included.
    pub len: u32,
    /// Frame number within one source run, starting at 0.
    pub seq: u64,
    /// CLOCK_REALTIME nanoseconds when the source wrote the frame.
    pub send_ns: u64,
    /// Checksum stored in the frame.
    pub checksum: u64,
}

/// Why a frame or a header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the length the header names.
    Short,
    /// The first 8 bytes are not [`MAGIC`].
    BadMagic,
    /// The length field is below [`HEADER_LEN`], above [`MAX_FRAME_LEN`], or not the
    /// length the stream uses.
    BadLength(u32),
    /// The checksum does not match the bytes: a corrupt or torn frame.
    Checksum,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short => write!(f, "frame shorter than its header says"),
            FrameError::BadMagic => write!(f, "frame does not start with the loadgen magic"),
            FrameError::BadLength(n) => write!(f, "frame length field {n} is invalid"),
            FrameError::Checksum => write!(f, "frame checksum mismatch (corrupt or torn frame)"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The checksum: a streaming hash over 8-byte little-endian words.
///
/// `state = rotl((state ^ word) * K, 29)` per word, starting from the FNV-1a offset
/// basis; a final partial word is zero-padded; the result is the murmur3 64-bit finalizer
/// of `state ^ byte_count`. Input may arrive in pieces of any size.
#[derive(Clone, Copy, Debug)]
pub struct Hasher {
    /// Running state over all whole words so far.
    state: u64,
    /// Bytes of the current partial word, little-endian, low bytes first.
    tail: u64,
    /// How many bytes `tail` holds (0..8).
    tail_len: u32,
    /// Bytes hashed so far.
    total: u64,
}

const HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher {
    /// A hasher that has seen no bytes.
    pub const fn new() -> Self {
        Hasher {
            state: HASH_SEED,
            tail: 0,
            tail_len: 0,
            total: 0,
        }
    }

    #[inline(always)]
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(HASH_K).rotate_left(29);
    }

    /// Adds `data` to the hash.
    #[inline]
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.tail_len > 0 {
            while self.tail_len < 8 {
                let Some((&b, rest)) = data.split_first() else {
                    return;
                };
                self.tail |= (b as u64) << (8 * self.tail_len);
                self.tail_len += 1;
                data = rest;
            }
            let w = self.tail;
            self.mix(w);
            self.tail = 0;
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(w);
            self.mix(u64::from_le_bytes(a));
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            self.tail |= (b as u64) << (8 * i);
        }
        self.tail_len = words.remainder().len() as u32;
    }

    /// The checksum of everything added so far.
    pub fn finish(&self) -> u64 {
        let mut h = *self;
        if h.tail_len > 0 {
            let w = h.tail;
            h.mix(w);
        }
        fmix64(h.state ^ h.total)
    }
}

/// murmur3's 64-bit finalizer: every input bit affects every output bit.
#[inline]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// splitmix64: a cheap, well-mixed function from a counter to a word.
#[inline]
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes the filler of frame `seq` of stream `stream_id` into `frame[40..]`.
///
/// Word `i` of the frame (bytes `8i..8i+8`, `i >= 5`) is
/// `splitmix64(splitmix64(seq ^ stream_id << 32) ^ i)`, little-endian; a final partial
/// word is truncated.
pub fn fill(frame: &mut [u8], stream_id: u32, seq: u64) {
    let seed = splitmix64(seq ^ ((stream_id as u64) << 32));
    if frame.len() <= HEADER_LEN {
        return;
    }
    let body = &mut frame[HEADER_LEN..];
    let first_word = (HEADER_LEN / 8) as u64;
    let mut chunks = body.chunks_exact_mut(8);
    let mut i = first_word;
    for c in &mut chunks {
        c.copy_from_slice(&splitmix64(seed ^ i).to_le_bytes());
        i += 1;
    }
    let rem = chunks.into_remainder();
    let w = splitmix64(seed ^ i).to_le_bytes();
    let n = rem.len();
    rem.copy_from_slice(&w[..n]);
}

/// Checksum of a whole frame buffer: bytes `0..32` and `40..len`.
pub fn checksum(frame: &[u8]) -> u64 {
    let mut h = Hasher::new();
    h.update(&frame[..OFF_SUM.min(frame.len())]);
    if frame.len() > HEADER_LEN {
        h.update(&frame[HEADER_LEN..]);
    }
    h.finish()
}

/// Encodes a complete frame into `frame` (its length is the frame length): header,
/// filler and checksum. Panics if `frame` is shorter than [`HEADER_LEN`] or longer than
/// [`MAX_FRAME_LEN`]; callers validate sizes at configuration time.
pub fn encode(frame: &mut [u8], stream_id: u32, seq: u64, send_ns: u64) {
    assert!(
        (HEADER_LEN..=MAX_FRAME_LEN).contains(&frame.len()),
        "frame length {} outside {HEADER_LEN}..={MAX_FRAME_LEN}",
        frame.len()
    );
    fill(frame, stream_id, seq);
    restamp(frame, stream_id, seq, send_ns);
}

/// Rewrites the header (and checksum) of a frame whose filler [`fill`] already wrote for
/// the same `stream_id` and `seq`. Lets a source prepare the filler ahead of the frame's
/// deadline and stamp the send time just before writing.
pub fn restamp(frame: &mut [u8], stream_id: u32, seq: u64, send_ns: u64) {
    let len = frame.len() as u32;
    frame[..8].copy_from_slice(&MAGIC);
    frame[OFF_STREAM..OFF_STREAM + 4].copy_from_slice(&stream_id.to_le_bytes());
    frame[OFF_LEN..OFF_LEN + 4].copy_from_slice(&len.to_le_bytes());
    frame[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    frame[OFF_TIME..OFF_TIME + 8].copy_from_slice(&send_ns.to_le_bytes());
    let sum = checksum(frame);
    frame[OFF_SUM..OFF_SUM + 8].copy_from_slice(&sum.to_le_bytes());
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes and sanity-checks a header (magic and length range; not the checksum).
pub fn decode_header(b: &[u8]) -> Result<Header, FrameError> {
    if b.len() < HEADER_LEN {
        return Err(FrameError::Short);
    }
    if b[..8] != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let len = le_u32(&b[OFF_LEN..]);
    if (len as usize) < HEADER_LEN || len as usize > MAX_FRAME_LEN {
        return Err(FrameError::BadLength(len));
    }
    Ok(Header {
        stream_id: le_u32(&b[OFF_STREAM..]),
        len,
        seq: le_u64(&b[OFF_SEQ..]),
        send_ns: le_u64(&b[OFF_TIME..]),
        checksum: le_u64(&b[OFF_SUM..]),
    })
}

/// Checks one whole frame at the start of `b` and returns its header. `b` may hold more
/// bytes after the frame.
pub fn verify(b: &[u8]) -> Result<Header, FrameError> {
    let h = decode_header(b)?;
    let len = h.len as usize;
    if b.len() < len {
        return Err(FrameError::Short);
    }
    if checksum(&b[..len]) != h.checksum {
        return Err(FrameError::Checksum);
    }
    Ok(h)
}

/// What the streaming checker reports while it consumes bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes before the first magic at the start of the body (a stream header), skipped
    /// once.
    Leading(u64),
    /// No magic within the sync limit at the body start: not a loadgen test stream; the
    /// checker passes the rest through unchecked.
    NotLoadgen,
    /// A frame passed every check.
    Frame(Header),
    /// `n` frames are missing before this one (sequence gap): skipped, not an error.
    Gap(u64),
    /// The sequence number went backwards: the source was restarted (e.g. `-reopen`).
    SeqReset,
    /// A frame failed a check: always an error.
    Corrupt(Corruption),
    /// Bytes thrown away while looking for the next magic after a corrupt header.
    Resync(u64),
}

/// The kinds of corrupt frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// A frame boundary did not hold a valid header (bad magic or length).
    BadHeader,
    /// The checksum did not match: the bytes are damaged or torn.
    Checksum,
    /// The frame belongs to a different stream than the connection's first frame.
    StreamChanged,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the body start, looking for the first magic. `matched` magic bytes matched so
    /// far, `skipped` bytes before them.
    Sync { matched: u8, skipped: u64 },
    /// Collecting a header into `hdr[..have]`.
    Header { have: u8 },
    /// Inside a frame body; `remaining` bytes to hash.
    Body { remaining: u32 },
    /// After a corrupt header: looking for the next magic.
    Resync { matched: u8, skipped: u64 },
    /// The body is not a test stream.
    Passthrough,
}

/// A streaming frame checker: feed it a response body in pieces of any size.
///
/// State is fixed-size (about 100 bytes), so a client engine can keep one per connection
/// and read into a shared buffer.
#[derive(Clone, Debug)]
pub struct Checker {
    state: State,
    /// The header being collected (valid up to `have`) or of the frame being hashed.
    hdr: [u8; HEADER_LEN],
    /// Checksum over the current frame so far.
    hasher: Hasher,
    /// The stream's frame length: from the configuration, else from the first frame.
    frame_len: u32,
    /// Stream id of the first good frame (`u64::MAX` = none yet).
    stream_id: u64,
    /// Sequence number expected next (`u64::MAX` = none yet).
    next_seq: u64,
    /// Bytes allowed before the first magic before the body counts as not loadgen.
    sync_limit: u64,
}

impl Checker {
    /// A checker for a body that may start with up to `sync_limit` bytes of stream header.
    /// `frame_len`, if known, is the only frame length accepted.
    pub fn new(frame_len: Option<u32>, sync_limit: u64) -> Self {
        Checker {
            state: State::Sync {
                matched: 0,
                skipped: 0,
            },
            hdr: [0; HEADER_LEN],
            hasher: Hasher::new(),
            frame_len: frame_len.unwrap_or(0),
            stream_id: u64::MAX,
            next_seq: u64::MAX,
            sync_limit,
        }
    }

    /// True once the body is known not to be a loadgen test stream.
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// True while the checker has not found the body's first frame yet (it is still
    /// skipping a stream header), or knows the body is not a test stream.
    pub fn before_first_frame(&self) -> bool {
        matches!(self.state, State::Sync { .. } | State::Passthrough)
    }

    /// True when the checker stopped inside a frame (or its header): a body that ends
    /// here ended with a truncated frame.
    pub fn mid_frame(&self) -> bool {
        match self.state {
            State::Header { have } => have > 0,
            State::Body { .. } => true,
            _ => false,
        }
    }

    /// Consumes `data`, reporting what it finds through `on`.
    #[inline]
    pub fn feed(&mut self, mut data: &[u8], on: &mut impl FnMut(Event)) {
        while !data.is_empty() {
            match self.state {
                State::Passthrough => return,
                State::Sync { matched, skipped } | State::Resync { matched, skipped } => {
                    let resync = matches!(self.state, State::Resync { .. });
                    let (used, found, m, s) = scan_magic(data, matched, skipped);
                    data = &data[used..];
                    if found {
                        self.hdr[..8].copy_from_slice(&MAGIC);
                        if s > 0 {
                            on(if resync {
                                Event::Resync(s)
                            } else {
                                Event::Leading(s)
                            });
                        }
                        self.state = State::Header { have: 8 };
                    } else if !resync && s > self.sync_limit {
                        self.state = State::Passthrough;
                        on(Event::NotLoadgen);
                        return;
                    } else {
                        self.state = if resync {
                            State::Resync {
                                matched: m,
                                skipped: s,
                            }
                        } else {
                            State::Sync {
                                matched: m,
                                skipped: s,
                            }
                        };
                    }
                }
                State::Header { have } => {
                    let have = have as usize;
                    let n = (HEADER_LEN - have).min(data.len());
                    self.hdr[have..have + n].copy_from_slice(&data[..n]);
                    data = &data[n..];
                    if have + n < HEADER_LEN {
                        self.state = State::Header {
                            have: (have + n) as u8,
                        };
                        continue;
                    }
                    self.start_body(on);
                }
                State::Body { remaining } => {
                    let n = (remaining as usize).min(data.len());
                    self.hasher.update(&data[..n]);
                    data = &data[n..];
                    let remaining = remaining - n as u32;
                    if remaining == 0 {
                        self.end_frame(on);
                    } else {
                        self.state = State::Body { remaining };
                    }
                }
            }
        }
    }

    /// The header is complete in `self.hdr`: validate it and start hashing the body.
    fn start_body(&mut self, on: &mut impl FnMut(Event)) {
        let ok = match decode_header(&self.hdr) {
            Ok(h) => self.frame_len == 0 || h.len == self.frame_len,
            Err(_) => false,
        };
        if !ok {
            on(Event::Corrupt(Corruption::BadHeader));
            // The 40 header bytes are gone; look for the next magic in what follows.
            self.state = State::Resync {
                matched: 0,
                skipped: 0,
            };
            return;
        }
        let len = le_u32(&self.hdr[OFF_LEN..]);
        if self.frame_len == 0 {
            self.frame_len = len;
        }
        self.hasher = Hasher::new();
        self.hasher.update(&self.hdr[..OFF_SUM]);
        let remaining = len - HEADER_LEN as u32;
        if remaining == 0 {
            self.end_frame(on);
        } else {
            self.state = State::Body { remaining };
        }
    }

    /// The current frame is complete: compare its checksum and sequence number.
    fn end_frame(&mut self, on: &mut impl FnMut(Event)) {
        self.state = State::Header { have: 0 };
        let h = match decode_header(&self.hdr) {
            Ok(h) => h,
            Err(_) => {
                on(Event::Corrupt(Corruption::BadHeader));
                return;
            }
        };
        if self.hasher.finish() != h.checksum {
            on(Event::Corrupt(Corruption::Checksum));
            return;
        }
        if self.stream_id == u64::MAX {
            self.stream_id = h.stream_id as u64;
        } else if self.stream_id != h.stream_id as u64 {
            on(Event::Corrupt(Corruption::StreamChanged));
            return;
        }
        if self.next_seq != u64::MAX {
            if h.seq > self.next_seq {
                on(Event::Gap(h.seq - self.next_seq));
            } else if h.seq < self.next_seq {
                on(Event::SeqReset);
            }
        }
        self.next_seq = h.seq.wrapping_add(1);
        on(Event::Frame(h));
    }
}

/// Scans `data` for the magic, continuing a match of `matched` bytes with `skipped`
/// bytes already passed over. Returns (bytes used, found, matched, skipped). When found,
/// `used` ends just after the magic and `skipped` counts the bytes before it.
#[inline]
fn scan_magic(data: &[u8], mut matched: u8, mut skipped: u64) -> (usize, bool, u8, u64) {
    for (i, &b) in data.iter().enumerate() {
        if b == MAGIC[matched as usize] {
            matched += 1;
            if matched as usize == MAGIC.len() {
                return (i + 1, true, 0, skipped);
            }
        } else {
            // MAGIC[0] occurs only at position 0, so a failed partial match cannot hide
            // the start of another match except at this very byte.
            skipped += matched as u64;
            if b == MAGIC[0] {
                matched = 1;
            } else {
                matched = 0;
                skipped += 1;
            }
        }
    }
    (data.len(), false, matched, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(stream_id: u32, len: usize, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in seqs {
            let mut f = vec![0u8; len];
            encode(&mut f, stream_id, s, 1_000_000 + s);
            out.extend_from_slice(&f);
        }
        out
    }

    #[derive(Default, Debug, PartialEq)]
    struct Tally {
        frames: Vec<u64>,
        gaps: u64,
        corrupt: Vec<Corruption>,
        leading: u64,
        resync: u64,
        resets: u64,
        not_loadgen: bool,
    }

    fn check(data: &[u8], cuts: &[usize], frame_len: Option<u32>) -> Tally {
        let mut c = Checker::new(frame_len, 1 << 16);
        let mut t = Tally::default();
        let mut on = |e: Event| match e {
            Event::Frame(h) => t.frames.push(h.seq),
            Event::Gap(n) => t.gaps += n,
            Event::Corrupt(k) => t.corrupt.push(k),
            Event::Leading(n) => t.leading += n,
            Event::Resync(n) => t.resync += n,
            Event::SeqReset => t.resets += 1,
            Event::NotLoadgen => t.not_loadgen = true,
        };
        let mut at = 0;
        for &cut in cuts {
            let cut = cut.clamp(at, data.len());
            c.feed(&data[at..cut], &mut on);
            at = cut;
        }
        c.feed(&data[at..], &mut on);
        t
    }

    #[test]
    fn encode_decode_round_trip() {
        for len in [40usize, 41, 47, 48, 100, 1000, 4096] {
            let mut f = vec![0u8; len];
            encode(&mut f, 7, 42, 123_456_789);
            let h = verify(&f).expect("valid frame");
            assert_eq!(
                h,
                Header {
                    stream_id: 7,
                    len: len as u32,
                    seq: 42,
                    send_ns: 123_456_789,
                    checksum: h.checksum
                }
            );
            assert_eq!(&f[..8], &MAGIC);
        }
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let mut f = vec![0u8; 300];
        encode(&mut f, 1, 9, 5);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(verify(&g).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn torn_frame_is_detected() {
        // Head of frame 3, tail of frame 67 (a ring slot overwritten during a send).
        let a = stream(1, 1000, [3]);
        let b = stream(1, 1000, [67]);
        let mut torn = a[..500].to_vec();
        torn.extend_from_slice(&b[500..]);
        assert_eq!(verify(&torn), Err(FrameError::Checksum));
    }

    #[test]
    fn hasher_is_split_invariant() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = Hasher::new();
        whole.update(&data);
        for cut in [0, 1, 7, 8, 9, 15, 16, 17, 999, 1000] {
            let mut h = Hasher::new();
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            assert_eq!(h.finish(), whole.finish(), "cut {cut}");
        }
    }

    #[test]
    fn clean_stream_checks() {
        let s = stream(3, 100, 0..20);
        let t = check(&s, &[], Some(100));
        assert_eq!(t.frames, (0..20).collect::<Vec<_>>());
        assert_eq!(t.gaps, 0);
        assert!(t.corrupt.is_empty());
    }

    #[test]
    fn injected_corrupt_frame_is_found() {
        let mut s = stream(3, 100, 0..10);
        s[4 * 100 + 60] ^= 0xff; // filler of frame 4
        let t = check(&s, &[], None);
        assert_eq!(t.corrupt, vec![Corruption::Checksum]);
        assert_eq!(t.frames, vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);
        // The frame after a checksum failure is still found at the next boundary; its
        // sequence jump is the corrupt frame, counted as a gap.
        assert_eq!(t.gaps, 1);
    }

    #[test]
    fn gap_is_skipped_not_error() {
        let s = stream(3, 64, [0, 1, 2, 7, 8, 20]);
        let t = check(&s, &[], Some(64));
        assert!(t.corrupt.is_empty());
        assert_eq!(t.gaps, 4 + 11);
        assert_eq!(t.frames.len(), 6);
    }

    #[test]
    fn leading_stream_header_is_skipped_once() {
        let mut s = b"LOADGEN-HEADER stuff".to_vec();
        s.push(0x89); // a stray partial magic inside the header
        s.extend_from_slice(b"LOAD");
        let lead = s.len() as u64;
        s.extend(stream(1, 50, 0..3));
        let t = check(&s, &[3, 21, 23, 30], None);
        assert_eq!(t.leading, lead);
        assert_eq!(t.frames, vec![0, 1, 2]);
        assert!(t.corrupt.is_empty());
    }

    #[test]
    fn truncated_frame_followed_by_data_is_corrupt_and_resyncs() {
        let a = stream(1, 100, 0..3);
        let b = stream(1, 100, 3..6);
        let mut s = a[..250].to_vec(); // frame 2 cut after 50 bytes
        s.extend_from_slice(&b);
        let t = check(&s, &[], Some(100));
        assert!(!t.corrupt.is_empty());
        assert!(t.frames.contains(&0) && t.frames.contains(&1));
        assert!(t.frames.contains(&5), "checker resynchronised: {t:?}");
    }

    #[test]
    fn wrong_length_is_corrupt() {
        let s = stream(1, 100, 0..2);
        let t = check(&s, &[], Some(64));
        assert!(t.corrupt.contains(&Corruption::BadHeader));
    }

    #[test]
    fn stream_change_is_corrupt() {
        let mut s = stream(1, 80, 0..2);
        s.extend(stream(2, 80, 2..3));
        let t = check(&s, &[], None);
        assert_eq!(t.corrupt, vec![Corruption::StreamChanged]);
    }

    #[test]
    fn seq_reset_is_not_an_error() {
        let mut s = stream(1, 80, 0..5);
        s.extend(stream(1, 80, 0..5));
        let t = check(&s, &[], None);
        assert!(t.corrupt.is_empty());
        assert_eq!(t.resets, 1);
        assert_eq!(t.frames.len(), 10);
    }

    #[test]
    fn non_loadgen_body_passes_through() {
        let s = vec![0x55u8; 200_000];
        let t = check(&s, &[1000], None);
        assert!(t.not_loadgen);
        assert!(t.frames.is_empty() && t.corrupt.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// A clean stream with gaps, cut anywhere, checks the same as uncut.
        #[test]
        fn chunking_never_changes_the_verdict(
            len in 40usize..300,
            steps in proptest::collection::vec(1u64..4, 1..30),
            cuts in proptest::collection::vec(0usize..20_000, 0..40),
            lead in 0usize..200,
        ) {
            let mut seqs = Vec::new();
            let mut s = 0;
            for st in &steps { s += st; seqs.push(s); }
            let mut data = vec![b'h'; lead];
            data.extend(stream(9, len, seqs.iter().copied()));
            let mut cuts = cuts;
            cuts.sort_unstable();
            let t = check(&data, &cuts, None);
            prop_assert!(t.corrupt.is_empty());
            prop_assert_eq!(&t.frames, &seqs);
            prop_assert_eq!(t.leading, lead as u64);
            let expect_gaps: u64 = steps.iter().skip(1).map(|s| s - 1).sum();
            prop_assert_eq!(t.gaps, expect_gaps);
        }

        /// One damaged byte anywhere in a frame, at any chunking, is always reported.
        #[test]
        fn any_damaged_byte_is_found(
            len in 40usize..200,
            n in 2usize..12,
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
            cuts in proptest::collection::vec(0usize..3000, 0..20),
        ) {
            let mut data = stream(4, len, 0..n as u64);
            // Bytes 0..8 are the first frame's magic: damage there makes the frame look
            // like a stream header before the first magic (skipped as leading bytes, by
            // design), so damage starts after it.
            let i = 8 + at.index(data.len() - 8);
            data[i] ^= xor;
            let mut cuts = cuts;
            cuts.sort_unstable();
            let t = check(&data, &cuts, Some(len as u32));
            prop_assert!(!t.corrupt.is_empty(), "damage at {} of {} not found: {:?}", i, data.len(), t);
        }
    }
}
