-- HMAC request-signing keys of service clients (see
-- src/store/identity/request_keys.rs). The gateway must recompute MACs, so
-- the secret is stored sealed (ChaCha20-Poly1305 under a key derived from
-- [identity] secret_key), never in clear. A key goes with its client.
-- Times are unix milliseconds.
CREATE TABLE request_signing_keys (
    key_id       TEXT    NOT NULL PRIMARY KEY,
    client_id    TEXT    NOT NULL REFERENCES service_clients (client_id) ON DELETE CASCADE,
    secret       BLOB    NOT NULL,
    secret_nonce BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    -- Raised by every change (creation, revocation): instances poll it.
    updated_at   INTEGER NOT NULL
);
CREATE INDEX request_signing_keys_client ON request_signing_keys (client_id);
