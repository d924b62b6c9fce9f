//! A shard: one glommio executor pinned to one core, with its own listen socket
//! (SO_REUSEPORT), its own listeners and its own counters.
//!
//! Tasks on a shard:
//! - the **accept loop** takes connections from this shard's listen socket and
//!   spawns one short task per connection;
//! - a **request task** reads the request (size limit, header deadline),
//!   answers status pages and errors itself, and hands a listener over to the
//!   engine: from then on the listener is a record in the shard's table, not a
//!   task;
//! - the **engine loop** sleeps on the shard's [`Bell`] — rung by source
//!   threads after they publish frames and by the shard's readiness thread
//!   when a listener's socket has room or input — and on the engine's next
//!   deadline (gathering), then runs [`Engine::tick`]. A short guard timer
//!   covers a lost wake-up. Nothing spins: an idle shard sleeps in io_uring.
//!
//! Nothing about a listener is shared with another shard.

use std::cell::{Cell, RefCell};
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

use crate::admin;
use crate::config::{Role, SourceSpec};
use crate::credentials;
use crate::engine::{Engine, Flush, Joining};
use crate::http::{self, Method, Parse, RequestError};
use crate::ingest;
use crate::listener::ListenerRow;
use crate::listener::Wire;
use crate::shared::ServerShared;
use crate::stats::ShardStats;
use crate::status;
use crate::stream::{Bell, Stream};
use crate::sys;
use crate::wait::WaitSet;
use crate::websocket;

/// How long a client has to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Guard against a lost wake-up: the engine looks at the rings this often
/// even without a bell.
const GUARD_INTERVAL: Duration = Duration::from_millis(250);
/// How long a stopping shard waits for its listeners' responses to end.
const STOP_GRACE: Duration = Duration::from_millis(700);
/// How long a stopping shard still waits for a request head that is on its
/// way.
const STOP_REQUEST_GRACE: Duration = Duration::from_millis(200);
/// How long a `/status/clients` request waits for the other shards' rows.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// What a listen socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Streams (and status pages unless an admin address is configured).
    Public,
    /// Status pages only.
    Admin,
}

/// One shard's local state (lives on its executor only).
struct Shard {
    id: usize,
    server: Arc<ServerShared>,
    /// The listener table.
    engine: RefCell<Engine>,
    /// Set when the shard is stopping.
    stopping: Cell<bool>,
    /// Tasks that wait for `stopping` (the accept loops, request reads): one
    /// registration per wait in progress.
    stop_waiters: WaitSet,
}

impl Shard {
    fn stats(&self) -> &ShardStats {
        &self.server.shard_stats[self.id]
    }

    fn stop(&self) {
        self.stopping.set(true);
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
pub async fn run(
    id: usize,
    listeners: Vec<(OwnedFd, ListenerKind)>,
    server: Arc<ServerShared>,
    flush: Flush,
) {
    let engine = match Engine::new(id, server.clone(), flush) {
        Ok(e) => e,
        Err(e) => {
            // Startup waits for every shard and reports the one missing.
            log::error!("shard {id} cannot set up its listener table: {e}");
            return;
        }
    };
    let shard = Rc::new(Shard {
        id,
        server,
        engine: RefCell::new(engine),
        stopping: Cell::new(false),
        stop_waiters: WaitSet::new(),
    });
    let driving = glommio::spawn_local(drive(shard.clone()));
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
    driving.await;
}

/// The engine loop: tick when rung or due, until stopped and empty.
async fn drive(shard: Rc<Shard>) {
    let bell = &shard.server.bells[shard.id];
    let mut stop_by: Option<Instant> = None;
    loop {
        if stop_by.is_none() && shard.server.shutdown.load(Ordering::Acquire) {
            let by = Instant::now() + STOP_GRACE;
            stop_by = Some(by);
            shard.stop();
            shard.engine.borrow_mut().stop(by);
        }
        let next = shard.engine.borrow_mut().tick(Instant::now());
        if let Some(by) = stop_by {
            if shard.engine.borrow().is_empty() || Instant::now() >= by + GUARD_INTERVAL {
                return;
            }
        }
        let now = Instant::now();
        let wait = next
            .map_or(GUARD_INTERVAL, |t| t.saturating_duration_since(now))
            .min(GUARD_INTERVAL)
            .min(if stop_by.is_some() {
                Duration::from_millis(20)
            } else {
                GUARD_INTERVAL
            });
        if wait.is_zero() {
            glommio::yield_if_needed().await;
            continue;
        }
        future::or(BellWait { bell }, async {
            glommio::timer::sleep(wait).await;
            false
        })
        .await;
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
                glommio::spawn_local(request(shard.clone(), tcp, kind)).detach();
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
                glommio::spawn_local(request(shard.clone(), tcp, kind)).detach();
            }
            _ => break,
        }
    }
}

/// Serve one connection's request; a stream request becomes a listener in
/// the engine's table, a source request an encoder feeding its mount.
async fn request(shard: Rc<Shard>, mut tcp: TcpStream, kind: ListenerKind) {
    let peer = tcp.peer_addr().ok();
    let (req, rest) = match read_request(&shard, &mut tcp).await {
        Some(r) => r,
        None => return,
    };
    if req.method == Method::Options && req.path == "*" {
        // libshout's default TLS mode first asks `OPTIONS *` with `Upgrade:
        // TLS/1.0`; Icecast closes without an answer and libshout goes on
        // in plain HTTP on a new connection. A 404 made it give up.
        log::debug!("OPTIONS * (a TLS upgrade probe) closed unanswered");
        let _ = tcp.shutdown(std::net::Shutdown::Both).await;
        return;
    }
    let set = shard.server.streams();
    if req.path == "/health" && matches!(req.method, Method::Get | Method::Head) {
        shard.stats().status_requests.inc();
        let page = status::health(&shard.server, &set);
        let bytes = page.into_response(req.method == Method::Head);
        respond_and_close(&mut tcp, &bytes).await;
        return;
    }
    if admin::is_admin_path(&req.path) && matches!(req.method, Method::Get | Method::Head) {
        let a = admin::answer_request(&shard.server, &set, &req).await;
        if req.path.starts_with("/admin/metadata") || req.path == "/admin.cgi" {
            if a.ok {
                shard.stats().title_updates.inc();
            }
        } else {
            shard.stats().status_requests.inc();
        }
        respond_and_close(&mut tcp, &a.bytes).await;
        return;
    }
    let status_here = kind == ListenerKind::Admin || !shard.server.admin_separate;
    if status_here && status::is_status_path(&set, &req.path) {
        let rows = if status::needs_rows(&req.path) {
            gather_rows(&shard).await
        } else {
            Vec::new()
        };
        let began = sys::thread_cpu_time();
        if let Some(page) = status::page(&shard.server, &set, &req, &rows) {
            shard.stats().status_requests.inc();
            let bytes = page.into_response(req.method == Method::Head);
            drop(rows);
            shard
                .stats()
                .status_cpu_us
                .add(sys::thread_cpu_time().saturating_sub(began).as_micros() as u64);
            respond_and_close(&mut tcp, &bytes).await;
            return;
        }
    }
    if req.path.starts_with("/admin/") && set.by_mount(&req.path).is_none() {
        // An admin command ringcast does not have: 400, as Icecast answers.
        // libshout's TLS probe (`GET /admin/!POKE` after `OPTIONS *`) takes
        // that for "plain HTTP here" and goes on; a 404 made it give up.
        shard.stats().bad_requests.inc();
        let r = http::simple_response(400, "Bad Request", "", "unrecognised admin command\n");
        respond_and_close(&mut tcp, &r).await;
        return;
    }
    let peer = peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    // The seed-004 channel scheme: /CHANNEL/KEY/publish | receive | probe.
    let mut no_burst = false;
    let channel =
        if kind == ListenerKind::Public && set.route(&req.path).is_none_or(|s| s.mount.is_none()) {
            websocket::parse_channel_path(&req.path)
        } else {
            None
        };
    let home = match channel {
        Some(Err(why)) => {
            shard.stats().bad_requests.inc();
            let r = http::simple_response(400, "Bad Request", "", &format!("{why}\n"));
            respond_and_close(&mut tcp, &r).await;
            return;
        }
        Some(Ok(cp)) => {
            drop(set);
            match channel_request(&shard, &mut tcp, &req, cp, peer).await {
                ChannelNext::Done => return,
                ChannelNext::Listen(s, clear) => {
                    no_burst = clear;
                    let set = shard.server.streams();
                    serve_listener(&shard, tcp, req, s, set, peer, no_burst).await;
                    return;
                }
            }
        }
        None => match (kind, set.route(&req.path)) {
            (ListenerKind::Public, Some(s)) => s.clone(),
            _ => {
                shard.stats().not_found.inc();
                respond_and_close(&mut tcp, &http::not_found_response()).await;
                return;
            }
        },
    };
    match req.method {
        Method::Put | Method::Source => {
            drop(set);
            push_source(&shard, tcp, req, rest, &home, peer).await;
            return;
        }
        Method::Options => {
            // A CORS preflight for a stream.
            shard.stats().preflights.inc();
            let origin = home.config().cors_origin.clone();
            let bytes = match origin {
                Some(o) => http::preflight_response(&o),
                None => http::error_response(RequestError::MethodNotAllowed),
            };
            respond_and_close(&mut tcp, &bytes).await;
            return;
        }
        Method::Get | Method::Head => {}
    }
    serve_listener(&shard, tcp, req, home, set, peer, no_burst).await;
}

/// A listener's request for `home`: answered, and the listener handed to
/// the engine.
async fn serve_listener(
    shard: &Shard,
    mut tcp: TcpStream,
    req: http::Request,
    home: Arc<Stream>,
    set: Arc<crate::stream::StreamSet>,
    peer: std::net::SocketAddr,
    no_burst: bool,
) {
    // Where the listener is served: the mount, or the first stream of its
    // fallback chain that delivers; a push or relay mount without its source
    // and no fallback answers 404.
    let Some(stream) = set.target_for(&home) else {
        shard.stats().not_found.inc();
        respond_and_close(&mut tcp, &http::not_live_response()).await;
        return;
    };
    drop(set);
    let config = home.config();
    // How the listener speaks: WebSocket, HTTP with ICY titles, plain HTTP.
    let ws = websocket::wants_upgrade(&req);
    let icy = !ws
        && config.framer != crate::config::FramerKind::Ogg
        && config.icy_metaint > 0
        && req
            .header("icy-metadata")
            .is_some_and(|v| v.trim().parse::<u64>().is_ok_and(|n| n > 0));
    let info = home.info();
    let (head, wire) = if ws {
        match websocket::check_handshake(&req) {
            Ok(accept) => {
                shard.stats().ws_upgrades.inc();
                (websocket::switching_head(&accept, ""), Wire::WebSocket)
            }
            Err(e) => {
                shard.stats().ws_bad_handshakes.inc();
                log::warn!("websocket handshake refused from={peer}: {}", e.name());
                respond_and_close(&mut tcp, &websocket::refusal(e)).await;
                return;
            }
        }
    } else {
        let extras = http::HeadExtras {
            metaint: icy.then_some(config.icy_metaint),
            info: Some(&info),
            cors_origin: config.cors_origin.as_deref(),
            extra: &config.extra_headers,
        };
        let wire = if icy {
            Wire::Icy(config.icy_metaint)
        } else {
            Wire::Http
        };
        (
            http::stream_head_with(req.minor_version, &config.content_type, &extras),
            wire,
        )
    };
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
    // Choose where the listener starts before joining: joining wakes an idle
    // source (lazy start), which could publish and even finish its frames
    // before a later choice, and the listener would miss them.
    let sconfig = stream.config();
    let burst = if no_burst { 0 } else { sconfig.burst_bytes }.max(
        sconfig
            .burst
            .filter(|_| !no_burst)
            .map_or(0, |d| (stream.byte_rate() as f64 * d.as_secs_f64()) as u64),
    );
    let start = stream.start_frame_with_burst(burst);
    if !stream.try_join() {
        shard.server.clients.fetch_sub(1, Ordering::AcqRel);
        shard.stats().rejected_full.inc();
        respond_and_close(&mut tcp, &http::unavailable_response()).await;
        return;
    }
    // The listener's socket leaves glommio here: the engine keeps its own
    // descriptor (a duplicate), and the glommio stream closes the original.
    let fd = match sys::dup(tcp.as_raw_fd()) {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("cannot take over a listener socket: {e}");
            stream.client_left();
            if shard.server.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
                shard.server.main_wake.signal();
            }
            shard.stats().rejected_full.inc();
            respond_and_close(&mut tcp, &http::unavailable_response()).await;
            return;
        }
    };
    drop(tcp);
    let _ = sys::set_nodelay(fd.as_raw_fd());
    if stream.id == home.id {
        log::info!("client {peer} {}", req.path);
    } else {
        log::info!("client {peer} {} on fallback={}", req.path, stream.name);
    }
    drop(req);
    shard.stats().clients_started.inc();
    stream.client_stats[shard.id].clients_total.inc();
    shard.engine.borrow_mut().join(
        &stream,
        Joining {
            home: home.id,
            fd,
            peer,
            start,
            head,
            wire,
        },
    );
}

/// What a channel request leads to.
enum ChannelNext {
    /// Answered.
    Done,
    /// A receiver of this channel's stream (`true`: `receive-clear-cache`,
    /// no burst of cached frames).
    Listen(Arc<Stream>, bool),
}

/// `/CHANNEL/KEY/publish | receive | receive-clear-cache | probe`.
async fn channel_request(
    shard: &Shard,
    tcp: &mut TcpStream,
    req: &http::Request,
    cp: websocket::ChannelPath,
    peer: std::net::SocketAddr,
) -> ChannelNext {
    let server = &shard.server;
    let (name, key) = match &cp {
        websocket::ChannelPath::Publish { channel, key }
        | websocket::ChannelPath::Receive { channel, key, .. }
        | websocket::ChannelPath::Probe { channel, key } => (channel.clone(), key.clone()),
    };
    if !server.channels_enabled() {
        shard.stats().not_found.inc();
        respond_and_close(tcp, &http::not_found_response()).await;
        return ChannelNext::Done;
    }
    if !server.channel_key_ok(&key) {
        shard.stats().channel_refusals.inc();
        log::warn!("channel {name}: wrong key from={peer}");
        let r = http::simple_response(403, "Forbidden", "", "wrong key\n");
        respond_and_close(tcp, &r).await;
        return ChannelNext::Done;
    }
    let mount = crate::server::channel_mount(&name);
    let find = || server.streams().by_mount(&mount).cloned();
    match cp {
        websocket::ChannelPath::Probe { .. } => {
            let s = find();
            let body = serde_json::json!({
                "channel": name,
                "live": s.as_ref().is_some_and(|s| s.push_claimed()),
                "receivers": s.as_ref().map_or(0, |s| s.clients()),
            })
            .to_string();
            let bytes = match websocket::check_handshake(req) {
                Ok(accept) => {
                    let mut b = websocket::switching_head(&accept, "");
                    b.extend_from_slice(&websocket::frame(websocket::op::TEXT, body.as_bytes()));
                    b.extend_from_slice(&websocket::close_frame(1000));
                    b
                }
                Err(_) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            };
            respond_and_close(tcp, &bytes).await;
            ChannelNext::Done
        }
        websocket::ChannelPath::Receive { clear_cache, .. } => match find() {
            Some(s) if s.push_claimed() || s.since_last_frame().is_some() => {
                ChannelNext::Listen(s, clear_cache)
            }
            _ => {
                shard.stats().not_found.inc();
                respond_and_close(tcp, &http::not_live_response()).await;
                ChannelNext::Done
            }
        },
        websocket::ChannelPath::Publish { .. } => {
            let accept = match websocket::check_handshake(req) {
                Ok(a) => a,
                Err(e) => {
                    shard.stats().ws_bad_handshakes.inc();
                    log::warn!("websocket handshake refused from={peer}: {}", e.name());
                    respond_and_close(tcp, &websocket::refusal(e)).await;
                    return ChannelNext::Done;
                }
            };
            // The main thread opens the channel (its ring is mapped then).
            let mut stream = find();
            if stream.is_none() {
                let answer = crate::shared::Answer::default();
                server.ask_main(crate::shared::MainRequest::OpenChannel {
                    name: name.clone(),
                    answer: answer.clone(),
                });
                // The main thread answers at once (a refusal, or the
                // channel in the stream set); the deadline only guards
                // against a main thread that is gone.
                let until = Instant::now() + Duration::from_secs(10);
                while stream.is_none()
                    && answer.load(Ordering::Acquire) != crate::shared::REFUSED
                    && Instant::now() < until
                {
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                    stream = find();
                }
            }
            let Some(stream) = stream else {
                shard.stats().channel_refusals.inc();
                let r = http::simple_response(
                    503,
                    "Service Unavailable",
                    "",
                    "no room for another channel\n",
                );
                respond_and_close(tcp, &r).await;
                return ChannelNext::Done;
            };
            if !stream.claim_push() {
                shard.stats().sources_refused.inc();
                respond_and_close(tcp, &ingest::Refusal::InUse.response()).await;
                return ChannelNext::Done;
            }
            let head = websocket::switching_head(&accept, "");
            let Some(fd) = answer_and_hand_over(tcp, &head).await else {
                stream.release_push();
                return ChannelNext::Done;
            };
            shard.stats().ws_upgrades.inc();
            shard.stats().sources_accepted.inc();
            let content_type = stream.config().content_type.clone();
            stream.offer_push(ingest::PushConn {
                fd,
                leftover: Vec::new(),
                accepted: ingest::Accepted {
                    expect_continue: false,
                    chunked: false,
                    content_type,
                    info: Default::default(),
                    websocket: true,
                },
                peer,
                user: format!("channel:{name}"),
            });
            ChannelNext::Done
        }
    }
}

/// An encoder's request (`PUT` / `SOURCE`): check it as Icecast does, answer
/// it, and hand the socket to the mount's source thread.
async fn push_source(
    shard: &Shard,
    mut tcp: TcpStream,
    req: http::Request,
    rest: Vec<u8>,
    stream: &Arc<Stream>,
    peer: std::net::SocketAddr,
) {
    let config = stream.config();
    let refuse = |why: ingest::Refusal, user: &str| {
        if why == ingest::Refusal::Unauthorized {
            shard.stats().sources_unauthorized.inc();
        } else {
            shard.stats().sources_refused.inc();
        }
        log::warn!(
            "source refused stream={} from={peer} user={user:?} reason=\"{}\"",
            stream.name,
            why.name()
        );
        why.response()
    };
    if config.source != SourceSpec::Push || stream.mount.is_none() {
        respond_and_close(&mut tcp, &refuse(ingest::Refusal::NotPushMount, "")).await;
        return;
    }
    let mount = stream.mount.clone().unwrap_or_default();
    // Credentials first (libshout probes without them and needs the 401).
    let Some(presented) = req
        .header("authorization")
        .and_then(credentials::parse_basic)
    else {
        respond_and_close(&mut tcp, &refuse(ingest::Refusal::Unauthorized, "")).await;
        return;
    };
    let store = shard.server.credentials();
    let verdict = store
        .check(&presented, Role::Source, &mount)
        .verdict()
        .await;
    if verdict != credentials::Verdict::Allowed {
        respond_and_close(
            &mut tcp,
            &refuse(ingest::Refusal::Unauthorized, &presented.user),
        )
        .await;
        return;
    }
    let accepted = match ingest::check(&req, config.framer) {
        Ok(a) => a,
        Err(why) => {
            respond_and_close(&mut tcp, &refuse(why, &presented.user)).await;
            return;
        }
    };
    if !stream.claim_push() {
        respond_and_close(&mut tcp, &refuse(ingest::Refusal::InUse, &presented.user)).await;
        return;
    }
    // The mount admits listeners from the claim on: they get this
    // encoder's icy-* headers from then on, not only once the source
    // thread takes the connection.
    stream.set_session_info(Some(accepted.info.clone()));
    // Accepted: answer, then the socket belongs to the source thread.
    let Some(fd) = answer_and_hand_over(&mut tcp, accepted.response()).await else {
        stream.set_session_info(None);
        stream.release_push();
        return;
    };
    drop(tcp);
    shard.stats().sources_accepted.inc();
    stream.offer_push(ingest::PushConn {
        fd,
        leftover: rest,
        accepted,
        peer,
        user: presented.user,
    });
}

/// Every shard's listener rows, for `/status/clients`: this shard's copied
/// at once, the others' asked for and waited for (each shard copies its own
/// table on its own thread).
async fn gather_rows(shard: &Shard) -> Vec<ListenerRow> {
    let server = &shard.server;
    let mut waiting: Vec<(usize, u64)> = Vec::new();
    for (i, slot) in server.snapshots.iter().enumerate() {
        if i != shard.id {
            waiting.push((i, slot.request()));
            server.bells[i].ring();
        }
    }
    let mut rows = shard.engine.borrow().rows();
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(
            |&(i, generation)| match server.snapshots[i].take_if(generation) {
                Some(r) => {
                    rows.extend(r.iter().cloned());
                    false
                }
                None => true,
            },
        );
        if !waiting.is_empty() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
    rows
}

/// How reading a request head ended.
enum ReadOutcome {
    /// The head, and the bytes read after it (a source's first body bytes).
    Request(http::Request, Vec<u8>),
    Refused(RequestError),
    TimedOut,
    Closed,
}

/// Read the request head within the header timeout and size limit; answer
/// errors itself. `None` means the connection is done.
async fn read_request(shard: &Shard, tcp: &mut TcpStream) -> Option<(http::Request, Vec<u8>)> {
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
                Ok(Parse::Complete(req)) => {
                    let rest = buf[req.head_len.min(buf.len())..].to_vec();
                    return ReadOutcome::Request(req, rest);
                }
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
        ReadOutcome::Request(req, rest) => Some((req, rest)),
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

/// Write `answer` (bounded in time) and hand the socket over: a duplicate
/// of its descriptor, for a source thread. `None` when the client is gone.
async fn answer_and_hand_over(tcp: &mut TcpStream, answer: &[u8]) -> Option<OwnedFd> {
    let answered = future::or(async { tcp.write_all(answer).await.is_ok() }, async {
        glommio::timer::sleep(Duration::from_secs(5)).await;
        false
    })
    .await;
    if answered {
        sys::dup(tcp.as_raw_fd()).ok()
    } else {
        None
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
