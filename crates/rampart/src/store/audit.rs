//! The audit log's tables: `audit_log` (one row per record) and `audit_anchor`
//! (the last purged record).
//!
//! Appending reads the stored head and chains onto it inside one transaction
//! that holds the log's write lock (`BEGIN IMMEDIATE` on SQLite, an advisory
//! transaction lock on PostgreSQL), so several instances sharing one database
//! extend one chain, and a batch that fails leaves no trace to break it.
//! Verification reads every record in one snapshot, so a concurrent append or
//! purge cannot make a good log look broken.

use std::future::Future;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

use super::Database;
use crate::observe::audit::verify::{ChainVerifier, VerifyError};
use crate::observe::audit::{AuditQuery, AuditRecord, ChainHead, StampedEvent};

/// Storage for the audit log.
pub trait AuditStore: Send + Sync {
    /// Appends `batch` in order, chained onto the stored head (the last record,
    /// else the anchor, else the start of the log), and returns the records.
    /// When the stored head is behind `floor` (the last record this writer
    /// stored), records were deleted from the end of the table: the batch is
    /// chained onto `floor`, so that the gap stays visible to verification.
    fn append(
        &self,
        batch: &[StampedEvent],
        floor: Option<&ChainHead>,
    ) -> impl Future<Output = anyhow::Result<Vec<AuditRecord>>> + Send;

    /// The last record, else the anchor; `None` for a log that never had a record.
    fn head(&self) -> impl Future<Output = anyhow::Result<Option<ChainHead>>> + Send;

    /// Checks the whole chain from the anchor, in one snapshot: the number of
    /// records, or the first bad one.
    fn verify(&self) -> impl Future<Output = anyhow::Result<Result<u64, VerifyError>>> + Send;

    /// The newest `query.limit` matching records, oldest first. Rows that do
    /// not parse are skipped (verification reports them).
    fn search(&self, query: &AuditQuery) -> impl Future<Output = anyhow::Result<Vec<AuditRecord>>> + Send;

    /// Deletes the records older than `cutoff_ms` from the start of the log,
    /// at most `max_rows` of them (the oldest), and records the last deleted
    /// as the anchor. Stops at the first record young enough, so the rest
    /// stays one chain. Returns the new anchor, if any: call again until
    /// `None` to purge more than `max_rows` (each call is one short
    /// transaction, where one for millions of rows could outlast any bound).
    fn purge(&self, cutoff_ms: u64, max_rows: u64) -> impl Future<Output = anyhow::Result<Option<ChainHead>>> + Send;
}

/// Rows read per query while verifying.
const PAGE: i64 = 1000;

/// One backend's SQL. The statements are the same but for placeholders and
/// locking.
struct Sql {
    begin_write: &'static str,
    /// Run first in a write transaction (PostgreSQL has no `BEGIN IMMEDIATE`).
    lock: Option<&'static str>,
    begin_read: &'static str,
    last: &'static str,
    anchor: &'static str,
    insert: &'static str,
    page: &'static str,
    first_young: &'static str,
    last_before: &'static str,
    first: &'static str,
    last_through: &'static str,
    delete_through: &'static str,
    set_anchor: &'static str,
    /// `$1`-style placeholders (else `?`).
    numbered: bool,
}

const COLUMNS: &str = "seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash";

const SQLITE: Sql = Sql {
    begin_write: "BEGIN IMMEDIATE",
    lock: None,
    begin_read: "BEGIN",
    last: "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
    anchor: "SELECT seq, hash FROM audit_anchor WHERE id = 1",
    insert: "INSERT INTO audit_log (seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    page: "SELECT seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash FROM audit_log \
           WHERE seq > ? ORDER BY seq LIMIT ?",
    first_young: "SELECT MIN(seq) FROM audit_log WHERE ts_ms >= ?",
    last_before: "SELECT seq, hash FROM audit_log WHERE seq < ? ORDER BY seq DESC LIMIT 1",
    first: "SELECT MIN(seq) FROM audit_log",
    last_through: "SELECT seq, hash FROM audit_log WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
    delete_through: "DELETE FROM audit_log WHERE seq <= ?",
    set_anchor: "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    numbered: false,
};

const POSTGRES: Sql = Sql {
    begin_write: "BEGIN",
    // One key for the audit log (the bytes "rampart\x01"); held until the transaction ends.
    lock: Some("SELECT pg_advisory_xact_lock(8241989122503373825)"),
    begin_read: "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    last: "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
    anchor: "SELECT seq, hash FROM audit_anchor WHERE id = 1",
    insert: "INSERT INTO audit_log (seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    page: "SELECT seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash FROM audit_log \
           WHERE seq > $1 ORDER BY seq LIMIT $2",
    first_young: "SELECT MIN(seq) FROM audit_log WHERE ts_ms >= $1",
    last_before: "SELECT seq, hash FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
    first: "SELECT MIN(seq) FROM audit_log",
    last_through: "SELECT seq, hash FROM audit_log WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
    delete_through: "DELETE FROM audit_log WHERE seq <= $1",
    set_anchor: "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    numbered: true,
};

row! {
    /// A row as stored; turned into a record only after checking each field.
    struct Row {
        seq: i64,
        ts_ms: i64,
        kind: String,
        subject: Option<String>,
        ip: Option<String>,
        request_id: Option<String>,
        detail: String,
        prev_hash: String,
        hash: String,
    }
}

impl Row {
    fn into_record(self) -> Result<AuditRecord, String> {
        Ok(AuditRecord {
            seq: u64::try_from(self.seq).map_err(|_| format!("seq {} is negative", self.seq))?,
            ts_ms: u64::try_from(self.ts_ms).map_err(|_| format!("ts_ms {} is negative", self.ts_ms))?,
            kind: self.kind.parse()?,
            subject: self.subject,
            ip: self.ip.map(|ip| ip.parse().map_err(|_| format!("ip `{ip}` is not an address"))).transpose()?,
            request_id: self.request_id,
            detail: serde_json::from_str(&self.detail).map_err(|e| format!("detail is not a JSON object: {e}"))?,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

fn to_i64(n: u64) -> anyhow::Result<i64> {
    i64::try_from(n).map_err(|_| anyhow::anyhow!("{n} is out of range for the database"))
}

fn to_head((seq, hash): (i64, String)) -> anyhow::Result<ChainHead> {
    let seq = u64::try_from(seq).map_err(|_| anyhow::anyhow!("stored seq {seq} is negative"))?;
    Ok(ChainHead { seq, hash })
}

/// The head to chain onto: the stored one, unless this writer already stored
/// past it (see [`AuditStore::append`]).
fn pick_head(stored: ChainHead, floor: Option<&ChainHead>) -> ChainHead {
    match floor {
        Some(f) if f.seq > stored.seq => {
            tracing::error!(
                target: "rampart::audit",
                stored = stored.seq,
                written = f.seq,
                "audit_log ends before the last record this instance wrote: records were deleted from its end; \
                 the next records keep the gap visible to `rampart audit verify`"
            );
            f.clone()
        }
        _ => stored,
    }
}

fn search_sql(sql: &Sql, query: &AuditQuery) -> String {
    let mut text = format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1");
    let mut n = 0;
    let mut next = |text: &mut String, column: &str, op: &str| {
        n += 1;
        let placeholder = if sql.numbered { format!("${n}") } else { "?".to_string() };
        text.push_str(&format!(" AND {column} {op} {placeholder}"));
    };
    if query.kind.is_some() {
        next(&mut text, "kind", "=");
    }
    if query.subject.is_some() {
        next(&mut text, "subject", "=");
    }
    if query.ip.is_some() {
        next(&mut text, "ip", "=");
    }
    if query.since_ms.is_some() {
        next(&mut text, "ts_ms", ">=");
    }
    n += 1;
    let limit = if sql.numbered { format!("${n}") } else { "?".to_string() };
    text.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
    text
}

/// The same body for both pools: only the types and the SQL differ, and sqlx's
/// generic bounds for that are longer than the code.
macro_rules! audit_store_for {
    ($pool:ty, $sql:expr) => {
        impl AuditStore for $pool {
            async fn append(
                &self,
                batch: &[StampedEvent],
                floor: Option<&ChainHead>,
            ) -> anyhow::Result<Vec<AuditRecord>> {
                let sql = &$sql;
                let mut tx = self.begin_with(sql.begin_write).await?;
                if let Some(lock) = sql.lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let mut stored: Option<(i64, String)> = sqlx::query_as(sql.last).fetch_optional(&mut *tx).await?;
                if stored.is_none() {
                    stored = sqlx::query_as(sql.anchor).fetch_optional(&mut *tx).await?;
                }
                let stored = stored.map(to_head).transpose()?.unwrap_or_else(ChainHead::genesis);
                let mut head = pick_head(stored, floor);
                let mut out = Vec::with_capacity(batch.len());
                for e in batch {
                    let r = AuditRecord::chained(&head, e.ts_ms, &e.event);
                    sqlx::query(sql.insert)
                        .bind(to_i64(r.seq)?)
                        .bind(to_i64(r.ts_ms)?)
                        .bind(r.kind.as_str())
                        .bind(r.subject.clone())
                        .bind(r.ip.map(|ip| ip.to_string()))
                        .bind(r.request_id.clone())
                        .bind(r.detail_json())
                        .bind(r.prev_hash.clone())
                        .bind(r.hash.clone())
                        .execute(&mut *tx)
                        .await?;
                    head = r.head();
                    out.push(r);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn head(&self) -> anyhow::Result<Option<ChainHead>> {
                let sql = &$sql;
                let mut stored: Option<(i64, String)> = sqlx::query_as(sql.last).fetch_optional(self).await?;
                if stored.is_none() {
                    stored = sqlx::query_as(sql.anchor).fetch_optional(self).await?;
                }
                stored.map(to_head).transpose()
            }

            async fn verify(&self) -> anyhow::Result<Result<u64, VerifyError>> {
                let sql = &$sql;
                let mut tx = self.begin_with(sql.begin_read).await?;
                let anchor: Option<(i64, String)> = sqlx::query_as(sql.anchor).fetch_optional(&mut *tx).await?;
                let anchor = match anchor.map(to_head).transpose() {
                    Ok(a) => a,
                    Err(e) => return Ok(Err(VerifyError { seq: None, line: None, reason: format!("anchor: {e}") })),
                };
                let mut verifier = ChainVerifier::new(anchor);
                // Start below any seq, so rows at or before the anchor are seen too.
                let mut after = i64::MIN;
                loop {
                    let rows: Vec<Row> =
                        sqlx::query_as(sql.page).bind(after).bind(PAGE).fetch_all(&mut *tx).await?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in rows {
                        after = row.seq;
                        let seq = u64::try_from(row.seq).ok();
                        let checked = row
                            .into_record()
                            .map_err(|reason| VerifyError { seq, line: None, reason })
                            .and_then(|r| verifier.check(&r));
                        if let Err(e) = checked {
                            return Ok(Err(e));
                        }
                    }
                }
                tx.commit().await?;
                Ok(Ok(verifier.count()))
            }

            async fn search(&self, query: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
                let text = search_sql(&$sql, query);
                let mut q = sqlx::query_as::<_, Row>(&text);
                if let Some(kind) = query.kind {
                    q = q.bind(kind.as_str());
                }
                if let Some(subject) = &query.subject {
                    q = q.bind(subject.clone());
                }
                if let Some(ip) = query.ip {
                    q = q.bind(ip.to_canonical().to_string());
                }
                if let Some(since) = query.since_ms {
                    q = q.bind(to_i64(since)?);
                }
                let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
                let rows = q.bind(limit).fetch_all(self).await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows.into_iter().rev() {
                    let seq = row.seq;
                    match row.into_record() {
                        Ok(r) => out.push(r),
                        Err(reason) => tracing::warn!(seq, %reason, "skipped an unreadable audit_log row"),
                    }
                }
                Ok(out)
            }

            async fn purge(&self, cutoff_ms: u64, max_rows: u64) -> anyhow::Result<Option<ChainHead>> {
                let sql = &$sql;
                let mut tx = self.begin_with(sql.begin_write).await?;
                if let Some(lock) = sql.lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let young: Option<i64> =
                    sqlx::query_scalar(sql.first_young).bind(to_i64(cutoff_ms)?).fetch_one(&mut *tx).await?;
                let cut: Option<(i64, String)> = match young {
                    Some(first) => sqlx::query_as(sql.last_before).bind(first).fetch_optional(&mut *tx).await?,
                    None => sqlx::query_as(sql.last).fetch_optional(&mut *tx).await?,
                };
                let Some((seq, hash)) = cut else { return Ok(None) };
                let oldest: Option<i64> = sqlx::query_scalar(sql.first).fetch_one(&mut *tx).await?;
                let most = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX);
                let (seq, hash) = match oldest.map(|o| o.saturating_add(most - 1)) {
                    Some(through) if through < seq => {
                        sqlx::query_as(sql.last_through).bind(through).fetch_one(&mut *tx).await?
                    }
                    _ => (seq, hash),
                };
                sqlx::query(sql.delete_through).bind(seq).execute(&mut *tx).await?;
                sqlx::query(sql.set_anchor).bind(seq).bind(hash.clone()).execute(&mut *tx).await?;
                tx.commit().await?;
                to_head((seq, hash)).map(Some)
            }
        }
    };
}

audit_store_for!(SqlitePool, SQLITE);
audit_store_for!(PgPool, POSTGRES);

impl AuditStore for Database {
    async fn append(&self, batch: &[StampedEvent], floor: Option<&ChainHead>) -> anyhow::Result<Vec<AuditRecord>> {
        match self {
            Self::Sqlite(p) => p.append(batch, floor).await,
            Self::Postgres(p) => p.append(batch, floor).await,
        }
    }

    async fn head(&self) -> anyhow::Result<Option<ChainHead>> {
        match self {
            Self::Sqlite(p) => p.head().await,
            Self::Postgres(p) => p.head().await,
        }
    }

    async fn verify(&self) -> anyhow::Result<Result<u64, VerifyError>> {
        match self {
            Self::Sqlite(p) => p.verify().await,
            Self::Postgres(p) => p.verify().await,
        }
    }

    async fn search(&self, query: &AuditQuery) -> anyhow::Result<Vec<AuditRecord>> {
        match self {
            Self::Sqlite(p) => p.search(query).await,
            Self::Postgres(p) => p.search(query).await,
        }
    }

    async fn purge(&self, cutoff_ms: u64, max_rows: u64) -> anyhow::Result<Option<ChainHead>> {
        match self {
            Self::Sqlite(p) => p.purge(cutoff_ms, max_rows).await,
            Self::Postgres(p) => p.purge(cutoff_ms, max_rows).await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::observe::audit::{AuditEvent, AuditKind};

    fn stamped(ts_ms: u64, i: u64) -> StampedEvent {
        StampedEvent { ts_ms, event: AuditEvent::new(AuditKind::AdminAction).detail("i", i).bounded() }
    }

    #[test]
    fn search_sql_numbers_placeholders_per_backend() {
        let q = AuditQuery { kind: Some(AuditKind::BanAdded), since_ms: Some(1), limit: 5, ..AuditQuery::default() };
        assert!(search_sql(&POSTGRES, &q).ends_with("AND kind = $1 AND ts_ms >= $2 ORDER BY seq DESC LIMIT $3"));
        assert!(search_sql(&SQLITE, &q).ends_with("AND kind = ? AND ts_ms >= ? ORDER BY seq DESC LIMIT ?"));
    }

    #[tokio::test]
    async fn appends_chain_purges_keep_an_anchor_and_a_shrunk_table_keeps_its_gap() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        assert_eq!(db.head().await.unwrap(), None);
        let first = db.append(&[stamped(10, 1), stamped(20, 2), stamped(30, 3)], None).await.unwrap();
        assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(db.verify().await.unwrap(), Ok(3));

        let anchor = db.purge(25, 100).await.unwrap().unwrap();
        assert_eq!(anchor, first[1].head());
        assert_eq!(db.verify().await.unwrap(), Ok(1));
        assert_eq!(db.purge(25, 100).await.unwrap(), None, "nothing more to purge");

        // Everything purged: the anchor is the head, and the chain goes on from it.
        assert_eq!(db.purge(1000, 100).await.unwrap(), Some(first[2].head()));
        assert_eq!(db.head().await.unwrap(), Some(first[2].head()));
        let next = db.append(&[stamped(40, 4)], Some(&first[2].head())).await.unwrap();
        assert_eq!(next[0].seq, 4);
        assert_eq!(db.verify().await.unwrap(), Ok(1));

        // A writer that stored seq 4 finds the table ending earlier: it keeps the gap.
        let Database::Sqlite(pool) = &db else { unreachable!() };
        sqlx::query("DELETE FROM audit_log WHERE seq = 4").execute(pool).await.unwrap();
        let after = db.append(&[stamped(50, 5)], Some(&next[0].head())).await.unwrap();
        assert_eq!(after[0].seq, 5);
        let err = db.verify().await.unwrap().unwrap_err();
        assert_eq!(err.seq, Some(5));

        let found = db.search(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
        assert_eq!(found.iter().map(|r| r.seq).collect::<Vec<_>>(), [5]);
    }

    #[tokio::test]
    async fn a_purge_takes_at_most_max_rows_at_a_time_and_keeps_the_chain() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let all: Vec<_> = (1..=6).map(|i| stamped(i * 10, i)).collect();
        let records = db.append(&all, None).await.unwrap();
        // Five are older than 55: two, two, one, then nothing.
        let mut anchors = Vec::new();
        while let Some(anchor) = db.purge(55, 2).await.unwrap() {
            anchors.push(anchor.seq);
            assert_eq!(db.verify().await.unwrap(), Ok(6 - anchor.seq));
        }
        assert_eq!(anchors, [2, 4, 5]);
        assert_eq!(db.head().await.unwrap(), Some(records[5].head()));
        // `0` still makes progress.
        db.append(&[stamped(70, 7)], Some(&records[5].head())).await.unwrap();
        assert_eq!(db.purge(65, 0).await.unwrap().map(|a| a.seq), Some(6));
    }
}
