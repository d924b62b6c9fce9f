//! Histograms and the run report: the JSON written by `--json` and the human summary.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A microsecond histogram from 1 µs to one hour, 3 significant figures.
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Self {
        Hist(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one value in µs (clamped into range).
    #[inline]
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.max(1));
    }

    /// Empties the histogram.
    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0..=1); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    /// Count, min, mean, p50, p90, p99, p99.9 and max.
    pub fn percentiles(&self) -> Percentiles {
        let h = &self.0;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Summary of one histogram, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

/// The whole run, as written to `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// loadgen's version.
    pub loadgen_version: String,
    /// The URLs clients were spread over (client i uses URL i mod len).
    pub urls: Vec<String>,
    /// Configured run length in seconds.
    pub duration_s: f64,
    /// Measured run length in seconds.
    pub wall_s: f64,
    /// Connections started per second (0 = as fast as possible).
    pub ramp_per_s: f64,
    /// Expected frame length, when given.
    pub frame_bytes: Option<u32>,
    /// Client counts.
    pub clients: ClientCounts,
    /// Connection attempts and how they ended.
    pub connections: ConnectionCounts,
    /// Body bytes.
    pub data: DataCounts,
    /// Frame check results.
    pub frames: FrameCounts,
    /// Delivery latency (receive time − send time) of every good frame, µs.
    pub latency_us: Percentiles,
    /// Connect start to complete response head, per attempt, µs.
    pub time_to_headers_us: Percentiles,
    /// Connect start to first good frame (first body byte for non-test streams), µs.
    pub time_to_first_frame_us: Percentiles,
    /// Run start until every client had its response head (None = some never did).
    pub all_headers_ms: Option<f64>,
    /// Run start until every reading (non-stall) client had a first frame.
    pub all_first_frame_ms: Option<f64>,
    /// The same figures per behaviour.
    pub classes: Vec<ClassReport>,
    /// Short `churn` sessions (all zero when no client churns).
    pub sessions: SessionCounts,
    /// ICY metadata (`--icy`; None without it).
    pub icy: Option<IcyCounts>,
    /// WebSocket delivery (`--websocket`; None without it).
    pub websocket: Option<WsCounts>,
    /// loadgen's own resource use.
    pub loadgen: SelfUsage,
    /// True when no frame was corrupt and failed clients stayed within tolerance.
    pub passed: bool,
    /// Why the run did not pass (empty when it did).
    pub failures: Vec<String>,
}

/// Client (slot) counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientCounts {
    /// Clients asked for (-n).
    pub requested: u64,
    /// Clients whose first connection was started before the run ended.
    pub started: u64,
    /// Clients that are not `stall` (they read the body).
    pub readers: u64,
    /// Clients holding a connection past its response head when the run ended.
    pub connected_at_end: u64,
    /// Clients that got a response head at least once.
    pub with_headers: u64,
    /// Reading clients that got at least one good frame.
    pub with_first_frame: u64,
    /// Clients with at least one failed connection (see `connections`).
    pub failed: u64,
    /// `failed / requested`.
    pub failed_fraction: f64,
}

/// Connection attempts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConnectionCounts {
    /// Connections started (first ones, retries and reconnects).
    pub attempts: u64,
    /// connect() failed or was refused.
    pub connect_failed: u64,
    /// No complete response head within --connect-timeout.
    pub timeouts: u64,
    /// Non-2xx status, malformed head or bad chunked encoding.
    pub http_errors: u64,
    /// A reading client's connection closed or reset by the server before the run ended.
    pub closed_early: u64,
    /// A stalled client's connection closed by the server (expected of some servers).
    pub stall_closed: u64,
    /// Planned reconnects of `reconnect` clients.
    pub reconnects: u64,
    /// Connections whose body ended inside a frame.
    pub truncated_at_close: u64,
    /// Up to 8 distinct error messages.
    pub error_examples: Vec<String>,
}

/// Byte counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DataCounts {
    /// Response body bytes received (after de-chunking).
    pub bytes: u64,
    /// Average body throughput, MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Bytes before the first magic of a body (stream header), skipped once.
    pub leading_bytes: u64,
    /// Bytes skipped while resynchronising after a corrupt header.
    pub resync_bytes: u64,
    /// Bodies that were not loadgen test streams (no magic near the start).
    pub non_loadgen_bodies: u64,
}

/// Frame check results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FrameCounts {
    /// Frames that passed every check.
    pub ok: u64,
    /// Frames missing from sequence gaps (skipped by the server; not errors).
    pub skipped: u64,
    /// Frames that failed a check (all kinds below): errors.
    pub corrupt: u64,
    /// A frame boundary without a valid header.
    pub bad_header: u64,
    /// Checksum mismatches: damaged or torn frames.
    pub checksum: u64,
    /// A frame of another stream inside one connection.
    pub stream_changed: u64,
    /// Connections to one URL seeing different stream ids (an error, counted in corrupt).
    pub url_stream_mismatch: u64,
    /// Sequence numbers going backwards (source restarted).
    pub seq_resets: u64,
}

/// `--icy`: the metadata blocks every listener got (all connections together). With
/// `--icy`, `data.bytes` counts audio bytes only; the blocks are `metadata_bytes`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IcyCounts {
    /// The `icy-metaint` of the first response that had one.
    pub metaint: Option<u32>,
    /// Responses with an `icy-metaint` header (every one must have it: one without is
    /// an HTTP error).
    pub responses_with_metaint: u64,
    /// Responses whose `icy-metaint` differed from the first one's.
    pub metaint_mismatches: u64,
    /// Blocks received (length bytes read), malformed ones included.
    pub blocks: u64,
    /// Connections that got at least one block.
    pub connections_with_blocks: u64,
    /// Blocks of one zero byte: nothing changed.
    pub empty_blocks: u64,
    /// Well-formed blocks with a title.
    pub title_blocks: u64,
    /// Connections whose first block carried a title.
    pub first_blocks_with_title: u64,
    /// Title blocks that differed from the connection's previous title.
    pub title_changes: u64,
    /// Title blocks repeating the connection's previous title.
    pub title_repeats: u64,
    /// Malformed blocks (all kinds below): errors.
    pub malformed: u64,
    /// Blocks that end inside a key or a value (no closing `';`).
    pub malformed_unterminated: u64,
    /// Blocks that are not `Key='value';` fields and zero padding.
    pub malformed_syntax: u64,
    /// Blocks whose first field is not StreamTitle.
    pub malformed_no_title: u64,
    /// Blocks of zeros only, or with 16 or more bytes of padding.
    pub malformed_padding: u64,
    /// UTF-8 titles cut inside a character.
    pub malformed_utf8_cut: u64,
    /// Length bytes and block payloads together.
    pub metadata_bytes: u64,
    /// The start of the last title that changed (up to 48 bytes) and its length in bytes.
    pub last_title: Option<String>,
    /// Up to 8 malformed blocks: kind, the title's start and its length.
    pub malformed_examples: Vec<String>,
}

/// `--websocket`: what the listeners' WebSocket connections carried.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WsCounts {
    /// Handshakes completed (101 with the right `Sec-WebSocket-Accept`).
    pub upgrades: u64,
    /// Handshakes refused or wrong (counted as HTTP errors too).
    pub bad_handshakes: u64,
    /// Data messages (binary and text).
    pub messages: u64,
    /// Text messages (not expected of a stream; their payload is not checked).
    pub text_messages: u64,
    /// Binary messages holding exactly one whole frame of the test stream.
    pub whole_frame_messages: u64,
    /// Binary messages before the first frame (a stream header) or of a body that is not
    /// a test stream: not checked against frames.
    pub non_frame_messages: u64,
    /// Binary messages holding part of a frame, or more than one: errors.
    pub split_messages: u64,
    /// Frame header bytes (framing overhead, not in `data.bytes`).
    pub header_bytes: u64,
    /// Pings received; each was answered with a masked pong.
    pub pings: u64,
    /// Pongs sent.
    pub pongs_sent: u64,
    /// Pongs received.
    pub pongs_received: u64,
    /// Close frames received; each was answered with a masked close.
    pub closes_received: u64,
    /// Close frames sent.
    pub closes_sent: u64,
    /// Control frames that could not be sent at once (socket full).
    pub control_send_failures: u64,
    /// Frames that break RFC 6455 (masked, reserved bits, bad lengths, ...): errors; the
    /// connection is failed.
    pub protocol_errors: u64,
}

/// `churn` sessions: connect, head, a little body, close, again.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SessionCounts {
    /// `churn` clients: sessions kept in flight.
    pub clients: u64,
    /// Body bytes each session read before closing (None without churn clients).
    pub session_bytes: Option<u64>,
    /// Sessions that got their head and body bytes and closed.
    pub completed: u64,
    /// `completed` per second of the run.
    pub per_s: f64,
    /// Median of `per_second` leaving out the first 2 s (the steady rate).
    pub steady_median_per_s: Option<f64>,
    /// Sessions closed normally (FIN).
    pub fin_closes: u64,
    /// Sessions closed abortively (SO_LINGER 0: RST).
    pub rst_closes: u64,
    /// Requests sent as HTTP/1.0 (all behaviours).
    pub http10_requests: u64,
    /// Failed connection attempts of all behaviours: connect errors, timeouts (no head, or
    /// no session bytes, in time), HTTP errors (bad heads, non-2xx), closed early.
    pub failed_attempts: u64,
    /// Session start (connect) to its last body byte, µs.
    pub duration_us: Percentiles,
    /// Sessions completed in each whole second of the run.
    pub per_second: Vec<u64>,
}

/// Figures of one behaviour class.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassReport {
    /// `fast`, `paced@RATE`, `stall` or `reconnect`.
    pub behaviour: String,
    /// Clients with this behaviour.
    pub clients: u64,
    /// Body bytes they received.
    pub bytes: u64,
    /// Good frames.
    pub frames: u64,
    /// Frames skipped (sequence gaps).
    pub skipped: u64,
    /// Corrupt frames.
    pub corrupt: u64,
    /// Delivery latency, µs.
    pub latency_us: Percentiles,
    /// Time to first frame, µs.
    pub time_to_first_frame_us: Percentiles,
}

/// loadgen's own CPU and memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SelfUsage {
    /// User CPU seconds.
    pub cpu_user_s: f64,
    /// System CPU seconds.
    pub cpu_system_s: f64,
    /// User + system.
    pub cpu_total_s: f64,
    /// CPU seconds per wall second, in percent of one core.
    pub cpu_percent: f64,
    /// Peak RSS, KiB.
    pub max_rss_kb: u64,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn pct_line(name: &str, p: &Percentiles) -> String {
    if p.count == 0 {
        return format!("  {name:<22} (none)\n");
    }
    format!(
        "  {name:<22} p50 {} ms  p90 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={})\n",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        p.count
    )
}

impl Report {
    /// The end-of-run summary for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let c = &self.clients;
        let k = &self.connections;
        let f = &self.frames;
        let _ = writeln!(
            s,
            "loadgen clients: {} clients over {} URL(s), {:.1} s",
            c.requested,
            self.urls.len(),
            self.wall_s
        );
        let _ = writeln!(
            s,
            "  clients: {} started, {} got headers, {}/{} readers got a frame, {} connected at end, {} failed ({:.2}%)",
            c.started,
            c.with_headers,
            c.with_first_frame,
            c.readers,
            c.connected_at_end,
            c.failed,
            c.failed_fraction * 100.0
        );
        let _ = writeln!(
            s,
            "  connections: {} attempts, {} connect failed, {} timed out, {} HTTP errors, {} closed early, {} stalled closed, {} reconnects",
            k.attempts, k.connect_failed, k.timeouts, k.http_errors, k.closed_early, k.stall_closed, k.reconnects
        );
        for e in &k.error_examples {
            let _ = writeln!(s, "    error: {e}");
        }
        let _ = writeln!(
            s,
            "  data: {:.1} MB at {:.2} MB/s; frames {} ok, {} skipped, {} corrupt (bad header {}, checksum {}, stream changed {}, URL stream mismatch {})",
            self.data.bytes as f64 / 1e6,
            self.data.mb_per_s,
            f.ok,
            f.skipped,
            f.corrupt,
            f.bad_header,
            f.checksum,
            f.stream_changed,
            f.url_stream_mismatch
        );
        if self.data.non_loadgen_bodies > 0 {
            let _ = writeln!(
                s,
                "  {} bodies were not loadgen test streams (bytes counted, frames not checked)",
                self.data.non_loadgen_bodies
            );
        }
        s.push_str(&pct_line("latency", &self.latency_us));
        s.push_str(&pct_line("time to headers", &self.time_to_headers_us));
        s.push_str(&pct_line(
            "time to first frame",
            &self.time_to_first_frame_us,
        ));
        let opt = |v: Option<f64>| v.map_or("never".to_string(), |x| format!("{x:.1} ms"));
        let _ = writeln!(
            s,
            "  all clients had headers after {}; all readers had a frame after {}",
            opt(self.all_headers_ms),
            opt(self.all_first_frame_ms)
        );
        if let Some(m) = &self.icy {
            let _ = writeln!(
                s,
                "  icy: metaint {}, {} blocks ({} empty, {} titles: {} first, {} changes, {} repeats), {} malformed, {:.1} kB of metadata; last title {:?}",
                m.metaint.map_or("none".to_string(), |v| v.to_string()),
                m.blocks,
                m.empty_blocks,
                m.title_blocks,
                m.first_blocks_with_title,
                m.title_changes,
                m.title_repeats,
                m.malformed,
                m.metadata_bytes as f64 / 1e3,
                m.last_title.as_deref().unwrap_or("")
            );
            for e in &m.malformed_examples {
                let _ = writeln!(s, "    malformed block: {e}");
            }
        }
        if let Some(w) = &self.websocket {
            let _ = writeln!(
                s,
                "  websocket: {} upgrades ({} bad), {} messages: {} whole frames, {} split, {} before frames, {} text; {} pings, {} pongs sent, {} closes received, {} protocol errors",
                w.upgrades,
                w.bad_handshakes,
                w.messages,
                w.whole_frame_messages,
                w.split_messages,
                w.non_frame_messages,
                w.text_messages,
                w.pings,
                w.pongs_sent,
                w.closes_received,
                w.protocol_errors
            );
        }
        let ss = &self.sessions;
        if ss.clients > 0 {
            let _ = writeln!(
                s,
                "  sessions: {} completed ({} in flight, {} body bytes each): {:.1}/s, steady median {}; {} closed with FIN, {} with RST; {} failed attempts",
                ss.completed,
                ss.clients,
                ss.session_bytes.unwrap_or(0),
                ss.per_s,
                ss.steady_median_per_s
                    .map_or("–".to_string(), |v| format!("{v:.0}/s")),
                ss.fin_closes,
                ss.rst_closes,
                ss.failed_attempts
            );
            s.push_str(&pct_line("session time", &ss.duration_us));
        }
        if self.classes.len() > 1 {
            for cl in &self.classes {
                let _ = writeln!(
                    s,
                    "  [{}] {} clients, {:.1} MB, {} frames, {} skipped, {} corrupt",
                    cl.behaviour,
                    cl.clients,
                    cl.bytes as f64 / 1e6,
                    cl.frames,
                    cl.skipped,
                    cl.corrupt
                );
                if cl.latency_us.count > 0 {
                    s.push_str(&pct_line("  latency", &cl.latency_us));
                }
            }
        }
        let u = &self.loadgen;
        let _ = writeln!(
            s,
            "  loadgen itself: {:.2} s CPU ({:.2} user + {:.2} sys) = {:.1}% of one core, peak RSS {:.1} MB",
            u.cpu_total_s,
            u.cpu_user_s,
            u.cpu_system_s,
            u.cpu_percent,
            u.max_rss_kb as f64 / 1024.0
        );
        if self.passed {
            let _ = writeln!(s, "  PASS");
        } else {
            for r in &self.failures {
                let _ = writeln!(s, "  FAIL: {r}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_values() {
        let mut h = Hist::new();
        for v in 1..=1000 {
            h.record(v);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500);
        assert_eq!(p.max, 1000);
        assert!(Hist::new().percentiles().count == 0);
    }

    #[test]
    fn report_serialises_every_section() {
        let r = Report::default();
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "clients",
            "connections",
            "data",
            "frames",
            "latency_us",
            "time_to_headers_us",
            "time_to_first_frame_us",
            "all_first_frame_ms",
            "sessions",
            "loadgen",
            "passed",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(r.human().contains("loadgen itself"));
        // No churn clients: no session line.
        assert!(!r.human().contains("sessions:"));
    }

    #[test]
    fn session_line_when_churning() {
        let mut r = Report::default();
        r.sessions.clients = 100;
        r.sessions.session_bytes = Some(1000);
        r.sessions.completed = 12345;
        r.sessions.per_s = 617.31;
        r.sessions.steady_median_per_s = Some(620.0);
        r.sessions.fin_closes = 6173;
        r.sessions.rst_closes = 6172;
        r.sessions.per_second = vec![600, 620];
        let h = r.human();
        assert!(h.contains("sessions: 12345 completed (100 in flight, 1000 body bytes each): 617.3/s, steady median 620/s; 6173 closed with FIN, 6172 with RST; 0 failed attempts"), "{h}");
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["sessions"]["completed"], 12345);
        assert_eq!(v["sessions"]["per_second"][1], 620);
    }
}
