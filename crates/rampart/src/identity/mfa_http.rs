//! The second-factor endpoints (see [`super::mfa`]), with a bearer access
//! token of ours:
//!
//! - `GET {prefix}/mfa` → `{"totp", "totp_pending", "backup_codes_left", "methods"}`.
//! - `POST {prefix}/mfa/totp` → starts an enrolment: `{"secret", "otpauth_uri",
//!   "qr_png" (data URI), "qr_svg"}`; 409 while one is active.
//! - `POST {prefix}/mfa/totp/confirm` `{"code"}` → activates it and answers
//!   `{"backup_codes": [10]}`, shown once.
//! - `POST {prefix}/mfa/totp/disable` `{"password"}` or `{"code"}` → 204.
//! - `POST {prefix}/mfa/backup-codes` `{"password"}` or `{"code"}` → ten new
//!   codes; the old ones die.
//!
//! And the second login step at the token endpoint: `grant_type=`
//! [`MFA_OTP_GRANT`] with `mfa_token` and `otp` (a TOTP or a backup code);
//! or, with a passkey, `POST {prefix}/mfa/webauthn/start` `{"mfa_token"}` →
//! `{"challenge_id", "publicKey"}` and `POST {prefix}/mfa/webauthn/finish`
//! `{"mfa_token", "challenge_id", "credential"}` → the token response.
//! Refused codes are ban strikes, audit events, and count towards the
//! account's lockout like wrong passwords. While the account is locked,
//! disabling and new backup codes are refused even with the right password
//! or code, with the same answer as a wrong one.

use http::header::CACHE_CONTROL;
use http::{Method, StatusCode};
use serde::Deserialize;

use super::http::{
    attempt_event, count_failure, empty, internal, json, json_no_store, oauth_error, read_json, TokenForm,
};
use super::mfa::{CodeRefusal, CodeRefused, MFA_OTP_GRANT};
use super::service::{now_ms, IdentityError, IdentityService};
use crate::edge::{HttpRequest, HttpResponse};
use crate::limit::bans::Strike;
use crate::limit::LimitState;
use crate::observe::audit::AuditKind;
use crate::problem::Problem;
use crate::store::identity::User;
use rampart_core::client_ip::ClientInfo;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum MfaEndpoint {
    Status,
    Totp,
    Confirm,
    Disable,
    BackupCodes,
    /// The passkey second step (no bearer token: the `mfa_token` names the user).
    WebauthnStart,
    WebauthnFinish,
}

impl MfaEndpoint {
    /// The endpoint of a path below the prefix.
    pub(super) fn of(path: &str) -> Option<Self> {
        Some(match path {
            "/mfa" => Self::Status,
            "/mfa/totp" => Self::Totp,
            "/mfa/totp/confirm" => Self::Confirm,
            "/mfa/totp/disable" => Self::Disable,
            "/mfa/backup-codes" => Self::BackupCodes,
            "/mfa/webauthn/start" => Self::WebauthnStart,
            "/mfa/webauthn/finish" => Self::WebauthnFinish,
            _ => return None,
        })
    }

    pub(super) fn method(self) -> Method {
        if self == Self::Status {
            Method::GET
        } else {
            Method::POST
        }
    }
}

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

/// Proof of the account holder for changes: the password or a code.
#[derive(Deserialize)]
pub(super) struct Proof {
    password: Option<String>,
    code: Option<String>,
}

impl Proof {
    pub(super) fn new(password: Option<String>, code: Option<String>) -> Self {
        Self { password, code }
    }
}

/// Whether a change needs a [`Proof`]: it does when the account has
/// something to prove it with (a password or TOTP); an account with neither
/// (made by an external login, say) needs a [recent sign-in](not_signed_in_recently).
pub(super) async fn proof_needed(service: &IdentityService, user: &User) -> Result<bool, IdentityError> {
    if user.password_hash.is_some() {
        return Ok(true);
    }
    Ok(service.mfa_status(&user.id).await?.totp)
}

/// How recent a sign-in must be to stand in for a [`Proof`] on an account
/// that has none to give (see [`not_signed_in_recently`]).
pub(super) const RECENT_SIGN_IN_MS: u64 = 10 * 60 * 1000;

/// What an account with nothing to prove itself with (no password, no TOTP:
/// made by an external login) shows instead of a [`Proof`]: a sign-in within
/// [`RECENT_SIGN_IN_MS`] (a session that began then, or a login's access
/// token, not a refreshed one). Otherwise anyone holding a stolen session
/// or refresh token could add a passkey or link a provider of theirs, and
/// keep the account after the session ends. `Some` is the answer to send:
/// sign in again, then retry.
pub(super) fn not_signed_in_recently(who: &super::http::SignedIn, ext: &http::Extensions) -> Option<HttpResponse> {
    if who.signed_in_ago_ms.is_some_and(|ago| ago <= RECENT_SIGN_IN_MS) {
        return None;
    }
    let detail = "this account has no password or code to confirm the change with: \
                  sign in again, then retry within 10 minutes";
    Some(
        Problem::new(StatusCode::FORBIDDEN, "reauthentication-required", "Sign in again")
            .detail(detail)
            .rejected_by("identity", "reauthentication_required")
            .into_response_for(ext),
    )
}

/// The refusal of a change sent with `proof` (already read from its body),
/// if it is refused: the proof is [checked](prove) where the account
/// [needs one](proof_needed), and a [recent sign-in](not_signed_in_recently)
/// is asked for where it has nothing to prove itself with.
pub(super) async fn refusal_without_proof(
    service: &IdentityService,
    state: &LimitState,
    who: &super::http::SignedIn,
    ext: &http::Extensions,
    proof: Proof,
) -> Option<HttpResponse> {
    match proof_needed(service, &who.user).await {
        Ok(true) => prove(service, state, ext, &who.user, proof).await.err(),
        Ok(false) => not_signed_in_recently(who, ext),
        Err(e) => Some(internal_for(ext, &e)),
    }
}

/// Reads a JSON [`Proof`] and [checks](prove) it when the account
/// [needs one](proof_needed); otherwise leaves the body unread and asks for
/// a [recent sign-in](not_signed_in_recently). The request, for the rest of the
/// handler.
pub(super) async fn read_and_prove(
    service: &IdentityService,
    state: &LimitState,
    who: &super::http::SignedIn,
    req: HttpRequest,
) -> Result<HttpRequest, HttpResponse> {
    let user = &who.user;
    match proof_needed(service, user).await {
        Ok(false) => {
            return match not_signed_in_recently(who, req.extensions()) {
                Some(refusal) => Err(refusal),
                None => Ok(req),
            };
        }
        Ok(true) => {}
        Err(e) => return Err(internal_for(req.extensions(), &e)),
    }
    let (req, proof) = read_json::<Proof>(req, "{\"password\"} or {\"code\"}").await?;
    prove(service, state, req.extensions(), user, proof).await?;
    Ok(req)
}

pub(super) async fn handle(
    endpoint: MfaEndpoint,
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
) -> HttpResponse {
    if matches!(endpoint, MfaEndpoint::WebauthnStart | MfaEndpoint::WebauthnFinish) {
        return passkey_step(endpoint, service, state, req).await;
    }
    let who = match super::http::signed_in(service, state, super::http::Head::of(&req)).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let user = who.user.clone();
    match endpoint {
        MfaEndpoint::Status => match service.mfa_status(&user.id).await {
            Ok(s) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "totp": s.totp,
                    "totp_pending": s.totp_pending,
                    "backup_codes_left": s.backup_codes_left,
                    "methods": service.mfa_methods(&user.id).await.unwrap_or_default(),
                }),
            ),
            Err(e) => internal(&req, &e),
        },
        // Turning a second factor on takes the same proof as any other
        // change to how the account signs in: else a stolen token could
        // enrol the thief's app, lock the owner out at the next login, and
        // use its codes as the proof for adding a passkey.
        MfaEndpoint::Totp => match read_and_prove(service, state, &who, req).await {
            Err(refusal) => refusal,
            Ok(req) => begin_totp(service, state, &user, req).await,
        },
        MfaEndpoint::Confirm => {
            let (req, body) = match read_json::<CodeBody>(req, "{\"code\"}").await {
                Ok(x) => x,
                Err(resp) => return resp,
            };
            match service.confirm_totp(&user, &body.code).await {
                Ok(codes) => {
                    state.audit(
                        attempt_event(req.extensions(), AuditKind::MfaChanged, "mfa", Some(user.id.clone()), None)
                            .detail("action", "totp_enabled"),
                    );
                    // A second factor raises the session's privilege: a new session id.
                    let mut resp = json_no_store(&serde_json::json!({ "backup_codes": codes }));
                    super::session_http::renew_after_privilege_change(service, &who, &mut resp).await;
                    resp
                }
                Err(CodeRefusal::Refused(r)) => refused(service, state, req.extensions(), &user, r).await,
                Err(CodeRefusal::Failed(e)) => internal(&req, &e),
            }
        }
        // Answered above, before the bearer token is asked for.
        MfaEndpoint::WebauthnStart | MfaEndpoint::WebauthnFinish => passkey_step(endpoint, service, state, req).await,
        MfaEndpoint::Disable | MfaEndpoint::BackupCodes => {
            let (req, body) = match read_json::<Proof>(req, "{\"password\"} or {\"code\"}").await {
                Ok(x) => x,
                Err(resp) => return resp,
            };
            let active = match service.mfa_status(&user.id).await {
                Ok(s) => s.totp,
                Err(e) => return internal(&req, &e),
            };
            if !active {
                return Problem::new(StatusCode::CONFLICT, "no-second-factor", "No second factor")
                    .detail("no second factor is active")
                    .rejected_by("identity", "no_second_factor")
                    .into_response_for(req.extensions());
            }
            if let Err(resp) = prove(service, state, req.extensions(), &user, body).await {
                return resp;
            }
            let ext = req.extensions();
            let audit = |action: &'static str| {
                state.audit(
                    attempt_event(ext, AuditKind::MfaChanged, "mfa", Some(user.id.clone()), None)
                        .detail("action", action),
                );
            };
            if endpoint == MfaEndpoint::Disable {
                match service.disable_mfa(&user.id).await {
                    Ok(_) => {
                        audit("totp_disabled");
                        empty(StatusCode::NO_CONTENT)
                    }
                    Err(e) => internal(&req, &e),
                }
            } else {
                match service.regenerate_backup_codes(&user.id).await {
                    Ok(codes) => {
                        audit("backup_codes_regenerated");
                        json_no_store(&serde_json::json!({ "backup_codes": codes }))
                    }
                    Err(e) => internal(&req, &e),
                }
            }
        }
    }
}

/// `POST {prefix}/mfa/totp` once the caller has shown proof: a new secret,
/// pending until confirmed with a code.
async fn begin_totp(service: &IdentityService, state: &LimitState, user: &User, req: HttpRequest) -> HttpResponse {
    match service.begin_totp(user).await {
        Ok(e) => {
            let event = attempt_event(req.extensions(), AuditKind::MfaChanged, "mfa", Some(user.id.clone()), None);
            state.audit(event.detail("action", "totp_enrolment_started"));
            json_no_store(&serde_json::json!({
                "secret": e.secret_base32,
                "otpauth_uri": e.otpauth_uri,
                "qr_png": e.qr_png,
                "qr_svg": e.qr_svg,
            }))
        }
        Err(IdentityError::Taken(_)) => Problem::new(StatusCode::CONFLICT, "totp-active", "TOTP already active")
            .detail("disable it before enrolling again")
            .rejected_by("identity", "totp_active")
            .into_response_for(req.extensions()),
        Err(e) => internal(&req, &e),
    }
}

fn internal_for(ext: &http::Extensions, e: &IdentityError) -> HttpResponse {
    tracing::error!(error = %e, "identity request failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
        .rejected_by("identity", "internal")
        .into_response_for(ext)
}

/// Checks the password or the code a change is made with.
pub(super) async fn prove(
    service: &IdentityService,
    state: &LimitState,
    ext: &http::Extensions,
    user: &User,
    proof: Proof,
) -> Result<(), HttpResponse> {
    match (proof.password, proof.code) {
        (Some(password), None) => match service.reprove_password(user, &password).await {
            Ok(()) => Ok(()),
            Err(IdentityError::InvalidGrant { reason, .. }) => {
                Err(failure(service, state, ext, Some(&user.id), "password", reason).await)
            }
            Err(IdentityError::Busy) => Err(super::http::busy()),
            Err(e) => Err(internal_for(ext, &e)),
        },
        (None, Some(code)) => match service.check_second_factor(&user.id, &code).await {
            // A lock stops proofs by code too (the code is spent either way).
            Ok(kind) if user.is_locked(now_ms()) => {
                Err(failure(service, state, ext, Some(&user.id), kind.as_str(), "locked").await)
            }
            Ok(_) => Ok(()),
            Err(CodeRefusal::Refused(r)) => Err(refused(service, state, ext, user, r).await),
            Err(CodeRefusal::Failed(e)) => Err(internal_for(ext, &e)),
        },
        _ => Err(Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
            .detail("send either {\"password\"} or {\"code\"}")
            .rejected_by("identity", "bad_request")
            .into_response_for(ext)),
    }
}

async fn refused(
    service: &IdentityService,
    state: &LimitState,
    ext: &http::Extensions,
    user: &User,
    r: CodeRefused,
) -> HttpResponse {
    let method = r.kind.map_or("otp", |k| k.as_str());
    failure(service, state, ext, Some(&user.id), method, r.reason).await
}

/// A refused password or code at an account endpoint: strike, audit, count.
async fn failure(
    service: &IdentityService,
    state: &LimitState,
    ext: &http::Extensions,
    user_id: Option<&str>,
    method: &'static str,
    reason: &'static str,
) -> HttpResponse {
    record_failure(service, state, ext, user_id, method, reason).await;
    let mut resp = Problem::new(StatusCode::FORBIDDEN, "invalid-credentials", "Invalid password or code")
        .detail("the password or code is not correct")
        .rejected_by("identity", "invalid_second_factor")
        .into_response_for(ext);
    resp.headers_mut().insert(CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// Whether a refusal counts towards the account's lockout: a wrong secret
/// does; an attempt on a locked account, a password tried on an account
/// without one (as at login) and a mistyped confirmation do not.
fn counts_towards_lockout(reason: &str) -> bool {
    !matches!(reason, "locked" | "no_password" | "not_confirmed")
}

/// A failed attempt: a ban strike for the address, an audit event and, when
/// it [counts](counts_towards_lockout), one more failure towards the
/// account's lockout.
pub(super) async fn record_failure(
    service: &IdentityService,
    state: &LimitState,
    ext: &http::Extensions,
    user_id: Option<&str>,
    method: &'static str,
    reason: &'static str,
) {
    if let Some(ip) = ext.get::<ClientInfo>().map(|c| c.ip) {
        state.strike(ip, Strike::AuthFailure);
    }
    let subject = user_id.map(str::to_owned);
    state.audit(attempt_event(ext, AuditKind::AuthFailure, method, subject.clone(), Some(reason)));
    let Some(id) = user_id.filter(|_| counts_towards_lockout(reason)) else { return };
    if count_failure(service, state, id).await {
        if let Err(e) = service.lock_out(id).await {
            tracing::error!(error = %e, "could not lock an account after repeated failures");
        }
        state.audit(attempt_event(ext, AuditKind::Lockout, method, subject, Some("too_many_failures")));
    }
}

/// The second login step: `grant_type=`[`MFA_OTP_GRANT`], `mfa_token`, `otp`.
pub(super) async fn mfa_grant(
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
    form: TokenForm,
    finish: super::http::Finish,
) -> HttpResponse {
    let (Some(token), Some(otp)) = (form.mfa_token.as_deref(), form.otp.as_deref()) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "mfa_token and otp are required");
    };
    let ext = req.extensions();
    let invalid = || oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the code or the mfa_token is not valid");
    let Some(pending) = service.verify_mfa_token(token) else {
        record_failure(service, state, ext, None, "otp", "bad_mfa_token").await;
        return invalid();
    };
    let kind = match service.check_second_factor(&pending.user_id, otp).await {
        Ok(kind) => kind,
        Err(CodeRefusal::Refused(r)) => {
            let method = r.kind.map_or("otp", |k| k.as_str());
            record_failure(service, state, ext, Some(&pending.user_id), method, r.reason).await;
            return invalid();
        }
        Err(CodeRefusal::Failed(e)) => return internal_for(ext, &e),
    };
    if finish == super::http::Finish::Session {
        return match service.mfa_login(&pending).await {
            Ok(user) => {
                let event = attempt_event(ext, AuditKind::AuthSuccess, kind.as_str(), Some(user.id.clone()), None);
                state.audit(event.detail("grant", MFA_OTP_GRANT));
                super::session_http::logged_in(service, state, super::http::Head::of(&req), &user, &["pwd", "otp"])
                    .await
            }
            Err(IdentityError::InvalidGrant { reason, user_id }) => {
                state.audit(attempt_event(ext, AuditKind::AuthFailure, kind.as_str(), user_id, Some(reason)));
                invalid()
            }
            Err(e) => internal_for(ext, &e),
        };
    }
    match service.complete_mfa_login(&pending).await {
        Ok(tokens) => {
            let event = attempt_event(ext, AuditKind::AuthSuccess, kind.as_str(), Some(pending.user_id.clone()), None);
            state.audit(event.detail("grant", MFA_OTP_GRANT));
            json_no_store(&super::http::issued(&tokens))
        }
        Err(IdentityError::InvalidGrant { reason, user_id }) => {
            state.audit(attempt_event(ext, AuditKind::AuthFailure, kind.as_str(), user_id, Some(reason)));
            invalid()
        }
        Err(e) => internal_for(ext, &e),
    }
}

#[derive(Deserialize)]
struct PasskeyStep {
    /// End in a browser session instead of tokens.
    #[serde(default)]
    session: bool,
    mfa_token: String,
    challenge_id: Option<String>,
    credential: Option<serde_json::Value>,
}

/// The second login step with a passkey: a challenge for the user the
/// `mfa_token` names, then its answer, which ends in the tokens.
async fn passkey_step(
    endpoint: MfaEndpoint,
    service: &IdentityService,
    state: &LimitState,
    req: HttpRequest,
) -> HttpResponse {
    const METHOD: &str = "passkey";
    let (req, body) = match read_json::<PasskeyStep>(req, "{\"mfa_token\", \"challenge_id\"?, \"credential\"?}").await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if body.session {
        if let Some(refused) = super::session_http::cross_site_login(service, state, &req) {
            return refused;
        }
    }
    let ext = req.extensions();
    let invalid = || oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the passkey or the mfa_token is not valid");
    let Some(pending) = service.verify_mfa_token(&body.mfa_token) else {
        record_failure(service, state, ext, None, METHOD, "bad_mfa_token").await;
        return invalid();
    };
    if endpoint == MfaEndpoint::WebauthnStart {
        return match service.passkey_challenge_for(&pending.user_id).await {
            Ok(Some(c)) => super::passkey_http::challenge_response(c),
            Ok(None) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the account has no passkey"),
            Err(e) => super::passkey_http::failure(&req, e),
        };
    }
    let (Some(challenge_id), Some(credential)) = (body.challenge_id, body.credential) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "challenge_id and credential are required");
    };
    match service.passkey_verify_for(&pending.user_id, &challenge_id, credential).await {
        Ok(()) => {}
        Err(super::passkeys::PasskeyError::Refused { reason, .. }) => {
            record_failure(service, state, ext, Some(&pending.user_id), METHOD, reason).await;
            return invalid();
        }
        Err(e) => return super::passkey_http::failure(&req, e),
    }
    if body.session {
        return match service.mfa_login(&pending).await {
            Ok(user) => {
                let event = attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(user.id.clone()), None);
                state.audit(event.detail("step", "second_factor"));
                super::session_http::logged_in(service, state, super::http::Head::of(&req), &user, &["pwd", "hwk"])
                    .await
            }
            Err(IdentityError::InvalidGrant { reason, user_id }) => {
                state.audit(attempt_event(ext, AuditKind::AuthFailure, METHOD, user_id, Some(reason)));
                invalid()
            }
            Err(e) => internal_for(ext, &e),
        };
    }
    match service.complete_mfa_login(&pending).await {
        Ok(tokens) => {
            let event = attempt_event(ext, AuditKind::AuthSuccess, METHOD, Some(pending.user_id.clone()), None);
            state.audit(event.detail("step", "second_factor"));
            json_no_store(&super::http::issued(&tokens))
        }
        Err(IdentityError::InvalidGrant { reason, user_id }) => {
            state.audit(attempt_event(ext, AuditKind::AuthFailure, METHOD, user_id, Some(reason)));
            invalid()
        }
        Err(e) => internal_for(ext, &e),
    }
}
