//! `[auth]`: which bearer tokens the gateway accepts, compiled into one
//! [`Verifier`] per trusted issuer, and the identity headers it sends upstream.
//!
//! ```toml
//! [auth]
//! audiences = ["api"]          # a token's `aud` must name one of these
//! leeway = "30s"               # clock skew allowed on exp / nbf / iat
//!
//! [[auth.issuers]]             # e.g. the FastAPI app's own HS256 tokens
//! issuer = "https://app.example.com"
//! secret_file = "/run/secrets/jwt_secret"   # HS256, at least 32 bytes
//!
//! [[auth.issuers]]
//! issuer = "https://login.example.com"
//! keys = [{ kid = "2025-01", alg = "ES256", public_key_file = "/etc/rampart/login-es256.pem" }]
//! ```
//!
//! Routes choose `auth = "none" | "optional" | "required"` (default `none`) and,
//! where needed, a cookie or query parameter that may carry the token too.
//!
//! A key verifies tokens of its own issuer only: the gateway reads a token's
//! (unverified) `iss` to pick the issuer's verifier, which then checks
//! everything, `iss` included. A key of one issuer can never vouch for a token
//! that claims to come from another.

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use serde::Deserialize;

use super::env::ConfigPath;
use super::secret::Secret;
use crate::token::{Alg, KeySet, Verifier, VerifyingKey, DEFAULT_MAX_TOKEN_BYTES};

/// `[auth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Our own names: a token's `aud` must contain one (an issuer may override).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Larger tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Verified tokens remembered (by SHA-256 of the token) until they expire,
    /// so a client's repeated token costs one signature check; `0`: no cache.
    pub cache_entries: usize,
    pub issuers: Vec<IssuerConfig>,
    /// Names of the identity headers sent upstream. Inbound copies of them are
    /// always removed, whatever the route's `auth`.
    pub headers: IdentityHeadersConfig,
    /// The request header an API key may come in (besides
    /// `Authorization: ApiKey …`); keys are managed in `[identity.api_keys]`.
    pub api_key_header: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            audiences: Vec::new(),
            leeway: Duration::from_secs(30),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            cache_entries: 10_000,
            issuers: Vec::new(),
            headers: IdentityHeadersConfig::default(),
            api_key_header: "x-api-key".into(),
        }
    }
}

/// One `[[auth.issuers]]` entry: an issuer and the keys its tokens are signed with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` its tokens carry.
    pub issuer: String,
    /// Overrides `[auth] audiences` for this issuer.
    pub audiences: Option<Vec<String>>,
    /// HS256 shared secret (at least 32 bytes), as FastAPI apps and PyJWT use;
    /// prefer `secret_file`.
    pub secret: Option<Secret>,
    /// Public keys (EdDSA, ES256, RS256).
    #[serde(default)]
    pub keys: Vec<IssuerKeyConfig>,
    /// The issuer's JWKS document (`https://…`; `http://` only to loopback),
    /// fetched at start, every `jwks_refresh`, and when a token names a `kid`
    /// not yet known (at most once per `jwks_min_interval`).
    pub jwks_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_refresh: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub jwks_min_interval: Option<Duration>,
}

/// Where and how often an issuer's JWKS is fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSource {
    pub url: String,
    pub refresh: Duration,
    /// Refreshes caused by unknown `kid`s are at least this far apart, so a
    /// flood of made-up `kid`s costs the issuer nothing.
    pub min_interval: Duration,
}

/// One trusted issuer, compiled.
#[derive(Clone, Debug)]
pub struct IssuerSettings {
    pub issuer: String,
    /// Verifies with the configured keys (the JWKS keys are added at run time).
    pub verifier: Arc<Verifier>,
    pub jwks: Option<JwksSource>,
}

/// A public key of an issuer: `public_key` (PEM; or `public_key_file`) or `jwk`
/// (a JSON object as a string, as found in the issuer's JWKS).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerKeyConfig {
    pub kid: Option<String>,
    /// `EdDSA`, `ES256` or `RS256`; for a JWK, taken from it when absent.
    pub alg: Option<String>,
    /// PEM text (SubjectPublicKeyInfo, or PKCS#1 for RSA).
    pub public_key: Option<Secret>,
    pub jwk: Option<String>,
}

/// `[auth.headers]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersConfig {
    pub user: String,
    pub roles: String,
    pub scopes: String,
    pub tier: String,
    pub auth_method: String,
    /// The external issuer (`iss`) that vouched for the caller; not sent for
    /// Rampart's own users, whose ids no other issuer can claim.
    pub issuer: String,
    /// A header carrying a short-lived JWT of the caller's identity, signed
    /// by `[identity]`'s key, for upstreams that verify rather than trust
    /// headers (empty: none). E.g. `x-rampart-jwt`.
    pub internal_jwt: String,
    /// Lifetime of the internal JWT.
    #[serde(with = "humantime_serde")]
    pub internal_jwt_ttl: std::time::Duration,
    /// `aud` of the internal JWT.
    pub internal_jwt_audience: String,
}

impl Default for IdentityHeadersConfig {
    fn default() -> Self {
        Self {
            user: "x-rampart-user".into(),
            roles: "x-rampart-roles".into(),
            scopes: "x-rampart-scopes".into(),
            tier: "x-rampart-tier".into(),
            auth_method: "x-rampart-auth-method".into(),
            issuer: "x-rampart-issuer".into(),
            internal_jwt: String::new(),
            internal_jwt_ttl: std::time::Duration::from_secs(60),
            internal_jwt_audience: "rampart-upstream".into(),
        }
    }
}

/// How a route treats authentication.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens are not read; the request goes upstream anonymous.
    #[default]
    None,
    /// A valid token makes the request authenticated; no token is fine; an
    /// invalid one is refused (a bad credential is never silently ignored).
    Optional,
    /// A valid token is needed: 401 otherwise.
    Required,
}

/// A route's authentication, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteAuth {
    pub mode: AuthMode,
    /// Cookie that may carry the token (besides `Authorization: Bearer`).
    pub cookie: Option<String>,
    /// Query parameter that may carry the token.
    pub query: Option<String>,
    /// Whether the session cookie authenticates (when sessions are on).
    pub session: bool,
}

/// The identity header names, compiled.
#[derive(Clone, Debug)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub roles: HeaderName,
    pub scopes: HeaderName,
    pub tier: HeaderName,
    pub auth_method: HeaderName,
    pub issuer: HeaderName,
    pub internal_jwt: Option<InternalJwt>,
}

/// The signed identity header, when configured.
#[derive(Clone, Debug)]
pub struct InternalJwt {
    pub header: HeaderName,
    pub ttl_secs: u64,
    pub audience: String,
}

impl IdentityHeaders {
    /// Every identity header name (stripped from requests, copied to
    /// forward-auth answers).
    pub fn all(&self) -> impl Iterator<Item = &HeaderName> + Clone {
        [&self.user, &self.roles, &self.scopes, &self.tier, &self.auth_method, &self.issuer]
            .into_iter()
            .chain(self.internal_jwt.as_ref().map(|j| &j.header))
    }
}

/// `[auth]`, compiled.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The trusted issuers, in config order.
    pub issuers: Vec<IssuerSettings>,
    pub headers: IdentityHeaders,
    pub max_token_bytes: usize,
    pub cache_entries: usize,
    /// `[auth] api_key_header`, lower case.
    pub api_key_header: HeaderName,
}

impl AuthSettings {
    /// The position of the issuer named `iss`.
    pub fn issuer_index(&self, iss: &str) -> Option<usize> {
        self.issuers.iter().position(|i| i.issuer == iss)
    }
}

/// Compiles `[auth]`; problems are pushed as (path, message).
pub(super) fn compile_auth(cfg: &AuthConfig, errs: &mut Vec<(ConfigPath, String)>) -> Option<AuthSettings> {
    let before = errs.len();
    let at = ConfigPath::parse("auth");
    let mut issuers = Vec::new();
    if cfg.max_token_bytes < 256 || cfg.max_token_bytes > 1 << 20 {
        errs.push((at.push_key("max_token_bytes"), "must be between 256 and 1048576".into()));
    }
    if cfg.leeway > Duration::from_secs(300) {
        errs.push((at.push_key("leeway"), "must be at most 5m".into()));
    }
    for (i, issuer) in cfg.issuers.iter().enumerate() {
        let here = at.push_key("issuers").push_index(i);
        if issuer.issuer.is_empty() {
            errs.push((here.push_key("issuer"), "names the `iss` its tokens carry".into()));
        }
        if cfg.issuers[..i].iter().any(|o| o.issuer == issuer.issuer) {
            errs.push((here.push_key("issuer"), format!("`{}` is listed twice", issuer.issuer)));
        }
        let audiences = issuer.audiences.as_ref().unwrap_or(&cfg.audiences);
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            errs.push((
                here.push_key("audiences"),
                "set the audiences its tokens must name (here or in [auth] audiences)".into(),
            ));
        }
        let mut keys = KeySet::new();
        if let Some(secret) = &issuer.secret {
            match VerifyingKey::hs256("hs256", secret.expose().as_bytes()) {
                Ok(k) => push_key(&mut keys, k, &here.push_key("secret"), errs),
                Err(e) => errs.push((here.push_key("secret"), e.to_string())),
            }
        }
        for (j, key) in issuer.keys.iter().enumerate() {
            let kat = here.push_key("keys").push_index(j);
            match compile_key(key) {
                Ok(k) => push_key(&mut keys, k, &kat, errs),
                Err(e) => errs.push((kat, e)),
            }
        }
        let jwks = match &issuer.jwks_url {
            Some(url) => match check_jwks_url(url) {
                Ok(()) => Some(JwksSource {
                    url: url.clone(),
                    refresh: issuer.jwks_refresh.unwrap_or(Duration::from_secs(600)),
                    min_interval: issuer.jwks_min_interval.unwrap_or(Duration::from_secs(30)),
                }),
                Err(e) => {
                    errs.push((here.push_key("jwks_url"), e));
                    None
                }
            },
            None => None,
        };
        if let Some(j) = &jwks {
            if j.refresh < Duration::from_secs(10) {
                errs.push((here.push_key("jwks_refresh"), "must be at least 10s".into()));
            }
            if j.min_interval.is_zero() {
                errs.push((here.push_key("jwks_min_interval"), "must be longer than zero".into()));
            }
        }
        if keys.is_empty() && issuer.secret.is_none() && issuer.keys.is_empty() && issuer.jwks_url.is_none() {
            errs.push((here, "needs a `secret` (HS256), `keys` or a `jwks_url`".into()));
        }
        let mut verifier = Verifier::new(keys, [issuer.issuer.clone()], audiences.iter().cloned());
        verifier.leeway_secs = cfg.leeway.as_secs();
        verifier.max_token_bytes = cfg.max_token_bytes;
        issuers.push(IssuerSettings { issuer: issuer.issuer.clone(), verifier: Arc::new(verifier), jwks });
    }
    let h = &cfg.headers;
    let hat = at.push_key("headers");
    let mut name = |field: &str, value: &str| match HeaderName::from_bytes(value.to_ascii_lowercase().as_bytes()) {
        Ok(n) => Some(n),
        Err(_) => {
            errs.push((hat.push_key(field), format!("`{value}` is not a valid header name")));
            None
        }
    };
    let internal_jwt =
        (!h.internal_jwt.is_empty()).then(|| name("internal_jwt", &h.internal_jwt)).flatten().map(|header| {
            InternalJwt { header, ttl_secs: h.internal_jwt_ttl.as_secs(), audience: h.internal_jwt_audience.clone() }
        });
    let headers = (
        name("user", &h.user),
        name("roles", &h.roles),
        name("scopes", &h.scopes),
        name("tier", &h.tier),
        name("auth_method", &h.auth_method),
        name("issuer", &h.issuer),
    );
    if internal_jwt.is_some() {
        let ttl = h.internal_jwt_ttl;
        if ttl < std::time::Duration::from_secs(5) || ttl > std::time::Duration::from_secs(3600) {
            errs.push((hat.push_key("internal_jwt_ttl"), "must be between 5s and 1h".into()));
        }
        if h.internal_jwt_audience.is_empty() {
            errs.push((hat.push_key("internal_jwt_audience"), "must not be empty".into()));
        }
    }
    let api_key_header = match HeaderName::from_bytes(cfg.api_key_header.to_ascii_lowercase().as_bytes()) {
        Ok(n) if n != http::header::AUTHORIZATION && n != http::header::COOKIE => Some(n),
        _ => {
            errs.push((
                at.push_key("api_key_header"),
                "must be a header name other than Authorization or Cookie".into(),
            ));
            None
        }
    };
    if errs.len() > before {
        return None;
    }
    let (Some(user), Some(roles), Some(scopes), Some(tier), Some(auth_method), Some(issuer), Some(api_key_header)) =
        (headers.0, headers.1, headers.2, headers.3, headers.4, headers.5, api_key_header)
    else {
        return None;
    };
    Some(AuthSettings {
        issuers,
        headers: IdentityHeaders { user, roles, scopes, tier, auth_method, issuer, internal_jwt },
        max_token_bytes: cfg.max_token_bytes,
        cache_entries: cfg.cache_entries,
        api_key_header,
    })
}

fn push_key(keys: &mut KeySet, key: VerifyingKey, at: &ConfigPath, errs: &mut Vec<(ConfigPath, String)>) {
    if let Err(e) = keys.insert(key) {
        errs.push((at.clone(), e.to_string()));
    }
}

fn compile_key(key: &IssuerKeyConfig) -> Result<VerifyingKey, String> {
    let alg = match &key.alg {
        Some(a) => match Alg::from_name(a) {
            Some(Alg::HS256) | None => return Err(format!("`{a}` is not one of EdDSA, ES256, RS256")),
            Some(alg) => Some(alg),
        },
        None => None,
    };
    match (&key.public_key, &key.jwk) {
        (Some(pem), None) => {
            let alg = alg.ok_or("`alg` is required with `public_key`")?;
            let kid = key.kid.as_deref().ok_or("`kid` is required (the `kid` header of its tokens)")?;
            VerifyingKey::from_public_pem(kid, alg, pem.expose()).map_err(|e| e.to_string())
        }
        (None, Some(jwk)) => {
            let mut value: serde_json::Value =
                serde_json::from_str(jwk).map_err(|e| format!("`jwk` is not JSON: {e}"))?;
            if let Some(obj) = value.as_object_mut() {
                if let Some(kid) = &key.kid {
                    obj.insert("kid".into(), kid.clone().into());
                }
                if let Some(alg) = alg {
                    obj.insert("alg".into(), alg.as_str().into());
                }
            }
            VerifyingKey::from_jwk(&value).map_err(|e| e.to_string())
        }
        _ => Err("set exactly one of `public_key` (or `public_key_file`) and `jwk`".into()),
    }
}

/// A JWKS URL must be https, except to a loopback host (a local issuer, tests).
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("must be https:// (http:// only to a loopback address)".into())
            }
        }
        _ => Err("must be an https:// URL".into()),
    }
}
