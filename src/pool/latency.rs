//! A pool's job latencies as a cumulative histogram with fixed bucket
//! bounds (Prometheus' `histogram` type): one counter per bucket, the
//! count and the sum, all since the pool started. Recording is an array
//! index and two additions; nothing here allocates or reads a clock.

use std::time::Duration;

/// Upper bounds of the buckets, in seconds; the `+Inf` bucket is implied.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Jobs by how long they took, from submission to result.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [u64; BUCKETS.len() + 1],
    sum: Duration,
}

impl Histogram {
    pub fn record(&mut self, took: Duration) {
        let seconds = took.as_secs_f64();
        let at = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[at] += 1;
        self.sum = self.sum.saturating_add(took);
    }

    /// `(upper bound, jobs at or below it)` per bucket, cumulative, ending
    /// with `f64::INFINITY` and the count of every job.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let bounds = BUCKETS.iter().copied().chain([f64::INFINITY]);
        let mut total = 0;
        bounds
            .zip(self.counts)
            .map(|(bound, count)| {
                total += count;
                (bound, total)
            })
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> Duration {
        self.sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_every_job() {
        let mut h = Histogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_secs(60));
        let buckets = h.cumulative();
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[3], (0.001, 2), "a bound is inclusive");
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum(), Duration::from_micros(60_001_050));
    }
}
