//! The settings table: the one place that names every setting — its flag,
//! its key in the configuration file, whether the environment may set it
//! (`RINGCAST_<FLAG>`), whether it is server-wide or per stream, its kind
//! and limits, its default and its one-line help. The three front ends look
//! names up here, the validator takes kinds, limits and defaults from here,
//! and [`usage`] prints it, so none of them can drift from the others.

/// Every setting. The discriminant is the setting's index in [`TABLE`]
/// (checked by a test), so a [`Layer`](super::raw::Layer) can be a plain
/// vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Setting {
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
    Relay,
    IcyMetaint,
    CorsOrigin,
    SourceTimeout,
    // Settings of the configuration file only (no flag, no variable).
    AdminListen,
    Mount,
    Demo,
    StreamMaxClients,
    Push,
    Realtime,
    Loop,
    Fallback,
    FallbackOverride,
    FallbackAfter,
    OnDemand,
    OnDemandIdle,
    Destinations,
    InfoName,
    InfoDescription,
    InfoGenre,
    InfoUrl,
    InfoBitrate,
    InfoPublic,
    TitleFile,
    TitleCommand,
    Headers,
    Users,
    HealthMounts,
    Mirrors,
    Channels,
    // Keys of `[[user]]`.
    UserName,
    UserPassword,
    UserPasswordFile,
    UserRoles,
    UserMounts,
    // Keys of `[[stream.destination]]`.
    DestUrl,
    DestUser,
    DestPassword,
    DestPasswordFile,
    DestLegacySource,
    DestRetryLimit,
    // Keys of `[[mirror]]` (besides the stream settings it takes).
    MirrorOrigin,
    MirrorUser,
    MirrorPassword,
    MirrorPasswordFile,
    MirrorInterval,
    // Keys of `[channels]` (besides the stream settings it takes).
    MaxChannels,
    ChannelKeys,
}

/// Where a setting applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole server ([`Config`](super::Config)): a top-level key in the
    /// file.
    Server,
    /// One stream ([`StreamConfig`](super::StreamConfig)): a key of a
    /// `[[stream]]` table.
    Stream,
    /// What the binary does (`-config`, `-check-config`, `-version`): not
    /// part of the configuration.
    Run,
    /// A key of a `[[user]]` table ([`User`](super::User)).
    User,
    /// A key of a `[[stream.destination]]` table
    /// ([`Destination`](super::Destination)).
    Destination,
    /// A key of a `[[mirror]]` table ([`Mirror`](super::Mirror)); it also
    /// takes the stream settings of [`MIRROR_STREAM_KEYS`].
    Mirror,
    /// A key of the `[channels]` table ([`Channels`](super::Channels)); it
    /// also takes the stream settings of [`CHANNEL_STREAM_KEYS`].
    Channels,
}

/// The stream settings a `[[mirror]]` takes for the streams it creates.
pub(crate) const MIRROR_STREAM_KEYS: &[Setting] = &[
    Setting::FrameFilter,
    Setting::FrameBytes,
    Setting::SourceBuffer,
    Setting::BurstBytes,
    Setting::BurstMs,
    Setting::ClientMaxBytes,
    Setting::StreamMaxClients,
    Setting::FallbackAfter,
    Setting::SourceTimeout,
    Setting::OnDemand,
    Setting::OnDemandIdle,
    Setting::IcyMetaint,
    Setting::CorsOrigin,
];

/// The stream settings `[channels]` takes for each channel's stream.
pub(crate) const CHANNEL_STREAM_KEYS: &[Setting] = &[
    Setting::FrameFilter,
    Setting::FrameBytes,
    Setting::HeaderBytes,
    Setting::SourceBuffer,
    Setting::ContentType,
    Setting::BurstBytes,
    Setting::BurstMs,
    Setting::ClientMaxBytes,
    Setting::StreamMaxClients,
    Setting::SourceTimeout,
    Setting::CorsOrigin,
];

/// Settings whose values are secrets: no message quotes them.
pub(crate) fn is_secret(s: Setting) -> bool {
    matches!(
        s,
        Setting::UserPassword
            | Setting::DestPassword
            | Setting::MirrorPassword
            | Setting::ChannelKeys
    )
}

/// Settings whose values are URLs that may carry `user:password@`: a
/// message quotes them without the password.
pub(crate) fn is_url(s: Setting) -> bool {
    matches!(s, Setting::Relay | Setting::DestUrl | Setting::MirrorOrigin)
}

/// The upper limit of an integer setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Max {
    Value(i64),
    /// The number of CPUs online (`-cpu-max`).
    CpusOnline,
}

/// What a setting's value is, as the validator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `-name` / `-name=BOOL` (Go's ParseBool words); a TOML boolean.
    Bool,
    /// Go `ParseInt(s, 0, 64)` syntax; a TOML integer. `below` replaces the
    /// "must be at least MIN" message when it is not empty.
    Int {
        min: i64,
        max: Max,
        below: &'static str,
    },
    /// Go `time.ParseDuration` syntax; a TOML string.
    Duration,
    /// UTF-8 text; a TOML string.
    Text,
    /// A file name (any bytes); a TOML string.
    Path,
    /// One listen address; a TOML string.
    Address,
    /// Listen addresses: one from a flag or variable, one or a list in the
    /// file.
    Addresses,
    /// A command: the arguments after the flags, the words of a variable, a
    /// TOML list of strings.
    Command,
    /// A numeric uid or a user name; a TOML integer or string.
    User,
    /// HTTP URLs: one from a flag or variable, one or a list in the file.
    Urls,
    /// A TOML list of strings (file only).
    Strings,
    /// An array of tables of the file, each with the keys of the scope
    /// (`[[user]]`, `[[stream.destination]]`, `[[mirror]]`).
    Tables(Scope),
    /// One table of the file with the keys of the scope (`[channels]`).
    Table(Scope),
    /// A table of header names and their values (`[stream.headers]`).
    Headers,
}

/// One row of the table.
pub(crate) struct Def {
    pub setting: Setting,
    /// The flag, without dashes; empty for a setting of the file only.
    pub flag: &'static str,
    /// The key in the configuration file; empty when the file has none.
    pub key: &'static str,
    /// Whether `RINGCAST_<FLAG>` sets it.
    pub env: bool,
    pub scope: Scope,
    pub kind: Kind,
    /// The default as the user would write it, read by the same code as a
    /// given value. Empty when there is none (`cpu-max`: the CPUs online;
    /// `uid`: stay the current user) or it depends on other settings (see
    /// the validator: frame size, header and content type of the framers and
    /// the demo).
    pub default: &'static str,
    /// One line for the usage text.
    pub help: &'static str,
    /// A streamserve flag (true) or one of ringcast's own (false).
    pub streamserve: bool,
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int {
        min,
        max: Max::Value(max),
        below: "",
    }
}

/// 1 MiB.
const MIB: i64 = 1 << 20;

/// The largest ring (`frame_bytes` × `source_buffer`), bytes: 4 GiB, and
/// never more than an allocation may be.
pub(crate) const MAX_RING_BYTES: u64 = if (isize::MAX as u64) < (4 << 30) {
    isize::MAX as u64
} else {
    4 << 30
};

/// The table: parsing, defaults, limits and the usage text all come from
/// here. Rows are in [`Setting`] order; the usage text lists the flags in
/// this order.
pub(crate) static TABLE: &[Def] = &[
    Def {
        setting: Setting::Address,
        flag: "address",
        key: "listen",
        env: true,
        scope: Scope::Server,
        kind: Kind::Addresses,
        default: "0.0.0.0:80",
        help: "listen address HOST:PORT; \":8000\" is all interfaces, port 0 picks a free port",
        streamserve: true,
    },
    Def {
        setting: Setting::Path,
        flag: "path",
        key: "path",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Path,
        default: "/dev/stdin",
        help: "file or FIFO to read the stream from (not with -exec)",
        streamserve: true,
    },
    Def {
        setting: Setting::Exec,
        flag: "exec",
        key: "exec",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Command,
        default: "",
        help: "run the command given after the flags (no shell, stdin /dev/null) and read its stdout",
        streamserve: true,
    },
    Def {
        setting: Setting::FrameBytes,
        flag: "frame-bytes",
        key: "frame_bytes",
        env: true,
        scope: Scope::Stream,
        kind: int(1, 64 * MIB),
        default: "64",
        help: "raw: exact frame size; mp3, aac, ogg: maximum frame size, 1 to 64 MiB (unset: any legal frame fits, 2881 for mp3, 8191 for aac, 65307 for ogg)",
        streamserve: true,
    },
    Def {
        setting: Setting::FrameFilter,
        flag: "frame-filter",
        key: "framer",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "raw",
        help: "how to cut the stream into frames: raw (fixed size; \"\" also means raw), mp3, aac (ADTS) or ogg (Vorbis, Opus; alias: -filter)",
        streamserve: true,
    },
    Def {
        setting: Setting::HeaderBytes,
        flag: "header-bytes",
        key: "header_bytes",
        env: true,
        scope: Scope::Stream,
        kind: int(0, MIB),
        default: "0",
        help: "bytes captured at each source open and sent to every client before any frame (at most 1 MiB)",
        streamserve: true,
    },
    Def {
        setting: Setting::SourceBuffer,
        flag: "source-buffer",
        key: "source_buffer",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Int {
            min: 3,
            max: Max::Value(1 << 24),
            below: "must be more than 2",
        },
        default: "64",
        help: "ring size in frames: how far a client may lag before it skips (3 to 16777216; the ring is at most 4 GiB)",
        streamserve: true,
    },
    Def {
        setting: Setting::SourceBandwidth,
        flag: "source-bandwidth",
        key: "source_bandwidth",
        env: true,
        scope: Scope::Stream,
        kind: int(0, i64::MAX),
        default: "0",
        help: "limit reading the source to this many bytes/s (0 = as fast as it comes)",
        streamserve: true,
    },
    Def {
        setting: Setting::ClientMaxBytes,
        flag: "client-max-bytes",
        key: "client_max_bytes",
        env: true,
        scope: Scope::Stream,
        kind: int(0, i64::MAX),
        default: "0",
        help: "end a client's response after the whole frame that reaches this many bytes (0 = never)",
        streamserve: true,
    },
    Def {
        setting: Setting::CloseIdle,
        flag: "close-idle",
        key: "close_idle",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "close the source / stop the command when the last client leaves",
        streamserve: true,
    },
    Def {
        setting: Setting::ContentType,
        flag: "content-type",
        key: "content_type",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "application/octet-stream",
        help: "Content-Type of the responses (unset: audio/mpeg for mp3, audio/aac for aac, audio/ogg for ogg, else the default)",
        streamserve: true,
    },
    Def {
        setting: Setting::CpuMax,
        flag: "cpu-max",
        key: "cpu_max",
        env: true,
        scope: Scope::Server,
        kind: Kind::Int {
            min: 1,
            max: Max::CpusOnline,
            below: "",
        },
        default: "",
        help: "number of cores to serve clients on (1 to the number of CPUs online)",
        streamserve: true,
    },
    Def {
        setting: Setting::Reopen,
        flag: "reopen",
        key: "reopen",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "true",
        help: "reopen the path / re-run the command (with backoff) when it ends or fails; -reopen=false exits instead",
        streamserve: true,
    },
    Def {
        setting: Setting::StatLogInterval,
        flag: "stat-log-interval",
        key: "stat_log_interval",
        env: true,
        scope: Scope::Server,
        kind: Kind::Duration,
        default: "0s",
        help: "log per-source statistics this often, e.g. 1m (0 = never)",
        streamserve: true,
    },
    Def {
        setting: Setting::MaxQuietInterval,
        flag: "max-quiet-interval",
        key: "max_quiet_interval",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Duration,
        default: "0s",
        help: "kill a source that sends nothing for this long, e.g. 10s (0 = never)",
        streamserve: true,
    },
    Def {
        setting: Setting::Uid,
        flag: "uid",
        key: "uid",
        env: true,
        scope: Scope::Server,
        kind: Kind::User,
        default: "",
        help: "switch to this user (numeric uid or user name) after binding the port (default: stay)",
        streamserve: true,
    },
    Def {
        setting: Setting::FlushInterval,
        flag: "flush-interval",
        key: "flush_interval",
        env: true,
        scope: Scope::Server,
        kind: Kind::Duration,
        default: "auto",
        help: "how long a shard may gather frames into one send per listener: auto (adapts to the shard's load: at once when lightly loaded, up to 500ms under load), or a fixed duration (0 = every frame at once); see tuning.md",
        streamserve: false,
    },
    Def {
        setting: Setting::ListenBacklog,
        flag: "listen-backlog",
        key: "listen_backlog",
        env: true,
        scope: Scope::Server,
        kind: int(1, 65535),
        default: "4096",
        help: "listen backlog asked of the kernel, 1 to 65535 (capped by net.core.somaxconn)",
        streamserve: false,
    },
    Def {
        setting: Setting::MaxClients,
        flag: "max-clients",
        key: "max_clients",
        env: true,
        scope: Scope::Server,
        kind: int(0, i64::MAX),
        default: "0",
        help: "most clients served at once (0 = no limit but open files)",
        streamserve: false,
    },
    Def {
        setting: Setting::LogLevel,
        flag: "log-level",
        key: "log_level",
        env: true,
        scope: Scope::Server,
        kind: Kind::Text,
        default: "info",
        help: "error, warn, info, debug or trace (when not set, RUST_LOG if it is one of these words)",
        streamserve: false,
    },
    Def {
        setting: Setting::CheckConfig,
        flag: "check-config",
        key: "",
        env: true,
        scope: Scope::Run,
        kind: Kind::Bool,
        default: "false",
        help: "check the configuration and exit: status 0 if it is valid, 1 and the problem if not",
        streamserve: false,
    },
    Def {
        setting: Setting::Version,
        flag: "version",
        key: "",
        env: false,
        scope: Scope::Run,
        kind: Kind::Bool,
        default: "false",
        help: "print the version and exit",
        streamserve: false,
    },
    Def {
        setting: Setting::Config,
        flag: "config",
        key: "",
        env: true,
        scope: Scope::Run,
        kind: Kind::Path,
        default: "",
        help: "read the streams and settings from this TOML file (see deploy/ringcast.toml); re-read on SIGHUP",
        streamserve: false,
    },
    Def {
        setting: Setting::BurstBytes,
        flag: "burst-bytes",
        key: "burst_bytes",
        env: true,
        scope: Scope::Stream,
        kind: int(0, i64::MAX),
        default: "0",
        help: "fast start: a new client first gets the most recent whole frames up to this many bytes (0 = none)",
        streamserve: false,
    },
    Def {
        setting: Setting::BurstMs,
        flag: "burst-ms",
        key: "burst_ms",
        env: true,
        scope: Scope::Stream,
        kind: int(0, 3_600_000),
        default: "0",
        help: "fast start: as -burst-bytes, in milliseconds of the source's measured byte rate, at most 1 h (the larger of the two wins)",
        streamserve: false,
    },
    Def {
        setting: Setting::Relay,
        flag: "relay",
        key: "relay",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Urls,
        default: "",
        help: "pull the stream from this upstream, http://[user:password@]host[:port]/path (no TLS; the file takes a list, tried in order)",
        streamserve: false,
    },
    Def {
        setting: Setting::IcyMetaint,
        flag: "icy-metaint",
        key: "icy_metaint",
        env: true,
        scope: Scope::Stream,
        kind: int(0, 1_000_000),
        default: "16000",
        help: "audio bytes between in-band ICY title blocks for listeners that ask (Icy-MetaData: 1), at most 1000000 (0 = no titles in-band)",
        streamserve: false,
    },
    Def {
        setting: Setting::CorsOrigin,
        flag: "cors-origin",
        key: "cors_origin",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "*",
        help: "Access-Control-Allow-Origin of stream responses (\"\" = no CORS headers)",
        streamserve: false,
    },
    Def {
        setting: Setting::SourceTimeout,
        flag: "source-timeout",
        key: "source_timeout",
        env: true,
        scope: Scope::Stream,
        kind: Kind::Duration,
        default: "10s",
        help: "drop a pushed or relayed source that sends nothing for this long (more than 0)",
        streamserve: false,
    },
    Def {
        setting: Setting::AdminListen,
        flag: "",
        key: "admin_listen",
        env: false,
        scope: Scope::Server,
        kind: Kind::Address,
        default: "",
        help: "serve /status, /metrics and the status page at this address only",
        streamserve: false,
    },
    Def {
        setting: Setting::Mount,
        flag: "",
        key: "mount",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "the path the stream is served at",
        streamserve: false,
    },
    Def {
        setting: Setting::Demo,
        flag: "",
        key: "demo",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "serve the built-in test tone",
        streamserve: false,
    },
    Def {
        setting: Setting::StreamMaxClients,
        flag: "",
        key: "max_clients",
        env: false,
        scope: Scope::Stream,
        kind: int(0, i64::MAX),
        default: "0",
        help: "most clients of this stream at once (503 beyond; 0 = no limit)",
        streamserve: false,
    },
    Def {
        setting: Setting::Push,
        flag: "",
        key: "push",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "encoders push the stream here (HTTP PUT or SOURCE with source credentials)",
        streamserve: false,
    },
    Def {
        setting: Setting::Realtime,
        flag: "",
        key: "realtime",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "read a path source at the pace of its frames, as a live stream would come",
        streamserve: false,
    },
    Def {
        setting: Setting::Loop,
        flag: "",
        key: "loop",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "start a path source again at its end (implies reopen)",
        streamserve: false,
    },
    Def {
        setting: Setting::Fallback,
        flag: "",
        key: "fallback",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "where listeners go when this stream has no frame for fallback_after (a mount of the same framer and content type)",
        streamserve: false,
    },
    Def {
        setting: Setting::FallbackOverride,
        flag: "",
        key: "fallback_override",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "true",
        help: "listeners that fell back come back when this stream's source returns",
        streamserve: false,
    },
    Def {
        setting: Setting::FallbackAfter,
        flag: "",
        key: "fallback_after",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Duration,
        default: "2s",
        help: "how long without a frame before listeners fall back (more than 0)",
        streamserve: false,
    },
    Def {
        setting: Setting::OnDemand,
        flag: "",
        key: "on_demand",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "false",
        help: "a relay connects only while the stream has listeners",
        streamserve: false,
    },
    Def {
        setting: Setting::OnDemandIdle,
        flag: "",
        key: "on_demand_idle",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Duration,
        default: "10s",
        help: "an on-demand relay closes this long after its last listener left",
        streamserve: false,
    },
    Def {
        setting: Setting::Destinations,
        flag: "",
        key: "destination",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Tables(Scope::Destination),
        default: "",
        help: "servers this stream is pushed to as well ([[stream.destination]])",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoName,
        flag: "",
        key: "name",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "icy-name: the stream's name",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoDescription,
        flag: "",
        key: "description",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "icy-description",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoGenre,
        flag: "",
        key: "genre",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "icy-genre",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoUrl,
        flag: "",
        key: "url",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Text,
        default: "",
        help: "icy-url: the station's web page",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoBitrate,
        flag: "",
        key: "bitrate",
        env: false,
        scope: Scope::Stream,
        kind: int(1, 100_000),
        default: "",
        help: "icy-br: the bitrate in kbit/s, 1 to 100000",
        streamserve: false,
    },
    Def {
        setting: Setting::InfoPublic,
        flag: "",
        key: "public",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Bool,
        default: "",
        help: "icy-pub: whether directories may list the stream",
        streamserve: false,
    },
    Def {
        setting: Setting::TitleFile,
        flag: "",
        key: "title_file",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Path,
        default: "",
        help: "the current title is read from this file when it changes (exec, path and demo sources)",
        streamserve: false,
    },
    Def {
        setting: Setting::TitleCommand,
        flag: "",
        key: "title_command",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Command,
        default: "",
        help: "each line this command prints is the new title (exec, path and demo sources)",
        streamserve: false,
    },
    Def {
        setting: Setting::Headers,
        flag: "",
        key: "headers",
        env: false,
        scope: Scope::Stream,
        kind: Kind::Headers,
        default: "",
        help: "extra response headers ([stream.headers]: Name = \"value\")",
        streamserve: false,
    },
    Def {
        setting: Setting::Users,
        flag: "",
        key: "user",
        env: false,
        scope: Scope::Server,
        kind: Kind::Tables(Scope::User),
        default: "",
        help: "the credential store ([[user]])",
        streamserve: false,
    },
    Def {
        setting: Setting::HealthMounts,
        flag: "",
        key: "health_mounts",
        env: false,
        scope: Scope::Server,
        kind: Kind::Strings,
        default: "",
        help: "/health answers 503 while one of these mounts has no live source",
        streamserve: false,
    },
    Def {
        setting: Setting::Mirrors,
        flag: "",
        key: "mirror",
        env: false,
        scope: Scope::Server,
        kind: Kind::Tables(Scope::Mirror),
        default: "",
        help: "relay every mount of an origin ([[mirror]])",
        streamserve: false,
    },
    Def {
        setting: Setting::Channels,
        flag: "",
        key: "channels",
        env: false,
        scope: Scope::Server,
        kind: Kind::Table(Scope::Channels),
        default: "",
        help: "WebSocket publish channels ([channels])",
        streamserve: false,
    },
    Def {
        setting: Setting::UserName,
        flag: "",
        key: "name",
        env: false,
        scope: Scope::User,
        kind: Kind::Text,
        default: "",
        help: "the user name of HTTP Basic (no ':')",
        streamserve: false,
    },
    Def {
        setting: Setting::UserPassword,
        flag: "",
        key: "password",
        env: false,
        scope: Scope::User,
        kind: Kind::Text,
        default: "",
        help: "the password, as written or a bcrypt hash ($2y$..., htpasswd -B)",
        streamserve: false,
    },
    Def {
        setting: Setting::UserPasswordFile,
        flag: "",
        key: "password_file",
        env: false,
        scope: Scope::User,
        kind: Kind::Path,
        default: "",
        help: "read the password from the first line of this file instead (at every load)",
        streamserve: false,
    },
    Def {
        setting: Setting::UserRoles,
        flag: "",
        key: "roles",
        env: false,
        scope: Scope::User,
        kind: Kind::Strings,
        default: "",
        help: "what the user may do: source, admin, relay (at least one)",
        streamserve: false,
    },
    Def {
        setting: Setting::UserMounts,
        flag: "",
        key: "mounts",
        env: false,
        scope: Scope::User,
        kind: Kind::Strings,
        default: "",
        help: "the mounts the roles apply to (default: every mount)",
        streamserve: false,
    },
    Def {
        setting: Setting::DestUrl,
        flag: "",
        key: "url",
        env: false,
        scope: Scope::Destination,
        kind: Kind::Text,
        default: "",
        help: "the server and mount, http://host[:port]/mount",
        streamserve: false,
    },
    Def {
        setting: Setting::DestUser,
        flag: "",
        key: "user",
        env: false,
        scope: Scope::Destination,
        kind: Kind::Text,
        default: "source",
        help: "the source user name there",
        streamserve: false,
    },
    Def {
        setting: Setting::DestPassword,
        flag: "",
        key: "password",
        env: false,
        scope: Scope::Destination,
        kind: Kind::Text,
        default: "",
        help: "its password (as written: ringcast sends it)",
        streamserve: false,
    },
    Def {
        setting: Setting::DestPasswordFile,
        flag: "",
        key: "password_file",
        env: false,
        scope: Scope::Destination,
        kind: Kind::Path,
        default: "",
        help: "read the password from the first line of this file instead",
        streamserve: false,
    },
    Def {
        setting: Setting::DestLegacySource,
        flag: "",
        key: "legacy_source",
        env: false,
        scope: Scope::Destination,
        kind: Kind::Bool,
        default: "false",
        help: "push with the legacy SOURCE method instead of PUT",
        streamserve: false,
    },
    Def {
        setting: Setting::DestRetryLimit,
        flag: "",
        key: "retry_limit",
        env: false,
        scope: Scope::Destination,
        kind: int(1, u32::MAX as i64),
        default: "",
        help: "give up after this many failed attempts in a row (default: never)",
        streamserve: false,
    },
    Def {
        setting: Setting::MirrorOrigin,
        flag: "",
        key: "origin",
        env: false,
        scope: Scope::Mirror,
        kind: Kind::Text,
        default: "",
        help: "the origin server, http://host[:port] (its /admin/streamlist.txt lists the mounts)",
        streamserve: false,
    },
    Def {
        setting: Setting::MirrorUser,
        flag: "",
        key: "user",
        env: false,
        scope: Scope::Mirror,
        kind: Kind::Text,
        default: "",
        help: "relay user name for the origin (with password)",
        streamserve: false,
    },
    Def {
        setting: Setting::MirrorPassword,
        flag: "",
        key: "password",
        env: false,
        scope: Scope::Mirror,
        kind: Kind::Text,
        default: "",
        help: "its password (as written: ringcast sends it)",
        streamserve: false,
    },
    Def {
        setting: Setting::MirrorPasswordFile,
        flag: "",
        key: "password_file",
        env: false,
        scope: Scope::Mirror,
        kind: Kind::Path,
        default: "",
        help: "read the password from the first line of this file instead",
        streamserve: false,
    },
    Def {
        setting: Setting::MirrorInterval,
        flag: "",
        key: "interval",
        env: false,
        scope: Scope::Mirror,
        kind: Kind::Duration,
        default: "120s",
        help: "how often the origin's list is read again (at least 1s)",
        streamserve: false,
    },
    Def {
        setting: Setting::MaxChannels,
        flag: "",
        key: "max_channels",
        env: false,
        scope: Scope::Channels,
        kind: int(0, 1024),
        default: "0",
        help: "most channels at once, 0 to 1024 (0 = channels off)",
        streamserve: false,
    },
    Def {
        setting: Setting::ChannelKeys,
        flag: "",
        key: "keys",
        env: false,
        scope: Scope::Channels,
        kind: Kind::Strings,
        default: "",
        help: "keys a publisher or receiver must present, each 1 to 128 of a-z 0-9 _ - (default: any key)",
        streamserve: false,
    },
];

/// The row of `setting`.
pub(crate) fn def(setting: Setting) -> &'static Def {
    // The table is indexed by discriminant (tested); fall back to a search so
    // a mistake in the table can never become an out-of-bounds panic.
    match TABLE.get(setting as usize) {
        Some(d) if d.setting == setting => d,
        _ => TABLE
            .iter()
            .find(|d| d.setting == setting)
            .unwrap_or(&TABLE[0]),
    }
}

/// The row of a flag name (`frame-bytes`; `filter` is streamserve's README
/// spelling of `frame-filter`).
pub(crate) fn by_flag(name: &str) -> Option<&'static Def> {
    let name = if name == "filter" {
        "frame-filter"
    } else {
        name
    };
    TABLE.iter().find(|d| !d.flag.is_empty() && d.flag == name)
}

/// The row of a file key at the top level (`Scope::Server`) or in a
/// `[[stream]]` table (`Scope::Stream`).
pub(crate) fn by_key(scope: Scope, key: &str) -> Option<&'static Def> {
    TABLE
        .iter()
        .find(|d| d.scope == scope && !d.key.is_empty() && d.key == key)
}

/// What a key of a table of the file is.
pub(crate) enum Found {
    /// A setting of that table.
    Key(&'static Def),
    /// A setting, but of another table (a stream setting at the top level
    /// or one a `[[mirror]]` does not take).
    Elsewhere(&'static Def),
    /// No setting.
    Unknown,
}

/// The setting of `key` in a table of `scope`: its own keys, and for
/// `[[mirror]]` and `[channels]` the stream settings they take.
pub(crate) fn lookup(scope: Scope, key: &str) -> Found {
    if let Some(d) = by_key(scope, key) {
        return Found::Key(d);
    }
    let takes: &[Setting] = match scope {
        Scope::Mirror => MIRROR_STREAM_KEYS,
        Scope::Channels => CHANNEL_STREAM_KEYS,
        _ => &[],
    };
    match by_key(Scope::Stream, key) {
        Some(d) if takes.contains(&d.setting) => Found::Key(d),
        Some(d) if scope != Scope::Stream => Found::Elsewhere(d),
        _ => Found::Unknown,
    }
}

/// The prefix of every variable ringcast reads.
pub(crate) const ENV_PREFIX: &str = "RINGCAST_";

/// The variable of a flag: `RINGCAST_` and the flag upper-cased, `-` as `_`
/// (`frame-bytes` → `RINGCAST_FRAME_BYTES`). Empty for a setting of the file
/// only.
pub(crate) fn env_name(d: &Def) -> String {
    if d.flag.is_empty() {
        return String::new();
    }
    let mut name = String::from(ENV_PREFIX);
    name.extend(d.flag.chars().map(|c| {
        if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
    name
}

/// The row whose variable is `name` (whether or not the environment may set
/// it: see [`Def::env`]).
pub(crate) fn by_env(name: &str) -> Option<&'static Def> {
    TABLE
        .iter()
        .find(|d| !d.flag.is_empty() && env_name(d) == name)
}

/// The number of CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1:
/// the default and the upper bound of `-cpu-max`.
pub fn cpus_online() -> usize {
    crate::sys::cpus_online()
}

/// The version line: `ringcast X.Y.Z`.
pub fn version() -> String {
    format!("ringcast {}", env!("CARGO_PKG_VERSION"))
}

/// The usage text printed for `-help`: every flag, its default, its meaning
/// and where else it may be set, in the style of Go's `flag.PrintDefaults`.
pub fn usage() -> String {
    let mut out = String::new();
    out.push_str(&version());
    out.push_str(
        " - serve a live stream to many HTTP clients

Usage:
  ringcast [flags]                              read -path (default /dev/stdin)
  ringcast [flags] -exec [--] COMMAND [ARGS...] read the stdout of COMMAND
  ringcast -config FILE [-check-config]         the streams of a TOML file

Flags are written -name value, -name=value, --name value or --name=value.
Boolean flags take no separate value: -reopen turns it on, -reopen=false off.
Flag parsing stops at the first argument that is not a flag, or after --.
With neither -path nor -exec and a terminal on stdin, a demo tone is served
(as WAV: -frame-bytes 4410 -header-bytes 44 -content-type audio/wav unless set).
Durations are written like 300ms, 1.5s, 1m30s, 2h45m.

Every flag but -help and -version may be set in the environment instead, as
RINGCAST_ and its name upper-cased with - as _ (RINGCAST_FRAME_BYTES=2881,
RINGCAST_REOPEN=false, RINGCAST_EXEC='ffmpeg -i in.mp3 -f mp3 -': shell-quoted
words, never run by a shell). A flag wins over its variable; with -config, a
variable wins over the file. An empty variable is ignored; an unknown RINGCAST_
variable is an error.

Flags shared with streamserve:
",
    );
    let flags = TABLE.iter().filter(|d| !d.flag.is_empty());
    for d in flags.clone().filter(|d| d.streamserve) {
        push_flag_usage(&mut out, d);
    }
    out.push_str("\nringcast flags:\n");
    for d in flags.filter(|d| !d.streamserve) {
        push_flag_usage(&mut out, d);
    }
    out.push_str("  -h, -help\n        print this help and exit\n");
    out
}

fn push_flag_usage(out: &mut String, d: &Def) {
    out.push_str("  -");
    out.push_str(d.flag);
    let word = match d.kind {
        Kind::Bool | Kind::Command => None,
        Kind::Int { .. } => Some("int"),
        Kind::Duration => Some("duration"),
        Kind::Path if d.setting == Setting::Config => Some("path"),
        Kind::Path | Kind::Text | Kind::Address | Kind::Addresses | Kind::User => Some("string"),
        Kind::Urls => Some("url"),
        Kind::Strings | Kind::Tables(_) | Kind::Table(_) | Kind::Headers => None,
    };
    if let Some(word) = word {
        out.push(' ');
        out.push_str(word);
    }
    out.push_str("\n        ");
    out.push_str(d.help);
    let default = match d.setting {
        Setting::CpuMax => Some(format!("{} here: the CPUs online", cpus_online())),
        Setting::Uid => None,
        // A boolean on the command line: the command follows the flags.
        Setting::Exec => Some("false".to_owned()),
        Setting::Config => Some("none: the command line gives the stream".to_owned()),
        Setting::Relay => Some("none".to_owned()),
        _ => match d.kind {
            Kind::Path | Kind::Text | Kind::Addresses => Some(format!("{:?}", d.default)),
            _ => Some(d.default.to_owned()),
        },
    };
    if let Some(default) = default {
        out.push_str(" (default ");
        out.push_str(&default);
        out.push(')');
    }
    out.push_str("\n        ");
    if d.scope == Scope::Stream {
        out.push_str("per stream; ");
    }
    if !d.key.is_empty() {
        out.push_str("file: ");
        out.push_str(d.key);
        out.push_str("; ");
    }
    if d.env {
        out.push_str("environment: ");
        out.push_str(&env_name(d));
    } else {
        out.push_str("command line only");
    }
    out.push('\n');
}
