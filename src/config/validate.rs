//! The one validator: merged raw settings → [`Config`], with one set of
//! defaults, limits and messages whatever front end a value came from.
//!
//! Every problem is collected (the file reports them all at once; the
//! command line shows the first). A problem carries the origin of the value
//! at fault, so the front end can name the flag, the variable or the file's
//! line. The tables of the file (users, destinations, mirrors, channels,
//! headers) and the checks across streams (fallbacks) are in
//! `validate/tables.rs`.

mod tables;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Fault, Given, Layer, Origin, Place, Problem, Value};
use super::table::MAX_RING_BYTES;
use super::table::{cpus_online, def, env_name, is_secret, is_url, Kind, Max, Setting};
use super::values::{check_header_value, parse_address, parse_duration, parse_go_bool};
use super::values::{parse_go_int, parse_http_url, parse_level, parse_uid, redact_url};
use super::RESERVED_PATHS;
use super::{Config, FramerKind, Secret, SourceSpec, StreamConfig, StreamInfo, Upstream};

/// Which kind of configuration is being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One stream served at every path; with no source given it is the demo
    /// (stdin a terminal) or `/dev/stdin`.
    CommandLine { stdin_is_tty: bool },
    /// The streams of a configuration file: each needs a mount and a source.
    File,
    /// The streams a `[[mirror]]` creates: relays, mount and upstream filled
    /// in by the runtime.
    Mirror,
    /// The stream of each WebSocket channel: pushed by its publisher.
    Channel,
}

/// Validate the server-wide settings and each stream's.
pub(crate) fn validate(
    server: &Layer,
    streams: &[Layer],
    mode: Mode,
) -> Result<Config, Vec<Problem>> {
    let mut c = Check {
        problems: Vec::new(),
        place: Place::Top,
    };
    let config = c.server(server, streams, mode);
    if c.problems.is_empty() {
        Ok(config)
    } else {
        Err(c.problems)
    }
}

/// How a setting is named where `origin` is: `-exec`, `RINGCAST_EXEC`,
/// `exec`.
fn name_in(s: Setting, origin: &Origin) -> String {
    let d = def(s);
    match origin {
        Origin::Env(_) if d.env => env_name(d),
        Origin::File { .. } => d.key.to_owned(),
        _ if d.flag.is_empty() => d.key.to_owned(),
        _ => format!("-{}", d.flag),
    }
}

/// Collects problems while values are read.
struct Check {
    problems: Vec<Problem>,
    /// The table being read (file mode), for the problems' places.
    place: Place,
}

impl Check {
    fn report(&mut self, s: Setting, origin: &Origin, fault: Fault, message: impl Into<String>) {
        self.problems.push(Problem {
            setting: Some(s),
            place: self.place,
            origin: origin.clone(),
            fault,
            message: message.into(),
        });
    }

    /// A problem with the value itself: `invalid value "x": why` (a secret
    /// is never quoted, a URL without its password).
    fn bad(&mut self, s: Setting, g: &Given, fault: Fault, why: impl std::fmt::Display) {
        let shown = if is_secret(s) {
            "<secret>".to_owned()
        } else if is_url(s) {
            let redacted = |t: &OsString| redact_url(&t.to_string_lossy());
            match &g.value {
                Value::Text(t) => format!("{:?}", redacted(t)),
                Value::List(v) => format!("{:?}", v.iter().map(redacted).collect::<Vec<_>>()),
                other => other.shown(),
            }
        } else {
            g.value.shown()
        };
        self.report(s, &g.origin, fault, format!("invalid value {shown}: {why}"));
    }

    /// A given value that must be text: the text (`None`: not given, or
    /// reported).
    fn given_text(&mut self, layer: &Layer, s: Setting) -> Option<(String, Given)> {
        let g = layer.get(s)?.clone();
        self.text_of(s, &g).map(|t| (t, g))
    }

    /// A header value (stream info, CORS origin): checked as
    /// `content_type` is.
    fn header_text(&mut self, layer: &Layer, s: Setting) -> Option<String> {
        let (t, g) = self.given_text(layer, s)?;
        match check_header_value(&t) {
            Ok(()) => Some(t),
            Err(why) => {
                self.bad(s, &g, Fault::Invalid, why);
                None
            }
        }
    }

    /// A list of strings (`roles`, `mounts`, `keys`, `health_mounts`).
    fn strings_of(&mut self, s: Setting, g: &Given) -> Option<Vec<String>> {
        let Value::List(items) = &g.value else {
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let one = Given {
                value: Value::Text(item.clone()),
                origin: g.origin.clone(),
            };
            out.push(self.utf8(s, &one, item)?.to_owned());
        }
        Some(out)
    }

    /// A duration that must be more than 0.
    fn positive(&mut self, layer: &Layer, s: Setting) -> Option<Duration> {
        let d = self.duration(layer, s)?;
        if d.is_zero() {
            let g = self.value(layer, s)?;
            self.bad(s, &g, Fault::Range, "must be more than 0");
            return None;
        }
        Some(d)
    }

    /// The value given, or the table's default; `None` when there is
    /// neither.
    fn value(&self, layer: &Layer, s: Setting) -> Option<Given> {
        if let Some(g) = layer.get(s) {
            return Some(g.clone());
        }
        let d = def(s).default;
        (!d.is_empty()).then(|| Given {
            value: Value::Text(d.into()),
            origin: Origin::Default,
        })
    }

    fn utf8<'a>(&mut self, s: Setting, g: &Given, t: &'a OsStr) -> Option<&'a str> {
        let text = t.to_str();
        if text.is_none() {
            self.bad(s, g, Fault::Syntax, "not valid UTF-8");
        }
        text
    }

    /// Text (a TOML string, a flag's or a variable's value).
    fn text_of(&mut self, s: Setting, g: &Given) -> Option<String> {
        match &g.value {
            Value::Text(t) => self.utf8(s, g, t).map(str::to_owned),
            Value::Broken => None,
            _ => {
                self.bad(s, g, Fault::Syntax, "must be text");
                None
            }
        }
    }

    fn text(&mut self, layer: &Layer, s: Setting) -> Option<(String, Given)> {
        let g = self.value(layer, s)?;
        self.text_of(s, &g).map(|t| (t, g))
    }

    fn int_of(&mut self, s: Setting, g: &Given) -> Option<i64> {
        let Kind::Int { min, max, below } = def(s).kind else {
            return None;
        };
        let n: i128 = match &g.value {
            Value::Int(n) => i128::from(*n),
            Value::Text(t) => {
                let t = self.utf8(s, g, t)?;
                match parse_go_int(t) {
                    Ok(n) => n,
                    Err(why) => {
                        let fault = if why.contains("range") {
                            Fault::Range
                        } else {
                            Fault::Syntax
                        };
                        self.bad(s, g, fault, why);
                        return None;
                    }
                }
            }
            Value::Broken => return None,
            _ => {
                self.bad(s, g, Fault::Syntax, "not an integer");
                return None;
            }
        };
        let max = match max {
            Max::Value(m) => m,
            Max::CpusOnline => {
                let online = cpus_online();
                if n < 1 || n > online as i128 {
                    let why = format!("must be between 1 and {online}, the number of CPUs online");
                    self.bad(s, g, Fault::Range, why);
                    return None;
                }
                online as i64
            }
        };
        let why = if n < i128::from(min) {
            if !below.is_empty() {
                below.to_owned()
            } else if min == 0 {
                "must not be negative".to_owned()
            } else {
                format!("must be at least {min}")
            }
        } else if n > i128::from(max) {
            format!("must be at most {max}")
        } else {
            return i64::try_from(n).ok();
        };
        self.bad(s, g, Fault::Range, why);
        None
    }

    fn int(&mut self, layer: &Layer, s: Setting) -> Option<i64> {
        let g = self.value(layer, s)?;
        self.int_of(s, &g)
    }

    fn usize(&mut self, layer: &Layer, s: Setting) -> Option<usize> {
        // Limits are at most i64::MAX: a usize on 64-bit machines.
        self.int(layer, s)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn u64(&mut self, layer: &Layer, s: Setting) -> Option<u64> {
        self.int(layer, s).map(|n| u64::try_from(n).unwrap_or(0))
    }

    fn boolean(&mut self, layer: &Layer, s: Setting) -> Option<bool> {
        let g = self.value(layer, s)?;
        match &g.value {
            Value::Bool(b) => Some(*b),
            Value::Text(t) => {
                let b = parse_go_bool(t.as_encoded_bytes());
                if b.is_none() {
                    self.bad(
                        s,
                        &g,
                        Fault::Syntax,
                        "not a boolean (true/false, t/f or 1/0)",
                    );
                }
                b
            }
            Value::Broken => None,
            _ => {
                self.bad(s, &g, Fault::Syntax, "not a boolean");
                None
            }
        }
    }

    fn duration(&mut self, layer: &Layer, s: Setting) -> Option<Duration> {
        let (t, g) = self.text(layer, s)?;
        match parse_duration(&t) {
            Ok(d) => Some(d),
            Err(why) => {
                self.bad(s, &g, Fault::Syntax, why);
                None
            }
        }
    }

    /// `auto` (adaptive gathering: `None`) or a fixed duration.
    fn flush(&mut self, layer: &Layer) -> Option<Duration> {
        let s = Setting::FlushInterval;
        match self.text(layer, s) {
            None => None,
            Some((t, _)) if t.eq_ignore_ascii_case("auto") => None,
            Some(_) => self.duration(layer, s),
        }
    }

    /// A duration where zero means "off".
    fn interval(&mut self, layer: &Layer, s: Setting) -> Option<Duration> {
        self.duration(layer, s).filter(|d| !d.is_zero())
    }

    fn address_of(&mut self, s: Setting, g: &Given, t: &OsStr) -> Option<std::net::SocketAddr> {
        let shown = Given {
            value: Value::Text(t.to_owned()),
            origin: g.origin.clone(),
        };
        let t = self.utf8(s, &shown, t)?;
        match parse_address(t) {
            Ok(a) => Some(a),
            Err(why) => {
                self.bad(s, &shown, Fault::Syntax, why);
                None
            }
        }
    }

    /// The listen addresses: one from a flag or variable, one or more from
    /// the file.
    fn listen(&mut self, layer: &Layer) -> Vec<std::net::SocketAddr> {
        let s = Setting::Address;
        let Some(g) = self.value(layer, s) else {
            return Vec::new();
        };
        match &g.value {
            Value::Text(t) => self.address_of(s, &g, t).into_iter().collect(),
            Value::List(items) if items.is_empty() => {
                self.report(s, &g.origin, Fault::Missing, "needs at least one address");
                Vec::new()
            }
            Value::List(items) => items
                .iter()
                .filter_map(|t| self.address_of(s, &g, t))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn server(&mut self, layer: &Layer, streams: &[Layer], mode: Mode) -> Config {
        let listen = self.listen(layer);
        let admin_listen = match layer.get(Setting::AdminListen) {
            Some(
                g @ Given {
                    value: Value::Text(t),
                    ..
                },
            ) => self.address_of(Setting::AdminListen, g, t),
            _ => None,
        };
        let cpu_max = match layer.get(Setting::CpuMax) {
            Some(g) => self.int_of(Setting::CpuMax, g).map(|n| n as usize),
            None => None,
        }
        .unwrap_or_else(cpus_online);
        let stat_log_interval = self.interval(layer, Setting::StatLogInterval);
        let uid = self.uid(layer);
        let flush_interval = self.flush(layer);
        let listen_backlog = self.int(layer, Setting::ListenBacklog).unwrap_or(4096) as u32;
        let max_clients = self.usize(layer, Setting::MaxClients).unwrap_or(0);
        let log_level = self.log_level(layer);
        let (streams, mounts) = self.streams(streams, mode);
        let users = self.users(layer, &mounts);
        let health_mounts = self.health_mounts(layer, &mounts);
        let mirrors = self.mirrors(layer);
        let channels = self.channels(layer);
        Config {
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
            users,
            health_mounts,
            mirrors,
            channels,
        }
    }

    fn log_level(&mut self, layer: &Layer) -> log::LevelFilter {
        let Some((t, g)) = self.text(layer, Setting::LogLevel) else {
            return log::LevelFilter::Info;
        };
        parse_level(&t).unwrap_or_else(|| {
            let why = "must be error, warn, info, debug or trace";
            self.bad(Setting::LogLevel, &g, Fault::Invalid, why);
            log::LevelFilter::Info
        })
    }

    /// Every stream, their mounts unique (among the streams without other
    /// problems) and their fallbacks sound; and the mounts of all streams
    /// (those with problems too, so that naming one is not a second
    /// problem).
    fn streams(&mut self, streams: &[Layer], mode: Mode) -> (Vec<StreamConfig>, Vec<String>) {
        // Each stream, and whether it has no problem.
        let mut all: Vec<(StreamConfig, bool)> = Vec::new();
        for (i, stream) in streams.iter().enumerate() {
            self.place = if mode == Mode::File {
                Place::Stream(i)
            } else {
                Place::Top
            };
            let before = self.problems.len();
            let sc = self.stream_config(stream, mode);
            let ok = self.problems.len() == before;
            if ok {
                let first = all
                    .iter()
                    .position(|(o, o_ok)| *o_ok && o.mount == sc.mount);
                if let Some(first) = first {
                    let origin = stream
                        .get(Setting::Mount)
                        .map_or(Origin::Default, |g| g.origin.clone());
                    let mount = sc.mount.clone().unwrap_or_default();
                    let why = format!(
                        "two streams share the mount {mount:?} (this one and stream #{})",
                        first + 1
                    );
                    self.report(Setting::Mount, &origin, Fault::Conflict, why);
                }
            }
            all.push((sc, ok));
        }
        self.fallbacks(streams, &all);
        self.place = Place::Top;
        let mounts = all.iter().filter_map(|(sc, _)| sc.mount.clone()).collect();
        let streams = all
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(sc, _)| sc)
            .collect();
        (streams, mounts)
    }

    fn uid(&mut self, layer: &Layer) -> Option<u32> {
        let s = Setting::Uid;
        let g = layer.get(s)?;
        let parsed = match &g.value {
            Value::Int(n) => parse_uid(&n.to_string()),
            Value::Text(t) => parse_uid(self.utf8(s, g, t)?),
            _ => return None,
        };
        parsed
            .map_err(|why| self.bad(s, g, Fault::Invalid, why))
            .ok()
    }

    fn mount(&mut self, layer: &Layer, mode: Mode) -> Option<String> {
        if mode != Mode::File {
            return None;
        }
        let s = Setting::Mount;
        let Some(g) = layer.get(s) else {
            let why = "missing (the path the stream is served at, e.g. \"/radio.mp3\")";
            self.report(s, &Origin::Default, Fault::Missing, why);
            return None;
        };
        let m = self.text_of(s, g)?;
        let why = if !m.starts_with('/') {
            "must start with '/'"
        } else if RESERVED_PATHS.contains(&m.as_str()) {
            "is reserved for ringcast's status"
        } else if m.contains(['?', '#', ' ']) {
            "must be a plain path"
        } else {
            return Some(m);
        };
        self.bad(s, g, Fault::Invalid, why);
        None
    }

    fn source(&mut self, layer: &Layer, mode: Mode) -> Option<SourceSpec> {
        match mode {
            Mode::Mirror => return Some(SourceSpec::Relay(Vec::new())),
            Mode::Channel => return Some(SourceSpec::Push),
            Mode::CommandLine { .. } | Mode::File => {}
        }
        // A `false` boolean source is no source.
        let on = |s| layer.get(s).filter(|g| g.value != Value::Bool(false));
        let given: Vec<(Setting, &Given)> = [
            (Setting::Path, layer.get(Setting::Path)),
            (Setting::Exec, layer.get(Setting::Exec)),
            (Setting::Demo, on(Setting::Demo)),
            (Setting::Push, on(Setting::Push)),
            (Setting::Relay, layer.get(Setting::Relay)),
        ]
        .into_iter()
        .filter_map(|(s, g)| g.map(|g| (s, g)))
        .collect();
        let choose = "give exactly one source: exec = [...], path = \"...\", demo = true, \
                      push = true or relay = \"http://...\"";
        match given.as_slice() {
            [] => match mode {
                Mode::CommandLine { stdin_is_tty: true } => Some(SourceSpec::Demo),
                Mode::CommandLine { .. } => {
                    Some(SourceSpec::Path(def(Setting::Path).default.into()))
                }
                _ => {
                    self.report(
                        Setting::Path,
                        &Origin::Default,
                        Fault::Missing,
                        format!("no source: {choose}"),
                    );
                    None
                }
            },
            [(s, g), (other, og), ..] => {
                let hint = if mode == Mode::File {
                    choose
                } else {
                    "choose one source"
                };
                let other = name_in(*other, &og.origin);
                let why = format!("cannot be used together with {other} ({hint})");
                self.report(*s, &g.origin, Fault::Conflict, why);
                None
            }
            [(Setting::Path, g)] => match &g.value {
                Value::Text(p) if p.is_empty() => {
                    self.bad(Setting::Path, g, Fault::Invalid, "must not be empty");
                    None
                }
                Value::Text(p) => Some(SourceSpec::Path(PathBuf::from(p))),
                _ => None,
            },
            [(Setting::Exec, g)] => self
                .command(Setting::Exec, g)
                .map(|(program, args)| SourceSpec::Exec { program, args }),
            [(Setting::Relay, g)] => self.relay(g),
            [(Setting::Push, g)] => (g.value == Value::Bool(true)).then_some(SourceSpec::Push),
            [(_, g)] => (g.value == Value::Bool(true)).then_some(SourceSpec::Demo),
        }
    }

    /// The upstreams of a relay, in priority order: `http://` URLs whose
    /// `user:password@` becomes the upstream's credentials.
    fn relay(&mut self, g: &Given) -> Option<SourceSpec> {
        let s = Setting::Relay;
        let urls: &[OsString] = match &g.value {
            Value::Text(t) => std::slice::from_ref(t),
            Value::List(v) => v,
            _ => return None,
        };
        if urls.is_empty() {
            let why = "needs at least one upstream URL: relay = [\"http://host:port/mount\"]";
            self.report(s, &g.origin, Fault::Missing, why);
            return None;
        }
        let mut upstreams = Vec::with_capacity(urls.len());
        let mut ok = true;
        for url in urls {
            let one = Given {
                value: Value::Text(url.clone()),
                origin: g.origin.clone(),
            };
            let Some(text) = self.utf8(s, &one, url) else {
                ok = false;
                continue;
            };
            match parse_http_url(text) {
                Ok(u) if u.path.is_empty() => {
                    let why = "needs the upstream's path (http://host[:port]/mount)";
                    self.bad(s, &one, Fault::Invalid, why);
                    ok = false;
                }
                Ok(u) => upstreams.push(Upstream {
                    url: u.without_credentials(),
                    user: u.user,
                    password: u.password.map(Secret::Plain),
                }),
                Err(why) => {
                    self.bad(s, &one, Fault::Invalid, why);
                    ok = false;
                }
            }
        }
        ok.then_some(SourceSpec::Relay(upstreams))
    }

    /// A command (`exec`, `title_command`): the program and its arguments.
    fn command(&mut self, s: Setting, g: &Given) -> Option<(String, Vec<String>)> {
        let Value::List(items) = &g.value else {
            return None;
        };
        let mut words = Vec::with_capacity(items.len());
        for w in items {
            match w.to_str() {
                Some(w) => words.push(w.to_owned()),
                None => {
                    let shown = Given {
                        value: Value::Text(w.clone()),
                        origin: g.origin.clone(),
                    };
                    self.bad(
                        s,
                        &shown,
                        Fault::Syntax,
                        "command arguments must be valid UTF-8",
                    );
                    return None;
                }
            }
        }
        let mut words = words.into_iter();
        let Some(program) = words.next() else {
            let how = match &g.origin {
                Origin::Env(v) => format!(": {v}='PROGRAM ARG ...'"),
                Origin::File { .. } => ": [\"program\", \"arg\", ...] (no shell)".to_owned(),
                _ => " after the flags: -exec [--] COMMAND [ARGS...]".to_owned(),
            };
            self.report(
                s,
                &g.origin,
                Fault::Missing,
                format!("needs a command{how}"),
            );
            return None;
        };
        if program.is_empty() {
            self.report(s, &g.origin, Fault::Invalid, "the command name is empty");
            return None;
        }
        Some((program, words.collect()))
    }

    /// The framer given, else `default`.
    fn framer(&mut self, layer: &Layer, mode: Mode, default: FramerKind) -> FramerKind {
        let s = Setting::FrameFilter;
        if !layer.is_set(s) {
            return default;
        }
        let Some((t, g)) = self.text(layer, s) else {
            return default;
        };
        FramerKind::from_name(&t).unwrap_or_else(|| {
            let why = if mode == Mode::Mirror && t.eq_ignore_ascii_case("auto") {
                "\"auto\" (from the upstream's Content-Type) is not supported yet: \
                 give raw, mp3, aac or ogg (default mp3)"
            } else {
                "must be raw (or \"\"), mp3, aac or ogg"
            };
            self.bad(s, &g, Fault::Invalid, why);
            default
        })
    }

    /// A boolean that may only be true when `allowed`; `why` says when.
    fn only_if(&mut self, layer: &Layer, s: Setting, allowed: bool, why: &str) -> bool {
        let on = self.boolean(layer, s).unwrap_or(false);
        if on && !allowed {
            if let Some(g) = layer.get(s) {
                self.report(s, &g.origin, Fault::Conflict, why);
            }
        }
        on
    }

    fn stream_config(&mut self, layer: &Layer, mode: Mode) -> StreamConfig {
        let mount = self.mount(layer, mode);
        let source = self.source(layer, mode);
        let demo = source == Some(SourceSpec::Demo);
        let path = matches!(source, Some(SourceSpec::Path(_)));
        let push = source == Some(SourceSpec::Push);
        let relay = matches!(source, Some(SourceSpec::Relay(_)));
        // Pushed and relayed streams (and channels) come from the network in
        // packets, in a format of the world's: mp3 unless said otherwise,
        // and raw frames of a network packet's size.
        let networked = push || relay;
        let default_framer = match mode {
            Mode::Channel => FramerKind::Raw,
            _ if networked => FramerKind::Mp3,
            _ => FramerKind::Raw,
        };
        let framer = self.framer(layer, mode, default_framer);
        let raw_frame = networked.then_some(NETWORK_RAW_FRAME_BYTES);

        let (frame_bytes, header_bytes, source_buffer) = self.sizes(layer, demo, framer, raw_frame);
        let content_type = self.content_type(layer, demo, framer);
        let source_bandwidth = self.u64(layer, Setting::SourceBandwidth);
        let client_max_bytes = self.u64(layer, Setting::ClientMaxBytes);
        let close_idle = self.close_idle(layer, push, relay);
        let reopen = self.boolean(layer, Setting::Reopen);
        let max_quiet_interval = self.interval(layer, Setting::MaxQuietInterval);
        let max_clients = self.usize(layer, Setting::StreamMaxClients);
        let burst_bytes = self.u64(layer, Setting::BurstBytes);
        let burst_ms = self.u64(layer, Setting::BurstMs);

        let known = source.is_some();
        let only_path = "only for a path source (path = \"...\")";
        let realtime = self.only_if(layer, Setting::Realtime, path || !known, only_path);
        let loop_file = self.only_if(layer, Setting::Loop, path || !known, only_path);
        if loop_file && reopen == Some(false) {
            if let Some(g) = layer.get(Setting::Reopen) {
                let why = "cannot be false with loop = true (a looped file is reopened at its end)";
                self.report(Setting::Reopen, &g.origin, Fault::Conflict, why);
            }
        }
        let on_demand = self.only_if(
            layer,
            Setting::OnDemand,
            relay || !known,
            "only for a relay source (relay = \"http://...\")",
        );
        let on_demand_idle = self.duration(layer, Setting::OnDemandIdle);
        let fallback = self.fallback(layer);
        let fallback_override = self.boolean(layer, Setting::FallbackOverride);
        let fallback_after = self.positive(layer, Setting::FallbackAfter);
        let source_timeout = self.positive(layer, Setting::SourceTimeout);
        let destinations = self.destinations(layer);
        let info = self.info(layer);
        let icy_metaint = self.usize(layer, Setting::IcyMetaint);
        let (title_file, title_command) = self.titles(layer, networked);
        let cors_origin = self.cors_origin(layer);
        let extra_headers = self.headers(layer);
        let defaults = StreamConfig::defaults();
        // What is None here was reported (the result is then not used).
        StreamConfig {
            mount,
            source: source.unwrap_or(SourceSpec::Demo),
            framer,
            frame_bytes: frame_bytes.unwrap_or(1),
            header_bytes: header_bytes.unwrap_or(0),
            source_buffer: source_buffer.unwrap_or(3),
            source_bandwidth: source_bandwidth.unwrap_or(0),
            client_max_bytes: client_max_bytes.unwrap_or(0),
            close_idle,
            content_type,
            // A pushed stream waits for its next encoder and a relay always
            // reconnects: `reopen` has no meaning there. A looped file is
            // reopened at its end.
            reopen: networked || loop_file || reopen.unwrap_or(true),
            max_quiet_interval,
            max_clients: max_clients.unwrap_or(0),
            burst_bytes: burst_bytes.unwrap_or(0),
            burst: burst_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
            realtime,
            loop_file,
            fallback,
            fallback_override: fallback_override.unwrap_or(true),
            fallback_after: fallback_after.unwrap_or(defaults.fallback_after),
            source_timeout: source_timeout.unwrap_or(defaults.source_timeout),
            on_demand,
            on_demand_idle: on_demand_idle.unwrap_or(defaults.on_demand_idle),
            destinations,
            info,
            icy_metaint: icy_metaint.unwrap_or(defaults.icy_metaint),
            title_file,
            title_command,
            cors_origin,
            extra_headers,
        }
    }

    /// `close_idle`: not for a pushed stream (the encoder decides when it
    /// ends), and a relay's is `on_demand`.
    fn close_idle(&mut self, layer: &Layer, push: bool, relay: bool) -> bool {
        let s = Setting::CloseIdle;
        let on = self.boolean(layer, s).unwrap_or(false);
        let why = if push {
            "cannot be used with a pushed stream (push = true): its encoder decides when it ends"
        } else if relay {
            "cannot be used with a relay: on_demand = true connects only while there are listeners"
        } else {
            return on;
        };
        if on {
            if let Some(g) = layer.get(s) {
                let why = match &g.origin {
                    Origin::File { .. } => why.to_owned(),
                    _ => format!("{why} (on_demand is a setting of the configuration file)"),
                };
                self.report(s, &g.origin, Fault::Conflict, why);
            }
        }
        false
    }

    /// What listeners are told about the stream.
    fn info(&mut self, layer: &Layer) -> StreamInfo {
        StreamInfo {
            name: self.header_text(layer, Setting::InfoName),
            description: self.header_text(layer, Setting::InfoDescription),
            genre: self.header_text(layer, Setting::InfoGenre),
            url: self.header_text(layer, Setting::InfoUrl),
            bitrate: match layer.get(Setting::InfoBitrate) {
                Some(g) => self
                    .int_of(Setting::InfoBitrate, g)
                    .and_then(|n| u32::try_from(n).ok()),
                None => None,
            },
            public: match layer.get(Setting::InfoPublic) {
                Some(_) => self.boolean(layer, Setting::InfoPublic),
                None => None,
            },
        }
    }

    /// `title_file` or `title_command` (at most one; not for pushed or
    /// relayed streams, whose titles come with them).
    fn titles(&mut self, layer: &Layer, networked: bool) -> (Option<PathBuf>, Option<Vec<String>>) {
        let file = layer.get(Setting::TitleFile).cloned();
        let command = layer.get(Setting::TitleCommand).cloned();
        if let (Some(_), Some(c)) = (&file, &command) {
            let why = "cannot be used together with title_file (choose one)";
            self.report(Setting::TitleCommand, &c.origin, Fault::Conflict, why);
        }
        for (s, g) in [
            (Setting::TitleFile, &file),
            (Setting::TitleCommand, &command),
        ] {
            if let (true, Some(g)) = (networked, g) {
                let why = "only for exec, path and demo sources (a pushed or relayed stream \
                           brings its titles with it)";
                self.report(s, &g.origin, Fault::Conflict, why);
            }
        }
        let title_file = file.and_then(|g| match &g.value {
            Value::Text(p) if p.is_empty() => {
                self.bad(Setting::TitleFile, &g, Fault::Invalid, "must not be empty");
                None
            }
            Value::Text(p) => Some(PathBuf::from(p)),
            _ => None,
        });
        let title_command = command
            .and_then(|g| self.command(Setting::TitleCommand, &g))
            .map(|(program, args)| std::iter::once(program).chain(args).collect());
        (title_file, title_command)
    }

    /// `cors_origin`: `""` means no CORS headers.
    fn cors_origin(&mut self, layer: &Layer) -> Option<String> {
        let (t, g) = self.text(layer, Setting::CorsOrigin)?;
        if t.is_empty() {
            return None;
        }
        match check_header_value(&t) {
            Ok(()) => Some(t),
            Err(why) => {
                self.bad(Setting::CorsOrigin, &g, Fault::Invalid, why);
                None
            }
        }
    }

    /// Frame size, header size and ring size, and the ring within its
    /// limit. Their defaults depend on the source and the framer: the demo
    /// tone's frames and WAV header; room for any legal frame of a framer (a
    /// legal MPEG audio frame is at most 2881 bytes, an ADTS frame 8191, an
    /// Ogg page 65307: streamserve's 64 would drop them all); `raw_frame`
    /// for raw frames from the network.
    fn sizes(
        &mut self,
        layer: &Layer,
        demo: bool,
        framer: FramerKind,
        raw_frame: Option<usize>,
    ) -> (Option<usize>, Option<usize>, Option<usize>) {
        let frame_bytes = if layer.is_set(Setting::FrameBytes) {
            self.usize(layer, Setting::FrameBytes)
        } else if demo {
            Some(crate::demo::FRAME_BYTES)
        } else if let Some(largest) = crate::framing::largest_frame(framer) {
            Some(largest)
        } else if let Some(raw) = raw_frame {
            Some(raw)
        } else {
            self.usize(layer, Setting::FrameBytes)
        };
        let header_bytes = if demo && !layer.is_set(Setting::HeaderBytes) {
            Some(crate::demo::HEADER_BYTES)
        } else {
            self.usize(layer, Setting::HeaderBytes)
        };
        let source_buffer = self.usize(layer, Setting::SourceBuffer);
        if let (Some(fb), Some(sb)) = (frame_bytes, source_buffer) {
            if (fb as u64).saturating_mul(sb as u64) > MAX_RING_BYTES {
                let origin = layer
                    .get(Setting::SourceBuffer)
                    .map_or(Origin::Default, |g| g.origin.clone());
                let why = format!(
                    "the ring of {sb} frames of {fb} bytes would be larger than {} GiB",
                    MAX_RING_BYTES >> 30
                );
                self.report(Setting::SourceBuffer, &origin, Fault::Range, why);
            }
        }
        (frame_bytes, header_bytes, source_buffer)
    }

    /// The content type given, else the demo's or the framer's.
    fn content_type(&mut self, layer: &Layer, demo: bool, framer: FramerKind) -> String {
        let s = Setting::ContentType;
        let Some(g) = layer.get(s) else {
            return match framer {
                _ if demo => crate::demo::CONTENT_TYPE,
                FramerKind::Mp3 => "audio/mpeg",
                FramerKind::Aac => "audio/aac",
                FramerKind::Ogg => "audio/ogg",
                FramerKind::Raw => def(s).default,
            }
            .to_owned();
        };
        let ct = self.text_of(s, g);
        if let Some(Err(why)) = ct.as_deref().map(check_header_value) {
            self.bad(s, g, Fault::Invalid, why);
        }
        ct.unwrap_or_default()
    }
}

/// Raw frames of pushed and relayed streams and of channels, unless
/// `frame_bytes` is given: a network read's worth (64-byte frames, the
/// command line's default, would mean 64-byte sends).
pub(crate) const NETWORK_RAW_FRAME_BYTES: usize = 4096;
