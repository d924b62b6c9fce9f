//! Black-box test of invariant 1 under a writer that laps its readers all
//! the time. In its own test binary: it keeps both cores busy for three seconds
//! and would disturb the timing of other tests running next to it.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn lapped_clients_never_get_a_torn_frame() {
    // Invariant 1 of the design: a client never receives a torn frame (a
    // slot overwritten while it was being sent); if that would happen, the
    // client is disconnected. A source as fast as the pipe (no pacing, as
    // `-path FILE` without -source-bandwidth) and the default ring: the
    // writer laps slow readers all the time. Every whole frame a client gets
    // must be intact and in increasing order; a client that is torn off may
    // end with a piece of a frame, then EOF. Readers reconnect when cut off,
    // for three seconds.
    const F: usize = 4096;
    let server = Ringcast::new()
        .args(["-frame-bytes", "4096", "-flush-interval", "0"])
        .source_exec(raw_gen_args(F, 0, 0, None, 0))
        .start();
    let began = Instant::now();
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut sessions = Vec::new();
                while began.elapsed() < Duration::from_secs(3) {
                    let mut c = Client::request(addr, "GET / HTTP/1.1\r\n\r\n");
                    let local = c.local_addr();
                    let mut body = Vec::new();
                    let mut eof = false;
                    // Slow, uneven readers.
                    while began.elapsed() < Duration::from_secs(3) {
                        let (chunk, end) = c.read_until_eof_or(Duration::from_millis(1 + i));
                        body.extend_from_slice(&chunk);
                        if end {
                            eof = true;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(3 * i));
                    }
                    sessions.push((local, body, eof));
                }
                sessions
            })
        })
        .collect();
    let (mut frames, mut cut_off) = (0, 0);
    let mut failures = Vec::new();
    for h in handles {
        for (local, body, eof) in h.join().unwrap() {
            let whole = body.len() / F * F;
            let mut nums = Vec::new();
            for (k, f) in body[..whole].chunks(F).enumerate() {
                match check_raw_frame(f) {
                    Ok(n) => nums.push(n),
                    Err(e) => {
                        let end = server.wait_client_end(local, WAIT);
                        failures.push(format!(
                            "client {local}: whole frame {k} of {} in its body ({} bytes, eof={eof}): {e}; server: {}",
                            whole / F,
                            body.len(),
                            end.line
                        ));
                        break;
                    }
                }
            }
            if let Some(k) = (1..nums.len()).find(|&k| nums[k] <= nums[k - 1]) {
                let end = server.wait_client_end(local, WAIT);
                failures.push(format!(
                    "client {local}: frame {} after {} (frames {:?} at {k} of {}; eof={eof}); server: {}",
                    nums[k],
                    nums[k - 1],
                    &nums[k.saturating_sub(3)..(k + 3).min(nums.len())],
                    nums.len(),
                    end.line
                ));
            }
            frames += nums.len();
            if eof {
                cut_off += 1;
                let end = server.wait_client_end(local, WAIT);
                assert!(
                    end.line.contains("reason=torn"),
                    "client {local} ended early: {}",
                    end.line
                );
            }
        }
    }
    eprintln!("lapped clients: {frames} intact frames, {cut_off} connections cut off (torn)");
    assert!(
        failures.is_empty(),
        "torn or out-of-order frames reached clients:\n{}",
        failures.join("\n")
    );
    assert!(frames > 0);
}
