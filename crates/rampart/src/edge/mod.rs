//! Edge layers: the cheap checks every request passes before anything expensive.
//!
//! Each protection is a `tower::Layer` usable on its own in any axum or hyper
//! service (see `examples/axum_layers.rs`); `crate::app` stacks them in the order
//! of the design (request id → client IP → route → observe → security headers →
//! trusted hosts → guards → CORS → proxy). Every rejection is an RFC 9457 problem
//! carrying the request id.
//!
//! Layers talk to each other only through request extensions: [`ConnInfo`] (set by
//! the server per connection), [`request_id::RequestId`],
//! [`rampart_core::client_ip::ClientInfo`] and [`route::MatchedRoute`].

pub mod client_ip;
pub mod cors;
pub mod forward_auth;
pub mod geo;
pub mod guard;
pub mod request_id;
pub mod route;
pub mod security_headers;
pub mod trusted_hosts;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::Service;

/// Facts about the connection a request arrived on, inserted by the server.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client connection was TLS terminated by Rampart.
    pub tls: bool,
}

/// Removes every header of `names` from `headers`.
///
/// A request or response usually carries none of them, and it carries few
/// headers at all: one pass comparing the names present against `names`
/// answers that without hashing, where a `remove` per name hashes each one
/// (measured: a fifth of the instructions of the proxy's header handling).
pub fn remove_headers<'a, I>(headers: &mut http::HeaderMap, names: I)
where
    I: IntoIterator<Item = &'a http::HeaderName>,
    I::IntoIter: Clone,
{
    let names = names.into_iter();
    if !headers.keys().any(|present| names.clone().any(|n| n == present)) {
        return;
    }
    for name in names {
        headers.remove(name);
    }
}

/// The request and response types every layer in the stack speaks.
pub type HttpRequest = Request<Body>;
pub type HttpResponse = Response<Body>;
/// Errors never leave the stack: each layer turns them into problem responses.
pub type LayerFuture = BoxFuture<'static, Result<HttpResponse, Infallible>>;

/// What a layer does to the response of the service it wraps, once that
/// response is there: the work of a [`Post`] future.
pub trait PostProcess: Send + 'static {
    fn apply(self, resp: HttpResponse) -> HttpResponse;

    /// The future was dropped before the response was there: the client went
    /// away (or the connection is being shut down) while the request was
    /// served. By default nothing more than dropping `self` happens.
    fn cancelled(self)
    where
        Self: Sized,
    {
    }
}

pin_project_lite::pin_project! {
    /// A layer's future when the layer only acts on the inner service's
    /// response: that service's future, then `P` (or nothing, when `None`).
    ///
    /// Why not an `async` block in a `Box`: every request passes through all
    /// layers, and a box per layer is an allocation, a free and an indirect
    /// call each; nested, the layers' futures take one allocation together
    /// (the one the connection service makes for the whole stack).
    pub struct Post<F, P: PostProcess> {
        #[pin]
        inner: F,
        post: Option<P>,
    }

    impl<F, P: PostProcess> PinnedDrop for Post<F, P> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(post) = this.project().post.take() {
                post.cancelled();
            }
        }
    }
}

impl<F, P: PostProcess> Post<F, P> {
    pub fn new(inner: F, post: Option<P>) -> Self {
        Self { inner, post }
    }
}

impl<F, P> std::future::Future for Post<F, P>
where
    F: std::future::Future<Output = Result<HttpResponse, Infallible>>,
    P: PostProcess,
{
    type Output = Result<HttpResponse, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx))?;
        std::task::Poll::Ready(Ok(match this.post.take() {
            Some(post) => post.apply(resp),
            None => resp,
        }))
    }
}

/// The bound every inner service of an edge layer satisfies.
pub trait Inner:
    Service<HttpRequest, Response = HttpResponse, Error = Infallible, Future = Self::Fut> + Clone + Send + 'static
{
    type Fut: std::future::Future<Output = Result<HttpResponse, Infallible>> + Send + 'static;
}

impl<S> Inner for S
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Fut = S::Future;
}

/// Takes the service out of `slot`, leaving a fresh clone behind: for a layer
/// that must do async work *before* calling its inner service (the future
/// then owns the service). Everywhere else a layer calls `self.inner.call(req)`
/// directly: every service of the stack is always ready (`poll_ready`
/// forwards down to the proxy, which is always ready) and its future owns
/// what it needs, so no clone is made. A clone copies the whole rest of the
/// stack, and one per layer per request was a fifth of the proxy's CPU
/// (see BENCHMARKS.md).
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

/// The host a request was addressed to: the URI authority (HTTP/2, absolute-form)
/// or the `Host` header, with any port left on (host patterns ignore it).
pub fn request_host(req: &HttpRequest) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str());
    }
    req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http::{HeaderMap, HeaderName, HeaderValue};

    #[test]
    fn remove_headers_removes_every_named_header_and_only_those() {
        let names = [HeaderName::from_static("x-user-id"), http::header::SERVER];
        let mut h = HeaderMap::new();
        h.append("x-user-id", HeaderValue::from_static("1"));
        h.append("x-user-id", HeaderValue::from_static("2"));
        h.insert("server", HeaderValue::from_static("gunicorn"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        super::remove_headers(&mut h, &names);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // Nothing to remove: the map is left as it is.
        super::remove_headers(&mut h, &names);
        assert_eq!(h.len(), 1);
        let mut empty = HeaderMap::new();
        super::remove_headers(&mut empty, &names);
        assert!(empty.is_empty());
    }
}
