//! Bounded-memory abuse detection: heavy hitters (space-saving top-k) and a
//! spike detector (EWMA baseline).
//!
//! Both use memory fixed at construction, whatever clients send: the top-k keeps
//! exactly `k` counters (Metwally et al., "Efficient computation of frequent and
//! top-k elements in data streams", 2005), and each spike detector is two floats.
//!
//! ```
//! use rampart_core::abuse::{SpaceSaving, SpikeDetector};
//! let mut top = SpaceSaving::new(2);
//! for ip in ["a", "b", "a", "c", "a"] { top.offer(ip.to_string()); }
//! assert_eq!(top.top()[0].0, "a");
//! let mut s = SpikeDetector::new(5.0, 10.0);
//! for _ in 0..30 { assert!(!s.observe(20.0)); }
//! assert!(s.observe(500.0));
//! ```

use std::collections::HashMap;
use std::hash::Hash;

/// The space-saving heavy-hitter sketch: `k` counters; each count overestimates
/// the true count by at most its recorded error, and any key seen more than
/// `n/k` times in a stream of `n` is guaranteed to be held.
#[derive(Clone, Debug)]
pub struct SpaceSaving<K> {
    k: usize,
    counts: HashMap<K, (u64, u64)>,
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    pub fn new(k: usize) -> Self {
        Self { k: k.max(1), counts: HashMap::with_capacity(k.max(1)) }
    }

    /// Counts one occurrence of `key`.
    pub fn offer(&mut self, key: K) {
        if let Some(c) = self.counts.get_mut(&key) {
            c.0 += 1;
            return;
        }
        if self.counts.len() < self.k {
            self.counts.insert(key, (1, 0));
            return;
        }
        // Replace the smallest counter; the newcomer inherits its count as error.
        let victim = self.counts.iter().min_by_key(|(_, (c, _))| *c).map(|(k, (c, _))| (k.clone(), *c));
        if let Some((victim, min)) = victim {
            self.counts.remove(&victim);
            self.counts.insert(key, (min + 1, min));
        }
    }

    /// Keys by estimated count, largest first: `(key, count, max_overestimate)`.
    pub fn top(&self) -> Vec<(K, u64, u64)> {
        let mut v: Vec<(K, u64, u64)> = self.counts.iter().map(|(k, (c, e))| (k.clone(), *c, *e)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    pub fn clear(&mut self) {
        self.counts.clear();
    }

    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The classes of event the gateway keeps a spike detector for, each with its
/// own baseline: all requests, rate-limit refusals, authentication failures,
/// blocked inputs.
pub const SPIKE_CLASSES: [&str; 4] = ["requests", "rate_limited", "auth_failures", "blocked_inputs"];

/// Flags a rate far above its own recent history. The baseline is an
/// exponentially weighted moving average of the per-tick rate; a tick whose rate
/// exceeds `factor` × baseline (and `min_rate`) is a spike. Spikes feed the
/// baseline only a little, so a sustained flood does not become normal at once.
#[derive(Clone, Debug)]
pub struct SpikeDetector {
    factor: f64,
    min_rate: f64,
    baseline: Option<f64>,
}

/// Weight of a normal tick in the baseline.
const ALPHA: f64 = 0.1;
/// Weight of a spiking tick.
const ALPHA_SPIKE: f64 = 0.01;

impl SpikeDetector {
    pub fn new(factor: f64, min_rate: f64) -> Self {
        Self { factor, min_rate, baseline: None }
    }

    /// Feeds one tick's rate; true when it is a spike.
    pub fn observe(&mut self, rate: f64) -> bool {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { 0.0 };
        let Some(base) = self.baseline else {
            self.baseline = Some(rate);
            return false;
        };
        let spike = rate > self.min_rate && rate > self.factor * base;
        let alpha = if spike { ALPHA_SPIKE } else { ALPHA };
        self.baseline = Some(base + alpha * (rate - base));
        spike
    }

    pub fn baseline(&self) -> f64 {
        self.baseline.unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn heavy_hitters_survive_a_flood_of_unique_keys() {
        let mut s = SpaceSaving::new(10);
        for i in 0..200_000u32 {
            s.offer(format!("unique-{i}"));
            if i % 4 == 0 {
                s.offer("attacker".to_string());
            }
        }
        assert_eq!(s.len(), 10, "memory stays at k counters");
        let top = s.top();
        assert_eq!(top[0].0, "attacker");
        // The attacker's true count is 50 000; the estimate is within the error bound.
        assert!(top[0].1 >= 50_000 && top[0].1 - top[0].2 <= 50_000);
    }

    #[test]
    fn spikes_need_both_factor_and_floor() {
        let mut s = SpikeDetector::new(4.0, 100.0);
        for _ in 0..50 {
            assert!(!s.observe(10.0));
        }
        assert!(!s.observe(90.0), "below the floor");
        assert!(s.observe(1000.0));
        // A sustained flood keeps alarming for a while.
        assert!(s.observe(1000.0));
        assert!(!s.observe(f64::NAN));
    }
}
