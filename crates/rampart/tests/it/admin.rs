//! The admin API end to end (`{prefix}/admin`), on SQLite and PostgreSQL:
//! who may call it (admin role read fresh, an API key with the `admin` scope
//! of an admin, never a user's self-scoped key), users (list, search, lock,
//! unlock, roles, sessions, MFA reset, export, erase), API keys, bans that
//! refuse a real client address, the audit log, live statistics, the
//! redacted config, and reload; every refusal a problem document.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD, SECRET};
use serde_json::{json, Value};

on_both_backends!(sqlite_admin_manages_users_and_keys, postgres_admin_manages_users_and_keys, users_and_keys);
on_both_backends!(
    sqlite_failed_logins_never_shorten_an_admin_lock,
    postgres_failed_logins_never_shorten_an_admin_lock,
    admin_lock_outlasts_lockouts
);

on_both_backends!(sqlite_a_locked_admin_is_no_admin, postgres_a_locked_admin_is_no_admin, locked_admin);

/// An admin locked by another admin loses admin power at once, its
/// admin-scoped API key too (which could otherwise unlock it); the automatic
/// lock after wrong passwords, which anyone can trigger, does not take it.
/// And no admin unlocks themselves, as none locks themselves.
async fn locked_admin(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&admin_config(db, up, &audit, "")).await;
    let root = sign_up(&gw, "root").await;
    let eve = sign_up(&gw, "eve").await;
    make_admin(db, &root).await;
    make_admin(db, &eve).await;
    let admin = Api { gw: &gw, token: bearer(&gw, "root").await };
    let r = client()
        .post(url(&gw, "/auth/api-keys"))
        .bearer_auth(bearer(&gw, "eve").await)
        .json(&json!({"name": "k", "scopes": ["admin"], "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let eve_key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let with_key = |method: reqwest::Method, path: String| {
        client().request(method, admin.url(&path)).header("x-api-key", &eve_key).send()
    };
    assert_eq!(with_key(reqwest::Method::GET, "/stats".into()).await.unwrap().status(), 200);

    // No admin unlocks themselves.
    let r = admin.send(reqwest::Method::POST, &format!("/users/{root}/unlock"), None).await;
    assert!(problem(r, 400).await["detail"].as_str().unwrap().contains("their own account"));

    // The automatic lock after wrong passwords (anyone can trigger it) stops
    // eve's password logins but leaves her key its admin power.
    for _ in 0..7 {
        let wrong = [("grant_type", "password"), ("username", "eve"), ("password", "not eve's password at all")];
        assert_eq!(token_request(&gw, &wrong).await.0, 400);
    }
    assert!(admin.ok(&format!("/users/{eve}")).await["locked_until"].as_u64().is_some(), "locked out");
    let login = [("grant_type", "password"), ("username", "eve"), ("password", PASSWORD)];
    assert_eq!(token_request(&gw, &login).await.0, 400);
    assert_eq!(with_key(reqwest::Method::GET, "/stats".into()).await.unwrap().status(), 200);

    // Locked by an admin, eve's key is no admin's: it neither reads nor unlocks eve.
    let r = admin.send(reqwest::Method::POST, &format!("/users/{eve}/lock"), Some(json!({"for": "1h"}))).await;
    assert_eq!(r.status(), 200);
    let r = with_key(reqwest::Method::GET, "/stats".into()).await.unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    let r = with_key(reqwest::Method::POST, format!("/users/{eve}/unlock")).await.unwrap();
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());
    assert!(admin.ok(&format!("/users/{eve}")).await["locked_until"].as_u64().is_some(), "still locked");

    // Unlocked by another admin, the key works again.
    assert_eq!(admin.send(reqwest::Method::POST, &format!("/users/{eve}/unlock"), None).await.status(), 200);
    assert_eq!(with_key(reqwest::Method::GET, "/stats".into()).await.unwrap().status(), 200);
    gw.shutdown();
    gw.wait().await;
}

fn admin_config(db: &TestDb, up: std::net::SocketAddr, audit: &std::path::Path, extra: &str) -> String {
    identity_config(up, &db.url)
        .replace("[audit]\nenabled = false", &format!("[audit]\nenabled = true\nfile = '{}'", audit.display()))
        .replace(
            "[identity.password.argon2]",
            "[identity.api_keys]\ncache_ttl = '1s'\n[identity.sessions]\nenabled = true\n[identity.password.argon2]",
        )
        + "[bans]\nenabled = true\n"
        + extra
}

async fn sign_up(gw: &rampart::Gateway, name: &str) -> String {
    let r = register_with_email(gw, name, Some(&format!("{name}@example.test")), PASSWORD).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

async fn bearer(gw: &rampart::Gateway, name: &str) -> String {
    let (status, tokens) =
        token_request(gw, &[("grant_type", "password"), ("username", name), ("password", PASSWORD)]).await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

async fn make_admin(db: &TestDb, id: &str) {
    use rampart::store::identity::UserStore as _;
    let store = db.open().await;
    store.set_roles(id, &["admin".to_string()], rampart::identity::service::now_ms()).await.unwrap();
    store.close().await;
}

/// A request to the admin API with a bearer token.
struct Api<'a> {
    gw: &'a rampart::Gateway,
    token: String,
}

impl Api<'_> {
    fn url(&self, path: &str) -> String {
        url(self.gw, &format!("/auth/admin{path}"))
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        client().get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut r = client().request(method, self.url(path)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    async fn ok(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }
}

async fn users_and_keys(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&admin_config(db, up, &audit, "")).await;
    let root = sign_up(&gw, "root").await;
    let bob = sign_up(&gw, "bob").await;
    sign_up(&gw, "carol").await;
    make_admin(db, &root).await;
    let admin = Api { gw: &gw, token: bearer(&gw, "root").await };
    let bob_token = bearer(&gw, "bob").await;
    let as_bob = Api { gw: &gw, token: bob_token.clone() };

    // Who may call: nobody without a credential, not a plain user, on every endpoint.
    let r = client().get(admin.url("/users")).send().await.unwrap();
    assert_eq!(problem(r, 401).await["type"].as_str().unwrap().rsplit(':').next(), Some("unauthorized"));
    for (method, path) in [
        (reqwest::Method::GET, "/users"),
        (reqwest::Method::GET, "/stats"),
        (reqwest::Method::POST, "/bans"),
        (reqwest::Method::DELETE, &*format!("/users/{root}")),
        (reqwest::Method::POST, "/reload"),
    ] {
        let r = as_bob.send(method.clone(), path, Some(json!({"ip": "10.0.0.1"}))).await;
        let p = problem(r, 403).await;
        assert_eq!(p["detail"], "this endpoint needs the admin role", "{method} {path}");
    }
    let r = client().get(admin.url("/users")).bearer_auth("not-a-token").send().await.unwrap();
    problem(r, 401).await;

    // Users: list, search, page, one user, unknown ids.
    let all = admin.ok("/users").await;
    let names: Vec<&str> = all["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert!(names.contains(&"bob") && names.contains(&"carol") && names.contains(&"root"), "{names:?}");
    assert!(!all.to_string().contains("argon2"), "never a password hash");
    let found = admin.ok("/users?search=BO").await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1);
    assert_eq!(found["users"][0]["id"], bob);
    assert_eq!(admin.ok("/users?limit=1&offset=1").await["users"].as_array().unwrap().len(), 1);
    problem(admin.get("/users?limit=many").await, 400).await;
    problem(admin.get(&format!("/users?search={}", "x".repeat(400))).await, 400).await;
    let one = admin.ok(&format!("/users/{bob}")).await;
    assert_eq!(one["username"], "bob");
    assert_eq!(one["mfa_methods"], json!([]));
    problem(admin.get("/users/no-such-id").await, 404).await;
    problem(admin.get("/users/%2e%2e%2fetc").await, 400).await; // the guards refuse traversal
    problem(admin.send(reqwest::Method::PATCH, &format!("/users/{bob}"), None).await, 405).await;
    problem(admin.get("/nothing-here").await, 404).await;

    // Lock: bob's token stops working at once, his login is refused; unlock.
    let r = admin.send(reqwest::Method::POST, &format!("/users/{bob}/lock"), Some(json!({"for": "1h"}))).await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["locked_until"].as_u64().unwrap() > 0);
    let api_x = |t: String| {
        let gw_url = url(&gw, "/api/x");
        async move { client().get(gw_url).bearer_auth(t).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(api_x(bob_token.clone()).await, 401, "a lock ends the user's tokens");
    let login = [("grant_type", "password"), ("username", "bob"), ("password", PASSWORD)];
    assert_ne!(token_request(&gw, &login).await.0, 200);
    problem(admin.send(reqwest::Method::POST, &format!("/users/{bob}/lock"), Some(json!({"for": "soon"}))).await, 400)
        .await;
    problem(admin.send(reqwest::Method::POST, &format!("/users/{bob}/lock"), Some(json!({"until": 1}))).await, 400)
        .await;
    assert_eq!(admin.send(reqwest::Method::POST, &format!("/users/{bob}/unlock"), None).await.status(), 200);
    let bob_token = bearer(&gw, "bob").await;
    assert_eq!(api_x(bob_token.clone()).await, 200);

    // Roles: set, refused shapes, and an admin cannot demote themselves.
    let r = admin.send(reqwest::Method::PUT, &format!("/users/{bob}/roles"), Some(json!({"roles": ["editor"]}))).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["roles"], json!(["editor"]));
    // Long roles before a short one: the audit record must still show each.
    let long_roles = json!(["a".repeat(128), "b".repeat(128), "editor"]);
    let r = admin.send(reqwest::Method::PUT, &format!("/users/{bob}/roles"), Some(json!({"roles": long_roles}))).await;
    assert_eq!(r.status(), 200);
    let r = admin.send(reqwest::Method::PUT, &format!("/users/{bob}/roles"), Some(json!({"roles": ["editor"]}))).await;
    assert_eq!(r.status(), 200);
    problem(
        admin.send(reqwest::Method::PUT, &format!("/users/{bob}/roles"), Some(json!({"roles": "editor"}))).await,
        400,
    )
    .await;
    problem(admin.send(reqwest::Method::PUT, &format!("/users/{root}/roles"), Some(json!({"roles": []}))).await, 400)
        .await;

    // API keys: a non-admin cannot put the admin scope on a key; the admin's
    // admin-scoped key is accepted; a key without the scope is refused; an
    // admin revokes bob's key.
    let make_key = |token: String, scopes: Value| {
        let gw_url = url(&gw, "/auth/api-keys");
        async move {
            let r = client()
                .post(gw_url)
                .bearer_auth(token)
                .json(&json!({"name": "k", "scopes": scopes, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()
        }
    };
    let r = client()
        .post(url(&gw, "/auth/api-keys"))
        .bearer_auth(&bob_token)
        .json(&json!({"name": "k", "scopes": ["admin"], "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    let bob_key = make_key(bob_token.clone(), json!([])).await;
    let bob_key_text = bob_key["key"].as_str().unwrap().to_string();
    let r = client().get(admin.url("/stats")).header("x-api-key", &bob_key_text).send().await.unwrap();
    problem(r, 403).await;
    let root_key = make_key(admin.token.clone(), json!(["admin"])).await["key"].as_str().unwrap().to_string();
    let r =
        client().get(admin.url("/stats")).header("authorization", format!("ApiKey {root_key}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let plain = make_key(admin.token.clone(), json!(["read"])).await["key"].as_str().unwrap().to_string();
    problem(client().get(admin.url("/stats")).header("x-api-key", &plain).send().await.unwrap(), 403).await;
    problem(client().get(admin.url("/stats")).header("x-api-key", "rpk_garbage").send().await.unwrap(), 401).await;
    let keys = admin.ok(&format!("/api-keys?user={bob}")).await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1);
    assert!(!keys.to_string().contains(&bob_key_text), "never the key itself");
    let key_id = bob_key["id"].as_str().unwrap();
    assert_eq!(admin.send(reqwest::Method::DELETE, &format!("/api-keys/{key_id}"), None).await.status(), 204);
    problem(admin.send(reqwest::Method::DELETE, &format!("/api-keys/{key_id}x"), None).await, 404).await;
    let r = client().get(url(&gw, "/api/x")).header("x-api-key", &bob_key_text).send().await.unwrap();
    assert_eq!(r.status(), 401, "a revoked key is refused at once on this instance");
    problem(admin.get(&format!("/api-keys?user={bob}&client=x")).await, 400).await;

    // Sessions: bob's browser session ends when the admin revokes his sessions.
    let r = client().post(url(&gw, "/auth/session")).form(&login).send().await.unwrap();
    let cookie = session_cookie(&r);
    let with_cookie = || client().get(url(&gw, "/api/x")).header("cookie", cookie.clone()).send();
    assert_eq!(with_cookie().await.unwrap().status(), 200);
    assert_eq!(admin.send(reqwest::Method::DELETE, &format!("/users/{bob}/sessions"), None).await.status(), 204);
    assert_eq!(with_cookie().await.unwrap().status(), 401);
    assert_eq!(api_x(bob_token).await, 401);

    // MFA reset: bob's TOTP is removed and his password alone logs in again.
    let bob_token = bearer(&gw, "bob").await;
    let r = client()
        .post(url(&gw, "/auth/mfa/totp"))
        .bearer_auth(&bob_token)
        .json(&serde_json::json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let secret = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_string();
    let secret = rampart_core::totp::secret_from_base32(&secret).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let code = rampart_core::totp::code_at(&secret, now / rampart_core::totp::STEP_SECS);
    let r = client()
        .post(url(&gw, "/auth/mfa/totp/confirm"))
        .bearer_auth(&bob_token)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(token_request(&gw, &login).await.1["error"], "mfa_required");
    assert_eq!(admin.ok(&format!("/users/{bob}")).await["mfa_methods"], json!(["totp", "backup_code"]));
    assert_eq!(admin.send(reqwest::Method::POST, &format!("/users/{bob}/mfa/reset"), None).await.status(), 204);
    assert_eq!(admin.ok(&format!("/users/{bob}")).await["mfa_methods"], json!([]));
    assert_eq!(token_request(&gw, &login).await.0, 200);

    // Export and erase.
    let r = admin.get(&format!("/users/{bob}/export")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let data: Value = r.json().await.unwrap();
    assert_eq!(data["profile"]["username"], "bob");
    problem(admin.send(reqwest::Method::DELETE, &format!("/users/{root}"), None).await, 400).await;
    assert_eq!(admin.send(reqwest::Method::DELETE, &format!("/users/{bob}"), None).await.status(), 204);
    assert_ne!(token_request(&gw, &login).await.0, 200);
    problem(admin.send(reqwest::Method::DELETE, "/users/no-such-id", None).await, 404).await;

    // Losing the admin role takes effect at the next call, whatever the token says.
    make_admin_roles(db, &root, &[]).await;
    problem(admin.get("/users").await, 403).await;
    let r = client().get(admin.url("/stats")).header("x-api-key", &root_key).send().await.unwrap();
    problem(r, 403).await;

    // Every change was audited, naming ids, never names or addresses.
    gw.shutdown();
    gw.wait().await;
    let log = std::fs::read_to_string(&audit).unwrap();
    for action in ["user_locked", "user_unlocked", "roles_set", "api_key_revoked", "sessions_revoked", "mfa_reset"] {
        assert!(log.contains(action), "{action} audited");
    }
    let roles_set: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["detail"]["action"] == "roles_set")
        .map(|r| r["detail"]["roles"].clone())
        .collect();
    assert!(roles_set.contains(&long_roles), "{roles_set:?}");
    let admin_lines: Vec<&str> = log.lines().filter(|l| l.contains("admin_action")).collect();
    assert!(admin_lines.iter().all(|l| l.contains(&root) && !l.contains("bob@example.test")));
    assert!(rampart::observe::audit::verify_file(&audit).unwrap().is_ok());
}

/// Failed logins on an account an administrator locked lock it out
/// automatically too, and that lockout must never replace the longer lock.
async fn admin_lock_outlasts_lockouts(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&admin_config(db, up, &audit, "")).await;
    let root = sign_up(&gw, "root").await;
    let dave = sign_up(&gw, "dave").await;
    make_admin(db, &root).await;
    let admin = Api { gw: &gw, token: bearer(&gw, "root").await };
    let login = [("grant_type", "password"), ("username", "dave"), ("password", PASSWORD)];
    let (status, signed_in) = token_request(&gw, &login).await;
    assert_eq!(status, 200);

    // Locked without `for`: until unlocked.
    let r = admin.send(reqwest::Method::POST, &format!("/users/{dave}/lock"), None).await;
    assert_eq!(r.status(), 200);
    let indefinite = r.json::<Value>().await.unwrap()["locked_until"].as_u64().unwrap();
    assert_eq!(indefinite, u64::MAX / 2);

    // More wrong passwords than `max_failures` (5 by default): the automatic
    // lockout (15 minutes) is due, and must leave the longer lock in force.
    for _ in 0..7 {
        let wrong = [("grant_type", "password"), ("username", "dave"), ("password", "not dave's password at all")];
        assert_eq!(token_request(&gw, &wrong).await.0, 400);
    }
    assert_eq!(admin.ok(&format!("/users/{dave}")).await["locked_until"].as_u64(), Some(indefinite));
    let (status, body) = token_request(&gw, &login).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "still locked: {body}");
    // An administrator's lock ends what was issued: the refresh token too.
    let rt = signed_in["refresh_token"].as_str().unwrap();
    let (status, body) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");

    // The administrator's unlock still ends it.
    assert_eq!(admin.send(reqwest::Method::POST, &format!("/users/{dave}/unlock"), None).await.status(), 200);
    assert_eq!(admin.ok(&format!("/users/{dave}")).await["locked_until"], Value::Null);
    assert_eq!(token_request(&gw, &login).await.0, 200);
    gw.shutdown();
    gw.wait().await;
}

async fn make_admin_roles(db: &TestDb, id: &str, roles: &[&str]) {
    use rampart::store::identity::UserStore as _;
    let store = db.open().await;
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_string()).collect();
    store.set_roles(id, &roles, rampart::identity::service::now_ms()).await.unwrap();
    store.close().await;
}

/// Bans, access lists, audit queries, statistics, the redacted config and
/// reload, with a session cookie (CSRF) as the dashboard would call them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_operates_the_gateway() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let audit = dir.path().join("audit.jsonl");
    let text = admin_config(&db, up, &audit, "[access]\ndeny = ['192.0.2.0/24']\n");
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;
    gw.console().set_source(&config);
    let root = sign_up(&gw, "root").await;
    make_admin(&db, &root).await;
    let admin = Api { gw: &gw, token: bearer(&gw, "root").await };

    // Bans: a real client bound to 127.0.0.2 is refused, then served again.
    let from =
        |ip: &str| reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let other = from("127.0.0.2");
    assert_eq!(other.get(url(&gw, "/public")).send().await.unwrap().status(), 200);
    let r = admin
        .send(reqwest::Method::POST, "/bans", Some(json!({"ip": "127.0.0.2", "ttl": "1h", "reason": "abuse"})))
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "abuse");
    assert_eq!(other.get(url(&gw, "/public")).send().await.unwrap().status(), 403);
    assert_eq!(client().get(url(&gw, "/public")).send().await.unwrap().status(), 200, "others are served");
    let bans = admin.ok("/bans").await;
    assert_eq!(bans["bans"][0]["ip"], "127.0.0.2");
    let lists = admin.ok("/access-lists?ip=127.0.0.2").await;
    assert_eq!(lists["deny"], json!(["192.0.2.0/24"]));
    assert_eq!((lists["permitted"].as_bool(), lists["banned"].as_bool()), (Some(true), Some(true)));
    problem(admin.get("/access-lists?ip=nope").await, 400).await;
    for bad in [
        json!({"ip": "300.1.1.1"}),
        json!({"ip": "10.0.0.1", "ttl": "forever"}),
        json!({"ip": "10.0.0.1", "ttl": "0s"}),
        json!({"ip": 5}),
        json!({"ip": "10.0.0.1", "extra": 1}),
    ] {
        problem(admin.send(reqwest::Method::POST, "/bans", Some(bad.clone())).await, 400).await;
    }
    let r = client()
        .post(admin.url("/bans"))
        .bearer_auth(&admin.token)
        .header("content-type", "application/json")
        .body("{\"ip\": ")
        .send()
        .await
        .unwrap();
    problem(r, 400).await;
    assert_eq!(admin.send(reqwest::Method::DELETE, "/bans/127.0.0.2", None).await.status(), 204);
    problem(admin.send(reqwest::Method::DELETE, "/bans/127.0.0.2", None).await, 404).await;
    problem(admin.send(reqwest::Method::DELETE, "/bans/not-an-ip", None).await, 400).await;
    assert_eq!(other.get(url(&gw, "/public")).send().await.unwrap().status(), 200);

    // Statistics: the rate series fills, rejections and top talkers show.
    for _ in 0..20 {
        client().get(url(&gw, "/public")).send().await.unwrap();
    }
    let filled = eventually(Duration::from_secs(5), || async {
        let s = admin.ok("/stats").await;
        s["series"].as_array().is_some_and(|p| !p.is_empty()) && s["requests_total"].as_u64() > Some(20)
    })
    .await;
    assert!(filled, "a sample a second");
    let stats = admin.ok("/stats").await;
    assert!(stats["series"].as_array().unwrap().iter().any(|p| p["rps"].as_f64() > Some(0.0)), "{stats}");
    assert!(stats["rejections"].as_array().unwrap().iter().any(|r| r["layer"] == "access"), "{stats}");
    assert!(stats["top_talkers"].to_string().contains("127.0.0.1"), "{stats}");
    assert!(stats["in_flight"].as_i64().is_some() && stats["degraded"].is_array());

    // The audit log: the ban is there, by kind and by ip; bad queries are 400.
    let found = eventually(Duration::from_secs(5), || async {
        let r = admin.ok("/audit?kind=admin_action&since=1h").await;
        r["records"].as_array().unwrap().iter().any(|r| r["detail"]["action"] == "ban_added")
    })
    .await;
    assert!(found);
    let by_ip = admin.ok("/audit?ip=127.0.0.2&limit=5").await;
    assert!(!by_ip["records"].as_array().unwrap().is_empty());
    for bad in ["kind=nonsense", "since=yesterday", "ip=x", "limit=-1"] {
        problem(admin.get(&format!("/audit?{bad}")).await, 400).await;
    }

    // The running config, with every secret redacted.
    let cfg = admin.ok("/config").await;
    assert_eq!(cfg["identity"]["secret_key"], "***");
    assert!(!cfg.to_string().contains(SECRET));
    assert_eq!(cfg["access"]["deny"], json!(["192.0.2.0/24"]));

    // Reload: a broken file is refused and the running config stays; a good
    // one is installed.
    std::fs::write(&config, text.replace("[access]\ndeny", "[access]\ndenny")).unwrap();
    let p = problem(admin.send(reqwest::Method::POST, "/reload", None).await, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("deny"), "{p}");
    assert_eq!(admin.ok("/access-lists").await["deny"], json!(["192.0.2.0/24"]));
    std::fs::write(&config, text.replace("'192.0.2.0/24'", "'192.0.2.0/24', '127.0.0.3'")).unwrap();
    let r = admin.send(reqwest::Method::POST, "/reload", None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(admin.ok("/access-lists").await["deny"], json!(["192.0.2.0/24", "127.0.0.3/32"]));
    assert_eq!(from("127.0.0.3").get(url(&gw, "/public")).send().await.unwrap().status(), 403);
    assert_eq!(admin.ok("/config").await["access"]["deny"], json!(["192.0.2.0/24", "127.0.0.3"]));

    // A service account: a client's key with the admin scope may call the
    // admin API; the same client's key without the scope may not.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("RAMPART_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let svc = run(&["client", "add", "ops-bot"]);
    let svc_id = svc["client_id"].as_str().unwrap();
    let with_scope = run(&["api-key", "create", "--client", svc_id, "--name", "ops", "--scope", "admin"]);
    let without = run(&["api-key", "create", "--client", svc_id, "--name", "plain", "--scope", "read"]);
    let r = client().get(admin.url("/stats")).header("x-api-key", with_scope["key"].as_str().unwrap()).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let r = client()
        .post(admin.url("/bans"))
        .header("x-api-key", with_scope["key"].as_str().unwrap())
        .json(&json!({"ip": "10.8.8.8"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "a key needs no CSRF token");
    let r = client().get(admin.url("/stats")).header("x-api-key", without["key"].as_str().unwrap()).send().await;
    problem(r.unwrap(), 403).await;

    // As the dashboard calls it: a session cookie needs the CSRF header on
    // changes, and a cross-site origin is refused.
    let login = [("grant_type", "password"), ("username", "root"), ("password", PASSWORD)];
    let r = client().post(url(&gw, "/auth/session")).form(&login).send().await.unwrap();
    let cookie = session_cookie(&r);
    let r = client().get(admin.url("/bans")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ban = json!({"ip": "10.9.9.9"});
    let r = client().post(admin.url("/bans")).header("cookie", &cookie).json(&ban).send().await.unwrap();
    assert_eq!(problem(r, 403).await["type"].as_str().unwrap().rsplit(':').next(), Some("csrf"));
    let csrf: Value =
        client().get(url(&gw, "/auth/csrf")).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    let token = csrf["csrf_token"].as_str().unwrap();
    let r = client()
        .post(admin.url("/bans"))
        .header("cookie", &cookie)
        .header("x-csrf-token", token)
        .json(&ban)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client()
        .post(admin.url("/bans"))
        .header("cookie", &cookie)
        .header("x-csrf-token", token)
        .header("origin", "https://evil.example")
        .json(&ban)
        .send()
        .await
        .unwrap();
    problem(r, 403).await;
}

/// Started without a config file: nothing to reload or show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_config_file_is_a_conflict() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let gw = gateway(&admin_config(&db, up, &dir.path().join("a.jsonl"), "")).await;
    let root = sign_up(&gw, "root").await;
    make_admin(&db, &root).await;
    let admin = Api { gw: &gw, token: bearer(&gw, "root").await };
    problem(admin.send(reqwest::Method::POST, "/reload", None).await, 409).await;
    problem(admin.get("/config").await, 409).await;
}

/// While the revocation and API-key polls fail, a revoked token or key cannot
/// be told from a good one: once they are stale (30 s), every way in that
/// depends on them answers 503, the admin API and the identity endpoints as
/// much as the bearer layer, never a yes from the cache. They recover once
/// the polls do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_revocations_close_the_admin_api_and_identity_endpoints() {
    use rampart::store::Database;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&admin_config(&db, up, &audit, "").replace("cache_ttl = '1s'", "cache_ttl = '10m'")).await;
    let root = sign_up(&gw, "root").await;
    make_admin(&db, &root).await;
    let token = bearer(&gw, "root").await;
    let r = client()
        .post(url(&gw, "/auth/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "k", "scopes": ["admin"], "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string();
    let statuses = || async {
        let key_admin = client().get(url(&gw, "/auth/admin/stats")).header("x-api-key", &key).send();
        let token_admin = client().get(url(&gw, "/auth/admin/stats")).bearer_auth(&token).send();
        let me = client().get(url(&gw, "/auth/me")).bearer_auth(&token).send();
        let key_proxy = client().get(url(&gw, "/api/x")).header("x-api-key", &key).send();
        let token_proxy = client().get(url(&gw, "/api/x")).bearer_auth(&token).send();
        let mut out = Vec::new();
        for r in [key_admin.await, token_admin.await, me.await, key_proxy.await, token_proxy.await] {
            out.push(r.unwrap().status().as_u16());
        }
        out
    };
    assert_eq!(statuses().await, [200; 5]);

    let exec = |sql: &'static str| {
        let db = &db;
        async move {
            match db.open().await {
                Database::Sqlite(p) => sqlx::raw_sql(sql).execute(&p).await.map(drop).unwrap(),
                Database::Postgres(_) => unreachable!(),
            }
        }
    };
    exec("ALTER TABLE revoked_jtis RENAME TO revoked_jtis_away; ALTER TABLE api_keys RENAME TO api_keys_away").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = statuses().await;
    while seen != [503; 5] && std::time::Instant::now() < deadline {
        assert!(seen.iter().all(|s| matches!(s, 200 | 503)), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen = statuses().await;
    }
    assert_eq!(seen, [503; 5], "every way in fails closed once the polls are stale");

    exec("ALTER TABLE revoked_jtis_away RENAME TO revoked_jtis; ALTER TABLE api_keys_away RENAME TO api_keys").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while statuses().await != [200; 5] && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(statuses().await, [200; 5], "recovered with the polls");
    gw.shutdown();
    gw.wait().await;
}
