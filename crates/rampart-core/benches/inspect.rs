//! Cost of `inspect_value` per value. The gateway runs it on every inspected
//! query value, form field, header, cookie and JSON string, so this is
//! multiplied by the number of values in each request.
//!
//! Run with `cargo bench -p rampart-core --bench inspect`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_core::inspect::{inspect_value, RuleSet};

fn inspect(c: &mut Criterion) {
    // About 100 bytes of ordinary text with the characters that send every
    // scanner down its slower paths: quotes, `;`, `&`, `%`, `/` and `..`.
    let benign =
        "Hi! I'd like 2 x \"Tom & Jerry\" mugs (50% off); ship to 221B Baker St/London... thanks, Alice Browne.";
    assert_eq!(benign.len(), 100);
    let sqli = "1' UNION SELECT username, password FROM users--";
    let double_encoded = "%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E";
    let command = "127.0.0.1; cat /etc/passwd";
    let rules = RuleSet::ALL;

    let mut group = c.benchmark_group("inspect_value");
    group.bench_function("benign_100_bytes", |b| b.iter(|| inspect_value(black_box(benign), &rules)));
    group.bench_function("sqli_attack", |b| b.iter(|| inspect_value(black_box(sqli), &rules)));
    group.bench_function("xss_double_encoded", |b| b.iter(|| inspect_value(black_box(double_encoded), &rules)));
    group.bench_function("command_injection", |b| b.iter(|| inspect_value(black_box(command), &rules)));
    let large = "lorem ipsum dolor sit amet; ".repeat(64 * 1024 / 28 + 1);
    group.bench_function("benign_64_kib", |b| b.iter(|| inspect_value(black_box(&large), &rules)));
    // The costliest shapes found (a value of only `/`, or only `\`): what a
    // MiB of hostile body can cost, since every value is read whole.
    for (name, unit) in [("slashes_1_mib", "/"), ("semicolons_1_mib", ";")] {
        let value = unit.repeat(1 << 20);
        group.bench_function(name, |b| b.iter(|| inspect_value(black_box(&value), &rules)));
    }
    group.finish();
}

criterion_group!(benches, inspect);
criterion_main!(benches);
