//! What a test needs besides the binary, checked in one way.
//!
//! The rule: a test whose need is missing (a command, root, a Python module,
//! a kernel feature) prints `TEST: skipped: needs X` and returns early —
//! except under CI (`CI` set to anything but empty, `0` or `false`), where it
//! fails: CI installs everything (`.ci/setup`), so there a missing need is a
//! broken machine, not a reason to pass.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use super::ringcast::SPAWN;

/// Whether the tests run under CI.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map_or_else(|| "this test".to_string(), str::to_string)
}

/// `ok`, or (with `what` missing) skip: say `skipped: needs WHAT` and return
/// false outside CI, panic under CI. Every other check here ends in this one.
pub fn require_that(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    let test = test_name();
    if in_ci() {
        panic!(
            "{test}: needs {what}; CI must run every test (.ci/setup installs what the tests need)"
        );
    }
    // Straight to stderr, past libtest's capture: a skip shows in the
    // output of a plain `cargo test`, not only with --nocapture.
    let line = format!("{test}: skipped: needs {what} (run .ci/setup)\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    false
}

/// Whether `tool` is a command on PATH (an absolute or relative path: that
/// file), executable.
pub fn have(tool: &str) -> bool {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if tool.contains('/') {
        return executable(Path::new(tool));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(tool))))
}

/// Every command in `tools` is on PATH; otherwise [`require_that`] names the
/// missing ones.
pub fn require_all(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    require_that(missing.is_empty(), &missing.join(", "))
}

/// `tool` is a command on PATH.
pub fn require(tool: &str) -> bool {
    require_all(&[tool])
}

/// The test runs as root (setcap, useradd, sysctl, port 80).
pub fn require_root() -> bool {
    let euid = proc_status("self", "Uid")
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u32>().ok());
    require_that(euid == Some(0), "root")
}

/// A Python 3 that can import `module`: `python3` on PATH if it can, else
/// Debian's `/usr/bin/python3` (where `apt-get install python3-MODULE` puts
/// it, when PATH starts with another Python such as pyenv's).
pub fn require_python_module(module: &str) -> Option<PathBuf> {
    let found = ["python3", "/usr/bin/python3"]
        .into_iter()
        .filter(|p| have(p))
        .find(|p| try_run(Command::new(p).args(["-c", &format!("import {module}")])).is_some());
    require_that(found.is_some(), &format!("the Python module {module}"));
    found.map(PathBuf::from)
}

/// Run a command to completion (stdin from /dev/null); panic with its output
/// when it cannot start or fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = output(cmd)
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is it installed? see .ci/setup)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command to completion (stdin from /dev/null); its stdout when it
/// succeeds, `None` when it cannot start or fails.
pub fn try_run(cmd: &mut Command) -> Option<String> {
    let out = output(cmd.stderr(Stdio::null())).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd.output()`, started while no test writes an executable.
fn output(cmd: &mut Command) -> std::io::Result<Output> {
    let _spawning = SPAWN.read().unwrap_or_else(|e| e.into_inner());
    cmd.stdin(Stdio::null()).output()
}

/// The text of a `/proc/PID/status` line such as `Uid:`, `CapEff:` or
/// `VmRSS:` (empty when there is none); `pid` may be `self`.
pub fn proc_status(pid: impl std::fmt::Display, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The (uid, gid) of user `name`, if it exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        try_run(Command::new("id").args([flag, name]))?
            .trim()
            .parse()
            .ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// The unprivileged system user `name`'s (uid, gid), created (no home, no
/// login shell, its own group) when missing. Needs root to create it.
pub fn system_user(name: &str) -> (u32, u32) {
    static CREATED: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _one_at_a_time = CREATED.get_or_init(Default::default).lock();
    if user_ids(name).is_none() {
        run(Command::new("useradd").args([
            OsStr::new("--system"),
            OsStr::new("--no-create-home"),
            OsStr::new("--user-group"),
            OsStr::new("--shell"),
            OsStr::new("/usr/sbin/nologin"),
            OsStr::new(name),
        ]));
        println!("created system user {name}");
    }
    let (uid, gid) = user_ids(name).unwrap_or_else(|| panic!("no user {name} after useradd"));
    assert_ne!(uid, 0, "{name} must not be root");
    (uid, gid)
}
