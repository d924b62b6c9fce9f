//! What tests/icy.rs, tests/websocket.rs and tests/icecast_status.rs share
//! besides tests/common: a raw-frame generator that can start at any number
//! and fall silent, ICY block parsing, a WebSocket client, small-window
//! sockets, /metrics counters and a few TOML helpers. Included with
//! `#[path = "interop/support.rs"] mod support;` (next to `mod common;`).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{check_raw_frame, small_window_socket, Client, Server, WAIT};

/// Raw test frames (the format of `common::RAW_GEN`, checked by
/// `check_raw_frame`): `SIZE RATE COUNT START`: frames START, START+1, ...
/// of SIZE bytes, RATE a second, COUNT of them (0 = forever), then silence
/// (the process stays, writing nothing, until it is killed).
pub const GEN: &str = r#"
import struct, sys, time
size = int(sys.argv[1]); rate = float(sys.argv[2]); count = int(sys.argv[3]); start = int(sys.argv[4])
out = sys.stdout.buffer
pattern = bytes((i * 13 + 5) % 251 for i in range(size))
mask = (1 << 64) - 1
t0 = time.time()
i = 0
try:
    while count == 0 or i < count:
        n = start + i
        out.write(struct.pack('>QQ', n, ~n & mask) + pattern[16:size - 8] + struct.pack('>Q', n))
        out.flush()
        i += 1
        d = t0 + i / rate - time.time()
        if d > 0:
            time.sleep(d)
    while True:
        time.sleep(3600)
except BrokenPipeError:
    pass
"#;

/// A TOML basic string of `s` (JSON string escapes are TOML escapes).
pub fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings.
pub fn toml_array(words: &[&str]) -> String {
    let v: Vec<String> = words.iter().map(|w| toml_str(w)).collect();
    format!("[{}]", v.join(", "))
}

/// The `exec = [...]` value running [`GEN`].
pub fn gen_exec(size: usize, rate: u32, count: u64, start: u64) -> String {
    toml_array(&[
        "python3",
        "-c",
        GEN,
        &size.to_string(),
        &rate.to_string(),
        &count.to_string(),
        &start.to_string(),
    ])
}

/// Percent-encode every byte but unreserved ones (for a query value).
pub fn pct(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `Authorization: Basic ...` for user:password.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        crate::common::basic_auth(user, password)
    )
}

/// GET `path` with extra header lines; (status line, head, body).
pub fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (String, String, Vec<u8>) {
    let mut c = Client::request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n"),
    );
    let body = c.read_to_eof(WAIT);
    (c.status_line().to_string(), c.head.clone(), body)
}

/// A title update through /admin/metadata: the status line.
pub fn set_title(addr: SocketAddr, mount: &str, query: &str, auth: &str) -> String {
    let (line, _, body) = get_with(
        addr,
        &format!(
            "/admin/metadata?mount={}&mode=updinfo&{query}",
            pct(mount.as_bytes())
        ),
        auth,
    );
    eprintln!(
        "title update {query:.60}: {line} {}",
        String::from_utf8_lossy(&body).trim()
    );
    line
}

/// The sum of a counter's lines in /metrics (every shard).
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let (line, body) = crate::common::ringcast::fetch(addr, "/metrics");
    assert!(line.contains("200"), "{line}");
    let name = format!("ringcast_{}", name.trim_start_matches("ringcast_"));
    let name = name.as_str();
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// A counter's lines in /metrics whose labels contain `label` (a stream's
/// name or mount), summed.
pub fn metric_of(addr: SocketAddr, name: &str, label: &str) -> u64 {
    let (line, body) = crate::common::ringcast::fetch(addr, "/metrics");
    assert!(line.contains("200"), "{line}");
    let name = format!("ringcast_{}{{", name.trim_start_matches("ringcast_"));
    body.lines()
        .filter(|l| l.starts_with(&name))
        .filter(|l| {
            l.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Wait until a counter reaches `at_least`; its value.
pub fn wait_metric(server: &Server, name: &str, at_least: u64) -> u64 {
    let mut v = 0;
    let ok = crate::common::wait_until(WAIT, || {
        v = metric(server.addr, name);
        v >= at_least
    });
    assert!(ok, "{name} stayed at {v}, expected at least {at_least}");
    v
}

/// A slow reader's stall: wait (not reading) until the source has put
/// `frames` more frames in (far more than the ring and the socket buffers
/// hold), so the listener is lapped when it next gets to send.
pub fn stall_for_frames(server: &Server, frames: u64) {
    let f0 = metric(server.addr, "stream_frames_in_total");
    wait_metric(server, "stream_frames_in_total", f0 + frames);
}

// ---------------------------------------------------------------------------
// ICY
// ---------------------------------------------------------------------------

/// One metadata block as it came: its length byte and payload.
#[derive(Debug, Clone)]
pub struct Block {
    /// Audio bytes of the listener before this block.
    pub at: u64,
    pub payload: Vec<u8>,
}

impl Block {
    /// The `StreamTitle` value (bytes up to the first `';`), None for an
    /// empty block.
    pub fn title(&self) -> Option<Vec<u8>> {
        if self.payload.is_empty() {
            return None;
        }
        let p = &self.payload;
        let start = b"StreamTitle='".len();
        let end = find(&p[start..], b"';")? + start;
        Some(p[start..end].to_vec())
    }

    /// The title as Latin-1 text (how ringcast sends titles that fit).
    pub fn title_text(&self) -> Option<String> {
        let t = self.title()?;
        Some(match String::from_utf8(t.clone()) {
            Ok(s) if t.iter().any(|&b| b >= 0x80) => s,
            _ => t.iter().map(|&b| b as char).collect(),
        })
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Check a block's payload is exactly `StreamTitle='...';` (optionally
/// `StreamUrl='...';`), zero padded to the next 16 bytes and no further.
pub fn check_block(payload: &[u8]) -> Result<(), String> {
    if payload.is_empty() {
        return Ok(());
    }
    let show = || {
        let s = String::from_utf8_lossy(payload);
        let cut: String = s.chars().take(120).collect();
        if cut.len() < s.len() {
            format!("{cut}...")
        } else {
            cut
        }
    };
    if !payload.len().is_multiple_of(16) || payload.len() > 255 * 16 {
        return Err(format!("block of {} bytes", payload.len()));
    }
    let text_end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if payload.len() - text_end >= 16 {
        return Err(format!(
            "padding of {} bytes: {}",
            payload.len() - text_end,
            show()
        ));
    }
    if payload[..text_end].contains(&0) {
        return Err(format!("a zero byte inside the text: {:?}", show()));
    }
    let text = &payload[..text_end];
    let rest = text
        .strip_prefix(b"StreamTitle='")
        .ok_or_else(|| format!("no StreamTitle=' at the start: {:?}", show()))?;
    let end =
        find(rest, b"';").ok_or_else(|| format!("StreamTitle not closed by ';: {:?}", show()))?;
    let rest = &rest[end + 2..];
    if rest.is_empty() {
        return Ok(());
    }
    let url = rest
        .strip_prefix(b"StreamUrl='")
        .ok_or_else(|| format!("after the title, not StreamUrl: {:?}", show()))?;
    match find(url, b"';") {
        Some(e) if e + 2 == url.len() => Ok(()),
        _ => Err(format!("StreamUrl not closed at the end: {:?}", show())),
    }
}

/// Reads an ICY listener's body: audio bytes and the blocks between them,
/// every block checked.
pub struct IcyReader {
    pub metaint: usize,
    /// Audio bytes until the next block.
    left: usize,
    pub audio_total: u64,
    pub blocks: Vec<Block>,
}

impl IcyReader {
    pub fn new(metaint: usize) -> IcyReader {
        IcyReader {
            metaint,
            left: metaint,
            audio_total: 0,
            blocks: Vec::new(),
        }
    }

    /// Read at least `n` audio bytes (stopping at a block boundary or the
    /// end of what came), appending them to `audio`.
    pub fn read_audio(&mut self, c: &mut impl BodyRead, n: usize, audio: &mut Vec<u8>) {
        let want = audio.len() + n;
        while audio.len() < want {
            let take = self.left.min(want - audio.len());
            if take > 0 {
                audio.extend(c.body(take, WAIT));
                self.left -= take;
                self.audio_total += take as u64;
            }
            if self.left == 0 {
                self.read_block(c);
            }
        }
    }

    /// Read audio until the next block; return that block.
    pub fn next_block(&mut self, c: &mut impl BodyRead, audio: &mut Vec<u8>) -> Block {
        let n = self.blocks.len();
        while self.blocks.len() == n {
            let take = self.left;
            self.read_audio(c, take.max(1), audio);
        }
        self.blocks[n].clone()
    }

    fn read_block(&mut self, c: &mut impl BodyRead) {
        let len = c.body(1, WAIT)[0] as usize * 16;
        let payload = if len > 0 {
            c.body(len, WAIT)
        } else {
            Vec::new()
        };
        if let Err(e) = check_block(&payload) {
            panic!(
                "bad metadata block after {} audio bytes: {e}",
                self.audio_total
            );
        }
        self.blocks.push(Block {
            at: self.audio_total,
            payload,
        });
        self.left = self.metaint;
    }
}

/// Split audio into raw test frames of `size`; check each; their numbers.
pub fn frames_of(audio: &[u8], size: usize) -> Vec<u64> {
    assert_eq!(audio.len() % size, 0, "audio is not whole frames of {size}");
    audio
        .chunks(size)
        .enumerate()
        .map(|(i, f)| check_raw_frame(f).unwrap_or_else(|e| panic!("frame {i}: {e}")))
        .collect()
}

/// Frame numbers that only go forward (a listener nobody read for a while
/// may have skipped whole frames; anything else between them would have
/// broken a frame).
pub fn assert_increasing(nums: &[u64], what: &str) {
    assert!(
        nums.windows(2).all(|w| w[1] > w[0]),
        "{what}: {}",
        crate::common::short(nums)
    );
}

// ---------------------------------------------------------------------------
// Sockets
// ---------------------------------------------------------------------------

/// What reads a response body: [`Client`] and [`Slow`].
pub trait BodyRead {
    /// Exactly `n` body bytes within `timeout` (panics otherwise).
    fn body(&mut self, n: usize, timeout: Duration) -> Vec<u8>;
}

impl BodyRead for Client {
    fn body(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        self.read_body(n, timeout)
    }
}

/// A client socket with a small receive buffer (a slow reader's window from
/// the start): the response head, then body bytes.
pub struct Slow {
    pub stream: TcpStream,
    pub head: String,
    pending: Vec<u8>,
}

impl BodyRead for Slow {
    fn body(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let take = self.pending.len().min(n);
        let mut out: Vec<u8> = self.pending.drain(..take).collect();
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; n - out.len()];
        while out.len() < n {
            assert!(Instant::now() < deadline, "timed out reading the body");
            self.stream
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let want = n - out.len();
            match self.stream.read(&mut buf[..want]) {
                Ok(0) => panic!("EOF after {} of {n} body bytes", out.len()),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading: {e}"),
            }
        }
        out
    }
}

impl Slow {
    /// Connect with a receive buffer of `rcvbuf` bytes set before the
    /// connect, send `request`, read the head.
    pub fn connect(addr: SocketAddr, rcvbuf: i32, request: &[u8]) -> Slow {
        let mut stream = small_window_socket(addr, rcvbuf);
        stream.write_all(request).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut b).expect("response head");
            head.push(b[0]);
        }
        Slow {
            stream,
            head: String::from_utf8_lossy(&head).into_owned(),
            pending: Vec::new(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }
}

// ---------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------

/// A fresh Sec-WebSocket-Key and its expected accept value (RFC 6455 §4.2.2).
pub fn ws_key() -> (String, String) {
    use base64::Engine as _;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&n.to_be_bytes());
    raw[8..].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.digest().bytes());
    (key, accept)
}

/// The upgrade request for `path`.
pub fn ws_request(path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.test\r\n\r\n"
    )
}

/// Connect a WebSocket client to `path`; the client after a checked 101.
pub fn ws_connect(addr: SocketAddr, path: &str) -> Client {
    let (key, accept) = ws_key();
    let c = Client::request(addr, &ws_request(path, &key));
    check_101(&c, &accept);
    c
}

pub fn check_101(c: &Client, accept: &str) {
    assert!(c.status_line().starts_with("HTTP/1.1 101"), "{}", c.head);
    assert_eq!(
        c.header("Upgrade")
            .map(|u| u.to_ascii_lowercase())
            .as_deref(),
        Some("websocket"),
        "{}",
        c.head
    );
    assert_eq!(
        c.header("Sec-WebSocket-Accept").as_deref(),
        Some(accept),
        "{}",
        c.head
    );
}

/// One server frame: (FIN, opcode, payload). Server frames must not be
/// masked.
pub fn ws_read(c: &mut impl BodyRead, timeout: Duration) -> (bool, u8, Vec<u8>) {
    let h = c.body(2, timeout);
    assert_eq!(h[0] & 0x70, 0, "RSV bits set: {h:?}");
    assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
    let len = match h[1] & 0x7F {
        126 => u16::from_be_bytes(c.body(2, timeout).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(c.body(8, timeout).try_into().unwrap()) as usize,
        n => n as usize,
    };
    let payload = if len > 0 {
        c.body(len, timeout)
    } else {
        Vec::new()
    };
    (h[0] & 0x80 != 0, h[0] & 0x0F, payload)
}

/// A masked client frame.
pub fn ws_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let m = if masked { 0x80 } else { 0 };
    let mut v = vec![0x80 | opcode];
    if payload.len() < 126 {
        v.push(m | payload.len() as u8);
    } else if payload.len() <= 0xFFFF {
        v.push(m | 126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        v.push(m | 127);
        v.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    if masked {
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        v.extend_from_slice(payload);
    }
    v
}

pub fn ws_send(c: &mut Client, opcode: u8, payload: &[u8]) {
    c.stream
        .write_all(&ws_frame(opcode, payload, true))
        .unwrap();
}

/// Read frames until a close frame; its status code. Data frames before it
/// are dropped.
pub fn ws_read_until_close(c: &mut impl BodyRead, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            Instant::now() < deadline,
            "no close frame within {timeout:?}"
        );
        let (_, op, p) = ws_read(c, timeout);
        if op == 8 {
            return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
        }
    }
}

/// Whether the peer closed the TCP connection within `timeout` (reading and
/// counting what still comes: after a close frame nothing should).
pub fn closes_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65536];
    let mut extra = 0usize;
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                if extra == 0 {
                    eprintln!("after the close frame: {:?}", &buf[..n.min(16)]);
                }
                extra += n;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    eprintln!("not closed; {extra} bytes came after the close frame");
    false
}

/// Generate a sine-tone file with ffmpeg (`args` are the output options).
pub fn ffmpeg_tone(dir: &Path, name: &str, seconds: u32, args: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!(
        "sine=frequency=440:duration={seconds}:sample_rate=44100"
    ))
    .args(args)
    .arg(&out);
    crate::common::run(&mut cmd);
    out
}

/// The whole MP3 frames at the start of `bytes` (MPEG-1/2 layer III):
/// their count, and the offset where parsing stopped.
pub fn mp3_frames(bytes: &[u8]) -> (usize, usize) {
    let mut at = 0;
    let mut n = 0;
    while at + 4 <= bytes.len() {
        let Some(len) = mp3_frame_len(&bytes[at..at + 4]) else {
            break;
        };
        if at + len > bytes.len() {
            break;
        }
        at += len;
        n += 1;
    }
    (n, at)
}

/// The length of the MP3 frame whose header is `h`, if it is one.
pub fn mp3_frame_len(h: &[u8]) -> Option<usize> {
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = 2.5
    let layer = (h[1] >> 1) & 3; // 1 = layer III
    if layer != 1 || version == 1 {
        return None;
    }
    let br_idx = (h[2] >> 4) as usize;
    let sr_idx = ((h[2] >> 2) & 3) as usize;
    let pad = ((h[2] >> 1) & 1) as usize;
    if br_idx == 0 || br_idx == 15 || sr_idx == 3 {
        return None;
    }
    const BR1: [usize; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const BR2: [usize; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    const SR1: [usize; 3] = [44100, 48000, 32000];
    if version == 3 {
        Some(144_000 * BR1[br_idx] / SR1[sr_idx] + pad)
    } else {
        let sr = SR1[sr_idx] / if version == 2 { 2 } else { 4 };
        Some(72_000 * BR2[br_idx] / sr + pad)
    }
}
