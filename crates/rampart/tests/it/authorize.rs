//! Authorization over HTTP: roles, permissions (from `[roles]`) and scopes
//! required per route; refusals name the requirement, never the caller's
//! grants; `fresh_roles` applies a role change at the caller's next request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, token_request, PASSWORD};
use rampart::store::Database;
use serde_json::Value;

on_both_backends!(
    sqlite_routes_require_roles_permissions_and_scopes,
    postgres_routes_require_roles_permissions_and_scopes,
    flow
);

fn config(up: std::net::SocketAddr, db: &str) -> String {
    let base = identity_config(up, db);
    let (head, _) = base.split_once("[[routes]]").unwrap();
    format!(
        "{head}\
         [auth.headers]\ninternal_jwt = 'x-rampart-jwt'\n\
         [roles.editor]\npermissions = ['posts:read', 'posts:write']\n[roles.viewer]\npermissions = ['posts:read']\n\
         [[routes]]\npath = '/admin/**'\nauth = 'required'\nauthorize = {{ roles_any = ['admin'] }}\n\
         [[routes]]\npath = '/posts/**'\nmethods = ['POST']\nauth = 'required'\n\
         authorize = {{ permissions_all = ['posts:write'], fresh_roles = true }}\n\
         [[routes]]\npath = '/posts/**'\nauth = 'required'\nauthorize = {{ permissions_any = ['posts:read'] }}\n\
         [[routes]]\npath = '/reports/**'\nauth = 'optional'\nauthorize = {{ scopes_all = ['reports:read'] }}\n\
         [[routes]]\npath = '/**'\n"
    )
}

async fn status_and_body(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn flow(db: &TestDb) {
    let up = start_upstream().await;
    let gw = gateway(&config(up, &db.url)).await;
    let store = Database::connect(&db.url).await.unwrap();
    let r = client()
        .post(url(&gw, "/auth/register"))
        .json(&serde_json::json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    rampart::identity::admin::set_roles(&store, "alice", &["viewer".to_string(), "secret-role".to_string()])
        .await
        .unwrap();
    let (_, tokens) =
        token_request(&gw, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let get = |path: &str| client().get(url(&gw, path)).bearer_auth(&access);
    let post = |path: &str| client().post(url(&gw, path)).bearer_auth(&access);

    // A role is missing: 403 naming it, and nothing of what alice holds.
    let (s, body) = status_and_body(get("/admin/users")).await;
    assert_eq!(s, 403);
    assert_eq!(body["detail"], "requires role `admin`");
    assert!(!body.to_string().contains("viewer") && !body.to_string().contains("secret-role"), "{body}");
    // A permission through a role: viewers read posts, only editors write them.
    let (s, echoed) = status_and_body(get("/posts/1")).await;
    assert_eq!(s, 200);
    assert!(echoed["headers"]["x-rampart-roles"].as_str().unwrap().contains("viewer"));
    let (s, body) = status_and_body(post("/posts/1")).await;
    assert_eq!((s, body["detail"].as_str()), (403, Some("requires permission `posts:write`")));

    // fresh_roles: a role change applies at the next request, same token.
    rampart::identity::admin::set_roles(&store, "alice", &["editor".to_string()]).await.unwrap();
    let (s, echoed) = status_and_body(post("/posts/1")).await;
    assert_eq!(s, 200, "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-roles"], "editor", "the upstream sees the fresh roles");
    // So does an upstream that verifies the signed identity header.
    let jwks: Value = client().get(url(&gw, "/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let upstream_view = rampart_core::token::Verifier::new(
        rampart_core::token::KeySet::from_jwks(&jwks).unwrap(),
        ["https://api.example.test"],
        ["rampart-upstream"],
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signed = upstream_view.verify(echoed["headers"]["x-rampart-jwt"].as_str().unwrap(), now).unwrap();
    assert_eq!(signed.roles, ["editor"], "the signed identity header carries the fresh roles");
    rampart::identity::admin::set_roles(&store, "alice", &[]).await.unwrap();
    assert_eq!(status_and_body(post("/posts/1")).await.0, 403);
    // Routes without fresh_roles read the token's roles until it is renewed.
    assert_eq!(status_and_body(get("/posts/1")).await.0, 200);
    rampart::identity::admin::set_roles(&store, "alice", &["admin".to_string()]).await.unwrap();
    assert_eq!(status_and_body(get("/admin/users")).await.0, 403);
    let (_, tokens) =
        token_request(&gw, &[("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]).await;
    let admin = tokens["access_token"].as_str().unwrap().to_string();
    let r = client().get(url(&gw, "/admin/users")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // admin holds every permission.
    let r = client().post(url(&gw, "/posts/1")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Scopes: anonymous callers of an optional route are unauthenticated (401);
    // a user token has no scopes (403); a client granted the scope passes.
    let (s, _) = status_and_body(client().get(url(&gw, "/reports/q1"))).await;
    assert_eq!(s, 401);
    let (s, body) = status_and_body(get("/reports/q1")).await;
    assert_eq!((s, body["detail"].as_str()), (403, Some("requires scope `reports:read`")));
    let made =
        rampart::identity::clients::add_client(&store, "reporter", &["reports:read".to_string()], &[]).await.unwrap();
    let (s, granted) = token_request(
        &gw,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", made.client.client_id.as_str()),
            ("client_secret", made.secret.as_str()),
        ],
    )
    .await;
    assert_eq!(s, 200, "{granted}");
    let r = client()
        .get(url(&gw, "/reports/q1"))
        .bearer_auth(granted["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Service clients' roles are fresh too on such routes.
    let writer = rampart::identity::clients::add_client(&store, "writer", &[], &["editor".to_string()]).await.unwrap();
    let (_, granted) = token_request(
        &gw,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", writer.client.client_id.as_str()),
            ("client_secret", writer.secret.as_str()),
        ],
    )
    .await;
    let client_token = granted["access_token"].as_str().unwrap().to_string();
    let r = client().post(url(&gw, "/posts/1")).bearer_auth(&client_token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    rampart::identity::clients::set_disabled(&store, &writer.client.client_id, true).await.unwrap();
    let r = client().post(url(&gw, "/posts/1")).bearer_auth(&client_token).send().await.unwrap();
    assert_eq!(r.status(), 401, "a disabled client is refused at once on fresh_roles routes");

    // A deleted user's token dies on fresh_roles routes at once.
    let alice = rampart::identity::admin::list_users(&store, Some("alice".into()), 1).await.unwrap();
    rampart::identity::admin::set_roles(&store, "alice", &["editor".to_string()]).await.unwrap();
    use rampart::store::identity::UserStore;
    store.set_disabled(&alice[0].id, true, 1).await.unwrap();
    assert_eq!(status_and_body(post("/posts/1")).await.0, 401);
    store.close().await;
    gw.shutdown();
    gw.wait().await;
}

#[test]
fn authorize_needs_authentication_and_known_names() {
    let base = "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:9'\n";
    let err = rampart::app::load_policy_text(&format!(
        "{base}[[routes]]\npath = '/a/**'\nauthorize = {{ roles_any = ['admin'] }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("routes[0].authorize") && err.contains("auth = \"optional\" or \"required\""), "{err}");
    let err = rampart::app::load_policy_text(&format!(
        "{base}[roles.editor]\npermissions = ['posts:write']\n[auth]\n[[auth.issuers]]\nissuer = 'x'\nsecret = '0123456789abcdef0123456789abcdef'\n\
         [[routes]]\npath = '/a/**'\nauth = 'required'\nauthorize = {{ permissions_any = ['posts:wirte'] }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("did you mean `posts:write`"), "{err}");
}
