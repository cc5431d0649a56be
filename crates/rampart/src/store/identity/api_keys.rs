//! The `api_keys` table: keys in the `prefix_random_checksum` format
//! ([`rampart_core::api_key`]), each owned by a user or a service client,
//! stored as the SHA-256 of the key ([`TokenHash`]) with a display prefix
//! for lists, scopes, a CIDR allow-list, an optional expiry, revocation and
//! usage (last use, count).
//!
//! A key goes with its owner (foreign keys `ON DELETE CASCADE` on both owner
//! columns, exactly one of which is set).
//!
//! `updated_at` changes with everything that matters to authentication
//! (creation, rotation, revocation), never with usage: instances poll it
//! ([`ApiKeyStore::api_keys_changed_since`]) to drop what they cached.
//! Usage is written in batches ([`ApiKeyStore::record_api_key_usage`]), never
//! once per request.

use std::future::Future;

use ipnet::IpNet;

use super::clients::scopes_json;
use super::{
    check_required, from_db, from_db_opt, new_id, storable, to_db, with_pool, Result, StoreError, TokenHash,
    MAX_ID_BYTES,
};
use crate::store::Database;

/// Longest key name.
pub const MAX_KEY_NAME_BYTES: usize = 256;
/// Most CIDR blocks on one key.
pub const MAX_CIDRS: usize = 64;
/// Most usage rows written in one batch statement group.
pub const MAX_USAGE_BATCH: usize = 1_000;

/// Who a key belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A user id.
    User(String),
    /// A service client id.
    Client(String),
}

impl Owner {
    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Client(id) => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Client(_) => "client",
        }
    }

    fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::User(id) => (Some(id), None),
            Self::Client(id) => (None, Some(id)),
        }
    }
}

/// A key to store.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub owner: Owner,
    pub name: String,
    pub display_prefix: String,
    pub key_hash: TokenHash,
    pub scopes: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub expires_at: Option<u64>,
}

/// A stored key (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub owner: Owner,
    pub name: String,
    pub display_prefix: String,
    pub key_hash: TokenHash,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    pub cidrs: Vec<IpNet>,
    pub expires_at: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
    pub revoked_at: Option<u64>,
    pub last_used_at: Option<u64>,
    pub use_count: u64,
}

/// A key found by its hash, with what authentication needs of its owner.
#[derive(Clone, Debug)]
pub struct ApiKeyMatch {
    pub key: ApiKeyRecord,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    /// The owning user or client is disabled.
    pub owner_disabled: bool,
}

/// One key's usage since the last batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyUsage {
    pub id: String,
    pub last_used_at: u64,
    pub count: u64,
}

/// Storage for API keys.
pub trait ApiKeyStore: Send + Sync {
    /// Stores a key; an owner that does not exist is [`StoreError::NotFound`].
    fn create_api_key(&self, new: &NewApiKey, now: u64) -> impl Future<Output = Result<ApiKeyRecord>> + Send;

    /// The key with this hash and its owner's roles, tier and state.
    fn api_key_by_hash(&self, hash: &TokenHash) -> impl Future<Output = Result<Option<ApiKeyMatch>>> + Send;

    fn api_key_by_id(&self, id: &str) -> impl Future<Output = Result<Option<ApiKeyRecord>>> + Send;

    /// Keys of `owner` (every key when `None`), oldest first, revoked ones included.
    fn list_api_keys(&self, owner: Option<&Owner>) -> impl Future<Output = Result<Vec<ApiKeyRecord>>> + Send;

    /// Rotation, in one transaction: the key `id` (which must not be revoked)
    /// stops working at `old_expires_at` (or its own earlier expiry), and
    /// `new` is stored. [`StoreError::NotFound`] for an unknown or revoked key.
    fn rotate_api_key(
        &self,
        id: &str,
        new: &NewApiKey,
        old_expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<ApiKeyRecord>> + Send;

    /// Revokes the key; false when there was no such key not yet revoked.
    fn revoke_api_key(&self, id: &str, now: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Hashes of keys changed after the position (`since` ms, `after` hash):
    /// those changed at `since` with a hash above `after` (every one for an
    /// empty `after`), then those changed later; with the change time, in
    /// (time, hash) order, at most `limit`.
    fn api_keys_changed_since(
        &self,
        since: u64,
        after: &[u8],
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(TokenHash, u64)>>> + Send;

    /// Adds a batch of usage (counts added, last use raised), in one transaction.
    fn record_api_key_usage(&self, usage: &[ApiKeyUsage]) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! select_keys {
    ($rest:literal) => {
        concat!(
            "SELECT k.id, k.user_id, k.client_id, k.name, k.display_prefix, k.key_hash, k.scopes, k.cidrs, \
             k.expires_at, k.created_at, k.updated_at, k.revoked_at, k.last_used_at, k.use_count FROM api_keys k ",
            $rest
        )
    };
}

const INSERT: &str = "INSERT INTO api_keys (id, user_id, client_id, name, display_prefix, key_hash, scopes, cidrs, \
                      expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)";
const BY_HASH: &str = "SELECT k.id, k.user_id, k.client_id, k.name, k.display_prefix, k.key_hash, k.scopes, k.cidrs, \
                       k.expires_at, k.created_at, k.updated_at, k.revoked_at, k.last_used_at, k.use_count, \
                       u.roles AS user_roles, u.tier AS user_tier, u.disabled AS user_disabled, \
                       c.roles AS client_roles, c.disabled AS client_disabled \
                       FROM api_keys k LEFT JOIN users u ON u.id = k.user_id \
                       LEFT JOIN service_clients c ON c.client_id = k.client_id WHERE k.key_hash = $1";
const BY_ID: &str = select_keys!("WHERE k.id = $1");
const LIST_ALL: &str = select_keys!("ORDER BY k.created_at, k.id");
const LIST_USER: &str = select_keys!("WHERE k.user_id = $1 ORDER BY k.created_at, k.id");
const LIST_CLIENT: &str = select_keys!("WHERE k.client_id = $1 ORDER BY k.created_at, k.id");
const LIVE_BY_ID: &str = "SELECT expires_at FROM api_keys WHERE id = $1 AND revoked_at IS NULL";
const SET_EXPIRY: &str = "UPDATE api_keys SET expires_at = $2, updated_at = $3 WHERE id = $1";
const REVOKE: &str = "UPDATE api_keys SET revoked_at = $2, updated_at = $2 WHERE id = $1 AND revoked_at IS NULL";
// Keyset paging on (updated_at, key_hash): a page boundary inside a run of
// rows changed in the same millisecond (an erasure revokes all of a user's
// keys at once) moves on instead of reading the same page forever.
const CHANGED: &str = "SELECT key_hash, updated_at FROM api_keys \
                       WHERE updated_at >= $1 AND (updated_at > $1 OR key_hash > $2) \
                       ORDER BY updated_at, key_hash LIMIT $3";
const USAGE: &str = "UPDATE api_keys SET use_count = use_count + $3, last_used_at = CASE \
                     WHEN last_used_at IS NULL OR last_used_at < $2 THEN $2 ELSE last_used_at END WHERE id = $1";

row! {
    struct Row {
        id: String,
        user_id: Option<String>,
        client_id: Option<String>,
        name: String,
        display_prefix: String,
        key_hash: Vec<u8>,
        scopes: String,
        cidrs: String,
        expires_at: Option<i64>,
        created_at: i64,
        updated_at: i64,
        revoked_at: Option<i64>,
        last_used_at: Option<i64>,
        use_count: i64,
    }
}

row! {
    struct MatchRow {
        #[flatten]
        key: Row,
        user_roles: Option<String>,
        user_tier: Option<String>,
        user_disabled: Option<bool>,
        client_roles: Option<String>,
        client_disabled: Option<bool>,
    }
}

fn list(what: &'static str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

impl Row {
    fn into_record(self) -> Result<ApiKeyRecord> {
        let owner = match (self.user_id, self.client_id) {
            (Some(u), None) => Owner::User(u),
            (None, Some(c)) => Owner::Client(c),
            _ => return Err(StoreError::Corrupt { what: "api key owner", reason: "not exactly one owner".into() }),
        };
        let cidrs = list("api key cidrs", &self.cidrs)?
            .iter()
            .map(|c| c.parse::<IpNet>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt { what: "api key cidrs", reason: e.to_string() })?;
        Ok(ApiKeyRecord {
            id: self.id,
            owner,
            name: self.name,
            display_prefix: self.display_prefix,
            key_hash: TokenHash::from_stored(&self.key_hash)?,
            scopes: list("api key scopes", &self.scopes)?,
            cidrs,
            expires_at: from_db_opt("expires_at", self.expires_at)?,
            created_at: from_db("created_at", self.created_at)?,
            updated_at: from_db("updated_at", self.updated_at)?,
            revoked_at: from_db_opt("revoked_at", self.revoked_at)?,
            last_used_at: from_db_opt("last_used_at", self.last_used_at)?,
            use_count: from_db("use_count", self.use_count)?,
        })
    }
}

/// The checked columns of a new key: scopes JSON and CIDRs JSON.
fn check_new(new: &NewApiKey) -> Result<(Vec<String>, String, String)> {
    check_required("owner", new.owner.id(), MAX_ID_BYTES)?;
    check_required("name", &new.name, MAX_KEY_NAME_BYTES)?;
    if new.name.chars().any(char::is_control) {
        return Err(StoreError::Invalid { field: "name", reason: "contains a control character" });
    }
    check_required("display_prefix", &new.display_prefix, MAX_ID_BYTES)?;
    let (scopes, scopes_json) = scopes_json(&new.scopes)?;
    if new.cidrs.len() > MAX_CIDRS {
        return Err(StoreError::Invalid { field: "cidrs", reason: "too many" });
    }
    let cidrs: Vec<String> = new.cidrs.iter().map(|c| c.trunc().to_string()).collect();
    let cidrs_json =
        serde_json::to_string(&cidrs).map_err(|e| StoreError::Corrupt { what: "cidrs", reason: e.to_string() })?;
    Ok((scopes, scopes_json, cidrs_json))
}

fn record_of(id: String, new: &NewApiKey, scopes: Vec<String>, now: u64) -> ApiKeyRecord {
    ApiKeyRecord {
        id,
        owner: new.owner.clone(),
        name: new.name.clone(),
        display_prefix: new.display_prefix.clone(),
        key_hash: new.key_hash,
        scopes,
        cidrs: new.cidrs.iter().map(IpNet::trunc).collect(),
        expires_at: new.expires_at,
        created_at: now,
        updated_at: now,
        revoked_at: None,
        last_used_at: None,
        use_count: 0,
    }
}

impl ApiKeyStore for Database {
    #[tracing::instrument(skip_all)]
    async fn create_api_key(&self, new: &NewApiKey, now: u64) -> Result<ApiKeyRecord> {
        let (scopes, scopes_json, cidrs_json) = check_new(new)?;
        let at = to_db("now", now)?;
        let expires = new.expires_at.map(|e| to_db("expires_at", e)).transpose()?;
        let id = new_id();
        let (user, client) = new.owner.columns();
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&id)
                .bind(user)
                .bind(client)
                .bind(&new.name)
                .bind(&new.display_prefix)
                .bind(new.key_hash.as_bytes().as_slice())
                .bind(&scopes_json)
                .bind(&cidrs_json)
                .bind(expires)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(record_of(id, new, scopes, now))
    }

    #[tracing::instrument(skip_all)]
    async fn api_key_by_hash(&self, hash: &TokenHash) -> Result<Option<ApiKeyMatch>> {
        let row: Option<MatchRow> = with_pool!(self, |pool| {
            sqlx::query_as(BY_HASH).bind(hash.as_bytes().as_slice()).fetch_optional(pool).await?
        });
        let Some(row) = row else { return Ok(None) };
        let roles = match row.user_roles.as_deref().or(row.client_roles.as_deref()) {
            Some(text) => list("owner roles", text)?,
            None => Vec::new(),
        };
        let owner_disabled = row.user_disabled.or(row.client_disabled).unwrap_or(true);
        Ok(Some(ApiKeyMatch { key: row.key.into_record()?, roles, tier: row.user_tier, owner_disabled }))
    }

    #[tracing::instrument(skip_all)]
    async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let row: Option<Row> = with_pool!(self, |pool| { sqlx::query_as(BY_ID).bind(id).fetch_optional(pool).await? });
        row.map(Row::into_record).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_api_keys(&self, owner: Option<&Owner>) -> Result<Vec<ApiKeyRecord>> {
        let (sql, bound) = match owner {
            None => (LIST_ALL, None),
            Some(Owner::User(id)) => (LIST_USER, Some(id.as_str())),
            Some(Owner::Client(id)) => (LIST_CLIENT, Some(id.as_str())),
        };
        if bound.is_some_and(|id| !storable(id, MAX_ID_BYTES)) {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = with_pool!(self, |pool| {
            let q = sqlx::query_as(sql);
            let q = match bound {
                Some(id) => q.bind(id),
                None => q,
            };
            q.fetch_all(pool).await?
        });
        rows.into_iter().map(Row::into_record).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_api_key(&self, id: &str, new: &NewApiKey, old_expires_at: u64, now: u64) -> Result<ApiKeyRecord> {
        let (scopes, scopes_json, cidrs_json) = check_new(new)?;
        if !storable(id, MAX_ID_BYTES) {
            return Err(StoreError::NotFound { what: "api key" });
        }
        let at = to_db("now", now)?;
        let expires = new.expires_at.map(|e| to_db("expires_at", e)).transpose()?;
        let new_id = new_id();
        let (user, client) = new.owner.columns();
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin_with(sql.begin_write).await?;
            let live = format!("{LIVE_BY_ID}{}", sql.for_update);
            let current: Option<Option<i64>> = sqlx::query_scalar(&live).bind(id).fetch_optional(&mut *tx).await?;
            let Some(current) = current else {
                tx.commit().await?;
                return Err(StoreError::NotFound { what: "api key" });
            };
            let until = to_db("expires_at", old_expires_at)?;
            let until = current.map_or(until, |c| c.min(until));
            sqlx::query(SET_EXPIRY).bind(id).bind(until).bind(at).execute(&mut *tx).await?;
            sqlx::query(INSERT)
                .bind(&new_id)
                .bind(user)
                .bind(client)
                .bind(&new.name)
                .bind(&new.display_prefix)
                .bind(new.key_hash.as_bytes().as_slice())
                .bind(&scopes_json)
                .bind(&cidrs_json)
                .bind(expires)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(record_of(new_id, new, scopes, now))
    }

    #[tracing::instrument(skip_all)]
    async fn revoke_api_key(&self, id: &str, now: u64) -> Result<bool> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let at = to_db("now", now)?;
        let rows =
            with_pool!(self, |pool| { sqlx::query(REVOKE).bind(id).bind(at).execute(pool).await?.rows_affected() });
        Ok(rows > 0)
    }

    #[tracing::instrument(skip_all)]
    async fn api_keys_changed_since(&self, since: u64, after: &[u8], limit: u32) -> Result<Vec<(TokenHash, u64)>> {
        let since = to_db("since", since)?;
        let rows: Vec<(Vec<u8>, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(CHANGED).bind(since).bind(after).bind(i64::from(limit)).fetch_all(pool).await?
        });
        rows.into_iter().map(|(h, at)| Ok((TokenHash::from_stored(&h)?, from_db("updated_at", at)?))).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn record_api_key_usage(&self, usage: &[ApiKeyUsage]) -> Result<()> {
        for chunk in usage.chunks(MAX_USAGE_BATCH) {
            with_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                for u in chunk {
                    sqlx::query(USAGE)
                        .bind(&u.id)
                        .bind(to_db("last_used_at", u.last_used_at)?)
                        .bind(to_db("count", u.count)?)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            });
        }
        Ok(())
    }
}
