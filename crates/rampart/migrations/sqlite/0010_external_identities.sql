-- Logins through external OpenID Connect providers (see
-- src/store/identity/external.rs and src/identity/oidc/).

-- Which provider account signs in as which local user. One account of a
-- provider links to at most one user, and a user links at most one account
-- per provider.
CREATE TABLE external_identities (
    -- The `[identity.oidc.<name>]` name.
    provider      TEXT    NOT NULL,
    -- The provider's `sub`: stable and unique within the provider.
    subject       TEXT    NOT NULL,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The address the provider named when the link was made (for display).
    email         TEXT,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER,
    CONSTRAINT external_identities_subject PRIMARY KEY (provider, subject),
    CONSTRAINT external_identities_user_provider UNIQUE (user_id, provider)
);

-- Logins in progress, single use: taken with DELETE … RETURNING. The state is
-- stored as its SHA-256 and the browser binding too; the nonce is no secret
-- (it travels in the authorization request and comes back in the ID token).
CREATE TABLE oidc_pending_logins (
    state_hash   BLOB    NOT NULL PRIMARY KEY,
    provider     TEXT    NOT NULL,
    browser_hash BLOB    NOT NULL,
    nonce        TEXT    NOT NULL,
    return_to    TEXT    NOT NULL,
    -- Set when a signed-in user links an account rather than logs in.
    link_user_id TEXT    REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE INDEX oidc_pending_logins_expires_at ON oidc_pending_logins (expires_at);
