//! What the admin API reads from and does to the running gateway, in one
//! place: the policy in force, the config it came from with secrets redacted,
//! live statistics, readiness, and reloading the config file (the same path
//! as SIGHUP, so both are validated, audited and counted alike).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rampart_core::config::Policy;

use crate::app::{load_policy, load_policy_text, reload, SharedRuntime};
use crate::limit::LimitState;
use crate::observe::audit::AuditSink;
use crate::observe::health::Health;
use crate::observe::Metrics;

pub struct Console {
    /// Weak, like `limits`: the runtime's stack holds the limit state, which
    /// holds this console.
    shared: std::sync::Weak<arc_swap::ArcSwap<crate::app::Runtime>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Weak: the limit state holds this console.
    limits: Weak<LimitState>,
    audit: Arc<AuditSink>,
    source: Mutex<Source>,
    /// Held across a whole reload (read, build, install), so that a SIGHUP
    /// and `POST /admin/reload` arriving together cannot install an older
    /// read over a newer one.
    reloading: Mutex<()>,
}

#[derive(Default)]
struct Source {
    /// The config file, when the gateway was started from one.
    path: Option<PathBuf>,
    /// The running config, redacted (JSON), as of the last successful load.
    redacted: Option<serde_json::Value>,
}

/// Why a reload did not happen.
#[derive(Debug)]
pub enum ReloadError {
    /// The gateway was not started from a file.
    NoSource,
    /// The new config is invalid (or could not be installed); the running
    /// policy stays. The message names fields and lines, never secret values.
    Refused(String),
}

impl Console {
    pub fn new(
        shared: SharedRuntime,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        limits: &Arc<LimitState>,
        audit: Arc<AuditSink>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::downgrade(&shared),
            metrics,
            health,
            limits: Arc::downgrade(limits),
            audit,
            source: Mutex::default(),
            reloading: Mutex::new(()),
        })
    }

    /// The policy in force (`None` once the gateway is gone).
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.shared.upgrade().map(|s| s.load().policy.clone())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Names the file the running config came from (`rampart serve -c`), and
    /// remembers its redacted form.
    pub fn set_source(&self, path: &Path) {
        let redacted = redacted_file(path);
        let mut source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        source.path = Some(path.to_owned());
        if redacted.is_some() {
            source.redacted = redacted;
        }
    }

    /// The running config with secrets redacted; `None` when the gateway was
    /// not started from a file.
    pub fn redacted_config(&self) -> Option<serde_json::Value> {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).redacted.clone()
    }

    /// Reloads the config file: installed only if valid; audited either way.
    /// Reloads run one at a time, and `/admin/config` then shows the text
    /// that was installed, not a later read of the file.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let _one_at_a_time = self.one_reload_at_a_time();
        let path = self.source.lock().unwrap_or_else(|e| e.into_inner()).path.clone();
        let Some(path) = path else { return Err(ReloadError::NoSource) };
        let (Some(limits), Some(shared)) = (self.limits.upgrade(), self.shared.upgrade()) else {
            return Err(ReloadError::Refused("the gateway is shutting down".into()));
        };
        let text = std::fs::read_to_string(&path);
        let policy = match &text {
            Ok(text) => load_policy_text(text),
            // The same error as a failed read in `load_policy`.
            Err(_) => load_policy(&path),
        };
        reload(&shared, &self.metrics, &limits, &self.audit, policy)
            .map_err(|e| ReloadError::Refused(format!("{e:#}")))?;
        let redacted = text.ok().and_then(|t| redacted_text(&t));
        self.source.lock().unwrap_or_else(|e| e.into_inner()).redacted = redacted;
        Ok(())
    }

    /// [`Console::reload`] on the blocking pool: a reload reads files and
    /// rebuilds the runtime, and waits for any reload in progress, none of
    /// which may hold up an async worker.
    pub async fn reload_off_thread(self: Arc<Self>) -> Result<(), ReloadError> {
        tokio::task::spawn_blocking(move || self.reload())
            .await
            .unwrap_or_else(|e| Err(ReloadError::Refused(format!("the reload did not finish: {e}"))))
    }

    /// Holds off other reloads (see [`Console::reload`]) while the caller
    /// installs a policy of its own ([`crate::server::Gateway::reload`]).
    pub fn one_reload_at_a_time(&self) -> std::sync::MutexGuard<'_, ()> {
        self.reloading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Samples the request rate every second until the gateway is dropped.
    pub fn spawn_sampler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::observe::stats::SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(console) = weak.upgrade() else { return };
                let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                console.metrics.live().sample(Instant::now(), unix_ms);
            }
        });
    }
}

fn redacted_file(path: &Path) -> Option<serde_json::Value> {
    redacted_text(&std::fs::read_to_string(path).ok()?)
}

fn redacted_text(text: &str) -> Option<serde_json::Value> {
    let env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| k.starts_with(rampart_core::config::env::ENV_PREFIX)).collect();
    let table = rampart_core::config::redact::redacted_config(text, &env).ok()?;
    serde_json::to_value(table).ok()
}
