//! The one task that writes the audit log: drains the queue in batches, writes
//! each batch to the file (on the blocking pool) and the database at the same
//! time, and runs the retention purge at start and hourly.
//!
//! A failed write is logged without the records' contents, counted in
//! `rampart_audit_write_errors_total{sink}`, and the task goes on: the file is
//! reopened and resumed from what reached it, the database chain from what was
//! committed, so neither chain gets a false gap. A database call that takes
//! longer than [`DB_WAIT`] counts as a failed write, so a hung database does
//! not hold up the file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

use super::file::FileLog;
use super::record::{now_ms, ChainHead, StampedEvent};
use super::Msg;
use crate::observe::Metrics;
use crate::store::audit::AuditStore;
use crate::store::Database;

/// Most messages taken from the queue per batch.
const BATCH: usize = 256;
/// How often the retention purge runs (and the chain heads are logged).
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);
/// Longest wait for one database append or purge. A database that hangs
/// (a held lock, a lost connection) then counts as a failed write, and the
/// file copy, which waits for the database between batches, keeps going;
/// the same bound as the file lock's.
const DB_WAIT: Duration = Duration::from_secs(5);
/// Records one purge transaction deletes at most (see [`AuditStore::purge`]).
const PURGE_CHUNK: u64 = 10_000;
/// Purge transactions in one turn. A backlog (retention turned on for a
/// large table) goes turn by turn, [`PURGE_PAUSE`] apart, with appends in
/// between: the writer is never held by the purge for long.
const PURGE_ROUNDS: usize = 5;
/// Time between two purge turns while a backlog is left.
const PURGE_PAUSE: Duration = Duration::from_secs(1);
/// Least time between two warnings about dropped events.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    rx: mpsc::Receiver<Msg>,
    file: Option<FileLog>,
    db: Option<Database>,
    /// The last record this writer committed to the database.
    db_floor: Option<ChainHead>,
    retention: Duration,
    metrics: Arc<Metrics>,
    /// The cutoff of a database purge that has more to delete (see
    /// [`PURGE_ROUNDS`]).
    db_backlog: Option<u64>,
    dropped: Arc<AtomicU64>,
    reported_dropped: u64,
    last_drop_report: Option<Instant>,
    close_acks: Vec<oneshot::Sender<()>>,
}

impl Writer {
    pub fn new(
        rx: mpsc::Receiver<Msg>,
        file: Option<FileLog>,
        db: Option<Database>,
        retention: Duration,
        metrics: Arc<Metrics>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            rx,
            file,
            db,
            db_floor: None,
            retention,
            metrics,
            dropped,
            reported_dropped: 0,
            last_drop_report: None,
            close_acks: Vec::new(),
            db_backlog: None,
        }
    }

    pub async fn run(mut self) {
        self.open_file().await;
        self.maintain().await;
        let start = tokio::time::Instant::now() + MAINTAIN_EVERY;
        let mut tick = tokio::time::interval_at(start, MAINTAIN_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut msgs = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                // The purge first: under a steady stream of events it would
                // otherwise never get its turn.
                biased;
                _ = tick.tick() => self.maintain().await,
                _ = tokio::time::sleep(PURGE_PAUSE), if self.db_backlog.is_some() => {
                    if let Some(cutoff) = self.db_backlog {
                        self.db_backlog = self.purge_db(cutoff).await.then_some(cutoff);
                    }
                }
                n = self.rx.recv_many(&mut msgs, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    self.handle(&mut msgs).await;
                }
            }
        }
        for ack in self.close_acks.drain(..) {
            let _ = ack.send(());
        }
    }

    async fn handle(&mut self, msgs: &mut Vec<Msg>) {
        let mut events = Vec::with_capacity(msgs.len());
        for msg in msgs.drain(..) {
            match msg {
                Msg::Event(e) => events.push(StampedEvent { ts_ms: e.ts_ms, event: e.event.bounded() }),
                Msg::Flush(ack) => {
                    self.write(std::mem::take(&mut events)).await;
                    let _ = ack.send(());
                }
                Msg::Purge(ack) => {
                    self.write(std::mem::take(&mut events)).await;
                    self.maintain().await;
                    let _ = ack.send(());
                }
                Msg::Close(ack) => {
                    // Refuse new events; what is already queued is still
                    // written, and the loop ends when the queue is empty.
                    self.rx.close();
                    self.close_acks.push(ack);
                }
            }
        }
        self.write(events).await;
        self.report_drops();
    }

    async fn write(&mut self, events: Vec<StampedEvent>) {
        if events.is_empty() {
            return;
        }
        let events = Arc::new(events);
        let file = self.file.take();
        let file_events = events.clone();
        let to_file = async move {
            let mut log = file?;
            let path = log.path().to_path_buf();
            let outcome = tokio::task::spawn_blocking(move || {
                let result = log.append(&file_events);
                (log, result)
            })
            .await;
            Some(match outcome {
                Ok((log, result)) => (log, result),
                // The blocking job panicked: start over from the file itself.
                Err(e) => (FileLog::new(path), Err(std::io::Error::other(e.to_string()))),
            })
        };
        let to_db = async {
            match &self.db {
                Some(db) => Some(
                    tokio::time::timeout(DB_WAIT, db.append(&events, self.db_floor.as_ref()))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {DB_WAIT:?}"))),
                ),
                None => None,
            }
        };
        let (file_outcome, db_outcome) = tokio::join!(to_file, to_db);
        if let Some((log, result)) = file_outcome {
            match result {
                Ok(n) => self.metrics.audit_written("file", n as u64),
                Err(e) => {
                    self.metrics.audit_write_error("file");
                    tracing::error!(
                        target: "rampart::audit",
                        path = %log.path().display(),
                        error = %e,
                        records = events.len(),
                        "audit file write failed; these records are missing from the file"
                    );
                }
            }
            self.file = Some(log);
        }
        match db_outcome {
            Some(Ok(records)) => {
                self.metrics.audit_written("database", records.len() as u64);
                if let Some(last) = records.last() {
                    self.db_floor = Some(last.head());
                }
            }
            Some(Err(e)) => {
                self.metrics.audit_write_error("database");
                tracing::error!(
                    target: "rampart::audit",
                    error = %format!("{e:#}"),
                    records = events.len(),
                    "audit database write failed; these records are missing from audit_log"
                );
            }
            None => {}
        }
    }

    /// Opens the file at start, so that a bad path is reported at once rather
    /// than with the first event.
    async fn open_file(&mut self) {
        let Some(mut log) = self.file.take() else { return };
        let path = log.path().to_path_buf();
        let opened = tokio::task::spawn_blocking(move || {
            let result = log.ensure_open();
            (log, result)
        })
        .await;
        match opened {
            Ok((log, result)) => {
                if let Err(e) = result {
                    self.metrics.audit_write_error("file");
                    tracing::error!(target: "rampart::audit", path = %path.display(), error = %e, "cannot open the audit file");
                }
                self.file = Some(log);
            }
            Err(e) => {
                tracing::error!(target: "rampart::audit", path = %path.display(), error = %e, "cannot open the audit file");
                self.file = Some(FileLog::new(path));
            }
        }
    }

    /// One turn of the database purge: short transactions of [`PURGE_CHUNK`]
    /// records, each bounded like an append, at most [`PURGE_ROUNDS`] of them.
    /// True when more is left to delete.
    async fn purge_db(&mut self, cutoff: u64) -> bool {
        let Some(db) = &self.db else { return false };
        let mut anchor = None;
        let mut more = true;
        for _ in 0..PURGE_ROUNDS {
            let purged = tokio::time::timeout(DB_WAIT, db.purge(cutoff, PURGE_CHUNK))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {DB_WAIT:?}")));
            match purged {
                Ok(Some(a)) => anchor = Some(a),
                Ok(None) => {
                    more = false;
                    break;
                }
                Err(e) => {
                    self.metrics.audit_write_error("database");
                    tracing::error!(target: "rampart::audit", error = %format!("{e:#}"), "audit database purge failed");
                    // Tried again at the next hourly purge, not in a loop.
                    more = false;
                    break;
                }
            }
        }
        if let Some(anchor) = anchor {
            tracing::info!(target: "rampart::audit", anchor = anchor.seq, "purged old audit records from the database");
        }
        more
    }

    /// The retention purge, then the chain heads in the log so that an outside
    /// copy of the logs can show a later truncation.
    async fn maintain(&mut self) {
        if !self.retention.is_zero() {
            let retention_ms = u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX);
            let cutoff = now_ms().saturating_sub(retention_ms);
            if let Some(mut log) = self.file.take() {
                let path = log.path().to_path_buf();
                match tokio::task::spawn_blocking(move || {
                    let result = log.purge(cutoff);
                    (log, result)
                })
                .await
                {
                    Ok((log, result)) => {
                        match result {
                            Ok(Some(anchor)) => {
                                tracing::info!(target: "rampart::audit", path = %path.display(), anchor = anchor.seq, "purged old audit records from the file")
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!(target: "rampart::audit", path = %path.display(), error = %e, "audit file purge failed")
                            }
                        }
                        self.file = Some(log);
                    }
                    Err(e) => {
                        tracing::error!(target: "rampart::audit", error = %e, "audit file purge failed");
                        self.file = Some(FileLog::new(path));
                    }
                }
            }
            self.db_backlog = self.purge_db(cutoff).await.then_some(cutoff);
        }
        if let Some(db) = &self.db {
            if let Ok(Ok(Some(head))) = tokio::time::timeout(DB_WAIT, db.head()).await {
                tracing::info!(target: "rampart::audit", sink = "database", seq = head.seq, hash = %head.hash, "audit chain head");
            }
        }
        if let Some(head) = self.file.as_ref().and_then(FileLog::head) {
            tracing::info!(target: "rampart::audit", sink = "file", seq = head.seq, hash = %head.hash, "audit chain head");
        }
    }

    /// One warning per [`DROP_REPORT_EVERY`] at most while events are being dropped.
    fn report_drops(&mut self) {
        let total = self.dropped.load(Ordering::Relaxed);
        if total == self.reported_dropped || self.last_drop_report.is_some_and(|t| t.elapsed() < DROP_REPORT_EVERY) {
            return;
        }
        tracing::warn!(
            target: "rampart::audit",
            dropped = total - self.reported_dropped,
            total,
            "audit queue full: events were dropped (see [audit] queue)"
        );
        self.reported_dropped = total;
        self.last_drop_report = Some(Instant::now());
    }
}
