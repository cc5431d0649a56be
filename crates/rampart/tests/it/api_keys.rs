//! API keys over HTTP on SQLite and PostgreSQL: created over HTTP and with
//! `rampart api-key`, accepted from `X-API-Key` and `Authorization: ApiKey`
//! on an `auth = "required"` route (the upstream sees the owner, the method
//! and the scopes, never the key), listed by prefix only, revoked (also on a
//! second gateway sharing the database), rotated with a grace period,
//! expired, restricted by CIDR, owned by a service client, usage written in
//! batches, and hostile keys refused with the one generic 401.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, login, register_with_email, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&TestDb::sqlite(dir.path()), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_api_keys() {
    let Some(db) = TestDb::postgres().await else { return };
    let dir = tempfile::tempdir().unwrap();
    scenario(&db, dir.path()).await;
}

fn config_text(up: std::net::SocketAddr, db: &str) -> String {
    identity_config(up, db).replace(
        "[identity.password.argon2]",
        "[identity.api_keys]\nusage_flush = '200ms'\nuser_scopes = ['read', 'write']\nmax_per_user = 3\n[identity.password.argon2]",
    )
}

fn cli(config: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(BIN).arg("api-key").args(args).arg("--config").arg(config).output().unwrap();
    assert!(out.status.success(), "rampart api-key {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

/// Calls the protected route with `key` in `X-API-Key`; the status and the upstream's echo.
async fn call(gw: &rampart::Gateway, key: &str) -> (u16, Value) {
    let r = client().get(url(gw, "/api/thing")).header("x-api-key", key).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates a key, with the password as its proof unless `body` has one.
async fn create(gw: &rampart::Gateway, access: &str, mut body: Value) -> (u16, Value) {
    if let Some(map) = body.as_object_mut() {
        if !map.contains_key("password") && !map.contains_key("code") {
            map.insert("password".into(), PASSWORD.into());
        }
    }
    let r = client().post(url(gw, "/auth/api-keys")).bearer_auth(access).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn scenario(tdb: &TestDb, dir: &std::path::Path) {
    let up = start_upstream().await;
    let text = config_text(up, &tdb.url);
    let config = dir.join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;
    let second = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "olga", None, PASSWORD).await.status(), 201);
    let (access, _) = login(&gw, "olga", PASSWORD).await;

    // A user may put only the configured scopes on their own keys: a scope
    // is a grant on every route that requires it.
    for scopes in [serde_json::json!(["reports:read"]), serde_json::json!(["read", "admin"])] {
        let (status, refused) = create(&gw, &access, serde_json::json!({"name": "x", "scopes": scopes})).await;
        assert_eq!(status, 400, "{refused}");
        assert!(refused["detail"].as_str().unwrap().contains("user_scopes"), "{refused}");
    }

    // A key outlives the token that makes it: the token alone makes none.
    let (status, _) = create(&gw, &access, serde_json::json!({"name": "x", "code": null, "password": null})).await;
    assert_eq!(status, 400);
    let (status, wrong) = create(&gw, &access, serde_json::json!({"name": "x", "password": "not the password"})).await;
    assert_eq!((status, wrong["type"].as_str()), (403, Some("urn:rampart:problem:invalid-credentials")), "{wrong}");

    // Created over HTTP, shown once, in the scannable format.
    let (status, made) = create(&gw, &access, serde_json::json!({"name": "ci", "scopes": ["read", "write"]})).await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("rpk_") && key.len() == 43, "{key}");
    assert_eq!(made["prefix"].as_str().unwrap(), &key[..12]);
    let id = made["id"].as_str().unwrap().to_string();

    // Accepted from both places; the upstream sees the owner and never the key.
    let (status, echo) = call(&gw, &key).await;
    assert_eq!(status, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(h["x-rampart-auth-method"], "api_key");
    assert_eq!(h["x-rampart-scopes"], "read write");
    let user_id = h["x-rampart-user"].as_str().unwrap().to_string();
    assert!(h.get("x-api-key").is_none(), "{h}");
    let r = client().get(url(&gw, "/api/x")).header("authorization", format!("ApiKey {key}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-rampart-user"], user_id.as_str());
    assert!(echo["headers"].get("authorization").is_none());

    // An API key cannot manage keys; the list shows prefixes only.
    let r = client().get(url(&gw, "/auth/api-keys")).header("x-api-key", &key).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let list: Value =
        client().get(url(&gw, "/auth/api-keys")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    let text_list = list.to_string();
    assert!(!text_list.contains(&key) && !text_list.contains(&key[12..]), "{text_list}");
    assert_eq!(list["api_keys"][0]["prefix"].as_str().unwrap(), &key[..12]);

    // Hostile and broken keys: the same 401, no lookup needed.
    let mut wrong_sum = key.clone();
    let last = if key.ends_with('0') { "1" } else { "0" };
    wrong_sum.replace_range(key.len() - 1.., last);
    let long = "rpk_".to_string() + &"A".repeat(64 * 1024);
    for bad in [wrong_sum.as_str(), "", "rpk_é", "garbage", long.as_str()] {
        let r = client().get(url(&gw, "/api/x")).header("x-api-key", bad).send().await.unwrap();
        assert!(matches!(r.status().as_u16(), 401 | 431), "{bad:.20}: {}", r.status());
    }
    let r = client().get(url(&gw, "/api/x")).header("x-api-key", &wrong_sum).send().await.unwrap();
    assert_eq!(problem(r, 401).await["title"], "Unauthorized");
    let huge = "A".repeat(1 << 20);
    let r = client().get(url(&gw, "/api/x")).header("x-api-key", &huge).send().await;
    assert!(r.map_or(true, |r| r.status().is_client_error()));

    // Used on the second instance too (and cached there for `cache_ttl`, 60 s);
    // revoked → refused here at once and there within the 2 s poll.
    assert_eq!(call(&second, &key).await.0, 200);
    let r = client().delete(url(&gw, &format!("/auth/api-keys/{id}"))).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(call(&gw, &key).await.0, 401, "evicted here at once");
    assert!(eventually(Duration::from_secs(6), || async { call(&second, &key).await.0 == 401 }).await);

    // Rotation: the old key works within the grace, not after; the new one works.
    let (_, made) = create(&gw, &access, serde_json::json!({"name": "rot"})).await;
    let old = made["key"].as_str().unwrap().to_string();
    let old_id = made["id"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, &old).await.0, 200);
    // A new secret takes the proof too.
    let rotate = |body: Value| {
        client().post(url(&gw, &format!("/auth/api-keys/{old_id}/rotate"))).bearer_auth(&access).json(&body).send()
    };
    assert_eq!(rotate(serde_json::json!({"grace": "2s"})).await.unwrap().status(), 400);
    let r = client()
        .post(url(&gw, &format!("/auth/api-keys/{old_id}/rotate")))
        .bearer_auth(&access)
        .json(&serde_json::json!({"grace": "2s", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rotated: Value = r.json().await.unwrap();
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(call(&gw, &new).await.0, 200);
    assert_eq!(call(&gw, &old).await.0, 200, "within the grace");
    assert_eq!(call(&second, &old).await.0, 200, "within the grace");
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(call(&gw, &old).await.0, 401, "after the grace");
    assert_eq!(call(&second, &old).await.0, 401, "after the grace");
    assert_eq!(call(&gw, &new).await.0, 200);
    // Someone else's id is not found.
    let r = client().delete(url(&gw, "/auth/api-keys/nope")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // Expiry.
    let (status, made) = create(&gw, &access, serde_json::json!({"name": "short", "expires_in": "1s"})).await;
    assert_eq!(status, 201);
    let short = made["key"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, &short).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(call(&gw, &short).await.0, 401);

    // An expiry past what a date can show is refused, not stored.
    let (status, _) = create(&gw, &access, serde_json::json!({"name": "forever", "expires_in": "1000000years"})).await;
    assert_eq!(status, 400);

    // CIDR allow-list: from 127.0.0.1, a key for 10.0.0.0/8 is refused; one including it works.
    let (_, made) = create(&gw, &access, serde_json::json!({"name": "net", "cidrs": ["10.0.0.0/8"]})).await;
    assert_eq!(call(&gw, made["key"].as_str().unwrap()).await.0, 401);
    let (_, made) = create(&gw, &access, serde_json::json!({"name": "lo", "cidrs": ["10.0.0.0/8", "127.0.0.1"]})).await;
    assert_eq!(call(&gw, made["key"].as_str().unwrap()).await.0, 200);
    let (status, _) = create(&gw, &access, serde_json::json!({"name": "bad", "cidrs": ["10.0.0.0/33"]})).await;
    assert_eq!(status, 400);

    // At most `max_per_user` live keys (revoked and expired ones not counted:
    // "rot", "net" and "lo" are the three); operators are not limited.
    let (status, refused) = create(&gw, &access, serde_json::json!({"name": "fourth"})).await;
    assert_eq!((status, refused["type"].as_str()), (409, Some("urn:rampart:problem:too-many-keys")), "{refused}");

    // From the CLI: a user's key and a service client's key.
    let cli_made = cli(&config, &["create", "--user", "olga", "--name", "cli", "--scope", "read", "--expires", "30d"]);
    let cli_key = cli_made["key"].as_str().unwrap();
    let (status, echo) = call(&gw, cli_key).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-rampart-user"], user_id.as_str());
    let svc =
        Command::new(BIN).args(["client", "add", "worker", "--role", "svc", "--config"]).arg(&config).output().unwrap();
    let svc: Value = serde_json::from_slice(&svc.stdout).unwrap();
    let client_id = svc["client_id"].as_str().unwrap();
    let made = cli(&config, &["create", "--client", client_id, "--name", "svc-key"]);
    let (status, echo) = call(&gw, made["key"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(echo["headers"]["x-rampart-user"], client_id);
    assert_eq!(echo["headers"]["x-rampart-roles"], "svc");
    let listed = Command::new(BIN).args(["api-key", "list", "--config"]).arg(&config).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), 8, "{listed}");
    assert!(!listed.contains(cli_key));
    let revoked = cli(&config, &["revoke", made["id"].as_str().unwrap()]);
    assert!(revoked["revoked_at"].is_u64());
    assert!(
        eventually(Duration::from_secs(6), || async { call(&gw, made["key"].as_str().unwrap()).await.0 == 401 }).await
    );

    // Usage is written in batches, eventually.
    let db = tdb.open().await;
    let id = cli_made["id"].as_str().unwrap().to_string();
    for _ in 0..5 {
        assert_eq!(call(&gw, cli_key).await.0, 200);
    }
    let recorded = eventually(Duration::from_secs(5), || async {
        use rampart::store::identity::ApiKeyStore;
        let k = db.api_key_by_id(&id).await.unwrap().unwrap();
        k.use_count >= 6 && k.last_used_at.is_some()
    })
    .await;
    assert!(recorded, "usage flushed");
    db.close().await;
}
