//! Checking a chain: every record's hash matches its content, seqs run on by one
//! from the anchor, and every `prev_hash` is the hash of the record before.
//!
//! What each kind of tampering looks like to the checker, at the first record
//! it affects:
//!
//! | change | first bad record |
//! |---|---|
//! | a field edited | that record: its hash no longer matches |
//! | a record deleted | the next one: its seq skips |
//! | a record inserted | the inserted one (seq repeats, or its hash or link is wrong), or, if it was forged with a valid hash and link, the next one |
//! | two records swapped | the first of them: its seq is out of order (or, with seqs swapped too, its hash) |
//! | records purged from the start | the first kept one, unless an anchor names the last purged record |
//!
//! Deleting records from the end of a log leaves no trace in the chain itself;
//! the writer logs its head hourly (`audit chain head`) so that an outside copy
//! of the logs can show it.

use std::fmt;

use super::record::{AuditRecord, ChainHead};

/// The first record that breaks the chain, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    /// The seq the bad record carries, when it could be read.
    pub seq: Option<u64>,
    /// 1-based line number, for the JSON-lines file.
    pub line: Option<u64>,
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.seq) {
            (Some(l), Some(s)) => write!(f, "line {l} (seq {s}): {}", self.reason),
            (Some(l), None) => write!(f, "line {l}: {}", self.reason),
            (None, Some(s)) => write!(f, "record seq {s}: {}", self.reason),
            (None, None) => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for VerifyError {}

/// Checks records one at a time, in stored order.
#[derive(Debug)]
pub struct ChainVerifier {
    prev: ChainHead,
    count: u64,
}

impl ChainVerifier {
    /// Starts after `anchor` (the last purged record), or at the beginning.
    pub fn new(anchor: Option<ChainHead>) -> Self {
        Self { prev: anchor.unwrap_or_else(ChainHead::genesis), count: 0 }
    }

    /// Checks the next record.
    pub fn check(&mut self, r: &AuditRecord) -> Result<(), VerifyError> {
        let bad = |reason: String| VerifyError { seq: Some(r.seq), line: None, reason };
        if r.compute_hash() != r.hash {
            return Err(bad("hash does not match the record's content: it was changed after it was written".into()));
        }
        let expected = self.prev.seq.saturating_add(1);
        if r.seq < expected {
            return Err(bad(format!(
                "seq {} comes after seq {}: a record was inserted, duplicated or moved",
                r.seq, self.prev.seq
            )));
        }
        if r.seq > expected {
            let missing =
                if r.seq - expected == 1 { format!("{expected}") } else { format!("{expected}..{}", r.seq - 1) };
            return Err(bad(format!("seq {missing} missing before it: records were deleted or moved")));
        }
        if r.prev_hash != self.prev.hash {
            let what = if self.prev.seq == 0 {
                "the start of the log".to_string()
            } else if self.count == 0 {
                format!("the anchor (seq {})", self.prev.seq)
            } else {
                format!("record seq {}", self.prev.seq)
            };
            return Err(bad(format!(
                "prev_hash does not match the hash of {what}: a record before it was replaced, inserted or deleted"
            )));
        }
        self.prev = r.head();
        self.count += 1;
        Ok(())
    }

    /// Records checked so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The last good record (or the anchor).
    pub fn head(&self) -> &ChainHead {
        &self.prev
    }
}

/// Checks `records` (in stored order) starting from `anchor` (seq and hash of
/// the last purged record, if any). Returns how many records were checked, or
/// the first one that breaks the chain.
pub fn verify_records(
    records: impl IntoIterator<Item = AuditRecord>,
    anchor: Option<(u64, String)>,
) -> Result<u64, VerifyError> {
    let mut v = ChainVerifier::new(anchor.map(|(seq, hash)| ChainHead { seq, hash }));
    for r in records {
        v.check(&r)?;
    }
    Ok(v.count())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::observe::audit::record::{AuditEvent, AuditKind};

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| {
                let e = AuditEvent::new(AuditKind::AdminAction).detail("i", i);
                let r = AuditRecord::chained(&head, 1000 + i, &e);
                head = r.head();
                r
            })
            .collect()
    }

    /// Applies `tamper` to a chain of five and checks which seq is named first.
    #[track_caller]
    fn check(tamper: fn(&mut Vec<AuditRecord>), expected: Result<u64, (u64, &str)>) {
        let mut records = chain(5);
        tamper(&mut records);
        match (verify_records(records, None), expected) {
            (Ok(n), Ok(m)) => assert_eq!(n, m),
            (Err(e), Err((seq, words))) => {
                assert_eq!(e.seq, Some(seq), "{e}");
                assert!(e.reason.contains(words), "{e}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn each_kind_of_tampering_names_the_first_bad_record() {
        check(|_| {}, Ok(5));
        check(|r| r[2].ts_ms += 1, Err((3, "changed")));
        check(
            |r| {
                r[2].detail.insert("i".into(), 9.into());
            },
            Err((3, "changed")),
        );
        check(
            |r| {
                r.remove(2);
            },
            Err((4, "seq 3 missing")),
        );
        check(
            |r| {
                r.drain(1..3);
            },
            Err((4, "seq 2..3 missing")),
        );
        check(|r| r.insert(2, r[1].clone()), Err((2, "inserted")));
        check(|r| r.swap(2, 3), Err((4, "missing")));
        check(
            |r| {
                // Seqs swapped back, so only the links give it away.
                r.swap(2, 3);
                r[2].seq = 3;
                r[3].seq = 4;
                r[2].hash = r[2].compute_hash();
                r[3].hash = r[3].compute_hash();
            },
            Err((3, "prev_hash")),
        );
        check(
            |r| {
                // A forged record with a valid hash, spliced in.
                let forged = AuditRecord::chained(&r[1].head(), 1, &AuditEvent::new(AuditKind::AuthSuccess));
                r.insert(2, forged);
            },
            Err((3, "inserted")),
        );
        check(
            |r| {
                r.remove(0);
            },
            Err((2, "seq 1 missing")),
        );
    }

    #[test]
    fn an_anchor_lets_a_purged_chain_verify() {
        let mut records = chain(5);
        let kept = records.split_off(3);
        let anchor = (records[2].seq, records[2].hash.clone());
        assert_eq!(verify_records(kept.clone(), Some(anchor)), Ok(2));
        let e = verify_records(kept.clone(), Some((3, "f".repeat(64)))).unwrap_err();
        assert_eq!(e.seq, Some(4));
        assert!(e.reason.contains("the anchor (seq 3)"), "{e}");
        assert_eq!(verify_records(kept, None).unwrap_err().seq, Some(4));
        assert_eq!(verify_records(Vec::new(), Some((3, "x".into()))), Ok(0));
    }
}
