//! Identity storage: users, refresh-token families, signing keys, password-reset
//! tokens, the `jti` denylist and service clients, on SQLite and PostgreSQL
//! (migrations `0002_identity.sql` and `0003_service_clients.sql` of each
//! backend).
//!
//! One small trait per concern, all implemented for [`Database`] so that the
//! identity service never knows which backend it talks to:
//!
//! - [`UserStore`] ([`users`]): accounts, with usernames unique regardless of
//!   case and compatibility forms, optional unique e-mail addresses, roles, tier,
//!   lock and the token version that "log out everywhere" raises.
//! - [`RefreshTokenStore`] ([`refresh`]): opaque refresh tokens, stored as
//!   SHA-256 hashes, rotated atomically with reuse detection and a grace window.
//! - [`SigningKeyStore`] ([`keys`]): JWT signing keys with encrypted private
//!   parts, at most one of them active.
//! - [`ResetTokenStore`] ([`reset`]): single-use password-reset tokens.
//! - [`DenylistStore`] ([`denylist`]): revoked access-token ids, the SQL
//!   fallback for when no Redis is configured.
//! - [`ServiceClientStore`] ([`clients`]): OAuth2 clients of the
//!   `client_credentials` grant, with SHA-256-hashed secrets and scopes.
//! - [`PasskeyStore`] ([`passkeys`]): WebAuthn passkeys and the single-use
//!   state of ceremonies in progress (migration `0006_passkeys.sql`).
//! - [`MfaStore`] ([`mfa`]): sealed TOTP secrets with replay protection, and
//!   SHA-256-hashed single-use backup codes (migration `0005_mfa.sql`).
//! - [`ApiKeyStore`] ([`api_keys`]): API keys of users and service clients
//!   (migration `0007_api_keys.sql`), SHA-256-hashed, with batched usage.
//! - [`RequestKeyStore`] ([`request_keys`]): the HMAC keys service clients
//!   sign requests with (migration `0009_request_signing.sql`), sealed.
//! - [`ExternalIdentityStore`] ([`external`]): accounts at external OpenID
//!   Connect providers linked to users, and single-use logins in progress
//!   (migration `0010_external_identities.sql`).
//!
//! Per-account failure counters are not here: like the other throttling
//! counters they live in the limiter (in process or in Redis), so that a flood
//! of failed logins causes no database writes. A lockout that must survive a
//! restart is written with [`UserStore::extend_lock`], which never shortens a
//! lock already in force; an administrator's lock is [`UserStore::lock_user`].
//!
//! **Conventions.** Times are unix milliseconds, passed in by the caller (no
//! clock is read here). Ids are UUIDv7 text made by [`new_id`], never an e-mail
//! address. Secrets are never stored: tokens as [`TokenHash`]es, private keys
//! as ciphertext the caller made. Every method carries
//! `#[instrument(skip_all)]`, so no argument reaches a span.
//!
//! **Hostile input.** Every text a caller hands in is checked before the
//! database is touched: values longer than their limit are refused with
//! [`StoreError::TooLong`], values holding a NUL character (which PostgreSQL
//! cannot store in text) with [`StoreError::NulByte`]. Lookups by such a value
//! answer "not found" (no stored row can hold it) without a query. SQL
//! metacharacters need no care: every value is a bound parameter.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rampart::store::identity::{NewUser, StoreError, UserStore};
//! use rampart::store::Database;
//!
//! let db = Database::connect("sqlite::memory:").await.unwrap();
//! let alice = db.create_user(&NewUser::named("Alice"), 1_000).await.unwrap();
//! assert_eq!(db.user_by_username("ALICE").await.unwrap().unwrap().id, alice.id);
//! let taken = db.create_user(&NewUser::named("alice"), 2_000).await.unwrap_err();
//! assert!(matches!(taken, StoreError::Conflict { field: "username" }));
//! # });
//! ```

pub mod api_keys;
pub mod clients;
pub mod denylist;
pub mod external;
pub mod keys;
pub mod mfa;
pub mod passkeys;
pub mod refresh;
pub mod request_keys;
pub mod reset;
pub mod sessions;
pub mod users;

use std::fmt;

use sha2::{Digest, Sha256};

pub use api_keys::{ApiKeyMatch, ApiKeyRecord, ApiKeyStore, ApiKeyUsage, NewApiKey, Owner};
pub use clients::{NewServiceClient, ServiceClient, ServiceClientStore};
pub use denylist::DenylistStore;
pub use external::{ExternalIdentity, ExternalIdentityStore, PendingLogin, TooManyPending, Unlinked};
pub use keys::{NewSigningKey, SealedKey, SigningKeyRecord, SigningKeyStore};
pub use mfa::{MfaStore, TotpRecord};
pub use passkeys::{ChallengePurpose, NewChallenge, PasskeyInfo, PasskeyRecord, PasskeyStore, TakenChallenge};
pub use refresh::{NewRefreshToken, RefreshToken, RefreshTokenStore, RotateOutcome, Successor};
pub use request_keys::{KeyInUse, NewRequestKey, RequestKeyRecord, RequestKeyStore};
pub use reset::{NewResetToken, ResetTokenStore};
pub use sessions::{NewSession, SessionRecord, SessionStore, SessionTouch};
pub use users::{username_key, NewUser, User, UserQuery, UserStore};

/// Longest username, in bytes as given.
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest e-mail address, in bytes (RFC 5321 allows 64 + 1 + 255).
pub const MAX_EMAIL_BYTES: usize = 320;
/// Longest stored password hash. PHC, bcrypt and pbkdf2 strings are far shorter.
pub const MAX_PASSWORD_HASH_BYTES: usize = 1024;
/// Longest role name, and the most roles one user may hold.
pub const MAX_ROLE_BYTES: usize = 128;
pub const MAX_ROLES: usize = 64;
/// Longest tier name.
pub const MAX_TIER_BYTES: usize = 128;
/// Longest id of any kind (user, family, token, client, `jti`).
pub const MAX_ID_BYTES: usize = 256;
/// Most users one [`UserStore::list_users`] call returns.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value is already taken: `username`, `email`, `id`, `token`,
    /// `kid` or `active` (a second active signing key).
    #[error("the {field} is already taken")]
    Conflict { field: &'static str },
    /// An input is longer than its limit; refused before the database is touched.
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    /// An input holds a NUL character; refused before the database is touched.
    #[error("{field} contains a NUL character")]
    NulByte { field: &'static str },
    /// An input the store cannot accept for another reason.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: &'static str },
    /// The row to change does not exist.
    #[error("no such {what}")]
    NotFound { what: &'static str },
    /// A stored row does not read back as what was written.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// The database failed (unreachable, busy, …).
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// Another store (Redis, for sessions) cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A transaction the database aborted to break a deadlock or a
    /// serialization conflict, which is worth running again.
    fn is_transient(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40P01") | Some("40001"))
            }
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
                // PostgreSQL names the constraint, SQLite the columns: our
                // constraint names contain the column names, so one test fits both.
                let text = format!("{} {}", db.constraint().unwrap_or(""), db.message());
                return Self::Conflict { field: conflict_field(&text) };
            }
            // Every foreign key of these tables points at a user.
            if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation {
                return Self::NotFound { what: "user" };
            }
            // PostgreSQL: a NUL or another character the encoding cannot hold.
            // Inputs are checked first; this only guards a path that was missed.
            if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) {
                return Self::NulByte { field: "value" };
            }
        }
        Self::Database(e)
    }
}

fn conflict_field(text: &str) -> &'static str {
    // `kid` before `id`, which it contains.
    const FIELDS: [(&str, &str); 8] = [
        ("username_key", "username"),
        ("email_key", "email"),
        ("token_hash", "token"),
        ("one_active", "active"),
        ("signing_keys.active", "active"),
        ("jti", "jti"),
        ("kid", "kid"),
        ("id", "id"),
    ];
    FIELDS.iter().find(|(needle, _)| text.contains(needle)).map_or("value", |(_, field)| field)
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A fresh id: a UUIDv7 in text form, unique and opaque (it reveals only its
/// creation time).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The SHA-256 of an opaque token: what is stored and looked up instead of the
/// token, so that a copy of the database gives no usable token.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `token` as the client presents it.
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_stored(bytes: &[u8]) -> Result<Self> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| StoreError::Corrupt { what: "token hash", reason: format!("{} bytes, not 32", bytes.len()) })
    }
}

impl fmt::Debug for TokenHash {
    // A prefix is enough to tell hashes apart in a test failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// Checks a text input: at most `max` bytes and no NUL.
fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.len() > max {
        return Err(StoreError::TooLong { field, max });
    }
    if value.contains('\0') {
        return Err(StoreError::NulByte { field });
    }
    Ok(())
}

/// As [`check_text`], and not empty.
fn check_required(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(StoreError::Invalid { field, reason: "must not be empty" });
    }
    check_text(field, value, max)
}

/// Whether a lookup key could be stored at all; when not, the lookup answers
/// "not found" without a query.
fn storable(value: &str, max: usize) -> bool {
    check_required("key", value, max).is_ok()
}

/// A time or count as the database stores it (signed 64-bit).
fn to_db(field: &'static str, n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Invalid { field, reason: "out of range" })
}

/// A stored time or count back as unsigned.
fn from_db(what: &'static str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt { what, reason: format!("negative value {n}") })
}

fn from_db_opt(what: &'static str, n: Option<i64>) -> Result<Option<u64>> {
    n.map(|n| from_db(what, n)).transpose()
}

/// What differs between the backends. Everything else is one SQL text: sqlx
/// reads `$1`-style placeholders on SQLite too.
struct Backend {
    /// Starts a write transaction. SQLite takes the database's write lock at
    /// once (`BEGIN IMMEDIATE`), so the transaction's reads cannot go stale;
    /// PostgreSQL locks rows instead (`FOR UPDATE`, advisory locks).
    begin_write: &'static str,
    /// `FOR UPDATE` on PostgreSQL; nothing on SQLite, where the transaction
    /// already holds the write lock.
    for_update: &'static str,
    /// Takes a transaction-scoped lock on a 64-bit key (PostgreSQL only).
    advisory_lock: Option<&'static str>,
}

const SQLITE: Backend = Backend { begin_write: "BEGIN IMMEDIATE", for_update: "", advisory_lock: None };

const POSTGRES: Backend = Backend {
    begin_write: "BEGIN",
    for_update: " FOR UPDATE",
    advisory_lock: Some("SELECT pg_advisory_xact_lock($1)"),
};

/// A 64-bit advisory-lock key for `name` within `space`.
fn lock_key(space: &str, name: &str) -> i64 {
    let digest = Sha256::new().chain_update(space).chain_update([0]).chain_update(name).finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// Runs `$body` with `$pool` bound to the open pool (and `$sql` to its
/// [`Backend`]). The body is written once and compiled for each pool type:
/// only types and a few statements differ, and sqlx's generic bounds for that
/// are longer than the code.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:block) => {
        match $db {
            $crate::store::Database::Sqlite($pool) => $body,
            $crate::store::Database::Postgres($pool) => $body,
        }
    };
    ($db:expr, |$pool:ident, $sql:ident| $body:block) => {
        match $db {
            $crate::store::Database::Sqlite($pool) => {
                let $sql = &$crate::store::identity::SQLITE;
                $body
            }
            $crate::store::Database::Postgres($pool) => {
                let $sql = &$crate::store::identity::POSTGRES;
                $body
            }
        }
    };
}
use with_pool;

/// Runs a write transaction again when PostgreSQL aborted it to break a
/// deadlock (possible when a family revocation meets a user-wide one); a
/// second or third attempt sees the other's result.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if tries < 3 && e.is_transient() => {
                tracing::debug!(error = %e, "retrying an aborted identity transaction");
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn conflicts_name_their_field_on_both_backends() {
        // SQLite messages name columns, PostgreSQL errors name constraints.
        assert_eq!(conflict_field(" UNIQUE constraint failed: users.username_key"), "username");
        assert_eq!(conflict_field("users_username_key duplicate key"), "username");
        assert_eq!(conflict_field("users_email_key x"), "email");
        assert_eq!(conflict_field(" UNIQUE constraint failed: refresh_tokens.token_hash"), "token");
        assert_eq!(conflict_field("signing_keys_one_active x"), "active");
        assert_eq!(conflict_field(" UNIQUE constraint failed: signing_keys.active"), "active");
        assert_eq!(conflict_field(" UNIQUE constraint failed: signing_keys.kid"), "kid");
        assert_eq!(conflict_field("something else"), "value");
    }

    #[test]
    fn text_checks_come_in_order() {
        assert!(matches!(check_required("f", "", 4), Err(StoreError::Invalid { field: "f", .. })));
        assert!(matches!(check_text("f", "abcde", 4), Err(StoreError::TooLong { field: "f", max: 4 })));
        assert!(matches!(check_text("f", "a\0", 4), Err(StoreError::NulByte { field: "f" })));
        assert!(check_text("f", "", 4).is_ok());
        assert!(!storable("a\0b", 10) && !storable("", 10) && storable("ab", 10));
    }

    #[test]
    fn token_hashes_are_sha256_and_debug_shows_a_prefix() {
        let h = TokenHash::of("abc");
        assert_eq!(hex::encode(h.as_bytes()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(format!("{h:?}"), "TokenHash(ba7816bf…)");
        assert!(TokenHash::from_stored(&[0; 31]).is_err());
        assert_eq!(TokenHash::from_stored(h.as_bytes()).unwrap(), h);
    }

    #[test]
    fn lock_keys_differ_per_space_and_name() {
        assert_ne!(lock_key("a", "bc"), lock_key("ab", "c"));
        assert_eq!(lock_key("family", "x"), lock_key("family", "x"));
    }
}
