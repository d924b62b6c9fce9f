//! Black-box tests of the HTTP side and the process: HEAD, bad requests,
//! request-head limits, bad flags, a bad command, SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A server whose source is a live raw stream of 100-byte frames.
fn live_server(extra: &[&str]) -> Server {
    Ringcast::new()
        .args(["-frame-bytes", "100"])
        .args(extra)
        .source_exec(raw_gen_args(100, 100, 0, None, 0))
        .start()
}

#[test]
fn head_request_ends_after_the_head() {
    let server = live_server(&[]);
    let mut c = server.request("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "head: {}", c.head);
    assert_eq!(
        c.header("Content-Type").as_deref(),
        Some("application/octet-stream")
    );
    let body = c.read_to_eof(WAIT);
    assert!(body.is_empty(), "HEAD got {} body bytes", body.len());
}

#[test]
fn malformed_request_gets_400() {
    let server = live_server(&[]);
    let mut c = server.request("GET / HTTX/1.1\r\n\r\n");
    assert!(
        c.status_line().starts_with("HTTP/1.1 400"),
        "head: {}",
        c.head
    );
    c.read_to_eof(WAIT);
    let mut c = server.request("\x16\x03\x01garbage\r\n\r\n");
    assert!(
        c.status_line().starts_with("HTTP/1.1 400"),
        "head: {}",
        c.head
    );
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
    assert!(
        c.status_line().starts_with("HTTP/1.1 405"),
        "head: {}",
        c.head
    );
    assert!(
        c.header("Allow").is_some_and(|a| a.contains("GET")),
        "head: {}",
        c.head
    );
    c.read_to_eof(WAIT);
}

#[test]
fn oversized_request_head_gets_431() {
    let server = live_server(&[]);
    let mut req = b"GET / HTTP/1.1\r\nHost: test\r\nX-Long: ".to_vec();
    req.extend_from_slice(&[b'a'; 9000]);
    let mut c = Client::send_raw(server.addr, &req);
    c.read_head(WAIT);
    assert!(
        c.status_line().starts_with("HTTP/1.1 431"),
        "head: {}",
        c.head
    );
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
    assert!(
        c.status_line().starts_with("HTTP/1.1 408"),
        "head: {}",
        c.head
    );
    assert!(
        waited >= Duration::from_secs(5),
        "408 after only {waited:?}: the header timeout is 10 s"
    );
    let (_, eof) = c.read_until_eof_or(WAIT);
    assert!(eof, "the connection stays open after 408");
}

#[test]
fn nonexistent_command_leaves_the_server_up() {
    let server = Ringcast::new()
        .source_exec(["/nonexistent/ringcast-test-command", "arg"])
        .start();
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    server.wait_log("`open failed`", |l| l.contains("open failed"), WAIT);
    // Still open failed, with backoff, while the client stays; and the
    // server keeps answering.
    server.wait_log_nth(
        "`open failed` twice",
        2,
        |l| l.contains("open failed"),
        WAIT,
    );
    let c2 = server.get();
    assert_eq!(c2.status_line(), "HTTP/1.1 200 OK");
    let mut h = server.request("HEAD / HTTP/1.1\r\n\r\n");
    assert_eq!(h.status_line(), "HTTP/1.1 200 OK");
    assert!(h.read_to_eof(WAIT).is_empty());
    drop(c2);
    let (body, eof) = c.read_until_eof_or(Duration::from_millis(300));
    assert!(
        body.is_empty() && !eof,
        "the waiting client got {} bytes, eof={eof}",
        body.len()
    );
    let mut server = server;
    assert!(server.running(), "the server exited");
}

/// SIGTERM: the server exits 0 within 2 s.
fn sigterm_exits_0_within_2_s(server: &mut Server) {
    let began = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("ringcast did not exit after SIGTERM");
    let took = began.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} after SIGTERM"
    );
}

#[test]
fn sigterm_exits_0_quickly_and_ends_the_responses() {
    let mut server = live_server(&[]);
    let mut c = server.get();
    raw_frames(&c.read_body(1000, WAIT), 100).unwrap();
    sigterm_exits_0_within_2_s(&mut server);
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
        (
            &["-address", "127.0.0.1:99999", "-path", "/dev/null"],
            "-address",
        ),
        (
            &[
                "-address",
                "127.0.0.1:0",
                "-source-buffer",
                "2",
                "-path",
                "/dev/null",
            ],
            "-source-buffer",
        ),
        (
            &[
                "-address",
                "127.0.0.1:0",
                "-no-such-flag",
                "-path",
                "/dev/null",
            ],
            "no-such-flag",
        ),
        (&["-address", "127.0.0.1:0", "-exec"], "-exec"),
        (
            &[
                "-address",
                "127.0.0.1:0",
                "-frame-bytes",
                "0",
                "-path",
                "/dev/null",
            ],
            "-frame-bytes",
        ),
        (
            &[
                "-address",
                "127.0.0.1:0",
                "-frame-filter",
                "flac",
                "-path",
                "/dev/null",
            ],
            "-frame-filter",
        ),
    ];
    for (args, flag) in cases {
        let (status, _out, err) = Ringcast::new().args(*args).run_to_exit(WAIT);
        assert_eq!(
            status.code(),
            Some(1),
            "ringcast {args:?}: status {status}, stderr {err:?}"
        );
        assert!(
            err.contains(flag),
            "ringcast {args:?}: stderr does not name {flag}: {err:?}"
        );
    }
}

#[test]
fn headers_are_sent_before_the_first_frame() {
    // A source that never writes: the head must still come at once.
    let server = Ringcast::new().source_exec(["sleep", "60"]).start();
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    let (body, eof) = c.read_until_eof_or(Duration::from_millis(300));
    assert!(body.is_empty() && !eof);
}

#[test]
fn sigterm_exits_0_quickly_with_a_client_that_does_not_read() {
    // 64 KiB frames at 100/s: the stalled client's socket is full within a
    // second or so, and its connection task waits in a write.
    let mut server = Ringcast::new()
        .args(["-frame-bytes", "65536"])
        .source_exec(raw_gen_args(65536, 100, 0, None, 0))
        .start();
    let _stalled = server.get();
    let mut reader = server.get();
    // Wait until the stream ran long enough to fill the stalled socket.
    let mut last = reader.read_raw_frame(65536, WAIT);
    let first = last;
    while last < first + 150 {
        last = reader.read_raw_frame(65536, WAIT);
    }
    sigterm_exits_0_within_2_s(&mut server);
}

#[test]
fn head_request_http10() {
    let server = live_server(&[]);
    let mut c = server.request("HEAD / HTTP/1.0\r\n\r\n");
    assert_eq!(c.status_line(), "HTTP/1.0 200 OK", "head: {}", c.head);
    assert!(c.read_to_eof(WAIT).is_empty());
}

#[test]
fn max_clients_turns_away_the_extra_client_with_503() {
    let server = live_server(&["-max-clients", "1"]);
    let mut a = server.get();
    raw_frames(&a.read_body(500, WAIT), 100).unwrap();
    let mut b = server.get();
    assert!(
        b.status_line().starts_with("HTTP/1.1 503"),
        "head: {}",
        b.head
    );
    b.read_to_eof(WAIT);
    // When the first leaves, there is room again.
    let a_addr = a.local_addr();
    drop(a);
    server.wait_client_end(a_addr, WAIT);
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    raw_frames(&c.read_body(500, WAIT), 100).unwrap();
}

#[test]
fn cpu_max_1_runs_one_shard() {
    let server = live_server(&["-cpu-max", "1"]);
    let mut c = server.get();
    assert_consecutive(
        &raw_frames(&c.read_body(2000, WAIT), 100).unwrap(),
        "-cpu-max 1",
    );
    // Shard threads are named `shard-INDEX-...`: only shard 0 may exist.
    let mut shards = std::collections::BTreeSet::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", server.pid())).unwrap() {
        let comm = std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap_or_default();
        if let Some(rest) = comm.trim().strip_prefix("shard-") {
            shards.insert(rest.split('-').next().unwrap_or("").to_string());
        }
    }
    assert_eq!(
        shards.into_iter().collect::<Vec<_>>(),
        vec!["0".to_string()],
        "-cpu-max 1 must run exactly one shard (threads named shard-N-...)"
    );
}
