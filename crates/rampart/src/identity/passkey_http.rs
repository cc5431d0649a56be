//! The passkey endpoints under `{prefix}/passkeys` (see [`super::passkeys`]);
//! 403 `passkeys-disabled` unless `[identity.webauthn]` is configured.
//!
//! Signed in (a bearer token of ours):
//! - `POST {prefix}/passkeys/register/start` — JSON `{"password"}` or
//!   `{"code"}`, as for removing one → `{"challenge_id", "publicKey"}` for
//!   `navigator.credentials.create()`. A passkey signs in on its own, so a
//!   token alone (perhaps stolen) must not add one.
//! - `POST {prefix}/passkeys/register/finish` — JSON `{"challenge_id",
//!   "name"?, "credential"}` (the browser's `PublicKeyCredential` as JSON) →
//!   201 `{"id", "name", "created_at", "last_used_at"}`.
//! - `GET {prefix}/passkeys` → `{"passkeys": [{"id", "name", "created_at",
//!   "last_used_at"}]}` (no key material).
//! - `DELETE {prefix}/passkeys/{id}` — JSON `{"password"}` or `{"code"}`, as
//!   for turning TOTP off (an account with neither a password nor TOTP sends
//!   no body) → 204, or 404 for a passkey that is not the caller's.
//!
//! Registering a passkey in a browser session gives the session a new token,
//! as turning TOTP on does: its privilege rose.
//!
//! Passwordless login:
//! - `POST {prefix}/passkeys/login/start` — JSON `{"username"}` →
//!   `{"challenge_id", "publicKey"}` for `navigator.credentials.get()`; alike
//!   for unknown usernames (see [`super::passkeys`]).
//! - `POST {prefix}/passkeys/login/finish` — JSON `{"challenge_id",
//!   "credential"}` → the token response of the password grant, or 400
//!   `invalid_grant` for every refusal alike. Failures are audited (method
//!   `passkey`), strike the client's address towards a ban, and count towards
//!   the account's lockout.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::http::{
    attempt_event, bad_request, busy, count_failure, empty, internal, issued, json, json_no_store, oauth_error,
    read_json,
};
use super::passkeys::{PasskeyChallenge, PasskeyError};
use super::service::IdentityService;
use crate::edge::{HttpRequest, HttpResponse};
use crate::limit::bans::Strike;
use crate::limit::LimitState;
use crate::observe::audit::AuditKind;
use crate::problem::Problem;
use rampart_core::client_ip::ClientInfo;

/// Handles a request under `{prefix}/passkeys`.
pub(super) async fn handle(service: &Arc<IdentityService>, state: &LimitState, req: HttpRequest) -> HttpResponse {
    let prefix_len = service.settings.prefix.len() + "/passkeys".len();
    let rest = req.uri().path().get(prefix_len..).unwrap_or_default().to_owned();
    if !service.passkeys_enabled() {
        return Problem::new(StatusCode::FORBIDDEN, "passkeys-disabled", "Passkeys disabled")
            .detail("passkeys are not configured on this server")
            .rejected_by("identity", "passkeys_disabled")
            .into_response_for(req.extensions());
    }
    let method = req.method().clone();
    match (rest.as_str(), method) {
        ("/login/start", Method::POST) => login_start(service, state, req).await,
        ("/login/finish", Method::POST) => login_finish(service, state, req).await,
        ("/register/start" | "/register/finish" | "", Method::POST | Method::GET) | (_, Method::DELETE) => {
            let who = match super::http::signed_in(service, state, super::http::Head::of(&req)).await {
                Ok(w) => w,
                Err(resp) => return resp,
            };
            let user = who.user.clone();
            match (rest.as_str(), req.method().clone()) {
                ("/register/start", Method::POST) => register_start(service, state, &who, req).await,
                ("/register/finish", Method::POST) => register_finish(service, state, &who, req).await,
                ("", Method::GET) => match service.passkeys(&user.id).await {
                    Ok(list) => json(StatusCode::OK, &serde_json::json!({ "passkeys": list })),
                    Err(e) => failure(&req, e),
                },
                (id, Method::DELETE) if id.len() > 1 && !id[1..].contains('/') => {
                    remove(service, state, &who, &id[1..], req).await
                }
                _ => not_found(&req),
            }
        }
        ("/login/start" | "/login/finish" | "/register/start" | "/register/finish" | "", _) => {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
                .rejected_by("identity", "method")
                .into_response_for(req.extensions())
        }
        _ => not_found(&req),
    }
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .rejected_by("identity", "not_found")
        .into_response_for(req.extensions())
}

/// `{"challenge_id", "publicKey"}`, never cached.
pub(super) fn challenge_response(c: PasskeyChallenge) -> HttpResponse {
    let mut body = c.options;
    if let Some(map) = body.as_object_mut() {
        map.insert("challenge_id".into(), c.challenge_id.into());
    }
    json_no_store(&body)
}

/// The answer to every failure but a refused login.
pub(super) fn failure(req: &HttpRequest, e: PasskeyError) -> HttpResponse {
    match e {
        PasskeyError::Disabled => not_found(req),
        PasskeyError::Refused { .. } => Problem::new(StatusCode::BAD_REQUEST, "passkey-refused", "Passkey refused")
            .detail("the challenge is unknown, spent or expired, or the authenticator's answer is not valid")
            .rejected_by("identity", "passkey_refused")
            .into_response_for(req.extensions()),
        PasskeyError::BadInput(msg) => bad_request(req, &msg),
        PasskeyError::Limit(msg) => Problem::new(StatusCode::CONFLICT, "passkey-limit", "Limit reached")
            .detail(msg)
            .rejected_by("identity", "passkey_limit")
            .into_response_for(req.extensions()),
        PasskeyError::Busy => busy(),
        PasskeyError::Identity(e) => internal(req, &e),
    }
}

async fn register_start(
    service: &IdentityService,
    state: &LimitState,
    who: &super::http::SignedIn,
    req: HttpRequest,
) -> HttpResponse {
    // A passkey is a way to sign in that skips the second factor and that
    // neither a new password nor "log out everywhere" takes away: adding one
    // takes the same proof as removing one.
    let user = &who.user;
    let req = match super::mfa_http::read_and_prove(service, state, who, req).await {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    match service.passkey_register_start(user).await {
        Ok(c) => challenge_response(c),
        Err(e) => failure(&req, e),
    }
}

#[derive(Deserialize)]
struct RegisterFinish {
    challenge_id: String,
    name: Option<String>,
    credential: Value,
}

async fn register_finish(
    service: &IdentityService,
    state: &LimitState,
    who: &super::http::SignedIn,
    req: HttpRequest,
) -> HttpResponse {
    let user = &who.user;
    let shape = "{\"challenge_id\", \"name\"?, \"credential\"}";
    let (req, body) = match read_json::<RegisterFinish>(req, shape).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match service.passkey_register_finish(user, &body.challenge_id, body.name.as_deref(), body.credential).await {
        Ok(info) => {
            let event = attempt_event(req.extensions(), AuditKind::MfaChanged, "passkey", Some(user.id.clone()), None);
            state.audit(event.detail("action", "passkey_added").detail("passkey_id", info.id.clone()));
            let mut resp = json(StatusCode::CREATED, &serde_json::to_value(&info).unwrap_or_default());
            // A second factor raises the session's privilege: a new session id.
            super::session_http::renew_after_privilege_change(service, who, &mut resp).await;
            resp
        }
        Err(PasskeyError::Refused { reason, .. }) => {
            let kind = AuditKind::AuthFailure;
            let event = attempt_event(req.extensions(), kind, "passkey_register", Some(user.id.clone()), Some(reason));
            state.audit(event);
            failure(&req, PasskeyError::Refused { reason, user_id: None })
        }
        Err(e) => failure(&req, e),
    }
}

async fn remove(
    service: &IdentityService,
    state: &LimitState,
    who: &super::http::SignedIn,
    id: &str,
    req: HttpRequest,
) -> HttpResponse {
    // The same proof as for turning TOTP off; an account with nothing to
    // prove it with (no password, no TOTP) needs a recent sign-in.
    let user = &who.user;
    let req = match super::mfa_http::read_and_prove(service, state, who, req).await {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    match service.passkey_remove(&user.id, id).await {
        Ok(true) => {
            let event = attempt_event(req.extensions(), AuditKind::MfaChanged, "passkey", Some(user.id.clone()), None);
            state.audit(event.detail("action", "passkey_removed").detail("passkey_id", id.to_owned()));
            empty(StatusCode::NO_CONTENT)
        }
        Ok(false) => not_found(&req),
        Err(e) => failure(&req, e),
    }
}

#[derive(Deserialize)]
struct LoginStart {
    username: String,
}

async fn login_start(service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    let (req, body) = match read_json::<LoginStart>(req, "{\"username\"}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if body.username.trim().is_empty() {
        return bad_request(&req, "username must not be empty");
    }
    let client = req.extensions().get::<ClientInfo>().map(|c| state.clients.key(c.ip));
    match service.passkey_login_start(&body.username, client).await {
        Ok(c) => challenge_response(c),
        // An over-long or otherwise unstorable name is no user: a decoy would
        // be the same, but there is nothing to hide about the input's shape.
        Err(PasskeyError::Identity(super::service::IdentityError::BadInput(msg))) => bad_request(&req, &msg),
        Err(e) => failure(&req, e),
    }
}

#[derive(Deserialize)]
struct LoginFinish {
    challenge_id: String,
    credential: Value,
    /// End in a browser session instead of tokens.
    #[serde(default)]
    session: bool,
}

async fn login_finish(service: &IdentityService, state: &LimitState, req: HttpRequest) -> HttpResponse {
    const METHOD: &str = "passkey";
    let (req, body) = match read_json::<LoginFinish>(req, "{\"challenge_id\", \"credential\"}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if body.session {
        if let Some(refused) = super::session_http::cross_site_login(service, state, &req) {
            return refused;
        }
    }
    let ext = req.extensions();
    let outcome = match body.session {
        true => service.passkey_login(&body.challenge_id, body.credential).await.map(Err),
        false => service.passkey_login_finish(&body.challenge_id, body.credential).await.map(Ok),
    };
    match outcome {
        Ok(Ok((user_id, tokens))) => {
            state.audit(attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user_id), None));
            json_no_store(&issued(&tokens))
        }
        Ok(Err(user)) => {
            state.audit(attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user.id.clone()), None));
            super::session_http::logged_in(service, state, super::http::Head::of(&req), &user, &["hwk"]).await
        }
        Err(PasskeyError::Refused { reason, user_id }) => {
            if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
                state.strike(ip, Strike::AuthFailure);
            }
            state.audit(attempt_event(ext, AuditKind::AuthFailure, METHOD, user_id.clone(), Some(reason)));
            // A wrong answer for a real account counts towards its lockout
            // (not a spent challenge: that may be a retry of a success).
            let counts = matches!(reason, "bad_assertion" | "counter_regression" | "unknown_credential");
            if let (Some(id), true) = (&user_id, counts) {
                if count_failure(service, state, id).await {
                    if let Err(e) = service.lock_out(id).await {
                        tracing::error!(error = %e, "could not lock an account after repeated failures");
                    }
                    let event =
                        attempt_event(ext, AuditKind::Lockout, METHOD, user_id.clone(), Some("too_many_failures"));
                    state.audit(event);
                }
            }
            oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the passkey was not accepted")
        }
        Err(PasskeyError::BadInput(msg)) => {
            if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
                state.strike(ip, Strike::AuthFailure);
            }
            bad_request(&req, &msg)
        }
        Err(e) => failure(&req, e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn challenge_responses_carry_the_id_and_are_not_cached() {
        let resp = challenge_response(PasskeyChallenge {
            challenge_id: "wc_x".into(),
            options: serde_json::json!({"publicKey": {"challenge": "abc"}}),
        });
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers().get(http::header::CACHE_CONTROL).unwrap(), "no-store");
    }
}
