//! The one way the tests start `ringcast`: the [`Ringcast`] builder, and the
//! running [`Server`] it gives.
//!
//! ```ignore
//! let server = Ringcast::new()
//!     .args(["-frame-bytes", "100"])
//!     .source_exec(raw_gen_args(100, 100, 0, None, 0))
//!     .start();
//! ```
//!
//! The command line is, in this order: `-log-level info` (or
//! [`Ringcast::log_level`]); `-address 127.0.0.1:0` unless the arguments
//! name an address or a configuration file (with `-config` the binary takes
//! its addresses from the file, and refuses `-address`); `-config FILE` for
//! [`Ringcast::config_toml`]; the arguments; `-exec COMMAND...` for
//! [`Ringcast::source_exec`]. Stdin is /dev/null and `RUST_LOG` is removed
//! from the environment, so the log level is the one the test chose.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::client::Client;
use super::tempdir::TempDir;
use super::tools::user_ids;
use super::WAIT;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ringcast")
}

/// Starting a process takes this shared; writing an executable (a copy of
/// the binary) takes it exclusive. A child forked while a binary is being
/// written inherits the open file until it execs, and exec of that binary
/// then fails with ETXTBSY.
pub(crate) static SPAWN: RwLock<()> = RwLock::new(());

/// How long a server may take to print `Listening at`.
const START: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The builder
// ---------------------------------------------------------------------------

/// A `ringcast` command line to start; see the module docs for what it adds.
pub struct Ringcast {
    /// The binary (a copy of it, for setcap).
    program: PathBuf,
    args: Vec<OsString>,
    /// The source command (`-exec`), last on the command line.
    source: Vec<OsString>,
    /// The text of the configuration file (`-config`).
    config: Option<String>,
    env: Vec<(OsString, OsString)>,
    /// Run as this user (setpriv), with its own group and groups.
    user: Option<String>,
    log_level: String,
}

impl Default for Ringcast {
    fn default() -> Ringcast {
        Ringcast::new()
    }
}

impl Ringcast {
    pub fn new() -> Ringcast {
        Ringcast {
            program: PathBuf::from(binary()),
            args: Vec::new(),
            source: Vec::new(),
            config: None,
            env: Vec::new(),
            user: None,
            log_level: "info".to_string(),
        }
    }

    /// Run this file instead of the binary cargo built (a copy of it).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Ringcast {
        self.program = path.into();
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Ringcast {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Ringcast
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Serve from a configuration file with this text (`-config FILE`, in a
    /// [`TempDir`] the server keeps; [`Server::reload`] rewrites it).
    pub fn config_toml(mut self, text: impl Into<String>) -> Ringcast {
        self.config = Some(text.into());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Ringcast {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Run as user `name` (which must exist, see
    /// [`system_user`](super::tools::system_user)): through `setpriv`, which
    /// execs ringcast, so the process id is ringcast's.
    // A builder step ("as user NAME"), not a conversion.
    #[allow(clippy::wrong_self_convention)]
    pub fn as_user(mut self, name: &str) -> Ringcast {
        self.user = Some(name.to_string());
        self
    }

    /// The source command: `-exec COMMAND ARGS...`, after every other flag.
    pub fn source_exec<I, S>(mut self, command: I) -> Ringcast
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.source = command.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// `-log-level LEVEL` instead of `info`.
    pub fn log_level(mut self, level: &str) -> Ringcast {
        self.log_level = level.to_string();
        self
    }

    /// Whether the arguments (before a `-exec` among them) give flag `name`
    /// (`-name`, `--name`, `-name=...`).
    fn gives(&self, name: &str) -> bool {
        self.args
            .iter()
            .map(|a| a.to_string_lossy())
            .take_while(|a| !matches!(a.as_ref(), "-exec" | "--exec"))
            .any(|a| {
                let flag = a.trim_start_matches('-');
                a.starts_with('-') && flag.split('=').next() == Some(name)
            })
    }

    /// The command to spawn, and the directory holding its configuration
    /// file (if any).
    fn command(&self) -> (Command, Option<(TempDir, PathBuf)>) {
        let config = self.config.as_ref().map(|text| {
            let dir = TempDir::new("config");
            let file = dir.write("ringcast.toml", text);
            (dir, file)
        });
        let mut cmd = match &self.user {
            None => Command::new(&self.program),
            Some(name) => {
                let (uid, gid) = user_ids(name)
                    .unwrap_or_else(|| panic!("no user {name}: create it with system_user"));
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--init-groups", "--"])
                    .arg(&self.program);
                c
            }
        };
        cmd.args(["-log-level", &self.log_level]);
        if config.is_none() && !self.gives("address") && !self.gives("config") {
            cmd.args(["-address", "127.0.0.1:0"]);
        }
        if let Some((_, file)) = &config {
            cmd.arg("-config").arg(file);
        }
        cmd.args(&self.args);
        if !self.source.is_empty() {
            cmd.arg("-exec").args(&self.source);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        (cmd, config)
    }

    /// Start the server and wait for its `Listening at ADDR` line (panics
    /// with the log when it does not come).
    pub fn start(self) -> Server {
        let (mut cmd, config) = self.command();
        let mut child = spawn(cmd.stdout(Stdio::null()));
        let logs = Logs::capture(child.stderr.take().expect("stderr"));
        let (config_dir, config_file) = config.unzip();
        let mut server = Server {
            child: Some(child),
            status: None,
            addr: "127.0.0.1:1".parse().unwrap(),
            logs,
            config_file,
            _config_dir: config_dir,
        };
        let line = server.wait_log(
            &format!("`Listening at` from {cmd:?}"),
            |l| l.contains("Listening at "),
            START,
        );
        let text = line.rsplit("Listening at ").next().unwrap().trim();
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

    /// Run the binary to its exit (its one-shot modes: `-check-config`,
    /// `-version`, a bad flag, a bind that fails); returns (status, stdout,
    /// stderr). Kills it and panics, with its output, when it does not exit
    /// within `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, String, String) {
        let (mut cmd, _config) = self.command();
        let mut child = spawn(cmd.stdout(Stdio::piped()));
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let out = read_all(Box::new(child.stdout.take().unwrap()));
        let err = read_all(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (out, err) = (out.join().unwrap(), err.join().unwrap());
        let status = status.unwrap_or_else(|| {
            panic!("{cmd:?} did not exit within {timeout:?}; stdout:\n{out}\nstderr:\n{err}")
        });
        (status, out, err)
    }
}

/// Start `cmd` with its stderr piped, while no test writes an executable.
fn spawn(cmd: &mut Command) -> Child {
    let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
    cmd.stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
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
    /// Collect the lines of `stderr` on a thread of their own.
    fn capture(stderr: impl Read + Send + 'static) -> Arc<Logs> {
        let logs = Arc::new(Logs::default());
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                match line {
                    Ok(l) => sink.push(String::from_utf8_lossy(&l).into_owned()),
                    Err(_) => break,
                }
            }
            sink.close();
        });
        logs
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, line: String) {
        self.state().lines.push(line);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }

    /// Whether stderr has ended (the process is gone).
    pub fn closed(&self) -> bool {
        self.state().closed
    }

    /// A copy of every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// How many lines so far match `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.state().lines.iter().filter(|l| pred(l)).count()
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
        let mut s = self.state();
        loop {
            if let Some(l) = s.lines.iter().filter(|l| pred(l)).nth(n.saturating_sub(1)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
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
    /// Where it listens (from its `Listening at` line).
    pub addr: SocketAddr,
    pub logs: Arc<Logs>,
    /// The configuration file of [`Ringcast::config_toml`].
    config_file: Option<PathBuf>,
    /// The directory holding it, removed after the process is gone.
    _config_dir: Option<TempDir>,
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(|c| c.id())
            .expect("server already reaped")
    }

    /// The configuration file it was started with.
    pub fn config_file(&self) -> &Path {
        self.config_file
            .as_deref()
            .expect("started without config_toml")
    }

    /// Wait until `n` log lines match `pred`; return the `n`th. Panics with
    /// the log at the deadline or when the process ends without it.
    pub fn wait_log_nth(
        &self,
        what: &str,
        n: usize,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> String {
        self.logs.try_wait_nth(n, pred, timeout).unwrap_or_else(|| {
            let why = if self.logs.closed() {
                "ringcast exited first".to_string()
            } else {
                format!("not within {timeout:?}")
            };
            let which = if n == 1 {
                String::new()
            } else {
                format!(" (the {n}th)")
            };
            panic!(
                "no log line {what}{which}: {why}; log:\n{}",
                self.logs.dump()
            )
        })
    }

    /// Wait for the first log line matching `pred`.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        self.wait_log_nth(what, 1, pred, timeout)
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

    /// Send a signal by name: `TERM`, `INT`, `HUP`, `KILL`.
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            "KILL" => libc::SIGKILL,
            _ => panic!("no signal {name} here"),
        };
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill has no memory effects; `pid` is our own child, not yet
        // reaped (pid() panics once it is), so the id names no other process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill -{name} {pid}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// SIGTERM, then expect exit status 0 within 5 s.
    pub fn stop_cleanly(&mut self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "ringcast did not exit 0 within 5 s of SIGTERM ({status:?}); log:\n{}",
            self.logs.dump()
        );
    }

    /// Rewrite the configuration file with `toml`, then SIGHUP (a reload).
    pub fn reload(&self, toml: &str) {
        std::fs::write(self.config_file(), toml).expect("rewrite the configuration file");
        self.signal("HUP");
    }

    /// Its open file descriptors, from /proc.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Connect and send a GET of `/`; read the response head.
    pub fn get(&self) -> Client {
        self.get_path("/")
    }

    /// Connect and send a GET of `path`; read the response head.
    pub fn get_path(&self, path: &str) -> Client {
        Client::request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"),
        )
    }

    /// Connect and send `request` verbatim; read the response head.
    pub fn request(&self, request: &str) -> Client {
        Client::request(self.addr, request)
    }

    /// A whole small response to a GET of `path`: (status line, body).
    pub fn fetch(&self, path: &str) -> (String, String) {
        fetch(self.addr, path)
    }

    /// `GET /status` as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        status_json(self.addr)
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

/// A whole small response to a GET of `path` at `addr`: (status line, body).
pub fn fetch(addr: SocketAddr, path: &str) -> (String, String) {
    let mut c = Client::request(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
    let body = c.read_to_eof(WAIT);
    (
        c.status_line().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `GET /status` at `addr` as JSON (panics unless it is a 200 with JSON).
pub fn status_json(addr: SocketAddr) -> serde_json::Value {
    let (line, body) = fetch(addr, "/status");
    assert!(line.contains("200"), "{line}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("status is not JSON ({e}): {body}"))
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
