//! The one harness of the black-box tests. Every test in `tests/` starts the
//! real `ringcast` binary through [`Ringcast`] and talks to it over real
//! sockets:
//!
//! - [`ringcast`]: the builder ([`Ringcast`]: flags, a configuration file,
//!   environment, another user, a source command) and the running [`Server`]
//!   (its log, signals, reloads, status, exit);
//! - [`client`]: one HTTP [`Client`] on a real socket;
//! - [`tools`]: the one check for what a test needs besides the binary
//!   ([`require`]: a command, root, a Python module, a kernel feature), and
//!   the helpers that run other programs;
//! - [`tempdir`]: the one scratch directory, [`TempDir`];
//! - [`streams`]: deterministic test streams ([`RAW_GEN`]) and their checks.
//!
//! Every wait here waits on a condition with a generous deadline (the tests
//! run on a loaded 2-core machine); nothing sleeps for correctness.

#![allow(dead_code, unused_imports)]

pub mod client;
pub mod icecast;
pub mod ringcast;
pub mod streams;
pub mod tempdir;
pub mod tools;

use std::time::{Duration, Instant};

pub use client::{basic_auth, small_window_listener, small_window_socket, Client};
pub use ringcast::{binary, status_json, ClientEnd, Logs, Ringcast, Server};
pub use streams::*;
pub use tempdir::TempDir;
pub use tools::{
    in_ci, proc_status, require, require_all, require_python_module, require_root, require_that,
    run, system_user, try_run,
};

/// The default deadline for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// Wait until `cond` holds, polling; false at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
