//! Server-wide state: what every shard, the source threads' bells and the
//! main thread share for the life of the server ([`ServerShared`]).
//!
//! Everything here is immutable after start-up, an atomic with a stated
//! meaning, or the stream set behind an `RwLock` that is read once per
//! request and per watcher pass (never per frame) and replaced whole by a
//! reload.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::stats::ShardStats;
use crate::stream::{Bell, ClientRegistry, StreamSet};
use crate::sys::EventFd;

/// What every shard and the main thread share.
#[derive(Debug)]
pub struct ServerShared {
    /// Set once to stop: shards stop accepting and end every response.
    pub shutdown: AtomicBool,
    /// Wait this long after a bell to gather frames before waking clients.
    pub flush_interval: Duration,
    /// Server-wide client limit (0 = none).
    pub max_clients: usize,
    /// Clients connected on all shards (connect/disconnect only).
    pub clients: AtomicUsize,
    /// One bell per shard.
    pub bells: Arc<[Bell]>,
    /// Per-shard request counters.
    pub shard_stats: Vec<ShardStats>,
    /// Per-shard client lists, for `/status/clients`.
    pub registries: Vec<ClientRegistry>,
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
}

impl ServerShared {
    /// The current stream set.
    pub fn streams(&self) -> Arc<StreamSet> {
        match self.streams.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
