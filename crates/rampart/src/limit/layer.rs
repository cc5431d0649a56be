//! The rate-limit layer: every limit of the matched route, decided in one call to
//! the limiter, before the request goes further; budgets settled after the
//! response against the cost the upstream reports.
//!
//! The layer sits at two places in the stack, and each route's limits are
//! decided at exactly one of them, in one call (one Redis round trip), so a
//! refused request charges none of its limits and the response carries one set
//! of headers naming the tightest limit:
//!
//! - [`Stage::Anonymous`], before authentication, for routes whose limits are
//!   all keyed by IP, route or globally: floods are refused before any auth work;
//! - [`Stage::Principal`], after it, for routes with any limit keyed by user,
//!   API key or tier ([`RoutePolicy::limits_after_auth`]): there every limit of
//!   the route is decided, the address limits included. A limit needing a
//!   principal is skipped for anonymous requests (on `auth = "optional"`
//!   routes), which still meet the route's other limits.
//!
//! [`RoutePolicy::limits_after_auth`]: rampart_core::config::RoutePolicy::limits_after_auth
//!
//! A refusal is 429 (503 for a global budget: the service, not the caller, ran
//! out) with `Retry-After`, the rate-limit headers, and a strike towards an
//! automatic ban of the client address.
//!
//! A budget with a `reserve` is checked like a rate of that weight, so the
//! requests running at once hold their reservations and cannot together spend
//! what is not there; after the response, [`settle_budgets`] debits the cost
//! beyond the reservation or refunds what it did not use. Without one the
//! budget is only peeked (anything left lets the request through).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::StatusCode;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::limits::{CompiledLimit, LimitKind, BUDGET_SCALE};
use rampart_core::config::model::RedisFallback;
use rampart_core::config::LimitSettings;
use rampart_core::principal::Principal;
use tower::{Layer, Service};

use super::headers::{ceil_secs, set_headers, LimitOutcome};
use super::{limit_key, Decision, LimitCheck, LimitState, Op, Store, Subject, Undecided};
use crate::edge::forward_auth::ForwardAuthCheck;
use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, Inner, LayerFuture};
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;

/// Where in the stack a rate-limit layer sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Anonymous,
    Principal,
}

#[derive(Clone)]
pub struct RateLimitLayer {
    state: Arc<LimitState>,
    settings: Arc<LimitSettings>,
    stage: Stage,
}

impl RateLimitLayer {
    pub fn new(state: Arc<LimitState>, settings: Arc<LimitSettings>, stage: Stage) -> Self {
        Self { state, settings, stage }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService { inner, state: self.state.clone(), settings: self.settings.clone(), stage: self.stage }
    }
}

#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    state: Arc<LimitState>,
    settings: Arc<LimitSettings>,
    stage: Stage,
}

/// The limits that apply to one request, with their keys.
struct Applied {
    limits: Vec<Arc<CompiledLimit>>,
    checks: Vec<LimitCheck>,
}

impl Applied {
    /// The checks that reserve budget, with their limits.
    fn reserving(&self) -> impl Iterator<Item = (&Arc<CompiledLimit>, &LimitCheck)> {
        self.limits.iter().zip(&self.checks).filter(|(l, c)| l.is_budget() && c.op == Op::Check && c.weight > 0)
    }

    fn reserves(&self) -> bool {
        self.reserving().next().is_some()
    }
}

/// [`crate::limit::Limiter::apply`] in a task of its own, for a request that
/// reserves budget in Redis. A request can go away while the call runs (a
/// client that hangs up, an HTTP/2 stream reset), and the request's future
/// with it: the reservations the script took would then be held until the
/// budget refilled, so anyone could drain a shared budget without any
/// upstream work. Here the call runs to its end, and a result nobody is
/// waiting for any more is given back.
async fn decide_detached(
    state: &Arc<LimitState>,
    applied: &Applied,
    fallbacks: &[RedisFallback],
) -> Result<(Vec<Decision>, Store), Undecided> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let refunds: Vec<(LimitCheck, RedisFallback)> =
        applied.reserving().map(|(l, c)| (LimitCheck { op: Op::Refund, ..c.clone() }, l.on_redis_down)).collect();
    let (state, checks, fallbacks) = (state.clone(), applied.checks.clone(), fallbacks.to_vec());
    tokio::spawn(async move {
        let decided = state.limiter.decide(&checks, &fallbacks).await;
        // A refused batch took nothing; an allowed one took every reservation.
        if let Err(Ok((decisions, store))) = tx.send(decided) {
            if decisions.iter().all(|d| d.allowed) {
                let (refunds, fallbacks): (Vec<_>, Vec<_>) = refunds.into_iter().unzip();
                if state.limiter.settle(store, &refunds, &fallbacks).await.is_err() {
                    tracing::warn!("reservations of an abandoned request lost: redis unavailable");
                }
            }
        }
    });
    rx.await.unwrap_or(Err(Undecided::RedisDown))
}

impl<S: Inner> Service<HttpRequest> for RateLimitService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Some(applied) = self.applicable(&req) else {
            return futures_util::future::Either::Left(self.inner.call(req));
        };
        let state = self.state.clone();
        let mut inner = take_ready(&mut self.inner);
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        futures_util::future::Either::Right(Box::pin(async move {
            let fallbacks: Vec<RedisFallback> = applied.limits.iter().map(|l| l.on_redis_down).collect();
            let decided = if applied.reserves() && state.limiter.redis.is_some() {
                decide_detached(&state, &applied, &fallbacks).await
            } else {
                state.limiter.decide(&applied.checks, &fallbacks).await
            };
            let (decisions, store) = match decided {
                Ok(d) => d,
                Err(Undecided::RedisDown) => {
                    let resp =
                        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "limits-unavailable", "Service unavailable")
                            .detail("rate limiting is temporarily unavailable")
                            .retry_after(1)
                            .rejected_by("limit", "redis_down")
                            .into_response_for(req.extensions());
                    return Ok(resp);
                }
            };
            let outcomes = outcomes(&applied.limits, &decisions);
            if let Some((i, refused)) =
                decisions.iter().enumerate().filter(|(_, d)| !d.allowed).max_by_key(|(_, d)| d.retry_after_ns)
            {
                let limit = &applied.limits[i];
                let (status, kind, reason) = match (limit.is_global_budget(), limit.is_budget()) {
                    (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "budget-exhausted", "global_budget"),
                    (false, true) => (StatusCode::TOO_MANY_REQUESTS, "budget-exhausted", "budget"),
                    (false, false) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "rate"),
                };
                let title = if limit.is_budget() { "Budget exhausted" } else { "Too many requests" };
                let mut resp = Problem::new(status, kind, title)
                    .detail(format!("limit `{}` allows no more requests for now", limit.name))
                    .retry_after(ceil_secs(refused.retry_after_ns).max(1))
                    .rejected_by("limit", reason)
                    .into_response_for(req.extensions());
                set_headers(resp.headers_mut(), &outcomes);
                // A strike (towards a ban) only for a limit of the caller's
                // own: a shared one refuses whoever comes after it is spent.
                if let (Some(ip), true) = (ip, limit.is_per_client()) {
                    state.strike(ip, super::bans::Strike::RateLimited);
                }
                state.audit_once(&applied.checks[i].key, || {
                    let kind = if limit.is_budget() { AuditKind::BudgetExhausted } else { AuditKind::RateLimited };
                    let mut event =
                        AuditEvent::new(kind).detail("limit", &*limit.name).detail("status", status.as_u16());
                    if let Some(p) = req.extensions().get::<Principal>() {
                        event = event.subject(p.subject.clone());
                    }
                    if let Some(ip) = ip {
                        event = event.ip(ip);
                    }
                    if let Some(id) = req.extensions().get::<crate::edge::request_id::RequestId>() {
                        event = event.request_id(id.as_str());
                    }
                    event
                });
                return Ok(resp);
            }
            let budgets: Vec<_> = applied
                .limits
                .iter()
                .zip(&applied.checks)
                .filter(|(l, _)| l.is_budget())
                .map(|(l, c)| (l.clone(), c.clone()))
                .collect();
            let mut resp = if budgets.is_empty() {
                inner.call(req).await?
            } else {
                // Budgets are debited from the response's cost header, so the
                // exchange runs in a task of its own: a client that hangs up
                // before the answer (the upstream having done the paid work)
                // does not escape the debit. The task still waits for the
                // response head, bounded by the route's timeout, debits, and
                // drops the response.
                let request_id = req.extensions().get::<RequestId>().cloned();
                let checked = req.extensions().get::<ForwardAuthCheck>().is_some();
                // The request stays in flight (per-address and overall caps)
                // for as long as the exchange runs, hung up or not.
                let held = req.extensions().get::<super::shed::HeldSlot>().cloned();
                let fut = inner.call(req);
                let state = state.clone();
                let exchange = tokio::spawn(async move {
                    let resp = fut.await?;
                    let known = !checked && resp.extensions().get::<crate::proxy::OutcomeUnknown>().is_none();
                    settle_budgets(&state, store, &budgets, known.then(|| resp.headers()));
                    drop(held);
                    Ok::<_, Infallible>(resp)
                });
                match exchange.await {
                    Ok(resp) => resp?,
                    Err(e) => {
                        tracing::error!(error = %e, "request task failed");
                        return Ok(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                            .into_response_with(request_id.as_ref()));
                    }
                }
            };
            set_headers(resp.headers_mut(), &outcomes);
            Ok(resp)
        }))
    }
}

impl<S> RateLimitService<S> {
    fn applicable(&self, req: &HttpRequest) -> Option<Applied> {
        let route = req.extensions().get::<MatchedRoute>()?;
        let stage = if route.0.limits_after_auth { Stage::Principal } else { Stage::Anonymous };
        if route.0.limits.is_empty() || stage != self.stage {
            return None;
        }
        let client = req.extensions().get::<ClientInfo>()?;
        if self.settings.is_exempt(client.ip, req.uri().path()) {
            return None;
        }
        let principal = req.extensions().get::<Principal>();
        let who = Subject { ip: client.ip, clients: self.state.clients, route: &route.0.name, principal };
        let tier = principal.and_then(|p| p.tier.as_deref());
        let mut applied = Applied { limits: Vec::new(), checks: Vec::new() };
        for limit in &route.0.limits {
            let Some(key) = limit_key(limit, &who) else { continue };
            let (weight, op) = match limit.kind {
                LimitKind::Rate => (route.0.weight, Op::Check),
                LimitKind::Budget { reserve: 0, .. } => (0, Op::Peek),
                LimitKind::Budget { reserve, .. } => (reserve, Op::Check),
            };
            applied.checks.push(LimitCheck { key, params: *limit.params_for(tier), weight, op });
            applied.limits.push(limit.clone());
        }
        (!applied.checks.is_empty()).then_some(applied)
    }
}

fn outcomes<'a>(limits: &'a [Arc<CompiledLimit>], decisions: &[Decision]) -> Vec<LimitOutcome<'a>> {
    limits
        .iter()
        .zip(decisions)
        .map(|(l, d)| {
            let scale = if l.is_budget() { BUDGET_SCALE } else { 1 };
            LimitOutcome {
                name: &l.name,
                quota: l.quota,
                window_secs: l.window_secs,
                remaining: d.remaining / scale,
                reset_secs: ceil_secs(d.reset_after_ns),
            }
        })
        .collect()
}

/// Settles each budget against the cost the upstream reported, off the
/// request path: the cost beyond the request's reservation is debited, the
/// reservation it did not use is refunded. A response without a (readable)
/// cost costs nothing. Each request is settled in the store that decided it
/// (see [`crate::limit::Limiter::settle`]). `headers` is `None` where the cost cannot be known: a
/// forward-auth check, whose response Rampart never sees, and a response the
/// gateway made after the request reached the upstream
/// ([`crate::proxy::OutcomeUnknown`]: a timeout, a broken exchange). Such a
/// request keeps its reservation as its cost.
fn settle_budgets(
    state: &Arc<LimitState>,
    store: Store,
    budgets: &[(Arc<CompiledLimit>, LimitCheck)],
    headers: Option<&http::HeaderMap>,
) {
    let mut settlements = Vec::new();
    let mut fallbacks = Vec::new();
    for (limit, check) in budgets {
        let LimitKind::Budget { cost_header, .. } = &limit.kind else { continue };
        // What the request holds: its reservation, or nothing after a peek.
        let reserved = if check.op == Op::Check { check.weight } else { 0 };
        let cost = match headers {
            None => reserved,
            Some(headers) => match headers.get(cost_header) {
                None => 0,
                Some(raw) => {
                    let cost = raw.to_str().ok().and_then(|s| rampart_core::config::limits::parse_amount(s.trim()));
                    if cost.is_none() {
                        tracing::warn!(limit = %limit.name, "upstream sent an unparseable cost header; nothing debited");
                    }
                    cost.unwrap_or(0)
                }
            },
        };
        let (weight, op) = match cost.cmp(&reserved) {
            std::cmp::Ordering::Equal => continue,
            std::cmp::Ordering::Greater => (cost - reserved, Op::Debit),
            std::cmp::Ordering::Less => (reserved - cost, Op::Refund),
        };
        settlements.push(LimitCheck { key: check.key.clone(), params: check.params, weight, op });
        fallbacks.push(limit.on_redis_down);
    }
    if settlements.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        if state.limiter.settle(store, &settlements, &fallbacks).await.is_err() {
            tracing::warn!("budget settlement lost, in whole or in part: redis unavailable");
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::observe::health::Health;
    use crate::observe::Metrics;
    use rampart_core::principal::AuthMethod;
    use tower::ServiceExt;

    /// Tokens from this issuer are never checked here (the tests insert
    /// principals); a route keyed by user needs auth on to be valid config.
    const AUTH: &str = "[auth]\naudiences = ['a']\n[[auth.issuers]]\nissuer = 'https://issuer.test'\n\
        secret = 'a-test-secret-of-at-least-32-bytes!'\n[defaults]\nauth = 'optional'\n";

    fn config() -> String {
        format!(
            "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:1'\n{AUTH}[[routes]]\npath = '/**'\n\
             limits = [{{ by = 'user', rate = '1/min', burst = 2, tiers = {{ pro = 3 }}, tier_rates = {{ free = '1/min' }} }}]\n"
        )
    }

    fn principal(subject: &str, tier: Option<&str>) -> Principal {
        Principal {
            subject: subject.into(),
            api_key_id: None,
            issuer: None,
            tier: tier.map(String::from),
            roles: vec![],
            scopes: vec![],
            method: AuthMethod::Jwt,
        }
    }

    /// Runs `n` requests as `who` through the principal stage; returns statuses.
    async fn run(
        svc: &RateLimitService<crate::testing::EchoService>,
        policy: &rampart_core::config::Policy,
        who: Option<Principal>,
        n: usize,
    ) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut req = http::Request::new(axum::body::Body::empty());
            req.extensions_mut().insert(MatchedRoute(policy.routes[0].clone()));
            req.extensions_mut().insert(ClientInfo {
                ip: "192.0.2.1".parse().unwrap(),
                forwarded_https: false,
                via_trusted_proxy: false,
            });
            if let Some(p) = &who {
                req.extensions_mut().insert(p.clone());
            }
            out.push(svc.clone().oneshot(req).await.unwrap().status().as_u16());
        }
        out
    }

    #[tokio::test]
    async fn each_route_is_decided_at_exactly_one_stage() {
        let config = format!(
            "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:1'\n{AUTH}\
            [[routes]]\npath = '/mixed/**'\nlimits = [{{ by = 'ip', rate = '1/min', burst = 1 }}, {{ by = 'user', rate = '1/min' }}]\n\
            [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '1/min', burst = 1 }}]\n"
        );
        let policy = rampart_core::config::load(&config, &[], &|_| Err("no files".into())).unwrap();
        let (mixed, plain) = (&policy.routes[0], &policy.routes[1]);
        assert!(mixed.limits_after_auth && !plain.limits_after_auth);
        let metrics = Arc::new(Metrics::new());
        let state = LimitState::new(&policy, &metrics, &Arc::new(Health::default())).unwrap();
        let settings = Arc::new(policy.limits.clone());
        let before = RateLimitLayer::new(state.clone(), settings.clone(), Stage::Anonymous);
        let after = RateLimitLayer::new(state, settings, Stage::Principal);
        let call = |layer: &RateLimitLayer, route: &Arc<rampart_core::config::RoutePolicy>| {
            let svc = layer.layer(crate::testing::echo_headers());
            let mut req = http::Request::new(axum::body::Body::empty());
            req.extensions_mut().insert(MatchedRoute(route.clone()));
            req.extensions_mut().insert(ClientInfo {
                ip: "192.0.2.7".parse().unwrap(),
                forwarded_https: false,
                via_trusted_proxy: false,
            });
            async move {
                let resp = svc.oneshot(req).await.unwrap();
                (resp.status().as_u16(), resp.headers().contains_key("ratelimit"))
            }
        };
        // The mixed route's address limit is not decided before authentication...
        for _ in 0..3 {
            assert_eq!(call(&before, mixed).await, (200, false));
        }
        // ... but after it, with the route's other limits.
        assert_eq!(call(&after, mixed).await, (200, true));
        assert_eq!(call(&after, mixed).await, (429, true));
        // A route with address limits only is decided before authentication alone.
        assert_eq!(call(&after, plain).await, (200, false));
        assert_eq!(call(&before, plain).await, (200, true));
        assert_eq!(call(&before, plain).await, (429, true));
    }

    #[tokio::test]
    async fn user_limits_follow_the_principal_and_its_tier() {
        let policy = rampart_core::config::load(&config(), &[], &|_| Err("no files".into())).unwrap();
        let metrics = Arc::new(Metrics::new());
        let state = LimitState::new(&policy, &metrics, &Arc::new(Health::default())).unwrap();
        let svc = RateLimitLayer::new(state, Arc::new(policy.limits.clone()), Stage::Principal)
            .layer(crate::testing::echo_headers());
        assert_eq!(run(&svc, &policy, Some(principal("alice", None)), 3).await, [200, 200, 429], "base burst 2");
        assert_eq!(run(&svc, &policy, Some(principal("bob", None)), 1).await, [200], "each user has their own");
        assert_eq!(
            run(&svc, &policy, Some(principal("carol", Some("pro"))), 7).await,
            [200, 200, 200, 200, 200, 200, 429],
            "pro: 3x burst"
        );
        assert_eq!(
            run(&svc, &policy, Some(principal("dave", Some("free"))), 2).await,
            [200, 429],
            "free: explicit 1/min"
        );
        assert_eq!(run(&svc, &policy, None, 5).await, [200; 5], "anonymous requests skip user-keyed limits");
    }
}
