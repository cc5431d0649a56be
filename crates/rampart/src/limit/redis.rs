//! Shared limits in Redis: the GCRA of [`rampart_core::gcra`] as one Lua script,
//! behind a circuit breaker.
//!
//! [`RedisStore::apply`] sends all of a request's [`LimitCheck`]s in one
//! `EVALSHA` (the `redis` crate's [`Script`] loads the script and retries when
//! Redis answers `NOSCRIPT`, e.g. after a restart or `SCRIPT FLUSH`). The script
//! is all-or-nothing like the in-process store: when any `Check` or `Peek` is
//! refused (a rate limit hit, a budget exhausted), nothing is written. Time comes from Redis' `TIME`, never from the caller, so
//! any number of gateway instances sharing one Redis agree on every limit.
//!
//! # Arithmetic
//!
//! Lua numbers are doubles, which hold integers exactly only up to 2^53. The
//! script therefore never handles absolute nanoseconds: the stored TAT is the
//! text `<unix seconds><9 digits of nanoseconds>` (readable as epoch
//! nanoseconds by anything else), and is only ever used as a difference from
//! Redis' current time. Increments and the tolerance are computed here in `u64`
//! nanoseconds by [`GcraParams`](super::GcraParams) and passed as integers, so every value in the
//! script is an exact integer while it stays below 2^53 ns (about 104 days) and
//! decisions are the same as [`rampart_core::gcra`]'s for the same instant;
//! beyond that they are rounded to 16 significant digits. Each key gets a TTL of
//! its TAT minus now (rounded up to a millisecond), after which it would mean
//! "no debt" anyway, so idle keys cost no memory.
//!
//! # Availability
//!
//! A dead Redis costs a request at most `timeout` once: the first timeout or
//! connection error opens the breaker, and while it is open
//! [`RedisStore::apply`] returns [`RedisUnavailable::BreakerOpen`] without
//! touching the network, so callers fall back to in-process limits. A background
//! task sends `PING` every `probe_interval` (also while closed, so an outage is
//! usually noticed before a request pays for it); when a probe fails it drops the
//! [`ConnectionManager`] and builds a fresh one, so recovery never depends on the
//! manager's own reconnect logic. [`RedisStore::new`] never waits for Redis:
//! the store starts with its breaker open and the first probe runs at once.
//!
//! # Connections
//!
//! The probe's connection is shared by every thread. With
//! [`RedisSettings::workers`] set, each connection worker also makes one of its
//! own on its first decision, on its own thread (its driver task runs there),
//! and uses it from then on: a decision then never hands off to another
//! thread and back. Until it is made the shared one serves, and every opening
//! of the breaker drops them all, so after an outage they are made afresh.
//!
//! # TLS
//!
//! A `rediss://` URL connects with rustls (ring) and verifies the server's
//! certificate and name, against [`RedisTls::ca_file`] alone when set, else
//! against the web PKI roots built in; [`RedisTls::client_cert`] answers a
//! server that asks for a client certificate. There is no way to skip the
//! verification (the config refuses `#insecure`).
//!
//! # Sentinel
//!
//! With [`RedisSettings::sentinel`], connections go to whichever server the
//! sentinels name as the primary, asked again at every (re)connect. The
//! probe then checks `ROLE` rather than `PING`: after a failover the old
//! primary comes back as a replica that answers PING but refuses writes, and
//! a probe that finds anything but the primary asks the sentinels again. So a
//! failover costs what an outage costs: the first failing call opens the
//! breaker, limits fall back per `on_redis_down`, and the next probe that
//! finds the new primary closes it. [`RedisSentinel::tls`] reaches the
//! sentinels over TLS with the same [`RedisTls`] settings.
//!
//! # Cluster
//!
//! With [`RedisSettings::cluster`], connections are Redis Cluster connections
//! (the `redis` crate's, which learn the slot layout from the nodes given and
//! follow `MOVED` and failovers). One request's limits may name several
//! entities, and the script needs all its keys in one hash slot, so in
//! cluster mode the key prefix becomes a hash tag, `{rampart:}` for the
//! default `rampart:`, and **every key Rampart writes lives in that one slot**:
//! the cluster gives failover and a place to run, not sharding of Rampart's
//! load (one primary serves it; a decision is one short script). The probe
//! pings that slot's primary; bans are listed with `SCAN` on it; pub/sub goes
//! through any one node (a cluster relays `PUBLISH` to every node). Without
//! `cluster`, a node that reports `cluster_enabled:1` is never used (the probe
//! logs why and keeps the breaker open), and a `redis+cluster://` URL is
//! refused: name the nodes in `cluster`.
//!
//! ```
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use rampart::limit::redis::{RedisSettings, RedisStore, RedisUnavailable};
//! use rampart::limit::{GcraParams, LimitCheck, Op};
//!
//! // Nothing listens on port 1, yet the store is made: its breaker starts open
//! // and the background probe keeps trying.
//! let store = RedisStore::new(RedisSettings::new("redis://127.0.0.1:1/"))?;
//! store.on_state_change(|up| tracing::info!(up, "redis limits"));
//! assert!(!store.is_available());
//!
//! // Until a probe succeeds, calls fail at once and callers decide locally.
//! let check = LimitCheck {
//!     key: "rl:{ip:192.0.2.1}".into(),
//!     params: GcraParams::new(10, Duration::from_secs(1), 5)?,
//!     weight: 1,
//!     op: Op::Check,
//! };
//! assert!(matches!(store.apply(&[check]).await, Err(RedisUnavailable::BreakerOpen)));
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, RedisError, Script, ScriptInvocation};

use super::{Decision, LimitCheck, Op};

/// The GCRA, in Lua. See the module docs for the time representation.
///
/// `KEYS[i]` is the i-th limit's key. `ARGV` holds five values per key: the
/// operation (`c` check, `z` check of weight 0, `d` debit, `r` refund, `p`
/// peek), the request's increment, one unit's increment and the tolerance
/// (integer nanoseconds), and the burst. The reply holds four integers per key, as text
/// so that no value is truncated to a 64-bit signed integer: allowed (1/0),
/// remaining, reset after (ns), retry after (ns).
const GCRA_LUA: &str = r#"
local time = redis.call('TIME')
local now_s = tonumber(time[1])
local now_ns = tonumber(time[2]) * 1000
local E9 = 1000000000

-- How far the stored TAT lies ahead of now: 0 when absent, past or unreadable.
local function ahead(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local n = string.len(v)
  if n < 10 then return 0 end
  local s = tonumber(string.sub(v, 1, n - 9))
  local ns = tonumber(string.sub(v, n - 8))
  if not s or not ns then return 0 end
  local d = (s - now_s) * E9 + (ns - now_ns)
  if d > 0 then return d end
  return 0
end

-- Whole units that still fit in `slack` nanoseconds of tolerance.
local function units(slack, inc1, burst)
  if inc1 <= 0 then return burst end
  if slack <= 0 then return 0 end
  -- Rounding `period / count` down can fit more than `burst` units into the
  -- tolerance; never report more than the bucket holds.
  return math.min(math.floor(slack / inc1), burst)
end

local function text(x)
  return string.format('%.0f', x)
end

-- New TATs (as delays from now) by key, written only if nothing is refused.
-- Later checks of the same key in this call see the earlier ones' effect.
local pending = {}
local order = {}
local refused = false
local reply = {}

local function hold(key, delay)
  if pending[key] == nil then order[#order + 1] = key end
  pending[key] = delay
end

for i, key in ipairs(KEYS) do
  local a = (i - 1) * 5
  local op = ARGV[a + 1]
  local inc = tonumber(ARGV[a + 2])
  local inc1 = tonumber(ARGV[a + 3])
  local tol = tonumber(ARGV[a + 4])
  local burst = tonumber(ARGV[a + 5])
  local d = pending[key] or ahead(key)
  local ok, left, reset, retry = 1, 0, d, 0
  if op == 'c' then
    local new = d + inc
    if new <= tol then
      left, reset = units(tol - new, inc1, burst), new
      hold(key, new)
    else
      ok, refused = 0, true
      left, retry = units(tol - math.min(d, tol), inc1, burst), new - tol
    end
  elseif op == 'd' then
    local new = d + inc
    left, reset = units(tol - new, inc1, burst), new
    hold(key, new)
  elseif op == 'r' then
    local new = math.max(d - inc, 0)
    left, reset = units(tol - new, inc1, burst), new
    hold(key, new)
  else
    left = units(tol - math.min(d, tol), inc1, burst)
    if op == 'p' and d >= tol then
      ok, refused, retry = 0, true, math.max(d - tol, 1)
    end
  end
  reply[#reply + 1] = text(ok)
  reply[#reply + 1] = text(left)
  reply[#reply + 1] = text(reset)
  reply[#reply + 1] = text(retry)
end

if not refused then
  for _, key in ipairs(order) do
    local delay = pending[key]
    if delay > 0 then
      local at = now_ns + delay
      local s = math.floor(at / E9)
      local ns = math.min(math.max(at - s * E9, 0), E9 - 1)
      redis.call('SET', key, string.format('%d%09d', now_s + s, ns),
        'PX', math.max(math.ceil(delay / 1000000), 1))
    else
      -- Idle (a refund filled the bucket): the same as absent.
      redis.call('DEL', key)
    end
  end
end
return reply
"#;

/// Connection attempts may take longer than one call's `timeout` (TCP, `HELLO`,
/// `AUTH`, `SELECT`), and they only ever run in the background probe.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// A zero interval would make the probe spin.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Where the shared limits live and how long a request may wait for them.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`. Single node; see the module docs.
    pub url: String,
    /// The most one call may take before the breaker opens (default 50 ms).
    pub timeout: Duration,
    /// How often the background task checks Redis (default 1 s).
    pub probe_interval: Duration,
    /// Prepended to every key (default `rampart:`), so several deployments or
    /// other applications can share one Redis.
    pub key_prefix: String,
    /// Connection workers ([`crate::workers`]) that get a connection of their
    /// own for [`RedisStore::apply`] (default 0: every call uses the shared one).
    pub workers: usize,
    /// For a `rediss://` URL: the trust roots and the client certificate.
    pub tls: RedisTls,
    /// Redis Sentinel: the primary is whichever server the sentinels name at
    /// each (re)connect; `url` then gives only its credentials, database and
    /// TLS.
    pub sentinel: Option<RedisSentinel>,
    /// Redis Cluster: `(host, port)` of nodes to learn the layout from; `url`
    /// then gives only the credentials and TLS. See the module docs.
    pub cluster: Option<Vec<(String, u16)>>,
}

/// The sentinels to ask for the primary, and its name there.
#[derive(Clone)]
pub struct RedisSentinel {
    /// `(host, port)` of each sentinel (plain TCP).
    pub sentinels: Vec<(String, u16)>,
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// The sentinels' own password, if they have one.
    pub password: Option<String>,
    /// Reach the sentinels over TLS, with [`RedisSettings::tls`].
    pub tls: bool,
}

impl fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// TLS for a `rediss://` URL. The server's certificate is always verified:
/// against `ca_file` when given (and only against it), else against the public
/// web PKI (Mozilla's roots, built in, as for HTTPS upstreams).
#[derive(Clone, Debug, Default)]
pub struct RedisTls {
    /// PEM file of the CAs that sign Redis's certificate.
    pub ca_file: Option<String>,
    /// PEM certificate chain and private key files presented to Redis.
    pub client_cert: Option<(String, String)>,
}

impl RedisTls {
    /// The `redis` crate's form of these settings, files read now; `None`
    /// when neither is set (the built-in roots, no client certificate).
    fn certificates(&self) -> Result<Option<redis::TlsCertificates>, String> {
        if self.ca_file.is_none() && self.client_cert.is_none() {
            return Ok(None);
        }
        let read = |path: &str| std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
        let root_cert = self.ca_file.as_deref().map(read).transpose()?;
        let client_tls = match &self.client_cert {
            Some((cert, key)) => Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? }),
            None => None,
        };
        Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
    }
}

impl RedisSettings {
    /// Settings for `url` with the default timeout, probe interval and prefix.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(50),
            probe_interval: Duration::from_secs(1),
            key_prefix: "rampart:".to_owned(),
            workers: 0,
            tls: RedisTls::default(),
            sentinel: None,
            cluster: None,
        }
    }
}

/// The URL may carry a password, so `Debug` (and hence logs) never shows the
/// part before `@`.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("probe_interval", &self.probe_interval)
            .field("key_prefix", &self.key_prefix)
            .field("workers", &self.workers)
            .field("tls", &self.tls)
            .field("sentinel", &self.sentinel)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// `redis://user:secret@host/` → `redis://***@host/`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]),
        None => url.to_owned(),
    }
}

/// Why Redis could not decide; callers fall back to in-process limits.
#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    /// Redis failed recently; the background probe has not seen it recover.
    #[error("redis breaker open")]
    BreakerOpen,
    /// The call took longer than the configured timeout (the breaker is now open).
    #[error("redis timed out")]
    Timeout,
    /// Redis answered with an error, or could not be reached.
    #[error("redis error: {0}")]
    Error(String),
}

type Listener = Arc<dyn Fn(bool) + Send + Sync>;

/// A connection to the shared Redis: one server's (direct or through the
/// sentinels) or a cluster's. Cheap to clone (clones share the connection);
/// commands go through [`redis::aio::ConnectionLike`] either way, so callers
/// write `cmd.query_async(&mut conn)` without caring which.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    /// With the hash slot every Rampart key is in (see the module docs).
    Cluster(ClusterConnection, u16),
}

impl redis::aio::ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c, _) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c, _) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Sends a command that names no key (`PING`, `SCAN`, `ROLE`) to the
    /// server that holds Rampart's keys: the one server, or in a cluster the
    /// primary of Rampart's slot (a plain `query_async` would pick a random
    /// node).
    pub async fn query_home<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        match self {
            Self::Single(c) => cmd.query_async(c).await,
            Self::Cluster(c, slot) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
                let value = c.route_command(cmd, RoutingInfo::SingleNode(route)).await?;
                redis::from_redis_value(&value)
            }
        }
    }

    /// Up to about `max` keys matching `pattern` (a `SCAN` glob), from the
    /// server that holds Rampart's keys, and whether that is all of them
    /// (false when the scan stopped at `max`).
    pub async fn scan_keys(&mut self, pattern: &str, max: usize) -> redis::RedisResult<(Vec<String>, bool)> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(500);
            let (next, batch): (u64, Vec<String>) = self.query_home(&scan).await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= max {
                return Ok((keys, cursor == 0));
            }
        }
    }
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of
/// the whole key when it has none, modulo 16384), as `CLUSTER KEYSLOT` says.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&len| len > 0).map(|len| &rest[..len])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

/// The key prefix used in cluster mode: the configured one as a hash tag
/// (`rampart:` → `{rampart:}`), so that every key lands in one slot. Braces
/// in the prefix are dropped (they would end the tag early, or leave it
/// empty, which Redis ignores); a prefix with nothing else becomes
/// `{rampart}`.
fn cluster_prefix(prefix: &str) -> String {
    let tag: String = prefix.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let tag = if tag.is_empty() { "rampart" } else { tag.as_str() };
    format!("{{{tag}}}")
}

/// Limits shared through one Redis, behind a circuit breaker. Cheap to clone:
/// clones share the connection, the breaker and the probe.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RedisSettings,
    target: Target,
    script: Script,
    /// `None` until the probe has connected, and after a failed probe.
    conn: ArcSwapOption<RedisConn>,
    /// One connection per connection worker (index = [`crate::workers::current`];
    /// index 0, the other threads, is unused), made on that worker's thread so
    /// that its driver task runs there: a decision then never wakes another
    /// thread. Made on a worker's first call, dropped whenever the breaker
    /// opens, so they never outlive an outage.
    local: Box<[LocalConn]>,
    /// Bit 0: the breaker is closed (Redis usable). The other bits count
    /// closings, so a call that started before an outage and fails after the
    /// recovery cannot open the breaker again (see [`Inner::open`]).
    state: AtomicU64,
    /// Serialises state changes with their notifications, so listeners see
    /// them in order and end on the true state.
    transition: Mutex<()>,
    listeners: RwLock<Vec<Listener>>,
    /// The last probe failure, to log each new reason once rather than every
    /// probe interval while Redis stays down.
    last_probe_error: Mutex<Option<String>>,
}

const CLOSED: u64 = 1;

/// Where connections go.
enum Target {
    /// The one server of the URL.
    Direct(redis::Client),
    /// Whichever server the sentinels name as the primary, asked at every
    /// (re)connect, so a failover is followed at the next probe.
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// A Redis Cluster; `pubsub` are clients for each node given, tried in
    /// turn from `next` for subscriptions.
    Cluster { client: redis::cluster::ClusterClient, pubsub: Vec<redis::Client>, next: AtomicU64, slot: u16 },
}

/// A worker's own connection, and whether one is being made.
#[derive(Default)]
struct LocalConn {
    conn: ArcSwapOption<RedisConn>,
    connecting: std::sync::atomic::AtomicBool,
}

impl RedisStore {
    /// Never fails because Redis is down (only for an invalid or unsupported
    /// URL, or outside a Tokio runtime): the store starts with its breaker open
    /// and a background probe connects when Redis is reachable.
    pub fn new(mut settings: RedisSettings) -> Result<Self, RedisUnavailable> {
        let scheme = settings.url.split("://").next().unwrap_or_default();
        if scheme.contains("cluster") {
            return Err(RedisUnavailable::Error(format!(
                "{scheme}:// is not supported: for Redis Cluster, name the nodes in [redis] cluster_nodes"
            )));
        }
        if settings.cluster.is_some() && settings.sentinel.is_some() {
            return Err(RedisUnavailable::Error("a Redis Cluster cannot also be reached through sentinels".into()));
        }
        if settings.url.starts_with("rediss://") || settings.sentinel.as_ref().is_some_and(|s| s.tls) {
            // The `redis` crate builds its rustls config from the process's
            // default provider; with more than one compiled in (a test build)
            // there is none unless one is installed. Ours is ring, as for
            // every other TLS connection; an installed one stays.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certs = settings.tls.certificates().map_err(|e| RedisUnavailable::Error(format!("redis tls: {e}")))?;
        if settings.cluster.is_some() {
            settings.key_prefix = cluster_prefix(&settings.key_prefix);
        }
        let target = match (&settings.cluster, &settings.sentinel) {
            (Some(nodes), _) => {
                let (client, pubsub) = cluster_clients(&settings, nodes, certs)
                    .map_err(|e| RedisUnavailable::Error(format!("invalid redis cluster settings: {e}")))?;
                let slot = key_slot(settings.key_prefix.as_bytes());
                Target::Cluster { client, pubsub, next: AtomicU64::new(0), slot }
            }
            (None, Some(sentinel)) => Target::Sentinel(tokio::sync::Mutex::new(
                sentinel_client(&settings.url, sentinel, certs)
                    .map_err(|e| RedisUnavailable::Error(format!("invalid redis sentinel settings: {e}")))?,
            )),
            (None, None) => {
                let client = match certs {
                    Some(certs) if settings.url.starts_with("rediss://") => {
                        redis::Client::build_with_tls(settings.url.as_str(), certs)
                    }
                    _ => redis::Client::open(settings.url.as_str()),
                };
                Target::Direct(
                    client.map_err(|e| RedisUnavailable::Error(format!("invalid redis url or tls settings: {e}")))?,
                )
            }
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RedisUnavailable::Error("RedisStore::new must be called within a Tokio runtime".into()))?;
        let interval = settings.probe_interval.max(MIN_PROBE_INTERVAL);
        let local = (0..=settings.workers).map(|_| LocalConn::default()).collect();
        let inner = Arc::new(Inner {
            settings,
            target,
            script: Script::new(GCRA_LUA),
            conn: ArcSwapOption::empty(),
            local,
            state: AtomicU64::new(0),
            transition: Mutex::new(()),
            listeners: RwLock::new(Vec::new()),
            last_probe_error: Mutex::new(None),
        });
        runtime.spawn(probe_loop(Arc::downgrade(&inner), interval));
        Ok(Self { inner })
    }

    /// Applies all `checks` in ONE round trip and returns their decisions in
    /// order. All-or-nothing: if any `Check` or `Peek` is refused, nothing is stored.
    /// Keys are `key_prefix + check.key`.
    pub async fn apply(&self, checks: &[LimitCheck]) -> Result<Vec<Decision>, RedisUnavailable> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        let seen = inner.state.load(Ordering::Acquire);
        if seen & CLOSED == 0 {
            return Err(RedisUnavailable::BreakerOpen);
        }
        let Some(mut conn) = self.connection_here() else {
            return Err(RedisUnavailable::BreakerOpen);
        };

        let prefix = &inner.settings.key_prefix;
        let mut invocation = inner.script.prepare_invoke();
        for check in checks {
            let mut key = String::with_capacity(prefix.len() + check.key.len());
            key.push_str(prefix);
            key.push_str(&check.key);
            add_check(&mut invocation, key, check);
        }

        let reply =
            tokio::time::timeout(inner.settings.timeout, invocation.invoke_async::<Vec<String>>(&mut conn)).await;
        match reply {
            Ok(Ok(fields)) => decisions(checks, &fields),
            Err(_elapsed) => {
                inner.open(seen, "a call timed out");
                Err(RedisUnavailable::Timeout)
            }
            Ok(Err(e)) if is_outage(&e) => {
                inner.open(seen, &e.to_string());
                Err(if e.is_timeout() { RedisUnavailable::Timeout } else { RedisUnavailable::Error(e.to_string()) })
            }
            // A script or data error (say, a foreign value under our prefix)
            // concerns this request only: Redis itself is fine.
            Ok(Err(e)) => Err(RedisUnavailable::Error(e.to_string())),
        }
    }

    /// The connection for a call from this thread: the worker's own when it
    /// has one, else the shared one (`None` while there is none). A worker's
    /// first call starts making its own, on its own thread, and meanwhile
    /// uses the shared one.
    fn connection_here(&self) -> Option<RedisConn> {
        let inner = &self.inner;
        let shared = inner.conn.load_full()?;
        let i = crate::workers::current();
        let Some(slot) = inner.local.get(i).filter(|_| i > 0) else {
            return Some((*shared).clone());
        };
        if let Some(own) = slot.conn.load().as_deref() {
            return Some(own.clone());
        }
        if !slot.connecting.swap(true, Ordering::AcqRel) {
            let weak = Arc::downgrade(inner);
            tokio::spawn(async move {
                let Some(inner) = weak.upgrade() else { return };
                let seen = inner.state.load(Ordering::Acquire);
                let made = inner.connect().await;
                if let Some(slot) = inner.local.get(i) {
                    // Kept only if no outage began meanwhile (it would have
                    // cleared the slots and changed the state).
                    if let Ok(conn) = made {
                        if seen & CLOSED != 0 && inner.state.load(Ordering::Acquire) == seen {
                            slot.conn.store(Some(Arc::new(conn)));
                        }
                    }
                    slot.connecting.store(false, Ordering::Release);
                }
            });
        }
        Some((*shared).clone())
    }

    /// True while the breaker is closed (Redis usable).
    pub fn is_available(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// A connection for other features (bans, revocation lists) to reuse, or
    /// `None` while Redis is unavailable. It reconnects by itself, but callers
    /// should still bound their calls with a timeout.
    pub fn connection(&self) -> Option<RedisConn> {
        if !self.is_available() {
            return None;
        }
        self.inner.conn.load().as_deref().cloned()
    }

    /// The prefix of every key this store writes, for other features' keys
    /// (in cluster mode a hash tag: see the module docs).
    pub fn key_prefix(&self) -> &str {
        &self.inner.settings.key_prefix
    }

    /// The most one call should take (`[redis] timeout`), for other features
    /// to bound their own calls with.
    pub fn timeout(&self) -> Duration {
        self.inner.settings.timeout
    }

    /// A dedicated pub/sub connection (subscriptions cannot share the
    /// multiplexed one). Refused at once while the breaker is open; the
    /// connection attempt is bounded like the probe's.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisUnavailable> {
        if !self.is_available() {
            return Err(RedisUnavailable::BreakerOpen);
        }
        let limit = self.inner.settings.timeout.max(MIN_CONNECT_TIMEOUT);
        if let Target::Cluster { pubsub, next, .. } = &self.inner.target {
            // Any node will do: a cluster relays PUBLISH to all of them.
            // Start where the last subscription ended, so a lost node is
            // passed over.
            let mut last = RedisUnavailable::Error("no cluster nodes".into());
            for _ in 0..pubsub.len() {
                let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % pubsub.len();
                match tokio::time::timeout(limit, pubsub[i].get_async_pubsub()).await {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(e)) => last = RedisUnavailable::Error(e.to_string()),
                    Err(_) => last = RedisUnavailable::Timeout,
                }
            }
            return Err(last);
        }
        let client = self.inner.client().await.map_err(RedisUnavailable::Error)?;
        match tokio::time::timeout(limit, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(RedisUnavailable::Error(e.to_string())),
            Err(_) => Err(RedisUnavailable::Timeout),
        }
    }

    /// Calls `f(false)` when Redis becomes unavailable and `f(true)` when it is
    /// usable again (for metrics and `/readyz`). Not called with the current
    /// state: read [`RedisStore::is_available`] for that. Any number may be
    /// registered; they run on the task that saw the change, so keep them quick.
    pub fn on_state_change(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        self.inner.listeners.write().unwrap_or_else(PoisonError::into_inner).push(Arc::new(f));
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.inner.settings)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Opens the breaker, unless it changed since the failing call read `seen`
    /// (already open, or closed again by a probe after a newer recovery).
    fn open(&self, seen: u64, why: &str) {
        if seen & CLOSED == 0 {
            return;
        }
        let _order = self.transition.lock().unwrap_or_else(PoisonError::into_inner);
        if self.state.compare_exchange(seen, seen & !CLOSED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The workers' own connections are made again after the recovery.
            for slot in &*self.local {
                slot.conn.store(None);
            }
            tracing::warn!(reason = why, "redis unavailable: breaker open, limits fall back to this instance");
            self.notify(false);
        }
    }

    /// Closes the breaker. Only the probe task calls this.
    fn close(&self) {
        let _order = self.transition.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = self.state.load(Ordering::Acquire);
        if seen & CLOSED != 0 {
            return;
        }
        let next = (((seen >> 1).wrapping_add(1)) << 1) | CLOSED;
        if self.state.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            tracing::info!("redis available: breaker closed");
            self.last_probe_error.lock().unwrap_or_else(PoisonError::into_inner).take();
            self.notify(true);
        }
    }

    fn notify(&self, up: bool) {
        // A snapshot, so a listener may register another without deadlocking.
        let listeners = self.listeners.read().unwrap_or_else(PoisonError::into_inner).clone();
        for listener in listeners {
            listener(up);
        }
    }

    /// One probe: PING the current connection; if there is none or it fails,
    /// build a fresh one and PING that.
    async fn probe(&self) {
        let seen = self.state.load(Ordering::Acquire);
        if let Some(conn) = self.conn.load_full() {
            match self.ping(&conn).await {
                Ok(()) => {
                    self.close();
                    return;
                }
                Err(why) => {
                    self.open(seen, &why);
                    self.conn.store(None);
                }
            }
        }
        let fresh = match self.connect().await {
            Ok(conn) => conn,
            Err(why) => return self.probe_failed(seen, why),
        };
        if let Err(why) = self.ping(&fresh).await {
            return self.probe_failed(seen, why);
        }
        self.conn.store(Some(Arc::new(fresh)));
        self.close();
    }

    fn probe_failed(&self, seen: u64, why: String) {
        self.open(seen, &why);
        let mut last = self.last_probe_error.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() != Some(why.as_str()) {
            tracing::warn!(reason = %why, "redis probe failed; retrying every probe interval");
            *last = Some(why);
        }
    }

    async fn ping(&self, conn: &RedisConn) -> Result<(), String> {
        let mut conn = conn.clone();
        if matches!(self.target, Target::Sentinel(_)) {
            // After a failover the old primary comes back as a replica: it
            // answers PING but refuses every write (READONLY). Only the
            // primary will do; anything else makes the probe ask the
            // sentinels again.
            let role = tokio::time::timeout(
                self.settings.timeout,
                redis::cmd("ROLE").query_async::<Vec<redis::Value>>(&mut conn),
            )
            .await;
            return match role {
                Ok(Ok(role)) => match role.first().map(redis::from_redis_value::<String>) {
                    Some(Ok(r)) if r == "master" => Ok(()),
                    Some(Ok(r)) => Err(format!("the server is a {r}, not the primary (a failover?)")),
                    _ => Err("ROLE gave an unexpected answer".into()),
                },
                Ok(Err(e)) => Err(format!("ROLE failed: {e}")),
                Err(_) => Err(format!("ROLE timed out after {:?}", self.settings.timeout)),
            };
        }
        // In a cluster, the primary of Rampart's slot: the one server that
        // matters, found anew after a failover (the client follows MOVED).
        let pong = tokio::time::timeout(self.settings.timeout, conn.query_home::<String>(&redis::cmd("PING"))).await;
        match pong {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("PING failed: {e}")),
            Err(_) => Err(format!("PING timed out after {:?}", self.settings.timeout)),
        }
    }

    /// A client for the server to use now: the URL's, or the primary the
    /// sentinels name (each sentinel asked in turn, bounded like a connect).
    async fn client(&self) -> Result<redis::Client, String> {
        let sentinel = match &self.target {
            Target::Direct(client) => return Ok(client.clone()),
            Target::Sentinel(sentinel) => sentinel,
            Target::Cluster { .. } => return Err("a cluster has no single server".into()),
        };
        let limit = self.settings.timeout.max(MIN_CONNECT_TIMEOUT).saturating_mul(2);
        let mut sentinel = sentinel.lock().await;
        match tokio::time::timeout(limit, sentinel.async_get_client()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(format!("no primary from the sentinels: {e}")),
            Err(_) => Err(format!("the sentinels did not name a primary within {limit:?}")),
        }
    }

    async fn connect(&self) -> Result<RedisConn, String> {
        let connect_timeout = self.settings.timeout.max(MIN_CONNECT_TIMEOUT);
        if let Target::Cluster { client, slot, .. } = &self.target {
            // Reads the slot layout from the first node that answers.
            let limit = connect_timeout.saturating_mul(2);
            return match tokio::time::timeout(limit, client.get_async_connection()).await {
                Ok(Ok(conn)) => Ok(RedisConn::Cluster(conn, *slot)),
                Ok(Err(e)) => Err(format!("cluster connect failed: {e}")),
                Err(_) => Err(format!("cluster connect timed out after {limit:?}")),
            };
        }
        // No retries inside the manager: the probe is the retry loop, at a
        // known pace, and a reconnect the manager starts after a dropped
        // connection then resolves at once instead of backing off for seconds.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(connect_timeout)
            .set_response_timeout(self.settings.timeout)
            .set_number_of_retries(0);
        let client = self.client().await?;
        let made =
            tokio::time::timeout(connect_timeout.saturating_mul(2), ConnectionManager::new_with_config(client, config))
                .await;
        let mut conn = match made {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(format!("connect failed: {e}")),
            Err(_) => return Err(format!("connect timed out after {connect_timeout:?}")),
        };
        // A cluster node would answer MOVED or CROSSSLOT for most requests.
        // Servers that refuse INFO (ACLs) are taken to be single nodes.
        let info = tokio::time::timeout(
            self.settings.timeout,
            redis::cmd("INFO").arg("cluster").query_async::<String>(&mut conn),
        )
        .await;
        if let Ok(Ok(info)) = info {
            if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
                return Err("the server is a Redis Cluster node: name the nodes in [redis] cluster_nodes".into());
            }
        }
        Ok(RedisConn::Single(conn))
    }
}

/// The cluster client for `nodes`, with the URL's credentials and TLS, and a
/// plain client per node for subscriptions.
fn cluster_clients(
    settings: &RedisSettings,
    nodes: &[(String, u16)],
    certs: Option<redis::TlsCertificates>,
) -> redis::RedisResult<(redis::cluster::ClusterClient, Vec<redis::Client>)> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let base = settings.url.as_str().into_connection_info()?;
    if base.redis.db != 0 {
        return Err((ErrorKind::InvalidClientConfig, "a Redis Cluster has only database 0").into());
    }
    let infos: Vec<redis::ConnectionInfo> = nodes
        .iter()
        .map(|(host, port)| {
            let addr = match &base.addr {
                ConnectionAddr::TcpTls { .. } => {
                    ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None }
                }
                _ => ConnectionAddr::Tcp(host.clone(), *port),
            };
            redis::ConnectionInfo { addr, redis: base.redis.clone() }
        })
        .collect();
    let tls = matches!(base.addr, ConnectionAddr::TcpTls { .. });
    let timeout = settings.timeout.max(MIN_CONNECT_TIMEOUT);
    // A couple of retries let a call follow MOVED/ASK after a failover; the
    // caller's own timeout bounds the whole call anyway.
    let mut builder = redis::cluster::ClusterClientBuilder::new(infos.clone())
        .connection_timeout(timeout)
        .response_timeout(settings.timeout)
        .retries(2)
        .min_retry_wait(5)
        .max_retry_wait(50);
    if let (true, Some(certs)) = (tls, certs.clone()) {
        builder = builder.certs(certs);
    }
    let pubsub = infos
        .into_iter()
        .map(|info| match (&info.addr, certs.clone()) {
            (ConnectionAddr::TcpTls { .. }, Some(certs)) => redis::Client::build_with_tls(info, certs),
            _ => redis::Client::open(info),
        })
        .collect::<redis::RedisResult<Vec<_>>>()?;
    Ok((builder.build()?, pubsub))
}

/// The sentinel client for `url`'s credentials, database and TLS.
fn sentinel_client(
    url: &str,
    sentinel: &RedisSentinel,
    certs: Option<redis::TlsCertificates>,
) -> redis::RedisResult<redis::sentinel::SentinelClient> {
    use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
    use redis::{ConnectionAddr, IntoConnectionInfo, TlsMode};
    let info = url.into_connection_info()?;
    let sentinels = sentinel.sentinels.iter().map(|(host, port)| match sentinel.tls {
        true => ConnectionAddr::TcpTls { host: host.clone(), port: *port, insecure: false, tls_params: None },
        false => ConnectionAddr::Tcp(host.clone(), *port),
    });
    let mut builder = SentinelClientBuilder::new(sentinels, sentinel.master.clone(), SentinelServerType::Master)?
        .set_client_to_redis_db(info.redis.db)
        .set_client_to_redis_protocol(info.redis.protocol);
    if let Some(user) = info.redis.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = info.redis.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if sentinel.tls {
        builder = builder.set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = &certs {
            builder = builder.set_client_to_sentinel_certificates(certs.clone());
        }
    }
    if matches!(info.addr, ConnectionAddr::TcpTls { .. }) {
        builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            builder = builder.set_client_to_redis_certificates(certs);
        }
    }
    if let Some(password) = &sentinel.password {
        builder = builder.set_client_to_sentinel_password(password.clone());
    }
    builder.build()
}

/// Probes until every [`RedisStore`] clone is dropped. The first probe runs at
/// once, so a store made at start-up is usable as soon as Redis answers.
async fn probe_loop(inner: Weak<Inner>, interval: Duration) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        inner.probe().await;
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}

/// Appends one check's key and its five arguments (see [`GCRA_LUA`]).
fn add_check(invocation: &mut ScriptInvocation<'_>, key: String, check: &LimitCheck) {
    let (op, inc) = match check.op {
        Op::Check if check.weight == 0 => ("z", 0),
        Op::Check => ("c", check.params.increment_ns(check.weight)),
        Op::Debit => ("d", check.params.increment_ns(check.weight)),
        Op::Refund => ("r", check.params.increment_ns(check.weight)),
        Op::Peek => ("p", 0),
    };
    invocation
        .key(key)
        .arg(op)
        .arg(inc)
        .arg(check.params.increment_ns(1))
        .arg(check.params.tolerance_ns())
        .arg(check.params.burst);
}

/// Errors that say Redis as a whole cannot serve us now (as opposed to this
/// one request being wrong).
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::ReadOnly
                | ErrorKind::AuthenticationFailed
                | ErrorKind::ClusterConnectionNotFound
        )
        // A script stuck in a loop blocks the whole server.
        || e.code() == Some("BUSY")
}

/// Turns the script's flat reply (four fields per check) into decisions.
fn decisions(checks: &[LimitCheck], fields: &[String]) -> Result<Vec<Decision>, RedisUnavailable> {
    if fields.len() != checks.len() * 4 {
        return Err(RedisUnavailable::Error(format!(
            "unexpected script reply: {} fields for {} checks",
            fields.len(),
            checks.len()
        )));
    }
    checks
        .iter()
        .zip(fields.chunks_exact(4))
        .map(|(check, f)| {
            Ok(Decision {
                allowed: number(&f[0])? == 1,
                limit: check.params.burst,
                remaining: number(&f[1])?,
                reset_after_ns: number(&f[2])?,
                retry_after_ns: number(&f[3])?,
            })
        })
        .collect()
}

/// The script prints integers with `%.0f`; values past `u64::MAX` (only from
/// saturated parameters) come back as larger decimals and saturate here too.
fn number(field: &str) -> Result<u64, RedisUnavailable> {
    field
        .parse::<u64>()
        .or_else(|_| field.parse::<f64>().map(|f| f as u64))
        .map_err(|_| RedisUnavailable::Error(format!("unexpected number in script reply: {field:?}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn urls_lose_their_credentials_in_debug() {
        assert_eq!(redact_url("redis://user:pw@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact_url("redis://:p@ss@host/"), "redis://***@host/");
        assert_eq!(redact_url("redis://host:6379/"), "redis://host:6379/");
        let shown = format!("{:?}", RedisSettings::new("redis://u:hunter2@h/"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// The cases of the Redis Cluster specification's hash-tag rules; the
    /// integration tests compare with a real node's `CLUSTER KEYSLOT`.
    #[test]
    fn key_slots_follow_the_hash_tag_rules() {
        // CRC16/XMODEM's check value, 0x31C3.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        // An empty tag counts as none: the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"{unclosed"), crc16::State::<crc16::XMODEM>::calculate(b"{unclosed") % 16384);
        assert!(key_slot(&[0xff; 64]) < 16384);
    }

    #[test]
    fn cluster_prefixes_are_one_nonempty_hash_tag() {
        assert_eq!(cluster_prefix("rampart:"), "{rampart:}");
        assert_eq!(cluster_prefix(""), "{rampart}");
        assert_eq!(cluster_prefix("}{"), "{rampart}");
        assert_eq!(cluster_prefix("a{b}:"), "{ab:}");
        // Whatever follows the prefix, the key's slot is the prefix's.
        for prefix in ["rampart:", "", "}", "x{y", "{z}"] {
            let p = cluster_prefix(prefix);
            let slot = key_slot(p.as_bytes());
            for rest in ["ban:1.2.3.4", "{t:abc}", "session:{}", "}{"] {
                assert_eq!(key_slot(format!("{p}{rest}").as_bytes()), slot, "{p}{rest}");
            }
        }
    }

    /// xorshift64*: enough randomness for a model test, no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// The script against [`rampart_core::gcra::decide`], step by step on random
    /// sequences, with Redis' clock replaced by one the test sets (the last two
    /// arguments), so both see the same instant. Needs `RAMPART_TEST_REDIS_URL`.
    #[tokio::test]
    async fn script_matches_the_core_exactly() {
        use rampart_core::gcra::{decide, GcraParams};

        let Ok(url) = std::env::var("RAMPART_TEST_REDIS_URL") else {
            println!("skipped: RAMPART_TEST_REDIS_URL not set (scripts/test sets it)");
            return;
        };
        let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        // Real time, not the test clock, runs the TTLs: an hour keeps every key.
        let (clock, ttl) = ("local time = redis.call('TIME')", "'PX', math.max(math.ceil(delay / 1000000), 1)");
        assert!(GCRA_LUA.contains(clock) && GCRA_LUA.contains(ttl));
        let fake = GCRA_LUA.replace(clock, "local time = {ARGV[#ARGV - 1], ARGV[#ARGV]}").replace(ttl, "'PX', 3600000");
        let script = Script::new(&fake);
        let run = uuid::Uuid::now_v7().simple();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut steps = 0;
        for round in 0..60 {
            // From sub-microsecond to hour-long increments: all exact below 2^53 ns.
            let period_ns = [1 + rng.below(5_000), 1 + rng.below(10_000_000), 1 + rng.below(10_000_000_000_000)]
                [rng.below(3) as usize];
            let p = GcraParams { period_ns, count: 1 + rng.below(20), burst: 1 + rng.below(10) };
            let key = format!("rampart-test:conformance:{{{run}}}:{round}");
            let mut tat: Option<u64> = None;
            // Redis' TIME has microseconds, so the test clock does too.
            let mut now: u64 = 1_750_000_000_000_000_000 + rng.below(1_000_000_000) * 1_000;
            for step in 0..80 {
                let unit_us = p.increment_ns(1) / 1_000;
                now += if rng.below(4) == 0 { 0 } else { rng.below(3 * unit_us + 2) * 1_000 };
                let weight = [0, 1, 1, 1, 2, 3, p.burst, p.burst + 1][rng.below(8) as usize];
                let op = [Op::Check, Op::Check, Op::Check, Op::Peek, Op::Debit, Op::Refund][rng.below(6) as usize];
                let check = LimitCheck { key: key.clone(), params: p, weight, op };

                let (want, store) = decide(tat, now, &p, weight, op);
                let mut invocation = script.prepare_invoke();
                add_check(&mut invocation, key.clone(), &check);
                invocation.arg(now / 1_000_000_000).arg(now % 1_000_000_000 / 1_000);
                let fields: Vec<String> = invocation.invoke_async(&mut conn).await.unwrap();
                let got = decisions(std::slice::from_ref(&check), &fields).unwrap();
                assert_eq!(got, [want], "round {round}, step {step}: {p:?}, now {now}, weight {weight}, {op:?}");
                if store.is_some() {
                    tat = store;
                }
                let stored: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
                match tat.filter(|t| *t > now) {
                    Some(t) => assert_eq!(stored, Some(t.to_string()), "round {round}, step {step}"),
                    // Idle: absent, or a TAT that is not after now.
                    None => assert!(
                        stored.as_deref().is_none_or(|s| s.parse::<u64>().unwrap() <= now),
                        "round {round}, step {step}: {stored:?} stored for an idle key at {now}"
                    ),
                }
                steps += 1;
            }
            let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
        }
        assert_eq!(steps, 60 * 80);
    }

    #[test]
    fn replies_parse_and_saturate() {
        assert_eq!(number("42").unwrap(), 42);
        assert_eq!(number("18446744073709551616").unwrap(), u64::MAX);
        assert!(number("x").is_err());
    }
}
