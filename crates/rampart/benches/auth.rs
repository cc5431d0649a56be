//! Bearer-token authentication per request, cold and cached: a token seen for
//! the first time costs a signature check (`cold`); a repeated one costs a
//! SHA-256 of the token and a table lookup (`cached`, what the bearer layer
//! does before anything else). Run with `cargo bench -p rampart --bench auth`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart::auth::{TokenCache, Verified};
use rampart_core::principal::{AuthMethod, Principal};
use rampart_core::token::{issue, Alg, Claims, KeySet, SigningKey, Verifier};

const NOW: u64 = 1_750_000_000;

fn jwt(c: &mut Criterion) {
    let key = SigningKey::generate("ed", Alg::EdDSA).unwrap().key;
    let mut claims = Claims::new("https://auth.example", "user-1", "api", NOW, 900);
    claims.jti = Some("0190b5f2-7c1e-7a4b-9c1d-2f3e4a5b6c7d".into());
    claims.roles = vec!["user".into()];
    let token = issue(&key, &claims).unwrap();
    let verifier =
        Verifier::new(KeySet::from_keys([key.verifying_key().clone()]).unwrap(), ["https://auth.example"], ["api"]);
    let cache = TokenCache::new(100_000);
    // A full cache: the lookup happens in a table of realistic size.
    let principal = Principal {
        subject: "user-1".into(),
        api_key_id: None,
        issuer: None,
        tier: None,
        roles: vec!["user".into()],
        scopes: vec![],
        method: AuthMethod::Jwt,
    };
    for i in 0..99_999 {
        let v =
            Verified { principal: principal.clone(), revocable: None, own_user: false, internal: Default::default() };
        cache.insert(&format!("other-token-{i}"), v, NOW + 900);
    }
    cache.insert(
        &token,
        Verified { principal, revocable: None, own_user: false, internal: Default::default() },
        NOW + 900,
    );
    let mut group = c.benchmark_group("jwt_eddsa");
    group.bench_function("cold", |b| b.iter(|| verifier.verify(black_box(&token), NOW).unwrap()));
    group.bench_function("cached", |b| b.iter(|| cache.get(black_box(&token), NOW).unwrap()));
    group.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
