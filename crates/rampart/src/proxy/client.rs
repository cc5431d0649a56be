//! An upstream: its connection pools, its targets with their breakers and
//! health, target selection, and active health checks.
//!
//! Plain-text HTTP/1.1 targets (the common case: an app on the same host or
//! network) go through the proxy's own pools ([`super::h1`]); HTTPS targets
//! (verified against the web PKI plus any configured extra roots) and HTTP/2
//! upstreams go through hyper-util's pooled client.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rampart_core::config::model::Balance;
use rampart_core::config::UpstreamSettings;

use super::breaker::{Permit, TargetState};
use super::h1::{H1Error, H1Pools};
use crate::observe::Metrics;
use rustls::pki_types::CertificateDer;

pub type UpstreamClient = Client<Bounded<HttpsConnector<HttpConnector>>, Body>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connector whose whole connect (name resolution, TCP and the TLS
/// handshake) is bounded by the upstream's `connect_timeout`.
/// `HttpConnector::set_connect_timeout` bounds each TCP attempt only: a
/// target that accepts and then never finishes the handshake held a request
/// until its response timeout, and it ended as a 504 that is never retried
/// rather than a connect failure that is.
#[derive(Clone, Debug)]
pub struct Bounded<C> {
    inner: C,
    limit: Duration,
}

impl<C> tower::Service<http::Uri> for Bounded<C>
where
    C: tower::Service<http::Uri>,
    C::Response: Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect_timeout elapsed (name resolution, TCP and TLS handshake)",
                )
                .into()),
            }
        })
    }
}

/// Why a request could not be exchanged with an upstream target.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    H1(#[from] H1Error),
    #[error(transparent)]
    Pooled(#[from] hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// No connection could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::H1(e) => e.is_connect(),
            Self::Pooled(e) => e.is_connect(),
        }
    }
}

/// A failed exchange. `unsent` holds the request when none of it was sent
/// and the target's client could hand it back (a failed connect to a
/// plain-text HTTP/1.1 target): a retry then needs no copy made beforehand.
#[derive(Debug)]
pub struct SendError {
    pub error: UpstreamError,
    pub unsent: Option<http::Request<Body>>,
}

impl<E: Into<UpstreamError>> From<E> for SendError {
    fn from(error: E) -> Self {
        Self { error: error.into(), unsent: None }
    }
}

/// One upstream: its settings, its connection pools and its targets.
#[derive(Debug)]
pub struct Upstream {
    pub settings: UpstreamSettings,
    /// One client (one connection pool) per connection worker, plus one, at
    /// index 0, for every other thread: a pooled connection is then only ever
    /// used by the thread whose event loop drives it.
    clients: Box<[UpstreamClient]>,
    /// The pools for plain-text HTTP/1.1 targets; `None` for an HTTP/2
    /// upstream.
    h1: Option<H1Pools>,
    pub targets: Vec<Arc<TargetState>>,
    next: AtomicUsize,
}

impl Upstream {
    /// Builds the clients, one per worker of `workers` and one for the other
    /// threads; reads `ca_file` when one is set.
    pub fn new(settings: UpstreamSettings, workers: usize) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &settings.ca_file {
            for cert in read_certs(path)? {
                roots.add(cert).with_context(|| format!("upstream {}: bad CA certificate in {path}", settings.name))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        // The same delay before the other address family as `dial` uses.
        http.set_happy_eyeballs_timeout(Some(super::dial::ATTEMPT_DELAY));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));

        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let connector = if settings.http2 {
            builder.enable_http1().enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let connector = Bounded { inner: connector, limit: settings.connect_timeout };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle);
        // Plain-text HTTP/2 can only be spoken with prior knowledge.
        if settings.http2 && settings.targets.iter().all(|t| !t.https) {
            client.http2_only(true);
        }
        let clients = (0..=workers).map(|_| client.build(connector.clone())).collect();
        let targets: Vec<_> =
            settings.targets.iter().map(|t| TargetState::new(t.clone(), settings.breaker.clone())).collect();
        let h1 = (!settings.http2).then(|| {
            H1Pools::new(
                targets.len(),
                workers,
                settings.connect_timeout,
                settings.pool_idle_timeout,
                settings.pool_max_idle,
            )
        });
        Ok(Self { settings, clients, h1, targets, next: AtomicUsize::new(0) })
    }

    /// The client whose pool belongs to the current thread.
    fn client(&self) -> &UpstreamClient {
        let i = crate::workers::current();
        self.clients.get(i).unwrap_or(&self.clients[0])
    }

    /// Whether a request that target number `index` failed to connect for
    /// comes back in [`SendError::unsent`].
    pub fn hands_back_unsent(&self, index: usize) -> bool {
        self.h1.is_some() && self.targets.get(index).is_some_and(|t| !t.target.https)
    }

    /// Sends `req`, whose URI is in origin form (`/path?query`), to target
    /// number `index` over a pooled connection of the current thread.
    pub async fn send(&self, index: usize, mut req: http::Request<Body>) -> Result<http::Response<Body>, SendError> {
        let Some(target) = self.targets.get(index).map(|t| &t.target) else {
            let error = H1Error::Connect(std::io::Error::other("no such upstream target")).into();
            return Err(SendError { error, unsent: Some(req) });
        };
        match &self.h1 {
            Some(h1) if !target.https => h1
                .send(index, &target.authority, req)
                .await
                .map_err(|(e, unsent)| SendError { error: e.into(), unsent }),
            _ => {
                let mut parts = http::uri::Parts::default();
                parts.scheme = Some(if target.https { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP });
                parts.authority = Some(target.authority.clone());
                parts.path_and_query = req.uri().path_and_query().cloned();
                *req.uri_mut() = http::Uri::from_parts(parts)
                    .map_err(|e| H1Error::Connect(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
                Ok(self.client().request(req).await?.map(Body::new))
            }
        }
    }

    /// Starts what runs beside the requests: the sweep closing idle
    /// connections, and the active health checks if configured. Both stop
    /// when the upstream is dropped (at the next reload).
    pub fn spawn_background(self: &Arc<Self>, metrics: Arc<Metrics>) {
        if let Some(h1) = &self.h1 {
            h1.spawn_sweeper();
        }
        self.spawn_health_checks(metrics);
    }

    /// A target for the next attempt, skipping `tried` ones while others are
    /// available; or, when every target is out (breaker open or unhealthy), how
    /// long until one may be back.
    pub fn pick(&self, tried: &[usize]) -> Result<(usize, Permit), Duration> {
        let now = Instant::now();
        let n = self.targets.len();
        let order: Vec<usize> = match self.settings.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n).map(|i| (start + i) % n).collect()
            }
            Balance::LeastInFlight => {
                let mut idx: Vec<usize> = (0..n).collect();
                // Ties go round-robin so equal targets share the load.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                idx.sort_by_key(|&i| (self.targets[i].in_flight(), (i + n - start % n) % n));
                idx
            }
        };
        let fresh = order.iter().copied().filter(|i| !tried.contains(i));
        let again = order.iter().copied().filter(|i| tried.contains(i));
        let mut soonest = Duration::from_secs(1);
        for i in fresh.chain(again) {
            match self.targets[i].try_acquire(now) {
                Ok(p) => return Ok((i, p)),
                Err(wait) => soonest = soonest.min(wait.max(Duration::from_millis(1))),
            }
        }
        Err(soonest)
    }

    fn spawn_health_checks(self: &Arc<Self>, metrics: Arc<Metrics>) {
        let Some(hc) = self.settings.health_check.clone() else { return };
        for (i, _) in self.targets.iter().enumerate() {
            let weak = Arc::downgrade(self);
            let (hc, metrics) = (hc.clone(), metrics.clone());
            tokio::spawn(async move {
                let (mut ok_run, mut fail_run) = (0u32, 0u32);
                let mut tick = tokio::time::interval(hc.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(up) = weak.upgrade() else { return };
                    let t = &up.targets[i];
                    let uri = format!("{}{}", t.target.base_path, hc.path);
                    let req = http::Request::get(uri)
                        .header(http::header::HOST, t.target.host_header.clone())
                        .body(Body::empty());
                    let ok = match req {
                        Ok(req) => matches!(
                            tokio::time::timeout(hc.timeout, up.send(i, req)).await,
                            Ok(Ok(r)) if r.status().is_success() || r.status().is_redirection()
                        ),
                        Err(_) => false,
                    };
                    if ok {
                        (ok_run, fail_run) = (ok_run.saturating_add(1), 0);
                    } else {
                        (ok_run, fail_run) = (0, fail_run.saturating_add(1));
                    }
                    let verdict = if fail_run >= hc.unhealthy_after {
                        Some(false)
                    } else if ok_run >= hc.healthy_after {
                        Some(true)
                    } else {
                        None
                    };
                    if let Some(healthy) = verdict {
                        if t.set_healthy(healthy) {
                            tracing::warn!(upstream = %up.settings.name, target = %t.label, healthy, "health check verdict changed");
                        }
                        metrics.upstream_healthy(&up.settings.name, &t.label, healthy);
                    }
                }
            });
        }
    }
}

pub fn read_certs(path: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{path} is not a PEM certificate file"))?;
    anyhow::ensure!(!certs.is_empty(), "{path} holds no certificate");
    Ok(certs)
}
