//! Signing keys made, listed and revoked (`rampart client signing-key …`).
//!
//! - A key id is `hk_` and 16 random bytes (base64url); it is public and
//!   travels in `X-Rampart-Key-Id`.
//! - A secret is `hks_` and 32 random bytes (base64url), shown once. Clients
//!   key HMAC-SHA256 with the secret's text as printed, so that
//!   `openssl dgst -sha256 -hmac "$SECRET"` works too.
//! - The secret is stored sealed ([`seal_secret`]) with a key derived from
//!   `[identity] secret_key`; the sealing is bound to the key id, so a sealed
//!   secret copied to another row does not open.

use std::time::Duration;

use rampart_core::config::identity::IdentitySettings;

use crate::identity::keys::{derive, seal_with, unseal_with};
use crate::identity::service::{ms, now_ms, random_bytes_b64, IdentityError};
use crate::store::identity::{
    NewRequestKey, RequestKeyRecord, RequestKeyStore, SealedKey, ServiceClientStore, StoreError,
};
use crate::store::Database;

/// The key that seals signing secrets, derived from `[identity] secret_key`.
pub fn seal_key(settings: &IdentitySettings) -> [u8; 32] {
    derive(settings.secret_key.expose(), "rampart request-signing seal v1")
}

fn aad(key_id: &str) -> Vec<u8> {
    let mut aad = b"rampart request signing key ".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// Seals the secret of `key_id`.
pub fn seal_secret(seal_key: &[u8; 32], key_id: &str, secret: &str) -> anyhow::Result<SealedKey> {
    seal_with(seal_key, &aad(key_id), secret.as_bytes())
}

/// Opens what [`seal_secret`] sealed for the same `key_id`.
pub fn unseal_secret(seal_key: &[u8; 32], key_id: &str, sealed: &SealedKey) -> anyhow::Result<Vec<u8>> {
    unseal_with(seal_key, &aad(key_id), sealed)
}

/// A key made by [`add`]: the only time its secret exists outside the
/// caller's hands.
pub struct WithSecret {
    pub record: RequestKeyRecord,
    pub secret: String,
}

/// Makes a signing key for the service client `client_id`, valid for
/// `expires_in` (for ever when `None`).
pub async fn add(
    settings: &IdentitySettings,
    db: &Database,
    client_id: &str,
    expires_in: Option<Duration>,
) -> Result<WithSecret, IdentityError> {
    let key_id = random_bytes_b64::<16>("hk_")?;
    let secret = random_bytes_b64::<32>("hks_")?;
    let sealed = seal_secret(&seal_key(settings), &key_id, &secret)?;
    let now = now_ms();
    let new = NewRequestKey {
        key_id,
        client_id: client_id.to_owned(),
        secret: sealed,
        expires_at: expires_in.map(|d| now.saturating_add(ms(d))),
    };
    let record = db.create_request_key(&new, now).await.map_err(|e| match e {
        StoreError::NotFound { .. } => IdentityError::BadInput(format!("no client `{client_id}`")),
        other => other.into(),
    })?;
    Ok(WithSecret { record, secret })
}

/// The keys of a client (never their secrets).
pub async fn list(db: &Database, client_id: &str) -> Result<Vec<RequestKeyRecord>, IdentityError> {
    if db.client_by_id(client_id).await?.is_none() {
        return Err(IdentityError::BadInput(format!("no client `{client_id}`")));
    }
    Ok(db.list_request_keys(client_id).await?)
}

/// Revokes a key; running gateways refuse it within [`super::POLL`].
pub async fn revoke(db: &Database, key_id: &str) -> Result<RequestKeyRecord, IdentityError> {
    let missing = || IdentityError::BadInput(format!("no signing key `{key_id}`"));
    let found = db.request_key(key_id).await?.ok_or_else(missing)?;
    if found.revoked_at.is_none() {
        db.revoke_request_key(key_id, now_ms()).await?;
    }
    db.request_key(key_id).await?.ok_or_else(missing)
}

/// A key as one JSON object: never the sealed secret; the secret itself only
/// when it was just made.
pub fn key_json(k: &RequestKeyRecord, secret: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "key_id": k.key_id,
        "client_id": k.client_id,
        "created_at": k.created_at,
        "expires_at": k.expires_at,
        "revoked_at": k.revoked_at,
    });
    if let (Some(secret), Some(map)) = (secret, v.as_object_mut()) {
        map.insert("secret".into(), secret.into());
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_key_id() {
        let key = [7u8; 32];
        let sealed = seal_secret(&key, "hk_one", "hks_secret").unwrap();
        assert_ne!(sealed.ciphertext, b"hks_secret");
        assert_eq!(unseal_secret(&key, "hk_one", &sealed).unwrap(), b"hks_secret");
        assert!(unseal_secret(&key, "hk_two", &sealed).is_err(), "bound to its key id");
        assert!(unseal_secret(&[8u8; 32], "hk_one", &sealed).is_err(), "and to the seal key");
    }
}
