//! loadgen's `--icy` and `--websocket` modes against the real `ringcast` binary.
//!
//! ringcast serves a loadgen test stream (1,000-byte frames, 100 frames/s, written into a
//! FIFO by `loadgen::source::run` on a thread of this test). Then:
//!
//! - `--icy`: 200 loadgen clients (fast, paced, reconnect, churn and stall together) ask
//!   for ICY metadata while the title is changed through `/admin/metadata` (admin
//!   credentials); every block must be well-formed, every connection's first block must
//!   carry the current title, every long-lived reader must see the change, and no frame
//!   of the audio may be corrupt (the blocks are stripped before the frame check).
//! - a long non-Latin-1 title (4,200 bytes of UTF-8 from a title file, more than a
//!   block holds) must reach loadgen as a well-formed block, cut at a character boundary.
//! - `--websocket`: 200 loadgen clients over WebSocket: every binary message one whole,
//!   checked frame.
//!
//! The test's own ICY reader ([`IcyProbe`]) splits blocks with plain blocking reads,
//! independently of loadgen's parser. The test waits on conditions, never on time:
//! loadgen's live counters ([`LiveCounts`]: first titles and title changes per behaviour)
//! say when its readers have had the first title and then the change, and the probe says
//! when the server sent a title.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadgen::clients::{self, ClientsConfig, LiveCounts};
use loadgen::http::parse_url;
use loadgen::source::{self, SourceConfig};
use loadgen::stats::Report;

const FRAME: usize = 1000;
/// 100 frames per second.
const RATE: u64 = 100_000;
const METAINT: usize = 4000;
const CLIENTS: usize = 200;
const STREAM_ID: u32 = 14;
const ADMIN: (&str, &str) = ("admin", "hackme-14");

/// Writes the paced test stream into the FIFO until `stop` (or 90 s, a safety bound).
fn feed(fifo: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let cfg = SourceConfig {
            frame_bytes: FRAME,
            rate: RATE,
            stream_id: STREAM_ID,
            duration: Some(Duration::from_secs(90)),
            frames: None,
            header_bytes: 0,
        };
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
            return;
        };
        let _ = source::run(&cfg, &mut out, &stop);
    })
}

/// The stream's source writer and its stop flag; stops the writer when dropped (even
/// when the test fails).
struct Feed {
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            // The writer sees `stop` within 100 ms unless it is blocked opening a FIFO no
            // server reads; do not hang a failing test on it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// ringcast on a FIFO fed with the test stream, ICY blocks every [`METAINT`] bytes, an
/// admin user, and (optionally) a title file.
fn start(dir: &common::TempDir, title_file: Option<&PathBuf>) -> (common::Server, Feed) {
    let fifo = dir.mkfifo("stream.fifo");
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\n\n[[user]]\nname = \"{}\"\npassword = \"{}\"\nroles = [\"admin\"]\n\n\
         [[stream]]\nmount = \"/live\"\npath = {:?}\nframer = \"raw\"\nframe_bytes = {FRAME}\n\
         source_buffer = 256\nicy_metaint = {METAINT}\n",
        ADMIN.0,
        ADMIN.1,
        fifo.display().to_string()
    );
    if let Some(t) = title_file {
        toml.push_str(&format!("title_file = {:?}\n", t.display().to_string()));
    }
    let server = common::Ringcast::new().config_toml(toml).start();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = feed(fifo, stop.clone());
    (
        server,
        Feed {
            stop,
            writer: Some(writer),
        },
    )
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /admin/metadata?mount=/live&mode=updinfo&song=...&charset=UTF-8` with the admin's
/// credentials; returns the status line and body.
fn set_title(server: &common::Server, song: &str) -> (String, String) {
    let auth = common::basic_auth(ADMIN.0, ADMIN.1);
    let mut c = server.request(&format!(
        "GET /admin/metadata?mount=%2Flive&mode=updinfo&song={}&charset=UTF-8 HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n\r\n",
        percent_encode(song)
    ));
    let body = c.read_to_eof(common::WAIT);
    (
        c.status_line().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The test's own ICY listener: blocking reads of exactly `metaint` audio bytes, a
/// length byte and its block, so it shares no code with loadgen's parser.
struct IcyProbe {
    client: common::Client,
    metaint: usize,
    /// Audio bytes read so far.
    audio: u64,
}

impl IcyProbe {
    fn new(server: &common::Server) -> IcyProbe {
        let client = server.request("GET /live HTTP/1.1\r\nHost: t\r\nIcy-MetaData: 1\r\n\r\n");
        assert!(
            client.status_line().contains("200"),
            "{}",
            client.status_line()
        );
        let metaint: usize = client
            .header("icy-metaint")
            .unwrap_or_else(|| panic!("no icy-metaint in\n{}", client.head))
            .parse()
            .expect("icy-metaint is a number");
        assert_eq!(metaint, METAINT);
        IcyProbe {
            client,
            metaint,
            audio: 0,
        }
    }

    /// The next block's payload (empty for a zero length byte), after its audio.
    fn next_block(&mut self) -> Vec<u8> {
        let audio = self.client.read_body(self.metaint, common::WAIT);
        if self.audio == 0 {
            loadgen::frame::verify(&audio).expect("the body starts with a whole frame");
        }
        self.audio += audio.len() as u64;
        let len = self.client.read_body(1, common::WAIT)[0] as usize;
        self.client.read_body(len * 16, common::WAIT)
    }

    /// Reads blocks until one's StreamTitle satisfies `want`; returns that block's
    /// payload. Panics after `timeout`.
    fn wait_title(&mut self, want: impl Fn(&str) -> bool, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let b = self.next_block();
            if b.is_empty() {
                continue;
            }
            let title = stream_title(&b)
                .unwrap_or_else(|| panic!("malformed block {:?}", String::from_utf8_lossy(&b)));
            if want(&title) {
                return b;
            }
            last = title;
        }
        panic!("no wanted title within {timeout:?}; last title {last:?}");
    }

    /// Reads blocks until one's payload starts with `prefix`; returns it. Panics after
    /// `timeout`. (It does not check the block: the caller does, after loadgen's verdict.)
    fn wait_block(&mut self, prefix: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let b = self.next_block();
            if b.starts_with(prefix) {
                return b;
            }
        }
        panic!(
            "no block starting {:?} within {timeout:?}",
            String::from_utf8_lossy(prefix)
        );
    }

    /// Reads on until `frames` more frames' worth of audio has arrived.
    fn read_frames(&mut self, frames: u64) {
        let until = self.audio + frames * FRAME as u64;
        while self.audio < until {
            let _ = self.next_block();
        }
    }
}

/// The title of a block payload `StreamTitle='...';` + zero padding (None when the
/// payload is not exactly that, or when its padding is 16 bytes or more).
fn stream_title(payload: &[u8]) -> Option<String> {
    let end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if payload.len() - end >= 16 {
        return None;
    }
    let text = std::str::from_utf8(&payload[..end]).ok()?;
    let rest = text.strip_prefix("StreamTitle='")?;
    let stop = rest.find("';")?;
    let after = &rest[stop + 2..];
    if !(after.is_empty() || after.starts_with("StreamUrl='") && after.ends_with("';")) {
        return None;
    }
    Some(rest[..stop].to_string())
}

/// Runs loadgen clients on a thread until `stop` (60 s at most).
fn loadgen_thread(cfg: ClientsConfig, stop: Arc<AtomicBool>) -> JoinHandle<Report> {
    std::thread::spawn(move || clients::run(&cfg, &stop).expect("loadgen clients run"))
}

fn listeners(server: &common::Server) -> u64 {
    server.status_json()["clients"].as_u64().unwrap_or(0)
}

fn config(server: &common::Server, mix: &str) -> ClientsConfig {
    let url = format!("http://{}/live", server.addr);
    let mut cfg = ClientsConfig::new(vec![parse_url(&url).expect("url")], CLIENTS);
    cfg.duration = Duration::from_secs(60);
    cfg.frame_bytes = Some(FRAME as u32);
    cfg.mix = loadgen::parse::mix(mix, RATE).expect("mix");
    cfg.connect_timeout = Duration::from_secs(15);
    cfg.reconnect_after = Duration::from_secs(1);
    cfg.session_bytes = Some(2 * METAINT as u64);
    cfg
}

/// Counts of the behaviours in `mix` for [`CLIENTS`] clients, in mix order.
fn counts(mix: &str) -> Vec<usize> {
    loadgen::parse::mix_counts(&loadgen::parse::mix(mix, RATE).unwrap(), CLIENTS)
}

const MIX: &str = "fast=0.3,paced=0.3,reconnect=0.2,churn=0.1,stall=0.1";

#[test]
fn icy_listeners_see_the_title_change_and_only_whole_frames() {
    let dir = common::TempDir::new("loadgen-icy");
    let (mut server, _feed) = start(&dir, None);
    let first = "Erster Titel";
    let second = "Zweiter Titel – 東京 'live'";
    let (line, body) = set_title(&server, first);
    assert!(line.contains("200"), "title update: {line}\n{body}");

    let mut probe = IcyProbe::new(&server);
    let b = probe.wait_title(|t| t == first, common::WAIT);
    assert_eq!(stream_title(&b).as_deref(), Some(first));

    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveCounts::new(5));
    let mut cfg = config(&server, MIX);
    cfg.icy = true;
    cfg.live = Some(live.clone());
    let run = loadgen_thread(cfg, stop.clone());
    // The fast and paced readers (classes 0 and 1, connected once for the whole run)
    // have all had their first block, with the first title.
    let (fast, paced) = (counts(MIX)[0] as u64, counts(MIX)[1] as u64);
    let got = |v: &[AtomicU64]| (LiveCounts::get(v, 0), LiveCounts::get(v, 1));
    assert!(
        common::wait_until(Duration::from_secs(40), || {
            let (f, p) = got(&live.first_titles);
            f >= fast && p >= paced
        }),
        "the fast and paced readers did not all get a first title: {:?} of ({fast}, {paced}); {} listeners",
        got(&live.first_titles),
        listeners(&server)
    );
    let t_change = Instant::now();
    let (line, body) = set_title(&server, second);
    assert!(line.contains("200"), "title update: {line}\n{body}");
    probe.wait_title(|t| t == second, common::WAIT);
    eprintln!(
        "the probe saw the new title {:?} after the update",
        t_change.elapsed()
    );
    // Every one of them sees the change.
    let all_changed = common::wait_until(Duration::from_secs(40), || {
        let (f, p) = got(&live.title_changes);
        f >= fast && p >= paced
    });
    eprintln!(
        "the fast and paced readers saw the change {:?} after the update",
        t_change.elapsed()
    );
    // Two more seconds of stream: reconnects (every 1 s) and churn sessions after the
    // change get the new title first.
    probe.read_frames(200);
    stop.store(true, Ordering::Relaxed);
    let report = run.join().expect("loadgen thread");
    let summary = report.human();
    eprintln!("{summary}");
    assert!(server.running(), "ringcast exited:\n{summary}");
    assert!(
        all_changed,
        "not every fast and paced reader saw the title change: {:?} of ({fast}, {paced}):\n{summary}",
        got(&live.title_changes)
    );

    let icy = report.icy.as_ref().expect("an icy section");
    assert_eq!(icy.metaint, Some(METAINT as u32), "{summary}");
    assert_eq!(icy.metaint_mismatches, 0, "{summary}");
    assert_eq!(icy.malformed, 0, "malformed blocks:\n{summary}");
    assert_eq!(report.frames.corrupt, 0, "corrupt frames:\n{summary}");
    assert_eq!(report.data.resync_bytes, 0, "{summary}");
    assert_eq!(report.data.non_loadgen_bodies, 0, "{summary}");
    assert_eq!(report.clients.failed, 0, "failed clients:\n{summary}");
    assert_eq!(
        icy.responses_with_metaint, report.time_to_headers_us.count,
        "every response must carry icy-metaint:\n{summary}"
    );
    // A listener's first block carries the current title.
    assert!(
        icy.connections_with_blocks >= (CLIENTS - counts(MIX)[4]) as u64,
        "{summary}"
    );
    assert_eq!(
        icy.first_blocks_with_title, icy.connections_with_blocks,
        "some connection's first block had no title:\n{summary}"
    );
    // The fast and paced readers were connected across the change: each saw it once (the
    // reconnect and churn ones that connected after it got the new title first).
    assert!(icy.title_changes >= fast + paced, "{summary}");
    assert_eq!(
        got(&live.title_changes),
        (fast, paced),
        "a reader saw more than one change:\n{summary}"
    );
    // ringcast sends a title once per change, zero bytes in between.
    assert_eq!(icy.title_repeats, 0, "{summary}");
    assert_eq!(icy.last_title.as_deref(), Some(second), "{summary}");
    // Blocks every METAINT audio bytes: at least one per METAINT bytes read (minus one per
    // connection for the part after its last block).
    assert!(
        icy.blocks + report.connections.attempts >= report.data.bytes / METAINT as u64,
        "{} blocks for {} audio bytes:\n{summary}",
        icy.blocks,
        report.data.bytes
    );
    assert!(icy.empty_blocks > 0, "{summary}");
    assert!(report.frames.ok >= 20 * CLIENTS as u64, "{summary}");
    assert!(report.sessions.completed > 0, "{summary}");
    assert!(report.connections.reconnects > 0, "{summary}");
    assert!(report.passed, "{summary}");
}

#[test]
fn a_long_non_latin1_title_reaches_loadgen_well_formed() {
    let dir = common::TempDir::new("loadgen-icy-long");
    let title_file = dir.write("title.txt", "Kurz\n");
    let (server, _feed) = start(&dir, Some(&title_file));
    let mut probe = IcyProbe::new(&server);
    probe.wait_title(|t| t == "Kurz", common::WAIT);

    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveCounts::new(2));
    let mut cfg = config(&server, "fast=0.5,paced=0.5");
    cfg.clients = 20;
    cfg.icy = true;
    cfg.live = Some(live.clone());
    let run = loadgen_thread(cfg, stop.clone());
    let both = |v: &[AtomicU64]| LiveCounts::get(v, 0) + LiveCounts::get(v, 1);
    assert!(
        common::wait_until(Duration::from_secs(40), || both(&live.first_titles) >= 20),
        "loadgen's 20 clients did not all get a first title: {}; {} listeners",
        both(&live.first_titles),
        listeners(&server)
    );
    // 1,400 three-byte characters: 4,200 bytes, more than the 4,080 a block holds.
    let long = "東".repeat(1400);
    let tmp = dir.write("title.tmp", format!("{long}\n"));
    std::fs::rename(&tmp, &title_file).expect("rename the title file");
    let payload = probe.wait_block("StreamTitle='東東東".as_bytes(), common::WAIT);
    // Every loadgen client has had the long title's block (well-formed or not: a
    // malformed one counts as no change).
    let all_got = common::wait_until(Duration::from_secs(40), || {
        both(&live.title_changes) + live.malformed.load(Ordering::Relaxed) >= 20
    });
    probe.read_frames(20);
    stop.store(true, Ordering::Relaxed);
    let report = run.join().expect("loadgen thread");
    let summary = report.human();
    eprintln!("{summary}");

    let text_end = payload.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let tail = String::from_utf8_lossy(&payload[text_end.saturating_sub(12)..text_end]);
    eprintln!(
        "the block: {} bytes, text {} bytes ending {tail:?}",
        payload.len(),
        text_end
    );
    let icy = report.icy.as_ref().expect("an icy section");
    assert_eq!(
        icy.malformed, 0,
        "loadgen found malformed blocks after the title \"東\" x 1400 ({} bytes of UTF-8) was set; \
         the block the test read ends {tail:?}:\n{summary}",
        long.len()
    );
    let sent = stream_title(&payload).unwrap_or_else(|| {
        panic!("the block is not StreamTitle='...'; and padding; its text ends {tail:?}")
    });
    eprintln!(
        "title {} bytes ({} characters)",
        sent.len(),
        sent.chars().count()
    );
    assert!(
        long.starts_with(&sent),
        "the title was not cut at a character boundary"
    );
    assert!(payload.len() <= 255 * 16);
    assert!(
        all_got,
        "not all 20 loadgen clients got the long title:\n{summary}"
    );
    assert_eq!(icy.title_changes, 20, "{summary}");
    assert!(
        icy.last_title
            .as_deref()
            .is_some_and(|t| t.starts_with("東東東")),
        "{summary}"
    );
    assert_eq!(report.frames.corrupt, 0, "{summary}");
    assert!(report.passed, "{summary}");
}

#[test]
fn websocket_listeners_get_one_whole_frame_per_message() {
    let dir = common::TempDir::new("loadgen-ws");
    let (mut server, _feed) = start(&dir, None);
    // The stream flows: a plain listener gets a whole frame first.
    let mut plain = server.get_path("/live");
    assert!(
        plain.status_line().contains("200"),
        "{}",
        plain.status_line()
    );
    let f = plain.read_body(FRAME, common::WAIT);
    assert_eq!(
        loadgen::frame::verify(&f).expect("a whole frame").stream_id,
        STREAM_ID
    );
    drop(plain);

    let mix = "fast=0.4,paced=0.3,reconnect=0.1,churn=0.1,stall=0.1";
    let mut cfg = config(&server, mix);
    cfg.duration = Duration::from_secs(5);
    cfg.websocket = true;
    let report = clients::run(&cfg, &AtomicBool::new(false)).expect("loadgen clients run");
    let summary = report.human();
    eprintln!("{summary}");
    assert!(server.running(), "ringcast exited:\n{summary}");

    let ws = report.websocket.as_ref().expect("a websocket section");
    assert_eq!(ws.bad_handshakes, 0, "{summary}");
    assert_eq!(ws.upgrades, report.time_to_headers_us.count, "{summary}");
    assert!(ws.upgrades >= CLIENTS as u64, "{summary}");
    assert_eq!(ws.protocol_errors, 0, "{summary}");
    assert_eq!(
        ws.split_messages, 0,
        "messages that are not one whole frame:\n{summary}"
    );
    assert_eq!(ws.non_frame_messages, 0, "{summary}");
    assert_eq!(ws.text_messages, 0, "{summary}");
    assert_eq!(report.frames.corrupt, 0, "corrupt frames:\n{summary}");
    assert_eq!(
        ws.whole_frame_messages, report.frames.ok,
        "every frame must be a message of its own:\n{summary}"
    );
    // Framing overhead: 4 header bytes per 1,000-byte message (126 + 16-bit length).
    assert_eq!(ws.header_bytes, 4 * ws.messages, "{summary}");
    assert_eq!(report.clients.failed, 0, "failed clients:\n{summary}");
    assert_eq!(report.data.resync_bytes, 0, "{summary}");
    assert!(report.frames.ok >= 20 * CLIENTS as u64, "{summary}");
    assert!(report.sessions.completed > 0, "{summary}");
    assert!(report.connections.reconnects > 0, "{summary}");
    assert!(report.passed, "{summary}");
}
