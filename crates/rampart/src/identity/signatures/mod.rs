//! HMAC-signed requests from service clients (`[identity.signatures]`): the
//! keys they sign with, the keys every gateway instance holds in memory to
//! verify, and the replay cache. The wire format and the canonical request
//! are in [`rampart_core::signature`]; the check on the request path is
//! [`crate::auth`]'s (`auth/signature.rs`).
//!
//! - **Keys** ([`admin`]): `hk_…` ids and `hks_…` secrets made with
//!   `rampart client signing-key add`, stored sealed in
//!   `request_signing_keys` ([`crate::store::identity::request_keys`]).
//! - **In memory**: every instance reads all keys in use (with their client's
//!   roles, scopes and state) at start and then every [`POLL`], unseals new
//!   ones once, and swaps the whole table in. A verified request therefore
//!   costs no database query, and an unknown key id costs a map lookup. A
//!   revoked or expired key, or one whose client was disabled or removed,
//!   stops verifying on every instance within [`POLL`] (2 s) of the change;
//!   a new key starts verifying within the same time. The table holds the
//!   keys operators made, so its size is theirs, never a client's.
//! - **Fail closed**: when the keys could not be read for
//!   [`super::revoke::STALE_AFTER`] (30 s), signed requests are refused with
//!   503, as API keys and the gateway's own tokens are.
//! - **Replays** ([`nonces`]): a nonce is remembered (in process, and in
//!   Redis when configured) until its timestamp leaves the window.

pub mod admin;
pub mod nonces;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rampart_core::config::identity::IdentitySettings;
use rampart_core::config::signatures::SignatureSettings;
use rampart_core::principal::{AuthMethod, Principal};

use self::nonces::{nonce_id, NonceCache, Seen};
use super::service::{ms, now_ms};
use crate::auth::Verified;
use crate::limit::redis::RedisStore;
use crate::store::identity::{KeyInUse, RequestKeyStore, StoreError};
use crate::store::Database;

/// How often every instance re-reads the keys: the bound on how long a
/// revoked key keeps verifying elsewhere.
pub const POLL: Duration = Duration::from_secs(2);
/// Keys revoked or expired this long ago are no longer read (until then they
/// are, so that their use is refused and audited by name).
const FORGET_AFTER_MS: u64 = 86_400_000;

/// A signing key as verification needs it.
pub struct LiveKey {
    pub key_id: String,
    pub client_id: String,
    created_at: u64,
    /// The secret, ready to verify with; `None` for a revoked key (never
    /// unsealed) or one that does not unseal.
    hmac: Option<ring::hmac::Key>,
    /// The client's principal (method `signature`), with the shared slot of
    /// its internal JWT.
    pub verified: Verified,
    pub expires_at: Option<u64>,
    pub revoked: bool,
    pub client_disabled: bool,
}

impl std::fmt::Debug for LiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKey")
            .field("key_id", &self.key_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl LiveKey {
    /// The key to verify with, if the key may be used at `now_ms`; else the
    /// reason it may not (for metrics and the audit log).
    pub fn usable(&self, now_ms: u64) -> Result<&ring::hmac::Key, &'static str> {
        if self.revoked {
            return Err("signing_key_revoked");
        }
        if self.expires_at.is_some_and(|e| now_ms >= e) {
            return Err("signing_key_expired");
        }
        if self.client_disabled {
            return Err("signing_key_client_disabled");
        }
        self.hmac.as_ref().ok_or("signing_key_unreadable")
    }

    /// Whether `mac` is the MAC of `canonical` under this key (constant time).
    pub fn verifies(&self, canonical: &str, mac: &[u8; 32]) -> bool {
        self.hmac.as_ref().is_some_and(|key| rampart_core::signature::verify_with(key, canonical, mac))
    }
}

type KeyTable = HashMap<String, Arc<LiveKey>>;

/// The running side: the keys in memory, their poll, the replay cache.
pub struct Signatures {
    pub settings: SignatureSettings,
    db: Database,
    seal_key: [u8; 32],
    keys: ArcSwap<KeyTable>,
    last_sync: AtomicU64,
    nonces: NonceCache,
}

impl std::fmt::Debug for Signatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signatures").field("keys", &self.keys.load().len()).finish_non_exhaustive()
    }
}

impl Signatures {
    /// Reads the keys once; the gateway does not start without them.
    pub async fn start(identity: &IdentitySettings, db: Database) -> anyhow::Result<Arc<Self>> {
        let this = Arc::new(Self {
            settings: identity.signatures.clone(),
            db,
            seal_key: admin::seal_key(identity),
            keys: ArcSwap::from_pointee(KeyTable::new()),
            last_sync: AtomicU64::new(0),
            nonces: NonceCache::new(identity.signatures.nonce_cache_entries),
        });
        this.reload(now_ms()).await?;
        Ok(this)
    }

    /// Re-reads the keys every [`POLL`] for as long as the service lives.
    pub fn spawn_sync(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                if let Err(e) = this.reload(now_ms()).await {
                    tracing::warn!(error = %e, "reading request-signing keys failed");
                }
            }
        });
    }

    /// Whether the keys were read recently enough to trust (fail closed otherwise).
    pub fn is_current(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_sync.load(Ordering::Relaxed)) <= ms(super::revoke::STALE_AFTER)
    }

    /// The key with this id, if the table has it.
    pub fn key(&self, key_id: &str) -> Option<Arc<LiveKey>> {
        self.keys.load().get(key_id).cloned()
    }

    /// Reads every key in use and swaps the table. Secrets already unsealed
    /// are kept rather than unsealed again.
    pub async fn reload(&self, now_ms: u64) -> Result<(), StoreError> {
        let rows = self.db.request_keys_in_use(now_ms.saturating_sub(FORGET_AFTER_MS)).await?;
        let old = self.keys.load_full();
        let table: KeyTable = rows
            .into_iter()
            .map(|row| {
                let previous = old.get(&row.record.key_id).filter(|k| k.created_at == row.record.created_at);
                let key = self.live_key(row, previous.and_then(|k| k.hmac.clone()));
                (key.key_id.clone(), Arc::new(key))
            })
            .collect();
        self.keys.store(Arc::new(table));
        self.last_sync.store(now_ms, Ordering::Relaxed);
        Ok(())
    }

    fn live_key(&self, row: KeyInUse, unsealed: Option<ring::hmac::Key>) -> LiveKey {
        let KeyInUse { record, secret, scopes, roles, client_disabled } = row;
        let revoked = record.revoked_at.is_some();
        let hmac = match unsealed {
            _ if revoked => None,
            Some(key) => Some(key),
            None => match admin::unseal_secret(&self.seal_key, &record.key_id, &secret) {
                Ok(bytes) => Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes)),
                Err(e) => {
                    tracing::warn!(key_id = %record.key_id, error = %e, "a request-signing key does not unseal: was [identity] secret_key changed?");
                    None
                }
            },
        };
        let principal = Principal {
            subject: record.client_id.clone(),
            api_key_id: None,
            issuer: None,
            tier: None,
            roles,
            scopes,
            method: AuthMethod::Signature,
        };
        LiveKey {
            key_id: record.key_id,
            client_id: record.client_id,
            created_at: record.created_at,
            hmac,
            verified: Verified { principal, revocable: None, own_user: true, internal: Default::default() },
            expires_at: record.expires_at,
            revoked,
            client_disabled,
        }
    }

    /// Records the nonce of a verified request whose timestamp is
    /// `timestamp` (unix seconds): in this instance's cache, and in Redis when
    /// it is given and answers. See [`nonces`] for what happens when it does not.
    pub async fn check_nonce(
        &self,
        redis: Option<&RedisStore>,
        key_id: &str,
        nonce: &str,
        timestamp: u64,
        now: u64,
    ) -> Seen {
        // A second past the window: a request is let in up to the window's
        // last second, and its nonce must outlast that second.
        let until = timestamp.saturating_add(self.settings.window.as_secs()).saturating_add(1);
        let local = self.nonces.check_and_record(nonce_id(key_id, nonce), until, now);
        if local == Seen::Replayed {
            return Seen::Replayed;
        }
        if let Some(redis) = redis {
            let ttl = until.saturating_sub(now).saturating_add(1);
            match nonces::redis_fresh(redis, key_id, nonce, ttl).await {
                Some(true) => return Seen::Fresh,
                Some(false) => return Seen::Replayed,
                None => {}
            }
        }
        local
    }
}
