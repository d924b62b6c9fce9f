//! Server-wide state: what every shard, the source threads' bells and the
//! main thread share for the life of the server ([`ServerShared`]).
//!
//! Everything here is immutable after start-up, an atomic with a stated
//! meaning, the stream set behind an `RwLock` that is read once per request
//! and per engine pass (never per frame) and replaced whole by a reload, or
//! a shard's snapshot slot behind a mutex taken once per `/status/clients`
//! request.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::credentials::Credentials;
use crate::listener::ListenerRow;
use crate::stats::ShardStats;
use crate::stream::{Bell, StreamSet};
use crate::sys::EventFd;

/// What every shard and the main thread share.
#[derive(Debug)]
pub struct ServerShared {
    /// Set once to stop: shards stop accepting and end every response.
    pub shutdown: AtomicBool,
    /// Wait this long after a bell to gather frames before waking clients.
    pub flush_interval: Option<Duration>,
    /// Server-wide client limit (0 = none).
    pub max_clients: usize,
    /// Clients connected on all shards (connect/disconnect only).
    pub clients: AtomicUsize,
    /// One bell per shard.
    pub bells: Arc<[Bell]>,
    /// Per-shard request counters.
    pub shard_stats: Vec<ShardStats>,
    /// Per-shard listener snapshots, for `/status/clients`.
    pub snapshots: Vec<SnapshotSlot>,
    /// The streams served; replaced whole by a reload. Read once per request
    /// and per watcher pass, never per frame.
    pub streams: RwLock<Arc<StreamSet>>,
    /// True when status pages are on a separate admin address (then the
    /// reserved paths are not answered on the public listeners).
    pub admin_separate: bool,
    /// When the server started.
    pub started: Instant,
    /// Shards whose executor is up (start-up waits for all of them).
    pub shards_ready: AtomicUsize,
    /// Signalled when the last client leaves (the main thread then checks
    /// whether a finished server should exit).
    pub main_wake: Arc<EventFd>,
    /// The credential store; replaced whole by a reload. Read once per
    /// source handshake or admin request.
    pub credentials: RwLock<Arc<Credentials>>,
    /// `/health` is 503 while one of these mounts has no live source.
    pub health_mounts: RwLock<Vec<String>>,
    /// WebSocket channels: on (max channels > 0), and the keys (empty: any).
    channels: RwLock<(bool, Vec<crate::config::Secret>)>,
    /// What shards and threads ask the main thread to do (it alone changes
    /// the stream set): open a WebSocket channel, mirror an origin's mounts.
    requests: Mutex<Vec<MainRequest>>,
}

/// The main thread's answer to a request that waits for one: `PENDING`
/// until it is done, then `OPENED` or `REFUSED`.
pub type Answer = Arc<std::sync::atomic::AtomicU8>;
/// Not answered yet.
pub const PENDING: u8 = 0;
/// Done: the channel exists (it is in the published stream set).
pub const OPENED: u8 = 1;
/// Refused (no room for another channel, or it could not start).
pub const REFUSED: u8 = 2;

/// A request to the main thread.
#[derive(Debug, Clone)]
pub enum MainRequest {
    /// A publisher wants channel `name` (made if there is room); the main
    /// thread answers in `answer` once the stream set is published.
    OpenChannel {
        /// The channel's name.
        name: String,
        /// Where the main thread answers.
        answer: Answer,
    },
    /// Mirror `index` (of the configuration's) lists these mounts now.
    MirrorMounts {
        /// Which `[[mirror]]`.
        index: usize,
        /// The origin's mounts.
        mounts: Vec<String>,
    },
}

impl ServerShared {
    /// The shared state of a server with `shards` shards and no stream yet.
    pub fn new(
        shards: usize,
        flush_interval: Option<Duration>,
        max_clients: usize,
        admin_separate: bool,
        main_wake: Arc<EventFd>,
    ) -> ServerShared {
        ServerShared {
            shutdown: AtomicBool::new(false),
            flush_interval,
            max_clients,
            clients: AtomicUsize::new(0),
            bells: (0..shards).map(|_| Bell::default()).collect(),
            shard_stats: (0..shards).map(|_| ShardStats::default()).collect(),
            snapshots: (0..shards).map(|_| SnapshotSlot::default()).collect(),
            streams: RwLock::new(Arc::new(StreamSet::default())),
            admin_separate,
            started: Instant::now(),
            shards_ready: AtomicUsize::new(0),
            main_wake,
            credentials: RwLock::new(Arc::new(Credentials::new(Vec::new()))),
            health_mounts: RwLock::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            channels: RwLock::new((false, Vec::new())),
        }
    }

    /// Ask the main thread for something (it is woken).
    pub fn ask_main(&self, r: MainRequest) {
        match self.requests.lock() {
            Ok(mut q) => q.push(r),
            Err(p) => p.into_inner().push(r),
        }
        self.main_wake.signal();
    }

    /// The requests waiting for the main thread.
    pub fn take_requests(&self) -> Vec<MainRequest> {
        match self.requests.lock() {
            Ok(mut q) => std::mem::take(&mut *q),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// The credential store now.
    pub fn credentials(&self) -> Arc<Credentials> {
        match self.credentials.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Install a configuration's channel settings (start-up, reload).
    pub fn set_channels(&self, c: &crate::config::Channels) {
        let v = (c.max_channels > 0, c.keys.clone());
        match self.channels.write() {
            Ok(mut ch) => *ch = v,
            Err(p) => *p.into_inner() = v,
        }
    }

    /// True when WebSocket channels are on.
    pub fn channels_enabled(&self) -> bool {
        match self.channels.read() {
            Ok(c) => c.0,
            Err(p) => p.into_inner().0,
        }
    }

    /// True when `key` may publish to or receive channels (any key when
    /// none is configured, as seed 004 does). Compared in constant time.
    pub fn channel_key_ok(&self, key: &str) -> bool {
        let keys = match self.channels.read() {
            Ok(c) => c.1.clone(),
            Err(p) => p.into_inner().1.clone(),
        };
        keys.is_empty()
            || keys.iter().any(|k| match k {
                crate::config::Secret::Plain(p) => {
                    crate::credentials::constant_time_eq(p.as_bytes(), key.as_bytes())
                }
                crate::config::Secret::Bcrypt(h) => bcrypt::verify(key, h).unwrap_or(false),
            })
    }

    /// Install a configuration's users and health mounts (start-up, reload).
    pub fn set_access(&self, users: Vec<crate::config::User>, health_mounts: Vec<String>) {
        let store = Arc::new(Credentials::new(users));
        match self.credentials.write() {
            Ok(mut c) => *c = store,
            Err(p) => *p.into_inner() = store,
        }
        match self.health_mounts.write() {
            Ok(mut h) => *h = health_mounts,
            Err(p) => *p.into_inner() = health_mounts,
        }
    }

    /// The current stream set.
    pub fn streams(&self) -> Arc<StreamSet> {
        match self.streams.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Where one shard leaves a copy of its listener rows when a
/// `/status/clients` request (answered on any shard) asks for them. The
/// listener records themselves are never shared: the shard copies them on
/// its own thread, once per request, and drops the copy again a little
/// later ([`SnapshotSlot::expire`]) so it does not sit in memory.
#[derive(Debug, Default)]
pub struct SnapshotSlot {
    /// The newest request's generation (bumped by requesters; the shard
    /// reads it with Acquire).
    pub wanted: AtomicU64,
    /// The generation the rows answer, the rows, and when they were made.
    done: Mutex<Snapshot>,
}

#[derive(Debug, Default)]
struct Snapshot {
    generation: u64,
    rows: Arc<Vec<ListenerRow>>,
    made: Option<Instant>,
}

impl SnapshotSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        match self.done.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        }
    }

    /// Ask for a new snapshot; returns the generation to wait for.
    pub fn request(&self) -> u64 {
        self.wanted.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The generation of the rows in the slot.
    pub fn done_generation(&self) -> u64 {
        self.lock().generation
    }

    /// Leave rows answering `generation` (shard side).
    pub fn fill(&self, generation: u64, rows: Vec<ListenerRow>) {
        let mut d = self.lock();
        d.generation = generation;
        d.rows = Arc::new(rows);
        d.made = Some(Instant::now());
    }

    /// The rows if they answer `generation` or newer.
    pub fn take_if(&self, generation: u64) -> Option<Arc<Vec<ListenerRow>>> {
        let d = self.lock();
        (d.generation >= generation).then(|| d.rows.clone())
    }

    /// Drop rows made more than `age` ago (shard side, now and then).
    pub fn expire(&self, age: Duration) {
        let mut d = self.lock();
        if d.made.is_some_and(|t| t.elapsed() > age) {
            d.rows = Arc::new(Vec::new());
            d.made = None;
        }
    }
}
