//! GCRA decisions: every rate-limited request makes at least one, so the cost
//! of `decide` is a floor under the cost of every limit.
//!
//! Run with `cargo bench -p rampart-core --bench gcra`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::gcra::{decide, GcraParams, Op};

fn gcra(c: &mut Criterion) {
    let params = GcraParams::new(100, Duration::from_secs(1), 50).unwrap();
    let now = 1_700_000_000_000_000_000_u64;
    // An existing key with some of its burst used: the common case.
    let stored = Some(now + 200_000_000);
    let mut group = c.benchmark_group("gcra_decide");
    group.bench_function("check_existing_key", |b| {
        b.iter(|| decide(black_box(stored), black_box(now), black_box(&params), black_box(1), Op::Check))
    });
    group.bench_function("check_refused", |b| {
        let full = Some(now + 500_000_000);
        b.iter(|| decide(black_box(full), black_box(now), black_box(&params), black_box(1), Op::Check))
    });
    group.finish();
}

criterion_group!(benches, gcra);
criterion_main!(benches);
