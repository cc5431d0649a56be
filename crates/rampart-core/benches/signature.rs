//! HMAC request signatures: what verifying one costs the gateway per request
//! once the key is in memory and the body has been read (canonical request,
//! body hash, MAC), for a GET with a query to sort and a POST with a 1 KiB
//! JSON body; and a refused signature, which costs the same.
//! Run with `cargo bench -p rampart-core --bench signature`.

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::signature::{body_digest, canonical_query, canonical_request, sign, verify_with, VERSION};

const SECRET: &[u8] = b"hks_8J0vLr7cQ3w1Zb5xYd2nHq9tUa6kSe4mPf0gWc7rTjI";
const NONCE: &str = "Vb3kq9ZxT2mLw8RfYc4nHs";

fn verify(c: &mut Criterion) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let body = format!("{{\"messages\":[{{\"role\":\"user\",\"content\":\"{}\"}}]}}", "x".repeat(980));
    let mut group = c.benchmark_group("signature_verify");
    let get = |method: &str, body: &[u8]| {
        let canonical = canonical_request(
            VERSION,
            method,
            "/api/v1/orders",
            Some("status=open&page=2&sort=-created&q=red+shoes"),
            "1700000000",
            NONCE,
            &body_digest(body),
        );
        (canonical.clone(), sign(SECRET, &canonical))
    };
    for (name, method, body) in [("get_query", "GET", &b""[..]), ("post_1kib", "POST", body.as_bytes())] {
        let (_, mac) = get(method, body);
        group.bench_function(name, |b| {
            b.iter(|| {
                let canonical = canonical_request(
                    VERSION,
                    black_box(method),
                    "/api/v1/orders",
                    Some("status=open&page=2&sort=-created&q=red+shoes"),
                    "1700000000",
                    NONCE,
                    &body_digest(black_box(body)),
                );
                assert!(verify_with(&key, &canonical, &mac));
            })
        });
    }
    let (canonical, mut mac) = get("GET", b"");
    mac[0] ^= 1;
    group.bench_function("refuse_wrong_mac", |b| b.iter(|| verify_with(&key, black_box(&canonical), &mac)));
    group.finish();

    let long = (0..50).map(|i| format!("k{}={}", 50 - i, i)).collect::<Vec<_>>().join("&");
    c.bench_function("canonical_query_50_pairs", |b| b.iter(|| canonical_query(VERSION, black_box(&long))));
}

criterion_group!(benches, verify);
criterion_main!(benches);
