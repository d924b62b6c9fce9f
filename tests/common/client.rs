//! One HTTP client on a real socket: the response head, then body bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use super::streams::check_raw_frame;
use super::WAIT;

/// One HTTP client on a real socket: the response head, then body bytes.
pub struct Client {
    pub stream: TcpStream,
    /// The response head, up to and including the blank line.
    pub head: String,
    /// Body bytes read together with the head and not yet handed out.
    pending: Vec<u8>,
    /// True once the server closed the connection.
    pub eof: bool,
}

impl Client {
    /// Connect, send `request`, read the head.
    pub fn request(addr: SocketAddr, request: &str) -> Client {
        let mut c = Client::send_raw(addr, request.as_bytes());
        c.read_head(WAIT);
        c
    }

    /// Connect and send `bytes`; do not read anything. A failed write is
    /// ignored: a server may answer and close before it has read everything
    /// (an oversized head); what it answers is what the test looks at.
    pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        let _ = stream.write_all(bytes);
        Client {
            stream,
            head: String::new(),
            pending: Vec::new(),
            eof: false,
        }
    }

    /// The client's own address (the server logs it as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Read one chunk with the deadline; 0 means EOF. Panics at the deadline.
    fn read_some(&mut self, buf: &mut [u8], deadline: Instant, what: &str) -> usize {
        loop {
            let now = Instant::now();
            assert!(now < deadline, "timed out reading {what}");
            let left = (deadline - now)
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(buf) {
                Ok(n) => return n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                // A reset after the server closed with unread input: EOF.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return 0,
                Err(e) => panic!("reading {what}: {e}"),
            }
        }
    }

    /// Read the response head (panics at the deadline or on EOF before it).
    pub fn read_head(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.head = String::from_utf8_lossy(&buf[..i + 4]).into_owned();
                self.pending = buf[i + 4..].to_vec();
                return;
            }
            let n = self.read_some(&mut chunk, deadline, "the response head");
            if n == 0 {
                panic!(
                    "EOF before the end of the response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                );
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The status line of the head.
    pub fn status_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// The value of a response header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// Read exactly `n` body bytes within `timeout` (panics on EOF or at the
    /// deadline).
    pub fn read_body(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        let take = self.pending.len().min(n);
        out.extend(self.pending.drain(..take));
        while out.len() < n {
            let old = out.len();
            out.resize(n, 0);
            let got = self.read_some(&mut out[old..], deadline, "the body");
            out.truncate(old + got);
            if got == 0 {
                self.eof = true;
                panic!("EOF after {} of {n} body bytes", out.len());
            }
        }
        out
    }

    /// Read the body until the server closes the connection (panics at the
    /// deadline).
    pub fn read_to_eof(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.pending);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.read_some(&mut chunk, deadline, "the body until EOF");
            if n == 0 {
                self.eof = true;
                return out;
            }
            out.extend_from_slice(&chunk[..n]);
        }
    }

    /// Read whatever arrives until EOF or until `timeout` passes without the
    /// connection closing; returns the bytes and whether EOF was seen.
    pub fn read_until_eof_or(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let mut out = std::mem::take(&mut self.pending);
        let mut chunk = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            let left = (deadline - Instant::now()).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return (out, true);
                }
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    self.eof = true;
                    return (out, true);
                }
                Err(e) => panic!("reading: {e}"),
            }
        }
        (out, false)
    }

    /// Read one raw test frame of `size` bytes and check it; returns its
    /// number.
    pub fn read_raw_frame(&mut self, size: usize, timeout: Duration) -> u64 {
        let f = self.read_body(size, timeout);
        check_raw_frame(&f).unwrap_or_else(|e| panic!("bad frame: {e}"))
    }
}

/// A listener with a small receive buffer (`rcvbuf` bytes, set before it
/// connects, so the window is small from the start): connects to `addr`,
/// asks for `/` with HTTP/1.0 and returns the socket after checking that
/// the response head is a 200. Reads time out after [`WAIT`].
pub fn small_window_listener(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    let mut s = small_window_socket(addr, rcvbuf);
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).expect("response head");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.0 200"), "{head:?}");
    s
}

/// A TCP connection to `addr` (IPv4) whose receive buffer is `rcvbuf`
/// bytes, set before the connect so the window is small from the start.
pub fn small_window_socket(addr: SocketAddr, rcvbuf: i32) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr is built for AF_INET and passed with its size.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        fd
    };
    // SAFETY: `fd` is a connected socket nobody else owns.
    unsafe { TcpStream::from_raw_fd(fd) }
}

/// The token of an `Authorization: Basic` header for `user:password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}
