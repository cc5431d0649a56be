//! The FastAPI example (`examples/fastapi/`) end to end: the real app under
//! uvicorn behind a gateway that runs the shipped `rampart.toml` (only its
//! ports, database, key file and audit file overridden, as an operator would
//! with `RAMPART_*` variables). A user registers, logs in, creates and lists
//! quotes; a non-admin is refused the admin statistics and an admin gets them;
//! the daily budget fed by the app's `X-Cost` header runs out with a 429.
//!
//! Both identity modes of the app are walked. In JWT mode the app verifies
//! Rampart's internal token with PyJWT against the JWKS and refuses every
//! direct call; in header mode it trusts `X-Rampart-User`, which is safe only
//! when nothing but Rampart can reach it (the test shows why).
//!
//! Python with FastAPI, uvicorn and PyJWT comes from
//! `RAMPART_TEST_FASTAPI_PYTHON` (set by `scripts/test`, which installs
//! Debian's packages); without it the tests are skipped with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::identity::{login, register_with_email, PASSWORD};

const EXAMPLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/fastapi");
const BIN: &str = env!("CARGO_BIN_EXE_rampart");
/// `[identity] issuer` of the example config.
const ISSUER: &str = "http://localhost:8080";
/// 120 characters: 30 "tokens" at 0.01, so each quote costs 0.30 of the
/// 1.00 daily budget.
const PROMPT: &str = "Quote for summarising a forty-page supply contract into a one-page brief for the board meeting next Tuesday, in English.";

fn python() -> Option<String> {
    match std::env::var("RAMPART_TEST_FASTAPI_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            eprintln!("skipped: RAMPART_TEST_FASTAPI_PYTHON not set (scripts/test sets it to a Python with FastAPI, uvicorn and PyJWT)");
            None
        }
    }
}

/// The app under uvicorn, killed when dropped.
struct Uvicorn {
    child: Child,
    port: u16,
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Uvicorn {
    async fn start(python: &str, port: u16, env: &[(&str, String)], log: &Path) -> Self {
        Self::start_app(python, Path::new(EXAMPLE_DIR), port, env, log).await
    }

    /// `app:app` of the directory `app_dir` on `port`.
    async fn start_app(python: &str, app_dir: &Path, port: u16, env: &[(&str, String)], log: &Path) -> Self {
        let mut cmd = Command::new(python);
        cmd.args(["-m", "uvicorn", "app:app", "--host", "127.0.0.1"])
            .arg("--app-dir")
            .arg(app_dir)
            .args(["--port", &port.to_string()])
            .env_remove("QUOTES_JWKS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(log.with_extension("err")).unwrap()));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {python} -m uvicorn: {e}"));
        let mut app = Self { child, port };
        let up = eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        if !up || app.child.try_wait().unwrap().is_some() {
            let _ = app.child.kill();
            let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
            panic!("uvicorn did not start on port {port}:\n{err}");
        }
        app
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The overrides that fit the example config to this test: its ports, a
/// database, key and audit file in `dir`, and the app's port as upstream.
fn overrides(dir: &Path, app_port: u16) -> Vec<(String, String)> {
    let key = dir.join("secret_key");
    if !key.exists() {
        std::fs::write(&key, "a-random-test-key-of-more-than-32-bytes\n").unwrap();
    }
    [
        ("RAMPART_SERVER__LISTEN", "127.0.0.1:0".to_string()),
        ("RAMPART_METRICS__LISTEN", "127.0.0.1:0".to_string()),
        ("RAMPART_STORAGE__DATABASE", format!("sqlite://{}/rampart.db", dir.display())),
        ("RAMPART_IDENTITY__SECRET_KEY_FILE", key.display().to_string()),
        ("RAMPART_AUDIT__FILE", dir.join("audit.jsonl").display().to_string()),
        ("RAMPART_UPSTREAMS__DEFAULT__URL", format!("http://127.0.0.1:{app_port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn example_config() -> PathBuf {
    PathBuf::from(EXAMPLE_DIR).join("rampart.toml")
}

/// The `rampart` binary on the example config with `env`; (success, stdout, stderr).
fn rampart_cli(args: &[&str], env: &[(String, String)], stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(example_config())
        .env_remove("RAMPART_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The gateway on the shipped example config, validated as `serve` and
/// `check-config` validate it.
async fn example_gateway(env: &[(String, String)]) -> rampart::Gateway {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(example_config())
        .env_remove("RAMPART_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(example_config()).unwrap();
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    let policy = rampart_core::config::load(&text, env, &read).unwrap_or_else(|e| panic!("example config:\n{e}"));
    rampart::Gateway::start(policy).await.unwrap()
}

async fn create_quote(gw: &rampart::Gateway, token: &str) -> reqwest::Response {
    client()
        .post(url(gw, "/quotes"))
        .bearer_auth(token)
        .json(&serde_json::json!({"prompt": PROMPT}))
        .send()
        .await
        .unwrap()
}

async fn get(gw: &rampart::Gateway, path: &str, token: &str) -> reqwest::Response {
    client().get(url(gw, path)).bearer_auth(token).send().await.unwrap()
}

/// Registers `name` and returns its user id (what `X-Rampart-User` carries).
async fn register(gw: &rampart::Gateway, name: &str) -> String {
    let r = register_with_email(gw, name, None, PASSWORD).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// The walk through the example, the same in both identity modes.
async fn walk(gw: &rampart::Gateway, env: &[(String, String)]) {
    let alice = register(gw, "alice").await;
    let bob = register(gw, "bob").await;
    // An administrator, made from the command line as an operator would.
    let (ok, out, err) = rampart_cli(&["user", "add", "ada", "--role", "admin"], env, &format!("{PASSWORD}\n"));
    assert!(ok, "rampart user add: {err}");
    let ada = serde_json::from_str::<Value>(out.trim()).unwrap()["id"].as_str().unwrap().to_string();
    let (alice_token, _) = login(gw, "alice", PASSWORD).await;
    let (bob_token, _) = login(gw, "bob", PASSWORD).await;
    let (ada_token, _) = login(gw, "ada", PASSWORD).await;

    // Quotes: priced from the prompt, the call's cost in X-Cost.
    let mut spent = 0;
    for token in [&alice_token, &alice_token, &bob_token] {
        let r = create_quote(gw, token).await;
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-cost"], "0.30");
        let q: Value = r.json().await.unwrap();
        assert_eq!((q["tokens"].as_u64(), q["price"].as_str()), (Some(30), Some("2.50")), "{q}");
        if token == &alice_token {
            spent += 30;
        }
        // Rampart debits the budget after the response, off the request path.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each sees only their own.
    let mine: Value = get(gw, "/quotes", &alice_token).await.json().await.unwrap();
    assert_eq!(mine["quotes"].as_array().unwrap().len(), 2, "{mine}");
    let theirs: Value = get(gw, "/quotes", &bob_token).await.json().await.unwrap();
    assert_eq!(theirs["quotes"].as_array().unwrap().len(), 1, "{theirs}");
    // No token: Rampart answers, the app is never asked.
    let r = client().get(url(gw, "/quotes")).send().await.unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    problem(r, 401).await;

    // The admin statistics: Rampart refuses a non-admin with 403, admits ada.
    let v = problem(get(gw, "/admin/stats", &alice_token).await, 403).await;
    assert!(v["detail"].as_str().unwrap().contains("admin"), "{v}");
    let r = get(gw, "/admin/stats", &ada_token).await;
    assert_eq!(r.status(), 200);
    let stats: Value = r.json().await.unwrap();
    assert_eq!(stats["quotes"], 3, "{stats}");
    assert_eq!(stats["quotes_per_user"][&alice], 2, "{stats}");
    assert_eq!(stats["quotes_per_user"][&bob], 1, "{stats}");
    assert!(stats["quotes_per_user"].get(&ada).is_none(), "{stats}");

    // Alice keeps asking until less than a reservation (0.30) of her 1.00 a
    // day is left, then 429 with Retry-After.
    let mut refused = None;
    for _ in 0..10 {
        let r = create_quote(gw, &alice_token).await;
        if r.status() != 201 {
            refused = Some(r);
            break;
        }
        spent += 30;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spent, 90, "0.30 a quote: 0.10 is left after the third, less than a reservation");
    let r = refused.expect("the budget never ran out");
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 60, "the missing 0.20 refills over hours, not seconds: {retry_after}");
    let v = problem(r, 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
    // Alice can still read, and Bob's budget is his own.
    assert_eq!(get(gw, "/quotes", &alice_token).await.status(), 200);
    assert_eq!(create_quote(gw, &bob_token).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_example_in_jwt_mode_refuses_direct_calls() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let env = overrides(dir.path(), app_port);
    let gw = example_gateway(&env).await;
    let jwks = url(&gw, "/.well-known/jwks.json");
    let app = Uvicorn::start(
        &python,
        app_port,
        &[("QUOTES_JWKS_URL", jwks), ("QUOTES_JWT_ISSUER", ISSUER.to_string())],
        &dir.path().join("uvicorn.log"),
    )
    .await;
    walk(&gw, &env).await;

    // Straight to the app, around Rampart: nothing it trusts comes along.
    let direct = |path: &str, headers: &[(&str, &str)]| {
        let mut rb = client().get(app.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        async move { rb.send().await.unwrap() }
    };
    let r = direct("/quotes", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // The plain identity headers mean nothing in JWT mode.
    let forged = [("x-rampart-user", "someone"), ("x-rampart-roles", "admin")];
    assert_eq!(direct("/admin/stats", &forged).await.status(), 401);
    // Nor does a token Rampart signed for another audience: a user's own
    // access token is no internal identity token.
    let (access, _) = login(&gw, "bob", PASSWORD).await;
    assert_eq!(direct("/admin/stats", &[("x-rampart-jwt", &access)]).await.status(), 401);
    assert_eq!(direct("/quotes", &[("x-rampart-jwt", "not.a.token")]).await.status(), 401);
    // A token with a made-up key id is refused without trusting it.
    let forged_kid = forge_kid(&access);
    assert_eq!(direct("/quotes", &[("x-rampart-jwt", &forged_kid)]).await.status(), 401);

    gw.shutdown();
    gw.wait().await;
}

/// `token` with its header's `kid` replaced (so its signature no longer fits).
fn forge_kid(token: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut head: Value = serde_json::from_slice(&engine.decode(&parts[0]).unwrap()).unwrap();
    head["kid"] = "made-up".into();
    parts[0] = engine.encode(head.to_string());
    parts.join(".")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastapi_example_in_header_mode_trusts_only_what_rampart_sends() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let env = overrides(dir.path(), app_port);
    let gw = example_gateway(&env).await;
    let app = Uvicorn::start(&python, app_port, &[], &dir.path().join("uvicorn.log")).await;
    walk(&gw, &env).await;

    // Through Rampart, a client's own identity headers are removed first:
    // with a valid token of bob's, claiming to be an admin changes nothing.
    let (bob, _) = login(&gw, "bob", PASSWORD).await;
    let r = client()
        .get(url(&gw, "/quotes"))
        .bearer_auth(&bob)
        .header("x-rampart-user", "someone-else")
        .header("x-rampart-roles", "admin")
        .send()
        .await
        .unwrap();
    let quotes: Value = r.json().await.unwrap();
    assert_eq!(quotes["quotes"].as_array().unwrap().len(), 2, "bob's own quotes: {quotes}");

    // Straight to the app: no identity, no service…
    assert_eq!(client().get(app.url("/quotes")).send().await.unwrap().status(), 401);
    // …but whoever reaches the app directly can claim anything. That is why
    // header mode needs the app on an address only Rampart can reach (or
    // JWT mode, above).
    let r = client()
        .get(app.url("/admin/stats"))
        .header("x-rampart-user", "anyone")
        .header("x-rampart-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "header mode believes the headers: keep the app behind Rampart");

    gw.shutdown();
    gw.wait().await;
}

/// A FastAPI form endpoint (`Form` fields, which FastAPI reads from
/// URL-encoded and multipart bodies alike) behind a gateway that inspects in
/// block mode: an attack in either encoding is refused before the app sees
/// it, and a harmless multipart form reaches the app as sent, parsed by
/// python-multipart to the same fields Rampart inspected.
#[tokio::test]
async fn fastapi_form_fields_are_inspected_in_both_encodings() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        "from fastapi import FastAPI, Form\n\
         app = FastAPI()\n\
         @app.post('/comment')\n\
         async def comment(comment: str = Form(...), note: str = Form('')):\n\
         \x20   return {'comment': comment, 'note': note}\n",
    )
    .unwrap();
    let port = free_port();
    let _app = Uvicorn::start_app(&python, dir.path(), port, &[], &dir.path().join("uvicorn.log")).await;
    let gw = gateway(&config(
        &format!("http://127.0.0.1:{port}"),
        "[defaults]\ninspect = 'block'\n[bans]\nenabled = false\n",
    ))
    .await;
    let attack = "1' UNION SELECT password FROM users --";
    let multipart = |fields: &[(&str, &str)]| {
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!("--b0und\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
        }
        body + "--b0und--\r\n"
    };
    let post = |content_type: &str, body: String| {
        client().post(url(&gw, "/comment")).header("content-type", content_type).body(body).send()
    };
    let encoded =
        format!("comment={}", percent_encoding::utf8_percent_encode(attack, percent_encoding::NON_ALPHANUMERIC));
    let r = post("application/x-www-form-urlencoded", encoded).await.unwrap();
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:input-blocked");
    let form = "multipart/form-data; boundary=b0und";
    let r = post(form, multipart(&[("note", "hi"), ("comment", attack)])).await.unwrap();
    assert_eq!(problem(r, 403).await["type"], "urn:rampart:problem:input-blocked");

    // Bodies that python-multipart reads differently from a lenient parser
    // (multer, which an earlier version used): the app reads the attack in
    // each, as sent straight to it shows; through Rampart they are refused.
    let part = |disposition: &str, value: &str| {
        format!("--b0und\r\nContent-Disposition: form-data; {disposition}\r\n\r\n{value}\r\n--b0und--\r\n")
    };
    let tricks = [
        (
            "multipart/form-data; boundary=AAA; boundary=BBB".to_owned(),
            format!(
                "--BBB\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\n{attack}\r\n--BBB--\r\n\
                 --AAA\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nok\r\n--AAA--\r\n"
            ),
            attack,
        ),
        (form.to_owned(), part("name=\"comment\"; x=\"; filename=y\"", attack), attack),
        (
            form.to_owned(),
            format!(
                "--b0und\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nfine\r\n--b0und \r\n\
                 Content-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\n{attack}\r\n--b0und--\r\n"
            ),
            attack,
        ),
        // Found against the strict reader's first version (helper-50): an
        // empty `filename` that python-multipart does not see, and a UTF-7
        // charset after an empty parameter name that it reads.
        (form.to_owned(), part("name=\"comment\"; filename=", attack), attack),
        (
            format!("{form}; =\"; charset=utf-7\""),
            part("name=\"comment\"", "+ADw-script+AD4-alert(1)+ADw-/script+AD4-"),
            "<script>",
        ),
    ];
    for (content_type, body, read_as) in tricks {
        let direct = client()
            .post(format!("http://127.0.0.1:{port}/comment"))
            .header("content-type", &content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let read: Value = direct.json().await.unwrap();
        assert!(read["comment"].as_str().unwrap().contains(read_as), "the app did not read the attack: {read}");
        let v = problem(post(&content_type, body).await.unwrap(), 400).await;
        assert_eq!(v["type"], "urn:rampart:problem:invalid-body", "{content_type}: {v}");
    }

    let fine = multipart(&[("comment", "Nice work, O'Brien"), ("note", "5 < 6")]);
    let r = post("multipart/form-data; boundary=b0und", fine).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen, serde_json::json!({"comment": "Nice work, O'Brien", "note": "5 < 6"}));
}
