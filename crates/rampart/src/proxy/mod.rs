//! The proxy: forwards a request that passed every layer to its route's upstream
//! and streams the answer back.
//!
//! Bodies stream both ways (nothing is buffered). Hop-by-hop headers are removed
//! in both directions, forwarding headers set ([`headers`]), the route's header
//! rewrites applied, and WebSocket (HTTP/1.1 `Upgrade: websocket`) connections
//! tunnelled once the upstream agrees with `101` ([`tunnel`]; no other
//! upgrade). Failures map to problems: 502 when the upstream cannot be reached
//! or breaks the exchange, 504 when it does not answer within the route's
//! timeout, and 413/408 when the client's body broke a limit while streaming.

pub mod breaker;
pub mod client;
pub mod dial;
pub mod h1;
pub mod headers;
pub mod progress;
pub mod tunnel;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderValue};
use http::{StatusCode, Uri, Version};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::model::Balance;
use tower::Service;

pub use client::Upstream;

use breaker::Transition;

use crate::edge::guard::BodyFailure;
use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{ConnInfo, HttpRequest, HttpResponse, LayerFuture};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::observe::metrics::Metrics;
use crate::problem::Problem;

/// How long the upstream took to send its response head; read by the access log.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTiming(pub Duration);

/// On a response the gateway made itself after the request reached the
/// upstream (a timeout, a broken exchange): the upstream may have done the
/// work, and its cost, if any, is unknown. A budget keeps such a request's
/// reservation as its cost instead of refunding it (see
/// [`crate::limit::layer`]).
#[derive(Clone, Copy, Debug)]
pub struct OutcomeUnknown;

/// The innermost service of the stack.
#[derive(Clone)]
pub struct ProxyService {
    upstreams: Arc<[Arc<Upstream>]>,
    /// Identity headers copied into a forward-auth check's answer.
    identity: Arc<rampart_core::config::auth::IdentityHeaders>,
    /// Each upstream's latency histogram, by upstream index: resolved once
    /// here rather than looked up (lock, hash, label allocation) per request.
    latency: Arc<[prometheus_client::metrics::histogram::Histogram]>,
    metrics: Arc<Metrics>,
    /// For the audit log: circuit breakers opening and closing.
    state: Arc<LimitState>,
    /// How long a WebSocket tunnel may stay silent both ways.
    tunnel_idle: Duration,
    /// The forwarding header the trusted proxies write.
    forwarding: rampart_core::client_ip::ForwardingHeader,
}

impl std::fmt::Debug for ProxyService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyService").field("upstreams", &self.upstreams).finish_non_exhaustive()
    }
}

impl ProxyService {
    pub fn new(
        upstreams: Arc<[Arc<Upstream>]>,
        identity: rampart_core::config::auth::IdentityHeaders,
        metrics: Arc<Metrics>,
        state: Arc<LimitState>,
        server: &rampart_core::config::compile::ServerSettings,
    ) -> Self {
        let latency = upstreams.iter().map(|u| metrics.upstream_histogram(&u.settings.name)).collect();
        let (tunnel_idle, forwarding) = (server.tunnel_idle_timeout, server.trusted_proxies.header());
        Self { upstreams, identity: Arc::new(identity), latency, metrics, state, tunnel_idle, forwarding }
    }

    /// Tells the audit log when a target's circuit breaker opened or closed.
    fn report(&self, upstream: &str, target: &str, transition: Option<Transition>, request_id: Option<&RequestId>) {
        let Some(transition) = transition else { return };
        let event = AuditEvent::new(AuditKind::UpstreamCircuit).detail("upstream", upstream).detail("target", target);
        let mut event = match transition {
            Transition::Opened { failures, probe } => {
                event.detail("state", "open").detail("failures", failures).detail("failed_probe", probe)
            }
            Transition::Closed => event.detail("state", "closed"),
        };
        if let Some(id) = request_id {
            event = event.request_id(id.as_str());
        }
        self.state.audit(event);
    }

    /// The answer to a forward-auth check that every layer let through: 200
    /// with the identity headers the proxy should pass on.
    fn allow_check(&self, req: &HttpRequest) -> HttpResponse {
        // The front proxy sends the client's own headers to the app, not ours:
        // an underscored copy of a vouched header would reach it, and a
        // CGI-style server reads it as the real one. nginx drops such headers
        // itself; Caddy and Traefik pass them on.
        if headers::has_underscore_alias(req.headers(), &self.identity) {
            return Problem::new(StatusCode::BAD_REQUEST, "bad-forward-auth", "Bad request")
                .detail("the request carries an underscored copy of a forwarding or identity header")
                .rejected_by("forward_auth", "underscore_alias")
                .into_response_for(req.extensions());
        }
        let mut resp = http::Response::new(axum::body::Body::empty());
        for name in self.identity.all() {
            if let Some(v) = req.headers().get(name) {
                resp.headers_mut().insert(name.clone(), v.clone());
            }
        }
        if let Some(id) = req.extensions().get::<RequestId>() {
            if let Ok(v) = HeaderValue::from_str(id.as_str()) {
                resp.headers_mut().insert(http::header::HeaderName::from_static("x-request-id"), v);
            }
        }
        resp
    }
}

impl Service<HttpRequest> for ProxyService {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = LayerFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

/// The path sent upstream: the upstream's base path, then the request path with
/// the route's `strip_prefix` removed (only at a segment boundary), then the query.
fn upstream_path_and_query(base: &str, strip: Option<Strip<'_>>, path: &str, query: Option<&str>) -> String {
    let rest = match stripped(strip, path) {
        Some("") => "/",
        Some(after) => after,
        None => path,
    };
    let mut out = String::with_capacity(base.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(base);
    out.push_str(rest);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A route's `strip_prefix`, and whether the case of its letters counts.
#[derive(Clone, Copy)]
struct Strip<'a> {
    prefix: &'a str,
    any_case: bool,
}

impl<'a> Strip<'a> {
    fn of(route: &'a rampart_core::config::RoutePolicy) -> Option<Self> {
        Some(Self { prefix: route.strip_prefix.as_deref()?, any_case: route.strip_prefix_any_case })
    }
}

/// What is left of `path` once the route's `strip_prefix` is removed; `None`
/// when there is none or it does not end at a segment boundary of `path`.
fn stripped<'a>(strip: Option<Strip<'_>>, path: &'a str) -> Option<&'a str> {
    let strip = strip?;
    let after = match strip.any_case {
        false => path.strip_prefix(strip.prefix)?,
        true => {
            let head = path.get(..strip.prefix.len())?;
            head.eq_ignore_ascii_case(strip.prefix).then(|| &path[strip.prefix.len()..])?
        }
    };
    (after.is_empty() || after.starts_with('/')).then_some(after)
}

/// True when `path` reaches the route's `strip_prefix` only once decoded
/// (`/%61pi/users` for `/api`), without segment parameters (`/api;x/users`)
/// or, where case does not count, case-folded beyond ASCII: routes match that
/// reading, the prefix is cut from the path as sent, so such a request would
/// reach the upstream with its prefix on, at a path the route never meant to
/// expose.
fn encoded_prefix(strip: Strip<'_>, path: &str) -> bool {
    if stripped(Some(strip), path).is_some() {
        return false;
    }
    let opts = rampart_core::path::PathOptions { allow_encoded_slash: true };
    rampart_core::path::normalize_path(path, &opts).is_ok_and(|decoded| {
        let plain = rampart_core::path::without_params(&decoded);
        match strip.any_case {
            false => stripped(Some(strip), &plain).is_some(),
            true => {
                use rampart_core::config::compile::fold_case;
                let (plain, prefix) = (fold_case(&plain), fold_case(strip.prefix));
                stripped(Some(Strip { prefix: &prefix, any_case: false }), &plain).is_some()
            }
        }
    })
}

/// The request target sent upstream, in origin form (see
/// [`upstream_path_and_query`]): the client's own when nothing changes it,
/// which spares a copy and a parse per request.
fn upstream_uri(base: &str, strip: Option<Strip<'_>>, uri: &Uri) -> Result<Uri, http::uri::InvalidUri> {
    if base.is_empty() && stripped(strip, uri.path()).is_none() && uri.scheme().is_none() && uri.authority().is_none() {
        return Ok(uri.clone());
    }
    Uri::try_from(upstream_path_and_query(base, strip, uri.path(), uri.query()))
}

/// Methods whose repetition has no further effect (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

impl ProxyService {
    async fn forward(&self, mut req: HttpRequest) -> HttpResponse {
        let Some(MatchedRoute(route)) = req.extensions().get::<MatchedRoute>().cloned() else {
            return Problem::new(StatusCode::NOT_FOUND, "no-route", "Not found")
                .detail("no route matches this request")
                .rejected_by("route", "no_route")
                .into_response_for(req.extensions());
        };
        // The app would run it as another method than the one judged here,
        // whether Rampart passes it on or only checked it.
        if headers::has_method_override(req.headers()) {
            return method_override_refused(&req);
        }
        if req.extensions().get::<crate::edge::forward_auth::ForwardAuthCheck>().is_some() {
            return self.allow_check(&req);
        }
        let Some(up) = self.upstreams.get(route.upstream).cloned() else {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                .into_response_for(req.extensions());
        };
        let settings = &up.settings;

        // Only WebSocket is tunnelled; any other `Upgrade` (`h2c` above all)
        // goes with the hop-by-hop headers, and the request as a plain one.
        let websocket = tunnel::is_websocket_upgrade(&req);
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
        let hold = if websocket { req.extensions_mut().remove::<tunnel::ConnectionHold>() } else { None };

        let conn = req.extensions().get::<ConnInfo>().copied();
        let client = req.extensions().get::<ClientInfo>().copied();
        let request_id = req.extensions().get::<RequestId>().cloned();
        let original_host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
        let from_h2 = req.version() == Version::HTTP_2;
        let headers = req.headers_mut();
        headers::strip_hop_by_hop(headers);
        headers::strip_underscore_aliases(headers, &self.identity);
        // The session cookie is a credential for the gateway, never for the
        // upstream, whether or not it authenticated this request (`auth =
        // "none"` routes, other credentials, sessions off for the route).
        if let Some(sessions) = self.state.identity().and_then(|i| i.sessions.as_ref()) {
            crate::auth::strip_cookie(headers, &sessions.settings.cookie_name);
        }
        if from_h2 {
            headers::join_cookie_crumbs(headers);
        }
        if let Some(client) = &client {
            let https = conn.is_some_and(|c| c.tls) || client.forwarded_https;
            // Canonical, as the client address is: on a dual-stack listener
            // an IPv4 peer is `::ffff:a.b.c.d` to the socket.
            let peer = conn.map_or(client.ip, |c| c.peer.ip().to_canonical());
            let hop = headers::Hop { client, peer, https, host: original_host.as_ref(), header: self.forwarding };
            headers::set_forwarded(headers, &hop);
        }
        route.request_headers.apply(headers);
        if websocket {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        let client_uri = req.uri().clone();
        if let Some(strip) = Strip::of(&route) {
            if encoded_prefix(strip, client_uri.path()) {
                return Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
                    .detail("the path spells the route's prefix with percent-encoding or parameters")
                    .rejected_by("proxy", "encoded_prefix")
                    .into_response_with(request_id.as_ref());
            }
        }

        // A request can be sent again only if repeating it is harmless and
        // nothing of it has been consumed: idempotent, bodiless, not an upgrade.
        let retryable = is_idempotent(req.method()) && req.body().is_end_stream() && !websocket;
        let attempts = if retryable { settings.retries.attempts.max(1) } else { 1 };
        let timeout = route.timeout.unwrap_or(settings.response_timeout);
        let mut pending = Some(req);
        // The targets tried so far (no more than the attempts validation allows).
        let mut tried = [0usize; rampart_core::config::model::MAX_ATTEMPTS as usize];
        let mut tried_count = 0;
        let mut backoff = settings.retries.backoff;

        for attempt in 1..=attempts {
            let (index, permit) = match up.pick(&tried[..tried_count]) {
                Ok(p) => p,
                Err(wait) => {
                    self.metrics.upstream_error(&settings.name, "circuit_open");
                    return Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream-unavailable",
                        "Upstream unavailable",
                    )
                    .detail("the upstream is failing and temporarily taken out of service")
                    .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
                    .rejected_by("proxy", "circuit_open")
                    .into_response_with(request_id.as_ref());
                }
            };
            if let Some(t) = tried.get_mut(tried_count) {
                *t = index;
                tried_count += 1;
            }
            let target = permit.target().target.clone();
            let held = permit.target().clone();
            let Some(mut req) = pending.take() else { break };
            // For a retry, the request must outlive this attempt: plain-text
            // HTTP/1.1 targets hand back a request they could not send (the
            // only kind retried); for other targets, keep a bodiless copy.
            // (Retried requests are bodiless: see `retryable`.)
            if attempt < attempts && !up.hands_back_unsent(index) {
                pending = Some(copy_bodiless(&req));
            }
            let Ok(uri) = upstream_uri(&target.base_path, Strip::of(&route), &client_uri) else {
                return Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request")
                    .detail("the request target cannot be forwarded")
                    .rejected_by("proxy", "bad_target")
                    .into_response_with(request_id.as_ref());
            };
            let host = match (&original_host, settings.preserve_host) {
                (Some(h), true) => h.clone(),
                _ => target.host_header.clone(),
            };
            req.headers_mut().insert(header::HOST, host);
            *req.uri_mut() = uri;
            *req.version_mut() = Version::HTTP_11;

            // A body is tracked: the timeout counts from when it last moved
            // (see `progress`). Bodiless requests, the usual case, are not.
            let progress = (!req.body().is_end_stream()).then(|| {
                let (body, progress) = progress::track(std::mem::take(req.body_mut()));
                *req.body_mut() = body;
                progress
            });
            let started = Instant::now();
            let result = match progress.as_deref() {
                Some(p) => progress::within(up.send(index, req), timeout, p).await,
                None => tokio::time::timeout(timeout, up.send(index, req))
                    .await
                    .map_err(|_| progress::TimedOut { body_sent: true }),
            };
            let elapsed = started.elapsed();
            if let Some(h) = self.latency.get(route.upstream) {
                h.observe(elapsed.as_secs_f64());
            }

            let resp = match result {
                Err(progress::TimedOut { body_sent: false }) => {
                    // The body stopped moving on its way: the client or the
                    // upstream paused. Not counted against the target, or slow
                    // uploads could take it out of service for everyone.
                    drop(permit);
                    self.metrics.upstream_error(&settings.name, "timeout");
                    return Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", "Upstream timed out")
                        .detail("the request body stopped moving on its way to the upstream")
                        .rejected_by("proxy", "body_stalled")
                        .into_response_with(request_id.as_ref());
                }
                Err(progress::TimedOut { body_sent: true }) => {
                    // The upstream may have acted on it: never retried.
                    self.report(&settings.name, &held.label, permit.finish(false), request_id.as_ref());
                    self.metrics.upstream_error(&settings.name, "timeout");
                    let mut resp = Problem::new(StatusCode::GATEWAY_TIMEOUT, "upstream-timeout", "Upstream timed out")
                        .detail("the upstream did not answer in time")
                        .rejected_by("proxy", "upstream_timeout")
                        .into_response_with(request_id.as_ref());
                    resp.extensions_mut().insert(OutcomeUnknown);
                    return resp;
                }
                Ok(Err(client::SendError { error: e, unsent })) => {
                    // Handed back unsent: the upstream never saw it.
                    let sent = unsent.is_none();
                    if let Some(back) = unsent {
                        pending.get_or_insert(back);
                    }
                    if let Some(f) = BodyFailure::of(&e) {
                        drop(permit);
                        return f.problem(route.body_limit).into_response_with(request_id.as_ref());
                    }
                    self.report(&settings.name, &held.label, permit.finish(false), request_id.as_ref());
                    let connect = e.is_connect();
                    self.metrics.upstream_error(&settings.name, if connect { "connect" } else { "protocol" });
                    tracing::warn!(upstream = %settings.name, target = %target.authority, attempt, error = %error_chain(&e), "upstream request failed");
                    if connect && attempt < attempts {
                        tokio::time::sleep(backoff).await;
                        backoff = backoff.saturating_mul(2);
                        continue;
                    }
                    let mut resp = Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "Bad gateway")
                        .detail("the upstream could not be reached or broke the exchange")
                        .rejected_by("proxy", "upstream_error")
                        .into_response_with(request_id.as_ref());
                    if !connect && sent {
                        // Sent, perhaps acted on: see `OutcomeUnknown`.
                        resp.extensions_mut().insert(OutcomeUnknown);
                    }
                    return resp;
                }
                Ok(Ok(resp)) => resp,
            };
            let failed = matches!(resp.status().as_u16(), 502..=504);
            let mut resp = if settings.balance == Balance::LeastInFlight && up.targets.len() > 1 {
                // Counted in flight until the body has gone: a streamed
                // answer keeps its target busy long after the head.
                let (transition, in_flight) = permit.finish_holding(!failed);
                self.report(&settings.name, &held.label, transition, request_id.as_ref());
                resp.map(|inner| Body::new(progress::Holding { inner, held: in_flight }))
            } else {
                self.report(&settings.name, &held.label, permit.finish(!failed), request_id.as_ref());
                resp
            };

            match (resp.status(), client_upgrade) {
                (StatusCode::SWITCHING_PROTOCOLS, Some(client_side))
                    if resp.headers().get(header::UPGRADE).is_some_and(tunnel::names_websocket) =>
                {
                    // The answer's own hop-by-hop headers (and any header its
                    // `Connection` names) stay on the upstream's side; the
                    // switch itself is announced again.
                    let upgrade = resp.headers_mut().remove(header::UPGRADE);
                    headers::strip_hop_by_hop(resp.headers_mut());
                    if let Some(upgrade) = upgrade {
                        resp.headers_mut().insert(header::UPGRADE, upgrade);
                    }
                    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    let upstream_side = hyper::upgrade::on(&mut resp);
                    let idle = self.tunnel_idle;
                    tokio::spawn(async move {
                        let (Ok(c), Ok(u)) = tokio::join!(client_side, upstream_side) else {
                            tracing::debug!("upgrade did not complete");
                            return;
                        };
                        tunnel::run(TokioIo::new(c), TokioIo::new(u), idle, hold).await;
                    });
                }
                (StatusCode::SWITCHING_PROTOCOLS, _) => {
                    // A switch nobody asked for, or to another protocol than
                    // the one asked for: nothing can be relayed.
                    self.metrics.upstream_error(&settings.name, "protocol");
                    return Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "Bad gateway")
                        .detail("the upstream switched to a protocol that was not asked for")
                        .rejected_by("proxy", "bad_upgrade")
                        .into_response_with(request_id.as_ref());
                }
                _ => {
                    if resp.headers().contains_key(header::TRANSFER_ENCODING) {
                        // hyper has decoded the chunks and left the headers.
                        // A `Content-Length` beside them is void (RFC 9112
                        // §6.3) and, kept, would frame the answer to the
                        // client by it; another coding hyper has not undone.
                        if !headers::is_chunked_only(resp.headers()) {
                            self.metrics.upstream_error(&settings.name, "protocol");
                            return Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "Bad gateway")
                                .detail("the upstream's answer used a transfer coding other than chunked")
                                .rejected_by("proxy", "bad_framing")
                                .into_response_with(request_id.as_ref());
                        }
                        resp.headers_mut().remove(header::CONTENT_LENGTH);
                    }
                    headers::strip_hop_by_hop(resp.headers_mut())
                }
            }
            route.response_headers.apply(resp.headers_mut());
            resp.extensions_mut().insert(UpstreamTiming(elapsed));
            return resp;
        }
        Problem::new(StatusCode::BAD_GATEWAY, "upstream-unavailable", "Bad gateway")
            .detail("the upstream could not be reached")
            .rejected_by("proxy", "upstream_error")
            .into_response_with(request_id.as_ref())
    }
}

/// A copy of a bodiless request for a retry: method, URI, version and headers.
pub(crate) fn copy_bodiless(req: &HttpRequest) -> HttpRequest {
    let mut copy = http::Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// "outer: inner: innermost", for logs (never includes request data).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The refusal of a request carrying `X-HTTP-Method-Override` or the like
/// (see `headers::METHOD_OVERRIDES`): routes, limits and auth judged the
/// request's own method, and the app would run another.
fn method_override_refused(req: &HttpRequest) -> HttpResponse {
    Problem::new(StatusCode::BAD_REQUEST, "method-override", "Method override refused")
        .detail("send the method itself instead of X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override")
        .rejected_by("proxy", "method_override")
        .into_response_for(req.extensions())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A prefix whose case counts.
    fn exact(prefix: &str) -> Option<Strip<'_>> {
        Some(Strip { prefix, any_case: false })
    }

    #[test]
    fn upstream_paths() {
        let check = |base, strip, path, q, want: &str| assert_eq!(upstream_path_and_query(base, strip, path, q), want);
        check("", None, "/a/b", None, "/a/b");
        check("/base", None, "/a", Some("x=1"), "/base/a?x=1");
        check("", exact("/api"), "/api/users", None, "/users");
        check("", exact("/api"), "/api", None, "/");
        check("", exact("/api"), "/apix/users", None, "/apix/users");
        check("/v2", exact("/api"), "/api/u", Some("q"), "/v2/u?q");
        check("", exact("/api"), "/API/users", None, "/API/users");
        // Where case does not count, neither does it in the prefix.
        let any_case = Some(Strip { prefix: "/api", any_case: true });
        check("", any_case, "/API/users", None, "/users");
        check("", any_case, "/Api", None, "/");
        check("", any_case, "/APIx/users", None, "/APIx/users");
        check("", any_case, "/A", None, "/A");
    }

    #[test]
    fn a_prefix_spelt_in_percent_encoding_is_found() {
        let encoded = |prefix, path| encoded_prefix(Strip { prefix, any_case: false }, path);
        assert!(encoded("/api", "/%61pi/users"));
        assert!(encoded("/api", "/%61%70%69"));
        assert!(encoded("/api/v1", "/api/v%31/x"));
        assert!(!encoded("/api", "/api/users"));
        assert!(!encoded("/api", "/apix/users"));
        assert!(!encoded("/api", "/other/%61pi"));
        assert!(!encoded("/api", "/%zz"));
        // Parameters in the prefix: routed as `/api/users`, sent as is.
        assert!(encoded("/api", "/api;x/users"));
        assert!(encoded("/api", "/api;x"));
        assert!(!encoded("/api", "/api/users;x"));
        // Another case is another path where case counts.
        assert!(!encoded("/api", "/API/users"));
        // Where it does not, encoded letters of any case are found, and so
        // is a prefix that only Unicode lower-casing reaches (the Kelvin
        // sign, U+212A, for `k`).
        let any_case = |prefix, path| encoded_prefix(Strip { prefix, any_case: true }, path);
        assert!(!any_case("/api", "/API/users"));
        assert!(any_case("/api", "/%41PI/users"));
        assert!(any_case("/kv", "/%E2%84%AAv/x"));
        assert!(!any_case("/api", "/other"));
    }

    #[test]
    fn upstream_uri_is_the_clients_when_nothing_changes_it() {
        let cases = [
            ("", None, "/a/b?x=1"),
            ("", exact("/api"), "/apix/users"),
            ("", exact("/api"), "/api/users?q"),
            ("", exact("/api"), "/api"),
            ("/base", None, "/a?x=1"),
            ("", None, "http://example.com/abs?x=1"),
            ("/v2", exact("/api"), "http://example.com/api/u"),
            ("", None, "*"),
            ("", Some(Strip { prefix: "/api", any_case: true }), "/API/users?q"),
        ];
        for (base, strip, uri) in cases {
            let uri: Uri = uri.parse().unwrap();
            let slow = upstream_path_and_query(base, strip, uri.path(), uri.query());
            assert_eq!(upstream_uri(base, strip, &uri).unwrap().to_string(), slow, "{base} {uri}");
        }
    }
}
