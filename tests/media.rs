//! Real media, real players (issue 6, items 1, 4, 5 and 6): streams made by
//! real encoders (ffmpeg's libmp3lame, aac, libvorbis and libopus; Debian's
//! lame) from a generated tone, served by the real `ringcast` binary, read by
//! a listener that joins mid-stream, then identified by `ffprobe` and decoded
//! whole by `ffmpeg` (and `mpg123` for MP3) with their error output counted;
//! and headless Chromium playing an MP3 stream in an `<audio>` element.
//!
//! Each test needs its tools (installed by `.ci/setup`). Outside CI a missing
//! tool skips the test with a printed reason; with `CI` set it fails
//! (`common::require`).
//!
//! The bodies are also checked structurally with ringcast's own parsers:
//! whole frames (or Ogg pages with good CRCs) from the first byte, no tag and
//! no Xing/Info frame anywhere.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{require_all, run, Ringcast, Server, TempDir};
use ringcast::framing::{adts_frame_len, is_info_frame, mp3_frame_len, ogg_crc};

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

/// The ffmpeg input arguments of a generated tone of `seconds` (0: an hour).
fn tone(seconds: u32) -> Vec<String> {
    let d = if seconds == 0 { 3600 } else { seconds };
    ["-f", "lavfi", "-i"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("sine=frequency=440:beep_factor=4:duration={d}")])
        .collect()
}

/// The source command of a live ffmpeg encoder (`-re`: real time) of the
/// tone with these output arguments.
fn live_encoder(output: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["ffmpeg", "-nostdin", "-v", "error", "-re"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(tone(0));
    // Write each packet out at once (ffmpeg otherwise holds up to 32 KiB,
    // which for Ogg is several seconds of pages).
    a.extend(["-flush_packets".to_string(), "1".to_string()]);
    a.extend(output.iter().map(|s| s.to_string()));
    a.push("-".into());
    a
}

/// What `ffprobe` says the first audio stream of `path` is.
fn ffprobe_codec(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0"])
        .args(["-show_entries", "stream=codec_name"])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A whole decode by ffmpeg: its error lines and the seconds of audio out.
struct Decode {
    errors: Vec<String>,
    seconds: f64,
}

/// Decode all of `path` with ffmpeg (errors only on stderr), to 8 kHz mono
/// 16-bit samples, counted.
fn ffmpeg_decode(path: &Path) -> Decode {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
        .output()
        .expect("run ffmpeg");
    Decode {
        errors: lines(&out.stderr),
        seconds: out.stdout.len() as f64 / 16000.0,
    }
}

/// mpg123's complaints about `path` (it prints errors and warnings to
/// stderr with its banner; `-q` would hide them).
fn mpg123_errors(path: &Path) -> Vec<String> {
    let out = Command::new("mpg123")
        .arg("-t")
        .arg(path)
        .output()
        .expect("run mpg123");
    lines(&out.stderr)
        .into_iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("warning") || l.contains("illegal")
        })
        .collect()
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

/// Connect (HTTP/1.0: the body runs until the connection closes), check the
/// response head, and read the body for `secs` seconds.
fn listen(addr: SocketAddr, secs: f64) -> Vec<u8> {
    let mut c = common::Client::request(addr, "GET / HTTP/1.0\r\n\r\n");
    assert!(
        c.status_line().contains(" 200 "),
        "status {:?}",
        c.status_line()
    );
    c.read_until_eof_or(Duration::from_secs_f64(secs)).0
}

/// A listener reading in the background (it connects before this returns).
fn listen_in_background(addr: SocketAddr, secs: f64) -> JoinHandle<Vec<u8>> {
    let mut c = common::Client::request(addr, "GET / HTTP/1.0\r\n\r\n");
    std::thread::spawn(move || c.read_until_eof_or(Duration::from_secs_f64(secs)).0)
}

/// Wait until the source has produced audio for a while (`settle`), so that
/// the next listener joins mid-stream.
fn let_the_source_run(server: &Server, settle: Duration) {
    server.wait_log(
        "source opened",
        |l| l.contains("source opened"),
        common::WAIT,
    );
    std::thread::sleep(settle);
}

fn save(dir: &TempDir, name: &str, body: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write body");
    p
}

// ---------------------------------------------------------------------------
// Structure checks (ringcast's own parsers)
// ---------------------------------------------------------------------------

/// The lengths of the whole frames `body` is made of, from its first byte;
/// a final partial frame (the read stopped mid-frame) is allowed.
fn whole_frames(body: &[u8], len_at: impl Fn(&[u8]) -> Option<usize>) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < body.len() {
        let Some(len) = len_at(&body[at..]) else {
            if body.len() - at < 16 {
                break; // too short to tell: a partial header at the end
            }
            panic!(
                "no frame at byte {at} of {} (after {} frames): {:02x?}",
                body.len(),
                out.len(),
                &body[at..(at + 16).min(body.len())]
            );
        };
        if at + len > body.len() {
            break; // the partial frame at the end
        }
        out.push(len);
        at += len;
    }
    out
}

fn mp3_len(b: &[u8]) -> Option<usize> {
    mp3_frame_len(b.get(..4)?.try_into().ok()?)
}

fn adts_len(b: &[u8]) -> Option<usize> {
    adts_frame_len(b.get(..7)?.try_into().ok()?)
}

/// Check an MP3 body: whole frames from the first byte, none of them a
/// Xing/Info/VBRI frame (so no tag either: a tag is not a frame).
fn check_mp3_body(body: &[u8], who: &str) -> usize {
    let frames = whole_frames(body, mp3_len);
    let mut at = 0;
    for len in &frames {
        assert!(
            !is_info_frame(&body[at..at + len]),
            "{who}: an Info/Xing frame at byte {at}"
        );
        at += len;
    }
    assert!(frames.len() > 20, "{who}: only {} frames", frames.len());
    frames.len()
}

/// One Ogg page at the start of `b`: (length, beginning of stream, granule
/// position); panics on a bad CRC.
fn ogg_page(b: &[u8]) -> Option<(usize, bool, i64)> {
    if b.len() < 27 || &b[..4] != b"OggS" {
        return None;
    }
    let segs = usize::from(b[26]);
    let lacing = b.get(27..27 + segs)?;
    let len = 27 + segs + lacing.iter().map(|l| usize::from(*l)).sum::<usize>();
    let page = b.get(..len)?;
    let stored = u32::from_le_bytes([b[22], b[23], b[24], b[25]]);
    assert_eq!(ogg_crc(page), stored, "bad CRC in a page");
    let granule = i64::from_le_bytes(b[6..14].try_into().unwrap());
    Some((len, b[5] & 2 != 0, granule))
}

/// Check an Ogg body: whole pages with good CRCs from the first byte, the
/// first a beginning-of-stream page, no other BOS page. Returns the header
/// (the leading pages with granule position 0, as the listener got them)
/// and the number of pages.
fn check_ogg_body(body: &[u8], who: &str) -> (Vec<u8>, usize) {
    let mut at = 0;
    let mut pages = Vec::new();
    while at < body.len() {
        match ogg_page(&body[at..]) {
            Some((len, bos, granule)) => {
                pages.push((len, bos, granule));
                at += len;
            }
            // A partial page where the read stopped.
            None if body[at..].starts_with(&b"OggS"[..(body.len() - at).min(4)]) => break,
            None => panic!("{who}: no Ogg page at byte {at} of {}", body.len()),
        }
    }
    assert!(pages.len() > 3, "{who}: only {} pages", pages.len());
    assert!(pages[0].1, "{who}: the first page is not a BOS page");
    assert!(
        pages[1..].iter().all(|p| !p.1),
        "{who}: a BOS page after the first"
    );
    let header: usize = pages.iter().take_while(|p| p.2 == 0).map(|p| p.0).sum();
    (body[..header].to_vec(), pages.len())
}

// ---------------------------------------------------------------------------
// MP3
// ---------------------------------------------------------------------------

/// An APEv2 tag (header, one item, footer), as taggers put before ID3v1.
fn ape_tag() -> Vec<u8> {
    let mut item = 6u32.to_le_bytes().to_vec();
    item.extend(0u32.to_le_bytes());
    item.extend(b"Title\0ringca");
    let size = (item.len() + 32) as u32;
    let part = |header: bool| {
        let mut v = b"APETAGEX".to_vec();
        v.extend(2000u32.to_le_bytes());
        v.extend(size.to_le_bytes());
        v.extend(1u32.to_le_bytes());
        let flags = 0x8000_0000u32 | if header { 1 << 29 } else { 0 };
        v.extend(flags.to_le_bytes());
        v.extend([0; 8]);
        v
    };
    [part(true), item, part(false)].concat()
}

/// A file as found in the wild: LAME's ID3v2 tag, its Xing/Info frame, the
/// audio, an APEv2 tag and LAME's ID3v1 tag at the end; served looped (the
/// source reopens at its end, so every tag is met again at each open) to a
/// listener from the start and one that joins mid-stream. No tag and no
/// Info frame reaches either; nothing is counted as garbage; both decode.
#[test]
fn mp3_file_with_tags_looped() {
    if !require_all(&["ffmpeg", "ffprobe", "lame", "mpg123"]) {
        return;
    }
    let dir = TempDir::new("mp3-tags");
    let wav = dir.join("tone.wav");
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(tone(3))
        .args(["-ac", "2"])
        .arg(&wav));
    let lamed = dir.join("lame.mp3");
    run(Command::new("lame")
        .args(["--silent", "-b", "128", "--add-id3v2"])
        .args(["--tt", "ringcast test tone", "--ta", "ringcast"])
        .arg(&wav)
        .arg(&lamed));
    let mut file = std::fs::read(&lamed).unwrap();
    assert!(file.starts_with(b"ID3"), "lame wrote no ID3v2 tag");
    let id3v1 = file.split_off(file.len() - 128);
    assert!(id3v1.starts_with(b"TAG"), "lame wrote no ID3v1 tag");
    assert!(
        file.windows(4)
            .take(2000)
            .any(|w| w == b"Info" || w == b"Xing"),
        "lame wrote no Info/Xing frame"
    );
    file.extend(ape_tag());
    file.extend(id3v1);
    let path = dir.join("tagged.mp3");
    std::fs::write(&path, &file).unwrap();

    // 128 kbit/s: paced at its own rate, a loop lasts 3 seconds.
    let server = Ringcast::new()
        .args([
            "-frame-filter",
            "mp3",
            "-source-bandwidth",
            "16000",
            "-path",
        ])
        .arg(&path)
        .start();
    let first = listen_in_background(server.addr, 8.0);
    // Join in the middle of the second loop.
    let_the_source_run(&server, Duration::from_millis(4000));
    let joiner = listen(server.addr, 3.5);
    let first = first.join().unwrap();

    // Each open skips both ID3 tags and the APE tag and drops the Info
    // frame, and counts nothing as garbage.
    let line = server.wait_log(
        "source framer (after the first loop)",
        |l| l.contains("source framer "),
        common::WAIT,
    );
    for want in ["tags=3 ", "info_frames=1 ", "invalid_bytes=0 "] {
        assert!(line.contains(want), "{want} not in {line:?}");
    }
    let opens = server.logs.count(|l| l.contains("source opened"));
    assert!(opens >= 2, "the file was not looped: {opens} opens");

    let first_frames = check_mp3_body(&first, "listener from the start");
    let joiner_frames = check_mp3_body(&joiner, "joiner");
    eprintln!("mp3 file: listener from the start {first_frames} frames, joiner {joiner_frames}");

    let f = save(&dir, "first.mp3", &first);
    let j = save(&dir, "joiner.mp3", &joiner);
    for (p, who) in [(&f, "from the start"), (&j, "joiner")] {
        assert_eq!(ffprobe_codec(p), "mp3", "{who}");
        let d = ffmpeg_decode(p);
        eprintln!(
            "mp3 file {who}: ffmpeg {:.2}s decoded, {} error lines {:?}",
            d.seconds,
            d.errors.len(),
            d.errors
        );
        assert!(d.errors.is_empty(), "{who}: ffmpeg errors {:?}", d.errors);
        assert!(d.seconds > 2.0, "{who}: only {:.2}s decoded", d.seconds);
    }
    // From the start (across the reopens: each session begins with a frame
    // that borrows nothing) mpg123 is clean.
    let e = mpg123_errors(&f);
    eprintln!("mp3 file from the start: mpg123 {} errors {e:?}", e.len());
    assert!(e.is_empty(), "mpg123 errors from the start: {e:?}");
    // The joiner starts with a bit-reservoir lead-in (src/reservoir.rs).
    let e = mpg123_errors(&j);
    eprintln!("mp3 file joiner: mpg123 {} errors {e:?}", e.len());
    assert!(e.is_empty(), "mpg123 errors for the joiner: {e:?}");
}

/// A live MP3 encoder (ffmpeg, libmp3lame, -re) and a listener that joins
/// mid-stream.
///
/// A listener that joins at frame X would miss the bytes X borrows from
/// earlier frames (the bit reservoir); the lead-in of `src/reservoir.rs`
/// carries them, so neither decoder reports an error (frame-exact decoding is
/// checked in `tests/skips.rs`).
#[test]
fn mp3_live_encoder_joiner() {
    if !require_all(&["ffmpeg", "ffprobe", "mpg123"]) {
        return;
    }
    let dir = TempDir::new("mp3-live");
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3", "-content-type", "audio/mpeg"])
        .source_exec(live_encoder(&[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-f",
            "mp3",
        ]))
        .start();
    let first = listen_in_background(server.addr, 6.0);
    let_the_source_run(&server, Duration::from_millis(2000));
    let joiner = listen(server.addr, 3.5);
    let first = first.join().unwrap();
    check_mp3_body(&first, "listener from the start");
    check_mp3_body(&joiner, "joiner");
    let f = save(&dir, "first.mp3", &first);
    let j = save(&dir, "joiner.mp3", &joiner);
    for (p, who) in [(&f, "from the start"), (&j, "joiner")] {
        assert_eq!(ffprobe_codec(p), "mp3", "{who}");
        let d = ffmpeg_decode(p);
        let m = mpg123_errors(p);
        eprintln!(
            "mp3 live {who}: ffmpeg {:.2}s decoded, {} errors {:?}; mpg123 {} errors {m:?}",
            d.seconds,
            d.errors.len(),
            d.errors,
            m.len()
        );
        assert!(d.errors.is_empty(), "{who}: ffmpeg errors {:?}", d.errors);
        assert!(d.seconds > 2.0, "{who}: only {:.2}s decoded", d.seconds);
        if p == &f {
            assert!(m.is_empty(), "mpg123 errors from the start: {m:?}");
        } else {
            assert!(m.is_empty(), "mpg123 errors for the joiner: {m:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// AAC
// ---------------------------------------------------------------------------

/// A live AAC encoder (ffmpeg's aac, ADTS) and a listener that joins
/// mid-stream: whole ADTS frames from its first byte, identified as AAC,
/// decoded without error.
#[test]
fn aac_live_encoder_joiner() {
    if !require_all(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = TempDir::new("aac-live");
    let server = Ringcast::new()
        .args(["-frame-filter", "aac"])
        .source_exec(live_encoder(&["-c:a", "aac", "-b:a", "96k", "-f", "adts"]))
        .start();
    let first = listen_in_background(server.addr, 6.0);
    let_the_source_run(&server, Duration::from_millis(2000));
    let joiner = listen(server.addr, 3.5);
    let first = first.join().unwrap();
    for (body, who) in [(&first, "from the start"), (&joiner, "joiner")] {
        let frames = whole_frames(body, adts_len);
        assert!(frames.len() > 40, "{who}: only {} frames", frames.len());
        let p = save(&dir, &format!("{}.aac", who.replace(' ', "-")), body);
        assert_eq!(ffprobe_codec(&p), "aac", "{who}");
        let d = ffmpeg_decode(&p);
        eprintln!(
            "aac {who}: {} frames, ffmpeg {:.2}s decoded, {} errors {:?}",
            frames.len(),
            d.seconds,
            d.errors.len(),
            d.errors
        );
        assert!(d.errors.is_empty(), "{who}: ffmpeg errors {:?}", d.errors);
        assert!(d.seconds > 2.0, "{who}: only {:.2}s decoded", d.seconds);
    }
}

// ---------------------------------------------------------------------------
// Ogg
// ---------------------------------------------------------------------------

/// A live Ogg encoder and a listener that joins mid-stream: it gets the
/// header pages (the same bytes a listener from the start got), then whole
/// pages from a page boundary; ffprobe names the codec and ffmpeg decodes it
/// all without an error (the page sequence numbers and granule positions
/// jump after the header, which decoders accept).
fn ogg_joiner(codec: &str, encoder: &[&str]) {
    if !require_all(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = TempDir::new(codec);
    let server = Ringcast::new()
        .args(["-frame-filter", "ogg"])
        .source_exec(live_encoder(encoder))
        .start();
    let first = listen_in_background(server.addr, 7.0);
    let_the_source_run(&server, Duration::from_millis(2500));
    let joiner = listen(server.addr, 4.0);
    let first = first.join().unwrap();
    let (first_header, first_pages) = check_ogg_body(&first, "from the start");
    let (joiner_header, joiner_pages) = check_ogg_body(&joiner, "joiner");
    assert_eq!(
        joiner_header, first_header,
        "the joiner did not get the stream's header pages"
    );
    // The joiner starts later in the stream: its first audio page is not
    // the first listener's.
    assert_ne!(
        joiner[joiner_header.len()..joiner_header.len() + 40],
        first[first_header.len()..first_header.len() + 40],
        "the joiner started at the stream's start, not mid-stream"
    );
    for (body, who, pages) in [
        (&first, "from the start", first_pages),
        (&joiner, "joiner", joiner_pages),
    ] {
        let p = save(&dir, &format!("{}.ogg", who.replace(' ', "-")), body);
        assert_eq!(ffprobe_codec(&p), codec, "{who}");
        let d = ffmpeg_decode(&p);
        eprintln!(
            "{codec} {who}: {pages} pages, ffmpeg {:.2}s decoded, {} errors {:?}",
            d.seconds,
            d.errors.len(),
            d.errors
        );
        assert!(d.errors.is_empty(), "{who}: ffmpeg errors {:?}", d.errors);
        assert!(d.seconds > 1.0, "{who}: only {:.2}s decoded", d.seconds);
    }
}

#[test]
fn ogg_vorbis_live_encoder_joiner() {
    // Vorbis: identification, comment and setup headers.
    ogg_joiner(
        "vorbis",
        &["-c:a", "libvorbis", "-page_duration", "250000", "-f", "ogg"],
    );
}

#[test]
fn ogg_opus_live_encoder_joiner() {
    // Opus: OpusHead, then OpusTags.
    ogg_joiner(
        "opus",
        &[
            "-c:a",
            "libopus",
            "-b:a",
            "64k",
            "-page_duration",
            "250000",
            "-f",
            "ogg",
        ],
    );
}

/// The source command that produces a chained stream across reopens: its first run
/// encodes 2 seconds of Vorbis, every later run Opus.
fn chained_source(dir: &TempDir) -> Vec<String> {
    chained_source_with(dir, "libopus")
}

/// A source that is Vorbis for 2 s, then (after the reopen) `second` codec.
fn chained_source_with(dir: &TempDir, second: &str) -> Vec<String> {
    let flag = dir.join("ran-once");
    let script = format!(
        "if [ -e '{flag}' ]; then exec ffmpeg -nostdin -v error -re {tone} -flush_packets 1 -c:a {second} -page_duration 250000 -f ogg -; \
         else touch '{flag}'; exec ffmpeg -nostdin -v error -re {short} -flush_packets 1 -c:a libvorbis -page_duration 250000 -f ogg -; fi",
        flag = flag.display(),
        tone = tone(0).join(" "),
        short = tone(2).join(" "),
    );
    vec!["sh".into(), "-c".into(), script]
}

/// A new logical stream (a chained Ogg stream after a source reopen, here
/// from Vorbis to Opus) replaces the header: a listener that joins after it
/// gets the Opus header pages, not the Vorbis ones, and decodes cleanly.
#[test]
fn ogg_new_link_replaces_the_header_for_joiners() {
    if !require_all(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = TempDir::new("ogg-chain");
    let server = Ringcast::new()
        .args(["-frame-filter", "ogg"])
        .source_exec(chained_source(&dir))
        .start();
    let first = listen_in_background(server.addr, 3.0);
    server.wait_log_nth(
        "the second source open",
        2,
        |l| l.contains("source opened"),
        common::WAIT,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let joiner = listen(server.addr, 3.0);
    let first = first.join().unwrap();
    let p = save(&dir, "first.ogg", &first);
    assert_eq!(ffprobe_codec(&p), "vorbis", "the first link");
    check_ogg_body(&joiner, "joiner after the chain");
    // The BOS page has one segment: its packet starts at byte 28.
    assert!(
        joiner[28..].starts_with(b"OpusHead"),
        "the joiner's first page is not Opus's"
    );
    let j = save(&dir, "joiner.ogg", &joiner);
    assert_eq!(ffprobe_codec(&j), "opus", "the joiner after the chain");
    let d = ffmpeg_decode(&j);
    eprintln!(
        "ogg chain joiner: ffmpeg {:.2}s decoded, {} errors {:?}",
        d.seconds,
        d.errors.len(),
        d.errors
    );
    assert!(d.errors.is_empty(), "ffmpeg errors {:?}", d.errors);
    assert!(d.seconds > 1.0, "only {:.2}s decoded", d.seconds);
}

/// A listener connected across the chain boundary needs the new link's
/// header pages in-band: the framer emits them as a stream header (not as
/// frames, so joiners do not get them twice), and the client sends a
/// connected listener the new header before the first page of the new link
/// (as Icecast does). Vorbis to Vorbis (a new serial number): FFmpeg's Ogg
/// demuxer decodes across such a chain, but not across a codec change
/// ("failed to create or replace stream"), so the codec change is checked on
/// the bytes only.
#[test]
fn ogg_connected_listener_gets_the_new_header_at_a_chain() {
    if !require_all(&["ffmpeg", "ffprobe"]) {
        return;
    }
    for (second, marker) in [
        ("libvorbis", &b"\x01vorbis"[..]),
        ("libopus", &b"OpusHead"[..]),
    ] {
        let dir = TempDir::new("ogg-chain-connected");
        let server = Ringcast::new()
            .args(["-frame-filter", "ogg"])
            .source_exec(chained_source_with(&dir, second))
            .start();
        let body = listen(server.addr, 6.0);
        // Whole pages with good CRCs; exactly two beginning-of-stream pages:
        // the first link's and, in-band, the second link's.
        let (mut at, mut bos) = (0, 0);
        while let Some((len, is_bos, _)) = ogg_page(&body[at..]) {
            bos += usize::from(is_bos);
            at += len;
        }
        assert!(
            body.len() - at < 65536,
            "{second}: not whole pages (stopped at {at} of {})",
            body.len()
        );
        assert_eq!(bos, 2, "{second}: BOS pages");
        let heads = body.windows(marker.len()).filter(|w| *w == marker).count();
        let expected = if second == "libvorbis" { 2 } else { 1 };
        assert_eq!(
            heads, expected,
            "{second}: the new link's header pages were not sent in-band"
        );
        if second == "libvorbis" {
            let p = save(&dir, "across.ogg", &body);
            let d = ffmpeg_decode(&p);
            assert!(d.errors.is_empty(), "ffmpeg errors {:?}", d.errors);
            assert!(d.seconds > 4.0, "only {:.2}s decoded", d.seconds);
        }
    }
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

/// A tiny HTTP server for the test page: `/` is the page, `/report?...` is
/// how the page reports the player's state (recorded).
struct PageServer {
    addr: SocketAddr,
    reports: Arc<Mutex<Vec<(Instant, String)>>>,
}

fn page_server(page: String) -> PageServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind page server");
    let addr = listener.local_addr().unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(match conn.try_clone() {
                Ok(c) => c,
                Err(_) => continue,
            });
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Drain the head.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let target = request_line.split_whitespace().nth(1).unwrap_or("/");
            let response = if let Some(q) = target.strip_prefix("/report?") {
                r.lock().unwrap().push((Instant::now(), q.to_string()));
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
            } else if target == "/" {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = conn.write_all(response.as_bytes());
        }
    });
    PageServer { addr, reports }
}

/// The value of `key` in a report's query string.
fn query_value<'a>(q: &'a str, key: &str) -> Option<&'a str> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A process group we started, ended (TERM, then KILL) when dropped.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // The child leads its own process group (process_group(0)): end
        // that group, which this test made, by its id.
        let group = format!("-{}", self.0.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.0.wait();
    }
}

/// Headless Chromium plays a live MP3 stream from ringcast in a plain
/// `<audio autoplay>` element, and its `currentTime` advances. The page
/// reports the player's state to the test a few times a second. Chromium
/// is kept off the network and off the sound hardware
/// (`--disable-audio-output` gives it a fake audio sink, without which a
/// machine with no sound card never starts playing).
#[test]
fn chromium_plays_an_mp3_stream() {
    if !require_all(&["chromium", "ffmpeg"]) {
        return;
    }
    chromium_first_audio(&[]);
}

/// Fast start (`-burst-ms`): Chromium starts playing sooner. The figures go
/// to the closing note; the assertion is only that the burst is not slower.
/// Run with `cargo test --test media -- --ignored --nocapture burst`.
#[test]
#[ignore = "a measurement (about 40 s); run by hand"]
fn chromium_time_to_first_audio_with_and_without_burst() {
    if !require_all(&["chromium", "ffmpeg"]) {
        return;
    }
    let mut plain = Vec::new();
    let mut burst = Vec::new();
    for _ in 0..3 {
        plain.push(chromium_first_audio(&[]));
        burst.push(chromium_first_audio(&["-burst-ms", "3000"]));
    }
    plain.sort();
    burst.sort();
    eprintln!("time to first audio (median of 3): without burst {:?}, with -burst-ms 3000 {:?} (all: {plain:?} / {burst:?})", plain[1], burst[1]);
    assert!(burst[1] <= plain[1]);
}

/// Play a live MP3 stream (served with `extra` flags) in headless Chromium
/// until currentTime passes 2 s; returns the time from the page's first report
/// (its script running) to the first report with currentTime > 0.
fn chromium_first_audio(extra: &[&str]) -> Duration {
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3", "-content-type", "audio/mpeg"])
        .args(extra)
        .source_exec(live_encoder(&[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-f",
            "mp3",
        ]))
        .start();
    // A first listener starts the encoder; let it run so there is a buffer
    // to burst from.
    let _first = listen_in_background(server.addr, 20.0);
    let_the_source_run(&server, Duration::from_millis(3000));
    let stream = format!("http://{}/", server.addr);
    let page = format!(
        r#"<!doctype html><html><head><title>ringcast test</title></head><body>
<audio id="a" autoplay src="{stream}"></audio>
<script>
var a = document.getElementById('a');
var played = '';
a.play().then(function () {{ played = 'ok'; }}, function (e) {{ played = e.name; }});
setInterval(function () {{
  fetch('/report?t=' + a.currentTime + '&paused=' + a.paused + '&ready=' + a.readyState +
        '&error=' + (a.error ? a.error.code : 0) + '&play=' + played).catch(function () {{}});
}}, 200);
</script></body></html>"#
    );
    let pages = page_server(page);
    let profile = TempDir::new("chromium-profile");
    let started = Instant::now();
    let chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-audio-output",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--metrics-recording-only",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{}/", pages.addr))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let _chromium = Group(chromium);

    // Wait for currentTime to pass 2 s (the stream plays in real time).
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut first_audio: Option<Duration> = None;
    let mut first_report: Option<Instant> = None;
    let mut last = String::new();
    let mut best = 0.0f64;
    while Instant::now() < deadline && best < 2.0 {
        std::thread::sleep(Duration::from_millis(200));
        for (at, q) in pages.reports.lock().unwrap().iter() {
            let t: f64 = query_value(q, "t")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            first_report.get_or_insert(*at);
            if t > 0.0 && first_audio.is_none() {
                first_audio = Some(*at - first_report.unwrap_or(*at));
            }
            best = best.max(t);
            last = q.clone();
        }
        if let Some(e) = query_value(&last, "error") {
            assert_eq!(e, "0", "the player reports a media error: {last}");
        }
    }
    let reports = pages.reports.lock().unwrap().len();
    eprintln!(
        "chromium: currentTime {best:.2}s after {:.1}s; first audio {:.2}s after the page loaded; {reports} reports, last {last:?}",
        started.elapsed().as_secs_f64(),
        first_audio.map_or(-1.0, |d| d.as_secs_f64()),
    );
    assert!(reports > 0, "the page never reported (did Chromium start?)");
    assert!(
        best >= 2.0,
        "currentTime did not advance past 2 s: best {best}, last report {last:?}"
    );
    first_audio.unwrap_or(Duration::MAX)
}
