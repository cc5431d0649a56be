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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;

/// The space-saving heavy-hitter sketch: `k` counters; each count overestimates
/// the true count by at most its recorded error, and any key seen more than
/// `n/k` times in a stream of `n` is guaranteed to be held.
///
/// A known key costs one hash lookup. A new key, once all `k` counters are
/// taken, replaces the smallest; finding it is a min-heap pop, not a scan of
/// the `k` counters, so a flood of new addresses costs `O(log k)` per
/// request (amortised) rather than `O(k)`. The heap is updated lazily: a hit
/// only bumps the map, leaving the key's heap entry low; a stale entry that
/// reaches the top is pushed back with its current count. Counts only grow,
/// so an entry that is current when it reaches the top is the true minimum,
/// and the pushes back are at most the hits in between.
#[derive(Clone, Debug)]
pub struct SpaceSaving<K> {
    k: usize,
    counts: HashMap<K, (u64, u64)>,
    /// One entry per held key: `(count when pushed, key)`, smallest on top.
    heap: BinaryHeap<Reverse<(u64, K)>>,
}

impl<K: Hash + Eq + Ord + Clone> SpaceSaving<K> {
    pub fn new(k: usize) -> Self {
        let k = k.max(1);
        Self { k, counts: HashMap::with_capacity(k), heap: BinaryHeap::with_capacity(k) }
    }

    /// Counts one occurrence of `key`.
    pub fn offer(&mut self, key: K) {
        if let Some(c) = self.counts.get_mut(&key) {
            c.0 += 1;
            return;
        }
        if self.counts.len() < self.k {
            self.counts.insert(key.clone(), (1, 0));
            self.heap.push(Reverse((1, key)));
            return;
        }
        // Replace the smallest counter; the newcomer inherits its count as error.
        while let Some(Reverse((seen, victim))) = self.heap.pop() {
            match self.counts.get(&victim) {
                Some(&(count, _)) if count == seen => {
                    self.counts.remove(&victim);
                    self.counts.insert(key.clone(), (seen + 1, seen));
                    self.heap.push(Reverse((seen + 1, key)));
                    return;
                }
                Some(&(count, _)) => self.heap.push(Reverse((count, victim))),
                // Every held key has exactly one entry; none is left over.
                None => {}
            }
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
        self.heap.clear();
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

    /// The sketch's guarantees on a skewed stream, checked against exact
    /// counts: every counter overestimates by at most its error, the counters
    /// add up to the stream's length, and every key above `n/k` is held.
    #[test]
    fn counts_keep_the_space_saving_bounds() {
        let (k, n) = (16usize, 60_000u64);
        let mut s = SpaceSaving::new(k);
        let mut exact: HashMap<u32, u64> = HashMap::new();
        let mut x = 0x2545_f491_u64;
        for _ in 0..n {
            // A skewed stream: a few heavy keys among many light ones.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = if x.is_multiple_of(3) { (x % 5) as u32 } else { 100 + (x % 5_000) as u32 };
            s.offer(key);
            *exact.entry(key).or_default() += 1;
        }
        let top = s.top();
        assert_eq!(top.len(), k);
        assert_eq!(top.iter().map(|t| t.1).sum::<u64>(), n, "counters add up to the stream");
        for (key, count, error) in &top {
            let truth = exact[key];
            assert!(*count >= truth && count - error <= truth, "{key}: {count} (±{error}) vs {truth}");
        }
        for (key, truth) in &exact {
            if *truth > n / k as u64 {
                assert!(top.iter().any(|t| t.0 == *key), "{key} seen {truth} times must be held");
            }
        }
        s.clear();
        assert!(s.is_empty() && s.top().is_empty());
        s.offer(1);
        assert_eq!(s.top(), [(1, 1, 0)]);
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
