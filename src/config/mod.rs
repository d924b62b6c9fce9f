//! Configuration: the streamserve-compatible command line, turned into a
//! validated [`Config`].
//!
//! Raw flags are parsed close to the command line (Go-style single-dash long
//! flags are accepted as well as `--flag`), then checked and turned into the
//! typed configuration the rest of the server uses. Every problem names the
//! flag it comes from.
//!
//! # Parsing approach
//!
//! streamserve uses Go's `flag` package, and its command lines must keep
//! working unchanged. Go's rules differ from clap's in ways that matter here:
//! `-name` and `--name` are the same long flag; a boolean flag never takes a
//! separate value (`-reopen false` makes `false` the first positional
//! argument, `-reopen=false` is the way to turn it off); and flag parsing
//! stops at the first non-flag argument or after `--`, so in
//! `-exec ffmpeg -i x -` everything from `ffmpeg` on belongs to the command.
//! Bending clap into this needs a pre-pass that already does most of the
//! work, so this module has a small hand-written parser that follows Go's
//! `flag.FlagSet.Parse` step for step instead (`scan`):
//!
//! 1. An argument that is `-`, empty, or does not start with `-` ends the
//!    flags; it and everything after it are the positional arguments.
//! 2. `--` ends the flags and is dropped.
//! 3. Otherwise one or two dashes are stripped; a name that is empty or
//!    starts with `-` or `=` is bad syntax. `name=value` splits at the first
//!    `=`. `help` and `h` ask for the usage text.
//! 4. A boolean flag is `true` without `=value`, else `value` is read with
//!    Go's `strconv.ParseBool` set (`1 t T TRUE true True`, `0 f F FALSE false
//!    False`). Any other flag takes `=value` or else the next argument,
//!    whatever it looks like (`-path -weird-name` is fine). A flag given twice
//!    keeps its last value.
//!
//! Values are then converted and checked ([`Config`] building): integers with
//! Go's `strconv.ParseInt(s, 0, 64)` syntax (`64`, `0x40`, `0o100`, `0100`,
//! `1_000`), durations with [`parse_duration`], addresses with
//! [`parse_address`]. One table (`FLAGS`) names every flag, its kind, its
//! default *as text* and its one-line meaning; the parser looks flags up in
//! it, absent flags are read from their default text by the same code as
//! given ones, and [`usage`] prints it, so the help cannot drift from the
//! behaviour.
//!
//! Precedence: `-help` wins as soon as it is reached (flags before it must
//! parse, as in Go; nothing after it is looked at); then `-version`; then the
//! whole configuration is validated, and `-check-config` only changes what is
//! returned ([`Command::CheckConfig`] instead of [`Command::Run`]).
//!
//! Nothing here panics on any input (a property test feeds arbitrary argument
//! vectors, including non-UTF-8 ones); every failure is a [`ConfigError`].

mod file;

pub use file::{load as load_file, FileError, RESERVED_PATHS};

/// Default of `-flush-interval` / `flush_interval`.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

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
}

/// How a stream's bytes are cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramerKind {
    /// Every frame is exactly `frame_bytes`.
    Raw,
    /// Physical MPEG audio frames, at most `frame_bytes` each.
    Mp3,
    /// AAC ADTS frames, at most `frame_bytes` each.
    Aac,
    /// Ogg pages, at most `frame_bytes` each; header pages become the
    /// stream header.
    Ogg,
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
    /// sends (latency/CPU trade-off); zero = send every frame at once.
    pub flush_interval: Duration,
    /// Listen backlog asked of the kernel (capped by net.core.somaxconn).
    pub listen_backlog: u32,
    /// Server-wide client limit; 0 = unlimited (bounded by open files).
    pub max_clients: usize,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: log::LevelFilter,
    /// The streams; the command line gives exactly one.
    pub streams: Vec<StreamConfig>,
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

/// A command line that cannot be used; the binary prints it and exits 1.
///
/// Displays as `-FLAG: MESSAGE`, e.g.
/// `-frame-bytes: invalid value "0": must be at least 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag at fault, without leading dashes (`frame-bytes`). Errors about
    /// the command after the flags name `exec`; bad flag syntax names the
    /// argument as given, less its leading dashes.
    pub flag: String,
    /// What is wrong, with the offending value quoted where there is one.
    pub message: String,
}

impl ConfigError {
    fn new(flag: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            flag: flag.to_owned(),
            message: message.into(),
        }
    }

    /// An error about a value the user gave (or a default derived from it).
    fn value(flag: &str, value: &str, why: impl fmt::Display) -> ConfigError {
        ConfigError::new(flag, format!("invalid value {value:?}: {why}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{}: {}", self.flag, self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// The flag table
// ---------------------------------------------------------------------------

/// Every flag. The discriminant is the flag's index in [`FLAGS`] (checked by
/// a test), so the parser's storage can be a plain vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    Address,
    Path,
    Exec,
    FrameBytes,
    FrameFilter,
    HeaderBytes,
    SourceBuffer,
    SourceBandwidth,
    ClientMaxBytes,
    CloseIdle,
    ContentType,
    CpuMax,
    Reopen,
    StatLogInterval,
    MaxQuietInterval,
    Uid,
    FlushInterval,
    ListenBacklog,
    MaxClients,
    LogLevel,
    CheckConfig,
    Version,
    Config,
    BurstBytes,
    BurstMs,
}

/// Whether a flag takes a value, and what kind (for the usage text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `-name` / `-name=BOOL`; never a separate value.
    Bool,
    /// `-name VALUE` / `-name=VALUE`; the word is the value's type in the
    /// usage text (`int`, `string`, `duration`).
    Value(&'static str),
}

/// One row of the flag table.
struct FlagDef {
    flag: Flag,
    name: &'static str,
    kind: Kind,
    /// The default as the user would write it; parsed by the same code as a
    /// given value. Empty for `cpu-max` (computed: the CPUs online) and `uid`
    /// (absent: stay the current user).
    default: &'static str,
    /// One line for the usage text.
    help: &'static str,
    /// A streamserve flag (true) or one of ringcast's own (false).
    streamserve: bool,
}

/// The flag table: parsing, defaults and the usage text all come from here.
static FLAGS: &[FlagDef] = &[
    FlagDef {
        flag: Flag::Address,
        name: "address",
        kind: Kind::Value("string"),
        default: "0.0.0.0:80",
        help: "listen address HOST:PORT; \":8000\" is all interfaces, port 0 picks a free port",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::Path,
        name: "path",
        kind: Kind::Value("string"),
        default: "/dev/stdin",
        help: "file or FIFO to read the stream from (not with -exec)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::Exec,
        name: "exec",
        kind: Kind::Bool,
        default: "false",
        help: "run the command given after the flags (no shell, stdin /dev/null) and read its stdout",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::FrameBytes,
        name: "frame-bytes",
        kind: Kind::Value("int"),
        default: "64",
        help: "raw: exact frame size; mp3, aac, ogg: maximum frame size (at least 1)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::FrameFilter,
        name: "frame-filter",
        kind: Kind::Value("string"),
        default: "raw",
        help: "how to cut the stream into frames: raw (fixed size; \"\" also means raw), mp3, aac (ADTS) or ogg (Vorbis, Opus; alias: -filter)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::HeaderBytes,
        name: "header-bytes",
        kind: Kind::Value("int"),
        default: "0",
        help: "bytes captured at each source open and sent to every client before any frame",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::SourceBuffer,
        name: "source-buffer",
        kind: Kind::Value("int"),
        default: "64",
        help: "ring size in frames: how far a client may lag before it skips (more than 2)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::SourceBandwidth,
        name: "source-bandwidth",
        kind: Kind::Value("int"),
        default: "0",
        help: "limit reading the source to this many bytes/s (0 = as fast as it comes)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::ClientMaxBytes,
        name: "client-max-bytes",
        kind: Kind::Value("int"),
        default: "0",
        help: "end a client's response after the whole frame that reaches this many bytes (0 = never)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::CloseIdle,
        name: "close-idle",
        kind: Kind::Bool,
        default: "false",
        help: "close the source / stop the command when the last client leaves",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::ContentType,
        name: "content-type",
        kind: Kind::Value("string"),
        default: "application/octet-stream",
        help: "Content-Type of the responses",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::CpuMax,
        name: "cpu-max",
        kind: Kind::Value("int"),
        default: "",
        help: "number of cores to serve clients on (1 to the number of CPUs online)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::Reopen,
        name: "reopen",
        kind: Kind::Bool,
        default: "true",
        help: "reopen the path / re-run the command (with backoff) when it ends or fails; -reopen=false exits instead",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::StatLogInterval,
        name: "stat-log-interval",
        kind: Kind::Value("duration"),
        default: "0s",
        help: "log per-source statistics this often, e.g. 1m (0 = never)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::MaxQuietInterval,
        name: "max-quiet-interval",
        kind: Kind::Value("duration"),
        default: "0s",
        help: "kill a source that sends nothing for this long, e.g. 10s (0 = never)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::Uid,
        name: "uid",
        kind: Kind::Value("string"),
        default: "",
        help: "switch to this user (numeric uid or user name) after binding the port (default: stay)",
        streamserve: true,
    },
    FlagDef {
        flag: Flag::FlushInterval,
        name: "flush-interval",
        kind: Kind::Value("duration"),
        default: "200ms",
        help: "longest wait to gather more frames into one send per client: CPU against latency, see tuning.md (0 = send every frame at once)",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::ListenBacklog,
        name: "listen-backlog",
        kind: Kind::Value("int"),
        default: "4096",
        help: "listen backlog asked of the kernel, 1 to 65535 (capped by net.core.somaxconn)",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::MaxClients,
        name: "max-clients",
        kind: Kind::Value("int"),
        default: "0",
        help: "most clients served at once (0 = no limit but open files)",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::LogLevel,
        name: "log-level",
        kind: Kind::Value("string"),
        default: "info",
        help: "error, warn, info, debug or trace (when absent, RUST_LOG if it is one of these words)",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::CheckConfig,
        name: "check-config",
        kind: Kind::Bool,
        default: "false",
        help: "check the configuration and exit: status 0 if it is valid, 1 and the problem if not",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::Version,
        name: "version",
        kind: Kind::Bool,
        default: "false",
        help: "print the version and exit",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::Config,
        name: "config",
        kind: Kind::Value("path"),
        default: "",
        help: "read the streams and settings from this TOML file (see deploy/ringcast.toml); re-read on SIGHUP",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::BurstBytes,
        name: "burst-bytes",
        kind: Kind::Value("int"),
        default: "0",
        help: "fast start: a new client first gets the most recent whole frames up to this many bytes (0 = none)",
        streamserve: false,
    },
    FlagDef {
        flag: Flag::BurstMs,
        name: "burst-ms",
        kind: Kind::Value("int"),
        default: "0",
        help: "fast start: as -burst-bytes, in milliseconds of the source's measured byte rate (the larger of the two wins)",
        streamserve: false,
    },
];

fn def(flag: Flag) -> &'static FlagDef {
    // The table is indexed by discriminant (tested); fall back to a search so
    // a mistake in the table can never become an out-of-bounds panic.
    match FLAGS.get(flag as usize) {
        Some(d) if d.flag == flag => d,
        _ => FLAGS.iter().find(|d| d.flag == flag).unwrap_or(&FLAGS[0]),
    }
}

fn lookup(name: &str) -> Option<&'static FlagDef> {
    // streamserve's own README spells -frame-filter as -filter: accept both.
    let name = if name == "filter" {
        "frame-filter"
    } else {
        name
    };
    FLAGS.iter().find(|d| d.name == name)
}

/// The version line: `ringcast X.Y.Z`.
pub fn version() -> String {
    format!("ringcast {}", env!("CARGO_PKG_VERSION"))
}

/// The usage text printed for `-help`: every flag, its default and its
/// meaning, in the style of Go's `flag.PrintDefaults`.
pub fn usage() -> String {
    let mut out = String::new();
    out.push_str(&version());
    out.push_str(
        " - serve a live stream to many HTTP clients

Usage:
  ringcast [flags]                              read -path (default /dev/stdin)
  ringcast [flags] -exec [--] COMMAND [ARGS...] read the stdout of COMMAND

Flags are written -name value, -name=value, --name value or --name=value.
Boolean flags take no separate value: -reopen turns it on, -reopen=false off.
Flag parsing stops at the first argument that is not a flag, or after --.
With neither -path nor -exec and a terminal on stdin, a demo tone is served
(as WAV: -frame-bytes 4410 -header-bytes 44 -content-type audio/wav unless set).
Durations are written like 300ms, 1.5s, 1m30s, 2h45m.

Flags shared with streamserve:
",
    );
    for d in FLAGS.iter().filter(|d| d.streamserve) {
        push_flag_usage(&mut out, d);
    }
    out.push_str("\nringcast flags:\n");
    for d in FLAGS.iter().filter(|d| !d.streamserve) {
        push_flag_usage(&mut out, d);
    }
    out.push_str("  -h, -help\n        print this help and exit\n");
    out
}

fn push_flag_usage(out: &mut String, d: &FlagDef) {
    out.push_str("  -");
    out.push_str(d.name);
    if let Kind::Value(ty) = d.kind {
        out.push(' ');
        out.push_str(ty);
    }
    out.push_str("\n        ");
    out.push_str(d.help);
    let default = match d.flag {
        Flag::CpuMax => Some(format!("{} here: the CPUs online", cpus_online())),
        Flag::Uid => None,
        _ => match d.kind {
            Kind::Value("string") => Some(format!("{:?}", d.default)),
            _ => Some(d.default.to_owned()),
        },
    };
    if let Some(default) = default {
        out.push_str(" (default ");
        out.push_str(&default);
        out.push(')');
    }
    out.push('\n');
}

/// The number of CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1:
/// the default and the upper bound of `-cpu-max`.
pub fn cpus_online() -> usize {
    crate::sys::cpus_online()
}

// ---------------------------------------------------------------------------
// Step 1: Go flag syntax
// ---------------------------------------------------------------------------

/// A flag's value as found on the command line.
#[derive(Debug, Clone)]
enum Raw {
    Bool(bool),
    Text(OsString),
}

/// The command line split into flags and positional arguments.
#[derive(Debug)]
enum Scanned {
    /// `-help` / `-h` was reached.
    Help,
    /// Flags (indexed by [`Flag`] discriminant; `None` = not given) and the
    /// arguments after them.
    Flags {
        given: Vec<Option<Raw>>,
        rest: Vec<OsString>,
    },
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &[u8]) -> Option<bool> {
    match s {
        b"1" | b"t" | b"T" | b"TRUE" | b"true" | b"True" => Some(true),
        b"0" | b"f" | b"F" | b"FALSE" | b"false" | b"False" => Some(false),
        _ => None,
    }
}

/// Split the arguments into flags and positionals following Go's
/// `flag.FlagSet.Parse` (see the module docs).
fn scan<I: IntoIterator<Item = OsString>>(args: I) -> Result<Scanned, ConfigError> {
    let mut args = args.into_iter();
    let mut given: Vec<Option<Raw>> = vec![None; FLAGS.len()];
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes.len() < 2 || bytes[0] != b'-' {
            rest.push(arg);
            break;
        }
        let body = if bytes[1] == b'-' {
            if bytes.len() == 2 {
                break; // "--" ends the flags and is dropped
            }
            &bytes[2..]
        } else {
            &bytes[1..]
        };
        if body.is_empty() || body[0] == b'-' || body[0] == b'=' {
            let shown = String::from_utf8_lossy(bytes);
            return Err(ConfigError::new(
                shown.trim_start_matches('-'),
                format!("bad flag syntax: {shown:?}"),
            ));
        }
        let (name, value) = match body.iter().position(|&b| b == b'=') {
            Some(i) => (&body[..i], Some(&body[i + 1..])),
            None => (body, None),
        };
        let name_str = String::from_utf8_lossy(name);
        if name_str == "help" || name_str == "h" {
            return Ok(Scanned::Help);
        }
        let Some(d) = lookup(&name_str) else {
            return Err(ConfigError::new(
                &name_str,
                "flag provided but not defined (see -help)",
            ));
        };
        let raw = match (d.kind, value) {
            (Kind::Bool, None) => Raw::Bool(true),
            (Kind::Bool, Some(v)) => match parse_go_bool(v) {
                Some(b) => Raw::Bool(b),
                None => {
                    return Err(ConfigError::value(
                        d.name,
                        &String::from_utf8_lossy(v),
                        "not a boolean (use true/false, t/f or 1/0, as -name=false)",
                    ))
                }
            },
            (Kind::Value(_), Some(v)) => Raw::Text(OsStr::from_bytes(v).to_owned()),
            (Kind::Value(_), None) => match args.next() {
                Some(v) => Raw::Text(v),
                None => return Err(ConfigError::new(d.name, "flag needs an argument")),
            },
        };
        if let Some(slot) = given.get_mut(d.flag as usize) {
            *slot = Some(raw);
        }
    }
    rest.extend(args);
    Ok(Scanned::Flags { given, rest })
}

// ---------------------------------------------------------------------------
// Step 2: values and validation
// ---------------------------------------------------------------------------

/// Parse the command line (without `argv[0]`) into what to do.
///
/// `stdin_is_tty` picks the source when neither `-path` nor `-exec` is given:
/// the demo stream for a terminal, `/dev/stdin` otherwise. When `-log-level`
/// is absent, the environment variable `RUST_LOG` is used if it is exactly
/// one of the level words. Errors name the flag at fault; this never panics.
pub fn parse_args<I: IntoIterator<Item = OsString>>(
    args: I,
    stdin_is_tty: bool,
) -> Result<Command, ConfigError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    parse_args_with_env(args, stdin_is_tty, rust_log.as_deref())
}

/// [`parse_args`] with the environment passed in (for tests).
fn parse_args_with_env<I: IntoIterator<Item = OsString>>(
    args: I,
    stdin_is_tty: bool,
    rust_log: Option<&str>,
) -> Result<Command, ConfigError> {
    let (given, rest) = match scan(args)? {
        Scanned::Help => return Ok(Command::Help(usage())),
        Scanned::Flags { given, rest } => (given, rest),
    };
    let flags = Flags { given };
    if flags.boolean(Flag::Version) {
        return Ok(Command::Version(version()));
    }
    let config = flags.build(rest, stdin_is_tty, rust_log)?;
    if flags.boolean(Flag::CheckConfig) {
        Ok(Command::CheckConfig(config))
    } else {
        Ok(Command::Run(config))
    }
}

/// The scanned flags, with typed accessors that fall back to the table's
/// defaults and report errors against the flag's name.
struct Flags {
    given: Vec<Option<Raw>>,
}

impl Flags {
    fn raw(&self, flag: Flag) -> Option<&Raw> {
        self.given.get(flag as usize).and_then(Option::as_ref)
    }

    fn is_given(&self, flag: Flag) -> bool {
        self.raw(flag).is_some()
    }

    fn boolean(&self, flag: Flag) -> bool {
        match self.raw(flag) {
            Some(Raw::Bool(b)) => *b,
            _ => def(flag).default == "true",
        }
    }

    /// The value given, or the default text, as UTF-8.
    fn text(&self, flag: Flag) -> Result<&str, ConfigError> {
        match self.raw(flag) {
            Some(Raw::Text(v)) => v.to_str().ok_or_else(|| {
                ConfigError::value(def(flag).name, &v.to_string_lossy(), "not valid UTF-8")
            }),
            _ => Ok(def(flag).default),
        }
    }

    /// An integer in `min..=max`, Go `ParseInt(s, 0, 64)` syntax.
    fn int(&self, flag: Flag, min: i128, max: i128) -> Result<i128, ConfigError> {
        let name = def(flag).name;
        let s = self.text(flag)?;
        let n = parse_go_int(s).map_err(|why| ConfigError::value(name, s, why))?;
        if n < min || n > max {
            let why = match (min, max) {
                (0, _) if n < 0 => "must not be negative".to_owned(),
                (_, m) if m >= i128::from(u32::MAX) => format!("must be at least {min}"),
                _ => format!("must be between {min} and {max}"),
            };
            return Err(ConfigError::value(name, s, why));
        }
        Ok(n)
    }

    fn usize(&self, flag: Flag, min: usize) -> Result<usize, ConfigError> {
        let n = self.int(flag, min as i128, usize::MAX as i128)?;
        // In range by the check above.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn u64(&self, flag: Flag) -> Result<u64, ConfigError> {
        let n = self.int(flag, 0, i128::from(u64::MAX))?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    fn duration(&self, flag: Flag) -> Result<Duration, ConfigError> {
        let s = self.text(flag)?;
        parse_duration(s).map_err(|why| ConfigError::value(def(flag).name, s, why))
    }

    /// A duration where zero means "off".
    fn interval(&self, flag: Flag) -> Result<Option<Duration>, ConfigError> {
        let d = self.duration(flag)?;
        Ok(if d.is_zero() { None } else { Some(d) })
    }

    fn build(
        &self,
        rest: Vec<OsString>,
        stdin_is_tty: bool,
        rust_log: Option<&str>,
    ) -> Result<Config, ConfigError> {
        if self.is_given(Flag::Config) {
            return self.build_from_file(rest, rust_log);
        }
        // Source selection first: it decides the demo defaults below.
        let exec = self.boolean(Flag::Exec);
        let source = if exec {
            if self.is_given(Flag::Path) {
                return Err(ConfigError::new(
                    "path",
                    "cannot be used together with -exec (choose one source)",
                ));
            }
            let mut words = Vec::with_capacity(rest.len());
            for w in rest {
                match w.into_string() {
                    Ok(w) => words.push(w),
                    Err(w) => {
                        return Err(ConfigError::value(
                            "exec",
                            &w.to_string_lossy(),
                            "command arguments must be valid UTF-8",
                        ))
                    }
                }
            }
            let mut words = words.into_iter();
            let Some(program) = words.next() else {
                return Err(ConfigError::new(
                    "exec",
                    "needs a command after the flags: -exec [--] COMMAND [ARGS...]",
                ));
            };
            if program.is_empty() {
                return Err(ConfigError::new("exec", "the command name is empty"));
            }
            SourceSpec::Exec {
                program,
                args: words.collect(),
            }
        } else {
            if let Some(first) = rest.first() {
                return Err(ConfigError::new(
                    "exec",
                    format!(
                        "unexpected argument {:?} after the flags: to run a command, \
                         write -exec COMMAND [ARGS...] (boolean flags take -name=false)",
                        first.to_string_lossy()
                    ),
                ));
            }
            match self.raw(Flag::Path) {
                Some(Raw::Text(p)) if p.is_empty() => {
                    return Err(ConfigError::value("path", "", "must not be empty"))
                }
                Some(Raw::Text(p)) => SourceSpec::Path(PathBuf::from(p)),
                _ if stdin_is_tty => SourceSpec::Demo,
                _ => SourceSpec::Path(PathBuf::from(def(Flag::Path).default)),
            }
        };
        let demo = source == SourceSpec::Demo;

        let address = {
            let s = self.text(Flag::Address)?;
            parse_address(s).map_err(|why| ConfigError::value("address", s, why))?
        };
        let framer_given = self.is_given(Flag::FrameFilter);

        let mut frame_bytes = self.usize(Flag::FrameBytes, 1)?;
        let framer = {
            let s = self.text(Flag::FrameFilter)?;
            match s.to_ascii_lowercase().as_str() {
                "" | "raw" => FramerKind::Raw,
                "mp3" => FramerKind::Mp3,
                "aac" => FramerKind::Aac,
                "ogg" => FramerKind::Ogg,
                _ => {
                    return Err(ConfigError::value(
                        "frame-filter",
                        s,
                        "must be raw (or \"\"), mp3, aac or ogg",
                    ))
                }
            }
        };
        let mut header_bytes = self.usize(Flag::HeaderBytes, 0)?;
        let source_buffer = self.usize(Flag::SourceBuffer, 0)?;
        if source_buffer <= 2 {
            let s = self.text(Flag::SourceBuffer)?;
            return Err(ConfigError::value(
                "source-buffer",
                s,
                "must be more than 2",
            ));
        }
        let source_bandwidth = self.u64(Flag::SourceBandwidth)?;
        let client_max_bytes = self.u64(Flag::ClientMaxBytes)?;
        let burst_bytes = self.u64(Flag::BurstBytes)?;
        let burst_ms = self.u64(Flag::BurstMs)?;
        let close_idle = self.boolean(Flag::CloseIdle);
        let mut content_type = {
            let s = self.text(Flag::ContentType)?;
            check_header_value(s).map_err(|why| ConfigError::value("content-type", s, why))?;
            s.to_owned()
        };

        let cpu_max = {
            let online = cpus_online();
            if self.is_given(Flag::CpuMax) {
                let s = self.text(Flag::CpuMax)?;
                let n = parse_go_int(s).map_err(|why| ConfigError::value("cpu-max", s, why))?;
                if n < 1 || n > online as i128 {
                    return Err(ConfigError::value(
                        "cpu-max",
                        s,
                        format!("must be between 1 and {online}, the number of CPUs online"),
                    ));
                }
                n as usize
            } else {
                online
            }
        };

        let reopen = self.boolean(Flag::Reopen);
        let stat_log_interval = self.interval(Flag::StatLogInterval)?;
        let max_quiet_interval = self.interval(Flag::MaxQuietInterval)?;

        let uid = if self.is_given(Flag::Uid) {
            let s = self.text(Flag::Uid)?;
            Some(parse_uid(s).map_err(|why| ConfigError::value("uid", s, why))?)
        } else {
            None
        };

        let flush_interval = self.duration(Flag::FlushInterval)?;
        let listen_backlog = self.int(Flag::ListenBacklog, 1, 65535)? as u32;
        let max_clients = self.usize(Flag::MaxClients, 0)?;

        let log_level = if self.is_given(Flag::LogLevel) {
            let s = self.text(Flag::LogLevel)?;
            parse_level(s).ok_or_else(|| {
                ConfigError::value("log-level", s, "must be error, warn, info, debug or trace")
            })?
        } else {
            rust_log
                .and_then(parse_level)
                .or_else(|| parse_level(def(Flag::LogLevel).default))
                .unwrap_or(log::LevelFilter::Info)
        };

        // A legal MPEG audio frame is at most 2881 bytes (MPEG-2.5 layer II,
        // 160 kbit/s at 8 kHz, padded): with -frame-filter mp3 and no
        // -frame-bytes, make room for any of them, so none is dropped as
        // oversized (streamserve's default of 64 would drop them all).
        // Likewise an ADTS frame is at most 8191 bytes and an Ogg page at
        // most 65307.
        if framer_given && !self.is_given(Flag::FrameBytes) {
            if let Some(largest) = crate::framing::largest_frame(framer) {
                frame_bytes = largest;
            }
        }

        // The demo tone is 44.1 kHz 16-bit mono WAV: a 44-byte header and
        // 100 ms frames, unless the user chose otherwise.
        if demo {
            if !self.is_given(Flag::FrameBytes) {
                frame_bytes = 4410;
            }
            if !self.is_given(Flag::HeaderBytes) {
                header_bytes = 44;
            }
            if !self.is_given(Flag::ContentType) {
                content_type = "audio/wav".to_owned();
            }
        }

        // The ring is frame_bytes × source_buffer bytes, allocated once: it
        // must be a size an allocation can have.
        if frame_bytes
            .checked_mul(source_buffer)
            .and_then(|n| n.checked_add(header_bytes))
            .filter(|&n| n <= isize::MAX as usize)
            .is_none()
        {
            return Err(ConfigError::new(
                "source-buffer",
                format!(
                    "the ring of {source_buffer} frames of {frame_bytes} bytes \
                     (-source-buffer × -frame-bytes) is too large"
                ),
            ));
        }

        Ok(Config {
            listen: vec![address],
            admin_listen: None,
            config_file: None,
            cpu_max,
            stat_log_interval,
            uid,
            flush_interval,
            listen_backlog,
            max_clients,
            log_level,
            streams: vec![StreamConfig {
                mount: None,
                source,
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
                max_clients: 0,
                burst_bytes,
                burst: (burst_ms > 0).then(|| Duration::from_millis(burst_ms)),
            }],
        })
    }

    /// `-config FILE`: everything comes from the file; only -log-level and
    /// -check-config may be given beside it.
    fn build_from_file(
        &self,
        rest: Vec<OsString>,
        rust_log: Option<&str>,
    ) -> Result<Config, ConfigError> {
        if let Some(first) = rest.first() {
            return Err(ConfigError::new(
                "config",
                format!(
                    "unexpected argument {:?}: with -config, the streams come from the file",
                    first.to_string_lossy()
                ),
            ));
        }
        for d in FLAGS {
            let allowed = matches!(
                d.flag,
                Flag::Config | Flag::LogLevel | Flag::CheckConfig | Flag::Version
            );
            if !allowed && self.is_given(d.flag) {
                return Err(ConfigError::new(
                    d.name,
                    "cannot be combined with -config: set it in the configuration file",
                ));
            }
        }
        let path = match self.raw(Flag::Config) {
            Some(Raw::Text(p)) if !p.is_empty() => PathBuf::from(p),
            _ => return Err(ConfigError::value("config", "", "needs a file name")),
        };
        let mut config =
            file::load(&path).map_err(|e| ConfigError::new("config", e.to_string()))?;
        if self.is_given(Flag::LogLevel) {
            let s = self.text(Flag::LogLevel)?;
            config.log_level = parse_level(s).ok_or_else(|| {
                ConfigError::value("log-level", s, "must be error, warn, info, debug or trace")
            })?;
        } else if let Some(level) = rust_log.and_then(parse_level) {
            if !file::sets_log_level(&path) {
                config.log_level = level;
            }
        }
        Ok(config)
    }
}

pub(crate) fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s.trim().to_ascii_lowercase().as_str() {
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

/// An HTTP field value: visible ASCII, space, tab or non-ASCII; not empty.
pub(crate) fn check_header_value(s: &str) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        return Err("must not be empty");
    }
    if s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("control characters are not allowed in a header value");
    }
    Ok(())
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax: optional sign, then `0x`/`0X`
/// hex, `0b`/`0B` binary, `0o`/`0O` or a leading `0` octal, else decimal;
/// underscores only between digits (or after a base prefix). Magnitudes up
/// to `u64::MAX` are returned; range checks are the caller's.
pub(crate) fn parse_go_int(s: &str) -> Result<i128, String> {
    const SYNTAX: &str = "not an integer";
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    let (base, digits, prefixed) = match b {
        [b'0', b'x' | b'X', rest @ ..] => (16, rest, true),
        [b'0', b'b' | b'B', rest @ ..] => (2, rest, true),
        [b'0', b'o' | b'O', rest @ ..] => (8, rest, true),
        [b'0', rest @ ..] if !rest.is_empty() => (8, rest, true),
        _ => (10, b, false),
    };
    if digits.is_empty() {
        return Err(SYNTAX.to_owned());
    }
    let mut value: u128 = 0;
    // Whether the previous character was a digit (or the base prefix, after
    // which Go allows an underscore).
    let mut prev_digit = prefixed;
    let mut prev_underscore = false;
    for &c in digits {
        if c == b'_' {
            if !prev_digit {
                return Err(SYNTAX.to_owned());
            }
            prev_digit = false;
            prev_underscore = true;
            continue;
        }
        let d = match c {
            b'0'..=b'9' => u128::from(c - b'0'),
            b'a'..=b'z' => u128::from(c - b'a' + 10),
            b'A'..=b'Z' => u128::from(c - b'A' + 10),
            _ => return Err(SYNTAX.to_owned()),
        };
        if d >= base {
            return Err(SYNTAX.to_owned());
        }
        value = value * base + d;
        if value > u128::from(u64::MAX) {
            return Err("value out of range".to_owned());
        }
        prev_digit = true;
        prev_underscore = false;
    }
    if prev_underscore {
        return Err(SYNTAX.to_owned());
    }
    let value = value as i128; // <= u64::MAX, fits
    Ok(if neg { -value } else { value })
}

/// A numeric uid, or a user name resolved with `getpwnam_r`.
pub(crate) fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(n) = parse_go_int(s) {
        // u32::MAX is (uid_t)-1, "no change" to setuid: not a user.
        return match u32::try_from(n) {
            Ok(uid) if uid != u32::MAX => Ok(uid),
            _ => Err("not a valid uid".to_owned()),
        };
    }
    if s.is_empty() {
        return Err("must be a uid or a user name".to_owned());
    }
    lookup_user(s)
}

/// Look a user name up in the password database (`getpwnam_r`).
fn lookup_user(name: &str) -> Result<u32, String> {
    crate::sys::uid_by_name(name)
}

/// Parse a duration in Go's `time.ParseDuration` syntax: `"0"`, or one or
/// more decimal numbers, each with an optional fraction and a unit: `ns`,
/// `us` (or `µs`, `μs`), `ms`, `s`, `m`, `h` — e.g. `300ms`, `1.5s`, `1m30s`,
/// `2h45m`. A leading `+` is allowed; negative durations are an error, as
/// is anything longer than Go's limit (2^63-1 ns, about 292 years).
/// Fractions below a nanosecond are truncated, as in Go.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || "not a duration (write e.g. 0, 300ms, 1.5s, 1m30s, 2h45m)".to_owned();
    let mut rest = match s.as_bytes().first() {
        Some(b'+') => &s[1..],
        Some(b'-') => {
            return Err("a duration must not be negative".to_owned());
        }
        _ => s,
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    const MAX_NANOS: u128 = i64::MAX as u128;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // Integer part.
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_digits = &rest[..int_len];
        rest = &rest[int_len..];
        // Fraction.
        let mut frac_digits = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_digits = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit in duration (ns, us, ms, s, m or h)".to_owned()),
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} in duration (use ns, us, ms, s, m or h)"
                ))
            }
        };
        let too_long = || "duration too long (at most 2562047h)".to_owned();
        let mut int: u128 = 0;
        for d in int_digits.bytes() {
            int = int * 10 + u128::from(d - b'0');
            if int > MAX_NANOS {
                return Err(too_long());
            }
        }
        // The fraction as Go's leadingFraction reads it (digits while they
        // fit in 63 bits), scaled in f64 as Go does, so results match Go's
        // to the nanosecond (e.g. 0.3333333333333333333h is 20m exactly).
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        for d in frac_digits.bytes() {
            match frac
                .checked_mul(10)
                .and_then(|f| f.checked_add(u64::from(d - b'0')))
            {
                Some(f) if f <= 1 << 63 => {
                    frac = f;
                    scale *= 10.0;
                }
                _ => break,
            }
        }
        // A float-to-int `as` cast saturates; it cannot panic.
        let frac_nanos = (frac as f64 * (per_unit as f64 / scale)) as u128;
        total = int
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(frac_nanos))
            .and_then(|n| n.checked_add(total))
            .filter(|&n| n <= MAX_NANOS)
            .ok_or_else(too_long)?;
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Parse a listen address `HOST:PORT` as Go's `net.Listen` does: an empty
/// host (`:8000`) is `0.0.0.0`; IPv6 literals are bracketed (`[::1]:80`); a
/// host name is resolved (its first IPv4 address is preferred). The port is
/// a decimal number 0..=65535 (0 picks a free port) and may not be missing.
pub fn parse_address(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = if let Some(after) = s.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err("missing ']' in address".to_owned());
        };
        let port = after[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| "missing port in address (write HOST:PORT)".to_owned())?;
        (&after[..end], port)
    } else {
        let Some(colon) = s.rfind(':') else {
            return Err("missing port in address (write HOST:PORT, or :PORT)".to_owned());
        };
        let host = &s[..colon];
        if host.contains(':') {
            return Err("too many colons in address (bracket IPv6: [::1]:80)".to_owned());
        }
        (host, &s[colon + 1..])
    };
    if port.is_empty() {
        return Err("missing port in address (write HOST:PORT, or :PORT)".to_owned());
    }
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {port:?}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port {port:?} (0 to 65535)"))?;
    if host.is_empty() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let valid_name = host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_name {
        return Err(format!("invalid host {host:?}"));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use std::os::unix::ffi::OsStringExt;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// Parse with stdin not a terminal and no RUST_LOG.
    fn parse(v: &[&str]) -> Result<Command, ConfigError> {
        parse_args_with_env(os(v), false, None)
    }

    fn run(v: &[&str]) -> Config {
        match parse(v) {
            Ok(Command::Run(c)) => c,
            other => panic!("{v:?}: expected Run, got {other:?}"),
        }
    }

    fn stream(v: &[&str]) -> StreamConfig {
        run(v).streams.remove(0)
    }

    /// The flag named by the error for this command line.
    fn err_flag(v: &[&str]) -> String {
        match parse(v) {
            Err(e) => {
                assert!(!e.message.is_empty());
                assert!(e.to_string().starts_with(&format!("-{}: ", e.flag)));
                e.flag
            }
            Ok(c) => panic!("{v:?}: expected an error, got {c:?}"),
        }
    }

    fn defaults() -> Config {
        Config {
            listen: vec!["0.0.0.0:80".parse().unwrap()],
            admin_listen: None,
            config_file: None,
            cpu_max: cpus_online(),
            stat_log_interval: None,
            uid: None,
            flush_interval: Duration::from_millis(200),
            listen_backlog: 4096,
            max_clients: 0,
            log_level: log::LevelFilter::Info,
            streams: vec![StreamConfig {
                mount: None,
                source: SourceSpec::Path(PathBuf::from("/dev/stdin")),
                framer: FramerKind::Raw,
                frame_bytes: 64,
                header_bytes: 0,
                source_buffer: 64,
                source_bandwidth: 0,
                client_max_bytes: 0,
                close_idle: false,
                content_type: "application/octet-stream".to_owned(),
                reopen: true,
                max_quiet_interval: None,
                max_clients: 0,
                burst_bytes: 0,
                burst: None,
            }],
        }
    }

    #[test]
    fn table_is_indexed_by_flag() {
        for (i, d) in FLAGS.iter().enumerate() {
            assert_eq!(d.flag as usize, i, "{}", d.name);
            assert!(std::ptr::eq(def(d.flag), d));
        }
    }

    #[test]
    fn every_default() {
        assert_eq!(run(&[]), defaults());
    }

    #[test]
    fn every_flag_in_all_four_spellings() {
        // (flag, value or None for a bool, the expected change from defaults)
        type Edit = fn(&mut Config);
        let cases: Vec<(&str, Option<&str>, Edit)> = vec![
            ("address", Some(":8000"), |c| {
                c.listen = vec!["0.0.0.0:8000".parse().unwrap()]
            }),
            ("path", Some("/tmp/fifo"), |c| {
                c.streams[0].source = SourceSpec::Path("/tmp/fifo".into())
            }),
            ("frame-bytes", Some("2048"), |c| {
                c.streams[0].frame_bytes = 2048
            }),
            ("frame-filter", Some("mp3"), |c| {
                // mp3 without -frame-bytes makes room for any legal frame.
                c.streams[0].framer = FramerKind::Mp3;
                c.streams[0].frame_bytes = 2881;
            }),
            ("header-bytes", Some("44"), |c| {
                c.streams[0].header_bytes = 44
            }),
            ("source-buffer", Some("40"), |c| {
                c.streams[0].source_buffer = 40
            }),
            ("source-bandwidth", Some("16000"), |c| {
                c.streams[0].source_bandwidth = 16000
            }),
            ("client-max-bytes", Some("1000000000"), |c| {
                c.streams[0].client_max_bytes = 1_000_000_000
            }),
            ("close-idle", None, |c| c.streams[0].close_idle = true),
            ("content-type", Some("audio/mpeg"), |c| {
                c.streams[0].content_type = "audio/mpeg".into()
            }),
            ("cpu-max", Some("1"), |c| c.cpu_max = 1),
            ("reopen", None, |_| {}),
            ("stat-log-interval", Some("1m"), |c| {
                c.stat_log_interval = Some(Duration::from_secs(60))
            }),
            ("max-quiet-interval", Some("10s"), |c| {
                c.streams[0].max_quiet_interval = Some(Duration::from_secs(10))
            }),
            ("uid", Some("1234"), |c| c.uid = Some(1234)),
            ("flush-interval", Some("0"), |c| {
                c.flush_interval = Duration::ZERO
            }),
            ("listen-backlog", Some("128"), |c| c.listen_backlog = 128),
            ("max-clients", Some("10000"), |c| c.max_clients = 10000),
            ("log-level", Some("debug"), |c| {
                c.log_level = log::LevelFilter::Debug
            }),
        ];
        for (name, value, edit) in cases {
            let mut want = defaults();
            edit(&mut want);
            let spellings: Vec<Vec<String>> = match value {
                Some(v) => vec![
                    vec![format!("-{name}"), v.to_owned()],
                    vec![format!("-{name}={v}")],
                    vec![format!("--{name}"), v.to_owned()],
                    vec![format!("--{name}={v}")],
                ],
                None => vec![
                    vec![format!("-{name}")],
                    vec![format!("--{name}")],
                    vec![format!("-{name}=true")],
                    vec![format!("--{name}=1")],
                ],
            };
            for args in spellings {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                assert_eq!(run(&args), want, "{args:?}");
            }
        }
    }

    #[test]
    fn usage_lists_every_flag_with_its_default() {
        let Ok(Command::Help(text)) = parse(&["-help"]) else {
            panic!("no help")
        };
        assert_eq!(text, usage());
        for d in FLAGS {
            let line = format!("  -{}", d.name);
            let at = text
                .find(&format!("{line}\n"))
                .or_else(|| text.find(&format!("{line} ")));
            let at = at.unwrap_or_else(|| panic!("{} not in usage", d.name));
            let entry = &text[at..];
            let entry = &entry[..entry[3..].find("\n  -").map_or(entry.len(), |i| i + 3)];
            if d.flag != Flag::Uid && d.flag != Flag::CpuMax {
                assert!(entry.contains("(default "), "{entry}");
                assert!(entry.contains(d.default), "{entry}");
            }
        }
        assert!(text.contains("-h, -help"));
        assert!(text.contains(&format!("(default {} here", cpus_online())));
    }

    #[test]
    fn help_spellings() {
        for v in [&["-h"][..], &["-help"], &["--help"], &["--h"], &["-help=x"]] {
            assert!(matches!(parse(v), Ok(Command::Help(_))), "{v:?}");
        }
        // Like Go: flags before -help are parsed first, the rest is not.
        assert!(matches!(
            parse(&["-reopen=false", "-help", "-nope"]),
            Ok(Command::Help(_))
        ));
        assert_eq!(err_flag(&["-nope", "-help"]), "nope");
    }

    #[test]
    fn version_and_check_config() {
        let want = format!("ringcast {}", env!("CARGO_PKG_VERSION"));
        assert_eq!(parse(&["--version"]), Ok(Command::Version(want.clone())));
        assert_eq!(parse(&["-version"]), Ok(Command::Version(want)));
        assert_eq!(parse(&["-version=false"]), Ok(Command::Run(defaults())));
        assert_eq!(
            parse(&["-check-config"]),
            Ok(Command::CheckConfig(defaults()))
        );
        assert_eq!(
            err_flag(&["-check-config", "-frame-bytes", "0"]),
            "frame-bytes"
        );
    }

    #[test]
    fn booleans_use_go_parse_bool() {
        for f in ["false", "0", "f", "F", "FALSE", "False"] {
            assert!(!stream(&[&format!("-reopen={f}")]).reopen, "{f}");
            assert!(!stream(&[&format!("--reopen={f}")]).reopen, "{f}");
        }
        for t in ["true", "1", "t", "T", "TRUE", "True"] {
            assert!(stream(&[&format!("-close-idle={t}")]).close_idle, "{t}");
        }
        assert!(
            stream(&["-reopen=false", "-reopen"]).reopen,
            "last one wins"
        );
        assert_eq!(err_flag(&["-reopen=no"]), "reopen");
        assert_eq!(err_flag(&["-reopen="]), "reopen");
        // A boolean never takes a separate value: "false" is a positional
        // argument, i.e. a command without -exec.
        assert_eq!(err_flag(&["-reopen", "false"]), "exec");
    }

    #[test]
    fn exec_takes_the_rest() {
        let exec = |program: &str, args: &[&str]| SourceSpec::Exec {
            program: program.to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            stream(&["-exec", "cmd", "-a", "b"]).source,
            exec("cmd", &["-a", "b"])
        );
        let s = stream(&[
            "-address",
            ":0",
            "-exec",
            "-reopen=false",
            "sh",
            "-c",
            "x -y",
        ]);
        assert_eq!(s.source, exec("sh", &["-c", "x -y"]));
        assert!(!s.reopen);
        // Flags after the command belong to it.
        let s = stream(&["-exec", "cmd", "-frame-bytes", "9"]);
        assert_eq!(s.source, exec("cmd", &["-frame-bytes", "9"]));
        assert_eq!(s.frame_bytes, 64);
        // "--" ends the flags and is dropped; later ones are kept.
        assert_eq!(
            stream(&["-exec", "--", "-cmd", "--"]).source,
            exec("-cmd", &["--"])
        );
        assert_eq!(stream(&["--exec", "--", "cmd"]).source, exec("cmd", &[]));
        // "-" alone is a positional argument.
        assert_eq!(stream(&["-exec", "-", "x"]).source, exec("-", &["x"]));
    }

    #[test]
    fn exec_errors() {
        assert_eq!(err_flag(&["-exec"]), "exec");
        assert_eq!(err_flag(&["-exec", "--"]), "exec");
        assert_eq!(err_flag(&["cmd"]), "exec");
        assert_eq!(err_flag(&["-reopen=false", "--", "-x"]), "exec");
        assert_eq!(err_flag(&["-exec=false", "cmd"]), "exec");
        assert_eq!(err_flag(&["-path", "/x", "-exec", "cmd"]), "path");
        assert_eq!(err_flag(&["-exec", "-path", "/x", "cmd"]), "path");
        assert_eq!(err_flag(&["-exec", ""]), "exec");
    }

    #[test]
    fn value_flags_take_the_next_argument_whatever_it_is() {
        assert_eq!(
            stream(&["-path", "-odd"]).source,
            SourceSpec::Path("-odd".into())
        );
        assert_eq!(stream(&["-content-type", "a=b"]).content_type, "a=b");
        assert_eq!(stream(&["-content-type=a=b"]).content_type, "a=b");
        assert_eq!(
            stream(&["-frame-bytes", "1", "-frame-bytes", "2"]).frame_bytes,
            2
        );
    }

    #[test]
    fn errors_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["-bogus"], "bogus"),
            (&["--bogus=1"], "bogus"),
            (&["---x"], "x"),
            (&["-=x"], "=x"),
            (&["-address"], "address"),
            (&["-frame-bytes"], "frame-bytes"),
            (&["-address", "nope"], "address"),
            (&["-address", ":99999"], "address"),
            (&["-frame-bytes", "abc"], "frame-bytes"),
            (&["-frame-bytes", "0"], "frame-bytes"),
            (&["-frame-bytes", "-1"], "frame-bytes"),
            (&["-frame-bytes", ""], "frame-bytes"),
            (&["-frame-filter", "flac"], "frame-filter"),
            (&["-header-bytes", "-1"], "header-bytes"),
            (&["-source-buffer", "2"], "source-buffer"),
            (&["-source-buffer", "x"], "source-buffer"),
            (&["-source-bandwidth", "1.5"], "source-bandwidth"),
            (
                &["-client-max-bytes", "99999999999999999999999"],
                "client-max-bytes",
            ),
            (&["-content-type", "a\r\nSet-Cookie: x"], "content-type"),
            (&["-content-type", ""], "content-type"),
            (&["-cpu-max", "0"], "cpu-max"),
            (&["-cpu-max", "two"], "cpu-max"),
            (&["-stat-log-interval", "5"], "stat-log-interval"),
            (&["-max-quiet-interval", "-1s"], "max-quiet-interval"),
            (&["-uid", "no-such-user-ringcast-test"], "uid"),
            (&["-uid", "-1"], "uid"),
            (&["-uid", ""], "uid"),
            (&["-flush-interval", "1x"], "flush-interval"),
            (&["-listen-backlog", "0"], "listen-backlog"),
            (&["-listen-backlog", "65536"], "listen-backlog"),
            (&["-max-clients", "-5"], "max-clients"),
            (&["-log-level", "loud"], "log-level"),
            (&["-path", ""], "path"),
            (&["-frame-bytes", "18446744073709551615"], "source-buffer"),
        ];
        for (args, flag) in cases {
            assert_eq!(err_flag(args), *flag, "{args:?}");
        }
        let e = parse(&["-frame-bytes", "0"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "-frame-bytes: invalid value \"0\": must be at least 1"
        );
        let e = parse(&["-source-buffer", "2"]).unwrap_err();
        assert!(e.message.contains("more than 2"), "{e}");
        let e = parse(&["-bogus"]).unwrap_err();
        assert!(e.to_string().contains("not defined"), "{e}");
    }

    #[test]
    fn non_utf8_arguments_are_errors_or_paths() {
        let bad = OsString::from_vec(vec![b'/', 0xff, b'x']);
        let c = parse_args_with_env(vec!["-path".into(), bad.clone()], false, None);
        let Ok(Command::Run(c)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            c.streams[0].source,
            SourceSpec::Path(PathBuf::from(bad.clone()))
        );
        let e = parse_args_with_env(vec!["-exec".into(), bad.clone()], false, None);
        assert_eq!(e.unwrap_err().flag, "exec");
        let e = parse_args_with_env(vec!["-address".into(), bad.clone()], false, None);
        assert_eq!(e.unwrap_err().flag, "address");
        let mut flag = b"-".to_vec();
        flag.extend_from_slice(bad.as_encoded_bytes());
        let e = parse_args_with_env(vec![OsString::from_vec(flag)], false, None);
        assert!(e.is_err());
    }

    #[test]
    fn go_integer_syntax() {
        assert_eq!(stream(&["-frame-bytes", "0x40"]).frame_bytes, 64);
        assert_eq!(stream(&["-frame-bytes", "0100"]).frame_bytes, 64);
        assert_eq!(stream(&["-frame-bytes", "0o100"]).frame_bytes, 64);
        assert_eq!(stream(&["-frame-bytes", "0b1000000"]).frame_bytes, 64);
        assert_eq!(stream(&["-frame-bytes", "+64"]).frame_bytes, 64);
        assert_eq!(
            stream(&["-client-max-bytes", "1_000_000"]).client_max_bytes,
            1_000_000
        );
        assert_eq!(parse_go_int("0x_1F"), Ok(31));
        assert_eq!(parse_go_int("-0x10"), Ok(-16));
        assert_eq!(parse_go_int("0"), Ok(0));
        for bad in [
            "", "-", "0x", "08", "_1", "1_", "1__0", "1e3", " 1", "1.0", "0xg",
        ] {
            assert!(parse_go_int(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_go_examples() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("+0", 0),
            ("0s", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("+5s", 5_000_000_000),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.5s", 1_500_000_000),
            ("1.004s", 1_004_000_000),
            ("1.0040s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("300ms", 300_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("1m30s", 90_000_000_000),
            ("2h45m", 9_900_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("1h1m1s", 3_661_000_000_000),
            ("2m3.4s", 123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9007199254740993ns", 9_007_199_254_740_993),
            ("9223372036854775807ns", 9_223_372_036_854_775_807),
            ("9223372036854775.807us", 9_223_372_036_854_775_807),
            ("9223372036s854ms775us807ns", 9_223_372_036_854_775_807),
            ("0.100000000000000000000h", 360_000_000_000),
        ];
        for (s, nanos) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_nanos(*nanos)), "{s:?}");
        }
        let bad = [
            "",
            "3",
            "-",
            "s",
            ".",
            ".s",
            "+.s",
            "1d",
            "1.2.3s",
            "5s3",
            "-5s",
            "-0",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "3000000h",
            " 1s",
            "1 s",
            "1sec",
            "1µ",
            "\u{b5}s",
        ];
        for s in bad {
            assert!(parse_duration(s).is_err(), "{s:?}");
        }
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn addresses() {
        let v4 = |a: [u8; 4], p| SocketAddr::new(IpAddr::V4(a.into()), p);
        assert_eq!(parse_address(":0"), Ok(v4([0, 0, 0, 0], 0)));
        assert_eq!(parse_address(":8000"), Ok(v4([0, 0, 0, 0], 8000)));
        assert_eq!(parse_address("127.0.0.1:0"), Ok(v4([127, 0, 0, 1], 0)));
        assert_eq!(
            parse_address("10.1.2.3:10123"),
            Ok(v4([10, 1, 2, 3], 10123))
        );
        assert_eq!(
            parse_address("[::1]:80"),
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 80))
        );
        assert_eq!(
            parse_address("[::]:0"),
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0))
        );
        let local = parse_address("localhost:8000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8000, "{local}");
        for bad in [
            "",
            ":",
            "127.0.0.1",
            "127.0.0.1:",
            "::1",
            "[::1]",
            "[::1]80",
            "[::1",
            ":65536",
            ":-1",
            ":http",
            ":80x",
            "a b:80",
            "host\0:80",
            "1.2.3.4:123456",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
        assert_eq!(run(&["-address", ":0"]).listen[0], v4([0, 0, 0, 0], 0));
    }

    #[test]
    fn demo_selection() {
        let tty = |v: &[&str]| match parse_args_with_env(os(v), true, None) {
            Ok(Command::Run(mut c)) => c.streams.remove(0),
            other => panic!("{other:?}"),
        };
        let demo = tty(&[]);
        assert_eq!(demo.source, SourceSpec::Demo);
        assert_eq!(demo.framer, FramerKind::Raw);
        assert_eq!(demo.frame_bytes, 4410);
        assert_eq!(demo.header_bytes, 44);
        assert_eq!(demo.content_type, "audio/wav");
        assert_eq!(demo.source_buffer, 64);
        // What the user set explicitly wins, even when equal to the default.
        let s = tty(&[
            "-frame-bytes",
            "64",
            "-header-bytes=0",
            "-content-type",
            "x/y",
        ]);
        assert_eq!(
            (s.source, s.frame_bytes, s.header_bytes),
            (SourceSpec::Demo, 64, 0)
        );
        assert_eq!(s.content_type, "x/y");
        assert_eq!(tty(&["-source-buffer", "8"]).source_buffer, 8);
        // Not a terminal: stdin; explicit sources are never the demo.
        assert_eq!(stream(&[]).source, SourceSpec::Path("/dev/stdin".into()));
        let s = tty(&["-path", "/dev/stdin"]);
        assert_eq!(
            (s.source, s.frame_bytes),
            (SourceSpec::Path("/dev/stdin".into()), 64)
        );
        let s = tty(&["-exec", "cat"]);
        assert!(matches!(s.source, SourceSpec::Exec { .. }));
        assert_eq!(s.content_type, "application/octet-stream");
    }

    #[test]
    fn cpu_max_bounds() {
        let n = cpus_online();
        assert!(n >= 1);
        assert_eq!(run(&[]).cpu_max, n);
        assert_eq!(run(&["-cpu-max", "1"]).cpu_max, 1);
        assert_eq!(run(&["-cpu-max", &n.to_string()]).cpu_max, n);
        let e = parse(&["-cpu-max", &(n + 1).to_string()]).unwrap_err();
        assert_eq!(e.flag, "cpu-max");
        assert!(e.message.contains(&format!("between 1 and {n}")), "{e}");
        assert_eq!(err_flag(&["-cpu-max", "0"]), "cpu-max");
        assert_eq!(err_flag(&["-cpu-max", "-1"]), "cpu-max");
    }

    #[test]
    fn uid_numeric_or_name() {
        assert_eq!(run(&["-uid", "0"]).uid, Some(0));
        assert_eq!(run(&["-uid", "65534"]).uid, Some(65534));
        // root is uid 0 wherever there is a password database.
        assert_eq!(run(&["-uid", "root"]).uid, Some(0));
        assert_eq!(err_flag(&["-uid", "4294967295"]), "uid");
        assert_eq!(err_flag(&["-uid", "a\0b"]), "uid");
    }

    #[test]
    fn log_level_flag_then_rust_log() {
        let level = |v: &[&str], env: Option<&str>| match parse_args_with_env(os(v), false, env) {
            Ok(Command::Run(c)) => c.log_level,
            other => panic!("{other:?}"),
        };
        use log::LevelFilter::*;
        assert_eq!(level(&[], None), Info);
        assert_eq!(level(&[], Some("debug")), Debug);
        assert_eq!(level(&[], Some("TRACE")), Trace);
        assert_eq!(level(&[], Some("ringcast=debug")), Info);
        assert_eq!(level(&["-log-level", "warn"], Some("debug")), Warn);
        for (word, want) in [
            ("error", Error),
            ("warn", Warn),
            ("info", Info),
            ("trace", Trace),
        ] {
            assert_eq!(level(&["-log-level", word], None), want);
        }
    }

    #[test]
    fn frame_filter_spellings() {
        assert_eq!(stream(&["-frame-filter", ""]).framer, FramerKind::Raw);
        assert_eq!(stream(&["-frame-filter="]).framer, FramerKind::Raw);
        assert_eq!(stream(&["-frame-filter", "raw"]).framer, FramerKind::Raw);
        assert_eq!(stream(&["-frame-filter", "mp3"]).framer, FramerKind::Mp3);
        let aac = stream(&["-frame-filter", "aac"]);
        assert_eq!((aac.framer, aac.frame_bytes), (FramerKind::Aac, 8191));
        let ogg = stream(&["-frame-filter", "OGG"]);
        assert_eq!((ogg.framer, ogg.frame_bytes), (FramerKind::Ogg, 65307));
        let ogg = stream(&["-frame-filter", "ogg", "-frame-bytes", "9000"]);
        assert_eq!((ogg.framer, ogg.frame_bytes), (FramerKind::Ogg, 9000));
        // streamserve's README spells it -filter.
        assert_eq!(stream(&["-filter", "mp3"]).framer, FramerKind::Mp3);
        assert_eq!(stream(&["-filter=raw"]).framer, FramerKind::Raw);
    }

    #[test]
    fn streamserve_readme_command_lines() {
        let s = run(&[
            "-address",
            ":8800",
            "-source-buffer",
            "40",
            "-frame-bytes",
            "44100",
            "-reopen=false",
            "-path",
            "/dev/fd/63",
        ]);
        assert_eq!(s.listen[0].port(), 8800);
        let st = &s.streams[0];
        assert_eq!(
            (st.source_buffer, st.frame_bytes, st.reopen),
            (40, 44100, false)
        );
        assert_eq!(st.source, SourceSpec::Path("/dev/fd/63".into()));
        let s = run(&[
            "-address",
            "127.0.0.1:8800",
            "-frame-filter",
            "mp3",
            "-frame-bytes",
            "2048",
        ]);
        assert_eq!(s.listen[0], "127.0.0.1:8800".parse().unwrap());
        assert_eq!(s.streams[0].framer, FramerKind::Mp3);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn arg() -> impl Strategy<Value = OsString> {
            let flag = proptest::sample::select(
                FLAGS
                    .iter()
                    .map(|d| d.name)
                    .chain(["help", "h", "bogus", ""])
                    .collect::<Vec<_>>(),
            );
            let value = proptest::sample::select(vec![
                "",
                "0",
                "1",
                "3",
                "-1",
                "64",
                "0x40",
                "99999999999999999999",
                "true",
                "f",
                ":0",
                "127.0.0.1:0",
                "[::1]:0",
                "300ms",
                "1.5s",
                "-5s",
                "mp3",
                "raw",
                "root",
                "debug",
                "--",
                "-",
                "=",
                "\u{b5}s",
                "1h1m1s",
            ]);
            prop_oneof![
                (flag.clone(), 0..4u8).prop_map(|(f, style)| match style {
                    0 => format!("-{f}"),
                    1 => format!("--{f}"),
                    2 => format!("-{f}="),
                    _ => format!("---{f}"),
                }
                .into()),
                (flag, value.clone()).prop_map(|(f, v)| format!("-{f}={v}").into()),
                value.prop_map(OsString::from),
                "\\PC{0,12}".prop_map(OsString::from),
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn arbitrary_arguments_never_panic(
                args in proptest::collection::vec(arg(), 0..10),
                tty in any::<bool>(),
                env in proptest::option::of("\\PC{0,8}"),
            ) {
                let _ = parse_args_with_env(args, tty, env.as_deref());
            }

            #[test]
            fn arbitrary_durations_and_addresses_never_panic(s in "[0-9.a-zµμ+:\\[\\]-]{0,16}") {
                let _ = parse_duration(&s);
                if !s.bytes().any(|b| b.is_ascii_alphabetic()) {
                    let _ = parse_address(&s); // no host names: no DNS in a property test
                }
            }
        }
    }
}
