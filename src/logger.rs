//! The log: one line per event on stderr, `TIMESTAMP LEVEL message`, with
//! key=value fields in the message.
//!
//! # Level policy
//!
//! - `error`: a stream or a client failed in a way the operator must look at
//!   (a source that cannot be opened, accept failing for lack of descriptors,
//!   a listen address that cannot be bound).
//! - `warn`: something went wrong and was recovered from (a source reopening
//!   after backoff, a quiet source killed, a client torn off for being lapped
//!   mid-frame, a limit that could not be raised).
//! - `info`: lifecycle (listening, source opened/closed/stats, each client's
//!   start and end, in streamserve's format).
//! - `debug` / `trace`: detail for developers.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:<5} {}\n",
            timestamp(SystemTime::now()),
            record.level(),
            record.args()
        );
        // One write per line so lines from different threads do not mix.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Write an `INFO` line whatever the log level: for the lines scripts and
/// tests read (`Listening at ADDR`), which must not vanish with
/// `-log-level warn`.
pub fn announce(message: &str) {
    let line = format!("{} {:<5} {message}\n", timestamp(SystemTime::now()), "INFO");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Install the logger at `level`. Calling it twice keeps the first logger.
pub fn init(level: LevelFilter) {
    let logger = Box::new(StderrLogger { level });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-22T03:14:48.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) (for other date formats).
pub fn civil(days: i64) -> (i64, u32, u32) {
    civil_from_days(days)
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_317_288_123);
        assert_eq!(timestamp(t), "2026-11-22T03:14:48.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }
}
