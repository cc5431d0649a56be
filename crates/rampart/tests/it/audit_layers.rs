//! Every layer reports its security events to the audit log, naming people by
//! opaque ids only, on SQLite and on PostgreSQL: authentication success and
//! failure, lockout, MFA changes, API-key changes, logout, blocked inputs and
//! the automatic ban they earn, an exhausted budget, a manual ban and its
//! removal, config reloads, and the `rampart user` / `keys` / `api-key` /
//! `client` commands run while the gateway writes the same database and file.
//! Both chains verify afterwards and hold the same records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart::observe::audit::{verify_file, AuditKind, AuditQuery, AuditRecord};
use rampart::store::audit::AuditStore;
use rampart_core::totp::{code_at, secret_from_base32, STEP_SECS};
use serde_json::{json, Value};

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, login, register_with_email, PASSWORD};

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

on_both_backends!(
    sqlite_every_layer_reports_to_the_audit_log,
    postgres_every_layer_reports_to_the_audit_log,
    every_layer
);

fn config_text(up: std::net::SocketAddr, db: &str, file: &Path) -> String {
    identity_config(up, db)
        .replace("[audit]\nenabled = false\n", &format!("[audit]\nfile = '{}'\n", file.display()))
        .replace("[server]\nlisten = '127.0.0.1:0'\n", "[server]\nlisten = '127.0.0.1:0'\ntrusted_proxies = ['127.0.0.1']\n")
        .replace("registration = true\n", "registration = true\nmax_failures = 3\n")
        .replace(
            "[[routes]]\npath = '/**'\n",
            "[[routes]]\npath = '/budget/**'\nstrip_prefix = '/budget'\nlimits = [{ by = 'ip', budget = '0.01/hour' }]\n\
             [[routes]]\npath = '/**'\ninspect = 'block'\n",
        )
        + "[bans]\nafter_blocked_inputs = 1\nafter_auth_failures = 0\nafter_rate_limited = 0\n"
}

/// Runs `rampart ARGS --config CONFIG`; panics with its stderr when it fails.
fn cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--config").arg(config).env_remove("RAMPART_CONFIG").output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "rampart {args:?}: {stdout}{stderr}");
    assert!(!stderr.contains("warning"), "rampart {args:?}: {stderr}");
    stdout.into_owned()
}

async fn user_id(gw: &rampart::Gateway, access: &str) -> String {
    let me: Value = client().get(url(gw, "/auth/me")).bearer_auth(access).send().await.unwrap().json().await.unwrap();
    me["id"].as_str().unwrap().to_string()
}

async fn password_grant(gw: &rampart::Gateway, user: &str, password: &str) -> u16 {
    let form = [("grant_type", "password"), ("username", user), ("password", password)];
    client().post(url(gw, "/auth/token")).form(&form).send().await.unwrap().status().as_u16()
}

/// A GET from `ip` (the gateway trusts the loopback proxy's X-Forwarded-For).
async fn get_from(gw: &rampart::Gateway, path: &str, ip: &str) -> reqwest::Response {
    client().get(url(gw, path)).header("x-forwarded-for", ip).send().await.unwrap()
}

fn find<'a>(records: &'a [AuditRecord], kind: AuditKind, action: Option<&str>) -> Vec<&'a AuditRecord> {
    records
        .iter()
        .filter(|r| r.kind == kind && action.is_none_or(|a| r.detail.get("action") == Some(&json!(a))))
        .collect()
}

async fn every_layer(tdb: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let up = start_upstream().await;
    let text = config_text(up, &tdb.url, &file);
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;
    let c = client();

    // Authentication: a success, failures, a lockout.
    assert_eq!(register_with_email(&gw, "alice", Some("alice@example.test"), PASSWORD).await.status(), 201);
    assert_eq!(register_with_email(&gw, "bob", Some("bob@example.test"), PASSWORD).await.status(), 201);
    let (bob_access, _) = login(&gw, "bob", PASSWORD).await;
    let bob = user_id(&gw, &bob_access).await;
    // `max_failures` failures are allowed; the one after them locks.
    for _ in 0..4 {
        assert_eq!(password_grant(&gw, "bob", "not the password at all").await, 400);
    }
    assert_eq!(password_grant(&gw, "bob", PASSWORD).await, 400, "locked out");
    let (access, refresh) = login(&gw, "alice", PASSWORD).await;
    let alice = user_id(&gw, &access).await;

    // MFA: enrolment started and confirmed.
    let r = c
        .post(url(&gw, "/auth/mfa/totp"))
        .bearer_auth(&access)
        .json(&serde_json::json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let enrolment: Value = r.json().await.unwrap();
    let secret = secret_from_base32(enrolment["secret"].as_str().unwrap()).unwrap();
    let step = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / STEP_SECS;
    let r = c
        .post(url(&gw, "/auth/mfa/totp/confirm"))
        .bearer_auth(&access)
        .json(&json!({"code": code_at(&secret, step)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // API keys: created and revoked by their owner.
    let r = c
        .post(url(&gw, "/auth/api-keys"))
        .bearer_auth(&access)
        .json(&json!({"name": "laptop", "password": PASSWORD}))
        .send()
        .await;
    let made: Value = r.unwrap().json().await.unwrap();
    let key_id = made["id"].as_str().unwrap().to_string();
    let r = c.delete(url(&gw, &format!("/auth/api-keys/{key_id}"))).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // Session: logout.
    let r = c.post(url(&gw, "/auth/logout")).form(&[("refresh_token", refresh.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // Blocked inputs, until they earn the address a ban.
    let attacker = "198.51.100.7";
    let mut banned = false;
    for i in 0..5 {
        let r = get_from(&gw, &format!("/s?q{i}=1%27%20UNION%20SELECT%20password%20FROM%20users%20--"), attacker).await;
        let v = problem(r, 403).await;
        if v["type"] != "urn:rampart:problem:input-blocked" {
            banned = true;
            break;
        }
    }
    assert!(banned, "blocked inputs never earned a ban");

    // A budget: the first request's cost exhausts it.
    let spender = "198.51.100.8";
    assert_eq!(get_from(&gw, "/budget/cost/0.02", spender).await.status(), 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            get_from(&gw, "/budget/cost/0.02", spender).await.status() == 429
        })
        .await,
        "the budget was never exhausted"
    );

    // Operators: a manual ban and its removal, a reload.
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let r = post_ban(&ops, r#"{"ip":"203.0.113.50","ttl":"1m"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(c.delete(format!("{ops}/bans/203.0.113.50")).send().await.unwrap().status(), 204);
    gw.reload(rampart::app::load_policy_text(&text)).unwrap();
    gw.audit.flush().await;

    // Admin commands, while the gateway keeps its file open and writes on.
    cli(&config, &["user", "lock", "alice", "--for", "1m"]);
    cli(&config, &["keys", "rotate"]);
    let made: Value =
        serde_json::from_str(&cli(&config, &["api-key", "create", "--user", "alice", "--name", "ci"])).unwrap();
    let cli_key = made["id"].as_str().unwrap().to_string();
    let svc: Value = serde_json::from_str(&cli(&config, &["client", "add", "svc", "--scope", "read"])).unwrap();
    let svc = svc["client_id"].as_str().unwrap().to_string();
    cli(&config, &["user", "logout", "bob"]);
    // Roles are audited as stored: repeated arguments cannot push `admin`
    // past the cap on a list's values in the record.
    let mut set_role = vec!["user", "set-role", "alice"];
    set_role.extend(std::iter::repeat_n("viewer", 100));
    set_role.push("admin");
    cli(&config, &set_role);
    gw.reload(rampart::app::load_policy_text(&text)).unwrap();
    gw.audit.flush().await;

    // Both chains verify, hold the same records, and every event is there.
    let out = cli(&config, &["audit", "verify"]);
    assert!(out.contains("database") && out.contains("file"), "{out}");
    let db = tdb.open().await;
    let records = db.search(&AuditQuery { limit: 10_000, ..AuditQuery::default() }).await.unwrap();
    let (in_file, unreadable) =
        rampart::observe::audit::search_file(&file, &AuditQuery { limit: 10_000, ..AuditQuery::default() }).unwrap();
    assert_eq!(unreadable, 0);
    assert_eq!(in_file, records, "the file and the database disagree");
    assert_eq!(verify_file(&file).unwrap(), Ok(records.len() as u64));
    let subjects = |kind, action| find(&records, kind, action).iter().map(|r| r.subject.clone()).collect::<Vec<_>>();

    assert!(subjects(AuditKind::AuthSuccess, None).contains(&Some(alice.clone())), "{records:#?}");
    let failures = find(&records, AuditKind::AuthFailure, None);
    assert!(failures.len() >= 4 && failures.iter().all(|r| r.subject.as_deref() == Some(bob.as_str())));
    assert_eq!(subjects(AuditKind::Lockout, None), [Some(bob.clone())]);
    assert_eq!(subjects(AuditKind::MfaChanged, Some("totp_enabled")), [Some(alice.clone())]);
    let created = find(&records, AuditKind::KeyChanged, Some("api_key_created"));
    assert_eq!(created.len(), 2, "over HTTP and with the CLI");
    assert!(created.iter().all(|r| r.subject.as_deref() == Some(alice.as_str())));
    assert!(created.iter().any(|r| r.detail["api_key_id"] == json!(cli_key) && r.detail["actor"] == json!("cli")));
    assert_eq!(find(&records, AuditKind::KeyChanged, Some("api_key_revoked"))[0].detail["api_key_id"], json!(key_id));
    assert_eq!(find(&records, AuditKind::KeyChanged, Some("signing_key_rotated")).len(), 1);
    assert_eq!(find(&records, AuditKind::SessionChanged, Some("logout")).len(), 1);

    let blocked = find(&records, AuditKind::InputBlocked, None);
    assert!(blocked.iter().all(|r| r.ip == Some(attacker.parse().unwrap()) && r.detail["rule"] == json!("sqli")));
    assert!(!blocked.is_empty());
    let bans = find(&records, AuditKind::BanAdded, None);
    assert!(bans
        .iter()
        .any(|r| r.ip == Some(attacker.parse().unwrap()) && r.detail["source"] == json!("auto:blocked_inputs")));
    assert!(bans
        .iter()
        .any(|r| r.ip == Some("203.0.113.50".parse().unwrap()) && r.detail["source"] == json!("manual")));
    assert_eq!(find(&records, AuditKind::BanRemoved, None).len(), 1);
    let budget = find(&records, AuditKind::BudgetExhausted, None);
    assert_eq!(budget.len(), 1);
    assert_eq!(budget[0].ip, Some(spender.parse().unwrap()));

    assert_eq!(subjects(AuditKind::AdminAction, Some("user_locked")), [Some(alice.clone())]);
    assert_eq!(subjects(AuditKind::AdminAction, Some("user_logged_out")), [Some(bob.clone())]);
    assert_eq!(subjects(AuditKind::AdminAction, Some("client_created")), [Some(svc)]);
    let roles_set = find(&records, AuditKind::AdminAction, Some("roles_set"));
    assert_eq!(roles_set.len(), 1);
    assert_eq!(roles_set[0].detail["roles"], json!(["admin", "viewer"]));
    assert!(find(&records, AuditKind::AdminAction, None).iter().all(|r| r.detail["actor"] == json!("cli")));
    let reloads = find(&records, AuditKind::ConfigReloaded, None);
    assert_eq!(reloads.len(), 2);
    assert_eq!(records.last().map(|r| r.kind), Some(AuditKind::ConfigReloaded), "the gateway wrote after the CLI");

    // People are named by opaque ids only.
    let text = std::fs::read_to_string(&file).unwrap();
    for personal in ["alice", "bob", "example.test"] {
        assert!(!text.contains(personal), "`{personal}` in the audit log:\n{text}");
    }

    gw.shutdown();
    gw.wait().await;
    db.close().await;
}
