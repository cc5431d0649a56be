//! The audit log end to end, on SQLite and on PostgreSQL: events from a running
//! gateway reach the database and the file with valid chains; `rampart audit
//! verify` names the first bad record after each kind of tampering; a full
//! queue drops instead of blocking; retention keeps the chain verifiable; and
//! hostile input is stored bounded.
//!
//! PostgreSQL tests need `RAMPART_TEST_POSTGRES_URL` (an admin URL; `scripts/test`
//! starts a server and sets it). Each test creates its own database and drops it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::db::TestDb;
use crate::common::*;
use rampart::observe::audit::{
    verify_file, AuditEvent, AuditKind, AuditQuery, AuditRecord, AuditSink, MAX_VALUE_CHARS,
};
use rampart::observe::Metrics;
use rampart::store::audit::AuditStore;
use rampart::store::Database;
use rampart_core::config::model::AuditConfig;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// What the audit tests do with their database beyond the common fixture.
trait AuditDb {
    async fn exec(&self, db: &Database, sql: &str);
    fn config(&self, dir: &Path, file: &str, retention: &str) -> PathBuf;
}

impl AuditDb for TestDb {
    /// Runs SQL that both backends understand.
    async fn exec(&self, db: &Database, sql: &str) {
        match db {
            Database::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
            Database::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A config file naming this database (and `file`, `""` for none).
    fn config(&self, dir: &Path, file: &str, retention: &str) -> PathBuf {
        let path = dir.join("rampart.toml");
        std::fs::write(&path, config_text(&self.url, file, retention)).unwrap();
        path
    }
}

fn config_text(database: &str, file: &str, retention: &str) -> String {
    format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:0'\n[metrics]\nlisten = '127.0.0.1:0'\n[log]\naccess_log = false\n\
         [storage]\ndatabase = '{database}'\n[audit]\nfile = '{file}'\nretention = '{retention}'\n\
         [upstreams.default]\nurl = 'http://127.0.0.1:1'\n"
    )
}

fn audit_config(file: &Path, queue: usize, retention: Duration) -> AuditConfig {
    AuditConfig { enabled: true, file: file.display().to_string(), retention, queue }
}

/// Runs the binary; returns (success, stdout, stderr).
fn rampart(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).env_remove("RAMPART_CONFIG").output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verify_cli(config: &Path) -> (bool, String, String) {
    rampart(&["audit", "verify", "--config", config.to_str().unwrap()])
}

fn kinds(records: &[AuditRecord]) -> Vec<&'static str> {
    records.iter().map(|r| r.kind.as_str()).collect()
}

async fn all_records(db: &Database) -> Vec<AuditRecord> {
    db.search(&AuditQuery { limit: 10_000, ..AuditQuery::default() }).await.unwrap()
}

fn file_records(path: &Path) -> Vec<AuditRecord> {
    let (records, unreadable) =
        rampart::observe::audit::search_file(path, &AuditQuery { limit: 10_000, ..AuditQuery::default() }).unwrap();
    assert_eq!(unreadable, 0);
    records
}

/// Runs `scenario` on SQLite, then on PostgreSQL when one is available.
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            let db = TestDb::sqlite(dir.path());
            $scenario(&db, dir.path()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = TestDb::postgres().await else { return };
            let dir = tempfile::tempdir().unwrap();
            $scenario(&db, dir.path()).await;
        }
    };
}

on_both_backends!(sqlite_gateway_events_reach_both_stores, postgres_gateway_events_reach_both_stores, gateway_events);
on_both_backends!(sqlite_database_tampering_is_detected, postgres_database_tampering_is_detected, database_tampering);
on_both_backends!(
    sqlite_retention_keeps_the_chain_verifiable,
    postgres_retention_keeps_the_chain_verifiable,
    retention
);
on_both_backends!(sqlite_hostile_values_are_stored_bounded, postgres_hostile_values_are_stored_bounded, hostile_values);

async fn gateway_events(tdb: &TestDb, dir: &Path) {
    let file = dir.join("logs/audit.jsonl");
    let text = config_text(&tdb.url, file.to_str().unwrap(), "0s");
    let gw = gateway(&text).await;
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let r = post_ban(&ops, r#"{"ip":"127.0.0.1","ttl":"1m"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    let r = client().delete(format!("{ops}/bans/127.0.0.1")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    gw.reload(rampart::app::load_policy_text(&text)).unwrap();
    assert!(gw.reload(rampart::app::load_policy_text("version = 1\n[server\n")).is_err());
    gw.audit.flush().await;

    let db = tdb.open().await;
    let stored = all_records(&db).await;
    assert_eq!(kinds(&stored), ["ban_added", "ban_removed", "config_reloaded", "config_reload_failed"]);
    assert_eq!(stored[0].ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(stored[0].detail["ttl_secs"], json!(60));
    assert_eq!(stored[0].detail["source"], json!("manual"));
    assert_eq!(stored[0].seq, 1);
    assert_eq!(stored[0].prev_hash, rampart::observe::audit::GENESIS_HASH);
    assert_eq!(db.verify().await.unwrap(), Ok(4));
    // The file holds the same records, chain and all.
    assert_eq!(file_records(&file), stored);
    assert_eq!(verify_file(&file).unwrap(), Ok(4));
    let metrics = gw.metrics.render();
    assert!(metrics.contains(r#"rampart_audit_written_total{sink="database"} 4"#), "{metrics}");
    assert!(metrics.contains(r#"rampart_audit_written_total{sink="file"} 4"#), "{metrics}");

    let config = dir.join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let (ok, out, err) = verify_cli(&config);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok, 4 record(s)") && out.contains("database") && out.contains("file"), "{out}");
    if let Some(password) = tdb.password() {
        assert!(!out.contains(&password) && !err.contains(&password), "password leaked: {out}{err}");
    }

    let cfg = config.to_str().unwrap();
    let (ok, out, err) = rampart(&["audit", "tail", "-n", "2", "--config", cfg]);
    assert!(ok, "{err}");
    let tail: Vec<AuditRecord> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(tail, stored[2..]);
    let (_, out, _) = rampart(&["audit", "search", "--kind", "ban_added", "--config", cfg]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let (_, out, _) = rampart(&["audit", "search", "--ip", "127.0.0.1", "--since", "1h", "--config", cfg]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = rampart(&["audit", "search", "--limit", "1", "--config", cfg]);
    let last: AuditRecord = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(last.kind, AuditKind::ConfigReloadFailed);
    let (ok, _, err) = rampart(&["audit", "search", "--kind", "nonsense", "--config", cfg]);
    assert!(!ok && err.contains("unknown audit kind"), "{err}");

    gw.shutdown();
    gw.wait().await;
}

/// Six records with `detail.i` = 0…5, written through a sink.
async fn write_six(file: Option<&Path>, db: Option<Database>) {
    let file = file.map_or_else(String::new, |f| f.display().to_string());
    let cfg = AuditConfig { enabled: true, file, retention: Duration::ZERO, queue: 100 };
    let sink = AuditSink::start(&cfg, db, Arc::new(Metrics::new())).unwrap();
    for i in 0..6 {
        sink.record(AuditEvent::new(AuditKind::AdminAction).subject(format!("user-{i}")).detail("i", i));
    }
    sink.close().await;
    assert_eq!(sink.dropped(), 0);
}

/// A change to the lines of a log file.
type Tamper = fn(&mut Vec<String>);

#[tokio::test]
async fn file_tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    write_six(Some(&file), None).await;
    let original: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    assert_eq!(original.len(), 6);
    let (ok, out, err) = rampart(&["audit", "verify", "--file", file.to_str().unwrap()]);
    assert!(ok && out.contains("ok, 6 record(s)"), "{out}{err}");

    let cases: [(&str, Tamper, &str); 6] = [
        ("edited", |l| l[2] = l[2].replace(r#""i":2"#, r#""i":7"#), "line 3 (seq 3): hash does not match"),
        (
            "deleted",
            |l| {
                l.remove(2);
            },
            "line 3 (seq 4): seq 3 missing",
        ),
        ("inserted", |l| l.insert(2, l[1].clone()), "line 3 (seq 2): seq 2 comes after seq 2"),
        ("swapped", |l| l.swap(2, 3), "line 3 (seq 4): seq 3 missing"),
        ("garbage", |l| l.insert(2, "not json".into()), "line 3: not an audit record"),
        (
            "stray anchor",
            |l| l.insert(3, format!(r#"{{"anchor":{{"seq":2,"hash":"{}"}}}}"#, "0".repeat(64))),
            "line 4: an anchor",
        ),
    ];
    for (name, tamper, expected) in cases {
        let mut lines = original.clone();
        tamper(&mut lines);
        let copy = dir.path().join(format!("{}.jsonl", name.replace(' ', "-")));
        std::fs::write(&copy, lines.join("\n") + "\n").unwrap();
        let (ok, out, err) = rampart(&["audit", "verify", "--file", copy.to_str().unwrap()]);
        assert!(!ok, "{name}: not detected: {out}");
        assert!(err.contains(expected), "{name}: expected `{expected}` in:\n{err}");
    }
}

async fn database_tampering(tdb: &TestDb, dir: &Path) {
    let db = tdb.open().await;
    write_six(None, Some(db.clone())).await;
    let original = all_records(&db).await;
    assert_eq!(original.len(), 6);
    let config = tdb.config(dir, "", "0s");
    let (ok, out, err) = verify_cli(&config);
    assert!(ok && out.contains("ok, 6 record(s)"), "{out}{err}");

    // A record forged by someone who knows the format: valid hash, linked to
    // seq 2, spliced in by renumbering the rest.
    let forged = AuditRecord::chained(&original[1].head(), original[1].ts_ms, &AuditEvent::new(AuditKind::AuthSuccess));
    let insert_forged = format!(
        "UPDATE audit_log SET seq = -seq WHERE seq >= 3; UPDATE audit_log SET seq = 1 - seq WHERE seq < 0; {}",
        insert_sql(&forged)
    );
    let cases = [
        (
            "edited",
            r#"UPDATE audit_log SET detail = '{"i":7}' WHERE seq = 3"#.to_string(),
            "record seq 3: hash does not match",
        ),
        ("deleted", "DELETE FROM audit_log WHERE seq = 3".into(), "record seq 4: seq 3 missing"),
        ("inserted", insert_forged, "record seq 4: hash does not match"),
        (
            "reordered",
            "UPDATE audit_log SET seq = -3 WHERE seq = 3; UPDATE audit_log SET seq = 3 WHERE seq = 4; \
             UPDATE audit_log SET seq = 4 WHERE seq = -3"
                .into(),
            "record seq 3: hash does not match",
        ),
        ("appended", insert_sql(&AuditRecord { seq: 7, ..original[5].clone() }), "record seq 7: hash does not match"),
    ];
    for (name, sql, expected) in cases {
        tdb.exec(&db, &sql).await;
        let (ok, out, err) = verify_cli(&config);
        assert!(!ok, "{name}: not detected: {out}");
        assert!(err.contains(expected), "{name}: expected `{expected}` in:\n{err}");
        assert!(err.contains("database"), "{err}");
        // Put the log back as it was.
        let restore = std::iter::once("DELETE FROM audit_log".to_string())
            .chain(original.iter().map(insert_sql))
            .collect::<Vec<_>>()
            .join("; ");
        tdb.exec(&db, &restore).await;
        assert_eq!(db.verify().await.unwrap(), Ok(6), "restored after {name}");
    }
}

/// An INSERT with literal values (tests only: values are quoted, not bound).
fn insert_sql(r: &AuditRecord) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let opt = |s: Option<String>| s.map_or("NULL".to_string(), |s| q(&s));
    format!(
        "INSERT INTO audit_log (seq, ts_ms, kind, subject, ip, request_id, detail, prev_hash, hash) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {})",
        r.seq,
        r.ts_ms,
        q(r.kind.as_str()),
        opt(r.subject.clone()),
        opt(r.ip.map(|i| i.to_string())),
        opt(r.request_id.clone()),
        q(&r.detail_json()),
        q(&r.prev_hash),
        q(&r.hash)
    )
}

/// A hung database (here: the lock every append takes, held by another
/// session) counts as a failed write after 5 s, and the file keeps receiving
/// the records meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_does_not_stop_the_file() {
    let Some(tdb) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let db = tdb.open().await;
    let Database::Postgres(pool) = &db else { panic!("not PostgreSQL") };
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(8241989122503373825)").execute(&mut *holder).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let sink = AuditSink::start(&audit_config(&file, 100, Duration::ZERO), Some(db.clone()), metrics.clone()).unwrap();
    sink.record(AuditEvent::new(AuditKind::AdminAction).detail("i", 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // These wait behind the first batch, whose database append hangs.
    for i in 1..4 {
        sink.record(AuditEvent::new(AuditKind::AdminAction).detail("i", i));
    }
    let started = Instant::now();
    while file_records(&file).len() < 4 {
        assert!(started.elapsed() < Duration::from_secs(12), "the file stopped behind the hung database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.render().contains("rampart_audit_write_errors_total{sink=\"database\"}"), "{}", metrics.render());
    sqlx::query("SELECT pg_advisory_unlock(8241989122503373825)").execute(&mut *holder).await.unwrap();
    drop(holder);
    tokio::time::timeout(Duration::from_secs(10), sink.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // A reader that never reads: the writer's writes block once the pipe is full.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(std::fs::File::open(path).unwrap()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let sink = AuditSink::start(&audit_config(&fifo, 1, Duration::ZERO), None, metrics.clone()).unwrap();

    // Records as large as the sink keeps (about 13 KB each), so a few fill the pipe.
    let pad = "p".repeat(MAX_VALUE_CHARS);
    let big = |i: u32| {
        (0..60).fold(AuditEvent::new(AuditKind::RateLimited).detail("i", i), |e, k| {
            e.detail(&format!("k{k:02}"), pad.as_str())
        })
    };
    // Feed them until the writer is stuck: then the one-slot queue stays full
    // even when given time to drain, and every record is dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        assert!(Instant::now() < deadline, "the writer never blocked on the full pipe");
        let before = sink.dropped();
        sink.record(big(i));
        if sink.dropped() > before {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = sink.dropped();
            sink.record(big(i));
            if sink.dropped() > before {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let reader = rx.recv_timeout(Duration::from_secs(1)).expect("the writer opened the pipe");

    let before = sink.dropped();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..5_000u32 {
        let t = Instant::now();
        sink.record(big(i));
        slowest = slowest.max(t.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "5000 records took {:?}", started.elapsed());
    assert!(slowest < Duration::from_millis(100), "one record() took {slowest:?}");
    assert_eq!(sink.dropped() - before, 5_000);
    let text = metrics.render();
    assert!(text.contains(&format!("rampart_audit_dropped_total {}", sink.dropped())), "{text}");

    // Unblock the writer and let it finish, so the test ends cleanly.
    drop(sink);
    let drained = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut reader = reader;
        let mut all = Vec::new();
        reader.read_to_end(&mut all).map(|_| all)
    });
    let bytes = tokio::time::timeout(Duration::from_secs(10), drained).await.expect("writer never finished").unwrap();
    let bytes = bytes.unwrap();
    assert!(bytes.ends_with(b"\n") && bytes.len() > 64 * 1024, "{} bytes", bytes.len());
}

async fn retention(tdb: &TestDb, dir: &Path) {
    let file = dir.join("audit.jsonl");
    let cfg = audit_config(&file, 100, Duration::from_secs(1));
    let db = tdb.open().await;
    let sink = AuditSink::start(&cfg, Some(db.clone()), Arc::new(Metrics::new())).unwrap();
    for i in 0..4 {
        sink.record(AuditEvent::new(AuditKind::AuthFailure).subject("u-1").detail("i", i));
    }
    sink.flush().await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for i in 4..7 {
        sink.record(AuditEvent::new(AuditKind::AuthFailure).subject("u-1").detail("i", i));
    }
    sink.flush().await;
    let before = all_records(&db).await;
    assert_eq!(before.len(), 7);
    sink.purge_now().await;

    // The four old records are gone from both; the anchor is the fourth.
    let after = all_records(&db).await;
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7]);
    assert_eq!(db.head().await.unwrap(), Some(before[6].head()));
    assert_eq!(db.verify().await.unwrap(), Ok(3));
    let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 4);
    let anchor: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(anchor, json!({"anchor": {"seq": 4, "hash": before[3].hash}}));
    assert_eq!(verify_file(&file).unwrap(), Ok(3));
    let config = tdb.config(dir, file.to_str().unwrap(), "1s");
    let (ok, out, err) = verify_cli(&config);
    assert!(ok, "{out}{err}");

    // Writing goes on from the head, and a restarted sink resumes both chains.
    sink.record(AuditEvent::new(AuditKind::AuthSuccess).subject("u-1"));
    sink.close().await;
    let sink = AuditSink::start(&audit_config(&file, 100, Duration::ZERO), Some(db.clone()), Arc::new(Metrics::new()))
        .unwrap();
    sink.record(AuditEvent::new(AuditKind::Lockout).subject("u-1"));
    sink.close().await;
    let db_records = all_records(&db).await;
    assert_eq!(db_records.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7, 8, 9]);
    assert_eq!(file_records(&file), db_records);
    assert_eq!(db.verify().await.unwrap(), Ok(5));
    assert_eq!(verify_file(&file).unwrap(), Ok(5));

    // Without the anchor the purged log no longer verifies…
    tdb.exec(&db, "DELETE FROM audit_anchor").await;
    assert_eq!(db.verify().await.unwrap().unwrap_err().seq, Some(5));
    // …and deleting the first kept record is caught against the anchor.
    let restore = format!(
        "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 4, '{}'); DELETE FROM audit_log WHERE seq = 5",
        before[3].hash
    );
    tdb.exec(&db, &restore).await;
    let (ok, _, err) = verify_cli(&config);
    assert!(!ok);
    assert!(err.contains("record seq 6: seq 5 missing"), "{err}");
    let mut lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(String::from).collect();
    lines.remove(1);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, _, err) = verify_cli(&config);
    assert!(!ok);
    assert!(err.contains("line 2 (seq 6): seq 5 missing"), "{err}");
}

async fn hostile_values(tdb: &TestDb, dir: &Path) {
    let file = dir.join("audit.jsonl");
    let db = tdb.open().await;
    let sink = AuditSink::start(&audit_config(&file, 100, Duration::ZERO), Some(db.clone()), Arc::new(Metrics::new()))
        .unwrap();
    let huge = "A".repeat(100_000);
    let control = "\u{0}\u{7}\r\n\u{1b}]0;pwned\u{7}\u{1b}[31m\u{7f}\u{2028}'\";--";
    let deep = json!({"a": {"b": {"c": {"d": {"e": "deep"}}}}});
    sink.record(
        AuditEvent::new(AuditKind::InputBlocked)
            .subject(format!("user\u{0}\n{control}{huge}"))
            .request_id(format!("req\n{huge}"))
            .ip("::ffff:203.0.113.9".parse().unwrap())
            .detail("huge", huge.as_str())
            .detail("control", control)
            .detail("deep", deep)
            .detail("many", (0..10_000).collect::<Vec<u32>>())
            .detail(&"k".repeat(1_000), 1),
    );
    sink.record(AuditEvent::new(AuditKind::InputBlocked).detail("after", true));
    sink.close().await;

    let stored = all_records(&db).await;
    assert_eq!(stored.len(), 2);
    let r = &stored[0];
    let chars = |v: &serde_json::Value| v.as_str().unwrap().chars().count();
    assert_eq!(chars(&r.detail["huge"]), MAX_VALUE_CHARS);
    assert!(r.detail["huge"].as_str().unwrap().ends_with('…'));
    assert_eq!(r.detail["control"].as_str().unwrap(), control.replace('\u{0}', "\u{FFFD}"));
    assert_eq!(r.subject.as_ref().unwrap().chars().count(), MAX_VALUE_CHARS);
    assert!(!r.subject.as_ref().unwrap().contains('\u{0}'));
    assert_eq!(r.request_id.as_ref().unwrap().chars().count(), MAX_VALUE_CHARS);
    assert_eq!(r.ip.unwrap().to_string(), "203.0.113.9");
    assert!(r.detail["many"].as_array().unwrap().len() < 100);
    assert_eq!(r.detail["deep"]["a"]["b"]["c"], json!("…"));
    assert!(r.detail.keys().all(|k| k.chars().count() <= 64));
    assert_eq!(db.verify().await.unwrap(), Ok(2));

    // One line per record: newlines and control characters stay escaped.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'));
    assert!(text.len() < 64 * 1024, "{} bytes", text.len());
    assert_eq!(file_records(&file), stored);
    let config = tdb.config(dir, file.to_str().unwrap(), "0s");
    let (ok, out, err) = verify_cli(&config);
    assert!(ok && out.contains("ok, 2 record(s)"), "{out}{err}");
}

#[tokio::test]
async fn start_fails_clearly_when_the_database_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    for (url, shown) in [
        ("postgres://rampart:topsecret@127.0.0.1:1/db", "postgres://rampart:***@127.0.0.1:1/db"),
        ("sqlite:///proc/rampart-no-such-dir/r.db", "sqlite:///proc/rampart-no-such-dir/r.db"),
    ] {
        let policy = rampart::app::load_policy_text(&config_text(url, file.to_str().unwrap(), "0s")).unwrap();
        let err = format!("{:#}", rampart::Gateway::start(policy).await.err().expect("start should fail"));
        assert!(err.contains("storage.database") && err.contains(shown), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
    }
}

#[tokio::test]
async fn a_disabled_log_stores_nothing_but_tells_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let cfg = AuditConfig { enabled: false, ..audit_config(&file, 10, Duration::ZERO) };
    let sink = AuditSink::start(&cfg, None, Arc::new(Metrics::new())).unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    sink.subscribe(move |e| {
        if e.kind == AuditKind::Lockout {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    sink.record(AuditEvent::new(AuditKind::Lockout).subject("u-9"));
    sink.flush().await;
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    assert!(!file.exists());
    assert_eq!(sink.dropped(), 0);
}

/// Blocked inputs and rate-limit refusals reach the audit log from the request
/// path (once per client, rule and place per minute, however many requests),
/// and the alert rules see them: a real webhook receiver gets the alert.
#[tokio::test]
async fn request_path_refusals_are_audited_and_alerted() {
    use axum::routing::post;
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let file = dir.path().join("audit.jsonl");
    let got: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = got.clone();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| async move {
            sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, hook).await.unwrap() });
    let up = start_upstream().await;
    let text = format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:0'\n[metrics]\nlisten = '127.0.0.1:0'\n[log]\naccess_log = false\n\
         [storage]\ndatabase = '{}'\n[audit]\nfile = '{}'\n\
         [alerts]\nwebhook_url = 'http://{hook_addr}/hook'\nrules = [{{ event = 'input_blocked', threshold = 2, window = '1m' }}]\n\
         [upstreams.default]\nurl = 'http://{up}'\n\
         [limits.named.tight]\nby = 'ip'\nrate = '1/min'\nburst = 1\n\
         [[routes]]\npath = '/limited/**'\nlimits = ['tight']\n\
         [[routes]]\npath = '/**'\ninspect = 'block'\n",
        tdb.url,
        file.display()
    );
    let gw = gateway(&text).await;
    let c = client();
    let sqli = "/s?q=1%27%20UNION%20SELECT%20password%20FROM%20users%20--";
    for path in [sqli, sqli, "/s?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"] {
        assert_eq!(c.get(url(&gw, path)).send().await.unwrap().status(), 403, "{path}");
    }
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(c.get(url(&gw, "/limited/x")).send().await.unwrap().status().as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 429, 429]);
    gw.audit.flush().await;

    let stored = all_records(&tdb.open().await).await;
    assert_eq!(kinds(&stored), ["input_blocked", "input_blocked", "rate_limited"], "{stored:#?}");
    let first = &stored[0];
    assert_eq!(first.ip, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(first.detail["rule"], json!("sqli"));
    assert_eq!(first.detail["location"], json!("query:q"));
    assert_eq!(first.detail["blocked"], json!(true));
    assert!(first.request_id.as_deref().is_some_and(|id| !id.is_empty()));
    assert_eq!(stored[1].detail["rule"], json!("xss"));
    assert_eq!(stored[2].detail["limit"], json!("tight"));
    assert_eq!(stored[2].detail["status"], json!(429));
    assert_eq!(verify_file(&file).unwrap(), Ok(3));

    // Two distinct blocked-input events within a minute: one alert.
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts = got.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["event"], json!("input_blocked"), "{alerts:?}");
    gw.shutdown();
    gw.wait().await;
}
