//! The Redis limit store against a real Redis: exact GCRA boundaries, limits
//! shared by two instances, all-or-nothing batches, budgets, script reloading,
//! key expiry, and the circuit breaker while a Redis server is killed, hung and
//! restarted.
//!
//! `RAMPART_TEST_REDIS_URL` names the shared server (`scripts/test` starts one);
//! without it these tests print why and pass. Each test uses its own keys, so
//! they run in parallel against one server. The breaker tests start their own
//! `redis-server` (`RAMPART_TEST_REDIS_SERVER`, default `redis-server` on the
//! PATH) on a free port, since they kill it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{eventually, free_port, redis_url, OwnCluster, OwnRedis, SentinelTls};
use rampart::limit::redis::{key_slot, RedisSentinel, RedisSettings, RedisStore, RedisUnavailable};
use rampart::limit::{Decision, GcraParams, LimitCheck, Op};

const PREFIX: &str = "rampart-test:";
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Generous timeouts for the tests that are not about timeouts: both cores may
/// be busy compiling or running other tests.
fn settings(url: &str) -> RedisSettings {
    RedisSettings {
        timeout: Duration::from_secs(2),
        probe_interval: Duration::from_millis(100),
        key_prefix: PREFIX.to_owned(),
        ..RedisSettings::new(url)
    }
}

async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn available_store(settings: RedisSettings) -> RedisStore {
    let store = RedisStore::new(settings).unwrap();
    wait_until("store available", Duration::from_secs(5), || store.is_available()).await;
    store
}

/// A key of its own for each test (and run), with a hash tag like real keys.
fn unique_key(name: &str) -> String {
    format!("{name}:{{t:{}}}", uuid::Uuid::now_v7().simple())
}

fn check(key: &str, params: GcraParams, weight: u64, op: Op) -> LimitCheck {
    LimitCheck { key: key.to_owned(), params, weight, op }
}

fn rate(count: u64, period: Duration, burst: u64) -> GcraParams {
    GcraParams::new(count, period, burst).unwrap()
}

async fn one(store: &RedisStore, c: LimitCheck) -> Decision {
    let mut decisions = store.apply(&[c]).await.unwrap();
    assert_eq!(decisions.len(), 1);
    decisions.remove(0)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

async fn exists(url: &str, key: &str) -> bool {
    redis::cmd("EXISTS").arg(format!("{PREFIX}{key}")).query_async::<u64>(&mut raw(url).await).await.unwrap() == 1
}

#[tokio::test]
async fn burst_passes_at_once_then_refused_until_refilled() {
    let Some(url) = redis_url() else { return };
    let store = available_store(settings(&url)).await;

    // 5 per 10 s in bursts of 5: one unit every 2 s, tolerance 10 s. Slow
    // enough that the seconds this test may take change no count.
    let slow = rate(5, Duration::from_secs(10), 5);
    let key = unique_key("burst");
    for left in (0..5).rev() {
        let d = one(&store, check(&key, slow, 1, Op::Check)).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!((d.limit, d.remaining, d.retry_after_ns), (5, left, 0), "{d:?}");
        let used = 5 - left;
        assert!(d.reset_after_ns <= used * 2 * SEC && d.reset_after_ns > used * 2 * SEC - SEC, "{d:?}");
    }
    let d = one(&store, check(&key, slow, 1, Op::Check)).await;
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.remaining, 0);
    assert!(d.retry_after_ns > 0 && d.retry_after_ns <= 2 * SEC, "{d:?}");
    assert!(d.reset_after_ns > 9 * SEC && d.reset_after_ns <= 10 * SEC, "{d:?}");
    // A weight over the burst can never pass, and says how far off it is.
    let d = one(&store, check(&unique_key("huge"), slow, 6, Op::Check)).await;
    assert!(!d.allowed && d.remaining == 5 && d.retry_after_ns == 2 * SEC, "{d:?}");

    // 4 per second in bursts of 2: one unit every 250 ms, tolerance 500 ms.
    let fast = rate(4, Duration::from_secs(1), 2);
    let key = unique_key("refill");
    assert!(one(&store, check(&key, fast, 1, Op::Check)).await.allowed);
    assert!(one(&store, check(&key, fast, 1, Op::Check)).await.allowed);
    let refused = one(&store, check(&key, fast, 1, Op::Check)).await;
    assert!(!refused.allowed, "{refused:?}");
    assert!(refused.retry_after_ns > 0 && refused.retry_after_ns <= 250 * MS, "{refused:?}");
    // Waiting the advertised time (plus a little for the round trip) is enough
    // for exactly one more.
    tokio::time::sleep(Duration::from_nanos(refused.retry_after_ns) + Duration::from_millis(10)).await;
    let d = one(&store, check(&key, fast, 1, Op::Check)).await;
    assert!(d.allowed, "{d:?}");
    assert!(!one(&store, check(&key, fast, 1, Op::Check)).await.allowed);
}

#[tokio::test]
async fn a_unix_socket_url_works() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let _server = OwnRedis::start_unix(&socket).await;
    let store = available_store(settings(&format!("redis+unix://{}", socket.display()))).await;
    let slow = rate(2, Duration::from_secs(10), 2);
    let key = unique_key("unix");
    let mut allowed = Vec::new();
    for _ in 0..3 {
        allowed.push(one(&store, check(&key, slow, 1, Op::Check)).await.allowed);
    }
    assert_eq!(allowed, [true, true, false], "2 per 10 s, decided over the socket");
}

/// `ROLE`'s first word from the server on `port`.
async fn role(port: u16) -> String {
    let url = format!("redis://127.0.0.1:{port}/");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut raw(&url).await).await.unwrap();
    redis::from_redis_value(&role[0]).unwrap()
}

#[tokio::test]
async fn sentinel_names_the_primary_and_a_failover_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, ps) = (free_port(), free_port(), free_port());
    let first = OwnRedis::start(p1).await;
    let second = OwnRedis::start_replica(p2, p1).await;
    let sentinel = OwnRedis::start_sentinel(ps, dir.path(), "rampart-test", p1, None, SentinelTls::No).await;
    let sentinel_url = sentinel.url();
    let sentinel_settings = RedisSentinel {
        sentinels: vec![("127.0.0.1".to_owned(), ps)],
        master: "rampart-test".to_owned(),
        password: None,
        tls: false,
    };
    // The URL's host is not used: the sentinel names the primary.
    let store =
        available_store(RedisSettings { sentinel: Some(sentinel_settings), ..settings("redis://unused.invalid/") })
            .await;

    let slow = rate(2, Duration::from_secs(60), 2);
    let key = unique_key("sentinel");
    assert!(one(&store, check(&key, slow, 1, Op::Check)).await.allowed);
    assert!(exists(&first.url(), &key).await, "decided on the first primary");
    // Replication is asynchronous: a write the replica has not received yet
    // is lost in a failover (as with any Sentinel setup). Wait for it.
    let (replica_url, held) = (second.url(), key.clone());
    let replicated = eventually(Duration::from_secs(5), || {
        let (url, key) = (replica_url.clone(), held.clone());
        async move { exists(&url, &key).await }
    });
    assert!(replicated.await, "the replica has the key");

    // A failover: the replica becomes the primary, the old primary its replica.
    let start = Instant::now();
    loop {
        let mut asked = redis::cmd("SENTINEL");
        asked.arg("FAILOVER").arg("rampart-test");
        if asked.query_async::<String>(&mut raw(&sentinel_url).await).await.is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the sentinel would not fail over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Duration::from_secs(15);
    while role(p2).await != "master" {
        assert!(start.elapsed() < deadline, "failover not done within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sentinel turns the old primary into a replica when it next reads
    // its INFO (every 10 s); do it now, as it would.
    let mut follow = redis::cmd("REPLICAOF");
    follow.arg("127.0.0.1").arg(p2);
    follow.query_async::<String>(&mut raw(&first.url()).await).await.unwrap();
    assert_eq!(role(p1).await, "slave");

    // The store follows: the first write to the old primary is refused
    // (READONLY), the breaker opens, and the probe asks the sentinel again.
    // The allowance carried over by replication: one left, then none.
    let mut decisions = Vec::new();
    while decisions.len() < 2 {
        if let Ok(d) = store.apply(&[check(&key, slow, 1, Op::Check)]).await {
            decisions.push(d[0].allowed);
        }
        assert!(start.elapsed() < deadline, "no decision after the failover within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(decisions, [true, false], "2 per minute, across the failover");
    let after = unique_key("after");
    assert!(one(&store, check(&after, slow, 1, Op::Check)).await.allowed);
    assert!(exists(&second.url(), &after).await, "decided on the new primary");
}

/// What a cluster node holds, by its own count: (keys in `slot`, keys in all).
async fn cluster_counts(node: &OwnRedis, slot: u16) -> (u64, u64) {
    let in_slot: u64 = node.query(redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot)).await;
    (in_slot, node.query(&redis::cmd("DBSIZE")).await)
}

#[tokio::test]
async fn key_slots_match_a_cluster_node() {
    let cluster = OwnCluster::start(1, 0).await;
    let node = &cluster.masters[0];
    let mut keys: Vec<Vec<u8>> = [
        "",
        "a",
        "123456789",
        "{}",
        "{a}b",
        "a{}b{c}",
        "{{x}}",
        "x{y",
        "}z{",
        "rampart:ban:10.0.0.1",
        "{rampart:}ban:1",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    keys.extend((0..300u32).map(|i| {
        let id = uuid::Uuid::now_v7();
        let b = id.as_bytes();
        // Random bytes, some with braces around a part.
        let mut k = b[..usize::from(b[15] % 16)].to_vec();
        if i % 3 == 0 {
            k.insert(0, b'{');
            k.push(b'}');
            k.extend_from_slice(&b[8..]);
        }
        k
    }));
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k.as_slice());
    }
    let client = redis::Client::open(node.url().as_str()).unwrap();
    let slots: Vec<u16> =
        pipe.query_async(&mut client.get_multiplexed_async_connection().await.unwrap()).await.unwrap();
    for (k, slot) in keys.iter().zip(slots) {
        assert_eq!(key_slot(k), slot, "{k:?}");
    }
}

/// A 3-primary cluster, with the store told of one primary only: two stores
/// share one allowance, every key lands in the prefix's slot on one primary,
/// and a failover to that primary's replica keeps both the decisions and the
/// state (replicated before the failover); so does a crash of the new
/// primary, once the cluster has promoted its replica.
#[tokio::test]
async fn a_cluster_keeps_every_key_in_one_slot_and_follows_failovers_and_crashes() {
    let prefix = format!("{{{PREFIX}}}");
    let slot = key_slot(prefix.as_bytes());
    let cluster = OwnCluster::start(3, slot).await;
    let home = &cluster.masters[cluster.home];
    let other = cluster.masters.iter().position(|m| m.port != home.port).unwrap();
    let seed = |nodes: Vec<String>| RedisSettings {
        cluster: Some(
            nodes.iter().map(|n| ("127.0.0.1".to_owned(), n.rsplit(':').next().unwrap().parse().unwrap())).collect(),
        ),
        ..settings("redis://ignored.invalid/")
    };
    let a = available_store(seed(vec![cluster.nodes()[other].clone()])).await;
    let b = available_store(seed(cluster.nodes())).await;
    assert_eq!(a.key_prefix(), prefix, "the prefix becomes a hash tag");

    // One allowance across both stores, whatever the keys' own hash tags.
    let keys: Vec<String> = (0..5).map(|i| unique_key(&format!("cluster{i}"))).collect();
    let params = rate(4, Duration::from_secs(60), 4);
    for key in &keys {
        let got: Vec<bool> = [&a, &b, &a, &b, &a]
            .iter()
            .map(|s| async move { one(s, check(key, params, 1, Op::Check)).await.allowed })
            .collect::<futures_util::future::JoinAll<_>>()
            .await;
        assert_eq!(got.iter().filter(|x| **x).count(), 4, "{key}: {got:?}");
    }
    // A batch over several keys is one script call: one slot, or CROSSSLOT.
    let batch: Vec<LimitCheck> =
        (0..4).map(|i| check(&unique_key(&format!("batch{i}")), params, 1, Op::Check)).collect();
    assert!(a.apply(&batch).await.unwrap().iter().all(|d| d.allowed));

    let (in_slot, total) = cluster_counts(home, slot).await;
    assert_eq!((in_slot, total), (9, 9), "every key in the prefix's slot, on its primary");
    for m in cluster.masters.iter().filter(|m| m.port != home.port) {
        assert_eq!(cluster_counts(m, slot).await, (0, 0), "nothing on {}", m.port);
    }
    // Listing (as bans do) reads that primary, whichever node the client picks.
    let mut conn = b.connection().unwrap();
    let (mut listed, _) = conn.scan_keys(&format!("{prefix}cluster*"), 100).await.unwrap();
    listed.sort();
    let mut want: Vec<String> = keys.iter().map(|k| format!("{prefix}{k}")).collect();
    want.sort();
    assert_eq!(listed, want);

    // Fail over once the replica has everything (replication is asynchronous).
    let replica = &cluster.replica;
    assert!(
        eventually(Duration::from_secs(5), || async { replica.query::<u64>(&redis::cmd("DBSIZE")).await == 9 }).await,
        "the replica has the keys"
    );
    let slow = rate(2, Duration::from_secs(60), 2);
    let key = unique_key("failover");
    assert!(one(&a, check(&key, slow, 1, Op::Check)).await.allowed);
    assert!(
        eventually(Duration::from_secs(5), || async { replica.query::<u64>(&redis::cmd("DBSIZE")).await == 10 }).await
    );
    cluster.failover().await;
    let start = Instant::now();
    let deadline = Duration::from_secs(15);
    // Both stores follow (MOVED, then the new layout); the allowance carried
    // over: one left, then none.
    for (name, store) in [("a", &a), ("b", &b)] {
        let mut decisions = Vec::new();
        while decisions.is_empty() {
            if let Ok(d) = store.apply(&[check(&key, slow, 1, Op::Check)]).await {
                decisions.push(d[0].allowed);
            }
            assert!(start.elapsed() < deadline, "{name}: no decision after the failover within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(decisions, [name == "a"], "{name}: 2 per minute, across the failover");
    }
    let after = unique_key("after");
    assert!(one(&b, check(&after, slow, 1, Op::Check)).await.allowed);
    assert_eq!(cluster_counts(replica, slot).await, (11, 11), "decided on the new primary");
    assert!(a.is_available() && b.is_available());

    // A crash: the new primary dies; once the cluster has promoted the old
    // one back (node timeout 2 s, then an election), both stores decide
    // there, with the state it had replicated. Meanwhile calls fail (the
    // breaker's business), never hang past the timeout.
    let old = &cluster.masters[cluster.home];
    assert!(eventually(Duration::from_secs(5), || async { old.query::<u64>(&redis::cmd("DBSIZE")).await == 11 }).await);
    let mut cluster = cluster;
    cluster.replica.kill();
    let crashed = Instant::now();
    let limit = Duration::from_secs(20);
    for (name, store) in [("a", &a), ("b", &b)] {
        loop {
            let call = Instant::now();
            let got = store.apply(&[check(&after, slow, 1, Op::Check)]).await;
            assert!(call.elapsed() < Duration::from_secs(3), "{name}: a call took {:?}", call.elapsed());
            if let Ok(d) = got {
                assert_eq!(d[0].allowed, name == "a", "{name}: the allowance survived the crash");
                break;
            }
            assert!(crashed.elapsed() < limit, "{name}: no decision within {limit:?} of the crash: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("decisions again {:?} after the crash", crashed.elapsed());
    assert_eq!(role(cluster.masters[cluster.home].port).await, "master");
}

#[tokio::test]
async fn two_instances_enforce_one_combined_limit() {
    let Some(url) = redis_url() else { return };
    // Two stores with their own connections and probes: two gateway instances.
    let a = available_store(settings(&url)).await;
    let b = available_store(settings(&url)).await;
    let params = rate(4, Duration::from_secs(60), 4);
    let key = unique_key("shared");
    let mut allowed = 0;
    for i in 0..10 {
        let store = if i % 2 == 0 { &a } else { &b };
        let d = one(store, check(&key, params, 1, Op::Check)).await;
        if d.allowed {
            allowed += 1;
        }
        assert_eq!(d.allowed, i < 4, "request {i}: {d:?}");
    }
    assert_eq!(allowed, 4);
}

#[tokio::test]
async fn a_refused_check_stores_nothing_for_any_key() {
    let Some(url) = redis_url() else { return };
    let store = available_store(settings(&url)).await;
    let strict = rate(1, Duration::from_secs(60), 1);
    let loose = rate(10, Duration::from_secs(60), 10);
    let (a, b, budget) = (unique_key("a"), unique_key("b"), unique_key("budget"));

    assert!(one(&store, check(&a, strict, 1, Op::Check)).await.allowed);
    let batch = [check(&b, loose, 1, Op::Check), check(&budget, loose, 3, Op::Debit), check(&a, strict, 1, Op::Check)];
    let d = store.apply(&batch).await.unwrap();
    assert_eq!(d.len(), 3);
    // Each decision is reported as computed; the request as a whole is refused.
    assert!(d[0].allowed && d[0].remaining == 9, "{:?}", d[0]);
    assert!(d[1].allowed && d[1].remaining == 7, "{:?}", d[1]);
    assert!(!d[2].allowed, "{:?}", d[2]);
    // ... and neither the check nor the debit took effect.
    assert!(!exists(&url, &b).await);
    assert!(!exists(&url, &budget).await);
    assert_eq!(one(&store, check(&b, loose, 1, Op::Peek)).await.remaining, 10);

    // Checks of one key in one call see each other, and roll back together.
    let d = store.apply(&[check(&b, loose, 6, Op::Check), check(&b, loose, 6, Op::Check)]).await.unwrap();
    assert!(d[0].allowed && d[0].remaining == 4 && !d[1].allowed, "{d:?}");
    assert!(!exists(&url, &b).await);
    let d = store.apply(&[check(&b, loose, 6, Op::Check), check(&b, loose, 4, Op::Check)]).await.unwrap();
    assert!(d[0].allowed && d[1].allowed && d[1].remaining == 0, "{d:?}");
    assert!(!one(&store, check(&b, loose, 1, Op::Check)).await.allowed);

    // An exhausted budget refuses the request too: the rate check beside it
    // is not charged.
    let (rate_key, spent) = (unique_key("rate"), unique_key("spent"));
    assert!(one(&store, check(&spent, loose, 11, Op::Debit)).await.allowed);
    let d = store.apply(&[check(&rate_key, loose, 1, Op::Check), check(&spent, loose, 0, Op::Peek)]).await.unwrap();
    assert!(d[0].allowed && !d[1].allowed, "{d:?}");
    assert!(!exists(&url, &rate_key).await);

    // No checks, no round trip, no decisions.
    assert!(store.apply(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn budgets_peek_then_debit_and_may_overdraw() {
    let Some(url) = redis_url() else { return };
    let store = available_store(settings(&url)).await;
    // 100 units per 10 s: a unit refills every 100 ms.
    let budget = rate(100, Duration::from_secs(10), 100);
    let key = unique_key("budget");

    let d = one(&store, check(&key, budget, 1, Op::Peek)).await;
    assert_eq!(d, Decision { allowed: true, limit: 100, remaining: 100, reset_after_ns: 0, retry_after_ns: 0 });
    assert!(!exists(&url, &key).await, "a peek stores nothing");

    let d = one(&store, check(&key, budget, 30, Op::Debit)).await;
    assert!(d.allowed && d.remaining == 70 && d.reset_after_ns == 3 * SEC, "{d:?}");
    // (71 if more than a refill interval passed between the calls.)
    let d = one(&store, check(&key, budget, 1, Op::Peek)).await;
    assert!(d.allowed && (70..=71).contains(&d.remaining) && d.retry_after_ns == 0, "{d:?}");

    // A debit is taken even past the budget; then peeks and checks refuse
    // until the overdraft has refilled.
    let d = one(&store, check(&key, budget, 150, Op::Debit)).await;
    assert!(d.allowed && d.remaining == 0, "{d:?}");
    assert!(d.reset_after_ns > 17 * SEC && d.reset_after_ns <= 18 * SEC, "{d:?}");
    let d = one(&store, check(&key, budget, 1, Op::Peek)).await;
    assert!(!d.allowed && d.remaining == 0, "{d:?}");
    assert!(d.retry_after_ns > 7 * SEC && d.retry_after_ns <= 8 * SEC, "{d:?}");
    assert!(!one(&store, check(&key, budget, 1, Op::Check)).await.allowed);
    // Weight 0 is free even now, and changes nothing.
    let free = one(&store, check(&key, budget, 0, Op::Check)).await;
    assert!(free.allowed && free.retry_after_ns == 0, "{free:?}");
    let after = one(&store, check(&key, budget, 1, Op::Peek)).await;
    assert!(after.reset_after_ns <= free.reset_after_ns, "{free:?} then {after:?}");
}

#[tokio::test]
async fn script_is_reloaded_after_script_flush() {
    let Some(url) = redis_url() else { return };
    let store = available_store(settings(&url)).await;
    let params = rate(10, Duration::from_secs(60), 10);
    let key = unique_key("noscript");
    assert_eq!(one(&store, check(&key, params, 1, Op::Check)).await.remaining, 9);

    let mut conn = raw(&url).await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    // NOSCRIPT, then SCRIPT LOAD and EVALSHA again, within the same call; the
    // limit's state is untouched.
    assert_eq!(one(&store, check(&key, params, 1, Op::Check)).await.remaining, 8);
    assert!(store.is_available(), "NOSCRIPT is not an outage");
}

#[tokio::test]
async fn keys_hold_the_tat_in_epoch_nanoseconds_and_expire() {
    let Some(url) = redis_url() else { return };
    let store = available_store(settings(&url)).await;
    // One unit every 100 ms, burst 1: the TAT is 100 ms ahead after a check.
    let params = rate(10, Duration::from_secs(1), 1);
    let key = unique_key("ttl");
    let mut conn = raw(&url).await;
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let before = secs * SEC + micros * 1_000;

    assert!(one(&store, check(&key, params, 1, Op::Check)).await.allowed);
    let full = format!("{PREFIX}{key}");
    let tat: u64 = redis::cmd("GET").arg(&full).query_async::<String>(&mut conn).await.unwrap().parse().unwrap();
    assert!(tat >= before + 100 * MS && tat < before + 100 * MS + 5 * SEC, "tat {tat}, before {before}");
    let ttl: i64 = redis::cmd("PTTL").arg(&full).query_async(&mut conn).await.unwrap();
    assert!((1..=100).contains(&ttl), "pttl {ttl}");

    // Once the TAT has passed, the key is gone: idle keys cost nothing.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(!exists(&url, &key).await);
    assert_eq!(one(&store, check(&key, params, 1, Op::Peek)).await.remaining, 1);
}

#[tokio::test]
async fn invalid_urls_are_refused() {
    assert!(matches!(RedisStore::new(RedisSettings::new("not a url")), Err(RedisUnavailable::Error(_))));
    let cluster = RedisStore::new(RedisSettings::new("redis+cluster://127.0.0.1:7000/"));
    assert!(matches!(&cluster, Err(RedisUnavailable::Error(e)) if e.contains("Cluster")), "{cluster:?}");
    let nodes = Some(vec![("127.0.0.1".to_owned(), 7000)]);
    let both = RedisStore::new(RedisSettings {
        cluster: nodes.clone(),
        sentinel: Some(RedisSentinel {
            sentinels: vec![("127.0.0.1".to_owned(), 26379)],
            master: "m".to_owned(),
            password: None,
            tls: false,
        }),
        ..settings("redis://h/")
    });
    assert!(matches!(&both, Err(RedisUnavailable::Error(e)) if e.contains("sentinels")), "{both:?}");
    let db = RedisStore::new(RedisSettings { cluster: nodes, ..settings("redis://h/2") });
    assert!(matches!(&db, Err(RedisUnavailable::Error(e)) if e.contains("database 0")), "{db:?}");
}

#[tokio::test]
async fn an_unreachable_redis_costs_nothing() {
    // Needs no server: nothing listens on this port.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let store = RedisStore::new(RedisSettings::new(url)).unwrap();
    assert!(!store.is_available());
    let params = rate(1, Duration::from_secs(1), 1);
    let start = Instant::now();
    let r = store.apply(&[check("k:{x}", params, 1, Op::Check)]).await;
    assert!(matches!(r, Err(RedisUnavailable::BreakerOpen)), "{r:?}");
    assert!(start.elapsed() < Duration::from_millis(5), "{:?}", start.elapsed());
    assert!(store.connection().is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!store.is_available());
}

// ----- The breaker, against a server of our own -----

/// What the breaker tests allow beyond the timeout for scheduling on a busy
/// machine.
const MARGIN: Duration = Duration::from_millis(100);

fn breaker_settings(url: String) -> RedisSettings {
    RedisSettings {
        timeout: Duration::from_millis(100),
        probe_interval: Duration::from_millis(100),
        key_prefix: PREFIX.to_owned(),
        ..RedisSettings::new(url)
    }
}

fn record_changes(store: &RedisStore) -> Arc<Mutex<Vec<bool>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    store.on_state_change(move |up| sink.lock().unwrap().push(up));
    seen
}

/// While Redis is down: the first call errs within the timeout, every later one
/// at once, without touching the network.
async fn assert_fails_fast(store: &RedisStore, params: GcraParams, timeout: Duration) {
    let key = unique_key("down");
    let start = Instant::now();
    let first = store.apply(&[check(&key, params, 1, Op::Check)]).await;
    let took = start.elapsed();
    println!("first call while down: {first:?} after {took:?}");
    assert!(first.is_err(), "{first:?}");
    assert!(took < timeout + MARGIN, "first call while down took {took:?}: {first:?}");
    for _ in 0..20 {
        let start = Instant::now();
        let r = store.apply(&[check(&key, params, 1, Op::Check)]).await;
        let took = start.elapsed();
        assert!(matches!(r, Err(RedisUnavailable::BreakerOpen)), "{r:?}");
        assert!(took < Duration::from_millis(5), "call with the breaker open took {took:?}");
    }
    assert!(!store.is_available());
    assert!(store.connection().is_none());
}

#[tokio::test]
async fn breaker_opens_when_redis_is_killed_and_closes_when_it_returns() {
    if redis_url().is_none() {
        return;
    }
    let port = free_port();
    let mut server = OwnRedis::start(port).await;
    let settings = breaker_settings(server.url());
    let (timeout, probe) = (settings.timeout, settings.probe_interval);
    let store = available_store(settings).await;
    let changes = record_changes(&store);
    let params = rate(100, Duration::from_secs(60), 100);
    let key = unique_key("kill");
    assert!(one(&store, check(&key, params, 1, Op::Check)).await.allowed);
    let mut conn = store.connection().expect("a connection while available");
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");

    server.kill();
    assert_fails_fast(&store, params, timeout).await;

    // Same port, empty memory (no persistence): the probe reconnects by itself.
    let _server = OwnRedis::start(port).await;
    let took = wait_until("breaker closes after restart", probe * 20, || store.is_available()).await;
    println!("recovered {took:?} after the restart (probe interval {probe:?})");
    let d = one(&store, check(&key, params, 1, Op::Check)).await;
    assert!(d.allowed && d.remaining == 99, "{d:?}");
    assert!(store.connection().is_some());
    assert_eq!(*changes.lock().unwrap(), [false, true]);
}

#[tokio::test]
async fn breaker_bounds_a_hung_redis_by_the_timeout() {
    if redis_url().is_none() {
        return;
    }
    let server = OwnRedis::start(free_port()).await;
    let settings = breaker_settings(server.url());
    let (timeout, probe) = (settings.timeout, settings.probe_interval);
    let store = available_store(settings).await;
    let changes = record_changes(&store);
    let params = rate(100, Duration::from_secs(60), 100);
    assert!(one(&store, check(&unique_key("hung"), params, 1, Op::Check)).await.allowed);

    // A stopped process keeps its sockets open and never answers: only the
    // timeout can tell.
    server.signal("-STOP");
    assert_fails_fast(&store, params, timeout).await;
    server.signal("-CONT");
    wait_until("breaker closes after SIGCONT", probe * 20, || store.is_available()).await;
    assert!(one(&store, check(&unique_key("hung"), params, 1, Op::Check)).await.allowed);
    assert_eq!(*changes.lock().unwrap(), [false, true]);
}

/// Latency of one `apply` with two keys, against `RAMPART_TEST_REDIS_URL`:
///
/// ```text
/// RAMPART_TEST_REDIS_URL=redis://127.0.0.1:PORT/ cargo test --release -p rampart \
///     --test redis_limits -- --ignored --nocapture apply_latency
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn apply_latency() {
    let Some(url) = redis_url() else { return };
    let store = available_store(RedisSettings { timeout: Duration::from_secs(1), ..settings(&url) }).await;
    let params = rate(1_000_000, Duration::from_secs(1), 1_000_000);
    let checks =
        [check(&unique_key("lat-ip"), params, 1, Op::Check), check(&unique_key("lat-user"), params, 1, Op::Check)];
    for _ in 0..1_000 {
        store.apply(&checks).await.unwrap();
    }
    let mut samples = Vec::with_capacity(20_000);
    for _ in 0..20_000 {
        let start = Instant::now();
        let d = store.apply(&checks).await.unwrap();
        samples.push(start.elapsed());
        assert!(d[0].allowed && d[1].allowed);
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "apply, 2 keys, {} sequential calls: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        samples.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );

    // Throughput: 64 concurrent callers on the one multiplexed connection, as
    // the gateway's request tasks would be.
    let store = std::sync::Arc::new(store);
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            let checks = [
                check(&unique_key(&format!("tp-ip-{t}")), params, 1, Op::Check),
                check(&unique_key(&format!("tp-user-{t}")), params, 1, Op::Check),
            ];
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(2_000);
                for _ in 0..2_000 {
                    let s = Instant::now();
                    store.apply(&checks).await.unwrap();
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "apply, 2 keys, 64 concurrent callers, {} calls: {:.0} decisions/s ({:.0} requests/s), p50 {:?}, p99 {:?}",
        all.len(),
        (all.len() * 2) as f64 / secs,
        all.len() as f64 / secs,
        at(0.50),
        at(0.99)
    );
}
