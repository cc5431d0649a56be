//! The keys that sign and verify the gateway's own access tokens.
//!
//! Per `[identity] algorithm` and its key settings ([`Signing`]):
//! - **generated** (EdDSA, the default, or ES256): made on first start, the
//!   private half sealed with ChaCha20-Poly1305 under a key derived from
//!   `secret_key`, stored in `signing_keys`; every instance unseals the active
//!   one. `rampart keys rotate` makes a new key active and retires the old one
//!   once the last token it signed has expired; until then it stays in the
//!   JWKS and verifies.
//! - **from a file** (`signing_key_file`, any asymmetric algorithm; RS256
//!   needs it): the public half is recorded in `signing_keys` too, so a new
//!   file's key takes over while the old one keeps verifying its tokens.
//! - **HS256** (`hs256_secret_file`): a shared secret for upstreams that verify
//!   that way; never published. Older asymmetric keys still verify.
//!
//! Every instance re-reads the table every [`RELOAD`] and at once (at most
//! once per [`MIN_RELOAD`]) when a token names a `kid` it does not know, so a
//! rotation on one instance or by the CLI reaches the others within seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rampart_core::config::identity::{IdentitySettings, Signing};
use rampart_core::token::{Alg, KeySet, SigningKey, Verifier, VerifyingKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::store::identity::{NewSigningKey, SealedKey, SigningKeyRecord, SigningKeyStore, StoreError};
use crate::store::Database;

/// How often every instance re-reads the signing keys.
pub const RELOAD: Duration = Duration::from_secs(10);
/// Fewest seconds between two reloads caused by unknown `kid`s.
pub const MIN_RELOAD: Duration = Duration::from_secs(1);
/// How long a replaced key keeps verifying past the access-token lifetime
/// (clock skew, the verifier's leeway).
const RETIRE_MARGIN: Duration = Duration::from_secs(300);

/// The signing key and the keys that verify, swapped whole on a change.
pub struct KeyState {
    pub signer: SigningKey,
    pub keys: KeySet,
    pub verifier: Arc<Verifier>,
    /// What the state was built from: the active kid and every verifying kid.
    fingerprint: (String, Vec<String>),
}

/// The live key state of one gateway.
pub struct Keys {
    state: ArcSwap<KeyState>,
    settings: Arc<IdentitySettings>,
    db: Database,
    seal_key: [u8; 32],
    last_reload: std::sync::Mutex<Option<Instant>>,
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("active", &self.state.load().fingerprint.0).finish_non_exhaustive()
    }
}

/// A key derived from the configured secret for one purpose.
pub(super) fn derive(secret: &str, purpose: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, purpose.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&tag.as_ref()[..32]);
    out
}

fn seal_key(settings: &IdentitySettings) -> [u8; 32] {
    derive(settings.secret_key.expose(), "rampart signing-key seal v1")
}

impl Keys {
    /// Prepares the keys at start: makes the first key (generated mode) or
    /// records the configured one, then loads the state.
    pub async fn start(settings: Arc<IdentitySettings>, db: Database, now: u64) -> anyhow::Result<Arc<Self>> {
        let seal_key = seal_key(&settings);
        match &settings.signing {
            Signing::Generated(alg) => {
                let active = db.active_signing_key().await?;
                // A first start, or a change of algorithm or away from a key file.
                if active.as_ref().is_none_or(|k| k.alg != *alg || k.private_key.is_none()) {
                    let kid = rotate(&settings, &db, now).await?;
                    tracing::info!(kid = %kid, alg = %alg, "generated a token signing key");
                }
            }
            Signing::Pem { alg, pem, kid } => {
                let jwk = |kid: &str| -> anyhow::Result<serde_json::Value> {
                    let key =
                        SigningKey::from_pkcs8_pem(kid, *alg, pem.expose()).map_err(|e| anyhow::anyhow!("{e}"))?;
                    key.verifying_key().to_jwk().context("the key has no JWK")
                };
                // Named after its public key unless `key_id` names it.
                let kid = match kid {
                    Some(kid) => kid.clone(),
                    None => format!("file-{}", short_hash(jwk("file")?.to_string().as_bytes())),
                };
                record_public_key(&settings, &db, &kid, *alg, &jwk(&kid)?, now).await?;
            }
            Signing::Hs256 { .. } => {}
        }
        let state = load(&settings, &db, &seal_key, now).await?;
        Ok(Arc::new(Self {
            state: ArcSwap::from_pointee(state),
            settings,
            db,
            seal_key,
            last_reload: std::sync::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn current(&self) -> Arc<KeyState> {
        self.state.load_full()
    }

    /// The address of the current verifier (see `IdentityService::verifier_ptr`).
    pub fn verifier_ptr(&self) -> *const Verifier {
        Arc::as_ptr(&self.state.load().verifier)
    }

    /// Re-reads the keys; swaps the state when they changed. Old keys are
    /// deleted from the table once retired.
    pub async fn reload(&self, now: u64) -> anyhow::Result<bool> {
        let _one = self.reloading.lock().await;
        self.reload_locked(now).await
    }

    /// [`reload`](Self::reload), with `reloading` held by the caller.
    async fn reload_locked(&self, now: u64) -> anyhow::Result<bool> {
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let fresh = load(&self.settings, &self.db, &self.seal_key, now).await?;
        if fresh.fingerprint == self.state.load().fingerprint {
            return Ok(false);
        }
        tracing::info!(active = %fresh.fingerprint.0, keys = fresh.fingerprint.1.len(), "token signing keys changed");
        self.state.store(Arc::new(fresh));
        self.db.delete_retired_signing_keys(now).await?;
        Ok(true)
    }

    /// A token named a `kid` we do not know: perhaps another instance rotated.
    /// Reloads at most once per [`MIN_RELOAD`]; true when the keys changed.
    ///
    /// Judged again once the reload lock is held: requests that queued
    /// behind a reload (a made-up `kid` needs no signature, and a slow
    /// database makes a queue) find it recent and reload no more.
    pub async fn reload_for_unknown_kid(&self, now: u64) -> bool {
        let recent =
            || self.last_reload.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < MIN_RELOAD);
        if recent() {
            return false;
        }
        let _one = self.reloading.lock().await;
        if recent() {
            return false;
        }
        self.reload_locked(now).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the signing keys failed");
            false
        })
    }

    /// Re-reads the keys every [`RELOAD`] while the service lives.
    pub fn spawn_reload(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keys) = this.upgrade() else { return };
                if let Err(e) = keys.reload(super::service::now_ms()).await {
                    tracing::warn!(error = %e, "reading the signing keys failed");
                }
            }
        });
    }
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Records the public half of a key loaded from a file and makes it the
/// active one (idempotent: every instance with the same file does this).
async fn record_public_key(
    settings: &IdentitySettings,
    db: &Database,
    kid: &str,
    alg: Alg,
    public: &serde_json::Value,
    now: u64,
) -> anyhow::Result<()> {
    let new =
        NewSigningKey { kid: kid.to_string(), alg, public_key: public.to_string(), private_key: None, created_at: now };
    match db.insert_signing_key(&new).await {
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let keys = db.signing_keys().await?;
    let Some(stored) = keys.iter().find(|k| k.kid == kid) else { anyhow::bail!("signing key {kid} vanished") };
    if stored.public_key != new.public_key {
        anyhow::bail!("key_id `{kid}` is already used by a different key; set another key_id");
    }
    if !stored.active {
        let previous = keys.iter().find(|k| k.active).map(|k| k.kid.clone());
        db.activate_signing_key(kid, now).await?;
        if let Some(previous) = previous {
            db.retire_signing_key(&previous, retire_time(settings, now)).await?;
        }
    }
    Ok(())
}

fn retire_time(settings: &IdentitySettings, now: u64) -> u64 {
    let keep = settings.access_ttl.saturating_add(RETIRE_MARGIN);
    now.saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX))
}

/// Generates, seals and activates a new key of the configured algorithm; the
/// key it replaces is retired after the last token it signed has expired.
/// Returns the new kid. (`rampart keys rotate`, and the first start.)
pub async fn rotate(settings: &IdentitySettings, db: &Database, now: u64) -> anyhow::Result<String> {
    let Signing::Generated(alg) = settings.signing else {
        anyhow::bail!("the signing key comes from the config (signing_key_file or hs256_secret): replace it there");
    };
    let kid = format!("rampart-{}", uuid::Uuid::now_v7().simple());
    let generated = SigningKey::generate(&kid, alg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = generated.key.verifying_key().to_jwk().context("the new key has no JWK")?.to_string();
    let sealed = seal(&seal_key(settings), generated.pkcs8_pem.as_bytes())?;
    db.insert_signing_key(&NewSigningKey {
        kid: kid.clone(),
        alg,
        public_key: public,
        private_key: Some(sealed),
        created_at: now,
    })
    .await?;
    let previous = db.active_signing_key().await?.map(|k| k.kid);
    db.activate_signing_key(&kid, now).await?;
    if let Some(previous) = previous {
        db.retire_signing_key(&previous, retire_time(settings, now)).await?;
    }
    Ok(kid)
}

/// The signing key and verification keys as the table and config say now.
async fn load(settings: &IdentitySettings, db: &Database, seal_key: &[u8; 32], now: u64) -> anyhow::Result<KeyState> {
    let records = db.verification_keys(now).await?;
    let mut keys = KeySet::new();
    for record in &records {
        keys.insert(verifying_key(record)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let active = db.active_signing_key().await?;
    let signer = match &settings.signing {
        Signing::Generated(_) => {
            let active = active.as_ref().context("no active signing key")?;
            let sealed = active.private_key.as_ref().context("the active signing key has no private key")?;
            let pem = unseal(seal_key, sealed)
                .context("cannot unseal the signing key: was [identity] secret_key changed?")?;
            let pem = String::from_utf8(pem).context("the unsealed signing key is not PEM text")?;
            SigningKey::from_pkcs8_pem(&active.kid, active.alg, &pem).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Signing::Pem { alg, pem, .. } => {
            // The file's key is the active record (see `record_public_key`).
            let kid = active.as_ref().map_or("file", |k| k.kid.as_str());
            SigningKey::from_pkcs8_pem(kid, *alg, pem.expose()).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Signing::Hs256 { secret, kid } => {
            let kid = kid.clone().unwrap_or_else(|| format!("hs-{}", short_hash(secret.expose().as_bytes())));
            let key = SigningKey::hs256(&kid, secret.expose().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let verifying =
                VerifyingKey::hs256(&kid, secret.expose().as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
            keys.insert(verifying).map_err(|e| anyhow::anyhow!("{e}"))?;
            key
        }
    };
    let mut kids: Vec<String> = records.iter().map(|r| r.kid.clone()).collect();
    kids.sort();
    let verifier = Arc::new(Verifier::new(keys.clone(), [settings.issuer.clone()], [settings.audience.clone()]));
    Ok(KeyState { fingerprint: (signer.kid().to_string(), kids), signer, keys, verifier })
}

fn verifying_key(record: &SigningKeyRecord) -> anyhow::Result<VerifyingKey> {
    let jwk: serde_json::Value = serde_json::from_str(&record.public_key).context("a stored public key")?;
    VerifyingKey::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("stored key {}: {e}", record.kid))
}

fn seal(key: &[u8; 32], plaintext: &[u8]) -> anyhow::Result<SealedKey> {
    seal_with(key, b"rampart signing key", plaintext)
}

fn unseal(key: &[u8; 32], sealed: &SealedKey) -> anyhow::Result<Vec<u8>> {
    unseal_with(key, b"rampart signing key", sealed)
}

/// Seals `plaintext` with ChaCha20-Poly1305 under `key` (one [`derive`]d for
/// its purpose) and a random nonce; `aad` binds it to what it is, so that a
/// sealed value moved to another column does not open.
pub(super) fn seal_with(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> anyhow::Result<SealedKey> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let sealing =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| anyhow::anyhow!("bad seal key"))?);
    let mut data = plaintext.to_vec();
    sealing
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data)
        .map_err(|_| anyhow::anyhow!("sealing failed"))?;
    Ok(SealedKey { ciphertext: data, nonce: nonce.to_vec() })
}

/// Opens what [`seal_with`] sealed with the same key and `aad`.
pub(super) fn unseal_with(key: &[u8; 32], aad: &[u8], sealed: &SealedKey) -> anyhow::Result<Vec<u8>> {
    let nonce: [u8; NONCE_LEN] = sealed.nonce.as_slice().try_into().map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let opening =
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| anyhow::anyhow!("bad seal key"))?);
    let mut data = sealed.ciphertext.clone();
    let plain = opening
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data)
        .map_err(|_| anyhow::anyhow!("the sealed value does not open with this secret_key"))?;
    Ok(plain.to_vec())
}

/// The keys as `rampart keys list` prints them (never private material).
pub fn key_json(k: &SigningKeyRecord) -> serde_json::Value {
    serde_json::json!({
        "kid": k.kid,
        "alg": k.alg.as_str(),
        "active": k.active,
        "sealed_private_key": k.private_key.is_some(),
        "created_at": k.created_at,
        "not_after_sign": k.not_after_sign,
        "retire_at": k.retire_at,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Requests that queued behind a reload (for a made-up `kid`) find it
    /// recent once they hold the lock: one reload, not one each.
    #[tokio::test]
    async fn requests_queued_behind_a_reload_do_not_each_reload() {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}/keys.db", dir.path().display());
        let text = format!(
            "version = 1\n[storage]\ndatabase = '{db_url}'\n[identity]\nenabled = true\n\
             issuer = 'https://api.example.test'\nsecret_key = '0123456789abcdef0123456789abcdef-unit-test'\n\
             [upstreams.default]\nurl = 'http://127.0.0.1:1'\n"
        );
        let policy = crate::app::load_policy_text(&text).unwrap();
        let db = Database::connect(&db_url).await.unwrap();
        let now = super::super::service::now_ms();
        let keys = Keys::start(policy.identity.clone().unwrap(), db, now).await.unwrap();

        let held = keys.reloading.lock().await;
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let keys = keys.clone();
                tokio::spawn(async move { keys.reload_for_unknown_kid(now).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // As far as those waiting can tell, a reload has just finished.
        let stamp = Instant::now();
        *keys.last_reload.lock().unwrap() = Some(stamp);
        drop(held);
        for w in waiting {
            assert!(!w.await.unwrap());
        }
        assert_eq!(*keys.last_reload.lock().unwrap(), Some(stamp), "a queued request reloaded again");
    }
}
