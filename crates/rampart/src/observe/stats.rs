//! Live statistics for the admin API and dashboard: requests per second over
//! the last two minutes, rejections by layer and reason, and upstream target
//! health. Kept beside the Prometheus registry (which has no cheap way to be
//! read back) by the same calls that update it.
//!
//! Memory is bounded: rejections are keyed by `(&'static str, &'static str)`
//! pairs written in the code, upstream targets come from the config, and the
//! rate series holds [`SERIES_LEN`] samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Samples kept: one a second, two minutes.
pub const SERIES_LEN: usize = 120;
/// How often [`LiveStats::sample`] should run.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Most upstream targets remembered (a config names far fewer).
const MAX_TARGETS: usize = 1_024;

#[derive(Debug, Default)]
pub struct LiveStats {
    requests: AtomicU64,
    rejections: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    upstreams: Mutex<BTreeMap<(String, String), bool>>,
    series: Mutex<Series>,
}

#[derive(Debug, Default)]
struct Series {
    last: Option<(Instant, u64)>,
    points: VecDeque<Point>,
}

/// One sample of the request rate.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Point {
    /// Unix time in milliseconds.
    pub t: u64,
    pub rps: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rejection {
    pub layer: &'static str,
    pub reason: &'static str,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetHealth {
    pub upstream: String,
    pub target: String,
    pub healthy: bool,
}

impl LiveStats {
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejection(&self, layer: &'static str, reason: &'static str) {
        *lock(&self.rejections).entry((layer, reason)).or_insert(0) += 1;
    }

    pub fn upstream_health(&self, upstream: &str, target: &str, healthy: bool) {
        let mut map = lock(&self.upstreams);
        let key = (upstream.to_owned(), target.to_owned());
        if map.len() < MAX_TARGETS || map.contains_key(&key) {
            map.insert(key, healthy);
        }
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Records the rate since the previous sample; call every [`SAMPLE_EVERY`].
    pub fn sample(&self, now: Instant, unix_ms: u64) {
        let total = self.requests_total();
        let mut series = lock(&self.series);
        if let Some((then, before)) = series.last {
            let secs = now.saturating_duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let rps = total.saturating_sub(before) as f64 / secs;
                if series.points.len() == SERIES_LEN {
                    series.points.pop_front();
                }
                series.points.push_back(Point { t: unix_ms, rps: (rps * 10.0).round() / 10.0 });
            }
        }
        series.last = Some((now, total));
    }

    /// The samples, oldest first.
    pub fn series(&self) -> Vec<Point> {
        lock(&self.series).points.iter().copied().collect()
    }

    /// Rejections by count, highest first.
    pub fn rejections(&self) -> Vec<Rejection> {
        let mut v: Vec<Rejection> = lock(&self.rejections)
            .iter()
            .map(|(&(layer, reason), &count)| Rejection { layer, reason, count })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then(a.layer.cmp(b.layer)).then(a.reason.cmp(b.reason)));
        v
    }

    pub fn upstreams(&self) -> Vec<TargetHealth> {
        lock(&self.upstreams)
            .iter()
            .map(|((upstream, target), &healthy)| TargetHealth {
                upstream: upstream.clone(),
                target: target.clone(),
                healthy,
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_series_is_a_rate_and_stays_bounded() {
        let stats = LiveStats::default();
        let start = Instant::now();
        stats.sample(start, 0);
        assert!(stats.series().is_empty(), "the first sample only sets the baseline");
        for i in 1..=(SERIES_LEN as u64 + 30) {
            for _ in 0..5 {
                stats.request();
            }
            stats.sample(start + Duration::from_millis(500 * i), i);
        }
        let series = stats.series();
        assert_eq!(series.len(), SERIES_LEN);
        assert!(series.iter().all(|p| p.rps == 10.0), "{series:?}");
        assert_eq!(series.last().map(|p| p.t), Some(SERIES_LEN as u64 + 30));
    }

    #[test]
    fn rejections_sort_by_count_and_targets_are_capped() {
        let stats = LiveStats::default();
        stats.rejection("limit", "rate_limited");
        stats.rejection("auth", "invalid");
        stats.rejection("auth", "invalid");
        let r = stats.rejections();
        assert_eq!((r[0].layer, r[0].reason, r[0].count), ("auth", "invalid", 2));
        for i in 0..(MAX_TARGETS + 10) {
            stats.upstream_health("u", &i.to_string(), true);
        }
        assert_eq!(stats.upstreams().len(), MAX_TARGETS);
        stats.upstream_health("u", "0", false);
        assert!(stats.upstreams().iter().any(|t| t.target == "0" && !t.healthy));
    }
}
