//! The environment front end: `RINGCAST_<FLAG>` for every flag but `-help`
//! and `-version` (the flag's name upper-cased, `-` as `_`), as containers
//! configure servers.
//!
//! - A value is read as the flag's value would be: Go integers, Go
//!   `ParseBool` words for booleans (`RINGCAST_REOPEN=false`), durations,
//!   addresses, names.
//! - `RINGCAST_EXEC` is the command as shell-quoted words
//!   (`RINGCAST_EXEC="sh -c 'a | b'"`), split without any expansion and
//!   never run through a shell ([`split_words`]).
//! - `RINGCAST_CONFIG=FILE` is `-config FILE`; `RINGCAST_CHECK_CONFIG=true`
//!   is `-check-config`.
//! - An empty variable is ignored, as if it were not set (what `docker run
//!   -e NAME=` and an unset `${NAME:-}` give).
//! - A `RINGCAST_` variable that names no flag, `RINGCAST_HELP` and
//!   `RINGCAST_VERSION` are errors naming the variable: a typo must not
//!   silently mean a default. `RINGCAST_FAILPOINT` (test fault injection) is
//!   not a setting and is left alone.
//! - `RUST_LOG`, when it is exactly one of the level words, is the log level
//!   below every other source (any other `RUST_LOG` is ignored, as the
//!   logger has no per-module filters).
//!
//! The variables are a parameter: tests pass a list, the binary passes
//! `std::env::vars_os()`.

use std::ffi::{OsStr, OsString};

use super::raw::{Fault, Layer, Origin, Problem, Value};
use super::table::{by_env, Kind, Setting, ENV_PREFIX};
use super::values::{parse_go_bool, parse_level, split_words};

/// What the environment sets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Environment {
    /// `RINGCAST_*` settings.
    pub layer: Layer,
    /// The log level from `RUST_LOG` (the lowest precedence of all).
    pub rust_log: Layer,
    /// Variables that cannot be used.
    pub problems: Vec<Problem>,
}

/// Variables with the prefix that are not settings.
const NOT_SETTINGS: &[&str] = &[crate::failpoint::VAR];

/// Read the settings out of `vars` (name, value pairs).
pub(crate) fn read<I, K, V>(vars: I) -> Environment
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut env = Environment::default();
    let mut vars: Vec<(OsString, OsString)> = vars
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    // Problems in a stable order, whatever order the environment is in.
    vars.sort();
    for (name, value) in vars {
        if name == "RUST_LOG" {
            if value.to_str().and_then(parse_level).is_some() {
                let origin = Origin::Env("RUST_LOG".to_owned());
                env.rust_log
                    .set(Setting::LogLevel, Value::Text(value), origin);
            }
            continue;
        }
        if !name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()) || value.is_empty() {
            continue;
        }
        let shown = name.to_string_lossy().into_owned();
        if NOT_SETTINGS.contains(&shown.as_str()) {
            continue;
        }
        match variable(&name, value) {
            Ok((setting, value)) => env.layer.set(setting, value, Origin::Env(shown)),
            Err((setting, fault, message)) => env.problems.push(Problem {
                setting,
                place: super::raw::Place::Top,
                origin: Origin::Env(shown),
                fault,
                message,
            }),
        }
    }
    env
}

/// One `RINGCAST_` variable (not empty): the setting and its raw value, or
/// what is wrong.
fn variable(
    name: &OsStr,
    value: OsString,
) -> Result<(Setting, Value), (Option<Setting>, Fault, String)> {
    let d = match name.to_str().and_then(by_env) {
        Some(d) if d.env => d,
        Some(d) => {
            let why = format!("-{} is a command-line flag only", d.flag);
            return Err((None, Fault::Unknown, why));
        }
        None if name == "RINGCAST_HELP" || name == "RINGCAST_H" => {
            let why = "-help is a command-line flag only".to_owned();
            return Err((None, Fault::Unknown, why));
        }
        None => {
            let why = "unknown variable: each flag -NAME is RINGCAST_NAME \
                       (upper case, - as _), see ringcast -help";
            return Err((None, Fault::Unknown, why.to_owned()));
        }
    };
    if d.kind != Kind::Command {
        return Ok((d.setting, Value::Text(value)));
    }
    value
        .to_str()
        .ok_or_else(|| "not valid UTF-8".to_owned())
        .and_then(split_words)
        .map(|words| {
            (
                d.setting,
                Value::List(words.into_iter().map(OsString::from).collect()),
            )
        })
        .map_err(|why| {
            let shown = value.to_string_lossy();
            (
                Some(d.setting),
                Fault::Syntax,
                format!("invalid value {shown:?}: {why}"),
            )
        })
}

/// A boolean variable the validator does not see (`RINGCAST_CHECK_CONFIG`):
/// its value, or the problem.
pub(crate) fn boolean(env: &Environment, s: Setting) -> Result<Option<bool>, Problem> {
    let Some(g) = env.layer.get(s) else {
        return Ok(None);
    };
    let Value::Text(t) = &g.value else {
        return Ok(None);
    };
    parse_go_bool(t.as_encoded_bytes())
        .map(Some)
        .ok_or_else(|| Problem {
            setting: Some(s),
            place: super::raw::Place::Top,
            origin: g.origin.clone(),
            fault: Fault::Syntax,
            message: format!(
                "invalid value {}: not a boolean (true/false, t/f or 1/0)",
                g.value.shown()
            ),
        })
}
