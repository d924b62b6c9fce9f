//! The source side of a stream: open the file / FIFO / command, read it, cut it
//! into frames, publish them to the ring, and keep going when it fails.
//!
//! Each stream has one source thread (pinned to the source core, never on a
//! shard's executor) that blocks in `poll` on the source descriptor and the
//! stream's control eventfd. It never waits for a client: it publishes into the
//! ring and rings the shards' bells.
//!
//! Life of a source, as streamserve does it but with the flaws fixed:
//! - opened lazily, when the first client arrives;
//! - header bytes (`-header-bytes`) captured at each open, before any frame;
//! - with `-reopen`, an end or failure is followed by a reopen after an
//!   exponential backoff (100 ms doubling to 5 s, reset after a session that
//!   lasted 5 s), so a command that exits at once or does not exist costs
//!   nearly nothing and never takes the server down;
//! - with `-close-idle`, the source is closed (the command killed) when the last
//!   client leaves, and the next client starts it again;
//! - `-max-quiet-interval Q`: a source silent for Q is killed and then reopened
//!   or ended per `-reopen`;
//! - `-source-bandwidth`: reads are paced to that many bytes/s against absolute
//!   time; the first frame goes out at once.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::SourceSpec;
use crate::framing::{new_framer, FrameSink, Framer, FramerStats};
use crate::ingest::{Chunked, PushConn};
use crate::metadata::{IcyStripper, Title};
use crate::pacing::FrameClock;
use crate::ring::RingWriter;
use crate::stream::{Bell, SourceState, Stream};
use crate::sys::{self, EventFd};
use crate::upstream::{self, Url};
use crate::websocket;

/// First reopen delay.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reopen delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(5);
/// How long a command gets to exit after SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_millis(1000);
/// Largest message a WebSocket publisher may send (a frame of the stream is
/// far smaller; a bigger one is refused with close 1009).
const WS_MAX_MESSAGE: usize = 1 << 20;
/// How long a relay waits for an upstream's response head.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the source at most per read().
const READ_BUF: usize = 64 * 1024;
/// A source's read buffer starts this small (a radio stream's reads are a
/// few KiB) and doubles, up to [`READ_BUF`], each time a read fills it.
const READ_BUF_START: usize = 16 * 1024;

/// What a source thread needs.
pub struct SourceContext {
    /// The stream it feeds.
    pub stream: Arc<Stream>,
    /// Every shard's bell, rung after frames are published or state changes.
    pub bells: Arc<[Bell]>,
    /// Core to pin the thread to, if any.
    pub core: Option<core_affinity::CoreId>,
    /// Log statistics this often.
    pub stat_log_interval: Option<Duration>,
    /// Signalled when this source ends for good (the server may then exit).
    pub ended: Arc<EventFd>,
    /// The server (a relay's credentials for its upstream); `None` in tests.
    pub shared: Option<Arc<crate::shared::ServerShared>>,
}

/// Start the source thread of a stream.
pub fn spawn(ctx: SourceContext) -> io::Result<JoinHandle<()>> {
    let name = format!("source-{}", ctx.stream.id);
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(core) = ctx.core {
            core_affinity::set_for_current(core);
        }
        SourceThread::new(ctx).run();
    })
}

/// An open source.
enum Opened {
    File(File),
    Command {
        child: Child,
        stdout: ChildStdout,
        program: String,
    },
    Demo(std::io::PipeReader),
    /// An encoder's connection (push ingest): the body, maybe chunked.
    Push(NetBody),
    /// A relay's connection to its upstream.
    Relay(NetBody),
}

/// The body of a pushed or relayed stream, as the source thread reads it:
/// chunked encoding and inline ICY metadata taken out.
struct NetBody {
    sock: std::net::TcpStream,
    /// Decoder of a chunked body.
    chunked: Option<Chunked>,
    /// Inline metadata blocks to strip (a relay that asked for titles).
    icy: Option<IcyStripper>,
    /// A WebSocket publisher: its messages are the stream (pings answered,
    /// a close ends it, broken frames are an error).
    ws: bool,
    /// Titles found, for the source thread to post.
    titles: Vec<Title>,
    /// WebSocket: bytes of a message that came in part; the publisher
    /// closed.
    raw_ws: Vec<u8>,
    ws_closed: bool,
    /// The WebSocket publisher broke the protocol (it was sent a close).
    ws_failed: bool,
    /// Bytes read (or that came with the request head) not decoded yet.
    raw: Vec<u8>,
    /// Decoded body bytes not handed out yet.
    ready: Vec<u8>,
    /// Where socket reads go when the body is chunked.
    scratch: Vec<u8>,
}

impl NetBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.len());
                buf[..n].copy_from_slice(&self.ready[..n]);
                self.ready.drain(..n);
                return Ok(n);
            }
            if self.chunked.as_ref().is_some_and(|c| c.done()) || self.ws_closed {
                return Ok(0);
            }
            let input = if !self.raw.is_empty() {
                std::mem::take(&mut self.raw)
            } else if self.chunked.is_none() && self.icy.is_none() && !self.ws {
                return self.sock.read(buf);
            } else {
                if self.scratch.is_empty() {
                    // (a plain body without inline titles never gets here)
                    self.scratch = vec![0; READ_BUF];
                }
                let n = self.sock.read(&mut self.scratch)?;
                if n == 0 {
                    return Ok(0);
                }
                self.scratch[..n].to_vec()
            };
            if self.ws {
                self.raw_ws.extend_from_slice(&input);
                let mut at = 0;
                loop {
                    match websocket::parse_client_frame(&self.raw_ws[at..], WS_MAX_MESSAGE) {
                        Ok(None) => break,
                        Ok(Some((f, used))) => {
                            at += used;
                            match f.opcode {
                                websocket::op::PING => {
                                    let pong = websocket::frame(websocket::op::PONG, &f.payload);
                                    let _ = self.sock.set_nonblocking(false);
                                    let _ = self.sock.write_all(&pong);
                                    let _ = self.sock.set_nonblocking(true);
                                }
                                websocket::op::CLOSE => {
                                    let _ = self.sock.write_all(&websocket::close_frame(1000));
                                    self.ws_closed = true;
                                    break;
                                }
                                websocket::op::PONG => {}
                                _ => self.ready.extend_from_slice(&f.payload),
                            }
                        }
                        Err(e) => {
                            let _ = self.sock.write_all(&websocket::close_frame(e.code()));
                            self.ws_failed = true;
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "WebSocket publisher broke the protocol (close {})",
                                    e.code()
                                ),
                            ));
                        }
                    }
                }
                self.raw_ws.drain(..at);
                if self.ws_closed && self.ready.is_empty() {
                    return Ok(0);
                }
                continue;
            }
            let mut decoded = Vec::new();
            let body = match &mut self.chunked {
                None => input,
                Some(c) => {
                    c.decode(&input, &mut decoded).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body")
                    })?;
                    decoded
                }
            };
            match &mut self.icy {
                None => self.ready = body,
                Some(icy) => {
                    let titles = icy.push(&body, &mut self.ready);
                    self.titles.extend(titles);
                }
            }
        }
    }
}

impl Opened {
    fn fd(&self) -> RawFd {
        match self {
            Opened::File(f) => f.as_raw_fd(),
            Opened::Command { stdout, .. } => stdout.as_raw_fd(),
            Opened::Demo(p) => p.as_raw_fd(),
            Opened::Push(b) | Opened::Relay(b) => b.sock.as_raw_fd(),
        }
    }

    /// True when bytes are there without reading the descriptor.
    fn buffered(&self) -> bool {
        matches!(self, Opened::Push(b) | Opened::Relay(b) if !b.raw.is_empty() || !b.ready.is_empty())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Opened::File(f) => f.read(buf),
            Opened::Command { stdout, .. } => stdout.read(buf),
            Opened::Demo(p) => p.read(buf),
            Opened::Push(b) | Opened::Relay(b) => b.read(buf),
        }
    }

    /// Close the source; a command is asked to stop (SIGTERM to its process
    /// group), then killed if it lingers. Returns a description of how a
    /// command ended, for the log.
    fn close(self) -> Option<String> {
        match self {
            Opened::File(_) | Opened::Demo(_) => None,
            Opened::Push(b) | Opened::Relay(b) => {
                let _ = b.sock.shutdown(std::net::Shutdown::Both);
                None
            }
            Opened::Command {
                mut child,
                stdout,
                program,
            } => {
                drop(stdout);
                let status = match child.try_wait() {
                    Ok(Some(status)) => Some(status),
                    _ => {
                        let pgid = child.id();
                        // Negative pid: the whole process group the command
                        // leads, so pipelines under `sh -c` stop too.
                        let _ = sys::kill(pgid.wrapping_neg(), libc::SIGTERM);
                        let deadline = Instant::now() + KILL_GRACE;
                        loop {
                            match child.try_wait() {
                                Ok(Some(status)) => break Some(status),
                                Ok(None) if Instant::now() < deadline => {
                                    std::thread::sleep(Duration::from_millis(5))
                                }
                                _ => {
                                    let _ = sys::kill(pgid.wrapping_neg(), libc::SIGKILL);
                                    break child.wait().ok();
                                }
                            }
                        }
                    }
                };
                // Reap any straggler in the group without blocking.
                let _ = sys::kill(child.id().wrapping_neg(), libc::SIGKILL);
                Some(match status {
                    Some(s) => format!("command {program} ended: {s}"),
                    None => format!("command {program} ended"),
                })
            }
        }
    }
}

/// Why a session ended.
enum SessionEnd {
    /// End of file / the command closed its stdout.
    Eof,
    /// A read error.
    Error(io::Error),
    /// Silent for max-quiet-interval.
    Quiet,
    /// The last client left and close-idle is on.
    Idle,
    /// The server is stopping (or the stream was removed).
    Stop,
    /// A reload changed the configuration: reopen at once with it.
    Restart,
}

struct SourceThread {
    ctx: SourceContext,
    writer: RingWriter,
    framer: Box<dyn Framer>,
    /// The kind the framer is of.
    framer_kind: crate::config::FramerKind,
    /// Framer counters already added to the stream's stats.
    framer_seen: FramerStats,
    buf: Vec<u8>,
    backoff: Duration,
    last_stat_log: Instant,
    /// A `realtime` source's frames waiting for their time (and its clock);
    /// kept across sessions, so a looped file plays on without a gap.
    paced: Option<Paced>,
}

/// Frames of a `realtime` source, published when they are due.
struct Paced {
    kind: crate::config::FramerKind,
    clock: FrameClock,
    /// Frames (with how long each plays) and stream headers, in order.
    queue: std::collections::VecDeque<PacedItem>,
    /// How much playing time the queue holds.
    queued: Duration,
    /// When the next frame is due (`None`: at once, a new time base).
    next: Option<Instant>,
}

impl Paced {
    fn new(kind: crate::config::FramerKind, byte_rate: u64) -> Paced {
        Paced {
            kind,
            clock: FrameClock::new(kind, byte_rate),
            queue: std::collections::VecDeque::new(),
            queued: Duration::ZERO,
            next: None,
        }
    }
}

enum PacedItem {
    Frame(Vec<u8>, Duration),
    Header(Vec<u8>),
}

/// A realtime source reads ahead at most this much playing time.
const PACED_AHEAD: Duration = Duration::from_secs(2);

impl SourceThread {
    fn new(ctx: SourceContext) -> SourceThread {
        let cfg = ctx.stream.config();
        let framer = new_framer(cfg.framer, cfg.frame_bytes, &ctx.stream.name);
        let writer = RingWriter::new(ctx.stream.ring.clone());
        SourceThread {
            ctx,
            writer,
            framer,
            framer_kind: cfg.framer,
            framer_seen: FramerStats::default(),
            buf: vec![0; READ_BUF_START],
            backoff: BACKOFF_MIN,
            last_stat_log: Instant::now(),
            paced: None,
        }
    }

    fn stream(&self) -> &Stream {
        &self.ctx.stream
    }

    /// True when someone takes the stream: a listener, or a push
    /// destination (which takes every frame, listened to here or not).
    fn wanted(&self, cfg: &crate::config::StreamConfig) -> bool {
        self.stream().clients() > 0 || !cfg.destinations.is_empty()
    }

    fn set_state(&self, s: SourceState) {
        self.stream().set_state(s);
        self.ring_bells();
    }

    fn ring_bells(&self) {
        for bell in self.ctx.bells.iter() {
            bell.ring();
        }
    }

    /// Sleep until the control eventfd fires or `timeout` passes.
    fn wait_control(&self, timeout: Option<Duration>) {
        let fd = self.stream().control.raw();
        if let Err(e) = sys::wait_readable(&[fd], timeout) {
            log::error!("source stream={} poll failed: {e}", self.stream().name);
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stream().control.drain();
    }

    fn run(mut self) {
        // True while the source has not run yet or was closed for idleness:
        // then it waits for a client before opening (lazy start).
        let mut wait_for_client = {
            let cfg = self.stream().config();
            // A relay connects at once, unless it is on demand.
            !matches!(cfg.source, SourceSpec::Relay(_)) || cfg.on_demand
        };
        loop {
            if self.stream().stop_requested() {
                break;
            }
            let push = self.stream().config().source == SourceSpec::Push;
            let mut pushed = None;
            if push {
                // A push mount waits for an encoder, whoever listens.
                match self.stream().take_push() {
                    Some(conn) => {
                        if let Some(d) = crate::failpoint::push_take_delay() {
                            std::thread::sleep(d);
                        }
                        pushed = Some(conn)
                    }
                    None => {
                        self.set_state(SourceState::Idle);
                        self.stream().take_restart();
                        self.wait_control(None);
                        continue;
                    }
                }
            } else if wait_for_client && !self.wanted(&self.stream().config()) {
                self.set_state(SourceState::Idle);
                // A reload while idle applies at the next open.
                self.stream().take_restart();
                self.wait_control(None);
                continue;
            }
            self.set_state(SourceState::Opening);
            self.stream().take_restart();
            let cfg = self.stream().config();
            if cfg.framer != self.framer_kind {
                self.framer = new_framer(cfg.framer, cfg.frame_bytes, &self.ctx.stream.name);
                self.framer_kind = cfg.framer;
                self.framer_seen = FramerStats::default();
            }
            let opened = match pushed.map(|c| self.open_push(c)) {
                Some(o) => Ok(o),
                None => self.open(),
            };
            let opened = match opened {
                Ok(o) => o,
                Err(e) => {
                    self.stream().source_stats.open_errors.inc();
                    log::error!("source stream={} open failed: {e}", self.stream().name);
                    if !self.stream().config().reopen && !self.stream().is_remote() {
                        break;
                    }
                    if !self.back_off() {
                        break;
                    }
                    continue;
                }
            };
            wait_for_client = false;
            self.stream().source_stats.opens.inc();
            log::info!(
                "source opened stream={} source={}",
                self.stream().name,
                describe(&self.stream().config().source)
            );
            let began = Instant::now();
            let frames_before = self.stream().source_stats.frames_in.get();
            let (end, opened) = self.session(opened);
            let how = opened.close();
            self.end_session();
            let delivered = self.stream().source_stats.frames_in.get() > frames_before;
            let reason = match &end {
                SessionEnd::Eof => "end of stream".to_string(),
                SessionEnd::Error(e) => format!("read error: {e}"),
                SessionEnd::Quiet => "quiet too long".to_string(),
                SessionEnd::Idle => "last client left".to_string(),
                SessionEnd::Stop => "stopping".to_string(),
                SessionEnd::Restart => "configuration changed".to_string(),
            };
            let s = &self.stream().source_stats;
            log::info!(
                "source closed stream={} reason=\"{reason}\"{} elapsed={:.3}s bytes_in={} frames_in={} invalid_bytes={}",
                self.stream().name,
                how.map(|h| format!(" detail=\"{h}\"")).unwrap_or_default(),
                began.elapsed().as_secs_f64(),
                s.bytes_in.get(),
                s.frames_in.get(),
                s.invalid_bytes.get(),
            );
            if push {
                // The mount is free for the next encoder; listeners stay.
                self.stream().set_session_info(None);
                self.stream().release_push();
                match end {
                    SessionEnd::Stop => break,
                    SessionEnd::Quiet => s.quiet_kills.inc(),
                    SessionEnd::Eof | SessionEnd::Error(_) => s.ends.inc(),
                    _ => {}
                }
                continue;
            }
            match end {
                SessionEnd::Stop => break,
                SessionEnd::Eof if self.stream().config().loop_file => {
                    // A looped file starts again at once.
                    s.ends.inc();
                    self.backoff = BACKOFF_MIN;
                }
                SessionEnd::Restart => {
                    self.backoff = BACKOFF_MIN;
                }
                SessionEnd::Idle => {
                    s.idle_closes.inc();
                    wait_for_client = true;
                }
                SessionEnd::Quiet | SessionEnd::Eof | SessionEnd::Error(_) => {
                    if matches!(end, SessionEnd::Quiet) {
                        s.quiet_kills.inc();
                    } else {
                        s.ends.inc();
                    }
                    if !self.stream().config().reopen && !self.stream().is_remote() {
                        break;
                    }
                    if began.elapsed() >= BACKOFF_RESET_AFTER {
                        self.backoff = BACKOFF_MIN;
                    }
                    // A relay whose upstream delivered and then went away
                    // tries its list again at once (the next upstream may be
                    // fine); it backs off only when none answers. A session
                    // that brought nothing backs off, so an upstream that
                    // answers and closes cannot make a busy loop.
                    let relay = matches!(self.stream().config().source, SourceSpec::Relay(_));
                    if relay && delivered && !matches!(end, SessionEnd::Quiet) {
                        log::info!(
                            "source stream={} upstream gone: trying the upstreams again",
                            self.stream().name
                        );
                        continue;
                    }
                    if !self.back_off() {
                        break;
                    }
                }
            }
        }
        self.set_state(SourceState::Ended);
        log::info!("source ended stream={}", self.stream().name);
        self.ctx.ended.signal();
    }

    /// Wait out the backoff (interrupted by a stop request). With close-idle,
    /// a backoff with no client left turns into idleness. Returns false when
    /// the thread should stop.
    fn back_off(&mut self) -> bool {
        self.set_state(SourceState::BackingOff);
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        log::warn!(
            "source stream={} reopening in {:.1}s",
            self.stream().name,
            delay.as_secs_f64()
        );
        let until = Instant::now() + delay;
        loop {
            if self.stream().stop_requested() {
                return false;
            }
            let now = Instant::now();
            if now >= until || self.stream().restart_pending() {
                return true;
            }
            self.wait_control(Some(until - now));
        }
    }

    /// Take over a pushed connection (the shard answered the handshake).
    fn open_push(&self, conn: PushConn) -> Opened {
        log::info!(
            "source connected stream={} from={} user={} content_type={:?}{}",
            self.stream().name,
            conn.peer,
            conn.user,
            conn.accepted.content_type,
            if conn.accepted.chunked {
                " chunked"
            } else {
                ""
            }
        );
        self.stream()
            .set_session_info(Some(conn.accepted.info.clone()));
        let sock = std::net::TcpStream::from(conn.fd);
        let _ = sock.set_nonblocking(true);
        Opened::Push(NetBody {
            sock,
            chunked: conn.accepted.chunked.then(Chunked::new),
            icy: None,
            ws: conn.accepted.websocket,
            titles: Vec::new(),
            raw_ws: Vec::new(),
            ws_closed: false,
            ws_failed: false,
            raw: conn.leftover,
            ready: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Connect to the first upstream that answers, in priority order.
    fn open_relay(&self, ups: &[crate::config::Upstream]) -> io::Result<Opened> {
        let cfg = self.stream().config();
        let mount = self.stream().mount.clone().unwrap_or_default();
        // The relay role's credentials, for an upstream that asks (a hash
        // cannot be presented: such a user is skipped).
        let relay_auth = self.ctx.shared.as_ref().and_then(|s| {
            s.credentials()
                .users_with(crate::config::Role::Relay, &mount)
                .find_map(|u| match &u.password {
                    crate::config::Secret::Plain(p) => Some((u.name.clone(), p.clone())),
                    crate::config::Secret::Bcrypt(_) => None,
                })
        });
        let mut failures = Vec::new();
        for (i, up) in ups.iter().enumerate() {
            let mut url = match Url::parse(&up.url) {
                Ok(u) => u,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            if let (Some(u), Some(crate::config::Secret::Plain(p))) = (&up.user, &up.password) {
                url.userinfo = Some((u.clone(), p.clone()));
            }
            match upstream::connect(&url, relay_auth.clone(), cfg.framer, UPSTREAM_TIMEOUT) {
                Ok(c) => {
                    if i > 0 {
                        self.stream().source_stats.failovers.inc();
                    }
                    log::info!(
                        "source connected stream={} upstream={} ({} of {}){}{}",
                        self.stream().name,
                        c.url.display(),
                        i + 1,
                        ups.len(),
                        c.metaint
                            .map(|m| format!(" icy-metaint={m}"))
                            .unwrap_or_default(),
                        if c.redirects > 0 {
                            format!(" redirects={}", c.redirects)
                        } else {
                            String::new()
                        },
                    );
                    self.stream().set_upstream(Some(c.url.display()));
                    self.stream().set_session_info(Some(c.info.clone()));
                    let _ = c.sock.set_nonblocking(true);
                    return Ok(Opened::Relay(NetBody {
                        sock: c.sock,
                        chunked: c.chunked.then(Chunked::new),
                        icy: c.metaint.map(IcyStripper::new),
                        ws: false,
                        titles: Vec::new(),
                        raw_ws: Vec::new(),
                        ws_closed: false,
                        ws_failed: false,
                        raw: c.leftover,
                        ready: Vec::new(),
                        scratch: Vec::new(),
                    }));
                }
                Err(e) => {
                    self.stream().source_stats.upstream_errors.inc();
                    log::warn!(
                        "source stream={} upstream={} failed: {e}",
                        self.stream().name,
                        url.display()
                    );
                    failures.push(format!("{}: {e}", url.display()));
                }
            }
        }
        self.stream().set_upstream(None);
        Err(io::Error::other(format!(
            "no upstream answered ({})",
            failures.join("; ")
        )))
    }

    fn open(&self) -> io::Result<Opened> {
        match &self.stream().config().source {
            SourceSpec::Path(path) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Ok(Opened::File(file))
            }
            SourceSpec::Exec { program, args } => {
                let mut cmd = Command::new(program);
                cmd.args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0);
                sys::prepare_child(&mut cmd);
                let mut child = cmd.spawn().map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot start command {program}: {e}"))
                })?;
                let stdout = child
                    .stdout
                    .take()
                    .ok_or_else(|| io::Error::other("command has no stdout"))?;
                sys::set_nonblocking(stdout.as_raw_fd())?;
                if let Some(stderr) = child.stderr.take() {
                    let label = format!("{}: {}", self.stream().name, program);
                    let _ = std::thread::Builder::new()
                        .name("source-stderr".into())
                        .spawn(move || log_lines(label, stderr));
                }
                Ok(Opened::Command {
                    child,
                    stdout,
                    program: program.clone(),
                })
            }
            SourceSpec::Push => Err(io::Error::other("a push mount waits for its encoder")),
            SourceSpec::Relay(ups) => self.open_relay(ups),
            SourceSpec::Demo => {
                let reader = crate::demo::spawn()?;
                sys::set_nonblocking(reader.as_raw_fd())?;
                Ok(Opened::Demo(reader))
            }
        }
    }

    /// Read one session until it ends.
    fn session(&mut self, mut opened: Opened) -> (SessionEnd, Opened) {
        let cfg = self.stream().config();
        let control = self.stream().control.raw();
        let mut header: Vec<u8> = Vec::with_capacity(cfg.header_bytes);
        let mut header_done = cfg.header_bytes == 0;
        if header_done {
            self.stream()
                .begin_session(self.writer.ring().head(), Vec::new());
            self.ring_bells();
        }
        let began = Instant::now();
        let mut last_data = began;
        // Byte-rate measurement (for burst_ms): bytes since `rate_mark`.
        // The writer's pace is unknown until measured: readers stay careful.
        self.stream().set_frame_rate(0);
        let mut rate_mark = began;
        let mut rate_bytes: u64 = 0;
        let mut rate_frames_mark = self.stream().source_stats.frames_in.get();
        // Pacing: bytes we may have read by now = first frame + rate * elapsed.
        let mut consumed: u64 = 0;
        let mut pace_origin = began;
        let initial_allowance = cfg.frame_bytes as u64;
        // A realtime file has read to its end and plays out its queue.
        let mut eof_seen = false;
        // An on-demand relay without listeners since then.
        let mut idle_since: Option<Instant> = None;
        if cfg.realtime {
            let keep = self.paced.take().filter(|p| p.kind == cfg.framer);
            self.paced = Some(keep.unwrap_or_else(|| Paced::new(cfg.framer, cfg.source_bandwidth)));
        } else {
            self.paced = None;
        }
        loop {
            if self.stream().stop_requested() {
                return (SessionEnd::Stop, opened);
            }
            if self.stream().restart_pending() {
                return (SessionEnd::Restart, opened);
            }
            let relay = matches!(cfg.source, SourceSpec::Relay(_));
            if relay && cfg.on_demand && !self.wanted(&cfg) {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= cfg.on_demand_idle {
                    return (SessionEnd::Idle, opened);
                }
            } else {
                idle_since = None;
            }
            if cfg.close_idle && !self.wanted(&cfg) {
                return (SessionEnd::Idle, opened);
            }
            let now = Instant::now();
            let mut timeout: Option<Duration> = None;
            let mut shorten =
                |d: Duration| timeout = Some(timeout.map_or(d, |t: Duration| t.min(d)));
            let quiet_limit = match cfg.source {
                SourceSpec::Push | SourceSpec::Relay(_) => Some(cfg.source_timeout),
                _ => cfg.max_quiet_interval,
            };
            if let Some(q) = quiet_limit {
                let quiet = now - last_data;
                if quiet >= q {
                    log::warn!(
                        "source stream={} quiet for {:.1}s, closing it",
                        self.stream().name,
                        quiet.as_secs_f64()
                    );
                    return (SessionEnd::Quiet, opened);
                }
                shorten(q - quiet);
            }
            if let Some(interval) = self.ctx.stat_log_interval {
                let since = now - self.last_stat_log;
                if since >= interval {
                    self.log_stats();
                    self.last_stat_log = now;
                    shorten(interval);
                } else {
                    shorten(interval - since);
                }
            }
            let mut want = self.buf.len();
            if cfg.source_bandwidth > 0 {
                let rate = cfg.source_bandwidth;
                let elapsed = now - pace_origin;
                let allowed = initial_allowance + (elapsed.as_secs_f64() * rate as f64) as u64;
                // Do not bank more than a quarter second of idle time.
                let cap = consumed + initial_allowance.max(rate / 4);
                if allowed > cap {
                    let excess = allowed - cap;
                    pace_origin += Duration::from_secs_f64(excess as f64 / rate as f64);
                }
                let allowed = allowed.min(cap);
                let room = allowed.saturating_sub(consumed) as usize;
                if room == 0 {
                    let missing = (consumed + 1).saturating_sub(allowed).max(1);
                    shorten(
                        Duration::from_secs_f64(missing as f64 / rate as f64)
                            .max(Duration::from_millis(1)),
                    );
                    self.wait_control(timeout);
                    continue;
                }
                want = want.min(room);
            }
            if let Some(wait) = self.publish_due() {
                // A realtime source holds enough: wait for the next frame's
                // time instead of reading ahead.
                let full = self.paced.as_ref().is_some_and(|p| p.queued >= PACED_AHEAD);
                if eof_seen || full {
                    self.wait_control(Some(timeout.map_or(wait, |t| t.min(wait))));
                    last_data = Instant::now();
                    continue;
                }
                shorten(wait);
            } else if eof_seen {
                return (SessionEnd::Eof, opened);
            }
            let ready = if opened.buffered() {
                vec![true, false]
            } else {
                match sys::wait_readable(&[opened.fd(), control], timeout) {
                    Ok(r) => r,
                    Err(e) => return (SessionEnd::Error(e), opened),
                }
            };
            if ready[1] {
                self.stream().control.drain();
            }
            if !ready[0] {
                continue;
            }
            let n = match opened.read(&mut self.buf[..want]) {
                Ok(0) if self.paced.as_ref().is_some_and(|p| !p.queue.is_empty()) => {
                    // Play out what is queued first.
                    eof_seen = true;
                    continue;
                }
                Ok(0) => return (SessionEnd::Eof, opened),
                Ok(n) => n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted =>
                {
                    continue
                }
                Err(e) => {
                    if matches!(&opened, Opened::Push(b) if b.ws_failed) {
                        self.ctx.stream.source_stats.ws_publisher_errors.inc();
                    }
                    return (SessionEnd::Error(e), opened);
                }
            };
            if let Opened::Relay(b) = &mut opened {
                for t in b.titles.drain(..) {
                    self.ctx.stream.set_title(t);
                }
            }
            last_data = Instant::now();
            let full = n == self.buf.len();
            consumed += n as u64;
            rate_bytes += n as u64;
            let since = last_data - rate_mark;
            if since >= Duration::from_secs(1) {
                let rate = (rate_bytes as f64 / since.as_secs_f64()) as u64;
                let old = self.stream().byte_rate();
                // Smooth a little: half the old estimate, half the new.
                self.stream()
                    .set_byte_rate(if old == 0 { rate } else { (old + rate) / 2 });
                let frames_now = self.stream().source_stats.frames_in.get();
                let fps = ((frames_now - rate_frames_mark) as f64 / since.as_secs_f64()) as u64;
                // Fast attack, slow decay: a burst counts at once.
                let old_fps = self.stream().frame_rate();
                self.stream()
                    .set_frame_rate(fps.max((old_fps + fps) / 2).max(1));
                rate_frames_mark = frames_now;
                rate_mark = last_data;
                rate_bytes = 0;
            }
            self.stream().source_stats.bytes_in.add(n as u64);
            let mut chunk_start = 0;
            if !header_done {
                let take = (cfg.header_bytes - header.len()).min(n);
                header.extend_from_slice(&self.buf[..take]);
                chunk_start = take;
                if header.len() == cfg.header_bytes {
                    header_done = true;
                    self.stream()
                        .source_stats
                        .header_bytes
                        .set(header.len() as u64);
                    self.stream()
                        .begin_session(self.writer.ring().head(), std::mem::take(&mut header));
                    self.ring_bells();
                }
            }
            if chunk_start < n {
                self.feed(chunk_start, n);
            }
            if full && self.buf.len() < READ_BUF {
                // A fast source: read more per call.
                self.buf = vec![0; (self.buf.len() * 2).min(READ_BUF)];
            }
        }
    }

    /// Frame `buf[from..to]`, publish every whole frame, and make a stream
    /// header the framer emits (Ogg header pages) the header of the frames
    /// published after it.
    fn feed(&mut self, from: usize, to: usize) {
        let every = (self.writer.ring().capacity() / 8).max(1);
        let mut sink = Publish {
            writer: &mut self.writer,
            stream: &self.ctx.stream,
            bells: &self.ctx.bells,
            ring_every: every,
            paced: self.paced.as_mut(),
            published: 0,
        };
        self.framer.push(&self.buf[from..to], &mut sink);
        let published = sink.published;
        self.sync_framer_stats();
        if published > 0 {
            self.stream().source_stats.frames_in.add(published);
            self.stream().note_frames();
            self.ring_bells();
        }
    }

    /// A realtime source: publish the queued frames that are due. Returns
    /// how long until the next one is due (`None`: nothing is queued, or the
    /// source is not realtime).
    fn publish_due(&mut self) -> Option<Duration> {
        let paced = self.paced.as_mut()?;
        let now = Instant::now();
        let mut published = 0u64;
        loop {
            let next = *paced.next.get_or_insert(now);
            match paced.queue.front() {
                None => break,
                Some(PacedItem::Header(_)) => {
                    if let Some(PacedItem::Header(h)) = paced.queue.pop_front() {
                        let head = self.writer.ring().head();
                        self.ctx.stream.set_header(head, h);
                    }
                }
                Some(PacedItem::Frame(_, d)) => {
                    if next > now {
                        break;
                    }
                    let d = *d;
                    if let Some(PacedItem::Frame(f, _)) = paced.queue.pop_front() {
                        if self.writer.publish(&f).is_some() {
                            published += 1;
                        }
                    }
                    paced.queued = paced.queued.saturating_sub(d);
                    // Far behind (the thread was stopped, the machine
                    // stalled): start a new time base rather than rush.
                    let due = next + d;
                    paced.next = Some(
                        if now.saturating_duration_since(due) > Duration::from_secs(1) {
                            now
                        } else {
                            due
                        },
                    );
                }
            }
        }
        let wait = match paced.queue.front() {
            None => None,
            Some(_) => Some(
                paced
                    .next
                    .map_or(Duration::ZERO, |n| n.saturating_duration_since(now))
                    .max(Duration::from_millis(1)),
            ),
        };
        if published > 0 {
            self.stream().source_stats.frames_in.add(published);
            self.stream().note_frames();
            self.ring_bells();
        }
        wait
    }

    /// Add what the framer counted since last time to the stream's counters.
    /// (The MP3 framer may count a few invalid bytes back as tag bytes, when
    /// an APE tag turns out to have preceded its footer; the stream's
    /// counter keeps them.)
    fn sync_framer_stats(&mut self) {
        let now = self.framer.stats();
        let s = &self.ctx.stream.source_stats;
        s.invalid_bytes.add(
            now.invalid_bytes
                .saturating_sub(self.framer_seen.invalid_bytes),
        );
        s.oversized_frames.add(
            now.oversized_frames
                .saturating_sub(self.framer_seen.oversized_frames),
        );
        let seen = &self.framer_seen;
        s.tags
            .add((now.tags + now.info_frames).saturating_sub(seen.tags + seen.info_frames));
        s.tag_bytes
            .add(now.tag_bytes.saturating_sub(seen.tag_bytes));
        s.free_format_headers.add(
            now.free_format_headers
                .saturating_sub(seen.free_format_headers),
        );
        s.stream_headers
            .add(now.headers.saturating_sub(seen.headers));
        s.partial_bytes_dropped.add(
            now.partial_bytes_dropped
                .saturating_sub(seen.partial_bytes_dropped),
        );
        self.framer_seen = now;
    }

    fn end_session(&mut self) {
        self.framer.reset();
        self.sync_framer_stats();
        let f = self.framer.stats();
        if f.tags + f.info_frames + f.free_format_headers + f.headers > 0 {
            log::info!(
                "source framer stream={} frames={} invalid_bytes={} tags={} tag_bytes={} info_frames={} free_format_headers={} headers={} header_bytes={} partial_bytes_dropped={}",
                self.stream().name,
                f.frames,
                f.invalid_bytes,
                f.tags,
                f.tag_bytes,
                f.info_frames,
                f.free_format_headers,
                f.headers,
                f.header_bytes,
                f.partial_bytes_dropped,
            );
        }
    }

    fn log_stats(&self) {
        let st = self.stream();
        let s = &st.source_stats;
        let (mut bytes_out, mut frames_out, mut skipped) = (0, 0, 0);
        for c in &st.client_stats {
            bytes_out += c.bytes_out.get();
            frames_out += c.frames_out.get();
            skipped += c.frames_skipped.get();
        }
        log::info!(
            "source stats stream={} state={} clients={} bytes_in={} frames_in={} invalid_bytes={} opens={} bytes_out={} frames_out={} skipped={}",
            st.name,
            st.state().name(),
            st.clients(),
            s.bytes_in.get(),
            s.frames_in.get(),
            s.invalid_bytes.get(),
            s.opens.get(),
            bytes_out,
            frames_out,
            skipped
        );
    }
}

/// The framer's output during [`SourceThread::feed`]: frames go into the
/// ring; a stream header becomes the stream's header from the next frame
/// number on (`head` now, before the next frame is published), so a client
/// that starts at or after that frame gets it first.
struct Publish<'a> {
    writer: &'a mut RingWriter,
    stream: &'a Stream,
    /// The shards' bells: rung every `ring_every` frames of a large read, so
    /// the shards start sending before the writer is far ahead.
    bells: &'a [Bell],
    ring_every: u64,
    /// A realtime source queues its frames instead (published when due).
    paced: Option<&'a mut Paced>,
    /// Frames published so far.
    published: u64,
}

impl FrameSink for Publish<'_> {
    fn frame(&mut self, frame: &[u8]) {
        if let Some(p) = self.paced.as_mut() {
            let d = p.clock.duration(frame);
            p.queued += d;
            p.queue.push_back(PacedItem::Frame(frame.to_vec(), d));
            return;
        }
        if self.writer.publish(frame).is_some() {
            self.published += 1;
            if self.published.is_multiple_of(self.ring_every) {
                self.stream.note_frames();
                for bell in self.bells {
                    bell.ring();
                }
            }
        }
    }

    fn header(&mut self, header: &[u8]) {
        if let Some(p) = self.paced.as_mut() {
            p.clock.observe_header(header);
            p.queue.push_back(PacedItem::Header(header.to_vec()));
            return;
        }
        self.stream
            .set_header(self.writer.ring().head(), header.to_vec());
    }
}

/// Log every line a command writes to stderr, labelled with its name.
fn log_lines(label: String, stderr: std::process::ChildStderr) {
    let reader = BufReader::new(stderr);
    for line in reader.split(b'\n') {
        match line {
            Ok(line) => log::info!(
                "source stderr {label}: {}",
                String::from_utf8_lossy(&line).trim_end()
            ),
            Err(_) => break,
        }
    }
}

/// A short description of a source for the log.
pub fn describe(spec: &SourceSpec) -> String {
    match spec {
        SourceSpec::Path(p) => format!("path:{}", p.display()),
        SourceSpec::Exec { program, args } => {
            let mut s = format!("exec:{program}");
            for a in args {
                s.push(' ');
                s.push_str(a);
            }
            s
        }
        SourceSpec::Demo => "demo:tone".to_string(),
        SourceSpec::Push => "push".to_string(),
        SourceSpec::Relay(ups) => {
            let urls: Vec<&str> = ups.iter().map(|u| u.url.as_str()).collect();
            format!("relay:{}", urls.join(","))
        }
    }
}
