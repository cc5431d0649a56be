//! Passkeys end to end over HTTP, on SQLite and on PostgreSQL, with
//! webauthn-authenticator-rs's software authenticators in the browser's
//! place: registering two, listing, passwordless login and the token on a
//! protected route, removal, single-use and expiring challenges, a wrong
//! origin, a cloned authenticator (counter regression), locked accounts,
//! decoys for unknown users, and hostile input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};

const ORIGIN: &str = "https://api.example.test";

fn passkey_config(up: std::net::SocketAddr, db: &str) -> String {
    format!("{}[identity.webauthn]\nrp_id = 'api.example.test'\nrp_origin = '{ORIGIN}'\n", identity_config(up, db))
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

async fn post(gw: &rampart::Gateway, path: &str, bearer: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = client().post(url(gw, path)).json(body);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn password_login(gw: &rampart::Gateway, username: &str) -> String {
    let (status, tokens) =
        token_request(gw, &[("grant_type", "password"), ("username", username), ("password", PASSWORD)]).await;
    assert_eq!(status, 200, "{tokens}");
    tokens["access_token"].as_str().unwrap().to_string()
}

/// Splits `{"challenge_id", "publicKey"}` into the id and the options.
fn split(mut started: Value) -> (String, Value) {
    let id = started.as_object_mut().unwrap().remove("challenge_id").unwrap();
    (id.as_str().unwrap().to_string(), started)
}

async fn add_passkey(
    gw: &rampart::Gateway,
    access: &str,
    name: &str,
    authenticator: &mut impl WebauthnAuthenticator,
) -> String {
    let proof = serde_json::json!({"password": PASSWORD});
    let (status, started) = post(gw, "/auth/passkeys/register/start", Some(access), &proof).await;
    assert_eq!(status, 200, "{started}");
    let (challenge_id, options) = split(started);
    let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let credential = authenticator.do_registration(origin(), options).unwrap();
    let body = serde_json::json!({"challenge_id": challenge_id, "name": name, "credential": credential});
    let (status, created) = post(gw, "/auth/passkeys/register/finish", Some(access), &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], name);
    created["id"].as_str().unwrap().to_string()
}

/// Starts a passwordless login: the challenge id and the browser's options.
async fn login_start(gw: &rampart::Gateway, username: &str) -> (String, RequestChallengeResponse) {
    let (status, started) =
        post(gw, "/auth/passkeys/login/start", None, &serde_json::json!({"username": username})).await;
    assert_eq!(status, 200, "{started}");
    let (id, options) = split(started);
    (id, serde_json::from_value(options).unwrap())
}

async fn login_finish(gw: &rampart::Gateway, challenge_id: &str, credential: &Value) -> (u16, Value) {
    let body = serde_json::json!({"challenge_id": challenge_id, "credential": credential});
    let r = client().post(url(gw, "/auth/passkeys/login/finish")).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A full passwordless login with `authenticator`.
async fn passkey_login(
    gw: &rampart::Gateway,
    username: &str,
    authenticator: &mut impl WebauthnAuthenticator,
) -> (u16, Value) {
    let (id, options) = login_start(gw, username).await;
    let credential = authenticator.do_authentication(origin(), options).unwrap();
    login_finish(gw, &id, &serde_json::to_value(&credential).unwrap()).await
}

async fn api_status(gw: &rampart::Gateway, access: &str) -> u16 {
    client().get(url(gw, "/api/x")).bearer_auth(access).send().await.unwrap().status().as_u16()
}

async fn sql(db: &rampart::store::Database, text: &str) {
    use rampart::store::Database;
    match db {
        Database::Sqlite(p) => sqlx::query(text).execute(p).await.map(drop),
        Database::Postgres(p) => sqlx::query(text).execute(p).await.map(drop),
    }
    .unwrap();
}

on_both_backends!(sqlite_passkey_ceremonies, postgres_passkey_ceremonies, passkey_flow);
on_both_backends!(sqlite_passkey_hostile_input, postgres_passkey_hostile_input, hostile_flow);
on_both_backends!(sqlite_passkey_registration_needs_proof, postgres_passkey_registration_needs_proof, proof_flow);
on_both_backends!(sqlite_passkey_login_flood, postgres_passkey_login_flood, login_flood_flow);

/// Starts a passwordless login as the client `ip` (through a trusted proxy).
async fn login_start_from(gw: &rampart::Gateway, username: &str, ip: &str) -> (String, RequestChallengeResponse) {
    let r = client()
        .post(url(gw, "/auth/passkeys/login/start"))
        .header("x-forwarded-for", ip)
        .json(&serde_json::json!({"username": username}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (id, options) = split(r.json().await.unwrap());
    (id, serde_json::from_value(options).unwrap())
}

/// Anyone may start a login for any username: a stranger who starts many
/// for a user's name fills only the stranger's own share of pending logins
/// (16, oldest out first) and does not push out the user's own.
async fn login_flood_flow(tdb: &TestDb) {
    let up = start_upstream().await;
    let text = passkey_config(up, &tdb.url).replace(
        "[server]\nlisten = '127.0.0.1:0'\n",
        "[server]\nlisten = '127.0.0.1:0'\ntrusted_proxies = ['127.0.0.1']\n",
    );
    assert!(text.contains("trusted_proxies"));
    let gw = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "erin", None, PASSWORD).await.status(), 201);
    let access = password_login(&gw, "erin").await;
    let mut laptop = SoftPasskey::new(true);
    add_passkey(&gw, &access, "laptop", &mut laptop).await;

    let (mine, options) = login_start_from(&gw, "erin", "203.0.113.7").await;
    let mut theirs = Vec::new();
    for i in 0..40 {
        // Real starts for erin, and decoys: both count for the stranger.
        let name = if i % 4 == 3 { "nobody" } else { "erin" };
        theirs.push(login_start_from(&gw, name, "198.51.100.9").await);
    }
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options).unwrap()).unwrap();
    let (status, tokens) = login_finish(&gw, &mine, &credential).await;
    assert_eq!(status, 200, "{tokens}");

    // The stranger's 16 newest (24 to 39) are pending, the older ones were
    // pushed out. 38 is a real start for erin (39 a decoy).
    let (newest, options) = &theirs[38];
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options.clone()).unwrap()).unwrap();
    assert_eq!(login_finish(&gw, newest, &credential).await.0, 200);
    for (id, options) in [&theirs[0], &theirs[22]] {
        let credential = serde_json::to_value(laptop.do_authentication(origin(), options.clone()).unwrap()).unwrap();
        let (status, err) = login_finish(&gw, id, &credential).await;
        assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")));
    }
    gw.shutdown();
    gw.wait().await;
}

/// Adding a passkey takes the same proof as removing one: a bearer token
/// alone (perhaps stolen) adds no way to sign in that skips the second
/// factor. Refusals answer as removal's do, and wrong passwords count
/// towards the lockout as removal's do.
async fn proof_flow(tdb: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&passkey_config(up, &tdb.url)).await;
    assert_eq!(register_with_email(&gw, "dave", None, PASSWORD).await.status(), 201);
    let access = password_login(&gw, "dave").await;
    let start = "/auth/passkeys/register/start";
    for body in [Value::Null, serde_json::json!({})] {
        let (status, problem) = post(&gw, start, Some(&access), &body).await;
        assert_eq!((status, problem["type"].as_str()), (400, Some("urn:rampart:problem:bad-request")), "{problem}");
    }
    let r = client().post(url(&gw, start)).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 400, "no body at all");
    // Removal without a proof answers the same.
    let r = client().delete(url(&gw, "/auth/passkeys/pk_x")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // With the password: a passkey, and it signs in.
    let mut laptop = SoftPasskey::new(true);
    add_passkey(&gw, &access, "laptop", &mut laptop).await;
    assert_eq!(passkey_login(&gw, "dave", &mut laptop).await.0, 200);

    // A wrong password: 403 as at removal, and each counts towards the
    // lockout (five allowed in the window; the sixth locks the account),
    // after which even the right one is refused.
    let wrong = serde_json::json!({"password": "not the password"});
    for _ in 0..6 {
        let (status, problem) = post(&gw, start, Some(&access), &wrong).await;
        let expected = (403, Some("urn:rampart:problem:invalid-credentials"));
        assert_eq!((status, problem["type"].as_str()), expected, "{problem}");
    }
    let (status, _) = post(&gw, start, Some(&access), &serde_json::json!({"password": PASSWORD})).await;
    assert_eq!(status, 403, "locked after six wrong passwords");
    let (status, _) =
        token_request(&gw, &[("grant_type", "password"), ("username", "dave"), ("password", PASSWORD)]).await;
    assert_ne!(status, 200, "the account is locked");
    gw.shutdown();
    gw.wait().await;
}

async fn passkey_flow(tdb: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let audit = format!("[audit]\nenabled = true\nfile = '{}'", audit_file.display());
    let gw = gateway(&passkey_config(up, &tdb.url).replace("[audit]\nenabled = false", &audit)).await;
    let db = rampart::store::Database::connect(&tdb.url).await.unwrap();
    assert_eq!(register_with_email(&gw, "alice", None, PASSWORD).await.status(), 201);
    let access = password_login(&gw, "alice").await;

    // Two authenticators: a passkey and a security key (whose state can be copied).
    let mut laptop = SoftPasskey::new(true);
    let (mut key, _) = SoftToken::new(true).unwrap();
    let laptop_id = add_passkey(&gw, &access, "laptop", &mut laptop).await;
    let key_id = add_passkey(&gw, &access, "yubikey", &mut key).await;
    let mut clone = SoftToken::from_cbor(&key.to_cbor().unwrap()).unwrap();

    let r = client().get(url(&gw, "/auth/passkeys")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    let list = listed["passkeys"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{listed}");
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["laptop", "yubikey"]);
    assert!(list.iter().all(|p| p.get("credential").is_none() && p["last_used_at"].is_null()), "{listed}");

    // Passwordless login; the token works on an `auth = "required"` route.
    let (status, tokens) = passkey_login(&gw, "alice", &mut laptop).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "bearer");
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("rt_"));
    assert_eq!(api_status(&gw, tokens["access_token"].as_str().unwrap()).await, 200);

    // A passkey is a second factor too: the password grant now asks for it,
    // and the passkey step ends in tokens (once per mfa_token).
    let (status, asked) =
        token_request(&gw, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!((status, asked["error"].as_str()), (403, Some("mfa_required")), "{asked}");
    assert!(asked["mfa_methods"].as_array().unwrap().iter().any(|m| m == "webauthn"), "{asked}");
    let mfa_token = asked["mfa_token"].as_str().unwrap().to_string();
    assert_eq!(api_status(&gw, &mfa_token).await, 401, "the mfa_token opens nothing");
    let step = |challenge_id: &str, credential: &Value| serde_json::json!({"mfa_token": mfa_token, "challenge_id": challenge_id, "credential": credential});
    let (status, started) =
        post(&gw, "/auth/mfa/webauthn/start", None, &serde_json::json!({"mfa_token": mfa_token})).await;
    assert_eq!(status, 200, "{started}");
    let (id, options) = split(started);
    let credential =
        serde_json::to_value(laptop.do_authentication(origin(), serde_json::from_value(options).unwrap()).unwrap())
            .unwrap();
    let (status, tokens) = post(&gw, "/auth/mfa/webauthn/finish", None, &step(&id, &credential)).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(api_status(&gw, tokens["access_token"].as_str().unwrap()).await, 200);
    // The mfa_token is spent: no second challenge, no second login.
    let (status, again) =
        post(&gw, "/auth/mfa/webauthn/start", None, &serde_json::json!({"mfa_token": mfa_token})).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")), "{again}");
    let (status, again) = post(&gw, "/auth/mfa/webauthn/finish", None, &step(&id, &credential)).await;
    assert_eq!((status, again["error"].as_str()), (400, Some("invalid_grant")));
    let (status, _) =
        post(&gw, "/auth/mfa/webauthn/start", None, &serde_json::json!({"mfa_token": "forged.mfa.token"})).await;
    assert_eq!(status, 400);

    // A challenge is single use.
    let (id, options) = login_start(&gw, "alice").await;
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options).unwrap()).unwrap();
    assert_eq!(login_finish(&gw, &id, &credential).await.0, 200);
    let (status, err) = login_finish(&gw, &id, &credential).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")));

    // An expired challenge is refused.
    let (id, options) = login_start(&gw, "alice").await;
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options).unwrap()).unwrap();
    sql(&db, "UPDATE webauthn_challenges SET expires_at = 1").await;
    assert_eq!(login_finish(&gw, &id, &credential).await.0, 400);

    // An answer made for another origin (a subdomain here) is refused.
    let (id, options) = login_start(&gw, "alice").await;
    let evil = Url::parse("https://login.api.example.test").unwrap();
    let credential = serde_json::to_value(laptop.do_authentication(evil, options).unwrap()).unwrap();
    assert_eq!(login_finish(&gw, &id, &credential).await.0, 400);

    // A cloned authenticator: the original moves its counter on, then the copy
    // (with the old counter) is refused as a possible compromise.
    assert_eq!(passkey_login(&gw, "alice", &mut key).await.0, 200);
    assert_eq!(passkey_login(&gw, "alice", &mut key).await.0, 200);
    let (status, err) = passkey_login(&gw, "alice", &mut clone).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")), "a counter regression must be refused");
    assert_eq!(passkey_login(&gw, "alice", &mut key).await.0, 200, "the original still works");
    gw.audit.flush().await;
    let events: Vec<Value> =
        std::fs::read_to_string(&audit_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failures: Vec<&Value> = events.iter().filter(|e| e.to_string().contains("auth_failure")).collect();
    assert!(failures.iter().any(|e| e.to_string().contains("counter_regression")), "{failures:?}");
    assert!(events.iter().any(|e| e.to_string().contains("passkey_added")));
    assert!(!events.iter().any(|e| e.to_string().contains("rt_")), "no tokens in the audit log");

    // Removal needs the password (or a code), as turning TOTP off does.
    let remove = |id: String, bearer: String, proof: Option<Value>| {
        let req = client().delete(url(&gw, &format!("/auth/passkeys/{id}"))).bearer_auth(bearer);
        let req = match proof {
            Some(p) => req.json(&p),
            None => req,
        };
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let password = || Some(serde_json::json!({ "password": PASSWORD }));
    assert_eq!(remove(laptop_id.clone(), access.clone(), None).await, 400);
    assert_eq!(remove(laptop_id.clone(), access.clone(), Some(serde_json::json!({ "password": "wrong" }))).await, 403);
    // A login started before it cannot be finished with the removed passkey.
    let (id, options) = login_start(&gw, "alice").await;
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options).unwrap()).unwrap();
    assert_eq!(remove(laptop_id.clone(), access.clone(), password()).await, 204);
    assert_eq!(login_finish(&gw, &id, &credential).await.0, 400);
    // …and new logins no longer offer it.
    let (_, options) = login_start(&gw, "alice").await;
    assert_eq!(options.public_key.allow_credentials.len(), 1);
    assert!(laptop.do_authentication(origin(), options).is_err());
    assert_eq!(remove(laptop_id.clone(), access.clone(), password()).await, 404);

    // Another user cannot remove alice's passkey.
    assert_eq!(register_with_email(&gw, "bob", None, PASSWORD).await.status(), 201);
    let bob = password_login(&gw, "bob").await;
    assert_eq!(remove(key_id.clone(), bob.clone(), password()).await, 404);
    let listed: Value =
        client().get(url(&gw, "/auth/passkeys")).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    let list = listed["passkeys"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0]["last_used_at"].as_u64().is_some(), "{listed}");

    // A disabled account cannot log in with its passkey.
    sql(&db, "UPDATE users SET disabled = TRUE WHERE username = 'alice'").await;
    assert_eq!(passkey_login(&gw, "alice", &mut key).await.0, 400);

    gw.shutdown();
    gw.wait().await;
}

async fn hostile_flow(tdb: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&passkey_config(up, &tdb.url)).await;
    assert_eq!(register_with_email(&gw, "carol", None, PASSWORD).await.status(), 201);
    let access = password_login(&gw, "carol").await;
    let mut laptop = SoftPasskey::new(true);
    add_passkey(&gw, &access, "laptop", &mut laptop).await;

    // Unknown usernames get a decoy that looks like a real start and is stable.
    let (_, real) = login_start(&gw, "carol").await;
    let (decoy_id, decoy) = login_start(&gw, "nobody").await;
    let (_, again) = login_start(&gw, "nobody").await;
    assert!(!decoy.public_key.allow_credentials.is_empty());
    assert_eq!(decoy.public_key.rp_id, real.public_key.rp_id);
    let ids =
        |o: &RequestChallengeResponse| o.public_key.allow_credentials.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&decoy), ids(&again));
    assert_ne!(decoy.public_key.challenge, again.public_key.challenge);
    // Finishing a decoy fails like a wrong key (with carol's real answer).
    let (_, options) = login_start(&gw, "carol").await;
    let credential = serde_json::to_value(laptop.do_authentication(origin(), options).unwrap()).unwrap();
    let (status, err) = login_finish(&gw, &decoy_id, &credential).await;
    assert_eq!((status, err["error"].as_str()), (400, Some("invalid_grant")));

    // Unknown, malformed and oversized challenge ids.
    for id in ["wc_unknown", "", "\u{0}", &"x".repeat(5000)] {
        assert_eq!(login_finish(&gw, id, &credential).await.0, 400, "{id:.20}");
    }
    // Garbage where JSON or a credential should be.
    for body in ["not json", "{}", "[]", "{\"challenge_id\": 5, \"credential\": {}}"] {
        let r = client()
            .post(url(&gw, "/auth/passkeys/login/finish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    let body = serde_json::json!({"challenge_id": "wc_x", "credential": {"id": "AAAA", "rawId": "!!", "type": 7}});
    assert_eq!(post(&gw, "/auth/passkeys/login/finish", None, &body).await.0, 400);
    let body = serde_json::json!({"challenge_id": "wc_x", "name": "x", "credential": {"bogus": true}});
    assert_eq!(post(&gw, "/auth/passkeys/register/finish", Some(&access), &body).await.0, 400);
    let body = serde_json::json!({"challenge_id": "wc_x", "name": "\u{7}bell", "credential": {}});
    assert_eq!(post(&gw, "/auth/passkeys/register/finish", Some(&access), &body).await.0, 400);
    // A huge body is refused before it is parsed.
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(1 << 20));
    let r = client()
        .post(url(&gw, "/auth/passkeys/login/start"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 413), "{}", r.status());
    // Signed-in endpoints want a bearer token of ours.
    assert_eq!(post(&gw, "/auth/passkeys/register/start", None, &Value::Null).await.0, 401);
    assert_eq!(post(&gw, "/auth/passkeys/register/start", Some("garbage"), &Value::Null).await.0, 401);
    assert_eq!(client().get(url(&gw, "/auth/passkeys")).send().await.unwrap().status(), 401);
    assert_eq!(client().delete(url(&gw, "/auth/passkeys/x")).send().await.unwrap().status(), 401);
    // Unknown paths and methods.
    assert_eq!(client().get(url(&gw, "/auth/passkeys/login/start")).send().await.unwrap().status(), 405);
    let r = client().post(url(&gw, "/auth/passkeys/nope")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 404);
    gw.shutdown();
    gw.wait().await;

    // Without [identity.webauthn] the endpoints say so.
    let gw = gateway(&identity_config(up, &tdb.url)).await;
    let (status, _) = post(&gw, "/auth/passkeys/login/start", None, &serde_json::json!({"username": "carol"})).await;
    assert_eq!(status, 403);
    gw.shutdown();
    gw.wait().await;
}

/// A passkey registered in a browser session raises what the session can
/// do, as enrolling TOTP does: the session gets a new token, and the old one
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_passkey_in_a_session_renews_it() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let text = passkey_config(up, &tdb.url)
        .replace("[identity.password.argon2]", "[identity.sessions]\nenabled = true\n[identity.password.argon2]");
    let gw = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "sam", None, PASSWORD).await.status(), 201);
    let login = [("grant_type", "password"), ("username", "sam"), ("password", PASSWORD)];
    let r = client().post(url(&gw, "/auth/session")).form(&login).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let before = session_cookie(&r);
    let csrf = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    let in_session = |path: &str, body: Value| {
        client().post(url(&gw, path)).header("cookie", &before).header("x-csrf-token", &csrf).json(&body).send()
    };
    let r = in_session("/auth/passkeys/register/start", serde_json::json!({"password": PASSWORD})).await.unwrap();
    assert_eq!(r.status(), 200);
    let (challenge_id, options) = split(r.json().await.unwrap());
    let options: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let credential = SoftPasskey::new(true).do_registration(origin(), options).unwrap();
    let body = serde_json::json!({"challenge_id": challenge_id, "name": "phone", "credential": credential});
    let r = in_session("/auth/passkeys/register/finish", body).await.unwrap();
    assert_eq!(r.status(), 201);
    let after = session_cookie(&r);
    assert_ne!(after, before, "a new session token after adding a passkey");
    let api = |cookie: String| {
        let u = url(&gw, "/api/x");
        async move { client().get(u).header("cookie", cookie).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(api(before.clone()).await, 401, "the old session token is refused");
    assert_eq!(api(after).await, 200);
}
