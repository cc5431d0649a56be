//! Webhook alerts against a real HTTP receiver on a local socket: thresholds,
//! windows, cooldown, both payload formats, retries with backoff, a receiver
//! that is down, and alerts switched off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rampart::observe::alerts::AlertEngine;
use rampart::observe::Metrics;
use rampart_core::config::model::{AlertFormat, AlertRule, AlertsConfig};
use rampart_core::config::secret::Secret;
use tokio::net::TcpListener;

/// The token in the webhook path: it must never appear in a payload.
const TOKEN: &str = "T0KEN-s3cr3t";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    at: Instant,
    content_type: String,
    body: serde_json::Value,
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Received>>,
    /// Statuses to answer, in order; 200 once empty.
    script: Mutex<VecDeque<u16>>,
}

/// A webhook receiver on 127.0.0.1 that records bodies and answers as told.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Self {
        let state =
            Arc::new(ReceiverState { got: Mutex::default(), script: Mutex::new(script.iter().copied().collect()) });
        let app = Router::new().route(&format!("/hooks/{TOKEN}"), post(receive)).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{addr}/hooks/{TOKEN}"), state }
    }

    fn got(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `n` requests have arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    state.got.lock().unwrap().push(Received { at: Instant::now(), content_type, body });
    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// A URL on a port nothing listens on.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hooks/{TOKEN}")
}

fn config(url: &str, format: AlertFormat, cooldown: Duration, rules: &[(&str, u64, Duration)]) -> AlertsConfig {
    AlertsConfig {
        webhook_url: Secret::new(url),
        format,
        cooldown,
        rules: rules
            .iter()
            .map(|&(event, threshold, window)| AlertRule { event: event.into(), threshold, window })
            .collect(),
    }
}

/// Waits (up to `limit`) until `f` holds.
async fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn crossing_the_threshold_sends_one_alert_with_the_documented_json() {
    let hook = Receiver::start(&[]).await;
    let metrics = Arc::new(Metrics::new());
    let cfg = config(&hook.url, AlertFormat::Json, HOUR, &[("auth_failure", 3, MINUTE)]);
    let engine = AlertEngine::start(&cfg, metrics.clone());
    assert!(engine.is_enabled());

    let before_ms = now_ms();
    engine.observe("auth_failure", Some("subject=alice"));
    engine.observe("input_blocked", Some("other kinds do not count"));
    engine.observe("auth_failure", None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(hook.got().is_empty(), "two of three events must not alert");
    engine.observe("auth_failure", Some(&format!("subject=bob ip=192.0.2.9 {}", "x".repeat(500))));
    // More events in the cooldown change nothing.
    for _ in 0..10 {
        engine.observe("auth_failure", Some("later"));
    }

    let got = hook.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert!(eventually(Duration::from_secs(5), || engine.sent() == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.got().len(), 1, "exactly one alert");
    assert_eq!(got[0].content_type, "application/json");

    let body = &got[0].body;
    let fields: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected =
        ["alert", "event", "count", "window_secs", "first_at_ms", "last_at_ms", "context", "source", "host"];
    expected.sort_unstable();
    assert_eq!(fields, expected, "{body}");
    assert_eq!(body["alert"], "auth_failure threshold reached");
    assert_eq!(body["event"], "auth_failure");
    assert_eq!(body["count"], 3);
    assert_eq!(body["window_secs"], 60);
    assert_eq!(body["source"], "rampart");
    assert!(body["host"].is_string());
    let context = body["context"].as_str().unwrap();
    assert!(context.starts_with("subject=bob ip=192.0.2.9 xxx"), "{context}");
    assert_eq!(context.chars().count(), 200);
    let (first, last) = (body["first_at_ms"].as_u64().unwrap(), body["last_at_ms"].as_u64().unwrap());
    assert!(before_ms <= first && first <= last && last <= now_ms(), "{first} {last}");
    assert!(!body.to_string().contains(TOKEN), "the webhook token must not be echoed");

    assert_eq!(engine.failed(), 0);
    assert!(metrics.render().contains("rampart_alerts_sent_total 1"), "{}", metrics.render());
}

#[tokio::test]
async fn events_spread_wider_than_the_window_do_not_trip() {
    let hook = Receiver::start(&[]).await;
    let window = Duration::from_millis(200);
    let cfg = config(&hook.url, AlertFormat::Json, HOUR, &[("ban_added", 3, window)]);
    let engine = AlertEngine::start(&cfg, Arc::new(Metrics::new()));
    // Each group of three spans 300 ms: scheduling delays only widen it.
    for _ in 0..5 {
        engine.observe("ban_added", Some("ip=192.0.2.1"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.got().is_empty());
    assert_eq!((engine.sent(), engine.failed()), (0, 0));

    // The same rule trips as soon as three land within the window.
    for _ in 0..3 {
        engine.observe("ban_added", None);
    }
    assert_eq!(hook.wait_for(1).await.len(), 1);
    assert_eq!(hook.got()[0].body["window_secs"], 0.2);
}

#[tokio::test]
async fn cooldown_suppresses_a_second_alert_until_it_passes() {
    let hook = Receiver::start(&[]).await;
    let cooldown = Duration::from_millis(300);
    let cfg = config(&hook.url, AlertFormat::Json, cooldown, &[("rate_limited", 2, Duration::from_secs(30))]);
    let engine = AlertEngine::start(&cfg, Arc::new(Metrics::new()));

    engine.observe("rate_limited", Some("first"));
    engine.observe("rate_limited", Some("first"));
    let tripped = Instant::now();
    // Right away, well inside the cooldown: these trip the rule again but are
    // not sent.
    engine.observe("rate_limited", Some("suppressed"));
    engine.observe("rate_limited", Some("suppressed"));
    assert_eq!(hook.wait_for(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hook.got().len(), 1, "the cooldown holds the second alert back");

    // Once it has passed, the next event alerts again.
    let left = cooldown.saturating_sub(tripped.elapsed()) + Duration::from_millis(50);
    tokio::time::sleep(left).await;
    engine.observe("rate_limited", Some("after"));
    let got = hook.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body["context"], "first");
    assert_eq!(got[1].body["context"], "after");
    assert!(eventually(Duration::from_secs(5), || engine.sent() == 2).await);
}

#[tokio::test]
async fn slack_format_posts_text() {
    let hook = Receiver::start(&[]).await;
    let cfg = config(&hook.url, AlertFormat::Slack, HOUR, &[("budget_exhausted", 1, MINUTE)]);
    let engine = AlertEngine::start(&cfg, Arc::new(Metrics::new()));
    engine.observe("budget_exhausted", Some("subject=team-a <!channel>"));

    let got = hook.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].content_type, "application/json");
    let body = got[0].body.as_object().unwrap();
    assert_eq!(body.keys().collect::<Vec<_>>(), ["text"]);
    let text = body["text"].as_str().unwrap();
    assert!(text.starts_with("🚨 Rampart: 1 budget_exhausted events within 1m"), "{text}");
    assert!(text.contains("subject=team-a &lt;!channel&gt;"), "{text}");
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn server_errors_are_retried_with_growing_delays() {
    let hook = Receiver::start(&[500, 500]).await;
    let metrics = Arc::new(Metrics::new());
    let cfg = config(&hook.url, AlertFormat::Json, HOUR, &[("config_reload_failed", 1, MINUTE)]);
    let engine = AlertEngine::start(&cfg, metrics.clone());
    engine.observe("config_reload_failed", Some("bad toml"));

    assert!(eventually(Duration::from_secs(10), || engine.sent() == 1).await, "sent {}", engine.sent());
    let got = hook.got();
    assert_eq!(got.len(), 3, "two 500s, then accepted");
    assert!(got.iter().all(|r| r.body == got[0].body), "every attempt sends the same alert");
    let (first_wait, second_wait) = (got[1].at - got[0].at, got[2].at - got[1].at);
    assert!(first_wait >= Duration::from_millis(400), "{first_wait:?}");
    assert!(second_wait > first_wait, "backoff grows: {first_wait:?} then {second_wait:?}");
    assert_eq!(engine.failed(), 0);
    assert!(metrics.render().contains("rampart_alerts_sent_total 1"));
}

#[tokio::test]
async fn a_receiver_that_stays_down_fails_the_alert_without_slowing_observe() {
    let url = closed_port_url().await;
    let metrics = Arc::new(Metrics::new());
    let cfg = config(&url, AlertFormat::Json, HOUR, &[("traffic_spike", 1, MINUTE), ("auth_failure", 1000, MINUTE)]);
    let engine = AlertEngine::start(&cfg, metrics.clone());
    engine.observe("traffic_spike", Some("rate=900/s"));

    // Delivery is failing and backing off meanwhile; counting must not notice.
    let started = Instant::now();
    for i in 0..100_000u32 {
        let kind = if i % 2 == 0 { "traffic_spike" } else { "auth_failure" };
        engine.observe(kind, Some("subject=someone ip=192.0.2.44"));
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "100k observe calls took {took:?}");

    // Five attempts with 0.5 + 1 + 2 + 4 s between them.
    assert!(eventually(Duration::from_secs(20), || engine.failed() == 1).await, "failed {}", engine.failed());
    assert_eq!(engine.sent(), 0);
    assert_eq!(engine.dropped(), 0);
    assert!(metrics.render().contains("rampart_alerts_failed_total 1"), "{}", metrics.render());
}

#[tokio::test]
async fn without_a_webhook_observe_does_nothing() {
    let hook = Receiver::start(&[]).await;
    let cfg = config("", AlertFormat::Json, Duration::ZERO, &[("auth_failure", 1, MINUTE)]);
    let engine = AlertEngine::start(&cfg, Arc::new(Metrics::new()));
    assert!(!engine.is_enabled());
    for _ in 0..1000 {
        engine.observe("auth_failure", Some("x"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((engine.sent(), engine.failed(), engine.dropped()), (0, 0, 0));
    assert!(hook.got().is_empty());

    // Nor with a webhook but no rules.
    let engine =
        AlertEngine::start(&config(&hook.url, AlertFormat::Json, Duration::ZERO, &[]), Arc::new(Metrics::new()));
    assert!(!engine.is_enabled());
    engine.observe("auth_failure", Some("x"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(hook.got().is_empty());
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[test]
fn rules_must_name_an_audit_event_kind() {
    let text = crate::common::config(
        "http://127.0.0.1:1",
        "[alerts]\nwebhook_url = 'http://127.0.0.1:1/hook'\n\
         rules = [{ event = 'input_blocked', threshold = 1, window = '1m' }, { event = 'input_block', threshold = 1, window = '1m' }]\n",
    );
    let err = rampart::app::load_policy_text(&text).unwrap_err().to_string();
    assert!(err.contains("alerts.rules[1].event") && err.contains("unknown audit kind `input_block`"), "{err}");
    assert!(!err.contains("alerts.rules[0]"), "{err}");
}
