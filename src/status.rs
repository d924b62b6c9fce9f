//! What operators see: `/status` (JSON), `/status/clients` (JSON, one entry
//! per listener), `/metrics` (Prometheus text format) and a small HTML page
//! (`/status.html`, and `/` when no stream is served there).
//!
//! Everything is computed when asked, from counters that each shard and each
//! source thread keep for itself (single-writer atomics, see `stats.rs`) and
//! sums them here; nothing on the hot path knows these pages exist. The pages
//! are served on the listen addresses under reserved paths, or only on the
//! admin address when `admin_listen` is configured.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value as Value_};

use crate::destination::{DestState, DestStatus};
use crate::http::{self, Request};
use crate::listener::ListenerRow;
use crate::shared::ServerShared;
use crate::source::describe;
use crate::stats::{
    ClientStats, Figure, Getter, Kind, Meta, Scope, ShardStats, SourceStats, Unit, Value,
};
use crate::stream::{SourceState, Stream, StreamSet};
use crate::sys;

/// A complete response to a status request.
#[derive(Debug)]
pub struct Page {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Page {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Page {
        Page {
            status: 200,
            reason: "OK",
            content_type,
            body,
        }
    }

    fn head(&self) -> String {
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nConnection: close\r\nServer: ringcast/{}\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Head and body; the head alone when `head_only` (a HEAD request).
    pub fn into_response(self, head_only: bool) -> Vec<u8> {
        let mut out = self.head().into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// `GET /health`, for load balancers (answered on every listen address):
/// 200 and a short JSON body while the server serves; 503 while it stops,
/// or while a mount named in `health_mounts` has no live source.
pub fn health(server: &ServerShared, set: &StreamSet) -> Page {
    let stopping = server.shutdown.load(Ordering::Acquire);
    let wanted = match server.health_mounts.read() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| {
            set.by_mount(m)
                .is_none_or(|s| !s.live(s.config().fallback_after))
        })
        .collect();
    let status = if stopping {
        "stopping"
    } else if !missing.is_empty() {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({
        "status": status,
        "streams": set.streams.len(),
        "listeners": server.clients.load(Ordering::Relaxed),
        "missing": missing,
    });
    let mut page = Page::ok("application/json", body.to_string().into_bytes());
    if status != "ok" {
        page.status = 503;
        page.reason = "Service Unavailable";
    }
    page
}

/// True when `path` is one of the status pages (on a listener that serves
/// them).
pub fn is_status_path(set: &StreamSet, path: &str) -> bool {
    matches!(
        path,
        "/status" | "/status/clients" | "/metrics" | "/status.html"
    ) || (path == "/" && set.route("/").is_none())
}

/// True when the page lists listeners (the shard gathers every shard's rows
/// first).
pub fn needs_rows(path: &str) -> bool {
    path == "/status/clients"
}

/// The status page for this request, or `None` when the path is not one.
/// `rows` are every shard's listeners (for `/status/clients`).
pub fn page(
    server: &ServerShared,
    set: &StreamSet,
    req: &Request,
    rows: &[ListenerRow],
) -> Option<Page> {
    match req.path.as_str() {
        "/status" => Some(Page::ok(
            "application/json",
            serde_json::to_vec_pretty(&status_json(server, set)).unwrap_or_default(),
        )),
        "/status/clients" => {
            let want = http::query_text(&req.query, "stream");
            let stream_id = match &want {
                None => None,
                Some(m) => match set
                    .streams
                    .iter()
                    .find(|s| s.mount.as_deref().unwrap_or("/") == m)
                {
                    Some(s) => Some(s.id),
                    None => {
                        return Some(Page {
                            status: 404,
                            reason: "Not Found",
                            content_type: "application/json",
                            body: br#"{"error":"no such stream"}"#.to_vec(),
                        })
                    }
                },
            };
            Some(Page::ok(
                "application/json",
                serde_json::to_vec_pretty(&clients_json(set, stream_id, rows)).unwrap_or_default(),
            ))
        }
        "/metrics" => Some(Page::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(server, set).into_bytes(),
        )),
        "/status.html" => Some(Page::ok(
            "text/html; charset=utf-8",
            status_html().into_bytes(),
        )),
        "/" if set.route("/").is_none() => Some(Page::ok(
            "text/html; charset=utf-8",
            status_html().into_bytes(),
        )),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The figures computed from state (the counted ones are declared in
// stats.rs). Each table is the one declaration of its figures.
// ---------------------------------------------------------------------------

/// Process figures.
pub const PROCESS_FIGURES: &[Figure<Getter<ServerShared>>] = &[
    Figure {
        key: "rss_bytes",
        metric: "process_resident_memory_bytes",
        help: "Resident set size.",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        scope: Scope::Process,
        get: |_| Value::Int(sys::rss_bytes()),
    },
    Figure {
        key: "open_fds",
        metric: "process_open_fds",
        help: "Open file descriptors.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Process,
        get: |_| Value::Int(sys::open_fd_count() as u64),
    },
];

/// Server figures (top level of `/status`).
pub const SERVER_FIGURES: &[Figure<Getter<ServerShared>>] = &[
    Figure {
        key: "clients",
        metric: "server_clients",
        help: "Listeners connected now, all streams.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Server,
        get: |v| Value::Int(v.clients.load(Ordering::Relaxed) as u64),
    },
    Figure {
        key: "client_limit",
        metric: "server_client_limit",
        help: "Server-wide listener limit (0 = none).",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Server,
        get: |v| Value::Int(v.max_clients as u64),
    },
    Figure {
        key: "uptime_s",
        metric: "server_uptime_seconds",
        help: "Seconds since the server started.",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        scope: Scope::Server,
        get: |v| Value::Float(v.started.elapsed().as_secs_f64()),
    },
    Figure {
        key: "flush_interval_ms",
        metric: "server_flush_interval_milliseconds",
        help: "The fixed gathering window; -1 when adaptive (see each shard's gather_window_us).",
        kind: Kind::Gauge,
        unit: Unit::Millis,
        scope: Scope::Server,
        get: |v| Value::Float(v.flush_interval.map_or(-1.0, |d| d.as_secs_f64() * 1000.0)),
    },
];

/// How a shard figure computed from state is read: the shard's counters,
/// the streams, the shard's index.
pub type ShardGetter = fn(&ShardStats, &StreamSet, usize) -> Value;

/// The shard's share of a listener figure of every current stream.
fn shard_sum(set: &StreamSet, index: usize, f: impl Fn(&ClientStats) -> u64) -> u64 {
    set.streams.iter().map(|s| f(&s.client_stats[index])).sum()
}

/// Shard figures computed from state.
pub const SHARD_FIGURES: &[Figure<ShardGetter>] = &[
    Figure {
        key: "clients",
        metric: "shard_clients",
        help: "Listeners on the shard now.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Shard,
        get: |stats, _, _| Value::Int(stats.clients_now()),
    },
    Figure {
        key: "bytes_out",
        metric: "shard_bytes_out_total",
        help: "Bytes the shard wrote to listeners of the current streams.",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        scope: Scope::Shard,
        get: |_, set, i| Value::Int(shard_sum(set, i, |c| c.bytes_out.get())),
    },
    Figure {
        key: "frames_out",
        metric: "shard_frames_out_total",
        help: "Whole frames the shard wrote to listeners of the current streams.",
        kind: Kind::Counter,
        unit: Unit::Frames,
        scope: Scope::Shard,
        get: |_, set, i| Value::Int(shard_sum(set, i, |c| c.frames_out.get())),
    },
];

/// Stream figures computed from state.
pub const STREAM_FIGURES: &[Figure<Getter<Stream>>] = &[
    Figure {
        key: "clients",
        metric: "stream_clients",
        help: "Listeners connected now.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |s| Value::Int(s.clients() as u64),
    },
    Figure {
        key: "clients_peak",
        metric: "stream_clients_peak",
        help: "Most listeners at once.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |s| Value::Int(s.clients_peak() as u64),
    },
    Figure {
        key: "client_limit",
        metric: "stream_client_limit",
        help: "The stream's listener limit (0 = none).",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |s| Value::Int(s.config().max_clients as u64),
    },
    Figure {
        key: "source_up",
        metric: "stream_source_up",
        help: "1 when the source is delivering frames.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |s| Value::Int((s.state() == SourceState::Running) as u64),
    },
    Figure {
        key: "uptime_s",
        metric: "stream_uptime_seconds",
        help: "Seconds the current source session has run.",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        scope: Scope::Stream,
        get: |s| Value::Float(s.session_uptime()),
    },
    Figure {
        key: "title_changes",
        metric: "stream_title_changes_total",
        help: "Title changes (upstream ICY blocks, metadata updates, title files).",
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |s| Value::Int(s.title_changes()),
    },
    Figure {
        key: "head_frame",
        metric: "stream_head_frame",
        help: "Number of the next frame the source will publish.",
        kind: Kind::Gauge,
        unit: Unit::Frames,
        scope: Scope::Stream,
        get: |s| Value::Int(s.ring.head()),
    },
    Figure {
        key: "ring_slots",
        metric: "stream_ring_slots",
        help: "Frames the ring holds.",
        kind: Kind::Gauge,
        unit: Unit::Frames,
        scope: Scope::Stream,
        get: |s| Value::Int(s.ring.capacity()),
    },
    Figure {
        key: "ring_bytes",
        metric: "stream_ring_bytes",
        help: "Bytes mapped for the ring.",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        scope: Scope::Stream,
        get: |s| Value::Int(s.ring.mapped_bytes() as u64),
    },
];

/// How a push destination's figure is read.
pub type DestGetter = fn(&DestStatus) -> Value;

/// Push destination figures (labels `stream` and `destination`).
pub const DESTINATION_FIGURES: &[Figure<DestGetter>] = &[
    Figure {
        key: "up",
        metric: "destination_up",
        help: "1 while the destination is connected and sent to.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |d| Value::Int((d.state() == DestState::Active) as u64),
    },
    Figure {
        key: "attempts",
        metric: "destination_attempts_total",
        help: "Connection attempts to the destination.",
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |d| Value::Int(d.attempts.load(Ordering::Relaxed)),
    },
    Figure {
        key: "failures_in_a_row",
        metric: "destination_failures_in_a_row",
        help: "Failed attempts since the last success.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Stream,
        get: |d| Value::Int(d.failures_in_a_row.load(Ordering::Relaxed)),
    },
    Figure {
        key: "bytes_out",
        metric: "destination_bytes_out_total",
        help: "Stream bytes written to the destination.",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        scope: Scope::Stream,
        get: |d| Value::Int(d.bytes_out.load(Ordering::Relaxed)),
    },
    Figure {
        key: "frames_skipped",
        metric: "destination_frames_skipped_total",
        help: "Frames the destination skipped when it fell behind.",
        kind: Kind::Counter,
        unit: Unit::Frames,
        scope: Scope::Stream,
        get: |d| Value::Int(d.frames_skipped.load(Ordering::Relaxed)),
    },
    Figure {
        key: "connected_s",
        metric: "destination_connected_seconds",
        help: "Seconds the current connection has lasted (0: not connected).",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        scope: Scope::Stream,
        get: |d| Value::Float(d.connected_s()),
    },
];

fn destinations_json(stream: &Stream) -> Value_ {
    let ds = match stream.destinations.lock() {
        Ok(d) => d.clone(),
        Err(p) => p.into_inner().clone(),
    };
    Value_::Array(
        ds.iter()
            .map(|d| {
                let mut m = Map::new();
                m.insert("url".into(), json!(d.url));
                m.insert("state".into(), json!(d.state().name()));
                for f in DESTINATION_FIGURES {
                    m.insert(f.key.into(), (f.get)(d).json());
                }
                m.insert("last_errors".into(), json!(d.errors()));
                Value_::Object(m)
            })
            .collect(),
    )
}

/// How a listener figure is read: from its row (copied by its shard).
pub type ListenerGetter = fn(&ListenerRow) -> Value;

/// Listener figures (`/status/clients` only).
pub const LISTENER_FIGURES: &[Figure<ListenerGetter>] = &[
    Figure {
        key: "connected_s",
        metric: "",
        help: "Seconds since the listener connected.",
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        scope: Scope::Listener,
        get: |l| Value::Float(l.connected_s),
    },
    Figure {
        key: "bytes_sent",
        metric: "",
        help: "Bytes written to the listener.",
        kind: Kind::Counter,
        unit: Unit::Bytes,
        scope: Scope::Listener,
        get: |l| Value::Int(l.bytes_sent),
    },
    Figure {
        key: "frames_sent",
        metric: "",
        help: "Whole frames written to the listener.",
        kind: Kind::Counter,
        unit: Unit::Frames,
        scope: Scope::Listener,
        get: |l| Value::Int(l.frames_sent),
    },
    Figure {
        key: "frames_skipped",
        metric: "",
        help: "Frames the listener skipped after being lapped.",
        kind: Kind::Counter,
        unit: Unit::Frames,
        scope: Scope::Listener,
        get: |l| Value::Int(l.frames_skipped),
    },
    Figure {
        key: "lag_frames",
        metric: "",
        help: "Frames between the listener and the newest frame.",
        kind: Kind::Gauge,
        unit: Unit::Frames,
        scope: Scope::Listener,
        get: |l| Value::Int(l.lag_frames),
    },
    Figure {
        key: "unsent_bytes",
        metric: "",
        help: "Bytes in the listener's socket the kernel has not sent yet.",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        scope: Scope::Listener,
        get: |l| Value::Int(l.unsent_bytes),
    },
    Figure {
        key: "queue_bound_bytes",
        metric: "",
        help: "The bound on the listener's unsent bytes (TCP_NOTSENT_LOWAT).",
        kind: Kind::Gauge,
        unit: Unit::Bytes,
        scope: Scope::Listener,
        get: |l| Value::Int(l.queue_bound),
    },
    Figure {
        key: "blocked",
        metric: "",
        help: "1 while the listener's socket has no room.",
        kind: Kind::Gauge,
        unit: Unit::Count,
        scope: Scope::Listener,
        get: |l| Value::Int(l.blocked as u64),
    },
];

/// Every stream figure, in the order the documents show them: computed,
/// then the source's counters, then the listeners' (summed over shards).
fn stream_values(stream: &Stream) -> Vec<(Meta, Value)> {
    let mut out = Vec::new();
    for f in STREAM_FIGURES {
        out.push((f.meta(), (f.get)(stream)));
    }
    for f in SourceStats::FIGURES {
        out.push((f.meta(), (f.get)(&stream.source_stats)));
    }
    for f in ClientStats::FIGURES {
        let v = stream
            .client_stats
            .iter()
            .map(|c| (f.get)(c))
            .fold(Value::Int(0), Value::plus);
        out.push((f.meta(), v));
    }
    out
}

/// Every shard figure of shard `index`.
fn shard_values(stats: &ShardStats, set: &StreamSet, index: usize) -> Vec<(Meta, Value)> {
    let mut out = Vec::new();
    for f in SHARD_FIGURES {
        out.push((f.meta(), (f.get)(stats, set, index)));
    }
    for f in ShardStats::FIGURES {
        out.push((f.meta(), (f.get)(stats)));
    }
    out
}

fn object(values: &[(Meta, Value)]) -> Map<String, Value_> {
    let mut m = Map::new();
    for (f, v) in values {
        m.insert(f.key.to_string(), v.json());
    }
    m
}

fn stream_json(stream: &Stream) -> Value_ {
    let cfg = stream.config();
    let mut m = object(&stream_values(stream));
    m.insert("mount".into(), json!(stream.mount));
    m.insert("name".into(), json!(stream.name));
    m.insert("content_type".into(), json!(cfg.content_type));
    m.insert("source".into(), json!(describe(&cfg.source)));
    m.insert("state".into(), json!(stream.state().name()));
    let (_, title, _) = stream.titles.current();
    m.insert("title".into(), json!(title.title));
    m.insert("upstream".into(), json!(stream.upstream()));
    m.insert("source_connected".into(), json!(stream.push_claimed()));
    m.insert("fallback".into(), json!(cfg.fallback));
    m.insert("destinations".into(), destinations_json(stream));
    Value_::Object(m)
}

/// The `/status` document.
pub fn status_json(server: &ServerShared, set: &StreamSet) -> Value_ {
    let mut top = Map::new();
    top.insert("server".into(), json!("ringcast"));
    top.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    for f in SERVER_FIGURES {
        top.insert(f.key.into(), (f.get)(server).json());
    }
    let mut process = Map::new();
    for f in PROCESS_FIGURES {
        process.insert(f.key.into(), (f.get)(server).json());
    }
    top.insert("process".into(), Value_::Object(process));
    let shards: Vec<Value_> = server
        .shard_stats
        .iter()
        .enumerate()
        .map(|(index, stats)| {
            let mut m = object(&shard_values(stats, set, index));
            m.insert("shard".into(), json!(index));
            Value_::Object(m)
        })
        .collect();
    top.insert("shards".into(), Value_::Array(shards));
    top.insert(
        "streams".into(),
        Value_::Array(set.streams.iter().map(|s| stream_json(s)).collect()),
    );
    Value_::Object(top)
}

/// The `/status/clients` document: every listener (of one stream, or all).
pub fn clients_json(set: &StreamSet, stream_id: Option<u64>, rows: &[ListenerRow]) -> Value_ {
    let mut out = Vec::with_capacity(rows.len());
    for c in rows {
        if stream_id.is_some_and(|id| id != c.stream_id) {
            continue;
        }
        let stream: Option<&Arc<Stream>> = set.streams.iter().find(|s| s.id == c.stream_id);
        let mut m = Map::new();
        m.insert("id".into(), json!(c.id));
        m.insert("remote".into(), json!(c.peer.to_string()));
        m.insert(
            "stream".into(),
            json!(stream.map(|s| s.mount.clone().unwrap_or_else(|| "/".into()))),
        );
        m.insert("shard".into(), json!(c.shard));
        for f in LISTENER_FIGURES {
            m.insert(f.key.into(), (f.get)(c).json());
        }
        out.push(Value_::Object(m));
    }
    json!({ "clients": out })
}

/// Escape a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: the figure and its samples (labels, value).
type Family = (Meta, Vec<(String, Value)>);

/// The `/metrics` text (Prometheus exposition format 0.0.4): one family per
/// declared figure of the process, server, shard and stream scopes.
pub fn metrics(server: &ServerShared, set: &StreamSet) -> String {
    let mut families: Vec<Family> = PROCESS_FIGURES
        .iter()
        .chain(SERVER_FIGURES)
        .map(|f| (f.meta(), vec![(String::new(), (f.get)(server))]))
        .collect();
    let shard_rows: Vec<Vec<(Meta, Value)>> = server
        .shard_stats
        .iter()
        .enumerate()
        .map(|(index, stats)| shard_values(stats, set, index))
        .collect();
    families.extend(by_figure(&shard_rows, |i| format!("{{shard=\"{i}\"}}")));
    let stream_rows: Vec<Vec<(Meta, Value)>> =
        set.streams.iter().map(|s| stream_values(s)).collect();
    families.extend(by_figure(&stream_rows, |i| {
        format!(
            "{{stream=\"{}\"}}",
            label(set.streams[i].mount.as_deref().unwrap_or("/"))
        )
    }));
    // Push destinations: labelled by stream and destination.
    let dests: Vec<(String, std::sync::Arc<DestStatus>)> = set
        .streams
        .iter()
        .flat_map(|s| {
            let mount = label(s.mount.as_deref().unwrap_or("/"));
            let ds = match s.destinations.lock() {
                Ok(d) => d.clone(),
                Err(p) => p.into_inner().clone(),
            };
            ds.into_iter().map(move |d| (mount.clone(), d))
        })
        .collect();
    for f in DESTINATION_FIGURES {
        let rows = dests
            .iter()
            .map(|(mount, d)| {
                (
                    format!("{{stream=\"{mount}\",destination=\"{}\"}}", label(&d.url)),
                    (f.get)(d),
                )
            })
            .collect();
        families.push((f.meta(), rows));
    }
    let mut m = String::with_capacity(16 * 1024);
    for (f, rows) in families {
        let _ = writeln!(m, "# HELP ringcast_{} {}", f.metric, f.help);
        let _ = writeln!(m, "# TYPE ringcast_{} {}", f.metric, f.kind.prometheus());
        for (labels, v) in rows {
            let _ = writeln!(m, "ringcast_{}{labels} {}", f.metric, v.prometheus());
        }
    }
    m
}

/// Turn rows of (figure, value) per labelled thing (shard, stream) into one
/// family per figure. Every row lists the same figures in the same order.
fn by_figure(rows: &[Vec<(Meta, Value)>], labels: impl Fn(usize) -> String) -> Vec<Family> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(j, (f, _))| {
            let samples = rows
                .iter()
                .enumerate()
                .map(|(i, r)| (labels(i), r[j].1))
                .collect();
            (*f, samples)
        })
        .collect()
}

/// The figures the HTML page shows, by scope, as a JavaScript object
/// literal: `{"stream":[{"key":..,"help":..,"unit":..}], ...}`.
fn catalog() -> String {
    let entry = |f: Meta| json!({"key": f.key, "help": f.help, "unit": f.unit.name()});
    let stream: Vec<Value_> = STREAM_FIGURES
        .iter()
        .map(|f| entry(f.meta()))
        .chain(SourceStats::FIGURES.iter().map(|f| entry(f.meta())))
        .chain(ClientStats::FIGURES.iter().map(|f| entry(f.meta())))
        .collect();
    let shard: Vec<Value_> = SHARD_FIGURES
        .iter()
        .map(|f| entry(f.meta()))
        .chain(ShardStats::FIGURES.iter().map(|f| entry(f.meta())))
        .collect();
    let server: Vec<Value_> = SERVER_FIGURES
        .iter()
        .chain(PROCESS_FIGURES)
        .map(|f| entry(f.meta()))
        .collect();
    json!({"stream": stream, "shard": shard, "server": server}).to_string()
}

/// The HTML status page with the figure catalog filled in.
fn status_html() -> String {
    STATUS_HTML.replace("/*FIGURES*/{}", &catalog())
}

/// The status page: streams with live figures and a player for audio, then
/// every declared figure (the catalog below is filled in from the figure
/// declarations, so a new counter shows up here by being declared).
const STATUS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ringcast</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em}
.meta{color:#666;margin-bottom:1.2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.4em .6em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
td[title],th[title]{cursor:help}
.state-running{color:#08790f}.state-backing-off{color:#b35c00}.state-ended{color:#b00}
audio{height:2em;vertical-align:middle}
details{margin:.3em 0}summary{cursor:pointer}
</style></head>
<body>
<h1>ringcast</h1>
<div class="meta" id="meta">loading…</div>
<table><thead><tr><th>stream</th><th>state</th><th>listeners</th><th>peak</th><th>in</th><th>out</th><th>skipped</th><th>player</th></tr></thead>
<tbody id="streams"></tbody></table>
<h2>Every figure</h2>
<div id="figures"></div>
<script>
const FIGURES=/*FIGURES*/{};
function fmtBytes(n){const u=["B","kB","MB","GB","TB"];let i=0;while(n>=1000&&i<u.length-1){n/=1000;i++}return n.toFixed(i?1:0)+" "+u[i]}
function fmt(v,unit){if(typeof v!=="number")return String(v);if(unit==="bytes")return fmtBytes(v);if(unit==="seconds")return v.toFixed(1)+" s";if(unit==="ms")return v.toFixed(0)+" ms";return String(v)}
function table(cols,rows){
  const t=document.createElement("table");const h=t.createTHead().insertRow();
  const c0=document.createElement("th");c0.textContent="figure";h.appendChild(c0);
  for(const c of cols){const th=document.createElement("th");th.textContent=c;h.appendChild(th)}
  const b=t.createTBody();
  for(const f of rows.figs){const r=b.insertRow();const n=r.insertCell();n.textContent=f.key;n.title=f.help;
    for(const o of rows.objs){const d=r.insertCell();d.textContent=fmt(o[f.key],f.unit);d.title=f.help}}
  return t}
async function refresh(){
  try{
    const r=await fetch("/status",{cache:"no-store"});const s=await r.json();
    document.getElementById("meta").textContent=`ringcast ${s.version} · up ${Math.round(s.uptime_s)} s · ${s.clients} listeners · RSS ${fmtBytes(s.process.rss_bytes)} · ${s.process.open_fds} fds`;
    const body=document.getElementById("streams");
    const seen=new Set();
    for(const st of s.streams){
      const mount=st.mount||"/";seen.add(mount);
      let row=document.getElementById("row:"+mount);
      if(!row){
        row=document.createElement("tr");row.id="row:"+mount;
        for(let i=0;i<8;i++)row.appendChild(document.createElement("td"));
        const a=document.createElement("a");a.href=mount;a.textContent=mount;row.cells[0].appendChild(a);
        if(st.content_type.startsWith("audio/")){const au=document.createElement("audio");au.controls=true;au.preload="none";au.src=mount;row.cells[7].appendChild(au)}
        body.appendChild(row);
      }
      row.cells[1].textContent=st.state;row.cells[1].className="state-"+st.state;
      row.cells[2].textContent=st.clients;row.cells[3].textContent=st.clients_peak;
      row.cells[4].textContent=fmtBytes(st.bytes_in);row.cells[5].textContent=fmtBytes(st.bytes_out);
      row.cells[6].textContent=st.frames_skipped;
    }
    for(const row of [...body.rows]){if(!seen.has(row.id.slice(4)))row.remove()}
    const figs=document.getElementById("figures");const open=new Set([...figs.querySelectorAll("details[open]")].map(d=>d.id));
    figs.replaceChildren();
    const sec=(id,title,cols,rows)=>{const d=document.createElement("details");d.id=id;d.open=open.has(id);
      const sm=document.createElement("summary");sm.textContent=title;d.appendChild(sm);d.appendChild(table(cols,rows));figs.appendChild(d)};
    sec("f-streams","Streams",s.streams.map(x=>x.mount||"/"),{figs:FIGURES.stream,objs:s.streams});
    sec("f-shards","Shards",s.shards.map(x=>"shard "+x.shard),{figs:FIGURES.shard,objs:s.shards});
    const srv=Object.assign({},s,s.process);
    sec("f-server","Server",["value"],{figs:FIGURES.server,objs:[srv]});
  }catch(e){document.getElementById("meta").textContent="status unavailable: "+e}
}
refresh();setInterval(refresh,2000);
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params() {
        assert_eq!(
            http::query_text("stream=%2Fradio.mp3&x=1", "stream").as_deref(),
            Some("/radio.mp3")
        );
        assert_eq!(http::query_text("a=b", "stream"), None);
        assert_eq!(
            http::query_text("stream=/a+b", "stream").as_deref(),
            Some("/a b")
        );
        assert_eq!(
            http::query_text("stream=%zz%", "stream").as_deref(),
            Some("%zz%")
        );
    }

    /// A server with one stream, for the documents.
    fn one_stream() -> (ServerShared, StreamSet) {
        let server = ServerShared::new(
            2,
            None,
            0,
            false,
            Arc::new(crate::sys::EventFd::new().unwrap()),
        );
        let config = crate::config::parse_args(
            ["-frame-bytes", "100", "-path", "/dev/null"].map(std::ffi::OsString::from),
            false,
        )
        .unwrap();
        let crate::config::Command::Run(mut config) = config else {
            panic!()
        };
        let mut sc = config.streams.remove(0);
        sc.mount = Some("/a b".into());
        let stream = Arc::new(Stream::new(sc, 2).unwrap());
        stream.source_stats.bytes_in.add(7);
        stream.client_stats[0].bytes_out.add(5);
        stream.client_stats[1].bytes_out.add(6);
        server.shard_stats[1].accepted.add(3);
        let set = StreamSet {
            version: 1,
            streams: vec![stream],
        };
        (server, set)
    }

    /// Every declared figure of a metric scope, with its JSON place.
    fn declared() -> Vec<(Meta, &'static str)> {
        let mut v: Vec<(Meta, &'static str)> = Vec::new();
        v.extend(PROCESS_FIGURES.iter().map(|f| (f.meta(), "process")));
        v.extend(SERVER_FIGURES.iter().map(|f| (f.meta(), "")));
        v.extend(SHARD_FIGURES.iter().map(|f| (f.meta(), "shards")));
        v.extend(ShardStats::FIGURES.iter().map(|f| (f.meta(), "shards")));
        v.extend(STREAM_FIGURES.iter().map(|f| (f.meta(), "streams")));
        v.extend(SourceStats::FIGURES.iter().map(|f| (f.meta(), "streams")));
        v.extend(ClientStats::FIGURES.iter().map(|f| (f.meta(), "streams")));
        v
    }

    #[test]
    fn every_declared_figure_is_in_status_metrics_and_the_page() {
        let (server, set) = one_stream();
        let st = status_json(&server, &set);
        let text = metrics(&server, &set);
        let page = status_html();
        for (f, place) in declared() {
            let obj = match place {
                "" => &st,
                "process" => &st["process"],
                p => &st[p][0],
            };
            assert!(obj.get(f.key).is_some(), "{} missing from /status", f.key);
            assert!(
                text.contains(&format!(
                    "# TYPE ringcast_{} {}\n",
                    f.metric,
                    f.kind.prometheus()
                )),
                "{} missing from /metrics",
                f.metric
            );
            assert!(
                page.contains(&format!("\"key\":\"{}\"", f.key)),
                "{} missing from the page",
                f.key
            );
        }
        // Summed over shards, labelled per stream and shard.
        assert_eq!(st["streams"][0]["bytes_out"], 11);
        assert_eq!(st["streams"][0]["bytes_in"], 7);
        assert_eq!(st["shards"][1]["accepted"], 3);
        assert!(
            text.contains("ringcast_stream_bytes_out_total{stream=\"/a b\"} 11\n"),
            "{text}"
        );
        assert!(text.contains("ringcast_shard_accepted_total{shard=\"1\"} 3\n"));
        assert!(text.contains("ringcast_shard_accepted_total{shard=\"0\"} 0\n"));
    }

    #[test]
    fn metric_names_are_unique_and_listener_figures_are_never_metrics() {
        let all = declared();
        for (i, (f, _)) in all.iter().enumerate() {
            assert!(
                all[..i].iter().all(|(g, _)| g.metric != f.metric),
                "metric {} declared twice",
                f.metric
            );
        }
        let (server, set) = one_stream();
        let text = metrics(&server, &set);
        for f in LISTENER_FIGURES {
            assert!(f.metric.is_empty());
            assert!(!text.contains(&format!("ringcast_{} ", f.key)));
            assert!(!text.contains(&format!("_{}{{", f.key)), "{}", f.key);
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
