//! `[identity]`: the gateway's own identity API (register, the OAuth2 token
//! endpoint, logout, JWKS and OpenID discovery), off unless `enabled`.
//!
//! ```toml
//! [identity]
//! enabled = true
//! issuer = "https://api.example.com"      # `iss` of the tokens Rampart issues
//! secret_key_file = "/run/secrets/rampart_key"   # ≥ 32 bytes: seals signing keys
//! registration = true                     # open sign-up at POST /auth/register
//! algorithm = "EdDSA"                     # or ES256; RS256 with signing_key_file; HS256 with hs256_secret_file
//! ```
//!
//! Password reset (`[identity.reset]`, `[identity.notifier]`) is in [`super::reset`];
//! external OpenID Connect logins (`[identity.oidc.<name>]`, `public_url`) in
//! [`super::oidc`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::env::ConfigPath;
use super::oidc::{compile_oidc, compile_public_url, OidcProviderConfig, OidcProviderSettings};
use super::pages::{compile_pages, PagesConfig, PagesSettings};
use super::reset::{compile_reset, NotifierConfig, ResetConfig, ResetSettings};
use super::secret::Secret;
use super::sessions::{compile_sessions, SessionSettings, SessionsConfig};
use super::webauthn::{compile_webauthn, WebauthnConfig, WebauthnSettings};
use crate::password::config::PasswordConfig;
use crate::password::{Argon2Params, PasswordPolicy};
use crate::token::{Alg, SigningKey};

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
    /// How access tokens are signed: `EdDSA` (default) or `ES256` with keys
    /// generated and stored sealed in the database (`rampart keys rotate`);
    /// `RS256` (or the others) with `signing_key`; `HS256` with `hs256_secret`,
    /// only for upstreams that verify tokens with a shared secret.
    pub algorithm: String,
    /// A PKCS#8 PEM private key to sign with instead of generated keys; use
    /// `signing_key_file`. Every instance must load the same file.
    pub signing_key: Secret,
    /// The shared HS256 secret (at least 32 bytes); use `hs256_secret_file`.
    pub hs256_secret: Secret,
    /// The `kid` of `signing_key` or `hs256_secret` (default: derived from the key).
    pub key_id: Option<String>,
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
    /// Passkeys (`[identity.webauthn]`); off when absent.
    pub webauthn: Option<WebauthnConfig>,
    /// The issuer label authenticator apps show for TOTP (default: the host
    /// of `issuer`).
    pub totp_issuer: Option<String>,
    /// API keys (`[identity.api_keys]`).
    pub api_keys: super::api_keys::ApiKeysConfig,
    /// Where browsers reach this gateway (scheme, host, optional path), for
    /// the redirect URIs of external logins (default: `issuer`).
    pub public_url: Option<String>,
    /// External OpenID Connect providers (`[identity.oidc.<name>]`).
    pub oidc: BTreeMap<String, OidcProviderConfig>,
    /// Browser sessions and CSRF (`[identity.sessions]`).
    pub sessions: SessionsConfig,
    /// HMAC-signed requests from service clients (`[identity.signatures]`).
    pub signatures: super::signatures::SignaturesConfig,
    /// The web pages (`[identity.pages]`).
    pub pages: PagesConfig,
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
            algorithm: "EdDSA".into(),
            signing_key: Secret::default(),
            hs256_secret: Secret::default(),
            key_id: None,
            registration: false,
            hash_workers: 0,
            hash_queue: 64,
            max_failures: 5,
            failure_window: Duration::from_secs(15 * 60),
            lockout: Duration::from_secs(15 * 60),
            password: PasswordConfig::default(),
            reset: ResetConfig::default(),
            notifier: None,
            webauthn: None,
            totp_issuer: None,
            api_keys: Default::default(),
            public_url: None,
            oidc: BTreeMap::new(),
            sessions: SessionsConfig::default(),
            signatures: Default::default(),
            pages: PagesConfig::default(),
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
    pub signing: Signing,
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
    /// `None`: passkeys are off.
    pub webauthn: Option<WebauthnSettings>,
    /// The issuer label of TOTP enrolments.
    pub totp_issuer: String,
    pub api_keys: super::api_keys::ApiKeySettings,
    /// `public_url` (default: `issuer`) without a trailing slash.
    pub public_url: String,
    /// External OpenID Connect providers, by name.
    pub oidc: Vec<OidcProviderSettings>,
    /// `None`: browser sessions are off.
    pub sessions: Option<SessionSettings>,
    pub signatures: super::signatures::SignatureSettings,
    /// `None`: the web pages are off.
    pub pages: Option<PagesSettings>,
}

impl IdentitySettings {
    /// The longest lifetime of a token the gateway issues and can revoke:
    /// access tokens, and the short tokens browser sessions hand out
    /// (`[identity.sessions] token_ttl`). Revocations must be remembered at
    /// least this long, or a revoked token comes back to life.
    pub fn revocable_token_life(&self) -> Duration {
        self.sessions.as_ref().map_or(self.access_ttl, |s| s.token_ttl.max(self.access_ttl))
    }
}

/// Where the signing key of issued tokens comes from.
#[derive(Clone, Debug)]
pub enum Signing {
    /// Generated on first start (and by `rampart keys rotate`), stored sealed.
    Generated(Alg),
    /// `signing_key`: a PKCS#8 PEM private key, already checked to load.
    Pem { alg: Alg, pem: Secret, kid: Option<String> },
    /// `hs256_secret`: a shared secret (never published in the JWKS).
    Hs256 { secret: Secret, kid: Option<String> },
}

fn compile_signing(cfg: &IdentityConfig, at: &ConfigPath, errs: &mut Vec<(ConfigPath, String)>) -> Option<Signing> {
    let Some(alg) = Alg::from_name(&cfg.algorithm) else {
        errs.push((at.push_key("algorithm"), "must be `EdDSA`, `ES256`, `RS256` or `HS256`".into()));
        return None;
    };
    let (pem, secret) = (cfg.signing_key.expose(), cfg.hs256_secret.expose());
    if let Some(kid) = &cfg.key_id {
        if kid.is_empty() || kid.len() > crate::token::MAX_KID_BYTES || kid.chars().any(char::is_control) {
            errs.push((at.push_key("key_id"), "must be 1 to 256 printable characters".into()));
            return None;
        }
    }
    match alg {
        Alg::HS256 => {
            if !pem.is_empty() {
                errs.push((at.push_key("signing_key"), "is for EdDSA, ES256 or RS256; HS256 uses hs256_secret".into()));
                return None;
            }
            if secret.len() < MIN_SECRET_KEY_BYTES {
                errs.push((
                    at.push_key("hs256_secret"),
                    format!("algorithm = \"HS256\" needs a shared secret of at least {MIN_SECRET_KEY_BYTES} bytes"),
                ));
                return None;
            }
            Some(Signing::Hs256 { secret: cfg.hs256_secret.clone(), kid: cfg.key_id.clone() })
        }
        _ if !secret.is_empty() => {
            errs.push((at.push_key("hs256_secret"), "is used only with algorithm = \"HS256\"".into()));
            None
        }
        _ if !pem.is_empty() => match SigningKey::from_pkcs8_pem("check", alg, pem) {
            Ok(_) => Some(Signing::Pem { alg, pem: cfg.signing_key.clone(), kid: cfg.key_id.clone() }),
            Err(e) => {
                errs.push((at.push_key("signing_key"), format!("is not a PKCS#8 PEM {alg} private key: {e}")));
                None
            }
        },
        Alg::RS256 => {
            errs.push((
                at.push_key("signing_key"),
                "algorithm = \"RS256\" needs a key: set signing_key_file to a PKCS#8 PEM RSA key (RSA keys are not generated)"
                    .into(),
            ));
            None
        }
        _ if cfg.key_id.is_some() => {
            errs.push((
                at.push_key("key_id"),
                "names signing_key or hs256_secret; generated keys name themselves".into(),
            ));
            None
        }
        _ => Some(Signing::Generated(alg)),
    }
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
    let signing = compile_signing(cfg, &at, errs);
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
    let webauthn = cfg.webauthn.as_ref().and_then(|w| compile_webauthn(w, &at, errs));
    let totp_issuer = match &cfg.totp_issuer {
        Some(label) => label.clone(),
        None => host_of(&cfg.issuer).to_owned(),
    };
    if totp_issuer.is_empty() || totp_issuer.len() > 64 || totp_issuer.chars().any(char::is_control) {
        errs.push((at.push_key("totp_issuer"), "must be 1 to 64 printable characters".into()));
    }
    let api_keys = super::api_keys::compile_api_keys(&cfg.api_keys, &at.push_key("api_keys"), errs);
    // The issuer need not be a URL unless it stands in for `public_url`.
    let public_url = match compile_public_url(cfg.public_url.as_deref(), &cfg.issuer) {
        Ok(url) => url,
        Err(why) if cfg.public_url.is_some() => {
            errs.push((at.push_key("public_url"), why.into()));
            String::new()
        }
        Err(why) if !cfg.oidc.is_empty() => {
            errs.push((
                at.push_key("public_url"),
                format!("external logins need it (the issuer cannot stand in for it: it {why})"),
            ));
            String::new()
        }
        Err(_) => cfg.issuer.trim_end_matches('/').to_owned(),
    };
    let oidc = compile_oidc(&cfg.oidc, &public_url, &cfg.prefix, cfg.registration, &at, errs);
    let sessions = compile_sessions(&cfg.sessions, &at, errs);
    let signatures = super::signatures::compile_signatures(&cfg.signatures, &at.push_key("signatures"), errs);
    let pages = compile_pages(&cfg.pages, &cfg.prefix, sessions.is_some(), &at, errs);
    if errs.len() > before {
        return None;
    }
    let (policy, argon2) = compiled?;
    let signing = signing?;
    Some(IdentitySettings {
        prefix: cfg.prefix.clone(),
        issuer: cfg.issuer.clone(),
        audience: cfg.audience.clone(),
        access_ttl: cfg.access_ttl,
        refresh_ttl: cfg.refresh_ttl,
        refresh_grace: cfg.refresh_grace,
        secret_key: cfg.secret_key.clone(),
        signing,
        registration: cfg.registration,
        hash_workers: cfg.hash_workers,
        hash_queue: cfg.hash_queue,
        max_failures: cfg.max_failures,
        failure_window: cfg.failure_window,
        lockout: cfg.lockout,
        policy,
        argon2,
        reset,
        webauthn,
        totp_issuer,
        api_keys: api_keys?,
        public_url,
        oidc,
        sessions,
        signatures: signatures?,
        pages,
    })
}

/// `api.example.com` of `https://api.example.com:8443/x`; the text itself when
/// it is not a URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(end) = host.find(']') {
        return &host[..=end];
    }
    host.split(':').next().unwrap_or(host)
}
