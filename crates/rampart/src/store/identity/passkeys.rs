//! The `passkeys` and `webauthn_challenges` tables (migration
//! `0006_passkeys.sql`): a user's registered passkeys, and the server-side
//! state of WebAuthn ceremonies in progress.
//!
//! A passkey's `credential` is opaque JSON to this module (the serialized
//! webauthn-rs `Passkey`: public key, signature counter, flags). It holds no
//! secret, but it is never listed: [`PasskeyInfo`] is what a listing shows.
//!
//! **Challenges are single use.** [`PasskeyStore::take_challenge`] is one
//! `DELETE … RETURNING`, so of two concurrent finishes with one challenge
//! exactly one gets its state. Expired challenges are purged whenever a new
//! one is stored, and the number pending is bounded per client (logins), per
//! user and purpose (the others) and in total (see
//! [`PasskeyStore::insert_challenge`]).

use std::future::Future;

use super::MAX_ID_BYTES;
use super::{check_required, from_db, from_db_opt, storable, to_db, with_pool, Result, StoreError};
use crate::store::Database;

/// Longest passkey name, in bytes.
pub const MAX_PASSKEY_NAME_BYTES: usize = 64;
/// Longest serialized credential or ceremony state. webauthn-rs writes a few
/// hundred bytes to a few KiB (with attestation certificates).
pub const MAX_WEBAUTHN_JSON_BYTES: usize = 64 * 1024;
/// Longest credential id as stored (base64url of at most 1023 bytes).
pub const MAX_CRED_ID_BYTES: usize = 1400;
/// Pending registrations or second-factor checks of one user; more are
/// refused until one is finished or expires.
pub const MAX_PENDING_PER_USER: i64 = 8;
/// Pending passwordless logins one client (see [`NewChallenge::client`])
/// started; its newest pushes out its oldest. Logins are counted per client,
/// not per user: anyone may start a login for any name, and counted per user,
/// a stranger's starts would push out the user's own pending login.
pub const MAX_PENDING_PER_CLIENT: i64 = 16;
/// Pending challenges in all; more are refused until some expire.
pub const MAX_PENDING_TOTAL: i64 = 100_000;

/// Why a ceremony was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengePurpose {
    Register,
    Login,
    Mfa,
}

impl ChallengePurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Login => "login",
            Self::Mfa => "mfa",
        }
    }
}

/// A stored passkey.
#[derive(Clone, Debug)]
pub struct PasskeyRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    /// The serialized webauthn-rs `Passkey`.
    pub credential: String,
    /// The credential id, base64url.
    pub cred_id: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

/// What a listing shows of a passkey: no key material.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PasskeyInfo {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    pub last_used_at: Option<u64>,
}

impl From<&PasskeyRecord> for PasskeyInfo {
    fn from(r: &PasskeyRecord) -> Self {
        Self { id: r.id.clone(), name: r.name.clone(), created_at: r.created_at, last_used_at: r.last_used_at }
    }
}

/// A challenge to store.
#[derive(Clone, Debug)]
pub struct NewChallenge {
    /// Random and unguessable: it is what the client sends back.
    pub id: String,
    /// `None` for a decoy (a login started for an unknown username).
    pub user_id: Option<String>,
    /// For a login, the client that started it: its address, or its IPv6
    /// network of `[server] ipv6_prefix` bits. `None` for the other purposes
    /// (and for logins started where no client is known), which are not
    /// counted per client.
    pub client: Option<String>,
    pub purpose: ChallengePurpose,
    pub state: String,
    pub created_at: u64,
    pub expires_at: u64,
}

/// A challenge taken back.
#[derive(Clone, Debug)]
pub struct TakenChallenge {
    pub user_id: Option<String>,
    pub state: String,
}

/// Why a challenge was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeRefused {
    /// The user has [`MAX_PENDING_PER_USER`] pending for this purpose.
    TooManyForUser,
    /// [`MAX_PENDING_TOTAL`] are pending.
    TooMany,
}

/// Storage for passkeys and WebAuthn challenges.
pub trait PasskeyStore: Send + Sync {
    /// Stores a passkey unless the user already has `max` of them (then
    /// `Ok(false)`). A credential id registered before is
    /// [`StoreError::Conflict`] `credential`; an unknown user is `NotFound`.
    fn insert_passkey(&self, new: &PasskeyRecord, max: u32) -> impl Future<Output = Result<bool>> + Send;

    /// The user's passkeys, oldest first.
    fn passkeys_of(&self, user_id: &str) -> impl Future<Output = Result<Vec<PasskeyRecord>>> + Send;

    /// Stores the credential as updated by a use, its signature counter
    /// `sign_count`, and the time of use, unless the stored counter is
    /// already higher (then `Ok(false)`): of two logins at once, the one that
    /// writes last must not write the counter backwards.
    fn record_passkey_use(
        &self,
        id: &str,
        credential: &str,
        sign_count: u32,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes the user's passkey `id`; false when the user has no such passkey.
    fn delete_passkey(&self, user_id: &str, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Stores a challenge after purging the expired ones. A
    /// [`ChallengePurpose::Login`] is counted against the client that started
    /// it ([`MAX_PENDING_PER_CLIENT`], its own oldest giving way), never
    /// against the user: whoever starts logins for a username must not be
    /// able to push out its owner's. The other purposes, which the user
    /// starts while signed in or halfway through a login, are counted per
    /// user ([`MAX_PENDING_PER_USER`]) and the new one is refused.
    fn insert_challenge(
        &self,
        new: &NewChallenge,
    ) -> impl Future<Output = Result<std::result::Result<(), ChallengeRefused>>> + Send;

    /// Takes (deletes and returns) the challenge `id` of `purpose` if it has
    /// not expired at `now`. Unknown, spent, expired and other-purpose
    /// challenges are all `None`.
    fn take_challenge(
        &self,
        id: &str,
        purpose: ChallengePurpose,
        now: u64,
    ) -> impl Future<Output = Result<Option<TakenChallenge>>> + Send;
}

const INSERT_PASSKEY: &str = "INSERT INTO passkeys (id, user_id, name, credential, cred_id, created_at) \
                              VALUES ($1, $2, $3, $4, $5, $6)";
const COUNT_PASSKEYS: &str = "SELECT COUNT(*) FROM passkeys WHERE user_id = $1";
const PASSKEYS_OF: &str = "SELECT id, user_id, name, credential, cred_id, created_at, last_used_at \
                           FROM passkeys WHERE user_id = $1 ORDER BY created_at, id";
// `<=`: authenticators that keep no counter always send 0.
const RECORD_USE: &str = "UPDATE passkeys SET credential = $2, last_used_at = $3, sign_count = $4 \
                          WHERE id = $1 AND sign_count <= $4";
const DELETE_PASSKEY: &str = "DELETE FROM passkeys WHERE user_id = $1 AND id = $2";
const PURGE: &str = "DELETE FROM webauthn_challenges WHERE expires_at <= $1";
const COUNT_ALL: &str = "SELECT COUNT(*) FROM webauthn_challenges";
const COUNT_USER: &str = "SELECT COUNT(*) FROM webauthn_challenges WHERE user_id = $1 AND purpose = $2";
const COUNT_CLIENT: &str = "SELECT COUNT(*) FROM webauthn_challenges WHERE client = $1 AND purpose = $2";
const EVICT_CLIENT_OLDEST: &str = "DELETE FROM webauthn_challenges WHERE id IN (SELECT id FROM webauthn_challenges \
                                   WHERE client = $1 AND purpose = $2 ORDER BY created_at, id LIMIT $3)";
const INSERT_CHALLENGE: &str = "INSERT INTO webauthn_challenges \
                                (id, user_id, client, purpose, state, created_at, expires_at) \
                                VALUES ($1, $2, $3, $4, $5, $6, $7)";
const TAKE: &str = "DELETE FROM webauthn_challenges WHERE id = $1 AND purpose = $2 \
                    RETURNING user_id, state, expires_at";

row! {
    struct Row {
        id: String,
        user_id: String,
        name: String,
        credential: String,
        cred_id: String,
        created_at: i64,
        last_used_at: Option<i64>,
    }
}

impl Row {
    fn into_record(self) -> Result<PasskeyRecord> {
        Ok(PasskeyRecord {
            id: self.id,
            user_id: self.user_id,
            name: self.name,
            credential: self.credential,
            cred_id: self.cred_id,
            created_at: from_db("created_at", self.created_at)?,
            last_used_at: from_db_opt("last_used_at", self.last_used_at)?,
        })
    }
}

impl PasskeyStore for Database {
    #[tracing::instrument(skip_all)]
    async fn insert_passkey(&self, new: &PasskeyRecord, max: u32) -> Result<bool> {
        check_required("id", &new.id, MAX_ID_BYTES)?;
        check_required("user_id", &new.user_id, MAX_ID_BYTES)?;
        check_required("name", &new.name, MAX_PASSKEY_NAME_BYTES)?;
        check_required("credential", &new.credential, MAX_WEBAUTHN_JSON_BYTES)?;
        check_required("cred_id", &new.cred_id, MAX_CRED_ID_BYTES)?;
        let created = to_db("created_at", new.created_at)?;
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                // Two registrations of one user at once must not both pass the count.
                sqlx::query(lock).bind(super::lock_key("passkeys", &new.user_id)).execute(&mut *tx).await?;
            }
            let count: i64 = sqlx::query_scalar(COUNT_PASSKEYS).bind(&new.user_id).fetch_one(&mut *tx).await?;
            if count >= i64::from(max) {
                return Ok(false);
            }
            sqlx::query(INSERT_PASSKEY)
                .bind(&new.id)
                .bind(&new.user_id)
                .bind(&new.name)
                .bind(&new.credential)
                .bind(&new.cred_id)
                .bind(created)
                .execute(&mut *tx)
                .await
                .map_err(|e| match StoreError::from(e) {
                    StoreError::Conflict { .. } => StoreError::Conflict { field: "credential" },
                    other => other,
                })?;
            tx.commit().await?;
            Ok(true)
        })
    }

    #[tracing::instrument(skip_all)]
    async fn passkeys_of(&self, user_id: &str) -> Result<Vec<PasskeyRecord>> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> =
            with_pool!(self, |pool| { sqlx::query_as(PASSKEYS_OF).bind(user_id).fetch_all(pool).await? });
        rows.into_iter().map(Row::into_record).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn record_passkey_use(&self, id: &str, credential: &str, sign_count: u32, now: u64) -> Result<bool> {
        check_required("id", id, MAX_ID_BYTES)?;
        check_required("credential", credential, MAX_WEBAUTHN_JSON_BYTES)?;
        let at = to_db("now", now)?;
        let count = i64::from(sign_count);
        let rows = with_pool!(self, |pool| {
            sqlx::query(RECORD_USE).bind(id).bind(credential).bind(at).bind(count).execute(pool).await?.rows_affected()
        });
        Ok(rows == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool> {
        if !storable(user_id, MAX_ID_BYTES) || !storable(id, MAX_ID_BYTES) {
            return Ok(false);
        }
        Ok(with_pool!(self, |pool| {
            sqlx::query(DELETE_PASSKEY).bind(user_id).bind(id).execute(pool).await?.rows_affected() > 0
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn insert_challenge(&self, new: &NewChallenge) -> Result<std::result::Result<(), ChallengeRefused>> {
        check_required("id", &new.id, MAX_ID_BYTES)?;
        if let Some(user) = &new.user_id {
            check_required("user_id", user, MAX_ID_BYTES)?;
        }
        if let Some(client) = &new.client {
            check_required("client", client, MAX_ID_BYTES)?;
        }
        check_required("state", &new.state, MAX_WEBAUTHN_JSON_BYTES)?;
        let created = to_db("created_at", new.created_at)?;
        let expires = to_db("expires_at", new.expires_at)?;
        let purpose = new.purpose.as_str();
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            if let Some(lock) = sql.advisory_lock {
                sqlx::query(lock).bind(super::lock_key("webauthn_challenges", "")).execute(&mut *tx).await?;
            }
            sqlx::query(PURGE).bind(created).execute(&mut *tx).await?;
            if new.purpose == ChallengePurpose::Login {
                // A client's own oldest logins give way first, so a client
                // that floods fills its own share, not the table.
                if let Some(client) = &new.client {
                    let mine: i64 =
                        sqlx::query_scalar(COUNT_CLIENT).bind(client).bind(purpose).fetch_one(&mut *tx).await?;
                    if mine >= MAX_PENDING_PER_CLIENT {
                        let excess = mine - MAX_PENDING_PER_CLIENT + 1;
                        sqlx::query(EVICT_CLIENT_OLDEST)
                            .bind(client)
                            .bind(purpose)
                            .bind(excess)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            } else if let Some(user) = &new.user_id {
                let mine: i64 = sqlx::query_scalar(COUNT_USER).bind(user).bind(purpose).fetch_one(&mut *tx).await?;
                if mine >= MAX_PENDING_PER_USER {
                    return Ok(Err(ChallengeRefused::TooManyForUser));
                }
            }
            let total: i64 = sqlx::query_scalar(COUNT_ALL).fetch_one(&mut *tx).await?;
            if total >= MAX_PENDING_TOTAL {
                return Ok(Err(ChallengeRefused::TooMany));
            }
            sqlx::query(INSERT_CHALLENGE)
                .bind(&new.id)
                .bind(new.user_id.as_deref())
                .bind(new.client.as_deref())
                .bind(purpose)
                .bind(&new.state)
                .bind(created)
                .bind(expires)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(()))
        })
    }

    #[tracing::instrument(skip_all)]
    async fn take_challenge(&self, id: &str, purpose: ChallengePurpose, now: u64) -> Result<Option<TakenChallenge>> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let row: Option<(Option<String>, String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(TAKE).bind(id).bind(purpose.as_str()).fetch_optional(pool).await?
        });
        let Some((user_id, state, expires_at)) = row else { return Ok(None) };
        if from_db("expires_at", expires_at)? <= now {
            return Ok(None);
        }
        Ok(Some(TakenChallenge { user_id, state }))
    }
}
