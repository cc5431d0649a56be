//! Personal data end to end, on SQLite and PostgreSQL: a user downloads
//! their data (profile, sessions, API keys, audit records about them; never
//! a secret), then erases their account; afterwards nothing they held works
//! (bearer token, session, API key, password), the name is free again, and
//! the audit log (database and file) still verifies. An administrator does
//! the same with `rampart user export|erase`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};
use serde_json::Value;

/// `rampart user ARGS --config CONFIG`, which must succeed; its JSON output.
fn user_cli(config: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("user")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()
}

on_both_backends!(sqlite_export_and_erase_an_account, postgres_export_and_erase_an_account, export_and_erase);

async fn export_and_erase(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let text = identity_config(up, &db.url)
        .replace("[audit]\nenabled = false", &format!("[audit]\nenabled = true\nfile = '{}'", audit.display()))
        .replace(
            "[identity.password.argon2]",
            "[identity.api_keys]\ncache_ttl = '1s'\n[identity.sessions]\nenabled = true\n[identity.password.argon2]",
        );
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;
    let r = register_with_email(&gw, "ann", Some("ann@example.test"), PASSWORD).await;
    let ann = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let login = [("grant_type", "password"), ("username", "ann"), ("password", PASSWORD)];
    let (_, tokens) = token_request(&gw, &login).await;
    let bearer = tokens["access_token"].as_str().unwrap().to_string();
    let r = client()
        .post(url(&gw, "/auth/api-keys"))
        .bearer_auth(&bearer)
        .json(&serde_json::json!({"name": "laptop script", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let r = client().post(url(&gw, "/auth/session")).form(&login).send().await.unwrap();
    let cookie = session_cookie(&r);
    let api = |auth: (&'static str, String)| {
        let gw_url = url(&gw, "/api/x");
        async move { client().get(gw_url).header(auth.0, auth.1).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(api(("x-api-key", key.clone())).await, 200);
    assert_eq!(api(("cookie", cookie.clone())).await, 200);

    // The download: everything about ann, no secret.
    let r = client().get(url(&gw, "/auth/me/export")).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let raw = r.text().await.unwrap();
    let data: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(data["profile"]["username"], "ann");
    assert_eq!(data["profile"]["email"], "ann@example.test");
    assert_eq!(data["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(data["api_keys"][0]["name"], "laptop script");
    let audit_ok = eventually(Duration::from_secs(5), || {
        let (gw_url, bearer) = (url(&gw, "/auth/me/export"), bearer.clone());
        async move {
            let data: Value = client().get(gw_url).bearer_auth(bearer).send().await.unwrap().json().await.unwrap();
            data["audit"].as_array().unwrap().iter().any(|r| r["kind"] == "auth_success")
        }
    })
    .await;
    assert!(audit_ok, "the export holds the audit records about the user");
    for secret in [key.as_str(), cookie.split('=').nth(1).unwrap(), bearer.as_str(), "argon2"] {
        assert!(!raw.contains(secret), "the export must not hold {secret}");
    }

    // Erasure needs proof: a wrong password is refused.
    let erase = |body: Value| client().delete(url(&gw, "/auth/me")).bearer_auth(&bearer).json(&body).send();
    assert_eq!(erase(serde_json::json!({"password": "wrong"})).await.unwrap().status(), 403);
    assert_eq!(erase(serde_json::json!({})).await.unwrap().status(), 400);
    assert_eq!(erase(serde_json::json!({"password": PASSWORD})).await.unwrap().status(), 204);

    // Nothing ann held works any more.
    assert_eq!(client().get(url(&gw, "/api/x")).bearer_auth(&bearer).send().await.unwrap().status(), 401);
    assert_eq!(api(("cookie", cookie.clone())).await, 401);
    let key_gone = eventually(Duration::from_secs(10), || {
        let k = key.clone();
        let gw_url = url(&gw, "/api/x");
        async move { client().get(gw_url).header("x-api-key", k).send().await.unwrap().status() == 401 }
    })
    .await;
    assert!(key_gone, "the API key stops working");
    assert_eq!(token_request(&gw, &login).await.0, 400);
    // The name and address are free again; the old id is a tombstone.
    assert_eq!(register_with_email(&gw, "ann", Some("ann@example.test"), PASSWORD).await.status(), 201);
    let store = db.open().await;
    {
        use rampart::store::identity::UserStore as _;
        let old = store.user_by_id(&ann).await.unwrap().unwrap();
        assert_eq!(old.username, format!("deleted:{ann}"));
        assert!(old.email.is_none() && old.password_hash.is_none() && old.disabled);
    }
    // The audit log still verifies, in the database and the file.
    gw.shutdown();
    gw.wait().await;
    {
        use rampart::store::audit::AuditStore as _;
        assert!(store.verify().await.unwrap().is_ok());
    }
    assert!(rampart::observe::audit::verify_file(&audit).unwrap().is_ok());
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(log.contains("account_erased") && !log.contains("ann@example.test"));

    // An administrator: export and erase from the command line.
    let cli = |args: &[&str]| user_cli(&config, args);
    let exported = cli(&["export", "ann"]);
    assert_eq!(exported["profile"]["username"], "ann");
    let erased = cli(&["erase", "ann"]);
    let id = erased["erased"].as_str().unwrap();
    {
        use rampart::store::identity::UserStore as _;
        assert!(store.user_by_username("ann").await.unwrap().is_none());
        assert!(store.user_by_id(id).await.unwrap().unwrap().disabled);
    }
    // Both are audited, as over HTTP, and the log still verifies.
    let log = std::fs::read_to_string(&audit).unwrap();
    for action in ["account_exported", "account_erased"] {
        assert!(
            log.lines().any(|l| l.contains(action) && l.contains(id) && l.contains("\"actor\":\"cli\"")),
            "{action}: {log}"
        );
    }
    assert!(rampart::observe::audit::verify_file(&audit).unwrap().is_ok());
}

/// Sessions kept in Redis (`store = "auto"` with a `[redis]` section) are
/// personal data too: `rampart user export` lists them and `rampart user
/// erase` deletes them, not only the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exports_and_erases_sessions_kept_in_redis() {
    let Some(_) = redis_url() else {
        eprintln!("skipped: RAMPART_TEST_REDIS_URL is not set");
        return;
    };
    let redis = OwnRedis::start(free_port()).await;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let text = identity_config(up, &db.url).replace(
        "[identity.password.argon2]",
        &format!(
            "[identity.sessions]\nenabled = true\n[redis]\nurl = '{}'\nkey_prefix = 'priv:'\n[identity.password.argon2]",
            redis.url()
        ),
    );
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;
    assert_eq!(gw.identity().unwrap().sessions.as_ref().unwrap().store_name(), "redis");
    let r = register_with_email(&gw, "bea", None, PASSWORD).await;
    let bea = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let login = [("grant_type", "password"), ("username", "bea"), ("password", PASSWORD)];
    let ready = eventually(Duration::from_secs(10), || {
        let gw_url = url(&gw, "/auth/session");
        async move { client().post(gw_url).form(&login).send().await.unwrap().status() == 200 }
    });
    assert!(ready.await, "no session could be started");
    let keys = || async { redis.query::<Vec<String>>(redis::cmd("KEYS").arg("priv:*session*")).await };
    assert!(!keys().await.is_empty(), "the session is in Redis");

    let cli = |args: &[&str]| user_cli(&config, args);
    let exported = cli(&["export", "bea"]);
    assert_eq!(exported["sessions"].as_array().unwrap().len(), 1, "{exported}");
    assert_eq!(cli(&["erase", "bea"])["erased"], bea.as_str());
    assert_eq!(keys().await, Vec::<String>::new(), "the session records are gone from Redis");
    gw.shutdown();
    gw.wait().await;
}
