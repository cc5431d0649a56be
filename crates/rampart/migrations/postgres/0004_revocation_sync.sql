-- Revocations reach every instance by polling (see src/identity/revoke.rs):
-- what was denied, and which users changed, since the last poll.
ALTER TABLE revoked_jtis ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX revoked_jtis_created_at ON revoked_jtis (created_at);
CREATE INDEX users_updated_at ON users (updated_at);
