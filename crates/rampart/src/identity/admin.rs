//! Account administration for the `rampart user` command: create users (the
//! password read from stdin, checked by the same policy as registration),
//! list, lock, unlock, log out everywhere and set roles, directly in the
//! configured database.

use std::time::Duration;

use rampart_core::config::identity::IdentitySettings;

use super::hasher::HashPool;
use super::service::{now_ms, IdentityError};
use crate::store::identity::{RefreshTokenStore, User, UserQuery, UserStore};
use crate::store::Database;

/// Creates a user with a password that passes the policy, and these roles.
pub async fn add_user(
    settings: &IdentitySettings,
    db: &Database,
    username: &str,
    email: Option<&str>,
    password: &str,
    roles: &[String],
) -> Result<User, IdentityError> {
    let hasher = HashPool::new(1, 0, settings.argon2);
    super::service::create_user(settings, &hasher, db, username, email, password, roles).await
}

async fn find(db: &Database, username: &str) -> Result<User, IdentityError> {
    db.user_by_username(username).await?.ok_or_else(|| IdentityError::BadInput(format!("no user named `{username}`")))
}

pub async fn list_users(db: &Database, search: Option<String>, limit: u32) -> Result<Vec<User>, IdentityError> {
    Ok(db.list_users(&UserQuery { search, limit, offset: 0 }).await?)
}

/// Refuses the user's logins for `duration` (`None`: until unlocked) and
/// ends their sessions: refresh tokens revoked, access tokens refused by
/// every running gateway within its next revocation poll.
pub async fn lock(db: &Database, username: &str, duration: Option<Duration>) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    let now = now_ms();
    let until = duration.map_or(u64::MAX / 2, |d| now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
    db.lock_user(&user.id, until, now).await?;
    end_sessions(db, &user.id, now).await?;
    find(db, username).await
}

/// "Log out everywhere" for `username`, from the command line.
pub async fn log_out(db: &Database, username: &str) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    end_sessions(db, &user.id, now_ms()).await?;
    find(db, username).await
}

async fn end_sessions(db: &Database, user_id: &str, now: u64) -> Result<(), IdentityError> {
    db.bump_token_version(user_id, now).await?;
    db.revoke_user_refresh_tokens(user_id, now).await?;
    Ok(())
}

pub async fn unlock(db: &Database, username: &str) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    db.unlock_user(&user.id, now_ms()).await?;
    find(db, username).await
}

/// Replaces the user's roles; they take effect in tokens issued from now on.
pub async fn set_roles(db: &Database, username: &str, roles: &[String]) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    db.set_roles(&user.id, roles, now_ms()).await?;
    find(db, username).await
}

/// A user as one JSON line: never the password hash.
pub fn user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "roles": u.roles,
        "tier": u.tier,
        "locked_until": u.locked_until,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "last_login_at": u.last_login_at,
    })
}
