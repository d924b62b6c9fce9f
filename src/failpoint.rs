//! Fault injection for the black-box tests, compiled into debug builds only
//! (`cargo test` builds the binary with debug assertions; a release build
//! ignores the variable).
//!
//! `RINGCAST_FAILPOINT=shard-panic-after-accepts=N` makes shard 0 panic when
//! it accepts its Nth connection, to test that a dead shard takes the whole
//! process down with an ERROR line and a non-zero exit status instead of
//! leaving a listen socket nobody accepts on (issue 9).

/// The environment variable read once at shard start.
pub const VAR: &str = "RINGCAST_FAILPOINT";

/// Accepted connections after which shard `shard` must panic, if the tests
/// asked for it.
pub fn shard_panic_after_accepts(shard: usize) -> Option<u64> {
    if !cfg!(debug_assertions) || shard != 0 {
        return None;
    }
    let v = std::env::var(VAR).ok()?;
    v.strip_prefix("shard-panic-after-accepts=")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}
