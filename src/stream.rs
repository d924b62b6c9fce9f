//! A stream: one source, one ring, and the little state shards and the source
//! thread share about it.
//!
//! Everything here is either immutable after start, an atomic with a stated
//! meaning, or (the header bytes) behind a mutex that is taken once per client
//! connection and once per source open, never per frame.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

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
    /// Index in the server's stream list (and in each shard's tables).
    pub index: usize,
    /// Name for logs: the mount path, or "stream" on the command line.
    pub name: String,
    /// The stream's configuration.
    pub config: StreamConfig,
    /// The frames.
    pub ring: Arc<Ring>,
    /// The current session's header bytes; taken once per client start.
    header: Mutex<Header>,
    /// `SourceState` as u8. Release on store, Acquire on load: a client that
    /// sees Running also sees `session_start` of that session.
    state: AtomicU8,
    /// First frame number of the current (or next) source session.
    session_start: AtomicU64,
    /// Clients of this stream on all shards. Changed on connect/disconnect
    /// only (never per frame); the source thread reads it for lazy start and
    /// close-idle.
    clients: AtomicUsize,
    /// Wakes the source thread (a client arrived, the last one left, stop).
    pub control: EventFd,
    /// Set when the source must stop for good (server shutdown).
    stop: AtomicBool,
    /// Source counters (written by the source thread).
    pub source_stats: SourceStats,
    /// Per-shard client counters of this stream (each written by its shard).
    pub client_stats: Vec<ClientStats>,
    /// When the current session started (for status); behind the header lock.
    pub created: Instant,
}

impl Stream {
    /// A new stream with its ring mapped; the source is not started.
    pub fn new(index: usize, config: StreamConfig, shards: usize) -> std::io::Result<Stream> {
        let ring = Arc::new(Ring::new(config.source_buffer, config.frame_bytes)?);
        let name = config.mount.clone().unwrap_or_else(|| "stream".to_string());
        Ok(Stream {
            index,
            name,
            config,
            ring,
            header: Mutex::new(Header {
                first_frame: 0,
                bytes: Arc::from(Vec::new()),
            }),
            state: AtomicU8::new(SourceState::Idle as u8),
            session_start: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
            control: EventFd::new()?,
            stop: AtomicBool::new(false),
            source_stats: SourceStats::default(),
            client_stats: (0..shards).map(|_| ClientStats::default()).collect(),
            created: Instant::now(),
        })
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
        if let Ok(mut h) = self.header.lock() {
            *h = Header {
                first_frame,
                bytes: Arc::from(header),
            };
        }
        self.session_start.store(first_frame, Ordering::Release);
        self.set_state(SourceState::Running);
    }

    /// The current header bytes (one lock per client start).
    pub fn header(&self) -> Header {
        match self.header.lock() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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

    /// True once the source has ended for good and no more frames will come.
    pub fn ended(&self) -> bool {
        self.state() == SourceState::Ended
    }

    /// A client joined (any shard). Wakes the source thread when it is the
    /// first, for lazy start.
    pub fn client_joined(&self) {
        if self.clients.fetch_add(1, Ordering::AcqRel) == 0 {
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
