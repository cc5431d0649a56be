//! Passwords for the identity feature: hashing, verification of stored and
//! imported hashes, and the NIST 800-63B policy a new password must pass.
//!
//! Everything here is a function of its inputs. The service crate decides when
//! to run it (hashing belongs on a bounded worker pool, since one verification
//! costs tens of milliseconds on purpose), where hashes are stored and what a
//! failure is worth to an attacker.
//!
//! - [`hash`] makes an argon2id PHC string with [`Argon2Params`] (OWASP's
//!   m=19456 KiB, t=2, p=1 by default).
//! - [`verify`] checks a password against a stored hash in any supported format:
//!   argon2id and argon2i PHC strings, bcrypt (`$2a$`, `$2b$`, `$2y$`), passlib's
//!   `$pbkdf2-sha256$` and Django's `pbkdf2_sha256$`. A match says whether the
//!   hash should be replaced by a current argon2id one ("rehash on login").
//!   Stored strings are treated as hostile: work factors above fixed caps are
//!   refused before any work is done. [`identify`] makes the same checks
//!   without a password, for hashes imported from other applications.
//! - [`PasswordPolicy`] checks a new password: length in characters, the bundled
//!   list of common passwords ([`is_common`]), a zxcvbn strength estimate that also
//!   knows the user's own name and address, and optional composition rules.
//! - [`normalize`] is NFKC normalisation. Callers normalise a password once,
//!   before checking, hashing or verifying it, so that the same text typed on
//!   different keyboards gives the same hash.
//! - [`config::PasswordConfig`] is the serde model of the settings.
//!
//! ```
//! use rampart_core::password::{hash, normalize, verify, Argon2Params, PasswordPolicy};
//!
//! let policy = PasswordPolicy::default();
//! let chosen = normalize("correct horse battery staple");
//! assert!(policy.check(&chosen, &["alice", "alice@example.com"]).is_ok());
//! assert!(policy.check("password1", &[]).is_err());
//!
//! // Cheap parameters keep the example fast; real deployments use the default.
//! let params = Argon2Params::new(64, 1, 1).unwrap();
//! let stored = hash(&chosen, &params).unwrap();
//! assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
//! let verified = verify(&chosen, &stored, &params).unwrap();
//! assert!(!verified.needs_rehash);
//! // Under the default (stronger) parameters the same hash is due for a rehash.
//! assert!(verify(&chosen, &stored, &Argon2Params::default()).unwrap().needs_rehash);
//! assert!(verify("wrong", &stored, &params).is_err());
//! ```

mod common;
pub mod config;
mod hash;
mod policy;
mod verify;

use unicode_normalization::UnicodeNormalization;

pub use common::{common_password_count, is_common};
pub use hash::{hash, hash_with_salt, Argon2Params};
pub use policy::{CharClass, CompositionRules, PasswordPolicy, PolicyViolation};
pub use verify::{identify, verify, PasswordError, Scheme, Verified};

/// Passwords longer than this many bytes are refused unread, by the policy and by
/// hashing and verification alike, so that no input can make normalisation or a
/// hash function do unbounded work. It is far above any sensible policy: 1,024
/// characters of four bytes each.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// The form in which a password is checked, hashed and verified: Unicode NFKC.
///
/// NFKC folds compatibility variants (full-width letters, ligatures, composed and
/// decomposed accents) into one form, as NIST 800-63B recommends, so a password
/// typed on another device or keyboard layout still matches. It does not change
/// case and does not trim spaces.
///
/// ```
/// use rampart_core::password::normalize;
/// assert_eq!(normalize("ｐａｓｓ"), "pass");
/// assert_eq!(normalize("e\u{301}t\u{e9}"), "\u{e9}t\u{e9}");
/// assert_eq!(normalize(" Two  spaces "), " Two  spaces ");
/// ```
pub fn normalize(password: &str) -> String {
    // Every ASCII string is already in NFKC.
    if password.is_ascii() {
        return password.to_owned();
    }
    password.nfkc().collect()
}
