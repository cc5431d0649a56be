//! The identity store on SQLite and on PostgreSQL: case-insensitive uniqueness
//! of usernames and e-mail addresses, search and bounded pages, refresh-token
//! rotation with reuse detection and its grace window (also under concurrent
//! refreshes of one token), single-use reset tokens, the `jti` denylist, the
//! one-active-signing-key invariant, and hostile input refused with typed
//! errors before the database is touched.
//!
//! PostgreSQL tests need `RAMPART_TEST_POSTGRES_URL` (an admin URL; `scripts/test`
//! starts a server and sets it). Each test creates its own database and drops it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use crate::common::db::TestDb;
use rampart::store::identity::keys::MAX_PUBLIC_KEY_BYTES;
use rampart::store::identity::{
    DenylistStore, NewRefreshToken, NewResetToken, NewSigningKey, NewUser, RefreshTokenStore, ResetTokenStore,
    RotateOutcome, SealedKey, SigningKeyRecord, SigningKeyStore, StoreError, Successor, TokenHash, User, UserQuery,
    UserStore, MAX_PAGE_SIZE, MAX_USERNAME_BYTES,
};
use rampart::store::Database;
use rampart_core::config::secret::Secret;
use rampart_core::token::Alg;

/// Runs `scenario` on SQLite, then on PostgreSQL when one is available.
macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            let tdb = TestDb::sqlite(dir.path());
            let db = tdb.open().await;
            $scenario(&db).await;
            db.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(tdb) = TestDb::postgres().await else { return };
            let db = tdb.open().await;
            $scenario(&db).await;
            db.close().await;
        }
    };
}

on_both_backends!(sqlite_usernames_and_emails_are_unique, postgres_usernames_and_emails_are_unique, uniqueness);
on_both_backends!(sqlite_users_are_searched_and_paged, postgres_users_are_searched_and_paged, search_and_pages);
on_both_backends!(sqlite_user_changes, postgres_user_changes, user_changes);
on_both_backends!(sqlite_reuse_revokes_the_family, postgres_reuse_revokes_the_family, rotation_and_reuse);
on_both_backends!(sqlite_grace_gives_the_same_successor, postgres_grace_gives_the_same_successor, grace_window);
on_both_backends!(
    sqlite_concurrent_refreshes_rotate_once,
    postgres_concurrent_refreshes_rotate_once,
    concurrent_rotation
);
on_both_backends!(sqlite_revocation_and_purge, postgres_revocation_and_purge, revocation_and_purge);
on_both_backends!(sqlite_reset_tokens_are_single_use, postgres_reset_tokens_are_single_use, reset_tokens);
on_both_backends!(sqlite_denied_jtis_expire, postgres_denied_jtis_expire, denylist);
on_both_backends!(sqlite_erased_names_cannot_be_taken, postgres_erased_names_cannot_be_taken, erased_names);

/// Erasure renames an account to `deleted:<id>`; nobody may take such a name
/// first (in any case or width), or erasure would fail on the unique key.
async fn erased_names(db: &Database) {
    let id = make_user(db, "pat").await;
    for name in [format!("deleted:{id}"), format!("DELETED:{id}"), format!("ｄｅｌｅｔｅｄ：{id}"), "Deleted:x".into()]
    {
        let refused = db.create_user(&NewUser::named(name.as_str()), T0).await.unwrap_err();
        assert!(matches!(refused, StoreError::Invalid { field: "username", .. }), "{name}: {refused:?}");
        assert!(db.user_by_username(&name).await.unwrap().is_none(), "{name}");
    }
    assert!(db.erase_user(&id, T0 + 1).await.unwrap().is_some());
    let erased = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(erased.username, format!("deleted:{id}"));
    // Names that merely contain the word are fine.
    make_user(db, "deleted").await;
    make_user(db, "undeleted:x").await;
}

on_both_backends!(sqlite_passkey_counter_never_goes_back, postgres_passkey_counter_never_goes_back, passkey_counter);

/// Of two logins with one passkey at once, the one that records its use last
/// may carry the lower counter: it must not write the counter backwards.
async fn passkey_counter(db: &Database) {
    use rampart::store::identity::{PasskeyRecord, PasskeyStore};
    let user_id = make_user(db, "pat").await;
    let record = PasskeyRecord {
        id: "pk_1".into(),
        user_id: user_id.clone(),
        name: "laptop".into(),
        credential: "{\"counter\":0}".into(),
        cred_id: "cred1".into(),
        created_at: T0,
        last_used_at: None,
    };
    assert!(db.insert_passkey(&record, 10).await.unwrap());
    let stored = |db: &Database| {
        let user_id = user_id.clone();
        let db = db.clone();
        async move { db.passkeys_of(&user_id).await.unwrap().remove(0) }
    };
    assert!(db.record_passkey_use("pk_1", "{\"counter\":7}", 7, T0 + 1).await.unwrap());
    assert!(
        !db.record_passkey_use("pk_1", "{\"counter\":6}", 6, T0 + 2).await.unwrap(),
        "a lower counter is not stored"
    );
    let now = stored(db).await;
    assert_eq!((now.credential.as_str(), now.last_used_at), ("{\"counter\":7}", Some(T0 + 1)));
    // The same counter is stored: authenticators without one always send 0.
    assert!(db.record_passkey_use("pk_1", "{\"counter\":7,\"x\":1}", 7, T0 + 3).await.unwrap());
    assert!(db.record_passkey_use("pk_1", "{\"counter\":9}", 9, T0 + 4).await.unwrap());
    assert_eq!(stored(db).await.credential, "{\"counter\":9}");
    assert!(!db.record_passkey_use("pk_missing", "{}", 1, T0).await.unwrap());
}
on_both_backends!(sqlite_one_signing_key_is_active, postgres_one_signing_key_is_active, signing_keys);
on_both_backends!(sqlite_hostile_input_is_refused, postgres_hostile_input_is_refused, hostile_input);

/// A time in unix milliseconds.
const T0: u64 = 1_750_000_000_000;
const HOUR: u64 = 3_600_000;

fn user_named(username: &str, email: Option<&str>) -> NewUser {
    NewUser { username: username.into(), email: email.map(Into::into), ..NewUser::default() }
}

async fn make_user(db: &Database, username: &str) -> String {
    db.create_user(&NewUser::named(username), T0).await.unwrap().id
}

/// What the identity service does with HMAC and a secret: a successor that
/// every refresh of one token derives alike.
fn successor_of(token: &str, expires_at: u64) -> (String, Successor) {
    let next = format!("{token}>");
    let successor = Successor { token_hash: TokenHash::of(&next), expires_at };
    (next, successor)
}

async fn issue(db: &Database, user: &str, token: &str, client: Option<&str>, expires_at: u64) -> String {
    let new = NewRefreshToken {
        token_hash: TokenHash::of(token),
        user_id: user.into(),
        client_id: client.map(Into::into),
        family_id: None,
        created_at: T0,
        expires_at,
    };
    db.insert_refresh_token(&new).await.unwrap().family_id
}

async fn rotate(db: &Database, token: &str, now: u64, grace_ms: u64) -> RotateOutcome {
    let (_, successor) = successor_of(token, now + HOUR);
    db.rotate_refresh_token(&TokenHash::of(token), now, grace_ms, &successor).await.unwrap()
}

fn successor_id(outcome: &RotateOutcome) -> String {
    match outcome {
        RotateOutcome::Rotated { successor_id, .. } | RotateOutcome::Grace { successor_id, .. } => successor_id.clone(),
        other => panic!("no successor in {other:?}"),
    }
}

/// `SELECT count(*) … WHERE … = $1` on either backend.
async fn count(db: &Database, sql: &str, arg: &str) -> i64 {
    match db {
        Database::Sqlite(p) => sqlx::query_scalar(sql).bind(arg).fetch_one(p).await.unwrap(),
        Database::Postgres(p) => sqlx::query_scalar(sql).bind(arg).fetch_one(p).await.unwrap(),
    }
}

/// Opens as many connections as concurrent tasks will use, so that they run
/// their transactions side by side instead of queueing for a connection.
async fn warm_pool(db: &Database) {
    match db {
        Database::Sqlite(p) => {
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(p.acquire().await.unwrap());
            }
        }
        Database::Postgres(p) => {
            let mut held = Vec::new();
            for _ in 0..8 {
                held.push(p.acquire().await.unwrap());
            }
        }
    }
}

/// Runs `f` in 8 tasks that start together; returns their results in order.
async fn race<T, F, Fut>(db: &Database, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(Database, usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    warm_pool(db).await;
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (start, run) = (start.clone(), f(db.clone(), i));
            tokio::spawn(async move {
                start.wait().await;
                run.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

async fn exec(db: &Database, sql: &str) -> Result<u64, sqlx::Error> {
    match db {
        Database::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Database::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str) {
    match result {
        Err(StoreError::Conflict { field: f }) => assert_eq!(f, field),
        other => panic!("expected a conflict on {field}, got {other:?}"),
    }
}

async fn uniqueness(db: &Database) {
    let alice = db.create_user(&user_named("Alice", Some("Alice@Example.COM")), T0).await.unwrap();
    assert_eq!(alice.username, "Alice", "kept as written");
    assert_eq!(alice.email.as_deref(), Some("Alice@Example.COM"));
    assert_eq!(alice.id.len(), 36, "a UUID");
    for name in ["alice", "ALICE", "ａｌｉｃｅ", "ＡＬＩＣＥ"] {
        assert_conflict(db.create_user(&NewUser::named(name), T0).await, "username");
    }
    assert_conflict(db.create_user(&user_named("bob", Some("alice@EXAMPLE.com")), T0).await, "email");
    // Users without an address do not collide with each other.
    let carol = db.create_user(&NewUser::named("carol"), T0).await.unwrap();
    let dave = db.create_user(&NewUser::named("dave"), T0).await.unwrap();
    assert_ne!(carol.id, dave.id);

    let found = db.user_by_username("aLiCe").await.unwrap().unwrap();
    assert_eq!(found, alice, "reads back as created");
    assert_eq!(db.user_by_username("ＡＬＩＣＥ").await.unwrap().unwrap().id, alice.id);
    assert_eq!(db.user_by_email("ALICE@example.com").await.unwrap().unwrap().id, alice.id);
    assert_eq!(db.user_by_id(&alice.id).await.unwrap().unwrap().id, alice.id);
    assert_eq!(db.user_by_username("alice2").await.unwrap(), None);
    assert_eq!(db.user_by_email("nobody@example.com").await.unwrap(), None);
    assert_eq!(db.user_by_id("no-such-id").await.unwrap(), None);

    // Eight concurrent registrations of one name: the database lets one win.
    let names = ["race", "Race", "RACE", "rAce", "raCe", "racE", "RAce", "raCE"];
    let results = race(db, |db, i| async move { db.create_user(&NewUser::named(names[i]), T0).await }).await;
    let mut won = 0;
    for result in results {
        match result {
            Ok(_) => won += 1,
            Err(StoreError::Conflict { field: "username" }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(won, 1);
}

async fn search_and_pages(db: &Database) {
    for i in 0..205 {
        let email = (i % 2 == 0).then(|| format!("u{i:03}@example.com"));
        db.create_user(&user_named(&format!("user{i:03}"), email.as_deref()), T0 + i).await.unwrap();
    }
    for name in ["per%cent", "under_score", "back\\slash"] {
        make_user(db, name).await;
    }
    let total = 208;
    let page =
        |search: Option<&str>, limit: u32, offset: u64| UserQuery { search: search.map(Into::into), limit, offset };
    let names = |users: Vec<User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();

    let first = db.list_users(&UserQuery::default()).await.unwrap();
    assert_eq!(first.len(), 50);
    assert_eq!(first[0].username, "back\\slash");
    assert_eq!(first[3].username, "user000", "in username order");

    let all = db.list_users(&page(None, u32::MAX, 0)).await.unwrap();
    assert_eq!(all.len(), MAX_PAGE_SIZE as usize, "a page is bounded");
    let rest = db.list_users(&page(None, u32::MAX, u64::from(MAX_PAGE_SIZE))).await.unwrap();
    assert_eq!(rest.len(), total - MAX_PAGE_SIZE as usize);
    let mut seen: HashSet<String> = all.into_iter().map(|u| u.id).collect();
    seen.extend(rest.into_iter().map(|u| u.id));
    assert_eq!(seen.len(), total, "pages neither overlap nor skip");
    assert!(db.list_users(&page(None, 10, 10_000)).await.unwrap().is_empty());
    assert!(db.list_users(&page(None, 10, u64::MAX)).await.unwrap().is_empty());
    assert!(db.list_users(&page(None, 0, 0)).await.unwrap().is_empty());

    // Prefixes of usernames or addresses, regardless of case.
    let tens = names(db.list_users(&page(Some("USER00"), 100, 0)).await.unwrap());
    assert_eq!(tens, (0..10).map(|i| format!("user{i:03}")).collect::<Vec<_>>());
    let by_email = names(db.list_users(&page(Some("U17"), 100, 0)).await.unwrap());
    assert_eq!(by_email, ["user170", "user172", "user174", "user176", "user178"]);
    let paged = names(db.list_users(&page(Some("user1"), 30, 90)).await.unwrap());
    assert_eq!(paged, (190..200).map(|i| format!("user{i}")).collect::<Vec<_>>());
    assert_eq!(names(db.list_users(&page(Some("u042@example.com"), 10, 0)).await.unwrap()), ["user042"]);
    assert_eq!(names(db.list_users(&page(Some(""), 5, 0)).await.unwrap()).len(), 5, "empty search lists all");

    // LIKE metacharacters in a search match only themselves.
    assert_eq!(names(db.list_users(&page(Some("per%"), 10, 0)).await.unwrap()), ["per%cent"]);
    assert_eq!(names(db.list_users(&page(Some("under_"), 10, 0)).await.unwrap()), ["under_score"]);
    assert_eq!(names(db.list_users(&page(Some("back\\"), 10, 0)).await.unwrap()), ["back\\slash"]);
    for literal in ["%", "_", "under%", "u_er", "\\", "' OR 1=1 --"] {
        assert!(db.list_users(&page(Some(literal), 10, 0)).await.unwrap().is_empty(), "{literal}");
    }
}

async fn user_changes(db: &Database) {
    let id = make_user(db, "erin").await;
    let other = db.create_user(&user_named("frank", Some("frank@example.com")), T0).await.unwrap();
    let h1 = Secret::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
    let h2 = Secret::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI");

    assert_eq!(db.set_password_hash(&id, Some(&h1), false, T0 + 1).await.unwrap(), 0, "a rehash keeps sessions");
    assert_eq!(db.set_password_hash(&id, Some(&h1), true, T0 + 2).await.unwrap(), 1, "a change ends them");
    let user = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(user.password_hash.as_ref(), Some(&h1));
    assert_eq!((user.token_version, user.updated_at), (1, T0 + 2));
    assert!(!format!("{user:?}").contains("argon2"), "hashes stay out of Debug");

    // The rehash after a login does not undo a password change made meanwhile.
    assert!(!db.rehash_password(&id, &h2, &h1, T0 + 3).await.unwrap());
    assert!(db.rehash_password(&id, &h1, &h2, T0 + 3).await.unwrap());
    assert!(!db.rehash_password(&id, &h1, &h2, T0 + 3).await.unwrap());
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().password_hash, Some(h2));

    let roles = db.set_roles(&id, &["writer".into(), "admin".into(), "writer".into()], T0 + 4).await.unwrap();
    assert_eq!(roles, ["admin", "writer"]);
    db.set_tier(&id, Some("gold"), T0 + 4).await.unwrap();
    db.lock_user(&id, T0 + 1000, T0 + 5).await.unwrap();
    db.set_disabled(&id, true, T0 + 5).await.unwrap();
    assert_eq!(db.bump_token_version(&id, T0 + 6).await.unwrap(), 2);
    db.record_login(&id, T0 + 7).await.unwrap();
    let user = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(user.roles, ["admin", "writer"]);
    assert_eq!(user.tier.as_deref(), Some("gold"));
    assert!(user.is_locked(T0 + 999) && !user.is_locked(T0 + 1000));
    assert!(user.is_admin_locked(T0 + 999) && !user.is_admin_locked(T0 + 1000), "an administrator's");
    assert!(user.disabled);
    assert_eq!((user.token_version, user.last_login_at, user.updated_at), (2, Some(T0 + 7), T0 + 6));

    // An automatic lockout only ever extends a lock: a shorter one leaves the
    // lock in force, a longer one replaces it; an administrator's lock sets it.
    db.extend_lock(&id, T0 + 500, T0 + 7).await.unwrap();
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().locked_until, Some(T0 + 1000));
    db.extend_lock(&id, T0 + 2000, T0 + 7).await.unwrap();
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().locked_until, Some(T0 + 2000));
    db.lock_user(&id, T0 + 1000, T0 + 7).await.unwrap();
    assert_eq!(db.user_by_id(&id).await.unwrap().unwrap().locked_until, Some(T0 + 1000));

    db.unlock_user(&id, T0 + 8).await.unwrap();
    assert!(!db.user_by_id(&id).await.unwrap().unwrap().locked_by_admin);
    db.extend_lock(&id, T0 + 300, T0 + 8).await.unwrap();
    let user = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!(user.locked_until, Some(T0 + 300), "an unlocked user locks");
    assert!(user.is_locked(T0 + 9) && !user.is_admin_locked(T0 + 9), "automatically");
    // An administrator's lock that ran out is no longer one once the
    // automatic lock takes its place.
    db.lock_user(&id, T0 + 10, T0 + 9).await.unwrap();
    db.extend_lock(&id, T0 + 400, T0 + 10).await.unwrap();
    assert!(!db.user_by_id(&id).await.unwrap().unwrap().locked_by_admin);
    db.unlock_user(&id, T0 + 8).await.unwrap();
    db.set_tier(&id, None, T0 + 8).await.unwrap();
    db.set_disabled(&id, false, T0 + 8).await.unwrap();
    db.set_password_hash(&id, None, false, T0 + 8).await.unwrap();
    let user = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!((user.locked_until, user.tier, user.disabled, user.password_hash), (None, None, false, None));

    // E-mail: unique across users, case-insensitively; removable.
    assert_conflict(db.set_email(&id, Some("FRANK@example.com"), true, T0 + 9).await, "email");
    db.set_email(&id, Some("Erin@Example.com"), true, T0 + 9).await.unwrap();
    assert_eq!(db.user_by_email("erin@example.com").await.unwrap().unwrap().id, id);
    assert!(db.user_by_email("erin@example.com").await.unwrap().unwrap().email_verified);
    db.set_email(&id, None, true, T0 + 10).await.unwrap();
    let user = db.user_by_id(&id).await.unwrap().unwrap();
    assert_eq!((user.email, user.email_verified), (None, false));

    // Every change to a user that does not exist says so.
    let missing = "0190a0a0-0000-7000-8000-000000000000";
    let not_found =
        |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::NotFound { what: "user" })), "{r:?}");
    not_found(db.set_tier(missing, None, T0).await);
    not_found(db.lock_user(missing, T0, T0).await);
    not_found(db.unlock_user(missing, T0).await);
    not_found(db.extend_lock(missing, T0, T0).await);
    not_found(db.set_disabled(missing, true, T0).await);
    not_found(db.record_login(missing, T0).await);
    not_found(db.set_email(missing, None, false, T0).await);
    not_found(db.set_roles(missing, &[], T0).await.map(drop));
    not_found(db.bump_token_version(missing, T0).await.map(drop));
    not_found(db.set_password_hash(missing, None, true, T0).await.map(drop));
    assert!(!db.rehash_password(missing, &Secret::new("a"), &Secret::new("b"), T0).await.unwrap());

    // Deleting a user takes their tokens along.
    issue(db, &other.id, "frank-refresh", None, T0 + HOUR).await;
    let reset = NewResetToken {
        token_hash: TokenHash::of("frank-reset"),
        user_id: other.id.clone(),
        created_at: T0,
        expires_at: T0 + HOUR,
    };
    db.insert_reset_token(&reset).await.unwrap();
    assert!(db.delete_user(&other.id).await.unwrap());
    assert!(!db.delete_user(&other.id).await.unwrap());
    assert_eq!(db.refresh_token(&TokenHash::of("frank-refresh")).await.unwrap(), None);
    assert_eq!(db.consume_reset_token(&TokenHash::of("frank-reset"), T0 + 1).await.unwrap(), None);
    assert_eq!(db.user_by_username("frank").await.unwrap(), None);
}

async fn rotation_and_reuse(db: &Database) {
    let user = make_user(db, "grace").await;
    let family = issue(db, &user, "t1", Some("web"), T0 + HOUR).await;

    let first = rotate(db, "t1", T0 + 10, 1_000).await;
    let RotateOutcome::Rotated { user_id, family_id, client_id, successor_id: s1 } = first.clone() else {
        panic!("{first:?}")
    };
    assert_eq!(
        (user_id.as_str(), family_id.as_str(), client_id.as_deref()),
        (user.as_str(), family.as_str(), Some("web"))
    );
    let spent = db.refresh_token(&TokenHash::of("t1")).await.unwrap().unwrap();
    assert_eq!((spent.used_at, spent.replaced_by.as_deref()), (Some(T0 + 10), Some(s1.as_str())));
    let (t2, _) = successor_of("t1", 0);
    let next = db.refresh_token(&TokenHash::of(&t2)).await.unwrap().unwrap();
    assert_eq!(
        (next.id.as_str(), next.family_id.as_str(), next.client_id.as_deref()),
        (s1.as_str(), family.as_str(), Some("web"))
    );
    assert!(next.is_live(T0 + 10));
    assert_eq!(next.expires_at, T0 + 10 + HOUR);

    // The successor rotates in turn.
    assert!(matches!(rotate(db, &t2, T0 + 20, 1_000).await, RotateOutcome::Rotated { .. }));
    let (t3, _) = successor_of(&t2, 0);

    // The first token again, well after the grace window: the family dies.
    let reused = rotate(db, "t1", T0 + 10 + 1_001, 1_000).await;
    assert_eq!(reused, RotateOutcome::Reused { user_id: user.clone(), family_id: family.clone(), revoked: 3 });
    for token in ["t1", t2.as_str(), t3.as_str()] {
        let stored = db.refresh_token(&TokenHash::of(token)).await.unwrap().unwrap();
        assert_eq!(stored.revoked_at, Some(T0 + 1_011), "{token}");
        assert_eq!(rotate(db, token, T0 + 2_000, 1_000).await, RotateOutcome::Invalid, "{token}");
    }
    assert_eq!(count(db, "SELECT count(*) FROM refresh_tokens WHERE family_id = $1", &family).await, 3);

    assert_eq!(rotate(db, "never-issued", T0, 1_000).await, RotateOutcome::Unknown);

    // Expired: refused, and nothing else happens to the family.
    issue(db, &user, "short", None, T0 + 100).await;
    assert_eq!(rotate(db, "short", T0 + 100, 1_000).await, RotateOutcome::Invalid);
    let stored = db.refresh_token(&TokenHash::of("short")).await.unwrap().unwrap();
    assert_eq!((stored.used_at, stored.revoked_at), (None, None));
    assert!(matches!(rotate(db, "short", T0 + 99, 1_000).await, RotateOutcome::Rotated { .. }));

    // Hashes are unique.
    let dup = NewRefreshToken {
        token_hash: TokenHash::of("short"),
        user_id: user.clone(),
        client_id: None,
        family_id: None,
        created_at: T0,
        expires_at: T0 + HOUR,
    };
    assert_conflict(db.insert_refresh_token(&dup).await, "token");
    let orphan = NewRefreshToken { token_hash: TokenHash::of("orphan"), user_id: "nobody".into(), ..dup };
    assert!(matches!(db.insert_refresh_token(&orphan).await, Err(StoreError::NotFound { what: "user" })));
}

async fn grace_window(db: &Database) {
    let user = make_user(db, "heidi").await;
    let family = issue(db, &user, "g1", None, T0 + HOUR).await;
    let grace = 5_000;
    let s1 = successor_id(&rotate(db, "g1", T0 + 1_000, grace).await);

    // The same refresh again (a second tab, a retry): the same successor.
    let again = rotate(db, "g1", T0 + 3_000, grace).await;
    assert_eq!(
        again,
        RotateOutcome::Grace {
            user_id: user.clone(),
            family_id: family.clone(),
            client_id: None,
            successor_id: s1.clone(),
            successor_expires_at: T0 + 1_000 + HOUR,
        }
    );
    assert_eq!(rotate(db, "g1", T0 + 6_000, grace).await, again, "the window includes its end");
    assert_eq!(count(db, "SELECT count(*) FROM refresh_tokens WHERE family_id = $1", &family).await, 2);

    // A successor other than the stored one cannot be handed out: refused,
    // but not taken for theft.
    let other = Successor { token_hash: TokenHash::of("not-the-successor"), expires_at: T0 + HOUR };
    let refused = db.rotate_refresh_token(&TokenHash::of("g1"), T0 + 3_000, grace, &other).await.unwrap();
    assert_eq!(refused, RotateOutcome::Invalid);
    let (g2, _) = successor_of("g1", 0);
    assert!(db.refresh_token(&TokenHash::of(&g2)).await.unwrap().unwrap().is_live(T0 + 3_000));

    // Once the successor itself was used, the window no longer covers it.
    assert!(matches!(rotate(db, &g2, T0 + 4_000, grace).await, RotateOutcome::Rotated { .. }));
    let reused = rotate(db, "g1", T0 + 4_500, grace).await;
    assert_eq!(reused, RotateOutcome::Reused { user_id: user.clone(), family_id: family.clone(), revoked: 3 });

    // Just past the window: reuse.
    issue(db, &user, "h1", None, T0 + HOUR).await;
    rotate(db, "h1", T0 + 1_000, grace).await;
    assert!(matches!(rotate(db, "h1", T0 + 6_001, grace).await, RotateOutcome::Reused { revoked: 2, .. }));
}

async fn concurrent_rotation(db: &Database) {
    let user = make_user(db, "ivan").await;
    for round in 0..6 {
        let token = format!("c{round}");
        let family = issue(db, &user, &token, None, T0 + HOUR).await;
        // Odd rounds: no grace, and each task with its own clock.
        let grace = if round % 2 == 0 { 10_000 } else { 0 };
        let outcomes = race(db, |db, i| {
            let token = token.clone();
            let now = if grace == 0 { T0 + 100 + i as u64 } else { T0 + 100 };
            async move { rotate(&db, &token, now, grace).await }
        })
        .await;
        let rotated: Vec<_> = outcomes.iter().filter(|o| matches!(o, RotateOutcome::Rotated { .. })).collect();
        assert_eq!(rotated.len(), 1, "round {round}: {outcomes:?}");
        let winner = successor_id(rotated[0]);
        for o in &outcomes {
            match o {
                RotateOutcome::Rotated { .. } | RotateOutcome::Reused { .. } => {}
                RotateOutcome::Grace { successor_id, .. } => assert_eq!(successor_id, &winner),
                RotateOutcome::Invalid if grace == 0 => {} // after another task revoked the family
                other => panic!("round {round}: {other:?}"),
            }
        }
        if grace > 0 {
            assert!(outcomes.iter().all(|o| !matches!(o, RotateOutcome::Reused { .. })), "{outcomes:?}");
        }
        assert_eq!(
            count(db, "SELECT count(*) FROM refresh_tokens WHERE family_id = $1", &family).await,
            2,
            "round {round}: exactly one successor"
        );
    }

    // Several spent tokens of one family presented at once (a thief replaying
    // an old chain): the family is revoked once, every token exactly once.
    let family = issue(db, &user, "chain", None, T0 + HOUR).await;
    let mut chain = vec!["chain".to_string()];
    for step in 0..3 {
        let last = chain[step].clone();
        rotate(db, &last, T0 + 200 + step as u64, 0).await;
        chain.push(successor_of(&last, 0).0);
    }
    let spent = chain[..3].to_vec();
    let outcomes = race(db, |db, i| {
        let token = spent[i % 3].clone();
        async move { rotate(&db, &token, T0 + 10_000, 0).await }
    })
    .await;
    let mut revoked = 0;
    for o in &outcomes {
        match o {
            RotateOutcome::Reused { revoked: n, .. } => revoked += n,
            RotateOutcome::Invalid => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(revoked, 4, "{outcomes:?}");
    assert_eq!(count(db, "SELECT count(*) FROM refresh_tokens WHERE family_id = $1", &family).await, 4);
}

async fn revocation_and_purge(db: &Database) {
    let judy = make_user(db, "judy").await;
    let ken = make_user(db, "ken").await;
    let f1 = issue(db, &judy, "j1", None, T0 + HOUR).await;
    issue(db, &judy, "j2", None, T0 + HOUR).await;
    issue(db, &judy, "j3", None, T0 + 10).await;
    issue(db, &ken, "k1", None, T0 + HOUR).await;
    rotate(db, "j1", T0 + 1, 0).await;

    assert_eq!(db.revoke_refresh_family(&f1, T0 + 2).await.unwrap(), 2);
    assert_eq!(db.revoke_refresh_family(&f1, T0 + 3).await.unwrap(), 0, "already revoked");
    assert_eq!(db.revoke_refresh_family("no-such-family", T0 + 3).await.unwrap(), 0);
    let (j1next, _) = successor_of("j1", 0);
    assert_eq!(rotate(db, &j1next, T0 + 4, 0).await, RotateOutcome::Invalid);

    assert_eq!(db.revoke_user_refresh_tokens(&judy, T0 + 5).await.unwrap(), 2, "j2 and j3");
    assert_eq!(rotate(db, "j2", T0 + 6, 0).await, RotateOutcome::Invalid);
    assert!(matches!(rotate(db, "k1", T0 + 6, 0).await, RotateOutcome::Rotated { .. }), "other users keep theirs");

    // Purging removes expired tokens only; spent and revoked ones stay until then.
    assert_eq!(db.purge_expired_refresh_tokens(T0 + 10).await.unwrap(), 1);
    assert_eq!(rotate(db, "j3", T0 + 11, 0).await, RotateOutcome::Unknown);
    assert!(db.refresh_token(&TokenHash::of("j1")).await.unwrap().is_some());
    assert_eq!(db.purge_expired_refresh_tokens(T0 + 10 * HOUR).await.unwrap(), 5);
}

async fn reset_tokens(db: &Database) {
    let leo = make_user(db, "leo").await;
    let mia = make_user(db, "mia").await;
    let new = |token: &str, user: &str, expires_at: u64| NewResetToken {
        token_hash: TokenHash::of(token),
        user_id: user.into(),
        created_at: T0,
        expires_at,
    };
    db.insert_reset_token(&new("r1", &leo, T0 + HOUR)).await.unwrap();
    db.insert_reset_token(&new("r2", &leo, T0 + HOUR)).await.unwrap();
    db.insert_reset_token(&new("r3", &mia, T0 + HOUR)).await.unwrap();
    db.insert_reset_token(&new("r4", &mia, T0 + 10)).await.unwrap();
    assert_conflict(db.insert_reset_token(&new("r1", &leo, T0 + HOUR)).await, "token");
    assert!(matches!(
        db.insert_reset_token(&new("r0", "nobody", T0 + HOUR)).await,
        Err(StoreError::NotFound { what: "user" })
    ));

    // Peeking names the user and spends nothing; an expired token names no one.
    assert_eq!(db.reset_token_user(&TokenHash::of("r1"), T0 + 1).await.unwrap(), Some(leo.clone()));
    assert_eq!(db.reset_token_user(&TokenHash::of("r4"), T0 + 10).await.unwrap(), None);
    assert_eq!(db.consume_reset_token(&TokenHash::of("r1"), T0 + 1).await.unwrap(), Some(leo.clone()));
    assert_eq!(db.reset_token_user(&TokenHash::of("r1"), T0 + 2).await.unwrap(), None, "used");
    assert_eq!(db.consume_reset_token(&TokenHash::of("r1"), T0 + 2).await.unwrap(), None, "single use");
    assert_eq!(db.consume_reset_token(&TokenHash::of("r2"), T0 + 2).await.unwrap(), None, "spent with its sibling");
    assert_eq!(db.consume_reset_token(&TokenHash::of("r4"), T0 + 10).await.unwrap(), None, "expired");
    assert_eq!(db.consume_reset_token(&TokenHash::of("r3"), T0 + 10).await.unwrap(), Some(mia.clone()));
    assert_eq!(db.consume_reset_token(&TokenHash::of("unknown"), T0).await.unwrap(), None);

    // Eight concurrent uses of one token: one wins.
    for round in 0..4 {
        let token = format!("race{round}");
        db.insert_reset_token(&new(&token, &leo, T0 + HOUR)).await.unwrap();
        let results = race(db, |db, _| {
            let token = token.clone();
            async move { db.consume_reset_token(&TokenHash::of(&token), T0 + 100).await.unwrap() }
        })
        .await;
        let mut winners = 0;
        for user in results.into_iter().flatten() {
            assert_eq!(user, leo);
            winners += 1;
        }
        assert_eq!(winners, 1, "round {round}");
    }

    assert_eq!(db.purge_expired_reset_tokens(T0 + 10).await.unwrap(), 1);
    assert_eq!(db.purge_expired_reset_tokens(T0 + 2 * HOUR).await.unwrap(), 7);
}

async fn denylist(db: &Database) {
    db.deny_jti("j-1", T0 + 100, T0).await.unwrap();
    db.deny_jti("j-2", T0 + 10, T0 + 1).await.unwrap();
    assert!(db.is_jti_denied("j-1", T0).await.unwrap());
    assert!(db.is_jti_denied("j-1", T0 + 99).await.unwrap());
    assert!(!db.is_jti_denied("j-1", T0 + 100).await.unwrap(), "expired");
    assert!(!db.is_jti_denied("j-3", T0).await.unwrap());

    // What was denied since a time, still in force, oldest first.
    let since = db.denied_since(T0, "", T0 + 5, 10).await.unwrap();
    assert_eq!(since, vec![("j-1".to_string(), T0 + 100, T0), ("j-2".to_string(), T0 + 10, T0 + 1)]);
    assert_eq!(db.denied_since(T0 + 1, "", T0 + 5, 10).await.unwrap().len(), 1);
    assert_eq!(db.denied_since(T0, "", T0 + 10, 10).await.unwrap().len(), 1, "j-2 has expired");
    assert_eq!(db.denied_since(T0, "", T0, 1).await.unwrap().len(), 1, "limit");

    // Denying again keeps the later expiry.
    db.deny_jti("j-1", T0 + 50, T0 + 2).await.unwrap();
    assert!(db.is_jti_denied("j-1", T0 + 60).await.unwrap());
    db.deny_jti("j-1", T0 + 200, T0 + 3).await.unwrap();
    assert!(db.is_jti_denied("j-1", T0 + 150).await.unwrap());

    assert_eq!(db.purge_expired_jtis(T0 + 20).await.unwrap(), 1);
    assert!(db.is_jti_denied("j-1", T0 + 20).await.unwrap());
    assert_eq!(db.purge_expired_jtis(T0 + 200).await.unwrap(), 1);
    assert_eq!(db.purge_expired_jtis(T0 + 200).await.unwrap(), 0);

    // Users whose token version was raised, by time of change.
    let a = db.create_user(&NewUser::named("rev-a"), T0).await.unwrap();
    let b = db.create_user(&NewUser::named("rev-b"), T0).await.unwrap();
    assert!(db.versions_changed_since(T0, "", 10).await.unwrap().is_empty(), "version 0 is never listed");
    assert_eq!(db.bump_token_version(&a.id, T0 + 5).await.unwrap(), 1);
    assert_eq!(db.bump_token_version(&b.id, T0 + 7).await.unwrap(), 1);
    assert_eq!(db.bump_token_version(&a.id, T0 + 9).await.unwrap(), 2);
    let changed = db.versions_changed_since(T0 + 6, "", 10).await.unwrap();
    assert_eq!(changed, vec![(b.id.clone(), 1, T0 + 7), (a.id.clone(), 2, T0 + 9)]);
    assert_eq!(db.versions_changed_since(T0 + 10, "", 10).await.unwrap(), vec![]);
}

fn key(kid: &str, created_at: u64) -> NewSigningKey {
    NewSigningKey {
        kid: kid.into(),
        alg: Alg::EdDSA,
        public_key: format!("-----BEGIN PUBLIC KEY-----\n{kid}\n-----END PUBLIC KEY-----\n"),
        private_key: Some(SealedKey { ciphertext: vec![0, 1, 2, 255], nonce: vec![9; 12] }),
        created_at,
    }
}

async fn signing_keys(db: &Database) {
    for (i, kid) in ["k1", "k2", "k3"].into_iter().enumerate() {
        db.insert_signing_key(&key(kid, T0 + i as u64)).await.unwrap();
    }
    assert_conflict(db.insert_signing_key(&key("k1", T0)).await, "kid");
    let verify_only = NewSigningKey { private_key: None, ..key("v1", T0 + 10) };
    db.insert_signing_key(&verify_only).await.unwrap();
    assert_eq!(db.active_signing_key().await.unwrap(), None);

    db.activate_signing_key("k1", T0 + 100).await.unwrap();
    assert_eq!(db.active_signing_key().await.unwrap().unwrap().kid, "k1");
    db.activate_signing_key("k2", T0 + 200).await.unwrap();
    db.activate_signing_key("k2", T0 + 250).await.unwrap();
    let all = db.signing_keys().await.unwrap();
    assert_eq!(all.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k1", "k2", "k3", "v1"]);
    assert_eq!((all[0].active, all[0].not_after_sign), (false, Some(T0 + 200)));
    assert_eq!((all[1].active, all[1].not_after_sign), (true, None));
    let k2 = key("k2", T0 + 1);
    let expected = SigningKeyRecord {
        kid: k2.kid,
        alg: k2.alg,
        public_key: k2.public_key,
        private_key: k2.private_key,
        active: true,
        created_at: T0 + 1,
        not_after_sign: None,
        retire_at: None,
    };
    assert_eq!(all[1], expected, "reads back as stored");
    assert_eq!(all[3].private_key, None);
    assert!(matches!(db.activate_signing_key("k9", T0).await, Err(StoreError::NotFound { .. })));

    // The database itself refuses a second active key.
    assert!(exec(db, "UPDATE signing_keys SET active = TRUE WHERE kid = 'k3'").await.is_err());

    // Retirement: not the active key; retired keys leave the JWKS and cannot sign again.
    assert!(matches!(db.retire_signing_key("k2", T0 + 500).await, Err(StoreError::Invalid { .. })));
    assert!(matches!(db.retire_signing_key("k9", T0 + 500).await, Err(StoreError::NotFound { .. })));
    db.retire_signing_key("k1", T0 + 500).await.unwrap();
    let kids = |keys: Vec<SigningKeyRecord>| keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(kids(db.verification_keys(T0 + 499).await.unwrap()), ["k1", "k2", "k3", "v1"]);
    assert_eq!(kids(db.verification_keys(T0 + 500).await.unwrap()), ["k2", "k3", "v1"]);
    assert!(matches!(db.activate_signing_key("k1", T0 + 600).await, Err(StoreError::Invalid { .. })));
    // A retirement still to come is cancelled by activation.
    db.retire_signing_key("k3", T0 + 10_000).await.unwrap();
    db.activate_signing_key("k3", T0 + 700).await.unwrap();
    assert_eq!(db.active_signing_key().await.unwrap().unwrap().retire_at, None);
    assert_eq!(db.delete_retired_signing_keys(T0 + 600).await.unwrap(), 1);
    assert_eq!(kids(db.signing_keys().await.unwrap()), ["k2", "k3", "v1"]);

    // Concurrent activations queue: every one succeeds, one key is left active.
    let kids_to_race: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    for (i, kid) in kids_to_race.iter().enumerate() {
        db.insert_signing_key(&key(kid, T0 + 1_000 + i as u64)).await.unwrap();
    }
    for round in 0..3u64 {
        let results = race(db, |db, i| {
            let kid = kids_to_race[i].clone();
            async move { db.activate_signing_key(&kid, T0 + 2_000 + round).await }
        })
        .await;
        for result in results {
            result.unwrap();
        }
        let active: Vec<_> = db.signing_keys().await.unwrap().into_iter().filter(|k| k.active).collect();
        assert_eq!(active.len(), 1, "round {round}: {active:?}");
        assert_eq!(db.active_signing_key().await.unwrap().unwrap().kid, active[0].kid);
    }
    let all = db.signing_keys().await.unwrap();
    assert!(all.iter().filter(|k| !k.active && k.kid != "v1").all(|k| k.not_after_sign.is_some()), "{all:?}");
}

async fn hostile_input(db: &Database) {
    let huge = "x".repeat(1 << 20);
    let nul = "ali\0ce";

    // SQL metacharacters are only text.
    let bobby = "Robert'); DROP TABLE users;--";
    let email = "x'--\"@example.com";
    let user = db.create_user(&user_named(bobby, Some(email)), T0).await.unwrap();
    assert_eq!(db.user_by_username(bobby).await.unwrap().unwrap().username, bobby);
    assert_eq!(db.user_by_email(email).await.unwrap().unwrap().id, user.id);
    let found = db.list_users(&UserQuery { search: Some("robert');".into()), ..UserQuery::default() }).await.unwrap();
    assert_eq!(found.len(), 1);
    db.set_roles(&user.id, &["a' OR '1'='1".into(), "\"; --".into()], T0).await.unwrap();
    assert_eq!(db.user_by_id(&user.id).await.unwrap().unwrap().roles, ["\"; --", "a' OR '1'='1"]);
    db.deny_jti("'; DELETE FROM revoked_jtis; --", T0 + 10, T0).await.unwrap();
    assert!(db.is_jti_denied("'; DELETE FROM revoked_jtis; --", T0).await.unwrap());

    // Limits are exact.
    let longest = "a".repeat(MAX_USERNAME_BYTES);
    db.create_user(&NewUser::named(longest.as_str()), T0).await.unwrap();
    let too_long = "b".repeat(MAX_USERNAME_BYTES + 1);
    assert!(matches!(
        db.create_user(&NewUser::named(too_long), T0).await,
        Err(StoreError::TooLong { field: "username", max: MAX_USERNAME_BYTES })
    ));
    assert!(matches!(
        db.create_user(&NewUser::named(""), T0).await,
        Err(StoreError::Invalid { field: "username", .. })
    ));

    // From here on the pool is closed: every answer below comes from the
    // checks made before any query, or the call would fail with a pool error.
    db.close().await;
    #[track_caller]
    fn refused<T: std::fmt::Debug>(result: Result<T, StoreError>, expected: &str) {
        let got = match &result {
            Err(StoreError::TooLong { field, .. }) => format!("too long {field}"),
            Err(StoreError::NulByte { field }) => format!("nul {field}"),
            Err(StoreError::Invalid { field, .. }) => format!("invalid {field}"),
            Err(StoreError::NotFound { what }) => format!("not found {what}"),
            other => format!("{other:?}"),
        };
        assert_eq!(got, expected);
    }
    let with = |f: &dyn Fn(&mut NewUser)| {
        let mut u = NewUser::named("mallory");
        f(&mut u);
        u
    };
    refused(db.create_user(&NewUser::named(huge.as_str()), T0).await, "too long username");
    refused(db.create_user(&NewUser::named(nul), T0).await, "nul username");
    refused(db.create_user(&with(&|u| u.email = Some(huge.clone())), T0).await, "too long email");
    refused(db.create_user(&with(&|u| u.email = Some("a\0@b.c".into())), T0).await, "nul email");
    refused(
        db.create_user(&with(&|u| u.password_hash = Some(Secret::new(huge.as_str()))), T0).await,
        "too long password_hash",
    );
    refused(db.create_user(&with(&|u| u.password_hash = Some(Secret::new("$2b$\0"))), T0).await, "nul password_hash");
    refused(db.create_user(&with(&|u| u.roles = vec![huge.clone()]), T0).await, "too long role");
    refused(db.create_user(&with(&|u| u.roles = vec!["ad\0min".into()]), T0).await, "nul role");
    refused(db.create_user(&with(&|u| u.roles = vec!["x".into(); 1 << 16]), T0).await, "invalid roles");
    refused(db.create_user(&with(&|u| u.tier = Some("go\0ld".into())), T0).await, "nul tier");
    refused(db.create_user(&with(&|u| u.tier = Some("gold\r\nX-Admin: 1".into())), T0).await, "invalid tier");
    refused(db.set_roles(&user.id, &["a\0".into()], T0).await, "nul role");
    refused(db.set_email(&user.id, Some(huge.as_str()), false, T0).await, "too long email");
    refused(db.set_tier(&huge, None, T0).await, "not found user");
    refused(db.bump_token_version("a\0", T0).await, "not found user");
    refused(db.deny_jti(&huge, T0, T0).await, "too long jti");
    refused(db.deny_jti("j\0", T0, T0).await, "nul jti");
    let refresh = NewRefreshToken {
        token_hash: TokenHash::of("x"),
        user_id: user.id.clone(),
        client_id: Some("cli\0ent".into()),
        family_id: None,
        created_at: T0,
        expires_at: T0 + 1,
    };
    refused(db.insert_refresh_token(&refresh).await, "nul client_id");
    refused(db.insert_refresh_token(&NewRefreshToken { user_id: huge.clone(), ..refresh }).await, "too long user_id");
    refused(db.insert_signing_key(&key(&huge, T0)).await, "too long kid");
    refused(db.insert_signing_key(&key("k\0", T0)).await, "nul kid");
    let big_public = NewSigningKey { public_key: "p".repeat(MAX_PUBLIC_KEY_BYTES + 1), ..key("k", T0) };
    refused(db.insert_signing_key(&big_public).await, "too long public_key");
    refused(db.activate_signing_key(&huge, T0).await, "not found signing key");
    refused(db.create_user(&NewUser::named("late"), u64::MAX).await, "invalid now");

    // Lookups by what cannot be stored find nothing.
    assert_eq!(db.user_by_username(&huge).await.unwrap(), None);
    assert_eq!(db.user_by_username(nul).await.unwrap(), None);
    assert_eq!(db.user_by_email(&huge).await.unwrap(), None);
    assert_eq!(db.user_by_email("a\0@b.c").await.unwrap(), None);
    assert_eq!(db.user_by_id(&huge).await.unwrap(), None);
    assert_eq!(db.user_by_id("\0").await.unwrap(), None);
    assert!(!db.is_jti_denied(&huge, T0).await.unwrap());
    assert!(!db.is_jti_denied("j\0", T0).await.unwrap());
    assert!(!db.delete_user(&huge).await.unwrap());
    assert_eq!(db.revoke_refresh_family("f\0", T0).await.unwrap(), 0);
    for search in [huge.as_str(), "al\0"] {
        let query = UserQuery { search: Some(search.into()), ..UserQuery::default() };
        assert!(db.list_users(&query).await.unwrap().is_empty());
    }

    // And the closed pool really is closed.
    assert!(matches!(db.user_by_id("x").await, Err(StoreError::Database(_))));
}
