//! Several gateway instances sharing one real Redis: one combined limit, bans
//! that propagate, and the documented behaviour when Redis dies and returns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::common::*;

fn redis_section(url: &str, prefix: &str) -> String {
    format!("[redis]\nurl = '{url}'\ntimeout = '100ms'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n")
}

fn unique_prefix() -> String {
    format!("t{}:", uuid::Uuid::now_v7().simple())
}

async fn pair(extra: &str) -> (rampart::Gateway, rampart::Gateway) {
    let up = start_upstream().await;
    let text = config(&format!("http://{up}"), extra);
    let a = gateway(&text).await;
    let b = gateway(&text).await;
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || async { gw.limits.limiter.redis.as_ref().unwrap().is_available() })
                .await
        );
    }
    (a, b)
}

/// One gateway on a Redis of its own (which its test may kill), connected.
struct Alone {
    redis: OwnRedis,
    prefix: String,
    /// The gateway's config, for more instances like it.
    text: String,
    gateway: rampart::Gateway,
    store: rampart::limit::redis::RedisStore,
}

impl Alone {
    async fn start() -> Self {
        let redis = OwnRedis::start(free_port()).await;
        let prefix = unique_prefix();
        let text = config(&format!("http://{}", start_upstream().await), &redis_section(&redis.url(), &prefix));
        let gateway = gateway(&text).await;
        let store = gateway.limits.limiter.redis.clone().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);
        Self { redis, prefix, text, gateway, store }
    }
}

async fn status(gw: &rampart::Gateway, path: &str) -> u16 {
    client().get(url(gw, path)).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn two_instances_enforce_one_combined_limit() {
    let Some(redis) = redis_url() else { return };
    let extra = format!(
        "{}[[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '4/min' }}]\n",
        redis_section(&redis, &unique_prefix())
    );
    let (a, b) = pair(&extra).await;
    let mut got = Vec::new();
    for i in 0..6 {
        got.push(status(if i % 2 == 0 { &a } else { &b }, "/x").await);
    }
    assert_eq!(got, [200, 200, 200, 200, 429, 429], "4 in total across both instances");
}

#[tokio::test]
async fn bans_propagate_between_instances() {
    let Some(redis) = redis_url() else { return };
    let (a, b) = pair(&redis_section(&redis, &unique_prefix())).await;
    assert_eq!(status(&b, "/x").await, 200);
    let ops_a = format!("http://{}", a.ops_addr.unwrap());
    let r = post_ban(&ops_a, r#"{"ip":"127.0.0.1","ttl":"5m","reason":"shared"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        eventually(Duration::from_secs(3), || async { status(&b, "/x").await == 403 }).await,
        "ban did not reach instance b"
    );
    // A third instance started later loads the ban from Redis.
    let c = gateway(&config(
        &format!("http://{}", start_upstream().await),
        &redis_section(&redis, a.limits.limiter.redis.as_ref().unwrap().key_prefix()),
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(3), || async { status(&c, "/x").await == 403 }).await,
        "late instance did not load the ban"
    );
    // Lifting it on b lifts it everywhere.
    let ops_b = format!("http://{}", b.ops_addr.unwrap());
    assert_eq!(client().delete(format!("{ops_b}/bans/127.0.0.1")).send().await.unwrap().status(), 204);
    for gw in [&a, &b, &c] {
        assert!(eventually(Duration::from_secs(3), || async { status(gw, "/x").await == 200 }).await);
    }
}

/// An automatic ban of an IPv6 client covers its /64 on every instance, and
/// on one started later; lifting it by any of its addresses lifts it everywhere.
#[tokio::test]
async fn an_ipv6_network_ban_is_shared_through_redis() {
    let Some(redis) = redis_url() else { return };
    let prefix = unique_prefix();
    let extra = format!(
        "{}[bans]\nafter_rate_limited = 1\ndurations = ['1h']\n\
         [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '1/min', burst = 1 }}]\n",
        redis_section(&redis, &prefix)
    );
    let text = config_with(&format!("http://{}", start_upstream().await), "trusted_proxies = ['127.0.0.1/32']", &extra);
    let (a, b) = (gateway(&text).await, gateway(&text).await);
    for gw in [&a, &b] {
        let store = gw.limits.limiter.redis.clone().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);
    }
    let from = |gw: &rampart::Gateway, ip: &str| client().get(url(gw, "/x")).header("x-forwarded-for", ip).send();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(from(&a, "2001:db8:1:2::1").await.unwrap().status().as_u16());
    }
    assert_eq!(got, [200, 429, 429], "the second strike earns a ban");
    assert!(
        eventually(Duration::from_secs(3), || async {
            from(&b, "2001:db8:1:2:ffff::9").await.unwrap().status() == 403
        })
        .await,
        "the /64's ban did not reach instance b"
    );
    assert_eq!(from(&b, "2001:db8:1:3::1").await.unwrap().status(), 200, "another /64");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}ban:*"))
        .query_async(
            &mut redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(keys, [format!("{prefix}ban:2001:db8:1:2::/64")]);
    let c = gateway(&text).await;
    assert!(
        eventually(Duration::from_secs(3), || async { from(&c, "2001:db8:1:2::5").await.unwrap().status() == 403 })
            .await,
        "a later instance did not load the /64's ban"
    );
    let ops_b = format!("http://{}", b.ops_addr.unwrap());
    assert_eq!(client().delete(format!("{ops_b}/bans/2001:db8:1:2::42")).send().await.unwrap().status(), 204);
    for gw in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(3), || async {
                gw.limits.bans.banned("2001:db8:1:2::1".parse().unwrap()).is_none()
            })
            .await,
            "the lift did not reach every instance"
        );
    }
}

#[tokio::test]
async fn redis_dying_falls_back_locally_and_recovers() {
    let mut redis = OwnRedis::start(free_port()).await;
    let port = redis.port;
    let extra = format!(
        "{}[[routes]]\nname = 'local'\npath = '/local/**'\nlimits = [{{ by = 'ip', rate = '1/min', burst = 3 }}]\n\
         [[routes]]\nname = 'strict'\npath = '/strict/**'\nlimits = [{{ by = 'ip', rate = '100/min', on_redis_down = 'refuse' }}]\n",
        redis_section(&redis.url(), "rampart:")
    );
    let (a, b) = pair(&extra).await;
    // Distributed: 3 in total.
    let got: Vec<u16> = vec![
        status(&a, "/local/1").await,
        status(&b, "/local/1").await,
        status(&a, "/local/1").await,
        status(&b, "/local/1").await,
    ];
    assert_eq!(got, [200, 200, 200, 429]);

    redis.kill();
    // No request fails because Redis died: `local` limits decide in process
    // (a fresh allowance of 3 per instance), `refuse` limits answer 503.
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(status(&a, "/local/1").await);
    }
    assert_eq!(seen, [200, 200, 200, 429], "local fallback enforces the limit per instance");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead Redis must not slow requests down: {:?}",
        started.elapsed()
    );
    let r = client().get(url(&a, "/strict/1")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ops = format!("http://{}", a.ops_addr.unwrap());
    let ready: serde_json::Value = client().get(format!("{ops}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["degraded"][0], "redis");
    let m = client().get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_redis_up 0"), "{m}");
    assert!(m.contains("rampart_limit_fallbacks_total"), "{m}");

    // Redis returns (empty, as after a crash): both instances use it again.
    let _redis = OwnRedis::start(port).await;
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || async { gw.limits.limiter.redis.as_ref().unwrap().is_available() })
                .await,
            "breaker did not close after Redis came back"
        );
    }
    let got: Vec<u16> = vec![
        status(&a, "/local/2").await,
        status(&b, "/local/2").await,
        status(&a, "/local/2").await,
        status(&b, "/local/2").await,
    ];
    assert_eq!(got, [200, 200, 200, 429], "one combined limit again");
    assert_eq!(status(&a, "/strict/1").await, 200);
    let ready: serde_json::Value = client().get(format!("{ops}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
}

/// A ban made while Redis is down applies at once on the instance that made
/// it, survives that instance's re-read of the list when Redis returns (it is
/// not taken for a ban lifted elsewhere), and is written to Redis then, so the
/// other instances get it too.
#[tokio::test]
async fn a_ban_made_while_redis_is_down_is_kept_and_shared_when_it_returns() {
    let Alone { mut redis, prefix, text, gateway: a, store } = Alone::start().await;
    let port = redis.port;

    redis.kill();
    assert!(eventually(Duration::from_secs(5), || async { !store.is_available() }).await, "the outage is noticed");
    let ops = format!("http://{}", a.ops_addr.unwrap());
    let r = post_ban(&ops, r#"{"ip":"127.0.0.1","ttl":"5m","reason":"made while redis was down"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(status(&a, "/x").await, 403, "applied at once where it was made");

    // Redis returns empty: the instance re-reads the list and writes its ban.
    let redis = OwnRedis::start(port).await;
    let key = format!("{prefix}ban:127.0.0.1");
    let written =
        eventually(Duration::from_secs(10), || async { redis.query::<u64>(redis::cmd("EXISTS").arg(&key)).await == 1 });
    assert!(written.await, "the ban was written to Redis once it was back");
    assert!(store.is_available());
    assert_eq!(status(&a, "/x").await, 403, "the re-read kept the ban");
    let ttl: i64 = redis.query(redis::cmd("PTTL").arg(&key)).await;
    assert!(ttl > 4 * 60_000 && ttl <= 5 * 60_000, "expiring with the ban: {ttl} ms");
    // Another instance gets it from Redis.
    let b = gateway(&text).await;
    assert!(
        eventually(Duration::from_secs(5), || async { status(&b, "/x").await == 403 }).await,
        "the other instance did not get the ban"
    );
}

/// A ban lifted while Redis is unreachable stays lifted when Redis returns
/// still holding it (a partition, not a crash): the instance deletes it there
/// before re-reading the list, so it comes back nowhere. A different ban that
/// Redis holds by then on the address was made after the lift, and stays.
#[tokio::test]
async fn a_ban_lifted_while_redis_is_down_is_lifted_everywhere_when_it_returns() {
    let Alone { mut redis, prefix, text, gateway: a, store } = Alone::start().await;
    let port = redis.port;
    let ops = format!("http://{}", a.ops_addr.unwrap());
    let key = format!("{prefix}ban:127.0.0.1");
    let ban = |reason: &'static str| {
        let ops = ops.clone();
        async move {
            let body = format!(r#"{{"ip":"127.0.0.1","ttl":"5m","reason":"{reason}"}}"#);
            assert_eq!(post_ban(&ops, body).await.unwrap().status(), 201);
        }
    };

    // Redis returns holding the lifted ban as it was; or a newer one, made
    // elsewhere after the lift; or the lifted one while this instance has
    // banned the address again meanwhile.
    for case in ["as it was", "newer", "banned again here"] {
        let newer = case == "newer";
        ban("shared before the outage").await;
        let held: String = redis.query(redis::cmd("GET").arg(&key)).await;
        redis.kill();
        assert!(eventually(Duration::from_secs(5), || async { !store.is_available() }).await);
        assert_eq!(client().delete(format!("{ops}/bans/127.0.0.1")).send().await.unwrap().status(), 204);
        assert_eq!(status(&a, "/x").await, 200, "lifted at once here");
        if case == "banned again here" {
            ban("banned again while redis was down").await;
        }

        redis = OwnRedis::start_closed(port, "not-yet").await;
        let value = if newer { held.replace("shared before the outage", "made after the lift") } else { held };
        let _: () = redis.query(redis::cmd("SET").arg(&key).arg(&value).arg("PX").arg(300_000)).await;
        // What the instances are told from now on.
        let mut told = redis::Client::open(redis.url().as_str()).unwrap().get_async_pubsub().await.unwrap();
        told.subscribe(format!("{prefix}bans")).await.unwrap();
        redis.open().await;
        assert!(eventually(Duration::from_secs(10), || async { store.is_available() }).await);
        if case == "banned again here" {
            // The new ban reaches Redis and every instance; the lift it
            // superseded is never announced (other instances would drop
            // the address's ban until the new one reached them).
            let written = eventually(Duration::from_secs(10), || async {
                let v: Option<String> = redis.query(redis::cmd("GET").arg(&key)).await;
                v.is_some_and(|v| v.contains("banned again while redis was down"))
            });
            assert!(written.await, "the new ban never reached Redis");
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(status(&a, "/x").await, 403, "the new ban was lifted with the old one");
            let mut messages = Vec::new();
            {
                use futures_util::StreamExt;
                let mut stream = told.on_message();
                while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
                    messages.push(m.get_payload::<String>().unwrap());
                }
            }
            assert!(messages.iter().any(|m| m.contains("\"add\"")), "{messages:?}");
            assert!(
                !messages.iter().any(|m| m.contains("\"remove\"")),
                "a superseded lift was announced: {messages:?}"
            );
        } else if newer {
            assert!(
                eventually(Duration::from_secs(10), || async { status(&a, "/x").await == 403 }).await,
                "the newer ban in Redis was not applied"
            );
            let kept: Option<String> = redis.query(redis::cmd("GET").arg(&key)).await;
            assert_eq!(kept.as_deref(), Some(value.as_str()), "the newer ban was deleted");
        } else {
            let gone = eventually(Duration::from_secs(10), || async {
                redis.query::<u64>(redis::cmd("EXISTS").arg(&key)).await == 0
            });
            assert!(gone.await, "the lift never reached Redis");
            // The re-reads that follow do not bring it back, here or elsewhere.
            let b = gateway(&text).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!((status(&a, "/x").await, status(&b, "/x").await), (200, 200));
        }
    }
}

#[tokio::test]
async fn budgets_are_debited_in_redis_by_the_upstream_cost() {
    let Some(redis) = redis_url() else { return };
    let prefix = unique_prefix();
    // A generous timeout: this test is about the debit, not the breaker.
    let extra = format!(
        "[redis]\nurl = '{redis}'\ntimeout = '2s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n\
         [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', budget = '1.00/day' }}]\n"
    );
    let (a, b) = pair(&extra).await;
    let key = format!("{prefix}rl:{{ip:127.0.0.1}}:routes[0]#0");
    let mut conn = ::redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(status(&a, "/cost/0.6").await, 200);
    // The debit is written after the response, to Redis: the other instance,
    // whose in-process store never saw the request, sees what is left.
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move { ::redis::cmd("EXISTS").arg(&key).query_async::<u64>(&mut conn).await.unwrap() == 1 }
        })
        .await,
        "no budget key in Redis"
    );
    let r = client().get(url(&b, "/x")).send().await.unwrap();
    assert_eq!(r.status(), 200, "0.4 of 1.00 left");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0", "whole units: 0.4 shows as 0");
    assert_eq!(status(&b, "/cost/0.6").await, 200, "allowed while anything is left; the debit may overdraw");
    assert!(
        eventually(Duration::from_secs(5), || async { status(&a, "/x").await == 429 }).await,
        "the budget spent on b is not exhausted on a"
    );
    let r = client().get(url(&b, "/x")).send().await.unwrap();
    let v = problem(r, 429).await;
    assert_eq!(v["type"], "urn:rampart:problem:budget-exhausted");
    let ttl: i64 = ::redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0, "the budget key expires when it would mean nothing: {ttl}");
}

#[tokio::test]
async fn reservations_in_redis_bound_concurrent_spending_across_instances() {
    let Some(redis) = redis_url() else { return };
    let prefix = unique_prefix();
    let extra = format!(
        "[redis]\nurl = '{redis}'\ntimeout = '2s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n\
         [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', budget = '1.00/day', reserve = '0.25' }}]\n"
    );
    let (a, b) = pair(&extra).await;
    // Eight at once, four on each instance, each costing 0.25 after 400 ms:
    // the reservations in Redis let exactly four through.
    let all = (0..8).map(|i| {
        let u = url(if i % 2 == 0 { &a } else { &b }, "/slow-cost/400/0.25");
        async move { client().get(u).send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures_util::future::join_all(all).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);
    // Settled at their cost, the budget is spent; a request that costs nothing
    // has its reservation refunded in Redis, so the key goes when it is idle.
    assert!(eventually(Duration::from_secs(5), || async { status(&a, "/x").await == 429 }).await);
    let key = format!("{prefix}rl:{{ip:127.0.0.1}}:routes[0]#0");
    let mut conn = ::redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(status(&b, "/x").await, 200);
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move { ::redis::cmd("EXISTS").arg(&key).query_async::<u64>(&mut conn).await.unwrap() == 0 }
        })
        .await,
        "the refunded reservation left the key behind"
    );
}

/// `[redis] sentinels`: the gateway asks the sentinel for the primary (the
/// URL's host is not used) and decides its limits there. Failover itself is
/// tested on the store (`redis_limits::sentinel_names_the_primary_…`).
#[tokio::test]
async fn a_gateway_finds_its_redis_through_a_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let (primary_port, sentinel_port) = (free_port(), free_port());
    let primary = OwnRedis::start(primary_port).await;
    // The sentinel wants a password; the primary does not.
    let _sentinel = OwnRedis::start_sentinel(
        sentinel_port,
        dir.path(),
        "gw-test",
        primary_port,
        Some("sentinel-pw"),
        SentinelTls::No,
    )
    .await;
    let prefix = unique_prefix();
    let extra = format!(
        "[redis]\nurl = 'redis://unused.invalid/'\nsentinels = ['127.0.0.1:{sentinel_port}']\n\
         sentinel_master = 'gw-test'\nsentinel_password = 'sentinel-pw'\ntimeout = '1s'\nprobe_interval = '100ms'\nkey_prefix = '{prefix}'\n\
         [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '2/min', on_redis_down = 'refuse' }}]\n"
    );
    let gw = gateway(&config(&format!("http://{}", start_upstream().await), &extra)).await;
    assert!(
        eventually(Duration::from_secs(5), || async { gw.limits.limiter.redis.as_ref().unwrap().is_available() }).await,
        "connected through the sentinel"
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(status(&gw, "/x").await);
    }
    assert_eq!(got, [200, 200, 429]);
    let mut conn = redis::Client::open(primary.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty(), "the limit's key is on the primary the sentinel named");
}

/// `[redis] cluster_nodes`: two gateways told of different nodes of a
/// 3-primary Redis Cluster share one limit; a ban made on one reaches the
/// other (pub/sub through the cluster), and a third started later loads it
/// (listed on the primary of Rampart's slot). Every key is in that one slot.
/// Failover is tested on the store (`redis_limits::a_cluster_keeps_…`).
#[tokio::test]
async fn gateways_share_limits_and_bans_through_a_redis_cluster() {
    let prefix = unique_prefix();
    let tagged = format!("{{{prefix}}}");
    let slot = rampart::limit::redis::key_slot(tagged.as_bytes());
    let cluster = OwnCluster::start(3, slot).await;
    let nodes = cluster.nodes();
    let up = format!("http://{}", start_upstream().await);
    let text = |seeds: &[String]| {
        let seeds: Vec<String> = seeds.iter().map(|n| format!("'{n}'")).collect();
        config(
            &up,
            &format!(
                "[redis]\nurl = 'redis://unused.invalid/'\ncluster_nodes = [{}]\ntimeout = '1s'\n\
                 probe_interval = '100ms'\nkey_prefix = '{prefix}'\n\
                 [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', rate = '2/min', on_redis_down = 'refuse' }}]\n",
                seeds.join(", ")
            ),
        )
    };
    let a = gateway(&text(&nodes[..1])).await;
    let b = gateway(&text(&nodes[1..])).await;
    for gw in [&a, &b] {
        let redis = gw.limits.limiter.redis.as_ref().unwrap();
        assert!(eventually(Duration::from_secs(5), || async { redis.is_available() }).await, "connected");
        assert_eq!(redis.key_prefix(), tagged);
    }
    let mut got = Vec::new();
    for gw in [&a, &b, &a] {
        got.push(status(gw, "/x").await);
    }
    assert_eq!(got, [200, 200, 429], "2 per minute across both gateways");

    let ops_a = format!("http://{}", a.ops_addr.unwrap());
    let r = post_ban(&ops_a, r#"{"ip":"127.0.0.1","ttl":"5m"}"#).await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        eventually(Duration::from_secs(3), || async { status(&b, "/x").await == 403 }).await,
        "the ban reached gateway b"
    );
    let c = gateway(&text(&nodes[2..])).await;
    assert!(
        eventually(Duration::from_secs(3), || async { status(&c, "/x").await == 403 }).await,
        "a gateway started later loaded the ban"
    );

    let home = &cluster.masters[cluster.home];
    let in_slot: u64 = home.query(redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot)).await;
    let total: u64 = home.query(&redis::cmd("DBSIZE")).await;
    assert!(in_slot >= 2 && in_slot == total, "the limit's key and the ban in the slot: {in_slot} of {total}");
    for m in cluster.masters.iter().filter(|m| m.port != home.port) {
        assert_eq!(m.query::<u64>(&redis::cmd("DBSIZE")).await, 0, "nothing on {}", m.port);
    }
}

/// A request that goes away while Redis decides (here an HTTP/2 stream reset
/// while Redis is paused) gives back the budget it reserved there: otherwise
/// anyone could drain a shared budget with requests that never reach the
/// upstream.
#[tokio::test]
async fn a_request_abandoned_while_redis_decides_gives_its_reservation_back() {
    let redis = OwnRedis::start(free_port()).await;
    let text = config(
        &format!("http://{}", start_upstream().await),
        &format!(
            "[redis]\nurl = '{}'\ntimeout = '3s'\nprobe_interval = '100ms'\nkey_prefix = '{}'\n\
             [[routes]]\npath = '/**'\nlimits = [{{ by = 'ip', budget = '1.00/day', reserve = '0.4' }}]\n",
            redis.url(),
            unique_prefix()
        ),
    );
    let gw = gateway(&text).await;
    let store = gw.limits.limiter.redis.clone().unwrap();
    assert!(eventually(Duration::from_secs(5), || async { store.is_available() }).await);

    // One request first, so the script is loaded (else the abandoned
    // request's first call would only find it missing).
    assert_eq!(status(&gw, "/free").await, 200);
    let mut conn = ::redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("CLIENT").arg("PAUSE").arg(600).arg("ALL").query_async(&mut conn).await.unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, h2) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(h2);
    let req = http::Request::get(format!("http://{}/free", gw.addr))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let abandoned = tokio::time::timeout(Duration::from_millis(200), send.send_request(req)).await;
    assert!(abandoned.is_err(), "answered while Redis was paused");
    // The pause ends, the script reserves, and the reservation is given back.
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // 1.00 left: two requests holding 0.40 each at once both fit (with 0.60
    // left, the second would be refused).
    let both = (0..2).map(|_| async { client().get(url(&gw, "/slow-cost/300/0")).send().await.unwrap().status() });
    let statuses = futures_util::future::join_all(both).await;
    assert_eq!(statuses, [200, 200]);
}

/// A request decided in process while Redis was unreachable is settled in
/// process, even when Redis is back by the time its response comes: before,
/// its settlement went to Redis, which charged (or refunded) a budget there
/// that never lent the reservation, and the reservation stayed held here.
#[tokio::test]
async fn a_request_is_settled_in_the_store_that_decided_it() {
    let port = free_port();
    let prefix = unique_prefix();
    let text = config(
        &format!("http://{}", start_upstream().await),
        &format!(
            "[redis]\nurl = 'redis://127.0.0.1:{port}/'\ntimeout = '200ms'\nprobe_interval = '100ms'\n\
             key_prefix = '{prefix}'\n\
             [[routes]]\npath = '/**'\n\
             limits = [{{ by = 'ip', budget = '100/day', reserve = '40', on_redis_down = 'local' }}]\n"
        ),
    );
    let gw = gateway(&text).await;
    let store = gw.limits.limiter.redis.clone().unwrap();
    assert!(!store.is_available());
    // Decided in process (nothing listens on the port yet), with 40 reserved
    // there; it costs 90.
    let slow = tokio::spawn(client().get(url(&gw, "/slow-cost/3000/90")).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let redis = OwnRedis::start(port).await;
    assert!(eventually(Duration::from_secs(2), || async { store.is_available() }).await, "connected");
    assert!(!slow.is_finished(), "the slow request ended before Redis was back; the test proves nothing");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let key = format!("{prefix}rl:{{ip:127.0.0.1}}:routes[0]#0");
    let mut conn = ::redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let exists: bool = ::redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(!exists, "the in-process request was settled in Redis");
    // In process, its whole cost is spent: 10 left of 100 (and what a few
    // seconds refill).
    let check = rampart::limit::LimitCheck {
        key: "rl:{ip:127.0.0.1}:routes[0]#0".into(),
        params: *gw.policy().routes[0].limits[0].params_for(None),
        weight: 0,
        op: rampart::limit::Op::Peek,
    };
    let local = gw.limits.limiter.memory.apply(rampart::limit::now_ns(), std::slice::from_ref(&check));
    let scale = rampart_core::config::limits::BUDGET_SCALE;
    assert!((10 * scale..11 * scale).contains(&local[0].remaining), "{local:?}");
    // Redis, which decides now, lent nothing yet: its budget is whole.
    let r = client().get(url(&gw, "/slow-cost/0/0")).send().await.unwrap();
    assert_eq!(r.headers()["x-ratelimit-remaining"], "60", "100 less the 40 this request holds");
}
