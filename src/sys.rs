//! Thin, checked wrappers around the Linux system calls ringcast needs that
//! std and glommio do not offer: a vectored non-blocking `sendmsg`, a listen
//! socket with our own backlog, resource limits, identity changes and a few
//! descriptor helpers.
//!
//! Most of the crate's `unsafe` lives here and in `ring.rs` (the rest: see
//! "Unsafe code" in `lib.rs`). Each block states why it is sound; callers only
//! see safe functions that return `io::Result`.

use std::ffi::CString;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// One piece of a vectored write: a pointer and a length.
///
/// This is `libc::iovec` under a name that does not leak libc into callers.
/// It holds a raw pointer, so building one is safe but the memory it names must
/// stay mapped for as long as it is passed to [`send_vectored`].
pub type IoSlice = libc::iovec;

/// Make an [`IoSlice`] for `len` bytes at `ptr`.
#[inline]
pub fn io_slice(ptr: *const u8, len: usize) -> IoSlice {
    libc::iovec {
        iov_base: ptr as *mut libc::c_void,
        iov_len: len,
    }
}

/// The result of one non-blocking vectored send.
#[derive(Debug)]
pub enum SendResult {
    /// This many bytes went into the socket buffer (maybe fewer than asked).
    Sent(usize),
    /// The socket buffer is full; nothing was sent.
    WouldBlock,
    /// The peer is gone or the socket failed.
    Failed(io::Error),
}

/// `sendmsg(fd, iov, MSG_DONTWAIT | MSG_NOSIGNAL)`.
///
/// # Safety
///
/// Every slice in `iov` must point to `iov_len` readable bytes that stay mapped
/// for the duration of the call. The bytes may be concurrently overwritten by
/// another thread (the ring writer): the kernel copies whatever it sees, and the
/// caller must validate the source afterwards (the seqlock check in
/// `client.rs`); no Rust reference to those bytes is created here.
pub unsafe fn send_vectored(fd: RawFd, iov: &[IoSlice]) -> SendResult {
    if iov.is_empty() {
        return SendResult::Sent(0);
    }
    // SAFETY: `msghdr` is a plain C struct for which all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` names `iov.len()` iovecs whose memory the caller guarantees
    // is mapped; the kernel only reads them. MSG_NOSIGNAL keeps a dead peer from
    // raising SIGPIPE, MSG_DONTWAIT keeps the call from blocking the shard.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n >= 0 {
        return SendResult::Sent(n as usize);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => SendResult::WouldBlock,
        Some(libc::EINTR) => SendResult::Sent(0),
        _ => SendResult::Failed(err),
    }
}

/// Check the result of a libc call that returns -1 on error.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` lives on the stack for the whole call and its size is
    // passed alongside; the kernel copies it.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Convert a `SocketAddr` into a `sockaddr_storage` and its length.
fn sockaddr_of(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and suitably aligned for
            // `sockaddr_in`.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for `sockaddr_in6`.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Create a TCP listen socket bound to `addr` with SO_REUSEADDR and
/// SO_REUSEPORT and the given backlog. Every shard gets its own socket on the
/// same address; the kernel spreads new connections over them. The socket is
/// left in blocking mode, as glommio expects.
pub fn listen_reuseport(addr: &SocketAddr, backlog: u32) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    if addr.is_ipv6() {
        // Listen on IPv6 only when asked for an IPv6 address; `:port` maps to
        // 0.0.0.0 and a separate `[::]:port` may be configured beside it.
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr_of(addr);
    // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) })?;
    let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: plain listen(2) on a socket we own.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(owned)
}

/// The local address a socket is bound to.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: all-zero is a valid `sockaddr_storage`.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` has room for any address; `len` tells the kernel so.
    cvt(unsafe { libc::getsockname(fd, &mut storage as *mut _ as *mut libc::sockaddr, &mut len) })?;
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a `sockaddr_in` for AF_INET.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read(&storage as *const _ as *const _) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a `sockaddr_in6` for AF_INET6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read(&storage as *const _ as *const _) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => Err(io::Error::other("unknown address family")),
    }
}

/// Set TCP_NODELAY so small frames go out at once (latency over packet count;
/// coalescing is done by the shard, not by Nagle).
pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Raise RLIMIT_NOFILE's soft limit to the hard limit. Returns (soft, hard)
/// after the change.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: all-zero is a valid `rlimit`; getrlimit writes it.
    let mut lim: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `lim` is a valid out-pointer.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid rlimit; raising soft up to hard is allowed
        // for any process.
        if cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) }).is_ok() {
            lim = want;
        }
    }
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// RLIMIT_MEMLOCK (soft, hard) in bytes; `u64::MAX` means unlimited.
pub fn memlock_limit() -> io::Result<(u64, u64)> {
    // SAFETY: as in `raise_nofile_limit`.
    let mut lim: libc::rlimit = unsafe { mem::zeroed() };
    // SAFETY: `lim` is a valid out-pointer.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) })?;
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Raise RLIMIT_MEMLOCK's soft limit to its hard limit (allowed to anyone).
pub fn raise_memlock_limit() -> io::Result<(u64, u64)> {
    let (soft, hard) = memlock_limit()?;
    if soft < hard {
        let want = libc::rlimit {
            rlim_cur: hard as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        // SAFETY: `want` is a valid rlimit; soft up to hard is always allowed.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &want) })?;
        return Ok((hard, hard));
    }
    Ok((soft, hard))
}

/// The effective user id of this process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Drop privileges to `uid` (and that user's primary group, when it has a
/// passwd entry): setgroups, setgid, then setuid, so the process can never
/// regain root.
pub fn drop_privileges(uid: u32) -> io::Result<()> {
    let gid = primary_gid(uid).unwrap_or(uid);
    // SAFETY: setgroups with one valid gid from the stack.
    cvt(unsafe { libc::setgroups(1, &gid) })?;
    // SAFETY: plain setgid/setuid calls; results checked.
    cvt(unsafe { libc::setgid(gid) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::setuid(uid) })?;
    Ok(())
}

/// The primary group of `uid` from the passwd database.
fn primary_gid(uid: u32) -> Option<u32> {
    // SAFETY: all-zero is a valid `passwd`; getpwuid_r fills it and points its
    // strings into `buf`, which outlives every use below.
    let mut pwd: libc::passwd = unsafe { mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some(pwd.pw_gid)
}

/// Resolve a user name to a uid with getpwnam_r (growing the buffer as the
/// C library asks). The error says why: no such user, or the lookup failed.
pub fn uid_by_name(name: &str) -> Result<u32, String> {
    let cname = CString::new(name).map_err(|_| "a user name cannot contain NUL".to_owned())?;
    // SAFETY: sysconf has no preconditions; -1 (no limit known) is handled.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut buf_len = usize::try_from(hint)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(1024);
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; buf_len];
        // SAFETY: `passwd` is a plain C struct of integers and pointers, for
        // which all-zero bytes (null pointers) are a valid value.
        let mut pwd: libc::passwd = unsafe { mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `cname` is a NUL-terminated string; `pwd`, `buf` (with its
        // true length) and `result` are valid for writes for the whole call
        // and outlive it. getpwnam_r stores only into them.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf_len < (1 << 20) {
            buf_len *= 2;
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up user: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Err("no such user".to_owned());
        }
        return Ok(pwd.pw_uid);
    }
}

/// True when `fd` is a terminal.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Number of open file descriptors of this process (entries in /proc/self/fd).
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1))
        .unwrap_or(0)
}

/// Wait until `fd` is readable or `timeout` passes. `None` waits forever.
/// Returns true when readable (or hung up / in error, so a read will not block).
pub fn wait_readable(fds: &[RawFd], timeout: Option<std::time::Duration>) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_millis().min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(vec![false; fds.len()]);
        }
        return Err(err);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// An eventfd used to wake a thread that sleeps in [`wait_readable`].
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2); result checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` is fresh and owned by nobody else.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the eventfd readable (wakes a waiter). Never blocks.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a stack value to our own eventfd. A full
        // counter (EAGAIN) still leaves it readable, which is all we need.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
    }

    /// Reset the eventfd to not readable.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a stack value from our own eventfd; a
        // non-readable eventfd returns EAGAIN, which is fine.
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }

    /// The descriptor, for `wait_readable`.
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Send `sig` to process `pid` (used to stop a source command). Errors such as
/// "no such process" are returned, not hidden.
pub fn kill(pid: u32, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) with a pid we spawned ourselves.
    cvt(unsafe { libc::kill(pid as libc::pid_t, sig) }).map(drop)
}

/// Ask the kernel to SIGKILL the calling process when its parent thread dies
/// (PR_SET_PDEATHSIG). Called in a spawned command's `pre_exec`, so a source
/// command never outlives a crashed server.
pub fn set_parent_death_signal() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; async-signal-safe, so it may
    // be called between fork and exec.
    cvt(unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Resident set size of this process in bytes, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// Put `fd` in non-blocking mode (source reads are driven by `poll`).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor the caller owns.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Mark every descriptor from `first` on close-on-exec. Called between
/// fork and exec: a command must not inherit listener sockets (glommio 0.9
/// accepts some connections without `SOCK_CLOEXEC`), or a finished
/// listener's connection stays open in the command and its FIN never comes.
/// `close_range(.., CLOSE_RANGE_CLOEXEC)` (Linux 5.11); before that, one
/// `fcntl` per descriptor up to the open-file limit.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with integer arguments; async-signal-safe.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; async-signal-safe.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    let last = lim.rlim_cur.min(1 << 20) as RawFd;
    for fd in first..last {
        // SAFETY: F_SETFD on a descriptor number; EBADF for one that is not
        // open is ignored. Async-signal-safe.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Prepare a command for the server: it gets SIGKILL if the thread that
/// started it dies (so a source command never outlives a crashed server),
/// and it inherits no descriptor but its standard input, output and error.
pub fn prepare_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // close_range/getrlimit/fcntl, which are async-signal-safe and allocate
    // nothing. (std's own error pipe is close-on-exec already.)
    unsafe {
        cmd.pre_exec(|| {
            set_parent_death_signal()?;
            cloexec_from(3)
        });
    }
}

/// Shut a listening socket down: the kernel stops queueing new connections
/// on it (with SO_REUSEPORT they go to the other sockets of the group; with
/// `net.ipv4.tcp_migrate_req=1` even half-open ones move), and a pending
/// `accept` returns what is already queued, then an error.
pub fn shutdown_listener(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) on a descriptor the caller owns; no memory passed.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_RDWR) }).map(drop)
}

/// `net.core.somaxconn`: the kernel caps every listen backlog at this.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The number of CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
pub fn cpus_online() -> usize {
    // SAFETY: sysconf only reads system information; it has no
    // preconditions and returns -1 on error, which is handled below.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n >= 1 {
        usize::try_from(n).unwrap_or(1)
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

// ---------------------------------------------------------------------------
// The listener table's system calls (epoll, descriptor handover, queue bounds)
// ---------------------------------------------------------------------------

/// Readiness a listener waits for (edge-triggered).
pub const EV_IN: u32 = libc::EPOLLIN as u32;
/// Room in the send queue.
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
/// The peer closed its side.
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Hang-up (always reported).
pub const EV_HUP: u32 = libc::EPOLLHUP as u32;
/// Error (always reported).
pub const EV_ERR: u32 = libc::EPOLLERR as u32;
/// Edge-triggered: report a change once.
pub const EV_ET: u32 = libc::EPOLLET as u32;
/// Report once, then stay disarmed until modified.
pub const EV_ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// One readiness event: the token it was registered with and what happened.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct EpollEvent(libc::epoll_event);

impl EpollEvent {
    /// An empty event (for the array `Epoll::wait` fills).
    pub const EMPTY: EpollEvent = EpollEvent(libc::epoll_event { events: 0, u64: 0 });

    /// What happened (`EV_*` bits).
    pub fn events(&self) -> u32 {
        self.0.events
    }

    /// The registration's token.
    pub fn token(&self) -> u64 {
        self.0.u64
    }
}

impl std::fmt::Debug for EpollEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (events, token) = (self.events(), self.token());
        write!(f, "EpollEvent({events:#x}, {token})")
    }
}

/// An epoll instance (close-on-exec).
#[derive(Debug)]
pub struct Epoll(OwnedFd);

impl Epoll {
    /// A new epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain epoll_create1(2); result checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is fresh and owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event on the stack; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    /// Watch `fd` for `events`, reporting `token`.
    pub fn add(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, token)
    }

    /// Change what `fd` is watched for (re-arms a one-shot registration; the
    /// kernel reports at once if the descriptor is ready now).
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, token)
    }

    /// Wait up to `timeout_ms` (-1: forever, 0: don't wait) for events; fills
    /// the front of `out` and returns how many. EINTR returns 0.
    pub fn wait(&self, out: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let max = out.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `EpollEvent` is a transparent wrapper of `epoll_event`, and
        // `out` has room for `max` of them.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                out.as_mut_ptr() as *mut libc::epoll_event,
                max,
                timeout_ms,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(err);
        }
        Ok(n as usize)
    }

    /// The descriptor (to nest this instance in another).
    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A close-on-exec duplicate of `fd` (a listener's socket taken over from
/// the glommio stream that read its request).
pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl F_DUPFD_CLOEXEC on a descriptor the caller holds open.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `new` is fresh and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// `TCP_NOTSENT_LOWAT`: the socket reports room (and accepts more) only
/// while fewer than `bytes` of its queue are still unsent.
pub fn set_notsent_lowat(fd: RawFd, bytes: u32) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NOTSENT_LOWAT,
        bytes.min(i32::MAX as u32) as libc::c_int,
    )
}

/// Bytes queued in the socket that the kernel has not sent yet
/// (`SIOCOUTQNSD`).
pub fn unsent_bytes(fd: RawFd) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int through the pointer.
    cvt(unsafe { libc::ioctl(fd, 0x894B, &mut n as *mut libc::c_int) })?;
    Ok(n.max(0) as u64)
}

/// A non-blocking `recv`: `Ok(0)` is end of stream; `WouldBlock` when
/// nothing is there.
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for `buf.len()` bytes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `shutdown(fd, SHUT_WR)`: end the response after what is queued (FIN).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) on a descriptor the caller owns.
    cvt(unsafe { libc::shutdown(fd, libc::SHUT_WR) }).map(drop)
}

/// CPU time the calling thread has used (user + system).
pub fn thread_cpu_time() -> std::time::Duration {
    // SAFETY: all-zero is a valid timespec; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: a valid clock id and a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Give memory that `free` kept back to the kernel (`malloc_trim(0)`: every
/// arena, including free pages in the middle of a heap). A join storm leaves
/// megabytes of freed request buffers and tasks in the shard's arena; the
/// shard calls this once the storm is over.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is
    // thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}
