//! Shared test fixtures: a real upstream HTTP server on a socket, and a gateway
//! started in-process from config text on an ephemeral port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod db;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use futures_util::StreamExt;
use rampart::Gateway;
use tokio::net::TcpListener;

/// What the upstream saw, echoed back as JSON.
async fn echo(req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let mut size = 0usize;
    let mut chunks = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(c) = stream.next().await {
        match c {
            Ok(c) => {
                size += c.len();
                chunks += 1;
            }
            Err(_) => return (http::StatusCode::BAD_REQUEST, "body error").into_response(),
        }
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&v);
            }
            _ => {
                headers.insert(k.to_string(), v.into());
            }
        }
    }
    let body = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": size,
        "body_chunks": chunks,
    });
    ([("content-type", "application/json"), ("server", "uvicorn"), ("x-powered-by", "FastAPI")], body.to_string())
        .into_response()
}

async fn slow(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slow done"
}

/// Streams `n` chunks 50 ms apart, so a test can see the first before the last.
async fn drip(Path(n): Path<usize>) -> Response {
    let s = futures_util::stream::iter(0..n).then(|i| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(format!("chunk{i}\n")))
    });
    Response::new(Body::from_stream(s))
}

async fn hop_headers() -> Response {
    let mut r = Response::new(Body::from("hop"));
    r.headers_mut().insert("connection", "x-upstream-hop".parse().unwrap());
    r.headers_mut().insert("x-upstream-hop", "secret".parse().unwrap());
    r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
    r.headers_mut().insert("cache-control", "max-age=60".parse().unwrap());
    r
}

pub fn upstream_router() -> Router {
    Router::new()
        .route("/slow/{ms}", get(slow))
        .route("/drip/{n}", get(drip))
        .route("/hop", get(hop_headers))
        // An upstream with its own, permissive CORS: any origin reflected.
        .route(
            "/cors-reflect",
            get(|headers: http::HeaderMap| async move {
                let origin = headers.get("origin").cloned().unwrap_or(http::HeaderValue::from_static("*"));
                [
                    (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                    (http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS, http::HeaderValue::from_static("true")),
                ]
            }),
        )
        .route(
            "/echo-body",
            any(|body: axum::body::Bytes| async move { ([("content-type", "application/octet-stream")], body) }),
        )
        .route("/cost/{amount}", any(|Path(a): Path<String>| async move { ([("x-rampart-cost", a)], "charged") }))
        .route(
            "/slow-cost/{ms}/{amount}",
            get(|Path((ms, a)): Path<(u64, String)>| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                ([("x-rampart-cost", a)], "charged late")
            }),
        )
        .route("/status/{code}", any(|Path(c): Path<u16>| async move { http::StatusCode::from_u16(c).unwrap() }))
        .fallback(echo)
}

/// Starts the upstream on an ephemeral port (HTTP/1.1 and h2c).
pub async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream_router()).await.unwrap() });
    addr
}

/// A config with the given upstream URL, ephemeral listeners and `extra` TOML
/// appended (which may add sections and routes).
pub fn config(upstream: &str, extra: &str) -> String {
    config_with(upstream, "", extra)
}

/// As [`config`], with `server` lines added to the `[server]` table. The audit
/// log is off, so that tests write nothing into the source tree (audit tests
/// build their own config with temporary paths).
pub fn config_with(upstream: &str, server: &str, extra: &str) -> String {
    format!(
        "version = 1\n[server]\nlisten = '127.0.0.1:0'\nbody_read_timeout = '500ms'\n{server}\n[metrics]\nlisten = '127.0.0.1:0'\n[log]\naccess_log = false\n[audit]\nenabled = false\n[upstreams.default]\nurl = '{upstream}'\n{extra}"
    )
}

pub async fn gateway(text: &str) -> Gateway {
    let policy = rampart::app::load_policy_text(text).unwrap_or_else(|e| panic!("bad test config:\n{e}"));
    Gateway::start(policy).await.unwrap()
}

/// Starts an upstream and a gateway in front of it with `extra` config.
pub async fn setup(extra: &str) -> (Gateway, SocketAddr) {
    setup_with("", extra).await
}

/// As [`setup`], with `server` lines added to the `[server]` table.
pub async fn setup_with(server: &str, extra: &str) -> (Gateway, SocketAddr) {
    let up = start_upstream().await;
    let gw = gateway(&config_with(&format!("http://{up}"), server, extra)).await;
    (gw, up)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap()
}

pub fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{}", gw.addr, path)
}

/// Sends raw bytes on a fresh connection and returns what comes back until the
/// server closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the JSON body of a problem response and checks its shape.
pub async fn problem(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["status"], status);
    assert_eq!(v["request_id"], id.as_str());
    assert!(v["type"].as_str().unwrap().starts_with("urn:rampart:problem:"));
    v
}

/// The test Redis shared by the suite (`scripts/test` starts it), if any.
pub fn redis_url() -> Option<String> {
    match std::env::var("RAMPART_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipped: RAMPART_TEST_REDIS_URL not set (scripts/test sets it)");
            None
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where a test sentinel uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentinelTls {
    No,
    /// To reach the primary only.
    ToPrimary,
    /// Also to serve its own clients (TLS only, client certificates required).
    Full,
}

/// A `redis-server` child process of the test's own (so it can be killed and
/// restarted), stopped when dropped.
pub struct OwnRedis {
    child: std::process::Child,
    pub port: u16,
    /// `requirepass`, if any.
    password: Option<String>,
    /// Its working directory (`--dir`): a replica writes the primary's data
    /// there, which must not land in the source tree.
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    fn spawn(port: u16, args: &[&str]) -> Self {
        use std::process::{Command, Stdio};
        let bin = std::env::var("RAMPART_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let dir = tempfile::tempdir().unwrap();
        // `args` first: a config file must be the first argument.
        let child = Command::new(&bin)
            .args(args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
            // A replica syncs at once, not after the default 5 s wait for others.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        Self { child, port, password: None, _dir: dir }
    }

    /// A TLS-only server on `port` (no plain-text port) with `dir`'s
    /// `server.pem` and `server.key`; with `auth_clients`, a client must
    /// present a certificate signed by `dir`'s `ca.pem`.
    pub async fn start_tls(port: u16, dir: &std::path::Path, auth_clients: bool) -> Self {
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
        let port_text = port.to_string();
        let server = Self::spawn(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port_text,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ],
        );
        let start = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server (TLS) on {port} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// A server on the Unix socket `socket` only (no TCP port).
    pub async fn start_unix(socket: &std::path::Path) -> Self {
        let path = socket.to_string_lossy().into_owned();
        let server = Self::spawn(0, &["--port", "0", "--unixsocket", &path, "--unixsocketperm", "700"]);
        let start = std::time::Instant::now();
        while tokio::net::UnixStream::connect(socket).await.is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server on {path} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    /// A replica of the server on `primary`.
    pub async fn start_replica(port: u16, primary: u16) -> Self {
        let server =
            Self::spawn(port, &["--port", &port.to_string(), "--replicaof", "127.0.0.1", &primary.to_string()]);
        server.wait_for(|info| info.contains("master_link_status:up"), "INFO replication").await;
        server
    }

    /// A sentinel on `port` watching the primary on `primary` as `name`
    /// (quorum 1, down after 1 s), its config file in `dir`; with `password`,
    /// clients must authenticate to it. With TLS it uses `dir`'s
    /// `server.pem`, `server.key` and `ca.pem` (as [`OwnRedis::start_tls`]
    /// serves): to reach the primary, and with [`SentinelTls::Full`] also to
    /// serve, on `port` only, to clients with a certificate from that CA.
    pub async fn start_sentinel(
        port: u16,
        dir: &std::path::Path,
        name: &str,
        primary: u16,
        password: Option<&str>,
        tls: SentinelTls,
    ) -> Self {
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let mut text = format!(
            "port {port}\ndir {}\nsentinel monitor {name} 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n",
            dir.display()
        );
        if let Some(password) = password {
            text.push_str(&format!("requirepass {password}\n"));
        }
        if tls != SentinelTls::No {
            let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
            text.push_str(&format!(
                "tls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
                file("server.pem"),
                file("server.key"),
                file("ca.pem")
            ));
        }
        if tls == SentinelTls::Full {
            text = text.replace(&format!("port {port}\n"), &format!("port 0\ntls-port {port}\ntls-auth-clients yes\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let mut server = Self::spawn(port, &[&conf.to_string_lossy(), "--sentinel"]);
        server.password = password.map(str::to_owned);
        if tls == SentinelTls::Full {
            // No plain port to ask INFO on: accepting connections is enough.
            let start = std::time::Instant::now();
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(start.elapsed() < Duration::from_secs(10), "sentinel (TLS) on {port} did not start");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else {
            server.wait_for(|info| info.contains("sentinel_masters:1"), "INFO sentinel").await;
        }
        server
    }

    /// Waits up to 10 s until `INFO` (the section `what` names) satisfies `ok`.
    async fn wait_for(&self, ok: impl Fn(&str) -> bool, what: &str) {
        let section = what.split(' ').nth(1).unwrap_or("default");
        let start = std::time::Instant::now();
        loop {
            if let Ok(client) = redis::Client::open(self.url().as_str()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    if let Ok(info) = redis::cmd("INFO").arg(section).query_async::<String>(&mut conn).await {
                        if ok(&info) {
                            return;
                        }
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{what} on {} not as expected within 10 s", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `cmd` on this server; panics on an error.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url().as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let args: Vec<String> = cmd
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                redis::Arg::Cursor => "<cursor>".to_owned(),
            })
            .collect();
        cmd.query_async(&mut conn).await.unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.port))
    }

    /// Waits up to 10 s until `CLUSTER INFO` satisfies `ok`.
    async fn wait_cluster(&self, ok: impl Fn(&str) -> bool, what: &str) {
        let start = std::time::Instant::now();
        loop {
            let info: String = self.query(redis::cmd("CLUSTER").arg("INFO")).await;
            if ok(&info) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{what} on {} not within 10 s:\n{info}", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn start(port: u16) -> Self {
        Self::wait_started(Self::spawn(port, &["--port", &port.to_string()])).await
    }

    /// A server on `port` that refuses every client without `password`
    /// until [`OwnRedis::open`]: a test prepares its data before a gateway
    /// can see any of it.
    pub async fn start_closed(port: u16, password: &str) -> Self {
        let mut server = Self::spawn(port, &["--port", &port.to_string(), "--requirepass", password]);
        server.password = Some(password.to_owned());
        Self::wait_started(server).await
    }

    /// Lets in clients without a password.
    pub async fn open(&mut self) {
        let _: () = self.query(redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("")).await;
        self.password = None;
    }

    async fn wait_started(server: Self) -> Self {
        let port = server.port;
        let url = server.url();
        let start = std::time::Instant::now();
        loop {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok() {
                        return server;
                    }
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server on {port} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`-STOP`, `-CONT`, …) to the server.
    pub fn signal(&self, signal: &str) {
        let ok = std::process::Command::new("kill").arg(signal).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success(), "kill {signal}");
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of the test's own: `masters` primaries sharing the 16384
/// slots in equal ranges, and one replica of the primary that holds `slot`
/// (for failover tests). Stopped when dropped.
pub struct OwnCluster {
    pub masters: Vec<OwnRedis>,
    /// The replica, and the index in `masters` of its primary.
    pub replica: OwnRedis,
    pub home: usize,
    /// With TLS, each primary's TLS port (its `port` stays plain, for the
    /// test's own commands).
    tls_ports: Option<Vec<u16>>,
}

impl OwnCluster {
    pub async fn start(masters: usize, slot: u16) -> Self {
        Self::start_with(masters, slot, None).await
    }

    /// With `tls`, a directory with `server.pem`, `server.key` and `ca.pem`:
    /// every node also listens with TLS (client certificates required), the
    /// cluster bus and replication run over TLS, and the nodes announce their
    /// TLS ports to TLS clients.
    pub async fn start_with(masters: usize, slot: u16, tls: Option<&std::path::Path>) -> Self {
        let mut nodes = Vec::new();
        let mut tls_ports = Vec::new();
        // The bus ports, given: the default (port + 10000) may be taken, or
        // past 65535.
        let mut bus_ports = Vec::new();
        for _ in 0..=masters {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            let bus_port = free_port();
            bus_ports.push(bus_port);
            let mut args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus_port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            if let Some(dir) = tls {
                let tls_port = free_port();
                tls_ports.push(tls_port);
                let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
                for (k, v) in [
                    ("--tls-port", tls_port.to_string()),
                    ("--tls-cert-file", file("server.pem")),
                    ("--tls-key-file", file("server.key")),
                    ("--tls-ca-cert-file", file("ca.pem")),
                    ("--tls-auth-clients", "yes".to_owned()),
                    ("--tls-cluster", "yes".to_owned()),
                    ("--tls-replication", "yes".to_owned()),
                ] {
                    args.extend([k.to_owned(), v]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = OwnRedis::spawn(port, &args);
            node.wait_for(|info| info.contains("cluster_enabled:1"), "INFO cluster").await;
            nodes.push(node);
        }
        tls_ports.truncate(masters);
        let replica = nodes.pop().unwrap();
        let span = 16384 / masters;
        let mut home = 0;
        for (i, node) in nodes.iter().enumerate() {
            let first = i * span;
            let last = if i + 1 == masters { 16383 } else { first + span - 1 };
            if (first..=last).contains(&usize::from(slot)) {
                home = i;
            }
            node.query::<String>(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last)).await;
        }
        for (node, bus_port) in nodes.iter().chain([&replica]).zip(&bus_ports).skip(1) {
            let mut meet = redis::cmd("CLUSTER");
            meet.arg("MEET").arg("127.0.0.1").arg(node.port).arg(bus_port);
            nodes[0].query::<String>(&meet).await;
        }
        // Known to every node by its real ID (not still in the handshake).
        let mut ids = Vec::new();
        for node in nodes.iter().chain([&replica]) {
            ids.push(node.query::<String>(redis::cmd("CLUSTER").arg("MYID")).await);
        }
        for node in nodes.iter().chain([&replica]) {
            let start = std::time::Instant::now();
            loop {
                let known: String = node.query(redis::cmd("CLUSTER").arg("NODES")).await;
                if ids.iter().all(|id| known.contains(id.as_str())) && !known.contains("handshake") {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "nodes not all known to {}:\n{known}", node.port);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let id = &ids[home];
        replica.query::<String>(redis::cmd("CLUSTER").arg("REPLICATE").arg(id)).await;
        // Every primary must know the replica as such, or it would not vote
        // for it in a failover.
        let replica_id = &ids[masters];
        for node in &nodes {
            let start = std::time::Instant::now();
            loop {
                let known: String = node.query(redis::cmd("CLUSTER").arg("NODES")).await;
                if known.lines().any(|l| l.starts_with(replica_id.as_str()) && l.contains(&format!("slave {id}"))) {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "{} does not see the replica:\n{known}", node.port);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        for node in nodes.iter().chain([&replica]) {
            node.wait_cluster(|info| info.contains("cluster_state:ok"), "cluster_state:ok").await;
        }
        replica.wait_for(|info| info.contains("master_link_status:up"), "INFO replication").await;
        Self { masters: nodes, replica, home, tls_ports: tls.map(|_| tls_ports) }
    }

    /// A manual failover (`CLUSTER FAILOVER` on the replica): the replica
    /// becomes the primary of the home slots. Asked again while it has not
    /// happened (a node may still be catching up on the layout).
    pub async fn failover(&self) {
        let start = std::time::Instant::now();
        loop {
            let _: String = self.replica.query(redis::cmd("CLUSTER").arg("FAILOVER")).await;
            let asked = std::time::Instant::now();
            while asked.elapsed() < Duration::from_secs(3) {
                let role: Vec<redis::Value> = self.replica.query(&redis::cmd("ROLE")).await;
                if redis::from_redis_value::<String>(&role[0]).unwrap() == "master" {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no failover to {} within 20 s", self.replica.port);
        }
    }

    /// `host:port` of every primary (the TLS ports, with TLS).
    pub fn nodes(&self) -> Vec<String> {
        match &self.tls_ports {
            Some(ports) => ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
            None => self.masters.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect(),
        }
    }
}

/// Polls `ok` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut ok: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if ok().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The `name=value` of the session cookie a login answer sets.
pub fn session_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("__Host-rampart_session="))
        .expect("a session cookie")
}

/// Posts a ban (`body`, JSON) to the operations listener at `ops`
/// (`http://host:port`), as `rampart ban add` does.
pub async fn post_ban(ops: &str, body: impl Into<reqwest::Body>) -> reqwest::Result<reqwest::Response> {
    client().post(format!("{ops}/bans")).header("content-type", "application/json").body(body).send().await
}

/// JSON nesting `levels` objects whose only key is serde_json's private
/// RawValue name, each holding the next, 120 brackets deeper, as an escaped
/// string: parsed into a `serde_json::Value`, a hundred levels recurse
/// 12 000 deep (past any thread's stack).
pub fn raw_value_bomb(levels: usize) -> String {
    let mut inner = String::from("1");
    for _ in 0..levels {
        let wrapped = format!("{}{}{}", "[".repeat(120), inner, "]".repeat(120));
        let escaped = wrapped.replace('\\', "\\u005c").replace('"', "\\u0022");
        inner = format!("{{\"$serde_json::private::RawValue\":\"{escaped}\"}}");
    }
    inner
}
