//! The configuration file: any number of streams, each at its own path, plus
//! global settings, in TOML (`ringcast -config FILE`; `deploy/ringcast.toml` is
//! the annotated sample).
//!
//! ```toml
//! listen = ["0.0.0.0:8000"]        # one or more; a single string works too
//! admin_listen = "127.0.0.1:8081"  # optional: /status, /metrics, / there
//! cpu_max = 2
//! log_level = "info"
//! flush_interval = "200ms"
//! listen_backlog = 4096
//! max_clients = 0
//! stat_log_interval = "1m"
//! uid = "ringcast"                 # optional: drop to this user after binding
//!
//! [[stream]]
//! mount = "/radio.mp3"
//! exec = ["ffmpeg", "-re", "-i", "in.mp3", "-f", "mp3", "-"]  # or path = "...", or demo = true
//! framer = "mp3"                   # raw | mp3 | aac | ogg
//! frame_bytes = 2881
//! source_buffer = 512
//! content_type = "audio/mpeg"
//! reopen = true
//! close_idle = false
//! header_bytes = 0
//! source_bandwidth = 0
//! client_max_bytes = 0
//! max_quiet_interval = "30s"
//! max_clients = 0
//! burst_bytes = 65536              # fast start: recent frames up to this many bytes
//! burst_ms = 2000                  # ... or this long at the measured source rate
//! ```
//!
//! Every problem in a file is reported, each with the line it is on, so
//! `ringcast -config FILE -check-config` lists them all at once. Keys that are
//! not known are problems too (a typo must not silently mean a default).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    check_header_value, cpus_online, parse_address, parse_duration, parse_level, parse_uid, Config,
    FramerKind, SourceSpec, StreamConfig,
};

/// Paths ringcast answers itself (status, metrics); a stream cannot use them.
pub const RESERVED_PATHS: &[&str] = &["/status", "/status/clients", "/metrics", "/status.html"];

/// The problems found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Each problem with its line (1-based) when known.
    pub problems: Vec<(Option<usize>, String)>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for (line, msg) in &self.problems {
            match line {
                Some(l) => write!(f, "\n  {}:{l}: {msg}", self.path.display())?,
                None => write!(f, "\n  {}: {msg}", self.path.display())?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// Read and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_owned(),
        problems: vec![(None, format!("cannot read: {e}"))],
    })?;
    let mut config = parse(&text).map_err(|problems| FileError {
        path: path.to_owned(),
        problems,
    })?;
    config.config_file = Some(path.to_owned());
    Ok(config)
}

/// True when the file sets `log_level` itself (then RUST_LOG does not
/// override it).
pub fn sets_log_level(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("log_level"))
}

/// Where keys are in the text: good enough to point at a line.
struct Lines<'a> {
    lines: Vec<&'a str>,
    /// Line index (0-based) where each `[[stream]]` table starts.
    stream_starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let lines: Vec<&str> = text.lines().collect();
        let stream_starts = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim_start().starts_with("[[stream]]"))
            .map(|(i, _)| i)
            .collect();
        Lines {
            lines,
            stream_starts,
        }
    }

    /// The 1-based line of `key` at the top level (`stream` = None) or in
    /// the n-th `[[stream]]` table.
    fn of(&self, stream: Option<usize>, key: &str) -> Option<usize> {
        let (from, to) = match stream {
            None => (
                0,
                self.stream_starts
                    .first()
                    .copied()
                    .unwrap_or(self.lines.len()),
            ),
            Some(i) => (
                *self.stream_starts.get(i)?,
                self.stream_starts
                    .get(i + 1)
                    .copied()
                    .unwrap_or(self.lines.len()),
            ),
        };
        for (i, l) in self.lines.iter().enumerate().take(to).skip(from) {
            let t = l.trim_start();
            let t = t.strip_prefix('"').unwrap_or(t);
            if let Some(rest) = t.strip_prefix(key) {
                let rest = rest.strip_prefix('"').unwrap_or(rest).trim_start();
                if rest.starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
        stream
            .and_then(|i| self.stream_starts.get(i))
            .map(|l| l + 1)
    }
}

/// Collects problems while values are read.
struct Reader<'a> {
    lines: Lines<'a>,
    problems: Vec<(Option<usize>, String)>,
}

impl Reader<'_> {
    fn problem(&mut self, stream: Option<usize>, key: &str, msg: impl fmt::Display) {
        let line = self.lines.of(stream, key);
        let place = match stream {
            Some(i) => format!("stream #{} {key}", i + 1),
            None => key.to_string(),
        };
        self.problems.push((line, format!("{place}: {msg}")));
    }

    fn string(&mut self, t: &toml::Table, s: Option<usize>, key: &str) -> Option<String> {
        match t.get(key)? {
            toml::Value::String(v) => Some(v.clone()),
            other => {
                self.problem(
                    s,
                    key,
                    format!("must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, t: &toml::Table, s: Option<usize>, key: &str) -> Option<bool> {
        match t.get(key)? {
            toml::Value::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    s,
                    key,
                    format!("must be true or false, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn int(
        &mut self,
        t: &toml::Table,
        s: Option<usize>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        match t.get(key)? {
            toml::Value::Integer(n) if (min..=max).contains(n) => Some(*n),
            toml::Value::Integer(n) => {
                self.problem(s, key, format!("{n} is out of range ({min} to {max})"));
                None
            }
            other => {
                self.problem(
                    s,
                    key,
                    format!("must be an integer, not {}", other.type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, t: &toml::Table, s: Option<usize>, key: &str) -> Option<Duration> {
        let v = self.string(t, s, key)?;
        match parse_duration(&v) {
            Ok(d) => Some(d),
            Err(why) => {
                self.problem(
                    s,
                    key,
                    format!("{v:?}: {why} (write e.g. \"250ms\", \"30s\", \"1m\")"),
                );
                None
            }
        }
    }

    fn address(&mut self, s: Option<usize>, key: &str, v: &str) -> Option<SocketAddr> {
        match parse_address(v) {
            Ok(a) => Some(a),
            Err(why) => {
                self.problem(s, key, format!("{v:?}: {why}"));
                None
            }
        }
    }
}

const GLOBAL_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "cpu_max",
    "log_level",
    "flush_interval",
    "listen_backlog",
    "max_clients",
    "stat_log_interval",
    "uid",
    "stream",
];

const STREAM_KEYS: &[&str] = &[
    "mount",
    "exec",
    "path",
    "demo",
    "framer",
    "frame_bytes",
    "source_buffer",
    "content_type",
    "reopen",
    "close_idle",
    "header_bytes",
    "source_bandwidth",
    "client_max_bytes",
    "max_quiet_interval",
    "max_clients",
    "burst_bytes",
    "burst_ms",
];

/// Parse the text of a configuration file.
pub fn parse(text: &str) -> Result<Config, Vec<(Option<usize>, String)>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].lines().count().max(1));
            return Err(vec![(line, format!("not valid TOML: {}", e.message()))]);
        }
    };
    let mut r = Reader {
        lines: Lines::new(text),
        problems: Vec::new(),
    };
    for key in table.keys() {
        if !GLOBAL_KEYS.contains(&key.as_str()) {
            r.problem(None, key, "unknown setting");
        }
    }

    let mut listen = Vec::new();
    match table.get("listen") {
        None => listen.push(SocketAddr::from(([0, 0, 0, 0], 80))),
        Some(toml::Value::String(s)) => listen.extend(r.address(None, "listen", s)),
        Some(toml::Value::Array(items)) => {
            for item in items {
                match item {
                    toml::Value::String(s) => listen.extend(r.address(None, "listen", s)),
                    other => r.problem(
                        None,
                        "listen",
                        format!("addresses are strings, not {}", other.type_str()),
                    ),
                }
            }
            if items.is_empty() {
                r.problem(None, "listen", "needs at least one address");
            }
        }
        Some(other) => r.problem(
            None,
            "listen",
            format!(
                "must be an address or a list of them, not {}",
                other.type_str()
            ),
        ),
    }
    let admin_listen = r
        .string(&table, None, "admin_listen")
        .and_then(|s| r.address(None, "admin_listen", &s));
    let online = cpus_online();
    let cpu_max = r
        .int(&table, None, "cpu_max", 1, online as i64)
        .map(|n| n as usize)
        .unwrap_or(online);
    let log_level = match r.string(&table, None, "log_level") {
        Some(s) => parse_level(&s).unwrap_or_else(|| {
            r.problem(
                None,
                "log_level",
                format!("{s:?}: must be error, warn, info, debug or trace"),
            );
            log::LevelFilter::Info
        }),
        None => log::LevelFilter::Info,
    };
    let flush_interval = r
        .duration(&table, None, "flush_interval")
        .unwrap_or(super::DEFAULT_FLUSH_INTERVAL);
    let listen_backlog = r
        .int(&table, None, "listen_backlog", 1, 65535)
        .unwrap_or(4096) as u32;
    let max_clients = r.int(&table, None, "max_clients", 0, i64::MAX).unwrap_or(0) as usize;
    let stat_log_interval = r
        .duration(&table, None, "stat_log_interval")
        .filter(|d| !d.is_zero());
    let uid = match table.get("uid") {
        None => None,
        Some(toml::Value::Integer(n)) => match parse_uid(&n.to_string()) {
            Ok(u) => Some(u),
            Err(why) => {
                r.problem(None, "uid", why);
                None
            }
        },
        Some(toml::Value::String(s)) => match parse_uid(s) {
            Ok(u) => Some(u),
            Err(why) => {
                r.problem(None, "uid", format!("{s:?}: {why}"));
                None
            }
        },
        Some(other) => {
            r.problem(
                None,
                "uid",
                format!("must be a uid or a user name, not {}", other.type_str()),
            );
            None
        }
    };

    let mut streams = Vec::new();
    match table.get("stream") {
        None => r
            .problems
            .push((None, "no [[stream]] configured".to_string())),
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    toml::Value::Table(t) => {
                        if let Some(sc) = stream(&mut r, i, t) {
                            streams.push(sc);
                        }
                    }
                    _ => r.problem(Some(i), "stream", "must be a [[stream]] table"),
                }
            }
        }
        Some(_) => r.problem(None, "stream", "write each stream as a [[stream]] table"),
    }
    for (i, s) in streams.iter().enumerate() {
        if streams[..i].iter().any(|o| o.mount == s.mount) {
            let m = s.mount.clone().unwrap_or_default();
            r.problems
                .push((None, format!("two streams share the mount {m:?}")));
        }
    }

    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    Ok(Config {
        listen,
        admin_listen,
        config_file: None,
        cpu_max,
        stat_log_interval,
        uid,
        flush_interval,
        listen_backlog,
        max_clients,
        log_level,
        streams,
    })
}

/// One `[[stream]]` table (index `i`).
fn stream(r: &mut Reader<'_>, i: usize, t: &toml::Table) -> Option<StreamConfig> {
    let s = Some(i);
    let before = r.problems.len();
    for key in t.keys() {
        if !STREAM_KEYS.contains(&key.as_str()) {
            r.problem(s, key, "unknown setting");
        }
    }
    let mount = match r.string(t, s, "mount") {
        Some(m) if !m.starts_with('/') => {
            r.problem(s, "mount", format!("{m:?} must start with '/'"));
            None
        }
        Some(m) if RESERVED_PATHS.contains(&m.as_str()) => {
            r.problem(
                s,
                "mount",
                format!("{m:?} is reserved for ringcast's status"),
            );
            None
        }
        Some(m) if m.contains(['?', '#', ' ']) => {
            r.problem(s, "mount", format!("{m:?} must be a plain path"));
            None
        }
        Some(m) => Some(m),
        None => {
            if !t.contains_key("mount") {
                r.problem(
                    s,
                    "mount",
                    "missing (the path the stream is served at, e.g. \"/radio.mp3\")",
                );
            }
            None
        }
    };
    let exec = match t.get("exec") {
        None => None,
        Some(toml::Value::Array(words)) => {
            let words: Vec<String> = words
                .iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect();
            if words.is_empty() || words[0].is_empty() {
                r.problem(s, "exec", "needs a command: [\"program\", \"arg\", ...]");
                None
            } else {
                Some(SourceSpec::Exec {
                    program: words[0].clone(),
                    args: words[1..].to_vec(),
                })
            }
        }
        Some(_) => {
            r.problem(
                s,
                "exec",
                "must be a list of strings: [\"program\", \"arg\", ...] (no shell)",
            );
            None
        }
    };
    let path = r
        .string(t, s, "path")
        .map(|p| SourceSpec::Path(PathBuf::from(p)));
    let demo = r
        .boolean(t, s, "demo")
        .unwrap_or(false)
        .then_some(SourceSpec::Demo);
    let given = [
        exec.is_some() || t.contains_key("exec"),
        path.is_some(),
        demo.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        r.problem(
            s,
            "mount",
            "give exactly one source: exec = [...], path = \"...\" or demo = true",
        );
    }
    let source = exec.or(path).or(demo);
    let framer = match r.string(t, s, "framer").as_deref() {
        None | Some("raw") | Some("") => FramerKind::Raw,
        Some("mp3") => FramerKind::Mp3,
        Some("aac") => FramerKind::Aac,
        Some("ogg") => FramerKind::Ogg,
        Some(other) => {
            r.problem(
                s,
                "framer",
                format!("{other:?}: must be raw, mp3, aac or ogg"),
            );
            FramerKind::Raw
        }
    };
    let is_demo = matches!(source, Some(SourceSpec::Demo));
    let default_frame = if is_demo {
        crate::demo::FRAME_BYTES
    } else {
        crate::framing::largest_frame(framer).unwrap_or(64)
    };
    let frame_bytes = r
        .int(t, s, "frame_bytes", 1, 64 << 20)
        .map(|n| n as usize)
        .unwrap_or(default_frame);
    let source_buffer = r
        .int(t, s, "source_buffer", 3, 1 << 24)
        .map(|n| n as usize)
        .unwrap_or(64);
    if frame_bytes.saturating_mul(source_buffer) > 4 << 30 {
        r.problem(
            s,
            "source_buffer",
            "the ring (frame_bytes × source_buffer) would exceed 4 GiB",
        );
    }
    let content_type = match r.string(t, s, "content_type") {
        Some(ct) => {
            if let Err(why) = check_header_value(&ct) {
                r.problem(s, "content_type", why);
            }
            ct
        }
        None if is_demo => crate::demo::CONTENT_TYPE.to_string(),
        None if framer == FramerKind::Mp3 => "audio/mpeg".to_string(),
        None if framer == FramerKind::Aac => "audio/aac".to_string(),
        None if framer == FramerKind::Ogg => "audio/ogg".to_string(),
        None => "application/octet-stream".to_string(),
    };
    let reopen = r.boolean(t, s, "reopen").unwrap_or(true);
    let close_idle = r.boolean(t, s, "close_idle").unwrap_or(false);
    let header_bytes = r
        .int(t, s, "header_bytes", 0, 1 << 20)
        .map(|n| n as usize)
        .unwrap_or(if is_demo {
            crate::demo::HEADER_BYTES
        } else {
            0
        });
    let source_bandwidth = r.int(t, s, "source_bandwidth", 0, i64::MAX).unwrap_or(0) as u64;
    let client_max_bytes = r.int(t, s, "client_max_bytes", 0, i64::MAX).unwrap_or(0) as u64;
    let max_quiet_interval = r
        .duration(t, s, "max_quiet_interval")
        .filter(|d| !d.is_zero());
    let max_clients = r.int(t, s, "max_clients", 0, i64::MAX).unwrap_or(0) as usize;
    let burst_bytes = r.int(t, s, "burst_bytes", 0, i64::MAX).unwrap_or(0) as u64;
    let burst = r
        .int(t, s, "burst_ms", 0, 3_600_000)
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms as u64));
    if r.problems.len() != before {
        return None;
    }
    Some(StreamConfig {
        mount,
        source: source?,
        framer,
        frame_bytes,
        header_bytes,
        source_buffer,
        source_bandwidth,
        client_max_bytes,
        close_idle,
        content_type,
        reopen,
        max_quiet_interval,
        max_clients,
        burst_bytes,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = ["127.0.0.1:0", "[::1]:0"]
log_level = "debug"
flush_interval = "50ms"

[[stream]]
mount = "/a.mp3"
exec = ["sh", "-c", "cat /dev/zero"]
framer = "mp3"

[[stream]]
mount = "/pcm"
path = "/tmp/fifo"
frame_bytes = 4410
source_buffer = 100
max_clients = 3
max_quiet_interval = "5s"
"#;

    #[test]
    fn aac_and_ogg_framers_have_their_defaults() {
        let c = parse(
            r#"
[[stream]]
mount = "/a.aac"
path = "/tmp/a"
framer = "aac"

[[stream]]
mount = "/b.ogg"
path = "/tmp/b"
framer = "ogg"

[[stream]]
mount = "/c.ogg"
path = "/tmp/c"
framer = "ogg"
frame_bytes = 9000
content_type = "application/ogg"
"#,
        )
        .unwrap();
        let s: Vec<_> = c
            .streams
            .iter()
            .map(|s| (s.framer, s.frame_bytes, s.content_type.as_str()))
            .collect();
        assert_eq!(
            s,
            vec![
                (FramerKind::Aac, 8191, "audio/aac"),
                (FramerKind::Ogg, 65307, "audio/ogg"),
                (FramerKind::Ogg, 9000, "application/ogg"),
            ]
        );
    }

    #[test]
    fn good_file() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.flush_interval, Duration::from_millis(50));
        assert_eq!(c.streams.len(), 2);
        let a = &c.streams[0];
        assert_eq!(a.mount.as_deref(), Some("/a.mp3"));
        assert_eq!(a.framer, FramerKind::Mp3);
        assert_eq!(a.frame_bytes, 2881);
        assert_eq!(a.content_type, "audio/mpeg");
        assert!(
            matches!(&a.source, SourceSpec::Exec { program, args } if program == "sh" && args.len() == 2)
        );
        let b = &c.streams[1];
        assert_eq!(b.frame_bytes, 4410);
        assert_eq!(b.max_clients, 3);
        assert_eq!(b.max_quiet_interval, Some(Duration::from_secs(5)));
        assert_eq!(b.source, SourceSpec::Path("/tmp/fifo".into()));
    }

    #[test]
    fn every_problem_with_its_line() {
        let bad = r#"listen = "nowhere"
colour = "blue"

[[stream]]
mount = "radio"
exec = ["x"]
frame_bytes = 0

[[stream]]
mount = "/b"
path = "/x"
exec = ["y"]
source_buffer = 2
flush = "1s"
"#;
        let problems = parse(bad).unwrap_err();
        let lines: Vec<Option<usize>> = problems.iter().map(|p| p.0).collect();
        let text: Vec<&str> = problems.iter().map(|p| p.1.as_str()).collect();
        assert!(problems.len() >= 7, "{problems:?}");
        assert!(
            text.iter().any(|t| t.contains("colour: unknown")),
            "{text:?}"
        );
        assert!(lines.contains(&Some(1)), "listen on line 1: {problems:?}");
        assert!(lines.contains(&Some(2)));
        assert!(lines.contains(&Some(5)), "mount on line 5: {problems:?}");
        assert!(
            lines.contains(&Some(7)),
            "frame_bytes on line 7: {problems:?}"
        );
        assert!(
            lines.contains(&Some(13)),
            "source_buffer on line 13: {problems:?}"
        );
        assert!(
            lines.contains(&Some(14)),
            "unknown flush on line 14: {problems:?}"
        );
        assert!(text.iter().any(|t| t.contains("exactly one source")));
    }

    #[test]
    fn syntax_error_has_a_line() {
        let problems = parse("listen = [\n\"a\"\n[[stream]]\n").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].0.is_some());
        assert!(problems[0].1.contains("not valid TOML"));
    }

    #[test]
    fn duplicate_and_reserved_mounts() {
        let t = "[[stream]]\nmount = \"/x\"\ndemo = true\n[[stream]]\nmount = \"/x\"\ndemo = true\n[[stream]]\nmount = \"/metrics\"\ndemo = true\n";
        let problems = parse(t).unwrap_err();
        assert!(problems.iter().any(|p| p.1.contains("share the mount")));
        assert!(problems.iter().any(|p| p.1.contains("reserved")));
    }

    #[test]
    fn no_streams_is_a_problem() {
        assert!(parse("listen = \":0\"\n").is_err());
    }
}
