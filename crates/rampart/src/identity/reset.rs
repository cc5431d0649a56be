//! Password reset by a single-use, expiring token (`[identity.reset]`).
//!
//! - **Asking** (`POST {prefix}/password/forgot`): the HTTP layer answers 202 at
//!   once, alike for every account or none, and the work runs in a background
//!   job, so that neither the answer nor its timing tells whether the account
//!   exists. The job finds the account, counts the request against the
//!   per-account cap, stores a fresh token (`prt_` + 32 random bytes,
//!   base64url) as its SHA-256 hash and hands it to the [`Notifier`]. At most
//!   [`MAX_RESET_JOBS`] jobs run at once; requests beyond are dropped (and
//!   counted as failed notifications) rather than queued without bound.
//! - **Using** (`POST {prefix}/password/reset`): the new password is checked
//!   against the policy *before* the token is spent, so that a refused
//!   password leaves the token usable; then the token is consumed (which
//!   spends every other unused token of the user too) and the password
//!   replaced exactly as a password change does it: the token version rises
//!   and every refresh token is revoked.
//! - **Locks are kept.** A reset does not lift a lock: the one `locked_until`
//!   column holds both the automatic lockout after failed logins (which
//!   expires by itself) and an administrator's `rampart user lock`, and a
//!   reset must not undo the latter. Disabled accounts get no token.
//!
//! [`Notifier`]: super::notify::Notifier

use rampart_core::config::secret::Secret;

use super::notify::Notification;
use super::service::{ms, now_ms, random_token, IdentityError, IdentityService};
use crate::store::identity::{NewResetToken, ResetTokenStore, TokenHash, User, UserStore};

/// Reset requests handled at once in the background.
pub const MAX_RESET_JOBS: usize = 64;
/// How every reset token begins.
pub const TOKEN_PREFIX: &str = "prt_";
/// Longer presented tokens are refused without a lookup (ours are 47 characters).
const MAX_TOKEN_CHARS: usize = 128;

/// The account a reset request names.
#[derive(Clone, Debug)]
pub enum ResetTarget {
    Username(String),
    Email(String),
}

impl IdentityService {
    /// Whether `{prefix}/password/forgot` and `/password/reset` are served.
    pub fn reset_enabled(&self) -> bool {
        self.settings.reset.is_some() && self.notifier.is_some()
    }

    /// The account a reset request names, if it may reset its password
    /// (`None`: unknown or disabled, or a name no account can have).
    pub async fn reset_account(&self, target: &ResetTarget) -> Result<Option<User>, IdentityError> {
        let found = match target {
            ResetTarget::Username(name) => self.db.user_by_username(name).await,
            ResetTarget::Email(address) => self.db.user_by_email(address).await,
        };
        match found {
            Ok(user) => Ok(user.filter(|u| !u.disabled)),
            Err(e) => match IdentityError::from(e) {
                IdentityError::BadInput(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// A slot for one background reset job, if fewer than [`MAX_RESET_JOBS`] run.
    pub fn reset_job_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.reset_jobs.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.metrics.notification(false);
        }
        slot
    }

    /// Makes and stores a reset token for `user` and hands it to the notifier.
    /// The error never holds the token.
    pub async fn send_reset_token(&self, user: &User) -> Result<(), IdentityError> {
        let (Some(reset), Some(notifier)) = (&self.settings.reset, &self.notifier) else {
            return Ok(());
        };
        let now = now_ms();
        // Expired tokens are useless; they are cleared out as new ones are made.
        if let Err(e) = self.db.purge_expired_reset_tokens(now).await {
            tracing::warn!(error = %e, "could not purge expired reset tokens");
        }
        let token = random_token(TOKEN_PREFIX)?;
        let expires_at = now.saturating_add(ms(reset.token_ttl));
        self.db
            .insert_reset_token(&NewResetToken {
                token_hash: TokenHash::of(&token),
                user_id: user.id.clone(),
                created_at: now,
                expires_at,
            })
            .await?;
        let link = reset.link_for(&token).map(Secret::new);
        let notification = Notification::password_reset(
            user.id.clone(),
            user.username.clone(),
            user.email.clone(),
            Secret::new(token),
            link,
            expires_at / 1000,
        );
        let sent = notifier.send(notification).await;
        self.metrics.notification(sent.is_ok());
        sent.map_err(|e| IdentityError::Internal(anyhow::anyhow!("the notifier failed: {e}")))
    }

    /// Sets a new password with a reset token; returns the user. Every bad
    /// token (malformed, unknown, used, expired, of a disabled account) is the
    /// same `InvalidGrant`; a password the policy refuses leaves the token usable.
    pub async fn reset_password(&self, token: &str, new: &str) -> Result<User, IdentityError> {
        let invalid = || IdentityError::InvalidGrant { reason: "bad_reset_token", user_id: None };
        if !token.starts_with(TOKEN_PREFIX) || token.len() > MAX_TOKEN_CHARS {
            return Err(invalid());
        }
        let hash = TokenHash::of(token);
        let Some(user_id) = self.db.reset_token_user(&hash, now_ms()).await? else {
            return Err(invalid());
        };
        let Some(user) = self.db.user_by_id(&user_id).await?.filter(|u| !u.disabled) else {
            return Err(invalid());
        };
        let new_hash = self.hash_new_password(&user, new).await?;
        // Spent only now, atomically: of two concurrent resets one wins.
        match self.db.consume_reset_token(&hash, now_ms()).await? {
            Some(spent_by) if spent_by == user.id => {}
            _ => return Err(invalid()),
        }
        self.replace_password(&user.id, &new_hash).await?;
        Ok(user)
    }
}
