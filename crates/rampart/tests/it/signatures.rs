//! HMAC-signed requests end to end, on SQLite and PostgreSQL: keys made,
//! listed and revoked with `rampart client signing-key`; signed GET and POST
//! requests reaching the upstream as the service client (method `signature`)
//! on `required` and `optional` routes; replays, tampered method, path,
//! query, body and timestamp, stale timestamps, unknown, revoked, expired
//! keys and disabled or removed clients all refused with the one 401;
//! hostile headers refused with 401, never 500; a body over the route's limit
//! refused with 413 without hanging; requests signed by the standard-library
//! Python client (`examples/python/rampart_sign.py`, run with
//! `RAMPART_TEST_PYTHON`) accepted. With Redis, a nonce used at one gateway
//! is refused at another; with Redis down, each gateway still refuses its
//! own replays; refusals count towards automatic bans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rampart_core::signature::{body_digest, canonical_request, sign, signature_header, Version, VERSION};
use serde_json::Value;

use crate::common::db::TestDb;
use crate::common::*;
use crate::identity::identity_config;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

on_both_backends!(sqlite_signed_requests, postgres_signed_requests, scenario);

/// The identity config with a small-bodied route, an optional route and
/// automatic bans off (the scenario fails on purpose, many times).
fn config_text(up: std::net::SocketAddr, db: &str) -> String {
    identity_config(up, db).replace(
        "[[routes]]\npath = '/**'\n",
        "[[routes]]\npath = '/small/**'\nauth = 'required'\nbody_limit = '1KiB'\n\
         [[routes]]\npath = '/maybe/**'\nauth = 'optional'\n[[routes]]\npath = '/**'\n\
         [bans]\nafter_auth_failures = 0\n",
    )
}

/// Header names and raw values, sent exactly as given.
type Headers = Vec<(String, Vec<u8>)>;

#[derive(Clone)]
struct Key {
    id: String,
    secret: String,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn fresh_nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The four signature headers for a request, signed at `ts` with `nonce`.
fn signed(key: &Key, method: &str, target: &str, body: &[u8], ts: u64, nonce: &str) -> Headers {
    signed_in(VERSION, key, method, target, body, ts, nonce)
}

/// [`signed`] in `version` of the scheme.
fn signed_in(version: Version, key: &Key, method: &str, target: &str, body: &[u8], ts: u64, nonce: &str) -> Headers {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let canonical = canonical_request(version, method, path, query, &ts.to_string(), nonce, &body_digest(body));
    let mac = sign(key.secret.as_bytes(), &canonical);
    vec![
        ("x-rampart-key-id".into(), key.id.clone().into_bytes()),
        ("x-rampart-timestamp".into(), ts.to_string().into_bytes()),
        ("x-rampart-nonce".into(), nonce.as_bytes().to_vec()),
        ("x-rampart-signature".into(), signature_header(version, &mac).into_bytes()),
    ]
}

/// Sends `method target` with `body` and exactly `headers`; the status and
/// the body as JSON (the upstream's echo or a problem).
async fn send(
    gw: &rampart::Gateway,
    method: &str,
    target: &str,
    body: &[u8],
    headers: &[(String, Vec<u8>)],
) -> (u16, Value) {
    let mut req = client().request(method.parse().unwrap(), url(gw, target)).body(body.to_vec());
    for (name, value) in headers {
        req = req.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    if status == 401 {
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"rampart\", error=\"invalid_token\"");
        let p = problem(r, 401).await;
        assert_eq!(p["detail"], "a valid bearer token is required", "one refusal for every reason");
        return (status, p);
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Signs and sends in one go, with a fresh nonce and the current time.
async fn call(gw: &rampart::Gateway, key: &Key, method: &str, target: &str, body: &[u8]) -> (u16, Value) {
    send(gw, method, target, body, &signed(key, method, target, body, now(), &fresh_nonce())).await
}

fn cli(config: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN).arg("client").args(args).arg("--config").arg(config).output().unwrap();
    assert!(out.status.success(), "rampart client {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn new_key(config: &std::path::Path, client_id: &str, extra: &[&str]) -> Key {
    let mut args = vec!["signing-key", "add", client_id];
    args.extend_from_slice(extra);
    let made = cli(config, &args).remove(0);
    Key { id: made["key_id"].as_str().unwrap().into(), secret: made["secret"].as_str().unwrap().into() }
}

/// Waits until every gateway holds the key in memory (a poll: at most 2 s),
/// so that the first signed request does not race the poll.
async fn wait_for_key(gws: &[&rampart::Gateway], key: &Key) {
    for gw in gws {
        let signatures = gw.limits.identity().unwrap().signatures.clone().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { signatures.key(&key.id).is_some() }).await);
    }
}

async fn scenario(tdb: &TestDb) {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(up, &tdb.url);
    let config = dir.path().join("rampart.toml");
    std::fs::write(&config, &text).unwrap();
    let gw = gateway(&text).await;

    let client_id =
        cli(&config, &["add", "billing", "--scope", "orders:read", "--scope", "orders:write", "--role", "service"])
            .remove(0)["client_id"]
            .as_str()
            .unwrap()
            .to_string();
    let key = new_key(&config, &client_id, &[]);
    assert!(key.id.starts_with("hk_") && key.secret.starts_with("hks_") && key.secret.len() == 47, "{}", key.id);
    let listed = cli(&config, &["signing-key", "list", &client_id]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["key_id"], key.id.as_str());
    assert!(!listed[0].to_string().contains(&key.secret[4..]), "lists never show the secret");
    wait_for_key(&[&gw], &key).await;

    // A signed GET whose query needs sorting and encoding, and a signed POST:
    // the upstream sees the client, its roles and scopes, and the method.
    let (status, echo) = call(&gw, &key, "GET", "/api/items?b=2&a=x+y&a=%7e&c=caf\u{e9}", b"").await;
    assert_eq!(status, 200, "{echo}");
    let h = &echo["headers"];
    assert_eq!(h["x-rampart-user"], client_id.as_str());
    assert_eq!(h["x-rampart-auth-method"], "signature");
    assert_eq!(h["x-rampart-scopes"], "orders:read orders:write");
    assert_eq!(h["x-rampart-roles"], "service");
    for name in ["x-rampart-signature", "x-rampart-nonce", "x-rampart-key-id", "x-rampart-timestamp"] {
        assert!(h.get(name).is_none(), "{name} is not sent upstream: {h}");
    }
    assert_eq!(echo["query"], "b=2&a=x+y&a=%7e&c=caf%C3%A9", "the query goes upstream as sent");
    let body: &[u8] = br#"{"item":"book","qty":2}"#;
    let headers = signed(&key, "POST", "/api/orders", body, now(), &fresh_nonce());
    let (status, echo) = send(&gw, "POST", "/api/orders", body, &headers).await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!((echo["method"].as_str(), echo["body_bytes"].as_u64()), (Some("POST"), Some(body.len() as u64)));
    assert_eq!(echo["headers"]["x-rampart-user"], client_id.as_str());

    // The same request again: a replay.
    let (status, p) = send(&gw, "POST", "/api/orders", body, &headers).await;
    assert_eq!(status, 401, "{p}");

    // Tampering with any signed part.
    let ts = now();
    let tampered: [(&str, &str, &[u8], Headers); 7] = [
        ("DELETE", "/api/orders", body, signed(&key, "POST", "/api/orders", body, ts, &fresh_nonce())),
        ("POST", "/api/orderz", body, signed(&key, "POST", "/api/orders", body, ts, &fresh_nonce())),
        ("GET", "/api/items?a=2", &[], signed(&key, "GET", "/api/items?a=1", b"", ts, &fresh_nonce())),
        // The values of a repeated name, reordered: an app reading the first
        // would act on the other account.
        (
            "POST",
            "/api/pay?acct=B&acct=A",
            body,
            signed(&key, "POST", "/api/pay?acct=A&acct=B", body, ts, &fresh_nonce()),
        ),
        (
            "POST",
            "/api/pay?acct=B&acct=A",
            body,
            signed_in(Version::V1, &key, "POST", "/api/pay?acct=A&acct=B", body, ts, &fresh_nonce()),
        ),
        (
            "POST",
            "/api/orders",
            br#"{"item":"car","qty":2}"#.as_slice(),
            signed(&key, "POST", "/api/orders", body, ts, &fresh_nonce()),
        ),
        ("POST", "/api/orders", body, {
            let mut h = signed(&key, "POST", "/api/orders", body, ts, &fresh_nonce());
            h[1].1 = (ts + 1).to_string().into_bytes();
            h
        }),
    ];
    for (method, target, sent_body, headers) in &tampered {
        let (status, p) = send(&gw, method, target, sent_body, headers).await;
        assert_eq!(status, 401, "{method} {target}: {p}");
    }

    // v1 signatures still pass where their sorted order is the order sent,
    // and only there; v2 signs whatever order is sent.
    for (version, target, want) in [
        (Version::V1, "/api/pay?acct=A&acct=B&x=1", 200),
        (Version::V1, "/api/pay?acct=B&acct=A&x=1", 401),
        (Version::V2, "/api/pay?acct=B&acct=A&x=1", 200),
    ] {
        let headers = signed_in(version, &key, "POST", target, body, now(), &fresh_nonce());
        let (status, echo) = send(&gw, "POST", target, body, &headers).await;
        assert_eq!(status, want, "{version:?} {target}: {echo}");
        if want == 200 {
            assert_eq!(echo["query"].as_str(), target.split_once('?').map(|(_, q)| q), "sent as signed");
        }
    }

    // Timestamps outside the 5-minute window, either way; unknown keys.
    for ts in [now() - 301, now() + 400] {
        let (status, _) =
            send(&gw, "GET", "/api/x", b"", &signed(&key, "GET", "/api/x", b"", ts, &fresh_nonce())).await;
        assert_eq!(status, 401);
    }
    let stranger = Key { id: "hk_unknown".into(), secret: key.secret.clone() };
    assert_eq!(call(&gw, &stranger, "GET", "/api/x", b"").await.0, 401);

    // Hostile headers: 401, never a 500.
    let good = signed(&key, "GET", "/api/x", b"", now(), &fresh_nonce());
    let with = |name: &str, value: Vec<u8>| -> Headers {
        good.iter().map(|(n, v)| if n == name { (n.clone(), value.clone()) } else { (n.clone(), v.clone()) }).collect()
    };
    let hostile = [
        with("x-rampart-signature", format!("v1={}", "a".repeat(8_000)).into_bytes()),
        with("x-rampart-signature", format!("v1={}", "zz".repeat(32)).into_bytes()),
        with("x-rampart-signature", b"v1=\xff\xfe\xfd".to_vec()),
        with("x-rampart-nonce", vec![0xff; 24]),
        with("x-rampart-key-id", vec![0xc3; 40]),
        with("x-rampart-timestamp", b"99999999999999999999999".to_vec()),
        good[1..].to_vec(),
        [good.clone(), vec![("x-rampart-key-id".into(), key.id.clone().into_bytes())]].concat(),
    ];
    for headers in &hostile {
        let (status, p) = send(&gw, "GET", "/api/x", b"", headers).await;
        assert_eq!(status, 401, "{p}");
    }

    // A body over the route's 1 KiB limit: 413 at once, declared or streamed.
    let big = vec![b'x'; 4096];
    let started = Instant::now();
    let (status, _) =
        send(&gw, "POST", "/small/x", &big, &signed(&key, "POST", "/small/x", &big, now(), &fresh_nonce())).await;
    assert_eq!(status, 413);
    let chunks =
        futures_util::stream::iter((0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 512]))));
    let mut req = client().post(url(&gw, "/small/x")).body(reqwest::Body::wrap_stream(chunks));
    for (name, value) in signed(&key, "POST", "/small/x", &[b'y'; 8192], now(), &fresh_nonce()) {
        req = req.header(name, value);
    }
    let r = req.send().await;
    assert!(r.map_or(true, |r| r.status() == 413), "streamed: 413 (or the connection closed)");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    let small = vec![b'z'; 1000];
    assert_eq!(call(&gw, &key, "PUT", "/small/x", &small).await.0, 200);

    // An optional route: signed requests are authenticated there too.
    let (status, echo) = call(&gw, &key, "GET", "/maybe/x", b"").await;
    assert_eq!((status, echo["headers"]["x-rampart-user"].as_str()), (200, Some(client_id.as_str())));
    let anon: Value = client().get(url(&gw, "/maybe/x")).send().await.unwrap().json().await.unwrap();
    assert!(anon["headers"].get("x-rampart-user").is_none());

    // The Python client's requests are accepted.
    python_client(&gw, &key, &client_id).await;

    // Revoked: refused within the 2 s poll (the CLI is another process).
    cli(&config, &["signing-key", "revoke", &key.id]);
    assert!(
        eventually(Duration::from_secs(5), || async { call(&gw, &key, "GET", "/api/x", b"").await.0 == 401 }).await
    );
    let listed = cli(&config, &["signing-key", "list", &client_id]);
    assert!(listed[0]["revoked_at"].as_u64().is_some(), "{listed:?}");

    // A disabled client's keys stop verifying, and work again once enabled.
    let second = new_key(&config, &client_id, &[]);
    wait_for_key(&[&gw], &second).await;
    assert_eq!(call(&gw, &second, "GET", "/api/x", b"").await.0, 200);
    cli(&config, &["disable", &client_id]);
    assert!(
        eventually(Duration::from_secs(5), || async { call(&gw, &second, "GET", "/api/x", b"").await.0 == 401 }).await
    );
    cli(&config, &["enable", &client_id]);
    assert!(
        eventually(Duration::from_secs(5), || async { call(&gw, &second, "GET", "/api/x", b"").await.0 == 200 }).await
    );

    // An expiring key works until it expires.
    let brief = new_key(&config, &client_id, &["--expires", "4s"]);
    wait_for_key(&[&gw], &brief).await;
    assert_eq!(call(&gw, &brief, "GET", "/api/x", b"").await.0, 200);
    assert!(
        eventually(Duration::from_secs(8), || async { call(&gw, &brief, "GET", "/api/x", b"").await.0 == 401 }).await
    );

    // A removed client takes its keys with it.
    cli(&config, &["remove", &client_id]);
    assert!(
        eventually(Duration::from_secs(5), || async { call(&gw, &second, "GET", "/api/x", b"").await.0 == 401 }).await
    );
    gw.shutdown();
    gw.wait().await;
}

/// `examples/python/rampart_sign.py` as a command: a GET whose query needs
/// sorting and encoding, and a POST with a JSON body.
async fn python_client(gw: &rampart::Gateway, key: &Key, client_id: &str) {
    let Some(python) = std::env::var("RAMPART_TEST_PYTHON").ok().filter(|p| !p.is_empty()) else {
        eprintln!("skipped the Python client: RAMPART_TEST_PYTHON not set (scripts/test sets it)");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/python/rampart_sign.py");
    let run = |args: Vec<String>| {
        let python = python.clone();
        async move {
            let mut cmd = tokio::process::Command::new(python);
            for proxy in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
                cmd.env_remove(proxy);
            }
            let out = cmd.arg(script).args(args).output().await.unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            let (head, body) = stdout
                .split_once("\n\n")
                .unwrap_or_else(|| panic!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
            (
                head.lines().next().unwrap().to_string(),
                serde_json::from_str::<Value>(body.trim()).unwrap_or(Value::Null),
            )
        }
    };
    let base = vec!["--key-id".to_string(), key.id.clone(), "--secret".to_string(), key.secret.clone()];
    let target = url(gw, "/api/search?z=last&a=%7e+b&a=1&empty&sp=a%20b&q=caf%C3%A9");
    let (status, echo) = run([base.clone(), vec!["GET".into(), target]].concat()).await;
    assert_eq!(status, "200", "{echo}");
    assert_eq!(echo["headers"]["x-rampart-user"], client_id);
    assert_eq!(echo["headers"]["x-rampart-auth-method"], "signature");
    assert_eq!(echo["query"], "z=last&a=%7e+b&a=1&empty&sp=a%20b&q=caf%C3%A9");
    let body = r#"{"order": {"item": "book", "qty": 2}, "note": "caf\u00e9 & more"}"#;
    let (status, echo) = run([base, vec!["POST".into(), url(gw, "/api/orders"), body.into()]].concat()).await;
    assert_eq!(status, "200", "{echo}");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"].as_u64(), Some(body.len() as u64));
    assert_eq!(echo["headers"]["x-rampart-user"], client_id);
}

/// The window is judged again once the body has been read: a replay that
/// sends the original's head within the window and holds its body until
/// after it (when the original's nonce may be forgotten) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_held_past_the_window_is_refused() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let gw = gateway(&format!("{}[identity.signatures]\nwindow = '1s'\n", config_text(up, &tdb.url))).await;
    let key = client_and_key(&tdb, &gw).await;
    wait_for_key(&[&gw], &key).await;
    let headers = signed(&key, "POST", "/api/y", b"{}", now(), &fresh_nonce());
    assert_eq!(send(&gw, "POST", "/api/y", b"{}", &headers).await.0, 200);
    let held = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(4_500)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{}"))
    })
    .boxed();
    let mut replay = client().post(url(&gw, "/api/y")).body(reqwest::Body::wrap_stream(held));
    for (name, value) in &headers {
        replay = replay.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let replay = tokio::spawn(replay.send());
    // Meanwhile, once the original's nonce has expired (window + 1 s, in
    // whole seconds), other signed requests come and go and sweep it from
    // the cache.
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    for _ in 0..3 {
        assert_eq!(call(&gw, &key, "GET", "/api/z", b"").await.0, 200);
    }
    assert_eq!(replay.await.unwrap().unwrap().status(), 401);
}

/// Behind forward auth the body never reaches Rampart, so a signature
/// cannot cover it: a check of a signed GET or HEAD passes, a check of a
/// signed method that carries a body (signed over an empty one, which the
/// proxy would then pass on with any body) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_forward_auth_only_bodiless_signed_requests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = config_text(up, &tdb.url).replace(
        "[server]\nlisten = '127.0.0.1:0'\n",
        "[server]\nlisten = '127.0.0.1:0'\ntrusted_proxies = ['127.0.0.1']\n",
    ) + "[forward_auth]\npath = '/_rampart/auth'\n";
    assert!(text.contains("trusted_proxies"));
    let gw = gateway(&text).await;
    let key = client_and_key(&tdb, &gw).await;
    wait_for_key(&[&gw], &key).await;
    let check = |method: &'static str| {
        let headers = signed(&key, method, "/api/y", b"", now(), &fresh_nonce());
        let mut rb = client()
            .get(url(&gw, "/_rampart/auth"))
            .header("x-original-method", method)
            .header("x-original-uri", "/api/y");
        for (name, value) in &headers {
            rb = rb.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        rb.send()
    };
    let ok = check("GET").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-rampart-auth-method"], "signature");
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = check(method).await.unwrap();
        assert_eq!(problem(r, 401).await["type"], "urn:rampart:problem:unauthorized", "{method}");
    }
    // Proxied through Rampart, the same POST is checked with its body.
    assert_eq!(call(&gw, &key, "POST", "/api/y", b"{\"a\":1}").await.0, 200);
}

/// Opens the database the gateways use, makes a client and a key there.
async fn client_and_key(tdb: &TestDb, gw: &rampart::Gateway) -> Key {
    let db = tdb.open().await;
    let made = rampart::identity::clients::add_client(&db, "worker", &[], &[]).await.unwrap();
    let settings = &gw.limits.identity().unwrap().settings;
    let key = rampart::identity::signatures::admin::add(settings, &db, &made.client.client_id, None).await.unwrap();
    db.close().await;
    Key { id: key.record.key_id, secret: key.secret }
}

fn redis_section(url: &str) -> String {
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());
    format!("[redis]\nurl = '{url}'\ntimeout = '100ms'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_a_nonce_used_at_one_gateway_is_refused_at_another() {
    let Some(redis) = redis_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let base = config_text(up, &tdb.url);
    let shared = format!("{base}{}", redis_section(&redis));
    let (a, b) = (gateway(&shared).await, gateway(&shared).await);
    // Without Redis an instance knows only its own nonces (the documented
    // single-instance behaviour), which is what Redis is for.
    let alone = gateway(&base).await;
    for gw in [&a, &b] {
        let store = gw.limits.limiter.redis.clone().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);
    }
    let key = client_and_key(&tdb, &a).await;
    wait_for_key(&[&a, &b, &alone], &key).await;

    let headers = signed(&key, "GET", "/api/x?n=1", b"", now(), &fresh_nonce());
    assert_eq!(send(&a, "GET", "/api/x?n=1", b"", &headers).await.0, 200);
    assert_eq!(send(&b, "GET", "/api/x?n=1", b"", &headers).await.0, 401, "replayed at another gateway");
    assert_eq!(send(&a, "GET", "/api/x?n=1", b"", &headers).await.0, 401, "and at the first");
    assert_eq!(send(&alone, "GET", "/api/x?n=1", b"", &headers).await.0, 200, "an instance without Redis");
    // A nonce first seen at B is refused at A too.
    let headers = signed(&key, "POST", "/api/y", b"{}", now(), &fresh_nonce());
    assert_eq!(send(&b, "POST", "/api/y", b"{}", &headers).await.0, 200);
    assert_eq!(send(&a, "POST", "/api/y", b"{}", &headers).await.0, 401);
    for gw in [a, b, alone] {
        gw.shutdown();
        gw.wait().await;
    }
}

/// Redis unreachable: signed requests still work, and each gateway refuses
/// replays it has seen itself (its own cache decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_each_gateway_still_refuses_its_own_replays() {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text =
        format!("{}{}", config_text(up, &tdb.url), redis_section(&format!("redis://127.0.0.1:{}/", free_port())));
    let gw = gateway(&text).await;
    assert!(!gw.limits.limiter.redis.as_ref().unwrap().is_available());
    let key = client_and_key(&tdb, &gw).await;
    wait_for_key(&[&gw], &key).await;
    let headers = signed(&key, "GET", "/api/x", b"", now(), &fresh_nonce());
    assert_eq!(send(&gw, "GET", "/api/x", b"", &headers).await.0, 200);
    assert_eq!(send(&gw, "GET", "/api/x", b"", &headers).await.0, 401);
    gw.shutdown();
    gw.wait().await;
}

/// Refused signatures are strikes: enough of them ban the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_signatures_count_towards_a_ban() {
    let dir = tempfile::tempdir().unwrap();
    let tdb = TestDb::sqlite(dir.path());
    let up = start_upstream().await;
    let text = config_text(up, &tdb.url).replace("after_auth_failures = 0", "after_auth_failures = 3");
    let gw = gateway(&text).await;
    let forged = Key { id: "hk_made-up".into(), secret: "hks_guess".into() };
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(call(&gw, &forged, "GET", "/api/x", b"").await.0);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses.last(), Some(&403), "banned after a few refusals: {statuses:?}");
    gw.shutdown();
    gw.wait().await;
}
