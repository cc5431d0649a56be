//! The operations listener: `/metrics`, `/healthz` (the process is alive) and
//! `/readyz` (it accepts traffic: listening and not shutting down; 503 otherwise,
//! and `"status": "degraded"` with the list when a dependency is degraded).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequest, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http::{header, HeaderMap, StatusCode};
use serde::Deserialize;

use super::Metrics;
use crate::app::SharedRuntime;
use crate::limit::LimitState;
use crate::problem::Problem;

/// Readiness, shared between the server and the operations listener.
#[derive(Debug, Default)]
pub struct Health {
    serving: AtomicBool,
    /// Dependencies currently degraded, by name (e.g. `redis`).
    degraded: Mutex<Vec<&'static str>>,
}

impl Health {
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    pub fn set_degraded(&self, what: &'static str, degraded: bool) {
        let mut list = self.degraded.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| *w != what);
        if degraded {
            list.push(what);
        }
    }

    pub fn degraded(&self) -> Vec<&'static str> {
        self.degraded.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The largest body the operations listener reads.
const MAX_OPS_BODY: usize = 4096;

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    limits: Arc<LimitState>,
    /// The running policy, for `[metrics] admin_token`: read per request, so a
    /// reload that changes the token takes effect at once.
    shared: SharedRuntime,
}

/// The router of the operations listener. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the admin endpoints
/// check the caller's address when no token is configured.
///
/// Each request, its body included, is answered within `request_timeout`
/// (408 otherwise): the listener holds few connections, and a client that
/// sends a head announcing a body and then nothing would otherwise keep its
/// slot for good.
pub fn ops_router(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    limits: Arc<LimitState>,
    shared: SharedRuntime,
    request_timeout: Duration,
) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/bans", get(list_bans).post(add_ban))
        .route("/bans/{ip}", delete(remove_ban))
        .route("/top", get(top))
        // A ban is a few dozen bytes; anyone may send a body before being
        // refused, so none is read past this.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_OPS_BODY))
        // Outermost, so that it bounds the body read as well as the handler.
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| async move {
            match tokio::time::timeout(request_timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => Problem::new(StatusCode::REQUEST_TIMEOUT, "request-timeout", "Request timeout")
                    .detail("the request was not complete in time")
                    .into_response_with(None),
            }
        }))
        .with_state(OpsState { metrics, health, limits, shared })
}

/// The admin endpoints need the configured bearer token, or, without one, a
/// loopback caller that is not a web page: a browser on the gateway's host is
/// a loopback caller too, and a page it shows could otherwise ban or unban
/// addresses with a simple cross-origin request, or read the lists through
/// DNS rebinding. So without a token a request is refused when it carries an
/// `Origin`, a `Sec-Fetch-Site` other than `none` (what browsers send for
/// requests a page makes), or a `Host` that is a name other than `localhost`.
/// A token is compared in constant time; a browser never sends one
/// cross-origin without a preflight this listener does not answer.
fn refusal(s: &OpsState, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    let runtime = s.shared.load();
    let ok = match &runtime.policy.admin_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))),
        None => {
            if !peer.ip().to_canonical().is_loopback() {
                false
            } else if let Some(why) = from_a_page(headers) {
                return Some(
                    Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                        .detail(format!("{why}; without an admin token only local tools may use this endpoint"))
                        .into_response_with(None),
                );
            } else {
                true
            }
        }
    };
    (!ok).then(|| {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            .detail("this endpoint needs the admin token")
            .into_response_with(None)
    })
}

/// Why a request looks like one a web page made (see [`refusal`]), if it does.
fn from_a_page(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        return Some("the request comes from a web page (Origin)");
    }
    if headers.get_all("sec-fetch-site").iter().any(|v| v.as_bytes() != b"none") {
        return Some("the request comes from a web page (Sec-Fetch-Site)");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_ok = match (hosts.next(), hosts.next()) {
        (None, _) => true,
        (Some(host), None) => host.to_str().is_ok_and(local_host),
        (Some(_), Some(_)) => false,
    };
    (!host_ok).then_some("the Host is not an address or localhost (DNS rebinding?)")
}

/// An IP address or `localhost`, with or without a port.
fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:9090`
        Some(rest) => return rest.split_once(']').is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok()),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

async fn list_bans(
    State(s): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refusal(&s, peer, &headers) {
        return r;
    }
    Json(s.limits.bans.list()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    ip: String,
    /// A duration like `1h`; default one hour.
    ttl: Option<String>,
    reason: Option<String>,
}

fn bad_request(detail: String) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail).into_response_with(None)
}

async fn add_ban(State(s): State<OpsState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request) -> Response {
    // The caller is checked on the head alone: nobody may make the listener
    // wait for a body before being refused.
    let (parts, body) = request.into_parts();
    if let Some(r) = refusal(&s, peer, &parts.headers) {
        return r;
    }
    let headers = parts.headers.clone();
    let body = match axum::body::Bytes::from_request(Request::from_parts(parts, body), &s).await {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large")
                .detail(format!("a ban is at most {MAX_OPS_BODY} bytes"))
                .into_response_with(None)
        }
        Err(e) => return bad_request(format!("the body could not be read: {}", e.body_text())),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !json {
        return Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            .detail("send the ban as `Content-Type: application/json`")
            .into_response_with(None);
    }
    let req: NewBan = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return bad_request(format!("expected {{\"ip\", \"ttl\", \"reason\"}}: {e}")),
    };
    let Ok(ip) = req.ip.parse::<IpAddr>() else {
        return bad_request("`ip` is not an IP address".into());
    };
    let ttl = match req.ttl.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(3600),
        Some(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(366 * 86_400) => d,
        Some(_) => return bad_request("`ttl` must be a duration like `30m` or `24h`, at most a year".into()),
    };
    let reason = req.reason.unwrap_or_else(|| "manual".into());
    let Some(ban) = s.limits.bans.add(ip, ttl, &reason, "manual").await else {
        return crate::limit::bans::ban_list_full().into_response_with(None);
    };
    (StatusCode::CREATED, Json(ban)).into_response()
}

async fn remove_ban(
    State(s): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Response {
    if let Some(r) = refusal(&s, peer, &headers) {
        return r;
    }
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return bad_request("not an IP address".into());
    };
    if s.limits.bans.remove(ip).await {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
            .detail("no ban on that address")
            .into_response_with(None)
    }
}

async fn top(State(s): State<OpsState>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&s, peer, &headers) {
        return r;
    }
    Json(s.limits.abuse.top()).into_response()
}

async fn render_metrics(State(s): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.render())
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    let degraded = s.health.degraded();
    if !s.health.is_serving() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "not_serving" })));
    }
    // A degraded dependency has a documented fallback, so the instance keeps
    // taking traffic; pulling every instance out of a load balancer during a
    // Redis outage would turn a partial failure into a total one.
    if !degraded.is_empty() {
        return (StatusCode::OK, Json(serde_json::json!({ "status": "degraded", "degraded": degraded })));
    }
    (StatusCode::OK, Json(serde_json::json!({ "status": "ready" })))
}
