//! The JSON-lines copy of the audit log: one record per line, in chain order,
//! and, after a retention purge, a first line `{"anchor":{"seq":N,"hash":"…"}}`
//! naming the last purged record so that the rest still verifies.
//!
//! Everything here is blocking file I/O; the writer runs it on the blocking pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::record::{AuditRecord, ChainHead, StampedEvent};
use super::verify::{ChainVerifier, VerifyError};
use super::AuditQuery;

/// How much of the file's end is read to find its last record at start. A
/// bounded record is far smaller (see [`super::record::MAX_VALUE_CHARS`]).
const TAIL_WINDOW: u64 = 1024 * 1024;

/// One line of the file.
#[derive(Debug, PartialEq)]
pub enum Line {
    Anchor(ChainHead),
    Record(AuditRecord),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorLine {
    anchor: ChainHead,
}

/// Parses one line (without its newline).
pub fn parse_line(text: &str) -> Result<Line, String> {
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    match serde_json::from_str::<AuditRecord>(text) {
        Ok(r) => Ok(Line::Record(r)),
        Err(e) => match serde_json::from_str::<AnchorLine>(text) {
            Ok(a) => Ok(Line::Anchor(a.anchor)),
            Err(_) => Err(format!("not an audit record: {e}")),
        },
    }
}

fn strip_newline(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\n").unwrap_or(line)
}

/// Calls `f` with each line's number (from 1) and content until it returns false.
fn each_line(path: &Path, mut f: impl FnMut(u64, Result<Line, String>) -> bool) -> io::Result<()> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        n += 1;
        let parsed = match std::str::from_utf8(strip_newline(&buf)) {
            Ok(text) => parse_line(text),
            Err(_) => Err("not UTF-8".into()),
        };
        if !f(n, parsed) {
            return Ok(());
        }
    }
}

/// Verifies the file at `path`: the anchor (if its first line is one), then
/// every record. The error names the first bad line and, when readable, its seq.
pub fn verify_file(path: &Path) -> io::Result<Result<u64, VerifyError>> {
    let mut verifier: Option<ChainVerifier> = None;
    let mut outcome = Ok(());
    each_line(path, |n, line| {
        let step = match line {
            Err(reason) => Err(VerifyError { seq: None, line: Some(n), reason }),
            Ok(Line::Anchor(anchor)) if n == 1 => {
                verifier = Some(ChainVerifier::new(Some(anchor)));
                Ok(())
            }
            Ok(Line::Anchor(_)) => Err(VerifyError {
                seq: None,
                line: Some(n),
                reason: "an anchor is only valid on the first line: lines were inserted or moved".into(),
            }),
            Ok(Line::Record(r)) => verifier
                .get_or_insert_with(|| ChainVerifier::new(None))
                .check(&r)
                .map_err(|e| VerifyError { line: Some(n), ..e }),
        };
        outcome = step;
        outcome.is_ok()
    })?;
    Ok(outcome.map(|()| verifier.map_or(0, |v| v.count())))
}

/// The newest `query.limit` records matching `query`, oldest first, and how
/// many lines could not be read.
pub fn search_file(path: &Path, query: &AuditQuery) -> io::Result<(Vec<AuditRecord>, u64)> {
    let mut kept = std::collections::VecDeque::new();
    let mut unreadable = 0;
    each_line(path, |_, line| {
        match line {
            Ok(Line::Record(r)) if query.matches(&r) => {
                if kept.len() == query.limit {
                    kept.pop_front();
                }
                if query.limit > 0 {
                    kept.push_back(r);
                }
            }
            Ok(_) => {}
            Err(_) => unreadable += 1,
        }
        true
    })?;
    Ok((kept.into(), unreadable))
}

/// The writer's handle on the file: opened lazily, resumed from its last line.
///
/// Other processes may append to the same file: the `rampart user`, `client`,
/// `api-key` and `keys` commands record what they change here too. Every append
/// (and every purge) holds an exclusive lock on the file (`flock`) and first
/// catches up with whatever another writer added or replaced since, so that
/// all writers extend one chain.
pub(super) struct FileLog {
    path: PathBuf,
    file: Option<File>,
    head: ChainHead,
    /// A regular file: locked while written and re-read when it changed.
    regular: bool,
    /// The file's length after this writer's last write or read of it; any
    /// other length means another writer has been at it.
    len: u64,
    /// How long to wait for another process's lock on the file.
    lock_wait: Duration,
}

/// How long a writer waits for the file's lock. Writers hold it for the
/// milliseconds a batch takes; a lock held longer is no writer's (a stuck
/// process, `flock` run by hand, a hung network mount), and waiting on would
/// stall the whole audit writer, the database copy included.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl FileLog {
    pub fn new(path: PathBuf) -> Self {
        Self { path, file: None, head: ChainHead::genesis(), regular: true, len: 0, lock_wait: LOCK_WAIT }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file now (it is otherwise opened by the first write).
    pub fn ensure_open(&mut self) -> io::Result<()> {
        self.open().map(drop)
    }

    /// Where the file's chain stands, once the file is open.
    pub fn head(&self) -> Option<&ChainHead> {
        self.file.as_ref().map(|_| &self.head)
    }

    /// Opens the file (creating it and its directories) and reads where its
    /// chain stands. Not a regular file (a pipe, a device): written to, never
    /// read back, chained from the start.
    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)?;
            }
            let regular = match fs::metadata(&self.path) {
                Ok(m) => m.is_file(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            let mut options = OpenOptions::new();
            // A new log is private (0600, before the umask): it holds client
            // addresses, subject ids and excerpts of inputs. An existing one
            // keeps the mode its operator gave it.
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.append(true).create(true).read(regular);
            let mut file = options.open(&self.path)?;
            if regular {
                // Under the lock: another writer may be half-way through a line.
                lock(&file, self.lock_wait)?;
                let resumed = resume(&mut file, &self.path).and_then(|head| Ok((head, file.metadata()?.len())));
                let _ = file.unlock();
                (self.head, self.len) = resumed?;
            } else {
                self.head = ChainHead::genesis();
            }
            self.regular = regular;
            self.file = Some(file);
        }
        self.file.as_mut().ok_or_else(|| io::Error::other("audit file not open"))
    }

    /// Opens the file if needed, takes its lock and brings `head` up to date:
    /// another process may have appended since this writer's last write, or a
    /// purge may have put a new file in place of the one held open. On `Ok`
    /// the open file is locked (regular files only); [`FileLog::unlock`]
    /// releases it, as does dropping the handle.
    fn lock_current(&mut self) -> io::Result<()> {
        // A purge elsewhere replaces the file at most once per hour: a few
        // rounds are plenty, and bound the loop whatever happens on disk.
        for _ in 0..5 {
            self.open()?;
            if !self.regular {
                return Ok(());
            }
            let Some(file) = self.file.as_mut() else { continue };
            lock(file, self.lock_wait)?;
            let held = file.metadata()?;
            let replaced = match fs::metadata(&self.path) {
                Ok(on_disk) => (on_disk.dev(), on_disk.ino()) != (held.dev(), held.ino()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => return Err(e),
            };
            if replaced {
                // Closing the handle releases its lock; the next round opens
                // what is at the path now.
                self.file = None;
                continue;
            }
            if held.len() < self.len {
                // The same file, shorter than this writer left it: records
                // were cut off its end (files only grow; a purge makes a new
                // file). Chaining onto what is left would hide the loss from
                // `verify`; going on from the last record written leaves a gap
                // that it reports.
                tracing::error!(
                    target: "rampart::audit",
                    path = %self.path.display(),
                    expected_bytes = self.len,
                    found_bytes = held.len(),
                    "the audit file lost records at its end; the chain goes on from the last record written, and `rampart audit verify` will show the gap"
                );
                self.len = held.len();
            } else if held.len() != self.len {
                self.head = resume(file, &self.path)?;
                self.len = file.metadata()?.len();
            }
            return Ok(());
        }
        Err(io::Error::other("the audit file was replaced again and again while being opened"))
    }

    fn unlock(&self) {
        if let (true, Some(file)) = (self.regular, &self.file) {
            let _ = file.unlock();
        }
    }

    /// Appends `batch` as one write, chained onto whatever the file ends with
    /// (see [`FileLog`]). On error the handle is dropped, so the next batch
    /// reopens the file and resumes from what actually reached it.
    pub fn append(&mut self, batch: &[StampedEvent]) -> io::Result<usize> {
        let outcome = self.lock_current().and_then(|()| self.append_locked(batch));
        self.unlock();
        if outcome.is_err() {
            self.file = None;
        }
        outcome
    }

    fn append_locked(&mut self, batch: &[StampedEvent]) -> io::Result<usize> {
        let mut head = self.head.clone();
        let mut buf = Vec::with_capacity(batch.len() * 256);
        for e in batch {
            let r = AuditRecord::chained(&head, e.ts_ms, &e.event);
            serde_json::to_writer(&mut buf, &r)?;
            buf.push(b'\n');
            head = r.head();
        }
        let file = self.file.as_mut().ok_or_else(|| io::Error::other("audit file not open"))?;
        file.write_all(&buf)?;
        self.head = head;
        if self.regular {
            self.len = file.metadata()?.len();
        }
        Ok(batch.len())
    }

    /// Drops the records older than `cutoff_ms` from the start of the file,
    /// replacing them with an anchor line. Stops at the first record that is
    /// young enough, or at any line it cannot read, which is kept as evidence.
    /// Returns the new anchor, if anything was purged.
    pub fn purge(&mut self, cutoff_ms: u64) -> io::Result<Option<ChainHead>> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        // Held until the new file is in place, so that no other writer
        // appends to the old one after it was copied.
        if let Err(e) = self.lock_current() {
            self.file = None;
            return Err(e);
        }
        let outcome = self.purge_locked(cutoff_ms);
        // The old file's lock went with its handle when it was replaced;
        // otherwise it is still held here.
        self.unlock();
        if outcome.is_err() {
            self.file = None;
        }
        outcome
    }

    fn purge_locked(&mut self, cutoff_ms: u64) -> io::Result<Option<ChainHead>> {
        let mut reader = BufReader::new(File::open(&self.path)?);
        let mut buf = Vec::new();
        let mut n = 0u64;
        let mut last_purged = None;
        let first_kept = loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break None;
            }
            n += 1;
            let parsed = std::str::from_utf8(strip_newline(&buf)).map_err(|e| e.to_string()).and_then(parse_line);
            match parsed {
                Ok(Line::Anchor(_)) if n == 1 => {}
                Ok(Line::Record(r)) if r.ts_ms < cutoff_ms => last_purged = Some(r.head()),
                _ => break Some(std::mem::take(&mut buf)),
            }
        };
        let Some(anchor) = last_purged else { return Ok(None) };
        let tmp = self.path.with_extension("purge-tmp");
        let copied = (|| -> io::Result<()> {
            let mut out = BufWriter::new(create_like(&tmp, &self.path)?);
            serde_json::to_writer(&mut out, &AnchorLine { anchor: anchor.clone() })?;
            out.write_all(b"\n")?;
            if let Some(line) = first_kept {
                out.write_all(&line)?;
                io::copy(&mut reader, &mut out)?;
            }
            let out = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            out.sync_all()?;
            fs::set_permissions(&tmp, fs::metadata(&self.path)?.permissions())?;
            Ok(())
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &self.path)?;
        // Closing the old handle releases its lock: a writer waiting on it
        // sees the file was replaced and moves to the new one.
        self.file = None;
        self.open()?;
        Ok(Some(anchor))
    }
}

/// Creates `path` afresh (a leftover is removed first) with the permissions of
/// `like`, from its first byte: a copy of a private log is never readable by
/// others, not even while it is being written.
fn create_like(path: &Path, like: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = fs::metadata(like)?.permissions().mode() & 0o777;
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new().write(true).create_new(true).mode(mode).open(path)
}

/// Takes the file's exclusive lock, waiting up to `wait` for another writer
/// to finish (then `TimedOut`: this batch misses the file, and the writer
/// goes on). A file system without locks (some network and FUSE mounts) is
/// written unlocked: one writer per file is then the rule, as the config docs
/// say.
fn lock(file: &File, wait: Duration) -> io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("another process has held the file's lock for over {}", humantime::format_duration(wait)),
                ))
            }
            Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Where the chain of an open file stands: its last record, or its anchor.
fn resume(file: &mut File, path: &Path) -> io::Result<ChainHead> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(ChainHead::genesis());
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let too_long = || io::Error::new(io::ErrorKind::InvalidData, "its last line is longer than 1 MiB");
    if buf.last() != Some(&b'\n') {
        // A crash in the middle of a write leaves part of a line: drop it, so
        // the file ends on a whole record and the next one starts a new line.
        let keep = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => return Err(too_long()),
        };
        file.set_len(start + keep as u64)?;
        buf.truncate(keep);
        tracing::warn!(
            target: "rampart::audit",
            path = %path.display(),
            "the audit file ended in a partial line (a crash during a write?); the partial line was removed"
        );
        if buf.is_empty() {
            return Ok(ChainHead::genesis());
        }
    }
    let body = strip_newline(&buf);
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None if start == 0 => body,
        None => return Err(too_long()),
    };
    let parsed = std::str::from_utf8(last).map_err(|e| e.to_string()).and_then(parse_line);
    match parsed {
        Ok(Line::Record(r)) => Ok(r.head()),
        Ok(Line::Anchor(a)) => Ok(a),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("its last line cannot be chained onto ({e}); check it with `rampart audit verify --file`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::observe::audit::{AuditEvent, AuditKind};

    fn events(from: u64, n: u64) -> Vec<StampedEvent> {
        (from..from + n)
            .map(|i| StampedEvent { ts_ms: i, event: AuditEvent::new(AuditKind::AdminAction).detail("i", i).bounded() })
            .collect()
    }

    #[test]
    fn a_partial_last_line_is_dropped_and_the_chain_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/audit.jsonl");
        FileLog::new(path.clone()).append(&events(0, 2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":3,"ts_ms":"#).unwrap();
        let mut log = FileLog::new(path.clone());
        log.append(&events(2, 1)).unwrap();
        assert_eq!(log.head().map(|h| h.seq), Some(3));
        assert_eq!(verify_file(&path).unwrap(), Ok(3));
    }

    #[test]
    fn an_unreadable_last_line_stops_the_writer_instead_of_forking_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        FileLog::new(path.clone()).append(&events(0, 2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"garbage\n").unwrap();
        let err = FileLog::new(path.clone()).append(&events(2, 1)).unwrap_err();
        assert!(err.to_string().contains("cannot be chained onto"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3, "nothing appended");
    }

    /// Records cut off the end of the file (`truncate -s`) while the writer
    /// runs are not papered over: it goes on from its own last record, so
    /// verify reports the gap instead of passing.
    #[test]
    fn records_cut_off_the_end_leave_a_gap_that_verify_reports() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = FileLog::new(path.clone());
        log.append(&events(0, 5)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let two_lines = text.match_indices('\n').nth(1).unwrap().0 + 1;
        OpenOptions::new().write(true).open(&path).unwrap().set_len(two_lines as u64).unwrap();
        log.append(&events(5, 1)).unwrap();
        assert_eq!(log.head().map(|h| h.seq), Some(6));
        let err = verify_file(&path).unwrap().unwrap_err();
        assert_eq!(err.line, Some(3), "{err:?}");
    }

    #[test]
    fn a_new_log_is_private_and_an_existing_one_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        FileLog::new(path.clone()).append(&events(0, 1)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        FileLog::new(path.clone()).append(&events(1, 1)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_purge_copy_is_never_more_readable_than_the_log() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (log, tmp) = (dir.path().join("audit.jsonl"), dir.path().join("audit.purge-tmp"));
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A leftover of a crashed purge, readable by all.
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = create_like(&tmp, &log).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(f.metadata().unwrap().len(), 0);
    }

    /// A lock nobody releases (`flock audit.jsonl sleep inf`) costs a batch
    /// its place in the file, not the writer: it gives up after its wait.
    #[test]
    fn a_lock_held_forever_fails_the_batch_instead_of_stalling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = FileLog::new(path.clone());
        log.lock_wait = Duration::from_millis(200);
        log.append(&events(0, 1)).unwrap();
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        let started = Instant::now();
        let err = log.append(&events(1, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200) && started.elapsed() < Duration::from_secs(3));
        // Released, the next batch goes on the chain.
        holder.unlock().unwrap();
        log.append(&events(2, 1)).unwrap();
        assert_eq!(verify_file(&path).unwrap(), Ok(2));
    }

    #[test]
    fn two_writers_extend_one_chain_even_across_a_purge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (mut gateway, mut admin) = (FileLog::new(path.clone()), FileLog::new(path.clone()));
        gateway.append(&events(0, 2)).unwrap();
        admin.append(&events(2, 1)).unwrap();
        gateway.append(&events(3, 2)).unwrap();
        admin.append(&events(5, 1)).unwrap();
        assert_eq!(verify_file(&path).unwrap(), Ok(6));
        // One purges, replacing the file the other still holds open.
        assert_eq!(admin.purge(3).unwrap().map(|a| a.seq), Some(3));
        gateway.append(&events(6, 1)).unwrap();
        assert_eq!(gateway.head().map(|h| h.seq), Some(7));
        assert_eq!(verify_file(&path).unwrap(), Ok(4));
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(r#"{"anchor":{"seq":3,"#));
    }

    #[test]
    fn concurrent_writers_never_fork_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut log = FileLog::new(path);
                    for i in 0..150 {
                        log.append(&events(w * 1000 + i, 1 + i % 3)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        // 150 batches of 1, 2 and 3 records in turn, from each of 3 writers.
        assert_eq!(verify_file(&path).unwrap(), Ok(3 * 300));
    }

    #[test]
    fn purging_keeps_an_anchor_and_stops_at_the_first_young_or_unreadable_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut log = FileLog::new(path.clone());
        log.append(&events(10, 5)).unwrap();
        assert_eq!(log.purge(10).unwrap(), None, "nothing old enough");
        let anchor = log.purge(12).unwrap().unwrap();
        assert_eq!(anchor.seq, 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(r#"{"anchor":{"seq":2,"#), "{text}");
        assert_eq!(verify_file(&path).unwrap(), Ok(3));
        log.append(&events(15, 1)).unwrap();
        assert_eq!(verify_file(&path).unwrap(), Ok(4));

        // An unreadable line is evidence: the purge stops before it.
        let mut lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(String::from).collect();
        lines.insert(2, "tampered".into());
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let mut log = FileLog::new(path.clone());
        assert_eq!(log.purge(100).unwrap().map(|a| a.seq), Some(3));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().nth(1), Some("tampered"));
        assert_eq!(verify_file(&path).unwrap().unwrap_err().line, Some(2));
    }
}
