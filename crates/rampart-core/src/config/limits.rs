//! Rate limits and budgets, compiled: parsing `60/min` and `5.00/day`, resolving
//! named limits, tiers and keys.
//!
//! ```
//! use rampart_core::config::limits::{parse_rate, parse_budget};
//! assert_eq!(parse_rate("60/min").unwrap(), (60, std::time::Duration::from_secs(60)));
//! assert_eq!(parse_rate("10/30s").unwrap(), (10, std::time::Duration::from_secs(30)));
//! assert_eq!(parse_budget("5.00/day").unwrap(), (5_000_000, std::time::Duration::from_secs(86_400)));
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::model::{KeyBy, LimitConfig, RedisFallback};
use crate::gcra::GcraParams;

/// Budgets count in millionths of the unit (`0.000001` is the smallest cost).
pub const BUDGET_SCALE: u64 = 1_000_000;

/// One part of what a limit counts per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyPart {
    Ip,
    User,
    ApiKey,
    Route,
    Tier,
    Global,
}

impl KeyPart {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ip" => Self::Ip,
            "user" => Self::User,
            "api_key" => Self::ApiKey,
            "route" => Self::Route,
            "tier" => Self::Tier,
            "global" => Self::Global,
            other => return Err(format!("`{other}` is not a key; use ip, user, api_key, route, tier or global")),
        })
    }

    /// True for parts only an authenticated request has.
    pub fn needs_principal(self) -> bool {
        matches!(self, Self::User | Self::ApiKey | Self::Tier)
    }
}

/// A rate limit or a budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Checked before the request; costs the route's weight.
    Rate,
    /// Checked before the request, debited after the response by the cost the
    /// upstream reports in `cost_header`. With a `reserve` (micro-units), each
    /// request holds that much of the budget while it runs, settled against its
    /// cost after the response; with none, a request only needs something left.
    Budget { cost_header: HeaderName, reserve: u64 },
}

/// One compiled limit. Shared (`Arc`) by every route that names it, so a named
/// limit is one allowance.
#[derive(Clone, Debug, PartialEq)]
pub struct CompiledLimit {
    /// Unique among limits; part of every storage key, so two limits never share one.
    pub name: Arc<str>,
    pub key_parts: Vec<KeyPart>,
    pub kind: LimitKind,
    pub params: GcraParams,
    /// Per-tier parameters, overriding `params` for principals of that tier.
    pub tiers: Vec<(String, GcraParams)>,
    pub on_redis_down: RedisFallback,
    /// The quota and window shown in `RateLimit-Policy` (from the base rate).
    pub quota: u64,
    pub window_secs: u64,
}

impl CompiledLimit {
    /// The parameters for a principal's tier.
    pub fn params_for(&self, tier: Option<&str>) -> &GcraParams {
        tier.and_then(|t| self.tiers.iter().find(|(name, _)| name == t)).map_or(&self.params, |(_, p)| p)
    }

    pub fn needs_principal(&self) -> bool {
        self.key_parts.iter().any(|k| k.needs_principal())
    }

    pub fn is_budget(&self) -> bool {
        matches!(self.kind, LimitKind::Budget { .. })
    }

    /// Whether the limit counts per caller (by address, user or API key).
    /// Only a refusal by such a limit says something about the caller: one
    /// shared with others (`global`, `route`, `tier` alone) is emptied by
    /// everyone, and must not count against whoever it happens to refuse.
    pub fn is_per_client(&self) -> bool {
        self.key_parts.iter().any(|k| matches!(k, KeyPart::Ip | KeyPart::User | KeyPart::ApiKey))
    }

    /// A global budget (counted for everyone) is a capacity problem of the
    /// service, not the caller's fault: refused with 503 rather than 429.
    pub fn is_global_budget(&self) -> bool {
        self.is_budget() && self.key_parts == [KeyPart::Global]
    }
}

fn parse_unit(unit: &str) -> Result<Duration, String> {
    let secs = match unit {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        other => {
            return humantime::parse_duration(other)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("`{other}` is not a period; use s, min, h, day or a duration like 30s"))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// `N/unit` → (N, period).
pub fn parse_rate(s: &str) -> Result<(u64, Duration), String> {
    let (n, unit) = s.split_once('/').ok_or_else(|| format!("`{s}` is not a rate like `60/min`"))?;
    let n: u64 = n.trim().parse().map_err(|_| format!("`{s}`: the count must be a whole number"))?;
    if n == 0 {
        return Err(format!("`{s}`: the count must be at least 1"));
    }
    Ok((n, parse_unit(unit.trim())?))
}

/// `5.00/day` → (5_000_000 micro-units, period).
pub fn parse_budget(s: &str) -> Result<(u64, Duration), String> {
    let (amount, unit) = s.split_once('/').ok_or_else(|| format!("`{s}` is not a budget like `5.00/day`"))?;
    let micro = parse_amount(amount.trim()).ok_or_else(|| format!("`{s}`: the amount must be a positive decimal"))?;
    if micro == 0 {
        return Err(format!("`{s}`: the amount must be larger than zero"));
    }
    Ok((micro, parse_unit(unit.trim())?))
}

/// A non-negative decimal (`0.0123`, `12`, `3.5`) in millionths, exactly (no
/// floating point), or `None` when malformed, negative or absurdly large.
/// Digits past the sixth round up: a cost of `0.0000001` is one millionth,
/// not nothing, so tiny per-request costs still add up.
pub fn parse_amount(s: &str) -> Option<u64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || int.len() > 12 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut micro = int.checked_mul(BUDGET_SCALE)?;
    for (i, d) in frac.bytes().take(6).enumerate() {
        micro += u64::from(d - b'0') * 10u64.pow(5 - i as u32);
    }
    if frac.bytes().skip(6).any(|d| d != b'0') {
        micro = micro.checked_add(1)?;
    }
    Some(micro)
}

/// Micro-units as the decimal a config would write: `0.05`, `12`.
fn amount_text(micro: u64) -> String {
    let (int, frac) = (micro / BUDGET_SCALE, micro % BUDGET_SCALE);
    if frac == 0 {
        return int.to_string();
    }
    format!("{int}.{frac:06}").trim_end_matches('0').to_string()
}

fn params(count: u64, period: Duration, burst: u64) -> Result<GcraParams, String> {
    GcraParams::new(count, period, burst).map_err(|e| e.to_string())
}

/// Compiles one limit config. `name` must be unique among all limits.
pub fn compile_limit(
    name: &str,
    cfg: &LimitConfig,
    default_fallback: RedisFallback,
    default_cost_header: &str,
) -> Result<CompiledLimit, String> {
    let parts: Vec<String> = match &cfg.by {
        KeyBy::One(s) => vec![s.clone()],
        KeyBy::Many(v) => v.clone(),
    };
    if parts.is_empty() {
        return Err("`by` needs at least one of ip, user, api_key, route, tier, global".into());
    }
    let mut key_parts = Vec::new();
    for p in &parts {
        let k = KeyPart::parse(p)?;
        if !key_parts.contains(&k) {
            key_parts.push(k);
        }
    }
    if key_parts.contains(&KeyPart::Global) && key_parts.len() > 1 {
        return Err("`global` counts for everyone and cannot be combined with other keys".into());
    }
    let (kind, count, period, burst) = match (&cfg.rate, &cfg.budget) {
        (Some(rate), None) => {
            if cfg.reserve.is_some() {
                return Err("`reserve` applies to budgets; a rate's request costs its route's `weight`".into());
            }
            let (n, period) = parse_rate(rate)?;
            let burst = cfg.burst.unwrap_or(n);
            if burst == 0 {
                return Err("`burst` must be at least 1".into());
            }
            (LimitKind::Rate, n, period, burst)
        }
        (None, Some(budget)) => {
            if cfg.burst.is_some() {
                return Err("`burst` applies to rates; a budget's whole amount is its burst".into());
            }
            let header = cfg.cost_header.as_deref().unwrap_or(default_cost_header);
            let cost_header = HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`{header}` is not a header name"))?;
            let (micro, period) = parse_budget(budget)?;
            let reserve = match cfg.reserve.as_deref() {
                None => 0,
                Some(r) => parse_amount(r.trim())
                    .ok_or_else(|| format!("`reserve = \"{r}\"`: the amount must be a non-negative decimal"))?,
            };
            (LimitKind::Budget { cost_header, reserve }, micro, period, micro)
        }
        (Some(_), Some(_)) => return Err("set either `rate` or `budget`, not both".into()),
        (None, None) => return Err("a limit needs a `rate` (e.g. \"60/min\") or a `budget` (e.g. \"5.00/day\")".into()),
    };
    let base = params(count, period, burst)?;
    let mut tiers = Vec::new();
    for (tier, factor) in cfg.tiers.iter().flatten() {
        if !(factor.is_finite() && *factor > 0.0) {
            return Err(format!("tier `{tier}`: the multiplier must be a positive number"));
        }
        let scale = |v: u64| ((v as f64 * factor).round() as u64).max(1);
        tiers.push((tier.clone(), params(scale(count), period, scale(burst))?));
    }
    for (tier, spec) in cfg.tier_rates.iter().flatten() {
        if tiers.iter().any(|(t, _)| t == tier) {
            return Err(format!("tier `{tier}` is in both `tiers` and `tier_rates`"));
        }
        let p = match kind {
            LimitKind::Rate => {
                let (n, per) = parse_rate(spec)?;
                params(n, per, n)?
            }
            LimitKind::Budget { .. } => {
                let (m, per) = parse_budget(spec)?;
                params(m, per, m)?
            }
        };
        tiers.push((tier.clone(), p));
    }
    if let LimitKind::Budget { reserve, .. } = kind {
        // A reservation larger than the budget could never be held.
        let smallest = tiers.iter().map(|(_, p)| p.burst).fold(base.burst, u64::min);
        if reserve > smallest {
            return Err(format!(
                "`reserve` ({}) is larger than the budget ({}){}: no request could ever pass",
                amount_text(reserve),
                amount_text(smallest),
                if smallest < base.burst { " of a tier" } else { "" }
            ));
        }
    }
    Ok(CompiledLimit {
        name: Arc::from(name),
        key_parts,
        kind,
        params: base,
        tiers,
        on_redis_down: cfg.on_redis_down.unwrap_or(default_fallback),
        quota: if cfg.budget.is_some() { count / BUDGET_SCALE } else { count },
        window_secs: period.as_secs().max(1),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[track_caller]
    fn amount(s: &str, want: Option<u64>) {
        assert_eq!(parse_amount(s), want, "{s}");
    }

    #[test]
    fn amounts_are_exact_decimals() {
        amount("5.00", Some(5_000_000));
        amount("0.0123", Some(12_300));
        amount("12", Some(12_000_000));
        amount(".5", Some(500_000));
        amount("1.1234567", Some(1_123_457));
        amount("1.1234560000", Some(1_123_456));
        amount("0.0000001", Some(1));
        amount("0.000000000000000000001", Some(1));
        amount("-1", None);
        amount("1e3", None);
        amount("", None);
        amount(".", None);
        amount("1.2.3", None);
        amount("99999999999999999999", None);
        amount(" 1", None);
    }

    #[test]
    fn rates_and_errors() {
        assert_eq!(parse_rate("5/s").unwrap(), (5, Duration::from_secs(1)));
        assert_eq!(parse_rate("100/hour").unwrap(), (100, Duration::from_secs(3600)));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5").is_err());
        assert!(parse_rate("5/fortnight").is_err());
        assert!(parse_rate("x/s").is_err());
    }

    fn cfg(by: &[&str], rate: Option<&str>, budget: Option<&str>) -> LimitConfig {
        LimitConfig {
            by: KeyBy::Many(by.iter().map(|s| s.to_string()).collect()),
            rate: rate.map(String::from),
            budget: budget.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn compiles_tiers_and_kinds() {
        let mut c = cfg(&["user"], Some("60/min"), None);
        c.burst = Some(10);
        c.tiers = Some([("pro".to_string(), 5.0)].into());
        c.tier_rates = Some([("free".to_string(), "10/min".to_string())].into());
        let l = compile_limit("api", &c, RedisFallback::Local, "x-cost").unwrap();
        assert!(l.needs_principal());
        assert_eq!(l.params.burst, 10);
        assert_eq!(l.params_for(Some("pro")).burst, 50);
        assert_eq!(l.params_for(Some("pro")).count, 300);
        assert_eq!(l.params_for(Some("free")).count, 10);
        assert_eq!(l.params_for(Some("unknown")), &l.params);
        assert_eq!(l.params_for(None), &l.params);

        let b = compile_limit("spend", &cfg(&["global"], None, Some("100.00/hour")), RedisFallback::Refuse, "x-cost")
            .unwrap();
        assert!(b.is_global_budget());
        assert_eq!(b.on_redis_down, RedisFallback::Refuse);
        assert_eq!(b.kind, LimitKind::Budget { cost_header: HeaderName::from_static("x-cost"), reserve: 0 });

        let mut r = cfg(&["user"], None, Some("5.00/day"));
        r.reserve = Some("0.25".into());
        r.tier_rates = Some([("free".to_string(), "0.25/day".to_string())].into());
        let r = compile_limit("spend", &r, RedisFallback::Local, "x-cost").unwrap();
        assert_eq!(r.kind, LimitKind::Budget { cost_header: HeaderName::from_static("x-cost"), reserve: 250_000 });
    }

    #[test]
    fn reserves_must_fit_every_budget() {
        let with = |budget: &str, reserve: &str, tiers: Option<(&str, f64)>| {
            let mut c = cfg(&["user"], None, Some(budget));
            c.reserve = Some(reserve.into());
            c.tiers = tiers.map(|(t, f)| [(t.to_string(), f)].into());
            compile_limit("spend", &c, RedisFallback::Local, "x-cost")
        };
        assert!(with("1.00/day", "1", None).is_ok());
        assert!(with("1.00/day", "0", None).is_ok());
        let err = with("1.00/day", "1.5", None).unwrap_err();
        assert!(err.contains("(1.5) is larger than the budget (1)"), "{err}");
        let err = with("1.00/day", "0.6", Some(("free", 0.5))).unwrap_err();
        assert!(err.contains("(0.6) is larger than the budget (0.5) of a tier"), "{err}");
        for bad in ["-1", "x", "1.2.3", ""] {
            let err = with("1.00/day", bad, None).unwrap_err();
            assert!(err.contains("non-negative decimal"), "{bad}: {err}");
        }
        let mut rate = cfg(&["ip"], Some("5/s"), None);
        rate.reserve = Some("1".into());
        let err = compile_limit("r", &rate, RedisFallback::Local, "x-cost").unwrap_err();
        assert!(err.contains("applies to budgets"), "{err}");
    }

    #[test]
    fn refuses_nonsense() {
        for (c, why) in [
            (cfg(&["ip"], None, None), "needs a `rate`"),
            (cfg(&["ip"], Some("1/s"), Some("1/day")), "not both"),
            (cfg(&["global", "ip"], Some("1/s"), None), "cannot be combined"),
            (cfg(&["planet"], Some("1/s"), None), "not a key"),
            (cfg(&[], Some("1/s"), None), "at least one"),
        ] {
            let err = compile_limit("x", &c, RedisFallback::Local, "x-cost").unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let mut c = cfg(&["ip"], Some("1/s"), None);
        c.tiers = Some([("pro".to_string(), -1.0)].into());
        assert!(compile_limit("x", &c, RedisFallback::Local, "x-cost").is_err());
    }
}
