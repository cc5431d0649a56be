//! The `request_signing_keys` table (migration `0009_request_signing.sql`):
//! HMAC-SHA256 keys with which service clients sign requests (see
//! [`crate::identity::signatures`]).
//!
//! Unlike API keys and client secrets, these secrets cannot be stored as
//! hashes: the gateway recomputes each MAC, so it needs the secret itself.
//! It is stored sealed ([`SealedKey`], sealed by the caller under a key
//! derived from `[identity] secret_key`), so a copy of the table alone gives
//! no usable key. A key goes with its client (`ON DELETE CASCADE`).
//!
//! Keys are never deleted one by one: revocation sets `revoked_at`.
//! [`RequestKeyStore::request_keys_in_use`] is what every gateway instance
//! reads, whole, every few seconds; it leaves out keys revoked or expired
//! long ago, so the read stays proportional to the keys in use.

use std::future::Future;

use super::keys::SealedKey;
use super::{check_required, from_db, from_db_opt, storable, to_db, with_pool, Result, StoreError, MAX_ID_BYTES};
use crate::store::Database;

/// A key to store. The caller made the id and sealed the secret.
#[derive(Clone, Debug)]
pub struct NewRequestKey {
    pub key_id: String,
    pub client_id: String,
    pub secret: SealedKey,
    pub expires_at: Option<u64>,
}

/// A stored key, as lists show it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKeyRecord {
    pub key_id: String,
    pub client_id: String,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
    pub updated_at: u64,
}

/// A key as authentication needs it: the sealed secret and its client's
/// scopes, roles and state.
#[derive(Clone, Debug)]
pub struct KeyInUse {
    pub record: RequestKeyRecord,
    pub secret: SealedKey,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub client_disabled: bool,
}

/// Storage for request-signing keys.
pub trait RequestKeyStore: Send + Sync {
    /// Stores a key; an unknown client is [`StoreError::NotFound`] (`client`),
    /// a taken id [`StoreError::Conflict`].
    fn create_request_key(
        &self,
        new: &NewRequestKey,
        now: u64,
    ) -> impl Future<Output = Result<RequestKeyRecord>> + Send;

    fn request_key(&self, key_id: &str) -> impl Future<Output = Result<Option<RequestKeyRecord>>> + Send;

    /// The keys of a client, oldest first, revoked ones included.
    fn list_request_keys(&self, client_id: &str) -> impl Future<Output = Result<Vec<RequestKeyRecord>>> + Send;

    /// Revokes the key; false when there is no such key not yet revoked.
    fn revoke_request_key(&self, key_id: &str, now: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Every key neither revoked nor expired before `since` (ms), with its
    /// client: what a gateway verifies against.
    fn request_keys_in_use(&self, since: u64) -> impl Future<Output = Result<Vec<KeyInUse>>> + Send;
}

const COLUMNS: &str = "k.key_id, k.client_id, k.created_at, k.expires_at, k.revoked_at, k.updated_at";
const INSERT: &str = "INSERT INTO request_signing_keys \
                      (key_id, client_id, secret, secret_nonce, created_at, expires_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $5)";
const REVOKE: &str = "UPDATE request_signing_keys SET revoked_at = $2, updated_at = $2 \
                      WHERE key_id = $1 AND revoked_at IS NULL";

row! {
    struct Row {
        key_id: String,
        client_id: String,
        created_at: i64,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
        updated_at: i64,
    }
}

impl Row {
    fn into_record(self) -> Result<RequestKeyRecord> {
        Ok(RequestKeyRecord {
            key_id: self.key_id,
            client_id: self.client_id,
            created_at: from_db("created_at", self.created_at)?,
            expires_at: from_db_opt("expires_at", self.expires_at)?,
            revoked_at: from_db_opt("revoked_at", self.revoked_at)?,
            updated_at: from_db("updated_at", self.updated_at)?,
        })
    }
}

row! {
    struct InUseRow {
        #[flatten]
        key: Row,
        secret: Vec<u8>,
        secret_nonce: Vec<u8>,
        scopes: String,
        roles: String,
        disabled: bool,
    }
}

fn names(what: &'static str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

impl RequestKeyStore for Database {
    #[tracing::instrument(skip_all)]
    async fn create_request_key(&self, new: &NewRequestKey, now: u64) -> Result<RequestKeyRecord> {
        check_required("key_id", &new.key_id, MAX_ID_BYTES)?;
        check_required("client_id", &new.client_id, MAX_ID_BYTES)?;
        if new.secret.ciphertext.is_empty() || new.secret.nonce.is_empty() {
            return Err(StoreError::Invalid { field: "secret", reason: "must be sealed" });
        }
        let at = to_db("now", now)?;
        let expires = new.expires_at.map(|e| to_db("expires_at", e)).transpose()?;
        let inserted = with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&new.key_id)
                .bind(&new.client_id)
                .bind(&new.secret.ciphertext)
                .bind(&new.secret.nonce)
                .bind(at)
                .bind(expires)
                .execute(pool)
                .await
                .map(|_| ())
        });
        match inserted.map_err(StoreError::from) {
            Ok(_) => {}
            // The only foreign key here points at the client.
            Err(StoreError::NotFound { .. }) => return Err(StoreError::NotFound { what: "client" }),
            Err(e) => return Err(e),
        }
        Ok(RequestKeyRecord {
            key_id: new.key_id.clone(),
            client_id: new.client_id.clone(),
            created_at: now,
            expires_at: new.expires_at,
            revoked_at: None,
            updated_at: now,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn request_key(&self, key_id: &str) -> Result<Option<RequestKeyRecord>> {
        if !storable(key_id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let sql = format!("SELECT {COLUMNS} FROM request_signing_keys k WHERE k.key_id = $1");
        let row: Option<Row> =
            with_pool!(self, |pool| { sqlx::query_as(&sql).bind(key_id).fetch_optional(pool).await? });
        row.map(Row::into_record).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_request_keys(&self, client_id: &str) -> Result<Vec<RequestKeyRecord>> {
        if !storable(client_id, MAX_ID_BYTES) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM request_signing_keys k WHERE k.client_id = $1 ORDER BY k.created_at, k.key_id"
        );
        let rows: Vec<Row> = with_pool!(self, |pool| { sqlx::query_as(&sql).bind(client_id).fetch_all(pool).await? });
        rows.into_iter().map(Row::into_record).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_request_key(&self, key_id: &str, now: u64) -> Result<bool> {
        if !storable(key_id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let at = to_db("now", now)?;
        let rows =
            with_pool!(self, |pool| { sqlx::query(REVOKE).bind(key_id).bind(at).execute(pool).await?.rows_affected() });
        Ok(rows > 0)
    }

    #[tracing::instrument(skip_all)]
    async fn request_keys_in_use(&self, since: u64) -> Result<Vec<KeyInUse>> {
        let since = to_db("since", since)?;
        let sql = format!(
            "SELECT {COLUMNS}, k.secret, k.secret_nonce, c.scopes, c.roles, c.disabled \
             FROM request_signing_keys k JOIN service_clients c ON c.client_id = k.client_id \
             WHERE (k.revoked_at IS NULL OR k.revoked_at >= $1) AND (k.expires_at IS NULL OR k.expires_at >= $1)"
        );
        let rows: Vec<InUseRow> = with_pool!(self, |pool| { sqlx::query_as(&sql).bind(since).fetch_all(pool).await? });
        rows.into_iter()
            .map(|r| {
                Ok(KeyInUse {
                    scopes: names("client scopes", &r.scopes)?,
                    roles: names("client roles", &r.roles)?,
                    client_disabled: r.disabled,
                    secret: SealedKey { ciphertext: r.secret, nonce: r.secret_nonce },
                    record: r.key.into_record()?,
                })
            })
            .collect()
    }
}
