//! WebSocket delivery and publish (issue 14, item 2 and its bad input):
//! `GET /mount` with `Upgrade: websocket` gets one whole frame per binary
//! message; ping, pong and close; a slow WebSocket listener skips whole
//! frames; a Python `websockets` client and headless Chromium (decoding the
//! MP3 messages with `decodeAudioData`) as real clients; the seed-004
//! channels (`/CHANNEL/KEY/publish | receive | receive-clear-cache |
//! probe`) with their name rules, `max_channels` and keys; bad handshakes
//! and frames answered and counted.

mod common;
#[path = "interop/support.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    check_raw_frame, require, require_python_module, wait_until, Client, Ringcast, Server, TempDir,
    WAIT,
};
use support::*;

const HEAD: &str = "listen = [\"127.0.0.1:0\"]\nflush_interval = \"0s\"\n\n";

fn interop(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(file)
}

fn raw_stream(mount: &str, size: usize, rate: u32, count: u64, start: u64, extra: &str) -> String {
    format!(
        "[[stream]]\nmount = \"{mount}\"\nexec = {}\nframe_bytes = {size}\n{extra}\n",
        gen_exec(size, rate, count, start)
    )
}

/// Read `n` data messages (answering nothing); each must be a final binary
/// message holding one whole raw frame of `size`. Their numbers.
fn ws_frames(c: &mut impl BodyRead, size: usize, n: usize) -> Vec<u64> {
    let mut nums = Vec::new();
    while nums.len() < n {
        let (fin, op, p) = ws_read(c, WAIT);
        assert!(fin, "a fragmented message");
        assert_eq!(op, 2, "not a binary message: op {op} {p:?}");
        assert_eq!(p.len(), size, "a message is not one frame");
        nums.push(check_raw_frame(&p).unwrap_or_else(|e| panic!("message: {e}")));
    }
    nums
}

#[test]
fn a_websocket_listener_gets_one_whole_frame_per_binary_message_with_ping_and_close() {
    let toml = format!("{HEAD}{}", raw_stream("/x", 300, 200, 0, 0, ""));
    let s = Ringcast::new().config_toml(toml).start();
    // The source runs before the WebSocket listener comes (see
    // listener_sockets_do_not_leak_into_source_commands).
    let mut plain = s.get_path("/x");
    plain.read_body(300, WAIT);
    let mut ws = ws_connect(s.addr, "/x");
    let nums = ws_frames(&mut ws, 300, 50);
    common::assert_consecutive(&nums, "WebSocket messages");
    // Ping: a pong with the same payload, between whole messages.
    ws_send(&mut ws, 0x9, b"hello ringcast");
    let deadline = Instant::now() + WAIT;
    let mut last = *nums.last().unwrap();
    loop {
        assert!(Instant::now() < deadline, "no pong");
        let (fin, op, p) = ws_read(&mut ws, WAIT);
        assert!(fin);
        if op == 0xA {
            assert_eq!(p, b"hello ringcast");
            break;
        }
        assert_eq!(op, 2);
        let n = check_raw_frame(&p).unwrap();
        assert_eq!(n, last + 1);
        last = n;
    }
    // An unsolicited pong is ignored.
    ws_send(&mut ws, 0xA, b"x");
    let more = ws_frames(&mut ws, 300, 10);
    assert_eq!(more[0], last + 1);
    // Close: the server answers with a close frame and ends the connection.
    ws_send(&mut ws, 0x8, &1000u16.to_be_bytes());
    assert_eq!(ws_read_until_close(&mut ws, WAIT), Some(1000));
    assert!(
        closes_within(&mut ws.stream, WAIT),
        "not closed after the close handshake"
    );
    // The plain listener meanwhile got bare frames.
    let body = plain.read_body(300 * 20, WAIT);
    assert_increasing(&frames_of(&body, 300), "HTTP listener (read late)");
    assert_eq!(metric(s.addr, "shard_ws_upgrades_total"), 1);
    assert_eq!(metric(s.addr, "shard_ws_protocol_errors_total"), 0);
}

#[test]
fn a_slow_websocket_listener_skips_whole_frames() {
    let toml = format!(
        "{HEAD}{}",
        raw_stream("/x", 100, 4000, 0, 0, "source_buffer = 64")
    );
    let s = Ringcast::new().config_toml(toml).start();
    let (key, accept) = ws_key();
    let mut c = Slow::connect(s.addr, 4096, ws_request("/x", &key).as_bytes());
    assert!(c.head.starts_with("HTTP/1.1 101"), "{}", c.head);
    assert!(c.head.contains(&accept));
    let local = c.local_addr();
    let mut nums = ws_frames(&mut c, 100, 100);
    for _ in 0..3 {
        stall_for_frames(&s, 4000);
        nums.extend(ws_frames(&mut c, 100, 600));
    }
    let gaps = nums.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(
        nums.windows(2).all(|w| w[1] > w[0]),
        "{}",
        common::short(&nums)
    );
    assert!(
        gaps >= 3,
        "not lapped at every stall: {}",
        common::short(&nums)
    );
    drop(c);
    let end = s.wait_client_end(local, WAIT);
    eprintln!("slow WebSocket listener: {gaps} gaps; {}", end.line);
    assert!(end.skipped > 0, "{}", end.line);
    assert!(metric(s.addr, "stream_frames_skipped_total") >= end.skipped);
}

#[test]
fn a_python_websockets_client_receives_whole_frames() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let toml = format!("{HEAD}{}", raw_stream("/x", 1000, 200, 0, 0, ""));
    let s = Ringcast::new().config_toml(toml).start();
    let out = common::run(
        Command::new(python)
            .arg(interop("ws_receive.py"))
            .arg(format!("ws://{}/x", s.addr))
            .args(["1000", "200"]),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}");
    assert!(text.contains("GAPS 0\n"), "{text}");
    assert!(text.contains("PONG\n"), "{text}");
    assert!(text.contains("CLOSED 1000\n"), "{text}");
    let first_last: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("FRAMES "))
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(first_last[1] - first_last[0], 199);
}

/// A child process whose output lines are collected; killed on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for r in [out, err] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(r).split(b'\n').map_while(Result::ok) {
                    lines
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&l).into_owned());
                }
            });
        }
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
        }
    }

    /// Wait for a line starting with `prefix`; it.
    fn wait_line(&self, prefix: &str) -> String {
        let mut found = None;
        let ok = wait_until(WAIT, || {
            found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned();
            found.is_some()
        });
        assert!(ok, "no line {prefix:?}; output:\n{}", self.dump());
        found.unwrap()
    }

    fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Close its stdin (a publisher then closes with 1000).
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(WAIT, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap_or_else(|| panic!("did not exit; output:\n{}", self.dump()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python publisher of `size`-byte frames on `path`.
fn publisher(python: &PathBuf, addr: SocketAddr, path: &str, size: usize, start: u64) -> Proc {
    Proc::spawn(
        Command::new(python)
            .arg("-u")
            .arg(interop("ws_publish.py"))
            .arg(format!("ws://{addr}{path}"))
            .arg(size.to_string())
            .arg(start.to_string()),
    )
}

#[test]
fn headless_chromium_decodes_the_stream_from_a_websocket() {
    if !require("chromium") || !require("ffmpeg") {
        return;
    }
    let dir = TempDir::new("chromium");
    let mp3 = ffmpeg_tone(
        dir.path(),
        "tone.mp3",
        10,
        &["-c:a", "libmp3lame", "-b:a", "128k", "-ac", "2"],
    );
    let toml = format!(
        "{HEAD}[[stream]]\nmount = \"/tone.mp3\"\npath = {}\nframer = \"mp3\"\nrealtime = true\nloop = true\nburst_bytes = 65536\n",
        toml_str(mp3.to_str().unwrap())
    );
    let s = Ringcast::new().config_toml(toml).start();
    // The page's own server: the page, then its report.
    let page = std::fs::read_to_string(interop("ws-decode.html")).unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap();
    let report: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let report = report.clone();
        std::thread::spawn(move || {
            for conn in web.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = req.split(' ').nth(1).unwrap_or("").to_string();
                let body = if path.starts_with("/page") {
                    page.clone()
                } else {
                    if let Some(q) = path.strip_prefix("/report?") {
                        *report.lock().unwrap() = Some(q.to_string());
                    }
                    String::new()
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
    let profile = TempDir::new("chromium-profile");
    let url = format!("http://{web_addr}/page#ws://{}/tone.mp3|200", s.addr);
    let chromium = Proc::spawn(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .args(["--disable-dev-shm-usage", "--mute-audio"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url),
    );
    let t0 = Instant::now();
    let ok = wait_until(Duration::from_secs(60), || report.lock().unwrap().is_some());
    let got = report.lock().unwrap().clone();
    assert!(
        ok,
        "no report from the page; chromium said:\n{}",
        chromium.dump()
    );
    let got = got.unwrap();
    eprintln!("chromium after {:?}: {got}", t0.elapsed());
    let field = |k: &str| -> String {
        got.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {got}"))
            .to_string()
    };
    assert_eq!(field("messages"), "200");
    assert_eq!(
        field("whole"),
        "200",
        "every message is one whole MP3 frame"
    );
    assert_eq!(field("channels"), "2");
    let samples: u64 = field("samples").parse().unwrap();
    // 200 frames of 1,152 samples: 230,400 (decoders trim a little).
    assert!(samples > 200_000 && samples <= 230_400, "{samples}");
    let peak: f64 = field("peak").parse().unwrap();
    // lavfi's sine has amplitude 1/8.
    assert!(peak > 0.05, "decoded silence: {got}");
}

// ---------------------------------------------------------------------------
// Channels (seed 004)
// ---------------------------------------------------------------------------

fn channels_server(extra: &str) -> Server {
    // One ordinary stream besides the channels (a file of channels alone is
    // refused).
    let toml = format!(
        "{HEAD}{}[channels]\nmax_channels = 2\nframer = \"raw\"\nframe_bytes = 100\nburst_bytes = 2000\n{extra}\n",
        raw_stream("/x", 100, 50, 0, 0, "")
    );
    Ringcast::new().config_toml(toml).start()
}

fn probe(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (line, body) = common::ringcast::fetch(addr, path);
    assert!(line.contains(" 200 "), "{path}: {line}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"))
}

#[test]
fn channels_publish_receive_probe_and_clear_cache_with_any_key() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = channels_server("");
    // A publish right after the start.
    let t0 = Instant::now();
    let mut p = publisher(&python, s.addr, "/news/key-one/publish", 100, 0);
    p.wait_line("OPEN");
    eprintln!("first publish open after {:?}", t0.elapsed());
    // Live as soon as the publisher is there (no frame yet).
    let v = probe(s.addr, "/news/whatever/probe");
    assert_eq!(v["channel"], "news");
    assert_eq!(v["live"], true, "{v}");
    p.send_line("50");
    p.wait_line("SENT 50");
    assert!(
        wait_until(WAIT, || metric_of(s.addr, "stream_frames_in_total", "news")
            >= 50),
        "the channel's 50 frames never came in"
    );
    // A receiver with another key (none configured: any key) gets the
    // cached frames, then the live ones, one frame per message.
    let mut r = ws_connect(s.addr, "/news/other_key/receive");
    let mut nums = Vec::new();
    while nums.last() != Some(&49) {
        nums.extend(ws_frames(&mut r, 100, 1));
    }
    common::assert_consecutive(&nums, "receive");
    assert!(nums[0] < 49, "no cached frames: {nums:?}");
    assert!(nums.len() <= 20, "more than burst_bytes: {nums:?}");
    // receive-clear-cache: no cached frames, only what comes next.
    let mut rc = ws_connect(s.addr, "/news/k/receive-clear-cache");
    // An HTTP receiver: bare frames.
    let mut http = Client::request(s.addr, "GET /news/k/receive HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(http.status_line().contains(" 200 "), "{}", http.head);
    let v = probe(s.addr, "/news/k/probe");
    assert_eq!(v["receivers"], 3, "{v}");
    p.send_line("10");
    p.wait_line("SENT 60");
    // At most the newest frame (where any listener without a burst starts).
    let mut fresh = Vec::new();
    while fresh.last() != Some(&59) {
        fresh.extend(ws_frames(&mut rc, 100, 1));
    }
    eprintln!("receive-clear-cache got {fresh:?}");
    assert!(fresh[0] >= 49, "clear-cache got cached frames: {fresh:?}");
    common::assert_consecutive(&fresh, "receive-clear-cache");
    assert_eq!(ws_frames(&mut r, 100, 10), (50..60).collect::<Vec<_>>());
    let body = http.read_body(100 * 10, WAIT);
    let hn = frames_of(&body, 100);
    common::assert_consecutive(&hn, "HTTP receiver");
    // A probe over WebSocket: one text message, then close 1000.
    let (key, accept) = ws_key();
    let mut pw = Client::request(s.addr, &ws_request("/news/k/probe", &key));
    check_101(&pw, &accept);
    let (_, op, text) = ws_read(&mut pw, WAIT);
    assert_eq!(op, 1);
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(
        (v["live"].clone(), v["receivers"].clone()),
        (true.into(), 3.into())
    );
    assert_eq!(ws_read_until_close(&mut pw, WAIT), Some(1000));
    // A channel nobody publishes to.
    let v = probe(s.addr, "/quiet/k/probe");
    assert_eq!(
        (v["live"].clone(), v["receivers"].clone()),
        (false.into(), 0.into())
    );
    let (line, _) = s.fetch("/quiet/k/receive");
    assert!(line.contains(" 404 "), "{line}");

    // Names: [a-z0-9_-], 1 to 128 characters, for channel and key.
    let long = "a".repeat(128);
    let too_long = "a".repeat(129);
    let good = [
        format!("/{long}/k/probe"),
        format!("/c/{long}/probe"),
        "/a_b-9/x-_1/probe".into(),
    ];
    for path in &good {
        assert_eq!(probe(s.addr, path)["live"], false, "{path}");
    }
    let bad = [
        format!("/{too_long}/k/probe"),
        format!("/c/{too_long}/receive"),
        "/News/k/receive".to_string(),
        "/news/K/receive".to_string(),
        "/ne.ws/k/publish".to_string(),
        "/news/k%20/receive".to_string(),
    ];
    for path in &bad {
        let (line, body) = s.fetch(path);
        assert!(line.contains(" 400 "), "{path}: {line}");
        assert!(body.contains("[a-z0-9_-], 1 to 128"), "{path}: {body}");
    }
    // The publisher leaves with 1000.
    p.close_stdin();
    p.wait_line("CLOSED 1000");
    assert!(p.wait_exit().success());
}

#[test]
fn max_channels_refuses_the_next_publish() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = channels_server("");
    let mut a = publisher(&python, s.addr, "/one/k/publish", 100, 0);
    a.wait_line("OPEN");
    let b = publisher(&python, s.addr, "/two/k/publish", 100, 0);
    b.wait_line("OPEN");
    // A second publisher of a channel in use.
    let dup = publisher(&python, s.addr, "/one/k/publish", 100, 0);
    let line = dup.wait_line("STATUS");
    eprintln!("second publisher of /one: {line}");
    assert!(!line.contains("101"));
    // A third channel: no room.
    let before = metric(s.addr, "shard_channel_refusals_total");
    let t0 = Instant::now();
    let c = publisher(&python, s.addr, "/three/k/publish", 100, 0);
    assert_eq!(c.wait_line("STATUS"), "STATUS 503");
    eprintln!("max_channels refusal after {:?}", t0.elapsed());
    assert_eq!(metric(s.addr, "shard_channel_refusals_total"), before + 1);
    a.send_line("3");
    a.wait_line("SENT 3");
    let mut r = ws_connect(s.addr, "/one/k/receive");
    a.send_line("3");
    let got = ws_frames(&mut r, 100, 3);
    assert!(got[0] <= 3 && got[2] <= 5, "{got:?}");
    drop(b);
}

#[test]
fn a_quiet_channel_takes_receivers_before_its_first_frame() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = channels_server("");
    let b = publisher(&python, s.addr, "/two/k/publish", 100, 0);
    b.wait_line("OPEN");
    // /two has a publisher that has sent nothing yet: live, and a receiver
    // is taken (it gets the first frame when it comes).
    assert_eq!(probe(s.addr, "/two/k/probe")["live"], true);
    let mut r = ws_connect(s.addr, "/two/k/receive");
    let mut b = b;
    b.send_line("5");
    assert_eq!(ws_frames(&mut r, 100, 5), vec![0, 1, 2, 3, 4]);
}

#[test]
fn configured_channel_keys_are_checked() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = channels_server("keys = [\"abc\", \"k-2\"]");
    let before = metric(s.addr, "shard_channel_refusals_total");
    let wrong = publisher(&python, s.addr, "/talk/nope/publish", 100, 0);
    assert_eq!(wrong.wait_line("STATUS"), "STATUS 403");
    let (line, body) = s.fetch("/talk/nope/receive");
    assert!(line.contains(" 403 "), "{line}");
    assert_eq!(body, "wrong key\n");
    let (line, _) = s.fetch("/talk/nope/probe");
    assert!(line.contains(" 403 "), "{line}");
    assert_eq!(metric(s.addr, "shard_channel_refusals_total"), before + 3);
    let mut p = publisher(&python, s.addr, "/talk/abc/publish", 100, 7);
    p.wait_line("OPEN");
    let mut r = ws_connect(s.addr, "/talk/k-2/receive");
    p.send_line("4");
    assert_eq!(ws_frames(&mut r, 100, 4), vec![7, 8, 9, 10]);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn bad_handshakes_and_frames_get_clear_answers_and_are_counted() {
    let s = channels_server("");
    let base = "GET /x HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let (key, _) = ws_key();
    let cases = [
        (format!("{base}Sec-WebSocket-Version: 13\r\n\r\n"), "no key"),
        (
            format!("{base}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n\r\n"),
            "a short key",
        ),
        (
            format!("{base}Sec-WebSocket-Key: {key}\r\n\r\n"),
            "no version",
        ),
    ];
    for (i, (req, what)) in cases.iter().enumerate() {
        let mut c = Client::request(s.addr, req);
        let body = String::from_utf8_lossy(&c.read_to_eof(WAIT)).into_owned();
        eprintln!("{what}: {} {}", c.status_line(), body.trim());
        assert!(c.status_line().contains(" 400 "), "{what}: {}", c.head);
        assert!(!body.is_empty(), "{what}: no reason given");
        assert_eq!(
            metric(s.addr, "shard_ws_bad_handshakes_total"),
            i as u64 + 1
        );
    }
    // The same on a channel publish.
    let mut c = Client::request(
        s.addr,
        "GET /ch/k/publish HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let _ = c.read_to_eof(WAIT);
    assert!(c.status_line().contains(" 400 "), "{}", c.head);
    assert_eq!(metric(s.addr, "shard_ws_bad_handshakes_total"), 4);

    // The source runs before the WebSocket listeners come (see
    // listener_sockets_do_not_leak_into_source_commands).
    let mut plain = s.get_path("/x");
    plain.read_body(100, WAIT);
    // A listener that sends an unmasked frame: close 1002, counted.
    let mut ws = ws_connect(s.addr, "/x");
    ws_frames(&mut ws, 100, 2);
    ws.stream
        .write_all(&ws_frame(0x9, b"unmasked", false))
        .unwrap();
    assert_eq!(ws_read_until_close(&mut ws, WAIT), Some(1002));
    assert!(closes_within(&mut ws.stream, WAIT));
    wait_metric(&s, "shard_ws_protocol_errors_total", 1);
    // A listener's small data message is tolerated; one bigger than a
    // listener may send (4 KiB) is closed with 1009 and counted.
    let mut ws = ws_connect(s.addr, "/x");
    ws_frames(&mut ws, 100, 1);
    ws_send(&mut ws, 0x2, b"data from a listener");
    common::assert_consecutive(&ws_frames(&mut ws, 100, 5), "after a small message");
    ws_send(&mut ws, 0x2, &[7u8; 5000]);
    assert_eq!(ws_read_until_close(&mut ws, WAIT), Some(1009));
    assert!(closes_within(&mut ws.stream, WAIT));
    wait_metric(&s, "shard_ws_protocol_errors_total", 2);
    // Everyone else is served as before.
    let mut other = ws_connect(s.addr, "/x");
    common::assert_consecutive(&ws_frames(&mut other, 100, 5), "after bad clients");
}

/// A publisher connected by hand: the client after its 101.
fn raw_publisher(addr: SocketAddr, path: &str) -> Client {
    let (key, accept) = ws_key();
    let c = Client::request(addr, &ws_request(path, &key));
    check_101(&c, &accept);
    c
}

#[test]
fn publishers_that_break_the_protocol_get_close_codes() {
    let s = channels_server("");
    // Unmasked: 1002.
    let mut p = raw_publisher(s.addr, "/pub-a/k/publish");
    p.stream
        .write_all(&ws_frame(0x2, &common::raw_frame(0, 100), false))
        .unwrap();
    assert_eq!(ws_read_until_close(&mut p, WAIT), Some(1002));
    assert!(closes_within(&mut p.stream, WAIT));
    // Oversized: a message header announcing 2 MiB gets 1009 at once.
    let mut p = raw_publisher(s.addr, "/pub-b/k/publish");
    let mut head = vec![0x82u8, 0x80 | 127];
    head.extend_from_slice(&(2u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    head.extend_from_slice(&[0u8; 1000]);
    p.stream.write_all(&head).unwrap();
    assert_eq!(ws_read_until_close(&mut p, WAIT), Some(1009));
    assert!(closes_within(&mut p.stream, WAIT));
    // The server goes on.
    let mut ws = ws_connect(s.addr, "/x");
    common::assert_consecutive(&ws_frames(&mut ws, 100, 5), "/x after bad publishers");
}

#[test]
fn a_channel_is_published_again_after_a_bad_publisher() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = channels_server("");
    let mut p = raw_publisher(s.addr, "/again/k/publish");
    p.stream
        .write_all(&ws_frame(0x2, &common::raw_frame(0, 100), false))
        .unwrap();
    assert_eq!(ws_read_until_close(&mut p, WAIT), Some(1002));
    assert!(closes_within(&mut p.stream, WAIT));
    let mut good = publisher(&python, s.addr, "/again/k/publish", 100, 0);
    good.wait_line("OPEN");
    good.send_line("1");
    good.wait_line("SENT 1");
    let mut r = ws_connect(s.addr, "/again/k/receive");
    good.send_line("20");
    let got = ws_frames(&mut r, 100, 20);
    common::assert_consecutive(&got, "a good publisher after a bad one");
}

#[test]
fn a_version_12_handshake_is_told_the_version_spoken() {
    let s = channels_server("");
    let (key, _) = ws_key();
    let mut c = Client::request(
        s.addr,
        &format!("GET /x HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 12\r\n\r\n"),
    );
    let _ = c.read_to_eof(WAIT);
    eprintln!("version 12: {}", c.head.trim());
    assert!(
        c.status_line().contains(" 426 ") || c.status_line().contains(" 400 "),
        "{}",
        c.head
    );
    // RFC 6455 §4.4: the versions the server speaks.
    assert_eq!(
        c.header("Sec-WebSocket-Version").as_deref(),
        Some("13"),
        "{}",
        c.head
    );
    assert_eq!(metric(s.addr, "shard_ws_bad_handshakes_total"), 1);
}

#[test]
fn a_websocket_listener_keeps_its_framing_across_a_fallback_switch() {
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream(
            "/main",
            100,
            200,
            200,
            0,
            "fallback = \"/fb\"\nfallback_after = \"1s\""
        ),
        raw_stream("/fb", 100, 200, 0, 1_000_000, "")
    );
    let s = Ringcast::new().config_toml(toml).start();
    let mut ws = ws_connect(s.addr, "/main");
    let mut nums = Vec::new();
    let deadline = Instant::now() + WAIT;
    while nums.iter().filter(|&&n| n >= 1_000_000).count() < 20 {
        assert!(
            Instant::now() < deadline,
            "never moved to /fb: {}",
            common::short(&nums)
        );
        nums.extend(ws_frames(&mut ws, 100, 1));
    }
    let k = nums.iter().position(|&n| n >= 1_000_000).unwrap();
    // Whole frames only going forward (a loaded machine may stall this
    // reader into a skip), ending with /main's last frame.
    assert_increasing(&nums[..k], "/main part");
    assert_increasing(&nums[k..], "/fb part");
    assert_eq!(nums[k - 1], 199, "/main's last frame came");
}

#[test]
fn publisher_protocol_errors_are_counted() {
    // Counted per stream (the source thread reads the publisher), as
    // stream_ws_publisher_errors_total; listeners' errors are the shards'
    // ws_protocol_errors.
    let s = channels_server("");
    let mut p = raw_publisher(s.addr, "/pub-a/k/publish");
    p.stream
        .write_all(&ws_frame(0x2, &common::raw_frame(0, 100), false))
        .unwrap();
    assert_eq!(ws_read_until_close(&mut p, WAIT), Some(1002));
    wait_metric(&s, "stream_ws_publisher_errors_total", 1);
    let mut p = raw_publisher(s.addr, "/pub-b/k/publish");
    let mut head = vec![0x82u8, 0x80 | 127];
    head.extend_from_slice(&(2u64 << 20).to_be_bytes());
    head.extend_from_slice(&[1, 2, 3, 4]);
    p.stream.write_all(&head).unwrap();
    assert_eq!(ws_read_until_close(&mut p, WAIT), Some(1009));
    wait_metric(&s, "stream_ws_publisher_errors_total", 2);
    assert_eq!(metric(s.addr, "shard_ws_protocol_errors_total"), 0);
}

#[test]
fn a_configuration_of_channels_only_serves_channels() {
    let Some(python) = require_python_module("websockets") else {
        return;
    };
    let s = Ringcast::new()
        .config_toml(format!(
            "{HEAD}[channels]\nmax_channels = 1\nframer = \"raw\"\nframe_bytes = 100\n"
        ))
        .start();
    let mut p = publisher(&python, s.addr, "/solo/k/publish", 100, 0);
    p.wait_line("OPEN");
    let mut r = ws_connect(s.addr, "/solo/k/receive");
    p.send_line("5");
    assert_eq!(ws_frames(&mut r, 100, 5), vec![0, 1, 2, 3, 4]);
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// The sockets among `pid`'s descriptors.
fn sockets_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let l = std::fs::read_link(e.path()).ok()?;
                    let l = l.to_string_lossy().into_owned();
                    l.starts_with("socket:")
                        .then(|| format!("fd {} {l}", e.file_name().to_string_lossy()))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn listener_sockets_do_not_leak_into_source_commands() {
    // A source started by its first listener (and stopped by its last): a
    // listener's socket open in the source command would keep the
    // connection up after ringcast closed it (a WebSocket client waits for
    // the TCP close after the close handshake; an HTTP client for its EOF).
    let toml = format!(
        "{HEAD}{}",
        raw_stream("/x", 100, 200, 0, 0, "close_idle = true")
    );
    let s = Ringcast::new().config_toml(toml).start();
    let mut leaks = Vec::new();
    for round in 0..20 {
        // Several at once: a connection already waiting when the accept
        // loop comes round is taken by glommio's direct accept().
        let req = b"GET /x HTTP/1.1\r\nHost: test\r\n\r\n";
        let mut cs: Vec<Client> = (0..4).map(|_| Client::send_raw(s.addr, req)).collect();
        for c in &mut cs {
            c.read_head(WAIT);
            c.read_body(100, WAIT);
        }
        for kid in children(s.pid()) {
            for sock in sockets_of(kid) {
                leaks.push(format!("round {round}: source command {kid} holds {sock}"));
            }
        }
        drop(cs);
        assert!(
            wait_until(WAIT, || children(s.pid()).is_empty()),
            "the source command did not stop after the last listener left"
        );
    }
    assert!(
        leaks.is_empty(),
        "listener sockets leaked:\n{}",
        leaks.join("\n")
    );
}

#[test]
fn a_listener_sent_back_home_gets_no_frame_twice() {
    // /main: 100 frames, then silence. /fb: 600 frames (numbered from
    // 1,000,000), then silence too. The listener goes to /fb after 1 s of
    // silence; when /fb falls silent as well nothing in the chain delivers.
    let toml = format!(
        "{HEAD}{}{}",
        raw_stream(
            "/main",
            100,
            200,
            100,
            0,
            "fallback = \"/fb\"\nfallback_after = \"1s\"\nsource_buffer = 512"
        ),
        raw_stream("/fb", 100, 200, 600, 1_000_000, "source_buffer = 1024")
    );
    let s = Ringcast::new().config_toml(toml).start();
    let mut c = s.get_path("/main");
    let mut nums = frames_of(&c.read_body(100, WAIT), 100);
    let deadline = Instant::now() + WAIT;
    while !nums.iter().any(|&n| n >= 1_000_000) {
        assert!(Instant::now() < deadline, "never moved to /fb");
        nums.extend(frames_of(&c.read_body(100, WAIT), 100));
    }
    // Until /fb has been silent for fallback_after and a fallback check has
    // passed (a move back home is logged), then what is left.
    let moved_back = s.logs.try_wait(
        |l| l.contains("moved stream=/fb to=/main"),
        Duration::from_secs(8),
    );
    eprintln!("moved back: {moved_back:?}");
    let (rest, _) = c.read_until_eof_or(Duration::from_secs(2));
    let whole = rest.len() / 100 * 100;
    nums.extend(frames_of(&rest[..whole], 100));
    let dups: Vec<u64> = nums
        .windows(2)
        .filter(|w| w[1] <= w[0])
        .map(|w| w[1])
        .collect();
    assert!(
        dups.is_empty(),
        "frames sent again: {dups:?} in {}",
        common::short(&nums)
    );
}
