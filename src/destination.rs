//! Push destinations: a stream pushed on to other servers (Icecast or
//! ringcast) as a source client would, each with its runtime status.
//!
//! Each destination has its own thread. It connects with `PUT` (or the
//! legacy `SOURCE`), Basic credentials and `Expect: 100-continue`, waits for
//! the answer, then writes the stream's frames as they come, read from the
//! ring like a listener reads them — so a destination that is slow or gone
//! never slows the stream's listeners: it is lapped and skips forward by
//! whole frames (counted), never holding the writer. A failed connection is
//! retried with backoff (1 s doubling to 30 s), up to `retry_limit` attempts
//! in a row when one is set; then the destination is `failed`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::{Destination, Secret};
use crate::stream::Stream;
use crate::upstream::Url;

/// A destination's state, as `/status` and `/metrics` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DestState {
    /// Connecting for the first time.
    Starting = 0,
    /// Connected and sending.
    Active = 1,
    /// Lost, trying again after a backoff.
    Reconnecting = 2,
    /// Gave up after `retry_limit` failed attempts.
    Failed = 3,
}

impl DestState {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            DestState::Starting => "starting",
            DestState::Active => "active",
            DestState::Reconnecting => "reconnecting",
            DestState::Failed => "failed",
        }
    }

    fn from_u8(v: u8) -> DestState {
        match v {
            0 => DestState::Starting,
            1 => DestState::Active,
            2 => DestState::Reconnecting,
            _ => DestState::Failed,
        }
    }
}

/// The live status of one destination (written by its thread, read by
/// status pages).
#[derive(Debug)]
pub struct DestStatus {
    /// The URL (no credentials).
    pub url: String,
    state: AtomicU8,
    /// Connection attempts so far.
    pub attempts: AtomicU64,
    /// Failed attempts in a row.
    pub failures_in_a_row: AtomicU64,
    /// Stream bytes written to it.
    pub bytes_out: AtomicU64,
    /// Frames it skipped when it fell behind.
    pub frames_skipped: AtomicU64,
    /// When the current connection began (ms since its thread started; 0:
    /// not connected).
    connected_at_ms: AtomicU64,
    started: Instant,
    /// The last errors, newest last (at most 4).
    last_errors: Mutex<Vec<String>>,
}

impl DestStatus {
    fn new(url: String) -> DestStatus {
        DestStatus {
            url,
            state: AtomicU8::new(DestState::Starting as u8),
            attempts: AtomicU64::new(0),
            failures_in_a_row: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames_skipped: AtomicU64::new(0),
            connected_at_ms: AtomicU64::new(0),
            started: Instant::now(),
            last_errors: Mutex::new(Vec::new()),
        }
    }

    /// The state now.
    pub fn state(&self) -> DestState {
        DestState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: DestState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Seconds the current connection has lasted (0 when not connected).
    pub fn connected_s(&self) -> f64 {
        let at = self.connected_at_ms.load(Ordering::Relaxed);
        if at == 0 {
            return 0.0;
        }
        (self.started.elapsed().as_millis() as u64).saturating_sub(at) as f64 / 1000.0
    }

    /// The last errors, newest last.
    pub fn errors(&self) -> Vec<String> {
        match self.last_errors.lock() {
            Ok(e) => e.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn error(&self, e: String) {
        if let Ok(mut v) = self.last_errors.lock() {
            v.push(e);
            let extra = v.len().saturating_sub(4);
            v.drain(..extra);
        }
    }
}

/// A running destination: its status (its thread runs until the stream is
/// asked to stop).
#[derive(Debug)]
pub struct Pusher {
    /// What status pages show.
    pub status: Arc<DestStatus>,
}

impl Pusher {
    /// Start pushing `stream` to `dest`.
    pub fn start(stream: Arc<Stream>, dest: Destination) -> io::Result<Pusher> {
        let url = Url::parse(&dest.url).map_err(io::Error::other)?;
        let status = Arc::new(DestStatus::new(url.display()));
        let st = status.clone();
        std::thread::Builder::new()
            .name(format!("push-{}", stream.id))
            .spawn(move || run(stream, dest, url, st))?;
        Ok(Pusher { status })
    }
}

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a destination may take to answer or to take a write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the thread looks for new frames.
const POLL: Duration = Duration::from_millis(20);

fn run(stream: Arc<Stream>, dest: Destination, url: Url, status: Arc<DestStatus>) {
    let mut backoff = BACKOFF_MIN;
    while !stream.stop_requested() {
        status.attempts.fetch_add(1, Ordering::Relaxed);
        match connect(&stream, &dest, &url) {
            Ok(sock) => {
                status.failures_in_a_row.store(0, Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                status.connected_at_ms.store(
                    (status.started.elapsed().as_millis() as u64).max(1),
                    Ordering::Relaxed,
                );
                status.set_state(DestState::Active);
                log::info!(
                    "destination stream={} url={} connected",
                    stream.name,
                    status.url
                );
                let why = feed(&stream, sock, &status);
                status.connected_at_ms.store(0, Ordering::Relaxed);
                if stream.stop_requested() {
                    break;
                }
                log::warn!(
                    "destination stream={} url={} lost: {why}",
                    stream.name,
                    status.url
                );
                status.error(why);
            }
            Err(e) => {
                let n = status.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                log::warn!(
                    "destination stream={} url={} attempt failed: {e}",
                    stream.name,
                    status.url
                );
                status.error(e.to_string());
                if dest.retry_limit.is_some_and(|limit| n >= u64::from(limit)) {
                    status.set_state(DestState::Failed);
                    log::error!(
                        "destination stream={} url={} failed {n} times in a row: giving up",
                        stream.name,
                        status.url
                    );
                    return;
                }
            }
        }
        status.set_state(DestState::Reconnecting);
        let until = Instant::now() + backoff;
        while Instant::now() < until && !stream.stop_requested() {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connect and do the source handshake.
fn connect(stream: &Stream, dest: &Destination, url: &Url) -> io::Result<TcpStream> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let password = match &dest.password {
        Secret::Plain(p) => p.clone(),
        Secret::Bcrypt(_) => return Err(io::Error::other("a bcrypt hash cannot be presented")),
    };
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", dest.user));
    let cfg = stream.config();
    let info = stream.info();
    let method = if dest.legacy_source { "SOURCE" } else { "PUT" };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {token}\r\nUser-Agent: ringcast/{}\r\nContent-Type: {}\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        cfg.content_type
    );
    if !dest.legacy_source {
        req.push_str("Expect: 100-continue\r\n");
    }
    let mut ice = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            req.push_str(&format!("{k}: {}\r\n", crate::http::sanitize(v)));
        }
    };
    ice("ice-name", &info.name);
    ice("ice-description", &info.description);
    ice("ice-genre", &info.genre);
    ice("ice-url", &info.url);
    if let Some(b) = info.bitrate {
        req.push_str(&format!("ice-bitrate: {b}\r\n"));
    }
    req.push_str(&format!(
        "ice-public: {}\r\n\r\n",
        u8::from(info.public.unwrap_or(false))
    ));
    sock.write_all(req.as_bytes())?;
    // Icecast answers `100 Continue` then `200 OK` (maybe in one read).
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other("closed during the handshake"));
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(status) = final_status(&text) {
            if (200..300).contains(&status) {
                sock.set_read_timeout(None)?;
                return Ok(sock);
            }
            return Err(io::Error::other(format!("answered {status}")));
        }
        if got.len() > 16 * 1024 || Instant::now() > deadline {
            return Err(io::Error::other("no answer to the handshake"));
        }
    }
}

/// The status of the first complete non-1xx response head in `text`.
fn final_status(text: &str) -> Option<u16> {
    let mut rest = text;
    loop {
        let end = rest.find("\r\n\r\n")?;
        let head = &rest[..end];
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        if !(100..200).contains(&status) {
            return Some(status);
        }
        rest = &rest[end + 4..];
    }
}

/// Write the stream's frames until the connection fails or the stream
/// stops; returns why.
fn feed(stream: &Stream, mut sock: TcpStream, status: &DestStatus) -> String {
    let ring = &stream.ring;
    let mut next = stream.start_frame();
    let mut frame = Vec::with_capacity(ring.frame_max());
    loop {
        if stream.stop_requested() {
            let _ = sock.shutdown(std::net::Shutdown::Both);
            return "stopping".into();
        }
        let head = ring.head();
        if next >= head {
            std::thread::sleep(POLL);
            continue;
        }
        if next < ring.oldest_safe(head) {
            let skipped = head - 1 - next;
            status.frames_skipped.fetch_add(skipped, Ordering::Relaxed);
            next = head - 1;
        }
        if !ring.copy_frame(next, &mut frame) {
            // Overwritten meanwhile: the lap check moves on.
            next += 1;
            continue;
        }
        if let Err(e) = sock.write_all(&frame) {
            return format!("write failed: {e}");
        }
        status
            .bytes_out
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        next += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_status_after_100_continue() {
        assert_eq!(
            final_status(
                "HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.0 200 OK\r\n\r\n"
            ),
            Some(200)
        );
        assert_eq!(final_status("HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(final_status("HTTP/1.0 401 Unauthorized\r\n\r\n"), Some(401));
        assert_eq!(final_status("HTTP/1.0 403 Forb"), None);
    }
}
