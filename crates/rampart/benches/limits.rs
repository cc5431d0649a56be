//! In-process limit decisions: `MemoryStore::apply` runs for every
//! rate-limited request when Redis is not configured (or is down), so its cost
//! is added to every such request.
//!
//! Run with `cargo bench -p rampart --bench limits`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::slice::from_ref;
use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::limit::memory::MemoryStore;
use rampart::limit::{GcraParams, LimitCheck, Op};

const TABLE_KEYS: u64 = 100_000;
const PREFIX: &str = "rl:{ip:";

/// Rewrites `check.key` for entity `n`, in place. The gateway builds each
/// request's key afresh, so the key is in cache when the store hashes it; a
/// table of 100,000 prebuilt strings would measure cache misses on the
/// benchmark's own strings instead.
fn set_key(check: &mut LimitCheck, n: u64) {
    check.key.truncate(PREFIX.len());
    for shift in (0..24).step_by(4).rev() {
        check.key.push(char::from(b"0123456789abcdef"[(n >> shift) as usize & 15]));
    }
    check.key.push_str("}:api");
}

fn check_for(n: u64, params: GcraParams) -> LimitCheck {
    let mut check = LimitCheck { key: String::from(PREFIX), params, weight: 1, op: Op::Check };
    set_key(&mut check, n);
    check
}

/// xorshift64: a random number per iteration for the price of three shifts.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn memory_store(c: &mut Criterion) {
    // Generous enough that every decision is an allowed one that stores a TAT.
    let params = GcraParams::new(1_000_000, Duration::from_secs(1), 1_000).unwrap();
    let mut now = 1_700_000_000_000_000_000_u64;
    let mut group = c.benchmark_group("memory_store_apply");

    let store = MemoryStore::new(1_000_000);
    let hot = check_for(0, params);
    group.bench_function("hot_key", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(store.apply(black_box(now), from_ref(&hot)))
        })
    });

    // Room for all of them, so this measures lookups in a big table, not evictions.
    let store = MemoryStore::new(2 * TABLE_KEYS as usize);
    let mut check = check_for(0, params);
    for n in 0..TABLE_KEYS {
        set_key(&mut check, n);
        store.apply(now, from_ref(&check));
    }
    assert_eq!(store.len(), TABLE_KEYS as usize);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    group.bench_function("random_key_of_100k", |b| {
        b.iter(|| {
            now += 1_000;
            set_key(&mut check, next(&mut rng) % TABLE_KEYS);
            black_box(store.apply(black_box(now), from_ref(&check)))
        })
    });

    // The floor under the previous line: a random lookup and update in a std
    // HashMap of as many entries behind a mutex. Both miss the cache on the
    // table, and the lock's atomic instruction keeps the CPU from overlapping
    // one iteration's miss with the next, as a real request would.
    let map: Mutex<HashMap<u64, u64>> =
        Mutex::new((0..TABLE_KEYS).map(|n| (n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n)).collect());
    group.bench_function("baseline_locked_std_hashmap_of_100k", |b| {
        b.iter(|| {
            let key = (next(&mut rng) % TABLE_KEYS).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut map = map.lock().unwrap();
            if let Some(v) = map.get_mut(&key) {
                *v += 1;
            }
        })
    });

    // A flood of distinct keys into a full store, none of them idle: every
    // decision inserts a key and evicts another.
    let slow = GcraParams::new(60, Duration::from_secs(60), 60).unwrap();
    let store = MemoryStore::new(TABLE_KEYS as usize);
    let mut check = check_for(0, slow);
    let mut n = 0;
    group.bench_function("flood_evicting_100k", |b| {
        b.iter(|| {
            now += 1;
            n += 1;
            set_key(&mut check, n);
            black_box(store.apply(black_box(now), from_ref(&check)))
        })
    });
    group.finish();
    assert!(store.len() <= TABLE_KEYS as usize);
    println!("flood: {} keys held, {} lossy evictions", store.len(), store.evictions());
}

criterion_group!(benches, memory_store);
criterion_main!(benches);
