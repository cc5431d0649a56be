//! Bans: manual (`rampart ban add`) and automatic, escalating, temporary.
//!
//! Checked first thing for every request (in-memory map lookups, no I/O), so a
//! banned address costs almost nothing. With Redis configured, a ban is written
//! to Redis (`<prefix>ban:<ip>`, or `<prefix>ban:<ip>/<prefix_len>` for a
//! network, expiring with the ban) and announced on the `<prefix>bans`
//! channel; every instance applies announcements at once and also re-reads the
//! whole list periodically and whenever Redis comes back, so an instance that
//! missed a message converges. A ban this instance made while
//! Redis was unreachable is not in that list: it is kept (rather than taken for
//! a ban lifted elsewhere) and written to Redis at the next re-read. A ban it
//! lifted meanwhile is remembered, and lifted in Redis before that re-read
//! (unless Redis holds a different ban there by then, made after the lift).
//!
//! Automatic bans: each refusal of a kind (rate limited, failed authentication,
//! blocked input) is a strike, counted per client with GCRA over `window`; when
//! the strikes exceed the threshold, the client is banned for the next length in
//! `durations` (escalating with each offence, forgotten after `forget_after`).
//! All of it is bounded by `max_tracked` clients.
//!
//! A client is what [`ClientGrouping`] makes of its address (`[server]
//! ipv6_prefix`): an IPv4 address, or an IPv6 network. Strikes and offences are
//! counted per client, and an automatic ban of an IPv6 client is a ban of its
//! network (a [`Ban`] with `prefix_len`), so rotating through the addresses of
//! a /64 neither escapes a ban nor earns a fresh count. A manual ban is of the
//! one address given. A lookup tries the address itself, then its network at
//! each prefix length some ban in the list has (usually one), so bans made
//! under another `ipv6_prefix` (an older config, another instance) still apply.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use rampart_core::client_ip::ClientGrouping;
use rampart_core::config::model::BansConfig;
use rampart_core::gcra::GcraParams;
use serde::{Deserialize, Serialize};

use self::table::{ban_target, target_net, Held, Table};
use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::{now_ns, LimitCheck, Op};
use crate::observe::audit::{AuditEvent, AuditKind, AuditSink};
use crate::observe::Metrics;

mod table;

/// One ban.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// The banned address; with `prefix_len`, the first of the banned network.
    pub ip: IpAddr,
    /// Set when the ban covers the IPv6 network `ip/prefix_len` (an automatic
    /// ban of an IPv6 client), absent for one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// Unix time in milliseconds when the ban ends.
    pub until_ms: u64,
    pub reason: String,
    /// `manual` or `auto:<kind>`.
    pub source: String,
}

impl Ban {
    /// What the ban covers (one address as a /32 or /128), or `None` when
    /// `prefix_len` is not one Rampart makes for `ip` (a malformed ban from
    /// Redis).
    pub fn net(&self) -> Option<IpNet> {
        target_net(self.ip, self.prefix_len)
    }

    /// Whether the ban was made by Rampart (`source` `auto:…`), not by an operator.
    pub fn is_automatic(&self) -> bool {
        self.source.starts_with("auto:")
    }

    /// `ip`, or `ip/prefix_len` for a network: what the ban covers, for people.
    pub fn target(&self) -> String {
        match self.prefix_len {
            Some(len) => format!("{}/{len}", self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// What earned a strike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strike {
    RateLimited,
    AuthFailure,
    BlockedInput,
}

impl Strike {
    fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::AuthFailure => "auth_failures",
            Self::BlockedInput => "blocked_inputs",
        }
    }
}

/// The answer to a ban the list did not keep. A manual ban is always kept
/// (it pushes out another), so the admin APIs should never send this; it
/// is there so that they cannot report a ban that is not in force.
pub fn ban_list_full() -> crate::problem::Problem {
    crate::problem::Problem::new(http::StatusCode::SERVICE_UNAVAILABLE, "ban-list-full", "Ban list full")
        .detail("the ban list is full and did not keep this ban")
}

pub fn now_ms() -> u64 {
    // Wall time: ban deadlines are shared with other instances through Redis.
    super::wall_ns() / 1_000_000
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Announcement {
    Add {
        ban: Ban,
    },
    Remove {
        ip: IpAddr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_len: Option<u8>,
    },
}

/// The ban list of this instance, mirrored to and from Redis when configured.
pub struct BanList {
    bans: RwLock<Table>,
    config: BansConfig,
    /// How addresses are counted as clients, for strikes and automatic bans.
    clients: ClientGrouping,
    strikes: MemoryStore,
    /// Client (see [`ClientGrouping::key`]) → (offences, last offence in ms).
    offences: Mutex<HashMap<IpAddr, (u32, u64)>>,
    /// Bans lifted here while Redis was unreachable, as they were, until
    /// Redis has heard of the lift (see [`BanList::share_lifts`]).
    lifted: Mutex<HashMap<IpNet, Ban>>,
    redis: Option<RedisStore>,
    metrics: Arc<Metrics>,
    /// Set by the gateway once its audit log runs (see `set_audit`).
    audit: OnceLock<Arc<AuditSink>>,
}

impl BanList {
    pub fn new(
        config: &BansConfig,
        clients: ClientGrouping,
        redis: Option<RedisStore>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let list = Arc::new(Self {
            bans: RwLock::new(Table::default()),
            config: config.clone(),
            clients,
            strikes: MemoryStore::new(config.max_tracked.max(1)),
            offences: Mutex::new(HashMap::new()),
            lifted: Mutex::new(HashMap::new()),
            redis,
            metrics,
            audit: OnceLock::new(),
        });
        if list.redis.is_some() {
            list.clone().spawn_sync();
        }
        list
    }

    /// Records bans added and lifted on this instance in `sink` from now on
    /// (bans learnt from other instances through Redis are theirs to record).
    /// Only the first call has an effect.
    pub fn set_audit(&self, sink: Arc<AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// How addresses are counted as clients.
    pub fn clients(&self) -> ClientGrouping {
        self.clients
    }

    /// The ban on `ip` (on the address, or on a network of it), if one is in
    /// force. Expired bans are ignored (and swept when the list is full or listed).
    pub fn banned(&self, ip: IpAddr) -> Option<Ban> {
        let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
        if bans.len() == 0 {
            return None;
        }
        bans.find(ip.to_canonical(), now_ms()).map(|h| h.ban.clone())
    }

    /// Every ban in force, soonest to end first.
    pub fn list(&self) -> Vec<Ban> {
        let now = now_ms();
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        bans.expire(now);
        let mut v: Vec<Ban> = bans.map.values().map(|h| h.ban.clone()).collect();
        v.sort_by_key(|b| b.until_ms);
        v
    }

    /// Adds `ban` (made here and not yet in Redis when `unshared`, else
    /// learnt from Redis) in place of any other on what it covers, except that
    /// a longer unshared ban of this instance's outlasts one learnt from Redis.
    /// A ban whose `prefix_len` does not fit its address is ignored.
    /// Returns whether the list holds `ban` now.
    fn insert_local(&self, mut ban: Ban, unshared: bool) -> bool {
        let Some(net) = ban.net() else {
            tracing::debug!(ip = %ban.ip, prefix_len = ?ban.prefix_len, "ignored a ban with an impossible prefix length");
            return false;
        };
        (ban.ip, ban.prefix_len) = ban_target(net);
        let now = now_ms();
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = bans.get(&net) {
            if !unshared && held.unshared && held.ban.until_ms > ban.until_ms {
                return false;
            }
        }
        if bans.len() >= self.config.max_tracked && bans.get(&net).is_none() {
            bans.expire(now);
            if bans.len() >= self.config.max_tracked {
                // Full of live bans: drop the automatic one ending soonest.
                // A flood of automatic bans (one attacker with many networks)
                // must not push out an operator's; a manual ban goes only
                // for another manual one, and an automatic ban that finds
                // none to replace is not kept.
                let victim = match bans.soonest(true) {
                    Some(n) => Some(n),
                    None if ban.is_automatic() => {
                        tracing::warn!(
                            max_tracked = self.config.max_tracked,
                            "ban list full of manual bans; an automatic ban was not kept"
                        );
                        return false;
                    }
                    None => bans.soonest(false),
                };
                if let Some(victim) = victim {
                    bans.remove(&victim);
                }
            }
        }
        bans.insert(net, Held { ban, unshared });
        self.metrics.bans_active(bans.len());
        true
    }

    /// Drops the ban on `net` from this instance's list; returns it.
    fn remove_local(&self, net: IpNet) -> Option<Held> {
        let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
        let removed = bans.remove(&net);
        self.metrics.bans_active(bans.len());
        removed
    }

    /// Bans the one address `ip` for `ttl`, here and (with Redis) on every
    /// instance. `None` when the ban was not kept: an automatic ban (`source`
    /// `auto:…`) finding the list full of manual ones. A manual ban is always
    /// kept.
    pub async fn add(&self, ip: IpAddr, ttl: Duration, reason: &str, source: &str) -> Option<Ban> {
        let ban = self.ban_locally(IpNet::from(ip.to_canonical()), ttl, reason, source)?;
        self.share(&ban).await;
        Some(ban)
    }

    /// Bans the client `ip` counts as for `ttl`, here and (with Redis) on every
    /// instance: the address for IPv4, its network of `[server] ipv6_prefix`
    /// bits for IPv6 (see [`ClientGrouping`]). `None` when the ban was not
    /// kept (as for [`BanList::add`]).
    pub async fn add_client(&self, ip: IpAddr, ttl: Duration, reason: &str, source: &str) -> Option<Ban> {
        let ban = self.ban_locally(self.client_net(ip), ttl, reason, source)?;
        self.share(&ban).await;
        Some(ban)
    }

    /// The network the client of `ip` is, as a ban target.
    fn client_net(&self, ip: IpAddr) -> IpNet {
        let key = self.clients.key(ip);
        match (key, self.clients.network_len(ip)) {
            (IpAddr::V6(v6), Some(len)) => Ipv6Net::new(v6, len).map_or(IpNet::from(key), IpNet::V6),
            _ => IpNet::from(key),
        }
    }

    /// Bans `net` on this instance only (see [`BanList::share`] for the
    /// others), and records it. `None`, and nothing recorded, when the list
    /// did not keep it (see [`BanList::insert_local`]).
    fn ban_locally(&self, net: IpNet, ttl: Duration, reason: &str, source: &str) -> Option<Ban> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let (ip, prefix_len) = ban_target(net);
        let ban = Ban {
            ip,
            prefix_len,
            until_ms: now_ms().saturating_add(ttl_ms),
            reason: reason.chars().take(200).collect(),
            source: source.into(),
        };
        if !self.insert_local(ban.clone(), true) {
            return None;
        }
        // A lift of this target not yet shared is superseded: at the re-read
        // it must not delete (and announce as lifted) what this ban replaces.
        self.lifted.lock().unwrap_or_else(|e| e.into_inner()).remove(&net);
        self.metrics.ban_added(if source == "manual" { "manual" } else { "auto" });
        tracing::warn!(target: "rampart::audit", event = "ban_added", ip = %ban.target(), ttl_secs = ttl.as_secs(), reason = %ban.reason, source = %source, "address banned");
        if let Some(audit) = self.audit.get() {
            let mut event = AuditEvent::new(AuditKind::BanAdded)
                .ip(ip)
                .detail("ttl_secs", ttl.as_secs())
                .detail("reason", ban.reason.clone())
                .detail("source", source);
            if let Some(len) = prefix_len {
                event = event.detail("prefix_len", len);
            }
            audit.record(event);
        }
        Some(ban)
    }

    /// Writes `ban` to Redis (expiring with it) and announces it to the other
    /// instances. Without Redis the ban applies to this instance only; while
    /// Redis is unreachable it stays unshared, to be written at the next resync.
    async fn share(&self, ban: &Ban) {
        let Some(net) = ban.net() else { return };
        let Some(mut c) = self.redis.as_ref().and_then(RedisStore::connection) else { return };
        let ttl_ms = ban.until_ms.saturating_sub(now_ms()).max(1);
        let msg = serde_json::to_string(&Announcement::Add { ban: ban.clone() }).unwrap_or_default();
        let body = serde_json::to_string(ban).unwrap_or_default();
        let res: redis::RedisResult<()> = redis::pipe()
            .cmd("SET")
            .arg(self.redis_key(net))
            .arg(body)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.channel())
            .arg(msg)
            .ignore()
            .query_async(&mut c)
            .await;
        match res {
            Ok(()) => {
                let mut bans = self.bans.write().unwrap_or_else(|e| e.into_inner());
                // Unless replaced meanwhile by another ban on the address.
                if let Some(held) = bans.map.get_mut(&net).filter(|h| h.ban == *ban) {
                    held.unshared = false;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ban not shared through redis yet; it applies to this instance until it is")
            }
        }
    }

    /// Lifts, everywhere, every ban that applies to `ip`: on the address, and
    /// on any network of it (so an automatic ban of an IPv6 client is lifted
    /// by naming any of its addresses). True when this instance had one.
    pub async fn remove(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mut nets = self.bans.read().unwrap_or_else(|e| e.into_inner()).covering(ip);
        if !nets.contains(&IpNet::from(ip)) {
            // Redis may have a ban on the address this instance does not.
            nets.push(IpNet::from(ip));
        }
        let mut lifted = Vec::new();
        for &net in &nets {
            if let Some(held) = self.remove_local(net) {
                lifted.push((net, held));
            }
        }
        let removed = !lifted.is_empty();
        // Until Redis has heard of it, a lift is remembered: Redis may still
        // hold the ban, and the next re-read would bring it back.
        let mut unshared: Vec<(IpNet, Ban)> =
            lifted.into_iter().filter(|(_, held)| !held.unshared).map(|(net, held)| (net, held.ban)).collect();
        tracing::warn!(target: "rampart::audit", event = "ban_removed", ip = %ip, "ban lifted");
        if let Some(audit) = self.audit.get() {
            audit.record(AuditEvent::new(AuditKind::BanRemoved).ip(ip).detail("was_banned", removed));
        }
        if let Some(mut c) = self.redis.as_ref().and_then(RedisStore::connection) {
            let mut pipe = redis::pipe();
            for &net in &nets {
                let (ip, prefix_len) = ban_target(net);
                let msg = serde_json::to_string(&Announcement::Remove { ip, prefix_len }).unwrap_or_default();
                pipe.cmd("DEL").arg(self.redis_key(net)).ignore().cmd("PUBLISH").arg(self.channel()).arg(msg).ignore();
            }
            let res: redis::RedisResult<()> = pipe.query_async(&mut c).await;
            match res {
                Ok(()) => unshared.clear(),
                Err(e) => tracing::warn!(error = %e, "ban removal not shared through redis yet"),
            }
        }
        if self.redis.is_some() {
            let mut pending = self.lifted.lock().unwrap_or_else(|e| e.into_inner());
            for &net in &nets {
                pending.remove(&net);
            }
            for (net, ban) in unshared {
                if pending.len() >= self.config.max_tracked {
                    // Bounded: the lift of the ban ending soonest is forgotten.
                    let soonest = pending.iter().min_by_key(|(_, b)| b.until_ms).map(|(n, _)| *n);
                    if let Some(soonest) = soonest {
                        pending.remove(&soonest);
                    }
                }
                pending.insert(net, ban);
            }
        }
        removed
    }

    /// Shares the lifts made while Redis was unreachable: each lifted ban
    /// that Redis still holds, unchanged, is deleted there and announced as
    /// lifted. A ban Redis holds that differs from the one lifted was made
    /// (by another instance) after the lift, and stays.
    async fn share_lifts(&self, c: &mut super::redis::RedisConn) -> redis::RedisResult<()> {
        let pending: Vec<(IpNet, Ban)> = {
            let now = now_ms();
            let mut lifted = self.lifted.lock().unwrap_or_else(|e| e.into_inner());
            lifted.retain(|_, ban| ban.until_ms > now);
            lifted.iter().map(|(net, ban)| (*net, ban.clone())).collect()
        };
        for (net, ban) in pending {
            let key = self.redis_key(net);
            let held: Option<String> = redis::cmd("GET").arg(&key).query_async(c).await?;
            let same = held.and_then(|v| serde_json::from_str::<Ban>(&v).ok()).is_some_and(|held| {
                held.until_ms == ban.until_ms && held.source == ban.source && held.reason == ban.reason
            });
            if same {
                let (ip, prefix_len) = ban_target(net);
                let msg = serde_json::to_string(&Announcement::Remove { ip, prefix_len }).unwrap_or_default();
                redis::pipe()
                    .cmd("DEL")
                    .arg(&key)
                    .ignore()
                    .cmd("PUBLISH")
                    .arg(self.channel())
                    .arg(msg)
                    .ignore()
                    .query_async::<()>(c)
                    .await?;
            }
            let mut lifted = self.lifted.lock().unwrap_or_else(|e| e.into_inner());
            if lifted.get(&net) == Some(&ban) {
                lifted.remove(&net);
            }
        }
        Ok(())
    }

    /// Counts a strike against the client of `ip` (see [`ClientGrouping`]);
    /// bans it when the strikes of that kind in the window exceed the
    /// configured threshold.
    pub fn strike(self: &Arc<Self>, ip: IpAddr, kind: Strike) {
        let threshold = match kind {
            Strike::RateLimited => self.config.after_rate_limited,
            Strike::AuthFailure => self.config.after_auth_failures,
            Strike::BlockedInput => self.config.after_blocked_inputs,
        };
        if !self.config.enabled || threshold == 0 {
            return;
        }
        let Ok(params) = GcraParams::new(threshold, self.config.window, threshold) else { return };
        let client = self.clients.key(ip);
        let check = LimitCheck { key: format!("{}:{client}", kind.as_str()), params, weight: 1, op: Op::Check };
        let allowed = self.strikes.apply(now_ns(), std::slice::from_ref(&check)).first().is_none_or(|d| d.allowed);
        if allowed {
            return;
        }
        // The ban is counted and made under the offences lock, so refusals
        // racing past the threshold together make one ban, of the length of
        // one offence: only the first finds the client not yet banned.
        let banned = {
            let mut offences = self.offences.lock().unwrap_or_else(|e| e.into_inner());
            if self.banned(ip).is_some() {
                return;
            }
            let ttl = self.next_ban_length(&mut offences, client);
            let banned = self.ban_locally(
                self.client_net(ip),
                ttl,
                &format!("too many {}", kind.as_str().replace('_', " ")),
                &format!("auto:{}", kind.as_str()),
            );
            // A ban the list did not keep is no offence served: the next
            // one is not made longer by it.
            if banned.is_none() {
                if let Some((count, _)) = offences.get_mut(&client) {
                    *count = count.saturating_sub(1);
                }
            }
            banned
        };
        let Some(ban) = banned else { return };
        if self.redis.is_some() {
            let this = self.clone();
            tokio::spawn(async move { this.share(&ban).await });
        }
    }

    /// The ban length for this client's next offence, counting it.
    fn next_ban_length(&self, offences: &mut HashMap<IpAddr, (u32, u64)>, ip: IpAddr) -> Duration {
        let now = now_ms();
        let forget = u64::try_from(self.config.forget_after.as_millis()).unwrap_or(u64::MAX);
        if offences.len() >= self.config.max_tracked && !offences.contains_key(&ip) {
            offences.retain(|_, (_, last)| now.saturating_sub(*last) < forget);
            if offences.len() >= self.config.max_tracked {
                // Full of offences still remembered: forget the oldest eighth
                // at once, so that a flood of new offenders costs one scan
                // per eighth of the table, not one each under the lock. Just
                // an eighth: of those offending in the same millisecond as
                // the eighth's newest, only as many as make it up (a flood
                // within one millisecond would otherwise clear the table).
                let mut lasts: Vec<u64> = offences.values().map(|(_, last)| *last).collect();
                let k = (lasts.len() / 8).max(1);
                let (older, cut, _) = lasts.select_nth_unstable(k - 1);
                let cut = *cut;
                let mut ties = k - older.iter().filter(|l| **l < cut).count();
                offences.retain(|_, (_, last)| match (*last).cmp(&cut) {
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal if ties > 0 => {
                        ties -= 1;
                        false
                    }
                    _ => true,
                });
            }
        }
        let entry = offences.entry(ip).or_insert((0, now));
        if now.saturating_sub(entry.1) >= forget {
            entry.0 = 0;
        }
        let n = entry.0 as usize;
        *entry = (entry.0.saturating_add(1), now);
        let lengths = &self.config.durations;
        lengths.get(n.min(lengths.len().saturating_sub(1))).map_or(Duration::from_secs(60), |d| **d)
    }

    /// `<prefix>ban:<ip>` for one address, `<prefix>ban:<ip>/<len>` for a network.
    fn redis_key(&self, net: IpNet) -> String {
        let prefix = self.redis.as_ref().map_or("", |r| r.key_prefix());
        match ban_target(net) {
            (ip, None) => format!("{prefix}ban:{ip}"),
            (ip, Some(len)) => format!("{prefix}ban:{ip}/{len}"),
        }
    }

    fn channel(&self) -> String {
        format!("{}bans", self.redis.as_ref().map_or("", |r| r.key_prefix()))
    }

    /// Loads every ban from Redis, replacing the local list's view of them;
    /// drops the bans Redis no longer has, but writes there the unexpired bans
    /// this instance made while Redis was unreachable.
    async fn resync(&self) -> redis::RedisResult<usize> {
        let Some(mut c) = self.redis.as_ref().and_then(RedisStore::connection) else { return Ok(0) };
        self.share_lifts(&mut c).await?;
        let pattern = format!("{}ban:*", self.redis.as_ref().map_or("", |r| r.key_prefix()));
        let (keys, complete) = c.scan_keys(&pattern, self.config.max_tracked).await?;
        let mut loaded = 0;
        for chunk in keys.chunks(200) {
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query_async(&mut c).await?;
            for v in values.into_iter().flatten() {
                if let Ok(ban) = serde_json::from_str::<Ban>(&v) {
                    loaded += usize::from(self.insert_local(ban, false));
                }
            }
        }
        // Bans lifted elsewhere while we were not listening (or expired) go;
        // bans made here that Redis never had are written there now. A ban
        // missing from a scan cut off at `max_tracked` may just not have been
        // reached: only a complete scan says it was lifted.
        let live: std::collections::HashSet<String> = keys.into_iter().collect();
        let now = now_ms();
        let (mut stale, mut unshared) = (Vec::new(), Vec::new());
        {
            let bans = self.bans.read().unwrap_or_else(|e| e.into_inner());
            for (net, held) in &bans.map {
                if held.unshared && held.ban.until_ms > now {
                    unshared.push(held.ban.clone());
                } else if complete && !live.contains(&self.redis_key(*net)) {
                    stale.push(*net);
                }
            }
        }
        for net in stale {
            self.remove_local(net);
        }
        for ban in &unshared {
            self.share(ban).await;
        }
        Ok(loaded)
    }

    /// Subscribes to announcements and re-reads the list every 30 s (and at once
    /// after any reconnect), for as long as the process runs.
    fn spawn_sync(self: Arc<Self>) {
        let Some(store) = self.redis.clone() else { return };
        tokio::spawn(async move {
            loop {
                if !store.is_available() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                match store.pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(self.channel()).await.is_ok() {
                            if let Err(e) = self.resync().await {
                                tracing::warn!(error = %e, "ban resync failed");
                            }
                            self.listen(&mut pubsub, &store).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "ban subscription failed"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    async fn listen(&self, pubsub: &mut redis::aio::PubSub, store: &RedisStore) {
        use futures_util::StreamExt;
        let mut resync = tokio::time::interval(Duration::from_secs(30));
        resync.tick().await;
        loop {
            let msg = {
                let mut stream = pubsub.on_message();
                tokio::select! {
                    m = stream.next() => m,
                    _ = resync.tick() => {
                        drop(stream);
                        if !store.is_available() { return; }
                        if let Err(e) = self.resync().await {
                            tracing::warn!(error = %e, "ban resync failed");
                            return;
                        }
                        continue;
                    }
                }
            };
            let Some(msg) = msg else { return };
            let Ok(payload) = msg.get_payload::<String>() else { continue };
            match serde_json::from_str::<Announcement>(&payload) {
                Ok(Announcement::Add { ban }) => {
                    self.insert_local(ban, false);
                }
                Ok(Announcement::Remove { ip, prefix_len }) => {
                    if let Some(net) = target_net(ip, prefix_len) {
                        self.remove_local(net);
                    }
                }
                Err(_) => tracing::debug!("ignored a malformed ban announcement"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn list(threshold: u64) -> Arc<BanList> {
        let cfg = BansConfig {
            after_rate_limited: threshold,
            durations: vec![Duration::from_secs(60).into(), Duration::from_secs(600).into()],
            max_tracked: 10,
            ..BansConfig::default()
        };
        BanList::new(&cfg, ClientGrouping::default(), None, Arc::new(Metrics::new()))
    }

    /// More bans in Redis than `max_tracked`: the scan stops early, and a
    /// local ban it did not reach is kept (it was not lifted). Needs
    /// `RAMPART_TEST_REDIS_URL`.
    #[tokio::test]
    async fn a_truncated_scan_lifts_nothing() {
        use crate::limit::redis::{RedisSettings, RedisStore};
        let Ok(url) = std::env::var("RAMPART_TEST_REDIS_URL") else {
            println!("skipped: RAMPART_TEST_REDIS_URL not set (scripts/test sets it)");
            return;
        };
        let prefix = format!("rampart-test:bans-{}:", uuid::Uuid::now_v7().simple());
        let store = RedisStore::new(RedisSettings { key_prefix: prefix.clone(), ..RedisSettings::new(&url) }).unwrap();
        for _ in 0..500 {
            if store.is_available() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cfg = BansConfig { max_tracked: 3, ..BansConfig::default() };
        let bans = BanList::new(&cfg, ClientGrouping::default(), Some(store.clone()), Arc::new(Metrics::new()));
        // Ours ends last, so loading the others never evicts it.
        let ours: IpAddr = "203.0.113.7".parse().unwrap();
        bans.add(ours, Duration::from_secs(7200), "test", "manual").await;
        let mut c = store.connection().unwrap();
        // Many bans made elsewhere: the first SCAN batch reaches `max_tracked`.
        let until_ms = now_ms() + 3_600_000;
        let mut pipe = redis::pipe();
        for i in 0..5_000u32 {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            let ban = Ban { ip, prefix_len: None, until_ms, reason: "x".into(), source: "manual".into() };
            pipe.cmd("SET")
                .arg(format!("{prefix}ban:{ip}"))
                .arg(serde_json::to_string(&ban).unwrap())
                .arg("PX")
                .arg(60_000)
                .ignore();
        }
        let () = pipe.query_async(&mut c).await.unwrap();
        bans.resync().await.unwrap();
        assert!(bans.banned(ours).is_some(), "a ban the truncated scan did not reach was dropped");
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(format!("{prefix}ban:{ours}")).query_async(&mut c).await;
    }

    #[tokio::test]
    async fn strikes_escalate_to_bans() {
        let bans = list(3);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            bans.strike(ip, Strike::RateLimited);
        }
        tokio::task::yield_now().await;
        assert!(bans.banned(ip).is_none(), "threshold not yet exceeded");
        bans.strike(ip, Strike::RateLimited);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let ban = bans.banned(ip).expect("banned after exceeding the threshold");
        assert_eq!(ban.source, "auto:rate_limited");
        assert!(ban.until_ms <= now_ms() + 60_000);
        // The second offence gets the next, longer ban.
        let mut offences = bans.offences.lock().unwrap();
        assert_eq!(bans.next_ban_length(&mut offences, ip), Duration::from_secs(600));
        assert_eq!(bans.next_ban_length(&mut offences, ip), Duration::from_secs(600), "the last length repeats");
    }

    /// Refusals that race past the threshold together (each worker thread
    /// striking at once) are one offence: one ban, of the first length.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_strikes_make_one_ban_of_the_first_length() {
        let cfg = BansConfig {
            after_rate_limited: 3,
            durations: vec![
                Duration::from_secs(60).into(),
                Duration::from_secs(600).into(),
                Duration::from_secs(3600).into(),
            ],
            max_tracked: 10,
            ..BansConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let bans = BanList::new(&cfg, ClientGrouping::default(), None, metrics.clone());
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let start = std::sync::Barrier::new(8);
        let handle = tokio::runtime::Handle::current();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let _runtime = handle.enter();
                    start.wait();
                    for _ in 0..20 {
                        bans.strike(ip, Strike::RateLimited);
                    }
                });
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let ban = bans.banned(ip).expect("banned");
        assert!(ban.until_ms <= now_ms() + 60_000, "the first offence's length: {ban:?}");
        assert!(metrics.render().contains("rampart_bans_added_total{source=\"auto\"} 1\n"), "one ban");
        let mut offences = bans.offences.lock().unwrap();
        assert_eq!(bans.next_ban_length(&mut offences, ip), Duration::from_secs(600), "one offence counted");
    }

    #[tokio::test]
    async fn manual_bans_expire_and_lift() {
        let bans = list(0);
        let ip: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        bans.add(ip, Duration::from_millis(50), "test", "manual").await;
        assert!(bans.banned("198.51.100.1".parse().unwrap()).is_some(), "mapped addresses are canonical");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(bans.banned(ip).is_none());
        bans.add(ip, Duration::from_secs(60), "test", "manual").await;
        assert!(bans.remove(ip).await);
        assert!(bans.list().is_empty());
    }

    /// Full, the list gives up automatic bans before an operator's.
    #[tokio::test]
    async fn a_full_list_keeps_manual_bans() {
        let cfg = BansConfig { max_tracked: 2, ..BansConfig::default() };
        let bans = BanList::new(&cfg, ClientGrouping::default(), None, Arc::new(Metrics::new()));
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        bans.add(ip("192.0.2.1"), Duration::from_secs(60), "operator", "manual").await;
        bans.add(ip("192.0.2.2"), Duration::from_secs(3600), "flood", "auto:rate_limited").await;
        // A later automatic ban replaces the automatic one, though that one
        // ends later than the manual ban.
        bans.add(ip("192.0.2.3"), Duration::from_secs(3600), "flood", "auto:rate_limited").await;
        assert!(bans.banned(ip("192.0.2.1")).is_some(), "the manual ban was pushed out");
        assert!(bans.banned(ip("192.0.2.2")).is_none());
        assert!(bans.banned(ip("192.0.2.3")).is_some());
        // A manual ban goes before nothing manual while an automatic is left.
        bans.add(ip("192.0.2.4"), Duration::from_secs(60), "operator", "manual").await;
        assert!(bans.banned(ip("192.0.2.1")).is_some() && bans.banned(ip("192.0.2.4")).is_some());
        assert!(bans.banned(ip("192.0.2.3")).is_none());
        // Full of manual bans, an automatic one is not kept, and not
        // reported as made.
        let sink = AuditSink::disabled(Arc::new(Metrics::new()));
        let audited = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = audited.clone();
        sink.subscribe(move |_| {
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        bans.set_audit(sink);
        let dropped = bans.add(ip("192.0.2.5"), Duration::from_secs(60), "flood", "auto:rate_limited").await;
        assert!(dropped.is_none(), "a ban not kept was reported as added");
        assert!(bans.banned(ip("192.0.2.5")).is_none());
        assert_eq!(audited.load(std::sync::atomic::Ordering::Relaxed), 0, "a ban not kept was audited");
        assert!(bans.banned(ip("192.0.2.1")).is_some() && bans.banned(ip("192.0.2.4")).is_some());
    }

    /// An automatic ban the list (full of manual bans) did not keep does
    /// not count as an offence: the client's next ban is still its first.
    #[tokio::test]
    async fn a_ban_not_kept_is_no_offence() {
        let cfg = BansConfig {
            after_rate_limited: 1,
            durations: vec![Duration::from_secs(60).into(), Duration::from_secs(600).into()],
            max_tracked: 1,
            ..BansConfig::default()
        };
        let bans = BanList::new(&cfg, ClientGrouping::default(), None, Arc::new(Metrics::new()));
        let ip = |i: u8| IpAddr::from([198, 51, 100, i]);
        bans.add(ip(1), Duration::from_secs(3600), "operator", "manual").await.unwrap();
        for _ in 0..3 {
            bans.strike(ip(2), Strike::RateLimited);
        }
        assert!(bans.banned(ip(2)).is_none(), "kept past a full list of manual bans");
        let offences = bans.offences.lock().unwrap().get(&ip(2)).map_or(0, |(n, _)| *n);
        assert_eq!(offences, 0);
    }

    #[tokio::test]
    async fn memory_is_bounded() {
        let bans = list(1);
        for i in 0..100u32 {
            bans.add(IpAddr::from(i.to_be_bytes()), Duration::from_secs(60 + u64::from(i)), "x", "manual").await;
        }
        assert_eq!(bans.list().len(), 10);
    }

    #[test]
    fn offences_stay_bounded_and_a_repeat_offender_escalates() {
        let bans = list(1);
        let mut offences = HashMap::new();
        for i in 0..100u32 {
            bans.next_ban_length(&mut offences, IpAddr::from(i.to_be_bytes()));
            assert!(offences.len() <= 10, "{}", offences.len());
        }
        let last = IpAddr::from(99u32.to_be_bytes());
        assert_eq!(bans.next_ban_length(&mut offences, last), Duration::from_secs(600), "its second offence");
    }

    /// Full of offences from one millisecond, the table forgets an eighth
    /// of them (here one), not all.
    #[test]
    fn a_full_table_of_one_millisecond_forgets_only_an_eighth() {
        let bans = list(1);
        let now = now_ms();
        let mut offences: HashMap<IpAddr, (u32, u64)> =
            (0..10u32).map(|i| (IpAddr::from(i.to_be_bytes()), (1, now))).collect();
        bans.next_ban_length(&mut offences, "192.0.2.200".parse().unwrap());
        assert_eq!(offences.len(), 10, "one forgotten, one added");
        assert_eq!(offences.values().filter(|(count, _)| *count == 1).count(), 10);
    }

    /// Strikes from any addresses of one IPv6 /64 count together, and the
    /// ban they earn covers the /64, so rotating addresses escapes neither.
    #[tokio::test]
    async fn an_ipv6_client_is_struck_and_banned_as_its_network() {
        let bans = list(3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for host in ["::1", "::2", "::3"] {
            bans.strike(ip(&format!("2001:db8:1:2{host}")), Strike::RateLimited);
        }
        assert!(bans.list().is_empty(), "threshold not yet exceeded");
        bans.strike(ip("2001:db8:1:2:ffff::4"), Strike::RateLimited);
        let ban = bans.banned(ip("2001:db8:1:2:abcd::99")).expect("the whole /64 is banned");
        assert_eq!(
            (ban.ip, ban.prefix_len, ban.target()),
            (ip("2001:db8:1:2::"), Some(64), "2001:db8:1:2::/64".into())
        );
        assert_eq!(bans.list(), std::slice::from_ref(&ban));
        assert!(bans.banned(ip("2001:db8:1:3::1")).is_none(), "another /64");
        let json = serde_json::to_value(&ban).unwrap();
        assert_eq!((json["ip"].as_str(), json["prefix_len"].as_u64()), (Some("2001:db8:1:2::"), Some(64)));
        // Naming any address of it lifts it.
        assert!(bans.remove(ip("2001:db8:1:2::77")).await);
        assert!(bans.banned(ip("2001:db8:1:2::1")).is_none());
        assert!(bans.list().is_empty());
    }

    /// A manual ban is of the one address named, IPv6 too, and is stored as before.
    #[tokio::test]
    async fn a_manual_ban_of_an_ipv6_address_is_of_that_address() {
        let bans = list(0);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ban = bans.add(ip("2001:db8:1:2::5"), Duration::from_secs(60), "test", "manual").await.unwrap();
        assert_eq!((ban.prefix_len, ban.target()), (None, "2001:db8:1:2::5".into()));
        assert!(!serde_json::to_string(&ban).unwrap().contains("prefix_len"), "the JSON is unchanged");
        assert!(bans.banned(ip("2001:db8:1:2::5")).is_some());
        assert!(bans.banned(ip("2001:db8:1:2::6")).is_none(), "not its /64");
        // A client ban of the same address's /64 is another ban beside it.
        bans.add_client(ip("2001:db8:1:2::6"), Duration::from_secs(60), "spike", "auto:spike").await;
        assert_eq!(bans.list().len(), 2);
        assert!(bans.banned(ip("2001:db8:1:2::7")).is_some());
        assert!(bans.remove(ip("2001:db8:1:2::5")).await, "both apply to it");
        assert!(bans.list().is_empty());
        // IPv4 clients are single addresses.
        let v4 = bans.add_client(ip("::ffff:198.51.100.7"), Duration::from_secs(60), "x", "auto:spike").await.unwrap();
        assert_eq!((v4.ip, v4.prefix_len), (ip("198.51.100.7"), None));
        assert!(bans.banned(ip("198.51.100.8")).is_none());
    }

    /// Bans from Redis are checked: a network of another length (another
    /// instance's `ipv6_prefix`) applies; an impossible one is ignored. Both
    /// announcement forms parse.
    #[test]
    fn bans_learnt_from_redis_are_checked() {
        let bans = list(0);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let learnt = |json: &str| bans.insert_local(serde_json::from_str(json).unwrap(), false);
        learnt(
            r#"{"ip":"2001:db8:5::","prefix_len":48,"until_ms":99999999999999,"reason":"x","source":"auto:rate_limited"}"#,
        );
        learnt(r#"{"ip":"198.51.100.0","prefix_len":24,"until_ms":99999999999999,"reason":"x","source":"manual"}"#);
        learnt(r#"{"ip":"2001:db8::","prefix_len":0,"until_ms":99999999999999,"reason":"x","source":"manual"}"#);
        learnt(r#"{"ip":"203.0.113.4","until_ms":99999999999999,"reason":"x","source":"manual"}"#);
        assert!(bans.banned(ip("2001:db8:5:77::1")).is_some(), "a /48 under a /64 config");
        assert!(bans.banned(ip("198.51.100.1")).is_none() && bans.banned(ip("2001:db8:6::1")).is_none());
        assert_eq!(bans.list().len(), 2, "the impossible ones were ignored");
        for (json, prefix_len) in [
            (r#"{"op":"remove","ip":"203.0.113.4"}"#, None),
            (r#"{"op":"remove","ip":"2001:db8:5::","prefix_len":48}"#, Some(48)),
        ] {
            let parsed = serde_json::from_str::<Announcement>(json);
            assert!(matches!(parsed, Ok(Announcement::Remove { prefix_len: p, .. }) if p == prefix_len), "{json}");
        }
    }
}
