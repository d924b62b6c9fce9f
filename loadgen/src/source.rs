//! `loadgen source`: writes a paced test stream of [`crate::frame`] frames to a writer.
//!
//! Frame `k` is due at `start + k * frame_bytes / rate` seconds: deadlines are absolute,
//! so sleeping late never accumulates drift. A source that falls behind (its reader
//! stopped for a while) catches up by writing the late frames at once, like a live
//! encoder whose pipe buffered them. Each frame's send time is stamped just before it
//! is written.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::frame::{self, HEADER_LEN, MAX_FRAME_LEN};

/// What `loadgen source` writes.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Bytes per frame, header included (`HEADER_LEN ..= MAX_FRAME_LEN`).
    pub frame_bytes: usize,
    /// Stream bytes per second; 0 = as fast as the writer takes them.
    pub rate: u64,
    /// Written into every frame so clients can tell streams apart.
    pub stream_id: u32,
    /// Stop after this long (None = until the reader goes away).
    pub duration: Option<Duration>,
    /// Stop after this many frames (None = no limit).
    pub frames: Option<u64>,
    /// Bytes of stream header written once before the first frame, for servers run with
    /// `-header-bytes`. They never contain the magic.
    pub header_bytes: usize,
}

/// What a source run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceReport {
    /// Frames written completely.
    pub frames: u64,
    /// Bytes written, stream header included.
    pub bytes: u64,
}

impl SourceConfig {
    /// Checks the sizes; the error says which flag is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes < HEADER_LEN {
            return Err(format!(
                "--frame-bytes {} is too small: a loadgen frame needs at least {HEADER_LEN} bytes for its header",
                self.frame_bytes
            ));
        }
        if self.frame_bytes > MAX_FRAME_LEN {
            return Err(format!(
                "--frame-bytes {} is too large: at most {MAX_FRAME_LEN}",
                self.frame_bytes
            ));
        }
        Ok(())
    }
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The stream header: a repeated ASCII pattern (no 0x89 byte, so never the magic).
pub fn stream_header(n: usize) -> Vec<u8> {
    b"LOADGEN-STREAM-HEADER "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Writes the stream to `out` until the duration or frame count is reached, `stop` is
/// set, or `out` fails. A broken pipe or reset is returned as the error it is; the
/// caller decides that it means "the reader went away".
pub fn run<W: Write>(
    cfg: &SourceConfig,
    out: &mut W,
    stop: &AtomicBool,
) -> io::Result<SourceReport> {
    cfg.validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut report = SourceReport::default();
    let start = Instant::now();
    if cfg.header_bytes > 0 {
        out.write_all(&stream_header(cfg.header_bytes))?;
        out.flush()?;
        report.bytes += cfg.header_bytes as u64;
    }
    let mut buf = vec![0u8; cfg.frame_bytes];
    let end = cfg.duration.map(|d| start + d);
    let mut seq: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) || cfg.frames.is_some_and(|n| seq >= n) {
            break;
        }
        frame::fill(&mut buf, cfg.stream_id, seq);
        if cfg.rate > 0 {
            let due_ns =
                (seq as u128 * cfg.frame_bytes as u128 * 1_000_000_000u128) / cfg.rate as u128;
            let due = start + Duration::from_nanos(due_ns.min(u64::MAX as u128) as u64);
            if end.is_some_and(|e| due >= e) {
                break;
            }
            // Sleep in slices of at most 100 ms so `stop` is noticed promptly.
            loop {
                let now = Instant::now();
                if now >= due || stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(100)));
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        } else if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        frame::restamp(&mut buf, cfg.stream_id, seq, realtime_ns());
        out.write_all(&buf)?;
        out.flush()?;
        report.frames += 1;
        report.bytes += buf.len() as u64;
        seq += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(frame_bytes: usize, rate: u64) -> SourceConfig {
        SourceConfig {
            frame_bytes,
            rate,
            stream_id: 5,
            duration: None,
            frames: Some(10),
            header_bytes: 0,
        }
    }

    #[test]
    fn rejects_frames_smaller_than_the_header() {
        let e = cfg(39, 0).validate().unwrap_err();
        assert!(e.contains("at least 40"), "{e}");
        assert!(cfg(40, 0).validate().is_ok());
    }

    #[test]
    fn writes_checkable_frames_and_header() {
        let mut c = cfg(64, 0);
        c.header_bytes = 30;
        let mut out = Vec::new();
        let r = run(&c, &mut out, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.frames, 10);
        assert_eq!(out.len(), 30 + 640);
        assert!(!out[..30].contains(&0x89));
        for (i, f) in out[30..].chunks(64).enumerate() {
            let h = frame::verify(f).unwrap();
            assert_eq!((h.seq, h.stream_id), (i as u64, 5));
        }
    }

    #[test]
    fn paces_against_absolute_deadlines() {
        // 10 frames of 100 bytes at 10,000 B/s: frame 9 is due at 90 ms.
        let c = cfg(100, 10_000);
        let t = Instant::now();
        let mut out = Vec::new();
        run(&c, &mut out, &AtomicBool::new(false)).unwrap();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(89), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
    }

    #[test]
    fn duration_bounds_the_run() {
        let mut c = cfg(100, 1_000);
        c.frames = None;
        c.duration = Some(Duration::from_millis(350));
        let mut out = Vec::new();
        let r = run(&c, &mut out, &AtomicBool::new(false)).unwrap();
        // Frames due at 0, 100, 200, 300 ms.
        assert_eq!(r.frames, 4);
    }
}
