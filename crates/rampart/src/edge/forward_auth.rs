//! Forward-auth: Rampart as the authorization server of another proxy (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`).
//!
//! The proxy asks `[forward_auth] path` about each of its requests, passing the
//! original method, URI and host in headers. This layer, placed before route
//! lookup, turns such a check back into the original request (method from
//! `X-Original-Method` or `X-Forwarded-Method`, target from `X-Original-URI` or
//! `X-Forwarded-Uri`, host from `X-Forwarded-Host`) and marks it
//! [`ForwardAuthCheck`]. Everything below then runs as for a proxied request —
//! route, access lists, bans, guards, limits, authentication, inspection of the
//! head — and, where the proxy would forward it, the proxy layer answers
//! `200` with the identity headers instead. Refusals come back as they would to
//! a client: 401, 403, 429, …
//!
//! Only trusted proxies (`[server] trusted_proxies`) may ask: anyone else gets
//! 403. The client address comes from their `X-Forwarded-For`, as for any
//! request from a trusted proxy.

use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{Method, StatusCode, Uri};
use rampart_core::client_ip::ClientInfo;
use tower::{Layer, Service};

use super::security_headers::Finish;
use super::{HttpRequest, Inner, LayerFuture, PostProcess};
use crate::problem::Problem;
use rampart_core::config::SecurityHeaders;

/// Marks a request that is a forward-auth check, not one to proxy.
#[derive(Clone, Copy, Debug)]
pub struct ForwardAuthCheck;

const ORIGINAL_METHOD: [&str; 2] = ["x-original-method", "x-forwarded-method"];
const ORIGINAL_URI: [&str; 2] = ["x-original-uri", "x-forwarded-uri"];
const FORWARDED_HOST: &str = "x-forwarded-host";

#[derive(Clone, Debug, Default)]
pub struct ForwardAuthLayer {
    path: Option<std::sync::Arc<str>>,
    headers: std::sync::Arc<SecurityHeaders>,
}

impl ForwardAuthLayer {
    /// `path`: the endpoint (`None`: off, every request passes untouched);
    /// `headers`: the default security headers, for this layer's own
    /// refusals (it runs before route lookup, above the security-headers
    /// layer, and Caddy and Traefik pass its answers to the client).
    pub fn new(path: Option<&str>, headers: std::sync::Arc<SecurityHeaders>) -> Self {
        Self { path: path.map(std::sync::Arc::from), headers }
    }
}

impl<S> Layer<S> for ForwardAuthLayer {
    type Service = ForwardAuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ForwardAuthService { inner, path: self.path.clone(), headers: self.headers.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct ForwardAuthService<S> {
    inner: S,
    path: Option<std::sync::Arc<str>>,
    headers: std::sync::Arc<SecurityHeaders>,
}

impl<S: Inner> Service<HttpRequest> for ForwardAuthService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        match &self.path {
            Some(p) if req.uri().path() == &**p => {}
            _ => return Either::Left(self.inner.call(req)),
        }
        if !req.extensions().get::<ClientInfo>().is_some_and(|c| c.via_trusted_proxy) {
            let resp = Problem::new(StatusCode::FORBIDDEN, "forward-auth-refused", "Forbidden")
                .detail("forward-auth checks are answered for trusted proxies only")
                .rejected_by("forward_auth", "untrusted_peer")
                .into_response_for(req.extensions());
            let resp = Finish::for_request(self.headers.clone(), req.extensions()).apply(resp);
            return Either::Right(Box::pin(async move { Ok(resp) }));
        }
        if let Err(what) = rewrite(&mut req) {
            let resp = Problem::new(StatusCode::BAD_REQUEST, "bad-forward-auth", "Bad request")
                .detail(what)
                .rejected_by("forward_auth", "bad_request")
                .into_response_for(req.extensions());
            let resp = Finish::for_request(self.headers.clone(), req.extensions()).apply(resp);
            return Either::Right(Box::pin(async move { Ok(resp) }));
        }
        Either::Left(self.inner.call(req))
    }
}

/// The value the proxy gave under any of `names`, which must agree.
///
/// A proxy writes one of these names and, like Caddy and Traefik, may copy the
/// client's other headers into the check as they are: a client's own
/// `X-Original-URI: /open` beside Traefik's `X-Forwarded-Uri: /admin` would
/// have Rampart judge a request other than the one the proxy forwards. So two
/// values that differ, under one name or two, refuse the check.
fn one_value(req: &HttpRequest, names: &[&str], conflict: &'static str) -> Result<Option<String>, &'static str> {
    let mut found: Option<&HeaderValue> = None;
    for v in names.iter().flat_map(|n| req.headers().get_all(*n)) {
        match found {
            Some(f) if f != v => return Err(conflict),
            _ => found = Some(v),
        }
    }
    match found {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| "a forward-auth header is not text"),
    }
}

/// Makes `req` the original request the proxy asks about.
fn rewrite(req: &mut HttpRequest) -> Result<(), &'static str> {
    let target = one_value(req, &ORIGINAL_URI, "X-Original-URI and X-Forwarded-Uri disagree, or one is given twice")?
        .ok_or("X-Original-URI (or X-Forwarded-Uri) is missing")?;
    if !target.starts_with('/') {
        return Err("the original URI must be a path, like /api/items?page=2");
    }
    let uri: Uri = target.parse().map_err(|_| "the original URI is not a valid request target")?;
    let method = match one_value(
        req,
        &ORIGINAL_METHOD,
        "X-Original-Method and X-Forwarded-Method disagree, or one is given twice",
    )? {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| "the original method is not a valid method")?,
        // Never assumed: a POST judged as a GET would skip the CSRF checks
        // and fall to the routes of GET.
        None => return Err("X-Original-Method (or X-Forwarded-Method) is missing"),
    };
    one_value(req, &[FORWARDED_HOST], "X-Forwarded-Host is given twice")?;
    let host = req.headers().get(FORWARDED_HOST).cloned();
    let headers = req.headers_mut();
    for name in ORIGINAL_METHOD.iter().chain(&ORIGINAL_URI) {
        headers.remove(HeaderName::from_static(name));
    }
    // The check carries no body, whatever the original had.
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    if let Some(host) = host.filter(|h| HeaderValue::to_str(h).is_ok_and(|s| !s.is_empty())) {
        headers.insert(HOST, host);
    }
    *req.uri_mut() = uri;
    *req.method_mut() = method;
    req.extensions_mut().insert(ForwardAuthCheck);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;

    fn check(headers: &[(&str, &str)]) -> HttpRequest {
        let mut b = http::Request::builder().uri("/_rampart/auth").header("host", "rampart:8080");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn checks_become_the_original_request() {
        let mut req = check(&[
            ("x-original-uri", "/api/items?page=2"),
            ("x-original-method", "DELETE"),
            ("x-forwarded-host", "api.example.com"),
            ("content-length", "0"),
        ]);
        rewrite(&mut req).unwrap();
        assert_eq!(req.uri(), "/api/items?page=2");
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(req.headers()[HOST], "api.example.com");
        assert!(req.headers().get("x-original-uri").is_none() && req.headers().get(CONTENT_LENGTH).is_none());
        assert!(req.extensions().get::<ForwardAuthCheck>().is_some());
        // Traefik's and Caddy's names.
        let mut req = check(&[("x-forwarded-uri", "/b"), ("x-forwarded-method", "PUT")]);
        rewrite(&mut req).unwrap();
        assert_eq!((req.uri().path(), req.method()), ("/b", &Method::PUT));
        // Both names with the same value (a proxy that writes both) agree.
        let mut req = check(&[("x-forwarded-uri", "/d"), ("x-original-uri", "/d"), ("x-original-method", "GET")]);
        rewrite(&mut req).unwrap();
        assert_eq!(req.uri().path(), "/d");
        let mut req = check(&[("x-original-uri", "/c"), ("x-original-method", "GET")]);
        rewrite(&mut req).unwrap();
        assert_eq!((req.method(), &req.headers()[HOST]), (&Method::GET, &HeaderValue::from_static("rampart:8080")));
        // No method: refused, never taken for a GET.
        let err = rewrite(&mut check(&[("x-original-uri", "/c")])).unwrap_err();
        assert!(err.contains("Method"), "{err}");
    }

    #[test]
    fn hostile_checks_are_refused() {
        for headers in [
            vec![],
            vec![("x-original-uri", "http://evil.example/x")],
            vec![("x-original-uri", "*")],
            vec![("x-original-uri", "/a b")],
            vec![("x-original-uri", "/a"), ("x-original-method", "GE T")],
            vec![("x-original-uri", "/a"), ("x-original-method", "")],
            // A client's own copy of the header its proxy does not write.
            vec![("x-forwarded-uri", "/admin/users"), ("x-original-uri", "/open")],
            vec![("x-original-uri", "/open"), ("x-original-uri", "/admin")],
            vec![("x-forwarded-uri", "/a"), ("x-forwarded-method", "DELETE"), ("x-original-method", "GET")],
            vec![
                ("x-forwarded-uri", "/a"),
                ("x-forwarded-method", "GET"),
                ("x-forwarded-host", "a.example"),
                ("x-forwarded-host", "b.example"),
            ],
        ] {
            let mut req = check(&headers);
            assert!(rewrite(&mut req).is_err(), "{headers:?}");
            assert!(req.extensions().get::<ForwardAuthCheck>().is_none());
        }
    }
}
