//! Configuration: the streamserve-compatible command line, the TOML file and
//! the environment, turned into one validated [`Config`].
//!
//! # One path for settings
//!
//! ```text
//!  command line ──scan (Go flag rules)──┐
//!  environment ──RINGCAST_<FLAG>────────┼─► raw settings ─merge─► validate ─► Config
//!  TOML file ────[[stream]] tables──────┘   (value + origin)  (precedence) (one table)
//! ```
//!
//! Three front ends (`args.rs`, `env.rs`, `file.rs`) only find values: each
//! raw value keeps where it came from (a flag, a variable, a file line).
//! The values are merged by precedence, then one validator (`validate.rs`)
//! turns them into the configuration with one set of defaults, limits and
//! messages, taken from one table (`table.rs`) that names every setting's
//! flag, file key, variable, scope, kind, limits, default and help. A
//! problem names the flag, the variable or the file's line, whichever the
//! value came from.
//!
//! Precedence:
//!
//! - command-line mode: flag > `RINGCAST_*` > `RUST_LOG` (log level only) >
//!   default;
//! - file mode (`-config FILE` or `RINGCAST_CONFIG`): flag (`-log-level`,
//!   `-check-config` only; any other flag beside `-config` is an error) >
//!   `RINGCAST_*` > the file > `RUST_LOG` > default. A per-stream variable
//!   applies to the stream of a one-stream file; with several streams it is
//!   an error. SIGHUP re-reads the file and re-applies the environment (and
//!   the `-log-level` given at start): [`load_file`].
//!
//! The source is one setting spelled five ways (`path`, `exec`, `demo`,
//! `push`, `relay`): the highest layer that gives any of them gives the
//! source.
//!
//! The file also has tables the command line has no room for:
//! `[[stream.destination]]` and `[stream.headers]` in a stream, and
//! `[[user]]`, `[[mirror]]` and `[channels]` at the top level. Their keys
//! are rows of the same table (scopes of their own), read by the same
//! front end and checked by the same validator, each problem with its line.
//! No message and no `Debug` output shows a password or a channel key
//! ([`Secret`]; URLs are quoted as `user:<secret>@`).
//!
//! Before anything is validated: `-help` wins as soon as it is reached
//! (flags before it must parse, as in Go; nothing after it is looked at);
//! then `-version`. `-check-config` only changes what is returned
//! ([`Command::CheckConfig`] instead of [`Command::Run`]).
//!
//! Nothing here panics on any input (property tests feed arbitrary argument
//! vectors, including non-UTF-8 ones); every failure is a [`ConfigError`]
//! (or a [`FileError`] listing every problem of a file).

mod args;
mod env;
mod file;
mod raw;
mod table;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use crate::framing::FramerKind;
pub use file::{FileError, RESERVED_PATHS};
pub use table::{cpus_online, usage, version};
pub use values::{parse_address, parse_duration};

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use raw::{Layer, Origin, Problem, Value};
use table::{def, env_name, Setting};
use validate::{validate, Mode};

/// Where a stream's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file, FIFO or character device (`-path`, default `/dev/stdin`).
    Path(PathBuf),
    /// A command run without a shell (`-exec CMD ARGS...`): stdout piped,
    /// stdin from /dev/null, stderr lines logged.
    Exec {
        /// The program: the first argument after the flags, looked up in
        /// `PATH` when it has no `/`.
        program: String,
        /// The remaining arguments, passed as they are.
        args: Vec<String>,
    },
    /// The built-in demo stream (a test tone as WAV), used when neither
    /// `-path` nor `-exec` is given and stdin is a terminal.
    Demo,
    /// Encoders push the stream over HTTP (`PUT` or `SOURCE` with Basic
    /// credentials of the source role; file key `push = true`).
    Push,
    /// The stream is pulled from upstream HTTP servers, first reachable in
    /// priority order (file key `relay = ["http://...", ...]`).
    Relay(Vec<Upstream>),
}

/// One upstream of a relay: an HTTP URL, with credentials when the upstream
/// asks for them (from the URL's `user:password@`, else a `[[user]]` with
/// the relay role for this mount).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port/path` (no credentials in it any more).
    pub url: String,
    /// Basic credentials given in the URL.
    pub user: Option<String>,
    /// Their password.
    pub password: Option<Secret>,
}

/// A password: as written (compared in constant time) or a bcrypt hash as
/// `htpasswd -B` writes it (`$2y$...`). Never shown: `Debug` prints
/// `<secret>`, and no log line or status page names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The password itself.
    Plain(String),
    /// A bcrypt hash (`$2a$`, `$2b$`, `$2y$`).
    Bcrypt(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Push a stream to a mount; update its metadata.
    Source,
    /// The admin pages (metadata updates of any mount, streamlist).
    Admin,
    /// Pull `/admin/streamlist.txt` and relay (also the credentials a relay
    /// presents to an upstream that asks).
    Relay,
}

/// One user of the credential store (`[[user]]` in the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user name of HTTP Basic.
    pub name: String,
    /// The password.
    pub password: Secret,
    /// What the user may do.
    pub roles: Vec<Role>,
    /// The mounts the roles apply to; empty = every mount (global).
    pub mounts: Vec<String>,
}

/// A server this stream is also pushed to (`[[stream.destination]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `http://host:port/mount`.
    pub url: String,
    /// Source credentials for it (`source` when not given).
    pub user: String,
    /// Their password.
    pub password: Secret,
    /// Use the legacy `SOURCE` method instead of `PUT`.
    pub legacy_source: bool,
    /// Give up after this many failed attempts in a row; `None` = never.
    pub retry_limit: Option<u32>,
}

/// What listeners are told about a stream (the `icy-*` response headers,
/// Icecast's status page) and how in-band titles are sent to them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// `icy-name`.
    pub name: Option<String>,
    /// `icy-description`.
    pub description: Option<String>,
    /// `icy-genre`.
    pub genre: Option<String>,
    /// `icy-url`.
    pub url: Option<String>,
    /// `icy-br`, kbit/s.
    pub bitrate: Option<u32>,
    /// `icy-pub`.
    pub public: Option<bool>,
}

/// A mount that mirrors every mount of an origin (Icecast master/slave):
/// `[[mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The origin, `http://host:port` (its `/admin/streamlist.txt` lists the
    /// mounts).
    pub origin: String,
    /// Relay credentials for the list (a `[[user]]` with the relay role when
    /// not given).
    pub user: Option<String>,
    /// Their password.
    pub password: Option<Secret>,
    /// How often the list is read again.
    pub interval: Duration,
    /// Settings of the streams it creates (framer `auto`: from the
    /// upstream's content type), ring size etc.
    pub template: Box<StreamConfig>,
}

/// WebSocket publish channels (`/CHANNEL/KEY/publish`, seed 004):
/// `[channels]` in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// Most channels at once (each has its own ring); 0 = channels off.
    pub max_channels: usize,
    /// Keys a publisher or receiver must present; empty = any key.
    pub keys: Vec<Secret>,
    /// Settings of each channel's stream (framer, ring).
    pub template: Box<StreamConfig>,
}

/// One stream (one source, one ring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Request path this stream is served at; `None` serves it at every path
    /// (the single-stream command line, as streamserve does).
    pub mount: Option<String>,
    /// Where the bytes come from.
    pub source: SourceSpec,
    /// How the bytes are cut into frames.
    pub framer: FramerKind,
    /// raw: exact frame size; mp3: maximum frame size. >= 1.
    pub frame_bytes: usize,
    /// Bytes captured at each source open and sent to every client first.
    pub header_bytes: usize,
    /// Ring slots; > 2.
    pub source_buffer: usize,
    /// Source read limit in bytes/s; 0 = unlimited.
    pub source_bandwidth: u64,
    /// End a client's response after the whole frame that reaches this many
    /// bytes; 0 = never.
    pub client_max_bytes: u64,
    /// Stop the source when the last client leaves.
    pub close_idle: bool,
    /// The response `Content-Type` (checked to be a valid header value).
    pub content_type: String,
    /// Reopen / re-run the source when it ends or fails (with backoff).
    pub reopen: bool,
    /// Kill a source that is silent this long; `None` = never.
    pub max_quiet_interval: Option<Duration>,
    /// Most clients of this stream at once (503 beyond); 0 = no limit.
    pub max_clients: usize,
    /// Fast start: a new client first gets the most recent whole frames up to
    /// this many bytes; 0 = none.
    pub burst_bytes: u64,
    /// Fast start in time: this long at the source's measured byte rate
    /// (the larger of this and `burst_bytes` wins).
    pub burst: Option<Duration>,
    /// A `path` source is read at the pace of its frames' durations (MP3 and
    /// AAC samples per frame, Ogg granule positions), as a live stream would
    /// come, not as fast as the disk allows.
    pub realtime: bool,
    /// A `path` source starts again at once at its end (a looped file).
    pub loop_file: bool,
    /// Where listeners go when this stream has no frame for
    /// `fallback_after` (a mount of the same framer and content type;
    /// chains allowed, no cycles).
    pub fallback: Option<String>,
    /// Listeners that fell back come back when this stream's source returns.
    pub fallback_override: bool,
    /// How long without a frame before listeners fall back.
    pub fallback_after: Duration,
    /// A push or relay source that sends nothing this long is dropped
    /// (Icecast's source-timeout).
    pub source_timeout: Duration,
    /// A relay connects only while the stream has listeners, and closes
    /// `on_demand_idle` after the last one left.
    pub on_demand: bool,
    /// See `on_demand`.
    pub on_demand_idle: Duration,
    /// Servers this stream is pushed to as well.
    pub destinations: Vec<Destination>,
    /// What listeners are told about the stream.
    pub info: StreamInfo,
    /// Audio bytes between in-band ICY metadata blocks for listeners that
    /// ask (`Icy-MetaData: 1`); 0 = never send titles in-band.
    pub icy_metaint: usize,
    /// The current title is read from this file when it changes (for pipe
    /// and command sources).
    pub title_file: Option<PathBuf>,
    /// ... or each line this command prints is the new title.
    pub title_command: Option<Vec<String>>,
    /// `Access-Control-Allow-Origin` of stream responses; `None` = no CORS
    /// headers.
    pub cors_origin: Option<String>,
    /// Extra response headers (name, value), checked to be valid.
    pub extra_headers: Vec<(String, String)>,
}

impl StreamConfig {
    /// A raw stream of 64-byte frames from `/dev/stdin`, with every setting
    /// at its default (the validator overrides what the settings give; also
    /// the base of the streams mirrors and channels create).
    pub fn defaults() -> StreamConfig {
        StreamConfig {
            mount: None,
            source: SourceSpec::Path(PathBuf::from("/dev/stdin")),
            framer: FramerKind::Raw,
            frame_bytes: 64,
            header_bytes: 0,
            source_buffer: 64,
            source_bandwidth: 0,
            client_max_bytes: 0,
            close_idle: false,
            content_type: "application/octet-stream".into(),
            reopen: true,
            max_quiet_interval: None,
            max_clients: 0,
            burst_bytes: 0,
            burst: None,
            realtime: false,
            loop_file: false,
            fallback: None,
            fallback_override: true,
            fallback_after: Duration::from_secs(2),
            source_timeout: Duration::from_secs(10),
            on_demand: false,
            on_demand_idle: Duration::from_secs(10),
            destinations: Vec::new(),
            info: StreamInfo::default(),
            icy_metaint: 16000,
            title_file: None,
            title_command: None,
            cors_origin: Some("*".into()),
            extra_headers: Vec::new(),
        }
    }
}

impl Channels {
    /// No channels.
    pub fn off() -> Channels {
        Channels {
            max_channels: 0,
            keys: Vec::new(),
            template: Box::new(StreamConfig::defaults()),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listen addresses (`:8000` means `0.0.0.0:8000`; port 0 picks a free
    /// port). The command line gives one; a configuration file may give
    /// several.
    pub listen: Vec<SocketAddr>,
    /// Where `/status`, `/status/clients`, `/metrics` and the status page are
    /// served instead of on the listen addresses; `None` = on the listen
    /// addresses, under those reserved paths.
    pub admin_listen: Option<SocketAddr>,
    /// The configuration file this came from (re-read on SIGHUP).
    pub config_file: Option<PathBuf>,
    /// Number of shard cores (executors); at least 1, at most the CPUs online.
    pub cpu_max: usize,
    /// Log per-source statistics this often; `None` = never.
    pub stat_log_interval: Option<Duration>,
    /// setuid/setgid to this user after binding; `None` = stay.
    pub uid: Option<u32>,
    /// How long a shard may wait after a new frame to gather more before it
    /// sends (latency/CPU trade-off): `None` = adaptive (the default, see
    /// `engine.rs`), `Some(0)` = send every frame at once.
    pub flush_interval: Option<Duration>,
    /// Listen backlog asked of the kernel (capped by net.core.somaxconn).
    pub listen_backlog: u32,
    /// Server-wide client limit; 0 = unlimited (bounded by open files).
    pub max_clients: usize,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: log::LevelFilter,
    /// The streams; the command line gives exactly one.
    pub streams: Vec<StreamConfig>,
    /// The credential store (`[[user]]`).
    pub users: Vec<User>,
    /// `/health` answers 503 while any of these mounts has no live source
    /// (its fallback does not count).
    pub health_mounts: Vec<String>,
    /// Origins whose every mount this server relays.
    pub mirrors: Vec<Mirror>,
    /// WebSocket publish channels.
    pub channels: Channels,
}

/// What the command line asks the binary to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve with this configuration.
    Run(Config),
    /// `-help`, `-h` or `--help`: print this usage text to stdout and exit 0.
    Help(String),
    /// `-version` or `--version`: print this line (`ringcast X.Y.Z`) and
    /// exit 0.
    Version(String),
    /// `-check-config`: the configuration is valid; report it and exit 0
    /// without binding or opening anything.
    CheckConfig(Config),
}

/// A configuration that cannot be used; the binary prints it and exits 1.
///
/// Displays as `-FLAG: MESSAGE`, e.g.
/// `-frame-bytes: invalid value "0": must be at least 1`, or, when the value
/// came from the environment, `VARIABLE: MESSAGE`, e.g.
/// `RINGCAST_FRAME_BYTES: invalid value "0": must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag at fault, without leading dashes (`frame-bytes`), also when
    /// its value came from the environment. Errors about the command after
    /// the flags name `exec`; errors of a configuration file name `config`;
    /// bad flag syntax names the argument as given, less its leading dashes;
    /// an unknown variable is named here too.
    pub flag: String,
    /// What is wrong, with the offending value quoted where there is one.
    pub message: String,
    /// The environment variable the value came from, if it did.
    pub variable: Option<String>,
}

impl ConfigError {
    fn new(flag: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag: flag.to_owned(),
            message: message.into(),
            variable: None,
        }
    }

    /// An error about a value the user gave.
    fn value(flag: &str, value: &str, why: impl fmt::Display) -> ConfigError {
        ConfigError::new(flag, format!("invalid value {value:?}: {why}"))
    }

    /// A problem of the validator or the environment, named by its origin.
    fn from_problem(p: &Problem) -> ConfigError {
        let flag = p.setting.map(|s| def(s).flag).filter(|f| !f.is_empty());
        let variable = match &p.origin {
            Origin::Env(v) => Some(v.clone()),
            _ => None,
        };
        ConfigError {
            flag: flag
                .map(str::to_owned)
                .or_else(|| variable.clone())
                .unwrap_or_else(|| "config".to_owned()),
            message: p.message.clone(),
            variable,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variable {
            Some(v) => write!(f, "{v}: {}", self.message),
            None => write!(f, "-{}: {}", self.flag, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parse the command line (without `argv[0]`), with the process's
/// environment, into what to do.
///
/// `stdin_is_tty` picks the source when none is given: the demo stream for a
/// terminal, `/dev/stdin` otherwise. Errors name the flag or the variable at
/// fault; this never panics. In file mode it remembers the `-log-level`
/// given, for [`load_file`].
pub fn parse_args<I: IntoIterator<Item = OsString>>(
    args: I,
    stdin_is_tty: bool,
) -> Result<Command, ConfigError> {
    let parsed = parse(args, stdin_is_tty, std::env::vars_os())?;
    if let Ok(mut flags) = RELOAD_FLAGS.lock() {
        *flags = Some(parsed.reload_flags);
    }
    Ok(parsed.command)
}

/// Read and validate a configuration file, with the process's environment
/// (and the `-log-level` given beside `-config` at start) over it, as at
/// start: what SIGHUP does.
pub fn load_file(path: &Path) -> Result<Config, FileError> {
    let flags = RELOAD_FLAGS
        .lock()
        .ok()
        .and_then(|f| f.clone())
        .unwrap_or_default();
    file::load(path, &flags, &env::read(std::env::vars_os()))
}

/// The flags of the command line that apply to every load of the file.
static RELOAD_FLAGS: Mutex<Option<Layer>> = Mutex::new(None);

/// What [`parse`] found.
struct Parsed {
    command: Command,
    /// The flags a reload of the file applies again (file mode).
    reload_flags: Layer,
}

/// [`parse_args`] with the environment passed in (name, value pairs).
fn parse<I, V, K, W>(args: I, stdin_is_tty: bool, vars: V) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = OsString>,
    V: IntoIterator<Item = (K, W)>,
    K: AsRef<OsStr>,
    W: AsRef<OsStr>,
{
    let (mut flags, rest) = match args::scan(args)? {
        args::Scanned::Help => {
            return Ok(Parsed {
                command: Command::Help(usage()),
                reload_flags: Layer::default(),
            })
        }
        args::Scanned::Flags { flags, rest } => (flags, rest),
    };
    let done = |command| Parsed {
        command,
        reload_flags: Layer::default(),
    };
    if flags.get(Setting::Version).map(|g| &g.value) == Some(&Value::Bool(true)) {
        return Ok(done(Command::Version(version())));
    }
    let env = env::read(vars);
    let check = match flags.get(Setting::CheckConfig).map(|g| &g.value) {
        Some(Value::Bool(b)) => *b,
        _ => env::boolean(&env, Setting::CheckConfig)
            .map_err(|p| ConfigError::from_problem(&p))?
            .unwrap_or(false),
    };
    let wrap = |config| {
        if check {
            Command::CheckConfig(config)
        } else {
            Command::Run(config)
        }
    };
    if flags.is_set(Setting::Config) || env.layer.is_set(Setting::Config) {
        let (config, reload_flags) = file_mode(&flags, rest, &env)?;
        return Ok(Parsed {
            command: wrap(config),
            reload_flags,
        });
    }
    args::attach_command(&mut flags, rest)?;
    let config = command_line(&flags, &env, stdin_is_tty)
        .map_err(|problems| ConfigError::from_problem(&problems[0]))?;
    Ok(done(wrap(config)))
}

/// Command-line mode: the flags over the environment; every problem (those
/// of the environment's names first).
fn command_line(
    flags: &Layer,
    env: &env::Environment,
    stdin_is_tty: bool,
) -> Result<Config, Vec<Problem>> {
    if !env.problems.is_empty() {
        return Err(env.problems.clone());
    }
    let merged = Layer::merge(&[flags, &env.layer, &env.rust_log]);
    validate(
        &merged,
        std::slice::from_ref(&merged),
        Mode::CommandLine { stdin_is_tty },
    )
}

/// `-config FILE` (or `RINGCAST_CONFIG`): the settings come from the file
/// and the environment; only `-log-level` and `-check-config` may be given
/// beside it. Returns the configuration and the flags a reload applies.
fn file_mode(
    flags: &Layer,
    rest: Vec<OsString>,
    env: &env::Environment,
) -> Result<(Config, Layer), ConfigError> {
    let (given, by) = match flags.get(Setting::Config) {
        Some(g) => (g, "-config".to_owned()),
        None => match env.layer.get(Setting::Config) {
            Some(g) => (g, env_name(def(Setting::Config))),
            None => return Err(ConfigError::new("config", "needs a file name")),
        },
    };
    if let Some(first) = rest.first() {
        return Err(ConfigError::new(
            "config",
            format!(
                "unexpected argument {:?}: with {by}, the streams come from the file",
                first.to_string_lossy()
            ),
        ));
    }
    for (s, _) in flags.iter() {
        let allowed = matches!(
            s,
            Setting::Config | Setting::LogLevel | Setting::CheckConfig | Setting::Version
        );
        if !allowed {
            let d = def(s);
            return Err(ConfigError::new(
                d.flag,
                format!(
                    "cannot be combined with {by}: set it in the configuration file ({}) \
                     or the environment ({})",
                    if d.key.is_empty() { "no key" } else { d.key },
                    env_name(d)
                ),
            ));
        }
    }
    let path = match &given.value {
        Value::Text(p) if !p.is_empty() => PathBuf::from(p),
        _ => return Err(ConfigError::value("config", "", "needs a file name")),
    };
    let reload_flags = flags.only(table::Scope::Server);
    let config = file::load(&path, &reload_flags, env).map_err(|e| ConfigError {
        variable: matches!(given.origin, Origin::Env(_)).then_some(by),
        ..ConfigError::new("config", e.to_string())
    })?;
    Ok((config, reload_flags))
}
