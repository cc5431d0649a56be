//! A database of a test's own: a SQLite file in its temp dir, or a fresh
//! PostgreSQL database on the server `scripts/test` starts
//! (`RAMPART_TEST_POSTGRES_URL`), dropped when the value is dropped.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use rampart::store::Database;

pub struct TestDb {
    pub url: String,
    /// Admin URL and database name, for the drop.
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub fn sqlite(dir: &Path) -> Self {
        Self { url: format!("sqlite://{}/test.db", dir.display()), postgres: None }
    }

    /// `None` (with a message) when no PostgreSQL is configured.
    pub async fn postgres() -> Option<Self> {
        let admin = match std::env::var("RAMPART_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                eprintln!("skipped: RAMPART_TEST_POSTGRES_URL not set (scripts/test sets it)");
                return None;
            }
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("rampart_test_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let pool = sqlx::PgPool::connect(&admin).await.expect("cannot reach RAMPART_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.unwrap();
        pool.close().await;
        let (base, _) = admin.split_once('?').map_or((admin.as_str(), ""), |(b, q)| (b, q));
        let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
        Some(Self { url, postgres: Some((admin, name)) })
    }

    pub async fn open(&self) -> Database {
        Database::connect(&self.url).await.unwrap()
    }

    /// The password in the URL, if any (to check it never leaks).
    pub fn password(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let userinfo = rest.split('@').next()?;
        userinfo.split_once(':').map(|(_, p)| p.to_string()).filter(|_| rest.contains('@'))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else { return };
        // Drop runs outside async code, maybe during a panic: use a runtime of
        // its own on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}
