//! Clean MP3 joins and skips (issue 6, item 2): a listener that joins
//! mid-stream or is lapped and skips forward gets a bit-reservoir lead-in, so
//! real decoders report no error and every decoded frame after the lead-in is
//! identical to the decode of the whole stream.
//!
//! Needs lame, mpg123 and ffmpeg (installed by .ci/setup). Outside CI a missing
//! tool skips the test with a message; in CI it fails.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require_all, run, Ringcast, TempDir, WAIT};

/// The tools these tests run.
const TOOLS: &[&str] = &["lame", "mpg123", "ffmpeg"];

/// A LAME stream of a changing tone (the bit reservoir is in use on nearly
/// every frame), without ID3 tag or Info frame so frame i of the file is frame
/// i of the stream.
fn encode(dir: &Path, seconds: u32) -> PathBuf {
    let wav = dir.join("tone.wav");
    let mp3 = dir.join("tone.mp3");
    run(Command::new("ffmpeg").args(["-v", "error", "-y", "-f", "lavfi", "-i"]).arg(format!(
        "sine=frequency=440:duration={seconds},aeval=val(0)*(0.6+0.4*sin(2*PI*3*t))|val(0)*(0.6+0.4*cos(2*PI*5*t))"
    )).args(["-ar", "44100", "-ac", "2"]).arg(&wav));
    run(Command::new("lame")
        .args(["--quiet", "-b", "128", "-t", "--noreplaygain"])
        .arg(&wav)
        .arg(&mp3));
    mp3
}

/// Cut MPEG-1 layer III bytes into frames (whole frames only).
fn frames(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= data.len() {
        if data[i] != 0xFF || data[i + 1] & 0xE0 != 0xE0 {
            panic!("not at a frame boundary at byte {i}");
        }
        let br = [
            0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
        ][(data[i + 2] >> 4) as usize]
            * 1000;
        let sr = [44100, 48000, 32000][((data[i + 2] >> 2) & 3) as usize];
        let len = 144 * br / sr + ((data[i + 2] >> 1) & 1) as usize;
        if i + len > data.len() {
            break;
        }
        out.push(&data[i..i + len]);
        i += len;
    }
    out
}

/// Main data begins after header (4), no CRC, side info (32 for stereo).
fn payload(f: &[u8]) -> &[u8] {
    &f[36..]
}

/// Decode with mpg123 to raw 16-bit PCM, no gapless trimming; returns the
/// samples and the decoder's complaint lines.
fn mpg123_decode(file: &Path) -> (Vec<i16>, Vec<String>) {
    let out = Command::new("mpg123")
        .args(["--no-gapless", "-s"])
        .arg(file)
        .output()
        .expect("mpg123");
    let pcm = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let complaints = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            [
                "error",
                "warn",
                "illegal",
                "reservoir",
                "can't",
                "giving up",
                "junk",
                "bad ",
            ]
            .iter()
            .any(|w| l.contains(w))
        })
        .map(str::to_string)
        .collect();
    (pcm, complaints)
}

fn ffmpeg_errors(file: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(file)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Check a client's body against the original stream: every frame is either
/// an original frame or a silenced lead-in frame (original payload); decode
/// errors are zero; and every decoded frame after a lead-in (from the frame
/// following X-1) equals the reference decode of that frame. Returns (frames,
/// jumps, compared frames). A jump is a place where the received frames stop
/// following the original one after another: a lead-in (a clean skip or
/// join) or a discontinuity (a loop of the file, a new source session).
fn check_against_reference(
    dir: &Path,
    original: &[u8],
    body: &[u8],
    tag: &str,
) -> (usize, usize, usize) {
    let orig = frames(original);
    let got = frames(body);
    assert!(!got.is_empty());
    // Original frame index by whole bytes, and by payload (lead-in frames
    // keep their payload, their side info is rewritten).
    let by_bytes: HashMap<&[u8], usize> = orig.iter().enumerate().map(|(i, f)| (*f, i)).collect();
    let by_payload: HashMap<&[u8], usize> = orig
        .iter()
        .enumerate()
        .map(|(i, f)| (payload(f), i))
        .collect();
    // For each received frame: Some(original index) when it is that frame
    // unmodified, None for a silenced lead-in frame.
    let mut ids: Vec<Option<usize>> = Vec::new();
    for (k, f) in got.iter().enumerate() {
        if let Some(&i) = by_bytes.get(f) {
            ids.push(Some(i));
        } else {
            assert!(
                by_payload.contains_key(payload(f)),
                "{tag}: received frame {k} is neither an original frame nor a lead-in frame"
            );
            ids.push(None);
        }
    }
    eprintln!(
        "{tag}: first ids {:?} mdb {:?}",
        &ids[..ids.len().min(12)],
        got.iter()
            .take(12)
            .map(|f| ((f[4] as u16) << 1) | (f[5] as u16 >> 7))
            .collect::<Vec<_>>()
    );
    let file = dir.join(format!("{tag}.mp3"));
    std::fs::write(&file, body).unwrap();
    let (pcm, complaints) = mpg123_decode(&file);
    assert!(
        complaints.is_empty(),
        "{tag}: mpg123 reported: {complaints:?}"
    );
    let ff = ffmpeg_errors(&file);
    assert!(ff.is_empty(), "{tag}: ffmpeg reported: {ff:?}");
    let ref_file = dir.join("reference.mp3");
    if !ref_file.exists() {
        std::fs::write(&ref_file, original).unwrap();
    }
    let (reference, _) = mpg123_decode(&ref_file);
    const SAMPLES: usize = 1152 * 2; // stereo
    assert_eq!(
        pcm.len(),
        got.len() * SAMPLES,
        "{tag}: one decoded frame per frame"
    );
    let mut compared = 0;
    let mut jumps = 0;
    // Compare from the first lead-in on: a body that starts where the ring
    // no longer holds the frames its first frame borrows from (a writer far
    // faster than real time at the very start of a session) is allowed an
    // unclean start; every join or skip after that must be clean.
    let first_leadin = ids.iter().position(|i| i.is_none()).unwrap_or(ids.len());
    for k in first_leadin.max(1)..ids.len() {
        // A decoded frame depends on the two frames before it. A frame that
        // follows its own two predecessors must decode exactly as in the
        // whole stream: that includes the target X of every lead-in (X-2 and
        // X-1 are sent whole). Without a lead-in, X is decoded from a broken
        // reservoir and the frames up to X+2 inherit it and differ. Not
        // compared: silenced frames and the two whole lead-in frames.
        let (Some(prev), Some(cur)) = (ids[k - 1], ids[k]) else {
            if k > first_leadin && ids[k].is_none() && ids[k - 1].is_some() {
                jumps += 1;
            }
            continue;
        };
        if cur != prev + 1 {
            jumps += 1;
            continue;
        }
        // Near the start of the file (each loop is a new source session) a
        // skip may land where fewer than two frames of the session precede
        // it: the lead-in is shorter there, by design.
        if k < 2 || ids[k - 2] != Some(prev.wrapping_sub(1)) || prev < 4 {
            continue;
        }
        let want = &reference[cur * SAMPLES..(cur + 1) * SAMPLES];
        let have = &pcm[k * SAMPLES..(k + 1) * SAMPLES];
        assert_eq!(
            have, want,
            "{tag}: decoded frame {k} (original {cur}) differs from the reference"
        );
        compared += 1;
    }
    (got.len(), jumps, compared)
}

#[test]
fn mid_stream_join_decodes_cleanly() {
    if !require_all(TOOLS) {
        return;
    }
    let dir = TempDir::new("join");
    let mp3 = encode(dir.path(), 30);
    let original = std::fs::read(&mp3).unwrap();
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3", "-source-bandwidth", "32000"])
        .args(["-source-buffer", "128", "-flush-interval", "0"])
        .args(["-reopen=false", "-path"])
        .arg(&mp3)
        .start();
    // The first client starts the source; a second joins mid-stream.
    let mut first = server.get();
    first.read_body(20_000, WAIT);
    let mut joiner = server.get();
    let body = joiner.read_body(40 * 418, WAIT);
    let body = &body[..frames(&body).iter().map(|f| f.len()).sum::<usize>()];
    let (n, _, compared) = check_against_reference(dir.path(), &original, body, "join");
    assert!(n > 30);
    assert!(compared > 20, "only {compared} frames compared");
    // The joiner's first frame is a silenced lead-in frame: it did borrow.
    let f0 = frames(body)[0];
    assert_eq!(
        ((f0[4] as u16) << 1) | (f0[5] as u16 >> 7),
        0,
        "lead-in starts with main_data_begin 0"
    );
}

#[test]
fn forced_skips_decode_cleanly() {
    if !require_all(TOOLS) {
        return;
    }
    let dir = TempDir::new("skips");
    let mp3 = encode(dir.path(), 60);
    let original = std::fs::read(&mp3).unwrap();
    // Fast source (the file, looped by -reopen), small ring: a reader that
    // stalls until the kernel buffers are full is lapped at every stall.
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3", "-source-bandwidth", "4000000"])
        .args(["-source-buffer", "24", "-flush-interval", "0", "-path"])
        .arg(&mp3)
        .start();
    let mut c = server.get();
    // Body bytes that came with the response head first.
    let (mut body, _) = c.read_until_eof_or(Duration::from_millis(1));
    let mut chunk = vec![0u8; 1 << 20];
    c.stream.set_nonblocking(true).unwrap();
    // Three cycles: stall 1.5 s, then drain what is there for 0.5 s.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(2000));
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            match c.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
    drop(c);
    let end = server.wait_log(
        "the client's end line",
        |l| l.contains(" skipped reason="),
        WAIT,
    );
    let skipped: u64 = end
        .split(" + ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let whole: usize = frames(&body).iter().map(|f| f.len()).sum();
    let (n, jumps, compared) =
        check_against_reference(dir.path(), &original, &body[..whole], "skips");
    eprintln!("frames={n} skipped={skipped} jumps={jumps} compared={compared}");
    assert!(
        skipped > 0 && jumps >= 1,
        "the reader was not lapped enough: {end}"
    );
    assert!(compared > 10);
}
