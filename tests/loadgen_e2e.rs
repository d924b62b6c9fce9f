//! End to end with loadgen, for CI: the real `ringcast` binary reads a loadgen test
//! stream from a FIFO (written by `loadgen::source::run` on a thread of this test) and
//! 300 loadgen clients (`loadgen::clients::run`, half reading as fast as they can, half
//! at the stream's rate) read it for a few seconds. Every frame they receive is
//! checked: no corrupt or torn frame, no failed client, every client gets frames.
//!
//! This is a correctness check, not a measurement (bench/ measures). Every wait is on a
//! condition with a generous deadline, so a loaded 2-core machine only makes it slower.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use loadgen::clients::{self, ClientsConfig};
use loadgen::http::parse_url;
use loadgen::source::{self, SourceConfig};

const FRAME: usize = 1000;
/// Stream rate: 100 frames per second.
const RATE: u64 = 100_000;
const CLIENTS: usize = 300;
const STREAM_ID: u32 = 7;

/// Writes the paced loadgen test stream into the FIFO until `stop` (or 60 s, a safety
/// bound). Opening blocks until ringcast opens the FIFO for reading.
fn feed(fifo: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let cfg = SourceConfig {
            frame_bytes: FRAME,
            rate: RATE,
            stream_id: STREAM_ID,
            duration: Some(Duration::from_secs(60)),
            frames: None,
            header_bytes: 0,
        };
        let Ok(mut out) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
            return;
        };
        // A broken pipe means the server went away: the test reports that itself.
        let _ = source::run(&cfg, &mut out, &stop);
    })
}

#[test]
fn three_hundred_loadgen_clients_get_only_whole_checked_frames() {
    let dir = common::TempDir::new("loadgen");
    let fifo = dir.mkfifo("stream.fifo");
    let mut server = common::Ringcast::new()
        .arg("-path")
        .arg(&fifo)
        .args(["-frame-bytes", "1000", "-source-buffer", "256"])
        .args(["-flush-interval", "20ms"])
        .start();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = feed(fifo.clone(), stop.clone());

    // The stream flows: one plain client gets a whole, valid loadgen frame first.
    let mut probe = server.get();
    assert!(
        probe.status_line().contains("200"),
        "status: {}",
        probe.status_line()
    );
    let first = probe.read_body(FRAME, common::WAIT);
    let h = loadgen::frame::verify(&first)
        .unwrap_or_else(|e| panic!("the first body bytes are not a whole loadgen frame: {e}"));
    assert_eq!(h.stream_id, STREAM_ID);
    drop(probe);

    let url = format!("http://{}/", server.addr);
    let mut cfg = ClientsConfig::new(vec![parse_url(&url).expect("url")], CLIENTS);
    cfg.duration = Duration::from_secs(4);
    cfg.frame_bytes = Some(FRAME as u32);
    cfg.mix = loadgen::parse::mix("fast=0.5,paced=0.5", RATE).expect("mix");
    cfg.connect_timeout = Duration::from_secs(15);
    cfg.max_failed_fraction = 0.0;
    let report = clients::run(&cfg, &AtomicBool::new(false)).expect("loadgen clients run");
    let summary = report.human();

    stop.store(true, Ordering::Relaxed);
    assert!(
        server.running(),
        "ringcast exited during the run; loadgen said:\n{summary}"
    );

    assert_eq!(report.frames.corrupt, 0, "corrupt frames:\n{summary}");
    assert_eq!(report.clients.failed, 0, "failed clients:\n{summary}");
    assert_eq!(
        report.connections.closed_early, 0,
        "connections closed by the server:\n{summary}"
    );
    assert_eq!(
        report.data.non_loadgen_bodies, 0,
        "bodies without loadgen frames:\n{summary}"
    );
    assert_eq!(report.clients.with_headers, CLIENTS as u64, "{summary}");
    assert_eq!(
        report.clients.with_first_frame, CLIENTS as u64,
        "every client must get a frame:\n{summary}"
    );
    assert!(report.frames.ok > 0, "no frames received:\n{summary}");
    // 4 s at 100 frames/s is ~400 frames per client; even a badly overloaded run gets
    // far more than 20 each.
    assert!(
        report.frames.ok >= 20 * CLIENTS as u64,
        "only {} frames for {CLIENTS} clients:\n{summary}",
        report.frames.ok
    );
    assert_eq!(
        report.data.resync_bytes, 0,
        "the checker lost frame sync:\n{summary}"
    );
    assert!(report.passed, "{summary}");

    // The writer notices `stop` within 100 ms; do not hang the test on it regardless.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !writer.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}
