//! Account administration for the `rampart user` command: create users (the
//! password read from stdin, checked by the same policy as registration),
//! import users with their hashes from other applications, list, lock,
//! unlock, log out everywhere and set roles, directly in the configured
//! database.

use std::time::Duration;

use rampart_core::config::identity::IdentitySettings;

use std::collections::HashSet;
use std::io::{BufRead, Read as _};

use rampart_core::config::secret::Secret;
use rampart_core::password::identify;
use serde_json::Value;

use super::hasher::HashPool;
use super::service::{now_ms, IdentityError};
use crate::store::identity::{username_key, NewUser, RefreshTokenStore, StoreError, User, UserQuery, UserStore};
use crate::store::Database;

/// Creates a user with a password that passes the policy, and these roles.
pub async fn add_user(
    settings: &IdentitySettings,
    db: &Database,
    username: &str,
    email: Option<&str>,
    password: &str,
    roles: &[String],
) -> Result<User, IdentityError> {
    let hasher = HashPool::new(1, 0, settings.argon2);
    super::service::create_user(settings, &hasher, db, username, email, password, roles).await
}

/// The user named `username`, or `BadInput` naming it.
pub async fn find(db: &Database, username: &str) -> Result<User, IdentityError> {
    db.user_by_username(username).await?.ok_or_else(|| IdentityError::BadInput(format!("no user named `{username}`")))
}

pub async fn list_users(db: &Database, search: Option<String>, limit: u32) -> Result<Vec<User>, IdentityError> {
    Ok(db.list_users(&UserQuery { search, limit, offset: 0 }).await?)
}

/// Refuses the user's logins for `duration` (`None`: until unlocked) and
/// ends their sessions: refresh tokens revoked, access tokens refused by
/// every running gateway within its next revocation poll.
pub async fn lock(db: &Database, username: &str, duration: Option<Duration>) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    let now = now_ms();
    // Longer than the store can hold (or than anyone means) is until unlocked,
    // as over HTTP.
    let until = duration.map_or(u64::MAX / 2, |d| {
        now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).min(u64::MAX / 2)
    });
    db.lock_user(&user.id, until, now).await?;
    end_sessions(db, &user.id, now).await?;
    find(db, username).await
}

/// "Log out everywhere" for `username`, from the command line.
pub async fn log_out(db: &Database, username: &str) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    end_sessions(db, &user.id, now_ms()).await?;
    find(db, username).await
}

async fn end_sessions(db: &Database, user_id: &str, now: u64) -> Result<(), IdentityError> {
    db.bump_token_version(user_id, now).await?;
    db.revoke_user_refresh_tokens(user_id, now).await?;
    Ok(())
}

pub async fn unlock(db: &Database, username: &str) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    db.unlock_user(&user.id, now_ms()).await?;
    find(db, username).await
}

/// Replaces the user's roles; they take effect in tokens issued from now on.
pub async fn set_roles(db: &Database, username: &str, roles: &[String]) -> Result<User, IdentityError> {
    let user = find(db, username).await?;
    db.set_roles(&user.id, roles, now_ms()).await?;
    find(db, username).await
}

/// A user as one JSON line: never the password hash.
pub fn user_json(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "roles": u.roles,
        "tier": u.tier,
        "locked_until": u.locked_until,
        "disabled": u.disabled,
        "created_at": u.created_at,
        "last_login_at": u.last_login_at,
    })
}

/// Longest line `rampart user import` reads; longer ones are refused unread.
pub const MAX_IMPORT_LINE_BYTES: usize = 64 * 1024;

/// What an import does besides inserting.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Check every line (format, hash shape, existing usernames) and insert nothing.
    pub dry_run: bool,
    /// Count a username that already exists as refused rather than skipped.
    pub fail_on_existing: bool,
}

/// The outcome of an import, printed as its summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    pub imported: u64,
    pub skipped: u64,
    pub refused: u64,
    pub dry_run: bool,
}

/// What became of one line, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineOutcome {
    /// Skipped: the username exists (in the database or earlier in the file).
    Skipped(String),
    /// Refused: why. Never contains the hash.
    Refused(String),
}

/// Imports users from JSON lines `{"username", "email"?, "password_hash",
/// "roles"?, "tier"?}`, keeping their hashes: every hash must be in a format
/// [`rampart_core::password::verify`] accepts ([`identify`]), and is replaced
/// by an argon2id one at the user's first login. Blank lines are ignored.
///
/// Each line stands alone: a refused line does not stop the others, and a
/// username that exists is skipped (refused with
/// [`ImportOptions::fail_on_existing`]). `report` hears of every line that
/// was not imported, by its 1-based number. Database failures other than a
/// line's own conflict end the import with an error.
pub async fn import_users(
    db: &Database,
    mut input: impl BufRead,
    options: ImportOptions,
    mut report: impl FnMut(usize, LineOutcome),
) -> Result<ImportSummary, IdentityError> {
    let mut summary = ImportSummary { dry_run: options.dry_run, ..ImportSummary::default() };
    let mut seen = HashSet::new();
    let mut number = 0;
    let mut buf = Vec::new();
    loop {
        number += 1;
        buf.clear();
        let limit = u64::try_from(MAX_IMPORT_LINE_BYTES + 1).unwrap_or(u64::MAX);
        let read = std::io::Read::by_ref(&mut input)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(|e| anyhow::anyhow!("reading: {e}"))?;
        if read == 0 {
            break;
        }
        if buf.len() > MAX_IMPORT_LINE_BYTES && !buf.ends_with(b"\n") {
            skip_line(&mut input)?;
            summary.refused += 1;
            report(number, LineOutcome::Refused(format!("longer than {MAX_IMPORT_LINE_BYTES} bytes")));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&buf) else {
            summary.refused += 1;
            report(number, LineOutcome::Refused("not UTF-8".into()));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let new = match import_line(text) {
            Ok(new) => new,
            Err(reason) => {
                summary.refused += 1;
                report(number, LineOutcome::Refused(reason));
                continue;
            }
        };
        let exists = || {
            let msg = format!("username `{}` exists", new.username.escape_debug());
            if options.fail_on_existing {
                LineOutcome::Refused(msg)
            } else {
                LineOutcome::Skipped(msg)
            }
        };
        let count = |summary: &mut ImportSummary, outcome: &LineOutcome| match outcome {
            LineOutcome::Skipped(_) => summary.skipped += 1,
            LineOutcome::Refused(_) => summary.refused += 1,
        };
        if !seen.insert(username_key(&new.username)) || db.user_by_username(&new.username).await?.is_some() {
            let outcome = exists();
            count(&mut summary, &outcome);
            report(number, outcome);
            continue;
        }
        if options.dry_run {
            summary.imported += 1;
            continue;
        }
        match db.create_user(&new, now_ms()).await {
            Ok(_) => summary.imported += 1,
            // Created meanwhile by someone else.
            Err(StoreError::Conflict { field: "username" }) => {
                let outcome = exists();
                count(&mut summary, &outcome);
                report(number, outcome);
            }
            Err(
                e @ (StoreError::Conflict { .. }
                | StoreError::TooLong { .. }
                | StoreError::NulByte { .. }
                | StoreError::Invalid { .. }),
            ) => {
                summary.refused += 1;
                report(number, LineOutcome::Refused(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(summary)
}

/// Reads up to and including the next newline, in bounded pieces.
fn skip_line(input: &mut impl BufRead) -> Result<(), IdentityError> {
    loop {
        let chunk = input.fill_buf().map_err(|e| anyhow::anyhow!("reading: {e}"))?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                input.consume(n);
            }
        }
    }
}

/// One line as a user to create, or why not. Reasons name fields, never
/// values (a misplaced hash must not reach the terminal).
fn import_line(text: &str) -> Result<NewUser, String> {
    const FIELDS: [&str; 5] = ["username", "email", "password_hash", "roles", "tier"];
    // Parsed as a `Value` first: serde's typed errors would quote the value.
    let value: Value = crate::untrusted_json::from_slice(text.as_bytes()).map_err(|e| match e {
        crate::untrusted_json::Refused::Json(e) => format!("not valid JSON (at column {})", e.column()),
        refused => refused.to_string(),
    })?;
    let Value::Object(map) = value else { return Err("not a JSON object".into()) };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = unknown.chars().take(40).collect();
        return Err(format!("unknown field `{}`", shown.escape_debug()));
    }
    let text_field = |name: &str| -> Result<Option<String>, String> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name} must be a string")),
        }
    };
    let username = text_field("username")?.filter(|u| !u.trim().is_empty()).ok_or("username is required")?;
    let hash = text_field("password_hash")?.ok_or("password_hash is required")?;
    if let Err(e) = identify(&hash) {
        return Err(format!("password_hash: {e}"));
    }
    let roles = match map.get("roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(str::to_owned).ok_or("roles must be strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("roles must be an array of strings".into()),
    };
    let mut new = NewUser::named(username);
    new.email = text_field("email")?;
    new.password_hash = Some(Secret::new(hash));
    new.roles = roles;
    new.tier = text_field("tier")?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const BCRYPT: &str = "$2b$04$Qt0wYSBkpWQR7Dd4.XBZpeedqdyDL9UWCSDpZRL5.w6ehfApuGkme";

    #[track_caller]
    fn refused(line: &str, expected: &str) {
        let reason = import_line(line).unwrap_err();
        assert!(reason.contains(expected), "{line}: {reason}");
        assert!(!reason.contains("Qt0wYSBk"), "the hash leaked: {reason}");
    }

    #[test]
    fn lines_are_checked_field_by_field_without_echoing_values() {
        let ok = import_line(&format!(
            r#"{{"username":"ann","email":"a@x.test","password_hash":"{BCRYPT}","roles":["admin"],"tier":"pro"}}"#
        ))
        .unwrap();
        assert_eq!(
            (ok.username.as_str(), ok.roles.as_slice(), ok.tier.as_deref()),
            ("ann", &["admin".to_string()][..], Some("pro"))
        );
        refused("{", "not valid JSON");
        refused("[1]", "not a JSON object");
        refused(&format!(r#"{{"username":"a","password_hash":"{BCRYPT}","pw":1}}"#), "unknown field `pw`");
        refused(&format!(r#"{{"password_hash":"{BCRYPT}"}}"#), "username is required");
        refused(&format!(r#"{{"username":" ","password_hash":"{BCRYPT}"}}"#), "username is required");
        refused(r#"{"username":"a"}"#, "password_hash is required");
        refused(r#"{"username":"a","password_hash":"md5$x$y"}"#, "no supported format");
        refused(&format!(r#"{{"username":"a","password_hash":"{}"}}"#, &BCRYPT[..50]), "malformed");
        refused(&format!(r#"{{"username":"a","password_hash":"{BCRYPT}","roles":"{BCRYPT}"}}"#), "roles must be");
        refused(&format!(r#"{{"username":"a","password_hash":"{BCRYPT}","roles":[1]}}"#), "roles must be strings");
        refused(&format!(r#"{{"username":{{"h":"{BCRYPT}"}},"password_hash":"{BCRYPT}"}}"#), "username must be");
    }

    #[tokio::test]
    async fn an_import_counts_every_line_and_skips_existing_users() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.create_user(&NewUser::named("Old"), 1).await.unwrap();
        let line = |name: &str| format!(r#"{{"username":"{name}","password_hash":"{BCRYPT}"}}"#);
        let long = "x".repeat(MAX_IMPORT_LINE_BYTES + 10);
        let input =
            [line("new1"), String::new(), line("old"), "{oops".into(), long, line("NEW1"), line("new2")].join("\n");
        let mut bytes = input.into_bytes();
        bytes.extend_from_slice(b"\n\xff\xfe\n");
        let run = |options| {
            let db = db.clone();
            let bytes = bytes.clone();
            async move {
                let mut lines = Vec::new();
                let summary = import_users(&db, &bytes[..], options, |n, o| lines.push((n, o))).await.unwrap();
                (summary, lines)
            }
        };
        let (dry, _) = run(ImportOptions { dry_run: true, fail_on_existing: false }).await;
        assert_eq!(dry, ImportSummary { imported: 2, skipped: 2, refused: 3, dry_run: true });
        assert!(db.user_by_username("new1").await.unwrap().is_none(), "a dry run inserts nothing");
        let (summary, lines) = run(ImportOptions::default()).await;
        assert_eq!(summary, ImportSummary { imported: 2, skipped: 2, refused: 3, dry_run: false });
        let numbers: Vec<usize> = lines.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [3, 4, 5, 6, 8]);
        assert!(matches!(&lines[0].1, LineOutcome::Skipped(m) if m.contains("old")));
        assert_eq!(db.user_by_username("new2").await.unwrap().unwrap().password_hash.unwrap().expose(), BCRYPT);
        let (again, _) = run(ImportOptions { dry_run: false, fail_on_existing: true }).await;
        assert_eq!(again, ImportSummary { imported: 0, skipped: 0, refused: 7, dry_run: false });
    }
}
