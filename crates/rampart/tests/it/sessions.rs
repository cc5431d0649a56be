//! Browser sessions and CSRF end to end, on SQLite, PostgreSQL and Redis:
//! the session cookie's attributes, a session-authenticated request reaching
//! the upstream with the same identity headers as a token, CSRF refusals
//! (no token, a forged one, one of another session, a cross-site form post,
//! a stale `Origin`), list and revoke, revoke-all, fixation, idle and
//! absolute timeouts on an injected clock, sliding renewal, a new session id
//! on a privilege change, survival across restart and reload, the exchange
//! for a short-lived JWT, and hostile cookies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, register_with_email, PASSWORD};
use serde_json::Value;

const COOKIE: &str = "__Host-rampart_session";
const SESSIONS: &str = "[identity.sessions]\nenabled = true\nallowed_origins = ['https://app.example.test']\n";

fn session_config(up: std::net::SocketAddr, db: &str, extra: &str) -> String {
    let base = identity_config(up, db);
    // Before the first route table: a table after `[[routes]]` would belong to it.
    let at = base.find("[upstreams.default]").unwrap();
    let mut text = base.clone();
    text.insert_str(at, &format!("{SESSIONS}{extra}"));
    text.push_str("[[routes]]\npath = '/maybe/**'\nauth = 'optional'\n");
    // `/maybe/**` after `/**` would never match: put it first.
    let routes_at = text.find("[[routes]]").unwrap();
    let tail = text.split_off(routes_at);
    let (routes, maybe) = tail.split_at(tail.find("[[routes]]\npath = '/maybe/**'").unwrap());
    format!("{text}{maybe}{routes}")
}

/// A browser of our own: the cookies it was given, sent back by hand (the
/// session cookie is `Secure`, which cookie jars keep off plain http).
#[derive(Default, Clone)]
struct Browser {
    session: Option<String>,
    csrf: Option<String>,
    agent: String,
}

impl Browser {
    fn new(agent: &str) -> Self {
        Self { agent: agent.into(), ..Default::default() }
    }

    fn cookie_header(&self) -> String {
        let mut parts = vec!["theme=dark".to_string()];
        if let Some(s) = &self.session {
            parts.push(format!("{COOKIE}={s}"));
        }
        parts.join("; ")
    }

    fn take_cookies(&mut self, resp: &reqwest::Response) {
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = pair.split_once('=').unwrap();
            let val = (!val.is_empty()).then(|| val.to_string());
            if k == COOKIE {
                self.session = val;
            } else if k == "__Host-rampart_csrf" {
                self.csrf = val;
            }
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        client().request(method, url).header("cookie", self.cookie_header()).header("user-agent", &self.agent)
    }

    async fn login(&mut self, gw: &rampart::Gateway, user: &str) -> reqwest::Response {
        let r = self
            .req(reqwest::Method::POST, &url(gw, "/auth/session"))
            .form(&[("grant_type", "password"), ("username", user), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        self.take_cookies(&r);
        r
    }

    async fn get(&mut self, gw: &rampart::Gateway, path: &str) -> reqwest::Response {
        let r = self.req(reqwest::Method::GET, &url(gw, path)).send().await.unwrap();
        self.take_cookies(&r);
        r
    }

    /// A POST with the CSRF header, as a page of ours sends it.
    async fn post(&mut self, gw: &rampart::Gateway, path: &str) -> reqwest::Response {
        let r = self
            .req(reqwest::Method::POST, &url(gw, path))
            .header("x-csrf-token", self.csrf.clone().unwrap_or_default())
            .header("sec-fetch-site", "same-origin")
            .send()
            .await
            .unwrap();
        self.take_cookies(&r);
        r
    }
}

async fn sign_up(gw: &rampart::Gateway, name: &str) -> String {
    let r = register_with_email(gw, name, None, PASSWORD).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

on_both_backends!(sqlite_session_login_and_csrf, postgres_session_login_and_csrf, login_and_csrf);
on_both_backends!(sqlite_sessions_listed_and_revoked, postgres_sessions_listed_and_revoked, list_and_revoke);
on_both_backends!(sqlite_session_fixation_is_defeated, postgres_session_fixation_is_defeated, fixation);
on_both_backends!(sqlite_session_timeouts, postgres_session_timeouts, timeouts);
on_both_backends!(sqlite_sessions_survive_restart, postgres_sessions_survive_restart, restart_and_privileges);

/// Login, the cookie's attributes, the identity the upstream sees, and every
/// CSRF refusal, with their audit events.
async fn login_and_csrf(db: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let text = session_config(up, &db.url, "")
        .replace("[audit]\nenabled = false", &format!("[audit]\nenabled = true\nfile = '{}'", audit.display()));
    let gw = gateway(&text).await;
    let ann = sign_up(&gw, "ann").await;

    let mut b = Browser::new("Firefox/1");
    let r = b.login(&gw, "ann").await;
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    let session_cookie = cookies.iter().find(|c| c.starts_with(COOKIE)).unwrap();
    for attr in ["Path=/", "HttpOnly", "Secure", "SameSite=Lax", "Max-Age=43200"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Domain"), "{session_cookie}");
    assert_eq!(r.headers().get("cache-control").unwrap(), "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["user"]["id"], ann.as_str());
    assert_eq!(body["csrf_token"].as_str(), b.csrf.as_deref());

    // A session request reaches the upstream as a token request would, with
    // the session cookie stripped and the other cookies kept.
    let seen: Value = b.get(&gw, "/api/me").await.json().await.unwrap();
    assert_eq!(seen["headers"]["x-rampart-user"], ann.as_str());
    assert_eq!(seen["headers"]["x-rampart-auth-method"], "session");
    assert_eq!(seen["headers"]["cookie"], "theme=dark");
    // So does every request: the cookie is the gateway's, also on routes it
    // does not authenticate (here `/**`, no auth).
    let open: Value = b.get(&gw, "/open").await.json().await.unwrap();
    assert!(open["headers"].get("x-rampart-user").is_none(), "{open}");
    assert_eq!(open["headers"]["cookie"], "theme=dark");
    // Forged identity headers never pass.
    let r = b.req(reqwest::Method::GET, &url(&gw, "/api/x")).header("x-rampart-user", "admin").send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-rampart-user"], ann.as_str());

    // A WebSocket handshake needs no token (a page cannot add one), but
    // another site may not open one with the cookie.
    let handshake = |origin: &str| {
        b.req(reqwest::Method::GET, &url(&gw, "/api/ws"))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("origin", origin)
            .send()
    };
    let p = problem(handshake("https://evil.example").await.unwrap(), 403).await;
    assert_eq!(p["type"], "urn:rampart:problem:csrf", "{p}");
    let own = format!("http://{}", gw.addr);
    assert_ne!(handshake(&own).await.unwrap().status(), 403);
    // As a forward-auth check carries a handshake: without the hop-by-hop
    // `Connection`/`Upgrade` (nginx, Traefik drop them), or with `Upgrade`
    // alone. Either is judged as a handshake, not as a plain GET.
    let partial = |header: (&'static str, &'static str)| {
        b.req(reqwest::Method::GET, &url(&gw, "/api/ws"))
            .header(header.0, header.1)
            .header("origin", "https://evil.example")
            .send()
    };
    for header in [("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="), ("upgrade", "websocket")] {
        let p = problem(partial(header).await.unwrap(), 403).await;
        assert_eq!(p["type"], "urn:rampart:problem:csrf", "{header:?}: {p}");
    }

    // Unsafe methods need the token.
    let post = |b: &Browser| b.req(reqwest::Method::POST, &url(&gw, "/api/orders"));
    let p = problem(post(&b).send().await.unwrap(), 403).await;
    assert_eq!(p["type"], "urn:rampart:problem:csrf", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("CSRF token is required"), "{p}");
    let p = problem(post(&b).header("x-csrf-token", "AAAAAAAAAAAAAAAAAAAAAA.forged").send().await.unwrap(), 403).await;
    assert!(p["detail"].as_str().unwrap().contains("not valid"), "{p}");
    // A token of another session does not fit this one.
    sign_up(&gw, "mallory").await;
    let mut m = Browser::new("curl");
    m.login(&gw, "mallory").await;
    let r = post(&b).header("x-csrf-token", m.csrf.clone().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // The right token passes; so does it in a form field, and the form
    // reaches the upstream whole.
    let ok = post(&b).header("x-csrf-token", b.csrf.clone().unwrap()).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let form = format!("item=book&csrf_token={}&note=%3Cok%3E", b.csrf.clone().unwrap());
    let r =
        post(&b).header("content-type", "application/x-www-form-urlencoded").body(form.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body_bytes"], form.len());
    // A cross-site form post, as an attacker's page makes it: no token.
    let r = post(&b)
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("item=car")
        .send()
        .await
        .unwrap();
    let p = problem(r, 403).await;
    assert!(p["detail"].as_str().unwrap().contains("Origin"), "{p}");
    // Even with a valid token: a foreign or stale Origin, or another site by
    // Fetch Metadata, is refused.
    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "https://old.example.test"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let r = post(&b).header("x-csrf-token", b.csrf.clone().unwrap()).header(name, value).send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    // Our own origin and the allowed one pass.
    let own = format!("http://{}", gw.addr);
    for origin in [own.as_str(), "https://app.example.test"] {
        let r = post(&b).header("x-csrf-token", b.csrf.clone().unwrap()).header("origin", origin).send().await.unwrap();
        assert_eq!(r.status(), 200, "{origin}");
    }
    // Bearer tokens are exempt from CSRF.
    let (status, tokens) =
        crate::identity::token_request(&gw, &[("grant_type", "password"), ("username", "ann"), ("password", PASSWORD)])
            .await;
    assert_eq!(status, 200);
    let bearer = tokens["access_token"].as_str().unwrap();
    let r = client().post(url(&gw, "/api/orders")).bearer_auth(bearer).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // A fresh CSRF token from the endpoint works too; the session endpoint
    // tells who is signed in.
    let r = b.get(&gw, "/auth/csrf").await;
    let fresh = r.json::<Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_string();
    assert_eq!(b.csrf.as_deref(), Some(fresh.as_str()));
    let me: Value = b.get(&gw, "/auth/session").await.json().await.unwrap();
    assert_eq!((me["user"]["username"].as_str(), me["session"]["current"].as_bool()), (Some("ann"), Some(true)));

    // The session buys a short-lived JWT for APIs (a POST: CSRF applies).
    let r = b.req(reqwest::Method::POST, &url(&gw, "/auth/session/token")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = b.post(&gw, "/auth/session/token").await;
    assert_eq!(r.status(), 200);
    let jwt: Value = r.json().await.unwrap();
    assert_eq!(jwt["expires_in"], 300);
    assert!(jwt.get("refresh_token").is_none());
    let r = client().get(url(&gw, "/api/x")).bearer_auth(jwt["access_token"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-rampart-user"], ann.as_str());

    // A flood of the same refusal is one audit event a minute, not one each.
    for _ in 0..20 {
        let r = b.req(reqwest::Method::POST, &url(&gw, "/auth/session/token")).send().await.unwrap();
        assert_eq!(r.status(), 403);
    }

    // Logout ends the session and clears the cookies.
    let r = b.req(reqwest::Method::DELETE, &url(&gw, "/auth/session")).send().await.unwrap();
    assert_eq!(r.status(), 403, "logout is an unsafe method too");
    let old = b.session.clone().unwrap();
    let r = client()
        .delete(url(&gw, "/auth/session"))
        .header("cookie", format!("{COOKIE}={old}"))
        .header("x-csrf-token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().contains("Max-Age=0")));
    let r = client().get(url(&gw, "/api/x")).header("cookie", format!("{COOKIE}={old}")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Every refusal above is in the audit log, by reason.
    let found = eventually(Duration::from_secs(5), || {
        let audit = audit.clone();
        async move {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            ["csrf_token_missing", "csrf_token_invalid", "csrf_origin", "csrf_cross_site"]
                .iter()
                .all(|r| text.lines().any(|l| l.contains("csrf_rejected") && l.contains(r)))
        }
    })
    .await;
    assert!(found, "{}", std::fs::read_to_string(&audit).unwrap_or_default());
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(!text.contains(&old), "no session token in the audit log");
    let missing = text.lines().filter(|l| l.contains("csrf_token_missing") && l.contains(ann.as_str())).count();
    assert_eq!(missing, 1, "{text}");
}

/// Login CSRF: another site's auto-submitted form must not sign the browser
/// in to the attacker's account (by password or passkey), nor end the
/// victim's session through `POST /auth/logout`. Our own origin, the allowed one, and clients that are
/// no browser (no `Origin`, no Fetch Metadata) log in as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_logins_and_logouts_from_other_sites_are_refused() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let passkeys = "[identity.webauthn]\nrp_id = 'api.example.test'\nrp_origin = 'https://api.example.test'\n";
    let gw = gateway(&session_config(up, &db.url, passkeys)).await;
    sign_up(&gw, "mallory").await;
    let form = [("grant_type", "password"), ("username", "mallory"), ("password", PASSWORD)];
    let login = |headers: &[(&'static str, &'static str)]| {
        let mut rb = client().post(url(&gw, "/auth/session")).form(&form);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send()
    };
    let sets_session = |r: &reqwest::Response| {
        r.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with(&format!("{COOKIE}=rs_")))
    };
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("origin", "https://evil.example"), ("sec-fetch-site", "cross-site")],
    ] {
        let r = login(&headers).await.unwrap();
        assert!(!sets_session(&r), "{headers:?}");
        let p = problem(r, 403).await;
        assert_eq!(p["type"], "urn:rampart:problem:csrf", "{headers:?}");
    }
    let own: &'static str = Box::leak(format!("http://{}", gw.addr).into_boxed_str());
    for headers in [
        vec![],
        vec![("origin", own)],
        vec![("origin", "https://app.example.test")],
        vec![("sec-fetch-site", "same-origin")],
        vec![("sec-fetch-site", "none")],
    ] {
        let r = login(&headers).await.unwrap();
        assert_eq!(r.status(), 200, "{headers:?}");
        assert!(sets_session(&r), "{headers:?}");
    }

    // Passkey logins that end in a session are refused before any checking;
    // the same bodies from no browser go on to be checked (and fail here).
    for (path, body) in [
        ("/auth/passkeys/login/finish", serde_json::json!({"session": true, "challenge_id": "x", "credential": {}})),
        ("/auth/mfa/webauthn/finish", serde_json::json!({"session": true, "mfa_token": "x"})),
    ] {
        let send = || client().post(url(&gw, path)).json(&body);
        let p = problem(send().header("origin", "https://evil.example").send().await.unwrap(), 403).await;
        assert_eq!(p["type"], "urn:rampart:problem:csrf", "{path}");
        assert_eq!(send().send().await.unwrap().status(), 400, "{path}");
    }

    // Logout by the session cookie: refused from another site, the session lives on.
    let mut b = Browser::new("Firefox/1");
    assert_eq!(b.login(&gw, "mallory").await.status(), 200);
    let logout = |b: &Browser, origin: Option<&str>| {
        let mut rb = b
            .req(reqwest::Method::POST, &url(&gw, "/auth/logout"))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        rb.send()
    };
    let p = problem(logout(&b, Some("https://evil.example")).await.unwrap(), 403).await;
    assert_eq!(p["type"], "urn:rampart:problem:csrf");
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200, "still signed in");
    assert_eq!(logout(&b, Some(own)).await.unwrap().status(), 204);
    assert_eq!(b.get(&gw, "/api/x").await.status(), 401, "signed out");
}

/// A page's `fetch("/auth/logout", {method: "POST"})` sends the session
/// cookie, the CSRF header and `Origin` but no body and no `Content-Type`:
/// it ends the session (not 400 for the missing form). From another site,
/// the same body-less request is still refused. The logout is audited like
/// any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_less_logout_with_the_session_cookie_ends_the_session() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let audit = dir.path().join("audit.jsonl");
    let text = session_config(up, &db.url, "")
        .replace("[audit]\nenabled = false", &format!("[audit]\nenabled = true\nfile = '{}'", audit.display()));
    assert!(text.contains("audit.jsonl"));
    let gw = gateway(&text).await;
    sign_up(&gw, "nina").await;
    let mut b = Browser::new("Firefox/1");
    assert_eq!(b.login(&gw, "nina").await.status(), 200);
    let own = format!("http://{}", gw.addr);
    let logout = |b: &Browser, origin: &str| {
        b.req(reqwest::Method::POST, &url(&gw, "/auth/logout"))
            .header("x-csrf-token", b.csrf.clone().unwrap_or_default())
            .header("origin", origin)
            .header("sec-fetch-site", if origin == own { "same-origin" } else { "cross-site" })
            .header("sec-fetch-mode", "cors")
            .send()
    };
    let p = problem(logout(&b, "https://evil.example").await.unwrap(), 403).await;
    assert_eq!(p["type"], "urn:rampart:problem:csrf");
    assert_eq!(b.get(&gw, "/auth/me").await.status(), 200, "still signed in");
    let r = logout(&b, &own).await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    assert_eq!(b.get(&gw, "/auth/me").await.status(), 401, "signed out");
    let logged = eventually(Duration::from_secs(5), || {
        let audit = audit.clone();
        async move {
            let text = std::fs::read_to_string(&audit).unwrap_or_default();
            text.lines().any(|l| l.contains("session_changed") && l.contains("\"logout\""))
        }
    })
    .await;
    assert!(logged, "{}", std::fs::read_to_string(&audit).unwrap_or_default());
    // No credential at all is still told what to send.
    let r = client().post(url(&gw, "/auth/logout")).send().await.unwrap();
    assert_eq!(r.status(), 400);
}

/// A user's devices: listed with agent and address, one revoked, all revoked.
async fn list_and_revoke(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&session_config(up, &db.url, "")).await;
    let ann = sign_up(&gw, "ann").await;
    let (mut laptop, mut phone) = (Browser::new("Laptop/1.0"), Browser::new("Phone/2.0"));
    laptop.login(&gw, "ann").await;
    phone.login(&gw, "ann").await;

    let list: Value = laptop.get(&gw, "/auth/sessions").await.json().await.unwrap();
    let list = list["sessions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "Laptop/1.0");
    assert_eq!(current[0]["ip"], "127.0.0.1");
    let phone_id = list.iter().find(|s| s["user_agent"] == "Phone/2.0").unwrap()["id"].as_str().unwrap().to_string();

    // Revoking needs CSRF with a cookie; another user's id is not found.
    let r = laptop.req(reqwest::Method::DELETE, &url(&gw, &format!("/auth/sessions/{phone_id}"))).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let delete = |b: &Browser, path: String| {
        b.req(reqwest::Method::DELETE, &url(&gw, &path)).header("x-csrf-token", b.csrf.clone().unwrap()).send()
    };
    assert_eq!(delete(&laptop, format!("/auth/sessions/{phone_id}")).await.unwrap().status(), 204);
    assert_eq!(phone.get(&gw, "/api/x").await.status(), 401);
    assert_eq!(delete(&laptop, format!("/auth/sessions/{phone_id}")).await.unwrap().status(), 404);
    assert_eq!(delete(&laptop, "/auth/sessions/not-a-session".into()).await.unwrap().status(), 404);
    // The guards refuse an encoded slash before any lookup.
    assert_eq!(delete(&laptop, "/auth/sessions/..%2F..%2Fetc".into()).await.unwrap().status(), 400);
    assert_eq!(laptop.get(&gw, "/api/x").await.status(), 200);

    // A bearer token lists and revokes too (no CSRF for bearer requests):
    // revoke-all ends every session, the laptop's included.
    let (_, tokens) =
        crate::identity::token_request(&gw, &[("grant_type", "password"), ("username", "ann"), ("password", PASSWORD)])
            .await;
    let bearer = tokens["access_token"].as_str().unwrap().to_string();
    let mut tablet = Browser::new("Tablet");
    tablet.login(&gw, "ann").await;
    let r = client().delete(url(&gw, "/auth/sessions")).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], 2);
    assert_eq!(laptop.get(&gw, "/api/x").await.status(), 401);
    assert_eq!(tablet.get(&gw, "/api/x").await.status(), 401);

    // keep_current keeps the caller's own session.
    let (mut a, mut b) = (Browser::new("A"), Browser::new("B"));
    a.login(&gw, "ann").await;
    b.login(&gw, "ann").await;
    let r = delete(&a, "/auth/sessions?keep_current=true".into()).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], 1);
    assert_eq!(
        (a.get(&gw, "/api/x").await.status().as_u16(), b.get(&gw, "/api/x").await.status().as_u16()),
        (200, 401)
    );

    // "Log out everywhere" with a bearer token ends sessions at once.
    let r = client().post(url(&gw, "/auth/logout/all")).bearer_auth(&bearer).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(a.get(&gw, "/api/x").await.status(), 401);
    let _ = ann;
}

/// Fixation: a session token planted in the victim's browser (the
/// attacker's own, or one made up) is never adopted by the victim's login.
async fn fixation(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&session_config(up, &db.url, "")).await;
    let victim = sign_up(&gw, "victim").await;
    sign_up(&gw, "attacker").await;
    let mut attacker = Browser::new("evil");
    attacker.login(&gw, "attacker").await;
    let planted = attacker.session.clone().unwrap();

    for planted in [planted.clone(), "rs_chosen-by-the-attacker".to_string()] {
        let mut browser = Browser { session: Some(planted.clone()), csrf: None, agent: "victim".into() };
        assert_eq!(browser.login(&gw, "victim").await.status(), 200);
        let issued = browser.session.clone().unwrap();
        assert_ne!(issued, planted, "a login always issues a new session id");
        let seen: Value = browser.get(&gw, "/api/x").await.json().await.unwrap();
        assert_eq!(seen["headers"]["x-rampart-user"], victim.as_str());
        // The planted token does not carry the victim's login.
        let r = client().get(url(&gw, "/api/x")).header("cookie", format!("{COOKIE}={planted}")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    }
}

/// Idle and absolute timeouts on the gateway's clock, moved forward by the
/// test; sliding renewal keeps an active session alive.
async fn timeouts(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&session_config(up, &db.url, "absolute_timeout = '1h'\n")).await;
    let sessions = gw.identity().unwrap().sessions.clone().unwrap();
    let ann = sign_up(&gw, "ann").await;
    let minutes = |m: u64| Duration::from_secs(m * 60);

    let mut idle = Browser::new("idle");
    idle.login(&gw, "ann").await;
    let mut busy = Browser::new("busy");
    busy.login(&gw, "ann").await;
    // A page's own polling (the dashboard's statistics) is no activity.
    let mut polling = Browser::new("polling");
    polling.login(&gw, "ann").await;
    let poll = |b: &Browser, path: &str| {
        b.req(reqwest::Method::GET, &url(&gw, path)).header("x-rampart-background", "1").send()
    };
    // Used every 20 minutes, the busy session outlives the 30-minute idle timeout.
    for round in 0..2 {
        sessions.clock.advance(minutes(20));
        assert_eq!(busy.get(&gw, "/api/x").await.status(), 200);
        let expected = if round == 0 { 200 } else { 401 };
        assert_eq!(poll(&polling, "/auth/me").await.unwrap().status(), expected, "round {round}");
        assert_eq!(poll(&polling, "/api/x").await.unwrap().status(), expected, "round {round}");
    }
    // The idle one ended at 30 minutes; its stale cookie is cleared, and an
    // optional route treats it as anonymous.
    let r = idle.get(&gw, "/api/x").await;
    assert_eq!(r.status(), 401);
    assert_eq!(idle.session, None, "the stale cookie is cleared");
    let mut stale = Browser { session: busy.session.clone(), ..Browser::new("x") };
    // Absolute: 1h after login, however active.
    sessions.clock.advance(minutes(19));
    assert_eq!(busy.get(&gw, "/api/x").await.status(), 200);
    sessions.clock.advance(minutes(2));
    assert_eq!(busy.get(&gw, "/api/x").await.status(), 401);
    let r = stale.get(&gw, "/maybe/x").await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["headers"].get("x-rampart-user").is_none());

    // A background request is no activity, but is checked as any other: a
    // lock ends the session at the next check.
    let mut bg = Browser::new("bg");
    bg.login(&gw, "ann").await;
    sessions.clock.advance(minutes(2));
    {
        use rampart::store::identity::UserStore as _;
        let store = db.open().await;
        let now = rampart::identity::service::now_ms();
        store.lock_user(&ann, now + 3_600_000, now).await.unwrap();
        store.close().await;
    }
    assert_eq!(poll(&bg, "/auth/me").await.unwrap().status(), 401);
}

/// Sessions survive a restart and a reload; a role change gives the
/// session a new id (and the new roles); an administrator's lock ends the
/// session, the lockout after wrong passwords does not.
async fn restart_and_privileges(db: &TestDb) {
    let up = start_upstream().await;
    let text = session_config(up, &db.url, "");
    let gw = gateway(&text).await;
    let ann = sign_up(&gw, "ann").await;
    let mut b = Browser::new("b");
    b.login(&gw, "ann").await;
    gw.shutdown();
    gw.wait().await;

    let gw = gateway(&text).await;
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200, "after a restart");
    gw.reload(rampart::app::load_policy_text(&text)).unwrap();
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200, "after a reload");

    // An administrator makes ann an admin: at the next touch the session
    // gets a new id, and the old cookie stops working.
    {
        use rampart::store::identity::UserStore as _;
        let store = db.open().await;
        store.set_roles(&ann, &["admin".to_string()], rampart::identity::service::now_ms()).await.unwrap();
    }
    let sessions = gw.identity().unwrap().sessions.clone().unwrap();
    sessions.clock.advance(Duration::from_secs(61));
    let before = b.session.clone().unwrap();
    let r = b.get(&gw, "/api/x").await;
    assert_eq!(r.json::<Value>().await.unwrap()["headers"]["x-rampart-roles"], "admin");
    let after = b.session.clone().unwrap();
    assert_ne!(before, after, "a privilege change gives a new session id");
    let r = client().get(url(&gw, "/api/x")).header("cookie", format!("{COOKIE}={before}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200);

    // Hostile cookies: refused cleanly, never a 500.
    for bad in [
        "rs_".to_string() + &"A".repeat(5000),
        "rs_\u{7f}x".into(),
        "not-ours".into(),
        "rs_%00%0d%0a".into(),
        "\"rs_quoted\"".into(),
    ] {
        let r = client().get(url(&gw, "/api/x")).header("cookie", format!("{COOKIE}={bad}")).send().await;
        if let Ok(r) = r {
            assert!(r.status() == 401 || r.status() == 431 || r.status() == 400, "{bad:?}: {}", r.status());
        }
    }
    let r = client()
        .get(url(&gw, "/api/x"))
        .header("cookie", reqwest::header::HeaderValue::from_bytes(b"__Host-rampart_session=rs_\xff\xfe").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Wrong passwords lock ann's logins out; anyone who knows her name can do
    // that, so her session goes on. An administrator's lock ends it.
    for _ in 0..6 {
        let wrong = [("grant_type", "password"), ("username", "ann"), ("password", "not ann's password at all")];
        assert_eq!(crate::identity::token_request(&gw, &wrong).await.0, 400);
    }
    let login = [("grant_type", "password"), ("username", "ann"), ("password", PASSWORD)];
    assert_eq!(crate::identity::token_request(&gw, &login).await.0, 400, "locked out");
    sessions.clock.advance(Duration::from_secs(61));
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200, "a lockout leaves the session");
    {
        use rampart::store::identity::UserStore as _;
        let store = db.open().await;
        let now = rampart::identity::service::now_ms();
        store.lock_user(&ann, now + 3_600_000, now).await.unwrap();
    }
    sessions.clock.advance(Duration::from_secs(61));
    assert_eq!(b.get(&gw, "/api/x").await.status(), 401, "an administrator's lock ends it");
}

/// Behind a front proxy (forward auth), a privilege change does not give
/// the session a new token: nginx and Caddy drop a check's `Set-Cookie`, so
/// a new token would log the user out. The new roles apply under the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_checks_apply_new_privileges_without_a_new_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = session_config(up, &db.url, "[forward_auth]\npath = '/_rampart/auth'\n")
        .replace("[server]\n", "[server]\ntrusted_proxies = ['127.0.0.1/32']\n");
    let gw = gateway(&text).await;
    let ann = sign_up(&gw, "ann").await;
    let mut b = Browser::new("b");
    b.login(&gw, "ann").await;
    let token = b.session.clone().unwrap();
    let check = || {
        client()
            .get(url(&gw, "/_rampart/auth"))
            .header("x-original-uri", "/api/x")
            .header("x-original-method", "GET")
            .header("cookie", format!("{COOKIE}={token}"))
            .send()
    };
    assert_eq!(check().await.unwrap().status(), 200);
    {
        use rampart::store::identity::UserStore as _;
        let store = db.open().await;
        store.set_roles(&ann, &["admin".to_string()], rampart::identity::service::now_ms()).await.unwrap();
    }
    gw.identity().unwrap().sessions.clone().unwrap().clock.advance(Duration::from_secs(61));
    let r = check().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-rampart-roles"], "admin");
    assert!(r.headers().get("set-cookie").is_none(), "{:?}", r.headers());
    assert_eq!(check().await.unwrap().status(), 200, "the same token goes on");
}

/// `a` lists its user's two sessions and ends the one that is not its own.
async fn end_the_other_session(gw: &rampart::Gateway, a: &mut Browser) {
    let list: Value = a.get(gw, "/auth/sessions").await.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    let r = a
        .req(reqwest::Method::DELETE, &url(gw, &format!("/auth/sessions/{other}")))
        .header("x-csrf-token", a.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// Sessions in Redis: the same login, use, list and revoke; they survive a
/// gateway restart; with Redis down, session requests fail closed (503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_redis() {
    let Some(_) = redis_url() else {
        eprintln!("skipped: RAMPART_TEST_REDIS_URL is not set");
        return;
    };
    let mut redis = OwnRedis::start(free_port()).await;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let extra = format!("store = 'redis'\n[redis]\nurl = '{}'\nkey_prefix = 'sess-test:'\n", redis.url());
    let text = session_config(up, &db.url, &extra);
    let gw = gateway(&text).await;
    assert_eq!(gw.identity().unwrap().sessions.as_ref().unwrap().store_name(), "redis");
    let ann = sign_up(&gw, "ann").await;
    let (mut a, mut b) = (Browser::new("A"), Browser::new("B"));
    a.login(&gw, "ann").await;
    b.login(&gw, "ann").await;
    let seen: Value = a.get(&gw, "/api/x").await.json().await.unwrap();
    assert_eq!(seen["headers"]["x-rampart-user"], ann.as_str());
    end_the_other_session(&gw, &mut a).await;
    assert_eq!(b.get(&gw, "/api/x").await.status(), 401);
    // A restart of the gateway keeps the session (it lives in Redis).
    gw.shutdown();
    gw.wait().await;
    let gw = gateway(&text).await;
    // The new gateway's Redis connection comes up in the background: until
    // it does, session requests are refused (503), never let through.
    let back = eventually(Duration::from_secs(10), || {
        let a = a.clone();
        let gw_url = url(&gw, "/api/x");
        async move { a.req(reqwest::Method::GET, &gw_url).send().await.unwrap().status() == 200 }
    })
    .await;
    assert!(back, "the session survives a gateway restart");
    // Redis down: 503, never a session let through unchecked.
    redis.kill();
    let down = eventually(Duration::from_secs(10), || {
        let a = a.clone();
        let gw_url = url(&gw, "/api/x");
        async move {
            let r = a.req(reqwest::Method::GET, &gw_url).send().await.unwrap();
            r.status() == 503
        }
    })
    .await;
    assert!(down, "sessions fail closed while Redis is down");
}

/// Sessions in a Redis Cluster (`[redis] cluster_nodes`): login, list and
/// revoke work (each is a pipeline over several keys, all in Rampart's one
/// slot), and the keys live on that slot's primary only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_a_redis_cluster() {
    let slot = rampart::limit::redis::key_slot(b"{sess-cluster:}");
    let cluster = OwnCluster::start(3, slot).await;
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let extra = format!(
        "store = 'redis'\n[redis]\nurl = 'redis://unused.invalid/'\ncluster_nodes = ['{}']\nkey_prefix = 'sess-cluster:'\n",
        cluster.nodes()[0]
    );
    let gw = gateway(&session_config(up, &db.url, &extra)).await;
    let redis = gw.limits.limiter.redis.clone().unwrap();
    assert!(eventually(Duration::from_secs(5), || async { redis.is_available() }).await);
    sign_up(&gw, "cy").await;
    let (mut a, mut b) = (Browser::new("A"), Browser::new("B"));
    a.login(&gw, "cy").await;
    b.login(&gw, "cy").await;
    end_the_other_session(&gw, &mut a).await;
    assert_eq!(b.get(&gw, "/api/x").await.status(), 401);
    assert_eq!(a.get(&gw, "/api/x").await.status(), 200);
    let home = &cluster.masters[cluster.home];
    let keys: Vec<String> = home.query(redis::cmd("KEYS").arg("*")).await;
    assert!(keys.iter().any(|k| k.starts_with("{sess-cluster:}session:")), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("{sess-cluster:}")), "{keys:?}");
    for m in cluster.masters.iter().filter(|m| m.port != home.port) {
        assert_eq!(m.query::<u64>(&redis::cmd("DBSIZE")).await, 0, "nothing on {}", m.port);
    }
}

on_both_backends!(sqlite_session_with_a_second_factor, postgres_session_with_a_second_factor, second_factor);

/// A second factor enrolled within a session renews the session's id (a
/// privilege change); the next session login takes both steps.
async fn second_factor(db: &TestDb) {
    use rampart_core::totp::{code_at, secret_from_base32, STEP_SECS};
    let up = start_upstream().await;
    let gw = gateway(&session_config(up, &db.url, "")).await;
    sign_up(&gw, "ann").await;
    let mut b = Browser::new("b");
    b.login(&gw, "ann").await;
    let r = b
        .req(reqwest::Method::POST, &url(&gw, "/auth/mfa/totp"))
        .header("x-csrf-token", b.csrf.clone().unwrap())
        .json(&serde_json::json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let secret = secret_from_base32(r.json::<Value>().await.unwrap()["secret"].as_str().unwrap()).unwrap();
    let step = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / STEP_SECS;
    let before = b.session.clone().unwrap();
    let r = b
        .req(reqwest::Method::POST, &url(&gw, "/auth/mfa/totp/confirm"))
        .header("x-csrf-token", b.csrf.clone().unwrap())
        .json(&serde_json::json!({"code": code_at(&secret, step)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.take_cookies(&r);
    let codes: Vec<String> = r.json::<Value>().await.unwrap()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_ne!(b.session.clone().unwrap(), before, "new session id after enrolling a second factor");
    let r = client().get(url(&gw, "/api/x")).header("cookie", format!("{COOKIE}={before}")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(b.get(&gw, "/api/x").await.status(), 200);

    // A session login now needs the second step.
    let mut c = Browser::new("c");
    let r = c.login(&gw, "ann").await;
    assert_eq!(r.status(), 403);
    assert!(c.session.is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "mfa_required");
    let r = c
        .req(reqwest::Method::POST, &url(&gw, "/auth/session"))
        .form(&[
            ("grant_type", "urn:rampart:params:oauth:grant-type:mfa-otp"),
            ("mfa_token", body["mfa_token"].as_str().unwrap()),
            ("otp", &codes[0]),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.take_cookies(&r);
    assert_eq!(r.json::<Value>().await.unwrap()["session"]["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(c.get(&gw, "/api/x").await.status(), 200);
    // The token endpoint's other grants are not for sessions.
    let r = c
        .req(reqwest::Method::POST, &url(&gw, "/auth/session"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt_x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
