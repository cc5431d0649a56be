-- Second factors (see src/store/identity/mfa.rs). The TOTP secret is sealed
-- by the caller (ChaCha20-Poly1305); backup codes are stored as SHA-256.
CREATE TABLE user_totp (
    user_id        TEXT    NOT NULL PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret         BYTEA   NOT NULL,
    secret_nonce   BYTEA   NOT NULL,
    created_at     BIGINT  NOT NULL,
    -- NULL until a first code confirms the enrolment.
    confirmed_at   BIGINT,
    -- The last time step a code was accepted for: older and equal steps are replays.
    last_used_step BIGINT
);

CREATE TABLE mfa_backup_codes (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
