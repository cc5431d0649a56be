//! The admin API, under `{prefix}/admin`: users, API keys, bans, access
//! lists, the audit log, live statistics, the running config and reloads.
//!
//! **Who may call it**: a user whose *current* roles (read from the database
//! on every call, not from the token) include `admin`, signed in by a bearer
//! token of ours or a browser session (with the CSRF header on unsafe
//! methods); or an API key with the `admin` scope that belongs to a service
//! client, or to a user who currently holds `admin` (an admin may put any
//! scope on their own keys and keeps them when demoted, so the scope alone
//! proves nothing for a user). No
//! credential → 401; anyone else → 403 `forbidden`, the same for every
//! endpoint, before anything is read.
//!
//! An admin cannot lock, demote, log out or erase their own account here
//! (400): those go through another admin, or the account endpoints.
//!
//! Every change is an `admin_action` audit event naming the admin (`actor`)
//! and the user changed (`subject`), never their names or addresses.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /admin/users?search=&limit=&offset=` | `{"users": [user]}` (search: prefix of username or e-mail) |
//! | `GET /admin/users/{id}` | user with `mfa_methods` and `api_keys` |
//! | `POST /admin/users/{id}/lock` `{"for"?: "1h"}` | user (no `for`: until unlocked); sessions and tokens end |
//! | `POST /admin/users/{id}/unlock` | user |
//! | `POST /admin/users/{id}/mfa/reset` | 204: TOTP, backup codes and passkeys removed |
//! | `PUT /admin/users/{id}/roles` `{"roles": [..]}` | user |
//! | `DELETE /admin/users/{id}/sessions` | 204: log out everywhere |
//! | `GET /admin/users/{id}/export` | the user's personal data |
//! | `DELETE /admin/users/{id}` | 204: account erased (the id stays, as a tombstone) |
//! | `GET /admin/api-keys?user=&client=` | `{"api_keys": [..]}` (never the keys) |
//! | `DELETE /admin/api-keys/{id}` | 204: revoked |
//! | `GET /admin/bans` | `{"bans": [..]}` |
//! | `POST /admin/bans` `{"ip", "ttl"?: "1h", "reason"?}` | 201 ban (shared through Redis when configured) |
//! | `DELETE /admin/bans/{ip}` | 204 |
//! | `GET /admin/access-lists?ip=` | `{"allow": [cidr], "deny": [cidr]}`, with `ip`: also `{"permitted", "banned"}` |
//! | `GET /admin/audit?kind=&subject=&ip=&since=1h&limit=100` | `{"records": [..]}`, newest matches, at most 1000 |
//! | `GET /admin/stats` | requests/s (now and a 2-minute series), in flight, rejections, top talkers, upstream health, degraded dependencies |
//! | `GET /admin/config` | the running config, secrets redacted |
//! | `POST /admin/reload` | 200 `{"reloaded": true}`; 400 naming what is wrong (the running config stays); 409 when not started from a file |
//!
//! Allow and deny lists live in the config file (reviewed and versioned with
//! it): edit the file and `POST /admin/reload`. Bans are the runtime tool.

use std::net::IpAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use rampart_core::client_ip::ClientInfo;
use rampart_core::principal::{AuthMethod, Principal};
use serde::Deserialize;
use serde_json::{json, Value};

use super::admin::user_json;
use super::http::{empty, json, read_json, signed_in_user, Head};
use super::service::{now_ms, IdentityError};
use super::IdentityService;
use crate::edge::{HttpRequest, HttpResponse};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind, AuditQuery};
use crate::problem::Problem;
use crate::store::identity::{Owner, PasskeyStore, User, UserQuery, UserStore};
use axum::body::Body;
use http::request::Parts;

/// The role (and API-key scope) the admin API needs: the built-in role.
use rampart_core::config::authorize::ADMIN_ROLE as ADMIN;
/// Most audit records one query returns.
const MAX_AUDIT: usize = 1_000;
/// Longest ban an admin may set.
const MAX_BAN: Duration = Duration::from_secs(366 * 86_400);

/// Who is calling: a user id or a service client id.
struct Admin {
    id: String,
}

fn bad_request(req: &Parts, detail: &str) -> HttpResponse {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
        .detail(detail.to_string())
        .rejected_by("identity", "bad_request")
        .into_response_for(&req.extensions)
}

fn internal(req: &Parts, e: &IdentityError) -> HttpResponse {
    tracing::error!(error = %e, "admin request failed");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
        .rejected_by("identity", "internal")
        .into_response_for(&req.extensions)
}

/// Reads the JSON body (see [`read_json`]), answering with the request's parts.
async fn body_json<T: serde::de::DeserializeOwned>(
    parts: Parts,
    body: Body,
    shape: &str,
) -> Result<(Parts, T), HttpResponse> {
    let (req, value) = read_json(HttpRequest::from_parts(parts, body), shape).await?;
    Ok((req.into_parts().0, value))
}

fn forbidden(req: &Parts) -> HttpResponse {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
        .detail("this endpoint needs the admin role")
        .rejected_by("identity", "not_admin")
        .into_response_for(&req.extensions)
}

fn not_found(req: &Parts, what: &str) -> HttpResponse {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
        .detail(format!("no such {what}"))
        .rejected_by("identity", "admin_not_found")
        .into_response_for(&req.extensions)
}

fn method_not_allowed(req: &Parts) -> HttpResponse {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
        .detail("see GET {prefix}/openapi.json for the admin API")
        .rejected_by("identity", "method_not_allowed")
        .into_response_for(&req.extensions)
}

/// Whether `user` holds the admin role now and may act (the admin API and
/// the dashboard page ask the same question). An admin another admin locked
/// may not: its tokens and API keys would otherwise keep admin power, and
/// could unlock it. The automatic lock after wrong passwords does not take
/// admin power from the admin's API keys and unexpired access tokens (it
/// stops logins and refreshes, and ends sessions at their next check):
/// anyone can trigger it by guessing, and would otherwise cut every admin
/// off the admin API.
pub(crate) fn is_admin(user: &User) -> bool {
    !user.disabled && !user.is_admin_locked(now_ms()) && user.roles.iter().any(|r| r == ADMIN)
}

/// The caller, if it is an admin; the refusal otherwise.
async fn authenticate(service: &IdentityService, state: &LimitState, req: &Parts) -> Result<Admin, HttpResponse> {
    // The bearer layer may have authenticated an API key already (routes with
    // `auth`): it took the key off the request and left the principal.
    let principal = match req.extensions.get::<Principal>() {
        Some(p) if p.method == AuthMethod::ApiKey => {
            Some((p.clone(), req.extensions.get::<crate::auth::authorize::OwnUser>().is_some()))
        }
        _ => api_key_principal(service, state, req).await?,
    };
    if let Some((p, owned_by_user)) = principal {
        if !p.scopes.iter().any(|s| s == ADMIN) {
            return Err(forbidden(req));
        }
        // A service client's key carries what its operator gave it; a user's
        // key only what the user holds now.
        if !owned_by_user {
            return Ok(Admin { id: p.subject });
        }
        return match service.db.user_by_id(&p.subject).await {
            Ok(Some(user)) if is_admin(&user) => Ok(Admin { id: user.id }),
            Ok(_) => Err(forbidden(req)),
            Err(e) => Err(internal(req, &e.into())),
        };
    }
    let user = signed_in_user(service, state, Head::of_parts(req)).await?;
    if is_admin(&user) {
        Ok(Admin { id: user.id })
    } else {
        Err(forbidden(req))
    }
}

/// The principal of an API key on the request (`Authorization: ApiKey …` or
/// the `[auth] api_key_header`), checked like the bearer layer checks it, and
/// whether a user (not a service client) owns the key.
async fn api_key_principal(
    service: &IdentityService,
    state: &LimitState,
    req: &Parts,
) -> Result<Option<(Principal, bool)>, HttpResponse> {
    let Some(keys) = service.api_keys.as_ref() else { return Ok(None) };
    let header = state.console().and_then(|c| c.policy()).map(|p| p.auth.api_key_header.clone());
    let header = header.as_ref().map_or("x-api-key", http::HeaderName::as_str);
    let Some(presented) = crate::auth::presented_api_key(&req.headers, header) else { return Ok(None) };
    let refused = || super::http::unauthorized_for(&req.extensions);
    let Some(hash) = presented else { return Err(refused()) };
    let now = now_ms();
    // As the bearer layer: while revocations of keys cannot be polled, a
    // revoked key cannot be told from a good one.
    if !keys.is_current(now) {
        return Err(super::http::sign_in_unavailable(&req.extensions, "api_keys_unavailable"));
    }
    let ip = req.extensions.get::<ClientInfo>().map(|c| c.ip);
    let key = match keys.cached(&hash, now) {
        crate::identity::api_keys::Lookup::Known(k) => k,
        crate::identity::api_keys::Lookup::Unknown => return Err(refused()),
        crate::identity::api_keys::Lookup::Miss => match keys.fetch(hash, now).await {
            Ok(Some(k)) => k,
            Ok(None) => return Err(refused()),
            Err(e) => return Err(internal(req, &e.into())),
        },
    };
    match key.admit(ip, now) {
        Ok(verified) => Ok(Some((verified.principal.clone(), verified.own_user))),
        Err(_) => Err(refused()),
    }
}

/// Answers `{prefix}/admin{rest}`.
pub async fn handle(service: &IdentityService, state: &LimitState, rest: &str, req: HttpRequest) -> HttpResponse {
    // The request's body is not `Sync`: keep only the parts across awaits.
    let (req, body) = req.into_parts();
    let admin = match authenticate(service, state, &req).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let segments: Vec<String> = rest.split('/').filter(|s| !s.is_empty()).map(percent_decoded).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.clone();
    // `users/{id}[/…]`: the user is loaded once, for every action on them.
    if let ["users", id, rest @ ..] = segments.as_slice() {
        if let Some(action) = UserAction::of(rest, &method) {
            let user = match user_or_404(service, &req, id).await {
                Ok(u) => u,
                Err(r) => return r,
            };
            let target = Target { service, state, admin: &admin, user };
            return match action {
                UserAction::Show => target.show(&req).await,
                UserAction::Erase => target.erase(&req).await,
                UserAction::Lock => target.lock(req, body).await,
                UserAction::Unlock => target.unlock(&req).await,
                UserAction::ResetMfa => target.reset_mfa(&req).await,
                UserAction::Roles => target.set_roles(req, body).await,
                UserAction::EndSessions => target.end_sessions(&req).await,
                UserAction::Export => target.export(&req).await,
            };
        }
    }
    match (segments.as_slice(), method) {
        (["users"], Method::GET) => list_users(service, &req).await,
        (["api-keys"], Method::GET) => list_keys(service, &req).await,
        (["api-keys", id], Method::DELETE) => revoke_key(service, state, &admin, &req, id).await,
        (["bans"], Method::GET) => json(StatusCode::OK, &json!({ "bans": state.bans.list() })),
        (["bans"], Method::POST) => add_ban(state, &admin, req, body).await,
        (["bans", ip], Method::DELETE) => remove_ban(state, &admin, &req, ip).await,
        (["access-lists"], Method::GET) => access_lists(state, &req),
        (["audit"], Method::GET) => audit(service, state, &req).await,
        (["stats"], Method::GET) => stats(state),
        (["config"], Method::GET) => config(state, &req),
        (["reload"], Method::POST) => reload(state, &admin, &req).await,
        (
            ["users"]
            | ["users", _]
            | ["users", _, "lock" | "unlock" | "roles" | "sessions" | "export"]
            | ["users", _, "mfa", "reset"]
            | ["api-keys"]
            | ["api-keys", _]
            | ["bans"]
            | ["bans", _]
            | ["access-lists" | "audit" | "stats" | "config" | "reload"],
            _,
        ) => method_not_allowed(&req),
        _ => not_found(&req, "admin endpoint"),
    }
}

fn percent_decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// The query parameters of `req`, last value wins.
fn query(req: &Parts) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn number<T: std::str::FromStr>(
    q: &std::collections::HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, String> {
    q.get(name).map(|v| v.parse::<T>().map_err(|_| format!("`{name}` must be a whole number"))).transpose()
}

fn audit_admin(state: &LimitState, admin: &Admin, action: &'static str) {
    state.audit(audit_admin_event(admin, action, None));
}

async fn list_users(service: &IdentityService, req: &Parts) -> HttpResponse {
    let q = query(req);
    let (limit, offset) = match (number::<u32>(&q, "limit"), number::<u64>(&q, "offset")) {
        (Ok(l), Ok(o)) => (l.unwrap_or(50).clamp(1, 500), o.unwrap_or(0)),
        (Err(m), _) | (_, Err(m)) => return bad_request(req, &m),
    };
    let search = q.get("search").map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if search.as_ref().is_some_and(|s| s.chars().count() > 320) {
        return bad_request(req, "`search` is at most 320 characters");
    }
    match service.db.list_users(&UserQuery { search, limit, offset }).await {
        Ok(users) => json(StatusCode::OK, &json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() })),
        Err(e) => internal(req, &e.into()),
    }
}

/// The user `id`, or the answer to give instead (404, 500).
async fn user_or_404(service: &IdentityService, req: &Parts, id: &str) -> Result<User, HttpResponse> {
    match service.db.user_by_id(id).await {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(not_found(req, "user")),
        Err(e) => Err(internal(req, &e.into())),
    }
}

/// What an admin does to one user: `{prefix}/admin/users/{id}[/…]`.
#[derive(Clone, Copy)]
enum UserAction {
    Show,
    Erase,
    Lock,
    Unlock,
    ResetMfa,
    Roles,
    EndSessions,
    Export,
}

impl UserAction {
    fn of(rest: &[&str], method: &Method) -> Option<Self> {
        Some(match (rest, method) {
            ([], &Method::GET) => Self::Show,
            ([], &Method::DELETE) => Self::Erase,
            (["lock"], &Method::POST) => Self::Lock,
            (["unlock"], &Method::POST) => Self::Unlock,
            (["mfa", "reset"], &Method::POST) => Self::ResetMfa,
            (["roles"], &Method::PUT) => Self::Roles,
            (["sessions"], &Method::DELETE) => Self::EndSessions,
            (["export"], &Method::GET) => Self::Export,
            _ => return None,
        })
    }
}

/// One user, found, and who acts on them.
struct Target<'a> {
    service: &'a IdentityService,
    state: &'a LimitState,
    admin: &'a Admin,
    user: User,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LockBody {
    #[serde(rename = "for")]
    duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

impl Target<'_> {
    fn audit(&self, action: &'static str) -> AuditEvent {
        audit_admin_event(self.admin, action, Some(&self.user.id))
    }

    fn is_self(&self) -> bool {
        self.user.id == self.admin.id
    }

    /// The user as stored now (after a change).
    async fn fresh(&self, req: &Parts) -> HttpResponse {
        match user_or_404(self.service, req, &self.user.id).await {
            Ok(u) => json(StatusCode::OK, &user_json(&u)),
            Err(r) => r,
        }
    }

    async fn show(&self, req: &Parts) -> HttpResponse {
        let (service, user) = (self.service, &self.user);
        let methods = match service.mfa_methods(&user.id).await {
            Ok(m) => m,
            Err(e) => return internal(req, &e),
        };
        let keys = match super::api_keys::list(&service.db, Some(&Owner::User(user.id.clone()))).await {
            Ok(k) => k,
            Err(e) => return internal(req, &e),
        };
        let mut body = user_json(user);
        if let Some(map) = body.as_object_mut() {
            map.insert("mfa_methods".into(), json!(methods));
            map.insert("email_verified".into(), json!(user.email_verified));
            map.insert(
                "api_keys".into(),
                Value::Array(keys.iter().map(|k| super::api_keys::key_json(k, None)).collect()),
            );
        }
        json(StatusCode::OK, &body)
    }

    async fn lock(&self, req: Parts, body: Body) -> HttpResponse {
        let (req, body) = match optional_json::<LockBody>(req, body, "{\"for\"?: \"1h\"}").await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let until = match body.duration.as_deref().map(humantime::parse_duration) {
            None => u64::MAX / 2,
            Some(Ok(d)) if !d.is_zero() => {
                now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)).min(u64::MAX / 2)
            }
            Some(_) => return bad_request(&req, "`for` must be a duration like `30m` or `7d`"),
        };
        if self.is_self() {
            return bad_request(&req, "an admin cannot lock their own account; ask another admin");
        }
        if let Err(e) = self.service.db.lock_user(&self.user.id, until, now_ms()).await {
            return internal(&req, &e.into());
        }
        // The lock is in force from here: audited even if the rest fails.
        if let Err(e) = self.service.log_out_everywhere(&self.user.id).await {
            self.state.audit(self.audit("user_locked").detail("complete", false));
            return internal(&req, &e);
        }
        self.state.audit(self.audit("user_locked"));
        self.fresh(&req).await
    }

    async fn unlock(&self, req: &Parts) -> HttpResponse {
        if self.is_self() {
            return bad_request(req, "an admin cannot unlock their own account; ask another admin");
        }
        if let Err(e) = self.service.db.unlock_user(&self.user.id, now_ms()).await {
            return internal(req, &e.into());
        }
        self.state.audit(self.audit("user_unlocked"));
        self.fresh(req).await
    }

    async fn reset_mfa(&self, req: &Parts) -> HttpResponse {
        let (service, id) = (self.service, &self.user.id);
        if let Err(e) = service.disable_mfa(id).await {
            return internal(req, &e);
        }
        // TOTP is off from here: audited even if removing passkeys fails.
        let passkeys = async {
            for pk in service.db.passkeys_of(id).await? {
                service.db.delete_passkey(id, &pk.id).await?;
            }
            Ok::<_, IdentityError>(())
        }
        .await;
        if let Err(e) = passkeys {
            self.state.audit(self.audit("mfa_reset").detail("complete", false));
            return internal(req, &e);
        }
        self.state.audit(self.audit("mfa_reset"));
        empty(StatusCode::NO_CONTENT)
    }

    async fn set_roles(&self, req: Parts, body: Body) -> HttpResponse {
        let (req, body) = match body_json::<RolesBody>(req, body, "{\"roles\": [\"…\"]}").await {
            Ok(x) => x,
            Err(r) => return r,
        };
        if body.roles.len() > 64 {
            return bad_request(&req, "at most 64 roles");
        }
        if self.is_self() && !body.roles.iter().any(|r| r == ADMIN) {
            return bad_request(&req, "an admin cannot take the admin role from themselves; ask another admin");
        }
        let stored = match self.service.db.set_roles(&self.user.id, &body.roles, now_ms()).await {
            Ok(stored) => stored,
            Err(e) => match IdentityError::from(e) {
                IdentityError::BadInput(msg) => return bad_request(&req, &msg),
                e => return internal(&req, &e),
            },
        };
        // The roles as stored (sorted, without repeats), as a list, each
        // whole: joined into one string, a long role could push `admin` past
        // the value's length cap.
        self.state.audit(self.audit("roles_set").detail("roles", stored));
        self.fresh(&req).await
    }

    async fn end_sessions(&self, req: &Parts) -> HttpResponse {
        if self.is_self() {
            return bad_request(req, "to end your own sessions use POST {prefix}/logout/all");
        }
        if let Err(e) = self.service.log_out_everywhere(&self.user.id).await {
            return internal(req, &e);
        }
        self.state.audit(self.audit("sessions_revoked"));
        empty(StatusCode::NO_CONTENT)
    }

    async fn export(&self, req: &Parts) -> HttpResponse {
        match self.service.export_account(&self.user).await {
            Ok(data) => {
                self.state.audit(self.audit("account_exported"));
                let mut resp = json(StatusCode::OK, &data);
                resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
                resp
            }
            Err(e) => internal(req, &e),
        }
    }

    async fn erase(&self, req: &Parts) -> HttpResponse {
        if self.is_self() {
            return bad_request(req, "erase your own account from the account page (DELETE {prefix}/me)");
        }
        match self.service.erase_account(&self.user.id).await {
            Ok(true) => {
                self.state.audit(self.audit("account_erased"));
                empty(StatusCode::NO_CONTENT)
            }
            Ok(false) => not_found(req, "user"),
            Err(e) => internal(req, &e),
        }
    }
}

/// A JSON body when one was sent (a `Content-Type` or a length), else the default.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    req: Parts,
    body: Body,
    shape: &str,
) -> Result<(Parts, T), HttpResponse> {
    let length = req.headers.get(http::header::CONTENT_LENGTH);
    let sent = req.headers.contains_key(http::header::CONTENT_TYPE)
        || length.is_some_and(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1) > 0);
    if sent {
        body_json(req, body, shape).await
    } else {
        Ok((req, T::default()))
    }
}

async fn list_keys(service: &IdentityService, req: &Parts) -> HttpResponse {
    let q = query(req);
    let owner = match (q.get("user"), q.get("client")) {
        (Some(u), None) => Some(Owner::User(u.clone())),
        (None, Some(c)) => Some(Owner::Client(c.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => return bad_request(req, "give `user` or `client`, not both"),
    };
    match super::api_keys::list(&service.db, owner.as_ref()).await {
        Ok(keys) => json(
            StatusCode::OK,
            &json!({ "api_keys": keys.iter().map(|k| super::api_keys::key_json(k, None)).collect::<Vec<_>>() }),
        ),
        Err(e) => internal(req, &e),
    }
}

async fn revoke_key(
    service: &IdentityService,
    state: &LimitState,
    admin: &Admin,
    req: &Parts,
    id: &str,
) -> HttpResponse {
    match super::api_keys::revoke(&service.db, id, None).await {
        Ok(record) => {
            if let Some(keys) = &service.api_keys {
                keys.evict(&record.key_hash);
            }
            let subject = match &record.owner {
                Owner::User(u) => Some(u.as_str()),
                Owner::Client(_) => None,
            };
            state.audit(audit_admin_event(admin, "api_key_revoked", subject).detail("api_key_id", record.id.clone()));
            empty(StatusCode::NO_CONTENT)
        }
        Err(IdentityError::BadInput(_)) => not_found(req, "API key"),
        Err(e) => internal(req, &e),
    }
}

/// As [`audit_admin`], for callers that add details before recording.
fn audit_admin_event(admin: &Admin, action: &'static str, subject: Option<&str>) -> AuditEvent {
    let mut event = AuditEvent::new(AuditKind::AdminAction).detail("action", action).detail("actor", admin.id.clone());
    if let Some(s) = subject {
        event = event.subject(s.to_owned());
    }
    event
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    ip: String,
    ttl: Option<String>,
    reason: Option<String>,
}

async fn add_ban(state: &LimitState, admin: &Admin, req: Parts, body: Body) -> HttpResponse {
    let (req, body) = match body_json::<BanBody>(req, body, "{\"ip\", \"ttl\"?: \"1h\", \"reason\"?}").await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(ip) = body.ip.trim().parse::<IpAddr>() else {
        return bad_request(&req, "`ip` must be an IPv4 or IPv6 address");
    };
    let ttl = match body.ttl.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(3600),
        Some(Ok(d)) if !d.is_zero() && d <= MAX_BAN => d,
        Some(_) => return bad_request(&req, "`ttl` must be a duration like `30m` or `24h`, at most a year"),
    };
    let reason = body.reason.unwrap_or_else(|| "manual".into());
    if reason.chars().count() > 200 {
        return bad_request(&req, "`reason` is at most 200 characters");
    }
    let Some(ban) = state.bans.add(ip.to_canonical(), ttl, &reason, "manual").await else {
        return crate::limit::bans::ban_list_full().into_response_for(&req.extensions);
    };
    state.audit(audit_admin_event(admin, "ban_added", None).ip(ban.ip).detail("reason", reason));
    let value = serde_json::to_value(&ban).unwrap_or(Value::Null);
    json(StatusCode::CREATED, &value)
}

async fn remove_ban(state: &LimitState, admin: &Admin, req: &Parts, ip: &str) -> HttpResponse {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return bad_request(req, "not an IP address");
    };
    if state.bans.remove(ip.to_canonical()).await {
        state.audit(audit_admin_event(admin, "ban_removed", None).ip(ip));
        empty(StatusCode::NO_CONTENT)
    } else {
        not_found(req, "ban on that address")
    }
}

fn access_lists(state: &LimitState, req: &Parts) -> HttpResponse {
    let Some(policy) = state.console().and_then(|c| c.policy()) else {
        return internal(req, &IdentityError::Internal(anyhow::anyhow!("no running policy")));
    };
    let nets = |list: &rampart_core::client_ip::TrustedProxies| -> Vec<String> {
        list.nets().iter().map(ToString::to_string).collect()
    };
    let mut body = json!({ "allow": nets(&policy.access.allow), "deny": nets(&policy.access.deny) });
    if let Some(ip) = query(req).get("ip") {
        let Ok(ip) = ip.parse::<IpAddr>() else { return bad_request(req, "`ip` must be an IP address") };
        if let Some(map) = body.as_object_mut() {
            map.insert("ip".into(), json!(ip.to_string()));
            map.insert("permitted".into(), json!(policy.access.permits(ip)));
            map.insert("banned".into(), json!(state.bans.banned(ip.to_canonical()).is_some()));
        }
    }
    json(StatusCode::OK, &body)
}

async fn audit(service: &IdentityService, state: &LimitState, req: &Parts) -> HttpResponse {
    let q = query(req);
    let kind = match q.get("kind").map(|k| k.parse::<AuditKind>()).transpose() {
        Ok(k) => k,
        Err(msg) => return bad_request(req, &msg),
    };
    let ip = match q.get("ip").map(|v| v.parse::<IpAddr>()).transpose() {
        Ok(ip) => ip,
        Err(_) => return bad_request(req, "`ip` must be an IP address"),
    };
    let since_ms = match q.get("since").map(|s| humantime::parse_duration(s)).transpose() {
        Ok(d) => d.map(|d| now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
        Err(_) => return bad_request(req, "`since` must be a duration like `1h` or `7d`"),
    };
    let limit = match number::<usize>(&q, "limit") {
        Ok(l) => l.unwrap_or(100).clamp(1, MAX_AUDIT),
        Err(m) => return bad_request(req, &m),
    };
    let query = AuditQuery { kind, subject: q.get("subject").cloned(), ip, since_ms, limit };
    let file = state
        .console()
        .and_then(|c| c.policy())
        .map(|p| std::path::PathBuf::from(&p.audit.file))
        .filter(|f| !f.as_os_str().is_empty() && f.exists());
    match crate::observe::audit::search(Some(&service.db), file.as_deref(), &query).await {
        Ok((records, unreadable)) => {
            json(StatusCode::OK, &json!({ "records": records, "unreadable_lines": unreadable }))
        }
        Err(e) => internal(req, &IdentityError::Internal(e)),
    }
}

fn stats(state: &LimitState) -> HttpResponse {
    let Some(console) = state.console() else {
        return json(StatusCode::OK, &json!({}));
    };
    let live = console.metrics().live();
    let series = live.series();
    let now_rps = series.last().map_or(0.0, |p| p.rps);
    let body = json!({
        "requests_total": live.requests_total(),
        "requests_per_second": now_rps,
        "series": series,
        "in_flight": console.metrics().in_flight().get(),
        "rejections": live.rejections(),
        "top_talkers": state.abuse.top(),
        "upstreams": live.upstreams(),
        "bans_active": state.bans.list().len(),
        "degraded": console.health().degraded(),
    });
    let mut resp = json(StatusCode::OK, &body);
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

fn config(state: &LimitState, req: &Parts) -> HttpResponse {
    match state.console().and_then(|c| c.redacted_config()) {
        Some(cfg) => {
            let mut resp = json(StatusCode::OK, &cfg);
            resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
            resp
        }
        None => Problem::new(StatusCode::CONFLICT, "no-config-file", "No config file")
            .detail("this gateway was not started from a config file")
            .rejected_by("identity", "no_config_file")
            .into_response_for(&req.extensions),
    }
}

async fn reload(state: &LimitState, admin: &Admin, req: &Parts) -> HttpResponse {
    let Some(console) = state.console() else {
        return internal(req, &IdentityError::Internal(anyhow::anyhow!("no console")));
    };
    match console.clone().reload_off_thread().await {
        Ok(()) => {
            audit_admin(state, admin, "config_reload_requested");
            json(StatusCode::OK, &json!({ "reloaded": true }))
        }
        Err(crate::console::ReloadError::NoSource) => {
            Problem::new(StatusCode::CONFLICT, "no-config-file", "No config file")
                .detail("this gateway was not started from a config file; nothing to reload")
                .rejected_by("identity", "no_config_file")
                .into_response_for(&req.extensions)
        }
        Err(crate::console::ReloadError::Refused(why)) => {
            audit_admin(state, admin, "config_reload_requested");
            Problem::new(StatusCode::BAD_REQUEST, "invalid-config", "Config refused")
                .detail(format!("the running config stays in force: {why}"))
                .rejected_by("identity", "invalid_config")
                .into_response_for(&req.extensions)
        }
    }
}
