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
    /// The configuration file: the key, the `[[stream]]` it is in (0-based;
    /// `None` at the top level) and its line (1-based) when it was found.
    File {
        key: String,
        stream: Option<usize>,
        line: Option<usize>,
    },
}

/// A raw value. The command line and the environment give text (and
/// booleans, and word lists for the command); the file gives TOML's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Bool(bool),
    /// A TOML integer.
    Int(i64),
    Text(OsString),
    /// Command words, or listen addresses from the file.
    List(Vec<OsString>),
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

/// Settings that are one choice spelled three ways: a layer that gives any
/// of them gives the source, and hides the others of lower layers.
pub(crate) const SOURCE: [Setting; 3] = [Setting::Path, Setting::Exec, Setting::Demo];

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
    /// The stream (0-based) in file mode.
    pub stream: Option<usize>,
    /// Where the faulty value came from.
    pub origin: Origin,
    pub fault: Fault,
    /// What is wrong, without the origin (the front end adds it).
    pub message: String,
}
