//! Logins through external OpenID Connect providers (`[identity.oidc.<name>]`,
//! see [`rampart_core::config::oidc`]): the authorization-code flow with PKCE
//! (S256), `state` and `nonce`, several providers at once, and the links
//! between provider accounts and local users.
//!
//! - [`client`]: discovery, the token and userinfo endpoints.
//! - [`id_token`]: the ID-token checks and the profile it carries.
//! - [`flow`]: starting a login, the callback, linking and creating accounts.
//! - [`http`]: the endpoints, and [`http::finish_external_login`], the one
//!   place where a completed external login turns into the user's credentials.
//!
//! **Why our own code rather than the `openidconnect` crate.** The ID token is
//! a JWS like our access tokens, so it goes through the same strict
//! [`rampart_core::token::Verifier`] (with its attack tests) and the provider's
//! keys through the same JWKS fetcher ([`crate::auth::jwks::IssuerKeys`]:
//! refresh, unknown-`kid` refetch with a floor). What is left — discovery, one
//! form POST, the nonce and `azp` checks — is a few hundred lines, while
//! `openidconnect` would add `oauth2`, `chrono`, `serde_with`, a second RSA
//! implementation (the `rsa` crate, RUSTSEC-2023-0071) and either `reqwest`
//! or an adapter to our hyper client. Algorithms are therefore ours too:
//! RS256, ES256 and EdDSA (what Google, Microsoft, Okta, Auth0 and Keycloak
//! sign with by default).
//!
//! **Where a login in progress lives.** In the database (`oidc_pending_logins`,
//! migration 0010), keyed by the SHA-256 of `state`, deleted when the callback
//! takes it (`DELETE … RETURNING`: single use, whichever instance the provider
//! sends the browser back to) or when it expires ([`flow::PENDING_TTL`]). A
//! login is also bound to the browser that started it (RFC 6749 §10.12, login
//! CSRF): that browser holds a random value in the `__Host-rampart-oidc`
//! cookie (HttpOnly, Secure, SameSite=Lax) whose SHA-256 the row keeps, and a
//! callback without it is refused. A sealed cookie alone would not be single
//! use; a row alone would not be bound to a browser. The PKCE verifier is not
//! stored at all: it is an HMAC of the state under a key derived from
//! `[identity] secret_key`, so a copy of the database cannot redeem a code.
//!
//! **Second factors.** A user with a second factor gets the same
//! `mfa_required` step as after a password: the provider proves who holds
//! the provider account, not that the user passed our second factor, and a
//! linked provider account must not become a way around it.

pub mod client;
pub mod flow;
pub mod http;
pub mod id_token;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use rampart_core::config::auth::{IssuerSettings, JwksSource};
use rampart_core::config::identity::IdentitySettings;
use rampart_core::config::oidc::OidcProviderSettings;
use rampart_core::token::{KeySet, TokenError, Verifier};
use sha2::{Digest, Sha256};

use self::client::{Discovery, ProviderClient, ProviderError};
use self::id_token::{ExternalProfile, IdTokenError};
use crate::auth::jwks::IssuerKeys;

/// How long a discovery document is used before it is fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, the next attempt waits this long (requests in
/// between use the last good document, or fail at once).
pub const DISCOVERY_RETRY: Duration = Duration::from_secs(5);
/// How often a provider's JWKS is fetched, besides on unknown `kid`s.
pub const JWKS_REFRESH: Duration = Duration::from_secs(3600);
/// Fewest seconds between two JWKS fetches caused by unknown `kid`s.
pub const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// Largest ID token accepted (some providers put group lists in them).
pub const MAX_ID_TOKEN_BYTES: usize = 16 * 1024;

/// The configured providers and what they share.
pub struct ExternalLogins {
    providers: Vec<Arc<Provider>>,
    client: ProviderClient,
    /// Derives PKCE verifiers from states.
    pkce_key: ring::hmac::Key,
}

impl std::fmt::Debug for ExternalLogins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| p.settings.name.as_str()).collect();
        f.debug_struct("ExternalLogins").field("providers", &names).finish_non_exhaustive()
    }
}

/// One provider: its settings, and its discovery document and keys once fetched.
pub struct Provider {
    pub settings: OidcProviderSettings,
    discovered: ArcSwapOption<Discovered>,
    /// Held while fetching; remembers when the last attempt failed.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

/// A provider's discovery document and the keys of its `jwks_uri`.
pub struct Discovered {
    pub doc: Discovery,
    pub keys: Arc<IssuerKeys>,
    fetched: Instant,
}

impl ExternalLogins {
    /// `None` when no provider is configured.
    pub fn new(settings: &IdentitySettings) -> anyhow::Result<Option<Arc<Self>>> {
        if settings.oidc.is_empty() {
            return Ok(None);
        }
        let providers = settings
            .oidc
            .iter()
            .map(|s| {
                Arc::new(Provider {
                    settings: s.clone(),
                    discovered: ArcSwapOption::empty(),
                    refreshing: tokio::sync::Mutex::new(None),
                })
            })
            .collect();
        let pkce_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &super::keys::derive(settings.secret_key.expose(), "rampart oidc pkce v1"),
        );
        Ok(Some(Arc::new(Self { providers, client: ProviderClient::new()?, pkce_key })))
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.settings.name == name)
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    pub fn client(&self) -> &ProviderClient {
        &self.client
    }

    /// The PKCE verifier of a login (RFC 7636 §4.1: 43 unreserved characters).
    pub fn pkce_verifier(&self, state: &str) -> String {
        let tag = ring::hmac::sign(&self.pkce_key, state.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Its S256 challenge (RFC 7636 §4.2).
    pub fn pkce_challenge(&self, state: &str) -> String {
        let digest = Sha256::digest(self.pkce_verifier(state).as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    }
}

impl Provider {
    /// The discovery document and keys: the cached ones while fresh, else
    /// fetched (one fetch at a time; a stale document is used while the
    /// provider cannot be reached).
    pub async fn discovered(&self, client: &ProviderClient) -> Result<Arc<Discovered>, ProviderError> {
        if let Some(d) = self.fresh() {
            return Ok(d);
        }
        let mut last_failure = self.refreshing.lock().await;
        // Another request may have fetched it while this one waited.
        if let Some(d) = self.fresh() {
            return Ok(d);
        }
        let stale = self.discovered.load_full();
        if last_failure.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY) {
            return stale.ok_or_else(|| ProviderError::Unavailable("discovery failed moments ago".into()));
        }
        match client.discover(&self.settings).await {
            Ok(doc) => {
                *last_failure = None;
                let keys = match &stale {
                    Some(old) if old.doc.jwks_uri == doc.jwks_uri => old.keys.clone(),
                    _ => self.issuer_keys(&doc.jwks_uri),
                };
                let d = Arc::new(Discovered { doc, keys, fetched: Instant::now() });
                self.discovered.store(Some(d.clone()));
                Ok(d)
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(provider = %self.settings.name, error = %e, "OpenID discovery failed");
                stale.ok_or(e)
            }
        }
    }

    fn fresh(&self) -> Option<Arc<Discovered>> {
        self.discovered.load_full().filter(|d| d.fetched.elapsed() < DISCOVERY_TTL)
    }

    fn issuer_keys(&self, jwks_uri: &str) -> Arc<IssuerKeys> {
        let mut verifier = Verifier::new(KeySet::new(), [&self.settings.issuer], [&self.settings.client_id]);
        verifier.max_token_bytes = MAX_ID_TOKEN_BYTES;
        IssuerKeys::start(&IssuerSettings {
            issuer: self.settings.issuer.clone(),
            verifier: Arc::new(verifier),
            jwks: Some(JwksSource { url: jwks_uri.to_owned(), refresh: JWKS_REFRESH, min_interval: JWKS_MIN_INTERVAL }),
        })
    }

    /// Verifies an ID token for this login; a key the provider has just
    /// started using is fetched once.
    pub async fn verify_id_token(
        &self,
        discovered: &Discovered,
        token: &str,
        nonce: &str,
        now_secs: u64,
    ) -> Result<ExternalProfile, IdTokenError> {
        let first = id_token::verify(&discovered.keys.verifier(), token, now_secs, nonce);
        match first {
            Err(IdTokenError::Token(TokenError::UnknownKid)) if discovered.keys.refresh_for_unknown_kid().await => {
                id_token::verify(&discovered.keys.verifier(), token, now_secs, nonce)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn pkce_pairs_follow_rfc_7636() {
        let logins = ExternalLogins {
            providers: Vec::new(),
            client: ProviderClient::new().unwrap(),
            pkce_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k"),
        };
        let verifier = logins.pkce_verifier("state-1");
        assert_eq!(verifier.len(), 43);
        assert!(verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(verifier, logins.pkce_verifier("state-2"));
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        assert_eq!(logins.pkce_challenge("state-1"), expected);
    }
}
