//! The `sessions` table: browser sessions (migration `0008_sessions.sql`).
//!
//! The cookie holds a random token; only its SHA-256 ([`TokenHash`]) is
//! stored, so a copy of the database opens no session. `id` is the public
//! handle a session list shows and a revocation names. A session carries a
//! snapshot of its user's roles, tier and token version, refreshed when the
//! session is touched; it goes with its user (`ON DELETE CASCADE`).
//!
//! Expiry is the caller's business (it knows the idle timeout); expired rows
//! are deleted by [`SessionStore::purge_sessions`].

use std::future::Future;

use super::clients::roles_json;
use super::{check_text, from_db, new_id, storable, to_db, with_pool, Result, StoreError, TokenHash, MAX_ID_BYTES};
use crate::store::Database;

/// Longest user agent kept (longer ones are cut, not refused).
pub const MAX_USER_AGENT_BYTES: usize = 512;

/// A session to store.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub token_hash: TokenHash,
    pub user_id: String,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    pub token_version: u32,
    /// How the login was made (`pwd`, `otp`, `hwk`, `ext`…).
    pub amr: Vec<String>,
    pub expires_at: u64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// A stored session (never its token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub token_hash: TokenHash,
    pub user_id: String,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    pub token_version: u32,
    pub amr: Vec<String>,
    pub created_at: u64,
    pub last_seen_at: u64,
    pub expires_at: u64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// What a touch writes: the last use and a fresh snapshot of the user.
#[derive(Clone, Debug)]
pub struct SessionTouch {
    pub last_seen_at: u64,
    pub ip: Option<String>,
    pub roles: Vec<String>,
    pub tier: Option<String>,
    pub token_version: u32,
}

/// Storage for browser sessions.
pub trait SessionStore: Send + Sync {
    /// Stores a session, then ends the user's oldest ones beyond `keep`.
    fn create_session(
        &self,
        new: &NewSession,
        keep: u32,
        now: u64,
    ) -> impl Future<Output = Result<SessionRecord>> + Send;

    fn session_by_hash(&self, hash: &TokenHash) -> impl Future<Output = Result<Option<SessionRecord>>> + Send;

    /// Records use (and a fresh snapshot); false when the session is gone.
    fn touch_session(&self, hash: &TokenHash, touch: &SessionTouch) -> impl Future<Output = Result<bool>> + Send;

    /// Gives the session a new token (a new id for the cookie), keeping the
    /// rest; false when the session is gone.
    fn rotate_session(
        &self,
        old: &TokenHash,
        new: &TokenHash,
        touch: &SessionTouch,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Ends one session by token; false when there was none.
    fn delete_session(&self, hash: &TokenHash) -> impl Future<Output = Result<bool>> + Send;

    /// Ends the user's session with this public id; false when the user has none such.
    fn delete_user_session(&self, user_id: &str, id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Ends every session of the user but `keep` (a token hash); returns how many.
    fn delete_user_sessions(&self, user_id: &str, keep: Option<&TokenHash>)
        -> impl Future<Output = Result<u64>> + Send;

    /// The user's sessions, newest first.
    fn list_user_sessions(&self, user_id: &str) -> impl Future<Output = Result<Vec<SessionRecord>>> + Send;

    /// Deletes sessions past their absolute expiry or idle since before
    /// `idle_before`; returns how many.
    fn purge_sessions(&self, now: u64, idle_before: u64) -> impl Future<Output = Result<u64>> + Send;
}

const COLUMNS: &str = "token_hash, id, user_id, roles, tier, token_version, amr, created_at, last_seen_at, \
                       expires_at, user_agent, ip";

row! {
    struct Row {
        token_hash: Vec<u8>,
        id: String,
        user_id: String,
        roles: String,
        tier: Option<String>,
        token_version: i64,
        amr: String,
        created_at: i64,
        last_seen_at: i64,
        expires_at: i64,
        user_agent: Option<String>,
        ip: Option<String>,
    }
}

fn list(what: &'static str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

impl Row {
    fn into_record(self) -> Result<SessionRecord> {
        Ok(SessionRecord {
            id: self.id,
            token_hash: TokenHash::from_stored(&self.token_hash)?,
            user_id: self.user_id,
            roles: list("session roles", &self.roles)?,
            tier: self.tier,
            token_version: u32::try_from(self.token_version).map_err(|_| StoreError::Corrupt {
                what: "session token_version",
                reason: format!("{} is out of range", self.token_version),
            })?,
            amr: list("session amr", &self.amr)?,
            created_at: from_db("created_at", self.created_at)?,
            last_seen_at: from_db("last_seen_at", self.last_seen_at)?,
            expires_at: from_db("expires_at", self.expires_at)?,
            user_agent: self.user_agent,
            ip: self.ip,
        })
    }
}

/// A user agent cut to [`MAX_USER_AGENT_BYTES`] on a character boundary,
/// without control characters.
fn clean_agent(ua: &str) -> String {
    let mut out = String::new();
    for c in ua.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_USER_AGENT_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

fn json(what: &'static str, v: &[String]) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

impl SessionStore for Database {
    #[tracing::instrument(skip_all)]
    async fn create_session(&self, new: &NewSession, keep: u32, now: u64) -> Result<SessionRecord> {
        check_text("user_id", &new.user_id, MAX_ID_BYTES)?;
        let (roles, roles_text) = roles_json(&new.roles)?;
        let amr_json = json("amr", &new.amr)?;
        let ua = new.user_agent.as_deref().map(clean_agent);
        if let Some(ip) = &new.ip {
            check_text("ip", ip, 64)?;
        }
        let id = new_id();
        let (at, exp) = (to_db("now", now)?, to_db("expires_at", new.expires_at)?);
        let insert =
            format!("INSERT INTO sessions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11)");
        // The oldest sessions beyond `keep` (the new one counts).
        let trim = "DELETE FROM sessions WHERE user_id = $1 AND token_hash IN (SELECT token_hash FROM sessions \
                    WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET $2)";
        let trim_pg = "DELETE FROM sessions WHERE user_id = $1 AND token_hash IN (SELECT token_hash FROM sessions \
                       WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2)";
        with_pool!(self, |pool, sql| {
            let mut tx = pool.begin().await?;
            sqlx::query(&insert)
                .bind(new.token_hash.as_bytes().as_slice())
                .bind(&id)
                .bind(&new.user_id)
                .bind(&roles_text)
                .bind(&new.tier)
                .bind(i64::from(new.token_version))
                .bind(&amr_json)
                .bind(at)
                .bind(exp)
                .bind(&ua)
                .bind(&new.ip)
                .execute(&mut *tx)
                .await?;
            let trim = if sql.advisory_lock.is_some() { trim_pg } else { trim };
            sqlx::query(trim).bind(&new.user_id).bind(i64::from(keep)).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(SessionRecord {
            id,
            token_hash: new.token_hash,
            user_id: new.user_id.clone(),
            roles,
            tier: new.tier.clone(),
            token_version: new.token_version,
            amr: new.amr.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: new.expires_at,
            user_agent: ua,
            ip: new.ip.clone(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn session_by_hash(&self, hash: &TokenHash) -> Result<Option<SessionRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE token_hash = $1");
        let row: Option<Row> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(hash.as_bytes().as_slice()).fetch_optional(pool).await?
        });
        row.map(Row::into_record).transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn touch_session(&self, hash: &TokenHash, touch: &SessionTouch) -> Result<bool> {
        // A rotation to the same token: one statement for both.
        self.rotate_session(hash, hash, touch).await
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_session(&self, old: &TokenHash, new: &TokenHash, touch: &SessionTouch) -> Result<bool> {
        let (_, roles) = roles_json(&touch.roles)?;
        let sql = "UPDATE sessions SET token_hash = $2, last_seen_at = $3, ip = COALESCE($4, ip), roles = $5, \
                   tier = $6, token_version = $7 WHERE token_hash = $1";
        let done = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(old.as_bytes().as_slice())
                .bind(new.as_bytes().as_slice())
                .bind(to_db("last_seen_at", touch.last_seen_at)?)
                .bind(&touch.ip)
                .bind(&roles)
                .bind(&touch.tier)
                .bind(i64::from(touch.token_version))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_session(&self, hash: &TokenHash) -> Result<bool> {
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(hash.as_bytes().as_slice())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user_session(&self, user_id: &str, id: &str) -> Result<bool> {
        if !storable(user_id, MAX_ID_BYTES) || !storable(id, MAX_ID_BYTES) {
            return Ok(false);
        }
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn delete_user_sessions(&self, user_id: &str, keep: Option<&TokenHash>) -> Result<u64> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(0);
        }
        // A hash no session can have when nothing is kept.
        let keep = keep.map_or(Vec::new(), |k| k.as_bytes().to_vec());
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
                .bind(user_id)
                .bind(&keep)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done)
    }

    #[tracing::instrument(skip_all)]
    async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<SessionRecord>> {
        if !storable(user_id, MAX_ID_BYTES) {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id DESC");
        let rows: Vec<Row> = with_pool!(self, |pool| { sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await? });
        rows.into_iter().map(Row::into_record).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn purge_sessions(&self, now: u64, idle_before: u64) -> Result<u64> {
        let done = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2")
                .bind(to_db("now", now)?)
                .bind(to_db("idle_before", idle_before)?)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::store::identity::{NewUser, UserStore};

    fn new_session(user: &str, token: &str, exp: u64) -> NewSession {
        NewSession {
            token_hash: TokenHash::of(token),
            user_id: user.into(),
            roles: vec!["b".into(), "a".into()],
            tier: None,
            token_version: 0,
            amr: vec!["pwd".into()],
            expires_at: exp,
            user_agent: Some(format!("Agent\u{7}{}", "x".repeat(1000))),
            ip: Some("192.0.2.1".into()),
        }
    }

    #[tokio::test]
    async fn sessions_are_created_touched_rotated_listed_and_trimmed() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let u = db.create_user(&NewUser::named("ann"), 1).await.unwrap();
        let a = db.create_session(&new_session(&u.id, "a", 10_000), 2, 100).await.unwrap();
        assert_eq!(a.roles, ["a", "b"]);
        assert!(a.user_agent.as_ref().unwrap().len() <= MAX_USER_AGENT_BYTES);
        assert!(!a.user_agent.as_ref().unwrap().contains('\u{7}'));
        db.create_session(&new_session(&u.id, "b", 10_000), 2, 200).await.unwrap();
        // A third login ends the oldest.
        db.create_session(&new_session(&u.id, "c", 10_000), 2, 300).await.unwrap();
        assert!(db.session_by_hash(&TokenHash::of("a")).await.unwrap().is_none());
        assert_eq!(db.list_user_sessions(&u.id).await.unwrap().len(), 2);

        let touch =
            SessionTouch { last_seen_at: 400, ip: None, roles: vec!["admin".into()], tier: None, token_version: 3 };
        assert!(db.touch_session(&TokenHash::of("b"), &touch).await.unwrap());
        let b = db.session_by_hash(&TokenHash::of("b")).await.unwrap().unwrap();
        assert_eq!((b.last_seen_at, b.token_version, b.ip.as_deref()), (400, 3, Some("192.0.2.1")));
        assert!(db.rotate_session(&TokenHash::of("b"), &TokenHash::of("b2"), &touch).await.unwrap());
        assert!(db.session_by_hash(&TokenHash::of("b")).await.unwrap().is_none());
        assert_eq!(db.session_by_hash(&TokenHash::of("b2")).await.unwrap().unwrap().id, b.id);
        assert!(!db.touch_session(&TokenHash::of("b"), &touch).await.unwrap());

        assert!(!db.delete_user_session("someone-else", &b.id).await.unwrap());
        assert!(!db.delete_user_session(&u.id, "x\0").await.unwrap());
        assert!(db.delete_user_session(&u.id, &b.id).await.unwrap());
        assert_eq!(db.delete_user_sessions(&u.id, Some(&TokenHash::of("c"))).await.unwrap(), 0);
        assert_eq!(db.delete_user_sessions(&u.id, None).await.unwrap(), 1);

        db.create_session(&new_session(&u.id, "d", 1_000), 5, 500).await.unwrap();
        db.create_session(&new_session(&u.id, "e", 10_000), 5, 500).await.unwrap();
        db.create_session(&new_session(&u.id, "f", 10_000), 5, 900).await.unwrap();
        // d is past its absolute expiry, e idle since 500.
        assert_eq!(db.purge_sessions(1_000, 600).await.unwrap(), 2);
        assert!(db.session_by_hash(&TokenHash::of("f")).await.unwrap().is_some());
    }
}
