//! Personal data (GDPR): a user's data as one JSON document, and erasure.
//!
//! - **Export** ([`export`]): the profile, sessions (devices), API keys and
//!   passkeys (metadata only, never key material or hashes), the state of
//!   second factors, and every audit record that names the user.
//! - **Erasure** ([`IdentityService::erase_account`]): every credential and
//!   session the user holds ends and is deleted, and the user's row becomes
//!   a tombstone without personal fields (see
//!   [`crate::store::identity::UserStore::erase_user`]). Audit records name
//!   users by their opaque id only, never by name or address, so they stay
//!   as they are and the hash chain still verifies; what the id pointed to
//!   is gone.
//!
//! Served at `GET {prefix}/me/export` and `DELETE {prefix}/me` (see
//! [`super::http`]), and for administrators by `rampart user export|erase`.

use serde_json::{json, Value};

use super::service::{now_ms, IdentityError, IdentityService};
use super::sessions::Sessions;
use crate::observe::audit::{AuditQuery, AuditRecord};
use crate::store::audit::AuditStore;
use crate::store::identity::{ApiKeyStore, MfaStore, Owner, PasskeyStore, SessionStore, User, UserStore};
use crate::store::Database;

/// The most audit records an export carries (newest first).
pub const MAX_EXPORTED_AUDIT_RECORDS: usize = 10_000;

/// Everything stored about `user`, as one JSON document. `sessions`: the
/// browser sessions as configured, wherever they are kept (in Redis with
/// `store = "auto"` and a `[redis]` section); without, the database's.
pub async fn export(
    db: &Database,
    sessions: Option<&Sessions>,
    user: &User,
    audit: bool,
) -> Result<Value, IdentityError> {
    let held = match sessions {
        Some(sessions) => sessions.list(&user.id).await?,
        None => db.list_user_sessions(&user.id).await?,
    };
    let sessions: Vec<Value> = held
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "created_at": s.created_at, "last_seen_at": s.last_seen_at,
                "expires_at": s.expires_at, "user_agent": s.user_agent, "ip": s.ip, "amr": s.amr,
            })
        })
        .collect();
    let api_keys: Vec<Value> = db
        .list_api_keys(Some(&Owner::User(user.id.clone())))
        .await?
        .iter()
        .map(|k| {
            json!({
                "id": k.id, "name": k.name, "prefix": k.display_prefix, "scopes": k.scopes,
                "cidrs": k.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "created_at": k.created_at, "expires_at": k.expires_at, "revoked_at": k.revoked_at,
                "last_used_at": k.last_used_at, "use_count": k.use_count,
            })
        })
        .collect();
    let passkeys: Vec<Value> = db
        .passkeys_of(&user.id)
        .await?
        .iter()
        .map(|p| json!({"id": p.id, "name": p.name, "created_at": p.created_at, "last_used_at": p.last_used_at}))
        .collect();
    let totp = db.totp(&user.id).await?;
    let audit: Vec<AuditRecord> = if audit {
        let query =
            AuditQuery { subject: Some(user.id.clone()), limit: MAX_EXPORTED_AUDIT_RECORDS, ..Default::default() };
        db.search(&query).await.map_err(IdentityError::Internal)?
    } else {
        Vec::new()
    };
    Ok(json!({
        "exported_at": now_ms(),
        "profile": {
            "id": user.id, "username": user.username, "email": user.email, "email_verified": user.email_verified,
            "roles": user.roles, "tier": user.tier, "disabled": user.disabled, "locked_until": user.locked_until,
            "has_password": user.password_hash.is_some(), "created_at": user.created_at,
            "updated_at": user.updated_at, "last_login_at": user.last_login_at,
        },
        "second_factors": {"totp": totp.is_some_and(|t| t.confirmed_at.is_some())},
        "sessions": sessions,
        "api_keys": api_keys,
        "passkeys": passkeys,
        "audit": audit,
    }))
}

impl IdentityService {
    /// Erases the account `user_id`: sessions in whatever store holds them,
    /// then every credential and the personal fields (one transaction), and
    /// every instance told that the user's tokens are void. False when there
    /// was no such user.
    pub async fn erase_account(&self, user_id: &str) -> Result<bool, IdentityError> {
        self.end_sessions(user_id).await;
        let now = now_ms();
        let Some(version) = self.db.erase_user(user_id, now).await? else { return Ok(false) };
        self.revocations.user_version_raised(user_id, version, now).await;
        Ok(true)
    }

    /// [`export`] for a signed-in user.
    pub async fn export_account(&self, user: &User) -> Result<Value, IdentityError> {
        export(&self.db, self.sessions.as_deref(), user, true).await
    }
}

/// Erases `user_id` from the command line (no running gateway needed: the
/// raised token version reaches every instance through its revocation poll).
/// `sessions`, where they are kept: every session of the user is deleted
/// first (a session in Redis is otherwise refused by the token version, but
/// its record, with address and browser, would stay until it expires).
pub async fn erase(db: &Database, sessions: Option<&Sessions>, user_id: &str) -> Result<bool, IdentityError> {
    if let Some(sessions) = sessions {
        sessions.end_all(user_id, None).await?;
    }
    Ok(db.erase_user(user_id, now_ms()).await?.is_some())
}
