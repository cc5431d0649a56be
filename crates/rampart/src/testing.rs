//! Helpers for unit tests of layers: an inner service that reflects the request.

use std::convert::Infallible;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::service_fn;
use tower::util::ServiceFn;

type EchoFn = fn(Request<Body>) -> std::future::Ready<Result<Response<Body>, Infallible>>;

/// The service [`echo_headers`] returns.
pub type EchoService = ServiceFn<EchoFn>;

/// A service answering 200 with every request header copied as `echo-<name>`,
/// and the path in `echo-path`.
pub fn echo_headers() -> EchoService {
    service_fn(|req: Request<Body>| {
        let mut resp = Response::new(Body::empty());
        for (name, value) in req.headers() {
            if let Ok(n) = HeaderName::from_bytes(format!("echo-{name}").as_bytes()) {
                resp.headers_mut().append(n, value.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(req.uri().path()) {
            resp.headers_mut().insert("echo-path", v);
        }
        std::future::ready(Ok(resp))
    })
}
