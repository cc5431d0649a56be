//! The `refresh_tokens` table: opaque refresh tokens, stored as SHA-256
//! hashes, in families that share one login.
//!
//! A refresh token is spent by [`RefreshTokenStore::rotate_refresh_token`],
//! which hands its family on to a successor. Presenting a spent token again is
//! the sign of a stolen copy, so the whole family is revoked — unless it comes
//! within a short grace window of the first use and the successor has not been
//! used yet: that is the same client refreshing twice (two tabs, a retry after
//! a lost response), and it gets the same successor.
//!
//! **How "the same successor" is possible without storing it.** The successor's
//! plaintext is never stored, so the store cannot give it back. Instead the
//! identity service derives successors deterministically:
//! `successor = HMAC-SHA-256(refresh_secret, presented token)`, with a server
//! secret kept like the key-encryption key. Every refresh of one token computes
//! the same successor, passes its hash as [`Successor::token_hash`], and the
//! store answers [`RotateOutcome::Grace`] only when the stored successor has
//! exactly that hash, so the service may hand out the plaintext it derived.
//! Compared with the alternatives: storing successors encrypted needs a column
//! of ciphertext and the same kind of secret; minting a new sibling token on
//! each grace refresh would leave two live branches in one family, and a thief
//! who refreshed within the window would never trip reuse detection. With one
//! successor, whichever of the two holders refreshes second is detected. The
//! price: anyone holding both the refresh secret and a spent token could work
//! out its live descendants, so the secret must be as well kept as the keys.
//!
//! **Atomicity.** A rotation is one transaction in which the presented row is
//! locked before it is read: SQLite takes the write lock at `BEGIN IMMEDIATE`;
//! PostgreSQL takes an advisory lock on the family (so that rotations and
//! revocations within a family queue rather than deadlock) and then reads the
//! row `FOR UPDATE`. Two concurrent refreshes of one token therefore see each
//! other: one rotates, the other finds the token spent.

use std::future::Future;

use super::{
    check_required, check_text, from_db, from_db_opt, lock_key, new_id, retrying, storable, to_db, with_pool, Result,
    TokenHash, MAX_ID_BYTES,
};
use crate::store::Database;

/// The advisory-lock space of refresh-token families (PostgreSQL).
const FAMILY_LOCK: &str = "rampart.refresh_family";

/// A refresh token to store.
#[derive(Clone, Debug)]
pub struct NewRefreshToken {
    pub token_hash: TokenHash,
    pub user_id: String,
    /// The OAuth client it was issued to, if any; successors inherit it.
    pub client_id: Option<String>,
    /// The family to join; `None` starts a new one (named by the token's id).
    pub family_id: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
}

/// The token that replaces a presented one (see the module docs for why its
/// hash is derived from the presented token).
#[derive(Clone, Debug)]
pub struct Successor {
    pub token_hash: TokenHash,
    pub expires_at: u64,
}

/// A stored refresh token (without its hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshToken {
    pub id: String,
    pub family_id: String,
    pub user_id: String,
    pub client_id: Option<String>,
    pub created_at: u64,
    pub expires_at: u64,
    /// When it was rotated.
    pub used_at: Option<u64>,
    /// The id of the token it was rotated into.
    pub replaced_by: Option<String>,
    pub revoked_at: Option<u64>,
}

impl RefreshToken {
    /// Unused, unrevoked and unexpired at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.used_at.is_none() && self.revoked_at.is_none() && now < self.expires_at
    }
}

/// What presenting a refresh token led to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// No such token.
    Unknown,
    /// Revoked or expired, or presented in the grace window with a successor
    /// other than the one stored (the refresh secret changed in between).
    /// Refuse; nothing was changed.
    Invalid,
    /// The token was spent and the successor stored. The caller should check
    /// `client_id` against the requesting client, and revoke the family when
    /// they differ.
    Rotated { user_id: String, family_id: String, client_id: Option<String>, successor_id: String },
    /// Spent moments ago by the same refresh; the stored successor is the one
    /// the caller passed, still live: hand it out again.
    Grace {
        user_id: String,
        family_id: String,
        client_id: Option<String>,
        successor_id: String,
        successor_expires_at: u64,
    },
    /// A spent token presented again: the family has been revoked (`revoked`
    /// tokens, counting any revoked just now). Refuse and audit.
    Reused { user_id: String, family_id: String, revoked: u64 },
}

/// Storage for refresh tokens.
pub trait RefreshTokenStore: Send + Sync {
    /// Stores a token; its id is fresh. A hash already stored is
    /// [`StoreError::Conflict`] (`token`); an unknown user is
    /// [`StoreError::NotFound`].
    fn insert_refresh_token(&self, new: &NewRefreshToken) -> impl Future<Output = Result<RefreshToken>> + Send;

    /// The token with this hash, in whatever state.
    fn refresh_token(&self, hash: &TokenHash) -> impl Future<Output = Result<Option<RefreshToken>>> + Send;

    /// Spends the token whose hash is `presented`, atomically:
    ///
    /// - unknown → [`RotateOutcome::Unknown`];
    /// - revoked, or expired at `now` → [`RotateOutcome::Invalid`];
    /// - unused → marked used and replaced by `successor` (stored in the same
    ///   family, for the same user and client) → [`RotateOutcome::Rotated`];
    /// - used at most `grace_ms` before `now`, its successor live and hashed as
    ///   `successor` → [`RotateOutcome::Grace`]; with another hash →
    ///   [`RotateOutcome::Invalid`];
    /// - otherwise (used earlier, or its successor already used or gone) → the
    ///   whole family revoked → [`RotateOutcome::Reused`].
    fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        now: u64,
        grace_ms: u64,
        successor: &Successor,
    ) -> impl Future<Output = Result<RotateOutcome>> + Send;

    /// Revokes every token of a family; returns how many were still unrevoked.
    fn revoke_refresh_family(&self, family_id: &str, now: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Revokes every token of a user (logout everywhere, password change).
    fn revoke_user_refresh_tokens(&self, user_id: &str, now: u64) -> impl Future<Output = Result<u64>> + Send;

    /// Deletes tokens expired at `now`; returns how many. Spent and revoked
    /// tokens are kept until they expire, so that reuse is still recognised.
    fn purge_expired_refresh_tokens(&self, now: u64) -> impl Future<Output = Result<u64>> + Send;
}

macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, family_id, user_id, token_hash, client_id, created_at, expires_at, used_at, replaced_by, \
             revoked_at FROM refresh_tokens ",
            $rest
        )
    };
}

const INSERT: &str = "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, client_id, created_at, \
                      expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const BY_HASH: &str = select_tokens!("WHERE token_hash = $1");
const BY_ID: &str = select_tokens!("WHERE id = $1");
const FAMILY_OF: &str = "SELECT family_id FROM refresh_tokens WHERE token_hash = $1";
const SPEND: &str = "UPDATE refresh_tokens SET used_at = $2, replaced_by = $3 WHERE id = $1";
const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL";
const REVOKE_USER: &str = "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";
const PURGE: &str = "DELETE FROM refresh_tokens WHERE expires_at <= $1";

row! {
    struct Row {
        id: String,
        family_id: String,
        user_id: String,
        token_hash: Vec<u8>,
        client_id: Option<String>,
        created_at: i64,
        expires_at: i64,
        used_at: Option<i64>,
        replaced_by: Option<String>,
        revoked_at: Option<i64>,
    }
}

impl Row {
    fn into_token(self) -> Result<(RefreshToken, TokenHash)> {
        let hash = TokenHash::from_stored(&self.token_hash)?;
        let token = RefreshToken {
            id: self.id,
            family_id: self.family_id,
            user_id: self.user_id,
            client_id: self.client_id,
            created_at: from_db("created_at", self.created_at)?,
            expires_at: from_db("expires_at", self.expires_at)?,
            used_at: from_db_opt("used_at", self.used_at)?,
            replaced_by: self.replaced_by,
            revoked_at: from_db_opt("revoked_at", self.revoked_at)?,
        };
        Ok((token, hash))
    }
}

/// What to do with a presented token that exists.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Refuse,
    Rotate,
    /// Spent within the grace window: look at its successor.
    CheckSuccessor,
    /// Hand out this (stored, live) successor again.
    Grace(RefreshToken),
    RevokeFamily,
}

fn first_step(token: &RefreshToken, now: u64, grace_ms: u64) -> Step {
    if token.revoked_at.is_some() || now >= token.expires_at {
        return Step::Refuse;
    }
    match token.used_at {
        None => Step::Rotate,
        // A clock behind the one that spent it (another instance) counts as
        // within the window.
        Some(used) if now.saturating_sub(used) <= grace_ms => Step::CheckSuccessor,
        Some(_) => Step::RevokeFamily,
    }
}

/// The successor's state decides between grace and reuse.
fn successor_step(successor: Option<(RefreshToken, TokenHash)>, expected: &TokenHash, now: u64) -> Step {
    match successor {
        Some((token, hash)) if token.is_live(now) => {
            if hash == *expected {
                Step::Grace(token)
            } else {
                Step::Refuse
            }
        }
        _ => Step::RevokeFamily,
    }
}

fn check_new(new: &NewRefreshToken) -> Result<()> {
    check_required("user_id", &new.user_id, MAX_ID_BYTES)?;
    if let Some(family) = &new.family_id {
        check_required("family_id", family, MAX_ID_BYTES)?;
    }
    if let Some(client) = &new.client_id {
        check_text("client_id", client, MAX_ID_BYTES)?;
    }
    Ok(())
}

impl Database {
    /// One attempt at [`RefreshTokenStore::rotate_refresh_token`].
    async fn rotate_once(
        &self,
        presented: &TokenHash,
        now: u64,
        grace_ms: u64,
        successor: &Successor,
    ) -> Result<RotateOutcome> {
        let at = to_db("now", now)?;
        let successor_expires = to_db("expires_at", successor.expires_at)?;
        let hash = presented.as_bytes().as_slice();
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                // The family never changes, so it may be read before locking.
                let family: Option<String> = sqlx::query_scalar(FAMILY_OF).bind(hash).fetch_optional(&mut *tx).await?;
                let Some(family) = family else {
                    tx.commit().await?;
                    return Ok(RotateOutcome::Unknown);
                };
                sqlx::query(lock).bind(lock_key(FAMILY_LOCK, &family)).execute(&mut *tx).await?;
            }
            let by_hash = format!("{BY_HASH}{}", sql.for_update);
            let row: Option<Row> = sqlx::query_as(&by_hash).bind(hash).fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                tx.commit().await?;
                return Ok(RotateOutcome::Unknown);
            };
            let (token, _) = row.into_token()?;
            let mut step = first_step(&token, now, grace_ms);
            if step == Step::CheckSuccessor {
                let next = match &token.replaced_by {
                    Some(id) => {
                        let by_id = format!("{BY_ID}{}", sql.for_update);
                        let row: Option<Row> = sqlx::query_as(&by_id).bind(id).fetch_optional(&mut *tx).await?;
                        row.map(Row::into_token).transpose()?
                    }
                    None => None,
                };
                step = successor_step(next, &successor.token_hash, now);
            }
            let outcome = match step {
                Step::Grace(next) => RotateOutcome::Grace {
                    user_id: token.user_id,
                    family_id: token.family_id,
                    client_id: token.client_id,
                    successor_id: next.id,
                    successor_expires_at: next.expires_at,
                },
                Step::Rotate => {
                    let successor_id = new_id();
                    sqlx::query(INSERT)
                        .bind(&successor_id)
                        .bind(&token.family_id)
                        .bind(&token.user_id)
                        .bind(successor.token_hash.as_bytes().as_slice())
                        .bind(token.client_id.as_deref())
                        .bind(at)
                        .bind(successor_expires)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(SPEND).bind(&token.id).bind(at).bind(&successor_id).execute(&mut *tx).await?;
                    RotateOutcome::Rotated {
                        user_id: token.user_id,
                        family_id: token.family_id,
                        client_id: token.client_id,
                        successor_id,
                    }
                }
                Step::RevokeFamily => {
                    let revoked = sqlx::query(REVOKE_FAMILY)
                        .bind(&token.family_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    tracing::warn!(family = %token.family_id, revoked, "refresh token reused: family revoked");
                    RotateOutcome::Reused { user_id: token.user_id, family_id: token.family_id, revoked }
                }
                Step::Refuse | Step::CheckSuccessor => RotateOutcome::Invalid,
            };
            tx.commit().await?;
            Ok(outcome)
        })
    }

    async fn revoke_user_once(&self, user_id: &str, at: i64) -> Result<u64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query(REVOKE_USER).bind(user_id).bind(at).execute(pool).await?.rows_affected()
        }))
    }

    async fn revoke_family_once(&self, family_id: &str, at: i64) -> Result<u64> {
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                sqlx::query(lock).bind(lock_key(FAMILY_LOCK, family_id)).execute(&mut *tx).await?;
            }
            let n = sqlx::query(REVOKE_FAMILY).bind(family_id).bind(at).execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            Ok(n)
        })
    }
}

impl RefreshTokenStore for Database {
    #[tracing::instrument(skip_all)]
    async fn insert_refresh_token(&self, new: &NewRefreshToken) -> Result<RefreshToken> {
        check_new(new)?;
        let created = to_db("created_at", new.created_at)?;
        let expires = to_db("expires_at", new.expires_at)?;
        let id = new_id();
        let family_id = new.family_id.clone().unwrap_or_else(|| id.clone());
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&id)
                .bind(&family_id)
                .bind(&new.user_id)
                .bind(new.token_hash.as_bytes().as_slice())
                .bind(new.client_id.as_deref())
                .bind(created)
                .bind(expires)
                .execute(pool)
                .await?;
        });
        Ok(RefreshToken {
            id,
            family_id,
            user_id: new.user_id.clone(),
            client_id: new.client_id.clone(),
            created_at: new.created_at,
            expires_at: new.expires_at,
            used_at: None,
            replaced_by: None,
            revoked_at: None,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn refresh_token(&self, hash: &TokenHash) -> Result<Option<RefreshToken>> {
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(BY_HASH).bind(hash.as_bytes().as_slice()).fetch_optional(pool).await?
        });
        Ok(row.map(Row::into_token).transpose()?.map(|(token, _)| token))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        now: u64,
        grace_ms: u64,
        successor: &Successor,
    ) -> Result<RotateOutcome> {
        retrying(|| self.rotate_once(presented, now, grace_ms, successor)).await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_refresh_family(&self, family_id: &str, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        if !storable(family_id, MAX_ID_BYTES) {
            return Ok(0);
        }
        retrying(|| self.revoke_family_once(family_id, at)).await
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_user_refresh_tokens(&self, user_id: &str, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(0);
        }
        retrying(|| self.revoke_user_once(user_id, at)).await
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired_refresh_tokens(&self, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        Ok(with_pool!(self, |pool| { sqlx::query(PURGE).bind(at).execute(pool).await?.rows_affected() }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn token(used_at: Option<u64>, revoked_at: Option<u64>, expires_at: u64) -> RefreshToken {
        RefreshToken {
            id: "t".into(),
            family_id: "f".into(),
            user_id: "u".into(),
            client_id: None,
            created_at: 0,
            expires_at,
            used_at,
            replaced_by: used_at.map(|_| "s".into()),
            revoked_at,
        }
    }

    #[track_caller]
    fn check(t: RefreshToken, now: u64, grace: u64, expected: Step) {
        assert_eq!(first_step(&t, now, grace), expected);
    }

    #[test]
    fn the_presented_token_decides_the_first_step() {
        check(token(None, None, 100), 50, 10, Step::Rotate);
        check(token(None, None, 100), 100, 10, Step::Refuse);
        check(token(None, Some(1), 100), 50, 10, Step::Refuse);
        check(token(Some(40), Some(45), 100), 50, 10, Step::Refuse);
        check(token(Some(40), None, 100), 50, 10, Step::CheckSuccessor);
        check(token(Some(40), None, 100), 51, 10, Step::RevokeFamily);
        check(token(Some(60), None, 100), 50, 0, Step::CheckSuccessor);
    }

    #[test]
    fn the_successor_decides_between_grace_and_reuse() {
        let h = TokenHash::of("next");
        let live = (token(None, None, 100), h);
        assert_eq!(successor_step(Some(live.clone()), &h, 50), Step::Grace(live.0.clone()));
        assert_eq!(successor_step(Some(live.clone()), &TokenHash::of("other"), 50), Step::Refuse);
        assert_eq!(successor_step(Some(live), &h, 100), Step::RevokeFamily);
        let spent = (token(Some(45), None, 100), h);
        assert_eq!(successor_step(Some(spent), &h, 50), Step::RevokeFamily);
        assert_eq!(successor_step(None, &h, 50), Step::RevokeFamily);
    }
}
