//! `--icy` and `--websocket` end to end against small std::net servers on 127.0.0.1 that
//! speak each protocol by hand (ICY blocks every N bytes; WebSocket frames, a ping, a
//! close), some of them wrongly on purpose. Every loop here is bounded in count and time.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use loadgen::clients::{self, ClientsConfig};
use loadgen::http::parse_url;
use loadgen::parse;
use loadgen::source::{self, SourceConfig};
use loadgen::stats::Report;

const FRAME: usize = 1000;
const RATE: u64 = 32_000;
const METAINT: usize = 3000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// ICY: title "One" in the first block, zeros, "Two" from the 10th block on.
    Icy,
    /// ICY: the 3rd block is a UTF-8 title cut inside a character.
    IcyCutTitle,
    /// WebSocket: one binary message per frame; a ping after the 5th frame; a close
    /// (1001) after the 40th.
    Ws,
    /// WebSocket: every frame split over two binary messages.
    WsSplit,
    /// WebSocket: the server masks its frames (a protocol error).
    WsMasked,
}

/// What the WebSocket servers read back from the clients.
#[derive(Default)]
struct Seen {
    /// Masked pongs whose payload was the ping's.
    good_pongs: AtomicU64,
    /// Masked close frames with the server's code echoed.
    good_closes: AtomicU64,
    /// Client frames that were not masked, or pongs with the wrong payload.
    bad_frames: AtomicU64,
    /// Requests without the right upgrade headers or without Icy-MetaData.
    bad_requests: AtomicU64,
    keys: Mutex<Vec<String>>,
}

fn serve(listener: TcpListener, mode: Mode, for_how_long: Duration, seen: Arc<Seen>) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + for_how_long;
    let mut handles = Vec::new();
    while Instant::now() < deadline && handles.len() < 500 {
        match listener.accept() {
            Ok((s, _)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let seen = seen.clone();
                handles.push(thread::spawn(move || {
                    let _ = serve_one(s, mode, left, &seen);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2))
            }
            Err(_) => break,
        }
    }
    for h in handles {
        let _ = h.join();
    }
}

fn header<'a>(req: &'a str, name: &str) -> Option<&'a str> {
    req.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn serve_one(mut s: TcpStream, mode: Mode, left: Duration, seen: &Seen) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(left.max(Duration::from_millis(10))))?;
    let mut req = Vec::new();
    let mut b = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        let n = s.read(&mut b)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&b[..n]);
    }
    let req = String::from_utf8_lossy(&req).into_owned();
    let cfg = SourceConfig {
        frame_bytes: FRAME,
        rate: RATE,
        stream_id: 5,
        duration: Some(left),
        frames: None,
        header_bytes: 0,
    };
    let stop = AtomicBool::new(false);
    match mode {
        Mode::Icy | Mode::IcyCutTitle => {
            if header(&req, "icy-metadata") != Some("1") {
                seen.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nicy-metaint: {METAINT}\r\n\r\n"
                )
                .as_bytes(),
            )?;
            let mut w = IcyWriter {
                out: &mut s,
                left: METAINT,
                blocks: 0,
                cut: mode == Mode::IcyCutTitle,
            };
            source::run(&cfg, &mut w, &stop)?;
        }
        Mode::Ws | Mode::WsSplit | Mode::WsMasked => {
            let key = header(&req, "sec-websocket-key").unwrap_or("");
            let ok = header(&req, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
                && header(&req, "connection")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"))
                && header(&req, "sec-websocket-version") == Some("13")
                && base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .is_ok_and(|k| k.len() == 16);
            if !ok {
                seen.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            seen.keys.lock().unwrap().push(key.to_string());
            let mut h = sha1_smol::Sha1::new();
            h.update(key.as_bytes());
            h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(h.digest().bytes());
            s.write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
                    .as_bytes(),
            )?;
            let reader = s.try_clone()?;
            thread::scope(|sc| {
                let h = sc.spawn(|| read_client_frames(reader, seen));
                let mut w = WsWriter {
                    out: &mut s,
                    frames: 0,
                    mode,
                };
                // Ends with an error once the close is sent (the writer refuses more).
                let _ = source::run(&cfg, &mut w, &stop);
                // The client's answer to the close (or its EOF), then the TCP close.
                let _ = h.join();
                let _ = s.shutdown(std::net::Shutdown::Both);
            });
        }
    }
    Ok(())
}

/// Reads the client's frames: every one must be masked; pongs must echo "ping-5"; a
/// close must echo 1001.
fn read_client_frames(mut r: TcpStream, seen: &Seen) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match r.read(&mut b) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return,
        }
        while buf.len() >= 2 {
            let masked = buf[1] & 0x80 != 0;
            let len = (buf[1] & 0x7F) as usize;
            if !masked || len > 125 {
                seen.bad_frames.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if buf.len() < 6 + len {
                break;
            }
            let mask = [buf[2], buf[3], buf[4], buf[5]];
            let p: Vec<u8> = buf[6..6 + len]
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i % 4])
                .collect();
            match buf[0] {
                0x8A if p == b"ping-5" => seen.good_pongs.fetch_add(1, Ordering::Relaxed),
                0x88 if p == 1001u16.to_be_bytes() => {
                    seen.good_closes.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => seen.bad_frames.fetch_add(1, Ordering::Relaxed),
            };
            buf.drain(..6 + len);
        }
    }
}

/// Inserts an ICY block after every METAINT bytes written.
struct IcyWriter<'a> {
    out: &'a mut TcpStream,
    left: usize,
    blocks: u32,
    cut: bool,
}

impl IcyWriter<'_> {
    fn block(&self) -> Vec<u8> {
        let text: Vec<u8> = match self.blocks {
            0 => b"StreamTitle='One';".to_vec(),
            2 if self.cut => {
                let t = "StreamTitle='東京".as_bytes();
                t[..t.len() - 1].to_vec()
            }
            9 => b"StreamTitle='Two';StreamUrl='http://example/';".to_vec(),
            _ => return vec![0],
        };
        loadgen::icy::block(&text)
    }
}

impl Write for IcyWriter<'_> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        let mut out = Vec::with_capacity(n + 64);
        while !buf.is_empty() {
            let take = self.left.min(buf.len());
            out.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            self.left -= take;
            if self.left == 0 {
                out.extend(self.block());
                self.blocks += 1;
                self.left = METAINT;
            }
        }
        self.out.write_all(&out)?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Wraps every write (one frame) in WebSocket frames.
struct WsWriter<'a> {
    out: &'a mut TcpStream,
    frames: u32,
    mode: Mode,
}

fn server_frame(fin: bool, opcode: u8, p: &[u8], masked: bool) -> Vec<u8> {
    let mut v = vec![if fin { 0x80 } else { 0 } | opcode];
    let m = if masked { 0x80 } else { 0 };
    if p.len() < 126 {
        v.push(m | p.len() as u8);
    } else {
        v.push(m | 126);
        v.extend_from_slice(&(p.len() as u16).to_be_bytes());
    }
    if masked {
        v.extend_from_slice(&[0, 0, 0, 0]);
    }
    v.extend_from_slice(p);
    v
}

impl Write for WsWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.frames >= 40 {
            return Err(io::Error::other("closed"));
        }
        let mut out = Vec::new();
        match self.mode {
            Mode::WsSplit => {
                out.extend(server_frame(true, 2, &buf[..buf.len() / 2], false));
                out.extend(server_frame(true, 2, &buf[buf.len() / 2..], false));
            }
            Mode::WsMasked => out.extend(server_frame(true, 2, buf, true)),
            _ => {
                // The frame as a message of two fragments every 7th frame (a message may
                // be fragmented; it is still one whole frame).
                if self.frames % 7 == 3 {
                    out.extend(server_frame(false, 2, &buf[..100], false));
                    out.extend(server_frame(true, 0, &buf[100..], false));
                } else {
                    out.extend(server_frame(true, 2, buf, false));
                }
            }
        }
        self.frames += 1;
        if self.frames == 5 {
            out.extend(server_frame(true, 9, b"ping-5", false));
        }
        if self.frames == 40 {
            out.extend(server_frame(true, 8, &1001u16.to_be_bytes(), false));
        }
        self.out.write_all(&out)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn run_against(
    mode: Mode,
    n: usize,
    secs: f64,
    cfg_fn: impl Fn(&mut ClientsConfig),
) -> (Report, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve_for = Duration::from_secs_f64(secs + 2.0);
    let seen = Arc::new(Seen::default());
    let seen2 = seen.clone();
    let server = thread::spawn(move || serve(listener, mode, serve_for, seen2));
    let targets = vec![parse_url(&format!("http://127.0.0.1:{port}/live")).unwrap()];
    let mut cfg = ClientsConfig::new(targets, n);
    cfg.duration = Duration::from_secs_f64(secs);
    cfg.mix = parse::mix("fast=0.5,paced=0.5", RATE).unwrap();
    cfg.frame_bytes = Some(FRAME as u32);
    cfg.retry_delay = Duration::from_millis(200);
    cfg_fn(&mut cfg);
    let report = clients::run(&cfg, &AtomicBool::new(false)).expect("clients run");
    server.join().unwrap();
    (report, seen)
}

#[test]
fn icy_blocks_are_stripped_checked_and_counted() {
    let (r, seen) = run_against(Mode::Icy, 10, 2.0, |c| c.icy = true);
    eprint!("{}", r.human());
    assert_eq!(seen.bad_requests.load(Ordering::Relaxed), 0);
    let m = r.icy.as_ref().unwrap();
    assert_eq!(r.frames.corrupt, 0, "the blocks reached the frame checker");
    assert_eq!(m.malformed, 0);
    assert_eq!(m.metaint, Some(METAINT as u32));
    assert_eq!(m.responses_with_metaint, 10);
    // ~64,000 bytes each: 21 blocks; "Two" comes at the 10th.
    assert_eq!(m.first_blocks_with_title, 10);
    assert_eq!(m.connections_with_blocks, 10);
    assert_eq!(m.title_changes, 10, "{m:?}");
    assert_eq!(m.last_title.as_deref(), Some("Two"));
    assert_eq!(m.title_blocks, 20);
    assert_eq!(m.empty_blocks, m.blocks - 20);
    // Audio only in data.bytes; the blocks are counted apart.
    assert!(r.data.bytes >= 10 * 10 * METAINT as u64, "{}", r.data.bytes);
    assert_eq!(
        m.metadata_bytes,
        m.empty_blocks + 10 * (1 + 32) + 10 * (1 + 48)
    );
    assert!(r.passed, "{:?}", r.failures);
}

#[test]
fn a_cut_utf8_title_is_a_malformed_block() {
    let (r, _) = run_against(Mode::IcyCutTitle, 3, 1.5, |c| c.icy = true);
    eprint!("{}", r.human());
    let m = r.icy.as_ref().unwrap();
    assert_eq!(m.malformed, 3, "{m:?}");
    assert_eq!(m.malformed_utf8_cut, 3);
    assert!(
        m.malformed_examples[0].contains("東"),
        "{:?}",
        m.malformed_examples
    );
    assert_eq!(r.frames.corrupt, 0);
    assert!(!r.passed);
    assert!(
        r.failures.iter().any(|f| f.contains("malformed ICY")),
        "{:?}",
        r.failures
    );
}

#[test]
fn icy_without_metaint_is_an_http_error() {
    // A plain 200 without icy-metaint to a client that asked for ICY metadata.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut s, _)) = listener.accept() {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            thread::sleep(Duration::from_millis(300));
        }
    });
    let mut cfg = ClientsConfig::new(
        vec![parse_url(&format!("http://127.0.0.1:{port}/")).unwrap()],
        1,
    );
    cfg.duration = Duration::from_millis(600);
    cfg.retry_delay = Duration::from_secs(5);
    cfg.icy = true;
    let r = clients::run(&cfg, &AtomicBool::new(false)).unwrap();
    server.join().unwrap();
    assert_eq!(r.connections.http_errors, 1);
    assert!(
        r.connections.error_examples[0].contains("icy-metaint"),
        "{:?}",
        r.connections.error_examples
    );
    assert!(!r.passed);
}

#[test]
fn websocket_messages_pings_and_closes() {
    let (r, seen) = run_against(Mode::Ws, 8, 2.5, |c| {
        c.websocket = true;
        c.max_failed_fraction = 1.0;
    });
    eprint!("{}", r.human());
    assert_eq!(seen.bad_requests.load(Ordering::Relaxed), 0);
    assert_eq!(seen.bad_frames.load(Ordering::Relaxed), 0);
    let keys = seen.keys.lock().unwrap().clone();
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), keys.len(), "keys repeat: {keys:?}");
    let w = r.websocket.as_ref().unwrap();
    assert_eq!(w.protocol_errors, 0);
    assert_eq!(w.split_messages, 0);
    assert_eq!(w.bad_handshakes, 0);
    assert_eq!(w.upgrades as usize, keys.len());
    assert_eq!(r.frames.corrupt, 0);
    assert_eq!(w.whole_frame_messages, r.frames.ok);
    // 40 frames at 32 frames/s: every connection got its ping and its close within the run.
    assert!(w.pings >= 8, "{w:?}");
    assert_eq!(w.pongs_sent, w.pings);
    assert!(w.closes_received >= 8, "{w:?}");
    assert_eq!(w.closes_sent, w.closes_received);
    // The server read back the masked pongs and closes.
    assert!(seen.good_pongs.load(Ordering::Relaxed) >= 8);
    assert!(seen.good_closes.load(Ordering::Relaxed) >= 8);
    assert!(r.frames.ok >= 8 * 40, "{}", r.frames.ok);
}

#[test]
fn websocket_split_frames_and_masked_frames_fail() {
    let (r, _) = run_against(Mode::WsSplit, 3, 1.0, |c| c.websocket = true);
    let w = r.websocket.as_ref().unwrap();
    assert!(w.split_messages >= 6, "{w:?}");
    assert!(!r.passed);
    assert!(
        r.failures.iter().any(|f| f.contains("one whole frame")),
        "{:?}",
        r.failures
    );

    let (r, _) = run_against(Mode::WsMasked, 3, 1.0, |c| c.websocket = true);
    let w = r.websocket.as_ref().unwrap();
    assert!(w.protocol_errors >= 3, "{w:?}");
    assert!(r
        .connections
        .error_examples
        .iter()
        .any(|e| e.contains("masked")));
    assert!(!r.passed);
}

#[test]
fn websocket_and_icy_refuse_what_they_cannot_do() {
    let t = vec![parse_url("http://127.0.0.1:9/").unwrap()];
    let mut cfg = ClientsConfig::new(t, 1);
    cfg.icy = true;
    cfg.websocket = true;
    assert!(clients::run(&cfg, &AtomicBool::new(false)).is_err());
    cfg.icy = false;
    cfg.http_version = clients::HttpVersion::Http10;
    assert!(clients::run(&cfg, &AtomicBool::new(false)).is_err());
}
