//! Webhook alerts: when `threshold` events of one type happen within `window`,
//! a JSON document (plain, or Slack's incoming-webhook shape) is POSTed to
//! `[alerts] webhook_url`, then that rule stays quiet for `cooldown`.
//!
//! - **Counting never slows a request.** [`AlertEngine::observe`] takes one
//!   short per-rule lock, stores a timestamp and a copy of the context (at most
//!   [`MAX_CONTEXT_CHARS`] characters, in a buffer reused from call to call) and,
//!   when a rule trips, hands the alert to a bounded queue without waiting. A
//!   full queue drops the alert and counts it as failed.
//! - **Memory is bounded by the config, not the traffic.** Each rule keeps only
//!   the times of its last `threshold` events ([`EventWindow`]); the rule trips
//!   when the oldest of them is within `window` of the newest.
//! - **Delivery happens on its own task**: one attempt at a time with a 5 s
//!   timeout, retried after 0.5, 1, 2 and 4 s on connection errors, timeouts,
//!   5xx and 429 (honouring a `Retry-After` of up to 30 s), then given up and
//!   counted (`rampart_alerts_sent_total`, `rampart_alerts_failed_total`).
//! - **No secrets leave or get logged.** The webhook URL may carry a token: logs
//!   name only its host. Payloads hold the event type from config, counts, times,
//!   the host name and the caller's short context; Slack control sequences in
//!   the context (`<!channel>`, links) are escaped so a client cannot ping a
//!   channel through an alert.
//!
//! Rules are read once at start; a config reload does not change them.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use rampart::observe::alerts::EventWindow;
//!
//! // Three events within a minute trip the rule…
//! let mut window = EventWindow::new(3, Duration::from_secs(60));
//! let t0 = Instant::now();
//! assert!(!window.record(t0));
//! assert!(!window.record(t0 + Duration::from_secs(10)));
//! assert!(window.record(t0 + Duration::from_secs(20)));
//!
//! // …three spread over more than a minute do not.
//! let mut window = EventWindow::new(3, Duration::from_secs(60));
//! assert!(!window.record(t0));
//! assert!(!window.record(t0 + Duration::from_secs(40)));
//! assert!(!window.record(t0 + Duration::from_secs(80)));
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rampart_core::config::model::{AlertFormat, AlertsConfig};
use tokio::sync::mpsc;

use super::Metrics;

/// Longest context kept with an alert, in characters.
pub const MAX_CONTEXT_CHARS: usize = 200;

/// Alerts waiting for delivery. Each rule enqueues at most once per cooldown,
/// so this only fills when many rules trip while the webhook is stuck.
const QUEUE: usize = 32;
/// Attempts per alert, including the first.
const MAX_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubled before each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Time for one attempt, from connecting to the response head.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `Retry-After` we honour, so a receiver cannot park the queue.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The times of a rule's last `threshold` events: a ring that never holds more
/// than `threshold` entries, however many events arrive.
#[derive(Debug)]
pub struct EventWindow {
    times: VecDeque<Instant>,
    threshold: usize,
    window: Duration,
}

impl EventWindow {
    /// A window that trips on `threshold` events (at least 1) within `window`.
    pub fn new(threshold: u64, window: Duration) -> Self {
        let threshold = usize::try_from(threshold).unwrap_or(usize::MAX).max(1);
        // The ring grows as events come rather than up front, so a rule with a
        // huge threshold and little traffic costs little.
        Self { times: VecDeque::with_capacity(threshold.min(64)), threshold, window }
    }

    /// Records an event at `now`. True when the last `threshold` events, this
    /// one included, all happened within `window` of it.
    pub fn record(&mut self, now: Instant) -> bool {
        if self.times.len() >= self.threshold {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.times.len() >= self.threshold
            && self.times.front().is_some_and(|&oldest| now.saturating_duration_since(oldest) <= self.window)
    }

    /// The oldest event still held.
    pub fn oldest(&self) -> Option<Instant> {
        self.times.front().copied()
    }

    /// Forgets every event, so the next alert counts only events after this.
    pub fn clear(&mut self) {
        self.times.clear();
    }
}

/// One alert on its way to the webhook.
#[derive(Clone, Debug, PartialEq)]
struct Alert {
    event: String,
    count: u64,
    window: Duration,
    first_at_ms: u64,
    last_at_ms: u64,
    context: String,
}

/// One configured rule and what it has seen.
#[derive(Debug)]
struct RuleState {
    event: Box<str>,
    threshold: u64,
    window: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    events: EventWindow,
    last_alert: Option<Instant>,
    /// The newest event's context; cleared and refilled in place.
    context: String,
}

impl RuleState {
    fn new(event: &str, threshold: u64, window: Duration) -> Self {
        let seen = Seen {
            events: EventWindow::new(threshold, window),
            last_alert: None,
            context: String::with_capacity(MAX_CONTEXT_CHARS),
        };
        Self { event: event.into(), threshold: threshold.max(1), window, seen: Mutex::new(seen) }
    }

    /// Counts one event at `now` (wall clock `now_ms`); the alert to send when
    /// the rule trips outside its cooldown.
    fn record(
        &self,
        now: Instant,
        now_ms: impl FnOnce() -> u64,
        context: Option<&str>,
        cooldown: Duration,
    ) -> Option<Alert> {
        // A panic elsewhere while holding the lock leaves the ring consistent
        // (every update is a single push or pop), so a poisoned lock is usable.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        set_context(&mut seen.context, context);
        if !seen.events.record(now) {
            return None;
        }
        if seen.last_alert.is_some_and(|at| now.saturating_duration_since(at) < cooldown) {
            return None;
        }
        seen.last_alert = Some(now);
        let last_at_ms = now_ms();
        let span = seen.events.oldest().map_or(Duration::ZERO, |oldest| now.saturating_duration_since(oldest));
        // The next alert (after the cooldown) must be earned by events that
        // this one has not reported.
        seen.events.clear();
        Some(Alert {
            event: self.event.to_string(),
            count: self.threshold,
            window: self.window,
            first_at_ms: last_at_ms.saturating_sub(u64::try_from(span.as_millis()).unwrap_or(u64::MAX)),
            last_at_ms,
            context: seen.context.clone(),
        })
    }
}

/// Copies `context` into `buf`: control characters become spaces (one alert
/// is one line in a chat), and at most [`MAX_CONTEXT_CHARS`] characters are kept.
fn set_context(buf: &mut String, context: Option<&str>) {
    buf.clear();
    for c in context.unwrap_or_default().chars().take(MAX_CONTEXT_CHARS) {
        buf.push(if c.is_control() { ' ' } else { c });
    }
}

#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Counts security events against the `[alerts]` rules and sends the alerts.
#[derive(Debug)]
pub struct AlertEngine {
    /// Empty when alerts are off, so that `observe` returns at once.
    rules: Box<[RuleState]>,
    cooldown: Duration,
    tx: Option<mpsc::Sender<Alert>>,
    counts: Arc<Counts>,
    metrics: Arc<Metrics>,
}

impl AlertEngine {
    /// Starts the delivery task (on the current tokio runtime). With no
    /// webhook, no rules, an unusable URL or no runtime, alerts are off and
    /// [`AlertEngine::observe`] is a cheap no-op; the last two are logged.
    pub fn start(cfg: &AlertsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let counts = Arc::new(Counts::default());
        let off = |counts: Arc<Counts>, metrics: Arc<Metrics>| {
            Arc::new(Self { rules: Box::new([]), cooldown: cfg.cooldown, tx: None, counts, metrics })
        };
        if cfg.webhook_url.is_empty() || cfg.rules.is_empty() {
            return off(counts, metrics);
        }
        let delivery = match Delivery::new(cfg, counts.clone(), metrics.clone()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "alerts are off: the webhook cannot be used");
                return off(counts, metrics);
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("alerts are off: their delivery task needs a tokio runtime");
            return off(counts, metrics);
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        runtime.spawn(delivery.run(rx));
        let rules = cfg.rules.iter().map(|r| RuleState::new(&r.event, r.threshold, r.window)).collect();
        tracing::info!(rules = cfg.rules.len(), format = ?cfg.format, webhook = %delivery_host(cfg), "alerts on");
        Arc::new(Self { rules, cooldown: cfg.cooldown, tx: Some(tx), counts, metrics })
    }

    /// True when events are counted and alerts sent.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Counts one event of `kind`, with an optional short context (subject,
    /// address, detail summary; cut to [`MAX_CONTEXT_CHARS`]). Never blocks and
    /// never waits: it is called from request paths.
    pub fn observe(&self, kind: &str, context: Option<&str>) {
        let mut now = None;
        for rule in self.rules.iter().filter(|r| *r.event == *kind) {
            let at = *now.get_or_insert_with(Instant::now);
            if let Some(alert) = rule.record(at, unix_ms, context, self.cooldown) {
                self.enqueue(alert);
            }
        }
    }

    /// Alerts the webhook accepted (2xx).
    pub fn sent(&self) -> u64 {
        self.counts.sent.load(Ordering::Relaxed)
    }

    /// Alerts given up on: refused, out of retries, or dropped because the
    /// queue was full.
    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Of the failed alerts, those dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    fn enqueue(&self, alert: Alert) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(alert) {
            let alert = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
            self.metrics.alert_failed();
            tracing::warn!(event = %alert.event, "alert dropped: the delivery queue is full");
        }
    }
}

/// The webhook's host, the only part of its URL that may be logged (the path,
/// query and user info may hold a token).
fn delivery_host(cfg: &AlertsConfig) -> String {
    cfg.webhook_url.expose().parse::<Uri>().ok().and_then(|u| u.host().map(str::to_string)).unwrap_or_default()
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This machine's name, read once at start; `""` when unknown.
fn hostname() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    name.trim().chars().take(255).collect()
}

/// The alert document for the configured format.
fn render(alert: &Alert, format: AlertFormat, host: &str) -> String {
    match format {
        AlertFormat::Json => serde_json::json!({
            "alert": format!("{} threshold reached", alert.event),
            "event": alert.event,
            "count": alert.count,
            "window_secs": window_secs(alert.window),
            "first_at_ms": alert.first_at_ms,
            "last_at_ms": alert.last_at_ms,
            "context": alert.context,
            "source": "rampart",
            "host": host,
        })
        .to_string(),
        AlertFormat::Slack => {
            let mut text = format!(
                "🚨 Rampart: {} {} events within {}",
                alert.count,
                slack_escape(&alert.event),
                humantime::format_duration(alert.window)
            );
            if !host.is_empty() {
                text.push_str(" on ");
                text.push_str(&slack_escape(host));
            }
            text.push('.');
            if !alert.context.is_empty() {
                text.push_str(" Last: ");
                text.push_str(&slack_escape(&alert.context));
            }
            serde_json::json!({ "text": text }).to_string()
        }
    }
}

/// Whole seconds as an integer, as receivers expect; a sub-second window (only
/// sensible in tests) as a fraction rather than a misleading 0.
fn window_secs(window: Duration) -> serde_json::Value {
    if window.subsec_nanos() == 0 {
        window.as_secs().into()
    } else {
        window.as_secs_f64().into()
    }
}

/// Slack reads `<…>` as links and mentions (`<!channel>`), so the three
/// characters it reserves are escaped as its docs prescribe.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An HTTP/1.1 client for the gateway's own outbound calls (alerts, identity
/// notifications): http or https with the webpki roots, at most one idle
/// connection per host.
pub(crate) type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds a [`WebhookClient`] whose connection attempts give up after `connect_timeout`.
pub(crate) fn webhook_client(connect_timeout: Duration) -> Result<WebhookClient, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build(connector))
}

/// The delivery task's state.
struct Delivery {
    client: WebhookClient,
    uri: Uri,
    /// For logs, instead of the URL.
    webhook: String,
    format: AlertFormat,
    host: String,
    counts: Arc<Counts>,
    metrics: Arc<Metrics>,
}

/// How one attempt went.
enum Attempt {
    Delivered(StatusCode),
    /// Worth another try after at least this long (zero: the usual backoff).
    Retry(String, Duration),
    /// The receiver said no in a way a retry will not change (4xx, bad request).
    Refused(String),
}

impl Delivery {
    fn new(cfg: &AlertsConfig, counts: Arc<Counts>, metrics: Arc<Metrics>) -> Result<Self, String> {
        // The parse error is not shown: it could quote the URL.
        let uri: Uri = cfg.webhook_url.expose().parse().map_err(|_| "alerts.webhook_url is not a valid URL")?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("alerts.webhook_url must be an http:// or https:// URL with a host".into());
        }
        let client = webhook_client(ATTEMPT_TIMEOUT)?;
        let webhook = uri.host().unwrap_or_default().to_string();
        Ok(Self { client, uri, webhook, format: cfg.format, host: hostname(), counts, metrics })
    }

    /// Delivers alerts one after the other until the engine is dropped.
    async fn run(self, mut rx: mpsc::Receiver<Alert>) {
        while let Some(alert) = rx.recv().await {
            self.deliver(&alert).await;
        }
    }

    async fn deliver(&self, alert: &Alert) {
        let body = Bytes::from(render(alert, self.format, &self.host));
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let why = loop {
            match self.attempt(body.clone()).await {
                Attempt::Delivered(status) => {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    self.metrics.alert_sent();
                    tracing::info!(event = %alert.event, webhook = %self.webhook, status = status.as_u16(), attempt, "alert sent");
                    return;
                }
                Attempt::Refused(why) => break why,
                Attempt::Retry(why, _) if attempt >= MAX_ATTEMPTS => break why,
                Attempt::Retry(why, at_least) => {
                    let wait = backoff.max(at_least);
                    tracing::warn!(
                        event = %alert.event, webhook = %self.webhook, attempt, error = %why,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "alert delivery failed; will retry"
                    );
                    tokio::time::sleep(wait).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
            }
        };
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.alert_failed();
        tracing::error!(event = %alert.event, webhook = %self.webhook, attempts = attempt, error = %why, "alert not delivered");
    }

    async fn attempt(&self, body: Bytes) -> Attempt {
        let request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("rampart/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Attempt::Refused(format!("cannot build the request: {e}")),
        };
        let response = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
            Err(_) => {
                return Attempt::Retry(format!("no response within {}s", ATTEMPT_TIMEOUT.as_secs()), Duration::ZERO)
            }
            Ok(Err(e)) => return Attempt::Retry(error_chain(&e), Duration::ZERO),
            Ok(Ok(r)) => r,
        };
        // The body is not read: only the status matters, and alerts are too rare
        // for connection reuse to be worth waiting on a slow body.
        let status = response.status();
        if status.is_success() {
            Attempt::Delivered(status)
        } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::ZERO, |s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            Attempt::Retry(format!("status {}", status.as_u16()), retry_after)
        } else {
            Attempt::Refused(format!("status {}", status.as_u16()))
        }
    }
}

/// An error and its causes on one line ("client error (Connect): tcp connect
/// error: Connection refused"). Connection errors name no URL.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds events at the given offsets (ms); the offsets at which the window tripped.
    #[track_caller]
    fn check_window(threshold: u64, window_ms: u64, events: &[u64], tripped: &[u64]) {
        let t0 = Instant::now();
        let mut w = EventWindow::new(threshold, ms(window_ms));
        let got: Vec<u64> = events.iter().copied().filter(|&at| w.record(t0 + ms(at))).collect();
        assert_eq!(got, tripped, "threshold {threshold}, window {window_ms} ms, events {events:?}");
        assert!(w.times.len() <= usize::try_from(threshold.max(1)).unwrap());
    }

    #[test]
    fn windows_trip_on_the_last_threshold_events() {
        check_window(1, 100, &[0, 500], &[0, 500]);
        check_window(3, 100, &[0, 50, 100], &[100]);
        check_window(3, 100, &[0, 50, 101], &[]);
        check_window(3, 100, &[0, 60, 120, 140, 500], &[140]);
        check_window(2, 100, &[0, 200, 400, 450, 460], &[450, 460]);
        check_window(0, 100, &[0], &[0]);
    }

    #[test]
    fn a_huge_threshold_does_not_allocate_up_front() {
        let w = EventWindow::new(u64::MAX, ms(1));
        assert!(w.times.capacity() < 1000);
    }

    #[test]
    fn cooldown_suppresses_and_the_next_alert_needs_new_events() {
        let rule = RuleState::new("auth_failure", 2, ms(1000));
        let t0 = Instant::now();
        let at = |n| t0 + ms(n);
        assert_eq!(rule.record(at(0), || 1_000, Some("a"), COOLDOWN), None);
        let first = rule.record(at(10), || 1_010, Some("subject=bob"), COOLDOWN).unwrap();
        assert_eq!(
            first,
            Alert {
                event: "auth_failure".into(),
                count: 2,
                window: ms(1000),
                first_at_ms: 1_000,
                last_at_ms: 1_010,
                context: "subject=bob".into(),
            }
        );
        // In the cooldown: the window keeps filling but nothing is sent.
        assert_eq!(rule.record(at(20), || 1_020, None, COOLDOWN), None);
        assert_eq!(rule.record(at(30), || 1_030, None, COOLDOWN), None);
        // After it, the last two events (one from the cooldown) trip again.
        let second = rule.record(at(60_010), || 61_010, None, COOLDOWN);
        assert_eq!(second, None, "30 and 60010 are not within the window");
        let second = rule.record(at(60_020), || 61_020, Some("x"), COOLDOWN).unwrap();
        assert_eq!((second.first_at_ms, second.last_at_ms, second.context.as_str()), (61_010, 61_020, "x"));
    }

    #[test]
    fn context_is_one_line_of_at_most_200_characters() {
        let mut buf = String::new();
        set_context(&mut buf, Some(&"é".repeat(500)));
        assert_eq!(buf.chars().count(), MAX_CONTEXT_CHARS);
        set_context(&mut buf, Some("a\nb\tc"));
        assert_eq!(buf, "a b c");
        set_context(&mut buf, None);
        assert_eq!(buf, "");
    }

    fn alert(window: Duration, context: &str) -> Alert {
        Alert {
            event: "input_blocked".into(),
            count: 5,
            window,
            first_at_ms: 100,
            last_at_ms: 200,
            context: context.into(),
        }
    }

    #[test]
    fn json_payload_has_every_field() {
        let body: serde_json::Value =
            serde_json::from_str(&render(&alert(Duration::from_secs(60), "ip=192.0.2.1"), AlertFormat::Json, "web-1"))
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "alert": "input_blocked threshold reached",
                "event": "input_blocked",
                "count": 5,
                "window_secs": 60,
                "first_at_ms": 100,
                "last_at_ms": 200,
                "context": "ip=192.0.2.1",
                "source": "rampart",
                "host": "web-1",
            })
        );
        let body: serde_json::Value =
            serde_json::from_str(&render(&alert(ms(200), ""), AlertFormat::Json, "")).unwrap();
        assert_eq!(body["window_secs"], 0.2);
    }

    #[test]
    fn slack_text_is_a_sentence_that_cannot_mention_anyone() {
        let body: serde_json::Value = serde_json::from_str(&render(
            &alert(Duration::from_secs(300), "<!channel> & <https://evil|click>"),
            AlertFormat::Slack,
            "web-1",
        ))
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "text": "🚨 Rampart: 5 input_blocked events within 5m on web-1. \
                         Last: &lt;!channel&gt; &amp; &lt;https://evil|click&gt;"
            })
        );
        let body: serde_json::Value =
            serde_json::from_str(&render(&alert(ms(200), ""), AlertFormat::Slack, "")).unwrap();
        assert_eq!(body["text"], "🚨 Rampart: 5 input_blocked events within 200ms.");
    }

    #[test]
    fn off_without_webhook_or_rules() {
        let metrics = Arc::new(Metrics::new());
        let engine = AlertEngine::start(&AlertsConfig::default(), metrics);
        assert!(!engine.is_enabled());
        engine.observe("auth_failure", Some("x"));
        assert_eq!((engine.sent(), engine.failed()), (0, 0));
    }

    #[test]
    fn logs_name_the_host_only() {
        let cfg = AlertsConfig {
            webhook_url: rampart_core::config::secret::Secret::new("https://user:pw@hooks.example/T0/B1/secret?x=1"),
            ..AlertsConfig::default()
        };
        assert_eq!(delivery_host(&cfg), "hooks.example");
    }
}
