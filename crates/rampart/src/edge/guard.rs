//! Request guards: refuse malformed or oversized requests before they cost anything.
//!
//! | check | status |
//! |---|---|
//! | URI longer than `max_uri_length` | 414 |
//! | more than `max_header_count` headers, or more than `max_header_bytes` in all | 431 |
//! | path that is not safely decodable (bad `%`, NUL, `..` after decoding, …) | 400 |
//! | query with NUL or bad percent-encoding | 400 |
//! | `Host` repeated, malformed, or unlike the request target's authority | 400 |
//! | body with a media type outside the route's allow-list | 415 |
//! | `Content-Length` above the route's body limit | 413 |
//!
//! Bodies are never buffered: the body is wrapped so that the limit is enforced as
//! bytes stream through (chunked bodies included) and a client that stops sending
//! mid-body is cut off after `body_read_timeout`. The proxy turns those two body
//! errors into 413 and 408 problems ([`BodyFailure::of`]).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::Either;
use http::{header, StatusCode};
use http_body::Body as _;
use rampart_core::config::ContentTypePolicy;
use rampart_core::path::{normalize_path, PathError, PathOptions};
use tower::{Layer, Service};

use super::route::{MatchedRoute, PathCheck};
use super::{HttpRequest, Inner, LayerFuture};
use crate::problem::Problem;

/// Limits for the guard layer. Route policy (when a route matched) supplies the
/// body limit and content types instead of the defaults here.
#[derive(Clone, Debug)]
pub struct GuardConfig {
    pub max_uri_length: usize,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub body_limit: u64,
    pub body_read_timeout: Duration,
    /// Slowest acceptable body rate in bytes per second once `body_rate_grace`
    /// has passed (0: no minimum).
    pub min_body_rate: u64,
    pub body_rate_grace: Duration,
    pub path_options: PathOptions,
    pub content_types: ContentTypePolicy,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            max_uri_length: 8 * 1024,
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            body_limit: rampart_core::config::compile::DEFAULT_BODY_LIMIT,
            body_read_timeout: Duration::from_secs(30),
            min_body_rate: 0,
            body_rate_grace: Duration::from_secs(5),
            path_options: PathOptions { allow_encoded_slash: false },
            content_types: ContentTypePolicy::default(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RequestGuardLayer {
    config: Arc<GuardConfig>,
}

impl RequestGuardLayer {
    pub fn new(config: GuardConfig) -> Self {
        Self { config: Arc::new(config) }
    }
}

impl<S> Layer<S> for RequestGuardLayer {
    type Service = RequestGuardService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestGuardService { inner, config: self.config.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct RequestGuardService<S> {
    inner: S,
    config: Arc<GuardConfig>,
}

/// Why a request body stream failed, recovered from an error's source chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge,
    Timeout,
    TooSlow,
}

impl BodyFailure {
    /// Looks through `err` and its sources for a body-limit or body-timeout error.
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if e.is::<http_body_util::LengthLimitError>() {
                return Some(Self::TooLarge);
            }
            if e.is::<tower_http::timeout::TimeoutError>() {
                return Some(Self::Timeout);
            }
            if e.is::<BodyTooSlow>() {
                return Some(Self::TooSlow);
            }
            cur = e.source();
        }
        None
    }

    pub fn problem(self, limit: u64) -> Problem {
        match self {
            Self::TooLarge => too_large(limit),
            Self::Timeout => Problem::new(StatusCode::REQUEST_TIMEOUT, "body-timeout", "Request body too slow")
                .detail("the client stopped sending the request body")
                .rejected_by("guard", "body_timeout"),
            Self::TooSlow => Problem::new(StatusCode::REQUEST_TIMEOUT, "body-too-slow", "Request body too slow")
                .detail("the request body arrived slower than the minimum rate")
                .rejected_by("guard", "body_too_slow"),
        }
    }
}

fn too_large(limit: u64) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large")
        .detail(format!("the body may be at most {limit} bytes"))
        .rejected_by("guard", "body_too_large")
}

fn reject(req: &HttpRequest, problem: Problem) -> LayerFuture {
    let resp = problem.into_response_for(req.extensions());
    Box::pin(async move { Ok(resp) })
}

fn bad_request(reason: &'static str, detail: String) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail).rejected_by("guard", reason)
}

fn path_reason(e: PathError) -> &'static str {
    match e {
        PathError::DotSegment => "path_traversal",
        PathError::NulByte => "nul_byte",
        PathError::InvalidPercentEncoding | PathError::DoubleEncoding | PathError::InvalidUtf8 => "bad_encoding",
        _ => "bad_path",
    }
}

/// True when the query string has a NUL, a control character or a broken `%` escape.
fn query_is_hostile(query: &str) -> bool {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| c.is_ascii_hexdigit();
                if i + 2 >= b.len() {
                    return true;
                }
                if !(hex(b[i + 1]) && hex(b[i + 2])) || (b[i + 1] == b'0' && b[i + 2] == b'0') {
                    return true;
                }
                i += 3;
            }
            c if c < 0x20 || c == 0x7f => return true,
            _ => i += 1,
        }
    }
    false
}

/// What is wrong with the request's host, if anything: more than one `Host`,
/// a `Host` or a request target's authority (absolute-form HTTP/1.1, HTTP/2's
/// `:authority`) that is not one host name or address with an optional
/// numeric port, or a `Host` that differs from the authority.
///
/// Layers judge the host from the authority when there is one (trusted hosts,
/// host routes), and the upstream gets `Host`: the two must be the same host,
/// or a request could pass as one virtual host and reach another. And a value
/// like `api.example.com:@evil.test` must not pass an allow-list of
/// `api.example.com` on its way to an upstream that builds links from it.
fn host_problem(req: &HttpRequest) -> Option<&'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("more than one Host header");
    }
    if host.is_some_and(|h| !well_formed_host(h.as_bytes())) {
        return Some("the Host header is not a host name or address with an optional port");
    }
    // The authority is judged on its own too: HTTP/2 requests and absolute-form
    // HTTP/1.1 ones may come without `Host`, and `http://a.example:@b.example/`
    // parses as an authority with user info that a host pattern reads as `a.example`.
    let authority = req.uri().authority()?;
    if !well_formed_host(authority.as_str().as_bytes()) {
        return Some("the request target's authority is not a host name or address with an optional port");
    }
    match host {
        Some(h) if !authority.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
            Some("the Host header differs from the authority of the request target")
        }
        _ => None,
    }
}

/// A host name (letters, digits, `-`, `.`, `_`), an IPv4 address or a
/// bracketed IPv6 address, then optionally `:` and up to five digits.
fn well_formed_host(v: &[u8]) -> bool {
    let (name, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(end) => (&v[..=end], &v[end + 1..]),
            None => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &[][..]),
        }
    };
    let name_ok = match name {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty() && inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    name_ok && port_ok
}

impl<S: Inner> Service<HttpRequest> for RequestGuardService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let cfg = &self.config;
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > cfg.max_uri_length {
            let p = Problem::new(StatusCode::URI_TOO_LONG, "uri-too-long", "URI too long")
                .detail(format!("the request target may be at most {} bytes", cfg.max_uri_length))
                .rejected_by("guard", "uri_too_long");
            return Either::Right(reject(&req, p));
        }
        let headers = req.headers();
        let header_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        if headers.len() > cfg.max_header_count || header_bytes > cfg.max_header_bytes {
            let p = Problem::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request headers too large",
            )
            .detail(format!(
                "at most {} headers and {} bytes of headers are accepted",
                cfg.max_header_count, cfg.max_header_bytes
            ))
            .rejected_by("guard", "headers_too_large");
            return Either::Right(reject(&req, p));
        }
        let path_check = match req.extensions().get::<PathCheck>() {
            Some(c) => c.0,
            None => normalize_path(req.uri().path(), &cfg.path_options).map(|_| ()),
        };
        if let Err(e) = path_check {
            return Either::Right(reject(&req, bad_request(path_reason(e), format!("invalid path: {e}"))));
        }
        if let Some(why) = host_problem(&req) {
            return Either::Right(reject(&req, bad_request("bad_host", why.into())));
        }
        if req.uri().query().is_some_and(query_is_hostile) {
            return Either::Right(reject(
                &req,
                bad_request("bad_query", "invalid query: bad percent-encoding, NUL or control character".into()),
            ));
        }

        let route = req.extensions().get::<MatchedRoute>().map(|r| r.0.clone());
        let (limit, types) = match &route {
            Some(r) => (r.body_limit, &r.content_types),
            None => (cfg.body_limit, &cfg.content_types),
        };
        let has_body = !req.body().is_end_stream();
        if has_body {
            // hyper takes `gzip, chunked` (chunked last) and undoes only the
            // chunking; the body would go on still gzipped, with nothing
            // saying so. RFC 9112 §6.1: a coding not understood is 501. (A
            // request with a transfer coding always has a body to hyper.)
            if req.headers().contains_key(header::TRANSFER_ENCODING)
                && !crate::proxy::headers::is_chunked_only(req.headers())
            {
                let p = Problem::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "unsupported-transfer-encoding",
                    "Unsupported transfer coding",
                )
                .detail("only `Transfer-Encoding: chunked` is accepted")
                .rejected_by("guard", "transfer_encoding");
                return Either::Right(reject(&req, p));
            }
            // Two media types: this layer and inspection judge the first,
            // gunicorn (Flask, Django) hands the app the last.
            if req.headers().get_all(header::CONTENT_TYPE).iter().nth(1).is_some() {
                return Either::Right(reject(
                    &req,
                    bad_request("content_type_repeated", "more than one Content-Type header".into()),
                ));
            }
            let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            if !types.allows(req.method(), ct) {
                let p = Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                )
                .detail("this route does not accept a body of that content type")
                .rejected_by("guard", "content_type");
                return Either::Right(reject(&req, p));
            }
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                return Either::Right(reject(&req, too_large(limit)));
            }
            let timeout = cfg.body_read_timeout;
            let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
            let (min_rate, grace) = (cfg.min_body_rate, cfg.body_rate_grace);
            let req = req.map(|body| {
                let limited =
                    tower_http::timeout::TimeoutBody::new(timeout, http_body_util::Limited::new(body, limit_usize));
                if min_rate == 0 {
                    Body::new(limited)
                } else {
                    Body::new(MinRateBody::new(limited, min_rate, grace))
                }
            });
            return Either::Left(self.inner.call(req));
        }
        Either::Left(self.inner.call(req))
    }
}

/// The body arrived slower than the configured minimum rate.
#[derive(Debug, thiserror::Error)]
#[error("request body slower than the minimum rate")]
pub struct BodyTooSlow;

pin_project_lite::pin_project! {
    /// Fails a body whose rate falls below a minimum: the slow-POST defence.
    /// (A body that stops entirely is caught by the idle timeout; this one
    /// catches a trickle that never quite stops.) The rate is measured over
    /// each period of `grace` in turn, not since the start, so that a body
    /// sent fast at first and then a byte at a time is cut off too.
    ///
    /// Only time spent waiting on the client counts: from a poll that found
    /// nothing to the poll that found data. Time in which the body was not
    /// being read (the upstream not taking it yet, so the client's data waits
    /// in buffers) is not the client's slowness.
    pub struct MinRateBody<B> {
        #[pin]
        inner: B,
        // Since when the body has waited on the client, if it is waiting.
        pending_since: Option<std::time::Instant>,
        // Time waited on the client, and bytes received, in this period.
        window_waited: Duration,
        window_bytes: u64,
        min_rate: u64,
        grace: Duration,
    }
}

impl<B> MinRateBody<B> {
    pub fn new(inner: B, min_rate: u64, grace: Duration) -> Self {
        Self { inner, pending_since: None, window_waited: Duration::ZERO, window_bytes: 0, min_rate, grace }
    }
}

impl<B> http_body::Body for MinRateBody<B>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use bytes::Buf;
        let this = self.project();
        let polled = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                this.pending_since.get_or_insert_with(std::time::Instant::now);
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    *this.window_bytes = this.window_bytes.saturating_add(d.remaining() as u64);
                }
                frame
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
        };
        if let Some(since) = this.pending_since.take() {
            *this.window_waited += since.elapsed();
        }
        let waited = *this.window_waited;
        if waited > *this.grace {
            let expected = (*this.min_rate as f64 * waited.as_secs_f64()) as u64;
            if *this.window_bytes < expected {
                return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
            }
            // This period passed: the next is measured from here.
            *this.window_waited = Duration::ZERO;
            *this.window_bytes = 0;
        }
        Poll::Ready(Some(Ok(polled)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
