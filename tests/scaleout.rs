//! Scale-out, demonstrated (issue 13.4): an origin and two edges, each in a
//! network namespace of its own on one bridge, HAProxy in front of the edges,
//! 2,000 loadgen listeners through HAProxy.
//!
//! ```text
//!  loadgen (2,000 clients) ──> HAProxy 10.213.N.1:8000 (root namespace, on the bridge)
//!                                 │ leastconn, GET /health every 500 ms, fall 2 rise 2
//!                    ┌────────────┴────────────┐
//!             edge1 10.213.N.3:8000     edge2 10.213.N.4:8000   (namespaces, veth)
//!                    └──── relay /a, /b ───────┘
//!                                 │
//!                      origin 10.213.N.2:8000  (namespace; /a, /b from loadgen source)
//! ```
//!
//! The test checks: every listener receives checked loadgen frames; the origin
//! serves exactly one connection per edge per stream (its `/status/clients`);
//! after SIGKILL of edge1 its listeners come back through HAProxy on edge2 and
//! the origin serves one connection per stream; after edge1 is started again
//! HAProxy marks it up (its `/health`), new connections reach it and the
//! origin is back to one per edge per stream. It prints the figures
//! (`SCALEOUT` lines: listeners moved, time to move, origin connections,
//! time to rejoin); deploy/scale-out.md has them.
//!
//! Needs root (namespaces), `ip`, `ss`, `setpriv`, HAProxy and the loadgen binary (built by
//! `cargo test --workspace`, or `cargo build -p loadgen`; `RINGCAST_LOADGEN`
//! names another). Everything it creates is named after its process id and
//! removed on drop, also when it fails; namespaces left by a killed run are
//! removed by the next one. Every wait is bounded; the whole test ends by
//! itself within [`BUDGET`].

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{binary, require_all, require_root, require_that, Ringcast, Server, TempDir};

/// Listeners through HAProxy, half on each stream.
const CLIENTS: usize = 2000;
/// The streams, served by the origin, relayed by each edge.
const MOUNTS: [&str; 2] = ["/a", "/b"];
/// Raw frames of 4,000 bytes at 16,000 bytes/s (128 kbit/s, 4 frames/s).
const FRAME: usize = 4000;
const RATE: u64 = 16_000;
/// Every server (origin, edges, HAProxy) listens on this port of its address.
const PORT: u16 = 8000;
/// The most the whole test may take; every wait is cut to what is left.
const BUDGET: Duration = Duration::from_secs(170);
/// A loadgen client whose connection fails (the edge behind it was killed)
/// connects again this long after, as players do.
const RETRY_DELAY: &str = "200ms";
/// After the restart: this many more loadgen clients that reconnect every
/// `RECONNECT_AFTER` (loadgen's `reconnect` behaviour): new connections, which
/// HAProxy's leastconn sends to the edge that came back.
const ARRIVALS: usize = 200;
const RECONNECT_AFTER: &str = "2s"; // = `reconnect_after` in the test

// ---------------------------------------------------------------------------
// The network: a bridge in the root namespace, one namespace per server
// ---------------------------------------------------------------------------

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Names this test gives: `rcs<PID>...` (namespaces, bridge, veths).
const TAG: &str = "rcs";

/// Remove namespaces and bridges a killed earlier run of this test left
/// (their process id no longer runs).
fn remove_leftovers() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(TAG) else {
            return false;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        !pid.is_empty()
            && pid.parse::<u32>().ok() != Some(std::process::id())
            && !Path::new(&format!("/proc/{pid}")).exists()
    };
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in ip_output(&["-o", "link", "show", "type", "bridge"]).lines() {
        // "12: rcs123b: <BROADCAST,...> ..."
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if stale(name) {
            let _ = ip(&["link", "del", name]);
        }
    }
}

/// A bridge `rcs<PID>b` with 10.213.N.1/24 in the root namespace, and one
/// namespace per host (`rcs<PID><host>`, its `eth0` at 10.213.N.(2+i) on a
/// veth pair to the bridge). All removed on drop.
struct Net {
    prefix: String,
    bridge: Option<String>,
    namespaces: Vec<String>,
    /// The root-namespace ends of the veth pairs.
    veths: Vec<String>,
}

impl Net {
    fn new(hosts: &[&str]) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            prefix: free_prefix(),
            bridge: None,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        let bridge = format!("{TAG}{pid}b");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.bridge = Some(bridge.clone());
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.addr(1)),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, host) in hosts.iter().enumerate() {
            let ns = format!("{TAG}{pid}{host}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let veth = format!("{TAG}{pid}v{i}");
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            net.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            let addr = format!("{}/24", net.addr(2 + i as u8));
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// 10.213.N.`host`.
    fn addr(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    fn socket(&self, host: u8) -> SocketAddr {
        format!("{}:{PORT}", self.addr(host)).parse().unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The kernel deletes a veth pair with its namespace, but does so
        // later (namespaces are torn down asynchronously): delete them now.
        for veth in self.veths.drain(..) {
            let _ = ip(&["link", "del", &veth]);
        }
        for ns in self.namespaces.drain(..) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(b) = self.bridge.take() {
            if let Err(e) = ip(&["link", "del", &b]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A 10.213.N prefix that no interface of the root namespace uses.
fn free_prefix() -> String {
    let used = ip_output(&["-4", "-o", "addr"]);
    let start = std::process::id() % 200 + 20;
    (0..200)
        .map(|k| format!("10.213.{}", (start + k) % 250 + 1))
        .find(|p| !used.contains(&format!("{p}.")))
        .unwrap_or_else(|| "10.213.254".to_string())
}

// ---------------------------------------------------------------------------
// Small HTTP, tolerant of servers that are gone
// ---------------------------------------------------------------------------

/// GET `path` (HTTP/1.0): the status and the body, `None` when it fails.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match get(addr, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// Listeners per mount ([`MOUNTS`] order) in a server's `/status`.
fn listeners(addr: SocketAddr) -> Option<[u64; 2]> {
    let st = get_json(addr, "/status")?;
    let streams = st["streams"].as_array()?;
    let count = |mount: &str| {
        streams
            .iter()
            .find(|s| s["mount"] == mount)
            .and_then(|s| s["clients"].as_u64())
    };
    Some([count(MOUNTS[0])?, count(MOUNTS[1])?])
}

/// The peers' IP addresses per mount in a server's `/status/clients`, sorted.
fn peers(addr: SocketAddr) -> Option<[Vec<String>; 2]> {
    let list = get_json(addr, "/status/clients")?;
    let mut out: [Vec<String>; 2] = Default::default();
    for c in list["clients"].as_array()? {
        let remote: SocketAddr = c["remote"].as_str()?.parse().ok()?;
        if let Some(k) = MOUNTS.iter().position(|m| c["stream"] == *m) {
            out[k].push(remote.ip().to_string());
        }
    }
    out.iter_mut().for_each(|v| v.sort());
    Some(out)
}

/// Listeners a server has written frames to (its `/status/clients` rows with
/// `frames_sent` > 0).
fn receiving(addr: SocketAddr) -> usize {
    get_json(addr, "/status/clients")
        .and_then(|l| {
            l["clients"].as_array().map(|a| {
                a.iter()
                    .filter(|c| c["frames_sent"].as_u64().is_some_and(|f| f > 0))
                    .count()
            })
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Processes: ringcast in a namespace, HAProxy, loadgen
// ---------------------------------------------------------------------------

/// `program` under `setpriv --pdeathsig KILL`: killed when the test process
/// dies (a killed test run leaves no server behind). setpriv execs it, so
/// the process id is the program's.
fn dies_with_test(program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
    cmd
}

/// A script that runs ringcast in namespace `ns` (setpriv and `ip netns exec`
/// exec it: the process id is ringcast's, so the harness's signals reach it;
/// see [`dies_with_test`]).
fn netns_wrapper(dir: &TempDir, ns: &str) -> PathBuf {
    let path = dir.write(
        &format!("ringcast-in-{ns}"),
        format!(
            "#!/bin/sh\nexec setpriv --pdeathsig KILL -- ip netns exec {ns} {} \"$@\"\n",
            binary()
        ),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The loadgen binary: `RINGCAST_LOADGEN`, else the one built next to
/// ringcast (`cargo test --workspace` builds it), else a release build.
fn loadgen_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGCAST_LOADGEN") {
        return Some(PathBuf::from(p));
    }
    let dir = Path::new(binary()).parent()?;
    [
        dir.join("loadgen"),
        dir.parent()?.join("release").join("loadgen"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn haproxy_binary() -> Option<PathBuf> {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            common::try_run(Command::new("sh").args(["-c", "command -v haproxy"]))
                .map(|s| PathBuf::from(s.trim()))
        })
}

/// A child process whose stderr lines are kept; killed on drop (its stderr
/// printed when the test fails).
struct Proc {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Proc { name, child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory effects; `pid` is our own child, not
        // reaped yet (it is reaped only in `wait`, which takes `self`).
        unsafe { libc::kill(pid, sig) };
    }

    /// Wait for the exit, at most `timeout`; true if it exited.
    fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} stderr ----\n{}\n---- end ----",
                self.name,
                self.lines().join("\n")
            );
        }
    }
}

/// HAProxy and its stats socket.
struct Haproxy {
    proc: Proc,
    socket: PathBuf,
}

impl Haproxy {
    /// The `show stat` rows of the `edges` servers: name -> columns.
    fn servers(&self) -> HashMap<String, HashMap<String, String>> {
        let mut out = HashMap::new();
        let Ok(mut s) = UnixStream::connect(&self.socket) else {
            return out;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"show stat\n").is_err() {
            return out;
        }
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let mut lines = text.lines();
        let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
            return out;
        };
        let names: Vec<&str> = header.split(',').collect();
        for line in lines {
            let row: HashMap<String, String> = names
                .iter()
                .zip(line.split(','))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if row.get("pxname").map(String::as_str) == Some("edges") {
                if let Some(sv) = row.get("svname").filter(|s| s.starts_with("edge")) {
                    out.insert(sv.clone(), row.clone());
                }
            }
        }
        out
    }

    /// A server's current sessions (`scur`): HAProxy drops a session as
    /// soon as its client closes, so this is exact where an edge's own count
    /// still holds a closed listener until its next write fails.
    fn sessions(&self, server: &str) -> u64 {
        self.servers()
            .get(server)
            .and_then(|r| r.get("scur")?.parse().ok())
            .unwrap_or(0)
    }

    /// A server's check state (`UP`, `DOWN`, `UP 1/2`, ...).
    fn state(&self, server: &str) -> String {
        self.servers()
            .get(server)
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }
}

/// The HAProxy configuration the test runs (and deploy/scale-out.md shows).
fn haproxy_config(front: &str, edges: &[String], socket: &Path) -> String {
    let servers: String = edges
        .iter()
        .enumerate()
        .map(|(i, e)| format!("    server edge{} {e}:{PORT} check\n", i + 1))
        .collect();
    format!(
        "global
    maxconn 6000
    stats socket {socket} mode 600 level admin
    stats timeout 10s

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    retries 3
    option redispatch 1

frontend listeners
    bind {front}:{PORT}
    maxconn 5000
    default_backend edges

backend edges
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    timeout check 2s
    default-server inter 500ms fall 2 rise 2
{servers}",
        socket = socket.display()
    )
}

/// The TCP sockets of the root namespace as `ss -tnH state STATE` lists them:
/// (Recv-Q, local address, peer address).
fn sockets(state: &str) -> Vec<(u64, String, String)> {
    let out = Command::new("ss")
        .args(["-tnH", "state", state])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((
                w.first()?.parse().ok()?,
                w.get(2)?.to_string(),
                w.get(3)?.to_string(),
            ))
        })
        .collect()
}

/// loadgen's sockets to HAProxy that HAProxy closed and loadgen did not.
fn close_wait(front: SocketAddr) -> usize {
    let front = front.to_string();
    sockets("close-wait")
        .iter()
        .filter(|(_, _, peer)| *peer == front)
        .count()
}

fn origin_config(listen: SocketAddr, loadgen: &Path) -> String {
    let mut s = format!(
        "listen = \"{listen}\"\nhealth_mounts = [\"{}\", \"{}\"]\n",
        MOUNTS[0], MOUNTS[1]
    );
    for (i, m) in MOUNTS.iter().enumerate() {
        s += &format!(
            "\n[[stream]]\nmount = \"{m}\"\nframer = \"raw\"\nframe_bytes = {FRAME}\n\
             exec = [\"{}\", \"source\", \"--frame-bytes\", \"{FRAME}\", \"--rate\", \"{RATE}\", \"--stream-id\", \"{}\"]\n",
            loadgen.display(),
            i + 1
        );
    }
    s
}

fn edge_config(listen: SocketAddr, origin: SocketAddr) -> String {
    let mut s = format!(
        "listen = \"{listen}\"\nhealth_mounts = [\"{}\", \"{}\"]\n",
        MOUNTS[0], MOUNTS[1]
    );
    for m in MOUNTS {
        s += &format!(
            "\n[[stream]]\nmount = \"{m}\"\nrelay = \"http://{origin}{m}\"\nframer = \"raw\"\n\
             frame_bytes = {FRAME}\nsource_timeout = \"5s\"\n"
        );
    }
    s
}

/// Wait until `cond` gives a value, polling every `every`, at most until
/// `deadline`.
fn poll<T>(deadline: Instant, every: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() + every >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Seconds, for the figures.
fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// `loadgen clients` on both streams through HAProxy at `front` (client i
/// takes stream i mod 2); its JSON report goes to `json`.
fn loadgen_clients(loadgen: &Path, front: SocketAddr, n: usize, mix: &[&str], json: &Path) -> Proc {
    let mut cmd = dies_with_test(loadgen);
    cmd.arg("clients");
    for m in MOUNTS {
        cmd.args(["--url", &format!("http://{front}{m}")]);
    }
    cmd.args(["-n", &n.to_string(), "--ramp", "500"])
        .args(mix)
        .args(["--retry-delay", RETRY_DELAY, "--connect-timeout", "10s"])
        .args(["--frame-bytes", &FRAME.to_string()])
        .args(["--duration", &format!("{}s", BUDGET.as_secs())])
        .args(["--max-failed-fraction", "1", "--json"])
        .arg(json);
    eprintln!("scaleout: {cmd:?}");
    Proc::spawn("loadgen", &mut cmd)
}

/// Stop a loadgen run (SIGINT: it stops and writes its report); its JSON
/// report, checked: no corrupt frame, only loadgen bodies, every client
/// received frames.
fn stop_loadgen(mut lg: Proc, json: &Path, clients: usize, what: &str) -> serde_json::Value {
    lg.signal(libc::SIGINT);
    assert!(
        lg.wait(Duration::from_secs(20)),
        "{what}: loadgen did not stop on SIGINT"
    );
    let text = std::fs::read_to_string(json).expect("loadgen's JSON report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("loadgen JSON");
    assert_eq!(
        report["frames"]["corrupt"], 0,
        "{what}: corrupt frames:\n{text}"
    );
    assert_eq!(report["data"]["non_loadgen_bodies"], 0, "{what}:\n{text}");
    assert_eq!(
        report["clients"]["with_first_frame"], clients,
        "{what}: every client must have received frames:\n{text}"
    );
    assert!(report["frames"]["ok"].as_u64() > Some(0), "{what}:\n{text}");
    report
}

#[test]
fn edges_behind_haproxy_take_over_and_rejoin() {
    if !require_root() || !require_all(&["ip", "ss", "setpriv"]) {
        return;
    }
    let Some(haproxy) = haproxy_binary() else {
        require_that(false, "haproxy");
        return;
    };
    let Some(loadgen) = loadgen_binary() else {
        require_that(false, "the loadgen binary (cargo build -p loadgen)");
        return;
    };
    let start = Instant::now();
    let budget_end = start + BUDGET;
    // A phase's deadline: `d` from now, never past the budget.
    let within = |d: Duration| (Instant::now() + d).min(budget_end);
    let every = Duration::from_millis(50);

    remove_leftovers();
    let net = match Net::new(&["o", "e1", "e2"]) {
        Ok(n) => n,
        Err(e) => {
            require_that(false, &format!("network namespaces ({e})"));
            return;
        }
    };
    let dir = TempDir::new("scaleout");
    let (origin_addr, edge_addrs) = (net.socket(2), [net.socket(3), net.socket(4)]);
    let edge_ips = [net.addr(3), net.addr(4)];
    let front: SocketAddr = net.socket(1);
    eprintln!(
        "scaleout: loadgen {}, haproxy {}, network {}.0/24",
        loadgen.display(),
        haproxy.display(),
        net.prefix
    );

    // The origin, then the edges, each in its namespace.
    let _origin: Server = Ringcast::new()
        .binary(netns_wrapper(&dir, &net.namespaces[0]))
        .config_toml(origin_config(origin_addr, &loadgen))
        .start();
    let start_edge = |k: usize| -> Server {
        Ringcast::new()
            .binary(netns_wrapper(&dir, &net.namespaces[1 + k]))
            .config_toml(edge_config(edge_addrs[k], origin_addr))
            .start()
    };
    let mut edge1 = start_edge(0);
    let _edge2 = start_edge(1);
    for (k, e) in edge_addrs.iter().enumerate() {
        let healthy = poll(within(Duration::from_secs(30)), every, || {
            (get(*e, "/health")?.0 == 200).then_some(())
        });
        assert!(
            healthy.is_some(),
            "edge{} never answered /health 200",
            k + 1
        );
    }
    // One connection per edge per stream at the origin, from each edge's address.
    let expect_both: [Vec<String>; 2] = [edge_ips.to_vec(), edge_ips.to_vec()];
    let expect_one: [Vec<String>; 2] = [vec![edge_ips[1].clone()], vec![edge_ips[1].clone()]];
    let origin_both = poll(within(Duration::from_secs(20)), every, || {
        (peers(origin_addr)? == expect_both).then_some(())
    });
    assert!(
        origin_both.is_some(),
        "the origin does not serve one connection per edge per stream: {:?}",
        peers(origin_addr)
    );

    // HAProxy in front of the edges.
    let socket = dir.join("haproxy.sock");
    let cfg = dir.write(
        "haproxy.cfg",
        haproxy_config(&net.addr(1), &edge_ips, &socket),
    );
    let hap = Haproxy {
        proc: Proc::spawn(
            "haproxy",
            dies_with_test(&haproxy).arg("-f").arg(&cfg).arg("-db"),
        ),
        socket,
    };
    let both_up = poll(within(Duration::from_secs(20)), every, || {
        (hap.state("edge1") == "UP" && hap.state("edge2") == "UP").then_some(())
    });
    assert!(
        both_up.is_some(),
        "HAProxy never marked both edges UP: {:?}\n{}",
        hap.servers(),
        hap.proc.lines().join("\n")
    );

    // 2,000 listeners through HAProxy, half on each stream: loadgen clients
    // that read as fast as frames come and, when their connection fails,
    // connect again after RETRY_DELAY.
    let json = dir.join("listeners.json");
    let lg = loadgen_clients(&loadgen, front, CLIENTS, &["--mix", "fast=1"], &json);
    let sum = |a: [u64; 2], b: [u64; 2]| [a[0] + b[0], a[1] + b[1]];
    let half = (CLIENTS / 2) as u64;
    let settled = poll(
        within(Duration::from_secs(60)),
        Duration::from_millis(100),
        || {
            let per_mount = sum(listeners(edge_addrs[0])?, listeners(edge_addrs[1])?);
            let rx = receiving(edge_addrs[0]) + receiving(edge_addrs[1]);
            (per_mount == [half, half] && rx == CLIENTS).then_some(())
        },
    );
    assert!(
        settled.is_some(),
        "the {CLIENTS} listeners are not all receiving: edge1 {:?}, edge2 {:?}; loadgen:\n{}",
        listeners(edge_addrs[0]),
        listeners(edge_addrs[1]),
        lg.lines().join("\n")
    );
    let origin_before = listeners(origin_addr).expect("origin /status");
    assert_eq!(
        peers(origin_addr).expect("origin /status/clients"),
        expect_both,
        "the origin must keep one connection per edge per stream with {CLIENTS} listeners"
    );
    assert_eq!(origin_before, [2, 2]);

    // Kill edge1: its listeners come back through HAProxy on edge2.
    let on_edge1 = listeners(edge_addrs[0]).expect("edge1 /status");
    let on_edge2 = listeners(edge_addrs[1]).expect("edge2 /status");
    let moved = on_edge1[0] + on_edge1[1];
    eprintln!(
        "scaleout: before the kill: listeners per stream: edge1 {on_edge1:?}, edge2 {on_edge2:?}; HAProxy sessions: edge1 {}, edge2 {}",
        hap.sessions("edge1"),
        hap.sessions("edge2")
    );
    assert!(moved > 0, "leastconn must have given edge1 listeners");
    let killed = Instant::now();
    edge1.signal("KILL");
    let mut down_after = None;
    let mut origin_one_after = None;
    let all_back = poll(
        within(Duration::from_secs(60)),
        Duration::from_millis(100),
        || {
            if down_after.is_none() && hap.state("edge1").starts_with("DOWN") {
                down_after = Some(killed.elapsed());
            }
            if origin_one_after.is_none() && peers(origin_addr) == Some(expect_one.clone()) {
                origin_one_after = Some(killed.elapsed());
            }
            (listeners(edge_addrs[1])? == [half, half] && receiving(edge_addrs[1]) == CLIENTS)
                .then(|| killed.elapsed())
        },
    );
    let Some(move_time) = all_back else {
        eprintln!(
            "loadgen sockets that HAProxy closed and loadgen did not (CLOSE-WAIT): {}",
            close_wait(front)
        );
        panic!(
            "edge1's {moved} listeners did not all come back on edge2 (it has {:?}); HAProxy {:?}; loadgen:\n{}",
            listeners(edge_addrs[1]),
            hap.servers().get("edge1"),
            lg.lines().join("\n")
        );
    };
    let down_after = down_after.or_else(|| {
        poll(within(Duration::from_secs(20)), every, || {
            hap.state("edge1")
                .starts_with("DOWN")
                .then(|| killed.elapsed())
        })
    });
    assert!(down_after.is_some(), "HAProxy never marked edge1 DOWN");
    let origin_one_after = origin_one_after.or_else(|| {
        poll(within(Duration::from_secs(20)), every, || {
            (peers(origin_addr)? == expect_one).then(|| killed.elapsed())
        })
    });
    assert!(
        origin_one_after.is_some(),
        "the origin must serve one connection per stream (edge2's) once edge1 is gone: {:?}",
        peers(origin_addr)
    );
    let origin_during = listeners(origin_addr).expect("origin /status");
    assert_eq!(origin_during, [1, 1]);
    assert!(
        edge1.wait_exit(Duration::from_secs(5)).is_some(),
        "edge1 did not die of SIGKILL"
    );
    drop(edge1);

    // Start edge1 again: HAProxy marks it up, the origin serves both edges
    // again, and new connections reach it: ARRIVALS more clients that
    // reconnect every RECONNECT_AFTER, which leastconn sends to edge1.
    let restarted = Instant::now();
    let _edge1 = start_edge(0);
    let (mut up_after, mut origin_two_after) = (None, None);
    // Both or the deadline; each is asserted below.
    poll(within(Duration::from_secs(30)), every, || {
        if up_after.is_none() && hap.state("edge1") == "UP" {
            up_after = Some(restarted.elapsed());
        }
        if origin_two_after.is_none() && peers(origin_addr) == Some(expect_both.clone()) {
            origin_two_after = Some(restarted.elapsed());
        }
        (up_after.is_some() && origin_two_after.is_some()).then_some(())
    });
    assert!(
        up_after.is_some(),
        "HAProxy never marked the restarted edge1 UP: {:?}",
        hap.servers().get("edge1")
    );
    assert!(
        origin_two_after.is_some(),
        "the origin must serve one connection per edge per stream again: {:?}",
        peers(origin_addr)
    );
    let origin_after = listeners(origin_addr).expect("origin /status");
    assert_eq!(origin_after, [2, 2]);
    let arrivals_json = dir.join("arrivals.json");
    let arrivals_started = Instant::now();
    let arrivals = loadgen_clients(
        &loadgen,
        front,
        ARRIVALS,
        &["--mix", "reconnect=1", "--reconnect-after", RECONNECT_AFTER],
        &arrivals_json,
    );
    let on_edge1_after = poll(within(Duration::from_secs(30)), every, || {
        let n = receiving(edge_addrs[0]);
        (n >= ARRIVALS / 2).then_some(n)
    });
    assert!(
        on_edge1_after.is_some(),
        "new connections do not reach the restarted edge1 through HAProxy: it has {:?}, edge2 {:?}",
        listeners(edge_addrs[0]),
        listeners(edge_addrs[1])
    );
    let arrivals_after = arrivals_started.elapsed();
    // Let every arrival get frames and reconnect at least once.
    let reconnect_after = Duration::from_secs(2);
    let all_arrived = poll(within(Duration::from_secs(30)), every, || {
        let rx = receiving(edge_addrs[0]) + receiving(edge_addrs[1]);
        (arrivals_started.elapsed() > 2 * reconnect_after && rx >= CLIENTS + ARRIVALS).then_some(())
    });
    assert!(
        all_arrived.is_some(),
        "the {ARRIVALS} new clients are not all receiving: edge1 {:?}, edge2 {:?}",
        listeners(edge_addrs[0]),
        listeners(edge_addrs[1])
    );
    // The 2,000 stayed where they were.
    assert_eq!(
        listeners(edge_addrs[1]).map(|m| m[0] + m[1] >= CLIENTS as u64),
        Some(true)
    );
    let stat = hap.servers();
    let col = |sv: &str, k: &str| -> u64 {
        stat.get(sv)
            .and_then(|r| r.get(k)?.parse().ok())
            .unwrap_or(0)
    };
    let arrivals_report = stop_loadgen(arrivals, &arrivals_json, ARRIVALS, "the arrivals");
    assert!(
        arrivals_report["connections"]["reconnects"].as_u64() > Some(0),
        "the arrivals must have reconnected:\n{arrivals_report:#}"
    );

    // Every frame any listener received was whole and checked; exactly the
    // listeners that were on edge1 saw their connection fail, once each.
    let report = stop_loadgen(lg, &json, CLIENTS, "the 2,000 listeners");
    let n = |path: &[&str]| -> u64 {
        path.iter()
            .fold(&report, |v, k| &v[*k])
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    eprintln!(
        "SCALEOUT listeners={CLIENTS} moved={moved} (edge1 {on_edge1:?} per stream) \
         time_to_move_s={} haproxy_down_s={} origin_one_per_stream_s={}",
        secs(move_time),
        secs(down_after.unwrap()),
        secs(origin_one_after.unwrap())
    );
    eprintln!(
        "SCALEOUT origin_connections per stream: before={origin_before:?} during={origin_during:?} after={origin_after:?}"
    );
    eprintln!(
        "SCALEOUT rejoin: haproxy_up_s={} origin_two_per_stream_s={} arrivals_on_edge1={} within_s={}",
        secs(up_after.unwrap()),
        secs(origin_two_after.unwrap()),
        on_edge1_after.unwrap(),
        secs(arrivals_after)
    );
    eprintln!(
        "SCALEOUT loadgen: failed_clients={} closed_early={} connect_failed={} http_errors={} timeouts={} frames_ok={} corrupt={} | arrivals: reconnects={} frames_ok={} | haproxy: edge1 stot={} edge2 stot={} redispatches={} retries={} | total_s={}",
        n(&["clients", "failed"]),
        n(&["connections", "closed_early"]),
        n(&["connections", "connect_failed"]),
        n(&["connections", "http_errors"]),
        n(&["connections", "timeouts"]),
        n(&["frames", "ok"]),
        n(&["frames", "corrupt"]),
        arrivals_report["connections"]["reconnects"],
        arrivals_report["frames"]["ok"],
        col("edge1", "stot"),
        col("edge2", "stot"),
        col("edge1", "wredis") + col("edge2", "wredis"),
        col("edge1", "wretr") + col("edge2", "wretr"),
        secs(start.elapsed())
    );
    assert_eq!(
        n(&["clients", "failed"]),
        moved,
        "exactly edge1's listeners must have lost their connection:\n{report:#}"
    );
    assert!(
        n(&["connections", "attempts"]) >= CLIENTS as u64 + moved,
        "each of them must have made a new connection:\n{report:#}"
    );
    drop(hap);
}
