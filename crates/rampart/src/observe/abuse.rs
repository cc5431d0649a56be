//! Abuse detection in bounded memory: the heaviest clients (space-saving
//! top-k over one-minute windows) and a spike detector per class of event
//! ([`SpikeClass`]: all requests, rate-limit refusals, authentication failures,
//! blocked inputs), each with its own EWMA baseline, ticking once a second off
//! the request path. A flood of failed logins is a spike of its class even
//! when it is lost in the noise of the total request rate.
//!
//! Memory is fixed: per class one counter, one baseline and one top-k table of
//! `top_k` clients. A spike is logged as an audit event naming its class and
//! counted in `rampart_spikes_total{class}`; with `ban_on_spike` the client
//! that surged most in the spiking second is banned when what it added is at
//! least a tenth of the second's events, what it added beyond its own usual
//! rate a tenth of the spike's excess over the baseline, and its count a tenth
//! of the window's. Heavy hitters by requests are exported as
//! `rampart_top_client_requests{rank,ip}` (at most `top_k` series, refreshed
//! every second) and served by `rampart top`.
//!
//! A client is an IPv4 address or an IPv6 network of `[server] ipv6_prefix`
//! bits (see [`ClientGrouping`]): a client spreading its requests over the
//! addresses of its /64 is one heavy hitter, and a ban on spike bans the network.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rampart_core::abuse::{SpaceSaving, SpikeDetector};
use rampart_core::client_ip::ClientGrouping;
use rampart_core::config::model::AbuseConfig;
use serde::Serialize;

use super::audit::{AuditEvent, AuditKind, AuditSink};
use super::Metrics;
use crate::limit::bans::{BanList, Strike};

/// Seconds per heavy-hitter window.
const WINDOW_TICKS: u64 = 60;

/// One heavy hitter.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopClient {
    /// The client's address; with `prefix_len`, the first of its IPv6 network.
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// Estimated requests in the window (an overestimate by at most `error`).
    pub requests: u64,
    pub error: u64,
}

impl TopClient {
    /// `ip`, or `ip/prefix_len` for a network: the client, for people.
    pub fn target(&self) -> String {
        match self.prefix_len {
            Some(len) => format!("{}/{len}", self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// What a spike detector counts. Each class has its own baseline: a class
/// spikes against its own history, not against the others'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpikeClass {
    /// Every request that reached the access lists.
    Requests,
    /// Requests refused by a rate limit or budget.
    RateLimited,
    /// Failed authentications (bad tokens, keys, passwords, codes).
    AuthFailures,
    /// Requests blocked by inspection.
    BlockedInputs,
}

impl SpikeClass {
    pub const ALL: [Self; 4] = [Self::Requests, Self::RateLimited, Self::AuthFailures, Self::BlockedInputs];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::RateLimited => "rate_limited",
            Self::AuthFailures => "auth_failures",
            Self::BlockedInputs => "blocked_inputs",
        }
    }
}

impl From<Strike> for SpikeClass {
    fn from(s: Strike) -> Self {
        match s {
            Strike::RateLimited => Self::RateLimited,
            Strike::AuthFailure => Self::AuthFailures,
            Strike::BlockedInput => Self::BlockedInputs,
        }
    }
}

/// One class's counts: events this tick, events this window, the heaviest
/// addresses this window.
struct ClassCounts {
    tick: AtomicU64,
    window: AtomicU64,
    top: Mutex<SpaceSaving<IpAddr>>,
    /// The top clients' sure counts (estimate less error) at the end of the
    /// last tick: what each added in the current second is its count now
    /// less this. At most `top_k` entries.
    at_last_tick: Mutex<std::collections::HashMap<IpAddr, u64>>,
    /// Seconds closed in the current window (before the one being closed).
    ticks: AtomicU64,
    /// The last window's top clients' usual events per second (rounded
    /// up). At most `top_k` entries.
    usual: Mutex<std::collections::HashMap<IpAddr, u64>>,
}

pub struct AbuseMonitor {
    classes: [ClassCounts; SpikeClass::ALL.len()],
    detectors: Mutex<Option<[SpikeDetector; SpikeClass::ALL.len()]>>,
    last_window: Mutex<Vec<TopClient>>,
    config: AbuseConfig,
    metrics: Arc<Metrics>,
    bans: Arc<BanList>,
    /// The ban list's: what a spike ban bans is what was counted.
    clients: ClientGrouping,
    /// Set by the gateway once its audit log runs (see `set_audit`).
    audit: OnceLock<Arc<AuditSink>>,
}

impl AbuseMonitor {
    /// The monitor, ticking once a second when a Tokio runtime runs.
    pub fn new(config: &AbuseConfig, metrics: Arc<Metrics>, bans: Arc<BanList>) -> Arc<Self> {
        let monitor = Self::without_ticks(config, metrics, bans);
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&monitor);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    let Some(m) = weak.upgrade() else { return };
                    n += 1;
                    m.tick(n.is_multiple_of(WINDOW_TICKS)).await;
                }
            });
        }
        monitor
    }

    /// The monitor without its clock: [`AbuseMonitor::tick`] runs when called.
    pub fn without_ticks(config: &AbuseConfig, metrics: Arc<Metrics>, bans: Arc<BanList>) -> Arc<Self> {
        let class = || ClassCounts {
            tick: AtomicU64::new(0),
            window: AtomicU64::new(0),
            top: Mutex::new(SpaceSaving::new(config.top_k)),
            at_last_tick: Mutex::new(std::collections::HashMap::new()),
            ticks: AtomicU64::new(0),
            usual: Mutex::new(std::collections::HashMap::new()),
        };
        Arc::new(Self {
            classes: [class(), class(), class(), class()],
            detectors: Mutex::new(None),
            last_window: Mutex::new(Vec::new()),
            config: config.clone(),
            metrics,
            clients: bans.clients(),
            bans,
            audit: OnceLock::new(),
        })
    }

    /// Records spikes in `sink` from now on. Only the first call has an effect.
    pub fn set_audit(&self, sink: Arc<AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// Counts one request from `ip`'s client.
    pub fn record(&self, ip: IpAddr) {
        self.record_class(SpikeClass::Requests, ip);
    }

    /// Counts one event of `class` from `ip`'s client.
    pub fn record_class(&self, class: SpikeClass, ip: IpAddr) {
        let c = &self.classes[class as usize];
        c.tick.fetch_add(1, Ordering::Relaxed);
        c.top.lock().unwrap_or_else(|e| e.into_inner()).offer(self.clients.key(ip));
    }

    /// The heavy hitters by requests of the current window, or of the last full
    /// window while the current one has no data yet.
    pub fn top(&self) -> Vec<TopClient> {
        let mut out = self.top_of(SpikeClass::Requests);
        if out.is_empty() {
            out = self.last_window.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        out
    }

    fn top_of(&self, class: SpikeClass) -> Vec<TopClient> {
        let top = self.classes[class as usize].top.lock().unwrap_or_else(|e| e.into_inner()).top();
        top.into_iter()
            .map(|(ip, requests, error)| TopClient { ip, prefix_len: self.clients.network_len(ip), requests, error })
            .collect()
    }

    /// Closes one second: feeds each class's rate to its detector, reports
    /// spikes, and refreshes the heavy-hitter metric; `rotate` also starts a
    /// new heavy-hitter window. Returns the classes that spiked.
    pub async fn tick(&self, rotate: bool) -> Vec<SpikeClass> {
        let mut spiked = Vec::new();
        let mut baselines = [0.0; SpikeClass::ALL.len()];
        {
            let mut detectors = self.detectors.lock().unwrap_or_else(|e| e.into_inner());
            let detectors = detectors.get_or_insert_with(|| {
                SpikeClass::ALL.map(|c| SpikeDetector::new(self.config.spike_factor, self.config.min_rate(c.as_str())))
            });
            for class in SpikeClass::ALL {
                let c = &self.classes[class as usize];
                let rate = c.tick.swap(0, Ordering::Relaxed);
                c.window.fetch_add(rate, Ordering::Relaxed);
                if detectors[class as usize].observe(rate as f64) {
                    spiked.push((class, rate));
                }
                baselines[class as usize] = detectors[class as usize].baseline();
            }
        }
        for &(class, rate) in &spiked {
            self.report_spike(class, rate, baselines[class as usize]).await;
        }
        for class in SpikeClass::ALL {
            let sure: std::collections::HashMap<IpAddr, u64> =
                self.top_of(class).iter().map(|t| (t.ip, t.requests.saturating_sub(t.error))).collect();
            let c = &self.classes[class as usize];
            let ticks = c.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            if rotate {
                *c.usual.lock().unwrap_or_else(|e| e.into_inner()) =
                    sure.iter().map(|(ip, n)| (*ip, n.div_ceil(ticks))).collect();
            }
            *c.at_last_tick.lock().unwrap_or_else(|e| e.into_inner()) = sure;
        }
        let top = self.top();
        self.metrics.set_top_clients(&top.iter().map(|t| (t.target(), t.requests)).collect::<Vec<_>>());
        if rotate {
            *self.last_window.lock().unwrap_or_else(|e| e.into_inner()) = self.top_of(SpikeClass::Requests);
            for c in &self.classes {
                c.top.lock().unwrap_or_else(|e| e.into_inner()).clear();
                c.at_last_tick.lock().unwrap_or_else(|e| e.into_inner()).clear();
                c.window.store(0, Ordering::Relaxed);
                c.ticks.store(0, Ordering::Relaxed);
            }
        }
        spiked.into_iter().map(|(class, _)| class).collect()
    }

    async fn report_spike(&self, class: SpikeClass, rate: u64, baseline: f64) {
        let top = self.top_of(class);
        self.metrics.spike(class.as_str());
        tracing::warn!(
            target: "rampart::audit",
            event = "traffic_spike",
            class = class.as_str(),
            rate,
            baseline,
            top_ip = %top.first().map(TopClient::target).unwrap_or_default(),
            "spike of {}",
            class.as_str()
        );
        if let Some(audit) = self.audit.get() {
            let mut event = AuditEvent::new(AuditKind::TrafficSpike)
                .detail("class", class.as_str())
                .detail("rate", rate)
                .detail("baseline", baseline);
            if let Some(t) = top.first() {
                event = event.ip(t.ip).detail("top_requests", t.requests);
                if let Some(len) = t.prefix_len {
                    event = event.detail("prefix_len", len);
                }
            }
            audit.record(event);
        }
        if self.config.ban_on_spike {
            let counts = &self.classes[class as usize];
            let total = counts.window.load(Ordering::Relaxed).max(1);
            // Judged on what the client surely sent (the count less what it
            // may have inherited in the table), not on the overestimate: a
            // client new to a full table inherits the count it displaces.
            // And on the spiking second itself: the client that added the
            // most in it, if that is a tenth of the second's events. The
            // window's heaviest client alone would be a steady bystander
            // whenever a spike is spread over many addresses.
            // And on what it added beyond its own usual rate (this window's
            // so far, or the last window's, whichever is higher), which must
            // be a tenth of the spike's excess over the baseline: a steady
            // heavy client that merely carried on during a spike others made
            // is no culprit, one that surged is.
            let before = counts.at_last_tick.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let last_window = counts.usual.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let ticks = counts.ticks.load(Ordering::Relaxed);
            let added = |t: &TopClient| {
                t.requests.saturating_sub(t.error).saturating_sub(before.get(&t.ip).copied().unwrap_or(0))
            };
            let usual = |t: &TopClient| {
                let this_window = if ticks == 0 { 0 } else { before.get(&t.ip).copied().unwrap_or(0).div_ceil(ticks) };
                this_window.max(last_window.get(&t.ip).copied().unwrap_or(0))
            };
            let surge = |t: &TopClient| added(t).saturating_sub(usual(t));
            // Whole events over the baseline (a float in [0, u64::MAX]).
            let excess = rate.saturating_sub(baseline.ceil().clamp(0.0, u64::MAX as f64) as u64).max(1);
            let culprit = top.iter().max_by_key(|t| surge(t)).filter(|t| {
                added(t).saturating_mul(10) >= rate.max(1)
                    && surge(t).saturating_mul(10) >= excess
                    && t.requests.saturating_sub(t.error).saturating_mul(10) >= total
            });
            if let Some(t) = culprit {
                if self.bans.banned(t.ip).is_none() {
                    let reason = format!("spike of {}", class.as_str().replace('_', " "));
                    self.bans.add_client(t.ip, Duration::from_secs(600), &reason, "auto:spike").await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rampart_core::config::model::BansConfig;

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, i])
    }

    fn monitor() -> (Arc<AbuseMonitor>, Arc<BanList>) {
        let config = AbuseConfig { spike_factor: 3.0, spike_min_rate: 5.0, ban_on_spike: true, ..Default::default() };
        let metrics = Arc::new(Metrics::new());
        let bans = BanList::new(&BansConfig::default(), ClientGrouping::default(), None, metrics.clone());
        (AbuseMonitor::without_ticks(&config, metrics, bans.clone()), bans)
    }

    /// One second of steady traffic: 100 requests from 50 addresses, 2 failed logins.
    fn steady(m: &AbuseMonitor) {
        for i in 0..100 {
            m.record(ip(i % 50));
        }
        m.record_class(SpikeClass::AuthFailures, ip(1));
        m.record_class(SpikeClass::AuthFailures, ip(2));
    }

    #[tokio::test]
    async fn a_class_spikes_against_its_own_baseline_while_the_others_stay_flat() {
        let (m, bans) = monitor();
        for _ in 0..5 {
            steady(&m);
            assert!(m.tick(false).await.is_empty());
        }
        // Credential stuffing hidden in the usual request rate: 100 requests,
        // 40 of them failed logins from one address.
        let attacker = ip(200);
        for i in 0..60 {
            m.record(ip(i % 50));
        }
        for _ in 0..40 {
            m.record(attacker);
            m.record_class(SpikeClass::AuthFailures, attacker);
        }
        assert_eq!(m.tick(false).await, [SpikeClass::AuthFailures], "requests stayed at 100/s");
        let ban = bans.banned(attacker).expect("the top address of the spiking class is banned");
        assert_eq!((ban.source.as_str(), ban.reason.as_str()), ("auto:spike", "spike of auth failures"));

        // The reverse: a flood of plain requests, failures as usual.
        for _ in 0..3 {
            steady(&m);
            m.tick(false).await;
        }
        steady(&m);
        for _ in 0..900 {
            m.record(ip(201));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        assert_eq!(m.top()[0].ip, ip(201), "the heavy hitter leads the top list");
    }

    /// A client spreading its requests over the addresses of its /64 is one
    /// heavy hitter, and a spike ban covers the /64.
    #[tokio::test]
    async fn an_ipv6_client_is_one_heavy_hitter() {
        let (m, bans) = monitor();
        for i in 0..30u16 {
            m.record(IpAddr::from([0x2001, 0xdb8, 1, 2, i, 0, 0, 1]));
        }
        for _ in 0..20 {
            m.record(ip(1));
        }
        let top = m.top();
        assert_eq!(top[0].target(), "2001:db8:1:2::/64");
        assert_eq!((top[0].requests, top[1].requests, top[1].prefix_len), (30, 20, None));
        let json = serde_json::to_value(&top).unwrap();
        assert_eq!((json[0]["prefix_len"].as_u64(), json[1].get("prefix_len")), (Some(64), None));

        for _ in 0..5 {
            steady(&m);
            m.tick(false).await;
        }
        for i in 0..900u16 {
            m.record(IpAddr::from([0x2001, 0xdb8, 7, 7, i, i, 0, 1]));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        let ban = bans.banned(IpAddr::from([0x2001, 0xdb8, 7, 7, 0xffff, 0, 0, 9])).expect("the /64 is banned");
        assert_eq!(ban.target(), "2001:db8:7:7::/64");
    }

    /// A flood from many addresses, each sending little, bans nobody: in a
    /// small top-k table the newest address inherits the count it displaces,
    /// and that inherited count is not its own.
    #[tokio::test]
    async fn a_spread_flood_bans_no_one_for_an_inherited_count() {
        let config =
            AbuseConfig { spike_factor: 3.0, spike_min_rate: 5.0, ban_on_spike: true, top_k: 2, ..Default::default() };
        let metrics = Arc::new(Metrics::new());
        let bans = BanList::new(&BansConfig::default(), ClientGrouping::default(), None, metrics.clone());
        let m = AbuseMonitor::without_ticks(&config, metrics, bans.clone());
        for _ in 0..5 {
            steady(&m);
            m.tick(false).await;
        }
        for i in 0..900u32 {
            m.record(IpAddr::from((0xc633_6400 + i).to_be_bytes()));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        let top = m.top();
        assert!(top[0].requests * 10 >= 1_400, "the estimate alone would have banned: {top:?}");
        assert!(bans.list().is_empty(), "banned for an inherited count: {:?}", bans.list());
    }

    /// A steady heavy client (a partner, a shared NAT address) is not banned
    /// for a spike others caused: the ban goes to who added to the spiking
    /// second, and here no one added a tenth of it.
    #[tokio::test]
    async fn a_steady_heavy_client_is_not_banned_for_a_spread_spike() {
        let (m, bans) = monitor();
        for _ in 0..5 {
            for _ in 0..60 {
                m.record(ip(1));
            }
            for i in 0..40 {
                m.record(ip(10 + i));
            }
            assert!(m.tick(false).await.is_empty());
        }
        // The partner carries on as usual (a tenth of the spiking second)
        // while many addresses send a little each.
        for _ in 0..60 {
            m.record(ip(1));
        }
        for i in 0..300u32 {
            m.record(IpAddr::from((0xcb00_7100 + i).to_be_bytes()));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        assert!(m.top()[0].ip == ip(1), "the partner is the window's heaviest client");
        assert!(bans.list().is_empty(), "a bystander was banned: {:?}", bans.list());
        // Who does add a tenth of a spiking second is.
        for _ in 0..5 {
            for _ in 0..60 {
                m.record(ip(1));
            }
            m.tick(false).await;
        }
        for _ in 0..900 {
            m.record(ip(2));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        assert!(bans.banned(ip(2)).is_some() && bans.banned(ip(1)).is_none(), "{:?}", bans.list());
    }

    /// A heavy client that surges is the culprit, its usual rate
    /// notwithstanding, also right after a new window began (its usual rate
    /// is then the last window's).
    #[tokio::test]
    async fn a_heavy_client_that_surges_is_banned() {
        let (m, bans) = monitor();
        for n in 1..=5 {
            for _ in 0..60 {
                m.record(ip(1));
            }
            for i in 0..40 {
                m.record(ip(10 + i));
            }
            assert!(m.tick(n == 5).await.is_empty());
        }
        for _ in 0..600 {
            m.record(ip(1));
        }
        for i in 0..40 {
            m.record(ip(10 + i));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::Requests]);
        assert!(bans.banned(ip(1)).is_some(), "{:?}", bans.list());
    }

    #[test]
    fn class_names_are_the_configurable_ones() {
        assert_eq!(SpikeClass::ALL.map(SpikeClass::as_str), rampart_core::abuse::SPIKE_CLASSES);
    }

    #[tokio::test]
    async fn a_class_may_have_its_own_floor() {
        let config = AbuseConfig {
            spike_factor: 3.0,
            spike_min_rate: 100.0,
            class_min_rate: [("auth_failures".to_string(), 5.0)].into(),
            ..Default::default()
        };
        let metrics = Arc::new(Metrics::new());
        let bans = BanList::new(&BansConfig::default(), ClientGrouping::default(), None, metrics.clone());
        let m = AbuseMonitor::without_ticks(&config, metrics, bans);
        m.tick(false).await;
        for _ in 0..20 {
            m.record(ip(1));
            m.record_class(SpikeClass::AuthFailures, ip(1));
        }
        assert_eq!(m.tick(false).await, [SpikeClass::AuthFailures], "20 requests are under the floor of 100");
    }

    #[tokio::test]
    async fn memory_is_bounded_per_class() {
        let (m, _) = monitor();
        for i in 0..50_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            m.record(addr);
            m.record_class(SpikeClass::RateLimited, addr);
        }
        for c in &m.classes {
            assert!(c.top.lock().unwrap().len() <= m.config.top_k);
        }
    }
}
