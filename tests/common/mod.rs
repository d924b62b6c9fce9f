//! Shared helpers for the black-box tests: start the real `ringcast` binary on
//! `127.0.0.1:0`, find its port from the log, talk to it over real sockets,
//! wait on log lines, and generate deterministic test streams.
//!
//! Every wait here waits on a condition with a generous deadline (the tests
//! run on a loaded 2-core machine); nothing sleeps for correctness.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The default deadline for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringcast")
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// Every stderr line of a server, collected by a reader thread.
#[derive(Default)]
pub struct Logs {
    state: Mutex<LogState>,
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// True once stderr reached EOF (the process is gone).
    closed: bool,
}

impl Logs {
    fn push(&self, line: String) {
        let mut s = self.state.lock().unwrap();
        s.lines.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        let mut s = self.state.lock().unwrap();
        s.closed = true;
        self.changed.notify_all();
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state.lock().unwrap().lines.clone()
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.state
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Wait until at least `n` lines match `pred`; return the `n`th one, or
    /// `None` at the deadline (or when the process is gone without it).
    pub fn try_wait_nth(
        &self,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        loop {
            if let Some(l) = s.lines.iter().filter(|l| pred(l)).nth(n.saturating_sub(1)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return None;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }

    /// Wait for the first line matching `pred`.
    pub fn try_wait(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        self.try_wait_nth(1, pred, timeout)
    }

    /// Everything, for a failure message.
    pub fn dump(&self) -> String {
        self.lines().join("\n")
    }
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

/// A running `ringcast`; killed (and reaped) on drop. When a test panics, its
/// server's log is printed to help find out why.
pub struct Server {
    child: Option<Child>,
    status: Option<ExitStatus>,
    pub addr: SocketAddr,
    pub logs: Arc<Logs>,
}

/// Start `ringcast -address 127.0.0.1:0 -log-level info ARGS...` (stdin from
/// /dev/null) and wait for its `Listening at` line.
pub fn start(args: &[&str]) -> Server {
    start_with_env(args, &[])
}

/// [`start`] with extra environment variables.
pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut full: Vec<&str> = vec!["-address", "127.0.0.1:0", "-log-level", "info"];
    full.extend_from_slice(args);
    let mut child = Command::new(binary())
        .args(&full)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringcast");
    let logs = Arc::new(Logs::default());
    let stderr = child.stderr.take().unwrap();
    {
        let logs = logs.clone();
        std::thread::spawn(move || {
            let reader = BufReader::new(stderr);
            for line in reader.split(b'\n') {
                match line {
                    Ok(l) => logs.push(String::from_utf8_lossy(&l).into_owned()),
                    Err(_) => break,
                }
            }
            logs.close();
        });
    }
    let mut server = Server {
        child: Some(child),
        status: None,
        addr: "127.0.0.1:1".parse().unwrap(),
        logs,
    };
    let line = server
        .logs
        .try_wait(|l| l.contains("Listening at "), Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "ringcast {full:?} did not print `Listening at`; log:\n{}",
                server.logs.dump()
            )
        });
    let text = line.split("Listening at ").nth(1).unwrap().trim();
    server.addr = text
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
    assert_ne!(
        server.addr.port(),
        0,
        "the log must show the real port: {line}"
    );
    server
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("server already reaped")
    }

    /// Wait for the first log line matching `pred`; panic with the log at the
    /// deadline.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.logs.try_wait(pred, timeout).unwrap_or_else(|| {
            panic!(
                "no log line {what} within {timeout:?}; log:\n{}",
                self.logs.dump()
            )
        })
    }

    /// Wait until `n` log lines match `pred`; return the `n`th.
    pub fn wait_log_nth(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        self.logs.try_wait_nth(n, pred, timeout).unwrap_or_else(|| {
            panic!(
                "not {n} log lines {what} within {timeout:?}; log:\n{}",
                self.logs.dump()
            )
        })
    }

    /// The log line that ends the client whose socket is `local` (the
    /// server's peer), streamserve's `client ADDR -- ... skipped` line.
    pub fn wait_client_end(&self, local: SocketAddr, timeout: Duration) -> ClientEnd {
        let prefix = format!("client {local} -- ");
        let line = self.wait_log(&format!("`{prefix}...`"), |l| l.contains(&prefix), timeout);
        ClientEnd::parse(&line).unwrap_or_else(|| panic!("cannot parse client end line {line:?}"))
    }

    /// Whether the process is still running (reaping it if it exited).
    pub fn running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Wait for the process to exit; `None` at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Connect and send a GET; read the response head.
    pub fn get(&self) -> Client {
        Client::request(self.addr, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    }

    /// Connect and send `request` verbatim; read the response head.
    pub fn request(&self, request: &str) -> Client {
        Client::request(self.addr, request)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- ringcast log ----\n{}\n---- end of log ----",
                self.logs.dump()
            );
        }
    }
}

/// The numbers in a `client ADDR -- ELAPSED elapsed N bytes F frames + S
/// skipped` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEnd {
    pub bytes: u64,
    pub frames: u64,
    pub skipped: u64,
    pub line: String,
}

impl ClientEnd {
    pub fn parse(line: &str) -> Option<ClientEnd> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let before = |w: &str| -> Option<u64> {
            let i = words.iter().position(|x| *x == w)?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        };
        let skipped_at = words.iter().position(|x| *x == "skipped")?;
        Some(ClientEnd {
            bytes: before("bytes")?,
            frames: before("frames")?,
            skipped: words.get(skipped_at - 1)?.parse().ok()?,
            line: line.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Other helpers
// ---------------------------------------------------------------------------

/// Run the binary with `args` (stdin /dev/null) and wait for it to exit;
/// returns (status, stdout, stderr). Kills it and panics if it does not exit
/// within `timeout`.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringcast");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringcast {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, out_t.join().unwrap(), err_t.join().unwrap())
}

/// Wait until `cond` holds, polling; false at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh path in the temporary directory (not created).
pub fn temp_path(tag: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringcast-test-{}-{tag}-{n}", std::process::id()))
}

// ---------------------------------------------------------------------------
// Test streams
// ---------------------------------------------------------------------------

/// A Python generator of raw test frames.
///
/// Arguments: `SIZE RATE COUNT [PIDFILE [HEADER_BYTES [SPLIT]]]`. Writes
/// HEADER_BYTES bytes of [`stream_header`] first (if given), then frames 0, 1,
/// 2, ... of SIZE bytes (see [`raw_frame`]), RATE frames per second (0 = as
/// fast as the pipe takes them), COUNT frames (0 = forever), then exits. With
/// a PIDFILE (not `-`) it first writes its process id there. With SPLIT = 1
/// each frame is written in three uneven pieces, a millisecond apart, so the
/// server's reads do not line up with frames.
pub const RAW_GEN: &str = r#"
import os, struct, sys, time
size = int(sys.argv[1]); rate = float(sys.argv[2]); count = int(sys.argv[3])
pidfile = sys.argv[4] if len(sys.argv) > 4 else '-'
header = int(sys.argv[5]) if len(sys.argv) > 5 else 0
split = len(sys.argv) > 6 and sys.argv[6] == '1'
if pidfile != '-':
    with open(pidfile + '.tmp', 'w') as f:
        f.write(str(os.getpid()))
    os.rename(pidfile + '.tmp', pidfile)
out = sys.stdout.buffer
pattern = bytes((i * 13 + 5) % 251 for i in range(size))
mask = (1 << 64) - 1
if header:
    out.write(bytes((i * 7 + 1) % 256 for i in range(header)))
    out.flush()
n = 0
t0 = time.time()
try:
    while count == 0 or n < count:
        frame = struct.pack('>QQ', n, ~n & mask) + pattern[16:size - 8] + struct.pack('>Q', n)
        if split:
            a = size // 3 + 1
            b = 2 * size // 3 + 5
            for piece in (frame[:a], frame[a:b], frame[b:]):
                out.write(piece)
                out.flush()
                time.sleep(0.001)
        else:
            out.write(frame)
            out.flush()
        n += 1
        if rate > 0:
            d = t0 + n / rate - time.time()
            if d > 0:
                time.sleep(d)
except BrokenPipeError:
    pass
"#;

/// The header bytes [`RAW_GEN`] writes before its frames.
pub fn stream_header(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + 1) % 256) as u8).collect()
}

/// Arguments for `-exec` running [`RAW_GEN`].
pub fn raw_gen_args(
    size: usize,
    rate: u32,
    count: u64,
    pidfile: Option<&str>,
    header: usize,
) -> Vec<String> {
    raw_gen_args_split(size, rate, count, pidfile, header, false)
}

/// [`raw_gen_args`], optionally writing each frame in three pieces.
pub fn raw_gen_args_split(
    size: usize,
    rate: u32,
    count: u64,
    pidfile: Option<&str>,
    header: usize,
    split: bool,
) -> Vec<String> {
    let mut v = vec![
        "python3".to_string(),
        "-c".to_string(),
        RAW_GEN.to_string(),
        size.to_string(),
        rate.to_string(),
        count.to_string(),
        pidfile.unwrap_or("-").to_string(),
    ];
    if header > 0 || split {
        v.push(header.to_string());
    }
    if split {
        v.push("1".to_string());
    }
    v
}

/// Raw test frame `n` of `size` (at least 24) bytes: `n` (u64 big-endian),
/// `!n`, a position-dependent pattern, `n` again. Misaligned, torn or mixed
/// frames fail [`check_raw_frame`].
pub fn raw_frame(n: u64, size: usize) -> Vec<u8> {
    assert!(size >= 24);
    let mut f = raw_pattern(size).into_owned();
    f[..8].copy_from_slice(&n.to_be_bytes());
    f[8..16].copy_from_slice(&(!n).to_be_bytes());
    f[size - 8..].copy_from_slice(&n.to_be_bytes());
    f
}

/// The position-dependent filler of raw test frames, computed once.
fn raw_pattern(len: usize) -> std::borrow::Cow<'static, [u8]> {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = PATTERN.get_or_init(|| (0..1 << 20).map(|i| ((i * 13 + 5) % 251) as u8).collect());
    if len <= p.len() {
        std::borrow::Cow::Borrowed(&p[..len])
    } else {
        std::borrow::Cow::Owned((0..len).map(|i| ((i * 13 + 5) % 251) as u8).collect())
    }
}

/// Check a raw test frame; return its number.
pub fn check_raw_frame(f: &[u8]) -> Result<u64, String> {
    let size = f.len();
    if size < 24 {
        return Err(format!("frame of {size} bytes"));
    }
    let n = u64::from_be_bytes(f[..8].try_into().unwrap());
    let pattern = raw_pattern(size);
    if f[8..16] != (!n).to_be_bytes()
        || f[16..size - 8] != pattern[16..size - 8]
        || f[size - 8..] != n.to_be_bytes()
    {
        let expected = raw_frame(n, size);
        let at = f
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "frame of {size} bytes claiming number {n} differs from the expected frame at byte {at} (torn or misaligned)"
        ));
    }
    Ok(n)
}

/// Split a body into raw test frames of `size` bytes and check each one.
pub fn raw_frames(body: &[u8], size: usize) -> Result<Vec<u64>, String> {
    if !body.len().is_multiple_of(size) {
        return Err(format!(
            "body of {} bytes is not whole frames of {size}",
            body.len()
        ));
    }
    body.chunks(size)
        .enumerate()
        .map(|(i, f)| check_raw_frame(f).map_err(|e| format!("frame {i} of the body: {e}")))
        .collect()
}

/// Check that frame numbers are consecutive.
pub fn assert_consecutive(nums: &[u64], what: &str) {
    for w in nums.windows(2) {
        assert_eq!(
            w[1],
            w[0] + 1,
            "{what}: frame {} followed by {} in {:?}",
            w[0],
            w[1],
            short(nums)
        );
    }
}

/// A short rendering of a long list of frame numbers.
pub fn short(nums: &[u64]) -> String {
    if nums.len() <= 40 {
        format!("{nums:?}")
    } else {
        format!(
            "{:?} ... {:?} ({} frames)",
            &nums[..20],
            &nums[nums.len() - 20..],
            nums.len()
        )
    }
}
