//! A minimal single-threaded fan-out server for measuring loadgen itself when no real
//! server is at hand: it answers every connection with `HTTP/1.1 200 OK` and then sends
//! one live test stream to all clients, `--batch` frames per send. A client whose socket
//! cannot take a whole send is dropped (so it never gets a torn frame).
//!
//! ```text
//! cargo run -p loadgen --release --example fanout -- --port 8100 --frame-bytes 1000 \
//!     --rate 16000 --batch 4 --duration 30s
//! ```
//!
//! Bounded: it stops by itself after `--duration` and serves at most `--max-clients`.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use clap::Parser;
use loadgen::{frame, parse, source::realtime_ns};

#[derive(Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 8100)]
    port: u16,
    /// Bytes per frame.
    #[arg(long, default_value_t = 1000)]
    frame_bytes: usize,
    /// Stream bytes per second.
    #[arg(long, default_value_t = 16000)]
    rate: u64,
    /// Frames per send.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Stop after this long.
    #[arg(long, default_value = "30s", value_parser = parse::duration)]
    duration: Duration,
    /// Most clients served.
    #[arg(long, default_value_t = 20_000)]
    max_clients: usize,
}

fn main() -> io::Result<()> {
    let a = Args::parse();
    if a.frame_bytes < frame::HEADER_LEN || a.batch == 0 || a.rate == 0 {
        eprintln!("fanout: need --frame-bytes >= 40, --batch >= 1, --rate > 0");
        std::process::exit(2);
    }
    let listener = TcpListener::bind(("127.0.0.1", a.port))?;
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    let end = start + a.duration;
    let mut clients: Vec<TcpStream> = Vec::new();
    let mut batch = vec![0u8; a.frame_bytes * a.batch];
    let mut seq: u64 = 0;
    let (mut sends, mut dropped, mut accepted) = (0u64, 0u64, 0usize);
    let send_every_ns = a.frame_bytes as u128 * a.batch as u128 * 1_000_000_000 / a.rate as u128;
    let mut k: u128 = 0;
    let mut next_log = start + Duration::from_secs(1);
    while Instant::now() < end {
        // Accept whoever is waiting (bounded by the client limit).
        while accepted < a.max_clients {
            match listener.accept() {
                Ok((mut s, _)) => {
                    accepted += 1;
                    let _ = s.set_nodelay(true);
                    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
                    if s.write_all(head).is_ok() && s.set_nonblocking(true).is_ok() {
                        clients.push(s);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let due = start + Duration::from_nanos((k * send_every_ns) as u64);
        let now = Instant::now();
        if now < due {
            std::thread::sleep((due - now).min(Duration::from_millis(5)));
            continue;
        }
        k += 1;
        let t = realtime_ns();
        for f in batch.chunks_mut(a.frame_bytes) {
            frame::encode(f, 0, seq, t);
            seq += 1;
        }
        clients.retain_mut(|s| match s.write(&batch) {
            Ok(n) if n == batch.len() => {
                sends += 1;
                true
            }
            _ => {
                dropped += 1;
                false
            }
        });
        if Instant::now() >= next_log {
            eprintln!(
                "fanout: {} clients, {} sends, {} dropped",
                clients.len(),
                sends,
                dropped
            );
            next_log += Duration::from_secs(1);
        }
    }
    eprintln!("fanout: done: {accepted} accepted, {sends} sends, {dropped} dropped");
    Ok(())
}
