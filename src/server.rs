//! The server: turn a validated [`Config`] into running shards and sources,
//! wait for a signal (or for a finished stream to drain), and stop cleanly.
//!
//! Order of start-up: raise limits → bind one SO_REUSEPORT listen socket per
//! shard (before dropping privileges, so port 80 works with `-uid`) → drop
//! privileges → map the rings → start the source threads (pinned to the source
//! core) → start one glommio executor per shard core.
//!
//! SIGINT / SIGTERM: stop accepting, end every response after whole frames,
//! stop the sources, exit 0 within about a second.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::SourceSpec;
use crate::config::{Config, StreamConfig};
use crate::destination::Pusher;
use crate::engine::Flush;
use crate::shard::{self, ListenerKind};
use crate::shared::{MainRequest, ServerShared, OPENED, REFUSED};
use crate::source::{self, SourceContext};
use crate::stream::{Bell, SourceState, Stream, StreamSet};
use crate::sys::{self, EventFd};

/// io_uring buffer memory per executor: glommio's minimum. It backs only
/// glommio's DMA file buffers, which ringcast does not use; glommio pins and
/// registers it, so each KiB here is a KiB of every shard's resident memory
/// (and of the memlock limit, 8 MiB for an unprivileged user here).
const IO_MEMORY: usize = 64 * 1024;
/// glommio refuses to start an executor below this memlock limit.
const GLOMMIO_MIN_MEMLOCK: u64 = 512 * 1024;

/// The memlock limit `shards` executors need, for a user without
/// CAP_IPC_LOCK: glommio's floor, or what the kernel charges, whichever is
/// more. Each executor has three io_uring rings; the kernel charges each
/// ring's memory (64-byte submission entries, twice as many 16-byte
/// completions, a 4-byte index each, a page of header) and each
/// registration of the io_memory. Measured on Linux 6.18 as an unprivileged
/// user: 2 shards fail at 1,024 KiB and start at 1,088 (this says 1,044).
fn memlock_needed(shards: usize) -> u64 {
    let ring = RING_DEPTH as u64 * (64 + 2 * 16 + 4) + 2 * 4096;
    let per_shard = 3 * (ring + IO_MEMORY as u64);
    GLOMMIO_MIN_MEMLOCK.max(per_shard * shards as u64)
}
/// io_uring submission queue depth per executor.
const RING_DEPTH: usize = 1024;
/// Exit status after a thread of the server panicked (EX_SOFTWARE): a
/// failure, so a service manager (`Restart=on-failure`) starts it again.
pub const EXIT_PANIC: i32 = 70;

/// Set by the panic hook: some thread of the server panicked, and the
/// process must not go on as a half-server (a shard that no longer accepts on
/// its listen socket, a stream whose source is gone). The main thread sees
/// it, stops everything and exits with [`EXIT_PANIC`].
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Log every panic at ERROR (with the thread: `shard-N`, `source-N`) and wake
/// the main thread, which stops the server and exits non-zero. The default
/// hook still prints the panic (and a backtrace with RUST_BACKTRACE).
fn install_panic_hook(main_wake: Arc<EventFd>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        log::error!(
            "thread {name} panicked at {place}: {what}; stopping, exit status {EXIT_PANIC} (a service manager restarts the server)"
        );
        PANICKED.store(true, Ordering::Release);
        main_wake.signal();
        default(info);
    }));
}

/// A failure to start, naming the side that failed.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// A stream being served and its source thread.
struct Running {
    stream: Arc<Stream>,
    thread: JoinHandle<()>,
    /// Where it comes from: the configuration, or made while running.
    origin: Origin,
}

/// Why a stream exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A `[[stream]]` (or the command line).
    Config,
    /// A WebSocket channel opened by its first publisher.
    Channel,
    /// A mount of the `[[mirror]]` with this index.
    Mirror(usize),
}

/// The mount of WebSocket channel `name`.
pub fn channel_mount(name: &str) -> String {
    format!("/channels/{name}")
}

/// A channel with no publisher and no listener this long is closed.
const CHANNEL_IDLE: Duration = Duration::from_secs(60);

/// What the main thread keeps to start, reload and stop streams.
struct Control {
    shared: Arc<ServerShared>,
    bells: Arc<[Bell]>,
    shards: usize,
    source_core: Option<core_affinity::CoreId>,
    stat_log_interval: Option<Duration>,
    main_wake: Arc<EventFd>,
    running: Vec<Running>,
    /// Source threads of streams that were removed, still finishing.
    retired: Vec<JoinHandle<()>>,
    config: Config,
}

impl Control {
    fn start_stream(&self, sc: StreamConfig) -> Result<Running, StartError> {
        let what = sc.mount.clone().unwrap_or_else(|| "stream".into());
        let stream = Arc::new(
            Stream::new(sc, self.shards)
                .map_err(|e| StartError(format!("cannot map the ring of stream {what}: {e}")))?,
        );
        let ctx = SourceContext {
            stream: stream.clone(),
            bells: self.bells.clone(),
            core: self.source_core,
            stat_log_interval: self.stat_log_interval,
            ended: self.main_wake.clone(),
            shared: Some(self.shared.clone()),
        };
        let thread = source::spawn(ctx)
            .map_err(|e| StartError(format!("cannot start the source thread of {what}: {e}")))?;
        crate::titles::spawn(stream.clone());
        // Push destinations: a thread each, ending with the stream (never
        // waited for at a stop: one may be blocked in a slow write).
        let mut statuses = Vec::new();
        for d in stream.config().destinations.clone() {
            match Pusher::start(stream.clone(), d) {
                Ok(p) => statuses.push(p.status),
                Err(e) => log::error!("stream={what}: cannot start a push destination: {e}"),
            }
        }
        if let Ok(mut ds) = stream.destinations.lock() {
            *ds = statuses;
        }
        Ok(Running {
            stream,
            thread,
            origin: Origin::Config,
        })
    }

    /// Make the shards see the current streams.
    fn publish(&self) {
        let version = self.shared.streams().version + 1;
        let set = Arc::new(StreamSet {
            version,
            streams: self.running.iter().map(|r| r.stream.clone()).collect(),
        });
        match self.shared.streams.write() {
            Ok(mut s) => *s = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
        for bell in self.bells.iter() {
            bell.ring();
        }
    }

    /// Do what shards and threads asked (see [`MainRequest`]).
    fn handle_requests(&mut self) {
        let requests = self.shared.take_requests();
        if requests.is_empty() {
            return;
        }
        let mut changed = false;
        let mut answers = Vec::new();
        for r in requests {
            match r {
                MainRequest::OpenChannel { name, answer } => {
                    changed |= self.open_channel(&name);
                    let mount = channel_mount(&name);
                    let open = self
                        .running
                        .iter()
                        .any(|r| r.stream.mount.as_deref() == Some(&mount));
                    answers.push((answer, if open { OPENED } else { REFUSED }));
                }
                MainRequest::MirrorMounts { index, mounts } => {
                    changed |= self.mirror_mounts(index, &mounts)
                }
            }
        }
        if changed {
            self.publish();
        }
        // After the publish: an opened channel is in the set shards read.
        for (answer, a) in answers {
            answer.store(a, Ordering::Release);
        }
    }

    fn open_channel(&mut self, name: &str) -> bool {
        let mount = channel_mount(name);
        if self
            .running
            .iter()
            .any(|r| r.stream.mount.as_deref() == Some(&mount))
        {
            return false;
        }
        let open = self
            .running
            .iter()
            .filter(|r| r.origin == Origin::Channel)
            .count();
        let channels = &self.config.channels;
        if open >= channels.max_channels {
            log::warn!(
                "channel {name} refused: {open} of {} channels are open",
                channels.max_channels
            );
            return false;
        }
        let mut sc = (*channels.template).clone();
        sc.mount = Some(mount);
        sc.source = SourceSpec::Push;
        match self.start_stream(sc) {
            Ok(mut r) => {
                r.origin = Origin::Channel;
                log::info!("channel {name} opened");
                self.running.push(r);
                true
            }
            Err(e) => {
                log::error!("channel {name}: {e}");
                false
            }
        }
    }

    /// Close channels nobody publishes to or listens to any more.
    fn close_idle_channels(&mut self) -> bool {
        let mut closed = false;
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.running) {
            let idle = r.origin == Origin::Channel
                && !r.stream.push_claimed()
                && r.stream.clients() == 0
                && r.stream.since_last_frame().is_none_or(|d| d > CHANNEL_IDLE)
                && r.stream.created.elapsed() > CHANNEL_IDLE;
            if idle {
                log::info!("channel {} closed (idle)", r.stream.name);
                r.stream.request_stop();
                self.retired.push(r.thread);
                closed = true;
            } else {
                keep.push(r);
            }
        }
        self.running = keep;
        closed
    }

    /// Mirror `index` lists `mounts`: relay new ones, end those gone.
    fn mirror_mounts(&mut self, index: usize, mounts: &[String]) -> bool {
        let Some(mirror) = self.config.mirrors.get(index).cloned() else {
            return false;
        };
        let mut changed = false;
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.running) {
            let gone = r.origin == Origin::Mirror(index)
                && !r.stream.mount.as_ref().is_some_and(|m| mounts.contains(m));
            if gone {
                log::info!(
                    "mirror {}: mount {} gone upstream",
                    mirror.origin,
                    r.stream.name
                );
                r.stream.request_stop();
                self.retired.push(r.thread);
                changed = true;
            } else {
                keep.push(r);
            }
        }
        self.running = keep;
        for m in mounts {
            if self
                .running
                .iter()
                .any(|r| r.stream.mount.as_ref() == Some(m))
            {
                continue;
            }
            if crate::config::RESERVED_PATHS.contains(&m.as_str()) || !m.starts_with('/') {
                continue;
            }
            let mut sc = (*mirror.template).clone();
            sc.mount = Some(m.clone());
            sc.source = SourceSpec::Relay(vec![crate::config::Upstream {
                url: format!("{}{}", mirror.origin.trim_end_matches('/'), m),
                user: mirror.user.clone(),
                password: mirror.password.clone(),
            }]);
            match self.start_stream(sc) {
                Ok(mut r) => {
                    r.origin = Origin::Mirror(index);
                    log::info!("mirror {}: relaying {m}", mirror.origin);
                    self.running.push(r);
                    changed = true;
                }
                Err(e) => log::error!("mirror {}: {m}: {e}", mirror.origin),
            }
        }
        changed
    }

    /// SIGHUP: re-read the configuration file and apply what changed.
    fn reload(&mut self) {
        let Some(path) = self.config.config_file.clone() else {
            log::warn!("SIGHUP ignored: no configuration file (started from the command line)");
            return;
        };
        let new = match crate::config::load_file(&path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload failed, nothing changed: {e}");
                return;
            }
        };
        let (mut added, mut removed, mut changed, mut replaced) = (0, 0, 0, 0);
        // Streams made while running (channels, mirrored mounts) are not the
        // file's to remove.
        let (dynamic, configured): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| r.origin != Origin::Config);
        let mut next: Vec<Running> = dynamic;
        let mut old: Vec<Running> = configured;
        for sc in &new.streams {
            match old.iter().position(|r| r.stream.mount == sc.mount) {
                Some(i) => {
                    let r = old.swap_remove(i);
                    if *r.stream.config() == *sc {
                        next.push(r);
                    } else if r.stream.can_reconfigure(sc) {
                        log::info!(
                            "reload: stream={} reconfigured, source restarts, clients stay",
                            r.stream.name
                        );
                        r.stream.reconfigure(sc.clone());
                        changed += 1;
                        next.push(r);
                    } else {
                        log::info!(
                            "reload: stream={} ring size changed, replacing it (its clients end and reconnect)",
                            r.stream.name
                        );
                        match self.start_stream(sc.clone()) {
                            Ok(n) => {
                                r.stream.request_stop();
                                self.retired.push(r.thread);
                                next.push(n);
                                replaced += 1;
                            }
                            Err(e) => {
                                log::error!("reload: {e}; keeping the old stream");
                                next.push(r);
                            }
                        }
                    }
                }
                None => match self.start_stream(sc.clone()) {
                    Ok(n) => {
                        log::info!("reload: stream={} added", n.stream.name);
                        next.push(n);
                        added += 1;
                    }
                    Err(e) => log::error!("reload: {e}"),
                },
            }
        }
        for r in old {
            log::info!("reload: stream={} removed, its clients end", r.stream.name);
            r.stream.request_stop();
            self.retired.push(r.thread);
            removed += 1;
        }
        self.running = next;
        self.publish();
        if new.log_level != self.config.log_level {
            log::set_max_level(new.log_level);
        }
        let restart_needed = new.listen != self.config.listen
            || new.admin_listen != self.config.admin_listen
            || new.cpu_max != self.config.cpu_max
            || new.flush_interval != self.config.flush_interval
            || new.listen_backlog != self.config.listen_backlog
            || new.max_clients != self.config.max_clients
            || new.uid != self.config.uid;
        if restart_needed {
            log::warn!("reload: listen addresses, cpu_max, flush_interval, listen_backlog, max_clients and uid take effect only after a restart");
        }
        let log_level = new.log_level;
        self.shared
            .set_access(new.users.clone(), new.health_mounts.clone());
        self.shared.set_channels(&new.channels);
        self.config.channels = new.channels.clone();
        self.config.users = new.users;
        self.config.health_mounts = new.health_mounts;
        self.config.streams = new.streams;
        self.config.log_level = log_level;
        self.retired.retain(|t| !t.is_finished());
        log::info!("reloaded {}: {added} added, {removed} removed, {changed} reconfigured, {replaced} replaced", path.display());
    }
}

/// Run the server until it is stopped. Returns the process exit status.
pub fn run(config: Config) -> Result<i32, StartError> {
    let (stop_signals, hup_signals) = signal_pipes()?;
    check_limits(&config);
    if sys::geteuid() == 0 && config.uid.is_none() {
        log::warn!(
            "running as root: prefer `setcap cap_net_bind_service=+ep` on the binary and an unprivileged user, or -uid to drop privileges after binding"
        );
    }

    // Cores: shards on the first `cpu_max` allowed cores, sources on the next
    // one (or the last, when every core has a shard).
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shards = config.cpu_max.max(1);
    let shard_cores: Vec<Option<usize>> = (0..shards).map(|i| cores.get(i).map(|c| c.id)).collect();
    let source_core = cores.get(shards).or_else(|| cores.last()).copied();

    // Listen sockets, one per shard and address: the first socket of an
    // address binds what was asked (port 0 picks one), the others bind the
    // address it got, so all shards share one port.
    let mut per_shard: Vec<Vec<(OwnedFd, ListenerKind)>> =
        (0..shards).map(|_| Vec::new()).collect();
    for addr in &config.listen {
        let bound = bind_all(
            addr,
            config.listen_backlog,
            &mut per_shard,
            ListenerKind::Public,
            shards,
        )?;
        crate::logger::announce(&format!("Listening at {bound}"));
    }
    if let Some(admin) = &config.admin_listen {
        // One admin socket is plenty: it serves a few status requests.
        let bound = bind_all(
            admin,
            config.listen_backlog.min(128),
            &mut per_shard,
            ListenerKind::Admin,
            1,
        )?;
        crate::logger::announce(&format!("Status pages at http://{bound}/status"));
    }

    if let Some(uid) = config.uid {
        sys::drop_privileges(uid)
            .map_err(|e| StartError(format!("cannot switch to uid {uid}: {e}")))?;
        log::info!("running as uid={} after binding", sys::geteuid());
    }

    let main_wake = Arc::new(EventFd::new().map_err(|e| StartError(format!("eventfd: {e}")))?);
    install_panic_hook(main_wake.clone());
    let shared = Arc::new(ServerShared::new(
        shards,
        config.flush_interval,
        config.max_clients,
        config.admin_listen.is_some(),
        main_wake.clone(),
    ));
    let bells = shared.bells.clone();
    shared.set_access(config.users.clone(), config.health_mounts.clone());
    shared.set_channels(&config.channels);
    let mut control = Control {
        shared: shared.clone(),
        bells: bells.clone(),
        shards,
        source_core,
        stat_log_interval: config.stat_log_interval,
        main_wake: main_wake.clone(),
        running: Vec::new(),
        retired: Vec::new(),
        config: config.clone(),
    };
    for sc in &config.streams {
        let r = control.start_stream(sc.clone())?;
        control.running.push(r);
    }
    control.publish();
    for (i, m) in config.mirrors.iter().enumerate() {
        if let Err(e) = crate::upstream::spawn_mirror(i, m.clone(), shared.clone()) {
            log::error!("mirror {}: cannot start: {e}", m.origin);
        }
    }

    // The listen descriptors, to shut them all down at the same moment when
    // stopping (they stay open until then: shards close them only after the
    // stop flag is set).
    let listen_fds: Vec<std::os::fd::RawFd> = per_shard
        .iter()
        .flatten()
        .map(|(fd, _)| fd.as_raw_fd())
        .collect();
    let mut executors = Vec::new();
    let failed_starts = Arc::new(AtomicUsize::new(0));
    for (i, listeners) in per_shard.into_iter().enumerate() {
        let placement = match shard_cores[i] {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let shared = shared.clone();
        let flush = match config.flush_interval {
            None => Flush::Adaptive,
            Some(d) => Flush::Fixed(d),
        };
        let start = StartGuard {
            failed: failed_starts.clone(),
            wake: main_wake.clone(),
            ran: false,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
            .spawn(move || {
                let mut start = start;
                start.ran = true;
                shard::run(i, listeners, shared, flush)
            })
            .map_err(|e| {
                StartError(format!(
                    "cannot start shard {i}: {e} (io_uring needs Linux >= 5.8 and a memlock limit of at least {} KiB; see tuning.md)",
                    memlock_needed(shards) / 1024
                ))
            })?;
        executors.push(handle);
    }

    // Every shard must come up (io_uring set up, memory locked); a server
    // with a dead shard would refuse connections while looking healthy.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while shared.shards_ready.load(Ordering::Acquire) < shards
        && Instant::now() < ready_by
        && failed_starts.load(Ordering::Acquire) == 0
        && !PANICKED.load(Ordering::Acquire)
    {
        let _ = sys::wait_readable(&[main_wake.raw()], Some(Duration::from_millis(50)));
        main_wake.drain();
    }
    if shared.shards_ready.load(Ordering::Acquire) < shards {
        shared.shutdown.store(true, Ordering::Release);
        for bell in bells.iter() {
            bell.ring();
        }
        for r in &control.running {
            r.stream.request_stop();
        }
        let mut errors = Vec::new();
        for (i, e) in executors.into_iter().enumerate() {
            if let Err(err) = e.join() {
                errors.push(format!("shard {i}: {err}"));
            }
        }
        return Err(StartError(format!(
            "a shard could not start ({}); io_uring needs Linux >= 5.8 and a memlock limit of at least {} KiB (ulimit -l, LimitMEMLOCK=; see tuning.md)",
            if errors.is_empty() { "timed out".to_string() } else { errors.join("; ") },
            memlock_needed(shards) / 1024
        )));
    }

    wait_for_stop(&mut control, stop_signals, hup_signals)?;
    let panicked = PANICKED.load(Ordering::Acquire);

    // Stop: first shut every listen socket down at once, so the kernel hands
    // new and queued connections to another process on the same port (a
    // graceful restart; with net.ipv4.tcp_migrate_req=1 even those already
    // queued move) rather than to a sibling shard that is about to close.
    // Then shards stop accepting and end their responses; sources stop.
    // The flag goes first, so a shard whose accept fails on the shut-down
    // socket knows it is the stop and not an error worth logging.
    shared.shutdown.store(true, Ordering::Release);
    for fd in &listen_fds {
        let _ = sys::shutdown_listener(*fd);
    }
    let stop_began = Instant::now();
    for bell in bells.iter() {
        bell.ring();
    }
    for r in &control.running {
        r.stream.request_stop();
    }
    for e in executors {
        if let Err(err) = e.join() {
            log::error!("shard ended with an error: {err}");
        }
    }
    // Give the sources a moment to end their commands politely; a command that
    // lingers is killed with its source thread (PR_SET_PDEATHSIG) at exit.
    let deadline = stop_began + Duration::from_millis(900);
    let threads = control
        .running
        .into_iter()
        .map(|r| r.thread)
        .chain(control.retired);
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    if panicked {
        log::error!("stopped after a panic: exit status {EXIT_PANIC}");
        return Ok(EXIT_PANIC);
    }
    log::info!("stopped");
    Ok(0)
}

/// Bind `addr` once per shard (for the first `count` shards) with
/// SO_REUSEPORT; returns the address actually bound.
fn bind_all(
    addr: &SocketAddr,
    backlog: u32,
    per_shard: &mut [Vec<(OwnedFd, ListenerKind)>],
    kind: ListenerKind,
    count: usize,
) -> Result<SocketAddr, StartError> {
    let first = sys::listen_reuseport(addr, backlog).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::EACCES) {
            " (ports below 1024 need root or `setcap cap_net_bind_service=+ep` on the binary)"
        } else {
            ""
        };
        StartError(format!("cannot listen on {addr}: {e}{hint}"))
    })?;
    let bound = sys::local_addr(first.as_raw_fd())
        .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
    per_shard[0].push((first, kind));
    for shard in per_shard.iter_mut().take(count).skip(1) {
        let fd = sys::listen_reuseport(&bound, backlog)
            .map_err(|e| StartError(format!("cannot listen on {bound}: {e}")))?;
        shard.push((fd, kind));
    }
    Ok(bound)
}

/// Block until SIGINT/SIGTERM, or until every stream has ended and every
/// client has left (streamserve's exit when `-reopen=false`). SIGHUP reloads
/// the configuration file.
/// Signals as readable pipes: (SIGINT/SIGTERM, SIGHUP). Registered first
/// thing, so a signal that comes while the server starts is not lost (and
/// does not kill the process with its default action).
fn signal_pipes() -> Result<(UnixStream, UnixStream), StartError> {
    let pipe = |sigs: &[libc::c_int]| -> Result<UnixStream, StartError> {
        let (read, write) =
            UnixStream::pair().map_err(|e| StartError(format!("signal pipe: {e}")))?;
        read.set_nonblocking(true)
            .map_err(|e| StartError(format!("signal pipe: {e}")))?;
        for &sig in sigs {
            let w = write
                .try_clone()
                .map_err(|e| StartError(format!("signal pipe: {e}")))?;
            signal_hook::low_level::pipe::register(sig, w)
                .map_err(|e| StartError(format!("cannot handle signal {sig}: {e}")))?;
        }
        Ok(read)
    };
    let stop = pipe(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    let hup = pipe(&[signal_hook::consts::SIGHUP])?;
    Ok((stop, hup))
}

fn wait_for_stop(
    control: &mut Control,
    stop: UnixStream,
    hup: UnixStream,
) -> Result<(), StartError> {
    let shared = control.shared.clone();
    loop {
        if PANICKED.load(Ordering::Acquire) {
            return Ok(());
        }
        // First what shards asked, also before this loop began (start-up
        // drains the wake-up they rang).
        control.handle_requests();
        let set = shared.streams();
        let finished = !set.streams.is_empty()
            && set.streams.iter().all(|s| s.state() == SourceState::Ended)
            && shared.clients.load(Ordering::Acquire) == 0;
        if finished {
            log::info!("all streams ended and no client left: exiting");
            return Ok(());
        }
        // Once a stream has ended, look again now and then: the last client of
        // a draining stream may leave on any shard.
        let any_ended = set.streams.iter().any(|s| s.state() == SourceState::Ended);
        let timeout = if any_ended || !control.retired.is_empty() {
            Some(Duration::from_millis(100))
        } else if control.config.channels.max_channels > 0 {
            // Idle channels are closed now and then.
            Some(Duration::from_secs(5))
        } else {
            None
        };
        drop(set);
        let ready = sys::wait_readable(
            &[stop.as_raw_fd(), hup.as_raw_fd(), control.main_wake.raw()],
            timeout,
        )
        .map_err(|e| StartError(format!("poll: {e}")))?;
        if ready[0] {
            log::info!("signal received: stopping");
            return Ok(());
        }
        if ready[1] {
            drain(&hup);
            log::info!("SIGHUP: reloading the configuration");
            control.reload();
        }
        if ready[2] {
            control.main_wake.drain();
        }
        if control.config.channels.max_channels > 0 && control.close_idle_channels() {
            control.publish();
        }
        control.retired.retain(|t| !t.is_finished());
    }
}

/// Empty a signal pipe.
fn drain(mut s: &UnixStream) {
    let mut buf = [0u8; 64];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// Dropped by a shard's thread with its start closure: without `ran`, the
/// executor never started (io_uring could not be set up), and the main
/// thread hears of it at once instead of at its start deadline.
struct StartGuard {
    failed: Arc<AtomicUsize>,
    wake: Arc<EventFd>,
    ran: bool,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        if !self.ran {
            self.failed.fetch_add(1, Ordering::AcqRel);
            self.wake.signal();
        }
    }
}

/// Raise the open-file and memlock limits where allowed; say what could not be.
fn check_limits(config: &Config) {
    if let Some(max) = sys::somaxconn() {
        if config.listen_backlog > max {
            log::warn!(
                "listen backlog {} is above net.core.somaxconn={max}: the kernel caps it at {max}; raise net.core.somaxconn (see tuning.md)",
                config.listen_backlog
            );
        }
    }
    match sys::raise_nofile_limit() {
        Ok((soft, hard)) => {
            let want = if config.max_clients > 0 {
                config.max_clients as u64 + 64
            } else {
                1024
            };
            if soft < want {
                log::warn!(
                    "open-file limit is {soft} (hard {hard}): at most about {} clients; raise it with `ulimit -n` or LimitNOFILE= (see tuning.md)",
                    soft.saturating_sub(64)
                );
            } else {
                log::info!(
                    "open-file limit {soft}: up to about {} clients",
                    soft.saturating_sub(64)
                );
            }
        }
        Err(e) => log::warn!("cannot read the open-file limit: {e}"),
    }
    match sys::raise_memlock_limit() {
        Ok((soft, _)) if soft < memlock_needed(config.cpu_max.max(1)) => {
            log::warn!(
                "memlock limit is {} KiB, below the {} KiB that {} shard(s) need: io_uring may fail to start; raise it (LimitMEMLOCK=, ulimit -l) — see tuning.md",
                soft / 1024,
                memlock_needed(config.cpu_max.max(1)) / 1024,
                config.cpu_max
            );
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot read the memlock limit: {e}"),
    }
}
