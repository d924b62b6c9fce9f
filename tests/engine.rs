//! Black-box tests of the delivery engine (issue 11): a fast listener of a
//! fast stream keeps every frame at default settings, and a listener back
//! from a stall is never served audio older than the ring holds (the kernel's
//! queue is bounded).

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// `-frame-bytes 1000 ARGS -exec RAW_GEN 1000 RATE`.
fn raw_server(rate: u32, extra: &[&str]) -> Server {
    Ringcast::new()
        .args(["-frame-bytes", "1000"])
        .args(extra)
        .source_exec(raw_gen_args(1000, rate, 0, None, 0))
        .start()
}

#[test]
fn a_fast_listener_of_a_fast_stream_keeps_every_frame_at_default_settings() {
    // 100,000 B/s into a 16-frame ring: the writer laps the ring every
    // 160 ms, shorter than any fixed gathering a server might choose. The
    // shard must send before a quarter of the ring is pending.
    let server = raw_server(100, &["-source-buffer", "16"]);
    let mut c = server.get();
    let addr = c.local_addr();
    let body = c.read_body(600 * 1000, Duration::from_secs(60));
    let nums = raw_frames(&body, 1000).expect("whole frames");
    assert_consecutive(&nums, "fast listener of a 160 ms ring");
    drop(c);
    let end = server.wait_client_end(addr, WAIT);
    assert_eq!(end.skipped, 0, "{}", end.line);
}

fn clients(addr: SocketAddr) -> Vec<serde_json::Value> {
    let mut c = Client::request(addr, "GET /status/clients HTTP/1.0\r\n\r\n");
    let body = c.read_to_eof(WAIT);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    v["clients"].as_array().unwrap().clone()
}

#[test]
fn a_listener_back_from_a_stall_gets_no_audio_older_than_the_ring_holds() {
    // 50 frames of 1000 bytes a second into a 64-frame ring: the ring holds
    // 1.28 s. Listeners with an 8 KiB receive buffer read, stall for 5 s
    // (four ring spans), and read again.
    const RATE: f64 = 50.0;
    let server = raw_server(50, &["-source-buffer", "64"]);
    let ring_span = 64.0 / RATE;
    let mut ages_checked = 0;
    let listeners: Vec<TcpStream> = (0..4)
        .map(|_| small_window_listener(server.addr, 8192))
        .collect();
    let mut handles = Vec::new();
    for (i, mut s) in listeners.into_iter().enumerate() {
        handles.push(std::thread::spawn(move || {
            let mut frame = vec![0u8; 1000];
            // (frame number, when it arrived) for every frame.
            let mut got: Vec<(u64, Instant)> = Vec::new();
            let read = |s: &mut TcpStream, frame: &mut Vec<u8>, got: &mut Vec<(u64, Instant)>| {
                s.read_exact(frame).expect("stream ended");
                let n = check_raw_frame(frame).expect("a whole frame");
                got.push((n, Instant::now()));
            };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                read(&mut s, &mut frame, &mut got);
            }
            let resumed_at = got.len();
            std::thread::sleep(Duration::from_secs(5) + Duration::from_millis(100 * i as u64));
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(6) {
                read(&mut s, &mut frame, &mut got);
            }
            (got, resumed_at)
        }));
    }
    // During the stall: every stalled socket's unsent bytes stay within its
    // bound plus one loopback skb.
    std::thread::sleep(Duration::from_secs(4));
    let rows = clients(server.addr);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        let unsent = r["unsent_bytes"].as_u64().unwrap();
        let bound = r["queue_bound_bytes"].as_u64().unwrap();
        assert!(bound > 0, "{r}");
        assert!(
            unsent <= bound + 64 * 1024,
            "unsent {unsent} > bound {bound} + 64 KiB: {r}"
        );
    }
    for h in handles {
        let (got, resumed_at) = h.join().expect("a listener failed");
        // When frame n was published: the source is paced from its start,
        // so publish(n) = t0 + n / RATE; the earliest arrival bounds t0.
        let t0 = got
            .iter()
            .map(|(n, at)| *at - Duration::from_secs_f64(*n as f64 / RATE))
            .min()
            .unwrap();
        let age = |(n, at): &(u64, Instant)| (*at - t0).as_secs_f64() - *n as f64 / RATE;
        // After the stall, the first frames are what the kernel held for the
        // listener: its receive buffer (8 KiB, doubled by the kernel), the
        // server's bounded unsent queue and one skb. Every frame after them
        // is no older than the ring's span + the gathering bound + 1 s.
        let held = (2 * 8192 + 64 * 1024 + 64 * 1024) / 1000 + 1;
        let after: Vec<&(u64, Instant)> = got[resumed_at..].iter().skip(held).collect();
        assert!(
            after.len() > 50,
            "too few frames after the stall: {}",
            after.len()
        );
        let bound = ring_span + 0.5 + 1.0;
        for f in &after {
            let a = age(f);
            assert!(
                a <= bound,
                "frame {} arrived {a:.2}s after it was published (bound {bound:.2}s)",
                f.0
            );
            ages_checked += 1;
        }
        // And the listener skipped forward (it did not get the stale audio).
        let jump = got[resumed_at..].windows(2).any(|w| w[1].0 > w[0].0 + 1);
        assert!(jump, "no skip after a stall of four ring spans");
    }
    assert!(ages_checked > 200);
}
