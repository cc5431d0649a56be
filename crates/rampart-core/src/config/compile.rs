//! Validation and compilation of a [`ConfigFile`] into the runtime [`Policy`].
//!
//! Everything a request needs is computed here once, at load or reload: the route
//! matcher, each route's merged policy, header names and values, CORS rules. The
//! request path then only looks things up.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Uri};

use super::env::ConfigPath;
use super::limits::{compile_limit, CompiledLimit};
use super::model::{
    AbuseConfig, AlertsConfig, AuditConfig, Balance, BansConfig, BreakerConfig, ConfigFile, CorsConfig, GeoRuleConfig,
    GeoUnknown, HeaderRewriteConfig, HealthCheckConfig, InspectMode, InspectRulesConfig, LimitRef, LogConfig,
    RedisConfig, RetryConfig, RouteConfig, SecurityHeadersConfig, StorageConfig, TlsConfig, UpstreamConfig,
};
use super::{ConfigError, ConfigErrors};
use crate::client_ip::{ClientGrouping, TrustedProxies};
use crate::cors::CorsPolicy;
use crate::path::PathOptions;
use crate::route::{HostPattern, PathPattern, RouteMatcher, RouteSpec};

/// Default request body limit when neither the route nor `[defaults]` sets one.
pub const DEFAULT_BODY_LIMIT: u64 = 10 * 1024 * 1024;

/// The checked, compiled configuration. Cheap to share; replaced whole on reload.
#[derive(Debug)]
pub struct Policy {
    pub server: ServerSettings,
    pub metrics_listen: Option<SocketAddr>,
    /// Token for the operations endpoints; `None`: loopback callers only.
    pub admin_token: Option<super::secret::Secret>,
    pub log: LogConfig,
    pub upstreams: Vec<UpstreamSettings>,
    pub routes: Vec<Arc<RoutePolicy>>,
    pub matcher: RouteMatcher,
    /// Security headers for responses to requests that matched no route.
    pub default_security_headers: Arc<SecurityHeaders>,
    pub limits: LimitSettings,
    /// `None` keeps all state in process.
    pub redis: Option<RedisConfig>,
    pub bans: BansConfig,
    pub access: AccessLists,
    pub abuse: AbuseConfig,
    pub geo: GeoSettings,
    pub storage: StorageConfig,
    pub audit: AuditConfig,
    pub alerts: AlertsConfig,
    /// Bearer-token verification and identity headers.
    pub auth: Arc<super::auth::AuthSettings>,
    /// The forward-auth endpoint's path; `None`: off.
    pub forward_auth: Option<String>,
    /// The identity API; `None`: off.
    pub identity: Option<Arc<super::identity::IdentitySettings>>,
    /// `[roles]`: the permissions each role grants.
    pub roles: Arc<super::authorize::Roles>,
}

/// `[geo]`, checked: the database is needed whenever `header` is set or a
/// route has rules.
#[derive(Clone, Debug, Default)]
pub struct GeoSettings {
    pub database: Option<String>,
    pub header: Option<HeaderName>,
    pub unknown_allowed: bool,
}

/// A route's country rules, compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GeoRule {
    allow: Vec<[u8; 2]>,
    deny: Vec<[u8; 2]>,
}

impl GeoRule {
    /// Whether a client in `country` (ISO alpha-2; `None` when unknown) may pass.
    ///
    /// ```
    /// # use rampart_core::config::compile::GeoRule;
    /// let r = GeoRule::new(&["US".into()], &[]).unwrap();
    /// assert!(r.permits(Some("US"), true) && !r.permits(Some("FR"), true));
    /// assert!(r.permits(None, true) && !r.permits(None, false));
    /// ```
    pub fn permits(&self, country: Option<&str>, unknown_allowed: bool) -> bool {
        let Some(code) = country.and_then(|c| <[u8; 2]>::try_from(c.as_bytes()).ok()) else {
            return unknown_allowed;
        };
        let code = code.map(|b| b.to_ascii_uppercase());
        !self.deny.contains(&code) && (self.allow.is_empty() || self.allow.contains(&code))
    }

    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        let parse = |list: &[String]| -> Result<Vec<[u8; 2]>, String> {
            list.iter()
                .map(|c| {
                    <[u8; 2]>::try_from(c.as_bytes())
                        .ok()
                        .filter(|b| b.iter().all(u8::is_ascii_uppercase))
                        .ok_or_else(|| format!("`{c}` is not an ISO 3166-1 alpha-2 country code like `US`"))
                })
                .collect()
        };
        Ok(Self { allow: parse(allow)?, deny: parse(deny)? })
    }
}

/// Settings shared by every rate limit.
#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub max_keys: usize,
    pub exempt_paths: Vec<PathPattern>,
    pub exempt_cidrs: TrustedProxies,
    /// Every limit, named ones first (for the ops listener and metrics).
    pub all: Vec<Arc<CompiledLimit>>,
}

impl LimitSettings {
    /// True when a request is never rate limited. `raw_path` is the path as
    /// sent: patterns match it as routes do, decoded and without segment
    /// parameters (`/%68ealth/live` is `/health/live`); a path that does not
    /// decode is not exempt.
    pub fn is_exempt(&self, client: IpAddr, raw_path: &str) -> bool {
        if self.exempt_cidrs.contains(client) {
            return true;
        }
        if self.exempt_paths.is_empty() {
            return false;
        }
        let opts = crate::path::PathOptions { allow_encoded_slash: true };
        crate::path::normalize_path(raw_path, &opts).is_ok_and(|decoded| {
            let path = crate::path::without_params(&decoded);
            self.exempt_paths.iter().any(|p| p.matches(&path))
        })
    }
}

/// CIDR allow and deny lists.
#[derive(Clone, Debug, Default)]
pub struct AccessLists {
    /// Empty allows every address not denied.
    pub allow: TrustedProxies,
    pub deny: TrustedProxies,
}

impl AccessLists {
    pub fn permits(&self, ip: IpAddr) -> bool {
        !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
    }
}

impl Policy {
    /// The route for a request, by first match. `path` is the normalised path.
    pub fn route(&self, host: Option<&str>, method: &Method, path: &str) -> Option<&Arc<RoutePolicy>> {
        self.matcher.find(host, method, path).and_then(|i| self.routes.get(i))
    }
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub trusted_proxies: TrustedProxies,
    pub trusted_hosts: Vec<HostPattern>,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub tunnel_idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_uri_length: usize,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub path_options: PathOptions,
    /// How request paths meet route patterns (see [`RouteMatching`]).
    pub route_matching: RouteMatching,
    pub http2: bool,
    pub tls: Option<TlsConfig>,
    /// How client addresses are counted per client (`ipv6_prefix`).
    pub clients: ClientGrouping,
    pub max_connections_per_ip: usize,
    pub max_requests_per_ip: usize,
    pub max_requests_per_connection: u64,
    pub max_in_flight: usize,
    pub shed_anonymous_at: f64,
    pub min_body_rate: u64,
    pub body_rate_grace: Duration,
    /// Connection-serving threads; 0 means one per CPU.
    pub workers: usize,
}

/// How request paths meet route patterns: exactly (the default, as FastAPI
/// and Starlette route), or as an upstream that routes more loosely does,
/// so that no spelling of a path the upstream serves as a strict route's
/// slips past that route to a looser one.
///
/// ```
/// use rampart_core::config::RouteMatching;
/// let loose = RouteMatching { case_sensitive: false, strict_trailing_slash: false };
/// assert_eq!(loose.key("/ADMIN/Users/"), "/admin/users");
/// assert_eq!(loose.key("/"), "/");
/// assert_eq!(RouteMatching::default().key("/ADMIN/"), "/ADMIN/");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMatching {
    pub case_sensitive: bool,
    pub strict_trailing_slash: bool,
}

impl Default for RouteMatching {
    fn default() -> Self {
        Self { case_sensitive: true, strict_trailing_slash: true }
    }
}

impl RouteMatching {
    /// `path` (normalised) as route patterns are matched against it:
    /// lower-cased when case does not count, without its trailing slashes
    /// (but `/` itself) when they do not.
    pub fn key<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        let path = match self.strict_trailing_slash {
            true => path,
            false => match path.trim_end_matches('/') {
                "" => "/",
                trimmed => trimmed,
            },
        };
        if self.case_sensitive {
            return std::borrow::Cow::Borrowed(path);
        }
        fold_case(path)
    }

    /// A route's path pattern as written, in the form it is compiled in.
    fn pattern(&self, pattern: &str) -> String {
        if self.case_sensitive {
            pattern.to_owned()
        } else {
            fold_case(pattern).into_owned()
        }
    }
}

/// `s` with every character upper-cased and then lower-cased, one at a
/// time: a fold that maps more spellings together than any framework's
/// case-insensitive comparison (lower-casing alone would keep the title-case
/// `ǅ` apart from `ǆ`, the long `ſ` and dotless `ı` apart from `s` and `i`,
/// and turn a final `Σ` into `ς`), so a request can only meet a stricter
/// route than its upstream would pick, never a looser one.
///
/// ```
/// use rampart_core::config::compile::fold_case;
/// assert_eq!(fold_case("/Admin"), "/admin");
/// assert_eq!(fold_case("ǅſıΣ"), fold_case("ǆsiσ"));
/// assert_eq!(fold_case("ΟΔΟΣ"), fold_case("οδος"));
/// ```
pub fn fold_case(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(s.chars().flat_map(char::to_uppercase).flat_map(char::to_lowercase).collect())
}

#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub name: String,
    /// One or more equivalent targets.
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub ca_file: Option<String>,
    pub http2: bool,
    pub preserve_host: bool,
    pub health_check: Option<HealthCheckConfig>,
    pub breaker: BreakerConfig,
    pub retries: RetryConfig,
}

/// One place an upstream's requests can go.
#[derive(Clone, Debug)]
pub struct Target {
    pub https: bool,
    pub authority: Authority,
    /// Path prefix from the URL, without a trailing slash (`""` for none).
    pub base_path: String,
    /// The `Host` sent upstream unless `preserve_host` is set.
    pub host_header: HeaderValue,
}

/// One route's merged policy (route fields over `[defaults]` over built-ins).
#[derive(Debug)]
pub struct RoutePolicy {
    /// For logs and metrics: the route's `name`, else `routes[i]`.
    pub name: Arc<str>,
    /// This route's position in [`Policy::routes`], for per-route state kept
    /// beside the policy (metric handles, say) without a lookup by name.
    pub index: usize,
    /// Index into [`Policy::upstreams`].
    pub upstream: usize,
    pub strip_prefix: Option<String>,
    /// `strip_prefix` is cut whatever the case of its letters in the
    /// request (`[server] case_sensitive_paths = false`).
    pub strip_prefix_any_case: bool,
    pub timeout: Option<Duration>,
    pub body_limit: u64,
    pub content_types: ContentTypePolicy,
    pub cors: Option<Arc<CorsPolicy>>,
    pub security_headers: Arc<SecurityHeaders>,
    pub request_headers: HeaderRewrite,
    pub response_headers: HeaderRewrite,
    /// Every limit this route applies; all must allow a request.
    pub limits: Vec<Arc<CompiledLimit>>,
    /// True when a limit is keyed by user, API key or tier: then all of the
    /// route's limits are decided together after authentication (one decision,
    /// nothing charged when any refuses); otherwise before it.
    pub limits_after_auth: bool,
    /// Units a request costs against the route's rate limits.
    pub weight: u64,
    /// Country rules; `None`: no geo restriction.
    pub geo: Option<Arc<GeoRule>>,
    /// Inspection and PII redaction; `None`: bodies stream untouched.
    pub inspect: Option<Arc<InspectPolicy>>,
    /// Bearer-token authentication.
    pub auth: super::auth::RouteAuth,
    /// What the caller must hold (roles, permissions, scopes); `None`: nothing.
    pub authorize: Option<Arc<super::authorize::Requirement>>,
}

/// A route's inspection settings, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectPolicy {
    pub mode: InspectMode,
    pub rules: InspectRulesConfig,
    pub exclude: Vec<Exclusion>,
    pub headers: Vec<HeaderName>,
    pub redact_pii: bool,
}

/// A place inspection skips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exclusion {
    Query(String),
    Form(String),
    Cookie(String),
    Header(HeaderName),
    /// Any JSON string under this key, at any depth.
    JsonKey(String),
    /// The JSON string at exactly this path of object keys (arrays are transparent).
    JsonPath(Vec<String>),
}

impl Exclusion {
    fn parse(s: &str) -> Result<Self, String> {
        let (place, name) = s.split_once(':').filter(|(_, n)| !n.is_empty()).ok_or_else(|| {
            format!("`{s}` should look like `query:NAME`, `form:NAME`, `cookie:NAME`, `header:NAME` or `json:KEY`")
        })?;
        Ok(match place {
            "query" => Self::Query(name.into()),
            "form" => Self::Form(name.into()),
            "cookie" => Self::Cookie(name.into()),
            "header" => Self::Header(parse_header_name(&name.to_ascii_lowercase())?),
            "json" if name.contains('.') => Self::JsonPath(name.split('.').map(String::from).collect()),
            "json" => Self::JsonKey(name.into()),
            other => return Err(format!("`{other}` is not a place; use query, form, cookie, header or json")),
        })
    }
}

impl InspectPolicy {
    pub fn skips_query(&self, name: &str) -> bool {
        self.exclude.iter().any(|e| matches!(e, Exclusion::Query(n) if n == name))
    }

    pub fn skips_form(&self, name: &str) -> bool {
        self.exclude.iter().any(|e| matches!(e, Exclusion::Form(n) if n == name))
    }

    pub fn skips_cookie(&self, name: &str) -> bool {
        self.exclude.iter().any(|e| matches!(e, Exclusion::Cookie(n) if n == name))
    }

    pub fn skips_header(&self, name: &HeaderName) -> bool {
        self.exclude.iter().any(|e| matches!(e, Exclusion::Header(n) if n == name))
    }

    /// True when the JSON string at `path` (object keys from the root) is excluded.
    pub fn skips_json(&self, path: &[&str]) -> bool {
        self.exclude.iter().any(|e| match e {
            Exclusion::JsonKey(k) => path.last().is_some_and(|last| last == k),
            Exclusion::JsonPath(p) => p.len() == path.len() && p.iter().zip(path).all(|(a, b)| a == b),
            _ => false,
        })
    }
}

/// Which media types a request body may have.
#[derive(Clone, Debug, Default)]
pub struct ContentTypePolicy {
    any_method: Vec<MediaRange>,
    by_method: Vec<(Method, Vec<MediaRange>)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct MediaRange {
    kind: String,
    /// `None` for `type/*`.
    subtype: Option<String>,
}

impl ContentTypePolicy {
    /// True when a body of `content_type` may be sent with `method`. A missing
    /// header is refused whenever a list applies.
    ///
    /// ```
    /// # use rampart_core::config::ContentTypePolicy;
    /// let p = ContentTypePolicy::new(&["application/json".into()], &[]).unwrap();
    /// assert!(p.allows(&http::Method::POST, Some("Application/JSON; charset=utf-8")));
    /// assert!(!p.allows(&http::Method::POST, Some("text/xml")));
    /// assert!(!p.allows(&http::Method::POST, None));
    /// ```
    pub fn allows(&self, method: &Method, content_type: Option<&str>) -> bool {
        let list = self.by_method.iter().find(|(m, _)| m == method).map(|(_, l)| l).unwrap_or(&self.any_method);
        if list.is_empty() {
            return true;
        }
        let Some(ct) = content_type else { return false };
        let essence = ct.split(';').next().unwrap_or("").trim();
        let Some((kind, subtype)) = essence.split_once('/') else {
            return false;
        };
        list.iter().any(|r| {
            r.kind.eq_ignore_ascii_case(kind) && r.subtype.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(subtype))
        })
    }

    /// True when no restriction applies to any method.
    pub fn is_open(&self) -> bool {
        self.any_method.is_empty() && self.by_method.iter().all(|(_, l)| l.is_empty())
    }

    pub fn new(any: &[String], by_method: &[(String, Vec<String>)]) -> Result<Self, String> {
        let parse_list = |list: &[String]| -> Result<Vec<MediaRange>, String> {
            list.iter().map(|s| parse_media_range(s)).collect()
        };
        let mut out = Self { any_method: parse_list(any)?, by_method: Vec::new() };
        for (m, list) in by_method {
            let method = parse_method(m)?;
            out.by_method.push((method, parse_list(list)?));
        }
        Ok(out)
    }
}

fn parse_media_range(s: &str) -> Result<MediaRange, String> {
    let bad = || format!("`{s}` is not a media type like `application/json` or `text/*`");
    let (kind, subtype) = s.trim().split_once('/').ok_or_else(bad)?;
    let token_ok = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    if !token_ok(kind) || kind == "*" {
        return Err(bad());
    }
    let subtype = match subtype {
        "*" => None,
        st if token_ok(st) => Some(st.to_ascii_lowercase()),
        _ => return Err(bad()),
    };
    Ok(MediaRange { kind: kind.to_ascii_lowercase(), subtype })
}

fn parse_method(m: &str) -> Result<Method, String> {
    if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{m}` is not an HTTP method (use upper case, e.g. `POST`)"));
    }
    Method::from_bytes(m.as_bytes()).map_err(|_| format!("`{m}` is not an HTTP method"))
}

/// Security response headers, compiled.
#[derive(Clone, Debug, Default)]
pub struct SecurityHeaders {
    /// Always set, replacing an upstream's value.
    pub always: Vec<(HeaderName, HeaderValue)>,
    /// Set when the response has no `Cache-Control`.
    pub cache_control: Option<HeaderValue>,
    /// Set only for TLS clients.
    pub hsts: Option<HeaderValue>,
    /// Removed from every response.
    pub remove: Vec<HeaderName>,
}

/// Built-in security header values (used where config says nothing).
pub const BUILTIN_SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
];
pub const BUILTIN_CACHE_CONTROL: &str = "no-store";
pub const BUILTIN_HSTS: &str = "max-age=31536000; includeSubDomains";
pub const BUILTIN_REMOVED_HEADERS: &[&str] = &["server", "x-powered-by"];

/// Headers to set and remove on a request or a response.
#[derive(Clone, Debug, Default)]
pub struct HeaderRewrite {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRewrite {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a route may not set or pass on.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Collects errors so that one run reports all of them.
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: ConfigPath, msg: impl Into<String>) {
        self.0.push(ConfigError::at(path, msg));
    }

    fn check<T>(&mut self, path: ConfigPath, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(path, e);
                None
            }
        }
    }
}

fn p(s: &str) -> ConfigPath {
    ConfigPath::parse(s)
}

/// Validates the whole file and compiles it. Reports every problem found.
pub fn compile(file: &ConfigFile) -> Result<Policy, ConfigErrors> {
    let mut errs = Errors(Vec::new());
    let server = compile_server(file, &mut errs);

    let metrics_listen = if file.metrics.listen.is_empty() {
        None
    } else {
        errs.check(p("metrics.listen"), parse_socket_addr(&file.metrics.listen))
    };
    if let (Some(m), Some(s)) = (metrics_listen, &server) {
        if m == s.listen && m.port() != 0 {
            errs.push(p("metrics.listen"), "must differ from server.listen");
        }
    }
    if !matches!(file.log.level.trim(), "" | "trace" | "debug" | "info" | "warn" | "error")
        && !file.log.level.contains('=')
    {
        errs.push(p("log.level"), "use trace, debug, info, warn, error, or a filter like `rampart=debug,info`");
    }

    let lc = &file.limits;
    let mut named_limits: BTreeMap<String, Arc<CompiledLimit>> = BTreeMap::new();
    for (name, cfg) in &lc.named {
        let at = p("limits.named").push_key(name);
        if name.contains('#') {
            errs.push(at, "a limit name cannot contain `#`: it is kept for inline limits (`<route>#<n>`)");
            continue;
        }
        match compile_limit(name, cfg, lc.on_redis_down, &lc.cost_header) {
            Ok(l) => {
                named_limits.insert(name.clone(), Arc::new(l));
            }
            Err(e) => errs.push(at, e),
        }
    }
    let mut all_limits: Vec<Arc<CompiledLimit>> = named_limits.values().cloned().collect();
    let mut role_errs = Vec::new();
    let roles = super::authorize::compile_roles(&file.roles, &mut role_errs);
    for (path, msg) in role_errs {
        errs.push(path, msg);
    }
    let ctx = LimitContext { named: &named_limits, defaults: lc, roles: &roles };

    let mut upstreams = Vec::new();
    let mut upstream_index = BTreeMap::new();
    for (name, cfg) in &file.upstreams {
        let at = p("upstreams").push_key(name);
        if let Some(u) = compile_upstream(name, cfg, &at, &mut errs) {
            upstream_index.insert(name.clone(), upstreams.len());
            upstreams.push(u);
        }
    }

    for field in ["name", "hosts", "methods", "path"] {
        let set = match field {
            "name" => file.defaults.name.is_some(),
            "hosts" => file.defaults.hosts.is_some(),
            "methods" => file.defaults.methods.is_some(),
            _ => file.defaults.path.is_some(),
        };
        if set {
            errs.push(p("defaults").push_key(field), "only routes match requests; move this into a [[routes]] entry");
        }
    }

    let implicit = [RouteConfig { path: Some("/**".into()), name: Some("default".into()), ..Default::default() }];
    let (route_cfgs, implicit_routes) =
        if file.routes.is_empty() { (&implicit[..], true) } else { (&file.routes[..], false) };

    let matching = server.as_ref().map(|s| s.route_matching).unwrap_or_default();
    let mut routes: Vec<Arc<RoutePolicy>> = Vec::new();
    let mut patterns: Vec<(Vec<HostPattern>, Vec<Method>, PathPattern)> = Vec::new();
    let mut names = HashSet::new();
    for (i, route) in route_cfgs.iter().enumerate() {
        let at = if implicit_routes { p("defaults") } else { p("routes").push_index(i) };
        let name = route.name.clone().unwrap_or_else(|| format!("routes[{i}]"));
        if !names.insert(name.clone()) {
            errs.push(at.push_key("name"), format!("route name `{name}` is used twice"));
        }
        if name.contains('#') {
            // Inline limits are named `<route>#<n>`: a `#` in a route name could
            // make two routes' limits, or a route's and a named one, share a key.
            errs.push(at.push_key("name"), "a route name cannot contain `#`: inline limits are named `<route>#<n>`");
        }
        let path = match &route.path {
            Some(s) if !matching.strict_trailing_slash && s.len() > 1 && s.ends_with('/') => {
                let why = "with `server.strict_trailing_slash = false` paths are matched without their trailing `/`, \
                           so a pattern ending in `/` never matches: remove it";
                errs.push(at.push_key("path"), why);
                None
            }
            Some(s) => {
                errs.check(at.push_key("path"), PathPattern::parse(&matching.pattern(s)).map_err(|e| e.to_string()))
            }
            None => {
                errs.push(at.push_key("path"), "every route needs a path pattern, e.g. `/api/**`");
                None
            }
        };
        let mut hosts = Vec::new();
        for (j, h) in route.hosts.iter().flatten().enumerate() {
            if let Some(hp) =
                errs.check(at.push_key("hosts").push_index(j), HostPattern::parse(h).map_err(|e| e.to_string()))
            {
                hosts.push(hp);
            }
        }
        let mut methods = Vec::new();
        for (j, m) in route.methods.iter().flatten().enumerate() {
            if let Some(m) = errs.check(at.push_key("methods").push_index(j), parse_method(m)) {
                methods.push(m);
            }
        }
        // Web frameworks (Starlette, Flask, Express, Go's mux) answer HEAD
        // with the GET handler: a GET route is a HEAD route too, or HEAD
        // would fall through to a later route and do the GET's work under
        // that route's (looser) auth and limits.
        if methods.contains(&http::Method::GET) && !methods.contains(&http::Method::HEAD) {
            methods.push(http::Method::HEAD);
        }
        let policy = compile_route_policy(name, route, &file.defaults, &at, &upstream_index, &ctx, &mut errs);
        if let Some(policy) = &policy {
            for l in &policy.limits {
                if !all_limits.iter().any(|x| x.name == l.name) {
                    all_limits.push(l.clone());
                }
            }
        }
        if let (Some(path), Some(mut policy)) = (path, policy) {
            // First match wins: a route that an earlier one covers entirely
            // (hosts, methods and paths) never applies, and whatever it was
            // meant to require (auth, roles, limits) silently does not.
            let shadow = patterns.iter().zip(&routes).find(|((h, m, pp), _)| {
                let hosts_covered =
                    h.is_empty() || (!hosts.is_empty() && hosts.iter().all(|o| h.iter().any(|s| s.covers(o))));
                let methods_covered = m.is_empty() || (!methods.is_empty() && methods.iter().all(|o| m.contains(o)));
                hosts_covered && methods_covered && pp.covers(&path)
            });
            if let Some(((_, _, earlier), earlier_route)) = shadow {
                errs.push(
                    at.push_key("path"),
                    format!(
                        "this route can never match: route `{}` (`{}`) comes first and matches every request it would \
                         (the first matching route wins); move this one above it",
                        earlier_route.name,
                        earlier.as_str()
                    ),
                );
            }
            patterns.push((hosts, methods, path));
            policy.index = routes.len();
            policy.strip_prefix_any_case = !matching.case_sensitive;
            routes.push(Arc::new(policy));
        }
    }

    let limits = LimitSettings {
        max_keys: lc.max_keys,
        exempt_paths: lc
            .exempt_paths
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                errs.check(p("limits.exempt_paths").push_index(i), PathPattern::parse(s).map_err(|e| e.to_string()))
            })
            .collect(),
        exempt_cidrs: TrustedProxies::new(cidrs(&lc.exempt_cidrs, "limits.exempt_cidrs", &mut errs)),
        all: all_limits,
    };
    if lc.max_keys == 0 {
        errs.push(p("limits.max_keys"), "must be at least 1");
    }
    let access = AccessLists {
        allow: TrustedProxies::new(cidrs(&file.access.allow, "access.allow", &mut errs)),
        deny: TrustedProxies::new(cidrs(&file.access.deny, "access.deny", &mut errs)),
    };
    let redis = compile_redis(&file.redis, &mut errs);
    compile_bans(&file.bans, &mut errs);
    let geo_needed = routes.iter().position(|r| r.geo.is_some());
    let geo = GeoSettings {
        database: Some(file.geo.database.clone()).filter(|d| !d.is_empty()),
        header: if file.geo.header.is_empty() {
            None
        } else {
            errs.check(p("geo.header"), parse_header_name(&file.geo.header.to_ascii_lowercase()))
        },
        unknown_allowed: file.geo.unknown == GeoUnknown::Allow,
    };
    if geo.database.is_none() {
        if let Some(i) = geo_needed {
            errs.push(p("geo.database"), format!("needed by the geo rules of route `{}`", routes[i].name));
        } else if geo.header.is_some() {
            errs.push(p("geo.database"), "needed by geo.header");
        }
    }
    let db = file.storage.database.expose();
    if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        // The URL may hold a password: never echo it.
        errs.push(p("storage.database"), "must be a sqlite:… or postgres://… URL");
    }
    if file.audit.queue == 0 {
        errs.push(p("audit.queue"), "must be at least 1");
    }
    let hook = file.alerts.webhook_url.expose();
    if !(hook.is_empty() || hook.starts_with("http://") || hook.starts_with("https://")) {
        errs.push(p("alerts.webhook_url"), "must be an http:// or https:// URL");
    }
    for (i, rule) in file.alerts.rules.iter().enumerate() {
        let at = p("alerts.rules").push_index(i);
        if rule.threshold == 0 {
            errs.push(at.push_key("threshold"), "must be at least 1");
        }
        if rule.window.is_zero() {
            errs.push(at.push_key("window"), "must be longer than zero");
        }
        if rule.event.is_empty() {
            errs.push(at.push_key("event"), "names the event type to count, e.g. `input_blocked`");
        }
    }
    if file.abuse.top_k == 0 || file.abuse.top_k > 1000 {
        errs.push(p("abuse.top_k"), "must be between 1 and 1000");
    }
    if !(file.abuse.spike_factor.is_finite() && file.abuse.spike_factor > 1.0) {
        errs.push(p("abuse.spike_factor"), "must be a number above 1");
    }
    if !(file.abuse.spike_min_rate.is_finite() && file.abuse.spike_min_rate >= 0.0) {
        errs.push(p("abuse.spike_min_rate"), "must be zero or more");
    }
    for (class, rate) in &file.abuse.class_min_rate {
        let at = p("abuse.class_min_rate").push_key(class);
        if !crate::abuse::SPIKE_CLASSES.contains(&class.as_str()) {
            errs.push(at, format!("`{class}` is not a class; use {}", crate::abuse::SPIKE_CLASSES.join(", ")));
        } else if !(rate.is_finite() && *rate >= 0.0) {
            errs.push(at, "must be zero or more");
        }
    }

    let forward_auth = Some(file.forward_auth.path.clone()).filter(|p| !p.is_empty());
    if let Some(path) = &forward_auth {
        if !path.starts_with('/') || path.contains(['?', '#', '*']) {
            errs.push(p("forward_auth.path"), "must be a path like `/_rampart/auth`");
        }
        if file.server.trusted_proxies.is_empty() {
            errs.push(
                p("forward_auth.path"),
                "only trusted proxies may call the forward-auth endpoint: set [server] trusted_proxies",
            );
        }
    }
    let mut auth_errs = Vec::new();
    let auth = super::auth::compile_auth(&file.auth, &mut auth_errs);
    let identity = super::identity::compile_identity(&file.identity, &mut auth_errs).map(Arc::new);
    for (path, msg) in auth_errs {
        errs.push(path, msg);
    }
    if !file.auth.headers.internal_jwt.is_empty() && !file.identity.enabled {
        errs.push(p("auth.headers.internal_jwt"), "is signed with [identity]'s key: enable [identity]");
    }
    if file.identity.enabled {
        // Tokens are verified by the first issuer that names their `iss`:
        // a copy of [identity]'s would verify them without its revocations.
        let own = file.identity.issuer.trim_end_matches('/');
        for (i, issuer) in file.auth.issuers.iter().enumerate() {
            if issuer.issuer.trim_end_matches('/') == own {
                errs.push(
                    p("auth.issuers").push_index(i).push_key("issuer"),
                    "is [identity]'s own issuer, whose tokens [identity] verifies (with its revocations): remove this entry",
                );
            }
        }
        if !file.auth.headers.internal_jwt.is_empty()
            && file.auth.headers.internal_jwt_audience == file.identity.audience
        {
            errs.push(
                p("auth.headers.internal_jwt_audience"),
                "must differ from [identity] audience, or the signed identity header would pass as an access token",
            );
        }
    }
    if file.auth.issuers.is_empty() && identity.is_none() {
        for (i, r) in routes.iter().enumerate() {
            if r.auth.mode != super::auth::AuthMode::None {
                let at = if file.routes.is_empty() {
                    p("defaults.auth")
                } else {
                    p("routes").push_index(i).push_key("auth")
                };
                errs.push(at, "needs at least one [[auth.issuers]] (or [identity]) to verify tokens with");
                break;
            }
        }
    }

    let default_security_headers = Arc::new(compile_security_headers(
        &[file.defaults.security_headers.as_ref()],
        &p("defaults.security_headers"),
        &mut Errors(Vec::new()),
    ));
    if !errs.0.is_empty() {
        return Err(ConfigErrors(errs.0));
    }
    let (Some(server), Some(auth)) = (server, auth) else {
        return Err(ConfigErrors(errs.0));
    };
    let matcher = RouteMatcher::new(patterns.iter().map(|(hosts, methods, path)| RouteSpec { hosts, methods, path }));
    Ok(Policy {
        server,
        metrics_listen,
        admin_token: Some(file.metrics.admin_token.clone()).filter(|t| !t.is_empty()),
        log: file.log.clone(),
        upstreams,
        routes,
        matcher,
        default_security_headers,
        limits,
        redis,
        bans: file.bans.clone(),
        access,
        abuse: file.abuse.clone(),
        geo,
        storage: file.storage.clone(),
        audit: file.audit.clone(),
        alerts: file.alerts.clone(),
        auth: Arc::new(auth),
        forward_auth,
        identity,
        roles: Arc::new(roles),
    })
}

/// The most connection-serving threads `[server] workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

fn compile_server(file: &ConfigFile, errs: &mut Errors) -> Option<ServerSettings> {
    let s = &file.server;
    let listen = errs.check(p("server.listen"), parse_socket_addr(&s.listen));
    let mut nets = Vec::new();
    for (i, cidr) in s.trusted_proxies.iter().enumerate() {
        let trusted = parse_net(cidr).and_then(|net| {
            // Trusting every address lets every client name its own address
            // in the forwarding header, and so escape limits and bans. Judged
            // as it is matched: `::ffff:0:0/96` is every IPv4 address.
            if crate::client_ip::canonical_net(net).prefix_len() == 0 {
                Err(format!(
                    "`{cidr}` trusts every address, so any client could set its own address in the forwarding \
                     header; list only your proxies' addresses or networks"
                ))
            } else {
                Ok(net)
            }
        });
        if let Some(net) = errs.check(p("server.trusted_proxies").push_index(i), trusted) {
            nets.push(net);
        }
    }
    let mut hosts = Vec::new();
    for (i, h) in s.trusted_hosts.iter().enumerate() {
        if let Some(hp) =
            errs.check(p("server.trusted_hosts").push_index(i), HostPattern::parse(h).map_err(|e| e.to_string()))
        {
            hosts.push(hp);
        }
    }
    for (field, d) in [
        ("header_read_timeout", s.header_read_timeout),
        ("body_read_timeout", s.body_read_timeout),
        ("shutdown_timeout", s.shutdown_timeout),
        ("tunnel_idle_timeout", s.tunnel_idle_timeout),
        ("send_timeout", s.send_timeout),
    ] {
        if d.is_zero() {
            errs.push(p("server").push_key(field), "must be longer than zero");
        }
    }
    for (field, n) in [
        ("max_uri_length", s.max_uri_length),
        ("max_header_count", s.max_header_count),
        ("max_header_bytes", s.max_header_bytes),
    ] {
        if n == 0 {
            errs.push(p("server").push_key(field), "must be at least 1");
        }
    }
    if s.workers > MAX_WORKERS {
        errs.push(p("server.workers"), format!("must be at most {MAX_WORKERS} (0: one per CPU)"));
    }
    let ipv6_prefix = match u8::try_from(s.ipv6_prefix) {
        Ok(n @ 1..=128) => n,
        _ => {
            errs.push(p("server.ipv6_prefix"), "must be between 1 and 128: the leading bits of an IPv6 address that name one client (64 is the usual network of one)");
            ClientGrouping::DEFAULT_IPV6_PREFIX
        }
    };
    if !(0.0..=1.0).contains(&s.shed_anonymous_at) {
        errs.push(p("server.shed_anonymous_at"), "must be a fraction between 0 and 1");
    }
    if let Some(tls) = &s.tls {
        if tls.cert.is_empty() {
            errs.push(p("server.tls.cert"), "needs the path of a PEM certificate chain");
        }
        if tls.key.is_empty() {
            errs.push(p("server.tls.key"), "needs the path of a PEM private key");
        }
        if tls.reload_interval.is_zero() {
            errs.push(p("server.tls.reload_interval"), "must be longer than zero");
        }
    }
    Some(ServerSettings {
        listen: listen?,
        trusted_proxies: TrustedProxies::new(nets).reading(s.client_ip_header),
        trusted_hosts: hosts,
        header_read_timeout: s.header_read_timeout,
        body_read_timeout: s.body_read_timeout,
        shutdown_timeout: s.shutdown_timeout,
        tunnel_idle_timeout: s.tunnel_idle_timeout,
        send_timeout: s.send_timeout,
        max_uri_length: s.max_uri_length,
        max_header_count: s.max_header_count,
        max_header_bytes: s.max_header_bytes,
        path_options: PathOptions { allow_encoded_slash: s.allow_encoded_slash },
        route_matching: RouteMatching {
            case_sensitive: s.case_sensitive_paths,
            strict_trailing_slash: s.strict_trailing_slash,
        },
        http2: s.http2,
        tls: s.tls.clone(),
        clients: ClientGrouping::new(ipv6_prefix),
        max_connections_per_ip: s.max_connections_per_ip,
        max_requests_per_ip: s.max_requests_per_ip,
        max_requests_per_connection: s.max_requests_per_connection,
        max_in_flight: s.max_in_flight,
        shed_anonymous_at: s.shed_anonymous_at,
        min_body_rate: s.min_body_rate,
        body_rate_grace: s.body_rate_grace,
        workers: s.workers,
    })
}

fn cidrs(list: &[String], field: &str, errs: &mut Errors) -> Vec<ipnet::IpNet> {
    list.iter().enumerate().filter_map(|(i, c)| errs.check(p(field).push_index(i), parse_net(c))).collect()
}

fn compile_redis(cfg: &RedisConfig, errs: &mut Errors) -> Option<RedisConfig> {
    let url = cfg.url.expose();
    if url.is_empty() {
        // Without a url there is no Redis: sentinels or cluster nodes alone
        // would be silently ignored.
        if !cfg.sentinels.is_empty() || !cfg.cluster_nodes.is_empty() {
            errs.push(
                p("redis.url"),
                "is required with sentinels or cluster_nodes (it gives the credentials and TLS; its host is unused)",
            );
        }
        return None;
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://")) {
        // The URL may hold a password: never echo it.
        errs.push(p("redis.url"), "must start with redis://, rediss:// or redis+unix://");
    }
    let tls = url.starts_with("rediss://") || cfg.sentinel_tls;
    if url.starts_with("rediss://") && url.contains('#') {
        // `rediss://…/#insecure` would turn certificate checks off.
        errs.push(p("redis.url"), "cannot have a #fragment: the certificate is always verified (give `ca_file`)");
    }
    for (field, value) in
        [("ca_file", &cfg.ca_file), ("client_cert", &cfg.client_cert), ("client_key", &cfg.client_key)]
    {
        if value.is_some() && !tls {
            errs.push(p("redis").push_key(field), "applies only with TLS: a rediss:// url or sentinel_tls");
        }
    }
    if cfg.client_cert.is_some() != cfg.client_key.is_some() {
        errs.push(p("redis.client_cert"), "client_cert and client_key go together: give both or neither");
    }
    if cfg.sentinels.is_empty() != cfg.sentinel_master.is_empty() {
        errs.push(p("redis.sentinel_master"), "sentinels and sentinel_master go together: give both or neither");
    }
    if cfg.sentinel_tls && cfg.sentinels.is_empty() {
        errs.push(p("redis.sentinel_tls"), "applies only with sentinels");
    }
    if !cfg.sentinels.is_empty() && url.starts_with("redis+unix://") {
        errs.push(p("redis.url"), "with sentinels, must be redis:// or rediss:// (the sentinels name a TCP address)");
    }
    for (i, s) in cfg.sentinels.iter().enumerate() {
        if host_port(s).is_none() {
            errs.push(p("redis.sentinels").push_index(i), "must be host:port, e.g. `10.0.0.1:26379`");
        }
    }
    if !cfg.cluster_nodes.is_empty() {
        if !cfg.sentinels.is_empty() {
            errs.push(p("redis.cluster_nodes"), "cannot go with sentinels: a Redis Cluster fails over by itself");
        }
        if url.starts_with("redis+unix://") {
            errs.push(
                p("redis.url"),
                "with cluster_nodes, must be redis:// or rediss:// (cluster nodes are TCP addresses)",
            );
        }
        if url_database(url).is_some_and(|db| db != "0") {
            errs.push(
                p("redis.url"),
                "with cluster_nodes, cannot name a database: a Redis Cluster has only database 0",
            );
        }
    }
    for (i, s) in cfg.cluster_nodes.iter().enumerate() {
        if host_port(s).is_none() {
            errs.push(p("redis.cluster_nodes").push_index(i), "must be host:port, e.g. `10.0.0.1:6379`");
        }
    }
    if cfg.timeout.is_zero() {
        errs.push(p("redis.timeout"), "must be longer than zero");
    }
    if cfg.probe_interval.is_zero() {
        errs.push(p("redis.probe_interval"), "must be longer than zero");
    }
    if cfg.key_prefix.contains(['{', '}']) {
        // Keys are `<key_prefix>rl:{<entity>}:<limit>`: Redis Cluster hashes
        // the first `{…}`, which must stay the entity's.
        errs.push(p("redis.key_prefix"), "cannot contain `{` or `}`: keys carry their own `{hash tag}`");
    }
    Some(cfg.clone())
}

/// The database a `redis://` or `rediss://` URL names (its path without the
/// `/`), if it names one. An unparsable URL names none here; Redis refuses
/// it when the store is set up.
pub(crate) fn url_database(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let db = uri.path().trim_start_matches('/');
    (!db.is_empty()).then(|| db.to_owned())
}

/// `host:port` of a sentinel or a cluster node (an IPv6 host in brackets),
/// or `None`.
pub fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    if let Some(v6) = host.strip_prefix('[') {
        let v6 = v6.strip_suffix(']').filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())?;
        return Some((v6.to_owned(), port));
    }
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_');
    (!host.is_empty() && host.bytes().all(plain)).then(|| (host.to_owned(), port))
}

fn compile_bans(cfg: &BansConfig, errs: &mut Errors) {
    if cfg.durations.is_empty() || cfg.durations.iter().any(|d| d.is_zero()) {
        errs.push(p("bans.durations"), "needs at least one ban length, each longer than zero");
    }
    if cfg.window.is_zero() {
        errs.push(p("bans.window"), "must be longer than zero");
    }
    if cfg.max_tracked == 0 {
        errs.push(p("bans.max_tracked"), "must be at least 1");
    }
}

/// Named limits and `[limits]` defaults, for compiling routes' `limits`.
/// What compiling a route needs from the rest of the file.
struct LimitContext<'a> {
    named: &'a BTreeMap<String, Arc<CompiledLimit>>,
    defaults: &'a super::model::LimitsConfig,
    roles: &'a super::authorize::Roles,
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("`{s}` is not an address like `127.0.0.1:8080` or `[::]:8080`"))
}

fn parse_net(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| format!("`{s}` is not a CIDR like `10.0.0.0/8` or an address"))
}

fn compile_target(url: &str, at: &ConfigPath, errs: &mut Errors) -> Option<Target> {
    let uri: Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => {
            errs.push(at.clone(), "not a URL like `http://127.0.0.1:8000`");
            return None;
        }
    };
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        _ => {
            errs.push(at.clone(), "must start with http:// or https://");
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        errs.push(at.clone(), "has no host");
        return None;
    };
    if authority.as_str().contains('@') {
        errs.push(at.clone(), "must not carry credentials; use request_headers to send them");
        return None;
    }
    if uri.query().is_some() {
        errs.push(at.clone(), "must not have a query string");
        return None;
    }
    let host_header = HeaderValue::from_str(authority.as_str()).ok()?;
    Some(Target { https, base_path: uri.path().trim_end_matches('/').to_string(), authority, host_header })
}

fn compile_upstream(name: &str, cfg: &UpstreamConfig, at: &ConfigPath, errs: &mut Errors) -> Option<UpstreamSettings> {
    let before = errs.0.len();
    let mut targets = Vec::new();
    match (&cfg.url, &cfg.urls) {
        (Some(url), None) => targets.extend(compile_target(url, &at.push_key("url"), errs)),
        (None, Some(urls)) if !urls.is_empty() => {
            for (i, u) in urls.iter().enumerate() {
                targets.extend(compile_target(u, &at.push_key("urls").push_index(i), errs));
            }
        }
        (Some(_), Some(_)) => errs.push(at.push_key("urls"), "set either `url` or `urls`, not both"),
        _ => errs.push(at.push_key("url"), "an upstream needs a `url` (or a list of `urls`)"),
    }
    for (field, d) in [("connect_timeout", cfg.connect_timeout), ("response_timeout", cfg.response_timeout)] {
        if d.is_zero() {
            errs.push(at.push_key(field), "must be longer than zero");
        }
    }
    if let Some(hc) = &cfg.health_check {
        let hat = at.push_key("health_check");
        if !hc.path.starts_with('/') {
            errs.push(hat.push_key("path"), "must start with '/'");
        }
        if hc.interval.is_zero() || hc.timeout.is_zero() {
            errs.push(hat.push_key("interval"), "interval and timeout must be longer than zero");
        }
        if hc.unhealthy_after == 0 || hc.healthy_after == 0 {
            errs.push(hat.push_key("unhealthy_after"), "unhealthy_after and healthy_after must be at least 1");
        }
    }
    let b = &cfg.breaker;
    if b.enabled {
        let bat = at.push_key("breaker");
        if !(b.error_ratio > 0.0 && b.error_ratio <= 1.0) {
            errs.push(bat.push_key("error_ratio"), "must be a fraction above 0 and at most 1");
        }
        if b.consecutive_failures == 0 {
            errs.push(bat.push_key("consecutive_failures"), "must be at least 1");
        }
        if b.open_for.is_zero() || b.window.is_zero() {
            errs.push(bat.push_key("open_for"), "open_for and window must be longer than zero");
        }
    }
    if cfg.preserve_host && cfg.http2 {
        // Over HTTP/2 the target's address goes in `:authority`, and a `Host`
        // that differs makes the request malformed (RFC 9113 §8.3.1): servers
        // refuse it, or read one or the other.
        errs.push(
            at.push_key("preserve_host"),
            "cannot be used with http2 = true (HTTP/2 sends the host as :authority)",
        );
    }
    if cfg.retries.attempts == 0 || cfg.retries.attempts > super::model::MAX_ATTEMPTS {
        let msg = format!("must be between 1 (no retry) and {}", super::model::MAX_ATTEMPTS);
        errs.push(at.push_key("retries").push_key("attempts"), msg);
    }
    if errs.0.len() > before {
        return None;
    }
    Some(UpstreamSettings {
        name: name.to_string(),
        targets,
        balance: cfg.balance,
        connect_timeout: cfg.connect_timeout,
        response_timeout: cfg.response_timeout,
        pool_idle_timeout: cfg.pool_idle_timeout,
        pool_max_idle: cfg.pool_max_idle,
        ca_file: cfg.ca_file.clone(),
        http2: cfg.http2,
        preserve_host: cfg.preserve_host,
        health_check: cfg.health_check.clone(),
        breaker: cfg.breaker.clone(),
        retries: cfg.retries.clone(),
    })
}

fn compile_route_policy(
    name: String,
    route: &RouteConfig,
    defaults: &RouteConfig,
    at: &ConfigPath,
    upstream_index: &BTreeMap<String, usize>,
    ctx: &LimitContext<'_>,
    errs: &mut Errors,
) -> Option<RoutePolicy> {
    let before = errs.0.len();
    // Each field: the route's own value when set, else the default's, and the
    // error path names whichever the value came from.
    let pick = |field: &str, route_set: bool| {
        if route_set {
            at.push_key(field)
        } else {
            p("defaults").push_key(field)
        }
    };

    let upstream_name = route.upstream.as_ref().or(defaults.upstream.as_ref()).map_or("default", |s| s.as_str());
    let upstream = upstream_index.get(upstream_name).copied();
    if upstream.is_none() {
        let msg = if upstream_index.is_empty() {
            "no upstreams are defined; add [upstreams.default] with a url".to_string()
        } else {
            let known: Vec<&str> = upstream_index.keys().map(|s| s.as_str()).collect();
            match super::did_you_mean(upstream_name, &known) {
                Some(s) => format!("no upstream named `{upstream_name}`; did you mean `{s}`?"),
                None => format!("no upstream named `{upstream_name}` (defined: {})", known.join(", ")),
            }
        };
        errs.push(pick("upstream", route.upstream.is_some()), msg);
    }

    let strip_prefix = route.strip_prefix.clone().or_else(|| defaults.strip_prefix.clone());
    if let Some(sp) = &strip_prefix {
        if !sp.starts_with('/') || sp.ends_with('/') && sp.len() > 1 {
            errs.push(pick("strip_prefix", route.strip_prefix.is_some()), "must start with '/' and not end with '/'");
        }
    }

    let body_limit = route.body_limit.or(defaults.body_limit).map_or(DEFAULT_BODY_LIMIT, |b| b.as_u64());
    if body_limit == 0 {
        errs.push(pick("body_limit", route.body_limit.is_some()), "must be larger than zero");
    }

    let ct_any = route.content_types.as_ref().or(defaults.content_types.as_ref()).cloned().unwrap_or_default();
    let ct_by: Vec<(String, Vec<String>)> = route
        .content_types_by_method
        .as_ref()
        .or(defaults.content_types_by_method.as_ref())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let ct_set = route.content_types.is_some() || route.content_types_by_method.is_some();
    let content_types = errs.check(pick("content_types", ct_set), ContentTypePolicy::new(&ct_any, &ct_by));

    let cors = match route.cors.as_ref().or(defaults.cors.as_ref()) {
        Some(c) if !c.allow_origins.is_empty() => {
            compile_cors(c, &pick("cors", route.cors.is_some()), errs).map(Arc::new)
        }
        _ => None,
    };

    let security_headers = compile_security_headers(
        &[defaults.security_headers.as_ref(), route.security_headers.as_ref()],
        &pick("security_headers", route.security_headers.is_some()),
        errs,
    );
    let request_headers = compile_rewrite(
        &[defaults.request_headers.as_ref(), route.request_headers.as_ref()],
        &pick("request_headers", route.request_headers.is_some()),
        errs,
    );
    let response_headers = compile_rewrite(
        &[defaults.response_headers.as_ref(), route.response_headers.as_ref()],
        &pick("response_headers", route.response_headers.is_some()),
        errs,
    );
    let geo = match route.geo.as_ref().or(defaults.geo.as_ref()) {
        Some(GeoRuleConfig { allow, deny }) if !(allow.is_empty() && deny.is_empty()) => {
            errs.check(pick("geo", route.geo.is_some()), GeoRule::new(allow, deny)).map(Arc::new)
        }
        _ => None,
    };
    let mode = route.inspect.or(defaults.inspect).unwrap_or_default();
    let redact_pii = route.redact_pii.or(defaults.redact_pii).unwrap_or(false);
    let inspect = if mode == InspectMode::Off && !redact_pii {
        None
    } else {
        let set = route.inspect_exclude.is_some();
        let mut exclude = Vec::new();
        for (i, e) in
            route.inspect_exclude.as_ref().or(defaults.inspect_exclude.as_ref()).into_iter().flatten().enumerate()
        {
            if let Some(x) = errs.check(pick("inspect_exclude", set).push_index(i), Exclusion::parse(e)) {
                exclude.push(x);
            }
        }
        let set = route.inspect_headers.is_some();
        let mut headers = Vec::new();
        let default_headers = vec!["user-agent".to_string(), "referer".to_string()];
        let chosen = route.inspect_headers.as_ref().or(defaults.inspect_headers.as_ref()).unwrap_or(&default_headers);
        for (i, h) in chosen.iter().enumerate() {
            if let Some(n) =
                errs.check(pick("inspect_headers", set).push_index(i), parse_header_name(&h.to_ascii_lowercase()))
            {
                headers.push(n);
            }
        }
        let rules = route.inspect_rules.or(defaults.inspect_rules).unwrap_or_default();
        Some(Arc::new(InspectPolicy { mode, rules, exclude, headers, redact_pii }))
    };
    let auth = super::auth::RouteAuth {
        mode: route.auth.or(defaults.auth).unwrap_or_default(),
        cookie: route.auth_cookie.clone().or_else(|| defaults.auth_cookie.clone()).filter(|c| !c.is_empty()),
        query: route.auth_query.clone().or_else(|| defaults.auth_query.clone()).filter(|q| !q.is_empty()),
        session: route.auth_session.or(defaults.auth_session).unwrap_or(true),
    };
    let weight = route.weight.or(defaults.weight).unwrap_or(1);
    let limits_set = route.limits.is_some();
    let mut limits = Vec::new();
    for (j, r) in route.limits.as_ref().or(defaults.limits.as_ref()).into_iter().flatten().enumerate() {
        let here = pick("limits", limits_set).push_index(j);
        let compiled = match r {
            LimitRef::Named(n) => match ctx.named.get(n) {
                Some(l) => l.clone(),
                None => {
                    let known: Vec<&str> = ctx.named.keys().map(|s| s.as_str()).collect();
                    let hint =
                        super::did_you_mean(n, &known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                    errs.push(here, format!("no limit named `{n}` in [limits.named]{hint}"));
                    continue;
                }
            },
            LimitRef::Inline(cfg) => {
                // Inline limits of `[defaults]` are shared by the routes that
                // inherit them; a route's own inline limit is its own allowance.
                // Route names hold no `#`, so `#defaults` is no route's name.
                let owner = if limits_set { name.as_str() } else { "#defaults" };
                match compile_limit(&format!("{owner}#{j}"), cfg, ctx.defaults.on_redis_down, &ctx.defaults.cost_header)
                {
                    Ok(l) => Arc::new(l),
                    Err(e) => {
                        errs.push(here, e);
                        continue;
                    }
                }
            }
        };
        if !compiled.is_budget() && weight > compiled.params.burst {
            errs.push(
                pick("weight", route.weight.is_some()),
                format!("weight {weight} exceeds the burst of limit `{}`, so no request could pass", compiled.name),
            );
        }
        limits.push(compiled);
    }
    if weight == 0 {
        errs.push(pick("weight", route.weight.is_some()), "must be at least 1");
    }
    // A limit keyed by who the caller is never applies where nobody is known.
    // (Inherited `[defaults]` limits are left alone: a public route among
    // signed-in ones inherits them and is simply not limited by them.)
    if limits_set && auth.mode == super::auth::AuthMode::None {
        for (j, l) in limits.iter().enumerate() {
            if l.needs_principal() {
                errs.push(
                    pick("limits", true).push_index(j),
                    format!(
                        "limit `{}` keys by user, api_key or tier, but this route has auth = \"none\": nobody is \
                         known here, so it would never apply; set auth = \"optional\" or \"required\"",
                        l.name
                    ),
                );
            }
        }
    }
    let authorize = match route.authorize.as_ref().or(defaults.authorize.as_ref()) {
        None => None,
        Some(cfg) => {
            let here = pick("authorize", route.authorize.is_some());
            if auth.mode == super::auth::AuthMode::None {
                errs.push(here.clone(), "needs auth = \"optional\" or \"required\" on the route: nobody is known here");
            }
            let mut found = Vec::new();
            let req = super::authorize::compile_requirement(cfg, ctx.roles, &here, &mut found);
            for (path, msg) in found {
                errs.push(path, msg);
            }
            req.map(Arc::new)
        }
    };
    if errs.0.len() > before {
        return None;
    }
    Some(RoutePolicy {
        name: Arc::from(name),
        index: 0, // set when the route takes its place in the table
        upstream: upstream?,
        strip_prefix,
        strip_prefix_any_case: false, // set with the table's route matching
        timeout: route.timeout.or(defaults.timeout),
        body_limit,
        content_types: content_types?,
        cors,
        security_headers: Arc::new(security_headers),
        request_headers,
        response_headers,
        limits_after_auth: limits.iter().any(|l| l.needs_principal()),
        limits,
        weight,
        geo,
        inspect,
        auth,
        authorize,
    })
}

fn compile_cors(c: &CorsConfig, at: &ConfigPath, errs: &mut Errors) -> Option<CorsPolicy> {
    let before = errs.0.len();
    let mut origins = Vec::new();
    for (i, o) in c.allow_origins.iter().enumerate() {
        if let Some(pat) = errs.check(
            at.push_key("allow_origins").push_index(i),
            crate::origin::OriginPattern::parse(o).map_err(|e| e.to_string()),
        ) {
            if pat.is_any() && c.allow_credentials {
                errs.push(
                    at.push_key("allow_origins").push_index(i),
                    "`*` together with allow_credentials = true would let any site make credentialed requests; list the origins instead",
                );
            }
            if pat.covers_a_public_suffix() && c.allow_credentials {
                errs.push(
                    at.push_key("allow_origins").push_index(i),
                    format!(
                        "`{o}` matches every site under a public suffix (a top-level domain or a domain where \
                         anyone can register a site); with allow_credentials = true name your own domain \
                         (`https://*.example.com`)"
                    ),
                );
            }
            origins.push(pat);
        }
    }
    let mut methods = Vec::new();
    for (i, m) in c.allow_methods.iter().enumerate() {
        if let Some(m) = errs.check(at.push_key("allow_methods").push_index(i), parse_method(m)) {
            methods.push(m);
        }
    }
    let mut any_header = false;
    let mut headers = Vec::new();
    for (i, h) in c.allow_headers.iter().enumerate() {
        if h == "*" {
            if c.allow_credentials {
                errs.push(
                    at.push_key("allow_headers").push_index(i),
                    "`*` is not allowed with allow_credentials = true; list the headers",
                );
            }
            any_header = true;
        } else if let Some(n) = errs.check(at.push_key("allow_headers").push_index(i), parse_header_name(h)) {
            headers.push(n);
        }
    }
    let mut expose = Vec::new();
    for (i, h) in c.expose_headers.iter().enumerate() {
        if let Some(n) = errs.check(at.push_key("expose_headers").push_index(i), parse_header_name(h)) {
            expose.push(n);
        }
    }
    if errs.0.len() > before {
        return None;
    }
    Some(CorsPolicy::new(origins, methods, headers, any_header, expose, c.max_age, c.allow_credentials))
}

fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("`{s}` is not a valid header name"))
}

/// The message never quotes the value: header rewrites carry credentials.
fn parse_header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| "is not a valid header value (control characters or non-ASCII)".to_string())
}

fn compile_security_headers(
    layers: &[Option<&SecurityHeadersConfig>],
    at: &ConfigPath,
    errs: &mut Errors,
) -> SecurityHeaders {
    // Start from the built-ins, then apply `[defaults]`, then the route.
    let mut values: BTreeMap<&str, String> =
        BUILTIN_SECURITY_HEADERS.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut cache = BUILTIN_CACHE_CONTROL.to_string();
    let mut hsts = BUILTIN_HSTS.to_string();
    let mut remove: Vec<String> = BUILTIN_REMOVED_HEADERS.iter().map(|s| s.to_string()).collect();
    for cfg in layers.iter().flatten() {
        let fields = [
            ("x-content-type-options", &cfg.content_type_options),
            ("x-frame-options", &cfg.frame_options),
            ("referrer-policy", &cfg.referrer_policy),
            ("permissions-policy", &cfg.permissions_policy),
            ("cross-origin-opener-policy", &cfg.cross_origin_opener_policy),
            ("content-security-policy", &cfg.content_security_policy),
        ];
        for (name, v) in fields {
            if let Some(v) = v {
                values.insert(name, v.clone());
            }
        }
        if let Some(v) = &cfg.cache_control {
            cache = v.clone();
        }
        if let Some(v) = &cfg.strict_transport_security {
            hsts = v.clone();
        }
        if let Some(r) = &cfg.remove {
            remove = r.clone();
        }
    }
    let mut out = SecurityHeaders::default();
    for (name, v) in values {
        if v.is_empty() {
            continue;
        }
        if let Some(value) = errs.check(at.clone(), parse_header_value(&v)) {
            out.always.push((HeaderName::from_static(name), value));
        }
    }
    if !cache.is_empty() {
        out.cache_control = errs.check(at.push_key("cache_control"), parse_header_value(&cache));
    }
    if !hsts.is_empty() {
        out.hsts = errs.check(at.push_key("strict_transport_security"), parse_header_value(&hsts));
    }
    for (i, r) in remove.iter().enumerate() {
        if let Some(n) = errs.check(at.push_key("remove").push_index(i), parse_header_name(r)) {
            out.remove.push(n);
        }
    }
    out
}

fn compile_rewrite(layers: &[Option<&HeaderRewriteConfig>], at: &ConfigPath, errs: &mut Errors) -> HeaderRewrite {
    let mut set: BTreeMap<String, String> = BTreeMap::new();
    let mut remove: Vec<String> = Vec::new();
    for cfg in layers.iter().flatten() {
        for (k, v) in &cfg.set {
            set.insert(k.to_ascii_lowercase(), v.clone());
        }
        remove.extend(cfg.remove.iter().map(|s| s.to_ascii_lowercase()));
    }
    let mut out = HeaderRewrite::default();
    for (k, v) in &set {
        let here = at.push_key("set").push_key(k);
        if HOP_BY_HOP.contains(&k.as_str()) || k == "host" {
            errs.push(here, "hop-by-hop and Host headers are managed by the proxy");
            continue;
        }
        if let (Some(n), Some(v)) =
            (errs.check(here.clone(), parse_header_name(k)), errs.check(here, parse_header_value(v)))
        {
            out.set.push((n, v));
        }
    }
    remove.sort();
    remove.dedup();
    for (i, r) in remove.iter().enumerate() {
        if let Some(n) = errs.check(at.push_key("remove").push_index(i), parse_header_name(r)) {
            out.remove.push(n);
        }
    }
    out
}
