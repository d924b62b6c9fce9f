//! What `tests/push.rs` and `tests/fallback.rs` share: real encoder
//! processes (killed on drop), listeners that record when each byte came,
//! a proxy that records what an encoder sent, and MP3/Ogg checks.

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringcast::framing::{is_info_frame, mp3_frame_len, ogg_crc};

use crate::common::{self, Server, TempDir, WAIT};

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A real program (an encoder) with its stdout and stderr in a log file;
/// SIGKILLed and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Start `cmd` with its output in `log`; `stdin` is /dev/null unless
    /// given (a file to read).
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path, stdin: Option<&Path>) -> Proc {
        let out = std::fs::File::create(log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file");
        let input = match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p).expect("open stdin file")),
            None => Stdio::null(),
        };
        let _spawning = common::ringcast::SPAWN
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let child = cmd
            .stdin(input)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL it (an encoder dying mid-stream) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send a signal (`libc::SIGSTOP`, `SIGCONT`, ...).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill has no memory effects; `pid` is our own unreaped child.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill {pid}: {}", std::io::Error::last_os_error());
    }

    /// Wait for it to exit on its own; `None` at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Some(s) = c.try_wait().expect("try_wait") {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => c.try_wait().expect("try_wait").is_none(),
        }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} output ----\n{}\n---- end ----",
                self.name,
                self.log()
            );
        }
    }
}

/// An MP3 file of a tone (mono, 44.1 kHz, constant `kbps`, no ID3 tag and
/// no Xing frame unless `tags`), made by ffmpeg's libmp3lame.
pub fn mp3_file(dir: &TempDir, name: &str, secs: u32, kbps: u32, freq: u32, tags: bool) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:duration={secs}"))
        .args(["-ac", "1", "-ar", "44100", "-c:a", "libmp3lame"])
        .arg("-b:a")
        .arg(format!("{kbps}k"));
    if !tags {
        cmd.args(["-id3v2_version", "0", "-write_xing", "0"]);
    }
    cmd.arg(&path);
    common::run(&mut cmd);
    path
}

/// The ffmpeg command that pushes `input` in real time (`-re`, looped
/// forever) to `url` as MP3, with `extra` options before the URL.
pub fn ffmpeg_push(input: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(input)
        .args(["-c:a", "copy", "-content_type", "audio/mpeg"])
        .args(extra)
        .args(["-f", "mp3", url]);
    cmd
}

// ---------------------------------------------------------------------------
// Listeners
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Record {
    body: Vec<u8>,
    /// (body length after a read, when it was read).
    reads: Vec<(usize, Instant)>,
    eof: bool,
}

/// A listener reading a stream in the background, recording when each
/// byte arrived. Connected (head read, 200 checked) when `connect` returns.
pub struct Listener {
    pub head: String,
    pub local: SocketAddr,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Connect to `path` and read the response head: (status line, head, the
/// stream, body bytes read with the head).
pub fn get(addr: SocketAddr, path: &str) -> (String, String, TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read the response head");
        assert!(
            n > 0,
            "EOF in the head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head, s, buf[end..].to_vec())
}

/// The value of header `name` in a response head.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

impl Listener {
    pub fn connect(addr: SocketAddr, path: &str) -> Listener {
        let (status, head, mut s, first) = get(addr, path);
        assert!(status.contains(" 200 "), "GET {path}: {head}");
        let local = s.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        if !first.is_empty() {
            let mut r = record.lock().unwrap();
            r.body.extend_from_slice(&first);
            r.reads.push((first.len(), Instant::now()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, halt) = (record.clone(), stop.clone());
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            while !halt.load(Ordering::Relaxed) {
                match s.read(&mut chunk) {
                    Ok(0) => {
                        rec.lock().unwrap().eof = true;
                        return;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        let mut r = rec.lock().unwrap();
                        r.body.extend_from_slice(&chunk[..n]);
                        let len = r.body.len();
                        r.reads.push((len, now));
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(_) => {
                        rec.lock().unwrap().eof = true;
                        return;
                    }
                }
            }
        });
        Listener {
            head,
            local,
            record,
            stop,
            thread: Some(thread),
        }
    }

    pub fn len(&self) -> usize {
        self.record.lock().unwrap().body.len()
    }

    pub fn eof(&self) -> bool {
        self.record.lock().unwrap().eof
    }

    pub fn body(&self) -> Vec<u8> {
        self.record.lock().unwrap().body.clone()
    }

    /// When byte `at` of the body arrived (`None`: not yet).
    pub fn arrival(&self, at: usize) -> Option<Instant> {
        let r = self.record.lock().unwrap();
        r.reads.iter().find(|(len, _)| *len > at).map(|(_, t)| *t)
    }

    /// Wait until the body has at least `n` bytes (panics at the deadline
    /// or on EOF).
    pub fn wait_len(&self, n: usize, timeout: Duration) {
        let ok = common::wait_until(timeout, || self.len() >= n || self.eof());
        assert!(
            ok && self.len() >= n,
            "listener {} got {} of {n} bytes (eof {})",
            self.local,
            self.len(),
            self.eof()
        );
    }

    /// Wait until `more` bytes beyond the current length came.
    pub fn wait_more(&self, more: usize, timeout: Duration) {
        let n = self.len() + more;
        self.wait_len(n, timeout);
    }

    /// Stop reading and hand back the body and whether the server closed.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let r = self.record.lock().unwrap();
        (r.body.clone(), r.eof)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// A recording proxy (what did the encoder send?)
// ---------------------------------------------------------------------------

/// A TCP proxy in front of a server that keeps the first bytes each client
/// sent (the request head an encoder wrote).
pub struct Proxy {
    pub addr: SocketAddr,
    pub seen: Seen,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn new(to: SocketAddr) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(to) else {
                    continue;
                };
                let idx = {
                    let mut s = seen2.lock().unwrap();
                    s.push(Vec::new());
                    s.len() - 1
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let rec = seen2.clone();
                std::thread::spawn(move || pipe(client, server, Some((rec, idx))));
                std::thread::spawn(move || pipe(s2, c2, None));
            }
        });
        Proxy { addr, seen, stop }
    }

    /// The first bytes (up to 4 KiB) of each connection so far, as text.
    pub fn heads(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let end = b
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(b.len(), |i| i + 4);
                String::from_utf8_lossy(&b[..end]).into_owned()
            })
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What each connection's client sent first.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

fn pipe(mut from: TcpStream, mut to: TcpStream, rec: Option<(Seen, usize)>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some((r, i)) = &rec {
                    let mut r = r.lock().unwrap();
                    let keep = 4096usize.saturating_sub(r[*i].len()).min(n);
                    r[*i].extend_from_slice(&buf[..keep]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

// ---------------------------------------------------------------------------
// MP3 and Ogg checks
// ---------------------------------------------------------------------------

/// The (offset, length) of each whole MP3 frame of `body` from its first
/// byte; a partial frame at the end is left out. Panics at a byte that is
/// not a frame.
pub fn mp3_frames(body: &[u8], who: &str) -> Vec<(usize, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 4 <= body.len() {
        let len = mp3_frame_len(body[at..at + 4].try_into().unwrap()).unwrap_or_else(|| {
            panic!(
                "{who}: no MP3 frame at byte {at} of {} (after {} frames): {:02x?}",
                body.len(),
                out.len(),
                &body[at..(at + 16).min(body.len())]
            )
        });
        if at + len > body.len() {
            break;
        }
        assert!(
            !is_info_frame(&body[at..at + len]),
            "{who}: a Xing/Info frame at byte {at}"
        );
        out.push((at, len));
        at += len;
    }
    out
}

/// The bitrate index of the MP3 frame at the start of `frame`.
pub fn bitrate_index(frame: &[u8]) -> u8 {
    frame[2] >> 4
}

/// The bitrate index of a constant-bitrate MPEG-1 Layer III stream of
/// `kbps`.
pub fn mpeg1_l3_index(kbps: u32) -> u8 {
    let table = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    table
        .iter()
        .position(|k| *k == kbps)
        .expect("an MPEG-1 L3 bitrate") as u8
}

/// The whole frames of `body` written to `path` (a partial last frame cut).
pub fn save_whole_mp3(body: &[u8], path: &Path, who: &str) -> usize {
    let frames = mp3_frames(body, who);
    let end = frames.last().map_or(0, |(o, l)| o + l);
    std::fs::write(path, &body[..end]).expect("write the body");
    frames.len()
}

/// The complaints of mpg123 (`-t`: decode, no output) and ffmpeg (`-v
/// error`) decoding `path`.
pub fn decode_errors(path: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let out = Command::new("mpg123")
        .arg("-t")
        .arg(path)
        .output()
        .expect("run mpg123");
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        let low = l.to_ascii_lowercase();
        if low.contains("error") || low.contains("warning") || low.contains("illegal") {
            errors.push(format!("mpg123: {}", l.trim()));
        }
    }
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        if !l.trim().is_empty() {
            errors.push(format!("ffmpeg: {}", l.trim()));
        }
    }
    errors
}

/// One Ogg page: where it starts, its length, BOS flag, serial, granule,
/// and whether its body begins a codec identification header.
#[derive(Debug, Clone)]
pub struct OggPage {
    pub at: usize,
    pub len: usize,
    pub bos: bool,
    pub serial: u32,
    pub granule: i64,
    pub codec: Option<&'static str>,
}

/// The whole Ogg pages of `body` from its first byte (CRCs checked); a
/// partial page at the end is left out.
pub fn ogg_pages(body: &[u8], who: &str) -> Vec<OggPage> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 27 <= body.len() {
        let b = &body[at..];
        assert_eq!(
            &b[..4],
            b"OggS",
            "{who}: no Ogg page at byte {at} (after {} pages)",
            out.len()
        );
        let segs = usize::from(b[26]);
        let Some(lacing) = b.get(27..27 + segs) else {
            break;
        };
        let data = 27 + segs;
        let len = data + lacing.iter().map(|l| usize::from(*l)).sum::<usize>();
        let Some(page) = b.get(..len) else { break };
        let stored = u32::from_le_bytes([b[22], b[23], b[24], b[25]]);
        assert_eq!(ogg_crc(page), stored, "{who}: bad CRC in the page at {at}");
        let body = &page[data..];
        let codec = if body.starts_with(b"\x01vorbis") {
            Some("vorbis")
        } else if body.starts_with(b"OpusHead") {
            Some("opus")
        } else {
            None
        };
        out.push(OggPage {
            at,
            len,
            bos: b[5] & 2 != 0,
            serial: u32::from_le_bytes([b[14], b[15], b[16], b[17]]),
            granule: i64::from_le_bytes(b[6..14].try_into().unwrap()),
            codec,
        });
        at += len;
    }
    out
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The sum of a per-shard counter of `/status`.
pub fn shard_sum(server: &Server, name: &str) -> u64 {
    server.status_json()["shards"]
        .as_array()
        .expect("shards")
        .iter()
        .map(|s| s[name].as_u64().unwrap_or(0))
        .sum()
}

/// The `/status` entry of the stream at `mount`.
pub fn stream_status(server: &Server, mount: &str) -> serde_json::Value {
    let st = server.status_json();
    st["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["mount"] == mount)
        .cloned()
        .unwrap_or_else(|| panic!("no stream {mount} in /status: {st}"))
}

/// A whole small response to `request` sent verbatim (the connection is
/// closed by the server or times out).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !out.is_empty() && out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The median of some durations, in seconds.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}
