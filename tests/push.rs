//! Push ingest with the real source clients (issue 12, items 2, 5 and 6):
//! FFmpeg (`icecast://`, HTTP PUT, and `-legacy_icecast 1`, SOURCE),
//! libshout's `shout` and `ezstream`, Liquidsoap's `output.icecast` (a
//! chunked PUT and a SOURCE), pushing into the real `ringcast` binary;
//! wrong passwords, a second source, garbage, a stalled source and an
//! encoder killed under its listeners; the example `push.toml`.
//!
//! Everything is judged by what listeners receive: whole MP3 frames from
//! their first byte, the exact bytes the source sent, a clean decode by
//! mpg123 and ffmpeg, the `icy-*` headers; and by the server's counters.
//! The source password never appears in a response or the log.

mod common;
#[path = "push/support.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require_all, Ringcast, Server, TempDir, WAIT};
use support::*;

const PASSWORD: &str = "hackme";
/// base64("source:hackme"), as an Authorization header carries it.
const BASIC: &str = "c291cmNlOmhhY2ttZQ==";

/// A server with one push mount `/live.mp3` (user `source`, password
/// `hackme`) and `extra` lines in its stream table.
fn push_server(extra: &str) -> Server {
    let mounts = if extra.contains("\"/other.mp3\"") {
        r#"["/live.mp3", "/other.mp3"]"#
    } else {
        r#"["/live.mp3"]"#
    };
    Ringcast::new()
        .config_toml(format!(
            r#"listen = "127.0.0.1:0"

[[user]]
name = "source"
password = "{PASSWORD}"
roles = ["source"]
mounts = {mounts}

[[stream]]
mount = "/live.mp3"
push = true
framer = "mp3"
{extra}
"#
        ))
        .start()
}

fn url(addr: std::net::SocketAddr, mount: &str) -> String {
    format!("icecast://source:{PASSWORD}@{addr}{mount}")
}

/// Wait for the `n`th `source connected stream=MOUNT` line, and for the
/// `source opened` line after it (the encoder's `ice-*` headers are the
/// stream's from then on); returns the first.
fn wait_connected(server: &Server, mount: &str, n: usize) -> String {
    let pat = format!("source connected stream={mount} ");
    let line = server.wait_log_nth(
        "source connected",
        n,
        |l| l.contains(&pat),
        Duration::from_secs(60),
    );
    let opened = format!("source opened stream={mount} ");
    server.wait_log_nth("source opened", n, |l| l.contains(&opened), WAIT);
    line
}

/// The password is in no response and no log line.
fn assert_no_secret(server: &Server) {
    for path in [
        "/status",
        "/status/clients",
        "/metrics",
        "/status.html",
        "/status-json.xsl",
        "/admin/streamlist.txt",
        "/health",
    ] {
        let (_, body) = server.fetch(path);
        assert!(
            !body.contains(PASSWORD) && !body.contains(BASIC),
            "{path} shows the source password: {body}"
        );
    }
    let log = server.logs.dump();
    assert!(
        !log.contains(PASSWORD) && !log.contains(BASIC),
        "the log shows the source password:\n{log}"
    );
}

/// Listen to `/live.mp3` for at least `frames` frames; check whole frames,
/// no Info frame, and a clean decode. Returns the listener's head.
fn listen_and_decode(server: &Server, dir: &TempDir, who: &str, frames: usize) -> String {
    let l = Listener::connect(server.addr, "/live.mp3");
    l.wait_len(frames * 418, Duration::from_secs(40));
    let head = l.head.clone();
    let (body, eof) = l.finish();
    assert!(!eof, "{who}: the server closed the listener");
    let path = dir.join(&format!("{who}.mp3"));
    let n = save_whole_mp3(&body, &path, who);
    assert!(n >= frames / 2, "{who}: only {n} frames");
    let errors = decode_errors(&path);
    assert!(errors.is_empty(), "{who}: decode errors: {errors:#?}");
    eprintln!("{who}: {n} whole frames, decoded cleanly by mpg123 and ffmpeg");
    head
}

// ---------------------------------------------------------------------------
// FFmpeg
// ---------------------------------------------------------------------------

fn ffmpeg_pushes(legacy: bool) {
    if !require_all(&["ffmpeg", "mpg123"]) {
        return;
    }
    let dir = TempDir::new("push-ffmpeg");
    // With its ID3 tag and Xing frame: the framer drops both.
    let input = mp3_file(&dir, "in.mp3", 10, 128, 440, true);
    let server = push_server("");
    let proxy = Proxy::new(server.addr);
    let mut extra = vec![
        "-ice_name",
        "Ringcast Test",
        "-ice_genre",
        "Jazz",
        "-ice_description",
        "A test stream",
        "-ice_url",
        "http://example.org/radio",
    ];
    if legacy {
        extra.extend(["-legacy_icecast", "1"]);
    }
    let _ffmpeg = Proc::spawn(
        "ffmpeg",
        &mut ffmpeg_push(&input, &url(proxy.addr, "/live.mp3"), &extra),
        &dir.join("ffmpeg.log"),
        None,
    );
    let line = wait_connected(&server, "/live.mp3", 1);
    assert!(
        line.contains("user=source") && line.contains("content_type=\"audio/mpeg\""),
        "{line}"
    );
    let heads = proxy.heads();
    let first = heads.first().expect("ffmpeg connected through the proxy");
    eprintln!("ffmpeg (legacy {legacy}) sent:\n{first}");
    if legacy {
        assert!(first.starts_with("SOURCE /live.mp3 HTTP/1."), "{first}");
    } else {
        assert!(first.starts_with("PUT /live.mp3 HTTP/1.1\r\n"), "{first}");
    }
    assert!(first.contains(BASIC), "no Basic credentials: {first}");

    let head = listen_and_decode(&server, &dir, "ffmpeg-listener", 120);
    assert!(head.starts_with("HTTP/1.0 200 "), "{head}");
    assert_eq!(header(&head, "content-type").as_deref(), Some("audio/mpeg"));
    assert_eq!(header(&head, "icy-name").as_deref(), Some("Ringcast Test"));
    assert_eq!(header(&head, "icy-genre").as_deref(), Some("Jazz"));
    assert_eq!(
        header(&head, "icy-description").as_deref(),
        Some("A test stream")
    );
    assert_eq!(
        header(&head, "icy-url").as_deref(),
        Some("http://example.org/radio")
    );
    assert!(
        !head.to_ascii_lowercase().contains("password"),
        "a password header reached a listener: {head}"
    );

    let st = stream_status(&server, "/live.mp3");
    assert_eq!(st["source"], "push", "{st}");
    assert_eq!(st["source_connected"], true, "{st}");
    assert_eq!(st["content_type"], "audio/mpeg", "{st}");
    assert_eq!(st["tags_dropped"], 1, "ffmpeg's ID3v2 tag: {st}");
    assert_eq!(st["invalid_bytes"], 0, "{st}");
    assert!(shard_sum(&server, "sources_accepted") >= 1);
    let (_, icestats) = server.fetch("/status-json.xsl");
    let ice: serde_json::Value = serde_json::from_str(&icestats).unwrap();
    let src = &ice["icestats"]["source"];
    assert_eq!(src["server_name"], "Ringcast Test", "{icestats}");
    assert_eq!(src["genre"], "Jazz", "{icestats}");
    assert_eq!(src["server_description"], "A test stream", "{icestats}");
    assert_eq!(src["server_url"], "http://example.org/radio", "{icestats}");
    assert_no_secret(&server);
}

#[test]
fn ffmpeg_icecast_put() {
    ffmpeg_pushes(false);
}

#[test]
fn ffmpeg_legacy_icecast_source() {
    ffmpeg_pushes(true);
}

// ---------------------------------------------------------------------------
// libshout: shout and ezstream
// ---------------------------------------------------------------------------

/// libshout 2.4.6's default TLS mode ("auto") first sends `OPTIONS *` with
/// `Upgrade: TLS/1.0`; both clients are run with TLS off, as an operator of
/// a plain-HTTP server configures them.
#[test]
fn shout_pushes_stdin() {
    if !require_all(&["shout", "ffmpeg", "mpg123"]) {
        return;
    }
    let dir = TempDir::new("push-shout");
    let input = mp3_file(&dir, "in.mp3", 20, 128, 523, false);
    let server = push_server("");
    let proxy = Proxy::new(server.addr);
    let port = proxy.addr.port().to_string();
    let mut cmd = Command::new("shout");
    cmd.args([
        "--tls-mode",
        "disabled",
        "--usage",
        "audio",
        "--format",
        "mp3",
    ])
    .args(["-H", "127.0.0.1", "-P", &port, "--mount", "/live.mp3"])
    .args(["--user", "source", "--pass", PASSWORD])
    .args(["--station-name", "Shout Radio", "--station-genre", "Folk"]);
    let _shout = Proc::spawn("shout", &mut cmd, &dir.join("shout.log"), Some(&input));
    wait_connected(&server, "/live.mp3", 1);
    let heads = proxy.heads();
    eprintln!("shout sent:\n{}", heads.join("\n--\n"));
    assert!(
        heads.iter().any(|h| (h.starts_with("PUT /live.mp3 ")
            || h.starts_with("SOURCE /live.mp3 "))
            && h.contains(BASIC)),
        "{heads:?}"
    );
    let head = listen_and_decode(&server, &dir, "shout-listener", 80);
    assert_eq!(header(&head, "icy-name").as_deref(), Some("Shout Radio"));
    assert_eq!(header(&head, "icy-genre").as_deref(), Some("Folk"));
    eprintln!(
        "401 probes counted: {}",
        shard_sum(&server, "sources_unauthorized")
    );
    assert_no_secret(&server);
}

/// libshout's default TLS mode, "auto": it first sends `OPTIONS *
/// HTTP/1.1` with `Upgrade: TLS/1.0, HTTP/1.1`, then `GET /admin/!POKE`,
/// and goes on in plain HTTP when the first is closed unanswered and the
/// second gets a 400 (what Icecast 2.4.4 does). ringcast answered both
/// 404, and `shout` gave up with "Login failed".
#[test]
fn shout_default_tls_mode_pushes() {
    if !require_all(&["shout", "ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-shout-auto");
    let input = mp3_file(&dir, "in.mp3", 20, 128, 523, false);
    let server = push_server("");
    let port = server.addr.port().to_string();
    let mut cmd = Command::new("shout");
    cmd.args(["--usage", "audio", "--format", "mp3"])
        .args(["-H", "127.0.0.1", "-P", &port, "--mount", "/live.mp3"])
        .args(["--user", "source", "--pass", PASSWORD]);
    let mut shout = Proc::spawn("shout", &mut cmd, &dir.join("shout.log"), Some(&input));
    let connected = |s: &Server| {
        s.logs
            .count(|l| l.contains("source connected stream=/live.mp3 "))
            > 0
    };
    common::wait_until(WAIT, || connected(&server) || !shout.running());
    assert!(
        connected(&server),
        "shout (tls-mode auto) did not connect; it said {:?} (running {})",
        shout.log(),
        shout.running()
    );
    let l = Listener::connect(server.addr, "/live.mp3");
    l.wait_len(20_000, WAIT);
    mp3_frames(&l.body(), "shout (tls auto)");
}

#[test]
fn ezstream_pushes_a_file() {
    if !require_all(&["ezstream", "ffmpeg", "mpg123"]) {
        return;
    }
    let dir = TempDir::new("push-ezstream");
    let input = mp3_file(&dir, "in.mp3", 20, 128, 660, false);
    let server = push_server("");
    let proxy = Proxy::new(server.addr);
    let xml = format!(
        r#"<ezstream>
  <servers>
    <server>
      <protocol>HTTP</protocol>
      <hostname>127.0.0.1</hostname>
      <port>{port}</port>
      <user>source</user>
      <password>{PASSWORD}</password>
      <tls>None</tls>
    </server>
  </servers>
  <streams>
    <stream>
      <mountpoint>/live.mp3</mountpoint>
      <format>MP3</format>
      <stream_name>Ez Radio</stream_name>
      <stream_genre>Rock</stream_genre>
    </stream>
  </streams>
  <intakes>
    <intake>
      <type>file</type>
      <filename>{file}</filename>
    </intake>
  </intakes>
</ezstream>
"#,
        port = proxy.addr.port(),
        file = input.display()
    );
    let conf = dir.write("ezstream.xml", xml);
    // ezstream refuses a configuration file others may read.
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut cmd = Command::new("ezstream");
    cmd.arg("-v").arg("-c").arg(&conf);
    let _ez = Proc::spawn("ezstream", &mut cmd, &dir.join("ezstream.log"), None);
    wait_connected(&server, "/live.mp3", 1);
    let heads = proxy.heads();
    eprintln!("ezstream sent:\n{}", heads.join("\n--\n"));
    let head = listen_and_decode(&server, &dir, "ezstream-listener", 80);
    assert_eq!(header(&head, "icy-name").as_deref(), Some("Ez Radio"));
    assert_eq!(header(&head, "icy-genre").as_deref(), Some("Rock"));
    assert_no_secret(&server);
}

// ---------------------------------------------------------------------------
// Liquidsoap
// ---------------------------------------------------------------------------

/// Liquidsoap's `output.icecast` twice in one script: a chunked PUT to
/// `/live.mp3` and its default SOURCE to `/other.mp3`, both `%mp3` (lame)
/// of a sine.
#[test]
fn liquidsoap_output_icecast() {
    if !require_all(&["liquidsoap", "mpg123", "ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-liquidsoap");
    let server = push_server(
        r#"
[[stream]]
mount = "/other.mp3"
push = true
framer = "mp3"
burst_ms = 2000
"#,
    );
    let port = server.addr.port();
    let script = format!(
        r#"settings.init.allow_root.set(true)
log.stdout.set(true)
s = sine(440.)
output.icecast(%mp3(bitrate=128), host="127.0.0.1", port={port}, user="source",
  password="{PASSWORD}", mount="/live.mp3", name="Liq Radio", genre="Electro",
  method="put", chunked=true, s)
output.icecast(%mp3(bitrate=128), host="127.0.0.1", port={port},
  password="{PASSWORD}", mount="/other.mp3", name="Liq Source", s)
"#
    );
    let path = dir.write("push.liq", script);
    let mut cmd = Command::new("liquidsoap");
    cmd.arg(&path);
    let liq = Proc::spawn("liquidsoap", &mut cmd, &dir.join("liquidsoap.log"), None);
    // Liquidsoap type-checks its library first: seconds on a busy machine.
    let live = wait_connected(&server, "/live.mp3", 1);
    assert!(live.contains(" chunked"), "a chunked PUT: {live}");
    let other = wait_connected(&server, "/other.mp3", 1);
    assert!(!other.contains(" chunked"), "{other}");
    let head = listen_and_decode(&server, &dir, "liquidsoap-put", 80);
    assert_eq!(header(&head, "icy-name").as_deref(), Some("Liq Radio"));
    assert_eq!(header(&head, "icy-genre").as_deref(), Some("Electro"));
    let l = Listener::connect(server.addr, "/other.mp3");
    l.wait_len(80 * 418, Duration::from_secs(40));
    assert_eq!(header(&l.head, "icy-name").as_deref(), Some("Liq Source"));
    let (body, _) = l.finish();
    let p = dir.join("other.mp3");
    let n = save_whole_mp3(&body, &p, "liquidsoap-source");
    let errors = decode_errors(&p);
    assert!(errors.is_empty(), "liquidsoap SOURCE: {errors:#?}");
    eprintln!("liquidsoap SOURCE listener: {n} frames decoded cleanly");
    assert_no_secret(&server);
    let log = liq.log();
    assert!(
        log.contains("Connection setup was successful"),
        "liquidsoap log:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// Bad sources
// ---------------------------------------------------------------------------

#[test]
fn wrong_password_is_401_and_counted() {
    if !require_all(&["ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-wrong");
    let input = mp3_file(&dir, "in.mp3", 5, 128, 440, false);
    let server = push_server("");
    // No credentials (libshout's probe): 401 with a challenge.
    let r = exchange(
        server.addr,
        b"PUT /live.mp3 HTTP/1.1\r\nHost: x\r\nContent-Type: audio/mpeg\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    assert!(r.contains("WWW-Authenticate: Basic realm="), "{r}");
    // FFmpeg with a wrong password gives up.
    let wrong =
        "icecast://source:not-the-password@".to_string() + &server.addr.to_string() + "/live.mp3";
    let mut ff = Proc::spawn(
        "ffmpeg",
        &mut ffmpeg_push(&input, &wrong, &[]),
        &dir.join("ffmpeg.log"),
        None,
    );
    let status = ff.wait_exit(WAIT).expect("ffmpeg gives up on a 401");
    assert!(!status.success(), "ffmpeg succeeded with a wrong password");
    let refused = server.wait_log(
        "source refused",
        |l| l.contains("source refused") && l.contains("user=\"source\""),
        WAIT,
    );
    assert!(refused.contains("reason=\"unauthorized\""), "{refused}");
    assert_eq!(shard_sum(&server, "sources_unauthorized"), 2);
    let (_, metrics) = server.fetch("/metrics");
    let total: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("ringcast_shard_sources_unauthorized_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 2, "{metrics}");
    assert_eq!(shard_sum(&server, "sources_accepted"), 0);
    // No source: a listener gets 404.
    let (status, _, _, _) = get(server.addr, "/live.mp3");
    assert!(status.contains(" 404 "), "{status}");
    assert!(
        !server.logs.dump().contains("not-the-password"),
        "the wrong password reached the log"
    );
    assert_no_secret(&server);
}

#[test]
fn second_source_gets_mountpoint_in_use() {
    if !require_all(&["ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-second");
    let input = mp3_file(&dir, "in.mp3", 10, 128, 440, false);
    let server = push_server("");
    let _first = Proc::spawn(
        "ffmpeg-1",
        &mut ffmpeg_push(&input, &url(server.addr, "/live.mp3"), &[]),
        &dir.join("ffmpeg-1.log"),
        None,
    );
    wait_connected(&server, "/live.mp3", 1);
    let l = Listener::connect(server.addr, "/live.mp3");
    l.wait_len(10_000, WAIT);
    let r = exchange(
        server.addr,
        format!(
            "PUT /live.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\r\nContent-Type: audio/mpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 403 "), "{r}");
    assert!(r.contains("Mountpoint in use"), "{r}");
    let mut second = Proc::spawn(
        "ffmpeg-2",
        &mut ffmpeg_push(
            &input,
            &url(server.addr, "/live.mp3"),
            &["-legacy_icecast", "1"],
        ),
        &dir.join("ffmpeg-2.log"),
        None,
    );
    let status = second.wait_exit(WAIT).expect("the second ffmpeg gives up");
    assert!(!status.success());
    assert_eq!(shard_sum(&server, "sources_refused"), 2);
    assert_eq!(
        server.logs.count(|l| l.contains("reason=\"mount in use\"")),
        2
    );
    // The first source and its listener go on.
    l.wait_more(20_000, WAIT);
    let (body, eof) = l.finish();
    assert!(!eof);
    mp3_frames(&body, "listener of the first source");
    assert_eq!(stream_status(&server, "/live.mp3")["source_opens"], 1);
}

/// The whole MP3 frames of a file (no tags in it).
fn file_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    mp3_frames(&bytes, "input file")
        .into_iter()
        .map(|(o, l)| bytes[o..o + l].to_vec())
        .collect()
}

/// A PUT by hand, its first frames in the same write as the head, the body
/// chunked, garbage between frames: the listener gets exactly the frames.
#[test]
fn raw_put_head_bytes_chunks_and_garbage() {
    if !require_all(&["ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-raw");
    let input = mp3_file(&dir, "in.mp3", 2, 128, 440, false);
    let frames = file_frames(&input);
    assert!(frames.len() > 40);
    // The whole ring at once to a new listener.
    let server = push_server("burst_bytes = 1000000");
    // Garbage without a 0xFF: no sync word can hide in it.
    let garbage: Vec<u8> = (0..3000u32).map(|i| ((i * 37 + 11) % 0xFE) as u8).collect();
    let mut plain = Vec::new();
    for (i, f) in frames[..30].iter().enumerate() {
        if i == 10 || i == 20 {
            plain.extend_from_slice(&garbage);
        }
        plain.extend_from_slice(f);
    }
    // Chunks of uneven sizes.
    let mut body = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < plain.len() {
        let n = size.min(plain.len() - at);
        body.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        body.extend_from_slice(&plain[at..at + n]);
        body.extend_from_slice(b"\r\n");
        at += n;
        size = size * 7 % 1999 + 1;
    }
    let mut req = format!(
        "PUT /live.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nice-name: Raw\r\nice-password: {PASSWORD}\r\n\r\n"
    )
    .into_bytes();
    // The head and the first 5,000 body bytes in one write.
    let split = 5000.min(body.len());
    req.extend_from_slice(&body[..split]);
    let mut src = TcpStream::connect(server.addr).unwrap();
    src.write_all(&req).unwrap();
    let line = wait_connected(&server, "/live.mp3", 1);
    assert!(line.contains(" chunked"), "{line}");
    src.write_all(&body[split..]).unwrap();
    // The answer: 100 Continue, then 200.
    let mut answer = vec![0u8; 200];
    src.set_read_timeout(Some(WAIT)).unwrap();
    let n = std::io::Read::read(&mut src, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 100 Continue\r\n"), "{answer}");
    assert!(
        common::wait_until(WAIT, || {
            stream_status(&server, "/live.mp3")["frames_in"]
                .as_u64()
                .unwrap_or(0)
                >= 29
        }),
        "{}",
        stream_status(&server, "/live.mp3")
    );
    let st = stream_status(&server, "/live.mp3");
    assert!(
        st["invalid_bytes"].as_u64().unwrap() >= 2 * garbage.len() as u64,
        "garbage not counted: {st}"
    );
    let l = Listener::connect(server.addr, "/live.mp3");
    assert_eq!(header(&l.head, "icy-name").as_deref(), Some("Raw"));
    assert!(
        !l.head.contains(PASSWORD),
        "ice-password reached a listener: {}",
        l.head
    );
    let in_ring = st["frames_in"].as_u64().unwrap() as usize;
    let want: Vec<u8> = frames[..in_ring].concat();
    l.wait_len(want.len(), WAIT);
    let (got, _) = l.finish();
    assert_eq!(
        got.len(),
        want.len(),
        "the listener got {} bytes, the frames are {}",
        got.len(),
        want.len()
    );
    assert!(
        got == want,
        "the listener's bytes are not the source's frames"
    );
    eprintln!(
        "raw PUT: {in_ring} frames byte-exact through chunks and {} garbage bytes ({} counted invalid)",
        2 * garbage.len(),
        st["invalid_bytes"]
    );
    assert_no_secret(&server);
}

/// The handshake rules on their own: content types, SOURCE's default.
#[test]
fn handshake_content_types() {
    let server = push_server("");
    let auth = format!("Authorization: Basic {BASIC}\r\n");
    let r = exchange(
        server.addr,
        format!("PUT /live.mp3 HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 403 "), "PUT without a type: {r}");
    let r = exchange(
        server.addr,
        format!("PUT /live.mp3 HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: audio/ogg\r\n\r\n")
            .as_bytes(),
    );
    assert!(r.starts_with("HTTP/1.1 403 "), "audio/ogg on MP3: {r}");
    assert!(r.contains("Content-type not supported"), "{r}");
    // SOURCE without a type is audio/mpeg.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(format!("SOURCE /live.mp3 HTTP/1.0\r\n{auth}\r\n").as_bytes())
        .unwrap();
    let line = wait_connected(&server, "/live.mp3", 1);
    assert!(line.contains("content_type=\"audio/mpeg\""), "{line}");
    assert_eq!(shard_sum(&server, "sources_refused"), 2);
    drop(s);
}

#[test]
fn stalled_source_is_dropped_after_source_timeout() {
    if !require_all(&["ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-stall");
    let input = mp3_file(&dir, "in.mp3", 2, 128, 440, false);
    let frames = file_frames(&input);
    let server = push_server("source_timeout = \"2s\"");
    let mut src = TcpStream::connect(server.addr).unwrap();
    let mut req = format!(
        "PUT /live.mp3 HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\r\nContent-Type: audio/mpeg\r\n\r\n"
    )
    .into_bytes();
    req.extend(frames[..20].concat());
    src.write_all(&req).unwrap();
    wait_connected(&server, "/live.mp3", 1);
    let stalled = Instant::now();
    // Then nothing: the server must drop it (our read sees the close).
    src.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 256];
    let mut answer = Vec::new();
    loop {
        match std::io::Read::read(&mut src, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let dropped = stalled.elapsed();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.0 200 OK"),
        "{answer:?}"
    );
    assert!(
        dropped < Duration::from_secs(25),
        "not dropped: {dropped:?}"
    );
    assert!(
        dropped >= Duration::from_millis(1500),
        "dropped before source_timeout: {dropped:?}"
    );
    let quiet = server.wait_log("quiet", |l| l.contains("stream=/live.mp3 quiet for"), WAIT);
    eprintln!("a stalled source was dropped {dropped:.2?} after its last bytes (source_timeout 2s): {quiet}");
    assert!(common::wait_until(WAIT, || stream_status(
        &server,
        "/live.mp3"
    )["source_connected"]
        == false));
    // The mount is free again.
    let _ff = Proc::spawn(
        "ffmpeg",
        &mut ffmpeg_push(&input, &url(server.addr, "/live.mp3"), &[]),
        &dir.join("ffmpeg.log"),
        None,
    );
    wait_connected(&server, "/live.mp3", 2);
}

/// An encoder SIGKILLed under three listeners: none is disconnected, a new
/// listener gets 404 meanwhile, and all three continue with the next
/// encoder.
#[test]
fn killed_encoder_listeners_stay_and_continue() {
    if !require_all(&["ffmpeg"]) {
        return;
    }
    let dir = TempDir::new("push-kill");
    let input = mp3_file(&dir, "in.mp3", 10, 128, 440, false);
    let server = push_server("");
    let mut ff = Proc::spawn(
        "ffmpeg-1",
        &mut ffmpeg_push(&input, &url(server.addr, "/live.mp3"), &[]),
        &dir.join("ffmpeg-1.log"),
        None,
    );
    wait_connected(&server, "/live.mp3", 1);
    let listeners: Vec<Listener> = (0..3)
        .map(|_| Listener::connect(server.addr, "/live.mp3"))
        .collect();
    for l in &listeners {
        l.wait_len(20_000, WAIT);
    }
    ff.kill();
    assert!(common::wait_until(WAIT, || stream_status(
        &server,
        "/live.mp3"
    )["source_connected"]
        == false));
    let (status, _, _, _) = get(server.addr, "/live.mp3");
    assert!(
        status.contains(" 404 "),
        "a new listener without a source: {status}"
    );
    let before: Vec<usize> = listeners.iter().map(Listener::len).collect();
    std::thread::sleep(Duration::from_millis(500)); // nothing may come now
    for (l, b) in listeners.iter().zip(&before) {
        assert!(!l.eof(), "listener {} disconnected", l.local);
        assert_eq!(l.len(), *b, "bytes without a source");
    }
    let _ff2 = Proc::spawn(
        "ffmpeg-2",
        &mut ffmpeg_push(&input, &url(server.addr, "/live.mp3"), &[]),
        &dir.join("ffmpeg-2.log"),
        None,
    );
    wait_connected(&server, "/live.mp3", 2);
    for l in &listeners {
        l.wait_more(30_000, WAIT);
    }
    assert_eq!(stream_status(&server, "/live.mp3")["clients"], 3);
    let mut disconnected = 0;
    for l in &listeners {
        let local = l.local;
        disconnected += usize::from(l.eof());
        assert!(
            server
                .logs
                .count(|x| x.contains(&format!("client {local} -- ")))
                == 0,
            "{local} ended"
        );
    }
    for l in listeners {
        let local = l.local;
        let (body, _) = l.finish();
        let n = mp3_frames(&body, "a listener across the kill").len();
        eprintln!("listener {local}: {n} whole frames across the kill");
    }
    assert_eq!(disconnected, 0);
    eprintln!("encoder SIGKILLed under 3 listeners: 0 disconnected");
}

// ---------------------------------------------------------------------------
// The example
// ---------------------------------------------------------------------------

fn example(name: &str) -> String {
    format!("{}/deploy/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn push_example_checks_and_runs() {
    if !require_all(&["ffmpeg", "mpg123"]) {
        return;
    }
    for file in ["push.toml", "fallback.toml"] {
        let (status, out, err) = Ringcast::new()
            .args(["-config", &example(file), "-check-config"])
            .run_to_exit(WAIT);
        assert!(status.success(), "-check-config {file}: {out}{err}");
    }
    let dir = TempDir::new("push-example");
    let input = mp3_file(&dir, "in.mp3", 10, 128, 440, true);
    // Its own address instead of 127.0.0.1:8000 (RINGCAST_ADDRESS beats
    // the file), so that tests run side by side.
    let server = Ringcast::new()
        .args(["-config", &example("push.toml")])
        .env("RINGCAST_ADDRESS", "127.0.0.1:0")
        .start();
    let (status, _, _, _) = get(server.addr, "/live.mp3");
    assert!(status.contains(" 404 "), "no encoder yet: {status}");
    let _ff = Proc::spawn(
        "ffmpeg",
        &mut ffmpeg_push(
            &input,
            &format!("icecast://source:hackme@{}/live.mp3", server.addr),
            &[],
        ),
        &dir.join("ffmpeg.log"),
        None,
    );
    wait_connected(&server, "/live.mp3", 1);
    listen_and_decode(&server, &dir, "push-example-listener", 100);
    assert_no_secret(&server);
}
