//! Password work on the identity paths: the policy check when a password is
//! set, the common-list lookup inside it, and verification at login.
//!
//! Verification with the default argon2id parameters costs tens of
//! milliseconds by design; it is measured with a small sample so the run stays
//! short. Run with `cargo bench -p rampart-core --bench password`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::password::{hash, is_common, normalize, verify, Argon2Params, PasswordPolicy};

fn policy(c: &mut Criterion) {
    let policy = PasswordPolicy::default();
    let inputs = ["alice.smith", "alice.smith@example.com"];
    // Load the common list outside the measurement.
    assert!(is_common("123456"));
    let mut group = c.benchmark_group("password_policy");
    group.bench_function("check_typical_passphrase", |b| {
        b.iter(|| policy.check(black_box("plum tractor origami 17"), black_box(&inputs)))
    });
    group.bench_function("check_common_password", |b| {
        b.iter(|| policy.check(black_box("iloveyou"), black_box(&inputs)))
    });
    group.bench_function("normalize", |b| b.iter(|| normalize(black_box("plum tractor origami 17"))));
    group.finish();

    let mut group = c.benchmark_group("password_common_list");
    group.bench_function("lookup_hit", |b| b.iter(|| is_common(black_box("trustno1"))));
    group.bench_function("lookup_miss_mixed_case", |b| b.iter(|| is_common(black_box("Plum tractor origami 17"))));
    group.finish();
}

fn verification(c: &mut Criterion) {
    let params = Argon2Params::default();
    let stored = hash("plum tractor origami 17", &params).unwrap();
    let mut group = c.benchmark_group("password_verify");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("argon2id_owasp_default", |b| {
        b.iter(|| verify(black_box("plum tractor origami 17"), black_box(&stored), &params).unwrap())
    });
    group.finish();
}

criterion_group!(benches, policy, verification);
criterion_main!(benches);
