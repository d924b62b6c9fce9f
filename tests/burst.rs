//! Fast start (issue 6, item 3): with `-burst-bytes` / `-burst-ms` a new
//! listener first gets the most recent whole frames up to that amount at
//! once, from a clean frame boundary, then the live stream.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// 1000-byte raw frames, 4 per second (a slow live stream, so a burst is
/// easy to tell from real-time delivery: six frames take 1.5 s live).
const F: usize = 1000;

fn slow_server(extra: &[&str]) -> Server {
    Ringcast::new()
        .args(extra)
        .args(["-frame-bytes", "1000", "-flush-interval", "0"])
        .source_exec(raw_gen_args(F, 4, 0, None, 0))
        .start()
}

/// Start the stream with a first listener and let `n` frames go by.
fn run_for(server: &Server, n: usize) -> Client {
    let mut first = server.get();
    first.read_body(n * F, WAIT);
    first
}

#[test]
fn burst_bytes_gives_recent_whole_frames_at_once() {
    let server = slow_server(&["-burst-bytes", "6000"]);
    let mut first = run_for(&server, 8);
    let began = Instant::now();
    let mut late = server.get();
    // Six frames (1.5 s of stream) arrive well before real time would allow.
    let body = late.read_body(6 * F, WAIT);
    let took = began.elapsed();
    let nums = raw_frames(&body, F).unwrap();
    assert!(took < Duration::from_millis(900), "the burst took {took:?}");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    // It ends at the newest frame: the next one is live, and the first
    // listener (which read 8 frames, 0..=7, when the late one connected) is
    // at most a frame or two ahead.
    assert!(nums[5] >= 7 && nums[5] <= 9, "burst {nums:?}");
    let next = late.read_raw_frame(F, WAIT);
    assert_eq!(next, nums[5] + 1);
    let _ = first.read_raw_frame(F, WAIT);
}

#[test]
fn burst_ms_uses_the_measured_rate() {
    // 4000 B/s measured after a second or so: 1500 ms is 6000 bytes.
    let server = slow_server(&["-burst-ms", "1500"]);
    let _first = run_for(&server, 10);
    let began = Instant::now();
    let mut late = server.get();
    let body = late.read_body(6 * F, WAIT);
    assert!(
        began.elapsed() < Duration::from_millis(900),
        "the burst took {:?}",
        began.elapsed()
    );
    let nums = raw_frames(&body, F).unwrap();
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
}

#[test]
fn no_burst_starts_at_the_newest_frame() {
    let server = slow_server(&[]);
    let mut first = run_for(&server, 6);
    let mut late = server.get();
    let n = late.read_raw_frame(F, WAIT);
    let newest = first.read_raw_frame(F, WAIT);
    assert!(n + 1 >= newest, "joined at {n}, newest {newest}");
}
