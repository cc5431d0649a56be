//! Sessions in Redis (`[identity.sessions] store = "auto"` with `[redis]`, or
//! `"redis"`).
//!
//! - `<prefix>session:<hex sha-256 of the token>`: a hash with the session's
//!   fields, expiring at the session's absolute expiry (Redis deletes it).
//! - `<prefix>user-sessions:<user id>`: a sorted set of the user's session
//!   hashes by creation time, for listing and "end all"; members whose
//!   session is gone are dropped when met.
//!
//! Every call is bounded by [`TIMEOUT`]; an unreachable Redis (or one whose
//! breaker is open) is a [`StoreError::Database`]-like failure the caller
//! turns into 503: sessions fail closed, they never fall back to a store
//! that does not hold them.

use std::collections::HashMap;
use std::time::Duration;

use crate::limit::redis::{RedisConn, RedisStore};
use crate::store::identity::{NewSession, SessionRecord, SessionTouch, StoreError, TokenHash};

/// The longest a session operation waits for Redis.
const TIMEOUT: Duration = Duration::from_millis(500);

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {why}"))
}

fn conn(r: &RedisStore) -> Result<RedisConn, StoreError> {
    r.connection().ok_or_else(|| unavailable("redis is down"))
}

async fn run<T: redis::FromRedisValue>(r: &RedisStore, f: impl FnOnce(&mut redis::Pipeline)) -> Result<T, StoreError> {
    let mut c = conn(r)?;
    let mut pipe = redis::pipe();
    f(&mut pipe);
    match tokio::time::timeout(TIMEOUT, pipe.query_async::<T>(&mut c)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("timed out")),
    }
}

fn session_key(r: &RedisStore, hash: &TokenHash) -> String {
    format!("{}session:{}", r.key_prefix(), hex::encode(hash.as_bytes()))
}

fn index_key(r: &RedisStore, user: &str) -> String {
    format!("{}user-sessions:{user}", r.key_prefix())
}

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn touch_fields(t: &SessionTouch) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("seen", t.last_seen_at.to_string()),
        ("roles", json(&t.roles)),
        ("tier", t.tier.clone().unwrap_or_default()),
        ("ver", t.token_version.to_string()),
    ];
    if let Some(ip) = &t.ip {
        f.push(("ip", ip.clone()));
    }
    f
}

pub(super) async fn create(
    r: &RedisStore,
    new: &NewSession,
    keep: u32,
    now: u64,
    _idle_ms: u64,
) -> Result<SessionRecord, StoreError> {
    let id = crate::store::identity::new_id();
    let mut roles = new.roles.clone();
    roles.sort();
    roles.dedup();
    let ua = new.user_agent.as_deref().map(|u| u.chars().filter(|c| !c.is_control()).take(256).collect::<String>());
    let record = SessionRecord {
        id: id.clone(),
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
    };
    let key = session_key(r, &new.token_hash);
    let index = index_key(r, &new.user_id);
    let member = hex::encode(new.token_hash.as_bytes());
    let f = [
        ("id", id),
        ("user", record.user_id.clone()),
        ("roles", json(&record.roles)),
        ("tier", record.tier.clone().unwrap_or_default()),
        ("ver", record.token_version.to_string()),
        ("amr", json(&record.amr)),
        ("created", now.to_string()),
        ("seen", now.to_string()),
        ("exp", record.expires_at.to_string()),
        ("ua", record.user_agent.clone().unwrap_or_default()),
        ("ip", record.ip.clone().unwrap_or_default()),
    ];
    let exp = record.expires_at;
    let _: () = run(r, |p| {
        p.hset_multiple(&key, &f).ignore();
        p.cmd("PEXPIREAT").arg(&key).arg(exp).ignore();
        p.zadd(&index, &member, now).ignore();
        // The index lives as long as the newest session.
        p.cmd("PEXPIREAT").arg(&index).arg(exp).arg("GT").ignore();
        p.cmd("PEXPIREAT").arg(&index).arg(exp).arg("NX").ignore();
    })
    .await?;
    // Beyond `keep`, the oldest end.
    let extra: Vec<String> = run(r, |p| {
        p.cmd("ZREVRANGE").arg(&index).arg(keep).arg(-1);
    })
    .await
    .map(|(v,): (Vec<String>,)| v)?;
    if !extra.is_empty() {
        let prefix = r.key_prefix().to_owned();
        let _: () = run(r, |p| {
            for m in &extra {
                p.del(format!("{prefix}session:{m}")).ignore();
                p.zrem(&index, m).ignore();
            }
        })
        .await?;
    }
    Ok(record)
}

fn parse(hash: &TokenHash, map: HashMap<String, String>) -> Result<Option<SessionRecord>, StoreError> {
    if map.is_empty() {
        return Ok(None);
    }
    let bad = |field: &str| StoreError::Corrupt { what: "redis session", reason: format!("field {field}") };
    let text = |k: &str| map.get(k).cloned().ok_or_else(|| bad(k));
    let num = |k: &str| text(k)?.parse::<u64>().map_err(|_| bad(k));
    let list = |k: &str| serde_json::from_str::<Vec<String>>(&text(k)?).map_err(|_| bad(k));
    let opt = |k: &str| map.get(k).filter(|v| !v.is_empty()).cloned();
    Ok(Some(SessionRecord {
        id: text("id")?,
        token_hash: *hash,
        user_id: text("user")?,
        roles: list("roles")?,
        tier: opt("tier"),
        token_version: u32::try_from(num("ver")?).map_err(|_| bad("ver"))?,
        amr: list("amr")?,
        created_at: num("created")?,
        last_seen_at: num("seen")?,
        expires_at: num("exp")?,
        user_agent: opt("ua"),
        ip: opt("ip"),
    }))
}

pub(super) async fn get(r: &RedisStore, hash: &TokenHash) -> Result<Option<SessionRecord>, StoreError> {
    let key = session_key(r, hash);
    let (map,): (HashMap<String, String>,) = run(r, |p| {
        p.hgetall(&key);
    })
    .await?;
    parse(hash, map)
}

/// Sets fields of an existing session only (never re-creates one that ended).
const TOUCH_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
";

pub(super) async fn touch(
    r: &RedisStore,
    hash: &TokenHash,
    t: &SessionTouch,
    _idle_ms: u64,
) -> Result<bool, StoreError> {
    let key = session_key(r, hash);
    let f = touch_fields(t);
    let (done,): (i64,) = run(r, |p| {
        let c = p.cmd("EVAL").arg(TOUCH_LUA).arg(1).arg(&key);
        for (k, v) in &f {
            c.arg(*k).arg(v);
        }
    })
    .await?;
    Ok(done == 1)
}

/// Renames a session's key (its TTL goes with it) and moves it in the index.
const ROTATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
local created = redis.call('HGET', KEYS[2], 'created')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[3], created, ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return 1
";

pub(super) async fn rotate(
    r: &RedisStore,
    old: &TokenHash,
    new: &TokenHash,
    t: &SessionTouch,
    _idle_ms: u64,
) -> Result<bool, StoreError> {
    let Some(record) = get(r, old).await? else { return Ok(false) };
    let (from, to, index) = (session_key(r, old), session_key(r, new), index_key(r, &record.user_id));
    let f = touch_fields(t);
    let (done,): (i64,) = run(r, |p| {
        let c = p.cmd("EVAL").arg(ROTATE_LUA).arg(3).arg(&from).arg(&to).arg(&index);
        c.arg(hex::encode(old.as_bytes())).arg(hex::encode(new.as_bytes()));
        for (k, v) in &f {
            c.arg(*k).arg(v);
        }
    })
    .await?;
    Ok(done == 1)
}

pub(super) async fn delete(r: &RedisStore, hash: &TokenHash) -> Result<bool, StoreError> {
    let key = session_key(r, hash);
    let (user, n): (Option<String>, i64) = run(r, |p| {
        p.hget(&key, "user");
        p.del(&key);
    })
    .await?;
    if let Some(user) = user {
        let index = index_key(r, &user);
        let _: () = run(r, |p| {
            p.zrem(&index, hex::encode(hash.as_bytes())).ignore();
        })
        .await?;
    }
    Ok(n == 1)
}

/// The user's sessions (index members whose session is gone are dropped).
async fn members(r: &RedisStore, user: &str) -> Result<Vec<(TokenHash, SessionRecord)>, StoreError> {
    let index = index_key(r, user);
    let (found,): (Vec<String>,) = run(r, |p| {
        p.cmd("ZREVRANGE").arg(&index).arg(0).arg(-1);
    })
    .await?;
    let mut out = Vec::new();
    let mut gone = Vec::new();
    for m in found {
        let Some(hash) = hex::decode(&m).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).map(TokenHash::from_bytes)
        else {
            gone.push(m);
            continue;
        };
        match get(r, &hash).await? {
            Some(s) if s.user_id == user => out.push((hash, s)),
            _ => gone.push(m),
        }
    }
    if !gone.is_empty() {
        let _: () = run(r, |p| {
            for m in &gone {
                p.zrem(&index, m).ignore();
            }
        })
        .await?;
    }
    Ok(out)
}

pub(super) async fn list(r: &RedisStore, user: &str) -> Result<Vec<SessionRecord>, StoreError> {
    Ok(members(r, user).await?.into_iter().map(|(_, s)| s).collect())
}

pub(super) async fn delete_by_id(r: &RedisStore, user: &str, id: &str) -> Result<bool, StoreError> {
    for (hash, s) in members(r, user).await? {
        if s.id == id {
            return delete(r, &hash).await;
        }
    }
    Ok(false)
}

/// How many times [`delete_all`] reads the index at most.
const END_ALL_PASSES: usize = 3;

/// Ends the user's sessions but `keep`. In passes: a session whose token
/// rotated between a pass's read of the index and its deletes (the rotation
/// moves it to a new member, atomically) is not where the pass looked, and
/// is met by the next. (A rotation of `keep` itself in that moment ends it
/// too: sign-out everywhere errs on the side of ending.)
pub(super) async fn delete_all(r: &RedisStore, user: &str, keep: Option<&TokenHash>) -> Result<u64, StoreError> {
    delete_all_in_passes(r, user, keep, || async {}).await
}

/// [`delete_all`], calling `between` after each read of the index (the
/// tests rotate a session there).
async fn delete_all_in_passes<F, Fut>(
    r: &RedisStore,
    user: &str,
    keep: Option<&TokenHash>,
    mut between: F,
) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut n = 0;
    for _ in 0..END_ALL_PASSES {
        let doomed: Vec<TokenHash> =
            members(r, user).await?.into_iter().map(|(hash, _)| hash).filter(|h| Some(h) != keep).collect();
        if doomed.is_empty() {
            break;
        }
        between().await;
        for hash in &doomed {
            if delete(r, hash).await? {
                n += 1;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::limit::redis::RedisSettings;

    /// A session whose token rotates while "sign out everywhere" runs is
    /// ended too. Needs `RAMPART_TEST_REDIS_URL` (scripts/test sets it).
    #[tokio::test]
    async fn a_session_rotated_while_all_are_ended_is_ended_too() {
        let Ok(url) = std::env::var("RAMPART_TEST_REDIS_URL") else {
            println!("skipped: RAMPART_TEST_REDIS_URL not set (scripts/test sets it)");
            return;
        };
        let mut settings = RedisSettings::new(url);
        settings.key_prefix = format!("t-{}:", uuid::Uuid::now_v7().simple());
        let r = RedisStore::new(settings).unwrap();
        for _ in 0..100 {
            if r.is_available() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(r.is_available(), "redis did not come up");
        let now = 1_000;
        let new = |token: &str| NewSession {
            token_hash: TokenHash::of(token),
            user_id: "u-1".into(),
            roles: vec![],
            tier: None,
            token_version: 0,
            amr: vec!["pwd".into()],
            expires_at: u64::try_from(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
            )
            .unwrap()
                + 600_000,
            user_agent: None,
            ip: None,
        };
        for token in ["a", "b", "kept"] {
            create(&r, &new(token), 10, now, 0).await.unwrap();
        }
        let touch = SessionTouch { last_seen_at: now + 1, ip: None, roles: vec![], tier: None, token_version: 0 };
        let mut rotated = false;
        let ended = delete_all_in_passes(&r, "u-1", Some(&TokenHash::of("kept")), || {
            let first = !std::mem::replace(&mut rotated, true);
            let (r, touch) = (&r, &touch);
            async move {
                // Between the read and the deletes: `a` becomes `a2`.
                if first {
                    assert!(rotate(r, &TokenHash::of("a"), &TokenHash::of("a2"), touch, 0).await.unwrap());
                }
            }
        })
        .await
        .unwrap();
        let left: Vec<_> = members(&r, "u-1").await.unwrap().into_iter().map(|(h, _)| h).collect();
        assert!(left == vec![TokenHash::of("kept")], "the rotated session outlived sign-out everywhere");
        assert!(get(&r, &TokenHash::of("a2")).await.unwrap().is_none());
        assert_eq!(ended, 2, "b, then a as a2");
    }
}
