//! Service clients of the `client_credentials` grant (RFC 6749 §4.4): their
//! ids and secrets, the check of a presented secret, and the administration
//! behind `rampart client`.
//!
//! - A client id is `svc_` and 16 random bytes (base64url); a secret is `cs_`
//!   and 32 random bytes. The prefixes make both easy to recognise in logs
//!   and secret scanners.
//! - A secret is shown once, when it is made, and stored as its SHA-256 only.
//!   A fast hash is right here and wrong for passwords: a secret has 256 bits
//!   of entropy, so there is no dictionary to try and nothing a slow hash
//!   would protect; it would only make each token request cost a hash-pool
//!   slot.
//! - Presented secrets are compared with the stored hash in constant time,
//!   and an unknown client is compared with a dummy hash, so that both fail
//!   the same way.
//!
//! ```
//! use rampart::identity::clients::{new_secret, secret_matches};
//! use rampart::store::identity::TokenHash;
//!
//! let secret = new_secret().unwrap();
//! assert!(secret.starts_with("cs_"));
//! let stored = TokenHash::of(&secret);
//! assert!(secret_matches(Some(&stored), &secret));
//! assert!(!secret_matches(Some(&stored), "cs_wrong"));
//! assert!(!secret_matches(None, &secret));
//! ```

use subtle::ConstantTimeEq;

use super::service::{now_ms, random_bytes_b64, IdentityError};
use crate::store::identity::{NewServiceClient, ServiceClient, ServiceClientStore, TokenHash};
use crate::store::Database;

/// A new client secret: `cs_` and 32 random bytes, base64url.
pub fn new_secret() -> anyhow::Result<String> {
    random_bytes_b64::<32>("cs_")
}

/// A new client id: `svc_` and 16 random bytes, base64url.
pub fn new_client_id() -> anyhow::Result<String> {
    random_bytes_b64::<16>("svc_")
}

/// Whether `presented` is the secret whose hash is `stored`, in constant
/// time. `None` (an unknown client) is compared with a dummy and never matches.
pub fn secret_matches(stored: Option<&TokenHash>, presented: &str) -> bool {
    let dummy = TokenHash::from_bytes([0; 32]);
    let found = stored.is_some();
    let presented = TokenHash::of(presented);
    let equal: bool = presented.as_bytes().ct_eq(stored.unwrap_or(&dummy).as_bytes()).into();
    equal && found
}

/// A client made by [`add_client`] or given a new secret by [`rotate`]: the
/// only time the secret exists outside the caller's hands.
pub struct WithSecret {
    pub client: ServiceClient,
    pub secret: String,
}

/// Creates a client that may ask for `scopes` and carries `roles`.
pub async fn add_client(
    db: &Database,
    name: &str,
    scopes: &[String],
    roles: &[String],
) -> Result<WithSecret, IdentityError> {
    if name.trim().is_empty() {
        return Err(IdentityError::BadInput("the client name must not be empty".into()));
    }
    let secret = new_secret()?;
    let new = NewServiceClient {
        client_id: new_client_id()?,
        name: name.to_owned(),
        secret_hash: TokenHash::of(&secret),
        scopes: scopes.to_vec(),
        roles: roles.to_vec(),
    };
    let client = db.create_client(&new, now_ms()).await?;
    Ok(WithSecret { client, secret })
}

pub async fn list(db: &Database) -> Result<Vec<ServiceClient>, IdentityError> {
    Ok(db.list_clients().await?)
}

async fn find(db: &Database, client_id: &str) -> Result<ServiceClient, IdentityError> {
    db.client_by_id(client_id).await?.ok_or_else(|| IdentityError::BadInput(format!("no client `{client_id}`")))
}

/// Gives the client a new secret; the old one stops working at once (access
/// tokens already issued stay valid until they expire).
pub async fn rotate(db: &Database, client_id: &str) -> Result<WithSecret, IdentityError> {
    let secret = new_secret()?;
    db.rotate_client_secret(client_id, &TokenHash::of(&secret), now_ms()).await.map_err(|e| not_found(e, client_id))?;
    Ok(WithSecret { client: find(db, client_id).await?, secret })
}

/// Refuses (or allows again) the client's token requests.
pub async fn set_disabled(db: &Database, client_id: &str, disabled: bool) -> Result<ServiceClient, IdentityError> {
    db.set_client_disabled(client_id, disabled, now_ms()).await.map_err(|e| not_found(e, client_id))?;
    find(db, client_id).await
}

/// Deletes the client.
pub async fn remove(db: &Database, client_id: &str) -> Result<(), IdentityError> {
    if db.delete_client(client_id).await? {
        Ok(())
    } else {
        Err(IdentityError::BadInput(format!("no client `{client_id}`")))
    }
}

fn not_found(e: crate::store::identity::StoreError, client_id: &str) -> IdentityError {
    match e {
        crate::store::identity::StoreError::NotFound { .. } => {
            IdentityError::BadInput(format!("no client `{client_id}`"))
        }
        other => other.into(),
    }
}

/// A client as one JSON object: never the secret or its hash. With the
/// secret when it was just made.
pub fn client_json(c: &ServiceClient, secret: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "client_id": c.client_id,
        "name": c.name,
        "scopes": c.scopes,
        "roles": c.roles,
        "disabled": c.disabled,
        "created_at": c.created_at,
        "last_used_at": c.last_used_at,
    });
    if let (Some(secret), Some(map)) = (secret, v.as_object_mut()) {
        map.insert("client_secret".into(), secret.into());
    }
    v
}
