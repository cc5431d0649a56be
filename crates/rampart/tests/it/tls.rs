//! TLS termination (ALPN, HSTS, certificate reload), HTTPS upstreams and Redis over TLS with
//! certificate verification, using certificates made by rcgen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "Rampart Test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        Self { ca_pem: ca.pem(), ca, ca_key }
    }

    /// A server certificate for localhost and 127.0.0.1: (cert PEM, key PEM, cert DER).
    fn leaf(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn tls_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .build()
        .unwrap()
}

fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec()
}

#[tokio::test]
async fn terminates_tls_with_h2_alpn_hsts_and_reloads_certificates() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der1) = pki.leaf("first");
    let cert_path = write(dir.path(), "cert.pem", &cert);
    let key_path = write(dir.path(), "key.pem", &key);
    let up = start_upstream().await;
    let tls = format!("[server.tls]\ncert = '{cert_path}'\nkey = '{key_path}'\nreload_interval = '100ms'");
    let gw = gateway(&config_with(&format!("http://{up}"), "", &tls)).await;
    let base = format!("https://localhost:{}", gw.addr.port());

    let resp = tls_client(&pki.ca_pem).get(format!("{base}/secure")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2 negotiated by ALPN");
    assert_eq!(peer_cert(&resp), der1);
    assert!(resp.headers()["strict-transport-security"].to_str().unwrap().contains("max-age"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // TLS 1.2 clients are served too.
    let c12 = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(c12.get(format!("{base}/v12")).send().await.unwrap().status(), 200);

    // A broken key file is refused and the running certificate stays.
    std::fs::write(&key_path, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = tls_client(&pki.ca_pem).get(format!("{base}/still")).send().await.unwrap();
    assert_eq!(peer_cert(&resp), der1);

    // A new valid pair is picked up without a restart.
    let (cert2, key2, der2) = pki.leaf("second");
    std::fs::write(&key_path, &key2).unwrap();
    std::fs::write(&cert_path, &cert2).unwrap();
    let mut seen = Vec::new();
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let resp = tls_client(&pki.ca_pem).get(format!("{base}/new")).send().await.unwrap();
        seen = peer_cert(&resp);
        if seen == der2 {
            break;
        }
    }
    assert_eq!(seen, der2, "reloaded certificate not served");
}

#[tokio::test]
async fn plain_http_to_a_tls_port_fails_cleanly() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = pki.leaf("x");
    let tls = format!(
        "[server.tls]\ncert = '{}'\nkey = '{}'",
        write(dir.path(), "c.pem", &cert),
        write(dir.path(), "k.pem", &key)
    );
    let (gw, _) = setup(&tls).await;
    let reply = raw(gw.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Duration::from_secs(3)).await;
    assert!(!reply.contains("200 OK"));
    assert_eq!(
        tls_client(&pki.ca_pem).get(format!("https://localhost:{}/ok", gw.addr.port())).send().await.unwrap().status(),
        200
    );
}

/// An HTTPS upstream serving the usual test routes.
async fn https_upstream(cert_pem: &str, key_pem: &str) -> std::net::SocketAddr {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).unwrap().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(upstream_router());
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstream_is_verified() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = pki.leaf("upstream");
    let up = https_upstream(&cert, &key).await;
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);

    // Trusted through ca_file: served, over h2 when allowed.
    let text = config(&format!("https://localhost:{}", up.port()), "")
        .replace("[upstreams.default]\n", &format!("[upstreams.default]\nca_file = '{ca}'\nhttp2 = true\n"));
    let gw = gateway(&text).await;
    let resp = client().get(url(&gw, "/via-tls")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["path"], "/via-tls");
    assert_eq!(v["version"], "HTTP/2.0");

    // Without the CA the certificate does not verify: 502, never a silent accept.
    let gw = gateway(&config(&format!("https://localhost:{}", up.port()), "")).await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 502).await;
    assert_eq!(v["type"], "urn:rampart:problem:upstream-unavailable");
}

/// An HTTPS target that accepts connections and never answers the TLS
/// handshake is a connect failure after `connect_timeout`, and the request is
/// retried on the other target, not held until `response_timeout`.
#[tokio::test]
async fn a_stalled_tls_handshake_is_a_connect_failure() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = pki.leaf("upstream");
    let good = https_upstream(&cert, &key).await;
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_port = stalled.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stalled.accept().await {
            held.push(s);
        }
    });
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);
    let text = config(&format!("https://localhost:{}", good.port()), "").replace(
        &format!("url = 'https://localhost:{}'\n", good.port()),
        &format!(
            "urls = ['https://localhost:{stalled_port}', 'https://localhost:{}']\nca_file = '{ca}'\n\
                 connect_timeout = '300ms'\nresponse_timeout = '4s'\n[upstreams.default.retries]\nattempts = 2\n",
            good.port()
        ),
    );
    let gw = gateway(&text).await;
    // Round robin: some of these try the stalled target first.
    for i in 0..4 {
        let resp = client().get(url(&gw, &format!("/n{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}: {:?}", resp.text().await);
    }
}

/// `[redis]` for a TLS-only test Redis on `port`, with `tls` settings, and a
/// route whose limit lives there and refuses while Redis is not usable.
fn redis_tls_config(up: SocketAddr, port: u16, prefix: &str, tls: &str) -> String {
    let redis = format!(
        "[redis]\nurl = 'rediss://localhost:{port}/'\ntimeout = '2s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n{tls}"
    );
    let route = "[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '3/min', on_redis_down = 'refuse' }]\n";
    config(&format!("http://{up}"), &format!("{redis}\n{route}"))
}

fn redis_available(gw: &rampart::Gateway) -> bool {
    gw.limits.limiter.redis.as_ref().unwrap().is_available()
}

async fn status(gw: &rampart::Gateway) -> u16 {
    client().get(url(gw, "/x")).send().await.unwrap().status().as_u16()
}

/// Files for a TLS test Redis in `dir`: `server.pem`, `server.key` and
/// `ca.pem` (as [`OwnRedis::start_tls`] wants them) and a client certificate
/// from the same CA. Returns the CA's path and the `[redis]` lines for the
/// client certificate.
fn redis_pki(dir: &Path) -> (String, String) {
    let pki = Pki::new();
    let (cert, key, _) = pki.leaf("redis");
    write(dir, "server.pem", &cert);
    write(dir, "server.key", &key);
    let ca = write(dir, "ca.pem", &pki.ca_pem);
    let (cert, key, _) = pki.leaf("rampart");
    let client_tls = format!(
        "client_cert = '{}'\nclient_key = '{}'\n",
        write(dir, "client.pem", &cert),
        write(dir, "client.key", &key)
    );
    (ca, client_tls)
}

#[tokio::test]
async fn redis_over_tls_verifies_the_server_and_presents_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_tls) = redis_pki(dir.path());
    let other_ca = write(dir.path(), "other-ca.pem", &Pki::new().ca_pem);
    let port = free_port();
    // Redis asks every client for a certificate signed by the test CA.
    let _redis = OwnRedis::start_tls(port, dir.path(), true).await;
    let up = start_upstream().await;
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());

    // Verified against ca_file, the client certificate presented: the limit
    // lives in Redis, one allowance for two instances.
    let text = redis_tls_config(up, port, &prefix, &format!("ca_file = '{ca}'\n{client_tls}"));
    let (a, b) = (gateway(&text).await, gateway(&text).await);
    for gw in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), || async { redis_available(gw) }).await, "connects over TLS");
    }
    let mut got = Vec::new();
    for gw in [&a, &b, &a, &b, &a] {
        got.push(status(gw).await);
    }
    assert_eq!(got, [200, 200, 200, 429, 429], "3/min across both instances, decided in Redis");

    // Never connected: without a client certificate Redis refuses the
    // handshake; with another CA, or with the default web PKI roots (which
    // do not know the test CA), Redis's certificate does not verify. Each
    // would connect at the first probe if it were accepted.
    let refused = [
        ("no client certificate", format!("ca_file = '{ca}'\n")),
        ("another CA", format!("ca_file = '{other_ca}'\n{client_tls}")),
        ("the web PKI", client_tls.clone()),
    ];
    for (what, tls) in refused {
        let gw = gateway(&redis_tls_config(up, port, &prefix, &tls)).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!redis_available(&gw), "{what}: must not connect");
        assert_eq!(status(&gw).await, 503, "{what}: the limit's on_redis_down = 'refuse'");
    }

    // A ban set on one instance reaches the other through Redis's pub/sub,
    // over TLS as well.
    let ops_a = format!("http://{}", a.ops_addr.unwrap());
    let ban = r#"{"ip":"127.0.0.1","ttl":"5m","reason":"tls"}"#;
    assert_eq!(post_ban(&ops_a, ban).await.unwrap().status(), 201);
    assert!(
        eventually(Duration::from_secs(3), || async { status(&b).await == 403 }).await,
        "the ban did not reach instance b"
    );
}

/// Sentinel and TLS together: the sentinel names a TLS-only primary, which
/// Rampart reaches with the URL's TLS settings; the sentinel is reached in
/// plain text, then (`sentinel_tls`) over TLS with a client certificate.
#[tokio::test]
async fn redis_over_tls_through_a_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_tls) = redis_pki(dir.path());
    let (port, sentinel_port) = (free_port(), free_port());
    let _primary = OwnRedis::start_tls(port, dir.path(), true).await;
    let _sentinel =
        OwnRedis::start_sentinel(sentinel_port, dir.path(), "tls-test", port, None, SentinelTls::ToPrimary).await;
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());
    let tls = format!(
        "ca_file = '{ca}'\n{client_tls}sentinels = ['127.0.0.1:{sentinel_port}']\nsentinel_master = 'tls-test'\n"
    );
    // The URL's host is not used: the sentinel names 127.0.0.1:<port>.
    let text = redis_tls_config(start_upstream().await, port, &prefix, &tls)
        .replace(&format!("url = 'rediss://localhost:{port}/'"), "url = 'rediss://unused.invalid/'");
    assert!(text.contains("rediss://unused.invalid/"));
    let gw = gateway(&text).await;
    assert!(eventually(Duration::from_secs(5), || async { redis_available(&gw) }).await, "connects over TLS");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(status(&gw).await);
    }
    assert_eq!(got, [200, 200, 200, 429], "3/min, decided on the primary the sentinel named");

    // A sentinel that speaks only TLS and wants a client certificate.
    let tls_sentinel_port = free_port();
    let _tls_sentinel =
        OwnRedis::start_sentinel(tls_sentinel_port, dir.path(), "tls-test", port, None, SentinelTls::Full).await;
    let over_tls = text.replace(&format!("127.0.0.1:{sentinel_port}"), &format!("127.0.0.1:{tls_sentinel_port}"));
    let with_tls =
        over_tls.replace("sentinel_master = 'tls-test'\n", "sentinel_master = 'tls-test'\nsentinel_tls = true\n");
    assert!(with_tls.contains("sentinel_tls = true"));
    let gw = gateway(&with_tls).await;
    assert!(eventually(Duration::from_secs(5), || async { redis_available(&gw) }).await, "connects over TLS to both");
    assert_eq!(status(&gw).await, 429, "the same allowance, spent above");
    // Without sentinel_tls the sentinel cannot be asked.
    let gw = gateway(&over_tls).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!redis_available(&gw), "a plain-text question to a TLS-only sentinel");
}

#[tokio::test]
async fn redis_tls_files_are_checked_at_start() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = pki.leaf("one");
    let (_, other_key, _) = pki.leaf("two");
    let cert = write(dir.path(), "client.pem", &cert);
    let other_key = write(dir.path(), "other.key", &other_key);
    let missing = dir.path().join("missing.pem").to_string_lossy().into_owned();
    let text = config(
        "http://127.0.0.1:9",
        &format!("[redis]\nurl = 'rediss://localhost:1/'\nca_file = '{missing}'\nclient_cert = '{cert}'\nclient_key = '{other_key}'\n"),
    );
    let err = rampart::app::load_policy_text(&text).unwrap_err().to_string();
    for part in ["redis.ca_file", "cannot read", "redis.client_cert", "does not belong to the certificate"] {
        assert!(err.contains(part), "expected {part:?} in {err}");
    }
}

/// `scripts/test` runs its PostgreSQL with TLS on, its certificate signed by
/// a CA of the run's own (`RAMPART_TEST_POSTGRES_CA`).
#[tokio::test]
async fn postgres_over_verified_tls() {
    let Some(db) = crate::common::db::TestDb::postgres().await else { return };
    let Ok(ca) = std::env::var("RAMPART_TEST_POSTGRES_CA") else {
        eprintln!("skipped: RAMPART_TEST_POSTGRES_CA not set (scripts/test sets it)");
        return;
    };
    let verified = format!("{}?sslmode=verify-full&sslrootcert={ca}", db.url);

    // A gateway whose audit log lives there (so it opens the database at
    // start): every connection of its pool is TLS.
    let dir = tempfile::tempdir().unwrap();
    let up = start_upstream().await;
    let audit = dir.path().join("audit.jsonl");
    let text = config(&format!("http://{up}"), &format!("[storage]\ndatabase = '{verified}'\n"))
        .replace("[audit]\nenabled = false\n", &format!("[audit]\nfile = '{}'\n", audit.display()));
    let gw = gateway(&text).await;
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    // Counted from a plain connection of another name.
    let admin =
        sqlx::PgPool::connect(&format!("{}?sslmode=disable&application_name=rampart-test", db.url)).await.unwrap();
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
         WHERE a.datname = $1 AND a.application_name = 'rampart' AND a.pid <> pg_backend_pid()",
    )
    .bind(&name)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(tls >= 1 && plain == 0, "the gateway's connections: {tls} over TLS, {plain} plain");

    // A certificate no trusted CA signed is refused, not used unverified; the
    // error names the cause and never the password.
    let other_ca = write(dir.path(), "other-ca.pem", &Pki::new().ca_pem);
    for (what, url) in [
        ("another CA", format!("{}?sslmode=verify-full&sslrootcert={other_ca}", db.url)),
        ("the web PKI", format!("{}?sslmode=verify-full", db.url)),
    ] {
        let err = rampart::store::Database::connect(&url).await.unwrap_err();
        let err = format!("{err:#}");
        assert!(err.to_lowercase().contains("certificate"), "{what}: {err}");
        assert!(!err.contains(&db.password().unwrap()), "{what}: {err}");
    }
}

/// A Redis Cluster over TLS (`rediss://` with `cluster_nodes`): every node
/// serves TLS only to clients with a certificate from the test CA and
/// announces its TLS port; two gateways told of different nodes share one
/// allowance, and a gateway trusting another CA never connects.
#[tokio::test]
async fn redis_cluster_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_tls) = redis_pki(dir.path());
    let other_ca = write(dir.path(), "other-ca.pem", &Pki::new().ca_pem);
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());
    let slot = rampart::limit::redis::key_slot(format!("{{{prefix}}}").as_bytes());
    let cluster = OwnCluster::start_with(3, slot, Some(dir.path())).await;
    let nodes = cluster.nodes();
    let up = start_upstream().await;
    let text = |node: &str, tls: &str| {
        // The URL's host is not used: the nodes are.
        redis_tls_config(up, 1, &prefix, &format!("cluster_nodes = ['{node}']\n{tls}"))
            .replace("url = 'rediss://localhost:1/'", "url = 'rediss://unused.invalid/'")
    };
    let trusted = format!("ca_file = '{ca}'\n{client_tls}");
    let a = gateway(&text(&nodes[0], &trusted)).await;
    let b = gateway(&text(&nodes[1], &trusted)).await;
    let stranger = gateway(&text(&nodes[2], &format!("ca_file = '{other_ca}'\n{client_tls}"))).await;
    for gw in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), || async { redis_available(gw) }).await, "connects over TLS");
    }
    let mut got = Vec::new();
    for gw in [&a, &b, &a, &b] {
        got.push(status(gw).await);
    }
    assert_eq!(got, [200, 200, 200, 429], "3/min across both gateways, decided in the cluster");
    let home = &cluster.masters[cluster.home];
    let in_slot: u64 = home.query(redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot)).await;
    assert_eq!(in_slot, 1, "the limit's key, on the primary of the prefix's slot");
    assert!(!redis_available(&stranger), "a cluster whose certificate is not trusted is never used");
    assert_eq!(status(&stranger).await, 503, "on_redis_down = 'refuse'");
}
