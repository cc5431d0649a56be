//! Rate limits, budgets, bans and load shedding.
//!
//! Decisions use GCRA ([`rampart_core::gcra`]): one timestamp (the theoretical
//! arrival time, TAT) per key, exact, with bursts. The same algorithm runs in
//! process ([`memory::MemoryStore`], bounded memory) and in Redis
//! ([`redis::RedisStore`], one Lua script per request for all of its limits), so
//! a limit means the same thing on one instance or on fifty.
//!
//! State that must outlive a config reload (counters, bans, strikes, the Redis
//! connection) lives in [`LimitState`], created once per process.
//!
//! When Redis is unreachable each limit follows its `on_redis_down`: `local`
//! (default) decides with the in-process store, `refuse` answers 503. The Redis
//! store's breaker makes a dead Redis cost one request at most the Redis timeout.

pub mod access;
pub mod bans;
pub mod headers;
pub mod layer;
pub mod memory;
pub mod redis;
pub mod shed;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::observe::audit::{AuditEvent, AuditSink};

use rampart_core::client_ip::ClientGrouping;
use rampart_core::config::limits::{CompiledLimit, KeyPart};
use rampart_core::config::model::RedisFallback;
use rampart_core::config::Policy;
pub use rampart_core::gcra::{Decision, GcraParams, Op};
use rampart_core::principal::Principal;

use crate::observe::Metrics;

/// One limit to apply to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitCheck {
    /// The full storage key. Its `{…}` part is the Redis Cluster hash tag: the
    /// entity the limit counts (`{ip:203.0.113.5}`, `{user:42}`), so that keys of
    /// one entity live on one cluster node.
    pub key: String,
    pub params: GcraParams,
    /// Units this request costs (route weight, or a budget's cost in micro-units).
    pub weight: u64,
    pub op: Op,
}

/// The clock of in-process limits: nanoseconds since the Unix epoch as read
/// when first asked, advanced by the monotonic clock since. Only differences
/// matter to a limit, and a wall clock stepped back (NTP, a resumed VM) would
/// put every recent key that far in debt, refusing its client for as long.
/// Redis uses its own `TIME`, so instances sharing Redis never disagree on time.
pub fn now_ns() -> u64 {
    static ANCHOR: std::sync::OnceLock<(u64, Instant)> = std::sync::OnceLock::new();
    let (wall, at) = ANCHOR.get_or_init(|| (wall_ns(), Instant::now()));
    wall.saturating_add(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// Nanoseconds since the Unix epoch by the wall clock.
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Who a request is, for keying limits.
pub struct Subject<'a> {
    /// The client address; limits keyed `by = "ip"` count it as `clients` says.
    pub ip: IpAddr,
    pub clients: ClientGrouping,
    pub route: &'a str,
    pub principal: Option<&'a Principal>,
}

/// Appends `s` with the characters that delimit keys and hash tags escaped, so
/// no client-chosen value can forge another entity's key.
fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            c => out.push(c),
        }
    }
}

/// The storage key of `limit` for `who`, or `None` when the request lacks a part
/// of the key (a user-keyed limit on an anonymous request).
pub fn limit_key(limit: &CompiledLimit, who: &Subject<'_>) -> Option<String> {
    let mut key = String::with_capacity(64);
    key.push_str("rl:{");
    for (i, part) in limit.key_parts.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        match part {
            KeyPart::Ip => {
                // An IPv6 client is its network: `ip:2001:db8:1:2::/64`.
                let _ = write!(key, "ip:{}", who.clients.key(who.ip));
                if let Some(len) = who.clients.network_len(who.ip) {
                    let _ = write!(key, "/{len}");
                }
            }
            KeyPart::User => {
                let principal = who.principal?;
                key.push_str("user:");
                // An external issuer's users are its own: `user:<length of
                // the issuer>:<issuer><sub>` (the length keeps the two apart
                // whatever either holds).
                if let Some(issuer) = &principal.issuer {
                    let _ = write!(key, "{}:", issuer.len());
                    push_escaped(&mut key, issuer);
                }
                push_escaped(&mut key, &principal.subject);
            }
            KeyPart::ApiKey => {
                key.push_str("key:");
                push_escaped(&mut key, who.principal?.api_key_id.as_deref()?);
            }
            KeyPart::Route => {
                key.push_str("route:");
                push_escaped(&mut key, who.route);
            }
            KeyPart::Tier => {
                key.push_str("tier:");
                push_escaped(&mut key, who.principal?.tier.as_deref().unwrap_or("none"));
            }
            KeyPart::Global => key.push_str("global"),
        }
    }
    key.push_str("}:");
    push_escaped(&mut key, &limit.name);
    Some(key)
}

/// Why a limit could not be decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecided {
    /// Redis is down and the limit is configured to refuse then.
    RedisDown,
}

/// Decides limits in Redis when configured (falling back per limit), else in process.
pub struct Limiter {
    pub memory: memory::MemoryStore,
    pub redis: Option<redis::RedisStore>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    pub fn new(max_keys: usize, redis: Option<redis::RedisStore>, metrics: Arc<Metrics>) -> Self {
        Self { memory: memory::MemoryStore::new(max_keys), redis, metrics }
    }

    /// Applies `checks` (one per limit, `fallbacks` in the same order).
    pub async fn apply(&self, checks: &[LimitCheck], fallbacks: &[RedisFallback]) -> Result<Vec<Decision>, Undecided> {
        self.decide(checks, fallbacks).await.map(|(decisions, _)| decisions)
    }

    /// [`Limiter::apply`], telling which store decided: what the request
    /// reserved is settled there (see [`Limiter::settle`]).
    pub async fn decide(
        &self,
        checks: &[LimitCheck],
        fallbacks: &[RedisFallback],
    ) -> Result<(Vec<Decision>, Store), Undecided> {
        let Some(redis) = &self.redis else {
            return Ok((self.memory.apply(now_ns(), checks), Store::Memory));
        };
        match redis.apply(checks).await {
            Ok(d) => Ok((d, Store::Redis)),
            Err(e) => {
                self.metrics.limit_fallback(fallback_reason(&e));
                if fallbacks.contains(&RedisFallback::Refuse) {
                    return Err(Undecided::RedisDown);
                }
                Ok((self.memory.apply(now_ns(), checks), Store::Memory))
            }
        }
    }

    /// Settles (debits and refunds) a request in the store that decided it.
    /// A request decided in process while Redis was unreachable is settled
    /// in process even if Redis is back: a refund sent to Redis would hand
    /// out what Redis never lent, and the reservation would stay held here.
    /// A request decided in Redis that cannot reach Redis any more loses its
    /// refunds (the reservation counts as spent, as a request of unknown
    /// outcome does) and has its debits taken in process, unless a limit
    /// refuses local fallback. `Err` when anything was lost.
    pub async fn settle(
        &self,
        store: Store,
        checks: &[LimitCheck],
        fallbacks: &[RedisFallback],
    ) -> Result<(), Undecided> {
        let redis = match (store, &self.redis) {
            (Store::Redis, Some(redis)) => redis,
            _ => {
                self.memory.apply(now_ns(), checks);
                return Ok(());
            }
        };
        let Err(e) = redis.apply(checks).await else { return Ok(()) };
        self.metrics.limit_fallback(fallback_reason(&e));
        // Each debit of a limit that falls back locally is taken here; the
        // refunds, and the debits of limits that refuse, are lost.
        let local: Vec<LimitCheck> = checks
            .iter()
            .zip(fallbacks)
            .filter(|(c, f)| c.op == Op::Debit && **f != RedisFallback::Refuse)
            .map(|(c, _)| c.clone())
            .collect();
        if !local.is_empty() {
            self.memory.apply(now_ns(), &local);
        }
        if local.len() < checks.len() {
            return Err(Undecided::RedisDown);
        }
        Ok(())
    }
}

/// Where limits were decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// In this process: no Redis configured, or Redis unreachable and the
    /// limits allowing local fallback.
    Memory,
    Redis,
}

fn fallback_reason(e: &redis::RedisUnavailable) -> &'static str {
    match e {
        redis::RedisUnavailable::BreakerOpen => "breaker_open",
        redis::RedisUnavailable::Timeout => "timeout",
        redis::RedisUnavailable::Error(_) => "error",
    }
}

/// Everything about limits that outlives a config reload.
pub struct LimitState {
    pub limiter: Limiter,
    /// How addresses are counted as clients (`[server] ipv6_prefix`), for
    /// every per-client count: read at start, like the counts it keys.
    pub clients: ClientGrouping,
    pub bans: Arc<bans::BanList>,
    pub shed: Arc<shed::LoadShedder>,
    pub abuse: Arc<crate::observe::abuse::AbuseMonitor>,
    /// Set once the audit log runs (see [`LimitState::set_audit`]).
    audit: OnceLock<Arc<AuditSink>>,
    /// When each refusal key was last audited: a flood of refusals for one
    /// client becomes one audit event per [`AUDIT_REPEAT`], not one per request.
    audit_seen: Mutex<RepeatFilter>,
    /// The identity service, when `[identity]` is on (it outlives reloads too).
    identity: OnceLock<Arc<crate::identity::IdentityService>>,
    /// The admin API's view of the running gateway (set once it runs).
    console: OnceLock<Arc<crate::console::Console>>,
}

/// Quiet time before the same refusal (same limit, same key; same rule, same
/// address) is audited again. Metrics still count every one.
pub const AUDIT_REPEAT: Duration = Duration::from_secs(60);
const AUDIT_SEEN_MAX: usize = 10_000;

/// Which keys were let through in the last `window`, in at most `max`
/// entries. When full, the keys whose window has passed go first; only if
/// every entry is recent (a flood of distinct keys) is the table cleared, so
/// each insert stays O(1) amortised and the memory bounded.
#[derive(Debug)]
struct RepeatFilter {
    seen: HashMap<String, Instant>,
    window: Duration,
    max: usize,
}

impl RepeatFilter {
    fn new(window: Duration, max: usize) -> Self {
        Self { seen: HashMap::new(), window, max }
    }

    /// Whether `key` may pass at `now` (not let through within the window);
    /// a key that passes is remembered.
    fn admit(&mut self, key: &str, now: Instant) -> bool {
        let window = self.window;
        if self.seen.get(key).is_some_and(|t| now.saturating_duration_since(*t) < window) {
            return false;
        }
        if self.seen.len() >= self.max && !self.seen.contains_key(key) {
            self.seen.retain(|_, t| now.saturating_duration_since(*t) < window);
            if self.seen.len() >= self.max {
                self.seen.clear();
            }
        }
        self.seen.insert(key.to_owned(), now);
        true
    }
}

/// The Redis store `policy`'s `[redis]` section describes, if it has one. It
/// connects in the background: see [`redis::RedisStore::is_available`].
pub fn redis_store(policy: &Policy) -> anyhow::Result<Option<redis::RedisStore>> {
    let Some(cfg) = &policy.redis else { return Ok(None) };
    let host_ports =
        |list: &[String]| list.iter().filter_map(|s| rampart_core::config::compile::host_port(s)).collect();
    let store = redis::RedisStore::new(redis::RedisSettings {
        url: cfg.url.expose().to_string(),
        timeout: cfg.timeout,
        probe_interval: cfg.probe_interval,
        key_prefix: cfg.key_prefix.clone(),
        workers: crate::workers::count(policy.server.workers),
        tls: redis::RedisTls {
            ca_file: cfg.ca_file.clone(),
            client_cert: cfg.client_cert.clone().zip(cfg.client_key.clone()),
        },
        sentinel: (!cfg.sentinels.is_empty()).then(|| redis::RedisSentinel {
            sentinels: host_ports(&cfg.sentinels),
            master: cfg.sentinel_master.clone(),
            password: Some(cfg.sentinel_password.expose().to_owned()).filter(|p| !p.is_empty()),
            tls: cfg.sentinel_tls,
        }),
        cluster: (!cfg.cluster_nodes.is_empty()).then(|| host_ports(&cfg.cluster_nodes)),
    })
    .map_err(|e| anyhow::anyhow!("redis: {e}"))?;
    Ok(Some(store))
}

impl LimitState {
    /// Builds the state for the first policy. Redis settings are read once: a
    /// changed `[redis]` section takes effect at the next restart.
    pub fn new(
        policy: &Policy,
        metrics: &Arc<Metrics>,
        health: &Arc<crate::observe::health::Health>,
    ) -> anyhow::Result<Arc<Self>> {
        let redis = match redis_store(policy)? {
            Some(store) => {
                let (m, h) = (metrics.clone(), health.clone());
                store.on_state_change(move |up| {
                    m.redis_up(up);
                    h.set_degraded("redis", !up);
                    if up {
                        tracing::info!("redis reachable: distributed limits and bans active");
                    } else {
                        tracing::warn!("redis unreachable: limits fall back per `on_redis_down`");
                    }
                });
                health.set_degraded("redis", !store.is_available());
                metrics.redis_up(store.is_available());
                Some(store)
            }
            None => None,
        };
        let clients = policy.server.clients;
        let bans = bans::BanList::new(&policy.bans, clients, redis.clone(), metrics.clone());
        let abuse = crate::observe::abuse::AbuseMonitor::new(&policy.abuse, metrics.clone(), bans.clone());
        Ok(Arc::new(Self {
            limiter: Limiter::new(policy.limits.max_keys, redis, metrics.clone()),
            clients,
            bans,
            shed: Arc::new(shed::LoadShedder::new(clients)),
            abuse,
            audit: OnceLock::new(),
            audit_seen: Mutex::new(RepeatFilter::new(AUDIT_REPEAT, AUDIT_SEEN_MAX)),
            identity: OnceLock::new(),
            console: OnceLock::new(),
        }))
    }

    /// Connects the audit log to the layers that share this state (limits,
    /// bans, abuse detection, inspection).
    pub fn set_audit(&self, sink: Arc<AuditSink>) {
        self.bans.set_audit(sink.clone());
        self.abuse.set_audit(sink.clone());
        let _ = self.audit.set(sink);
    }

    /// Counts a strike of `kind` against `ip`: towards an automatic ban, and in
    /// the abuse monitor's spike class for that kind.
    pub fn strike(&self, ip: IpAddr, kind: bans::Strike) {
        self.abuse.record_class(kind.into(), ip);
        self.bans.strike(ip, kind);
    }

    /// Records `event` in the audit log (when it runs).
    pub fn audit(&self, event: AuditEvent) {
        if let Some(sink) = self.audit.get() {
            sink.record(event);
        }
    }

    pub fn set_identity(&self, identity: Arc<crate::identity::IdentityService>) {
        let _ = self.identity.set(identity);
    }

    /// The identity service, when `[identity]` is on.
    pub fn identity(&self) -> Option<&Arc<crate::identity::IdentityService>> {
        self.identity.get()
    }

    pub fn set_console(&self, console: Arc<crate::console::Console>) {
        let _ = self.console.set(console);
    }

    /// The admin API's view of the gateway (`None` before it runs).
    pub fn console(&self) -> Option<&Arc<crate::console::Console>> {
        self.console.get()
    }

    /// Records the event built by `event` unless an event with the same `key`
    /// was recorded less than [`AUDIT_REPEAT`] ago.
    pub fn audit_once(&self, key: &str, event: impl FnOnce() -> AuditEvent) {
        let Some(sink) = self.audit.get() else { return };
        let admitted = self.audit_seen.lock().unwrap_or_else(|e| e.into_inner()).admit(key, Instant::now());
        if admitted {
            sink.record(event());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rampart_core::config::limits::LimitKind;
    use rampart_core::principal::AuthMethod;

    /// A full repeat filter forgets the keys whose window has passed, not
    /// the recent ones; only a table of recent keys is cleared.
    #[test]
    fn a_full_repeat_filter_forgets_the_stale_keys_first() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut f = RepeatFilter::new(Duration::from_secs(60), 4);
        assert!(f.admit("a", at(0)) && f.admit("b", at(0)));
        assert!(!f.admit("a", at(30)), "within the window");
        assert!(f.admit("c", at(61)) && f.admit("d", at(61)));
        assert!(f.admit("a", at(61)), "a's window has passed");
        // Full (a, b, c, d): e's arrival drops b (stale), not c or d.
        assert!(f.admit("e", at(62)));
        assert_eq!(f.seen.len(), 4);
        assert!(!f.admit("c", at(62)) && !f.admit("d", at(62)), "recent keys were forgotten");
        // Every entry recent: the table is cleared to stay bounded.
        assert!(f.admit("f", at(63)));
        assert!(f.seen.len() <= 4);
        assert!(f.admit("c", at(63)), "cleared");
    }

    #[test]
    fn the_limit_clock_starts_at_wall_time_and_never_goes_back() {
        let first = now_ns();
        assert!(first.abs_diff(wall_ns()) < 5_000_000_000, "anchored at the wall clock");
        let mut last = first;
        for _ in 0..1000 {
            let t = now_ns();
            assert!(t >= last);
            last = t;
        }
    }

    fn limit(parts: Vec<KeyPart>) -> CompiledLimit {
        CompiledLimit {
            name: Arc::from("api"),
            key_parts: parts,
            kind: LimitKind::Rate,
            params: GcraParams::new(1, std::time::Duration::from_secs(1), 1).unwrap(),
            tiers: vec![],
            on_redis_down: RedisFallback::Local,
            quota: 1,
            window_secs: 1,
        }
    }

    #[test]
    fn keys_carry_entity_hash_tags_and_escape_client_values() {
        let p = Principal {
            subject: "u{1}|x".into(),
            api_key_id: None,
            issuer: None,
            tier: Some("pro".into()),
            roles: vec![],
            scopes: vec![],
            method: AuthMethod::Jwt,
        };
        let clients = ClientGrouping::default();
        let who = Subject { ip: "203.0.113.5".parse().unwrap(), clients, route: "r", principal: Some(&p) };
        assert_eq!(limit_key(&limit(vec![KeyPart::Ip]), &who).unwrap(), "rl:{ip:203.0.113.5}:api");
        assert_eq!(
            limit_key(&limit(vec![KeyPart::User, KeyPart::Route]), &who).unwrap(),
            "rl:{user:u%7B1%7D%7Cx|route:r}:api"
        );
        assert_eq!(limit_key(&limit(vec![KeyPart::Tier]), &who).unwrap(), "rl:{tier:pro}:api");
        assert!(limit_key(&limit(vec![KeyPart::ApiKey]), &who).is_none());
        // Another issuer's user of the same `sub` counts apart.
        let external = Principal { issuer: Some("https://idp.example".into()), ..p.clone() };
        let theirs = Subject { principal: Some(&external), ..who };
        assert_eq!(
            limit_key(&limit(vec![KeyPart::User]), &theirs).unwrap(),
            "rl:{user:19:https://idp.exampleu%7B1%7D%7Cx}:api"
        );
        let anon = Subject { ip: "::1".parse().unwrap(), clients, route: "r", principal: None };
        assert!(limit_key(&limit(vec![KeyPart::User]), &anon).is_none());
        assert_eq!(limit_key(&limit(vec![KeyPart::Global]), &anon).unwrap(), "rl:{global}:api");
    }

    #[test]
    fn ip_keys_count_an_ipv6_client_as_its_network() {
        let key = |ip: &str, prefix: u8| {
            let who =
                Subject { ip: ip.parse().unwrap(), clients: ClientGrouping::new(prefix), route: "r", principal: None };
            limit_key(&limit(vec![KeyPart::Ip, KeyPart::Route]), &who).unwrap()
        };
        assert_eq!(key("2001:db8:1:2::1", 64), "rl:{ip:2001:db8:1:2::/64|route:r}:api");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff", 64), key("2001:db8:1:2::1", 64), "one /64, one key");
        assert_ne!(key("2001:db8:1:3::1", 64), key("2001:db8:1:2::1", 64), "another /64");
        assert_eq!(key("2001:db8:1:3::1", 48), key("2001:db8:1:2::1", 48), "one /48");
        assert_eq!(key("2001:db8:1:2::1", 128), "rl:{ip:2001:db8:1:2::1|route:r}:api", "128: each address");
        assert_eq!(key("203.0.113.5", 64), "rl:{ip:203.0.113.5|route:r}:api", "IPv4 unchanged");
        assert_eq!(key("::ffff:203.0.113.5", 64), "rl:{ip:203.0.113.5|route:r}:api", "mapped IPv4 is IPv4");
    }
}
