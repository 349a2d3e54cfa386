//! Connection limits and the bookkeeping behind them: live connections per
//! client IP, and log lines that summarise refusals and timeouts once per
//! interval instead of once per connection (a flood must not become a log
//! flood). Pure data: no syscalls, no clock reads except through arguments.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often a summary of refusals or timeouts is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Live connections per client IP (`per_ip`; 0 = unlimited).
#[derive(Debug, Default)]
pub struct PerIp {
    limit: u32,
    live: HashMap<IpAddr, u32>,
}

impl PerIp {
    pub fn new(limit: u32) -> PerIp {
        PerIp {
            limit,
            live: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip`, or returns false (refuse) when the
    /// IP already has `per_ip` live ones. Unix peers (`None`) are not limited.
    pub fn admit(&mut self, ip: Option<IpAddr>) -> bool {
        let Some(ip) = ip else { return true };
        if self.limit == 0 {
            return true;
        }
        let n = self.live.entry(ip).or_insert(0);
        if *n >= self.limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` ended.
    pub fn release(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if let Some(n) = self.live.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.live.remove(&ip);
            }
        }
    }
}

/// A stable, non-zero 64-bit key for an IP, for the shared scoreboard.
pub fn ip_key(ip: IpAddr) -> u64 {
    let bytes = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    // FNV-1a: deterministic across processes (unlike RandomState).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// Events counted between two log lines.
#[derive(Debug)]
pub struct RateLog {
    what: &'static str,
    pending: u64,
    last: Option<Instant>,
}

impl RateLog {
    pub fn new(what: &'static str) -> RateLog {
        RateLog {
            what,
            pending: 0,
            last: None,
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
        self.pending = 0;
        self.last = Some(now);
        Some(line)
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
    fn per_ip_refuses_beyond_the_limit_and_frees_on_release() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut p = PerIp::new(2);
        assert!(p.admit(Some(ip)) && p.admit(Some(ip)));
        assert!(!p.admit(Some(ip)));
        assert!(p.admit(None));
        p.release(Some(ip));
        assert!(p.admit(Some(ip)));
        assert!(PerIp::new(0).admit(Some(ip)));
    }

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
        assert_ne!(
            ip_key("::1".parse().unwrap()),
            ip_key("127.0.0.1".parse().unwrap())
        );
    }
}
