//! Restart back-off: capped exponential delays with jitter.
//!
//! Pure arithmetic (no clock, no OS): the supervisor asks for the delay
//! before the n-th consecutive fast restart and arms a timer with it.

use std::time::Duration;

/// `initial * 2^(n-1)`, capped at `max`, scaled by a jitter factor in
/// `[0.8, 1.0]` so that many programs failing together do not restart in
/// lock-step (the cap is never exceeded).
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max,
            rng: seed | 1,
        }
    }

    /// The delay before restart number `failures` (1 = first failure);
    /// zero for `failures == 0` (the program had run stably).
    pub fn delay(&mut self, failures: u32) -> Duration {
        if failures == 0 || self.initial.is_zero() {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(32);
        let raw = self
            .initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max);
        raw.mul_f64(0.8 + 0.2 * self.next_unit())
    }

    /// xorshift64: enough randomness for jitter, no dependency, no syscall.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 42);
        for (n, nominal) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            let d = b.delay(n).as_millis() as u64;
            assert!(
                d <= nominal && d >= nominal * 8 / 10,
                "failure {n}: {d}ms vs {nominal}ms"
            );
        }
    }

    #[test]
    fn no_delay_after_a_stable_run_or_with_zero_initial() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), 7);
        assert_eq!(b.delay(0), Duration::ZERO);
        let mut z = Backoff::new(Duration::ZERO, Duration::from_secs(1), 7);
        assert_eq!(z.delay(5), Duration::ZERO);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30), 3);
        assert!(b.delay(u32::MAX) <= Duration::from_secs(30));
    }
}
