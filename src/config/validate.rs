//! The one validator: merged raw settings → [`Config`], with one set of
//! defaults, limits and messages whatever front end a value came from.
//!
//! Every problem is collected (the file reports them all at once; the
//! command line shows the first). A problem carries the origin of the value
//! at fault, so the front end can name the flag, the variable or the file's
//! line.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Fault, Given, Layer, Origin, Problem, Value};
use super::table::{cpus_online, def, env_name, Kind, Max, Setting, MAX_RING_BYTES};
use super::values::{check_header_value, parse_address, parse_duration, parse_go_bool};
use super::values::{parse_go_int, parse_level, parse_uid};
use super::{Config, FramerKind, SourceSpec, StreamConfig, RESERVED_PATHS};

/// Which kind of configuration is being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One stream served at every path; with no source given it is the demo
    /// (stdin a terminal) or `/dev/stdin`.
    CommandLine { stdin_is_tty: bool },
    /// The streams of a configuration file: each needs a mount and a source.
    File,
}

/// Validate the server-wide settings and each stream's.
pub(crate) fn validate(
    server: &Layer,
    streams: &[Layer],
    mode: Mode,
) -> Result<Config, Vec<Problem>> {
    let mut c = Check {
        problems: Vec::new(),
        stream: None,
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
    /// The stream being read (file mode), for the problems' places.
    stream: Option<usize>,
}

impl Check {
    fn report(&mut self, s: Setting, origin: &Origin, fault: Fault, message: impl Into<String>) {
        self.problems.push(Problem {
            setting: Some(s),
            stream: self.stream,
            origin: origin.clone(),
            fault,
            message: message.into(),
        });
    }

    /// A problem with the value itself: `invalid value "x": why`.
    fn bad(&mut self, s: Setting, g: &Given, fault: Fault, why: impl std::fmt::Display) {
        let shown = g.value.shown();
        self.report(s, &g.origin, fault, format!("invalid value {shown}: {why}"));
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
        let streams = self.streams(streams, mode);
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
            users: Vec::new(),
            health_mounts: Vec::new(),
            mirrors: Vec::new(),
            channels: super::Channels::off(),
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

    /// Every stream, and their mounts unique (among the streams without
    /// other problems).
    fn streams(&mut self, streams: &[Layer], mode: Mode) -> Vec<StreamConfig> {
        // Each stream that has no problem, with its index.
        let mut out: Vec<(StreamConfig, usize)> = Vec::new();
        for (i, stream) in streams.iter().enumerate() {
            self.stream = (mode == Mode::File).then_some(i);
            let before = self.problems.len();
            let sc = self.stream_config(stream, mode);
            if self.problems.len() != before {
                continue;
            }
            if let Some((_, first)) = out.iter().find(|(o, _)| o.mount == sc.mount) {
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
            out.push((sc, i));
        }
        self.stream = None;
        out.into_iter().map(|(sc, _)| sc).collect()
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
        let path = layer.get(Setting::Path);
        let exec = layer.get(Setting::Exec);
        let demo = layer
            .get(Setting::Demo)
            .filter(|g| g.value != Value::Bool(false));
        let given: Vec<(Setting, &Given)> = [
            (Setting::Path, path),
            (Setting::Exec, exec),
            (Setting::Demo, demo),
        ]
        .into_iter()
        .filter_map(|(s, g)| g.map(|g| (s, g)))
        .collect();
        let choose = "give exactly one source: exec = [...], path = \"...\" or demo = true";
        match given.as_slice() {
            [] => match mode {
                Mode::CommandLine { stdin_is_tty: true } => Some(SourceSpec::Demo),
                Mode::CommandLine { .. } => {
                    Some(SourceSpec::Path(def(Setting::Path).default.into()))
                }
                Mode::File => {
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
            [(Setting::Exec, g)] => self.command(g),
            [(_, g)] => match g.value {
                Value::Bool(true) => Some(SourceSpec::Demo),
                _ => None,
            },
        }
    }

    fn command(&mut self, g: &Given) -> Option<SourceSpec> {
        let s = Setting::Exec;
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
        Some(SourceSpec::Exec {
            program,
            args: words.collect(),
        })
    }

    fn framer(&mut self, layer: &Layer) -> FramerKind {
        let s = Setting::FrameFilter;
        let Some((t, g)) = self.text(layer, s) else {
            return FramerKind::Raw;
        };
        FramerKind::from_name(&t).unwrap_or_else(|| {
            self.bad(
                s,
                &g,
                Fault::Invalid,
                "must be raw (or \"\"), mp3, aac or ogg",
            );
            FramerKind::Raw
        })
    }

    fn stream_config(&mut self, layer: &Layer, mode: Mode) -> StreamConfig {
        let mount = self.mount(layer, mode);
        let source = self.source(layer, mode);
        let demo = source == Some(SourceSpec::Demo);
        let framer = self.framer(layer);

        let (frame_bytes, header_bytes, source_buffer) = self.sizes(layer, demo, framer);
        let content_type = self.content_type(layer, demo, framer);
        let source_bandwidth = self.u64(layer, Setting::SourceBandwidth);
        let client_max_bytes = self.u64(layer, Setting::ClientMaxBytes);
        let close_idle = self.boolean(layer, Setting::CloseIdle);
        let reopen = self.boolean(layer, Setting::Reopen);
        let max_quiet_interval = self.interval(layer, Setting::MaxQuietInterval);
        let max_clients = self.usize(layer, Setting::StreamMaxClients);
        let burst_bytes = self.u64(layer, Setting::BurstBytes);
        let burst_ms = self.u64(layer, Setting::BurstMs);
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
            close_idle: close_idle.unwrap_or(false),
            content_type,
            reopen: reopen.unwrap_or(true),
            max_quiet_interval,
            max_clients: max_clients.unwrap_or(0),
            burst_bytes: burst_bytes.unwrap_or(0),
            burst: burst_ms.filter(|&ms| ms > 0).map(Duration::from_millis),
            ..StreamConfig::defaults()
        }
    }

    /// Frame size, header size and ring size, and the ring within its
    /// limit. Their defaults depend on the source and the framer: the demo
    /// tone's frames and WAV header; room for any legal frame of a framer (a
    /// legal MPEG audio frame is at most 2881 bytes, an ADTS frame 8191, an
    /// Ogg page 65307: streamserve's 64 would drop them all).
    fn sizes(
        &mut self,
        layer: &Layer,
        demo: bool,
        framer: FramerKind,
    ) -> (Option<usize>, Option<usize>, Option<usize>) {
        let frame_bytes = if layer.is_set(Setting::FrameBytes) {
            self.usize(layer, Setting::FrameBytes)
        } else if demo {
            Some(crate::demo::FRAME_BYTES)
        } else if let Some(largest) = crate::framing::largest_frame(framer) {
            Some(largest)
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
