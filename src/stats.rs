//! Counters: what happened, per shard and per stream, summed when read.
//!
//! Every counter has exactly one writer (a shard's thread or a stream's source
//! thread), so it is updated with a Relaxed load and store, never a contended
//! read-modify-write; readers on other threads (stat lines, /status) load with
//! Relaxed and sum. A reading may be a few events behind, never torn. Each
//! writer's counters sit on their own cache lines so shards never share one.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning thread calls this (single writer), so a plain
    /// load + store cannot lose an update.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Current value (Relaxed: a statistic, not a synchronisation point).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down (clients now), single writer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the value (owning thread only).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One shard's counters about one stream's clients.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ClientStats {
    /// Clients of this stream on this shard right now.
    pub clients_now: Gauge,
    /// Most clients at once.
    pub clients_peak: Gauge,
    /// Clients ever served (got a 200).
    pub clients_total: Counter,
    /// Bytes written to clients (headers excluded, header-bytes included).
    pub bytes_out: Counter,
    /// Whole frames written to clients.
    pub frames_out: Counter,
    /// Frames skipped by lapped clients.
    pub frames_skipped: Counter,
    /// Times a client was lapped and jumped forward.
    pub laps: Counter,
    /// Clients disconnected because a frame they were sent was overwritten
    /// during the send (torn) or could not be completed (truncated).
    pub torn_disconnects: Counter,
    /// Clients whose response ended at `client-max-bytes`.
    pub max_bytes_reached: Counter,
    /// Clients that went away or whose socket failed.
    pub client_gone: Counter,
    /// vectored sends made (to measure bytes per send).
    pub sends: Counter,
    /// sends that found the socket buffer full.
    pub would_block: Counter,
}

/// One shard's request-level counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    /// Connections accepted.
    pub accepted: Counter,
    /// accept() failures (e.g. out of file descriptors).
    pub accept_errors: Counter,
    /// Clients connected right now (all streams).
    pub clients_now: Gauge,
    /// Malformed requests answered 400.
    pub bad_requests: Counter,
    /// Requests whose header did not arrive in time (408).
    pub header_timeouts: Counter,
    /// Requests whose header was too large (431).
    pub header_too_large: Counter,
    /// Requests with a method other than GET/HEAD (405).
    pub bad_method: Counter,
    /// Requests for no configured stream (404).
    pub not_found: Counter,
    /// Requests refused at a client limit (503).
    pub rejected_full: Counter,
    /// HEAD requests answered.
    pub head_requests: Counter,
    /// Connections that closed before sending a full request.
    pub early_close: Counter,
}

/// One stream's source counters (written by its source thread only).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct SourceStats {
    /// Source sessions opened (file opened / command started).
    pub opens: Counter,
    /// Failures to open (missing file, command not found...).
    pub open_errors: Counter,
    /// Sessions that ended by EOF or read error.
    pub ends: Counter,
    /// Sessions killed for being quiet longer than max-quiet-interval.
    pub quiet_kills: Counter,
    /// Sessions closed because the last client left (close-idle).
    pub idle_closes: Counter,
    /// Bytes read from the source.
    pub bytes_in: Counter,
    /// Frames published to the ring.
    pub frames_in: Counter,
    /// Bytes the framer skipped as garbage.
    pub invalid_bytes: Counter,
    /// Frames dropped whole for being larger than frame-bytes.
    pub oversized_frames: Counter,
    /// Metadata tags (ID3v2, ID3v1, APEv2) and header frames (Xing/Info/VBRI)
    /// dropped.
    pub tags: Counter,
    /// Bytes of those tags and header frames.
    pub tag_bytes: Counter,
    /// Free-format MP3 headers refused.
    pub free_format_headers: Counter,
    /// Stream headers (Ogg header pages of a logical stream) captured.
    pub stream_headers: Counter,
    /// Bytes of an unfinished frame dropped at the end of a session.
    pub partial_bytes_dropped: Counter,
    /// Header bytes captured (last session).
    pub header_bytes: Gauge,
}
