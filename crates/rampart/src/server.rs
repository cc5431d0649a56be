//! The listener: accepts connections (plain or TLS), serves HTTP/1.1 and HTTP/2
//! on each with the current stack, and shuts down gracefully.
//!
//! Connection-level protections live here: the header-read timeout (slowloris),
//! the TLS handshake timeout, HTTP/2 header-list limits. On shutdown the listener
//! stops accepting at once, `/readyz` turns 503, in-flight requests get up to
//! `shutdown_timeout` to finish, and what is left is then closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rampart_core::client_ip::ClientGrouping;
use rampart_core::config::Policy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use crate::app::{build_runtime, reload, Runtime, SharedRuntime, Stack};
use crate::edge::ConnInfo;
use crate::limit::LimitState;
use crate::observe::audit::AuditSink;
use crate::observe::health::{ops_router, Health};
use crate::observe::Metrics;
use crate::preface::Speaks;
use crate::proxy::tunnel::ConnectionHold;
use crate::store::{redact_url, Database};
use crate::streams::{Streams, Verdict, Watched};
use crate::tls::ReloadingCert;
use crate::workers::{Job, Workers};

/// A running gateway.
pub struct Gateway {
    /// The address the proxy listens on (the real port when config said `:0`).
    pub addr: SocketAddr,
    /// The operations listener (`/metrics`, `/healthz`, `/readyz`), if enabled.
    pub ops_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Counters, bans and shedding state, kept across reloads.
    pub limits: Arc<LimitState>,
    /// The audit log (a no-op sink when `[audit] enabled = false`).
    pub audit: Arc<AuditSink>,
    /// Webhook alerts (off when `[alerts]` names no webhook or no rules).
    pub alerts: Arc<crate::observe::alerts::AlertEngine>,
    shared: SharedRuntime,
    console: Arc<crate::console::Console>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Binds the listeners and starts serving `policy`.
    pub async fn start(policy: Policy) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let settings = policy.server.clone();
        let metrics_listen = policy.metrics_listen;
        // The database first: a bad `storage.database` fails the start before
        // anything else is spawned.
        let (audit, identity) = start_audit(&policy, &metrics).await?;
        let alerts = crate::observe::alerts::AlertEngine::start(&policy.alerts, metrics.clone());
        let limits = LimitState::new(&policy, &metrics, &health)?;
        limits.set_audit(audit.clone());
        if let Some(identity) = identity {
            if let Some(sessions) = &identity.sessions {
                sessions.use_redis(limits.limiter.redis.clone())?;
            }
            identity.spawn_sync(limits.limiter.redis.clone());
            limits.set_identity(identity);
        }
        if alerts.is_enabled() {
            let engine = alerts.clone();
            audit.subscribe(move |e| {
                let context = e.subject.clone().or_else(|| e.ip.map(|ip| ip.to_string()));
                engine.observe(e.kind.as_str(), context.as_deref());
            });
        }
        let runtime = build_runtime(policy, &metrics, &limits)?;
        let shared: SharedRuntime = Arc::new(ArcSwap::from_pointee(runtime));
        let console =
            crate::console::Console::new(shared.clone(), metrics.clone(), health.clone(), &limits, audit.clone());
        console.spawn_sampler();
        limits.set_console(console.clone());

        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        // The operations listener outlives the drain, so that `/readyz`
        // answers 503 while in-flight requests finish; it stops after them.
        let (ops_stop, ops_stop_rx) = watch::channel(false);
        let ops_addr = match metrics_listen {
            Some(a) => {
                let ops = TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a} (metrics)"))?;
                let ops_addr = ops.local_addr()?;
                let router = ops_router(
                    metrics.clone(),
                    health.clone(),
                    limits.clone(),
                    shared.clone(),
                    settings.body_read_timeout,
                );
                tokio::spawn(serve_ops(ops, router, settings.header_read_timeout, ops_stop_rx));
                Some(ops_addr)
            }
            None => None,
        };

        let tls = match &settings.tls {
            Some(t) => {
                let cert = ReloadingCert::new(&t.cert, &t.key)?;
                let watcher = cert.watch(t.reload_interval);
                Some((crate::tls::acceptor(cert, settings.http2)?, watcher))
            }
            None => None,
        };

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            // hyper's own limits sit above ours so that the guard layer, not
            // hyper, answers ordinary excess with a problem document.
            .max_headers(settings.max_header_count.saturating_mul(2).max(200))
            .max_buf_size((settings.max_header_bytes + settings.max_uri_length).saturating_mul(2).max(64 * 1024));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(30));
        // Not `http1_only()`: it does nothing on connections that may upgrade.
        // The accept loop reads the first bytes itself (see `preface`).

        let workers = Workers::start(crate::workers::count(settings.workers)).context("starting the workers")?;
        let worker_count = workers.len();
        health.set_serving(true);
        let accept = AcceptLoop {
            listener,
            builder,
            tls,
            first_bytes_timeout: settings.header_read_timeout,
            send_timeout: settings.send_timeout,
            http2: settings.http2,
            conns: ConnectionCaps {
                per_ip: Arc::new(std::sync::Mutex::new(std::collections::HashMap::new())),
                max_per_ip: settings.max_connections_per_ip,
                clients: limits.clients,
                max_requests: settings.max_requests_per_connection,
                metrics: metrics.clone(),
            },
            shared: shared.clone(),
            handshake_timeout: settings.header_read_timeout,
            shutdown_timeout: settings.shutdown_timeout,
            health: health.clone(),
            workers,
        };
        let done = tokio::spawn(async move {
            accept.run(shutdown_rx).await;
            let _ = ops_stop.send(true);
        });
        tracing::info!(%addr, ops = ?ops_addr, workers = worker_count, "rampart listening");
        Ok(Self { addr, ops_addr, metrics, health, limits, audit, alerts, shared, console, shutdown, done })
    }

    /// Installs a new policy if it is valid; the running one stays otherwise.
    pub fn reload(&self, policy: Result<Policy, rampart_core::config::ConfigErrors>) -> anyhow::Result<()> {
        let _one_at_a_time = self.console.one_reload_at_a_time();
        reload(&self.shared, &self.metrics, &self.limits, &self.audit, policy)
    }

    /// The admin API's view of this gateway: name the config file with
    /// [`crate::console::Console::set_source`] so that it can be reloaded.
    pub fn console(&self) -> Arc<crate::console::Console> {
        self.console.clone()
    }

    /// The identity service, when `[identity]` is on.
    pub fn identity(&self) -> Option<Arc<crate::identity::IdentityService>> {
        self.limits.identity().cloned()
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.load().policy.clone()
    }

    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits until the gateway has stopped (after [`Gateway::shutdown`]), then
    /// writes what the audit queue still holds (giving up after 5 s, so a stuck
    /// disk cannot hold the process).
    pub async fn wait(self) {
        let _ = self.done.await;
        // API-key usage is batched in memory: write what the last batch missed.
        if let Some(keys) = self.limits.identity().and_then(|i| i.api_keys.clone()) {
            let _ = tokio::time::timeout(Duration::from_secs(5), keys.flush_usage()).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.audit.close()).await.is_err() {
            tracing::warn!("the audit log did not finish writing within 5 s; queued events may be lost");
        }
    }
}

/// Opens `[storage] database` and starts the audit log, when it is enabled.
async fn start_audit(
    policy: &Policy,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<AuditSink>, Option<Arc<crate::identity::IdentityService>>)> {
    if !policy.audit.enabled && policy.identity.is_none() {
        return Ok((AuditSink::start(&policy.audit, None, metrics.clone())?, None));
    }
    // The URL is a secret: use it only to connect, and name it redacted.
    let url = policy.storage.database.expose();
    let db =
        Database::connect(url).await.map_err(|e| anyhow::anyhow!("storage.database ({}): {e:#}", redact_url(url)))?;
    tracing::info!(backend = db.backend(), database = %redact_url(url), "database open");
    let identity = match &policy.identity {
        Some(settings) => {
            let notifier = match &settings.reset {
                Some(reset) => Some(crate::identity::notify::from_settings(&reset.notifier).await?),
                None => None,
            };
            let service =
                crate::identity::IdentityService::start(settings.clone(), db.clone(), notifier, metrics.clone());
            Some(service.await.context("identity")?)
        }
        None => None,
    };
    let audit_db = policy.audit.enabled.then_some(db);
    Ok((AuditSink::start(&policy.audit, audit_db, metrics.clone()).context("audit")?, identity))
}

/// Resolves once shutdown has been requested (or the sender is gone).
/// The most connections the operations listener holds at once. Beyond it a
/// new connection is closed at once: a flood of idle connections makes the
/// listener busy for one header timeout at most, and never uses up the file
/// descriptors the main listener needs.
pub const MAX_OPS_CONNECTIONS: usize = 256;

/// Serves the operations listener until `stop`: HTTP/1.1, each request's
/// head within `header_timeout` (an idle keep-alive connection is closed
/// then too; the router bounds the rest of the request), at most
/// [`MAX_OPS_CONNECTIONS`] at once. Connections still
/// open at `stop` finish their request.
async fn serve_ops(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_OPS_CONNECTIONS));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    loop {
        let (stream, peer) = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "operations listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let svc = tower::ServiceExt::map_request(router.clone(), move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req
        });
        let conn = builder.serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "operations connection ended");
            }
        });
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Per-client connection counting, and the per-connection request cap.
#[derive(Clone)]
struct ConnectionCaps {
    /// Open connections by client (see [`ClientGrouping::key`]). Only clients
    /// with open connections are present, so this is bounded by the number of
    /// open connections.
    per_ip: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    max_per_ip: usize,
    /// How addresses are counted as clients: an IPv6 client is its network.
    clients: ClientGrouping,
    max_requests: u64,
    metrics: Arc<Metrics>,
}

/// Holds one connection's place in the per-client count.
struct ConnectionSlot {
    caps: ConnectionCaps,
    /// The client's key.
    ip: std::net::IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.caps.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCaps {
    /// A slot for a new connection from `ip`, or `None` when its client has
    /// too many. Trusted proxies are exempt: all their clients share their address.
    fn admit(&self, ip: std::net::IpAddr, trusted: bool) -> Option<Option<ConnectionSlot>> {
        if self.max_per_ip == 0 || trusted {
            return Some(None);
        }
        let ip = self.clients.key(ip);
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.get(&ip).copied().unwrap_or(0);
        if n >= self.max_per_ip {
            self.metrics.connection_refused("per_ip_cap");
            return None;
        }
        map.insert(ip, n + 1);
        Some(Some(ConnectionSlot { caps: self.clone(), ip }))
    }
}

struct AcceptLoop {
    listener: TcpListener,
    conns: ConnectionCaps,
    builder: auto::Builder<TokioExecutor>,
    tls: Option<(tokio_rustls::TlsAcceptor, tokio::task::JoinHandle<()>)>,
    shared: SharedRuntime,
    handshake_timeout: Duration,
    /// How long a new connection has to say which protocol it speaks.
    first_bytes_timeout: Duration,
    /// Whether HTTP/2 is served (TLS: offered by ALPN; plain: prior knowledge).
    http2: bool,
    /// How long a write to the client may wait (see [`sending`]).
    send_timeout: Duration,
    shutdown_timeout: Duration,
    health: Arc<Health>,
    /// The threads connections are served on; dropped (stopping them) last.
    workers: Workers,
}

impl AcceptLoop {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Each connection holds a receiver until it has ended: shutdown
        // signals through it, then waits until every receiver is gone.
        let (drain, _) = watch::channel(());
        let builder = Arc::new(self.builder);
        loop {
            let (stream, peer) = tokio::select! {
                _ = stopped(&mut shutdown) => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let trusted = self.shared.load().policy.server.trusted_proxies.contains(peer.ip());
            let Some(slot) = self.conns.admit(peer.ip(), trusted) else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            // Registered again, with its worker's event loop, on that thread.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "cannot hand the connection to a worker");
                    continue;
                }
            };
            let tls = self.tls.as_ref().map(|(acceptor, _)| acceptor.clone());
            // Shared with the service, so that a WebSocket tunnel made on this
            // connection keeps the place after hyper has let the connection go.
            let slot = slot.map(|s| ConnectionHold(Arc::new(s)));
            let mut svc =
                connection_service(self.shared.clone(), ConnInfo { peer, tls: tls.is_some() }, self.conns.max_requests);
            svc.hold = slot.clone();
            let builder = builder.clone();
            // Taken now, before any shutdown, so the drain waits for this connection.
            let watcher = drain.subscribe();
            let handshake_timeout = self.handshake_timeout;
            let (first_bytes_timeout, http2, send_timeout) = (self.first_bytes_timeout, self.http2, self.send_timeout);
            // An idle HTTP/2 connection goes when an idle HTTP/1.1 one would.
            let h2_limits = (self.first_bytes_timeout, self.send_timeout);
            let job: Job = Box::new(move || {
                Box::pin(async move {
                    let _slot = slot;
                    let stream = match tokio::net::TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, %peer, "cannot register the connection");
                            return;
                        }
                    };
                    let Some(acceptor) = tls else {
                        let Some((speaks, stream)) = first_bytes(stream, first_bytes_timeout, http2, peer).await else {
                            return;
                        };
                        let streams = svc.watch_streams(speaks, h2_limits);
                        let stream = sending(stream, send_timeout);
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).into_owned();
                        drive(conn, watcher, streams, peer).await;
                        return;
                    };
                    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    // HTTP/2 only where ALPN chose it, then as for plain connections.
                    let h2 = http2 && tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let Some((speaks, tls)) = first_bytes(tls, first_bytes_timeout, h2, peer).await else { return };
                    let streams = svc.watch_streams(speaks, h2_limits);
                    let tls = sending(tls, send_timeout);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc).into_owned();
                    drive(conn, watcher, streams, peer).await;
                })
            });
            if !self.workers.dispatch(job) {
                tracing::error!("the connection workers are gone; no longer accepting");
                break;
            }
        }
        drop(self.listener);
        self.health.set_serving(false);
        if let Some((_, watcher)) = &self.tls {
            watcher.abort();
        }
        tracing::info!(connections = drain.receiver_count(), "shutting down; draining in-flight requests");
        let _ = drain.send(());
        if tokio::time::timeout(self.shutdown_timeout, drain.closed()).await.is_err() {
            tracing::warn!("shutdown timeout reached; closing the remaining connections");
        }
    }
}

/// Serves `conn` until it ends: shut down gracefully when the server drains
/// (`drain` changes or goes), and, for HTTP/2, when [`Streams`] finds it
/// idle or has carried its streams; closed at once when a stream's client
/// has stopped taking data, and once closing, when its client goes on
/// opening streams the idle time after the GOAWAY. `drain` is held until the connection has ended, which is what shutdown
/// waits for.
async fn drive<C>(conn: C, mut drain: watch::Receiver<()>, streams: Option<Arc<Streams>>, peer: SocketAddr)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    // When a closing connection was (asked to close, or) first seen idle. h2
    // sends its final GOAWAY only once the client answers the shutdown PING;
    // a client that never does (but answers keep-alive PINGs) would
    // otherwise keep the connection for ever. It gets the idle time once
    // more, then is dropped.
    let mut idle_since_shutdown: Option<tokio::time::Instant> = None;
    // When the connection was asked to close, and how many streams it had
    // started once the client had had the idle time to heed the GOAWAY. Such
    // a client may still open streams (until it answers the shutdown PING),
    // and one that goes on opening them past that time ignores the GOAWAY:
    // without this, it kept a spent connection busy, and so open, for ever.
    // Streams already open are left to finish (a long download is fine).
    let mut shutdown_asked: Option<(tokio::time::Instant, Option<u64>)> = None;
    let tick = streams.as_ref().map_or(Duration::from_secs(3600), |s| s.tick());
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = drain.changed(), if !closing => {
                closing = true;
                shutdown_asked = Some((tokio::time::Instant::now(), None));
                conn.as_mut().graceful_shutdown();
            }
            _ = ticks.tick(), if streams.is_some() => {
                let Some(streams) = streams.as_ref() else { continue };
                let verdict = streams.check(std::time::Instant::now());
                if let (Some((asked, heeded_by)), false) = (shutdown_asked.as_mut(), verdict == Verdict::Stalled) {
                    if asked.elapsed() >= streams.idle() {
                        let started = streams.started();
                        match *heeded_by {
                            None => *heeded_by = Some(started),
                            Some(then) if started > then => {
                                tracing::debug!(%peer, "HTTP/2 client kept opening streams after GOAWAY; dropped");
                                return;
                            }
                            Some(_) => {}
                        }
                    }
                }
                match verdict {
                    Verdict::Stalled => {
                        tracing::debug!(%peer, "HTTP/2 client took nothing for the send timeout; closed");
                        return;
                    }
                    Verdict::Idle if !closing => {
                        tracing::debug!(%peer, "HTTP/2 connection idle; shutting it down");
                        closing = true;
                        idle_since_shutdown = Some(tokio::time::Instant::now());
                        shutdown_asked = Some((tokio::time::Instant::now(), None));
                        conn.as_mut().graceful_shutdown();
                    }
                    Verdict::Spent if !closing => {
                        tracing::debug!(%peer, "HTTP/2 connection carried max_requests_per_connection streams; shutting it down");
                        closing = true;
                        shutdown_asked = Some((tokio::time::Instant::now(), None));
                        conn.as_mut().graceful_shutdown();
                    }
                    Verdict::Idle => {
                        // Closing (idle, spent or draining) and idle since:
                        // dropped once idle for the idle time again.
                        let since = *idle_since_shutdown.get_or_insert_with(tokio::time::Instant::now);
                        if since.elapsed() >= streams.idle() {
                            tracing::debug!(%peer, "idle HTTP/2 connection did not close after GOAWAY; dropped");
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The connection, once its first bytes have said which protocol it speaks
/// within `within` (see [`crate::preface`]); `None` (closed) when they did
/// not, or said HTTP/2 where it is not served.
async fn first_bytes<IO: tokio::io::AsyncRead + Unpin>(
    io: IO,
    within: Duration,
    http2: bool,
    peer: SocketAddr,
) -> Option<(Speaks, crate::preface::Prefixed<IO>)> {
    match crate::preface::sniff(io, within).await {
        Some((Speaks::Http2, _)) if !http2 => {
            tracing::debug!(%peer, "HTTP/2 preface where HTTP/2 is off; closed");
            None
        }
        Some(found) => Some(found),
        None => {
            tracing::debug!(%peer, "the connection said nothing usable in time; closed");
            None
        }
    }
}

/// The connection with a write timeout: a client that takes nothing of what
/// is written to it for `timeout` (a full socket buffer that does not drain)
/// gets the connection closed, which ends the response and lets the upstream
/// connection behind it go. Without it, a client that stops reading holds
/// both for as long as it likes.
fn sending<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    io: IO,
    timeout: Duration,
) -> std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<IO>>> {
    let mut io = tokio_io_timeout::TimeoutStream::new(io);
    io.set_write_timeout(Some(timeout));
    Box::pin(io)
}

/// The per-connection hyper service: tags each request with its connection and
/// runs it through the stack in force at that moment.
///
/// The connection keeps its own copy of the stack and clones it again only
/// after a reload has installed a new one: cloning the stack is a reference
/// count increment for every shared part of every layer, and those counts are
/// shared by all workers, so doing it per request costs cache-line transfers
/// between cores.
#[derive(Clone)]
struct ConnectionService {
    shared: SharedRuntime,
    served: Arc<std::sync::atomic::AtomicU64>,
    max_requests: u64,
    cached: Arc<std::sync::Mutex<Option<CachedStack>>>,
    /// What each request's extensions start as: see [`first_extensions`].
    extensions: http::Extensions,
    /// The connection's place in the per-address count, handed to upgrade
    /// requests (for their tunnel to keep).
    hold: Option<ConnectionHold>,
    /// HTTP/2 only: each request's stream, for [`drive`] to judge.
    streams: Option<Arc<Streams>>,
}

/// The runtime a connection's stack was cloned from, and the clone.
type CachedStack = (Arc<Runtime>, Stack);

fn connection_service(shared: SharedRuntime, conn: ConnInfo, max_requests: u64) -> ConnectionService {
    let extensions = first_extensions(conn);
    ConnectionService {
        shared,
        served: Arc::default(),
        max_requests,
        cached: Arc::default(),
        extensions,
        hold: None,
        streams: None,
    }
}

/// The connection's [`ConnInfo`], in a map with room for what the layers add
/// to a request (its id, client address, route and more) without growing.
///
/// Why: `http::Extensions` starts with room for three and rehashes into a
/// larger table at the fourth, which every proxied request reached: an
/// allocation, a rehash and a free per request. A clone of this map keeps its
/// size, so a request starts with the room it needs.
fn first_extensions(conn: ConnInfo) -> http::Extensions {
    #[derive(Clone, Copy)]
    struct Room<const N: usize>;
    let mut e = http::Extensions::new();
    // Zero-sized: inserting and removing them allocates nothing but the table.
    e.insert(Room::<1>);
    e.insert(Room::<2>);
    e.insert(Room::<3>);
    e.insert(Room::<4>);
    e.insert(Room::<5>);
    e.remove::<Room<1>>();
    e.remove::<Room<2>>();
    e.remove::<Room<3>>();
    e.remove::<Room<4>>();
    e.remove::<Room<5>>();
    e.insert(conn);
    e
}

impl ConnectionService {
    /// For an HTTP/2 connection, starts tracking its streams (see
    /// [`Streams`]): `limits` are the idle time and the send timeout.
    fn watch_streams(&mut self, speaks: Speaks, (idle, stall): (Duration, Duration)) -> Option<Arc<Streams>> {
        if speaks != Speaks::Http2 {
            return None;
        }
        let streams = Streams::new(idle, stall, self.max_requests);
        self.streams = Some(streams.clone());
        Some(streams)
    }

    /// Runs `req` through the stack of the runtime in force now.
    fn dispatch(&self, req: http::Request<Body>) -> crate::edge::LayerFuture {
        let current = self.shared.load();
        // Only this connection's task takes the lock (hyper calls a
        // connection's service from that connection's task), so it is never
        // contended; a poisoned lock only means a panic elsewhere mid-request.
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *cached {
            // The whole stack's future in one allocation (see `edge::Post`).
            Some((runtime, stack)) if Arc::ptr_eq(runtime, &current) => Box::pin(stack.call(req)),
            _ => {
                let runtime = arc_swap::Guard::into_inner(current);
                let mut stack = runtime.stack.clone();
                let fut = stack.call(req);
                *cached = Some((runtime, stack));
                Box::pin(fut)
            }
        }
    }
}

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = crate::edge::HttpResponse;
    type Error = std::convert::Infallible;
    type Future = crate::edge::LayerFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        if req.headers().contains_key(http::header::CONNECTION) {
            crate::proxy::headers::take_connection_header(req.headers_mut());
        }
        let upgrade = !req.extensions().is_empty();
        // Into hyper's (empty unless it added an upgrade handle): the map
        // itself is taken over when empty, room included.
        req.extensions_mut().extend(self.extensions.clone());
        if let (true, Some(hold)) = (upgrade, &self.hold) {
            req.extensions_mut().insert(hold.clone());
        }
        if let Some(streams) = &self.streams {
            let stream = streams.register();
            let fut = self.dispatch(req);
            return Box::pin(async move {
                let resp = fut.await?;
                Ok(resp.map(|body| Body::new(Watched::new(body, stream))))
            });
        }
        let n = self.served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // HTTP/1.1 and HTTP/1.0 with keep-alive alike (HTTP/2 connections
        // carry `streams`, which count their streams instead).
        if self.max_requests == 0 || n < self.max_requests {
            return self.dispatch(req);
        }
        // The connection's last request: ask hyper to close it afterwards, so
        // one client cannot pin a connection (and its per-address slot) forever.
        let fut = self.dispatch(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // A switch of protocols ends the HTTP exchanges on the connection
            // anyway, and its `Connection: upgrade` must stay.
            if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn caps_of(max_per_ip: usize, ipv6_prefix: u8) -> ConnectionCaps {
        ConnectionCaps {
            per_ip: Arc::default(),
            max_per_ip,
            clients: ClientGrouping::new(ipv6_prefix),
            max_requests: 0,
            metrics: Arc::new(Metrics::new()),
        }
    }

    #[track_caller]
    fn admitted(caps: &ConnectionCaps, ip: &str) -> Option<ConnectionSlot> {
        caps.admit(ip.parse().unwrap(), false).map(|slot| slot.expect("counted"))
    }

    /// Addresses of one IPv6 /64 share the cap; another /64, and IPv4
    /// addresses, have their own.
    #[test]
    fn an_ipv6_client_is_capped_as_its_network() {
        let caps = caps_of(2, 64);
        let first = admitted(&caps, "2001:db8:1:2::1").unwrap();
        let _second = admitted(&caps, "2001:db8:1:2::2").unwrap();
        assert!(admitted(&caps, "2001:db8:1:2:ffff::3").is_none(), "the /64 has two connections");
        let _other = admitted(&caps, "2001:db8:1:3::1").expect("another /64");
        let _v4 = admitted(&caps, "198.51.100.1").expect("IPv4");
        let _v4b = admitted(&caps, "::ffff:198.51.100.1").expect("the same IPv4 address, mapped");
        assert!(admitted(&caps, "198.51.100.1").is_none(), "mapped and plain are one address");
        drop(first);
        let _again = admitted(&caps, "2001:db8:1:2::9").expect("a place was given back");
        assert!(caps.admit("2001:db8:1:2::a".parse().unwrap(), true).is_some(), "trusted proxies are exempt");

        let per_address = caps_of(1, 128);
        let _a = admitted(&per_address, "2001:db8:1:2::1").unwrap();
        let _b = admitted(&per_address, "2001:db8:1:2::2").expect("ipv6_prefix = 128 counts each address");
    }
}
