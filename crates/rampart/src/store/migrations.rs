//! The schema migrations of each backend, embedded in the binary.
//!
//! `sqlx::migrate!` would embed the directories by itself, but it is a proc
//! macro that builds sqlx's database drivers a second time, for the
//! compiler's host (over half a minute of every clean build). So the files
//! are listed here, and a test checks the lists against the directories.
//! Each becomes a migration exactly as `migrate!` makes it (version and
//! description from the file name, SHA-384 checksum of the text), so a
//! database migrated by an earlier build is recognised as up to date.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

/// `(file name, SQL)` of SQLite's migrations, in order.
pub const SQLITE: &[(&str, &str)] = &[
    ("0001_audit_log.sql", include_str!("../../migrations/sqlite/0001_audit_log.sql")),
    ("0002_identity.sql", include_str!("../../migrations/sqlite/0002_identity.sql")),
    ("0003_service_clients.sql", include_str!("../../migrations/sqlite/0003_service_clients.sql")),
    ("0004_revocation_sync.sql", include_str!("../../migrations/sqlite/0004_revocation_sync.sql")),
    ("0005_mfa.sql", include_str!("../../migrations/sqlite/0005_mfa.sql")),
    ("0006_passkeys.sql", include_str!("../../migrations/sqlite/0006_passkeys.sql")),
    ("0007_api_keys.sql", include_str!("../../migrations/sqlite/0007_api_keys.sql")),
    ("0008_sessions.sql", include_str!("../../migrations/sqlite/0008_sessions.sql")),
    ("0009_request_signing.sql", include_str!("../../migrations/sqlite/0009_request_signing.sql")),
    ("0010_external_identities.sql", include_str!("../../migrations/sqlite/0010_external_identities.sql")),
    ("0011_passkey_sign_count.sql", include_str!("../../migrations/sqlite/0011_passkey_sign_count.sql")),
    ("0012_pending_logins_by_client.sql", include_str!("../../migrations/sqlite/0012_pending_logins_by_client.sql")),
    ("0013_admin_lock.sql", include_str!("../../migrations/sqlite/0013_admin_lock.sql")),
];

/// `(file name, SQL)` of PostgreSQL's migrations, in order.
pub const POSTGRES: &[(&str, &str)] = &[
    ("0001_audit_log.sql", include_str!("../../migrations/postgres/0001_audit_log.sql")),
    ("0002_identity.sql", include_str!("../../migrations/postgres/0002_identity.sql")),
    ("0003_service_clients.sql", include_str!("../../migrations/postgres/0003_service_clients.sql")),
    ("0004_revocation_sync.sql", include_str!("../../migrations/postgres/0004_revocation_sync.sql")),
    ("0005_mfa.sql", include_str!("../../migrations/postgres/0005_mfa.sql")),
    ("0006_passkeys.sql", include_str!("../../migrations/postgres/0006_passkeys.sql")),
    ("0007_api_keys.sql", include_str!("../../migrations/postgres/0007_api_keys.sql")),
    ("0008_sessions.sql", include_str!("../../migrations/postgres/0008_sessions.sql")),
    ("0009_request_signing.sql", include_str!("../../migrations/postgres/0009_request_signing.sql")),
    ("0010_external_identities.sql", include_str!("../../migrations/postgres/0010_external_identities.sql")),
    ("0011_passkey_sign_count.sql", include_str!("../../migrations/postgres/0011_passkey_sign_count.sql")),
    ("0012_pending_logins_by_client.sql", include_str!("../../migrations/postgres/0012_pending_logins_by_client.sql")),
    ("0013_admin_lock.sql", include_str!("../../migrations/postgres/0013_admin_lock.sql")),
];

/// The migrator of `files` (one of the lists above).
pub async fn migrator(files: &'static [(&'static str, &'static str)]) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(&'static [(&'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { self.0.iter().map(|&(name, sql)| migration(name, sql)).collect() })
    }
}

/// `<version>_<description>.sql` as sqlx reads it: the description with `_`
/// as spaces, outside a transaction when the text starts with
/// `-- no-transaction`.
fn migration(name: &str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let (version, rest) = name.split_once('_').ok_or_else(|| format!("{name}: not <version>_<description>.sql"))?;
    let description = rest.strip_suffix(".sql").ok_or_else(|| format!("{name}: not a .sql file"))?;
    let version: i64 = version.parse().map_err(|_| format!("{name}: the version is not a number"))?;
    let no_tx = sql.starts_with("-- no-transaction");
    Ok(Migration::new(
        version,
        Cow::Owned(description.replace('_', " ")),
        MigrationType::Simple,
        Cow::Borrowed(sql),
        no_tx,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Every file of each directory is listed, in order, with its text: a
    /// migration added to a directory and not here fails this test.
    #[test]
    fn the_lists_are_the_directories() {
        for (backend, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
            let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
                .collect();
            files.sort();
            let listed: Vec<(String, String)> = list.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
            assert_eq!(listed, files, "{backend}");
        }
    }

    /// As sqlx's own reading of a directory (`Migrator::new` on the path):
    /// versions, descriptions, checksums and order.
    #[tokio::test]
    async fn each_migration_is_what_sqlx_makes_of_its_file() {
        for (backend, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
            let ours = migrator(list).await.unwrap();
            let theirs = Migrator::new(dir.as_path()).await.unwrap();
            let key =
                |m: &Migration| (m.version, m.description.to_string(), m.checksum.to_vec(), m.no_tx, m.migration_type);
            assert_eq!(
                ours.iter().map(key).collect::<Vec<_>>(),
                theirs.iter().map(key).collect::<Vec<_>>(),
                "{backend}"
            );
        }
    }
}
