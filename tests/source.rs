//! Black-box tests of a source's life: close-idle, reopen with backoff,
//! reopen=false.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// A server with these flags and this source command.
fn start_with(flags: &[&str], exec: Vec<String>) -> Server {
    Ringcast::new().args(flags).source_exec(exec).start()
}

/// Wait for the generator to write its pid file; return the pid.
fn read_pid(path: &Path) -> u32 {
    let mut pid = None;
    assert!(
        wait_until(WAIT, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        }),
        "the generator did not write {}",
        path.display()
    );
    pid.unwrap()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; count it as gone (it no longer runs).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn close_idle_kills_the_command_and_the_next_client_restarts_it() {
    let dir = TempDir::new("close-idle");
    let pidfile = dir.join("generator.pid");
    let pidfile_s = pidfile.to_str().unwrap().to_string();
    let server = start_with(
        &["-frame-bytes", "100", "-close-idle"],
        raw_gen_args(100, 100, 0, Some(&pidfile_s), 0),
    );
    // Lazy start: nothing runs before a client comes.
    assert!(!pidfile.exists(), "the command started before any client");

    let mut c = server.get();
    raw_frames(&c.read_body(1000, WAIT), 100).unwrap();
    let pid1 = read_pid(&pidfile);
    assert!(
        alive(pid1),
        "generator {pid1} is not running while a client reads"
    );
    std::fs::remove_file(&pidfile).unwrap();
    drop(c);

    server.wait_log(
        "`source closed ... last client left`",
        |l| l.contains("source closed") && l.contains("last client left"),
        WAIT,
    );
    assert!(
        wait_until(WAIT, || !alive(pid1)),
        "the command (pid {pid1}) still runs after the last client left"
    );
    assert_eq!(server.logs.count(|l| l.contains("source opened")), 1);

    // The next client starts it again.
    let mut c = server.get();
    let body = c.read_body(1000, WAIT);
    assert_consecutive(&raw_frames(&body, 100).unwrap(), "second client");
    let pid2 = read_pid(&pidfile);
    assert_ne!(pid1, pid2);
    assert!(alive(pid2));
    server.wait_log_nth(
        "second `source opened`",
        2,
        |l| l.contains("source opened"),
        WAIT,
    );
    drop(c);
    assert!(
        wait_until(WAIT, || !alive(pid2)),
        "the second command (pid {pid2}) still runs after the last client left"
    );
}

#[test]
fn reopen_keeps_clients_connected_across_source_restarts() {
    const F: usize = 200;
    const K: u64 = 20; // frames per run; each run takes 0.2 s
    let server = start_with(&["-frame-bytes", "200"], raw_gen_args(F, 100, K, None, 0));
    let mut c = server.get();
    // Read until three runs began after the first; every frame whole.
    let mut nums: Vec<u64> = Vec::new();
    let mut restarts = 0;
    while restarts < 3 {
        let n = c.read_raw_frame(F, Duration::from_secs(30));
        if let Some(&prev) = nums.last() {
            if n == prev + 1 {
                // same run
            } else {
                assert_eq!(
                    n,
                    0,
                    "after frame {prev}, a run must start at 0; frames {}",
                    short(&nums)
                );
                assert_eq!(
                    prev,
                    K - 1,
                    "run ended at frame {prev}, not {}: {}",
                    K - 1,
                    short(&nums)
                );
                restarts += 1;
            }
        }
        nums.push(n);
    }
    assert!(server.logs.count(|l| l.contains("source opened")) >= 4);
    assert!(!c.eof);
}

/// Count `source opened` and `open failed` lines of a command that ends at
/// once (or cannot start), with one client connected for three seconds.
fn opens_in_three_seconds(exec: &[&str]) -> (usize, Vec<String>) {
    let server = Ringcast::new()
        .args(["-frame-bytes", "100"])
        .source_exec(exec)
        .start();
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    server.wait_log(
        "a first open",
        |l| l.contains("source opened") || l.contains("open failed"),
        WAIT,
    );
    // The measurement window: the backoff is what is measured, so a fixed
    // time is right here.
    let began = Instant::now();
    let (body, eof) = c.read_until_eof_or(Duration::from_secs(3));
    assert!(began.elapsed() >= Duration::from_secs(3));
    assert!(
        body.is_empty(),
        "{} bytes from a command that writes nothing",
        body.len()
    );
    assert!(
        !eof,
        "the client was disconnected while the source kept failing"
    );
    let opens = server
        .logs
        .count(|l| l.contains("source opened") || l.contains("open failed"));
    let delays = server
        .logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("reopening in"))
        .collect();
    (opens, delays)
}

#[test]
fn reopen_backs_off_for_a_command_that_exits_at_once() {
    for exec in [&["sh", "-c", "exit 0"][..], &["false"][..]] {
        let (opens, delays) = opens_in_three_seconds(exec);
        // 100 ms doubling: about 5 in 3 s; a busy loop makes thousands.
        assert!(
            (2..20).contains(&opens),
            "{exec:?}: {opens} opens in about 3 s; reopen lines: {delays:#?}"
        );
    }
}

#[test]
fn reopen_backs_off_for_a_command_that_does_not_exist() {
    let (opens, delays) = opens_in_three_seconds(&["/nonexistent/ringcast-test-command"]);
    assert!(
        (2..20).contains(&opens),
        "{opens} open attempts in about 3 s; reopen lines: {delays:#?}"
    );
}

#[test]
fn reopen_false_drains_the_clients_and_exits_0() {
    const F: usize = 500;
    let mut server = start_with(
        &["-frame-bytes", "500", "-reopen=false"],
        raw_gen_args(F, 200, 30, None, 0),
    );
    let mut c = server.get();
    let addr = c.local_addr();
    let body = c.read_to_eof(Duration::from_secs(30));
    let nums = raw_frames(&body, F).unwrap();
    assert_consecutive(&nums, "draining client");
    assert_eq!(
        nums.first(),
        Some(&0),
        "a client that came before the first frame gets the stream from its start"
    );
    assert_eq!(
        nums.last(),
        Some(&29),
        "the client must get every frame up to the end"
    );
    let end = server.wait_client_end(addr, WAIT);
    assert_eq!(end.bytes, 30 * F as u64, "{}", end.line);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("ringcast did not exit after its source ended and its client left");
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn a_client_leaving_a_silent_source_is_noticed_and_the_command_stopped() {
    // close-idle with a command that never writes: the client's departure
    // must be noticed without a write, and the command stopped.
    let dir = TempDir::new("silent");
    let pidfile = dir.join("command.pid");
    let script = format!(
        "echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 60",
        pidfile.display()
    );
    let server = Ringcast::new()
        .arg("-close-idle")
        .source_exec(["sh", "-c", &script])
        .start();
    let c = server.get();
    let addr = c.local_addr();
    let pid = read_pid(&pidfile);
    assert!(alive(pid));
    drop(c);
    let end = server.wait_client_end(addr, WAIT);
    assert!(end.line.contains("reason=gone"), "{}", end.line);
    assert!(
        wait_until(WAIT, || !alive(pid)),
        "the silent command (pid {pid}) still runs"
    );
}

#[test]
fn max_quiet_interval_kills_a_silent_command_and_reopens_it() {
    let server = Ringcast::new()
        .args(["-max-quiet-interval", "300ms"])
        .source_exec(["sleep", "60"])
        .start();
    let mut c = server.get();
    server.wait_log(
        "`source closed ... quiet too long`",
        |l| l.contains("source closed") && l.contains("quiet too long"),
        WAIT,
    );
    server.wait_log_nth(
        "a second `source opened`",
        2,
        |l| l.contains("source opened"),
        WAIT,
    );
    let (body, eof) = c.read_until_eof_or(Duration::from_millis(200));
    assert!(body.is_empty() && !eof, "the client must stay connected");
}

#[test]
fn path_source_is_served_and_reopen_false_exits_0() {
    const F: usize = 300;
    let dir = TempDir::new("path-source");
    let mut data = Vec::new();
    for n in 0..10 {
        data.extend_from_slice(&raw_frame(n, F));
    }
    data.extend_from_slice(&[1, 2, 3]); // a partial frame at the end: dropped
    let path = dir.write("stream.raw", &data);
    let mut server = Ringcast::new()
        .args(["-frame-bytes", "300", "-reopen=false", "-path"])
        .arg(&path)
        .start();
    let mut c = server.get();
    let body = c.read_to_eof(Duration::from_secs(30));
    let nums = raw_frames(&body, F).unwrap();
    // The client came first; its arrival opened the file: it gets the whole
    // stream from its start.
    assert_eq!(
        nums,
        (0..10).collect::<Vec<u64>>(),
        "the client whose arrival opened the file must get every frame of it"
    );
    let status = server.wait_exit(Duration::from_secs(10)).expect("no exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn header_bytes_are_captured_again_at_each_open() {
    // Each run of the command writes the header, then 30 frames, then
    // exits; the source is reopened. A client already connected keeps
    // getting whole frames; a client arriving during a later run gets that
    // run's header first.
    const F: usize = 1000;
    const H: usize = 100;
    let server = start_with(
        &["-frame-bytes", "1000", "-header-bytes", "100"],
        raw_gen_args(F, 100, 30, None, H),
    );
    let header = stream_header(H);
    let mut a = server.get();
    assert_eq!(a.read_body(H, WAIT), header);
    // Read A until it is in the second run (numbers restart at 0).
    let mut nums = vec![a.read_raw_frame(F, WAIT)];
    loop {
        let n = a.read_raw_frame(F, WAIT);
        let prev = *nums.last().unwrap();
        nums.push(n);
        if n != prev + 1 {
            assert_eq!((prev, n), (29, 0), "run boundary in {}", short(&nums));
            break;
        }
    }
    // B joins during the second (or a later) run.
    let mut b = server.get();
    assert_eq!(
        b.read_body(H, WAIT),
        header,
        "a client of a later run must get the header first"
    );
    let first = b.read_raw_frame(F, WAIT);
    let body = b.read_body(5 * F, WAIT);
    let mut bn = vec![first];
    bn.extend(raw_frames(&body, F).unwrap());
    for w in bn.windows(2) {
        assert!(
            w[1] == w[0] + 1 || (w[0] == 29 && w[1] == 0),
            "B: {}",
            short(&bn)
        );
    }
}

#[test]
fn source_bandwidth_paces_the_reads() {
    // A generator as fast as the pipe, read at 20,000 bytes/s: 40 frames of
    // 1,000 bytes after the first take about 2 s (a lower bound only: a
    // loaded machine can only make it slower).
    const F: usize = 1000;
    let server = start_with(
        &["-frame-bytes", "1000", "-source-bandwidth", "20000"],
        raw_gen_args(F, 0, 0, None, 0),
    );
    let mut c = server.get();
    let first = c.read_raw_frame(F, WAIT);
    let began = Instant::now();
    let body = c.read_body(40 * F, Duration::from_secs(30));
    let took = began.elapsed();
    let mut nums = vec![first];
    nums.extend(raw_frames(&body, F).unwrap());
    assert_consecutive(&nums, "paced client");
    assert!(
        took >= Duration::from_millis(1500),
        "40 kB at 20 kB/s took only {took:?}"
    );
}

#[test]
fn fifo_source_keeps_clients_across_writers() {
    // A FIFO whose writer comes and goes: each writer's frames reach the
    // client, which stays connected in between (the FIFO is reopened).
    const F: usize = 100;
    let dir = TempDir::new("fifo-source");
    let fifo = dir.mkfifo("stream.fifo");
    let server = Ringcast::new()
        .args(["-frame-bytes", "100", "-path"])
        .arg(&fifo)
        .start();
    let mut c = server.get();
    for run in 0..2u64 {
        let fifo = fifo.clone();
        // Opening for writing blocks until the server opens (or reopens)
        // the FIFO for reading.
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open the FIFO");
            for n in run * 5..run * 5 + 5 {
                std::io::Write::write_all(&mut w, &raw_frame(n, F)).unwrap();
            }
        });
        let body = c.read_body(5 * F, Duration::from_secs(30));
        assert_eq!(
            raw_frames(&body, F).unwrap(),
            (run * 5..run * 5 + 5).collect::<Vec<u64>>(),
            "writer {run}'s frames"
        );
        assert!(wait_until(WAIT, || writer.is_finished()));
        writer.join().unwrap();
    }
    // The FIFO is reopened after its last writer closed (when the second
    // writer opened before the first closed, both were one session, and
    // the reopen comes only now: wait for it, do not look once).
    server.wait_log_nth(
        "the FIFO reopened",
        2,
        |l| l.contains("source opened"),
        WAIT,
    );
}

#[test]
fn command_stderr_is_logged_with_its_name() {
    let server = Ringcast::new()
        .source_exec(["sh", "-c", "echo hello-from-stderr >&2; exec sleep 60"])
        .start();
    let _c = server.get();
    let line = server.wait_log(
        "the command's stderr line",
        |l| l.contains("hello-from-stderr"),
        WAIT,
    );
    assert!(
        line.contains("sh"),
        "the line does not name the command: {line}"
    );
}
