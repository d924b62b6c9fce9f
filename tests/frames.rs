//! Black-box tests of what clients receive: whole, aligned, identical frames;
//! where a client starts; skipping a stalled client; client-max-bytes; mp3
//! framing; header bytes.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// `-frame-bytes F -exec python3 RAW_GEN F RATE 0` plus `extra` flags.
fn raw_server(frame: usize, rate: u32, extra: &[&str]) -> Server {
    Ringcast::new()
        .arg("-frame-bytes")
        .arg(frame.to_string())
        .args(extra)
        .source_exec(raw_gen_args(frame, rate, 0, None, 0))
        .start()
}

#[test]
fn raw_frames_are_exact_and_aligned() {
    // Each frame is written in three uneven pieces: the framer must put them
    // back together.
    let server = Ringcast::new()
        .args([
            "-frame-bytes",
            "1000",
            "-content-type",
            "application/x-ringcast-test",
        ])
        .source_exec(raw_gen_args_split(1000, 100, 0, None, 0, true))
        .start();
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK", "head: {}", c.head);
    assert_eq!(
        c.header("Content-Type").as_deref(),
        Some("application/x-ringcast-test")
    );
    assert_eq!(
        c.header("Content-Length"),
        None,
        "the body is delimited by close"
    );
    assert_eq!(
        c.header("Transfer-Encoding"),
        None,
        "the body is not chunked"
    );
    let body = c.read_body(60 * 1000, WAIT);
    let nums = raw_frames(&body, 1000).unwrap();
    assert_consecutive(&nums, "one client");
    drop(c);
    server.wait_log("source opened", |l| l.contains("source opened"), WAIT);
}

#[test]
fn http10_get_gets_an_http10_response_with_frames() {
    let server = raw_server(100, 100, &[]);
    let mut c = server.request("GET /any/path?x=1 HTTP/1.0\r\n\r\n");
    assert_eq!(c.status_line(), "HTTP/1.0 200 OK", "head: {}", c.head);
    assert_eq!(
        c.header("Content-Type").as_deref(),
        Some("application/octet-stream")
    );
    let body = c.read_body(20 * 100, WAIT);
    assert_consecutive(&raw_frames(&body, 100).unwrap(), "HTTP/1.0 client");
}

#[test]
fn ten_concurrent_clients_receive_identical_bytes() {
    const F: usize = 1000;
    let server = raw_server(F, 200, &["-source-buffer", "1024"]);
    // Connect all ten, then learn where each starts.
    let mut clients: Vec<Client> = (0..10).map(|_| server.get()).collect();
    let mut firsts = Vec::new();
    for c in &mut clients {
        assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
        firsts.push(c.read_body(F, WAIT));
    }
    let starts: Vec<u64> = firsts.iter().map(|f| check_raw_frame(f).unwrap()).collect();
    let common_start = *starts.iter().max().unwrap();
    let end = common_start + 200; // inclusive; 200+ frames in common
                                  // Every client reads up to frame `end` at once, in its own thread.
    let handles: Vec<_> = clients
        .into_iter()
        .zip(firsts)
        .map(|(mut c, first)| {
            std::thread::spawn(move || {
                let start = check_raw_frame(&first).unwrap();
                let rest = c.read_body((end - start) as usize * F, Duration::from_secs(30));
                let mut body = first;
                body.extend_from_slice(&rest);
                (start, body)
            })
        })
        .collect();
    let bodies: Vec<(u64, Vec<u8>)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut reference: Option<Vec<u8>> = None;
    for (i, (start, body)) in bodies.iter().enumerate() {
        let nums = raw_frames(body, F).unwrap();
        assert_consecutive(&nums, &format!("client {i}"));
        assert_eq!(nums.first(), Some(start));
        assert_eq!(nums.last(), Some(&end));
        let from = (common_start - start) as usize * F;
        let common = &body[from..];
        assert_eq!(common.len(), 201 * F);
        match &reference {
            None => reference = Some(common.to_vec()),
            Some(r) => assert!(
                r == common,
                "client {i} got different bytes for frames {common_start}..={end}"
            ),
        }
    }
}

#[test]
fn client_joining_mid_stream_starts_at_the_newest_frame() {
    const F: usize = 500;
    let server = raw_server(F, 100, &[]);
    let mut a = server.get();
    // A's frames: read until the stream has been running for 100 frames.
    let mut last = a.read_raw_frame(F, WAIT);
    while last < 100 {
        let n = a.read_raw_frame(F, WAIT);
        assert_eq!(n, last + 1);
        last = n;
    }
    // Frame `last` was complete before B asked, so B starts at it or later.
    let mut b = server.get();
    let first_b = b.read_raw_frame(F, WAIT);
    assert!(
        first_b >= last,
        "a client joining when frame {last} was already out started at older frame {first_b}"
    );
    let body = b.read_body(30 * F, WAIT);
    let mut nums = vec![first_b];
    nums.extend(raw_frames(&body, F).unwrap());
    assert_consecutive(&nums, "the late client");
}

#[test]
fn stalled_client_is_skipped_forward_while_another_keeps_every_frame() {
    const F: usize = 64 * 1024;
    const RATE: u32 = 100; // 6.5 MB/s
                           // A stalled client stops reading after its response head, so its kernel
                           // buffers stay small (receive autotuning only grows with reading). Stall
                           // until this many frames (~26 MB) went by: far more than the buffers and
                           // the ring together.
    const STALL_FRAMES: u64 = 400;
    let server = raw_server(F, RATE, &["-source-buffer", "48", "-flush-interval", "0"]);

    // The good client reads everything in its own thread and checks that
    // every frame is there.
    let mut good = server.get();
    let good_addr = good.local_addr();
    let latest = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let good_thread = {
        let latest = latest.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut nums = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let n = good.read_raw_frame(F, Duration::from_secs(30));
                if let Some(&prev) = nums.last() {
                    assert_eq!(n, prev + 1, "the reading client lost frames after {prev}");
                }
                nums.push(n);
                latest.store(n, Ordering::Release);
            }
            (good, nums)
        })
    };
    assert!(
        wait_until(WAIT, || latest.load(Ordering::Acquire) >= 5),
        "the reading client got no frames"
    );

    // The stalled client: head only, then nothing while the stream runs on.
    let mut stalled = server.get();
    let stalled_addr = stalled.local_addr();
    let stall_from = latest.load(Ordering::Acquire);
    assert!(
        wait_until(Duration::from_secs(60), || {
            latest.load(Ordering::Acquire) >= stall_from + STALL_FRAMES || good_thread.is_finished()
        }),
        "the stream did not move on by {STALL_FRAMES} frames"
    );
    assert!(!good_thread.is_finished(), "the reading client stopped");

    // Read again: whole frames, strictly increasing, with a jump forward.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut nums: Vec<u64> = Vec::new();
    let mut jump_at = None;
    while Instant::now() < deadline {
        let n = stalled.read_raw_frame(F, Duration::from_secs(30));
        if let Some(&prev) = nums.last() {
            assert!(n > prev, "frame {n} after {prev}");
            if n > prev + 1 && jump_at.is_none() {
                jump_at = Some(nums.len());
            }
        }
        nums.push(n);
        if jump_at.is_some_and(|j| nums.len() >= j + 10) {
            break;
        }
    }
    let jump =
        jump_at.unwrap_or_else(|| panic!("the stalled client never skipped: {}", short(&nums)));
    eprintln!(
        "stalled client: {} frames from its buffers, then {} -> {}",
        jump,
        nums[jump - 1],
        nums[jump]
    );
    drop(stalled);
    let end = server.wait_client_end(stalled_addr, WAIT);
    assert!(
        end.skipped > 0,
        "the stalled client's log line shows no skip: {}",
        end.line
    );

    stop.store(true, Ordering::Release);
    let (good, good_nums) = good_thread.join().expect("the reading client failed");
    assert!(good_nums.len() as u64 > STALL_FRAMES);
    assert_consecutive(&good_nums, "the reading client");
    drop(good);
    let end = server.wait_client_end(good_addr, WAIT);
    assert_eq!(
        end.skipped, 0,
        "the reading client was skipped: {}",
        end.line
    );
}

#[test]
fn client_max_bytes_gives_whole_frames_then_eof() {
    let server = raw_server(1000, 100, &["-client-max-bytes", "1500"]);
    let mut c = server.get();
    assert_eq!(c.status_line(), "HTTP/1.1 200 OK");
    let addr = c.local_addr();
    let body = c.read_to_eof(WAIT);
    assert_eq!(body.len(), 2000, "ceil(1500/1000) = 2 frames of 1000 bytes");
    assert_consecutive(&raw_frames(&body, 1000).unwrap(), "max-bytes client");
    let end = server.wait_client_end(addr, WAIT);
    assert_eq!(end.bytes, 2000, "{}", end.line);
    assert_eq!(end.frames, 2, "{}", end.line);
}

/// Writes MPEG-1 layer III frames 128 kbit/s 44.1 kHz: even frames unpadded
/// (`FF FB 90 64`, 417 bytes), odd ones padded (`FF FB 92 64`, 418 bytes);
/// bytes 4..12 are the frame number (big-endian), the rest `(n + i) % 200`.
/// Every fifth frame is followed by garbage, including headers with a
/// reserved bitrate, sample rate or layer and stray 0xFF bytes.
/// Arguments: RATE (frames/s).
const MP3_GEN: &str = r#"
import struct, sys, time
rate = float(sys.argv[1])
out = sys.stdout.buffer
garbage = b'\x00garbage\xff\xff\xfb\xf0\x64\xff\xfb\x9c\x64\xff\xf9\x90\x64\xff\x00\xffJUNK'
def frame(n):
    size = 418 if n % 2 else 417
    head = b'\xff\xfb\x92\x64' if n % 2 else b'\xff\xfb\x90\x64'
    return head + struct.pack('>Q', n) + bytes((n + i) % 200 for i in range(12, size))
n = 0
t0 = time.time()
try:
    while True:
        chunk = frame(n)
        if n % 5 == 4:
            chunk += garbage
        out.write(chunk)
        out.flush()
        n += 1
        d = t0 + n / rate - time.time()
        if d > 0:
            time.sleep(d)
except BrokenPipeError:
    pass
"#;

/// The frame [`MP3_GEN`] writes as number `n`.
fn mp3_frame(n: u64) -> Vec<u8> {
    let size = if n % 2 == 1 { 418 } else { 417 };
    let mut f = if n % 2 == 1 {
        vec![0xFF, 0xFB, 0x92, 0x64]
    } else {
        vec![0xFF, 0xFB, 0x90, 0x64]
    };
    f.extend_from_slice(&n.to_be_bytes());
    f.extend((12..size).map(|i| ((n + i as u64) % 200) as u8));
    f
}

#[test]
fn mp3_framing_sends_only_whole_valid_frames_and_skips_garbage() {
    let server = Ringcast::new()
        .args([
            "-frame-filter",
            "mp3",
            "-frame-bytes",
            "2000",
            "-content-type",
            "audio/mpeg",
            "-stat-log-interval",
            "200ms",
        ])
        .source_exec(["python3", "-c", MP3_GEN, "100"])
        .start();
    let mut c = server.get();
    assert_eq!(c.header("Content-Type").as_deref(), Some("audio/mpeg"));
    let mut nums = Vec::new();
    for _ in 0..60 {
        let head = c.read_body(4, WAIT);
        assert!(
            head == [0xFF, 0xFB, 0x90, 0x64] || head == [0xFF, 0xFB, 0x92, 0x64],
            "the body does not continue with a frame header: {head:02X?} after frames {}",
            short(&nums)
        );
        let size = if head[2] == 0x92 { 418 } else { 417 };
        let rest = c.read_body(size - 4, WAIT);
        let n = u64::from_be_bytes(rest[..8].try_into().unwrap());
        let mut frame = head;
        frame.extend_from_slice(&rest);
        assert!(
            frame == mp3_frame(n),
            "frame {n} ({size} bytes) is not the frame sent"
        );
        nums.push(n);
    }
    assert_consecutive(&nums, "mp3 client");
    // Garbage was seen (after frames 4, 9, ...) and counted, not sent.
    server.wait_log(
        "source stats with invalid_bytes > 0",
        |l| {
            l.contains("source stats")
                && l.split_whitespace()
                    .find_map(|w| w.strip_prefix("invalid_bytes="))
                    .and_then(|v| v.parse::<u64>().ok())
                    .is_some_and(|v| v > 0)
        },
        WAIT,
    );
}

#[test]
fn header_bytes_reach_every_client_first() {
    const F: usize = 1000;
    const H: usize = 100;
    let server = Ringcast::new()
        .args(["-frame-bytes", "1000", "-header-bytes", "100"])
        .source_exec(raw_gen_args(F, 100, 0, None, H))
        .start();
    let header = stream_header(H);

    let mut a = server.get();
    assert_eq!(
        a.read_body(H, WAIT),
        header,
        "the first client's body must start with the header bytes"
    );
    let mut last = a.read_raw_frame(F, WAIT);
    while last < 50 {
        let n = a.read_raw_frame(F, WAIT);
        assert_eq!(n, last + 1);
        last = n;
    }

    let mut b = server.get();
    assert_eq!(
        b.read_body(H, WAIT),
        header,
        "a later client's body must start with the header bytes"
    );
    let first_b = b.read_raw_frame(F, WAIT);
    assert!(
        first_b >= last,
        "the later client starts at frame {first_b}, before {last}"
    );
    let body = b.read_body(10 * F, WAIT);
    let mut nums = vec![first_b];
    nums.extend(raw_frames(&body, F).unwrap());
    assert_consecutive(&nums, "the later client");
    // A keeps getting frames, never the header again.
    let body = a.read_body(10 * F, WAIT);
    let nums = raw_frames(&body, F).unwrap();
    assert_eq!(nums[0], last + 1);
    assert_consecutive(&nums, "the first client");
}

#[test]
fn mp3_frames_larger_than_frame_bytes_are_dropped_not_truncated() {
    // -frame-bytes 417: the unpadded (even) frames fit, the padded 418-byte
    // (odd) ones do not and must not be sent cut to 417 bytes.
    let server = Ringcast::new()
        .args(["-frame-filter", "mp3", "-frame-bytes", "417"])
        .source_exec(["python3", "-c", MP3_GEN, "100"])
        .start();
    let mut c = server.get();
    let body = c.read_body(20 * 417, WAIT);
    let mut nums = Vec::new();
    for (i, f) in body.chunks(417).enumerate() {
        assert_eq!(
            &f[..4],
            &[0xFF, 0xFB, 0x90, 0x64],
            "piece {i} of the body is not an unpadded frame"
        );
        let n = u64::from_be_bytes(f[4..12].try_into().unwrap());
        assert!(
            f == mp3_frame(n).as_slice(),
            "piece {i} (frame {n}) is not the frame sent"
        );
        nums.push(n);
    }
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 2, "frames {:?}", nums);
    }
}
