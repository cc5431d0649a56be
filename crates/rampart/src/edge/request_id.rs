//! Request ids: reuse a sane inbound `X-Request-ID`, otherwise generate a UUIDv7.
//!
//! The id is put in the request's extensions (for logs and problem documents),
//! sent upstream in `X-Request-ID`, and returned to the client on every response.
//! Only 1–128 characters of `[A-Za-z0-9._-]` are accepted from a client, so an id
//! can never smuggle header or log injection.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use rampart::edge::request_id::{RequestIdLayer, X_REQUEST_ID};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use axum::body::Body;
//! let svc = ServiceBuilder::new().layer(RequestIdLayer).service(service_fn(|req: http::Request<Body>| async move {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(req.headers()[X_REQUEST_ID].to_str().unwrap().to_owned())))
//! }));
//! let req = http::Request::builder().header("x-request-id", "bad id!").body(Body::empty()).unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_ne!(resp.headers()["x-request-id"], "bad id!");
//! # }
//! ```

use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue};
use rampart_core::request_id::is_valid_request_id;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse, Inner, Post, PostProcess};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, as found in its extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn from_static(s: &'static str) -> Self {
        Self(HeaderValue::from_static(s))
    }

    /// A new UUIDv7 (time-ordered, so ids sort by arrival in logs).
    ///
    /// Each thread has its own generator: `Uuid::now_v7` keeps one behind a
    /// process-wide lock, which every connection worker took on every request.
    /// Ids stay unique (74 random or counter bits per millisecond) and those a
    /// worker makes stay in order.
    pub fn generate() -> Self {
        thread_local! {
            static CONTEXT: uuid::timestamp::context::ContextV7 = const { uuid::timestamp::context::ContextV7::new() };
        }
        let id = CONTEXT.with(|c| uuid::Uuid::new_v7(uuid::Timestamp::now(c)));
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let s = id.hyphenated().encode_lower(&mut buf);
        // A hyphenated UUID is always a valid header value.
        Self(HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("invalid")))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII ids are ever constructed.
        self.0.to_str().unwrap_or("")
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S: Inner> Service<HttpRequest> for RequestIdService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Post<S::Future, RequestId>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let id = match req.headers().get(X_REQUEST_ID) {
            Some(v) if is_valid_request_id(v.as_bytes()) && req.headers().get_all(X_REQUEST_ID).iter().count() == 1 => {
                RequestId(v.clone())
            }
            _ => RequestId::generate(),
        };
        req.headers_mut().insert(X_REQUEST_ID, id.0.clone());
        req.extensions_mut().insert(id.clone());
        Post::new(self.inner.call(req), Some(id))
    }
}

/// The id goes back to the client on the response.
impl PostProcess for RequestId {
    fn apply(self, mut resp: HttpResponse) -> HttpResponse {
        resp.headers_mut().insert(X_REQUEST_ID, self.0);
        resp
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::testing::echo_headers;
    use tower::ServiceExt;

    #[test]
    fn generated_ids_are_unique_and_in_order_per_thread() {
        let run = || (0..5000).map(|_| RequestId::generate().as_str().to_string()).collect::<Vec<_>>();
        let other = std::thread::spawn(run);
        let mine = run();
        // A hyphenated UUIDv7 sorts as text in the order it was made.
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "out of order");
        let theirs = other.join().unwrap();
        assert!(theirs.windows(2).all(|w| w[0] < w[1]), "out of order");
        let all: std::collections::HashSet<_> = mine.iter().chain(&theirs).collect();
        assert_eq!(all.len(), 10_000, "duplicate ids");
    }

    #[track_caller]
    fn check(inbound: &[&str], kept: bool) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut req = http::Request::builder();
            for v in inbound {
                req = req.header("x-request-id", *v);
            }
            let svc = RequestIdLayer.layer(echo_headers());
            let resp = svc.oneshot(req.body(axum::body::Body::empty()).unwrap()).await.unwrap();
            let returned = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            let seen_upstream = resp.headers()["echo-x-request-id"].to_str().unwrap().to_string();
            assert_eq!(returned, seen_upstream);
            if kept {
                assert_eq!(returned, inbound[0]);
            } else {
                assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}");
                assert_eq!(uuid::Uuid::parse_str(&returned).unwrap().get_version_num(), 7);
            }
        });
    }

    #[test]
    fn inbound_ids() {
        check(&["abc-123_x.y"], true);
        check(&[&"a".repeat(128)], true);
        check(&[], false);
        check(&[&"a".repeat(129)], false);
        check(&["has space"], false);
        check(&["semi;colon"], false);
        check(&["\u{00e9}t\u{00e9}"], false);
        check(&["a", "b"], false);
    }
}
