//! `[identity.api_keys]`: the API keys the identity service makes and the
//! bearer layer accepts (see [`crate::api_key`] for their format).
//!
//! ```toml
//! [identity.api_keys]
//! prefix = "rpk"               # keys look like rpk_<32 base62>_<6 base62>
//! rotation_grace = "24h"       # how long a rotated key keeps working by default
//! max_rotation_grace = "30d"   # the most a rotation request may ask for
//! cache_ttl = "60s"            # how long a looked-up key is trusted from memory
//! usage_flush = "10s"          # how often last-use times and counts are written
//! ```
//!
//! The request header they come in is `[auth] api_key_header` (default
//! `X-API-Key`); `Authorization: ApiKey …` works too.

use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;

/// `[identity.api_keys]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Accept API keys at all.
    pub enabled: bool,
    /// The first part of every new key: 1–16 of `[a-z0-9]`, starting with a letter.
    pub prefix: String,
    /// How long a rotated key keeps working when the request names no grace.
    #[serde(with = "humantime_serde")]
    pub rotation_grace: Duration,
    /// The longest grace a rotation may ask for.
    #[serde(with = "humantime_serde")]
    pub max_rotation_grace: Duration,
    /// How long a key looked up in the database is trusted from memory. Revocations
    /// and rotations reach every instance sooner (within the 2 s poll); this
    /// bounds how long a change of the owner (roles, disabled) takes.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// How often usage (last-use time and counts) is written to the database.
    #[serde(with = "humantime_serde")]
    pub usage_flush: Duration,
    /// The scopes a user may put on their own keys over HTTP. Routes grant
    /// by scope (`authorize = { scopes_all = [...] }`), so a scope a user
    /// could give themselves would grant whatever they chose. Users holding
    /// `admin`, operators (`rampart api-key create`) and service clients'
    /// keys are not limited by it.
    pub user_scopes: Vec<String>,
    /// The most live (neither revoked nor expired) keys a user may hold when
    /// making one over HTTP; operators and admins making keys for others are
    /// not limited by it.
    pub max_per_user: u32,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "rpk".into(),
            rotation_grace: Duration::from_secs(86_400),
            max_rotation_grace: Duration::from_secs(30 * 86_400),
            cache_ttl: Duration::from_secs(60),
            usage_flush: Duration::from_secs(10),
            user_scopes: Vec::new(),
            max_per_user: 100,
        }
    }
}

/// `[identity.api_keys]`, checked.
#[derive(Clone, Debug)]
pub struct ApiKeySettings {
    pub enabled: bool,
    pub prefix: String,
    pub rotation_grace: Duration,
    pub max_rotation_grace: Duration,
    pub cache_ttl: Duration,
    pub usage_flush: Duration,
    pub user_scopes: Vec<String>,
    pub max_per_user: u32,
}

impl Default for ApiKeySettings {
    fn default() -> Self {
        let c = ApiKeysConfig::default();
        Self {
            enabled: c.enabled,
            prefix: c.prefix,
            rotation_grace: c.rotation_grace,
            max_rotation_grace: c.max_rotation_grace,
            cache_ttl: c.cache_ttl,
            usage_flush: c.usage_flush,
            user_scopes: c.user_scopes,
            max_per_user: c.max_per_user,
        }
    }
}

pub(super) fn compile_api_keys(
    cfg: &ApiKeysConfig,
    at: &ConfigPath,
    errs: &mut Vec<(ConfigPath, String)>,
) -> Option<ApiKeySettings> {
    let before = errs.len();
    if !crate::api_key::valid_prefix(&cfg.prefix) {
        errs.push((at.push_key("prefix"), "must be 1 to 16 of a-z and 0-9, starting with a letter".into()));
    }
    if cfg.rotation_grace > cfg.max_rotation_grace {
        errs.push((at.push_key("rotation_grace"), "must be at most max_rotation_grace".into()));
    }
    if cfg.cache_ttl < Duration::from_secs(1) || cfg.cache_ttl > Duration::from_secs(3600) {
        errs.push((at.push_key("cache_ttl"), "must be between 1s and 1h".into()));
    }
    if cfg.max_per_user == 0 || cfg.max_per_user > 10_000 {
        errs.push((at.push_key("max_per_user"), "must be between 1 and 10000".into()));
    }
    if cfg.usage_flush < Duration::from_millis(100) || cfg.usage_flush > Duration::from_secs(3600) {
        errs.push((at.push_key("usage_flush"), "must be between 100ms and 1h".into()));
    }
    for (i, scope) in cfg.user_scopes.iter().enumerate() {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errs.push((at.push_key("user_scopes").push_index(i), "a scope is one word without spaces".into()));
        } else if scope == "admin" {
            errs.push((
                at.push_key("user_scopes").push_index(i),
                "`admin` opens the admin API: only users holding the admin role may put it on their keys".into(),
            ));
        }
    }
    (errs.len() == before).then(|| ApiKeySettings {
        enabled: cfg.enabled,
        prefix: cfg.prefix.clone(),
        rotation_grace: cfg.rotation_grace,
        max_rotation_grace: cfg.max_rotation_grace,
        cache_ttl: cfg.cache_ttl,
        usage_flush: cfg.usage_flush,
        user_scopes: cfg.user_scopes.clone(),
        max_per_user: cfg.max_per_user,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_values_are_named() {
        let mut errs = Vec::new();
        let at = ConfigPath::parse("identity.api_keys");
        assert!(compile_api_keys(&ApiKeysConfig::default(), &at, &mut errs).is_some());
        let bad = ApiKeysConfig {
            prefix: "Rpk_".into(),
            rotation_grace: Duration::from_secs(86_400 * 365),
            cache_ttl: Duration::ZERO,
            usage_flush: Duration::ZERO,
            max_per_user: 0,
            ..Default::default()
        };
        assert!(compile_api_keys(&bad, &at, &mut errs).is_none());
        assert_eq!(errs.len(), 5);
        let scopes = |list: &[&str]| ApiKeysConfig {
            user_scopes: list.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut errs = Vec::new();
        assert!(compile_api_keys(&scopes(&["read", "orders:write"]), &at, &mut errs).is_some());
        for bad in [&["admin"][..], &["read write"], &[""]] {
            assert!(compile_api_keys(&scopes(bad), &at, &mut errs).is_none(), "{bad:?}");
        }
        assert_eq!(errs.len(), 3);
        assert!(errs[0].0.to_string().contains("user_scopes[0]") && errs[0].1.contains("admin"), "{errs:?}");
    }
}
