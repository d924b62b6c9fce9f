//! Relays, mirrors and push destinations (issue 13), black-box, against the
//! real programs operators put next to ringcast: Debian's Icecast 2.4
//! (`common::icecast`), FFmpeg as encoder and as player, and ringcast itself
//! as origin and edge.
//!
//! - an edge relaying from Icecast: whole MP3 frames, the inline ICY blocks
//!   stripped, Icecast's title in `/status`;
//! - Icecast relaying from ringcast (`<relay>`);
//! - FFmpeg decoding through two hops (encoder → origin → edge → ffmpeg);
//! - failover between two upstreams in priority order, measured (upstream
//!   killed → the listener's first frame from the next one), no listener
//!   lost; what happens when the first comes back (no failback while the
//!   second serves); the growing backoff while none answers;
//! - `on_demand` relays (the origin sees a connection only while the edge
//!   has listeners);
//! - bad upstreams (garbage, a wrong content type, an endless redirect, a
//!   stall, a reset): logged, counted, retried with backoff, the listener
//!   kept;
//! - mirroring (`/admin/streamlist.txt`, an edge following an origin's
//!   mounts as they are added and removed; an Icecast master);
//! - push destinations (to Icecast and to a ringcast push mount): their
//!   state in `/status` and `/metrics`, reconnecting, failing at the retry
//!   limit; a destination that never reads does not slow the listeners;
//! - `deploy/examples/relay.toml`, as shipped, in a network namespace of its
//!   own (its fixed ports cannot collide with other tests there).
//!
//! Every MP3 body is checked with ringcast's own frame parser: whole frames
//! from the first byte to the last, so a left-over ICY block or a torn frame
//! fails the test. The two origins of a failover serve different bitrates,
//! so each frame tells which upstream it came from.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::icecast::{self, Feeder, Icecast};
use common::*;
use ::ringcast::framing::mp3_frame_len;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Media and servers
// ---------------------------------------------------------------------------

/// An MP3 file made by FFmpeg: `secs` seconds of a `freq` Hz tone, 44.1 kHz
/// stereo, constant `kbps` (no ID3 tag, no Xing frame).
fn mp3_file(dir: &TempDir, name: &str, secs: u32, kbps: u32, freq: u32) -> PathBuf {
    let path = dir.join(name);
    run(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={freq}:sample_rate=44100:duration={secs}"
        ))
        .args(["-ac", "2", "-c:a", "libmp3lame", "-b:a"])
        .arg(format!("{kbps}k"))
        .args(["-write_xing", "0", "-id3v2_version", "0", "-f", "mp3"])
        .arg(&path));
    path
}

/// A loopback port free just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `[[user]]` tables every server here has: a relay user (what edges
/// present, and what `/admin/streamlist.txt` wants), an admin, a source.
const USERS: &str = r#"
[[user]]
name = "relay"
password = "relaypw"
roles = ["relay"]

[[user]]
name = "admin"
password = "adminpw"
roles = ["admin"]

[[user]]
name = "source"
password = "sourcepw"
roles = ["source"]
"#;

/// A ringcast origin at `port` (0: any) playing `file` at `/live.mp3` in
/// real time, looped.
fn origin(port: u16, file: &Path) -> Server {
    Ringcast::new()
        .config_toml(format!(
            r#"listen = "127.0.0.1:{port}"
{USERS}
[[stream]]
mount = "/live.mp3"
path = "{}"
framer = "mp3"
realtime = true
loop = true
"#,
            file.display()
        ))
        .start()
}

/// A ringcast edge with one relay mount `/relay.mp3` from `upstreams`, in
/// priority order, plus `extra` stream settings.
fn edge(upstreams: &[String], extra: &str) -> Server {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    Ringcast::new()
        .config_toml(format!(
            r#"listen = "127.0.0.1:0"
{USERS}
[[stream]]
mount = "/relay.mp3"
relay = [{}]
{extra}
"#,
            list.join(", ")
        ))
        .start()
}

/// The `/status` entry of `mount`.
fn stream_status(server: &Server, mount: &str) -> Value {
    let s = server.status_json();
    s["streams"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["mount"] == mount).cloned())
        .unwrap_or_else(|| panic!("no stream {mount} in /status: {s}"))
}

/// A figure of `mount`'s `/status` entry, as an integer.
fn figure(server: &Server, mount: &str, key: &str) -> u64 {
    let s = stream_status(server, mount);
    s[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no figure {key} for {mount}: {s}"))
}

/// Wait until `cond` holds of `mount`'s `/status` entry; panics with it (and
/// the log) at the deadline.
fn wait_status(server: &Server, mount: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(WAIT, || {
        last = stream_status(server, mount);
        cond(&last)
    });
    assert!(
        ok,
        "{mount}: not {what} within {WAIT:?}; status: {last}\nlog:\n{}",
        server.logs.dump()
    );
    last
}

/// The mounts `/status` lists.
fn mounts(server: &Server) -> Vec<String> {
    let s = server.status_json();
    s["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["mount"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A whole small response to `request` sent to `addr`: (status line, body).
fn exchange(addr: SocketAddr, request: &str) -> (String, String) {
    let mut c = Client::request(addr, request);
    let body = c.read_to_eof(WAIT);
    (
        c.status_line().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `GET path` with Basic credentials `user:password` (base64 by hand: no
/// test dependency for it).
fn get_with_auth(addr: SocketAddr, path: &str, user: &str, password: &str) -> (String, String) {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    exchange(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: test\r\nAuthorization: Basic {token}\r\n\r\n"),
    )
}

// ---------------------------------------------------------------------------
// Listening to MP3
// ---------------------------------------------------------------------------

/// MPEG-1 Layer III bitrates (kbit/s) by the header's bitrate index.
const MP3_KBPS: [u32; 16] = [
    0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0,
];

/// One MP3 frame as a listener got it: when its last byte came, and its
/// bitrate (which tells the upstream it came from).
#[derive(Debug, Clone, Copy)]
struct Rx {
    at: Instant,
    kbps: u32,
}

/// A listener on a real socket that reads an MP3 stream as it comes, on a
/// thread of its own, and cuts it into frames with ringcast's parser from
/// the first byte: anything that is not a whole frame (an ICY block left in,
/// a torn frame) is an error. Stops (closing the socket) when dropped.
struct Mp3Listener {
    frames: Arc<Mutex<Vec<Rx>>>,
    /// Why the stream stopped being whole frames, or that it ended.
    trouble: Arc<Mutex<Option<String>>>,
    bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The listener's own address (the server logs it as the peer).
    pub local: SocketAddr,
}

impl Mp3Listener {
    /// Connect to `addr` and ask for `mount` (HTTP/1.0, no inline titles);
    /// panics unless the answer is a 200.
    fn connect(addr: SocketAddr, mount: &str) -> Mp3Listener {
        let mut c = Client::request(addr, &format!("GET {mount} HTTP/1.0\r\nHost: t\r\n\r\n"));
        assert!(c.status_line().contains(" 200"), "GET {mount}: {}", c.head);
        // What came with the head.
        let (first, _) = c.read_until_eof_or(Duration::from_millis(1));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let trouble = Arc::new(Mutex::new(None));
        let bytes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let local = c.local_addr();
        let (f, t, b, s) = (frames.clone(), trouble.clone(), bytes.clone(), stop.clone());
        let mut sock = c.stream;
        let thread = std::thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = first;
            let mut chunk = vec![0u8; 16 * 1024];
            let mut offset = 0usize;
            while !s.load(Ordering::Relaxed) {
                // Whole frames at the front of `buf`.
                loop {
                    let Some(h) = buf.get(..4) else { break };
                    let Some(len) = mp3_frame_len(h.try_into().unwrap()) else {
                        *t.lock().unwrap() = Some(format!(
                            "no MP3 frame at byte {offset} (after {} frames): {:02x?}",
                            f.lock().unwrap().len(),
                            &buf[..buf.len().min(16)]
                        ));
                        return;
                    };
                    if buf.len() < len {
                        break;
                    }
                    let kbps = MP3_KBPS[usize::from(buf[2] >> 4)];
                    f.lock().unwrap().push(Rx {
                        at: Instant::now(),
                        kbps,
                    });
                    buf.drain(..len);
                    offset += len;
                }
                match sock.read(&mut chunk) {
                    Ok(0) => {
                        *t.lock().unwrap() = Some(format!("EOF after {offset} bytes"));
                        return;
                    }
                    Ok(n) => {
                        b.fetch_add(n, Ordering::Relaxed);
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => {
                        *t.lock().unwrap() = Some(format!("read error after {offset} bytes: {e}"));
                        return;
                    }
                }
            }
        });
        Mp3Listener {
            frames,
            trouble,
            bytes,
            stop,
            thread: Some(thread),
            local,
        }
    }

    /// Frames so far.
    fn count(&self) -> usize {
        self.frames.lock().unwrap().len()
    }

    fn frames(&self) -> Vec<Rx> {
        self.frames.lock().unwrap().clone()
    }

    /// Panics if the stream stopped being whole MP3 frames or ended.
    fn assert_fine(&self, who: &str) {
        if let Some(t) = self.trouble.lock().unwrap().as_ref() {
            panic!("{who}: {t}");
        }
    }

    /// Wait until `n` more frames than now came (whole ones); panics with
    /// what went wrong.
    fn wait_more(&self, n: usize, who: &str) {
        let want = self.count() + n;
        let ok = wait_until(WAIT, || {
            self.trouble.lock().unwrap().is_some() || self.count() >= want
        });
        self.assert_fine(who);
        assert!(ok, "{who}: fewer than {n} more frames within {WAIT:?}");
    }

    /// Wait for the first frame of `kbps` that came after `since`; returns
    /// when it came.
    fn wait_kbps_after(&self, kbps: u32, since: Instant, who: &str) -> Instant {
        let mut at = None;
        let ok = wait_until(WAIT, || {
            at = self
                .frames
                .lock()
                .unwrap()
                .iter()
                .find(|r| r.at >= since && r.kbps == kbps)
                .map(|r| r.at);
            at.is_some() || self.trouble.lock().unwrap().is_some()
        });
        self.assert_fine(who);
        assert!(ok, "{who}: no {kbps} kbit/s frame within {WAIT:?}");
        at.unwrap()
    }

    /// Whether the connection is still open (not ended, no error).
    fn connected(&self) -> bool {
        self.trouble.lock().unwrap().is_none()
    }
}

impl Drop for Mp3Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read `mount` at `addr` for `n` bytes (HTTP/1.0, `extra` request headers)
/// and return the body.
fn read_stream(addr: SocketAddr, mount: &str, extra: &str, n: usize) -> (Client, Vec<u8>) {
    let mut c = Client::request(
        addr,
        &format!("GET {mount} HTTP/1.0\r\nHost: t\r\n{extra}\r\n"),
    );
    assert!(c.status_line().contains(" 200"), "GET {mount}: {}", c.head);
    let body = c.read_body(n, WAIT);
    (c, body)
}

/// The whole MP3 frames `body` is, from its first byte (a partial frame at
/// the end allowed); panics at the first byte that does not start a frame.
fn whole_mp3_frames(body: &[u8], who: &str) -> usize {
    let mut at = 0;
    let mut n = 0;
    while let Some(h) = body.get(at..at + 4) {
        let len = mp3_frame_len(h.try_into().unwrap()).unwrap_or_else(|| {
            panic!(
                "{who}: no MP3 frame at byte {at} of {} (after {n} frames): {:02x?}",
                body.len(),
                &body[at..body.len().min(at + 16)]
            )
        });
        if at + len > body.len() {
            break;
        }
        at += len;
        n += 1;
    }
    n
}

/// The delays of the `reopening in X s` lines of `stream`, in order.
fn backoff_delays(server: &Server, stream: &str) -> Vec<f64> {
    let prefix = format!("source stream={stream} reopening in ");
    server
        .logs
        .lines()
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find(&prefix)? + prefix.len()..];
            rest.trim_end_matches('s').trim().parse().ok()
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// Real peers
// ---------------------------------------------------------------------------

/// FFmpeg pushes MP3 into Icecast 2.4; a ringcast edge relays it. The edge
/// asks Icecast for inline titles (Icecast then puts a metadata block every
/// 16,000 bytes) and strips them: its listener gets whole MP3 frames over
/// several metadata intervals. A title set on Icecast shows in the edge's
/// `/status`.
#[test]
fn an_edge_relays_icecast_with_its_titles_stripped_from_the_audio() {
    if !require_all(&["icecast2", "ffmpeg"]) {
        return;
    }
    let ice = Icecast::new().start();
    let _encoder = ice.feed_mp3("/live.mp3");
    ice.wait_mount("/live.mp3", WAIT);
    ice.set_title("/live.mp3", "First Artist - First Song");

    let edge = edge(&[ice.url("/live.mp3")], "");
    wait_status(&edge, "/relay.mp3", "relaying Icecast", |s| {
        s["upstream"] == ice.url("/live.mp3").as_str()
    });
    edge.wait_log(
        "icy-metaint from Icecast",
        |l| l.contains("source connected stream=/relay.mp3") && l.contains("icy-metaint=16000"),
        WAIT,
    );
    // Icecast's first block comes with the audio: the title it had.
    wait_status(&edge, "/relay.mp3", "showing Icecast's title", |s| {
        s["title"] == "First Artist - First Song"
    });

    // 80,000 bytes: five of Icecast's metadata intervals, all whole frames.
    let (_c, body) = read_stream(edge.addr, "/relay.mp3", "", 80_000);
    let frames = whole_mp3_frames(&body, "the edge's listener");
    assert!(frames > 150, "only {frames} frames");
    assert!(
        !body.windows(12).any(|w| w == b"StreamTitle="),
        "an ICY block is left in the audio"
    );

    // A new title on Icecast reaches the edge's status.
    ice.set_title("/live.mp3", "Second Artist - Second Song");
    let s = wait_status(&edge, "/relay.mp3", "showing the new title", |s| {
        s["title"] == "Second Artist - Second Song"
    });
    assert!(s["title_changes"].as_u64().unwrap() >= 2, "{s}");
    // Icecast counts the edge as one listener.
    assert_eq!(
        ice.source_field("/live.mp3", "listeners").as_deref(),
        Some("1"),
        "{}",
        ice.stats()
    );
}

/// Icecast relays a ringcast mount (`<relay>`): a listener of Icecast gets
/// whole MP3 frames; ringcast sees Icecast as one listener.
#[test]
fn icecast_relays_a_ringcast_mount() {
    if !require_all(&["icecast2", "ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("relay-ice");
    let file = mp3_file(&dir, "tone.mp3", 10, 128, 440);
    let origin = origin(0, &file);
    let ice = Icecast::new()
        .fragment(format!(
            "<relay><server>127.0.0.1</server><port>{}</port><mount>/live.mp3</mount>\
             <local-mount>/relayed.mp3</local-mount><on-demand>0</on-demand>\
             <relay-shoutcast-metadata>1</relay-shoutcast-metadata></relay>",
            origin.addr.port()
        ))
        .start();
    ice.wait_mount("/relayed.mp3", WAIT);
    let mut c = ice.listen("/relayed.mp3");
    assert!(c.status_line().contains(" 200"), "{}", c.head);
    let body = c.read_body(64_000, WAIT);
    let frames = whole_mp3_frames(&body, "Icecast's listener");
    assert!(frames > 150, "only {frames} frames");
    let s = stream_status(&origin, "/live.mp3");
    assert_eq!(s["clients"], 1, "Icecast is the origin's one listener: {s}");
    assert!(
        ice.error_log().contains("/relayed.mp3"),
        "{}",
        ice.error_log()
    );
}

/// FFmpeg pushes to a ringcast origin (the Icecast protocol), a ringcast
/// edge relays the origin, and FFmpeg plays the edge: it decodes 4 seconds
/// of audio without one error.
#[test]
fn ffmpeg_decodes_through_two_hops() {
    if !require("ffmpeg") {
        return;
    }
    let origin = Ringcast::new()
        .config_toml(format!(
            r#"listen = "127.0.0.1:0"
{USERS}
[[stream]]
mount = "/live.mp3"
push = true
"#
        ))
        .start();
    let _encoder = Feeder::start(Command::new("ffmpeg").args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-ac",
        "2",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
        "-f",
        "mp3",
        "-content_type",
        "audio/mpeg",
        &format!("icecast://source:sourcepw@{}/live.mp3", origin.addr),
    ]));
    wait_status(&origin, "/live.mp3", "fed by ffmpeg", |s| {
        s["source_connected"] == true && s["frames_in"].as_u64() > Some(10)
    });
    let edge = edge(&[format!("http://{}/live.mp3", origin.addr)], "");
    wait_status(&edge, "/relay.mp3", "relaying", |s| {
        s["frames_in"].as_u64() > Some(10)
    });
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(format!("http://{}/relay.mp3", edge.addr))
        .args(["-t", "4", "-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
        .output()
        .expect("run ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {errors}");
    assert!(errors.trim().is_empty(), "ffmpeg's errors: {errors}");
    let seconds = out.stdout.len() as f64 / 16000.0;
    eprintln!("ffmpeg decoded {seconds:.2} s through origin and edge");
    assert!(seconds >= 3.9, "only {seconds:.2} s decoded");
    // The edge is the origin's one listener.
    assert_eq!(figure(&origin, "/live.mp3", "clients"), 1);
}
