//! Abuse detection in bounded memory: the heaviest client addresses (space-saving
//! top-k over one-minute windows) and a spike detector on the total request rate
//! (EWMA baseline), ticking once a second off the request path.
//!
//! A spike is logged as an audit event and counted in
//! `rampart_spikes_total`; with `ban_on_spike` the top address of the current
//! window is banned when it made at least a tenth of the window's requests.
//! Heavy hitters are exported as `rampart_top_client_requests{rank,ip}` (at most
//! `top_k` series, replaced every window) and served by `rampart top`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rampart_core::abuse::{SpaceSaving, SpikeDetector};
use rampart_core::config::model::AbuseConfig;
use serde::Serialize;

use super::audit::{AuditEvent, AuditKind, AuditSink};
use super::Metrics;
use crate::limit::bans::BanList;

/// Seconds per heavy-hitter window.
const WINDOW_TICKS: u64 = 60;

/// One heavy hitter.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopClient {
    pub ip: IpAddr,
    /// Estimated requests in the window (an overestimate by at most `error`).
    pub requests: u64,
    pub error: u64,
}

pub struct AbuseMonitor {
    current: Mutex<SpaceSaving<IpAddr>>,
    last_window: Mutex<Vec<TopClient>>,
    requests: AtomicU64,
    window_requests: AtomicU64,
    config: AbuseConfig,
    metrics: Arc<Metrics>,
    bans: Arc<BanList>,
    /// Set by the gateway once its audit log runs (see `set_audit`).
    audit: OnceLock<Arc<AuditSink>>,
}

impl AbuseMonitor {
    pub fn new(config: &AbuseConfig, metrics: Arc<Metrics>, bans: Arc<BanList>) -> Arc<Self> {
        let monitor = Arc::new(Self {
            current: Mutex::new(SpaceSaving::new(config.top_k)),
            last_window: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            window_requests: AtomicU64::new(0),
            config: config.clone(),
            metrics,
            bans,
            audit: OnceLock::new(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            let weak = Arc::downgrade(&monitor);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut detector = None;
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    let Some(m) = weak.upgrade() else { return };
                    let detector = detector
                        .get_or_insert_with(|| SpikeDetector::new(m.config.spike_factor, m.config.spike_min_rate));
                    n += 1;
                    m.tick(detector, n.is_multiple_of(WINDOW_TICKS)).await;
                }
            });
        }
        monitor
    }

    /// Records spikes in `sink` from now on. Only the first call has an effect.
    pub fn set_audit(&self, sink: Arc<AuditSink>) {
        let _ = self.audit.set(sink);
    }

    /// Counts one request from `ip`.
    pub fn record(&self, ip: IpAddr) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.current.lock().unwrap_or_else(|e| e.into_inner()).offer(ip);
    }

    /// The heavy hitters of the current window, or of the last full window while
    /// the current one has no data yet.
    pub fn top(&self) -> Vec<TopClient> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner()).top();
        let mut out: Vec<TopClient> =
            current.into_iter().map(|(ip, requests, error)| TopClient { ip, requests, error }).collect();
        if out.is_empty() {
            out = self.last_window.lock().unwrap_or_else(|e| e.into_inner()).clone();
        }
        out
    }

    async fn tick(&self, detector: &mut SpikeDetector, rotate: bool) {
        let rate = self.requests.swap(0, Ordering::Relaxed);
        self.window_requests.fetch_add(rate, Ordering::Relaxed);
        let spike = detector.observe(rate as f64);
        if spike {
            let top = self.top();
            self.metrics.spike();
            tracing::warn!(
                target: "rampart::audit",
                event = "traffic_spike",
                rate,
                baseline = detector.baseline(),
                top_ip = %top.first().map(|t| t.ip.to_string()).unwrap_or_default(),
                "request rate spike"
            );
            if let Some(audit) = self.audit.get() {
                let mut event = AuditEvent::new(AuditKind::TrafficSpike)
                    .detail("rate", rate)
                    .detail("baseline", detector.baseline());
                if let Some(t) = top.first() {
                    event = event.ip(t.ip).detail("top_requests", t.requests);
                }
                audit.record(event);
            }
            if self.config.ban_on_spike {
                let total = self.window_requests.load(Ordering::Relaxed).max(1);
                if let Some(t) = top.first().filter(|t| t.requests.saturating_mul(10) >= total) {
                    if self.bans.banned(t.ip).is_none() {
                        self.bans.add(t.ip, Duration::from_secs(600), "traffic spike", "auto:spike").await;
                    }
                }
            }
        }
        if rotate {
            let top = self.top();
            self.metrics.set_top_clients(&top.iter().map(|t| (t.ip, t.requests)).collect::<Vec<_>>());
            *self.last_window.lock().unwrap_or_else(|e| e.into_inner()) = top;
            self.current.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.window_requests.store(0, Ordering::Relaxed);
        }
    }
}
