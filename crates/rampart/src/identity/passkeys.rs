//! Passkeys (WebAuthn, with webauthn-rs): registration, listing and removal,
//! passwordless login, and a check of one assertion for use as a second
//! factor ([`IdentityService::passkey_challenge_for`],
//! [`IdentityService::passkey_verify_for`]).
//!
//! Every ceremony is two requests. The first stores webauthn-rs's state in
//! the database (see [`crate::store::identity::passkeys`]) under a random
//! `challenge_id` and answers the browser's options; the second takes that
//! state back, once, and only before it expires (`challenge_ttl`).
//!
//! - **Counters.** A passkey's stored credential is updated after each use.
//!   An authenticator whose signature counter does not exceed the stored
//!   one (a cloned key, or a replay of an old copy) is refused
//!   (webauthn-rs's `CredentialPossibleCompromise`), audited with the reason
//!   `counter_regression`. Synced passkeys that always report 0 are not
//!   affected.
//! - **No enumeration.** A login started for an unknown username, or for a
//!   user without passkeys, gets a decoy: real-looking options whose
//!   credential ids webauthn-rs's `WebauthnFakeCredentialGenerator` derives
//!   from the username with a key derived from `secret_key` (so the same name
//!   always gets the same ids), and a stored decoy challenge that fails at
//!   finish like a wrong key. Not hidden: decoys list credential ids without
//!   `transports`, which real ones may carry.
//! - **Accounts.** Locked and disabled users cannot log in with a passkey;
//!   failures are reported with the user's id so that the HTTP layer counts
//!   them towards the lockout like wrong passwords.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use serde_json::Value;
use webauthn_rs::fake::{FakePasskeyDistribution, WebauthnFakeCredentialGenerator};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid,
    WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use super::keys::derive;
use super::service::{ms, now_ms, random_bytes_b64, IdentityError, IdentityService, IssuedTokens};
use crate::store::identity::passkeys::{ChallengeRefused, MAX_PASSKEY_NAME_BYTES};
use crate::store::identity::{
    ChallengePurpose, NewChallenge, PasskeyInfo, PasskeyRecord, PasskeyStore, StoreError, User, UserStore,
};
use rampart_core::config::webauthn::WebauthnSettings;

/// What a started ceremony hands to the browser.
#[derive(Clone, Debug)]
pub struct PasskeyChallenge {
    pub challenge_id: String,
    /// `{"publicKey": …}`, for `navigator.credentials.create()` or `.get()`.
    pub options: Value,
}

/// Why a passkey operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// `[identity.webauthn]` is not configured.
    #[error("passkeys are not enabled")]
    Disabled,
    /// The assertion or attestation is not accepted: unknown, spent or
    /// expired challenge, a wrong signature or origin, a removed passkey, a
    /// counter regression, a locked account. `reason` is for the audit log.
    #[error("the passkey was not accepted")]
    Refused { reason: &'static str, user_id: Option<String> },
    /// Malformed input (a credential that does not parse, a bad name).
    #[error("{0}")]
    BadInput(String),
    /// The account holds `max_passkeys`, or has too many ceremonies pending.
    #[error("{0}")]
    Limit(&'static str),
    /// Too many ceremonies pending in all.
    #[error("too many passkey ceremonies in progress")]
    Busy,
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<anyhow::Error> for PasskeyError {
    fn from(e: anyhow::Error) -> Self {
        Self::Identity(IdentityError::Internal(e))
    }
}

impl From<StoreError> for PasskeyError {
    fn from(e: StoreError) -> Self {
        Self::Identity(e.into())
    }
}

fn internal(e: impl std::fmt::Display, what: &str) -> PasskeyError {
    PasskeyError::Identity(IdentityError::Internal(anyhow::anyhow!("{what}: {e}")))
}

/// The relying party of `[identity.webauthn]`.
pub(super) fn relying_party(s: &WebauthnSettings) -> anyhow::Result<Arc<Webauthn>> {
    let origin = Url::parse(&s.rp_origin)?;
    let webauthn = WebauthnBuilder::new(&s.rp_id, &origin)?.rp_name(&s.rp_name).timeout(s.challenge_ttl).build()?;
    Ok(Arc::new(webauthn))
}

/// The WebAuthn user handle of a user: its id when that is a UUID (ours
/// are), else one derived from it.
fn user_handle(user_id: &str) -> Uuid {
    Uuid::parse_str(user_id).unwrap_or_else(|_| {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(user_id.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<String, PasskeyError> {
    serde_json::to_string(v).map_err(|e| internal(e, what))
}

/// A passkey name: trimmed, 1 to 64 bytes, printable. Absent: "Passkey".
fn check_name(name: Option<&str>) -> Result<String, PasskeyError> {
    let name = name.map(str::trim).unwrap_or("Passkey");
    if name.is_empty() || name.len() > MAX_PASSKEY_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(PasskeyError::BadInput(format!(
            "name must be 1 to {MAX_PASSKEY_NAME_BYTES} bytes of printable text"
        )));
    }
    Ok(name.to_owned())
}

impl IdentityService {
    fn relying(&self) -> Result<(&Webauthn, &WebauthnSettings), PasskeyError> {
        match (&self.webauthn, &self.settings.webauthn) {
            (Some(w), Some(s)) => Ok((w, s)),
            _ => Err(PasskeyError::Disabled),
        }
    }

    /// Whether passkeys are configured.
    pub fn passkeys_enabled(&self) -> bool {
        self.relying().is_ok()
    }

    /// Stores a ceremony's state; `client` for logins (see
    /// [`NewChallenge::client`]).
    async fn store_challenge(
        &self,
        user_id: Option<&str>,
        client: Option<IpAddr>,
        purpose: ChallengePurpose,
        state: String,
    ) -> Result<String, PasskeyError> {
        let (_, s) = self.relying()?;
        let now = now_ms();
        let id = random_bytes_b64::<24>("wc_")?;
        let new = NewChallenge {
            id: id.clone(),
            user_id: user_id.map(str::to_owned),
            client: client.map(|ip| ip.to_string()),
            purpose,
            state,
            created_at: now,
            expires_at: now.saturating_add(ms(s.challenge_ttl)),
        };
        match self.db.insert_challenge(&new).await? {
            Ok(()) => Ok(id),
            Err(ChallengeRefused::TooManyForUser) => {
                Err(PasskeyError::Limit("too many passkey ceremonies in progress for this account"))
            }
            Err(ChallengeRefused::TooMany) => Err(PasskeyError::Busy),
        }
    }

    /// Starts registering a passkey for `user` (signed in). Passkeys the
    /// user already has are excluded, so one authenticator is not added twice.
    pub async fn passkey_register_start(&self, user: &User) -> Result<PasskeyChallenge, PasskeyError> {
        let (webauthn, s) = self.relying()?;
        let existing = self.db.passkeys_of(&user.id).await?;
        if existing.len() >= s.max_passkeys as usize {
            return Err(PasskeyError::Limit("the account holds the most passkeys allowed"));
        }
        let exclude = existing
            .iter()
            .filter_map(|r| serde_json::from_str::<Passkey>(&r.credential).ok())
            .map(|p| p.cred_id().clone())
            .collect::<Vec<_>>();
        let (options, state) = webauthn
            .start_passkey_registration(user_handle(&user.id), &user.username, &user.username, Some(exclude))
            .map_err(|e| internal(e, "starting a passkey registration"))?;
        let state = to_json(&state, "registration state")?;
        let challenge_id = self.store_challenge(Some(&user.id), None, ChallengePurpose::Register, state).await?;
        Ok(PasskeyChallenge {
            challenge_id,
            options: serde_json::to_value(&options).map_err(|e| internal(e, "options"))?,
        })
    }

    /// Finishes a registration started by the same user; returns the new passkey.
    pub async fn passkey_register_finish(
        &self,
        user: &User,
        challenge_id: &str,
        name: Option<&str>,
        credential: Value,
    ) -> Result<PasskeyInfo, PasskeyError> {
        let (webauthn, s) = self.relying()?;
        let name = check_name(name)?;
        let credential: RegisterPublicKeyCredential = serde_json::from_value(credential)
            .map_err(|_| PasskeyError::BadInput("credential is not a WebAuthn registration response".into()))?;
        let now = now_ms();
        let refused = |reason| PasskeyError::Refused { reason, user_id: Some(user.id.clone()) };
        let taken = self.db.take_challenge(challenge_id, ChallengePurpose::Register, now).await?;
        let Some(taken) = taken.filter(|t| t.user_id.as_deref() == Some(user.id.as_str())) else {
            return Err(refused("unknown_challenge"));
        };
        let state: PasskeyRegistration =
            serde_json::from_str(&taken.state).map_err(|e| internal(e, "stored registration state"))?;
        let passkey = webauthn.finish_passkey_registration(&credential, &state).map_err(|e| {
            tracing::debug!(error = %e, "passkey registration refused");
            refused("bad_attestation")
        })?;
        let record = PasskeyRecord {
            id: crate::store::identity::new_id(),
            user_id: user.id.clone(),
            name,
            credential: to_json(&passkey, "passkey")?,
            cred_id: b64(passkey.cred_id().as_slice()),
            created_at: now,
            last_used_at: None,
        };
        match self.db.insert_passkey(&record, s.max_passkeys).await {
            Ok(true) => Ok(PasskeyInfo::from(&record)),
            Ok(false) => Err(PasskeyError::Limit("the account holds the most passkeys allowed")),
            Err(StoreError::Conflict { .. }) => Err(refused("credential_taken")),
            Err(e) => Err(e.into()),
        }
    }

    /// The user's passkeys, without key material.
    pub async fn passkeys(&self, user_id: &str) -> Result<Vec<PasskeyInfo>, PasskeyError> {
        self.relying()?;
        Ok(self.db.passkeys_of(user_id).await?.iter().map(PasskeyInfo::from).collect())
    }

    /// Removes the user's passkey `id`; false when the user has no such passkey.
    pub async fn passkey_remove(&self, user_id: &str, id: &str) -> Result<bool, PasskeyError> {
        self.relying()?;
        Ok(self.db.delete_passkey(user_id, id).await?)
    }

    /// Starts a passwordless login for `username` (a decoy for an unknown
    /// name or a user without passkeys, see the module docs). `client` is
    /// who asks, as [`rampart_core::client_ip::ClientGrouping::key`] gives
    /// it: pending logins are bounded per client, not per user (see
    /// [`crate::store::identity::passkeys::MAX_PENDING_PER_CLIENT`]).
    pub async fn passkey_login_start(
        &self,
        username: &str,
        client: Option<IpAddr>,
    ) -> Result<PasskeyChallenge, PasskeyError> {
        let (_, s) = self.relying()?;
        let user = self.db.user_by_username(username).await?;
        if let Some(user) = &user {
            if let Some(challenge) = self.assertion_challenge(&user.id, client, ChallengePurpose::Login).await? {
                return Ok(challenge);
            }
        }
        // The decoy: the same shape as webauthn-rs's options, fake credential ids.
        let key = derive(self.settings.secret_key.expose(), "rampart passkey decoy v1");
        let fakes = WebauthnFakeCredentialGenerator::<FakePasskeyDistribution>::new(&key)
            .and_then(|g| g.generate(crate::store::identity::username_key(username).as_bytes()))
            .map_err(|e| internal(e, "decoy credentials"))?;
        let mut challenge = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut challenge)
            .map_err(|_| internal("failed", "the system random generator"))?;
        let allow: Vec<Value> =
            fakes.iter().map(|id| serde_json::json!({"type": "public-key", "id": b64(id.as_slice())})).collect();
        let options = serde_json::json!({"publicKey": {
            "challenge": b64(&challenge),
            "timeout": ms(s.challenge_ttl),
            "rpId": s.rp_id,
            "allowCredentials": allow,
            "userVerification": "required",
        }});
        let challenge_id = self.store_challenge(None, client, ChallengePurpose::Login, "null".into()).await?;
        Ok(PasskeyChallenge { challenge_id, options })
    }

    /// An assertion challenge over the user's passkeys; `None` without passkeys.
    async fn assertion_challenge(
        &self,
        user_id: &str,
        client: Option<IpAddr>,
        purpose: ChallengePurpose,
    ) -> Result<Option<PasskeyChallenge>, PasskeyError> {
        let (webauthn, _) = self.relying()?;
        let passkeys: Vec<Passkey> = self
            .db
            .passkeys_of(user_id)
            .await?
            .iter()
            .filter_map(|r| serde_json::from_str(&r.credential).ok())
            .collect();
        if passkeys.is_empty() {
            return Ok(None);
        }
        let (options, state) =
            webauthn.start_passkey_authentication(&passkeys).map_err(|e| internal(e, "starting a passkey login"))?;
        let state = to_json(&state, "authentication state")?;
        let challenge_id = self.store_challenge(Some(user_id), client, purpose, state).await?;
        let options = serde_json::to_value(&options).map_err(|e| internal(e, "options"))?;
        Ok(Some(PasskeyChallenge { challenge_id, options }))
    }

    /// Checks an assertion against a challenge of `purpose` and updates the
    /// passkey's stored credential (counter, last use). Returns the user.
    async fn verify_assertion(
        &self,
        challenge_id: &str,
        purpose: ChallengePurpose,
        expected_user: Option<&str>,
        credential: Value,
    ) -> Result<User, PasskeyError> {
        let (webauthn, _) = self.relying()?;
        let credential: PublicKeyCredential = serde_json::from_value(credential)
            .map_err(|_| PasskeyError::BadInput("credential is not a WebAuthn assertion".into()))?;
        let now = now_ms();
        let refused =
            |reason, user_id: Option<&str>| PasskeyError::Refused { reason, user_id: user_id.map(str::to_owned) };
        let Some(taken) = self.db.take_challenge(challenge_id, purpose, now).await? else {
            return Err(refused("unknown_challenge", expected_user));
        };
        let Some(user_id) = taken.user_id else { return Err(refused("unknown_user", None)) };
        if expected_user.is_some_and(|u| u != user_id) {
            return Err(refused("unknown_challenge", expected_user));
        }
        let state: PasskeyAuthentication =
            serde_json::from_str(&taken.state).map_err(|e| internal(e, "stored authentication state"))?;
        let result = match webauthn.finish_passkey_authentication(&credential, &state) {
            Ok(r) => r,
            Err(WebauthnError::CredentialPossibleCompromise) => {
                tracing::warn!(user = %user_id, "a passkey's signature counter went backwards: a cloned authenticator?");
                return Err(refused("counter_regression", Some(&user_id)));
            }
            Err(e) => {
                tracing::debug!(error = %e, "passkey assertion refused");
                return Err(refused("bad_assertion", Some(&user_id)));
            }
        };
        // The passkey may have been removed since the ceremony started.
        let cred_id = b64(result.cred_id().as_slice());
        let records = self.db.passkeys_of(&user_id).await?;
        let Some(record) = records.into_iter().find(|r| r.cred_id == cred_id) else {
            return Err(refused("unknown_credential", Some(&user_id)));
        };
        let mut passkey: Passkey =
            serde_json::from_str(&record.credential).map_err(|e| internal(e, "stored passkey"))?;
        passkey.update_credential(&result);
        // Not stored when a login at the same moment stored a higher counter
        // first: that one is the newer state of the authenticator.
        self.db.record_passkey_use(&record.id, &to_json(&passkey, "passkey")?, result.counter(), now).await?;
        let user = self.db.user_by_id(&user_id).await?;
        match user {
            Some(u) if !u.disabled && !u.is_locked(now) => Ok(u),
            _ => Err(refused("locked", Some(&user_id))),
        }
    }

    /// Finishes a passwordless login: issues tokens as the password grant does.
    /// Returns the user's id with the tokens.
    pub async fn passkey_login_finish(
        &self,
        challenge_id: &str,
        credential: Value,
    ) -> Result<(String, IssuedTokens), PasskeyError> {
        let user = self.passkey_login(challenge_id, credential).await?;
        let tokens = self.issue_login_tokens(&user, now_ms()).await?;
        Ok((user.id, tokens))
    }

    /// A passwordless login without tokens (a browser session is made of it).
    pub async fn passkey_login(&self, challenge_id: &str, credential: Value) -> Result<User, PasskeyError> {
        self.verify_assertion(challenge_id, ChallengePurpose::Login, None, credential).await
    }

    /// Second factor, step one: a challenge over the user's passkeys.
    /// `Ok(None)` when the user has none.
    pub async fn passkey_challenge_for(&self, user_id: &str) -> Result<Option<PasskeyChallenge>, PasskeyError> {
        self.assertion_challenge(user_id, None, ChallengePurpose::Mfa).await
    }

    /// Second factor, step two: `Ok(())` when `credential` answers the
    /// challenge `challenge_id` made for `user_id` by
    /// [`Self::passkey_challenge_for`]. The challenge is spent either way.
    /// [`PasskeyError::Refused`] carries the reason for the audit log.
    pub async fn passkey_verify_for(
        &self,
        user_id: &str,
        challenge_id: &str,
        credential: Value,
    ) -> Result<(), PasskeyError> {
        self.verify_assertion(challenge_id, ChallengePurpose::Mfa, Some(user_id), credential).await.map(|_| ())
    }
}
