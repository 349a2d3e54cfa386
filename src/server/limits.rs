//! Log lines that summarise refusals, timeouts and failures once per
//! interval instead of once per connection (a flood must not become a log
//! flood). Pure data: no syscalls, no clock reads except through arguments.

use std::time::{Duration, Instant};

/// How often a summary of refusals or timeouts is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Summaries a [`RateLog`] keeps until the supervisor takes them into its
/// event stream (it does so every loop turn; this only bounds a backlog).
const KEPT: usize = 8;

/// One summary line's content: `count` events of one kind since the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub what: &'static str,
    pub count: u64,
}

/// Events counted between two log lines.
#[derive(Debug)]
pub struct RateLog {
    what: &'static str,
    pending: u64,
    last: Option<Instant>,
    said: Vec<Summary>,
}

impl RateLog {
    pub fn new(what: &'static str) -> RateLog {
        RateLog {
            what,
            pending: 0,
            last: None,
            said: Vec::new(),
        }
    }

    /// Counts one event; returns the line to log now, if the interval has
    /// passed since the last line (the first event is logged at once).
    pub fn note(&mut self, now: Instant, service: &str) -> Option<String> {
        self.pending += 1;
        match self.last {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => None,
            _ => self.flush(now, service),
        }
    }

    /// The summary of what is pending, if anything, once the interval passed.
    pub fn flush(&mut self, now: Instant, service: &str) -> Option<String> {
        if self.pending == 0 {
            return None;
        }
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < LOG_INTERVAL)
        {
            return None;
        }
        let line = match self.last {
            None => format!(
                "service \"{service}\": {} (further ones are summarised every {}s)",
                self.what,
                LOG_INTERVAL.as_secs()
            ),
            Some(_) => format!(
                "service \"{service}\": {} x{} in the last {}s",
                self.what,
                self.pending,
                LOG_INTERVAL.as_secs()
            ),
        };
        if self.said.len() == KEPT {
            self.said.remove(0);
        }
        self.said.push(Summary {
            what: self.what,
            count: self.pending,
        });
        self.pending = 0;
        self.last = Some(now);
        Some(line)
    }

    /// The summaries logged since the last call, oldest first.
    pub fn take_said(&mut self) -> Vec<Summary> {
        crate::process::take_unless_empty(&mut self.said)
    }

    /// When the pending summary is due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.pending, self.last) {
            (0, _) => None,
            (_, Some(t)) => Some(t + LOG_INTERVAL),
            (_, None) => Some(Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_log_says_the_first_event_then_summarises() {
        let t0 = Instant::now();
        let mut r = RateLog::new("refused a connection (per_ip)");
        assert!(r.note(t0, "echo").is_some());
        assert!(r.note(t0 + Duration::from_secs(1), "echo").is_none());
        assert!(r.note(t0 + Duration::from_secs(2), "echo").is_none());
        let line = r.flush(t0 + LOG_INTERVAL, "echo").unwrap();
        assert!(line.contains("x2"), "{line}");
        assert!(r.flush(t0 + LOG_INTERVAL * 3, "echo").is_none());
        let said: Vec<u64> = r.take_said().iter().map(|s| s.count).collect();
        assert_eq!(said, [1, 2], "what was logged, as counts");
        assert!(r.take_said().is_empty(), "taken once");
    }

    #[test]
    fn summaries_nobody_takes_are_bounded() {
        let t0 = Instant::now();
        let mut r = RateLog::new("refused");
        for i in 0..(KEPT as u32 * 3) {
            r.note(t0 + LOG_INTERVAL * i, "echo");
        }
        assert_eq!(r.take_said().len(), KEPT);
    }
}
