//! The `password_reset_tokens` table: single-use, expiring tokens that let a
//! user set a new password, stored as SHA-256 hashes.
//!
//! Consuming a token is one conditional `UPDATE … RETURNING` (unused and
//! unexpired, then marked used), so of two concurrent attempts exactly one
//! wins on either backend: SQLite runs one writer at a time, and PostgreSQL
//! re-checks the condition on the row the winner has just changed. The same
//! transaction spends the user's other reset tokens, so that an older e-mail
//! cannot be used after the password was reset.

use std::future::Future;

use super::{check_required, to_db, with_pool, Result, TokenHash, MAX_ID_BYTES};
use crate::store::Database;

/// A reset token to store.
#[derive(Clone, Debug)]
pub struct NewResetToken {
    pub token_hash: TokenHash,
    pub user_id: String,
    pub created_at: u64,
    pub expires_at: u64,
}

/// Storage for password-reset tokens.
pub trait ResetTokenStore: Send + Sync {
    /// Stores a token. An unknown user is [`super::StoreError::NotFound`].
    fn insert_reset_token(&self, new: &NewResetToken) -> impl Future<Output = Result<()>> + Send;

    /// The user of the token if it is unused and unexpired at `now`, without
    /// spending it (to check a new password before the token is used up).
    fn reset_token_user(&self, hash: &TokenHash, now: u64) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Spends the token if it is unused and unexpired at `now`, together with
    /// every other unused token of its user; returns the user's id. `None` for
    /// an unknown, used or expired token.
    fn consume_reset_token(&self, hash: &TokenHash, now: u64) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Deletes the tokens expired at `now`; returns how many.
    fn purge_expired_reset_tokens(&self, now: u64) -> impl Future<Output = Result<u64>> + Send;
}

const INSERT: &str =
    "INSERT INTO password_reset_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
const PEEK: &str =
    "SELECT user_id FROM password_reset_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2";
const CONSUME: &str = "UPDATE password_reset_tokens SET used_at = $2 \
                       WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING user_id";
const SPEND_SIBLINGS: &str = "UPDATE password_reset_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL";
const PURGE: &str = "DELETE FROM password_reset_tokens WHERE expires_at <= $1";

impl ResetTokenStore for Database {
    #[tracing::instrument(skip_all)]
    async fn insert_reset_token(&self, new: &NewResetToken) -> Result<()> {
        check_required("user_id", &new.user_id, MAX_ID_BYTES)?;
        let created = to_db("created_at", new.created_at)?;
        let expires = to_db("expires_at", new.expires_at)?;
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(new.token_hash.as_bytes().as_slice())
                .bind(&new.user_id)
                .bind(created)
                .bind(expires)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn reset_token_user(&self, hash: &TokenHash, now: u64) -> Result<Option<String>> {
        let at = to_db("now", now)?;
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(PEEK).bind(hash.as_bytes().as_slice()).bind(at).fetch_optional(pool).await?
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn consume_reset_token(&self, hash: &TokenHash, now: u64) -> Result<Option<String>> {
        let at = to_db("now", now)?;
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let user: Option<String> =
                sqlx::query_scalar(CONSUME).bind(hash.as_bytes().as_slice()).bind(at).fetch_optional(&mut *tx).await?;
            if let Some(user) = &user {
                sqlx::query(SPEND_SIBLINGS).bind(user).bind(at).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(user)
        })
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired_reset_tokens(&self, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        Ok(with_pool!(self, |pool| { sqlx::query(PURGE).bind(at).execute(pool).await?.rows_affected() }))
    }
}
