//! The external-login endpoints under `{prefix}/oidc`; 404 when no provider
//! is configured.
//!
//! - `GET {prefix}/oidc/providers` → `{"providers": [{"name", "display_name",
//!   "login_url"}]}`, for login pages.
//! - `GET {prefix}/oidc/<name>/login?return_to=/path` → 302 to the provider,
//!   with the browser-binding cookie (see [`super`]). `return_to` must be a
//!   path on this site (400 `bad-return-to` otherwise).
//! - `GET {prefix}/oidc/<name>/callback?code&state` → where the provider sends
//!   the browser back; ends in [`finish_external_login`]. Refusals: 400
//!   `invalid-state` (unknown, spent, expired or forged state, or another
//!   browser), 400 `external-login-failed` (the provider answered with an
//!   error or refused the code), 401 `id-token-refused`, 403 `no-account`,
//!   403 `account-locked`, 409 `already-linked` / `provider-already-linked`,
//!   502 `provider-unavailable`.
//! - Signed in (a bearer token of ours, or a session cookie with its CSRF
//!   token on unsafe methods):
//!   - `POST {prefix}/oidc/<name>/link` — JSON `{"return_to"?, "password"}`
//!     or `{"return_to"?, "code"}`: the same proof as for removing a passkey
//!     (none, and the body optional, for an account with neither a password
//!     nor TOTP) → `{"authorize_url"}` and the binding cookie: the browser
//!     that opens the URL links that provider account to the caller. A link
//!     signs in on its own, so a token alone must not add one.
//!   - `GET {prefix}/oidc/links` → `{"links": [{"provider", "display_name",
//!     "email", "created_at", "last_login_at"}]}`.
//!   - `DELETE {prefix}/oidc/links/<provider>` → 204; 404 when not linked; 409
//!     `last-sign-in-method` when it is the account's last way to sign in.
//!
//! Refused callbacks are audited (`auth_failure`, method `oidc`) and strike
//! the client's address towards a ban, as failed password logins do.

use http::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use rampart_core::client_ip::ClientInfo;
use serde::Deserialize;

use super::flow::{Callback, LoginError, BROWSER_COOKIE, PENDING_TTL};
use crate::edge::{HttpRequest, HttpResponse};
use crate::identity::http::{attempt_event, busy, empty, internal, issued, json, json_no_store, signed_in_user, Head};
use crate::identity::service::{now_ms, IdentityError, IdentityService};
use crate::limit::bans::Strike;
use crate::limit::LimitState;
use crate::observe::audit::AuditKind;
use crate::problem::Problem;
use crate::store::identity::{Unlinked, User};

/// The audit log's name for these logins.
const METHOD: &str = "oidc";

/// Handles a request under `{prefix}/oidc`; `rest` is the path after it.
pub(crate) async fn handle(
    service: &IdentityService,
    state: &LimitState,
    rest: &str,
    req: HttpRequest,
) -> HttpResponse {
    let Ok(logins) = service.external_logins() else {
        return not_found(&req, "external logins are not configured");
    };
    let method = req.method().clone();
    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
    match (segments.as_slice(), method) {
        (["providers"], Method::GET) => {
            let prefix = &service.settings.prefix;
            let list: Vec<serde_json::Value> = logins
                .providers()
                .iter()
                .map(|p| {
                    let s = &p.settings;
                    serde_json::json!({
                        "name": s.name,
                        "display_name": s.display_name,
                        "login_url": format!("{prefix}/oidc/{}/login", s.name),
                    })
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "providers": list }))
        }
        (["links"], Method::GET) => links(service, state, req).await,
        (["links", provider], Method::DELETE) if !provider.is_empty() => {
            let provider = (*provider).to_owned();
            unlink(service, state, &provider, req).await
        }
        ([name, "login"], Method::GET) if logins.provider(name).is_some() => {
            let name = (*name).to_owned();
            login(service, state, &name, req).await
        }
        ([name, "callback"], Method::GET) if logins.provider(name).is_some() => {
            let name = (*name).to_owned();
            callback(service, state, &name, req).await
        }
        ([name, "link"], Method::POST) if logins.provider(name).is_some() => {
            let name = (*name).to_owned();
            link(service, state, &name, req).await
        }
        (["providers"] | ["links"] | ["links", _], _) => method_not_allowed(&req),
        ([name, "login" | "callback" | "link"], _) if logins.provider(name).is_some() => method_not_allowed(&req),
        ([name, ..], _) if logins.provider(name).is_none() && segments.len() == 2 => {
            not_found(&req, "no external login provider by that name")
        }
        _ => not_found(&req, "no such endpoint"),
    }
}

/// The value of the browser-binding cookie, if the request carries one.
fn browser_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == BROWSER_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The binding cookie: the same lifetime as a login in progress; `Lax`, so
/// that the provider's redirect back (a top-level GET) carries it.
fn set_browser_cookie(resp: &mut HttpResponse, value: &str) {
    let cookie =
        format!("{BROWSER_COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax", PENDING_TTL.as_secs());
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(SET_COOKIE, v);
    }
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The query parameters `names`, or the one that is repeated.
fn query_params<const N: usize>(req: &HttpRequest, names: [&'static str; N]) -> Result<[Option<String>; N], String> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == k) {
            if out[i].is_some() {
                return Err(format!("the `{}` parameter is repeated", names[i]));
            }
            out[i] = Some(v.into_owned());
        }
    }
    Ok(out)
}

fn not_found(req: &HttpRequest, detail: &'static str) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .detail(detail)
        .rejected_by("identity", "not_found")
        .into_response_for(req.extensions())
}

fn method_not_allowed(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
        .rejected_by("identity", "method")
        .into_response_for(req.extensions())
}

/// `GET {prefix}/oidc/<name>/login`.
async fn login(service: &IdentityService, state: &LimitState, name: &str, req: HttpRequest) -> HttpResponse {
    let [return_to] = match query_params(&req, ["return_to"]) {
        Ok(p) => p,
        Err(why) => return crate::identity::http::bad_request(&req, &why),
    };
    let browser = browser_cookie(&req);
    let client = req.extensions().get::<ClientInfo>().map(|c| state.clients.key(c.ip));
    match service.oidc_start(name, return_to.as_deref(), None, browser.as_deref(), client).await {
        Ok(started) => {
            let mut resp = empty(StatusCode::FOUND);
            match HeaderValue::from_str(&started.authorize_url) {
                Ok(location) => resp.headers_mut().insert(LOCATION, location),
                Err(_) => return failure(&req, LoginError::Unavailable("an unusable authorization URL".into())),
            };
            set_browser_cookie(&mut resp, &started.browser);
            resp
        }
        Err(e) => failure(&req, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    return_to: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

/// `POST {prefix}/oidc/<name>/link`, signed in.
async fn link(service: &IdentityService, state: &LimitState, name: &str, req: HttpRequest) -> HttpResponse {
    let who = match crate::identity::http::signed_in(service, state, Head::of(&req)).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let user = &who.user;
    let (parts, body) = req.into_parts();
    let req = HttpRequest::from_parts(parts, axum::body::Body::empty());
    let bytes = match Limited::new(body, 4096).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return crate::identity::http::bad_request(&req, "the body is larger than 4 KiB or was cut off"),
    };
    let body: LinkBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        LinkBody::default()
    } else {
        match serde_json::from_slice::<Option<LinkBody>>(&bytes) {
            Ok(b) => b.unwrap_or_default(),
            Err(_) => {
                let shape = "expected JSON {\"return_to\"?, \"password\"} or {\"return_to\"?, \"code\"}";
                return crate::identity::http::bad_request(&req, shape);
            }
        }
    };
    // A linked provider account signs in without the password or a second
    // factor: linking takes the same proof as removing a passkey.
    let proof = crate::identity::mfa_http::Proof::new(body.password, body.code);
    if let Some(refusal) =
        crate::identity::mfa_http::refusal_without_proof(service, state, &who, req.extensions(), proof).await
    {
        return refusal;
    }
    let browser = browser_cookie(&req);
    let client = req.extensions().get::<ClientInfo>().map(|c| state.clients.key(c.ip));
    match service.oidc_start(name, body.return_to.as_deref(), Some(&user.id), browser.as_deref(), client).await {
        Ok(started) => {
            let mut resp = json(StatusCode::OK, &serde_json::json!({ "authorize_url": started.authorize_url }));
            set_browser_cookie(&mut resp, &started.browser);
            resp
        }
        Err(e) => failure(&req, e),
    }
}

/// `GET {prefix}/oidc/<name>/callback`.
async fn callback(service: &IdentityService, state: &LimitState, name: &str, req: HttpRequest) -> HttpResponse {
    let [code, oauth_state, iss, error] = match query_params(&req, ["code", "state", "iss", "error"]) {
        Ok(p) => p,
        Err(why) => return crate::identity::http::bad_request(&req, &why),
    };
    let params = Callback { code, state: oauth_state, iss, error };
    let browser = browser_cookie(&req);
    match service.oidc_callback(name, &params, browser.as_deref()).await {
        Ok(done) => {
            if done.outcome != "login" {
                let event = attempt_event(
                    req.extensions(),
                    AuditKind::ExternalIdentityChanged,
                    METHOD,
                    Some(done.user.id.clone()),
                    None,
                );
                state.audit(event.detail("action", done.outcome).detail("provider", name.to_owned()));
            }
            finish_external_login(service, state, &done.user, &done.return_to, req).await
        }
        Err(e) => {
            let refusal = matches!(
                e,
                LoginError::State(_)
                    | LoginError::BadCallback(_)
                    | LoginError::CodeRefused(_)
                    | LoginError::IdToken(_)
                    | LoginError::ProviderDenied(_)
                    | LoginError::NoAccount
                    | LoginError::Locked { .. }
                    | LoginError::LinkedElsewhere { .. }
                    | LoginError::ProviderTaken { .. }
            );
            if refusal {
                let ext = req.extensions();
                let hostile = matches!(e, LoginError::State(_) | LoginError::BadCallback(_) | LoginError::IdToken(_));
                if let (true, Some(ip)) = (hostile, ext.get::<ClientInfo>().map(|c| c.ip)) {
                    state.strike(ip, Strike::AuthFailure);
                }
                let event = attempt_event(
                    ext,
                    AuditKind::AuthFailure,
                    METHOD,
                    e.user_id().map(str::to_owned),
                    Some(e.reason()),
                );
                state.audit(event.detail("provider", name.to_owned()));
            }
            failure(&req, e)
        }
    }
}

/// Ends every successful external login: the user has been found (or made,
/// or linked), is not locked, and is to be signed in, then sent to
/// `return_to`.
///
/// For now it answers as the token endpoint does after a password (JSON
/// tokens, `no-store`, plus `return_to`), including the `mfa_required` step
/// for users with a second factor. Browser sessions will replace the body
/// with a session cookie and a redirect to `return_to`; this is the one place
/// to change.
pub async fn finish_external_login(
    service: &IdentityService,
    state: &LimitState,
    user: &User,
    return_to: &str,
    req: HttpRequest,
) -> HttpResponse {
    let ext = req.extensions();
    let now = now_ms();
    let methods = match service.mfa_methods(&user.id).await {
        Ok(m) => m,
        Err(e) => return internal(&req, &e),
    };
    if !methods.is_empty() {
        let mfa_token = match service.mfa_token(user, now) {
            Ok(t) => t,
            Err(e) => return internal(&req, &e),
        };
        state.audit(
            attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user.id.clone()), None).detail("step", "provider"),
        );
        return crate::identity::http::mfa_required(&mfa_token, &methods, Some(return_to));
    }
    if service.sessions.is_some() {
        // Browser sessions on: the login ends in a session cookie and a
        // redirect to where the user was going.
        state.audit(attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user.id.clone()), None));
        let resp = crate::identity::session_http::logged_in(service, state, Head::of(&req), user, &["ext"]).await;
        if resp.status() != StatusCode::OK {
            return resp;
        }
        let mut redirect = crate::identity::http::empty(StatusCode::SEE_OTHER);
        if let Ok(location) = HeaderValue::from_str(return_to) {
            redirect.headers_mut().insert(http::header::LOCATION, location);
        }
        redirect.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for cookie in resp.headers().get_all(http::header::SET_COOKIE) {
            redirect.headers_mut().append(http::header::SET_COOKIE, cookie.clone());
        }
        return redirect;
    }
    match service.issue_login_tokens(user, now).await {
        Ok(tokens) => {
            state.audit(attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user.id.clone()), None));
            let mut body = issued(&tokens);
            if let Some(map) = body.as_object_mut() {
                map.insert("return_to".into(), return_to.into());
            }
            json_no_store(&body)
        }
        Err(e) => internal(&req, &e),
    }
}

/// `GET {prefix}/oidc/links`.
async fn links(service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    let user = match signed_in_user(service, state, Head::of(&req)).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    let logins = service.external_logins().ok();
    match service.oidc_links(&user.id).await {
        Ok(list) => {
            let list: Vec<serde_json::Value> = list
                .into_iter()
                .map(|l| {
                    let display = logins
                        .and_then(|x| x.provider(&l.provider))
                        .map_or_else(|| l.provider.clone(), |p| p.settings.display_name.clone());
                    serde_json::json!({
                        "provider": l.provider,
                        "display_name": display,
                        "email": l.email,
                        "created_at": l.created_at,
                        "last_login_at": l.last_login_at,
                    })
                })
                .collect();
            let mut resp = json(StatusCode::OK, &serde_json::json!({ "links": list }));
            resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) => internal(&req, &e),
    }
}

/// `DELETE {prefix}/oidc/links/<provider>`.
async fn unlink(service: &IdentityService, state: &LimitState, provider: &str, req: HttpRequest) -> HttpResponse {
    let who = match crate::identity::http::signed_in(service, state, Head::of(&req)).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    // An account without a password signs in through its links (and
    // passkeys): taking one away needs a recent sign-in, whatever second
    // factor it has. One with a password keeps that either way.
    if who.user.password_hash.is_none() {
        if let Some(refusal) = crate::identity::mfa_http::not_signed_in_recently(&who, req.extensions()) {
            return refusal;
        }
    }
    let user = who.user;
    match service.oidc_unlink(&user.id, provider).await {
        Ok(Unlinked::Removed) => {
            let event = attempt_event(
                req.extensions(),
                AuditKind::ExternalIdentityChanged,
                METHOD,
                Some(user.id.clone()),
                None,
            );
            state.audit(event.detail("action", "unlinked").detail("provider", provider.to_owned()));
            empty(StatusCode::NO_CONTENT)
        }
        Ok(Unlinked::NotLinked) => not_found(&req, "the account has no login of that provider"),
        Ok(Unlinked::LastWayToSignIn) => {
            Problem::new(StatusCode::CONFLICT, "last-sign-in-method", "Last way to sign in")
                .detail("the account has no password, passkey or other linked login; add one before removing this")
                .rejected_by("identity", "last_sign_in_method")
                .into_response_for(req.extensions())
        }
        Err(e) => internal(&req, &e),
    }
}

/// The answer to a failed login, start or link.
fn failure(req: &HttpRequest, e: LoginError) -> HttpResponse {
    let ext = req.extensions();
    let (status, kind, title, detail): (StatusCode, &'static str, &'static str, String) = match &e {
        LoginError::UnknownProvider => {
            return not_found(req, "no external login provider by that name");
        }
        LoginError::BadReturnTo(why) => {
            (StatusCode::BAD_REQUEST, "bad-return-to", "Bad return_to", format!("return_to {why}"))
        }
        LoginError::Busy => {
            return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Too many logins in progress")
                .detail("try again in a moment")
                .rejected_by("identity", "oidc_pending_full")
                .retry_after(10)
                .into_response_for(ext);
        }
        LoginError::Unavailable(why) => {
            tracing::warn!(error = %why, "an external login provider is unavailable");
            (
                StatusCode::BAD_GATEWAY,
                "provider-unavailable",
                "Login provider unavailable",
                "the login provider could not be reached or answered wrongly; try again later".into(),
            )
        }
        LoginError::State(_) => (
            StatusCode::BAD_REQUEST,
            "invalid-state",
            "Invalid login state",
            "the login is unknown, already used or expired, or was started in another browser; start it again".into(),
        ),
        LoginError::ProviderDenied(error) => (
            StatusCode::BAD_REQUEST,
            "external-login-failed",
            "External login failed",
            format!("the login provider answered `{error}`"),
        ),
        LoginError::BadCallback(reason) => (
            StatusCode::BAD_REQUEST,
            "external-login-failed",
            "External login failed",
            format!("the provider's answer is not usable ({reason})"),
        ),
        LoginError::CodeRefused(error) => (
            StatusCode::BAD_REQUEST,
            "external-login-failed",
            "External login failed",
            format!("the login provider refused the authorization code (`{error}`); start the login again"),
        ),
        LoginError::IdToken(_) => (
            StatusCode::UNAUTHORIZED,
            "id-token-refused",
            "ID token refused",
            "the login provider's ID token is not valid for this login".into(),
        ),
        LoginError::NoAccount => (
            StatusCode::FORBIDDEN,
            "no-account",
            "No account",
            "no account is linked to this login, and accounts are not created from it".into(),
        ),
        LoginError::Locked { .. } => {
            (StatusCode::FORBIDDEN, "account-locked", "Account locked", "the account is locked or disabled".into())
        }
        LoginError::LinkedElsewhere { .. } => (
            StatusCode::CONFLICT,
            "already-linked",
            "Already linked",
            "this account at the login provider is linked to another user".into(),
        ),
        LoginError::ProviderTaken { .. } => (
            StatusCode::CONFLICT,
            "provider-already-linked",
            "Provider already linked",
            "the account has another login of this provider linked; remove it first".into(),
        ),
        LoginError::Identity(IdentityError::Busy) => return busy(),
        LoginError::Identity(IdentityError::BadInput(msg)) => return crate::identity::http::bad_request(req, msg),
        LoginError::Identity(inner) => return internal(req, inner),
    };
    let mut resp =
        Problem::new(status, kind, title).detail(detail).rejected_by("identity", e.reason()).into_response_for(ext);
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
