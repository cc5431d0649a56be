-- Browser sessions (see src/store/identity/sessions.rs). The cookie holds a
-- random token; only its SHA-256 is stored. `id` is the public handle that
-- lists show and revocations name. The roles, tier and token version are a
-- snapshot of the user's, re-read every touch. Times are unix milliseconds;
-- the idle deadline is last_seen_at plus the configured idle timeout.
CREATE TABLE sessions (
    token_hash    BYTEA   CONSTRAINT sessions_token_hash_pkey PRIMARY KEY,
    id            TEXT    NOT NULL CONSTRAINT sessions_id_key UNIQUE,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    roles         TEXT    NOT NULL DEFAULT '[]',
    tier          TEXT,
    token_version BIGINT  NOT NULL,
    -- How the login was made: JSON array such as ["pwd","otp"].
    amr           TEXT    NOT NULL DEFAULT '[]',
    created_at    BIGINT  NOT NULL,
    last_seen_at  BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_user ON sessions (user_id, created_at);
CREATE INDEX sessions_expires ON sessions (expires_at);
