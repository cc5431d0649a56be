//! The tamper-evident audit log: security events (logins, bans, key changes,
//! reloads…) kept as a hash chain in the database and in a JSON-lines file.
//!
//! - **Recording never slows a request.** [`AuditSink::record`] stamps the event
//!   and hands it to a bounded queue without waiting; when the queue is full the
//!   event is dropped and counted (`rampart_audit_dropped_total`,
//!   [`AuditSink::dropped`]). One writer task drains the queue in batches.
//! - **Each record names the hash of the one before** ([`record`]), so an edited,
//!   deleted, inserted or moved record breaks the chain, and [`verify_records`] /
//!   [`verify_file`] / `rampart audit verify` name the first bad one.
//! - **Two copies, two chains.** The file (`[audit] file`) and the database
//!   (`audit_log`) each extend their own chain: records are identical while both
//!   accept every write, and a failed write to one never breaks the other's
//!   chain. The database chain is extended inside a locked transaction from the
//!   stored head, so instances sharing a database extend one chain; a file
//!   belongs to one instance.
//! - **Retention** (`[audit] retention`, checked at start and hourly) deletes
//!   records older than that from the start of each chain and keeps the last
//!   deleted one as the anchor (`audit_anchor`, or the file's first line) from
//!   which the rest verifies.
//! - **What goes in**: opaque ids, addresses and small typed details. Strings are
//!   cut to [`MAX_VALUE_CHARS`]; see [`AuditEvent`] for the rule on `subject`.
//!
//! ```
//! use rampart::observe::audit::{verify_records, AuditEvent, AuditKind, AuditRecord, ChainHead};
//!
//! let ban = AuditEvent::new(AuditKind::BanAdded).ip("192.0.2.7".parse().unwrap()).detail("ttl_secs", 60).bounded();
//! let first = AuditRecord::chained(&ChainHead::genesis(), 1_700_000_000_000, &ban);
//! let second = AuditRecord::chained(&first.head(), 1_700_000_000_500, &ban);
//! assert_eq!(verify_records([first.clone(), second.clone()], None), Ok(2));
//!
//! let mut edited = first;
//! edited.detail.insert("ttl_secs".into(), 1.into());
//! assert_eq!(verify_records([edited, second], None).unwrap_err().seq, Some(1));
//! ```

pub mod file;
pub mod record;
pub mod verify;
mod writer;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rampart_core::config::model::AuditConfig;
use tokio::sync::{mpsc, oneshot};

pub use file::{search_file, verify_file};
pub use record::{now_ms, AuditEvent, AuditKind, AuditRecord, ChainHead, StampedEvent, GENESIS_HASH, MAX_VALUE_CHARS};
pub use verify::{verify_records, ChainVerifier, VerifyError};

use super::Metrics;
use crate::store::Database;

/// Which records `rampart audit search` (and `tail`) wants.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub kind: Option<AuditKind>,
    pub subject: Option<String>,
    pub ip: Option<IpAddr>,
    /// Only records at or after this Unix time in milliseconds.
    pub since_ms: Option<u64>,
    /// The newest this many matches.
    pub limit: usize,
}

impl AuditQuery {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        self.kind.is_none_or(|k| r.kind == k)
            && self.subject.as_ref().is_none_or(|s| r.subject.as_ref() == Some(s))
            && self.ip.is_none_or(|ip| r.ip.map(|i| i.to_canonical()) == Some(ip.to_canonical()))
            && self.since_ms.is_none_or(|t| r.ts_ms >= t)
    }
}

/// Searches the log: the database when it holds one, else the file (read on
/// a blocking thread). Also answers how many unreadable file lines were
/// skipped (see `rampart audit verify` for why a line is unreadable).
pub async fn search(
    db: Option<&Database>,
    file: Option<&std::path::Path>,
    query: &AuditQuery,
) -> anyhow::Result<(Vec<AuditRecord>, u64)> {
    use crate::store::audit::AuditStore;
    if let Some(db) = db {
        if db.head().await?.is_some() {
            return Ok((db.search(query).await?, 0));
        }
    }
    let Some(file) = file.map(std::path::Path::to_path_buf) else { return Ok((Vec::new(), 0)) };
    let query = query.clone();
    tokio::task::spawn_blocking(move || {
        search_file(&file, &query).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the audit search stopped: {e}"))?
}

/// Writes `events` to the log `cfg` describes (the database `db` and the
/// file) and waits until they are written: for short-lived processes, such as
/// the `rampart` admin commands, that record what they change. It chains onto
/// the records a running gateway writes (see [`file`] for how the file is
/// shared). No retention purge runs. Fails when the log is on and a write
/// failed; a disabled log writes nothing and succeeds.
pub async fn write_now(cfg: &AuditConfig, db: Option<Database>, events: Vec<AuditEvent>) -> anyhow::Result<()> {
    if !cfg.enabled || events.is_empty() {
        return Ok(());
    }
    let cfg = AuditConfig { retention: std::time::Duration::ZERO, queue: events.len(), ..cfg.clone() };
    let metrics = Arc::new(Metrics::new());
    let sink = AuditSink::start(&cfg, db, metrics.clone())?;
    for event in events {
        sink.record(event);
    }
    sink.close().await;
    let failed: Vec<&str> = ["database", "file"].into_iter().filter(|s| metrics.audit_write_errors(s) > 0).collect();
    anyhow::ensure!(failed.is_empty(), "the audit {} could not be written", failed.join(" and "));
    anyhow::ensure!(sink.dropped() == 0, "{} audit event(s) were not written", sink.dropped());
    Ok(())
}

type Subscriber = Arc<dyn Fn(&AuditEvent) + Send + Sync>;

/// What the writer task receives.
enum Msg {
    Event(StampedEvent),
    /// Acknowledged once everything queued before it is written.
    Flush(oneshot::Sender<()>),
    /// Acknowledged once a retention purge has run.
    Purge(oneshot::Sender<()>),
    /// Stop taking events; acknowledged once everything queued is written.
    Close(oneshot::Sender<()>),
}

/// The audit log's entry point, shared by everything that reports events.
pub struct AuditSink {
    /// `None` when the log is disabled.
    tx: Option<mpsc::Sender<Msg>>,
    subscribers: ArcSwap<Vec<Subscriber>>,
    dropped: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("enabled", &self.tx.is_some())
            .field("subscribers", &self.subscribers.load().len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditSink {
    /// Starts the writer task (on the current tokio runtime) for `cfg`, writing
    /// to `db` and to `cfg.file` when set. With `cfg.enabled = false` nothing is
    /// stored (subscribers are still told). The file is opened by the writer,
    /// so an unwritable file shows as write errors, not as a failed start.
    pub fn start(cfg: &AuditConfig, db: Option<Database>, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        if !cfg.enabled {
            return Ok(Self::disabled(metrics));
        }
        if cfg.file.is_empty() && db.is_none() {
            anyhow::bail!("audit.enabled is true, but there is neither a database nor an audit.file to write to");
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the audit writer needs a tokio runtime"))?;
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let file = (!cfg.file.is_empty()).then(|| file::FileLog::new(cfg.file.clone().into()));
        let writer = writer::Writer::new(rx, file, db, cfg.retention, metrics.clone(), dropped.clone());
        runtime.spawn(writer.run());
        Ok(Arc::new(Self { tx: Some(tx), subscribers: ArcSwap::from_pointee(Vec::new()), dropped, metrics }))
    }

    /// A sink that stores nothing (subscribers are still told).
    pub fn disabled(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            tx: None,
            subscribers: ArcSwap::from_pointee(Vec::new()),
            dropped: Arc::new(AtomicU64::new(0)),
            metrics,
        })
    }

    /// True when events are stored.
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Reports `event`. Never blocks and never waits: subscribers are called
    /// here, then the event is queued for the writer, or dropped and counted
    /// when the queue is full.
    pub fn record(&self, event: AuditEvent) {
        for subscriber in self.subscribers.load().iter() {
            subscriber(&event);
        }
        let Some(tx) = &self.tx else { return };
        if tx.try_send(Msg::Event(StampedEvent { ts_ms: now_ms(), event })).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.audit_dropped();
        }
    }

    /// Calls `f` with every event passed to [`AuditSink::record`], on the
    /// recording thread, before it is queued (and whether or not it is then
    /// stored). `f` runs on the request path: it must be cheap, must not block
    /// and must not panic — count, compare, and hand real work to a task.
    pub fn subscribe(&self, f: impl Fn(&AuditEvent) + Send + Sync + 'static) {
        let f: Subscriber = Arc::new(f);
        self.subscribers.rcu(|current| {
            let mut next = Vec::clone(current);
            next.push(f.clone());
            next
        });
    }

    /// Events lost because the queue was full (or the writer had stopped).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every event recorded before this call has been written (or
    /// its write has failed). Returns at once when disabled.
    pub async fn flush(&self) {
        self.ask(Msg::Flush).await;
    }

    /// Runs the retention purge now (it also runs at start and hourly).
    pub async fn purge_now(&self) {
        self.ask(Msg::Purge).await;
    }

    /// Writes what is queued and stops the writer; later events are dropped
    /// and counted. For a clean shutdown.
    pub async fn close(&self) {
        self.ask(Msg::Close).await;
    }

    async fn ask(&self, msg: fn(oneshot::Sender<()>) -> Msg) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = oneshot::channel();
        if tx.send(msg(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}
