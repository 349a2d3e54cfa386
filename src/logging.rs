//! forkd's own log: one record per line on stderr, through the `log` facade.
//!
//! When stderr is connected to the journal (`JOURNAL_STREAM` names stderr's
//! device and inode, see systemd.exec(5)) each line starts with its syslog
//! priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug) and has no
//! timestamp, since journald adds its own. Otherwise lines carry a UTC
//! timestamp and the level in words. Each record is written with one
//! `write(2)`, so records from forked children never interleave mid-line.
//! The logger holds no lock and starts no thread.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::LogLevel;

struct Logger {
    journal: bool,
}

static LOGGER_JOURNAL: Logger = Logger { journal: true };
static LOGGER_PLAIN: Logger = Logger { journal: false };

/// Installs the logger once; later calls only change the level.
pub fn init(level: LogLevel) {
    let logger = if stderr_is_journal() {
        &LOGGER_JOURNAL
    } else {
        &LOGGER_PLAIN
    };
    let _ = log::set_logger(logger);
    set_level(level);
}

/// Changes the level (reload applies `log_level` this way).
pub fn set_level(level: LogLevel) {
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
    });
}

/// `JOURNAL_STREAM=DEV:INODE` matches stderr's `st_dev:st_ino`.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    value == format!("{}:{}", stat.st_dev, stat.st_ino)
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = if self.journal {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            format!("<{priority}>{}\n", record.args())
        } else {
            format!(
                "{} forkd[{}]: {:<5} {}\n",
                utc_timestamp(SystemTime::now()),
                std::process::id(),
                record.level(),
                record.args()
            )
        };
        write_record(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Records dropped because stderr was not keeping up, reported with the
/// next record that gets through.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// One write per record. A reader of forkd's stderr that stops reading
/// (a stalled pipe) must not stall the event loop: when stderr cannot take
/// a small write right now (poll with a zero timeout; a pipe that polls
/// writable takes PIPE_BUF bytes without blocking) the record is dropped
/// and counted. O_NONBLOCK is not an option: stderr's file description is
/// shared with the terminal and with programs whose output is `inherit`.
fn write_record(bytes: &[u8]) {
    let stderr = std::io::stderr();
    let mut fds = [nix::poll::PollFd::new(
        stderr.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let writable =
        matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0);
    if !writable {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut out = stderr.lock();
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            out,
            "forkd: {dropped} log record(s) dropped: stderr was not being read fast enough"
        );
    }
    let _ = out.write_all(bytes);
}

/// `1 instance`, `3 instances`: a count with its noun, for log lines.
pub fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A duration as an operator reads it: `250ms`, `1.5s`, `2m30s`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}m{}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `2026-11-22T21:22:01.123Z`, computed without a date crate
/// (days-to-civil, proleptic Gregorian).
pub fn utc_timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_read_like_an_operator_writes_them() {
        assert_eq!(human_duration(Duration::from_micros(40_500)), "40ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(150)), "2m30s");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_382_521_123);
        assert_eq!(utc_timestamp(t), "2026-11-22T21:22:01.123Z");
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(utc_timestamp(leap).starts_with("2000-02-29T"));
    }
}
