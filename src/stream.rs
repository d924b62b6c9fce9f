//! A stream: one source, one ring, and the little state shards and the source
//! thread share about it.
//!
//! Everything here is either immutable after start, an atomic with a stated
//! meaning, or (the header bytes) behind a mutex that is taken once per client
//! connection and once per source open, never per frame.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use atomic_waker::AtomicWaker;

use crate::config::StreamConfig;
use crate::ring::Ring;
use crate::stats::{ClientStats, SourceStats};
use crate::sys::EventFd;

/// What a stream's source is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceState {
    /// Not started yet (waiting for the first client) or closed because the
    /// last client left (close-idle).
    Idle = 0,
    /// Opening the file / starting the command / reading header bytes.
    Opening = 1,
    /// Delivering frames.
    Running = 2,
    /// Ended or failed; waiting before it is reopened.
    BackingOff = 3,
    /// Ended for good (reopen off, or the server is stopping). Clients drain
    /// what is buffered and their responses end.
    Ended = 4,
}

impl SourceState {
    fn from_u8(v: u8) -> SourceState {
        match v {
            0 => SourceState::Idle,
            1 => SourceState::Opening,
            2 => SourceState::Running,
            3 => SourceState::BackingOff,
            _ => SourceState::Ended,
        }
    }

    /// Lower-case name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            SourceState::Idle => "idle",
            SourceState::Opening => "opening",
            SourceState::Running => "running",
            SourceState::BackingOff => "backing-off",
            SourceState::Ended => "ended",
        }
    }
}

/// The header bytes of one source session.
#[derive(Debug, Clone)]
pub struct Header {
    /// First frame number of the session these bytes belong to.
    pub first_frame: u64,
    /// The bytes (possibly empty).
    pub bytes: Arc<[u8]>,
}

/// A doorbell from other threads to one shard: the source thread rings it
/// after publishing frames or changing state; the shard's watcher task waits
/// on it. One per shard, shared by all streams, so a wake costs at most one
/// cross-thread wake-up per shard however many clients wait.
#[derive(Debug, Default)]
pub struct Bell {
    /// True when rung since the watcher last looked. Swapped with AcqRel so the
    /// watcher that clears it sees everything published before the ring.
    rung: AtomicBool,
    /// The watcher's waker (one waker, re-registered on each wait, never
    /// cloned per client).
    waker: AtomicWaker,
}

impl Bell {
    /// Ring: wake the shard's watcher unless a ring is already pending.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Poll for a ring (used by the watcher's future).
    pub fn poll_rung(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.rung.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// One stream, shared (in an `Arc`) by its source thread and every shard.
#[derive(Debug)]
pub struct Stream {
    /// Unique for the life of the process (never reused after a reload).
    pub id: u64,
    /// Name for logs: the mount path, or "stream" on the command line.
    pub name: String,
    /// The path it is served at (`None`: every path, the command line's
    /// single stream). Never changes; a reload that changes it makes a new
    /// stream.
    pub mount: Option<String>,
    /// The stream's configuration. Read once per client start and once per
    /// source open, never per frame; replaced by a reload that keeps the
    /// ring's geometry (then the source restarts and clients stay).
    config: Mutex<Arc<StreamConfig>>,
    /// The frames.
    pub ring: Arc<Ring>,
    /// Stream headers in force from a frame on, oldest first (at most
    /// [`HEADER_HISTORY`]): the session's `-header-bytes`, or headers a
    /// framer found (Ogg identification/comment/setup pages, which a chained
    /// stream replaces mid-session). Taken once per client start.
    headers: Mutex<Vec<Header>>,
    /// First frame of the newest header (`u64::MAX`: none yet). Lets a
    /// connected client see, without taking the lock, that it is about to
    /// cross into frames of a new logical stream (chained Ogg) and needs the
    /// new header first. Stored with Release after the header is in
    /// `headers`.
    latest_header: AtomicU64,
    /// `SourceState` as u8. Release on store, Acquire on load: a client that
    /// sees Running also sees `session_start` of that session.
    state: AtomicU8,
    /// First frame number of the current (or next) source session.
    session_start: AtomicU64,
    /// Clients of this stream on all shards. Changed on connect/disconnect
    /// only (never per frame); the source thread reads it for lazy start and
    /// close-idle.
    clients: AtomicUsize,
    /// Most clients at once (updated on connect only).
    clients_peak: AtomicUsize,
    /// Set by a reload: end the current source session and reopen at once
    /// with the new configuration.
    restart: AtomicBool,
    /// Wall-clock start of the current source session, in ms since the Unix
    /// epoch (0 = no session); for status.
    session_started_ms: AtomicU64,
    /// The source's measured byte rate (bytes/s over the last second or so),
    /// written by the source thread; used to turn `burst_ms` into bytes.
    byte_rate: AtomicU64,
    /// The source's measured frame rate (frames/s; 0 = not measured yet),
    /// written by the source thread; tells readers how fast the writer laps.
    frame_rate: AtomicU64,
    /// Wakes the source thread (a client arrived, the last one left, stop).
    pub control: EventFd,
    /// Set when the source must stop for good (server shutdown).
    stop: AtomicBool,
    /// Source counters (written by the source thread).
    pub source_stats: SourceStats,
    /// Per-shard client counters of this stream (each written by its shard).
    pub client_stats: Vec<ClientStats>,
    /// A push source holds the mount (from its accepted handshake until its
    /// session ends): a second source gets 403 "Mountpoint in use".
    push_busy: AtomicBool,
    /// A push connection handed over by a shard, not yet taken by the source
    /// thread.
    push_slot: Mutex<Option<crate::ingest::PushConn>>,
    /// What the current source said about the stream (a push source's
    /// `ice-*` headers), over the configured info.
    session_info: Mutex<Option<crate::config::StreamInfo>>,
    /// When the source last published a frame, in ms since the stream was
    /// created (0: never). Written by the source thread per read, read by
    /// the shards to decide on fallbacks.
    last_frame_ms: AtomicU64,
    /// The stream's title, for listeners that ask for ICY metadata.
    pub titles: crate::metadata::TitleBoard,
    /// Title changes (any thread posts them: atomic add, not a single-writer
    /// counter).
    title_changes: AtomicU64,
    /// The upstream a relay is connected to now (for status).
    upstream_now: Mutex<Option<String>>,
    /// The status of each push destination (set once when they start).
    pub destinations: Mutex<Vec<Arc<crate::destination::DestStatus>>>,
    /// When the stream was created.
    pub created: Instant,
}

/// How long a vectored send from ring slots is allowed to take before the
/// writer may reach its slots; see [`Stream::lap_guard`]. A send of at most
/// 256 KiB takes tens of microseconds, but the shard thread can be preempted
/// inside it on a busy machine: the margin covers that (the seqlock check
/// after the send catches the rest, and ends the listener as torn).
pub const MAX_SEND_TIME: Duration = Duration::from_millis(80);

/// Headers kept per stream: enough for a client that starts a little behind
/// a header change to get the header of its own frames.
pub const HEADER_HISTORY: usize = 4;

/// Stream ids are handed out from here.
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

impl Stream {
    /// A new stream with its ring mapped; the source is not started.
    pub fn new(config: StreamConfig, shards: usize) -> std::io::Result<Stream> {
        let ring = Arc::new(Ring::new(config.source_buffer, config.frame_bytes)?);
        let name = config.mount.clone().unwrap_or_else(|| "stream".to_string());
        Ok(Stream {
            id: NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed),
            name,
            mount: config.mount.clone(),
            config: Mutex::new(Arc::new(config)),
            ring,
            headers: Mutex::new(Vec::new()),
            latest_header: AtomicU64::new(u64::MAX),
            state: AtomicU8::new(SourceState::Idle as u8),
            session_start: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            clients_peak: AtomicUsize::new(0),
            restart: AtomicBool::new(false),
            session_started_ms: AtomicU64::new(0),
            byte_rate: AtomicU64::new(0),
            frame_rate: AtomicU64::new(0),
            control: EventFd::new()?,
            stop: AtomicBool::new(false),
            source_stats: SourceStats::default(),
            client_stats: (0..shards).map(|_| ClientStats::default()).collect(),
            push_busy: AtomicBool::new(false),
            push_slot: Mutex::new(None),
            session_info: Mutex::new(None),
            last_frame_ms: AtomicU64::new(0),
            titles: Default::default(),
            title_changes: AtomicU64::new(0),
            upstream_now: Mutex::new(None),
            destinations: Mutex::new(Vec::new()),
            created: Instant::now(),
        })
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<StreamConfig> {
        match self.config.lock() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// True when `new` can replace this stream's configuration in place: the
    /// ring's geometry and the mount are the same.
    pub fn can_reconfigure(&self, new: &StreamConfig) -> bool {
        let old = self.config();
        old.mount == new.mount
            && old.frame_bytes == new.frame_bytes
            && old.source_buffer == new.source_buffer
    }

    /// Replace the configuration (see [`Stream::can_reconfigure`]) and make
    /// the source reopen with it at once. Connected clients stay.
    pub fn reconfigure(&self, new: StreamConfig) {
        if let Ok(mut c) = self.config.lock() {
            *c = Arc::new(new);
        }
        self.restart.store(true, Ordering::Release);
        self.control.signal();
    }

    /// Take a pending restart request (source thread).
    pub fn take_restart(&self) -> bool {
        self.restart.swap(false, Ordering::AcqRel)
    }

    /// True when a restart has been requested and not yet taken.
    pub fn restart_pending(&self) -> bool {
        self.restart.load(Ordering::Acquire)
    }

    /// Seconds the current source session has run (0 when none).
    pub fn session_uptime(&self) -> f64 {
        let ms = self.session_started_ms.load(Ordering::Relaxed);
        if ms == 0 || self.state() != SourceState::Running {
            return 0.0;
        }
        (unix_ms().saturating_sub(ms)) as f64 / 1000.0
    }

    /// Most clients at once.
    pub fn clients_peak(&self) -> usize {
        self.clients_peak.load(Ordering::Relaxed)
    }

    /// The source's state.
    pub fn state(&self) -> SourceState {
        SourceState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Set the source's state (source thread only).
    pub fn set_state(&self, s: SourceState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Begin a new session at frame `first_frame` with these header bytes
    /// (source thread only, before the session's first frame is published).
    pub fn begin_session(&self, first_frame: u64, header: Vec<u8>) {
        self.set_header(first_frame, header);
        self.session_start.store(first_frame, Ordering::Release);
        self.session_started_ms.store(unix_ms(), Ordering::Relaxed);
        self.set_state(SourceState::Running);
    }

    /// Make `bytes` the stream header for frames from `first_frame` on
    /// (source thread only, before that frame is published). A framer that
    /// meets a new logical stream (chained Ogg) calls this mid-session.
    pub fn set_header(&self, first_frame: u64, bytes: Vec<u8>) {
        let mut h = match self.headers.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        h.retain(|x| x.first_frame < first_frame);
        let bytes_empty = bytes.is_empty();
        h.push(Header {
            first_frame,
            bytes: Arc::from(bytes),
        });
        if h.len() > HEADER_HISTORY {
            let extra = h.len() - HEADER_HISTORY;
            h.drain(..extra);
        }
        drop(h);
        // Only a header with bytes is news for connected listeners: a session
        // that begins without header bytes (an Ogg source restarting, whose
        // framer is about to find the new link's header pages) must not make
        // them take the empty header and then miss the real one.
        if !bytes_empty {
            self.latest_header.store(first_frame, Ordering::Release);
        }
    }

    /// First frame of the newest header (`u64::MAX` when none).
    pub fn latest_header_frame(&self) -> u64 {
        self.latest_header.load(Ordering::Acquire)
    }

    /// The header in force at frame `n`: what a client starting at `n` must
    /// receive first (empty when none). One lock per client start.
    pub fn header_for(&self, n: u64) -> Header {
        let h = match self.headers.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        h.iter()
            .rev()
            .find(|x| x.first_frame <= n)
            .or(h.first())
            .cloned()
            .unwrap_or(Header {
                first_frame: 0,
                bytes: Arc::from(Vec::new()),
            })
    }

    /// Frame a new client starts at: the newest complete frame while the source
    /// is running and has produced one in this session; otherwise the next
    /// frame to be produced (a client that comes before the first frame gets
    /// the stream from its start).
    pub fn start_frame(&self) -> u64 {
        let running = self.state() == SourceState::Running;
        let start = self.session_start.load(Ordering::Acquire);
        let head = self.ring.head();
        if running && head > start {
            head - 1
        } else {
            head
        }
    }

    /// First frame of the current (or next) source session.
    pub fn session_start(&self) -> u64 {
        self.session_start.load(Ordering::Acquire)
    }

    /// Record the source's measured byte rate (source thread).
    pub fn set_byte_rate(&self, bytes_per_s: u64) {
        self.byte_rate.store(bytes_per_s, Ordering::Relaxed);
    }

    /// The source's measured byte rate.
    pub fn byte_rate(&self) -> u64 {
        self.byte_rate.load(Ordering::Relaxed)
    }

    /// Record the source's measured frame rate (source thread).
    pub fn set_frame_rate(&self, frames_per_s: u64) {
        self.frame_rate.store(frames_per_s, Ordering::Relaxed);
    }

    /// The source's measured frame rate (0 = not measured yet).
    pub fn frame_rate(&self) -> u64 {
        self.frame_rate.load(Ordering::Relaxed)
    }

    /// How listeners must keep clear of the writer, from the measured frame
    /// rate: `(guard, copy_all)`.
    ///
    /// The writer overwrites the slot of frame `n` when it publishes frame
    /// `n + capacity`. A vectored send from slots takes at most
    /// [`MAX_SEND_TIME`]; during it the writer publishes at most
    /// `fps × MAX_SEND_TIME` frames (its *reach*). A listener therefore keeps
    /// `guard` = max(the ring's guard, reach + 1) slots between itself and
    /// the writer, and is lapped (skipped forward) when closer: every frame
    /// it sends from a slot is then out of the writer's reach for the whole
    /// send. When the reach is most of the ring (a source read as fast as a
    /// pipe allows, or a rate not measured yet — the first second of a
    /// session), no slot is safe: `copy_all`, frames are copied (validated)
    /// and sent from the copy. For a live stream the reach is under a frame
    /// and every send is zero-copy.
    #[inline]
    pub fn lap_guard(&self) -> (u64, bool) {
        let cap = self.ring.capacity();
        let fps = self.frame_rate.load(Ordering::Relaxed);
        if fps == 0 {
            return (self.ring.guard(), true);
        }
        let reach = (fps as f64 * MAX_SEND_TIME.as_secs_f64()).ceil() as u64 + 1;
        let guard = self.ring.guard().max(reach);
        if guard >= cap / 2 {
            (self.ring.guard(), true)
        } else {
            (guard, false)
        }
    }

    /// The bound on a listener socket's unsent bytes (`TCP_NOTSENT_LOWAT`),
    /// for a shard that may gather frames for up to `gather`.
    ///
    /// Large enough for one gathered send of a listener that keeps up (twice
    /// the bytes the stream brings in `gather` + 100 ms, plus two frames), so
    /// healthy listeners never meet a full queue; small enough that a
    /// listener that stops reading fills it within a fraction of the ring
    /// (at most half the ring's bytes) and is then skipped by whole frames
    /// instead of being served stale audio the kernel kept for it. Never
    /// below 16 KiB.
    pub fn send_queue_bound(&self, gather: Duration) -> u32 {
        let rate = self.byte_rate() as f64;
        let fps = self.frame_rate();
        let frame = if rate > 0.0 && fps > 0 {
            (rate / fps as f64).max(1.0)
        } else {
            self.ring.frame_max() as f64
        };
        let ring_bytes = frame * self.ring.capacity() as f64;
        let want = if rate > 0.0 {
            2.0 * rate * (gather.as_secs_f64() + 0.1) + 2.0 * frame
        } else {
            ring_bytes / 4.0
        };
        let floor = 16.0 * 1024.0;
        let ceiling = (ring_bytes / 2.0).max(floor);
        want.clamp(floor, ceiling).min(u32::MAX as f64) as u32
    }

    /// Frame a new client starts at with fast start: the oldest of the most
    /// recent whole frames of this session that add up to `burst` bytes,
    /// staying clear of the writer (so the burst is not lapped at once).
    /// Without a burst, or before the session has frames, as
    /// [`Stream::start_frame`].
    pub fn start_frame_with_burst(&self, burst: u64) -> u64 {
        let newest = self.start_frame();
        if burst == 0 || self.state() != SourceState::Running {
            return newest;
        }
        let head = self.ring.head();
        if newest + 1 != head {
            return newest;
        }
        // Keep a guard's worth of slots more than a lagging reader needs.
        let cap = self.ring.capacity();
        let floor = self
            .session_start()
            .max(head.saturating_sub(cap.saturating_sub(2 * self.ring.guard())));
        let mut start = newest;
        let mut bytes = self.ring.frame(newest).map_or(0, |f| f.len as u64);
        while bytes < burst && start > floor {
            match self.ring.frame(start - 1) {
                Some(f) => {
                    bytes += f.len as u64;
                    start -= 1;
                }
                None => break,
            }
        }
        start
    }

    /// True once the source has ended for good and no more frames will come.
    pub fn ended(&self) -> bool {
        self.state() == SourceState::Ended
    }

    /// A client wants to join (any shard). Refused (false) when the
    /// stream's client limit is reached; otherwise counted, and the source
    /// thread is woken when it is the first client, for lazy start.
    pub fn try_join(&self) -> bool {
        let limit = self.config().max_clients;
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        if limit > 0 && before >= limit {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.clients_peak.fetch_max(before + 1, Ordering::Relaxed);
        if before == 0 {
            self.control.signal();
        }
        true
    }

    /// A listener moved here from another stream (a fallback switch): counted
    /// without the stream's limit (moving must never disconnect anyone), and
    /// the source woken when it is the first, for lazy start.
    pub fn join_moved(&self) {
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        self.clients_peak.fetch_max(before + 1, Ordering::Relaxed);
        if before == 0 {
            self.control.signal();
        }
    }

    /// A client left. Wakes the source thread when it was the last, for
    /// close-idle and for the exit of a finished server.
    pub fn client_left(&self) {
        if self.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.control.signal();
        }
    }

    /// Clients of this stream on all shards.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Acquire)
    }

    /// A push source wants the mount: true when it is now its (until
    /// [`Stream::release_push`]), false when another source holds it.
    pub fn claim_push(&self) -> bool {
        self.push_busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Hand a claimed push connection to the source thread.
    pub fn offer_push(&self, conn: crate::ingest::PushConn) {
        if let Ok(mut slot) = self.push_slot.lock() {
            *slot = Some(conn);
        }
        self.control.signal();
    }

    /// The push connection waiting for the source thread, if any.
    pub fn take_push(&self) -> Option<crate::ingest::PushConn> {
        self.push_slot.lock().ok()?.take()
    }

    /// The push session is over: the mount is free for the next source.
    pub fn release_push(&self) {
        self.push_busy.store(false, Ordering::Release);
    }

    /// True while a push source holds the mount.
    pub fn push_claimed(&self) -> bool {
        self.push_busy.load(Ordering::Acquire)
    }

    /// What listeners are told about the stream: the configured info, with
    /// what the current source said over it.
    pub fn info(&self) -> crate::config::StreamInfo {
        let mut info = self.config().info.clone();
        let session = match self.session_info.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some(s) = session {
            info.name = info.name.or(s.name);
            info.description = info.description.or(s.description);
            info.genre = info.genre.or(s.genre);
            info.url = info.url.or(s.url);
            info.bitrate = info.bitrate.or(s.bitrate);
            info.public = info.public.or(s.public);
        }
        info
    }

    /// Set (or clear) what the current source says about the stream.
    pub fn set_session_info(&self, info: Option<crate::config::StreamInfo>) {
        match self.session_info.lock() {
            Ok(mut s) => *s = info,
            Err(p) => *p.into_inner() = info,
        }
    }

    /// The upstream a relay is connected to (status).
    pub fn upstream(&self) -> Option<String> {
        match self.upstream_now.lock() {
            Ok(u) => u.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Set the upstream a relay is connected to.
    pub fn set_upstream(&self, url: Option<String>) {
        match self.upstream_now.lock() {
            Ok(mut u) => *u = url,
            Err(p) => *p.into_inner() = url,
        }
    }

    /// Post a new title (any thread); counted when it changed.
    pub fn set_title(&self, title: crate::metadata::Title) {
        let before = self.titles.version();
        self.titles.set(title);
        if self.titles.version() != before {
            self.title_changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Title changes so far.
    pub fn title_changes(&self) -> u64 {
        self.title_changes.load(Ordering::Relaxed)
    }

    /// Note that frames were published now (source thread).
    pub fn note_frames(&self) {
        let ms = self.created.elapsed().as_millis() as u64;
        self.last_frame_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long since the source last published a frame (`None`: never).
    pub fn since_last_frame(&self) -> Option<Duration> {
        let ms = self.last_frame_ms.load(Ordering::Relaxed);
        if ms == 0 {
            return None;
        }
        Some(
            self.created
                .elapsed()
                .saturating_sub(Duration::from_millis(ms)),
        )
    }

    /// True when the stream delivers: its source runs and published a frame
    /// within `within`.
    pub fn live(&self, within: Duration) -> bool {
        self.state() == SourceState::Running && self.since_last_frame().is_some_and(|d| d <= within)
    }

    /// True when a listener of this stream gets frames from it now or in a
    /// moment: its source delivers (a frame within `fallback_after`), has
    /// just begun a session (within `fallback_after`), or is waiting to be
    /// started by its first listener (a file, a command, the demo).
    pub fn serving(&self) -> bool {
        let cfg = self.config();
        if self.live(cfg.fallback_after) {
            return true;
        }
        match self.state() {
            SourceState::Opening => true,
            SourceState::Running => {
                Duration::from_secs_f64(self.session_uptime()) < cfg.fallback_after
                    && self
                        .since_last_frame()
                        .is_none_or(|d| d < cfg.fallback_after)
            }
            SourceState::Idle => {
                self.starts_on_demand()
                    || (cfg.on_demand && matches!(cfg.source, crate::config::SourceSpec::Relay(_)))
            }
            SourceState::BackingOff | SourceState::Ended => false,
        }
    }

    /// True for a push or relay stream: its source is another machine's.
    pub fn is_remote(&self) -> bool {
        matches!(
            self.config().source,
            crate::config::SourceSpec::Push | crate::config::SourceSpec::Relay(_)
        )
    }

    /// True when the stream's source is started by its listeners (a file, a
    /// command, the demo), so a listener moved to it will get frames; a push
    /// or relay source is there only when it is.
    pub fn starts_on_demand(&self) -> bool {
        matches!(
            self.config().source,
            crate::config::SourceSpec::Path(_)
                | crate::config::SourceSpec::Exec { .. }
                | crate::config::SourceSpec::Demo
        ) && self.state() != SourceState::Ended
    }

    /// Ask the source to stop for good.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.control.signal();
    }

    /// True when the source has been asked to stop.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The set of streams being served, replaced whole by a reload.
#[derive(Debug, Default)]
pub struct StreamSet {
    /// Bumped by every reload.
    pub version: u64,
    /// The streams.
    pub streams: Vec<Arc<Stream>>,
}

impl StreamSet {
    /// The stream for a request path: the one mounted there, else the
    /// catch-all stream (command-line mode), if any.
    pub fn route(&self, path: &str) -> Option<&Arc<Stream>> {
        self.streams
            .iter()
            .find(|s| s.mount.as_deref() == Some(path))
            .or_else(|| self.streams.iter().find(|s| s.mount.is_none()))
    }

    /// The stream with id `id`.
    pub fn by_id(&self, id: u64) -> Option<&Arc<Stream>> {
        self.streams.iter().find(|s| s.id == id)
    }

    /// The stream mounted at `mount`.
    pub fn by_mount(&self, mount: &str) -> Option<&Arc<Stream>> {
        self.streams
            .iter()
            .find(|s| s.mount.as_deref() == Some(mount))
    }

    /// Where a listener of `home` is served now: `home` itself while it
    /// delivers (or starts for its listeners), else the first stream of its
    /// fallback chain that does; `None` when none does. A chain that comes
    /// back to a stream already seen stops there.
    pub fn target_for(&self, home: &Arc<Stream>) -> Option<Arc<Stream>> {
        let mut seen: Vec<u64> = Vec::new();
        let mut at = home.clone();
        loop {
            if at.serving() {
                return Some(at);
            }
            seen.push(at.id);
            let next = at.config().fallback.clone();
            match next.and_then(|m| self.by_mount(&m).cloned()) {
                Some(f) if !seen.contains(&f.id) => at = f,
                // Nothing in the chain delivers. A stream its listeners
                // start (a command backing off, say) keeps them waiting, as
                // it always did, and so does a push or relay mount whose
                // source is connected but quiet (or has not sent its first
                // frame yet); one without its source has nothing to give.
                _ => {
                    let waits = !home.is_remote()
                        || home.push_claimed()
                        || home.state() == SourceState::Running;
                    return waits.then(|| home.clone());
                }
            }
        }
    }
}
