-- HMAC request-signing keys of service clients (see
-- src/store/identity/request_keys.rs). The gateway must recompute MACs, so
-- the secret is stored sealed (ChaCha20-Poly1305 under a key derived from
-- [identity] secret_key), never in clear. A key goes with its client.
-- Times are unix milliseconds.
CREATE TABLE request_signing_keys (
    key_id       TEXT    CONSTRAINT request_signing_keys_key_id_pkey PRIMARY KEY,
    client_id    TEXT    NOT NULL REFERENCES service_clients (client_id) ON DELETE CASCADE,
    secret       BYTEA   NOT NULL,
    secret_nonce BYTEA   NOT NULL,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    -- Raised by every change (creation, revocation): instances poll it.
    updated_at   BIGINT  NOT NULL
);
CREATE INDEX request_signing_keys_client ON request_signing_keys (client_id);
