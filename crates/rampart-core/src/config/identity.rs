//! `[identity]`: the gateway's own identity API (register, the OAuth2 token
//! endpoint, logout, JWKS and OpenID discovery), off unless `enabled`.
//!
//! ```toml
//! [identity]
//! enabled = true
//! issuer = "https://api.example.com"      # `iss` of the tokens Rampart issues
//! secret_key_file = "/run/secrets/rampart_key"   # ≥ 32 bytes: seals signing keys
//! registration = true                     # open sign-up at POST /auth/register
//! ```
//!
//! Password reset (`[identity.reset]`, `[identity.notifier]`) is in [`super::reset`].

use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;
use super::reset::{compile_reset, NotifierConfig, ResetConfig, ResetSettings};
use super::secret::Secret;
use crate::password::config::PasswordConfig;
use crate::password::{Argon2Params, PasswordPolicy};

/// Shortest `secret_key`, in bytes.
pub const MIN_SECRET_KEY_BYTES: usize = 32;

/// `[identity]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub enabled: bool,
    /// Path prefix of the identity API.
    pub prefix: String,
    /// The `iss` of issued tokens (a URL that names this deployment).
    pub issuer: String,
    /// The `aud` of issued tokens.
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    /// A refresh token presented again this soon after its use (two tabs, a
    /// retry) gets the same successor instead of revoking its family.
    #[serde(with = "humantime_serde")]
    pub refresh_grace: Duration,
    /// Seals the private signing keys in the database and derives refresh
    /// successors. At least 32 bytes; use `secret_key_file`.
    pub secret_key: Secret,
    /// Open registration at `POST {prefix}/register`.
    pub registration: bool,
    /// Password hashes computed at once (0: one per CPU core).
    pub hash_workers: usize,
    /// Logins waiting for a hashing worker; more are refused with 503.
    pub hash_queue: usize,
    /// Wrong passwords for one account within `failure_window` before it is
    /// locked for `lockout` (0: never locked). Counted in Redis when configured.
    pub max_failures: u64,
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    #[serde(with = "humantime_serde")]
    pub lockout: Duration,
    pub password: PasswordConfig,
    /// Password reset by a token the notifier delivers.
    pub reset: ResetConfig,
    pub notifier: Option<NotifierConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: "/auth".into(),
            issuer: String::new(),
            audience: "api".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            refresh_grace: Duration::from_secs(10),
            secret_key: Secret::default(),
            registration: false,
            hash_workers: 0,
            hash_queue: 64,
            max_failures: 5,
            failure_window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            password: PasswordConfig::default(),
            reset: ResetConfig::default(),
            notifier: None,
        }
    }
}

/// `[identity]`, checked.
#[derive(Clone, Debug)]
pub struct IdentitySettings {
    pub prefix: String,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_grace: Duration,
    pub secret_key: Secret,
    pub registration: bool,
    pub hash_workers: usize,
    pub hash_queue: usize,
    pub max_failures: u64,
    pub failure_window: Duration,
    pub lockout: Duration,
    pub policy: PasswordPolicy,
    pub argon2: Argon2Params,
    /// `None`: password reset is off.
    pub reset: Option<ResetSettings>,
}

pub(super) fn compile_identity(cfg: &IdentityConfig, errs: &mut Vec<(ConfigPath, String)>) -> Option<IdentitySettings> {
    if !cfg.enabled {
        return None;
    }
    let at = ConfigPath::parse("identity");
    let before = errs.len();
    if !cfg.prefix.starts_with('/')
        || cfg.prefix.len() < 2
        || cfg.prefix.ends_with('/')
        || cfg.prefix.contains(['?', '#', '*'])
    {
        errs.push((at.push_key("prefix"), "must be a path like `/auth`".into()));
    }
    if cfg.issuer.is_empty() {
        errs.push((
            at.push_key("issuer"),
            "names this deployment in issued tokens, e.g. `https://api.example.com`".into(),
        ));
    }
    if cfg.audience.is_empty() {
        errs.push((at.push_key("audience"), "must not be empty".into()));
    }
    if cfg.secret_key.expose().len() < MIN_SECRET_KEY_BYTES {
        errs.push((
            at.push_key("secret_key"),
            format!("must be at least {MIN_SECRET_KEY_BYTES} bytes (set secret_key_file to a file of random bytes)"),
        ));
    }
    if cfg.access_ttl < Duration::from_secs(30) || cfg.access_ttl > Duration::from_secs(86_400) {
        errs.push((at.push_key("access_ttl"), "must be between 30s and 24h".into()));
    }
    if cfg.refresh_ttl <= cfg.access_ttl {
        errs.push((at.push_key("refresh_ttl"), "must be longer than access_ttl".into()));
    }
    if cfg.max_failures > 0 && (cfg.failure_window.is_zero() || cfg.lockout.is_zero()) {
        errs.push((at.push_key("lockout"), "failure_window and lockout must be longer than zero".into()));
    }
    if cfg.refresh_grace > Duration::from_secs(60) {
        errs.push((at.push_key("refresh_grace"), "must be at most 60s".into()));
    }
    let compiled = match cfg.password.compile() {
        Ok(c) => Some(c),
        Err(problems) => {
            for p in problems {
                errs.push((at.push_key("password").push_key(p.field), p.message));
            }
            None
        }
    };
    let reset = compile_reset(&cfg.reset, cfg.notifier.as_ref(), &at, errs);
    if errs.len() > before {
        return None;
    }
    let (policy, argon2) = compiled?;
    Some(IdentitySettings {
        prefix: cfg.prefix.clone(),
        issuer: cfg.issuer.clone(),
        audience: cfg.audience.clone(),
        access_ttl: cfg.access_ttl,
        refresh_ttl: cfg.refresh_ttl,
        refresh_grace: cfg.refresh_grace,
        secret_key: cfg.secret_key.clone(),
        registration: cfg.registration,
        hash_workers: cfg.hash_workers,
        hash_queue: cfg.hash_queue,
        max_failures: cfg.max_failures,
        failure_window: cfg.failure_window,
        lockout: cfg.lockout,
        policy,
        argon2,
        reset,
    })
}
