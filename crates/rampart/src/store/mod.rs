//! Durable storage: one database, SQLite or PostgreSQL, chosen by the URL in
//! `[storage] database`.
//!
//! [`Database::connect`] opens a pool and applies the schema: each backend has
//! its own migrations (`migrations/sqlite/`, `migrations/postgres/`), embedded
//! in the binary, applied in order and recorded in `_sqlx_migrations`. What is
//! stored is reached through small traits, one per concern, implemented for
//! both backends, so callers never write SQL: [`audit::AuditStore`] for the
//! audit log, and in [`identity`] the users, refresh-token families, signing
//! keys, password-reset tokens and `jti` denylist of the identity service.
//!
//! **Invariant:** the database URL can hold a password. It is used only to
//! connect; errors and logs name it through [`redact_url`].
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use rampart::store::{redact_url, Database};
//! assert_eq!(redact_url("postgres://app:s3cret@db:5432/rampart?sslmode=require"), "postgres://app:***@db:5432/rampart");
//! let db = Database::connect("sqlite::memory:").await.unwrap();
//! assert_eq!(db.backend(), "sqlite");
//! # });
//! ```

/// A struct read from a query's row by column name, as
/// `#[derive(sqlx::FromRow)]` would read it, for SQLite's and PostgreSQL's
/// rows; a field marked `#[flatten]` is read as a row of its own type.
/// Written out because sqlx's derive is a proc macro that builds sqlx's
/// database drivers a second time, for the compiler's host: over half a
/// minute of every clean build, for twelve structs.
macro_rules! row {
    ($(#[$meta:meta])* struct $name:ident { $( $(#[$flat:ident])? $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$meta])*
        struct $name { $( $field: $ty ),* }
        row!(@impl $name, ::sqlx::sqlite::SqliteRow, $( [$($flat)?] $field ),*);
        row!(@impl $name, ::sqlx::postgres::PgRow, $( [$($flat)?] $field ),*);
    };
    (@impl $name:ident, $row:ty, $( [$($flat:ident)?] $field:ident ),*) => {
        impl<'r> ::sqlx::FromRow<'r, $row> for $name {
            fn from_row(row: &'r $row) -> ::std::result::Result<Self, ::sqlx::Error> {
                Ok(Self { $( $field: row!(@field row, $field $(, $flat)?) ),* })
            }
        }
    };
    (@field $row:ident, $field:ident) => { ::sqlx::Row::try_get($row, stringify!($field))? };
    (@field $row:ident, $field:ident, flatten) => { ::sqlx::FromRow::from_row($row)? };
}

pub mod audit;
pub mod copy;
pub mod identity;
pub mod migrations;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// How long a SQLite statement waits for another writer before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to PostgreSQL (or waiting for a pooled connection) may take.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open database.
#[derive(Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.backend())
    }
}

impl Database {
    /// Opens the database at `url` and brings its schema up to date. SQLite:
    /// the file (and its directory) is created if missing, with the WAL journal,
    /// foreign keys on and a busy timeout. PostgreSQL: a pool whose connections
    /// must be made within 10 s.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::open(url, true).await?.ok_or_else(|| anyhow::anyhow!("the database file is missing"))
    }

    /// As [`Database::connect`], but `None` for a SQLite file that does not
    /// exist (for tools that read, which should not create an empty database).
    pub async fn connect_existing(url: &str) -> anyhow::Result<Option<Self>> {
        Self::open(url, false).await
    }

    async fn open(url: &str, create: bool) -> anyhow::Result<Option<Self>> {
        let result = if url.starts_with("sqlite:") {
            open_sqlite(url, create).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url).await.map(Some)
        } else {
            Err(anyhow::anyhow!("not a sqlite:… or postgres://… URL"))
        };
        // sqlx errors do not echo the URL, but a driver message might quote
        // part of it; make sure the password never leaves.
        result.map_err(|e| anyhow::anyhow!("{}", scrub(&format!("{e:#}"), url)))
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection (waiting for those in use).
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

async fn open_sqlite(url: &str, create: bool) -> anyhow::Result<Option<Database>> {
    let options = SqliteConnectOptions::from_str(url).context("invalid sqlite URL")?;
    let path = options.get_filename().to_path_buf();
    let in_memory = path == Path::new(":memory:") || url.contains("mode=memory");
    if !in_memory {
        if !create && !path.exists() {
            return Ok(None);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let options = options
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL is durable across process crashes in WAL mode; only a power
        // loss can lose the last transactions, at a fraction of FULL's fsyncs.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    // Each connection to `:memory:` is its own database: keep to one.
    let max = if in_memory { 1 } else { 4 };
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .acquire_timeout(SQLITE_BUSY_TIMEOUT * 2)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    migrations::migrator(migrations::SQLITE).await?.run(&pool).await.context("cannot apply the schema migrations")?;
    Ok(Some(Database::Sqlite(pool)))
}

async fn open_postgres(url: &str) -> anyhow::Result<Database> {
    let options = PgConnectOptions::from_str(url).context("invalid postgres URL")?.application_name("rampart");
    if let Some(warning) = unverified_warning(&options) {
        tracing::warn!(host = options.get_host(), "{warning}");
    }
    let pool = PgPoolOptions::new().max_connections(10).acquire_timeout(POSTGRES_CONNECT_TIMEOUT).connect_with(options);
    let pool = tokio::time::timeout(POSTGRES_CONNECT_TIMEOUT, pool)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {}s", POSTGRES_CONNECT_TIMEOUT.as_secs()))?
        .context("cannot connect")?;
    migrations::migrator(migrations::POSTGRES).await?.run(&pool).await.context("cannot apply the schema migrations")?;
    Ok(Database::Postgres(pool))
}

/// The warning [`Database::connect`] logs for a PostgreSQL `url` whose
/// server is not verified (see below); `None` for any other URL.
pub fn postgres_tls_warning(url: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    unverified_warning(&PgConnectOptions::from_str(url).ok()?)
}

/// A connection to a PostgreSQL server beyond this machine carries password
/// hashes, session and signing-key material: it should be TLS with the
/// server's certificate checked. libpq's default (`sslmode=prefer`, which
/// sqlx follows) and `require` encrypt without checking who answers, so a
/// man in the middle goes unnoticed. Loopback hosts and Unix sockets are
/// exempt.
fn unverified_warning(options: &PgConnectOptions) -> Option<String> {
    use sqlx::postgres::PgSslMode;
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let mode = options.get_ssl_mode();
    if local || matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull) {
        return None;
    }
    Some(format!(
        "the PostgreSQL server's certificate is not verified (sslmode={}): add sslmode=verify-full \
         (and sslrootcert=<CA file> for a private CA) to [storage] database",
        match mode {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            _ => "require",
        }
    ))
}

/// `url` fit for an error message: the password replaced by `***`, the query
/// string (which may carry `password=`) dropped.
pub fn redact_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or("");
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{hidden}@{host}{path}")
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// `text` with the password of `url` (as written, and percent-decoded) masked.
fn scrub(text: &str, url: &str) -> String {
    let Some(rest) = url.split_once("://").map(|(_, r)| r) else { return text.to_string() };
    let authority = rest.split('/').next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return text.to_string() };
    let Some((_, password)) = userinfo.split_once(':') else { return text.to_string() };
    if password.is_empty() {
        return text.to_string();
    }
    let decoded = percent_encoding::percent_decode_str(password).decode_utf8_lossy().into_owned();
    text.replace(password, "***").replace(&decoded, "***")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[track_caller]
    fn check(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected);
    }

    #[test]
    fn remote_postgres_without_verified_tls_is_warned_about() {
        let warn = |url: &str| unverified_warning(&PgConnectOptions::from_str(url).unwrap());
        let w = warn("postgres://app:pw@db.example.com/rampart").unwrap();
        assert!(w.contains("sslmode=prefer") && w.contains("verify-full"), "{w}");
        assert!(!w.contains("pw"), "{w}");
        assert!(warn("postgres://app@10.0.0.5/r?sslmode=require").unwrap().contains("sslmode=require"));
        assert!(warn("postgres://app@db/r?sslmode=disable").unwrap().contains("sslmode=disable"));
        for fine in [
            "postgres://app@db.example.com/r?sslmode=verify-full",
            "postgres://app@db.example.com/r?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
            "postgres://app@127.0.0.1/r",
            "postgres://app@localhost/r?sslmode=disable",
            "postgres://app@[::1]:5432/r",
            "postgres://app@%2Fvar%2Frun%2Fpostgresql/r",
            "postgres:///r?host=/var/run/postgresql",
        ] {
            assert_eq!(warn(fine), None, "{fine}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        check("postgres://u:p@h:5432/db", "postgres://u:***@h:5432/db");
        check("postgres://u:p%40ss@h/db?password=x", "postgres://u:***@h/db");
        check("postgresql://u@h/db", "postgresql://u@h/db");
        check("postgres://h/db", "postgres://h/db");
        check("postgres://u:p@ss@h/db", "postgres://u:***@h/db");
        check("sqlite://rampart.db", "sqlite://rampart.db");
        check("sqlite:data/r.db?mode=rwc", "sqlite:data/r.db");
    }

    #[test]
    fn passwords_are_scrubbed_from_messages() {
        let url = "postgres://u:p%40ss@h/db";
        assert_eq!(scrub("failed for p%40ss and p@ss", url), "failed for *** and ***");
        assert_eq!(scrub("nothing here", "postgres://u@h/db"), "nothing here");
    }

    #[tokio::test]
    async fn sqlite_files_are_created_with_their_directory_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/dir/r.db", dir.path().display());
        assert!(Database::connect_existing(&url).await.unwrap().is_none(), "not created by readers");
        let db = Database::connect(&url).await.unwrap();
        let Database::Sqlite(pool) = &db else { panic!("sqlite expected") };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.unwrap();
        assert_eq!(fk, 1);
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(pool).await.unwrap();
        assert_eq!(n, 0);
        db.close().await;
        assert!(Database::connect_existing(&url).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn connect_errors_do_not_leak_the_password() {
        let err = Database::connect("postgres://u:hunter2@127.0.0.1:notaport/db").await.unwrap_err();
        assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
        let err = Database::connect("mysql://u:hunter2@h/db").await.unwrap_err();
        assert!(!format!("{err:#}").contains("hunter2"), "{err:#}");
    }
}
