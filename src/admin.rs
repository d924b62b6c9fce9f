//! The Icecast-compatible endpoints the radio world's tools call:
//!
//! - `GET /admin/metadata?mount=/m&mode=updinfo&song=...` (Icecast; source
//!   or admin credentials; `charset=` honoured, Latin-1 by default) and
//!   Shoutcast's `GET /admin.cgi?mode=updinfo&song=...&pass=...`: a new
//!   title for a mount;
//! - `GET /admin/streamlist.txt` (relay credentials): the mounts, one per
//!   line, for edges and Icecast slaves that mirror this server;
//! - `GET /status-json.xsl`: the status document now-playing widgets and
//!   listener-stats scrapers read, in the shape Icecast 2.4.4 returns.
//!
//! They are answered on every listen address (encoders and edges talk to the
//! port they stream to). Credentials are checked by the credential store
//! (`credentials.rs`), never logged.

use serde_json::{json, Map, Value};

use crate::config::Role;
use crate::credentials::{self, Presented};
use crate::http::{self, Request};
use crate::metadata::{decode_title, Title};
use crate::shared::ServerShared;
use crate::stream::{SourceState, Stream, StreamSet};

/// True for the paths this module answers.
pub fn is_admin_path(path: &str) -> bool {
    matches!(
        path,
        "/admin/metadata"
            | "/admin/metadata.xsl"
            | "/admin.cgi"
            | "/admin/streamlist.txt"
            | "/status-json.xsl"
    )
}

fn query_text(query: &str, key: &str) -> Option<String> {
    http::query_text(query, key)
}

/// A response: status, reason, content type, extra headers, body.
pub struct Answer {
    /// The whole response.
    pub bytes: Vec<u8>,
    /// The request was good and did what it asked (for the counters).
    pub ok: bool,
}

fn answer(status: u16, reason: &str, content_type: &str, extra: &str, body: &str) -> Answer {
    let bytes = format!(
        "HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-cache, no-store\r\nAccess-Control-Allow-Origin: *\r\n{extra}Connection: close\r\nServer: ringcast/{}\r\n\r\n{body}",
        body.len(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    Answer {
        bytes,
        ok: (200..300).contains(&status),
    }
}

fn unauthorized() -> Answer {
    answer(
        401,
        "Authorization Required",
        "text/plain; charset=utf-8",
        "WWW-Authenticate: Basic realm=\"ringcast\"\r\n",
        "you need to authenticate\n",
    )
}

fn iceresponse(ok: bool, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<iceresponse><message>{}</message><return>{}</return></iceresponse>\n",
        xml_escape(message),
        u8::from(ok)
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Answer an admin request (the caller checked [`is_admin_path`]).
pub async fn answer_request(server: &ServerShared, set: &StreamSet, req: &Request) -> Answer {
    match req.path.as_str() {
        "/status-json.xsl" => {
            let host = req.header("host").map(http::sanitize);
            let body = status_json_xsl(server, set, host.as_deref()).to_string();
            answer(200, "OK", "application/json; charset=UTF-8", "", &body)
        }
        "/admin/streamlist.txt" => {
            let Some(p) = req
                .header("authorization")
                .and_then(credentials::parse_basic)
            else {
                return unauthorized();
            };
            if !allowed(server, &p, &[Role::Relay], "").await {
                return unauthorized();
            }
            answer(200, "OK", "text/plain; charset=utf-8", "", &streamlist(set))
        }
        "/admin.cgi" => {
            // Shoutcast 1: the source password as `pass=`, the mount (if
            // several) as `mount=`.
            let mount = query_text(&req.query, "mount").or_else(|| single_mount(set));
            let pass = query_text(&req.query, "pass").unwrap_or_default();
            let p = Presented {
                user: "source".into(),
                password: pass,
            };
            update_title(server, set, req, mount, Some(p)).await
        }
        _ => {
            let mount = query_text(&req.query, "mount");
            let p = req
                .header("authorization")
                .and_then(credentials::parse_basic);
            update_title(server, set, req, mount, p).await
        }
    }
}

fn single_mount(set: &StreamSet) -> Option<String> {
    match set.streams.as_slice() {
        [one] => one.mount.clone(),
        _ => None,
    }
}

async fn allowed(server: &ServerShared, p: &Presented, roles: &[Role], mount: &str) -> bool {
    let store = server.credentials();
    for &role in roles {
        if store.check(p, role, mount).verdict().await == credentials::Verdict::Allowed {
            return true;
        }
    }
    false
}

/// `mode=updinfo`: a new title for `mount`, with source (that mount) or
/// admin credentials.
async fn update_title(
    server: &ServerShared,
    set: &StreamSet,
    req: &Request,
    mount: Option<String>,
    p: Option<Presented>,
) -> Answer {
    let Some(p) = p else {
        return unauthorized();
    };
    let Some(mount) = mount else {
        return answer(
            400,
            "Bad Request",
            "text/xml; charset=utf-8",
            "",
            &iceresponse(false, "No mount given"),
        );
    };
    if !allowed(server, &p, &[Role::Source, Role::Admin], &mount).await {
        log::warn!(
            "title update refused mount={mount} user={:?} (credentials)",
            p.user
        );
        return unauthorized();
    }
    let Some(stream) = set.by_mount(&mount) else {
        return answer(
            404,
            "Not Found",
            "text/xml; charset=utf-8",
            "",
            &iceresponse(false, "Source does not exist"),
        );
    };
    if query_text(&req.query, "mode").as_deref() != Some("updinfo") {
        return answer(
            400,
            "Bad Request",
            "text/xml; charset=utf-8",
            "",
            &iceresponse(false, "No such mode"),
        );
    }
    let charset = query_text(&req.query, "charset");
    let text = |key: &str| {
        http::query_bytes(&req.query, key).map(|b| decode_title(&b, charset.as_deref()))
    };
    // `song`, else "artist - title" (Liquidsoap sends all three).
    let song =
        text("song")
            .filter(|s| !s.is_empty())
            .or_else(|| match (text("artist"), text("title")) {
                (Some(a), Some(t)) if !a.is_empty() => Some(format!("{a} - {t}")),
                (_, Some(t)) => Some(t),
                _ => None,
            });
    let Some(song) = song else {
        return answer(
            400,
            "Bad Request",
            "text/xml; charset=utf-8",
            "",
            &iceresponse(false, "No song given"),
        );
    };
    let url = text("url");
    stream.set_title(Title::new(&song, url.as_deref()));
    log::info!(
        "title stream={} by={:?} title={:?}",
        stream.name,
        p.user,
        song
    );
    answer(
        200,
        "OK",
        "text/xml; charset=utf-8",
        "",
        &iceresponse(true, "Metadata update successful"),
    )
}

/// The mounts, one per line (CRLF), as Icecast's streamlist.
pub fn streamlist(set: &StreamSet) -> String {
    let mut mounts: Vec<&str> = set
        .streams
        .iter()
        .filter_map(|s| s.mount.as_deref())
        .collect();
    mounts.sort_unstable();
    mounts.iter().map(|m| format!("{m}\r\n")).collect()
}

/// RFC 2822 date as Icecast writes it (`Tue, 01 Dec 2026 20:07:42 +0000`)
/// and ISO 8601 (`2026-12-01T20:07:42+0000`), of a Unix time.
fn dates(unix_s: u64) -> (String, String) {
    let days = (unix_s / 86400) as i64;
    let secs = unix_s % 86400;
    let (y, m, d) = crate::logger::civil(days);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days.rem_euclid(7)) as usize];
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    (
        format!("{weekday}, {d:02} {month} {y} {hh:02}:{mm:02}:{ss:02} +0000"),
        format!("{y}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+0000"),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One mount as Icecast 2.4.4's `status-json.xsl` shows it: a live source
/// only (Icecast lists mounts that have one).
fn source_json(s: &Stream, base: &str) -> Value {
    let cfg = s.config();
    let info = s.info();
    let mut m = Map::new();
    m.insert(
        "genre".into(),
        json!(info.genre.as_deref().unwrap_or("various")),
    );
    m.insert("listener_peak".into(), json!(s.clients_peak()));
    m.insert("listeners".into(), json!(s.clients()));
    m.insert(
        "listenurl".into(),
        json!(format!("{base}{}", s.mount.as_deref().unwrap_or("/"))),
    );
    m.insert(
        "server_description".into(),
        json!(info
            .description
            .as_deref()
            .unwrap_or("Unspecified description")),
    );
    m.insert(
        "server_name".into(),
        json!(info.name.as_deref().unwrap_or("Unspecified name")),
    );
    m.insert("server_type".into(), json!(cfg.content_type));
    if let Some(u) = &info.url {
        m.insert("server_url".into(), json!(u));
    }
    if let Some(br) = info.bitrate {
        m.insert("bitrate".into(), json!(br));
        m.insert("audio_info".into(), json!(format!("bitrate={br}")));
    }
    let started = unix_now().saturating_sub(s.session_uptime() as u64);
    let (rfc, iso) = dates(started);
    m.insert("stream_start".into(), json!(rfc));
    m.insert("stream_start_iso8601".into(), json!(iso));
    let (v, title, _) = s.titles.current();
    if v > 0 {
        m.insert("title".into(), json!(title.title));
    }
    m.insert("dummy".into(), Value::Null);
    Value::Object(m)
}

/// The `/status-json.xsl` document: `icestats`, with `source` absent when no
/// mount has a source, an object for one, an array (by mount) for several —
/// exactly as Icecast 2.4.4 (whose clients depend on it; a stable shape is
/// in `/status`).
pub fn status_json_xsl(server: &ServerShared, set: &StreamSet, host: Option<&str>) -> Value {
    let base = format!("http://{}", host.unwrap_or("localhost"));
    let mut live: Vec<&std::sync::Arc<Stream>> = set
        .streams
        .iter()
        .filter(|s| s.state() == SourceState::Running)
        .collect();
    live.sort_by(|a, b| a.mount.cmp(&b.mount));
    let started = unix_now().saturating_sub(server.started.elapsed().as_secs());
    let (rfc, iso) = dates(started);
    let mut ice = Map::new();
    ice.insert("admin".into(), json!("admin@localhost"));
    ice.insert(
        "host".into(),
        json!(host
            .map(|h| h.rsplit_once(':').map_or(h, |(a, _)| a))
            .unwrap_or("localhost")),
    );
    ice.insert("location".into(), json!("Earth"));
    ice.insert(
        "server_id".into(),
        json!(format!("ringcast {}", env!("CARGO_PKG_VERSION"))),
    );
    ice.insert("server_start".into(), json!(rfc));
    ice.insert("server_start_iso8601".into(), json!(iso));
    match live.as_slice() {
        // Icecast 2.4.4's stylesheet ends an icestats without sources with
        // `"dummy": null` (and every source object, but not icestats, when
        // there are sources).
        [] => {
            ice.insert("dummy".into(), Value::Null);
        }
        [one] => {
            ice.insert("source".into(), source_json(one, &base));
        }
        many => {
            ice.insert(
                "source".into(),
                Value::Array(many.iter().map(|s| source_json(s, &base)).collect()),
            );
        }
    }
    json!({ "icestats": ice })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_bytes_keep_latin1() {
        assert_eq!(
            http::query_bytes("mode=updinfo&song=Caf%E9", "song"),
            Some(b"Caf\xe9".to_vec())
        );
        assert_eq!(
            http::query_bytes("song=a+b%2Dc", "song"),
            Some(b"a b-c".to_vec())
        );
        assert_eq!(http::query_bytes("song=%", "song"), Some(b"%".to_vec()));
        assert_eq!(
            http::query_bytes("mount=%2flive%2emp3", "mount"),
            Some(b"/live.mp3".to_vec())
        );
        assert_eq!(http::query_bytes("x=1", "song"), None);
    }

    #[test]
    fn status_json_xsl_has_the_shapes_of_icecast_2_4_4() {
        let server = ServerShared::new(
            1,
            None,
            0,
            false,
            std::sync::Arc::new(crate::sys::EventFd::new().unwrap()),
        );
        let stream = |mount: &str| {
            let config = crate::config::parse_args(
                ["-frame-bytes", "100", "-path", "/dev/null"].map(std::ffi::OsString::from),
                false,
            )
            .unwrap();
            let crate::config::Command::Run(mut config) = config else {
                panic!()
            };
            let mut sc = config.streams.remove(0);
            sc.mount = Some(mount.into());
            let s = std::sync::Arc::new(Stream::new(sc, 1).unwrap());
            s.set_state(SourceState::Running);
            s
        };
        let doc = |streams| {
            let set = StreamSet {
                version: 1,
                streams,
            };
            status_json_xsl(&server, &set, Some("radio.example:8000"))["icestats"].clone()
        };
        // No source: no `source`, `dummy` in icestats.
        let none = doc(vec![]);
        assert!(none.get("source").is_none());
        assert_eq!(none.get("dummy"), Some(&Value::Null));
        assert_eq!(none["host"], "radio.example");
        // One: an object; `dummy` in it, not in icestats.
        let one = doc(vec![stream("/a.mp3")]);
        assert!(one.get("dummy").is_none());
        assert_eq!(
            one["source"]["listenurl"],
            "http://radio.example:8000/a.mp3"
        );
        assert_eq!(one["source"].get("dummy"), Some(&Value::Null));
        assert!(one["source"]["listeners"].is_u64());
        // Several: an array by mount.
        let two = doc(vec![stream("/b.mp3"), stream("/a.mp3")]);
        assert!(two.get("dummy").is_none());
        let urls: Vec<&str> = two["source"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["listenurl"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "http://radio.example:8000/a.mp3",
                "http://radio.example:8000/b.mp3"
            ]
        );
    }

    #[test]
    fn dates_as_icecast_writes_them() {
        // 2026-12-01 20:07:42 UTC was a Tuesday.
        let t = 1_796_155_662;
        let (rfc, iso) = dates(t);
        assert_eq!(rfc, "Tue, 01 Dec 2026 20:07:42 +0000");
        assert_eq!(iso, "2026-12-01T20:07:42+0000");
    }
}
