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
use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::client::{End, SendScratch, Sender, Step};
use crate::http::{self, Method, Parse, RequestError};
use crate::shared::ServerShared;
use crate::stats::{ClientStats, ShardStats};
use crate::status;
use crate::stream::{Bell, ClientLive, SourceState, Stream};
use crate::sys;
use crate::wait::WaitSet;

/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Guard against a lost wake-up: the watcher looks at the rings this often
/// even without a bell.
const GUARD_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stopping shard waits for its clients' responses to end.
const STOP_GRACE: Duration = Duration::from_millis(700);
/// A stream that brought this many bytes since its clients were last woken
/// wakes them at once instead of waiting out the flush interval.
const FLUSH_ENOUGH_BYTES: u64 = 32 * 1024;
/// How long a stopping shard still waits for a request head that is on its
/// way.
const STOP_REQUEST_GRACE: Duration = Duration::from_millis(200);
/// Bytes a client may send after its request before it is dropped.
const MAX_EXTRA_INPUT: u64 = 64 * 1024;

/// What a listen socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Streams (and status pages unless an admin address is configured).
    Public,
    /// Status pages only.
    Admin,
}

/// Per-stream wait list of one shard.
struct WaitList {
    /// The stream whose clients wait here.
    stream: Arc<Stream>,
    /// Clients of this stream waiting for its next frame (one registration
    /// each, released when the wait ends: see `wait.rs`).
    frames: WaitSet,
    /// Head and state last seen by the watcher.
    last_head: Cell<u64>,
    last_state: Cell<Option<SourceState>>,
    /// The stream's source byte count when its clients were last woken.
    last_bytes: Cell<u64>,
}

impl WaitList {
    fn new(stream: Arc<Stream>) -> WaitList {
        WaitList {
            stream,
            frames: WaitSet::new(),
            last_head: Cell::new(0),
            last_state: Cell::new(None),
            last_bytes: Cell::new(0),
        }
    }

    fn wake_all(&self) {
        self.frames.wake_all();
    }
}

/// One shard's local state (lives on its executor only).
struct Shard {
    id: usize,
    server: Arc<ServerShared>,
    /// Wait lists by stream id, made when a stream's first client on this
    /// shard arrives, dropped by the watcher when no client holds them.
    waits: RefCell<HashMap<u64, Rc<WaitList>>>,
    /// Set when the shard is stopping.
    stopping: Cell<bool>,
    /// Tasks that wait for `stopping` (the accept loop, request reads,
    /// blocked writers): one registration per wait in progress.
    stop_waiters: WaitSet,
    /// Buffers the clients take turns with to build their sends.
    scratch: RefCell<SendScratch>,
}

impl Shard {
    fn stats(&self) -> &ShardStats {
        &self.server.shard_stats[self.id]
    }

    fn wait_list(&self, stream: &Arc<Stream>) -> Rc<WaitList> {
        self.waits
            .borrow_mut()
            .entry(stream.id)
            .or_insert_with(|| Rc::new(WaitList::new(stream.clone())))
            .clone()
    }

    fn stop(&self) {
        self.stopping.set(true);
        let lists: Vec<Rc<WaitList>> = self.waits.borrow().values().cloned().collect();
        for w in lists {
            w.wake_all();
        }
        self.stop_waiters.wake_all();
    }

    /// Resolves when the shard starts stopping. Registers once; dropping it
    /// unregisters.
    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        self.stop_waiters.wait_until(|| self.stopping.get())
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

/// Run shard `id` until the server stops. `listeners` are this shard's listen
/// sockets, already bound.
pub async fn run(id: usize, listeners: Vec<(OwnedFd, ListenerKind)>, server: Arc<ServerShared>) {
    let shard = Rc::new(Shard {
        id,
        waits: RefCell::new(HashMap::new()),
        server,
        stopping: Cell::new(false),
        stop_waiters: WaitSet::new(),
        scratch: RefCell::new(SendScratch::new()),
    });
    glommio::spawn_local(watch(shard.clone())).detach();
    shard.server.shards_ready.fetch_add(1, Ordering::AcqRel);
    shard.server.main_wake.signal();
    let mut accepting = Vec::new();
    for (fd, kind) in listeners {
        // `fd` is an owned, bound, listening TCP socket; ownership moves
        // into the glommio listener, which closes it on drop.
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` was just released by `fd`, so nobody else owns it.
        let listener = unsafe { TcpListener::from_raw_fd(raw) };
        accepting.push(glommio::spawn_local(accept_loop(
            shard.clone(),
            listener,
            raw,
            kind,
        )));
    }
    for task in accepting {
        task.await;
    }
    let deadline = Instant::now() + STOP_GRACE;
    while shard.stats().clients_now() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// Accept connections on one listen socket until the shard stops, then close
/// it (the kernel hands new connections to the other processes or sockets in
/// the SO_REUSEPORT group).
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, fd: RawFd, kind: ListenerKind) {
    let mut last_error_log: Option<Instant> = None;
    // One stop registration for the life of the loop, not one per accept
    // (issue 9: a clone per accept overflowed glommio's task refcount).
    let mut stopped = std::pin::pin!(shard.stopped());
    let panic_after = crate::failpoint::shard_panic_after_accepts(shard.id);
    loop {
        // Checked first: once the listen socket is shut down, accept fails at
        // once and would never let the stop future be polled.
        if shard.stopping.get() {
            drain_on_stop(&shard, &listener, fd, kind).await;
            break;
        }
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            stopped.as_mut().await;
            None
        })
        .await;
        match accepted {
            None => {
                drain_on_stop(&shard, &listener, fd, kind).await;
                break;
            }
            Some(Ok(tcp)) => {
                shard.stats().accepted.inc();
                if panic_after.is_some_and(|n| shard.stats().accepted.get() >= n) {
                    panic!(
                        "failpoint: shard {} panics after {} accepts",
                        shard.id,
                        shard.stats().accepted.get()
                    );
                }
                glommio::spawn_local(connection(shard.clone(), tcp, kind)).detach();
            }
            Some(Err(_)) if shard.server.shutdown.load(Ordering::Acquire) => {
                // The socket was shut down for the stop; the watcher sets
                // `stopping` in a moment.
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            Some(Err(e)) => {
                shard.stats().accept_errors.inc();
                let now = Instant::now();
                if last_error_log.is_none_or(|t| now - t > Duration::from_secs(1)) {
                    log::error!(
                        "accept failed shard={} error=\"{e}\" (out of file descriptors? see tuning.md)",
                        shard.id
                    );
                    last_error_log = Some(now);
                }
                // Out of descriptors or memory: give the clients a moment to
                // leave instead of spinning on the error.
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Stopping: shut the listen socket down so the kernel queues nothing more
/// on it (another process on the same port takes new connections), then
/// serve what was already queued instead of resetting it.
async fn drain_on_stop(shard: &Rc<Shard>, listener: &TcpListener, fd: RawFd, kind: ListenerKind) {
    // `fd` is the listener's own descriptor (glommio's TcpListener does not
    // expose it); it stays open until `listener` is dropped.
    let _ = sys::shutdown_listener(fd);
    loop {
        let next = future::or(async { Some(listener.accept().await) }, async {
            glommio::timer::sleep(Duration::from_millis(100)).await;
            None
        })
        .await;
        match next {
            Some(Ok(tcp)) => {
                shard.stats().accepted.inc();
                glommio::spawn_local(connection(shard.clone(), tcp, kind)).detach();
            }
            _ => break,
        }
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
            // Gather frames for up to the flush interval, unless a stream has
            // already brought enough for a full-sized send (a high-rate
            // stream must not be held to one send per interval).
            let enough = shard.waits.borrow().values().any(|l| {
                l.stream
                    .source_stats
                    .bytes_in
                    .get()
                    .saturating_sub(l.last_bytes.get())
                    >= FLUSH_ENOUGH_BYTES
            });
            if !enough {
                glommio::timer::sleep(flush).await;
            }
        }
        let lists: Vec<Rc<WaitList>> = shard.waits.borrow().values().cloned().collect();
        for list in lists {
            let head = list.stream.ring.head();
            let state = list.stream.state();
            if head != list.last_head.get() || Some(state) != list.last_state.get() {
                list.last_bytes.set(list.stream.source_stats.bytes_in.get());
                list.last_head.set(head);
                list.last_state.set(Some(state));
                list.wake_all();
            }
            // Only the map holds it: no client of that stream is left here.
            if Rc::strong_count(&list) == 2 {
                shard.waits.borrow_mut().remove(&list.stream.id);
            }
        }
    }
}

/// Serve one connection from request to the end of its response.
async fn connection(shard: Rc<Shard>, mut tcp: TcpStream, kind: ListenerKind) {
    let peer = tcp.peer_addr().ok();
    let req = match read_request(&shard, &mut tcp).await {
        Some(r) => r,
        None => return,
    };
    let set = shard.server.streams();
    let status_here = kind == ListenerKind::Admin || !shard.server.admin_separate;
    if status_here {
        if let Some(page) = status::page(&shard.server, &set, &req) {
            shard.stats().status_requests.inc();
            let bytes = if req.method == Method::Head {
                page.head_only()
            } else {
                page.into_bytes()
            };
            respond_and_close(&mut tcp, &bytes).await;
            return;
        }
    }
    let stream = match (kind, set.route(&req.path)) {
        (ListenerKind::Public, Some(s)) => s.clone(),
        _ => {
            shard.stats().not_found.inc();
            respond_and_close(&mut tcp, &http::not_found_response()).await;
            return;
        }
    };
    drop(set);
    let config = stream.config();
    let head = http::stream_head(req.minor_version, &config.content_type);
    if req.method == Method::Head {
        shard.stats().head_requests.inc();
        respond_and_close(&mut tcp, &head).await;
        return;
    }
    let max = shard.server.max_clients;
    if shard.server.clients.fetch_add(1, Ordering::AcqRel) >= max && max > 0 {
        shard.server.clients.fetch_sub(1, Ordering::AcqRel);
        shard.stats().rejected_full.inc();
        respond_and_close(&mut tcp, &http::unavailable_response()).await;
        return;
    }
    // Choose where the client starts before joining: joining wakes an idle
    // source (lazy start), which could publish and even finish its frames
    // before a later choice, and the client would miss them.
    let burst = config.burst_bytes.max(
        config
            .burst
            .map_or(0, |d| (stream.byte_rate() as f64 * d.as_secs_f64()) as u64),
    );
    let start = stream.start_frame_with_burst(burst);
    if !stream.try_join() {
        shard.server.clients.fetch_sub(1, Ordering::AcqRel);
        shard.stats().rejected_full.inc();
        respond_and_close(&mut tcp, &http::unavailable_response()).await;
        return;
    }
    let _ = sys::set_nodelay(tcp.as_raw_fd());
    let peer_text = || peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    log::info!("client {} {}", peer_text(), req.path);
    // Nothing of the request is needed from here on; free it now rather than
    // at the end of a connection that may last for days.
    drop(req);
    shard.stats().clients_started.inc();
    let cstats = &stream.client_stats[shard.id];
    cstats.clients_total.inc();
    let started = Instant::now();

    let live = Arc::new(ClientLive::new(stream.id, shard.id, peer, start));
    let registry = &shard.server.registries[shard.id];
    registry.insert(live.clone());
    let list = shard.wait_list(&stream);
    let mut sender = Sender::new(&stream, &config, tcp.as_raw_fd(), start, live.clone());
    let head_written = tcp.write_all(&head).await.is_ok();
    drop(head);
    let reason = if !head_written {
        "gone".to_string()
    } else {
        deliver(&shard, &stream, &list, &mut tcp, &mut sender).await
    };
    // End the response cleanly (FIN after whole frames), then close.
    let _ = tcp.shutdown(std::net::Shutdown::Write).await;
    drop(tcp);

    registry.remove(live.id);
    drop(list);
    stream.client_left();
    cstats.clients_ended.inc();
    shard.stats().clients_ended.inc();
    if shard.server.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
        shard.server.main_wake.signal();
    }
    log::info!(
        "client {} -- {:.3}s elapsed {} bytes {} frames + {} skipped reason={reason}",
        peer_text(),
        started.elapsed().as_secs_f64(),
        sender.bytes_sent,
        sender.frames_sent,
        sender.frames_skipped,
    );
}

/// The delivery loop of one client. Returns why it ended.
async fn deliver(
    shard: &Shard,
    stream: &Stream,
    list: &WaitList,
    tcp: &mut TcpStream,
    sender: &mut Sender,
) -> String {
    let stats = &stream.client_stats[shard.id];
    let mut junk = [0u8; 64];
    let mut extra_input: u64 = 0;
    loop {
        // The scratch borrow ends with this statement: try_send never awaits.
        let step = sender.try_send(stream, stats, &mut shard.scratch.borrow_mut());
        match step {
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
                let next = sender.next;
                let wait = list.frames.wait_until(|| {
                    shard.stopping.get() || stream.ring.head() > next || stream.ended()
                });
                let read = future::or(
                    async {
                        wait.await;
                        None
                    },
                    async { Some(tcp.read(&mut junk).await) },
                )
                .await;
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
                let written = future::or(
                    async { Some(tcp.write(sender.blocked_bytes()).await) },
                    async {
                        shard.stopped().await;
                        None
                    },
                )
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
    // The head is read into a heap buffer that lives only until it is
    // parsed: nothing of it stays in the connection's (long-lived) task.
    let mut buf: Vec<u8> = Vec::new();
    let reading = async {
        loop {
            let have = buf.len();
            buf.resize((have + 1024).min(http::MAX_REQUEST_BYTES + 1024), 0);
            let n = match tcp.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return ReadOutcome::Closed,
                Ok(n) => n,
            };
            buf.truncate(have + n);
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
    // Stopping: a request already on its way gets a short grace (closing a
    // socket with unread data would reset it).
    let outcome = future::or(timed, async {
        shard.stopped().await;
        glommio::timer::sleep(STOP_REQUEST_GRACE).await;
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
