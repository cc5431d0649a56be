//! Routes mixing limits keyed by address and by principal: every limit of such
//! a route is decided once, after authentication, in one call (one Redis round
//! trip), so a request refused by its user limit charges its address limit
//! nothing, and the response names the tightest limit in one set of headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::auth::{auth_config, claims, es256, get, hs256, token, APP, LOGIN};
use crate::common::*;

/// An address limit of 3 and a user limit of 1 on one route; anonymous
/// requests are let in (`auth = "optional"`), so they meet the address limit only.
const MIXED: &str = "[[routes]]\nname = 'mixed'\npath = '/**'\nauth = 'optional'\n\
    limits = [{ by = 'ip', rate = '3/min', burst = 3 }, { by = 'user', rate = '1/min', burst = 1 }]\n";

fn header(r: &reqwest::Response, name: &str) -> String {
    let all: Vec<_> = r.headers().get_all(name).iter().collect();
    assert_eq!(all.len(), 1, "{name}: one value, from one decision: {all:?}");
    all[0].to_str().unwrap().to_owned()
}

/// Runs the scenario on `gw`: a refused user limit charges the address limit
/// nothing, and the headers follow the tightest limit.
async fn refused_user_limit_charges_no_address_limit(gw: &rampart::Gateway) {
    let (alice, bob) = (token(&hs256(), &claims(APP, "alice")), token(&hs256(), &claims(APP, "bob")));
    let r = get(gw, "/a", Some(&alice), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-policy"), "\"mixed#0\";q=3;w=60, \"mixed#1\";q=1;w=60");
    assert!(header(&r, "ratelimit").starts_with("\"mixed#1\";r=0;"), "the user limit is the tightest");
    assert_eq!((header(&r, "x-ratelimit-limit"), header(&r, "x-ratelimit-remaining")), ("1".into(), "0".into()));
    for _ in 0..3 {
        let r = get(gw, "/a", Some(&alice), &[]).await;
        assert_eq!(r.status(), 429);
        assert!(header(&r, "ratelimit").starts_with("\"mixed#1\";r=0;"));
        assert_eq!(header(&r, "x-ratelimit-limit"), "1");
    }
    // Had alice's three refusals been charged to the address, it would be spent.
    let r = get(gw, "/a", Some(&bob), &[]).await;
    assert_eq!(r.status(), 200, "the address limit was charged by refused requests");
    // Anonymous requests skip the user limit but still meet the address limit:
    // one unit is left of three, then none.
    let r = get(gw, "/a", None, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "ratelimit-policy"), "\"mixed#0\";q=3;w=60");
    assert!(header(&r, "ratelimit").starts_with("\"mixed#0\";r=0;"), "{:?}", r.headers());
    assert_eq!(header(&r, "x-ratelimit-limit"), "3");
    assert_eq!(get(gw, "/a", None, &[]).await.status(), 429);
}

/// Two issuers' users of one `sub` are two users: one's spent limit is not
/// the other's.
#[tokio::test]
async fn a_user_limit_is_per_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let routes = "[[routes]]\npath = '/**'\nauth = 'required'\nlimits = [{ by = 'user', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(&auth_config(dir.path(), routes)).await;
    let app = token(&hs256(), &claims(APP, "dave"));
    assert_eq!(get(&gw, "/a", Some(&app), &[]).await.status(), 200);
    assert_eq!(get(&gw, "/a", Some(&app), &[]).await.status(), 429);
    let login = token(&es256(), &claims(LOGIN, "dave"));
    assert_eq!(get(&gw, "/a", Some(&login), &[]).await.status(), 200, "another issuer's dave");
}

#[tokio::test]
async fn mixed_limits_are_one_decision_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup(&auth_config(dir.path(), MIXED)).await;
    refused_user_limit_charges_no_address_limit(&gw).await;
}

#[tokio::test]
async fn mixed_limits_are_one_decision_and_one_round_trip_on_redis() {
    let Some(redis) = redis_url() else { return };
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[redis]\nurl = '{redis}'\ntimeout = '2s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n{}",
        auth_config(dir.path(), MIXED)
    );
    let (gw, _) = setup(&extra).await;
    let store = gw.limits.limiter.redis.as_ref().unwrap();
    assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);
    refused_user_limit_charges_no_address_limit(&gw).await;

    // One authenticated request on the mixed route: exactly one EVALSHA, and it
    // carries both keys. MONITOR shows every command in order; an ECHO sent
    // after the request marks the end, so no sleep decides the count.
    let monitor = Monitor::start(&redis).await;
    let carol = token(&hs256(), &claims(APP, "carol"));
    assert_eq!(get(&gw, "/a", Some(&carol), &[]).await.status(), 429, "the address limit is spent");
    let lines = monitor.until_marker(&redis).await;
    // Commands the script runs show as `[0 lua]`; the round trips are the others.
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains(&prefix) && !l.contains(" lua]")).collect();
    assert_eq!(ours.len(), 1, "one round trip per request: {ours:#?}");
    assert!(ours[0].contains("\"EVALSHA\"") || ours[0].contains("\"evalsha\""), "{}", ours[0]);
    assert!(ours[0].contains(&format!("{prefix}rl:{{ip:127.0.0.1}}:mixed#0")), "{}", ours[0]);
    // The user is the issuer's: `user:<length of the issuer>:<issuer><sub>`.
    let user = format!("{prefix}rl:{{user:{}:{APP}carol}}:mixed#1", APP.len());
    assert!(ours[0].contains(&user), "{}", ours[0]);
}

/// `redis-cli monitor` on the test server.
struct Monitor {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Monitor {
    async fn start(url: &str) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("redis-cli")
            .args(["-u", url, "monitor"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli (scripts/test installs redis-tools)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await.unwrap().unwrap();
        assert_eq!(first.as_deref(), Some("OK"), "MONITOR started");
        Self { child, lines }
    }

    /// Sends a unique `ECHO` and returns every line monitored before it.
    async fn until_marker(mut self, url: &str) -> Vec<String> {
        let marker = format!("end-{}", uuid::Uuid::now_v7().simple());
        let mut conn = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        let _: String = redis::cmd("ECHO").arg(&marker).query_async(&mut conn).await.unwrap();
        let mut out = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("the marker reached MONITOR")
                .unwrap()
                .expect("redis-cli monitor ended");
            if line.contains(&marker) {
                break;
            }
            out.push(line);
        }
        let _ = self.child.kill().await;
        out
    }
}

/// The client address of a `MONITOR` line (`<time> [<db> <addr>] "CMD" …`).
fn monitor_source(line: &str) -> String {
    let inner = line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map_or("", |(inner, _)| inner);
    inner.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

#[tokio::test]
async fn each_worker_decides_on_its_own_redis_connection() {
    let Some(redis) = redis_url() else { return };
    let prefix = format!("t{}:", uuid::Uuid::now_v7().simple());
    let extra = format!(
        "[redis]\nurl = '{redis}'\ntimeout = '2s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n\
         [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '100000/s', burst = 100000 }}]\n"
    );
    let (gw, _) = setup_with("workers = 2", &extra).await;
    let store = gw.limits.limiter.redis.as_ref().unwrap();
    assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);
    // Two clients, one kept-alive connection each, so one on each worker. A
    // worker's first decision starts making its own Redis connection and uses
    // the shared one meanwhile; once both have theirs, the two clients'
    // decisions come from two connections.
    let (a, b) = (client(), client());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let monitor = Monitor::start(&redis).await;
        for c in [&a, &b] {
            assert_eq!(c.get(url(&gw, "/x")).send().await.unwrap().status(), 200);
        }
        let lines = monitor.until_marker(&redis).await;
        // (A first call may show twice: `NOSCRIPT`, then again after loading.)
        let calls: Vec<&String> = lines.iter().filter(|l| l.contains(&prefix) && !l.contains(" lua]")).collect();
        let sources: std::collections::HashSet<String> = calls.iter().map(|l| monitor_source(l)).collect();
        if sources.len() == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both workers' decisions kept sharing one connection: {calls:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
