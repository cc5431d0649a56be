//! Forward-auth end to end: a real nginx with `auth_request`, a real Caddy
//! with `forward_auth` and a real Traefik with its `forwardAuth` middleware,
//! each in front of a real upstream, ask Rampart about every request (the
//! configurations of `examples/nginx-forward-auth.conf`,
//! `examples/Caddyfile.forward-auth` and `examples/traefik-forward-auth.yml`).
//! The proxies come from `RAMPART_TEST_NGINX`, `RAMPART_TEST_CADDY` and
//! `RAMPART_TEST_TRAEFIK` (set by `scripts/test`, which installs or fetches
//! them) or the usual paths; without one, its test is skipped with a message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use rampart_core::token::{issue, Claims, SigningKey};
use serde_json::Value;

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";
const ISS: &str = "https://app.example.com";

fn token(sub: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let key = SigningKey::hs256("hs256", SECRET.as_bytes()).unwrap();
    issue(&key, &Claims::new(ISS, sub, "api", now, 600)).unwrap()
}

/// nginx asks from 127.0.0.2 (`proxy_bind`), the only trusted proxy; tests
/// calling from 127.0.0.1 are ordinary clients.
fn gateway_config(up: SocketAddr) -> String {
    gateway_config_trusting(up, "127.0.0.2/32")
}

fn gateway_config_trusting(up: SocketAddr, proxy: &str) -> String {
    config_with(
        &format!("http://{up}"),
        &format!("trusted_proxies = ['{proxy}']"),
        &format!(
            "[forward_auth]\npath = '/_rampart/auth'\n\
             [auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = '{ISS}'\nsecret = '{SECRET}'\n\
             [[routes]]\npath = '/private/**'\nauth = 'required'\n\
             [[routes]]\npath = '/limited/**'\nlimits = [{{ by = 'ip', rate = '1/min', burst = 1 }}]\n\
             [[routes]]\npath = '/**'\n"
        ),
    )
}

/// A proxy's binary: from the variable `scripts/test` sets, else the first
/// of `usual` that exists.
fn proxy_binary(var: &str, usual: [&str; 2]) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from).into_iter().chain(usual.map(PathBuf::from)).find(|p| p.is_file())
}

/// A proxy process (nginx, Caddy or Traefik), killed on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example config, with this test's ports and paths filled in.
fn nginx_config(dir: &Path, port: u16, gateway: SocketAddr, upstream: SocketAddr) -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/nginx-forward-auth.conf"))
            .unwrap();
    let server = example
        .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
        .replace("127.0.0.1:8080", &gateway.to_string())
        .replace("127.0.0.1:8000", &upstream.to_string())
        // nginx asks from a trusted address of its own (see gateway_config).
        .replace("proxy_pass_request_body off;", "proxy_pass_request_body off;\n        proxy_bind 127.0.0.2;");
    let d = dir.display();
    let user = if unsafe_is_root() { "user root root;" } else { "" };
    format!(
        "{user}\ndaemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/cb;\n proxy_temp_path {d}/px;\n fastcgi_temp_path {d}/fc;\n \
         uwsgi_temp_path {d}/uw;\n scgi_temp_path {d}/sc;\n{server}\n}}\n"
    )
}

fn unsafe_is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"))
}

async fn start_nginx(bin: &Path, dir: &Path, gateway: SocketAddr, upstream: SocketAddr) -> Proxy {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, port, gateway, upstream)).unwrap();
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut nginx = Proxy { child, port };
    let up = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    if !up {
        let _ = nginx.child.kill();
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        panic!("nginx did not start:\n{log}");
    }
    nginx
}

async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().get(format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn nginx_auth_request_asks_rampart() {
    let Some(bin) = proxy_binary("RAMPART_TEST_NGINX", ["/usr/sbin/nginx", "/usr/bin/nginx"]) else {
        eprintln!("skipped: no nginx (scripts/test installs it and sets RAMPART_TEST_NGINX)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = start_upstream().await;
    let gw = gateway(&gateway_config(up)).await;
    let nginx = start_nginx(&bin, dir.path(), gw.addr, up).await;
    let n = nginx.port;

    // No token on a private route: nginx answers Rampart's 401.
    assert_eq!(get(n, "/private/x", &[]).await.status(), 401);
    // A valid token: through, and the upstream learns who it is from nginx.
    let auth = format!("Bearer {}", token("u-42"));
    let r = get(n, "/private/x?y=1", &[("authorization", &auth), ("x-rampart-auth-method", "signature")]).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-user"], "u-42", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-auth-method"], "jwt", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-issuer"], ISS, "{echoed}");
    assert_eq!(echoed["path"], "/private/x");
    // A forged identity header from the client never reaches the upstream.
    let forged = [
        ("x-rampart-user", "admin"),
        ("x-rampart-auth-method", "session"),
        ("x-rampart-tier", "gold"),
        ("x-rampart-issuer", "https://evil.example"),
    ];
    let r = get(n, "/open", &forged).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    for (name, _) in forged {
        assert!(echoed["headers"].get(name).is_none(), "{name}: {echoed}");
    }
    // Limits apply per client address (nginx's X-Forwarded-For): the second
    // request is refused. nginx's auth_request passes only 401 and 403 on and
    // turns Rampart's 429 into 500 (see examples/nginx-forward-auth.conf).
    assert_eq!(get(n, "/limited/a", &[]).await.status(), 200);
    assert_eq!(get(n, "/limited/a", &[]).await.status(), 500);
    // A bad token is refused the same way as a missing one.
    assert_eq!(get(n, "/private/x", &[("authorization", "Bearer forged.token.here")]).await.status(), 401);
    // The checks went to Rampart, and were counted there.
    let m = reqwest::get(format!("http://{}/metrics", gw.ops_addr.unwrap())).await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_rejections_total{layer=\"auth\",reason=\"missing_token\"}"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"limit\",reason=\"rate\"}"), "{m}");
}

/// The example Caddyfile, with this test's ports filled in, plain HTTP, no
/// admin endpoint.
fn caddyfile(port: u16, gateway: SocketAddr, upstream: SocketAddr) -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/Caddyfile.forward-auth")).unwrap();
    assert!(example.contains("api.example.com {"), "the example's site address changed");
    let site = example
        .replace("api.example.com {", &format!("http://127.0.0.1:{port} {{"))
        .replace("127.0.0.1:8080", &gateway.to_string())
        .replace("127.0.0.1:8000", &upstream.to_string());
    format!("{{\n\tadmin off\n\tauto_https off\n}}\n{site}")
}

/// No header the upstream echoed carries one of Caddy's placeholders.
fn no_placeholders(echoed: &Value) {
    let headers = echoed["headers"].as_object().unwrap();
    for (name, value) in headers {
        assert!(!value.as_str().unwrap_or_default().contains("{http."), "{name}: {value}");
    }
}

#[tokio::test]
async fn caddy_forward_auth_asks_rampart() {
    let Some(bin) = proxy_binary("RAMPART_TEST_CADDY", ["/usr/bin/caddy", "/usr/local/bin/caddy"]) else {
        eprintln!("skipped: no caddy (scripts/test installs it and sets RAMPART_TEST_CADDY)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = start_upstream().await;
    // Caddy asks from 127.0.0.1, as the example's comment says.
    let gw = gateway(&gateway_config_trusting(up, "127.0.0.1/32")).await;
    let port = free_port();
    let conf = dir.path().join("Caddyfile");
    std::fs::write(&conf, caddyfile(port, gw.addr, up)).unwrap();
    let child = Command::new(&bin)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&conf)
        // Caddy keeps state under these; keep it in the temporary directory.
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    let _caddy = Proxy { child, port };
    let up_ok = eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(
        up_ok,
        "caddy did not start:\n{}",
        std::fs::read_to_string(dir.path().join("caddy.log")).unwrap_or_default()
    );

    // No token on a private route: Caddy returns Rampart's problem document.
    let r = get(port, "/private/x", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // A valid token: through, and the upstream learns who it is from Caddy's
    // copy of Rampart's answer headers; method, path and query are the client's.
    let auth = format!("Bearer {}", token("u-42"));
    let r = get(port, "/private/x?y=1", &[("authorization", &auth)]).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-user"], "u-42", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-auth-method"], "jwt", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-issuer"], ISS, "{echoed}");
    assert_eq!((echoed["path"].as_str(), echoed["query"].as_str()), (Some("/private/x"), Some("y=1")));
    no_placeholders(&echoed);
    // A forged identity header from the client never reaches the upstream,
    // nor does a header Rampart did not send (Caddy 2.6 would copy it as its
    // unreplaced placeholder; the example removes those).
    let r = get(port, "/open", &[("x-rampart-user", "admin"), ("x-rampart-issuer", "https://evil.example")]).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert!(echoed["headers"].get("x-rampart-user").is_none(), "{echoed}");
    assert!(echoed["headers"].get("x-rampart-issuer").is_none(), "{echoed}");
    no_placeholders(&echoed);
    // Limits apply per client address, and Caddy passes Rampart's 429 on as
    // it is, Retry-After included.
    assert_eq!(get(port, "/limited/a", &[]).await.status(), 200);
    let r = get(port, "/limited/a", &[]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    // A bad token is refused like a missing one.
    assert_eq!(get(port, "/private/x", &[("authorization", "Bearer forged.token.here")]).await.status(), 401);
    // Caddy writes X-Forwarded-Uri and copies the client's headers into the
    // check: a client's own X-Original-URI naming an open path must not get
    // the private request it sends judged as that path.
    let r = get(port, "/private/x", &[("x-original-uri", "/open"), ("x-original-method", "GET")]).await;
    assert_eq!(r.status(), 400, "a client's X-Original-URI was believed");
    let m = reqwest::get(format!("http://{}/metrics", gw.ops_addr.unwrap())).await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_rejections_total{layer=\"auth\",reason=\"missing_token\"}"), "{m}");
}

#[tokio::test]
async fn only_trusted_proxies_may_ask() {
    let up = start_upstream().await;
    let gw = gateway(&gateway_config(up)).await;
    // This client (127.0.0.1) is not a trusted proxy.
    let r = client()
        .get(url(&gw, "/_rampart/auth"))
        .header("x-original-uri", "/private/x")
        .header("x-original-method", "GET")
        .header("x-forwarded-for", "127.0.0.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let v = problem(r, 403).await;
    assert_eq!(v["type"], "urn:rampart:problem:forward-auth-refused");
    // Its other requests are proxied as usual.
    assert_eq!(client().get(url(&gw, "/open")).send().await.unwrap().status(), 200);
}

/// Two checks a front proxy could turn into an unchecked request to the app:
/// a preflight-shaped check (a 2xx would send the `OPTIONS` to the app
/// unauthenticated) is judged as any other request, and a check carrying an
/// underscored copy of a vouched header (which the proxy would pass to the
/// app as it came) is refused.
#[tokio::test]
async fn checks_the_proxy_would_pass_on_unchecked_are_refused() {
    let up = start_upstream().await;
    let gw = gateway(&config_with(
        &format!("http://{up}"),
        "trusted_proxies = ['127.0.0.1/32']",
        &format!(
            "[forward_auth]\npath = '/_rampart/auth'\n\
             [auth]\naudiences = ['api']\n[[auth.issuers]]\nissuer = '{ISS}'\nsecret = '{SECRET}'\n\
             [defaults.cors]\nallow_origins = ['https://app.example.com']\n\
             [[routes]]\npath = '/private/**'\nauth = 'required'\n\
             [[routes]]\npath = '/**'\n"
        ),
    ))
    .await;
    let check = |uri: &str, headers: &[(&str, &str)]| {
        let mut rb = client().get(url(&gw, "/_rampart/auth")).header("x-original-uri", uri);
        if !headers.iter().any(|(k, _)| *k == "x-original-method") {
            rb = rb.header("x-original-method", "GET");
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send()
    };
    let preflight = [
        ("x-original-method", "OPTIONS"),
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "DELETE"),
    ];
    let v = problem(check("/private/delete?id=7", &preflight).await.unwrap(), 401).await;
    assert_eq!(v["type"], "urn:rampart:problem:unauthorized", "{v}");
    let bearer = format!("Bearer {}", token("u-1"));
    let mut with_token = preflight.to_vec();
    with_token.push(("authorization", &bearer));
    assert_eq!(check("/private/delete?id=7", &with_token).await.unwrap().status(), 200);
    // Proxied (not checked), the gateway answers the preflight itself.
    let mut rb = client().request(reqwest::Method::OPTIONS, url(&gw, "/private/x"));
    for (k, v) in &preflight[1..] {
        rb = rb.header(*k, *v);
    }
    assert_eq!(rb.send().await.unwrap().status(), 204);

    let v = problem(check("/open", &[("x-http-method-override", "DELETE")]).await.unwrap(), 400).await;
    assert_eq!(v["type"], "urn:rampart:problem:method-override", "{v}");
    for name in ["x_rampart_user", "X_Forwarded_For", "x_request_id", "x_http_method"] {
        let v = problem(check("/open", &[(name, "admin")]).await.unwrap(), 400).await;
        assert_eq!(v["type"], "urn:rampart:problem:bad-forward-auth", "{name}: {v}");
    }
    // The forward-auth layer's own refusals carry the security headers too
    // (Caddy and Traefik hand them to the client).
    let r = client().get(url(&gw, "/_rampart/auth")).header("x-forwarded-for", "192.0.2.1").send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(problem(r, 400).await["type"], "urn:rampart:problem:bad-forward-auth");
    assert_eq!(check("/open", &[("x_custom", "fine")]).await.unwrap().status(), 200);
    // A check that does not say the method is refused: a POST taken for a
    // GET would skip the CSRF checks and fall to the routes of GET.
    let r = client().get(url(&gw, "/_rampart/auth")).header("x-original-uri", "/open").send().await.unwrap();
    let v = problem(r, 400).await;
    assert_eq!(v["type"], "urn:rampart:problem:bad-forward-auth");
    assert!(v["detail"].as_str().unwrap().contains("X-Original-Method"), "{v}");
}

/// Rampart never sees the response of a request it only checked, so the
/// cost the upstream reports cannot reach it: such a request is charged its
/// budget's reservation.
#[tokio::test]
async fn a_checked_request_is_charged_its_reservation() {
    let up = start_upstream().await;
    let gw = gateway(&config_with(
        &format!("http://{up}"),
        "trusted_proxies = ['127.0.0.1/32']",
        "[forward_auth]\npath = '/_rampart/auth'\n\
         [[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day', reserve = '0.4' }]\n",
    ))
    .await;
    let check = || {
        client()
            .get(url(&gw, "/_rampart/auth"))
            .header("x-original-uri", "/cost/0.01")
            .header("x-original-method", "GET")
            .header("x-forwarded-for", "192.0.2.7")
            .send()
    };
    for _ in 0..2 {
        assert_eq!(check().await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 0.80 charged: 0.20 is left, less than a reservation.
    let v = problem(check().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
}

#[tokio::test]
async fn forward_auth_config_is_validated() {
    let up = "http://127.0.0.1:1";
    let err = rampart::app::load_policy_text(&config(up, "[forward_auth]\npath = '/_auth'\n")).err().unwrap();
    assert!(err.to_string().contains("trusted_proxies"), "{err}");
    let err = rampart::app::load_policy_text(&config_with(
        up,
        "trusted_proxies = ['10.0.0.0/8']",
        "[forward_auth]\npath = 'auth'\n",
    ))
    .err()
    .unwrap();
    assert!(err.to_string().contains("forward_auth.path"), "{err}");
}

/// The example's dynamic configuration, with this test's addresses filled in.
fn traefik_dynamic(gateway: SocketAddr, upstream: SocketAddr) -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/traefik-forward-auth.yml"))
            .unwrap();
    for needle in ["http://127.0.0.1:8080/_rampart/auth", "http://127.0.0.1:8000", "Host(`api.example.com`)"] {
        assert!(example.contains(needle), "the example no longer has {needle}");
    }
    example.replace("127.0.0.1:8080", &gateway.to_string()).replace("127.0.0.1:8000", &upstream.to_string())
}

/// GET through Traefik as a client of `api.example.com` (the example's rule).
async fn via_traefik(port: u16, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("host", "api.example.com")];
    all.extend_from_slice(headers);
    get(port, path, &all).await
}

#[tokio::test]
async fn traefik_forward_auth_asks_rampart() {
    let Some(bin) = proxy_binary("RAMPART_TEST_TRAEFIK", ["/usr/bin/traefik", "/usr/local/bin/traefik"]) else {
        eprintln!("skipped: no traefik (scripts/test fetches it and sets RAMPART_TEST_TRAEFIK)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let up = start_upstream().await;
    // Traefik asks from 127.0.0.1, as the example's comment says.
    let gw = gateway(&gateway_config_trusting(up, "127.0.0.1/32")).await;
    let port = free_port();
    let dynamic = dir.path().join("dynamic.yml");
    std::fs::write(&dynamic, traefik_dynamic(gw.addr, up)).unwrap();
    let child = Command::new(&bin)
        .arg(format!("--entryPoints.web.address=127.0.0.1:{port}"))
        .arg(format!("--providers.file.filename={}", dynamic.display()))
        .args(["--global.checkNewVersion=false", "--global.sendAnonymousUsage=false", "--log.level=WARN"])
        .env("HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("traefik.log")).unwrap())
        .spawn()
        .unwrap();
    let _traefik = Proxy { child, port };
    // Listening comes before the file provider's routes: wait for a route.
    let routed = eventually(Duration::from_secs(20), || async {
        let r = client().get(format!("http://127.0.0.1:{port}/open")).header("host", "api.example.com").send().await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        routed,
        "traefik did not route to the app:\n{}",
        std::fs::read_to_string(dir.path().join("traefik.log")).unwrap_or_default()
    );

    // No token on a private route: Traefik returns Rampart's problem document.
    let r = via_traefik(port, "/private/x", &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 401, "{body}");
    // A valid token: through, and the upstream learns who it is from the
    // answer headers Traefik copies; method, path and query are the client's.
    let auth = format!("Bearer {}", token("u-42"));
    let r = via_traefik(port, "/private/x?y=1", &[("authorization", &auth)]).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["headers"]["x-rampart-user"], "u-42", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-auth-method"], "jwt", "{echoed}");
    assert_eq!(echoed["headers"]["x-rampart-issuer"], ISS, "{echoed}");
    assert_eq!((echoed["path"].as_str(), echoed["query"].as_str()), (Some("/private/x"), Some("y=1")));
    // A forged identity header from the client never reaches the upstream:
    // Traefik replaces each listed header with Rampart's, or removes it.
    let forged =
        [("x-rampart-user", "admin"), ("x-rampart-roles", "admin"), ("x-rampart-issuer", "https://evil.example")];
    let r = via_traefik(port, "/open", &forged).await;
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert!(echoed["headers"].get("x-rampart-issuer").is_none(), "{echoed}");
    assert!(echoed["headers"].get("x-rampart-user").is_none(), "{echoed}");
    assert!(echoed["headers"].get("x-rampart-roles").is_none(), "{echoed}");
    // A DELETE without a token is refused too.
    let r = client()
        .delete(format!("http://127.0.0.1:{port}/private/x"))
        .header("host", "api.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Limits apply per client address (Traefik's X-Forwarded-For, which it
    // sets from the connection: its entry point believes no client's own
    // unless told to, and the middleware has `trustForwardHeader: false`;
    // with both opened up, the second request below passes), and Traefik
    // passes Rampart's 429 on, Retry-After included.
    assert_eq!(via_traefik(port, "/limited/a", &[("x-forwarded-for", "203.0.113.7")]).await.status(), 200);
    let r = via_traefik(port, "/limited/a", &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(r.status(), 429, "a spoofed X-Forwarded-For made a new client");
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    // A bad token is refused like a missing one.
    assert_eq!(via_traefik(port, "/private/x", &[("authorization", "Bearer forged.token.here")]).await.status(), 401);
    // Traefik writes X-Forwarded-Uri and copies the client's other headers
    // into the check: a client's own X-Original-URI must not be believed.
    let r = via_traefik(port, "/private/x", &[("x-original-uri", "/open"), ("x-original-method", "GET")]).await;
    assert_eq!(r.status(), 400, "a client's X-Original-URI was believed");
    let m = reqwest::get(format!("http://{}/metrics", gw.ops_addr.unwrap())).await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_rejections_total{layer=\"auth\",reason=\"missing_token\"}"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"limit\",reason=\"rate\"}"), "{m}");
}
