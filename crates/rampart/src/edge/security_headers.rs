//! Security response headers on every response, errors included.
//!
//! `X-Content-Type-Options`, `X-Frame-Options`, `Referrer-Policy`,
//! `Permissions-Policy`, `Cross-Origin-Opener-Policy` and the CSP replace whatever
//! the upstream sent (the gateway is where policy lives; a route sets a header to
//! `""` to let the upstream's through). `Cache-Control` is only added when the
//! upstream sent none. HSTS is sent only when the client's connection was TLS —
//! directly, or per a trusted proxy — because over plain HTTP it is meaningless
//! and browsers ignore it. `Server` and `X-Powered-By` are removed.
//!
//! Per-route values come from the [`MatchedRoute`]; without one (standalone use)
//! the layer's own headers apply. A response the gateway makes itself may carry
//! an [`OwnCsp`] extension (the web pages do, see [`crate::web`]): its policy
//! replaces the route's CSP, since the route's (by default `default-src 'none'`)
//! is written for APIs and would stop the pages' own scripts and styles.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::CACHE_CONTROL;
use http::HeaderName;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::SecurityHeaders;
use tower::{Layer, Service};

use super::route::MatchedRoute;
use super::{ConnInfo, HttpRequest, HttpResponse, Inner, Post, PostProcess};

const HSTS: HeaderName = http::header::STRICT_TRANSPORT_SECURITY;

/// A response extension: the `Content-Security-Policy` this response of the
/// gateway's own needs instead of the route's. Upstream responses cannot set
/// it (extensions do not cross the wire).
#[derive(Clone, Debug)]
pub struct OwnCsp(pub http::HeaderValue);

#[derive(Clone, Debug)]
pub struct SecurityHeadersLayer {
    headers: Arc<SecurityHeaders>,
}

impl SecurityHeadersLayer {
    pub fn new(headers: Arc<SecurityHeaders>) -> Self {
        Self { headers }
    }
}

impl<S> Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeadersService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeadersService { inner, headers: self.headers.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct SecurityHeadersService<S> {
    inner: S,
    headers: Arc<SecurityHeaders>,
}

impl<S: Inner> Service<HttpRequest> for SecurityHeadersService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Post<S::Future, Finish>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let ext = req.extensions();
        let policy = ext.get::<MatchedRoute>().map_or_else(|| self.headers.clone(), |r| r.0.security_headers.clone());
        let finish = Finish::for_request(policy, ext);
        Post::new(self.inner.call(req), Some(finish))
    }
}

/// The headers a response gets, and whether the client's connection was TLS.
pub struct Finish {
    policy: Arc<SecurityHeaders>,
    tls: bool,
}

impl Finish {
    /// For a response made above this layer (before route lookup), with
    /// `policy` (the defaults) and the request's `ext`.
    pub fn for_request(policy: Arc<SecurityHeaders>, ext: &http::Extensions) -> Self {
        let tls =
            ext.get::<ConnInfo>().is_some_and(|c| c.tls) || ext.get::<ClientInfo>().is_some_and(|c| c.forwarded_https);
        Self { policy, tls }
    }
}

impl PostProcess for Finish {
    fn apply(self, mut resp: HttpResponse) -> HttpResponse {
        let Self { policy, tls } = self;
        let headers = resp.headers_mut();
        crate::edge::remove_headers(headers, &policy.remove);
        // Room for all at once: one growth of the map, not one per doubling.
        headers.reserve(policy.always.len() + 3);
        for (name, value) in &policy.always {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(OwnCsp(csp)) = resp.extensions().get::<OwnCsp>().cloned() {
            resp.headers_mut().insert(http::header::CONTENT_SECURITY_POLICY, csp);
        }
        let headers = resp.headers_mut();
        if let Some(cc) = &policy.cache_control {
            headers.entry(CACHE_CONTROL).or_insert_with(|| cc.clone());
        }
        match (&policy.hsts, tls) {
            (Some(v), true) => {
                headers.insert(HSTS, v.clone());
            }
            _ => crate::edge::remove_headers(headers, [&HSTS]),
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::body::Body;
    use http::HeaderValue;
    use tower::{service_fn, ServiceExt};

    fn policy() -> Arc<SecurityHeaders> {
        Arc::new(SecurityHeaders {
            always: vec![(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))],
            cache_control: Some(HeaderValue::from_static("no-store")),
            hsts: Some(HeaderValue::from_static("max-age=60")),
            remove: vec![http::header::SERVER],
        })
    }

    async fn run(tls: bool, forwarded_https: bool, upstream_cc: Option<&'static str>) -> http::HeaderMap {
        let svc = SecurityHeadersLayer::new(policy()).layer(service_fn(move |_req: HttpRequest| async move {
            let mut r = http::Response::new(Body::empty());
            r.headers_mut().insert("server", HeaderValue::from_static("gunicorn"));
            r.headers_mut().insert("x-frame-options", HeaderValue::from_static("ALLOWALL"));
            r.headers_mut().insert("strict-transport-security", HeaderValue::from_static("max-age=1"));
            if let Some(cc) = upstream_cc {
                r.headers_mut().insert("cache-control", HeaderValue::from_static(cc));
            }
            Ok::<_, std::convert::Infallible>(r)
        }));
        let mut req = http::Request::new(Body::empty());
        req.extensions_mut().insert(ConnInfo { peer: "127.0.0.1:1".parse().unwrap(), tls });
        req.extensions_mut().insert(ClientInfo {
            ip: "127.0.0.1".parse().unwrap(),
            forwarded_https,
            via_trusted_proxy: forwarded_https,
        });
        svc.oneshot(req).await.unwrap().headers().clone()
    }

    #[tokio::test]
    async fn headers_set_replaced_and_removed() {
        let h = run(false, false, None).await;
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["cache-control"], "no-store");
        assert!(h.get("server").is_none());
        assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    }

    #[tokio::test]
    async fn hsts_only_over_tls_and_upstream_cache_control_kept() {
        assert_eq!(run(true, false, Some("max-age=5")).await["cache-control"], "max-age=5");
        assert_eq!(run(true, false, None).await["strict-transport-security"], "max-age=60");
        assert_eq!(run(false, true, None).await["strict-transport-security"], "max-age=60");
    }
}
