//! Raw settings: what a front end (command line, environment, file) found,
//! each value with where it came from, before anything is checked; the
//! precedence rules that merge them; and the problems the validator reports.

use std::ffi::OsString;

use super::table::{def, Scope, Setting, TABLE};

/// Where a value came from; errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The table's default (or one derived from other settings).
    Default,
    /// A flag, by name without dashes (`frame-bytes`).
    Flag(&'static str),
    /// An environment variable (`RINGCAST_FRAME_BYTES`, `RUST_LOG`).
    Env(String),
    /// The configuration file: the key, the table it is in and its line
    /// (1-based) when it was found (else the renderer looks it up).
    File {
        key: String,
        place: Place,
        line: Option<usize>,
    },
}

/// A table of the configuration file (all indexes 0-based, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Place {
    /// The top level (and the command line, which has no tables).
    Top,
    /// The n-th `[[stream]]`.
    Stream(usize),
    /// A `[[stream.destination]]`: (stream, destination).
    Destination(usize, usize),
    /// The `[stream.headers]` of a stream.
    Headers(usize),
    /// The n-th `[[user]]`.
    User(usize),
    /// The n-th `[[mirror]]`.
    Mirror(usize),
    /// `[channels]`.
    Channels,
}

impl Place {
    /// The table this one is written in and its key there (an inline table,
    /// `headers = { ... }`, is on that key's line).
    pub(crate) fn parent(self) -> Option<(Place, &'static str)> {
        match self {
            Place::Top | Place::Stream(_) => None,
            Place::Destination(i, _) => Some((Place::Stream(i), "destination")),
            Place::Headers(i) => Some((Place::Stream(i), "headers")),
            Place::User(_) => Some((Place::Top, "user")),
            Place::Mirror(_) => Some((Place::Top, "mirror")),
            Place::Channels => Some((Place::Top, "channels")),
        }
    }

    /// How a problem names a key of this table: `stream #2 frame_bytes`,
    /// `stream #1 destination #2 url`, `stream #1 headers.Server`,
    /// `user #3 roles`, `mirror #1 origin`, `channels keys`.
    pub(crate) fn label(self, key: &str) -> String {
        let with = |prefix: String| {
            if key.is_empty() {
                prefix
            } else {
                format!("{prefix} {key}")
            }
        };
        match self {
            Place::Top => key.to_owned(),
            Place::Stream(i) => with(format!("stream #{}", i + 1)),
            Place::Destination(i, j) => with(format!("stream #{} destination #{}", i + 1, j + 1)),
            Place::Headers(i) => format!("stream #{} headers.{key}", i + 1),
            Place::User(i) => with(format!("user #{}", i + 1)),
            Place::Mirror(i) => with(format!("mirror #{}", i + 1)),
            Place::Channels => with("channels".to_owned()),
        }
    }
}

/// A raw value. The command line and the environment give text (and
/// booleans, and word lists for the command); the file gives TOML's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    /// A TOML integer.
    Int(i64),
    Text(OsString),
    /// Command words, listen addresses, URLs or names from the file.
    List(Vec<OsString>),
    /// Tables of the file (`[[user]]`, `[[stream.destination]]`,
    /// `[[mirror]]`; `[channels]` is a list of one), each read into its own
    /// layer.
    Tables(Vec<Layer>),
    /// A table of free names (`[stream.headers]`): each name with its value
    /// and where it is.
    Pairs(Vec<(String, Given)>),
    /// Given, but unusable, and already reported by the front end (a TOML
    /// value of the wrong type): the validator neither uses it nor reports
    /// the setting as missing.
    Broken,
}

impl Value {
    /// The value as an error message quotes it.
    pub(crate) fn shown(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Text(t) => format!("{:?}", t.to_string_lossy()),
            Value::List(v) => format!(
                "{:?}",
                v.iter().map(|w| w.to_string_lossy()).collect::<Vec<_>>()
            ),
            Value::Tables(_) | Value::Pairs(_) => "(a table)".to_owned(),
            Value::Broken => String::new(),
        }
    }
}

/// A value and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Given {
    pub value: Value,
    pub origin: Origin,
}

/// One front end's settings (or a merge of several), by [`Setting`]:
/// the raw settings of the server and of one stream, side by side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    values: Vec<Option<Given>>,
}

impl Default for Layer {
    fn default() -> Layer {
        Layer {
            values: vec![None; TABLE.len()],
        }
    }
}

/// Settings that are one choice spelled five ways: a layer that gives any
/// of them gives the source, and hides the others of lower layers.
pub(crate) const SOURCE: [Setting; 5] = [
    Setting::Path,
    Setting::Exec,
    Setting::Demo,
    Setting::Push,
    Setting::Relay,
];

impl Layer {
    pub(crate) fn get(&self, s: Setting) -> Option<&Given> {
        self.values.get(s as usize).and_then(Option::as_ref)
    }

    pub(crate) fn is_set(&self, s: Setting) -> bool {
        self.get(s).is_some()
    }

    pub(crate) fn set(&mut self, s: Setting, value: Value, origin: Origin) {
        if let Some(slot) = self.values.get_mut(s as usize) {
            *slot = Some(Given { value, origin });
        }
    }

    pub(crate) fn clear(&mut self, s: Setting) {
        if let Some(slot) = self.values.get_mut(s as usize) {
            *slot = None;
        }
    }

    /// The settings given, in table order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Setting, &Given)> {
        TABLE
            .iter()
            .zip(&self.values)
            .filter_map(|(d, v)| v.as_ref().map(|g| (d.setting, g)))
    }

    /// Only the settings of `scope`.
    pub(crate) fn only(&self, scope: Scope) -> Layer {
        let mut out = Layer::default();
        for (s, g) in self.iter().filter(|(s, _)| def(*s).scope == scope) {
            out.set(s, g.value.clone(), g.origin.clone());
        }
        out
    }

    /// Merge by precedence, highest first: each setting comes from the first
    /// layer that has it; the source ([`SOURCE`]) comes whole from the first
    /// layer that gives any of it.
    pub(crate) fn merge(layers: &[&Layer]) -> Layer {
        let mut out = Layer::default();
        for d in TABLE {
            let s = d.setting;
            let from = if SOURCE.contains(&s) {
                layers
                    .iter()
                    .find(|l| SOURCE.iter().any(|&x| l.is_set(x)))
                    .and_then(|l| l.get(s))
            } else {
                layers.iter().find_map(|l| l.get(s))
            };
            if let Some(g) = from {
                out.set(s, g.value.clone(), g.origin.clone());
            }
        }
        out
    }
}

/// What kind of problem a value has (the property test compares these
/// across front ends; the messages name the origin and may differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// Not of the setting's syntax or type.
    Syntax,
    /// Outside the setting's limits.
    Range,
    /// Excluded by another setting (two sources, a per-stream variable with
    /// several streams, a flag beside `-config`).
    Conflict,
    /// Required and not given.
    Missing,
    /// A name no setting has (file key, variable).
    Unknown,
    /// Well-formed but not acceptable (an empty path, a reserved mount).
    Invalid,
}

/// One problem the front ends or the validator found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// The setting at fault; `None` when no setting is (an unknown key).
    pub setting: Option<Setting>,
    /// The table being read (file mode; `Top` on the command line).
    pub place: Place,
    /// Where the faulty value came from.
    pub origin: Origin,
    pub fault: Fault,
    /// What is wrong, without the origin (the front end adds it).
    pub message: String,
}
