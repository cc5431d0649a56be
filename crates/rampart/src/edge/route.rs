//! Route lookup: normalises the path and finds the first matching route, once per
//! request, so every later layer reads the same decision from the extensions.
//!
//! A path that cannot be normalised safely is not refused here; the verdict is
//! recorded as a [`PathCheck`] and the guard layer refuses it, so that the
//! rejection is logged and counted like any other.

use std::sync::Arc;
use std::task::{Context, Poll};

use rampart_core::config::{Policy, RoutePolicy};
use rampart_core::path::{normalize_path, without_params, PathError};
use tower::{Layer, Service};

use super::{request_host, HttpRequest, Inner};

/// The route a request matched.
#[derive(Clone, Debug)]
pub struct MatchedRoute(pub Arc<RoutePolicy>);

/// The outcome of path normalisation.
#[derive(Clone, Copy, Debug)]
pub struct PathCheck(pub Result<(), PathError>);

#[derive(Clone, Debug)]
pub struct RouteLayer {
    policy: Arc<Policy>,
}

impl RouteLayer {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService { inner, policy: self.policy.clone() }
    }
}

/// The method a CORS preflight asks about (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`); `None` for any other request.
fn preflight_method(req: &HttpRequest) -> Option<http::Method> {
    if req.method() != http::Method::OPTIONS || !req.headers().contains_key(http::header::ORIGIN) {
        return None;
    }
    let asked = req.headers().get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    http::Method::from_bytes(asked.as_bytes()).ok()
}

#[derive(Clone, Debug)]
pub struct RouteService<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S: Inner> Service<HttpRequest> for RouteService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let (check, route) = match normalize_path(req.uri().path(), &self.policy.server.path_options) {
            Ok(path) => {
                let path = without_params(&path);
                let path = self.policy.server.route_matching.key(&path);
                let host = request_host(&req);
                // A CORS preflight is routed as the request it asks about
                // when that request's route answers CORS itself: otherwise an
                // `OPTIONS` falls to a looser route (and its upstream's CORS
                // answer) while the real request goes to a route whose CORS
                // policy never saw the question. Routes without a CORS policy
                // leave preflights to the app (an `OPTIONS` route for them
                // still gets them), and so does forward auth.
                let asked = preflight_method(&req)
                    .filter(|_| req.extensions().get::<super::forward_auth::ForwardAuthCheck>().is_none())
                    .and_then(|m| self.policy.route(host, &m, &path))
                    .filter(|r| r.cors.is_some())
                    .or_else(|| self.policy.route(host, req.method(), &path));
                let route = asked.cloned();
                (PathCheck(Ok(())), route)
            }
            Err(e) => (PathCheck(Err(e)), None),
        };
        req.extensions_mut().insert(check);
        if let Some(route) = route {
            req.extensions_mut().insert(MatchedRoute(route));
        }
        self.inner.call(req)
    }
}
