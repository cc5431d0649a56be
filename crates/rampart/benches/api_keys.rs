//! API-key authentication from the cache, per request: the shape and
//! checksum check, the SHA-256 of the key, the lookup in a full cache and
//! the checks of the cached key (expiry, CIDR list, usage count) — what the
//! bearer layer does for a key it has seen before. Target: ≤ 1 µs.
//! Run with `cargo bench -p rampart --bench api_keys`.

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::auth::Verified;
use rampart::identity::api_keys::{key_digest, CachedKey, KeyCache, Lookup};
use rampart_core::api_key::ApiKey;
use rampart_core::principal::{AuthMethod, Principal};

const NOW_MS: u64 = 1_750_000_000_000;

fn cached_key(cache: &KeyCache, id: &str) -> Arc<CachedKey> {
    let principal = Principal {
        subject: "user-1".into(),
        api_key_id: Some(id.into()),
        issuer: None,
        tier: None,
        roles: vec!["user".into()],
        scopes: vec!["read".into()],
        method: AuthMethod::ApiKey,
    };
    Arc::new(CachedKey {
        id: id.into(),
        verified: Verified { principal, revocable: None, own_user: false, internal: Default::default() },
        expires_at: Some(NOW_MS + 86_400_000),
        revoked: false,
        owner_disabled: false,
        cidrs: vec!["10.0.0.0/8".parse().unwrap(), "127.0.0.0/8".parse().unwrap()],
        usage: cache.usage_of(id),
    })
}

fn cached(c: &mut Criterion) {
    let cache = KeyCache::new(10_000, 60_000);
    for i in 0..9_999u32 {
        let mut bytes = [0u8; 64];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        let other = ApiKey::from_random("rpk", &bytes).unwrap();
        cache.insert_known(key_digest(other.as_str()), cached_key(&cache, &format!("k{i}")), NOW_MS);
    }
    let key = ApiKey::from_random("rpk", &[42; 64]).unwrap().as_str().to_owned();
    cache.insert_known(key_digest(&key), cached_key(&cache, "mine"), NOW_MS);
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("api_key/cached", |b| {
        b.iter(|| {
            let parsed = ApiKey::parse(black_box(&key)).unwrap();
            let hash = key_digest(parsed.as_str());
            let Lookup::Known(k) = cache.get(&hash, NOW_MS + 1) else { panic!("not cached") };
            let ok = k.admit(Some(ip), NOW_MS + 1).is_ok();
            black_box(ok)
        })
    });
}

criterion_group!(benches, cached);
criterion_main!(benches);
