//! The OpenAPI document (`{prefix}/openapi.json`) against the running
//! gateway: schemathesis (from PyPI, pinned; its path in
//! `RAMPART_TEST_SCHEMATHESIS`, set by `scripts/test`) generates requests for
//! every operation — valid, invalid and hostile — with an admin's token, and
//! fails on any 5xx or any answer that breaks its documented schema. Without
//! the variable the schemathesis test is skipped with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};

fn config(db: &TestDb, up: std::net::SocketAddr, dir: &std::path::Path) -> String {
    identity_config(up, &db.url)
        .replace(
            "[audit]\nenabled = false",
            &format!("[audit]\nenabled = true\nfile = '{}'", dir.join("audit.jsonl").display()),
        )
        .replace(
            "[identity.password.argon2]",
            &format!(
                "[identity.api_keys]\n[identity.sessions]\nenabled = true\n\
                 [identity.webauthn]\nrp_id = 'localhost'\nrp_origin = 'http://localhost:8080'\n\
                 [identity.notifier]\nkind = 'log'\npath = '{}'\n[identity.password.argon2]",
                dir.join("reset.jsonl").display()
            ),
        )
        // Thousands of refused logins come from one address: bans are tested elsewhere.
        + "[bans]\nenabled = false\n"
}

async fn admin_token(gw: &rampart::Gateway, db: &TestDb) -> String {
    let r = register_with_email(gw, "root", None, PASSWORD).await;
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    {
        use rampart::store::identity::UserStore as _;
        let store = db.open().await;
        store.set_roles(&id, &["admin".to_string()], rampart::identity::service::now_ms()).await.unwrap();
        store.close().await;
    }
    let (status, tokens) =
        token_request(gw, &[("grant_type", "password"), ("username", "root"), ("password", PASSWORD)]).await;
    assert_eq!(status, 200);
    tokens["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_what_is_configured() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let gw = gateway(&config(&db, up, dir.path()).replace("[identity]\n", "[identity]\nprefix = '/id'\n")).await;
    let r = client().get(url(&gw, "/id/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/id/token", "/id/register", "/id/admin/users", "/id/passkeys/login/start", "/id/session", "/id/api-keys"]
    {
        assert!(paths.contains_key(p), "{p} documented");
    }
    assert!(paths.keys().all(|p| p.starts_with("/id/") || p.starts_with("/.well-known/")), "the prefix is applied");
    assert!(!paths.contains_key("/id/oidc/providers"), "no provider configured, no external logins");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"]["default"]["content"]["application/problem+json"].is_object(), "{method} {path}");
        }
    }
    problem(client().post(url(&gw, "/id/openapi.json")).send().await.unwrap(), 405).await;
    // Without registration, the register operation is not offered.
    let closed = gateway(&config(&db, up, dir.path()).replace("registration = true", "registration = false")).await;
    let doc: Value = client().get(url(&closed, "/auth/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"].get("/auth/register").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let Some(st) = std::env::var("RAMPART_TEST_SCHEMATHESIS").ok().filter(|s| !s.is_empty()) else {
        eprintln!("skipped: RAMPART_TEST_SCHEMATHESIS not set (scripts/test installs schemathesis from PyPI)");
        return;
    };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let text = config(&db, up, dir.path());
    let file = dir.path().join("rampart.toml");
    std::fs::write(&file, &text).unwrap();
    let gw = gateway(&text).await;
    gw.console().set_source(&file);
    let token = admin_token(&gw, &db).await;
    let schema = url(&gw, "/auth/openapi.json");
    let cwd = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .args(["run", &schema, "--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // Logging out would end the run's own token; both are tested elsewhere.
            .args(["--exclude-path-regex", "/logout"])
            .args(["--max-examples", "25", "--seed", "20261130", "--no-color", "--workers", "2"])
            .args(["--generation-database", "none", "--request-timeout", "10"])
            .current_dir(cwd)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis failed:\n{report}");
    assert!(report.contains("passed"), "{report}");
    // The gateway is still healthy after the run.
    assert_eq!(client().get(url(&gw, "/auth/openapi.json")).send().await.unwrap().status(), 200);
}
