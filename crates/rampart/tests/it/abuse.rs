//! Abuse detection through the gateway: the heavy hitter in `/top` and in
//! `rampart_top_client_requests`, and a request spike that writes a
//! `traffic_spike` audit event naming its class and, with `ban_on_spike`,
//! bans the address behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn a_request_spike_is_audited_and_banned_and_the_heavy_hitter_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let up = start_upstream().await;
    let text = config(
        &format!("http://{up}"),
        &format!(
            "[storage]\ndatabase = 'sqlite://{}/r.db'\n[abuse]\nspike_factor = 3.0\nspike_min_rate = 5.0\nban_on_spike = true\n",
            dir.path().display()
        ),
    )
    .replace("[audit]\nenabled = false\n", &format!("[audit]\nfile = '{}'\n", audit.display()));
    let gw = gateway(&text).await;
    let ops = format!("http://{}", gw.ops_addr.unwrap());
    let c = client();

    // A quiet start: the heavy hitter appears in `/top` and, within a tick, in
    // the metric.
    assert_eq!(c.get(url(&gw, "/x")).send().await.unwrap().status(), 200);
    let top: Vec<Value> = c.get(format!("{ops}/top")).send().await.unwrap().json().await.unwrap();
    assert_eq!(top[0]["ip"], "127.0.0.1", "{top:?}");
    assert!(top[0]["requests"].as_u64().unwrap() >= 1);
    let metric = "rampart_top_client_requests{rank=\"1\",ip=\"127.0.0.1\"}";
    assert!(
        eventually(Duration::from_secs(5), || async {
            c.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap().contains(metric)
        })
        .await,
        "no {metric}"
    );

    // A burst far above the baseline: a spike of the `requests` class, the
    // address behind it banned.
    for _ in 0..60 {
        let s = c.get(url(&gw, "/x")).send().await.unwrap().status();
        assert!(s == 200 || s == 403, "{s}");
    }
    assert!(
        eventually(Duration::from_secs(5), || async { c.get(url(&gw, "/x")).send().await.unwrap().status() == 403 })
            .await,
        "no ban after the spike"
    );
    let ban = gw.limits.bans.list().into_iter().find(|b| b.source == "auto:spike").expect("a spike ban");
    assert_eq!(ban.reason, "spike of requests");
    let found = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&audit).unwrap_or_default().lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["kind"] == "traffic_spike" && v["detail"]["class"] == "requests" && v["ip"] == "127.0.0.1"
        })
    })
    .await;
    assert!(found, "no traffic_spike audit record:\n{}", std::fs::read_to_string(&audit).unwrap_or_default());
    let m = c.get(format!("{ops}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_spikes_total{class=\"requests\"}"), "{m}");
}
