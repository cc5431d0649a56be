-- Whether the lock in force is an administrator's (POST /admin/users/{id}/lock,
-- `rampart user lock`) rather than the automatic one after repeated wrong
-- passwords. Only an administrator's lock takes admin power away from the
-- user's API keys and tokens: anyone can trigger the automatic one by
-- guessing passwords, and must not be able to cut the admins off that way.
-- Locks in force at the upgrade are taken as administrators' (the safe
-- reading; automatic ones run out within `lockout`).
ALTER TABLE users ADD COLUMN locked_by_admin BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET locked_by_admin = TRUE WHERE locked_until IS NOT NULL;
