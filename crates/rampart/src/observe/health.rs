//! The operations listener: `/metrics`, `/healthz` (the process is alive) and
//! `/readyz` (it accepts traffic: listening and not shutting down; 503 otherwise,
//! and `"status": "degraded"` with the list when a dependency is degraded).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http::{header, HeaderMap, StatusCode};
use rampart_core::config::secret::Secret;
use serde::Deserialize;

use super::Metrics;
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

#[derive(Clone)]
struct OpsState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    limits: Arc<LimitState>,
    admin_token: Option<Secret>,
}

/// The router of the operations listener. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the admin endpoints
/// check the caller's address when no token is configured.
pub fn ops_router(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    limits: Arc<LimitState>,
    admin_token: Option<Secret>,
) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .route("/bans", get(list_bans).post(add_ban))
        .route("/bans/{ip}", delete(remove_ban))
        .route("/top", get(top))
        .with_state(OpsState { metrics, health, limits, admin_token })
}

/// The admin endpoints need the configured bearer token, or, without one, a
/// loopback caller. The token is compared in constant time.
fn refusal(s: &OpsState, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    use subtle::ConstantTimeEq;
    let ok = match &s.admin_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))),
        None => peer.ip().to_canonical().is_loopback(),
    };
    (!ok).then(|| {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
            .detail("this endpoint needs the admin token")
            .into_response_with(None)
    })
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

async fn add_ban(
    State(s): State<OpsState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = refusal(&s, peer, &headers) {
        return r;
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
    let ban = s.limits.bans.add(ip, ttl, &reason, "manual").await;
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
