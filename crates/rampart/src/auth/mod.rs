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
//!   on both. A token read from the cookie is one a browser sends by itself,
//!   so on unsafe methods the request must also come from an allowed origin
//!   (the source check of [`csrf`]), or it is refused with `403 csrf`.
//!
//! Every refusal is the same 401 problem (`WWW-Authenticate: Bearer`), whatever
//! was wrong with the token: the reason goes to metrics, the log and the audit
//! log, never to the client. Refusals count as strikes towards an automatic ban.
//!
//! Verified tokens are cached (by SHA-256 of the token, never the token itself)
//! until they expire, in a table of bounded size, so a client that repeats its
//! token costs one hash and one lookup.
//!
//! **API keys** (`[identity.api_keys]`, see [`crate::identity::api_keys`]):
//! on `optional` and `required` routes, `Authorization: ApiKey <key>` or the
//! `[auth] api_key_header` (`X-API-Key`; read only when `Authorization` holds
//! no bearer token) carries an API key. Its shape and checksum are checked
//! first, then its SHA-256 is looked up in memory (the database on a miss).
//! Expired, revoked, unknown keys and keys used from outside their CIDR list
//! get the same 401 as a bad token. The key header is not sent upstream.
//!
//! **Signed requests** (`[identity.signatures]`, see [`signature`]): on
//! `optional` and `required` routes, a request carrying `X-Rampart-Signature`
//! is authenticated by its HMAC signature alone, as a service client.
//!
//! The gateway's own tokens (`[identity]`) are also checked against
//! [`crate::identity::revoke::Revocations`] on every use, cached or not: a
//! logged-out token or one older than its user's token version is refused
//! (401, reason `revoked`). When this instance cannot read revocations (the
//! database has been unreachable too long), its own tokens are refused with
//! 503 — revocation fails closed.

pub mod authorize;
mod cache;
pub mod csrf;
pub mod jwks;
mod session;
pub(crate) use session::strip_cookie;
mod signature;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_util::future::Either;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use rampart_core::api_key::{ApiKey, KeyError};
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::auth::{AuthMode, AuthSettings, IdentityHeaders, IssuerSettings, RouteAuth};
use rampart_core::principal::{AuthMethod, Principal};
use rampart_core::token::{Claims, TokenError};
use serde::Deserialize;
use tower::{Layer, Service};

pub use cache::{KeyStamp, Revocable, TokenCache, Verified};
use jwks::IssuerKeys;

use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, HttpResponse, Inner, LayerFuture};
use crate::identity::api_keys::{ApiKeys, Lookup};
use crate::limit::bans::Strike;
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;

/// Identity header values are percent-encoded UTF-8 when they hold anything
/// but printable ASCII; `%` itself is always encoded, so decoding is exact.
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b'%');

#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

/// What every clone of the service shares.
struct Shared {
    settings: Arc<AuthSettings>,
    issuers: Vec<Arc<IssuerKeys>>,
    cache: TokenCache,
    /// Session cookies authenticated in the last [`SESSION_SEEN_SECS`]: what
    /// load shedding may take for a signed-in user without asking the store.
    sessions_seen: TokenCache,
    state: Arc<LimitState>,
    /// Index in `issuers` of the gateway's own issuer, and the identity
    /// service (its keys of the moment, its revocations).
    own: Option<(usize, Arc<crate::identity::IdentityService>)>,
}

impl AuthLayer {
    /// The cache and the JWKS keys live as long as the layer: a reload (which
    /// may change the trusted keys) starts afresh.
    /// `own`: the gateway's own issuer (`[identity]`), trusted besides `[auth]`'s.
    pub fn new(settings: Arc<AuthSettings>, own: Option<IssuerSettings>, state: Arc<LimitState>) -> Self {
        let issuers = settings.issuers.iter().chain(own.as_ref()).map(IssuerKeys::start).collect();
        let cache = TokenCache::new(settings.cache_entries);
        let sessions_seen = TokenCache::new(settings.cache_entries);
        let own = match (&own, state.identity()) {
            (Some(_), Some(identity)) => Some((settings.issuers.len(), identity.clone())),
            _ => None,
        };
        Self { shared: Arc::new(Shared { settings, issuers, cache, sessions_seen, state, own }) }
    }
}

/// How long a session cookie that authenticated stays "known valid" for load
/// shedding (authentication itself always asks the session store).
pub const SESSION_SEEN_SECS: u64 = 60;

impl crate::limit::shed::Recognize for AuthLayer {
    /// True when `req` carries a credential known valid from memory alone, with
    /// no signature check and no I/O: a bearer token in the verified-token
    /// cache, an API key in the key cache that would be admitted, or a session
    /// cookie that authenticated within [`SESSION_SEEN_SECS`]. Anything else
    /// (no credential, or one not seen yet) counts as anonymous.
    fn recognizes(&self, req: &HttpRequest) -> bool {
        let s = &self.shared;
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let now = now_ms / 1000;
        if let Some(keys) = s.api_keys() {
            if let Some(presented) = api_key_of(req.headers(), &s.settings.api_key_header) {
                let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
                return matches!(presented, Presented::Key(hash)
                    if matches!(keys.cached(&hash, now_ms), Lookup::Known(k) if k.check(ip, now_ms).is_ok()));
            }
        }
        let route = req.extensions().get::<MatchedRoute>().map(|r| &r.0.auth);
        let token = match route {
            Some(route) => token_of(req, route).map(|(token, _)| token),
            None => bearer_token(req.headers()).map(str::to_owned),
        };
        if let Some(token) = token {
            return s.cache.get_checked(&token, now, |stamp| s.keys_unchanged(stamp)).is_some();
        }
        let session = s.sessions().and_then(|sessions| sessions.token_in(req.headers()));
        session.is_some_and(|token| s.sessions_seen.get(&token, now).is_some())
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, shared: self.shared.clone() }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Why a request was not authenticated (for metrics and the audit log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    UnknownIssuer,
    Token(TokenError),
    /// Logged out, or older than its user's token version.
    Revoked,
    /// Revocations cannot be read now (fail closed: 503).
    RevocationUnknown,
    /// An API key refused (malformed, unknown, expired, revoked, address).
    ApiKey(&'static str),
    /// API keys cannot be checked now (database unreachable: 503).
    ApiKeysUnavailable,
    /// A session cookie refused (unknown, expired, idle, revoked).
    Session(&'static str),
    /// Sessions cannot be read now (store unreachable: 503).
    SessionsUnavailable,
    /// A signed request refused (malformed, unknown key, outside the window,
    /// wrong MAC, replayed…).
    Signature(&'static str),
    /// Signatures cannot be checked now (keys unread for too long, or the
    /// replay cache full): 503.
    SignaturesUnavailable(&'static str),
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Token(e) => e.reason(),
            Self::Revoked => "revoked",
            Self::RevocationUnknown => "revocations_unavailable",
            Self::ApiKey(reason) => reason,
            Self::ApiKeysUnavailable => "api_keys_unavailable",
            Self::Session(reason) => reason,
            Self::SessionsUnavailable => "sessions_unavailable",
            Self::Signature(reason) | Self::SignaturesUnavailable(reason) => reason,
        }
    }

    /// The kind of credential refused, for the log and the audit log.
    pub fn method(self) -> &'static str {
        match self {
            Self::ApiKey(_) | Self::ApiKeysUnavailable => "api_key",
            Self::Signature(_) | Self::SignaturesUnavailable(_) => "signature",
            Self::Session(_) | Self::SessionsUnavailable => "session",
            _ => "jwt",
        }
    }
}

impl<S: Inner> Service<HttpRequest> for AuthService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let shared = &self.shared;
        crate::edge::remove_headers(req.headers_mut(), shared.settings.headers.all());
        let Some(route) = req.extensions().get::<MatchedRoute>().map(|r| r.0.clone()) else {
            return Either::Left(self.inner.call(req));
        };
        let route = &route.auth;
        if route.mode == AuthMode::None {
            return Either::Left(self.inner.call(req));
        }
        if let Some(signatures) = shared.signatures() {
            if req.headers().contains_key(rampart_core::signature::SIGNATURE_HEADER) {
                return shared.signed(signatures, req, &mut self.inner);
            }
        }
        if let Some(keys) = shared.api_keys() {
            if let Some(presented) = api_key_of(req.headers(), &shared.settings.api_key_header) {
                return shared.api_key(keys, presented, req, &mut self.inner);
            }
        }
        if route.session && bearer_token(req.headers()).is_none() {
            if let Some(sessions) = shared.sessions() {
                if let Some(token) = sessions.token_in(req.headers()) {
                    let mode = route.mode;
                    return Either::Right(Box::pin(session::authenticate(
                        shared.clone(),
                        sessions.clone(),
                        token,
                        mode,
                        req,
                        take_ready(&mut self.inner),
                    )));
                }
            }
        }
        let Some((token, source)) = token_of(&req, route) else {
            if route.mode == AuthMode::Optional {
                return Either::Left(self.inner.call(req));
            }
            let resp = shared.refusal(&req, AuthFailure::Missing);
            return Either::Right(Box::pin(async move { Ok(resp) }));
        };
        match shared.authenticate(&token) {
            Ok(verified) => {
                if let Some(resp) = shared.cross_site(&req, source, &verified) {
                    return Either::Right(Box::pin(async move { Ok(resp) }));
                }
                shared.admit(&mut req, verified);
                Either::Left(self.inner.call(req))
            }
            // A key we may not have fetched yet: ask the issuer, then decide.
            Err((AuthFailure::Token(TokenError::UnknownKid), Some(issuer)))
                if shared.issuers.get(issuer).is_some_and(|k| k.has_jwks()) || shared.is_own(issuer) =>
            {
                let shared = shared.clone();
                let mut inner = take_ready(&mut self.inner);
                Either::Right(Box::pin(async move {
                    match &shared.own {
                        // Perhaps another instance or the CLI rotated our keys.
                        Some((own, identity)) if *own == issuer => {
                            identity.keys().reload_for_unknown_kid(crate::identity::service::now_ms()).await;
                        }
                        _ => {
                            if let Some(keys) = shared.issuers.get(issuer) {
                                keys.refresh_for_unknown_kid().await;
                            }
                        }
                    }
                    match shared.authenticate(&token) {
                        Ok(verified) => {
                            if let Some(resp) = shared.cross_site(&req, source, &verified) {
                                return Ok(resp);
                            }
                            shared.admit(&mut req, verified);
                            inner.call(req).await
                        }
                        Err((failure, _)) => Ok(shared.token_refusal(&req, failure, source)),
                    }
                }))
            }
            Err((failure, _)) => {
                let resp = shared.token_refusal(&req, failure, source);
                Either::Right(Box::pin(async move { Ok(resp) }))
            }
        }
    }
}

impl Shared {
    fn sessions(&self) -> Option<&Arc<crate::identity::sessions::Sessions>> {
        self.own.as_ref().and_then(|(_, i)| i.sessions.as_ref())
    }

    fn api_keys(&self) -> Option<&Arc<ApiKeys>> {
        self.state.identity().and_then(|i| i.api_keys.as_ref())
    }

    /// Authenticates by API key: from the cache at once, else after one query.
    fn api_key<S: Inner>(
        self: &Arc<Self>,
        keys: &Arc<ApiKeys>,
        presented: Presented,
        req: HttpRequest,
        inner: &mut S,
    ) -> Either<S::Future, LayerFuture> {
        let now = crate::identity::service::now_ms();
        let hash = match presented {
            Presented::Key(hash) => hash,
            Presented::Refused(reason) => return self.refused_now(&req, AuthFailure::ApiKey(reason)),
        };
        if !keys.is_current(now) {
            return self.refused_now(&req, AuthFailure::ApiKeysUnavailable);
        }
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        match keys.cached(&hash, now) {
            Lookup::Known(key) => match key.admit(ip, now) {
                Ok(verified) => {
                    let mut req = req;
                    self.admit_api_key(&mut req, verified.clone());
                    Either::Left(take_ready(inner).call(req))
                }
                Err(r) => self.refused_now(&req, AuthFailure::ApiKey(r.reason())),
            },
            Lookup::Unknown => self.refused_now(&req, AuthFailure::ApiKey("unknown_api_key")),
            Lookup::Miss => {
                let (shared, keys, mut inner) = (self.clone(), keys.clone(), take_ready(inner));
                Either::Right(Box::pin(async move {
                    let mut req = req;
                    let failure = match keys.fetch(hash, now).await {
                        Ok(Some(key)) => match key.admit(ip, now) {
                            Ok(verified) => {
                                shared.admit_api_key(&mut req, verified.clone());
                                return inner.call(req).await;
                            }
                            Err(r) => AuthFailure::ApiKey(r.reason()),
                        },
                        Ok(None) => AuthFailure::ApiKey("unknown_api_key"),
                        Err(e) => {
                            tracing::warn!(target: "rampart::auth", error = %e, "API key lookup failed");
                            AuthFailure::ApiKeysUnavailable
                        }
                    };
                    Ok(shared.refusal(&req, failure))
                }))
            }
        }
    }

    fn admit_api_key(&self, req: &mut HttpRequest, verified: Verified) {
        // The key is a credential for the gateway: the upstream gets the identity.
        req.headers_mut().remove(&self.settings.api_key_header);
        if api_key_scheme(req.headers()).is_some() {
            req.headers_mut().remove(AUTHORIZATION);
        }
        self.admit(req, verified);
    }

    fn refused_now<F>(&self, req: &HttpRequest, failure: AuthFailure) -> Either<F, LayerFuture> {
        let resp = self.refusal(req, failure);
        Either::Right(Box::pin(async move { Ok(resp) }))
    }

    fn is_own(&self, issuer: usize) -> bool {
        self.own.as_ref().is_some_and(|(own, _)| *own == issuer)
    }

    /// The principal of `token`, or why not (with the issuer it named, when
    /// that issuer's keys were tried).
    fn authenticate(&self, token: &str) -> Result<Verified, (AuthFailure, Option<usize>)> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let verified = self.verify(token, now_ms / 1000)?;
        if let (Some(revocable), Some((_, identity))) = (&verified.revocable, &self.own) {
            let revocations = &identity.revocations;
            if !revocations.is_current(now_ms) {
                return Err((AuthFailure::RevocationUnknown, None));
            }
            if revocations.is_revoked(&verified.principal.subject, revocable.jti.as_deref(), revocable.ver) {
                return Err((AuthFailure::Revoked, None));
            }
        }
        Ok(verified)
    }

    /// The verified token, from the cache or by checking its signature and claims.
    fn verify(&self, token: &str, now: u64) -> Result<Verified, (AuthFailure, Option<usize>)> {
        if let Some(verified) = self.cache.get_checked(token, now, |stamp| self.keys_unchanged(stamp)) {
            return Ok(verified);
        }
        if token.len() > self.settings.max_token_bytes {
            return Err((AuthFailure::Token(TokenError::TooLarge), None));
        }
        let issuer = if self.issuers.len() == 1 {
            0
        } else {
            let iss = unverified_issuer(token).ok_or((AuthFailure::Token(TokenError::Malformed), None))?;
            self.issuers.iter().position(|k| k.issuer == iss).ok_or((AuthFailure::UnknownIssuer, None))?
        };
        let keys = self.issuers.get(issuer).ok_or((AuthFailure::UnknownIssuer, None))?;
        let verifier = match &self.own {
            Some((own, identity)) if *own == issuer => identity.verifier(),
            _ => keys.verifier(),
        };
        let claims = verifier.verify(token, now).map_err(|e| (AuthFailure::Token(e), Some(issuer)))?;
        let revocable = self
            .own
            .as_ref()
            .filter(|(own, _)| *own == issuer)
            .map(|_| Revocable { jti: claims.jti.clone(), ver: claims.ver });
        let own_user = revocable.is_some();
        let external = (!own_user).then(|| keys.issuer.clone());
        let verified =
            Verified { principal: principal_of(&claims, external), revocable, own_user, internal: Default::default() };
        let stamp = KeyStamp { issuer, keys: Arc::downgrade(&verifier) };
        self.cache.insert_stamped(token, verified.clone(), claims.exp, Some(stamp));
        Ok(verified)
    }

    /// Whether the keys that verified a cached token are still its issuer's
    /// (see [`KeyStamp`]).
    fn keys_unchanged(&self, stamp: &KeyStamp) -> bool {
        let current = match &self.own {
            Some((own, identity)) if *own == stamp.issuer => identity.verifier_ptr(),
            _ => match self.issuers.get(stamp.issuer) {
                Some(keys) => keys.verifier_ptr(),
                None => return false,
            },
        };
        std::ptr::eq(stamp.keys.as_ptr(), current)
    }

    /// The `403 csrf` for a token from the route's cookie on an unsafe
    /// method or a WebSocket handshake whose request comes from elsewhere than our own origin, the
    /// sessions' `allowed_origins` or the route's credentialed CORS origins
    /// (see [`csrf`]); `None` when the request may go on.
    fn cross_site(&self, req: &HttpRequest, source: TokenSource, verified: &Verified) -> Option<HttpResponse> {
        if source != TokenSource::Cookie || (csrf::is_safe(req.method()) && !csrf::is_handshake(req)) {
            return None;
        }
        let sessions = self.sessions();
        let cors =
            req.extensions().get::<MatchedRoute>().and_then(|r| r.0.cors.as_ref()).filter(|c| c.allows_credentials());
        let allowed = |origin: &str| {
            sessions.is_some_and(|s| s.settings.allowed_origins.iter().any(|p| p.matches(origin)))
                || cors.is_some_and(|c| c.allows_origin(origin))
        };
        let failure = csrf::check_source_with(req.headers(), req.extensions(), req.uri(), allowed).err()?;
        Some(csrf::refusal(&self.state, req.extensions(), Some(&verified.principal.subject), failure))
    }

    fn admit(&self, req: &mut HttpRequest, verified: Verified) {
        let headers = &self.settings.headers;
        set_identity_headers(req.headers_mut(), headers, &verified.principal);
        if let (Some(internal), Some((_, identity))) = (&headers.internal_jwt, &self.own) {
            if let Some(value) = internal_jwt(identity, internal, &verified) {
                req.headers_mut().insert(internal.header.clone(), value);
            }
        }
        if verified.own_user {
            req.extensions_mut().insert(authorize::OwnUser(verified.principal.subject.clone()));
        }
        req.extensions_mut().insert(verified.principal);
    }

    /// The refusal of a bearer token read from `source`. A token from the
    /// route's `auth_cookie` that has expired (or is not valid yet, or was
    /// revoked at logout) is what a browser keeps sending until the cookie
    /// goes: refused, but not struck towards a ban, as a stale session
    /// cookie is not. A forged or malformed one is struck wherever it came from.
    fn token_refusal(&self, req: &HttpRequest, failure: AuthFailure, source: TokenSource) -> HttpResponse {
        let stale = source == TokenSource::Cookie
            && matches!(
                failure,
                AuthFailure::Token(TokenError::Expired | TokenError::NotYetValid) | AuthFailure::Revoked
            );
        self.refuse(req, failure, !stale)
    }

    /// The 401 for `failure`, with its side effects (log, ban strike, audit).
    fn refusal(&self, req: &HttpRequest, failure: AuthFailure) -> HttpResponse {
        self.refuse(req, failure, true)
    }

    /// The 401 for `failure`, with its side effects (log, audit, and a ban
    /// strike when `strike` and the failure is one that earns strikes).
    fn refuse(&self, req: &HttpRequest, failure: AuthFailure, strike: bool) -> HttpResponse {
        let reason = failure.reason();
        if matches!(
            failure,
            AuthFailure::RevocationUnknown
                | AuthFailure::ApiKeysUnavailable
                | AuthFailure::SessionsUnavailable
                | AuthFailure::SignaturesUnavailable(_)
        ) {
            tracing::warn!(target: "rampart::auth", reason, "credential refused: it cannot be checked right now");
            let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
                .detail("sign-in state cannot be checked right now; try again shortly")
                .rejected_by("auth", reason)
                .into_response_for(req.extensions());
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        if failure != AuthFailure::Missing {
            let method = failure.method();
            tracing::info!(target: "rampart::auth", reason, method, ip = ?ip, "credential refused");
            // A stale session cookie is what browsers keep: no strike for it.
            if let (Some(ip), true) = (ip, strike && !matches!(failure, AuthFailure::Session(_))) {
                self.state.strike(ip, Strike::AuthFailure);
            }
            let key = format!("auth|{}|{reason}", ip.map(|i| i.to_string()).unwrap_or_default());
            self.state.audit_once(&key, || {
                let mut event =
                    AuditEvent::new(AuditKind::AuthFailure).detail("method", method).detail("reason", reason);
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
        resp
    }
}

/// Where a request's bearer token was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenSource {
    /// `Authorization: Bearer …`.
    Header,
    /// The route's `auth_cookie`: sent by the browser by itself, so subject
    /// to the CSRF source check.
    Cookie,
    /// The route's `auth_query`.
    Query,
}

/// The bearer token and where it came from: `Authorization` first, then the
/// route's cookie, then its query parameter. Empty values count as absent.
fn token_of(req: &HttpRequest, route: &RouteAuth) -> Option<(String, TokenSource)> {
    if let Some(token) = bearer_token(req.headers()) {
        return Some((token.to_string(), TokenSource::Header));
    }
    if let Some(name) = &route.cookie {
        for header in req.headers().get_all(COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            for pair in header.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if k == name && !v.is_empty() {
                        return Some((v.trim_matches('"').to_string(), TokenSource::Cookie));
                    }
                }
            }
        }
    }
    if let (Some(name), Some(query)) = (&route.query, req.uri().query()) {
        return form_urlencoded::parse(query.as_bytes())
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| (v.into_owned(), TokenSource::Query));
    }
    None
}

/// An API key presented with a request: the SHA-256 of a well-formed key,
/// or why what was presented is not one.
enum Presented {
    Key([u8; 32]),
    Refused(&'static str),
}

/// The SHA-256 of the API key a request presents, as the bearer layer reads
/// it (`header`: the `[auth] api_key_header`); `Some(None)` when the
/// presented key is malformed.
pub(crate) fn presented_api_key(headers: &http::HeaderMap, header: &str) -> Option<Option<[u8; 32]>> {
    let name = HeaderName::from_bytes(header.as_bytes()).ok()?;
    api_key_of(headers, &name).map(|p| match p {
        Presented::Key(hash) => Some(hash),
        Presented::Refused(_) => None,
    })
}

/// The API key of a request: `Authorization: ApiKey <key>`, else the key
/// header when `Authorization` holds no bearer token. Anything longer than
/// a key can be is refused unread.
fn api_key_of(headers: &http::HeaderMap, header: &HeaderName) -> Option<Presented> {
    let raw = match api_key_scheme(headers) {
        Some(value) => value,
        None if bearer_token(headers).is_some() => return None,
        None => headers.get(header)?.as_bytes(),
    };
    let raw = raw.trim_ascii();
    if raw.len() > rampart_core::api_key::MAX_KEY_LEN {
        return Some(Presented::Refused(KeyError::Malformed.reason()));
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return Some(Presented::Refused(KeyError::Malformed.reason()));
    };
    Some(match ApiKey::parse(text) {
        Ok(key) => Presented::Key(crate::identity::api_keys::key_digest(key.as_str())),
        Err(e) => Presented::Refused(e.reason()),
    })
}

/// The credential of an `Authorization: ApiKey …` header (scheme in any case).
fn api_key_scheme(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    (scheme.eq_ignore_ascii_case(b"apikey ")).then_some(rest)
}

/// The token of an `Authorization: Bearer …` header (scheme in any case).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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

/// The internal JWT for a verified caller: the one made earlier for the same
/// token while more than half its life remains, else a fresh one.
fn internal_jwt(
    identity: &crate::identity::IdentityService,
    settings: &rampart_core::config::auth::InternalJwt,
    verified: &Verified,
) -> Option<HeaderValue> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut slot = verified.internal.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((value, exp)) = slot.as_ref() {
        if exp.saturating_sub(now) > settings.ttl_secs / 2 {
            return Some(value.clone());
        }
    }
    let token = identity.internal_token(&verified.principal, &settings.audience, settings.ttl_secs, now)?;
    let value = HeaderValue::from_str(&token).ok()?;
    *slot = Some((value.clone(), now.saturating_add(settings.ttl_secs)));
    Some(value)
}

/// `issuer`: the external issuer that signed the token (`None` for our own).
fn principal_of(claims: &Claims, issuer: Option<String>) -> Principal {
    Principal {
        subject: claims.sub.clone(),
        api_key_id: None,
        issuer,
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
    if let Some(issuer) = &p.issuer {
        set(&names.issuer, issuer);
    }
}

#[cfg(test)]
mod tests;
