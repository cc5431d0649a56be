//! The API-key endpoints, under `[identity] prefix`, for the caller's own
//! keys. The caller is named by a bearer access token of ours, never by an
//! API key: a leaked key cannot mint, rotate or list keys.
//!
//! - `POST {prefix}/api-keys` — JSON `{"name", "scopes"?, "expires_in"?, "cidrs"?,
//!   "password" | "code"}` (`expires_in` like `30d`) → 201 with the key, shown
//!   this once.
//! - `GET {prefix}/api-keys` — the caller's keys: display prefix, never the key.
//! - `POST {prefix}/api-keys/{id}/rotate` — JSON `{"grace"?, "password" | "code"}`
//!   (e.g. `1h`) → 201 with the new key; the old one works for the grace period.
//!
//! Minting a key, or a new secret for one, takes the proof any change to
//! how the account signs in takes: a key is a credential that outlives the
//! access token that made it, so a stolen or refreshed token must not turn
//! itself into one.
//! - `DELETE {prefix}/api-keys/{id}` — revokes; 204.
//!
//! Someone else's key id answers 404, like a missing one.

use std::time::Duration;

use http::{Method, StatusCode};
use serde::Deserialize;

use super::{key_json, KeyRequest};
use crate::edge::{HttpRequest, HttpResponse};
use crate::identity::http::{bad_request, empty, internal, json, read_json};
use crate::identity::mfa_http::{refusal_without_proof, Proof};
use crate::identity::service::IdentityError;
use crate::identity::IdentityService;
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;
use crate::store::identity::Owner;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    expires_in: Option<String>,
    #[serde(default)]
    cidrs: Vec<String>,
    password: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace: Option<String>,
    password: Option<String>,
    code: Option<String>,
}

fn duration(field: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| format!("{field}: not a duration like `30d` or `1h`"))
}

fn not_found(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .detail("no such API key")
        .rejected_by("identity", "api_key_not_found")
        .into_response_for(req.extensions())
}

/// Answers `{prefix}/api-keys{rest}`.
pub async fn handle(service: &IdentityService, state: &LimitState, rest: &str, req: HttpRequest) -> HttpResponse {
    let Some(keys) = service.api_keys.as_ref() else {
        return not_found(&req);
    };
    let who = match super::super::http::signed_in(service, state, super::super::http::Head::of(&req)).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let user = who.user.clone();
    let owner = Owner::User(user.id.clone());
    let settings = &keys.settings;
    let db = &service.db;
    let audit = |action: &'static str, id: &str| {
        state.audit(
            AuditEvent::new(AuditKind::KeyChanged)
                .subject(user.id.clone())
                .detail("action", action)
                .detail("api_key_id", id.to_owned()),
        );
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, []) => match super::list(db, Some(&owner)).await {
            Ok(list) => {
                let items: Vec<_> = list.iter().map(|k| key_json(k, None)).collect();
                json(StatusCode::OK, &serde_json::json!({ "api_keys": items }))
            }
            Err(e) => internal(&req, &e),
        },
        (Method::POST, []) => {
            let (req, mut body) = match read_json::<CreateBody>(
                req,
                "{\"name\", \"scopes\"?: [..], \"expires_in\"?: \"30d\", \"cidrs\"?: [..], \"password\" or \"code\"}",
            )
            .await
            {
                Ok(x) => x,
                Err(resp) => return resp,
            };
            let (password, code) = (body.password.take(), body.code.take());
            if let Some(refusal) =
                refusal_without_proof(service, state, &who, req.extensions(), Proof::new(password, code)).await
            {
                return refusal;
            }
            let expires_in = match body.expires_in.as_deref().map(|t| duration("expires_in", t)).transpose() {
                Ok(d) => d,
                Err(msg) => return bad_request(&req, &msg),
            };
            let mut cidrs = Vec::with_capacity(body.cidrs.len());
            for c in &body.cidrs {
                match parse_cidr(c) {
                    Some(net) => cidrs.push(net),
                    None => return bad_request(&req, "cidrs: each must be an address or a block like 10.0.0.0/8"),
                }
            }
            // A scope is a grant on routes that require it: users may put
            // only the configured ones on their own keys (admins any).
            if !user.roles.iter().any(|r| r == "admin") {
                if let Some(s) = body.scopes.iter().find(|s| !settings.user_scopes.contains(s)) {
                    let allowed = if settings.user_scopes.is_empty() {
                        "none are allowed".to_owned()
                    } else {
                        format!("allowed: {}", settings.user_scopes.join(", "))
                    };
                    let scope: String = s.chars().take(64).collect();
                    return bad_request(
                        &req,
                        &format!(
                            "scopes: `{scope}` cannot be put on a key by its user ({allowed}; \
                             [identity.api_keys] user_scopes)"
                        ),
                    );
                }
            }
            // Bounded per user: each key is a row, a cache entry and a line
            // in every list. Checked before the insert, so two requests at
            // once may both pass at the limit.
            let now = crate::identity::service::now_ms();
            match super::list(db, Some(&owner)).await {
                Ok(list) => {
                    let live =
                        list.iter().filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|e| e > now)).count();
                    if live >= settings.max_per_user as usize {
                        return Problem::new(StatusCode::CONFLICT, "too-many-keys", "Too many API keys")
                            .detail(format!("at most {} live keys per user; revoke one first", settings.max_per_user))
                            .into_response_for(req.extensions());
                    }
                }
                Err(e) => return internal(&req, &e),
            }
            let request = KeyRequest { name: body.name, scopes: body.scopes, expires_in, cidrs };
            match super::create(db, settings, owner, &request).await {
                Ok(made) => {
                    audit("api_key_created", &made.record.id);
                    created(&key_json(&made.record, Some(&made.key)))
                }
                Err(IdentityError::BadInput(msg)) => bad_request(&req, &msg),
                Err(e) => internal(&req, &e),
            }
        }
        (Method::POST, [id, "rotate"]) => {
            let id = (*id).to_owned();
            let has_body = req.headers().contains_key(http::header::CONTENT_TYPE);
            let (req, mut body) = if has_body {
                match read_json::<RotateBody>(req, "{\"grace\"?: \"1h\", \"password\" or \"code\"}").await {
                    Ok(x) => x,
                    Err(resp) => return resp,
                }
            } else {
                (req, RotateBody::default())
            };
            let (password, code) = (body.password.take(), body.code.take());
            if let Some(refusal) =
                refusal_without_proof(service, state, &who, req.extensions(), Proof::new(password, code)).await
            {
                return refusal;
            }
            let grace = match body.grace.as_deref().map(|t| duration("grace", t)).transpose() {
                Ok(d) => d,
                Err(msg) => return bad_request(&req, &msg),
            };
            match super::rotate(db, settings, &id, Some(&owner), grace).await {
                Ok((made, old)) => {
                    keys.evict(&old.key_hash);
                    audit("api_key_rotated", &id);
                    let mut body = key_json(&made.record, Some(&made.key));
                    if let Some(map) = body.as_object_mut() {
                        map.insert("rotated".into(), key_json(&old, None));
                    }
                    created(&body)
                }
                Err(IdentityError::BadInput(msg)) if msg.starts_with("no ") => not_found(&req),
                Err(IdentityError::BadInput(msg)) => bad_request(&req, &msg),
                Err(e) => internal(&req, &e),
            }
        }
        (Method::DELETE, [id]) => match super::revoke(db, id, Some(&owner)).await {
            Ok(old) => {
                keys.evict(&old.key_hash);
                audit("api_key_revoked", id);
                empty(StatusCode::NO_CONTENT)
            }
            Err(IdentityError::BadInput(_)) => not_found(&req),
            Err(e) => internal(&req, &e),
        },
        _ => Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
            .detail("GET or POST /api-keys, POST /api-keys/{id}/rotate, DELETE /api-keys/{id}")
            .rejected_by("identity", "method")
            .into_response_for(req.extensions()),
    }
}

fn created(value: &serde_json::Value) -> HttpResponse {
    let mut resp = json(StatusCode::CREATED, value);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// A CIDR block, or a single address as its /32 or /128.
pub fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}
