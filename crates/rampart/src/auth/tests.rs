#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use axum::body::Body;

fn req(headers: &[(&str, &str)], uri: &str) -> HttpRequest {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).unwrap()
}

fn route(cookie: Option<&str>, query: Option<&str>) -> RouteAuth {
    RouteAuth { mode: AuthMode::Required, cookie: cookie.map(Into::into), query: query.map(Into::into), session: true }
}

#[test]
fn tokens_come_from_bearer_then_cookie_then_query() {
    let r = route(Some("at"), Some("access_token"));
    let of = |headers: &[(&str, &str)], uri: &str| token_of(&req(headers, uri), &r);
    let found = |token: &str, source| Some((token.to_string(), source));
    assert_eq!(of(&[("authorization", "Bearer abc")], "/"), found("abc", TokenSource::Header));
    assert_eq!(of(&[("authorization", "bearer   abc ")], "/"), found("abc", TokenSource::Header));
    assert_eq!(of(&[("cookie", "x=1; at=ck")], "/"), found("ck", TokenSource::Cookie));
    assert_eq!(of(&[("cookie", "at=ck")], "/?access_token=q"), found("ck", TokenSource::Cookie));
    assert_eq!(of(&[], "/?a=1&access_token=q%2Ey"), found("q.y", TokenSource::Query));
    // Other schemes, empty values and sources the route did not enable are ignored.
    assert_eq!(token_of(&req(&[("authorization", "Basic dXNlcjpwdw==")], "/"), &r), None);
    assert_eq!(token_of(&req(&[("authorization", "Bearer ")], "/"), &r), None);
    assert_eq!(token_of(&req(&[("cookie", "at=")], "/?access_token="), &r), None);
    let plain = route(None, None);
    assert_eq!(token_of(&req(&[("cookie", "at=ck")], "/?access_token=q"), &plain), None);
}

#[test]
fn hostile_tokens_never_panic_when_peeking_the_issuer() {
    for t in ["", ".", "..", "a.b.c", "a.!!!.c", "a.e30.c", "a.eyJpc3MiOjF9.c", &"x.".repeat(10_000)] {
        assert_eq!(unverified_issuer(t), None, "{t:.40}");
    }
    // {"iss":"https://a"}
    assert_eq!(unverified_issuer("h.eyJpc3MiOiJodHRwczovL2EifQ.s").as_deref(), Some("https://a"));
}

#[test]
fn identity_headers_are_encoded_when_needed() {
    let names =
        rampart_core::config::load("version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:1'\n", &[], &|_| {
            Err("no files".into())
        })
        .unwrap()
        .auth
        .headers
        .clone();
    let mut h = http::HeaderMap::new();
    let p = Principal {
        subject: "zoë%\r\nx-evil: 1".into(),
        api_key_id: None,
        issuer: None,
        tier: Some("pro".into()),
        roles: vec!["admin".into(), "ops".into()],
        scopes: vec!["read".into(), "write".into()],
        method: AuthMethod::Jwt,
    };
    set_identity_headers(&mut h, &names, &p);
    assert_eq!(h["x-rampart-user"], "zo%C3%AB%25%0D%0Ax-evil: 1");
    assert_eq!(h["x-rampart-roles"], "admin,ops");
    assert_eq!(h["x-rampart-scopes"], "read write");
    assert_eq!(h["x-rampart-tier"], "pro");
    assert_eq!(h["x-rampart-auth-method"], "jwt");
    assert!(h.get("x-evil").is_none());
}
