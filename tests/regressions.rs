//! Regression tests of bugs found on the way (not named by an issue): each
//! test says what was wrong.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// A server with one raw push mount `/live` (user `enc`, password `pw1`).
fn push_server(extra: &str, env: Option<(&str, &str)>) -> Server {
    let mut r = Ringcast::new();
    if let Some((k, v)) = env {
        r = r.env(k, v);
    }
    r.config_toml(format!(
        "listen = \"127.0.0.1:0\"\n[[user]]\nname = \"enc\"\npassword = \"pw1\"\nroles = [\"source\"]\n\
         [[stream]]\nmount = \"/live\"\npush = true\nframer = \"raw\"\nframe_bytes = 100\n{extra}"
    ))
    .start()
}

/// An encoder's `PUT /live` with `headers`; the client after a checked 200.
fn push_encoder(server: &Server, headers: &str) -> Client {
    let enc = server.request(&format!(
        "PUT /live HTTP/1.1\r\nHost: test\r\nAuthorization: Basic {}\r\nContent-Type: application/octet-stream\r\n{headers}\r\n",
        basic_auth("enc", "pw1")
    ));
    assert!(
        enc.status_line().starts_with("HTTP/1.0 200 OK"),
        "encoder: {}",
        enc.head
    );
    enc
}

/// A WebSocket handshake on `path` (the response head read, whatever it is).
fn ws_connect(addr: std::net::SocketAddr, path: &str) -> Client {
    Client::request(
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ),
    )
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
    let server = push_server("fallback_after = \"1s\"\n", None);
    let mut enc = push_encoder(&server, "");
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
        enc.stream.write_all(&raw_frame(n, 100)).unwrap();
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
    let first = ws_connect(server.addr, "/one/key1/publish");
    assert!(
        first.status_line().starts_with("HTTP/1.1 101"),
        "first publisher: {}",
        first.head
    );
    let asked = Instant::now();
    let second = ws_connect(server.addr, "/two/key2/publish");
    let took = asked.elapsed();
    eprintln!("refusal took {took:?}");
    assert!(
        second.status_line().starts_with("HTTP/1.1 503"),
        "second channel: {}",
        second.head
    );
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
    let mut s = ws_connect(server.addr, "/big/key1/publish");
    assert!(
        s.status_line().starts_with("HTTP/1.1 101"),
        "publisher: {}",
        s.head
    );
    // A masked binary frame that says it carries 16 MiB.
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(16u64 << 20).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    s.stream.write_all(&f).unwrap();
    let got = s.read_to_eof(WAIT);
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
    let server = push_server("", Some(("RINGCAST_FAILPOINT", "push-take-delay-ms=1000")));
    let _enc = push_encoder(&server, "Ice-Name: Night Shift\r\nIce-Genre: Jazz\r\n");
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
