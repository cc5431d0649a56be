//! Assembling the gateway: config file to policy, policy to a service stack, and
//! atomic replacement of both on reload.
//!
//! The whole stack is rebuilt from each new policy and swapped in with one
//! pointer store, so a request runs entirely under one policy, old or new, never
//! a mix. A policy that fails validation is never installed.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use rampart_core::config::{ConfigError, ConfigErrors, ConfigPath, Policy};
use tower::Layer;

use crate::auth::authorize::{AuthorizeLayer, AuthorizeService};
use crate::auth::{AuthLayer, AuthService};
use crate::edge::client_ip::{ClientIpLayer, ClientIpService};
use crate::edge::cors::{CorsLayer, CorsService};
use crate::edge::forward_auth::{ForwardAuthLayer, ForwardAuthService};
use crate::edge::geo::{GeoLayer, GeoService};
use crate::edge::guard::{GuardConfig, RequestGuardLayer, RequestGuardService};
use crate::edge::request_id::{RequestIdLayer, RequestIdService};
use crate::edge::route::{RouteLayer, RouteService};
use crate::edge::security_headers::{SecurityHeadersLayer, SecurityHeadersService};
use crate::edge::trusted_hosts::{TrustedHostsLayer, TrustedHostsService};
use crate::identity::http::{IdentityHttp, IdentityLayer};
use crate::inspect::{InspectLayer, InspectService};
use crate::limit::access::{AccessLayer, AccessService};
use crate::limit::layer::{RateLimitLayer, RateLimitService, Stage};
use crate::limit::shed::{ShedConfig, ShedLayer, ShedService};
use crate::limit::LimitState;
use crate::observe::audit::{AuditEvent, AuditKind, AuditSink};
use crate::observe::{Metrics, ObserveLayer, ObserveService};
use crate::proxy::{ProxyService, Upstream};
use crate::web::{PagesLayer, PagesService};

/// The layers below CORS: shedding, rate limits of routes keyed only by
/// address, authentication, rate limits of routes with a principal-keyed limit,
/// inspection, then the proxy.
type Limited = ShedService<
    RateLimitService<
        AuthService<AuthorizeService<RateLimitService<PagesService<IdentityHttp<InspectService<ProxyService>>>>>>,
    >,
>;

/// The full request path, outermost layer first.
pub type Stack = RequestIdService<
    ClientIpService<
        ForwardAuthService<
            RouteService<
                ObserveService<
                    SecurityHeadersService<
                        AccessService<GeoService<TrustedHostsService<RequestGuardService<CorsService<Limited>>>>>,
                    >,
                >,
            >,
        >,
    >,
>;

/// One policy and the stack built from it.
pub struct Runtime {
    pub policy: Arc<Policy>,
    pub stack: Stack,
}

/// The live runtime, replaced whole on reload.
pub type SharedRuntime = Arc<ArcSwap<Runtime>>;

/// Builds the stack for `policy`. Fails only when an upstream client cannot be
/// built (e.g. an unreadable `ca_file`).
pub fn build_runtime(policy: Policy, metrics: &Arc<Metrics>, state: &Arc<LimitState>) -> anyhow::Result<Runtime> {
    let policy = Arc::new(policy);
    let workers = crate::workers::count(policy.server.workers);
    let upstreams = policy
        .upstreams
        .iter()
        .map(|u| Upstream::new(u.clone(), workers).map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for up in &upstreams {
        up.spawn_background(metrics.clone());
    }
    let s = &policy.server;
    let guard = GuardConfig {
        max_uri_length: s.max_uri_length,
        max_header_count: s.max_header_count,
        max_header_bytes: s.max_header_bytes,
        body_read_timeout: s.body_read_timeout,
        min_body_rate: s.min_body_rate,
        body_rate_grace: s.body_rate_grace,
        path_options: s.path_options,
        ..GuardConfig::default()
    };
    let limits = Arc::new(policy.limits.clone());
    let proxy = ProxyService::new(
        upstreams.into(),
        policy.auth.headers.clone(),
        metrics.clone(),
        state.clone(),
        &policy.server,
    );
    // Innermost first; read bottom-up for the order a request meets them.
    // Inspection last: its body buffering is the most expensive step, spent
    // only on requests every cheaper check has let through.
    let stack = InspectLayer::new(state.clone(), metrics.clone()).layer(proxy);
    // The identity API (when on): below limits and auth, above inspection
    // (passwords are not inspected).
    let stack = IdentityLayer::new(state.identity().cloned(), state.clone()).layer(stack);
    // The web pages (`[identity.pages]`): where the identity endpoints are, so
    // the same bans, guards, limits and authentication apply to them.
    let stack = PagesLayer::new(state.identity().cloned(), state.clone()).layer(stack);
    // All limits of a route with one keyed by user, API key or tier, once
    // authentication has run: one decision, so nothing is charged twice.
    let stack = RateLimitLayer::new(state.clone(), limits.clone(), Stage::Principal).layer(stack);
    // The route's required roles, permissions and scopes.
    let stack = AuthorizeLayer::new(policy.roles.clone(), policy.auth.headers.clone(), state.clone()).layer(stack);
    // Bearer tokens to a Principal and identity headers; inbound identity
    // headers removed on every route.
    let own_issuer = state.identity().map(|i| i.issuer());
    let auth = AuthLayer::new(policy.auth.clone(), own_issuer, state.clone());
    let stack = auth.layer(stack);
    // Routes whose limits are all keyed by address, route or globally:
    // decided before any auth work.
    let stack = RateLimitLayer::new(state.clone(), limits, Stage::Anonymous).layer(stack);
    // Overload shedding and per-address concurrency, before spending on limits.
    let shed = ShedConfig {
        max_in_flight: s.max_in_flight,
        shed_anonymous_at: s.shed_anonymous_at,
        max_requests_per_ip: s.max_requests_per_ip,
    };
    // "Signed in" for shedding: a credential the auth layer knows valid from memory.
    let stack = ShedLayer::new(state.shed.clone(), shed, Arc::new(auth)).layer(stack);
    // CORS answers preflights only for requests that passed the guards.
    let stack = CorsLayer::new(None).layer(stack);
    // Guards: cheap refusals of malformed and oversized requests.
    let stack = RequestGuardLayer::new(guard).layer(stack);
    // Host allow-list before any parsing of the request's content.
    let stack = TrustedHostsLayer::new(s.trusted_hosts.clone()).layer(stack);
    // Country rules and the country header.
    let stack = GeoLayer::new(&policy.geo)?.layer(stack);
    // Denied and banned addresses: the cheapest refusal of all.
    let stack = AccessLayer::new(Arc::new(policy.access.clone()), state.clone()).layer(stack);
    // Security headers wrap everything below, so errors carry them too.
    let stack = SecurityHeadersLayer::new(policy.default_security_headers.clone()).layer(stack);
    // Metrics and the access log see every request, refused or served, with its route.
    let stack = ObserveLayer::new(metrics.clone(), policy.log.access_log).with_routes(&policy.routes).layer(stack);
    // Route lookup once, for all layers below.
    let stack = RouteLayer::new(policy.clone()).layer(stack);
    // A forward-auth check becomes the request it asks about, before routing.
    let stack =
        ForwardAuthLayer::new(policy.forward_auth.as_deref(), policy.default_security_headers.clone()).layer(stack);
    // The client address, before anything keys on it.
    let stack = ClientIpLayer::new(s.trusted_proxies.clone()).layer(stack);
    // The request id first, so every response and log line has one.
    let stack = RequestIdLayer.layer(stack);
    Ok(Runtime { policy, stack })
}

/// Reads, validates and compiles a config file, including the checks that need
/// I/O (TLS files, CA files).
pub fn load_policy(path: &Path) -> Result<Policy, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: None,
        line: None,
        env_var: None,
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    load_policy_text(&text)
}

/// As [`load_policy`], from text.
pub fn load_policy_text(text: &str) -> Result<Policy, ConfigErrors> {
    let env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with(rampart_core::config::env::ENV_PREFIX)).collect();
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let policy = rampart_core::config::load(text, &env, &read)?;
    let mut errs = Vec::new();
    if let Some(tls) = &policy.server.tls {
        if let Err(e) = crate::tls::load_certified_key(&tls.cert, &tls.key) {
            errs.push(ConfigError::at(ConfigPath::parse("server.tls"), format!("{e:#}")));
        }
    }
    for u in &policy.upstreams {
        if let Some(ca) = &u.ca_file {
            if let Err(e) = crate::proxy::client::read_certs(ca) {
                let at = ConfigPath::parse("upstreams").push_key(&u.name).push_key("ca_file");
                errs.push(ConfigError::at(at, format!("{e:#}")));
            }
        }
    }
    if let Some(redis) = &policy.redis {
        if let Some(ca) = &redis.ca_file {
            if let Err(e) = crate::proxy::client::read_certs(ca) {
                errs.push(ConfigError::at(ConfigPath::parse("redis.ca_file"), format!("{e:#}")));
            }
        }
        if let (Some(cert), Some(key)) = (&redis.client_cert, &redis.client_key) {
            if let Err(e) = crate::tls::load_certified_key(cert, key) {
                errs.push(ConfigError::at(ConfigPath::parse("redis.client_cert"), format!("{e:#}")));
            }
        }
    }
    if let Some(db) = &policy.geo.database {
        if let Err(e) = crate::edge::geo::GeoDb::open(db) {
            errs.push(ConfigError::at(ConfigPath::parse("geo.database"), format!("{e:#}")));
        }
    }
    // Alert rules count audit events by kind: a name that is none would never fire.
    for (i, rule) in policy.alerts.rules.iter().enumerate() {
        if let Err(e) = rule.event.parse::<AuditKind>() {
            errs.push(ConfigError::at(ConfigPath::parse("alerts.rules").push_index(i).push_key("event"), e));
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&policy.log.level) {
        errs.push(ConfigError::at(ConfigPath::parse("log.level"), e.to_string()));
    }
    if errs.is_empty() {
        Ok(policy)
    } else {
        Err(ConfigErrors(errs))
    }
}

/// Validates a new policy and, only if all is well, installs it. Either way the
/// outcome goes to the audit log.
/// The settings read once at start that a reload leaves as they were, named
/// when `new` changes them: `[identity]` (all of it), `[bans]`, `[abuse]`,
/// `[redis]`, `[log] level` and `format`, `[limits] max_keys`, and the `[server]` keys the
/// listener is built with (TLS files, `http2`, its timeouts and connection
/// caps). The sections are compared by their `Debug` text
/// (they have no `PartialEq`) with the secrets in it
/// ([`rampart_core::config::secret::debug_eq`]), so a change of a secret alone
/// (`secret_key`, a signing key, a provider's `client_secret`) is named too.
pub fn restart_only_changes(old: &Policy, new: &Policy) -> Vec<&'static str> {
    let differ = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| !rampart_core::config::secret::debug_eq(a, b);
    let mut changed = Vec::new();
    if differ(&old.identity, &new.identity) {
        changed.push("[identity]");
    }
    if differ(&old.bans, &new.bans) {
        changed.push("[bans]");
    }
    if differ(&old.abuse, &new.abuse) {
        changed.push("[abuse]");
    }
    if old.limits.max_keys != new.limits.max_keys {
        changed.push("[limits] max_keys");
    }
    if differ(&old.redis, &new.redis) {
        changed.push("[redis]");
    }
    // `access_log` is part of the stack a reload builds; the rest sets up
    // the process's logger.
    if (&old.log.level, old.log.format) != (&new.log.level, new.log.format) {
        changed.push("[log] level, format");
    }
    let (o, n) = (&old.server, &new.server);
    let server: [(&'static str, bool); 7] = [
        ("[server.tls]", differ(&o.tls, &n.tls)),
        ("[server] http2", o.http2 != n.http2),
        ("[server] header_read_timeout", o.header_read_timeout != n.header_read_timeout),
        ("[server] send_timeout", o.send_timeout != n.send_timeout),
        ("[server] shutdown_timeout", o.shutdown_timeout != n.shutdown_timeout),
        ("[server] max_connections_per_ip", o.max_connections_per_ip != n.max_connections_per_ip),
        ("[server] max_requests_per_connection", o.max_requests_per_connection != n.max_requests_per_connection),
    ];
    changed.extend(server.into_iter().filter(|(_, c)| *c).map(|(name, _)| name));
    changed
}

pub fn reload(
    shared: &SharedRuntime,
    metrics: &Arc<Metrics>,
    state: &Arc<LimitState>,
    audit: &AuditSink,
    result: Result<Policy, ConfigErrors>,
) -> anyhow::Result<()> {
    let outcome = result.map_err(|e| anyhow::anyhow!("{e}")).and_then(|policy| {
        let old = shared.load();
        if policy.server.listen != old.policy.server.listen || policy.metrics_listen != old.policy.metrics_listen {
            tracing::warn!("listen addresses changed; they take effect at the next restart");
        }
        if policy.server.workers != old.policy.server.workers {
            tracing::warn!("[server] workers changed; it takes effect at the next restart");
        }
        if policy.server.clients != old.policy.server.clients {
            // Counts, strikes and bans are keyed by it and outlive reloads.
            tracing::warn!("[server] ipv6_prefix changed; it takes effect at the next restart");
        }
        if policy.storage.database.expose() != old.policy.storage.database.expose()
            || policy.audit.enabled != old.policy.audit.enabled
            || policy.audit.file != old.policy.audit.file
            || policy.audit.queue != old.policy.audit.queue
            || policy.audit.retention != old.policy.audit.retention
        {
            tracing::warn!("[storage] or [audit] changed; it takes effect at the next restart");
        }
        for section in restart_only_changes(&old.policy, &policy) {
            tracing::warn!(section, "{section} changed; it takes effect after a restart");
        }
        build_runtime(policy, metrics, state).context("building the new policy")
    });
    match outcome {
        Ok(runtime) => {
            audit.record(
                AuditEvent::new(AuditKind::ConfigReloaded)
                    .detail("routes", runtime.policy.routes.len())
                    .detail("upstreams", runtime.policy.upstreams.len()),
            );
            shared.store(Arc::new(runtime));
            metrics.reload(true);
            tracing::info!("config reloaded");
            Ok(())
        }
        Err(e) => {
            // Config errors name fields and lines, never secret values.
            audit.record(AuditEvent::new(AuditKind::ConfigReloadFailed).detail("error", format!("{e:#}")));
            metrics.reload(false);
            tracing::error!(error = %format!("{e:#}"), "config reload refused; the running policy stays in force");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const BASE: &str = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n";
    const IDENTITY: &str = "[identity]\nenabled = true\nissuer = 'https://x.test'\n\
                            secret_key = '0123456789abcdef0123456789abcdef'\n";

    #[track_caller]
    fn check(old: &str, new: &str, expected: &[&str]) {
        let (old, new) =
            (load_policy_text(&format!("{BASE}{old}")).unwrap(), load_policy_text(&format!("{BASE}{new}")).unwrap());
        assert_eq!(restart_only_changes(&old, &new), expected);
    }

    #[test]
    fn a_reload_names_the_sections_it_does_not_apply() {
        check("", "", &[]);
        check(IDENTITY, IDENTITY, &[]);
        check(IDENTITY, &format!("{IDENTITY}registration = true\n"), &["[identity]"]);
        // A secret alone (its Debug text is `***` either way).
        check(IDENTITY, &IDENTITY.replace("0123456789abcdef0123", "fedcba9876543210fedc"), &["[identity]"]);
        check("", IDENTITY, &["[identity]"]);
        check("", "[bans]\nmax_tracked = 5\n", &["[bans]"]);
        check("", "[abuse]\ntop_k = 7\n", &["[abuse]"]);
        check("", "[limits]\nmax_keys = 1000\n", &["[limits] max_keys"]);
        check("", "[redis]\nurl = 'redis://127.0.0.1:6379/'\n", &["[redis]"]);
        check("", "[log]\nformat = 'text'\n", &["[log] level, format"]);
        check("", "[log]\naccess_log = false\n", &[]);
        check("", "[server]\nhttp2 = false\nsend_timeout = '5s'\n", &["[server] http2", "[server] send_timeout"]);
        // Routes and the rest apply at once: nothing to name.
        check("", "[[routes]]\npath = '/x'\n", &[]);
    }
}
