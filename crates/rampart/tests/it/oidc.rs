//! Logins through an external OpenID provider end to end, on SQLite and on
//! PostgreSQL, against a real provider: panva's `oidc-provider` in
//! `tests/oidc-provider/` (scripts/test starts it and sets
//! `RAMPART_TEST_OIDC_ISSUER`; without it these tests are skipped with a note).
//!
//! The tests play the browser: they follow the redirects between the gateway
//! and the provider by hand, keep each site's cookies, and sign in on the
//! provider's login form. The provider sends the browser back to the public
//! URL `https://api.example.test/auth/oidc/<name>/callback` (the gateway's
//! `issuer`, which stands in for `public_url`); the test browser takes that
//! host to be the gateway, as a TLS-terminating proxy in front of it would.
//!
//! Covered: a first login creating a user whose token works on a protected
//! route, later logins reaching the same user, password logins of such a user
//! refused without locking it, linking by verified e-mail on and off,
//! explicit linking from a signed-in account and unlinking (never the last
//! way to sign in), forged, spent and foreign-browser states refused, a
//! replayed code refused by the provider, ID tokens with a wrong nonce (the
//! pending login's nonce changed in the database) and for another audience
//! (a provider client whose tokens name someone else) refused, open
//! redirects refused, `client_secret_post`, locked users, a second factor
//! still asked for, and the audit trail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, token_request, PASSWORD};

/// Where the provider sends browsers back: the gateway's public URL.
const PUBLIC: &str = "https://api.example.test";

on_both_backends!(sqlite_oidc_first_login_creates_a_user, postgres_oidc_first_login_creates_a_user, first_login_flow);
on_both_backends!(sqlite_oidc_link_by_verified_email, postgres_oidc_link_by_verified_email, email_link_flow);
on_both_backends!(sqlite_oidc_explicit_link_and_unlink, postgres_oidc_explicit_link_and_unlink, explicit_link_flow);
on_both_backends!(sqlite_oidc_refusals, postgres_oidc_refusals, refusal_flow);
on_both_backends!(sqlite_oidc_second_factor_still_asked, postgres_oidc_second_factor_still_asked, mfa_flow);

/// The test provider's issuer, or `None` (with a note) when it is not running.
fn issuer() -> Option<String> {
    match std::env::var("RAMPART_TEST_OIDC_ISSUER") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: RAMPART_TEST_OIDC_ISSUER not set (scripts/test starts the test OpenID provider)");
            None
        }
    }
}

/// A provider section: `name` uses the test provider's client `client`.
fn provider(name: &str, client: &str, issuer: &str, extra: &str) -> String {
    format!(
        "[identity.oidc.{name}]\nissuer = '{issuer}'\nclient_id = '{client}'\nclient_secret = '{client}-secret'\n{extra}\n"
    )
}

/// The identity test config with an audit file, no bans (refusals come from
/// one address here; bans are tested elsewhere) and `providers`.
fn config(db: &TestDb, up: std::net::SocketAddr, audit: &std::path::Path, providers: &str) -> String {
    let audit = format!("[audit]\nenabled = true\nfile = '{}'", audit.display());
    identity_config(up, &db.url).replace("[audit]\nenabled = false", &audit) + "[bans]\nenabled = false\n" + providers
}

/// A browser: no automatic redirects, a cookie jar per host (names and values
/// only; the test sites need no more), and the public URL mapped to the gateway.
struct Browser {
    http: reqwest::Client,
    gateway: String,
    jar: HashMap<String, BTreeMap<String, String>>,
}

impl Browser {
    fn new(gw: &rampart::Gateway) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .unwrap();
        Self { http, gateway: format!("http://{}", gw.addr), jar: HashMap::new() }
    }

    /// The URL the browser really opens: the public URL is the gateway.
    fn resolve(&self, url: &str) -> String {
        match url.strip_prefix(PUBLIC) {
            Some(rest) => format!("{}{rest}", self.gateway),
            None => url.to_owned(),
        }
    }

    fn host_of(url: &str) -> String {
        url.split("://").nth(1).unwrap().split('/').next().unwrap().to_owned()
    }

    async fn send(&mut self, req: reqwest::RequestBuilder, url: &str) -> reqwest::Response {
        let host = Self::host_of(url);
        let cookies = self.jar.get(&host).map(|c| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>());
        let req = match cookies {
            Some(c) if !c.is_empty() => req.header("cookie", c.join("; ")),
            _ => req,
        };
        let resp = req.send().await.unwrap();
        for value in resp.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.entry(host.clone()).or_default().insert(name.trim().to_owned(), value.to_owned());
        }
        resp
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let url = self.resolve(url);
        let req = self.http.get(&url);
        self.send(req, &url).await
    }

    async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let url = self.resolve(url);
        let req = self.http.post(&url).form(form);
        self.send(req, &url).await
    }

    async fn post_json(&mut self, url: &str, bearer: &str, body: Value) -> reqwest::Response {
        let url = self.resolve(url);
        let req = self.http.post(&url).bearer_auth(bearer).json(&body);
        self.send(req, &url).await
    }

    /// `GET {prefix}/oidc/<provider>/login`: the provider's authorization URL.
    async fn start(&mut self, provider: &str, return_to: Option<&str>) -> String {
        let mut path = format!("{PUBLIC}/auth/oidc/{provider}/login");
        if let Some(r) = return_to {
            path = format!("{path}?return_to={}", urlencode(r));
        }
        let resp = self.get(&path).await;
        assert_eq!(resp.status(), 302, "{}", resp.text().await.unwrap());
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let cookie = resp.headers()["set-cookie"].to_str().unwrap();
        for attribute in ["__Host-rampart-oidc=", "Path=/", "HttpOnly", "Secure", "SameSite=Lax"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        resp.headers()["location"].to_str().unwrap().to_owned()
    }

    /// At the provider: signs in as `user` (unless the provider remembers
    /// the browser) and returns the URL it sends the browser back to.
    async fn authorize(&mut self, authorize_url: &str, user: &str, password: &str) -> String {
        let issuer = authorize_url.split("/auth?").next().unwrap().to_owned();
        let resp = self.get(authorize_url).await;
        assert_eq!(resp.status(), 303, "{}", resp.text().await.unwrap());
        let mut location = resp.headers()["location"].to_str().unwrap().to_owned();
        if let Some(uid) = location.strip_prefix("/interaction/").map(str::to_owned) {
            let page = self.get(&format!("{issuer}{location}")).await;
            assert_eq!(page.status(), 200);
            let signed_in = self
                .post_form(&format!("{issuer}/interaction/{uid}/login"), &[("login", user), ("password", password)])
                .await;
            assert_eq!(signed_in.status(), 303, "{}", signed_in.text().await.unwrap());
            let resume = signed_in.headers()["location"].to_str().unwrap().to_owned();
            let back = self.get(&resume).await;
            assert_eq!(back.status(), 303, "{}", back.text().await.unwrap());
            location = back.headers()["location"].to_str().unwrap().to_owned();
        }
        assert!(location.starts_with(PUBLIC), "{location}");
        location
    }

    /// A whole login: the callback's answer.
    async fn login(&mut self, provider: &str, user: &str, password: &str) -> reqwest::Response {
        let authorize = self.start(provider, None).await;
        let callback = self.authorize(&authorize, user, password).await;
        self.get(&callback).await
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A query parameter of a URL.
fn param(url: &str, name: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).unwrap().1.into_owned()
}

/// The tokens of a successful callback.
async fn tokens(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let cache = resp.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(body["token_type"], "bearer");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("rt_"));
    body
}

async fn me(gw: &rampart::Gateway, access: &str) -> Value {
    let r = client().get(url(gw, "/auth/me")).bearer_auth(access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn password_token(gw: &rampart::Gateway, user: &str, password: &str) -> (u16, Value) {
    token_request(gw, &[("grant_type", "password"), ("username", user), ("password", password)]).await
}

fn access(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}

async fn audit_events(gw: &rampart::Gateway, file: &std::path::Path) -> Vec<Value> {
    gw.audit.flush().await;
    std::fs::read_to_string(file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Runs `sql` with one text parameter on the test database.
async fn execute(db: &TestDb, sql: &str, value: &str) -> u64 {
    match db.open().await {
        rampart::store::Database::Sqlite(pool) => {
            sqlx::query(sql).bind(value).execute(&pool).await.unwrap().rows_affected()
        }
        rampart::store::Database::Postgres(pool) => {
            sqlx::query(sql).bind(value).execute(&pool).await.unwrap().rows_affected()
        }
    }
}

/// A first login makes a user (no password, the verified address, the
/// provider's username) whose token works on a protected route; later logins
/// reach the same user; password guesses for it fail without locking it.
async fn first_login_flow(db: &TestDb) {
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let providers = provider("test", "rampart-test", &issuer, "display_name = 'Test OP'")
        + &provider("post", "rampart-post", &issuer, "token_endpoint_auth_method = 'client_secret_post'");
    let gw = gateway(&config(db, up, &audit, &providers)).await;

    let listed: Value = client().get(url(&gw, "/auth/oidc/providers")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["providers"][1]["display_name"], "Test OP", "{listed}");
    assert_eq!(listed["providers"][0]["login_url"], "/auth/oidc/post/login", "{listed}");

    let mut browser = Browser::new(&gw);
    let authorize = browser.start("test", Some("/app?tab=1")).await;
    // The authorization request: code flow, PKCE S256, fresh state and nonce.
    assert!(authorize.starts_with(&format!("{issuer}/auth?")), "{authorize}");
    assert_eq!(param(&authorize, "response_type"), "code");
    assert_eq!(param(&authorize, "client_id"), "rampart-test");
    assert_eq!(param(&authorize, "redirect_uri"), format!("{PUBLIC}/auth/oidc/test/callback"));
    assert_eq!(param(&authorize, "scope"), "openid email profile");
    assert_eq!(param(&authorize, "code_challenge_method"), "S256");
    assert_eq!(param(&authorize, "code_challenge").len(), 43);
    assert!(param(&authorize, "state").len() >= 43 && param(&authorize, "nonce").len() >= 43);
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    let first = tokens(browser.get(&callback).await).await;
    assert_eq!(first["return_to"], "/app?tab=1");

    let access_token = access(&first);
    let upstream: Value =
        client().get(url(&gw, "/api/x")).bearer_auth(&access_token).send().await.unwrap().json().await.unwrap();
    let alice = me(&gw, &access_token).await;
    assert_eq!(upstream["headers"]["x-rampart-user"], alice["id"], "{upstream}");
    assert_eq!(alice["username"], "alice");
    assert_eq!(alice["email"], "alice@example.com");

    // Again, in another browser and through the other client: the same user
    // only through the provider name it was linked with.
    let again = tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;
    assert_eq!(me(&gw, &access(&again)).await["id"], alice["id"]);
    let other = tokens(Browser::new(&gw).login("post", "alice", "alice-password").await).await;
    let other_user = me(&gw, &access(&other)).await;
    assert_ne!(other_user["id"], alice["id"], "a different provider is a different account");
    assert_ne!(other_user["username"], "alice", "usernames are made unique");
    assert_eq!(other_user["email"], Value::Null, "the address belongs to the first account");

    // The provider remembers the browser: no login form the second time.
    let remembered = browser.start("test", None).await;
    let callback = browser.authorize(&remembered, "nobody", "-").await;
    assert_eq!(me(&gw, &access(&tokens(browser.get(&callback).await).await)).await["id"], alice["id"]);

    // No password: every guess fails alike, and none locks the account.
    for _ in 0..7 {
        let (status, body) = password_token(&gw, "alice", PASSWORD).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    }
    let (status, body) = password_token(&gw, "alice", "").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;

    let links: Value = client()
        .get(url(&gw, "/auth/oidc/links"))
        .bearer_auth(&access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(links["links"].as_array().unwrap().len(), 1, "{links}");
    assert_eq!(links["links"][0]["provider"], "test");
    assert_eq!(links["links"][0]["display_name"], "Test OP");
    assert!(links["links"][0]["last_login_at"].as_u64().is_some());

    // Alice has nothing to prove herself with, so linking another provider
    // takes a recent sign-in: a login's token has one, a refreshed token
    // (which a stolen refresh token would mint) does not.
    let link = format!("{PUBLIC}/auth/oidc/post/link");
    let rt = first["refresh_token"].as_str().unwrap();
    let (status, refreshed) = token_request(&gw, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!(status, 200);
    let r = Browser::new(&gw).post_json(&link, &access(&refreshed), Value::Null).await;
    let refused = problem(r, 403).await;
    assert_eq!(refused["type"], "urn:rampart:problem:reauthentication-required", "{refused}");
    // Nor may it enrol an authenticator app (whose codes would then be the
    // proof for everything else) or take the provider away.
    let r = Browser::new(&gw).post_json(&format!("{PUBLIC}/auth/mfa/totp"), &access(&refreshed), Value::Null).await;
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:reauthentication-required");
    let r = client().delete(url(&gw, "/auth/oidc/links/test")).bearer_auth(access(&refreshed)).send().await.unwrap();
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:reauthentication-required");
    let r = Browser::new(&gw).post_json(&link, &access_token, Value::Null).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let events = audit_events(&gw, &audit).await;
    let text = events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(text.contains("external_identity_changed") && text.contains("\"created\""), "{text}");
    assert!(events.iter().any(|e| e["kind"] == "auth_success" && e.to_string().contains("\"oidc\"")), "{text}");
    assert!(text.contains("no_password"), "{text}");
    assert!(!text.contains("alice@example.com") && !text.contains("ext-alice"), "no profile data in the audit log");
    gw.shutdown();
    gw.wait().await;
}

/// Marks a local user's address as verified (as an administrator would).
async fn verify_email(db: &TestDb, username: &str) {
    assert_eq!(execute(db, "UPDATE users SET email_verified = TRUE WHERE username = $1", username).await, 1);
}

/// `link_by_verified_email`: off, a login never joins a local account; on, it
/// does when both the provider and the local account have the address
/// verified; `create_users = false` refuses logins that match no account.
async fn email_link_flow(db: &TestDb) {
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let providers = provider("test", "rampart-test", &issuer, "")
        + &provider("post", "rampart-post", &issuer, "link_by_verified_email = true\ncreate_users = false");
    let gw = gateway(&config(db, up, &audit, &providers)).await;
    assert_eq!(register_with_email(&gw, "alice", Some("alice@example.com"), PASSWORD).await.status(), 201);
    assert_eq!(register_with_email(&gw, "bob", Some("bob@example.com"), PASSWORD).await.status(), 201);
    let (_, local) = password_token(&gw, "alice", PASSWORD).await;
    let local_alice = me(&gw, &access(&local)).await;

    // Off (`test`): a new account, even with the address verified on both sides.
    verify_email(db, "alice").await;
    let off = tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;
    let created = me(&gw, &access(&off)).await;
    assert_ne!(created["id"], local_alice["id"]);
    assert!(created["username"].as_str().unwrap().starts_with("alice-"), "{created}");

    // On (`post`), the local address unverified: not linked, and no account may be made.
    execute(db, "UPDATE users SET email_verified = FALSE WHERE username = $1", "alice").await;
    let refused = Browser::new(&gw).login("post", "alice", "alice-password").await;
    let body = problem(refused, 403).await;
    assert_eq!(body["type"], "urn:rampart:problem:no-account");

    // On, both verified: linked to the local account.
    verify_email(db, "alice").await;
    let linked = tokens(Browser::new(&gw).login("post", "alice", "alice-password").await).await;
    assert_eq!(me(&gw, &access(&linked)).await["id"], local_alice["id"]);
    // The password still works for it.
    assert_eq!(password_token(&gw, "alice", PASSWORD).await.0, 200);

    // The provider does not vouch for bob's address: no link, however verified locally.
    verify_email(db, "bob").await;
    let bob = Browser::new(&gw).login("post", "bob", "bob-password").await;
    assert_eq!(problem(bob, 403).await["type"], "urn:rampart:problem:no-account");

    let text = audit_events(&gw, &audit).await.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(text.contains("linked_by_email") && text.contains("no_account"), "{text}");
    gw.shutdown();
    gw.wait().await;
}

/// A signed-in user links a provider account, then signs in through it;
/// it cannot be linked to a second user; unlinking works, except for the
/// last way to sign in.
async fn explicit_link_flow(db: &TestDb) {
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&config(db, up, &audit, &provider("test", "rampart-test", &issuer, ""))).await;
    assert_eq!(register_with_email(&gw, "dora", None, PASSWORD).await.status(), 201);
    let (_, dora_tokens) = password_token(&gw, "dora", PASSWORD).await;
    let dora = access(&dora_tokens);
    let dora_id = me(&gw, &dora).await["id"].clone();

    // Linking needs a signed-in user.
    let mut browser = Browser::new(&gw);
    let anonymous = browser.post_json(&format!("{PUBLIC}/auth/oidc/test/link"), "not-a-token", Value::Null).await;
    assert_eq!(anonymous.status(), 401);
    // A token alone links nothing: it takes the same proof as removing a
    // passkey (400 without one, 403 with a wrong password, counted as a
    // failure).
    let link = format!("{PUBLIC}/auth/oidc/test/link");
    let r = browser.post_json(&link, &dora, serde_json::json!({"return_to": "/settings"})).await;
    assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:bad-request");
    let r = browser.post_json(&link, &dora, Value::Null).await;
    assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:bad-request");
    let wrong = serde_json::json!({"return_to": "/settings", "password": "not the password"});
    let r = browser.post_json(&link, &dora, wrong).await;
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:invalid-credentials");
    let events = audit_events(&gw, &audit).await;
    let failed = |e: &&Value| e["kind"] == "auth_failure" && e.to_string().contains("\"password\"");
    assert_eq!(events.iter().filter(failed).count(), 1, "the wrong password was audited");
    let started =
        browser.post_json(&link, &dora, serde_json::json!({"return_to": "/settings", "password": PASSWORD})).await;
    assert_eq!(started.status(), 200);
    assert!(started.headers()["set-cookie"].to_str().unwrap().starts_with("__Host-rampart-oidc="));
    let authorize = started.json::<Value>().await.unwrap()["authorize_url"].as_str().unwrap().to_owned();
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    let linked = tokens(browser.get(&callback).await).await;
    assert_eq!(linked["return_to"], "/settings");
    assert_eq!(me(&gw, &access(&linked)).await["id"], dora_id);

    // From now on the provider account signs in as dora.
    let login = tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;
    assert_eq!(me(&gw, &access(&login)).await["id"], dora_id);

    // Another user cannot take it over.
    assert_eq!(register_with_email(&gw, "erin", None, PASSWORD).await.status(), 201);
    let (_, erin_tokens) = password_token(&gw, "erin", PASSWORD).await;
    let mut erins = Browser::new(&gw);
    let with_password = serde_json::json!({"password": PASSWORD});
    let started = erins.post_json(&link, &access(&erin_tokens), with_password.clone()).await;
    let authorize = started.json::<Value>().await.unwrap()["authorize_url"].as_str().unwrap().to_owned();
    let callback = erins.authorize(&authorize, "alice", "alice-password").await;
    assert_eq!(problem(erins.get(&callback).await, 409).await["type"], "urn:rampart:problem:already-linked");

    // A user locked while the link was under way gets no link.
    let mut locked_browser = Browser::new(&gw);
    let started = locked_browser.post_json(&link, &access(&erin_tokens), with_password).await;
    let authorize = started.json::<Value>().await.unwrap()["authorize_url"].as_str().unwrap().to_owned();
    let erin_id = me(&gw, &access(&erin_tokens)).await["id"].as_str().unwrap().to_owned();
    {
        use rampart::store::identity::UserStore as _;
        let now =
            u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
                .unwrap();
        db.open().await.lock_user(&erin_id, now + 600_000, now).await.unwrap();
    }
    let callback = locked_browser.authorize(&authorize, "bob", "bob-password").await;
    let refused = locked_browser.get(&callback).await;
    assert_eq!(problem(refused, 403).await["type"], "urn:rampart:problem:account-locked");
    let bob = tokens(Browser::new(&gw).login("test", "bob", "bob-password").await).await;
    assert_ne!(me(&gw, &access(&bob)).await["id"], erin_id.as_str(), "bob's account was not linked to erin");

    // Dora has a password: the link may go. Afterwards the provider account is a stranger.
    let delete = |token: String, provider: &'static str| {
        let gw_url = url(&gw, &format!("/auth/oidc/links/{provider}"));
        async move { client().delete(gw_url).bearer_auth(token).send().await.unwrap() }
    };
    assert_eq!(problem(delete(dora.clone(), "nope").await, 404).await["status"], 404);
    assert_eq!(delete(dora.clone(), "test").await.status(), 204);
    let stranger = tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;
    let stranger_token = access(&stranger);
    assert_ne!(me(&gw, &stranger_token).await["id"], dora_id);

    // That new account has no password and no other login: its link stays.
    let last = delete(stranger_token.clone(), "test").await;
    assert_eq!(problem(last, 409).await["type"], "urn:rampart:problem:last-sign-in-method");
    let links: Value = client()
        .get(url(&gw, "/auth/oidc/links"))
        .bearer_auth(&stranger_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(links["links"].as_array().unwrap().len(), 1);

    let text = audit_events(&gw, &audit).await.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    assert!(
        text.contains("\"linked\"") && text.contains("\"unlinked\"") && text.contains("linked_elsewhere"),
        "{text}"
    );
    gw.shutdown();
    gw.wait().await;
}

/// Everything that must be refused: forged, spent and foreign-browser states,
/// a replayed code, a wrong nonce, a wrong audience, open redirects, a locked
/// user, a cancelled login.
async fn refusal_flow(db: &TestDb) {
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let providers =
        provider("test", "rampart-test", &issuer, "") + &provider("wrongaud", "rampart-wrong-aud", &issuer, "");
    let gw = gateway(&config(db, up, &audit, &providers)).await;
    let mut browser = Browser::new(&gw);

    // Open redirects: refused before anything is stored or sent anywhere.
    for bad in
        ["//evil.example/x", "https://evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example", "evil"]
    {
        let r = browser.get(&format!("{PUBLIC}/auth/oidc/test/login?return_to={}", urlencode(bad))).await;
        assert!(r.headers().get("location").is_none());
        assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:bad-return-to", "{bad:?}");
    }
    let (_, dora) = {
        assert_eq!(register_with_email(&gw, "dora", None, PASSWORD).await.status(), 201);
        password_token(&gw, "dora", PASSWORD).await
    };
    let r = browser
        .post_json(
            &format!("{PUBLIC}/auth/oidc/test/link"),
            &access(&dora),
            serde_json::json!({"return_to": "//evil", "password": PASSWORD}),
        )
        .await;
    assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:bad-return-to");
    let r = browser.get(&format!("{PUBLIC}/auth/oidc/nope/login")).await;
    assert_eq!(problem(r, 404).await["status"], 404);

    // A forged state.
    let invalid_state = |r: reqwest::Response| async move {
        assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:invalid-state");
    };
    invalid_state(browser.get(&format!("{PUBLIC}/auth/oidc/test/callback?code=x&state=forged")).await).await;
    invalid_state(browser.get(&format!("{PUBLIC}/auth/oidc/test/callback?code=x")).await).await;

    // A real callback opened in another browser (no binding cookie) is refused,
    // and spends the login.
    let authorize = browser.start("test", None).await;
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    invalid_state(Browser::new(&gw).get(&callback).await).await;
    invalid_state(browser.get(&callback).await).await;

    // A successful callback cannot be replayed.
    let authorize = browser.start("test", None).await;
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    let first = tokens(browser.get(&callback).await).await;
    invalid_state(browser.get(&callback).await).await;

    // Its code with a fresh login's state: the provider refuses the spent code.
    let fresh = browser.start("test", None).await;
    let replay = format!(
        "{PUBLIC}/auth/oidc/test/callback?code={}&state={}&iss={}",
        urlencode(&param(&callback, "code")),
        urlencode(&param(&fresh, "state")),
        urlencode(&issuer)
    );
    let body = problem(browser.get(&replay).await, 400).await;
    assert_eq!(body["type"], "urn:rampart:problem:external-login-failed");
    assert!(body["detail"].as_str().unwrap().contains("invalid_grant"), "{body}");

    // A callback that names another issuer (RFC 9207 mix-up).
    let authorize = browser.start("test", None).await;
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    let mixed = callback.replace(&format!("iss={}", urlencode(&issuer)), "iss=https%3A%2F%2Fevil.example");
    assert_ne!(mixed, callback);
    assert_eq!(problem(browser.get(&mixed).await, 400).await["type"], "urn:rampart:problem:external-login-failed");

    // The wrong nonce: the pending login's nonce no longer matches the ID token's.
    let authorize = browser.start("test", None).await;
    let changed = execute(db, "UPDATE oidc_pending_logins SET nonce = $1", "not-the-nonce-sent").await;
    assert_eq!(changed, 1, "exactly the login just started is pending");
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    assert_eq!(problem(browser.get(&callback).await, 401).await["type"], "urn:rampart:problem:id-token-refused");

    // The wrong audience: a properly signed ID token issued to someone else.
    let r = browser.login("wrongaud", "alice", "alice-password").await;
    assert_eq!(problem(r, 401).await["type"], "urn:rampart:problem:id-token-refused");

    // The user cancels at the provider (a browser it does not know yet).
    let mut cancelling = Browser::new(&gw);
    let authorize = cancelling.start("test", None).await;
    let page = cancelling.get(&authorize).await;
    let interaction = page.headers()["location"].to_str().unwrap().to_owned();
    let cancelled = cancelling.post_form(&format!("{issuer}{interaction}/abort"), &[]).await;
    assert_eq!(cancelled.status(), 303);
    let back = cancelling.get(cancelled.headers()["location"].to_str().unwrap()).await;
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let body = problem(cancelling.get(&callback).await, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("access_denied"), "{body}");

    // A locked user cannot sign in this way.
    {
        use rampart::store::identity::UserStore as _;
        let alice_id = me(&gw, &access(&first)).await["id"].as_str().unwrap().to_owned();
        let now =
            u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
                .unwrap();
        db.open().await.lock_user(&alice_id, now + 600_000, now).await.unwrap();
    }
    let r = Browser::new(&gw).login("test", "alice", "alice-password").await;
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:account-locked");

    let events = audit_events(&gw, &audit).await;
    let failures: Vec<String> = events.iter().filter(|e| e["kind"] == "auth_failure").map(Value::to_string).collect();
    let text = failures.join("\n");
    for reason in [
        "unknown_state",
        "missing_state",
        "browser_mismatch",
        "code_refused",
        "issuer_mismatch",
        "id_token_wrong_nonce",
        "id_token_wrong_audience",
        "provider_error",
        "locked",
    ] {
        assert!(text.contains(reason), "no audited {reason}: {text}");
    }
    assert!(!text.contains(&param(&callback, "state")), "no states in the audit log");
    gw.shutdown();
    gw.wait().await;
}

/// A user with a second factor gets the `mfa_required` step after the
/// provider, as after a password.
async fn mfa_flow(db: &TestDb) {
    use rampart_core::totp::{code_at, secret_from_base32, STEP_SECS};
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let gw = gateway(&config(db, up, &audit, &provider("test", "rampart-test", &issuer, ""))).await;
    let first = tokens(Browser::new(&gw).login("test", "alice", "alice-password").await).await;
    let token = access(&first);

    let r = client().post(url(&gw, "/auth/mfa/totp")).bearer_auth(&token).json(&Value::Null).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let secret = secret_from_base32(r.json::<Value>().await.unwrap()["secret"].as_str().unwrap()).unwrap();
    let step = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / STEP_SECS;
    let r = client()
        .post(url(&gw, "/auth/mfa/totp/confirm"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"code": code_at(&secret, step)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let backup = r.json::<Value>().await.unwrap()["backup_codes"][0].as_str().unwrap().to_owned();

    let r = Browser::new(&gw).login("test", "alice", "alice-password").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "mfa_required", "{body}");
    assert!(body.get("access_token").is_none());
    let (status, done) = token_request(
        &gw,
        &[
            ("grant_type", "urn:rampart:params:oauth:grant-type:mfa-otp"),
            ("mfa_token", body["mfa_token"].as_str().unwrap()),
            ("otp", &backup),
        ],
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(me(&gw, &access(&done)).await["id"], me(&gw, &token).await["id"]);
    gw.shutdown();
    gw.wait().await;
}

on_both_backends!(sqlite_external_identity_store, postgres_external_identity_store, store_flow);

/// The store under the flow (no provider needed): logins in progress are
/// single use and expire; links are unique both ways; the last way to sign
/// in is never unlinked; hostile input gets typed errors.
async fn store_flow(tdb: &TestDb) {
    use rampart::store::identity::{
        ExternalIdentity, ExternalIdentityStore, NewUser, PendingLogin, StoreError, TokenHash, Unlinked, UserStore,
    };
    let db = tdb.open().await;
    let a = db.create_user(&NewUser::named("a"), 1).await.unwrap();
    let mut with_password = NewUser::named("b");
    with_password.password_hash = Some(rampart_core::config::secret::Secret::new("$argon2id$v=19$m=4096,t=1,p=1$x$y"));
    let b = db.create_user(&with_password, 1).await.unwrap();

    let pending = |state: &str, expires_at: u64, user: Option<&str>| PendingLogin {
        state_hash: TokenHash::of(state),
        provider: "op".into(),
        browser_hash: TokenHash::of("browser"),
        nonce: "nonce-1".into(),
        return_to: "/back".into(),
        link_user_id: user.map(str::to_owned),
        client: None,
        created_at: 1_000,
        expires_at,
    };
    assert_eq!(db.insert_pending_login(&pending("s1", 2_000, Some(&a.id))).await.unwrap(), Ok(()));
    let taken = db.take_pending_login(&TokenHash::of("s1"), 1_500).await.unwrap().unwrap();
    assert_eq!((taken.provider.as_str(), taken.nonce.as_str(), taken.return_to.as_str()), ("op", "nonce-1", "/back"));
    assert_eq!((taken.browser_hash, taken.link_user_id.as_deref()), (TokenHash::of("browser"), Some(a.id.as_str())));
    assert!(db.take_pending_login(&TokenHash::of("s1"), 1_500).await.unwrap().is_none(), "single use");
    db.insert_pending_login(&pending("s2", 2_000, None)).await.unwrap().unwrap();
    assert!(db.take_pending_login(&TokenHash::of("s2"), 2_000).await.unwrap().is_none(), "expired");
    assert!(db.take_pending_login(&TokenHash::of("s2"), 1_000).await.unwrap().is_none(), "and gone");
    assert!(db.insert_pending_login(&pending("s3", 2_000, Some("no-such-user"))).await.is_err());
    let mut long = pending("s4", 2_000, None);
    long.return_to = format!("/{}", "x".repeat(5000));
    assert!(matches!(db.insert_pending_login(&long).await, Err(StoreError::TooLong { field: "return_to", .. })));
    // A client's 17th pending login pushes out its own oldest; another
    // client's stays.
    let from = |state: &str, client: &str, created_at: u64| PendingLogin {
        client: Some(client.into()),
        created_at,
        ..pending(state, 90_000, None)
    };
    db.insert_pending_login(&from("other", "192.0.2.1", 1_000)).await.unwrap().unwrap();
    for i in 0..17 {
        db.insert_pending_login(&from(&format!("c{i}"), "198.51.100.9", 1_001 + i)).await.unwrap().unwrap();
    }
    assert!(db.take_pending_login(&TokenHash::of("c0"), 1_500).await.unwrap().is_none(), "pushed out");
    let kept = db.take_pending_login(&TokenHash::of("c1"), 1_500).await.unwrap().unwrap();
    assert_eq!(kept.client.as_deref(), Some("198.51.100.9"));
    assert!(db.take_pending_login(&TokenHash::of("c16"), 1_500).await.unwrap().is_some());
    assert!(db.take_pending_login(&TokenHash::of("other"), 1_500).await.unwrap().is_some());

    let link = |user: &str, provider: &str, subject: &str| ExternalIdentity {
        provider: provider.into(),
        subject: subject.into(),
        user_id: user.into(),
        email: Some("a@example.com".into()),
        created_at: 5,
        last_login_at: None,
    };
    db.link_external_identity(&link(&a.id, "op", "sub-1")).await.unwrap();
    let taken = db.link_external_identity(&link(&b.id, "op", "sub-1")).await.unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { field: "subject" }), "{taken:?}");
    let second = db.link_external_identity(&link(&a.id, "op", "sub-2")).await.unwrap_err();
    assert!(matches!(second, StoreError::Conflict { field: "provider" }), "{second:?}");
    let ghost = db.link_external_identity(&link("no-such-user", "op", "sub-9")).await.unwrap_err();
    assert!(matches!(ghost, StoreError::NotFound { what: "user" }), "{ghost:?}");
    let huge = db.link_external_identity(&link(&a.id, "op", &"s".repeat(300))).await.unwrap_err();
    assert!(matches!(huge, StoreError::TooLong { field: "subject", .. }), "{huge:?}");
    db.link_external_identity(&link(&a.id, "other", "sub-1")).await.unwrap();
    db.record_external_login("op", "sub-1", 77).await.unwrap();
    let found = db.external_identity("op", "sub-1").await.unwrap().unwrap();
    assert_eq!((found.user_id.as_str(), found.last_login_at), (a.id.as_str(), Some(77)));
    assert!(db.external_identity("op", "sub\0-1").await.unwrap().is_none());
    let mine: Vec<String> = db.external_identities_of(&a.id).await.unwrap().into_iter().map(|l| l.provider).collect();
    assert_eq!(mine, ["op", "other"]);

    // `a` has no password: one link may go, the last may not.
    assert_eq!(db.unlink_external_identity(&a.id, "op", true).await.unwrap(), Unlinked::Removed);
    assert_eq!(db.unlink_external_identity(&a.id, "op", true).await.unwrap(), Unlinked::NotLinked);
    assert_eq!(db.unlink_external_identity(&a.id, "other", true).await.unwrap(), Unlinked::LastWayToSignIn);
    // `b` has a password: its only link may go.
    db.link_external_identity(&link(&b.id, "op", "sub-3")).await.unwrap();
    assert_eq!(db.unlink_external_identity(&b.id, "op", false).await.unwrap(), Unlinked::Removed);

    // Deleting a user deletes its links.
    assert!(db.delete_user(&a.id).await.unwrap());
    assert!(db.external_identity("other", "sub-1").await.unwrap().is_none());
    db.close().await;
}

on_both_backends!(sqlite_oidc_login_ends_in_a_session, postgres_oidc_login_ends_in_a_session, session_flow);

/// With browser sessions on, an external login ends in a session cookie and
/// a redirect to `return_to`; the cookie then authenticates like any session.
async fn session_flow(db: &TestDb) {
    let Some(issuer) = issuer() else { return };
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let providers = provider("test", "rampart-test", &issuer, "");
    let text = config(db, up, &audit, &providers)
        .replace("[identity.password.argon2]", "[identity.sessions]\nenabled = true\n[identity.password.argon2]");
    let gw = gateway(&text).await;
    let mut browser = Browser::new(&gw);
    let authorize = browser.start("test", Some("/app/home")).await;
    let callback = browser.authorize(&authorize, "alice", "alice-password").await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/app/home");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__Host-rampart_session="))
        .expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("Secure"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let seen: Value =
        client().get(url(&gw, "/api/x")).header("cookie", &pair).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["headers"]["x-rampart-auth-method"], "session");
    let session: Value =
        client().get(url(&gw, "/auth/session")).header("cookie", &pair).send().await.unwrap().json().await.unwrap();
    assert_eq!(session["session"]["amr"], serde_json::json!(["ext"]));

    // The account has no password: within 10 minutes of signing in, the
    // session may link another provider; later it must sign in again.
    let link = |pair: &str| {
        client()
            .post(url(&gw, "/auth/oidc/test/link"))
            .header("cookie", pair)
            .header("origin", format!("http://{}", gw.addr))
            .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
            .json(&Value::Null)
            .send()
    };
    let r = link(&pair).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    gw.identity().unwrap().sessions.as_ref().unwrap().clock.advance(std::time::Duration::from_secs(11 * 60));
    let refused = problem(link(&pair).await.unwrap(), 403).await;
    assert_eq!(refused["type"], "urn:rampart:problem:reauthentication-required", "{refused}");
    // Nor does retyping the username erase the account any more.
    let erase = client()
        .delete(url(&gw, "/auth/me"))
        .header("cookie", &pair)
        .header("origin", format!("http://{}", gw.addr))
        .header("x-csrf-token", session["csrf_token"].as_str().unwrap())
        .json(&serde_json::json!({"confirm": session["user"]["username"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(erase, 403).await["type"], "urn:rampart:problem:reauthentication-required");
}
