//! Several targets per upstream, balancing, circuit breakers (consecutive
//! failures and error ratio, reported to the audit log), retries with backoff,
//! per-route timeouts and health checks, against real upstreams that fail on
//! command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use axum::extract::State;
use axum::response::IntoResponse;

/// An upstream whose answers a test controls: `fail` = 0 answers 200 with its
/// id, anything else answers that status (every request, or with
/// `fail_every` = n only every n-th).
#[derive(Clone)]
struct Controlled {
    id: &'static str,
    fail: Arc<AtomicU16>,
    fail_every: Arc<AtomicUsize>,
    hits: Arc<AtomicUsize>,
}

impl Controlled {
    async fn start(id: &'static str) -> (Self, SocketAddr) {
        let c = Self { id, fail: Arc::default(), fail_every: Arc::default(), hits: Arc::default() };
        let app = axum::Router::new()
            .route(
                "/slow",
                axum::routing::get(|State(c): State<Controlled>| async move {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    c.id
                }),
            )
            .route(
                "/stream",
                axum::routing::get(|State(c): State<Controlled>| async move {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    let id = c.id;
                    // The head at once, the body over 600 ms: an SSE answer.
                    let chunks = futures_util::stream::unfold(0, move |i| async move {
                        match i {
                            0 => Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"data: 1\n\n")), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_millis(600)).await;
                                Some((Ok(bytes::Bytes::from(id)), 2))
                            }
                            _ => None,
                        }
                    });
                    axum::body::Body::from_stream(chunks)
                }),
            )
            .route(
                "/upload",
                axum::routing::post(|State(c): State<Controlled>, body: axum::body::Bytes| async move {
                    c.hits.fetch_add(1, Ordering::SeqCst);
                    body.len().to_string()
                }),
            )
            .route(
                "/probe",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    format!("{} {} {}", get("x-probe"), get("host"), get("x-forwarded-for"))
                }),
            )
            .fallback(|State(c): State<Controlled>| async move {
                let n = c.hits.fetch_add(1, Ordering::SeqCst) + 1;
                let every = c.fail_every.load(Ordering::SeqCst).max(1);
                match c.fail.load(Ordering::SeqCst) {
                    code if code != 0 && n % every == 0 => http::StatusCode::from_u16(code).unwrap().into_response(),
                    _ => c.id.into_response(),
                }
            })
            .with_state(c.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (c, addr)
    }

    fn fail_with(&self, code: u16) {
        self.fail.store(code, Ordering::SeqCst);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn upstream_config(urls: &[String], extra: &str) -> String {
    let list = urls.iter().map(|u| format!("'{u}'")).collect::<Vec<_>>().join(", ");
    format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:0'\n[audit]\nenabled = false\n[metrics]\nlisten = '127.0.0.1:0'\n[log]\naccess_log = false\n\
         [upstreams.default]\nurls = [{list}]\n{extra}\n"
    )
}

async fn body(gw: &rampart::Gateway, path: &str) -> (u16, String) {
    let r = client().get(url(gw, path)).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn round_robin_spreads_requests() {
    let (_, a) = Controlled::start("a").await;
    let (_, b) = Controlled::start("b").await;
    let gw = gateway(&upstream_config(&[format!("http://{a}"), format!("http://{b}")], "")).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(body(&gw, "/x").await.1);
    }
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 2, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "b").count(), 2, "{seen:?}");
}

#[tokio::test]
async fn least_in_flight_avoids_the_busy_target() {
    let (_, a) = Controlled::start("a").await;
    let (_, b) = Controlled::start("b").await;
    let gw =
        gateway(&upstream_config(&[format!("http://{a}"), format!("http://{b}")], "balance = 'least_in_flight'")).await;
    let busy = tokio::spawn({
        let u = url(&gw, "/slow");
        async move { client().get(u).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!busy.is_finished(), "the slow request should still be in flight");
    // While one target holds the slow request, new requests go to the other.
    let (_, first) = body(&gw, "/x").await;
    let (_, second) = body(&gw, "/x").await;
    assert_eq!(first, second, "both went to the idle target");
    let busy_id = busy.await.unwrap();
    assert_ne!(busy_id, first);
}

/// A request whose answer is still streaming counts as in flight: the head
/// alone does not free its target.
#[tokio::test]
async fn least_in_flight_counts_a_streaming_answer_until_its_end() {
    let (_, a) = Controlled::start("a").await;
    let (_, b) = Controlled::start("b").await;
    let gw =
        gateway(&upstream_config(&[format!("http://{a}"), format!("http://{b}")], "balance = 'least_in_flight'")).await;
    let streaming = client().get(url(&gw, "/stream")).send().await.unwrap();
    assert_eq!(streaming.status(), 200);
    // The head is here, the body is not: new requests go to the other target.
    let (_, first) = body(&gw, "/x").await;
    let (_, second) = body(&gw, "/x").await;
    assert_eq!(first, second, "both went to the target that is not streaming");
    let streamed = streaming.text().await.unwrap();
    assert!(streamed.ends_with(if first == "a" { "b" } else { "a" }), "{streamed:?} {first}");
    // Once the body has gone, the target is free again: the two share.
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(body(&gw, "/x").await.1);
    }
    assert!(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()), "{seen:?}");
}

/// The `upstream_circuit` audit events of `gw`, as "open"/"closed", as they happen.
fn circuit_events(gw: &rampart::Gateway) -> Arc<std::sync::Mutex<Vec<String>>> {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    gw.audit.subscribe(move |e| {
        if e.kind == rampart::observe::audit::AuditKind::UpstreamCircuit {
            let state = e.detail["state"].as_str().unwrap_or_default().to_string();
            sink.lock().unwrap().push(state);
        }
    });
    seen
}

#[tokio::test]
async fn breaker_opens_half_opens_and_closes() {
    let (up, addr) = Controlled::start("a").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{addr}")],
        "[upstreams.default.breaker]\nconsecutive_failures = 3\nopen_for = '300ms'\n",
    ))
    .await;
    let events = circuit_events(&gw);
    up.fail_with(503);
    for _ in 0..3 {
        assert_eq!(body(&gw, "/x").await.0, 503);
    }
    assert_eq!(up.hits(), 3);
    // Open: refused by the gateway without touching the upstream.
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let v = problem(r, 503).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-unavailable");
    assert_eq!(up.hits(), 3, "no request reached the upstream while open");

    // Half-open after open_for: one probe; it fails, so open again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(body(&gw, "/x").await.0, 503);
    assert_eq!(up.hits(), 4);
    assert_eq!(body(&gw, "/x").await.0, 503);
    assert_eq!(up.hits(), 4, "reopened after the failed probe");

    // The upstream recovers: the next probe closes the circuit.
    up.fail_with(0);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(body(&gw, "/x").await, (200, "a".to_string()));
    for _ in 0..3 {
        assert_eq!(body(&gw, "/x").await.0, 200);
    }
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("kind=\"circuit_open\""), "{m}");
    // Opened, opened again after the failed probe, closed: each in the audit log.
    assert_eq!(*events.lock().unwrap(), ["open", "open", "closed"]);
}

#[tokio::test]
async fn breaker_opens_on_the_error_ratio_without_failures_in_a_row() {
    let (up, addr) = Controlled::start("a").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{addr}")],
        "[upstreams.default.breaker]\nconsecutive_failures = 100\nerror_ratio = 0.5\nmin_requests = 6\n\
         window = '10s'\nopen_for = '10s'\n",
    ))
    .await;
    let events = circuit_events(&gw);
    up.fail_with(502);
    up.fail_every.store(2, Ordering::SeqCst);
    // 200, 502, 200, 502, 200, 502: never two failures in a row, but half failed.
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(body(&gw, "/x").await.0);
        }
        v
    };
    assert_eq!(statuses, [200, 502, 200, 502, 200, 502]);
    let r = client().get(url(&gw, "/x")).send().await.unwrap();
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    problem(r, 503).await;
    assert_eq!(up.hits(), 6, "open: nothing reaches the upstream");
    assert_eq!(*events.lock().unwrap(), ["open"]);
}

#[tokio::test]
async fn retries_back_off_and_stop_after_the_last_attempt() {
    let dead = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (a, b) = (dead(), dead());
    let gw = gateway(&upstream_config(
        &[format!("http://{a}"), format!("http://{b}")],
        "[upstreams.default.breaker]\nenabled = false\n[upstreams.default.retries]\nattempts = 3\nbackoff = '150ms'\n",
    ))
    .await;
    let errors = |gw: &rampart::Gateway| {
        let m = gw.metrics.render();
        m.lines()
            .find(|l| l.starts_with("rampart_upstream_errors_total{upstream=\"default\",kind=\"connect\"}"))
            .map_or(0, |l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
    };
    // A GET: three attempts, 150 ms and then 300 ms apart.
    let started = std::time::Instant::now();
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 502).await;
    let took = started.elapsed();
    assert_eq!(v["type"], "urn:rampart:problem:upstream-unavailable");
    assert_eq!(errors(&gw), 3);
    assert!(took >= Duration::from_millis(450), "no backoff between attempts: {took:?}");
    // A POST: one attempt, never replayed.
    problem(client().post(url(&gw, "/x")).body("{}").send().await.unwrap(), 502).await;
    assert_eq!(errors(&gw), 4);
}

#[tokio::test]
async fn timeouts_are_per_route_and_never_retried() {
    let (up, addr) = Controlled::start("a").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{addr}")],
        "response_timeout = '5s'\n[upstreams.default.retries]\nattempts = 3\nbackoff = '10ms'\n\
         [[routes]]\npath = '/slow'\nname = 'hurried'\ntimeout = '150ms'\n\
         [[routes]]\npath = '/patient/**'\nstrip_prefix = '/patient'\n",
    ))
    .await;
    // The route's own timeout, shorter than the upstream's and than the 400 ms
    // the handler takes: 504, and the request was sent once.
    let v = problem(client().get(url(&gw, "/slow")).send().await.unwrap(), 504).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-timeout");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(up.hits(), 1, "a timed-out request may have been acted on: not retried");
    // The same upstream path through a route without one: the upstream's 5 s.
    assert_eq!(body(&gw, "/patient/slow").await, (200, "a".to_string()));
}

/// A request body sent `pieces` bytes, one every `every`.
fn trickle(pieces: usize, every: Duration) -> reqwest::Body {
    use futures_util::StreamExt;
    let stream = futures_util::stream::iter(0..pieces).then(move |_| async move {
        tokio::time::sleep(every).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Uploads are timed from their end: a body that keeps moving is not cut by
/// the route's timeout, and one that stalls ends the request without
/// counting against the target. Timed from the start, a few slow uploads
/// would open the breaker for everyone.
#[tokio::test]
async fn slow_uploads_neither_time_out_nor_open_the_breaker() {
    let (up, addr) = Controlled::start("a").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{addr}")],
        "[upstreams.default.breaker]\nconsecutive_failures = 2\nopen_for = '30s'\n\
         [[routes]]\npath = '/upload'\ntimeout = '300ms'\n[[routes]]\npath = '/**'\n",
    ))
    .await;
    let upload = |body: reqwest::Body| client().post(url(&gw, "/upload")).body(body).send();
    for _ in 0..2 {
        // 8 pieces over 800 ms: past the timeout, but each within it.
        let r = upload(trickle(8, Duration::from_millis(100))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "8");
    }
    for _ in 0..2 {
        // A pause longer than the timeout (and shorter than body_read_timeout).
        let v = problem(upload(trickle(2, Duration::from_millis(600))).await.unwrap(), 504).await;
        assert_eq!(v["type"], "urn:rampart:problem:upstream-timeout");
    }
    // Two timeouts, and the breaker opens after two failures: still in service.
    assert_eq!(body(&gw, "/x").await, (200, "a".to_string()));
    assert_eq!(up.hits(), 3, "the stalled bodies never reached the handler");
}

#[tokio::test]
async fn idempotent_requests_retry_on_connection_errors_only() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (up, live) = Controlled::start("live").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{dead}"), format!("http://{live}")],
        "[upstreams.default.breaker]\nenabled = false\n[upstreams.default.retries]\nattempts = 2\nbackoff = '10ms'\n",
    ))
    .await;
    // Whichever target round-robin picks first, GETs succeed.
    for _ in 0..4 {
        assert_eq!(body(&gw, "/x").await, (200, "live".to_string()));
    }
    // A retried request is the whole request, addressed to the target that
    // answers: headers kept, `Host` and forwarding headers set for it.
    for _ in 0..4 {
        let r = client().get(url(&gw, "/probe")).header("x-probe", "p1").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), format!("p1 {live} 127.0.0.1"));
    }
    // A POST is never replayed: when it lands on the dead target it fails.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client().post(url(&gw, "/x")).body("{}").send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&502) && statuses.contains(&200), "{statuses:?}");
    // A 5xx answer is not a connection error: not retried.
    let hits = up.hits();
    up.fail_with(500);
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(body(&gw, "/x").await.0);
    }
    assert!(got.contains(&500));
    assert!(up.hits() - hits <= 2, "no retries of answered requests");
}

#[tokio::test]
async fn health_checks_take_targets_out_and_back() {
    let (a, addr_a) = Controlled::start("a").await;
    let (_, addr_b) = Controlled::start("b").await;
    let gw = gateway(&upstream_config(
        &[format!("http://{addr_a}"), format!("http://{addr_b}")],
        "[upstreams.default.health_check]\npath = '/healthz'\ninterval = '50ms'\ntimeout = '200ms'\nunhealthy_after = 2\nhealthy_after = 2\n",
    ))
    .await;
    a.fail_with(500);
    // Once target a fails its checks, everything goes to b.
    assert!(
        eventually(Duration::from_secs(3), || async {
            let mut all_b = true;
            for _ in 0..4 {
                all_b &= body(&gw, "/y").await == (200, "b".to_string());
            }
            all_b
        })
        .await
    );
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains(&format!("rampart_upstream_healthy{{upstream=\"default\",target=\"{addr_a}\"}} 0")), "{m}");
    a.fail_with(0);
    assert!(
        eventually(Duration::from_secs(3), || async { body(&gw, "/y").await.1 == "a" }).await,
        "target a never came back"
    );
}

#[tokio::test]
async fn invalid_upstream_configs_are_refused() {
    for (extra, want) in [
        ("[upstreams.x]\nurl = 'http://a'\nurls = ['http://b']\n", "not both"),
        ("[upstreams.x]\nurls = []\n", "needs a `url`"),
        ("[upstreams.x]\nurls = ['ftp://b']\n", "upstreams.x.urls[0]"),
        ("[upstreams.x]\nurl = 'http://a'\nbreaker = { error_ratio = 2.0 }\n", "error_ratio"),
        ("[upstreams.x]\nurl = 'http://a'\nretries = { attempts = 0 }\n", "attempts"),
        ("[upstreams.x]\nurl = 'http://a'\nhealth_check = { path = 'healthz' }\n", "health_check.path"),
    ] {
        let err = rampart::app::load_policy_text(&config("http://127.0.0.1:1", extra)).unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
}
