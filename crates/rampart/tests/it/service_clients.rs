//! Service clients and the OAuth2 `client_credentials` grant, on SQLite and
//! PostgreSQL: the store (create, look up, list, rotate, disable, delete),
//! the `rampart client` commands of the real binary, and the token endpoint
//! over HTTP — Basic and form authentication, scopes, the equal answers for
//! unknown clients and wrong secrets, hostile input — with the issued token
//! accepted on an `auth = "required"` route.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use base64::Engine as _;
use rampart::store::identity::{NewServiceClient, ServiceClientStore, StoreError, TokenHash};
use rampart::store::Database;
use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::identity_config;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

macro_rules! on_both_backends {
    ($sqlite:ident, $postgres:ident, $scenario:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $scenario(&TestDb::sqlite(dir.path()), dir.path()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = TestDb::postgres().await else { return };
            let dir = tempfile::tempdir().unwrap();
            $scenario(&db, dir.path()).await;
        }
    };
}

on_both_backends!(sqlite_client_store, postgres_client_store, store_scenario);
on_both_backends!(sqlite_client_credentials_grant, postgres_client_credentials_grant, grant_scenario);

fn new_client(id: &str, secret: &str, scopes: &[&str]) -> NewServiceClient {
    NewServiceClient {
        client_id: id.into(),
        name: format!("client {id}"),
        secret_hash: TokenHash::of(secret),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        roles: vec!["service".into()],
    }
}

async fn store_scenario(tdb: &TestDb, _dir: &std::path::Path) {
    let db = tdb.open().await;
    let made = db.create_client(&new_client("svc_b", "cs_1", &["write", "read", "read"]), 1_000).await.unwrap();
    assert_eq!(made.scopes, ["read", "write"]);
    db.create_client(&new_client("svc_a", "cs_2", &[]), 2_000).await.unwrap();
    let taken = db.create_client(&new_client("svc_a", "cs_3", &[]), 3_000).await.unwrap_err();
    assert!(matches!(taken, StoreError::Conflict { .. }), "{taken:?}");
    for bad in [new_client("svc:x", "s", &[]), new_client("svc_c", "s", &["two words"]), new_client("", "s", &[])] {
        assert!(db.create_client(&bad, 1).await.is_err(), "{bad:?}");
    }

    let got = db.client_by_id("svc_b").await.unwrap().unwrap();
    assert_eq!(got, made);
    assert!(db.client_by_id("svc_nope").await.unwrap().is_none());
    assert!(db.client_by_id("svc\0").await.unwrap().is_none());
    let ids: Vec<String> = db.list_clients().await.unwrap().into_iter().map(|c| c.client_id).collect();
    assert_eq!(ids, ["svc_a", "svc_b"]);

    db.rotate_client_secret("svc_b", &TokenHash::of("cs_new"), 5_000).await.unwrap();
    db.set_client_disabled("svc_b", true, 6_000).await.unwrap();
    db.record_client_use("svc_b", 7_000).await.unwrap();
    let changed = db.client_by_id("svc_b").await.unwrap().unwrap();
    assert_eq!(changed.secret_hash, TokenHash::of("cs_new"));
    assert!(changed.disabled);
    assert_eq!((changed.updated_at, changed.last_used_at), (6_000, Some(7_000)));
    for missing in ["svc_nope", ""] {
        let e = db.rotate_client_secret(missing, &TokenHash::of("x"), 1).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound { what: "client" }), "{e:?}");
    }

    assert!(db.delete_client("svc_b").await.unwrap());
    assert!(!db.delete_client("svc_b").await.unwrap());
    assert!(db.client_by_id("svc_b").await.unwrap().is_none());
    db.close().await;
}

/// Runs `rampart client …` against the config; returns its JSON output.
fn cli(config: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(BIN).arg("client").args(args).arg("--config").arg(config).output().unwrap();
    assert!(out.status.success(), "rampart client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
}

/// POSTs the form (with an optional Authorization header) to the token endpoint.
async fn token(gw: &rampart::Gateway, auth: Option<&str>, form: &[(&str, &str)]) -> (u16, Option<String>, Value) {
    let mut req = client().post(url(gw, "/auth/token")).form(form);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), challenge, r.json().await.unwrap())
}

async fn grant_scenario(tdb: &TestDb, dir: &std::path::Path) {
    let up = start_upstream().await;
    let text = identity_config(up, &tdb.url);
    let config = dir.join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let made = cli(&config, &["add", "billing-worker", "--scope", "read", "--scope", "write", "--role", "svc"]);
    let id = made["client_id"].as_str().unwrap().to_string();
    let secret = made["client_secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("svc_") && secret.starts_with("cs_"), "{made}");
    let listed = Command::new(BIN).args(["client", "list", "--config"]).arg(&config).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains(&id) && !listed.contains(&secret) && !listed.contains("secret"), "{listed}");

    let gw = gateway(&text).await;
    let grant = [("grant_type", "client_credentials")];

    // client_secret_basic: all the client's scopes, no refresh token.
    let (status, _, body) = token(&gw, Some(&basic(&id, &secret)), &grant).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], "read write");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    assert!(body.get("refresh_token").is_none(), "RFC 6749 §4.4.3: no refresh token");
    let access = body["access_token"].as_str().unwrap().to_string();

    // The token opens an `auth = "required"` route; the upstream learns who and what.
    let r = client().get(url(&gw, "/api/x")).bearer_auth(&access).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-user"], id.as_str());
    assert_eq!(echoed["headers"]["x-rampart-scopes"], "read write");

    // client_secret_post, with a narrower scope.
    let (status, _, body) = token(
        &gw,
        None,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", &secret), ("scope", "read")],
    )
    .await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read")), "{body}");
    let narrow = body["access_token"].as_str().unwrap().to_string();
    let r = client().get(url(&gw, "/api/x")).bearer_auth(&narrow).send().await.unwrap();
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-scopes"], "read");

    // More than the client may have.
    let (status, _, body) =
        token(&gw, Some(&basic(&id, &secret)), &[("grant_type", "client_credentials"), ("scope", "read admin")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));

    // Unknown client and wrong secret: the same answer.
    let (s1, c1, b1) = token(&gw, Some(&basic(&id, "cs_wrong")), &grant).await;
    let (s2, c2, b2) = token(&gw, Some(&basic("svc_unknown", &secret)), &grant).await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!((s1, b1["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(c1.as_deref(), Some("Basic realm=\"rampart\""));
    assert_eq!(c1, c2);
    let (s, c, b) =
        token(&gw, None, &[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", "cs_wrong")])
            .await;
    assert_eq!((s, b["error"].as_str(), c), (401, Some("invalid_client"), None), "no challenge for form auth");

    // One method at a time; none at all; hostile headers and forms.
    let (s, _, b) =
        token(&gw, Some(&basic(&id, &secret)), &[("grant_type", "client_credentials"), ("client_secret", &secret)])
            .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")));
    let (s, _, b) = token(&gw, None, &grant).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")));
    for bad in ["Basic", "Basic !!!", "Basic c3ZjX2E=", "Basic OnNlY3JldA==", "Basic /w==Og=="] {
        let (s, c, b) = token(&gw, Some(bad), &grant).await;
        assert_eq!((s, b["error"].as_str()), (401, Some("invalid_client")), "{bad}");
        assert!(c.is_some(), "{bad}");
    }
    let (s, _, b) = token(
        &gw,
        None,
        &[("grant_type", "client_credentials"), ("client_id", &id), ("client_id", &id), ("client_secret", &secret)],
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")), "repeated parameter");
    let huge = "x".repeat(64 * 1024);
    let (s, _, b) = token(&gw, None, &[("grant_type", "client_credentials"), ("client_secret", &huge)]).await;
    assert_eq!((s, b["error"].as_str()), (400, Some("invalid_request")), "huge form");

    // Discovery names the grant and both methods.
    let conf: Value =
        client().get(url(&gw, "/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert!(conf["grant_types_supported"].as_array().unwrap().contains(&"client_credentials".into()));
    let methods = conf["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(methods.contains(&"client_secret_basic".into()) && methods.contains(&"client_secret_post".into()));

    // Rotation: the old secret dies at once; disable and remove end access.
    let rotated = cli(&config, &["rotate", &id]);
    let new_secret = rotated["client_secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(token(&gw, Some(&basic(&id, &secret)), &grant).await.0, 401);
    assert_eq!(token(&gw, Some(&basic(&id, &new_secret)), &grant).await.0, 200);
    cli(&config, &["disable", &id]);
    assert_eq!(token(&gw, Some(&basic(&id, &new_secret)), &grant).await.0, 401);
    cli(&config, &["enable", &id]);
    assert_eq!(token(&gw, Some(&basic(&id, &new_secret)), &grant).await.0, 200);
    cli(&config, &["remove", &id]);
    assert_eq!(token(&gw, Some(&basic(&id, &new_secret)), &grant).await.0, 401);
    let db = Database::connect(&tdb.url).await.unwrap();
    assert!(db.client_by_id(&id).await.unwrap().is_none());
    db.close().await;

    gw.shutdown();
    gw.wait().await;
}
