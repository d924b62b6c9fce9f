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

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::shard::{self, ServerShared};
use crate::source::{self, SourceContext};
use crate::stats::ShardStats;
use crate::stream::{Bell, SourceState, Stream};
use crate::sys::{self, EventFd};

/// io_uring buffer memory per executor. Small, so it fits the default 8 MiB
/// memlock limit of an unprivileged user with room to spare.
const IO_MEMORY: usize = 512 * 1024;
/// io_uring submission queue depth per executor.
const RING_DEPTH: usize = 1024;

/// A failure to start, naming the side that failed.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Run the server until it is stopped. Returns the process exit status.
pub fn run(config: Config) -> Result<i32, StartError> {
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

    // Listen sockets: the first binds what was asked (port 0 picks one), the
    // others bind the address it got, so all shards share one port.
    let first = sys::listen_reuseport(&config.listen[0], config.listen_backlog)
        .map_err(|e| StartError(format!("cannot listen on {}: {e}", config.listen[0])))?;
    let bound = sys::local_addr(first.as_raw_fd())
        .map_err(|e| StartError(format!("cannot read the bound address: {e}")))?;
    let mut listeners: Vec<OwnedFd> = vec![first];
    for _ in 1..shards {
        listeners.push(
            sys::listen_reuseport(&bound, config.listen_backlog)
                .map_err(|e| StartError(format!("cannot listen on {bound}: {e}")))?,
        );
    }
    log::info!("Listening at {bound}");

    if let Some(uid) = config.uid {
        sys::drop_privileges(uid).map_err(|e| StartError(format!("cannot switch to uid {uid}: {e}")))?;
        log::info!("running as uid={} after binding", sys::geteuid());
    }

    let main_wake = Arc::new(EventFd::new().map_err(|e| StartError(format!("eventfd: {e}")))?);
    let bells: Arc<[Bell]> = (0..shards).map(|_| Bell::default()).collect();
    let mut streams = Vec::new();
    for (i, sc) in config.streams.iter().enumerate() {
        let stream = Stream::new(i, sc.clone(), shards)
            .map_err(|e| StartError(format!("cannot map the ring of stream {i}: {e}")))?;
        streams.push(Arc::new(stream));
    }
    let shared = Arc::new(ServerShared {
        shutdown: AtomicBool::new(false),
        flush_interval: config.flush_interval,
        max_clients: config.max_clients,
        clients: AtomicUsize::new(0),
        bells: bells.clone(),
        shard_stats: (0..shards).map(|_| ShardStats::default()).collect(),
        streams: streams.clone(),
        main_wake: main_wake.clone(),
    });

    let mut source_threads = Vec::new();
    for stream in &streams {
        let ctx = SourceContext {
            stream: stream.clone(),
            bells: bells.clone(),
            core: source_core,
            stat_log_interval: config.stat_log_interval,
            ended: main_wake.clone(),
        };
        source_threads.push(source::spawn(ctx).map_err(|e| StartError(format!("cannot start a source thread: {e}")))?);
    }

    let mut executors = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let placement = match shard_cores[i] {
            Some(cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let shared = shared.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{i}"))
            .io_memory(IO_MEMORY)
            .ring_depth(RING_DEPTH)
            .spawn(move || shard::run(i, listener, shared))
            .map_err(|e| {
                StartError(format!(
                    "cannot start shard {i}: {e} (io_uring needs Linux >= 5.8 and a memlock limit of at least {} KiB; see tuning.md)",
                    IO_MEMORY / 1024 * 2
                ))
            })?;
        executors.push(handle);
    }

    wait_for_stop(&shared, &main_wake)?;

    // Stop: shards stop accepting and end their responses; sources stop.
    let stop_began = Instant::now();
    shared.shutdown.store(true, Ordering::Release);
    for bell in bells.iter() {
        bell.ring();
    }
    for stream in &streams {
        stream.request_stop();
    }
    for e in executors {
        if let Err(err) = e.join() {
            log::error!("shard ended with an error: {err}");
        }
    }
    // Give the sources a moment to end their commands politely; a command that
    // lingers is killed with its source thread (PR_SET_PDEATHSIG) at exit.
    let deadline = stop_began + Duration::from_millis(900);
    for t in source_threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    log::info!("stopped");
    Ok(0)
}

/// Block until SIGINT/SIGTERM, or until every stream has ended and every
/// client has left (streamserve's exit when `-reopen=false`).
fn wait_for_stop(shared: &ServerShared, main_wake: &EventFd) -> Result<(), StartError> {
    let (sig_read, sig_write) = UnixStream::pair().map_err(|e| StartError(format!("signal pipe: {e}")))?;
    sig_read
        .set_nonblocking(true)
        .map_err(|e| StartError(format!("signal pipe: {e}")))?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let w = sig_write.try_clone().map_err(|e| StartError(format!("signal pipe: {e}")))?;
        signal_hook::low_level::pipe::register(sig, w)
            .map_err(|e| StartError(format!("cannot handle signal {sig}: {e}")))?;
    }
    loop {
        let finished = shared.streams.iter().all(|s| s.state() == SourceState::Ended)
            && shared.clients.load(Ordering::Acquire) == 0;
        if finished {
            log::info!("all streams ended and no client left: exiting");
            return Ok(());
        }
        // Once a stream has ended, look again now and then: the last client of
        // a draining stream may leave on any shard.
        let any_ended = shared.streams.iter().any(|s| s.state() == SourceState::Ended);
        let timeout = any_ended.then(|| Duration::from_millis(100));
        let ready = sys::wait_readable(&[sig_read.as_raw_fd(), main_wake.raw()], timeout)
            .map_err(|e| StartError(format!("poll: {e}")))?;
        if ready[0] {
            log::info!("signal received: stopping");
            return Ok(());
        }
        if ready[1] {
            main_wake.drain();
        }
    }
}

/// Raise the open-file and memlock limits where allowed; say what could not be.
fn check_limits(config: &Config) {
    match sys::raise_nofile_limit() {
        Ok((soft, hard)) => {
            let want = if config.max_clients > 0 { config.max_clients as u64 + 64 } else { 1024 };
            if soft < want {
                log::warn!(
                    "open-file limit is {soft} (hard {hard}): at most about {} clients; raise it with `ulimit -n` or LimitNOFILE= (see tuning.md)",
                    soft.saturating_sub(64)
                );
            } else {
                log::info!("open-file limit {soft}: up to about {} clients", soft.saturating_sub(64));
            }
        }
        Err(e) => log::warn!("cannot read the open-file limit: {e}"),
    }
    match sys::raise_memlock_limit() {
        Ok((soft, _)) if soft < (IO_MEMORY as u64) * 2 * config.cpu_max as u64 + (1 << 20) => {
            log::warn!(
                "memlock limit is {} KiB: io_uring may fail to start; raise it (LimitMEMLOCK=, ulimit -l) — see tuning.md",
                soft / 1024
            );
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot read the memlock limit: {e}"),
    }
}
