//! Browser sessions (`[identity.sessions]`): a random token in a cookie,
//! the session behind it on the server.
//!
//! - **Tokens**: `rs_` + 32 random bytes (base64url). Only their SHA-256 is
//!   stored; the cookie is `__Host-`-prefixed, `HttpOnly`, `Secure`,
//!   `SameSite=Lax` by default.
//! - **Store**: the database (`sessions` table) on one node, or Redis when
//!   `[redis]` is configured (`store = "auto"`); see [`SessionBackend`].
//!   Sessions survive restarts and reloads either way (Redis: as long as
//!   Redis keeps its data). The store is read once per session-authenticated
//!   request; when it cannot be read the request gets 503 (fail closed).
//! - **Timeouts**: a session ends `idle_timeout` after its last use and
//!   `absolute_timeout` after login, whatever happens. Use is written at most
//!   once per `touch_interval` (sliding renewal without a write per request);
//!   each such touch re-reads the user: a disabled or locked user's sessions
//!   end, and changed roles or tier are a privilege change (below).
//! - **No fixation**: a login always makes a new session with a new token,
//!   and ends the session the browser presented before, if any; the server
//!   never adopts a token it did not make. On a privilege change (roles or
//!   tier changed, a second factor proved in the session) the session gets a
//!   new token and the browser a new cookie.
//! - **Revocation**: logout ends the session; "log out everywhere", a
//!   password change or reset and a lock raise the user's token version,
//!   which [`super::revoke::Revocations`] checks on every request without I/O
//!   (and every touch checks against the database); a user can list and end
//!   their sessions.
//! - **CSRF**: a token bound to the session, `nonce.HMAC(key, session hash,
//!   nonce)`, checked with [`Sessions::csrf_valid`] (see [`crate::auth::csrf`]).
//! - **Clock**: read through [`Clock`], which tests move forward.

/// Sent by the built-in pages on their own periodic requests (the
/// dashboard's statistics): such a request does not count as activity for
/// the idle timeout (it is checked as any other). Any value; a client that
/// sends it only shortens its own session.
pub const BACKGROUND_HEADER: &str = "x-rampart-background";

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use http::HeaderValue;
use rampart_core::config::sessions::{SessionSettings, SessionStoreKind};
use rampart_core::principal::{AuthMethod, Principal};
use ring::rand::{SecureRandom, SystemRandom};

use super::keys::derive;
use super::revoke::Revocations;
use super::service::{ms, now_ms, random_token};
use crate::limit::redis::RedisStore;
use crate::store::identity::{
    NewSession, SessionRecord, SessionStore, SessionTouch, StoreError, TokenHash, User, UserStore,
};
use crate::store::Database;

mod redis_store;

/// Longest session cookie value looked up (a real one is 46 bytes).
const MAX_TOKEN_BYTES: usize = 128;

/// Milliseconds since the epoch, plus an offset that only tests move.
#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        now_ms().saturating_add(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward (tests of timeouts).
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_ms.fetch_add(ms(by), Ordering::Relaxed);
    }
}

/// Where sessions live.
pub enum SessionBackend<'a> {
    Database(&'a Database),
    Redis(&'a RedisStore),
}

/// Why a presented session does not authenticate.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum SessionRefusal {
    /// Malformed, unknown or already ended.
    Unknown,
    Expired,
    Idle,
    /// Logged out everywhere, password changed, user locked or disabled.
    Revoked,
    /// The store or the revocation list cannot be read now (503).
    Unavailable,
}

impl SessionRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unknown => "unknown_session",
            Self::Expired => "session_expired",
            Self::Idle => "session_idle",
            Self::Revoked => "session_revoked",
            Self::Unavailable => "sessions_unavailable",
        }
    }
}

/// A session that authenticated a request.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub record: SessionRecord,
    /// Set when this request changed the session's token (privilege change):
    /// the new token, for a new cookie.
    pub new_token: Option<String>,
}

impl ActiveSession {
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.record.user_id.clone(),
            api_key_id: None,
            issuer: None,
            tier: self.record.tier.clone(),
            roles: self.record.roles.clone(),
            scopes: Vec::new(),
            method: AuthMethod::Session,
        }
    }

    /// The hash of the session's token as of now.
    pub fn hash(&self) -> TokenHash {
        self.new_token.as_deref().map_or(self.record.token_hash, TokenHash::of)
    }
}

/// Who is logging in, from where.
#[derive(Debug, Clone, Default)]
pub struct LoginContext {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The session token the browser presented with the login, if any: it
    /// is ended, never adopted.
    pub previous: Option<String>,
}

pub struct Sessions {
    pub settings: SessionSettings,
    db: Database,
    redis: OnceLock<RedisStore>,
    csrf_key: ring::hmac::Key,
    pub clock: Clock,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("cookie", &self.settings.cookie_name).finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(settings: SessionSettings, db: Database, secret_key: &str) -> Self {
        let csrf_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(secret_key, "rampart csrf v1"));
        Self { settings, db, redis: OnceLock::new(), csrf_key, clock: Clock::default() }
    }

    /// Keeps sessions in Redis from now on, when the settings say so
    /// (`store = "auto"` or `"redis"`). Called once at start, before serving.
    pub fn use_redis(&self, redis: Option<RedisStore>) -> anyhow::Result<()> {
        match (self.settings.store, redis) {
            (SessionStoreKind::Database, _) | (SessionStoreKind::Auto, None) => Ok(()),
            (SessionStoreKind::Redis, None) => {
                anyhow::bail!("[identity.sessions] store = \"redis\" needs a [redis] section")
            }
            (_, Some(redis)) => {
                let _ = self.redis.set(redis);
                Ok(())
            }
        }
    }

    fn backend(&self) -> SessionBackend<'_> {
        match self.redis.get() {
            Some(r) => SessionBackend::Redis(r),
            None => SessionBackend::Database(&self.db),
        }
    }

    /// Which store holds sessions (`database` or `redis`).
    pub fn store_name(&self) -> &'static str {
        match self.backend() {
            SessionBackend::Database(_) => "database",
            SessionBackend::Redis(_) => "redis",
        }
    }

    fn idle_ms(&self) -> u64 {
        ms(self.settings.idle_timeout)
    }

    /// Starts a session for `user` (whose login just succeeded); returns its
    /// token. The session the browser presented before, if any, ends.
    pub async fn start(
        &self,
        user: &User,
        amr: &[&str],
        ctx: &LoginContext,
    ) -> Result<(String, SessionRecord), StoreError> {
        if let Some(old) = ctx.previous.as_deref().filter(|t| well_formed(t)) {
            self.delete(&TokenHash::of(old)).await?;
        }
        let now = self.clock.now_ms();
        let token = random_token("rs_").map_err(|e| StoreError::Corrupt { what: "random", reason: e.to_string() })?;
        let new = NewSession {
            token_hash: TokenHash::of(&token),
            user_id: user.id.clone(),
            roles: user.roles.clone(),
            tier: user.tier.clone(),
            token_version: user.token_version,
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: now.saturating_add(ms(self.settings.absolute_timeout)),
            user_agent: ctx.user_agent.clone(),
            ip: ctx.ip.clone(),
        };
        let keep = self.settings.max_per_user;
        let record = match self.backend() {
            SessionBackend::Database(db) => db.create_session(&new, keep, now).await?,
            SessionBackend::Redis(r) => redis_store::create(r, &new, keep, now, self.idle_ms()).await?,
        };
        Ok((token, record))
    }

    async fn get(&self, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.session_by_hash(hash).await,
            SessionBackend::Redis(r) => redis_store::get(r, hash).await,
        }
    }

    async fn delete(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.delete_session(hash).await,
            SessionBackend::Redis(r) => redis_store::delete(r, hash).await,
        }
    }

    /// The session a cookie value names, if it is valid now; renews it (at
    /// most once per `touch_interval`) and gives it a new token when the
    /// user's privileges changed. A `background` request (a page's own
    /// polling, see [`BACKGROUND_HEADER`]) is checked as any other (the user
    /// as stored, once per `touch_interval`) but does not count as activity,
    /// so an open dashboard left alone still reaches `idle_timeout`. Without
    /// `may_rotate` (a forward-auth check: the front proxy drops the check's
    /// `Set-Cookie`, so a new token would log the user out) new privileges
    /// are written to the session under its token as it is.
    pub async fn authenticate(
        &self,
        token: &str,
        ip: Option<String>,
        revocations: &Revocations,
        background: bool,
        may_rotate: bool,
    ) -> Result<ActiveSession, SessionRefusal> {
        if !well_formed(token) {
            return Err(SessionRefusal::Unknown);
        }
        let hash = TokenHash::of(token);
        let unavailable = |e: StoreError| {
            tracing::warn!(target: "rampart::auth", error = %e, "the session store cannot be read");
            SessionRefusal::Unavailable
        };
        let mut record = self.get(&hash).await.map_err(unavailable)?.ok_or(SessionRefusal::Unknown)?;
        let now = self.clock.now_ms();
        let ended = |why: SessionRefusal| async move {
            if let Err(e) = self.delete(&hash).await {
                tracing::warn!(target: "rampart::auth", error = %e, "an ended session could not be deleted");
            }
            Err(why)
        };
        if now >= record.expires_at {
            return ended(SessionRefusal::Expired).await;
        }
        if now >= record.last_seen_at.saturating_add(self.idle_ms()) {
            return ended(SessionRefusal::Idle).await;
        }
        if !revocations.is_current(now_ms()) {
            return Err(SessionRefusal::Unavailable);
        }
        if revocations.is_revoked(&record.user_id, None, record.token_version) {
            return ended(SessionRefusal::Revoked).await;
        }
        let mut active = ActiveSession { record: record.clone(), new_token: None };
        if now.saturating_sub(record.last_seen_at) < ms(self.settings.touch_interval) {
            return Ok(active);
        }
        // A touch: the user as stored now decides. An administrator's lock
        // ends the session; the automatic lock after wrong passwords does not
        // (anyone who knows the username can trigger that one).
        let user = self.db.user_by_id(&record.user_id).await.map_err(unavailable)?;
        let Some(user) =
            user.filter(|u| !u.disabled && !u.is_admin_locked(now_ms()) && u.token_version == record.token_version)
        else {
            return ended(SessionRefusal::Revoked).await;
        };
        let changed = user.roles != record.roles || user.tier != record.tier;
        if background && !changed {
            // Checked against the user as stored, but no activity: nothing
            // to write, and `last_seen` stays where the user left it.
            return Ok(active);
        }
        // A background request that finds new privileges rotates the
        // session as any other, without counting as activity.
        let seen = if background { record.last_seen_at } else { now };
        let touch = SessionTouch {
            last_seen_at: seen,
            ip,
            roles: user.roles.clone(),
            tier: user.tier.clone(),
            token_version: user.token_version,
        };
        let done = if changed && may_rotate {
            let new_token = random_token("rs_").map_err(|_| SessionRefusal::Unavailable)?;
            let done = self.rotate(&hash, &TokenHash::of(&new_token), &touch).await.map_err(unavailable)?;
            active.new_token = Some(new_token);
            done
        } else {
            self.touch(&hash, &touch).await.map_err(unavailable)?
        };
        if !done {
            // Ended meanwhile (logout in another tab).
            return Err(SessionRefusal::Unknown);
        }
        record.last_seen_at = seen;
        record.roles = touch.roles;
        record.tier = touch.tier;
        if let Some(t) = &active.new_token {
            record.token_hash = TokenHash::of(t);
        }
        active.record = record;
        Ok(active)
    }

    async fn touch(&self, hash: &TokenHash, touch: &SessionTouch) -> Result<bool, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.touch_session(hash, touch).await,
            SessionBackend::Redis(r) => redis_store::touch(r, hash, touch, self.idle_ms()).await,
        }
    }

    async fn rotate(&self, old: &TokenHash, new: &TokenHash, touch: &SessionTouch) -> Result<bool, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.rotate_session(old, new, touch).await,
            SessionBackend::Redis(r) => redis_store::rotate(r, old, new, touch, self.idle_ms()).await,
        }
    }

    /// Gives a session a new token now (a privilege change within it, such
    /// as a second factor enrolled); returns the token for the new cookie.
    pub async fn renew(&self, session: &ActiveSession) -> Result<Option<String>, StoreError> {
        let r = &session.record;
        let touch = SessionTouch {
            last_seen_at: self.clock.now_ms(),
            ip: None,
            roles: r.roles.clone(),
            tier: r.tier.clone(),
            token_version: r.token_version,
        };
        let token = random_token("rs_").map_err(|e| StoreError::Corrupt { what: "random", reason: e.to_string() })?;
        Ok(self.rotate(&session.hash(), &TokenHash::of(&token), &touch).await?.then_some(token))
    }

    /// Ends one session (logout).
    pub async fn end(&self, hash: &TokenHash) -> Result<bool, StoreError> {
        self.delete(hash).await
    }

    /// Ends the user's session with public id `id`; false when they have none such.
    pub async fn end_one(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.delete_user_session(user_id, id).await,
            SessionBackend::Redis(r) => redis_store::delete_by_id(r, user_id, id).await,
        }
    }

    /// Ends every session of the user but `keep`; returns how many ended.
    pub async fn end_all(&self, user_id: &str, keep: Option<&TokenHash>) -> Result<u64, StoreError> {
        match self.backend() {
            SessionBackend::Database(db) => db.delete_user_sessions(user_id, keep).await,
            SessionBackend::Redis(r) => redis_store::delete_all(r, user_id, keep).await,
        }
    }

    /// The user's sessions that are still valid, newest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let all = match self.backend() {
            SessionBackend::Database(db) => db.list_user_sessions(user_id).await?,
            SessionBackend::Redis(r) => redis_store::list(r, user_id).await?,
        };
        let now = self.clock.now_ms();
        Ok(all
            .into_iter()
            .filter(|s| now < s.expires_at && now < s.last_seen_at.saturating_add(self.idle_ms()))
            .collect())
    }

    /// Deletes expired sessions from the database every few minutes (Redis
    /// expires its own).
    pub fn spawn_purge(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                let now = this.clock.now_ms();
                if let Err(e) = this.db.purge_sessions(now, now.saturating_sub(this.idle_ms())).await {
                    tracing::warn!(error = %e, "purging expired sessions failed");
                }
            }
        });
    }

    /// The `Set-Cookie` value that hands the browser `token`.
    pub fn cookie(&self, token: &str) -> Option<HeaderValue> {
        let s = &self.settings;
        let secure = if s.secure { "; Secure" } else { "" };
        let max_age = s.absolute_timeout.as_secs();
        HeaderValue::from_str(&format!(
            "{}={token}; Path=/; HttpOnly{secure}; SameSite={}; Max-Age={max_age}",
            s.cookie_name,
            s.same_site.as_str()
        ))
        .ok()
    }

    /// The `Set-Cookie` values that remove the session and CSRF cookies.
    pub fn clearing_cookies(&self) -> [HeaderValue; 2] {
        let s = &self.settings;
        let secure = if s.secure { "; Secure" } else { "" };
        let clear = |name: &str, http_only: &str| {
            HeaderValue::from_str(&format!("{name}=; Path=/{http_only}{secure}; SameSite=Lax; Max-Age=0"))
                .unwrap_or_else(|_| HeaderValue::from_static("rampart=; Max-Age=0"))
        };
        [clear(&s.cookie_name, "; HttpOnly"), clear(&s.csrf_cookie, "")]
    }

    /// The `Set-Cookie` value that offers scripts the CSRF token (readable,
    /// not `HttpOnly`; the token alone opens nothing).
    pub fn csrf_cookie(&self, csrf: &str) -> Option<HeaderValue> {
        let s = &self.settings;
        let secure = if s.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{}={csrf}; Path=/{secure}; SameSite=Strict", s.csrf_cookie)).ok()
    }

    /// A fresh CSRF token for the session whose token hashes to `session`.
    pub fn csrf_token(&self, session: &TokenHash) -> String {
        let mut nonce = [0u8; 16];
        if SystemRandom::new().fill(&mut nonce).is_err() {
            // Without randomness the token is still bound to the session.
            nonce = [0; 16];
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tag = ring::hmac::sign(&self.csrf_key, &csrf_message(session, &nonce));
        format!("{}.{}", b64.encode(nonce), b64.encode(tag.as_ref()))
    }

    /// Whether `presented` is a CSRF token made for this session (constant
    /// time in the MAC).
    pub fn csrf_valid(&self, session: &TokenHash, presented: &str) -> bool {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if presented.len() > 128 {
            return false;
        }
        let Some((nonce, tag)) = presented.trim().split_once('.') else { return false };
        let (Ok(nonce), Ok(tag)) = (b64.decode(nonce), b64.decode(tag)) else { return false };
        if nonce.len() != 16 {
            return false;
        }
        ring::hmac::verify(&self.csrf_key, &csrf_message(session, &nonce), &tag).is_ok()
    }

    /// The session cookie's value in a request's `Cookie` headers.
    pub fn token_in(&self, headers: &http::HeaderMap) -> Option<String> {
        cookie_value(headers, &self.settings.cookie_name)
    }
}

fn csrf_message(session: &TokenHash, nonce: &[u8]) -> Vec<u8> {
    let mut m = b"csrf\0".to_vec();
    m.extend_from_slice(session.as_bytes());
    m.extend_from_slice(nonce);
    m
}

/// Whether `token` could be one of ours (checked before any lookup).
fn well_formed(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.starts_with("rs_")
        && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The first value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    for header in headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()) {
        for pair in header.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == name && !v.is_empty() {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rampart_core::config::sessions::SessionsConfig;

    async fn sessions() -> Sessions {
        let cfg = SessionsConfig { enabled: true, ..Default::default() };
        let mut errs = Vec::new();
        let at = rampart_core::config::ConfigPath::parse("identity");
        let settings = rampart_core::config::sessions::compile_sessions(&cfg, &at, &mut errs).unwrap();
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Sessions::new(settings, db, "0123456789abcdef0123456789abcdef")
    }

    #[tokio::test]
    async fn csrf_tokens_are_bound_to_their_session() {
        let s = sessions().await;
        let (a, b) = (TokenHash::of("rs_a"), TokenHash::of("rs_b"));
        let token = s.csrf_token(&a);
        assert!(s.csrf_valid(&a, &token));
        assert!(!s.csrf_valid(&b, &token));
        assert_ne!(s.csrf_token(&a), token, "a fresh nonce each time");
        for bad in ["", ".", "x.y", "AAAAAAAAAAAAAAAAAAAAAA.", &"a".repeat(500), "AAAA.AAAA", "\u{0}.\u{0}"] {
            assert!(!s.csrf_valid(&a, bad), "{bad:?}");
        }
        // Flipping one character of the MAC is refused.
        let mut chars: Vec<char> = token.chars().collect();
        let last = chars.len() - 2;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        assert!(!s.csrf_valid(&a, &chars.into_iter().collect::<String>()));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("x__Host-s=no; __Host-s=\"rs_1\"; other=2"));
        assert_eq!(cookie_value(&h, "__Host-s").as_deref(), Some("rs_1"));
        assert_eq!(cookie_value(&h, "missing"), None);
        assert!(!well_formed("rs_a;b") && !well_formed("xx_abc") && !well_formed(&format!("rs_{}", "a".repeat(200))));
    }
}
