//! Counters and gauges: what happened, per shard and per stream, summed when
//! read — and the one place each figure is declared.
//!
//! # Single writers
//!
//! Every counter has exactly one writer (a shard's thread or a stream's source
//! thread), so it is updated with a Relaxed load and store, never a contended
//! read-modify-write; readers on other threads (stat lines, /status) load with
//! Relaxed and sum. A reading may be a few events behind, never torn. Each
//! writer's counters sit on their own cache lines so shards never share one.
//!
//! # Declared once
//!
//! A figure is declared once, with its JSON key, its Prometheus name, its
//! help text, its kind (counter or gauge), its unit and its scope (process,
//! server, shard, stream, listener). The counter structs below are written
//! with [`figures!`], which makes the struct fields *and* the table of
//! declarations ([`Figure`]) from the same lines; figures computed from state
//! rather than counted (listeners now, ring size, uptime) are declared in the
//! tables of `status.rs` the same way. `/status`, `/metrics` and the HTML
//! page are all generated from these tables, so a new counter appears in all
//! three by declaring it. Listener-scope figures appear in `/status/clients`
//! only, never as Prometheus series (one series per listener would be an
//! unbounded number of series).

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

/// A level that goes up and down, single writer.
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

/// How a figure behaves over time (the Prometheus `TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts at 0 with the process).
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    /// The Prometheus type word.
    pub fn prometheus(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// What a figure counts (for the HTML page's formatting and the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Events or things.
    Count,
    /// Bytes.
    Bytes,
    /// Frames.
    Frames,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
}

impl Unit {
    /// The unit's name, as the HTML page's formatter knows it.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Count => "count",
            Unit::Bytes => "bytes",
            Unit::Frames => "frames",
            Unit::Seconds => "seconds",
            Unit::Millis => "ms",
        }
    }
}

/// Where a figure lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The process (memory, descriptors).
    Process,
    /// The whole server.
    Server,
    /// One shard (label `shard`).
    Shard,
    /// One stream, summed over shards (label `stream`).
    Stream,
    /// One listener: `/status/clients` only, never a metric.
    Listener,
}

impl Scope {
    /// The scope's name (the HTML page groups figures by it).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Server => "server",
            Scope::Shard => "shard",
            Scope::Stream => "stream",
            Scope::Listener => "listener",
        }
    }
}

/// A figure's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Counts, bytes, frames.
    Int(u64),
    /// Times and rates.
    Float(f64),
}

impl Value {
    /// As JSON.
    pub fn json(self) -> serde_json::Value {
        match self {
            Value::Int(v) => v.into(),
            Value::Float(v) => v.into(),
        }
    }

    /// As a Prometheus sample value.
    pub fn prometheus(self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => format!("{v}"),
        }
    }

    /// Add (for sums over shards).
    pub fn plus(self, other: Value) -> Value {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Value::Int(a.wrapping_add(b)),
            (a, b) => Value::Float(a.as_f64() + b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }
}

/// How a figure of a counter struct `T` is read.
pub type Getter<T> = fn(&T) -> Value;

/// The declaration of one figure: everything `/status`, `/metrics` and the
/// HTML page need to show it, and how to read it (`get`, a function pointer:
/// [`Getter`] for a counter struct, or a function of several arguments for a
/// figure computed from state).
pub struct Figure<G> {
    /// Key in the JSON documents (`/status`, `/status/clients`).
    pub key: &'static str,
    /// Prometheus name without the `ringcast_` prefix (empty for listener
    /// figures, which are never metrics).
    pub metric: &'static str,
    /// One line for `# HELP` and the HTML page.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// What it counts.
    pub unit: Unit,
    /// Where it lives.
    pub scope: Scope,
    /// Read it.
    pub get: G,
}

/// A figure's description without its reader: what the documents need once
/// they have the value.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    /// See [`Figure::key`].
    pub key: &'static str,
    /// See [`Figure::metric`].
    pub metric: &'static str,
    /// See [`Figure::help`].
    pub help: &'static str,
    /// See [`Figure::kind`].
    pub kind: Kind,
    /// See [`Figure::unit`].
    pub unit: Unit,
    /// See [`Figure::scope`].
    pub scope: Scope,
}

impl<G> Figure<G> {
    /// The description alone.
    pub fn meta(&self) -> Meta {
        Meta {
            key: self.key,
            metric: self.metric,
            help: self.help,
            kind: self.kind,
            unit: self.unit,
            scope: self.scope,
        }
    }
}

impl<G> std::fmt::Debug for Figure<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Figure")
            .field("key", &self.key)
            .field("metric", &self.metric)
            .field("kind", &self.kind)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Declare a struct of single-writer counters and gauges and, from the same
/// lines, its table of [`Figure`]s (`Struct::FIGURES`).
///
/// ```text
/// figures! {
///     /// Doc of the struct.
///     pub struct Name (Scope::Stream) {
///         /// Doc of the field.
///         field: Counter, Unit::Bytes, "json_key", "metric_name_total", "Help text.";
///     }
/// }
/// ```
#[macro_export]
macro_rules! figures {
    (
        $(#[$meta:meta])*
        pub struct $name:ident ($scope:expr) {
            $(
                $(#[$fmeta:meta])*
                $field:ident : $ty:ident, $unit:expr, $key:literal, $metric:literal, $help:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $crate::stats::$ty,
            )*
        }

        impl $name {
            /// The declaration of every field, in order.
            pub const FIGURES: &'static [$crate::stats::Figure<$crate::stats::Getter<$name>>] = &[
                $(
                    $crate::stats::Figure {
                        key: $key,
                        metric: $metric,
                        help: $help,
                        kind: $crate::figures!(@kind $ty),
                        unit: $unit,
                        scope: $scope,
                        get: |s: &$name| $crate::stats::Value::Int(s.$field.get()),
                    },
                )*
            ];
        }
    };
    (@kind Counter) => { $crate::stats::Kind::Counter };
    (@kind Gauge) => { $crate::stats::Kind::Gauge };
}

figures! {
    /// One shard's counters about one stream's listeners (summed over shards
    /// for the stream's figures).
    pub struct ClientStats (Scope::Stream) {
        /// Listeners ever served (got a 200 and the stream).
        clients_total: Counter, Unit::Count, "clients_total", "stream_clients_total",
            "Listeners served.";
        /// Listeners whose response has ended (for whatever reason).
        clients_ended: Counter, Unit::Count, "clients_ended", "stream_clients_ended_total",
            "Listeners whose response ended.";
        /// Bytes written to listeners (header bytes included).
        bytes_out: Counter, Unit::Bytes, "bytes_out", "stream_bytes_out_total",
            "Bytes written to listeners.";
        /// Whole frames written to listeners.
        frames_out: Counter, Unit::Frames, "frames_out", "stream_frames_out_total",
            "Whole frames written to listeners.";
        /// Frames skipped by lapped listeners.
        frames_skipped: Counter, Unit::Frames, "frames_skipped", "stream_frames_skipped_total",
            "Frames skipped by lapped listeners.";
        /// Times a listener was lapped and jumped forward.
        laps: Counter, Unit::Count, "laps", "stream_laps_total",
            "Times a listener was lapped and jumped forward.";
        /// Listeners disconnected because a frame they were sent was
        /// overwritten during the send (torn) or could not be completed.
        torn_disconnects: Counter, Unit::Count, "torn_disconnects", "stream_torn_disconnects_total",
            "Listeners ended because a frame was overwritten while being sent.";
        /// Listeners whose response ended at `client-max-bytes`.
        max_bytes_reached: Counter, Unit::Count, "max_bytes_reached", "stream_max_bytes_reached_total",
            "Listeners whose response ended at client-max-bytes.";
        /// Listeners that went away or whose socket failed.
        client_gone: Counter, Unit::Count, "clients_gone", "stream_clients_gone_total",
            "Listeners that went away or whose socket failed.";
        /// Vectored sends made (to measure bytes per send).
        sends: Counter, Unit::Count, "sends", "stream_sends_total",
            "Vectored sends made.";
        /// Sends that found the socket buffer full.
        would_block: Counter, Unit::Count, "sends_would_block", "stream_sends_would_block_total",
            "Sends that found the socket buffer full.";
    }
}

figures! {
    /// One shard's request-level counters.
    pub struct ShardStats (Scope::Shard) {
        /// Connections accepted.
        accepted: Counter, Unit::Count, "accepted", "shard_accepted_total",
            "Connections accepted.";
        /// accept() failures (e.g. out of file descriptors).
        accept_errors: Counter, Unit::Count, "accept_errors", "shard_accept_errors_total",
            "accept() failures (out of descriptors or memory).";
        /// Listeners that began on this shard (any stream).
        clients_started: Counter, Unit::Count, "clients_started", "shard_clients_started_total",
            "Listeners that began on the shard.";
        /// Listeners of this shard whose response ended.
        clients_ended: Counter, Unit::Count, "clients_ended", "shard_clients_ended_total",
            "Listeners of the shard whose response ended.";
        /// Malformed requests answered 400.
        bad_requests: Counter, Unit::Count, "bad_requests", "shard_bad_requests_total",
            "Requests answered 400.";
        /// Requests whose header did not arrive in time (408).
        header_timeouts: Counter, Unit::Count, "header_timeouts", "shard_header_timeouts_total",
            "Requests answered 408 (head not in time).";
        /// Requests whose header was too large (431).
        header_too_large: Counter, Unit::Count, "header_too_large", "shard_header_too_large_total",
            "Requests answered 431 (head too large).";
        /// Requests with a method other than GET/HEAD (405).
        bad_method: Counter, Unit::Count, "bad_method", "shard_bad_method_total",
            "Requests answered 405.";
        /// Requests for no configured stream (404).
        not_found: Counter, Unit::Count, "not_found", "shard_not_found_total",
            "Requests answered 404.";
        /// Requests refused at a client limit (503).
        rejected_full: Counter, Unit::Count, "rejected_full", "shard_rejected_full_total",
            "Requests answered 503 at a listener limit.";
        /// HEAD requests answered.
        head_requests: Counter, Unit::Count, "head_requests", "shard_head_requests_total",
            "HEAD requests answered.";
        /// Connections that closed before sending a full request.
        early_close: Counter, Unit::Count, "early_close", "shard_early_close_total",
            "Connections closed before a whole request.";
        /// Listeners moved between a stream and its fallback.
        fallback_moves: Counter, Unit::Count, "fallback_moves", "shard_fallback_moves_total",
            "Listeners moved to a fallback stream or back home.";
        /// Source clients (encoders) accepted.
        sources_accepted: Counter, Unit::Count, "sources_accepted", "shard_sources_accepted_total",
            "Source clients (encoders) accepted.";
        /// Source clients refused for their credentials (401), probes
        /// without credentials included.
        sources_unauthorized: Counter, Unit::Count, "sources_unauthorized", "shard_sources_unauthorized_total",
            "Source clients answered 401 (no or wrong credentials).";
        /// Source clients refused otherwise (mount in use, content type, not
        /// a push mount).
        sources_refused: Counter, Unit::Count, "sources_refused", "shard_sources_refused_total",
            "Source clients refused: mount in use, content type, not a push mount.";
        /// WebSocket listeners and publishers accepted.
        ws_upgrades: Counter, Unit::Count, "ws_upgrades", "shard_ws_upgrades_total",
            "WebSocket connections accepted.";
        /// WebSocket handshakes refused (400).
        ws_bad_handshakes: Counter, Unit::Count, "ws_bad_handshakes", "shard_ws_bad_handshakes_total",
            "WebSocket handshakes refused.";
        /// WebSocket clients that broke the protocol (unmasked or oversized
        /// frames, bad opcodes, data from a receiver).
        ws_protocol_errors: Counter, Unit::Count, "ws_protocol_errors", "shard_ws_protocol_errors_total",
            "WebSocket clients closed for breaking the protocol.";
        /// Channel requests refused (wrong key, no room for a channel).
        channel_refusals: Counter, Unit::Count, "channel_refusals", "shard_channel_refusals_total",
            "WebSocket channel requests refused (wrong key, no room).";
        /// CORS preflights answered.
        preflights: Counter, Unit::Count, "preflights", "shard_preflights_total",
            "CORS preflight (OPTIONS) requests answered.";
        /// Title updates received (admin/metadata).
        title_updates: Counter, Unit::Count, "title_updates", "shard_title_updates_total",
            "Title updates accepted (/admin/metadata, admin.cgi).";
        /// Status pages (/status, /metrics, ...) answered.
        status_requests: Counter, Unit::Count, "status_requests", "shard_status_requests_total",
            "Status and metrics pages answered.";
        /// CPU time the shard thread spent building status pages and
        /// listener rows, in microseconds: left out of its busy fraction, so
        /// a status poller does not change how frames are gathered.
        status_cpu_us: Counter, Unit::Count, "status_cpu_us", "shard_status_cpu_microseconds_total",
            "CPU time spent building status pages and listener rows, in microseconds.";
        /// The shard thread's busy fraction over the last load interval, in
        /// thousandths (status work left out).
        busy_permille: Gauge, Unit::Count, "busy_permille", "shard_busy_permille",
            "CPU time of the shard thread over the last 250 ms, status pages left out, in thousandths.";
        /// The gathering window in force, in microseconds.
        gather_window_us: Gauge, Unit::Count, "gather_window_us", "shard_gather_window_microseconds",
            "How long the shard gathers frames before it sends, in microseconds.";
    }
}

figures! {
    /// One stream's source counters (written by its source thread only).
    pub struct SourceStats (Scope::Stream) {
        /// Source sessions opened (file opened / command started).
        opens: Counter, Unit::Count, "source_opens", "stream_source_opens_total",
            "Source sessions opened.";
        /// Failures to open (missing file, command not found...).
        open_errors: Counter, Unit::Count, "source_open_errors", "stream_source_open_errors_total",
            "Source open failures.";
        /// Sessions that ended by EOF or read error.
        ends: Counter, Unit::Count, "source_ends", "stream_source_ends_total",
            "Source sessions that ended (EOF or read error).";
        /// Sessions killed for being quiet longer than max-quiet-interval.
        quiet_kills: Counter, Unit::Count, "source_quiet_kills", "stream_source_quiet_kills_total",
            "Source sessions killed for being quiet.";
        /// Sessions closed because the last client left (close-idle).
        idle_closes: Counter, Unit::Count, "source_idle_closes", "stream_source_idle_closes_total",
            "Source sessions closed when the last listener left.";
        /// Bytes read from the source.
        bytes_in: Counter, Unit::Bytes, "bytes_in", "stream_bytes_in_total",
            "Bytes read from the source.";
        /// Frames published to the ring.
        frames_in: Counter, Unit::Frames, "frames_in", "stream_frames_in_total",
            "Frames published to the ring.";
        /// Bytes the framer skipped as garbage.
        invalid_bytes: Counter, Unit::Bytes, "invalid_bytes", "stream_invalid_bytes_total",
            "Source bytes skipped as garbage.";
        /// WebSocket publishers closed for breaking the protocol (an
        /// unmasked or malformed frame: close 1002; a message too big: 1009).
        ws_publisher_errors: Counter, Unit::Count, "ws_publisher_errors", "stream_ws_publisher_errors_total",
            "WebSocket publishers closed for breaking the protocol.";
        /// Frames dropped whole for being larger than frame-bytes.
        oversized_frames: Counter, Unit::Frames, "oversized_frames", "stream_oversized_frames_total",
            "Frames dropped whole for being larger than frame-bytes.";
        /// Metadata tags (ID3v2, ID3v1, APEv2) and header frames
        /// (Xing/Info/VBRI) dropped.
        tags: Counter, Unit::Count, "tags_dropped", "stream_tags_dropped_total",
            "MP3 tags and Xing/Info/VBRI frames dropped.";
        /// Bytes of those tags and header frames.
        tag_bytes: Counter, Unit::Bytes, "tag_bytes", "stream_tag_bytes_total",
            "Bytes of dropped tags and header frames.";
        /// Free-format MP3 headers refused.
        free_format_headers: Counter, Unit::Count, "free_format_headers", "stream_free_format_headers_total",
            "Free-format MP3 headers refused.";
        /// Stream headers (Ogg header pages of a logical stream) captured.
        stream_headers: Counter, Unit::Count, "stream_headers", "stream_stream_headers_total",
            "Stream headers (Ogg header pages) captured.";
        /// Bytes of an unfinished frame dropped at the end of a session.
        partial_bytes_dropped: Counter, Unit::Bytes, "partial_bytes_dropped", "stream_partial_bytes_dropped_total",
            "Bytes of an unfinished frame dropped at a session's end.";
        /// A relay connected to another upstream than its first.
        failovers: Counter, Unit::Count, "relay_failovers", "stream_relay_failovers_total",
            "Relay connections to an upstream other than the first.";
        /// Upstreams that could not be used (refused, bad answer, wrong
        /// content type, too many redirects).
        upstream_errors: Counter, Unit::Count, "upstream_errors", "stream_upstream_errors_total",
            "Relay connection attempts that failed.";
        /// Header bytes captured (last session).
        header_bytes: Gauge, Unit::Bytes, "header_bytes", "stream_header_bytes",
            "Header bytes captured at the last source open.";
    }
}

impl ShardStats {
    /// Listeners on this shard now: derived, never kept by hand.
    pub fn clients_now(&self) -> u64 {
        self.clients_started
            .get()
            .saturating_sub(self.clients_ended.get())
    }
}

impl ClientStats {
    /// This shard's listeners of this stream now (derived).
    pub fn clients_now(&self) -> u64 {
        self.clients_total
            .get()
            .saturating_sub(self.clients_ended.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique<G>(figures: &[Figure<G>]) {
        for (i, f) in figures.iter().enumerate() {
            assert!(
                figures[..i].iter().all(|g| g.key != f.key),
                "key {} twice",
                f.key
            );
            assert!(
                figures[..i].iter().all(|g| g.metric != f.metric),
                "metric {} twice",
                f.metric
            );
            if f.kind == Kind::Counter {
                assert!(
                    f.metric.ends_with("_total"),
                    "counter {} must end in _total",
                    f.metric
                );
            }
            assert!(f.help.ends_with('.'), "help of {} is a sentence", f.key);
        }
    }

    #[test]
    fn declarations_are_unique_and_well_named() {
        unique(ClientStats::FIGURES);
        unique(ShardStats::FIGURES);
        unique(SourceStats::FIGURES);
        for f in ClientStats::FIGURES {
            assert!(f.metric.starts_with("stream_"));
        }
        for f in SourceStats::FIGURES {
            assert!(f.metric.starts_with("stream_"));
        }
        for f in ShardStats::FIGURES {
            assert!(f.metric.starts_with("shard_"));
        }
    }

    #[test]
    fn a_figure_reads_its_field() {
        let s = ShardStats::default();
        s.accepted.add(3);
        s.not_found.inc();
        let get = |key: &str| {
            let f = ShardStats::FIGURES.iter().find(|f| f.key == key).unwrap();
            (f.get)(&s)
        };
        assert_eq!(get("accepted"), Value::Int(3));
        assert_eq!(get("not_found"), Value::Int(1));
        assert_eq!(get("bad_method"), Value::Int(0));
    }

    #[test]
    fn derived_listener_counts() {
        let s = ShardStats::default();
        s.clients_started.add(5);
        s.clients_ended.add(2);
        assert_eq!(s.clients_now(), 3);
        let c = ClientStats::default();
        c.clients_total.add(4);
        c.clients_ended.add(4);
        assert_eq!(c.clients_now(), 0);
    }
}
