//! Clean MP3 joins and skips: the bit-reservoir lead-in.
//!
//! An MPEG layer III frame may start its audio data (`main_data_begin` bytes)
//! inside the frames before it. A listener that joins at frame X, or skips
//! forward to it, has not received those bytes, so its decoder reports an
//! error and plays garbage at X (streamserve lists this as a known bug).
//!
//! ringcast sends a short **lead-in** before X: the frames before X that hold
//! the bytes X (and X-1) borrow, with the side information of all but the last
//! one rewritten so they decode as silence (`part2_3_length = 0`, no
//! scalefactors, `main_data_begin = 0`, CRC recomputed). Their physical bytes
//! still reach the decoder's reservoir, so X-1 and X decode exactly as in the
//! original stream: X-1 is decoded whole (only its first granule overlaps the
//! silence), and X, whose overlap and synthesis history come from X-1's second
//! granule, is bit-identical to a decode of the whole stream.
//!
//! The lead-in is built once per join or skip, copied out of the ring under the
//! seqlock check (a few kilobytes at most), and sent from the client's own
//! buffer; frames from X on are sent from the ring as usual.

use crate::framing::mp3_frame_len;
use crate::ring::Ring;

/// Most frames a lead-in may use (511 bytes of reservoir at the lowest
/// bitrates spans about this many frames).
pub const MAX_LEADIN_FRAMES: u64 = 12;

/// Layout of one layer III frame's header and side information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// MPEG-1 (two granules, 9-bit main_data_begin) or MPEG-2/2.5 (LSF).
    pub mpeg1: bool,
    /// Channels in the side information (1 or 2).
    pub channels: usize,
    /// True when a 16-bit CRC follows the header.
    pub crc: bool,
    /// Whole frame length in bytes.
    pub frame_len: usize,
}

impl Layout {
    /// The layout of a layer III frame, or `None` for anything else.
    pub fn of(frame: &[u8]) -> Option<Layout> {
        if frame.len() < 4 {
            return None;
        }
        let header = [frame[0], frame[1], frame[2], frame[3]];
        let frame_len = mp3_frame_len(header)?;
        let version = (frame[1] >> 3) & 3;
        let layer = (frame[1] >> 1) & 3;
        if layer != 1 {
            return None; // not layer III: no reservoir
        }
        let layout = Layout {
            mpeg1: version == 3,
            channels: if (frame[3] >> 6) == 3 { 1 } else { 2 },
            crc: frame[1] & 1 == 0,
            frame_len,
        };
        (frame.len() >= layout.side_end()).then_some(layout)
    }

    /// Bytes of side information.
    pub fn side_len(&self) -> usize {
        match (self.mpeg1, self.channels) {
            (true, 1) => 17,
            (true, _) => 32,
            (false, 1) => 9,
            (false, _) => 17,
        }
    }

    /// Offset of the side information (after header and CRC).
    pub fn side_start(&self) -> usize {
        4 + if self.crc { 2 } else { 0 }
    }

    /// Offset where the frame's own main data begins.
    pub fn side_end(&self) -> usize {
        self.side_start() + self.side_len()
    }

    /// Physical main-data bytes this frame adds to the decoder's reservoir.
    pub fn main_data_len(&self) -> usize {
        self.frame_len.saturating_sub(self.side_end())
    }
}

/// Big-endian bit reader/writer over a byte slice.
struct Bits<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> u32 {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.buf.get(self.pos / 8).copied().unwrap_or(0);
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        v
    }

    fn write(&mut self, n: usize, v: u32) {
        for i in (0..n).rev() {
            let bit = ((v >> i) & 1) as u8;
            if let Some(byte) = self.buf.get_mut(self.pos / 8) {
                let mask = 1 << (7 - self.pos % 8);
                *byte = (*byte & !mask) | (bit << (7 - self.pos % 8));
            }
            self.pos += 1;
        }
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
    }
}

/// The frame's `main_data_begin`: how many bytes of earlier frames' main data
/// its audio starts in.
pub fn main_data_begin(frame: &[u8], l: &Layout) -> usize {
    let mut side = frame[l.side_start()..l.side_end()].to_vec();
    let mut b = Bits {
        buf: &mut side,
        pos: 0,
    };
    b.read(if l.mpeg1 { 9 } else { 8 }) as usize
}

/// Rewrite a layer III frame's side information so it decodes as silence,
/// with `main_data_begin` set to `mdb` (clamped to the field's range); its
/// main-data bytes are left as they are. The CRC is recomputed when present.
/// Returns false (frame untouched) when it is not layer III.
///
/// Decoders (mpg123, FFmpeg) carry the reservoir from frame to frame: the
/// bytes a frame may borrow are the previous frame's `main_data_begin` plus
/// its own main data. A silenced frame decodes nothing, so its
/// `main_data_begin` only serves to carry bytes forward: the caller sets it
/// as large as what the decoder holds, to pass the most on.
pub fn silence(frame: &mut [u8], mdb: usize) -> bool {
    let Some(l) = Layout::of(frame) else {
        return false;
    };
    let (start, end) = (l.side_start(), l.side_end());
    {
        let mut b = Bits {
            buf: &mut frame[start..end],
            pos: 0,
        };
        let max = if l.mpeg1 { 511 } else { 255 };
        b.write(if l.mpeg1 { 9 } else { 8 }, mdb.min(max) as u32); // main_data_begin
        b.skip(match (l.mpeg1, l.channels) {
            (true, 1) => 5,
            (true, _) => 3,
            (false, 1) => 1,
            (false, _) => 2,
        }); // private bits
        if l.mpeg1 {
            for _ in 0..l.channels {
                b.write(4, 0); // scfsi: no scalefactor sharing
            }
        }
        let granules = if l.mpeg1 { 2 } else { 1 };
        for _ in 0..granules {
            for _ in 0..l.channels {
                b.write(12, 0); // part2_3_length: no bits
                b.write(9, 0); // big_values
                b.skip(8); // global_gain
                b.write(if l.mpeg1 { 4 } else { 9 }, 0); // scalefac_compress: slen 0
                let window_switching = b.read(1);
                if window_switching == 1 {
                    b.skip(2 + 1 + 5 + 5 + 9); // block_type, mixed, 2 tables, subblock gains
                } else {
                    b.skip(5 + 5 + 5 + 4 + 3); // 3 tables, region0/1 counts
                }
                if l.mpeg1 {
                    b.skip(1); // preflag
                }
                b.skip(1 + 1); // scalefac_scale, count1table_select
            }
        }
    }
    if l.crc {
        let crc = crc16(&frame[2..4], &frame[start..end]);
        frame[4..6].copy_from_slice(&crc.to_be_bytes());
    }
    true
}

/// The MPEG audio CRC-16 (polynomial 0x8005, initial 0xFFFF) over the last two
/// header bytes and the side information.
pub fn crc16(header_tail: &[u8], side: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in header_tail.iter().chain(side) {
        for i in (0..8).rev() {
            let bit = (byte >> i) & 1;
            let top = (crc >> 15) as u8 & 1;
            crc <<= 1;
            if top ^ bit == 1 {
                crc ^= 0x8005;
            }
        }
    }
    crc
}

/// A frame's figures, read under the seqlock.
struct Info {
    layout: Layout,
    mdb: usize,
}

fn info(ring: &Ring, n: u64, scratch: &mut Vec<u8>) -> Option<Info> {
    if !ring.copy_frame(n, scratch) {
        return None;
    }
    let layout = Layout::of(scratch)?;
    if layout.frame_len != scratch.len() {
        return None;
    }
    Some(Info {
        mdb: main_data_begin(scratch, &layout),
        layout,
    })
}

/// Frames before the target that are sent whole. A decoder's output for a
/// frame depends on the two frames before it (the IMDCT overlap and the
/// polyphase synthesis window reach back that far; measured with mpg123:
/// with only X-1 whole, the first ~190 samples of X differ), so
/// are sent as they are and only the frames before them are silenced.
pub const INTACT_FRAMES: u64 = 2;

/// Build the lead-in for a listener that is to receive frame `target` next,
/// using frames no older than `floor`. On success `out` holds the lead-in
/// bytes (silenced frames, then the [`INTACT_FRAMES`] frames before `target`
/// whole) and the number of frames in it is returned; `out` is empty and 0
/// returned when `target` borrows nothing, and `None` when the ring does not
/// hold what is needed (the caller then sends `target` as it is).
pub fn lead_in(ring: &Ring, target: u64, floor: u64, out: &mut Vec<u8>) -> Option<u64> {
    out.clear();
    let mut scratch = Vec::new();
    let t = info(ring, target, &mut scratch)?;
    if t.mdb == 0 {
        return Some(0);
    }
    let intact = INTACT_FRAMES.min(target.saturating_sub(floor));
    if intact == 0 {
        return None;
    }
    // The intact frames and the target borrow as the original stream does:
    // the encoder guarantees each one's main_data_begin fits in what the
    // frame before it carries. So only the first intact frame needs a
    // reservoir, carried to it by silenced frames: the first of them borrows
    // nothing, each next one carries min(max, carried) + its own bytes.
    let first_intact = target - intact;
    let need = info(ring, first_intact, &mut scratch)?.mdb;
    let max_mdb = if t.layout.mpeg1 { 511 } else { 255 };
    // Walk back until the silenced frames, in forward order, carry `need`.
    let mut first = first_intact;
    let mut mds: Vec<usize> = Vec::new(); // main-data sizes, newest first
    loop {
        let mut carried = 0usize;
        for md in mds.iter().rev() {
            carried = carried.min(max_mdb) + md;
        }
        if carried >= need {
            break;
        }
        if first == 0 || first - 1 < floor || target - first >= MAX_LEADIN_FRAMES {
            return None;
        }
        first -= 1;
        mds.push(info(ring, first, &mut scratch)?.layout.main_data_len());
    }
    let mut frames = 0;
    let mut carried = 0usize;
    for n in first..target {
        if !ring.copy_frame(n, &mut scratch) {
            out.clear();
            return None;
        }
        if n < first_intact {
            let mdb = carried.min(max_mdb);
            let Some(l) = Layout::of(&scratch) else {
                out.clear();
                return None;
            };
            if !silence(&mut scratch, mdb) {
                out.clear();
                return None;
            }
            carried = mdb + l.main_data_len();
        }
        out.extend_from_slice(&scratch);
        frames += 1;
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingWriter;
    use std::sync::Arc;

    /// An MPEG-1 layer III 128k/44.1k stereo frame (417 bytes) with the given
    /// main_data_begin, CRC optional, and recognisable main data.
    fn frame(mdb: u16, crc: bool, fill: u8) -> Vec<u8> {
        let mut f = vec![0u8; 417];
        f[0] = 0xFF;
        f[1] = if crc { 0xFA } else { 0xFB };
        f[2] = 0x90;
        f[3] = 0x04; // stereo
        let start = if crc { 6 } else { 4 };
        // side info: main_data_begin (9 bits) then a non-zero pattern.
        f[start] = (mdb >> 1) as u8;
        f[start + 1] = ((mdb & 1) << 7) as u8 | 0x55;
        for b in &mut f[start + 2..start + 32] {
            *b = 0xA5;
        }
        for b in &mut f[start + 32..] {
            *b = fill;
        }
        f
    }

    #[test]
    fn layout_and_mdb() {
        let f = frame(300, false, 1);
        let l = Layout::of(&f).unwrap();
        assert!(l.mpeg1);
        assert_eq!(l.channels, 2);
        assert_eq!(l.side_end(), 36);
        assert_eq!(l.main_data_len(), 417 - 36);
        assert_eq!(main_data_begin(&f, &l), 300);
        // Layer II is not layer III: no layout.
        let mut l2 = f.clone();
        l2[1] = 0xFD;
        assert!(Layout::of(&l2).is_none());
    }

    #[test]
    fn silence_clears_what_a_decoder_reads() {
        let mut f = frame(300, true, 7);
        let payload = f[38..].to_vec();
        assert!(silence(&mut f, 0));
        let l = Layout::of(&f).unwrap();
        assert_eq!(main_data_begin(&f, &l), 0);
        let mut g = frame(300, false, 7);
        assert!(silence(&mut g, 700));
        assert_eq!(
            main_data_begin(&g, &Layout::of(&g).unwrap()),
            511,
            "clamped to 9 bits"
        );
        // part2_3_length of granule 0 channel 0: after 9+3+8 bits.
        let mut side = f[6..38].to_vec();
        let mut b = Bits {
            buf: &mut side,
            pos: 20,
        };
        assert_eq!(b.read(12), 0);
        assert_eq!(b.read(9), 0);
        // Payload untouched, CRC valid.
        assert_eq!(&f[38..], &payload[..]);
        let crc = crc16(&f[2..4], &f[6..38]);
        assert_eq!(u16::from_be_bytes([f[4], f[5]]), crc);
    }

    #[test]
    fn crc16_known_value() {
        // CRC-16/IBM-3740-like MPEG check: "123456789" → 0xBB3D for poly 0x8005
        // with init 0xFFFF and no reflection is 0xAEE7.
        assert_eq!(crc16(b"1234", b"56789"), 0xAEE7);
    }

    #[test]
    fn lead_in_covers_the_reservoir() {
        let ring = Arc::new(Ring::new(32, 2881).unwrap());
        let mut w = RingWriter::new(ring.clone());
        // Frames 0..10: each borrows 500 bytes (more than one frame holds).
        w.publish(&frame(0, false, 0));
        for i in 1..10u8 {
            w.publish(&frame(500, false, i));
        }
        let mut out = Vec::new();
        let n = lead_in(&ring, 9, 0, &mut out).unwrap();
        // Frames 7 and 8 are sent whole; 7 borrows 500 bytes: two silenced
        // frames of 381 (5 and 6) carry 0 + 381, then 381 + 381 >= 500.
        assert_eq!(n, 4);
        assert_eq!(out.len(), 4 * 417);
        let silenced = &out[..417];
        assert_eq!(main_data_begin(silenced, &Layout::of(silenced).unwrap()), 0);
        assert_eq!(silenced[100], 5, "payload of frame 5 kept");
        let second = &out[417..2 * 417];
        assert_eq!(
            main_data_begin(second, &Layout::of(second).unwrap()),
            381,
            "carries the first one's bytes"
        );
        assert_eq!(
            &out[2 * 417..3 * 417],
            &frame(500, false, 7)[..],
            "X-2 is sent whole"
        );
        assert_eq!(
            &out[3 * 417..],
            &frame(500, false, 8)[..],
            "X-1 is sent whole"
        );
        // Not enough history above the floor: refused.
        assert_eq!(lead_in(&ring, 9, 6, &mut out), None);
        // A frame that borrows nothing needs no lead-in.
        assert_eq!(lead_in(&ring, 0, 0, &mut out), Some(0));
    }
}
