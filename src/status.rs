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

use serde_json::{json, Value};

use crate::http::Request;
use crate::shard::ServerShared;
use crate::source::describe;
use crate::stream::{Stream, StreamSet};
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

    /// Head and body.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = self.head().into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// The head alone (for HEAD requests).
    pub fn head_only(&self) -> Vec<u8> {
        self.head().into_bytes()
    }
}

/// The status page for this request, or `None` when the path is not one.
pub fn page(server: &ServerShared, set: &StreamSet, req: &Request) -> Option<Page> {
    match req.path.as_str() {
        "/status" => Some(Page::ok(
            "application/json",
            serde_json::to_vec_pretty(&status_json(server, set)).unwrap_or_default(),
        )),
        "/status/clients" => {
            let want = query_param(&req.query, "stream");
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
                serde_json::to_vec_pretty(&clients_json(server, set, stream_id))
                    .unwrap_or_default(),
            ))
        }
        "/metrics" => Some(Page::ok(
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(server, set).into_bytes(),
        )),
        "/status.html" => Some(Page::ok(
            "text/html; charset=utf-8",
            STATUS_HTML.as_bytes().to_vec(),
        )),
        "/" if set.route("/").is_none() => Some(Page::ok(
            "text/html; charset=utf-8",
            STATUS_HTML.as_bytes().to_vec(),
        )),
        _ => None,
    }
}

/// Per-stream client figures summed over shards.
#[derive(Default)]
struct ClientSums {
    clients: u64,
    clients_total: u64,
    bytes_out: u64,
    frames_out: u64,
    frames_skipped: u64,
    laps: u64,
    torn: u64,
    max_bytes: u64,
    gone: u64,
    sends: u64,
    would_block: u64,
}

fn sums(stream: &Stream) -> ClientSums {
    let mut s = ClientSums::default();
    for c in &stream.client_stats {
        s.clients += c.clients_now.get();
        s.clients_total += c.clients_total.get();
        s.bytes_out += c.bytes_out.get();
        s.frames_out += c.frames_out.get();
        s.frames_skipped += c.frames_skipped.get();
        s.laps += c.laps.get();
        s.torn += c.torn_disconnects.get();
        s.max_bytes += c.max_bytes_reached.get();
        s.gone += c.client_gone.get();
        s.sends += c.sends.get();
        s.would_block += c.would_block.get();
    }
    s
}

fn stream_json(stream: &Stream) -> Value {
    let cfg = stream.config();
    let src = &stream.source_stats;
    let c = sums(stream);
    json!({
        "mount": stream.mount,
        "name": stream.name,
        "content_type": cfg.content_type,
        "source": describe(&cfg.source),
        "state": stream.state().name(),
        "uptime_s": stream.session_uptime(),
        "source_opens": src.opens.get(),
        "source_open_errors": src.open_errors.get(),
        "source_ends": src.ends.get(),
        "source_quiet_kills": src.quiet_kills.get(),
        "source_idle_closes": src.idle_closes.get(),
        "bytes_in": src.bytes_in.get(),
        "frames_in": src.frames_in.get(),
        "invalid_bytes": src.invalid_bytes.get(),
        "oversized_frames": src.oversized_frames.get(),
        "tags_dropped": src.tags.get(),
        "tag_bytes": src.tag_bytes.get(),
        "free_format_headers": src.free_format_headers.get(),
        "stream_headers": src.stream_headers.get(),
        "partial_bytes_dropped": src.partial_bytes_dropped.get(),
        "head_frame": stream.ring.head(),
        "ring_slots": stream.ring.capacity(),
        "ring_bytes": stream.ring.mapped_bytes(),
        "clients": stream.clients(),
        "clients_peak": stream.clients_peak(),
        "clients_total": c.clients_total,
        "client_limit": cfg.max_clients,
        "bytes_out": c.bytes_out,
        "frames_out": c.frames_out,
        "frames_skipped": c.frames_skipped,
        "laps": c.laps,
        "torn_disconnects": c.torn,
        "max_bytes_reached": c.max_bytes,
        "clients_gone": c.gone,
        "sends": c.sends,
        "sends_would_block": c.would_block,
    })
}

/// The `/status` document.
pub fn status_json(server: &ServerShared, set: &StreamSet) -> Value {
    let shards: Vec<Value> = server
        .shard_stats
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let (mut bytes_out, mut frames_out) = (0, 0);
            for s in &set.streams {
                bytes_out += s.client_stats[i].bytes_out.get();
                frames_out += s.client_stats[i].frames_out.get();
            }
            json!({
                "shard": i,
                "clients": st.clients_now.get(),
                "accepted": st.accepted.get(),
                "accept_errors": st.accept_errors.get(),
                "bytes_out": bytes_out,
                "frames_out": frames_out,
                "bad_requests": st.bad_requests.get(),
                "header_timeouts": st.header_timeouts.get(),
                "header_too_large": st.header_too_large.get(),
                "bad_method": st.bad_method.get(),
                "not_found": st.not_found.get(),
                "rejected_full": st.rejected_full.get(),
                "head_requests": st.head_requests.get(),
                "early_close": st.early_close.get(),
            })
        })
        .collect();
    json!({
        "server": "ringcast",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": server.started.elapsed().as_secs_f64(),
        "clients": server.clients.load(Ordering::Relaxed),
        "client_limit": server.max_clients,
        "flush_interval_ms": server.flush_interval.as_secs_f64() * 1000.0,
        "process": {
            "rss_bytes": sys::rss_bytes(),
            "open_fds": sys::open_fd_count(),
        },
        "shards": shards,
        "streams": set.streams.iter().map(|s| stream_json(s)).collect::<Vec<_>>(),
    })
}

/// The `/status/clients` document: every listener (of one stream, or all).
pub fn clients_json(server: &ServerShared, set: &StreamSet, stream_id: Option<u64>) -> Value {
    let mut out = Vec::new();
    for registry in &server.registries {
        for c in registry.snapshot() {
            if stream_id.is_some_and(|id| id != c.stream_id) {
                continue;
            }
            let stream: Option<&Arc<Stream>> = set.streams.iter().find(|s| s.id == c.stream_id);
            let next = c.next_frame.load(Ordering::Relaxed);
            let lag = stream
                .map(|s| s.ring.head().saturating_sub(next))
                .unwrap_or(0);
            out.push(json!({
                "id": c.id,
                "remote": c.peer.map(|p| p.to_string()),
                "stream": stream.map(|s| s.mount.clone().unwrap_or_else(|| "/".into())),
                "shard": c.shard,
                "connected_s": c.connected.elapsed().as_secs_f64(),
                "bytes_sent": c.bytes_sent.load(Ordering::Relaxed),
                "frames_sent": c.frames_sent.load(Ordering::Relaxed),
                "frames_skipped": c.frames_skipped.load(Ordering::Relaxed),
                "lag_frames": lag,
            }));
        }
    }
    json!({ "clients": out })
}

/// Escape a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` text (Prometheus exposition format 0.0.4).
pub fn metrics(server: &ServerShared, set: &StreamSet) -> String {
    let mut m = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(m, "# HELP ringcast_{name} {help}");
        let _ = writeln!(m, "# TYPE ringcast_{name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(m, "ringcast_{name}{labels} {v}");
        }
    };
    let per_stream = |f: &dyn Fn(&Stream) -> u64| -> Vec<(String, u64)> {
        set.streams
            .iter()
            .map(|s| {
                (
                    format!(
                        "{{stream=\"{}\"}}",
                        label(s.mount.as_deref().unwrap_or("/"))
                    ),
                    f(s),
                )
            })
            .collect()
    };
    family(
        "stream_clients",
        "gauge",
        "Clients connected now.",
        per_stream(&|s| s.clients() as u64),
    );
    family(
        "stream_clients_peak",
        "gauge",
        "Most clients at once.",
        per_stream(&|s| s.clients_peak() as u64),
    );
    family(
        "stream_clients_total",
        "counter",
        "Clients served.",
        per_stream(&|s| sums(s).clients_total),
    );
    family(
        "stream_source_up",
        "gauge",
        "1 when the source is delivering frames.",
        per_stream(&|s| (s.state() == crate::stream::SourceState::Running) as u64),
    );
    family(
        "stream_source_opens_total",
        "counter",
        "Source sessions opened.",
        per_stream(&|s| s.source_stats.opens.get()),
    );
    family(
        "stream_source_open_errors_total",
        "counter",
        "Source open failures.",
        per_stream(&|s| s.source_stats.open_errors.get()),
    );
    family(
        "stream_bytes_in_total",
        "counter",
        "Bytes read from the source.",
        per_stream(&|s| s.source_stats.bytes_in.get()),
    );
    family(
        "stream_frames_in_total",
        "counter",
        "Frames published to the ring.",
        per_stream(&|s| s.source_stats.frames_in.get()),
    );
    family(
        "stream_invalid_bytes_total",
        "counter",
        "Source bytes skipped as garbage.",
        per_stream(&|s| s.source_stats.invalid_bytes.get()),
    );
    family(
        "stream_bytes_out_total",
        "counter",
        "Bytes written to clients.",
        per_stream(&|s| sums(s).bytes_out),
    );
    family(
        "stream_frames_out_total",
        "counter",
        "Whole frames written to clients.",
        per_stream(&|s| sums(s).frames_out),
    );
    family(
        "stream_frames_skipped_total",
        "counter",
        "Frames skipped by lapped clients.",
        per_stream(&|s| sums(s).frames_skipped),
    );
    family(
        "stream_torn_disconnects_total",
        "counter",
        "Clients ended because a frame was overwritten while being sent.",
        per_stream(&|s| sums(s).torn),
    );
    family(
        "stream_sends_total",
        "counter",
        "Vectored sends made.",
        per_stream(&|s| sums(s).sends),
    );
    let per_shard = |f: &dyn Fn(&crate::stats::ShardStats) -> u64| -> Vec<(String, u64)> {
        server
            .shard_stats
            .iter()
            .enumerate()
            .map(|(i, st)| (format!("{{shard=\"{i}\"}}"), f(st)))
            .collect()
    };
    family(
        "shard_clients",
        "gauge",
        "Clients on the shard now.",
        per_shard(&|st| st.clients_now.get()),
    );
    family(
        "shard_accepted_total",
        "counter",
        "Connections accepted.",
        per_shard(&|st| st.accepted.get()),
    );
    family(
        "shard_accept_errors_total",
        "counter",
        "accept() failures.",
        per_shard(&|st| st.accept_errors.get()),
    );
    family(
        "shard_bad_requests_total",
        "counter",
        "Requests answered 400.",
        per_shard(&|st| st.bad_requests.get()),
    );
    family(
        "shard_not_found_total",
        "counter",
        "Requests answered 404.",
        per_shard(&|st| st.not_found.get()),
    );
    family(
        "shard_rejected_full_total",
        "counter",
        "Requests answered 503 at a client limit.",
        per_shard(&|st| st.rejected_full.get()),
    );
    family(
        "shard_header_timeouts_total",
        "counter",
        "Requests answered 408.",
        per_shard(&|st| st.header_timeouts.get()),
    );
    family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident set size.",
        vec![(String::new(), sys::rss_bytes())],
    );
    family(
        "process_open_fds",
        "gauge",
        "Open file descriptors.",
        vec![(String::new(), sys::open_fd_count() as u64)],
    );
    m
}

/// The value of `key` in a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status page: streams with live figures and a player for audio.
const STATUS_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ringcast</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}
.meta{color:#666;margin-bottom:1.2em}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{padding:.4em .6em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
.state-running{color:#08790f}.state-backing-off{color:#b35c00}.state-ended{color:#b00}
audio{height:2em;vertical-align:middle}
</style></head>
<body>
<h1>ringcast</h1>
<div class="meta" id="meta">loading…</div>
<table><thead><tr><th>stream</th><th>state</th><th>listeners</th><th>peak</th><th>in</th><th>out</th><th>skipped</th><th>player</th></tr></thead>
<tbody id="streams"></tbody></table>
<script>
function fmtBytes(n){const u=["B","kB","MB","GB","TB"];let i=0;while(n>=1000&&i<u.length-1){n/=1000;i++}return n.toFixed(i?1:0)+" "+u[i]}
const players={};
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
            query_param("stream=%2Fradio.mp3&x=1", "stream").as_deref(),
            Some("/radio.mp3")
        );
        assert_eq!(query_param("a=b", "stream"), None);
        assert_eq!(
            query_param("stream=/a+b", "stream").as_deref(),
            Some("/a b")
        );
        assert_eq!(
            query_param("stream=%zz%", "stream").as_deref(),
            Some("%zz%")
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
