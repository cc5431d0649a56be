-- Passkeys (WebAuthn) and the state of ceremonies in progress (see
-- src/store/identity/passkeys.rs). A passkey holds no secret: `credential` is
-- the public key, counter and flags as webauthn-rs serializes them.

CREATE TABLE passkeys (
    id           TEXT    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    -- The serialized webauthn-rs Passkey (JSON).
    credential   TEXT    NOT NULL,
    -- The credential id, base64url: unique across all accounts.
    cred_id      TEXT    NOT NULL CONSTRAINT passkeys_cred_id UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER
);

CREATE INDEX passkeys_user ON passkeys (user_id);

-- Single-use challenges: taken with DELETE … RETURNING.
CREATE TABLE webauthn_challenges (
    id         TEXT    NOT NULL PRIMARY KEY,
    -- NULL for a login started for an unknown username (a decoy).
    user_id    TEXT    REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT    NOT NULL CHECK (purpose IN ('register', 'login', 'mfa')),
    -- The serialized webauthn-rs ceremony state (JSON), `null` for a decoy.
    state      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX webauthn_challenges_user ON webauthn_challenges (user_id, purpose);
CREATE INDEX webauthn_challenges_expires_at ON webauthn_challenges (expires_at);
