//! The `signing_keys` table: the keys that sign access tokens, and the older
//! ones still published for verification.
//!
//! A key's life: inserted (published in the JWKS, so that upstreams learn it
//! before it signs anything), activated (the one signing key; activating
//! another ends it, recording `not_after_sign`), retired (`retire_at`: from
//! then on neither published nor trusted, which the caller sets past the
//! expiry of the last token it signed), deleted. Private keys arrive sealed:
//! the caller encrypts them and hands over ciphertext and nonce, which are
//! stored as opaque bytes.
//!
//! **Invariant:** at most one key is active. A partial unique index enforces
//! it in the database; activation runs under a lock (SQLite's write lock, a
//! PostgreSQL advisory lock) so that two concurrent activations queue instead
//! of one of them failing on the index.

use std::fmt;
use std::future::Future;

use rampart_core::token::{Alg, MAX_KID_BYTES};

use super::{
    check_required, check_text, from_db, from_db_opt, lock_key, storable, to_db, with_pool, Result, StoreError,
};
use crate::store::Database;

/// Longest public key (PEM or JWK text); a 4096-bit RSA key's PEM is ~800 bytes.
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;
/// Longest sealed private key.
pub const MAX_SEALED_KEY_BYTES: usize = 16 * 1024;
/// Longest nonce of a sealed private key.
pub const MAX_NONCE_BYTES: usize = 64;

/// The advisory-lock space of key activation (PostgreSQL).
const ACTIVATION_LOCK: &str = "rampart.signing_keys";

/// A private key as the caller encrypted it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedKey({} bytes)", self.ciphertext.len())
    }
}

/// A key to store.
#[derive(Clone, Debug)]
pub struct NewSigningKey {
    pub kid: String,
    pub alg: Alg,
    /// PEM or JWK text; empty only for HS256, whose key is all secret.
    pub public_key: String,
    /// `None` for a key kept only to verify.
    pub private_key: Option<SealedKey>,
    pub created_at: u64,
}

/// A stored key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: Alg,
    pub public_key: String,
    pub private_key: Option<SealedKey>,
    /// Whether this is the key that signs new tokens.
    pub active: bool,
    pub created_at: u64,
    /// When it stopped being the active key.
    pub not_after_sign: Option<u64>,
    /// From when it is no longer published or trusted.
    pub retire_at: Option<u64>,
}

impl SigningKeyRecord {
    /// Whether tokens signed with it are still accepted at `at`.
    pub fn verifies_at(&self, at: u64) -> bool {
        self.retire_at.is_none_or(|r| at < r)
    }
}

/// Storage for signing keys.
pub trait SigningKeyStore: Send + Sync {
    /// Stores an inactive key. A taken `kid` is [`StoreError::Conflict`].
    fn insert_signing_key(&self, new: &NewSigningKey) -> impl Future<Output = Result<SigningKeyRecord>> + Send;

    /// Every key, oldest first.
    fn signing_keys(&self) -> impl Future<Output = Result<Vec<SigningKeyRecord>>> + Send;

    /// The keys not retired at `at` (what the JWKS publishes), oldest first.
    fn verification_keys(&self, at: u64) -> impl Future<Output = Result<Vec<SigningKeyRecord>>> + Send;

    /// The key that signs, if one is active.
    fn active_signing_key(&self) -> impl Future<Output = Result<Option<SigningKeyRecord>>> + Send;

    /// Makes `kid` the one active key; the key active before (if another) gets
    /// `not_after_sign = now`. A key retired at `now` cannot be activated; a
    /// retirement still to come is cancelled.
    fn activate_signing_key(&self, kid: &str, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Sets when `kid` is retired. The active key cannot be retired.
    fn retire_signing_key(&self, kid: &str, retire_at: u64) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the keys retired at `now`; returns how many.
    fn delete_retired_signing_keys(&self, now: u64) -> impl Future<Output = Result<u64>> + Send;
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT kid, alg, public_key, private_key, private_key_nonce, active, created_at, not_after_sign, \
             retire_at FROM signing_keys ",
            $rest
        )
    };
}

const INSERT: &str = "INSERT INTO signing_keys (kid, alg, public_key, private_key, private_key_nonce, active, \
                      created_at) VALUES ($1, $2, $3, $4, $5, FALSE, $6)";
const ALL: &str = select_keys!("ORDER BY created_at, kid");
const VERIFYING: &str = select_keys!("WHERE retire_at IS NULL OR retire_at > $1 ORDER BY created_at, kid");
const ACTIVE: &str = select_keys!("WHERE active");
const STATE: &str = "SELECT active, retire_at FROM signing_keys WHERE kid = $1";
const DEACTIVATE_OTHERS: &str =
    "UPDATE signing_keys SET active = FALSE, not_after_sign = $2 WHERE active AND kid <> $1";
// A retirement scheduled before the key was (re)activated no longer applies.
const ACTIVATE: &str = "UPDATE signing_keys SET active = TRUE, not_after_sign = NULL, retire_at = NULL WHERE kid = $1";
const RETIRE: &str = "UPDATE signing_keys SET retire_at = $2 WHERE kid = $1 AND NOT active";
const DELETE_RETIRED: &str = "DELETE FROM signing_keys WHERE retire_at <= $1 AND NOT active";

row! {
    struct Row {
        kid: String,
        alg: String,
        public_key: String,
        private_key: Option<Vec<u8>>,
        private_key_nonce: Option<Vec<u8>>,
        active: bool,
        created_at: i64,
        not_after_sign: Option<i64>,
        retire_at: Option<i64>,
    }
}

impl Row {
    fn into_record(self) -> Result<SigningKeyRecord> {
        let alg = Alg::from_name(&self.alg).ok_or_else(|| StoreError::Corrupt {
            what: "signing key",
            reason: format!("unknown alg `{}`", self.alg),
        })?;
        let private_key = match (self.private_key, self.private_key_nonce) {
            (Some(ciphertext), Some(nonce)) => Some(SealedKey { ciphertext, nonce }),
            (None, None) => None,
            _ => {
                return Err(StoreError::Corrupt {
                    what: "signing key",
                    reason: format!("`{}` has a private key without its nonce, or the reverse", self.kid),
                })
            }
        };
        Ok(SigningKeyRecord {
            kid: self.kid,
            alg,
            public_key: self.public_key,
            private_key,
            active: self.active,
            created_at: from_db("created_at", self.created_at)?,
            not_after_sign: from_db_opt("not_after_sign", self.not_after_sign)?,
            retire_at: from_db_opt("retire_at", self.retire_at)?,
        })
    }
}

fn check_new(new: &NewSigningKey) -> Result<()> {
    check_required("kid", &new.kid, MAX_KID_BYTES)?;
    if new.alg == Alg::HS256 {
        check_text("public_key", &new.public_key, MAX_PUBLIC_KEY_BYTES)?;
    } else {
        check_required("public_key", &new.public_key, MAX_PUBLIC_KEY_BYTES)?;
    }
    if let Some(sealed) = &new.private_key {
        if sealed.ciphertext.is_empty() {
            return Err(StoreError::Invalid { field: "private_key", reason: "must not be empty" });
        }
        if sealed.ciphertext.len() > MAX_SEALED_KEY_BYTES {
            return Err(StoreError::TooLong { field: "private_key", max: MAX_SEALED_KEY_BYTES });
        }
        if sealed.nonce.len() > MAX_NONCE_BYTES {
            return Err(StoreError::TooLong { field: "nonce", max: MAX_NONCE_BYTES });
        }
    }
    Ok(())
}

fn records(rows: Vec<Row>) -> Result<Vec<SigningKeyRecord>> {
    rows.into_iter().map(Row::into_record).collect()
}

impl SigningKeyStore for Database {
    #[tracing::instrument(skip_all)]
    async fn insert_signing_key(&self, new: &NewSigningKey) -> Result<SigningKeyRecord> {
        check_new(new)?;
        let created = to_db("created_at", new.created_at)?;
        let sealed = new.private_key.as_ref();
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&new.kid)
                .bind(new.alg.as_str())
                .bind(&new.public_key)
                .bind(sealed.map(|s| s.ciphertext.as_slice()))
                .bind(sealed.map(|s| s.nonce.as_slice()))
                .bind(created)
                .execute(pool)
                .await?;
        });
        Ok(SigningKeyRecord {
            kid: new.kid.clone(),
            alg: new.alg,
            public_key: new.public_key.clone(),
            private_key: new.private_key.clone(),
            active: false,
            created_at: new.created_at,
            not_after_sign: None,
            retire_at: None,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        let rows: Vec<Row> = with_pool!(self, |pool| { sqlx::query_as(ALL).fetch_all(pool).await? });
        records(rows)
    }

    #[tracing::instrument(skip_all)]
    async fn verification_keys(&self, at: u64) -> Result<Vec<SigningKeyRecord>> {
        let at = to_db("at", at)?;
        let rows: Vec<Row> = with_pool!(self, |pool| { sqlx::query_as(VERIFYING).bind(at).fetch_all(pool).await? });
        records(rows)
    }

    #[tracing::instrument(skip_all)]
    async fn active_signing_key(&self) -> Result<Option<SigningKeyRecord>> {
        let row: Option<Row> = with_pool!(self, |pool| { sqlx::query_as(ACTIVE).fetch_optional(pool).await? });
        row.map(Row::into_record).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn activate_signing_key(&self, kid: &str, now: u64) -> Result<()> {
        let at = to_db("now", now)?;
        if !storable(kid, MAX_KID_BYTES) {
            return Err(StoreError::NotFound { what: "signing key" });
        }
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                sqlx::query(lock).bind(lock_key(ACTIVATION_LOCK, "")).execute(&mut *tx).await?;
            }
            let state: Option<(bool, Option<i64>)> = sqlx::query_as(STATE).bind(kid).fetch_optional(&mut *tx).await?;
            match state {
                None => return Err(StoreError::NotFound { what: "signing key" }),
                Some((_, Some(retire_at))) if retire_at <= at => {
                    return Err(StoreError::Invalid { field: "kid", reason: "the key is retired" })
                }
                Some((true, _)) => {}
                Some((false, _)) => {
                    // Deactivate first: the unique index allows one active row
                    // at any moment, not only at commit.
                    sqlx::query(DEACTIVATE_OTHERS).bind(kid).bind(at).execute(&mut *tx).await?;
                    sqlx::query(ACTIVATE).bind(kid).execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn retire_signing_key(&self, kid: &str, retire_at: u64) -> Result<()> {
        let at = to_db("retire_at", retire_at)?;
        if !storable(kid, MAX_KID_BYTES) {
            return Err(StoreError::NotFound { what: "signing key" });
        }
        with_pool!(self, |pool| {
            if sqlx::query(RETIRE).bind(kid).bind(at).execute(pool).await?.rows_affected() > 0 {
                return Ok(());
            }
            let state: Option<(bool, Option<i64>)> = sqlx::query_as(STATE).bind(kid).fetch_optional(pool).await?;
            match state {
                None => Err(StoreError::NotFound { what: "signing key" }),
                Some(_) => {
                    Err(StoreError::Invalid { field: "kid", reason: "the active signing key cannot be retired" })
                }
            }
        })
    }

    #[tracing::instrument(skip_all)]
    async fn delete_retired_signing_keys(&self, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        Ok(with_pool!(self, |pool| { sqlx::query(DELETE_RETIRED).bind(at).execute(pool).await?.rows_affected() }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn key(alg: Alg, public_key: &str, sealed: Option<(usize, usize)>) -> NewSigningKey {
        NewSigningKey {
            kid: "k".into(),
            alg,
            public_key: public_key.into(),
            private_key: sealed.map(|(c, n)| SealedKey { ciphertext: vec![1; c], nonce: vec![2; n] }),
            created_at: 0,
        }
    }

    #[test]
    fn new_keys_are_checked() {
        assert!(check_new(&key(Alg::EdDSA, "pem", Some((32, 12)))).is_ok());
        assert!(check_new(&key(Alg::HS256, "", Some((32, 12)))).is_ok());
        assert!(matches!(check_new(&key(Alg::EdDSA, "", None)), Err(StoreError::Invalid { field: "public_key", .. })));
        assert!(matches!(
            check_new(&key(Alg::EdDSA, "pem", Some((MAX_SEALED_KEY_BYTES + 1, 12)))),
            Err(StoreError::TooLong { field: "private_key", .. })
        ));
        assert!(matches!(
            check_new(&key(Alg::EdDSA, "pem", Some((32, 65)))),
            Err(StoreError::TooLong { field: "nonce", .. })
        ));
        assert!(matches!(check_new(&key(Alg::EdDSA, "pem", Some((0, 12)))), Err(StoreError::Invalid { .. })));
    }

    #[test]
    fn sealed_keys_do_not_print_their_bytes() {
        let sealed = SealedKey { ciphertext: vec![0xab; 3], nonce: vec![0xcd; 2] };
        assert_eq!(format!("{sealed:?}"), "SealedKey(3 bytes)");
    }
}
