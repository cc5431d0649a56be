//! API keys: made here (shown once), accepted by the bearer layer
//! ([`crate::auth`]) from `X-API-Key` (`[auth] api_key_header`) or
//! `Authorization: ApiKey …`, managed over HTTP ([`http`]) and with
//! `rampart api-key`.
//!
//! - **Format** `prefix_random_checksum` ([`rampart_core::api_key`]): a
//!   presented key with the wrong shape or checksum is refused before it is
//!   hashed or looked up.
//! - **Storage**: only the SHA-256 of a key and its display prefix
//!   (`rpk_` + 8 characters) are stored ([`crate::store::identity::api_keys`]).
//!   A fast hash is right: a key has about 190 random bits.
//! - **Authentication** costs one SHA-256 and a lookup in [`KeyCache`] (a
//!   database query on a miss; unknown hashes are remembered too). The
//!   principal is the key's owner (user or service client) with the owner's
//!   roles and tier, the key's scopes and its id.
//! - **Revocation and rotation** evict the key on this instance at once;
//!   every instance polls the keys changed since its last look every
//!   [`POLL`] (with an overlap, like [`super::revoke`]) and evicts them, so a
//!   revoked key stops working everywhere within about [`POLL`]. Changes of
//!   the owner (roles, disabled) are seen within `cache_ttl`. When the poll
//!   has failed for [`super::revoke::STALE_AFTER`], API keys are refused with
//!   503 (fail closed, like our own tokens).
//! - **Rotation** makes a new key with the same name, scopes, CIDRs and
//!   expiry; the old key keeps working for a grace period, then expires.
//! - **Usage** (last use, count) is counted in memory and written every
//!   `usage_flush` in one transaction, and at shutdown.

pub mod cache;
pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use rampart_core::api_key::{ApiKey, KeyError};
use rampart_core::config::api_keys::ApiKeySettings;
use rampart_core::principal::{AuthMethod, Principal};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

pub use cache::{CachedKey, KeyCache, Lookup, Refusal};

use super::service::{ms, now_ms, IdentityError};
use crate::auth::Verified;
use crate::store::identity::{
    ApiKeyMatch, ApiKeyRecord, ApiKeyStore, ApiKeyUsage, NewApiKey, Owner, StoreError, TokenHash,
};
use crate::store::Database;

/// How often every instance reads the keys changed elsewhere.
pub const POLL: Duration = Duration::from_secs(2);
/// A poll reads back this far (clock skew, late commits, and lookups that
/// raced a change and cached the old state).
const OVERLAP_MS: u64 = 30_000;
const PAGE: u32 = 5_000;
/// Most keys remembered (and, separately, most unknown hashes).
const CACHE_ENTRIES: usize = 10_000;

/// A key made by [`create`] or [`rotate`]: the only time it exists outside
/// the caller's hands.
pub struct WithKey {
    pub record: ApiKeyRecord,
    pub key: String,
}

/// What a new key should be.
#[derive(Clone, Debug, Default)]
pub struct KeyRequest {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub cidrs: Vec<IpNet>,
}

/// A fresh key with `prefix`, from the OS random generator.
pub fn new_key(prefix: &str) -> Result<ApiKey<'static>, IdentityError> {
    let rng = SystemRandom::new();
    for _ in 0..4 {
        let mut bytes = [0u8; 64];
        rng.fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        match ApiKey::from_random(prefix, &bytes) {
            Ok(k) => return Ok(k),
            Err(KeyError::NotEnoughRandom) => continue,
            Err(e) => return Err(IdentityError::BadInput(format!("api key prefix: {e}"))),
        }
    }
    Err(IdentityError::Internal(anyhow::anyhow!("could not draw an API key")))
}

fn new_record(owner: Owner, req: &KeyRequest, key: &ApiKey<'_>, expires_at: Option<u64>) -> NewApiKey {
    NewApiKey {
        owner,
        name: req.name.clone(),
        display_prefix: key.display_prefix().to_owned(),
        key_hash: TokenHash::of(key.as_str()),
        scopes: req.scopes.clone(),
        cidrs: req.cidrs.clone(),
        expires_at,
    }
}

/// The longest `expires_in`: later expiries are no expiry in practice, and
/// past what a date can show (JavaScript's `Date` ends in the year 275760).
pub const MAX_EXPIRES_IN: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Creates a key for `owner`.
pub async fn create(
    db: &Database,
    settings: &ApiKeySettings,
    owner: Owner,
    req: &KeyRequest,
) -> Result<WithKey, IdentityError> {
    if req.name.trim().is_empty() {
        return Err(IdentityError::BadInput("the key name must not be empty".into()));
    }
    if req.expires_in.is_some_and(|d| d > MAX_EXPIRES_IN) {
        return Err(IdentityError::BadInput("expires_in must be at most 100 years; leave it out for no expiry".into()));
    }
    let now = now_ms();
    let key = new_key(&settings.prefix)?;
    let expires_at = req.expires_in.map(|d| now.saturating_add(ms(d)));
    let record = db.create_api_key(&new_record(owner, req, &key, expires_at), now).await.map_err(not_found)?;
    Ok(WithKey { record, key: key.as_str().to_owned() })
}

/// The keys of `owner` (every key when `None`).
pub async fn list(db: &Database, owner: Option<&Owner>) -> Result<Vec<ApiKeyRecord>, IdentityError> {
    Ok(db.list_api_keys(owner).await?)
}

/// The key `id`, if it exists and (with `owner`) belongs to `owner`.
async fn owned(db: &Database, id: &str, owner: Option<&Owner>) -> Result<ApiKeyRecord, IdentityError> {
    db.api_key_by_id(id)
        .await?
        .filter(|k| owner.is_none_or(|o| *o == k.owner))
        .ok_or_else(|| IdentityError::BadInput(format!("no api key `{id}`")))
}

/// Rotates the key `id`: a new key like it, and the old one working for
/// `grace` more (the configured default when `None`, at most the maximum).
pub async fn rotate(
    db: &Database,
    settings: &ApiKeySettings,
    id: &str,
    owner: Option<&Owner>,
    grace: Option<Duration>,
) -> Result<(WithKey, ApiKeyRecord), IdentityError> {
    let old = owned(db, id, owner).await?;
    let grace = grace.unwrap_or(settings.rotation_grace);
    if grace > settings.max_rotation_grace {
        return Err(IdentityError::BadInput(format!(
            "the grace may be at most {}",
            humantime::format_duration(settings.max_rotation_grace)
        )));
    }
    let now = now_ms();
    if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e <= now) {
        return Err(IdentityError::BadInput(format!("api key `{id}` is revoked or expired")));
    }
    let key = new_key(&settings.prefix)?;
    let req =
        KeyRequest { name: old.name.clone(), scopes: old.scopes.clone(), expires_in: None, cidrs: old.cidrs.clone() };
    let new = new_record(old.owner.clone(), &req, &key, old.expires_at);
    let record = db.rotate_api_key(id, &new, now.saturating_add(ms(grace)), now).await.map_err(not_found)?;
    let old = owned(db, id, None).await?;
    Ok((WithKey { record, key: key.as_str().to_owned() }, old))
}

/// Revokes the key `id` (of `owner`, when given).
pub async fn revoke(db: &Database, id: &str, owner: Option<&Owner>) -> Result<ApiKeyRecord, IdentityError> {
    owned(db, id, owner).await?;
    db.revoke_api_key(id, now_ms()).await?;
    owned(db, id, None).await
}

fn not_found(e: StoreError) -> IdentityError {
    match e {
        StoreError::NotFound { what } => IdentityError::BadInput(format!("no such {what}")),
        other => other.into(),
    }
}

/// A key as one JSON object: the display prefix, never the key or its hash
/// (the key only when it was just made).
pub fn key_json(k: &ApiKeyRecord, key: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": k.id,
        "owner": {"kind": k.owner.kind(), "id": k.owner.id()},
        "name": k.name,
        "prefix": k.display_prefix,
        "scopes": k.scopes,
        "cidrs": k.cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "expires_at": k.expires_at,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
        "last_used_at": k.last_used_at,
        "use_count": k.use_count,
    });
    if let (Some(key), Some(map)) = (key, v.as_object_mut()) {
        map.insert("key".into(), key.into());
    }
    v
}

/// The running side: the cache the bearer layer reads, the poll, the usage batches.
pub struct ApiKeys {
    pub settings: ApiKeySettings,
    db: Database,
    cache: KeyCache,
    last_sync: AtomicU64,
    /// Where the next poll starts: a time (ms) and, after a full page, the
    /// last hash read at that time.
    cursor: Mutex<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys").field("cached", &self.cache.len()).finish_non_exhaustive()
    }
}

/// The SHA-256 of a presented key: what the cache and the table are keyed by.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    pub fn new(settings: ApiKeySettings, db: Database, now_ms: u64) -> Arc<Self> {
        let ttl = ms(settings.cache_ttl);
        Arc::new(Self {
            settings,
            db,
            cache: KeyCache::new(CACHE_ENTRIES, ttl),
            last_sync: AtomicU64::new(now_ms),
            cursor: Mutex::new((now_ms.saturating_sub(OVERLAP_MS), Vec::new())),
        })
    }

    /// Starts the poll and the usage batches for as long as the process runs.
    pub fn spawn_sync(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                if let Err(e) = this.poll(now_ms()).await {
                    tracing::warn!(error = %e, "reading API key changes failed");
                }
            }
        });
        let this = Arc::downgrade(self);
        let every = self.settings.usage_flush;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                this.flush_usage().await;
            }
        });
    }

    /// Whether this instance has read key changes recently enough to trust
    /// its cache (fail closed otherwise).
    pub fn is_current(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_sync.load(Ordering::Relaxed)) <= ms(super::revoke::STALE_AFTER)
    }

    pub fn cached(&self, hash: &[u8; 32], now_ms: u64) -> Lookup {
        self.cache.get(hash, now_ms)
    }

    /// Looks the key up in the database and remembers the answer.
    pub async fn fetch(&self, hash: [u8; 32], now_ms: u64) -> Result<Option<Arc<CachedKey>>, StoreError> {
        match self.db.api_key_by_hash(&TokenHash::from_bytes(hash)).await? {
            Some(found) => {
                let key = Arc::new(self.cached_key(found));
                self.cache.insert_known(hash, key.clone(), now_ms);
                Ok(Some(key))
            }
            None => {
                self.cache.insert_unknown(hash, now_ms);
                Ok(None)
            }
        }
    }

    fn cached_key(&self, found: ApiKeyMatch) -> CachedKey {
        let k = found.key;
        let own_user = matches!(k.owner, crate::store::identity::Owner::User(_));
        let principal = Principal {
            subject: k.owner.id().to_owned(),
            api_key_id: Some(k.id.clone()),
            issuer: None,
            tier: found.tier,
            roles: found.roles,
            scopes: k.scopes,
            method: AuthMethod::ApiKey,
        };
        CachedKey {
            usage: self.cache.usage_of(&k.id),
            id: k.id,
            verified: Verified { principal, revocable: None, own_user, internal: Default::default() },
            expires_at: k.expires_at,
            revoked: k.revoked_at.is_some(),
            owner_disabled: found.owner_disabled,
            cidrs: k.cidrs,
        }
    }

    /// Forgets the key with this hash here (after a change made here).
    pub fn evict(&self, hash: &TokenHash) {
        self.cache.evict(hash.as_bytes());
    }

    /// Evicts what changed since the cursor (minus the overlap).
    async fn poll(&self, now_ms: u64) -> Result<(), StoreError> {
        self.poll_page(now_ms, PAGE).await
    }

    async fn poll_page(&self, now_ms: u64, page: u32) -> Result<(), StoreError> {
        let (since, after) = self.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let changed = self.db.api_keys_changed_since(since, &after, page).await?;
        for (hash, _) in &changed {
            self.cache.evict(hash.as_bytes());
        }
        // A full page: go on right after its last row next time (no overlap,
        // or a long backlog would be read forever); else read back the
        // overlap, from the first key of that millisecond.
        let full = changed.len() == page as usize;
        let next = match changed.last() {
            Some((hash, at)) if full => (*at, hash.as_bytes().to_vec()),
            _ => (now_ms.saturating_sub(OVERLAP_MS).max(since), Vec::new()),
        };
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = next;
        if !full {
            self.last_sync.store(now_ms, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes the usage counted since the last batch (kept for the next one
    /// when the database fails).
    pub async fn flush_usage(&self) {
        let taken = self.cache.take_usage();
        if taken.is_empty() {
            return;
        }
        let batch: Vec<ApiKeyUsage> = taken
            .iter()
            .map(|(id, last, count)| ApiKeyUsage { id: id.clone(), last_used_at: *last, count: *count })
            .collect();
        if let Err(e) = self.db.record_api_key_usage(&batch).await {
            tracing::warn!(error = %e, keys = batch.len(), "writing API key usage failed; retried at the next batch");
            self.cache.restore_usage(&taken);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::store::identity::{NewUser, UserStore};

    /// More keys changed in one millisecond than a page holds (an erasure
    /// revokes all of a user's keys at once): the poll pages through them,
    /// evicts every one and catches up. Paging by time alone read the same
    /// page forever, and the instance went stale and refused every key.
    #[tokio::test]
    async fn a_page_boundary_inside_one_millisecond_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}/k.db", dir.path().display())).await.unwrap();
        let t0 = now_ms();
        let user = db.create_user(&NewUser::named("many"), t0).await.unwrap();
        let keys = ApiKeys::new(ApiKeySettings::default(), db.clone(), t0);
        let mut hashes = Vec::new();
        for i in 0..7 {
            let key = new_key("rpk").unwrap();
            let req = KeyRequest { name: format!("k{i}"), ..KeyRequest::default() };
            let record = db.create_api_key(&new_record(Owner::User(user.id.clone()), &req, &key, None), t0).await;
            let record = record.unwrap();
            let hash = key_digest(key.as_str());
            assert!(keys.fetch(hash, t0).await.unwrap().is_some());
            assert!(db.revoke_api_key(&record.id, t0 + 1).await.unwrap());
            hashes.push(hash);
        }
        // A page of 3 over the 7 revoked at t0 + 1 (created at t0 too).
        let later = t0 + 40_000;
        for _ in 0..6 {
            keys.poll_page(later, 3).await.unwrap();
            if keys.is_current(later) && keys.cursor.lock().unwrap().1.is_empty() {
                break;
            }
        }
        assert!(keys.is_current(later), "the poll caught up");
        for hash in &hashes {
            assert!(matches!(keys.cached(hash, later), Lookup::Miss), "every revoked key was evicted");
        }
    }
}
