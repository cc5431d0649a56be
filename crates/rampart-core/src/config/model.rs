//! The `rampart.toml` file format: plain serde structs that mirror the file.
//!
//! Every struct refuses unknown keys so that a typo is an error with a suggestion,
//! never a silently ignored setting. Values stay close to what the user wrote
//! (strings for addresses, patterns and header names); `compile` turns them into
//! the checked runtime [`Policy`](super::Policy).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The newest config file version this build understands.
pub const CURRENT_VERSION: u32 = 1;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// File format version; see [`CURRENT_VERSION`].
    pub version: u32,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Named upstreams; routes refer to them by name. `default` is used by routes
    /// that name none.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Policy that every route inherits unless it overrides a field.
    #[serde(default)]
    pub defaults: RouteConfig,
    /// The route table; the first match wins. Empty means one catch-all route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Shared state for several instances; empty `url` keeps state in process.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Rate-limit settings and named limits that routes refer to.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Automatic temporary bans.
    #[serde(default)]
    pub bans: BansConfig,
    /// IP allow and deny lists.
    #[serde(default)]
    pub access: AccessConfig,
    /// Heavy hitters and spike detection.
    #[serde(default)]
    pub abuse: AbuseConfig,
    /// Country lookups (MaxMind database) for geo rules and the country header.
    #[serde(default)]
    pub geo: GeoConfig,
    /// The SQL database (SQLite by default, PostgreSQL for several instances).
    #[serde(default)]
    pub storage: StorageConfig,
    /// The tamper-evident audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Webhook alerts on security events.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Which bearer tokens are accepted, and the identity headers sent upstream.
    #[serde(default)]
    pub auth: super::auth::AuthConfig,
    /// The forward-auth endpoint for nginx `auth_request`, Caddy `forward_auth`
    /// and Traefik `ForwardAuth`.
    #[serde(default)]
    pub forward_auth: ForwardAuthConfig,
    /// The gateway's own identity API.
    #[serde(default)]
    pub identity: super::identity::IdentityConfig,
    /// Roles and the permissions they grant (`admin` is built in).
    #[serde(default)]
    pub roles: BTreeMap<String, super::authorize::RoleConfig>,
}

/// `[forward_auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardAuthConfig {
    /// Path of the endpoint on the main listener (e.g. `/_rampart/auth`); `""`:
    /// off. Only trusted proxies may call it.
    pub path: String,
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://path/to/rampart.db` (created on first start, WAL journal) or
    /// `postgres://user:password@host/db`.
    pub database: super::secret::Secret,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { database: super::secret::Secret::new("sqlite://rampart.db") }
    }
}

/// `[audit]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `false`: nothing is stored (alert rules still see the events).
    pub enabled: bool,
    /// JSON-lines copy of the log (`""`: database only). One gateway instance
    /// per file (the admin commands append to it too, under a file lock); a
    /// relative path is relative to the working directory, as is a relative
    /// `sqlite:` path.
    pub file: String,
    /// Records older than this are purged (`"0s"`: keep forever), at start and
    /// hourly; the last purged record is kept as the anchor the rest verifies from.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Events waiting to be written; beyond this they are dropped and counted,
    /// so a slow disk never blocks requests.
    pub queue: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { enabled: true, file: "audit.jsonl".into(), retention: Duration::from_secs(90 * 86_400), queue: 10_000 }
    }
}

/// `[alerts]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (`""`: alerts off). May hold a token: use
    /// `webhook_url_file` to keep it out of the config.
    pub webhook_url: super::secret::Secret,
    pub format: AlertFormat,
    /// Quiet time after an alert for the same rule.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: Default::default(),
            format: AlertFormat::Json,
            cooldown: Duration::from_secs(300),
            rules: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// `{"alert": …, "event": …, "count": …, "window_secs": …, …}`
    #[default]
    Json,
    /// Slack incoming-webhook shape (`{"text": …}`).
    Slack,
}

/// Alert when `threshold` events of type `event` happen within `window`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub event: String,
    pub threshold: u64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

/// `[geo]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// Path of a MaxMind country or city database (`.mmdb`). Required as soon
    /// as a route has geo rules or `header` is set; Rampart refuses to start
    /// with a missing or corrupt file rather than silently skip the rules.
    pub database: String,
    /// Request header carrying the client's ISO country code upstream (`""`: none).
    /// An inbound header of this name is always removed.
    pub header: String,
    /// What rules do with addresses the database does not place (private
    /// ranges, new allocations): `allow` or `deny`.
    pub unknown: GeoUnknown,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self { database: String::new(), header: String::new(), unknown: GeoUnknown::Allow }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GeoUnknown {
    #[default]
    Allow,
    Deny,
}

/// A route's country rules: `allow` (when not empty, only these) and `deny`,
/// as ISO 3166-1 alpha-2 codes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoRuleConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, `rediss://…` (TLS, the
    /// certificate verified) or `redis+unix:///path`; empty: no Redis.
    pub url: super::secret::Secret,
    /// Longest a request may wait on Redis before the fallback applies.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often a broken Redis is probed for recovery.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    pub key_prefix: String,
    /// With TLS (`rediss://` or `sentinel_tls`): PEM file of the CAs that
    /// sign the servers' certificates. When set, only these are trusted (not
    /// the public web PKI).
    pub ca_file: Option<String>,
    /// With TLS: PEM certificate chain and private key presented to Redis
    /// (its `tls-auth-clients yes`). Both or neither.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Redis Sentinel: `host:port` of each sentinel. When set, the sentinels
    /// name the current primary of `sentinel_master` at every (re)connect, and
    /// `url` gives only its credentials, database and TLS (its host is unused).
    pub sentinels: Vec<String>,
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> …`).
    pub sentinel_master: String,
    /// The sentinels' own password (`requirepass` in sentinel.conf), if any.
    pub sentinel_password: super::secret::Secret,
    /// Reach the sentinels over TLS (verified like the primary: `ca_file`,
    /// else the web PKI; the client certificate presented when asked).
    pub sentinel_tls: bool,
    /// Redis Cluster: `host:port` of nodes to learn the cluster's layout
    /// from (any of them will do; give several). When set, `url` gives only
    /// the credentials and TLS (its host is unused, its database must be 0),
    /// and every key is put in one hash slot (see the operations guide).
    pub cluster_nodes: Vec<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Default::default(),
            timeout: Duration::from_millis(50),
            probe_interval: Duration::from_secs(1),
            key_prefix: "rampart:".into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            sentinel_password: Default::default(),
            sentinel_tls: false,
            cluster_nodes: Vec::new(),
        }
    }
}

/// What a limit does when Redis is unreachable.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RedisFallback {
    /// Decide with the in-process limiter (each instance enforces the limit alone).
    #[default]
    Local,
    /// Refuse the request (503).
    Refuse,
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most keys the in-process limiter keeps; idle keys go first.
    pub max_keys: usize,
    /// Path patterns never rate limited (health checks).
    pub exempt_paths: Vec<String>,
    /// Client addresses never rate limited.
    pub exempt_cidrs: Vec<String>,
    /// Default for limits that do not set `on_redis_down`.
    pub on_redis_down: RedisFallback,
    /// Response header an upstream uses to report a request's cost (budgets).
    pub cost_header: String,
    /// Named limits, used by routes as `limits = ["name"]`; one named limit is
    /// one allowance however many routes use it (unless keyed by `route`).
    pub named: BTreeMap<String, LimitConfig>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_keys: 1_000_000,
            exempt_paths: Vec::new(),
            exempt_cidrs: Vec::new(),
            on_redis_down: RedisFallback::Local,
            cost_header: "x-rampart-cost".into(),
            named: BTreeMap::new(),
        }
    }
}

/// One limit: a rate (`60/min`) or a budget (`5.00/day`), counted per key.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// What the limit counts per: `ip`, `user`, `api_key`, `route`, `tier`,
    /// `global`, or a list of these combined.
    #[serde(default)]
    pub by: KeyBy,
    /// `N/unit` (`s`, `min`, `h`, `day`) or `N/<duration>` (`10/30s`).
    pub rate: Option<String>,
    /// Requests allowed at once from a full allowance (default: N of the rate).
    pub burst: Option<u64>,
    /// A money or token budget, `5.00/day`, debited after each response by the
    /// cost the upstream reports in `cost_header`.
    pub budget: Option<String>,
    pub cost_header: Option<String>,
    /// Of a budget, held by each request while it runs (`"0.05"`), then settled
    /// against the cost the upstream reports: concurrent requests cannot spend
    /// past the budget by more than what they report beyond it. Default none.
    pub reserve: Option<String>,
    /// Multiply the rate or budget for principals of these tiers: `{ pro = 5 }`.
    pub tiers: Option<BTreeMap<String, f64>>,
    /// Explicit rate or budget per tier: `{ free = "10/min", pro = "100/min" }`.
    pub tier_rates: Option<BTreeMap<String, String>>,
    pub on_redis_down: Option<RedisFallback>,
}

/// `by = "ip"` or `by = ["user", "route"]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum KeyBy {
    One(String),
    Many(Vec<String>),
}

impl Default for KeyBy {
    fn default() -> Self {
        KeyBy::One("ip".into())
    }
}

/// A route's entry in `limits`: a named limit or an inline one.
#[derive(Clone, Debug)]
pub enum LimitRef {
    Named(String),
    Inline(LimitConfig),
}

impl<'de> Deserialize<'de> for LimitRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LimitRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "the name of a [limits.named] entry, or an inline table like { by = \"ip\", rate = \"10/s\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LimitRef, E> {
                Ok(LimitRef::Named(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<LimitRef, A::Error> {
                LimitConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(LimitRef::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[bans]`: escalating temporary bans for repeat offenders.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BansConfig {
    pub enabled: bool,
    /// Refusals within `window` that earn a ban; 0 disables that trigger.
    pub after_rate_limited: u64,
    pub after_auth_failures: u64,
    pub after_blocked_inputs: u64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Ban length for the first, second, … offence (the last repeats).
    pub durations: Vec<humantime_serde::Serde<Duration>>,
    /// Offences are forgotten after this long without a new one.
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Most addresses tracked for strikes and offences (bounded memory).
    pub max_tracked: usize,
}

impl Default for BansConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            after_rate_limited: 50,
            after_auth_failures: 20,
            after_blocked_inputs: 10,
            window: Duration::from_secs(60),
            durations: [60, 600, 3600, 86_400].map(|s| Duration::from_secs(s).into()).to_vec(),
            forget_after: Duration::from_secs(86_400),
            max_tracked: 100_000,
        }
    }
}

/// `[access]`: CIDR allow and deny lists, checked before anything else.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// When not empty, only these addresses may connect (others get 403).
    pub allow: Vec<String>,
    /// These addresses get 403.
    pub deny: Vec<String>,
}

/// `[abuse]`: bounded-memory abuse detection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseConfig {
    /// How many heavy hitters (top client addresses) are tracked.
    pub top_k: usize,
    /// A spike is a request rate above `spike_factor` times the moving baseline…
    pub spike_factor: f64,
    /// …and above this many requests per second (so quiet periods don't alarm).
    pub spike_min_rate: f64,
    /// Ban the top client address when a spike is detected.
    pub ban_on_spike: bool,
    /// `spike_min_rate` for one class of event, e.g. `{ auth_failures = 5.0 }`
    /// (classes: [`crate::abuse::SPIKE_CLASSES`]).
    pub class_min_rate: BTreeMap<String, f64>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            top_k: 20,
            spike_factor: 5.0,
            spike_min_rate: 100.0,
            ban_on_spike: false,
            class_min_rate: BTreeMap::new(),
        }
    }
}

impl AbuseConfig {
    /// The floor under which `class` never spikes.
    pub fn min_rate(&self, class: &str) -> f64 {
        self.class_min_rate.get(class).copied().unwrap_or(self.spike_min_rate)
    }
}

/// `[server]`: the listener and connection-level protections.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Peers (CIDR or single address) whose `X-Forwarded-*`/`Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// The forwarding header those proxies write, the only one read:
    /// `"x-forwarded-for"` (with `X-Forwarded-Proto`) or `"forwarded"` (RFC 7239).
    pub client_ip_header: crate::client_ip::ForwardingHeader,
    /// `Host`/`:authority` allow-list (exact or `*.example.com`); empty allows any host.
    pub trusted_hosts: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest pause allowed between two pieces of a request body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// A WebSocket tunnel with no byte either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub tunnel_idle_timeout: Duration,
    /// A connection whose client takes nothing of what is written to it for
    /// this long is closed (nginx's `send_timeout`).
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    pub max_uri_length: usize,
    pub max_header_count: usize,
    /// Sum of all header name and value lengths.
    pub max_header_bytes: usize,
    /// Accept `%2F` inside a path segment (off: such paths are refused with 400).
    pub allow_encoded_slash: bool,
    /// Route paths match with case as written (FastAPI, Starlette). Off for
    /// an upstream that routes without regard to case (Express by default,
    /// ASP.NET Core): `/ADMIN/x` then takes the `/admin/**` route.
    pub case_sensitive_paths: bool,
    /// A trailing `/` is part of the path when routing (`/admin/` is not
    /// `/admin`). Off for an upstream that serves both alike (Express's
    /// default, non-`strict` routing).
    pub strict_trailing_slash: bool,
    pub http2: bool,
    pub tls: Option<TlsConfig>,
    /// The leading bits of an IPv6 address that name one client (1..=128), for
    /// everything counted per client: `by = "ip"` limits, strikes and
    /// automatic bans, the per-address caps, the heavy hitters.
    pub ipv6_prefix: u32,
    /// Concurrent connections allowed from one client address (0: no cap).
    pub max_connections_per_ip: usize,
    /// Concurrent requests allowed from one client address (0: no cap).
    pub max_requests_per_ip: usize,
    /// Requests served on one HTTP/1.1 connection before it is closed (0: no cap).
    pub max_requests_per_connection: u64,
    /// Requests in flight across the gateway (0: no cap). Past `shed_anonymous_at`
    /// of it, requests without credentials are shed first (503).
    pub max_in_flight: usize,
    pub shed_anonymous_at: f64,
    /// Slowest request body accepted, in bytes per second, after `body_rate_grace`.
    pub min_body_rate: u64,
    #[serde(with = "humantime_serde")]
    pub body_rate_grace: Duration,
    /// Threads serving connections, each with its own event loop and its own
    /// upstream connection pools (0: one per CPU).
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            trusted_proxies: Vec::new(),
            client_ip_header: crate::client_ip::ForwardingHeader::default(),
            trusted_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
            tunnel_idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            max_uri_length: 8 * 1024,
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            allow_encoded_slash: false,
            case_sensitive_paths: true,
            strict_trailing_slash: true,
            http2: true,
            tls: None,
            ipv6_prefix: 64,
            max_connections_per_ip: 256,
            max_requests_per_ip: 256,
            max_requests_per_connection: 10_000,
            max_in_flight: 10_000,
            shed_anonymous_at: 0.8,
            min_body_rate: 1024,
            body_rate_grace: Duration::from_secs(5),
            workers: 0,
        }
    }
}

/// `[server.tls]`: terminate TLS with these PEM files (reloaded when they change).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    /// How often the files are checked for changes.
    #[serde(default = "default_tls_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_tls_reload() -> Duration {
    Duration::from_secs(30)
}

/// `[metrics]`: the operations listener (`/metrics`, `/healthz`, `/readyz`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Empty disables the listener.
    pub listen: String,
    /// Bearer token required for the operations endpoints that change state or
    /// name clients (`/bans`, `/top`). Without one, only loopback peers may call them.
    pub admin_token: super::secret::Secret,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9090".into(), admin_token: Default::default() }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `rampart=debug,info`.
    pub level: String,
    pub format: LogFormat,
    /// One line per request.
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Json, access_log: true }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// `[upstreams.NAME]`: one target (`url`) or several (`urls`), balanced.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `http://host:port[/base]` or `https://…`.
    #[serde(default)]
    pub url: Option<String>,
    /// Several equivalent targets, used in turn (see `balance`).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response head arrives.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(default = "default_pool_idle", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// Extra PEM trust roots for an HTTPS upstream (the public web PKI is always trusted).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `http://`: speak HTTP/2 with prior knowledge. `https://`: offer h2 by ALPN.
    #[serde(default)]
    pub http2: bool,
    /// Send the client's `Host` instead of the upstream's authority.
    #[serde(default)]
    pub preserve_host: bool,
    /// Active health checks; unhealthy targets get no traffic.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub retries: RetryConfig,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastInFlight,
}

/// Active health checks of each target.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Path requested with GET; a 2xx or 3xx answer is healthy.
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks that take a target out.
    pub unhealthy_after: u32,
    /// Consecutive passed checks that bring it back.
    pub healthy_after: u32,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// Circuit breaker per target: opens after `consecutive_failures` failures in a
/// row, or when at least `min_requests` requests in `window` failed at
/// `error_ratio` or more; stays open for `open_for`; then lets one probe
/// request through (half-open) and closes when it succeeds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub error_ratio: f64,
    pub min_requests: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            error_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(10),
        }
    }
}

/// The most attempts `retries.attempts` may ask for (validated at load).
pub const MAX_ATTEMPTS: u32 = 10;

/// Retries: only for idempotent methods without a request body, and only when
/// the upstream could not be reached (never after it may have acted).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled before each further one.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { attempts: 2, backoff: Duration::from_millis(25) }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_response_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_pool_idle() -> Duration {
    Duration::from_secs(90)
}
fn default_pool_max_idle() -> usize {
    256
}

/// One `[[routes]]` entry, and also `[defaults]` (where the match fields `name`,
/// `hosts`, `methods` and `path` are refused by validation).
///
/// Policy fields are options so that a route can tell "not set, inherit the
/// default" from an explicit value. Later capabilities add their fields here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub path: Option<String>,

    pub upstream: Option<String>,
    /// Strip this prefix from the path before forwarding (`/api` + `/api/x` → `/x`).
    pub strip_prefix: Option<String>,
    /// Overrides the upstream's response timeout for this route.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub body_limit: Option<bytesize::ByteSize>,
    /// Media types accepted on requests that carry a body; empty accepts any.
    pub content_types: Option<Vec<String>>,
    /// Per-method media types, overriding `content_types` for that method.
    pub content_types_by_method: Option<BTreeMap<String, Vec<String>>>,
    pub cors: Option<CorsConfig>,
    pub security_headers: Option<SecurityHeadersConfig>,
    pub request_headers: Option<HeaderRewriteConfig>,
    pub response_headers: Option<HeaderRewriteConfig>,
    /// Rate limits and budgets; all must allow the request.
    pub limits: Option<Vec<LimitRef>>,
    /// Units each request on this route costs against its rate limits.
    pub weight: Option<u64>,
    /// Country allow/deny rules (needs `[geo] database`).
    pub geo: Option<GeoRuleConfig>,
    /// Input inspection (SQL injection, XSS, traversal, command injection, NUL).
    pub inspect: Option<InspectMode>,
    /// Which detectors run (all by default).
    pub inspect_rules: Option<InspectRulesConfig>,
    /// Places where such text is legitimate, skipped by inspection:
    /// `query:NAME`, `form:NAME`, `cookie:NAME`, `header:NAME`, `json:KEY` (any
    /// string under that key at any depth) or `json:a.b.c` (that path).
    pub inspect_exclude: Option<Vec<String>>,
    /// Request headers inspected (default `user-agent`, `referer`).
    pub inspect_headers: Option<Vec<String>>,
    /// Mask card numbers, SSNs, e-mail addresses and phone numbers in JSON
    /// string values before the body reaches the upstream.
    pub redact_pii: Option<bool>,
    /// Bearer-token authentication: `none` (default), `optional`, `required`.
    pub auth: Option<super::auth::AuthMode>,
    /// A cookie that may carry the token too (e.g. for browser clients).
    pub auth_cookie: Option<String>,
    /// A query parameter that may carry the token too (e.g. for WebSocket clients).
    pub auth_query: Option<String>,
    /// Whether a browser session cookie (`[identity.sessions]`) authenticates
    /// here too (default true when sessions are on).
    pub auth_session: Option<bool>,
    /// What the caller must hold: roles, permissions, scopes.
    pub authorize: Option<super::authorize::AuthorizeConfig>,
}

/// What inspection does with a finding.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InspectMode {
    /// Not inspected; bodies stream untouched.
    #[default]
    Off,
    /// Logged and audited, request passed on.
    Detect,
    /// Refused with 403, logged and audited.
    Block,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct InspectRulesConfig {
    pub sqli: bool,
    pub xss: bool,
    pub path_traversal: bool,
    pub command_injection: bool,
    pub nul_byte: bool,
}

impl Default for InspectRulesConfig {
    fn default() -> Self {
        Self { sqli: true, xss: true, path_traversal: true, command_injection: true, nul_byte: true }
    }
}

/// CORS for a route. Disabled when `allow_origins` is empty.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins, `https://*.example.com`, `http://localhost:*`, or `*`.
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for; `*` allows any (not with credentials).
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec(),
            allow_headers: ["authorization", "content-type"].map(String::from).to_vec(),
            expose_headers: Vec::new(),
            max_age: Duration::from_secs(600),
            allow_credentials: false,
        }
    }
}

/// Security response headers. Each field overrides the built-in value; an empty
/// string turns that header off.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityHeadersConfig {
    pub content_type_options: Option<String>,
    pub frame_options: Option<String>,
    pub referrer_policy: Option<String>,
    pub permissions_policy: Option<String>,
    pub cross_origin_opener_policy: Option<String>,
    /// Set only when the upstream sent no `Cache-Control` of its own.
    pub cache_control: Option<String>,
    pub content_security_policy: Option<String>,
    /// Sent only when the client connection was TLS (directly or per a trusted proxy).
    pub strict_transport_security: Option<String>,
    /// Upstream response headers removed before the client sees them.
    pub remove: Option<Vec<String>>,
}

/// Headers added to or removed from a request or response.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderRewriteConfig {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}
