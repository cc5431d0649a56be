//! Bearer-token verification, the per-request cost of JWT authentication, for
//! each algorithm we accept; plus issuing, which happens once per login or
//! refresh. Run with `cargo bench -p rampart-core --bench token`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::token::{issue, Alg, Claims, KeySet, SigningKey, TokenError, Verifier};

const RSA2048_PEM: &str = include_str!("../src/token/testdata/rsa2048.pem");
const NOW: u64 = 1_750_000_000;

fn keys() -> [SigningKey; 4] {
    [
        SigningKey::generate("ed", Alg::EdDSA).unwrap().key,
        SigningKey::generate("es", Alg::ES256).unwrap().key,
        SigningKey::from_pkcs8_pem("rs", Alg::RS256, RSA2048_PEM).unwrap(),
        SigningKey::hs256("hs", b"a benchmark secret of at least 32 bytes").unwrap(),
    ]
}

fn claims() -> Claims {
    let mut claims = Claims::new("https://auth.example", "user-1", "api", NOW, 900);
    claims.jti = Some("0190b5f2-7c1e-7a4b-9c1d-2f3e4a5b6c7d".into());
    claims.roles = vec!["user".into()];
    claims.scopes = vec!["read".into(), "write".into()];
    claims
}

fn verification(c: &mut Criterion) {
    let keys = keys();
    // All four keys in one set, as during a rotation: lookup by kid included.
    let set = KeySet::from_keys(keys.iter().map(|k| k.verifying_key().clone())).unwrap();
    let verifier = Verifier::new(set, ["https://auth.example"], ["api"]);
    let mut group = c.benchmark_group("token_verify");
    for key in &keys {
        let token = issue(key, &claims()).unwrap();
        assert!(verifier.verify(&token, NOW).is_ok());
        group.bench_function(key.alg().as_str(), |b| b.iter(|| verifier.verify(black_box(&token), NOW)));
    }
    // Refusals that must stay cheap: garbage and `alg: none` never reach crypto.
    let garbage = "x".repeat(4096);
    group.bench_function("refuse_garbage", |b| b.iter(|| verifier.verify(black_box(&garbage), NOW)));
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    assert_eq!(verifier.verify(none, NOW), Err(TokenError::AlgNone));
    group.bench_function("refuse_alg_none", |b| b.iter(|| verifier.verify(black_box(none), NOW)));
    group.finish();
}

fn issuing(c: &mut Criterion) {
    let claims = claims();
    let mut group = c.benchmark_group("token_issue");
    for key in &keys() {
        group.bench_function(key.alg().as_str(), |b| b.iter(|| issue(black_box(key), black_box(&claims))));
    }
    group.finish();
}

criterion_group!(benches, verification, issuing);
criterion_main!(benches);
