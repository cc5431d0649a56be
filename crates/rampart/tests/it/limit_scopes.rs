//! Which requests share an allowance: several limits on one route, all checked;
//! `[defaults]` limits shared by the routes inheriting them; limits keyed by
//! API key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::{identity_config, login, register_with_email, PASSWORD};

/// The status and, for a refusal, the limit its problem document names.
async fn call(gw: &rampart::Gateway, path: &str) -> (u16, String) {
    let r = client().get(url(gw, path)).send().await.unwrap();
    let status = r.status().as_u16();
    if status == 200 {
        return (200, String::new());
    }
    let v = problem(r, status).await;
    let detail = v["detail"].as_str().unwrap();
    (status, detail.split('`').nth(1).unwrap_or(detail).to_owned())
}

#[tokio::test]
async fn every_limit_of_a_route_is_checked() {
    let cfg = "[limits.named.shared]\nby = 'ip'\nrate = '1/min'\nburst = 3\n\
               [[routes]]\nname = 'a'\npath = '/a/**'\nlimits = ['shared', { by = 'ip', rate = '1/min', burst = 2 }]\n\
               [[routes]]\nname = 'b'\npath = '/b/**'\nlimits = ['shared']\n";
    let (gw, _) = setup(cfg).await;
    // Route a's own limit (2) is the first to refuse...
    assert_eq!(call(&gw, "/a/1").await.0, 200);
    assert_eq!(call(&gw, "/a/1").await.0, 200);
    assert_eq!(call(&gw, "/a/1").await, (429, "a#1".into()));
    // ... and the shared one still counted both: one unit of 3 is left.
    assert_eq!(call(&gw, "/b/1").await.0, 200);
    assert_eq!(call(&gw, "/b/1").await, (429, "shared".into()));
    // Now both refuse on a; the answer names the one that frees up last.
    assert_eq!(call(&gw, "/a/1").await.0, 429);
}

#[tokio::test]
async fn inline_limits_of_defaults_are_one_allowance_for_every_route() {
    let cfg = "[defaults]\nlimits = [{ by = 'ip', rate = '1/min', burst = 2 }]\n\
               [[routes]]\nname = 'x'\npath = '/x/**'\n\
               [[routes]]\nname = 'y'\npath = '/y/**'\n\
               [[routes]]\nname = 'own'\npath = '/own/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(cfg).await;
    let r = client().get(url(&gw, "/x/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-policy"], "\"#defaults#0\";q=1;w=60");
    assert_eq!(call(&gw, "/y/1").await.0, 200);
    assert_eq!(call(&gw, "/x/1").await, (429, "#defaults#0".into()), "x and y share 2");
    assert_eq!(call(&gw, "/y/1").await.0, 429);
    // A route with limits of its own does not inherit (nor share) them.
    assert_eq!(call(&gw, "/own/1").await.0, 200);
    assert_eq!(call(&gw, "/own/1").await, (429, "own#0".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_keyed_by_api_key_count_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = identity_config(up, &db.url)
        .replace("[identity.password.argon2]", "[identity.api_keys]\n[identity.password.argon2]")
        .replace(
            "path = '/api/**'\nauth = 'required'\n",
            "path = '/api/**'\nauth = 'required'\nlimits = [{ by = 'api_key', rate = '1/min', burst = 2 }]\n",
        );
    let gw = gateway(&text).await;
    assert_eq!(register_with_email(&gw, "kim", None, PASSWORD).await.status(), 201);
    let (access, _) = login(&gw, "kim", PASSWORD).await;
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        let r = client()
            .post(url(&gw, "/auth/api-keys"))
            .bearer_auth(&access)
            .json(&serde_json::json!({ "name": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        keys.push(r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned());
    }
    let with_key = |key: &str| client().get(url(&gw, "/api/x")).header("x-api-key", key).send();
    let r = with_key(&keys[0]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ratelimit-policy"], "\"routes[0]#0\";q=1;w=60");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(with_key(&keys[0]).await.unwrap().status(), 200);
    let v = problem(with_key(&keys[0]).await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:rate-limited");
    // Another key of the same user has its own allowance.
    assert_eq!(with_key(&keys[1]).await.unwrap().status(), 200);
    // A bearer token carries no API key: the limit does not apply to it.
    for _ in 0..3 {
        let r = client().get(url(&gw, "/api/x")).bearer_auth(&access).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("ratelimit").is_none());
    }
}
