//! Security headers on error responses too (a gateway problem, an upstream
//! failure), a route's own `security_headers` reaching the client, and trusted
//! hosts checked on HTTP/2's `:authority` and on absolute-form targets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;

#[track_caller]
fn assert_defaults(h: &http::HeaderMap, what: &str) {
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert!(h.contains_key("content-security-policy"), "{what}");
    assert!(h.contains_key("permissions-policy"), "{what}");
}

#[tokio::test]
async fn error_responses_carry_security_headers_and_routes_override_them() {
    let dead = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "[upstreams.dead]\nurl = 'http://{dead}'\n\
         [[routes]]\npath = '/app/**'\nbody_limit = '16 B'\n\
         security_headers = {{ content_security_policy = \"default-src 'self'; img-src https://img.example\", frame_options = 'SAMEORIGIN' }}\n\
         [[routes]]\npath = '/dead/**'\nupstream = 'dead'\n\
         [[routes]]\npath = '/ok/**'\nmethods = ['GET']\n"
    );
    let (gw, _) = setup(&extra).await;
    let c = client();
    // A problem from the gateway itself: no route for this request.
    let r = c.get(url(&gw, "/nowhere")).send().await.unwrap();
    assert_defaults(r.headers(), "404 no route");
    problem(r, 404).await;
    // A refusal by a guard (bad path).
    let r = c.get(url(&gw, "/ok/a%00b")).send().await.unwrap();
    assert_defaults(r.headers(), "400 guard");
    problem(r, 400).await;
    // The upstream cannot be reached.
    let r = c.get(url(&gw, "/dead/x")).send().await.unwrap();
    assert_defaults(r.headers(), "502");
    problem(r, 502).await;
    // A route's own policy reaches the client, on success and on error.
    let r = c.get(url(&gw, "/app/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-security-policy"], "default-src 'self'; img-src https://img.example");
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff", "fields not overridden are inherited");
    // A refusal on that route (its body limit) carries the route's policy too.
    let r = c.post(url(&gw, "/app/x")).body("x".repeat(100)).send().await.unwrap();
    assert_eq!(r.headers()["content-security-policy"], "default-src 'self'; img-src https://img.example");
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    problem(r, 413).await;
}

#[tokio::test]
async fn trusted_hosts_hold_for_http2_authority_and_absolute_form_targets() {
    let up = start_upstream().await;
    let text = config_with(&format!("http://{up}"), "trusted_hosts = ['api.example.com']", "");
    let gw = gateway(&text).await;
    // HTTP/2 (h2c): no Host header, the authority is the `:authority` pseudo-header.
    let h2 = |host: &str| {
        reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .resolve(host, gw.addr)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let port = gw.addr.port();
    let r = h2("api.example.com").get(format!("http://api.example.com:{port}/x")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = h2("evil.test").get(format!("http://evil.test:{port}/x")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v = problem(r, 421).await;
    assert_eq!(v["type"], "urn:rampart:problem:untrusted-host");

    // HTTP/1.1 absolute form: the target's authority is the host, whatever
    // `Host` says (RFC 9112 §3.2.2).
    let reply = raw(
        gw.addr,
        b"GET http://evil.test/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 421"), "{reply}");
    let reply = raw(
        gw.addr,
        b"GET http://api.example.com/x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
}
