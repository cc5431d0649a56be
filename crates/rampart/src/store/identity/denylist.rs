//! The `revoked_jtis` table: ids of access tokens revoked by logout, each kept
//! until the token would have expired anyway.
//!
//! This is the fallback for a gateway without Redis (see "State and
//! scale-out"); with Redis the same list lives there with a TTL. Denying a
//! `jti` twice keeps the later expiry. `created_at` lets every instance read
//! what was denied since its last look ([`DenylistStore::denied_since`]).

use std::future::Future;

use super::{check_required, from_db, storable, to_db, with_pool, Result, MAX_ID_BYTES};
use crate::store::Database;

/// Storage for revoked access-token ids.
pub trait DenylistStore: Send + Sync {
    /// Refuses `jti` until `expires_at` (denied at `now`).
    fn deny_jti(&self, jti: &str, expires_at: u64, now: u64) -> impl Future<Output = Result<()>> + Send;

    /// The ids denied after the position (`since` ms, `after` id) that are
    /// still refused at `now`: those denied at `since` with an id above
    /// `after` (every one for an empty `after`), then those denied later;
    /// `(jti, expires_at, created_at)` in (time, id) order, at most `limit`.
    fn denied_since(
        &self,
        since: u64,
        after: &str,
        now: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(String, u64, u64)>>> + Send;

    /// Whether `jti` is refused at `now`. An id too long or otherwise unfit to
    /// be stored was never denied: `false`, without a query.
    fn is_jti_denied(&self, jti: &str, now: u64) -> impl Future<Output = Result<bool>> + Send;

    /// Deletes the entries expired at `now`; returns how many.
    fn purge_expired_jtis(&self, now: u64) -> impl Future<Output = Result<u64>> + Send;
}

const DENY: &str = "INSERT INTO revoked_jtis (jti, expires_at, created_at) VALUES ($1, $2, $3) \
                    ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at, created_at = excluded.created_at \
                    WHERE excluded.expires_at > revoked_jtis.expires_at";
// Keyset paging on (created_at, jti), as for API keys: a page boundary inside
// a run of denials of the same millisecond moves on.
const SINCE: &str = "SELECT jti, expires_at, created_at FROM revoked_jtis \
                     WHERE created_at >= $1 AND (created_at > $1 OR jti > $2) AND expires_at > $3 \
                     ORDER BY created_at, jti LIMIT $4";
const DENIED: &str = "SELECT expires_at FROM revoked_jtis WHERE jti = $1 AND expires_at > $2";
const PURGE: &str = "DELETE FROM revoked_jtis WHERE expires_at <= $1";

impl DenylistStore for Database {
    #[tracing::instrument(skip_all)]
    async fn deny_jti(&self, jti: &str, expires_at: u64, now: u64) -> Result<()> {
        check_required("jti", jti, MAX_ID_BYTES)?;
        let expires = to_db("expires_at", expires_at)?;
        let at = to_db("now", now)?;
        with_pool!(self, |pool| {
            sqlx::query(DENY).bind(jti).bind(expires).bind(at).execute(pool).await?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn denied_since(&self, since: u64, after: &str, now: u64, limit: u32) -> Result<Vec<(String, u64, u64)>> {
        let (since, at) = (to_db("since", since)?, to_db("now", now)?);
        let rows: Vec<(String, i64, i64)> = with_pool!(self, |pool| {
            sqlx::query_as(SINCE).bind(since).bind(after).bind(at).bind(i64::from(limit)).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(jti, exp, created)| Ok((jti, from_db("expires_at", exp)?, from_db("created_at", created)?)))
            .collect()
    }

    #[tracing::instrument(skip_all)]
    async fn is_jti_denied(&self, jti: &str, now: u64) -> Result<bool> {
        let at = to_db("now", now)?;
        if !storable(jti, MAX_ID_BYTES) {
            return Ok(false);
        }
        let found: Option<i64> =
            with_pool!(self, |pool| { sqlx::query_scalar(DENIED).bind(jti).bind(at).fetch_optional(pool).await? });
        Ok(found.is_some())
    }

    #[tracing::instrument(skip_all)]
    async fn purge_expired_jtis(&self, now: u64) -> Result<u64> {
        let at = to_db("now", now)?;
        Ok(with_pool!(self, |pool| { sqlx::query(PURGE).bind(at).execute(pool).await?.rows_affected() }))
    }
}
