-- OAuth2 service clients for the client_credentials grant (see
-- src/store/identity/clients.rs). Secrets are stored as SHA-256 hashes:
-- they are 32 random bytes, so a slow hash would add nothing.

CREATE TABLE service_clients (
    client_id    TEXT    NOT NULL PRIMARY KEY,
    name         TEXT    NOT NULL,
    secret_hash  BLOB    NOT NULL,
    -- JSON arrays of scope and role names, sorted.
    scopes       TEXT    NOT NULL DEFAULT '[]',
    roles        TEXT    NOT NULL DEFAULT '[]',
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
