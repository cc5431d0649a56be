//! Per-request hot paths of rampart-core: client-IP resolution, route lookup,
//! path normalisation and the heavy-hitter count. Each runs once (or more) for every request the
//! gateway handles, so regressions here are regressions in latency.
//!
//! Run with `cargo bench -p rampart-core --bench hot_paths`.

// Setup failures should abort the benchmark loudly; there is no caller to
// return an error to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use rampart_core::abuse::SpaceSaving;
use rampart_core::client_ip::{resolve_client, TrustedProxies};
use rampart_core::path::{normalize_path, PathOptions};
use rampart_core::route::{HostPattern, PathPattern, RouteMatcher, RouteSpec};

fn client_ip(c: &mut Criterion) {
    let trusted = TrustedProxies::new(vec![
        "10.0.0.0/8".parse().unwrap(),
        "172.16.0.0/12".parse().unwrap(),
        "fd00::/8".parse().unwrap(),
    ]);
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.23, 203.0.113.7, 10.1.2.3"));
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let proxy: IpAddr = "10.0.0.2".parse().unwrap();
    let stranger: IpAddr = "192.0.2.44".parse().unwrap();

    let mut group = c.benchmark_group("resolve_client");
    group.bench_function("trusted_proxy_xff_3_hops", |b| {
        b.iter(|| resolve_client(black_box(proxy), &trusted, black_box(&headers)))
    });
    group.bench_function("untrusted_peer", |b| {
        b.iter(|| resolve_client(black_box(stranger), &trusted, black_box(&headers)))
    });
    group.finish();
}

struct Route {
    hosts: Vec<HostPattern>,
    methods: Vec<Method>,
    path: PathPattern,
}

/// A realistic 20-route table: mostly prefixes and ids, a few host-bound.
fn route_table() -> RouteMatcher {
    let paths = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/login",
        "/logout",
        "/static/**",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/keys",
        "/api/v1/orders/**",
        "/api/v1/invoices/*",
        "/api/v1/products/{id}/reviews",
        "/api/v2/search",
        "/api/v2/items/*/history",
        "/admin/**",
        "/webhooks/stripe",
        "/webhooks/github",
        "/docs/**",
        "/files/*/download",
        "/api/v2/reports/{year}/{month}",
    ];
    let routes: Vec<Route> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| Route {
            hosts: if i % 5 == 4 { vec![HostPattern::parse("*.example.com").unwrap()] } else { Vec::new() },
            methods: if i % 3 == 0 { vec![Method::GET, Method::HEAD] } else { Vec::new() },
            path: PathPattern::parse(p).unwrap(),
        })
        .collect();
    RouteMatcher::new(routes.iter().map(|r| RouteSpec { hosts: &r.hosts, methods: &r.methods, path: &r.path }))
}

fn route_find(c: &mut Criterion) {
    let matcher = route_table();
    let host = Some("eu.example.com:443");
    let last = "/api/v2/reports/2024/06";
    let miss = "/api/v3/unknown/thing";
    assert_eq!(matcher.find(host, &Method::GET, last), Some(19));
    assert_eq!(matcher.find(host, &Method::GET, miss), None);

    let mut group = c.benchmark_group("route_find_20");
    group.bench_function("hit_last", |b| b.iter(|| matcher.find(black_box(host), &Method::GET, black_box(last))));
    group.bench_function("miss", |b| b.iter(|| matcher.find(black_box(host), &Method::GET, black_box(miss))));
    group.finish();
}

fn path_normalize(c: &mut Criterion) {
    let opts = PathOptions::default();
    let plain = "/api/v1/users/42/keys/primary";
    let escaped = "/files/caf%C3%A9%20menu/download%2Dv2/r%C3%A9sum%C3%A9.pdf";
    assert!(normalize_path(plain, &opts).is_ok());
    assert!(normalize_path(escaped, &opts).is_ok());

    let mut group = c.benchmark_group("normalize_path");
    group.bench_function("plain", |b| b.iter(|| normalize_path(black_box(plain), &opts).map(|p| p.len())));
    group.bench_function("escaped", |b| b.iter(|| normalize_path(black_box(escaped), &opts).map(|p| p.len())));
    group.finish();
}

/// Every request's address is offered to the heavy-hitter sketch
/// (`[abuse] top_k`, at most 1000): a known address, and a flood in which
/// every request comes from a new one and evicts the smallest counter.
fn heavy_hitters(c: &mut Criterion) {
    let mut group = c.benchmark_group("heavy_hitters_k1000");
    let mut known = SpaceSaving::new(1000);
    for i in 0..1000u32 {
        known.offer(IpAddr::from(i.to_be_bytes()));
    }
    let regular = IpAddr::from(7u32.to_be_bytes());
    group.bench_function("known_address", |b| b.iter(|| known.offer(black_box(regular))));
    let mut flood = known.clone();
    let mut next = 1_000_000u32;
    group.bench_function("unique_address_flood", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            flood.offer(black_box(IpAddr::from(next.to_be_bytes())));
        })
    });
    group.finish();
}

criterion_group!(benches, client_ip, route_find, path_normalize, heavy_hitters);
criterion_main!(benches);
