-- Who started a login that is still pending: passkey logins and external
-- (OpenID Connect) logins, which anyone may start, are bounded per client (an
-- address, or an IPv6 network of `[server] ipv6_prefix` bits), the client's
-- own oldest giving way. Counted per user, a stranger starting logins for a
-- username would push out its owner's pending login; counted only in total,
-- one client could fill the table. NULL for passkey registrations and second
-- factors, which stay bounded per user (see src/store/identity/passkeys.rs and
-- src/store/identity/external.rs).
ALTER TABLE webauthn_challenges ADD COLUMN client TEXT;
CREATE INDEX webauthn_challenges_client ON webauthn_challenges (client, purpose);
ALTER TABLE oidc_pending_logins ADD COLUMN client TEXT;
CREATE INDEX oidc_pending_logins_client ON oidc_pending_logins (client);
