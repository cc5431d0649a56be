//! Bearer-token authentication end to end: tokens signed here (HS256 as a
//! FastAPI app would, ES256 from a key file) sent by a real client through the
//! gateway to a real upstream that echoes what it received.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use rampart_core::token::{issue, Alg, Claims, SigningKey};
use serde_json::Value;

pub(crate) const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
pub(crate) const APP: &str = "https://app.example.com";
pub(crate) const LOGIN: &str = "https://login.example.com";
const P256: &str = include_str!("../../../rampart-core/src/token/testdata/p256.pem");
const P256_PUB: &str = include_str!("../../../rampart-core/src/token/testdata/p256.pub.pem");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub(crate) fn hs256() -> SigningKey {
    SigningKey::hs256("hs256", SECRET.as_bytes()).unwrap()
}

pub(crate) fn es256() -> SigningKey {
    SigningKey::from_pkcs8_pem("login-1", Alg::ES256, P256).unwrap()
}

pub(crate) fn claims(iss: &str, sub: &str) -> Claims {
    let mut c = Claims::new(iss, sub, "api", now(), 600);
    c.roles = vec!["user".into()];
    c.scopes = vec!["read".into(), "write".into()];
    c.tier = Some("pro".into());
    c
}

pub(crate) fn token(key: &SigningKey, c: &Claims) -> String {
    issue(key, c).unwrap()
}

/// Writes the ES256 public key where the config can name it, and returns the config.
pub(crate) fn auth_config(dir: &std::path::Path, routes: &str) -> String {
    let pem = dir.join("login.pem");
    std::fs::write(&pem, P256_PUB).unwrap();
    format!(
        "[auth]\naudiences = ['api']\n\
         [[auth.issuers]]\nissuer = '{APP}'\nsecret = '{SECRET}'\n\
         [[auth.issuers]]\nissuer = '{LOGIN}'\nkeys = [{{ kid = 'login-1', alg = 'ES256', public_key_file = '{}' }}]\n\
         {routes}",
        pem.display()
    )
}

const ROUTES: &str = "[[routes]]\npath = '/private/**'\nauth = 'required'\n\
                      [[routes]]\npath = '/maybe/**'\nauth = 'optional'\nauth_cookie = 'at'\n\
                      [[routes]]\npath = '/ws/**'\nauth = 'required'\nauth_query = 'access_token'\n\
                      [[routes]]\npath = '/**'\n";

pub(crate) async fn get(
    gw: &rampart::Gateway,
    path: &str,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = client().get(url(gw, path));
    if let Some(t) = bearer {
        rb = rb.bearer_auth(t);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

async fn echoed(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["headers"].clone()
}

#[tokio::test]
async fn valid_tokens_reach_the_upstream_as_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup(&auth_config(dir.path(), ROUTES)).await;
    // An HS256 token, as a FastAPI app signs them, and an ES256 one from another issuer.
    for (key, iss) in [(hs256(), APP), (es256(), LOGIN)] {
        let h = echoed(get(&gw, "/private/x", Some(&token(&key, &claims(iss, "u-42"))), &[]).await).await;
        assert_eq!(h["x-rampart-user"], "u-42", "{iss}");
        assert_eq!(h["x-rampart-roles"], "user");
        assert_eq!(h["x-rampart-scopes"], "read write");
        assert_eq!(h["x-rampart-tier"], "pro");
        assert_eq!(h["x-rampart-auth-method"], "jwt");
        // Whose `sub` it is: an external issuer's ids are its own.
        assert_eq!(h["x-rampart-issuer"], iss);
    }
    // The token also arrives by the cookie or query parameter a route names.
    let t = token(&hs256(), &claims(APP, "u-7"));
    let h = echoed(get(&gw, "/maybe/x", None, &[("cookie", &format!("theme=dark; at={t}"))]).await).await;
    assert_eq!(h["x-rampart-user"], "u-7");
    let h = echoed(get(&gw, &format!("/ws/x?access_token={t}"), None, &[]).await).await;
    assert_eq!(h["x-rampart-user"], "u-7");
    // ... but only where the route enables it.
    let r = get(&gw, &format!("/private/x?access_token={t}"), None, &[]).await;
    assert_eq!(r.status(), 401);
}

/// A token in a route's `auth_cookie` is sent by the browser by itself, so
/// unsafe requests carrying it must come from our own origin (or one the
/// route's credentialed CORS policy allows), as session-cookie requests must.
#[tokio::test]
async fn cookie_tokens_on_unsafe_methods_are_refused_cross_site() {
    let dir = tempfile::tempdir().unwrap();
    let spa = "[[routes]]\npath = '/spa/**'\nauth = 'required'\nauth_cookie = 'at'\n\
               cors = { allow_origins = ['https://app.example.test'], allow_credentials = true }\n";
    let (gw, _) = setup(&auth_config(dir.path(), &format!("{spa}{ROUTES}"))).await;
    let t = token(&hs256(), &claims(APP, "u-9"));
    let cookie = format!("theme=dark; at={t}");
    let own = format!("http://{}", gw.addr);
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut rb = client().request(method, url(&gw, path)).header("cookie", &cookie);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send()
    };
    let post = reqwest::Method::POST;

    // Another site's form or script: refused before the upstream, whatever the token.
    for headers in [[("origin", "https://evil.example")], [("origin", "null")], [("sec-fetch-site", "cross-site")]] {
        let r = send(post.clone(), "/maybe/x", &headers).await.unwrap();
        let p = problem(r, 403).await;
        assert_eq!(p["type"], "urn:rampart:problem:csrf", "{headers:?}");
        let r = send(reqwest::Method::DELETE, "/spa/x", &headers).await.unwrap();
        assert_eq!(r.status(), 403, "{headers:?}");
    }
    // Our own origin, a same-origin fetch and a client that is no browser pass.
    for headers in [vec![("origin", own.as_str())], vec![("sec-fetch-site", "same-origin")], vec![]] {
        let h = echoed(send(post.clone(), "/maybe/x", &headers).await.unwrap()).await;
        assert_eq!(h["x-rampart-user"], "u-9", "{headers:?}");
    }
    // The route's credentialed CORS origin may use the cookie; only there.
    let partner = [("origin", "https://app.example.test")];
    assert_eq!(send(post.clone(), "/spa/x", &partner).await.unwrap().status(), 200);
    assert_eq!(send(post.clone(), "/maybe/x", &partner).await.unwrap().status(), 403);
    // Safe methods, and a token in the Authorization header, are unchanged.
    let evil = [("origin", "https://evil.example")];
    assert_eq!(send(reqwest::Method::GET, "/maybe/x", &evil).await.unwrap().status(), 200);
    // A WebSocket handshake is a GET, but another site's page may not open
    // one with the cookie (cross-site WebSocket hijacking).
    let handshake = |origin: &str| {
        format!(
            "GET /maybe/ws HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            gw.addr
        )
    };
    let reply = raw(gw.addr, handshake("https://evil.example").as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 403") && reply.contains("urn:rampart:problem:csrf"), "{reply}");
    // From our own origin it goes on (the echo upstream does not switch protocols).
    let reply = raw(gw.addr, handshake(&own).as_bytes(), Duration::from_secs(2)).await;
    assert!(!reply.starts_with("HTTP/1.1 403"), "{reply}");
    let r = client().post(url(&gw, "/maybe/x")).bearer_auth(&t).header("origin", "https://evil.example").send();
    assert_eq!(r.await.unwrap().status(), 200);
}

/// HS256 tokens made by PyJWT and python-jose with the shared secret, as a
/// FastAPI app makes them, are accepted; one signed with another secret is not.
#[tokio::test]
async fn hs256_tokens_from_python_libraries_are_accepted() {
    let Ok(python) = std::env::var("RAMPART_TEST_PYTHON") else {
        eprintln!("RAMPART_TEST_PYTHON is not set: skipped (scripts/test sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup(&auth_config(dir.path(), ROUTES)).await;
    let script = format!(
        r#"
import json, time, jwt
from jose import jwt as jose_jwt
claims = {{"sub": "py-user", "iss": "{APP}", "aud": "api", "exp": int(time.time()) + 600,
          "roles": ["user"], "scopes": ["read"]}}
print(json.dumps({{
    "pyjwt": jwt.encode(claims, "{SECRET}", algorithm="HS256"),
    "jose": jose_jwt.encode(claims, "{SECRET}", algorithm="HS256"),
    "wrong": jwt.encode(claims, "another secret that is long enough....", algorithm="HS256"),
}}))
"#
    );
    let out = std::process::Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    let tokens: Value = serde_json::from_slice(&out.stdout).unwrap();
    for lib in ["pyjwt", "jose"] {
        let h = echoed(get(&gw, "/private/x", tokens[lib].as_str(), &[]).await).await;
        assert_eq!(h["x-rampart-user"], "py-user", "{lib}");
        assert_eq!(h["x-rampart-scopes"], "read", "{lib}");
    }
    assert_eq!(get(&gw, "/private/x", tokens["wrong"].as_str(), &[]).await.status(), 401);
}

#[tokio::test]
async fn inbound_identity_headers_are_always_stripped() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup(&auth_config(dir.path(), ROUTES)).await;
    // Underscored copies too: CGI-style servers read them as the same header.
    let forged = [
        ("x-rampart-user", "admin"),
        ("x-rampart-roles", "admin"),
        ("X-Rampart-Auth-Method", "jwt"),
        ("x-rampart-issuer", "https://evil.example"),
        ("x_rampart_user", "admin"),
        ("X-Rampart_Roles", "admin"),
        ("x_forwarded_for", "6.6.6.6"),
    ];
    // A route without auth, an optional route without a token, and a required
    // route with another user's token: the forged values never pass.
    for (path, bearer) in
        [("/open", None), ("/maybe/x", None), ("/private/x", Some(token(&hs256(), &claims(APP, "u-1"))))]
    {
        let h = echoed(get(&gw, path, bearer.as_deref(), &forged).await).await;
        assert_ne!(h["x-rampart-user"], "admin", "{path}");
        assert_ne!(h["x-rampart-roles"], "admin", "{path}");
        assert_ne!(h["x-rampart-issuer"], "https://evil.example", "{path}");
        for alias in ["x_rampart_user", "x-rampart_roles", "x_forwarded_for"] {
            assert!(h.get(alias).is_none(), "{path}: {alias} reached the upstream: {h}");
        }
        if bearer.is_none() {
            assert!(h.get("x-rampart-user").is_none() && h.get("x-rampart-auth-method").is_none(), "{path}: {h}");
        }
    }
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup(&auth_config(dir.path(), ROUTES)).await;
    let good = claims(APP, "u-1");
    let mut expired = good.clone();
    (expired.iat, expired.nbf, expired.exp) = (Some(now() - 7200), Some(now() - 7200), now() - 3600);
    let mut wrong_aud = good.clone();
    wrong_aud.aud = vec!["other".into()];
    let wrong_key = SigningKey::hs256("hs256", b"another-secret-that-is-32-bytes-long").unwrap();
    let valid = token(&hs256(), &good);
    let (head, rest) = valid.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let tampered_payload = token(&hs256(), &claims(APP, "admin")).split('.').nth(1).unwrap().to_string();
    // {"alg":"none","typ":"JWT"}
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let cases: Vec<(&str, String)> = vec![
        ("expired", token(&hs256(), &expired)),
        ("wrong audience", token(&hs256(), &wrong_aud)),
        ("wrong secret", token(&wrong_key, &good)),
        ("unknown issuer", token(&hs256(), &claims("https://evil.example", "u-1"))),
        // An ES256 key of LOGIN cannot vouch for a token claiming APP.
        ("other issuer's key", token(&es256(), &claims(APP, "u-1"))),
        ("alg none", none),
        ("tampered payload", format!("{head}.{tampered_payload}.{sig}")),
        ("truncated", valid[..valid.len() - 5].to_string()),
        ("garbage", "not-a-token".into()),
        // Above `max_token_bytes` (8 KiB), below the header limit (which would answer 431).
        ("huge", "a".repeat(20_000)),
    ];
    let mut bodies = Vec::new();
    for (what, t) in &cases {
        let r = get(&gw, "/private/x", Some(t), &[]).await;
        assert_eq!(r.status(), 401, "{what}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
        assert!(challenge.contains("error=\"invalid_token\""), "{what}: {challenge}");
        let mut v: Value = r.json().await.unwrap();
        assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        v.as_object_mut().unwrap().remove("request_id");
        bodies.push(v);
        // An optional route refuses a bad token too.
        assert_eq!(get(&gw, "/maybe/x", Some(t), &[]).await.status(), 401, "{what} on optional");
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one generic answer: {bodies:#?}");
    assert!(!bodies[0].to_string().contains("expired"), "{}", bodies[0]);
    // No token on a required route: 401 without `error`; on an optional one: anonymous.
    let r = get(&gw, "/private/x", None, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"rampart\"");
    assert_eq!(get(&gw, "/maybe/x", None, &[]).await.status(), 200);
    // Reasons are counted, by kind.
    let m = reqwest::get(format!("http://{}/metrics", gw.ops_addr.unwrap())).await.unwrap().text().await.unwrap();
    for reason in ["expired", "wrong_audience", "bad_signature", "unknown_issuer", "alg_none", "missing_token"] {
        assert!(
            m.contains(&format!("rampart_rejections_total{{layer=\"auth\",reason=\"{reason}\"}}")),
            "{reason}\n{m}"
        );
    }
}

#[tokio::test]
async fn limits_keyed_by_user_apply_to_authenticated_requests() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "[[routes]]\npath = '/**'\nauth = 'required'\nlimits = [{ by = 'user', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(&auth_config(dir.path(), routes)).await;
    let (alice, bob) = (token(&hs256(), &claims(APP, "alice")), token(&hs256(), &claims(APP, "bob")));
    assert_eq!(get(&gw, "/a", Some(&alice), &[]).await.status(), 200);
    assert_eq!(get(&gw, "/a", Some(&alice), &[]).await.status(), 429);
    // Another user from the same address has an allowance of their own.
    assert_eq!(get(&gw, "/a", Some(&bob), &[]).await.status(), 200);
}

#[tokio::test]
async fn auth_config_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let up = "http://127.0.0.1:1";
    let bad = [
        ("[[routes]]\npath = '/**'\nauth = 'required'\n", "needs at least one [[auth.issuers]]"),
        ("[[auth.issuers]]\nissuer = 'x'\nsecret = 'short'\n", "auth.issuers[0]"),
        ("[auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = 'x'\n", "needs a `secret`"),
        ("[[auth.issuers]]\nissuer = 'x'\nsecret = '0123456789abcdef0123456789abcdef'\n", "audiences"),
        (
            "[auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = 'x'\nkeys = [{ kid = 'k', alg = 'HS256', public_key = 'x' }]\n",
            "not one of EdDSA, ES256, RS256",
        ),
        (
            "[auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = 'x'\nkeys = [{ kid = 'k', alg = 'ES256', public_key = 'not a pem' }]\n",
            "auth.issuers[0].keys[0]",
        ),
        ("[auth.headers]\nuser = 'bad header'\n", "not a valid header name"),
        ("[[routes]]\npath = '/**'\nauth = 'sometimes'\n", "auth"),
    ];
    for (extra, want) in bad {
        let err =
            rampart::app::load_policy_text(&config(up, extra)).err().unwrap_or_else(|| panic!("accepted:\n{extra}"));
        assert!(err.to_string().contains(want), "{extra}\n→ {err}");
    }
    assert!(rampart::app::load_policy_text(&config(up, &auth_config(dir.path(), ROUTES))).is_ok());
}

/// A JWKS endpoint on a local socket whose keys the test changes, counting fetches.
struct JwksServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<Value>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(jwks: Value) -> Self {
        use std::sync::atomic::Ordering;
        let keys = std::sync::Arc::new(std::sync::Mutex::new(jwks));
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (k, h) = (keys.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, h) = (k.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(k.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{addr}/jwks.json"), keys, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn jwks_keys_are_fetched_and_refreshed_for_new_kids_at_a_bounded_rate() {
    const IDP: &str = "https://idp.example.com";
    let gen = |kid: &str| SigningKey::generate(kid, Alg::EdDSA).unwrap().key;
    let (a, b, stranger) = (gen("a"), gen("b"), gen("c"));
    let jwk = |k: &SigningKey| k.verifying_key().to_jwk().unwrap();
    // Keys the gateway must skip: an encryption key and a symmetric one.
    let enc = serde_json::json!({"kty": "RSA", "use": "enc", "kid": "e", "n": "AQAB", "e": "AQAB"});
    let oct = serde_json::json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0"});
    let server = JwksServer::start(serde_json::json!({"keys": [jwk(&a), enc, oct]})).await;
    let cfg = format!(
        "[bans]\nafter_auth_failures = 0\n\
         [auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = '{IDP}'\njwks_url = '{}'\njwks_min_interval = '300ms'\n\
         [[routes]]\npath = '/**'\nauth = 'required'\n",
        server.url
    );
    let (gw, _) = setup(&cfg).await;
    assert!(eventually(std::time::Duration::from_secs(5), || async { server.hits() >= 1 }).await, "no fetch at start");
    let who = |k: &SigningKey, sub: &str| token(k, &Claims::new(IDP, sub, "api", now(), 600));
    assert_eq!(get(&gw, "/x", Some(&who(&a, "u-a")), &[]).await.status(), 200);
    assert_eq!(server.hits(), 1);

    // The issuer rotates: a token with the new kid makes the gateway look again.
    server.keys.lock().unwrap()["keys"].as_array_mut().unwrap().push(jwk(&b));
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let h = echoed(get(&gw, "/x", Some(&who(&b, "u-b")), &[]).await).await;
    assert_eq!(h["x-rampart-user"], "u-b");
    assert_eq!(server.hits(), 2);

    // Made-up kids: refused, and at most one fetch per interval however many come.
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let started = std::time::Instant::now();
    for i in 0..30 {
        let r = get(&gw, "/x", Some(&who(&stranger, &format!("u-{i}"))), &[]).await;
        assert_eq!(r.status(), 401);
    }
    let windows = started.elapsed().as_millis() / 300 + 1;
    let fetched = server.hits() - 2;
    assert!(fetched >= 1 && fetched as u128 <= windows, "{fetched} fetches in {windows} interval(s)");

    // The issuer withdraws key `a` (compromised, say): once the gateway has
    // the new document, a token `a` signed is refused, though it was
    // verified, and cached, before.
    let signed_by_a = who(&a, "u-a");
    assert_eq!(get(&gw, "/x", Some(&signed_by_a), &[]).await.status(), 200);
    server.keys.lock().unwrap()["keys"] = serde_json::json!([jwk(&b)]);
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let before = server.hits();
    assert_eq!(get(&gw, "/x", Some(&who(&stranger, "u-s")), &[]).await.status(), 401);
    assert_eq!(server.hits(), before + 1, "the unknown kid fetched the document");
    assert_eq!(get(&gw, "/x", Some(&signed_by_a), &[]).await.status(), 401, "a withdrawn key's token was still served");
    assert_eq!(get(&gw, "/x", Some(&who(&b, "u-b")), &[]).await.status(), 200);
}

/// A JWKS nested through serde_json's private RawValue key (a parse of it
/// into a `Value` recursed past the stack and aborted the gateway): refused
/// as a bad document, and the gateway goes on.
#[tokio::test]
async fn a_jwks_built_to_overflow_the_parser_is_refused() {
    let nested = raw_value_bomb(100);
    let doc = format!("{{\"keys\": [{nested}]}}");
    assert!(doc.len() < 1 << 20);
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let doc = doc.clone();
            async move { ([("content-type", "application/json")], doc) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = format!(
        "[auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = 'https://idp.example.com'\n\
         jwks_url = 'http://{addr}/jwks.json'\n[[routes]]\npath = '/**'\nauth = 'required'\n"
    );
    let (gw, _) = setup(&cfg).await;
    let fetched =
        eventually(std::time::Duration::from_secs(5), || async { hits.load(std::sync::atomic::Ordering::SeqCst) >= 1 });
    assert!(fetched.await, "no fetch at start");
    assert_eq!(get(&gw, "/x", None, &[]).await.status(), 401, "still serving");
}

#[tokio::test]
async fn repeated_bad_tokens_earn_a_ban() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("[bans]\nafter_auth_failures = 3\nwindow = '1m'\n{}", auth_config(dir.path(), ROUTES));
    let (gw, _) = setup(&cfg).await;
    // An expired token in the route's cookie is what a browser keeps
    // sending: refused every time, never struck towards a ban.
    let expired = token(&hs256(), &Claims::new(APP, "u-1", "api", now() - 1200, 600));
    for _ in 0..5 {
        let r = get(&gw, "/maybe/x", None, &[("cookie", &format!("at={expired}"))]).await;
        assert_eq!(r.status(), 401);
    }
    let valid = token(&hs256(), &claims(APP, "u-1"));
    assert_eq!(get(&gw, "/private/x", Some(&valid), &[]).await.status(), 200, "banned for a stale cookie");
    // Three failures are tolerated within the window; the fourth earns the ban.
    for _ in 0..4 {
        assert_eq!(get(&gw, "/private/x", Some("bad.token.value"), &[]).await.status(), 401);
    }
    // Banned now: even a valid token from this address is refused, before any auth work.
    let banned = eventually(std::time::Duration::from_secs(5), || async {
        get(&gw, "/private/x", Some(&valid), &[]).await.status() == 403
    })
    .await;
    assert!(banned, "no ban after repeated authentication failures");
}
