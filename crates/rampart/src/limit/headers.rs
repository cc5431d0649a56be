//! Rate-limit response headers: the IETF httpapi draft's `RateLimit-Policy` and
//! `RateLimit` (structured fields), and the widespread `X-RateLimit-Limit`,
//! `-Remaining`, `-Reset`, on allowed and refused responses alike.
//!
//! `RateLimit-Policy` lists every limit that applied (`"name";q=quota;w=window`);
//! `RateLimit` and the `X-` headers describe the most restrictive one, the limit
//! with the fewest requests remaining.
//!
//! ```
//! use rampart::limit::headers::{LimitOutcome, set_headers};
//! let mut h = http::HeaderMap::new();
//! set_headers(&mut h, &[LimitOutcome { name: "api", quota: 60, window_secs: 60, remaining: 59, reset_secs: 1 }]);
//! assert_eq!(h["ratelimit-policy"], "\"api\";q=60;w=60");
//! assert_eq!(h["ratelimit"], "\"api\";r=59;t=1");
//! assert_eq!(h["x-ratelimit-remaining"], "59");
//! ```

use std::fmt::Write as _;

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// One limit's state after a decision, in header units.
#[derive(Clone, Copy, Debug)]
pub struct LimitOutcome<'a> {
    pub name: &'a str,
    pub quota: u64,
    pub window_secs: u64,
    pub remaining: u64,
    pub reset_secs: u64,
}

/// Seconds, rounded up, from nanoseconds.
pub fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// Sets all rate-limit headers for `outcomes` (nothing when empty).
pub fn set_headers(h: &mut HeaderMap, outcomes: &[LimitOutcome<'_>]) {
    let Some(tightest) = outcomes.iter().min_by_key(|o| o.remaining) else {
        return;
    };
    let mut policy = String::with_capacity(48 * outcomes.len());
    for (i, o) in outcomes.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
        }
        push_sf_string(&mut policy, o.name);
        let _ = write!(policy, ";q={};w={}", o.quota, o.window_secs);
    }
    let mut state = String::with_capacity(48);
    push_sf_string(&mut state, tightest.name);
    let _ = write!(state, ";r={};t={}", tightest.remaining, tightest.reset_secs);
    if let Ok(v) = HeaderValue::from_str(&policy) {
        h.insert(RATELIMIT_POLICY, v);
    }
    if let Ok(v) = HeaderValue::from_str(&state) {
        h.insert(RATELIMIT, v);
    }
    h.insert(X_RATELIMIT_LIMIT, HeaderValue::from(tightest.quota));
    h.insert(X_RATELIMIT_REMAINING, HeaderValue::from(tightest.remaining));
    h.insert(X_RATELIMIT_RESET, HeaderValue::from(tightest.reset_secs));
}

/// Appends `s` as a structured-field string (RFC 8941 §3.3.3): quoted, `"` and
/// `\` escaped, characters outside printable ASCII dropped.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_is_reported() {
        let mut h = HeaderMap::new();
        set_headers(
            &mut h,
            &[
                LimitOutcome { name: "per-ip", quota: 100, window_secs: 60, remaining: 40, reset_secs: 36 },
                LimitOutcome { name: "a\"b", quota: 5, window_secs: 1, remaining: 2, reset_secs: 1 },
            ],
        );
        assert_eq!(h["ratelimit-policy"], "\"per-ip\";q=100;w=60, \"a\\\"b\";q=5;w=1");
        assert_eq!(h["ratelimit"], "\"a\\\"b\";r=2;t=1");
        assert_eq!(h["x-ratelimit-limit"], "5");
        assert_eq!(h["x-ratelimit-reset"], "1");
        assert_eq!(ceil_secs(1), 1);
        assert_eq!(ceil_secs(2_000_000_000), 2);
    }
}
