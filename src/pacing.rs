//! How long a frame plays: what paces a file read as a live stream
//! (`realtime = true`, e.g. a looped fallback file).
//!
//! A file is not paced by bytes per second (a VBR file would drift, and the
//! bytes of a tag or a header page play for no time) but by what each frame
//! holds: MPEG audio and AAC frames by their samples per frame and sample
//! rate, Ogg pages by the difference of their granule positions (at the
//! sample rate the stream's identification header gives: Vorbis, Opus —
//! always 48 kHz — or FLAC). Raw frames have no timing of their own; they are
//! paced by `source_bandwidth` when one is set.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::FramerKind;

/// Durations of the frames of one stream, in order.
#[derive(Debug)]
pub struct FrameClock {
    kind: FramerKind,
    /// Raw: bytes per second (0: no timing).
    byte_rate: u64,
    /// Ogg: sample rate by serial number (from the identification header).
    rates: HashMap<u32, u32>,
    /// Ogg: the last granule position seen by serial number.
    granules: HashMap<u32, u64>,
}

/// MPEG audio sample rates by version (index `(b1 >> 3) & 3`: 0 = 2.5,
/// 2 = 2, 3 = 1) and sample-rate index.
fn mpeg_rate(version: u8, index: u8) -> Option<u32> {
    let base = match index {
        0 => 44100,
        1 => 48000,
        2 => 32000,
        _ => return None,
    };
    match version {
        3 => Some(base),
        2 => Some(base / 2),
        0 => Some(base / 4),
        _ => None,
    }
}

/// ADTS sample rates by index.
const ADTS_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl FrameClock {
    /// The clock of a stream cut by `kind` (`byte_rate` paces raw frames).
    pub fn new(kind: FramerKind, byte_rate: u64) -> FrameClock {
        FrameClock {
            kind,
            byte_rate,
            rates: HashMap::new(),
            granules: HashMap::new(),
        }
    }

    /// Take the sample rates from a stream header (Ogg header pages).
    pub fn observe_header(&mut self, header: &[u8]) {
        if self.kind != FramerKind::Ogg {
            return;
        }
        let mut at = 0;
        while let Some((len, serial, body, granule)) = ogg_page(&header[at..]) {
            if let Some(rate) = ident_rate(body) {
                self.rates.insert(serial, rate);
                // A new logical stream starts its granules again.
                self.granules.insert(serial, granule.max(0) as u64);
            }
            at += len;
        }
    }

    /// How long `frame` plays.
    pub fn duration(&mut self, frame: &[u8]) -> Duration {
        match self.kind {
            FramerKind::Raw => {
                if self.byte_rate == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(frame.len() as f64 / self.byte_rate as f64)
                }
            }
            FramerKind::Mp3 => mp3_duration(frame).unwrap_or(Duration::ZERO),
            FramerKind::Aac => aac_duration(frame).unwrap_or(Duration::ZERO),
            FramerKind::Ogg => self.ogg_duration(frame),
        }
    }

    fn ogg_duration(&mut self, page: &[u8]) -> Duration {
        let Some((_, serial, body, granule)) = ogg_page(page) else {
            return Duration::ZERO;
        };
        if let Some(rate) = ident_rate(body) {
            // A header page that came as a frame.
            self.rates.insert(serial, rate);
            self.granules.insert(serial, 0);
            return Duration::ZERO;
        }
        // -1: no packet ends on this page.
        if granule < 0 {
            return Duration::ZERO;
        }
        let g = granule as u64;
        let Some(&rate) = self.rates.get(&serial) else {
            return Duration::ZERO;
        };
        let last = self.granules.insert(serial, g).unwrap_or(g);
        let samples = g.saturating_sub(last);
        Duration::from_secs_f64(samples as f64 / rate.max(1) as f64)
    }
}

/// Samples per frame and rate of an MPEG audio frame header.
pub fn mp3_duration(f: &[u8]) -> Option<Duration> {
    if f.len() < 4 || f[0] != 0xFF || f[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (f[1] >> 3) & 3;
    let layer = (f[1] >> 1) & 3;
    let rate = mpeg_rate(version, (f[2] >> 2) & 3)?;
    let samples = match (layer, version) {
        (3, _) => 384,  // layer I
        (2, _) => 1152, // layer II
        (1, 3) => 1152, // layer III, MPEG-1
        (1, _) => 576,  // layer III, MPEG-2 / 2.5
        _ => return None,
    };
    Some(Duration::from_secs_f64(samples as f64 / rate as f64))
}

/// Samples per frame (1024 per raw data block) and rate of an ADTS frame.
pub fn aac_duration(f: &[u8]) -> Option<Duration> {
    if f.len() < 7 || f[0] != 0xFF || f[1] & 0xF0 != 0xF0 {
        return None;
    }
    let rate = *ADTS_RATES.get(((f[2] >> 2) & 0xF) as usize)?;
    let blocks = u64::from(f[6] & 3) + 1;
    Some(Duration::from_secs_f64(
        (1024 * blocks) as f64 / rate as f64,
    ))
}

/// One Ogg page at the start of `b`: (its length, serial, body, granule).
fn ogg_page(b: &[u8]) -> Option<(usize, u32, &[u8], i64)> {
    if b.len() < 27 || &b[..4] != b"OggS" {
        return None;
    }
    let segments = b[26] as usize;
    if b.len() < 27 + segments {
        return None;
    }
    let body_len: usize = b[27..27 + segments].iter().map(|&x| x as usize).sum();
    let len = 27 + segments + body_len;
    if b.len() < len {
        return None;
    }
    let granule = i64::from_le_bytes(b[6..14].try_into().ok()?);
    let serial = u32::from_le_bytes(b[14..18].try_into().ok()?);
    Some((len, serial, &b[27 + segments..len], granule))
}

/// The sample rate an identification header packet gives.
fn ident_rate(body: &[u8]) -> Option<u32> {
    if body.len() >= 16 && &body[..7] == b"\x01vorbis" {
        return Some(u32::from_le_bytes(body[12..16].try_into().ok()?));
    }
    if body.starts_with(b"OpusHead") {
        // Opus granules are always at 48 kHz.
        return Some(48000);
    }
    if body.len() >= 30 && &body[..5] == b"\x7FFLAC" {
        // STREAMINFO after the 13-byte Ogg FLAC mapping header and the
        // 4-byte metadata block header: the rate is 20 bits at byte 10 of it.
        let si = &body[17..];
        let rate = (u32::from(si[10]) << 12) | (u32::from(si[11]) << 4) | (u32::from(si[12]) >> 4);
        return (rate > 0).then_some(rate);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn mpeg_frames_play_for_their_samples() {
        // MPEG-1 layer III 44.1 kHz: 1152 samples = 26.12 ms.
        let d = mp3_duration(&[0xFF, 0xFB, 0x90, 0x64]).unwrap();
        assert!((ms(d) - 26.122).abs() < 0.01, "{d:?}");
        // MPEG-2 layer III 24 kHz: 576 samples = 24 ms.
        let d = mp3_duration(&[0xFF, 0xF3, 0x84, 0x00]).unwrap();
        assert!((ms(d) - 24.0).abs() < 0.01, "{d:?}");
        // Layer I 48 kHz: 384 samples = 8 ms.
        let d = mp3_duration(&[0xFF, 0xFF, 0x94, 0x00]).unwrap();
        assert!((ms(d) - 8.0).abs() < 0.01, "{d:?}");
        assert!(mp3_duration(b"ID3").is_none());
    }

    #[test]
    fn adts_frames_play_1024_samples_per_block() {
        // 44.1 kHz (index 4), one block.
        let f = [0xFF, 0xF1, 0x50, 0x80, 0x00, 0x1F, 0xFC];
        assert!((ms(aac_duration(&f).unwrap()) - 23.22).abs() < 0.01);
        let mut two = f;
        two[6] = 0xFD;
        assert!((ms(aac_duration(&two).unwrap()) - 46.44).abs() < 0.02);
    }

    fn page(serial: u32, granule: i64, body: &[u8]) -> Vec<u8> {
        let mut p = b"OggS\0\0".to_vec();
        p.extend_from_slice(&granule.to_le_bytes());
        p.extend_from_slice(&serial.to_le_bytes());
        p.extend_from_slice(&[0; 8]); // sequence, CRC (not checked here)
        p.push(1);
        p.push(body.len() as u8);
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ogg_pages_play_for_their_granule_difference() {
        let mut ident = b"\x01vorbis\0\0\0\0\x02".to_vec();
        ident.extend_from_slice(&44100u32.to_le_bytes());
        ident.extend_from_slice(&[0; 14]);
        let mut c = FrameClock::new(FramerKind::Ogg, 0);
        c.observe_header(&page(7, 0, &ident));
        assert_eq!(
            c.duration(&page(7, 44100, b"audio")),
            Duration::from_secs(1)
        );
        assert_eq!(c.duration(&page(7, -1, b"cont")), Duration::ZERO);
        assert_eq!(
            c.duration(&page(7, 66150, b"audio")),
            Duration::from_millis(500)
        );
        // Opus: 48 kHz whatever the input rate.
        let mut o = FrameClock::new(FramerKind::Ogg, 0);
        o.observe_header(&page(9, 0, b"OpusHead\x01\x02\0\0\x80\xbb\0\0\0\0\0"));
        assert_eq!(o.duration(&page(9, 960, b"x")), Duration::from_millis(20));
        // An unknown serial has no timing.
        assert_eq!(o.duration(&page(10, 960, b"x")), Duration::ZERO);
    }

    #[test]
    fn raw_frames_by_bandwidth() {
        let mut c = FrameClock::new(FramerKind::Raw, 1000);
        assert_eq!(c.duration(&[0; 250]), Duration::from_millis(250));
        let mut none = FrameClock::new(FramerKind::Raw, 0);
        assert_eq!(none.duration(&[0; 250]), Duration::ZERO);
    }
}
