//! Load shedding ranks requests by credentials the gateway knows valid from
//! memory: past the soft limit, a flood carrying lookalike credentials (any
//! cookie, a bogus bearer token or API key, even a well-signed token never
//! seen before) is shed like anonymous traffic, while a verified token's
//! request is served; past `max_in_flight` everything new is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::auth::{auth_config, claims, get, hs256, token, APP};
use crate::common::*;

#[tokio::test]
async fn lookalike_credentials_are_shed_before_a_verified_token_and_the_hard_cap_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _) = setup_with(
        "max_in_flight = 4\nshed_anonymous_at = 0.5\nmax_requests_per_ip = 0",
        &auth_config(dir.path(), "[[routes]]\npath = '/**'\nauth = 'optional'\n"),
    )
    .await;
    let valid = token(&hs256(), &claims(APP, "u-1"));
    // Verified once while the gateway is idle: from then on it is known.
    assert_eq!(get(&gw, "/x", Some(&valid), &[]).await.status(), 200);

    let slow = |bearer: Option<String>| {
        let gw_url = url(&gw, "/slow/1500");
        tokio::spawn(async move {
            let mut rb = client().get(gw_url);
            if let Some(t) = bearer {
                rb = rb.bearer_auth(t);
            }
            rb.send().await.unwrap().status().as_u16()
        })
    };
    let in_flight = |n: usize| {
        let shed = gw.limits.shed.clone();
        async move {
            assert!(
                eventually(Duration::from_secs(5), || async { shed.in_flight() >= n }).await,
                "{n} requests never got in flight"
            );
        }
    };
    let mut held = vec![slow(None), slow(None)];
    in_flight(2).await;

    // Soft limit reached: the lookalikes are shed as anonymous...
    let unseen = token(&hs256(), &claims(APP, "u-2"));
    let lookalikes: [(&str, String); 4] = [
        ("cookie", "x=1".into()),
        ("authorization", "Bearer not.a.token".into()),
        ("x-api-key", "rpk_bogus".into()),
        ("authorization", format!("Bearer {unseen}")),
    ];
    for (name, value) in &lookalikes {
        let r = get(&gw, "/x", None, &[(name, value)]).await;
        assert_eq!(r.status(), 503, "{name}: {value}");
        let v = problem(r, 503).await;
        assert_eq!(v["type"], "urn:rampart:problem:overloaded");
    }
    // ... while the verified token is served.
    assert_eq!(get(&gw, "/x", Some(&valid), &[]).await.status(), 200);

    // Two more in flight with the known token reach the hard cap of 4: then
    // even it is refused.
    held.push(slow(Some(valid.clone())));
    held.push(slow(Some(valid.clone())));
    in_flight(4).await;
    let r = get(&gw, "/x", Some(&valid), &[]).await;
    assert!(r.headers().contains_key("retry-after"));
    problem(r, 503).await;
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    let m =
        client().get(format!("http://{}/metrics", gw.ops_addr.unwrap())).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("rampart_rejections_total{layer=\"shed\",reason=\"overload_anonymous\"} 4"), "{m}");
    assert!(m.contains("rampart_rejections_total{layer=\"shed\",reason=\"overload\"} 1"), "{m}");
}
