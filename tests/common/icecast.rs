//! A real Icecast 2.4 (Debian's `icecast2`) for the tests that talk to one:
//! a relay pulling from it, Icecast relaying from ringcast, ringcast pushing
//! to it.
//!
//! ```ignore
//! if !require("icecast2") { return; }
//! let ice = Icecast::new()
//!     .fragment("<mount><mount-name>/live.mp3</mount-name></mount>")
//!     .start();
//! // ffmpeg ... -f mp3 ice.source_url("/live.mp3")
//! ice.wait_mount("/live.mp3", WAIT);
//! ice.set_title("/live.mp3", "Artist - Song");
//! let c = Client::request(ice.addr, "GET /live.mp3 HTTP/1.0\r\n\r\n");
//! ```
//!
//! Each [`Icecast`] runs `icecast2 -c CONFIG` with a configuration written
//! into its own [`TempDir`]: one listen socket on a free loopback port, the
//! passwords below, generous `<limits>`, its logs in the directory, and any
//! `<mount>`, `<relay>` (or other top-level) fragments the test supplies.
//! Icecast refuses to run as root, so when the tests are root it runs as the
//! system user [`USER`] (created by [`system_user`]); otherwise as the test's
//! own user. It is killed by its process id when dropped; when the test
//! panics, its error log is printed.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::Client;
use super::ringcast::SPAWN;
use super::tempdir::TempDir;
use super::tools::{proc_status, system_user};
use super::wait_until;

/// The program.
pub const ICECAST: &str = "/usr/bin/icecast2";
/// The user Icecast runs as when the tests run as root.
pub const USER: &str = "ringcast-icecast";
/// `<source-password>` (user `source`).
pub const SOURCE_PASSWORD: &str = "icesource";
/// `<relay-user>` / `<relay-password>`: what `/admin/streamlist.txt` and
/// master relaying need.
pub const RELAY_USER: &str = "relay";
pub const RELAY_PASSWORD: &str = "icerelay";
/// `<admin-user>` / `<admin-password>`.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "iceadmin";

/// An Icecast to start: its configuration fragments.
#[derive(Default)]
pub struct IcecastBuilder {
    fragments: Vec<String>,
    burst_size: Option<u32>,
}

impl IcecastBuilder {
    /// Add XML inside `<icecast>` (a `<mount>`, a `<relay>`, a `<master-*>`
    /// setting...), verbatim.
    pub fn fragment(mut self, xml: impl Into<String>) -> IcecastBuilder {
        self.fragments.push(xml.into());
        self
    }

    /// `<burst-size>` in bytes (Icecast's default: 65535).
    pub fn burst_size(mut self, bytes: u32) -> IcecastBuilder {
        self.burst_size = Some(bytes);
        self
    }

    /// The configuration file's text for `port`, logging into `logdir`.
    fn xml(&self, port: u16, logdir: &str) -> String {
        let mut x = String::new();
        let burst = self.burst_size.unwrap_or(65535);
        write!(
            x,
            r#"<icecast>
  <location>test</location>
  <admin>test@localhost</admin>
  <hostname>127.0.0.1</hostname>
  <limits>
    <clients>200</clients>
    <sources>20</sources>
    <queue-size>524288</queue-size>
    <client-timeout>30</client-timeout>
    <header-timeout>15</header-timeout>
    <source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect>
    <burst-size>{burst}</burst-size>
  </limits>
  <authentication>
    <source-password>{SOURCE_PASSWORD}</source-password>
    <relay-user>{RELAY_USER}</relay-user>
    <relay-password>{RELAY_PASSWORD}</relay-password>
    <admin-user>{ADMIN_USER}</admin-user>
    <admin-password>{ADMIN_PASSWORD}</admin-password>
  </authentication>
  <listen-socket>
    <port>{port}</port>
    <bind-address>127.0.0.1</bind-address>
  </listen-socket>
  <fileserve>1</fileserve>
  <paths>
    <basedir>/usr/share/icecast2</basedir>
    <logdir>{logdir}</logdir>
    <webroot>/usr/share/icecast2/web</webroot>
    <adminroot>/usr/share/icecast2/admin</adminroot>
  </paths>
  <logging>
    <accesslog>access.log</accesslog>
    <errorlog>error.log</errorlog>
    <loglevel>4</loglevel>
  </logging>
  <security>
    <chroot>0</chroot>
  </security>
"#
        )
        .unwrap();
        for f in &self.fragments {
            x.push_str(f);
            x.push('\n');
        }
        x.push_str("</icecast>\n");
        x
    }

    /// Start it and wait until it answers `GET /status-json.xsl` (panics with
    /// its error log when it does not). A port taken between choosing it and
    /// Icecast binding it is retried with another (three tries).
    pub fn start(self) -> Icecast {
        let user = running_as_root().then(|| system_user(USER));
        let mut why = String::new();
        for _ in 0..3 {
            let dir = TempDir::new("icecast");
            let logdir = dir.join("log");
            std::fs::create_dir_all(&logdir).expect("create the icecast log dir");
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&logdir, Some(uid), Some(gid))
                    .expect("chown the icecast log dir");
            }
            let port = free_port();
            let config = dir.write("icecast.xml", self.xml(port, logdir.to_str().unwrap()));
            let mut cmd = match user {
                Some((uid, gid)) => {
                    let mut c = Command::new("setpriv");
                    c.arg(format!("--reuid={uid}"))
                        .arg(format!("--regid={gid}"))
                        .args(["--init-groups", "--", ICECAST]);
                    c
                }
                None => Command::new(ICECAST),
            };
            let stderr = std::fs::File::create(dir.join("stderr.txt")).expect("create stderr.txt");
            cmd.arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = {
                let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
            };
            let mut ice = Icecast {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child: Some(child),
                dir,
            };
            if ice.wait_ready(Duration::from_secs(20)) {
                return ice;
            }
            // Gone or mute (most likely the port was taken): another port.
            why = ice.logs();
            ice.kill();
        }
        panic!("icecast did not start (3 tries); the last one's logs:\n{why}");
    }
}

/// The `<tag>text</tag>` children of an XML fragment (flat; entities
/// `&amp; &lt; &gt; &quot; &apos;` decoded).
fn xml_fields(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let Some(j) = rest.find('>') else { break };
        let tag = &rest[..j];
        rest = &rest[j + 1..];
        if tag.starts_with('/') || tag.ends_with('/') || tag.contains(' ') {
            continue;
        }
        let close = format!("</{tag}>");
        if let Some(k) = rest.find(&close) {
            let text = rest[..k]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
            out.push((tag.to_string(), text));
            rest = &rest[k + close.len()..];
        }
    }
    out
}

/// Whether this process runs as root (Icecast would refuse to).
fn running_as_root() -> bool {
    proc_status("self", "Uid").split_whitespace().nth(1) == Some("0")
}

/// A loopback port free just now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A running Icecast; killed (by its process id) when dropped.
pub struct Icecast {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Its configuration, `log/error.log`, `log/access.log`, `stderr.txt`.
    dir: TempDir,
}

impl Icecast {
    /// An Icecast to configure and start.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> IcecastBuilder {
        IcecastBuilder::default()
    }

    /// Its process id (the Icecast process itself: setpriv execs it).
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("icecast already killed")
    }

    /// `http://127.0.0.1:PORT/MOUNT` (for a relay or a listener).
    pub fn url(&self, mount: &str) -> String {
        format!("http://{}{mount}", self.addr)
    }

    /// `icecast://source:PASSWORD@127.0.0.1:PORT/MOUNT`, FFmpeg's output URL
    /// for a source (`-f mp3 -content_type audio/mpeg URL`).
    pub fn source_url(&self, mount: &str) -> String {
        format!("icecast://source:{SOURCE_PASSWORD}@{}{mount}", self.addr)
    }

    /// The directory of its configuration and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The text of its error log (`log/error.log`, level 4: debug).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log/error.log")).unwrap_or_default()
    }

    /// The error log and what it wrote to stderr, for a failure message.
    pub fn logs(&self) -> String {
        let stderr = std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default();
        format!("{}\n-- stderr --\n{stderr}", self.error_log())
    }

    /// Whether the process is still running (reaping it if it exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Wait until it answers `GET /status-json.xsl` with a 200; false when it
    /// exits first or at the deadline.
    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return false;
            }
            if self
                .try_get("/status-json.xsl")
                .is_some_and(|(s, _)| s == 200)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// A whole small response to `GET path` with optional Basic
    /// credentials: (status code, body); `None` when it does not answer.
    fn try_get_auth(&self, path: &str, auth: Option<(&str, &str)>) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n", self.addr);
        if let Some((u, p)) = auth {
            let token = super::basic_auth(u, p);
            req.push_str(&format!("Authorization: Basic {token}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    fn try_get(&self, path: &str) -> Option<(u16, String)> {
        self.try_get_auth(path, None)
    }

    /// `GET path` (a page, not a stream): (status code, body); panics when
    /// Icecast does not answer.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|| panic!("icecast did not answer GET {path}; logs:\n{}", self.logs()))
    }

    /// `GET path` with the admin credentials.
    pub fn get_admin(&self, path: &str) -> (u16, String) {
        self.try_get_auth(path, Some((ADMIN_USER, ADMIN_PASSWORD)))
            .unwrap_or_else(|| panic!("icecast did not answer GET {path}; logs:\n{}", self.logs()))
    }

    /// `/admin/stats` (XML, with the admin credentials). Icecast 2.4.4's
    /// `/status-json.xsl` is not JSON when a field is missing, so the tests
    /// read this.
    pub fn stats(&self) -> String {
        let (code, body) = self.get_admin("/admin/stats");
        assert_eq!(code, 200, "icecast /admin/stats: {body}");
        body
    }

    /// The mounts that have a source, with their `<source>` stats:
    /// (mount, [(tag, text)]), in the order of `/admin/stats`.
    pub fn sources(&self) -> Vec<(String, Vec<(String, String)>)> {
        let xml = self.stats();
        let mut out = Vec::new();
        let mut rest = xml.as_str();
        while let Some(i) = rest.find("<source mount=\"") {
            rest = &rest[i + 15..];
            let Some(q) = rest.find('"') else { break };
            let mount = rest[..q].to_string();
            let end = rest.find("</source>").unwrap_or(rest.len());
            out.push((mount, xml_fields(&rest[..end])));
            rest = &rest[end..];
        }
        out
    }

    /// `tag` of `mount`'s `<source>` stats (`listeners`, `title`,
    /// `total_bytes_read`, ...), when it has a source and the tag.
    pub fn source_field(&self, mount: &str, tag: &str) -> Option<String> {
        self.sources()
            .into_iter()
            .find(|(m, _)| m == mount)?
            .1
            .into_iter()
            .find_map(|(t, v)| (t == tag).then_some(v))
    }

    /// Whether `mount` has a source now.
    pub fn has_source(&self, mount: &str) -> bool {
        self.sources().iter().any(|(m, _)| m == mount)
    }

    /// Wait until `mount` has a source (panics with the logs at the deadline).
    pub fn wait_mount(&self, mount: &str, timeout: Duration) {
        if !wait_until(timeout, || self.has_source(mount)) {
            panic!(
                "icecast has no source on {mount} within {timeout:?}; logs:\n{}",
                self.logs()
            );
        }
    }

    /// Set `mount`'s title (`/admin/metadata?mode=updinfo&song=...`, with
    /// the admin credentials); panics unless Icecast accepts it.
    pub fn set_title(&self, mount: &str, song: &str) {
        let enc: String = song
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (code, body) = self.get_admin(&format!(
            "/admin/metadata?mount={mount}&mode=updinfo&song={enc}"
        ));
        assert_eq!(code, 200, "icecast refused the title: {body}");
    }

    /// Connect a listener to `mount` (HTTP/1.0, no inline titles) and read
    /// the response head.
    pub fn listen(&self, mount: &str) -> Client {
        Client::request(
            self.addr,
            &format!("GET {mount} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr),
        )
    }

    /// Feed `mount` with FFmpeg: a 440 Hz sine as 128 kbit/s MP3 at real
    /// time (`-re`), pushed to [`Icecast::source_url`]. Needs `ffmpeg`;
    /// killed when the [`Feeder`] is dropped.
    pub fn feed_mp3(&self, mount: &str) -> Feeder {
        feed_mp3_to(&self.source_url(mount), &[])
    }

    /// Kill it (SIGKILL, by its process id) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- icecast {} logs ----\n{}\n---- end of icecast logs ----",
                self.addr,
                self.logs()
            );
        }
    }
}

/// FFmpeg pushing a 440 Hz tone as 128 kbit/s MP3 in real time (`-re`) to
/// an `icecast://user:password@host:port/mount` URL (Icecast or a ringcast
/// push mount), with `extra` arguments before the URL (`-ice_name`, ...).
/// Needs `ffmpeg`; killed when the [`Feeder`] is dropped.
pub fn feed_mp3_to(url: &str, extra: &[&str]) -> Feeder {
    Feeder::start(
        Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100",
                "-ac",
                "2",
                "-c:a",
                "libmp3lame",
                "-b:a",
                "128k",
                "-f",
                "mp3",
                "-content_type",
                "audio/mpeg",
            ])
            .args(extra)
            .arg(url),
    )
}

/// A helper process (an encoder feeding a server); killed by its process id
/// and reaped when dropped.
pub struct Feeder(Option<Child>);

impl Feeder {
    /// Start `cmd` (stdin and stdout from and to /dev/null, stderr kept).
    pub fn start(cmd: &mut Command) -> Feeder {
        let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Feeder(Some(child))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).expect("already stopped")
    }

    /// Kill it now.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop();
    }
}
