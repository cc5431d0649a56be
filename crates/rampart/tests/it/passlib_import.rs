//! Interop with passlib, on SQLite and PostgreSQL: hashes made by passlib
//! (bcrypt, pbkdf2_sha256, django_pbkdf2_sha256, and argon2 when passlib has
//! a backend for it) are imported with the real `rampart user import`, the
//! users log in at `POST /auth/token` of a running gateway, and each stored
//! hash has become argon2id; wrong passwords are refused before and after.
//!
//! Needs `RAMPART_TEST_PYTHON` with passlib and bcrypt (`scripts/test`
//! installs Debian's packages); skipped with a message without it, and a
//! failure of the script is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use rampart::store::identity::UserStore;
use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_passlib_hashes_import_and_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&TestDb::sqlite(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passlib_hashes_import_and_upgrade() {
    let Some(db) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    scenario(&db, dir.path()).await;
}

/// The JSON lines the passlib script prints, or `None` without a Python.
fn passlib_lines() -> Option<Vec<Value>> {
    let Ok(python) = std::env::var("RAMPART_TEST_PYTHON") else {
        eprintln!("skipped: RAMPART_TEST_PYTHON not set (scripts/test sets it)");
        return None;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/passlib_hashes.py");
    let mut child = Command::new(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    child.stdin.take().unwrap().write_all(serde_json::json!({ "password": PASSWORD }).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script} failed (is python3-passlib installed?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    Some(lines)
}

async fn login(gw: &rampart::Gateway, username: &str, password: &str) -> (u16, Value) {
    let form = [("grant_type", "password"), ("username", username), ("password", password)];
    let r = client().post(url(gw, "/auth/token")).form(&form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn scenario(tdb: &TestDb, dir: &std::path::Path) {
    let Some(lines) = passlib_lines() else { return };
    let up = start_upstream().await;
    let text = identity_config(up, &tdb.url);
    let config = dir.join("rampart.toml");
    std::fs::write(&config, &text).unwrap();

    // The import file: passlib's lines without their "scheme", and one line
    // whose hash no supported format matches.
    let mut input = String::new();
    for line in &lines {
        let mut user = line.clone();
        user.as_object_mut().unwrap().remove("scheme");
        input.push_str(&format!("{user}\n"));
    }
    input.push_str("{\"username\": \"md5_user\", \"password_hash\": \"5f4dcc3b5aa765d61d8327deb882cf99\"}\n");
    let import = |args: &[&str]| {
        let mut child = Command::new(BIN)
            .args(["user", "import", "-", "--config"])
            .arg(&config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let summary: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no summary: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), summary, String::from_utf8(out.stderr).unwrap())
    };
    let n = lines.len() as u64;
    let (ok, summary, stderr) = import(&["--dry-run"]);
    assert!(!ok, "a refused line fails the run");
    assert_eq!(summary, serde_json::json!({"imported": n, "skipped": 0, "refused": 1, "dry_run": true}));
    assert!(stderr.contains(&format!("line {}: refused: password_hash", n + 1)), "{stderr}");
    let (_, summary, stderr) = import(&[]);
    assert_eq!(summary, serde_json::json!({"imported": n, "skipped": 0, "refused": 1, "dry_run": false}));
    for line in &lines {
        let hash = line["password_hash"].as_str().unwrap();
        assert!(!stderr.contains(hash), "a hash was printed: {stderr}");
    }
    let (_, again, _) = import(&[]);
    assert_eq!(again, serde_json::json!({"imported": 0, "skipped": n, "refused": 1, "dry_run": false}));

    let gw = gateway(&text).await;
    let db = tdb.open().await;
    for line in &lines {
        let (username, scheme) = (line["username"].as_str().unwrap(), line["scheme"].as_str().unwrap());
        let (status, body) = login(&gw, username, "not the password at all").await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{scheme}: {body}");
        let stored = db.user_by_username(username).await.unwrap().unwrap().password_hash.unwrap();
        assert_eq!(stored.expose(), line["password_hash"].as_str().unwrap(), "{scheme}: unchanged before a login");

        let (status, body) = login(&gw, username, PASSWORD).await;
        assert_eq!(status, 200, "{scheme}: {body}");
        let stored = db.user_by_username(username).await.unwrap().unwrap().password_hash.unwrap();
        assert!(stored.expose().starts_with("$argon2id$v=19$m=4096,t=1,p=1$"), "{scheme}: not rehashed");

        let (status, _) = login(&gw, username, "not the password at all").await;
        assert_eq!(status, 400, "{scheme}: a wrong password after the rehash");
        assert_eq!(login(&gw, username, PASSWORD).await.0, 200, "{scheme}: the new hash verifies");
    }
    db.close().await;
    gw.shutdown();
    gw.wait().await;
}
