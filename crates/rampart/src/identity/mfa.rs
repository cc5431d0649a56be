//! Second factors: TOTP and backup codes, and the two-step login.
//!
//! - **TOTP** (the pure logic is `rampart_core::totp`): enrolment makes a
//!   160-bit secret, sealed at rest with ChaCha20-Poly1305 under a key derived
//!   from `secret_key` for this purpose alone; it counts only once a code has
//!   confirmed it. Every accepted code records its time step, and a code for
//!   that step or an earlier one is refused (a replay), atomically in the store.
//! - **Backup codes**: ten, 80 random bits each, shown once and stored as
//!   SHA-256. A slow hash buys nothing here: slow hashes protect guessable
//!   secrets, and 2^80 candidates per code cannot be searched at any hash
//!   speed; SHA-256 also lets a code be found by an indexed lookup.
//! - **Two-step login**: when a user has a second factor, the right password
//!   yields no tokens but an *MFA token*: a JWT signed with the identity
//!   signing key, `aud` = [`MFA_AUDIENCE`] (so no API and no account endpoint
//!   accepts it), valid for [`MFA_TOKEN_TTL_SECS`]. The second step presents it
//!   with a code ([`IdentityService::complete_mfa_login`]); its `jti` is then
//!   revoked, so it serves once.
//!
//! Other second factors (passkeys) plug in through [`IdentityService::mfa_methods`],
//! [`IdentityService::verify_mfa_token`] and [`IdentityService::complete_mfa_login`].

use rampart_core::token::{issue, Claims, Verifier};
use rampart_core::totp::{self, Check};
use ring::rand::{SecureRandom, SystemRandom};

use super::keys::{derive, seal_with, unseal_with};
use super::service::{now_ms, IdentityError, IdentityService, IssuedTokens};
use crate::store::identity::{MfaStore, PasskeyStore, StoreError, TokenHash, User, UserStore};

/// The `aud` of MFA tokens: no verifier of access tokens accepts it.
pub const MFA_AUDIENCE: &str = "rampart-mfa";
/// How long the second step may take.
pub const MFA_TOKEN_TTL_SECS: u64 = 300;
/// The token endpoint's grant type of the second step.
pub const MFA_OTP_GRANT: &str = "urn:rampart:params:oauth:grant-type:mfa-otp";

const TOTP_AAD: &[u8] = b"rampart totp secret";

/// A started TOTP enrolment, for the user to copy into an app.
#[derive(Debug)]
pub struct TotpEnrolment {
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png: String,
    pub qr_svg: String,
}

/// A login waiting for its second factor.
#[derive(Clone, Debug)]
pub struct MfaPending {
    pub user_id: String,
    pub jti: String,
    pub exp: u64,
    /// The user's token version when the password was checked.
    pub ver: u32,
}

/// Which second factor a code was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeKind {
    Totp,
    BackupCode,
}

impl CodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::BackupCode => "backup_code",
        }
    }
}

/// Why a second-factor code was refused (for the audit log; the client
/// hears the same for all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeRefused {
    pub kind: Option<CodeKind>,
    pub reason: &'static str,
}

/// The second factors of an account, as `GET {prefix}/mfa` shows them.
#[derive(Clone, Debug)]
pub struct MfaStatus {
    pub totp: bool,
    pub totp_pending: bool,
    pub backup_codes_left: u64,
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(bytes)
}

impl IdentityService {
    fn totp_key(&self) -> [u8; 32] {
        derive(self.settings.secret_key.expose(), "rampart totp seal v1")
    }

    /// The second factors the user must choose from at login; empty when
    /// the password is enough.
    /// A registered passkey is a second factor too (`webauthn`, when
    /// `[identity.webauthn]` is on).
    pub async fn mfa_methods(&self, user_id: &str) -> Result<Vec<&'static str>, IdentityError> {
        let confirmed = self.db.totp(user_id).await?.is_some_and(|t| t.confirmed_at.is_some());
        let mut methods = if confirmed { vec!["totp", "backup_code"] } else { Vec::new() };
        if self.webauthn.is_some() && !self.db.passkeys_of(user_id).await?.is_empty() {
            methods.push("webauthn");
        }
        Ok(methods)
    }

    /// The state of the user's second factors.
    pub async fn mfa_status(&self, user_id: &str) -> Result<MfaStatus, IdentityError> {
        let totp = self.db.totp(user_id).await?;
        Ok(MfaStatus {
            totp: totp.as_ref().is_some_and(|t| t.confirmed_at.is_some()),
            totp_pending: totp.as_ref().is_some_and(|t| t.confirmed_at.is_none()),
            backup_codes_left: self.db.backup_codes_left(user_id).await?,
        })
    }

    /// A short-lived token that names a user who has proved the password and
    /// owes a second factor.
    pub(super) fn mfa_token(&self, user: &User, now_ms: u64) -> Result<String, IdentityError> {
        let mut claims = Claims::new(&self.settings.issuer, &user.id, MFA_AUDIENCE, now_ms / 1000, MFA_TOKEN_TTL_SECS);
        claims.jti = Some(uuid::Uuid::now_v7().to_string());
        claims.ver = user.token_version;
        issue(&self.keys().current().signer, &claims)
            .map_err(|e| IdentityError::Internal(anyhow::anyhow!("signing: {e}")))
    }

    /// The pending login an MFA token stands for, if it is valid now and
    /// unused. Access tokens are refused (their audience differs).
    pub fn verify_mfa_token(&self, token: &str) -> Option<MfaPending> {
        let keys = self.keys().current();
        let verifier = Verifier::new(keys.keys.clone(), [self.settings.issuer.clone()], [MFA_AUDIENCE]);
        let claims = verifier.verify(token, now_ms() / 1000).ok()?;
        let jti = claims.jti?;
        if self.revocations.is_revoked(&claims.sub, Some(&jti), claims.ver) {
            return None;
        }
        Some(MfaPending { user_id: claims.sub, jti, exp: claims.exp, ver: claims.ver })
    }

    /// Ends a two-step login whose second factor was proved: spends the MFA
    /// token and issues the tokens. A user disabled, locked (for instance
    /// by failed codes) or whose sessions were ended meanwhile gets none.
    pub async fn complete_mfa_login(&self, pending: &MfaPending) -> Result<IssuedTokens, IdentityError> {
        let user = self.mfa_login(pending).await?;
        self.issue_login_tokens(&user, now_ms()).await
    }

    /// As [`Self::complete_mfa_login`], without tokens: spends the MFA token
    /// and answers the user (a browser session is made of it).
    pub async fn mfa_login(&self, pending: &MfaPending) -> Result<User, IdentityError> {
        let now = now_ms();
        let refused = || IdentityError::InvalidGrant { reason: "locked", user_id: Some(pending.user_id.clone()) };
        let user = self.db.user_by_id(&pending.user_id).await?.ok_or_else(refused)?;
        if user.disabled || user.is_locked(now) || user.token_version != pending.ver {
            return Err(refused());
        }
        self.revocations.revoke_token(&pending.jti, pending.exp, now).await?;
        Ok(user)
    }

    /// Checks a second-factor code of the user: a TOTP code (spending its
    /// time step) or a backup code (spending it).
    pub async fn check_second_factor(&self, user_id: &str, input: &str) -> Result<CodeKind, CodeRefusal> {
        if totp::normalize_code(input).is_some() {
            let refuse = |reason| CodeRefusal::Refused(CodeRefused { kind: Some(CodeKind::Totp), reason });
            let Some(record) = self.db.totp(user_id).await?.filter(|t| t.confirmed_at.is_some()) else {
                return Err(refuse("no_totp"));
            };
            let secret = unseal_with(&self.totp_key(), TOTP_AAD, &record.secret)?;
            return match totp::verify(&secret, input, now_ms() / 1000, record.last_used_step) {
                Check::Accepted { step } if self.db.use_totp_step(user_id, step).await? => Ok(CodeKind::Totp),
                Check::Accepted { .. } | Check::Replayed => Err(refuse("code_replayed")),
                Check::Wrong | Check::Malformed => Err(refuse("wrong_code")),
            };
        }
        if let Some(code) = totp::normalize_backup_code(input) {
            if self.db.use_backup_code(user_id, &TokenHash::of(&code), now_ms()).await? {
                return Ok(CodeKind::BackupCode);
            }
            return Err(CodeRefusal::Refused(CodeRefused { kind: Some(CodeKind::BackupCode), reason: "wrong_code" }));
        }
        Err(CodeRefusal::Refused(CodeRefused { kind: None, reason: "malformed_code" }))
    }

    /// Starts (or restarts) a TOTP enrolment. [`IdentityError::Taken`]
    /// (`totp`) when one is active.
    pub async fn begin_totp(&self, user: &User) -> Result<TotpEnrolment, IdentityError> {
        let secret = random::<{ totp::SECRET_BYTES }>()?;
        let sealed = seal_with(&self.totp_key(), TOTP_AAD, &secret)?;
        self.db.begin_totp(&user.id, &sealed, now_ms()).await?;
        let uri = totp::otpauth_uri(&secret, &self.settings.totp_issuer, &user.username);
        Ok(TotpEnrolment {
            secret_base32: totp::secret_base32(&secret),
            qr_png: totp::qr_png_data_uri(&uri).map_err(|e| anyhow::anyhow!("QR code: {e}"))?,
            qr_svg: totp::qr_svg(&uri).map_err(|e| anyhow::anyhow!("QR code: {e}"))?,
            otpauth_uri: uri,
        })
    }

    /// Confirms the enrolment with a first code; returns the backup codes,
    /// which are never shown again.
    pub async fn confirm_totp(&self, user: &User, input: &str) -> Result<Vec<String>, CodeRefusal> {
        let refuse = |reason| CodeRefusal::Refused(CodeRefused { kind: Some(CodeKind::Totp), reason });
        let Some(record) = self.db.totp(&user.id).await? else { return Err(refuse("no_enrolment")) };
        if record.confirmed_at.is_some() {
            return Err(refuse("already_confirmed"));
        }
        let secret = unseal_with(&self.totp_key(), TOTP_AAD, &record.secret)?;
        match totp::verify(&secret, input, now_ms() / 1000, None) {
            Check::Accepted { step } if self.db.confirm_totp(&user.id, step, now_ms()).await? => {}
            Check::Malformed => return Err(refuse("malformed_code")),
            _ => return Err(refuse("wrong_code")),
        }
        Ok(self.regenerate_backup_codes(&user.id).await?)
    }

    /// Ten new backup codes; the old ones stop working.
    pub async fn regenerate_backup_codes(&self, user_id: &str) -> Result<Vec<String>, IdentityError> {
        let mut codes = Vec::with_capacity(totp::BACKUP_CODES);
        let mut hashes = Vec::with_capacity(totp::BACKUP_CODES);
        for _ in 0..totp::BACKUP_CODES {
            let code = totp::format_backup_code(&random::<{ totp::BACKUP_CODE_BYTES }>()?);
            let normalized = totp::normalize_backup_code(&code)
                .ok_or_else(|| anyhow::anyhow!("a generated backup code does not read back"))?;
            hashes.push(TokenHash::of(&normalized));
            codes.push(code);
        }
        self.db.replace_backup_codes(user_id, &hashes, now_ms()).await?;
        Ok(codes)
    }

    /// Turns the second factors off (TOTP and backup codes). False when
    /// there were none.
    pub async fn disable_mfa(&self, user_id: &str) -> Result<bool, IdentityError> {
        Ok(self.db.delete_mfa(user_id).await?)
    }
}

/// A code refused, or a failure on the way.
#[derive(Debug)]
pub enum CodeRefusal {
    Refused(CodeRefused),
    Failed(IdentityError),
}

impl From<IdentityError> for CodeRefusal {
    fn from(e: IdentityError) -> Self {
        Self::Failed(e)
    }
}

impl From<StoreError> for CodeRefusal {
    fn from(e: StoreError) -> Self {
        Self::Failed(e.into())
    }
}

impl From<anyhow::Error> for CodeRefusal {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e.into())
    }
}
