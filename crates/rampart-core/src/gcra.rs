//! GCRA, the generic cell rate algorithm: exact rate limits with bursts, kept
//! in one timestamp per key.
//!
//! A key's whole state is its *theoretical arrival time* (TAT, in nanoseconds):
//! the moment at which its bucket would be full again. Each unit of weight
//! pushes the TAT `period / count` further into the future, and a request is
//! allowed while the TAT stays within the *tolerance* (`burst` units' worth of
//! time) of now. Nothing is counted and nothing ticks, so the same function
//! gives the same answer in process and in a Redis script.
//!
//! A key whose TAT is not after now is idle, and an idle key behaves exactly
//! like an absent one: stores may drop it without losing anything.
//!
//! ```
//! use std::time::Duration;
//! use rampart_core::gcra::{decide, GcraParams, Op};
//!
//! // Two requests per second, in bursts of two.
//! let params = GcraParams::new(2, Duration::from_secs(1), 2).unwrap();
//! let (first, tat) = decide(None, 0, &params, 1, Op::Check);
//! assert!(first.allowed && first.remaining == 1);
//! let (second, tat) = decide(tat, 0, &params, 1, Op::Check);
//! assert!(second.allowed && second.remaining == 0);
//! let (third, unchanged) = decide(tat, 0, &params, 1, Op::Check);
//! assert!(!third.allowed && unchanged.is_none());
//! assert_eq!(third.retry_after_ns, 500_000_000);
//! ```

use std::time::Duration;

/// A rate (`count` units per `period`) and the bucket's capacity (`burst` units).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GcraParams {
    pub period_ns: u64,
    pub count: u64,
    pub burst: u64,
}

/// Why a rate cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    #[error("a rate needs a count of at least 1")]
    ZeroCount,
    #[error("a rate needs a period longer than zero")]
    ZeroPeriod,
    #[error("a burst must be at least 1")]
    ZeroBurst,
}

impl GcraParams {
    /// `count` units per `period`, in bursts of up to `burst` units. Periods
    /// longer than `u64::MAX` nanoseconds (584 years) are cut to that.
    pub fn new(count: u64, period: Duration, burst: u64) -> Result<Self, GcraError> {
        if count == 0 {
            return Err(GcraError::ZeroCount);
        }
        if period.is_zero() {
            return Err(GcraError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(GcraError::ZeroBurst);
        }
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        Ok(Self { period_ns, count, burst })
    }

    /// Time that `weight` units take to refill: weight * period / count,
    /// computed in u128, saturating to u64::MAX.
    pub fn increment_ns(&self, weight: u64) -> u64 {
        self.units_ns(weight)
    }

    /// burst * period / count (same arithmetic).
    pub fn tolerance_ns(&self) -> u64 {
        self.units_ns(self.burst)
    }

    fn units_ns(&self, units: u64) -> u64 {
        // The fields are public, so a zero count is possible here: a rate of
        // nothing makes every unit take forever.
        if let Some(total) = units.checked_mul(self.period_ns) {
            // The common case, without the cost of a 128-bit division.
            return if total == 0 { 0 } else { total.checked_div(self.count).unwrap_or(u64::MAX) };
        }
        // A u64 times a u64 always fits in a u128, so only the division and
        // the narrowing need care.
        let total = u128::from(units) * u128::from(self.period_ns);
        total.checked_div(u128::from(self.count)).map_or(u64::MAX, |ns| u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// What to do with a request's weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Consume the weight if it fits; otherwise refuse and consume nothing.
    Check,
    /// Consume the weight unconditionally (budgets, after the response).
    Debit,
    /// Consume nothing; say whether anything is left (budgets, before a request).
    Peek,
    /// Give the weight back, never past a full bucket (a budget's reservation
    /// that the request's cost did not use).
    Refund,
}

/// The outcome of one decision, in the terms of the `RateLimit` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's capacity (`burst`).
    pub limit: u64,
    /// Units of weight 1 that would still be allowed now, after this decision.
    pub remaining: u64,
    /// Time until the bucket is full again (the key is idle).
    pub reset_after_ns: u64,
    /// Time until this request would be allowed; 0 when allowed.
    pub retry_after_ns: u64,
}

/// The decision, and the TAT to store (None: leave the stored state unchanged).
///
/// `stored_tat_ns` is the key's stored TAT, `None` for a key never seen (or
/// dropped). All arithmetic saturates: no input panics or divides by zero.
pub fn decide(
    stored_tat_ns: Option<u64>,
    now_ns: u64,
    params: &GcraParams,
    weight: u64,
    op: Op,
) -> (Decision, Option<u64>) {
    let tat = stored_tat_ns.map_or(now_ns, |stored| stored.max(now_ns));
    let tol = params.tolerance_ns();
    let unit = params.increment_ns(1);
    // How far the bucket is from full, before this request.
    let backlog = tat - now_ns;
    let decision = |allowed: bool, backlog: u64, retry_after_ns: u64| Decision {
        allowed,
        limit: params.burst,
        remaining: remaining(params, tol, backlog, unit),
        reset_after_ns: backlog,
        retry_after_ns,
    };
    match op {
        Op::Check if weight == 0 => (decision(true, backlog, 0), None),
        Op::Check => {
            let new = tat.saturating_add(params.increment_ns(weight));
            let after = new - now_ns;
            if after <= tol {
                (decision(true, after, 0), Some(new))
            } else {
                // `after > tol`, so the wait is never zero.
                (decision(false, backlog, after - tol), None)
            }
        }
        Op::Peek => {
            let allowed = backlog < tol;
            let retry = if allowed { 0 } else { (backlog - tol).max(1) };
            (decision(allowed, backlog, retry), None)
        }
        Op::Debit => {
            let new = tat.saturating_add(params.increment_ns(weight));
            (decision(true, new - now_ns, 0), Some(new))
        }
        Op::Refund => {
            // `tat >= now_ns`, so the result is never before now: a refund
            // fills the bucket at most to full, and banks nothing beyond it.
            let new = tat.saturating_sub(params.increment_ns(weight)).max(now_ns);
            (decision(true, new - now_ns, 0), Some(new))
        }
    }
}

/// Whole units of weight 1 that fit into what is left of the tolerance.
fn remaining(params: &GcraParams, tol: u64, backlog: u64, unit: u64) -> u64 {
    // A refill faster than one unit per nanosecond cannot be counted in whole
    // nanoseconds; such a bucket is as good as full. Rounding `period / count`
    // down can also make more than `burst` units fit into the tolerance, which
    // the headers should never show.
    tol.saturating_sub(backlog).checked_div(unit).map_or(params.burst, |n| n.min(params.burst))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// 10 per second (one unit every 100 ms), bursts of 5: tolerance 500 ms.
    fn ten_per_sec() -> GcraParams {
        GcraParams::new(10, Duration::from_secs(1), 5).unwrap()
    }

    fn allowed(remaining: u64, reset_after_ns: u64) -> Decision {
        Decision { allowed: true, limit: 5, remaining, reset_after_ns, retry_after_ns: 0 }
    }

    fn refused(remaining: u64, reset_after_ns: u64, retry_after_ns: u64) -> Decision {
        Decision { allowed: false, limit: 5, remaining, reset_after_ns, retry_after_ns }
    }

    #[track_caller]
    fn check(stored: Option<u64>, now: u64, weight: u64, op: Op, want: Decision, store: Option<u64>) {
        assert_eq!(
            decide(stored, now, &ten_per_sec(), weight, op),
            (want, store),
            "stored {stored:?}, now {now}, weight {weight}, {op:?}"
        );
    }

    #[test]
    fn params_reject_zeros_and_saturate() {
        assert_eq!(GcraParams::new(0, Duration::from_secs(1), 1), Err(GcraError::ZeroCount));
        assert_eq!(GcraParams::new(1, Duration::ZERO, 1), Err(GcraError::ZeroPeriod));
        assert_eq!(GcraParams::new(1, Duration::from_secs(1), 0), Err(GcraError::ZeroBurst));
        let p = GcraParams::new(3, Duration::from_secs(1), 3).unwrap();
        assert_eq!((p.increment_ns(1), p.increment_ns(3), p.tolerance_ns()), (333_333_333, SEC, SEC));
        let forever = GcraParams::new(1, Duration::MAX, u64::MAX).unwrap();
        assert_eq!(
            (forever.period_ns, forever.increment_ns(2), forever.tolerance_ns()),
            (u64::MAX, u64::MAX, u64::MAX)
        );
        let zero = GcraParams { period_ns: 5, count: 0, burst: 1 };
        assert_eq!((zero.increment_ns(0), zero.increment_ns(1)), (0, u64::MAX));
    }

    #[test]
    fn check_allows_exactly_the_burst_then_one_per_interval() {
        let ms = 1_000_000;
        // An empty key at t=1s: five pass at one instant, the sixth waits 100 ms.
        check(None, SEC, 1, Op::Check, allowed(4, 100 * ms), Some(SEC + 100 * ms));
        check(Some(SEC + 400 * ms), SEC, 1, Op::Check, allowed(0, 500 * ms), Some(SEC + 500 * ms));
        check(Some(SEC + 500 * ms), SEC, 1, Op::Check, refused(0, 500 * ms, 100 * ms), None);
        // Refilled after exactly one interval, and not a nanosecond earlier.
        check(Some(SEC + 500 * ms), SEC + 100 * ms - 1, 1, Op::Check, refused(0, 400 * ms + 1, 1), None);
        check(Some(SEC + 500 * ms), SEC + 100 * ms, 1, Op::Check, allowed(0, 500 * ms), Some(SEC + 600 * ms));
        // A stale TAT counts from now: idle keys are full buckets.
        check(Some(3), SEC, 1, Op::Check, allowed(4, 100 * ms), Some(SEC + 100 * ms));
    }

    #[test]
    fn check_weights() {
        let ms = 1_000_000;
        check(None, 0, 5, Op::Check, allowed(0, 500 * ms), Some(500 * ms));
        check(None, 0, 3, Op::Check, allowed(2, 300 * ms), Some(300 * ms));
        // Three of five used: a weight of 3 waits until one more unit refills.
        check(Some(300 * ms), 0, 3, Op::Check, refused(2, 300 * ms, 100 * ms), None);
        check(Some(300 * ms), 0, 2, Op::Check, allowed(0, 500 * ms), Some(500 * ms));
        // More than the burst can never pass, not even on an empty key.
        check(None, 0, 6, Op::Check, refused(5, 0, 100 * ms), None);
        check(None, 0, u64::MAX, Op::Check, refused(5, 0, u64::MAX - 500 * ms), None);
        // Weight 0 is free, even on an exhausted key, and stores nothing.
        check(Some(900 * ms), 0, 0, Op::Check, allowed(0, 900 * ms), None);
        check(None, 0, 0, Op::Check, allowed(5, 0), None);
    }

    #[test]
    fn peek_and_debit() {
        let ms = 1_000_000;
        check(None, 0, 1, Op::Peek, allowed(5, 0), None);
        check(Some(499 * ms), 0, 1, Op::Peek, allowed(0, 499 * ms), None);
        check(Some(500 * ms), 0, 1, Op::Peek, refused(0, 500 * ms, 1), None);
        check(Some(800 * ms), 0, 1, Op::Peek, refused(0, 800 * ms, 300 * ms), None);
        // Debits are always taken, overdrawing the budget if need be.
        check(None, 0, 2, Op::Debit, allowed(3, 200 * ms), Some(200 * ms));
        check(Some(400 * ms), 0, 3, Op::Debit, allowed(0, 700 * ms), Some(700 * ms));
        check(Some(700 * ms), 100 * ms, 0, Op::Debit, allowed(0, 600 * ms), Some(700 * ms));
        check(Some(u64::MAX - 1), 0, 7, Op::Debit, allowed(0, u64::MAX), Some(u64::MAX));
    }

    #[test]
    fn refund_gives_back_at_most_a_full_bucket() {
        let ms = 1_000_000;
        // Three of five used: refunding two leaves one used.
        check(Some(300 * ms), 0, 2, Op::Refund, allowed(4, 100 * ms), Some(100 * ms));
        // Refunding more than is used fills the bucket, and no further.
        check(Some(300 * ms), 0, 9, Op::Refund, allowed(5, 0), Some(0));
        check(Some(300 * ms), 200 * ms, 2, Op::Refund, allowed(5, 0), Some(200 * ms));
        check(None, SEC, u64::MAX, Op::Refund, allowed(5, 0), Some(SEC));
        // An overdrawn budget is paid back from its debt first.
        check(Some(900 * ms), 0, 3, Op::Refund, allowed(0, 600 * ms), Some(600 * ms));
        let (refund, _) = decide(Some(900 * ms), 0, &ten_per_sec(), 5, Op::Refund);
        assert_eq!(refund, allowed(1, 400 * ms));
    }

    #[test]
    fn extreme_values_never_panic() {
        let params = [
            GcraParams { period_ns: 0, count: 0, burst: 0 },
            GcraParams { period_ns: 1, count: u64::MAX, burst: 1 },
            GcraParams { period_ns: u64::MAX, count: 1, burst: u64::MAX },
            GcraParams { period_ns: u64::MAX, count: u64::MAX, burst: u64::MAX },
            GcraParams { period_ns: 7, count: 3, burst: 0 },
        ];
        let values = [0, 1, 2, 1 << 32, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        for p in &params {
            for op in [Op::Check, Op::Peek, Op::Debit, Op::Refund] {
                for &stored in &values {
                    for &now in &values {
                        for &weight in &values {
                            let (d, store) = decide(Some(stored), now, p, weight, op);
                            assert!(d.allowed || d.retry_after_ns > 0, "{p:?} {op:?} {stored} {now} {weight}");
                            assert!(d.remaining <= p.burst);
                            assert!(store.is_none_or(|t| t >= now));
                        }
                    }
                }
            }
        }
        // A rate faster than a unit per nanosecond reports a full bucket.
        let fast = GcraParams::new(1_000, Duration::from_nanos(1), 10).unwrap();
        let (d, store) = decide(None, 5, &fast, 10, Op::Check);
        assert_eq!((d.allowed, d.remaining, store), (true, 10, Some(5)));
    }

    /// xorshift64*: enough randomness for a model test, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The naive model: a bucket that holds `level` nanoseconds of backlog and
    /// drains by one every nanosecond, simulated tick by tick, in wide
    /// arithmetic and without the TAT trick.
    struct Bucket {
        level: u128,
        now: u64,
    }

    impl Bucket {
        fn advance(&mut self, to: u64) {
            while self.now < to {
                self.now += 1;
                self.level = self.level.saturating_sub(1);
            }
        }

        fn apply(&mut self, p: &GcraParams, weight: u64, op: Op) -> Decision {
            let unit = u128::from(p.period_ns) / u128::from(p.count);
            let cost = u128::from(weight) * u128::from(p.period_ns) / u128::from(p.count);
            let tol = u128::from(p.burst) * u128::from(p.period_ns) / u128::from(p.count);
            let left = |level: u128| (tol.saturating_sub(level) / unit).min(u128::from(p.burst)) as u64;
            let (allowed, level_after, retry) = match op {
                Op::Check if weight == 0 => (true, self.level, 0),
                Op::Check if self.level + cost <= tol => (true, self.level + cost, 0),
                Op::Check => (false, self.level, self.level + cost - tol),
                Op::Peek if self.level < tol => (true, self.level, 0),
                Op::Peek => (false, self.level, (self.level - tol).max(1)),
                Op::Debit => (true, self.level + cost, 0),
                Op::Refund => (true, self.level.saturating_sub(cost), 0),
            };
            if allowed && op != Op::Peek {
                self.level = level_after;
            }
            Decision {
                allowed,
                limit: p.burst,
                remaining: left(level_after),
                reset_after_ns: level_after as u64,
                retry_after_ns: retry as u64,
            }
        }
    }

    #[test]
    fn matches_a_naive_bucket_on_random_sequences() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let p = GcraParams { period_ns: 1 + rng.below(120), count: 1 + rng.below(12), burst: 1 + rng.below(8) };
            if p.increment_ns(1) == 0 {
                continue;
            }
            let mut model = Bucket { level: 0, now: 0 };
            let mut tat: Option<u64> = None;
            let mut now = 0;
            // (time, weight) of every allowed Check, for the conformance bound below.
            let mut passed: Vec<(u64, u64)> = Vec::new();
            for step in 0..400 {
                now += if rng.below(4) == 0 { 0 } else { rng.below(3 * p.period_ns / p.count + 2) };
                let weight = [0, 1, 1, 1, 2, 3, p.burst, p.burst + 1][rng.below(8) as usize];
                let op = [Op::Check, Op::Check, Op::Check, Op::Peek, Op::Debit, Op::Refund][rng.below(6) as usize];
                model.advance(now);
                let want = model.apply(&p, weight, op);
                let (got, store) = decide(tat, now, &p, weight, op);
                assert_eq!(got, want, "round {round}, step {step}: {p:?}, now {now}, weight {weight}, {op:?}");
                if let Some(t) = store {
                    tat = Some(t);
                }
                if op == Op::Check && weight > p.burst {
                    assert!(!got.allowed, "{p:?}: weight {weight} passed");
                }
                if matches!(op, Op::Debit | Op::Refund) {
                    passed.clear();
                } else if op == Op::Check && got.allowed {
                    passed.push((now, weight));
                    // GCRA's guarantee: since the last debit, the weight let
                    // through in any window [a, now] is at most
                    // burst + (now - a) / T, when T divides the period exactly.
                    if p.increment_ns(1) * p.count == p.period_ns {
                        let unit = p.increment_ns(1);
                        let mut total = 0;
                        for &(a, w) in passed.iter().rev() {
                            total += w;
                            assert!(total <= p.burst + (now - a) / unit, "{p:?}: {total} units in [{a}, {now}]");
                        }
                    }
                }
            }
        }
    }
}
