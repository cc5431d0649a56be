//! The identity API over HTTP, as a layer: requests under `[identity] prefix`
//! and the two discovery documents are answered here; everything else passes.
//!
//! - `POST {prefix}/register` — JSON `{"username", "password", "email"?}` →
//!   201 `{"id", "username"}` (only with `registration = true`).
//! - `POST {prefix}/token` — OAuth2 token endpoint (RFC 6749), form-encoded
//!   exactly as FastAPI's `OAuth2PasswordRequestForm` and Swagger UI send it:
//!   `grant_type=password&username=…&password=…`, or
//!   `grant_type=refresh_token&refresh_token=…`. Answers
//!   `{"access_token", "token_type": "bearer", "expires_in", "refresh_token"}`,
//!   or an RFC 6749 error (`invalid_grant` for every bad credential alike).
//!   Service clients use `grant_type=client_credentials` (`scope=…` optional),
//!   authenticated by HTTP Basic or `client_id`/`client_secret` form fields
//!   (see [`super::client_auth`]); they get an access token without a refresh
//!   token, or 401 `invalid_client` for every bad client alike.
//! - `POST {prefix}/logout` — ends the session: the bearer access token (if
//!   one is sent) is revoked until it expires, and form `refresh_token=…` (if
//!   sent) ends its family. At least one of the two. 204.
//! - `POST {prefix}/logout/all` — with a bearer token: "log out everywhere"
//!   (every access token of the user refused, every refresh token revoked). 204.
//! - `POST {prefix}/password/forgot` — JSON `{"username"}` or `{"email"}` → 202,
//!   the same for every account and none; the token is made and sent in the
//!   background (see [`super::reset`]). Only with `[identity.reset]` on.
//! - `POST {prefix}/password/reset` — JSON `{"token", "new_password"}` → 204;
//!   one 400 `invalid-reset-token` for every bad token, 400 `weak-password`
//!   naming the rules a refused password broke.
//! - `{prefix}/passkeys/…` — passkeys (WebAuthn), see [`super::passkey_http`].
//! - Second factors under `{prefix}/mfa`, and the second login step
//!   (`grant_type=urn:rampart:params:oauth:grant-type:mfa-otp`): see
//!   [`super::mfa_http`]. A password grant for a user with a second factor
//!   answers 403 `{"error": "mfa_required", "mfa_token", "mfa_methods"}`.
//! - `{prefix}/api-keys…` — the caller's API keys (see [`super::api_keys::http`]).
//! - `{prefix}/admin/…` — the admin API (see [`super::admin_http`]).
//! - `{prefix}/oidc/…` — logins through external OpenID Connect providers
//!   and the caller's linked accounts (see [`super::oidc::http`]).
//! - `GET /.well-known/jwks.json`, `GET /.well-known/openid-configuration`.
//! - `GET {prefix}/openapi.json` — the OpenAPI document of all of these
//!   (see [`super::openapi`]).
//!
//! The layer sits below the guards, limits and the bearer-token layer, so the
//! endpoints get body limits, rate limits and bans like any route. Failed
//! logins are strikes towards an automatic ban and audit events, and wrong
//! passwords count towards the account's lockout; so do wrong current
//! passwords and codes at `POST {prefix}/password` and `DELETE {prefix}/me`,
//! which a locked account cannot use either (even the right password gets
//! the wrong one's answer).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::Either;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use rampart_core::client_ip::ClientInfo;
use serde::Deserialize;
use tower::{Layer, Service};

use super::client_auth::{client_credentials, ClientAuthError, Method as ClientMethod};
use super::mfa::{CodeRefusal, MFA_OTP_GRANT};
use super::mfa_http::MfaEndpoint;
use super::reset::ResetTarget;
use super::service::{now_ms, IdentityError, IdentityService, IssuedTokens};
use super::session_http::SessionEndpoint;
use crate::edge::request_id::RequestId;
use crate::edge::{HttpRequest, HttpResponse, Inner, LayerFuture};
use crate::limit::bans::Strike;
use crate::limit::{GcraParams, LimitCheck, LimitState, Op};
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;
use rampart_core::config::model::RedisFallback;

/// Largest request body the endpoints read.
const MAX_BODY: usize = 16 * 1024;

#[derive(Clone)]
pub struct IdentityLayer {
    service: Option<Arc<IdentityService>>,
    state: Arc<LimitState>,
}

impl IdentityLayer {
    /// `service`: `None` when the identity API is off (everything passes).
    pub fn new(service: Option<Arc<IdentityService>>, state: Arc<LimitState>) -> Self {
        Self { service, state }
    }
}

impl<S> Layer<S> for IdentityLayer {
    type Service = IdentityHttp<S>;
    fn layer(&self, inner: S) -> Self::Service {
        IdentityHttp { inner, service: self.service.clone(), state: self.state.clone() }
    }
}

#[derive(Clone)]
pub struct IdentityHttp<S> {
    inner: S,
    service: Option<Arc<IdentityService>>,
    state: Arc<LimitState>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Register,
    Token,
    /// `GET` the caller's account, `DELETE` it (erasure).
    Me,
    /// The caller's personal data as JSON.
    Export,
    Password,
    Logout,
    LogoutAll,
    Forgot,
    Reset,
    Jwks,
    Discovery,
    /// The OpenAPI document of these endpoints (see [`super::openapi`]).
    OpenApi,
    /// Everything under `{prefix}/passkeys` (see [`super::passkey_http`]).
    Passkeys,
    Mfa(MfaEndpoint),
    /// Browser sessions (see [`super::session_http`]).
    Session(SessionEndpoint),
}

/// A sub-API that routes the rest of its path itself.
#[derive(Clone, Copy)]
enum Tree {
    ApiKeys,
    Admin,
    Oidc,
}

impl<S: Inner> Service<HttpRequest> for IdentityHttp<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Some(service) = self.service.clone() else {
            return Either::Left(self.inner.call(req));
        };
        let path = req.uri().path();
        let prefix = service.settings.prefix.as_str();
        let endpoint = match path.strip_prefix(prefix) {
            Some("/register") => Some(Endpoint::Register),
            Some("/token") => Some(Endpoint::Token),
            Some("/logout") => Some(Endpoint::Logout),
            Some("/logout/all") => Some(Endpoint::LogoutAll),
            Some("/me") => Some(Endpoint::Me),
            Some("/me/export") => Some(Endpoint::Export),
            Some("/password") => Some(Endpoint::Password),
            Some("/password/forgot") => Some(Endpoint::Forgot),
            Some("/password/reset") => Some(Endpoint::Reset),
            Some("/openapi.json") => Some(Endpoint::OpenApi),
            Some(p) if p == "/passkeys" || p.starts_with("/passkeys/") => Some(Endpoint::Passkeys),
            Some(rest) if rest.starts_with("/mfa") => MfaEndpoint::of(rest).map(Endpoint::Mfa),
            Some(rest) if rest.starts_with("/session") || rest == "/csrf" => {
                SessionEndpoint::of(rest).map(Endpoint::Session)
            }
            _ => match path {
                "/.well-known/jwks.json" => Some(Endpoint::Jwks),
                "/.well-known/openid-configuration" => Some(Endpoint::Discovery),
                _ => None,
            },
        };
        // The sub-APIs with routing of their own, `{prefix}/api-keys`, `/admin`
        // and `/oidc` and below: see their modules.
        let tree = path.strip_prefix(prefix).and_then(|p| {
            [("/api-keys", Tree::ApiKeys), ("/admin", Tree::Admin), ("/oidc", Tree::Oidc)].into_iter().find_map(
                |(name, tree)| {
                    let rest = p.strip_prefix(name).filter(|r| r.is_empty() || r.starts_with('/'))?;
                    Some((tree, rest.to_owned()))
                },
            )
        });
        if let Some((tree, rest)) = tree {
            let state = self.state.clone();
            let (pending, mut req) = (PendingCookies::default(), req);
            req.extensions_mut().insert(pending.clone());
            return Either::Right(Box::pin(async move {
                let mut resp = match tree {
                    Tree::ApiKeys => super::api_keys::http::handle(&service, &state, &rest, req).await,
                    Tree::Admin => super::admin_http::handle(&service, &state, &rest, req).await,
                    Tree::Oidc => super::oidc::http::handle(&service, &state, &rest, req).await,
                };
                pending.apply(&mut resp);
                Ok(resp)
            }));
        }
        let Some(endpoint) = endpoint else {
            return Either::Left(self.inner.call(req));
        };
        let state = self.state.clone();
        let (pending, mut req) = (PendingCookies::default(), req);
        req.extensions_mut().insert(pending.clone());
        Either::Right(Box::pin(async move {
            let mut resp = handle(endpoint, &service, &state, req).await;
            pending.apply(&mut resp);
            Ok(resp)
        }))
    }
}

async fn handle(
    endpoint: Endpoint,
    service: &Arc<IdentityService>,
    state: &Arc<LimitState>,
    req: HttpRequest,
) -> HttpResponse {
    if endpoint == Endpoint::Passkeys {
        return super::passkey_http::handle(service, state, req).await;
    }
    if let Endpoint::Session(e) = endpoint {
        return super::session_http::handle(e, service, state, req).await;
    }
    if endpoint == Endpoint::Me && req.method() == Method::DELETE {
        return erase_me(service, state, req).await;
    }
    let wanted = match endpoint {
        Endpoint::Jwks | Endpoint::Discovery | Endpoint::OpenApi | Endpoint::Me | Endpoint::Export => Method::GET,
        Endpoint::Mfa(e) => e.method(),
        _ => Method::POST,
    };
    if req.method() != wanted {
        return Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
            .detail(format!("use {wanted}"))
            .rejected_by("identity", "method")
            .into_response_for(req.extensions());
    }
    match endpoint {
        Endpoint::Jwks => json(StatusCode::OK, &service.jwks()),
        Endpoint::Discovery => json(StatusCode::OK, &discovery(service)),
        Endpoint::OpenApi => json(StatusCode::OK, &super::openapi::document(service)),
        Endpoint::Register => register(service, req).await,
        Endpoint::Me | Endpoint::Password | Endpoint::LogoutAll | Endpoint::Export => {
            account(endpoint, service, state, req).await
        }
        Endpoint::Token => token_for(service, state, req, Finish::Tokens).await,
        Endpoint::Passkeys | Endpoint::Session(_) => empty(StatusCode::NOT_FOUND),
        Endpoint::Forgot => forgot(service, state, req).await,
        Endpoint::Reset => reset(service, state, req).await,
        Endpoint::Mfa(e) => super::mfa_http::handle(e, service, state, req).await,
        Endpoint::Logout => {
            // The session cookie is sent by the browser by itself: another
            // site must not end the session (the source check, as for every
            // cookie-authenticated unsafe request).
            if let Some(sessions) = service.sessions.as_ref().filter(|s| s.token_in(req.headers()).is_some()) {
                if let Err(f) = crate::auth::csrf::check_source(sessions, req.headers(), req.extensions(), req.uri()) {
                    return crate::auth::csrf::refusal(state, req.extensions(), None, f);
                }
            }
            let bearer = crate::auth::bearer_token(req.headers()).map(str::to_owned);
            let has_body = req.headers().contains_key(CONTENT_TYPE);
            // A refresh token comes in a form; a request with neither a body
            // nor a bearer token nor a session cookie is told what to send.
            // A browser's body-less logout with its session cookie ends the
            // session below.
            let has_session = service.sessions.as_ref().is_some_and(|s| s.token_in(req.headers()).is_some());
            let (req, form) = if has_body || (bearer.is_none() && !has_session) {
                match read_form(req).await {
                    Ok(x) => x,
                    Err(resp) => return resp,
                }
            } else {
                (req, TokenForm::default())
            };
            let refresh = form.refresh_token.filter(|t| !t.is_empty());
            let audit_logout = |req: &HttpRequest| {
                let mut event = AuditEvent::new(AuditKind::SessionChanged).detail("action", "logout");
                if let Some(id) = req.extensions().get::<RequestId>() {
                    event = event.request_id(id.as_str());
                }
                if let Some(ip) = req.extensions().get::<ClientInfo>().map(|c| c.ip) {
                    event = event.ip(ip);
                }
                state.audit(event);
            };
            // A browser session ends here too (DELETE {prefix}/session is its own form).
            let session = service.sessions.as_ref().and_then(|s| s.token_in(req.headers()).map(|t| (s.clone(), t)));
            if let Some((sessions, token)) = &session {
                if let Err(e) = sessions.end(&crate::store::identity::TokenHash::of(token)).await {
                    return internal(&req, &IdentityError::from(e));
                }
                for c in sessions.clearing_cookies() {
                    PendingCookies::push(req.extensions(), c);
                }
                if bearer.is_none() && refresh.is_none() {
                    audit_logout(&req);
                    return empty(StatusCode::NO_CONTENT);
                }
            }
            if bearer.is_none() && refresh.is_none() {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "send the access token (Authorization: Bearer) or refresh_token",
                );
            }
            if let Some(token) = bearer {
                if let Err(e) = service.revoke_access_token(&token).await {
                    return internal(&req, &e);
                }
            }
            if let Some(refresh) = refresh {
                if let Err(e) = service.logout(&refresh).await {
                    return internal(&req, &e);
                }
            }
            audit_logout(&req);
            empty(StatusCode::NO_CONTENT)
        }
    }
}

fn discovery(service: &IdentityService) -> serde_json::Value {
    let s = &service.settings;
    let base = s.issuer.trim_end_matches('/');
    serde_json::json!({
        "issuer": s.issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "token_endpoint": format!("{base}{}/token", s.prefix),
        "grant_types_supported": ["password", "refresh_token", "client_credentials", MFA_OTP_GRANT],
        // `none` for the password and refresh grants (public clients).
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    })
}

#[derive(Deserialize)]
struct RegisterBody {
    username: String,
    password: String,
    email: Option<String>,
}

async fn register(service: &IdentityService, req: HttpRequest) -> HttpResponse {
    if !service.settings.registration {
        return Problem::new(StatusCode::FORBIDDEN, "registration-closed", "Registration closed")
            .detail("accounts are created by an administrator")
            .rejected_by("identity", "registration_closed")
            .into_response_for(req.extensions());
    }
    let (req, body) = match read_json::<RegisterBody>(req, "{\"username\", \"password\", \"email\"?}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match service.register(&body.username, body.email.as_deref(), &body.password).await {
        Ok(user) => json(StatusCode::CREATED, &serde_json::json!({"id": user.id, "username": user.username})),
        Err(IdentityError::WeakPassword(violations)) => weak_password(&req, &violations),
        Err(IdentityError::Taken(field)) => Problem::new(StatusCode::CONFLICT, "taken", "Already taken")
            .detail(format!("that {field} is already registered"))
            .rejected_by("identity", "taken")
            .into_response_for(req.extensions()),
        Err(IdentityError::BadInput(msg)) => bad_request(&req, &msg),
        Err(IdentityError::Busy) => busy(),
        Err(e) => internal(&req, &e),
    }
}

#[derive(Deserialize)]
struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// `GET {prefix}/me`, `POST {prefix}/password` and `POST {prefix}/logout/all`:
/// the caller's own account,
/// named by a bearer token of ours.
async fn account(endpoint: Endpoint, service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    let user = match signed_in_user(service, state, Head::of(&req)).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    if endpoint == Endpoint::Me {
        return json(StatusCode::OK, &super::admin::user_json(&user));
    }
    if endpoint == Endpoint::Export {
        return match service.export_account(&user).await {
            Ok(data) => {
                state.audit(
                    AuditEvent::new(AuditKind::AdminAction).subject(user.id.clone()).detail("action", "data_exported"),
                );
                let mut resp = json_no_store(&data);
                resp.headers_mut().insert(
                    http::header::CONTENT_DISPOSITION,
                    http::HeaderValue::from_static("attachment; filename=\"rampart-account.json\""),
                );
                resp
            }
            Err(e) => internal(&req, &e),
        };
    }
    if endpoint == Endpoint::LogoutAll {
        return match service.log_out_everywhere(&user.id).await {
            Ok(()) => {
                state.audit(
                    AuditEvent::new(AuditKind::SessionChanged).subject(user.id.clone()).detail("action", "logout_all"),
                );
                empty(StatusCode::NO_CONTENT)
            }
            Err(e) => internal(&req, &e),
        };
    }
    let (req, body) = match read_json::<PasswordBody>(req, "{\"current_password\", \"new_password\"}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match service.change_password(&user, &body.current_password, &body.new_password).await {
        Ok(()) => {
            state.audit(
                AuditEvent::new(AuditKind::PasswordChanged)
                    .subject(user.id.clone())
                    .detail("action", "password_changed"),
            );
            empty(StatusCode::NO_CONTENT)
        }
        Err(IdentityError::InvalidGrant { reason, .. }) => {
            // Counted like a wrong password at login: these are guesses too.
            super::mfa_http::record_failure(service, state, req.extensions(), Some(&user.id), "password", reason).await;
            Problem::new(StatusCode::FORBIDDEN, "wrong-password", "Wrong password")
                .detail("the current password is not correct")
                .rejected_by("identity", "wrong_password")
                .into_response_for(req.extensions())
        }
        Err(IdentityError::WeakPassword(violations)) => weak_password(&req, &violations),
        Err(IdentityError::Busy) => busy(),
        Err(e) => internal(&req, &e),
    }
}

#[derive(Deserialize)]
struct EraseBody {
    /// The current password (accounts with one).
    password: Option<String>,
    /// A TOTP or backup code, instead of the password.
    code: Option<String>,
    /// The username, typed again (accounts without a password or second factor).
    confirm: Option<String>,
}

/// `DELETE {prefix}/me`: the caller erases their own account, proving it
/// again first (password, code, or — for accounts with neither — the
/// username typed again).
async fn erase_me(service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    let who = match signed_in(service, state, Head::of(&req)).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let recent = super::mfa_http::not_signed_in_recently(&who, req.extensions());
    let user = who.user;
    let (req, body) = match read_json::<EraseBody>(req, "{\"password\"}, {\"code\"} or {\"confirm\": username}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    // Why the proof was refused (method, reason), if it was: wrong passwords
    // and codes are recorded as at login, counting towards the lockout.
    let refusal = match (&body.password, &body.code, &body.confirm) {
        (Some(p), None, None) => match service.reprove_password(&user, p).await {
            Ok(()) => None,
            Err(IdentityError::InvalidGrant { reason, .. }) => Some(("password", reason)),
            Err(IdentityError::Busy) => return busy(),
            Err(e) => return internal(&req, &e),
        },
        (None, Some(c), None) => match service.check_second_factor(&user.id, c).await {
            Ok(kind) if user.is_locked(now_ms()) => Some((kind.as_str(), "locked")),
            Ok(_) => None,
            Err(CodeRefusal::Refused(r)) => Some((r.kind.map_or("otp", |k| k.as_str()), r.reason)),
            Err(CodeRefusal::Failed(e)) => return internal(&req, &e),
        },
        (None, None, Some(name)) => {
            let has_factor = service.mfa_methods(&user.id).await.map(|m| !m.is_empty()).unwrap_or(true);
            // Retyping the username proves no secret: a mistake is no guess,
            // and is refused without counting towards the lockout. It
            // stands for a proof only after a recent sign-in.
            let confirmed = user.password_hash.is_none() && !has_factor && name == &user.username;
            if confirmed {
                if let Some(refusal) = recent {
                    return refusal;
                }
            }
            (!confirmed).then_some(("confirm", "not_confirmed"))
        }
        _ => return bad_request(&req, "send one of password, code or confirm"),
    };
    if let Some((method, reason)) = refusal {
        super::mfa_http::record_failure(service, state, req.extensions(), Some(&user.id), method, reason).await;
        return Problem::new(StatusCode::FORBIDDEN, "invalid-credentials", "Not confirmed")
            .detail("the password, code or confirmation is not correct")
            .rejected_by("identity", "erase_not_confirmed")
            .into_response_for(req.extensions());
    }
    match service.erase_account(&user.id).await {
        Ok(_) => {
            state.audit(
                AuditEvent::new(AuditKind::AdminAction).subject(user.id.clone()).detail("action", "account_erased"),
            );
            let mut resp = empty(StatusCode::NO_CONTENT);
            if let Some(sessions) = &service.sessions {
                for c in sessions.clearing_cookies() {
                    resp.headers_mut().append(http::header::SET_COOKIE, c);
                }
            }
            resp
        }
        Err(e) => internal(&req, &e),
    }
}

/// The 401 for a missing or invalid bearer token.
pub(super) fn unauthorized_for(ext: &http::Extensions) -> HttpResponse {
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
        .detail("a valid bearer token or session is required")
        .rejected_by("identity", "unauthenticated")
        .into_response_for(ext);
    resp.headers_mut()
        .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer realm=\"rampart\""));
    resp
}

/// Who called an account endpoint: the user, and the session when the
/// browser's session cookie (not a bearer token) said so.
pub(crate) struct SignedIn {
    pub user: crate::store::identity::User,
    pub session: Option<super::sessions::ActiveSession>,
    /// How long ago (ms) the caller signed in, where known: a session's
    /// start, or a login's access token's `auth_time` (a refreshed token's
    /// is not known).
    pub signed_in_ago_ms: Option<u64>,
}

/// `Set-Cookie` values a handler wants on its response (a session given a
/// new token while the request was authenticated, a stale cookie cleared);
/// [`IdentityHttp`] adds them.
#[derive(Clone, Default)]
pub(crate) struct PendingCookies(Arc<std::sync::Mutex<Vec<http::HeaderValue>>>);

impl PendingCookies {
    fn push(ext: &http::Extensions, value: http::HeaderValue) {
        if let Some(p) = ext.get::<PendingCookies>() {
            p.0.lock().unwrap_or_else(|e| e.into_inner()).push(value);
        }
    }

    pub(crate) fn apply(&self, resp: &mut HttpResponse) {
        for v in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
}

/// The user a request's bearer token of ours names (valid, not revoked), or
/// the answer to give instead: 401, or 500 when the store failed. Every
/// account endpoint starts here.
pub(super) async fn signed_in_user(
    service: &IdentityService,
    state: &LimitState,
    req: Head<'_>,
) -> Result<crate::store::identity::User, HttpResponse> {
    signed_in(service, state, req).await.map(|w| w.user)
}

/// The parts of a request an account endpoint authenticates with (not the
/// request itself: its body is not `Sync`, so it cannot be borrowed across
/// an await).
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub method: &'a Method,
    pub uri: &'a http::Uri,
    pub headers: &'a http::HeaderMap,
    pub ext: &'a http::Extensions,
}

impl<'a> Head<'a> {
    pub(crate) fn of(req: &'a HttpRequest) -> Self {
        Self { method: req.method(), uri: req.uri(), headers: req.headers(), ext: req.extensions() }
    }

    pub(super) fn of_parts(req: &'a http::request::Parts) -> Self {
        Self { method: &req.method, uri: &req.uri, headers: &req.headers, ext: &req.extensions }
    }
}

/// 503 for a credential that cannot be checked right now (the revocation or
/// API-key poll is stale, the session store is down), with `Retry-After`.
pub(crate) fn sign_in_unavailable(ext: &http::Extensions, reason: &'static str) -> HttpResponse {
    let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
        .detail("sign-in state cannot be checked right now; try again shortly")
        .rejected_by("identity", reason)
        .into_response_for(ext);
    resp.headers_mut().insert(RETRY_AFTER, http::HeaderValue::from_static("5"));
    resp
}

/// As [`signed_in_user`], with the session: a bearer token of ours, else
/// (with `[identity.sessions]`) the session cookie, which on unsafe methods
/// must pass the CSRF checks (header token).
pub(crate) async fn signed_in(
    service: &IdentityService,
    state: &LimitState,
    req: Head<'_>,
) -> Result<SignedIn, HttpResponse> {
    let (headers, ext) = (req.headers, req.ext);
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "identity request failed");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            .rejected_by("identity", "internal")
            .into_response_for(ext)
    };
    if let Some(t) = crate::auth::bearer_token(headers) {
        // As the bearer layer: while revocations cannot be polled, a revoked
        // token cannot be told from a good one.
        if !service.revocations.is_current(super::service::now_ms()) {
            return Err(sign_in_unavailable(ext, "revocations_unavailable"));
        }
        return match service.user_of_token(t).await {
            Ok(Some((user, signed_in_ago_ms))) => Ok(SignedIn { user, session: None, signed_in_ago_ms }),
            Ok(None) => Err(unauthorized_for(ext)),
            Err(e) => Err(failed(&e)),
        };
    }
    let Some(sessions) = service.sessions.as_ref() else { return Err(unauthorized_for(ext)) };
    let Some(token) = sessions.token_in(headers) else { return Err(unauthorized_for(ext)) };
    let ip = ext.get::<ClientInfo>().map(|c| c.ip.to_string());
    let background = headers.contains_key(super::sessions::BACKGROUND_HEADER);
    let active = match sessions.authenticate(&token, ip, &service.revocations, background, true).await {
        Ok(a) => a,
        Err(super::sessions::SessionRefusal::Unavailable) => {
            return Err(sign_in_unavailable(ext, "sessions_unavailable"));
        }
        Err(_) => {
            for c in sessions.clearing_cookies() {
                PendingCookies::push(ext, c);
            }
            return Err(unauthorized_for(ext));
        }
    };
    if let Some(c) = active.new_token.as_deref().and_then(|t| sessions.cookie(t)) {
        PendingCookies::push(ext, c);
    }
    if !crate::auth::csrf::is_safe(req.method) {
        let checked = crate::auth::csrf::check_source(sessions, headers, ext, req.uri)
            .and_then(|()| crate::auth::csrf::check_token(sessions, &active.hash(), headers, None));
        if let Err(f) = checked {
            return Err(crate::auth::csrf::refusal(state, ext, Some(&active.record.user_id), f));
        }
    }
    match crate::store::identity::UserStore::user_by_id(&service.db, &active.record.user_id).await {
        Ok(Some(user)) if !user.disabled => {
            let signed_in_ago_ms = Some(sessions.clock.now_ms().saturating_sub(active.record.created_at));
            Ok(SignedIn { user, session: Some(active), signed_in_ago_ms })
        }
        Ok(_) => Err(unauthorized_for(ext)),
        Err(e) => Err(failed(&e)),
    }
}

/// Where a request came from, for audit events made after it was answered.
struct Origin {
    ip: Option<std::net::IpAddr>,
    request_id: Option<String>,
}

impl Origin {
    fn of(req: &HttpRequest) -> Self {
        Self {
            ip: req.extensions().get::<ClientInfo>().map(|c| c.ip),
            request_id: req.extensions().get::<RequestId>().map(|id| id.as_str().to_owned()),
        }
    }

    fn event(&self, kind: AuditKind, subject: Option<&str>) -> AuditEvent {
        let mut event = AuditEvent::new(kind);
        if let Some(s) = subject {
            event = event.subject(s.to_owned());
        }
        if let Some(ip) = self.ip {
            event = event.ip(ip);
        }
        if let Some(id) = &self.request_id {
            event = event.request_id(id.clone());
        }
        event
    }
}

fn reset_off(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::FORBIDDEN, "reset-disabled", "Password reset disabled")
        .detail("ask an administrator to reset the password")
        .rejected_by("identity", "reset_disabled")
        .into_response_for(req.extensions())
}

#[derive(Deserialize)]
struct ForgotBody {
    username: Option<String>,
    email: Option<String>,
}

/// `POST {prefix}/password/forgot`: 202 whatever the account; the work is a
/// background job, so the answer's timing reveals nothing either.
async fn forgot(service: &Arc<IdentityService>, state: &Arc<LimitState>, req: HttpRequest) -> HttpResponse {
    if !service.reset_enabled() {
        return reset_off(&req);
    }
    let (req, body) = match read_json::<ForgotBody>(req, "{\"username\"} or {\"email\"}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let target = match (body.username, body.email) {
        (Some(name), None) if !name.trim().is_empty() => ResetTarget::Username(name),
        (None, Some(address)) if !address.trim().is_empty() => ResetTarget::Email(address),
        _ => return bad_request(&req, "send exactly one of username and email"),
    };
    let origin = Origin::of(&req);
    match service.reset_job_slot() {
        Some(slot) => {
            let (service, state) = (service.clone(), state.clone());
            tokio::spawn(async move {
                forgot_job(&service, &state, target, origin).await;
                drop(slot);
            });
        }
        None => tracing::warn!("a password-reset request was dropped: too many are in progress"),
    }
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"status": "accepted", "detail": "if the account exists, a reset message is on its way"}),
    )
}

/// The background half of a reset request. Nothing here reaches the caller.
async fn forgot_job(service: &IdentityService, state: &LimitState, target: ResetTarget, origin: Origin) {
    let requested = |outcome: &'static str, subject: Option<&str>| {
        origin.event(AuditKind::PasswordResetRequested, subject).detail("outcome", outcome)
    };
    let user = match service.reset_account(&target).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            state.audit(requested("unknown_account", None));
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "a password-reset request failed");
            return;
        }
    };
    if over_reset_cap(service, state, &user.id).await {
        state.audit(requested("too_many_requests", Some(&user.id)));
        return;
    }
    match service.send_reset_token(&user).await {
        Ok(()) => state.audit(requested("sent", Some(&user.id))),
        Err(e) => {
            tracing::warn!(user_id = %user.id, error = %e, "a password-reset token was not delivered");
            state.audit(requested("not_delivered", Some(&user.id)));
        }
    }
}

/// Counts a reset request for an account (through the limiter, so shared over
/// Redis when configured). True when it is over `[identity.reset] max_requests`.
async fn over_reset_cap(service: &IdentityService, state: &LimitState, user_id: &str) -> bool {
    let Some(reset) = &service.settings.reset else { return true };
    let Ok(params) = GcraParams::new(reset.max_requests, reset.request_window, reset.max_requests) else {
        return true;
    };
    let check = LimitCheck { key: format!("rl:{{acct:{user_id}}}:reset_requests"), params, weight: 1, op: Op::Check };
    match state.limiter.apply(std::slice::from_ref(&check), &[RedisFallback::Local]).await {
        Ok(d) => d.first().is_some_and(|d| !d.allowed),
        // Fail closed: without a working counter, no mail goes out.
        Err(_) => true,
    }
}

#[derive(Deserialize)]
struct ResetBody {
    token: String,
    new_password: String,
}

/// `POST {prefix}/password/reset`.
async fn reset(service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    if !service.reset_enabled() {
        return reset_off(&req);
    }
    let (req, body) = match read_json::<ResetBody>(req, "{\"token\", \"new_password\"}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let origin = Origin::of(&req);
    match service.reset_password(&body.token, &body.new_password).await {
        Ok(user) => {
            state.audit(origin.event(AuditKind::PasswordReset, Some(&user.id)));
            empty(StatusCode::NO_CONTENT)
        }
        Err(IdentityError::InvalidGrant { reason, user_id }) => {
            if let Some(ip) = origin.ip {
                state.strike(ip, Strike::AuthFailure);
            }
            let event = origin.event(AuditKind::AuthFailure, user_id.as_deref());
            state.audit(event.detail("method", "password_reset").detail("reason", reason));
            let mut resp = Problem::new(StatusCode::BAD_REQUEST, "invalid-reset-token", "Invalid reset token")
                .detail("the reset token is unknown, used or expired; ask for a new one")
                .rejected_by("identity", "invalid_reset_token")
                .into_response_for(req.extensions());
            resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            resp
        }
        Err(IdentityError::WeakPassword(violations)) => weak_password(&req, &violations),
        Err(IdentityError::Busy) => busy(),
        Err(IdentityError::BadInput(msg)) => bad_request(&req, &msg),
        Err(e) => internal(&req, &e),
    }
}

#[derive(Deserialize, Default)]
pub(super) struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
    /// The second login step ([`MFA_OTP_GRANT`]).
    pub(super) mfa_token: Option<String>,
    pub(super) otp: Option<String>,
}

async fn read_form(req: HttpRequest) -> Result<(HttpRequest, TokenForm), HttpResponse> {
    let is_form = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    });
    if !is_form {
        return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "send application/x-www-form-urlencoded"));
    }
    let (parts, body) = req.into_parts();
    let req = HttpRequest::from_parts(parts, Body::empty());
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the body is too large")),
    };
    let mut form = TokenForm::default();
    for (k, v) in form_urlencoded::parse(&bytes) {
        let slot = match &*k {
            "grant_type" => &mut form.grant_type,
            "username" => &mut form.username,
            "password" => &mut form.password,
            "refresh_token" => &mut form.refresh_token,
            "client_id" => &mut form.client_id,
            "client_secret" => &mut form.client_secret,
            "scope" => &mut form.scope,
            "mfa_token" => &mut form.mfa_token,
            "otp" => &mut form.otp,
            _ => continue,
        };
        if slot.is_some() {
            // RFC 6749 §3.2: parameters must not be repeated.
            return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "a parameter is repeated"));
        }
        *slot = Some(v.into_owned());
    }
    Ok((req, form))
}

/// How a completed login is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Finish {
    /// With tokens (the token endpoint).
    Tokens,
    /// With a browser session (`{prefix}/session`).
    Session,
}

/// What a grant produced.
enum Granted {
    Tokens(IssuedTokens),
    /// A login to turn into a session.
    User(crate::store::identity::User),
}

/// The token endpoint (`finish = Tokens`), or its form of it that ends in a
/// browser session (`{prefix}/session`: only the password and MFA grants).
pub(super) async fn token_for(
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
    finish: Finish,
) -> HttpResponse {
    let (req, form) = match read_form(req).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let result = match form.grant_type.as_deref() {
        Some("password") => match (form.username.as_deref(), form.password.as_deref()) {
            (Some(u), Some(p)) if !u.is_empty() => match finish {
                Finish::Tokens => service.login(u, p).await.map(Granted::Tokens),
                Finish::Session => service.password_login(u, p).await.map(Granted::User),
            },
            _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "username and password are required"),
        },
        Some(MFA_OTP_GRANT) => return super::mfa_http::mfa_grant(service, state, req, form, finish).await,
        Some(_) if finish == Finish::Session => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "use password or the mfa-otp grant")
        }
        Some("refresh_token") => match form.refresh_token.as_deref() {
            Some(t) if !t.is_empty() => service.refresh(t).await.map(Granted::Tokens),
            _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "refresh_token is required"),
        },
        Some("client_credentials") => return client_token(service, state, req, form).await,
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "use password, refresh_token or client_credentials",
            )
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
    };
    let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
    let ext = req.extensions();
    let audit = |kind: AuditKind, subject: Option<String>, reason: Option<&'static str>| {
        attempt_event(ext, kind, form.grant_type.as_deref().unwrap_or_default(), subject, reason)
    };
    match result {
        Ok(Granted::Tokens(tokens)) => {
            state.audit(audit(AuditKind::AuthSuccess, Some(tokens.subject.clone()), None));
            json_no_store(&issued(&tokens))
        }
        Ok(Granted::User(user)) => {
            state.audit(audit(AuditKind::AuthSuccess, Some(user.id.clone()), None));
            super::session_http::logged_in(service, state, Head::of(&req), &user, &["pwd"]).await
        }
        Err(IdentityError::InvalidGrant { reason, user_id }) => {
            if let Some(ip) = ip {
                state.strike(ip, Strike::AuthFailure);
            }
            state.audit(audit(AuditKind::AuthFailure, user_id.clone(), Some(reason)));
            if let (Some(id), "bad_credentials") = (&user_id, reason) {
                if count_failure(service, state, id).await {
                    if let Err(e) = service.lock_out(id).await {
                        tracing::error!(error = %e, "could not lock an account after repeated failures");
                    }
                    state.audit(audit(AuditKind::Lockout, user_id.clone(), Some("too_many_failures")));
                }
            }
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the credentials are not valid")
        }
        Err(IdentityError::MfaRequired { user_id, mfa_token, methods }) => {
            // The password was right; no tokens until the second step.
            state.audit(audit(AuditKind::AuthSuccess, Some(user_id), None).detail("step", "password"));
            mfa_required(&mfa_token, &methods, None)
        }
        Err(IdentityError::Busy) => busy(),
        Err(IdentityError::BadInput(_)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the credentials are not valid")
        }
        Err(e) => internal(&req, &e),
    }
}

/// 403 `mfa_required`: the first factor was right, and the second step
/// (`mfa_token` with a code or passkey) is due. Never cached.
pub(super) fn mfa_required(mfa_token: &str, methods: &[&'static str], return_to: Option<&str>) -> HttpResponse {
    let mut body = serde_json::json!({
        "error": "mfa_required",
        "error_description": "a second factor is required",
        "mfa_token": mfa_token,
        "mfa_methods": methods,
    });
    if let (Some(map), Some(r)) = (body.as_object_mut(), return_to) {
        map.insert("return_to".into(), r.into());
    }
    let mut resp = json(StatusCode::FORBIDDEN, &body);
    resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// An audit event for a token request: the grant, the subject (a user or
/// client id, when known), why it failed, the client's address and the
/// request id.
pub(super) fn attempt_event(
    ext: &http::Extensions,
    kind: AuditKind,
    grant: &str,
    subject: Option<String>,
    reason: Option<&'static str>,
) -> AuditEvent {
    let mut event = AuditEvent::new(kind).detail("method", grant.to_owned());
    if let Some(reason) = reason {
        event = event.detail("reason", reason);
    }
    if let Some(s) = subject {
        event = event.subject(s);
    }
    if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
        event = event.ip(ip);
    }
    if let Some(id) = ext.get::<RequestId>() {
        event = event.request_id(id.as_str().to_owned());
    }
    event
}

/// The `client_credentials` grant: client authentication, then a token.
async fn client_token(
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
    form: TokenForm,
) -> HttpResponse {
    const GRANT: &str = "client_credentials";
    // Extensions, not the request, are borrowed across the await: the body is not `Sync`.
    let ext = req.extensions();
    let fail = |reason: &'static str, client_id: Option<String>, basic: bool| {
        if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
            state.strike(ip, Strike::AuthFailure);
        }
        state.audit(attempt_event(ext, AuditKind::AuthFailure, GRANT, client_id, Some(reason)));
        invalid_client(basic)
    };
    let auth = match client_credentials(req.headers(), form.client_id.as_deref(), form.client_secret.as_deref()) {
        Ok(auth) => auth,
        Err(ClientAuthError::Both) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "use one client authentication method")
        }
        Err(ClientAuthError::Missing) => return fail("no_client_authentication", None, true),
        Err(ClientAuthError::MalformedBasic) => return fail("malformed_basic", None, true),
    };
    let basic = auth.method == ClientMethod::Basic;
    match service.client_credentials(&auth.id, &auth.secret, form.scope.as_deref()).await {
        Ok(tokens) => {
            state.audit(attempt_event(ext, AuditKind::AuthSuccess, GRANT, Some(auth.id), None));
            json_no_store(&issued(&tokens))
        }
        Err(IdentityError::InvalidClient { reason, client_id }) => fail(reason, client_id, basic),
        Err(IdentityError::InvalidScope { client_id }) => {
            state.audit(attempt_event(ext, AuditKind::AuthFailure, GRANT, Some(client_id), Some("invalid_scope")));
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "the scope is more than the client may have")
        }
        Err(e) => {
            tracing::error!(error = %e, "identity request failed");
            Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                .rejected_by("identity", "internal")
                .into_response_for(ext)
        }
    }
}

/// 401 `invalid_client` (RFC 6749 §5.2). A client that tried HTTP Basic, or
/// sent no credentials, is told that Basic is the scheme to use.
fn invalid_client(challenge: bool) -> HttpResponse {
    let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    if challenge {
        resp.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Basic realm=\"rampart\""));
    }
    resp
}

/// Counts a wrong password for an account (through the limiter: in Redis when
/// configured, so all instances count together). True when it was one too many.
pub(super) async fn count_failure(service: &IdentityService, state: &LimitState, user_id: &str) -> bool {
    let s = &service.settings;
    if s.max_failures == 0 {
        return false;
    }
    let Ok(params) = GcraParams::new(s.max_failures, s.failure_window, s.max_failures) else { return false };
    let check = LimitCheck { key: format!("rl:{{acct:{user_id}}}:login_failures"), params, weight: 1, op: Op::Check };
    match state.limiter.apply(std::slice::from_ref(&check), &[RedisFallback::Local]).await {
        Ok(d) => d.first().is_some_and(|d| !d.allowed),
        Err(_) => false,
    }
}

pub(super) fn issued(t: &IssuedTokens) -> serde_json::Value {
    let mut v = serde_json::json!({
        "access_token": t.access_token,
        "token_type": "bearer",
        "expires_in": t.expires_in,
    });
    if let Some(map) = v.as_object_mut() {
        if let Some(refresh) = &t.refresh_token {
            map.insert("refresh_token".into(), refresh.clone().into());
        }
        if let Some(scope) = &t.scope {
            map.insert("scope".into(), scope.clone().into());
        }
    }
    v
}

pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let mut resp = http::Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}

/// Token responses must not be cached (RFC 6749 §5.1).
pub(super) fn json_no_store(value: &serde_json::Value) -> HttpResponse {
    let mut resp = json(StatusCode::OK, value);
    resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn empty(status: StatusCode) -> HttpResponse {
    let mut resp = http::Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// An RFC 6749 §5.2 error response.
pub(super) fn oauth_error(status: StatusCode, error: &'static str, description: &'static str) -> HttpResponse {
    let mut resp = json(status, &serde_json::json!({"error": error, "error_description": description}));
    resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn busy() -> HttpResponse {
    let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Too many logins in progress")
        .detail("try again in a moment")
        .rejected_by("identity", "hash_pool_full")
        .into_response_with(None);
    resp.headers_mut().insert(RETRY_AFTER, http::HeaderValue::from_static("1"));
    resp
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes; `shape` names what is expected.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: HttpRequest,
    shape: &str,
) -> Result<(HttpRequest, T), HttpResponse> {
    let (parts, body) = req.into_parts();
    let req = HttpRequest::from_parts(parts, Body::empty());
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(bad_request(&req, "the body is larger than 16 KiB or was cut off")),
    };
    match crate::untrusted_json::from_slice::<T>(&bytes) {
        Ok(v) => Ok((req, v)),
        Err(_) => Err(bad_request(&req, &format!("expected JSON {shape}"))),
    }
}

/// 400 naming every rule the password broke; never cached (it echoes nothing
/// of the password, but describes it).
fn weak_password(req: &HttpRequest, violations: &[rampart_core::password::PolicyViolation]) -> HttpResponse {
    let reasons: Vec<String> = violations.iter().map(ToString::to_string).collect();
    let mut resp = Problem::new(StatusCode::BAD_REQUEST, "weak-password", "Password refused")
        .detail(reasons.join(" "))
        .rejected_by("identity", "weak_password")
        .into_response_for(req.extensions());
    resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn bad_request(req: &HttpRequest, detail: &str) -> HttpResponse {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
        .detail(detail.to_string())
        .rejected_by("identity", "bad_request")
        .into_response_for(req.extensions())
}

pub(super) fn internal(req: &HttpRequest, e: &IdentityError) -> HttpResponse {
    tracing::error!(error = %e, "identity request failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
        .rejected_by("identity", "internal")
        .into_response_for(req.extensions())
}
