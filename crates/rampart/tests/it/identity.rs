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

pub(crate) async fn token_request(gw: &rampart::Gateway, form: &[(&str, &str)]) -> (u16, Value) {
    let r = client().post(url(gw, "/auth/token")).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    (status, r.json().await.unwrap())
}

async fn register(gw: &rampart::Gateway, username: &str, password: &str) -> reqwest::Response {
    register_with_email(gw, username, None, password).await
}

pub(crate) async fn register_with_email(
    gw: &rampart::Gateway,
    username: &str,
    email: Option<&str>,
    password: &str,
) -> reqwest::Response {
    let mut body = serde_json::json!({"username": username, "password": password});
    if let Some(email) = email {
        body["email"] = email.into();
    }
    client().post(url(gw, "/auth/register")).json(&body).send().await.unwrap()
}

/// Runs a scenario on SQLite and on PostgreSQL (used by `password_reset` too).
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
on_both_backends!(sqlite_revoked_tokens_are_refused, postgres_revoked_tokens_are_refused, revocation_flow);
on_both_backends!(
    sqlite_rotated_keys_reach_running_gateways,
    postgres_rotated_keys_reach_running_gateways,
    rotation_flow
);

/// The JSON header of a JWT.
fn jwt_header(token: &str) -> Value {
    use base64::Engine as _;
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

/// `rampart keys rotate` on a running deployment: the new key signs on the
/// next start and on running gateways as soon as they meet it (a token with an
/// unknown `kid` makes them re-read the keys); tokens of the old key keep
/// working, and both keys are published until the old one retires.
async fn rotation_flow(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = identity_config(up, &db.url);
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let cfg = config.to_str().unwrap();
    let a = gateway(&text).await;
    assert_eq!(register(&a, "grace", PASSWORD).await.status(), 201);
    let (old, _) = login(&a, "grace", PASSWORD).await;
    let old_kid = jwt_header(&old)["kid"].as_str().unwrap().to_string();

    let (ok, out, err) = rampart_cli(&["keys", "rotate", "--config", cfg], "");
    assert!(ok, "{err}");
    assert!(!out.contains("PRIVATE") && !out.contains("ciphertext"), "{out}");
    let printed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let new_kid = printed.iter().find(|k| k["active"] == true).unwrap()["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let retired = printed.iter().find(|k| k["kid"] == old_kid.as_str()).unwrap();
    assert!(retired["retire_at"].as_u64().is_some(), "{retired}");

    // A gateway started now signs with the new key.
    let b = gateway(&text).await;
    let (fresh, _) = login(&b, "grace", PASSWORD).await;
    assert_eq!(jwt_header(&fresh)["kid"], new_kid.as_str());
    // The running one accepts it (re-reading the keys) and then signs with it too.
    assert_eq!(api_status(&a, &fresh).await, 200);
    let (after, _) = login(&a, "grace", PASSWORD).await;
    assert_eq!(jwt_header(&after)["kid"], new_kid.as_str());
    // The old key's tokens still verify everywhere, and both keys are published.
    assert_eq!((api_status(&a, &old).await, api_status(&b, &old).await), (200, 200));
    let jwks: Value = client().get(url(&a, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{jwks}");
    // A made-up kid is refused (and costs at most one re-read per second).
    let mut forged = fresh.split('.').map(str::to_string).collect::<Vec<_>>();
    {
        use base64::Engine as _;
        let mut head = jwt_header(&fresh);
        head["kid"] = "rampart-made-up".into();
        forged[0] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(head.to_string());
    }
    assert_eq!(api_status(&a, &forged.join(".")).await, 401);

    let (ok, out, _) = rampart_cli(&["keys", "list", "--config", cfg], "");
    assert!(ok && out.lines().count() == 2, "{out}");
    for gw in [a, b] {
        gw.shutdown();
        gw.wait().await;
    }
}

/// `[auth.headers] internal_jwt`: upstreams that verify rather than trust
/// headers get a short-lived token of the caller, signed with the published
/// keys, reused while fresh; an inbound copy is always stripped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_can_verify_a_signed_identity_header() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    // Besides Rampart's own users, an external issuer's.
    const PARTNER: &str = "https://partner.example.test";
    let text = format!(
        "{}[auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = '{PARTNER}'\nsecret = '{SECRET}'\n\
         [auth.headers]\ninternal_jwt = 'X-Rampart-Jwt'\ninternal_jwt_ttl = '30s'\n",
        identity_config(up, &db.url)
    );
    let gw = gateway(&text).await;
    assert_eq!(register(&gw, "ivan", PASSWORD).await.status(), 201);
    let (access, _) = login(&gw, "ivan", PASSWORD).await;
    let call = |path: &'static str, bearer: Option<String>| {
        let mut req = client().get(url(&gw, path)).header("x-rampart-jwt", "forged.by.client");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let first = call("/api/x", Some(access.clone())).await;
    let internal = first["headers"]["x-rampart-jwt"].as_str().unwrap().to_string();
    assert_ne!(internal, "forged.by.client");
    let again = call("/api/x", Some(access.clone())).await;
    assert_eq!(again["headers"]["x-rampart-jwt"], internal.as_str(), "reused while fresh");
    // An anonymous route: the forged copy never reaches the upstream.
    let anon = call("/open", None).await;
    assert!(anon["headers"].get("x-rampart-jwt").is_none(), "{anon}");

    // The upstream verifies it against the JWKS, for its own audience.
    let jwks: Value = client().get(url(&gw, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let keys = rampart_core::token::KeySet::from_jwks(&jwks).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let upstream_view =
        rampart_core::token::Verifier::new(keys.clone(), ["https://api.example.test"], ["rampart-upstream"]);
    let claims = upstream_view.verify(&internal, now).unwrap();
    assert_eq!(Some(claims.sub.as_str()), first["headers"]["x-rampart-user"].as_str());
    assert!(claims.exp <= now + 30);
    assert_eq!(claims.idp, None, "one of our own users");
    assert!(first["headers"].get("x-rampart-issuer").is_none(), "{first}");

    // A partner's user, whose `sub` happens to be our user's id: the
    // upstream can tell them apart, by the header and by `idp`.
    let partner_token = {
        let signing = rampart_core::token::SigningKey::hs256("hs256", SECRET.as_bytes()).unwrap();
        let c = rampart_core::token::Claims::new(PARTNER, claims.sub.clone(), "api", now, 300);
        rampart_core::token::issue(&signing, &c).unwrap()
    };
    let partner = call("/api/x", Some(partner_token)).await;
    assert_eq!(partner["headers"]["x-rampart-user"], claims.sub.as_str(), "{partner}");
    assert_eq!(partner["headers"]["x-rampart-issuer"], PARTNER, "{partner}");
    let theirs = partner["headers"]["x-rampart-jwt"].as_str().unwrap();
    let theirs = upstream_view.verify(theirs, now).unwrap();
    assert_eq!((theirs.sub.as_str(), theirs.idp.as_deref()), (claims.sub.as_str(), Some(PARTNER)));
    // It is no access token: the API audience refuses it.
    let api_view = rampart_core::token::Verifier::new(keys, ["https://api.example.test"], ["api"]);
    assert!(api_view.verify(&internal, now).is_err());
    assert_eq!(api_status(&gw, &internal).await, 401);
    gw.shutdown();
    gw.wait().await;
}

/// The other signing algorithms: ES256 generated, RS256 from a key file (and
/// a new file taking over while the old key still verifies), HS256 with a
/// shared secret (never published).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_signed_with_the_configured_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let base = identity_config(up, &db.url);
    let with = |extra: &str| base.replace("registration = true\n", &format!("registration = true\n{extra}\n"));

    let gw = gateway(&with("algorithm = 'ES256'")).await;
    assert_eq!(register(&gw, "heidi", PASSWORD).await.status(), 201);
    let (es, _) = login(&gw, "heidi", PASSWORD).await;
    assert_eq!(jwt_header(&es)["alg"], "ES256");
    assert_eq!(api_status(&gw, &es).await, 200);
    let jwks: Value = client().get(url(&gw, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().any(|k| k["kty"] == "EC"), "{jwks}");
    gw.shutdown();
    gw.wait().await;

    let rsa = concat!(env!("CARGO_MANIFEST_DIR"), "/../rampart-core/src/token/testdata/rsa2048.pem");
    let gw = gateway(&with(&format!("algorithm = 'RS256'\nsigning_key_file = '{rsa}'"))).await;
    let (rs, _) = login(&gw, "heidi", PASSWORD).await;
    assert_eq!(jwt_header(&rs)["alg"], "RS256");
    assert!(jwt_header(&rs)["kid"].as_str().unwrap().starts_with("file-"));
    assert_eq!((api_status(&gw, &rs).await, api_status(&gw, &es).await), (200, 200), "the ES256 key still verifies");
    gw.shutdown();
    gw.wait().await;

    let secret = "a shared secret for legacy upstreams, 32+ bytes";
    let gw = gateway(&with(&format!("algorithm = 'HS256'\nhs256_secret = '{secret}'"))).await;
    let (hs, _) = login(&gw, "heidi", PASSWORD).await;
    assert_eq!(jwt_header(&hs)["alg"], "HS256");
    assert_eq!((api_status(&gw, &hs).await, api_status(&gw, &rs).await), (200, 200));
    let jwks: Value = client().get(url(&gw, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert!(jwks["keys"].as_array().unwrap().iter().all(|k| k["kty"] != "oct"), "the secret is never published");
    // An upstream holding the secret verifies it (here with the core verifier).
    let key =
        rampart_core::token::VerifyingKey::hs256(jwt_header(&hs)["kid"].as_str().unwrap(), secret.as_bytes()).unwrap();
    let verifier = rampart_core::token::Verifier::new(
        rampart_core::token::KeySet::from_keys([key]).unwrap(),
        ["https://api.example.test"],
        ["api"],
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(verifier.verify(&hs, now).is_ok());
    // `rampart keys rotate` refuses: the key comes from the config.
    let config = dir.path().join("hs.toml");
    std::fs::write(&config, with(&format!("algorithm = 'HS256'\nhs256_secret = '{secret}'"))).unwrap();
    let (ok, _, err) = rampart_cli(&["keys", "rotate", "--config", config.to_str().unwrap()], "");
    assert!(!ok && err.contains("comes from the config"), "{err}");
    gw.shutdown();
    gw.wait().await;
}

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
    // The name alice's account would take if erased is nobody's to take.
    let squat = register(&gw, &format!("Deleted:{id}"), PASSWORD).await;
    assert_eq!(squat.status(), 400, "the erasure tombstone's name");

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

pub(crate) async fn login(gw: &rampart::Gateway, username: &str, password: &str) -> (String, String) {
    let (status, tokens) =
        token_request(gw, &[("grant_type", "password"), ("username", username), ("password", password)]).await;
    assert_eq!(status, 200, "{tokens}");
    (tokens["access_token"].as_str().unwrap().to_string(), tokens["refresh_token"].as_str().unwrap().to_string())
}

async fn api_status(gw: &rampart::Gateway, access: &str) -> u16 {
    client().get(url(gw, "/api/x")).bearer_auth(access).send().await.unwrap().status().as_u16()
}

/// Logout, "log out everywhere", a password change and the CLI revoke access
/// tokens before they expire: at once on the instance that did it, and within
/// a revocation poll on another instance sharing the database.
async fn revocation_flow(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = identity_config(up, &db.url);
    let a = gateway(&text).await;
    let b = gateway(&text).await;
    assert_eq!(register(&a, "frank", PASSWORD).await.status(), 201);
    let within = std::time::Duration::from_secs(10);

    // Logout with the access token: refused here at once, there within a poll.
    let (access, _) = login(&a, "frank", PASSWORD).await;
    let (other, _) = login(&a, "frank", PASSWORD).await;
    assert_eq!((api_status(&a, &access).await, api_status(&b, &access).await), (200, 200));
    let r = client().post(url(&a, "/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let refused = problem(client().get(url(&a, "/api/x")).bearer_auth(&access).send().await.unwrap(), 401).await;
    assert_eq!(refused["detail"], "a valid bearer token is required", "the reason is not told: {refused}");
    assert!(eventually(within, || async { api_status(&b, &access).await == 401 }).await, "instance b never learnt");
    assert_eq!(api_status(&a, &other).await, 200, "only that token");
    assert_eq!(client().get(url(&a, "/auth/me")).bearer_auth(&access).send().await.unwrap().status(), 401);

    // Log out everywhere: every token of the user, and the refresh tokens.
    let (access, refresh) = login(&a, "frank", PASSWORD).await;
    let r = client().post(url(&b, "/auth/logout/all")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!((api_status(&b, &access).await, api_status(&b, &other).await), (401, 401));
    assert!(eventually(within, || async { api_status(&a, &other).await == 401 }).await);
    let (status, _) = token_request(&a, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(status, 400);
    // A new login works again.
    let (access, _) = login(&a, "frank", PASSWORD).await;
    assert_eq!(api_status(&a, &access).await, 200);

    // A password change ends the sessions made with the old password.
    let r = client()
        .post(url(&a, "/auth/password"))
        .bearer_auth(&access)
        .json(&serde_json::json!({"current_password": PASSWORD, "new_password": "an entirely new passphrase 7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(api_status(&a, &access).await, 401);
    let (access, _) = login(&a, "frank", "an entirely new passphrase 7").await;

    // `rampart user logout` (another process, the database only) reaches both.
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let (ok, _, err) = rampart_cli(&["user", "logout", "frank", "--config", config.to_str().unwrap()], "");
    assert!(ok, "{err}");
    assert!(eventually(within, || async { api_status(&a, &access).await == 401 }).await);
    assert!(eventually(within, || async { api_status(&b, &access).await == 401 }).await);

    // Logout needs a token of some kind; a foreign or broken one is ignored.
    let r = client().post(url(&a, "/auth/logout")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client().post(url(&a, "/auth/logout")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = client().post(url(&a, "/auth/logout/all")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // A restart remembers the revocations.
    let (access, _) = login(&a, "frank", "an entirely new passphrase 7").await;
    let r = client().post(url(&a, "/auth/logout")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);
    for gw in [a, b] {
        gw.shutdown();
        gw.wait().await;
    }
    let c = gateway(&text).await;
    assert_eq!(api_status(&c, &access).await, 401);
    c.shutdown();
    c.wait().await;
}

/// Runs `rampart` with `stdin`; returns (success, stdout, stderr).
pub(crate) fn rampart_cli(args: &[&str], stdin: &str) -> (bool, String, String) {
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
    // Longer than the store holds is until unlocked; nothing is no lock at all.
    let (ok, _, err) = rampart_cli(&["user", "lock", "frank", "--for", "500000000years", "--config", cfg], "");
    assert!(ok, "{err}");
    assert_eq!(token_request(&gw, &login).await.1["error"], "invalid_grant");
    assert!(rampart_cli(&["user", "unlock", "frank", "--config", cfg], "").0);
    let (ok, _, err) = rampart_cli(&["user", "lock", "frank", "--for", "0s", "--config", cfg], "");
    assert!(!ok && err.contains("longer than zero"), "{err}");
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
    let (status, signed_in) = attempt("grace", PASSWORD).await;
    assert_eq!(status, 200);
    // Three wrong passwords are tolerated; the fourth locks the account.
    for _ in 0..4 {
        assert_eq!(attempt("grace", "wrong password here").await.0, 400);
    }
    // Now even the right password is refused, with the same answer as a wrong one.
    let locked = attempt("grace", PASSWORD).await;
    assert_eq!(locked, attempt("grace", "wrong password here").await);
    assert_eq!(locked.1["error"], "invalid_grant");
    // The lockout stops new logins only (anyone who knows the name can set
    // it off): a refresh token already issued is still honoured.
    let rt = signed_in["refresh_token"].as_str().unwrap();
    let (status, refreshed) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!(status, 200, "{refreshed}");
    // The lock is per account: another user from the same address logs in.
    assert_eq!(attempt("heidi", PASSWORD).await.0, 200);
}

/// A stolen access token must not open unlimited guessing of the password:
/// wrong current passwords at `POST /auth/password` and `DELETE /auth/me`
/// count towards the lockout like wrong passwords at login, and a locked
/// account's password is not accepted there either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_lock_the_account() {
    const NEW: &str = "entirely different lemon words 77";
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = identity_config(up, &db.url)
        .replace("refresh_grace = '1s'\n", "refresh_grace = '1s'\nmax_failures = 3\nlockout = '1h'\n");
    let gw = gateway(&text).await;
    let login = |user: &'static str| {
        let gw = &gw;
        async move { token_request(gw, &[("grant_type", "password"), ("username", user), ("password", PASSWORD)]).await }
    };
    let access = |user: &'static str| async move { login(user).await.1["access_token"].as_str().unwrap().to_string() };

    // Password change: three wrong current passwords are tolerated; the fourth locks.
    assert_eq!(register(&gw, "judy", PASSWORD).await.status(), 201);
    let token = access("judy").await;
    let change = |current: &'static str| {
        client()
            .post(url(&gw, "/auth/password"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"current_password": current, "new_password": NEW}))
            .send()
    };
    for _ in 0..4 {
        assert_eq!(change("not the password").await.unwrap().status(), 403);
    }
    let (status, body) = login("judy").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "locked: {body}");
    // Locked, the right current password gets the wrong one's answer and changes nothing.
    let r = change(PASSWORD).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "urn:rampart:problem:wrong-password");
    let new_login = [("grant_type", "password"), ("username", "judy"), ("password", NEW)];
    assert_eq!(token_request(&gw, &new_login).await.0, 400);

    // Erasure: the same count, and a locked account is not erased.
    assert_eq!(register(&gw, "ken", PASSWORD).await.status(), 201);
    let token = access("ken").await;
    let erase = |password: &'static str| {
        client()
            .delete(url(&gw, "/auth/me"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"password": password}))
            .send()
    };
    for _ in 0..4 {
        assert_eq!(erase("not the password").await.unwrap().status(), 403);
    }
    assert_eq!(login("ken").await.0, 400, "locked");
    assert_eq!(erase(PASSWORD).await.unwrap().status(), 403);
    let me = client().get(url(&gw, "/auth/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.json::<Value>().await.unwrap()["username"], "ken", "not erased");
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
