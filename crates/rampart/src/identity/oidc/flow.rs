//! The authorization-code flow, independent of HTTP: starting a login (or a
//! link from a signed-in account), the callback's checks in order, and which
//! local user a provider account signs in as.
//!
//! **Which user.** A provider account (`provider`, `sub`) that is linked signs
//! in as its user. Otherwise, with `link_by_verified_email`, it is linked to
//! the local user with the same e-mail address — only when the provider says
//! the address is verified *and* the local account's address is verified too:
//! an address someone typed at registration proves nothing, and linking to it
//! would hand an account pre-registered with a victim's address to its
//! registrant ("pre-account hijacking"). Otherwise, when the provider may
//! create users, a local user without a password is made (its username from
//! `preferred_username`, the address or the name, made unique) and linked;
//! else the login is refused (no account).

use std::time::Duration;

use subtle::ConstantTimeEq;

use super::client::ProviderError;
use super::id_token::{ExternalProfile, IdTokenError};
use super::{ExternalLogins, Provider};
use crate::identity::service::{now_ms, random_bytes_b64, IdentityError, IdentityService};
use crate::store::identity::{
    ExternalIdentity, ExternalIdentityStore, NewUser, PendingLogin, StoreError, TokenHash, TooManyPending, Unlinked,
    User, UserStore, MAX_EMAIL_BYTES,
};

/// How long a started login may take.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// The cookie that binds a login to the browser that started it.
pub const BROWSER_COOKIE: &str = "__Host-rampart-oidc";
/// Longest `return_to`.
pub const MAX_RETURN_TO: usize = 2048;
/// Longest username made for a new user.
const MAX_DERIVED_USERNAME: usize = 32;

/// Why a login (or a link) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("no such provider")]
    UnknownProvider,
    #[error("return_to {0}")]
    BadReturnTo(&'static str),
    #[error("too many logins in progress")]
    Busy,
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The `state` is missing, unknown, spent, expired, of another provider,
    /// or the browser is not the one that started the login.
    #[error("invalid state ({0})")]
    State(&'static str),
    /// The provider answered the authorization request with an error.
    #[error("the provider answered {0}")]
    ProviderDenied(String),
    /// A callback that breaks the protocol (no code, another issuer).
    #[error("bad callback ({0})")]
    BadCallback(&'static str),
    /// The token endpoint refused the code (spent, unknown, PKCE mismatch).
    #[error("the provider refused the code: {0}")]
    CodeRefused(String),
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
    /// No local account for this provider account, and none may be made.
    #[error("no account")]
    NoAccount,
    #[error("the account is locked or disabled")]
    Locked { user_id: String },
    /// The provider account is linked to another user.
    #[error("linked to another account")]
    LinkedElsewhere { user_id: Option<String> },
    /// The user already has another account of this provider linked.
    #[error("another account of this provider is linked")]
    ProviderTaken { user_id: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        Self::Identity(e.into())
    }
}

impl From<ProviderError> for LoginError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Unavailable(why) => Self::Unavailable(why),
            ProviderError::Refused { error, .. } => Self::CodeRefused(error),
        }
    }
}

impl LoginError {
    /// A short label for the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::BadReturnTo(_) => "bad_return_to",
            Self::Busy => "busy",
            Self::Unavailable(_) => "provider_unavailable",
            Self::State(reason) | Self::BadCallback(reason) => reason,
            Self::ProviderDenied(_) => "provider_error",
            Self::CodeRefused(_) => "code_refused",
            Self::IdToken(e) => e.reason(),
            Self::NoAccount => "no_account",
            Self::Locked { .. } => "locked",
            Self::LinkedElsewhere { .. } => "linked_elsewhere",
            Self::ProviderTaken { .. } => "provider_taken",
            Self::Identity(_) => "internal",
        }
    }

    /// The local user concerned, when one is known.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Self::Locked { user_id } | Self::ProviderTaken { user_id } => Some(user_id),
            Self::LinkedElsewhere { user_id } => user_id.as_deref(),
            _ => None,
        }
    }
}

/// A started login: where to send the browser, and the value of its binding
/// cookie (new, or the one it already had).
#[derive(Debug)]
pub struct Started {
    pub authorize_url: String,
    pub browser: String,
}

/// The query of a callback (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default)]
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// A completed external login.
#[derive(Debug)]
pub struct Completed {
    pub user: User,
    pub return_to: String,
    /// `login`, `created`, `linked_by_email`, `linked` or `already_linked`.
    pub outcome: &'static str,
}

/// Checks a `return_to`: a path on this site, nothing a browser could read as
/// another site. `None` is `/`.
///
/// ```
/// use rampart::identity::oidc::flow::check_return_to;
/// assert_eq!(check_return_to(Some("/app?tab=1")).unwrap(), "/app?tab=1");
/// assert!(check_return_to(Some("//evil.example")).is_err());
/// assert!(check_return_to(Some("https://evil.example/")).is_err());
/// assert!(check_return_to(Some("/\\evil.example")).is_err());
/// ```
pub fn check_return_to(return_to: Option<&str>) -> Result<String, LoginError> {
    let Some(path) = return_to else { return Ok("/".into()) };
    if path.len() > MAX_RETURN_TO {
        return Err(LoginError::BadReturnTo("is too long"));
    }
    if !path.starts_with('/') {
        return Err(LoginError::BadReturnTo("must be a path on this site, starting with `/`"));
    }
    // `//host` and `/\host` are other sites to a browser, and browsers drop
    // tabs and line breaks from URLs, so `/\t/host` is one too.
    if path.starts_with("//") || path.contains('\\') {
        return Err(LoginError::BadReturnTo("must not name another site"));
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(LoginError::BadReturnTo("must not contain spaces or control characters"));
    }
    Ok(path.to_owned())
}

/// Whether a cookie value looks like one we made (43 base64url characters).
fn is_browser_value(v: &str) -> bool {
    v.len() == 43 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The authorization request (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1,
/// RFC 7636 §4.3).
fn authorize_url(endpoint: &str, provider: &Provider, state: &str, nonce: &str, challenge: &str) -> String {
    let s = &provider.settings;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &s.redirect_uri)
        .append_pair("scope", &s.scopes.join(" "))
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let joiner = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{joiner}{query}")
}

/// Refuses a locked or disabled (or erased) user.
fn usable(user: &User, now: u64) -> Result<(), LoginError> {
    if user.disabled || user.is_locked(now) {
        return Err(LoginError::Locked { user_id: user.id.clone() });
    }
    Ok(())
}

/// The base of a new user's name: the provider's `preferred_username`, else
/// the local part of the address, else the name; letters, digits, `.`, `_`
/// and `-` only, at most 32 characters; `user` when nothing is left.
pub fn username_base(profile: &ExternalProfile) -> String {
    let from_email = profile.email.as_deref().and_then(|e| e.split('@').next());
    let source = [profile.preferred_username.as_deref(), from_email, profile.name.as_deref()]
        .into_iter()
        .flatten()
        .find(|s| s.chars().any(char::is_alphanumeric))
        .unwrap_or("user");
    let kept: String = source
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(MAX_DERIVED_USERNAME)
        .collect();
    let trimmed = kept.trim_matches(|c| matches!(c, '.' | '_' | '-'));
    if trimmed.is_empty() {
        "user".into()
    } else {
        trimmed.to_owned()
    }
}

impl IdentityService {
    pub(crate) fn external_logins(&self) -> Result<&ExternalLogins, LoginError> {
        self.oidc.as_deref().ok_or(LoginError::UnknownProvider)
    }

    /// Starts a login with provider `name` (or, with `link_user`, the linking
    /// of an account to that signed-in user). `browser` is the binding
    /// cookie's value if the browser sent one; it is reused so that logins in
    /// two tabs do not undo each other. `client` is who asks, as
    /// [`rampart_core::client_ip::ClientGrouping::key`] gives it: pending
    /// logins are bounded per client (see
    /// [`crate::store::identity::external::MAX_PENDING_PER_CLIENT`]).
    pub async fn oidc_start(
        &self,
        name: &str,
        return_to: Option<&str>,
        link_user: Option<&str>,
        browser: Option<&str>,
        client: Option<std::net::IpAddr>,
    ) -> Result<Started, LoginError> {
        let logins = self.external_logins()?;
        let provider = logins.provider(name).ok_or(LoginError::UnknownProvider)?;
        let return_to = check_return_to(return_to)?;
        let discovered = provider.discovered(logins.client()).await?;
        let state = random_bytes_b64::<32>("").map_err(IdentityError::from)?;
        let nonce = random_bytes_b64::<32>("").map_err(IdentityError::from)?;
        let browser = match browser.filter(|b| is_browser_value(b)) {
            Some(b) => b.to_owned(),
            None => random_bytes_b64::<32>("").map_err(IdentityError::from)?,
        };
        let now = now_ms();
        let pending = PendingLogin {
            state_hash: TokenHash::of(&state),
            provider: name.to_owned(),
            browser_hash: TokenHash::of(&browser),
            nonce,
            return_to,
            link_user_id: link_user.map(str::to_owned),
            client: client.map(|ip| ip.to_string()),
            created_at: now,
            expires_at: now.saturating_add(crate::identity::service::ms(PENDING_TTL)),
        };
        if let Err(TooManyPending) = self.db.insert_pending_login(&pending).await? {
            return Err(LoginError::Busy);
        }
        let challenge = logins.pkce_challenge(&state);
        let url = authorize_url(&discovered.doc.authorization_endpoint, provider, &state, &pending.nonce, &challenge);
        Ok(Started { authorize_url: url, browser })
    }

    /// The callback: the login of `state` (single use, bound to the browser),
    /// the code exchanged, the ID token verified, and the local user found,
    /// linked or made.
    pub async fn oidc_callback(
        &self,
        name: &str,
        callback: &Callback,
        browser: Option<&str>,
    ) -> Result<Completed, LoginError> {
        let logins = self.external_logins()?;
        let provider = logins.provider(name).ok_or(LoginError::UnknownProvider)?;
        let state = callback.state.as_deref().filter(|s| !s.is_empty()).ok_or(LoginError::State("missing_state"))?;
        let now = now_ms();
        let pending =
            self.db.take_pending_login(&TokenHash::of(state), now).await?.ok_or(LoginError::State("unknown_state"))?;
        if pending.provider != name {
            return Err(LoginError::State("provider_mismatch"));
        }
        let bound =
            browser.is_some_and(|b| bool::from(TokenHash::of(b).as_bytes().ct_eq(pending.browser_hash.as_bytes())));
        if !bound {
            return Err(LoginError::State("browser_mismatch"));
        }
        if let Some(error) = &callback.error {
            let plain = error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            return Err(LoginError::ProviderDenied(if plain { error.clone() } else { "unknown_error".into() }));
        }
        let discovered = provider.discovered(logins.client()).await?;
        // RFC 9207: the answer must come from the provider the login went to.
        match &callback.iss {
            Some(iss) if *iss != provider.settings.issuer => return Err(LoginError::BadCallback("issuer_mismatch")),
            None if discovered.doc.authorization_response_iss_parameter_supported => {
                return Err(LoginError::BadCallback("issuer_missing"))
            }
            _ => {}
        }
        let code = callback.code.as_deref().filter(|c| !c.is_empty()).ok_or(LoginError::BadCallback("missing_code"))?;
        let verifier = logins.pkce_verifier(state);
        let tokens = logins.client().exchange_code(&provider.settings, &discovered.doc, code, &verifier).await?;
        let id_token = tokens.id_token.as_deref().ok_or(LoginError::BadCallback("no_id_token"))?;
        let mut profile = provider.verify_id_token(&discovered, id_token, &pending.nonce, now / 1000).await?;
        if profile.wants_userinfo() {
            let bearer = tokens.token_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("bearer"));
            if let (Some(endpoint), Some(access), true) =
                (&discovered.doc.userinfo_endpoint, tokens.access_token.as_deref(), bearer)
            {
                match logins.client().userinfo(endpoint, access).await {
                    Ok(info) => profile.merge_userinfo(&info)?,
                    // The ID token is enough to sign in; only the extras are missing.
                    Err(e) => tracing::warn!(provider = %name, error = %e, "userinfo failed"),
                }
            }
        }
        if profile.email.as_ref().is_some_and(|e| e.len() > MAX_EMAIL_BYTES || e.contains('\0')) {
            profile.email = None;
            profile.email_verified = false;
        }
        let (user, outcome) = match &pending.link_user_id {
            Some(user_id) => self.link_to(provider, &profile, user_id, now).await?,
            None => self.account_for(provider, &profile, now).await?,
        };
        usable(&user, now)?;
        Ok(Completed { user, return_to: pending.return_to, outcome })
    }

    /// The user a login (not a link) signs in as.
    async fn account_for(
        &self,
        provider: &Provider,
        profile: &ExternalProfile,
        now: u64,
    ) -> Result<(User, &'static str), LoginError> {
        let name = provider.settings.name.as_str();
        if let Some(user) = self.linked_user(name, &profile.subject, now).await? {
            return Ok((user, "login"));
        }
        if let (true, true, Some(email)) =
            (provider.settings.link_by_verified_email, profile.email_verified, profile.email.as_deref())
        {
            if let Some(user) = self.db.user_by_email(email).await?.filter(|u| u.email_verified) {
                usable(&user, now)?;
                self.link(name, profile, &user.id, now).await?;
                return Ok((user, "linked_by_email"));
            }
        }
        if !provider.settings.create_users {
            return Err(LoginError::NoAccount);
        }
        let user = self.create_external_user(profile, now).await?;
        match self.link(name, profile, &user.id, now).await {
            Ok(()) => Ok((user, "created")),
            Err(e) => {
                // A first login of the same account in another tab won the race.
                if let Err(cleanup) = self.db.delete_user(&user.id).await {
                    tracing::warn!(error = %cleanup, "could not remove an account made for a lost race");
                }
                match e {
                    LoginError::LinkedElsewhere { .. } => {
                        let user = self.linked_user(name, &profile.subject, now).await?.ok_or(LoginError::NoAccount)?;
                        Ok((user, "login"))
                    }
                    other => Err(other),
                }
            }
        }
    }

    /// The user a provider account is linked to, noting the login.
    async fn linked_user(&self, provider: &str, subject: &str, now: u64) -> Result<Option<User>, LoginError> {
        let Some(link) = self.db.external_identity(provider, subject).await? else { return Ok(None) };
        self.db.record_external_login(provider, subject, now).await?;
        Ok(self.db.user_by_id(&link.user_id).await?)
    }

    /// Links the provider account to the signed-in user who started the flow.
    async fn link_to(
        &self,
        provider: &Provider,
        profile: &ExternalProfile,
        user_id: &str,
        now: u64,
    ) -> Result<(User, &'static str), LoginError> {
        let name = provider.settings.name.as_str();
        let user = self.db.user_by_id(user_id).await?.ok_or(LoginError::NoAccount)?;
        // Locked, disabled or erased meanwhile: no link is written for it.
        usable(&user, now)?;
        match self.db.external_identity(name, &profile.subject).await? {
            Some(link) if link.user_id == user.id => {
                self.db.record_external_login(name, &profile.subject, now).await?;
                return Ok((user, "already_linked"));
            }
            Some(_) => return Err(LoginError::LinkedElsewhere { user_id: Some(user.id) }),
            None => {}
        }
        self.link(name, profile, &user.id, now).await?;
        Ok((user, "linked"))
    }

    async fn link(&self, provider: &str, profile: &ExternalProfile, user_id: &str, now: u64) -> Result<(), LoginError> {
        let new = ExternalIdentity {
            provider: provider.to_owned(),
            subject: profile.subject.clone(),
            user_id: user_id.to_owned(),
            email: profile.email.clone(),
            created_at: now,
            last_login_at: None,
        };
        match self.db.link_external_identity(&new).await {
            Ok(()) => Ok(self.db.record_external_login(provider, &profile.subject, now).await?),
            Err(StoreError::Conflict { field: "subject" }) => {
                Err(LoginError::LinkedElsewhere { user_id: Some(user_id.to_owned()) })
            }
            Err(StoreError::Conflict { .. }) => Err(LoginError::ProviderTaken { user_id: user_id.to_owned() }),
            Err(StoreError::TooLong { .. } | StoreError::NulByte { .. }) => {
                Err(LoginError::IdToken(IdTokenError::MalformedClaims))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A new user without a password for a provider account. The address is
    /// kept only when the provider verified it and no one else has it.
    async fn create_external_user(&self, profile: &ExternalProfile, now: u64) -> Result<User, LoginError> {
        let base = username_base(profile);
        let mut email = match (&profile.email, profile.email_verified) {
            (Some(e), true) if self.db.user_by_email(e).await?.is_none() => Some(e.clone()),
            _ => None,
        };
        for attempt in 0..8 {
            let username = if attempt == 0 {
                base.clone()
            } else {
                let suffix = random_bytes_b64::<6>("").map_err(IdentityError::from)?;
                format!("{base}-{}", suffix.to_ascii_lowercase().replace(['-', '_'], "x"))
            };
            let mut new = NewUser::named(username);
            new.email_verified = email.is_some();
            new.email = email.clone();
            match self.db.create_user(&new, now).await {
                Ok(user) => return Ok(user),
                Err(StoreError::Conflict { field: "username" }) => {}
                // Taken meanwhile: the new account goes without it.
                Err(StoreError::Conflict { field: "email" }) => email = None,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LoginError::Identity(IdentityError::Internal(anyhow::anyhow!("no free username for a new account"))))
    }

    /// The user's linked provider accounts.
    pub async fn oidc_links(&self, user_id: &str) -> Result<Vec<ExternalIdentity>, IdentityError> {
        Ok(self.db.external_identities_of(user_id).await?)
    }

    /// Unlinks the user's account of `provider`, unless it is their last way
    /// to sign in (no password, no other link, no passkey).
    pub async fn oidc_unlink(&self, user_id: &str, provider: &str) -> Result<Unlinked, IdentityError> {
        Ok(self.db.unlink_external_identity(user_id, provider, self.passkeys_enabled()).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[track_caller]
    fn check(return_to: &str, ok: bool) {
        assert_eq!(check_return_to(Some(return_to)).is_ok(), ok, "{return_to:?}");
    }

    #[test]
    fn return_to_is_a_path_on_this_site() {
        check("/", true);
        check("/app/settings?tab=links#top", true);
        check("/%2F%2Fevil.example", true);
        check("//evil.example", false);
        check("///evil.example", false);
        check("/\\evil.example", false);
        check("\\\\evil.example", false);
        check("https://evil.example/", false);
        check("javascript:alert(1)", false);
        check("evil.example", false);
        check("", false);
        check("/\t/evil.example", false);
        check("/\n/evil.example", false);
        check("/a b", false);
        check(&format!("/{}", "a".repeat(MAX_RETURN_TO)), false);
        assert_eq!(check_return_to(None).unwrap(), "/");
    }

    #[test]
    fn usernames_come_from_the_profile() {
        let p = |u: Option<&str>, e: Option<&str>, n: Option<&str>| ExternalProfile {
            subject: "s".into(),
            preferred_username: u.map(String::from),
            email: e.map(String::from),
            name: n.map(String::from),
            ..Default::default()
        };
        assert_eq!(username_base(&p(Some("alice"), Some("x@y"), None)), "alice");
        assert_eq!(username_base(&p(None, Some("bob.smith@example.com"), None)), "bob.smith");
        assert_eq!(username_base(&p(None, None, Some("Carol Example"))), "Carol-Example");
        assert_eq!(username_base(&p(Some("<script>"), None, None)), "script");
        assert_eq!(username_base(&p(Some("@@@"), None, Some("Ünïcødé"))), "Ünïcødé");
        assert_eq!(username_base(&p(None, None, None)), "user");
        assert_eq!(username_base(&p(Some(&"x".repeat(100)), None, None)).len(), MAX_DERIVED_USERNAME);
        assert_eq!(username_base(&p(Some("--.a.--"), None, None)), "a");
    }

    #[test]
    fn browser_values_are_ours_only() {
        assert!(is_browser_value(&"a".repeat(43)));
        assert!(!is_browser_value(&"a".repeat(42)));
        assert!(!is_browser_value(&format!("{};x", "a".repeat(41))));
    }
}
