//! TOTP verification at the second login step: a right code, a wrong one
//! (every candidate step is computed either way) and a malformed one (refused
//! before any HMAC). Run with `cargo bench -p rampart-core --bench totp`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::totp::{code_at, verify, STEP_SECS};

fn totp(c: &mut Criterion) {
    let secret = [7u8; 20];
    let now = 1_750_000_000;
    let right = code_at(&secret, now / STEP_SECS);
    let mut group = c.benchmark_group("totp");
    group.bench_function("verify_right_code", |b| {
        b.iter(|| verify(black_box(&secret), black_box(&right), black_box(now), black_box(None)))
    });
    group.bench_function("verify_wrong_code", |b| {
        b.iter(|| verify(black_box(&secret), black_box("000000"), black_box(now), black_box(None)))
    });
    group.bench_function("verify_malformed_code", |b| {
        b.iter(|| verify(black_box(&secret), black_box("12ab56"), black_box(now), black_box(None)))
    });
    group.finish();
}

criterion_group!(benches, totp);
criterion_main!(benches);
