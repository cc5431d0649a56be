//! Browser sessions per request: authenticating a session cookie within its
//! touch interval (the token's SHA-256, one lookup by primary key in the
//! store, the timeout and revocation checks) on SQLite in memory, and the
//! CSRF token check an unsafe request adds (one HMAC-SHA256).
//! Run with `cargo bench -p rampart --bench sessions`.

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::identity::revoke::Revocations;
use rampart::identity::sessions::{LoginContext, Sessions};
use rampart::store::identity::{NewUser, TokenHash, UserStore};
use rampart::store::Database;
use rampart_core::config::sessions::{compile_sessions, SessionsConfig};
use rampart_core::config::ConfigPath;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (sessions, revocations, token) = rt.block_on(async {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        let mut errs = Vec::new();
        let cfg = SessionsConfig { enabled: true, ..Default::default() };
        let settings = compile_sessions(&cfg, &ConfigPath::parse("identity"), &mut errs).unwrap();
        let sessions = Sessions::new(settings, db.clone(), "0123456789abcdef0123456789abcdef");
        let now = rampart::identity::service::now_ms();
        let revocations = Revocations::load(db.clone(), Duration::from_secs(900), now).await.unwrap();
        let mut user = None;
        // A store with other users' sessions in it too.
        for i in 0..1_000 {
            let u = db.create_user(&NewUser::named(format!("user{i}")), now).await.unwrap();
            sessions.start(&u, &["pwd"], &LoginContext::default()).await.unwrap();
            user = Some(u);
        }
        let (token, _) = sessions.start(&user.unwrap(), &["pwd"], &LoginContext::default()).await.unwrap();
        (sessions, revocations, token)
    });
    c.bench_function("session_authenticate_sqlite", |b| {
        b.iter(|| {
            rt.block_on(async {
                sessions.authenticate(black_box(&token), None, &revocations, false, true).await.unwrap()
            })
        })
    });
    let hash = TokenHash::of(&token);
    let csrf = sessions.csrf_token(&hash);
    c.bench_function("csrf_token_check", |b| {
        b.iter(|| assert!(sessions.csrf_valid(black_box(&hash), black_box(&csrf))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
