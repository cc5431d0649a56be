-- The signature counter of a passkey, beside the credential that holds it,
-- so that recording a use is conditional: two logins at once must not write
-- the counter backwards (see src/store/identity/passkeys.rs). 0 until the
-- next use for passkeys registered before.
ALTER TABLE passkeys ADD COLUMN sign_count BIGINT NOT NULL DEFAULT 0;
