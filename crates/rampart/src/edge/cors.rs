//! CORS: preflights answered by the gateway, `Access-Control-*` headers on actual
//! responses, `Vary: Origin` whenever the answer depends on the origin.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) on a
//! route with CORS is answered here: 204 with the allowed methods and headers, or
//! a 403 problem naming what was refused. An actual request from a disallowed
//! origin is passed on, and its response goes back without CORS headers (the
//! upstream's own removed too), so the browser withholds the response from the
//! page. Routes without CORS pass everything through untouched. Forward-auth
//! checks are never answered as preflights (see [`CorsService::call`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use futures_util::future::{ready, Either, Ready};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use rampart_core::cors::CorsPolicy;
use tower::{Layer, Service};

use super::route::MatchedRoute;
use super::{HttpRequest, HttpResponse, Inner, Post, PostProcess};
use crate::problem::Problem;

#[derive(Clone, Debug, Default)]
pub struct CorsLayer {
    policy: Option<Arc<CorsPolicy>>,
}

impl CorsLayer {
    /// `policy` applies when no route matched (standalone use); `None` disables CORS there.
    pub fn new(policy: Option<Arc<CorsPolicy>>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = CorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CorsService { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct CorsService<S> {
    inner: S,
    policy: Option<Arc<CorsPolicy>>,
}

fn add_origin_headers(headers: &mut http::HeaderMap, policy: &CorsPolicy, origin: &HeaderValue) {
    let value = if policy.answers_wildcard() { HeaderValue::from_static("*") } else { origin.clone() };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if policy.allows_credentials() {
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

fn add_vary_origin(headers: &mut http::HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case("origin") || p.trim() == "*"))
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

impl<S: Inner> Service<HttpRequest> for CorsService<S> {
    type Response = S::Response;
    type Error = S::Error;
    /// The inner service's response, with the CORS headers added when a
    /// policy applies; or the gateway's own answer to a preflight.
    type Future = Either<Post<S::Future, Finish>, Ready<Result<HttpResponse, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let policy = match req.extensions().get::<MatchedRoute>() {
            Some(r) => r.0.cors.clone(),
            None => self.policy.clone(),
        };
        let Some(policy) = policy else {
            return Either::Left(Post::new(self.inner.call(req), None));
        };
        let origin = req.headers().get(header::ORIGIN).cloned();
        let preflight_method = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).cloned();

        // A forward-auth check is not answered as a preflight: the front proxy
        // reads a 2xx as "allowed" and sends the `OPTIONS` on to the app,
        // unauthenticated, and never shows our answer to the browser. It is
        // judged as any other request.
        let check = req.extensions().get::<super::forward_auth::ForwardAuthCheck>().is_some();
        if let (true, false, Some(origin), Some(method)) =
            (req.method() == Method::OPTIONS, check, &origin, &preflight_method)
        {
            let requested = req
                .headers()
                .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            let origin_str = origin.to_str().unwrap_or("");
            let resp = match policy.check_preflight(origin_str, method.as_bytes(), &requested) {
                Ok(()) => {
                    let mut resp = Response::new(Body::empty());
                    *resp.status_mut() = StatusCode::NO_CONTENT;
                    let h = resp.headers_mut();
                    add_origin_headers(h, &policy, origin);
                    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, policy.allow_methods_value.clone());
                    let allow_headers = match &policy.allow_headers_value {
                        Some(v) => Some(v.clone()),
                        None => HeaderValue::from_str(&requested).ok().filter(|v| !v.is_empty()),
                    };
                    if let Some(v) = allow_headers {
                        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
                    }
                    h.insert(header::ACCESS_CONTROL_MAX_AGE, policy.max_age_value.clone());
                    add_vary_origin(h);
                    resp
                }
                Err(e) => {
                    let mut resp =
                        Problem::new(StatusCode::FORBIDDEN, "cors-preflight-denied", "CORS preflight denied")
                            .detail(e.to_string())
                            .rejected_by("cors", "preflight")
                            .into_response_for(req.extensions());
                    add_vary_origin(resp.headers_mut());
                    resp
                }
            };
            return Either::Right(ready(Ok(resp)));
        }

        Either::Left(Post::new(self.inner.call(req), Some(Finish { policy, origin })))
    }
}

/// An actual (not preflight) request's policy and `Origin`.
pub struct Finish {
    policy: Arc<CorsPolicy>,
    origin: Option<HeaderValue>,
}

/// The CORS answer headers. On a route whose CORS the gateway answers, the
/// upstream's own (Starlette's middleware reflecting any origin, say) would
/// grant what the gateway's policy refuses: they are removed first.
const ANSWER_HEADERS: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

impl PostProcess for Finish {
    fn apply(self, mut resp: HttpResponse) -> HttpResponse {
        let Self { policy, origin } = self;
        let h = resp.headers_mut();
        super::remove_headers(h, &ANSWER_HEADERS);
        if let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|s| policy.allows_origin(s))) {
            add_origin_headers(h, &policy, &origin);
            if let Some(v) = &policy.expose_headers_value {
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
            }
        }
        if !policy.answers_wildcard() {
            add_vary_origin(h);
        }
        resp
    }
}
