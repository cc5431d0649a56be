//! The gateway's own identity service and API (`[identity]`): registration,
//! password logins and service clients at an OAuth2 token endpoint, refresh-token rotation,
//! logout, and the JWKS and OpenID discovery documents for the tokens it
//! signs. Built on the stores in [`crate::store::identity`] and the pure
//! password and token logic in `rampart_core::{password, token}`.
//!
//! - [`admin`]: account administration for `rampart user`.
//! - [`client_auth`]: reading client credentials (HTTP Basic or form).
//! - [`clients`]: service clients of the `client_credentials` grant, and
//!   their administration for `rampart client`.
//! - [`hasher`]: the bounded password-hashing pool.
//! - [`keys`]: the signing keys, their rotation and reload.
//! - [`mfa`]: second factors (TOTP, backup codes) and the two-step login.
//! - [`revoke`]: revoked access tokens, checked per request without I/O.
//! - [`service`]: the operations, independent of HTTP.
//! - [`reset`]: password reset by a single-use token.
//! - [`notify`]: the notifiers that deliver reset tokens.
//! - [`passkeys`]: passkeys (WebAuthn): registration, passwordless login,
//!   and the check a second-factor step uses; [`passkey_http`] their endpoints.
//! - [`oidc`]: logins through external OpenID Connect providers, and the
//!   links between their accounts and local users.
//! - [`signatures`]: the HMAC keys service clients sign requests with, held
//!   in memory to verify, and the replay cache of their nonces.
//! - [`http`]: the endpoints, as a layer in the gateway's stack.

pub mod admin;
pub mod admin_http;
pub mod api_keys;
pub mod client_auth;
pub mod clients;
pub mod hasher;
pub mod http;
pub mod keys;
pub mod mfa;
mod mfa_http;
pub mod notify;
pub mod oidc;
pub mod openapi;
pub mod passkey_http;
pub mod passkeys;
pub mod privacy;
pub mod reset;
pub mod revoke;
pub mod service;
pub mod session_http;
pub mod sessions;
pub mod signatures;

pub use service::IdentityService;
