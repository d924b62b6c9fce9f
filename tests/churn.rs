//! Regression tests for issue 9: many short sessions must not leak memory or
//! overflow a task's waker count, long-lived listeners whose writes block
//! again and again must stay served, and a shard that panics must take the
//! process down (an ERROR line and a non-zero exit status) instead of leaving
//! a listen socket that nobody accepts on.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// The server's resident set size, from /proc.
fn rss_kb(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// One short session: connect, ask for the stream, read the response head
/// (and whatever body came with it), close — abortively (RST) when `rst`.
/// Returns false when the server did not answer with a 200 in time.
fn session(addr: SocketAddr, rst: bool) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    if rst {
        let _ = socket_linger_zero(&s);
    }
    got.starts_with(b"HTTP/1.0 200")
}

/// SO_LINGER {on, 0}: close() sends RST instead of FIN.
fn socket_linger_zero(s: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Run `total` sessions from `threads` threads, each one session at a time
/// (so each shard's accept loop waits between accepts, as on a real day),
/// alternating RST and FIN closes. Returns the failed sessions.
fn churn(addr: SocketAddr, total: u64, threads: usize) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(240);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = t as u64;
                while done.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                    if !session(addr, i.is_multiple_of(2)) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        done.load(Ordering::Relaxed) >= total,
        "only {} of {total} sessions ran within the time bound",
        done.load(Ordering::Relaxed)
    );
    failed.load(Ordering::Relaxed)
}

#[test]
fn one_hundred_fifty_thousand_short_sessions_leak_nothing_and_panic_nothing() {
    // A 64 kB/s stream of 1000-byte frames, two shards (the setup).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let mut server = Ringcast::new()
        .args(["-frame-bytes", "1000", "-cpu-max"])
        .arg(cpus.to_string())
        .log_level("warn")
        .source_exec(raw_gen_args(1000, 64, 0, None, 0))
        .start();
    let pid = server.pid();

    // Warm up (allocator arenas, the source, the shards' first buffers),
    // then measure from there.
    assert_eq!(churn(server.addr, 5_000, 8), 0, "warm-up sessions failed");
    let before = rss_kb(pid);
    let failed = churn(server.addr, 150_000, 8);
    let after = rss_kb(pid);
    assert_eq!(
        failed, 0,
        "sessions failed (a dead shard times out its connections)"
    );
    assert!(server.running(), "the server died");
    assert!(
        after <= before + 8 * 1024,
        "RSS grew from {before} KB to {after} KB over 150,000 sessions"
    );
    let st = server.status_json();
    let accepted: u64 = st["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["accepted"].as_u64().unwrap())
        .sum();
    assert!(accepted >= 155_000, "accepted {accepted}");
    assert_eq!(
        server.logs.count(|l| l.contains("panicked")),
        0,
        "{}",
        server.logs.dump()
    );
    eprintln!("RSS {before} KB before, {after} KB after 150,000 sessions");
}

#[test]
fn listeners_whose_writes_block_thousands_of_times_stay_served() {
    // A 2 MB/s stream (2000 frames of 1000 bytes a second, a 16 ms ring) and
    // listeners with a 4 KiB receive window that read a little slower than
    // that: their bounded send queues fill again and again, so their sends
    // block (and resume on room) hundreds of times a second, and they skip
    // forward by whole frames now and then.
    let mut server = Ringcast::new()
        .args(["-frame-bytes", "1000", "-source-buffer", "32"])
        .log_level("warn")
        .source_exec(raw_gen_args(1000, 2000, 0, None, 0))
        .start();

    const LISTENERS: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let frames_ok = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..LISTENERS)
        .map(|_| {
            // After a 200 head, whole frames.
            let mut s = small_window_listener(server.addr, 4096);
            let (stop, frames_ok) = (stop.clone(), frames_ok.clone());
            std::thread::spawn(move || {
                let mut frame = vec![0u8; 1000];
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.read_exact(&mut frame)
                        .expect("the listener's stream ended");
                    check_raw_frame(&frame).expect("a whole, untorn frame");
                    n += 1;
                    if n.is_multiple_of(4) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                frames_ok.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    // Thousands of blocked writes per listener.
    let want = 2_000 * LISTENERS as u64;
    let addr = server.addr;
    let blocked = || {
        status_json(addr)["streams"][0]["sends_would_block"]
            .as_u64()
            .unwrap()
    };
    let reached = wait_until(Duration::from_secs(150), || {
        std::thread::sleep(Duration::from_millis(200));
        blocked() >= want
    });
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("a listener failed");
    }
    assert!(reached, "only {} blocked writes", blocked());
    assert!(server.running(), "the server died");
    assert_eq!(server.logs.count(|l| l.contains("panicked")), 0);
    // Still accepting and serving.
    let mut c = server.get();
    assert!(c.status_line().contains("200"));
    assert_eq!(c.read_body(1000, WAIT).len(), 1000);
    eprintln!(
        "{} blocked writes, {} frames checked",
        blocked(),
        frames_ok.load(Ordering::Relaxed)
    );
}

#[test]
fn a_shard_that_panics_takes_the_process_down_with_an_error() {
    // Debug builds (what `cargo test` runs) honour the failpoint: shard 0
    // panics at its 3rd accepted connection.
    let mut server = Ringcast::new()
        .args(["-cpu-max", "1", "-frame-bytes", "100"])
        .env("RINGCAST_FAILPOINT", "shard-panic-after-accepts=3")
        .source_exec(["sh", "-c", "cat /dev/zero"])
        .start();
    for _ in 0..2 {
        let mut c = server.get();
        assert!(c.status_line().contains("200"));
        assert_eq!(c.read_body(100, WAIT).len(), 100);
    }
    // The third connection kills the shard; the process must not live on.
    let _ = TcpStream::connect(server.addr);
    let status = server
        .wait_exit(WAIT)
        .expect("the process went on after its shard panicked");
    assert_eq!(status.code(), Some(70), "exit status {status:?}");
    server.wait_log(
        "an ERROR about the panic",
        |l| l.contains("ERROR") && l.contains("thread shard-0") && l.contains("panicked"),
        WAIT,
    );
}
