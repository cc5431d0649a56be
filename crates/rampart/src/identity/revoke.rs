//! Revocation of the access tokens Rampart issued, checked on every request
//! without I/O.
//!
//! Two kinds of revocation, both ending with the tokens they name:
//! - **one token**: logout denies its `jti` until the token's `exp`;
//! - **every token of a user**: "log out everywhere", a password change or
//!   reset, a lock raise the user's token version; tokens carrying an older
//!   `ver` are refused.
//!
//! Each instance holds both in memory ([`Revocations::is_revoked`] is two map
//! lookups). The database is the record: a revocation is written there first
//! (`revoked_jtis`, `users.token_version`), and every instance polls it for what
//! changed since its last look (every [`POLL`], with an overlap for clock skew
//! and late commits), so revocations made by another instance or by the CLI
//! arrive within a poll. With Redis configured they are also announced on the
//! `<prefix>revocations` channel, which every instance applies at once.
//!
//! **Fail closed**: when the poll has not succeeded for [`STALE_AFTER`] (the
//! database is unreachable), this instance cannot know what was revoked
//! elsewhere; [`Revocations::is_current`] turns false and the bearer layer
//! refuses our own tokens with 503 until the poll succeeds again. Tokens of
//! external issuers are unaffected.
//!
//! Memory: one entry per revoked token or per user whose version was raised,
//! kept only while a token it names could still be valid (access tokens live
//! at most `access_ttl`); expired entries are swept at each poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::limit::redis::RedisStore;
use crate::store::identity::{DenylistStore, UserStore};
use crate::store::Database;

/// How often every instance reads new revocations from the database.
pub const POLL: Duration = Duration::from_secs(2);
/// A poll reads back this far before the previous one (clock skew between
/// instances, transactions committed late).
const OVERLAP_MS: u64 = 30_000;
/// Without a successful poll for this long, our own tokens are refused.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// Rows read per page and kind.
const PAGE: u32 = 5_000;
/// Pages read per poll while they come back full; a longer backlog is read
/// over several polls.
const PAGES_PER_POLL: u32 = 8;
/// Pages read at start: the whole backlog of a token lifetime as a rule, so
/// that the view is in sync (and own tokens accepted) from the first request.
const PAGES_AT_START: u32 = 200;
/// Polls between deletions of expired rows (about ten minutes).
const PURGE_EVERY: u64 = 300;
/// Margin past `exp` (the verifier's leeway and clock skew).
const MARGIN_MS: u64 = 120_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Announcement {
    Token { jti: String, until_ms: u64 },
    User { user_id: String, version: u32, until_ms: u64 },
}

pub struct Revocations {
    /// Denied `jti` → when the entry may go (ms).
    jtis: RwLock<HashMap<String, u64>>,
    /// User id → (lowest valid token version, when the entry may go).
    users: RwLock<HashMap<String, (u32, u64)>>,
    db: Database,
    /// How long an access token lives (ms): how long a user entry matters.
    token_life_ms: u64,
    /// Unix ms of the last successful poll.
    last_sync: AtomicU64,
    /// Where the next poll reads denied `jti`s from: (Unix ms, last id read
    /// at that ms, empty for all of it).
    denied_cursor: Mutex<(u64, String)>,
    /// The same for raised token versions (by user id). Each kind keeps its
    /// own cursor, moved only by its own page: a full page of one kind must
    /// not carry the other past rows it has not read.
    versions_cursor: Mutex<(u64, String)>,
    /// Polls so far (expired rows are deleted every [`PURGE_EVERY`]).
    polls: AtomicU64,
    stale_after_ms: u64,
    redis: std::sync::OnceLock<RedisStore>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations").field("jtis", &self.jtis_len()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a kind's next poll starts. After a full page: right after its last
/// row (no overlap, or a long backlog would be read forever; the id moves past
/// a run of rows of the same millisecond). Otherwise: the overlap back from
/// now, from the first row of that millisecond.
fn next_cursor(last: Option<(u64, &String)>, full: bool, since: u64, now_ms: u64) -> (u64, String) {
    match last {
        Some((at, id)) if full => (at, id.clone()),
        _ => (now_ms.saturating_sub(OVERLAP_MS).max(since), String::new()),
    }
}

impl Revocations {
    /// Loads what is in force now from the database (a restart forgets
    /// nothing). Fails when the database cannot be read.
    /// `token_life`: how long the longest-lived revocable token lives
    /// ([`IdentitySettings::revocable_token_life`](rampart_core::config::identity::IdentitySettings::revocable_token_life)).
    pub async fn load(db: Database, token_life: Duration, now_ms: u64) -> anyhow::Result<Arc<Self>> {
        let this = Arc::new(Self {
            jtis: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            db,
            token_life_ms: u64::try_from(token_life.as_millis()).unwrap_or(u64::MAX),
            last_sync: AtomicU64::new(0),
            denied_cursor: Mutex::new((0, String::new())),
            versions_cursor: Mutex::new((0, String::new())),
            polls: AtomicU64::new(0),
            stale_after_ms: u64::try_from(STALE_AFTER.as_millis()).unwrap_or(u64::MAX),
            redis: std::sync::OnceLock::new(),
        });
        let start = now_ms.saturating_sub(this.token_life_ms.saturating_add(MARGIN_MS));
        *lock(&this.denied_cursor) = (start, String::new());
        *lock(&this.versions_cursor) = (start, String::new());
        this.poll(now_ms, PAGES_AT_START).await?;
        Ok(this)
    }

    /// Starts the poll (and, with Redis, the announcement listener) for as
    /// long as the process runs.
    pub fn spawn_sync(self: &Arc<Self>, redis: Option<RedisStore>) {
        if let Some(store) = redis {
            let _ = self.redis.set(store.clone());
            let this = self.clone();
            tokio::spawn(async move { this.listen_forever(store).await });
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = this.upgrade() else { return };
                if let Err(e) = this.poll(super::service::now_ms(), PAGES_PER_POLL).await {
                    tracing::warn!(error = %e, "reading token revocations failed");
                }
            }
        });
    }

    /// Whether a token of user `sub` with id `jti` and version `ver` was revoked.
    pub fn is_revoked(&self, sub: &str, jti: Option<&str>, ver: u32) -> bool {
        {
            let users = self.users.read().unwrap_or_else(|e| e.into_inner());
            if users.get(sub).is_some_and(|(min, _)| ver < *min) {
                return true;
            }
        }
        let Some(jti) = jti else { return false };
        self.jtis.read().unwrap_or_else(|e| e.into_inner()).contains_key(jti)
    }

    /// Whether this instance has heard from the database recently enough to
    /// trust its view (see the module docs: fail closed).
    pub fn is_current(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_sync.load(Ordering::Relaxed)) <= self.stale_after_ms
    }

    /// Revokes one token: recorded in the database (which every instance
    /// polls), applied here at once and announced through Redis when configured.
    pub async fn revoke_token(&self, jti: &str, exp_secs: u64, now_ms: u64) -> anyhow::Result<()> {
        let until = exp_secs.saturating_mul(1000).saturating_add(MARGIN_MS);
        self.db.deny_jti(jti, until, now_ms).await?;
        self.insert_jti(jti.to_string(), until);
        self.announce(&Announcement::Token { jti: jti.to_string(), until_ms: until }).await;
        Ok(())
    }

    /// Applies a raised token version (already stored in the user's row):
    /// tokens of `user_id` older than `version` are refused from now on.
    pub async fn user_version_raised(&self, user_id: &str, version: u32, now_ms: u64) {
        let until = self.user_entry_until(now_ms);
        self.insert_user(user_id.to_string(), version, until);
        self.announce(&Announcement::User { user_id: user_id.to_string(), version, until_ms: until }).await;
    }

    fn user_entry_until(&self, changed_ms: u64) -> u64 {
        changed_ms.saturating_add(self.token_life_ms).saturating_add(MARGIN_MS)
    }

    fn insert_jti(&self, jti: String, until: u64) {
        let mut jtis = self.jtis.write().unwrap_or_else(|e| e.into_inner());
        let entry = jtis.entry(jti).or_insert(until);
        *entry = (*entry).max(until);
    }

    fn insert_user(&self, user_id: String, version: u32, until: u64) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let entry = users.entry(user_id).or_insert((version, until));
        // Versions only rise; keep the highest and the latest end.
        *entry = (entry.0.max(version), entry.1.max(until));
    }

    fn jtis_len(&self) -> usize {
        self.jtis.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Reads what changed since the cursors (minus the overlap), applies it and
    /// sweeps expired entries.
    /// Reads pages while they come back full, at most `pages` of them.
    async fn poll(&self, now_ms: u64, pages: u32) -> anyhow::Result<()> {
        self.poll_pages(now_ms, PAGE, pages).await
    }

    async fn poll_pages(&self, now_ms: u64, page: u32, pages: u32) -> anyhow::Result<()> {
        for _ in 0..pages {
            if !self.poll_page(now_ms, page).await? {
                break;
            }
        }
        if self.polls.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            // Every instance may purge; deleting what has expired is idempotent.
            self.db.purge_expired_jtis(now_ms).await?;
        }
        Ok(())
    }

    /// Reads one page of each kind; true when one came back full (more may
    /// be waiting).
    async fn poll_page(&self, now_ms: u64, page: u32) -> anyhow::Result<bool> {
        let (since, after) = lock(&self.denied_cursor).clone();
        let denied = self.db.denied_since(since, &after, now_ms, page).await?;
        let denied_full = denied.len() == page as usize;
        let next_denied = next_cursor(denied.last().map(|(jti, _, at)| (*at, jti)), denied_full, since, now_ms);
        for (jti, until, _) in denied {
            self.insert_jti(jti, until);
        }
        *lock(&self.denied_cursor) = next_denied;

        let (since, after) = lock(&self.versions_cursor).clone();
        let changed = self.db.versions_changed_since(since, &after, page).await?;
        let changed_full = changed.len() == page as usize;
        let next_versions = next_cursor(changed.last().map(|(user, _, at)| (*at, user)), changed_full, since, now_ms);
        for (user, version, at) in changed {
            let until = self.user_entry_until(at);
            if until > now_ms {
                self.insert_user(user, version, until);
            }
        }
        *lock(&self.versions_cursor) = next_versions;
        let full = denied_full || changed_full;
        self.jtis.write().unwrap_or_else(|e| e.into_inner()).retain(|_, until| *until > now_ms);
        self.users.write().unwrap_or_else(|e| e.into_inner()).retain(|_, (_, until)| *until > now_ms);
        if !full {
            self.last_sync.store(now_ms, Ordering::Relaxed);
        }
        Ok(full)
    }

    fn channel(store: &RedisStore) -> String {
        format!("{}revocations", store.key_prefix())
    }

    async fn announce(&self, msg: &Announcement) {
        let Some(store) = self.redis.get() else { return };
        let Some(mut conn) = store.connection() else { return };
        let Ok(body) = serde_json::to_string(msg) else { return };
        let sent: redis::RedisResult<()> =
            redis::cmd("PUBLISH").arg(Self::channel(store)).arg(body).query_async(&mut conn).await;
        if let Err(e) = sent {
            // The database has it: other instances learn of it at their next poll.
            tracing::debug!(error = %e, "revocation not announced through redis");
        }
    }

    async fn listen_forever(self: Arc<Self>, store: RedisStore) {
        use futures_util::StreamExt;
        loop {
            if store.is_available() {
                if let Ok(mut pubsub) = store.pubsub().await {
                    if pubsub.subscribe(Self::channel(&store)).await.is_ok() {
                        let mut messages = pubsub.on_message();
                        while let Some(msg) = messages.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else { continue };
                            match serde_json::from_str::<Announcement>(&payload) {
                                Ok(Announcement::Token { jti, until_ms }) => self.insert_jti(jti, until_ms),
                                Ok(Announcement::User { user_id, version, until_ms }) => {
                                    self.insert_user(user_id, version, until_ms);
                                }
                                Err(_) => tracing::debug!("ignored a malformed revocation announcement"),
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    async fn revocations(dir: &std::path::Path) -> Arc<Revocations> {
        let url = format!("sqlite://{}/r.db", dir.display());
        let db = Database::connect(&url).await.unwrap();
        Revocations::load(db, Duration::from_secs(900), super::super::service::now_ms()).await.unwrap()
    }

    #[tokio::test]
    async fn a_denied_jti_and_an_older_version_are_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let r = revocations(dir.path()).await;
        let now = super::super::service::now_ms();
        assert!(!r.is_revoked("u1", Some("j1"), 0));
        r.revoke_token("j1", now / 1000 + 60, now).await.unwrap();
        assert!(r.is_revoked("u1", Some("j1"), 0));
        assert!(!r.is_revoked("u1", Some("j2"), 0));
        assert!(!r.is_revoked("u1", None, 0));
        r.user_version_raised("u1", 3, now).await;
        assert!(r.is_revoked("u1", Some("j2"), 2));
        assert!(!r.is_revoked("u1", Some("j2"), 3));
        // Versions never go back down.
        r.user_version_raised("u1", 1, now).await;
        assert!(r.is_revoked("u1", None, 2));
        assert!(r.is_current(now));
    }

    /// Pages of two rows: a full page of logouts neither lets the newer
    /// version change carry the logout cursor past `j3` and `j4` (one shared
    /// cursor did), nor reads the same page forever when more logouts share
    /// a millisecond than a page holds (a cursor of the time alone did).
    #[tokio::test]
    async fn each_kind_pages_on_its_own_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let r = revocations(dir.path()).await;
        let now = super::super::service::now_ms();
        for jti in ["j1", "j2", "j3"] {
            r.db.deny_jti(jti, now + 600_000, now).await.unwrap();
        }
        r.db.deny_jti("j4", now + 600_000, now + 2).await.unwrap();
        let user = r.db.create_user(&crate::store::identity::users::NewUser::named("rev"), now).await.unwrap();
        r.db.bump_token_version(&user.id, now + 5).await.unwrap();
        assert!(r.poll_page(now + 10, 2).await.unwrap(), "a full page");
        for _ in 0..2 {
            r.poll_page(now + 10, 2).await.unwrap();
        }
        assert!(!r.poll_page(now + 10, 2).await.unwrap(), "all read");
        assert!(r.is_revoked(&user.id, None, 0));
        for jti in ["j1", "j2", "j3", "j4"] {
            assert!(r.is_revoked("u", Some(jti), 0), "{jti} was skipped");
        }
    }

    /// A poll reads on while pages come back full (up to its bound), and only
    /// a poll that reached the end counts as in sync.
    #[tokio::test]
    async fn a_poll_reads_a_backlog_of_several_pages() {
        let dir = tempfile::tempdir().unwrap();
        let r = revocations(dir.path()).await;
        let now = super::super::service::now_ms();
        for i in 0..7 {
            r.db.deny_jti(&format!("b{i}"), now + 600_000, now + i).await.unwrap();
        }
        r.last_sync.store(0, Ordering::Relaxed);
        r.poll_pages(now + 10, 2, 2).await.unwrap();
        assert_eq!(r.last_sync.load(Ordering::Relaxed), 0, "4 of 7 read: not in sync");
        assert!(!r.is_revoked("u", Some("b5"), 0));
        r.poll_pages(now + 10, 2, 10).await.unwrap();
        assert_eq!(r.last_sync.load(Ordering::Relaxed), now + 10);
        assert!((0..7).all(|i| r.is_revoked("u", Some(&format!("b{i}")), 0)));
    }

    #[tokio::test]
    async fn a_restart_remembers_denied_tokens_and_the_view_goes_stale_without_polls() {
        let dir = tempfile::tempdir().unwrap();
        let now = super::super::service::now_ms();
        {
            let r = revocations(dir.path()).await;
            r.revoke_token("gone", now / 1000 + 600, now).await.unwrap();
            r.revoke_token("expired", now / 1000 - 600, now).await.unwrap();
        }
        let r = revocations(dir.path()).await;
        assert!(r.is_revoked("u", Some("gone"), 0));
        assert!(!r.is_revoked("u", Some("expired"), 0), "expired entries are not loaded");
        assert!(r.is_current(now));
        assert!(!r.is_current(now + STALE_AFTER.as_millis() as u64 + 10_000));
        r.db.close().await;
        assert!(r.poll(now + 10, 1).await.is_err());
    }
}
