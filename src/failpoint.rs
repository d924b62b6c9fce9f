//! Fault injection for the black-box tests, compiled into debug builds only
//! (`cargo test` builds the binary with debug assertions; a release build
//! ignores the variable).
//!
//! `RINGCAST_FAILPOINT=shard-panic-after-accepts=N` makes shard 0 panic when
//! it accepts its Nth connection, to test that a dead shard takes the whole
//! process down with an ERROR line and a non-zero exit status instead of
//! leaving a listen socket nobody accepts on (issue 9).

//!
//! `RINGCAST_FAILPOINT=push-take-delay-ms=N` makes a push mount's source
//! thread wait N ms before it takes an accepted encoder's connection, to
//! test what listeners see in that gap (they must get the encoder's icy-*
//! headers already).

/// The environment variable read once at shard start.
pub const VAR: &str = "RINGCAST_FAILPOINT";

/// The number after `NAME=` in the variable (debug builds only), if > 0.
fn number(name: &str) -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let v = std::env::var(VAR).ok()?;
    v.strip_prefix(name)?
        .strip_prefix('=')?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// Accepted connections after which shard `shard` must panic, if the tests
/// asked for it.
pub fn shard_panic_after_accepts(shard: usize) -> Option<u64> {
    if shard != 0 {
        return None;
    }
    number("shard-panic-after-accepts")
}

/// How long a push source thread waits before taking a handed-over
/// encoder connection, if the tests asked for it.
pub fn push_take_delay() -> Option<std::time::Duration> {
    number("push-take-delay-ms").map(std::time::Duration::from_millis)
}
