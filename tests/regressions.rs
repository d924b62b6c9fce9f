//! Regression tests of bugs found on the way (not named by an issue): each
//! test says what was wrong.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// `user:password` as an HTTP Basic credential.
fn basic(user_pass: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = user_pass.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Read until `\r\n\r\n`; the head as text.
fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => break,
            Err(e) => panic!("reading a response head: {e} (after {head:?})"),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A WebSocket handshake on `path`; the response head.
fn ws_connect(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let head = read_head(&mut s);
    (s, head)
}

/// The figure `key` of stream `name` in /status.
fn stream_figure(server: &Server, name: &str, key: &str) -> Option<serde_json::Value> {
    let status = server.status_json();
    status["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name || s["mount"] == name)
        .map(|s| s[key].clone())
}

/// A push mount whose encoder is connected but has sent nothing for longer
/// than `fallback_after` answered new listeners 404 ("not live") while the
/// encoder held the mount; they are admitted and get its frames when they
/// come.
#[test]
fn a_push_mount_with_a_quiet_encoder_admits_listeners() {
    let server = Ringcast::new()
        .config_toml(
            r#"
listen = "127.0.0.1:0"
[[user]]
name = "enc"
password = "pw1"
roles = ["source"]
[[stream]]
mount = "/live"
push = true
framer = "raw"
frame_bytes = 100
fallback_after = "1s"
"#,
        )
        .start();
    let mut enc = TcpStream::connect(server.addr).unwrap();
    write!(
        enc,
        "PUT /live HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        basic("enc:pw1")
    )
    .unwrap();
    let head = read_head(&mut enc);
    assert!(head.starts_with("HTTP/1.0 200 OK"), "encoder: {head}");
    // Quiet for longer than fallback_after, with the mount held.
    assert!(
        wait_until(WAIT, || stream_figure(&server, "/live", "uptime_s")
            .and_then(|v| v.as_f64())
            .is_some_and(|u| u > 1.5)),
        "the push session never began: {}",
        server.logs.dump()
    );
    let mut c = server.get_path("/live");
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "head: {}", c.head);
    for n in 0..40 {
        enc.write_all(&raw_frame(n, 100)).unwrap();
    }
    let got = raw_frames(&c.read_body(300, WAIT), 100).unwrap();
    assert_consecutive(&got, "after the quiet start");
}

/// A channel publisher that came right after start-up got 503 after 2 s:
/// start-up drained the wake-up of the shard's request and the main thread
/// then slept. A refusal (no room for another channel) also took 2 s.
#[test]
fn channel_publishers_are_answered_at_once() {
    let server = Ringcast::new()
        .config_toml(
            r#"
listen = "127.0.0.1:0"
[channels]
max_channels = 1
"#,
        )
        .start();
    let (_first, head) = ws_connect(server.addr, "/one/key1/publish");
    assert!(head.starts_with("HTTP/1.1 101"), "first publisher: {head}");
    let asked = Instant::now();
    let (_second, head) = ws_connect(server.addr, "/two/key2/publish");
    let took = asked.elapsed();
    eprintln!("refusal took {took:?}");
    assert!(head.starts_with("HTTP/1.1 503"), "second channel: {head}");
    // The main thread answers in milliseconds; the shard's own deadline
    // (10 s) is what a lost request would cost.
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");
}

/// A WebSocket publisher closed for an oversized message (1009) was not
/// counted anywhere.
#[test]
fn an_oversized_publisher_message_is_closed_1009_and_counted() {
    let server = Ringcast::new()
        .config_toml(
            r#"
listen = "127.0.0.1:0"
[channels]
max_channels = 2
"#,
        )
        .start();
    let (mut s, head) = ws_connect(server.addr, "/big/key1/publish");
    assert!(head.starts_with("HTTP/1.1 101"), "publisher: {head}");
    // A masked binary frame that says it carries 16 MiB.
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(16u64 << 20).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&f).unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got, [0x88, 0x02, 0x03, 0xf1], "a close frame with 1009");
    assert!(
        wait_until(WAIT, || stream_figure(
            &server,
            "/channels/big",
            "ws_publisher_errors"
        ) == Some(serde_json::json!(1))),
        "not counted: {}",
        server.status_json()
    );
}

/// A listener that came between the encoder's 200 and its source thread
/// taking the connection was admitted without the encoder's icy-* headers
/// (they were set by the source thread). The failpoint widens that gap to
/// a second.
#[test]
fn a_listener_right_after_the_encoder_gets_its_icy_headers() {
    let server = Ringcast::new()
        .env("RINGCAST_FAILPOINT", "push-take-delay-ms=1000")
        .config_toml(
            r#"
listen = "127.0.0.1:0"
[[user]]
name = "enc"
password = "pw1"
roles = ["source"]
[[stream]]
mount = "/live"
push = true
framer = "raw"
frame_bytes = 100
"#,
        )
        .start();
    let mut enc = TcpStream::connect(server.addr).unwrap();
    write!(
        enc,
        "PUT /live HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {}\r\nContent-Type: application/octet-stream\r\nIce-Name: Night Shift\r\nIce-Genre: Jazz\r\n\r\n",
        basic("enc:pw1")
    )
    .unwrap();
    let head = read_head(&mut enc);
    assert!(head.starts_with("HTTP/1.0 200 OK"), "encoder: {head}");
    let c = server.get_path("/live");
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "head: {}", c.head);
    assert_eq!(
        c.header("icy-name").as_deref(),
        Some("Night Shift"),
        "{}",
        c.head
    );
    assert_eq!(c.header("icy-genre").as_deref(), Some("Jazz"), "{}", c.head);
    // Still before the source thread took the connection.
    assert_eq!(
        server
            .logs
            .count(|l| l.contains("source connected stream=/live")),
        0,
        "the gap was not there: {}",
        server.logs.dump()
    );
}
