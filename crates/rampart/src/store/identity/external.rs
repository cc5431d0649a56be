//! The `external_identities` and `oidc_pending_logins` tables (migration
//! `0010_external_identities.sql`): which account at an external OpenID
//! Connect provider signs in as which local user, and the logins in progress.
//!
//! **Links.** `(provider, subject)` is unique (one provider account is one
//! local user) and so is `(user_id, provider)` (a user links one account per
//! provider). A clash is [`StoreError::Conflict`] with `field` `subject` or
//! `provider` respectively. [`ExternalIdentityStore::unlink_external_identity`]
//! refuses, in the same transaction, to remove a user's last way to sign in.
//!
//! **Pending logins are single use.** [`ExternalIdentityStore::take_pending_login`]
//! is one `DELETE … RETURNING`, so of two callbacks with one `state` exactly
//! one gets the login. They are looked up by the SHA-256 of the state, never
//! stored in clear. Expired ones are purged whenever a new one is stored, and
//! at most [`MAX_PENDING_PER_CLIENT`] per client and [`MAX_PENDING_LOGINS`] in
//! all are pending at once.

use std::future::Future;

use super::{
    check_required, check_text, from_db, from_db_opt, storable, to_db, with_pool, Result, StoreError, TokenHash,
    MAX_EMAIL_BYTES, MAX_ID_BYTES,
};
use crate::store::Database;

/// Longest provider name (`[identity.oidc.<name>]` allows 32).
pub const MAX_PROVIDER_BYTES: usize = 64;
/// Longest external subject. OpenID Connect caps `sub` at 255 ASCII characters.
pub const MAX_SUBJECT_BYTES: usize = 255;
/// Longest nonce as stored.
pub const MAX_NONCE_BYTES: usize = 128;
/// Longest `return_to` path.
pub const MAX_RETURN_TO_BYTES: usize = 2048;
/// Logins in progress in all; more are refused until some expire.
pub const MAX_PENDING_LOGINS: i64 = 100_000;
/// Logins in progress one client (see [`PendingLogin::client`]) started; its
/// newest pushes out its oldest, so one client fills its own share, not the
/// table.
pub const MAX_PENDING_PER_CLIENT: i64 = 16;

/// A link between a provider account and a local user.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExternalIdentity {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    /// The address the provider named when the link was made.
    pub email: Option<String>,
    pub created_at: u64,
    pub last_login_at: Option<u64>,
}

/// A login in progress, as stored.
#[derive(Clone, Debug)]
pub struct PendingLogin {
    /// SHA-256 of the `state` sent to the provider.
    pub state_hash: TokenHash,
    pub provider: String,
    /// SHA-256 of the browser-binding cookie of the browser that started it.
    pub browser_hash: TokenHash,
    pub nonce: String,
    /// A path on this site to return to.
    pub return_to: String,
    /// The signed-in user who asked to link an account; `None` for a login.
    pub link_user_id: Option<String>,
    /// The client that started it: its address, or its IPv6 network of
    /// `[server] ipv6_prefix` bits. `None` where no client is known (not
    /// counted per client).
    pub client: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Why a pending login was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyPending;

/// What an unlink did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unlinked {
    Removed,
    /// The user has no link to that provider.
    NotLinked,
    /// Refused: the user has no password, no other link (and no passkey, when
    /// passkeys count), so this is their last way to sign in.
    LastWayToSignIn,
}

/// Storage for external identities and logins in progress.
pub trait ExternalIdentityStore: Send + Sync {
    /// Stores a login in progress after purging the expired ones; refused when
    /// [`MAX_PENDING_LOGINS`] are pending.
    fn insert_pending_login(
        &self,
        new: &PendingLogin,
    ) -> impl Future<Output = Result<std::result::Result<(), TooManyPending>>> + Send;

    /// Takes (deletes and returns) the login whose state hashes to
    /// `state_hash`, if it has not expired at `now`.
    fn take_pending_login(
        &self,
        state_hash: &TokenHash,
        now: u64,
    ) -> impl Future<Output = Result<Option<PendingLogin>>> + Send;

    /// The link of a provider account, if any.
    fn external_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> impl Future<Output = Result<Option<ExternalIdentity>>> + Send;

    /// The user's links, oldest first.
    fn external_identities_of(&self, user_id: &str) -> impl Future<Output = Result<Vec<ExternalIdentity>>> + Send;

    /// Links a provider account to a user (`last_login_at` is ignored). A
    /// linked account is `Conflict` `subject`, a user who has an account of
    /// that provider `Conflict` `provider`, an unknown user `NotFound`.
    fn link_external_identity(&self, new: &ExternalIdentity) -> impl Future<Output = Result<()>> + Send;

    /// Notes a login through the link.
    fn record_external_login(&self, provider: &str, subject: &str, now: u64)
        -> impl Future<Output = Result<()>> + Send;

    /// Removes the user's link to `provider`, unless it is their last way to
    /// sign in: no password, no other link, and (when `passkeys_count`) no
    /// passkey.
    fn unlink_external_identity(
        &self,
        user_id: &str,
        provider: &str,
        passkeys_count: bool,
    ) -> impl Future<Output = Result<Unlinked>> + Send;
}

const PURGE: &str = "DELETE FROM oidc_pending_logins WHERE expires_at <= $1";
const COUNT_PENDING: &str = "SELECT COUNT(*) FROM oidc_pending_logins";
const COUNT_CLIENT: &str = "SELECT COUNT(*) FROM oidc_pending_logins WHERE client = $1";
const EVICT_CLIENT_OLDEST: &str = "DELETE FROM oidc_pending_logins WHERE state_hash IN (SELECT state_hash \
                                   FROM oidc_pending_logins WHERE client = $1 ORDER BY created_at, state_hash LIMIT $2)";
const INSERT_PENDING: &str = "INSERT INTO oidc_pending_logins (state_hash, provider, browser_hash, nonce, return_to, \
                              link_user_id, client, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const TAKE_PENDING: &str = "DELETE FROM oidc_pending_logins WHERE state_hash = $1 RETURNING provider, browser_hash, \
                            nonce, return_to, link_user_id, client, created_at, expires_at";
const LINK_OF: &str = "SELECT provider, subject, user_id, email, created_at, last_login_at \
                       FROM external_identities WHERE provider = $1 AND subject = $2";
const LINKS_OF_USER: &str = "SELECT provider, subject, user_id, email, created_at, last_login_at \
                             FROM external_identities WHERE user_id = $1 ORDER BY created_at, provider";
const IS_LINKED: &str = "SELECT COUNT(*) FROM external_identities WHERE user_id = $1 AND provider = $2";
const INSERT_LINK: &str = "INSERT INTO external_identities (provider, subject, user_id, email, created_at) \
                           VALUES ($1, $2, $3, $4, $5)";
const RECORD_LOGIN: &str = "UPDATE external_identities SET last_login_at = $3 WHERE provider = $1 AND subject = $2";
const COUNT_LINKS: &str = "SELECT COUNT(*) FROM external_identities WHERE user_id = $1";
const HAS_PASSWORD: &str = "SELECT COUNT(*) FROM users WHERE id = $1 AND password_hash IS NOT NULL";
const COUNT_PASSKEYS: &str = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1";
const DELETE_LINK: &str = "DELETE FROM external_identities WHERE user_id = $1 AND provider = $2";

row! {
    struct LinkRow {
        provider: String,
        subject: String,
        user_id: String,
        email: Option<String>,
        created_at: i64,
        last_login_at: Option<i64>,
    }
}

impl LinkRow {
    fn into_identity(self) -> Result<ExternalIdentity> {
        Ok(ExternalIdentity {
            provider: self.provider,
            subject: self.subject,
            user_id: self.user_id,
            email: self.email,
            created_at: from_db("created_at", self.created_at)?,
            last_login_at: from_db_opt("last_login_at", self.last_login_at)?,
        })
    }
}

row! {
    struct PendingRow {
        provider: String,
        browser_hash: Vec<u8>,
        nonce: String,
        return_to: String,
        link_user_id: Option<String>,
        client: Option<String>,
        created_at: i64,
        expires_at: i64,
    }
}

/// Which unique rule a failed link insert broke. PostgreSQL names the
/// constraint, SQLite the columns (`….provider, ….subject` or
/// `….user_id, ….provider`).
fn link_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
            let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
            let field = if text.contains("subject") { "subject" } else { "provider" };
            return StoreError::Conflict { field };
        }
    }
    StoreError::from(e)
}

impl ExternalIdentityStore for Database {
    #[tracing::instrument(skip_all)]
    async fn insert_pending_login(&self, new: &PendingLogin) -> Result<std::result::Result<(), TooManyPending>> {
        check_required("provider", &new.provider, MAX_PROVIDER_BYTES)?;
        check_required("nonce", &new.nonce, MAX_NONCE_BYTES)?;
        check_required("return_to", &new.return_to, MAX_RETURN_TO_BYTES)?;
        if let Some(user) = &new.link_user_id {
            check_required("link_user_id", user, MAX_ID_BYTES)?;
        }
        if let Some(client) = &new.client {
            check_required("client", client, MAX_ID_BYTES)?;
        }
        let created = to_db("created_at", new.created_at)?;
        let expires = to_db("expires_at", new.expires_at)?;
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                sqlx::query(lock).bind(super::lock_key("oidc_pending_logins", "")).execute(&mut *tx).await?;
            }
            sqlx::query(PURGE).bind(created).execute(&mut *tx).await?;
            if let Some(client) = &new.client {
                let mine: i64 = sqlx::query_scalar(COUNT_CLIENT).bind(client).fetch_one(&mut *tx).await?;
                if mine >= MAX_PENDING_PER_CLIENT {
                    let excess = mine - MAX_PENDING_PER_CLIENT + 1;
                    sqlx::query(EVICT_CLIENT_OLDEST).bind(client).bind(excess).execute(&mut *tx).await?;
                }
            }
            let total: i64 = sqlx::query_scalar(COUNT_PENDING).fetch_one(&mut *tx).await?;
            if total >= MAX_PENDING_LOGINS {
                return Ok(Err(TooManyPending));
            }
            sqlx::query(INSERT_PENDING)
                .bind(new.state_hash.as_bytes().as_slice())
                .bind(&new.provider)
                .bind(new.browser_hash.as_bytes().as_slice())
                .bind(&new.nonce)
                .bind(&new.return_to)
                .bind(new.link_user_id.as_deref())
                .bind(new.client.as_deref())
                .bind(created)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    #[tracing::instrument(skip_all)]
    async fn take_pending_login(&self, state_hash: &TokenHash, now: u64) -> Result<Option<PendingLogin>> {
        let row: Option<PendingRow> = with_pool!(self, |pool| {
            sqlx::query_as(TAKE_PENDING).bind(state_hash.as_bytes().as_slice()).fetch_optional(pool).await?
        });
        let Some(row) = row else { return Ok(None) };
        let expires_at = from_db("expires_at", row.expires_at)?;
        if expires_at <= now {
            return Ok(None);
        }
        Ok(Some(PendingLogin {
            state_hash: *state_hash,
            provider: row.provider,
            browser_hash: TokenHash::from_stored(&row.browser_hash)?,
            nonce: row.nonce,
            return_to: row.return_to,
            link_user_id: row.link_user_id,
            client: row.client,
            created_at: from_db("created_at", row.created_at)?,
            expires_at,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn external_identity(&self, provider: &str, subject: &str) -> Result<Option<ExternalIdentity>> {
        if !storable(provider, MAX_PROVIDER_BYTES) || !storable(subject, MAX_SUBJECT_BYTES) {
            return Ok(None);
        }
        let row: Option<LinkRow> = with_pool!(self, |pool| {
            sqlx::query_as(LINK_OF).bind(provider).bind(subject).fetch_optional(pool).await?
        });
        row.map(LinkRow::into_identity).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn external_identities_of(&self, user_id: &str) -> Result<Vec<ExternalIdentity>> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(Vec::new());
        }
        let rows: Vec<LinkRow> =
            with_pool!(self, |pool| { sqlx::query_as(LINKS_OF_USER).bind(user_id).fetch_all(pool).await? });
        rows.into_iter().map(LinkRow::into_identity).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn link_external_identity(&self, new: &ExternalIdentity) -> Result<()> {
        check_required("provider", &new.provider, MAX_PROVIDER_BYTES)?;
        check_required("subject", &new.subject, MAX_SUBJECT_BYTES)?;
        check_required("user_id", &new.user_id, MAX_ID_BYTES)?;
        if let Some(email) = &new.email {
            check_text("email", email, MAX_EMAIL_BYTES)?;
        }
        let created = to_db("created_at", new.created_at)?;
        with_pool!(self, |pool| {
            sqlx::query(INSERT_LINK)
                .bind(&new.provider)
                .bind(&new.subject)
                .bind(&new.user_id)
                .bind(new.email.as_deref())
                .bind(created)
                .execute(pool)
                .await
                .map_err(link_error)?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn record_external_login(&self, provider: &str, subject: &str, now: u64) -> Result<()> {
        if !storable(provider, MAX_PROVIDER_BYTES) || !storable(subject, MAX_SUBJECT_BYTES) {
            return Ok(());
        }
        let at = to_db("now", now)?;
        with_pool!(self, |pool| {
            sqlx::query(RECORD_LOGIN).bind(provider).bind(subject).bind(at).execute(pool).await?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn unlink_external_identity(&self, user_id: &str, provider: &str, passkeys_count: bool) -> Result<Unlinked> {
        if !storable(user_id, MAX_ID_BYTES) || !storable(provider, MAX_PROVIDER_BYTES) {
            return Ok(Unlinked::NotLinked);
        }
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                // Two unlinks of one user at once must not both see the other link.
                sqlx::query(lock).bind(super::lock_key("external_identities", user_id)).execute(&mut *tx).await?;
            }
            let links: i64 = sqlx::query_scalar(COUNT_LINKS).bind(user_id).fetch_one(&mut *tx).await?;
            let has_password: i64 = sqlx::query_scalar(HAS_PASSWORD).bind(user_id).fetch_one(&mut *tx).await?;
            let passkeys: i64 = if passkeys_count {
                sqlx::query_scalar(COUNT_PASSKEYS).bind(user_id).fetch_one(&mut *tx).await?
            } else {
                0
            };
            if links <= 1 && has_password == 0 && passkeys == 0 {
                let linked: i64 =
                    sqlx::query_scalar(IS_LINKED).bind(user_id).bind(provider).fetch_one(&mut *tx).await?;
                return Ok(if linked == 0 { Unlinked::NotLinked } else { Unlinked::LastWayToSignIn });
            }
            let removed = sqlx::query(DELETE_LINK).bind(user_id).bind(provider).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(if removed.rows_affected() > 0 { Unlinked::Removed } else { Unlinked::NotLinked })
        })
    }
}
