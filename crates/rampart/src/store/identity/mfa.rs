//! The `user_totp` and `mfa_backup_codes` tables: second factors.
//!
//! - A TOTP secret is stored sealed (the caller seals it) and counts only once
//!   `confirmed_at` is set. A new enrolment replaces an unconfirmed one but
//!   never a confirmed one (that takes a disable first).
//! - `last_used_step` makes codes single use: accepting a code for a step is
//!   one conditional `UPDATE … WHERE last_used_step < step`, so of two
//!   concurrent uses of one code exactly one changes the row, on either
//!   backend (SQLite runs one writer at a time; PostgreSQL re-checks the
//!   condition on the row the winner has just changed).
//! - Backup codes are stored as SHA-256 ([`TokenHash`]) and spent by the same
//!   kind of conditional `UPDATE … WHERE used_at IS NULL`.

use std::future::Future;

use super::keys::SealedKey;
use super::{check_required, from_db_opt, storable, to_db, with_pool, Result, StoreError, TokenHash, MAX_ID_BYTES};
use crate::store::Database;

/// A user's TOTP enrolment.
#[derive(Clone, Debug)]
pub struct TotpRecord {
    pub secret: SealedKey,
    /// `None` until a code has confirmed it.
    pub confirmed_at: Option<u64>,
    pub last_used_step: Option<u64>,
}

/// Storage for second factors.
pub trait MfaStore: Send + Sync {
    /// Stores a new, unconfirmed TOTP secret, replacing an unconfirmed one.
    /// [`StoreError::Conflict`] (`totp`) when a confirmed one is in place.
    fn begin_totp(&self, user_id: &str, secret: &SealedKey, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// The user's TOTP enrolment, confirmed or not.
    fn totp(&self, user_id: &str) -> impl Future<Output = Result<Option<TotpRecord>>> + Send;

    /// Confirms an unconfirmed enrolment with a code of `step`. False when
    /// there is none (or it was confirmed meanwhile).
    fn confirm_totp(&self, user_id: &str, step: u64, now: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Records a code of `step` as used, if the enrolment is confirmed and no
    /// code of this or a later step was used before. False otherwise (a replay).
    fn use_totp_step(&self, user_id: &str, step: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Removes the TOTP enrolment and every backup code. True when there was one.
    fn delete_mfa(&self, user_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces every backup code of the user with `codes`.
    fn replace_backup_codes(
        &self,
        user_id: &str,
        codes: &[TokenHash],
        now: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Spends a backup code; false when it is unknown or used.
    fn use_backup_code(&self, user_id: &str, code: &TokenHash, now: u64) -> impl Future<Output = Result<bool>> + Send;

    /// How many unused backup codes the user has.
    fn backup_codes_left(&self, user_id: &str) -> impl Future<Output = Result<u64>> + Send;
}

const BEGIN: &str = "INSERT INTO user_totp (user_id, secret, secret_nonce, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
                     secret_nonce = excluded.secret_nonce, created_at = excluded.created_at, \
                     last_used_step = NULL WHERE user_totp.confirmed_at IS NULL";
const GET: &str = "SELECT secret, secret_nonce, confirmed_at, last_used_step FROM user_totp WHERE user_id = $1";
const CONFIRM: &str = "UPDATE user_totp SET confirmed_at = $3, last_used_step = $2 \
                       WHERE user_id = $1 AND confirmed_at IS NULL";
const USE_STEP: &str = "UPDATE user_totp SET last_used_step = $2 WHERE user_id = $1 \
                        AND confirmed_at IS NOT NULL AND (last_used_step IS NULL OR last_used_step < $2)";
const DELETE_TOTP: &str = "DELETE FROM user_totp WHERE user_id = $1";
const DELETE_CODES: &str = "DELETE FROM mfa_backup_codes WHERE user_id = $1";
const INSERT_CODE: &str = "INSERT INTO mfa_backup_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)";
const USE_CODE: &str =
    "UPDATE mfa_backup_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL";
const CODES_LEFT: &str = "SELECT COUNT(*) FROM mfa_backup_codes WHERE user_id = $1 AND used_at IS NULL";

/// `secret`, `secret_nonce`, `confirmed_at`, `last_used_step`.
type TotpRow = (Vec<u8>, Vec<u8>, Option<i64>, Option<i64>);

fn step_to_db(step: u64) -> Result<i64> {
    to_db("step", step)
}

impl MfaStore for Database {
    #[tracing::instrument(skip_all)]
    async fn begin_totp(&self, user_id: &str, secret: &SealedKey, now: u64) -> Result<()> {
        check_required("user_id", user_id, MAX_ID_BYTES)?;
        let at = to_db("now", now)?;
        let changed = with_pool!(self, |pool| {
            sqlx::query(BEGIN)
                .bind(user_id)
                .bind(&secret.ciphertext)
                .bind(&secret.nonce)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::Conflict { field: "totp" });
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn totp(&self, user_id: &str) -> Result<Option<TotpRecord>> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let row: Option<TotpRow> =
            with_pool!(self, |pool| { sqlx::query_as(GET).bind(user_id).fetch_optional(pool).await? });
        let Some((ciphertext, nonce, confirmed, last)) = row else { return Ok(None) };
        Ok(Some(TotpRecord {
            secret: SealedKey { ciphertext, nonce },
            confirmed_at: from_db_opt("confirmed_at", confirmed)?,
            last_used_step: from_db_opt("last_used_step", last)?,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn confirm_totp(&self, user_id: &str, step: u64, now: u64) -> Result<bool> {
        check_required("user_id", user_id, MAX_ID_BYTES)?;
        let (step, at) = (step_to_db(step)?, to_db("now", now)?);
        let changed = with_pool!(self, |pool| {
            sqlx::query(CONFIRM).bind(user_id).bind(step).bind(at).execute(pool).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn use_totp_step(&self, user_id: &str, step: u64) -> Result<bool> {
        check_required("user_id", user_id, MAX_ID_BYTES)?;
        let step = step_to_db(step)?;
        let changed = with_pool!(self, |pool| {
            sqlx::query(USE_STEP).bind(user_id).bind(step).execute(pool).await?.rows_affected()
        });
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_mfa(&self, user_id: &str) -> Result<bool> {
        check_required("user_id", user_id, MAX_ID_BYTES)?;
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let removed = sqlx::query(DELETE_TOTP).bind(user_id).execute(&mut *tx).await?.rows_affected();
            sqlx::query(DELETE_CODES).bind(user_id).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(removed > 0)
        })
    }

    #[tracing::instrument(skip_all)]
    async fn replace_backup_codes(&self, user_id: &str, codes: &[TokenHash], now: u64) -> Result<()> {
        check_required("user_id", user_id, MAX_ID_BYTES)?;
        let at = to_db("now", now)?;
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            sqlx::query(DELETE_CODES).bind(user_id).execute(&mut *tx).await?;
            for code in codes {
                sqlx::query(INSERT_CODE)
                    .bind(user_id)
                    .bind(code.as_bytes().as_slice())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    #[tracing::instrument(skip_all)]
    async fn use_backup_code(&self, user_id: &str, code: &TokenHash, now: u64) -> Result<bool> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let at = to_db("now", now)?;
        let changed = with_pool!(self, |pool| {
            sqlx::query(USE_CODE)
                .bind(user_id)
                .bind(code.as_bytes().as_slice())
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn backup_codes_left(&self, user_id: &str) -> Result<u64> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(0);
        }
        let n: i64 = with_pool!(self, |pool| { sqlx::query_scalar(CODES_LEFT).bind(user_id).fetch_one(pool).await? });
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
