//! `rampart migrate-storage`: a single instance's SQLite database moved into
//! PostgreSQL (and back), after which the same users log in, tokens issued
//! before the move still verify and refresh, the audit chain verifies, and a
//! second copy into the now non-empty target is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, login, register_with_email, token_request, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

/// `rampart migrate-storage`, the URLs passed in the environment (as an
/// operator should, to keep passwords out of `ps`); (success, stdout, stderr).
fn migrate(from: &str, to: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("migrate-storage")
        .env("RAMPART_MIGRATE_FROM", from)
        .env("RAMPART_MIGRATE_TO", to)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Table → rows, from the command's JSON lines.
fn copied(stdout: &str) -> std::collections::BTreeMap<String, u64> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| (v["table"].as_str().unwrap().to_string(), v["rows"].as_u64().unwrap()))
        .collect()
}

/// The identity test config with the audit log on, into `audit_file`.
fn config_with_audit(up: std::net::SocketAddr, db: &str, audit_file: &std::path::Path) -> String {
    identity_config(up, db)
        .replace("[audit]\nenabled = false\n", &format!("[audit]\nfile = '{}'\n", audit_file.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_moves_to_postgres_with_users_tokens_keys_and_audit_log() {
    let Some(pg) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = TestDb::sqlite(dir.path());
    let up = start_upstream().await;

    // A single instance on SQLite, with some history: users, tokens, a
    // rotated key, audit events.
    let before = config_with_audit(up, &sqlite.url, &dir.path().join("audit-a.jsonl"));
    let config_a = dir.path().join("a.toml");
    std::fs::write(&config_a, &before).unwrap();
    let a = gateway(&before).await;
    for name in ["alice", "bob"] {
        assert_eq!(register_with_email(&a, name, Some(&format!("{name}@example.com")), PASSWORD).await.status(), 201);
    }
    let (old_access, old_refresh) = login(&a, "alice", PASSWORD).await;
    let rotate = Command::new(BIN).args(["keys", "rotate", "--config"]).arg(&config_a).output().unwrap();
    assert!(rotate.status.success(), "{}", String::from_utf8_lossy(&rotate.stderr));
    // The wrong password leaves an audit event too.
    let (status, _) =
        token_request(&a, &[("grant_type", "password"), ("username", "bob"), ("password", "not the password")]).await;
    assert_eq!(status, 400);
    a.shutdown();
    a.wait().await;

    // The move.
    let (ok, out, err) = migrate(&sqlite.url, &pg.url);
    assert!(ok, "{err}");
    let tables = copied(&out);
    assert_eq!(tables["users"], 2, "{out}");
    assert_eq!(tables["signing_keys"], 2, "{out}");
    assert!(tables["refresh_tokens"] >= 1, "{out}");
    assert!(tables["audit_log"] >= 1, "{out}");
    assert!(!tables.contains_key("_sqlx_migrations"), "{out}");
    if let Some(password) = pg.password() {
        assert!(!err.contains(&password) && !out.contains(&password), "the password leaked: {err}");
    }

    // The same deployment on PostgreSQL: nobody notices.
    let after = config_with_audit(up, &pg.url, &dir.path().join("audit-b.jsonl"));
    let config_b = dir.path().join("b.toml");
    std::fs::write(&config_b, &after).unwrap();
    let b = gateway(&after).await;
    let r = client().get(url(&b, "/api/x")).bearer_auth(&old_access).send().await.unwrap();
    assert_eq!(r.status(), 200, "a token from before the move still verifies");
    let (status, refreshed) =
        token_request(&b, &[("grant_type", "refresh_token"), ("refresh_token", old_refresh.as_str())]).await;
    assert_eq!(status, 200, "{refreshed}");
    let _ = login(&b, "bob", PASSWORD).await;
    b.shutdown();
    b.wait().await;
    let verify = Command::new(BIN).args(["audit", "verify", "--config"]).arg(&config_b).output().unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(report.contains("database") && report.contains("ok"), "{report}");

    // A second copy into the filled target is refused, and changes nothing.
    let (ok, _, err) = migrate(&sqlite.url, &pg.url);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");

    // And back: PostgreSQL into a fresh SQLite file, row for row.
    let back = TestDb::sqlite(&dir.path().join("back"));
    let (ok, out_back, err) = migrate(&pg.url, &back.url);
    assert!(ok, "{err}");
    let there = copied(&out_back);
    assert_eq!(there["users"], 2);
    assert!(there["audit_log"] > tables["audit_log"], "the events on PostgreSQL came along: {out_back}");
    assert!(there["refresh_tokens"] > tables["refresh_tokens"], "{out_back}");

    // Nothing to copy from a file that does not exist (and none is created).
    let missing = format!("sqlite://{}/missing.db", dir.path().display());
    let (ok, _, err) = migrate(&missing, &format!("sqlite://{}/other.db", dir.path().display()));
    assert!(!ok && err.contains("no such database file"), "{err}");
    assert!(!dir.path().join("missing.db").exists());
}
