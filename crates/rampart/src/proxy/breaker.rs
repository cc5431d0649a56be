//! Per-target circuit breaker and health state.
//!
//! Closed: requests flow; failures are counted (in a row, and as a ratio over a
//! window). Open: the target gets nothing for `open_for`; a route with no other
//! target answers 503 with `Retry-After`. Half-open: one probe request is let
//! through; success closes the breaker, failure opens it again. Independently,
//! active health checks mark a target down or up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart_core::config::model::BreakerConfig;
use rampart_core::config::Target;

/// A change of a breaker's state worth telling the audit log about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed (or half-open) to open, after `failures` failures in a row.
    Opened { failures: u32, probe: bool },
    /// A probe succeeded: traffic flows again.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct BreakerState {
    phase: Phase,
    consecutive: u32,
    window_start: Instant,
    window_total: u32,
    window_failed: u32,
}

/// One target of an upstream, with its live state.
#[derive(Debug)]
pub struct TargetState {
    pub target: Target,
    /// A label for logs and metrics (`host:port`, from config).
    pub label: String,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    breaker: Mutex<BreakerState>,
    cfg: BreakerConfig,
}

/// A request's hold on a target: counts it in flight until dropped, and
/// reports the outcome to the breaker.
#[derive(Debug)]
pub struct Permit {
    target: Arc<TargetState>,
    probe: bool,
    reported: bool,
    /// The in-flight count was handed to an [`InFlight`] (see
    /// [`Permit::finish_holding`]).
    handed_on: bool,
}

/// A request still counted in flight on its target after its outcome was
/// reported: its response body is still streaming. Uncounted when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Permit {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.target
    }

    /// Reports whether the exchange succeeded (an answer that is not 502–504);
    /// returns the breaker's change of state, if this outcome caused one.
    pub fn finish(self, success: bool) -> Option<Transition> {
        self.finish_at(success, Instant::now())
    }

    /// [`Permit::finish`], the request still counted in flight until the
    /// returned [`InFlight`] is dropped (with the response body, for
    /// `least_in_flight`: a streamed answer, an LLM's above all, keeps its
    /// target busy long after the head).
    pub fn finish_holding(mut self, success: bool) -> (Option<Transition>, InFlight) {
        self.handed_on = true;
        let held = InFlight(self.target.clone());
        (self.finish(success), held)
    }

    /// [`Permit::finish`] with the clock passed in (tests drive time).
    pub fn finish_at(mut self, success: bool, now: Instant) -> Option<Transition> {
        self.reported = true;
        self.target.record(success, self.probe, now)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.handed_on {
            self.target.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if self.probe && !self.reported {
            // The probe was abandoned (client went away): let another try.
            let mut b = self.target.lock();
            if let Phase::HalfOpen { .. } = b.phase {
                b.phase = Phase::HalfOpen { probing: false };
            }
        }
    }
}

impl TargetState {
    pub fn new(target: Target, cfg: BreakerConfig) -> Arc<Self> {
        Arc::new(Self {
            label: target.authority.to_string(),
            target,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            breaker: Mutex::new(BreakerState {
                phase: Phase::Closed,
                consecutive: 0,
                window_start: Instant::now(),
                window_total: 0,
                window_failed: 0,
            }),
            cfg,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Sets the health-check verdict; returns true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Ordering::AcqRel) != healthy
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// A permit to send a request, or how long until the breaker lets one through.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<Permit, Duration> {
        if !self.is_healthy() {
            return Err(Duration::from_secs(1));
        }
        let mut probe = false;
        if self.cfg.enabled {
            let mut b = self.lock();
            match b.phase {
                Phase::Closed => {}
                Phase::Open { until } if now < until => return Err(until - now),
                Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                    b.phase = Phase::HalfOpen { probing: true };
                    probe = true;
                }
                Phase::HalfOpen { probing: true } => return Err(Duration::from_secs(1)),
            }
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(Permit { target: self.clone(), probe, reported: false, handed_on: false })
    }

    fn record(&self, success: bool, probe: bool, now: Instant) -> Option<Transition> {
        if !self.cfg.enabled {
            return None;
        }
        let cfg = &self.cfg;
        let mut b = self.lock();
        if now.duration_since(b.window_start) > cfg.window {
            b.window_start = now;
            b.window_total = 0;
            b.window_failed = 0;
        }
        b.window_total += 1;
        if success {
            b.consecutive = 0;
            if probe {
                b.phase = Phase::Closed;
                b.window_total = 0;
                b.window_failed = 0;
                tracing::info!(target = %self.label, "circuit closed");
                return Some(Transition::Closed);
            }
            return None;
        }
        b.window_failed += 1;
        b.consecutive += 1;
        let ratio_tripped = b.window_total >= cfg.min_requests
            && f64::from(b.window_failed) / f64::from(b.window_total.max(1)) >= cfg.error_ratio;
        if probe || b.consecutive >= cfg.consecutive_failures || ratio_tripped {
            // Requests that were already under way when it opened may fail
            // too: they extend the open time but are not a new transition.
            let transition = (!matches!(b.phase, Phase::Open { .. }))
                .then_some(Transition::Opened { failures: b.consecutive, probe });
            if transition.is_some() {
                tracing::warn!(target = %self.label, failures = b.consecutive, "circuit opened");
            }
            b.phase = Phase::Open { until: now + cfg.open_for };
            b.consecutive = 0;
            return transition;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn target(cfg: BreakerConfig) -> Arc<TargetState> {
        let t = Target {
            https: false,
            authority: "127.0.0.1:1".parse().unwrap(),
            base_path: String::new(),
            host_header: http::HeaderValue::from_static("127.0.0.1:1"),
        };
        TargetState::new(t, cfg)
    }

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            enabled: true,
            consecutive_failures: 3,
            error_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_millis(100),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_then_half_opens_and_closes() {
        let t = target(cfg());
        let now = Instant::now();
        assert_eq!(t.try_acquire(now).unwrap().finish_at(false, now), None);
        assert_eq!(t.try_acquire(now).unwrap().finish_at(false, now), None);
        let opened = t.try_acquire(now).unwrap().finish_at(false, now);
        assert_eq!(opened, Some(Transition::Opened { failures: 3, probe: false }));
        assert!(matches!(t.phase(), Phase::Open { .. }));
        let wait = t.try_acquire(now).unwrap_err();
        assert!(wait <= Duration::from_millis(100));
        // After open_for: exactly one probe.
        let later = now + Duration::from_millis(150);
        let probe = t.try_acquire(later).unwrap();
        assert!(t.try_acquire(later).is_err(), "one probe at a time");
        assert_eq!(probe.finish_at(true, later), Some(Transition::Closed));
        assert_eq!(t.phase(), Phase::Closed);
        assert!(t.try_acquire(later).is_ok());
    }

    #[test]
    fn failed_probe_reopens_and_abandoned_probe_frees_the_slot() {
        let t = target(cfg());
        let now = Instant::now();
        for _ in 0..3 {
            t.try_acquire(now).unwrap().finish_at(false, now);
        }
        let later = now + Duration::from_millis(150);
        let reopened = t.try_acquire(later).unwrap().finish_at(false, later);
        assert_eq!(reopened, Some(Transition::Opened { failures: 1, probe: true }));
        assert!(matches!(t.phase(), Phase::Open { .. }));
        let later = later + Duration::from_millis(150);
        drop(t.try_acquire(later).unwrap());
        assert!(t.try_acquire(later).is_ok(), "an abandoned probe lets another through");
    }

    #[test]
    fn error_ratio_trips_without_consecutive_failures() {
        let t = target(BreakerConfig { consecutive_failures: 100, ..cfg() });
        let now = Instant::now();
        for i in 0..10 {
            t.try_acquire(now).unwrap().finish_at(i % 2 == 0, now);
        }
        assert!(matches!(t.phase(), Phase::Open { .. }));
    }

    #[test]
    fn unhealthy_targets_get_nothing_and_in_flight_is_counted() {
        let t = target(cfg());
        let p = t.try_acquire(Instant::now()).unwrap();
        assert_eq!(t.in_flight(), 1);
        drop(p);
        assert_eq!(t.in_flight(), 0);
        // Reported, but still counted until the hold on it goes.
        let (_, held) = t.try_acquire(Instant::now()).unwrap().finish_holding(true);
        assert_eq!(t.in_flight(), 1);
        drop(held);
        assert_eq!(t.in_flight(), 0);
        t.set_healthy(false);
        assert!(t.try_acquire(Instant::now()).is_err());
    }
}
