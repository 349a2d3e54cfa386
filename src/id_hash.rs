//! A hasher for the numbers forkd hands out itself (job ids, event-loop
//! tokens), for the `HashMap`s the loop touches once or more per job.
//!
//! SipHash (std's default) resists keys chosen by an attacker; these keys
//! are counters no caller chooses, so one multiply by the golden ratio
//! spreads them over hashbrown's buckets (low bits) and tags (top bits) at
//! a fraction of the cost. Never use it for keys that come from outside.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` keyed by a number forkd assigned.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of one integer key.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for integer keys; kept correct for any other.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(GOLDEN);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_land_in_distinct_buckets_and_tags() {
        let hash = |n: u64| {
            let mut h = IdHasher::default();
            h.write_u64(n);
            h.finish()
        };
        let buckets: std::collections::HashSet<u64> = (0..1024).map(|n| hash(n) & 1023).collect();
        assert!(
            buckets.len() > 600,
            "only {} of 1024 buckets",
            buckets.len()
        );
        let tags: std::collections::HashSet<u64> = (0..1024).map(|n| hash(n) >> 57).collect();
        assert_eq!(tags.len(), 128, "every 7-bit tag is used");
    }

    #[test]
    fn an_id_map_finds_what_it_holds() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        for n in 0..10_000 {
            map.insert(n, n * 2);
        }
        assert!((0..10_000).all(|n| map[&n] == n * 2));
        assert_eq!(map.remove(&77), Some(154));
        assert!(!map.contains_key(&77));
    }
}
