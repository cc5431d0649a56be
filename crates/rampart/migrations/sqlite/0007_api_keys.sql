-- API keys (see src/store/identity/api_keys.rs). A key belongs to a user or
-- to a service client (exactly one of the two columns), and goes with its
-- owner. Keys are stored as SHA-256 hashes; the display prefix is what lists
-- show. Times are unix milliseconds.
CREATE TABLE api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    REFERENCES users (id) ON DELETE CASCADE,
    client_id      TEXT    REFERENCES service_clients (client_id) ON DELETE CASCADE,
    name           TEXT    NOT NULL,
    display_prefix TEXT    NOT NULL,
    key_hash       BLOB    NOT NULL UNIQUE,
    -- JSON arrays: scope names (sorted) and CIDR blocks.
    scopes         TEXT    NOT NULL DEFAULT '[]',
    cidrs          TEXT    NOT NULL DEFAULT '[]',
    expires_at     INTEGER,
    created_at     INTEGER NOT NULL,
    -- Raised by every change that matters to authentication (rotation,
    -- revocation): instances poll it to drop what they cached.
    updated_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    last_used_at   INTEGER,
    use_count      INTEGER NOT NULL DEFAULT 0,
    CHECK ((user_id IS NULL) <> (client_id IS NULL))
);
CREATE INDEX api_keys_user ON api_keys (user_id);
CREATE INDEX api_keys_client ON api_keys (client_id);
CREATE INDEX api_keys_updated_at ON api_keys (updated_at);
