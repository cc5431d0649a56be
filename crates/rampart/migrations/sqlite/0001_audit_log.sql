-- The tamper-evident audit log (see src/observe/audit/). Records are only ever
-- appended, in seq order, and deleted from the start by the retention purge.
CREATE TABLE audit_log (
    -- 1, 2, 3… with no gaps: the position in the hash chain.
    seq        INTEGER PRIMARY KEY,
    -- Unix time of the event, in milliseconds.
    ts_ms      INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    -- An opaque user or client id, never an e-mail address or a name.
    subject    TEXT,
    ip         TEXT,
    request_id TEXT,
    -- A JSON object with sorted keys, exactly as hashed.
    detail     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);

CREATE INDEX audit_log_ts_ms ON audit_log (ts_ms);
CREATE INDEX audit_log_kind ON audit_log (kind, seq);
CREATE INDEX audit_log_subject ON audit_log (subject, seq);
CREATE INDEX audit_log_ip ON audit_log (ip, seq);

-- The last purged record, from which the remaining chain is verified.
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
