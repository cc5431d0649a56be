//! The identity API end to end, on SQLite and on PostgreSQL: registration,
//! the OAuth2 password grant posted exactly as FastAPI's
//! `OAuth2PasswordRequestForm` expects, the issued token accepted on a
//! protected route, refresh rotation with reuse detection, logout, the JWKS
//! (verified by PyJWT when `RAMPART_TEST_PYTHON` is set), equal answers for
//! unknown users and wrong passwords, and the signing key surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::db::TestDb;
use crate::common::*;
use serde_json::Value;

pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
pub(crate) const PASSWORD: &str = "correct horse battery staple 42!";

pub(crate) fn identity_config(up: std::net::SocketAddr, db: &str) -> String {
    format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:0'\n[metrics]\nlisten = '127.0.0.1:0'\n[log]\naccess_log = false\n\
         [audit]\nenabled = false\n[storage]\ndatabase = '{db}'\n\
         [identity]\nenabled = true\nissuer = 'https://api.example.test'\nsecret_key = '{SECRET}'\nregistration = true\n\
         refresh_grace = '1s'\n\
         [identity.password.argon2]\nmemory_kib = 4096\niterations = 1\nparallelism = 1\n\
         [upstreams.default]\nurl = 'http://{up}'\n\
         [[routes]]\npath = '/api/**'\nauth = 'required'\n[[routes]]\npath = '/**'\n"
    )
}

async fn token_request(gw: &rampart::Gateway, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client().post(url(gw, "/auth/token")).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    (status, r.json().await.unwrap())
}

async fn register(gw: &rampart::Gateway, username: &str, password: &str) -> reqwest::Response {
    client()
        .post(url(gw, "/auth/register"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(&TestDb::sqlite(dir.path())).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = TestDb::postgres().await else { return };
            $scenario(&db).await;
        }
    };
}

on_both_backends!(sqlite_register_login_and_call_an_api, postgres_register_login_and_call_an_api, login_flow);
on_both_backends!(sqlite_refresh_rotation_and_reuse, postgres_refresh_rotation_and_reuse, refresh_flow);
on_both_backends!(sqlite_bad_logins_look_alike, postgres_bad_logins_look_alike, bad_logins);

async fn login_flow(db: &TestDb) {
    let up = start_upstream().await;
    let text = identity_config(up, &db.url);
    let gw = gateway(&text).await;
    let r = register(&gw, "alice", PASSWORD).await;
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(register(&gw, "ALICE", PASSWORD).await.status(), 409, "usernames are case-insensitive");
    let weak = register(&gw, "bob", "password123").await;
    assert_eq!(weak.status(), 400);

    // The password grant, form-encoded as FastAPI's OAuth2PasswordRequestForm.
    let (status, tokens) =
        token_request(&gw, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "bearer");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("rt_"));

    // The access token opens a protected route; the upstream learns the user id.
    assert_eq!(client().get(url(&gw, "/api/x")).send().await.unwrap().status(), 401);
    let r = client().get(url(&gw, "/api/x")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-user"], id.as_str());

    // Discovery and keys; PyJWT verifies our token against the published JWKS.
    let jwks: Value = client().get(url(&gw, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let conf: Value =
        client().get(url(&gw, "/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(conf["issuer"], "https://api.example.test");
    assert_eq!(conf["token_endpoint"], "https://api.example.test/auth/token");
    if let Ok(python) = std::env::var("RAMPART_TEST_PYTHON") {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../rampart-core/tests/pyjwt_verify.py");
        use std::io::Write as _;
        let input = serde_json::json!({"jwks": jwks, "cases": [{
            "name": "ours", "token": access, "issuer": "https://api.example.test", "audience": "api"}]});
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!("PyJWT: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        });
        assert_eq!(verdict["ours"]["ok"], true, "PyJWT refused our token: {verdict}");
        assert_eq!(verdict["ours"]["claims"]["sub"], id.as_str());
    }

    // The signing key is stored: after a restart, old tokens still verify.
    gw.shutdown();
    gw.wait().await;
    let gw = gateway(&text).await;
    let r = client().get(url(&gw, "/api/x")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    gw.shutdown();
    gw.wait().await;
}

async fn refresh_flow(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&identity_config(up, &db.url)).await;
    assert_eq!(register(&gw, "carol", PASSWORD).await.status(), 201);
    let (_, first) =
        token_request(&gw, &[("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)]).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_string();
    let (status, second) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt1, rt2);
    // A second tab refreshing with the same token within the grace window gets the same successor.
    let (status, again) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["refresh_token"], rt2.as_str());
    // After the grace window, reuse of the spent token revokes the family: rt2 dies too.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, reused) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &rt1)]).await;
    assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")));
    let (status, _) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &rt2)]).await;
    assert_eq!(status, 400, "the family is revoked");
    // Logout ends a fresh family.
    let (_, fresh) =
        token_request(&gw, &[("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)]).await;
    let rt3 = fresh["refresh_token"].as_str().unwrap().to_string();
    let r = client().post(url(&gw, "/auth/logout")).form(&[("refresh_token", rt3.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &rt3)]).await;
    assert_eq!(status, 400);
}

async fn bad_logins(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&identity_config(up, &db.url)).await;
    assert_eq!(register(&gw, "dave", PASSWORD).await.status(), 201);
    let wrong =
        token_request(&gw, &[("grant_type", "password"), ("username", "dave"), ("password", "not it at all")]).await;
    let unknown =
        token_request(&gw, &[("grant_type", "password"), ("username", "nobody"), ("password", PASSWORD)]).await;
    let hostile =
        token_request(&gw, &[("grant_type", "password"), ("username", "x' OR 1=1 --\0"), ("password", PASSWORD)]).await;
    assert_eq!(wrong.0, 400);
    assert_eq!(wrong, unknown, "unknown users and wrong passwords are answered alike");
    assert_eq!(wrong, hostile);
    assert_eq!(wrong.1["error"], "invalid_grant");
    // Malformed requests get RFC 6749 errors.
    let (s, e) = token_request(&gw, &[("grant_type", "magic")]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (s, e) = token_request(&gw, &[("grant_type", "password"), ("grant_type", "password")]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")));
    let (s, e) = token_request(&gw, &[("grant_type", "password"), ("username", "dave")]).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_request")));
    let r = client()
        .post(url(&gw, "/auth/token"))
        .json(&serde_json::json!({"grant_type": "password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A huge password is refused without hashing megabytes.
    let huge = "a".repeat(1 << 20);
    let r = client()
        .post(url(&gw, "/auth/register"))
        .json(&serde_json::json!({"username": "eve", "password": huge}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 413), "{}", r.status());
    let r = client().get(url(&gw, "/auth/token")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

/// Runs `rampart` with `stdin`; returns (success, stdout, stderr).
fn rampart_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .env_remove("RAMPART_CONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_command_manages_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = identity_config(up, &db.url).replace("registration = true", "registration = false");
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let cfg = config.to_str().unwrap();

    let (ok, _, err) = rampart_cli(&["user", "add", "frank", "--config", cfg], "password1\n");
    assert!(!ok && err.contains("password refused"), "{err}");
    let (ok, out, err) =
        rampart_cli(&["user", "add", "frank", "--role", "admin", "--config", cfg], &format!("{PASSWORD}\n"));
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(created["roles"], serde_json::json!(["admin"]));
    assert!(!out.contains("argon2"), "no hash is ever printed: {out}");
    let (ok, out, _) = rampart_cli(&["user", "list", "--search", "fr", "--config", cfg], "");
    assert!(ok && out.lines().count() == 1 && out.contains("\"frank\""), "{out}");

    let gw = gateway(&text).await;
    assert_eq!(register(&gw, "mallory", PASSWORD).await.status(), 403, "registration is closed");
    let login = [("grant_type", "password"), ("username", "frank"), ("password", PASSWORD)];
    let roles_seen = |tokens: Value| {
        let gw = &gw;
        async move {
            let access = tokens["access_token"].as_str().unwrap().to_string();
            let r = client().get(url(gw, "/api/x")).bearer_auth(access).send().await.unwrap();
            r.json::<Value>().await.unwrap()["headers"]["x-rampart-roles"].clone()
        }
    };
    let (status, tokens) = token_request(&gw, &login).await;
    assert_eq!(status, 200);
    assert_eq!(roles_seen(tokens).await, "admin");

    let (ok, _, err) = rampart_cli(&["user", "lock", "frank", "--for", "1h", "--config", cfg], "");
    assert!(ok, "{err}");
    assert_eq!(token_request(&gw, &login).await.1["error"], "invalid_grant", "locked users cannot log in");
    assert!(rampart_cli(&["user", "unlock", "frank", "--config", cfg], "").0);
    assert!(rampart_cli(&["user", "set-role", "frank", "ops", "billing", "--config", cfg], "").0);
    let (status, tokens) = token_request(&gw, &login).await;
    assert_eq!(status, 200);
    assert_eq!(roles_seen(tokens).await, "billing,ops");
    let (ok, _, err) = rampart_cli(&["user", "unlock", "nobody", "--config", cfg], "");
    assert!(!ok && err.contains("no user named"), "{err}");
    gw.shutdown();
    gw.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_locked_after_repeated_failures() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = identity_config(up, &db.url)
        .replace("refresh_grace = '1s'\n", "refresh_grace = '1s'\nmax_failures = 3\nlockout = '1h'\n");
    let gw = gateway(&text).await;
    assert_eq!(register(&gw, "grace", PASSWORD).await.status(), 201);
    assert_eq!(register(&gw, "heidi", PASSWORD).await.status(), 201);
    let attempt = |user: &'static str, password: &'static str| {
        let gw = &gw;
        async move { token_request(gw, &[("grant_type", "password"), ("username", user), ("password", password)]).await }
    };
    // Three wrong passwords are tolerated; the fourth locks the account.
    for _ in 0..4 {
        assert_eq!(attempt("grace", "wrong password here").await.0, 400);
    }
    // Now even the right password is refused, with the same answer as a wrong one.
    let locked = attempt("grace", PASSWORD).await;
    assert_eq!(locked, attempt("grace", "wrong password here").await);
    assert_eq!(locked.1["error"], "invalid_grant");
    // The lock is per account: another user from the same address logs in.
    assert_eq!(attempt("heidi", PASSWORD).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_ends_other_sessions() {
    const NEW: &str = "entirely different lemon words 77";
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let gw = gateway(&identity_config(up, &db.url)).await;
    assert_eq!(register(&gw, "ivan", PASSWORD).await.status(), 201);
    let login = |password: &'static str| {
        let gw = &gw;
        async move { token_request(gw, &[("grant_type", "password"), ("username", "ivan"), ("password", password)]).await }
    };
    let (_, tokens) = login(PASSWORD).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let me: Value = client().get(url(&gw, "/auth/me")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["username"], "ivan");
    assert!(me.get("password_hash").is_none(), "{me}");
    assert_eq!(client().get(url(&gw, "/auth/me")).send().await.unwrap().status(), 401);

    let change = |current: &str, new: &str| {
        client()
            .post(url(&gw, "/auth/password"))
            .bearer_auth(&access)
            .json(&serde_json::json!({"current_password": current, "new_password": new}))
            .send()
    };
    assert_eq!(change("not the password", NEW).await.unwrap().status(), 403);
    assert_eq!(change(PASSWORD, "password123").await.unwrap().status(), 400);
    assert_eq!(change(PASSWORD, NEW).await.unwrap().status(), 204);
    // The old password, the old refresh token and the old access token (at the
    // account endpoints, which check the token version) are all spent.
    assert_eq!(login(PASSWORD).await.0, 400);
    assert_eq!(token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await.0, 400);
    assert_eq!(client().get(url(&gw, "/auth/me")).bearer_auth(&access).send().await.unwrap().status(), 401);
    assert_eq!(login(NEW).await.0, 200);
}
