//! Authorization: the route's `authorize` requirement checked against the
//! request's [`Principal`], right after authentication.
//!
//! - No requirement: the request passes untouched.
//! - No principal (an `optional` route called anonymously): 401, as any
//!   unauthenticated request to a protected resource.
//! - A principal lacking something: 403 problem whose detail names the missing
//!   requirement ("requires permission `posts:write`"), never the caller's own
//!   roles or scopes; the refusal is a metric and an audit event.
//! - `fresh_roles = true` and a token of the gateway's own users ([`OwnUser`]):
//!   the roles are read from the database for this request, so a role change
//!   applies at once; the identity headers (and the signed `internal_jwt`,
//!   made again when the roles changed) then carry the fresh roles too. A
//!   user who no longer exists or is disabled is refused with 401. If the
//!   database cannot be read the request is refused with 503 (fail closed).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::StatusCode;
use rampart_core::client_ip::ClientInfo;
use rampart_core::config::auth::IdentityHeaders;
use rampart_core::config::authorize::{Missing, Requirement, Roles};
use rampart_core::principal::Principal;
use tower::{Layer, Service};

use crate::edge::request_id::RequestId;
use crate::edge::route::MatchedRoute;
use crate::edge::{take_ready, HttpRequest, HttpResponse, Inner, LayerFuture};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind};
use crate::problem::Problem;

/// Put in a request by the bearer layer when the credential is one of the
/// gateway's own (`[identity]`), naming the user or service client it belongs to.
#[derive(Clone, Debug)]
pub struct OwnUser(pub String);

#[derive(Clone)]
pub struct AuthorizeLayer {
    roles: Arc<Roles>,
    headers: Arc<IdentityHeaders>,
    state: Arc<LimitState>,
}

impl AuthorizeLayer {
    pub fn new(roles: Arc<Roles>, headers: IdentityHeaders, state: Arc<LimitState>) -> Self {
        Self { roles, headers: Arc::new(headers), state }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = AuthorizeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthorizeService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct AuthorizeService<S> {
    inner: S,
    layer: AuthorizeLayer,
}

impl<S: Inner> Service<HttpRequest> for AuthorizeService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, LayerFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let Some(requirement) = req.extensions().get::<MatchedRoute>().and_then(|r| r.0.authorize.clone()) else {
            return Either::Left(self.inner.call(req));
        };
        let Some(principal) = req.extensions().get::<Principal>() else {
            let resp = unauthenticated(&req);
            return Either::Right(Box::pin(async move { Ok(resp) }));
        };
        let own = req.extensions().get::<OwnUser>().map(|o| o.0.clone());
        let identity = self.layer.state.identity().cloned();
        match (requirement.fresh_roles && requirement.uses_roles(), own, identity) {
            (true, Some(user_id), Some(identity)) => {
                let layer = self.layer.clone();
                let mut inner = take_ready(&mut self.inner);
                Either::Right(Box::pin(async move {
                    let roles = match identity.current_roles(&user_id).await {
                        Ok(Some(roles)) => roles,
                        Ok(None) => return Ok(unauthenticated(&req)),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read a user's roles");
                            return Ok(Problem::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "unavailable",
                                "Temporarily unavailable",
                            )
                            .detail("permissions cannot be checked right now; try again shortly")
                            .rejected_by("authorize", "roles_unavailable")
                            .into_response_for(req.extensions()));
                        }
                    };
                    let mut changed = false;
                    if let Some(p) = req.extensions_mut().get_mut::<Principal>() {
                        changed = p.roles != roles;
                        p.roles = roles;
                    }
                    let updated = req.extensions().get::<Principal>().cloned();
                    if let Some(p) = updated {
                        crate::auth::set_identity_headers(req.headers_mut(), &layer.headers, &p);
                        if changed {
                            resign_internal_jwt(req.headers_mut(), &layer.headers, &identity, &p);
                        }
                        if let Err(missing) = check(&layer.roles, &requirement, &p) {
                            return Ok(layer.forbidden(&req, &missing));
                        }
                    }
                    inner.call(req).await
                }))
            }
            _ => match check(&self.layer.roles, &requirement, principal) {
                Ok(()) => Either::Left(self.inner.call(req)),
                Err(missing) => {
                    let resp = self.layer.forbidden(&req, &missing);
                    Either::Right(Box::pin(async move { Ok(resp) }))
                }
            },
        }
    }
}

/// The signed identity header (`[auth.headers] internal_jwt`), made again
/// for roles read fresh: the one the bearer layer set carries the token's
/// roles, and an upstream that verifies it must not see the old ones. Not
/// cached: this runs only when the roles changed since the token was issued.
fn resign_internal_jwt(
    headers: &mut http::HeaderMap,
    names: &IdentityHeaders,
    identity: &crate::identity::IdentityService,
    p: &Principal,
) {
    let Some(internal) = &names.internal_jwt else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    match identity.internal_token(p, &internal.audience, internal.ttl_secs, now).map(|t| HeaderValue::from_str(&t)) {
        Some(Ok(value)) => {
            headers.insert(internal.header.clone(), value);
        }
        // Never the stale one: an upstream that needs it refuses the request.
        _ => {
            headers.remove(&internal.header);
        }
    }
}

fn check(roles: &Roles, requirement: &Requirement, p: &Principal) -> Result<(), Missing> {
    requirement.check(roles, &p.roles, &p.scopes)
}

fn unauthenticated(req: &HttpRequest) -> HttpResponse {
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
        .detail("a valid bearer token is required")
        .rejected_by("authorize", "unauthenticated")
        .into_response_for(req.extensions());
    resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"rampart\""));
    resp
}

impl AuthorizeLayer {
    fn forbidden(&self, req: &HttpRequest, missing: &Missing) -> HttpResponse {
        let reason = missing.reason();
        let subject = req.extensions().get::<Principal>().map(|p| p.subject.clone());
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        let route = req.extensions().get::<MatchedRoute>().map(|r| r.0.name.to_string()).unwrap_or_default();
        let key = format!("authorize|{}|{route}|{reason}", subject.as_deref().unwrap_or(""));
        self.state.audit_once(&key, || {
            let mut event = AuditEvent::new(AuditKind::AuthFailure)
                .detail("method", "authorize")
                .detail("reason", reason)
                .detail("route", route.clone())
                .detail("requirement", missing.to_string());
            if let Some(s) = &subject {
                event = event.subject(s.clone());
            }
            if let Some(ip) = ip {
                event = event.ip(ip);
            }
            if let Some(id) = req.extensions().get::<RequestId>() {
                event = event.request_id(id.as_str());
            }
            event
        });
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            .detail(missing.to_string())
            .rejected_by("authorize", reason)
            .into_response_for(req.extensions())
    }
}
