//! The built-in demo stream: a test tone as a WAV stream, so `ringcast` run
//! from a terminal with no source serves something a browser can play.
//!
//! The tone is 16-bit mono PCM at 22,050 Hz (44,100 bytes/s): one second of
//! 440 Hz, one second of 660 Hz, in turn, paced in real time against absolute
//! deadlines. It is written by a thread into a pipe that the source thread reads
//! like any FIFO, so the demo goes through exactly the same path as a real
//! source (header capture, framing, ring, reopen).

use std::f64::consts::PI;
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Samples per second.
pub const SAMPLE_RATE: u32 = 22_050;
/// Bytes per second of the PCM payload.
pub const BYTE_RATE: u32 = SAMPLE_RATE * 2;
/// Bytes in one demo frame (100 ms of audio).
pub const FRAME_BYTES: usize = (BYTE_RATE / 10) as usize;
/// Size of the WAV header that starts the stream.
pub const HEADER_BYTES: usize = 44;
/// Content type of the demo stream.
pub const CONTENT_TYPE: &str = "audio/wav";

/// A canonical 44-byte WAV header for an endless 16-bit mono stream. The RIFF
/// and data sizes are set to their maximum, as streaming WAV servers do.
pub fn wav_header(sample_rate: u32) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    let byte_rate = sample_rate * 2;
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&0xFFFF_FFFFu32.wrapping_sub(8).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes()); // block align
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&0xFFFF_FFFFu32.wrapping_sub(44).to_le_bytes());
    h
}

/// Fill `out` with the PCM of demo frame `index` (FRAME_BYTES bytes).
pub fn tone_frame(index: u64, out: &mut Vec<u8>) {
    out.clear();
    let samples = FRAME_BYTES / 2;
    let first = index * samples as u64;
    for i in 0..samples as u64 {
        let t = first + i;
        let second = t / SAMPLE_RATE as u64;
        let freq = if second.is_multiple_of(2) {
            440.0
        } else {
            660.0
        };
        let phase = 2.0 * PI * freq * (t as f64) / SAMPLE_RATE as f64;
        let v = (phase.sin() * 8000.0) as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Start the demo generator; returns the read end of its pipe. The generator
/// thread ends by itself when the read end is closed (EPIPE).
pub fn spawn() -> io::Result<std::io::PipeReader> {
    let (reader, mut writer) = std::io::pipe()?;
    std::thread::Builder::new()
        .name("demo-tone".into())
        .spawn(move || {
            if writer.write_all(&wav_header(SAMPLE_RATE)).is_err() {
                return;
            }
            let start = Instant::now();
            let mut buf = Vec::with_capacity(FRAME_BYTES);
            for index in 0u64.. {
                let due = start + Duration::from_millis(100 * index);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                tone_frame(index, &mut buf);
                if writer.write_all(&buf).is_err() {
                    return;
                }
            }
        })?;
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_a_wav_header() {
        let h = wav_header(SAMPLE_RATE);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(&h[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 22_050);
        assert_eq!(&h[36..40], b"data");
    }

    #[test]
    fn frames_have_the_right_size_and_are_not_silent() {
        let mut f = Vec::new();
        tone_frame(3, &mut f);
        assert_eq!(f.len(), FRAME_BYTES);
        assert!(f
            .chunks(2)
            .any(|s| i16::from_le_bytes([s[0], s[1]]).abs() > 4000));
    }
}
