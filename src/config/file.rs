//! The configuration file: any number of streams, each at its own path, plus
//! server-wide settings, in TOML (`ringcast -config FILE`;
//! `deploy/ringcast.toml` is the annotated sample).
//!
//! ```toml
//! listen = ["0.0.0.0:8000"]        # one or more; a single string works too
//! admin_listen = "127.0.0.1:8081"  # optional: /status, /metrics, / there
//! cpu_max = 2
//! log_level = "info"
//! flush_interval = "auto"         # or a fixed gathering window, e.g. "200ms"
//! listen_backlog = 4096
//! max_clients = 0
//! stat_log_interval = "1m"
//! uid = "ringcast"                 # optional: drop to this user after binding
//! health_mounts = ["/live.mp3"]    # /health is 503 while one has no source
//!
//! [[user]]                         # the credential store
//! name = "dj"                      # no ':'
//! password = "$2y$05$..."          # htpasswd -B's bcrypt, or as written
//! # password_file = "/etc/ringcast/dj.pw"  # or its first line, read at each load
//! roles = ["source"]               # source | admin | relay, at least one
//! mounts = ["/live.mp3"]           # default: every mount
//!
//! [[stream]]
//! mount = "/radio.mp3"
//! exec = ["ffmpeg", "-re", "-i", "in.mp3", "-f", "mp3", "-"]
//!                                  # or path = "...", demo = true, push = true,
//!                                  # relay = "http://host:port/mount" or a list
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
//! fallback = "/backup.mp3"         # listeners go there when this one stops
//! fallback_override = true         # ... and come back when it returns
//! fallback_after = "2s"
//! name = "Radio"                   # icy-name; also description, genre, url,
//! bitrate = 128                    # icy-br (kbit/s); public = true: icy-pub
//! icy_metaint = 16000              # in-band titles every N audio bytes; 0 = off
//! title_command = ["tail", "-F", "/run/titles"]  # or title_file = "..."
//! cors_origin = "*"                # "" = no CORS headers
//!
//! [stream.headers]                 # extra response headers
//! X-Station = "example"
//!
//! [[stream.destination]]           # also push this stream to another server
//! url = "http://icecast.example:8000/radio.mp3"
//! user = "source"
//! password = "hackme"              # as written: ringcast sends it
//! legacy_source = false            # SOURCE instead of PUT
//! retry_limit = 10                 # default: retry forever
//!
//! [[stream]]
//! mount = "/live.mp3"
//! push = true                      # encoders PUT/SOURCE here (a [[user]] with source)
//! source_timeout = "10s"           # drop an encoder silent this long
//!
//! [[stream]]
//! mount = "/relay.mp3"
//! relay = ["http://relay:pw@origin:8000/live.mp3", "http://backup:8000/live.mp3"]
//! on_demand = true                 # connect only while there are listeners
//! on_demand_idle = "10s"
//!
//! [[stream]]
//! mount = "/backup.mp3"
//! path = "/srv/loop.mp3"
//! framer = "mp3"
//! realtime = true                  # at the pace of its frames
//! loop = true                      # again from the start at its end
//!
//! [[mirror]]                       # relay every mount of an origin
//! origin = "http://master.example:8000"
//! user = "relay"                   # user and password: both or neither
//! password = "pw"
//! interval = "120s"                # re-read /admin/streamlist.txt this often
//! framer = "mp3"                   # and the stream settings of its mounts
//! on_demand = true
//!
//! [channels]                       # WebSocket /CHANNEL/KEY/publish
//! max_channels = 16                # 0 = off
//! keys = ["k3y"]                   # [a-z0-9_-]{1,128}; empty = any key
//! framer = "raw"                   # and the stream settings of each channel
//! frame_bytes = 4096
//! ```
//!
//! The keys are the settings table's (`table.rs`): each has the meaning,
//! default and limits of its flag. The tables in the file (`[[user]]`,
//! `[[stream.destination]]`, `[[mirror]]`, `[channels]`) have keys of their
//! own scopes in that table; a `[[mirror]]` and `[channels]` also take the
//! stream settings listed in `MIRROR_STREAM_KEYS` / `CHANNEL_STREAM_KEYS`
//! for the streams they create; `[stream.headers]` is free names.
//!
//! Defaults that depend on the source: a `push` or `relay` stream is mp3
//! unless `framer` says otherwise (raw frames from the network are 4096
//! bytes), its `reopen` has no meaning (a push mount waits for the next
//! encoder, a relay always reconnects) and `close_idle` is an error with it
//! (a relay's is `on_demand`). `loop = true` implies `reopen`. A `[[mirror]]`
//! is mp3 unless said otherwise (`"auto"`, the upstream's content type, is
//! not supported yet); a channel is raw, 4096-byte frames. This module reads the TOML into raw
//! settings (checking only TOML types), merges the environment over them
//! (`RINGCAST_*` wins over the file for server-wide settings, and for the
//! stream of a one-stream file; a per-stream variable with several streams
//! is an error), and hands them to the one validator.
//!
//! Every problem is reported, each with the line it is on, so
//! `ringcast -config FILE -check-config` lists them all at once. Keys that are
//! not known are problems too (a typo must not silently mean a default).

use std::fmt;
use std::path::{Path, PathBuf};

use super::env::Environment;
use super::raw::{Fault, Given, Layer, Origin, Place, Problem, Value};
use super::table::{def, lookup, Found, Kind, Scope};
use super::validate::{validate, Mode};
use super::Config;

/// Paths ringcast answers itself (status, metrics); a stream cannot use them.
pub const RESERVED_PATHS: &[&str] = &[
    "/status",
    "/status/clients",
    "/metrics",
    "/status.html",
    "/health",
    "/status-json.xsl",
    "/admin/metadata",
    "/admin/metadata.xsl",
    "/admin/streamlist.txt",
    "/admin.cgi",
];

/// The problems found in a configuration file and the environment applied
/// over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// Each problem in the file, with its line (1-based) when known, in
    /// line order.
    pub problems: Vec<(Option<usize>, String)>,
    /// Each problem of a value from outside the file (an environment
    /// variable, a flag), naming it.
    pub outside: Vec<String>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len() + self.outside.len();
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
        for msg in &self.outside {
            write!(f, "\n  {msg}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

/// Read and validate a configuration file, with the environment `env` and
/// the command-line flags `flags` (only `-log-level` may be there) over it.
pub(crate) fn load(path: &Path, flags: &Layer, env: &Environment) -> Result<Config, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_owned(),
        problems: vec![(None, format!("cannot read: {e}"))],
        outside: Vec::new(),
    })?;
    let mut config = from_text(&text, flags, env).map_err(|(problems, outside)| FileError {
        path: path.to_owned(),
        problems,
        outside,
    })?;
    config.config_file = Some(path.to_owned());
    Ok(config)
}

/// The problems of a file, rendered: those in the file (line, text) and
/// those outside it.
type Rendered = (Vec<(Option<usize>, String)>, Vec<String>);

/// Validate the text of a configuration file with `flags` and `env` over
/// it; the problems rendered for the file's reader.
pub(crate) fn from_text(text: &str, flags: &Layer, env: &Environment) -> Result<Config, Rendered> {
    let lines = Lines::new(text);
    check(text, &lines, flags, env).map_err(|problems| render(problems, &lines))
}

/// Validate the text of a configuration file with `flags` and `env` over
/// it: the configuration, or every problem.
pub(crate) fn check(
    text: &str,
    lines: &Lines<'_>,
    flags: &Layer,
    env: &Environment,
) -> Result<Config, Vec<Problem>> {
    let file = read(text, lines)?;
    let mut problems = file.problems;
    problems.extend(env.problems.iter().cloned());

    // Precedence: flag > environment > file > RUST_LOG > default.
    let env_server = env.layer.only(Scope::Server);
    let server = Layer::merge(&[flags, &env_server, &file.server, &env.rust_log]);
    let env_stream = env.layer.only(Scope::Stream);
    let streams: Vec<Layer> = if file.streams.len() > 1 {
        for (s, g) in env_stream.iter() {
            let key = def(s).key;
            problems.push(Problem {
                setting: Some(s),
                place: Place::Top,
                origin: g.origin.clone(),
                fault: Fault::Conflict,
                message: format!(
                    "sets a per-stream setting, but the file has {} streams: \
                     set {key} in each [[stream]] instead",
                    file.streams.len()
                ),
            });
        }
        file.streams
    } else {
        file.streams
            .iter()
            .map(|s| Layer::merge(&[&env_stream, s]))
            .collect()
    };
    match validate(&server, &streams, Mode::File) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(problems),
        Err(more) => {
            problems.extend(more);
            Err(problems)
        }
    }
}

/// Each problem as the file's reader shows it: `stream #2 frame_bytes: ...`
/// at its line, or `RINGCAST_FRAME_BYTES: ...` outside the file.
fn render(problems: Vec<Problem>, lines: &Lines<'_>) -> Rendered {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for p in problems {
        let (key, place, line) = match (&p.origin, p.setting) {
            (Origin::File { key, place, line }, _) => (key.clone(), *place, *line),
            (_, Some(s)) => (def(s).key.to_owned(), p.place, None),
            (_, None) => (String::new(), p.place, None),
        };
        match &p.origin {
            Origin::Env(name) => {
                outside.push(format!("{name}: {}", p.message));
                continue;
            }
            Origin::Flag(flag) => {
                outside.push(format!("-{flag}: {}", p.message));
                continue;
            }
            Origin::File { .. } | Origin::Default => {}
        }
        let line = line.or_else(|| lines.of(place, &key));
        let label = place.label(&key);
        let text = if label.is_empty() {
            p.message
        } else {
            format!("{label}: {}", p.message)
        };
        inside.push((line, text));
    }
    // In line order; problems without a line last.
    inside.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
    (inside, outside)
}

/// What a file sets, before validation.
struct FileSettings {
    server: Layer,
    streams: Vec<Layer>,
    /// Problems of TOML types and keys.
    problems: Vec<Problem>,
}

/// Read the TOML: each known key's value, of the TOML type its kind wants,
/// into raw settings (the tables of `[[user]]`, `[[mirror]]`, `[channels]`,
/// `[[stream.destination]]` into layers of their own, `[stream.headers]`
/// into name/value pairs); anything else is a problem. Only text that is
/// not TOML at all is an error on its own.
fn read(text: &str, lines: &Lines<'_>) -> Result<FileSettings, Vec<Problem>> {
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let line = e
                .span()
                .map(|sp| text[..sp.start.min(text.len())].lines().count().max(1));
            return Err(vec![Problem {
                setting: None,
                place: Place::Top,
                origin: Origin::File {
                    key: String::new(),
                    place: Place::Top,
                    line,
                },
                fault: Fault::Syntax,
                message: format!("not valid TOML: {}", e.message()),
            }]);
        }
    };
    let mut problems = Vec::new();
    let server = read_table(&table, Place::Top, Scope::Server, lines, &mut problems);
    let mut streams = Vec::new();
    let problem = |place: Place, key: &str, fault, message: &str| Problem {
        setting: None,
        place,
        origin: Origin::File {
            key: key.to_owned(),
            place,
            line: lines.of(place, key),
        },
        fault,
        message: message.to_owned(),
    };
    match table.get("stream") {
        // Streams made while running: WebSocket channels, mirrored mounts.
        None if table.contains_key("channels") || table.contains_key("mirror") => {}
        None => problems.push(Problem {
            setting: None,
            place: Place::Top,
            origin: Origin::File {
                key: String::new(),
                place: Place::Top,
                line: None,
            },
            fault: Fault::Missing,
            message: "no [[stream]] configured".to_owned(),
        }),
        Some(toml::Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let place = Place::Stream(i);
                match item {
                    toml::Value::Table(t) => {
                        streams.push(read_table(t, place, Scope::Stream, lines, &mut problems));
                    }
                    _ => problems.push(problem(
                        place,
                        "",
                        Fault::Syntax,
                        "must be a [[stream]] table",
                    )),
                }
            }
        }
        Some(_) => problems.push(problem(
            Place::Top,
            "stream",
            Fault::Syntax,
            "write each stream as a [[stream]] table",
        )),
    }
    Ok(FileSettings {
        server,
        streams,
        problems,
    })
}

/// The place of the `index`-th table of `scope` written in `parent`.
fn child(parent: Place, scope: Scope, index: usize) -> Place {
    match (parent, scope) {
        (Place::Stream(i), _) => Place::Destination(i, index),
        (_, Scope::User) => Place::User(index),
        (_, Scope::Mirror) => Place::Mirror(index),
        _ => Place::Channels,
    }
}

/// How a table of `scope` is written, for messages.
fn table_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Server => "the top level",
        Scope::Stream => "[[stream]]",
        Scope::User => "[[user]]",
        Scope::Destination => "[[stream.destination]]",
        Scope::Mirror => "[[mirror]]",
        Scope::Channels => "[channels]",
        Scope::Run => "the command line",
    }
}

/// The settings of one table of the file: the top level, a `[[stream]]`,
/// or one of the tables in them.
fn read_table(
    table: &toml::Table,
    place: Place,
    scope: Scope,
    lines: &Lines<'_>,
    problems: &mut Vec<Problem>,
) -> Layer {
    let mut layer = Layer::default();
    for (key, value) in table {
        if place == Place::Top && key == "stream" {
            continue;
        }
        let origin = Origin::File {
            key: key.clone(),
            place,
            line: lines.of(place, key),
        };
        let unknown = |message: String| Problem {
            setting: None,
            place,
            origin: origin.clone(),
            fault: Fault::Unknown,
            message,
        };
        let d = match lookup(scope, key) {
            Found::Key(d) => d,
            Found::Elsewhere(d) => {
                let why = match (scope, d.scope) {
                    (Scope::Server, Scope::Stream) => {
                        "is a per-stream setting: set it in each [[stream]]".to_owned()
                    }
                    _ => format!(
                        "is a setting of {}, not of {}",
                        table_name(d.scope),
                        table_name(scope)
                    ),
                };
                problems.push(unknown(why));
                continue;
            }
            Found::Unknown => {
                problems.push(unknown("unknown setting".to_owned()));
                continue;
            }
        };
        let mut syntax = |why: String| {
            problems.push(Problem {
                setting: Some(d.setting),
                place,
                origin: origin.clone(),
                fault: Fault::Syntax,
                message: why,
            });
            Value::Broken
        };
        let value = match (d.kind, value) {
            (Kind::Tables(sub), toml::Value::Array(items))
                if items.iter().all(toml::Value::is_table) =>
            {
                let mut layers = Vec::new();
                for (j, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        let at = child(place, sub, j);
                        layers.push(read_table(t, at, sub, lines, problems));
                    }
                }
                Value::Tables(layers)
            }
            (Kind::Tables(sub), v) => syntax(format!(
                "must be {} tables, not {}",
                table_name(sub),
                describe(v)
            )),
            (Kind::Table(sub), toml::Value::Table(t)) => {
                let at = child(place, sub, 0);
                Value::Tables(vec![read_table(t, at, sub, lines, problems)])
            }
            (Kind::Table(sub), v) => syntax(format!(
                "must be a {} table, not {}",
                table_name(sub),
                describe(v)
            )),
            (Kind::Headers, toml::Value::Table(t)) => {
                let Place::Stream(i) = place else {
                    continue;
                };
                let at = Place::Headers(i);
                let mut pairs = Vec::new();
                for (name, v) in t {
                    let origin = Origin::File {
                        key: name.clone(),
                        place: at,
                        line: lines.of(at, name),
                    };
                    let value = match v.as_str() {
                        Some(text) => Value::Text(text.into()),
                        None => {
                            problems.push(Problem {
                                setting: Some(d.setting),
                                place: at,
                                origin: origin.clone(),
                                fault: Fault::Syntax,
                                message: format!("must be a string, not {}", describe(v)),
                            });
                            Value::Broken
                        }
                    };
                    pairs.push((name.clone(), Given { value, origin }));
                }
                Value::Pairs(pairs)
            }
            (Kind::Headers, v) => syntax(format!(
                "must be a table of Name = \"value\" ([stream.headers]), not {}",
                describe(v)
            )),
            (kind, v) => typed(kind, v).unwrap_or_else(&mut syntax),
        };
        layer.set(d.setting, value, origin);
    }
    layer
}

/// A TOML value as the raw value of a setting of `kind`, if it has the TOML
/// type that kind wants.
fn typed(kind: Kind, v: &toml::Value) -> Result<Value, String> {
    let text = |v: &toml::Value| v.as_str().map(|s| Value::Text(s.into()));
    let strings = |items: &[toml::Value]| {
        items
            .iter()
            .map(|w| w.as_str().map(Into::into))
            .collect::<Option<Vec<_>>>()
            .map(Value::List)
    };
    let (value, wants) = match kind {
        Kind::Bool => (v.as_bool().map(Value::Bool), "true or false"),
        Kind::Int { .. } => (v.as_integer().map(Value::Int), "an integer"),
        Kind::Duration => (text(v), "a string such as \"250ms\", \"30s\", \"1m\""),
        Kind::Text | Kind::Path | Kind::Address => (text(v), "a string"),
        Kind::Addresses => match v {
            toml::Value::Array(items) => (strings(items), "a list of address strings"),
            _ => (text(v), "an address or a list of them"),
        },
        Kind::Urls => match v {
            toml::Value::Array(items) => (strings(items), "a list of URL strings"),
            _ => (text(v), "a URL string or a list of them"),
        },
        Kind::Strings => (
            v.as_array().and_then(|items| strings(items)),
            "a list of strings: [\"a\", \"b\"]",
        ),
        Kind::Command => (
            v.as_array().and_then(|items| strings(items)),
            "a list of strings: [\"program\", \"arg\", ...] (no shell)",
        ),
        Kind::User => match v {
            toml::Value::Integer(n) => (Some(Value::Int(*n)), ""),
            _ => (text(v), "a uid or a user name"),
        },
        // Read by read_table.
        Kind::Tables(_) | Kind::Table(_) | Kind::Headers => (None, "a table"),
    };
    value.ok_or_else(|| format!("must be {wants}, not {}", describe(v)))
}

/// A TOML value's type, for a message.
fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::Array(items) if items.iter().any(|i| !i.is_str()) => {
            "a list with a non-string".to_owned()
        }
        other => other.type_str().to_owned(),
    }
}

/// Where keys are in the text: good enough to point at a line.
pub(crate) struct Lines<'a> {
    lines: Vec<&'a str>,
    /// Each table header (`[[stream]]`, `[stream.headers]`, ...): its line
    /// index (0-based) and the table it opens (`None`: one ringcast has no
    /// place for).
    sections: Vec<(usize, Option<Place>)>,
}

/// A table header line: `[[name]]` (true) or `[name]` (false), the name
/// with spaces around dots removed. Only bare names: a line of a
/// multi-line array (`["a", "b"],`) is not a header.
fn header(line: &str) -> Option<(bool, String)> {
    let t = line.trim();
    let t = t.split_once('#').map_or(t, |(before, _)| before).trim_end();
    let (array, inner) = if let Some(i) = t.strip_prefix("[[").and_then(|t| t.strip_suffix("]]")) {
        (true, i)
    } else {
        (false, t.strip_prefix('[')?.strip_suffix(']')?)
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ');
    if inner.trim().is_empty() || !inner.chars().all(ok) {
        return None;
    }
    let name: Vec<&str> = inner.split('.').map(str::trim).collect();
    Some((array, name.join(".")))
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        let lines: Vec<&str> = text.lines().collect();
        let mut sections = Vec::new();
        // Tables seen so far: streams, destinations of the current stream,
        // users, mirrors.
        let (mut streams, mut dests, mut users, mut mirrors) = (0usize, 0, 0, 0);
        for (i, l) in lines.iter().enumerate() {
            let Some((array, name)) = header(l) else {
                continue;
            };
            let current = streams.checked_sub(1);
            let place = match (array, name.as_str(), current) {
                (true, "stream", _) => {
                    streams += 1;
                    dests = 0;
                    Some(Place::Stream(streams - 1))
                }
                (true, "stream.destination", Some(s)) => {
                    dests += 1;
                    Some(Place::Destination(s, dests - 1))
                }
                (false, "stream.headers", Some(s)) => Some(Place::Headers(s)),
                (true, "user", _) => {
                    users += 1;
                    Some(Place::User(users - 1))
                }
                (true, "mirror", _) => {
                    mirrors += 1;
                    Some(Place::Mirror(mirrors - 1))
                }
                (false, "channels", _) => Some(Place::Channels),
                _ => None,
            };
            sections.push((i, place));
        }
        Lines { lines, sections }
    }

    /// The 1-based line of `key` in the table `place` (else the line of
    /// that table's header; for a table written inline, the line of its key
    /// in the table around it).
    fn of(&self, place: Place, key: &str) -> Option<usize> {
        // Each run of lines of this table: (header line or None, from, to).
        let next = |at: usize| {
            self.sections
                .iter()
                .map(|(l, _)| *l)
                .find(|&l| l > at)
                .unwrap_or(self.lines.len())
        };
        let runs: Vec<(Option<usize>, usize, usize)> = if place == Place::Top {
            let to = self.sections.first().map_or(self.lines.len(), |(l, _)| *l);
            vec![(None, 0, to)]
        } else {
            self.sections
                .iter()
                .filter(|(_, p)| *p == Some(place))
                .map(|&(l, _)| (Some(l), l + 1, next(l)))
                .collect()
        };
        if runs.is_empty() {
            let (parent, parent_key) = place.parent()?;
            return self.of(parent, parent_key);
        }
        if !key.is_empty() {
            for &(_, from, to) in &runs {
                for (i, l) in self.lines.iter().enumerate().take(to).skip(from) {
                    let t = l.trim_start();
                    let t = t
                        .strip_prefix('"')
                        .or_else(|| t.strip_prefix('\''))
                        .unwrap_or(t);
                    if let Some(rest) = t.strip_prefix(key) {
                        let rest = rest
                            .strip_prefix('"')
                            .or_else(|| rest.strip_prefix('\''))
                            .unwrap_or(rest)
                            .trim_start();
                        if rest.starts_with('=') {
                            return Some(i + 1);
                        }
                    }
                }
            }
        }
        runs[0].0.map(|l| l + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FramerKind, SourceSpec};
    use std::time::Duration;

    /// Validate a file's text with no environment; every problem, those
    /// outside the file without a line.
    fn parse(text: &str) -> Result<Config, Vec<(Option<usize>, String)>> {
        from_text(text, &Layer::default(), &Environment::default()).map_err(|(mut p, o)| {
            p.extend(o.into_iter().map(|m| (None, m)));
            p
        })
    }

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
        assert_eq!(c.flush_interval, Some(Duration::from_millis(50)));
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
