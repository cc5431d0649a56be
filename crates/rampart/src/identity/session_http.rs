//! The browser-session endpoints of the identity API (`[identity.sessions]`,
//! see [`super::sessions`]):
//!
//! - `POST {prefix}/session` — log in to a session: the same form as the
//!   token endpoint (`grant_type=password&username=…&password=…`, then
//!   `grant_type=…:mfa-otp&mfa_token=…&otp=…` when a second factor is due).
//!   Answers 200 `{"user", "session", "csrf_token"}` with the session cookie
//!   and the CSRF cookie set; the browser's previous session, if any, ends.
//!   Passkey logins make a session with `"session": true` in their finish
//!   request.
//! - `GET {prefix}/session` — the current session and a fresh CSRF token.
//! - `DELETE {prefix}/session` — logout: the session ends, cookies cleared.
//! - `GET {prefix}/csrf` — a CSRF token for the current session (JSON and
//!   the readable cookie).
//! - `POST {prefix}/session/token` — a short-lived access token (JWT, no
//!   refresh token) for the session's user, for calling APIs from the page.
//! - `GET {prefix}/sessions` — the caller's sessions (devices): id, user
//!   agent, address, created, last seen, expiry, which one is current.
//! - `DELETE {prefix}/sessions/{id}` — end one; `DELETE {prefix}/sessions`
//!   — end all (`?keep_current=true` keeps the calling one).
//!
//! The listing and revoking endpoints also take a bearer token. Every unsafe
//! method authenticated by the cookie passes the CSRF checks
//! ([`crate::auth::csrf`], header token). Logins that end in a session
//! (here, and passkey logins with `"session": true`) pass the source check:
//! another site cannot sign the browser in (login CSRF).

use http::header::{CACHE_CONTROL, SET_COOKIE, USER_AGENT};
use http::{HeaderValue, Method, StatusCode};
use rampart_core::client_ip::ClientInfo;
use serde_json::json;

use super::http::{empty, internal, json, signed_in, Head, SignedIn};
use super::service::{IdentityError, IdentityService};
use super::sessions::{LoginContext, Sessions};
use crate::edge::{HttpRequest, HttpResponse};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;
use crate::store::identity::{SessionRecord, User};

/// Which session endpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SessionEndpoint {
    Session,
    SessionToken,
    Csrf,
    Sessions,
    /// `/sessions/{id}`.
    One,
}

impl SessionEndpoint {
    pub(super) fn of(rest: &str) -> Option<Self> {
        Some(match rest {
            "/session" => Self::Session,
            "/session/token" => Self::SessionToken,
            "/csrf" => Self::Csrf,
            "/sessions" => Self::Sessions,
            r if r.starts_with("/sessions/") && r.len() > "/sessions/".len() => Self::One,
            _ => return None,
        })
    }
}

fn not_enabled(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .detail("browser sessions are not enabled")
        .rejected_by("identity", "sessions_off")
        .into_response_for(req.extensions())
}

fn method_not_allowed(req: &HttpRequest, allowed: &str) -> HttpResponse {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
        .detail(format!("use {allowed}"))
        .rejected_by("identity", "method")
        .into_response_for(req.extensions())
}

fn no_store(mut resp: HttpResponse) -> HttpResponse {
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) async fn handle(
    endpoint: SessionEndpoint,
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
) -> HttpResponse {
    let Some(sessions) = service.sessions.clone() else { return not_enabled(&req) };
    match (endpoint, req.method().clone()) {
        (SessionEndpoint::Session, Method::POST) => {
            if let Some(refused) = cross_site_login(service, state, &req) {
                return refused;
            }
            super::http::token_for(service, state, req, super::http::Finish::Session).await
        }
        (SessionEndpoint::Session, Method::GET) | (SessionEndpoint::Csrf, Method::GET) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let Some(session) = who.session.as_ref() else {
                return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                    .detail("a session cookie is required")
                    .rejected_by("identity", "no_session")
                    .into_response_for(req.extensions());
            };
            let csrf = sessions.csrf_token(&session.hash());
            let body = if endpoint == SessionEndpoint::Csrf {
                json!({"csrf_token": csrf})
            } else {
                json!({
                    "user": {"id": who.user.id, "username": who.user.username},
                    "session": session_json(&sessions, &session.record, true),
                    "csrf_token": csrf,
                })
            };
            let mut resp = no_store(json(StatusCode::OK, &body));
            if let Some(c) = sessions.csrf_cookie(&csrf) {
                resp.headers_mut().append(SET_COOKIE, c);
            }
            resp
        }
        (SessionEndpoint::Session, Method::DELETE) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let Some(session) = who.session.as_ref() else {
                return super::http::bad_request(&req, "no session to end: send the session cookie");
            };
            if let Err(e) = sessions.end(&session.hash()).await {
                return internal(&req, &IdentityError::from(e));
            }
            state.audit(event(req.extensions(), AuditKind::SessionChanged, &who.user.id, "session_logout"));
            let mut resp = empty(StatusCode::NO_CONTENT);
            for c in sessions.clearing_cookies() {
                resp.headers_mut().append(SET_COOKIE, c);
            }
            resp
        }
        (SessionEndpoint::SessionToken, Method::POST) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let Some(session) = who.session.as_ref() else {
                return super::http::bad_request(&req, "send the session cookie");
            };
            let r = &session.record;
            let ttl = sessions.settings.token_ttl.as_secs();
            let started = r.created_at / 1000;
            match service.session_access_token(&r.user_id, &r.roles, r.tier.as_deref(), r.token_version, ttl, started) {
                Ok(token) => {
                    state.audit(event(req.extensions(), AuditKind::AuthSuccess, &r.user_id, "session_token"));
                    no_store(json(
                        StatusCode::OK,
                        &json!({"access_token": token, "token_type": "bearer", "expires_in": ttl}),
                    ))
                }
                Err(e) => internal(&req, &e),
            }
        }
        (SessionEndpoint::Sessions, Method::GET) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            match sessions.list(&who.user.id).await {
                Ok(list) => {
                    let current = who.session.as_ref().map(|s| s.record.id.clone());
                    let items: Vec<_> = list
                        .iter()
                        .map(|s| session_json(&sessions, s, current.as_deref() == Some(s.id.as_str())))
                        .collect();
                    no_store(json(StatusCode::OK, &json!({ "sessions": items })))
                }
                Err(e) => internal(&req, &IdentityError::from(e)),
            }
        }
        (SessionEndpoint::Sessions, Method::DELETE) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let keep_current = req
                .uri()
                .query()
                .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "keep_current" && v == "true"));
            let keep = if keep_current { who.session.as_ref().map(|s| s.hash()) } else { None };
            match sessions.end_all(&who.user.id, keep.as_ref()).await {
                Ok(n) => {
                    state.audit(
                        event(req.extensions(), AuditKind::SessionChanged, &who.user.id, "sessions_revoked_all")
                            .detail("count", n),
                    );
                    let mut resp = json(StatusCode::OK, &json!({"ended": n}));
                    if keep.is_none() && who.session.is_some() {
                        for c in sessions.clearing_cookies() {
                            resp.headers_mut().append(SET_COOKIE, c);
                        }
                    }
                    resp
                }
                Err(e) => internal(&req, &IdentityError::from(e)),
            }
        }
        (SessionEndpoint::One, Method::DELETE) => {
            let who = match signed_in(service, state, Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let id = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
            match sessions.end_one(&who.user.id, &id).await {
                Ok(true) => {
                    state.audit(
                        event(req.extensions(), AuditKind::SessionChanged, &who.user.id, "session_revoked")
                            .detail("session", id),
                    );
                    empty(StatusCode::NO_CONTENT)
                }
                Ok(false) => Problem::new(StatusCode::NOT_FOUND, "not-found", "No such session")
                    .detail("you have no session with that id")
                    .rejected_by("identity", "no_such_session")
                    .into_response_for(req.extensions()),
                Err(e) => internal(&req, &IdentityError::from(e)),
            }
        }
        (SessionEndpoint::Session, _) => method_not_allowed(&req, "POST, GET or DELETE"),
        (SessionEndpoint::SessionToken, _) => method_not_allowed(&req, "POST"),
        (SessionEndpoint::Csrf, _) => method_not_allowed(&req, "GET"),
        (SessionEndpoint::Sessions, _) => method_not_allowed(&req, "GET or DELETE"),
        (SessionEndpoint::One, _) => method_not_allowed(&req, "DELETE"),
    }
}

fn session_json(sessions: &Sessions, s: &SessionRecord, current: bool) -> serde_json::Value {
    let idle = u64::try_from(sessions.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    json!({
        "id": s.id,
        "created_at": s.created_at,
        "last_seen_at": s.last_seen_at,
        "expires_at": s.expires_at,
        "idle_expires_at": s.last_seen_at.saturating_add(idle).min(s.expires_at),
        "user_agent": s.user_agent,
        "ip": s.ip,
        "amr": s.amr,
        "current": current,
    })
}

fn event(ext: &http::Extensions, kind: AuditKind, subject: &str, action: &'static str) -> AuditEvent {
    let mut e = AuditEvent::new(kind).subject(subject.to_owned()).detail("action", action);
    if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
        e = e.ip(ip);
    }
    if let Some(id) = ext.get::<crate::edge::request_id::RequestId>() {
        e = e.request_id(id.as_str());
    }
    e
}

/// The `403 csrf` for a login that would end in a browser session but comes
/// from another site (the source check of [`crate::auth::csrf`]): a page
/// elsewhere must not sign the browser in to an account of its choosing
/// (login CSRF), whose activity its owner would then see. Requests without
/// `Origin` or `Sec-Fetch-Site` (not from a current browser) go on. `None`
/// when the login may go on, or sessions are off.
pub(super) fn cross_site_login(
    service: &IdentityService,
    state: &LimitState,
    req: &HttpRequest,
) -> Option<HttpResponse> {
    let sessions = service.sessions.as_ref()?;
    let failure = crate::auth::csrf::check_source(sessions, req.headers(), req.extensions(), req.uri()).err()?;
    Some(crate::auth::csrf::refusal(state, req.extensions(), None, failure))
}

/// The answer to a login that ends in a session: a new session for `user`
/// (the one the browser presented before ends), its cookie, a CSRF token.
pub(super) async fn logged_in(
    service: &IdentityService,
    state: &LimitState,
    req: Head<'_>,
    user: &User,
    amr: &[&str],
) -> HttpResponse {
    let Some(sessions) = service.sessions.as_ref() else {
        return Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
            .detail("browser sessions are not enabled")
            .rejected_by("identity", "sessions_off")
            .into_response_for(req.ext);
    };
    let ctx = LoginContext {
        user_agent: req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
        ip: req.ext.get::<ClientInfo>().map(|c| c.ip.to_string()),
        previous: sessions.token_in(req.headers),
    };
    if let Err(e) = service.record_login(&user.id).await {
        tracing::error!(error = %e, "identity request failed");
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
            .rejected_by("identity", "internal")
            .into_response_for(req.ext);
    }
    let (token, record) = match sessions.start(user, amr, &ctx).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "a session could not be started");
            let mut resp = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Temporarily unavailable")
                .detail("sessions cannot be stored right now; try again shortly")
                .rejected_by("identity", "sessions_unavailable")
                .into_response_for(req.ext);
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        }
    };
    state.audit(event(req.ext, AuditKind::SessionChanged, &user.id, "session_started").detail("amr", amr.join(" ")));
    let csrf = sessions.csrf_token(&record.token_hash);
    let body = json!({
        "user": {"id": user.id, "username": user.username},
        "session": session_json(sessions, &record, true),
        "csrf_token": csrf,
    });
    let mut resp = no_store(json(StatusCode::OK, &body));
    if let Some(c) = sessions.cookie(&token) {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    if let Some(c) = sessions.csrf_cookie(&csrf) {
        resp.headers_mut().append(SET_COOKIE, c);
    }
    resp
}

/// Gives the caller's session a new token after a privilege change made in
/// it (a second factor added): the new cookie goes on `resp`.
pub(super) async fn renew_after_privilege_change(service: &IdentityService, who: &SignedIn, resp: &mut HttpResponse) {
    let (Some(sessions), Some(session)) = (service.sessions.as_ref(), who.session.as_ref()) else { return };
    match sessions.renew(session).await {
        Ok(Some(token)) => {
            if let Some(c) = sessions.cookie(&token) {
                resp.headers_mut().append(SET_COOKIE, c);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "a session could not be renewed after a privilege change"),
    }
}
