//! Bearer-token authentication: the layer that turns a verified JWT into a
//! [`Principal`] and the identity headers the upstream reads.
//!
//! For every request, whatever the route says, inbound copies of the identity
//! headers (`X-Rampart-User`, `-Roles`, `-Scopes`, `-Tier`, `-Auth-Method`, or
//! the names configured in `[auth.headers]`) are removed: only this layer may
//! set them, so an upstream can trust them.
//!
//! Then, per the route's `auth` ([`AuthMode`]):
//! - `none`: nothing else happens.
//! - `optional` / `required`: the token is read from `Authorization: Bearer …`
//!   (or the route's cookie or query parameter, when it names one) and verified
//!   strictly by the issuer's [`rampart_core::token::Verifier`]. A valid token
//!   puts a [`Principal`] in the request (rate limits keyed by user, API key or
//!   tier read it) and sets the identity headers. A missing token is 401 on
//!   `required` routes and anonymous on `optional` ones; an invalid token is 401
//!   on both.
//!
//! Every refusal is the same 401 problem (`WWW-Authenticate: Bearer`), whatever
//! was wrong with the token: the reason goes to metrics, the log and the audit
//! log, never to the client. Refusals count as strikes towards an automatic ban.
//!
//! Verified tokens are cached (by SHA-256 of the token, never the token itself)
//! until they expire, in a table of bounded size, so a client that repeats its
//! token costs one hash and one lookup.

mod cache;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::auth::{AuthMode, AuthSettings, IdentityHeaders, RouteAuth};
use rampart_core::principal::{AuthMethod, Principal};
use rampart_core::token::{Claims, TokenError};
use serde::Deserialize;
use tower::{Layer, Service};

pub use cache::TokenCache;

use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, Inner, LayerFuture};
use crate::limit::bans::Strike;
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;

/// Identity header values are percent-encoded UTF-8 when they hold anything
/// but printable ASCII; `%` itself is always encoded, so decoding is exact.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

#[derive(Clone)]
pub struct AuthLayer {
    settings: Arc<AuthSettings>,
    cache: Arc<TokenCache>,
    state: Arc<LimitState>,
}

impl AuthLayer {
    /// The cache lives as long as the layer: a reload (which may change the
    /// trusted keys) starts with an empty one.
    pub fn new(settings: Arc<AuthSettings>, state: Arc<LimitState>) -> Self {
        let cache = Arc::new(TokenCache::new(settings.cache_entries));
        Self { settings, cache, state }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, settings: self.settings.clone(), cache: self.cache.clone(), state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    settings: Arc<AuthSettings>,
    cache: Arc<TokenCache>,
    state: Arc<LimitState>,
}

/// Why a request was not authenticated (for metrics and the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    UnknownIssuer,
    Token(TokenError),
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Token(e) => e.reason(),
        }
    }
}

impl<S: Inner> Service<HttpRequest> for AuthService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let names = &self.settings.headers;
        for name in names.all() {
            req.headers_mut().remove(name);
        }
        let route = req.extensions().get::<MatchedRoute>().map(|r| r.0.auth.clone()).unwrap_or_default();
        if route.mode == AuthMode::None {
            return futures_util::future::Either::Left(take_ready(&mut self.inner).call(req));
        }
        match self.authenticate(&req, &route) {
            Ok(Some(principal)) => {
                set_identity_headers(req.headers_mut(), names, &principal);
                req.extensions_mut().insert(principal);
            }
            Ok(None) if route.mode == AuthMode::Optional => {}
            Ok(None) => return futures_util::future::Either::Right(self.refuse(&req, AuthFailure::Missing)),
            Err(failure) => return futures_util::future::Either::Right(self.refuse(&req, failure)),
        }
        futures_util::future::Either::Left(take_ready(&mut self.inner).call(req))
    }
}

impl<S> AuthService<S> {
    /// The request's principal: `Ok(None)` when it presents no token.
    fn authenticate(&self, req: &HttpRequest, route: &RouteAuth) -> Result<Option<Principal>, AuthFailure> {
        let Some(token) = token_of(req, route) else { return Ok(None) };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Some(principal) = self.cache.get(&token, now) {
            return Ok(Some(principal));
        }
        let claims = self.verify(&token, now)?;
        let principal = principal_of(&claims);
        self.cache.insert(&token, principal.clone(), claims.exp);
        Ok(Some(principal))
    }

    fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthFailure> {
        let settings = &self.settings;
        if token.len() > settings.max_token_bytes {
            return Err(AuthFailure::Token(TokenError::TooLarge));
        }
        let verifier = match settings.issuers.as_slice() {
            [(_, only)] => only.as_ref(),
            _ => {
                let iss = unverified_issuer(token).ok_or(AuthFailure::Token(TokenError::Malformed))?;
                settings.verifier_for(&iss).ok_or(AuthFailure::UnknownIssuer)?
            }
        };
        verifier.verify(token, now).map_err(AuthFailure::Token)
    }

    fn refuse(&self, req: &HttpRequest, failure: AuthFailure) -> LayerFuture {
        let reason = failure.reason();
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        if failure != AuthFailure::Missing {
            tracing::info!(target: "rampart::auth", reason, ip = ?ip, "bearer token refused");
            if let Some(ip) = ip {
                self.state.bans.strike(ip, Strike::AuthFailure);
            }
            let key = format!("auth|{}|{reason}", ip.map(|i| i.to_string()).unwrap_or_default());
            self.state.audit_once(&key, || {
                let mut event =
                    AuditEvent::new(AuditKind::AuthFailure).detail("method", "jwt").detail("reason", reason);
                if let Some(ip) = ip {
                    event = event.ip(ip);
                }
                if let Some(id) = req.extensions().get::<RequestId>() {
                    event = event.request_id(id.as_str());
                }
                event
            });
        }
        let challenge = if failure == AuthFailure::Missing {
            HeaderValue::from_static("Bearer realm=\"rampart\"")
        } else {
            HeaderValue::from_static("Bearer realm=\"rampart\", error=\"invalid_token\"")
        };
        let mut resp = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            .detail("a valid bearer token is required")
            .rejected_by("auth", reason)
            .into_response_for(req.extensions());
        resp.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        Box::pin(async move { Ok(resp) })
    }
}

/// The bearer token: from `Authorization` first, then the route's cookie,
/// then its query parameter. Empty values count as absent.
fn token_of(req: &HttpRequest, route: &RouteAuth) -> Option<String> {
    if let Some(value) = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let mut parts = value.trim().splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next()) {
            let token = token.trim();
            if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() {
                return Some(token.to_string());
            }
        }
    }
    if let Some(name) = &route.cookie {
        for header in req.headers().get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            for pair in header.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == name && !v.is_empty() {
                        return Some(v.trim_matches('"').to_string());
                    }
                }
            }
        }
    }
    if let (Some(name), Some(query)) = (&route.query, req.uri().query()) {
        return form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.into_owned());
    }
    None
}

/// The `iss` a token claims, read without verifying anything (only to pick
/// which issuer's verifier checks it, `iss` included).
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|c| c.iss)
}

fn principal_of(claims: &Claims) -> Principal {
    Principal {
        subject: claims.sub.clone(),
        api_key_id: None,
        tier: claims.tier.clone(),
        roles: claims.roles.clone(),
        scopes: claims.scopes.clone(),
        method: AuthMethod::Jwt,
    }
}

/// Sets the identity headers for `p` (values percent-encoded when needed).
pub fn set_identity_headers(headers: &mut http::HeaderMap, names: &IdentityHeaders, p: &Principal) {
    let mut set = |name: &HeaderName, value: &str| {
        let encoded = utf8_percent_encode(value, HEADER_UNSAFE).to_string();
        if let Ok(v) = HeaderValue::from_str(&encoded) {
            headers.insert(name.clone(), v);
        }
    };
    set(&names.user, &p.subject);
    set(&names.roles, &p.roles.join(","));
    set(&names.scopes, &p.scopes.join(" "));
    if let Some(tier) = &p.tier {
        set(&names.tier, tier);
    }
    set(&names.auth_method, p.method.as_str());
}

#[cfg(test)]
mod tests;
