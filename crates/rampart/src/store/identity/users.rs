//! The `users` table: accounts, their credentials' hashes, roles, tier, lock
//! state and token version.
//!
//! Two usernames are the same account when their [`username_key`]s are equal
//! (NFKC, lower case), so `Alice`, `alice` and the full-width `ＡＬＩＣＥ` cannot
//! be three accounts; the column `username_key` is unique. E-mail addresses
//! are optional and unique by their lower-case form (`email_key`). Both
//! uniqueness rules are the database's, so two concurrent registrations cannot
//! both win: the loser gets [`StoreError::Conflict`].
//!
//! Roles are a JSON array of strings in one column rather than a join table:
//! they are defined in the config (there is no roles table to point at), a
//! user holds a handful, they are always read with the user on login and on
//! every "roles changed?" check, and always replaced as a whole. One row read
//! serves each of those without a join.
//!
//! What a username or e-mail address may look like (allowed characters,
//! confusable scripts, address syntax) is the identity service's policy; the
//! store only refuses what it cannot store faithfully (see the module above).

use std::future::Future;

use rampart_core::config::secret::Secret;
use rampart_core::password::normalize;

use super::{
    check_required, from_db, from_db_opt, new_id, storable, to_db, with_pool, Result, StoreError, MAX_EMAIL_BYTES,
    MAX_ID_BYTES, MAX_PAGE_SIZE, MAX_PASSWORD_HASH_BYTES, MAX_ROLES, MAX_ROLE_BYTES, MAX_TIER_BYTES,
    MAX_USERNAME_BYTES,
};
use crate::store::Database;

/// What makes two usernames the same: NFKC (full-width and other
/// compatibility forms folded), then lower case, then NFKC again (lower-casing
/// can leave a string that is not in NFKC).
///
/// ```
/// use rampart::store::identity::username_key;
/// assert_eq!(username_key("Alice"), "alice");
/// assert_eq!(username_key("ＡＬＩＣＥ"), "alice");
/// assert_eq!(username_key("Ǆemal"), "džemal");
/// ```
pub fn username_key(username: &str) -> String {
    normalize(&normalize(username).to_lowercase())
}

/// What makes two e-mail addresses the same. Domains are case-insensitive by
/// the standard and local parts by every provider that matters.
fn email_key(email: &str) -> String {
    email.to_lowercase()
}

/// Normalisation can lengthen a string (one ligature becomes several
/// letters); keys are bounded too, at this multiple of the input limit.
const KEY_GROWTH: usize = 4;

/// A user to create.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// As the user wrote it; shown back as is.
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// A PHC (or imported) hash; `None` for users who log in another way.
    pub password_hash: Option<Secret>,
    pub roles: Vec<String>,
    pub tier: Option<String>,
}

impl NewUser {
    /// A user with only a name.
    pub fn named(username: impl Into<String>) -> Self {
        Self { username: username.into(), ..Self::default() }
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Opaque and permanent: what tokens name as `sub`.
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub password_hash: Option<Secret>,
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    pub tier: Option<String>,
    /// Logins are refused until this time.
    pub locked_until: Option<u64>,
    /// Whether that lock is an administrator's (see [`User::is_admin_locked`]).
    pub locked_by_admin: bool,
    pub disabled: bool,
    /// Tokens that carry an older version are no longer accepted.
    pub token_version: u32,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_login_at: Option<u64>,
}

impl User {
    /// Whether a lock is in force at `now`.
    pub fn is_locked(&self, now: u64) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }

    /// Whether an administrator's lock is in force at `now`: it also takes
    /// admin power from the user's tokens and API keys. The automatic lock
    /// after wrong passwords does not (anyone can trigger that one).
    pub fn is_admin_locked(&self, now: u64) -> bool {
        self.locked_by_admin && self.is_locked(now)
    }
}

/// Which users to list: an optional prefix of the username or e-mail address
/// (compared as their keys, so without regard to case), and a page.
#[derive(Clone, Debug)]
pub struct UserQuery {
    pub search: Option<String>,
    /// At most [`MAX_PAGE_SIZE`] (larger values are lowered to it).
    pub limit: u32,
    pub offset: u64,
}

impl Default for UserQuery {
    fn default() -> Self {
        Self { search: None, limit: 50, offset: 0 }
    }
}

/// Storage for user accounts. Methods that change a user fail with
/// [`StoreError::NotFound`] when there is no user with that id.
pub trait UserStore: Send + Sync {
    /// Stores a new user with a fresh id. A taken username or e-mail address is
    /// [`StoreError::Conflict`] with `field` `username` or `email`.
    fn create_user(&self, new: &NewUser, now: u64) -> impl Future<Output = Result<User>> + Send;

    fn user_by_id(&self, id: &str) -> impl Future<Output = Result<Option<User>>> + Send;

    /// The user whose username has the same [`username_key`] as `username`.
    fn user_by_username(&self, username: &str) -> impl Future<Output = Result<Option<User>>> + Send;

    /// The user whose e-mail address is `email`, regardless of case.
    fn user_by_email(&self, email: &str) -> impl Future<Output = Result<Option<User>>> + Send;

    /// One page of users in username order.
    fn list_users(&self, query: &UserQuery) -> impl Future<Output = Result<Vec<User>>> + Send;

    /// Replaces the password hash (`None` removes it). With `bump_token_version`
    /// the token version is raised in the same statement, so a password change
    /// ends every other session atomically. Returns the token version.
    fn set_password_hash(
        &self,
        id: &str,
        hash: Option<&Secret>,
        bump_token_version: bool,
        now: u64,
    ) -> impl Future<Output = Result<u32>> + Send;

    /// Replaces the hash only if it is still `current`: the rehash after a
    /// successful login, which must not undo a password change made meanwhile.
    /// Returns whether it was replaced.
    fn rehash_password(
        &self,
        id: &str,
        current: &Secret,
        new: &Secret,
        now: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces the e-mail address (`None` removes it) and its verified flag.
    fn set_email(
        &self,
        id: &str,
        email: Option<&str>,
        verified: bool,
        now: u64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Replaces the roles; returns them as stored (sorted, deduplicated).
    fn set_roles(&self, id: &str, roles: &[String], now: u64) -> impl Future<Output = Result<Vec<String>>> + Send;

    fn set_tier(&self, id: &str, tier: Option<&str>, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Refuses logins until `until`, replacing any lock in force: an
    /// administrator's lock (which may also shorten one), marked as such
    /// ([`User::is_admin_locked`]).
    fn lock_user(&self, id: &str, until: u64, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Refuses logins until `until` at least: a lock that already lasts
    /// longer (an administrator's, or an indefinite one) stays as it is. The
    /// automatic lockout after repeated failures uses this, so that failed
    /// guesses can never shorten a lock.
    fn extend_lock(&self, id: &str, until: u64, now: u64) -> impl Future<Output = Result<()>> + Send;

    fn unlock_user(&self, id: &str, now: u64) -> impl Future<Output = Result<()>> + Send;

    fn set_disabled(&self, id: &str, disabled: bool, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Raises the token version ("log out everywhere"); returns the new one.
    fn bump_token_version(&self, id: &str, now: u64) -> impl Future<Output = Result<u32>> + Send;

    /// Users changed after the position (`since` ms, `after` id) whose token
    /// version was ever raised: those changed at `since` with an id above
    /// `after` (every one for an empty `after`), then those changed later;
    /// `(id, token_version, updated_at)` in (time, id) order, at most `limit`.
    /// Every instance polls this to learn of "log out everywhere" and password
    /// changes made elsewhere.
    fn versions_changed_since(
        &self,
        since: u64,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(String, u32, u64)>>> + Send;

    /// Notes a successful login.
    fn record_login(&self, id: &str, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the user and, by cascade, their refresh and reset tokens.
    /// Returns whether there was such a user.
    fn delete_user(&self, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Erases the user's personal data (GDPR) in one transaction: every
    /// credential and session they hold is deleted (API keys are revoked and
    /// their names cleared, so that instances drop them from their caches),
    /// and the row becomes a tombstone: username `deleted:<id>`, no e-mail,
    /// password, roles or tier, disabled, token version raised (so that every
    /// instance refuses the user's tokens). The id stays: audit records name
    /// users by it, so the hash chain is untouched. Returns the new token
    /// version, or `None` when there is no such user.
    fn erase_user(&self, id: &str, now: u64) -> impl Future<Output = Result<Option<u32>>> + Send;
}

/// Tables whose rows belong to one user and go when the user is erased.
const ERASED_WITH_USER: [&str; 8] = [
    "refresh_tokens",
    "password_reset_tokens",
    "user_totp",
    "mfa_backup_codes",
    "passkeys",
    "webauthn_challenges",
    "sessions",
    "external_identities",
];

macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, username, email, email_verified, password_hash, roles, tier, locked_until, \
             locked_by_admin, disabled, token_version, created_at, updated_at, last_login_at FROM users ",
            $rest
        )
    };
}

const INSERT: &str = "INSERT INTO users (id, username, username_key, email, email_key, email_verified, password_hash, \
                      roles, tier, disabled, token_version, created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, 0, $10, $10)";
const BY_ID: &str = select_users!("WHERE id = $1");
const BY_USERNAME: &str = select_users!("WHERE username_key = $1");
const BY_EMAIL: &str = select_users!("WHERE email_key = $1");
const LIST: &str = select_users!("ORDER BY username_key LIMIT $1 OFFSET $2");
const SEARCH: &str = select_users!(
    "WHERE username_key LIKE $1 ESCAPE '\\' OR email_key LIKE $2 ESCAPE '\\' ORDER BY username_key LIMIT $3 OFFSET $4"
);
const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2, token_version = token_version + $3, updated_at = $4 \
                            WHERE id = $1 RETURNING token_version";
const REHASH: &str = "UPDATE users SET password_hash = $3, updated_at = $4 WHERE id = $1 AND password_hash = $2";
const SET_EMAIL: &str =
    "UPDATE users SET email = $2, email_key = $3, email_verified = $4, updated_at = $5 WHERE id = $1";
const SET_ROLES: &str = "UPDATE users SET roles = $2, updated_at = $3 WHERE id = $1";
const SET_TIER: &str = "UPDATE users SET tier = $2, updated_at = $3 WHERE id = $1";
const SET_LOCK: &str = "UPDATE users SET locked_until = $2, locked_by_admin = TRUE, updated_at = $3 WHERE id = $1";
const UNLOCK: &str = "UPDATE users SET locked_until = $2, locked_by_admin = FALSE, updated_at = $3 WHERE id = $1";
// An administrator's lock that is still in force stays one (if extended);
// one that ran out is no longer (both sides of SET read the old row).
const EXTEND_LOCK: &str = "UPDATE users SET locked_until = CASE WHEN locked_until IS NULL OR locked_until < $2 \
                           THEN $2 ELSE locked_until END, \
                           locked_by_admin = CASE WHEN locked_until IS NULL OR locked_until <= $3 \
                           THEN FALSE ELSE locked_by_admin END, updated_at = $3 WHERE id = $1";
const SET_DISABLED: &str = "UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1";
const BUMP: &str =
    "UPDATE users SET token_version = token_version + 1, updated_at = $2 WHERE id = $1 RETURNING token_version";
const RECORD_LOGIN: &str = "UPDATE users SET last_login_at = $2 WHERE id = $1";
const DELETE: &str = "DELETE FROM users WHERE id = $1";

row! {
    /// A row as stored; turned into a [`User`] after checking each field.
    struct Row {
        id: String,
        username: String,
        email: Option<String>,
        email_verified: bool,
        password_hash: Option<String>,
        roles: String,
        tier: Option<String>,
        locked_until: Option<i64>,
        locked_by_admin: bool,
        disabled: bool,
        token_version: i64,
        created_at: i64,
        updated_at: i64,
        last_login_at: Option<i64>,
    }
}

impl Row {
    fn into_user(self) -> Result<User> {
        let roles = serde_json::from_str(&self.roles)
            .map_err(|e| StoreError::Corrupt { what: "user roles", reason: e.to_string() })?;
        let token_version = u32::try_from(self.token_version).map_err(|_| StoreError::Corrupt {
            what: "token version",
            reason: format!("{} is out of range", self.token_version),
        })?;
        Ok(User {
            id: self.id,
            username: self.username,
            email: self.email,
            email_verified: self.email_verified,
            password_hash: self.password_hash.map(Secret::new),
            roles,
            tier: self.tier,
            locked_until: from_db_opt("locked_until", self.locked_until)?,
            locked_by_admin: self.locked_by_admin,
            disabled: self.disabled,
            token_version,
            created_at: from_db("created_at", self.created_at)?,
            updated_at: from_db("updated_at", self.updated_at)?,
            last_login_at: from_db_opt("last_login_at", self.last_login_at)?,
        })
    }
}

/// How an erased account's username (and its key) begins: `deleted:<id>`.
const ERASED_PREFIX: &str = "deleted:";

fn check_username(username: &str) -> Result<String> {
    check_required("username", username, MAX_USERNAME_BYTES)?;
    let key = username_key(username);
    if key.len() > MAX_USERNAME_BYTES * KEY_GROWTH {
        return Err(StoreError::TooLong { field: "username", max: MAX_USERNAME_BYTES });
    }
    // Erasure renames an account to `deleted:<id>`: a user who took that name
    // first (in any case or width: the key is compared) would block it.
    if key.starts_with(ERASED_PREFIX) {
        return Err(StoreError::Invalid { field: "username", reason: "must not begin with `deleted:`" });
    }
    Ok(key)
}

fn check_email(email: &str) -> Result<String> {
    check_required("email", email, MAX_EMAIL_BYTES)?;
    let key = email_key(email);
    if key.len() > MAX_EMAIL_BYTES * KEY_GROWTH {
        return Err(StoreError::TooLong { field: "email", max: MAX_EMAIL_BYTES });
    }
    Ok(key)
}

fn check_hash(hash: &Secret) -> Result<()> {
    check_required("password_hash", hash.expose(), MAX_PASSWORD_HASH_BYTES)
}

/// A role or tier name, which ends up in identity headers: no control
/// characters.
fn check_name(field: &'static str, name: &str, max: usize) -> Result<()> {
    check_required(field, name, max)?;
    if name.chars().any(char::is_control) {
        return Err(StoreError::Invalid { field, reason: "contains a control character" });
    }
    Ok(())
}

/// The roles as stored: checked, sorted, deduplicated, as JSON.
fn roles_json(roles: &[String]) -> Result<(Vec<String>, String)> {
    if roles.len() > MAX_ROLES * 4 {
        // Far too many even before deduplication: do not sort them.
        return Err(StoreError::Invalid { field: "roles", reason: "too many roles" });
    }
    for role in roles {
        check_name("role", role, MAX_ROLE_BYTES)?;
    }
    let mut sorted = roles.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() > MAX_ROLES {
        return Err(StoreError::Invalid { field: "roles", reason: "too many roles" });
    }
    let json = serde_json::to_string(&sorted)
        .map_err(|e| StoreError::Corrupt { what: "user roles", reason: e.to_string() })?;
    Ok((sorted, json))
}

/// `prefix` as a LIKE pattern that matches only itself at the start.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// `NotFound` unless a statement changed a row.
fn changed(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(StoreError::NotFound { what: "user" })
    } else {
        Ok(())
    }
}

fn version(v: Option<i64>) -> Result<u32> {
    let v = v.ok_or(StoreError::NotFound { what: "user" })?;
    u32::try_from(v).map_err(|_| StoreError::Corrupt { what: "token version", reason: format!("{v} is out of range") })
}

impl Database {
    async fn one_user(&self, sql: &'static str, key: &str) -> Result<Option<User>> {
        let row: Option<Row> = with_pool!(self, |pool| { sqlx::query_as(sql).bind(key).fetch_optional(pool).await? });
        row.map(Row::into_user).transpose()
    }

    /// Runs an UPDATE of the user `id` (`$1`), binding `values` as `$2`, `$3`, ….
    async fn update_user(&self, id: &str, sql: &'static str, values: UserValues<'_>) -> Result<()> {
        if !storable(id, MAX_ID_BYTES) {
            return Err(StoreError::NotFound { what: "user" });
        }
        let rows = with_pool!(self, |pool| {
            let mut q = sqlx::query(sql).bind(id);
            for v in values.0 {
                q = match v {
                    Value::Text(t) => q.bind(t),
                    Value::Int(n) => q.bind(n),
                    Value::Bool(b) => q.bind(b),
                };
            }
            q.execute(pool).await?.rows_affected()
        });
        changed(rows)
    }
}

/// The values bound after the id in [`Database::update_user`].
struct UserValues<'a>(Vec<Value<'a>>);

enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
}

impl UserStore for Database {
    #[tracing::instrument(skip_all)]
    async fn create_user(&self, new: &NewUser, now: u64) -> Result<User> {
        let key = check_username(&new.username)?;
        let email_key = new.email.as_deref().map(check_email).transpose()?;
        if let Some(hash) = &new.password_hash {
            check_hash(hash)?;
        }
        if let Some(tier) = &new.tier {
            check_name("tier", tier, MAX_TIER_BYTES)?;
        }
        let (roles, roles_json) = roles_json(&new.roles)?;
        let at = to_db("now", now)?;
        let id = new_id();
        with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(&id)
                .bind(&new.username)
                .bind(&key)
                .bind(new.email.as_deref())
                .bind(email_key.as_deref())
                .bind(new.email_verified)
                .bind(new.password_hash.as_ref().map(Secret::expose))
                .bind(&roles_json)
                .bind(new.tier.as_deref())
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(User {
            id,
            username: new.username.clone(),
            email: new.email.clone(),
            email_verified: new.email_verified,
            password_hash: new.password_hash.clone(),
            roles,
            tier: new.tier.clone(),
            locked_until: None,
            locked_by_admin: false,
            disabled: false,
            token_version: 0,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(None);
        }
        self.one_user(BY_ID, id).await
    }

    #[tracing::instrument(skip_all)]
    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let Ok(key) = check_username(username) else { return Ok(None) };
        self.one_user(BY_USERNAME, &key).await
    }

    #[tracing::instrument(skip_all)]
    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let Ok(key) = check_email(email) else { return Ok(None) };
        self.one_user(BY_EMAIL, &key).await
    }

    #[tracing::instrument(skip_all)]
    async fn list_users(&self, query: &UserQuery) -> Result<Vec<User>> {
        let limit = i64::from(query.limit.min(MAX_PAGE_SIZE));
        // An offset past any table is simply past the end.
        let offset = i64::try_from(query.offset).unwrap_or(i64::MAX);
        let search = query.search.as_deref().filter(|s| !s.is_empty());
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = match search {
            None => with_pool!(self, |pool| { sqlx::query_as(LIST).bind(limit).bind(offset).fetch_all(pool).await? }),
            Some(prefix) => {
                // A prefix no stored value can start with matches nothing.
                if !storable(prefix, MAX_EMAIL_BYTES.max(MAX_USERNAME_BYTES)) {
                    return Ok(Vec::new());
                }
                let by_name = prefix_pattern(&username_key(prefix));
                let by_email = prefix_pattern(&email_key(prefix));
                with_pool!(self, |pool| {
                    sqlx::query_as(SEARCH)
                        .bind(&by_name)
                        .bind(&by_email)
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(pool)
                        .await?
                })
            }
        };
        rows.into_iter().map(Row::into_user).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn versions_changed_since(&self, since: u64, after: &str, limit: u32) -> Result<Vec<(String, u32, u64)>> {
        // Keyset paging on (updated_at, id), as for API keys.
        const SQL: &str = "SELECT id, token_version, updated_at FROM users \
                           WHERE updated_at >= $1 AND (updated_at > $1 OR id > $2) AND token_version > 0 \
                           ORDER BY updated_at, id LIMIT $3";
        let since = to_db("since", since)?;
        let rows: Vec<(String, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL).bind(since).bind(after).bind(i64::from(limit)).fetch_all(pool).await?
        });
        rows.into_iter().map(|(id, v, at)| Ok((id, version(Some(v))?, from_db("updated_at", at)?))).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn set_password_hash(&self, id: &str, hash: Option<&Secret>, bump: bool, now: u64) -> Result<u32> {
        if let Some(hash) = hash {
            check_hash(hash)?;
        }
        let at = to_db("now", now)?;
        if !storable(id, MAX_ID_BYTES) {
            return Err(StoreError::NotFound { what: "user" });
        }
        let v: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(SET_PASSWORD)
                .bind(id)
                .bind(hash.map(Secret::expose))
                .bind(i64::from(bump))
                .bind(at)
                .fetch_optional(pool)
                .await?
        });
        version(v)
    }

    #[tracing::instrument(skip_all)]
    async fn rehash_password(&self, id: &str, current: &Secret, new: &Secret, now: u64) -> Result<bool> {
        check_hash(new)?;
        let at = to_db("now", now)?;
        if !storable(id, MAX_ID_BYTES) || check_hash(current).is_err() {
            return Ok(false);
        }
        let rows = with_pool!(self, |pool| {
            sqlx::query(REHASH)
                .bind(id)
                .bind(current.expose())
                .bind(new.expose())
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(rows == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn set_email(&self, id: &str, email: Option<&str>, verified: bool, now: u64) -> Result<()> {
        let key = email.map(check_email).transpose()?;
        let values = vec![
            Value::Text(email),
            Value::Text(key.as_deref()),
            Value::Bool(verified && email.is_some()),
            Value::Int(Some(to_db("now", now)?)),
        ];
        self.update_user(id, SET_EMAIL, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn set_roles(&self, id: &str, roles: &[String], now: u64) -> Result<Vec<String>> {
        let (roles, json) = roles_json(roles)?;
        let values = vec![Value::Text(Some(&json)), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, SET_ROLES, UserValues(values)).await?;
        Ok(roles)
    }

    #[tracing::instrument(skip_all)]
    async fn set_tier(&self, id: &str, tier: Option<&str>, now: u64) -> Result<()> {
        if let Some(tier) = tier {
            check_name("tier", tier, MAX_TIER_BYTES)?;
        }
        let values = vec![Value::Text(tier), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, SET_TIER, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn lock_user(&self, id: &str, until: u64, now: u64) -> Result<()> {
        let values = vec![Value::Int(Some(to_db("until", until)?)), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, SET_LOCK, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn extend_lock(&self, id: &str, until: u64, now: u64) -> Result<()> {
        let values = vec![Value::Int(Some(to_db("until", until)?)), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, EXTEND_LOCK, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn unlock_user(&self, id: &str, now: u64) -> Result<()> {
        let values = vec![Value::Int(None), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, UNLOCK, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn set_disabled(&self, id: &str, disabled: bool, now: u64) -> Result<()> {
        let values = vec![Value::Bool(disabled), Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, SET_DISABLED, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn bump_token_version(&self, id: &str, now: u64) -> Result<u32> {
        let at = to_db("now", now)?;
        if !storable(id, MAX_ID_BYTES) {
            return Err(StoreError::NotFound { what: "user" });
        }
        let v: Option<i64> =
            with_pool!(self, |pool| { sqlx::query_scalar(BUMP).bind(id).bind(at).fetch_optional(pool).await? });
        version(v)
    }

    #[tracing::instrument(skip_all)]
    async fn record_login(&self, id: &str, now: u64) -> Result<()> {
        let values = vec![Value::Int(Some(to_db("now", now)?))];
        self.update_user(id, RECORD_LOGIN, UserValues(values)).await
    }

    #[tracing::instrument(skip_all)]
    async fn erase_user(&self, id: &str, now: u64) -> Result<Option<u32>> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(None);
        }
        let at = to_db("now", now)?;
        let tombstone = format!("{ERASED_PREFIX}{id}");
        let version: Option<i64> = with_pool!(self, |pool, sql| {
            // Reads before it writes: on SQLite a deferred transaction would
            // fail at its first write (SQLITE_BUSY_SNAPSHOT) if another
            // connection wrote in between, so it takes the write lock first.
            let mut tx = pool.begin_with(sql.begin_write).await?;
            for table in ERASED_WITH_USER {
                // A table that a later migration adds may be absent in an
                // older database: only existing tables are emptied.
                let exists: Option<i64> = sqlx::query_scalar(if sql.advisory_lock.is_some() {
                    "SELECT 1::BIGINT FROM information_schema.tables WHERE table_name = $1"
                } else {
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1"
                })
                .bind(table)
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_some() {
                    sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1")).bind(id).execute(&mut *tx).await?;
                }
            }
            sqlx::query(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2), name = 'erased', updated_at = $2 \
                 WHERE user_id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            let version: Option<i64> = sqlx::query_scalar(
                "UPDATE users SET username = $2, username_key = $2, email = NULL, email_key = NULL, \
                 email_verified = FALSE, password_hash = NULL, roles = '[]', tier = NULL, disabled = TRUE, \
                 locked_until = NULL, locked_by_admin = FALSE, last_login_at = NULL, token_version = token_version + 1, updated_at = $3 \
                 WHERE id = $1 RETURNING token_version",
            )
            .bind(id)
            .bind(&tombstone)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            version
        });
        version
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| StoreError::Corrupt { what: "token_version", reason: format!("{v} is out of range") })
            })
            .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user(&self, id: &str) -> Result<bool> {
        if !storable(id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let rows = with_pool!(self, |pool| { sqlx::query(DELETE).bind(id).execute(pool).await?.rows_affected() });
        Ok(rows > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn like_metacharacters_match_only_themselves() {
        assert_eq!(prefix_pattern("a_b%c\\"), "a\\_b\\%c\\\\%");
        assert_eq!(prefix_pattern(""), "%");
    }

    #[test]
    fn roles_are_checked_sorted_and_deduplicated() {
        let (roles, json) = roles_json(&["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(roles, ["a", "b"]);
        assert_eq!(json, r#"["a","b"]"#);
        assert!(matches!(roles_json(&["".into()]), Err(StoreError::Invalid { field: "role", .. })));
        assert!(matches!(roles_json(&["a\nb".into()]), Err(StoreError::Invalid { field: "role", .. })));
        assert!(matches!(roles_json(&["a\0".into()]), Err(StoreError::NulByte { field: "role" })));
        let many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
        assert!(matches!(roles_json(&many), Err(StoreError::Invalid { field: "roles", .. })));
        let repeated = vec!["same".to_string(); MAX_ROLES * 2];
        assert_eq!(roles_json(&repeated).unwrap().0, ["same"]);
    }

    #[test]
    fn username_keys_fold_case_and_compatibility_forms() {
        for (name, key) in [("Alice", "alice"), ("ＡＬＩＣＥ", "alice"), ("ﬁsh", "fish"), ("ÉMILE", "émile")] {
            assert_eq!(username_key(name), key, "{name}");
        }
        // A look-alike from another script is a different name: the policy
        // on allowed scripts is the service's.
        assert_ne!(username_key("аlice"), "alice");
    }
}
