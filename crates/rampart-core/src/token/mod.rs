//! JWT access tokens: issuing them, verifying bearer tokens strictly, and the
//! keys and JWKS behind both.
//!
//! Everything here is a function of its inputs: time is always a `now: u64` of
//! unix seconds, and keys arrive as PEM text, JWK values or secret bytes that
//! the service crate has read. The one exception is randomness: generating a
//! key, and loading or signing with an ES256 key, use ring's `SystemRandom`
//! (ECDSA needs a fresh nonce per signature). Verification never does.
//!
//! - [`SigningKey`] signs with EdDSA (Ed25519, the default for new keys), ES256,
//!   RS256 or HS256. [`SigningKey::generate`] makes EdDSA and ES256 keys; RSA keys
//!   are loaded from PKCS#8 PEM files.
//! - [`VerifyingKey`] is a public key (PEM or JWK) or an HS256 secret, bound to
//!   one [`Alg`] for good. [`KeySet`] holds several by `kid`, so that keys can be
//!   rotated, and publishes the asymmetric ones as a JWKS ([`KeySet::jwks`]).
//! - [`issue`] signs [`Claims`] with `typ: "JWT"`, the `kid` and the key's `alg`.
//! - [`Verifier::verify`] refuses, in order: oversized tokens; anything but
//!   three unpadded base64url segments; a header that is not a small JSON
//!   object; `alg: none` in any spelling; `jku`, `x5u`, `jwk`, `x5c` and `crit`
//!   headers; a missing `kid` when there is more than one key, or an unknown
//!   one; an `alg` other than the key's own (no HS/RS key confusion); a bad
//!   signature; a missing `exp`; expired, not-yet-valid or future-issued tokens
//!   (with leeway); an untrusted `iss`; an `aud` that is not ours. Each refusal
//!   is its own [`TokenError`] variant for logs and metrics; the HTTP layer
//!   answers every one of them with the same 401.
//!
//! ```
//! use rampart_core::token::{issue, Alg, Claims, KeySet, SigningKey, TokenError, Verifier};
//!
//! let now = 1_750_000_000;
//! let old = SigningKey::generate("2025-01", Alg::EdDSA).unwrap().key;
//! let new = SigningKey::generate("2025-02", Alg::EdDSA).unwrap().key;
//! // During a rotation both public keys are trusted and published.
//! let keys = KeySet::from_keys([old.verifying_key().clone(), new.verifying_key().clone()]).unwrap();
//! assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 2);
//! let verifier = Verifier::new(keys, ["https://auth.example"], ["api"]);
//!
//! let mut claims = Claims::new("https://auth.example", "alice", "api", now, 900);
//! claims.scopes = vec!["read".into(), "write".into()];
//! for key in [&old, &new] {
//!     let verified = verifier.verify(&issue(key, &claims).unwrap(), now).unwrap();
//!     assert!(verified.has_scope("write"));
//! }
//! let token = issue(&new, &claims).unwrap();
//! assert_eq!(verifier.verify(&token, now + 3600), Err(TokenError::Expired));
//! ```

mod claims;
mod der;
mod keys;
mod verify;

pub use claims::{is_scope_token, Claims};
pub use keys::{
    Alg, GeneratedKey, KeyError, KeySet, SigningKey, VerifyingKey, MAX_KID_BYTES, MAX_RSA_BITS, MIN_HS256_SECRET_BYTES,
    MIN_RSA_BITS,
};
pub use verify::{issue, TokenError, Verifier, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_TOKEN_BYTES, MAX_HEADER_BYTES};

#[cfg(test)]
mod attack_tests;
#[cfg(test)]
mod tests;
