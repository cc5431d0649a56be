//! Prometheus metrics, served on the separate operations listener.
//!
//! | metric | labels |
//! |---|---|
//! | `rampart_requests_total` | route, status |
//! | `rampart_request_duration_seconds` (histogram, to response head) | route |
//! | `rampart_upstream_duration_seconds` (histogram) | upstream |
//! | `rampart_upstream_errors_total` | upstream, kind (`connect`, `protocol`, `timeout`) |
//! | `rampart_in_flight_requests` | — |
//! | `rampart_rejections_total` | layer, reason |
//! | `rampart_config_reloads_total` | result (`ok`, `error`) |
//! | `rampart_audit_written_total` | sink (`file`, `database`) |
//! | `rampart_audit_write_errors_total` | sink (`file`, `database`) |
//! | `rampart_audit_dropped_total` (queue full) | — |
//! | `rampart_alerts_sent_total` | — |
//! | `rampart_alerts_failed_total` (out of retries, refused or queue full) | — |
//! | `rampart_notifications_sent_total` (password-reset tokens delivered) | — |
//! | `rampart_notifications_failed_total` (not delivered, or dropped when too many were pending) | — |
//!
//! Label values come from config (route and upstream names) or from a fixed set
//! in code (layer, reason, status), never from request data, so the number of
//! series is bounded no matter what clients send.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A shared string as a label value (route names are cloned per request, so
/// they are reference-counted rather than copied).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Name(Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    rule: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    upstream: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    layer: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopLabels {
    rank: u32,
    ip: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The statuses whose request counters a route keeps at hand; the rest are
/// looked up when counted.
const COMMON_STATUSES: [u16; 25] = [
    200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 502,
    503, 504,
];

/// One route's request series (its latency histogram, its counters by
/// status), resolved once per stack rather than per request; they share
/// their data with the registered families.
#[derive(Debug)]
pub struct RouteSeries {
    name: Arc<str>,
    duration: Histogram,
    by_status: [OnceLock<Counter>; COMMON_STATUSES.len()],
}

impl RouteSeries {
    /// The route these series count.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
}

/// All of Rampart's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    in_flight: Gauge,
    rejections: Family<RejectionLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    limit_fallbacks: Family<ReasonLabels, Counter>,
    redis_up: Gauge,
    bans_active: Gauge,
    bans_added: Family<SourceLabels, Counter>,
    spikes: Family<ClassLabels, Counter>,
    top_clients: Family<TopLabels, Gauge>,
    connections_refused: Family<ReasonLabels, Counter>,
    upstream_healthy: Family<TargetLabels, Gauge>,
    inspection_findings: Family<FindingLabels, Counter>,
    pii_redactions: Family<KindLabels, Counter>,
    audit_written: Family<SinkLabels, Counter>,
    audit_write_errors: Family<SinkLabels, Counter>,
    audit_dropped: Counter,
    alerts_sent: Counter,
    alerts_failed: Counter,
    notifications_sent: Counter,
    notifications_failed: Counter,
    /// The same events, readable back by the admin API.
    live: super::stats::LiveStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rampart");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream_duration =
            Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let in_flight = Gauge::default();
        let rejections = Family::<RejectionLabels, Counter>::default();
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register("request_duration_seconds", "Time to response head", duration.clone());
        registry.register("upstream_duration_seconds", "Upstream time to response head", upstream_duration.clone());
        registry.register("upstream_errors", "Upstream failures", upstream_errors.clone());
        registry.register("in_flight_requests", "Requests being served", in_flight.clone());
        registry.register("rejections", "Requests refused by a layer", rejections.clone());
        registry.register("config_reloads", "Config reload attempts", reloads.clone());
        let limit_fallbacks = Family::<ReasonLabels, Counter>::default();
        let redis_up = Gauge::default();
        let bans_active = Gauge::default();
        let bans_added = Family::<SourceLabels, Counter>::default();
        let spikes = Family::<ClassLabels, Counter>::default();
        let top_clients = Family::<TopLabels, Gauge>::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        let upstream_healthy = Family::<TargetLabels, Gauge>::default();
        let inspection_findings = Family::<FindingLabels, Counter>::default();
        let pii_redactions = Family::<KindLabels, Counter>::default();
        registry.register(
            "inspection_findings",
            "Suspicious inputs found, by rule and mode",
            inspection_findings.clone(),
        );
        registry.register(
            "pii_redactions",
            "Values with PII masked before the upstream, by kind",
            pii_redactions.clone(),
        );
        registry.register("upstream_healthy", "1 when the target passes its health checks", upstream_healthy.clone());
        registry.register("limit_fallbacks", "Limit decisions made without Redis, by why", limit_fallbacks.clone());
        registry.register("redis_up", "1 while Redis is reachable (0 also when not configured)", redis_up.clone());
        registry.register("bans_active", "Addresses banned on this instance", bans_active.clone());
        registry.register("bans_added", "Bans added, manual or automatic", bans_added.clone());
        registry.register(
            "spikes",
            "Spikes detected, by class (requests, rate_limited, auth_failures, blocked_inputs)",
            spikes.clone(),
        );
        registry.register(
            "top_client_requests",
            "Heavy hitters of the last minute (space-saving estimate)",
            top_clients.clone(),
        );
        registry.register("connections_refused", "Connections refused at accept", connections_refused.clone());
        let audit_written = Family::<SinkLabels, Counter>::default();
        let audit_write_errors = Family::<SinkLabels, Counter>::default();
        let audit_dropped = Counter::default();
        registry.register("audit_written", "Audit records written, by sink", audit_written.clone());
        registry.register(
            "audit_write_errors",
            "Audit batches that failed to write, by sink",
            audit_write_errors.clone(),
        );
        registry.register("audit_dropped", "Audit events dropped because the queue was full", audit_dropped.clone());
        let alerts_sent = Counter::default();
        let alerts_failed = Counter::default();
        registry.register("alerts_sent", "Alerts the webhook accepted", alerts_sent.clone());
        registry.register("alerts_failed", "Alerts given up on or dropped", alerts_failed.clone());
        let notifications_sent = Counter::default();
        let notifications_failed = Counter::default();
        registry.register("notifications_sent", "Identity notifications delivered", notifications_sent.clone());
        registry.register(
            "notifications_failed",
            "Identity notifications not delivered or dropped",
            notifications_failed.clone(),
        );
        Self {
            registry,
            requests,
            duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            rejections,
            reloads,
            limit_fallbacks,
            redis_up,
            bans_active,
            bans_added,
            spikes,
            top_clients,
            connections_refused,
            upstream_healthy,
            inspection_findings,
            pii_redactions,
            audit_written,
            audit_write_errors,
            audit_dropped,
            alerts_sent,
            alerts_failed,
            notifications_sent,
            notifications_failed,
            live: super::stats::LiveStats::default(),
        }
    }

    /// Live statistics (requests per second, rejections, upstream health).
    pub fn live(&self) -> &super::stats::LiveStats {
        &self.live
    }

    pub fn observe_request(&self, route: &Arc<str>, status: u16, elapsed: Duration) {
        self.live.request();
        self.requests.get_or_create(&RequestLabels { route: Name(route.clone()), status }).inc();
        self.duration.get_or_create(&RouteLabels { route: Name(route.clone()) }).observe(elapsed.as_secs_f64());
    }

    /// The series of route `name`, to keep and count into with
    /// [`Metrics::observe_route_request`].
    pub fn route_series(&self, name: &Arc<str>) -> RouteSeries {
        RouteSeries {
            name: name.clone(),
            duration: self.duration.get_or_create(&RouteLabels { route: Name(name.clone()) }).clone(),
            by_status: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// [`Metrics::observe_request`] for a route whose series are at hand:
    /// no lock shared by the workers and no hashing of labels per request.
    pub fn observe_route_request(&self, series: &RouteSeries, status: u16, elapsed: Duration) {
        self.live.request();
        let labels = || RequestLabels { route: Name(series.name.clone()), status };
        match COMMON_STATUSES.iter().position(|&s| s == status).and_then(|i| series.by_status.get(i)) {
            Some(cell) => cell.get_or_init(|| self.requests.get_or_create(&labels()).clone()).inc(),
            None => self.requests.get_or_create(&labels()).inc(),
        };
        series.duration.observe(elapsed.as_secs_f64());
    }

    /// The latency histogram of `upstream`, to keep and observe directly on a
    /// hot path (it shares its data with the registered one).
    pub fn upstream_histogram(&self, upstream: &str) -> Histogram {
        self.upstream_duration.get_or_create(&UpstreamLabels { upstream: upstream.to_string() }).clone()
    }

    pub fn upstream_error(&self, upstream: &str, kind: &'static str) {
        self.upstream_errors.get_or_create(&UpstreamErrorLabels { upstream: upstream.to_string(), kind }).inc();
    }

    pub fn rejection(&self, layer: &'static str, reason: &'static str) {
        self.live.rejection(layer, reason);
        self.rejections.get_or_create(&RejectionLabels { layer, reason }).inc();
    }

    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "error" } }).inc();
    }

    pub fn limit_fallback(&self, reason: &'static str) {
        self.limit_fallbacks.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    pub fn bans_active(&self, n: usize) {
        self.bans_active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn ban_added(&self, source: &'static str) {
        self.bans_added.get_or_create(&SourceLabels { source }).inc();
    }

    /// Counts a spike of `class` (a fixed name from the abuse monitor).
    pub fn spike(&self, class: &'static str) {
        self.spikes.get_or_create(&ClassLabels { class }).inc();
    }

    pub fn upstream_healthy(&self, upstream: &str, target: &str, healthy: bool) {
        self.live.upstream_health(upstream, target, healthy);
        let labels = TargetLabels { upstream: upstream.to_string(), target: target.to_string() };
        self.upstream_healthy.get_or_create(&labels).set(i64::from(healthy));
    }

    pub fn inspection_finding(&self, rule: &'static str, mode: &'static str) {
        self.inspection_findings.get_or_create(&FindingLabels { rule, mode }).inc();
    }

    pub fn pii_redacted(&self, kind: &'static str) {
        self.pii_redactions.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn audit_written(&self, sink: &'static str, records: u64) {
        self.audit_written.get_or_create(&SinkLabels { sink }).inc_by(records);
    }

    pub fn audit_write_error(&self, sink: &'static str) {
        self.audit_write_errors.get_or_create(&SinkLabels { sink }).inc();
    }

    /// Failed audit writes to `sink` (`database` or `file`) so far.
    pub fn audit_write_errors(&self, sink: &'static str) -> u64 {
        self.audit_write_errors.get_or_create(&SinkLabels { sink }).get()
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    pub fn alert_sent(&self) {
        self.alerts_sent.inc();
    }

    pub fn alert_failed(&self) {
        self.alerts_failed.inc();
    }

    /// One identity notification delivered (`true`) or not.
    pub fn notification(&self, delivered: bool) {
        if delivered {
            self.notifications_sent.inc();
        } else {
            self.notifications_failed.inc();
        }
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Replaces the heavy-hitter series (at most top_k of them).
    /// Each client is named by its address, or `address/len` for an IPv6 network.
    pub fn set_top_clients(&self, top: &[(String, u64)]) {
        self.top_clients.clear();
        for (rank, (ip, n)) in top.iter().enumerate() {
            let labels = TopLabels { rank: u32::try_from(rank + 1).unwrap_or(u32::MAX), ip: ip.clone() };
            self.top_clients.get_or_create(&labels).set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::new();
        m.observe_request(&Arc::from("api"), 200, Duration::from_millis(3));
        m.rejection("guard", "body_too_large");
        m.upstream_error("default", "connect");
        m.reload(false);
        let text = m.render();
        assert!(text.contains(r#"rampart_requests_total{route="api",status="200"} 1"#), "{text}");
        assert!(text.contains(r#"rampart_rejections_total{layer="guard",reason="body_too_large"} 1"#));
        assert!(text.contains(r#"rampart_upstream_errors_total{upstream="default",kind="connect"} 1"#));
        assert!(text.contains(r#"rampart_config_reloads_total{result="error"} 1"#));
        assert!(text.contains("rampart_request_duration_seconds_bucket"));
    }

    #[test]
    fn route_series_count_into_the_registered_families() {
        let m = Metrics::new();
        let api: Arc<str> = Arc::from("api");
        let series = m.route_series(&api);
        m.observe_route_request(&series, 200, Duration::from_millis(3));
        m.observe_route_request(&series, 200, Duration::from_millis(4));
        // A status kept at hand and one looked up, and the label path alike.
        m.observe_route_request(&series, 404, Duration::from_millis(1));
        m.observe_route_request(&series, 418, Duration::from_millis(1));
        m.observe_request(&api, 200, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains(r#"rampart_requests_total{route="api",status="200"} 3"#), "{text}");
        assert!(text.contains(r#"rampart_requests_total{route="api",status="404"} 1"#), "{text}");
        assert!(text.contains(r#"rampart_requests_total{route="api",status="418"} 1"#), "{text}");
        assert!(text.contains(r#"rampart_request_duration_seconds_count{route="api"} 5"#), "{text}");
    }
}
