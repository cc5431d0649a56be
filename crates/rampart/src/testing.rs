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

/// JSON nesting `levels` objects whose only key is serde_json's private
/// RawValue name, each holding the next, 120 brackets deeper, as an escaped
/// string: parsed into a `serde_json::Value`, a hundred levels recurse
/// 12 000 deep (past any thread's stack).
pub fn raw_value_bomb(levels: usize) -> String {
    let mut inner = String::from("1");
    for _ in 0..levels {
        let wrapped = format!("{}{}{}", "[".repeat(120), inner, "]".repeat(120));
        let escaped = wrapped.replace('\\', "\\u005c").replace('"', "\\u0022");
        inner = format!("{{\"$serde_json::private::RawValue\":\"{escaped}\"}}");
    }
    inner
}
