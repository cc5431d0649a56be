//! Rate limits, budgets, bans, access lists and shedding through the gateway,
//! with the in-process backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn statuses(gw: &rampart::Gateway, path: &str, n: usize) -> Vec<u16> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.get(url(gw, path)).send().await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn exact_burst_then_429_with_headers() {
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '2/min', burst = 3 }]\n").await;
    let c = client();
    for expected_remaining in [2, 1, 0] {
        let r = c.get(url(&gw, "/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-remaining"], expected_remaining.to_string().as_str());
        assert_eq!(r.headers()["x-ratelimit-limit"], "2");
        assert_eq!(r.headers()["ratelimit-policy"], "\"routes[0]#0\";q=2;w=60");
    }
    let r = c.get(url(&gw, "/x")).send().await.unwrap();
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "one unit refills in 30 s: {retry}");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains(";r=0;"));
    let v = problem(r, 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:rate-limited");
}

#[tokio::test]
async fn refill_happens_at_the_rate() {
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '10/s', burst = 1 }]\n").await;
    assert_eq!(statuses(&gw, "/a", 2).await, [200, 429]);
    tokio::time::sleep(Duration::from_millis(110)).await;
    assert_eq!(statuses(&gw, "/a", 2).await, [200, 429]);
}

#[tokio::test]
async fn named_limits_are_shared_unless_keyed_by_route() {
    let cfg = "[limits.named.shared]\nby = 'ip'\nrate = '1/min'\nburst = 2\n\
               [limits.named.per_route]\nby = ['ip', 'route']\nrate = '1/min'\nburst = 1\n\
               [[routes]]\nname = 'a'\npath = '/a/**'\nlimits = ['shared']\n\
               [[routes]]\nname = 'b'\npath = '/b/**'\nlimits = ['shared']\n\
               [[routes]]\nname = 'c'\npath = '/c/**'\nlimits = ['per_route']\n\
               [[routes]]\nname = 'd'\npath = '/d/**'\nlimits = ['per_route']\n";
    let (gw, _) = setup(cfg).await;
    // One allowance of 2 across routes a and b.
    assert_eq!(statuses(&gw, "/a/1", 1).await, [200]);
    assert_eq!(statuses(&gw, "/b/1", 2).await, [200, 429]);
    assert_eq!(statuses(&gw, "/a/1", 1).await, [429]);
    // Keyed by route: c and d each have their own, and neither shares with `shared`.
    assert_eq!(statuses(&gw, "/c/1", 2).await, [200, 429]);
    assert_eq!(statuses(&gw, "/d/1", 2).await, [200, 429]);
}

#[tokio::test]
async fn weights_cost_several_units() {
    let (gw, _) =
        setup("[[routes]]\npath = '/**'\nweight = 3\nlimits = [{ by = 'ip', rate = '1/min', burst = 7 }]\n").await;
    assert_eq!(statuses(&gw, "/x", 3).await, [200, 200, 429]);
}

#[tokio::test]
async fn budget_is_debited_by_upstream_cost() {
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day' }]\n").await;
    let c = client();
    let r = c.get(url(&gw, "/cost/0.6")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-ratelimit-limit"], "1");
    // The debit happens after the response, off the request path.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(c.get(url(&gw, "/cost/0.6")).send().await.unwrap().status(), 200, "0.4 left: still allowed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = problem(c.get(url(&gw, "/cost/0.6")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
}

#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_is_still_debited() {
    use tokio::io::AsyncWriteExt;
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day' }]\n").await;
    // The upstream does the work (and reports its cost) 300 ms after the
    // request; the client is gone after 100.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow-cost/300/1.5 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = problem(client().get(url(&gw, "/cost/0.1")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
}

/// A client that hangs up leaves its budget route's exchange running (so that
/// it is debited): the request still counts as in flight for its address
/// until the exchange ends, or hanging up in a loop would multiply the
/// upstream's load past `max_requests_per_ip`.
#[tokio::test]
async fn a_hung_up_exchange_still_holds_its_in_flight_place() {
    use tokio::io::AsyncWriteExt;
    let (gw, _) = setup_with(
        "max_requests_per_ip = 1",
        "[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '100.00/day' }]\n",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /slow-cost/1000/0.1 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:too-many-concurrent");
    // Once the upstream has answered, the place is free again.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 200);
}

/// `n` requests at once, each to the slow upstream that reports `cost`
/// after `ms`; returns the statuses, sorted.
async fn concurrent(gw: &rampart::Gateway, n: usize, ms: u64, cost: &str) -> Vec<u16> {
    let c = client();
    let path = format!("/slow-cost/{ms}/{cost}");
    let all = (0..n).map(|_| {
        let (c, u) = (c.clone(), url(gw, &path));
        async move { c.get(u).send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures_util::future::join_all(all).await;
    statuses.sort_unstable();
    statuses
}

#[tokio::test]
async fn a_reserve_bounds_what_concurrent_requests_spend() {
    // Without a reserve, every request that starts while something is left
    // passes: ten at once spend 3.00 of a 1.00 budget.
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day' }]\n").await;
    assert_eq!(concurrent(&gw, 10, 500, "0.3").await, [200; 10]);
    // With one, each holds 0.30 while it runs: three fit, seven are refused.
    let (gw, _) =
        setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day', reserve = '0.30' }]\n").await;
    let statuses = concurrent(&gw, 10, 300, "0.3").await;
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]);
    // The three were settled at their cost (0.90 spent), so not even one more fits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = problem(client().get(url(&gw, "/cost/0.01")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
}

#[tokio::test]
async fn an_unused_reservation_is_refunded_and_an_excess_debited() {
    let cfg = "[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', budget = '1.00/day', reserve = '0.5' }]\n";
    let (gw, _) = setup(cfg).await;
    let c = client();
    let settled = || tokio::time::sleep(Duration::from_millis(100));
    // Responses without a cost give the whole reservation back.
    for _ in 0..5 {
        assert_eq!(c.get(url(&gw, "/free")).send().await.unwrap().status(), 200);
        settled().await;
    }
    // Six at 0.10: each is refunded 0.40. The sixth starts with 0.50 left,
    // just its reservation; then 0.40 is left, less than a reservation.
    for i in 0..6 {
        assert_eq!(c.get(url(&gw, "/cost/0.10")).send().await.unwrap().status(), 200, "request {i}");
        settled().await;
    }
    problem(c.get(url(&gw, "/cost/0.10")).send().await.unwrap(), 429).await;

    // A cost beyond the reservation is debited in full.
    let (gw, _) = setup(cfg).await;
    assert_eq!(c.get(url(&gw, "/cost/0.9")).send().await.unwrap().status(), 200);
    settled().await;
    problem(c.get(url(&gw, "/free")).send().await.unwrap(), 429).await;
}

/// A request the upstream may have acted on but whose answer never came
/// (Rampart's own 504 after the response timeout) keeps its reservation as
/// its cost: otherwise slow paid work would cost nothing.
#[tokio::test]
async fn a_request_whose_cost_is_unknown_keeps_its_reservation() {
    let (gw, _) = setup(
        "[[routes]]\npath = '/**'\ntimeout = '200ms'\nlimits = [{ by = 'ip', budget = '1.00/day', reserve = '0.5' }]\n",
    )
    .await;
    let c = client();
    for _ in 0..2 {
        let v = problem(c.get(url(&gw, "/slow-cost/1000/0.01")).send().await.unwrap(), 504).await;
        assert_eq!(v["type"], "urn:rampart:problem:upstream-timeout");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = problem(c.get(url(&gw, "/free")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
}

#[tokio::test]
async fn reserves_are_validated() {
    for (limit, want) in [
        ("{ by = 'ip', budget = '1.00/day', reserve = '2' }", "larger than the budget"),
        ("{ by = 'ip', budget = '1.00/day', reserve = 'lots' }", "non-negative decimal"),
        ("{ by = 'ip', rate = '5/s', reserve = '1' }", "applies to budgets"),
    ] {
        let err = rampart::app::load_policy_text(&config(
            "http://127.0.0.1:1",
            &format!("[[routes]]\npath = '/**'\nlimits = [{limit}]\n"),
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains(want), "{limit}: {err}");
    }
}

#[tokio::test]
async fn global_budget_exhaustion_is_503() {
    let (gw, _) = setup("[[routes]]\npath = '/**'\nlimits = [{ by = 'global', budget = '0.5/hour' }]\n").await;
    let c = client();
    assert_eq!(c.get(url(&gw, "/cost/1.0")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c.get(url(&gw, "/cost/1.0")).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    problem(r, 503).await;
}

#[tokio::test]
async fn exempt_paths_and_addresses() {
    let limits = "[limits]\nexempt_paths = ['/health/**']\n[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(limits).await;
    assert_eq!(statuses(&gw, "/health/live", 5).await, [200; 5]);
    // Matched as routes match: decoded, without segment parameters.
    assert_eq!(statuses(&gw, "/%68ealth/live", 3).await, [200; 3]);
    assert_eq!(statuses(&gw, "/health;v=1/live", 3).await, [200; 3]);
    assert_eq!(statuses(&gw, "/x", 2).await, [200, 429]);
    let limits = "[limits]\nexempt_cidrs = ['127.0.0.0/8']\n[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(limits).await;
    assert_eq!(statuses(&gw, "/x", 4).await, [200; 4]);
}

#[tokio::test]
async fn limits_key_on_the_resolved_client_ip_not_the_spoofable_header() {
    let cfg = "[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    // Untrusted peer: a new X-Forwarded-For per request does not buy a new allowance.
    let (gw, _) = setup(cfg).await;
    let c = client();
    assert_eq!(c.get(url(&gw, "/x")).header("x-forwarded-for", "1.1.1.1").send().await.unwrap().status(), 200);
    assert_eq!(c.get(url(&gw, "/x")).header("x-forwarded-for", "2.2.2.2").send().await.unwrap().status(), 429);
    // Behind a trusted proxy each client has its own allowance.
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1']", cfg).await;
    assert_eq!(c.get(url(&gw, "/x")).header("x-forwarded-for", "1.1.1.1").send().await.unwrap().status(), 200);
    assert_eq!(c.get(url(&gw, "/x")).header("x-forwarded-for", "2.2.2.2").send().await.unwrap().status(), 200);
    assert_eq!(c.get(url(&gw, "/x")).header("x-forwarded-for", "1.1.1.1").send().await.unwrap().status(), 429);
}

/// The status of a GET of `/x` from `client`, as told by the trusted proxy
/// 127.0.0.1 (the gateway is reached over one address only).
async fn status_from(gw: &rampart::Gateway, client_ip: &str) -> u16 {
    client().get(url(gw, "/x")).header("x-forwarded-for", client_ip).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn ipv6_clients_share_an_ip_limit_across_their_network() {
    let cfg = "[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 2 }]\n";
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1/32']", cfg).await;
    // Rotating through the addresses of one /64 buys no fresh allowance.
    let mut got = Vec::new();
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2:abcd::9"] {
        got.push(status_from(&gw, ip).await);
    }
    assert_eq!(got, [200, 200, 429, 429], "one allowance for the /64");
    assert_eq!(status_from(&gw, "2001:db8:1:3::1").await, 200, "another /64 has its own");
    // IPv4 clients are their address, as before.
    for ip in ["198.51.100.1", "198.51.100.1", "198.51.100.2"] {
        assert_eq!(status_from(&gw, ip).await, 200, "{ip}");
    }
    assert_eq!(status_from(&gw, "198.51.100.1").await, 429);

    // `ipv6_prefix` sets the network: a /48 here, and 128 counts each address.
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1/32']\nipv6_prefix = 48", cfg).await;
    let mut got = Vec::new();
    for ip in ["2001:db8:1:2::1", "2001:db8:1:3::1", "2001:db8:1:4::1", "2001:db8:2::1"] {
        got.push(status_from(&gw, ip).await);
    }
    assert_eq!(got, [200, 200, 429, 200], "one allowance for the /48");
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1/32']\nipv6_prefix = 128", cfg).await;
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"] {
        assert_eq!(status_from(&gw, ip).await, 200, "{ip}");
    }
}

#[tokio::test]
async fn an_automatic_ban_earned_from_one_ipv6_address_covers_its_network() {
    let cfg = "[bans]\nafter_rate_limited = 2\nwindow = '1m'\ndurations = ['1h']\n\
               [[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1/32']", cfg).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(status_from(&gw, "2001:db8:1:2::1").await);
    }
    assert_eq!(got, [200, 429, 429, 429], "the third strike earns a ban");
    // Another address of the /64 is banned with it; another /64 is not.
    let r = client().get(url(&gw, "/x")).header("x-forwarded-for", "2001:db8:1:2:abcd::5").send().await.unwrap();
    let v = problem(r, 403).await;
    assert!(v["detail"].as_str().unwrap().contains("banned"), "{v}");
    assert_eq!(status_from(&gw, "2001:db8:1:3::1").await, 200);
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let list: Vec<serde_json::Value> = client().get(format!("{ops}/bans")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!((list[0]["ip"].as_str(), list[0]["prefix_len"].as_u64()), (Some("2001:db8:1:2::"), Some(64)));
    assert_eq!(list[0]["source"], "auto:rate_limited");
    // Lifting it by any of its addresses lifts the network's ban.
    let r = client().delete(format!("{ops}/bans/2001:db8:1:2::77")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(gw.limits.bans.banned("2001:db8:1:2::1".parse().unwrap()).is_none());

    // A manual ban of an IPv6 address is of that address only.
    let body = r#"{"ip":"2001:db8:9:9::1","ttl":"10m","reason":"this one"}"#;
    assert_eq!(post_ban(&ops, body).await.unwrap().status(), 201);
    assert_eq!(status_from(&gw, "2001:db8:9:9::1").await, 403);
    assert_eq!(status_from(&gw, "2001:db8:9:9::2").await, 200);
}

/// A refusal by a limit shared with everyone is no strike: whoever comes
/// after someone else spent it would be banned for it.
#[tokio::test]
async fn refusals_by_shared_limits_earn_no_ban() {
    let cfg = "[bans]\nafter_rate_limited = 2\nwindow = '1m'\ndurations = ['1h']\n\
               [[routes]]\npath = '/**'\nlimits = [{ by = 'global', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1/32']", cfg).await;
    assert_eq!(status_from(&gw, "203.0.113.1").await, 200, "someone spends the shared limit");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(status_from(&gw, "203.0.113.2").await);
    }
    assert_eq!(got, [429; 5], "refused, never banned");
    assert!(gw.limits.bans.banned("203.0.113.2".parse().unwrap()).is_none());
}

#[tokio::test]
async fn unique_ip_flood_keeps_the_table_bounded() {
    let cfg = "[limits]\nmax_keys = 500\n[[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '100/min' }]\n";
    let (gw, _) = setup_with("trusted_proxies = ['127.0.0.1']", cfg).await;
    let c = client();
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let (c, u) = (c.clone(), url(&gw, "/flood"));
        tasks.push(tokio::spawn(async move {
            for i in 0..500u32 {
                let ip = std::net::Ipv4Addr::from(0x0A00_0000 + t * 1000 + i);
                assert_eq!(c.get(&u).header("x-forwarded-for", ip.to_string()).send().await.unwrap().status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = &gw.limits.limiter.memory;
    assert!(store.len() <= 500, "{} keys held for 4000 unique clients", store.len());
    assert!(store.len() >= 400, "the table is used: {}", store.len());
}

#[tokio::test]
async fn deny_and_allow_lists_reload_without_restart() {
    let (gw, up) = setup("[access]\ndeny = ['127.0.0.0/8']\n").await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 403).await;
    assert_eq!(v["type"], "urn:rampart:problem:forbidden-address");
    gw.reload(rampart::app::load_policy_text(&config(&format!("http://{up}"), "[access]\nallow = ['127.0.0.1/32']\n")))
        .unwrap();
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    gw.reload(rampart::app::load_policy_text(&config(
        &format!("http://{up}"),
        "[access]\nallow = ['10.0.0.0/8', '::1']\n",
    )))
    .unwrap();
    assert_eq!(client().get(url(&gw, "/x")).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn manual_bans_through_the_ops_listener() {
    let (gw, _) = setup("").await;
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let c = client();
    let r = post_ban(&ops, r#"{"ip":"127.0.0.1","ttl":"10m","reason":"test"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    let v = problem(c.get(url(&gw, "/x")).send().await.unwrap(), 403).await;
    assert!(v["detail"].as_str().unwrap().contains("banned"));
    let list: Vec<serde_json::Value> = c.get(format!("{ops}/bans")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["ip"], "127.0.0.1");
    assert_eq!(list[0]["reason"], "test");
    assert_eq!(c.delete(format!("{ops}/bans/127.0.0.1")).send().await.unwrap().status(), 204);
    assert_eq!(c.get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    // A body past 4 KiB is not read (anyone may send one before being refused).
    let r = post_ban(&ops, format!(r#"{{"ip":"127.0.0.9","reason":"{}"}}"#, "x".repeat(8192))).await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Hostile input to the admin endpoint is a clean 400.
    for body in ["", "{", r#"{"ip":"nope"}"#, r#"{"ip":"1.2.3.4","ttl":"forever"}"#, r#"{"ip":"1.2.3.4","extra":1}"#] {
        assert_eq!(post_ban(&ops, body).await.unwrap().status(), 400, "{body}");
    }
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let up = start_upstream().await;
    let text = config(&format!("http://{up}"), "").replace("[metrics]\n", "[metrics]\nadmin_token = 's3cret-token'\n");
    let gw = gateway(&text).await;
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let c = client();
    assert_eq!(c.get(format!("{ops}/bans")).send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("{ops}/bans")).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("{ops}/bans")).bearer_auth("s3cret-token").send().await.unwrap().status(), 200);
    // Metrics and health stay open for scrapers and probes.
    assert_eq!(c.get(format!("{ops}/metrics")).send().await.unwrap().status(), 200);
    // A new token takes effect with the reload: the old one stops working.
    gw.reload(rampart::app::load_policy_text(&text.replace("s3cret-token", "rotated-token"))).unwrap();
    assert_eq!(c.get(format!("{ops}/bans")).bearer_auth("s3cret-token").send().await.unwrap().status(), 401);
    assert_eq!(c.get(format!("{ops}/bans")).bearer_auth("rotated-token").send().await.unwrap().status(), 200);
}

/// The operations listener holds at most `MAX_OPS_CONNECTIONS` connections
/// and closes one that sends no request head within `header_read_timeout`:
/// a flood of idle connections neither holds it forever nor takes the file
/// descriptors the main listener needs.
#[tokio::test]
async fn the_operations_listener_bounds_idle_connections() {
    use rampart::server::MAX_OPS_CONNECTIONS;
    let (gw, _) = setup_with("header_read_timeout = '500ms'", "").await;
    let ops = gw.ops_addr.unwrap();
    // One idle connection is closed after the header timeout.
    let mut idle = tokio::net::TcpStream::connect(ops).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(read.is_ok(), "an idle connection was kept over 5 s");
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the header timeout");
    // A full listener closes new connections at once, and serves again once
    // the idle ones are gone.
    let mut held = Vec::new();
    for _ in 0..MAX_OPS_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(ops).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(ops).await.unwrap();
    extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    let n = tokio::time::timeout(Duration::from_millis(300), extra.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "a connection over the cap was served: {n:?}");
    let back = eventually(Duration::from_secs(5), || async {
        client().get(format!("http://{ops}/healthz")).send().await.is_ok_and(|r| r.status() == 200)
    });
    assert!(back.await, "the listener did not serve again after the idle connections timed out");
    drop(held);
}

/// A client that sends a head announcing a body and then nothing holds its
/// operations connection for `body_read_timeout` at most (500 ms in the test
/// config), so a full listener of such clients still lets `/readyz` through
/// soon after.
#[tokio::test]
async fn the_operations_listener_bounds_stalled_bodies() {
    use rampart::server::MAX_OPS_CONNECTIONS;
    let (gw, _) = setup_with("header_read_timeout = '5s'", "").await;
    let ops = gw.ops_addr.unwrap();
    let head =
        b"POST /bans HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n";
    let mut stalled = Vec::new();
    for _ in 0..MAX_OPS_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(ops).await.unwrap();
        s.write_all(head).await.unwrap();
        stalled.push(s);
    }
    // Each stalled connection is answered (408) and closed within the bound.
    let started = std::time::Instant::now();
    let mut first = stalled.pop().unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), first.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body held its connection over 3 s");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&answer));
    assert!(started.elapsed() < Duration::from_secs(3));
    let back = eventually(Duration::from_secs(3), || async {
        client().get(format!("http://{ops}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    });
    assert!(back.await, "/readyz did not answer while stalled bodies held the listener");
    drop(stalled);
}

/// Without a token, a browser on the gateway's host is a loopback caller
/// too: what its pages send (cross-origin requests, DNS rebinding) is refused,
/// and a ban must come as JSON, which no page can send without a preflight.
#[tokio::test]
async fn without_a_token_web_pages_cannot_use_the_admin_endpoints() {
    let (gw, _) = setup("").await;
    let port = gw.ops_addr.unwrap().port();
    let ops = format!("http://127.0.0.1:{port}");
    let c = client();
    let ban = r#"{"ip":"198.51.100.7","ttl":"1h"}"#;
    // The operations listener's problems carry no request id.
    let ops_problem = |r: reqwest::Response, status: u16| async move {
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        r.json::<serde_json::Value>().await.unwrap()
    };
    let page_like = [
        ("origin", "http://evil.test".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        ("sec-fetch-site", "same-site".to_string()),
        ("host", format!("rebound.evil.test:{port}")),
        ("host", format!("127.0.0.1.evil.test:{port}")),
    ];
    for (name, value) in &page_like {
        let r = c
            .post(format!("{ops}/bans"))
            .header("content-type", "application/json")
            .header(*name, value)
            .body(ban)
            .send()
            .await
            .unwrap();
        let v = ops_problem(r, 403).await;
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains("web page") || detail.contains("Host"), "{detail}");
        let r = c.get(format!("{ops}/top")).header(*name, value).send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
        let r = c.delete(format!("{ops}/bans/198.51.100.7")).header(*name, value).send().await.unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    assert!(gw.limits.bans.list().is_empty());
    // The simple bodies a page may send without a preflight are not a ban.
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = c.post(format!("{ops}/bans")).header("content-type", ct).body(ban).send().await.unwrap();
        ops_problem(r, 415).await;
    }
    ops_problem(c.post(format!("{ops}/bans")).body(ban).send().await.unwrap(), 415).await;
    // Local tools (curl, the CLI) still can, by address or as localhost.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "localhost".into()] {
        let r =
            c.get(format!("{ops}/bans")).header("host", &host).header("sec-fetch-site", "none").send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
    let r = c
        .post(format!("{ops}/bans"))
        .header("content-type", "application/json; charset=utf-8")
        .body(ban)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Metrics stay open to scrapers that name the host.
    let r = c.get(format!("{ops}/metrics")).header("host", format!("gateway-1.internal:{port}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn repeated_429s_earn_an_escalating_ban() {
    let cfg = "[bans]\nafter_rate_limited = 3\nwindow = '1m'\ndurations = ['1m', '1h']\n\
               [[routes]]\npath = '/**'\nlimits = [{ by = 'ip', rate = '1/min', burst = 1 }]\n";
    let (gw, _) = setup(cfg).await;
    let s = statuses(&gw, "/x", 5).await;
    assert_eq!(s[..4], [200, 429, 429, 429]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = problem(client().get(url(&gw, "/x")).send().await.unwrap(), 403).await;
    assert!(v["detail"].as_str().unwrap().contains("banned"));
    let bans = gw.limits.bans.list();
    assert_eq!(bans[0].source, "auto:rate_limited");
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_bans_added_total{source=\"auto\"} 1"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"access\",reason=\"banned\"}"), "{m}");
}

#[tokio::test]
async fn per_ip_concurrency_and_global_shedding() {
    let (gw, _) = setup_with("max_requests_per_ip = 2", "").await;
    let c = client();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let (c, u) = (c.clone(), url(&gw, "/slow/500"));
                async move { c.get(u).send().await.unwrap().status() }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v = problem(c.get(url(&gw, "/x")).send().await.unwrap(), 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:too-many-concurrent");
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(c.get(url(&gw, "/x")).send().await.unwrap().status(), 200, "slots are released");

    let (gw, _) = setup_with("max_in_flight = 4\nshed_anonymous_at = 0.5\nmax_requests_per_ip = 0", "").await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let (c, u) = (c.clone(), url(&gw, "/slow/500"));
                async move { c.get(u).send().await.unwrap().status() }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Two in flight, soft limit 2: anonymous requests are shed, and so is a
    // header that only looks like a credential (see `shedding.rs` for the
    // verified ones that pass).
    let r = c.get(url(&gw, "/x")).send().await.unwrap();
    assert!(r.headers().contains_key("retry-after"));
    let v = problem(r, 503).await;
    assert_eq!(v["type"], "urn:rampart:problem:overloaded");
    assert_eq!(c.get(url(&gw, "/x")).bearer_auth("token").send().await.unwrap().status(), 503);
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn per_ip_connection_cap_and_requests_per_connection() {
    let (gw, _) = setup_with("max_connections_per_ip = 3\nmax_requests_per_connection = 2", "").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut extra = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the fourth connection is closed at once");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Two requests on one keep-alive connection: the second is answered with
    // `Connection: close` and the connection ends.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"));

    // HTTP/1.0 with keep-alive counts the same.
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let keep_alive = b"GET /1 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    s.write_all(&[&keep_alive[..], &keep_alive[..]].concat()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("closed").unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches(" 200 OK").count(), 2, "{text}");

    // An HTTP/2 connection is asked to close (GOAWAY) after as many streams.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let driver = tokio::spawn(conn);
    for i in 0..2 {
        let req = http::Request::get(format!("http://a/{i}")).body(http_body_util::Empty::<bytes::Bytes>::new());
        assert_eq!(send.send_request(req.unwrap()).await.unwrap().status(), 200);
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the HTTP/2 connection was not closed after its streams");
}

/// A raw HTTP/2 client that ignores GOAWAY and the shutdown PING, and goes on
/// opening streams on a connection that has carried its
/// `max_requests_per_connection`: dropped, not kept busy (and open) for ever.
#[tokio::test]
async fn an_http2_client_that_ignores_goaway_is_dropped() {
    let (gw, _) = setup_with("max_requests_per_connection = 2\nheader_read_timeout = '400ms'", "").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // SETTINGS (empty), then an acknowledgement of the server's.
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    tcp.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap();
    let (mut read, mut write) = tcp.into_split();
    // Reads (and ignores) everything until the server closes.
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    // GET / on stream `id`: :method GET, :scheme http, :path / (indexed),
    // :authority a (literal, indexed name); END_STREAM | END_HEADERS.
    let headers = |id: u32| {
        let block = [0x82u8, 0x86, 0x84, 0x01, 0x01, b'a'];
        let mut frame = vec![0, 0, block.len() as u8, 1, 5];
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&block);
        frame
    };
    let started = std::time::Instant::now();
    let mut id = 1u32;
    while !reader.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(8), "the connection was kept though its client ignores GOAWAY");
        if write.write_all(&headers(id)).await.is_err() {
            break;
        }
        id += 2;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = tokio::time::timeout(Duration::from_secs(5), reader).await.expect("closed").unwrap();
    assert!(got > 0, "the server answered before it dropped the connection");
    assert!(id > 5, "more streams than the cap were opened before the drop");
}

#[tokio::test]
async fn slow_post_below_the_minimum_rate_is_cut_off() {
    let (gw, _) = setup_with("min_body_rate = 1000\nbody_rate_grace = '300ms'", "").await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Trickle one byte every 50 ms (20 B/s) until the gateway answers.
    loop {
        if started.elapsed() > Duration::from_secs(5) {
            panic!("slow POST was not cut off");
        }
        if s.write_all(b"a").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // Meanwhile a normal client is served.
    assert_eq!(client().get(url(&gw, "/ok")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn invalid_limit_config_is_refused_with_lines() {
    let err = rampart::app::load_policy_text(&config(
        "http://127.0.0.1:1",
        "[[routes]]\npath = '/**'\nlimits = ['nope', { by = 'planet', rate = '1/s' }, { by = 'ip', rate = '1/fortnight' }]\nweight = 0\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("no limit named `nope`"), "{err}");
    assert!(err.contains("`planet` is not a key"), "{err}");
    assert!(err.contains("not a period"), "{err}");
    assert!(err.contains("routes[0].weight"), "{err}");
}

#[tokio::test]
async fn slowloris_is_cut_off_while_a_normal_client_is_served() {
    let (gw, _) = setup_with("header_read_timeout = '600ms'", "").await;
    let addr = gw.addr;
    // The slow client: a request line, then one header line every 100 ms, never
    // the blank line that ends the headers. Returns how long it was kept.
    let slow = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        for i in 0..100 {
            if s.write_all(format!("X-Drip-{i}: y\r\n").as_bytes()).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(_)) | Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
        started.elapsed()
    });
    // Meanwhile a normal client is served, request after request.
    let c = client();
    let mut served = 0;
    while !slow.is_finished() {
        assert_eq!(c.get(url(&gw, "/ok")).send().await.unwrap().status(), 200);
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kept = slow.await.unwrap();
    assert!(kept < Duration::from_secs(5), "the slow client was never cut off ({kept:?})");
    assert!(served >= 3, "the normal client was served while the slow one trickled ({served} requests)");
}
