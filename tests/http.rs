//! Black-box tests of the HTTP side and the process: HEAD, bad requests,
//! request-head limits, bad flags, a bad command, SIGTERM.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// A server whose source is a live raw stream of 100-byte frames.
fn live_server(extra: &[&str]) -> Server {
    let mut args: Vec<String> = vec!["-frame-bytes".into(), "100".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("-exec".into());
    args.extend(raw_gen_args(100, 100, 0, None, 0));
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    start(&refs)
}

#[test]
fn head_request_ends_after_the_head() {
    let server = live_server(&[]);
    let mut c = server.request("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "head: {}", c.head);
    assert_eq!(c.header("Content-Type").as_deref(), Some("application/octet-stream"));
    let body = c.read_to_eof(WAIT);
    assert!(body.is_empty(), "HEAD got {} body bytes", body.len());
}

#[test]
fn malformed_request_gets_400() {
    let server = live_server(&[]);
    let mut c = server.request("GET / HTTX/1.1\r\n\r\n");
    assert!(c.status_line().starts_with("HTTP/1.1 400"), "head: {}", c.head);
    c.read_to_eof(WAIT);
    let mut c = server.request("\x16\x03\x01garbage\r\n\r\n");
    assert!(c.status_line().starts_with("HTTP/1.1 400"), "head: {}", c.head);
    c.read_to_eof(WAIT);
    // The server is still fine.
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    raw_frames(&c.read_body(500, WAIT), 100).unwrap();
}

#[test]
fn other_methods_get_405() {
    let server = live_server(&[]);
    let mut c = server.request("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    assert!(c.status_line().starts_with("HTTP/1.1 405"), "head: {}", c.head);
    assert!(c.header("Allow").is_some_and(|a| a.contains("GET")), "head: {}", c.head);
    c.read_to_eof(WAIT);
}

#[test]
fn oversized_request_head_gets_431() {
    let server = live_server(&[]);
    let mut req = b"GET / HTTP/1.1\r\nHost: test\r\nX-Long: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 9000));
    let mut c = Client::send_raw(server.addr, &req);
    c.read_head(WAIT);
    assert!(c.status_line().starts_with("HTTP/1.1 431"), "head: {}", c.head);
    let (_, eof) = c.read_until_eof_or(WAIT);
    assert!(eof, "the connection stays open after 431");
}

#[test]
fn too_slow_request_head_gets_408() {
    let server = live_server(&[]);
    let began = Instant::now();
    let mut c = Client::send_raw(server.addr, b"GET / HTTP/1.1\r\nHost: te");
    c.read_head(Duration::from_secs(30));
    let waited = began.elapsed();
    assert!(c.status_line().starts_with("HTTP/1.1 408"), "head: {}", c.head);
    assert!(
        waited >= Duration::from_secs(5),
        "408 after only {waited:?}: the header timeout is 10 s"
    );
    let (_, eof) = c.read_until_eof_or(WAIT);
    assert!(eof, "the connection stays open after 408");
}

#[test]
fn nonexistent_command_leaves_the_server_up() {
    let server = start(&["-exec", "/nonexistent/ringcast-test-command", "arg"]);
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    server.wait_log("`open failed`", |l| l.contains("open failed"), WAIT);
    // Still open failed, with backoff, while the client stays; and the
    // server keeps answering.
    server.wait_log_nth("`open failed` twice", 2, |l| l.contains("open failed"), WAIT);
    let mut c2 = server.get();
    assert_eq!(c2.status_line(), "HTTP/1.1 200 OK");
    let mut h = server.request("HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(h.status_line(), "HTTP/1.1 200 OK");
    assert!(h.read_to_eof(WAIT).is_empty());
    drop(c2);
    let (body, eof) = c.read_until_eof_or(Duration::from_millis(300));
    assert!(body.is_empty() && !eof, "the waiting client got {} bytes, eof={eof}", body.len());
    let mut server = server;
    assert!(server.running(), "the server exited");
}

#[test]
fn sigterm_exits_0_quickly_and_ends_the_responses() {
    let mut server = live_server(&[]);
    let mut c = server.get();
    raw_frames(&c.read_body(1000, WAIT), 100).unwrap();
    let began = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("ringcast did not exit after SIGTERM");
    let took = began.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(2), "exit took {took:?} after SIGTERM");
    // The client sees the end of the response, after whole frames.
    let rest = c.read_to_eof(WAIT);
    assert_consecutive(&raw_frames(&rest, 100).unwrap(), "after SIGTERM");
}

#[test]
fn sigint_exits_0() {
    let mut server = live_server(&[]);
    let mut c = server.get();
    c.read_body(100, WAIT);
    server.signal("INT");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("ringcast did not exit after SIGINT");
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[test]
fn bad_flags_exit_1_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["-address", "bogus", "-path", "/dev/null"], "-address"),
        (&["-address", "127.0.0.1:99999", "-path", "/dev/null"], "-address"),
        (
            &["-address", "127.0.0.1:0", "-source-buffer", "2", "-path", "/dev/null"],
            "-source-buffer",
        ),
        (
            &["-address", "127.0.0.1:0", "-no-such-flag", "-path", "/dev/null"],
            "no-such-flag",
        ),
        (&["-address", "127.0.0.1:0", "-exec"], "-exec"),
        (&["-address", "127.0.0.1:0", "-frame-bytes", "0", "-path", "/dev/null"], "-frame-bytes"),
        (
            &["-address", "127.0.0.1:0", "-frame-filter", "ogg", "-path", "/dev/null"],
            "-frame-filter",
        ),
    ];
    for (args, flag) in cases {
        let (status, _out, err) = run_to_exit(args, WAIT);
        assert_eq!(status.code(), Some(1), "ringcast {args:?}: status {status}, stderr {err:?}");
        assert!(err.contains(flag), "ringcast {args:?}: stderr does not name {flag}: {err:?}");
    }
}
