//! The command-line front end: Go's `flag.FlagSet.Parse`, step for step.
//!
//! streamserve uses Go's `flag` package, and its command lines must keep
//! working unchanged. Go's rules differ from clap's in ways that matter here:
//! `-name` and `--name` are the same long flag; a boolean flag never takes a
//! separate value (`-reopen false` makes `false` the first positional
//! argument, `-reopen=false` is the way to turn it off); and flag parsing
//! stops at the first non-flag argument or after `--`, so in
//! `-exec ffmpeg -i x -` everything from `ffmpeg` on belongs to the command.
//! Bending clap into this needs a pre-pass that already does most of the
//! work, so this is a small hand-written parser instead ([`scan`]):
//!
//! 1. An argument that is `-`, empty, or does not start with `-` ends the
//!    flags; it and everything after it are the positional arguments.
//! 2. `--` ends the flags and is dropped.
//! 3. Otherwise one or two dashes are stripped; a name that is empty or
//!    starts with `-` or `=` is bad syntax. `name=value` splits at the first
//!    `=`. `help` and `h` ask for the usage text.
//! 4. A boolean flag (and `-exec`) is `true` without `=value`, else `value`
//!    is read with Go's `strconv.ParseBool` set (`1 t T TRUE true True`, `0 f
//!    F FALSE false False`). Any other flag takes `=value` or else the next
//!    argument, whatever it looks like (`-path -weird-name` is fine). A flag
//!    given twice keeps its last value.
//!
//! The values stay raw text here; the validator reads them.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::raw::{Layer, Origin, Value};
use super::table::{by_flag, Kind, Setting};
use super::values::parse_go_bool;
use super::ConfigError;

/// The command line split into flags and positional arguments.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// `-help` / `-h` was reached.
    Help,
    /// The flags given (`-exec` as a boolean) and the arguments after them.
    Flags { flags: Layer, rest: Vec<OsString> },
}

/// Split the arguments into flags and positionals following Go's
/// `flag.FlagSet.Parse` (see the module docs).
pub(crate) fn scan<I: IntoIterator<Item = OsString>>(args: I) -> Result<Scanned, ConfigError> {
    let mut args = args.into_iter();
    let mut flags = Layer::default();
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
        let Some(d) = by_flag(&name_str) else {
            return Err(ConfigError::new(
                &name_str,
                "flag provided but not defined (see -help)",
            ));
        };
        let boolean = matches!(d.kind, Kind::Bool | Kind::Command);
        let value = match (boolean, value) {
            (true, None) => Value::Bool(true),
            (true, Some(v)) => match parse_go_bool(v) {
                Some(b) => Value::Bool(b),
                None => {
                    return Err(ConfigError::value(
                        d.flag,
                        &String::from_utf8_lossy(v),
                        "not a boolean (use true/false, t/f or 1/0, as -name=false)",
                    ))
                }
            },
            (false, Some(v)) => Value::Text(OsStr::from_bytes(v).to_owned()),
            (false, None) => match args.next() {
                Some(v) => Value::Text(v),
                None => return Err(ConfigError::new(d.flag, "flag needs an argument")),
            },
        };
        flags.set(d.setting, value, Origin::Flag(d.flag));
    }
    rest.extend(args);
    Ok(Scanned::Flags { flags, rest })
}

/// Command-line mode: `-exec` takes the positional arguments as its command;
/// without it there must be none.
pub(crate) fn attach_command(flags: &mut Layer, rest: Vec<OsString>) -> Result<(), ConfigError> {
    match flags.get(Setting::Exec).map(|g| &g.value) {
        Some(Value::Bool(true)) => {
            flags.set(Setting::Exec, Value::List(rest), Origin::Flag("exec"));
            return Ok(());
        }
        // -exec=false: no command.
        Some(_) => flags.clear(Setting::Exec),
        None => {}
    }
    match rest.first() {
        None => Ok(()),
        Some(first) => Err(ConfigError::new(
            "exec",
            format!(
                "unexpected argument {:?} after the flags: to run a command, \
                 write -exec COMMAND [ARGS...] (boolean flags take -name=false)",
                first.to_string_lossy()
            ),
        )),
    }
}
