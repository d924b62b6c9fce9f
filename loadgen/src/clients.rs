//! `loadgen clients`: N HTTP clients on one thread, driven by edge-triggered epoll.
//!
//! # Model
//!
//! Every client is a fixed-size `Conn` in one `Vec` (a few hundred bytes each, no
//! per-client buffer): all sockets read into one shared 64 KiB buffer and the bytes are
//! checked in place by the client's streaming [`Checker`]. The response head is read with
//! `MSG_PEEK` first, then consumed exactly, so a paced or stalled client never reads a
//! body byte it is not entitled to.
//!
//! Timers (connect/head timeout, pacing, planned reconnects, retry back-off) live in one
//! binary heap of `(deadline, client, generation)`; each client has at most one live
//! entry (`wake_at`), stale entries are skipped when popped. A connection's epoll token
//! carries its generation too, so events of a closed socket never reach its successor.
//!
//! Behaviours:
//! - `fast`: reads until the socket is empty (at most 256 KiB per turn, then yields).
//! - `paced@R`: a real-time player: after the head it may have read at most
//!   `burst + R * elapsed` body bytes; when ahead it sleeps until `burst / 2` more bytes
//!   are allowed.
//! - `stall`: reads the head, then nothing: the server sees a dead player.
//! - `reconnect`: reads like `fast`, and reconnects `--reconnect-after` after its head.
//! - `churn`: short sessions, one after another, as listeners come and go on a busy day:
//!   connect, send the request, read the head and `--session-bytes` of body (and, with
//!   `--session-hold D`, whatever else arrives until D after the head), close
//!   (`--close`: a normal FIN, an abortive RST, or every other session each way), and at
//!   once start the next session (or, with `--session-rate R`, when the R-per-second
//!   schedule allows the next one). `-n` is the most sessions in flight. A session
//!   that gets no head or not its body bytes within `--connect-timeout` of its start or
//!   its head counts as a timeout.
//!
//! A failed connection (refused, timed out, bad status, closed by the server while the
//! client was reading) is counted, marks its client failed, and is retried after
//! `--retry-delay`, as players do.
//!
//! Modes (every behaviour works in each):
//! - `--icy`: every request sends `Icy-MetaData: 1`; the response must carry
//!   `icy-metaint`; the body is split by [`IcyDemux`] into audio (frame-checked) and
//!   metadata blocks (each checked and counted). Pacing, `--session-bytes` and
//!   `data.bytes` count audio bytes.
//! - `--websocket`: an RFC 6455 upgrade with a random key per connection; the
//!   `Sec-WebSocket-Accept` is checked; each binary message must hold exactly one whole
//!   frame of the test stream; pings get a masked pong, a close gets a masked close.
//!   Pacing, `--session-bytes` and `data.bytes` count message payload bytes.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::frame::{Checker, Corruption, Event, HEADER_LEN};
use crate::http::{parse_head, BodyKind, Chunked, Target, MAX_HEAD};
use crate::icy::{IcyDemux, IcyEvent, Malformed, Verdict};
use crate::parse::MixEntry;
use crate::source::realtime_ns;
use crate::stats::{ClassReport, Hist, IcyCounts, Report, SessionCounts, WsCounts};
use crate::sys::{self, Epoll};
use crate::ws::{WsEvent, WsParser};

/// What one client does with its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Read as fast as possible.
    Fast,
    /// Read at most `rate` bytes/s (a real-time player).
    Paced {
        /// Bytes per second.
        rate: u64,
    },
    /// Read the response head, then nothing.
    Stall,
    /// Read as fast as possible; reconnect after `reconnect_after`.
    Reconnect,
    /// Short sessions back to back: head, `session_bytes` of body, close, next session.
    Churn,
}

/// How a `churn` session ends its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMode {
    /// A normal close: `shutdown(SHUT_WR)` (a FIN), drain what already arrived, `close()`.
    Fin,
    /// An abortive close: SO_LINGER 0, then `close()`: the kernel sends a RST.
    Rst,
    /// Every other session each way (even sessions FIN, odd ones RST).
    Mix,
}

impl CloseMode {
    /// Whether session number `n` (0-based, counted over all clients) ends with a RST.
    pub fn rst_for(self, n: u64) -> bool {
        match self {
            CloseMode::Fin => false,
            CloseMode::Rst => true,
            CloseMode::Mix => n % 2 == 1,
        }
    }
}

/// The request line's HTTP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    /// `GET /path HTTP/1.0`.
    Http10,
    /// `GET /path HTTP/1.1` (the default).
    Http11,
    /// Half each way, in pairs: attempts 0 and 1 send 1.1, 2 and 3 send 1.0, and so on,
    /// so that with `CloseMode::Mix` (which alternates singly) every pairing of version
    /// and close occurs.
    Mix,
}

impl HttpVersion {
    /// Whether connection attempt number `n` (0-based, over all clients) sends HTTP/1.0.
    pub fn http10_for(self, n: u64) -> bool {
        match self {
            HttpVersion::Http10 => true,
            HttpVersion::Http11 => false,
            HttpVersion::Mix => (n / 2) % 2 == 1,
        }
    }
}

impl Behaviour {
    /// Label used in reports: `fast`, `paced@16000`, `stall`, `reconnect`.
    pub fn label(&self) -> String {
        match self {
            Behaviour::Fast => "fast".into(),
            Behaviour::Paced { rate } => format!("paced@{rate}"),
            Behaviour::Stall => "stall".into(),
            Behaviour::Reconnect => "reconnect".into(),
            Behaviour::Churn => "churn".into(),
        }
    }
}

/// A validated `loadgen clients` configuration.
#[derive(Clone, Debug)]
pub struct ClientsConfig {
    /// Targets; client i uses `targets[i % len]`.
    pub targets: Vec<Target>,
    /// Number of clients.
    pub clients: usize,
    /// New connections per second; 0 = as fast as possible.
    pub ramp_per_sec: f64,
    /// Run length; the run stops by itself after it.
    pub duration: Duration,
    /// Behaviours and their shares.
    pub mix: Vec<MixEntry>,
    /// When `reconnect` clients reconnect, counted from their response head.
    pub reconnect_after: Duration,
    /// Expected frame length (frames of another length are corrupt); None = learn it
    /// from each connection's first frame.
    pub frame_bytes: Option<u32>,
    /// Local source addresses to rotate over (inclusive); None = let the kernel choose.
    pub src_ips: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Limit for connect + complete response head.
    pub connect_timeout: Duration,
    /// Pause before a failed client connects again.
    pub retry_delay: Duration,
    /// Bytes a paced client may read ahead of its rate; None = max(frame, 4096).
    pub paced_burst: Option<u64>,
    /// SO_RCVBUF for every socket; None = kernel default (autotuned).
    pub rcvbuf: Option<u32>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Failed clients tolerated, as a fraction of `clients`.
    pub max_failed_fraction: f64,
    /// Body bytes a `churn` session reads before it closes; None = one frame
    /// (`frame_bytes`, or 1 byte when that is not given); 0 = close after the head.
    pub session_bytes: Option<u64>,
    /// How long a `churn` session stays connected after its response head at least
    /// (reading as fast as it can once it has its `session_bytes`); 0 = close as soon as
    /// it has them.
    pub session_hold: Duration,
    /// How `churn` sessions close.
    pub close: CloseMode,
    /// Most `churn` sessions started per second, over all clients, once the first `-n`
    /// have started; 0 = no limit (each slot starts its next session at once).
    pub session_rate: f64,
    /// HTTP version of every request.
    pub http_version: HttpVersion,
    /// Ask for ICY metadata and strip and check the blocks.
    pub icy: bool,
    /// Connect with a WebSocket upgrade and read binary messages.
    pub websocket: bool,
    /// Counters updated while the run goes on, for a caller to wait on (tests).
    pub live: Option<Arc<LiveCounts>>,
}

/// Figures a caller can watch while a run goes on (a test waits on them instead of
/// guessing how long loadgen needs), per behaviour class in `mix` order.
#[derive(Debug, Default)]
pub struct LiveCounts {
    /// `--icy`: connections whose first block carried a title.
    pub first_titles: Vec<AtomicU64>,
    /// `--icy`: title changes seen.
    pub title_changes: Vec<AtomicU64>,
    /// `--icy`: malformed blocks, all classes.
    pub malformed: AtomicU64,
}

impl LiveCounts {
    /// Zeroed counters for `classes` behaviour classes.
    pub fn new(classes: usize) -> Self {
        LiveCounts {
            first_titles: (0..classes).map(|_| AtomicU64::new(0)).collect(),
            title_changes: (0..classes).map(|_| AtomicU64::new(0)).collect(),
            malformed: AtomicU64::new(0),
        }
    }

    /// The current value of `v[class]` (0 for a class it does not have).
    pub fn get(v: &[AtomicU64], class: usize) -> u64 {
        v.get(class).map_or(0, |a| a.load(Ordering::Relaxed))
    }
}

impl ClientsConfig {
    /// A configuration with the CLI defaults for `targets` and `clients`.
    pub fn new(targets: Vec<Target>, clients: usize) -> Self {
        let loopback = targets
            .iter()
            .all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
        ClientsConfig {
            targets,
            clients,
            ramp_per_sec: 0.0,
            duration: Duration::from_secs(10),
            mix: vec![MixEntry {
                behaviour: Behaviour::Fast,
                weight: 1.0,
            }],
            reconnect_after: Duration::from_secs(2),
            frame_bytes: None,
            src_ips: loopback.then(default_src_range),
            connect_timeout: Duration::from_secs(5),
            retry_delay: Duration::from_secs(1),
            paced_burst: None,
            rcvbuf: None,
            progress: false,
            max_failed_fraction: 0.0,
            session_bytes: None,
            close: CloseMode::Fin,
            session_hold: Duration::ZERO,
            session_rate: 0.0,
            http_version: HttpVersion::Http11,
            icy: false,
            websocket: false,
            live: None,
        }
    }
}

/// 127.0.0.2 - 127.0.0.250: 249 source addresses, each with its own ephemeral ports.
pub fn default_src_range() -> (Ipv4Addr, Ipv4Addr) {
    (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 250))
}

const NS: u64 = 1_000_000_000;
/// Shared read buffer size.
const BUF: usize = 64 * 1024;
/// Most bytes one client reads per turn before others get theirs.
const READ_TURN: usize = 256 * 1024;
/// Most connections started per loop turn when ramping as fast as possible.
const START_BATCH: usize = 256;
/// epoll events per wait.
const EVENTS: usize = 1024;
/// Most reads of 64 KiB that a FIN close drains before it closes.
const FIN_DRAIN_READS: usize = 4;
/// Distinct error messages kept for the report.
const MAX_EXAMPLES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started yet.
    Idle,
    /// Non-blocking connect in progress.
    Connecting,
    /// Writing the request (`req_off` bytes sent).
    Sending,
    /// Waiting for the complete response head.
    Head,
    /// Reading the body.
    Body,
    /// A `stall` client after its head: reads nothing.
    Stalled,
    /// Closed; waiting for `deadline` to connect again.
    Waiting,
    /// A stalled client the server closed: finished for this run.
    Done,
}

#[derive(Clone, Copy, Debug)]
enum Body {
    UntilClose,
    Length(u64),
    Chunked(Chunked),
}

/// One client: its current connection and what it has achieved so far.
struct Conn {
    /// The socket of the current connection.
    fd: Option<OwnedFd>,
    /// Bumped on every close: epoll tokens and timers of older connections are stale.
    gen: u32,
    /// Index into the behaviour classes.
    class: u16,
    /// Index into the targets.
    target: u16,
    phase: Phase,
    /// The socket may have unread bytes (edge-triggered: set by events, cleared by a
    /// short or EAGAIN read).
    readable: bool,
    /// The peer closed its side (EPOLLRDHUP or a hang-up was reported): a
    /// short read no longer means drained, so the body is read to its end
    /// (one event can carry the last bytes and the close together).
    peer_closed: bool,
    /// In the ready queue already.
    queued: bool,
    /// Ever had a response head.
    ever_headers: bool,
    /// Ever had a good first frame (reading clients).
    ever_first: bool,
    /// Ever had a failed connection.
    ever_failed: bool,
    /// This connection sends the HTTP/1.0 request.
    http10: bool,
    /// Had its first good frame on this connection.
    got_first: bool,
    /// Has checked this connection's stream id against its URL's.
    stream_checked: bool,
    /// Request bytes written so far.
    req_off: u16,
    /// Run-relative ns: when this connection was started.
    attempt_start: u64,
    /// Run-relative ns: when its response head was complete.
    headers_at: u64,
    /// Run-relative ns: its first body byte (first frame of a non-test stream).
    first_byte_at: u64,
    /// Phase deadline: head timeout, planned reconnect or retry start (0 = none).
    deadline: u64,
    /// Pacing wake-up (0 = none).
    pace_at: u64,
    /// Deadline of this client's live heap entry (0 = none).
    wake_at: u64,
    /// Body bytes read on this connection.
    body_bytes: u64,
    body: Body,
    checker: Checker,
    /// The mode's per-connection state (ICY demux, WebSocket parser); None = plain.
    ext: Option<Box<Ext>>,
}

/// Per-connection state of `--icy` and `--websocket` (boxed: plain clients pay 8 bytes).
enum Ext {
    /// `--icy`, after the response head gave `icy-metaint`.
    Icy(IcyDemux),
    /// `--websocket`.
    Ws(WsConn),
}

/// One WebSocket connection's state.
struct WsConn {
    /// The `Sec-WebSocket-Key` sent.
    key: String,
    /// The upgrade request.
    request: Vec<u8>,
    parser: WsParser,
    /// The current data message is binary.
    binary: bool,
    /// Frame events (good or corrupt) in the current message.
    msg_frames: u32,
    /// A close frame was sent on this connection.
    close_sent: bool,
}

/// Figures per behaviour class.
struct Class {
    behaviour: Behaviour,
    clients: u64,
    bytes: u64,
    frames: u64,
    skipped: u64,
    corrupt: u64,
    latency: Hist,
    ttff: Hist,
}

/// Counters shared by all clients.
#[derive(Default)]
struct Counters {
    started: u64,
    attempts: u64,
    connect_failed: u64,
    timeouts: u64,
    http_errors: u64,
    closed_early: u64,
    stall_closed: u64,
    reconnects: u64,
    truncated: u64,
    bytes: u64,
    frames: u64,
    skipped: u64,
    bad_header: u64,
    checksum: u64,
    stream_changed: u64,
    url_stream_mismatch: u64,
    seq_resets: u64,
    leading: u64,
    resync: u64,
    non_loadgen: u64,
    /// Clients past their head right now.
    connected: u64,
    with_headers: u64,
    with_first: u64,
    failed_clients: u64,
    /// Completed `churn` sessions, and how they closed.
    sessions: u64,
    rst_closes: u64,
    fin_closes: u64,
    /// Requests sent as HTTP/1.0.
    http10_requests: u64,
    icy: IcyCounts,
    ws: WsCounts,
}

impl Counters {
    fn corrupt(&self) -> u64 {
        self.bad_header + self.checksum + self.stream_changed + self.url_stream_mismatch
    }
    fn failed_attempts(&self) -> u64 {
        self.connect_failed + self.timeouts + self.http_errors + self.closed_early
    }
}

/// Everything but the clients themselves, so a client and the shared state can be
/// borrowed mutably at once.
struct Shared<'a> {
    cfg: &'a ClientsConfig,
    epoll: Epoll,
    buf: Vec<u8>,
    heap: BinaryHeap<std::cmp::Reverse<(u64, u32, u32)>>,
    ready: VecDeque<(u32, u32)>,
    classes: Vec<Class>,
    c: Counters,
    latency: Hist,
    interval_latency: Hist,
    tth: Hist,
    ttff: Hist,
    /// Stream id seen first on each target (u64::MAX = none yet).
    target_stream: Vec<u64>,
    /// Reading (non-stall) clients.
    readers: u64,
    all_headers_at: Option<u64>,
    all_first_at: Option<u64>,
    errors: Vec<String>,
    /// Next source address index.
    src_next: u32,
    burst: u64,
    sync_limit: u64,
    /// Each target's request (with `Icy-MetaData: 1` for `--icy`).
    requests_11: Vec<Vec<u8>>,
    /// The HTTP/1.0 form of each target's request.
    requests_10: Vec<Vec<u8>>,
    /// Seed of the WebSocket keys and masks, from /dev/urandom.
    ws_seed: u64,
    /// WebSocket keys and masks made so far.
    ws_count: u64,
    /// Body bytes per `churn` session.
    session_bytes: u64,
    /// `churn` clients (sessions in flight).
    churners: u64,
    /// Sessions completed in each second of the run.
    session_secs: Vec<u64>,
    /// With `--session-rate`: when the next session may start (run-relative ns).
    next_session_at: u64,
    /// Session start to completion, µs.
    session_time: Hist,
    t0: Instant,
}

impl Shared<'_> {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn note_error(&mut self, msg: String) {
        if self.errors.len() < MAX_EXAMPLES && !self.errors.contains(&msg) {
            self.errors.push(msg);
        }
    }
}

fn token(i: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | i as u64
}

/// Assigns classes to clients: counts by largest remainder, interleaved so every URL
/// and every stretch of the ramp gets a similar mix.
fn assign_classes(mix: &[MixEntry], n: usize) -> Vec<u16> {
    let counts = crate::parse::mix_counts(mix, n);
    let mut out = Vec::with_capacity(n);
    let mut given = vec![0usize; counts.len()];
    for i in 0..n {
        // The class furthest behind its share of the first i+1 clients.
        let mut best = 0;
        let mut best_deficit = f64::MIN;
        for (k, &cnt) in counts.iter().enumerate() {
            if given[k] >= cnt {
                continue;
            }
            let deficit = cnt as f64 * (i + 1) as f64 / n as f64 - given[k] as f64;
            if deficit > best_deficit {
                best_deficit = deficit;
                best = k;
            }
        }
        given[best] += 1;
        out.push(best as u16);
    }
    out
}

/// Runs the clients for the configured duration (or until `stop` is set) and returns
/// the report. Errors are configuration or setup failures (limits, epoll).
pub fn run(cfg: &ClientsConfig, stop: &AtomicBool) -> Result<Report, String> {
    if cfg.targets.is_empty() {
        return Err("no --url given".into());
    }
    if cfg.clients == 0 {
        return Err("-n must be at least 1".into());
    }
    if cfg.targets.len() > u16::MAX as usize || cfg.clients > u32::MAX as usize / 2 {
        return Err("too many URLs or clients".into());
    }
    if cfg.frame_bytes.is_some_and(|f| (f as usize) < HEADER_LEN) {
        return Err(format!(
            "--frame-bytes must be at least {HEADER_LEN} (the loadgen frame header)"
        ));
    }
    if cfg.icy && cfg.websocket {
        return Err(
            "--icy and --websocket do not go together (WebSocket listeners get no ICY blocks)"
                .into(),
        );
    }
    if cfg.websocket && cfg.http_version != HttpVersion::Http11 {
        return Err("--websocket needs --http-version 1.1 (an upgrade is HTTP/1.1)".into());
    }
    let need = cfg.clients as u64 + 64;
    sys::raise_nofile(need)?;
    if let Some((lo, hi)) = sys::local_port_range() {
        let ports = (hi - lo + 1) as u64;
        let ips = cfg
            .src_ips
            .map_or(1, |(a, b)| (u32::from(b) - u32::from(a)) as u64 + 1);
        let per_target = cfg.clients.div_ceil(cfg.targets.len()) as u64;
        if per_target > ports * ips * 9 / 10 {
            eprintln!(
                "loadgen: warning: {per_target} connections per URL but only {ports} ephemeral ports x {ips} source address(es); use --src-ip-range"
            );
        }
    }
    let epoll = Epoll::new().map_err(|e| format!("epoll_create: {e}"))?;
    let class_of = assign_classes(&cfg.mix, cfg.clients);
    let mut classes: Vec<Class> = cfg
        .mix
        .iter()
        .map(|m| Class {
            behaviour: m.behaviour,
            clients: 0,
            bytes: 0,
            frames: 0,
            skipped: 0,
            corrupt: 0,
            latency: Hist::new(),
            ttff: Hist::new(),
        })
        .collect();
    for &k in &class_of {
        classes[k as usize].clients += 1;
    }
    let readers = classes
        .iter()
        .filter(|c| c.behaviour != Behaviour::Stall)
        .map(|c| c.clients)
        .sum();
    let churners = classes
        .iter()
        .filter(|c| c.behaviour == Behaviour::Churn)
        .map(|c| c.clients)
        .sum();
    let frame = cfg.frame_bytes.unwrap_or(0) as u64;
    let burst = cfg.paced_burst.unwrap_or(frame.max(4096)).max(1);
    let mut conns: Vec<Conn> = (0..cfg.clients)
        .map(|i| Conn {
            fd: None,
            gen: 0,
            class: class_of[i],
            target: (i % cfg.targets.len()) as u16,
            phase: Phase::Idle,
            readable: false,
            peer_closed: false,
            queued: false,
            ever_headers: false,
            ever_first: false,
            ever_failed: false,
            http10: false,
            got_first: false,
            stream_checked: false,
            req_off: 0,
            attempt_start: 0,
            headers_at: 0,
            first_byte_at: 0,
            deadline: 0,
            pace_at: 0,
            wake_at: 0,
            body_bytes: 0,
            body: Body::UntilClose,
            checker: Checker::new(cfg.frame_bytes, 0),
            ext: None,
        })
        .collect();
    let requests_11: Vec<Vec<u8>> = cfg
        .targets
        .iter()
        .map(|t| {
            if cfg.icy {
                crate::http::with_header(&t.request, "Icy-MetaData: 1")
            } else {
                t.request.clone()
            }
        })
        .collect();
    let mut sh = Shared {
        cfg,
        epoll,
        buf: vec![0u8; BUF],
        heap: BinaryHeap::new(),
        ready: VecDeque::new(),
        classes,
        c: Counters::default(),
        latency: Hist::new(),
        interval_latency: Hist::new(),
        tth: Hist::new(),
        ttff: Hist::new(),
        target_stream: vec![u64::MAX; cfg.targets.len()],
        readers,
        all_headers_at: None,
        all_first_at: None,
        errors: Vec::new(),
        src_next: 0,
        burst,
        sync_limit: (64 * 1024u64).max(2 * frame + HEADER_LEN as u64),
        requests_10: requests_11
            .iter()
            .map(|r| crate::http::http10_request(r))
            .collect(),
        requests_11,
        ws_seed: random_seed(),
        ws_count: 0,
        session_bytes: cfg.session_bytes.unwrap_or(frame.max(1)),
        churners,
        session_secs: Vec::new(),
        next_session_at: 0,
        session_time: Hist::new(),
        t0: Instant::now(),
    };
    let usage0 = sys::rusage();
    let end = cfg.duration.as_nanos().min(u64::MAX as u128) as u64;
    let start_at = |i: usize| -> u64 {
        if cfg.ramp_per_sec > 0.0 {
            (i as f64 * NS as f64 / cfg.ramp_per_sec) as u64
        } else {
            0
        }
    };
    let mut next_start = 0usize;
    let mut events = vec![sys::empty_event(); EVENTS];
    let mut progress = Progress::new(usage0);
    let mut next_progress = NS;
    loop {
        let t = sh.now();
        if t >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let mut batch = 0;
        while next_start < cfg.clients && batch < START_BATCH && start_at(next_start) <= t {
            sh.c.started += 1;
            start_attempt(&mut conns, next_start, &mut sh, t);
            next_start += 1;
            batch += 1;
        }
        // Timers due now; entries pushed while handling these are due later or are
        // handled next turn, so this loop is bounded by the heap's size.
        let mut due = sh.heap.len();
        while due > 0 {
            due -= 1;
            let Some(&std::cmp::Reverse((at, i, gen))) = sh.heap.peek() else {
                break;
            };
            if at > t {
                break;
            }
            sh.heap.pop();
            let i = i as usize;
            if conns[i].gen != gen || conns[i].wake_at != at {
                continue;
            }
            conns[i].wake_at = 0;
            on_timer(&mut conns, i, &mut sh, t);
        }
        for _ in 0..sh.ready.len() {
            let Some((i, gen)) = sh.ready.pop_front() else {
                break;
            };
            let i = i as usize;
            if conns[i].gen == gen {
                conns[i].queued = false;
                read_body(&mut conns, i, &mut sh);
            }
        }
        if t >= next_progress {
            if cfg.progress {
                eprintln!("{}", progress.line(&sh, t));
            }
            sh.interval_latency.reset();
            next_progress += NS;
        }
        let mut wake = end.min(next_progress);
        if let Some(&std::cmp::Reverse((at, _, _))) = sh.heap.peek() {
            wake = wake.min(at);
        }
        if next_start < cfg.clients {
            wake = wake.min(start_at(next_start));
        }
        let now = sh.now();
        let timeout_ms = if !sh.ready.is_empty() || wake <= now {
            0
        } else {
            (wake - now).div_ceil(1_000_000).min(1000) as i32
        };
        let n = sh
            .epoll
            .wait(&mut events, timeout_ms)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &events[..n] {
            let (tok, bits) = (ev.u64, ev.events);
            let i = (tok & 0xffff_ffff) as usize;
            let gen = (tok >> 32) as u32;
            if i < conns.len() && conns[i].gen == gen {
                on_event(&mut conns, i, bits, &mut sh);
            }
        }
    }
    let t_end = sh.now();
    let usage1 = sys::rusage();
    let report = build_report(&conns, &sh, t_end, usage0, usage1);
    drop(conns);
    Ok(report)
}

fn start_attempt(conns: &mut [Conn], i: usize, sh: &mut Shared, t: u64) {
    let cfg = sh.cfg;
    let src = cfg.src_ips.map(|(a, b)| {
        let count = u32::from(b) - u32::from(a) + 1;
        let ip = Ipv4Addr::from(u32::from(a) + sh.src_next % count);
        sh.src_next = sh.src_next.wrapping_add(1);
        ip
    });
    let c = &mut conns[i];
    let target = &cfg.targets[c.target as usize];
    c.http10 = cfg.http_version.http10_for(sh.c.attempts);
    if c.http10 {
        sh.c.http10_requests += 1;
    }
    sh.c.attempts += 1;
    c.attempt_start = t;
    c.headers_at = 0;
    c.first_byte_at = 0;
    c.body_bytes = 0;
    c.got_first = false;
    c.stream_checked = false;
    c.req_off = 0;
    c.readable = false;
    c.peer_closed = false;
    c.pace_at = 0;
    c.body = Body::UntilClose;
    c.checker = Checker::new(cfg.frame_bytes, sh.sync_limit);
    c.ext = None;
    if cfg.websocket {
        let n = sh.ws_count;
        sh.ws_count += 1;
        let key = crate::ws::key(crate::ws::key_bytes(sh.ws_seed, n));
        let request = crate::ws::request(&target.path, &target.host, &key);
        c.ext = Some(Box::new(Ext::Ws(WsConn {
            key,
            request,
            parser: WsParser::new(),
            binary: false,
            msg_frames: 0,
            close_sent: false,
        })));
    }
    match sys::connect_nonblocking(target.addr, src, cfg.rcvbuf) {
        Ok((fd, done)) => {
            let ev = sys::EV_IN | sys::EV_OUT | sys::EV_RDHUP | sys::EV_ET;
            if let Err(e) = sh.epoll.add(&fd, ev, token(i, c.gen)) {
                c.fd = Some(fd);
                fail(conns, i, sh, Failure::Connect, format!("epoll_ctl: {e}"), t);
                return;
            }
            c.fd = Some(fd);
            c.phase = Phase::Connecting;
            c.deadline = t + cfg.connect_timeout.as_nanos() as u64;
            if done {
                c.phase = Phase::Sending;
                send_request(conns, i, sh);
            }
        }
        Err(e) => {
            let msg = format!("connect to {} from {src:?}: {e}", target.addr);
            fail(conns, i, sh, Failure::Connect, msg, t);
            return;
        }
    }
    reschedule(&mut conns[i], i, sh);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Connect,
    Timeout,
    Http,
    ClosedEarly,
}

/// Closes the current connection (if any) and forgets its timers and events.
fn close(c: &mut Conn, sh: &mut Shared) {
    if matches!(c.phase, Phase::Body | Phase::Stalled) {
        sh.c.connected -= 1;
    }
    c.fd = None;
    c.gen = c.gen.wrapping_add(1);
    c.wake_at = 0;
    c.pace_at = 0;
    c.deadline = 0;
    c.queued = false;
    c.readable = false;
    c.peer_closed = false;
}

/// Counts a failed connection, marks its client failed, and schedules a retry.
fn fail(conns: &mut [Conn], i: usize, sh: &mut Shared, kind: Failure, msg: String, t: u64) {
    match kind {
        Failure::Connect => sh.c.connect_failed += 1,
        Failure::Timeout => sh.c.timeouts += 1,
        Failure::Http => sh.c.http_errors += 1,
        Failure::ClosedEarly => sh.c.closed_early += 1,
    }
    sh.note_error(msg);
    let c = &mut conns[i];
    if !c.ever_failed {
        c.ever_failed = true;
        sh.c.failed_clients += 1;
    }
    close(c, sh);
    c.phase = Phase::Waiting;
    c.deadline = t + sh.cfg.retry_delay.as_nanos() as u64;
    reschedule(c, i, sh);
}

/// A `churn` session that has its body bytes ends now, or once its hold is over (its
/// deadline then says when). Returns true when the session ended.
fn churn_bytes_done(conns: &mut [Conn], i: usize, sh: &mut Shared, t: u64) -> bool {
    let c = &mut conns[i];
    if c.body_bytes < sh.session_bytes {
        return false;
    }
    let close_at = c.headers_at + sh.cfg.session_hold.as_nanos() as u64;
    if t >= close_at {
        end_session(conns, i, sh, t);
        return true;
    }
    c.deadline = close_at;
    false
}

/// A `churn` session has what it came for: close it (FIN or RST), count it, and start
/// the next session on the next loop turn.
fn end_session(conns: &mut [Conn], i: usize, sh: &mut Shared, t: u64) {
    let c = &mut conns[i];
    let n = sh.c.sessions;
    sh.c.sessions += 1;
    sh.session_time
        .record(t.saturating_sub(c.attempt_start) / 1000);
    let sec = (t / NS) as usize;
    if sh.session_secs.len() <= sec {
        sh.session_secs.resize(sec + 1, 0);
    }
    sh.session_secs[sec] += 1;
    if let Some(fd) = &c.fd {
        if sh.cfg.close.rst_for(n) {
            sh.c.rst_closes += 1;
            // Best effort: if it fails the close below is a normal one.
            let _ = sys::set_linger_zero(fd);
        } else {
            sh.c.fin_closes += 1;
            // A FIN first, then drain what already arrived (bounded), so that the
            // close() itself finds nothing unread (which would send a RST).
            let _ = sys::shutdown_write(fd);
            for _ in 0..FIN_DRAIN_READS {
                match sys::read(fd, &mut sh.buf) {
                    Ok(m) if m == sh.buf.len() => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
    }
    close(c, sh);
    c.phase = Phase::Waiting;
    let mut start = t.max(1);
    if sh.cfg.session_rate > 0.0 {
        // A schedule, not a bucket: a slow stretch is not made up for by a burst.
        start = start.max(sh.next_session_at);
        sh.next_session_at = start + (NS as f64 / sh.cfg.session_rate) as u64;
    }
    c.deadline = start;
    reschedule(c, i, sh);
}

/// Makes sure the heap holds an entry for the client's earliest deadline.
fn reschedule(c: &mut Conn, i: usize, sh: &mut Shared) {
    let wake = match (c.deadline, c.pace_at) {
        (0, p) => p,
        (d, 0) => d,
        (d, p) => d.min(p),
    };
    if wake != 0 && (c.wake_at == 0 || wake < c.wake_at) {
        c.wake_at = wake;
        sh.heap.push(std::cmp::Reverse((wake, i as u32, c.gen)));
    }
}

fn on_timer(conns: &mut [Conn], i: usize, sh: &mut Shared, t: u64) {
    let c = &mut conns[i];
    match c.phase {
        Phase::Connecting | Phase::Sending | Phase::Head if c.deadline != 0 && c.deadline <= t => {
            let what = if c.phase == Phase::Head {
                "response head"
            } else {
                "connect"
            };
            let msg = format!(
                "no {what} from {} within {:?}",
                sh.cfg.targets[c.target as usize].addr, sh.cfg.connect_timeout
            );
            fail(conns, i, sh, Failure::Timeout, msg, t);
            return;
        }
        Phase::Waiting if c.deadline != 0 && c.deadline <= t => {
            start_attempt(conns, i, sh, t);
            return;
        }
        Phase::Body => {
            let behaviour = sh.classes[c.class as usize].behaviour;
            if behaviour == Behaviour::Reconnect && c.deadline != 0 && c.deadline <= t {
                sh.c.reconnects += 1;
                close(c, sh);
                start_attempt(conns, i, sh, t);
                return;
            }
            if behaviour == Behaviour::Churn && c.deadline != 0 && c.deadline <= t {
                if c.body_bytes >= sh.session_bytes {
                    // The end of its hold.
                    end_session(conns, i, sh, t);
                    return;
                }
                let msg = format!(
                    "no {} body bytes from {} within {:?} of the response head",
                    sh.session_bytes,
                    sh.cfg.targets[c.target as usize].addr,
                    sh.cfg.connect_timeout
                );
                fail(conns, i, sh, Failure::Timeout, msg, t);
                return;
            }
            if c.pace_at != 0 && c.pace_at <= t {
                c.pace_at = 0;
                if c.readable {
                    // read_body reschedules the client itself.
                    read_body(conns, i, sh);
                    return;
                }
            }
        }
        _ => {}
    }
    let c = &mut conns[i];
    reschedule(c, i, sh);
}

fn on_event(conns: &mut [Conn], i: usize, bits: u32, sh: &mut Shared) {
    let t = sh.now();
    let c = &mut conns[i];
    if bits & (sys::EV_RDHUP | sys::EV_ERR) != 0 {
        // Edge-triggered: this is the only event the close will give.
        c.peer_closed = true;
    }
    match c.phase {
        Phase::Connecting => {
            if bits & (sys::EV_OUT | sys::EV_ERR) == 0 {
                return;
            }
            let Some(fd) = &c.fd else { return };
            match sys::socket_error(fd) {
                Ok(()) => {
                    c.phase = Phase::Sending;
                    send_request(conns, i, sh);
                }
                Err(e) => {
                    let msg = format!("connect to {}: {e}", sh.cfg.targets[c.target as usize].addr);
                    fail(conns, i, sh, Failure::Connect, msg, t);
                }
            }
        }
        Phase::Sending => {
            if bits & (sys::EV_OUT | sys::EV_ERR) != 0 {
                send_request(conns, i, sh);
            }
        }
        Phase::Head => read_head(conns, i, sh),
        Phase::Body => {
            c.readable = true;
            read_body(conns, i, sh);
        }
        Phase::Stalled => {
            if bits & (sys::EV_ERR | sys::EV_RDHUP) != 0 {
                // A dead player does not come back: the client is done.
                sh.c.stall_closed += 1;
                close(c, sh);
                c.phase = Phase::Done;
            }
        }
        Phase::Idle | Phase::Waiting | Phase::Done => {}
    }
}

fn send_request(conns: &mut [Conn], i: usize, sh: &mut Shared) {
    let t = sh.now();
    let c = &mut conns[i];
    let req = match c.ext.as_deref() {
        Some(Ext::Ws(w)) => &w.request,
        _ if c.http10 => &sh.requests_10[c.target as usize],
        _ => &sh.requests_11[c.target as usize],
    };
    let Some(fd) = &c.fd else { return };
    while (c.req_off as usize) < req.len() {
        match sys::send(fd, &req[c.req_off as usize..]) {
            Ok(n) => c.req_off += n as u16,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let msg = format!(
                    "sending request to {}: {e}",
                    sh.cfg.targets[c.target as usize].addr
                );
                fail(conns, i, sh, Failure::Connect, msg, t);
                return;
            }
        }
    }
    c.phase = Phase::Head;
    read_head(conns, i, sh);
}

fn read_head(conns: &mut [Conn], i: usize, sh: &mut Shared) {
    let t = sh.now();
    let c = &mut conns[i];
    let Some(fd) = &c.fd else { return };
    let addr = sh.cfg.targets[c.target as usize].addr;
    let n = match sys::peek(fd, &mut sh.buf[..MAX_HEAD]) {
        Ok(0) => {
            let msg = format!("{addr} closed the connection before the response head");
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
        Err(e) => {
            let msg = format!("reading response head from {addr}: {e}");
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
    };
    let head = match parse_head(&sh.buf[..n]) {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(e) => {
            let msg = format!("{addr}: {e}");
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
    };
    // Consume exactly the head; the peek proved the bytes are there.
    match sys::read(fd, &mut sh.buf[..head.len]) {
        Ok(m) if m == head.len => {}
        Ok(m) => {
            let msg = format!(
                "{addr}: short read of the response head ({m} of {})",
                head.len
            );
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
        Err(e) => {
            let msg = format!("reading response head from {addr}: {e}");
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
    }
    let mut body_kind = head.body;
    if let Some(Ext::Ws(w)) = c.ext.as_deref() {
        if let Err(e) = crate::ws::check_handshake(&sh.buf[..head.len], head.status, &w.key) {
            sh.c.ws.bad_handshakes += 1;
            let msg = format!("{addr}: {e}");
            fail(conns, i, sh, Failure::Http, msg, t);
            return;
        }
        sh.c.ws.upgrades += 1;
        // After the 101 the connection is the WebSocket's until it closes.
        body_kind = BodyKind::UntilClose;
    } else if !(200..300).contains(&head.status) {
        let msg = format!("{addr}: HTTP status {}", head.status);
        fail(conns, i, sh, Failure::Http, msg, t);
        return;
    }
    if sh.cfg.icy {
        let metaint = match crate::http::icy_metaint(&sh.buf[..head.len]) {
            Ok(Some(m)) if m > 0 => m,
            Ok(_) => {
                let msg = format!("{addr}: asked for ICY metadata, got no icy-metaint");
                fail(conns, i, sh, Failure::Http, msg, t);
                return;
            }
            Err(_) => {
                let msg = format!("{addr}: malformed icy-metaint header");
                fail(conns, i, sh, Failure::Http, msg, t);
                return;
            }
        };
        let icy = &mut sh.c.icy;
        icy.responses_with_metaint += 1;
        match icy.metaint {
            None => icy.metaint = Some(metaint),
            Some(m) if m != metaint => icy.metaint_mismatches += 1,
            Some(_) => {}
        }
        c.ext = Some(Box::new(Ext::Icy(IcyDemux::new(metaint))));
    }
    c.headers_at = t;
    sh.tth.record((t - c.attempt_start) / 1000);
    if !c.ever_headers {
        c.ever_headers = true;
        sh.c.with_headers += 1;
        if sh.c.with_headers == sh.cfg.clients as u64 {
            sh.all_headers_at = Some(t);
        }
    }
    sh.c.connected += 1;
    c.body = match body_kind {
        BodyKind::UntilClose => Body::UntilClose,
        BodyKind::Length(n) => Body::Length(n),
        BodyKind::Chunked => Body::Chunked(Chunked::default()),
    };
    let behaviour = sh.classes[c.class as usize].behaviour;
    c.deadline = 0;
    if behaviour == Behaviour::Stall {
        c.phase = Phase::Stalled;
        reschedule(c, i, sh);
        return;
    }
    c.phase = Phase::Body;
    if behaviour == Behaviour::Reconnect {
        c.deadline = t + sh.cfg.reconnect_after.as_nanos() as u64;
    }
    if behaviour == Behaviour::Churn {
        c.deadline = t + sh.cfg.connect_timeout.as_nanos() as u64;
        if churn_bytes_done(conns, i, sh, t) {
            return;
        }
    }
    let c = &mut conns[i];
    if matches!(c.body, Body::Length(0)) {
        end_of_body(conns, i, sh, None);
        return;
    }
    c.readable = true;
    read_body(conns, i, sh);
}

/// Reads what the client's behaviour allows, checking it. Reschedules the client.
fn read_body(conns: &mut [Conn], i: usize, sh: &mut Shared) {
    let gen = conns[i].gen;
    let behaviour = sh.classes[conns[i].class as usize].behaviour;
    let mut turn = 0usize;
    loop {
        let c = &mut conns[i];
        if c.phase != Phase::Body || !c.readable {
            break;
        }
        let t = sh.now();
        let want = match behaviour {
            Behaviour::Paced { rate } => {
                let elapsed = t.saturating_sub(c.headers_at);
                let allowance = sh.burst + (rate as u128 * elapsed as u128 / NS as u128) as u64;
                let allowed = allowance.saturating_sub(c.body_bytes);
                if allowed == 0 {
                    // Ahead of the rate: sleep until half a burst more is allowed.
                    if c.pace_at == 0 {
                        let more = (sh.burst / 2).max(1);
                        let wait = (more as u128 * NS as u128).div_ceil(rate as u128) as u64;
                        c.pace_at = t + wait.max(1_000_000);
                    }
                    break;
                }
                (allowed as usize).min(BUF)
            }
            // Exactly the session's bytes (the rest stays unread until the close);
            // during a hold, all there is.
            Behaviour::Churn if c.body_bytes < sh.session_bytes => {
                ((sh.session_bytes - c.body_bytes) as usize).min(BUF)
            }
            _ => BUF,
        };
        let Some(fd) = &c.fd else { break };
        match sys::read(fd, &mut sh.buf[..want]) {
            Ok(0) => {
                end_of_body(conns, i, sh, None);
                return;
            }
            Ok(n) => {
                let recv_ns = realtime_ns();
                on_body_bytes(conns, i, sh, n, recv_ns, t);
                if conns[i].gen != gen {
                    return;
                }
                if behaviour == Behaviour::Churn && churn_bytes_done(conns, i, sh, t) {
                    return;
                }
                turn += n;
                let c = &mut conns[i];
                if n < want && !c.peer_closed {
                    c.readable = false;
                    break;
                }
                if turn >= READ_TURN {
                    if !c.queued {
                        c.queued = true;
                        sh.ready.push_back((i as u32, gen));
                    }
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conns[i].readable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                end_of_body(conns, i, sh, Some(e));
                return;
            }
        }
    }
    reschedule(&mut conns[i], i, sh);
}

/// The body ended (EOF, reset, end of a sized or chunked body) before the run did.
fn end_of_body(conns: &mut [Conn], i: usize, sh: &mut Shared, err: Option<io::Error>) {
    let t = sh.now();
    let c = &mut conns[i];
    if c.checker.mid_frame() {
        sh.c.truncated += 1;
    }
    let addr = sh.cfg.targets[c.target as usize].addr;
    let msg = match err {
        Some(e) => format!("{addr}: connection error while reading the body: {e}"),
        None => format!("{addr} ended the response before the run ended"),
    };
    fail(conns, i, sh, Failure::ClosedEarly, msg, t);
}

/// Processes `n` body bytes in `sh.buf` for client `i`, according to its body framing
/// and its mode.
fn on_body_bytes(conns: &mut [Conn], i: usize, sh: &mut Shared, n: usize, recv_ns: u64, t: u64) {
    let c = &mut conns[i];
    let buf = std::mem::take(&mut sh.buf);
    let mut ext = c.ext.take();
    let data = &buf[..n];
    let mut ended = false;
    let mut bad_chunking = false;
    let mut protocol: Option<String> = None;
    match &mut c.body {
        Body::UntilClose => protocol = deliver(c, sh, &mut ext, data, recv_ns, t).err(),
        Body::Length(rem) => {
            let take = (*rem).min(n as u64) as usize;
            *rem -= take as u64;
            ended = *rem == 0;
            protocol = deliver(c, sh, &mut ext, &data[..take], recv_ns, t).err();
        }
        Body::Chunked(dec) => {
            let mut dec2 = *dec;
            let r = dec2.feed(data, &mut |d| {
                if protocol.is_none() {
                    protocol = deliver(c, sh, &mut ext, d, recv_ns, t).err();
                }
            });
            if let Body::Chunked(dec) = &mut c.body {
                *dec = dec2;
            }
            match r {
                Ok(()) => ended = dec2.done(),
                Err(_) => bad_chunking = true,
            }
        }
    }
    c.ext = ext;
    sh.buf = buf;
    let addr = sh.cfg.targets[conns[i].target as usize].addr;
    if let Some(why) = protocol {
        let msg = format!("{addr}: {why}");
        fail(conns, i, sh, Failure::Http, msg, t);
    } else if bad_chunking {
        let msg = format!("{addr}: malformed chunked encoding");
        fail(conns, i, sh, Failure::Http, msg, t);
    } else if ended {
        end_of_body(conns, i, sh, None);
    }
}

/// Passes body bytes (after de-chunking) through the connection's mode to the frame
/// checker: plain, the ICY demultiplexer (audio checked, blocks counted), or the WebSocket
/// parser (message payloads checked, control frames answered). Err = a protocol error;
/// the caller fails the connection.
fn deliver(
    c: &mut Conn,
    sh: &mut Shared,
    ext: &mut Option<Box<Ext>>,
    data: &[u8],
    recv_ns: u64,
    t: u64,
) -> Result<(), String> {
    match ext.as_deref_mut() {
        None => {
            check(c, sh, data, recv_ns, t);
            Ok(())
        }
        Some(Ext::Icy(d)) => {
            let mut malformed = None;
            let mut title_changed = false;
            d.feed(data, &mut |ev| match ev {
                IcyEvent::Audio(a) => {
                    check(c, sh, a, recv_ns, t);
                }
                IcyEvent::Block {
                    verdict,
                    bytes,
                    index,
                } => {
                    let m = &mut sh.c.icy;
                    m.blocks += 1;
                    if index == 0 {
                        m.connections_with_blocks += 1;
                    }
                    m.metadata_bytes += bytes as u64;
                    match verdict {
                        Verdict::Unchanged => m.empty_blocks += 1,
                        Verdict::Title { first, changed } => {
                            m.title_blocks += 1;
                            let live = sh.cfg.live.as_deref();
                            let class = c.class as usize;
                            if first && index == 0 {
                                m.first_blocks_with_title += 1;
                                if let Some(a) = live.and_then(|l| l.first_titles.get(class)) {
                                    a.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            if changed {
                                m.title_changes += 1;
                                if let Some(a) = live.and_then(|l| l.title_changes.get(class)) {
                                    a.fetch_add(1, Ordering::Relaxed);
                                }
                            } else if !first {
                                m.title_repeats += 1;
                            }
                            title_changed |= changed || first;
                        }
                        Verdict::Malformed(k) => {
                            m.malformed += 1;
                            if let Some(l) = sh.cfg.live.as_deref() {
                                l.malformed.fetch_add(1, Ordering::Relaxed);
                            }
                            match k {
                                Malformed::Unterminated => m.malformed_unterminated += 1,
                                Malformed::Syntax => m.malformed_syntax += 1,
                                Malformed::NoTitle => m.malformed_no_title += 1,
                                Malformed::Padding => m.malformed_padding += 1,
                                Malformed::Utf8Cut => m.malformed_utf8_cut += 1,
                            }
                            malformed = Some(k);
                        }
                    }
                }
            });
            if let Some(k) = malformed {
                let (title, len) = d.last_title();
                let m = &mut sh.c.icy;
                let e = format!("{}: title of {len} bytes starting {title:?}", k.name());
                if m.malformed_examples.len() < MAX_EXAMPLES && !m.malformed_examples.contains(&e) {
                    m.malformed_examples.push(e);
                }
            } else if title_changed {
                let (title, _) = d.last_title();
                if sh.c.icy.last_title.as_deref() != Some(title.as_str()) {
                    sh.c.icy.last_title = Some(title);
                }
            }
            Ok(())
        }
        Some(Ext::Ws(w)) => {
            let WsConn {
                parser,
                binary,
                msg_frames,
                close_sent,
                ..
            } = w;
            let seed = sh.ws_seed;
            let r = parser.feed(data, &mut |ev| match ev {
                WsEvent::Header(n) => sh.c.ws.header_bytes += n as u64,
                WsEvent::MessageStart(op) => {
                    sh.c.ws.messages += 1;
                    *binary = op == crate::ws::op::BINARY;
                    if !*binary {
                        sh.c.ws.text_messages += 1;
                    }
                    *msg_frames = 0;
                }
                WsEvent::Data(d) => {
                    if *binary {
                        *msg_frames += check(c, sh, d, recv_ns, t);
                    }
                }
                WsEvent::MessageEnd => {
                    if *binary {
                        let ws = &mut sh.c.ws;
                        if *msg_frames == 0 && c.checker.before_first_frame() {
                            ws.non_frame_messages += 1;
                        } else if *msg_frames == 1 && !c.checker.mid_frame() {
                            ws.whole_frame_messages += 1;
                        } else {
                            ws.split_messages += 1;
                        }
                    }
                }
                WsEvent::Ping(p) => {
                    sh.c.ws.pings += 1;
                    if !*close_sent {
                        let mask = mask_for(seed, &mut sh.ws_count);
                        let f = crate::ws::masked_frame(crate::ws::op::PONG, p, mask);
                        if send_control(c, &f) {
                            sh.c.ws.pongs_sent += 1;
                        } else {
                            sh.c.ws.control_send_failures += 1;
                        }
                    }
                }
                WsEvent::Pong => sh.c.ws.pongs_received += 1,
                WsEvent::Close(code) => {
                    sh.c.ws.closes_received += 1;
                    if !*close_sent {
                        *close_sent = true;
                        let mask = mask_for(seed, &mut sh.ws_count);
                        let payload = code.map(u16::to_be_bytes);
                        let f = crate::ws::masked_frame(
                            crate::ws::op::CLOSE,
                            payload.as_ref().map_or(&[][..], |p| &p[..]),
                            mask,
                        );
                        if send_control(c, &f) {
                            sh.c.ws.closes_sent += 1;
                        } else {
                            sh.c.ws.control_send_failures += 1;
                        }
                    }
                }
            });
            r.map_err(|e| {
                sh.c.ws.protocol_errors += 1;
                format!("WebSocket protocol error: {e}")
            })
        }
    }
}

/// A fresh masking key.
fn mask_for(seed: u64, count: &mut u64) -> [u8; 4] {
    let n = *count;
    *count += 1;
    let b = crate::ws::key_bytes(seed, n);
    [b[0], b[1], b[2], b[3]]
}

/// Sends a small control frame whole, or reports that the socket did not take it all.
fn send_control(c: &Conn, frame: &[u8]) -> bool {
    let Some(fd) = &c.fd else { return false };
    let mut off = 0;
    while off < frame.len() {
        match sys::send(fd, &frame[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// 64 random bits from /dev/urandom (the time when it cannot be read).
fn random_seed() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => realtime_ns() ^ (std::process::id() as u64) << 32,
    }
}

/// Feeds body bytes to the client's frame checker and records what it finds; returns
/// how many frames (good or corrupt) ended in `data`.
fn check(c: &mut Conn, sh: &mut Shared, data: &[u8], recv_ns: u64, t: u64) -> u32 {
    if data.is_empty() {
        return 0;
    }
    let mut ended = 0u32;
    if c.body_bytes == 0 {
        c.first_byte_at = t;
    }
    c.body_bytes += data.len() as u64;
    sh.c.bytes += data.len() as u64;
    let class = &mut sh.classes[c.class as usize];
    class.bytes += data.len() as u64;
    let Conn {
        checker,
        got_first,
        ever_first,
        stream_checked,
        attempt_start,
        first_byte_at,
        target,
        ..
    } = c;
    let counters = &mut sh.c;
    let latency = &mut sh.latency;
    let interval = &mut sh.interval_latency;
    let ttff = &mut sh.ttff;
    let target_stream = &mut sh.target_stream;
    let readers = sh.readers;
    let all_first_at = &mut sh.all_first_at;
    let mut first = |at: u64, class: &mut Class, counters: &mut Counters| {
        if !*got_first {
            *got_first = true;
            let us = (at - *attempt_start) / 1000;
            ttff.record(us);
            class.ttff.record(us);
            if !*ever_first {
                *ever_first = true;
                counters.with_first += 1;
                if counters.with_first == readers {
                    *all_first_at = Some(at);
                }
            }
        }
    };
    checker.feed(data, &mut |ev| match ev {
        Event::Frame(h) => {
            ended += 1;
            counters.frames += 1;
            class.frames += 1;
            let us = recv_ns.saturating_sub(h.send_ns) / 1000;
            latency.record(us);
            interval.record(us);
            class.latency.record(us);
            first(t, class, counters);
            if !*stream_checked {
                *stream_checked = true;
                let seen = &mut target_stream[*target as usize];
                if *seen == u64::MAX {
                    *seen = h.stream_id as u64;
                } else if *seen != h.stream_id as u64 {
                    counters.url_stream_mismatch += 1;
                    class.corrupt += 1;
                }
            }
        }
        Event::Gap(n) => {
            counters.skipped += n;
            class.skipped += n;
        }
        Event::Corrupt(k) => {
            ended += 1;
            match k {
                Corruption::BadHeader => counters.bad_header += 1,
                Corruption::Checksum => counters.checksum += 1,
                Corruption::StreamChanged => counters.stream_changed += 1,
            }
            class.corrupt += 1;
        }
        Event::SeqReset => counters.seq_resets += 1,
        Event::Leading(n) => counters.leading += n,
        Event::Resync(n) => counters.resync += n,
        Event::NotLoadgen => {
            counters.non_loadgen += 1;
            first(*first_byte_at, class, counters);
        }
    });
    ended
}

/// Once-a-second progress on stderr.
struct Progress {
    last_t: u64,
    last_bytes: u64,
    last_frames: u64,
    last_sessions: u64,
    last_usage: sys::Rusage,
}

impl Progress {
    fn new(u: sys::Rusage) -> Self {
        Progress {
            last_t: 0,
            last_bytes: 0,
            last_frames: 0,
            last_sessions: 0,
            last_usage: u,
        }
    }

    fn line(&mut self, sh: &Shared, t: u64) -> String {
        let dt = (t - self.last_t).max(1) as f64 / NS as f64;
        let u = sys::rusage();
        let cpu = (u.user_s + u.system_s - self.last_usage.user_s - self.last_usage.system_s) / dt;
        let c = &sh.c;
        let mut s = format!(
            "[{:6.1}s] connected {}/{} failed {} | {:.2} MB/s {} frames/s | p99 {:.2} ms | corrupt {} skipped {} | loadgen cpu {:.0}%",
            t as f64 / NS as f64,
            c.connected,
            sh.cfg.clients,
            c.failed_attempts(),
            (c.bytes - self.last_bytes) as f64 / 1e6 / dt,
            ((c.frames - self.last_frames) as f64 / dt).round(),
            sh.interval_latency.quantile(0.99) as f64 / 1000.0,
            c.corrupt(),
            c.skipped,
            cpu * 100.0
        );
        if sh.churners > 0 {
            let _ = write!(
                s,
                " | sessions {} ({:.0}/s)",
                c.sessions,
                (c.sessions - self.last_sessions) as f64 / dt
            );
            self.last_sessions = c.sessions;
        }
        self.last_t = t;
        self.last_bytes = c.bytes;
        self.last_frames = c.frames;
        self.last_usage = u;
        s
    }
}

fn build_report(
    conns: &[Conn],
    sh: &Shared,
    t_end: u64,
    u0: sys::Rusage,
    u1: sys::Rusage,
) -> Report {
    let cfg = sh.cfg;
    let c = &sh.c;
    let wall_s = t_end as f64 / NS as f64;
    let mut r = Report {
        loadgen_version: env!("CARGO_PKG_VERSION").to_string(),
        urls: cfg.targets.iter().map(|t| t.url.clone()).collect(),
        duration_s: cfg.duration.as_secs_f64(),
        wall_s,
        ramp_per_s: cfg.ramp_per_sec,
        frame_bytes: cfg.frame_bytes,
        ..Report::default()
    };
    r.clients.requested = cfg.clients as u64;
    r.clients.started = c.started;
    r.clients.readers = sh.readers;
    r.clients.connected_at_end = conns
        .iter()
        .filter(|k| matches!(k.phase, Phase::Body | Phase::Stalled))
        .count() as u64;
    r.clients.with_headers = c.with_headers;
    r.clients.with_first_frame = c.with_first;
    r.clients.failed = c.failed_clients;
    r.clients.failed_fraction = c.failed_clients as f64 / cfg.clients as f64;
    let k = &mut r.connections;
    k.attempts = c.attempts;
    k.connect_failed = c.connect_failed;
    k.timeouts = c.timeouts;
    k.http_errors = c.http_errors;
    k.closed_early = c.closed_early;
    k.stall_closed = c.stall_closed;
    k.reconnects = c.reconnects;
    k.truncated_at_close = c.truncated;
    k.error_examples = sh.errors.clone();
    r.data.bytes = c.bytes;
    r.data.mb_per_s = if wall_s > 0.0 {
        c.bytes as f64 / 1e6 / wall_s
    } else {
        0.0
    };
    r.data.leading_bytes = c.leading;
    r.data.resync_bytes = c.resync;
    r.data.non_loadgen_bodies = c.non_loadgen;
    r.frames.ok = c.frames;
    r.frames.skipped = c.skipped;
    r.frames.corrupt = c.corrupt();
    r.frames.bad_header = c.bad_header;
    r.frames.checksum = c.checksum;
    r.frames.stream_changed = c.stream_changed;
    r.frames.url_stream_mismatch = c.url_stream_mismatch;
    r.frames.seq_resets = c.seq_resets;
    r.latency_us = sh.latency.percentiles();
    r.time_to_headers_us = sh.tth.percentiles();
    r.time_to_first_frame_us = sh.ttff.percentiles();
    r.all_headers_ms = sh.all_headers_at.map(|t| t as f64 / 1e6);
    r.all_first_frame_ms = sh.all_first_at.map(|t| t as f64 / 1e6);
    r.classes = sh
        .classes
        .iter()
        .map(|cl| ClassReport {
            behaviour: cl.behaviour.label(),
            clients: cl.clients,
            bytes: cl.bytes,
            frames: cl.frames,
            skipped: cl.skipped,
            corrupt: cl.corrupt,
            latency_us: cl.latency.percentiles(),
            time_to_first_frame_us: cl.ttff.percentiles(),
        })
        .collect();
    let user = u1.user_s - u0.user_s;
    let system = u1.system_s - u0.system_s;
    r.loadgen.cpu_user_s = user;
    r.loadgen.cpu_system_s = system;
    r.loadgen.cpu_total_s = user + system;
    r.loadgen.cpu_percent = if wall_s > 0.0 {
        (user + system) / wall_s * 100.0
    } else {
        0.0
    };
    r.loadgen.max_rss_kb = u1.max_rss_kb;
    r.sessions = session_counts(sh, wall_s);
    if r.frames.corrupt > 0 {
        r.failures
            .push(format!("{} corrupt frame(s)", r.frames.corrupt));
    }
    if cfg.icy {
        let m = c.icy.clone();
        if m.malformed > 0 {
            r.failures.push(format!(
                "{} malformed ICY metadata block(s), e.g. {}",
                m.malformed,
                m.malformed_examples.first().map_or("", String::as_str)
            ));
        }
        r.icy = Some(m);
    }
    if cfg.websocket {
        let w = c.ws.clone();
        if w.split_messages > 0 {
            r.failures.push(format!(
                "{} WebSocket message(s) not holding exactly one whole frame",
                w.split_messages
            ));
        }
        if w.protocol_errors > 0 {
            r.failures
                .push(format!("{} WebSocket protocol error(s)", w.protocol_errors));
        }
        r.websocket = Some(w);
    }
    if r.clients.failed_fraction > cfg.max_failed_fraction {
        r.failures.push(format!(
            "{} of {} clients failed ({:.2}%), more than --max-failed-fraction {}",
            c.failed_clients,
            cfg.clients,
            r.clients.failed_fraction * 100.0,
            cfg.max_failed_fraction
        ));
    }
    r.passed = r.failures.is_empty();
    r
}

/// The `churn` figures: sessions completed, their rate (overall and the median of the
/// whole seconds after the first two), how they closed, and the failed attempts.
fn session_counts(sh: &Shared, wall_s: f64) -> SessionCounts {
    let c = &sh.c;
    let mut per_second = sh.session_secs.clone();
    // Whole seconds of the run only: the last bucket may be a fraction of one.
    per_second.resize(wall_s.floor() as usize, 0);
    SessionCounts {
        clients: sh.churners,
        session_bytes: if sh.churners > 0 {
            Some(sh.session_bytes)
        } else {
            None
        },
        completed: c.sessions,
        per_s: if wall_s > 0.0 {
            c.sessions as f64 / wall_s
        } else {
            0.0
        },
        steady_median_per_s: steady_median(&per_second, STEADY_SKIP_S),
        fin_closes: c.fin_closes,
        rst_closes: c.rst_closes,
        http10_requests: c.http10_requests,
        failed_attempts: c.failed_attempts(),
        duration_us: sh.session_time.percentiles(),
        per_second,
    }
}

/// Seconds left out at the start of a run when taking the steady session rate.
const STEADY_SKIP_S: usize = 2;

/// Median of `per_second` after its first `skip` entries (all of them when the run was
/// too short to leave any out); None when empty.
pub fn steady_median(per_second: &[u64], skip: usize) -> Option<f64> {
    let part = if per_second.len() > skip {
        &per_second[skip..]
    } else {
        per_second
    };
    if part.is_empty() {
        return None;
    }
    let mut v = part.to_vec();
    v.sort_unstable();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_median_leaves_the_start_out() {
        assert_eq!(steady_median(&[], 2), None);
        assert_eq!(steady_median(&[5], 2), Some(5.0));
        assert_eq!(steady_median(&[0, 10, 100, 300, 200], 2), Some(200.0));
        assert_eq!(steady_median(&[0, 10, 100, 300], 2), Some(200.0));
        assert_eq!(steady_median(&[1, 2, 9, 9, 9, 0], 0), Some(5.5));
    }

    #[test]
    fn close_and_version_alternation() {
        let rst: Vec<bool> = (0..4).map(|n| CloseMode::Mix.rst_for(n)).collect();
        assert_eq!(rst, [false, true, false, true]);
        assert!((0..10).all(|n| CloseMode::Rst.rst_for(n)));
        assert!((0..10).all(|n| !CloseMode::Fin.rst_for(n)));
        let v10: Vec<bool> = (0..4).map(|n| HttpVersion::Mix.http10_for(n)).collect();
        assert_eq!(v10, [false, false, true, true]);
        // Together: each of the four pairings once in every four sessions.
        let mut pairs: Vec<(bool, bool)> = (0..4)
            .map(|n| (HttpVersion::Mix.http10_for(n), CloseMode::Mix.rst_for(n)))
            .collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), 4);
        assert!((0..10).all(|n| HttpVersion::Http10.http10_for(n)));
        assert!((0..10).all(|n| !HttpVersion::Http11.http10_for(n)));
    }

    #[test]
    fn per_client_state_is_small() {
        // 10,000 clients must cost a few MB, not a buffer each.
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 256, "Conn is {size} bytes");
    }

    #[test]
    fn classes_are_interleaved_and_exact() {
        let mix = crate::parse::mix("fast=0.6,paced=0.2,stall=0.2", 16000).unwrap();
        let a = assign_classes(&mix, 100);
        let count = |k: u16| a.iter().filter(|&&x| x == k).count();
        assert_eq!((count(0), count(1), count(2)), (60, 20, 20));
        // Every stretch of 10 clients has each class.
        for w in a.chunks(10) {
            for k in 0..3 {
                assert!(w.contains(&k), "{w:?}");
            }
        }
    }
}
