//! The service watchdog (sd_watchdog_enabled(3), `WatchdogSec=`): systemd
//! sets `WATCHDOG_USEC` (and `WATCHDOG_PID`), and expects `WATCHDOG=1`
//! more often than that; forkd pets at half the interval, as the man page
//! recommends.
//!
//! This is a deadline and nothing else: the supervisor asks for
//! [`Watchdog::deadline`] when it computes its poll timeout and calls
//! [`Watchdog::due`] from its timer phase. A loop that stops turning stops
//! petting, and systemd restarts forkd: that is the point.

use std::time::{Duration, Instant};

/// When the next `WATCHDOG=1` is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchdog {
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// Reads and removes `WATCHDOG_USEC`/`WATCHDOG_PID`. `Ok(None)` when the
    /// watchdog is off or meant for another process.
    ///
    /// Call only while the process is single-threaded (environment writes).
    pub fn from_env() -> Result<Option<Watchdog>, String> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
        let interval = parse(usec.as_deref(), pid.as_deref(), std::process::id())?;
        Ok(interval.map(|interval| Watchdog::new(interval, Instant::now())))
    }

    /// A watchdog petted every `interval`, first at `now + interval`.
    pub fn new(interval: Duration, now: Instant) -> Watchdog {
        Watchdog {
            interval,
            next: now + interval,
        }
    }

    /// The time between two pets (half of `WATCHDOG_USEC`).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// True when a pet is due at `now`; schedules the next one.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.interval;
        true
    }
}

/// The pet interval from the variables' values, or `None` when the watchdog
/// is not for `my_pid`. A malformed value is an error naming it.
pub fn parse(
    usec: Option<&str>,
    pid: Option<&str>,
    my_pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .parse()
            .map_err(|_| format!("WATCHDOG_PID={pid:?} is not a pid; the watchdog stays off"))?;
        if pid != my_pid {
            return Ok(None);
        }
    }
    let usec: u64 = usec.parse().map_err(|_| {
        format!("WATCHDOG_USEC={usec:?} is not a number of microseconds; the watchdog stays off")
    })?;
    if usec == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_micros(usec / 2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_at_half_the_interval_systemd_gives() {
        assert_eq!(
            parse(Some("400000"), None, 7),
            Ok(Some(Duration::from_millis(200)))
        );
        assert_eq!(
            parse(Some("400000"), Some("7"), 7),
            Ok(Some(Duration::from_millis(200)))
        );
    }

    #[test]
    fn a_watchdog_for_another_pid_or_zero_is_off() {
        assert_eq!(parse(Some("400000"), Some("8"), 7), Ok(None));
        assert_eq!(parse(Some("0"), None, 7), Ok(None));
        assert_eq!(parse(None, Some("7"), 7), Ok(None));
    }

    #[test]
    fn malformed_values_are_named() {
        let err = parse(Some("soon"), None, 7).unwrap_err();
        assert!(err.contains("WATCHDOG_USEC=\"soon\""), "{err}");
        let err = parse(Some("1000"), Some("me"), 7).unwrap_err();
        assert!(err.contains("WATCHDOG_PID=\"me\""), "{err}");
    }

    #[test]
    fn due_fires_once_per_interval() {
        let start = Instant::now();
        let mut w = Watchdog::new(Duration::from_millis(200), start);
        assert!(!w.due(start + Duration::from_millis(100)));
        assert!(w.due(start + Duration::from_millis(200)));
        assert!(!w.due(start + Duration::from_millis(300)));
        assert_eq!(w.deadline(), start + Duration::from_millis(400));
    }
}
