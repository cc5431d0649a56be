-- Identity (see src/store/identity/). Times are unix milliseconds; ids are
-- UUIDv7 text, never an e-mail address; tokens are stored as SHA-256 hashes.
-- Constraints are named after their columns: PostgreSQL errors name the
-- constraint, and src/store/identity/ reads the conflicting field from it.

CREATE TABLE users (
    id             TEXT    CONSTRAINT users_id_pkey PRIMARY KEY,
    -- As written by the user.
    username       TEXT    NOT NULL,
    -- NFKC, lower case, NFKC: equal keys are the same username.
    username_key   TEXT    NOT NULL CONSTRAINT users_username_key UNIQUE,
    email          TEXT,
    -- Lower case; unique when present.
    email_key      TEXT    CONSTRAINT users_email_key UNIQUE,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    -- PHC string or imported hash; NULL for users without a password.
    password_hash  TEXT,
    -- A JSON array of role names, sorted.
    roles          TEXT    NOT NULL DEFAULT '[]',
    tier           TEXT,
    locked_until   BIGINT,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    -- Raised by "log out everywhere" and password changes.
    token_version  BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    last_login_at  BIGINT,
    CHECK ((email IS NULL) = (email_key IS NULL))
);

-- Opaque refresh tokens; a family is every token rotated from one login.
CREATE TABLE refresh_tokens (
    id          TEXT    CONSTRAINT refresh_tokens_id_pkey PRIMARY KEY,
    family_id   TEXT    NOT NULL,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  BYTEA   NOT NULL CONSTRAINT refresh_tokens_token_hash UNIQUE,
    client_id   TEXT,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    -- When it was rotated, and into which token (no foreign key: either may
    -- be purged first).
    used_at     BIGINT,
    replaced_by TEXT,
    revoked_at  BIGINT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- JWT signing keys; private keys encrypted by the caller.
CREATE TABLE signing_keys (
    kid               TEXT    CONSTRAINT signing_keys_kid_pkey PRIMARY KEY,
    alg               TEXT    NOT NULL,
    -- PEM or JWK text.
    public_key        TEXT    NOT NULL,
    private_key       BYTEA,
    private_key_nonce BYTEA,
    active            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT  NOT NULL,
    -- When it stopped being the active key.
    not_after_sign    BIGINT,
    -- From when it is neither published nor trusted.
    retire_at         BIGINT,
    CHECK ((private_key IS NULL) = (private_key_nonce IS NULL))
);

-- At most one active signing key.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;

CREATE TABLE password_reset_tokens (
    token_hash BYTEA   CONSTRAINT password_reset_tokens_token_hash_pkey PRIMARY KEY,
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT
);

CREATE INDEX password_reset_tokens_user ON password_reset_tokens (user_id);
CREATE INDEX password_reset_tokens_expires_at ON password_reset_tokens (expires_at);

-- Access-token ids revoked by logout (the fallback when there is no Redis).
CREATE TABLE revoked_jtis (
    jti        TEXT    CONSTRAINT revoked_jtis_jti_pkey PRIMARY KEY,
    expires_at BIGINT  NOT NULL
);

CREATE INDEX revoked_jtis_expires_at ON revoked_jtis (expires_at);
