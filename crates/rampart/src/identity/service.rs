//! The identity service: users, password logins, issued tokens and refresh
//! rotation, over the stores of [`crate::store::identity`].
//!
//! - **Signing keys**: see [`super::keys`] (generated and sealed, from a file,
//!   or HS256; rotated with `rampart keys rotate`).
//! - **Logins** verify on the bounded [`HashPool`]; an unknown user is verified
//!   against a dummy hash, so that it takes as long and answers the same as a
//!   wrong password. Old-format hashes are replaced on success.
//! - **Refresh tokens** are opaque (`rt_` + 32 random bytes, base64url), stored
//!   hashed. A successor is derived as HMAC(secret, presented token), so that a
//!   refresh repeated within the grace window gets the same successor (see
//!   [`crate::store::identity::refresh`]); reuse after it revokes the family.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use rampart_core::config::auth::IssuerSettings;
use rampart_core::config::identity::IdentitySettings;
use rampart_core::config::secret::Secret;
use rampart_core::password::{normalize, PasswordError, PolicyViolation};
use rampart_core::token::{issue, Claims, Verifier};
use ring::rand::{SecureRandom, SystemRandom};

use super::hasher::{HashError, HashPool};
use super::keys::{derive, Keys};
use super::notify::Notifier;
use super::revoke::Revocations;
use crate::observe::Metrics;
use crate::store::identity::{
    NewRefreshToken, NewUser, RefreshTokenStore, RotateOutcome, ServiceClientStore, StoreError, Successor, TokenHash,
    User, UserStore,
};
use crate::store::Database;

/// What a successful login or refresh hands out.
#[derive(Clone, Debug)]
pub struct IssuedTokens {
    pub access_token: String,
    pub expires_in: u64,
    /// `None` for the `client_credentials` grant (RFC 6749 §4.4.3).
    pub refresh_token: Option<String>,
    /// The granted scopes, when they are to be named in the response.
    pub scope: Option<String>,
    /// Whom the tokens are for (user id or client id), for the audit log.
    pub subject: String,
}

/// Why a login, refresh or registration failed. The HTTP layer answers the
/// `InvalidGrant` cases all alike.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid credentials")]
    InvalidGrant { reason: &'static str, user_id: Option<String> },
    /// Client authentication failed: unknown client, wrong secret or a
    /// disabled client, all answered alike. `client_id` names a known client.
    #[error("invalid client")]
    InvalidClient { reason: &'static str, client_id: Option<String> },
    /// The requested scope is malformed or more than the client may have.
    #[error("invalid scope")]
    InvalidScope { client_id: String },
    #[error("the password does not meet the policy")]
    WeakPassword(Vec<PolicyViolation>),
    #[error("{0} is taken")]
    Taken(&'static str),
    #[error("{0}")]
    BadInput(String),
    #[error("too many logins in progress")]
    Busy,
    /// The password was right, and a second factor is due: `mfa_token`
    /// (see [`super::mfa`]) carries the login to the second step.
    #[error("a second factor is required")]
    MfaRequired { user_id: String, mfa_token: String, methods: Vec<&'static str> },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<HashError> for IdentityError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy(_) => Self::Busy,
            other => Self::Internal(other.into()),
        }
    }
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field } => Self::Taken(field),
            StoreError::TooLong { .. } | StoreError::NulByte { .. } | StoreError::Invalid { .. } => {
                Self::BadInput(e.to_string())
            }
            other => Self::Internal(other.into()),
        }
    }
}

pub struct IdentityService {
    pub settings: Arc<IdentitySettings>,
    pub(super) db: Database,
    pub(super) hasher: Arc<HashPool>,
    keys: Arc<Keys>,
    refresh_key: ring::hmac::Key,
    /// A hash of a random password, verified for unknown users.
    dummy_hash: String,
    /// Access tokens revoked before they expire.
    pub revocations: Arc<Revocations>,
    /// Delivers reset tokens; `None` when `[identity.reset]` is off.
    pub(super) notifier: Option<Arc<dyn Notifier>>,
    /// Reset requests being handled in the background (bounded, see
    /// [`super::reset`]).
    pub(super) reset_jobs: Arc<tokio::sync::Semaphore>,
    pub(super) metrics: Arc<Metrics>,
    /// The passkey relying party; `None` when `[identity.webauthn]` is off.
    pub(super) webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// API keys (`[identity.api_keys]`); `None` when they are off.
    pub api_keys: Option<Arc<super::api_keys::ApiKeys>>,
    /// External OpenID Connect logins; `None` when no provider is configured.
    pub(super) oidc: Option<Arc<super::oidc::ExternalLogins>>,
    /// Browser sessions (`[identity.sessions]`); `None` when they are off.
    pub sessions: Option<Arc<super::sessions::Sessions>>,
    /// Signed requests (`[identity.signatures]`); `None` when they are off.
    pub signatures: Option<Arc<super::signatures::Signatures>>,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) fn random_token(prefix: &str) -> anyhow::Result<String> {
    random_bytes_b64::<32>(prefix)
}

/// `prefix` and `N` random bytes, base64url without padding.
pub(super) fn random_bytes_b64<const N: usize>(prefix: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

impl IdentityService {
    /// Opens the service on `db`: loads the signing keys (making the first
    /// one on first start) and the revocations in force.
    /// `notifier` delivers password-reset tokens; without one, reset is off
    /// whatever the settings say.
    pub async fn start(
        settings: Arc<IdentitySettings>,
        db: Database,
        notifier: Option<Arc<dyn Notifier>>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        let secret = settings.secret_key.expose();
        let keys = Keys::start(settings.clone(), db.clone(), now_ms()).await?;
        let workers = match settings.hash_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let hasher = HashPool::new(workers, settings.hash_queue, settings.argon2);
        let dummy_hash = hasher.hash(random_token("")?).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let refresh_key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(secret, "rampart refresh successor v1"));
        let revocations = Revocations::load(db.clone(), settings.revocable_token_life(), now_ms())
            .await
            .context("loading token revocations")?;
        let reset_jobs = Arc::new(tokio::sync::Semaphore::new(super::reset::MAX_RESET_JOBS));
        let webauthn = settings.webauthn.as_ref().map(super::passkeys::relying_party).transpose()?;
        let api_keys = settings
            .api_keys
            .enabled
            .then(|| super::api_keys::ApiKeys::new(settings.api_keys.clone(), db.clone(), now_ms()));
        let oidc = super::oidc::ExternalLogins::new(&settings)?;
        let sessions =
            settings.sessions.clone().map(|s| Arc::new(super::sessions::Sessions::new(s, db.clone(), secret)));
        let signatures = if settings.signatures.enabled {
            let started = super::signatures::Signatures::start(&settings, db.clone()).await;
            Some(started.context("reading request-signing keys")?)
        } else {
            None
        };
        Ok(Arc::new(Self {
            settings,
            db,
            hasher,
            keys,
            refresh_key,
            dummy_hash,
            revocations,
            notifier,
            reset_jobs,
            metrics,
            webauthn,
            api_keys,
            oidc,
            sessions,
            signatures,
        }))
    }

    /// Starts the background work: revocation polling (and its Redis
    /// listener) and the signing-key reload.
    pub fn spawn_sync(&self, redis: Option<crate::limit::redis::RedisStore>) {
        self.revocations.spawn_sync(redis);
        self.keys.spawn_reload();
        if let Some(api_keys) = &self.api_keys {
            api_keys.spawn_sync();
        }
        if let Some(sessions) = &self.sessions {
            sessions.spawn_purge();
        }
        if let Some(signatures) = &self.signatures {
            signatures.spawn_sync();
        }
    }

    /// The verifier of our own tokens as of now (keys rotate).
    pub fn verifier(&self) -> Arc<Verifier> {
        self.keys.current().verifier.clone()
    }

    /// The address of [`Self::verifier`], to compare with a cached token's
    /// (no reference count taken).
    pub fn verifier_ptr(&self) -> *const Verifier {
        self.keys.verifier_ptr()
    }

    /// Our own issuer, for the bearer-token layer (which asks [`Self::verifier`]
    /// for the keys of the moment rather than this snapshot).
    pub fn issuer(&self) -> IssuerSettings {
        IssuerSettings { issuer: self.settings.issuer.clone(), verifier: self.verifier(), jwks: None }
    }

    /// The public keys, as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.keys.current().keys.jwks()
    }

    /// The signing keys, for reloads on an unknown `kid`.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    /// Creates a user with a password that passes the policy.
    pub async fn register(&self, username: &str, email: Option<&str>, password: &str) -> Result<User, IdentityError> {
        create_user(&self.settings, &self.hasher, &self.db, username, email, password, &[]).await
    }

    /// The password grant: verifies the user's password and issues tokens.
    pub async fn login(&self, username: &str, password: &str) -> Result<IssuedTokens, IdentityError> {
        let user = self.password_login(username, password).await?;
        self.issue_login_tokens(&user, now_ms()).await
    }

    /// A password login without tokens (a browser session is made of it):
    /// the user whose password this is, if they may log in now and need no
    /// second factor; [`IdentityError::MfaRequired`] when they do.
    pub async fn password_login(&self, username: &str, password: &str) -> Result<User, IdentityError> {
        let password = normalize(password);
        let user = self.db.user_by_username(username).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.as_ref()).map(|h| h.expose().to_string());
        let id = user.as_ref().map(|u| u.id.clone());
        // Unknown users, and users without a password, cost one verification too.
        let target = stored.clone().unwrap_or_else(|| self.dummy_hash.clone());
        let verified = match self.hasher.verify(password.clone(), target).await {
            Ok(v) => v,
            Err(HashError::Busy(_)) => return Err(IdentityError::Busy),
            Err(HashError::Password(PasswordError::Mismatch)) => {
                // A user without a password (one who signs in through an
                // external provider or a passkey) is refused like a wrong
                // password, but the guess does not count towards a lockout:
                // no password can succeed, and a lockout would only shut the
                // user out of their other ways to sign in.
                let reason = if user.is_some() && stored.is_none() { "no_password" } else { "bad_credentials" };
                return Err(IdentityError::InvalidGrant { reason, user_id: id });
            }
            Err(e) => {
                tracing::warn!(error = %e, "a stored password hash could not be checked");
                return Err(IdentityError::InvalidGrant { reason: "bad_hash", user_id: id });
            }
        };
        let (Some(user), Some(old)) = (user, stored) else {
            return Err(IdentityError::InvalidGrant { reason: "bad_credentials", user_id: id });
        };
        if verified.needs_rehash {
            let new = Secret::new(self.hasher.hash(password).await?);
            let old = Secret::new(old);
            self.db.rehash_password(&user.id, &old, &new, now_ms()).await?;
        }
        let now = now_ms();
        if user.disabled || user.is_locked(now) {
            return Err(IdentityError::InvalidGrant { reason: "locked", user_id: Some(user.id) });
        }
        let methods = self.mfa_methods(&user.id).await?;
        if !methods.is_empty() {
            let mfa_token = self.mfa_token(&user, now)?;
            return Err(IdentityError::MfaRequired { user_id: user.id, mfa_token, methods });
        }
        Ok(user)
    }

    /// Records a completed login (a session's: tokens record their own).
    pub async fn record_login(&self, user_id: &str) -> Result<(), IdentityError> {
        Ok(self.db.record_login(user_id, now_ms()).await?)
    }

    /// The tokens of a completed login: records it, starts a refresh-token
    /// family and signs an access token.
    pub(super) async fn issue_login_tokens(&self, user: &User, now: u64) -> Result<IssuedTokens, IdentityError> {
        self.db.record_login(&user.id, now).await?;
        let refresh = random_token("rt_")?;
        self.db
            .insert_refresh_token(&NewRefreshToken {
                token_hash: TokenHash::of(&refresh),
                user_id: user.id.clone(),
                client_id: None,
                family_id: None,
                created_at: now,
                expires_at: now.saturating_add(ms(self.settings.refresh_ttl)),
            })
            .await?;
        Ok(IssuedTokens {
            access_token: self.access_token(user, now, true)?,
            expires_in: self.settings.access_ttl.as_secs(),
            refresh_token: Some(refresh),
            scope: None,
            subject: user.id.clone(),
        })
    }

    /// The refresh grant: rotates the refresh token and issues a new access token.
    pub async fn refresh(&self, presented: &str) -> Result<IssuedTokens, IdentityError> {
        let now = now_ms();
        let successor = self.successor_of(presented);
        let outcome = self
            .db
            .rotate_refresh_token(
                &TokenHash::of(presented),
                now,
                ms(self.settings.refresh_grace),
                &Successor {
                    token_hash: TokenHash::of(&successor),
                    expires_at: now.saturating_add(ms(self.settings.refresh_ttl)),
                },
            )
            .await?;
        let user_id = match outcome {
            RotateOutcome::Rotated { user_id, .. } | RotateOutcome::Grace { user_id, .. } => user_id,
            RotateOutcome::Unknown | RotateOutcome::Invalid => {
                return Err(IdentityError::InvalidGrant { reason: "bad_refresh_token", user_id: None })
            }
            RotateOutcome::Reused { user_id, .. } => {
                return Err(IdentityError::InvalidGrant { reason: "refresh_token_reused", user_id: Some(user_id) })
            }
        };
        let user = self
            .db
            .user_by_id(&user_id)
            .await?
            // An automatic lockout stops new logins, not what was issued
            // (anyone who knows the name can set one off); an
            // administrator's lock ends both.
            .filter(|u| !u.disabled && !u.is_admin_locked(now))
            .ok_or(IdentityError::InvalidGrant { reason: "locked", user_id: Some(user_id) })?;
        Ok(IssuedTokens {
            access_token: self.access_token(&user, now, false)?,
            expires_in: self.settings.access_ttl.as_secs(),
            refresh_token: Some(successor),
            scope: None,
            subject: user.id,
        })
    }

    /// The `client_credentials` grant (RFC 6749 §4.4): authenticates the
    /// client by its secret and issues an access token naming the client as
    /// `sub`, with the requested scopes (all of the client's when `scope` is
    /// absent or empty) and its roles. No refresh token (§4.4.3).
    ///
    /// An unknown client, a wrong secret and a disabled client fail alike
    /// ([`IdentityError::InvalidClient`]); `reason` tells them apart for the
    /// audit log only.
    pub async fn client_credentials(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<IssuedTokens, IdentityError> {
        let client = self.db.client_by_id(client_id).await?;
        let known_id = client.as_ref().map(|c| c.client_id.clone());
        if !super::clients::secret_matches(client.as_ref().map(|c| &c.secret_hash), secret) {
            let reason = if client.is_some() { "bad_client_secret" } else { "unknown_client" };
            return Err(IdentityError::InvalidClient { reason, client_id: known_id });
        }
        let Some(client) = client else {
            return Err(IdentityError::InvalidClient { reason: "unknown_client", client_id: None });
        };
        if client.disabled {
            return Err(IdentityError::InvalidClient { reason: "client_disabled", client_id: known_id });
        }
        let granted = match scope.map(str::trim).filter(|s| !s.is_empty()) {
            None => client.scopes.clone(),
            Some(requested) => {
                let mut wanted: Vec<String> = Vec::new();
                for token in requested.split(' ').filter(|t| !t.is_empty()) {
                    if !client.scopes.iter().any(|s| s == token) {
                        return Err(IdentityError::InvalidScope { client_id: client.client_id });
                    }
                    if !wanted.iter().any(|w| w == token) {
                        wanted.push(token.to_owned());
                    }
                }
                wanted
            }
        };
        let now = now_ms();
        self.db.record_client_use(&client.client_id, now).await?;
        let s = &self.settings;
        let mut claims = Claims::new(&s.issuer, &client.client_id, &s.audience, now / 1000, s.access_ttl.as_secs());
        claims.jti = Some(uuid::Uuid::now_v7().to_string());
        claims.roles = client.roles.clone();
        claims.scopes = granted;
        let scope = (!claims.scopes.is_empty()).then(|| claims.scopes.join(" "));
        let access_token = issue(&self.keys.current().signer, &claims)
            .map_err(|e| IdentityError::Internal(anyhow::anyhow!("signing: {e}")))?;
        let subject = client.client_id;
        Ok(IssuedTokens { access_token, expires_in: s.access_ttl.as_secs(), refresh_token: None, scope, subject })
    }

    /// The user a bearer token of ours names, if the token is valid now, and
    /// how long ago (ms) the token's login was, if it says (`auth_time`).
    pub async fn user_of_token(&self, token: &str) -> Result<Option<(User, Option<u64>)>, IdentityError> {
        let now_ms = now_ms();
        let Ok(claims) = self.verifier().verify(token, now_ms / 1000) else { return Ok(None) };
        if self.revocations.is_revoked(&claims.sub, claims.jti.as_deref(), claims.ver) {
            return Ok(None);
        }
        let user = self.db.user_by_id(&claims.sub).await?;
        let ago = claims.auth_time.map(|t| now_ms.saturating_sub(t.saturating_mul(1000)));
        // A token from before a password change (or "log out everywhere") is spent.
        Ok(user.filter(|u| u.token_version == claims.ver && !u.disabled).map(|u| (u, ago)))
    }

    /// The roles of `subject` (a user, or a service client) as stored now;
    /// `None` for one who no longer exists or is disabled (routes with
    /// `fresh_roles`).
    pub async fn current_roles(&self, subject: &str) -> Result<Option<Vec<String>>, IdentityError> {
        if let Some(user) = self.db.user_by_id(subject).await? {
            return Ok((!user.disabled).then_some(user.roles));
        }
        Ok(self.db.client_by_id(subject).await?.filter(|c| !c.disabled).map(|c| c.roles))
    }

    /// Changes the password: checks the current one (see
    /// [`Self::reprove_password`]) and the policy, stores the new hash, raises
    /// the token version and revokes every refresh token, so that every other
    /// session ends.
    pub async fn change_password(&self, user: &User, current: &str, new: &str) -> Result<(), IdentityError> {
        self.reprove_password(user, current).await?;
        let hash = self.hash_new_password(user, new).await?;
        self.replace_password(&user.id, &hash).await
    }

    /// Checks the password a signed-in user proves themselves with again
    /// (password change, erasure, second-factor changes) by a login's rules,
    /// so that these endpoints are no way around the lockout: a wrong
    /// password is [`IdentityError::InvalidGrant`] `bad_credentials` (which
    /// counts towards the lockout), a user without one `no_password` (which
    /// does not: no guess can succeed), and while the account is locked even
    /// the right password is refused, as `locked`.
    pub async fn reprove_password(&self, user: &User, password: &str) -> Result<(), IdentityError> {
        let refused = |reason| Err(IdentityError::InvalidGrant { reason, user_id: Some(user.id.clone()) });
        if !self.password_matches(user, password).await? {
            return refused(if user.password_hash.is_some() { "bad_credentials" } else { "no_password" });
        }
        if user.is_locked(now_ms()) {
            return refused("locked");
        }
        Ok(())
    }

    /// Whether `password` is the user's (false for users without one; they
    /// cost one verification too).
    pub(super) async fn password_matches(&self, user: &User, password: &str) -> Result<bool, IdentityError> {
        let stored = user.password_hash.as_ref().map(|h| h.expose().to_string());
        let target = stored.unwrap_or_else(|| self.dummy_hash.clone());
        match self.hasher.verify(normalize(password), target).await {
            Ok(_) => Ok(user.password_hash.is_some()),
            Err(HashError::Password(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a new password against the policy (with the user's name and
    /// address as context) and hashes it.
    pub(super) async fn hash_new_password(&self, user: &User, new: &str) -> Result<Secret, IdentityError> {
        let new = normalize(new);
        let mut inputs = vec![user.username.as_str()];
        inputs.extend(user.email.as_deref());
        self.settings.policy.check(&new, &inputs).map_err(IdentityError::WeakPassword)?;
        Ok(Secret::new(self.hasher.hash(new).await?))
    }

    /// Stores a new password hash and ends every session of the user: the
    /// token version rises (access tokens are refused on every route and
    /// instance, see [`super::revoke`]) and all refresh tokens are revoked.
    pub(super) async fn replace_password(&self, user_id: &str, hash: &Secret) -> Result<(), IdentityError> {
        let now = now_ms();
        let version = self.db.set_password_hash(user_id, Some(hash), true, now).await?;
        self.db.revoke_user_refresh_tokens(user_id, now).await?;
        self.revocations.user_version_raised(user_id, version, now).await;
        self.end_sessions(user_id).await;
        Ok(())
    }

    /// Logout of one access token: its `jti` is refused until it expires.
    /// A token that is not ours, or not valid now, is ignored.
    pub async fn revoke_access_token(&self, token: &str) -> Result<(), IdentityError> {
        let now = now_ms();
        let Ok(claims) = self.verifier().verify(token, now / 1000) else { return Ok(()) };
        if let Some(jti) = &claims.jti {
            self.revocations.revoke_token(jti, claims.exp, now).await?;
        }
        Ok(())
    }

    /// "Log out everywhere": raises the user's token version, so every access
    /// token issued so far is refused, and ends every refresh-token family.
    pub async fn log_out_everywhere(&self, user_id: &str) -> Result<(), IdentityError> {
        let now = now_ms();
        let version = self.db.bump_token_version(user_id, now).await?;
        self.db.revoke_user_refresh_tokens(user_id, now).await?;
        self.revocations.user_version_raised(user_id, version, now).await;
        self.end_sessions(user_id).await;
        Ok(())
    }

    /// Deletes the user's browser sessions (their raised token version
    /// refuses them already; this keeps session lists true).
    pub(super) async fn end_sessions(&self, user_id: &str) {
        if let Some(sessions) = &self.sessions {
            if let Err(e) = sessions.end_all(user_id, None).await {
                tracing::warn!(error = %e, "sessions of a user could not be deleted; their token version refuses them");
            }
        }
    }

    /// Locks the account for the configured lockout (after too many failures).
    /// A longer lock already in force (an administrator's) stays: failed
    /// guesses only ever extend a lock. Tokens already issued stay valid: the
    /// lockout stops password guessing, and whoever holds a token has already
    /// proved the password.
    pub async fn lock_out(&self, user_id: &str) -> Result<(), IdentityError> {
        let now = now_ms();
        Ok(self.db.extend_lock(user_id, now.saturating_add(ms(self.settings.lockout)), now).await?)
    }

    /// Ends the refresh token's family (logout). Unknown tokens are ignored.
    pub async fn logout(&self, presented: &str) -> Result<(), IdentityError> {
        if let Some(token) = self.db.refresh_token(&TokenHash::of(presented)).await? {
            self.db.revoke_refresh_family(&token.family_id, now_ms()).await?;
        }
        Ok(())
    }

    fn successor_of(&self, presented: &str) -> String {
        let tag = ring::hmac::sign(&self.refresh_key, presented.as_bytes());
        format!("rt_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// A short-lived token of `who` for upstreams that verify the caller's
    /// identity (`[auth.headers] internal_jwt`), signed with the current key.
    pub fn internal_token(
        &self,
        who: &rampart_core::principal::Principal,
        audience: &str,
        ttl_secs: u64,
        now: u64,
    ) -> Option<String> {
        let mut claims = Claims::new(&self.settings.issuer, &who.subject, audience, now, ttl_secs);
        claims.roles = who.roles.clone();
        claims.scopes = who.scopes.clone();
        claims.tier = who.tier.clone();
        claims.idp = who.issuer.clone();
        match issue(&self.keys.current().signer, &claims) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the internal identity token");
                None
            }
        }
    }

    /// A short-lived access token (no refresh token) for a browser
    /// session's user, with the session's view of their roles and tier, and
    /// the session's start (`signed_in_at`, unix seconds) as `auth_time`.
    pub fn session_access_token(
        &self,
        user_id: &str,
        roles: &[String],
        tier: Option<&str>,
        token_version: u32,
        ttl_secs: u64,
        signed_in_at: u64,
    ) -> Result<String, IdentityError> {
        let s = &self.settings;
        let mut claims = Claims::new(&s.issuer, user_id, &s.audience, now_ms() / 1000, ttl_secs);
        // The session's sign-in is the token's.
        claims.auth_time = Some(signed_in_at);
        claims.jti = Some(uuid::Uuid::now_v7().to_string());
        claims.roles = roles.to_vec();
        claims.tier = tier.map(str::to_owned);
        claims.ver = token_version;
        issue(&self.keys.current().signer, &claims)
            .map_err(|e| IdentityError::Internal(anyhow::anyhow!("signing: {e}")))
    }

    /// An access token for `user`; `signed_in` for a login's (it then
    /// carries `auth_time`: see [`Claims::auth_time`]).
    pub(super) fn access_token(&self, user: &User, now_ms: u64, signed_in: bool) -> Result<String, IdentityError> {
        let s = &self.settings;
        let mut claims = Claims::new(&s.issuer, &user.id, &s.audience, now_ms / 1000, s.access_ttl.as_secs());
        claims.auth_time = signed_in.then_some(now_ms / 1000);
        claims.jti = Some(uuid::Uuid::now_v7().to_string());
        claims.roles = user.roles.clone();
        claims.tier = user.tier.clone();
        claims.ver = user.token_version;
        issue(&self.keys.current().signer, &claims)
            .map_err(|e| IdentityError::Internal(anyhow::anyhow!("signing: {e}")))
    }
}

/// Creates a user whose password passes the policy (registration and
/// `rampart user add` alike).
pub(super) async fn create_user(
    settings: &IdentitySettings,
    hasher: &HashPool,
    db: &Database,
    username: &str,
    email: Option<&str>,
    password: &str,
    roles: &[String],
) -> Result<User, IdentityError> {
    if username.trim().is_empty() {
        return Err(IdentityError::BadInput("username must not be empty".into()));
    }
    let password = normalize(password);
    let mut inputs = vec![username];
    inputs.extend(email);
    settings.policy.check(&password, &inputs).map_err(IdentityError::WeakPassword)?;
    let hash = hasher.hash(password).await?;
    let mut new = NewUser::named(username);
    new.email = email.map(str::to_owned);
    new.password_hash = Some(Secret::new(hash));
    new.roles = roles.to_vec();
    Ok(db.create_user(&new, now_ms()).await?)
}

pub(super) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
