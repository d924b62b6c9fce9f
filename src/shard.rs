//! A shard: one glommio executor pinned to one core, with its own listen socket
//! (SO_REUSEPORT), its own clients and its own counters.
//!
//! Tasks on a shard:
//! - the **accept loop** takes connections from this shard's listen socket and
//!   spawns one task per connection;
//! - one **connection task** per client reads the request (size limit, header
//!   timeout), answers it, and then runs the client's delivery loop;
//! - the **watcher** sleeps on the shard's [`Bell`], rung by source threads
//!   after they publish frames, waits the flush interval to let frames gather,
//!   then wakes the clients of the streams that moved. A short guard timer
//!   covers a lost wake-up. Nothing spins: an idle shard sleeps in io_uring.
//!
//! Nothing about a client is shared with another shard.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::client::{End, Sender, Step};
use crate::http::{self, Method, Parse, RequestError};
use crate::stats::{ClientStats, ShardStats};
use crate::stream::{Bell, SourceState, Stream};
use crate::sys::{self, EventFd};

/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Guard against a lost wake-up: the watcher looks at the rings this often
/// even without a bell.
const GUARD_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stopping shard waits for its clients' responses to end.
const STOP_GRACE: Duration = Duration::from_millis(700);
/// Bytes a client may send after its request before it is dropped.
const MAX_EXTRA_INPUT: u64 = 64 * 1024;

/// What every shard and the main thread share.
#[derive(Debug)]
pub struct ServerShared {
    /// Set once to stop: shards stop accepting and end every response.
    pub shutdown: AtomicBool,
    /// Wait this long after a bell to gather frames before waking clients.
    pub flush_interval: Duration,
    /// Server-wide client limit (0 = none).
    pub max_clients: usize,
    /// Clients connected on all shards (connect/disconnect only).
    pub clients: AtomicUsize,
    /// One bell per shard.
    pub bells: Arc<[Bell]>,
    /// Per-shard request counters.
    pub shard_stats: Vec<ShardStats>,
    /// The streams, indexed by `Stream::index`.
    pub streams: Vec<Arc<Stream>>,
    /// Signalled when the last client leaves (the main thread then checks
    /// whether a finished server should exit).
    pub main_wake: Arc<EventFd>,
}

/// Per-stream wait list of one shard.
#[derive(Default)]
struct WaitList {
    /// Wakers of clients waiting for this stream's next frame.
    wakers: RefCell<Vec<Waker>>,
    /// A spare vector swapped in when the list is drained (no reallocation).
    spare: RefCell<Vec<Waker>>,
    /// Bumped at each drain, so a client registers once per generation.
    generation: Cell<u64>,
    /// Head and state last seen by the watcher.
    last_head: Cell<u64>,
    last_state: Cell<Option<SourceState>>,
}

impl WaitList {
    fn wake_all(&self) {
        let mut list = self.spare.take();
        std::mem::swap(&mut list, &mut *self.wakers.borrow_mut());
        self.generation.set(self.generation.get() + 1);
        for w in list.drain(..) {
            w.wake();
        }
        *self.spare.borrow_mut() = list;
    }
}

/// One shard's local state (lives on its executor only).
struct Shard {
    id: usize,
    server: Arc<ServerShared>,
    waits: Vec<WaitList>,
    /// Set when the shard is stopping.
    stopping: Cell<bool>,
    /// Wakers of tasks that wait for `stopping` (the accept loop, blocked
    /// writers).
    stop_waiters: RefCell<Vec<Waker>>,
    /// Clients on this shard now.
    clients_now: Cell<usize>,
}

impl Shard {
    fn stats(&self) -> &ShardStats {
        &self.server.shard_stats[self.id]
    }

    fn client_stats(&self, stream: &Stream) -> &ClientStats {
        &self.server.streams[stream.index].client_stats[self.id]
    }

    fn stop(&self) {
        self.stopping.set(true);
        for w in &self.waits {
            w.wake_all();
        }
        for w in self.stop_waiters.take() {
            w.wake();
        }
    }
}

/// Resolves when the shard starts stopping.
struct StopWait<'a> {
    shard: &'a Shard,
}

impl Future for StopWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shard.stopping.get() {
            return Poll::Ready(());
        }
        self.shard.stop_waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Resolves when the stream has a frame past `next`, has ended, or the shard
/// stops.
struct FrameWait<'a> {
    shard: &'a Shard,
    stream: &'a Stream,
    next: u64,
    registered: Option<u64>,
}

impl Future for FrameWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shard.stopping.get() || self.stream.ring.head() > self.next || self.stream.ended() {
            return Poll::Ready(());
        }
        let list = &self.shard.waits[self.stream.index];
        let generation = list.generation.get();
        if self.registered != Some(generation) {
            list.wakers.borrow_mut().push(cx.waker().clone());
            self.registered = Some(generation);
        }
        Poll::Pending
    }
}

/// Resolves when the shard's bell rings.
struct BellWait<'a> {
    bell: &'a Bell,
}

impl Future for BellWait<'_> {
    type Output = bool;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        self.bell.poll_rung(cx).map(|()| true)
    }
}

/// Run shard `id` until the server stops. `listener` is this shard's listen
/// socket, already bound.
pub async fn run(id: usize, listener: OwnedFd, server: Arc<ServerShared>) {
    let shard = Rc::new(Shard {
        id,
        waits: server.streams.iter().map(|_| WaitList::default()).collect(),
        server,
        stopping: Cell::new(false),
        stop_waiters: RefCell::new(Vec::new()),
        clients_now: Cell::new(0),
    });
    // SAFETY: `listener` is an owned, bound, listening TCP socket; ownership
    // moves into the glommio listener, which closes it on drop.
    let listener = unsafe { TcpListener::from_raw_fd(listener.into_raw_fd()) };
    glommio::spawn_local(watch(shard.clone())).detach();

    let mut last_accept_error_log: Option<Instant> = None;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            StopWait { shard: &shard }.await;
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(tcp)) => {
                shard.stats().accepted.inc();
                glommio::spawn_local(connection(shard.clone(), tcp)).detach();
            }
            Some(Err(e)) => {
                shard.stats().accept_errors.inc();
                let now = Instant::now();
                if last_accept_error_log.is_none_or(|t| now - t > Duration::from_secs(1)) {
                    log::error!("accept failed shard={id} error=\"{e}\" (raise the open-file limit? see tuning.md)");
                    last_accept_error_log = Some(now);
                }
                // Out of descriptors or memory: give the clients a moment to
                // leave instead of spinning on the error.
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Stop accepting: close this shard's listen socket at once.
    drop(listener);
    let deadline = Instant::now() + STOP_GRACE;
    while shard.clients_now.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// The watcher: turn bells into client wake-ups, after the flush interval.
async fn watch(shard: Rc<Shard>) {
    let bell = &shard.server.bells[shard.id];
    loop {
        let rung = future::or(BellWait { bell }, async {
            glommio::timer::sleep(GUARD_INTERVAL).await;
            false
        })
        .await;
        if shard.server.shutdown.load(Ordering::Acquire) {
            shard.stop();
            return;
        }
        let flush = shard.server.flush_interval;
        if rung && !flush.is_zero() {
            glommio::timer::sleep(flush).await;
        }
        for (list, stream) in shard.waits.iter().zip(&shard.server.streams) {
            let head = stream.ring.head();
            let state = stream.state();
            if head != list.last_head.get() || Some(state) != list.last_state.get() {
                list.last_head.set(head);
                list.last_state.set(Some(state));
                list.wake_all();
            }
        }
    }
}

/// Serve one connection from request to the end of its response.
async fn connection(shard: Rc<Shard>, mut tcp: TcpStream) {
    let peer = tcp.peer_addr().ok();
    let peer_text = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    let req = match read_request(&shard, &mut tcp).await {
        Some(r) => r,
        None => return,
    };
    // Route: a stream whose mount is this path, or the catch-all stream.
    let stream = shard
        .server
        .streams
        .iter()
        .find(|s| s.config.mount.as_deref() == Some(req.path.as_str()))
        .or_else(|| shard.server.streams.iter().find(|s| s.config.mount.is_none()))
        .cloned();
    let Some(stream) = stream else {
        shard.stats().not_found.inc();
        respond_and_close(&mut tcp, &http::not_found_response()).await;
        return;
    };
    let head = http::stream_head(req.minor_version, &stream.config.content_type);
    if req.method == Method::Head {
        shard.stats().head_requests.inc();
        respond_and_close(&mut tcp, &head).await;
        return;
    }
    let max = shard.server.max_clients;
    if max > 0 && shard.server.clients.fetch_add(1, Ordering::AcqRel) >= max {
        shard.server.clients.fetch_sub(1, Ordering::AcqRel);
        shard.stats().rejected_full.inc();
        respond_and_close(&mut tcp, &http::unavailable_response()).await;
        return;
    } else if max == 0 {
        shard.server.clients.fetch_add(1, Ordering::AcqRel);
    }
    let _ = sys::set_nodelay(tcp.as_raw_fd());
    log::info!("client {peer_text} {}", req.path);
    shard.clients_now.set(shard.clients_now.get() + 1);
    shard.stats().clients_now.set(shard.clients_now.get() as u64);
    let cstats = shard.client_stats(&stream);
    cstats.clients_total.inc();
    let now_here = cstats.clients_now.get() + 1;
    cstats.clients_now.set(now_here);
    if now_here > cstats.clients_peak.get() {
        cstats.clients_peak.set(now_here);
    }
    stream.client_joined();
    let started = Instant::now();

    let mut sender = Sender::new(&stream, tcp.as_raw_fd(), stream.start_frame());
    let reason = if tcp.write_all(&head).await.is_err() {
        "gone".to_string()
    } else {
        deliver(&shard, &stream, &mut tcp, &mut sender).await
    };
    // End the response cleanly (FIN after whole frames), then close.
    let _ = tcp.shutdown(std::net::Shutdown::Write).await;
    drop(tcp);

    stream.client_left();
    let cstats = shard.client_stats(&stream);
    cstats.clients_now.set(cstats.clients_now.get().saturating_sub(1));
    shard.clients_now.set(shard.clients_now.get() - 1);
    shard.stats().clients_now.set(shard.clients_now.get() as u64);
    if shard.server.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
        shard.server.main_wake.signal();
    }
    log::info!(
        "client {peer_text} -- {:.3}s elapsed {} bytes {} frames + {} skipped reason={reason}",
        started.elapsed().as_secs_f64(),
        sender.bytes_sent,
        sender.frames_sent,
        sender.frames_skipped,
    );
}

/// The delivery loop of one client. Returns why it ended.
async fn deliver(shard: &Shard, stream: &Stream, tcp: &mut TcpStream, sender: &mut Sender) -> String {
    let stats = shard.client_stats(stream);
    let mut junk = [0u8; 64];
    let mut extra_input: u64 = 0;
    loop {
        match sender.try_send(stream, stats) {
            Step::Progress => {
                glommio::yield_if_needed().await;
            }
            Step::CaughtUp => {
                if shard.stopping.get() {
                    return "server stopping".into();
                }
                if stream.ended() && stream.ring.head() <= sender.next {
                    return "stream ended".into();
                }
                // Wait for a frame, and meanwhile notice the client leaving
                // (a pending read completes with EOF or an error).
                let wait = FrameWait {
                    shard,
                    stream,
                    next: sender.next,
                    registered: None,
                };
                let read = future::or(async { wait.await; None }, async { Some(tcp.read(&mut junk).await) }).await;
                match read {
                    None => {}
                    Some(Ok(0)) | Some(Err(_)) => {
                        stats.client_gone.inc();
                        return "gone".into();
                    }
                    Some(Ok(n)) => {
                        extra_input += n as u64;
                        if extra_input > MAX_EXTRA_INPUT {
                            return "unexpected input".into();
                        }
                    }
                }
            }
            Step::Blocked => {
                if let Err(end) = sender.prepare_blocked(stream, stats) {
                    return finish(end, stats);
                }
                if sender.blocked_bytes().is_empty() {
                    continue;
                }
                let written = future::or(async { Some(tcp.write(sender.blocked_bytes()).await) }, async {
                    StopWait { shard }.await;
                    None
                })
                .await;
                match written {
                    None => return "server stopping".into(),
                    Some(Ok(n)) => sender.blocked_written(n, stats),
                    Some(Err(_)) => {
                        stats.client_gone.inc();
                        return "gone".into();
                    }
                }
            }
            Step::Finished(end) => return finish(end, stats),
        }
    }
}

fn finish(end: End, stats: &ClientStats) -> String {
    match end {
        End::MaxBytes => {
            stats.max_bytes_reached.inc();
            "client-max-bytes".into()
        }
        End::Torn => {
            stats.torn_disconnects.inc();
            log::warn!("client disconnected: its frame was overwritten while being sent (torn)");
            "torn".into()
        }
        End::Failed(_) => {
            stats.client_gone.inc();
            "gone".into()
        }
    }
}

/// How reading a request head ended.
enum ReadOutcome {
    Request(http::Request),
    Refused(RequestError),
    TimedOut,
    Closed,
}

/// Read the request head within the header timeout and size limit; answer
/// errors itself. `None` means the connection is done.
async fn read_request(shard: &Shard, tcp: &mut TcpStream) -> Option<http::Request> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let reading = async {
        loop {
            let n = match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return ReadOutcome::Closed,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            match http::parse_request(&buf) {
                Ok(Parse::Complete(req)) => return ReadOutcome::Request(req),
                Ok(Parse::Partial) => continue,
                Err(e) => return ReadOutcome::Refused(e),
            }
        }
    };
    let timed = future::or(reading, async {
        glommio::timer::sleep(HEADER_TIMEOUT).await;
        ReadOutcome::TimedOut
    });
    let outcome = future::or(timed, async {
        StopWait { shard }.await;
        ReadOutcome::Closed
    })
    .await;
    match outcome {
        ReadOutcome::Request(req) => Some(req),
        ReadOutcome::Refused(e) => {
            match e {
                RequestError::Malformed => shard.stats().bad_requests.inc(),
                RequestError::MethodNotAllowed => shard.stats().bad_method.inc(),
                RequestError::TooLarge => shard.stats().header_too_large.inc(),
            }
            respond_and_close(tcp, &http::error_response(e)).await;
            None
        }
        ReadOutcome::TimedOut => {
            shard.stats().header_timeouts.inc();
            respond_and_close(tcp, &http::timeout_response()).await;
            None
        }
        ReadOutcome::Closed => {
            shard.stats().early_close.inc();
            None
        }
    }
}

/// Write a short response (bounded in time) and close.
async fn respond_and_close(tcp: &mut TcpStream, bytes: &[u8]) {
    let _ = future::or(async { tcp.write_all(bytes).await.is_ok() }, async {
        glommio::timer::sleep(Duration::from_secs(5)).await;
        false
    })
    .await;
    let _ = tcp.shutdown(std::net::Shutdown::Write).await;
}

/// The local address of a bound listener, for the log line.
pub fn bound_address(fd: &OwnedFd) -> std::io::Result<SocketAddr> {
    sys::local_addr(fd.as_raw_fd())
}
