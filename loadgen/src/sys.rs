//! Every `unsafe` call loadgen makes: epoll, non-blocking sockets, rlimits, rusage and
//! a SIGINT flag. Each wrapper takes or returns owned file descriptors and plain Rust
//! values, so the rest of the crate is safe code.
//!
//! INVARIANT: every raw fd passed to libc here is either owned by an [`OwnedFd`] that
//! outlives the call or is a standard stream (0, 1, 2) the process owns.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// An epoll instance.
pub struct Epoll {
    fd: OwnedFd,
}

/// Readiness bits used by the client engine.
pub const EV_IN: u32 = libc::EPOLLIN as u32;
/// Writable (a non-blocking connect finished).
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up.
pub const EV_ERR: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
/// The peer shut down its side.
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Edge-triggered.
pub const EV_ET: u32 = libc::EPOLLET as u32;

/// One readiness report: the registered token and the ready bits.
pub type Event = libc::epoll_event;

/// An empty event, for sizing the buffer `Epoll::wait` fills.
pub fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

impl Epoll {
    /// Creates an epoll instance (close-on-exec).
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we
        // own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Registers `fd` for `events`, reporting `token`.
    pub fn add(&self, fd: &OwnedFd, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: both fds are open (owned); ev is a valid epoll_event for the call.
        cvt(unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        })?;
        Ok(())
    }

    /// Waits up to `timeout_ms` (-1 = forever) and fills `events`; returns how many.
    pub fn wait(&self, events: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let max = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: `events` is valid for `max` writes of epoll_event.
        let r =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        match cvt(r) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }
}

fn sockaddr_v4(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn sockaddr_v6(a: &std::net::SocketAddrV6) -> libc::sockaddr_in6 {
    libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: a.port().to_be(),
        sin6_flowinfo: a.flowinfo(),
        sin6_addr: libc::in6_addr {
            s6_addr: a.ip().octets(),
        },
        sin6_scope_id: a.scope_id(),
    }
}

/// Opens a non-blocking TCP socket for `dst`, binds it to `src` (port chosen at connect
/// time, IP_BIND_ADDRESS_NO_PORT) when given, optionally sets SO_RCVBUF, and starts
/// connecting. Returns the socket and whether the connect already completed.
pub fn connect_nonblocking(
    dst: SocketAddr,
    src: Option<Ipv4Addr>,
    rcvbuf: Option<u32>,
) -> io::Result<(OwnedFd, bool)> {
    let domain = match dst {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket takes no pointers; a non-negative result is a new fd.
    let raw = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: raw is a fresh descriptor owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    if let Some(size) = rcvbuf {
        setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, size as libc::c_int)?;
    }
    if let (Some(ip), SocketAddr::V4(_)) = (src, dst) {
        // Best effort: without it bind() picks the port and 4-tuples cannot share it.
        let _ = setsockopt_int(&fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
        let sa = sockaddr_v4(ip, 0);
        // SAFETY: sa is a valid sockaddr_in and the length matches it.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
    }
    let r = match dst {
        SocketAddr::V4(a) => {
            let sa = sockaddr_v4(*a.ip(), a.port());
            // SAFETY: sa is a valid sockaddr_in and the length matches it.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = sockaddr_v6(&a);
            // SAFETY: sa is a valid sockaddr_in6 and the length matches it.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    match cvt(r) {
        Ok(_) => Ok((fd, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok((fd, false)),
        Err(e) => Err(e),
    }
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: &v is valid for size_of::<c_int>() bytes for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// The pending error of a socket (SO_ERROR): how a non-blocking connect ended.
pub fn socket_error(fd: &OwnedFd) -> io::Result<()> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are valid for writes of the sizes given.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut v as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    if v == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(v))
    }
}

/// `read(2)` into `buf`.
#[inline]
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    cvt_size(unsafe {
        libc::read(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    })
}

/// `recv(MSG_PEEK)`: copies waiting bytes without consuming them.
pub fn peek(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    cvt_size(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_PEEK,
        )
    })
}

/// `send(MSG_NOSIGNAL)`: a closed peer gives EPIPE, never SIGPIPE.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for buf.len() bytes of reads.
    cvt_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// Makes the next `close()` of `fd` abortive: SO_LINGER with a zero timeout, so the
/// kernel drops unsent data and sends a RST instead of a FIN.
pub fn set_linger_zero(fd: &OwnedFd) -> io::Result<()> {
    let v = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is open (owned); &v is valid for size_of::<linger>() bytes for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &v as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `shutdown(SHUT_WR)`: sends a FIN now, whatever is still unread.
pub fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers; fd is open (owned).
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

/// A writer on a raw fd the process owns (stdout for `loadgen source`): unbuffered, so
/// each frame is one `write(2)` and Rust's line-buffered stdout never splits it.
pub struct FdWriter(pub RawFd);

impl io::Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: self.0 is a descriptor the process owns (see INVARIANT); buf is
            // valid for buf.len() bytes of reads.
            let r = unsafe { libc::write(self.0, buf.as_ptr() as *const libc::c_void, buf.len()) };
            match cvt_size(r) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// RLIMIT_NOFILE as (soft, hard).
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut r = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: r is valid for one rlimit write; on success it is initialised.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, r.as_mut_ptr()) })?;
    // SAFETY: getrlimit succeeded, so r is initialised.
    let r = unsafe { r.assume_init() };
    Ok((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raises RLIMIT_NOFILE so that at least `need` descriptors can be open. Raises the hard
/// limit too when the process may (root). Returns the new soft limit, or an error
/// message naming the limits.
pub fn raise_nofile(need: u64) -> Result<u64, String> {
    let (soft, hard) = nofile_limit().map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
    if soft >= need {
        return Ok(soft);
    }
    let set = |cur: u64, max: u64| -> io::Result<()> {
        let r = libc::rlimit {
            rlim_cur: cur as libc::rlim_t,
            rlim_max: max as libc::rlim_t,
        };
        // SAFETY: r is a valid rlimit for the call.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) })?;
        Ok(())
    };
    if hard >= need {
        set(need, hard).map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {need}): {e}"))?;
        return Ok(need);
    }
    match set(need, need) {
        Ok(()) => Ok(need),
        Err(e) => Err(format!(
            "needs {need} open files but RLIMIT_NOFILE is soft {soft}, hard {hard}, and raising the hard limit failed ({e}): \
             raise it (ulimit -Hn {need}, LimitNOFILE= in systemd, /etc/security/limits.conf) or use fewer clients"
        )),
    }
}

/// The ephemeral port range (net.ipv4.ip_local_port_range), if readable.
pub fn local_port_range() -> Option<(u32, u32)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u32>());
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if b >= a => Some((a, b)),
        _ => None,
    }
}

/// This process's CPU use so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rusage {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// Peak resident set size in KiB.
    pub max_rss_kb: u64,
}

/// `getrusage(RUSAGE_SELF)`.
pub fn rusage() -> Rusage {
    let mut r = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: r is valid for one rusage write; zeroed memory is a valid rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, r.as_mut_ptr()) };
    // SAFETY: zeroed is a valid rusage whether or not the call wrote it.
    let r = unsafe { r.assume_init() };
    if rc != 0 {
        return Rusage::default();
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Rusage {
        user_s: tv(r.ru_utime),
        system_s: tv(r.ru_stime),
        max_rss_kb: r.ru_maxrss as u64,
    }
}

/// Set by the SIGINT/SIGTERM handler.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set a flag instead of killing the process, so a run stopped
/// early still prints its summary. Returns the flag.
pub fn install_stop_signals() -> &'static AtomicBool {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: on_stop_signal is an extern "C" fn that only stores to an atomic, which
        // is async-signal-safe.
        unsafe {
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
    &STOP
}
