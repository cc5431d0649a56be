//! The `rampart` binary: check-config, SIGHUP reload, SIGTERM drain, the demo.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rampart");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().unwrap();
    assert!(ok.success());
}

async fn wait_ready(ops_port: u16) {
    for _ in 0..100 {
        if let Ok(r) = client().get(format!("http://127.0.0.1:{ops_port}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gateway did not become ready");
}

#[test]
fn check_config_reports_every_problem_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[server]\nlisten = '127.0.0.1:8080'\ntrusted_proxy = ['10.0.0.0/8']\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.trusted_proxy (line 4)"), "{err}");
    assert!(err.contains("did you mean `trusted_proxies`?"), "{err}");

    let bad2 = dir.path().join("bad2.toml");
    std::fs::write(&bad2, "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n[[routes]]\npath = 'api'\n[[routes]]\npath = '/b'\nupstream = 'nope'\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&bad2).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2 problem(s)"), "{err}");
    assert!(err.contains("routes[0].path (line 5)") && err.contains("routes[1].upstream (line 8)"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n").unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // A remote PostgreSQL without a verified certificate passes with a warning
    // (and without the password); verify-full passes silently.
    let remote = "[storage]\ndatabase = 'postgres://app:s3cret@db.example.com/rampart'\n";
    std::fs::write(&good, format!("version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n{remote}"))
        .unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&good).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("warning: storage.database") && err.contains("sslmode=verify-full"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let verified = remote.replace("rampart'", "rampart?sslmode=verify-full'");
    std::fs::write(&good, format!("version = 1\n[upstreams.default]\nurl = 'http://127.0.0.1:8000'\n{verified}"))
        .unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&good).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // Environment overrides are part of validation, and named when wrong.
    let out =
        Command::new(BIN).arg("check-config").arg(&good).env("RAMPART_SERVER__LISTEN", "nonsense").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set by RAMPART_SERVER__LISTEN"));
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_drains() {
    let up = start_upstream().await;
    let (port, ops) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    let write = |route: &str| {
        std::fs::write(
            &path,
            format!("version = 1\n[server]\nlisten = '127.0.0.1:{port}'\n[audit]\nenabled = false\n[metrics]\nlisten = '127.0.0.1:{ops}'\n[upstreams.default]\nurl = 'http://{up}'\n[[routes]]\npath = '{route}'\n[[routes]]\npath = '/slow/**'\n"),
        )
        .unwrap()
    };
    write("/one/**");
    let child = Running(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(ops).await;
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(client().get(format!("{base}/one/a")).send().await.unwrap().status(), 200);

    write("/two/**");
    signal(&child.0, "HUP");
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if client().get(format!("{base}/two/a")).send().await.unwrap().status() == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "SIGHUP did not install the new routes");
    assert_eq!(client().get(format!("{base}/one/a")).send().await.unwrap().status(), 404);

    // A broken file on SIGHUP keeps the running policy.
    std::fs::write(&path, "version = 1\n[server\n").unwrap();
    signal(&child.0, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client().get(format!("{base}/two/a")).send().await.unwrap().status(), 200);

    // SIGTERM while a request is in flight: it finishes, then the process exits 0.
    let inflight = tokio::spawn({
        let u = format!("{base}/slow/600");
        async move { client().get(u).send().await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut child = child;
    signal(&child.0, "TERM");
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("rampart did not exit after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(inflight.await.unwrap(), "slow done", "in-flight request was cut off");
    let logs =
        BufReader::new(child.0.stdout.take().unwrap()).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n");
    assert!(logs.contains("config reload refused"), "{logs}");
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
    assert!(logs.contains("\"target\":\"rampart::access\""), "{logs}");
}

#[tokio::test]
async fn demo_runs_with_nothing_installed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // `serve` without a config and without ./rampart.toml runs the demo; the
    // environment overrides still apply, which keeps this test off fixed ports.
    let mut child = Running(
        Command::new(BIN)
            .arg("serve")
            .env("RAMPART_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RAMPART_METRICS__LISTEN", "127.0.0.1:0")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(banner.contains(&format!("http://127.0.0.1:{port}")), "{banner}");
    assert!(banner.contains("curl"), "{banner}");
    let v: serde_json::Value =
        client().get(format!("http://127.0.0.1:{port}/hello?x=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["query"], "x=1");
}

#[tokio::test]
async fn ban_commands_add_list_and_remove_on_the_running_gateway() {
    let up = start_upstream().await;
    let ops = free_port();
    let text = config(&format!("http://{up}"), "").replace(
        "[metrics]\nlisten = '127.0.0.1:0'\n",
        &format!("[metrics]\nlisten = '127.0.0.1:{ops}'\nadmin_token = 'ops-token-of-the-test'\n"),
    );
    let gw = gateway(&text).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    std::fs::write(&path, &text).unwrap();
    let ban = |args: &[&str], config: &std::path::Path| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("ban").args(args).arg("--config").arg(config);
        async move {
            let out = cmd.output().await.unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (ok, out) = ban(&["add", "127.0.0.1", "--ttl", "10m", "--reason", "from the cli"], &path).await;
    assert!(ok, "{out}");
    assert!(out.contains("banned 127.0.0.1 for 10m"), "{out}");
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 403);
    let (ok, out) = ban(&["list"], &path).await;
    assert!(ok, "{out}");
    let line = out.lines().find(|l| l.starts_with("127.0.0.1")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("from the cli"), "{line}");
    let secs: u64 = line.split_whitespace().nth(1).unwrap().trim_end_matches('s').parse().unwrap();
    assert!((590..=600).contains(&secs), "{line}");
    let (ok, out) = ban(&["remove", "127.0.0.1"], &path).await;
    assert!(ok, "{out}");
    assert!(out.contains("ban on 127.0.0.1 lifted"), "{out}");
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    let (ok, out) = ban(&["list"], &path).await;
    assert!(ok && !out.contains("127.0.0.1"), "{out}");
    // Without the admin token the listener refuses, and the command says so.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(&wrong, text.replace("ops-token-of-the-test", "another-token-entirely")).unwrap();
    let (ok, out) = ban(&["add", "192.0.2.9"], &wrong).await;
    assert!(!ok && out.contains("401"), "{out}");
    assert!(gw.limits.bans.list().is_empty());
}

/// Starts `rampart serve` on `config` (with `{port}` and `{ops}` filled in)
/// in front of a test upstream, its stdout (the JSON log) piped.
async fn serve(config: &str) -> (Running, String, String, tempfile::TempDir) {
    let up = start_upstream().await;
    let (port, ops) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rampart.toml");
    let text = format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:{port}'\n{config}\n[audit]\nenabled = false\n\
         [metrics]\nlisten = '127.0.0.1:{ops}'\n[upstreams.default]\nurl = 'http://{up}'\n[[routes]]\nname = 'all'\npath = '/**'\n"
    );
    std::fs::write(&path, text).unwrap();
    let child = Running(
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(ops).await;
    (child, format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{ops}"), dir)
}

/// Waits for the process to exit; its exit status and how long that took.
async fn exit_within(child: &mut Running, limit: Duration) -> (std::process::ExitStatus, Duration) {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.0.try_wait().unwrap() {
            return (status, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("rampart did not exit within {limit:?}");
}

fn stdout_of(child: &mut Running) -> String {
    BufReader::new(child.0.stdout.take().unwrap()).lines().map_while(Result::ok).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn access_log_lines_carry_the_request_and_no_secret() {
    let (mut child, base, _ops, _dir) = serve("[log]\naccess_log = true\n").await;
    let r = client()
        .get(format!("{base}/some/path?token=SECRET3&page=2"))
        .header("authorization", "Bearer SECRET1")
        .header("cookie", "s=SECRET2")
        .header("x-api-key", "rpk_SECRET4SECRET4SECRET4SECRET4SECRET4SEC")
        .header("x-request-id", "req-for-the-log")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body_len = r.bytes().await.unwrap().len();
    signal(&child.0, "TERM");
    exit_within(&mut child, Duration::from_secs(10)).await;
    let logs = stdout_of(&mut child);
    for secret in ["SECRET1", "SECRET2", "SECRET3", "SECRET4"] {
        assert!(!logs.contains(secret), "{secret} in the log:\n{logs}");
    }
    let line = logs
        .lines()
        .find(|l| l.contains("\"target\":\"rampart::access\"") && l.contains("req-for-the-log"))
        .unwrap_or_else(|| panic!("no access log line:\n{logs}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let f = if v["fields"].is_object() { &v["fields"] } else { &v };
    assert_eq!(f["request_id"], "req-for-the-log", "{line}");
    assert_eq!(f["client_ip"], "127.0.0.1", "{line}");
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["path"], "/some/path", "{line}");
    assert_eq!(f["route"], "all", "{line}");
    assert_eq!(f["status"], 200, "{line}");
    assert!(f["duration_ms"].as_f64().unwrap() > 0.0, "{line}");
    let upstream_ms = f["upstream_ms"].as_f64().unwrap();
    assert!(upstream_ms > 0.0 && upstream_ms <= f["duration_ms"].as_f64().unwrap(), "{line}");
    assert_eq!(f["bytes"].as_u64().unwrap(), body_len as u64, "{line}");
}

#[tokio::test]
async fn sigint_drains_readyz_turns_503_and_a_long_request_is_cut_at_the_timeout() {
    let (mut child, base, ops, _dir) = serve("shutdown_timeout = '700ms'\n").await;
    assert_eq!(client().get(format!("{ops}/readyz")).send().await.unwrap().status(), 200);
    // A request far longer than shutdown_timeout is in flight.
    let long = tokio::spawn({
        let u = format!("{base}/slow/20000");
        async move {
            match client().get(u).send().await {
                Ok(r) => r.text().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child.0, "INT");
    // While draining, the instance says it is not ready.
    let not_ready = eventually(Duration::from_secs(2), || async {
        matches!(client().get(format!("{ops}/readyz")).send().await, Ok(r) if r.status() == 503)
    })
    .await;
    assert!(not_ready, "/readyz stayed ready while draining");
    let (status, took) = exit_within(&mut child, Duration::from_secs(6)).await;
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "the drain outlived shutdown_timeout: {took:?}");
    let cut = long.await.unwrap();
    assert!(cut.is_err() || cut.as_deref() != Ok("slow done"), "the long request was not cut: {cut:?}");
    let logs = stdout_of(&mut child);
    assert!(logs.contains("shutdown timeout reached"), "{logs}");
}

#[test]
fn the_example_config_passes_check_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/rampart.toml");
    let out = Command::new(BIN).arg("check-config").arg(example).env_remove("RAMPART_CONFIG").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(": ok ("), "{text}");
}
